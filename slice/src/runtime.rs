//! Model runtimes inside a worker: ONNX Runtime (CPU EP, or CUDA EP on the
//! slice's device) and the modeled slice. The worker loop sees them only
//! through [`Runtime`], so it is tested against a double.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ort::environment::Environment;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynTensorValueType, Shape, TensorElementType, TensorRefMut, ValueType};

use crate::cuda::CudaStage;
use crate::{Dtype, ModelMeta, SliceError, TensorMeta};

/// One input of a batch as a runtime sees it: `len` bytes at `ptr`, in the
/// arena or in a worker-owned buffer, valid and unchanged for the duration of
/// one [`Runtime::run`] call.
pub(crate) struct InputView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [i64],
    pub ptr: *const u8,
    pub len: usize,
}

/// One output, handed to the worker loop to be copied into the arena.
pub(crate) struct OutputView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: Vec<i64>,
    pub data: OutputData<'a>,
}

pub(crate) enum OutputData<'a> {
    /// The runtime's own buffer (not shared memory).
    Bytes(&'a [u8]),
    /// `n` zero bytes (the modeled slice).
    Zeros(usize),
}

/// What a run reports besides its outputs.
pub(crate) struct RunInfo {
    pub exec_ns: u64,
    pub modeled: bool,
}

/// A model runtime. `emit` is called once per output, in model order, while
/// the runtime's output buffers are alive; an `Err` from it (the output does
/// not fit) aborts the batch.
pub(crate) trait Runtime {
    fn meta(&self) -> &ModelMeta;
    /// "ort-cpu", "ort-cuda", "modeled".
    fn kind(&self) -> &'static str;
    fn run(
        &mut self,
        inputs: &[InputView<'_>],
        emit: &mut dyn FnMut(OutputView<'_>) -> Result<(), String>,
    ) -> Result<RunInfo, String>;
    /// The length bucket of the next batch (audio); only a modeled slice,
    /// which has no real work whose cost follows the length, needs it.
    fn set_bucket(&mut self, _bucket: Option<u32>) {}
}

/// The onnxruntime shared library: `ORT_DYLIB_PATH`, else the project venv's
/// wheel (`$PREBA_CACHE` or ~/.cache/preba, then
/// venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*).
pub fn find_onnxruntime() -> Result<PathBuf, SliceError> {
    const FIX: &str = "run `cargo xtask venv` (installs onnxruntime==1.31.1), or pass --onnxruntime PATH / set ORT_DYLIB_PATH to a libonnxruntime.so";
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(SliceError::NoOnnxRuntime(format!(
                "ORT_DYLIB_PATH={} does not exist; {FIX}",
                p.display()
            )))
        };
    }
    let cache = std::env::var_os("PREBA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("preba")))
        .unwrap_or_else(|| PathBuf::from("/tmp/.cache/preba"));
    let lib = cache.join("venv").join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .flat_map(|e| {
            let capi = e
                .path()
                .join("site-packages")
                .join("onnxruntime")
                .join("capi");
            std::fs::read_dir(capi).into_iter().flatten().flatten()
        })
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so."))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        SliceError::NoOnnxRuntime(format!(
            "no libonnxruntime.so under {}; {FIX}",
            lib.display()
        ))
    })
}

/// The process's one ORT environment (ort allows one per process), made on
/// first use from `lib`. Later calls reuse it whatever `lib` says: a library
/// cannot be unloaded once ORT objects exist.
fn environment(lib: &Path) -> Result<Environment, SliceError> {
    static ENV: Mutex<Option<Environment>> = Mutex::new(None);
    let mut env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = env.as_ref() {
        return Ok(e.clone());
    }
    if !lib.is_file() {
        return Err(SliceError::NoOnnxRuntime(format!(
            "onnxruntime library {} does not exist; run `cargo xtask venv`, or pass --onnxruntime PATH / set ORT_DYLIB_PATH",
            lib.display()
        )));
    }
    // init_from returns an error for a bad library; the implicit loader of
    // `ort::init()` would panic instead.
    let e = ort::init_from(lib)
        .map_err(|e| SliceError::NoOnnxRuntime(format!("loading onnxruntime: {e}")))?
        .with_name("preba")
        .build()
        .map_err(|e| SliceError::Ort(format!("creating the environment: {e}")))?;
    *env = Some(e.clone());
    Ok(e)
}

fn dtype_of(t: TensorElementType) -> Option<Dtype> {
    Some(match t {
        TensorElementType::Bool => Dtype::Bool,
        TensorElementType::Uint8 => Dtype::U8,
        TensorElementType::Int8 => Dtype::I8,
        TensorElementType::Uint16 => Dtype::U16,
        TensorElementType::Int16 => Dtype::I16,
        TensorElementType::Int32 => Dtype::I32,
        TensorElementType::Int64 => Dtype::I64,
        TensorElementType::Float16 => Dtype::F16,
        TensorElementType::Bfloat16 => Dtype::BF16,
        TensorElementType::Float32 => Dtype::F32,
        TensorElementType::Float64 => Dtype::F64,
        _ => return None,
    })
}

fn session_meta(session: &Session, model: &Path) -> Result<ModelMeta, SliceError> {
    let conv = |o: &ort::value::Outlet| match o.dtype() {
        ValueType::Tensor { ty, shape, .. } => match dtype_of(*ty) {
            Some(dtype) => Ok(TensorMeta {
                name: o.name().to_string(),
                dtype,
                shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            }),
            None => Err(SliceError::Model {
                model: model.to_path_buf(),
                reason: format!(
                    "{} has element type {ty}, which slices do not carry",
                    o.name()
                ),
            }),
        },
        other => Err(SliceError::Model {
            model: model.to_path_buf(),
            reason: format!("{} is a {other}, not a tensor", o.name()),
        }),
    };
    Ok(ModelMeta {
        inputs: session
            .inputs()
            .iter()
            .map(conv)
            .collect::<Result<_, _>>()?,
        outputs: session
            .outputs()
            .iter()
            .map(conv)
            .collect::<Result<_, _>>()?,
    })
}

fn check_model_file(model: &Path) -> Result<(), SliceError> {
    if model.is_file() {
        Ok(())
    } else {
        Err(SliceError::Model {
            model: model.to_path_buf(),
            reason: "no such file".into(),
        })
    }
}

/// Model metadata without a worker process (loads ORT in this process).
pub fn model_meta(onnxruntime: &Path, model: &Path) -> Result<ModelMeta, SliceError> {
    // The library first: without it nothing works, whatever the model.
    let env = environment(onnxruntime)?;
    check_model_file(model)?;
    let ort_err = |e: String| SliceError::Model {
        model: model.to_path_buf(),
        reason: e,
    };
    let session = Session::builder(&env)
        .map_err(|e| ort_err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Disable)
        .map_err(|e| ort_err(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| ort_err(e.to_string()))?
        .commit_from_file(model)
        .map_err(|e| ort_err(e.to_string()))?;
    session_meta(&session, model)
}

/// ONNX Runtime: one session per worker (`Session::run` takes `&mut self`).
pub(crate) struct OrtRuntime {
    session: Session,
    meta: ModelMeta,
    cuda: Option<CudaStage>,
}

impl OrtRuntime {
    /// CPU EP, `threads` intra-op threads, one inter-op thread, intra-op
    /// spinning off (spinning doubled SqueezeNet's batch-1 latency on 2
    /// shared cores: slices share cores with each other and the server).
    pub(crate) fn cpu(lib: &Path, model: &Path, threads: usize) -> Result<OrtRuntime, SliceError> {
        let session = Self::session(lib, model, threads, vec![ort::ep::CPU::default().build()])?;
        let meta = session_meta(&session, model)?;
        Ok(OrtRuntime {
            session,
            meta,
            cuda: None,
        })
    }

    /// CUDA EP on device 0 (the spawner set CUDA_VISIBLE_DEVICES to the
    /// slice), on the stream the batch copies use, so copy and compute are
    /// ordered without a host sync. Untested without a GPU.
    pub(crate) fn cuda(
        lib: &Path,
        model: &Path,
        stage: CudaStage,
    ) -> Result<OrtRuntime, SliceError> {
        // SAFETY: the stream belongs to `stage`, which the returned runtime
        // owns and drops after the session (field order: session first).
        let ep = unsafe {
            ort::ep::CUDA::default()
                .with_device_id(0)
                .with_compute_stream(stage.stream_ptr())
        }
        .build()
        .error_on_failure();
        let session = Self::session(lib, model, 1, vec![ep])?;
        let meta = session_meta(&session, model)?;
        Ok(OrtRuntime {
            session,
            meta,
            cuda: Some(stage),
        })
    }

    fn session(
        lib: &Path,
        model: &Path,
        threads: usize,
        eps: Vec<ort::ep::ExecutionProviderDispatch>,
    ) -> Result<Session, SliceError> {
        let env = environment(lib)?;
        check_model_file(model)?;
        let err = |e: String| SliceError::Model {
            model: model.to_path_buf(),
            reason: e,
        };
        Session::builder(&env)
            .map_err(|e| err(e.to_string()))?
            .with_execution_providers(eps)
            .map_err(|e| err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.to_string()))?
            .with_intra_threads(threads)
            .map_err(|e| err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.to_string()))?
            .with_intra_op_spinning(false)
            .map_err(|e| err(e.to_string()))?
            .commit_from_file(model)
            .map_err(|e| err(e.to_string()))
    }
}

/// A tensor over `len` bytes at `ptr` (host or device memory per `info`).
///
/// # Safety
/// `ptr..ptr+len` must stay valid and unchanged until the returned value is
/// dropped, and hold `shape`'s elements of `dtype`, aligned for it.
unsafe fn raw_tensor<'a>(
    info: MemoryInfo,
    dtype: Dtype,
    ptr: *mut u8,
    shape: &[i64],
) -> Result<ort::session::SessionInputValue<'a>, String> {
    let shape = Shape::new(shape.iter().copied());
    let p = ptr.cast::<ort::sys::c_void>();
    macro_rules! typed {
        ($t:ty) => {
            // SAFETY: forwarded from this function's contract.
            unsafe { TensorRefMut::<$t>::from_raw(info, p, shape) }
                .map(Into::into)
                .map_err(|e| e.to_string())
        };
    }
    match dtype {
        Dtype::Bool => typed!(bool),
        Dtype::U8 => typed!(u8),
        Dtype::I8 => typed!(i8),
        Dtype::U16 => typed!(u16),
        Dtype::I16 => typed!(i16),
        Dtype::I32 => typed!(i32),
        Dtype::I64 => typed!(i64),
        Dtype::F32 => typed!(f32),
        Dtype::F64 => typed!(f64),
        Dtype::F16 | Dtype::BF16 => Err(format!(
            "{} inputs are not supported by this build (ort without `half`)",
            dtype.triton_name()
        )),
    }
}

impl Runtime for OrtRuntime {
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    fn kind(&self) -> &'static str {
        if self.cuda.is_some() {
            "ort-cuda"
        } else {
            "ort-cpu"
        }
    }

    fn run(
        &mut self,
        inputs: &[InputView<'_>],
        emit: &mut dyn FnMut(OutputView<'_>) -> Result<(), String>,
    ) -> Result<RunInfo, String> {
        let mut values = Vec::with_capacity(inputs.len());
        if let Some(stage) = self.cuda.as_mut() {
            let info = MemoryInfo::new(
                AllocationDevice::CUDA,
                0,
                AllocatorType::Device,
                MemoryType::Default,
            )
            .map_err(|e| e.to_string())?;
            let dev = stage.upload(inputs)?;
            for (inp, d) in inputs.iter().zip(dev) {
                // SAFETY: `d` is a device buffer of `stage` holding inp.len
                // bytes, written by an async copy on the session's compute
                // stream (ordered before the run); `stage` is not touched
                // again until this run returns.
                let v = unsafe { raw_tensor(info.clone(), inp.dtype, d as *mut u8, inp.shape) }?;
                values.push((inp.name.to_string(), v));
            }
        } else {
            let info = MemoryInfo::new(
                AllocationDevice::CPU,
                0,
                AllocatorType::Device,
                MemoryType::Default,
            )
            .map_err(|e| e.to_string())?;
            for inp in inputs {
                // SAFETY: InputView's contract: the bytes (in the arena or a
                // worker buffer, aligned for the dtype by the worker loop)
                // stay valid and unchanged until this run returns; the server
                // keeps a batch's arena ranges untouched until the reply. ORT
                // only reads inputs.
                let v =
                    unsafe { raw_tensor(info.clone(), inp.dtype, inp.ptr.cast_mut(), inp.shape) }?;
                values.push((inp.name.to_string(), v));
            }
        }
        let t0 = Instant::now();
        let outputs = self.session.run(values).map_err(|e| e.to_string())?;
        let exec_ns = t0.elapsed().as_nanos() as u64;
        for meta in &self.meta.outputs {
            let v = outputs
                .get(&meta.name)
                .ok_or_else(|| format!("ORT returned no output {}", meta.name))?;
            let t = v
                .view()
                .downcast::<DynTensorValueType>()
                .map_err(|e| format!("output {}: {e}", meta.name))?;
            let shape: Vec<i64> = t.shape().iter().copied().collect();
            let len = crate::tensor_bytes(meta.dtype, &shape)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("output {}: shape {shape:?} overflows", meta.name))?;
            if t.memory_info().allocation_device() != AllocationDevice::CPU {
                return Err(format!("output {} is not in host memory", meta.name));
            }
            let p = t.data_ptr().cast::<u8>();
            let bytes: &[u8] = if len == 0 || p.is_null() {
                &[]
            } else {
                // SAFETY: ORT's own host buffer of this output, `len` bytes
                // (its shape times its element size), alive while `outputs`
                // is; read-only here.
                unsafe { std::slice::from_raw_parts(p, len) }
            };
            emit(OutputView {
                name: &meta.name,
                dtype: meta.dtype,
                shape,
                data: OutputData::Bytes(bytes),
            })?;
        }
        Ok(RunInfo {
            exec_ns,
            modeled: false,
        })
    }
}

/// A modeled slice: sleeps the latency of the batch size (wall clock) and
/// answers zeros shaped like the model's outputs.
pub(crate) struct ModeledRuntime {
    meta: ModelMeta,
    points: Vec<(u32, u64)>,
    /// Audio: per length bucket (the last one taking everything longer).
    buckets: Vec<Vec<(u32, u64)>>,
    bucket: Option<u32>,
}

impl ModeledRuntime {
    pub(crate) fn new(
        meta: ModelMeta,
        points: Vec<(u32, u64)>,
        buckets: Vec<Vec<(u32, u64)>>,
    ) -> ModeledRuntime {
        let clean = |mut p: Vec<(u32, u64)>| {
            p.sort_unstable();
            p.dedup_by_key(|p| p.0);
            p
        };
        ModeledRuntime {
            meta,
            points: clean(points),
            buckets: buckets.into_iter().map(clean).collect(),
            bucket: None,
        }
    }

    /// The curve of the batch at hand: its bucket's, else the only one.
    fn curve(&self) -> &[(u32, u64)] {
        match (self.bucket, self.buckets.len()) {
            (Some(k), n) if n > 0 => &self.buckets[(k as usize).min(n - 1)],
            _ => &self.points,
        }
    }
}

/// Latency of a batch of `n`: linear between the neighbouring points, along
/// the first/last segment outside them; one point scales proportionally
/// (through the origin); none is zero. Never negative.
pub(crate) fn modeled_latency(points: &[(u32, u64)], n: u32) -> Duration {
    let ns = match points {
        [] => 0.0,
        [(b, l)] => *l as f64 * n as f64 / (*b).max(1) as f64,
        _ => {
            let i = points
                .partition_point(|p| p.0 < n)
                .clamp(1, points.len() - 1);
            let ((b0, l0), (b1, l1)) = (points[i - 1], points[i]);
            let slope = (l1 as f64 - l0 as f64) / (b1 as f64 - b0 as f64);
            l0 as f64 + slope * (n as f64 - b0 as f64)
        }
    };
    Duration::from_nanos(ns.max(0.0).min(u64::MAX as f64) as u64)
}

impl Runtime for ModeledRuntime {
    fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    fn kind(&self) -> &'static str {
        "modeled"
    }

    fn run(
        &mut self,
        inputs: &[InputView<'_>],
        emit: &mut dyn FnMut(OutputView<'_>) -> Result<(), String>,
    ) -> Result<RunInfo, String> {
        let batch = inputs
            .first()
            .and_then(|i| i.shape.first())
            .copied()
            .unwrap_or(1)
            .max(1);
        let lat = modeled_latency(self.curve(), u32::try_from(batch).unwrap_or(u32::MAX));
        let t0 = Instant::now();
        std::thread::sleep(lat);
        let exec_ns = t0.elapsed().as_nanos() as u64;
        for o in &self.meta.outputs {
            // Dynamic dims: the batch (first) is the request's, others 1.
            let shape: Vec<i64> = o
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match (i, d) {
                    (0, d) if d < 0 => batch,
                    (_, d) if d < 0 => 1,
                    (_, d) => d,
                })
                .collect();
            let len = crate::tensor_bytes(o.dtype, &shape)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("output {}: shape {shape:?} overflows", o.name))?;
            emit(OutputView {
                name: &o.name,
                dtype: o.dtype,
                shape,
                data: OutputData::Zeros(len),
            })?;
        }
        Ok(RunInfo {
            exec_ns,
            modeled: true,
        })
    }

    fn set_bucket(&mut self, bucket: Option<u32>) {
        self.bucket = bucket;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_interpolates_and_extrapolates() {
        let ms = Duration::from_millis;
        let p = [(1, 2_000_000), (8, 9_000_000)];
        assert_eq!(modeled_latency(&p, 1), ms(2));
        assert_eq!(modeled_latency(&p, 4), ms(5));
        assert_eq!(modeled_latency(&p, 8), ms(9));
        assert_eq!(modeled_latency(&p, 16), ms(17));
        let p3 = [(1, 1_000_000), (2, 2_000_000), (4, 10_000_000)];
        assert_eq!(modeled_latency(&p3, 3), ms(6));
        assert_eq!(modeled_latency(&p3, 8), ms(26));
        assert_eq!(modeled_latency(&[(4, 8_000_000)], 2), ms(4));
        assert_eq!(modeled_latency(&[], 5), Duration::ZERO);
        // A falling segment extrapolated below zero is clamped, not wrapped.
        assert_eq!(modeled_latency(&[(2, 1_000), (4, 0)], 100), Duration::ZERO);
    }

    #[test]
    fn modeled_audio_sleeps_the_bucket_it_pads_to() {
        let meta = ModelMeta {
            inputs: vec![],
            outputs: vec![],
        };
        let b0 = vec![(1, 2_000_000)];
        let b1 = vec![(4, 40_000_000), (1, 10_000_000)];
        let mut rt = ModeledRuntime::new(meta, vec![(1, 7)], vec![b0.clone(), b1]);
        assert_eq!(rt.curve(), &[(1, 7)], "no bucket: the plain curve");
        rt.set_bucket(Some(0));
        assert_eq!(rt.curve(), &b0[..]);
        rt.set_bucket(Some(1));
        assert_eq!(rt.curve(), &[(1, 10_000_000), (4, 40_000_000)], "sorted");
        rt.set_bucket(Some(9));
        assert_eq!(
            modeled_latency(rt.curve(), 2),
            Duration::from_millis(20),
            "past the last: the last"
        );
        let mut plain = ModeledRuntime::new(
            ModelMeta {
                inputs: vec![],
                outputs: vec![],
            },
            vec![(1, 7)],
            Vec::new(),
        );
        plain.set_bucket(Some(3));
        assert_eq!(plain.curve(), &[(1, 7)], "images: buckets are ignored");
    }

    #[test]
    fn modeled_outputs_are_zeros_with_batch_dims() {
        let meta = ModelMeta {
            inputs: vec![TensorMeta {
                name: "x".into(),
                dtype: Dtype::F32,
                shape: vec![-1, 3],
            }],
            outputs: vec![TensorMeta {
                name: "y".into(),
                dtype: Dtype::F32,
                shape: vec![-1, -1, 10],
            }],
        };
        let mut rt = ModeledRuntime::new(meta, vec![(1, 1_000)], Vec::new());
        let data = [0u8; 60];
        let inp = InputView {
            name: "x",
            dtype: Dtype::F32,
            shape: &[5, 3],
            ptr: data.as_ptr(),
            len: 60,
        };
        let mut seen = Vec::new();
        let info = rt
            .run(&[inp], &mut |o| {
                let n = match o.data {
                    OutputData::Zeros(n) => n,
                    OutputData::Bytes(b) => b.len(),
                };
                seen.push((o.name.to_string(), o.shape, n));
                Ok(())
            })
            .unwrap();
        assert!(info.modeled);
        assert_eq!(seen, [("y".to_string(), vec![5, 1, 10], 200)]);
    }

    #[test]
    fn missing_library_is_a_clear_error() {
        let e = environment(Path::new("/nonexistent/libonnxruntime.so")).map(|_| ());
        // Another test in this process may already have loaded ORT; then
        // the environment is reused and this check does not apply.
        if let Err(e) = e {
            let s = e.to_string();
            assert!(
                s.contains("cargo xtask venv") && s.contains("/nonexistent"),
                "{s}"
            );
        }
    }
}
