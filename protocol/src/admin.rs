//! Admin queue: 64-byte entries (same size as I/O entries, different layout),
//! the IDENTIFY and TELEMETRY data structures and the profile encoding.

use crate::WireError;
use crate::io::SQE_SIZE;
use crate::profile::{AudioNorm, AudioProfile, Dtype, ImageProfile, Layout, Profile};
use nom::Parser;
use nom::number::complete::{le_u8, le_u16, le_u32, le_u64};

/// Admin opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AdminOpcode {
    /// data: host buffer of >= [`IDENTIFY_SIZE`] bytes that receives [`Identify`].
    Identify = 0x01,
    /// cdw10: qid (1..) bits 0-15, size-1 bits 16-31; data_iova: SQ base;
    /// cdw11/cdw12: CQ base low/high; cdw13: MSI-X vector bits 0-15, bit 16 interrupts enabled.
    CreateIoQueuePair = 0x02,
    /// cdw10: qid. In-flight commands of the queue complete ABORTED first.
    DeleteIoQueuePair = 0x03,
    /// cdw10: slot; data: [`PROFILE_SIZE`] bytes of an encoded profile.
    SetProfile = 0x04,
    /// cdw10/cdw11: log cursor low/high; data: buffer. result0: bytes copied,
    /// result1: low 32 bits of the new cursor.
    GetLog = 0x05,
    /// cdw10: aggregation time in microseconds bits 0-15, count threshold bits 16-23;
    /// cdw11: qid (0xffff = all I/O queues).
    SetInterruptCoalescing = 0x06,
    /// cdw10: sqid bits 0-15, cid bits 16-31. result0: 0 aborted, 1 not found / already done.
    Abort = 0x07,
    /// cdw10: byte offset; data: chunk (<= 4 KiB) of the new firmware image.
    FirmwareDownload = 0x08,
    /// cdw10: total image length; cdw11: CRC-32 (IEEE) of the image; cdw12/cdw13: its build
    /// id low/high. Writes the staged image into the slot that is not running
    /// ([`crate::fwimage`]), reads it back: result0 the CRC-32 read back from flash, result1
    /// the slot written. It runs once activated and the card reset.
    FirmwareCommit = 0x09,
    /// data: host buffer of >= [`TELEMETRY_SIZE`] bytes that receives [`Telemetry`].
    GetTelemetry = 0x0A,
    /// cdw10: slot (0 A, 1 B). Checks the slot's header and CRC, then names it in the boot
    /// record: it boots after the next reset. INVALID_FIELD with result1 the slot's state
    /// ([`crate::fwimage::SlotState`]) when it cannot boot.
    FirmwareActivate = 0x0B,
}

impl AdminOpcode {
    pub const ALL: [AdminOpcode; 11] = [
        AdminOpcode::Identify,
        AdminOpcode::CreateIoQueuePair,
        AdminOpcode::DeleteIoQueuePair,
        AdminOpcode::SetProfile,
        AdminOpcode::GetLog,
        AdminOpcode::SetInterruptCoalescing,
        AdminOpcode::Abort,
        AdminOpcode::FirmwareDownload,
        AdminOpcode::FirmwareCommit,
        AdminOpcode::GetTelemetry,
        AdminOpcode::FirmwareActivate,
    ];
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0x01 => Some(AdminOpcode::Identify),
            0x02 => Some(AdminOpcode::CreateIoQueuePair),
            0x03 => Some(AdminOpcode::DeleteIoQueuePair),
            0x04 => Some(AdminOpcode::SetProfile),
            0x05 => Some(AdminOpcode::GetLog),
            0x06 => Some(AdminOpcode::SetInterruptCoalescing),
            0x07 => Some(AdminOpcode::Abort),
            0x08 => Some(AdminOpcode::FirmwareDownload),
            0x09 => Some(AdminOpcode::FirmwareCommit),
            0x0A => Some(AdminOpcode::GetTelemetry),
            0x0B => Some(AdminOpcode::FirmwareActivate),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            AdminOpcode::Identify => "IDENTIFY",
            AdminOpcode::CreateIoQueuePair => "CREATE_IO_QUEUE_PAIR",
            AdminOpcode::DeleteIoQueuePair => "DELETE_IO_QUEUE_PAIR",
            AdminOpcode::SetProfile => "SET_PROFILE",
            AdminOpcode::GetLog => "GET_LOG",
            AdminOpcode::SetInterruptCoalescing => "SET_INTERRUPT_COALESCING",
            AdminOpcode::Abort => "ABORT",
            AdminOpcode::FirmwareDownload => "FIRMWARE_DOWNLOAD",
            AdminOpcode::FirmwareCommit => "FIRMWARE_COMMIT",
            AdminOpcode::GetTelemetry => "GET_TELEMETRY",
            AdminOpcode::FirmwareActivate => "FIRMWARE_ACTIVATE",
        }
    }
    /// Whether the command moves data through `data_iova`/`data_len`.
    pub const fn has_data(self) -> bool {
        !matches!(
            self,
            AdminOpcode::DeleteIoQueuePair
                | AdminOpcode::SetInterruptCoalescing
                | AdminOpcode::Abort
                | AdminOpcode::FirmwareCommit
                | AdminOpcode::FirmwareActivate
        )
    }
}

/// Largest data transfer of one admin command.
pub const MAX_ADMIN_DATA: u32 = 4096;

/// The admin submission entry (64 bytes).
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 1 | opcode |
/// | 1 | 1 | flags (reserved, 0) |
/// | 2 | 2 | command id |
/// | 4 | 4 | reserved |
/// | 8 | 8 | data IOVA (CREATE_IO_QUEUE_PAIR: SQ base) |
/// | 16 | 4 | data length |
/// | 20 | 24 | cdw10..cdw15 |
/// | 44 | 20 | reserved |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AdminSqe {
    pub opcode: u8,
    pub cid: u16,
    pub data_iova: u64,
    pub data_len: u32,
    pub cdw: [u32; 6],
}

/// Builders: the one way every host (driver, card harness, firmware test host, vfio-user test)
/// lays out an admin command. The command id is 0; the host sets its own before submitting.
impl AdminSqe {
    /// `op` with `cdw10..cdw15` and a data buffer (`data_len` 0: none).
    pub const fn new(op: AdminOpcode, cdw: [u32; 6], data_iova: u64, data_len: u32) -> AdminSqe {
        AdminSqe {
            opcode: op as u8,
            cid: 0,
            data_iova,
            data_len,
            cdw,
        }
    }
    /// IDENTIFY into the [`IDENTIFY_SIZE`]-byte buffer at `data_iova`.
    pub const fn identify(data_iova: u64) -> AdminSqe {
        AdminSqe::new(
            AdminOpcode::Identify,
            [0; 6],
            data_iova,
            IDENTIFY_SIZE as u32,
        )
    }
    /// GET_TELEMETRY into the [`TELEMETRY_SIZE`]-byte buffer at `data_iova`.
    pub const fn get_telemetry(data_iova: u64) -> AdminSqe {
        AdminSqe::new(
            AdminOpcode::GetTelemetry,
            [0; 6],
            data_iova,
            TELEMETRY_SIZE as u32,
        )
    }
    /// SET_PROFILE `slot` (cdw10: 0..15 is valid; tests send others) from the
    /// [`PROFILE_SIZE`]-byte encoded profile at `data_iova`.
    pub const fn set_profile(slot: u32, data_iova: u64) -> AdminSqe {
        AdminSqe::new(
            AdminOpcode::SetProfile,
            [slot, 0, 0, 0, 0, 0],
            data_iova,
            PROFILE_SIZE as u32,
        )
    }
    /// CREATE_IO_QUEUE_PAIR `qid` of `entries` each way (rings at `sq_base` and `cq_base`),
    /// interrupting on MSI-X `vector` (`None`: interrupts off).
    pub const fn create_io_queue_pair(
        qid: u16,
        entries: u16,
        sq_base: u64,
        cq_base: u64,
        vector: Option<u16>,
    ) -> AdminSqe {
        let cdw13 = match vector {
            Some(v) => v as u32 | 1 << 16,
            None => 0,
        };
        AdminSqe::new(
            AdminOpcode::CreateIoQueuePair,
            [
                qid as u32 | (entries.wrapping_sub(1) as u32) << 16,
                cq_base as u32,
                (cq_base >> 32) as u32,
                cdw13,
                0,
                0,
            ],
            sq_base,
            entries as u32 * SQE_SIZE as u32,
        )
    }
    /// DELETE_IO_QUEUE_PAIR `qid`.
    pub const fn delete_io_queue_pair(qid: u16) -> AdminSqe {
        AdminSqe::new(
            AdminOpcode::DeleteIoQueuePair,
            [qid as u32, 0, 0, 0, 0, 0],
            0,
            0,
        )
    }

    pub fn encode(&self) -> [u8; SQE_SIZE] {
        let mut b = [0u8; SQE_SIZE];
        b[0] = self.opcode;
        b[2..4].copy_from_slice(&self.cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.data_iova.to_le_bytes());
        b[16..20].copy_from_slice(&self.data_len.to_le_bytes());
        for (i, d) in self.cdw.iter().enumerate() {
            b[20 + 4 * i..24 + 4 * i].copy_from_slice(&d.to_le_bytes());
        }
        b
    }

    /// Parses and validates an admin SQE copy.
    pub fn parse(bytes: &[u8; SQE_SIZE]) -> Result<(AdminOpcode, AdminSqe), WireError> {
        let r: nom::IResult<&[u8], _> = (
            (le_u8, le_u8, le_u16, le_u32, le_u64, le_u32),
            (le_u32, le_u32, le_u32, le_u32, le_u32, le_u32),
        )
            .parse(&bytes[..]);
        let (rest, ((opcode, flags, cid, rsvd4, data_iova, data_len), c)) =
            r.map_err(|_: nom::Err<nom::error::Error<&[u8]>>| WireError::Truncated)?;
        let sqe = AdminSqe {
            opcode,
            cid,
            data_iova,
            data_len,
            cdw: [c.0, c.1, c.2, c.3, c.4, c.5],
        };
        let op = AdminOpcode::from_u8(opcode).ok_or(WireError::InvalidOpcode(opcode))?;
        if flags != 0 {
            return Err(WireError::ReservedNonZero { offset: 1 });
        }
        if rsvd4 != 0 {
            return Err(WireError::ReservedNonZero { offset: 4 });
        }
        if let Some(i) = rest.iter().position(|&b| b != 0) {
            return Err(WireError::ReservedNonZero {
                offset: 44 + i as u8,
            });
        }
        if op.has_data() {
            if data_len == 0 || data_len > MAX_ADMIN_DATA && op != AdminOpcode::CreateIoQueuePair {
                return Err(WireError::InvalidField { field: "data_len" });
            }
            if data_iova.checked_add(data_len as u64).is_none() {
                return Err(WireError::InvalidField {
                    field: "data_iova+data_len",
                });
            }
        } else if data_iova != 0 || data_len != 0 {
            return Err(WireError::InvalidField {
                field: "data (command takes none)",
            });
        }
        Ok((op, sqe))
    }
}

/// Bytes of the IDENTIFY structure.
pub const IDENTIFY_SIZE: usize = 128;

/// What IDENTIFY returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Identify {
    pub version_major: u16,
    pub version_minor: u16,
    pub fw_build_id: u64,
    pub image_cus: u8,
    pub audio_cus: u8,
    pub norm_cus: u8,
    pub max_io_queues: u8,
    pub max_queue_entries: u16,
    pub max_sg: u8,
    pub profile_slots: u8,
    pub max_input_bytes: u32,
    pub max_image_side: u32,
    pub max_image_pixels: u64,
    pub card_mem_bytes: u64,
    pub clock_mhz: u32,
    /// NUL-padded ASCII firmware version string.
    pub fw_version: [u8; 32],
    /// Boot: the slot running (`fwimage::SLOT_*`), how the boot ROM chose it
    /// (`fwimage::BootOutcome`), the slot that failed (`SLOT_NONE`: none), the slot the boot
    /// record names now.
    pub running_slot: u8,
    pub boot_outcome: u8,
    pub failed_slot: u8,
    pub active_slot: u8,
    /// Per slot (A, B): `fwimage::SlotState` and the build id its header names (0: none).
    pub slot_state: [u8; 2],
    pub slot_build_id: [u64; 2],
}

impl Identify {
    pub fn encode(&self) -> [u8; IDENTIFY_SIZE] {
        let mut b = [0u8; IDENTIFY_SIZE];
        b[0..2].copy_from_slice(&self.version_major.to_le_bytes());
        b[2..4].copy_from_slice(&self.version_minor.to_le_bytes());
        b[8..16].copy_from_slice(&self.fw_build_id.to_le_bytes());
        b[16] = self.image_cus;
        b[17] = self.audio_cus;
        b[18] = self.norm_cus;
        b[19] = self.max_io_queues;
        b[20..22].copy_from_slice(&self.max_queue_entries.to_le_bytes());
        b[22] = self.max_sg;
        b[23] = self.profile_slots;
        b[24..28].copy_from_slice(&self.max_input_bytes.to_le_bytes());
        b[28..32].copy_from_slice(&self.max_image_side.to_le_bytes());
        b[32..40].copy_from_slice(&self.max_image_pixels.to_le_bytes());
        b[40..48].copy_from_slice(&self.card_mem_bytes.to_le_bytes());
        b[48..52].copy_from_slice(&self.clock_mhz.to_le_bytes());
        b[64..96].copy_from_slice(&self.fw_version);
        b[96] = self.running_slot;
        b[97] = self.boot_outcome;
        b[98] = self.failed_slot;
        b[99] = self.active_slot;
        b[100] = self.slot_state[0];
        b[101] = self.slot_state[1];
        b[104..112].copy_from_slice(&self.slot_build_id[0].to_le_bytes());
        b[112..120].copy_from_slice(&self.slot_build_id[1].to_le_bytes());
        b
    }

    pub fn parse(b: &[u8; IDENTIFY_SIZE]) -> Identify {
        let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64at = |o: usize| u64::from(u32at(o)) | (u64::from(u32at(o + 4)) << 32);
        let mut fw_version = [0u8; 32];
        fw_version.copy_from_slice(&b[64..96]);
        Identify {
            version_major: u16at(0),
            version_minor: u16at(2),
            fw_build_id: u64at(8),
            image_cus: b[16],
            audio_cus: b[17],
            norm_cus: b[18],
            max_io_queues: b[19],
            max_queue_entries: u16at(20),
            max_sg: b[22],
            profile_slots: b[23],
            max_input_bytes: u32at(24),
            max_image_side: u32at(28),
            max_image_pixels: u64at(32),
            card_mem_bytes: u64at(40),
            clock_mhz: u32at(48),
            fw_version,
            running_slot: b[96],
            boot_outcome: b[97],
            failed_slot: b[98],
            active_slot: b[99],
            slot_state: [b[100], b[101]],
            slot_build_id: [u64at(104), u64at(112)],
        }
    }

    /// The version string up to its first NUL (lossy on bad bytes).
    pub fn fw_version_str(&self) -> &str {
        let end = self.fw_version.iter().position(|&c| c == 0).unwrap_or(32);
        core::str::from_utf8(&self.fw_version[..end]).unwrap_or("?")
    }
}

/// Compute-unit kinds, as listed in telemetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CuKind {
    Image = 0,
    AudioMel = 1,
    AudioNorm = 2,
}

impl CuKind {
    pub const fn from_u8(v: u8) -> Option<CuKind> {
        match v {
            0 => Some(CuKind::Image),
            1 => Some(CuKind::AudioMel),
            2 => Some(CuKind::AudioNorm),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            CuKind::Image => "image",
            CuKind::AudioMel => "audio-mel",
            CuKind::AudioNorm => "audio-norm",
        }
    }
}

/// CU records in the telemetry page: a wire-format constant with room to spare over the
/// card's CU limit (`card::MAX_CUS`, the one limit on CUs), so the page never truncates.
pub const TELEMETRY_CUS: usize = 32;
const _: () = assert!(TELEMETRY_CUS >= crate::card::MAX_CUS as usize);
/// Bytes of one CU record in telemetry.
pub const CU_RECORD_SIZE: usize = 32;
/// Bytes of the telemetry header.
pub const TELEMETRY_HEADER_SIZE: usize = 64;
/// Bytes of the whole telemetry structure.
pub const TELEMETRY_SIZE: usize = TELEMETRY_HEADER_SIZE + TELEMETRY_CUS * CU_RECORD_SIZE;

/// Per-CU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CuStats {
    pub kind: u8,
    /// Modeled busy time, engine cycles.
    pub busy_cycles: u64,
    pub requests: u32,
    pub errors: u32,
    /// Modeled energy, microjoules.
    pub energy_uj: u64,
    /// Watchdog resets of this CU.
    pub resets: u32,
}

/// What GET TELEMETRY returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Telemetry {
    /// Firmware uptime in core cycles.
    pub uptime_cycles: u64,
    pub requests: u64,
    pub errors: u64,
    /// Board power from the I2C monitor, milliwatts.
    pub power_mw: u32,
    /// Board energy since reset, microjoules.
    pub energy_uj: u64,
    pub cu_count: u8,
    pub cus: [CuStats; TELEMETRY_CUS],
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            uptime_cycles: 0,
            requests: 0,
            errors: 0,
            power_mw: 0,
            energy_uj: 0,
            cu_count: 0,
            cus: [CuStats::default(); TELEMETRY_CUS],
        }
    }
}

impl Telemetry {
    pub fn encode(&self) -> [u8; TELEMETRY_SIZE] {
        let mut b = [0u8; TELEMETRY_SIZE];
        b[0..8].copy_from_slice(&self.uptime_cycles.to_le_bytes());
        b[8..16].copy_from_slice(&self.requests.to_le_bytes());
        b[16..24].copy_from_slice(&self.errors.to_le_bytes());
        b[24..28].copy_from_slice(&self.power_mw.to_le_bytes());
        b[32..40].copy_from_slice(&self.energy_uj.to_le_bytes());
        b[40] = self.cu_count;
        for (i, c) in self.cus.iter().enumerate() {
            let o = TELEMETRY_HEADER_SIZE + i * CU_RECORD_SIZE;
            b[o] = c.kind;
            b[o + 4..o + 8].copy_from_slice(&c.requests.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&c.busy_cycles.to_le_bytes());
            b[o + 16..o + 20].copy_from_slice(&c.errors.to_le_bytes());
            b[o + 20..o + 24].copy_from_slice(&c.resets.to_le_bytes());
            b[o + 24..o + 32].copy_from_slice(&c.energy_uj.to_le_bytes());
        }
        b
    }

    pub fn parse(b: &[u8; TELEMETRY_SIZE]) -> Telemetry {
        let u32at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64at = |o: usize| u64::from(u32at(o)) | (u64::from(u32at(o + 4)) << 32);
        let mut t = Telemetry {
            uptime_cycles: u64at(0),
            requests: u64at(8),
            errors: u64at(16),
            power_mw: u32at(24),
            energy_uj: u64at(32),
            cu_count: b[40].min(TELEMETRY_CUS as u8),
            ..Telemetry::default()
        };
        for (i, c) in t.cus.iter_mut().enumerate() {
            let o = TELEMETRY_HEADER_SIZE + i * CU_RECORD_SIZE;
            *c = CuStats {
                kind: b[o],
                requests: u32at(o + 4),
                busy_cycles: u64at(o + 8),
                errors: u32at(o + 16),
                resets: u32at(o + 20),
                energy_uj: u64at(o + 24),
            };
        }
        t
    }
}

/// Bytes of an encoded profile.
pub const PROFILE_SIZE: usize = 64;
const PROFILE_IMAGE: u8 = 1;
const PROFILE_AUDIO: u8 = 2;

/// Encodes a profile for SET PROFILE (and for the CU's profile register block).
///
/// Image: kind=1 @0, dtype @1, layout @2, normalize @3, resize u16 @4, crop u16 @6,
/// mean f32x3 @8, std f32x3 @20. Audio: kind=2 @0, norm @1, n_fft u16 @2,
/// win u16 @4, hop u16 @6, n_mels u16 @8, sample_rate u32 @12, fmin u32 @16,
/// fmax u32 @20, preemph f32 @24. Everything else zero.
pub fn encode_profile(p: &Profile) -> [u8; PROFILE_SIZE] {
    let mut b = [0u8; PROFILE_SIZE];
    match p {
        Profile::Image(i) => {
            b[0] = PROFILE_IMAGE;
            b[1] = i.dtype as u8;
            b[2] = i.layout as u8;
            b[3] = i.normalize as u8;
            b[4..6].copy_from_slice(&i.resize.to_le_bytes());
            b[6..8].copy_from_slice(&i.crop.to_le_bytes());
            for k in 0..3 {
                b[8 + 4 * k..12 + 4 * k].copy_from_slice(&i.mean[k].to_bits().to_le_bytes());
                b[20 + 4 * k..24 + 4 * k].copy_from_slice(&i.std[k].to_bits().to_le_bytes());
            }
        }
        Profile::Audio(a) => {
            b[0] = PROFILE_AUDIO;
            b[1] = a.norm as u8;
            b[2..4].copy_from_slice(&a.n_fft.to_le_bytes());
            b[4..6].copy_from_slice(&a.win_length.to_le_bytes());
            b[6..8].copy_from_slice(&a.hop.to_le_bytes());
            b[8..10].copy_from_slice(&a.n_mels.to_le_bytes());
            b[12..16].copy_from_slice(&a.sample_rate.to_le_bytes());
            b[16..20].copy_from_slice(&a.fmin_hz.to_le_bytes());
            b[20..24].copy_from_slice(&a.fmax_hz.to_le_bytes());
            b[24..28].copy_from_slice(&a.preemph.to_bits().to_le_bytes());
        }
    }
    b
}

/// Parses and validates an encoded profile (untrusted: it came from the host).
pub fn parse_profile(b: &[u8; PROFILE_SIZE]) -> Result<Profile, WireError> {
    let u16at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let f32at = |o: usize| f32::from_bits(u32at(o));
    let zero_from = |o: usize| b[o..].iter().all(|&x| x == 0);
    match b[0] {
        PROFILE_IMAGE => {
            if !zero_from(32) {
                return Err(WireError::ReservedNonZero { offset: 32 });
            }
            let p = ImageProfile {
                dtype: Dtype::from_u8(b[1]).ok_or(WireError::InvalidField {
                    field: "profile.dtype",
                })?,
                layout: Layout::from_u8(b[2]).ok_or(WireError::InvalidField {
                    field: "profile.layout",
                })?,
                normalize: match b[3] {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(WireError::InvalidField {
                            field: "profile.normalize",
                        });
                    }
                },
                resize: u16at(4),
                crop: u16at(6),
                mean: [f32at(8), f32at(12), f32at(16)],
                std: [f32at(20), f32at(24), f32at(28)],
            };
            p.validate().map_err(|_| WireError::InvalidField {
                field: "image profile",
            })?;
            Ok(Profile::Image(p))
        }
        PROFILE_AUDIO => {
            if u16at(10) != 0 {
                return Err(WireError::ReservedNonZero { offset: 10 });
            }
            if !zero_from(28) {
                return Err(WireError::ReservedNonZero { offset: 28 });
            }
            let p = AudioProfile {
                norm: AudioNorm::from_u8(b[1]).ok_or(WireError::InvalidField {
                    field: "profile.norm",
                })?,
                n_fft: u16at(2),
                win_length: u16at(4),
                hop: u16at(6),
                n_mels: u16at(8),
                sample_rate: u32at(12),
                fmin_hz: u32at(16),
                fmax_hz: u32at(20),
                preemph: f32at(24),
            };
            p.validate().map_err(|_| WireError::InvalidField {
                field: "audio profile",
            })?;
            Ok(Profile::Audio(p))
        }
        _ => Err(WireError::InvalidField {
            field: "profile.kind",
        }),
    }
}
