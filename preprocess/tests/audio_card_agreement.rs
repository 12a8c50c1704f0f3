//! The card's header probe (`preba_protocol::media::probe_wav`, run by the
//! firmware) and the engine's WAV reader (`preba_preprocess::audio`) agree:
//! whatever the card accepts, the engine decodes to the same header; whatever
//! the engine refuses, the card refuses with the same status. The CPU path
//! may take more than the card (64-bit float), never less.

mod audio_common;

use audio_common::{files, read};
use preba_preprocess::audio::probe_wav;
use preba_protocol::media;
use proptest::prelude::*;

fn compare(name: &str, bytes: &[u8]) -> Option<String> {
    let card = media::probe_wav(&mut &bytes[..]);
    let cpu = probe_wav(bytes);
    match (&card, &cpu) {
        (Ok(c), Ok(p)) => {
            if (c.channels, c.sample_rate, c.frames) != (p.channels, p.sample_rate, p.frames) {
                return Some(format!("{name}: card {c:?} vs cpu {p:?}"));
            }
        }
        (Ok(c), Err(e)) => return Some(format!("{name}: card accepts {c:?}, cpu refuses: {e}")),
        (Err(c), Err(e)) => {
            if c.status() != e.status() {
                return Some(format!("{name}: card {c:?} vs cpu {e:?}"));
            }
        }
        (Err(_), Ok(p)) => {
            // CPU path superset: only 64-bit float.
            if !(p.float && p.bits == 64) {
                return Some(format!("{name}: card refuses {card:?}, cpu accepts {p:?}"));
            }
        }
    }
    None
}

#[test]
fn card_probe_and_engine_agree_on_fixtures() {
    let mut diffs = Vec::new();
    for f in files() {
        let path = f["file"].as_str().unwrap();
        diffs.extend(compare(path, &read(path)));
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

fn wav(channels: u16, rate: u32, bits: u16, tag: u16, data: &[u8]) -> Vec<u8> {
    let ba = channels as u32 * bits as u32 / 8;
    let mut v = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0".to_vec();
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&rate.wrapping_mul(ba).to_le_bytes());
    v.extend_from_slice(&(ba as u16).to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// Found by the golden_wav fuzz target: a 64-bit float file whose data chunk is swallowed by a
/// junk chunk's size. The card used to refuse it at its fmt chunk (UNSUPPORTED_FORMAT) while
/// the CPU path found it CORRUPT_INPUT; the card's refusal of 64-bit float now waits for the
/// data chunk, so both say CORRUPT_INPUT, and a well-formed 64-bit file is still refused by
/// the card (CPU fallback) and read by the CPU path.
#[test]
fn broken_f64_is_corrupt_on_both_paths() {
    let mut v = wav(1, 16_000, 64, 3, &[0u8; 64]);
    let good = v.clone();
    let at = v.len() - 64 - 8;
    let mut junk = b"\xfe\xff\xff\xff".to_vec();
    junk.extend_from_slice(&v[at..at + 4]); // "data" read as a size
    v.splice(at..at, junk);
    assert_eq!(compare("broken f64", &v), None);
    assert_eq!(
        media::probe_wav(&mut &v[..]).unwrap_err().status(),
        probe_wav(&v).unwrap_err().status()
    );
    assert!(matches!(
        media::probe_wav(&mut &good[..]),
        Err(media::MediaError::Unsupported(_))
    ));
    assert!(probe_wav(&good).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn card_probe_and_engine_agree_on_mutations(
        edits in proptest::collection::vec((0usize..48, any::<u8>()), 0..6),
        cut in 0usize..64,
        channels in 0u16..40,
        rate in prop_oneof![Just(16000u32), Just(0), 500u32..2000, 300_000u32..400_000],
        fmt in prop_oneof![Just((16u16, 1u16)), Just((8, 1)), Just((24, 1)), Just((32, 1)),
                           Just((32, 3)), Just((12, 1)), Just((16, 0xFFFE)), Just((16, 6))],
    ) {
        let mut b = wav(channels, rate, fmt.0, fmt.1, &[7u8; 96]);
        for (at, v) in edits {
            if at < b.len() { b[at] = v; }
        }
        b.truncate(b.len().saturating_sub(cut));
        let d = compare("mutation", &b);
        prop_assert!(d.is_none(), "{:?} {:02x?}", d, &b[..b.len().min(48)]);
    }
}
