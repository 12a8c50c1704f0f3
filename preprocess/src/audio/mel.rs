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
//! f32 in a fixed order, `ln` in f32 ([`ln_f32`], musl's `logf`). Deterministic: one thread per call,
//! no data-dependent algorithm choice.

use crate::Error;
use preba_protocol::profile::AudioProfile;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::sync::{Arc, Mutex};

/// log(x + LOG_GUARD), NeMo's `log_zero_guard_value` = 2^-24.
pub const LOG_GUARD: f32 = 1.0 / 16_777_216.0;

/// Natural logarithm of a positive normal f32 (here always >= 2^-24), in
/// plain f32 arithmetic so that a frame's bands vectorise: the algorithm of
/// FreeBSD/musl `logf` (reduction to [sqrt(2)/2, sqrt(2)), a degree-8
/// minimax polynomial in s = f / (2 + f)), under 1 ulp of error. Zero,
/// negative, subnormal and non-finite inputs are outside its domain (they give
/// a finite but meaningless value, never a panic).
#[inline]
pub fn ln_f32(x: f32) -> f32 {
    const LN2_HI: f32 = f32::from_bits(0x3f31_7180); // 6.9313812256e-1
    const LN2_LO: f32 = f32::from_bits(0x3717_f7d1); // 9.0580006145e-6
    const LG1: f32 = f32::from_bits(0x3f2a_aaaa); // 0xaaaaaa.0p-24
    const LG2: f32 = f32::from_bits(0x3ecc_ce13); // 0xccce13.0p-25
    const LG3: f32 = f32::from_bits(0x3e91_e9ee); // 0x91e9ee.0p-25
    const LG4: f32 = f32::from_bits(0x3e78_9e26); // 0xf89e26.0p-26
    // Reduce x to 2^k * (1 + f), 1 + f in [sqrt(2)/2, sqrt(2)).
    let ix = x.to_bits().wrapping_add(0x3f80_0000 - 0x3f35_04f3);
    let k = (ix >> 23) as i32 - 0x7f;
    let m = f32::from_bits((ix & 0x007f_ffff) + 0x3f35_04f3);
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * LG4);
    let t2 = z * (LG1 + w * LG3);
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    let dk = k as f32;
    s * (hfsq + r) + dk * LN2_LO - hfsq + f + dk * LN2_HI
}

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
    let n_mels = plan.bands.len();
    // Frame-major block of BLOCK frames, stored band-major when full so the
    // output is written in runs rather than one value per row.
    const BLOCK: usize = 32;
    let mut block = vec![0f32; n_mels * BLOCK];
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
        let bt = t % BLOCK;
        let mels = &mut block[bt * n_mels..(bt + 1) * n_mels];
        for (mel, band) in mels.iter_mut().zip(&plan.bands) {
            let bins = &power[band.start..band.start + band.w.len()];
            let mut acc = 0f32;
            for (w, p) in band.w.iter().zip(bins) {
                acc += w * p;
            }
            *mel = acc + LOG_GUARD;
        }
        // One vectorisable pass of ln over the frame's bands.
        for v in mels.iter_mut() {
            *v = ln_f32(*v);
        }
        if bt + 1 == BLOCK || t + 1 == frames {
            let t0 = t - bt;
            for m in 0..n_mels {
                let row = &mut out[m * frames + t0..m * frames + t + 1];
                for (j, o) in row.iter_mut().enumerate() {
                    *o = block[j * n_mels + m];
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_f32_is_within_one_ulp() {
        // Log-spaced over the whole range the pipeline feeds it, plus
        // neighbours of 1 and of powers of two.
        let mut xs: Vec<f32> = (0..2_000_000)
            .map(|i| (2f64.powf(-24.0 + 64.0 * i as f64 / 2e6)) as f32)
            .collect();
        for e in -24..40 {
            let p = 2f32.powi(e);
            xs.extend([
                p,
                f32::from_bits(p.to_bits() + 1),
                f32::from_bits(p.to_bits() - 1),
            ]);
        }
        xs.extend([
            1.0,
            1.000_001,
            0.999_999,
            std::f32::consts::FRAC_1_SQRT_2,
            std::f32::consts::SQRT_2,
        ]);
        let mut worst = 0f64;
        for x in xs {
            let want = (x as f64).ln();
            let got = ln_f32(x) as f64;
            let ulp = (want as f32).abs().max(f32::MIN_POSITIVE) as f64 * f32::EPSILON as f64;
            let err = (got - want).abs() / ulp.max(1e-30);
            worst = worst.max(if want == 0.0 { (got - want).abs() } else { err });
        }
        assert!(worst < 1.0, "worst error {worst} ulp");
    }
}
