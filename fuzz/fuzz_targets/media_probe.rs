//! The card-support probes the firmware runs on request bytes in card memory
//! and the host runs to route requests (`protocol::media`). Beyond "no
//! panic": the marker walker always ends (each call moves forward), every
//! segment it returns lies inside the input, and an accepted JPEG's
//! dimensions respect the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preba_protocol::limits;
use preba_protocol::media::{JpegWalker, probe_jpeg, probe_wav, sniff};

fuzz_target!(|data: &[u8]| {
    let _ = sniff(data);
    if let Ok(p) = probe_jpeg(&mut &data[..]) {
        let _ = p.card_check();
        let (w, h) = (p.header.width as u64, p.header.height as u64);
        assert!(w > 0 && h > 0, "accepted JPEG without pixels");
        assert!(w <= limits::MAX_IMAGE_SIDE as u64 && h <= limits::MAX_IMAGE_SIDE as u64);
        assert!(w * h <= limits::MAX_IMAGE_PIXELS);
    }
    let mut walker = JpegWalker::new();
    let mut last_end = 0u64;
    // Each segment is at least its 2 marker and 2 length bytes, so a walk
    // longer than the input would be a loop.
    for _ in 0..=data.len() / 4 + 1 {
        match walker.next_segment(&mut &data[..]) {
            Ok(seg) => {
                assert!(seg.end() <= data.len() as u64, "segment past the input");
                assert!(seg.body > last_end, "walker did not move forward");
                last_end = seg.end();
                if seg.marker == 0xDA {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if let Ok(h) = probe_wav(&mut &data[..]) {
        assert!((1..=limits::MAX_AUDIO_CHANNELS).contains(&h.channels));
        assert!(
            (limits::MIN_AUDIO_RATE..=limits::MAX_AUDIO_RATE).contains(&h.sample_rate),
            "accepted WAV rate {} outside the limits",
            h.sample_rate
        );
        assert!(
            h.data_offset + h.data_len <= data.len() as u64,
            "WAV data past the input"
        );
    }
});
