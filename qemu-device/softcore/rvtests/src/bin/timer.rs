//! Test program: asm/timer.S.
#![no_std]
#![no_main]
use preba_rvtests as _;
core::arch::global_asm!(
    include_str!("../../asm/rt.S"),
    include_str!("../../asm/timer.S"),
    options(raw)
);
