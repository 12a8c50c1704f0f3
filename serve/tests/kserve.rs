//! Acceptance tests of `preba serve` over KServe v2 HTTP: Triton's own client
//! (tritonclient.http, perf_analyzer) through `clients/check_kserve.py`, plus
//! what a client cannot see: metrics, SIGTERM with requests in flight, a
//! worker killed mid-batch, the card process killed.
//!
//! Needs the model fixtures (`PREBA_MODELS`) and the client venv
//! (`PREBA_CLIENT_PYTHON`); `cargo xtask test` sets both and
//! `PREBA_REQUIRE_ORT=1`, which turns a missing part into a failure. Without
//! them each test prints "SKIPPED: <why>" and passes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The two tests run one after the other: both are timing-sensitive (batches
/// in flight, perf_analyzer's stability) and the CI machine has 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn preba() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_preba"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn required() -> bool {
    std::env::var_os("PREBA_REQUIRE_ORT").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips (prints and returns None) or, under PREBA_REQUIRE_ORT, fails.
fn need<T>(what: Option<T>, why: &str) -> Option<T> {
    if what.is_none() {
        assert!(!required(), "PREBA_REQUIRE_ORT is set but {why}");
        eprintln!("SKIPPED: {why}");
    }
    what
}

struct Env {
    models: PathBuf,
    python: PathBuf,
}

fn env() -> Option<Env> {
    let models = need(
        std::env::var_os("PREBA_MODELS")
            .map(PathBuf::from)
            .filter(|m| {
                m.join("squeezenet1_1/1/model.onnx").is_file()
                    && m.join("tiny_audio/1/model.onnx").is_file()
            }),
        "PREBA_MODELS does not hold squeezenet1_1/1/model.onnx and tiny_audio/1/model.onnx",
    )?;
    let python = need(
        std::env::var_os("PREBA_CLIENT_PYTHON")
            .map(PathBuf::from)
            .filter(|p| p.is_file()),
        "PREBA_CLIENT_PYTHON (python with tritonclient[http], onnxruntime) is not set or missing",
    )?;
    Some(Env { models, python })
}

fn fixture(kind: &str, name: &str) -> PathBuf {
    let p = repo_root().join("fixtures").join(kind).join(name);
    assert!(p.is_file(), "fixture {} missing", p.display());
    p
}

/// Decodable on the card (baseline) and one the card refuses (progressive:
/// the CPU fallback), in the order the golden tensor has them.
const IMAGES: [&str; 4] = [
    "imagenet_chelsea.jpg",
    "imagenet_astronaut.jpg",
    "imagenet_coffee.jpg",
    "progressive_chelsea.jpg",
];
const CORRUPT_JPEG: &str = "broken_truncated_scan.jpg";
/// 3.1 s, 1.5 s and 1.2 s: pairs within one 2.5 s length bucket and across.
const WAVS: [&str; 3] = [
    "speech_16k_s16.wav",
    "speech2_16k_s16.wav",
    "speech_16k_f32.wav",
];
const CORRUPT_WAV: &str = "broken_not_riff.wav";

/// The slow model: squeezenet on one modeled slice whose profile makes
/// every batch take hundreds of milliseconds (queue full, kill mid-batch,
/// SIGTERM with requests in flight).
const SLOW: &str = "slow";
const SLOW_SLICE: &str = "slow/modeled0";
const MAX_QUEUE: usize = 8;
const MAX_BODY: usize = 8 << 20;

fn link(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(src, dst).unwrap();
}

/// A model repository: squeezenet1_1 (with labels), tiny_audio, and
/// optionally the slow model; returns the profile table file too.
fn make_repo(dir: &Path, models: &Path, slow: bool) -> PathBuf {
    let sq = models.join("squeezenet1_1/1/model.onnx");
    link(&sq, &dir.join("squeezenet1_1/1/model.onnx"));
    std::fs::write(
        dir.join("squeezenet1_1/config.toml"),
        "labels = \"labels.txt\"\n",
    )
    .unwrap();
    let labels: String = (0..1000).map(|i| format!("label{i}\n")).collect();
    std::fs::write(dir.join("squeezenet1_1/labels.txt"), labels).unwrap();
    link(
        &models.join("tiny_audio/1/model.onnx"),
        &dir.join("tiny_audio/1/model.onnx"),
    );
    std::fs::write(dir.join("tiny_audio/config.toml"), "kind = \"audio\"\n").unwrap();
    if slow {
        link(&sq, &dir.join("slow/1/model.onnx"));
        std::fs::write(
            dir.join("slow/config.toml"),
            "slices = \"modeled:a100-1g.5gb*1\"\n[batching]\nbatch_max = 4\ntime_queue_ms = 5\n",
        )
        .unwrap();
    }
    let profile = dir.with_extension("profile.toml");
    std::fs::write(
        &profile,
        r#"format = "preba-profile-1"
[[entry]]
model = "slow"
slice = "a100-1g.5gb"
source = "test: made slow on purpose"
points = [
  { batch = 1, p50_ms = 300.0, p95_ms = 310.0, throughput = 3.3 },
  { batch = 2, p50_ms = 450.0, p95_ms = 460.0, throughput = 4.4 },
  { batch = 4, p50_ms = 700.0, p95_ms = 710.0, throughput = 5.7 },
]
"#,
    )
    .unwrap();
    profile
}

struct Server {
    child: Option<Child>,
    port: u16,
    mport: u16,
    log: Arc<Mutex<Vec<String>>>,
}

fn port_of(line: &str, prefix: &str) -> u16 {
    let rest = line.strip_prefix(prefix).unwrap();
    let addr = rest.trim_end_matches("/metrics");
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

impl Server {
    fn start(card: &str, repo: &Path, profile: &Path, extra_env: &[(&str, &Path)]) -> Server {
        let mut cmd = Command::new(preba());
        cmd.args(["serve", "--card", card, "--model-repository"])
            .arg(repo)
            .args([
                "--slices",
                "cpu:1",
                "--http",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
            ])
            .args([
                "--max-queue",
                &MAX_QUEUE.to_string(),
                "--max-body",
                &MAX_BODY.to_string(),
                "--cpu-threads",
                "2",
            ])
            .arg("--profile")
            .arg(profile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[server] {line}");
                let _ = tx.send(line.clone());
                l2.lock().unwrap().push(line);
            }
        });
        let mut s = Server {
            child: Some(child),
            port: 0,
            mport: 0,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut listening = 0;
        while s.port == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with("preba serve: metrics on http://") => {
                    assert_eq!(s.port, 0, "metrics line after the listening line");
                    s.mport = port_of(&l, "preba serve: metrics on http://");
                }
                Ok(l) if l.starts_with("preba serve: listening on http://") => {
                    listening += 1;
                    s.port = port_of(&l, "preba serve: listening on http://");
                }
                Ok(_) => {}
                Err(_) => panic!(
                    "no `listening` line from preba serve; log:\n{}",
                    s.log_text()
                ),
            }
        }
        assert_eq!(listening, 1);
        assert_ne!(
            s.mport,
            0,
            "no metrics line before the listening line:\n{}",
            s.log_text()
        );
        assert_ne!(s.port, s.mport);
        s
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn metrics(&self) -> String {
        let (st, body) = http(self.mport, "GET", "/metrics", &[], b"");
        assert_eq!(st, 200);
        String::from_utf8(body).unwrap()
    }

    /// Sends SIGTERM and waits for the exit; returns (code, time taken).
    fn terminate(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let mut child = self.child.take().unwrap();
        let t0 = Instant::now();
        signal(child.id(), "TERM");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st.code(), t0.elapsed());
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return (None, t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Child processes of `pid` with their command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(c) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        for k in c.split_whitespace().filter_map(|s| s.parse::<u32>().ok()) {
            let cmd = std::fs::read(format!("/proc/{k}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((k, cmd));
        }
    }
    out
}

/// One HTTP/1.1 exchange on a fresh connection (Connection: close).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no HTTP header end")
        + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let mut b = buf[end..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut p = 0;
        loop {
            let e = p + b[p..].windows(2).position(|w| w == b"\r\n").unwrap();
            let n =
                usize::from_str_radix(std::str::from_utf8(&b[p..e]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&b[e + 2..e + 2 + n]);
            p = e + 2 + n + 2;
        }
        b = out;
    }
    (status, b)
}

/// A binary KServe infer request of JPEGs (classification top-1, JSON output).
fn infer_body(jpegs: &[Vec<u8>]) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let mut data = Vec::new();
    for j in jpegs {
        data.extend_from_slice(&(j.len() as u32).to_le_bytes());
        data.extend_from_slice(j);
    }
    let head = format!(
        r#"{{"inputs":[{{"name":"IMAGE","datatype":"BYTES","shape":[{},1],"parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"output","parameters":{{"classification":1}}}}]}}"#,
        jpegs.len(),
        data.len()
    );
    let mut body = head.clone().into_bytes();
    body.extend_from_slice(&data);
    (
        vec![("Inference-Header-Content-Length", head.len().to_string())],
        body,
    )
}

fn infer(port: u16, model: &str, jpegs: &[Vec<u8>]) -> (u16, String) {
    let (h, b) = infer_body(jpegs);
    let (st, body) = http(port, "POST", &format!("/v2/models/{model}/infer"), &h, &b);
    (st, String::from_utf8_lossy(&body).into_owned())
}

/// The value of one sample line `name{labels} value` whose name and labels
/// contain every needle.
fn metric(text: &str, name: &str, needles: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn stats_queue_count(port: u16, model: &str) -> u64 {
    let (st, b) = http(port, "GET", &format!("/v2/models/{model}/stats"), &[], b"");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    v["model_stats"][0]["inference_stats"]["queue"]["count"]
        .as_u64()
        .unwrap()
}

/// Golden tensors of IMAGES and features of WAVs from `preba preprocess --card cpu`.
fn goldens(dir: &Path) -> (PathBuf, PathBuf) {
    let gi = dir.join("golden_images.npy");
    let o = Command::new(preba())
        .args([
            "preprocess",
            "--card",
            "cpu",
            "--dtype",
            "f32",
            "--mean",
            "0.485,0.456,0.406",
            "--std",
            "0.229,0.224,0.225",
            "-o",
        ])
        .arg(&gi)
        .args(IMAGES.iter().map(|i| fixture("images", i)))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "preba preprocess (images): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ga = dir.join("golden_audio.npz");
    // Its defaults are the server's: 16 kHz, 80 mels, per-feature normalization.
    let o = Command::new(preba())
        .args(["preprocess", "--card", "cpu", "-o"])
        .arg(&ga)
        .args(WAVS.iter().map(|w| fixture("audio", w)))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "preba preprocess (audio): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (gi, ga)
}

fn join(paths: impl IntoIterator<Item = PathBuf>) -> String {
    paths
        .into_iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs clients/check_kserve.py; panics naming the failed checks.
fn check_script(
    e: &Env,
    srv: &Server,
    work: &Path,
    groups: &str,
    gi: &Path,
    ga: &Path,
    slow: bool,
) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/check_kserve.py");
    let pa = e.python.with_file_name("perf_analyzer");
    let mut cmd = Command::new(&e.python);
    cmd.arg(&script)
        .args(["--url", &srv.url(), "--groups", groups])
        .arg("--models")
        .arg(&e.models)
        .args([
            "--images",
            &join(IMAGES.iter().map(|i| fixture("images", i))),
        ])
        .arg("--golden-images")
        .arg(gi)
        .arg("--corrupt")
        .arg(fixture("images", CORRUPT_JPEG))
        .args(["--wavs", &join(WAVS.iter().map(|w| fixture("audio", w)))])
        .arg("--golden-audio")
        .arg(ga)
        .arg("--corrupt-wav")
        .arg(fixture("audio", CORRUPT_WAV))
        .args([
            "--max-body",
            &MAX_BODY.to_string(),
            "--max-queue",
            &MAX_QUEUE.to_string(),
        ])
        .arg("--perf-analyzer")
        .arg(&pa)
        .arg("--workdir")
        .arg(work);
    if slow {
        cmd.args(["--slow-model", SLOW]);
    }
    let t0 = Instant::now();
    let o = cmd.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!(
        "--- check_kserve.py ({groups}) in {:.1} s:\n{out}",
        t0.elapsed().as_secs_f64()
    );
    if !o.status.success() {
        eprintln!("--- its stderr:\n{}", String::from_utf8_lossy(&o.stderr));
        let fds = std::fs::read_dir(format!("/proc/{}/fd", srv.pid())).map(|d| d.count());
        eprintln!(
            "--- server pid {} open fds {fds:?}, alive {}",
            srv.pid(),
            Path::new(&format!("/proc/{}", srv.pid())).exists()
        );
    }
    assert!(
        o.status.success(),
        "check_kserve.py --groups {groups} failed:\n{out}"
    );
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn cpu_server_kserve_end_to_end() {
    let Some(e) = env() else { return };
    let _serial = serial();
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let profile = make_repo(&repo, &e.models, true);
    let (gi, ga) = goldens(tmp.path());
    let mut srv = Server::start("cpu", &repo, &profile, &[]);
    eprintln!("cpu server up in {:.1} s", t0.elapsed().as_secs_f64());

    // Everything a Triton client sees, perf_analyzer included.
    check_script(
        &e,
        &srv,
        tmp.path(),
        "meta,infer,errors,audio,queue,isolation,perf",
        &gi,
        &ga,
        true,
    );

    let jpeg = std::fs::read(fixture("images", IMAGES[0])).unwrap();

    // Metrics: counters move by exactly what we send.
    let m0 = srv.metrics();
    let sq = ["model=\"squeezenet1_1\"", "version=\"1\""];
    let succ0 = metric(&m0, "nv_inference_request_success", &sq)
        .expect("nv_inference_request_success for squeezenet1_1");
    let fail0 =
        metric(&m0, "nv_inference_request_failure", &sq).expect("nv_inference_request_failure");
    let count0 = metric(&m0, "nv_inference_count", &sq).expect("nv_inference_count");
    let bs0 = metric(&m0, "preba_batch_size_count", &sq).expect("preba_batch_size_count");
    const N: usize = 5;
    for _ in 0..N {
        let (st, b) = infer(srv.port, "squeezenet1_1", std::slice::from_ref(&jpeg));
        assert_eq!(st, 200, "{b}");
    }
    let (st, b) = infer(srv.port, "squeezenet1_1", &[jpeg.clone(), jpeg.clone()]);
    assert_eq!(st, 200, "{b}");
    let (st, _) = infer(srv.port, "squeezenet1_1", &[b"not a jpeg".to_vec()]);
    assert_eq!(st, 400);
    let m1 = srv.metrics();
    assert_eq!(
        metric(&m1, "nv_inference_request_success", &sq),
        Some(succ0 + N as f64 + 1.0),
        "{m1}"
    );
    assert_eq!(
        metric(&m1, "nv_inference_request_failure", &sq),
        Some(fail0 + 1.0),
        "{m1}"
    );
    assert_eq!(
        metric(&m1, "nv_inference_count", &sq),
        Some(count0 + N as f64 + 2.0),
        "{m1}"
    );
    let bs1 = metric(&m1, "preba_batch_size_count", &sq).unwrap();
    assert!(
        bs1 > bs0,
        "preba_batch_size_count did not grow: {bs0} -> {bs1}"
    );
    assert!(m1.contains("# TYPE preba_batch_size histogram"), "{m1}");
    let inf = metric(&m1, "preba_batch_size_bucket", &[sq[0], "le=\"+Inf\""])
        .expect("preba_batch_size_bucket le=+Inf");
    assert_eq!(inf, bs1, "le=+Inf bucket != _count");
    assert!(
        metric(&m1, "preba_batch_size_sum", &sq).is_some_and(|s| s >= bs1),
        "{m1}"
    );
    // Triton's metric names for every model; the slow model's queue-full rejections.
    for model in ["squeezenet1_1", "tiny_audio", SLOW] {
        let l = format!("model=\"{model}\"");
        assert!(
            metric(&m1, "nv_inference_request_success", &[&l]).is_some_and(|v| v >= 1.0),
            "{model}: {m1}"
        );
    }
    assert!(
        metric(&m1, "preba_rejected_queue_full_total", &["model=\"slow\""])
            .is_some_and(|v| v >= 1.0),
        "no queue-full rejection counted for the slow model:\n{m1}"
    );
    let (st, _) = http(srv.mport, "GET", "/v2/health/live", &[], b"");
    assert_eq!(st, 404, "the metrics port serves only /metrics");

    // A worker killed mid-batch: the batch's requests get 500 naming the
    // slice, the worker comes back, later requests succeed.
    let worker = children(srv.pid())
        .into_iter()
        .find(|(_, c)| c.contains(" worker ") && c.contains(SLOW_SLICE))
        .unwrap_or_else(|| panic!("no worker of {SLOW_SLICE} among {:?}", children(srv.pid())));
    let q0 = stats_queue_count(srv.port, SLOW);
    let port = srv.port;
    let four = vec![jpeg.clone(); 4];
    let h = std::thread::spawn(move || infer(port, SLOW, &four));
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats_queue_count(srv.port, SLOW) < q0 + 4 {
        assert!(
            Instant::now() < deadline,
            "the batch of 4 never reached the slow slice"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    signal(worker.0, "KILL");
    let (st, body) = h.join().unwrap();
    assert_eq!(st, 500, "request of the killed batch: {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error member: {body}"));
    assert!(
        msg.contains(SLOW_SLICE),
        "error does not name the slice {SLOW_SLICE}: {msg}"
    );
    let restarts = |m: &str| {
        metric(
            m,
            "preba_slice_restarts_total",
            &[&format!("slice=\"{SLOW_SLICE}\"")],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = srv.metrics();
        if restarts(&m) == Some(1.0) {
            assert!(
                metric(
                    &m,
                    "preba_slice_failed_batches_total",
                    &[&format!("slice=\"{SLOW_SLICE}\"")]
                ) == Some(1.0),
                "{m}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slice not restarted (restarts {:?}):\n{m}",
            restarts(&m)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, body) = infer(srv.port, SLOW, &[jpeg.clone(), jpeg.clone()]);
    assert_eq!(st, 200, "after the restart: {body}");
    let new_worker = children(srv.pid())
        .into_iter()
        .find(|(_, c)| c.contains(SLOW_SLICE))
        .expect("restarted worker");
    assert_ne!(new_worker.0, worker.0);
    let (st, body) = infer(srv.port, "squeezenet1_1", std::slice::from_ref(&jpeg));
    assert_eq!(st, 200, "other model after the restart: {body}");

    // SIGTERM with 8 requests in flight: all answered 200, exit 0 within 5 s.
    let q0 = stats_queue_count(srv.port, SLOW);
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let j = jpeg.clone();
            std::thread::spawn(move || infer(port, SLOW, &[j]))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats_queue_count(srv.port, SLOW) == q0 {
        assert!(Instant::now() < deadline, "no batch of the 8 started");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (code, took) = srv.terminate(Duration::from_secs(15));
    let answers: Vec<(u16, String)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, (st, b)) in answers.iter().enumerate() {
        assert_eq!(*st, 200, "request {i} in flight at SIGTERM: {b}");
    }
    assert_eq!(code, Some(0), "exit after SIGTERM (took {took:?})");
    assert!(
        took <= Duration::from_secs(5),
        "exit took {took:?} (limit 5 s)"
    );
    eprintln!(
        "cpu_server_kserve_end_to_end: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn emulated_card_server_matches_cpu_and_survives_card_death() {
    let Some(e) = env() else { return };
    let Some((card_bin, fw)) = common::card_parts(&preba()) else {
        return;
    };
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let profile = make_repo(&repo, &e.models, false);
    let (gi, ga) = goldens(tmp.path());
    let mut srv = Server::start(
        "emulated",
        &repo,
        &profile,
        &[("PREBA_CARD_BIN", &card_bin), ("PREBA_FIRMWARE", &fw)],
    );
    eprintln!("emulated server up in {:.1} s", t0.elapsed().as_secs_f64());
    let card = children(srv.pid())
        .into_iter()
        .find(|(_, c)| c.contains("preba-card"))
        .unwrap_or_else(|| panic!("no preba-card child among {:?}", children(srv.pid())));

    // Card output (and the CPU fallback for the progressive JPEG) equals
    // onnxruntime on the CPU path's golden tensor; audio too.
    check_script(&e, &srv, tmp.path(), "infer,audio", &gi, &ga, false);
    let m = srv.metrics();
    let sq = ["model=\"squeezenet1_1\""];
    assert!(
        metric(&m, "preba_cpu_fallback_total", &sq).is_some_and(|v| v >= 1.0),
        "the progressive JPEG did not go to the CPU fallback:\n{m}"
    );
    assert!(
        metric(&m, "preba_card_requests_total", &[]).is_some_and(|v| v >= 4.0),
        "card did no work:\n{m}"
    );

    // The card process dies: later requests succeed via the CPU fallback or
    // fail with a clear error; the server stays up.
    signal(card.0, "KILL");
    std::thread::sleep(Duration::from_millis(200));
    let jpeg = std::fs::read(fixture("images", IMAGES[0])).unwrap();
    let mut ok = 0;
    let mut wrong_status = Vec::new();
    for i in 0..4 {
        let (st, body) = infer(srv.port, "squeezenet1_1", std::slice::from_ref(&jpeg));
        if st == 200 {
            ok += 1;
        } else {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| {
                panic!("request {i} after the card died: {st}, not JSON: {body}")
            });
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(
                msg.len() > 10,
                "request {i} after the card died: {st} with an unclear error {body}"
            );
            assert!((400..600).contains(&st), "{st}");
            // A dead card is the server's failure, not the client's: 5xx
            // (500/503), never a 4xx that tells the client its input is bad.
            if !(500..=503).contains(&st) {
                wrong_status.push(format!("request {i}: status {st}: {msg}"));
            }
            eprintln!("after card death: {st} {msg}");
        }
        let (st, _) = http(srv.port, "GET", "/v2/health/live", &[], b"");
        assert_eq!(st, 200, "not live after the card died");
    }
    eprintln!("after card death: {ok}/4 requests succeeded");
    // The ideal path (a preprocessed tensor) does not need the card at all.
    let x = vec![0u8; 3 * 224 * 224 * 4];
    let head = format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,3,224,224],"parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"output","parameters":{{"classification":1}}}}]}}"#,
        x.len()
    );
    let mut body = head.clone().into_bytes();
    body.extend_from_slice(&x);
    let (st, b) = http(
        srv.port,
        "POST",
        "/v2/models/squeezenet1_1/infer",
        &[("Inference-Header-Content-Length", head.len().to_string())],
        &body,
    );
    assert_eq!(
        st,
        200,
        "ideal path after the card died: {}",
        String::from_utf8_lossy(&b)
    );
    let (st, _) = http(srv.port, "GET", "/v2/health/live", &[], b"");
    assert_eq!(st, 200, "not live after the card died");
    let (code, took) = srv.terminate(Duration::from_secs(15));
    assert!(
        wrong_status.is_empty(),
        "after the card died, requests must succeed via the CPU fallback or get 500/503 (not 4xx): {wrong_status:#?}"
    );
    assert_eq!(
        code,
        Some(0),
        "exit after SIGTERM (took {took:?})\n{}",
        srv.log_text()
    );
    eprintln!("emulated_card_server: {:.1} s", t0.elapsed().as_secs_f64());
}

/// The policy is chosen per model: `deadline` on mixed slices (images) and
/// on length buckets (audio), `triton` round-robin, side by side in one
/// server. A request that cannot make its deadline is answered 429 at once,
/// judged by the latency of its own length: a long utterance is hopeless
/// where a short one with the same timeout is served.
#[test]
fn policies_per_model_and_deadline_rejects() {
    let Some(e) = env() else { return };
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let sq = e.models.join("squeezenet1_1/1/model.onnx");
    let au = e.models.join("tiny_audio/1/model.onnx");
    link(&sq, &repo.join("img_deadline/1/model.onnx"));
    std::fs::write(
        repo.join("img_deadline/config.toml"),
        "sla_ms = 1000\nslices = \"modeled:a100-3g.20gb*1,a100-2g.10gb*2\"\n[batching]\npolicy = \"deadline\"\nprofile_model = \"img\"\n",
    )
    .unwrap();
    link(&sq, &repo.join("img_triton/1/model.onnx"));
    std::fs::write(
        repo.join("img_triton/config.toml"),
        "slices = \"modeled:a100-1g.5gb*2\"\n[batching]\npolicy = \"triton\"\nprofile_model = \"img\"\npreferred_batch_size = [2]\nmax_queue_delay_us = 2000\n",
    )
    .unwrap();
    link(&au, &repo.join("audio_deadline/1/model.onnx"));
    std::fs::write(
        repo.join("audio_deadline/config.toml"),
        "kind = \"audio\"\nsla_ms = 40\nslices = \"modeled:a100-1g.5gb*1\"\n[batching]\npolicy = \"deadline\"\nprofile_model = \"speech\"\n",
    )
    .unwrap();
    let point = |b: u32, ms: f64| {
        format!(
            "  {{ batch = {b}, p50_ms = {ms}, p95_ms = {ms}, throughput = {} }},\n",
            f64::from(b) * 1e3 / ms
        )
    };
    let entry = |model: &str, slice: &str, bucket: Option<u32>, pts: &[(u32, f64)]| {
        let mut s =
            format!("[[entry]]\nmodel = \"{model}\"\nslice = \"{slice}\"\nsource = \"test\"\n");
        if let Some(b) = bucket {
            s += &format!("bucket = {b}\n");
        }
        s += "points = [\n";
        for &(b, ms) in pts {
            s += &point(b, ms);
        }
        s + "]\n"
    };
    let mut table = "format = \"preba-profile-1\"\n".to_string();
    table += &entry("img", "a100-3g.20gb", None, &[(1, 2.0), (2, 3.0), (4, 5.0)]);
    table += &entry("img", "a100-2g.10gb", None, &[(1, 3.0), (2, 5.0), (4, 9.0)]);
    table += &entry("img", "a100-1g.5gb", None, &[(1, 4.0), (2, 7.0), (4, 13.0)]);
    // Bucket 0 (< 2.5 s) is fast, bucket 1 (2.5-5 s) slow.
    table += &entry("speech", "a100-1g.5gb", Some(0), &[(1, 2.0), (4, 5.0)]);
    table += &entry("speech", "a100-1g.5gb", Some(1), &[(1, 300.0), (4, 600.0)]);
    let profile = tmp.path().join("profile.toml");
    std::fs::write(&profile, table).unwrap();
    let srv = Server::start("cpu", &repo, &profile, &[]);

    let jpeg = std::fs::read(fixture("images", IMAGES[0])).unwrap();
    let hs: Vec<_> = (0..6)
        .map(|_| {
            let (port, j) = (srv.port, jpeg.clone());
            std::thread::spawn(move || {
                (
                    infer(port, "img_deadline", std::slice::from_ref(&j)),
                    infer(port, "img_triton", std::slice::from_ref(&j)),
                )
            })
        })
        .collect();
    for h in hs {
        let ((a, ab), (b, bb)) = h.join().unwrap();
        assert_eq!(a, 200, "img_deadline: {ab}");
        assert_eq!(b, 200, "img_triton: {bb}");
    }

    // One element per request, the request-level `timeout` in microseconds.
    let send = |model: &str, input: &str, bytes: &[u8], timeout_us: u64| {
        let head = format!(
            r#"{{"parameters":{{"timeout":{timeout_us}}},"inputs":[{{"name":"{input}","datatype":"BYTES","shape":[1,1],"parameters":{{"binary_data_size":{}}}}}]}}"#,
            bytes.len() + 4
        );
        let mut body = head.clone().into_bytes();
        body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        body.extend_from_slice(bytes);
        let h = [("Inference-Header-Content-Length", head.len().to_string())];
        let (st, b) = http(
            srv.port,
            "POST",
            &format!("/v2/models/{model}/infer"),
            &h,
            &body,
        );
        (st, String::from_utf8_lossy(&b).into_owned())
    };
    // 1 us: nothing can make it, on any slice.
    let (st, body) = send("img_deadline", "IMAGE", &jpeg, 1);
    assert_eq!(st, 429, "{body}");
    assert!(body.contains("deadline"), "429 without the reason: {body}");
    // 150 ms: a 1.2 s utterance (bucket 0, 2 ms) makes it; a 3.1 s one
    // (bucket 1, 300 ms) cannot and is told so at once, not after 150 ms.
    let short = std::fs::read(fixture("audio", WAVS[2])).unwrap();
    let long = std::fs::read(fixture("audio", WAVS[0])).unwrap();
    let (st, body) = send("audio_deadline", "AUDIO", &short, 150_000);
    assert_eq!(st, 200, "short utterance: {body}");
    let t0 = Instant::now();
    let (st, body) = send("audio_deadline", "AUDIO", &long, 150_000);
    assert_eq!(st, 429, "long utterance: {body}");
    assert!(
        t0.elapsed() < Duration::from_millis(150),
        "the hopeless request was answered after its deadline ({:?})",
        t0.elapsed()
    );
    let m = srv.metrics();
    for (model, n) in [
        ("img_deadline", 1.0),
        ("audio_deadline", 1.0),
        ("img_triton", 0.0),
    ] {
        assert_eq!(
            metric(
                &m,
                "preba_rejected_deadline_total",
                &[&format!("model=\"{model}\"")]
            ),
            Some(n),
            "{model}:\n{m}"
        );
    }
}
