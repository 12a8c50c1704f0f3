//! `cargo xtask soak [--minutes N] [--seed S]`: serve/tests/soak.rs in release for N minutes
//! (default 30): random mixed traffic through the host driver into emulated cards that are
//! killed, stopped, reset by the host or given injected faults (`preba-card --inject`) at
//! random points; fails on a lost, duplicated, wrong, late or leaked answer. It prints the
//! seed (`--seed` replays the fault plan) and counts by fault kind and outcome.
//! `cargo xtask test` runs the same test for one minute in its debug build.

use crate::setup;
use crate::util::{Result, cargo, run};

pub fn run_cli(rest: &[&str]) -> Result<()> {
    let mut minutes: u64 = 30;
    let mut seed = None;
    let mut it = rest.iter();
    while let Some(&a) = it.next() {
        let mut value = || it.next().copied().ok_or(format!("{a} needs a value"));
        match a {
            "--minutes" => {
                let v = value()?;
                minutes = v
                    .parse()
                    .ok()
                    .filter(|&m| m > 0)
                    .ok_or_else(|| format!("--minutes {v}: not a positive whole number"))?;
            }
            "--seed" => seed = Some(value()?.to_string()),
            other => {
                return Err(format!(
                    "unknown argument {other}\nusage: cargo xtask soak [--minutes N] [--seed S]"
                ));
            }
        }
    }
    let fw = setup::build_fw()?;
    run(cargo().args(["build", "--release", "--quiet", "--bin", "preba-card"]))?;
    let card = crate::util::target_dir().join("release").join("preba-card");
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "-p",
        "preba-serve",
        "--test",
        "soak",
        "--",
        "--nocapture",
    ])
    .env("PREBA_FIRMWARE", &fw)
    .env("PREBA_CARD_BIN", &card)
    .env("PREBA_SOAK_SECS", (minutes * 60).to_string());
    if let Some(s) = seed {
        cmd.env("PREBA_SOAK_SEED", s);
    }
    run(&mut cmd)
}
