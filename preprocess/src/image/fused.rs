//! The fused pipeline for what our baseline decoder takes: decode only the
//! blocks the resize window reads, then per source row: upsample + colour
//! convert into planar R/G/B rows and run the horizontal pass at once (the
//! rows stay in L1), then the vertical pass over the kept rows, each output
//! row handed at once to [`Emit`] (normalize, dtype, layout) while in L1, so
//! the tensor is written once, into the caller's buffer.
//!
//! Same arithmetic as [`super::resize_crop`] with the horizontal pass first
//! (Pillow <= 12's order), so the output equals decoding the whole image
//! and resizing it.

use super::baseline::{self, Declined};
use super::color::{self, Rows};
use super::resample::{self, HKernel};
use super::{Emit, Geometry};
use preba_protocol::profile::ImageProfile;
use std::cell::Cell;

/// The `c` x `c` crop of the resized image through `emit` into `out` (the
/// whole output tensor).
pub(crate) fn resize_crop_into(
    input: &[u8],
    w: u32,
    h: u32,
    p: &ImageProfile,
    emit: &Emit,
    out: &mut [u8],
) -> Result<(), Declined> {
    struct Job<'a> {
        input: &'a [u8],
        w: u32,
        h: u32,
        p: &'a ImageProfile,
        s: &'a mut Scratch,
        emit: &'a Emit,
        out: &'a mut [u8],
    }
    impl pulp::WithSimd for Job<'_> {
        type Output = Result<(), Declined>;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
            inner(
                self.input, self.w, self.h, self.p, self.s, self.emit, self.out,
            )
        }
    }
    // Taken out of the thread-local around the dispatch: a closure inside
    // it would be compiled without the vector extensions.
    let mut scratch = SCRATCH.with(Cell::take).unwrap_or_default();
    let out = pulp::Arch::new().dispatch(Job {
        input,
        w,
        h,
        p,
        s: &mut scratch,
        emit,
        out,
    });
    SCRATCH.with(|c| c.set(Some(scratch)));
    out
}

/// Resampling weights of one (source size, resize, crop): computing them
/// costs ~2% of an ImageNet image, and streams repeat sizes.
struct Weights {
    key: (u32, u32, u16, u16),
    cy: resample::Fixed,
    hk: HKernel,
    /// Source columns and rows the kept window reads.
    xs: (usize, usize),
    ys: (usize, usize),
}

impl Weights {
    fn new(w: u32, h: u32, p: &ImageProfile) -> Self {
        let (cx, cy) = Geometry::new(w, h, 1, p).weights();
        let span = |f: &resample::Fixed| {
            let (lo, hi) = f.span();
            (lo as usize, hi as usize)
        };
        let (xs, ys) = (span(&cx), span(&cy));
        Weights {
            key: (w, h, p.resize, p.crop),
            hk: HKernel::new(&cx, xs.0 as u32),
            cy,
            xs,
            ys,
        }
    }
}

/// Per-thread memory reused from image to image (fresh pages for every
/// image cost more than some of the stages).
#[derive(Default)]
struct Scratch {
    weights: Vec<Weights>,
    /// One output row of the vertical pass, on its way to [`Emit`].
    row: Vec<u8>,
    decode: baseline::Buffers,
    rows: [Vec<u8>; 3],
    tmp: Vec<u8>,
    color: Rows,
}

thread_local! {
    static SCRATCH: Cell<Option<Scratch>> = const { Cell::new(None) };
}

#[inline(always)]
fn inner(
    input: &[u8],
    w: u32,
    h: u32,
    p: &ImageProfile,
    s: &mut Scratch,
    emit: &Emit,
    out: &mut [u8],
) -> Result<(), Declined> {
    // A few recent geometries (e.g. landscape and portrait of one size).
    let key = (w, h, p.resize, p.crop);
    let at = match s.weights.iter().position(|g| g.key == key) {
        Some(i) => i,
        None => {
            if s.weights.len() == 4 {
                s.weights.remove(0);
            }
            s.weights.push(Weights::new(w, h, p));
            s.weights.len() - 1
        }
    };
    let geo = &s.weights[at];
    let (cy, hk) = (&geo.cy, &geo.hk);
    let ((x0, x1), (y0, y1)) = (geo.xs, geo.ys);
    let d = baseline::decode(input, x0, x1, y0, y1, &mut s.decode)?;
    let ch = d.planes.len();
    let cs = usize::from(p.crop);
    let n = x1 - x0;
    let len = hk.src_len().max(n);
    let [r, g, b] = &mut s.rows;
    for v in [&mut *r, &mut *g, &mut *b] {
        v.clear();
        v.resize(len, 0);
    }
    let row_len = ch * cs;
    let tmp = &mut s.tmp;
    if tmp.len() < (y1 - y0) * row_len {
        tmp.resize((y1 - y0) * row_len, 0);
    }
    let tmp = &mut tmp[..(y1 - y0) * row_len];
    for (y, t) in (y0..y1).zip(tmp.chunks_exact_mut(row_len)) {
        color::rgb_row(&d, y, x0, n, &mut s.color, [r, g, b]);
        hk.apply(r, &mut t[..cs]);
        if ch == 3 {
            hk.apply(g, &mut t[cs..2 * cs]);
            hk.apply(b, &mut t[2 * cs..]);
        }
    }
    let o = &mut s.row;
    o.resize(row_len, 0);
    let k = cy.k;
    let mut rows: Vec<&[u8]> = Vec::with_capacity(k);
    for i in 0..cs {
        let s0 = cy.start[i] as usize - y0;
        rows.clear();
        rows.extend((0..k).map(|t| &tmp[(s0 + t) * row_len..(s0 + t + 1) * row_len]));
        resample::vertical_row(&rows, &cy.w[i * k..(i + 1) * k], &mut o[..row_len]);
        emit.row(i, &o[..row_len], ch, out);
    }
    d.recycle(&mut s.decode);
    baseline::trim(&mut s.tmp);
    Ok(())
}

/// Whole image as interleaved RGB (or grayscale): what Pillow's decode
/// gives, for tests and the decode-only bench.
pub(crate) fn decode_full(input: &[u8], w: u32, h: u32) -> Result<(Vec<u8>, usize), Declined> {
    struct Job<'a>(&'a [u8], u32, u32);
    impl pulp::WithSimd for Job<'_> {
        type Output = Result<(Vec<u8>, usize), Declined>;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
            decode_full_inner(self.0, self.1, self.2)
        }
    }
    pulp::Arch::new().dispatch(Job(input, w, h))
}

#[inline(always)]
fn decode_full_inner(input: &[u8], w: u32, h: u32) -> Result<(Vec<u8>, usize), Declined> {
    let (w, h) = (w as usize, h as usize);
    let d = baseline::decode(input, 0, w, 0, h, &mut baseline::Buffers::default())?;
    let ch = d.planes.len();
    let (mut r, mut g, mut b) = (vec![0u8; w], vec![0u8; w], vec![0u8; w]);
    let mut scratch = Rows::default();
    let mut out = vec![0u8; w * h * ch];
    for (y, o) in out.chunks_exact_mut(w * ch).enumerate() {
        color::rgb_row(&d, y, 0, w, &mut scratch, [&mut r, &mut g, &mut b]);
        if ch == 1 {
            o.copy_from_slice(&r);
        } else {
            for (x, px) in o.chunks_exact_mut(3).enumerate() {
                px[0] = r[x];
                px[1] = g[x];
                px[2] = b[x];
            }
        }
    }
    Ok((out, ch))
}
