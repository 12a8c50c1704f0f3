//! JPEG marker walk up to the first scan: frame header (SOF), restart
//! interval (DRI) and Adobe APP14 colour transform. Cheap, allocation-free,
//! bounds-checked on every byte: this is what routing and the size limits
//! look at before any pixel memory exists.

use crate::Error;
use preba_protocol::limits::{MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_INPUT_BYTES};

/// What the frame header says, as the card's decoder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    /// Number of colour components (1 grayscale, 3 YCbCr/RGB, 4 CMYK/YCCK).
    pub components: u8,
    /// Progressive DCT (SOF2, or arithmetic SOF10).
    pub progressive: bool,
    /// Sample precision in bits (8 or 12).
    pub precision: u8,
    /// Horizontal sampling factor of the first (luma) component.
    pub h_samp: u8,
    /// Vertical sampling factor of the first (luma) component.
    pub v_samp: u8,
    /// Restart interval in MCUs from DRI (0: no restart markers).
    pub restart_interval: u16,
}

/// The header plus what routing needs beyond the public fields.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    pub header: JpegHeader,
    /// SOF marker code (0xC0..=0xCF without C4, C8, CC).
    pub sof: u8,
    /// Sampling factors (h, v) of each component (first `components` valid).
    pub sampling: [(u8, u8); 4],
    /// Component identifiers.
    pub ids: [u8; 4],
    /// Adobe APP14 transform flag, if the marker is present.
    pub adobe_transform: Option<u8>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn corrupt(m: &str) -> Error {
    Error::CorruptInput(m.to_string())
}

/// Walks the markers of `input` up to the first SOS and checks the limits.
/// Refuses what no path of ours decodes; does not judge card support.
pub(crate) fn probe(input: &[u8]) -> Result<Probe, Error> {
    if input.is_empty() {
        return Err(corrupt("empty input"));
    }
    if input.len() as u64 > MAX_INPUT_BYTES {
        return Err(Error::InputTooLarge(format!(
            "{} bytes > limit {MAX_INPUT_BYTES}",
            input.len()
        )));
    }
    if input.len() < 2 || input[0] != 0xFF || input[1] != 0xD8 {
        return Err(corrupt("not a JPEG (no SOI marker)"));
    }
    let mut pos = 2usize;
    let mut frame: Option<Probe> = None;
    let mut restart_interval = 0u16;
    let mut adobe_transform = None;
    loop {
        // Find the next marker: 0xFF, any number of 0xFF fill bytes, a code.
        // Like libjpeg, skip extraneous bytes before a marker.
        while matches!(input.get(pos), Some(&b) if b != 0xFF) {
            pos += 1;
        }
        while input.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&code) = input.get(pos) else {
            return Err(corrupt("truncated before the first scan"));
        };
        pos += 1;
        match code {
            0x01 | 0xD0..=0xD7 => continue, // standalone markers
            // FF 00 outside a scan is garbage that libjpeg skips too.
            0x00 => continue,
            0x02..=0xBF => return Err(corrupt(&format!("reserved marker 0xFF{code:02X}"))),
            0xD8 => return Err(corrupt("second SOI marker")),
            0xD9 => return Err(corrupt("EOI before the first scan")),
            _ => {}
        }
        let len = be16(input, pos).ok_or_else(|| corrupt("truncated marker length"))? as usize;
        if len < 2 {
            return Err(corrupt("marker segment length < 2"));
        }
        let body_start = pos + 2;
        let end = pos + len;
        if end > input.len() {
            return Err(corrupt("marker segment runs past the end of the input"));
        }
        let body = &input[body_start..end];
        match code {
            0xDA => {
                let Some(mut p) = frame else {
                    return Err(corrupt("scan before the frame header"));
                };
                p.header.restart_interval = restart_interval;
                p.adobe_transform = adobe_transform;
                return Ok(p);
            }
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                if frame.is_some() {
                    return Err(corrupt("more than one frame header"));
                }
                frame = Some(parse_sof(code, body)?);
            }
            0xDD => {
                restart_interval = be16(body, 0).ok_or_else(|| corrupt("short DRI segment"))?;
            }
            0xEE if body.len() >= 12 && body.starts_with(b"Adobe") => {
                adobe_transform = Some(body[11]);
            }
            _ => {}
        }
        pos = end;
    }
}

fn parse_sof(code: u8, body: &[u8]) -> Result<Probe, Error> {
    if body.len() < 6 {
        return Err(corrupt("short frame header"));
    }
    let precision = body[0];
    let height = u32::from(be16(body, 1).unwrap_or(0));
    let width = u32::from(be16(body, 3).unwrap_or(0));
    let n = body[5];
    if n == 0 || n > 4 {
        return Err(corrupt(&format!("{n} components in the frame header")));
    }
    if body.len() != 6 + 3 * n as usize {
        return Err(corrupt("frame header length does not match its components"));
    }
    let mut sampling = [(0u8, 0u8); 4];
    let mut ids = [0u8; 4];
    for i in 0..n as usize {
        let c = &body[6 + 3 * i..9 + 3 * i];
        let (h, v) = (c[1] >> 4, c[1] & 15);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Err(corrupt("sampling factor outside 1..=4"));
        }
        if c[2] > 3 {
            return Err(corrupt("quantisation table index > 3"));
        }
        sampling[i] = (h, v);
        ids[i] = c[0];
    }
    if width == 0 {
        return Err(corrupt("zero image width"));
    }
    if height == 0 {
        return Err(Error::UnsupportedFormat(
            "height defined by a DNL marker".to_string(),
        ));
    }
    if width > MAX_IMAGE_SIDE
        || height > MAX_IMAGE_SIDE
        || u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS
    {
        return Err(Error::InputTooLarge(format!(
            "{width}x{height} past the limits (side {MAX_IMAGE_SIDE}, {MAX_IMAGE_PIXELS} pixels)"
        )));
    }
    Ok(Probe {
        header: JpegHeader {
            width,
            height,
            components: n,
            progressive: matches!(code, 0xC2 | 0xC6 | 0xCA | 0xCE),
            precision,
            h_samp: sampling[0].0,
            v_samp: sampling[0].1,
            restart_interval: 0,
        },
        sof: code,
        sampling,
        ids,
        adobe_transform: None,
    })
}

impl Probe {
    /// Whether our CPU decoder takes it (zune-jpeg: Huffman, 8 bit,
    /// sequential or progressive, 1, 3 or 4 components).
    pub(crate) fn cpu_check(&self) -> Result<(), Error> {
        let h = &self.header;
        match self.sof {
            0xC0..=0xC2 => {}
            0xC3 => return Err(unsupported("lossless JPEG")),
            0xC5..=0xC7 => return Err(unsupported("hierarchical JPEG")),
            _ => return Err(unsupported("arithmetic-coded JPEG")),
        }
        if h.precision != 8 {
            return Err(unsupported(&format!("{}-bit samples", h.precision)));
        }
        if h.components == 2 {
            return Err(unsupported("2-component JPEG"));
        }
        Ok(())
    }

    /// Whether the card's decoder takes it: baseline sequential Huffman,
    /// 8 bit, 1 or 3 components (YCbCr), luma sampling 1x1, 2x1, 2x2 or 1x2
    /// with 1x1 chroma; restart markers allowed.
    pub(crate) fn card_check(&self) -> Result<(), Error> {
        self.cpu_check()?;
        let h = &self.header;
        match self.sof {
            0xC0 => {}
            0xC1 => {
                return Err(unsupported(
                    "extended sequential JPEG (card takes baseline only)",
                ));
            }
            _ => return Err(unsupported("progressive JPEG (card takes baseline only)")),
        }
        match h.components {
            1 => {}
            3 => {
                if self.adobe_transform == Some(0) || self.ids[..3] == *b"RGB" {
                    return Err(unsupported("RGB-coded JPEG (card takes YCbCr)"));
                }
                let chroma_ok = self.sampling[1] == (1, 1) && self.sampling[2] == (1, 1);
                let luma_ok = matches!(self.sampling[0], (1, 1) | (2, 1) | (2, 2) | (1, 2));
                if !chroma_ok || !luma_ok {
                    return Err(unsupported(&format!(
                        "sampling {:?} (card takes 4:4:4, 4:2:2, 4:2:0, 4:4:0)",
                        &self.sampling[..3]
                    )));
                }
            }
            n => return Err(unsupported(&format!("{n}-component JPEG (CMYK/YCCK)"))),
        }
        Ok(())
    }
}

fn unsupported(m: &str) -> Error {
    Error::UnsupportedFormat(m.to_string())
}
