//! Everything that touches hardware directly. Every `unsafe` block here is a
//! volatile access to an address of the card's memory map.

use core::sync::atomic::{AtomicBool, Ordering};
use preba_firmware::Platform;
use preba_protocol::card;

/// The soft core's MMIO.
pub struct Mmio;

/// The one check that makes `Platform`'s safe `read32`/`write32` sound: the
/// address is 4-byte aligned and outside IMEM and DMEM, the firmware's own
/// memory where Rust objects live, so a volatile access through it can never
/// alias one. Everything else in the map is device registers or card memory.
/// A bad address is a firmware bug: it stops the core (panic -> power off)
/// instead of corrupting state.
#[inline(always)]
fn device_addr(addr: u32) -> u32 {
    let inside = |base: u32, size: u32| addr.wrapping_sub(base) < size;
    if !addr.is_multiple_of(4)
        || inside(card::IMEM_BASE, card::IMEM_SIZE)
        || inside(card::DMEM_BASE, card::DMEM_SIZE)
    {
        panic!("MMIO access to {:#x}", addr);
    }
    addr
}

impl Platform for Mmio {
    fn read32(&mut self, addr: u32) -> u32 {
        let addr = device_addr(addr);
        // SAFETY: `device_addr` checked that `addr` is an aligned word of the
        // card's device registers or card memory, which no Rust object uses.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }
    fn write32(&mut self, addr: u32, value: u32) {
        let addr = device_addr(addr);
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

/// The UART as a `core::fmt::Write` sink for the self-test.
struct Uart;

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        uart_puts(s);
        Ok(())
    }
}

fn instret() -> u64 {
    loop {
        let (hi, lo, hi2): (u32, u32, u32);
        // SAFETY: reading the minstret/minstreth counters has no side effects.
        unsafe {
            core::arch::asm!(
                "csrr {0}, minstreth",
                "csrr {1}, minstret",
                "csrr {2}, minstreth",
                out(reg) hi, out(reg) lo, out(reg) hi2,
                options(nomem, nostack)
            )
        };
        if hi == hi2 {
            return (hi as u64) << 32 | lo as u64;
        }
    }
}

/// Set while [`probe_card`] reads INFO_IMAGE_CUS; the exception handler
/// turns a load access fault there into "no card".
static PROBING: AtomicBool = AtomicBool::new(false);
static NO_CARD: AtomicBool = AtomicBool::new(false);

/// Reads INFO_IMAGE_CUS with a 4-byte `lw` (never compressed, so the trap
/// handler can step over it). None when the read faults (QEMU virt: no card).
fn probe_card() -> Option<u32> {
    PROBING.store(true, Ordering::SeqCst);
    let mut v: u32 = u32::MAX;
    // SAFETY: a single aligned load from the INFO block; if nothing answers
    // there, the exception handler skips the instruction and v keeps its value.
    unsafe {
        core::arch::asm!(
            ".option push",
            ".option norvc",
            "lw {0}, 0({1})",
            ".option pop",
            inout(reg) v,
            in(reg) card::INFO_IMAGE_CUS,
            options(nostack)
        )
    };
    PROBING.store(false, Ordering::SeqCst);
    if NO_CARD.load(Ordering::SeqCst) {
        return None;
    }
    let mut p = Mmio;
    let mem = p.read32(card::INFO_CARD_MEM_SIZE);
    let cus = v
        .saturating_add(p.read32(card::INFO_AUDIO_CUS))
        .saturating_add(p.read32(card::INFO_NORM_CUS));
    // A bus that answers without a card reads all-zeros or all-ones.
    if mem == 0 || v == u32::MAX || cus == 0 {
        return None;
    }
    Some(v)
}

#[unsafe(export_name = "ExceptionHandler")]
fn exception_handler(_tf: &riscv_rt::TrapFrame) {
    let (cause, epc): (usize, usize);
    // SAFETY: reading mcause/mepc in the trap handler has no side effects.
    unsafe {
        core::arch::asm!("csrr {0}, mcause", "csrr {1}, mepc", out(reg) cause, out(reg) epc,
            options(nomem, nostack))
    };
    const LOAD_ACCESS_FAULT: usize = 5;
    if cause == LOAD_ACCESS_FAULT && PROBING.load(Ordering::SeqCst) {
        NO_CARD.store(true, Ordering::SeqCst);
        // SAFETY: steps over the 4-byte lw of probe_card; mret resumes after it.
        unsafe { core::arch::asm!("csrw mepc, {0}", in(reg) epc + 4, options(nomem, nostack)) };
        return;
    }
    uart_puts("preba firmware: unexpected trap\n");
    power_off(2);
}

fn power_off(code: u32) -> ! {
    let v = if code == 0 {
        0x5555
    } else {
        code << 16 | 0x3333
    };
    // SAFETY: TEST_BASE is QEMU virt's test device (power off / fail).
    unsafe { core::ptr::write_volatile(card::TEST_BASE as *mut u32, v) }
    loop {
        riscv::asm::wfi();
    }
}

/// The build id behind its magic (`fwimage::BUILD_ID_MAGIC`), so the host reads an ELF's or
/// a packed image's build id without symbols.
static BUILD_ID_TAG: [u8; 24] = {
    let mut t = [0u8; 24];
    let m = preba_protocol::fwimage::BUILD_ID_MAGIC;
    let id = preba_firmware::BUILD_ID.to_le_bytes();
    let mut i = 0;
    while i < 16 {
        t[i] = m[i];
        i += 1;
    }
    while i < 24 {
        t[i] = id[i - 16];
        i += 1;
    }
    t
};

#[riscv_rt::entry]
fn main() -> ! {
    use core::fmt::Write;
    // Read through black_box so the tag stays in the image.
    let tag = core::hint::black_box(&BUILD_ID_TAG);
    let mut idb = [0u8; 8];
    idb.copy_from_slice(&tag[16..24]);
    let id = u64::from_le_bytes(idb);
    let _ = writeln!(
        Uart,
        "{} build {:016x}",
        preba_firmware::FW_VERSION_STRING,
        id
    );
    let _ = preba_firmware::selftest::run(&mut Uart, &mut instret);
    if probe_card().is_none() {
        uart_puts("no card\n");
        power_off(0);
    }
    uart_puts("card found: serving queues\n");
    defmt::info!(
        "{=str} build {=u64:x} up",
        preba_firmware::FW_VERSION_STRING,
        id
    );
    // A broken image for the rollback tests: valid header and CRC, dies in init.
    if cfg!(feature = "test-crash-in-init") {
        panic!("test-crash-in-init");
    }
    // The loop sleeps with wfi: wake on the machine external line (CUs, DMA,
    // host interface) and on the timer; mstatus.MIE stays 0, so nothing traps.
    // SAFETY: enabling MEIE/MTIE in mie only changes what wakes wfi.
    unsafe {
        core::arch::asm!("csrs mie, {0}", in(reg) (1u32 << 11) | (1 << 7), options(nomem, nostack))
    };
    let mut fw = preba_firmware::Firmware::new(Mmio, id);
    fw.run()
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    uart_puts("preba firmware: panic\n");
    power_off(1)
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
    // The bytes must reach the ring before the head that covers them: on a
    // bus that may reorder stores, only a fence orders them for the host.
    // SAFETY: `fence w,w` only orders this hart's stores; it touches no memory.
    unsafe { core::arch::asm!("fence w,w", options(nostack, preserves_flags)) }
    // SAFETY: LOG_HEAD is a register of the log block; published after the bytes.
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

// The firmware state lives on the stack (DMEM minus .data/.bss, ~64 KiB).
const _: () = assert!(core::mem::size_of::<preba_firmware::Firmware<Mmio>>() < 16 * 1024);
