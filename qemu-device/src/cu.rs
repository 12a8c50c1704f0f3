//! Compute units: job registers, the golden model on host threads, the cycle and power model.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};

use preba_preprocess::{audio, image};
use preba_protocol::admin::{self, CuKind, PROFILE_SIZE};
use preba_protocol::card::{self as c, CuStatus};
use preba_protocol::profile::Profile;
use preba_protocol::status::Status;

use crate::card::Shared;
use crate::inject::CuFault;
use crate::model::{CycleModel, ImageWork};

/// One CU's registers.
#[derive(Clone, Debug)]
pub(crate) struct CuState {
    pub kind: CuKind,
    pub src: u32,
    pub src_len: u32,
    pub dst: u32,
    pub dst_len: u32,
    pub profile: u32,
    pub status: CuStatus,
    pub error: u32,
    pub result0: u32,
    pub result1: u32,
    pub written: u32,
    pub cycles: u64,
    pub energy_nj: u32,
    /// Bumped by every start and reset: a finished job whose generation is stale is discarded.
    pub generation: u64,
    /// Jobs completed (for the host-side statistics).
    pub jobs: u64,
    /// Modeled clock: the card time (core cycles) the core may not pass while this CU's host
    /// computation is still running (the job's start plus the cycle model's prediction); `u64::MAX`
    /// when no running computation bounds the core (idle, result in, or stuck).
    pub bound: u64,
    /// Modeled clock: a finished job waiting for its modeled completion time.
    pub pending: Option<Pending>,
}

/// A job whose host computation is done, delivered when the core's time reaches `due`.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    /// Card time (core cycles) of the modeled completion.
    pub due: u64,
    pub out: Outcome,
    pub written_delta: i32,
}

impl CuState {
    pub fn new(kind: CuKind) -> Self {
        CuState {
            kind,
            src: 0,
            src_len: 0,
            dst: 0,
            dst_len: 0,
            profile: 0,
            status: CuStatus::Idle,
            error: 0,
            result0: 0,
            result1: 0,
            written: 0,
            cycles: 0,
            energy_nj: 0,
            generation: 0,
            jobs: 0,
            bound: u64::MAX,
            pending: None,
        }
    }

    pub fn load(&self, off: u32) -> Option<u32> {
        Some(match off {
            c::CU_KIND => self.kind as u32,
            c::CU_SRC => self.src,
            c::CU_SRC_LEN => self.src_len,
            c::CU_DST => self.dst,
            c::CU_DST_LEN => self.dst_len,
            c::CU_PROFILE => self.profile,
            c::CU_CTRL => 0,
            c::CU_STATUS => self.status as u32,
            c::CU_ERROR => self.error,
            c::CU_RESULT0 => self.result0,
            c::CU_RESULT1 => self.result1,
            c::CU_WRITTEN => self.written,
            c::CU_CYCLES_LO => self.cycles as u32,
            c::CU_CYCLES_HI => (self.cycles >> 32) as u32,
            c::CU_ENERGY_NJ => self.energy_nj,
            _ => return None,
        })
    }
}

/// A job handed to the worker pool.
pub(crate) struct Job {
    pub cu: usize,
    pub generation: u64,
    pub kind: CuKind,
    pub input: Vec<u8>,
    pub profile: [u8; PROFILE_SIZE],
    /// Fault injection: bytes CU_WRITTEN reports beyond what the job wrote.
    pub written_delta: i32,
    /// Modeled clock: card time (core cycles) the job started at, and the engine cycles its
    /// completion cannot come before (the prediction the core's bound was set from).
    pub start: u64,
    pub predicted: u64,
}

/// What a job produced.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    pub result: Result<Vec<u8>, Status>,
    pub result0: u32,
    pub result1: u32,
    pub cycles: u64,
}

fn samples_per_px(input: &[u8]) -> f64 {
    match image::card_supports(input) {
        Ok(h) if h.components >= 3 => 1.0 + 2.0 / f64::from((h.h_samp * h.v_samp).max(1)),
        _ => 1.0,
    }
}

/// The engine cycles of a job as the cycle model will count them, known at start from the
/// headers alone (the core's time may run up to the job's start plus this before the host
/// computation must be done). Exact for an image or normalize job that succeeds; for a Mel job
/// a lower bound (the stream reader's share: the frame count needs the whole decode); a job
/// that fails later than its header costs the prediction, never less.
pub(crate) fn predict(
    cfg: &CycleModel,
    kind: CuKind,
    input: &[u8],
    profile: &[u8; PROFILE_SIZE],
) -> u64 {
    let bytes = input.len() as u64;
    let failed = cfg.failed(bytes);
    match (kind, admin::parse_profile(profile)) {
        (CuKind::Image, Ok(Profile::Image(p))) => match image::card_supports(input) {
            Ok(h) => cfg.image(&ImageWork {
                width: h.width,
                height: h.height,
                samples_per_px: samples_per_px(input),
                // Grayscale is replicated to RGB: always three planes.
                out_elems: 3 * u64::from(p.crop) * u64::from(p.crop),
            }),
            Err(_) => failed,
        },
        (CuKind::AudioMel, Ok(Profile::Audio(_))) => failed.min(cfg.audio(bytes, 0, 0, 0)),
        (CuKind::AudioNorm, Ok(Profile::Audio(p))) => {
            let row = 4 * u64::from(p.n_mels);
            if row == 0 || !bytes.is_multiple_of(row) {
                failed
            } else {
                cfg.normalize(u64::from(p.n_mels), bytes / row)
            }
        }
        _ => failed,
    }
}

/// Runs the golden model for one job.
pub(crate) fn run(job: &Job, cfg: &CycleModel) -> Outcome {
    let fail = |s: Status| Outcome {
        result: Err(s),
        result0: 0,
        result1: 0,
        cycles: cfg.failed(job.input.len() as u64),
    };
    let profile = match admin::parse_profile(&job.profile) {
        Ok(p) => p,
        Err(_) => return fail(Status::InvalidField),
    };
    match (job.kind, profile) {
        (CuKind::Image, Profile::Image(p)) => match image::card_preprocess_image(&job.input, &p) {
            Ok(out) => {
                let cycles = cfg.image(&ImageWork {
                    width: out.width,
                    height: out.height,
                    samples_per_px: samples_per_px(&job.input),
                    out_elems: (out.data.len() / p.dtype.size()) as u64,
                });
                Outcome {
                    result0: out.width,
                    result1: out.height,
                    result: Ok(out.data),
                    cycles,
                }
            }
            Err(e) => fail(e.status()),
        },
        (CuKind::AudioMel, Profile::Audio(p)) => match audio::log_mel(&job.input, &p) {
            Ok(out) => {
                let f = &out.features;
                let resampled = if out.info.sample_rate == p.sample_rate {
                    0
                } else {
                    (f.frames as u64).saturating_sub(1) * u64::from(p.hop)
                };
                let cycles = cfg.audio(
                    job.input.len() as u64,
                    resampled,
                    f.frames as u64,
                    u64::from(p.n_fft),
                );
                let data: Vec<u8> = f.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                Outcome {
                    result: Ok(data),
                    result0: out.info.sample_rate,
                    result1: u32::try_from(out.info.frames).unwrap_or(u32::MAX),
                    cycles,
                }
            }
            Err(e) => fail(e.status()),
        },
        (CuKind::AudioNorm, Profile::Audio(p)) => {
            let n_mels = usize::from(p.n_mels);
            let row = 4 * n_mels;
            if !job.input.len().is_multiple_of(row) {
                return fail(Status::InvalidField);
            }
            let frames = job.input.len() / row;
            let mut f = audio::Features {
                n_mels,
                frames,
                data: job
                    .input
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            };
            audio::normalize(&mut f);
            Outcome {
                result: Ok(f.data.iter().flat_map(|v| v.to_le_bytes()).collect()),
                result0: frames as u32,
                result1: n_mels as u32,
                cycles: cfg.normalize(n_mels as u64, frames as u64),
            }
        }
        _ => fail(Status::InvalidField),
    }
}

/// Starts CU `i` (the firmware wrote CU_CTRL start). `profile` is the 64-byte profile the core
/// thread read at CU_PROFILE, or `None` when that address is not readable.
///
/// `now` is the card time in core cycles (modeled clock): the job's modeled completion counts
/// from it.
pub(crate) fn start(sh: &Arc<Shared>, i: usize, profile: Option<[u8; PROFILE_SIZE]>, now: u64) {
    let mut cu = sh.cus[i].lock().expect("cu lock");
    if cu.status == CuStatus::Busy {
        return;
    }
    cu.generation += 1;
    let input = profile.and_then(|p| {
        sh.mem.range(cu.dst, u64::from(cu.dst_len))?;
        let r = sh.mem.range(cu.src, u64::from(cu.src_len))?;
        let input = sh.mem.data.lock().expect("card memory lock")[r].to_vec();
        Some((input, p))
    });
    let Some((input, profile)) = input else {
        finish_locked(sh, i, &mut cu, Status::InvalidField, 0, 0, 0, 0);
        return;
    };
    cu.status = CuStatus::Busy;
    let fault = sh.inject.as_ref().map_or(CuFault::None, |x| x.cu_started());
    if fault == CuFault::Stuck {
        // Never queued: busy, no interrupt, until a CU reset (the firmware's watchdog). Its
        // modeled completion is never, so it bounds nothing: the core's time runs on to the
        // watchdog's deadline.
        return;
    }
    let predicted = predict(&sh.cfg.cycles, cu.kind, &input, &profile);
    if sh.modeled() {
        cu.bound = now.saturating_add(sh.time.cu_to_core(predicted));
        sh.cu_horizon.fetch_min(cu.bound, Ordering::AcqRel);
    }
    let job = Job {
        cu: i,
        generation: cu.generation,
        kind: cu.kind,
        input,
        profile,
        written_delta: match fault {
            CuFault::Length(d) => d,
            _ => 0,
        },
        start: now,
        predicted,
    };
    drop(cu);
    let sent = sh
        .jobs
        .lock()
        .expect("jobs lock")
        .as_ref()
        .is_some_and(|tx| tx.send(job).is_ok());
    if !sent {
        let mut cu = sh.cus[i].lock().expect("cu lock");
        finish_locked(sh, i, &mut cu, Status::Internal, 0, 0, 0, 0);
    }
}

/// CU_CTRL reset: aborts a running job (its result is discarded), back to idle.
pub(crate) fn reset(sh: &Shared, i: usize) {
    let mut cu = sh.cus[i].lock().expect("cu lock");
    cu.generation += 1;
    cu.status = CuStatus::Idle;
    cu.error = 0;
    cu.written = 0;
    cu.bound = u64::MAX;
    cu.pending = None;
}

#[allow(clippy::too_many_arguments)]
fn finish_locked(
    sh: &Shared,
    i: usize,
    cu: &mut CuState,
    st: Status,
    r0: u32,
    r1: u32,
    written: u32,
    cycles: u64,
) {
    cu.status = if st == Status::Success {
        CuStatus::Done
    } else {
        CuStatus::Error
    };
    cu.error = st as u32;
    cu.result0 = r0;
    cu.result1 = r1;
    cu.written = written;
    cu.cycles = cycles;
    cu.energy_nj = sh.cfg.power.job_nj(cu.kind, cycles, sh.cfg.cu_hz);
    cu.jobs += 1;
    sh.raise(1 << (c::IRQ_CU_SHIFT + i as u32));
}

/// A worker: takes jobs until the channel closes.
pub(crate) fn worker(sh: Arc<Shared>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let job = match rx.lock().expect("job queue lock").recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        if sh.stop.load(Ordering::Relaxed) {
            continue;
        }
        if !sh.cfg.cu_delay.is_zero() {
            std::thread::sleep(sh.cfg.cu_delay);
        }
        let out = run(&job, &sh.cfg.cycles);
        let mut cu = sh.cus[job.cu].lock().expect("cu lock");
        if cu.generation != job.generation || cu.status != CuStatus::Busy {
            continue; // reset while running: discard
        }
        if sh.modeled() {
            // Modeled completion: the start plus the cycles, never before the bound the core
            // ran under (a job that failed sooner than predicted still answers at the bound,
            // so the core never saw a time past its completion without it).
            let cycles = out.cycles.max(job.predicted);
            let due = job.start.saturating_add(sh.time.cu_to_core(cycles));
            cu.bound = u64::MAX;
            cu.pending = Some(Pending {
                due,
                out,
                written_delta: job.written_delta,
            });
            drop(cu);
            sh.cu_horizon.fetch_min(due, Ordering::AcqRel);
            sh.wake.kick();
        } else {
            settle(&sh, job.cu, &mut cu, out, job.written_delta);
        }
    }
}

/// Makes a finished job visible: output into card memory, registers, the interrupt.
fn settle(sh: &Shared, i: usize, cu: &mut CuState, out: Outcome, written_delta: i32) {
    match out.result {
        Ok(data) => {
            let fits = data.len() <= cu.dst_len as usize;
            let written = if fits {
                match sh.mem.range(cu.dst, data.len() as u64) {
                    Some(r) => {
                        sh.mem.data.lock().expect("card memory lock")[r].copy_from_slice(&data);
                        Some(data.len() as u32)
                    }
                    None => None,
                }
            } else {
                None
            };
            let (st, w) = match written {
                Some(w) => (
                    Status::Success,
                    (i64::from(w) + i64::from(written_delta)).clamp(0, i64::from(u32::MAX)) as u32,
                ),
                None => (Status::OutputTooSmall, 0),
            };
            finish_locked(sh, i, cu, st, out.result0, out.result1, w, out.cycles);
        }
        Err(st) => finish_locked(sh, i, cu, st, 0, 0, 0, out.cycles),
    }
}

/// What the CUs mean for the core's modeled time at card time `now`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Horizon {
    /// The core may not pass this time: a host computation is still running.
    pub bound: u64,
    /// The earliest modeled completion still to deliver.
    pub due: u64,
    /// Some CU is busy (running, finished but not yet due, or stuck).
    pub busy: bool,
}

/// Delivers every finished job whose modeled completion is at or before `now` (core thread,
/// modeled clock) and says what is left.
pub(crate) fn deliver(sh: &Shared, now: u64) -> Horizon {
    // Lowered by workers as they post results; cleared first so a post racing this scan is
    // either seen by it or lowers the horizon again after it.
    sh.cu_horizon.store(u64::MAX, Ordering::Release);
    let mut h = Horizon {
        bound: u64::MAX,
        due: u64::MAX,
        busy: false,
    };
    for (i, m) in sh.cus.iter().enumerate() {
        let mut cu = m.lock().expect("cu lock");
        if cu.pending.as_ref().is_some_and(|p| p.due <= now) {
            let p = cu.pending.take().expect("pending");
            settle(sh, i, &mut cu, p.out, p.written_delta);
        }
        h.bound = h.bound.min(cu.bound);
        if let Some(p) = &cu.pending {
            h.due = h.due.min(p.due);
        }
        h.busy |= cu.status == CuStatus::Busy;
    }
    sh.cu_horizon
        .fetch_min(h.bound.min(h.due), Ordering::AcqRel);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use preba_protocol::admin::encode_profile;
    use preba_protocol::profile::{Dtype, ImageProfile};

    /// A correct image job's modeled completion is known at its start: the prediction from
    /// the header is the cycle count the job reports.
    #[test]
    fn image_prediction_is_the_cycle_count() {
        let cfg = CycleModel::default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/images");
        let mut checked = 0;
        for e in std::fs::read_dir(&dir).expect("fixtures") {
            let path = e.expect("entry").path();
            let input = std::fs::read(&path).expect("fixture");
            if input.len() > 8 << 20 {
                continue;
            }
            for p in [
                ImageProfile::default(),
                ImageProfile {
                    resize: 300,
                    crop: 256,
                    normalize: true,
                    dtype: Dtype::F32,
                    ..ImageProfile::default()
                },
            ] {
                let profile = encode_profile(&Profile::Image(p));
                let job = Job {
                    cu: 0,
                    generation: 0,
                    kind: CuKind::Image,
                    input: input.clone(),
                    profile,
                    written_delta: 0,
                    start: 0,
                    predicted: 0,
                };
                let out = run(&job, &cfg);
                let predicted = predict(&cfg, CuKind::Image, &input, &profile);
                if out.result.is_ok() {
                    assert_eq!(predicted, out.cycles, "{}", path.display());
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "only {checked} fixtures decoded");
    }
}
