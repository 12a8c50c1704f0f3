//! End to end through the real emulated card: `preba` starts (or attaches to)
//! `preba-card` running the firmware ELF, over vfio-user.
//!
//! Needs the `preba-card` binary (next to `preba`, or `PREBA_CARD_BIN`) and
//! the firmware ELF (`PREBA_FIRMWARE`, or the workspace's `cargo xtask
//! build-fw` output). Without them each test says so on stderr and passes:
//! `cargo xtask test` builds both first.

mod common;

use preba_protocol::media;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn preba() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_preba"))
}

fn fixtures(kind: &str, ext: &str) -> Vec<PathBuf> {
    common::fixtures(kind, &[ext])
}

fn run(
    card: &str,
    card_bin: &Path,
    fw: &Path,
    out: &Path,
    man: &Path,
    inputs: &[PathBuf],
) -> (i32, String) {
    let o = Command::new(preba())
        .env("PREBA_CARD_BIN", card_bin)
        .env("PREBA_FIRMWARE", fw)
        .args(["preprocess", "--card", card, "-o"])
        .arg(out)
        .arg("--manifest")
        .arg(man)
        .args(inputs)
        .output()
        .unwrap();
    common::code_and_stderr(&o)
}

fn manifest(p: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v["inputs"].as_array().unwrap().clone()
}

/// Whether the card's engines take this input (else: cpu-fallback).
fn card_takes(path: &Path) -> bool {
    let b = std::fs::read(path).unwrap();
    match media::sniff(&b) {
        Some(media::Kind::Wav) => media::probe_wav(&mut &b[..]).is_ok(),
        _ => media::probe_jpeg(&mut &b[..]).is_ok_and(|p| p.card_check().is_ok()),
    }
}

/// One emulated card at a time: the machines running these tests are small
/// (a starved card is only slower: it runs on modeled time).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn compare(kind: &str, ext: &str, out_ext: &str) {
    let Some((bin, fw)) = common::card_parts(&preba()) else {
        return;
    };
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let inputs = fixtures(kind, ext);
    let (co, cm) = (
        dir.path().join(format!("cpu.{out_ext}")),
        dir.path().join("cpu.json"),
    );
    let (eo, em) = (
        dir.path().join(format!("card.{out_ext}")),
        dir.path().join("card.json"),
    );
    let (rc_cpu, _) = run("cpu", &bin, &fw, &co, &cm, &inputs);
    let t0 = Instant::now();
    let (rc_card, err) = run("emulated", &bin, &fw, &eo, &em, &inputs);
    eprintln!(
        "{kind}: {} inputs through the emulated card in {:?}",
        inputs.len(),
        t0.elapsed()
    );
    assert_eq!(rc_cpu, rc_card, "{err}");
    assert!(
        std::fs::read(&co).unwrap() == std::fs::read(&eo).unwrap(),
        "outputs differ"
    );
    let (mc, me) = (manifest(&cm), manifest(&em));
    assert_eq!(mc.len(), me.len());
    let (mut on_card, mut supported) = (0, 0);
    let mut fell_back = Vec::new();
    for (c, e) in mc.iter().zip(&me) {
        assert_eq!(c["status"], e["status"], "{}", c["path"]);
        assert_eq!(c["index"], e["index"], "{}", c["path"]);
        if c["status"] == "ok" {
            let p = Path::new(c["path"].as_str().unwrap());
            if card_takes(p) {
                supported += 1;
                if e["via"] == "card" {
                    on_card += 1;
                } else {
                    assert_eq!(e["via"], "cpu-fallback", "{}", p.display());
                    fell_back.push(p.display().to_string());
                }
            } else {
                assert_eq!(e["via"], "cpu-fallback", "{}", p.display());
            }
        }
    }
    // The card runs on modeled time: a loaded machine makes it slower, never
    // trips its CU watchdog, so every input its engines take is made on it.
    assert!(
        fell_back.is_empty(),
        "supported inputs that fell back to the CPU: {fell_back:?}"
    );
    assert_eq!(on_card, supported);
    assert!(on_card > 5, "only {on_card} supported inputs");
}

#[test]
fn images_through_the_emulated_card_match_cpu() {
    compare("images", "jpg", "npy");
}

#[test]
fn audio_through_the_emulated_card_matches_cpu() {
    compare("audio", "wav", "npz");
}

#[test]
fn card_info_prints_identify_and_telemetry() {
    let Some((bin, fw)) = common::card_parts(&preba()) else {
        return;
    };
    let _g = serial();
    let o = Command::new(preba())
        .env("PREBA_CARD_BIN", &bin)
        .env("PREBA_FIRMWARE", &fw)
        .args(["card", "info", "emulated"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for k in [
        "firmware",
        "build id",
        "compute units",
        "board energy",
        "cu 0",
    ] {
        assert!(text.contains(k), "no `{k}` in:\n{text}");
    }
}

/// What happens to the card mid-run.
#[derive(Clone, Copy)]
enum Blow {
    Kill,
    Stop,
}

/// Runs `preba preprocess` over many images through a `preba-card` process, does `blow` to
/// the card once the streamed manifest shows answered inputs (an observable event, not a
/// sleep), and returns how long `preba` then took to exit 1 and its last stderr line. Fails
/// when `preba` is still running after `bound`.
fn card_fails_mid_run(blow: Blow, bound: Duration) -> Option<(Duration, String)> {
    let (bin, fw) = common::card_parts(&preba())?;
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("card.sock");
    let mut card = common::start_card(&bin, &fw, &sock);
    let imgs: Vec<PathBuf> = fixtures("images", "jpg")
        .into_iter()
        .filter(|p| card_takes(p))
        .collect();
    // Enough work to be mid-run with room to spare.
    let inputs: Vec<PathBuf> = imgs
        .iter()
        .cycle()
        .take(imgs.len() * 400)
        .cloned()
        .collect();
    let out = dir.path().join("o.npy");
    let man = dir.path().join("m.json");
    // stderr to a file: a pipe nobody reads would fill and block `preba`.
    let err_path = dir.path().join("stderr");
    let mut preba = Command::new(preba())
        .arg("preprocess")
        .arg("--card")
        .arg(format!("vfio-user:{}", sock.display()))
        .arg("-o")
        .arg(&out)
        .arg("--manifest")
        .arg(&man)
        .args(&inputs)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // The streamed manifest names each input as it is answered.
    while !std::fs::read_to_string(&man).is_ok_and(|m| m.contains("\"via\"")) {
        assert!(preba.try_wait().unwrap().is_none(), "run ended early");
        assert!(t0.elapsed() < Duration::from_secs(60), "no output");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = card.id() as libc::pid_t;
    match blow {
        Blow::Kill => card.kill().unwrap(),
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        Blow::Stop => assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0),
    }
    let blown = Instant::now();
    let status = loop {
        if let Some(s) = preba.try_wait().unwrap() {
            break Some(s);
        }
        if blown.elapsed() > bound {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let after = blown.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let _ = card.kill();
    let _ = card.wait();
    let err = std::fs::read_to_string(&err_path).unwrap();
    let Some(status) = status else {
        let _ = preba.kill();
        panic!("preba still running {after:?} after the card failed:\n{err}");
    };
    assert_eq!(status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.contains("card vfio-user:"), "last line: {last}");
    Some((after, last))
}

/// The card process killed mid-run: every in-flight request fails within a
/// second, `preba` exits 1 naming the card, nothing hangs.
#[test]
fn card_killed_mid_run_fails_cleanly() {
    let Some((after, last)) = card_fails_mid_run(Blow::Kill, Duration::from_secs(20)) else {
        return;
    };
    eprintln!("preba exited {after:?} after the kill; last line: {last}");
    assert!(after < Duration::from_secs(2), "{after:?}");
}

/// The card process stopped (SIGSTOP) mid-run, as a hung card would be: the
/// socket operations have deadlines, so `preba` does not block forever; it
/// exits 1 naming the card within the request deadline plus one socket
/// deadline, and nothing hangs after the card is continued and killed.
#[test]
fn card_stopped_mid_run_fails_within_the_deadlines() {
    let bound = preba_host::backend::REQUEST_TIMEOUT
        + preba_host::vfio_user::OP_TIMEOUT
        + Duration::from_secs(10);
    let Some((after, last)) = card_fails_mid_run(Blow::Stop, bound) else {
        return;
    };
    eprintln!("preba exited {after:?} after SIGSTOP; last line: {last}");
}

/// Without `--card`, `preba preprocess` runs through the emulated card.
#[test]
fn emulated_is_the_default() {
    let Some((bin, fw)) = common::card_parts(&preba()) else {
        return;
    };
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let imgs: Vec<PathBuf> = common::fixtures_named("images", &["jpg"], "imagenet")
        .into_iter()
        .take(3)
        .collect();
    let (out, man) = (dir.path().join("o.npy"), dir.path().join("m.json"));
    let o = Command::new(preba())
        .env("PREBA_CARD_BIN", &bin)
        .env("PREBA_FIRMWARE", &fw)
        .arg("preprocess")
        .arg("-o")
        .arg(&out)
        .arg("--manifest")
        .arg(&man)
        .args(&imgs)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&man).unwrap()).unwrap();
    assert_eq!(doc["card"], "emulated");
    for e in doc["inputs"].as_array().unwrap() {
        assert_eq!(e["via"], "card");
    }
}
