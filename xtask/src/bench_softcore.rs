//! `cargo xtask bench softcore`: the soft core's interpreter speed.
//!
//! Builds the bare-metal test programs (`qemu-device/softcore/rvtests`, a crate outside the
//! workspace, for riscv32imac-unknown-none-elf) and runs the CoreMark-like one (`coremark`:
//! list processing, matrix arithmetic, a state machine, CRC; ~72 M guest instructions) on the
//! soft core, three times, in release. The last line is the best run as `N MIPS`: millions of
//! guest instructions retired per wall-clock second.
//!
//! Options: `--program NAME` runs another rvtests program instead.

use std::process::Command;

use crate::util::{self, Result, cargo, root};

pub fn run(rest: &[&str]) -> Result<()> {
    let mut program = "coremark";
    let mut args = rest.iter();
    while let Some(a) = args.next() {
        match *a {
            "--program" => program = args.next().ok_or("--program needs a name")?,
            other => return Err(format!("bench softcore: unknown argument {other}")),
        }
    }
    let target_dir = util::target_dir();
    let rvtests_target = target_dir.join("rvtests");
    // The workspace's .cargo/config.toml gives the riscv target the firmware's link flags; the
    // test programs bring their own linker script, so those flags are replaced (emptied).
    util::run(
        cargo()
            .args(["build", "--release", "--quiet"])
            .args(["--target", "riscv32imac-unknown-none-elf"])
            .arg("--manifest-path")
            .arg(root().join("qemu-device/softcore/rvtests/Cargo.toml"))
            .arg("--target-dir")
            .arg(&rvtests_target)
            .env("CARGO_ENCODED_RUSTFLAGS", "")
            .env_remove("RUSTFLAGS"),
    )?;
    let elf = rvtests_target
        .join("riscv32imac-unknown-none-elf/release")
        .join(program);
    if !elf.is_file() {
        return Err(format!("no program {}", elf.display()));
    }
    util::run(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "preba-softcore",
        "--bin",
        "rvrun",
    ]))?;
    let rvrun = target_dir.join("release/rvrun");
    // rvrun prints the program's output, then `N MIPS` as its last line.
    util::run(Command::new(rvrun).arg("--bench").arg(&elf))
}
