//! `preba-tests`: workspace-level tests that span crates.
//!
//! Owns: the QEMU guest test assets (`qemu_guest/`: the guest `/init`, the
//! CLI checks, and `preba-guest-check`, a static musl VFIO driver that runs
//! inside the guest and prints `PREBA-CHECK` lines that `cargo xtask qemu test`
//! parses). Crate-local tests live with their crates.
//!
//! Must not: be a dependency of any product crate.
#![forbid(unsafe_code)]
