//! `test`, `build-fw`, `venv`, `fixtures`: set-up steps, each idempotent.

use crate::util::{self, Result, cargo, root, run};
use std::path::{Path, PathBuf};
use std::process::Command;

// The firmware build command has one definition, preba-softcore's `progs::firmware_build`
// (also used by the tests and the card harness). xtask depends on no crate, so it compiles
// that std-only file as a module of its own; only the firmware build is used from it.
#[path = "../../qemu-device/softcore/src/progs.rs"]
#[allow(dead_code)]
mod progs;

pub const FW_TARGET: &str = progs::FIRMWARE_TARGET;

/// Rustup targets named in rust-toolchain.toml: `rustup` installs the
/// toolchain on first use but not always its extra targets.
fn ensure_targets() -> Result<()> {
    let installed = util::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    for t in [FW_TARGET, "x86_64-unknown-linux-musl"] {
        if !installed.lines().any(|l| l.trim() == t) {
            run(Command::new("rustup")
                .args(["target", "add", t])
                .current_dir(root()))?;
        }
    }
    Ok(())
}

/// Debian packages the tests need, by the command that proves each is there.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    // The soft core's oracle: the same ELFs under QEMU's RISC-V emulator.
    ("qemu-system-riscv32", "qemu-system-misc"),
];

/// Shared libraries the tests need, by the file that proves each is there.
const DEBIAN_LIBS: &[(&str, &str)] = &[
    // perf_analyzer (tritonclient 2.51.0's binary) links libb64.
    ("/usr/lib/x86_64-linux-gnu/libb64.so.0d", "libb64-0d"),
];

/// Installs missing Debian packages (idempotent: nothing runs when all are there).
fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(cmd, _)| {
            Command::new(cmd)
                .arg("--version")
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .map(|(_, pkg)| *pkg)
        .chain(
            DEBIAN_LIBS
                .iter()
                .filter(|(f, _)| !std::path::Path::new(f).exists())
                .map(|(_, pkg)| *pkg),
        )
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root_user = util::output(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0");
    let apt = |args: &[&str]| {
        let mut c = if root_user {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    if run(&mut apt(&install)).is_err() {
        run(&mut apt(&["update"]))?;
        run(&mut apt(&install))?;
    }
    Ok(())
}

pub fn test(_rest: &[&str]) -> Result<()> {
    ensure_targets()?;
    ensure_packages()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The board glue only compiles for the soft core: lint it there too.
    run(cargo().args([
        "clippy",
        "--package",
        "preba-firmware",
        "--profile",
        "firmware",
        "--target",
        FW_TARGET,
        "--",
        "-D",
        "warnings",
    ]))?;
    // Built first, so every test runs the ELF this tree makes, and tests that
    // need the card fail (instead of skipping) when a part is missing.
    let fw = build_fw()?;
    let serving = serving_env()?;
    run(cargo()
        .args(["test", "--workspace"])
        .envs(serving)
        .env("PREBA_FIRMWARE", &fw)
        .env("PREBA_REQUIRE_QEMU", "1"))?;
    // JTAG: probe-rs (flash/, its own workspace) against preba-card's debug port.
    crate::flash::test()?;
    // Logs: logs/ (its own workspace) decodes the card's defmt ring.
    crate::logs::test(&fw)?;
    crate::qemu::test(&[])?;
    // Every fuzz target for a short time (long runs: `cargo xtask fuzz`).
    crate::fuzz::ci()?;
    Ok(())
}

/// The main job on a fresh clone: builds the firmware ELF, `preba` and
/// `preba-card` in release, then runs `preba` with `args` (its exit status
/// becomes ours). `preba` finds `preba-card` next to itself.
pub fn run_preba(args: &[&str]) -> Result<()> {
    let fw = build_fw()?;
    if args.first() == Some(&"serve") {
        // Workers load onnxruntime from the reference venv; the fixture
        // model repository lives next to it.
        for (k, v) in serving_env()? {
            if k == "PREBA_MODELS" {
                eprintln!("xtask: model repository {v}");
            }
        }
    }
    run(cargo().args([
        "build",
        "--release",
        "--quiet",
        "--bin",
        "preba",
        "--bin",
        "preba-card",
    ]))?;
    let mut cmd = Command::new(util::target_dir().join("release").join("preba"));
    cmd.args(args).env("PREBA_FIRMWARE", &fw);
    if args.first() == Some(&"card") {
        // `card info` decodes the log tail with preba-logs (its own workspace).
        cmd.env("PREBA_LOGS_BIN", crate::logs::build_decoder()?);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start preba: {e}"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(c) => std::process::exit(c),
        None => Err(format!("preba: {status}")),
    }
}

/// Builds the firmware ELF and returns its path.
pub fn build_fw() -> Result<PathBuf> {
    build_fw_in(&util::target_dir(), None)
}

/// Builds a variant of the firmware ELF whose build id is salted with `salt`
/// (same code, another id), in its own target dir so the main ELF stays; returns its path.
pub fn build_fw_variant(salt: &str) -> Result<PathBuf> {
    build_fw_in(
        &util::target_dir().join("fw-variant").join(salt),
        Some(salt),
    )
}

fn build_fw_in(target_dir: &Path, salt: Option<&str>) -> Result<PathBuf> {
    ensure_targets()?;
    let (mut cmd, elf) = progs::firmware_build(&root(), target_dir, salt, &[]);
    run(&mut cmd)?;
    Ok(elf)
}

/// Creates (once) and updates the reference venv; returns its python.
pub fn venv() -> Result<PathBuf> {
    ensure_venv("venv", "requirements.txt")
}

/// A venv under the cache dir with the packages of `fixtures/<requirements>`,
/// reinstalled only when that file changes; returns its python.
fn ensure_venv(name: &str, requirements: &str) -> Result<PathBuf> {
    let dir = util::cache_dir().join(name);
    let py = dir.join("bin").join("python");
    let req = root().join("fixtures").join(requirements);
    let stamp = dir.join(".requirements.txt");
    let wanted = std::fs::read_to_string(&req).map_err(|e| format!("{}: {e}", req.display()))?;
    if !py.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&dir))?;
    }
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new(&py)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&req))?;
        std::fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    Ok(py)
}

/// What the serving tests need, built idempotently: the reference venv
/// (onnxruntime's library for the workers), the model fixtures generated from
/// their fixed seeds, and the client venv (tritonclient, perf_analyzer).
/// Returned as environment variables for `cargo test`; with
/// PREBA_REQUIRE_ORT=1 the tests fail instead of skipping when a part is missing.
pub fn serving_env() -> Result<Vec<(String, String)>> {
    let py = venv()?;
    let models = util::cache_dir().join("models");
    let script = root().join("fixtures").join("gen_models.py");
    let stamp = models.join(".gen_models.py");
    let want =
        std::fs::read_to_string(&script).map_err(|e| format!("{}: {e}", script.display()))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        run(Command::new(&py).arg(&script).arg(&models))?;
        std::fs::write(&stamp, want).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    // The generated models as a model repository `preba serve` takes as it is.
    for (m, cfg) in [
        (
            "squeezenet1_1",
            "# SqueezeNet 1.1 (random weights, fixed seed): torchvision ImageNet eval transform, FP32 NCHW.\nkind = \"image\"\nmax_batch_size = 32\nsla_ms = 100\n",
        ),
        (
            "tiny_audio",
            "# A small audio model: log-Mel [B,80,T] + lengths.\nkind = \"audio\"\nmax_batch_size = 16\n",
        ),
    ] {
        let p = models.join(m).join("config.toml");
        if std::fs::read_to_string(&p).ok().as_deref() != Some(cfg) {
            std::fs::write(&p, cfg).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    let client = client_venv()?;
    Ok(vec![
        ("PREBA_MODELS".into(), models.display().to_string()),
        ("PREBA_CLIENT_PYTHON".into(), client.display().to_string()),
        ("PREBA_REQUIRE_ORT".into(), "1".into()),
    ])
}

/// The KServe client venv (~/.cache/preba/venv-client); returns its python.
pub fn client_venv() -> Result<PathBuf> {
    ensure_venv("venv-client", "requirements-client.txt")
}

/// Regenerates fixtures and goldens.
pub fn fixtures() -> Result<()> {
    let py = venv()?;
    run(Command::new(py)
        .arg(root().join("fixtures").join("generate.py"))
        .current_dir(root()))
}
