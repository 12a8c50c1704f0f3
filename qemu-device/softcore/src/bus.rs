//! The MMIO bus between the core and the platform's devices.

/// `mip`/`mie` bit of the machine software interrupt.
pub const IRQ_MSI: u32 = 1 << 3;
/// `mip`/`mie` bit of the machine timer interrupt.
pub const IRQ_MTI: u32 = 1 << 7;
/// `mip`/`mie` bit of the machine external interrupt.
pub const IRQ_MEI: u32 = 1 << 11;
/// All interrupt lines a [`Bus`] may drive.
pub const IRQ_ALL: u32 = IRQ_MSI | IRQ_MTI | IRQ_MEI;

/// A failed bus access: the core turns it into an access fault (load, store/AMO or fetch) with
/// the address in `mtval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

/// A request from the platform to stop the core (e.g. QEMU `virt`'s SiFive test device).
///
/// The core only returns it from [`Cpu::run`](crate::Cpu::run); its state stays intact and
/// `run` may be called again (for [`Halt::Reset`] call [`Cpu::reset`](crate::Cpu::reset) first
/// if that is what the platform means).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    /// Just return from `run` now (end of a time slice, an event for the host's loop).
    Yield,
    /// Power off, success (`0x5555` to the test device).
    PowerOff,
    /// Reset requested (`0x7777` to the test device).
    Reset,
    /// Power off with a failure code (`(code << 16) | 0x3333` to the test device).
    Fail(u32),
}

/// What the platform tells the core at a poll point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poll {
    /// Interrupt lines, as `mip` bits ([`IRQ_MSI`], [`IRQ_MTI`], [`IRQ_MEI`]); level-triggered.
    pub irq: u32,
    /// The cycle (the `now` time base) at which the platform must be polled again because
    /// something will change by itself (a timer deadline), or `u64::MAX` for none. `wfi`
    /// fast-forwards idle time to it.
    pub next_event: u64,
    /// Stop the core after the current instruction.
    pub halt: Option<Halt>,
}

impl Poll {
    /// No interrupt, no deadline, no halt.
    pub const IDLE: Poll = Poll {
        irq: 0,
        next_event: u64::MAX,
        halt: None,
    };
}

use crate::cpu::Mem;

/// Everything outside the core's RAM regions.
///
/// `now` is the core's time base in cycles: instructions retired plus idle cycles skipped by
/// `wfi`; it never goes backwards. The core calls [`Bus::poll`] at instruction boundaries: right
/// after every MMIO access, when `now` reaches the last `next_event`, at least every
/// `Config::max_poll_interval` instructions, and while it idles in `wfi`.
pub trait Bus {
    /// Reads `size` (1, 2 or 4) bytes at `addr`, zero-extended. `Err` gives an access fault.
    fn load(&mut self, addr: u32, size: u8, now: u64) -> Result<u32, Fault>;
    /// Writes the low `size` (1, 2 or 4) bytes of `value` at `addr`. `Err` gives an access fault.
    fn store(&mut self, addr: u32, size: u8, value: u32, now: u64) -> Result<(), Fault>;
    /// Reports interrupt lines, the next deadline and halt requests at time `now`. `mem` is the
    /// core's RAM, for devices that move data into or out of it (DMA into the firmware's SRAM)
    /// at this instruction boundary.
    fn poll(&mut self, now: u64, mem: &mut Mem<'_>) -> Poll;
}

impl<B: Bus + ?Sized> Bus for &mut B {
    fn load(&mut self, addr: u32, size: u8, now: u64) -> Result<u32, Fault> {
        (**self).load(addr, size, now)
    }
    fn store(&mut self, addr: u32, size: u8, value: u32, now: u64) -> Result<(), Fault> {
        (**self).store(addr, size, value, now)
    }
    fn poll(&mut self, now: u64, mem: &mut Mem<'_>) -> Poll {
        (**self).poll(now, mem)
    }
}

impl<B: Bus + ?Sized> Bus for Box<B> {
    fn load(&mut self, addr: u32, size: u8, now: u64) -> Result<u32, Fault> {
        (**self).load(addr, size, now)
    }
    fn store(&mut self, addr: u32, size: u8, value: u32, now: u64) -> Result<(), Fault> {
        (**self).store(addr, size, value, now)
    }
    fn poll(&mut self, now: u64, mem: &mut Mem<'_>) -> Poll {
        (**self).poll(now, mem)
    }
}

/// A bus with no devices: every access faults, no interrupts.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoBus;

impl Bus for NoBus {
    fn load(&mut self, _addr: u32, _size: u8, _now: u64) -> Result<u32, Fault> {
        Err(Fault)
    }
    fn store(&mut self, _addr: u32, _size: u8, _value: u32, _now: u64) -> Result<(), Fault> {
        Err(Fault)
    }
    fn poll(&mut self, _now: u64, _mem: &mut Mem<'_>) -> Poll {
        Poll::IDLE
    }
}
