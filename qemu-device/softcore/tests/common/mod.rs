//! Shared by the integration tests: the bare-metal programs in `rvtests/`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use preba_softcore::virt::{RunResult, run_elf, virt_config};

/// Programs whose output (UART bytes and instruction counts at log points) must match QEMU.
pub const ORACLE_PROGRAMS: &[&str] = &[
    "rv32i",
    "rv32m",
    "rv32a",
    "rv32c",
    "zicsr",
    "traps",
    "timer",
    "coremark",
    "encodings",
];
/// Programs that only run here (they test choices where QEMU differs; see each file).
pub const LOCAL_PROGRAMS: &[&str] = &["misaligned"];

/// Builds the programs once per test binary and returns their directory.
pub fn programs_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(preba_softcore::progs::build) {
        Ok(d) => d.clone(),
        Err(e) => panic!("{e}"),
    }
}

pub fn program(name: &str) -> Vec<u8> {
    let path = programs_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a program on the soft core with the QEMU-compatible configuration.
pub fn run_here(name: &str) -> RunResult {
    run_elf(virt_config(), &program(name), 2_000_000_000).expect("program loads")
}
