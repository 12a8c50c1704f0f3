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

impl Fixed {
    /// `[lo, hi)`: the source samples these weights read.
    pub fn span(&self) -> (u32, u32) {
        let lo = self.start.iter().copied().min().unwrap_or(0);
        let hi = self.start.iter().copied().max().unwrap_or(0) + self.k as u32;
        (lo, hi)
    }
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

/// Horizontal pass: `rows` rows of `src` (interleaved, `CH` channels,
/// stride `src_stride`, first column = input column `col0`) into `dst`,
/// written row-planar (each row: `out_w` samples of channel 0, then of
/// channel 1, ...).
///
/// Each row is split into one row per channel and run through an
/// [`HKernel`].
#[inline(always)]
pub(crate) fn horizontal_fixed<const CH: usize>(
    src: &[u8],
    src_stride: usize,
    col0: u32,
    rows: usize,
    f: &Fixed,
    dst: &mut [u8],
) {
    let out_w = f.start.len();
    if out_w == 0 {
        return;
    }
    let hk = HKernel::new(f, col0);
    let n = hk.src_len();
    let mut planes = vec![0u8; if CH == 1 { 0 } else { CH * n }];
    for r in 0..rows {
        let srow = &src[r * src_stride..][..n * CH];
        let drow = &mut dst[r * out_w * CH..(r + 1) * out_w * CH];
        if CH == 1 {
            hk.apply(srow, drow);
            continue;
        }
        for (j, p) in srow.chunks_exact(CH).enumerate() {
            for (c, &v) in p.iter().enumerate() {
                planes[c * n + j] = v;
            }
        }
        for (plane, d) in planes.chunks_exact(n).zip(drow.chunks_exact_mut(out_w)) {
            hk.apply(plane, d);
        }
    }
}

/// Vertical pass: output row `i` of width `width` from rows
/// `f.start[i] - row0 ..+k` of `src` (stride `stride`), through
/// [`vertical_row`].
#[inline(always)]
pub(crate) fn vertical_fixed(
    src: &[u8],
    stride: usize,
    width: usize,
    row0: u32,
    f: &Fixed,
    dst: &mut [u8],
) {
    let k = f.k;
    let mut rows: Vec<&[u8]> = Vec::with_capacity(k);
    for ((drow, &s0), w) in dst
        .chunks_exact_mut(width)
        .zip(&f.start)
        .zip(f.w.chunks_exact(k))
    {
        let s0 = (s0 - row0) as usize;
        rows.clear();
        rows.extend((0..k).map(|t| &src[(s0 + t) * stride..][..width]));
        vertical_row(&rows, w, drow);
    }
}

// ---------------------------------------------------------------------------
// Planar kernels.
//
// Exactness: every weight is split as `w = hi * 2^11 + lo` with
// `lo = w & 0x7FF` and `hi = w >> 11` (both fit an i16), so that
// `HALF + sum(p * w) = ((sum(p * hi) + 2^10) << 11) + sum(p * lo)`. The two
// partial sums are computed with `vpmaddwd` (i16 x i16 products added in
// pairs into i32 lanes), which is exact: the pixels are 0..=255 and the
// halves are small. All i32 arithmetic wraps like two's complement, so as
// long as the true total fits an i32 (it does whenever the weights' absolute
// sum is below 2^23, which we check) the result equals the scalar one bit
// for bit. The final `>> 22` and clamp are an arithmetic shift and two
// saturating packs (the shifted values lie within +-2^9, so the i32 -> i16
// pack is exact and the i16 -> u8 pack clamps to 0..=255).
//
// The intrinsics are pulp's safe wrappers; they only become single
// instructions inside a function compiled with AVX2, so every vector routine
// is `#[inline(always)]` and entered through `V3::vectorize` with a struct
// job (not a closure: a closure's body is a function of its own, compiled
// without AVX2).
// ---------------------------------------------------------------------------

/// Bit position of the weight split (see above).
const SPLIT: u32 = 11;
/// Largest absolute weight sum for which the split arithmetic is used.
const SIMD_WEIGHT_SUM: i64 = (1 << 23) - 1;

/// High and low halves of a weight: `w == hi * 2^SPLIT + lo`.
#[inline(always)]
fn split(w: i32) -> (i16, i16) {
    ((w >> SPLIT) as i16, (w & ((1 << SPLIT) - 1)) as i16)
}

/// The weights' absolute sum is small enough for the split arithmetic.
#[inline(always)]
fn simd_weights_ok(w: &[i32]) -> bool {
    w.iter().map(|&x| i64::from(x).abs()).sum::<i64>() <= SIMD_WEIGHT_SUM
}

/// Outputs per vector (i32 lanes).
const VEC: usize = 8;
/// Outputs per store: four vectors packed to bytes.
const CHUNK: usize = 32;

/// `(HALF >> SPLIT)`: what the high sum starts from.
const HC: i32 = HALF >> SPLIT;

/// A 32-byte vector operand, aligned so that loading it never splits a
/// cache line.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Block([u8; 32]);

/// Sets i16 lane `i` of a block.
fn set_i16(b: &mut Block, i: usize, v: i16) {
    b.0[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
}

/// Sets i32 lane `i` of a block.
fn set_i32(b: &mut Block, i: usize, v: i32) {
    b.0[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
}

/// The single last tap's weight words `[w & 255, w >> 8]` and the constant
/// (in units of the high sum) that makes up for its `(p - 128)` (see
/// [`Shuffle`]).
fn single_weight(w: i32) -> ([i16; 2], i32) {
    let (hi, lo) = (w >> 8, w & 255);
    ([lo as i16, hi as i16], hi << (15 - SPLIT))
}

/// Horizontal kernel for scales where a few consecutive outputs read at
/// most 16 consecutive source bytes: per vector of eight outputs (one per
/// i32 lane) and group of taps, a 16-byte source window (one for all eight
/// outputs, broadcast to both 128-bit halves, or one per half), from which
/// `pshufb` picks each output's taps.
///
/// Per vector, `prog` holds [`Shuffle::blocks`] blocks: per tap pair, the
/// `pshufb` control (per lane `[tap 2p, zero, tap 2p+1, zero]`, as offsets
/// into the half's window; 0x80 gives zero), then the pair's high and low
/// weight halves as words. With an odd tap count the last tap follows in
/// one `vpmaddwd`: control `[tap, zero, zero, tap]`, XORed with
/// `0x8000_0000` to the words `p` and `(p - 128) * 256` (exact as i16),
/// times the words `w & 255` and `w >> 8`, which is `p * w - 2^15 * (w >> 8)`
/// and goes to the low sum; the third block holds the high sum's starting
/// values (`HALF` plus that constant, in units of `2^11`).
// Read by the vector kernels only (x86_64).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Shuffle {
    /// Tap pairs per output: `k / 2` with one window per vector, else
    /// `loads * group` (the last ones padded with zeros).
    pairs: usize,
    /// One window per vector and the tap count is odd: the last tap is a
    /// single one.
    single: bool,
    /// Units (pairs and the single) per window.
    group: usize,
    /// Windows per vector.
    loads: usize,
    /// One window for all eight outputs of a vector.
    whole: bool,
    /// Window starts (low half, high half), per vector and load.
    bases: Vec<[u32; 2]>,
    /// Per vector, `3 * (pairs + single)` blocks.
    prog: Vec<Block>,
}

// Read by the vector kernels only (x86_64).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Shuffle {
    /// Blocks per vector.
    fn blocks(&self) -> usize {
        3 * (self.pairs + usize::from(self.single))
    }
}

/// Horizontal kernel for large downscales: each output reads its own
/// window of `16 * blocks` source bytes, multiplied lane by lane and reduced.
// Read by the vector kernels only (x86_64).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Wide {
    /// 16-byte blocks per output window.
    blocks: usize,
    /// Window start per output (padded to whole chunks).
    base: Vec<u32>,
    /// Per output and block (16 taps each): the high and the low halves of
    /// the weights, as words.
    w: Vec<Block>,
}

/// How [`HKernel::apply`] runs: the scalar loop, or a vector layout.
// Read by the vector kernels only (x86_64).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Mode {
    Scalar,
    Shuffle(Shuffle),
    Wide(Wide),
}

/// Horizontal weights prepared for fast application to planar rows.
pub(crate) struct HKernel {
    /// Output samples.
    n: usize,
    /// Source samples a row must hold.
    len: usize,
    /// Taps per output.
    k: usize,
    /// First tap of each output, relative to the row's first sample.
    start: Vec<u32>,
    /// `k` weights per output.
    w: Vec<i32>,
    mode: Mode,
}

impl HKernel {
    /// `f`: fixed-layout weights of the kept outputs; `col0`: the source
    /// column of element 0 of the rows `apply` will get (all
    /// `f.start[j] >= col0`).
    pub(crate) fn new(f: &Fixed, col0: u32) -> HKernel {
        let k = f.k;
        let n = f.start.len();
        let start: Vec<u32> = f
            .start
            .iter()
            .map(|&s| {
                s.checked_sub(col0)
                    .expect("HKernel: a start lies before col0")
            })
            .collect();
        let len = start.iter().map(|&s| s as usize + k).max().unwrap_or(0);
        let mut kernel = HKernel {
            n,
            len,
            k,
            start,
            w: f.w[..n * k].to_vec(),
            mode: Mode::Scalar,
        };
        if n > 0 && k > 0 && kernel.w.chunks_exact(k).all(simd_weights_ok) {
            kernel.mode = match kernel.shuffle() {
                Some(s) => Mode::Shuffle(s),
                None => kernel.wide().map_or(Mode::Scalar, Mode::Wide),
            };
        }
        kernel
    }

    /// Number of source samples (from `col0`) a row must have: exactly the
    /// span of the taps, `max(start) + k - col0`; no slack is needed.
    pub(crate) fn src_len(&self) -> usize {
        self.len
    }

    /// Number of output samples `apply` writes.
    #[allow(dead_code)]
    pub(crate) fn outputs(&self) -> usize {
        self.n
    }

    /// Span `(lo, hi)` of the source positions of the non-zero taps
    /// `t0..t1` of outputs `o0..o1` (`(0, 0)` when there are none).
    fn reach(&self, o0: usize, o1: usize, t0: usize, t1: usize) -> (usize, usize) {
        let (k, t1) = (self.k, t1.min(self.k));
        let (mut lo, mut hi) = (usize::MAX, 0);
        for o in o0..o1.min(self.n) {
            let s = self.start[o] as usize;
            let w = &self.w[o * k..(o + 1) * k];
            if let Some(t) = (t0..t1).find(|&t| w[t] != 0) {
                lo = lo.min(s + t);
            }
            if let Some(t) = (t0..t1).rev().find(|&t| w[t] != 0) {
                hi = hi.max(s + t + 1);
            }
        }
        if hi == 0 { (0, 0) } else { (lo, hi) }
    }

    /// The shuffle layout: one window per vector (or half) if possible,
    /// else one per group of up to three tap pairs; one window for all
    /// eight outputs rather than one per half where possible.
    fn shuffle(&self) -> Option<Shuffle> {
        if self.len < 16 {
            return None;
        }
        let units = self.k.div_ceil(2);
        let one = (units <= 5).then_some(units);
        let split = (1..units.min(4)).rev();
        one.into_iter()
            .chain(split)
            .flat_map(|g| [(g, true), (g, false)])
            .find_map(|(g, whole)| self.shuffle_with(g, whole))
    }

    fn shuffle_with(&self, group: usize, whole: bool) -> Option<Shuffle> {
        let loads = self.k.div_ceil(2).div_ceil(group);
        // With several windows, only pairs, as many as fill them (the
        // extra ones all zero): the kernel is then one loop shape.
        let (pairs, single) = if loads == 1 {
            (self.k / 2, self.k % 2 == 1)
        } else {
            (loads * group, false)
        };
        let units = pairs + usize::from(single);
        let vectors = self.n.div_ceil(CHUNK) * CHUNK / VEC;
        let blocks = 3 * units;
        let mut bases = vec![[0u32; 2]; vectors * loads];
        let mut prog = vec![Block([0; 32]); vectors * blocks];
        for v in 0..vectors {
            let prog = &mut prog[v * blocks..(v + 1) * blocks];
            for u in 0..units {
                prog[3 * u] = Block([0x80; 32]);
            }
            if single {
                for q in 0..VEC {
                    set_i32(&mut prog[3 * pairs + 2], q, HC);
                }
            }
            for g in 0..loads {
                let (t0, t1) = (2 * g * group, 2 * (g + 1) * group);
                // Window of each half (the same one for both when whole).
                let mut base = [0usize; 2];
                for (h, base) in base.iter_mut().enumerate() {
                    let (lo, hi) = if whole {
                        self.reach(v * VEC, (v + 1) * VEC, t0, t1)
                    } else {
                        self.reach(v * VEC + 4 * h, v * VEC + 4 * h + 4, t0, t1)
                    };
                    if hi - lo > 16 {
                        return None;
                    }
                    *base = lo.min(self.len - 16);
                    if whole {
                        break;
                    }
                }
                if whole {
                    base[1] = base[0];
                }
                bases[v * loads + g] = base.map(|b| b as u32);
                for q in 0..VEC {
                    let o = v * VEC + q;
                    if o >= self.n {
                        break;
                    }
                    let s = self.start[o] as usize;
                    for t in t0..t1.min(self.k) {
                        let wt = self.w[o * self.k + t];
                        if wt == 0 {
                            continue;
                        }
                        let at = (s + t - base[q / 4]) as u8;
                        let u = t / 2;
                        if u < pairs {
                            prog[3 * u].0[4 * q + 2 * (t % 2)] = at;
                            let (wh, wl) = split(wt);
                            set_i16(&mut prog[3 * u + 1], 2 * q + t % 2, wh);
                            set_i16(&mut prog[3 * u + 2], 2 * q + t % 2, wl);
                        } else {
                            prog[3 * u].0[4 * q] = at;
                            prog[3 * u].0[4 * q + 3] = at;
                            let (w, c) = single_weight(wt);
                            set_i16(&mut prog[3 * u + 1], 2 * q, w[0]);
                            set_i16(&mut prog[3 * u + 1], 2 * q + 1, w[1]);
                            set_i32(&mut prog[3 * u + 2], q, HC + c);
                        }
                    }
                }
            }
        }
        Some(Shuffle {
            pairs,
            single,
            group,
            loads,
            whole,
            bases,
            prog,
        })
    }

    /// The per-output window layout.
    fn wide(&self) -> Option<Wide> {
        let blocks = self.k.div_ceil(16);
        let win = 16 * blocks;
        if self.len < win {
            return None;
        }
        let slots = self.n.div_ceil(CHUNK) * CHUNK;
        let mut base = vec![0u32; slots];
        let mut w = vec![Block([0; 32]); slots * 2 * blocks];
        let outputs = self.start.iter().zip(self.w.chunks_exact(self.k));
        for (o, ((&s, wo), base)) in outputs.zip(&mut base).enumerate() {
            let s = s as usize;
            let b = s.min(self.len - win);
            *base = b as u32;
            for (t, &wt) in wo.iter().enumerate() {
                let at = s + t - b;
                let (h, l) = split(wt);
                let blk = (o * blocks + at / 16) * 2;
                set_i16(&mut w[blk], at % 16, h);
                set_i16(&mut w[blk + 1], at % 16, l);
            }
        }
        Some(Wide { blocks, base, w })
    }

    /// `out[j] = clamp((HALF + sum_t w[j][t] * src[start[j] - col0 + t]) >> 22, 0, 255)`
    /// for `j` in `0..outputs()`. `src` must hold at least `src_len()`
    /// samples and `out` at least `outputs()`; `out` beyond is untouched.
    #[inline(always)]
    pub(crate) fn apply(&self, src: &[u8], out: &mut [u8]) {
        let src = &src[..self.len];
        let out = &mut out[..self.n];
        #[cfg(target_arch = "x86_64")]
        if !matches!(self.mode, Mode::Scalar)
            && let Some(simd) = pulp::x86::V3::try_new()
        {
            return simd.vectorize(v3::Horizontal(simd, &self.mode, src, out));
        }
        self.apply_scalar(src, out);
    }

    /// The scalar kernel (any weights, any CPU).
    fn apply_scalar(&self, src: &[u8], out: &mut [u8]) {
        let k = self.k;
        for ((d, &s), w) in out.iter_mut().zip(&self.start).zip(self.w.chunks_exact(k)) {
            let s = s as usize;
            let mut acc = HALF;
            for (&p, &wt) in src[s..s + k].iter().zip(w) {
                acc = acc.wrapping_add(i32::from(p).wrapping_mul(wt));
            }
            *d = clip8(acc);
        }
    }
}

/// Vertical pass over planar rows:
/// `out[x] = clamp((HALF + sum_t w[t] * rows[t][x]) >> 22, 0, 255)` for `x`
/// in `0..out.len()`; `rows.len() == w.len()`, every row at least
/// `out.len()` long.
#[inline(always)]
pub(crate) fn vertical_row(rows: &[&[u8]], w: &[i32], out: &mut [u8]) {
    assert_eq!(rows.len(), w.len(), "vertical_row: one weight per row");
    #[cfg(target_arch = "x86_64")]
    if out.len() >= CHUNK
        && !w.is_empty()
        && simd_weights_ok(w)
        && let Some(simd) = pulp::x86::V3::try_new()
    {
        return simd.vectorize(v3::Vertical(simd, rows, w, out));
    }
    vertical_row_scalar(rows, w, out);
}

fn vertical_row_scalar(rows: &[&[u8]], w: &[i32], out: &mut [u8]) {
    for (x, d) in out.iter_mut().enumerate() {
        let mut acc = HALF;
        for (r, &wt) in rows.iter().zip(w) {
            acc = acc.wrapping_add(i32::from(r[x]).wrapping_mul(wt));
        }
        *d = clip8(acc);
    }
}

#[cfg(target_arch = "x86_64")]
mod v3 {
    use super::{Block, CHUNK, HALF, HC, Mode, SPLIT, Shuffle, VEC, Wide, split};
    use core::arch::x86_64::{__m128i, __m256i};
    use pulp::x86::V3;

    /// [`super::HKernel::apply`] with a vector mode.
    pub(super) struct Horizontal<'a>(pub V3, pub &'a Mode, pub &'a [u8], pub &'a mut [u8]);

    impl pulp::NullaryFnOnce for Horizontal<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let Horizontal(simd, mode, src, out) = self;
            match mode {
                // The layouts bilinear weights give get a kernel of their own
                // (one window for all eight outputs only happens up to about
                // three taps); the rest share the generic one.
                Mode::Shuffle(s) if s.loads == 1 => match (s.blocks(), s.single, s.whole) {
                    (3, true, true) => shuffle_k::<3, true, true>(simd, s, src, out),
                    (3, false, true) => shuffle_k::<3, false, true>(simd, s, src, out),
                    (6, true, true) => shuffle_k::<6, true, true>(simd, s, src, out),
                    (6, false, true) => shuffle_k::<6, false, true>(simd, s, src, out),
                    (9, true, true) => shuffle_k::<9, true, true>(simd, s, src, out),
                    (9, false, true) => shuffle_k::<9, false, true>(simd, s, src, out),
                    (3, true, false) => shuffle_k::<3, true, false>(simd, s, src, out),
                    (3, false, false) => shuffle_k::<3, false, false>(simd, s, src, out),
                    (6, true, false) => shuffle_k::<6, true, false>(simd, s, src, out),
                    (6, false, false) => shuffle_k::<6, false, false>(simd, s, src, out),
                    (9, true, false) => shuffle_k::<9, true, false>(simd, s, src, out),
                    (9, false, false) => shuffle_k::<9, false, false>(simd, s, src, out),
                    (12, true, false) => shuffle_k::<12, true, false>(simd, s, src, out),
                    (12, false, false) => shuffle_k::<12, false, false>(simd, s, src, out),
                    (15, true, false) => shuffle_k::<15, true, false>(simd, s, src, out),
                    (15, false, false) => shuffle_k::<15, false, false>(simd, s, src, out),
                    _ => shuffle_one_dyn(simd, s, src, out),
                },
                Mode::Shuffle(s) => match (s.group, s.loads, s.whole) {
                    (1, 2, false) => shuffle_split::<1, 2, false>(simd, s, src, out),
                    (1, 3, false) => shuffle_split::<1, 3, false>(simd, s, src, out),
                    (1, 4, false) => shuffle_split::<1, 4, false>(simd, s, src, out),
                    (1, 5, false) => shuffle_split::<1, 5, false>(simd, s, src, out),
                    (1, 6, false) => shuffle_split::<1, 6, false>(simd, s, src, out),
                    (2, 2, false) => shuffle_split::<2, 2, false>(simd, s, src, out),
                    (2, 3, false) => shuffle_split::<2, 3, false>(simd, s, src, out),
                    (3, 2, false) => shuffle_split::<3, 2, false>(simd, s, src, out),
                    _ => shuffle_split_dyn(simd, s, src, out),
                },
                Mode::Wide(w) => match w.blocks {
                    1 => wide_k::<2>(simd, w, src, out),
                    2 => wide_k::<4>(simd, w, src, out),
                    3 => wide_k::<6>(simd, w, src, out),
                    _ => wide_dyn(simd, w, src, out),
                },
                Mode::Scalar => unreachable!("scalar mode is not vectorised"),
            }
        }
    }

    /// [`super::vertical_row`].
    pub(super) struct Vertical<'a>(pub V3, pub &'a [&'a [u8]], pub &'a [i32], pub &'a mut [u8]);

    impl pulp::NullaryFnOnce for Vertical<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let Vertical(simd, rows, w, out) = self;
            match w.len().div_ceil(2) {
                1 => vertical_k::<1>(simd, rows, w, out),
                2 => vertical_k::<2>(simd, rows, w, out),
                3 => vertical_k::<3>(simd, rows, w, out),
                4 => vertical_k::<4>(simd, rows, w, out),
                5 => vertical_k::<5>(simd, rows, w, out),
                6 => vertical_k::<6>(simd, rows, w, out),
                _ => vertical_dyn(simd, rows, w, out),
            }
        }
    }

    #[inline(always)]
    fn load16(src: &[u8], at: usize) -> __m128i {
        let b: [u8; 16] = src[at..at + 16].try_into().unwrap();
        pulp::cast(b)
    }

    #[inline(always)]
    fn load32(src: &[u8], at: usize) -> __m256i {
        let b: [u8; 32] = src[at..at + 32].try_into().unwrap();
        pulp::cast(b)
    }

    /// The source window of a vector: one 16-byte window broadcast to both
    /// halves, or one per half.
    #[inline(always)]
    fn window<const WHOLE: bool>(simd: V3, src: &[u8], b: [u32; 2]) -> __m256i {
        if WHOLE {
            simd.avx2
                ._mm256_broadcastsi128_si256(load16(src, b[0] as usize))
        } else {
            simd.avx
                ._mm256_set_m128i(load16(src, b[1] as usize), load16(src, b[0] as usize))
        }
    }

    /// One tap pair (blocks: control, high and low weights):
    /// `(hi, lo) += madd(pshufb(win, control), (wh, wl))`.
    #[inline(always)]
    fn step(
        simd: V3,
        win: __m256i,
        b: &[Block],
        acc: Option<(__m256i, __m256i)>,
    ) -> (__m256i, __m256i) {
        let x = simd.avx2._mm256_shuffle_epi8(win, pulp::cast(b[0].0));
        let h = simd.avx2._mm256_madd_epi16(x, pulp::cast(b[1].0));
        let l = simd.avx2._mm256_madd_epi16(x, pulp::cast(b[2].0));
        match acc {
            None => (h, l),
            Some((hi, lo)) => (
                simd.avx2._mm256_add_epi32(hi, h),
                simd.avx2._mm256_add_epi32(lo, l),
            ),
        }
    }

    /// The single last tap (see [`Shuffle`]): `lo += p * w - 2^15 * (w >> 8)`.
    #[inline(always)]
    fn single(
        simd: V3,
        win: __m256i,
        b: &[Block],
        acc: Option<(__m256i, __m256i)>,
    ) -> (__m256i, __m256i) {
        let x = simd.avx2._mm256_shuffle_epi8(win, pulp::cast(b[0].0));
        let x = simd
            .avx2
            ._mm256_xor_si256(x, simd.avx._mm256_set1_epi32(i32::MIN));
        let l = simd.avx2._mm256_madd_epi16(x, pulp::cast(b[1].0));
        match acc {
            None => (simd.avx._mm256_setzero_si256(), l),
            Some((hi, lo)) => (hi, simd.avx2._mm256_add_epi32(lo, l)),
        }
    }

    /// `((hi + hc) << 11) + lo) >> 22`.
    #[inline(always)]
    fn finish_hc(simd: V3, hi: __m256i, lo: __m256i, hc: __m256i) -> __m256i {
        let a = simd.avx2._mm256_add_epi32(hi, hc);
        let a = simd.avx2._mm256_slli_epi32::<{ SPLIT as i32 }>(a);
        let a = simd.avx2._mm256_add_epi32(a, lo);
        simd.avx2._mm256_srai_epi32::<22>(a)
    }

    /// `(((hi + 2^10) << 11) + lo) >> 22`: the scalar `(HALF + sum) >> 22`
    /// of the split sums (`HALF` included in `hi` already when `!ADD_HALF`).
    #[inline(always)]
    fn finish<const ADD_HALF: bool>(simd: V3, hi: __m256i, lo: __m256i) -> __m256i {
        let hi = if ADD_HALF {
            simd.avx2
                ._mm256_add_epi32(hi, simd.avx._mm256_set1_epi32(HALF >> SPLIT))
        } else {
            hi
        };
        let a = simd.avx2._mm256_slli_epi32::<{ SPLIT as i32 }>(hi);
        let a = simd.avx2._mm256_add_epi32(a, lo);
        simd.avx2._mm256_srai_epi32::<22>(a)
    }

    /// Four vectors of eight i32 results to 32 bytes, clamped to 0..=255.
    /// `packus` works within 128-bit halves, so the bytes come out as the
    /// 4-byte groups `r0[0..4], r1[0..4], r2[0..4], r3[0..4], r0[4..8], ...`.
    #[inline(always)]
    fn pack(simd: V3, r: &[__m256i; 4]) -> __m256i {
        let a = simd.avx2._mm256_packus_epi32(r[0], r[1]);
        let b = simd.avx2._mm256_packus_epi32(r[2], r[3]);
        simd.avx2._mm256_packus_epi16(a, b)
    }

    /// [`pack`], then the 4-byte groups put in vector order (vector `i`
    /// holding outputs `8i..8i+8`).
    #[inline(always)]
    fn pack_ordered(simd: V3, r: &[__m256i; 4]) -> [u8; 32] {
        let idx = simd.avx._mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        pulp::cast(simd.avx2._mm256_permutevar8x32_epi32(pack(simd, r), idx))
    }

    #[inline(always)]
    fn store(out: &mut [u8], at: usize, bytes: &[u8; 32]) {
        if let Some(o) = out.get_mut(at..at + CHUNK) {
            o.copy_from_slice(bytes);
        } else {
            let m = out.len() - at;
            out[at..].copy_from_slice(&bytes[..m]);
        }
    }

    /// Shuffle kernel with all taps (`NB / 3` units: pairs, the last one
    /// a single tap if `SINGLE`) read from one window per vector (or half).
    #[inline(always)]
    fn shuffle_k<const NB: usize, const SINGLE: bool, const WHOLE: bool>(
        simd: V3,
        s: &Shuffle,
        src: &[u8],
        out: &mut [u8],
    ) {
        const V: usize = CHUNK / VEC;
        let pairs = NB / 3 - usize::from(SINGLE);
        let half = simd.avx._mm256_set1_epi32(HC);
        let (bases, _) = s.bases.as_chunks::<V>();
        let (progs, _) = s.prog.as_chunks::<NB>();
        let (progs, _) = progs.as_chunks::<V>();
        for (c, (bases, progs)) in bases.iter().zip(progs).enumerate() {
            let mut r = [simd.avx._mm256_setzero_si256(); V];
            for ((r, &b), prog) in r.iter_mut().zip(bases).zip(progs) {
                let win = window::<WHOLE>(simd, src, b);
                let mut acc = None;
                for p in 0..pairs {
                    acc = Some(step(simd, win, &prog[3 * p..3 * p + 3], acc));
                }
                let hc = if SINGLE {
                    let b = &prog[NB - 3..];
                    acc = Some(single(simd, win, b, acc));
                    pulp::cast(b[2].0)
                } else {
                    half
                };
                let (hi, lo) = acc.unwrap();
                *r = finish_hc(simd, hi, lo, hc);
            }
            store(out, c * CHUNK, &pack_ordered(simd, &r));
        }
    }

    /// Shuffle kernel with `L` windows per vector, each for `G` tap pairs.
    #[inline(always)]
    fn shuffle_split<const G: usize, const L: usize, const WHOLE: bool>(
        simd: V3,
        s: &Shuffle,
        src: &[u8],
        out: &mut [u8],
    ) {
        const V: usize = CHUNK / VEC;
        let zero = simd.avx._mm256_setzero_si256();
        let half = simd.avx._mm256_set1_epi32(HC);
        let (units, _) = s.prog.as_chunks::<3>();
        let (groups, _) = units.as_chunks::<G>();
        let (vectors, _) = groups.as_chunks::<L>();
        let (bases, _) = s.bases.as_chunks::<L>();
        let chunks = bases.chunks_exact(V).zip(vectors.chunks_exact(V));
        for (c, (bases, vectors)) in chunks.enumerate() {
            let mut r = [zero; V];
            for ((r, bases), groups) in r.iter_mut().zip(bases).zip(vectors) {
                let (mut hi, mut lo) = (zero, zero);
                for (&b, group) in bases.iter().zip(groups) {
                    let win = window::<WHOLE>(simd, src, b);
                    for u in group {
                        (hi, lo) = step(simd, win, u, Some((hi, lo)));
                    }
                }
                *r = finish_hc(simd, hi, lo, half);
            }
            store(out, c * CHUNK, &pack_ordered(simd, &r));
        }
    }

    /// [`shuffle_split`], any layout.
    #[inline(always)]
    fn shuffle_split_dyn(simd: V3, s: &Shuffle, src: &[u8], out: &mut [u8]) {
        const V: usize = CHUNK / VEC;
        let (loads, g) = (s.loads, s.group);
        let zero = simd.avx._mm256_setzero_si256();
        let half = simd.avx._mm256_set1_epi32(HC);
        let (units, _) = s.prog.as_chunks::<3>();
        let chunks = s
            .bases
            .chunks_exact(V * loads)
            .zip(units.chunks_exact(V * loads * g));
        for (c, (bases, units)) in chunks.enumerate() {
            let mut r = [zero; V];
            let vectors = bases.chunks_exact(loads).zip(units.chunks_exact(loads * g));
            for (r, (bases, units)) in r.iter_mut().zip(vectors) {
                let (mut hi, mut lo) = (zero, zero);
                for (&b, group) in bases.iter().zip(units.chunks_exact(g)) {
                    let win = if s.whole {
                        window::<true>(simd, src, b)
                    } else {
                        window::<false>(simd, src, b)
                    };
                    for u in group {
                        (hi, lo) = step(simd, win, u, Some((hi, lo)));
                    }
                }
                *r = finish_hc(simd, hi, lo, half);
            }
            store(out, c * CHUNK, &pack_ordered(simd, &r));
        }
    }

    /// [`shuffle_k`], any layout.
    #[inline(always)]
    fn shuffle_one_dyn(simd: V3, s: &Shuffle, src: &[u8], out: &mut [u8]) {
        const V: usize = CHUNK / VEC;
        let nb = s.blocks();
        let zero = simd.avx._mm256_setzero_si256();
        let half = simd.avx._mm256_set1_epi32(HC);
        let (units, _) = s.prog.as_chunks::<3>();
        let chunks = s.bases.chunks_exact(V).zip(units.chunks_exact(V * nb / 3));
        for (c, (bases, units)) in chunks.enumerate() {
            let mut r = [zero; V];
            let vectors = bases.iter().zip(units.chunks_exact(nb / 3));
            for (r, (&b, units)) in r.iter_mut().zip(vectors) {
                let win = if s.whole {
                    window::<true>(simd, src, b)
                } else {
                    window::<false>(simd, src, b)
                };
                let (mut hi, mut lo) = (zero, zero);
                for u in &units[..s.pairs] {
                    (hi, lo) = step(simd, win, u, Some((hi, lo)));
                }
                let hc = match units.get(s.pairs) {
                    Some(u) => {
                        (hi, lo) = single(simd, win, u, Some((hi, lo)));
                        pulp::cast(u[2].0)
                    }
                    None => half,
                };
                *r = finish_hc(simd, hi, lo, hc);
            }
            store(out, c * CHUNK, &pack_ordered(simd, &r));
        }
    }

    /// Per-output windows (`W2 / 2` blocks of 16 taps): each lane's taps
    /// multiplied as words, then the eight outputs' partial sums reduced
    /// together.
    #[inline(always)]
    fn wide_k<const W2: usize>(simd: V3, s: &Wide, src: &[u8], out: &mut [u8]) {
        const V: usize = CHUNK / VEC;
        let zero = simd.avx._mm256_setzero_si256();
        let (slots, _) = s.w.as_chunks::<W2>();
        let (vectors, _) = slots.as_chunks::<VEC>();
        let (bases, _) = s.base.as_chunks::<VEC>();
        let chunks = bases.chunks_exact(V).zip(vectors.chunks_exact(V));
        for (c, (bases, vectors)) in chunks.enumerate() {
            let mut r = [zero; V];
            for ((r, bases), slots) in r.iter_mut().zip(bases).zip(vectors) {
                // Per lane: the output's eight partial sums.
                let mut v = [zero; VEC];
                for ((v, &b), w) in v.iter_mut().zip(bases).zip(slots) {
                    *v = window_sums(simd, src, b as usize, w);
                }
                *r = reduce(simd, &v);
            }
            store(out, c * CHUNK, &pack_ordered(simd, &r));
        }
    }

    /// One output's partial sums over its window: 16-tap blocks from `at`,
    /// `w` holding each block's high and low weight halves.
    #[inline(always)]
    fn window_sums(simd: V3, src: &[u8], at: usize, w: &[Block]) -> __m256i {
        let zero = simd.avx._mm256_setzero_si256();
        let (mut hi, mut lo) = (zero, zero);
        for (blk, w) in w.as_chunks::<2>().0.iter().enumerate() {
            let x = simd.avx2._mm256_cvtepu8_epi16(load16(src, at + 16 * blk));
            let h = simd.avx2._mm256_madd_epi16(x, pulp::cast(w[0].0));
            let l = simd.avx2._mm256_madd_epi16(x, pulp::cast(w[1].0));
            hi = simd.avx2._mm256_add_epi32(hi, h);
            lo = simd.avx2._mm256_add_epi32(lo, l);
        }
        let hi = simd.avx2._mm256_slli_epi32::<{ SPLIT as i32 }>(hi);
        simd.avx2._mm256_add_epi32(hi, lo)
    }

    /// [`wide_k`] with any number of blocks.
    #[inline(always)]
    fn wide_dyn(simd: V3, s: &Wide, src: &[u8], out: &mut [u8]) {
        const V: usize = CHUNK / VEC;
        let zero = simd.avx._mm256_setzero_si256();
        let w2 = 2 * s.blocks;
        let (bases, _) = s.base.as_chunks::<VEC>();
        let chunks = bases.chunks_exact(V).zip(s.w.chunks_exact(V * VEC * w2));
        for (c, (bases, w)) in chunks.enumerate() {
            let mut r = [zero; V];
            for ((r, bases), w) in r.iter_mut().zip(bases).zip(w.chunks_exact(VEC * w2)) {
                let mut v = [zero; VEC];
                for ((v, &b), w) in v.iter_mut().zip(bases).zip(w.chunks_exact(w2)) {
                    *v = window_sums(simd, src, b as usize, w);
                }
                *r = reduce(simd, &v);
            }
            store(out, c * CHUNK, &pack_ordered(simd, &r));
        }
    }

    /// Lane `q` of the result: `(HALF + sum of the lanes of v[q]) >> 22`.
    #[inline(always)]
    fn reduce(simd: V3, v: &[__m256i; VEC]) -> __m256i {
        let h01 = simd.avx2._mm256_hadd_epi32(v[0], v[1]);
        let h23 = simd.avx2._mm256_hadd_epi32(v[2], v[3]);
        let h45 = simd.avx2._mm256_hadd_epi32(v[4], v[5]);
        let h67 = simd.avx2._mm256_hadd_epi32(v[6], v[7]);
        let a = simd.avx2._mm256_hadd_epi32(h01, h23);
        let b = simd.avx2._mm256_hadd_epi32(h45, h67);
        let sum = simd.avx2._mm256_add_epi32(
            simd.avx2._mm256_permute2x128_si256::<0x20>(a, b),
            simd.avx2._mm256_permute2x128_si256::<0x31>(a, b),
        );
        let sum = simd
            .avx2
            ._mm256_add_epi32(sum, simd.avx._mm256_set1_epi32(HALF));
        simd.avx2._mm256_srai_epi32::<22>(sum)
    }

    /// Word pair `(a, b)` as the i32 lane value `vpmaddwd` multiplies by.
    #[inline(always)]
    fn words(a: i16, b: i16) -> i32 {
        i32::from(a as u16) | (i32::from(b as u16) << 16)
    }

    /// Rows `a` and `b` (32 pixels from `at`) as word pairs `(a[x], b[x])`,
    /// four vectors of eight pixels: pixels `4j..4j+4 | 16+4j..16+4j+4` in
    /// vector `j`, the order [`pack`] undoes.
    #[inline(always)]
    fn interleave(simd: V3, a: __m256i, b: __m256i) -> [__m256i; 4] {
        let zero = simd.avx._mm256_setzero_si256();
        let ab0 = simd.avx2._mm256_unpacklo_epi8(a, b);
        let ab1 = simd.avx2._mm256_unpackhi_epi8(a, b);
        [
            simd.avx2._mm256_unpacklo_epi8(ab0, zero),
            simd.avx2._mm256_unpackhi_epi8(ab0, zero),
            simd.avx2._mm256_unpacklo_epi8(ab1, zero),
            simd.avx2._mm256_unpackhi_epi8(ab1, zero),
        ]
    }

    /// `(hi, lo) += madd(z, (wh, wl))` for the four vectors of a pair.
    #[inline(always)]
    fn vstep(
        simd: V3,
        z: [__m256i; 4],
        wh: __m256i,
        wl: __m256i,
        hi: &mut [__m256i; 4],
        lo: &mut [__m256i; 4],
        first: bool,
    ) {
        for j in 0..4 {
            let h = simd.avx2._mm256_madd_epi16(z[j], wh);
            let l = simd.avx2._mm256_madd_epi16(z[j], wl);
            if first {
                hi[j] = h;
                lo[j] = l;
            } else {
                hi[j] = simd.avx2._mm256_add_epi32(hi[j], h);
                lo[j] = simd.avx2._mm256_add_epi32(lo[j], l);
            }
        }
    }

    /// Vertical pass with `P` tap pairs. With an odd tap count the last
    /// row is paired with a row of ones weighted `2^10` in the high half,
    /// which adds `HALF` for free.
    #[inline(always)]
    fn vertical_k<const P: usize>(simd: V3, rows: &[&[u8]], w: &[i32], out: &mut [u8]) {
        let n = out.len();
        let k = w.len();
        let odd = k % 2 == 1;
        // Rows `2p` and `2p + 1` of each pair (the last row twice when odd:
        // the second copy is not read).
        let a: [&[u8]; P] = core::array::from_fn(|p| &rows[2 * p][..n]);
        let b: [&[u8]; P] = core::array::from_fn(|p| &rows[(2 * p + 1).min(k - 1)][..n]);
        let mut wv = [(0i32, 0i32); P];
        for (p, wv) in wv.iter_mut().enumerate() {
            let (h0, l0) = split(w[2 * p]);
            let (h1, l1) = match w.get(2 * p + 1) {
                Some(&x) => split(x),
                None => ((HALF >> SPLIT) as i16, 0),
            };
            *wv = (words(h0, h1), words(l0, l1));
        }
        if odd {
            vertical_run::<P, false>(simd, &a, &b, &wv, out);
        } else {
            vertical_run::<P, true>(simd, &a, &b, &wv, out);
        }
    }

    #[inline(always)]
    fn vertical_run<const P: usize, const EVEN: bool>(
        simd: V3,
        ra: &[&[u8]; P],
        rb: &[&[u8]; P],
        wv: &[(i32, i32); P],
        out: &mut [u8],
    ) {
        let n = out.len();
        let zero = simd.avx._mm256_setzero_si256();
        let ones = simd.avx._mm256_set1_epi8(1);
        let mut x = 0;
        loop {
            let at = x.min(n - CHUNK);
            let mut hi = [zero; 4];
            let mut lo = [zero; 4];
            for p in 0..P {
                let a = load32(ra[p], at);
                let b = if EVEN || p + 1 < P {
                    load32(rb[p], at)
                } else {
                    ones
                };
                let wh = simd.avx._mm256_set1_epi32(wv[p].0);
                let wl = simd.avx._mm256_set1_epi32(wv[p].1);
                vstep(
                    simd,
                    interleave(simd, a, b),
                    wh,
                    wl,
                    &mut hi,
                    &mut lo,
                    p == 0,
                );
            }
            store_chunk::<EVEN>(simd, &hi, &lo, &mut out[at..at + CHUNK]);
            x += CHUNK;
            if x >= n {
                break;
            }
        }
    }

    /// Finishes one chunk's accumulators and stores its `CHUNK` bytes.
    #[inline(always)]
    fn store_chunk<const EVEN: bool>(
        simd: V3,
        hi: &[__m256i; 4],
        lo: &[__m256i; 4],
        out: &mut [u8],
    ) {
        let r: [__m256i; 4] = [
            finish::<EVEN>(simd, hi[0], lo[0]),
            finish::<EVEN>(simd, hi[1], lo[1]),
            finish::<EVEN>(simd, hi[2], lo[2]),
            finish::<EVEN>(simd, hi[3], lo[3]),
        ];
        let bytes: [u8; 32] = pulp::cast(pack(simd, &r));
        out.copy_from_slice(&bytes);
    }

    /// Vertical pass, any number of taps.
    #[inline(always)]
    fn vertical_dyn(simd: V3, rows: &[&[u8]], w: &[i32], out: &mut [u8]) {
        let n = out.len();
        let zero = simd.avx._mm256_setzero_si256();
        let mut x = 0;
        loop {
            let at = x.min(n - CHUNK);
            let mut hi = [zero; 4];
            let mut lo = [zero; 4];
            for (t, pair) in w.chunks(2).enumerate() {
                let a = load32(rows[2 * t], at);
                let (b, (h1, l1)) = match pair.get(1) {
                    Some(&x) => (load32(rows[2 * t + 1], at), split(x)),
                    None => (zero, (0, 0)),
                };
                let (h0, l0) = split(pair[0]);
                let wh = simd.avx._mm256_set1_epi32(words(h0, h1));
                let wl = simd.avx._mm256_set1_epi32(words(l0, l1));
                vstep(
                    simd,
                    interleave(simd, a, b),
                    wh,
                    wl,
                    &mut hi,
                    &mut lo,
                    t == 0,
                );
            }
            store_chunk::<true>(simd, &hi, &lo, &mut out[at..at + CHUNK]);
            x += CHUNK;
            if x >= n {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels as they were before the planar rewrite (interleaved
    /// gather, then tap-major multiply-adds): the "old" timings of
    /// `resample_speed`, and a second reference.
    mod legacy {
        use super::super::{Fixed, HALF, clip8};

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
        pub(super) fn horizontal_fixed<const CH: usize>(
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
        pub(super) fn vertical_fixed(
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

        fn vertical_dyn(
            src: &[u8],
            stride: usize,
            width: usize,
            row0: u32,
            f: &Fixed,
            dst: &mut [u8],
        ) {
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
    }

    /// xorshift64*: deterministic test data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// The formula, written out: `clamp((2^21 + sum w * p) >> 22, 0, 255)`,
    /// in i64. (Weights whose sum overflows an i32 are outside the domain;
    /// for them the kernels wrap like the i32 code they replace.)
    fn reference_sum(taps: impl Iterator<Item = (u8, i32)> + Clone) -> u8 {
        let acc = taps
            .clone()
            .fold(1i64 << 21, |a, (p, w)| a + i64::from(p) * i64::from(w));
        let acc = i32::try_from(acc).unwrap_or_else(|_| {
            taps.fold(1i32 << 21, |a, (p, w)| {
                a.wrapping_add(i32::from(p).wrapping_mul(w))
            })
        });
        (acc >> 22).clamp(0, 255) as u8
    }

    fn reference_h(f: &Fixed, col0: u32, src: &[u8]) -> Vec<u8> {
        (0..f.start.len())
            .map(|j| {
                let s = (f.start[j] - col0) as usize;
                reference_sum((0..f.k).map(|t| (src[s + t], f.w[j * f.k + t])))
            })
            .collect()
    }

    fn reference_v(rows: &[&[u8]], w: &[i32], width: usize) -> Vec<u8> {
        (0..width)
            .map(|x| reference_sum(rows.iter().zip(w).map(|(r, &w)| (r[x], w))))
            .collect()
    }

    /// torchvision's eval geometry (shorter side to 256, centre crop 224,
    /// or the whole image when smaller): per axis `(in, out, first, count)`.
    fn geometry(w: u32, h: u32) -> [(u32, u32, u32, u32); 2] {
        let (nw, nh) = if w <= h {
            (256, (256 * u64::from(h) / u64::from(w)) as u32)
        } else {
            ((256 * u64::from(w) / u64::from(h)) as u32, 256)
        };
        let c = 224;
        let left = ((nw - c) as f64 / 2.0).round() as u32;
        let top = ((nh - c) as f64 / 2.0).round() as u32;
        [(w, nw, left, c), (h, nh, top, c)]
    }

    const SIZES: [(u32, u32); 9] = [
        (500, 375),
        (375, 500),
        (1920, 1080),
        (2560, 1440),
        (17, 17),
        (1, 1),
        (333, 7),
        (7, 333),
        (4000, 3000),
    ];

    /// Every axis of every test geometry, plus some odd ones.
    fn axes() -> Vec<(u32, u32, u32, u32)> {
        let mut v: Vec<_> = SIZES.iter().flat_map(|&(w, h)| geometry(w, h)).collect();
        // Full outputs (not cropped), partial chunks, tiny outputs.
        v.extend([
            (500, 341, 0, 341),
            (375, 256, 0, 256),
            (100, 37, 0, 37),
            (100, 33, 3, 29),
            (40, 13, 0, 13),
            (64, 64, 0, 64),
            (10, 300, 0, 300),
            (300, 31, 0, 31),
            (3000, 40, 0, 40),
            (5000, 250, 3, 240),
            (1000, 100, 0, 100),
            (700, 160, 5, 150),
            (1000, 999, 0, 999),
            (2, 1, 0, 1),
        ]);
        v
    }

    fn check_h(f: &Fixed, col0: u32, rng: &mut Rng, what: &str) {
        let hk = HKernel::new(f, col0);
        let len = hk.src_len();
        let need = f
            .start
            .iter()
            .map(|&s| (s - col0) as usize + f.k)
            .max()
            .unwrap();
        assert_eq!(len, need, "{what}: src_len");
        let mut rows = vec![vec![0u8; len], vec![255u8; len]];
        for _ in 0..4 {
            rows.push(rng.bytes(len));
        }
        for src in &rows {
            let want = reference_h(f, col0, src);
            // Exactly src_len() long, and an output buffer longer than needed.
            let mut got = vec![0xA5u8; f.start.len() + 3];
            hk.apply(src, &mut got);
            assert_eq!(&got[..want.len()], &want[..], "{what}");
            assert_eq!(&got[want.len()..], &[0xA5; 3], "{what}: wrote past outputs");
            let mut got = vec![0u8; f.start.len()];
            hk.apply_scalar(src, &mut got);
            assert_eq!(got, want, "{what}: scalar");
        }
    }

    #[test]
    fn hkernel_matches_reference_on_geometries() {
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        for (i, (n_in, n_out, first, count)) in axes().into_iter().enumerate() {
            let f = coeffs(n_in, n_out, first, count).fixed(n_in);
            let lo = *f.start.iter().min().unwrap();
            for col0 in [lo, 0, lo / 2] {
                let what = format!("#{i} {n_in}->{n_out} [{first}, +{count}) col0 {col0}");
                check_h(&f, col0, &mut rng, &what);
            }
        }
    }

    fn mode_name(k: &HKernel) -> &'static str {
        match &k.mode {
            Mode::Scalar => "scalar",
            Mode::Shuffle(s) if s.loads > 1 => match (s.group, s.loads, s.whole) {
                (1, 2..=6, false) | (2, 2..=3, false) | (3, 2, false) => "shuffle-split",
                _ => "shuffle-split-dyn",
            },
            Mode::Shuffle(s) if s.whole && s.blocks() > 9 => "shuffle-dyn",
            Mode::Shuffle(s) if s.whole => "shuffle",
            Mode::Shuffle(_) => "shuffle-halves",
            Mode::Wide(_) => "wide",
        }
    }

    #[test]
    fn hkernel_modes() {
        let mode = |w: u32, h: u32| {
            let (n_in, n_out, first, count) = geometry(w, h)[0];
            let f = coeffs(n_in, n_out, first, count).fixed(n_in);
            let lo = *f.start.iter().min().unwrap();
            mode_name(&HKernel::new(&f, lo))
        };
        assert_eq!(mode(500, 375), "shuffle");
        assert_eq!(mode(375, 500), "shuffle");
        assert_eq!(mode(17, 17), "shuffle");
        assert_eq!(mode(2560, 1440), "wide");
        assert_eq!(mode(4000, 3000), "wide");
        assert_eq!(mode(1, 1), "scalar");
        assert_ne!(mode(1920, 1080), "scalar");
    }

    /// Random fixed layouts: random scales, starts, zero and negative
    /// weights.
    #[test]
    fn hkernel_matches_reference_on_random_weights() {
        let mut rng = Rng(0xDEAD_BEEF_0BAD_F00D);
        let mut seen = std::collections::BTreeMap::new();
        for case in 0..400 {
            let n = 1 + rng.below(80) as usize;
            let k = 1 + rng.below(if case % 4 == 0 { 40 } else { 8 }) as usize;
            // Mean start increment in 1/16ths of a sample.
            let step = rng.below(if case % 3 == 0 { 160 } else { 40 });
            let mut start = Vec::with_capacity(n);
            let mut pos = rng.below(5) * 16;
            for _ in 0..n {
                start.push((pos / 16) as u32);
                pos += rng.below(2 * step + 1);
            }
            if case % 5 == 0 {
                // Not monotonic.
                for s in start.iter_mut() {
                    *s = rng.below(20) as u32;
                }
            }
            let mut w = vec![0i32; n * k];
            for ww in w.chunks_exact_mut(k) {
                let big = case % 7 == 0;
                for x in ww.iter_mut() {
                    *x = match rng.below(4) {
                        0 => 0,
                        _ if big => rng.next() as i32 >> rng.below(8),
                        1 => -(rng.below(1 << 20) as i32),
                        _ => rng.below((1 << 23) / k as u64) as i32,
                    };
                }
            }
            let f = Fixed { start, w, k };
            let lo = *f.start.iter().min().unwrap();
            check_h(&f, lo, &mut rng, &format!("random case {case}"));
            *seen.entry(mode_name(&HKernel::new(&f, lo))).or_insert(0) += 1;
        }
        // Every layout was exercised.
        assert_eq!(seen.len(), 7, "{seen:?}");
        assert!(seen.values().all(|&n| n >= 3), "{seen:?}");
    }

    /// `horizontal_fixed` and `vertical_fixed` (interleaved input,
    /// row-planar output) against the legacy kernels and the formula.
    #[test]
    fn fixed_passes_match_legacy_and_reference() {
        fn run<const CH: usize>(rng: &mut Rng) {
            for (i, (n_in, n_out, first, count)) in axes().into_iter().enumerate() {
                let f = coeffs(n_in, n_out, first, count).fixed(n_in);
                let out_w = f.start.len();
                let (lo, hi) = f.span();
                let col0 = lo / 2;
                let cols = (hi - col0) as usize;
                let rows = 3;
                // Stride with some padding; the last row exactly as long as needed.
                let stride = cols * CH + 5;
                let src = rng.bytes(stride * (rows - 1) + cols * CH);
                let mut got = vec![0u8; rows * out_w * CH];
                let mut old = vec![0u8; rows * out_w * CH];
                horizontal_fixed::<CH>(&src, stride, col0, rows, &f, &mut got);
                legacy::horizontal_fixed::<CH>(&src, stride, col0, rows, &f, &mut old);
                assert_eq!(got, old, "horizontal #{i} CH {CH}");
                for r in 0..rows {
                    for c in 0..CH {
                        let plane: Vec<u8> = src[r * stride..][..cols * CH]
                            .iter()
                            .skip(c)
                            .step_by(CH)
                            .copied()
                            .collect();
                        let want = reference_h(&f, col0, &plane);
                        let at = (r * CH + c) * out_w;
                        assert_eq!(&got[at..at + out_w], &want[..], "horizontal #{i}");
                    }
                }

                // Vertical: the same weights over rows of `width` samples.
                for width in [1, 31, 224 * CH, 100] {
                    let row0 = col0;
                    let stride = width + 3;
                    let src = rng.bytes(stride * (cols - 1) + width);
                    let mut got = vec![0u8; out_w * width];
                    let mut old = vec![0u8; out_w * width];
                    vertical_fixed(&src, stride, width, row0, &f, &mut got);
                    legacy::vertical_fixed(&src, stride, width, row0, &f, &mut old);
                    assert_eq!(got, old, "vertical #{i} width {width}");
                    for (j, d) in got.chunks_exact(width).enumerate() {
                        let s = (f.start[j] - row0) as usize;
                        let rows: Vec<&[u8]> = (0..f.k)
                            .map(|t| &src[(s + t) * stride..][..width])
                            .collect();
                        let want = reference_v(&rows, &f.w[j * f.k..(j + 1) * f.k], width);
                        assert_eq!(d, &want[..], "vertical #{i} width {width}");
                    }
                }
            }
        }
        let mut rng = Rng(0x7777_1234_ABCD_0001);
        run::<1>(&mut rng);
        run::<3>(&mut rng);
    }

    fn check_v(rows: &[Vec<u8>], w: &[i32], width: usize, what: &str) {
        let refs: Vec<&[u8]> = rows.iter().map(|r| &r[..]).collect();
        let want = reference_v(&refs, w, width);
        let mut got = vec![0xA5u8; width];
        vertical_row(&refs, w, &mut got);
        assert_eq!(got, want, "{what}");
        let mut got = vec![0xA5u8; width];
        vertical_row_scalar(&refs, w, &mut got);
        assert_eq!(got, want, "{what}: scalar");
    }

    #[test]
    fn vertical_row_matches_reference_on_geometries() {
        let mut rng = Rng(0x0F0F_1234_4321_F0F0);
        for (n_in, n_out, first, count) in axes() {
            let f = coeffs(n_in, n_out, first, count).fixed(n_in);
            for (j, w) in f.w.chunks_exact(f.k).enumerate().step_by(7) {
                for width in [224, 32, 33, 31, 1, 0, 100, 257] {
                    // Rows longer than needed, and exactly as long.
                    let extra = j % 2;
                    let rows: Vec<Vec<u8>> = (0..f.k)
                        .map(|t| match (j + t) % 5 {
                            0 => vec![255; width + extra],
                            1 => vec![0; width + extra],
                            _ => rng.bytes(width + extra),
                        })
                        .collect();
                    check_v(
                        &rows,
                        w,
                        width,
                        &format!("{n_in}->{n_out} out {j} width {width}"),
                    );
                }
            }
        }
    }

    #[test]
    fn vertical_row_matches_reference_on_random_weights() {
        let mut rng = Rng(0x5555_AAAA_1234_9876);
        for case in 0..300 {
            let k = 1 + rng.below(if case % 4 == 0 { 50 } else { 12 }) as usize;
            let width = rng.below(300) as usize;
            let big = case % 6 == 0;
            let w: Vec<i32> = (0..k)
                .map(|_| match rng.below(4) {
                    0 => 0,
                    _ if big => rng.next() as i32 >> rng.below(8),
                    1 => -(rng.below(1 << 20) as i32),
                    _ => rng.below((1 << 23) / k as u64) as i32,
                })
                .collect();
            let rows: Vec<Vec<u8>> = (0..k).map(|_| rng.bytes(width)).collect();
            check_v(&rows, &w, width, &format!("random case {case}"));
        }
    }

    /// One resize + crop: source size, kept window's weights per axis and
    /// the source rows / columns they read.
    struct Geo {
        w: usize,
        c: usize,
        cx: Fixed,
        cy: Fixed,
        x0: usize,
        y0: usize,
        rows: usize,
    }

    impl Geo {
        fn new(w: u32, h: u32) -> Geo {
            let [(_, nw, left, c), (_, nh, top, _)] = geometry(w, h);
            let (cx, cy) = (
                coeffs(w, nw, left, c).fixed(w),
                coeffs(h, nh, top, c).fixed(h),
            );
            let ((x0, _), (y0, y1)) = (cx.span(), cy.span());
            Geo {
                w: w as usize,
                c: c as usize,
                x0: x0 as usize,
                y0: y0 as usize,
                rows: (y1 - y0) as usize,
                cx,
                cy,
            }
        }
    }

    /// The timed jobs, each run inside a pulp dispatch as `resize_crop`
    /// runs the kernels: `with_simd` calls `#[inline(always)]` functions
    /// directly, so that they are compiled for the dispatched features
    /// (through a closure or a function pointer they would not be).
    enum Job<'a> {
        Interleaved(bool, &'a [u8], u32, u32, &'a mut Vec<u8>),
        Planar(&'a [Vec<u8>], u32, u32, &'a mut Vec<u8>),
        H(&'a Geo, &'a HKernel, &'a [Vec<u8>], &'a mut [Vec<u8>]),
        V(&'a Geo, &'a [Vec<u8>], &'a mut [u8]),
        Row(&'a HKernel, &'a [u8], &'a mut [u8], usize),
    }

    impl pulp::WithSimd for Job<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) {
            match self {
                Job::Interleaved(true, rgb, w, h, out) => *out = interleaved::<true>((rgb, w, h)),
                Job::Interleaved(false, rgb, w, h, out) => *out = interleaved::<false>((rgb, w, h)),
                Job::Planar(planes, w, h, out) => *out = planar((planes, w, h)),
                Job::H(g, hk, planes, tmp) => planar_h((g, hk, planes, tmp)),
                Job::V(g, tmp, out) => planar_v((g, tmp, out)),
                Job::Row(hk, row, out, n) => one_row((hk, row, out, n)),
            }
        }
    }

    fn dispatch(job: Job<'_>) {
        pulp::Arch::new().dispatch(job)
    }

    /// Interleaved path, all of it (coefficients included, as `resize_crop`
    /// does): horizontal pass into a row-planar buffer, then the vertical
    /// pass, with the legacy kernels or the current `horizontal_fixed` and
    /// `vertical_fixed`.
    #[inline(always)]
    fn interleaved<const LEGACY: bool>((rgb, w, h): (&[u8], u32, u32)) -> Vec<u8> {
        let g = Geo::new(w, h);
        let stride = g.c * 3;
        let mut tmp = vec![0u8; g.rows * stride];
        let src = &rgb[g.y0 * g.w * 3..];
        let mut out = vec![0u8; g.c * stride];
        let y0 = g.y0 as u32;
        if LEGACY {
            legacy::horizontal_fixed::<3>(src, g.w * 3, 0, g.rows, &g.cx, &mut tmp);
            legacy::vertical_fixed(&tmp, stride, stride, y0, &g.cy, &mut out);
        } else {
            horizontal_fixed::<3>(src, g.w * 3, 0, g.rows, &g.cx, &mut tmp);
            vertical_fixed(&tmp, stride, stride, y0, &g.cy, &mut out);
        }
        out
    }

    /// Planar horizontal pass: every needed source row of every channel.
    #[inline(always)]
    fn planar_h((g, hk, planes, tmp): (&Geo, &HKernel, &[Vec<u8>], &mut [Vec<u8>])) {
        let n = hk.src_len();
        for (plane, t) in planes.iter().zip(tmp.iter_mut()) {
            for (r, o) in t.chunks_exact_mut(g.c).enumerate() {
                let at = (g.y0 + r) * g.w + g.x0;
                hk.apply(&plane[at..at + n], o);
            }
        }
    }

    /// Planar vertical pass: every output row of every channel, into the
    /// interleaved path's row-planar layout.
    #[inline(always)]
    fn planar_v((g, tmp, out): (&Geo, &[Vec<u8>], &mut [u8])) {
        let (c, k) = (g.c, g.cy.k);
        let mut rows: [&[u8]; 32] = [&[]; 32];
        for (i, orow) in out.chunks_exact_mut(c * 3).enumerate() {
            let s = g.cy.start[i] as usize - g.y0;
            let wt = &g.cy.w[i * k..(i + 1) * k];
            for (t, o) in tmp.iter().zip(orow.chunks_exact_mut(c)) {
                for (j, r) in rows[..k].iter_mut().enumerate() {
                    *r = &t[(s + j) * c..(s + j + 1) * c];
                }
                vertical_row(&rows[..k], wt, o);
            }
        }
    }

    /// Planar path, all of it: coefficients, kernel, buffers, both passes.
    #[inline(always)]
    fn planar((planes, w, h): (&[Vec<u8>], u32, u32)) -> Vec<u8> {
        let g = Geo::new(w, h);
        let hk = HKernel::new(&g.cx, g.x0 as u32);
        let mut tmp = vec![vec![0u8; g.rows * g.c]; 3];
        planar_h((&g, &hk, planes, &mut tmp));
        let mut out = vec![0u8; g.c * g.c * 3];
        planar_v((&g, &tmp, &mut out));
        out
    }

    /// One source row, `n` times (kernel and data in L1).
    #[inline(always)]
    fn one_row((hk, row, out, n): (&HKernel, &[u8], &mut [u8], usize)) {
        for _ in 0..n {
            hk.apply(std::hint::black_box(row), std::hint::black_box(&mut *out));
        }
    }

    /// Times the ImageNet geometry (500x375 -> 341x256, centre crop 224)
    /// through the legacy interleaved kernels and the planar ones, each
    /// inside a pulp dispatch as `resize_crop` runs them; then other sizes.
    /// `RESAMPLE_SPEED=substring` runs only the matching timings.
    #[test]
    #[ignore]
    fn resample_speed() {
        use std::hint::black_box;
        use std::time::Instant;
        let only = std::env::var("RESAMPLE_SPEED").unwrap_or_default();
        let time = |name: &str, f: &mut dyn FnMut()| {
            if !name.contains(&only) {
                return;
            }
            let name = name.split_once(' ').map_or(name, |x| x.1);
            // Best of many short runs (the machine may be shared), for
            // about half a second.
            let t = Instant::now();
            f();
            let once = t.elapsed().as_secs_f64();
            let iters = (2e-3 / once).clamp(1.0, 20.0) as u32;
            let mut best = f64::MAX;
            let t0 = Instant::now();
            while t0.elapsed().as_secs_f64() < 0.5 {
                let t = Instant::now();
                for _ in 0..iters {
                    f();
                }
                best = best.min(t.elapsed().as_secs_f64() / f64::from(iters));
            }
            println!("{name:>36}: {:8.1} us per image", best * 1e6);
        };

        // Clock estimate: a dependent chain of rotate + xor (two 1-cycle
        // operations per step on current x86 cores).
        let t = Instant::now();
        let mut x = black_box(0x1234_5678_9ABC_DEF0u64);
        let k = black_box(0x9E37_79B9_7F4A_7C15u64);
        for _ in 0..50_000_000 {
            x = x.rotate_left(7) ^ k;
        }
        black_box(x);
        println!("clock estimate: {:.2} GHz", 0.1 / t.elapsed().as_secs_f64());

        let mut rng = Rng(42);
        for (w, h) in [
            (500u32, 375u32),
            (375, 500),
            (1920, 1080),
            (2560, 1440),
            (4000, 3000),
        ] {
            let g = Geo::new(w, h);
            let rgb = rng.bytes(g.w * h as usize * 3);
            let planes: Vec<Vec<u8>> = (0..3)
                .map(|ch| rgb.iter().skip(ch).step_by(3).copied().collect())
                .collect();
            let hk = HKernel::new(&g.cx, g.x0 as u32);
            println!(
                "{w}x{h}: horizontal {} {} (k {}), vertical k {}, {} source rows",
                mode_name(&hk),
                match &hk.mode {
                    Mode::Shuffle(s) =>
                        format!("{} units per window, {} windows", s.group, s.loads),
                    _ => String::new(),
                },
                g.cx.k,
                g.cy.k,
                g.rows
            );
            let (mut old, mut new, mut inter) = (Vec::new(), Vec::new(), Vec::new());
            time(&format!("{w}x{h} legacy interleaved, all"), &mut || {
                dispatch(Job::Interleaved(true, black_box(&rgb), w, h, &mut old));
            });
            time(&format!("{w}x{h} planar, all"), &mut || {
                dispatch(Job::Planar(black_box(&planes), w, h, &mut new));
            });
            time(&format!("{w}x{h} new interleaved, all"), &mut || {
                dispatch(Job::Interleaved(false, black_box(&rgb), w, h, &mut inter));
            });
            let c = g.c;
            let mut tmp = vec![vec![0u8; g.rows * c]; 3];
            let mut out = vec![0u8; c * c * 3];
            let [ax, ay] = geometry(w, h);
            time(&format!("{w}x{h} coefficients, both axes"), &mut || {
                let (w, nw, left, c) = black_box(ax);
                let (h, nh, top, _) = black_box(ay);
                black_box(coeffs(w, nw, left, c).fixed(w));
                black_box(coeffs(h, nh, top, c).fixed(h));
            });
            time(&format!("{w}x{h} planar: HKernel::new"), &mut || {
                black_box(HKernel::new(&g.cx, g.x0 as u32));
            });
            time(&format!("{w}x{h} planar: horizontal pass"), &mut || {
                dispatch(Job::H(&g, &hk, black_box(&planes), &mut tmp));
            });
            time(&format!("{w}x{h} planar: vertical pass"), &mut || {
                dispatch(Job::V(&g, black_box(&tmp), &mut out));
            });
            let row = &planes[0][g.x0..g.x0 + hk.src_len()];
            let mut o = vec![0u8; c];
            time(
                &format!("{w}x{h} planar: horizontal, one row in L1"),
                &mut || {
                    dispatch(Job::Row(&hk, row, &mut o, 3 * g.rows));
                },
            );
            if only.is_empty() {
                assert_eq!(old, new, "planar and legacy paths differ");
                assert_eq!(old, inter, "new and legacy interleaved paths differ");
                assert_eq!(out, new);
            }
        }
    }
}
