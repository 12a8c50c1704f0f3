//! `cargo xtask bench card [--seconds S] [--cus K] [--clock modeled|wall]`: throughput of
//! the card model (firmware on the soft core, the default card's image CUs) on the image
//! fixtures against the golden model alone on the same number of host threads. Prints img/s
//! for each, the ratio (target >= 0.9) and the soft-core instructions per image (the
//! firmware's cost per request, from `Card::instructions`).

use crate::util::{self, cargo};

pub fn run(rest: &[&str]) -> util::Result<()> {
    let elf = crate::setup::build_fw()?;
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
