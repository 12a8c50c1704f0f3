//! The crate's error type.
#![forbid(unsafe_code)]

use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// A command line that cannot run: exit status 2.
    Usage(String),
    /// Writing an output file failed.
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A card backend failed as a whole (not one request).
    Card { card: String, reason: String },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m}"),
            Error::Output { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Card { card, reason } => write!(f, "card {card}: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Output { source, .. } => Some(source),
            _ => None,
        }
    }
}
