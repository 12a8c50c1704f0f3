//! `preba-serve`: `preba serve`, the KServe v2 front end of preba, and the
//! `preba` binary with all its subcommands.
//!
//! Owns: the model repository (`repo`), the KServe v2 protocol bytes
//! (`kserve`), the per-request path (`infer`: split a client batch,
//! preprocess each input into its arena slot, hand it to the batcher,
//! assemble answers), the per-model runtime (`model`: the batcher's
//! real-time driver and one supervisor thread per slice worker), the shared
//! arena as the server uses it (`arena`), metrics, and start-up/shutdown
//! (`server`).
//!
//! Must not: re-implement preprocessing (`preba-preprocess` via
//! `preba-host`), batching rules (`preba-batcher`) or model runtimes
//! (`preba-slice`); lose a request (every admitted input gets exactly one
//! answer, also when a worker dies or the server stops); let one bad
//! request affect another.
#![forbid(unsafe_code)]

pub mod arena;
pub mod error;
pub mod infer;
pub mod kserve;
pub mod metrics;
pub mod model;
pub mod repo;
pub mod server;

pub use error::ServeError;
