//! Test program: asm/zicsr.S.
#![no_std]
#![no_main]
use preba_rvtests as _;
core::arch::global_asm!(
    include_str!("../../asm/rt.S"),
    include_str!("../../asm/zicsr.S"),
    options(raw)
);
