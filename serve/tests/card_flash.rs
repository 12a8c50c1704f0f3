//! `preba card flash` and `preba card info` on an emulated card whose SPI flash lives in a
//! file (`--card emulated:FILE`): the flash goes to the slot that is not running and runs
//! after the reset, survives a restart of the card, `--rollback` switches back, and bad
//! arguments fail with one clear line. (Image B with another build id and the broken-image
//! rollback are in qemu-device/tests/flash_pcie.rs, through the same host driver API.)
//!
//! Needs `preba-card` next to `preba` (or `PREBA_CARD_BIN`) and the firmware ELF
//! (`PREBA_FIRMWARE`, or the workspace's build-fw output); without them the test says so and
//! passes, unless PREBA_FIRMWARE is set (`cargo xtask test`), where a missing part fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn preba() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_preba"))
}

fn run(card: &Path, fw: &Path, args: &[&str]) -> Output {
    Command::new(preba())
        .env("PREBA_CARD_BIN", card)
        .env("PREBA_FIRMWARE", fw)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The value after `key` on the line that starts with it.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map_or("", str::trim)
}

#[test]
fn card_flash_info_restart_and_rollback() {
    let Some((card, fw)) = common::card_parts(&preba()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let flash = dir.path().join("card.flash");
    let spec = format!("emulated:{}", flash.display());

    let o = run(&card, &fw, &["card", "info", "--card", &spec]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let first = field(&out, "running").to_string();
    assert!(first.starts_with("slot A build "), "{out}");
    assert_eq!(field(&out, "slot B"), "empty", "{out}");
    assert!(flash.is_file(), "the flash file is created");

    // Flash (the same build): it goes to slot B and runs there after the reset.
    let fw_s = fw.to_string_lossy();
    let o = run(&card, &fw, &["card", "flash", "--card", &spec, &fw_s]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("to slot B") && out.contains("it runs"),
        "{out}"
    );
    assert!(
        err.contains("committed to slot B (CRC"),
        "steps on stderr: {err}"
    );

    // A new card process on the same flash file (a power cycle) runs slot B.
    let o = run(&card, &fw, &["card", "info", &spec]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(field(&out, "running").starts_with("slot B build "), "{out}");
    assert_eq!(field(&out, "last boot"), "booted the active slot", "{out}");
    assert!(field(&out, "slot A").starts_with("good build "), "{out}");
    assert!(field(&out, "slot B").starts_with("good build "), "{out}");

    // --rollback: back to slot A.
    let o = run(
        &card,
        &fw,
        &["card", "flash", "--card", &spec, "--rollback"],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.starts_with("rolled back: slot A runs build"), "{out}");

    // Bad input: a file that is not an ELF, named in one line (usage error, exit 2).
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"not an elf").unwrap();
    let o = run(
        &card,
        &fw,
        &["card", "flash", "--card", &spec, &junk.to_string_lossy()],
    );
    let (_, err) = text(&o);
    assert_ne!(o.status.code(), Some(0));
    assert!(err.contains("junk.bin") && err.contains("ELF"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
