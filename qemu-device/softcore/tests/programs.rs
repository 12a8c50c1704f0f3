//! Every test program runs to "ALL PASS" and powers off on the soft core.

mod common;

use preba_softcore::{Exit, Halt};

fn check(name: &str) {
    let r = common::run_here(name);
    let out = String::from_utf8_lossy(&r.uart);
    assert_eq!(
        r.exit,
        Exit::Halt(Halt::PowerOff),
        "{name} did not pass; its output:\n{out}"
    );
    assert!(out.ends_with("ALL PASS\n"), "{name}:\n{out}");
    assert!(!out.contains("FAIL"), "{name}:\n{out}");
}

#[test]
fn rv32i() {
    check("rv32i");
}

#[test]
fn rv32m() {
    check("rv32m");
}

#[test]
fn rv32a() {
    check("rv32a");
}

#[test]
fn rv32c() {
    check("rv32c");
}

#[test]
fn zicsr() {
    check("zicsr");
}

#[test]
fn traps() {
    check("traps");
}

#[test]
fn timer_interrupts_and_wfi() {
    check("timer");
}

#[test]
fn misaligned_and_reserved() {
    check("misaligned");
}

#[test]
fn coremark_like_workload() {
    check("coremark");
}

#[test]
fn log_points_count_instructions() {
    // The rv32i program's log points: the deltas are instruction counts (cross-checked against
    // QEMU by the oracle test); here they must at least be stable and non-zero.
    let a = common::run_here("rv32i");
    let b = common::run_here("rv32i");
    assert_eq!(a.uart, b.uart);
    let out = String::from_utf8_lossy(&a.uart);
    let marks: Vec<&str> = out.lines().filter(|l| l.starts_with('@')).collect();
    assert_eq!(marks.len(), 7, "{out}");
    assert!(marks.iter().all(|m| !m.ends_with("+0")));
}
