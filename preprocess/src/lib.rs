//! `preba-preprocess`: the bit-exact golden model of the card's compute units.
//!
//! Owns: JPEG decode, Pillow-exact antialiased bilinear resize, centre crop,
//! normalisation and dtype/layout conversion (the torchvision eval transform);
//! WAV parsing, resampling, NeMo-style log-Mel features and per-utterance
//! normalisation. The emulated card's CUs call these functions; the host calls
//! them as its CPU path and as the fallback for inputs the card rejects.
//!
//! Must not: know about queues, DMA or the card; allocate without a bound
//! (every size is checked against `preba_protocol::limits` before allocation);
//! panic on any input bytes. Output must not depend on thread count or timing,
//! so card and CPU path agree bit for bit.
#![forbid(unsafe_code)]

pub mod audio;
pub mod error;
pub mod image;

pub use error::Error;
