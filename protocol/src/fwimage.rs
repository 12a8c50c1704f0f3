//! Firmware images in the card's SPI flash: the A/B slot layout, slot headers, the boot
//! record, boot outcomes, and the flashable form of a firmware ELF (its loadable segments
//! only). Shared by the firmware (writes slots), the card model's boot ROM (picks one) and
//! the host (packs and flashes). docs/card-spec.md, "Firmware images and boot".

use crate::WireError;

/// Boot record: sector 0 of the flash.
pub const BOOT_RECORD: u32 = 0;
/// Slot bases (the header's sector; the image follows at `+ IMAGE_OFFSET`).
pub const SLOT_BASE: [u32; 2] = [0x1_0000, 0x6_0000];
/// Bytes of one slot (header sector + the largest image).
pub const SLOT_SIZE: u32 = 0x5_0000;
/// Image bytes start this far into a slot.
pub const IMAGE_OFFSET: u32 = 0x1000;
/// Largest packed image (also the card's FIRMWARE_DOWNLOAD staging area).
pub const IMAGE_MAX: u32 = 0x4_0000;
/// Smallest flash that holds both slots.
pub const FLASH_MIN: u32 = 0x10_0000;
/// Failed boots of a not yet confirmed slot before the boot ROM marks it bad.
pub const BOOT_ATTEMPTS: u32 = 2;

/// Slot header magic "PFW2".
pub const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"PFW2");
/// Boot record magic "PBR1".
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"PBR1");
/// Bytes of a slot header.
pub const HEADER_SIZE: usize = 48;
/// Offset of the attempts word in the header (bits cleared one per boot, no erase).
pub const HEADER_ATTEMPTS: u32 = 32;
/// Offset of the state word (all ones: new; `STATE_GOOD`: came up once; 0: bad).
pub const HEADER_STATE: u32 = 36;
/// State word of a slot that reached CSTS.RDY once.
pub const STATE_GOOD: u32 = 0x0000_FFFF;
/// State word of a slot the boot ROM gave up on.
pub const STATE_BAD: u32 = 0;
/// Bytes of the boot record.
pub const RECORD_SIZE: usize = 16;

/// The 16 bytes that precede the build id (u64 little-endian) inside a firmware image, so
/// the host reads an ELF's build id without symbols.
pub const BUILD_ID_MAGIC: [u8; 16] = *b"preba-build-id:\0";

/// Slot numbers as IDENTIFY and INFO_BOOT report them.
pub const SLOT_A: u8 = 0;
pub const SLOT_B: u8 = 1;
/// No slot: the boot ROM's recovery image runs (or, for a failed slot: none failed).
pub const SLOT_NONE: u8 = 0xFF;

/// Slot name for messages.
pub const fn slot_name(slot: u8) -> &'static str {
    match slot {
        SLOT_A => "A",
        SLOT_B => "B",
        _ => "none",
    }
}

/// How the boot ROM chose the image that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BootOutcome {
    /// The slot the boot record names.
    Active = 0,
    /// The active slot stopped during init (trap, watchdog) `BOOT_ATTEMPTS` times: marked bad,
    /// the other slot booted.
    RolledBackCrash = 1,
    /// The active slot did not set CSTS.RDY within the deadline after CC.EN `BOOT_ATTEMPTS`
    /// times: marked bad, the other slot booted.
    RolledBackTimeout = 2,
    /// The active slot was marked bad by an earlier boot: the other slot booted.
    ActiveBad = 3,
    /// The active slot's header or CRC is invalid: the other slot booted.
    ActiveInvalid = 4,
    /// No bootable slot: the boot ROM's recovery image runs.
    Recovery = 5,
}

impl BootOutcome {
    pub const fn from_u8(v: u8) -> Option<BootOutcome> {
        match v {
            0 => Some(BootOutcome::Active),
            1 => Some(BootOutcome::RolledBackCrash),
            2 => Some(BootOutcome::RolledBackTimeout),
            3 => Some(BootOutcome::ActiveBad),
            4 => Some(BootOutcome::ActiveInvalid),
            5 => Some(BootOutcome::Recovery),
            _ => None,
        }
    }
    /// One phrase for `preba card info` and error messages.
    pub const fn describe(self) -> &'static str {
        match self {
            BootOutcome::Active => "booted the active slot",
            BootOutcome::RolledBackCrash => {
                "rolled back: the active slot crashed during init and was marked bad"
            }
            BootOutcome::RolledBackTimeout => {
                "rolled back: the active slot never became ready after CC.EN and was marked bad"
            }
            BootOutcome::ActiveBad => "rolled back: the active slot is marked bad",
            BootOutcome::ActiveInvalid => "rolled back: the active slot's header or CRC is invalid",
            BootOutcome::Recovery => "no bootable slot: running the recovery image",
        }
    }
}

/// What a slot's header says (the CRC over the image is checked separately).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    /// No header (erased or foreign bytes).
    Empty = 0,
    /// A header whose CRC words disagree or whose length is out of range.
    Invalid = 1,
    /// Written, not yet booted to CSTS.RDY.
    New = 2,
    /// Booted to CSTS.RDY at least once.
    Good = 3,
    /// The boot ROM gave up on it.
    Bad = 4,
}

impl SlotState {
    pub const fn from_u8(v: u8) -> Option<SlotState> {
        match v {
            0 => Some(SlotState::Empty),
            1 => Some(SlotState::Invalid),
            2 => Some(SlotState::New),
            3 => Some(SlotState::Good),
            4 => Some(SlotState::Bad),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            SlotState::Empty => "empty",
            SlotState::Invalid => "invalid",
            SlotState::New => "new",
            SlotState::Good => "good",
            SlotState::Bad => "bad",
        }
    }
}

/// A slot header. Layout (little-endian): magic @0, image length @4, CRC-32 @8, !CRC-32 @12,
/// build id u64 @16, protocol version (major << 16 | minor) @24, reserved @28 (all ones),
/// attempts @32, state @36, reserved @40..48 (all ones). Bytes 0..32 are programmed once;
/// attempts and state only lose bits, so the boot ROM updates them without an erase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHeader {
    pub len: u32,
    pub crc: u32,
    pub build_id: u64,
    pub version: u32,
    /// Raw attempts word: one cleared bit per boot attempt.
    pub attempts_word: u32,
    /// Raw state word.
    pub state_word: u32,
}

impl SlotHeader {
    /// A fresh header for an image (no attempts, state new).
    pub const fn new(len: u32, crc: u32, build_id: u64, version: u32) -> SlotHeader {
        SlotHeader {
            len,
            crc,
            build_id,
            version,
            attempts_word: u32::MAX,
            state_word: u32::MAX,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0xFFu8; HEADER_SIZE];
        b[0..4].copy_from_slice(&SLOT_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..12].copy_from_slice(&self.crc.to_le_bytes());
        b[12..16].copy_from_slice(&(!self.crc).to_le_bytes());
        b[16..24].copy_from_slice(&self.build_id.to_le_bytes());
        b[24..28].copy_from_slice(&self.version.to_le_bytes());
        b[32..36].copy_from_slice(&self.attempts_word.to_le_bytes());
        b[36..40].copy_from_slice(&self.state_word.to_le_bytes());
        b
    }

    /// The header, or the state that explains why there is none.
    pub fn parse(b: &[u8; HEADER_SIZE]) -> Result<SlotHeader, SlotState> {
        let w = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if w(0) != SLOT_MAGIC {
            return Err(SlotState::Empty);
        }
        let (len, crc) = (w(4), w(8));
        if crc != !w(12) || len == 0 || len > IMAGE_MAX {
            return Err(SlotState::Invalid);
        }
        Ok(SlotHeader {
            len,
            crc,
            build_id: u64::from(w(16)) | u64::from(w(20)) << 32,
            version: w(24),
            attempts_word: w(32),
            state_word: w(36),
        })
    }

    /// Boot attempts not yet confirmed by CSTS.RDY.
    pub const fn attempts(&self) -> u32 {
        self.attempts_word.count_zeros()
    }

    /// The attempts word after one more attempt.
    pub const fn next_attempts_word(&self) -> u32 {
        self.attempts_word & !(1u32 << (self.attempts_word.count_zeros() & 31))
    }

    pub const fn state(&self) -> SlotState {
        match self.state_word {
            u32::MAX => SlotState::New,
            STATE_GOOD => SlotState::Good,
            _ => SlotState::Bad,
        }
    }
}

/// The boot record: magic @0, active slot @4, !active slot @8, sequence @12.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootRecord {
    pub active: u8,
    /// Bumped by every activation (for the curious; the boot ROM ignores it).
    pub seq: u32,
}

impl BootRecord {
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&u32::from(self.active).to_le_bytes());
        b[8..12].copy_from_slice(&(!u32::from(self.active)).to_le_bytes());
        b[12..16].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    /// None when the record is erased or damaged (the boot ROM then takes slot A).
    pub fn parse(b: &[u8; RECORD_SIZE]) -> Option<BootRecord> {
        let w = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let active = w(4);
        (w(0) == RECORD_MAGIC && active <= 1 && w(8) == !active).then_some(BootRecord {
            active: active as u8,
            seq: w(12),
        })
    }
}

/// INFO_BOOT, the boot ROM's report to the firmware: running slot bits 0-7, outcome bits
/// 8-15, the slot that failed bits 16-23 (`SLOT_NONE`: none), the boot record's slot bits 24-31.
pub const fn info_boot(running: u8, outcome: BootOutcome, failed: u8, active: u8) -> u32 {
    running as u32 | (outcome as u32) << 8 | (failed as u32) << 16 | (active as u32) << 24
}

/// The build id of a firmware ELF or packed image: the u64 after [`BUILD_ID_MAGIC`]. None
/// when the magic is absent or appears more than once.
pub fn build_id(bytes: &[u8]) -> Option<u64> {
    let m = BUILD_ID_MAGIC.len();
    let mut found = None;
    let mut i = 0;
    while i + m + 8 <= bytes.len() {
        if bytes[i] == BUILD_ID_MAGIC[0] && bytes[i..i + m] == BUILD_ID_MAGIC {
            if found.is_some() {
                return None;
            }
            let mut id = [0u8; 8];
            id.copy_from_slice(&bytes[i + m..i + m + 8]);
            found = Some(u64::from_le_bytes(id));
            i += m;
        } else {
            i += 1;
        }
    }
    found
}

const ELF_HEADER: usize = 52;
const PHDR: usize = 32;
const MAX_PHDRS: usize = 16;

fn rd32(b: &[u8], o: usize) -> Result<u32, WireError> {
    let s = b.get(o..o + 4).ok_or(WireError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn rd16(b: &[u8], o: usize) -> Result<u16, WireError> {
    let s = b.get(o..o + 2).ok_or(WireError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

/// Packs a firmware ELF (ELF32 little-endian RISC-V executable) into its flashable form: the
/// ELF header, the PT_LOAD program headers and their file bytes, nothing else (no sections,
/// no debug info). Returns the packed length written to `out`. The result is itself an ELF
/// the boot ROM loads, and packing it again gives the same bytes.
pub fn pack(elf: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
    if elf.len() < ELF_HEADER || elf[0..4] != *b"\x7fELF" {
        return Err(WireError::InvalidField { field: "ELF magic" });
    }
    if elf[4] != 1 || elf[5] != 1 || rd16(elf, 18)? != 243 || rd16(elf, 16)? != 2 {
        return Err(WireError::InvalidField {
            field: "ELF class/endianness/machine (want ELF32 LE RISC-V executable)",
        });
    }
    let phoff = rd32(elf, 28)? as usize;
    let phentsize = usize::from(rd16(elf, 42)?);
    let phnum = usize::from(rd16(elf, 44)?);
    if phentsize != PHDR || phnum == 0 || phnum > 64 {
        return Err(WireError::InvalidField {
            field: "ELF program headers",
        });
    }
    let mut loads = [(0usize, 0usize); MAX_PHDRS];
    let mut n = 0;
    for i in 0..phnum {
        let ph = phoff
            .checked_add(i * PHDR)
            .filter(|&p| p.checked_add(PHDR).is_some_and(|e| e <= elf.len()))
            .ok_or(WireError::Truncated)?;
        if rd32(elf, ph)? != 1 {
            continue;
        }
        let (off, filesz, memsz) = (
            rd32(elf, ph + 4)? as usize,
            rd32(elf, ph + 16)? as usize,
            rd32(elf, ph + 20)?,
        );
        if filesz == 0 && memsz == 0 {
            continue;
        }
        if off.checked_add(filesz).is_none_or(|e| e > elf.len()) {
            return Err(WireError::InvalidField {
                field: "ELF segment outside the file",
            });
        }
        if n == MAX_PHDRS {
            return Err(WireError::TooLarge {
                field: "ELF loadable segments",
            });
        }
        loads[n] = (ph, filesz);
        n += 1;
    }
    if n == 0 {
        return Err(WireError::InvalidField {
            field: "ELF has no loadable segment",
        });
    }
    let data_start = ELF_HEADER + n * PHDR;
    let mut total = data_start;
    for &(_, filesz) in &loads[..n] {
        total = (total + 3) & !3;
        total += filesz;
    }
    if total > out.len() || total > IMAGE_MAX as usize {
        return Err(WireError::TooLarge {
            field: "packed firmware image",
        });
    }
    out[..total].fill(0);
    out[..ELF_HEADER].copy_from_slice(&elf[..ELF_HEADER]);
    out[28..32].copy_from_slice(&(ELF_HEADER as u32).to_le_bytes()); // e_phoff
    out[32..36].copy_from_slice(&0u32.to_le_bytes()); // e_shoff
    out[46..48].copy_from_slice(&0u16.to_le_bytes()); // e_shentsize
    out[44..46].copy_from_slice(&(n as u16).to_le_bytes()); // e_phnum
    out[48..50].copy_from_slice(&0u16.to_le_bytes()); // e_shnum
    out[50..52].copy_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    let mut at = data_start;
    for (k, &(ph, filesz)) in loads[..n].iter().enumerate() {
        at = (at + 3) & !3;
        let dst = ELF_HEADER + k * PHDR;
        out[dst..dst + PHDR].copy_from_slice(&elf[ph..ph + PHDR]);
        out[dst + 4..dst + 8].copy_from_slice(&(at as u32).to_le_bytes());
        let src = rd32(elf, ph + 4)? as usize;
        out[at..at + filesz].copy_from_slice(&elf[src..src + filesz]);
        at += filesz;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_attempts() {
        let h = SlotHeader::new(1000, 0xdead_beef, 42, 0x1_0001);
        let b = h.encode();
        let p = SlotHeader::parse(&b).expect("valid");
        assert_eq!(p, h);
        assert_eq!(p.attempts(), 0);
        assert_eq!(p.state(), SlotState::New);
        let mut q = p;
        q.attempts_word = q.next_attempts_word();
        q.attempts_word = q.next_attempts_word();
        assert_eq!(q.attempts(), 2);
        // Only bits go from 1 to 0: NOR flash can program it in place.
        assert_eq!(q.attempts_word & p.attempts_word, q.attempts_word);
        let mut bad = b;
        bad[12] ^= 1;
        assert_eq!(SlotHeader::parse(&bad), Err(SlotState::Invalid));
        assert_eq!(
            SlotHeader::parse(&[0xFF; HEADER_SIZE]),
            Err(SlotState::Empty)
        );
        q.state_word = STATE_GOOD;
        assert_eq!(q.state(), SlotState::Good);
        q.state_word = STATE_BAD;
        assert_eq!(q.state(), SlotState::Bad);
    }

    #[test]
    fn record_round_trip() {
        let r = BootRecord { active: 1, seq: 7 };
        assert_eq!(BootRecord::parse(&r.encode()), Some(r));
        assert_eq!(BootRecord::parse(&[0xFF; RECORD_SIZE]), None);
        let mut b = r.encode();
        b[8] ^= 1;
        assert_eq!(BootRecord::parse(&b), None);
    }

    #[test]
    fn build_id_is_found_once() {
        let mut v = [0u8; 64];
        v[10..26].copy_from_slice(&BUILD_ID_MAGIC);
        v[26..34].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(build_id(&v), Some(0x1122_3344_5566_7788));
        v[40..56].copy_from_slice(&BUILD_ID_MAGIC);
        assert_eq!(build_id(&v), None, "two ids: ambiguous");
        assert_eq!(build_id(&[0u8; 8]), None);
    }

    fn tiny_elf() -> [u8; 200] {
        let mut e = [0u8; 200];
        e[0..4].copy_from_slice(b"\x7fELF");
        e[4] = 1;
        e[5] = 1;
        e[6] = 1;
        e[16] = 2;
        e[18] = 243;
        e[24..28].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        e[28..32].copy_from_slice(&52u32.to_le_bytes());
        e[32..36].copy_from_slice(&150u32.to_le_bytes()); // sections: dropped
        e[42] = 32;
        e[44] = 2;
        // PT_LOAD of 8 bytes at file offset 120, and a PT_NOTE.
        e[52..56].copy_from_slice(&1u32.to_le_bytes());
        e[56..60].copy_from_slice(&120u32.to_le_bytes());
        e[64..68].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        e[68..72].copy_from_slice(&8u32.to_le_bytes());
        e[72..76].copy_from_slice(&16u32.to_le_bytes());
        e[84..88].copy_from_slice(&4u32.to_le_bytes());
        e[120..128].copy_from_slice(b"ABCDEFGH");
        e
    }

    #[test]
    fn pack_keeps_loadable_bytes_only_and_is_idempotent() {
        let e = tiny_elf();
        let mut out = [0u8; 256];
        let n = pack(&e, &mut out).expect("packs");
        assert_eq!(n, 52 + 32 + 8);
        assert_eq!(&out[84..92], b"ABCDEFGH");
        assert_eq!(u16::from_le_bytes([out[44], out[45]]), 1);
        let mut again = [0u8; 256];
        let m = pack(&out[..n], &mut again).expect("packs again");
        assert_eq!(&again[..m], &out[..n]);
        let mut small = [0u8; 64];
        assert!(matches!(
            pack(&e, &mut small),
            Err(WireError::TooLarge { .. })
        ));
        let mut broken = e;
        broken[56..60].copy_from_slice(&196u32.to_le_bytes());
        assert!(pack(&broken, &mut out).is_err());
        assert!(
            pack(
                b"not an elf at all, not at all, no no no no no no no",
                &mut out
            )
            .is_err()
        );
    }
}
