//! `preba-firmware`: the logic of the card's firmware, generic over
//! [`Platform`] so it runs on the soft core and, under `cargo test`, on the
//! host with a test double.
//!
//! Owns: serving the admin and I/O queues of `preba-protocol`, scheduling
//! requests across compute units, interrupts, watchdog, telemetry.
//! Must not: allocate, use `unsafe` (MMIO lives in the binary's platform
//! glue), trust any byte that came from the host.
//!
//! Modules:
//! - [`fw`]: the state machine (controller, doorbells, fetch, completions,
//!   coalescing); `jobs` (staging, CUs, watchdog) and `admin` (admin
//!   commands) extend it;
//! - [`hw`]: register helpers, the DMA engine, card-memory byte source;
//! - [`alloc`]: card-memory allocator; [`crc`]: CRC-32;
//! - [`hal`]: embedded-hal implementations over the platform (I2C, SPI,
//!   GPIO LEDs, DelayNs); [`drivers`]: INA226 power monitor, SPI NOR flash;
//! - [`selftest`]: the deterministic self-test printed on the UART at boot
//!   (the QEMU oracle compares it).
#![no_std]
#![forbid(unsafe_code)]

#[macro_use]
mod log;

mod admin;
pub mod alloc;
pub use preba_protocol::crc;
pub mod drivers;
pub mod fw;
pub mod hal;
pub mod hw;
mod jobs;
pub mod platform;
pub mod selftest;

pub use fw::Firmware;
pub use platform::Platform;

/// Firmware version (the crate version).
pub const FW_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The version string IDENTIFY reports.
pub const FW_VERSION_STRING: &str = concat!("preba-fw ", env!("CARGO_PKG_VERSION"));
/// Build id: FNV-1a 64 of the firmware and protocol sources (build.rs), so
/// the same sources always give the same id.
pub const BUILD_ID: u64 = parse_u64(env!("PREBA_FW_BUILD_ID"));

const fn parse_u64(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut v = 0u64;
    let mut i = 0;
    while i < b.len() {
        v = v.wrapping_mul(10).wrapping_add((b[i] - b'0') as u64);
        i += 1;
    }
    v
}
