//! `cargo xtask bench card [--seconds S] [--cus K]`: throughput of the card model (firmware on
//! the soft core, all CUs) on the image fixtures against the golden model alone on the same
//! number of host threads. Prints img/s for each and the ratio (target >= 0.9).

use std::path::PathBuf;

use crate::util::{self, cargo};

const FW_TARGET: &str = "riscv32imac-unknown-none-elf";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
}

pub fn run(rest: &[&str]) -> util::Result<()> {
    util::run(cargo().args([
        "build",
        "-p",
        "preba-firmware",
        "--bin",
        "preba-firmware",
        "--profile",
        "firmware",
        "--target",
        FW_TARGET,
    ]))?;
    let elf = target_dir()
        .join(FW_TARGET)
        .join("firmware")
        .join("preba-firmware");
    if !elf.exists() {
        return Err(format!("firmware ELF not found at {}", elf.display()));
    }
    util::run(
        cargo()
            .env("PREBA_FIRMWARE", &elf)
            .args([
                "run",
                "--release",
                "-p",
                "preba-card",
                "--example",
                "bench_card",
                "--",
            ])
            .args(rest),
    )
}
