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
        .args(["build", "--release", "--quiet", "--target", FIRMWARE_TARGET])
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
    Ok(target_dir.join(FIRMWARE_TARGET).join("release"))
}

/// The firmware's target triple.
pub const FIRMWARE_TARGET: &str = "riscv32imac-unknown-none-elf";

/// The one command that builds the firmware ELF, for `cargo xtask build-fw [--salt S]`, the
/// tests' [`firmware_elf`] and the card harness's firmware variants alike: the running cargo
/// (`$CARGO`) in the workspace `root`, `--profile firmware --target riscv32imac-unknown-none-elf`
/// into `target_dir`. `salt` stamps another build id on the same code (`PREBA_FW_BUILD_SALT`;
/// without one the variable is removed, so the environment never salts the main image);
/// `features` are the firmware's cargo features. Returns the command and the ELF it makes.
///
/// xtask, which depends on no crate, compiles this file as a module of its own (`#[path]`):
/// what it uses from here must stay std-only and take its paths as arguments.
pub fn firmware_build(
    root: &Path,
    target_dir: &Path,
    salt: Option<&str>,
    features: &[&str],
) -> (Command, PathBuf) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--package",
            "preba-firmware",
            "--bin",
            "preba-firmware",
            "--profile",
            "firmware",
            "--target",
            FIRMWARE_TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    match salt {
        Some(s) => cmd.env("PREBA_FW_BUILD_SALT", s),
        None => cmd.env_remove("PREBA_FW_BUILD_SALT"),
    };
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    let elf = target_dir
        .join(FIRMWARE_TARGET)
        .join("firmware")
        .join("preba-firmware");
    (cmd, elf)
}

/// Runs [`firmware_build`] quietly (cargo skips the work when the ELF is up to date) and
/// returns the ELF.
pub fn build_firmware(
    root: &Path,
    target_dir: &Path,
    salt: Option<&str>,
    features: &[&str],
) -> Result<PathBuf, String> {
    let (mut cmd, elf) = firmware_build(root, target_dir, salt, features);
    let st = cmd
        .arg("--quiet")
        .status()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !st.success() {
        let what = salt.map_or_else(String::new, |s| format!(" (salt {s})"));
        return Err(format!("firmware build{what} failed: {st}"));
    }
    if elf.exists() {
        Ok(elf)
    } else {
        Err(format!("{} missing after the build", elf.display()))
    }
}

/// The target directory of the running test or bench: `$CARGO_TARGET_DIR`, else derived from
/// the executable's path (`<target>/<profile>/deps/<test>` or `<target>/<profile>/examples/<bin>`),
/// else `root/target`.
pub fn running_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.ancestors().nth(3)?.to_path_buf())
        })
        .unwrap_or_else(|| root.join("target"))
}

/// The firmware ELF, as `cargo xtask build-fw` makes it: `$PREBA_FIRMWARE` when set (and not
/// empty), else built by [`build_firmware`] into [`running_target_dir`].
pub fn firmware_elf() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("PREBA_FIRMWARE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    build_firmware(&root, &running_target_dir(&root), None, &[])
}
