//! The hart: registers, CSRs, traps, interrupts and the interpreter loop.

use crate::bus::{Bus, Fault, Halt, IRQ_ALL, IRQ_MEI, IRQ_MSI};
use crate::decode::{Insn, Op, decode};
use crate::elf;
use crate::error::Error;

/// Exception causes (`mcause` without the interrupt bit).
pub mod cause {
    /// Instruction address misaligned.
    pub const INSN_MISALIGNED: u32 = 0;
    /// Instruction access fault.
    pub const INSN_ACCESS: u32 = 1;
    /// Illegal instruction.
    pub const ILLEGAL: u32 = 2;
    /// Breakpoint (`ebreak`).
    pub const BREAKPOINT: u32 = 3;
    /// Load address misaligned.
    pub const LOAD_MISALIGNED: u32 = 4;
    /// Load access fault.
    pub const LOAD_ACCESS: u32 = 5;
    /// Store/AMO address misaligned.
    pub const STORE_MISALIGNED: u32 = 6;
    /// Store/AMO access fault.
    pub const STORE_ACCESS: u32 = 7;
    /// Environment call from M-mode.
    pub const ECALL_M: u32 = 11;
    /// The interrupt bit of `mcause`.
    pub const INTERRUPT: u32 = 1 << 31;
}

/// CSR addresses the core implements.
pub mod csr {
    #![allow(missing_docs)]
    pub const MSTATUS: u16 = 0x300;
    pub const MISA: u16 = 0x301;
    pub const MIE: u16 = 0x304;
    pub const MTVEC: u16 = 0x305;
    pub const MCOUNTEREN: u16 = 0x306;
    pub const MSTATUSH: u16 = 0x310;
    pub const MSCRATCH: u16 = 0x340;
    pub const MEPC: u16 = 0x341;
    pub const MCAUSE: u16 = 0x342;
    pub const MTVAL: u16 = 0x343;
    pub const MIP: u16 = 0x344;
    pub const MCYCLE: u16 = 0xB00;
    pub const MINSTRET: u16 = 0xB02;
    pub const MCYCLEH: u16 = 0xB80;
    pub const MINSTRETH: u16 = 0xB82;
    pub const CYCLE: u16 = 0xC00;
    pub const TIME: u16 = 0xC01;
    pub const INSTRET: u16 = 0xC02;
    pub const CYCLEH: u16 = 0xC80;
    pub const TIMEH: u16 = 0xC81;
    pub const INSTRETH: u16 = 0xC82;
    pub const MVENDORID: u16 = 0xF11;
    pub const MARCHID: u16 = 0xF12;
    pub const MIMPID: u16 = 0xF13;
    pub const MHARTID: u16 = 0xF14;
    pub const MCONFIGPTR: u16 = 0xF15;
    /// Debug-mode only (not reachable from machine-mode software).
    pub const DCSR: u16 = 0x7B0;
    /// Debug-mode only (not reachable from machine-mode software).
    pub const DPC: u16 = 0x7B1;
}

/// Why the hart entered debug mode: `dcsr.cause` (RISC-V Debug Spec 0.13.2, 4.8.1).
pub mod debug_cause {
    /// An `ebreak` with `dcsr.ebreakm` set.
    pub const EBREAK: u32 = 1;
    /// A halt request from the debugger.
    pub const HALTREQ: u32 = 3;
    /// One instruction stepped (`dcsr.step`).
    pub const STEP: u32 = 4;
}

/// `dcsr` bits (Debug Spec 0.13.2, 4.8.1).
pub mod dcsr {
    /// Debug support as in the 0.13 spec.
    pub const XDEBUGVER_013: u32 = 4 << 28;
    /// `ebreak` in M-mode enters debug mode.
    pub const EBREAKM: u32 = 1 << 15;
    /// Counters do not run in debug mode (true here: nothing executes while halted).
    pub const STOPCOUNT: u32 = 1 << 10;
    /// `dcsr.cause` field shift.
    pub const CAUSE_SHIFT: u32 = 6;
    /// Single step on resume.
    pub const STEP: u32 = 1 << 2;
    /// The privilege level the hart resumes in: always machine mode here.
    pub const PRV_M: u32 = 3;
    /// Bits a debugger may change; the rest are fixed (WARL): no S/U modes, so ebreaks/ebreaku
    /// read 0, `stepie` is 0 (no interrupts while stepping), `stoptime` is 0 (the card's timer
    /// keeps running while the hart is halted: wall-clock time, or modeled time that the card
    /// model advances by the halt's wall duration), `prv` stays M.
    pub const WRITABLE: u32 = EBREAKM | STEP;
}

const MSTATUS_MIE: u32 = 1 << 3;
const MSTATUS_MPIE: u32 = 1 << 7;
const MSTATUS_MPP: u32 = 3 << 11;
/// misa: MXL=1 (RV32), extensions A, C, I, M.
pub const MISA: u32 = (1 << 30) | (1 << 0) | (1 << 2) | (1 << 8) | (1 << 12);

const DCSR_RESET: u32 = dcsr::XDEBUGVER_013 | dcsr::STOPCOUNT | dcsr::PRV_M;

/// One RAM region the core reaches without going through the [`Bus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRegion {
    /// First address (4-byte aligned).
    pub base: u32,
    /// Size in bytes (a non-zero multiple of 4; `base + size` must not pass 4 GiB).
    pub size: u32,
    /// Whether the core may fetch instructions from it (it then keeps a decode cache for it).
    pub exec: bool,
}

/// IMEM of the card: 128 KiB at `0x8000_0000`, executable.
pub const IMEM: RamRegion = RamRegion {
    base: 0x8000_0000,
    size: 128 * 1024,
    exec: true,
};
/// DMEM of the card: 64 KiB at `0x8002_0000`, not executable.
pub const DMEM: RamRegion = RamRegion {
    base: 0x8002_0000,
    size: 64 * 1024,
    exec: false,
};

/// How the core is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// RAM regions (non-overlapping). Default: [`IMEM`] and [`DMEM`].
    pub ram: Vec<RamRegion>,
    /// `mhartid`.
    pub hart_id: u32,
    /// `pc` after reset (the ELF entry replaces it when an ELF is loaded).
    pub reset_pc: u32,
    /// Cycles per tick of the `time` CSR (100: 10 MHz at 1 GHz, as QEMU `virt` with `-icount
    /// shift=0`).
    pub time_divisor: u64,
    /// Trap on misaligned loads and stores (`true`, the default, as a small FPGA core does);
    /// `false` performs them (as QEMU does for ordinary loads and stores). AMOs and LR/SC
    /// always trap when misaligned.
    pub trap_misaligned: bool,
    /// The longest run of instructions between two [`Bus::poll`] calls, so that interrupt lines
    /// raised asynchronously (by other threads) are seen in bounded time.
    pub max_poll_interval: u64,
    /// Count `ecall`, `ebreak` and illegal encodings, which trap, as executed instructions
    /// (`minstret`, `mcycle`, [`Cpu::retired`]), as QEMU's `-icount` does. The ISA says they do
    /// not retire, so this is off by default; the QEMU oracle tests turn it on. (Illegal CSR
    /// accesses and access faults are not counted either way, as in QEMU.)
    pub qemu_icount_compat: bool,
    /// Let `wfi` fast-forward idle time to the bus's `next_event` by itself (`true`, the
    /// default). `false` returns [`Exit::Wfi`] whenever the hart waits with nothing pending,
    /// so the platform decides how much idle time passes (the card's modeled clock paces idle
    /// time against the wall clock unless work is in flight) and adds it with
    /// [`Cpu::skip_idle`]; `next_event` then only bounds how far the hart runs between polls.
    pub wfi_fast_forward: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ram: vec![IMEM, DMEM],
            hart_id: 0,
            reset_pc: IMEM.base,
            time_divisor: 100,
            trap_misaligned: true,
            max_poll_interval: 1 << 16,
            qemu_icount_compat: false,
            wfi_fast_forward: true,
        }
    }
}

/// Why [`Cpu::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The instruction budget is spent (instructions retired plus traps taken).
    Budget,
    /// The bus asked to stop.
    Halt(Halt),
    /// The hart waits in `wfi` with no interrupt pending and no deadline from the bus: call
    /// `run` again once something may have raised an interrupt line.
    Wfi,
    /// The hart is in debug mode (halted for the debugger, see [`Cpu::request_halt`]); it runs
    /// again after [`Cpu::resume`] or [`Cpu::reset`].
    Debug,
}

pub(crate) struct Ram {
    base: u32,
    len: u32,
    data: Vec<u8>,
    /// One decoded instruction per halfword; empty when the region is not executable.
    code: Vec<Insn>,
}

impl Ram {
    #[inline(always)]
    fn read(&self, off: usize, size: u32) -> u32 {
        let d = &self.data;
        match size {
            1 => u32::from(d[off]),
            2 => u32::from(u16::from_le_bytes([d[off], d[off + 1]])),
            _ => u32::from_le_bytes([d[off], d[off + 1], d[off + 2], d[off + 3]]),
        }
    }

    #[inline(always)]
    fn write(&mut self, off: usize, size: u32, v: u32) {
        let b = v.to_le_bytes();
        self.data[off..off + size as usize].copy_from_slice(&b[..size as usize]);
        if !self.code.is_empty() {
            self.invalidate(off, size as usize);
        }
    }

    #[inline(always)]
    fn invalidate(&mut self, off: usize, len: usize) {
        invalidate(&mut self.code, off, len);
    }
}

/// Forgets the decoded instructions that bytes `off..off + len` of a region are part of.
#[inline(always)]
fn invalidate(code: &mut [Insn], off: usize, len: usize) {
    if len == 0 || code.is_empty() || off >= code.len() * 2 {
        return;
    }
    // A 32-bit instruction may start one halfword before the first byte written.
    let first = (off >> 1).saturating_sub(1);
    let last = ((off + len - 1) >> 1).min(code.len() - 1);
    for slot in &mut code[first..=last] {
        *slot = Insn::UNDECODED;
    }
}

/// The core's RAM as devices see it at poll points (e.g. a DMA engine copying into the
/// firmware's SRAM). Writes invalidate decoded instructions.
pub struct Mem<'a> {
    ram: &'a mut [Ram],
}

impl Mem<'_> {
    fn find(&self, addr: u32, len: usize) -> Option<(usize, usize)> {
        let len = u32::try_from(len).ok()?;
        self.ram.iter().enumerate().find_map(|(i, r)| {
            let off = addr.checked_sub(r.base)?;
            (off <= r.len && len <= r.len - off).then_some((i, off as usize))
        })
    }

    /// Copies RAM at `addr` into `buf`; `Err` unless the range lies inside one RAM region.
    pub fn read(&self, addr: u32, buf: &mut [u8]) -> Result<(), Fault> {
        let (i, off) = self.find(addr, buf.len()).ok_or(Fault)?;
        buf.copy_from_slice(&self.ram[i].data[off..off + buf.len()]);
        Ok(())
    }

    /// Copies `data` into RAM at `addr`; `Err` unless the range lies inside one RAM region.
    pub fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), Fault> {
        let (i, off) = self.find(addr, data.len()).ok_or(Fault)?;
        let r = &mut self.ram[i];
        r.data[off..off + data.len()].copy_from_slice(data);
        if !r.code.is_empty() && !data.is_empty() {
            r.invalidate(off, data.len());
        }
        Ok(())
    }
}

/// An RV32IMAC + Zicsr hart running in machine mode only, with its RAM and a [`Bus`].
pub struct Cpu<B> {
    x: [u32; 256],
    pc: u32,
    ram: Vec<Ram>,
    bus: B,
    // Time base.
    retired: u64,
    idle: u64,
    limit: u64,
    budget_end: u64,
    // Machine CSRs.
    mstatus: u32,
    mie: u32,
    mip: u32,
    mtvec: u32,
    mscratch: u32,
    mepc: u32,
    mcause: u32,
    mtval: u32,
    mcycle_off: u64,
    minstret_off: u64,
    // State.
    reservation: Option<u32>,
    waiting: bool,
    next_event: u64,
    next_poll: u64,
    poll_now: bool,
    halt: Option<Halt>,
    // Debug mode (Debug Spec 0.13.2 chapter 4).
    debug_mode: bool,
    stepping: bool,
    dcsr: u32,
    dpc: u32,
    // Configuration.
    hart_id: u32,
    reset_pc: u32,
    time_divisor: u64,
    trap_misaligned: bool,
    max_poll_interval: u64,
    qemu_icount_compat: bool,
    wfi_fast_forward: bool,
}

impl<B: Bus> Cpu<B> {
    /// Builds a hart in its reset state with zeroed RAM.
    pub fn new(config: Config, bus: B) -> Result<Self, Error> {
        if config.ram.is_empty() {
            return Err(Error::NoRam);
        }
        let mut ram: Vec<Ram> = Vec::with_capacity(config.ram.len());
        for r in &config.ram {
            let end = u64::from(r.base) + u64::from(r.size);
            if r.size == 0 || r.size % 4 != 0 || r.base % 4 != 0 || end > 1 << 32 {
                return Err(Error::BadRegion(*r));
            }
            if ram.iter().any(|o| {
                u64::from(o.base) < end && u64::from(r.base) < u64::from(o.base) + u64::from(o.len)
            }) {
                return Err(Error::BadRegion(*r));
            }
            ram.push(Ram {
                base: r.base,
                len: r.size,
                data: vec![0; r.size as usize],
                code: if r.exec {
                    vec![Insn::UNDECODED; (r.size / 2) as usize]
                } else {
                    Vec::new()
                },
            });
        }
        let mut cpu = Cpu {
            x: [0; 256],
            pc: config.reset_pc & !1,
            ram,
            bus,
            retired: 0,
            idle: 0,
            limit: 0,
            budget_end: 0,
            mstatus: 0,
            mie: 0,
            mip: 0,
            mtvec: 0,
            mscratch: 0,
            mepc: 0,
            mcause: 0,
            mtval: 0,
            mcycle_off: 0,
            minstret_off: 0,
            reservation: None,
            waiting: false,
            next_event: u64::MAX,
            next_poll: 0,
            poll_now: true,
            halt: None,
            debug_mode: false,
            stepping: false,
            dcsr: DCSR_RESET,
            dpc: 0,
            hart_id: config.hart_id,
            reset_pc: config.reset_pc & !1,
            time_divisor: config.time_divisor.max(1),
            trap_misaligned: config.trap_misaligned,
            max_poll_interval: config.max_poll_interval.max(1),
            qemu_icount_compat: config.qemu_icount_compat,
            wfi_fast_forward: config.wfi_fast_forward,
        };
        cpu.reset();
        Ok(cpu)
    }

    /// Resets the hart (registers, CSRs, counters as seen by software, `pc` to the reset
    /// address). RAM keeps its contents; the internal time base keeps running.
    pub fn reset(&mut self) {
        self.x = [0; 256];
        self.pc = self.reset_pc;
        self.mstatus = MSTATUS_MPP;
        self.mie = 0;
        self.mtvec = 0;
        self.mscratch = 0;
        self.mepc = 0;
        self.mcause = 0;
        self.mtval = 0;
        self.mcycle_off = self.now().wrapping_neg();
        self.minstret_off = self.retired.wrapping_neg();
        self.reservation = None;
        self.waiting = false;
        self.poll_now = true;
        self.halt = None;
        self.debug_mode = false;
        self.stepping = false;
        self.dcsr = DCSR_RESET;
        self.dpc = 0;
    }

    /// Parses `bytes` as an ELF32 RISC-V executable, copies its `PT_LOAD` segments to their
    /// physical addresses (zero-filling past the file size), sets the reset address and `pc` to
    /// the entry point and returns it. Every segment must lie inside one RAM region.
    pub fn load_elf(&mut self, bytes: &[u8]) -> Result<u32, Error> {
        let image = elf::parse(bytes)?;
        // Check everything first, so a bad image changes nothing.
        for seg in &image.segments {
            if self.ram_range(seg.paddr, seg.memsz).is_none() {
                return Err(Error::SegmentOutsideRam {
                    paddr: seg.paddr,
                    memsz: seg.memsz,
                });
            }
        }
        for seg in &image.segments {
            let data = &bytes[seg.offset..seg.offset + seg.filesz as usize];
            let mut full = data.to_vec();
            full.resize(seg.memsz as usize, 0);
            self.write_ram(seg.paddr, &full)?;
        }
        self.reset_pc = image.entry;
        self.pc = image.entry;
        Ok(image.entry)
    }

    fn ram_range(&self, addr: u32, len: u32) -> Option<(usize, usize)> {
        self.ram.iter().enumerate().find_map(|(i, r)| {
            let off = addr.checked_sub(r.base)?;
            (off <= r.len && len <= r.len - off).then_some((i, off as usize))
        })
    }

    /// Copies `data` into RAM at `addr` (invalidating decoded instructions there). The whole
    /// range must lie inside one RAM region.
    pub fn write_ram(&mut self, addr: u32, data: &[u8]) -> Result<(), Error> {
        let len = u32::try_from(data.len()).map_err(|_| Error::OutsideRam { addr })?;
        let (i, off) = self
            .ram_range(addr, len)
            .ok_or(Error::OutsideRam { addr })?;
        let r = &mut self.ram[i];
        r.data[off..off + data.len()].copy_from_slice(data);
        if !r.code.is_empty() && !data.is_empty() {
            r.invalidate(off, data.len());
        }
        Ok(())
    }

    /// Borrows `len` bytes of RAM at `addr` (for the host side: log ring, mailboxes).
    pub fn ram(&self, addr: u32, len: u32) -> Option<&[u8]> {
        let (i, off) = self.ram_range(addr, len)?;
        Some(&self.ram[i].data[off..off + len as usize])
    }

    /// The bus.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// The bus, mutably (e.g. to raise a line: the change is seen at the next poll; call
    /// [`Cpu::request_poll`] to make that the next instruction boundary).
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// Consumes the hart, returning its bus.
    pub fn into_bus(self) -> B {
        self.bus
    }

    /// Makes the core poll the bus at the next instruction boundary.
    pub fn request_poll(&mut self) {
        self.poll_now = true;
        self.limit = 0;
    }

    /// The program counter.
    pub fn pc(&self) -> u32 {
        self.pc
    }

    /// Sets the program counter (bit 0 is cleared).
    pub fn set_pc(&mut self, pc: u32) {
        self.pc = pc & !1;
        self.waiting = false;
    }

    /// Register `x[i]` (`i` in 0..32; x0 reads 0).
    pub fn reg(&self, i: usize) -> u32 {
        if i == 0 { 0 } else { self.x[i & 31] }
    }

    /// Sets register `x[i]` (writes to x0 are ignored).
    pub fn set_reg(&mut self, i: usize, v: u32) {
        if i != 0 {
            self.x[i & 31] = v;
        }
    }

    /// Instructions retired since the hart was built (not affected by CSR writes or reset).
    pub fn retired(&self) -> u64 {
        self.retired
    }

    /// The time base: instructions retired plus cycles skipped idle in `wfi`.
    pub fn now(&self) -> u64 {
        self.retired.wrapping_add(self.idle)
    }

    /// Adds `cycles` of idle time while the hart waits in `wfi` (say, the card model keeping the
    /// core's time base in step with its own clock while nothing happens); no effect otherwise.
    /// The bus is polled before the next instruction.
    pub fn skip_idle(&mut self, cycles: u64) {
        if self.waiting {
            self.idle = self.idle.saturating_add(cycles);
            self.request_poll();
        }
    }

    /// Whether the hart is waiting in `wfi`.
    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// Reads a CSR as software would (`None` if it does not exist).
    pub fn csr(&self, addr: u16) -> Option<u32> {
        self.csr_read(u32::from(addr))
    }

    /// Runs one instruction (or takes one trap or interrupt).
    pub fn step(&mut self) -> Exit {
        self.run(1)
    }

    /// Runs until `max_instructions` instructions have retired or trapped, the bus halts the
    /// hart, or the hart waits in `wfi` with nothing to wake it.
    pub fn run(&mut self, max_instructions: u64) -> Exit {
        self.budget_end = self.retired.saturating_add(max_instructions);
        loop {
            if self.debug_mode {
                return Exit::Debug;
            }
            if self.poll_now || self.now() >= self.next_poll {
                self.poll();
            }
            if let Some(h) = self.halt.take() {
                return Exit::Halt(h);
            }
            if self.stepping {
                // One instruction (or one trap: the step then ends on the handler's first
                // instruction) with interrupts held off (`dcsr.stepie` is 0). A `wfi` stepped
                // over is a `nop`.
                self.stepping = false;
                self.budget_end = self.retired.saturating_add(1);
                self.limit = self.budget_end;
                self.exec_block();
                if !self.debug_mode {
                    self.enter_debug(debug_cause::STEP);
                }
                return Exit::Debug;
            }
            let pending = self.mip & self.mie;
            if pending != 0 {
                self.waiting = false;
                if self.mstatus & MSTATUS_MIE != 0 {
                    if self.retired >= self.budget_end {
                        return Exit::Budget;
                    }
                    let code = if pending & IRQ_MEI != 0 {
                        11
                    } else if pending & IRQ_MSI != 0 {
                        3
                    } else {
                        7
                    };
                    self.take_interrupt(code);
                    continue;
                }
            }
            if self.retired >= self.budget_end {
                return Exit::Budget;
            }
            if self.waiting {
                if self.next_event == u64::MAX || !self.wfi_fast_forward {
                    return Exit::Wfi;
                }
                // Fast-forward idle time to the next deadline (at least one cycle, so a bus
                // that keeps answering "now" cannot stall us; each skip costs one unit of budget).
                let now = self.now();
                let target = self.next_event.max(now + 1);
                self.idle += target - now;
                self.budget_end -= 1;
                self.poll_now = true;
                continue;
            }
            let until_poll = self.next_poll.saturating_sub(self.now()).max(1);
            self.limit = self.budget_end.min(self.retired.saturating_add(until_poll));
            self.exec_block();
        }
    }

    /// Enters debug mode now (a caller holding the hart outside [`Cpu::run`] is at an
    /// instruction boundary): `dpc` is the next instruction (after a `wfi` being waited in),
    /// cause "haltreq". [`Cpu::run`] returns [`Exit::Debug`] until [`Cpu::resume`].
    pub fn request_halt(&mut self) {
        if !self.debug_mode {
            self.enter_debug(debug_cause::HALTREQ);
        }
    }

    /// Whether the hart is in debug mode.
    pub fn is_halted(&self) -> bool {
        self.debug_mode
    }

    /// Leaves debug mode at `dpc`. With `dcsr.step` set the hart runs one instruction and halts
    /// again (cause "step"). No effect when the hart is running.
    pub fn resume(&mut self) {
        if !self.debug_mode {
            return;
        }
        self.debug_mode = false;
        self.pc = self.dpc;
        self.reservation = None;
        self.stepping = self.dcsr & dcsr::STEP != 0;
        self.poll_now = true;
    }

    fn enter_debug(&mut self, cause: u32) {
        self.dpc = self.pc;
        self.dcsr = (self.dcsr & !(7 << dcsr::CAUSE_SHIFT)) | cause << dcsr::CAUSE_SHIFT;
        self.debug_mode = true;
        self.stepping = false;
        self.waiting = false;
        self.limit = 0;
    }

    /// Reads a register as the Debug Module's Access Register command numbers them (Debug Spec
    /// 0.13.2, 3.6.1.1): 0x0000-0x0fff CSRs (including `dcsr` and `dpc`), 0x1000-0x101f GPRs.
    /// `None` for registers that do not exist (the command then fails with an exception).
    pub fn debug_reg_read(&self, regno: u16) -> Option<u32> {
        match regno {
            0x1000..=0x101f => Some(self.reg(usize::from(regno - 0x1000))),
            csr::DCSR => Some(self.dcsr),
            csr::DPC => Some(self.dpc),
            0..=0x0fff => self.csr_read(u32::from(regno)),
            _ => None,
        }
    }

    /// Writes a register numbered as in [`Cpu::debug_reg_read`]; `None` when it does not exist
    /// or is read-only. `dcsr` keeps its fixed fields (see [`dcsr::WRITABLE`]).
    pub fn debug_reg_write(&mut self, regno: u16, v: u32) -> Option<()> {
        match regno {
            0x1000..=0x101f => {
                self.set_reg(usize::from(regno - 0x1000), v);
                Some(())
            }
            csr::DCSR => {
                self.dcsr = (self.dcsr & !dcsr::WRITABLE) | (v & dcsr::WRITABLE);
                Some(())
            }
            csr::DPC => {
                self.dpc = v & !1;
                Some(())
            }
            0..=0x0fff => {
                self.csr_read(u32::from(regno))?;
                self.csr_write(u32::from(regno), v)
            }
            _ => None,
        }
    }

    /// A System Bus Access read (the debugger's view of memory): `size` of 1, 2 or 4 bytes at
    /// a naturally aligned `addr`, from RAM or the bus. Does not disturb the hart.
    pub fn sys_read(&mut self, addr: u32, size: u8) -> Result<u32, Fault> {
        let size32 = u32::from(size);
        if !matches!(size, 1 | 2 | 4) || addr & (size32 - 1) != 0 {
            return Err(Fault);
        }
        for r in &self.ram {
            let off = addr.wrapping_sub(r.base);
            if off < r.len && size32 <= r.len - off {
                return Ok(r.read(off as usize, size32));
            }
        }
        let now = self.now();
        let v = self.bus.load(addr, size, now)?;
        self.request_poll();
        Ok(match size {
            1 => v & 0xff,
            2 => v & 0xffff,
            _ => v,
        })
    }

    /// A System Bus Access write, as [`Cpu::sys_read`]; RAM writes invalidate decoded
    /// instructions.
    pub fn sys_write(&mut self, addr: u32, size: u8, v: u32) -> Result<(), Fault> {
        let size32 = u32::from(size);
        if !matches!(size, 1 | 2 | 4) || addr & (size32 - 1) != 0 {
            return Err(Fault);
        }
        for r in &mut self.ram {
            let off = addr.wrapping_sub(r.base);
            if off < r.len && size32 <= r.len - off {
                r.write(off as usize, size32, v);
                return Ok(());
            }
        }
        let now = self.now();
        self.bus.store(addr, size, v, now)?;
        self.request_poll();
        Ok(())
    }

    fn poll(&mut self) {
        let now = self.now();
        let p = self.bus.poll(now, &mut Mem { ram: &mut self.ram });
        self.mip = p.irq & IRQ_ALL;
        self.next_event = p.next_event;
        if p.halt.is_some() {
            self.halt = p.halt;
        }
        self.next_poll = p.next_event.min(now.saturating_add(self.max_poll_interval));
        self.poll_now = false;
    }

    fn take_interrupt(&mut self, code: u32) {
        self.enter_trap(cause::INTERRUPT | code, 0);
        if self.mtvec & 3 == 1 {
            self.pc = (self.mtvec & !3).wrapping_add(4 * code);
        }
        self.budget_end = self.budget_end.saturating_sub(1);
    }

    fn enter_trap(&mut self, cause: u32, tval: u32) {
        self.mepc = self.pc;
        self.mcause = cause;
        self.mtval = tval;
        let mie = self.mstatus & MSTATUS_MIE;
        self.mstatus = (self.mstatus & !(MSTATUS_MIE | MSTATUS_MPIE)) | (mie << 4) | MSTATUS_MPP;
        self.pc = self.mtvec & !3;
        self.reservation = None;
        self.waiting = false;
    }

    /// A synchronous exception at the current `pc`. Consumes one unit of budget so that a trap
    /// loop (say `mtvec` pointing at unmapped memory) still ends.
    #[cold]
    #[inline(never)]
    fn exception(&mut self, cause: u32, tval: u32) {
        self.enter_trap(cause, tval);
        self.budget_end = self.budget_end.saturating_sub(1);
        self.limit = self.limit.min(self.budget_end);
    }

    /// QEMU compatibility: a trapping ecall/ebreak/illegal encoding counts as executed.
    #[inline(always)]
    fn count_trapping(&mut self) {
        if self.qemu_icount_compat {
            self.retired += 1;
            // The trap already took one unit of budget; keep the total at one.
            self.budget_end = self.budget_end.saturating_add(1);
            self.limit = self.limit.saturating_add(1).min(self.budget_end);
        }
    }

    /// Decodes the instruction at `off` in `data`; a 32-bit instruction whose second half lies
    /// past the end becomes a fetch fault.
    #[cold]
    #[inline(never)]
    fn decode_from(data: &[u8], off: usize) -> Insn {
        let low = u16::from_le_bytes([data[off], data[off + 1]]);
        if crate::decode::insn_len(low) == 2 {
            return decode(u32::from(low));
        }
        match data.get(off..off + 4) {
            Some(w) => decode(u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
            None => Insn::FETCH_FAULT,
        }
    }

    #[inline(always)]
    fn load(&mut self, addr: u32, size: u32) -> Option<u32> {
        if addr & (size - 1) != 0 && self.trap_misaligned {
            self.exception(cause::LOAD_MISALIGNED, addr);
            return None;
        }
        for r in &self.ram {
            let off = addr.wrapping_sub(r.base);
            if off < r.len && size <= r.len - off {
                return Some(r.read(off as usize, size));
            }
        }
        self.load_bus(addr, size, cause::LOAD_ACCESS)
    }

    #[cold]
    #[inline(never)]
    fn load_bus(&mut self, addr: u32, size: u32, fault: u32) -> Option<u32> {
        let now = self.now();
        let r = self.bus.load(addr, size as u8, now);
        self.request_poll();
        match r {
            Ok(v) => Some(match size {
                1 => v & 0xff,
                2 => v & 0xffff,
                _ => v,
            }),
            Err(_) => {
                self.exception(fault, addr);
                None
            }
        }
    }

    #[inline(always)]
    fn store(&mut self, addr: u32, size: u32, v: u32) -> bool {
        if addr & (size - 1) != 0 && self.trap_misaligned {
            self.exception(cause::STORE_MISALIGNED, addr);
            return false;
        }
        for r in &mut self.ram {
            let off = addr.wrapping_sub(r.base);
            if off < r.len && size <= r.len - off {
                r.write(off as usize, size, v);
                return true;
            }
        }
        self.store_bus(addr, size, v)
    }

    #[cold]
    #[inline(never)]
    fn store_bus(&mut self, addr: u32, size: u32, v: u32) -> bool {
        let now = self.now();
        let r = self.bus.store(addr, size as u8, v, now);
        self.request_poll();
        if r.is_err() {
            self.exception(cause::STORE_ACCESS, addr);
            return false;
        }
        true
    }

    /// Read-modify-write for AMOs: aligned, faults reported as store/AMO faults.
    fn amo(&mut self, addr: u32, f: impl FnOnce(u32) -> u32) -> Option<u32> {
        if addr & 3 != 0 {
            self.exception(cause::STORE_MISALIGNED, addr);
            return None;
        }
        for r in &mut self.ram {
            let off = addr.wrapping_sub(r.base);
            if off < r.len && 4 <= r.len - off {
                let old = r.read(off as usize, 4);
                r.write(off as usize, 4, f(old));
                return Some(old);
            }
        }
        let old = self.load_bus(addr, 4, cause::STORE_ACCESS)?;
        self.store_bus(addr, 4, f(old)).then_some(old)
    }

    fn csr_read(&self, csr: u32) -> Option<u32> {
        let now = self.now();
        let cycle = now.wrapping_add(self.mcycle_off);
        let instret = self.retired.wrapping_add(self.minstret_off);
        let time = now / self.time_divisor;
        Some(match csr as u16 {
            csr::MSTATUS => self.mstatus,
            csr::MISA => MISA,
            csr::MIE => self.mie,
            csr::MTVEC => self.mtvec,
            csr::MCOUNTEREN | csr::MSTATUSH => 0,
            csr::MSCRATCH => self.mscratch,
            csr::MEPC => self.mepc,
            csr::MCAUSE => self.mcause,
            csr::MTVAL => self.mtval,
            csr::MIP => self.mip,
            csr::MCYCLE | csr::CYCLE => cycle as u32,
            csr::MCYCLEH | csr::CYCLEH => (cycle >> 32) as u32,
            csr::MINSTRET | csr::INSTRET => instret as u32,
            csr::MINSTRETH | csr::INSTRETH => (instret >> 32) as u32,
            csr::TIME => time as u32,
            csr::TIMEH => (time >> 32) as u32,
            csr::MVENDORID | csr::MARCHID | csr::MIMPID | csr::MCONFIGPTR => 0,
            csr::MHARTID => self.hart_id,
            // mhpmcounter3..31(h), mhpmevent3..31, hpmcounter3..31(h): hardwired zero.
            0xB03..=0xB1F | 0xB83..=0xB9F | 0x323..=0x33F | 0xC03..=0xC1F | 0xC83..=0xC9F => 0,
            _ => return None,
        })
    }

    /// Writes a CSR; `None` if it is read-only. The caller has checked that it exists.
    fn csr_write(&mut self, csr: u32, v: u32) -> Option<()> {
        if csr >> 10 == 3 {
            return None; // read-only
        }
        // Counters: the written value is the count at the writing instruction, which then
        // retires and counts (as QEMU does: a read right after the write sees value + 1).
        let now1 = self.now();
        let ret1 = self.retired;
        match csr as u16 {
            csr::MSTATUS => {
                self.mstatus = (v & (MSTATUS_MIE | MSTATUS_MPIE)) | MSTATUS_MPP;
                self.limit = 0;
            }
            csr::MIE => {
                self.mie = v & IRQ_ALL;
                self.limit = 0;
            }
            // WARL: modes 2 and 3 are reserved; such writes are ignored (as QEMU does).
            csr::MTVEC if v & 3 < 2 => self.mtvec = v,
            csr::MSCRATCH => self.mscratch = v,
            csr::MEPC => self.mepc = v & !1,
            csr::MCAUSE => self.mcause = v,
            csr::MTVAL => self.mtval = v,
            csr::MCYCLE => {
                let cur = now1.wrapping_add(self.mcycle_off);
                let new = (cur & !0xffff_ffff) | u64::from(v);
                self.mcycle_off = new.wrapping_sub(now1);
            }
            csr::MCYCLEH => {
                let cur = now1.wrapping_add(self.mcycle_off);
                let new = (cur & 0xffff_ffff) | (u64::from(v) << 32);
                self.mcycle_off = new.wrapping_sub(now1);
            }
            csr::MINSTRET => {
                let cur = ret1.wrapping_add(self.minstret_off);
                let new = (cur & !0xffff_ffff) | u64::from(v);
                self.minstret_off = new.wrapping_sub(ret1);
            }
            csr::MINSTRETH => {
                let cur = ret1.wrapping_add(self.minstret_off);
                let new = (cur & 0xffff_ffff) | (u64::from(v) << 32);
                self.minstret_off = new.wrapping_sub(ret1);
            }
            // Read-only zero or WARL-ignored: misa, mip (lines come from the bus), the rest.
            _ => {}
        }
        Some(())
    }

    /// Executes a CSR instruction; returns false if it trapped.
    #[inline(never)]
    fn exec_csr(&mut self, op: Op, rd: u8, rs1: u8, imm: u32, src: u32) -> bool {
        let i = Insn {
            op,
            rd,
            rs1,
            rs2: 0,
            imm: imm as i32,
        };
        let csr = imm & 0xfff;
        let write = match i.op {
            Op::Csrrw | Op::Csrrwi => true,
            // csrrs/csrrc write only when rs1 (register number or immediate) is not zero.
            _ => i.rs1 != 0,
        };
        let Some(old) = self.csr_read(csr) else {
            self.illegal_csr(i);
            return false;
        };
        if write {
            let new = match i.op {
                Op::Csrrw | Op::Csrrwi => src,
                Op::Csrrs | Op::Csrrsi => old | src,
                _ => old & !src,
            };
            if self.csr_write(csr, new).is_none() {
                self.illegal_csr(i);
                return false;
            }
        }
        self.x[usize::from(i.rd) & 63] = old;
        true
    }

    #[cold]
    fn illegal_csr(&mut self, i: Insn) {
        let f3 = match i.op {
            Op::Csrrw => 1,
            Op::Csrrs => 2,
            Op::Csrrc => 3,
            Op::Csrrwi => 5,
            Op::Csrrsi => 6,
            _ => 7,
        };
        let rd = u32::from(i.rd) & 31;
        let bits = ((i.imm as u32 & 0xfff) << 20)
            | (u32::from(i.rs1) << 15)
            | (f3 << 12)
            | (rd << 7)
            | 0x73;
        self.exception(cause::ILLEGAL, bits);
    }

    /// Runs instructions of the executable region holding `pc` until `retired` reaches
    /// `limit` or `pc` leaves the region. A `pc` outside every executable region takes an
    /// instruction access fault.
    fn exec_block(&mut self) {
        let pc = self.pc;
        let region = self
            .ram
            .iter()
            .position(|r| pc.wrapping_sub(r.base) < r.len && !r.code.is_empty());
        let Some(fr) = region else {
            self.exception(cause::INSN_ACCESS, pc);
            return;
        };
        // The region's decode cache moves into the loop for its duration (one less indirection
        // per instruction); stores into the region invalidate it there.
        let mut code = std::mem::take(&mut self.ram[fr].code);
        self.exec_loop(fr, &mut code);
        self.ram[fr].code = code;
    }

    /// The interpreter loop over region `fr`, whose decode cache is `code`.
    ///
    /// `pc` and `retired` live in locals; they are written back (`sync!`) before anything that
    /// may read them or take a trap, and read back (`resync!`) after a trap.
    fn exec_loop(&mut self, fr: usize, code: &mut [Insn]) {
        let code_base = self.ram[fr].base;
        let mut pc = self.pc;
        let mut retired = self.retired;
        // `limit` is re-read after everything that may lower it (traps, MMIO, CSR writes,
        // mret, wfi).
        let mut limit = self.limit;
        macro_rules! sync {
            () => {
                self.pc = pc;
                self.retired = retired;
            };
        }
        macro_rules! resync {
            () => {{
                pc = self.pc;
                retired = self.retired;
                limit = self.limit;
                continue;
            }};
        }
        macro_rules! load {
            ($addr:expr, $size:expr, $rd:expr, $conv:expr) => {{
                sync!();
                match self.load($addr, $size) {
                    Some(v) => self.x[$rd] = $conv(v),
                    None => resync!(),
                }
                limit = self.limit;
            }};
        }
        macro_rules! store {
            ($addr:expr, $size:expr, $v:expr) => {{
                let addr: u32 = $addr;
                sync!();
                if !self.store(addr, $size, $v) {
                    resync!();
                }
                invalidate(code, addr.wrapping_sub(code_base) as usize, $size);
                limit = self.limit;
            }};
        }
        macro_rules! amo {
            ($addr:expr, $rd:expr, $f:expr) => {{
                let addr: u32 = $addr;
                sync!();
                match self.amo(addr, $f) {
                    Some(v) => self.x[$rd] = v,
                    None => resync!(),
                }
                invalidate(code, addr.wrapping_sub(code_base) as usize, 4);
                limit = self.limit;
            }};
        }
        while retired < limit {
            let slot = (pc.wrapping_sub(code_base) >> 1) as usize;
            let Some(&i) = code.get(slot) else {
                break; // pc left the region: exec_block picks the next one
            };
            let next = pc.wrapping_add(i.byte_len());
            let mut npc = next;
            let a = self.x[usize::from(i.rs1)];
            let b = self.x[usize::from(i.rs2)];
            let rd = usize::from(i.rd) & 63;
            let imm = i.imm as u32;
            let x = &mut self.x;
            match i.op {
                Op::Lui => x[rd] = imm,
                Op::Auipc => x[rd] = pc.wrapping_add(imm),
                Op::Jal => {
                    x[rd] = next;
                    npc = pc.wrapping_add(imm);
                }
                Op::Jalr => {
                    npc = a.wrapping_add(imm) & !1;
                    x[rd] = next;
                }
                Op::Beq => {
                    if a == b {
                        npc = pc.wrapping_add(imm);
                    }
                }
                Op::Bne => {
                    if a != b {
                        npc = pc.wrapping_add(imm);
                    }
                }
                Op::Blt => {
                    if (a as i32) < (b as i32) {
                        npc = pc.wrapping_add(imm);
                    }
                }
                Op::Bge => {
                    if (a as i32) >= (b as i32) {
                        npc = pc.wrapping_add(imm);
                    }
                }
                Op::Bltu => {
                    if a < b {
                        npc = pc.wrapping_add(imm);
                    }
                }
                Op::Bgeu => {
                    if a >= b {
                        npc = pc.wrapping_add(imm);
                    }
                }
                Op::Lb => load!(a.wrapping_add(imm), 1, rd, |v: u32| v as u8 as i8 as u32),
                Op::Lh => load!(a.wrapping_add(imm), 2, rd, |v: u32| v as u16 as i16 as u32),
                Op::Lw => load!(a.wrapping_add(imm), 4, rd, |v: u32| v),
                Op::Lbu => load!(a.wrapping_add(imm), 1, rd, |v: u32| v),
                Op::Lhu => load!(a.wrapping_add(imm), 2, rd, |v: u32| v),
                Op::Sb => store!(a.wrapping_add(imm), 1, b),
                Op::Sh => store!(a.wrapping_add(imm), 2, b),
                Op::Sw => store!(a.wrapping_add(imm), 4, b),
                Op::Addi => x[rd] = a.wrapping_add(imm),
                Op::Slti => x[rd] = u32::from((a as i32) < (imm as i32)),
                Op::Sltiu => x[rd] = u32::from(a < imm),
                Op::Xori => x[rd] = a ^ imm,
                Op::Ori => x[rd] = a | imm,
                Op::Andi => x[rd] = a & imm,
                Op::Slli => x[rd] = a << (imm & 31),
                Op::Srli => x[rd] = a >> (imm & 31),
                Op::Srai => x[rd] = ((a as i32) >> (imm & 31)) as u32,
                Op::Add => x[rd] = a.wrapping_add(b),
                Op::Sub => x[rd] = a.wrapping_sub(b),
                Op::Sll => x[rd] = a << (b & 31),
                Op::Slt => x[rd] = u32::from((a as i32) < (b as i32)),
                Op::Sltu => x[rd] = u32::from(a < b),
                Op::Xor => x[rd] = a ^ b,
                Op::Srl => x[rd] = a >> (b & 31),
                Op::Sra => x[rd] = ((a as i32) >> (b & 31)) as u32,
                Op::Or => x[rd] = a | b,
                Op::And => x[rd] = a & b,
                Op::Mul => x[rd] = a.wrapping_mul(b),
                Op::Mulh => {
                    x[rd] = ((i64::from(a as i32) * i64::from(b as i32)) >> 32) as u32;
                }
                Op::Mulhsu => {
                    x[rd] = ((i64::from(a as i32) * i64::from(b)) >> 32) as u32;
                }
                Op::Mulhu => x[rd] = ((u64::from(a) * u64::from(b)) >> 32) as u32,
                Op::Div => {
                    x[rd] = if b == 0 {
                        u32::MAX
                    } else {
                        (a as i32).wrapping_div(b as i32) as u32
                    };
                }
                Op::Divu => x[rd] = a.checked_div(b).unwrap_or(u32::MAX),
                Op::Rem => {
                    x[rd] = if b == 0 {
                        a
                    } else {
                        (a as i32).wrapping_rem(b as i32) as u32
                    };
                }
                Op::Remu => x[rd] = a.checked_rem(b).unwrap_or(a),
                Op::LrW => {
                    sync!();
                    if a & 3 != 0 {
                        self.exception(cause::LOAD_MISALIGNED, a);
                        resync!();
                    }
                    match self.load(a, 4) {
                        Some(v) => {
                            self.x[rd] = v;
                            self.reservation = Some(a);
                        }
                        None => resync!(),
                    }
                    limit = self.limit;
                }
                Op::ScW => {
                    sync!();
                    if a & 3 != 0 {
                        self.exception(cause::STORE_MISALIGNED, a);
                        resync!();
                    }
                    if self.reservation.take() == Some(a) {
                        if !self.store(a, 4, b) {
                            resync!();
                        }
                        invalidate(code, a.wrapping_sub(code_base) as usize, 4);
                        self.x[rd] = 0;
                    } else {
                        self.x[rd] = 1;
                    }
                    limit = self.limit;
                }
                Op::AmoSwapW => amo!(a, rd, |_| b),
                Op::AmoAddW => amo!(a, rd, |m: u32| m.wrapping_add(b)),
                Op::AmoXorW => amo!(a, rd, |m| m ^ b),
                Op::AmoAndW => amo!(a, rd, |m| m & b),
                Op::AmoOrW => amo!(a, rd, |m| m | b),
                Op::AmoMinW => amo!(a, rd, |m| (m as i32).min(b as i32) as u32),
                Op::AmoMaxW => amo!(a, rd, |m| (m as i32).max(b as i32) as u32),
                Op::AmoMinuW => amo!(a, rd, |m: u32| m.min(b)),
                Op::AmoMaxuW => amo!(a, rd, |m: u32| m.max(b)),
                Op::Fence | Op::FenceI => {}
                Op::Ecall => {
                    sync!();
                    self.exception(cause::ECALL_M, 0);
                    self.count_trapping();
                    resync!();
                }
                Op::Ebreak => {
                    sync!();
                    if self.dcsr & dcsr::EBREAKM != 0 {
                        // Debug entry: dpc is the ebreak itself, which does not retire.
                        self.enter_debug(debug_cause::EBREAK);
                        resync!();
                    }
                    self.exception(cause::BREAKPOINT, pc);
                    self.count_trapping();
                    resync!();
                }
                Op::Mret => {
                    let mpie = self.mstatus & MSTATUS_MPIE;
                    self.mstatus = (self.mstatus & !MSTATUS_MIE) | (mpie >> 4) | MSTATUS_MPIE;
                    self.mstatus |= MSTATUS_MPP;
                    self.reservation = None;
                    npc = self.mepc;
                    self.limit = 0;
                    limit = 0;
                }
                Op::Wfi => {
                    self.waiting = true;
                    self.limit = 0;
                    limit = 0;
                }
                Op::Csrrw | Op::Csrrs | Op::Csrrc => {
                    sync!();
                    if !self.exec_csr(i.op, i.rd, i.rs1, imm, a) {
                        resync!();
                    }
                    limit = self.limit;
                }
                Op::Csrrwi | Op::Csrrsi | Op::Csrrci => {
                    sync!();
                    if !self.exec_csr(i.op, i.rd, i.rs1, imm, u32::from(i.rs1)) {
                        resync!();
                    }
                    limit = self.limit;
                }
                Op::Undecoded => {
                    // Not decoded yet: decode into the cache and dispatch again.
                    code[slot] = Self::decode_from(&self.ram[fr].data, slot * 2);
                    continue;
                }
                Op::FetchFault => {
                    sync!();
                    self.exception(cause::INSN_ACCESS, pc);
                    resync!();
                }
                Op::Illegal => {
                    sync!();
                    self.exception(cause::ILLEGAL, imm);
                    self.count_trapping();
                    resync!();
                }
            }
            pc = npc;
            retired += 1;
        }
        sync!();
    }
}
