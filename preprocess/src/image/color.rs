//! Decoded component planes to full-resolution RGB rows, as libjpeg-turbo
//! does it (jdsample.c, jdcolor.c, jdmainct.c; facts, not code):
//!
//! - "fancy" upsampling: a triangle filter, 3/4 of the nearer sample and 1/4
//!   of the farther one. h2v1: `(3a + b + 1) >> 2` to the left and
//!   `(3a + b + 2) >> 2` to the right. h1v2: same with 1 above / 2 below.
//!   h2v2: column sums `3 * this row + nearer row` first, then
//!   `(3s + s' + 8) >> 4` left and `(3s + s' + 7) >> 4` right.
//! - Edges: past the first/last column or row the edge sample is its own
//!   neighbour (libjpeg's first/last-column special cases and its
//!   duplicated context rows reduce to exactly this), with the component's
//!   downsampled width/height (not the padded block size) as the edge.
//! - h2v1 and h2v2 with a downsampled width of 2 or less use plain
//!   replication instead (libjpeg's `downsampled_width > 2` rule).
//! - YCbCr->RGB in 16-bit fixed point: R = Y + ((91881 cr + 2^15) >> 16),
//!   G = Y + ((-22554 cb - 46802 cr + 2^15) >> 16),
//!   B = Y + ((116130 cb + 2^15) >> 16), with cb, cr centred on 128 and the
//!   results clamped to 0..=255.
//!
//! Loops run over plain slices of one row so they vectorise.

use super::baseline::{Decoded, Plane};

/// Scratch rows reused across the rows of one image.
#[derive(Default)]
pub(crate) struct Rows {
    cb: Vec<u8>,
    cr: Vec<u8>,
    sums: Vec<i16>,
    even: Vec<u8>,
    odd: Vec<u8>,
    wide: Vec<u8>,
}

/// Full-resolution R, G, B (or just Y for grayscale: `r` only) of image
/// row `y`, columns `x0..x0 + n`, into the first `n` samples of each.
#[inline(always)]
pub(crate) fn rgb_row(
    d: &Decoded,
    y: usize,
    x0: usize,
    n: usize,
    s: &mut Rows,
    [r, g, b]: [&mut [u8]; 3],
) {
    let luma = d.planes[0].row(y, x0, n);
    if d.planes.len() == 1 {
        r[..n].copy_from_slice(luma);
        return;
    }
    s.cb.resize(n, 0);
    s.cr.resize(n, 0);
    let mut cb = std::mem::take(&mut s.cb);
    let mut cr = std::mem::take(&mut s.cr);
    chroma_row(&d.planes[1], d.fx, d.fy, y, x0, s, &mut cb);
    chroma_row(&d.planes[2], d.fx, d.fy, y, x0, s, &mut cr);
    ycc_to_rgb(luma, &cb, &cr, &mut r[..n], &mut g[..n], &mut b[..n]);
    s.cb = cb;
    s.cr = cr;
}

#[inline(always)]
fn ycc_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], r: &mut [u8], g: &mut [u8], b: &mut [u8]) {
    let n = y.len();
    let (cb, cr, r, g, b) = (&cb[..n], &cr[..n], &mut r[..n], &mut g[..n], &mut b[..n]);
    for i in 0..n {
        let yy = i32::from(y[i]);
        let u = i32::from(cb[i]) - 128;
        let v = i32::from(cr[i]) - 128;
        r[i] = (yy + ((91881 * v + 32768) >> 16)).clamp(0, 255) as u8;
        g[i] = (yy + ((-22554 * u - 46802 * v + 32768) >> 16)).clamp(0, 255) as u8;
        b[i] = (yy + ((116130 * u + 32768) >> 16)).clamp(0, 255) as u8;
    }
}

/// One chroma component upsampled to full resolution for row `y`,
/// columns `x0..x0 + out.len()`; `fx`, `fy` are the luma/chroma factors.
#[inline(always)]
fn chroma_row(p: &Plane, fx: usize, fy: usize, y: usize, x0: usize, s: &mut Rows, out: &mut [u8]) {
    let n = out.len();
    let (dw, dh) = (p.comp.dw, p.comp.dh);
    if fx == 1 && fy == 1 {
        out.copy_from_slice(p.row(y, x0, n));
        return;
    }
    if fx == 2 && dw <= 2 {
        // Replication in both directions (libjpeg's h2v1 / h2v2 "box"
        // upsamplers for narrow components).
        let j0 = x0 / 2;
        let row = p.row(y / fy, j0, (x0 + n - 1) / 2 + 1 - j0);
        for (k, o) in out.iter_mut().enumerate() {
            *o = row[(x0 + k) / 2 - j0];
        }
        return;
    }
    // Vertical neighbour for fy == 2: the row above for even output rows,
    // below for odd ones, clamped to the component's rows.
    let i = y / fy;
    let near = if fy == 1 {
        i
    } else if y.is_multiple_of(2) {
        i.saturating_sub(1)
    } else {
        (i + 1).min(dh - 1)
    };
    if fx == 1 {
        // h1v2: vertical triangle only.
        let bias = if y.is_multiple_of(2) { 1 } else { 2 };
        let (cur, nr) = (p.row(i, x0, n), p.row(near, x0, n));
        for k in 0..n {
            out[k] = ((3 * u16::from(cur[k]) + u16::from(nr[k]) + bias) >> 2) as u8;
        }
        return;
    }
    // Chroma columns touched, with one clamped neighbour either side.
    let (j0, j1) = (x0 / 2, (x0 + n - 1) / 2 + 1);
    let m = j1 - j0;
    let lo = j0.saturating_sub(1);
    let hi = (j1 + 1).min(dw);
    // sums[t] holds column j0 - 1 + t (clamped into 0..dw).
    s.sums.resize(m + 2, 0);
    let sums = &mut s.sums[..m + 2];
    let cur = p.row(i, lo, hi - lo);
    // sums[first..first + count] are columns lo..hi; the rest repeat the
    // edge columns.
    let first = lo + 1 - j0;
    let count = hi - lo;
    let inner = &mut sums[first..first + count];
    let (be, bo, sh) = if fy == 2 {
        let nr = p.row(near, lo, count);
        for ((s, &a), &b) in inner.iter_mut().zip(cur).zip(nr) {
            *s = 3 * i16::from(a) + i16::from(b);
        }
        (8, 7, 4)
    } else {
        for (s, &a) in inner.iter_mut().zip(cur) {
            *s = i16::from(a);
        }
        (1, 2, 2)
    };
    if first == 1 {
        sums[0] = sums[1];
    }
    let edge = sums[first + count - 1];
    sums[first + count..].fill(edge);
    let eo = s_even_odd(&mut s.even, &mut s.odd, m);
    horizontal_fancy(sums, m, be, bo, sh, j0, x0, eo, &mut s.wide, out);
}

fn s_even_odd<'a>(
    e: &'a mut Vec<u8>,
    o: &'a mut Vec<u8>,
    m: usize,
) -> (&'a mut [u8], &'a mut [u8]) {
    e.resize(m, 0);
    o.resize(m, 0);
    (&mut e[..m], &mut o[..m])
}

/// Horizontal 2x triangle upsampling of `sums` (column j0 - 1 + t at t):
/// even output 2j = (3 s[j] + s[j-1] + be) >> sh, odd 2j+1 =
/// (3 s[j] + s[j+1] + bo) >> sh; writes full-resolution columns
/// `x0..x0 + out.len()`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn horizontal_fancy(
    sums: &[i16],
    m: usize,
    be: i16,
    bo: i16,
    sh: u32,
    j0: usize,
    x0: usize,
    (even, odd): (&mut [u8], &mut [u8]),
    wide: &mut Vec<u8>,
    out: &mut [u8],
) {
    let (left, mid, right) = (&sums[..m], &sums[1..m + 1], &sums[2..m + 2]);
    for t in 0..m {
        even[t] = ((3 * mid[t] + left[t] + be) >> sh) as u8;
        odd[t] = ((3 * mid[t] + right[t] + bo) >> sh) as u8;
    }
    wide.resize(2 * m, 0);
    for (pair, (&e, &o)) in wide.chunks_exact_mut(2).zip(even.iter().zip(odd.iter())) {
        pair[0] = e;
        pair[1] = o;
    }
    let off = x0 - 2 * j0;
    out.copy_from_slice(&wide[off..off + out.len()]);
}
