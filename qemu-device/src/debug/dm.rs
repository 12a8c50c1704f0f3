//! The Debug Module (RISC-V Debug Spec 0.13.2 chapter 3) for the card's one hart: run control,
//! abstract Access Register commands and System Bus Access. No program buffer.

use preba_softcore::{Bus, Cpu, Fault};

/// DM register addresses (Debug Spec 0.13.2, 3.12).
pub mod reg {
    #![allow(missing_docs)]
    pub const DATA0: u32 = 0x04;
    pub const DMCONTROL: u32 = 0x10;
    pub const DMSTATUS: u32 = 0x11;
    pub const HARTINFO: u32 = 0x12;
    pub const ABSTRACTCS: u32 = 0x16;
    pub const COMMAND: u32 = 0x17;
    pub const ABSTRACTAUTO: u32 = 0x18;
    pub const SBCS: u32 = 0x38;
    pub const SBADDRESS0: u32 = 0x39;
    pub const SBDATA0: u32 = 0x3c;
    pub const HALTSUM0: u32 = 0x40;
}

/// `abstractcs.cmderr` values.
pub mod cmderr {
    #![allow(missing_docs)]
    pub const NONE: u32 = 0;
    pub const NOT_SUPPORTED: u32 = 2;
    pub const EXCEPTION: u32 = 3;
}

/// `sbcs.sberror` values.
pub mod sberror {
    #![allow(missing_docs)]
    pub const NONE: u32 = 0;
    pub const BAD_ADDRESS: u32 = 2;
    pub const ALIGNMENT: u32 = 3;
    pub const SIZE: u32 = 4;
}

const DMCONTROL_HALTREQ: u32 = 1 << 31;
const DMCONTROL_RESUMEREQ: u32 = 1 << 30;
const DMCONTROL_HARTRESET: u32 = 1 << 29;
const DMCONTROL_ACKHAVERESET: u32 = 1 << 28;
const DMCONTROL_NDMRESET: u32 = 1 << 1;
const DMCONTROL_DMACTIVE: u32 = 1;

const SBCS_SBVERSION_1: u32 = 1 << 29;
const SBCS_READONADDR: u32 = 1 << 20;
const SBCS_ACCESS_SHIFT: u32 = 17;
const SBCS_AUTOINCREMENT: u32 = 1 << 16;
const SBCS_READONDATA: u32 = 1 << 15;
const SBCS_ERROR_SHIFT: u32 = 12;
/// sbasize 32, 8/16/32-bit accesses.
const SBCS_FIXED: u32 = SBCS_SBVERSION_1 | (32 << 5) | 0b111;
const SBCS_WRITABLE: u32 =
    SBCS_READONADDR | (7 << SBCS_ACCESS_SHIFT) | SBCS_AUTOINCREMENT | SBCS_READONDATA;

/// What the Debug Module needs from the hart and its platform. Every call happens at an
/// instruction boundary (the hart is not executing meanwhile).
pub trait Hart {
    /// In debug mode.
    fn halted(&self) -> bool;
    /// Enters debug mode now (cause haltreq).
    fn halt(&mut self);
    /// Leaves debug mode (single-stepping when `dcsr.step` is set).
    fn resume(&mut self);
    /// Resets the hart only (`dmcontrol.hartreset`); RAM keeps its contents.
    fn hart_reset(&mut self);
    /// Resets the hart and the platform's peripherals, not the Debug Module
    /// (`dmcontrol.ndmreset`); RAM keeps its contents.
    fn system_reset(&mut self);
    /// Access Register read, regno as in the spec; `None` if it does not exist.
    fn reg_read(&self, regno: u16) -> Option<u32>;
    /// Access Register write; `None` if it does not exist or is read-only.
    fn reg_write(&mut self, regno: u16, value: u32) -> Option<()>;
    /// System bus read of `size` bytes (1, 2, 4) at an aligned address.
    fn sys_read(&mut self, addr: u32, size: u8) -> Result<u32, Fault>;
    /// System bus write.
    fn sys_write(&mut self, addr: u32, size: u8, value: u32) -> Result<(), Fault>;
}

impl<B: Bus> Hart for Cpu<B> {
    fn halted(&self) -> bool {
        self.is_halted()
    }
    fn halt(&mut self) {
        self.request_halt();
    }
    fn resume(&mut self) {
        Cpu::resume(self);
    }
    fn hart_reset(&mut self) {
        self.reset();
    }
    fn system_reset(&mut self) {
        self.reset();
    }
    fn reg_read(&self, regno: u16) -> Option<u32> {
        self.debug_reg_read(regno)
    }
    fn reg_write(&mut self, regno: u16, value: u32) -> Option<()> {
        self.debug_reg_write(regno, value)
    }
    fn sys_read(&mut self, addr: u32, size: u8) -> Result<u32, Fault> {
        Cpu::sys_read(self, addr, size)
    }
    fn sys_write(&mut self, addr: u32, size: u8, value: u32) -> Result<(), Fault> {
        Cpu::sys_write(self, addr, size, value)
    }
}

/// The Debug Module's registers. One hart (`hartsel` is hardwired to 0, so probes find
/// HARTSELLEN 0), `datacount` 1, `progbufsize` 0, abstract commands complete at once (never
/// busy), System Bus Access version 1 with 32-bit addresses and 8/16/32-bit accesses.
#[derive(Debug, Default)]
pub struct Dm {
    active: bool,
    haltreq: bool,
    hartreset: bool,
    ndmreset: bool,
    resumeack: bool,
    havereset: bool,
    data0: u32,
    command: u32,
    cmderr: u32,
    autoexec_data0: bool,
    sbcs: u32,
    sberror: u32,
    sbaddress: u32,
    sbdata: u32,
}

impl Dm {
    /// A Debug Module in reset (`dmactive` 0).
    pub fn new() -> Dm {
        Dm::default()
    }

    /// The platform reset the hart by other means (a function reset): `havereset` is set.
    pub fn note_reset(&mut self) {
        self.havereset = true;
        self.resumeack = false;
    }

    /// One DMI read.
    pub fn read(&mut self, addr: u32, hart: &mut dyn Hart) -> u32 {
        if !self.active && addr != reg::DMCONTROL && addr != reg::DMSTATUS {
            return 0;
        }
        match addr {
            reg::DATA0 => {
                let v = self.data0;
                if self.autoexec_data0 {
                    self.execute(hart);
                }
                v
            }
            reg::DMCONTROL => {
                u32::from(self.haltreq) << 31
                    | u32::from(self.hartreset) << 29
                    | u32::from(self.ndmreset) << 1
                    | u32::from(self.active)
            }
            reg::DMSTATUS => self.dmstatus(hart),
            reg::HARTINFO => 0,
            // progbufsize 0, busy 0, datacount 1.
            reg::ABSTRACTCS => self.cmderr << 8 | 1,
            reg::COMMAND => 0,
            reg::ABSTRACTAUTO => u32::from(self.autoexec_data0),
            reg::SBCS => self.sbcs | SBCS_FIXED | self.sberror << SBCS_ERROR_SHIFT,
            reg::SBADDRESS0 => self.sbaddress,
            reg::SBDATA0 => {
                let v = self.sbdata;
                if self.sbcs & SBCS_READONDATA != 0 && self.sb_ok() {
                    self.sb_read(hart);
                }
                v
            }
            reg::HALTSUM0 => u32::from(hart.halted()),
            _ => 0,
        }
    }

    /// One DMI write.
    pub fn write(&mut self, addr: u32, value: u32, hart: &mut dyn Hart) {
        if addr == reg::DMCONTROL {
            self.write_dmcontrol(value, hart);
            return;
        }
        if !self.active {
            return;
        }
        match addr {
            reg::DATA0 => {
                self.data0 = value;
                if self.autoexec_data0 {
                    self.execute(hart);
                }
            }
            reg::ABSTRACTCS => self.cmderr &= !((value >> 8) & 7),
            // Ignored while cmderr is set.
            reg::COMMAND if self.cmderr == cmderr::NONE => {
                self.command = value;
                self.execute(hart);
            }
            reg::ABSTRACTAUTO => self.autoexec_data0 = value & 1 != 0,
            reg::SBCS => {
                self.sbcs = value & SBCS_WRITABLE;
                // sbbusyerror never sets: accesses complete at once.
                self.sberror &= !((value >> SBCS_ERROR_SHIFT) & 7);
            }
            reg::SBADDRESS0 => {
                self.sbaddress = value;
                if self.sbcs & SBCS_READONADDR != 0 && self.sb_ok() {
                    self.sb_read(hart);
                }
            }
            reg::SBDATA0 => {
                self.sbdata = value;
                if self.sb_ok() {
                    self.sb_write(hart);
                }
            }
            _ => {}
        }
    }

    fn write_dmcontrol(&mut self, v: u32, hart: &mut dyn Hart) {
        if v & DMCONTROL_DMACTIVE == 0 {
            // The DM resets itself; the hart keeps running or halted as it is.
            let havereset = self.havereset;
            *self = Dm::default();
            self.havereset = havereset;
            return;
        }
        self.active = true;
        self.haltreq = v & DMCONTROL_HALTREQ != 0;
        if v & DMCONTROL_ACKHAVERESET != 0 {
            self.havereset = false;
        }
        let hartreset = v & DMCONTROL_HARTRESET != 0;
        let ndmreset = v & DMCONTROL_NDMRESET != 0;
        let was_held = self.hartreset || self.ndmreset;
        if ndmreset && !self.ndmreset {
            hart.system_reset();
        } else if hartreset && !self.hartreset {
            hart.hart_reset();
        }
        if (hartreset && !self.hartreset) || (ndmreset && !self.ndmreset) {
            self.havereset = true;
            self.resumeack = false;
            // Held in reset while the bit stays set: parked in debug mode, shown as unavailable.
            hart.halt();
        }
        self.hartreset = hartreset;
        self.ndmreset = ndmreset;
        let held = hartreset || ndmreset;
        if was_held && !held && !self.haltreq {
            // Out of reset without a halt request: run from the reset vector.
            hart.resume();
        }
        if held {
            return;
        }
        if self.haltreq {
            hart.halt();
        } else if v & DMCONTROL_RESUMEREQ != 0 {
            self.resumeack = false;
            if hart.halted() {
                hart.resume();
            }
            self.resumeack = true;
        }
    }

    fn dmstatus(&self, hart: &dyn Hart) -> u32 {
        // version 2 (0.13), authenticated.
        let mut s = 2 | 1 << 7;
        if self.havereset {
            s |= 3 << 18;
        }
        if self.resumeack {
            s |= 3 << 16;
        }
        if self.hartreset || self.ndmreset {
            s |= 3 << 12; // unavailable while held in reset
        } else if hart.halted() {
            s |= 3 << 8;
        } else {
            s |= 3 << 10;
        }
        s
    }

    /// Runs `command` (Access Register only).
    fn execute(&mut self, hart: &mut dyn Hart) {
        if self.cmderr != cmderr::NONE {
            return;
        }
        let c = self.command;
        let cmdtype = c >> 24;
        let aarsize = (c >> 20) & 7;
        let postincrement = c & 1 << 19 != 0;
        let postexec = c & 1 << 18 != 0;
        let transfer = c & 1 << 17 != 0;
        let write = c & 1 << 16 != 0;
        let regno = (c & 0xffff) as u16;
        if cmdtype != 0 || postexec || (transfer && aarsize != 2) {
            self.cmderr = cmderr::NOT_SUPPORTED;
            return;
        }
        if transfer {
            let ok = if write {
                hart.reg_write(regno, self.data0).is_some()
            } else {
                match hart.reg_read(regno) {
                    Some(v) => {
                        self.data0 = v;
                        true
                    }
                    None => false,
                }
            };
            if !ok {
                self.cmderr = cmderr::EXCEPTION;
                return;
            }
        }
        if postincrement {
            self.command = (c & !0xffff) | u32::from(regno.wrapping_add(1));
        }
    }

    fn sb_ok(&self) -> bool {
        self.sberror == sberror::NONE
    }

    fn sb_size(&mut self) -> Option<u8> {
        match (self.sbcs >> SBCS_ACCESS_SHIFT) & 7 {
            0 => Some(1),
            1 => Some(2),
            2 => Some(4),
            _ => {
                self.sberror = sberror::SIZE;
                None
            }
        }
    }

    fn sb_check(&mut self, size: u8) -> bool {
        if self.sbaddress & (u32::from(size) - 1) != 0 {
            self.sberror = sberror::ALIGNMENT;
            return false;
        }
        true
    }

    fn sb_done(&mut self, size: u8) {
        if self.sbcs & SBCS_AUTOINCREMENT != 0 {
            self.sbaddress = self.sbaddress.wrapping_add(u32::from(size));
        }
    }

    fn sb_read(&mut self, hart: &mut dyn Hart) {
        let Some(size) = self.sb_size() else { return };
        if !self.sb_check(size) {
            return;
        }
        match hart.sys_read(self.sbaddress, size) {
            Ok(v) => {
                self.sbdata = v;
                self.sb_done(size);
            }
            Err(Fault) => self.sberror = sberror::BAD_ADDRESS,
        }
    }

    fn sb_write(&mut self, hart: &mut dyn Hart) {
        let Some(size) = self.sb_size() else { return };
        if !self.sb_check(size) {
            return;
        }
        match hart.sys_write(self.sbaddress, size, self.sbdata) {
            Ok(()) => self.sb_done(size),
            Err(Fault) => self.sberror = sberror::BAD_ADDRESS,
        }
    }
}
