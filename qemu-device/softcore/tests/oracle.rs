//! The QEMU oracle: each program runs under `qemu-system-riscv32 -M virt -bios none` with
//! `-icount shift=0` (one instruction = 1 ns of virtual time, `mtime` at 10 MHz) and on the soft
//! core; the UART output must be identical byte for byte. The programs print log points
//! ("@name +N", N = `minstret` delta), so this also compares instruction counts between log
//! points, and the exit status of the test finisher.
//!
//! Without `qemu-system-riscv32` on PATH the test is skipped with a note, or fails when
//! `PREBA_REQUIRE_QEMU=1`. Debian/Ubuntu package: `qemu-system-misc`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use preba_softcore::{Exit, Halt};

fn qemu_available() -> bool {
    let found = Command::new("qemu-system-riscv32")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let msg = "qemu-system-riscv32 not found (install the qemu-system-misc package)";
        if std::env::var("PREBA_REQUIRE_QEMU").is_ok_and(|v| v == "1") {
            panic!("{msg}; PREBA_REQUIRE_QEMU=1 requires it");
        }
        // Straight to stderr, past libtest's capture, so the skip is visible.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: skipping the QEMU oracle test: {msg}"
        );
    }
    found
}

/// Runs `elf` under QEMU; returns (stdout, exit code).
fn run_qemu(elf: &std::path::Path) -> (Vec<u8>, i32) {
    let mut child = Command::new("qemu-system-riscv32")
        .args([
            "-M", "virt", "-bios", "none", "-display", "none", "-monitor", "none",
        ])
        .args([
            "-serial",
            "stdio",
            "-icount",
            "shift=0,align=off,sleep=off",
            "-kernel",
        ])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-riscv32");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for qemu").is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("qemu timed out on {}", elf.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("qemu output");
    (out.stdout, out.status.code().unwrap_or(-1))
}

#[test]
fn qemu_and_softcore_agree() {
    if !qemu_available() {
        return;
    }
    let dir = common::programs_dir();
    let mut failures = Vec::new();
    for name in common::ORACLE_PROGRAMS {
        let (qemu_out, qemu_code) = run_qemu(&dir.join(name));
        let ours = common::run_here(name);
        let our_code = match ours.exit {
            Exit::Halt(Halt::PowerOff) => 0,
            Exit::Halt(Halt::Fail(c)) => c as i32,
            other => {
                failures.push(format!("{name}: soft core stopped with {other:?}"));
                continue;
            }
        };
        if qemu_out != ours.uart {
            failures.push(format!(
                "{name}: outputs differ\n--- qemu\n{}\n--- softcore\n{}",
                String::from_utf8_lossy(&qemu_out),
                String::from_utf8_lossy(&ours.uart)
            ));
        }
        if qemu_code != our_code {
            failures.push(format!(
                "{name}: exit {qemu_code} under qemu, {our_code} here"
            ));
        }
        let marks = qemu_out
            .split(|&b| b == b'\n')
            .filter(|l| l.first() == Some(&b'@'));
        eprintln!("{name}: identical ({} log points)", marks.count());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The firmware ELF itself under both: its boot banner and self-test (with
/// `minstret` deltas at log points), then "no card" (the card's peripherals
/// do not exist on `virt`) and power-off.
#[test]
fn firmware_elf_agrees_with_qemu() {
    if !qemu_available() {
        return;
    }
    let elf = preba_softcore::progs::firmware_elf().expect("the firmware ELF");
    let bytes = std::fs::read(&elf).unwrap_or_else(|e| panic!("{}: {e}", elf.display()));
    let (qemu_out, qemu_code) = run_qemu(&elf);
    let ours =
        preba_softcore::virt::run_elf(preba_softcore::virt::virt_config(), &bytes, 2_000_000_000)
            .expect("firmware loads");
    assert_eq!(
        String::from_utf8_lossy(&qemu_out),
        String::from_utf8_lossy(&ours.uart),
        "firmware UART output differs between QEMU and the soft core"
    );
    assert_eq!(ours.exit, Exit::Halt(Halt::PowerOff));
    assert_eq!(qemu_code, 0);
    let text = String::from_utf8_lossy(&ours.uart);
    assert!(
        text.contains("no card"),
        "firmware did not notice the missing card:\n{text}"
    );
    // The self-test ends each line with `[N insns]`, N a minstret delta.
    let marks = text.lines().filter(|l| l.ends_with(" insns]")).count();
    eprintln!("firmware: identical ({marks} log points)\n{text}");
    assert!(marks > 0, "the self-test prints log points");
}
