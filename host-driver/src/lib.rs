//! `preba-host`: the host side of preba, and the `preba` command.
//!
//! Owns: the backends that turn compressed inputs into tensors (today the
//! CPU golden model; the emulated card over vfio-user and real cards over
//! VFIO plug in behind [`backend::Backend`]), the output writers (.npy, .npz,
//! manifest) and the CLI.
//!
//! Must not: re-implement preprocessing (that is `preba-preprocess`), trust
//! anything the card returns without checking it, lose a request (every input
//! gets exactly one manifest entry), or panic on any input file.
#![deny(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod dma;
pub mod driver;
pub mod error;
pub mod fake;
pub mod firmware;
pub mod logtail;
pub mod npy;
pub mod progress;
pub mod rows;
pub mod transport;
pub mod vfio;
pub mod vfio_user;
pub mod vfio_user_client;

pub use error::Error;
