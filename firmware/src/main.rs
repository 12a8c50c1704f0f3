//! Board glue of the firmware: reset entry, MMIO platform, defmt logger into
//! the log ring, panic handler. The logic lives in the library.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod board;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("preba-firmware runs on the card's soft core: build it with `cargo xtask build-fw`");
}
