//! Building the bare-metal test programs in `rvtests/` (a crate outside the workspace, built
//! for `riscv32imac-unknown-none-elf` with the cargo that runs us), and finding or building the
//! firmware ELF for the tests and benches of this crate and of the card model.

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

/// The firmware ELF, as `cargo xtask build-fw` makes it: `$PREBA_FIRMWARE` when set (and not
/// empty), else built with the running cargo (`--profile firmware --target
/// riscv32imac-unknown-none-elf`) into the target directory of the running executable
/// (`$CARGO_TARGET_DIR`, or derived from the executable's path, or the workspace's `target/`).
pub fn firmware_elf() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("PREBA_FIRMWARE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // <target>/<profile>/deps/<test> or <target>/<profile>/examples/<bin>
            let exe = std::env::current_exe().ok()?;
            Some(exe.ancestors().nth(3)?.to_path_buf())
        })
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = "riscv32imac-unknown-none-elf";
    let st = Command::new(&cargo)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--quiet",
            "--package",
            "preba-firmware",
            "--bin",
            "preba-firmware",
            "--profile",
            "firmware",
            "--target",
            target,
        ])
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !st.success() {
        return Err(format!("firmware build failed: {st}"));
    }
    let elf = target_dir
        .join(target)
        .join("firmware")
        .join("preba-firmware");
    if elf.exists() {
        Ok(elf)
    } else {
        Err(format!("{} missing after the build", elf.display()))
    }
}
