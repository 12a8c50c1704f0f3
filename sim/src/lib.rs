//! preba-sim: `preba sim`, a discrete-event simulator of a preba server.
//!
//! Owns: the event engine (virtual time, deterministic tie-breaking, seeded
//! xoshiro256++), the scenario file format (TOML, every assumption with its
//! source), request-size distributions, the preprocessing models (CPU cores,
//! the card's CU cycle model restated in [`card`]), power models, and the
//! `preba sim` command line.
//!
//! Must not: re-implement batching. The policy under test is the batcher
//! crate's own `Box<dyn preba_batcher::Policy>`, fed `Arrival`, `SliceFree`
//! and `Timer` events in virtual nanoseconds, exactly as `preba serve` feeds
//! it in real time.
//!
//! Pipeline per request: Poisson arrival -> preprocessing (N CPU cores or K
//! card CUs as an N-server FIFO queue; audio on the card: Mel CUs then
//! normalize CUs) -> fixed host/DMA overhead -> the policy -> a slice, busy
//! for lat(b) of its profile entry (audio: the entry of the batch's longest
//! input's bucket) -> done.
#![forbid(unsafe_code)]

pub mod card;
mod cli;
pub mod engine;
pub mod eval;
mod plot;
pub mod rng;
pub mod scenario;

pub use cli::{format_table, main, to_json};
pub use engine::{
    Arrival, BatchRecord, Outcome, PowerW, RateResult, build_policy, generate, run, simulate_rate,
    simulate_trace,
};
pub use scenario::{
    Dist, JpegCore, PolicySpec, Power, Preprocess, Scenario, Service, SliceGroup, Workload,
};

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Bad command line (exit 2).
    Usage(String),
    /// A file could not be read or written.
    Io { path: String, problem: String },
    /// The scenario `file` is wrong at `field`.
    Scenario {
        file: String,
        field: String,
        problem: String,
    },
    /// The simulation itself failed (a policy broke its contract, ...).
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m}"),
            Error::Io { path, problem } => write!(f, "{path}: {problem}"),
            Error::Scenario {
                file,
                field,
                problem,
            } => write!(f, "{file}: field `{field}`: {problem}"),
            Error::Failed(m) => write!(f, "simulation failed: {m}"),
        }
    }
}

impl std::error::Error for Error {}
