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

/// Frames whose Mel bands are computed together: their power spectra are
/// kept bin-major (`[bin][frame]`), so each band's weighted sum runs over
/// BLOCK frames at once (vectorised across frames, each lane adding the
/// same terms in the same order as one frame alone: the same bits) and lands
/// as a run of its output row.
const BLOCK: usize = 32;

/// Log-Mel of a signal at the profile's rate, fed in pieces as it is made
/// (decoded or resampled), so the signal is never held whole: pre-emphasis
/// `y[0] = x[0], y[n] = x[n] - a * x[n-1]` as the samples arrive, then every
/// frame whose window has all its samples, into `out` ([n_mels, frames]
/// row-major, `frames = 1 + len / hop`, `len` the signal's full length). The
/// values are those of the whole-signal computation: the same operations on
/// the same samples in the same order.
pub(crate) struct MelStream<'a> {
    plan: &'a Plan,
    preemph: f32,
    len: usize,
    frames: usize,
    out: &'a mut [f32],
    /// Pre-emphasised samples `at ..`.
    x: Vec<f32>,
    at: usize,
    /// Samples pushed so far, and the last one (raw) for the pre-emphasis.
    pushed: usize,
    prev: f32,
    /// Next frame to compute.
    t: usize,
    frame: Vec<f32>,
    spec: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// Power spectra of the current block, `[bin][frame in block]`.
    power: Vec<f32>,
}

impl<'a> MelStream<'a> {
    pub(crate) fn new(
        plan: &'a Plan,
        preemph: f32,
        len: usize,
        frames: usize,
        out: &'a mut [f32],
    ) -> MelStream<'a> {
        MelStream {
            plan,
            preemph,
            len,
            frames,
            out,
            x: Vec::with_capacity(4 * plan.n_fft + 8192),
            at: 0,
            pushed: 0,
            prev: 0.0,
            t: 0,
            frame: plan.fft.make_input_vec(),
            spec: plan.fft.make_output_vec(),
            scratch: plan.fft.make_scratch_vec(),
            power: vec![0f32; (plan.n_fft / 2 + 1) * BLOCK],
        }
    }

    /// The next samples of the signal (past `len` they are ignored).
    pub(crate) fn push(&mut self, samples: &[f32]) -> Result<(), Error> {
        let samples = &samples[..samples.len().min(self.len - self.pushed)];
        let a = self.preemph;
        if let (Some(&first), Some(&last)) = (samples.first(), samples.last()) {
            // As the in-place `x[n] -= a * x[n - 1]` over the whole signal
            // (`a == 0` leaves it as it is).
            self.x.reserve(samples.len());
            if a == 0.0 {
                self.x.extend_from_slice(samples);
            } else {
                self.x.push(if self.pushed == 0 {
                    first
                } else {
                    first - a * self.prev
                });
                self.x.extend(samples.windows(2).map(|w| w[1] - a * w[0]));
            }
            self.prev = last;
            self.pushed += samples.len();
        }
        // Frames whose window lies in the samples seen so far.
        while self.t < self.frames {
            let end = (self.t * self.plan.hop + self.plan.win_hi) as isize
                - (self.plan.n_fft / 2) as isize;
            if end > self.pushed as isize && self.pushed < self.len {
                break;
            }
            self.frame_at(self.t)?;
            self.t += 1;
        }
        // Drop what no later frame reads.
        let keep_from = ((self.t * self.plan.hop + self.plan.win_lo) as isize
            - (self.plan.n_fft / 2) as isize)
            .max(0) as usize;
        let drop = keep_from.saturating_sub(self.at).min(self.x.len());
        if drop >= self.x.len() / 2 && drop > 0 {
            self.x.drain(..drop);
            self.at += drop;
        }
        Ok(())
    }

    /// The remaining frames, once all `len` samples are in (zeros past the
    /// signal's end, the centre padding).
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        if self.pushed != self.len {
            return Err(Error::InvalidProfile(format!(
                "internal: {} of {} samples reached the Mel stage",
                self.pushed, self.len
            )));
        }
        while self.t < self.frames {
            self.frame_at(self.t)?;
            self.t += 1;
        }
        Ok(())
    }

    fn frame_at(&mut self, t: usize) -> Result<(), Error> {
        let plan = self.plan;
        let n_fft = plan.n_fft;
        let half = n_fft / 2;
        // Frame t covers x[t * hop - half ..][..n_fft]; only the window's
        // non-zero span is read, and zeros outside the signal.
        self.frame.fill(0.0);
        let base = (t * plan.hop) as isize - half as isize;
        let lo = (plan.win_lo as isize).max(-base);
        let hi = (plan.win_hi as isize).min(self.len as isize - base);
        if lo < hi {
            let (lo, hi) = (lo as usize, hi as usize);
            let from = (base + lo as isize) as usize - self.at;
            let src = &self.x[from..from + (hi - lo)];
            for ((f, &v), &w) in self.frame[lo..hi]
                .iter_mut()
                .zip(src)
                .zip(&plan.window[lo..hi])
            {
                *f = v * w;
            }
        }
        plan.fft
            .process_with_scratch(&mut self.frame, &mut self.spec, &mut self.scratch)
            .map_err(|e| Error::InvalidProfile(format!("FFT: {e}")))?;
        let bt = t % BLOCK;
        for (k, c) in self.spec.iter().enumerate() {
            self.power[k * BLOCK + bt] = c.re * c.re + c.im * c.im;
        }
        if bt + 1 == BLOCK || t + 1 == self.frames {
            self.mel_block(t - bt, bt + 1);
        }
        Ok(())
    }

    /// Mel bands of frames `t0 .. t0 + n` (their power spectra are in
    /// `power`), log taken, into their output rows.
    fn mel_block(&mut self, t0: usize, n: usize) {
        let frames = self.frames;
        for (m, band) in self.plan.bands.iter().enumerate() {
            let mut acc = [0f32; BLOCK];
            let rows = self.power.chunks_exact(BLOCK).skip(band.start);
            for (&w, row) in band.w.iter().zip(rows) {
                for (a, &p) in acc.iter_mut().zip(row) {
                    *a += w * p;
                }
            }
            for a in acc.iter_mut() {
                *a = ln_f32(*a + LOG_GUARD);
            }
            self.out[m * frames + t0..m * frames + t0 + n].copy_from_slice(&acc[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of any size (one sample, a prime, bigger than a frame, the
    /// rest at once) give the bits of the whole signal in one piece.
    #[test]
    fn stream_is_independent_of_piece_sizes() {
        let p = AudioProfile::default();
        let plan = plan(&p);
        let x: Vec<f32> = (0..50_000u32)
            .map(|i| ((i as f32 * 0.013).sin() * 0.5 + (i % 97) as f32 * 1e-3) - 0.05)
            .collect();
        let frames = p.frames(x.len() as u64) as usize;
        let run = |pieces: &mut dyn Iterator<Item = usize>| {
            let mut out = vec![0f32; p.n_mels as usize * frames];
            let mut s = MelStream::new(&plan, p.preemph, x.len(), frames, &mut out);
            let mut at = 0;
            while at < x.len() {
                let n = pieces.next().unwrap().min(x.len() - at);
                s.push(&x[at..at + n]).unwrap();
                at += n;
            }
            s.finish().unwrap();
            out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        };
        let whole = run(&mut std::iter::repeat(usize::MAX));
        assert!(whole.iter().any(|&b| b != 0));
        for sizes in [vec![1usize], vec![7, 1, 401, 160], vec![3331], vec![65_536]] {
            let got = run(&mut sizes.iter().copied().cycle());
            assert!(got == whole, "pieces {sizes:?}");
        }
        // Fewer samples than promised is an error, not a short output.
        let mut out = vec![0f32; p.n_mels as usize * frames];
        let mut s = MelStream::new(&plan, p.preemph, x.len(), frames, &mut out);
        s.push(&x[..100]).unwrap();
        assert!(s.finish().is_err());
    }

    /// The block computation (power spectra bin-major, each band summed over
    /// BLOCK frames at once) gives the bits of the plain one-frame-at-a-time
    /// definition: window, FFT, power, each band's weighted sum in bin
    /// order, guard, log. Profiles with narrow and wide bands; frame counts
    /// that end mid-block.
    #[test]
    fn block_mel_equals_frame_by_frame() {
        let narrow = AudioProfile {
            sample_rate: 22_050,
            n_fft: 256,
            win_length: 200,
            hop: 64,
            n_mels: 128,
            fmin_hz: 20,
            fmax_hz: 11_025,
            ..AudioProfile::default()
        };
        for (p, len) in [
            (AudioProfile::default(), 50_000usize),
            (AudioProfile::default(), 160 * (BLOCK + 3)),
            (narrow, 9_999),
        ] {
            let plan = plan(&p);
            let x: Vec<f32> = (0..len as u32)
                .map(|i| (i as f32 * 0.029).sin() * 0.4 + ((i * 7919) % 101) as f32 * 2e-3)
                .collect();
            let frames = p.frames(len as u64) as usize;
            let n_mels = p.n_mels as usize;
            let mut got = vec![0f32; n_mels * frames];
            let mut s = MelStream::new(&plan, p.preemph, len, frames, &mut got);
            s.push(&x).unwrap();
            s.finish().unwrap();
            // The definition, frame by frame, from the pre-emphasised signal.
            let mut y = x.clone();
            for n in (1..len).rev() {
                y[n] -= p.preemph * x[n - 1];
            }
            let (n_fft, half) = (plan.n_fft, plan.n_fft / 2);
            let mut frame = plan.fft.make_input_vec();
            let mut spec = plan.fft.make_output_vec();
            let mut want = vec![0f32; n_mels * frames];
            for t in 0..frames {
                for (i, f) in frame.iter_mut().enumerate() {
                    let at = (t * plan.hop + i) as isize - half as isize;
                    *f = if (0..len as isize).contains(&at) {
                        y[at as usize] * plan.window[i]
                    } else {
                        0.0
                    };
                }
                plan.fft.process(&mut frame, &mut spec).unwrap();
                let power: Vec<f32> = spec.iter().map(|c| c.re * c.re + c.im * c.im).collect();
                assert_eq!(power.len(), n_fft / 2 + 1);
                for (m, band) in plan.bands.iter().enumerate() {
                    let mut acc = 0f32;
                    for (j, w) in band.w.iter().enumerate() {
                        acc += w * power[band.start + j];
                    }
                    want[m * frames + t] = ln_f32(acc + LOG_GUARD);
                }
            }
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
            assert!(bits(&got) == bits(&want), "{p:?} len {len}");
        }
    }

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
