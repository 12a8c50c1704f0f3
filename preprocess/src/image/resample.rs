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

impl Coeffs {
    /// Input range [lo, hi) touched by all output samples here.
    pub fn span(&self) -> (u32, u32) {
        let lo = self.start.iter().copied().min().unwrap_or(0);
        let hi = self
            .start
            .iter()
            .zip(&self.taps)
            .map(|(&s, &n)| s + n)
            .max()
            .unwrap_or(0);
        (lo, hi)
    }
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

/// Horizontal pass over `rows` rows of `src` (row stride `src_stride`
/// bytes, `CH` interleaved channels, first column = input column `col0`):
/// writes `cx.start.len()` output samples per row into `dst` (row stride
/// `cx.start.len() * CH`).
pub(crate) fn horizontal<const CH: usize>(
    src: &[u8],
    src_stride: usize,
    col0: u32,
    rows: usize,
    cx: &Coeffs,
    dst: &mut [u8],
) {
    let out_w = cx.start.len();
    let dst_stride = out_w * CH;
    for r in 0..rows {
        let srow = &src[r * src_stride..];
        let drow = &mut dst[r * dst_stride..(r + 1) * dst_stride];
        for (j, dpx) in drow.chunks_exact_mut(CH).enumerate() {
            let s0 = (cx.start[j] - col0) as usize;
            let n = cx.taps[j] as usize;
            let k = &cx.k[j * cx.ksize..j * cx.ksize + n];
            let px = &srow[s0 * CH..(s0 + n) * CH];
            let mut acc = [HALF; CH];
            for (p, &kt) in px.chunks_exact(CH).zip(k) {
                for c in 0..CH {
                    acc[c] += i32::from(p[c]) * kt;
                }
            }
            for c in 0..CH {
                dpx[c] = clip8(acc[c]);
            }
        }
    }
}

/// Vertical pass: output row `i` is the weighted sum of rows
/// `cy.start[i] - row0 ..` of `src` (each `width` bytes, stride `stride`).
pub(crate) fn vertical(
    src: &[u8],
    stride: usize,
    width: usize,
    row0: u32,
    cy: &Coeffs,
    dst: &mut [u8],
) {
    let mut acc = vec![0i32; width];
    for (i, drow) in dst.chunks_exact_mut(width).enumerate() {
        let s0 = (cy.start[i] - row0) as usize;
        let n = cy.taps[i] as usize;
        let k = &cy.k[i * cy.ksize..i * cy.ksize + n];
        acc.fill(HALF);
        for (t, &kt) in k.iter().enumerate() {
            let srow = &src[(s0 + t) * stride..(s0 + t) * stride + width];
            for (a, &p) in acc.iter_mut().zip(srow) {
                *a += i32::from(p) * kt;
            }
        }
        for (d, &a) in drow.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
}
