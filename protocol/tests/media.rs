//! Media probes on synthetic headers and hostile bytes.

use preba_protocol::media::{self, Kind, MediaError, WavEncoding};
use proptest::prelude::*;

/// A minimal JPEG header: SOI, optional DRI and APP14, SOF, SOS.
fn jpeg(
    sof: u8,
    precision: u8,
    w: u16,
    h: u16,
    comps: &[(u8, u8)],
    dri: Option<u16>,
    adobe: Option<u8>,
) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    // An APP0 segment to skip.
    v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x07, b'J', b'F', b'I', b'F', 0]);
    if let Some(t) = adobe {
        v.extend_from_slice(&[0xFF, 0xEE, 0x00, 0x0E]);
        v.extend_from_slice(b"Adobe");
        v.extend_from_slice(&[0, 100, 0, 0, 0, 0, t]);
    }
    if let Some(r) = dri {
        v.extend_from_slice(&[0xFF, 0xDD, 0x00, 0x04]);
        v.extend_from_slice(&r.to_be_bytes());
    }
    let n = comps.len() as u8;
    v.extend_from_slice(&[0xFF, 0xC0 + sof]);
    v.extend_from_slice(&(8 + 3 * n as u16).to_be_bytes());
    v.push(precision);
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&w.to_be_bytes());
    v.push(n);
    for (i, (hs, vs)) in comps.iter().enumerate() {
        v.extend_from_slice(&[i as u8 + 1, (hs << 4) | vs, (i > 0) as u8]);
    }
    v.extend_from_slice(&[0xFF, 0xDA]);
    v.extend_from_slice(&(6 + 2 * n as u16).to_be_bytes());
    v.push(n);
    for i in 0..n {
        v.extend_from_slice(&[i + 1, 0]);
    }
    v.extend_from_slice(&[0, 63, 0]);
    v.extend_from_slice(&[0x12, 0x34, 0xFF, 0xD9]);
    v
}

fn probe(b: &[u8]) -> Result<media::JpegProbe, MediaError> {
    media::probe_jpeg(&mut &b[..])
}

#[test]
fn jpeg_card_support_matrix() {
    let yuv = |h, v| vec![(h, v), (1, 1), (1, 1)];
    for (hs, vs) in [(1, 1), (2, 1), (2, 2), (1, 2)] {
        let p = probe(&jpeg(0, 8, 500, 375, &yuv(hs, vs), None, None)).unwrap();
        assert_eq!((p.header.width, p.header.height), (500, 375));
        assert_eq!(p.card_check(), Ok(()), "{hs}x{vs}");
    }
    assert!(
        probe(&jpeg(0, 8, 9, 9, &[(1, 1)], None, None))
            .unwrap()
            .card_check()
            .is_ok()
    );
    let dri = probe(&jpeg(0, 8, 64, 64, &yuv(2, 2), Some(4), None)).unwrap();
    assert_eq!(dri.header.restart_interval, 4);
    assert!(dri.card_check().is_ok());
    let unsupported = [
        (
            jpeg(2, 8, 64, 64, &yuv(2, 2), None, None),
            "progressive JPEG",
        ),
        (
            jpeg(1, 8, 64, 64, &yuv(2, 2), None, None),
            "extended sequential JPEG",
        ),
        (
            jpeg(1, 12, 64, 64, &yuv(2, 2), None, None),
            "extended sequential JPEG",
        ),
        (
            jpeg(9, 8, 64, 64, &yuv(2, 2), None, None),
            "arithmetic-coded JPEG",
        ),
        (
            jpeg(0, 8, 64, 64, &[(1, 1); 4], None, Some(2)),
            "CMYK/YCCK JPEG",
        ),
        (
            jpeg(0, 8, 64, 64, &yuv(4, 1), None, None),
            "chroma sampling",
        ),
        (
            jpeg(0, 8, 64, 64, &[(2, 2), (2, 1), (1, 1)], None, None),
            "chroma sampling",
        ),
        (
            jpeg(0, 8, 64, 64, &yuv(1, 1), None, Some(0)),
            "RGB (not YCbCr) JPEG",
        ),
    ];
    for (b, why) in unsupported {
        assert_eq!(
            probe(&b).and_then(|p| p.card_check()),
            Err(MediaError::Unsupported(why))
        );
    }
    assert_eq!(
        probe(&jpeg(0, 8, 60000, 60000, &yuv(2, 2), None, None)),
        Err(MediaError::TooLarge("image dimensions"))
    );
    assert_eq!(
        probe(&jpeg(0, 8, 0, 10, &yuv(2, 2), None, None)),
        Err(MediaError::Corrupt("zero image width"))
    );
    assert_eq!(
        probe(b"\xFF\xD8"),
        Err(MediaError::Corrupt("truncated before the first scan"))
    );
    assert_eq!(
        probe(b"GIF89a"),
        Err(MediaError::Corrupt("not a JPEG (no SOI marker)"))
    );
    assert_eq!(
        media::sniff(&jpeg(0, 8, 1, 1, &[(1, 1)], None, None)),
        Some(Kind::Jpeg)
    );
}

fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8], extra_chunk: bool) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(b"WAVE");
    if extra_chunk {
        v.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00");
    }
    v.extend_from_slice(b"fmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    let block = channels * bits / 8;
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * block as u32).to_le_bytes());
    v.extend_from_slice(&block.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn wav_headers() {
    let h = media::probe_wav(&mut &wav(1, 2, 44_100, 16, &[0; 400], true)[..]).unwrap();
    assert_eq!(
        (h.channels, h.sample_rate, h.frames, h.encoding),
        (2, 44_100, 100, WavEncoding::Pcm(16))
    );
    let f = media::probe_wav(&mut &wav(3, 1, 16_000, 32, &[0; 64], false)[..]).unwrap();
    assert_eq!((f.encoding, f.frames), (WavEncoding::Float32, 16));
    // A data chunk that claims more than the file holds is clipped to whole frames.
    let mut clipped = wav(1, 1, 16_000, 16, &[0; 11], false);
    let at = clipped.len() - 11 - 4;
    clipped[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(media::probe_wav(&mut &clipped[..]).unwrap().frames, 5);
    let bad = [
        (
            wav(1, 0, 16_000, 16, &[], false),
            MediaError::Corrupt("zero channels"),
        ),
        (
            wav(2, 1, 16_000, 4, &[], false),
            MediaError::Unsupported("WAV encoding (not PCM or float)"),
        ),
        (
            wav(3, 1, 16_000, 64, &[], false),
            MediaError::Unsupported("sample width"),
        ),
        (
            wav(1, 1, 4_000_000, 16, &[], false),
            MediaError::TooLarge("sample rate"),
        ),
        (
            wav(1, 1, 0, 16, &[], false),
            MediaError::Corrupt("zero sample rate"),
        ),
        (
            wav(1, 1, 500, 16, &[], false),
            MediaError::Unsupported("sample rate"),
        ),
        (
            wav(1, 99, 16_000, 16, &[], false),
            MediaError::TooLarge("channel count"),
        ),
    ];
    for (b, e) in bad {
        assert_eq!(media::probe_wav(&mut &b[..]), Err(e));
    }
    assert!(media::probe_wav(&mut &b"RIFF\0\0\0\0WAVE"[..]).is_err());
    let mut rifx = wav(1, 1, 16_000, 16, &[0; 4], false);
    rifx[..4].copy_from_slice(b"RIFX");
    assert_eq!(
        media::probe_wav(&mut &rifx[..]),
        Err(MediaError::Unsupported("big-endian RIFX WAV"))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn probes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = media::probe_jpeg(&mut &bytes[..]);
        let _ = media::probe_wav(&mut &bytes[..]);
        let _ = media::sniff(&bytes);
    }

    #[test]
    fn mutated_headers_never_panic(at in 0usize..80, v in any::<u8>(), cut in 0usize..80) {
        let mut j = jpeg(0, 8, 640, 480, &[(2, 2), (1, 1), (1, 1)], Some(8), Some(1));
        let i = at % j.len();
        j[i] = v;
        j.truncate(j.len() - cut % j.len());
        let _ = media::probe_jpeg(&mut &j[..]);
        let mut w = wav(1, 2, 22_050, 24, &[0; 60], true);
        let i = at % w.len();
        w[i] = v;
        w.truncate(w.len() - cut % w.len());
        let _ = media::probe_wav(&mut &w[..]);
    }
}

/// The walker's tolerance (libjpeg's next_marker / read_markers): what it
/// skips, what is corrupt, what is unsupported, what is past its limits.
#[test]
fn jpeg_walker_tolerance() {
    let base = jpeg(0, 8, 64, 48, &[(2, 2), (1, 1), (1, 1)], None, None);
    let sof = base.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let with = |at: usize, ins: &[u8]| {
        let mut v = base[..at].to_vec();
        v.extend_from_slice(ins);
        v.extend_from_slice(&base[at..]);
        v
    };
    // Skipped: junk, FF 00, fill bytes, RST and TEM before the first scan.
    let p = probe(&with(sof, b"junk\xFF\x00\xFF\xFF\xFF\xD3\xFF\x01")).unwrap();
    assert_eq!(p.skipped.junk, 6);
    assert_eq!(p.skipped.fill, 2);
    assert_eq!(p.skipped.standalone, 2);
    assert_eq!(p.card_check(), Ok(()));
    // The scan starts where it did, shifted by what was inserted.
    let plain = probe(&base).unwrap().header.scan_offset;
    assert_eq!(p.header.scan_offset, plain + 12);
    for (ins, why) in [
        (&b"\xFF\xD8"[..], "second SOI marker"),
        (b"\xFF\xD9", "EOI before the first scan"),
        (
            b"\xFF\xF3\x00\x02",
            "unknown JPEG marker (reserved, JPGn, DHP or EXP)",
        ),
        (
            b"\xFF\xDE\x00\x02",
            "unknown JPEG marker (reserved, JPGn, DHP or EXP)",
        ),
        (b"\xFF\xFE\x00\x01", "segment length below 2"),
    ] {
        assert_eq!(probe(&with(sof, ins)), Err(MediaError::Corrupt(why)));
    }
    assert_eq!(
        probe(&with(sof, b"\xFF\xC6\x00\x02")),
        Err(MediaError::Unsupported(
            "hierarchical JPEG (SOF5-7, SOF13-15) or JPG marker"
        ))
    );
    let junk = vec![0u8; media::MAX_JPEG_SKIPPED_BYTES as usize + 1];
    assert_eq!(
        probe(&with(sof, &junk)),
        Err(MediaError::TooLarge("bytes skipped between JPEG markers"))
    );
    let ok_junk = vec![0u8; media::MAX_JPEG_SKIPPED_BYTES as usize];
    assert!(probe(&with(sof, &ok_junk)).is_ok());
    let coms = b"\xFF\xFE\x00\x02".repeat(media::MAX_JPEG_SEGMENTS as usize);
    assert_eq!(
        probe(&with(sof, &coms)),
        Err(MediaError::TooLarge(
            "marker segments before the first scan"
        ))
    );
    // Component ids 'R' 'G' 'B' without an Adobe segment: RGB, not for the card.
    let mut rgb = base.clone();
    for (k, id) in b"RGB".iter().enumerate() {
        rgb[sof + 10 + 3 * k] = *id;
    }
    let sos = rgb.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    for (k, id) in b"RGB".iter().enumerate() {
        rgb[sos + 5 + 2 * k] = *id;
    }
    assert_eq!(
        probe(&rgb).and_then(|p| p.card_check()),
        Err(MediaError::Unsupported("RGB (not YCbCr) JPEG"))
    );
}
