//! `cargo xtask flash --probe ...` (JTAG through probe-rs: the `preba-flash` binary of flash/,
//! its own workspace so probe-rs stays out of the main one), the JTAG test step of `cargo xtask
//! test` and `cargo xtask bench flash`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::setup;
use crate::util::{self, Result, cargo, run};

const USAGE: &str = "\
usage: cargo xtask flash --probe SELECTOR [--reset run|halt|none] [--no-verify] [ELF]
  ELF defaults to the `cargo xtask build-fw` output. For the emulated card:
  preba-card --debug-bmp 127.0.0.1:PORT ... then --probe 1d50:6018:127.0.0.1:PORT";

/// How long preba-card may take to print its debug port.
const CARD_START: Duration = Duration::from_secs(60);
/// How long one preba-flash run may take before the test calls it hung.
const FLASH_TIMEOUT: Duration = Duration::from_secs(300);
/// The images the JTAG test preprocesses on the card and on the CPU.
const IMAGES: [&str; 4] = [
    "imagenet_astronaut.jpg",
    "imagenet_chelsea.jpg",
    "imagenet_coffee.jpg",
    "gray_camera.jpg",
];

fn flash_manifest() -> PathBuf {
    util::root().join("flash").join("Cargo.toml")
}

fn flash_target_dir() -> PathBuf {
    util::target_dir().join("flash")
}

/// Builds `preba-flash` (release, cached in target/flash) and returns its path.
pub fn build_tool() -> Result<PathBuf> {
    run(cargo()
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(flash_manifest())
        .arg("--target-dir")
        .arg(flash_target_dir()))?;
    Ok(flash_target_dir().join("release").join("preba-flash"))
}

/// `cargo xtask flash ...`.
pub fn run_cli(rest: &[&str]) -> Result<()> {
    let mut args: Vec<String> = Vec::new();
    let mut elf = None;
    let mut it = rest.iter();
    let mut probe = false;
    while let Some(&a) = it.next() {
        match a {
            "--probe" | "--reset" | "--chip-description" => {
                probe |= a == "--probe";
                let v = it.next().ok_or(format!("{a} needs a value\n{USAGE}"))?;
                args.push(a.into());
                args.push((*v).into());
            }
            "--no-verify" => args.push(a.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => elf = Some(PathBuf::from(s)),
        }
    }
    if !probe {
        return Err(format!("flash needs --probe SELECTOR\n{USAGE}"));
    }
    let elf = match elf {
        Some(e) => e,
        None => setup::build_fw()?,
    };
    let tool = build_tool()?;
    run(Command::new(tool).args(&args).arg(elf))
}

/// fmt check and clippy of flash/ (not a workspace member, so the workspace runs miss it).
pub fn lint() -> Result<()> {
    run(cargo()
        .args(["fmt", "--manifest-path"])
        .arg(flash_manifest())
        .args(["--", "--check"]))?;
    run(cargo()
        .args(["clippy", "--release", "--manifest-path"])
        .arg(flash_manifest())
        .arg("--target-dir")
        .arg(flash_target_dir())
        .args(["--", "-D", "warnings"]))
}

/// A preba-card child serving the debug port; killed on drop.
struct CardProc {
    child: Child,
    socket: PathBuf,
    bmp: Option<String>,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl CardProc {
    fn start(
        bin: &Path,
        dir: &Path,
        name: &str,
        firmware: &Path,
        extra: &[&str],
    ) -> Result<CardProc> {
        let socket = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new(bin);
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--firmware")
            .arg(firmware)
            .args(["--image-cus", "2", "--audio-cus", "1", "--norm-cus", "1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", util::show(&cmd)))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr)
                .lines()
                .map_while(std::io::Result::ok)
            {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut card = CardProc {
            child,
            socket,
            bmp: None,
            lines: rx,
            log: Vec::new(),
        };
        // Ready when the vfio-user socket is listening (and the debug port printed, if asked).
        let want_bmp = extra.contains(&"--debug-bmp");
        let deadline = Instant::now() + CARD_START;
        loop {
            while let Ok(l) = card.lines.try_recv() {
                if let Some(a) = l.strip_prefix("debug: bmp tcp ") {
                    card.bmp = Some(a.trim().to_string());
                }
                card.log.push(l);
            }
            let listening = card.log.iter().any(|l| l.contains("listening on"));
            if listening && (!want_bmp || card.bmp.is_some()) {
                return Ok(card);
            }
            if let Ok(Some(st)) = card.child.try_wait() {
                return Err(format!(
                    "preba-card exited ({st}):\n{}",
                    card.log.join("\n")
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "preba-card did not start in {CARD_START:?}:\n{}",
                    card.log.join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn probe(&self) -> String {
        format!("1d50:6018:{}", self.bmp.as_deref().unwrap_or("?"))
    }

    fn spec(&self) -> String {
        format!("vfio-user:{}", self.socket.display())
    }
}

impl Drop for CardProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` with a time limit, returning its output (stdout and stderr captured).
fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let shown = util::show(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        if child
            .try_wait()
            .map_err(|e| format!("{shown}: {e}"))?
            .is_some()
        {
            return child
                .wait_with_output()
                .map_err(|e| format!("{shown}: {e}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{shown} did not finish in {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs preba-flash and expects success; returns its summary line.
fn flash_ok(tool: &Path, probe: &str, elf: &Path) -> Result<String> {
    eprintln!("xtask: flash {} over {probe}", elf.display());
    let o = output_within(
        Command::new(tool).args(["--probe", probe]).arg(elf),
        FLASH_TIMEOUT,
    )?;
    let err = stderr_of(&o);
    if !o.status.success() {
        return Err(format!("preba-flash failed ({}): {err}", o.status));
    }
    Ok(err
        .lines()
        .find(|l| l.starts_with("preba-flash: ") && l.contains("bytes/s"))
        .unwrap_or("")
        .to_string())
}

/// Runs preba-flash and expects a failure whose one error line contains `want`.
fn flash_fails(tool: &Path, what: &str, args: &[&str], elf: &Path, want: &str) -> Result<()> {
    let o = output_within(Command::new(tool).args(args).arg(elf), FLASH_TIMEOUT)?;
    let err = stderr_of(&o);
    let line = err
        .lines()
        .find(|l| l.starts_with("preba-flash: error: "))
        .unwrap_or("");
    if o.status.success() || !line.contains(want) {
        return Err(format!(
            "{what}: preba-flash should fail with \"{want}\", got {}: {err}",
            o.status
        ));
    }
    eprintln!("xtask: {what}: refused as expected: {line}");
    Ok(())
}

/// The firmware build id `preba card info` reports for a card.
fn card_build_id(preba: &Path, card: &CardProc) -> Result<String> {
    let o = output_within(
        Command::new(preba).args(["card", "info"]).arg(card.spec()),
        Duration::from_secs(60),
    )?;
    let out = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(format!("preba card info failed: {}{}", out, stderr_of(&o)));
    }
    out.split("build id ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_alphanumeric()).next())
        .map(str::to_string)
        .ok_or_else(|| format!("preba card info shows no build id:\n{out}"))
}

/// A copy of `elf` whose first PT_LOAD segment is moved to `paddr` (ELF32 little-endian).
fn move_first_segment(elf: &Path, paddr: u32, out: &Path) -> Result<()> {
    let mut b = std::fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let rd16 = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let rd32 = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    if b.len() < 52 || &b[..4] != b"\x7fELF" || b[4] != 1 {
        return Err(format!("{}: not an ELF32 file", elf.display()));
    }
    let (phoff, phentsize, phnum) = (rd32(&b, 0x1c) as usize, rd16(&b, 0x2a), rd16(&b, 0x2c));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if ph + 32 > b.len() {
            break;
        }
        if rd32(&b, ph) == 1 {
            b[ph + 12..ph + 16].copy_from_slice(&paddr.to_le_bytes());
            return std::fs::write(out, &b).map_err(|e| format!("{}: {e}", out.display()));
        }
    }
    Err(format!("{}: no PT_LOAD segment", elf.display()))
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = l
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?
        .port();
    drop(l);
    Ok(port)
}

pub(crate) fn card_binaries(release: bool) -> Result<(PathBuf, PathBuf)> {
    let mut c = cargo();
    c.args(["build", "--quiet", "--bin", "preba", "--bin", "preba-card"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    let dir = util::target_dir().join(if release { "release" } else { "debug" });
    Ok((dir.join("preba"), dir.join("preba-card")))
}

/// The JTAG step of `cargo xtask test`: probe-rs (through preba-flash) downloads a firmware
/// variant into a running emulated card, which then reports the variant's build id and
/// preprocesses images bit-identically to the CPU path; then the failure cases.
pub fn test() -> Result<()> {
    lint()?;
    let tool = build_tool()?;
    let (preba, card_bin) = card_binaries(false)?;
    let fw = setup::build_fw()?;
    let variant = setup::build_fw_variant("jtag")?;
    let dir = util::target_dir().join("jtag-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    // The two images' build ids, as IDENTIFY reports them when each boots normally.
    let id_default = card_build_id(
        &preba,
        &CardProc::start(&card_bin, &dir, "default", &fw, &[])?,
    )?;
    let id_variant = card_build_id(
        &preba,
        &CardProc::start(&card_bin, &dir, "variant", &variant, &[])?,
    )?;
    if id_default == id_variant {
        return Err(format!(
            "the jtag variant has the default build id {id_default}"
        ));
    }

    // A card booted with the default image, the variant flashed over JTAG: IDENTIFY says so.
    let bmp = ["--debug-bmp", "127.0.0.1:0"];
    let card = CardProc::start(&card_bin, &dir, "jtag1", &fw, &bmp)?;
    let summary = flash_ok(&tool, &card.probe(), &variant)?;
    eprintln!("xtask: {summary}");
    let id = card_build_id(&preba, &card)?;
    if id != id_variant {
        return Err(format!(
            "after the JTAG flash the card reports build id {id}, the flashed ELF's is {id_variant} \
             (the booted image's is {id_default})"
        ));
    }
    eprintln!("xtask: IDENTIFY reports the flashed build id {id}");
    drop(card);

    // Again, then image requests: bit-identical to the golden model on the CPU, done by the card.
    let card = CardProc::start(&card_bin, &dir, "jtag2", &fw, &bmp)?;
    flash_ok(&tool, &card.probe(), &variant)?;
    let images: Vec<PathBuf> = IMAGES
        .iter()
        .map(|n| util::root().join("fixtures").join("images").join(n))
        .collect();
    let run_pre = |spec: &str, out: &Path, manifest: &Path| -> Result<()> {
        let o = output_within(
            Command::new(&preba)
                .args(["preprocess", "--card", spec, "-o"])
                .arg(out)
                .arg("--manifest")
                .arg(manifest)
                .args(&images),
            Duration::from_secs(120),
        )?;
        if !o.status.success() {
            return Err(format!(
                "preba preprocess --card {spec} failed: {}",
                stderr_of(&o)
            ));
        }
        Ok(())
    };
    let (card_npy, cpu_npy) = (dir.join("card.npy"), dir.join("cpu.npy"));
    let card_manifest = dir.join("card.json");
    run_pre(&card.spec(), &card_npy, &card_manifest)?;
    run_pre("cpu", &cpu_npy, &dir.join("cpu.json"))?;
    drop(card);
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    if read(&card_npy)? != read(&cpu_npy)? {
        return Err("images preprocessed by the JTAG-flashed card differ from the CPU path".into());
    }
    let manifest: String = read(&card_manifest)?
        .into_iter()
        .map(char::from)
        .filter(|c| !c.is_whitespace())
        .collect();
    let on_card = manifest.matches("\"via\":\"card\"").count();
    if on_card != IMAGES.len() {
        return Err(format!(
            "{on_card} of {} images went through the card's engines:\n{manifest}",
            IMAGES.len()
        ));
    }
    eprintln!(
        "xtask: {} images through the flashed card, identical to the CPU path",
        IMAGES.len()
    );

    // Failure cases, each ending in one clear line.
    let refused = format!("1d50:6018:127.0.0.1:{}", closed_port()?);
    let outside = dir.join("outside.elf");
    move_first_segment(&variant, 0x9000_0000, &outside)?;
    // Refused before anything reaches the probe: the selector points nowhere.
    flash_fails(
        &tool,
        "segment outside the map",
        &["--probe", &refused],
        &outside,
        "ELF segment",
    )?;
    flash_fails(
        &tool,
        "connection refused",
        &["--probe", &refused],
        &variant,
        "cannot connect to the probe",
    )?;
    flash_fails(
        &tool,
        "no such probe",
        &["--probe", "1234:5678"],
        &variant,
        "no such probe",
    )?;
    let card = CardProc::start(
        &card_bin,
        &dir,
        "idcode",
        &fw,
        &[&bmp[..], &["--debug-idcode", "0x00000a5b"]].concat(),
    )?;
    flash_fails(
        &tool,
        "wrong IDCODE",
        &["--probe", &card.probe()],
        &variant,
        "wrong IDCODE 0x00000a5b",
    )?;
    drop(card);
    let card = CardProc::start(
        &card_bin,
        &dir,
        "sberror",
        &fw,
        &[&bmp[..], &["--debug-sberror", "0x80000100"]].concat(),
    )?;
    flash_fails(
        &tool,
        "sberror",
        &["--probe", &card.probe()],
        &variant,
        "sberror",
    )?;
    drop(card);
    let card = CardProc::start(
        &card_bin,
        &dir,
        "corrupt",
        &fw,
        &[&bmp[..], &["--debug-corrupt", "0x80000123"]].concat(),
    )?;
    flash_fails(
        &tool,
        "corrupted IMEM byte",
        &["--probe", &card.probe()],
        &variant,
        "first difference at 0x80000123",
    )?;
    drop(card);
    Ok(())
}

/// `cargo xtask bench flash`: the firmware downloaded and verified over JTAG into a release
/// preba-card; prints the time and bytes/s (target: under 10 s).
pub fn bench(rest: &[&str]) -> Result<()> {
    let runs: usize = match rest {
        [] => 3,
        ["--runs", n] => n.parse().map_err(|_| format!("--runs: not a count: {n}"))?,
        _ => return Err("usage: cargo xtask bench flash [--runs N]".into()),
    };
    let tool = build_tool()?;
    let (_, card_bin) = card_binaries(true)?;
    let fw = setup::build_fw()?;
    let dir = util::target_dir().join("bench-flash");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut secs = Vec::new();
    for i in 0..runs {
        let card = CardProc::start(
            &card_bin,
            &dir,
            "bench",
            &fw,
            &["--debug-bmp", "127.0.0.1:0"],
        )?;
        let t = Instant::now();
        let summary = flash_ok(&tool, &card.probe(), &fw)?;
        let wall = t.elapsed().as_secs_f64();
        // "... N bytes ... download D s, verify V s, R bytes/s ..."
        let num_after = |key: &str| -> Option<f64> {
            let s = summary.split(key).nth(1)?;
            s.split_whitespace()
                .next()?
                .trim_end_matches(',')
                .parse()
                .ok()
        };
        let bytes: f64 = summary
            .strip_prefix("preba-flash: ")
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no summary from preba-flash: {summary}"))?;
        let (d, v) = (
            num_after("download ").unwrap_or(0.0),
            num_after("verify ").unwrap_or(0.0),
        );
        println!(
            "run {}: {bytes:.0} bytes: download {d:.2} s + verify {v:.2} s = {:.2} s ({:.0} bytes/s); whole attach..run {wall:.2} s",
            i + 1,
            d + v,
            bytes / (d + v).max(1e-9)
        );
        secs.push((d + v, bytes));
        drop(card);
    }
    secs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (med, bytes) = secs[secs.len() / 2];
    println!(
        "flash over JTAG (probe-rs BMP driver): {bytes:.0} bytes downloaded and verified in {med:.2} s median of {runs}, {:.0} bytes/s (target < 10 s)",
        bytes / med.max(1e-9)
    );
    Ok(())
}
