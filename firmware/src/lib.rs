//! `preba-firmware`: the logic of the card's firmware, generic over
//! [`Platform`] so it runs on the soft core and, under `cargo test`, on the
//! host with a test double.
//!
//! Owns: serving the admin and I/O queues of `preba-protocol`, scheduling
//! requests across compute units, interrupts, watchdog, telemetry.
//! Must not: allocate, use `unsafe` (MMIO lives in the binary's platform
//! glue), trust any byte that came from the host.
#![no_std]
#![forbid(unsafe_code)]

pub mod platform;

pub use platform::Platform;

/// Firmware version string reported by IDENTIFY.
pub const FW_VERSION: &str = env!("CARGO_PKG_VERSION");
