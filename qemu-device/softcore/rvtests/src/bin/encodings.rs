//! Test program: asm/encodings.S (a table of encodings for the decoder tests).
#![no_std]
#![no_main]
use preba_rvtests as _;
core::arch::global_asm!(
    include_str!("../../asm/rt.S"),
    include_str!("../../asm/encodings.S"),
    options(raw)
);
