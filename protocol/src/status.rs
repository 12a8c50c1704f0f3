//! Per-request completion status codes (the CQE status field).

/// Per-request status. A bad input fails its own slot, never the batch or the
/// queue; queue-level faults are reported apart (see `regs::QueueFault`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    Success = 0x0000,
    UnsupportedFormat = 0x0001,
    CorruptInput = 0x0002,
    InputTooLarge = 0x0003,
    OutputTooSmall = 0x0004,
    DmaFault = 0x0005,
    InvalidField = 0x0006,
    Aborted = 0x0007,
    Internal = 0x0008,
    InvalidOpcode = 0x0009,
    Timeout = 0x000A,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Success,
        Status::UnsupportedFormat,
        Status::CorruptInput,
        Status::InputTooLarge,
        Status::OutputTooSmall,
        Status::DmaFault,
        Status::InvalidField,
        Status::Aborted,
        Status::Internal,
        Status::InvalidOpcode,
        Status::Timeout,
    ];

    pub const fn from_u16(v: u16) -> Option<Status> {
        match v {
            0x0000 => Some(Status::Success),
            0x0001 => Some(Status::UnsupportedFormat),
            0x0002 => Some(Status::CorruptInput),
            0x0003 => Some(Status::InputTooLarge),
            0x0004 => Some(Status::OutputTooSmall),
            0x0005 => Some(Status::DmaFault),
            0x0006 => Some(Status::InvalidField),
            0x0007 => Some(Status::Aborted),
            0x0008 => Some(Status::Internal),
            0x0009 => Some(Status::InvalidOpcode),
            0x000A => Some(Status::Timeout),
            _ => None,
        }
    }

    /// The name used in the spec, logs and manifests.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::UnsupportedFormat => "UNSUPPORTED_FORMAT",
            Status::CorruptInput => "CORRUPT_INPUT",
            Status::InputTooLarge => "INPUT_TOO_LARGE",
            Status::OutputTooSmall => "OUTPUT_TOO_SMALL",
            Status::DmaFault => "DMA_FAULT",
            Status::InvalidField => "INVALID_FIELD",
            Status::Aborted => "ABORTED",
            Status::Internal => "INTERNAL",
            Status::InvalidOpcode => "INVALID_OPCODE",
            Status::Timeout => "TIMEOUT",
        }
    }
}
