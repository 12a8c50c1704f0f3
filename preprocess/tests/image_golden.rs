//! The image pipeline against the Pillow goldens of fixtures/golden/images
//! (made by fixtures/gen_images.py; no Python needed here).

use preba_preprocess::Error;
use preba_preprocess::image::{
    PassOrder, card_preprocess_image, card_supports, preprocess_image, preprocess_image_into,
    transform_pixels, transform_pixels_with_order,
};
use preba_protocol::profile::{Dtype, ImageProfile, Layout};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn manifest() -> Value {
    let p = root().join("fixtures/golden/images/index.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Minimal .npy reader: little-endian u8 arrays, C order. Returns (shape, data).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}", path.display());
    let (hlen, hstart) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        _ => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&b[hstart..hstart + hlen]).unwrap();
    assert!(header.contains("'descr': '|u1'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = b[hstart + hlen..].to_vec();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let se: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum();
    if se == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / (se / a.len() as f64)).log10()
}

fn files() -> Vec<(String, Value)> {
    let m = manifest();
    m["files"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("fixtures/images").join(name)).unwrap()
}

#[test]
fn psnr_against_pillow_goldens() {
    let profile = ImageProfile::default();
    let mut worst = f64::INFINITY;
    let mut report = Vec::new();
    for (name, e) in files() {
        let Some(golden) = e["golden"].as_str() else {
            continue;
        };
        let (shape, want) = read_npy(&root().join("fixtures/golden/images").join(golden));
        assert_eq!(shape, [3, 224, 224]);
        let out = preprocess_image(&read_fixture(&name), &profile)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(out.width as u64, e["width"].as_u64().unwrap(), "{name}");
        assert_eq!(out.height as u64, e["height"].as_u64().unwrap(), "{name}");
        let p = psnr(&out.data, &want);
        worst = worst.min(p);
        report.push(format!("{name}: {p:.2} dB"));
        assert!(p >= 40.0, "{name}: PSNR {p:.2} dB < 40");
    }
    println!("{}\nworst PSNR {worst:.2} dB", report.join("\n"));
    assert!(report.len() >= 30, "too few goldens: {}", report.len());
}

#[test]
fn routing_follows_the_manifest() {
    let profile = ImageProfile::default();
    for (name, e) in files() {
        let data = read_fixture(&name);
        let outcome = e["outcome"].as_str().unwrap();
        let cpu = preprocess_image(&data, &profile);
        let card = card_preprocess_image(&data, &profile);
        let probe = card_supports(&data);
        match outcome {
            "ok" => {
                let h = probe.unwrap_or_else(|err| panic!("{name}: {err}"));
                assert_eq!(h.width as u64, e["width"].as_u64().unwrap(), "{name}");
                assert_eq!(h.precision, 8);
                assert!(!h.progressive);
                let (cpu, card) = (cpu.unwrap(), card.unwrap());
                assert_eq!(cpu, card, "{name}: card and CPU path differ");
                assert_eq!(cpu.data.len(), profile.output_len());
            }
            "unsupported-on-card" => {
                assert!(
                    matches!(probe, Err(Error::UnsupportedFormat(_))),
                    "{name}: {probe:?}"
                );
                assert!(
                    matches!(card, Err(Error::UnsupportedFormat(_))),
                    "{name}: {card:?}"
                );
                cpu.unwrap_or_else(|err| panic!("{name}: {err}"));
            }
            "unsupported" => {
                assert!(
                    matches!(probe, Err(Error::UnsupportedFormat(_))),
                    "{name}: {probe:?}"
                );
                assert!(
                    matches!(card, Err(Error::UnsupportedFormat(_))),
                    "{name}: {card:?}"
                );
                assert!(
                    matches!(cpu, Err(Error::UnsupportedFormat(_))),
                    "{name}: {cpu:?}"
                );
            }
            "corrupt" => {
                assert!(
                    matches!(cpu, Err(Error::CorruptInput(_))),
                    "{name}: {cpu:?}"
                );
                assert!(
                    matches!(card, Err(Error::CorruptInput(_))),
                    "{name}: {card:?}"
                );
            }
            "too-large" => {
                assert!(
                    matches!(probe, Err(Error::InputTooLarge(_))),
                    "{name}: {probe:?}"
                );
                assert!(
                    matches!(cpu, Err(Error::InputTooLarge(_))),
                    "{name}: {cpu:?}"
                );
                assert!(
                    matches!(card, Err(Error::InputTooLarge(_))),
                    "{name}: {card:?}"
                );
            }
            o => panic!("{name}: unknown outcome {o}"),
        }
    }
}

#[test]
fn header_fields() {
    let h = card_supports(&read_fixture("restart_astronaut.jpg")).unwrap();
    assert_eq!((h.width, h.height, h.components), (512, 512, 3));
    assert_eq!((h.h_samp, h.v_samp), (2, 2));
    assert_eq!(h.restart_interval, 7);
    let h = card_supports(&read_fixture("sampling_422.jpg")).unwrap();
    assert_eq!((h.h_samp, h.v_samp, h.restart_interval), (2, 1, 0));
    let h = card_supports(&read_fixture("sampling_440.jpg")).unwrap();
    assert_eq!((h.h_samp, h.v_samp), (1, 2));
    let h = card_supports(&read_fixture("sampling_444.jpg")).unwrap();
    assert_eq!((h.h_samp, h.v_samp), (1, 1));
    let h = card_supports(&read_fixture("gray_camera.jpg")).unwrap();
    assert_eq!(h.components, 1);
    let h = preba_preprocess::image::probe(&read_fixture("progressive_chelsea.jpg")).unwrap();
    assert!(h.progressive);
}

/// The resize + crop alone is bit-exact with Pillow on decoded pixels.
#[test]
fn resize_is_bit_exact_with_pillow() {
    let m = manifest();
    let dir = root().join("fixtures/golden/images");
    let mut n = 0;
    for (rn, e) in m["raw"].as_object().unwrap() {
        let (shape, px) = read_npy(&dir.join(e["pixels"].as_str().unwrap()));
        let (h, w) = (shape[0] as u32, shape[1] as u32);
        let ch = if shape.len() == 3 { shape[2] as u8 } else { 1 };
        for (rc, golden) in e["outputs"].as_object().unwrap() {
            let (r, c) = rc.split_once('_').unwrap();
            let profile = ImageProfile {
                resize: r.parse().unwrap(),
                crop: c.parse().unwrap(),
                ..ImageProfile::default()
            };
            let (_, want) = read_npy(&dir.join(golden.as_str().unwrap()));
            // Pillow <= 12 runs the horizontal pass first (our default);
            // Pillow 13 picks the vertical pass first for some geometries.
            let h_first = transform_pixels(&px, w, h, ch, &profile).unwrap();
            let v_first =
                transform_pixels_with_order(&px, w, h, ch, &profile, PassOrder::VerticalFirst)
                    .unwrap();
            let diff = |got: &[u8]| got.iter().zip(&want).filter(|(a, b)| a != b).count();
            let (dh, dv) = (diff(&h_first), diff(&v_first));
            assert!(
                dh == 0 || dv == 0,
                "{rn} {rc}: {dh} (horizontal first) / {dv} (vertical first) samples differ from Pillow"
            );
            // Either way the two orders stay within one level of each other.
            assert!(
                h_first
                    .iter()
                    .zip(&v_first)
                    .all(|(a, b)| a.abs_diff(*b) <= 1)
            );
            n += 1;
        }
    }
    assert!(n >= 10);
}

/// Normalisation, dtypes and layouts all derive from the u8 NCHW crop.
#[test]
fn dtype_layout_normalize() {
    let data = read_fixture("imagenet_coffee.jpg");
    let base = ImageProfile::default();
    let u8_nchw = preprocess_image(&data, &base).unwrap().data;
    let n = 224 * 224;
    let u8_nhwc = preprocess_image(
        &data,
        &ImageProfile {
            layout: Layout::Nhwc,
            ..base
        },
    )
    .unwrap()
    .data;
    for i in 0..n {
        for c in 0..3 {
            assert_eq!(u8_nhwc[i * 3 + c], u8_nchw[c * n + i]);
        }
    }
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for normalize in [false, true] {
            for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
                let p = ImageProfile {
                    layout,
                    normalize,
                    dtype,
                    ..base
                };
                let out = card_preprocess_image(&data, &p).unwrap();
                assert_eq!(out.data.len(), p.output_len());
                for i in (0..n).step_by(7) {
                    for c in 0..3 {
                        let v = u8_nchw[c * n + i];
                        let x = if normalize {
                            (f32::from(v) / 255.0 - p.mean[c]) / p.std[c]
                        } else {
                            f32::from(v)
                        };
                        let at = match layout {
                            Layout::Nchw => c * n + i,
                            Layout::Nhwc => i * 3 + c,
                        };
                        let s = dtype.size();
                        let b = &out.data[at * s..at * s + s];
                        match dtype {
                            Dtype::F32 => {
                                assert_eq!(f32::from_le_bytes(b.try_into().unwrap()), x)
                            }
                            Dtype::F16 => assert_eq!(
                                u16::from_le_bytes(b.try_into().unwrap()),
                                half::f16::from_f32(x).to_bits()
                            ),
                            Dtype::Bf16 => assert_eq!(
                                u16::from_le_bytes(b.try_into().unwrap()),
                                half::bf16::from_f32(x).to_bits()
                            ),
                            Dtype::U8 => unreachable!(),
                        }
                    }
                }
            }
        }
    }
    // A spot value against torch's arithmetic: (x / 255 - 0.485) / 0.229 in f32.
    let p = ImageProfile {
        normalize: true,
        dtype: Dtype::F32,
        ..base
    };
    let out = preprocess_image(&data, &p).unwrap().data;
    let v0 = f32::from_le_bytes(out[..4].try_into().unwrap());
    assert_eq!(v0, (f32::from(u8_nchw[0]) / 255.0 - 0.485) / 0.229);
}

#[test]
fn bad_profiles_are_refused() {
    let data = read_fixture("imagenet_coffee.jpg");
    let bad = [
        ImageProfile {
            crop: 300,
            ..ImageProfile::default()
        },
        ImageProfile {
            resize: 0,
            ..ImageProfile::default()
        },
        ImageProfile {
            normalize: true,
            ..ImageProfile::default()
        },
        ImageProfile {
            normalize: true,
            dtype: Dtype::F32,
            std: [0.0, 1.0, 1.0],
            ..ImageProfile::default()
        },
    ];
    for p in bad {
        assert!(
            matches!(preprocess_image(&data, &p), Err(Error::InvalidProfile(_))),
            "{p:?}"
        );
        assert!(
            matches!(
                card_preprocess_image(&data, &p),
                Err(Error::InvalidProfile(_))
            ),
            "{p:?}"
        );
    }
}

#[test]
fn other_geometries_match_pillow_shape() {
    // Non-default resize/crop produce the declared length, on every ok file.
    for (resize, crop) in [(32u16, 32u16), (300, 17), (1, 1)] {
        let p = ImageProfile {
            resize,
            crop,
            ..ImageProfile::default()
        };
        for (name, e) in files() {
            // The small decodable files (zune-jpeg is unoptimised in dev builds).
            if e["golden"].is_null() || e["bytes"].as_u64().unwrap() > 60_000 {
                continue;
            }
            let out = preprocess_image(&read_fixture(&name), &p).unwrap();
            assert_eq!(out.data.len(), p.output_len(), "{name}");
        }
    }
}

/// The tensor written in place (what the CLI does, into a reused buffer
/// holding the previous image's bytes) equals the allocated one, for every
/// dtype and layout, on both decoders (ours and zune-jpeg) and grayscale.
#[test]
fn into_a_reused_buffer_matches() {
    let names = [
        "imagenet_coffee.jpg",
        "gray_camera.jpg",
        "progressive_chelsea.jpg",
        "cmyk_coffee.jpg",
        "size_17x17.jpg",
    ];
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for dtype in [Dtype::U8, Dtype::F16, Dtype::Bf16, Dtype::F32] {
            let p = ImageProfile {
                normalize: dtype != Dtype::U8,
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
                dtype,
                layout,
                ..ImageProfile::default()
            };
            // Stale bytes that must all be overwritten.
            let mut buf = vec![0xA5u8; p.output_len()];
            for name in names {
                let data = read_fixture(name);
                let want = preprocess_image(&data, &p).unwrap();
                let wh = preprocess_image_into(&data, &p, &mut buf).unwrap();
                assert_eq!(wh, (want.width, want.height), "{name}");
                assert!(buf == want.data, "{name} {dtype:?} {layout:?}");
            }
            let mut short = vec![0u8; p.output_len() - 1];
            let e = preprocess_image_into(&read_fixture(names[0]), &p, &mut short).unwrap_err();
            assert!(matches!(e, Error::InvalidProfile(_)), "{e}");
            assert!(e.to_string().contains("bytes"), "{e}");
        }
    }
}
