//! Test program: asm/misaligned.S.
#![no_std]
#![no_main]
use preba_rvtests as _;
core::arch::global_asm!(
    include_str!("../../asm/rt.S"),
    include_str!("../../asm/misaligned.S"),
    options(raw)
);
