//! Test program: asm/traps.S.
#![no_std]
#![no_main]
use preba_rvtests as _;
core::arch::global_asm!(
    include_str!("../../asm/rt.S"),
    include_str!("../../asm/traps.S"),
    options(raw)
);
