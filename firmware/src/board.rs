//! Everything that touches hardware directly. Every `unsafe` block here is a
//! volatile access to an address of the card's memory map.

use core::sync::atomic::{AtomicBool, Ordering};
use preba_firmware::Platform;
use preba_protocol::card;

/// The soft core's MMIO.
pub struct Mmio;

impl Platform for Mmio {
    fn read32(&mut self, addr: u32) -> u32 {
        // SAFETY: addresses come from preba_protocol::card; every one of them is
        // a 4-byte aligned register or card-memory word of the card's map.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }
    fn write32(&mut self, addr: u32, value: u32) {
        // SAFETY: as for read32.
        unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
    }
    fn now(&mut self) -> u64 {
        loop {
            let hi = self.read32(card::CLINT_MTIME + 4);
            let lo = self.read32(card::CLINT_MTIME);
            if self.read32(card::CLINT_MTIME + 4) == hi {
                return ((hi as u64) << 32) | lo as u64;
            }
        }
    }
    fn wait_for_event(&mut self, deadline: u64) {
        self.write32(card::CLINT_MTIMECMP + 4, u32::MAX);
        self.write32(card::CLINT_MTIMECMP, deadline as u32);
        self.write32(card::CLINT_MTIMECMP + 4, (deadline >> 32) as u32);
        riscv::asm::wfi();
    }
}

fn uart_puts(s: &str) {
    for b in s.bytes() {
        // SAFETY: UART_BASE is the 16550 transmit holding register.
        unsafe { core::ptr::write_volatile(card::UART_BASE as *mut u8, b) }
    }
}

#[riscv_rt::entry]
fn main() -> ! {
    uart_puts("preba firmware\n");
    defmt::info!("preba firmware {=str} up", preba_firmware::FW_VERSION);
    let mut p = Mmio;
    loop {
        let t = p.now();
        p.wait_for_event(t + card::MTIME_HZ as u64);
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    uart_puts("preba firmware: panic\n");
    // SAFETY: TEST_BASE is the power-off/fail register; (1 << 16) | 0x3333 reports failure.
    unsafe { core::ptr::write_volatile(card::TEST_BASE as *mut u32, (1 << 16) | 0x3333) }
    loop {
        riscv::asm::wfi();
    }
}

/// defmt frames go into the log ring: bytes first, then LOG_HEAD, so the host
/// never reads a head that points past written bytes.
#[defmt::global_logger]
struct RingLogger;

static TAKEN: AtomicBool = AtomicBool::new(false);
static mut CS_RESTORE: critical_section::RestoreState = critical_section::RestoreState::invalid();
static mut ENCODER: defmt::Encoder = defmt::Encoder::new();

fn ring_write(bytes: &[u8]) {
    // SAFETY: LOG_HEAD is a register of the log block.
    let mut head = unsafe { core::ptr::read_volatile(card::LOG_HEAD as *const u32) };
    for &b in bytes {
        let at = card::LOG_RING_BASE + (head & (card::LOG_RING_SIZE - 1));
        // SAFETY: `at` lies inside the byte-writable log ring.
        unsafe { core::ptr::write_volatile(at as *mut u8, b) }
        head = head.wrapping_add(1);
    }
    // SAFETY: as above; published after the bytes.
    unsafe { core::ptr::write_volatile(card::LOG_HEAD as *mut u32, head) }
}

// SAFETY: acquire/release are paired by defmt and run inside a critical section,
// so the encoder state is never touched concurrently.
unsafe impl defmt::Logger for RingLogger {
    fn acquire() {
        // SAFETY: released in `release`, which defmt always calls after acquire.
        let restore = unsafe { critical_section::acquire() };
        if TAKEN.swap(true, Ordering::Relaxed) {
            panic!("defmt logger taken reentrantly");
        }
        // SAFETY: inside the critical section: the only access to CS_RESTORE and ENCODER.
        unsafe {
            CS_RESTORE = restore;
            (*core::ptr::addr_of_mut!(ENCODER)).start_frame(ring_write);
        }
    }
    unsafe fn flush() {}
    unsafe fn release() {
        // SAFETY: defmt calls release only after acquire, inside our critical section.
        unsafe {
            (*core::ptr::addr_of_mut!(ENCODER)).end_frame(ring_write);
            TAKEN.store(false, Ordering::Relaxed);
            critical_section::release(CS_RESTORE);
        }
    }
    unsafe fn write(bytes: &[u8]) {
        // SAFETY: called between acquire and release.
        unsafe { (*core::ptr::addr_of_mut!(ENCODER)).write(bytes, ring_write) }
    }
}

defmt::timestamp!("{=u64:us}", {
    let mut p = Mmio;
    p.now() / (card::MTIME_HZ as u64 / 1_000_000)
});
