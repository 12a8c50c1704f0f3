//! The crate's error type.

use std::fmt;

/// Why a card could not be built, reset or driven.
#[derive(Debug)]
pub enum Error {
    /// A configuration value out of range.
    Config(&'static str),
    /// The firmware image could not be loaded on the soft core.
    Firmware(preba_softcore::Error),
    /// A thread could not be started.
    Spawn(std::io::Error),
    /// The core thread did not answer in time (reset, stop).
    Timeout(&'static str),
    /// The core thread panicked.
    CoreDied,
    /// The debug port cannot listen on this address.
    DebugPort(std::net::SocketAddr, std::io::Error),
    /// The SPI flash's backing file cannot be used (names the file and why).
    FlashFile(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => write!(f, "bad card configuration: {m}"),
            Error::Firmware(_) => write!(f, "cannot load the firmware image"),
            Error::Spawn(_) => write!(f, "cannot start a card thread"),
            Error::Timeout(m) => write!(f, "card did not answer in time: {m}"),
            Error::CoreDied => write!(f, "the core thread died"),
            Error::DebugPort(a, e) => write!(f, "debug port {a}: {e}"),
            Error::FlashFile(m) => write!(f, "flash file {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Firmware(e) => Some(e),
            Error::Spawn(e) => Some(e),
            Error::DebugPort(_, e) => Some(e),
            _ => None,
        }
    }
}
