//! Building the bare-metal test programs in `rvtests/` (a crate outside the workspace, built
//! for `riscv32imac-unknown-none-elf` with the cargo that runs us).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `rvtests` crate's directory.
pub fn rvtests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rvtests")
}

/// Where the programs are built: `$CARGO_TARGET_DIR/rvtests`, or `<workspace>/target/rvtests`.
pub fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    base.join("rvtests")
}

/// Builds every test program (release) and returns the directory holding the ELFs.
///
/// The workspace's `.cargo/config.toml` gives the riscv target firmware link flags; this build
/// replaces them (an empty `CARGO_ENCODED_RUSTFLAGS`) with the crate's own linker script.
pub fn build() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = target_dir();
    let out = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "riscv32imac-unknown-none-elf",
        ])
        .arg("--manifest-path")
        .arg(rvtests_dir().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the rvtests programs failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(target_dir.join("riscv32imac-unknown-none-elf/release"))
}
