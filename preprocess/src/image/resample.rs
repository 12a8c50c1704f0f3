//! Pillow's antialiased bilinear resampling (`Image.resize(..., BILINEAR)`),
//! reproduced from its documented behaviour: separable, horizontal pass first
//! into an 8-bit intermediate, then vertical; a triangle filter of support
//! `max(scale, 1)`; weights normalised per output sample and quantised to
//! 22-bit fixed point; accumulators start at one half and are clamped to
//! 0..=255 after an arithmetic shift.
//!
//! Unlike Pillow we compute only the output samples the centre crop keeps:
//! each output sample depends on its own row's (or column's) weights only,
//! so the kept samples are bit-identical to Pillow's full-image result.

/// Fixed-point precision of the weights (Pillow's 8-bit path: 32 - 8 - 2).
pub(crate) const PRECISION_BITS: u32 = 22;
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Quantised weights for a run of output samples along one axis.
pub(crate) struct Coeffs {
    /// First input sample used by each output sample.
    pub start: Vec<u32>,
    /// Number of input samples used by each output sample.
    pub taps: Vec<u32>,
    /// `ksize` weights per output sample (the first `taps` meaningful).
    pub k: Vec<i32>,
    pub ksize: usize,
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Weights of output samples `first..first + count` when `in_size` input
/// samples are resampled to `out_size` (the same doubles, in the same order
/// of operations, as Pillow's coefficient precomputation).
pub(crate) fn coeffs(in_size: u32, out_size: u32, first: u32, count: u32) -> Coeffs {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = filterscale; // bilinear support is 1.0
    let ksize = (support.ceil() as usize) * 2 + 1;
    let ss = 1.0 / filterscale;
    let n = count as usize;
    let mut start = Vec::with_capacity(n);
    let mut taps = Vec::with_capacity(n);
    let mut k = vec![0i32; n * ksize];
    let mut w = vec![0f64; ksize];
    for (i, kk) in k.chunks_exact_mut(ksize).enumerate() {
        let xx = f64::from(first) + i as f64;
        let center = (xx + 0.5) * scale;
        // C's (int) cast truncates toward zero, as `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
        let cnt = (xmax - xmin).max(0) as usize;
        let cnt = cnt.min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(cnt) {
            let v = triangle(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            *wx = v;
            ww += v;
        }
        for (x, kx) in kk.iter_mut().enumerate().take(cnt) {
            let mut v = w[x];
            if ww != 0.0 {
                v /= ww;
            }
            let f = v * f64::from(1u32 << PRECISION_BITS);
            *kx = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        start.push(xmin as u32);
        taps.push(cnt as u32);
    }
    Coeffs {
        start,
        taps,
        k,
        ksize,
    }
}

#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The same weights laid out for fixed-length kernels: every output sample
/// reads exactly `k` inputs from `start` (moved left where the window would
/// run past the input, the weights moved right with it; the extra weights
/// are zero, so sums are unchanged).
pub(crate) struct Fixed {
    pub start: Vec<u32>,
    pub w: Vec<i32>,
    pub k: usize,
}

impl Coeffs {
    pub fn fixed(&self, in_size: u32) -> Fixed {
        let k = self.taps.iter().copied().max().unwrap_or(1).max(1) as usize;
        let n = self.start.len();
        let mut start = Vec::with_capacity(n);
        let mut w = vec![0i32; n * k];
        for i in 0..n {
            let taps = self.taps[i] as usize;
            let s = self.start[i] as usize;
            let s2 = s.min(in_size as usize - k);
            let shift = s - s2;
            w[i * k + shift..i * k + shift + taps]
                .copy_from_slice(&self.k[i * self.ksize..i * self.ksize + taps]);
            start.push(s2 as u32);
        }
        Fixed { start, w, k }
    }
}

/// Horizontal pass with `K` taps per output sample: `rows` rows of `src`
/// (interleaved, stride `src_stride`, first column = input column `col0`)
/// into `dst`, written row-planar (each row: `out_w` samples of channel 0,
/// then of channel 1, ...).
///
/// Per row, the `K` input pixels of every output pixel are first gathered
/// into `K` tap-major word arrays (an RGB pixel read as one little-endian
/// `u32`, the fourth byte ignored), so that the multiply-accumulate runs
/// over contiguous arrays with per-output weights and vectorises.
#[inline(always)]
fn horizontal_k<const CH: usize, const K: usize>(
    src: &[u8],
    src_stride: usize,
    col0: u32,
    rows: usize,
    f: &Fixed,
    dst: &mut [u8],
) {
    let out_w = f.start.len();
    let dst_stride = out_w * CH;
    // Tap-major weights: wt[t * out_w + j] = w[j][t].
    let mut wt = vec![0i32; K * out_w];
    for (j, w) in f.w.chunks_exact(K).enumerate() {
        for t in 0..K {
            wt[t * out_w + j] = w[t];
        }
    }
    let starts: Vec<usize> = f.start.iter().map(|&s| (s - col0) as usize * CH).collect();
    let mut g = vec![0u32; K * out_w];
    let mut acc = vec![0i32; CH * out_w];
    for r in 0..rows {
        let srow = &src[r * src_stride..];
        for (j, &s) in starts.iter().enumerate() {
            for t in 0..K {
                let i = s + t * CH;
                g[t * out_w + j] = if CH == 1 {
                    u32::from(srow[i])
                } else {
                    match srow.get(i..i + 4) {
                        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                        None => u32::from_le_bytes([srow[i], srow[i + 1], srow[i + 2], 0]),
                    }
                };
            }
        }
        acc.fill(HALF);
        for t in 0..K {
            let gt = &g[t * out_w..(t + 1) * out_w];
            let wtt = &wt[t * out_w..(t + 1) * out_w];
            for c in 0..CH {
                let a = &mut acc[c * out_w..(c + 1) * out_w];
                for ((a, &p), &w) in a.iter_mut().zip(gt).zip(wtt) {
                    *a += ((p >> (8 * c)) & 0xFF) as i32 * w;
                }
            }
        }
        let drow = &mut dst[r * dst_stride..(r + 1) * dst_stride];
        for (d, &a) in drow.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
}

/// Horizontal pass (see [`horizontal_k`]); `K` chosen from the weights.
#[inline(always)]
pub(crate) fn horizontal_fixed<const CH: usize>(
    src: &[u8],
    src_stride: usize,
    col0: u32,
    rows: usize,
    f: &Fixed,
    dst: &mut [u8],
) {
    macro_rules! go {
        ($($k:literal)*) => {
            match f.k {
                $($k => horizontal_k::<CH, $k>(src, src_stride, col0, rows, f, dst),)*
                _ => horizontal_dyn::<CH>(src, src_stride, col0, rows, f, dst),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8 9 10 11 12)
}

fn horizontal_dyn<const CH: usize>(
    src: &[u8],
    src_stride: usize,
    col0: u32,
    rows: usize,
    f: &Fixed,
    dst: &mut [u8],
) {
    let k = f.k;
    let out_w = f.start.len();
    let dst_stride = out_w * CH;
    for r in 0..rows {
        let srow = &src[r * src_stride..];
        let drow = &mut dst[r * dst_stride..(r + 1) * dst_stride];
        for (j, (&s0, w)) in f.start.iter().zip(f.w.chunks_exact(k)).enumerate() {
            let s0 = (s0 - col0) as usize * CH;
            let win = &srow[s0..s0 + k * CH];
            let mut acc = [HALF; CH];
            for (p, &wt) in win.chunks_exact(CH).zip(w) {
                for c in 0..CH {
                    acc[c] += i32::from(p[c]) * wt;
                }
            }
            for c in 0..CH {
                drow[c * out_w + j] = clip8(acc[c]);
            }
        }
    }
}

/// Vertical pass with `K` taps: output row `i` of width `width` from rows
/// `f.start[i] - row0 ..+K` of `src` (stride `stride`).
#[inline(always)]
fn vertical_k<const K: usize>(
    src: &[u8],
    stride: usize,
    width: usize,
    row0: u32,
    f: &Fixed,
    dst: &mut [u8],
) {
    for ((drow, &s0), w) in dst
        .chunks_exact_mut(width)
        .zip(&f.start)
        .zip(f.w.chunks_exact(K))
    {
        let s0 = (s0 - row0) as usize;
        let rows: [&[u8]; K] = core::array::from_fn(|t| {
            let at = (s0 + t) * stride;
            &src[at..at + width]
        });
        let w: [i32; K] = core::array::from_fn(|t| w[t]);
        for (x, d) in drow.iter_mut().enumerate() {
            let mut acc = HALF;
            for t in 0..K {
                acc += i32::from(rows[t][x]) * w[t];
            }
            *d = clip8(acc);
        }
    }
}

/// Vertical pass (see [`vertical_k`]); `K` chosen from the weights.
#[inline(always)]
pub(crate) fn vertical_fixed(
    src: &[u8],
    stride: usize,
    width: usize,
    row0: u32,
    f: &Fixed,
    dst: &mut [u8],
) {
    macro_rules! go {
        ($($k:literal)*) => {
            match f.k {
                $($k => vertical_k::<$k>(src, stride, width, row0, f, dst),)*
                _ => vertical_dyn(src, stride, width, row0, f, dst),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8 9 10 11 12)
}

fn vertical_dyn(src: &[u8], stride: usize, width: usize, row0: u32, f: &Fixed, dst: &mut [u8]) {
    let mut acc = vec![0i32; width];
    for ((drow, &s0), w) in dst
        .chunks_exact_mut(width)
        .zip(&f.start)
        .zip(f.w.chunks_exact(f.k))
    {
        let s0 = (s0 - row0) as usize;
        acc.fill(HALF);
        for (t, &wt) in w.iter().enumerate() {
            let at = (s0 + t) * stride;
            for (a, &p) in acc.iter_mut().zip(&src[at..at + width]) {
                *a += i32::from(p) * wt;
            }
        }
        for (d, &a) in drow.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
}
