//! `preba-protocol`: the contract between the host driver, the card model and
//! the firmware. See docs/card-spec.md for the same facts as a page.
#![no_std]
#![forbid(unsafe_code)]

pub mod limits;
pub mod profile;
pub mod status;
