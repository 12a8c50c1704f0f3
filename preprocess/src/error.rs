//! The crate's one error type. Each variant maps onto a per-request status of
//! the protocol, so the card and the CPU path report the same failure.

use preba_protocol::status::Status;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A valid file of a kind this engine does not take (e.g. progressive
    /// JPEG on the card's decoder). The host falls back to the CPU path.
    UnsupportedFormat(String),
    /// Bytes that are not a valid file of the detected kind.
    CorruptInput(String),
    /// Past a limit of `preba_protocol::limits`; refused before allocation.
    InputTooLarge(String),
    /// The profile asked for is invalid.
    InvalidProfile(String),
}

impl Error {
    /// The per-request status this error completes with.
    pub fn status(&self) -> Status {
        match self {
            Error::UnsupportedFormat(_) => Status::UnsupportedFormat,
            Error::CorruptInput(_) => Status::CorruptInput,
            Error::InputTooLarge(_) => Status::InputTooLarge,
            Error::InvalidProfile(_) => Status::InvalidField,
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::UnsupportedFormat(m) => write!(f, "unsupported format: {m}"),
            Error::CorruptInput(m) => write!(f, "corrupt input: {m}"),
            Error::InputTooLarge(m) => write!(f, "input too large: {m}"),
            Error::InvalidProfile(m) => write!(f, "invalid profile: {m}"),
        }
    }
}

impl std::error::Error for Error {}
