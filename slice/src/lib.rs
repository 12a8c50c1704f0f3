//! preba-slice: MIG slices as worker processes.
//!
//! Owns: slice specs (`--slices`, [`parse_slices`]), the worker process
//! (`preba worker`, [`worker_main`]) with its model runtimes (ONNX Runtime on
//! CPU or CUDA, and a modeled slice that sleeps a published latency), the
//! server <-> worker wire protocol ([`wire`]), and [`WorkerClient`] (spawn,
//! run one batch, notice death).
//!
//! Must not: know about HTTP, the batcher or the card. The server hands a
//! worker `(offset, len)` ranges of the shared arena (a memfd both map) and
//! gets `(offset, len)` ranges back; tensors are never serialised through the
//! pipe unless the caller chooses [`Source::Inline`].
//!
//! Unsafe code lives in `arena.rs` (mmap, raw-pointer copies), `runtime.rs`
//! (tensors over foreign memory handed to ORT) and `cuda.rs` (driver FFI);
//! each block has a `// SAFETY:` line.

#![deny(unsafe_code)]

mod arena;
mod client;
mod cuda;
mod runtime;
mod spec;
pub mod wire;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

pub use client::WorkerClient;
pub use runtime::{find_onnxruntime, model_meta};
pub use spec::{SliceSpec, parse_slices};
pub use wire::{BatchReply, BatchRequest, InputBinding, OutputBinding, Source, WorkerSpec};
pub use worker::worker_main;

/// Every failure of this crate. Messages name the slice (or spec, or file)
/// they are about, so a server log line is enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    #[error("--slices {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
    #[error("{0}")]
    NoOnnxRuntime(String),
    #[error("onnxruntime: {0}")]
    Ort(String),
    #[error("model {}: {reason}", model.display())]
    Model { model: PathBuf, reason: String },
    #[error("{0}")]
    Cuda(String),
    #[error("arena: {0}")]
    Arena(String),
    #[error("worker arguments: {0}")]
    Args(String),
    #[error("wire: {0}")]
    Wire(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("slice {slice}: could not start: {reason}")]
    Spawn { slice: String, reason: String },
    #[error("slice {slice} died: {reason}")]
    Died { slice: String, reason: String },
    #[error("slice {slice}: no reply after {after:?} (worker killed)")]
    Timeout { slice: String, after: Duration },
    #[error("slice {slice}: batch {id}: {message}")]
    Batch {
        slice: String,
        id: u64,
        message: String,
    },
}

impl SliceError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> SliceError {
        SliceError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Element types of model inputs and outputs (the ONNX ones a server can
/// carry; strings and complex types are refused at load time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

impl Dtype {
    /// The KServe v2 / Triton datatype name.
    pub fn triton_name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "UINT8",
            Dtype::I8 => "INT8",
            Dtype::U16 => "UINT16",
            Dtype::I16 => "INT16",
            Dtype::I32 => "INT32",
            Dtype::I64 => "INT64",
            Dtype::F16 => "FP16",
            Dtype::BF16 => "BF16",
            Dtype::F32 => "FP32",
            Dtype::F64 => "FP64",
        }
    }

    /// Inverse of [`Dtype::triton_name`].
    pub fn from_triton_name(name: &str) -> Option<Dtype> {
        ALL_DTYPES.iter().copied().find(|d| d.triton_name() == name)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::F64 => 8,
        }
    }
}

const ALL_DTYPES: [Dtype; 11] = [
    Dtype::Bool,
    Dtype::U8,
    Dtype::I8,
    Dtype::U16,
    Dtype::I16,
    Dtype::I32,
    Dtype::I64,
    Dtype::F16,
    Dtype::BF16,
    Dtype::F32,
    Dtype::F64,
];

/// One model input or output as the model declares it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorMeta {
    pub name: String,
    pub dtype: Dtype,
    /// -1 = dynamic.
    pub shape: Vec<i64>,
}

/// A model's inputs and outputs, in the model's order.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelMeta {
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// Bytes of a tensor of `shape` (all dims concrete), None on overflow or a
/// negative dim.
pub fn tensor_bytes(dtype: Dtype, shape: &[i64]) -> Option<u64> {
    shape.iter().try_fold(dtype.size() as u64, |acc, &d| {
        u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_names_round_trip() {
        for d in ALL_DTYPES {
            assert_eq!(Dtype::from_triton_name(d.triton_name()), Some(d));
        }
        assert_eq!(Dtype::F32.triton_name(), "FP32");
        assert_eq!(Dtype::I64.size(), 8);
        assert_eq!(Dtype::from_triton_name("BYTES"), None);
    }

    #[test]
    fn tensor_bytes_checks() {
        assert_eq!(tensor_bytes(Dtype::F32, &[2, 3]), Some(24));
        assert_eq!(tensor_bytes(Dtype::F32, &[-1, 3]), None);
        assert_eq!(tensor_bytes(Dtype::F64, &[i64::MAX, 2]), None);
    }
}
