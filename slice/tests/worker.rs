//! Real worker processes against real models and ONNX Runtime.
//!
//! Needs the ORT library and the generated models (`cargo xtask venv`, then
//! `~/.cache/preba/venv/bin/python fixtures/gen_models.py
//! ~/.cache/preba/models`; or PREBA_MODELS=DIR). Without them each test
//! prints "SKIPPED: ..." and passes, unless PREBA_REQUIRE_ORT=1, where it
//! fails. Reference outputs come from the onnxruntime Python package in the
//! same venv, on the same input bytes.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use preba_slice::{
    BatchRequest, Dtype, InputBinding, SliceError, SliceSpec, Source, WorkerClient, WorkerSpec,
    find_onnxruntime, model_meta,
};

const EXE: &str = env!("CARGO_BIN_EXE_preba-slice-worker");
const ARENA_LEN: u64 = 64 << 20;

fn cache() -> PathBuf {
    std::env::var_os("PREBA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/preba")
        })
}

struct Env {
    ort: PathBuf,
    models: PathBuf,
}

/// The ORT library and models, or None after a visible skip message
/// (a panic when PREBA_REQUIRE_ORT=1).
fn env(test: &str) -> Option<Env> {
    let models = std::env::var_os("PREBA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("models"));
    let why = match find_onnxruntime() {
        Err(e) => Some(e.to_string()),
        Ok(_) if !models.join("squeezenet1_1/1/model.onnx").is_file() => Some(format!(
            "no models in {} (run fixtures/gen_models.py {0})",
            models.display()
        )),
        Ok(_) => None,
    };
    if let Some(why) = why {
        if std::env::var("PREBA_REQUIRE_ORT").as_deref() == Ok("1") {
            panic!("{test}: PREBA_REQUIRE_ORT=1 but {why}");
        }
        eprintln!("SKIPPED: {test}: {why}");
        return None;
    }
    Some(Env {
        ort: find_onnxruntime().ok()?,
        models,
    })
}

/// A memfd arena the worker maps through /proc/<our pid>/fd/<fd>; the test
/// side uses pread/pwrite on the descriptor (no mapping needed here).
struct TestArena {
    file: File,
}

impl TestArena {
    fn new() -> TestArena {
        // SAFETY: memfd_create takes a NUL-terminated name; checked below.
        let fd = unsafe { libc::memfd_create(c"preba-slice-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: fd is fresh and owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(ARENA_LEN).unwrap();
        TestArena { file }
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }
    fn write(&self, off: u64, b: &[u8]) {
        self.file.write_all_at(b, off).unwrap();
    }
    fn read(&self, off: u64, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        self.file.read_exact_at(&mut v, off).unwrap();
        v
    }
}

fn spec(
    e: &Env,
    arena: &TestArena,
    name: &str,
    model: &str,
    slice: SliceSpec,
    lat: Vec<(u32, u64)>,
) -> WorkerSpec {
    WorkerSpec {
        name: name.into(),
        slice,
        model: e.models.join(model).join("1/model.onnx"),
        arena: arena.path(),
        arena_len: ARENA_LEN,
        onnxruntime: Some(e.ort.clone()),
        modeled_latency_ns: lat,
        modeled_bucket_latency_ns: Vec::new(),
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Deterministic pseudo-random f32 bytes in [-1, 1).
fn input_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 23) as f32 - 1.0).to_le_bytes()
        })
        .collect()
}

/// Runs the model with onnxruntime's Python API on the given raw inputs
/// (name, numpy dtype, shape, bytes); returns the first output as f32.
fn python_reference(model: &Path, inputs: &[(&str, &str, Vec<i64>, Vec<u8>)]) -> Vec<f32> {
    let py = std::env::var_os("PREBA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("venv/bin/python"));
    let dir = std::env::temp_dir().join(format!(
        "preba-slice-ref-{}-{}",
        std::process::id(),
        rand_tag()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut feeds = String::new();
    for (i, (name, dt, shape, bytes)) in inputs.iter().enumerate() {
        let f = dir.join(format!("in{i}"));
        std::fs::write(&f, bytes).unwrap();
        feeds.push_str(&format!(
            "f[{name:?}] = np.fromfile({:?}, dtype=np.{dt}).reshape({shape:?})\n",
            f.to_str().unwrap()
        ));
    }
    let out = dir.join("out");
    let script = format!(
        "import numpy as np, onnxruntime as ort\nf = {{}}\n{feeds}s = ort.InferenceSession({:?}, providers=['CPUExecutionProvider'])\nnp.asarray(s.run(None, f)[0], dtype=np.float32).tofile({:?})\n",
        model.to_str().unwrap(),
        out.to_str().unwrap()
    );
    let st = std::process::Command::new(&py)
        .arg("-c")
        .arg(&script)
        .status();
    assert!(
        matches!(st, Ok(s) if s.success()),
        "python reference failed ({}): {st:?}",
        py.display()
    );
    let v = f32s(&std::fs::read(&out).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    v
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let tol = 1e-4 * max.max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w} (tol {tol})");
    }
    assert!(max > 0.0, "{what}: reference is all zeros");
}

const IMG: u64 = 3 * 224 * 224 * 4;

fn image_req(id: u64, n: i64, ranges: Vec<(u64, u64)>) -> BatchRequest {
    BatchRequest {
        id,
        bucket: None,
        inputs: vec![InputBinding {
            name: "input".into(),
            dtype: Dtype::F32,
            shape: vec![n, 3, 224, 224],
            source: Source::Arena(ranges),
        }],
        out_off: 48 << 20,
        out_cap: 1 << 20,
    }
}

#[test]
fn squeezenet_cpu_matches_onnxruntime_python() {
    let Some(e) = env("squeezenet_cpu_matches_onnxruntime_python") else {
        return;
    };
    let arena = TestArena::new();
    let model = e.models.join("squeezenet1_1/1/model.onnx");
    let meta = model_meta(&e.ort, &model).unwrap();
    assert_eq!(meta.inputs[0].name, "input");
    assert_eq!(meta.inputs[0].shape, [-1, 3, 224, 224]);
    assert_eq!(meta.outputs[0].shape, [-1, 1000]);

    let t0 = Instant::now();
    let s = spec(
        &e,
        &arena,
        "squeezenet/cpu1",
        "squeezenet1_1",
        SliceSpec::Cpu { threads: 1 },
        vec![],
    );
    let (mut w, meta2) = WorkerClient::spawn(Path::new(EXE), &s, Duration::from_secs(60)).unwrap();
    assert_eq!(meta2, meta);
    eprintln!("spawn + load: {:?}", t0.elapsed());

    let x = input_bytes((4 * IMG / 4) as usize, 1);
    let want = python_reference(
        &model,
        &[("input", "float32", vec![4, 3, 224, 224], x.clone())],
    );

    // Batch 4 as four adjacent slots: one contiguous run, no copy.
    arena.write(0, &x);
    let ranges: Vec<(u64, u64)> = (0..4).map(|i| (i * IMG, IMG)).collect();
    let t = Instant::now();
    let r = w
        .run(&image_req(1, 4, ranges), Duration::from_secs(60))
        .unwrap();
    eprintln!(
        "batch 4 contiguous: {:?} (exec {} ms)",
        t.elapsed(),
        r.exec_ns / 1_000_000
    );
    assert_eq!((r.id, r.gather_copies, r.modeled), (1, 0, false));
    let o = &r.outputs[0];
    assert_eq!(
        (o.name.as_str(), o.dtype, o.shape.clone()),
        ("output", Dtype::F32, vec![4, 1000])
    );
    assert_close(
        &f32s(&arena.read(o.off, o.len)),
        &want,
        "batch 4 contiguous",
    );

    // Batch 1 (the first image).
    let r = w
        .run(&image_req(2, 1, vec![(0, IMG)]), Duration::from_secs(60))
        .unwrap();
    let o = &r.outputs[0];
    assert_eq!(o.shape, [1, 1000]);
    assert_close(&f32s(&arena.read(o.off, o.len)), &want[..1000], "batch 1");

    // Batch 4 from scattered slots (reverse order, gaps): gathered once.
    let base = 8 << 20;
    let mut ranges = Vec::new();
    for i in 0..4u64 {
        let off = base + (3 - i) * (IMG + 4096);
        arena.write(off, &x[(i * IMG) as usize..((i + 1) * IMG) as usize]);
        ranges.push((off, IMG));
    }
    let r = w
        .run(&image_req(3, 4, ranges), Duration::from_secs(60))
        .unwrap();
    assert_eq!(r.gather_copies, 1);
    let o = &r.outputs[0];
    assert_close(&f32s(&arena.read(o.off, o.len)), &want, "batch 4 gathered");

    // A per-batch error leaves the worker up.
    let mut bad = image_req(4, 2, vec![(0, IMG)]);
    match w.run(&bad, Duration::from_secs(60)) {
        Err(SliceError::Batch {
            slice,
            id: 4,
            message,
        }) => {
            assert_eq!(slice, "squeezenet/cpu1");
            assert!(message.contains("ranges hold"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    bad.out_cap = 100;
    bad.inputs[0].shape[0] = 1;
    match w.run(&bad, Duration::from_secs(60)) {
        Err(SliceError::Batch { message, .. }) => {
            assert!(message.contains("does not fit"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        w.run(&image_req(5, 1, vec![(0, IMG)]), Duration::from_secs(60))
            .is_ok()
    );
}

#[test]
fn tiny_audio_two_inputs_inline_and_arena() {
    let Some(e) = env("tiny_audio_two_inputs_inline_and_arena") else {
        return;
    };
    let arena = TestArena::new();
    let model = e.models.join("tiny_audio/1/model.onnx");
    let s = spec(
        &e,
        &arena,
        "audio/cpu2",
        "tiny_audio",
        SliceSpec::Cpu { threads: 2 },
        vec![],
    );
    let (mut w, meta) = WorkerClient::spawn(Path::new(EXE), &s, Duration::from_secs(60)).unwrap();
    assert_eq!(meta.inputs[0].shape, [-1, 80, -1]);
    assert_eq!(meta.inputs[1].dtype, Dtype::I64);
    assert_eq!(meta.outputs[0].shape, [-1, 32]);
    let feats = input_bytes(3 * 80 * 50, 7);
    let lengths: Vec<u8> = [50i64, 17, 1]
        .iter()
        .flat_map(|l| l.to_le_bytes())
        .collect();
    let want = python_reference(
        &model,
        &[
            ("features", "float32", vec![3, 80, 50], feats.clone()),
            ("lengths", "int64", vec![3], lengths.clone()),
        ],
    );
    arena.write(4096, &feats);
    let req = BatchRequest {
        id: 9,
        bucket: None,
        inputs: vec![
            InputBinding {
                name: "lengths".into(),
                dtype: Dtype::I64,
                shape: vec![3],
                source: Source::Inline(lengths),
            },
            InputBinding {
                name: "features".into(),
                dtype: Dtype::F32,
                shape: vec![3, 80, 50],
                source: Source::Arena(vec![(4096, feats.len() as u64)]),
            },
        ],
        out_off: 1 << 20,
        out_cap: 4096,
    };
    let r = w.run(&req, Duration::from_secs(60)).unwrap();
    assert_eq!(r.gather_copies, 0);
    let o = &r.outputs[0];
    assert_eq!(o.shape, [3, 32]);
    assert_close(&f32s(&arena.read(o.off, o.len)), &want, "tiny_audio");
}

#[test]
fn modeled_slice_sleeps_its_latency_and_answers_zeros() {
    let Some(e) = env("modeled_slice_sleeps_its_latency_and_answers_zeros") else {
        return;
    };
    let arena = TestArena::new();
    let lat = vec![(1, 100_000_000), (8, 800_000_000)];
    let s = spec(
        &e,
        &arena,
        "squeezenet/mig0",
        "squeezenet1_1",
        SliceSpec::Modeled {
            slice_type: "a100-1g.5gb".into(),
        },
        lat,
    );
    let (mut w, _) = WorkerClient::spawn(Path::new(EXE), &s, Duration::from_secs(60)).unwrap();
    arena.write(48 << 20, &[0xAB; 16384]); // outputs must be zeroed, not left over
    let t = Instant::now();
    let r = w
        .run(
            &image_req(1, 4, vec![(0, 4 * IMG)]),
            Duration::from_secs(10),
        )
        .unwrap();
    let took = t.elapsed();
    assert!(r.modeled);
    // lat(4) = 400 ms by interpolation.
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(r.exec_ns >= 390_000_000, "{}", r.exec_ns);
    let o = &r.outputs[0];
    assert_eq!(o.shape, [4, 1000]);
    assert!(arena.read(o.off, o.len).iter().all(|&b| b == 0));
}

#[test]
fn killed_worker_is_died_and_a_new_one_works() {
    let Some(e) = env("killed_worker_is_died_and_a_new_one_works") else {
        return;
    };
    let arena = TestArena::new();
    let s = spec(
        &e,
        &arena,
        "squeezenet/mig3",
        "squeezenet1_1",
        SliceSpec::Modeled {
            slice_type: "a100-1g.5gb".into(),
        },
        vec![(1, 3_000_000_000)],
    );
    let (mut w, _) = WorkerClient::spawn(Path::new(EXE), &s, Duration::from_secs(60)).unwrap();
    let pid = w.pid() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signals the worker process this test spawned (not reaped
        // yet: the client is blocked waiting for its reply).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let t = Instant::now();
    match w.run(&image_req(1, 1, vec![(0, IMG)]), Duration::from_secs(30)) {
        Err(SliceError::Died { slice, reason }) => {
            assert_eq!(slice, "squeezenet/mig3");
            assert!(reason.contains("SIGKILL"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "noticed only after {:?}",
        t.elapsed()
    );
    killer.join().unwrap();
    // Reaped: no zombie left behind.
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    assert!(st.is_err(), "worker {pid} still exists: {st:?}");
    assert!(matches!(
        w.run(&image_req(2, 1, vec![(0, IMG)]), Duration::from_secs(1)),
        Err(SliceError::Died { .. })
    ));

    let s2 = WorkerSpec {
        modeled_latency_ns: vec![(1, 1_000_000)],
        modeled_bucket_latency_ns: Vec::new(),
        ..s
    };
    let (mut w2, _) = WorkerClient::spawn(Path::new(EXE), &s2, Duration::from_secs(60)).unwrap();
    assert!(
        w2.run(&image_req(3, 1, vec![(0, IMG)]), Duration::from_secs(10))
            .unwrap()
            .modeled
    );
}

#[test]
fn timeout_kills_the_worker() {
    let Some(e) = env("timeout_kills_the_worker") else {
        return;
    };
    let arena = TestArena::new();
    let s = spec(
        &e,
        &arena,
        "squeezenet/slow",
        "squeezenet1_1",
        SliceSpec::Modeled {
            slice_type: "a100-1g.5gb".into(),
        },
        vec![(1, 5_000_000_000)],
    );
    let (mut w, _) = WorkerClient::spawn(Path::new(EXE), &s, Duration::from_secs(60)).unwrap();
    match w.run(&image_req(1, 1, vec![(0, IMG)]), Duration::from_millis(200)) {
        Err(SliceError::Timeout { slice, .. }) => assert_eq!(slice, "squeezenet/slow"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.run(&image_req(2, 1, vec![(0, IMG)]), Duration::from_secs(1)),
        Err(SliceError::Died { .. })
    ));
}

/// These need no ORT at all: they must pass on any machine.
#[test]
fn missing_onnxruntime_is_one_clear_error() {
    let arena = TestArena::new();
    let s = WorkerSpec {
        name: "m/cpu1".into(),
        slice: SliceSpec::Cpu { threads: 1 },
        model: "/nonexistent/model.onnx".into(),
        arena: arena.path(),
        arena_len: ARENA_LEN,
        onnxruntime: Some("/nonexistent/libonnxruntime.so.1.31.1".into()),
        modeled_latency_ns: vec![],
        modeled_bucket_latency_ns: Vec::new(),
    };
    match WorkerClient::spawn(Path::new(EXE), &s, Duration::from_secs(30)) {
        Err(SliceError::Spawn { slice, reason }) => {
            assert_eq!(slice, "m/cpu1");
            assert!(reason.contains("cargo xtask venv"), "{reason}");
            assert!(reason.contains("exited with status 1"), "{reason}");
            assert!(!reason.contains("panicked"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let err = model_meta(
        Path::new("/nonexistent/libonnxruntime.so"),
        Path::new("/nonexistent/m.onnx"),
    )
    .unwrap_err();
    // In-process: ORT may already be loaded by another test of this binary
    // (one library per process); then the model is what is missing.
    let err = err.to_string();
    assert!(
        err.contains("cargo xtask venv") || err.contains("/nonexistent/m.onnx"),
        "{err}"
    );
}

#[test]
fn cuda_slice_without_driver_fails_clearly() {
    let arena = TestArena::new();
    let s = WorkerSpec {
        name: "m/gpu0".into(),
        slice: SliceSpec::Cuda {
            device: "MIG-none".into(),
        },
        model: "/nonexistent/model.onnx".into(),
        arena: arena.path(),
        arena_len: ARENA_LEN,
        onnxruntime: None,
        modeled_latency_ns: vec![],
        modeled_bucket_latency_ns: Vec::new(),
    };
    match WorkerClient::spawn(Path::new(EXE), &s, Duration::from_secs(30)) {
        Err(SliceError::Spawn { reason, .. }) => {
            // Without a driver: the libcuda line. With one: MIG-none is not a
            // device, which must also be a clean error.
            assert!(reason.contains("cuda slice m/gpu0"), "{reason}");
            assert!(!reason.contains("panicked"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_arena_and_missing_exe_are_clear() {
    let s = WorkerSpec {
        name: "m/x".into(),
        slice: SliceSpec::Cpu { threads: 1 },
        model: "/nonexistent/model.onnx".into(),
        arena: "/nonexistent/arena".into(),
        arena_len: 4096,
        onnxruntime: None,
        modeled_latency_ns: vec![],
        modeled_bucket_latency_ns: Vec::new(),
    };
    match WorkerClient::spawn(Path::new(EXE), &s, Duration::from_secs(30)) {
        Err(SliceError::Spawn { reason, .. }) => {
            assert!(reason.contains("/nonexistent/arena"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    match WorkerClient::spawn(Path::new("/nonexistent/preba"), &s, Duration::from_secs(30)) {
        Err(SliceError::Spawn { reason, .. }) => {
            assert!(reason.contains("/nonexistent/preba"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
