//! Shared by the host-driver integration tests (each test binary uses a part).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// The committed fixtures under `fixtures/<kind>` with one of the
/// extensions `exts`, sorted.
pub fn fixtures(kind: &str, exts: &[&str]) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| exts.iter().any(|x| e == *x)))
        .collect();
    v.sort();
    v
}

/// The fixtures of `kind` whose file names start with `prefix`.
pub fn fixtures_named(kind: &str, exts: &[&str], prefix: &str) -> Vec<PathBuf> {
    fixtures(kind, exts)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

/// Exit code (-1 for a signal) and stderr of a finished `preba` run.
pub fn code_and_stderr(o: &Output) -> (i32, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `preba-card` (next to `preba`, or `PREBA_CARD_BIN`) and the firmware ELF (`PREBA_FIRMWARE`,
/// or the workspace's `cargo xtask build-fw` output), or None with a note to skip. Under
/// `cargo xtask test` (PREBA_FIRMWARE set) a missing part is a failure, never a skip.
pub fn card_parts(preba: &Path) -> Option<(PathBuf, PathBuf)> {
    let card = std::env::var_os("PREBA_CARD_BIN")
        .map(PathBuf::from)
        .or_else(|| Some(preba.with_file_name("preba-card")))
        .filter(|p| p.is_file());
    let fw = std::env::var_os("PREBA_FIRMWARE")
        .map(PathBuf::from)
        .or_else(|| {
            Some(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/riscv32imac-unknown-none-elf/firmware/preba-firmware"),
            )
        })
        .filter(|p| p.is_file());
    match (card, fw) {
        (Some(c), Some(f)) => Some((c, f)),
        (c, f) => {
            assert!(
                std::env::var_os("PREBA_FIRMWARE").is_none(),
                "preba-card ({c:?}) or the firmware ELF ({f:?}) is missing although PREBA_FIRMWARE is set"
            );
            eprintln!("SKIPPED: needs preba-card ({c:?}) and the firmware ELF ({f:?})");
            None
        }
    }
}

/// Starts `preba-card` on `sock` with firmware `fw` and waits (30 s at most) for its socket.
pub fn start_card(bin: &Path, fw: &Path, sock: &Path) -> std::process::Child {
    start_card_with(bin, fw, sock, &[], None)
}

/// [`start_card`] with more `preba-card` arguments (e.g. `--inject SPEC`); with `log`, the
/// card's stderr (warnings and errors: `PREBA_CARD_LOG=warn`) goes to that file. Panics at
/// once, with the log, when the card exits before its socket appears.
pub fn start_card_with(
    bin: &Path,
    fw: &Path,
    sock: &Path,
    args: &[String],
    log: Option<&Path>,
) -> std::process::Child {
    let _ = std::fs::remove_file(sock);
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--socket")
        .arg(sock)
        .arg("--firmware")
        .arg(fw)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(l) = log {
        let f = std::fs::File::create(l).unwrap_or_else(|e| panic!("{}: {e}", l.display()));
        cmd.stderr(f).env("PREBA_CARD_LOG", "warn");
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let t0 = std::time::Instant::now();
    while !sock.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            let tail = log
                .and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default();
            panic!("preba-card {args:?} exited ({st}) before its socket appeared\n{tail}");
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "preba-card did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}
