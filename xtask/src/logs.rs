//! `cargo xtask logs --card SPEC [--elf ELF] [--follow]`: the card's defmt log, decoded. The
//! work is `preba-logs` (logs/, its own crate outside the workspace: defmt-decoder's
//! serde_json features must not reach the workspace's binaries); this builds it and points it
//! at the ELFs this tree builds, so by default it decodes with the build the card runs.

use crate::setup;
use crate::util::{self, Result, cargo, root, run};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask logs --card SPEC [--elf ELF] [--follow]
  SPEC: emulated, emulated:FLASH_FILE, vfio-user:SOCKET, vfio:BDF
  ELF:  decode against this ELF (default: the build-fw or build-fw --salt output whose build
        id the card reports; a mismatched ELF is refused)";

fn logs_cargo(sub: &str) -> Command {
    let mut c = cargo();
    c.args([sub, "--quiet", "--manifest-path"])
        .arg(root().join("logs").join("Cargo.toml"))
        .arg("--target-dir")
        .arg(util::target_dir().join("logs"));
    c
}

pub fn run_logs(args: &[&str]) -> Result<()> {
    let mut pass: Vec<String> = Vec::new();
    let mut it = args.iter();
    let mut have_card = false;
    while let Some(&a) = it.next() {
        match a {
            "--card" | "--elf" => {
                let v = it.next().ok_or(format!("{a} needs a value\n{USAGE}"))?;
                have_card |= a == "--card";
                pass.extend([a.to_string(), v.to_string()]);
            }
            "--follow" => pass.push(a.to_string()),
            o => return Err(format!("unknown argument {o}\n{USAGE}")),
        }
    }
    if !have_card {
        return Err(format!("--card SPEC is required\n{USAGE}"));
    }
    let fw = setup::build_fw()?;
    run(cargo().args(["build", "--release", "--quiet", "--bin", "preba-card"]))?;
    run(&mut logs_cargo("build"))?;
    let t = util::target_dir();
    let status = Command::new(t.join("logs").join("debug").join("preba-logs"))
        .args(&pass)
        .arg("--search")
        .arg(t.join(setup::FW_TARGET))
        .arg("--search")
        .arg(t.join("fw-variant"))
        .env("PREBA_FIRMWARE", &fw)
        .env("PREBA_CARD_BIN", t.join("release").join("preba-card"))
        .status()
        .map_err(|e| format!("cannot start preba-logs: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("preba-logs failed ({status})"))
    }
}

/// The `xtask test` step for logs/ (outside the workspace, so `cargo test --workspace` and
/// clippy do not see it): clippy, then its tests against the firmware ELF `fw`.
pub fn test(fw: &std::path::Path) -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--manifest-path"])
        .arg(root().join("logs").join("Cargo.toml"))
        .args(["--", "--check"]);
    run(&mut fmt)?;
    run(logs_cargo("clippy").args(["--all-targets", "--", "-D", "warnings"]))?;
    run(logs_cargo("test").env("PREBA_FIRMWARE", fw))?;
    card_info_shows_log_lines(fw)
}

/// Builds `preba-logs` (target/logs) and returns its path.
pub fn build_decoder() -> Result<std::path::PathBuf> {
    run(&mut logs_cargo("build"))?;
    Ok(util::target_dir()
        .join("logs")
        .join("debug")
        .join("preba-logs"))
}

/// `preba card info` ends with the newest log lines, decoded by `preba-logs --stdin`: the boot
/// banner with the running build id shows; without preba-logs it says how to get them.
fn card_info_shows_log_lines(fw: &std::path::Path) -> Result<()> {
    let decoder = build_decoder()?;
    let (preba, card) = crate::flash::card_binaries(false)?;
    let info = |logs_bin: &std::path::Path| -> Result<String> {
        let o = Command::new(&preba)
            .args(["card", "info", "emulated"])
            .env("PREBA_FIRMWARE", fw)
            .env("PREBA_CARD_BIN", &card)
            .env("PREBA_LOGS_BIN", logs_bin)
            .output()
            .map_err(|e| format!("{}: {e}", preba.display()))?;
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            return Err(format!(
                "preba card info failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(text)
    };
    let text = info(&decoder)?;
    let build = text
        .lines()
        .find_map(|l| l.strip_prefix("running")?.split("build ").nth(1))
        .map(str::trim)
        .ok_or_else(|| format!("no `running ... build` line in preba card info:\n{text}"))?
        .to_string();
    let banner = format!("build {build} up");
    if !text
        .lines()
        .any(|l| l.contains("INFO") && l.contains(&banner))
    {
        return Err(format!(
            "preba card info shows no decoded boot banner `{banner}`:\n{text}"
        ));
    }
    let missing = util::target_dir().join("logs").join("no-such-preba-logs");
    let text = info(&missing)?;
    if !text.contains("(log not decoded: preba-logs not found") {
        return Err(format!(
            "without preba-logs, preba card info does not say so:\n{text}"
        ));
    }
    eprintln!("xtask: preba card info shows the decoded log tail ({banner})");
    Ok(())
}
