//! A strict ELF32 little-endian RISC-V executable parser: only what loading needs.
//!
//! Every field is checked; hostile bytes give an [`ElfError`], never a panic.

use core::fmt;

/// Why an ELF image was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than the structure being read.
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// Not `\x7fELF`.
    BadMagic,
    /// Not ELFCLASS32, little-endian, version 1.
    BadIdent,
    /// Not an executable (`ET_EXEC`) for RISC-V (`EM_RISCV`).
    NotRiscvExec,
    /// Program header entry size other than 32 or too many entries.
    BadProgramHeaders,
    /// A segment with `filesz > memsz`, or whose file range or address range overflows.
    BadSegment {
        /// Index of the program header.
        index: usize,
    },
    /// No loadable segment.
    NoSegments,
    /// The entry point is not 2-byte aligned.
    BadEntry(u32),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::Truncated { what } => write!(f, "ELF truncated while reading {what}"),
            ElfError::BadMagic => write!(f, "not an ELF file"),
            ElfError::BadIdent => write!(f, "not a 32-bit little-endian ELF version 1"),
            ElfError::NotRiscvExec => write!(f, "not a RISC-V executable"),
            ElfError::BadProgramHeaders => write!(f, "bad program header table"),
            ElfError::BadSegment { index } => write!(f, "bad segment (program header {index})"),
            ElfError::NoSegments => write!(f, "no loadable segment"),
            ElfError::BadEntry(e) => write!(f, "misaligned entry point {e:#x}"),
        }
    }
}

impl std::error::Error for ElfError {}

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Physical address (`p_paddr`).
    pub paddr: u32,
    /// Offset of the file bytes.
    pub offset: usize,
    /// Bytes in the file (`offset + filesz` is inside the file).
    pub filesz: u32,
    /// Bytes in memory (`>= filesz`; `paddr + memsz` does not pass 4 GiB).
    pub memsz: u32,
}

/// What loading needs from an executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Entry point.
    pub entry: u32,
    /// Non-empty loadable segments.
    pub segments: Vec<Segment>,
}

const MAX_PHDRS: usize = 64;

fn u16_at(b: &[u8], off: usize, what: &'static str) -> Result<u16, ElfError> {
    let s = b.get(off..off.checked_add(2).ok_or(ElfError::Truncated { what })?);
    let s = s.ok_or(ElfError::Truncated { what })?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize, what: &'static str) -> Result<u32, ElfError> {
    let s = b.get(off..off.checked_add(4).ok_or(ElfError::Truncated { what })?);
    let s = s.ok_or(ElfError::Truncated { what })?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses an ELF32 RISC-V executable.
pub fn parse(b: &[u8]) -> Result<Image, ElfError> {
    if b.len() < 52 {
        return Err(ElfError::Truncated { what: "ELF header" });
    }
    if b[0..4] != *b"\x7fELF" {
        return Err(ElfError::BadMagic);
    }
    if b[4] != 1 || b[5] != 1 || b[6] != 1 {
        return Err(ElfError::BadIdent);
    }
    let e_type = u16_at(b, 16, "e_type")?;
    let e_machine = u16_at(b, 18, "e_machine")?;
    if e_type != 2 || e_machine != 243 {
        return Err(ElfError::NotRiscvExec);
    }
    let entry = u32_at(b, 24, "e_entry")?;
    let phoff = u32_at(b, 28, "e_phoff")? as usize;
    let phentsize = usize::from(u16_at(b, 42, "e_phentsize")?);
    let phnum = usize::from(u16_at(b, 44, "e_phnum")?);
    if phnum > MAX_PHDRS || (phnum > 0 && phentsize != 32) {
        return Err(ElfError::BadProgramHeaders);
    }
    let mut segments = Vec::new();
    for index in 0..phnum {
        let ph = phoff
            .checked_add(index * 32)
            .ok_or(ElfError::BadProgramHeaders)?;
        let what = "program header";
        if ph.checked_add(32).is_none_or(|end| end > b.len()) {
            return Err(ElfError::Truncated { what });
        }
        let p_type = u32_at(b, ph, what)?;
        if p_type != 1 {
            continue; // only PT_LOAD matters
        }
        let offset = u32_at(b, ph + 4, what)? as usize;
        let paddr = u32_at(b, ph + 12, what)?;
        let filesz = u32_at(b, ph + 16, what)?;
        let memsz = u32_at(b, ph + 20, what)?;
        let bad = ElfError::BadSegment { index };
        if filesz > memsz {
            return Err(bad);
        }
        if offset
            .checked_add(filesz as usize)
            .is_none_or(|end| end > b.len())
        {
            return Err(bad);
        }
        if u64::from(paddr) + u64::from(memsz) > 1 << 32 {
            return Err(bad);
        }
        if memsz == 0 {
            continue;
        }
        segments.push(Segment {
            paddr,
            offset,
            filesz,
            memsz,
        });
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    if entry & 1 != 0 {
        return Err(ElfError::BadEntry(entry));
    }
    Ok(Image { entry, segments })
}
