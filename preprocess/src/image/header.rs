//! JPEG header probe: the card's own ([`preba_protocol::media::probe_jpeg`],
//! the one marker walker with libjpeg's tolerance) plus what the CPU path
//! takes. Cheap, allocation-free, bounds-checked on every byte: this is what
//! routing and the size limits look at before any pixel memory exists.

use crate::Error;
use preba_protocol::media;

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
    /// Adobe APP14 transform flag, if the marker is present.
    pub adobe_transform: Option<u8>,
    /// The shared probe's answer (what the firmware sees).
    pub media: media::JpegProbe,
}

impl From<media::MediaError> for Error {
    fn from(e: media::MediaError) -> Self {
        let m = e.reason().to_string();
        match e {
            media::MediaError::Corrupt(_) => Error::CorruptInput(m),
            media::MediaError::Unsupported(_) => Error::UnsupportedFormat(m),
            media::MediaError::TooLarge(_) => Error::InputTooLarge(m),
        }
    }
}

/// Walks the markers of `input` up to the first SOS and checks the limits:
/// exactly the firmware's probe ([`media::probe_jpeg`], one walker with
/// libjpeg's tolerance), so the card and the CPU path route alike.
/// Refuses what no path of ours decodes; does not judge card support.
pub(crate) fn probe(input: &[u8]) -> Result<Probe, Error> {
    let p = media::probe_jpeg(&mut &input[..])?;
    let h = &p.header;
    Ok(Probe {
        header: JpegHeader {
            width: h.width,
            height: h.height,
            components: h.components,
            progressive: matches!(h.sof, 2 | 10),
            precision: h.precision,
            h_samp: h.h_samp,
            v_samp: h.v_samp,
            restart_interval: h.restart_interval,
        },
        sof: 0xC0 + h.sof,
        adobe_transform: p.adobe_transform,
        media: p,
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
        // The firmware's decision, word for word.
        Ok(self.media.card_check()?)
    }
}

fn unsupported(m: &str) -> Error {
    Error::UnsupportedFormat(m.to_string())
}
