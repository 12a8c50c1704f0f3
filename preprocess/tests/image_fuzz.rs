//! Hostile input: mutated, truncated and random bytes never panic, never
//! hang, and either decode to a tensor of the declared length or fail with
//! one of the crate's errors; the card path agrees with the CPU path on
//! whatever the card takes.

use preba_preprocess::Error;
use preba_preprocess::image::{card_preprocess_image, card_supports, preprocess_image};
use preba_protocol::profile::ImageProfile;
use proptest::prelude::*;
use std::path::Path;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/images")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const SEEDS: &[&str] = &[
    "size_225x225.jpg",
    "restart_rows_422.jpg",
    "progressive_gray.jpg",
    "sampling_440.jpg",
    "size_17x17.jpg",
    "cmyk_coffee.jpg",
];

fn check(data: &[u8]) {
    let profile = ImageProfile {
        resize: 64,
        crop: 56,
        ..ImageProfile::default()
    };
    let cpu = preprocess_image(data, &profile);
    match &cpu {
        Ok(out) => assert_eq!(out.data.len(), profile.output_len()),
        Err(Error::InvalidProfile(e)) => panic!("profile refused: {e}"),
        Err(_) => {}
    }
    if card_supports(data).is_ok() {
        let card = card_preprocess_image(data, &profile);
        match (&cpu, &card) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "card and CPU path differ"),
            (Err(_), Err(_)) => {}
            _ => panic!("card {card:?} vs cpu {:?}", cpu.as_ref().map(|o| o.width)),
        }
    } else {
        assert!(card_preprocess_image(data, &profile).is_err());
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Set { at: usize, v: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, v)| Mutation::Set { at, v }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    Just(0xFFu8),
                    Just(0x00),
                    Just(0xD9),
                    Just(0xDA),
                    Just(0xC0),
                    Just(0xDD),
                    any::<u8>()
                ],
                1..8,
            )
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(mut d: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if d.is_empty() {
            break;
        }
        let n = d.len();
        match m {
            Mutation::Flip { at, xor } => d[at % n] ^= xor,
            // Bias towards the headers, where the interesting bytes are.
            Mutation::Set { at, v } => d[at % n.min(700)] = *v,
            Mutation::Truncate { at } => d.truncate(at % n),
            Mutation::Insert { at, bytes } => {
                let at = at % n;
                d.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove { at, len } => {
                let at = at % n;
                let end = (at + len).min(n);
                d.drain(at..end);
            }
        }
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn mutated_jpegs_never_panic(seed in 0..SEEDS.len(), muts in prop::collection::vec(mutation(), 1..6)) {
        let data = apply(fixture(SEEDS[seed]), &muts);
        check(&data);
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&data);
    }

    #[test]
    fn random_bytes_after_soi_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut data = vec![0xFF, 0xD8];
        data.extend(tail);
        check(&data);
    }
}

#[test]
fn every_truncation_of_a_small_file_is_handled() {
    let d = fixture("size_17x17.jpg");
    for n in 0..d.len() {
        check(&d[..n]);
    }
}

#[test]
fn huge_declared_sizes_are_refused_before_decoding() {
    // SOF0 of 60000 x 60000 with nothing behind it: refused from the header.
    let mut d = fixture("size_225x225.jpg");
    let sof = d.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    d[sof + 5..sof + 7].copy_from_slice(&60000u16.to_be_bytes());
    d[sof + 7..sof + 9].copy_from_slice(&60000u16.to_be_bytes());
    let p = ImageProfile::default();
    assert!(matches!(
        preprocess_image(&d, &p),
        Err(Error::InputTooLarge(_))
    ));
    assert!(matches!(card_supports(&d), Err(Error::InputTooLarge(_))));
    // Over the byte limit: refused without looking further.
    let big = vec![0u8; (preba_protocol::limits::MAX_INPUT_BYTES + 1) as usize];
    assert!(matches!(
        preprocess_image(&big, &p),
        Err(Error::InputTooLarge(_))
    ));
}

/// Found by the golden_jpeg fuzz target (2026-12-04, 1.1 M executions): a
/// JPEG the card does not take on which zune-jpeg 0.5.15 panics in its AVX2
/// IDCT (`idct/avx2.rs:246`, an `unwrap` on a short coefficient block). The
/// CPU path runs zune-jpeg under `catch_unwind`, so the input is refused as
/// corrupt, the process lives on, and the card path refuses it too.
#[test]
fn zune_panic_is_a_corrupt_input() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds/golden_jpeg/regress_zune_idct_panic.jpg");
    let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for profile in [
        ImageProfile::default(),
        ImageProfile {
            resize: 64,
            crop: 56,
            ..ImageProfile::default()
        },
    ] {
        match preprocess_image(&data, &profile) {
            // (On a CPU without AVX2 zune-jpeg takes another IDCT and may
            // refuse the input with an error of its own instead.)
            Err(Error::CorruptInput(_)) => {}
            other => panic!("want CorruptInput from the caught panic, got {other:?}"),
        }
    }
    check(&data);
}
