//! Our baseline decoder against Pillow's decoded pixels (libjpeg-turbo):
//! fixtures/golden/images/index.json records the SHA-256 of the bytes
//! Pillow decodes each fixture to; for every file the card takes we must
//! decode exactly those bytes, through our own decoder (not the general one),
//! and the whole transform must then equal the Pillow goldens byte for byte.

use preba_preprocess::image::{DecoderUsed, card_supports, decode_only};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn decoded_pixels_equal_pillow_for_every_card_input() {
    let p = root().join("fixtures/golden/images/index.json");
    let index: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (name, entry) in index["files"].as_object().unwrap() {
        let data = std::fs::read(root().join("fixtures/images").join(name)).unwrap();
        if entry["outcome"] != "ok" {
            continue;
        }
        card_supports(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = entry["decoded_sha256"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no decoded_sha256 in the index"));
        let (px, ch, used) = decode_only(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            used,
            DecoderUsed::Baseline,
            "{name}: card input not decoded by ours"
        );
        let mode = entry["mode"].as_str().unwrap();
        assert_eq!(
            ch,
            if mode == "L" { 1 } else { 3 },
            "{name}: channels vs mode {mode}"
        );
        let got = format!("{:x}", Sha256::digest(&px));
        if got != want {
            mismatches.push(name.clone());
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} card-supported fixtures");
    assert!(
        mismatches.is_empty(),
        "decoded pixels differ from Pillow: {mismatches:?}"
    );
}

/// The fused pipeline (only the blocks the resize window reads are
/// reconstructed, rows fed to the resampler as they are converted) gives
/// exactly what decoding the whole image and resizing it gives, for every
/// card input and geometries that put the window anywhere: upscales, tiny
/// crops, crops the size of the resize, non-square resizes.
#[test]
fn fused_pipeline_equals_full_decode_then_resize() {
    use preba_preprocess::image::{preprocess_image, transform_pixels};
    use preba_protocol::profile::ImageProfile;
    let p = root().join("fixtures/golden/images/index.json");
    let index: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let geometries = [
        (256, 224),
        (64, 56),
        (17, 1),
        (300, 300),
        (9, 9),
        (1000, 37),
    ];
    let mut checked = 0;
    for (name, entry) in index["files"].as_object().unwrap() {
        if entry["outcome"] != "ok" {
            continue;
        }
        let data = std::fs::read(root().join("fixtures/images").join(name)).unwrap();
        let (px, ch, _) = decode_only(&data).unwrap();
        let w = entry["width"].as_u64().unwrap() as u32;
        let h = entry["height"].as_u64().unwrap() as u32;
        // Large photos only with the default geometry (upscaling a 2560 px
        // photo to a 1000 px short side is slow in a debug build).
        let geos = if w * h > 1_000_000 {
            &geometries[..1]
        } else {
            &geometries[..]
        };
        for &(resize, crop) in geos {
            let profile = ImageProfile {
                resize,
                crop,
                ..ImageProfile::default()
            };
            let fused = preprocess_image(&data, &profile).unwrap().data;
            let full = transform_pixels(&px, w, h, ch as u8, &profile).unwrap();
            assert!(
                fused == full,
                "{name} resize {resize} crop {crop}: fused != full decode + resize"
            );
            checked += 1;
        }
    }
    assert!(checked >= 100, "{checked}");
}

/// Minimal .npy reader for the u8 goldens: the data after the header.
fn npy_data(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}", path.display());
    let (hlen, hstart) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        _ => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
    };
    b[hstart + hlen..].to_vec()
}

/// What the card takes comes out exactly as torchvision's transform on
/// Pillow (libjpeg-turbo decode, Pillow resize), not just within the PSNR
/// bound: byte for byte, in Pillow's order of the two resize passes (Pillow
/// 13 runs the vertical pass first for some geometries, which we reproduce
/// here to tell the two apart).
#[test]
fn card_inputs_match_pillow_byte_for_byte() {
    use preba_preprocess::image::{PassOrder, preprocess_image, transform_pixels_with_order};
    use preba_protocol::profile::ImageProfile;
    let p = root().join("fixtures/golden/images/index.json");
    let index: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let profile = ImageProfile::default();
    let (mut exact, mut vertical_first) = (0, 0);
    for (name, entry) in index["files"].as_object().unwrap() {
        if entry["outcome"] != "ok" {
            continue;
        }
        let data = std::fs::read(root().join("fixtures/images").join(name)).unwrap();
        let golden = root()
            .join("fixtures/golden/images")
            .join(entry["golden"].as_str().unwrap());
        let want = npy_data(&golden);
        let got = preprocess_image(&data, &profile).unwrap().data;
        if got == want {
            exact += 1;
            continue;
        }
        let (px, ch, _) = decode_only(&data).unwrap();
        let (w, h) = (
            entry["width"].as_u64().unwrap() as u32,
            entry["height"].as_u64().unwrap() as u32,
        );
        let v =
            transform_pixels_with_order(&px, w, h, ch as u8, &profile, PassOrder::VerticalFirst)
                .unwrap();
        assert!(
            v == want,
            "{name}: differs from Pillow in either pass order"
        );
        vertical_first += 1;
    }
    assert!(
        exact >= 25,
        "only {exact} exact ({vertical_first} vertical-first)"
    );
}
