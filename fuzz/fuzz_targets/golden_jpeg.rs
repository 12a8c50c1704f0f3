//! The golden model's image path on hostile JPEGs: probe, decode, resize,
//! crop, normalise and convert with the card's limits, through the CPU path
//! and the card's engine entry point. Beyond "no panic, no hang": a tensor
//! has exactly the profile's length, the card path gives the same tensor as
//! the CPU path on whatever the card takes (and refuses what it does not
//! take), and the shared probe and the decoder route every input alike.
//!
//! Fuzz-only cap (as OSS-Fuzz's libjpeg-turbo harness caps the image size):
//! a frame over [`MAX_FUZZ_PIXELS`] that the CPU path's probe takes is
//! probed (both probes, their agreement, the card path's refusal of what it
//! does not take) but not decoded: decoding time grows with the pixels, and
//! a large frame reaches no code a small one does not. Frames the probes
//! refuse (over the model's limits, broken headers) still go to both paths,
//! which must refuse them before decoding. Small seeds of every kind the
//! decoders take are in fuzz/seeds/golden_jpeg (fuzz/seeds/gen_media_seeds.py).
#![no_main]

use libfuzzer_sys::fuzz_target;
use preba_preprocess::Error;
use preba_preprocess::image::{card_preprocess_image, card_supports, preprocess_image, probe};
use preba_protocol::media::probe_jpeg;
use preba_protocol::profile::{Dtype, ImageProfile, Layout};

/// Profiles the card is set up with in practice (the torchvision eval
/// transform) and small ones that reach the resampler's edge cases. Picked
/// by input length so a seed's bytes stay a valid JPEG.
fn profile(len: usize) -> ImageProfile {
    let base = ImageProfile::default();
    match len % 4 {
        0 => base,
        1 => ImageProfile {
            resize: 64,
            crop: 56,
            ..base
        },
        2 => ImageProfile {
            resize: 32,
            crop: 32,
            normalize: true,
            dtype: Dtype::F32,
            layout: Layout::Nhwc,
            ..base
        },
        _ => ImageProfile {
            resize: 7,
            crop: 3,
            dtype: Dtype::Bf16,
            ..base
        },
    }
}

/// Largest frame decoded (128 x 128: downscaling for every small profile,
/// partial MCUs, restart intervals, several scans all fit).
const MAX_FUZZ_PIXELS: u64 = 128 * 128;

/// libFuzzer's panic hook aborts on every panic, even one the code under
/// test catches. The CPU path runs zune-jpeg (for what the card does not
/// take) under `catch_unwind` and answers CORRUPT_INPUT when it panics
/// (zune-jpeg 0.5.15 does, e.g. in its AVX2 IDCT: fuzz/seeds/golden_jpeg/
/// regress_zune_idct_panic.jpg, test `zune_panic_is_a_corrupt_input`), so a
/// panic raised inside zune-jpeg is let through to that `catch_unwind`; any
/// other panic still aborts (is a crash), and a zune-jpeg panic that nobody
/// caught would unwind into libFuzzer and abort too.
fn let_caught_decoder_panics_through() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_zune = info
                .location()
                .is_some_and(|l| l.file().contains("/zune-jpeg-"));
            if !in_zune {
                fuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_caught_decoder_panics_through();
    let profile = profile(data.len());
    // A frame the CPU path takes (inside the limits) but too large to decode here.
    let too_big = probe(data)
        .is_ok_and(|h| u64::from(h.width) * u64::from(h.height) > MAX_FUZZ_PIXELS);
    let cpu = (!too_big).then(|| preprocess_image(data, &profile));
    match &cpu {
        Some(Ok(out)) => {
            assert_eq!(out.data.len(), profile.output_len(), "tensor length");
            assert!(out.width > 0 && out.height > 0);
        }
        Some(Err(Error::InvalidProfile(e))) => panic!("profile refused: {e}"),
        Some(Err(_)) | None => {}
    }
    let shared = probe_jpeg(&mut &data[..]).and_then(|p| p.card_check());
    match card_supports(data) {
        Ok(_) => {
            assert!(
                shared.is_ok(),
                "decoder takes what the card's probe refuses: {shared:?}"
            );
            let Some(cpu) = &cpu else { return };
            let card = card_preprocess_image(data, &profile);
            match (cpu, &card) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "card and CPU path differ"),
                (Err(a), Err(b)) => assert_eq!(a.status(), b.status(), "{a} vs {b}"),
                _ => panic!(
                    "card {:?} vs cpu {:?}",
                    card.as_ref().err(),
                    cpu.as_ref().err()
                ),
            }
        }
        Err(e) => {
            if let Err(s) = shared {
                assert_eq!(
                    s.status(),
                    e.status(),
                    "card probe {s:?} vs decoder probe {e}"
                );
            }
            assert!(
                card_preprocess_image(data, &profile).is_err(),
                "card path took a refused input"
            );
        }
    }
});
