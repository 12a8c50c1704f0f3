//! Band-limited sample-rate conversion: a polyphase Kaiser-windowed sinc.
//!
//! Quality (chosen to match soxr's "HQ" recipe, which the goldens use through
//! `librosa.resample(res_type="soxr_hq")`): linear phase, the stop band starts
//! at the lower of the two Nyquist frequencies (no aliasing into the kept
//! band), the pass band is flat to 91.3% of it, stop-band attenuation is
//! [`STOPBAND_DB`] dB (Kaiser beta from Kaiser's formula). Output sample `n`
//! sits exactly at input time `n * src / dst` (no delay), the signal is taken
//! as zero outside the input, and the output has `ceil(len * dst / src)`
//! samples, as `librosa.resample` returns.
//!
//! The ratio is reduced to `up / down`. With `up <= MAX_PHASES` every output
//! phase has its own exact filter. Other ratios (odd rates such as 44 101 Hz)
//! round the phase to the nearest of `phases` (a power of two chosen so the
//! table stays under [`MAX_TABLE`] coefficients): a timing error of at most
//! 1 / (2 * phases) input samples, below -70 dB at 8 kHz for every accepted
//! rate.
//!
//! Downsampling by a ratio with a small denominator (44.1 or 48 kHz ->
//! 16 kHz) runs in one step in the frequency domain ([`Spectral`]). Other
//! large downsampling ratios (odd rates; 16 instead of ~500 taps per
//! output) run in two stages with the same overall response:
//! the sharp low-pass as a linear-phase FIR at the input rate by FFT
//! overlap-save, then a short polyphase filter that only has to reject the
//! images of a signal already band-limited to the output Nyquist frequency
//! (pass band to it, stop band from `input rate - it`). Measured against the
//! one-stage filter: within 2e-5 (unit test `two_stage_matches_single_stage`).
//!
//! Arithmetic: filter design in f64, the filters in f32, each polyphase
//! output a dot product in f32 with 32 partial sums in a fixed order, the FFT
//! stage in f32 with fixed plans and block boundaries, so results are
//! bit-for-bit reproducible on one machine and independent of threads.

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::sync::{Arc, Mutex};

/// Stop-band attenuation of the anti-aliasing filter, dB.
pub const STOPBAND_DB: f64 = 120.0;
/// Pass band edge as a fraction of the lower Nyquist frequency (soxr HQ).
pub const PASSBAND: f64 = 0.913;
/// Exact polyphase tables up to this many phases.
const MAX_PHASES: u64 = 4096;
/// Most coefficients in one table (4 MiB of f32).
const MAX_TABLE: usize = 1 << 20;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// Zeroth-order modified Bessel function of the first kind (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..200 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// A polyphase filter table for one (src, dst) pair.
pub(crate) struct Table {
    up: u64,
    down: u64,
    /// Phases in the table (`up`, or fewer when rounded).
    phases: u64,
    /// Taps per phase, a multiple of 8.
    taps: usize,
    /// Input samples before the output instant that the first tap covers.
    left: usize,
    coef: Vec<f32>,
}

fn kaiser_beta(a: f64) -> f64 {
    if a > 50.0 {
        0.1102 * (a - 8.7)
    } else {
        0.5842 * (a - 21.0).powf(0.4) + 0.07886 * (a - 21.0)
    }
}

/// Half length (in input samples) of a Kaiser low-pass with the given
/// transition band (cycles per input sample), from Kaiser's estimate.
fn kaiser_half(pass: f64, stop: f64) -> f64 {
    let dw = 2.0 * std::f64::consts::PI * (stop - pass);
    ((STOPBAND_DB - 7.95) / (2.285 * dw) / 2.0).ceil().max(1.0)
}

/// Kaiser-windowed sinc low-pass at time `t` (input samples), cut-off `fc`
/// (cycles per input sample), support |t| < `half`; unit DC gain.
fn kaiser_sinc(t: f64, fc: f64, half: f64, beta: f64, i0b: f64) -> f64 {
    if t.abs() >= half {
        return 0.0;
    }
    let x = 2.0 * fc * t;
    let sinc = if x == 0.0 {
        1.0
    } else {
        (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
    };
    let r = t / half;
    2.0 * fc * sinc * bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0b
}

impl Table {
    /// Polyphase table for src -> dst with a low-pass whose pass band ends
    /// at `pass` and stop band starts at `stop` (cycles per input sample).
    fn new(src: u32, dst: u32, pass: f64, stop: f64) -> Table {
        let g = gcd(src as u64, dst as u64);
        let up = dst as u64 / g;
        let down = src as u64 / g;
        let fc = 0.5 * (stop + pass);
        let beta = kaiser_beta(STOPBAND_DB);
        let half = kaiser_half(pass, stop);
        let left = half as usize + 1;
        let taps = (2 * left).div_ceil(8) * 8;
        let phases = if up <= MAX_PHASES && up as usize * taps <= MAX_TABLE {
            up
        } else {
            let mut p = MAX_PHASES;
            while p > 1 && p as usize * taps > MAX_TABLE {
                p /= 2;
            }
            p
        };
        let i0b = bessel_i0(beta);
        let mut coef = vec![0f32; phases as usize * taps];
        for p in 0..phases as usize {
            let frac = p as f64 / phases as f64;
            let row = &mut coef[p * taps..(p + 1) * taps];
            for (k, c) in row.iter_mut().enumerate() {
                // Tap k reads input j = i0 - left + 1 + k; t = out time - j.
                let t = frac + left as f64 - 1.0 - k as f64;
                *c = kaiser_sinc(t, fc, half, beta, i0b) as f32;
            }
        }
        Table {
            up,
            down,
            phases,
            taps,
            left,
            coef,
        }
    }
}

/// Linear-phase FIR low-pass at the input rate by FFT overlap-save: the
/// sharp part of a downsampler, so that the polyphase stage after it can be
/// short. Zero delay: output n is centred on input n.
///
/// Two blocks go through one complex FFT (one as the real part, the next as
/// the imaginary part): the filter is real, so the two results come back
/// apart. That halves the transforms and skips the real FFT's pre- and
/// post-processing, which cost as much as the transform itself here.
struct FftLowpass {
    n: usize,
    /// Filter length (odd), centred at `half`.
    len: usize,
    half: usize,
    /// FFT of the zero-padded filter (all n bins), scaled by 1/n.
    h: Vec<Complex<f32>>,
    fwd: Arc<dyn Fft<f32>>,
    inv: Arc<dyn Fft<f32>>,
}

impl FftLowpass {
    fn new(pass: f64, stop: f64) -> FftLowpass {
        let half = kaiser_half(pass, stop);
        let fc = 0.5 * (stop + pass);
        let beta = kaiser_beta(STOPBAND_DB);
        let i0b = bessel_i0(beta);
        let h_half = half as usize;
        let len = 2 * h_half + 1;
        let n = (4 * len).next_power_of_two().max(4096);
        let mut planner64 = FftPlanner::<f64>::new();
        let f64fft = planner64.plan_fft_forward(n);
        let mut taps = vec![Complex::new(0f64, 0f64); n];
        for (k, v) in taps.iter_mut().take(len).enumerate() {
            v.re = kaiser_sinc(k as f64 - h_half as f64, fc, half, beta, i0b);
        }
        f64fft.process(&mut taps);
        let h = taps
            .iter()
            .map(|c| Complex::new((c.re / n as f64) as f32, (c.im / n as f64) as f32))
            .collect();
        let mut planner = FftPlanner::<f32>::new();
        FftLowpass {
            n,
            len,
            half: h_half,
            h,
            fwd: planner.plan_fft_forward(n),
            inv: planner.plan_fft_inverse(n),
        }
    }

    /// Output samples per FFT block.
    fn step(&self) -> usize {
        self.n - (self.len - 1)
    }

    /// The filtered signal at times `t0 .. t0 + count` (x is zero outside)
    /// into `y` (replaced), with `bufs` reused from call to call.
    #[inline(always)]
    fn apply_into<S: Samples + ?Sized>(
        &self,
        x: &S,
        t0: isize,
        count: usize,
        y: &mut Vec<f32>,
        bufs: &mut FftBufs,
    ) {
        let n = self.n;
        let step = self.step();
        y.clear();
        if bufs.buf.len() != n {
            bufs.buf = vec![Complex::new(0.0, 0.0); n];
            bufs.scratch = vec![
                Complex::new(0.0, 0.0);
                self.fwd
                    .get_inplace_scratch_len()
                    .max(self.inv.get_inplace_scratch_len())
            ];
        }
        let FftBufs { buf, scratch, tmp } = bufs;
        tmp.resize(n, 0.0);
        // Block b covers times t0 + b * step + i (i < step) and reads the
        // inputs x[t0 + b * step - half ..][..n].
        let input = |b: usize| {
            let start = t0 + (b * step) as isize - self.half as isize;
            let lo = (-start).max(0) as usize;
            let hi = ((x.samples() as isize - start).max(0) as usize).min(n);
            (start, lo, hi)
        };
        let mut b = 0usize;
        while y.len() < count {
            let second = y.len() + step < count;
            buf.fill(Complex::new(0.0, 0.0));
            for (which, blk) in [(0, b), (1, b + 1)] {
                if which == 1 && !second {
                    break;
                }
                let (start, lo, hi) = input(blk);
                if lo < hi {
                    let s0 = (start + lo as isize) as usize;
                    let part = &mut tmp[..hi - lo];
                    x.fill(s0, part);
                    for (z, &v) in buf[lo..hi].iter_mut().zip(part.iter()) {
                        if which == 0 {
                            z.re = v;
                        } else {
                            z.im = v;
                        }
                    }
                }
            }
            self.fwd.process_with_scratch(buf, scratch);
            for (c, h) in buf.iter_mut().zip(&self.h) {
                *c *= *h;
            }
            self.inv.process_with_scratch(buf, scratch);
            let valid = &buf[self.len - 1..];
            let take = step.min(count - y.len());
            y.extend(valid[..take].iter().map(|c| c.re));
            if second {
                let take = step.min(count - y.len());
                y.extend(valid[..take].iter().map(|c| c.im));
            }
            b += 2;
        }
    }
}

/// Downsampling by a ratio with a small denominator (44.1 kHz -> 16 kHz is
/// 160 / 441, 48 kHz -> 16 kHz is 1 / 3) in one step in the frequency
/// domain: each block of `n = down * 2^p` input samples goes through one
/// FFT, its spectrum is multiplied by the low-pass (the same Kaiser sinc as
/// the one-stage polyphase filter, sampled at the input rate), and only the
/// `m = n * up / down` bins below the output Nyquist frequency go through an
/// inverse FFT of size `m`, whose samples sit exactly on the output grid.
/// Blocks start at multiples of `down` input samples, so every output lands
/// on a bin-exact grid point and no fractional delay is needed; neighbouring
/// blocks overlap by the filter length (overlap-save). Two blocks share one
/// complex transform each way (the filter is real and symmetric, so the
/// first block comes back in the real part and the second in the imaginary
/// part). The filtering at the input rate, the decimation and the
/// polyphase stage of the two-stage path collapse into the small inverse
/// FFT: about half the work (`cargo xtask bench preprocess`, resample line).
/// Output within 2e-5 of the one-stage filter (unit test
/// `spectral_matches_single_stage`).
struct Spectral {
    n: usize,
    m: usize,
    /// Output samples per block: `step * up / down`.
    per_block: usize,
    /// Input samples per block (a multiple of `down`).
    step: usize,
    /// Output 0 sits this many samples into block 0 (a multiple of `down`
    /// past the filter's half length).
    lead: usize,
    /// The low-pass at bins `0 .. m / 2` (real: the filter is zero-phase),
    /// scaled by 1 / n; the bin at the output Nyquist frequency is dropped
    /// (the filter is at its stop band there).
    h: Vec<f32>,
    fwd: Arc<dyn Fft<f32>>,
    inv: Arc<dyn Fft<f32>>,
}

/// Largest forward transform of the spectral path.
const MAX_SPECTRAL_N: u64 = 1 << 16;

impl Spectral {
    /// `None` when the ratio's denominator makes the transforms too large
    /// (odd rates such as 44 101 Hz): the two-stage path takes those.
    fn new(up: u64, down: u64, pass: f64, stop: f64) -> Option<Spectral> {
        let half = kaiser_half(pass, stop);
        let h_half = half as usize;
        // Room for the filter on both sides and the lead, at ~80 % or more
        // of each block used.
        let mut n = down;
        while n < 4096 || n < 16 * (h_half as u64 + down) {
            n *= 2;
        }
        if n > MAX_SPECTRAL_N {
            return None;
        }
        let m = (n * up / down) as usize;
        let n = n as usize;
        let down_us = down as usize;
        let lead = (h_half + 1).div_ceil(down_us) * down_us;
        // Block-local times lead .. lead + step - 1 must see the whole filter:
        // lead + step - 1 + h_half <= n - 1.
        let step = (n - h_half - lead) / down_us * down_us;
        if step == 0 || m < 4 {
            return None;
        }
        let fc = 0.5 * (stop + pass);
        let beta = kaiser_beta(STOPBAND_DB);
        let i0b = bessel_i0(beta);
        let mut taps = vec![Complex::new(0f64, 0f64); n];
        for k in 0..=h_half {
            let v = kaiser_sinc(k as f64, fc, half, beta, i0b);
            taps[k].re = v;
            if k > 0 {
                taps[n - k].re = v;
            }
        }
        FftPlanner::<f64>::new()
            .plan_fft_forward(n)
            .process(&mut taps);
        let h = taps[..m / 2]
            .iter()
            .map(|c| (c.re / n as f64) as f32)
            .collect();
        let mut planner = FftPlanner::<f32>::new();
        Some(Spectral {
            n,
            m,
            per_block: step / down_us * up as usize,
            step,
            lead,
            h,
            fwd: planner.plan_fft_forward(n),
            inv: planner.plan_fft_inverse(m),
        })
    }

    /// All `n_out` outputs of `x` at `up / down` of its rate, handed to
    /// `sink` a block at a time.
    #[inline(always)]
    fn run<S: Samples + ?Sized>(
        &self,
        x: &S,
        up: u64,
        down: u64,
        n_out: usize,
        sink: &mut (dyn FnMut(&[f32]) + '_),
    ) {
        let (n, m) = (self.n, self.m);
        let mut done = 0usize;
        let mut chunk = Vec::with_capacity(self.per_block);
        let mut buf = vec![Complex::new(0f32, 0f32); n];
        let mut spec = vec![Complex::new(0f32, 0f32); m];
        let mut scratch = vec![
            Complex::new(0f32, 0f32);
            self.fwd
                .get_inplace_scratch_len()
                .max(self.inv.get_inplace_scratch_len())
        ];
        let mut tmp = vec![0f32; n];
        let len = x.samples();
        // Output j of the inverse transform sits at block-local time
        // j * down / up; block-local time `lead` is the block's first output.
        let j0 = (self.lead as u64 * up / down) as usize;
        let mut b = 0usize;
        while done < n_out {
            buf.fill(Complex::new(0.0, 0.0));
            let second = done + self.per_block < n_out;
            for (which, blk) in [(0, b), (1, b + 1)] {
                if which == 1 && !second {
                    break;
                }
                // Block `blk` covers inputs x[blk * step - lead ..][..n].
                let start = (blk * self.step) as isize - self.lead as isize;
                let lo = (-start).max(0) as usize;
                let hi = ((len as isize - start).max(0) as usize).min(n);
                if lo < hi {
                    let part = &mut tmp[..hi - lo];
                    x.fill((start + lo as isize) as usize, part);
                    if which == 0 {
                        for (z, &v) in buf[lo..hi].iter_mut().zip(part.iter()) {
                            z.re = v;
                        }
                    } else {
                        for (z, &v) in buf[lo..hi].iter_mut().zip(part.iter()) {
                            z.im = v;
                        }
                    }
                }
            }
            self.fwd.process_with_scratch(&mut buf, &mut scratch);
            // Bins below the output Nyquist frequency, positive and
            // negative, times the (real) filter; the Nyquist bin stays 0.
            let half = m / 2;
            spec[0] = buf[0] * self.h[0];
            for k in 1..half {
                spec[k] = buf[k] * self.h[k];
                spec[m - k] = buf[n - k] * self.h[k];
            }
            spec[half] = Complex::new(0.0, 0.0);
            self.inv.process_with_scratch(&mut spec, &mut scratch);
            let take = self.per_block.min(n_out - done);
            chunk.clear();
            chunk.extend(spec[j0..j0 + take].iter().map(|c| c.re));
            sink(&chunk);
            done += take;
            if second {
                let take = self.per_block.min(n_out - done);
                chunk.clear();
                chunk.extend(spec[j0..j0 + take].iter().map(|c| c.im));
                sink(&chunk);
                done += take;
            }
            b += 2;
        }
    }
}

/// Work buffers of [`FftLowpass::apply_into`].
#[derive(Default)]
struct FftBufs {
    buf: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// One block of input samples as the source gives them.
    tmp: Vec<f32>,
}

/// Input samples of the resampler, pulled in blocks: a slice, or a WAV file
/// decoded block by block as they are needed (so a file being resampled is
/// never held in f32 in full).
pub(crate) trait Samples {
    fn samples(&self) -> usize;
    /// Samples `start .. start + out.len()` (within `samples()`) into `out`.
    fn fill(&self, start: usize, out: &mut [f32]);
}

impl Samples for [f32] {
    fn samples(&self) -> usize {
        self.len()
    }
    fn fill(&self, start: usize, out: &mut [f32]) {
        out.copy_from_slice(&self[start..start + out.len()]);
    }
}

/// How one (src, dst) pair is converted.
pub(crate) struct Resampler {
    pre: Option<FftLowpass>,
    table: Table,
    /// The one-step frequency-domain path, where the ratio allows it
    /// (then `pre` and `table` are unused).
    spectral: Option<Spectral>,
}

impl Resampler {
    fn new(src: u32, dst: u32) -> Resampler {
        // Lower Nyquist in cycles per input sample.
        let nyq = 0.5 * (dst as f64 / src as f64).min(1.0);
        let (pass, stop) = (PASSBAND * nyq, nyq);
        if dst < src {
            // Two stages when cheaper: the sharp low-pass by FFT at the input
            // rate, then a polyphase stage that only has to reject the
            // images of a signal already band-limited to `nyq` (pass band to
            // nyq, stop band from 1 - nyq).
            let single = 2.0 * kaiser_half(pass, stop);
            let short = 2.0 * kaiser_half(nyq, 1.0 - nyq);
            if short * 4.0 <= single {
                let table = Table::new(src, dst, nyq, 1.0 - nyq);
                let spectral = Spectral::new(table.up, table.down, pass, stop);
                return Resampler {
                    pre: spectral.is_none().then(|| FftLowpass::new(pass, stop)),
                    table,
                    spectral,
                };
            }
        }
        Resampler {
            pre: None,
            table: Table::new(src, dst, pass, stop),
            spectral: None,
        }
    }
}

type Cache = Mutex<Vec<((u32, u32), Arc<Resampler>)>>;
static TABLES: Cache = Mutex::new(Vec::new());
const CACHE_SLOTS: usize = 8;

fn resampler(src: u32, dst: u32) -> Arc<Resampler> {
    let key = (src, dst);
    {
        let cache = TABLES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = cache.iter().find(|(k, _)| *k == key) {
            return t.clone();
        }
    }
    let t = Arc::new(Resampler::new(src, dst));
    let mut cache = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= CACHE_SLOTS {
        cache.remove(0);
    }
    cache.push((key, t.clone()));
    t
}

/// Number of output samples for `len` input samples: `ceil(len * dst / src)`.
pub fn output_len(len: u64, src: u32, dst: u32) -> u64 {
    (len * dst as u64).div_ceil(src as u64)
}

/// Dot product in f32 with partial sums in a fixed order (vectorisable and
/// deterministic; the order depends only on the length). `a.len() ==
/// b.len()`, a multiple of 8. Short filters (the second stage of a
/// downsampler) take 8 partial sums, long ones 32.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [[0f32; 8]; 4];
    let (mut ca, mut cb) = (a.chunks_exact(32), b.chunks_exact(32));
    if a.len() >= 64 {
        for (x, y) in (&mut ca).zip(&mut cb) {
            for j in 0..4 {
                for i in 0..8 {
                    acc[j][i] += x[8 * j + i] * y[8 * j + i];
                }
            }
        }
    }
    let (ra, rb) = if a.len() >= 64 {
        (ca.remainder(), cb.remainder())
    } else {
        (a, b)
    };
    for (x, y) in ra.chunks_exact(8).zip(rb.chunks_exact(8)) {
        for i in 0..8 {
            acc[0][i] += x[i] * y[i];
        }
    }
    let mut s = [0f32; 8];
    for i in 0..8 {
        s[i] = (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]);
    }
    ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))
}

/// Resamples `x` from `src` Hz to `dst` Hz (see the module doc). Both rates
/// must be non-zero; equal rates return a copy.
pub fn resample(x: &[f32], src: u32, dst: u32) -> Vec<f32> {
    if src == dst || src == 0 || dst == 0 {
        return x.to_vec();
    }
    resample_from(x, src, dst)
}

/// [`resample`] of samples pulled from `x` (`src != dst`, both non-zero).
pub(crate) fn resample_from<S: Samples + ?Sized>(x: &S, src: u32, dst: u32) -> Vec<f32> {
    let mut out = Vec::with_capacity(output_len(x.samples() as u64, src, dst) as usize);
    resample_each(x, src, dst, &mut |c| out.extend_from_slice(c));
    out
}

/// [`resample`] of samples pulled from `x`, the output handed to `sink` in
/// pieces as it is made (`src != dst`, both non-zero).
pub(crate) fn resample_each<S: Samples + ?Sized>(
    x: &S,
    src: u32,
    dst: u32,
    sink: &mut (dyn FnMut(&[f32]) + '_),
) {
    // Run with the best vector extension the CPU has (pulp picks it at run
    // time; the loops below inline into that function). The arithmetic is
    // plain f32 multiplies and adds in a fixed order (no fused multiply-add
    // is formed), so every path gives the same bits.
    type Sink<'s> = dyn FnMut(&[f32]) + 's;
    struct Job<'a, 's, S: ?Sized>(&'a Resampler, &'a S, usize, &'a mut Sink<'s>);
    impl<S: Samples + ?Sized> pulp::WithSimd for Job<'_, '_, S> {
        type Output = ();
        #[inline(always)]
        fn with_simd<V: pulp::Simd>(self, _simd: V) {
            run_each(self.0, self.1, self.2, self.3)
        }
    }
    let r = resampler(src, dst);
    let n_out = output_len(x.samples() as u64, src, dst) as usize;
    pulp::Arch::new().dispatch(Job(&r, x, n_out, sink))
}

/// Where output `n` sits: input time `n * down / up = i0 + rem / up`,
/// stepped exactly in integers.
struct Pos {
    i0: usize,
    rem: u64,
    step_i: usize,
    step_r: u64,
}

impl Pos {
    /// First input sample index (in padded coordinates) and phase row.
    #[inline(always)]
    fn at(&self, t: &Table) -> (usize, usize) {
        if t.phases == t.up {
            (self.i0, self.rem as usize)
        } else {
            // Nearest of `phases` phases (integer rounding, deterministic).
            let q = (self.rem * t.phases * 2 + t.up) / (2 * t.up);
            if q == t.phases {
                (self.i0 + 1, 0)
            } else {
                (self.i0, q as usize)
            }
        }
    }

    #[inline(always)]
    fn advance(&mut self, up: u64) {
        self.i0 += self.step_i;
        self.rem += self.step_r;
        if self.rem >= up {
            self.rem -= up;
            self.i0 += 1;
        }
    }
}

/// The second stage of a downsampler for a short filter of `T` taps (a
/// multiple of 8, under 64) over `part` = xp[part_at..]: the outputs whose
/// windows lie in `part`. `EXACT`: one table row per phase (no phase
/// rounding). The sums of [`dot`] for fewer than 64 taps (eight lanes
/// accumulated over the taps, then `((s0 + s4) + (s1 + s5)) + ((s2 + s6) +
/// (s3 + s7))`), in AVX registers where the CPU has them: left to the
/// compiler, the eight accumulators went through the stack, one lane at a
/// time.
#[inline(always)]
fn short<const T: usize, const EXACT: bool>(
    t: &Table,
    part: &[f32],
    part_at: usize,
    pos: &mut Pos,
    out: &mut Vec<f32>,
    n_out: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return simd.vectorize(v3::Short::<T, EXACT> {
            simd,
            t,
            part,
            part_at,
            pos,
            out,
            n_out,
        });
    }
    let rows: &[[f32; T]] = t.coef.as_chunks::<T>().0;
    while out.len() < n_out {
        let (i, p) = pos.at(t);
        let Some(xs) = part.get(i - part_at..i - part_at + T) else {
            break;
        };
        out.push(dot(xs, &rows[p]));
        pos.advance(t.up);
    }
}

#[cfg(target_arch = "x86_64")]
mod v3 {
    use super::{Pos, Table};
    use core::arch::x86_64::{__m128, __m256};
    use pulp::x86::V3;

    /// [`super::short`] with AVX.
    pub(super) struct Short<'a, const T: usize, const EXACT: bool> {
        pub simd: V3,
        pub t: &'a Table,
        pub part: &'a [f32],
        pub part_at: usize,
        pub pos: &'a mut Pos,
        pub out: &'a mut Vec<f32>,
        pub n_out: usize,
    }

    impl<const T: usize, const EXACT: bool> pulp::NullaryFnOnce for Short<'_, T, EXACT> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let Short {
                simd,
                t,
                part,
                part_at,
                pos,
                out,
                n_out,
            } = self;
            let (a, s) = (simd.avx, simd.sse);
            let coef = t.coef.as_chunks::<8>().0;
            let per = T / 8;
            while out.len() < n_out {
                let (i, p) = if EXACT {
                    (pos.i0, pos.rem as usize)
                } else {
                    pos.at(t)
                };
                let Some(xs) = part.get(i - part_at..i - part_at + T) else {
                    break;
                };
                let xs = xs.as_chunks::<8>().0;
                let cs = &coef[p * per..(p + 1) * per];
                let mut acc = a._mm256_setzero_ps();
                for (x, c) in xs.iter().zip(cs) {
                    let (x, c): (__m256, __m256) = (pulp::cast(*x), pulp::cast(*c));
                    acc = a._mm256_add_ps(acc, a._mm256_mul_ps(x, c));
                }
                // [s0 + s4, s1 + s5, s2 + s6, s3 + s7], then pairs, then the two.
                let q: __m128 = s._mm_add_ps(
                    a._mm256_castps256_ps128(acc),
                    a._mm256_extractf128_ps::<1>(acc),
                );
                let h: [f32; 4] = pulp::cast(simd.sse3._mm_hadd_ps(q, q));
                out.push(h[0] + h[1]);
                pos.advance(t.up);
            }
        }
    }
}

#[inline(always)]
fn run_each<S: Samples + ?Sized>(
    r: &Resampler,
    x: &S,
    n_out: usize,
    sink: &mut (dyn FnMut(&[f32]) + '_),
) {
    match &r.spectral {
        Some(sp) => sp.run(x, r.table.up, r.table.down, n_out, sink),
        None => sink(&run(r, x, n_out)),
    }
}

/// The polyphase paths (one or two stages), whole.
#[inline(always)]
fn run<S: Samples + ?Sized>(r: &Resampler, x: &S, n_out: usize) -> Vec<f32> {
    let t = &r.table;
    let taps = t.taps;
    let mut out = Vec::with_capacity(n_out);
    let mut pos = Pos {
        i0: 0,
        rem: 0,
        step_i: (t.down / t.up) as usize,
        step_r: t.down % t.up,
    };
    match &r.pre {
        None => {
            // Padded input: xp[left - 1 + j] = x[j], so every tap window is
            // in bounds. Tap k reads x[i - left + 1 + k] = xp[i + k].
            let len = x.samples();
            let mut xp = vec![0f32; t.left + len + taps + 1];
            x.fill(0, &mut xp[t.left - 1..t.left - 1 + len]);
            for _ in 0..n_out {
                let (i, p) = pos.at(t);
                out.push(dot(&xp[i..i + taps], &t.coef[p * taps..(p + 1) * taps]));
                pos.advance(t.up);
            }
        }
        Some(pre) => {
            // With a first stage, xp holds the low-passed signal, tails
            // included (they are not zero outside x), made in chunks of
            // `chunk` positions as the outputs advance (i only grows), so it
            // never holds the whole signal; `part` is xp[part_at..].
            let chunk = 16 * pre.step();
            let mut part = Vec::with_capacity(chunk + taps);
            let mut bufs = FftBufs::default();
            while out.len() < n_out {
                let (part_at, _) = pos.at(t);
                pre.apply_into(
                    x,
                    part_at as isize + 1 - t.left as isize,
                    chunk + taps,
                    &mut part,
                    &mut bufs,
                );
                let exact = t.phases == t.up;
                match (taps, exact) {
                    (16, true) => short::<16, true>(t, &part, part_at, &mut pos, &mut out, n_out),
                    (16, false) => short::<16, false>(t, &part, part_at, &mut pos, &mut out, n_out),
                    (24, true) => short::<24, true>(t, &part, part_at, &mut pos, &mut out, n_out),
                    (24, false) => short::<24, false>(t, &part, part_at, &mut pos, &mut out, n_out),
                    (32, true) => short::<32, true>(t, &part, part_at, &mut pos, &mut out, n_out),
                    (32, false) => short::<32, false>(t, &part, part_at, &mut pos, &mut out, n_out),
                    _ => {
                        while out.len() < n_out {
                            let (i, p) = pos.at(t);
                            if i + taps > part_at + part.len() {
                                break;
                            }
                            let xs = &part[i - part_at..i - part_at + taps];
                            out.push(dot(xs, &t.coef[p * taps..(p + 1) * taps]));
                            pos.advance(t.up);
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(output_len(44_100, 44_100, 16_000), 16_000);
        assert_eq!(output_len(1, 44_100, 16_000), 1);
        assert_eq!(output_len(0, 8_000, 16_000), 0);
        assert_eq!(output_len(3, 8_000, 16_000), 6);
    }

    #[test]
    fn dc_gain_is_one() {
        for (s, d) in [
            (44_100, 16_000),
            (8_000, 16_000),
            (22_050, 16_000),
            (44_101, 16_000),
        ] {
            let x = vec![0.5f32; s as usize];
            let y = resample(&x, s, d);
            let mid = &y[y.len() / 4..3 * y.len() / 4];
            for v in mid {
                assert!((v - 0.5).abs() < 1e-4, "{s}->{d}: {v}");
            }
        }
    }

    #[test]
    fn two_stage_matches_single_stage() {
        let (s, d) = (44_100u32, 16_000u32);
        let x: Vec<f32> = (0..20_000u32)
            .map(|i| {
                let t = i as f64 / s as f64;
                ((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 0.3
                    + (2.0 * std::f64::consts::PI * 7_000.0 * t).sin() * 0.1
                    + (2.0 * std::f64::consts::PI * 15_000.0 * t).sin() * 0.2)
                    as f32
            })
            .collect();
        let two = {
            let mut r = Resampler::new(s, d);
            let (up, down) = (r.table.up, r.table.down);
            assert!(
                r.spectral.take().is_some(),
                "44.1 kHz takes the spectral path"
            );
            let nyq = 0.5 * d as f64 / s as f64;
            r.pre = Some(FftLowpass::new(PASSBAND * nyq, nyq));
            let n_out = output_len(x.len() as u64, s, d) as usize;
            assert_eq!((up, down), (160, 441));
            run(&r, x.as_slice(), n_out)
        };
        let nyq = 0.5 * d as f64 / s as f64;
        let one = Resampler {
            pre: None,
            table: Table::new(s, d, PASSBAND * nyq, nyq),
            spectral: None,
        };
        let t = &one.table;
        let mut xp = vec![0f32; t.left + x.len() + t.taps + 1];
        xp[t.left - 1..t.left - 1 + x.len()].copy_from_slice(&x);
        let mut worst = 0f32;
        for (n, v) in two.iter().enumerate() {
            let pos = n as u64 * t.down;
            let (i, p) = ((pos / t.up) as usize, (pos % t.up) as usize);
            let r = dot(&xp[i..i + t.taps], &t.coef[p * t.taps..(p + 1) * t.taps]);
            worst = worst.max((r - v).abs());
        }
        assert!(worst < 2e-5, "{worst}");
    }

    /// The one-stage polyphase filter (the reference response) at every
    /// output of `x`.
    fn single_stage(x: &[f32], s: u32, d: u32) -> Vec<f32> {
        let nyq = 0.5 * (d as f64 / s as f64).min(1.0);
        let one = Resampler {
            pre: None,
            table: Table::new(s, d, PASSBAND * nyq, nyq),
            spectral: None,
        };
        run(&one, x, output_len(x.len() as u64, s, d) as usize)
    }

    /// The spectral path gives the one-stage filter's outputs (to f32
    /// round-off) at every position: the first and last (where the signal
    /// is zero outside), across block boundaries, and for inputs shorter
    /// than one block; every ratio that takes it, and the two-stage
    /// fallback for a ratio that does not.
    #[test]
    fn spectral_matches_single_stage() {
        let sig = |s: u32, len: usize| -> Vec<f32> {
            (0..len)
                .map(|i| {
                    let t = i as f64 / s as f64;
                    ((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 0.3
                        + (2.0 * std::f64::consts::PI * 5_000.0 * t).sin() * 0.2
                        + (2.0 * std::f64::consts::PI * 0.37 * s as f64 * t).sin() * 0.2
                        + ((i as u64 * 2_654_435_761) % 1000) as f64 * 2e-4
                        - 0.1) as f32
                })
                .collect()
        };
        for (s, d) in [
            (44_100u32, 16_000u32),
            (48_000, 16_000),
            (22_050, 16_000),
            (32_000, 16_000),
            (24_000, 16_000),
            (96_000, 16_000),
            (44_101, 16_000),
        ] {
            let r = resampler(s, d);
            assert_eq!(r.spectral.is_some(), s != 44_101, "{s}: path");
            for len in [1usize, 7, 441, 3000, 100_000] {
                let x = sig(s, len);
                let got = resample(&x, s, d);
                let want = single_stage(&x, s, d);
                assert_eq!(got.len(), want.len(), "{s}: {len}");
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                // 44 101 Hz rounds its phases (module doc: below -70 dB),
                // differently in its two stages than in one.
                let bound = if r.spectral.is_some() { 2e-5 } else { 1e-4 };
                assert!(worst < bound, "{s} -> {d}, {len} samples: {worst}");
            }
        }
    }

    /// The second stage's AVX kernel gives the bits of the portable [`dot`]
    /// (the documented "same bits on every path").
    #[test]
    fn short_kernel_matches_dot() {
        let x: Vec<f32> = (0..50_000u32)
            .map(|i| (i as f32 * 0.37).sin() * 0.6 + (i as f32 * 0.011).cos() * 0.3)
            .collect();
        for (s, d) in [(44_100u32, 16_000u32), (48_000, 16_000)] {
            let nyq = 0.5 * d as f64 / s as f64;
            let r = Resampler {
                pre: Some(FftLowpass::new(PASSBAND * nyq, nyq)),
                table: Table::new(s, d, nyq, 1.0 - nyq),
                spectral: None,
            };
            let (Some(pre), t) = (&r.pre, &r.table) else {
                unreachable!()
            };
            let mut part = Vec::new();
            pre.apply_into(
                x.as_slice(),
                1 - t.left as isize,
                4 * pre.step(),
                &mut part,
                &mut FftBufs::default(),
            );
            let mk = || Pos {
                i0: 0,
                rem: 0,
                step_i: (t.down / t.up) as usize,
                step_r: t.down % t.up,
            };
            let (mut pos, mut got) = (mk(), Vec::new());
            match t.taps {
                16 => short::<16, true>(t, &part, 0, &mut pos, &mut got, usize::MAX),
                24 => short::<24, true>(t, &part, 0, &mut pos, &mut got, usize::MAX),
                32 => short::<32, true>(t, &part, 0, &mut pos, &mut got, usize::MAX),
                n => panic!("{s}: {n} taps"),
            }
            assert!(got.len() > 1000, "{}", got.len());
            let mut pos = mk();
            for (n, g) in got.iter().enumerate() {
                let (i, p) = pos.at(t);
                let want = dot(&part[i..i + t.taps], &t.coef[p * t.taps..(p + 1) * t.taps]);
                assert!(*g == want, "{s}: output {n}: {g} vs {want}");
                pos.advance(t.up);
            }
        }
    }

    #[test]
    fn tone_passes_and_alias_is_rejected() {
        let s = 44_100u32;
        let tone = |f: f64| -> Vec<f32> {
            (0..s)
                .map(|i| (2.0 * std::f64::consts::PI * f * i as f64 / s as f64).sin() as f32)
                .collect()
        };
        let rms = |y: &[f32]| {
            let m = &y[2000..y.len() - 2000];
            (m.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / m.len() as f64).sqrt()
        };
        let pass = rms(&resample(&tone(1000.0), s, 16_000));
        assert!((pass - 0.5f64.sqrt()).abs() < 1e-3, "{pass}");
        let stop = rms(&resample(&tone(12_000.0), s, 16_000));
        assert!(stop < 1e-5, "{stop}");
    }
}
