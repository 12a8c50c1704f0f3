//! Image pipeline: the torchvision eval transform
//! (`Resize(R)` bilinear with antialias on a PIL image, `CenterCrop(C)`,
//! optionally `ToTensor` + `Normalize`), on JPEG input.
//!
//! ```text
//!   bytes --probe--> JpegHeader --(limits, routing)-->
//!     card-decodable: baseline decoder (only the blocks the resize window
//!                     reads) -> per row: upsample + YCbCr->RGB -> horizontal
//!                     pass; then the vertical pass             [fused.rs]
//!     anything else:  zune-jpeg decode (RGB / L / CMYK) -> resize+crop
//!   --> normalise / dtype / layout (per-channel lookup table)
//! ```
//!
//! Both branches reproduce decoding with libjpeg-turbo and
//! resizing with Pillow: the first exactly, the second within the goldens'
//! tolerance (zune-jpeg is not libjpeg-turbo bit for bit).
//! The card path ([`card_preprocess_image`]) and the CPU path
//! ([`preprocess_image`]) run the same code after routing, so whatever the
//! card takes comes out bit-identical on both.

mod baseline;
mod color;
mod fused;
mod header;
mod idct;
mod resample;

pub use header::JpegHeader;

use crate::Error;
use half::{bf16, f16};
use preba_protocol::profile::{Dtype, ImageProfile, Layout, ProfileError};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// One preprocessed image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageOutput {
    /// Source width in pixels.
    pub width: u32,
    /// Source height in pixels.
    pub height: u32,
    /// Tensor bytes, little-endian, `profile.dtype` and `profile.layout`;
    /// `len() == profile.output_len()`.
    pub data: Vec<u8>,
}

/// CPU path: every JPEG our decoder takes (baseline, extended, progressive;
/// grayscale, YCbCr, RGB, CMYK/YCCK), 8-bit samples.
pub fn preprocess_image(input: &[u8], profile: &ImageProfile) -> Result<ImageOutput, Error> {
    check_profile(profile)?;
    let probe = header::probe(input)?;
    probe.cpu_check()?;
    run(input, &probe, profile)
}

/// [`preprocess_image`] into `out`, which must be exactly
/// `profile.output_len()` bytes (a reused buffer, a slot of a batch, a
/// mapped file): the tensor is written once, where it is made. Returns the
/// source width and height. `out` holds garbage after an error.
pub fn preprocess_image_into(
    input: &[u8],
    profile: &ImageProfile,
    out: &mut [u8],
) -> Result<(u32, u32), Error> {
    check_profile(profile)?;
    if out.len() != profile.output_len() {
        return Err(Error::InvalidProfile(format!(
            "output buffer of {} bytes for a {}-byte tensor",
            out.len(),
            profile.output_len()
        )));
    }
    let probe = header::probe(input)?;
    probe.cpu_check()?;
    run_into(input, &probe, profile, out)?;
    Ok((probe.header.width, probe.header.height))
}

/// What the card's image CU does: refuses (UnsupportedFormat) anything but
/// baseline sequential Huffman, 8 bit, 1 or 3 components with 4:4:4, 4:2:2,
/// 4:2:0 or 4:4:0 sampling; otherwise the same bytes as [`preprocess_image`].
pub fn card_preprocess_image(input: &[u8], profile: &ImageProfile) -> Result<ImageOutput, Error> {
    check_profile(profile)?;
    let probe = header::probe(input)?;
    probe.card_check()?;
    run(input, &probe, profile)
}

/// Header probe used for routing: `Ok` when the card takes `input`.
/// Allocation-free; reads markers up to the first scan only.
pub fn card_supports(input: &[u8]) -> Result<JpegHeader, Error> {
    let probe = header::probe(input)?;
    probe.card_check()?;
    Ok(probe.header)
}

/// Header probe for any JPEG the CPU path takes.
pub fn probe(input: &[u8]) -> Result<JpegHeader, Error> {
    let probe = header::probe(input)?;
    probe.cpu_check()?;
    Ok(probe.header)
}

/// The transform on already decoded pixels: `channels` is 1 (grayscale,
/// replicated to RGB) or 3 (interleaved RGB); `pixels.len()` must be
/// `width * height * channels`. Exactly what a PIL image of that content
/// goes through.
pub fn transform_pixels(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    profile: &ImageProfile,
) -> Result<Vec<u8>, Error> {
    transform_pixels_with_order(
        pixels,
        width,
        height,
        channels,
        profile,
        PassOrder::HorizontalFirst,
    )
}

/// Which decoder produced pixels.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecoderUsed {
    /// Ours ([`baseline`]): everything the card takes.
    Baseline,
    /// zune-jpeg: progressive, CMYK, RGB-coded, other sampling, multi-scan.
    General,
}

/// Decode only (no resize), the whole image as interleaved RGB or
/// grayscale: the decoder's share of the pipeline, for benches and tests.
#[doc(hidden)]
pub fn decode_only(input: &[u8]) -> Result<(Vec<u8>, usize, DecoderUsed), Error> {
    let probe = header::probe(input)?;
    probe.cpu_check()?;
    if probe.card_check().is_ok() {
        let (w, h) = (probe.header.width, probe.header.height);
        match fused::decode_full(input, w, h) {
            Ok((px, ch)) => return Ok((px, ch, DecoderUsed::Baseline)),
            Err(baseline::Declined::Err(e)) => return Err(e),
            Err(baseline::Declined::NotForUs) => {}
        }
    }
    let (px, ch) = decode(input, &probe)?;
    Ok((px, ch, DecoderUsed::General))
}

/// The baseline decoder's header parse alone (markers with the shared
/// walker, tables, frame and scan headers): `Some(Ok(offset of the first
/// entropy-coded byte))`, `Some(Err(_))` when it refuses the input, `None`
/// when it leaves it to the general decoder. For the routing-agreement tests.
#[doc(hidden)]
pub fn baseline_parse(input: &[u8]) -> Option<Result<usize, Error>> {
    baseline::parse_outcome(input)
}

fn check_profile(p: &ImageProfile) -> Result<(), Error> {
    p.validate().map_err(|e| {
        Error::InvalidProfile(
            match e {
                ProfileError::BadGeometry => "crop must be in 1..=resize, resize in 1..=4096",
                ProfileError::NormalizeNeedsFloat => "normalisation needs a float dtype",
                ProfileError::BadMeanStd => "mean and std must be finite, std non-zero",
                ProfileError::BadAudio => "not an image profile",
            }
            .to_string(),
        )
    })
}

fn run(input: &[u8], probe: &header::Probe, profile: &ImageProfile) -> Result<ImageOutput, Error> {
    let mut data = vec![0u8; profile.output_len()];
    run_into(input, probe, profile, &mut data)?;
    Ok(ImageOutput {
        width: probe.header.width,
        height: probe.header.height,
        data,
    })
}

/// The transform into `out` (`profile.output_len()` bytes).
fn run_into(
    input: &[u8],
    probe: &header::Probe,
    profile: &ImageProfile,
    out: &mut [u8],
) -> Result<(), Error> {
    let (w, h) = (probe.header.width, probe.header.height);
    let emit = Emit::new(profile);
    // What the card takes goes through our decoder, fused with the resize;
    // the general decoder only sees the rest, so both paths agree on
    // everything the card takes.
    if probe.card_check().is_ok() {
        match fused::resize_crop_into(input, w, h, profile, &emit, out) {
            Ok(()) => return Ok(()),
            Err(baseline::Declined::Err(e)) => return Err(e),
            Err(baseline::Declined::NotForUs) => {}
        }
    }
    let (pixels, ch) = decode(input, probe)?;
    let g = Geometry::new(w, h, ch, profile);
    let crop = resize_crop(&pixels, &g, PassOrder::HorizontalFirst);
    for (i, row) in crop.chunks_exact(g.c as usize * ch).enumerate() {
        emit.row(i, row, ch, out);
    }
    Ok(())
}

/// Decodes to interleaved 8-bit RGB (3 channels) or grayscale (1 channel).
fn decode(input: &[u8], probe: &header::Probe) -> Result<(Vec<u8>, usize), Error> {
    let h = &probe.header;
    let (out_cs, channels) = match h.components {
        1 => (ColorSpace::Luma, 1),
        3 => (ColorSpace::RGB, 3),
        // CMYK keeps its raw samples so we can convert as Pillow does;
        // zune-jpeg converts YCCK to RGB itself.
        4 if probe.adobe_transform == Some(2) => (ColorSpace::RGB, 3),
        4 => (ColorSpace::CMYK, 4),
        n => return Err(Error::UnsupportedFormat(format!("{n}-component JPEG"))),
    };
    let options = DecoderOptions::new_fast()
        .set_strict_mode(true)
        .set_max_width(h.width as usize)
        .set_max_height(h.height as usize)
        .jpeg_set_max_scans(64)
        .jpeg_set_out_colorspace(out_cs);
    let decoded = std::panic::catch_unwind(|| {
        let mut dec = JpegDecoder::new_with_options(ZCursor::new(input), options);
        dec.decode_headers()?;
        let info = dec.info();
        let cs = dec.output_colorspace();
        let px = dec.decode()?;
        Ok::<_, zune_jpeg::errors::DecodeErrors>((px, info, cs))
    });
    let (mut px, info, cs) = match decoded {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(Error::CorruptInput(format!("JPEG decode: {e:?}"))),
        Err(_) => return Err(Error::CorruptInput("JPEG decoder failed".to_string())),
    };
    let (w, hgt) = (h.width as usize, h.height as usize);
    let dims_ok = info.is_some_and(|i| usize::from(i.width) == w && usize::from(i.height) == hgt);
    if !dims_ok
        || cs.map(|c| c.num_components()) != Some(channels)
        || px.len() != w * hgt * channels
    {
        return Err(Error::CorruptInput(format!(
            "decoder disagrees with the frame header ({w}x{hgt}x{channels}, got {} bytes)",
            px.len()
        )));
    }
    if channels == 4 {
        px = cmyk_to_rgb(&px);
        return Ok((px, 3));
    }
    Ok((px, channels))
}

/// Pillow reads CMYK JPEGs as inverted ("CMYK;I", Adobe convention) and
/// converts to RGB with R = (255 - K') - (C' * (255 - K') / 255), rounding the
/// product the way its MULDIV255 does; C', K' being the inverted samples.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    fn muldiv255(a: u32, b: u32) -> u32 {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    }
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for p in cmyk.chunks_exact(4) {
        let nk = u32::from(p[3]); // 255 - K' == raw K
        for &c in &p[..3] {
            let c = 255 - u32::from(c);
            rgb.push(nk.saturating_sub(muldiv255(c, nk)) as u8);
        }
    }
    rgb
}

/// Resized size: shorter side `r`, longer side int(r * long / short).
fn resized_size(w: u32, h: u32, r: u32) -> (u32, u32) {
    let long_of =
        |long: u32, short: u32| (u64::from(r) * u64::from(long) / u64::from(short)) as u32;
    if w <= h {
        (r, long_of(h, w))
    } else {
        (long_of(w, h), r)
    }
}

/// int(round((size - crop) / 2)) with Python's round-half-to-even.
fn crop_start(size: u32, crop: u32) -> u32 {
    let d = size - crop;
    let q = d / 2;
    if d % 2 == 1 && q % 2 == 1 { q + 1 } else { q }
}

/// Order of the two resampling passes. Pillow up to 12.x always runs the
/// horizontal pass first; Pillow 13 runs the vertical pass first for some
/// geometries (rule not documented). The two orders differ by at most one
/// level in a few samples; we follow the long-standing horizontal-first order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum PassOrder {
    HorizontalFirst,
    VerticalFirst,
}

/// [`transform_pixels`] with an explicit pass order (for tests against
/// other Pillow versions).
#[doc(hidden)]
pub fn transform_pixels_with_order(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    profile: &ImageProfile,
    order: PassOrder,
) -> Result<Vec<u8>, Error> {
    check_profile(profile)?;
    let expect = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(usize::from(channels)));
    if width == 0 || height == 0 || !matches!(channels, 1 | 3) || expect != Some(pixels.len()) {
        return Err(Error::CorruptInput(format!(
            "{} bytes is not a {width}x{height}x{channels} image",
            pixels.len()
        )));
    }
    let ch = usize::from(channels);
    let g = Geometry::new(width, height, ch, profile);
    let crop = resize_crop(pixels, &g, order);
    Ok(finish(&crop, g.c as usize, ch, profile))
}

/// Source size, channels, resized size, and the kept `c` x `c` window.
struct Geometry {
    w: u32,
    h: u32,
    ch: usize,
    nw: u32,
    nh: u32,
    left: u32,
    top: u32,
    c: u32,
}

impl Geometry {
    /// `w` x `h` with `ch` channels through `profile`'s resize and crop.
    fn new(w: u32, h: u32, ch: usize, profile: &ImageProfile) -> Self {
        let c = u32::from(profile.crop);
        let (nw, nh) = resized_size(w, h, u32::from(profile.resize));
        Geometry {
            w,
            h,
            ch,
            nw,
            nh,
            left: crop_start(nw, c),
            top: crop_start(nh, c),
            c,
        }
    }

    /// Pillow's weights of the kept columns and rows (identity weights,
    /// one tap of 1.0, where a side keeps its size: what skipping that
    /// pass gives).
    fn weights(&self) -> (resample::Fixed, resample::Fixed) {
        (
            resample::coeffs(self.w, self.nw, self.left, self.c).fixed(self.w),
            resample::coeffs(self.h, self.nh, self.top, self.c).fixed(self.h),
        )
    }
}

/// Pillow's resize to `nw` x `nh`, restricted to the `c` x `c` window at
/// (`left`, `top`). Returns `c * c * ch` bytes, row-planar: each of the `c`
/// rows holds `c` samples of channel 0, then of channel 1, ...
fn resize_crop(px: &[u8], g: &Geometry, order: PassOrder) -> Vec<u8> {
    // Run with the best vector extension the CPU has: pulp detects it at
    // run time and calls `with_simd` inside a function compiled for it, into
    // which the kernels inline. They are plain integer loops, so every path
    // gives the same bits.
    struct Job<'a>(&'a [u8], &'a Geometry, PassOrder);
    impl pulp::WithSimd for Job<'_> {
        type Output = Vec<u8>;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> Vec<u8> {
            resize_crop_inner(self.0, self.1, self.2)
        }
    }
    pulp::Arch::new().dispatch(Job(px, g, order))
}

#[inline(always)]
fn resize_crop_inner(px: &[u8], g: &Geometry, order: PassOrder) -> Vec<u8> {
    let (ch, cs) = (g.ch, g.c as usize);
    let stride = g.w as usize * ch;
    let cy = (g.nh != g.h).then(|| resample::coeffs(g.h, g.nh, g.top, g.c).fixed(g.h));
    let cx = (g.nw != g.w).then(|| resample::coeffs(g.w, g.nw, g.left, g.c).fixed(g.w));
    // Source rows / columns the kept window needs.
    let (y0, y1) = cy
        .as_ref()
        .map_or((g.top, g.top + g.c), resample::Fixed::span);
    let (x0, x1) = cx
        .as_ref()
        .map_or((g.left, g.left + g.c), resample::Fixed::span);
    let out_stride = cs * ch;
    let mut out = vec![0u8; cs * out_stride];
    match (&cx, &cy) {
        (None, None) => {
            let l = g.left as usize * ch;
            for (i, o) in out.chunks_exact_mut(out_stride).enumerate() {
                let at = (g.top as usize + i) * stride + l;
                deinterleave(&px[at..at + out_stride], ch, o);
            }
        }
        (Some(cx), None) => {
            let src = &px[g.top as usize * stride..];
            horizontal(ch, src, stride, 0, cs, cx, &mut out);
        }
        (None, Some(cy)) => {
            let src = &px[g.left as usize * ch..];
            let mut tmp = vec![0u8; cs * out_stride];
            resample::vertical_fixed(src, stride, out_stride, 0, cy, &mut tmp);
            for (t, o) in tmp
                .chunks_exact(out_stride)
                .zip(out.chunks_exact_mut(out_stride))
            {
                deinterleave(t, ch, o);
            }
        }
        (Some(cx), Some(cy)) if order == PassOrder::HorizontalFirst => {
            let rows = (y1 - y0) as usize;
            let mut tmp = vec![0u8; rows * out_stride];
            horizontal(
                ch,
                &px[y0 as usize * stride..],
                stride,
                0,
                rows,
                cx,
                &mut tmp,
            );
            resample::vertical_fixed(&tmp, out_stride, out_stride, y0, cy, &mut out);
        }
        (Some(cx), Some(cy)) => {
            let cols = (x1 - x0) as usize * ch;
            let mut tmp = vec![0u8; cs * cols];
            resample::vertical_fixed(&px[x0 as usize * ch..], stride, cols, 0, cy, &mut tmp);
            horizontal(ch, &tmp, cols, x0, cs, cx, &mut out);
        }
    }
    out
}

/// One interleaved row to row-planar (all of channel 0, then 1, ...).
fn deinterleave(src: &[u8], ch: usize, dst: &mut [u8]) {
    if ch == 1 {
        dst.copy_from_slice(src);
        return;
    }
    let n = src.len() / ch;
    for (j, p) in src.chunks_exact(ch).enumerate() {
        for (c, &v) in p.iter().enumerate() {
            dst[c * n + j] = v;
        }
    }
}

#[inline(always)]
fn horizontal(
    ch: usize,
    src: &[u8],
    stride: usize,
    col0: u32,
    rows: usize,
    cx: &resample::Fixed,
    dst: &mut [u8],
) {
    if ch == 1 {
        resample::horizontal_fixed::<1>(src, stride, col0, rows, cx, dst);
    } else {
        resample::horizontal_fixed::<3>(src, stride, col0, rows, cx, dst);
    }
}

/// Row-planar `c` x `c` x `ch` crop (see [`resize_crop`]) to a new output
/// tensor.
fn finish(crop: &[u8], c: usize, ch: usize, p: &ImageProfile) -> Vec<u8> {
    let mut out = vec![0u8; p.output_len()];
    let emit = Emit::new(p);
    for (i, row) in crop.chunks_exact(c * ch).enumerate() {
        emit.row(i, row, ch, &mut out);
    }
    out
}

/// Element bytes of one value per channel: value byte -> output element,
/// `S` bytes little-endian.
type Lut<const S: usize> = [[[u8; S]; 256]; 3];

/// The last step of the transform, applied one resampled row at a time
/// while the row is still in L1 (the fused path calls it from its vertical
/// pass): ToTensor + Normalize, dtype and layout, written straight into the
/// output tensor. Per-channel lookup tables keep it exact: each value is
/// computed once per byte value in f32, as torch does.
pub(crate) struct Emit {
    c: usize,
    layout: Layout,
    kind: EmitKind,
}

enum EmitKind {
    U8,
    B2(Box<Lut<2>>),
    B4(Box<Lut<4>>),
}

impl Emit {
    /// For `profile`'s crop, dtype and layout.
    pub(crate) fn new(p: &ImageProfile) -> Emit {
        let value = |k: usize, v: usize| {
            if p.normalize {
                // ToTensor then Normalize, in f32 as torch does.
                (v as f32 / 255.0 - p.mean[k]) / p.std[k]
            } else {
                v as f32
            }
        };
        fn table<const S: usize>(f: impl Fn(usize, usize) -> [u8; S]) -> Box<Lut<S>> {
            let mut t = Box::new([[[0u8; S]; 256]; 3]);
            for (k, chan) in t.iter_mut().enumerate() {
                for (v, e) in chan.iter_mut().enumerate() {
                    *e = f(k, v);
                }
            }
            t
        }
        let kind = match p.dtype {
            Dtype::U8 => EmitKind::U8,
            Dtype::F16 => EmitKind::B2(table(|k, v| f16::from_f32(value(k, v)).to_le_bytes())),
            Dtype::Bf16 => EmitKind::B2(table(|k, v| bf16::from_f32(value(k, v)).to_le_bytes())),
            Dtype::F32 => EmitKind::B4(table(|k, v| value(k, v).to_le_bytes())),
        };
        Emit {
            c: usize::from(p.crop),
            layout: p.layout,
            kind,
        }
    }

    /// Writes crop row `i` (row-planar: `c` samples of channel 0, then 1,
    /// then 2; `ch` is 3, or 1 for grayscale, replicated) into `out`, the
    /// whole output tensor.
    #[inline(always)]
    pub(crate) fn row(&self, i: usize, row: &[u8], ch: usize, out: &mut [u8]) {
        match &self.kind {
            EmitKind::U8 => self.row_lut::<1>(i, row, ch, out, |_, v| [v]),
            EmitKind::B2(t) => self.row_lut::<2>(i, row, ch, out, |k, v| t[k][usize::from(v)]),
            EmitKind::B4(t) => self.row_lut::<4>(i, row, ch, out, |k, v| t[k][usize::from(v)]),
        }
    }

    #[inline(always)]
    fn row_lut<const S: usize>(
        &self,
        i: usize,
        row: &[u8],
        ch: usize,
        out: &mut [u8],
        f: impl Fn(usize, u8) -> [u8; S],
    ) {
        let c = self.c;
        let chan = |k: usize| {
            let k = if ch == 1 { 0 } else { k };
            &row[k * c..(k + 1) * c]
        };
        match self.layout {
            Layout::Nchw => {
                let plane = c * c * S;
                for k in 0..3 {
                    let o = &mut out[k * plane + i * c * S..][..c * S];
                    if S == 1 {
                        o.copy_from_slice(chan(k));
                        continue;
                    }
                    for (e, &v) in o.chunks_exact_mut(S).zip(chan(k)) {
                        e.copy_from_slice(&f(k, v));
                    }
                }
            }
            Layout::Nhwc => {
                let o = &mut out[i * c * 3 * S..][..c * 3 * S];
                let (r, g, b) = (chan(0), chan(1), chan(2));
                for (j, px) in o.chunks_exact_mut(3 * S).enumerate() {
                    px[..S].copy_from_slice(&f(0, r[j]));
                    px[S..2 * S].copy_from_slice(&f(1, g[j]));
                    px[2 * S..].copy_from_slice(&f(2, b[j]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_start_rounds_half_to_even() {
        // (h - c) / 2 = 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4
        assert_eq!(crop_start(225, 224), 0);
        assert_eq!(crop_start(227, 224), 2);
        assert_eq!(crop_start(229, 224), 2);
        assert_eq!(crop_start(231, 224), 4);
        assert_eq!(crop_start(256, 224), 16);
    }

    #[test]
    fn resized_size_truncates() {
        assert_eq!(resized_size(500, 375, 256), (341, 256));
        assert_eq!(resized_size(375, 500, 256), (256, 341));
        assert_eq!(resized_size(7, 333, 256), (256, 12178));
        assert_eq!(resized_size(1, 1, 256), (256, 256));
    }
}
