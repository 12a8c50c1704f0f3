//! Bare-metal test programs for the soft core; see `src/bin` and `asm/`.
//!
//! Each program is `asm/rt.S` (start-up, UART printing, checks, log points, power-off) plus one
//! test body. The library only carries the panic handler shared by the Rust programs.
#![no_std]

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Fail code 0xdead through the SiFive test finisher.
    // SAFETY: 0x0010_0000 is the test finisher on QEMU virt and on the soft core's VirtBus.
    unsafe { core::ptr::write_volatile(0x0010_0000 as *mut u32, (0xdead << 16) | 0x3333) };
    loop {}
}
