//! STFT, power spectrum, Mel filterbank and log: the card's "Mel CU".
//!
//! Filterbank: `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax,
//! htk=False, norm="slaney")`, reproduced step by step in f64 (Slaney mel
//! scale, `np.linspace` in mel, triangular ramps, area normalisation) with
//! librosa's two f32 roundings. Window: periodic Hann of `win_length`,
//! centred in the `n_fft` frame (`librosa.util.pad_center`). Frames: centre
//! padding with `n_fft / 2` zeros each side, `1 + samples / hop` of them.
//!
//! Arithmetic: f32 signal, window and FFT (realfft), power and Mel sums in
//! f32 in a fixed order, `ln` in f32. Deterministic: one thread per call,
//! no data-dependent algorithm choice.

use crate::Error;
use preba_protocol::profile::AudioProfile;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::sync::{Arc, Mutex};

/// log(x + LOG_GUARD), NeMo's `log_zero_guard_value` = 2^-24.
pub const LOG_GUARD: f32 = 1.0 / 16_777_216.0;

/// One Mel band: weights for the FFT bins `start .. start + w.len()`.
pub(crate) struct Band {
    pub start: usize,
    pub w: Vec<f32>,
}

/// Everything a profile needs that does not depend on the input.
pub(crate) struct Plan {
    pub n_fft: usize,
    pub hop: usize,
    /// The n_fft-long window (zeros outside the centred Hann).
    pub window: Vec<f32>,
    /// First and one-past-last non-zero window index.
    pub win_lo: usize,
    pub win_hi: usize,
    pub bands: Vec<Band>,
    pub fft: Arc<dyn RealToComplex<f32>>,
}

fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// `librosa.filters.mel(..., htk=False, norm="slaney", dtype=float32)` as
/// a dense [n_mels][1 + n_fft / 2] matrix.
pub fn mel_filterbank(sr: u32, n_fft: usize, n_mels: usize, fmin: f64, fmax: f64) -> Vec<Vec<f32>> {
    let n_bins = 1 + n_fft / 2;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|k| k as f64 * sr as f64 / n_fft as f64)
        .collect();
    // np.linspace(min_mel, max_mel, n_mels + 2), then to Hz.
    let (lo, hi) = (hz_to_mel(fmin), hz_to_mel(fmax));
    let num = n_mels + 2;
    let step = (hi - lo) / (num - 1) as f64;
    let mel_f: Vec<f64> = (0..num)
        .map(|i| {
            let m = if i == num - 1 {
                hi
            } else {
                i as f64 * step + lo
            };
            mel_to_hz(m)
        })
        .collect();
    let fdiff: Vec<f64> = mel_f.windows(2).map(|w| w[1] - w[0]).collect();
    (0..n_mels)
        .map(|i| {
            let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = -(mel_f[i] - f) / fdiff[i];
                    let upper = (mel_f[i + 2] - f) / fdiff[i + 1];
                    let tri = lower.min(upper).max(0.0) as f32;
                    (tri as f64 * enorm) as f32
                })
                .collect()
        })
        .collect()
}

/// Periodic Hann window of `win` samples centred in `n_fft` (f64 -> f32).
pub fn window(n_fft: usize, win: usize) -> Vec<f32> {
    let mut w = vec![0f32; n_fft];
    let lpad = (n_fft - win) / 2;
    for i in 0..win {
        let v = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / win as f64).cos();
        w[lpad + i] = v as f32;
    }
    w
}

impl Plan {
    fn new(p: &AudioProfile) -> Plan {
        let n_fft = p.n_fft as usize;
        let win = p.win_length as usize;
        let window = window(n_fft, win);
        let win_lo = window.iter().position(|v| *v != 0.0).unwrap_or(0);
        let win_hi = window.iter().rposition(|v| *v != 0.0).map_or(0, |i| i + 1);
        let dense = mel_filterbank(
            p.sample_rate,
            n_fft,
            p.n_mels as usize,
            p.fmin_hz as f64,
            p.fmax_hz as f64,
        );
        let bands = dense
            .into_iter()
            .map(|row| {
                let start = row.iter().position(|v| *v != 0.0).unwrap_or(0);
                let end = row.iter().rposition(|v| *v != 0.0).map_or(start, |i| i + 1);
                Band {
                    start,
                    w: row[start..end].to_vec(),
                }
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
        Plan {
            n_fft,
            hop: p.hop as usize,
            window,
            win_lo,
            win_hi,
            bands,
            fft,
        }
    }
}

type Key = (u32, u16, u16, u16, u16, u32, u32);
type Cache = Mutex<Vec<(Key, Arc<Plan>)>>;
static PLANS: Cache = Mutex::new(Vec::new());
const CACHE_SLOTS: usize = 8;

pub(crate) fn plan(p: &AudioProfile) -> Arc<Plan> {
    let key = (
        p.sample_rate,
        p.n_fft,
        p.win_length,
        p.hop,
        p.n_mels,
        p.fmin_hz,
        p.fmax_hz,
    );
    {
        let cache = PLANS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = cache.iter().find(|(k, _)| *k == key) {
            return t.clone();
        }
    }
    let t = Arc::new(Plan::new(p));
    let mut cache = PLANS.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= CACHE_SLOTS {
        cache.remove(0);
    }
    cache.push((key, t.clone()));
    t
}

/// Log-Mel of a (pre-emphasised) signal at the profile's rate into
/// `out` ([n_mels, frames] row-major, `frames = 1 + x.len() / hop`).
pub(crate) fn log_mel_into(
    plan: &Plan,
    x: &[f32],
    frames: usize,
    out: &mut [f32],
) -> Result<(), Error> {
    let n_fft = plan.n_fft;
    let half = n_fft / 2;
    let mut frame = plan.fft.make_input_vec();
    let mut spec: Vec<Complex<f32>> = plan.fft.make_output_vec();
    let mut scratch = plan.fft.make_scratch_vec();
    let mut power = vec![0f32; spec.len()];
    for t in 0..frames {
        // Frame t covers x[t * hop - half ..][..n_fft]; only the window's
        // non-zero span is read.
        frame.fill(0.0);
        let base = (t * plan.hop) as isize - half as isize;
        let lo = (plan.win_lo as isize).max(-base);
        let hi = (plan.win_hi as isize).min(x.len() as isize - base);
        if lo < hi {
            let (lo, hi) = (lo as usize, hi as usize);
            let src = &x[(base + lo as isize) as usize..(base + hi as isize) as usize];
            for ((f, &v), &w) in frame[lo..hi].iter_mut().zip(src).zip(&plan.window[lo..hi]) {
                *f = v * w;
            }
        }
        plan.fft
            .process_with_scratch(&mut frame, &mut spec, &mut scratch)
            .map_err(|e| Error::InvalidProfile(format!("FFT: {e}")))?;
        for (p, c) in power.iter_mut().zip(spec.iter()) {
            *p = c.re * c.re + c.im * c.im;
        }
        for (m, band) in plan.bands.iter().enumerate() {
            let bins = &power[band.start..band.start + band.w.len()];
            let mut acc = 0f32;
            for (w, p) in band.w.iter().zip(bins) {
                acc += w * p;
            }
            out[m * frames + t] = (acc + LOG_GUARD).ln();
        }
    }
    Ok(())
}
