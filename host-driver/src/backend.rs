//! Backends: where a request is preprocessed. One trait, so the CLI and a
//! server do not care whether a card, the emulated card or the CPU does it.

use preba_preprocess::Error as PpError;
use preba_preprocess::audio::{self, AudioOutput};
use preba_preprocess::image::{self, ImageOutput};
use preba_protocol::profile::{AudioProfile, ImageProfile};
use std::path::PathBuf;

/// What one request asks for.
#[derive(Clone, Copy, Debug)]
pub enum Job {
    Image(ImageProfile),
    Audio(AudioProfile),
}

/// What one request produced.
#[derive(Debug)]
pub enum Output {
    Image(ImageOutput),
    Audio(AudioOutput),
}

/// Which path produced an output (the manifest's `via`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The card's engines.
    Card,
    /// The card refused it as unsupported; the CPU path did it.
    CpuFallback,
    /// The run used the CPU path only.
    Cpu,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Card => "card",
            Via::CpuFallback => "cpu-fallback",
            Via::Cpu => "cpu",
        }
    }
}

/// A preprocessing backend. `process` is called from several threads at once.
pub trait Backend: Sync {
    /// Names the backend in messages (e.g. `cpu`, `vfio-user:/run/card.sock`).
    fn name(&self) -> String;
    /// Preprocesses one input; the error is the request's own failure.
    fn process(&self, input: &[u8], job: &Job) -> Result<(Output, Via), PpError>;
}

/// The golden model on host threads.
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }
    fn process(&self, input: &[u8], job: &Job) -> Result<(Output, Via), PpError> {
        match job {
            Job::Image(p) => {
                image::preprocess_image(input, p).map(|o| (Output::Image(o), Via::Cpu))
            }
            Job::Audio(p) => {
                audio::preprocess_audio(input, p).map(|o| (Output::Audio(o), Via::Cpu))
            }
        }
    }
}

/// `--card SPEC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardSpec {
    /// Start `preba-card` with the built firmware on a private socket.
    Emulated,
    /// A running `preba-card` (or other vfio-user server) at this socket.
    VfioUser(PathBuf),
    /// A card bound to vfio-pci at this PCI address.
    Vfio(String),
    Cpu,
}

impl std::str::FromStr for CardSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "emulated" {
            Ok(CardSpec::Emulated)
        } else if s == "cpu" {
            Ok(CardSpec::Cpu)
        } else if let Some(p) = s.strip_prefix("vfio-user:") {
            if p.is_empty() {
                return Err("vfio-user:PATH needs a socket path".into());
            }
            Ok(CardSpec::VfioUser(PathBuf::from(p)))
        } else if let Some(bdf) = s.strip_prefix("vfio:") {
            if !valid_bdf(bdf) {
                return Err(format!("vfio:{bdf}: not a PCI address like 0000:00:03.0"));
            }
            Ok(CardSpec::Vfio(bdf.to_string()))
        } else {
            Err(format!(
                "unknown card `{s}` (expected emulated, vfio-user:PATH, vfio:BDF or cpu)"
            ))
        }
    }
}

impl std::fmt::Display for CardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CardSpec::Emulated => write!(f, "emulated"),
            CardSpec::VfioUser(p) => write!(f, "vfio-user:{}", p.display()),
            CardSpec::Vfio(b) => write!(f, "vfio:{b}"),
            CardSpec::Cpu => write!(f, "cpu"),
        }
    }
}

/// `DDDD:BB:DD.F` with hex digits.
fn valid_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b':',
            10 => c == b'.',
            11 => (b'0'..=b'7').contains(&c),
            _ => c.is_ascii_hexdigit(),
        })
}

/// Opens the backend a spec names.
pub fn open(spec: &CardSpec) -> Result<Box<dyn Backend>, crate::Error> {
    match spec {
        CardSpec::Cpu => Ok(Box::new(CpuBackend)),
        other => Err(crate::Error::Card {
            card: other.to_string(),
            reason: "this build has no card backend yet (the vfio-user and VFIO backends are not written); use --card cpu"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_specs_parse() {
        assert_eq!("cpu".parse(), Ok(CardSpec::Cpu));
        assert_eq!("emulated".parse(), Ok(CardSpec::Emulated));
        assert_eq!(
            "vfio-user:/tmp/s".parse(),
            Ok(CardSpec::VfioUser("/tmp/s".into()))
        );
        assert_eq!(
            "vfio:0000:00:03.0".parse(),
            Ok(CardSpec::Vfio("0000:00:03.0".into()))
        );
        assert!("vfio:00:03.0".parse::<CardSpec>().is_err());
        assert!("vfio-user:".parse::<CardSpec>().is_err());
        assert!("gpu".parse::<CardSpec>().is_err());
    }
}
