//! PCI configuration space of the card (docs/card-spec.md, "PCI identity").
//!
//! A type-0 header with our IDs, BAR0 (16 KiB) and BAR2 (64 KiB) as 32-bit non-prefetchable
//! memory BARs, interrupt pin INTA, and two capabilities: MSI-X with 16 vectors (table and PBA
//! in BAR0) and PCI Express (an endpoint with function-level reset, so a guest's vfio-pci can
//! reset the card: the FLR bit of DevCtl is reported to the caller, which resets the card).
//! The space is 4 KiB with no extended capabilities. Writes go through a per-byte write mask, so
//! BAR sizing (write all-ones, read back) works as on hardware. PCI_STATUS.Interrupt is not
//! stored: the caller ORs in the INTx level.

use preba_protocol::regs;

pub const CONFIG_SIZE: usize = 4096;

pub const VENDOR_ID: usize = 0x00;
pub const DEVICE_ID: usize = 0x02;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION: usize = 0x08;
pub const CLASS_PROG: usize = 0x09;
pub const HEADER_TYPE: usize = 0x0e;
pub const BAR0: usize = 0x10;
pub const BAR2: usize = 0x18;
pub const SUBSYS_VENDOR: usize = 0x2c;
pub const SUBSYS_ID: usize = 0x2e;
pub const CAP_PTR: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;
/// The MSI-X capability.
pub const MSIX_CAP: usize = 0x40;
/// The PCI Express capability.
pub const EXP_CAP: usize = 0x50;
/// DevCap.FLR (function-level reset supported) and DevCtl.BCR_FLR (initiate it).
pub const EXP_DEVCAP_FLR: u32 = 1 << 28;
pub const EXP_DEVCTL_BCR_FLR: u16 = 1 << 15;
pub const CAP_ID_EXP: u8 = 0x10;

pub const CAP_ID_MSIX: u8 = 0x11;
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
pub const STATUS_INTERRUPT: u16 = 1 << 3;
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// Command bits a driver may set: I/O, memory, bus master, parity, SERR, INTx disable.
const COMMAND_WRITABLE: u16 = 0x0001 | 0x0002 | 0x0004 | 0x0040 | 0x0100 | COMMAND_INTX_DISABLE;

/// The configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    wmask: [u8; CONFIG_SIZE],
}

impl Default for ConfigSpace {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigSpace {
    /// The reset state.
    pub fn new() -> ConfigSpace {
        let mut c = ConfigSpace {
            bytes: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
        };
        c.put16(VENDOR_ID, regs::PCI_VENDOR_ID);
        c.put16(DEVICE_ID, regs::PCI_DEVICE_ID);
        c.put16(STATUS, STATUS_CAP_LIST);
        c.bytes[REVISION] = regs::PCI_REVISION;
        let class = regs::PCI_CLASS_CODE.to_le_bytes();
        c.bytes[CLASS_PROG..CLASS_PROG + 3].copy_from_slice(&class[..3]);
        c.bytes[HEADER_TYPE] = 0;
        c.put16(SUBSYS_VENDOR, regs::PCI_VENDOR_ID);
        c.put16(SUBSYS_ID, regs::PCI_DEVICE_ID);
        c.bytes[CAP_PTR] = MSIX_CAP as u8;
        c.bytes[INTERRUPT_PIN] = 1; // INTA#
        c.wmask[INTERRUPT_LINE] = 0xff;
        c.wmask[COMMAND..COMMAND + 2].copy_from_slice(&COMMAND_WRITABLE.to_le_bytes());
        // BARs: 32-bit memory, non-prefetchable (type bits 0); the address bits above the size
        // are writable.
        for (off, size) in [(BAR0, regs::BAR0_SIZE), (BAR2, regs::BAR2_SIZE)] {
            let mask = !(size as u32 - 1) & !0xf;
            c.wmask[off..off + 4].copy_from_slice(&mask.to_le_bytes());
        }
        // MSI-X: id, next (none), message control (table size - 1; enable and function mask
        // writable), table offset | BIR 0, PBA offset | BIR 0.
        c.bytes[MSIX_CAP] = CAP_ID_MSIX;
        c.bytes[MSIX_CAP + 1] = EXP_CAP as u8;
        c.put16(MSIX_CAP + 2, regs::MSIX_VECTORS - 1);
        c.wmask[MSIX_CAP + 3] = 0xc0;
        c.put32(MSIX_CAP + 4, regs::MSIX_TABLE as u32);
        c.put32(MSIX_CAP + 8, regs::MSIX_PBA as u32);
        // PCI Express v2, endpoint; DevCap: 128-byte payload, role-based errors, FLR; link x1 at
        // 2.5 GT/s. DevCtl bits 0-14 writable; bit 15 (initiate FLR) reads 0.
        c.bytes[EXP_CAP] = CAP_ID_EXP;
        c.bytes[EXP_CAP + 1] = 0;
        c.put16(EXP_CAP + 2, 0x0002);
        c.put32(EXP_CAP + 4, EXP_DEVCAP_FLR | 1 << 15);
        c.wmask[EXP_CAP + 8] = 0xff;
        c.wmask[EXP_CAP + 9] = 0x7f;
        c.put32(EXP_CAP + 0xc, 0x11);
        c.put16(EXP_CAP + 0x12, 0x11);
        c.put32(EXP_CAP + 0x2c, 0x2);
        c.put16(EXP_CAP + 0x30, 0x1);
        c
    }

    fn put16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]])
    }

    #[cfg(test)]
    pub fn get32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.bytes[off..off + 4].try_into().expect("4 bytes"))
    }

    /// Reads `data.len()` bytes at `off` (the caller checked the range); `intx` is the INTx
    /// level, shown as PCI_STATUS.Interrupt.
    pub fn read(&self, off: usize, data: &mut [u8], intx: bool) {
        data.copy_from_slice(&self.bytes[off..off + data.len()]);
        if intx {
            let bit = STATUS_INTERRUPT.to_le_bytes()[0];
            if (off..off + data.len()).contains(&STATUS) {
                data[STATUS - off] |= bit;
            }
        }
    }

    /// Writes `data` at `off` through the write mask. Returns true when the write initiates a
    /// function-level reset (the caller resets the card and this space).
    pub fn write(&mut self, off: usize, data: &[u8]) -> bool {
        let flr_byte = EXP_CAP + 9;
        let flr = (off..off + data.len()).contains(&flr_byte)
            && data[flr_byte - off] & (EXP_DEVCTL_BCR_FLR >> 8) as u8 != 0;
        for (i, &b) in data.iter().enumerate() {
            let m = self.wmask[off + i];
            self.bytes[off + i] = (self.bytes[off + i] & !m) | (b & m);
        }
        flr
    }

    pub fn command(&self) -> u16 {
        self.get16(COMMAND)
    }

    #[cfg(test)]
    pub fn msix_control(&self) -> u16 {
        self.get16(MSIX_CAP + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_caps() {
        let c = ConfigSpace::new();
        assert_eq!(c.get16(VENDOR_ID), 0x1de5);
        assert_eq!(c.get16(DEVICE_ID), 0x0ba1);
        assert_eq!(c.get32(REVISION) >> 8, 0x12_00_00);
        assert_eq!(c.get32(REVISION) & 0xff, 1);
        assert_ne!(c.get16(STATUS) & STATUS_CAP_LIST, 0);
        let cap = c.bytes[CAP_PTR] as usize;
        assert_eq!(c.bytes[cap], CAP_ID_MSIX);
        assert_eq!(c.msix_control() & 0x7ff, 15);
        assert_eq!(c.get32(cap + 4), 0x2000);
        assert_eq!(c.get32(cap + 8), 0x3000);
        let exp = c.bytes[cap + 1] as usize;
        assert_eq!(c.bytes[exp], CAP_ID_EXP);
        assert_ne!(c.get32(exp + 4) & EXP_DEVCAP_FLR, 0);
        assert_eq!(c.bytes[exp + 1], 0);
    }

    #[test]
    fn flr_is_reported() {
        let mut c = ConfigSpace::new();
        assert!(!c.write(EXP_CAP + 8, &0x0010u16.to_le_bytes()));
        assert!(c.write(EXP_CAP + 8, &0x8010u16.to_le_bytes()));
        assert!(c.write(EXP_CAP + 9, &[0x80]));
        assert_eq!(c.get16(EXP_CAP + 8), 0x0010);
    }

    #[test]
    fn bar_sizing_and_masks() {
        let mut c = ConfigSpace::new();
        c.write(BAR0, &[0xff; 4]);
        assert_eq!(c.get32(BAR0), !(0x4000 - 1));
        c.write(BAR2, &[0xff; 4]);
        assert_eq!(c.get32(BAR2), !(0x1_0000 - 1));
        c.write(0x14, &[0xff; 4]);
        assert_eq!(c.get32(0x14), 0);
        c.write(VENDOR_ID, &[0; 4]);
        assert_eq!(c.get16(VENDOR_ID), 0x1de5);
        c.write(COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(c.command(), COMMAND_WRITABLE);
        c.write(MSIX_CAP + 2, &0xffffu16.to_le_bytes());
        assert_eq!(c.msix_control(), 0xc000 | 15);
        let mut s = [0; 2];
        c.read(STATUS, &mut s, true);
        assert_eq!(u16::from_le_bytes(s), STATUS_CAP_LIST | STATUS_INTERRUPT);
        c.read(STATUS, &mut s, false);
        assert_eq!(u16::from_le_bytes(s), STATUS_CAP_LIST);
    }
}
