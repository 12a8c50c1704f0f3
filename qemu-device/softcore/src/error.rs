//! The crate's error type.

use core::fmt;

use crate::cpu::RamRegion;
use crate::elf::ElfError;

/// Errors of the soft core's setup API (running code never fails: it traps).
#[derive(Debug)]
pub enum Error {
    /// A RAM region that is empty, misaligned, wraps past 4 GiB or overlaps another.
    BadRegion(RamRegion),
    /// The configuration has no RAM region.
    NoRam,
    /// A RAM access by the host outside every RAM region.
    OutsideRam {
        /// The first address.
        addr: u32,
    },
    /// An ELF segment that does not fit inside one RAM region.
    SegmentOutsideRam {
        /// Its physical address.
        paddr: u32,
        /// Its size in memory.
        memsz: u32,
    },
    /// The ELF image is malformed.
    Elf(ElfError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRegion(r) => write!(
                f,
                "bad RAM region base {:#x} size {:#x}: empty, misaligned, wrapping or overlapping",
                r.base, r.size
            ),
            Error::NoRam => write!(f, "no RAM region configured"),
            Error::OutsideRam { addr } => {
                write!(f, "range at {addr:#x} is not inside one RAM region")
            }
            Error::SegmentOutsideRam { paddr, memsz } => write!(
                f,
                "ELF segment at {paddr:#x} ({memsz:#x} bytes) is not inside one RAM region"
            ),
            Error::Elf(_) => write!(f, "bad ELF image"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Elf(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ElfError> for Error {
    fn from(e: ElfError) -> Self {
        Error::Elf(e)
    }
}
