//! I/O queue entries: the 64-byte submission entry and the 32-byte completion
//! entry, with encoders and `nom` parsers of untrusted bytes.
//!
//! Rule (docs/background.md section 2): the consumer copies an entry out of shared
//! memory once into a `[u8; N]` and parses only that copy.

use crate::WireError;
use crate::status::Status;
use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::{le_u8, le_u16, le_u32, le_u64};

pub const SQE_SIZE: usize = 64;
pub const CQE_SIZE: usize = 32;
/// Scatter-gather entries carried inline in an SQE.
pub const INLINE_SG: usize = 2;
/// Most entries of an indirect scatter-gather list (one level, never nested).
pub const MAX_SG: usize = 16;
/// Bytes of one scatter-gather list element in host memory.
pub const SG_ENTRY_SIZE: usize = 16;

/// I/O opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IoOpcode {
    Nop = 0x00,
    /// Waits until every earlier command of this queue has completed.
    Flush = 0x01,
    PreprocessImage = 0x10,
    PreprocessAudio = 0x11,
}

impl IoOpcode {
    pub const ALL: [IoOpcode; 4] = [
        IoOpcode::Nop,
        IoOpcode::Flush,
        IoOpcode::PreprocessImage,
        IoOpcode::PreprocessAudio,
    ];
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0x00 => Some(IoOpcode::Nop),
            0x01 => Some(IoOpcode::Flush),
            0x10 => Some(IoOpcode::PreprocessImage),
            0x11 => Some(IoOpcode::PreprocessAudio),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            IoOpcode::Nop => "NOP",
            IoOpcode::Flush => "FLUSH",
            IoOpcode::PreprocessImage => "PREPROCESS_IMAGE",
            IoOpcode::PreprocessAudio => "PREPROCESS_AUDIO",
        }
    }
    /// Whether the opcode carries input and output buffers.
    pub const fn has_data(self) -> bool {
        matches!(self, IoOpcode::PreprocessImage | IoOpcode::PreprocessAudio)
    }
}

/// SQE flag: `sg[0]` points to an indirect list of `sg_count` elements.
pub const SQE_FLAG_SG_INDIRECT: u8 = 1 << 0;
/// SQE flag: raise the interrupt for this completion at once (no coalescing).
pub const SQE_FLAG_URGENT: u8 = 1 << 1;
pub const SQE_FLAGS_KNOWN: u8 = SQE_FLAG_SG_INDIRECT | SQE_FLAG_URGENT;

/// One scatter-gather element: a host IOVA range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SgEntry {
    pub iova: u64,
    pub len: u32,
}

impl SgEntry {
    /// Encodes as 16 bytes: iova u64, len u32, reserved u32 (zero).
    pub fn encode(&self) -> [u8; SG_ENTRY_SIZE] {
        let mut b = [0u8; SG_ENTRY_SIZE];
        b[0..8].copy_from_slice(&self.iova.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Parses one element; the range must not wrap the 64-bit IOVA space.
    pub fn parse(bytes: &[u8; SG_ENTRY_SIZE]) -> Result<SgEntry, WireError> {
        let r: nom::IResult<&[u8], (u64, u32, u32)> = (le_u64, le_u32, le_u32).parse(&bytes[..]);
        let (_, (iova, len, rsvd)) = r.map_err(|_| WireError::Truncated)?;
        if rsvd != 0 {
            return Err(WireError::ReservedNonZero { offset: 12 });
        }
        let e = SgEntry { iova, len };
        e.end()?;
        Ok(e)
    }

    /// One past the last byte, refusing ranges that wrap.
    pub fn end(&self) -> Result<u64, WireError> {
        self.iova
            .checked_add(self.len as u64)
            .ok_or(WireError::InvalidField { field: "sg.len" })
    }
}

/// The I/O submission queue entry (64 bytes).
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 1 | opcode |
/// | 1 | 1 | flags |
/// | 2 | 2 | command id |
/// | 4 | 1 | profile slot |
/// | 5 | 1 | sg_count (1..=2 inline, 1..=16 indirect; 0 for NOP/FLUSH) |
/// | 6 | 2 | reserved |
/// | 8 | 8 | output IOVA |
/// | 16 | 4 | output length |
/// | 20 | 4 | input total length (sum of the SG lengths) |
/// | 24 | 16 | sg[0] |
/// | 40 | 16 | sg[1] |
/// | 56 | 8 | reserved |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sqe {
    pub opcode: u8,
    pub flags: u8,
    pub cid: u16,
    pub profile: u8,
    pub sg_count: u8,
    pub out_iova: u64,
    pub out_len: u32,
    pub in_len: u32,
    pub sg: [SgEntry; INLINE_SG],
}

/// An SQE that passed every check: what the device acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidSqe {
    pub op: IoOpcode,
    pub raw: Sqe,
}

impl Sqe {
    pub fn encode(&self) -> [u8; SQE_SIZE] {
        let mut b = [0u8; SQE_SIZE];
        b[0] = self.opcode;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.cid.to_le_bytes());
        b[4] = self.profile;
        b[5] = self.sg_count;
        b[8..16].copy_from_slice(&self.out_iova.to_le_bytes());
        b[16..20].copy_from_slice(&self.out_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.in_len.to_le_bytes());
        b[24..40].copy_from_slice(&self.sg[0].encode());
        b[40..56].copy_from_slice(&self.sg[1].encode());
        b
    }

    /// Parses the raw fields without judging them; used by [`Sqe::parse`] and
    /// by the device to learn the command id of an entry it must reject.
    pub fn parse_raw(bytes: &[u8; SQE_SIZE]) -> Result<(Sqe, u16, u64, [u32; 2]), WireError> {
        let r: nom::IResult<&[u8], _> = (
            (le_u8, le_u8, le_u16, le_u8, le_u8, le_u16),
            (le_u64, le_u32, le_u32),
            (le_u64, le_u32, le_u32),
            (le_u64, le_u32, le_u32),
            le_u64,
            take(0usize),
        )
            .parse(&bytes[..]);
        let (
            _,
            (
                (op, flags, cid, profile, sg_count, rsvd6),
                (out_iova, out_len, in_len),
                s0,
                s1,
                rsvd56,
                _,
            ),
        ) = r.map_err(|_: nom::Err<nom::error::Error<&[u8]>>| WireError::Truncated)?;
        let sqe = Sqe {
            opcode: op,
            flags,
            cid,
            profile,
            sg_count,
            out_iova,
            out_len,
            in_len,
            sg: [
                SgEntry {
                    iova: s0.0,
                    len: s0.1,
                },
                SgEntry {
                    iova: s1.0,
                    len: s1.1,
                },
            ],
        };
        Ok((sqe, rsvd6, rsvd56, [s0.2, s1.2]))
    }

    /// Parses and validates an SQE copy. On error the command id is still
    /// known (bytes 2-3), so the device can fail this one request.
    pub fn parse(bytes: &[u8; SQE_SIZE]) -> Result<ValidSqe, WireError> {
        let (sqe, rsvd6, rsvd56, sg_rsvd) = Self::parse_raw(bytes)?;
        let op = IoOpcode::from_u8(sqe.opcode).ok_or(WireError::InvalidOpcode(sqe.opcode))?;
        if rsvd6 != 0 {
            return Err(WireError::ReservedNonZero { offset: 6 });
        }
        if rsvd56 != 0 {
            return Err(WireError::ReservedNonZero { offset: 56 });
        }
        if sg_rsvd[0] != 0 {
            return Err(WireError::ReservedNonZero { offset: 36 });
        }
        if sg_rsvd[1] != 0 {
            return Err(WireError::ReservedNonZero { offset: 52 });
        }
        if sqe.flags & !SQE_FLAGS_KNOWN != 0 {
            return Err(WireError::InvalidField { field: "flags" });
        }
        if !op.has_data() {
            // NOP and FLUSH carry nothing: every data field must be zero so a
            // confused host is caught instead of silently ignored.
            if sqe.flags & SQE_FLAG_SG_INDIRECT != 0
                || sqe.sg_count != 0
                || sqe.profile != 0
                || sqe.out_iova != 0
                || sqe.out_len != 0
                || sqe.in_len != 0
                || sqe.sg != [SgEntry::default(); INLINE_SG]
            {
                return Err(WireError::InvalidField {
                    field: "data fields of NOP/FLUSH",
                });
            }
            return Ok(ValidSqe { op, raw: sqe });
        }
        if sqe.profile as usize >= crate::profile::MAX_PROFILES {
            return Err(WireError::InvalidField { field: "profile" });
        }
        if sqe.in_len == 0 {
            return Err(WireError::InvalidField { field: "in_len" });
        }
        if sqe.out_len == 0 {
            return Err(WireError::InvalidField { field: "out_len" });
        }
        if sqe.out_iova.checked_add(sqe.out_len as u64).is_none() {
            return Err(WireError::InvalidField {
                field: "out_iova+out_len",
            });
        }
        if sqe.flags & SQE_FLAG_SG_INDIRECT != 0 {
            if sqe.sg_count == 0 || sqe.sg_count as usize > MAX_SG {
                return Err(WireError::InvalidField { field: "sg_count" });
            }
            let list_len = sqe.sg_count as u32 * SG_ENTRY_SIZE as u32;
            if sqe.sg[0].len != list_len || sqe.sg[1] != SgEntry::default() {
                return Err(WireError::InvalidField {
                    field: "sg (indirect list)",
                });
            }
            sqe.sg[0].end()?;
        } else {
            if sqe.sg_count == 0 || sqe.sg_count as usize > INLINE_SG {
                return Err(WireError::InvalidField { field: "sg_count" });
            }
            let mut total: u64 = 0;
            for (i, e) in sqe.sg.iter().enumerate() {
                if i < sqe.sg_count as usize {
                    if e.len == 0 {
                        return Err(WireError::InvalidField { field: "sg.len" });
                    }
                    e.end()?;
                    total += e.len as u64;
                } else if *e != SgEntry::default() {
                    return Err(WireError::InvalidField {
                        field: "unused sg entry",
                    });
                }
            }
            if total != sqe.in_len as u64 {
                return Err(WireError::InvalidField {
                    field: "in_len (sum of sg)",
                });
            }
        }
        if sqe.in_len as u64 > crate::limits::MAX_INPUT_BYTES {
            return Err(WireError::TooLarge { field: "in_len" });
        }
        Ok(ValidSqe { op, raw: sqe })
    }
}

/// Checks an indirect SG list (already copied out of host memory once)
/// against the SQE's total; elements must be non-empty and must not wrap.
pub fn validate_sg_list(list: &[SgEntry], in_len: u32) -> Result<(), WireError> {
    if list.is_empty() || list.len() > MAX_SG {
        return Err(WireError::InvalidField { field: "sg_count" });
    }
    let mut total: u64 = 0;
    for e in list {
        if e.len == 0 {
            return Err(WireError::InvalidField { field: "sg.len" });
        }
        e.end()?;
        total += e.len as u64;
    }
    if total != in_len as u64 {
        return Err(WireError::InvalidField {
            field: "in_len (sum of sg)",
        });
    }
    Ok(())
}

/// The completion queue entry (32 bytes).
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 4 | result0: image source width / audio source sample rate / admin result |
/// | 4 | 4 | result1: image source height / audio source samples per channel |
/// | 8 | 8 | modeled engine cycles |
/// | 16 | 4 | bytes written to the output buffer |
/// | 20 | 4 | reserved |
/// | 24 | 2 | SQ head (entries the device has consumed) |
/// | 26 | 2 | SQ id |
/// | 28 | 2 | command id |
/// | 30 | 2 | bit 0 phase; bits 1-15 status code ([`Status`]) |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cqe {
    pub result0: u32,
    pub result1: u32,
    pub cycles: u64,
    pub written: u32,
    pub sq_head: u16,
    pub sq_id: u16,
    pub cid: u16,
    pub status: u16,
    pub phase: bool,
}

impl Cqe {
    pub fn encode(&self) -> [u8; CQE_SIZE] {
        let mut b = [0u8; CQE_SIZE];
        b[0..4].copy_from_slice(&self.result0.to_le_bytes());
        b[4..8].copy_from_slice(&self.result1.to_le_bytes());
        b[8..16].copy_from_slice(&self.cycles.to_le_bytes());
        b[16..20].copy_from_slice(&self.written.to_le_bytes());
        b[24..26].copy_from_slice(&self.sq_head.to_le_bytes());
        b[26..28].copy_from_slice(&self.sq_id.to_le_bytes());
        b[28..30].copy_from_slice(&self.cid.to_le_bytes());
        let st = (self.status << 1) | self.phase as u16;
        b[30..32].copy_from_slice(&st.to_le_bytes());
        b
    }

    /// The phase bit alone: the host reads it (acquire) before the rest.
    pub fn phase_of(bytes: &[u8; CQE_SIZE]) -> bool {
        bytes[30] & 1 != 0
    }

    /// Parses a CQE copy. The host treats completions as untrusted: unknown
    /// status codes and non-zero reserved bytes are errors.
    pub fn parse(bytes: &[u8; CQE_SIZE]) -> Result<Cqe, WireError> {
        let r: nom::IResult<&[u8], _> = (
            (le_u32, le_u32, le_u64, le_u32, le_u32),
            (le_u16, le_u16, le_u16, le_u16),
        )
            .parse(&bytes[..]);
        let (_, ((result0, result1, cycles, written, rsvd), (sq_head, sq_id, cid, st))) =
            r.map_err(|_: nom::Err<nom::error::Error<&[u8]>>| WireError::Truncated)?;
        if rsvd != 0 {
            return Err(WireError::ReservedNonZero { offset: 20 });
        }
        let status = st >> 1;
        if Status::from_u16(status).is_none() {
            return Err(WireError::InvalidField { field: "status" });
        }
        Ok(Cqe {
            result0,
            result1,
            cycles,
            written,
            sq_head,
            sq_id,
            cid,
            status,
            phase: st & 1 != 0,
        })
    }

    pub fn status(&self) -> Status {
        Status::from_u16(self.status).unwrap_or(Status::Internal)
    }
}
