//! CUDA slices on a real GPU. Skipped, with a visible "SKIPPED: no GPU"
//! line, where libcuda cannot be loaded. Needs the onnxruntime-gpu wheel's
//! library (ORT_DYLIB_PATH) and the generated models, like tests/worker.rs.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use preba_slice::{
    BatchRequest, Dtype, InputBinding, SliceSpec, Source, WorkerClient, WorkerSpec,
    find_onnxruntime,
};

#[test]
fn cuda_slice_runs_squeezenet() {
    // SAFETY: only attempts to dlopen libcuda.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        eprintln!("SKIPPED: no GPU (libcuda not found)");
        return;
    }
    let models = std::env::var_os("PREBA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/preba/models")
        });
    let (Ok(ort), true) = (
        find_onnxruntime(),
        models.join("squeezenet1_1/1/model.onnx").is_file(),
    ) else {
        eprintln!("SKIPPED: GPU present but no onnxruntime-gpu library or models");
        return;
    };
    let device = std::env::var("PREBA_CUDA_DEVICE").unwrap_or_else(|_| "0".into());
    const LEN: u64 = 16 << 20;
    // SAFETY: memfd_create with a NUL-terminated name; checked below.
    let fd = unsafe { libc::memfd_create(c"preba-gpu-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(LEN).unwrap();
    let img = 3 * 224 * 224 * 4u64;
    let x: Vec<u8> = (0..img / 4)
        .flat_map(|i| ((i % 255) as f32 / 255.0).to_le_bytes())
        .collect();
    file.write_all_at(&x, 0).unwrap();
    let spec = WorkerSpec {
        name: "squeezenet/gpu".into(),
        slice: SliceSpec::Cuda { device },
        model: models.join("squeezenet1_1/1/model.onnx"),
        arena: format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd()).into(),
        arena_len: LEN,
        onnxruntime: Some(ort),
        modeled_latency_ns: vec![],
        modeled_bucket_latency_ns: Vec::new(),
    };
    let (mut w, _) = WorkerClient::spawn(
        Path::new(env!("CARGO_BIN_EXE_preba-slice-worker")),
        &spec,
        Duration::from_secs(120),
    )
    .expect("cuda worker starts");
    let r = w
        .run(
            &BatchRequest {
                id: 1,
                bucket: None,
                inputs: vec![InputBinding {
                    name: "input".into(),
                    dtype: Dtype::F32,
                    shape: vec![1, 3, 224, 224],
                    source: Source::Arena(vec![(0, img)]),
                }],
                out_off: 8 << 20,
                out_cap: 1 << 20,
            },
            Duration::from_secs(60),
        )
        .expect("batch on the GPU");
    assert_eq!(r.outputs[0].shape, [1, 1000]);
    let mut out = vec![0u8; r.outputs[0].len as usize];
    file.read_exact_at(&mut out, r.outputs[0].off).unwrap();
    assert!(out.iter().any(|&b| b != 0));
}
