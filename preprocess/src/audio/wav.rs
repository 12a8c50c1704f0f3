//! RIFF/WAVE parsing from untrusted bytes.
//!
//! Accepted: `RIFF`/`WAVE` with a `fmt ` chunk before the `data` chunk;
//! format tags PCM (1), IEEE float (3) and WAVE_FORMAT_EXTENSIBLE (0xFFFE)
//! whose sub-format is PCM or IEEE float; unsigned 8-bit, signed 16/24/32-bit
//! integer, 32/64-bit float samples; 1..=`MAX_AUDIO_CHANNELS` channels.
//!
//! Decisions (the same on the card and on the CPU path):
//! - A `data` chunk whose declared length runs past the end of the input is
//!   read up to the end of the input (as libsndfile, Python's `wave`, sox and
//!   most players do): streaming writers leave 0 or 0xFFFFFFFF there, and a
//!   truncated download still carries usable audio. A trailing partial frame
//!   is dropped. The RIFF size field is ignored for the same reason.
//! - Chunks other than `fmt ` and `data` are skipped (with their pad byte),
//!   at most 1024 chunks in all;
//!   anything after the `data` chunk is ignored.
//! - `block_align` must equal `channels * bytes_per_sample`; otherwise the
//!   frame layout is ambiguous and the file is corrupt.
//! - Errors: not RIFF/WAVE, missing/short chunks, zero channels, zero rate,
//!   a bad block alignment: `CorruptInput`. RIFX/RF64, compressed codecs
//!   (ADPCM, A-law, mu-law, MP3, ...), odd sample sizes, rates below
//!   `MIN_AUDIO_RATE`: `UnsupportedFormat`. Past `MAX_INPUT_BYTES`,
//!   `MAX_AUDIO_CHANNELS`, `MAX_AUDIO_RATE` or `MAX_AUDIO_SECONDS`:
//!   `InputTooLarge`, decided from the header before any allocation.
//! - Float samples: NaN reads as 0 and magnitudes are clamped to
//!   [`MAX_SAMPLE`], so the features of any file are finite.

use crate::Error;
use preba_protocol::limits::{
    MAX_AUDIO_CHANNELS, MAX_AUDIO_RATE, MAX_AUDIO_SECONDS, MAX_INPUT_BYTES, MIN_AUDIO_RATE,
};

/// What the header of a WAV file says (after the checks above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WavInfo {
    pub sample_rate: u32,
    pub channels: u16,
    /// Bits per sample of the container (8, 16, 24, 32 or 64).
    pub bits: u16,
    /// IEEE float samples (32 or 64 bits) rather than integer PCM.
    pub float: bool,
    /// Samples per channel actually present (whole frames only).
    pub frames: u64,
}

impl WavInfo {
    /// Duration in seconds at the source rate.
    pub fn seconds(&self) -> f64 {
        self.frames as f64 / self.sample_rate as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SampleFormat {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl SampleFormat {
    fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::I16 => 2,
            SampleFormat::I24 => 3,
            SampleFormat::I32 | SampleFormat::F32 => 4,
            SampleFormat::F64 => 8,
        }
    }
}

/// A parsed header and the bytes of its whole frames.
pub(crate) struct Parsed<'a> {
    pub info: WavInfo,
    pub format: SampleFormat,
    pub data: &'a [u8],
}

/// Chunks read before giving up on finding `data`.
const MAX_CHUNKS: usize = 1024;
const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// The 14 bytes after the format code in a KSDATAFORMAT_SUBTYPE_* GUID.
const SUBTYPE_GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn corrupt(m: &str) -> Error {
    Error::CorruptInput(m.to_string())
}

fn codec_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => "MS ADPCM",
        0x0006 => "A-law",
        0x0007 => "mu-law",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG",
        0x0055 => "MP3",
        _ => "unknown codec",
    }
}

struct Fmt {
    format: SampleFormat,
    channels: u16,
    rate: u32,
    bits: u16,
}

fn parse_fmt(body: &[u8]) -> Result<Fmt, Error> {
    if body.len() < 16 {
        return Err(corrupt("fmt chunk shorter than 16 bytes"));
    }
    let mut tag = u16_at(body, 0).unwrap_or(0);
    let channels = u16_at(body, 2).unwrap_or(0);
    let rate = u32_at(body, 4).unwrap_or(0);
    let block_align = u16_at(body, 12).unwrap_or(0);
    let bits = u16_at(body, 14).unwrap_or(0);
    if tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize (2) + wValidBitsPerSample (2) + dwChannelMask (4) + GUID (16).
        if body.len() < 40 {
            return Err(corrupt(
                "WAVE_FORMAT_EXTENSIBLE fmt chunk shorter than 40 bytes",
            ));
        }
        let guid = &body[24..40];
        if guid[2..] != SUBTYPE_GUID_TAIL {
            return Err(Error::UnsupportedFormat(
                "WAVE_FORMAT_EXTENSIBLE with a non-standard sub-format GUID".into(),
            ));
        }
        tag = u16::from_le_bytes([guid[0], guid[1]]);
    }
    // Checked in the order of the card's probe (preba_protocol::media), so
    // both report the same status for the same file.
    if channels == 0 {
        return Err(corrupt("zero channels"));
    }
    if channels > MAX_AUDIO_CHANNELS {
        return Err(Error::InputTooLarge(format!(
            "{channels} channels (limit {MAX_AUDIO_CHANNELS})"
        )));
    }
    if rate == 0 {
        return Err(corrupt("sample rate 0"));
    }
    if rate > MAX_AUDIO_RATE {
        return Err(Error::InputTooLarge(format!(
            "sample rate {rate} Hz (limit {MAX_AUDIO_RATE} Hz)"
        )));
    }
    if rate < MIN_AUDIO_RATE {
        return Err(Error::UnsupportedFormat(format!(
            "sample rate {rate} Hz (below {MIN_AUDIO_RATE} Hz)"
        )));
    }
    let format = match (tag, bits) {
        (WAVE_FORMAT_PCM, 8) => SampleFormat::U8,
        (WAVE_FORMAT_PCM, 16) => SampleFormat::I16,
        (WAVE_FORMAT_PCM, 24) => SampleFormat::I24,
        (WAVE_FORMAT_PCM, 32) => SampleFormat::I32,
        (WAVE_FORMAT_IEEE_FLOAT, 32) => SampleFormat::F32,
        (WAVE_FORMAT_IEEE_FLOAT, 64) => SampleFormat::F64,
        (WAVE_FORMAT_PCM, b) => {
            return Err(Error::UnsupportedFormat(format!(
                "{b}-bit integer PCM (8, 16, 24 and 32 are taken)"
            )));
        }
        (WAVE_FORMAT_IEEE_FLOAT, b) => {
            return Err(Error::UnsupportedFormat(format!(
                "{b}-bit float samples (32 and 64 are taken)"
            )));
        }
        (t, _) => {
            return Err(Error::UnsupportedFormat(format!(
                "WAV format tag 0x{t:04x} ({}); only PCM and IEEE float are taken",
                codec_name(t)
            )));
        }
    };
    let want = channels as usize * format.bytes();
    if block_align as usize != want {
        return Err(corrupt(&format!(
            "block align {block_align}, expected {want} for {channels} channels of {bits} bits"
        )));
    }
    Ok(Fmt {
        format,
        channels,
        rate,
        bits,
    })
}

/// Parses the header and locates the sample data. No allocation.
pub(crate) fn parse(input: &[u8]) -> Result<Parsed<'_>, Error> {
    if input.len() as u64 > MAX_INPUT_BYTES {
        return Err(Error::InputTooLarge(format!(
            "{} bytes (limit {MAX_INPUT_BYTES})",
            input.len()
        )));
    }
    if input.len() < 12 {
        return Err(corrupt("shorter than a RIFF header"));
    }
    match (&input[0..4], &input[8..12]) {
        (b"RIFF", b"WAVE") => {}
        (b"RIFX", b"WAVE") => {
            return Err(Error::UnsupportedFormat("big-endian RIFX WAV".into()));
        }
        (b"RF64", b"WAVE") | (b"BW64", b"WAVE") => {
            return Err(Error::UnsupportedFormat("RF64/BW64 WAV".into()));
        }
        _ => return Err(corrupt("not a RIFF/WAVE file")),
    }
    let mut off: usize = 12;
    let mut fmt: Option<Fmt> = None;
    // At most MAX_CHUNKS chunks before `data` (as the card's probe).
    for _ in 0..MAX_CHUNKS {
        let Some(header) = input.get(off..off.saturating_add(8)) else {
            return Err(corrupt(if fmt.is_some() {
                "no data chunk"
            } else {
                "no fmt chunk"
            }));
        };
        let id = &header[0..4];
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let body_start = off + 8;
        let body_end = body_start.saturating_add(size);
        if id == b"fmt " {
            if fmt.is_some() {
                return Err(corrupt("two fmt chunks"));
            }
            // The first 40 bytes hold every field we read (as the card's
            // probe does, a longer fmt chunk need not be complete).
            let body = input
                .get(body_start..body_start.saturating_add(size.min(40)))
                .ok_or_else(|| corrupt("fmt chunk runs past the end of the file"))?;
            fmt = Some(parse_fmt(body)?);
        } else if id == b"data" {
            let Some(f) = fmt else {
                return Err(corrupt("data chunk before the fmt chunk"));
            };
            // Truncate to what is there (see the module doc).
            let end = body_end.min(input.len());
            let data = &input[body_start..end];
            let block = f.channels as usize * f.format.bytes();
            let frames = (data.len() / block) as u64;
            if frames > MAX_AUDIO_SECONDS * f.rate as u64 {
                return Err(Error::InputTooLarge(format!(
                    "{:.1} s of audio (limit {MAX_AUDIO_SECONDS} s)",
                    frames as f64 / f.rate as f64
                )));
            }
            let data = &data[..frames as usize * block];
            return Ok(Parsed {
                info: WavInfo {
                    sample_rate: f.rate,
                    channels: f.channels,
                    bits: f.bits,
                    float: matches!(f.format, SampleFormat::F32 | SampleFormat::F64),
                    frames,
                },
                format: f.format,
                data,
            });
        }
        // Skip the chunk and its pad byte.
        off = body_end.saturating_add(size & 1);
    }
    Err(corrupt("too many chunks before the data chunk"))
}

/// Reads the header only: format, rate, channels and the number of frames
/// present. Every limit is checked here, before the caller allocates.
pub fn probe_wav(input: &[u8]) -> Result<WavInfo, Error> {
    parse(input).map(|p| p.info)
}

fn sample(format: SampleFormat, b: &[u8]) -> f64 {
    match format {
        SampleFormat::U8 => (b[0] as f64 - 128.0) / 128.0,
        SampleFormat::I16 => i16::from_le_bytes([b[0], b[1]]) as f64 / 32_768.0,
        SampleFormat::I24 => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f64 / 8_388_608.0,
        SampleFormat::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64 / 2_147_483_648.0,
        SampleFormat::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        SampleFormat::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
    }
}

/// Largest magnitude a decoded sample keeps (60 dB over full scale): float
/// files may exceed 1.0, but not by enough to overflow the f32 power spectrum.
pub const MAX_SAMPLE: f64 = 1000.0;

/// Sanitises a decoded float sample: NaN becomes 0, anything past
/// +-[`MAX_SAMPLE`] (infinities included) is clamped, so hostile float files
/// cannot make the features non-finite.
fn finite(x: f64) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(-MAX_SAMPLE, MAX_SAMPLE) as f32
    }
}

/// Decodes the whole file to mono f32 at the source rate: integers scaled to
/// [-1, 1) as libsndfile does (x / 2^(bits-1), 8-bit offset by 128),
/// channels averaged (summed in f64, divided by the channel count, rounded
/// once to f32). Mono integer samples are converted straight to f32: scaling
/// by a power of two commutes with rounding, so the values are the same.
pub fn decode_mono(input: &[u8]) -> Result<(WavInfo, Vec<f32>), Error> {
    let p = parse(input)?;
    let mut out = vec![0f32; p.info.frames as usize];
    p.decode_into(0, &mut out);
    Ok((p.info, out))
}

impl Parsed<'_> {
    /// Decodes frames `start .. start + out.len()` (all present: the caller
    /// keeps within `info.frames`) into mono samples, as [`decode_mono`]
    /// does for the whole file. The resampler pulls its input through this
    /// in blocks, so a resampled file is never held as f32 in full.
    pub(crate) fn decode_into(&self, start: usize, out: &mut [f32]) {
        let bytes = self.format.bytes();
        let ch = self.info.channels as usize;
        let block = ch * bytes;
        let d = &self.data[start * block..(start + out.len()) * block];
        if ch == 1 {
            let put = |out: &mut [f32], it: &mut dyn Iterator<Item = f32>| {
                for (o, v) in out.iter_mut().zip(it) {
                    *o = v;
                }
            };
            match self.format {
                SampleFormat::U8 => {
                    for (o, &b) in out.iter_mut().zip(d) {
                        *o = (b as f32 - 128.0) * (1.0 / 128.0);
                    }
                }
                SampleFormat::I16 => {
                    for (o, c) in out.iter_mut().zip(d.chunks_exact(2)) {
                        *o = i16::from_le_bytes([c[0], c[1]]) as f32 * (1.0 / 32_768.0);
                    }
                }
                SampleFormat::I24 => put(
                    out,
                    &mut d.chunks_exact(3).map(|c| {
                        (i32::from_le_bytes([0, c[0], c[1], c[2]]) >> 8) as f32
                            * (1.0 / 8_388_608.0)
                    }),
                ),
                SampleFormat::I32 => put(
                    out,
                    &mut d.chunks_exact(4).map(|c| {
                        i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32
                            * (1.0 / 2_147_483_648.0)
                    }),
                ),
                SampleFormat::F32 | SampleFormat::F64 => {
                    let f = self.format;
                    put(
                        out,
                        &mut d.chunks_exact(bytes).map(|s| finite(sample(f, s))),
                    )
                }
            }
        } else if ch == 2 && self.format == SampleFormat::I16 {
            // The common stereo case, in f32: a + b has at most 17 bits and
            // the scale is a power of two, so this is exactly the f64 sum
            // below rounded once (the same bits), and it vectorises.
            for (o, c) in out.iter_mut().zip(d.chunks_exact(4)) {
                let a = i16::from_le_bytes([c[0], c[1]]) as i32;
                let b = i16::from_le_bytes([c[2], c[3]]) as i32;
                *o = (a + b) as f32 * (1.0 / 65_536.0);
            }
        } else {
            let inv = 1.0 / ch as f64;
            let ints = |out: &mut [f32], scale: f64, conv: fn(&[u8]) -> i64| {
                for (o, frame) in out.iter_mut().zip(d.chunks_exact(block)) {
                    let sum: i64 = frame.chunks_exact(bytes).map(conv).sum();
                    *o = finite(sum as f64 * scale * inv);
                }
            };
            match self.format {
                SampleFormat::U8 => ints(out, 1.0 / 128.0, |b| i64::from(b[0]) - 128),
                SampleFormat::I16 => ints(out, 1.0 / 32_768.0, |b| {
                    i64::from(i16::from_le_bytes([b[0], b[1]]))
                }),
                SampleFormat::I24 => ints(out, 1.0 / 8_388_608.0, |b| {
                    i64::from(i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8)
                }),
                SampleFormat::I32 => ints(out, 1.0 / 2_147_483_648.0, |b| {
                    i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                }),
                SampleFormat::F32 | SampleFormat::F64 => {
                    let f = self.format;
                    for (o, frame) in out.iter_mut().zip(d.chunks_exact(block)) {
                        let sum: f64 = frame.chunks_exact(bytes).map(|s| sample(f, s)).sum();
                        *o = finite(sum * inv);
                    }
                }
            }
        }
    }
}

impl crate::audio::resample::Samples for Parsed<'_> {
    fn samples(&self) -> usize {
        self.info.frames as usize
    }
    fn fill(&self, start: usize, out: &mut [f32]) {
        self.decode_into(start, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PCM WAV of `ch` channels, `bits` per sample, the given raw data.
    fn wav(ch: u16, bits: u16, data: &[u8]) -> Vec<u8> {
        let block = ch * bits / 8;
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&ch.to_le_bytes());
        v.extend_from_slice(&48_000u32.to_le_bytes());
        v.extend_from_slice(&(48_000 * u32::from(block)).to_le_bytes());
        v.extend_from_slice(&block.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    /// The integer downmix equals the f64 sum of scaled samples it replaces,
    /// bit for bit, extremes included.
    #[test]
    fn integer_downmix_is_the_f64_sum() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut bytes = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Runs of 0x00 and 0xff give the extreme samples.
                    match i % 97 {
                        0..=7 => 0xff,
                        8..=15 => 0x00,
                        16..=23 => {
                            if i % 2 == 0 {
                                0x80
                            } else {
                                0x7f
                            }
                        }
                        _ => x as u8,
                    }
                })
                .collect()
        };
        for (bits, format) in [
            (8u16, SampleFormat::U8),
            (16, SampleFormat::I16),
            (24, SampleFormat::I24),
            (32, SampleFormat::I32),
        ] {
            for ch in [2u16, 3, 6] {
                let unit = usize::from(bits / 8);
                let data = bytes(unit * usize::from(ch) * 1000);
                let (info, got) = decode_mono(&wav(ch, bits, &data)).unwrap();
                assert_eq!(info.frames, 1000);
                for (frame, g) in data.chunks_exact(unit * usize::from(ch)).zip(&got) {
                    let sum: f64 = frame.chunks_exact(unit).map(|s| sample(format, s)).sum();
                    let want = finite(sum * (1.0 / f64::from(ch)));
                    assert_eq!(g.to_bits(), want.to_bits(), "{bits} bit, {ch} ch");
                }
            }
        }
    }
}
