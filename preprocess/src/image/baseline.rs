//! Our baseline JPEG decoder: the model of the card's decode engine and the
//! CPU path for everything the card takes (baseline sequential Huffman,
//! 8 bit, one or three components, 4:4:4 / 4:2:2 / 4:2:0 / 4:4:0, restart
//! markers, one interleaved scan).
//!
//! Why our own and not a crate: the crop keeps ~60% of an ImageNet-sized
//! photo, so the engine should Huffman-decode every block (it must, to stay
//! in sync) but run the IDCT only for blocks the resize window reads, and
//! stop after the last MCU row it needs. No decoder crate exposes that.
//!
//! Reconstruction is libjpeg-turbo's (what Pillow, hence torchvision, uses):
//! ISLOW integer IDCT ([`super::idct`]), "fancy" (triangle) chroma
//! upsampling with libjpeg's edge and context-row rules, and its fixed-point
//! YCbCr->RGB tables ([`super::color`]); tests check decoded pixels are
//! identical to Pillow's on the fixtures.
//!
//! The entropy-coded data is first copied without its stuffed zero bytes
//! into one buffer, split at restart markers; the bit reader then peeks 57
//! bits with one unaligned big-endian load, and a 10-bit table decodes most
//! AC codes and their extra bits in one step.

use super::idct::idct_islow;
use crate::Error;
use preba_protocol::media;
use std::rc::Rc;

/// Zigzag position -> natural (row-major) index; the extra entries clamp a
/// run past the end of a corrupt block to the last coefficient, as
/// libjpeg's table does (128 long so `k & 127` needs no bounds check).
const NATURAL: [u8; 128] = {
    let zz: [u8; 64] = [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
        20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ];
    let mut t = [63u8; 128];
    let mut i = 0;
    while i < 64 {
        t[i] = zz[i];
        i += 1;
    }
    t
};

/// The example Huffman tables of ITU T.81 Annex K.3 (libjpeg's
/// `std_huff_tables`), as (BITS, HUFFVAL) per class and slot. Motion-JPEG
/// frames (AVI1) leave them out; like libjpeg, a scan that names slot 0 or 1
/// of a class no DHT defined gets them (luminance in slot 0, chrominance
/// in slot 1).
const STD_DC: [([u8; 16], [u8; 12]); 2] = [
    (
        [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
        ],
    ),
    (
        [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
        ],
    ),
];
const STD_AC: [([u8; 16], [u8; 162]); 2] = [
    (
        [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125],
        [
            0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51,
            0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1,
            0x15, 0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18,
            0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39,
            0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57,
            0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75,
            0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92,
            0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
            0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
            0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8,
            0xD9, 0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2,
            0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
        ],
    ),
    (
        [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 119],
        [
            0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07,
            0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09,
            0x23, 0x33, 0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25,
            0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38,
            0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56,
            0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74,
            0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
            0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
            0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA,
            0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6,
            0xD7, 0xD8, 0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2,
            0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
        ],
    ),
];

const LUT_BITS: u32 = 10;
const LUT_SIZE: usize = 1 << LUT_BITS;
/// Flag in a `fast_ac` entry: end of block.
const FAST_EOB: i32 = 1 << 12;

/// One Huffman table, decoded through a `LUT_BITS` lookup with a canonical
/// slow path for longer codes.
struct Huff {
    /// `(length << 8) | symbol` for codes of up to LUT_BITS bits; 0 = longer.
    lut: Box<[u16; LUT_SIZE]>,
    /// AC fast path: `(value << 16) | (run << 8) | (code + extra length)`
    /// when code and extra bits fit in LUT_BITS, `FAST_EOB | length` for an
    /// end of block; 0 otherwise.
    fast_ac: Box<[i32; LUT_SIZE]>,
    /// Largest code of each length (index 1..=16), -1 when none.
    maxcode: [i32; 17],
    /// `vals[code + valoff[len]]` is the symbol of a `len`-bit code.
    valoff: [i32; 17],
    vals: [u8; 256],
    nvals: usize,
}

fn corrupt(m: impl Into<String>) -> Error {
    Error::CorruptInput(m.into())
}

/// HUFF_EXTEND: `s`-bit magnitude category to a signed value.
#[inline(always)]
fn extend(v: i32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if v < (1 << (s - 1)) {
        v - (1 << s) + 1
    } else {
        v
    }
}

impl Huff {
    /// From a DHT body's BITS (16 counts) and HUFFVAL.
    fn new(bits: &[u8; 16], vals_in: &[u8], is_dc: bool) -> Result<Huff, Error> {
        let total: usize = bits.iter().map(|&b| usize::from(b)).sum();
        if total > 256 || total != vals_in.len() {
            return Err(corrupt("Huffman table: bad symbol count"));
        }
        if is_dc && vals_in.iter().any(|&v| v > 15) {
            return Err(corrupt("Huffman table: DC symbol > 15"));
        }
        let mut vals = [0u8; 256];
        vals[..total].copy_from_slice(vals_in);
        let mut lut = Box::new([0u16; LUT_SIZE]);
        let mut fast_ac = Box::new([0i32; LUT_SIZE]);
        let mut maxcode = [-1i32; 17];
        let mut valoff = [0i32; 17];
        let mut code = 0i32;
        let mut k = 0usize;
        for len in 1..=16u32 {
            let n = usize::from(bits[len as usize - 1]);
            valoff[len as usize] = k as i32 - code;
            // Codes of `len` bits must fit: libjpeg's "bogus Huffman table".
            if code + n as i32 > (1 << len) {
                return Err(corrupt("Huffman table: code space overflow"));
            }
            for _ in 0..n {
                if len <= LUT_BITS {
                    let shift = LUT_BITS - len;
                    let first = (code as usize) << shift;
                    for e in &mut lut[first..first + (1 << shift)] {
                        *e = ((len as u16) << 8) | u16::from(vals[k]);
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                maxcode[len as usize] = code - 1;
            }
            code <<= 1;
        }
        if !is_dc {
            for (idx, f) in fast_ac.iter_mut().enumerate() {
                let e = lut[idx];
                let len = u32::from(e >> 8);
                let rs = u32::from(e & 0xFF);
                let (run, s) = (rs >> 4, rs & 15);
                if len == 0 || len + s > LUT_BITS {
                    continue;
                }
                if s == 0 {
                    // EOB ends the block; ZRL is a run of 15 zeros and a
                    // zero, which the fast path writes harmlessly.
                    // (Like libjpeg, any other run with no bits ends it too.)
                    *f = if run == 15 {
                        (15 << 8) | len as i32
                    } else {
                        FAST_EOB | len as i32
                    };
                    continue;
                }
                let raw = ((idx as u32) >> (LUT_BITS - len - s)) & ((1 << s) - 1);
                let v = extend(raw as i32, s);
                *f = (v << 16) | ((run as i32) << 8) | (len + s) as i32;
            }
        }
        Ok(Huff {
            lut,
            fast_ac,
            maxcode,
            valoff,
            vals,
            nvals: total,
        })
    }

    /// Decodes one symbol from the top bits of `w`; returns (symbol, length).
    #[inline(always)]
    fn decode(&self, w: u64) -> Result<(u32, u32), Error> {
        let e = self.lut[(w >> (64 - LUT_BITS)) as usize];
        if e != 0 {
            return Ok((u32::from(e & 0xFF), u32::from(e >> 8)));
        }
        self.decode_slow(w)
    }

    #[cold]
    fn decode_slow(&self, w: u64) -> Result<(u32, u32), Error> {
        for len in LUT_BITS + 1..=16 {
            let code = (w >> (64 - len)) as i32;
            if code <= self.maxcode[len as usize] {
                let i = (code + self.valoff[len as usize]) as usize;
                if i < self.nvals {
                    return Ok((u32::from(self.vals[i]), len));
                }
            }
        }
        Err(corrupt("bad Huffman code in the scan"))
    }
}

/// Bit reader over de-stuffed entropy data (padded with zeros): a
/// left-aligned 64-bit accumulator refilled without branches on the data
/// (one unaligned big-endian load; F. Giesen's "variant 4" refill).
struct Bits<'a> {
    buf: &'a [u8],
    /// Next byte to load.
    byte: usize,
    acc: u64,
    /// Valid bits at the top of `acc`.
    n: u32,
}

impl<'a> Bits<'a> {
    fn at(buf: &'a [u8], byte: usize) -> Self {
        let mut b = Bits {
            buf,
            byte,
            acc: 0,
            n: 0,
        };
        b.refill();
        b
    }

    /// Tops `acc` up to at least 56 valid bits (zeros past the buffer).
    #[inline(always)]
    fn refill(&mut self) {
        let w = match self.buf.get(self.byte..self.byte + 8) {
            Some(b) => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => 0,
        };
        self.acc |= w >> self.n;
        self.byte += ((63 - self.n) >> 3) as usize;
        self.n |= 56;
    }

    #[inline(always)]
    fn consume(&mut self, k: u32) {
        self.acc <<= k;
        self.n -= k;
    }

    /// Bits consumed so far, from the start of the buffer.
    fn pos(&self) -> usize {
        self.byte * 8 - self.n as usize
    }
}

#[derive(Clone, Copy, Default)]
pub(crate) struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    td: usize,
    ta: usize,
    /// Downsampled size (libjpeg's downsampled_width / _height).
    pub dw: usize,
    pub dh: usize,
}

/// Parsed headers of a frame our decoder takes.
struct Frame {
    width: usize,
    height: usize,
    comps: Vec<Component>,
    hmax: usize,
    vmax: usize,
    restart_interval: usize,
    qt: [[u16; 64]; 4],
    /// Offset of the first entropy-coded byte.
    scan_start: usize,
}

/// Why the fast decoder declines an input another decoder may take.
pub(crate) enum Declined {
    /// Structure this decoder does not handle (e.g. non-interleaved scans):
    /// use the general decoder.
    NotForUs,
    Err(Error),
}

impl From<Error> for Declined {
    fn from(e: Error) -> Self {
        Declined::Err(e)
    }
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

/// Tables in force when the scan starts.
struct Tables {
    dc: [Option<Rc<Huff>>; 4],
    ac: [Option<Rc<Huff>>; 4],
}

/// Built Huffman tables by DHT contents: most files carry the same few
/// tables (libjpeg's defaults, or one encoder's optimised ones), and
/// building the lookup tables costs more than decoding a small image's
/// DC coefficients.
#[derive(Default)]
pub(crate) struct HuffCache {
    entries: Vec<(Vec<u8>, Rc<Huff>)>,
}

impl HuffCache {
    const MAX: usize = 16;

    fn get(&mut self, class: u8, counts: &[u8; 16], vals: &[u8]) -> Result<Rc<Huff>, Error> {
        let is_dc = class >> 4 == 0;
        let same = |k: &[u8]| {
            k.len() == 17 + vals.len()
                && (k[0] == 0) == is_dc
                && k[1..17] == counts[..]
                && k[17..] == *vals
        };
        if let Some(i) = self.entries.iter().position(|(k, _)| same(k)) {
            return Ok(self.entries[i].1.clone());
        }
        let h = Rc::new(Huff::new(counts, vals, is_dc)?);
        if self.entries.len() == Self::MAX {
            self.entries.remove(0);
        }
        let mut key = Vec::with_capacity(17 + vals.len());
        key.push(u8::from(!is_dc));
        key.extend_from_slice(counts);
        key.extend_from_slice(vals);
        self.entries.push((key, h.clone()));
        Ok(h)
    }
}

/// Reads the tables and headers up to the first scan. Runs the shared probe
/// and walks the markers with the shared walker ([`media::JpegWalker`]), so
/// whatever the probes skip or refuse, it skips or refuses too.
fn parse(input: &[u8], cache: &mut HuffCache) -> Result<(Frame, Tables), Declined> {
    // The card's probe first: whatever it refuses (walk, SOF, DRI, SOS
    // header), this refuses the same way, by construction. A few hundred
    // header bytes: nothing against the decode.
    media::probe_jpeg(&mut &input[..]).map_err(|e| Declined::Err(e.into()))?;
    let mut walker = media::JpegWalker::new();
    let mut qt = [[0u16; 64]; 4];
    let mut qt_seen = [false; 4];
    let mut tables = Tables {
        dc: [None, None, None, None],
        ac: [None, None, None, None],
    };
    let mut frame: Option<Frame> = None;
    let mut restart_interval = 0usize;
    loop {
        let seg = walker
            .next_segment(&mut &input[..])
            .map_err(|e| Declined::Err(e.into()))?;
        // The walker checked the segment lies inside the input.
        let (start, next) = (seg.body as usize, seg.end() as usize);
        let body = &input[start..next];
        match seg.marker {
            0xDB => {
                let mut b = body;
                while !b.is_empty() {
                    let (pq, tq) = (usize::from(b[0] >> 4), usize::from(b[0] & 15));
                    let n = if pq == 0 { 64 } else { 128 };
                    if tq > 3 || pq > 1 || b.len() < 1 + n {
                        return Err(corrupt("bad quantisation table").into());
                    }
                    for k in 0..64 {
                        let v = if pq == 0 {
                            u16::from(b[1 + k])
                        } else {
                            u16::from_be_bytes([b[1 + 2 * k], b[2 + 2 * k]])
                        };
                        qt[tq][usize::from(NATURAL[k])] = v;
                    }
                    qt_seen[tq] = true;
                    b = &b[1 + n..];
                }
            }
            0xC4 => {
                let mut b = body;
                while !b.is_empty() {
                    if b.len() < 17 {
                        return Err(corrupt("short Huffman table").into());
                    }
                    let (tc, th) = (b[0] >> 4, usize::from(b[0] & 15));
                    if tc > 1 || th > 3 {
                        return Err(corrupt("bad Huffman table class or index").into());
                    }
                    let mut counts = [0u8; 16];
                    counts.copy_from_slice(&b[1..17]);
                    let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    if b.len() < 17 + n {
                        return Err(corrupt("short Huffman table").into());
                    }
                    let h = cache.get(b[0], &counts, &b[17..17 + n])?;
                    if tc == 0 {
                        tables.dc[th] = Some(h);
                    } else {
                        tables.ac[th] = Some(h);
                    }
                    b = &b[17 + n..];
                }
            }
            0xC0 => {
                if frame.is_some() {
                    return Err(corrupt("second frame header").into());
                }
                if body.len() < 6 {
                    return Err(corrupt("short frame header").into());
                }
                let n = usize::from(body[5]);
                if body[0] != 8 || !(n == 1 || n == 3) || body.len() != 6 + 3 * n {
                    return Err(Declined::NotForUs);
                }
                let height = be16(body, 1).unwrap_or(0);
                let width = be16(body, 3).unwrap_or(0);
                if width == 0 || height == 0 {
                    return Err(Declined::NotForUs);
                }
                let mut comps: Vec<Component> = body[6..]
                    .chunks_exact(3)
                    .map(|c| Component {
                        id: c[0],
                        // A single-component scan is never interleaved: one
                        // block per MCU, whatever the factors say.
                        h: if n == 1 { 1 } else { usize::from(c[1] >> 4) },
                        v: if n == 1 { 1 } else { usize::from(c[1] & 15) },
                        tq: usize::from(c[2] & 3),
                        ..Default::default()
                    })
                    .collect();
                if n == 3 {
                    let luma_ok =
                        matches!((comps[0].h, comps[0].v), (1, 1) | (2, 1) | (2, 2) | (1, 2));
                    let chroma_ok = (1..3).all(|i| comps[i].h == 1 && comps[i].v == 1);
                    if !luma_ok || !chroma_ok {
                        return Err(Declined::NotForUs);
                    }
                    // Duplicate component ids make scan selectors ambiguous.
                    let ids = [comps[0].id, comps[1].id, comps[2].id];
                    if ids[0] == ids[1] || ids[0] == ids[2] || ids[1] == ids[2] {
                        return Err(Declined::NotForUs);
                    }
                }
                let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
                let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
                for c in &mut comps {
                    c.dw = (width * c.h).div_ceil(hmax);
                    c.dh = (height * c.v).div_ceil(vmax);
                }
                frame = Some(Frame {
                    width,
                    height,
                    comps,
                    hmax,
                    vmax,
                    restart_interval: 0,
                    qt: [[0; 64]; 4],
                    scan_start: 0,
                });
            }
            0xC1..=0xC3 | 0xC9..=0xCB => {
                return Err(Declined::NotForUs);
            }
            0xDD => {
                restart_interval = be16(body, 0).ok_or_else(|| corrupt("short DRI segment"))?;
            }
            0xDA => {
                let Some(mut f) = frame else {
                    return Err(corrupt("scan before the frame header").into());
                };
                let ns = usize::from(*body.first().unwrap_or(&0));
                if ns != f.comps.len() || body.len() != 4 + 2 * ns {
                    // Not one scan with every component: the general decoder.
                    return Err(Declined::NotForUs);
                }
                let sel = &body[1..1 + 2 * ns];
                let spectral = &body[1 + 2 * ns..];
                if spectral != [0, 63, 0] {
                    return Err(Declined::NotForUs);
                }
                // Selectors in frame order (the ids are distinct).
                for (c, s) in f.comps.iter_mut().zip(sel.chunks_exact(2)) {
                    if s[0] != c.id {
                        return Err(Declined::NotForUs);
                    }
                    c.td = usize::from(s[1] >> 4);
                    c.ta = usize::from(s[1] & 15);
                    if c.td > 3 || c.ta > 3 {
                        return Err(corrupt("scan names a Huffman table index > 3").into());
                    }
                    // Motion JPEG: no DHT; libjpeg fills the empty slots 0
                    // and 1 with the standard tables when decoding starts.
                    if tables.dc[c.td].is_none() && c.td < 2 {
                        let (bits, vals) = &STD_DC[c.td];
                        tables.dc[c.td] = Some(cache.get(0x00, bits, vals)?);
                    }
                    if tables.ac[c.ta].is_none() && c.ta < 2 {
                        let (bits, vals) = &STD_AC[c.ta];
                        tables.ac[c.ta] = Some(cache.get(0x10, bits, vals)?);
                    }
                    if tables.dc[c.td].is_none() || tables.ac[c.ta].is_none() {
                        return Err(corrupt("scan uses an undefined Huffman table").into());
                    }
                    if !qt_seen[c.tq] {
                        return Err(
                            corrupt("component uses an undefined quantisation table").into()
                        );
                    }
                }
                f.qt = qt;
                f.restart_interval = restart_interval;
                f.scan_start = next;
                return Ok((f, tables));
            }
            _ => {}
        }
    }
}

/// Entropy-coded data without stuffing, and where each restart interval
/// starts in it.
struct Entropy {
    data: Vec<u8>,
    /// (start, end) byte offsets of each restart segment.
    segments: Vec<(usize, usize)>,
}

fn destuff(
    input: &[u8],
    start: usize,
    restarts: bool,
    mut data: Vec<u8>,
) -> Result<Entropy, Error> {
    data.clear();
    data.reserve(input.len().saturating_sub(start) + 8);
    let mut segments = Vec::new();
    let mut seg_start = 0usize;
    let mut i = start;
    loop {
        let Some(off) = memchr::memchr(0xFF, &input[i..]) else {
            return Err(corrupt(
                "scan truncated (no marker after the entropy-coded data)",
            ));
        };
        data.extend_from_slice(&input[i..i + off]);
        let mut k = i + off + 1;
        while input.get(k) == Some(&0xFF) {
            k += 1;
        }
        match input.get(k) {
            None => return Err(corrupt("scan truncated inside a marker")),
            Some(0) => {
                data.push(0xFF);
                i = k + 1;
            }
            Some(0xD0..=0xD7) if restarts => {
                segments.push((seg_start, data.len()));
                seg_start = data.len();
                i = k + 1;
            }
            Some(_) => break,
        }
    }
    segments.push((seg_start, data.len()));
    data.extend_from_slice(&[0; 8]);
    Ok(Entropy { data, segments })
}

/// Decoded samples of one component for a block-aligned window.
pub(crate) struct Plane {
    pub data: Vec<u8>,
    pub stride: usize,
    /// Component-sample coordinates of `data[0]`.
    pub x0: usize,
    pub y0: usize,
    pub comp: Component,
}

impl Plane {
    /// Samples `x..x + n` of component row `y` (both absolute).
    #[inline(always)]
    pub fn row(&self, y: usize, x: usize, n: usize) -> &[u8] {
        let at = (y - self.y0) * self.stride + (x - self.x0);
        &self.data[at..at + n]
    }
}

/// What the decoder produced for a luma window.
pub(crate) struct Decoded {
    pub planes: Vec<Plane>,
    /// Luma sampling factors relative to chroma (1 or 2 each); (1, 1) for
    /// grayscale.
    pub fx: usize,
    pub fy: usize,
}

/// Decodes the blocks the full-resolution window `[x0, x1) x [y0, y1)`
/// needs (plus the chroma context fancy upsampling reads).
/// What the decoder's header parse makes of `input`: `Some(Ok(offset of
/// the first entropy-coded byte))`, `Some(Err(_))` when it refuses it, `None`
/// when it declines it (structure for the general decoder). For the
/// routing-agreement tests.
pub(crate) fn parse_outcome(input: &[u8]) -> Option<Result<usize, Error>> {
    match parse(input, &mut HuffCache::default()) {
        Ok((f, _)) => Some(Ok(f.scan_start)),
        Err(Declined::Err(e)) => Some(Err(e)),
        Err(Declined::NotForUs) => None,
    }
}

pub(crate) fn decode(
    input: &[u8],
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
    bufs: &mut Buffers,
) -> Result<Decoded, Declined> {
    let (f, tables) = parse(input, &mut bufs.huff)?;
    if x1 > f.width || y1 > f.height || x0 >= x1 || y0 >= y1 {
        return Err(corrupt("decode window outside the image").into());
    }
    let ri = f.restart_interval;
    let ent = destuff(
        input,
        f.scan_start,
        ri > 0,
        std::mem::take(&mut bufs.entropy),
    )?;
    let result = reconstruct(&f, &tables, &ent, x0, x1, y0, y1, bufs);
    bufs.entropy = ent.data;
    result
}

/// Reusable memory of [`decode`], so a stream of images does not fault in
/// fresh pages for every one.
#[derive(Default)]
pub(crate) struct Buffers {
    huff: HuffCache,
    entropy: Vec<u8>,
    planes: Vec<Vec<u8>>,
}

/// Buffers larger than this are dropped after use rather than kept per
/// thread: one huge image must not pin its memory in every worker thread.
pub(crate) const KEEP_MAX: usize = 8 << 20;

/// Drops `v`'s memory if it is over [`KEEP_MAX`].
pub(crate) fn trim(v: &mut Vec<u8>) {
    if v.capacity() > KEEP_MAX {
        *v = Vec::new();
    }
}

impl Buffers {
    fn trim(&mut self) {
        trim(&mut self.entropy);
        self.planes.iter_mut().for_each(trim);
    }
}

impl Decoded {
    /// Returns the planes' memory to `bufs`.
    pub fn recycle(self, bufs: &mut Buffers) {
        bufs.planes.extend(self.planes.into_iter().map(|p| p.data));
        bufs.trim();
    }
}

#[allow(clippy::too_many_arguments)]
fn reconstruct(
    f: &Frame,
    tables: &Tables,
    ent: &Entropy,
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
    bufs: &mut Buffers,
) -> Result<Decoded, Declined> {
    let ri = f.restart_interval;
    let (fx, fy) = if f.comps.len() == 1 {
        (1, 1)
    } else {
        (f.hmax, f.vmax)
    };
    // Per component: the block window to reconstruct.
    let mut win = Vec::with_capacity(f.comps.len());
    let mut planes = Vec::with_capacity(f.comps.len());
    for c in &f.comps {
        let (sx, sy) = (f.hmax / c.h, f.vmax / c.v);
        // Full-resolution range -> component samples, with one sample of
        // context either side where upsampling reads neighbours.
        let (mut cx0, mut cx1) = (x0 / sx, (x1 - 1) / sx + 1);
        let (mut cy0, mut cy1) = (y0 / sy, (y1 - 1) / sy + 1);
        if sx > 1 {
            cx0 = cx0.saturating_sub(1);
            cx1 = (cx1 + 1).min(c.dw);
        }
        if sy > 1 {
            cy0 = cy0.saturating_sub(1);
            cy1 = (cy1 + 1).min(c.dh);
        }
        let (bx0, bx1) = (cx0 / 8, cx1.div_ceil(8));
        let (by0, by1) = (cy0 / 8, cy1.div_ceil(8));
        let stride = (bx1 - bx0) * 8;
        let rows = (by1 - by0) * 8;
        win.push((bx0, bx1, by0, by1));
        // Stale bytes are fine: every block of the window is written.
        let mut data = bufs.planes.pop().unwrap_or_default();
        if data.len() < stride * rows {
            data.resize(stride * rows, 0);
        }
        planes.push(Plane {
            data,
            stride,
            x0: bx0 * 8,
            y0: by0 * 8,
            comp: *c,
        });
    }
    let (mcux, mcuy) = if f.comps.len() == 1 {
        (f.width.div_ceil(8), f.height.div_ceil(8))
    } else {
        (f.width.div_ceil(8 * f.hmax), f.height.div_ceil(8 * f.vmax))
    };
    // Last MCU row any window needs.
    let last_row = f
        .comps
        .iter()
        .zip(&win)
        .map(|(c, w)| (w.3 - 1) / c.v)
        .max()
        .unwrap_or(0)
        .min(mcuy - 1);
    if ri > 0 {
        let total = mcux * mcuy;
        if ent.segments.len() < total.div_ceil(ri) {
            return Err(corrupt(format!(
                "scan has {} restart intervals, the frame needs {}",
                ent.segments.len(),
                total.div_ceil(ri)
            ))
            .into());
        }
    }
    let dc: Vec<&Huff> = f
        .comps
        .iter()
        .map(|c| tables.dc[c.td].as_deref())
        .collect::<Option<_>>()
        .ok_or_else(|| corrupt("undefined Huffman table"))?;
    let ac: Vec<&Huff> = f
        .comps
        .iter()
        .map(|c| tables.ac[c.ta].as_deref())
        .collect::<Option<_>>()
        .ok_or_else(|| corrupt("undefined Huffman table"))?;
    let mut pred = [0i32; 3];
    let mut seg = 0usize;
    let mut bits = Bits::at(&ent.data, ent.segments[0].0);
    let mut blk = [0i16; 64];
    let mut mcu = 0usize;
    for my in 0..=last_row {
        for mx in 0..mcux {
            if ri > 0 && mcu > 0 && mcu.is_multiple_of(ri) {
                if bits.pos() > ent.segments[seg].1 * 8 {
                    return Err(corrupt("restart interval runs past its data").into());
                }
                seg += 1;
                bits = Bits::at(&ent.data, ent.segments[seg].0);
                pred = [0; 3];
            }
            mcu += 1;
            for (ci, c) in f.comps.iter().enumerate() {
                let (bx0, bx1, by0, by1) = win[ci];
                let qt = &f.qt[c.tq];
                for v in 0..c.v {
                    let by = my * c.v + v;
                    for h in 0..c.h {
                        let bx = mx * c.h + h;
                        let keep = (bx0..bx1).contains(&bx) && (by0..by1).contains(&by);
                        if !keep {
                            // Decoded only to stay in sync: nothing stored.
                            decode_block::<false>(
                                &mut bits,
                                dc[ci],
                                ac[ci],
                                &mut pred[ci],
                                &mut blk,
                            )?;
                            continue;
                        }
                        let ac_nonzero = decode_block::<true>(
                            &mut bits,
                            dc[ci],
                            ac[ci],
                            &mut pred[ci],
                            &mut blk,
                        )?;
                        let p = &mut planes[ci];
                        let at = (by - by0) * 8 * p.stride + (bx - bx0) * 8;
                        if ac_nonzero {
                            idct_islow(&blk, qt, &mut p.data[at..], p.stride);
                            blk = [0; 64];
                        } else {
                            dc_only(blk[0], qt[0], &mut p.data[at..], p.stride);
                        }
                    }
                }
            }
        }
        let end = ent.segments[seg].1 * 8;
        if bits.pos() > end {
            return Err(corrupt("scan data ends inside an MCU (truncated or corrupt)").into());
        }
    }
    Ok(Decoded { planes, fx, fy })
}

/// The ISLOW IDCT of a block whose AC coefficients are all zero: every
/// sample is `(dc * q * 4 + 16) >> 5` + 128, clamped (its two passes).
#[inline(always)]
fn dc_only(dc: i16, q: u16, out: &mut [u8], stride: usize) {
    let x = i32::from(dc).wrapping_mul(i32::from(q)).wrapping_shl(2);
    let v = (x.wrapping_add(16) >> 5).wrapping_add(128).clamp(0, 255) as u8;
    for r in 0..8 {
        out[r * stride..r * stride + 8].fill(v);
    }
}

/// Decodes one block's coefficients (natural order, not dequantised) into
/// `blk` (which must be zero); returns whether any AC coefficient is set.
/// The bit state lives in locals during the block so it stays in registers.
#[inline(always)]
fn decode_block<const STORE: bool>(
    bits: &mut Bits,
    dc: &Huff,
    ac: &Huff,
    pred: &mut i32,
    blk: &mut [i16; 64],
) -> Result<bool, Error> {
    bits.refill();
    let w = bits.acc;
    let (s, len) = dc.decode(w)?;
    let diff = if s == 0 {
        0
    } else {
        extend(((w << len) >> (64 - s)) as i32, s)
    };
    bits.consume(len + s);
    *pred = pred.wrapping_add(diff);
    if STORE {
        blk[0] = *pred as i16;
    }
    let fast_ac: &[i32; LUT_SIZE] = &ac.fast_ac;
    let (mut acc, mut n) = (bits.acc, bits.n);
    let mut k = 1usize;
    let mut any = false;
    while k < 64 {
        // The fast path takes at most LUT_BITS bits; refilling only when
        // those may run out (not for the 31 bits a slow symbol can take)
        // makes the refill branch rarer and so better predicted.
        if n < LUT_BITS {
            bits.acc = acc;
            bits.n = n;
            bits.refill();
            (acc, n) = (bits.acc, bits.n);
        }
        let fast = fast_ac[(acc >> (64 - LUT_BITS)) as usize];
        if fast != 0 {
            let l = (fast & 0xFF) as u32;
            acc <<= l;
            n -= l;
            if fast & FAST_EOB != 0 {
                break;
            }
            k += ((fast >> 8) & 15) as usize;
            if STORE {
                blk[usize::from(NATURAL[k & 127]) & 63] = (fast >> 16) as i16;
            }
            k += 1;
            any = true;
            continue;
        }
        if n < 31 {
            bits.acc = acc;
            bits.n = n;
            bits.refill();
            (acc, n) = (bits.acc, bits.n);
        }
        let (rs, len) = ac.decode(acc)?;
        let (r, s) = (rs >> 4, rs & 15);
        if s == 0 {
            acc <<= len;
            n -= len;
            if r == 15 {
                k += 16;
                continue;
            }
            break;
        }
        k += r as usize;
        if STORE {
            let v = extend(((acc << len) >> (64 - s)) as i32, s);
            blk[usize::from(NATURAL[k & 127]) & 63] = v as i16;
        }
        acc <<= len + s;
        n -= len + s;
        k += 1;
        any = true;
    }
    bits.acc = acc;
    bits.n = n;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huffman_tables_that_cannot_exist_are_refused() {
        // Three 1-bit codes do not fit in a 1-bit code space.
        let mut bits = [0u8; 16];
        bits[0] = 3;
        assert!(Huff::new(&bits, &[0, 1, 2], false).is_err());
        // Counts and symbols disagree.
        bits[0] = 2;
        assert!(Huff::new(&bits, &[0], false).is_err());
        // DC categories above 15 have no meaning.
        assert!(Huff::new(&bits, &[3, 16], true).is_err());
        assert!(Huff::new(&bits, &[3, 16], false).is_ok());
    }

    #[test]
    fn fast_table_decodes_code_and_extra_bits_together() {
        // Codes: 0 -> symbol 0x01 (run 0, 1 extra bit), 10 -> EOB,
        // 110 -> ZRL (0xF0), 1110 -> 0x22 (run 2, 2 bits).
        let mut bits = [0u8; 16];
        bits[..4].copy_from_slice(&[1, 1, 1, 1]);
        let h = Huff::new(&bits, &[0x01, 0x00, 0xF0, 0x22], false).unwrap();
        let at = |prefix: u64, len: u32| h.fast_ac[(prefix << (LUT_BITS - len)) as usize];
        // "0" + "1": value +1, 2 bits; "0" + "0": value -1.
        assert_eq!(at(0b01, 2), (1 << 16) | 2);
        assert_eq!(at(0b00, 2), (-1i32 << 16) | 2);
        assert_eq!(at(0b10, 2), FAST_EOB | 2);
        assert_eq!(at(0b110, 3), (15 << 8) | 3);
        // "1110" + "01": run 2, value -2, 6 bits.
        assert_eq!(at(0b111001, 6), (-2i32 << 16) | (2 << 8) | 6);
    }

    #[test]
    fn oversized_buffers_are_not_kept() {
        let mut big = vec![0u8; KEEP_MAX + 1];
        trim(&mut big);
        assert_eq!(big.capacity(), 0);
        let mut small = vec![0u8; 1024];
        trim(&mut small);
        assert_eq!(small.len(), 1024);
    }

    #[test]
    fn bit_reader_counts_and_zero_fills() {
        let data = [0xA5u8, 0xFF, 0x00, 0x0F, 0, 0, 0, 0, 0, 0, 0, 0];
        // (Callers pad the data with 8 zero bytes, as `destuff` does.)
        let mut b = Bits::at(&data, 0);
        assert_eq!(b.acc >> 56, 0xA5);
        b.consume(8);
        assert_eq!(b.pos(), 8);
        b.refill();
        assert_eq!(b.acc >> 40, 0xFF000F);
        // Past the end of a short buffer the reader sees zeros, not a panic.
        let mut b = Bits::at(&data[..2], 1);
        b.consume(40);
        b.refill();
        assert_eq!(b.acc, 0);
    }
}
