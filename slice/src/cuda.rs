//! The CUDA side of a cuda slice: the arena registered as pinned host memory,
//! one stream, and per-input device buffers that each batch is copied into
//! with one async copy per input.
//!
//! Status: written against cudarc 0.19 and compile-checked; not yet run on a
//! GPU (the development machines have none). Every first use of the driver
//! is guarded by `is_culib_present()`: without it cudarc's dynamic loader
//! panics when libcuda is missing.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::sys::{self, CUresult};
use cudarc::driver::{CudaContext, CudaStream};

use crate::SliceError;
use crate::runtime::InputView;

pub(crate) struct CudaStage {
    // Field order is drop order: buffers and registration are released in
    // Drop below, then the stream, then the context.
    bufs: Vec<(sys::CUdeviceptr, usize)>,
    registered: Option<(*mut u8, usize)>,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
}

fn check(r: CUresult, what: &str) -> Result<(), String> {
    if r == CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what}: {r:?}"))
    }
}

/// True when libcuda can be loaded (cheap: a dlopen attempt).
pub(crate) fn libcuda_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    unsafe { sys::is_culib_present() }
}

impl CudaStage {
    /// Device 0 of this process (CUDA_VISIBLE_DEVICES names the slice), a
    /// new stream, and `arena..arena+len` registered as pinned memory so the
    /// host-to-device copies are true DMA.
    pub(crate) fn open(name: &str, arena: *mut u8, len: usize) -> Result<CudaStage, SliceError> {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default();
        if !libcuda_present() {
            return Err(SliceError::Cuda(format!(
                "cuda slice {name}: libcuda not found (no NVIDIA driver on this machine); use cpu: or modeled: slices"
            )));
        }
        let err = |m: String| {
            SliceError::Cuda(format!(
                "cuda slice {name} (CUDA_VISIBLE_DEVICES={visible}): {m}"
            ))
        };
        let ctx = CudaContext::new(0).map_err(|e| err(format!("device 0: {e:?}")))?;
        ctx.bind_to_thread()
            .map_err(|e| err(format!("bind context: {e:?}")))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| err(format!("new stream: {e:?}")))?;
        let mut stage = CudaStage {
            bufs: Vec::new(),
            registered: None,
            stream,
            ctx,
        };
        // SAFETY: `arena..arena+len` is the worker's shared mapping, alive
        // for the whole process (the stage is dropped before the arena); the
        // driver pins the pages and only DMAs from them in copies we issue.
        let r = unsafe {
            sys::cuMemHostRegister_v2(arena.cast(), len, sys::CU_MEMHOSTREGISTER_PORTABLE)
        };
        check(r, "cuMemHostRegister (pinning the arena)").map_err(err)?;
        stage.registered = Some((arena, len));
        Ok(stage)
    }

    /// The stream ORT's CUDA EP computes on.
    pub(crate) fn stream_ptr(&self) -> *mut () {
        self.stream.cu_stream().cast()
    }

    /// Copies each input to its device buffer (grown as needed) with one
    /// async copy on the stream; returns the device pointers in input order.
    pub(crate) fn upload(
        &mut self,
        inputs: &[InputView<'_>],
    ) -> Result<Vec<sys::CUdeviceptr>, String> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| format!("bind context: {e:?}"))?;
        let mut out = Vec::with_capacity(inputs.len());
        for (i, inp) in inputs.iter().enumerate() {
            if self.bufs.len() <= i {
                self.bufs.push((0, 0));
            }
            if self.bufs[i].1 < inp.len {
                let want = inp.len.next_power_of_two().max(4096);
                if self.bufs[i].0 != 0 {
                    // Pending copies and kernels may still use the old buffer.
                    self.stream
                        .synchronize()
                        .map_err(|e| format!("sync: {e:?}"))?;
                    // SAFETY: a buffer we allocated and no longer use.
                    check(unsafe { sys::cuMemFree_v2(self.bufs[i].0) }, "cuMemFree")?;
                    self.bufs[i] = (0, 0);
                }
                let mut d: sys::CUdeviceptr = 0;
                // SAFETY: out-pointer to a live local.
                let r = unsafe { sys::cuMemAlloc_v2(&raw mut d, want) };
                check(r, "cuMemAlloc")?;
                self.bufs[i] = (d, want);
            }
            // SAFETY: the destination holds >= inp.len bytes; the source is
            // InputView's `len` bytes, valid until the run (and so this
            // stream's work, which the run waits for) completes.
            let r = unsafe {
                sys::cuMemcpyHtoDAsync_v2(
                    self.bufs[i].0,
                    inp.ptr.cast(),
                    inp.len,
                    self.stream.cu_stream(),
                )
            };
            check(r, "cuMemcpyHtoDAsync")?;
            out.push(self.bufs[i].0);
        }
        Ok(out)
    }
}

impl Drop for CudaStage {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
        for (d, _) in self.bufs.drain(..) {
            if d != 0 {
                // SAFETY: our allocation; the stream is idle.
                unsafe { sys::cuMemFree_v2(d) };
            }
        }
        if let Some((p, _)) = self.registered.take() {
            // SAFETY: unregisters exactly the range registered in `open`.
            unsafe { sys::cuMemHostUnregister(p.cast()) };
        }
    }
}
