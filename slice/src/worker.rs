//! The worker process: `preba worker ARGS`. Maps the arena, loads the model,
//! says hello, then answers one request at a time until stdin closes.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::Instant;

use crate::arena::Arena;
use crate::cuda::CudaStage;
use crate::runtime::{
    InputView, ModeledRuntime, OrtRuntime, OutputData, Runtime, find_onnxruntime, model_meta,
};
use crate::wire::{
    BatchReply, BatchRequest, OutputBinding, Reply, Request, Source, WorkerSpec, read_msg,
    write_msg,
};
use crate::{SliceError, SliceSpec, tensor_bytes};

/// Outputs start on this alignment in the arena (cache line; enough for
/// every dtype and for a later zero-copy consumer).
const OUT_ALIGN: u64 = 64;

/// Entry of `preba worker ARGS` (the args after "worker"). Returns the exit
/// code: 0 after stdin closes, 1 when the worker cannot start or the pipe
/// breaks, 2 for bad arguments. The reason goes to stderr as one line.
pub fn worker_main(args: &[String]) -> i32 {
    let spec = match WorkerSpec::from_args(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("preba worker: {e}");
            return 2;
        }
    };
    match run_worker(&spec) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Takes fd 1 for the protocol and points fd 1 at stderr: a native library
/// (ORT, CUDA) printing to stdout must not corrupt the message stream.
fn protocol_stdout() -> Result<File, SliceError> {
    // SAFETY: dup of our own stdout; the result is checked.
    let fd = unsafe { libc::dup(1) };
    if fd < 0 {
        return Err(SliceError::io(
            "dup stdout",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let f = unsafe { File::from_raw_fd(fd) };
    // SAFETY: replaces fd 1 with a copy of fd 2; both are ours.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(SliceError::io(
            "dup2 stderr onto stdout",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(f)
}

fn run_worker(spec: &WorkerSpec) -> Result<(), SliceError> {
    let mut out = protocol_stdout()?;
    let arena = Arena::open(&spec.arena, spec.arena_len)?;
    // A cuda slice fails fast and clearly without a driver, before ORT.
    let stage = match &spec.slice {
        SliceSpec::Cuda { .. } => {
            let base = arena
                .ptr(0, arena.len() as u64)
                .map_err(SliceError::Arena)?;
            Some(CudaStage::open(&spec.name, base, arena.len())?)
        }
        _ => None,
    };
    let lib = match &spec.onnxruntime {
        Some(p) => p.clone(),
        None => find_onnxruntime()?,
    };
    let mut rt: Box<dyn Runtime> = match (&spec.slice, stage) {
        (SliceSpec::Cpu { threads }, _) => Box::new(OrtRuntime::cpu(&lib, &spec.model, *threads)?),
        (SliceSpec::Cuda { .. }, Some(stage)) => {
            Box::new(OrtRuntime::cuda(&lib, &spec.model, stage)?)
        }
        (SliceSpec::Cuda { .. }, None) => unreachable!("stage opened above"),
        (SliceSpec::Modeled { .. }, _) => Box::new(ModeledRuntime::new(
            model_meta(&lib, &spec.model)?,
            spec.modeled_latency_ns.clone(),
            spec.modeled_bucket_latency_ns.clone(),
        )),
    };
    let stdin = std::io::stdin();
    serve(rt.as_mut(), &arena, &mut stdin.lock(), &mut out)
}

/// The request loop: hello, then one reply per request until EOF.
pub(crate) fn serve(
    rt: &mut dyn Runtime,
    arena: &Arena,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<(), SliceError> {
    let hello = Reply::Hello {
        meta: rt.meta().clone(),
        runtime: rt.kind().to_string(),
    };
    write_msg(output, &hello)?;
    while let Some(req) = read_msg::<Request>(input)? {
        let Request::Batch(b) = req;
        let reply = match run_batch(rt, arena, &b) {
            Ok(r) => Reply::Batch(r),
            Err(message) => Reply::Error { id: b.id, message },
        };
        write_msg(output, &reply)?;
    }
    Ok(())
}

/// A worker-owned copy of one input, 8-byte aligned (u64 storage).
fn aligned_buf(len: usize) -> Vec<u64> {
    vec![0u64; len.div_ceil(8)]
}

fn run_batch(rt: &mut dyn Runtime, arena: &Arena, b: &BatchRequest) -> Result<BatchReply, String> {
    let meta = rt.meta().clone();
    if b.inputs.len() != meta.inputs.len() {
        return Err(format!(
            "{} inputs given, the model takes {} ({})",
            b.inputs.len(),
            meta.inputs.len(),
            meta.inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Owned copies must outlive the views: collect them first.
    let mut owned: Vec<Option<Vec<u64>>> = Vec::with_capacity(b.inputs.len());
    let mut direct: Vec<Option<(*const u8, usize)>> = Vec::with_capacity(b.inputs.len());
    let mut gather_copies = 0u32;
    for m in &meta.inputs {
        let inp = b
            .inputs
            .iter()
            .find(|i| i.name == m.name)
            .ok_or_else(|| format!("input {} missing", m.name))?;
        if inp.dtype != m.dtype {
            return Err(format!(
                "input {}: dtype {} but the model takes {}",
                m.name,
                inp.dtype.triton_name(),
                m.dtype.triton_name()
            ));
        }
        let fits = inp.shape.len() == m.shape.len()
            && inp
                .shape
                .iter()
                .zip(&m.shape)
                .all(|(&g, &w)| g >= 1 && (w < 0 || g == w));
        if !fits {
            return Err(format!(
                "input {}: shape {:?} does not fit the model's {:?} (-1 = any size >= 1)",
                m.name, inp.shape, m.shape
            ));
        }
        let want = tensor_bytes(m.dtype, &inp.shape)
            .filter(|&n| n <= arena.len() as u64 || matches!(inp.source, Source::Inline(_)))
            .ok_or_else(|| format!("input {}: shape {:?} is too large", m.name, inp.shape))?;
        let want_usize = want as usize;
        match &inp.source {
            Source::Inline(bytes) => {
                if bytes.len() as u64 != want {
                    return Err(format!(
                        "input {}: {} inline bytes, shape needs {want}",
                        m.name,
                        bytes.len()
                    ));
                }
                let mut buf = aligned_buf(want_usize);
                for (i, chunk) in bytes.chunks(8).enumerate() {
                    let mut w = [0u8; 8];
                    w[..chunk.len()].copy_from_slice(chunk);
                    buf[i] = u64::from_ne_bytes(w);
                }
                owned.push(Some(buf));
                direct.push(None);
            }
            Source::Arena(ranges) => {
                let total = ranges
                    .iter()
                    .try_fold(0u64, |acc, &(_, l)| acc.checked_add(l))
                    .ok_or_else(|| format!("input {}: range lengths overflow", m.name))?;
                if total != want {
                    return Err(format!(
                        "input {}: ranges hold {total} bytes, shape needs {want}",
                        m.name
                    ));
                }
                for &(off, len) in ranges {
                    arena
                        .ptr(off, len)
                        .map_err(|e| format!("input {}: {e}", m.name))?;
                }
                // One run: each range starts where the previous ended.
                let contiguous = ranges
                    .windows(2)
                    .all(|w| w[0].0.checked_add(w[0].1) == Some(w[1].0));
                let start = ranges.first().map_or(0, |r| r.0);
                let p = arena
                    .ptr(start, want)
                    .map_err(|e| format!("input {}: {e}", m.name))?;
                let aligned = (p as usize).is_multiple_of(m.dtype.size());
                if contiguous && aligned && !ranges.is_empty() {
                    owned.push(None);
                    direct.push(Some((p.cast_const(), want_usize)));
                } else {
                    let mut buf = aligned_buf(want_usize);
                    let mut at = 0usize;
                    {
                        // SAFETY: the u64 buffer is at least want_usize bytes;
                        // viewing initialised u64s as bytes is sound.
                        let bytes = unsafe {
                            std::slice::from_raw_parts_mut(
                                buf.as_mut_ptr().cast::<u8>(),
                                want_usize,
                            )
                        };
                        for &(off, len) in ranges {
                            let len = len as usize;
                            arena
                                .read(off, &mut bytes[at..at + len])
                                .map_err(|e| format!("input {}: {e}", m.name))?;
                            at += len;
                        }
                    }
                    gather_copies += 1;
                    owned.push(Some(buf));
                    direct.push(None);
                }
            }
        }
    }
    let views: Vec<InputView<'_>> = meta
        .inputs
        .iter()
        .zip(&owned)
        .zip(&direct)
        .map(|((m, o), d)| {
            let shape = &b
                .inputs
                .iter()
                .find(|i| i.name == m.name)
                .map_or(&[][..], |i| &i.shape[..]);
            let (ptr, len) = match (o, d) {
                (_, Some((p, l))) => (*p, *l),
                (Some(buf), None) => (
                    buf.as_ptr().cast::<u8>(),
                    tensor_bytes(m.dtype, shape).unwrap_or(0) as usize,
                ),
                (None, None) => (std::ptr::null(), 0),
            };
            InputView {
                name: &m.name,
                dtype: m.dtype,
                shape,
                ptr,
                len,
            }
        })
        .collect();

    // Outputs: each at the next OUT_ALIGN boundary inside out_off..out_off+out_cap.
    let out_end = b
        .out_off
        .checked_add(b.out_cap)
        .filter(|&e| e <= arena.len() as u64)
        .ok_or_else(|| {
            format!(
                "output area {:#x}+{:#x} outside the {:#x}-byte arena",
                b.out_off,
                b.out_cap,
                arena.len()
            )
        })?;
    let mut cursor = b.out_off;
    let mut outputs = Vec::new();
    let t0 = Instant::now();
    rt.set_bucket(b.bucket);
    let info = rt.run(&views, &mut |o| {
        let len = match o.data {
            OutputData::Bytes(bytes) => bytes.len() as u64,
            OutputData::Zeros(n) => n as u64,
        };
        let off = cursor
            .checked_next_multiple_of(OUT_ALIGN)
            .ok_or("output offset overflows")?;
        let end = off.checked_add(len).ok_or("output length overflows")?;
        if end > out_end {
            return Err(format!(
                "output {} ({len} bytes, shape {:?}) does not fit: out_cap {} bytes at {:#x}",
                o.name, o.shape, b.out_cap, b.out_off
            ));
        }
        match o.data {
            OutputData::Bytes(bytes) => arena.write(off, bytes)?,
            OutputData::Zeros(n) => arena.zero(off, n as u64)?,
        }
        outputs.push(OutputBinding {
            name: o.name.to_string(),
            dtype: o.dtype,
            shape: o.shape,
            off,
            len,
        });
        cursor = end;
        Ok(())
    })?;
    let _total = t0.elapsed();
    drop(views);
    drop(owned);
    Ok(BatchReply {
        id: b.id,
        outputs,
        modeled: info.modeled,
        exec_ns: info.exec_ns,
        gather_copies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{OutputView, RunInfo};
    use crate::wire::{InputBinding, encode};
    use crate::{Dtype, ModelMeta, TensorMeta};

    /// Doubles each f32 input element; records what it was handed.
    struct Double {
        meta: ModelMeta,
        saw_ptrs: Vec<usize>,
    }

    impl Runtime for Double {
        fn meta(&self) -> &ModelMeta {
            &self.meta
        }
        fn kind(&self) -> &'static str {
            "double"
        }
        fn run(
            &mut self,
            inputs: &[InputView<'_>],
            emit: &mut dyn FnMut(OutputView<'_>) -> Result<(), String>,
        ) -> Result<RunInfo, String> {
            let x = &inputs[0];
            self.saw_ptrs.push(x.ptr as usize);
            let mut out = Vec::with_capacity(x.len);
            for i in 0..x.len / 4 {
                let mut w = [0u8; 4];
                for (k, b) in w.iter_mut().enumerate() {
                    // SAFETY: InputView's contract: len bytes valid for the call.
                    *b = unsafe { x.ptr.add(i * 4 + k).read() };
                }
                out.extend_from_slice(&(f32::from_ne_bytes(w) * 2.0).to_ne_bytes());
            }
            emit(OutputView {
                name: "y",
                dtype: Dtype::F32,
                shape: x.shape.to_vec(),
                data: OutputData::Bytes(&out),
            })?;
            Ok(RunInfo {
                exec_ns: 1,
                modeled: false,
            })
        }
    }

    fn setup(tag: &str) -> (Arena, std::path::PathBuf, Double) {
        let path =
            std::env::temp_dir().join(format!("preba-worker-test-{tag}-{}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&vec![0u8; 16384])
            .unwrap();
        let arena = Arena::open(&path, 16384).unwrap();
        let t = |n: &str| TensorMeta {
            name: n.into(),
            dtype: Dtype::F32,
            shape: vec![-1, 2],
        };
        let rt = Double {
            meta: ModelMeta {
                inputs: vec![t("x")],
                outputs: vec![t("y")],
            },
            saw_ptrs: vec![],
        };
        (arena, path, rt)
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_ne_bytes()).collect()
    }

    fn req(id: u64, shape: Vec<i64>, source: Source, out_cap: u64) -> Vec<u8> {
        encode(&Request::Batch(BatchRequest {
            id,
            bucket: None,
            inputs: vec![InputBinding {
                name: "x".into(),
                dtype: Dtype::F32,
                shape,
                source,
            }],
            // Each batch its own output area: they are read after the loop.
            out_off: 8192 + id * 256,
            out_cap,
        }))
        .unwrap()
    }

    #[test]
    fn serve_loop_contiguous_gathered_inline_and_errors() {
        let (arena, path, mut rt) = setup("loop");
        arena.write(0, &f32s(&[1.0, 2.0, 3.0, 4.0])).unwrap();
        arena.write(1000, &f32s(&[5.0, 6.0])).unwrap();
        let mut input = Vec::new();
        input.extend(req(1, vec![2, 2], Source::Arena(vec![(0, 8), (8, 8)]), 64));
        input.extend(req(
            2,
            vec![2, 2],
            Source::Arena(vec![(0, 8), (1000, 8)]),
            64,
        ));
        input.extend(req(3, vec![1, 2], Source::Inline(f32s(&[7.0, 8.0])), 64));
        input.extend(req(4, vec![1, 3], Source::Arena(vec![(0, 12)]), 64)); // wrong shape
        input.extend(req(5, vec![2, 2], Source::Arena(vec![(0, 16)]), 8)); // output too small
        input.extend(req(6, vec![2, 2], Source::Arena(vec![(16380, 16)]), 64)); // outside
        let mut out = Vec::new();
        serve(&mut rt, &arena, &mut &input[..], &mut out).unwrap();
        let mut r = &out[..];
        assert!(matches!(
            read_msg::<Reply>(&mut r).unwrap(),
            Some(Reply::Hello { .. })
        ));
        let mut got = |want: &[f32], gathered: u32| match read_msg::<Reply>(&mut r).unwrap() {
            Some(Reply::Batch(rep)) => {
                assert_eq!(rep.gather_copies, gathered);
                let o = &rep.outputs[0];
                assert_eq!(o.off % 64, 0);
                let mut buf = vec![0u8; o.len as usize];
                arena.read(o.off, &mut buf).unwrap();
                assert_eq!(buf, f32s(want));
            }
            other => panic!("{other:?}"),
        };
        got(&[2.0, 4.0, 6.0, 8.0], 0);
        got(&[2.0, 4.0, 10.0, 12.0], 1);
        got(&[14.0, 16.0], 0);
        for (id, needle) in [
            (4, "does not fit the model"),
            (5, "does not fit: out_cap"),
            (6, "outside"),
        ] {
            match read_msg::<Reply>(&mut r).unwrap() {
                Some(Reply::Error { id: i, message }) => {
                    assert_eq!(i, id);
                    assert!(message.contains(needle), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(read_msg::<Reply>(&mut r).unwrap(), None);
        // The contiguous batch was handed over in place: a pointer into the arena.
        assert_eq!(rt.saw_ptrs[0], arena.ptr(0, 0).unwrap() as usize);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn garbled_request_ends_the_loop_with_an_error() {
        let (arena, path, mut rt) = setup("garbled");
        let mut input = 5u32.to_le_bytes().to_vec();
        input.extend_from_slice(b"{{{{{");
        let mut out = Vec::new();
        let e = serve(&mut rt, &arena, &mut &input[..], &mut out).unwrap_err();
        assert!(e.to_string().contains("bad message"), "{e}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn bad_args_exit_2() {
        assert_eq!(worker_main(&["--bogus".to_string()]), 2);
    }
}
