//! The audio pipeline against the librosa goldens (fixtures/golden/audio,
//! made by fixtures/gen_audio.py) and the expected outcome of every fixture.

mod audio_common;

use audio_common::{diff, files, read, read_npy};
use preba_preprocess::Error;
use preba_preprocess::audio::{AudioProfile, log_mel, preprocess_audio, probe_wav};

/// Contract: mean absolute difference for 16 kHz input.
const MAD_16K: f64 = 0.01;
/// Resampled input: our windowed sinc vs soxr HQ (see fixtures/AUDIO.md;
/// measured worst 2.9e-3, on 8 kHz input, where the empty 4-8 kHz bands are
/// filter residue in both).
const MAD_RESAMPLED: f64 = 0.01;
/// Un-normalised log-Mel, 16 kHz input.
const MAD_LOGMEL_16K: f64 = 0.01;

fn tol(cls: &str) -> f64 {
    match cls {
        "resampled" => MAD_RESAMPLED,
        _ => MAD_16K,
    }
}

#[test]
fn goldens_and_outcomes() {
    let profile = AudioProfile::default();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for f in files() {
        let path = f["file"].as_str().unwrap();
        let name = path.rsplit('/').next().unwrap();
        let bytes = read(path);
        let expect = f["expect"].as_str().unwrap();
        let got = preprocess_audio(&bytes, &profile);
        let probe = probe_wav(&bytes);
        match (expect, &got) {
            ("ok", Ok(out)) => {
                let info = probe.expect("probe agrees with decode");
                assert_eq!(info, out.info, "{name}");
                assert_eq!(
                    info.sample_rate as u64,
                    f["sample_rate"].as_u64().unwrap(),
                    "{name}"
                );
                assert_eq!(
                    info.channels as u64,
                    f["channels"].as_u64().unwrap(),
                    "{name}"
                );
                assert_eq!(info.frames, f["frames"].as_u64().unwrap(), "{name}");
                let samples = f["samples"].as_u64().unwrap();
                let feats = &out.features;
                assert_eq!(feats.n_mels, 80, "{name}");
                assert_eq!(feats.frames as u64, 1 + samples / 160, "{name}: T");
                let (shape, gold) = read_npy(f["golden"].as_str().unwrap());
                assert_eq!(shape, vec![80, feats.frames], "{name}: golden shape");
                assert!(
                    feats.data.iter().all(|v| v.is_finite()),
                    "{name}: non-finite"
                );
                let cls = f["cls"].as_str().unwrap();
                let (mad, max) = diff(&feats.data, &gold);
                let mut line = format!(
                    "{name:28} {cls:9} T={:4} mad={mad:.2e} max={max:.2e}",
                    feats.frames
                );
                if mad > tol(cls) {
                    failures.push(format!("{name}: mad {mad} > {}", tol(cls)));
                }
                if let Some(lm) = f.get("golden_logmel").and_then(|v| v.as_str()) {
                    let (_, gold) = read_npy(lm);
                    let raw = log_mel(&bytes, &profile).unwrap();
                    let (mad, max) = diff(&raw.features.data, &gold);
                    line += &format!("  logmel mad={mad:.2e} max={max:.2e}");
                    let t = if cls == "resampled" {
                        MAD_RESAMPLED
                    } else {
                        MAD_LOGMEL_16K
                    };
                    if mad > t {
                        failures.push(format!("{name}: logmel mad {mad} > {t}"));
                    }
                }
                report.push(line);
            }
            ("corrupt", Err(Error::CorruptInput(m)))
            | ("unsupported", Err(Error::UnsupportedFormat(m)))
            | ("too_large", Err(Error::InputTooLarge(m))) => {
                assert_eq!(
                    probe.as_ref().err(),
                    got.as_ref().err(),
                    "{name}: probe agrees"
                );
                report.push(format!("{name:28} {expect:11} -> {m}"));
            }
            _ => failures.push(format!("{name}: expected {expect}, got {got:?}")),
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The manifest's class summary: worst mean absolute difference per class.
#[test]
fn accuracy_by_class() {
    let profile = AudioProfile::default();
    let mut worst: std::collections::BTreeMap<String, (f64, f64, usize)> = Default::default();
    for f in files().iter().filter(|f| f["expect"] == "ok") {
        let out = preprocess_audio(&read(f["file"].as_str().unwrap()), &profile).unwrap();
        let (_, gold) = read_npy(f["golden"].as_str().unwrap());
        let (mad, max) = diff(&out.features.data, &gold);
        let e = worst
            .entry(f["cls"].as_str().unwrap().to_string())
            .or_default();
        e.0 = e.0.max(mad);
        e.1 = e.1.max(max);
        e.2 += 1;
    }
    for (cls, (mad, max, n)) in &worst {
        println!("{cls:10} files={n:2} worst mad={mad:.2e} worst max={max:.2e}");
        assert!(*mad <= tol(cls), "{cls}: {mad}");
    }
}

/// The Slaney filterbank agrees with librosa's (sum recorded by gen_audio.py).
#[test]
fn mel_filterbank_matches_librosa() {
    let want = audio_common::manifest()["mel_filterbank_sum"]
        .as_f64()
        .unwrap();
    let fb = preba_preprocess::audio::mel_filterbank(16_000, 512, 80, 0.0, 8_000.0);
    assert_eq!((fb.len(), fb[0].len()), (80, 257));
    let got: f64 = fb.iter().flatten().map(|&v| v as f64).sum();
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // Each band's area (Slaney normalisation): weights * bin width (31.25 Hz) ~ 1.
    for (m, row) in fb.iter().enumerate().skip(1) {
        let area: f64 = row.iter().map(|&v| v as f64 * 31.25).sum();
        assert!((area - 1.0).abs() < 0.2, "band {m}: {area}");
    }
}
