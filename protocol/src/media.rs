//! Media header probes for untrusted bytes: enough of JPEG and WAV to decide,
//! before any engine or allocation, whether the card takes an input and how
//! large its output is. The firmware runs these on the card; the host runs
//! the same code to route requests, so both agree on "supported".
//!
//! The probes read through [`ByteSource`] so the firmware can walk a file in
//! card memory without copying it: only the segments that matter are read.

use crate::limits;
use nom::Parser;
use nom::number::complete::{be_u8, be_u16, le_u16, le_u32};

/// Random-access bytes of one input.
pub trait ByteSource {
    fn len(&self) -> u64;
    /// Fills `buf` from `off`; false when the range is outside the input.
    fn read(&mut self, off: u64, buf: &mut [u8]) -> bool;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ByteSource for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read(&mut self, off: u64, buf: &mut [u8]) -> bool {
        let Ok(off) = usize::try_from(off) else {
            return false;
        };
        match off
            .checked_add(buf.len())
            .and_then(|end| self.get(off..end))
        {
            Some(s) => {
                buf.copy_from_slice(s);
                true
            }
            None => false,
        }
    }
}

/// Why a probe refused an input. Each maps to a per-request status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaError {
    /// Not the format at all, or structurally broken (CORRUPT_INPUT).
    Corrupt(&'static str),
    /// A valid file the card's engines do not take (UNSUPPORTED_FORMAT).
    Unsupported(&'static str),
    /// Past a limit of [`limits`] (INPUT_TOO_LARGE).
    TooLarge(&'static str),
}

impl MediaError {
    pub const fn status(&self) -> crate::status::Status {
        match self {
            MediaError::Corrupt(_) => crate::status::Status::CorruptInput,
            MediaError::Unsupported(_) => crate::status::Status::UnsupportedFormat,
            MediaError::TooLarge(_) => crate::status::Status::InputTooLarge,
        }
    }
    pub const fn reason(&self) -> &'static str {
        match self {
            MediaError::Corrupt(r) | MediaError::Unsupported(r) | MediaError::TooLarge(r) => r,
        }
    }
}

/// What kind of media the bytes hold, from their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Wav,
}

pub fn sniff(head: &[u8]) -> Option<Kind> {
    if head.len() >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF {
        Some(Kind::Jpeg)
    } else if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WAVE" {
        Some(Kind::Wav)
    } else {
        None
    }
}

/// A JPEG frame header as far as the card's decoder cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    pub components: u8,
    pub precision: u8,
    /// SOF marker type: 0 baseline, 1 extended, 2 progressive, 3 lossless, 9+ arithmetic.
    pub sof: u8,
    /// Luma (first component) sampling factors.
    pub h_samp: u8,
    pub v_samp: u8,
    pub restart_interval: u16,
    /// Offset of the first scan's entropy-coded data.
    pub scan_offset: u64,
}

impl JpegHeader {
    /// Whether the card's decoder takes this frame: baseline sequential
    /// Huffman, 8-bit, one or three components, 4:4:4, 4:2:2, 4:2:0 or 4:4:0.
    pub fn card_check(&self, chroma: &[(u8, u8); 2], adobe_rgb: bool) -> Result<(), MediaError> {
        match self.sof {
            0 => {}
            2 | 6 | 10 | 14 => return Err(MediaError::Unsupported("progressive JPEG")),
            3 | 7 | 11 | 15 => return Err(MediaError::Unsupported("lossless JPEG")),
            9..=15 => return Err(MediaError::Unsupported("arithmetic-coded JPEG")),
            _ => return Err(MediaError::Unsupported("extended sequential JPEG")),
        }
        if self.precision != 8 {
            return Err(MediaError::Unsupported("not 8-bit JPEG"));
        }
        match self.components {
            1 => Ok(()),
            3 => {
                if adobe_rgb {
                    return Err(MediaError::Unsupported("RGB (not YCbCr) JPEG"));
                }
                if chroma != &[(1, 1), (1, 1)] {
                    return Err(MediaError::Unsupported("chroma sampling"));
                }
                match (self.h_samp, self.v_samp) {
                    (1, 1) | (2, 1) | (2, 2) | (1, 2) => Ok(()),
                    _ => Err(MediaError::Unsupported("chroma sampling")),
                }
            }
            4 => Err(MediaError::Unsupported("CMYK/YCCK JPEG")),
            _ => Err(MediaError::Unsupported("component count")),
        }
    }
}

/// Result of walking the JPEG markers up to the first scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegProbe {
    pub header: JpegHeader,
    /// Sampling factors of components 2 and 3 (zero when absent).
    pub chroma: [(u8, u8); 2],
    /// The colour components are RGB, not YCbCr: an Adobe APP14 segment
    /// says transform 0, or the component ids are 'R', 'G', 'B' (3
    /// components only).
    pub adobe_rgb: bool,
    /// Sampling factors (h, v) of each component (the first `components`,
    /// at most 4, are valid).
    pub sampling: [(u8, u8); 4],
    /// Component identifiers (the first `components`, at most 4).
    pub ids: [u8; 4],
    /// Transform flag of an Adobe APP14 segment, if one was seen.
    pub adobe_transform: Option<u8>,
    /// What the walk skipped before the first scan (see [`JpegWalker`]).
    pub skipped: JpegSkipped,
}

impl JpegProbe {
    pub fn card_check(&self) -> Result<(), MediaError> {
        self.header.card_check(&self.chroma, self.adobe_rgb)
    }
}

/// Most marker segments (SOI not counted) walked before the first scan:
/// bounds the walk on hostile files made of millions of empty segments.
/// Past it: INPUT_TOO_LARGE.
pub const MAX_JPEG_SEGMENTS: u32 = 1024;

/// Most bytes the walk skips before the first scan (extraneous bytes, 0xFF
/// fill bytes and standalone RST/TEM markers together): bounds the soft
/// core's work on a file of garbage. Past it: INPUT_TOO_LARGE.
pub const MAX_JPEG_SKIPPED_BYTES: u64 = 64 * 1024;

/// One marker segment: its code (the byte after 0xFF) and its body (after
/// the two length bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegSegment {
    pub marker: u8,
    /// Offset of the body in the input.
    pub body: u64,
    /// Body length (the segment's length field minus 2).
    pub len: u64,
}

impl JpegSegment {
    /// Offset just past the segment (for SOS: the first entropy-coded byte).
    pub const fn end(&self) -> u64 {
        self.body + self.len
    }
}

/// What a walk skipped, as libjpeg's `next_marker` does (it warns
/// "Corrupt JPEG data: N extraneous bytes before marker 0xXX" and goes on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JpegSkipped {
    /// Extraneous bytes: anything but 0xFF where a marker should start, and
    /// 0xFF 0x00 pairs (2 each), libjpeg's `discarded_bytes`.
    pub junk: u64,
    /// 0xFF fill bytes before a marker code (beyond the one 0xFF).
    pub fill: u64,
    /// Standalone markers skipped before the first scan: RST0..RST7 and TEM.
    pub standalone: u32,
}

impl JpegSkipped {
    const fn total(&self) -> u64 {
        self.junk + self.fill + 2 * self.standalone as u64
    }
}

/// The one JPEG marker walker: from SOI up to the first SOS, with libjpeg's
/// tolerance (`jdmarker.c`: `first_marker`, `next_marker`, `read_markers`).
/// The firmware's probe, the golden model's probe and its baseline decoder
/// all walk with it, so they route every input the same way.
///
/// - The input starts with 0xFF 0xD8 (SOI), else CORRUPT_INPUT.
/// - Before each marker: any bytes other than 0xFF are skipped (counted as
///   junk); any number of 0xFF fill bytes are skipped; 0xFF 0x00 is skipped
///   as junk (2 bytes) and the search goes on.
/// - RST0..RST7 (0xFFD0..D7) and TEM (0xFF01) carry no length and are skipped.
/// - SOI again (0xFFD8), EOI (0xFFD9) and markers libjpeg does not know
///   (0xFF02..0xFFBF reserved, JPGn 0xFFF0..FD, DHP 0xFFDE, EXP 0xFFDF) are
///   CORRUPT_INPUT.
/// - SOF5..7, SOF13..15 (hierarchical) and JPG (0xFFC8) are
///   UNSUPPORTED_FORMAT (libjpeg: "Unsupported marker type").
/// - Every other marker has a length of at least 2 that stays inside the
///   input, else CORRUPT_INPUT; it is returned to the caller, who stops at SOS.
/// - Limits: [`MAX_JPEG_SEGMENTS`], [`MAX_JPEG_SKIPPED_BYTES`] (INPUT_TOO_LARGE).
#[derive(Clone, Copy, Debug, Default)]
pub struct JpegWalker {
    pos: u64,
    segments: u32,
    pub skipped: JpegSkipped,
}

impl JpegWalker {
    pub const fn new() -> Self {
        JpegWalker {
            pos: 0,
            segments: 0,
            skipped: JpegSkipped {
                junk: 0,
                fill: 0,
                standalone: 0,
            },
        }
    }

    fn budget(&self) -> Result<(), MediaError> {
        if self.skipped.total() > MAX_JPEG_SKIPPED_BYTES {
            return Err(MediaError::TooLarge("bytes skipped between JPEG markers"));
        }
        Ok(())
    }

    fn byte<S: ByteSource>(&self, src: &mut S) -> Result<u8, MediaError> {
        let mut b = [0u8; 1];
        if !src.read(self.pos, &mut b) {
            return Err(MediaError::Corrupt("truncated before the first scan"));
        }
        Ok(b[0])
    }

    /// The next marker segment. Call again after anything but SOS (0xDA);
    /// after SOS the entropy-coded data starts at [`JpegSegment::end`].
    pub fn next_segment<S: ByteSource>(&mut self, src: &mut S) -> Result<JpegSegment, MediaError> {
        let len = src.len();
        if self.pos == 0 {
            if len > limits::MAX_INPUT_BYTES {
                return Err(MediaError::TooLarge("input bytes"));
            }
            let mut two = [0u8; 2];
            if !src.read(0, &mut two) || two != [0xFF, 0xD8] {
                return Err(MediaError::Corrupt("not a JPEG (no SOI marker)"));
            }
            self.pos = 2;
        }
        let marker = loop {
            // libjpeg's next_marker: skip non-FF bytes, swallow fill bytes;
            // FF 00 is stuffed data out of place: skip it too.
            while self.byte(src)? != 0xFF {
                self.skipped.junk += 1;
                self.pos += 1;
                self.budget()?;
            }
            self.pos += 1;
            let mut code = self.byte(src)?;
            while code == 0xFF {
                self.skipped.fill += 1;
                self.budget()?;
                self.pos += 1;
                code = self.byte(src)?;
            }
            self.pos += 1;
            match code {
                0x00 => self.skipped.junk += 2,
                0x01 | 0xD0..=0xD7 => self.skipped.standalone += 1,
                _ => break code,
            }
            self.budget()?;
        };
        match marker {
            0xD8 => return Err(MediaError::Corrupt("second SOI marker")),
            0xD9 => return Err(MediaError::Corrupt("EOI before the first scan")),
            0xC5..=0xC8 | 0xCD..=0xCF => {
                return Err(MediaError::Unsupported(
                    "hierarchical JPEG (SOF5-7, SOF13-15) or JPG marker",
                ));
            }
            0xC0..=0xC4 | 0xC9..=0xCC | 0xDA..=0xDD | 0xE0..=0xEF | 0xFE => {}
            _ => {
                return Err(MediaError::Corrupt(
                    "unknown JPEG marker (reserved, JPGn, DHP or EXP)",
                ));
            }
        }
        self.segments += 1;
        if self.segments > MAX_JPEG_SEGMENTS {
            return Err(MediaError::TooLarge(
                "marker segments before the first scan",
            ));
        }
        let mut two = [0u8; 2];
        if !src.read(self.pos, &mut two) {
            return Err(MediaError::Corrupt("truncated segment length"));
        }
        let seg_len = u16::from_be_bytes(two) as u64;
        if seg_len < 2 {
            return Err(MediaError::Corrupt("segment length below 2"));
        }
        let body = self.pos + 2;
        let body_len = seg_len - 2;
        if body + body_len > len {
            return Err(MediaError::Corrupt("segment past the end of the file"));
        }
        self.pos = body + body_len;
        Ok(JpegSegment {
            marker,
            body,
            len: body_len,
        })
    }
}

/// Walks the markers of a JPEG up to its first SOS with [`JpegWalker`],
/// reading only the segments that matter (SOF, DRI, Adobe APP14, SOS).
/// Checks dimensions against the limits. Does not judge card support
/// ([`JpegProbe::card_check`] does).
pub fn probe_jpeg<S: ByteSource>(src: &mut S) -> Result<JpegProbe, MediaError> {
    let mut walker = JpegWalker::new();
    let mut frame: Option<Frame> = None;
    let mut restart_interval = 0u16;
    let mut adobe_transform: Option<u8> = None;
    loop {
        let seg = walker.next_segment(src)?;
        let (body, body_len) = (seg.body, seg.len);
        match seg.marker {
            0xC0..=0xC3 | 0xC9..=0xCB => {
                if frame.is_some() {
                    return Err(MediaError::Corrupt("second frame header"));
                }
                let mut buf = [0u8; 6 + 3 * 4];
                let n = body_len.min(buf.len() as u64) as usize;
                if body_len < 6 || !src.read(body, &mut buf[..n]) {
                    return Err(MediaError::Corrupt("short frame header"));
                }
                frame = Some(parse_sof(seg.marker - 0xC0, &buf[..n], body_len)?);
            }
            0xDD => {
                let mut buf = [0u8; 2];
                if body_len != 2 || !src.read(body, &mut buf) {
                    return Err(MediaError::Corrupt("bad restart interval segment"));
                }
                restart_interval = u16::from_be_bytes(buf);
            }
            0xEE => {
                // Adobe APP14: "Adobe" + version u16 + flags0 u16 + flags1 u16 + transform u8.
                let mut buf = [0u8; 12];
                if body_len >= 12 && src.read(body, &mut buf) && &buf[0..5] == b"Adobe" {
                    adobe_transform = Some(buf[11]);
                }
            }
            0xDA => {
                let Some(f) = frame else {
                    return Err(MediaError::Corrupt("scan before frame header"));
                };
                let mut ns = [0u8; 1];
                if body_len < 6 || !src.read(body, &mut ns) || ns[0] == 0 || ns[0] > 4 {
                    return Err(MediaError::Corrupt("bad scan header"));
                }
                if body_len != 4 + 2 * ns[0] as u64 {
                    return Err(MediaError::Corrupt("bad scan header length"));
                }
                let mut header = f.header;
                header.restart_interval = restart_interval;
                header.scan_offset = seg.end();
                let rgb =
                    header.components == 3 && (adobe_transform == Some(0) || f.ids[..3] == *b"RGB");
                return Ok(JpegProbe {
                    header,
                    chroma: [f.sampling[1], f.sampling[2]],
                    adobe_rgb: rgb,
                    sampling: f.sampling,
                    ids: f.ids,
                    adobe_transform,
                    skipped: walker.skipped,
                });
            }
            _ => {}
        }
    }
}

#[derive(Clone, Copy)]
struct Frame {
    header: JpegHeader,
    sampling: [(u8, u8); 4],
    ids: [u8; 4],
}

fn parse_sof(sof: u8, buf: &[u8], body_len: u64) -> Result<Frame, MediaError> {
    let r: nom::IResult<&[u8], (u8, u16, u16, u8)> = (be_u8, be_u16, be_u16, be_u8).parse(buf);
    let Ok((rest, (precision, height, width, ncomp))) = r else {
        return Err(MediaError::Corrupt("short frame header"));
    };
    if ncomp == 0 || body_len != 6 + 3 * ncomp as u64 {
        return Err(MediaError::Corrupt(
            "frame header length does not match its components",
        ));
    }
    if width == 0 {
        return Err(MediaError::Corrupt("zero image width"));
    }
    if height == 0 {
        return Err(MediaError::Unsupported("height defined by a DNL marker"));
    }
    if !(precision == 8
        || precision == 12
        || (sof == 3 || sof == 11) && (2..=16).contains(&precision))
    {
        return Err(MediaError::Corrupt("sample precision"));
    }
    let (w, h) = (width as u32, height as u32);
    if w > limits::MAX_IMAGE_SIDE
        || h > limits::MAX_IMAGE_SIDE
        || w as u64 * h as u64 > limits::MAX_IMAGE_PIXELS
    {
        return Err(MediaError::TooLarge("image dimensions"));
    }
    if ncomp > 4 {
        return Err(MediaError::Unsupported("component count"));
    }
    let mut sampling = [(0u8, 0u8); 4];
    let mut ids = [0u8; 4];
    for (i, c) in rest.chunks_exact(3).take(ncomp as usize).enumerate() {
        let (hs, vs) = (c[1] >> 4, c[1] & 0x0F);
        if !(1..=4).contains(&hs) || !(1..=4).contains(&vs) || c[2] > 3 {
            return Err(MediaError::Corrupt("component sampling or table"));
        }
        sampling[i] = (hs, vs);
        ids[i] = c[0];
    }
    let header = JpegHeader {
        width: w,
        height: h,
        components: ncomp,
        precision,
        sof,
        h_samp: if ncomp == 1 { 1 } else { sampling[0].0 },
        v_samp: if ncomp == 1 { 1 } else { sampling[0].1 },
        restart_interval: 0,
        scan_offset: 0,
    };
    Ok(Frame {
        header,
        sampling,
        ids,
    })
}

/// Sample encodings a WAV file may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WavEncoding {
    /// Unsigned 8-bit, signed 16/24/32-bit little-endian integers.
    Pcm(u16),
    /// IEEE 32-bit float.
    Float32,
}

/// A WAV header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WavHeader {
    pub encoding: WavEncoding,
    pub channels: u16,
    pub sample_rate: u32,
    /// Offset and length of the sample data (length clipped to whole frames
    /// that are present in the file).
    pub data_offset: u64,
    pub data_len: u64,
    /// Samples per channel.
    pub frames: u64,
}

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// Tail shared by the KSDATAFORMAT_SUBTYPE GUIDs (after the 2-byte format tag).
const GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

/// Most RIFF chunks walked before `data`: bounds the walk on hostile files.
const MAX_WAV_CHUNKS: u32 = 1024;

/// Parses RIFF/WAVE chunks up to `data`. A data chunk that claims more bytes
/// than the file holds is clipped to what is there (as most readers do).
pub fn probe_wav<S: ByteSource>(src: &mut S) -> Result<WavHeader, MediaError> {
    let len = src.len();
    if len > limits::MAX_INPUT_BYTES {
        return Err(MediaError::TooLarge("input bytes"));
    }
    let mut riff = [0u8; 12];
    if src.read(0, &mut riff) && &riff[8..12] == b"WAVE" {
        match &riff[0..4] {
            b"RIFX" => return Err(MediaError::Unsupported("big-endian RIFX WAV")),
            b"RF64" | b"BW64" => return Err(MediaError::Unsupported("64-bit RF64/BW64 WAV")),
            _ => {}
        }
    }
    if !src.read(0, &mut riff) || &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return Err(MediaError::Corrupt("not a WAV file (no RIFF/WAVE header)"));
    }
    let mut pos = 12u64;
    let mut fmt: Option<(Option<WavEncoding>, u16, u32, u16)> = None;
    for _ in 0..MAX_WAV_CHUNKS {
        let mut ch = [0u8; 8];
        if !src.read(pos, &mut ch) {
            return Err(MediaError::Corrupt(if fmt.is_some() {
                "no data chunk"
            } else {
                "no fmt chunk"
            }));
        }
        let size = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]) as u64;
        let body = pos + 8;
        match &ch[0..4] {
            b"fmt " => {
                if fmt.is_some() {
                    return Err(MediaError::Corrupt("second fmt chunk"));
                }
                let mut buf = [0u8; 40];
                if size < 16
                    || body + size.min(40) > len
                    || !src.read(body, &mut buf[..size.min(40) as usize])
                {
                    return Err(MediaError::Corrupt("short fmt chunk"));
                }
                fmt = Some(parse_fmt(&buf[..size.min(40) as usize])?);
            }
            b"data" => {
                let Some((encoding, channels, sample_rate, block)) = fmt else {
                    return Err(MediaError::Corrupt("data chunk before fmt chunk"));
                };
                let avail = len.saturating_sub(body).min(size);
                let frames = avail / block as u64;
                if frames > limits::MAX_AUDIO_SECONDS * sample_rate as u64 {
                    return Err(MediaError::TooLarge("audio duration"));
                }
                let Some(encoding) = encoding else {
                    return Err(MediaError::Unsupported("sample width"));
                };
                return Ok(WavHeader {
                    encoding,
                    channels,
                    sample_rate,
                    data_offset: body,
                    data_len: frames * block as u64,
                    frames,
                });
            }
            _ => {}
        }
        // Chunks are padded to even sizes.
        pos = body + size + (size & 1);
    }
    Err(MediaError::Corrupt("too many chunks"))
}

/// The fixed 16-byte head of a fmt chunk.
type FmtHead = (u16, u16, u32, u32, u16, u16);

/// The encoding is `None` for 64-bit float: the CPU path reads it and the card does not, so the
/// card's refusal (UNSUPPORTED_FORMAT, a CPU fallback) waits until the file has proved well
/// formed up to its data chunk; a broken 64-bit file is CORRUPT_INPUT on both paths.
fn parse_fmt(buf: &[u8]) -> Result<(Option<WavEncoding>, u16, u32, u16), MediaError> {
    let r: nom::IResult<&[u8], FmtHead> =
        (le_u16, le_u16, le_u32, le_u32, le_u16, le_u16).parse(buf);
    let Ok((rest, (mut tag, channels, rate, _byte_rate, block, bits))) = r else {
        return Err(MediaError::Corrupt("short fmt chunk"));
    };
    if tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize u16, valid bits u16, channel mask u32, GUID 16.
        if rest.len() < 24 {
            return Err(MediaError::Corrupt("short WAVE_FORMAT_EXTENSIBLE chunk"));
        }
        let guid = &rest[8..24];
        if guid[2..] != GUID_TAIL {
            return Err(MediaError::Unsupported("WAV sub-format"));
        }
        tag = u16::from_le_bytes([guid[0], guid[1]]);
    }
    if channels == 0 {
        return Err(MediaError::Corrupt("zero channels"));
    }
    if channels > limits::MAX_AUDIO_CHANNELS {
        return Err(MediaError::TooLarge("channel count"));
    }
    if rate == 0 {
        return Err(MediaError::Corrupt("zero sample rate"));
    }
    if rate > limits::MAX_AUDIO_RATE {
        return Err(MediaError::TooLarge("sample rate"));
    }
    if rate < limits::MIN_AUDIO_RATE {
        return Err(MediaError::Unsupported("sample rate"));
    }
    let encoding = match (tag, bits) {
        (WAVE_FORMAT_PCM, 8 | 16 | 24 | 32) => Some(WavEncoding::Pcm(bits)),
        (WAVE_FORMAT_IEEE_FLOAT, 32) => Some(WavEncoding::Float32),
        (WAVE_FORMAT_IEEE_FLOAT, 64) => None,
        (WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT, _) => {
            return Err(MediaError::Unsupported("sample width"));
        }
        _ => return Err(MediaError::Unsupported("WAV encoding (not PCM or float)")),
    };
    if block as u32 != channels as u32 * (bits as u32 / 8) {
        return Err(MediaError::Corrupt(
            "block align does not match channels and width",
        ));
    }
    Ok((encoding, channels, rate, block))
}
