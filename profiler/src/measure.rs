//! Running batches on a worker and timing them.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use preba_slice::{
    BatchRequest, Dtype, InputBinding, ModelMeta, Source, TensorMeta, WorkerClient, tensor_bytes,
};

use crate::ProfileError;
use crate::table::MeasuredPoint;

/// A memfd the workers map through `/proc/<our pid>/fd/<fd>`; we write it
/// with pwrite (no mapping on this side). Sparse: only written pages cost.
pub(crate) struct Arena {
    file: File,
    pub(crate) len: u64,
}

impl Arena {
    pub(crate) fn new(len: u64) -> Result<Arena, ProfileError> {
        // SAFETY: memfd_create reads a NUL-terminated name (a C string literal);
        // the result is checked before use.
        let fd = unsafe { libc::memfd_create(c"preba-profile".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(ProfileError::Other(format!(
                "memfd_create: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len)
            .map_err(|e| ProfileError::Other(format!("arena of {len} bytes: {e}")))?;
        Ok(Arena { file, len })
    }

    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    fn write(&self, off: u64, b: &[u8]) -> Result<(), ProfileError> {
        self.file
            .write_all_at(b, off)
            .map_err(|e| ProfileError::Other(format!("arena write: {e}")))
    }
}

/// What one batch looks like: batch size and, for audio, frames.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub batch: u32,
    /// Audio frames (length_s * 100); None for images.
    pub frames: Option<i64>,
}

/// Concrete shape of a model tensor for `s`: the first dynamic dim is the
/// batch, other dynamic dims are the frames (audio) or 224 (images); an INT64
/// input gets one value per row.
fn concrete(t: &TensorMeta, s: Shape) -> Vec<i64> {
    t.shape
        .iter()
        .enumerate()
        .map(|(i, &d)| match (i, d) {
            (0, d) if d < 0 => i64::from(s.batch),
            (_, d) if d < 0 => s.frames.unwrap_or(224),
            (_, d) => d,
        })
        .collect()
}

/// Bytes the inputs (64-byte aligned each) and a generous output region need.
pub(crate) fn bytes_needed(meta: &ModelMeta, s: Shape) -> Result<(u64, u64), ProfileError> {
    let size = |t: &TensorMeta| {
        tensor_bytes(t.dtype, &concrete(t, s))
            .ok_or_else(|| ProfileError::Other(format!("tensor {}: shape overflows", t.name)))
    };
    let mut input = 0u64;
    for t in &meta.inputs {
        input += size(t)?.next_multiple_of(64);
    }
    let mut output = 0u64;
    for t in &meta.outputs {
        output += size(t)?.next_multiple_of(64);
    }
    Ok((input, output.saturating_mul(2) + (1 << 20)))
}

/// Deterministic pseudo-random f32 bytes in [-1, 1).
fn random_f32(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&((x >> 40) as f32 / (1u64 << 23) as f32 - 1.0).to_le_bytes());
    }
    out
}

/// Writes random input for `s` at the start of the arena and returns the
/// request (outputs after `out_off`).
pub(crate) fn prepare(
    arena: &Arena,
    meta: &ModelMeta,
    s: Shape,
    out_off: u64,
) -> Result<BatchRequest, ProfileError> {
    let mut off = 0u64;
    let mut inputs = Vec::with_capacity(meta.inputs.len());
    for (k, t) in meta.inputs.iter().enumerate() {
        let shape = concrete(t, s);
        let len = tensor_bytes(t.dtype, &shape)
            .ok_or_else(|| ProfileError::Other(format!("input {}: shape overflows", t.name)))?;
        let n = usize::try_from(len).map_err(|_| ProfileError::Other("input too large".into()))?;
        let bytes = match t.dtype {
            Dtype::F32 => random_f32(n / 4, 0x5eed + k as u64 + u64::from(s.batch)),
            // Lengths: every row is full length.
            Dtype::I64 => {
                let v = s.frames.unwrap_or(1);
                (0..n / 8).flat_map(|_| v.to_le_bytes()).collect()
            }
            _ => vec![0u8; n],
        };
        arena.write(off, &bytes)?;
        inputs.push(InputBinding {
            name: t.name.clone(),
            dtype: t.dtype,
            shape,
            source: Source::Arena(vec![(off, len)]),
        });
        off += len.next_multiple_of(64);
    }
    if off > out_off {
        return Err(ProfileError::Other(
            "internal: inputs overlap the output region".into(),
        ));
    }
    Ok(BatchRequest {
        id: 0,
        bucket: None,
        inputs,
        out_off,
        out_cap: arena.len - out_off,
    })
}

/// How long to keep at one batch size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub warmup: u32,
    pub iterations: u32,
    pub time: Duration,
    pub timeout: Duration,
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// Runs warm-up and timed batches of `req` (round-trip wall time).
pub(crate) fn time_batches(
    client: &mut WorkerClient,
    req: &mut BatchRequest,
    batch: u32,
    budget: Budget,
    next_id: &mut u64,
) -> Result<MeasuredPoint, ProfileError> {
    let mut once = |req: &mut BatchRequest| -> Result<f64, ProfileError> {
        *next_id += 1;
        req.id = *next_id;
        let t0 = Instant::now();
        client.run(req, budget.timeout)?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    // Warm-up is bounded by the same time budget (a 2 s batch needs no
    // second warm-up).
    let warm = Instant::now();
    for _ in 0..budget.warmup {
        if warm.elapsed() >= budget.time {
            break;
        }
        once(req)?;
    }
    let start = Instant::now();
    let mut ms = Vec::new();
    while ms.len() < budget.iterations.max(1) as usize
        && (ms.is_empty() || start.elapsed() < budget.time)
    {
        ms.push(once(req)?);
    }
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    ms.sort_by(f64::total_cmp);
    Ok(MeasuredPoint {
        batch,
        p50_ms: percentile(&ms, 0.5),
        p95_ms: percentile(&ms, 0.95),
        throughput: f64::from(batch) * 1000.0 / mean,
        samples: ms.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&[3.0], 0.95), 3.0);
        assert_eq!(percentile(&[1.0, 2.0], 0.5), 1.0);
    }

    #[test]
    fn shapes() {
        let t = TensorMeta {
            name: "x".into(),
            dtype: Dtype::F32,
            shape: vec![-1, 80, -1],
        };
        let s = Shape {
            batch: 4,
            frames: Some(250),
        };
        assert_eq!(concrete(&t, s), vec![4, 80, 250]);
        let img = TensorMeta {
            name: "x".into(),
            dtype: Dtype::F32,
            shape: vec![-1, 3, 224, 224],
        };
        assert_eq!(
            concrete(
                &img,
                Shape {
                    batch: 2,
                    frames: None
                }
            ),
            vec![2, 3, 224, 224]
        );
    }
}
