//! Robustness and invariants of the audio pipeline: no panic on any bytes,
//! limits refused before allocation, determinism across runs and threads,
//! stage split (log_mel + normalize) equal to preprocess_audio.

mod audio_common;

use audio_common::read;
use preba_preprocess::Error;
use preba_preprocess::audio::{
    AudioNorm, AudioProfile, Features, NORM_EPS, decode_mono, log_mel, log_mel_samples, normalize,
    preprocess_audio, probe_wav,
};
use preba_protocol::limits::{MAX_AUDIO_SECONDS, MAX_INPUT_BYTES};
use proptest::prelude::*;

fn wav(channels: u16, rate: u32, bits: u16, tag: u16, data: &[u8]) -> Vec<u8> {
    let ba = channels as u32 * bits as u32 / 8;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate.wrapping_mul(ba)).to_le_bytes());
    v.extend_from_slice(&(ba as u16).to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn speech() -> Vec<u8> {
    read("fixtures/audio/speech_16k_s16.wav")
}

fn bits(f: &Features) -> Vec<u32> {
    f.data.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn split_stages_equal_preprocess_audio() {
    let p = AudioProfile::default();
    for name in [
        "speech_16k_s16",
        "speech_44k_s16",
        "short_1",
        "empty",
        "silence_16k",
    ] {
        let bytes = read(&format!("fixtures/audio/{name}.wav"));
        let full = preprocess_audio(&bytes, &p).unwrap();
        let mut split = log_mel(&bytes, &p).unwrap();
        normalize(&mut split.features);
        assert_eq!(bits(&full.features), bits(&split.features), "{name}");
        let raw = preprocess_audio(
            &bytes,
            &AudioProfile {
                norm: AudioNorm::None,
                ..p
            },
        )
        .unwrap();
        assert_eq!(
            bits(&raw.features),
            bits(&log_mel(&bytes, &p).unwrap().features),
            "{name}"
        );
    }
}

#[test]
fn normalized_bands_have_zero_mean_unit_std() {
    let out = preprocess_audio(&speech(), &AudioProfile::default()).unwrap();
    let f = &out.features;
    for m in 0..f.n_mels {
        let b = f.band(m);
        let mean = b.iter().map(|&v| v as f64).sum::<f64>() / b.len() as f64;
        let var = b.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (b.len() - 1) as f64;
        assert!(mean.abs() < 1e-5, "band {m}: mean {mean}");
        assert!(
            (var.sqrt() - 1.0).abs() < 1e-3,
            "band {m}: std {}",
            var.sqrt()
        );
    }
}

/// The normalize stage's bits are its documented definition: per band,
/// f64 statistics with element i added into partial sum i % 4 in order, the
/// sums combined as (s0 + s1) + (s2 + s3), the result rounded to f32 once
/// (the card's normalize CU computes the same). Band lengths that are and
/// are not multiples of four.
#[test]
fn normalize_is_its_definition_bit_for_bit() {
    fn sum4(row: &[f32], f: impl Fn(f32) -> f64) -> f64 {
        let mut s = [0f64; 4];
        for (i, &v) in row.iter().enumerate() {
            s[i % 4] += f(v);
        }
        (s[0] + s[1]) + (s[2] + s[3])
    }
    for frames in [1usize, 2, 5, 8, 1001] {
        let n_mels = 3;
        let data: Vec<f32> = (0..n_mels * frames)
            .map(|i| ((i * 2_654_435_761) % 10_007) as f32 * 1e-3 - 4.0)
            .collect();
        let mut got = Features {
            n_mels,
            frames,
            data: data.clone(),
        };
        normalize(&mut got);
        let mut want = data;
        for row in want.chunks_exact_mut(frames) {
            let mean = sum4(row, |v| v as f64) / frames as f64;
            let std = if frames > 1 {
                (sum4(row, |v| (v as f64 - mean) * (v as f64 - mean)) / (frames - 1) as f64).sqrt()
            } else {
                0.0
            };
            let scale = 1.0 / (std + NORM_EPS);
            for v in row.iter_mut() {
                *v = ((*v as f64 - mean) * scale) as f32;
            }
        }
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        assert!(bits(&got.data) == bits(&want), "{frames} frames");
    }
}

#[test]
fn deterministic_across_runs_and_threads() {
    let p = AudioProfile::default();
    let inputs: Vec<Vec<u8>> = [
        "speech_16k_s16",
        "speech_44k_s16",
        "speech_8k_s16",
        "speech_16k_stereo_s16",
    ]
    .iter()
    .map(|n| read(&format!("fixtures/audio/{n}.wav")))
    .collect();
    let want: Vec<Vec<u32>> = inputs
        .iter()
        .map(|b| bits(&preprocess_audio(b, &p).unwrap().features))
        .collect();
    // Same calls from 4 threads at once, in different orders.
    std::thread::scope(|s| {
        for k in 0..4 {
            let (inputs, want) = (&inputs, &want);
            s.spawn(move || {
                for r in 0..3 {
                    for i in 0..inputs.len() {
                        let j = (i + k + r) % inputs.len();
                        let got = bits(&preprocess_audio(&inputs[j], &p).unwrap().features);
                        assert!(got == want[j], "thread {k}: input {j} differs");
                    }
                }
            });
        }
    });
}

#[test]
fn limits_are_refused_before_allocation() {
    // 601 s of 8-bit mono at 1 kHz: over MAX_AUDIO_SECONDS.
    let n = (MAX_AUDIO_SECONDS as usize + 1) * 1000;
    let long = wav(1, 1000, 8, 1, &vec![128u8; n]);
    assert!(matches!(probe_wav(&long), Err(Error::InputTooLarge(_))));
    assert!(matches!(
        preprocess_audio(&long, &AudioProfile::default()),
        Err(Error::InputTooLarge(_))
    ));
    // Exactly 600 s is accepted (and cheap at 1 kHz).
    let ok = wav(1, 1000, 8, 1, &vec![128u8; n - 1000]);
    assert_eq!(probe_wav(&ok).unwrap().frames, 600_000);
    // Bigger than MAX_INPUT_BYTES.
    let mut big = wav(1, 16000, 16, 1, &[]);
    big.resize(MAX_INPUT_BYTES as usize + 1, 0);
    assert!(matches!(probe_wav(&big), Err(Error::InputTooLarge(_))));
    // Huge declared data length, little data: read what is there.
    let mut lie = wav(1, 16000, 16, 1, &[0u8; 320]);
    let at = lie.len() - 320 - 4;
    lie[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(probe_wav(&lie).unwrap().frames, 160);
    // A profile whose output would be enormous (hop 1, 256 mels, 48 kHz).
    let p = AudioProfile {
        sample_rate: 48_000,
        hop: 1,
        n_mels: 256,
        fmax_hz: 24_000,
        ..Default::default()
    };
    assert!(matches!(
        preprocess_audio(&ok, &p),
        Err(Error::InputTooLarge(_))
    ));
}

#[test]
fn invalid_profiles_are_refused() {
    let b = speech();
    for p in [
        AudioProfile {
            n_fft: 500,
            ..Default::default()
        },
        AudioProfile {
            win_length: 1024,
            ..Default::default()
        },
        AudioProfile {
            hop: 0,
            ..Default::default()
        },
        AudioProfile {
            n_mels: 0,
            ..Default::default()
        },
        AudioProfile {
            fmax_hz: 9000,
            ..Default::default()
        },
        AudioProfile {
            preemph: f32::NAN,
            ..Default::default()
        },
        AudioProfile {
            sample_rate: 100,
            ..Default::default()
        },
    ] {
        assert!(
            matches!(preprocess_audio(&b, &p), Err(Error::InvalidProfile(_))),
            "{p:?}"
        );
        assert!(
            matches!(log_mel(&b, &p), Err(Error::InvalidProfile(_))),
            "{p:?}"
        );
    }
}

#[test]
fn other_profiles_work() {
    let b = speech();
    let info = probe_wav(&b).unwrap();
    for p in [
        AudioProfile {
            sample_rate: 8_000,
            fmax_hz: 4_000,
            n_mels: 64,
            n_fft: 256,
            win_length: 200,
            hop: 80,
            ..Default::default()
        },
        AudioProfile {
            n_mels: 128,
            n_fft: 1024,
            win_length: 1024,
            hop: 256,
            preemph: 0.0,
            ..Default::default()
        },
        AudioProfile {
            sample_rate: 48_000,
            fmax_hz: 24_000,
            fmin_hz: 20,
            ..Default::default()
        },
    ] {
        let out = preprocess_audio(&b, &p).unwrap();
        let samples = (info.frames * p.sample_rate as u64).div_ceil(info.sample_rate as u64);
        assert_eq!(
            out.features.frames as u64,
            1 + samples / p.hop as u64,
            "{p:?}"
        );
        assert_eq!(out.features.n_mels, p.n_mels as usize);
        assert!(out.features.data.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn samples_entry_point_matches_wav_path() {
    let b = speech();
    let p = AudioProfile {
        norm: AudioNorm::None,
        ..Default::default()
    };
    let (_, mono) = decode_mono(&b).unwrap();
    let a = log_mel_samples(&mono, &p).unwrap();
    assert_eq!(bits(&a), bits(&log_mel(&b, &p).unwrap().features));
}

#[test]
fn float_specials_do_not_poison_output() {
    let mut data = Vec::new();
    for (i, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.5]
        .iter()
        .cycle()
        .take(4000)
        .enumerate()
    {
        let v = if i % 7 == 0 {
            *v
        } else {
            (i as f32 * 0.01).sin()
        };
        data.extend_from_slice(&v.to_le_bytes());
    }
    let b = wav(1, 16000, 32, 3, &data);
    let out = preprocess_audio(&b, &AudioProfile::default()).unwrap();
    assert!(out.features.data.iter().all(|v| v.is_finite()));
}

fn check(bytes: &[u8]) {
    let p = AudioProfile::default();
    let probe = probe_wav(bytes);
    match preprocess_audio(bytes, &p) {
        Ok(out) => {
            let info = probe.expect("probe ok when decode ok");
            assert_eq!(info, out.info);
            assert_eq!(
                out.features.data.len(),
                out.features.n_mels * out.features.frames
            );
            assert!(out.features.data.iter().all(|v| v.is_finite()));
        }
        Err(e) => {
            if let Err(pe) = probe {
                assert_eq!(pe, e);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes);
        let mut with_header = b"RIFF\0\0\0\0WAVE".to_vec();
        with_header.extend_from_slice(&bytes);
        check(&with_header);
    }

    #[test]
    fn mutated_wav_never_panics(
        edits in proptest::collection::vec((0usize..80, any::<u8>()), 1..8),
        cut in 0usize..2000,
        rate in prop_oneof![Just(16000u32), 1000u32..400_000],
        channels in 1u16..4,
        fmt in prop_oneof![Just((16u16, 1u16)), Just((8, 1)), Just((24, 1)), Just((32, 1)), Just((32, 3)), Just((64, 3))],
    ) {
        let data: Vec<u8> = (0..1200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut b = wav(channels, rate, fmt.0, fmt.1, &data);
        for (at, v) in edits {
            if at < b.len() { b[at] = v; }
        }
        b.truncate(b.len().saturating_sub(cut));
        check(&b);
    }

    #[test]
    fn fixture_mutations_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((0usize..64, any::<u8>()), 1..6),
    ) {
        let name = ["short_100", "speech_16k_ext_s24", "speech_11k_u8", "short_44k_7"][which];
        let mut b = read(&format!("fixtures/audio/{name}.wav"));
        for (at, v) in edits {
            if at < b.len() { b[at] = v; }
        }
        check(&b);
    }
}

/// The streamed stage 1 (the WAV decoded and resampled block by block into
/// the Mel stage) gives the bits of the whole-signal path: decode it all,
/// resample it all, then the Mel stage over the whole signal at once. Every
/// rate the fixtures have (16 kHz unresampled, 8/11.025/22.05/44.1/48 kHz,
/// stereo, 24-bit, float), edge lengths and a long file that spans many
/// resampler and Mel blocks.
#[test]
fn streamed_stage_one_equals_whole_signal() {
    let p = AudioProfile::default();
    let mut names: Vec<String> = std::fs::read_dir(audio_common::root().join("fixtures/audio"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".wav").map(str::to_owned)
        })
        .collect();
    names.sort();
    let mut checked = 0;
    for name in &names {
        let bytes = read(&format!("fixtures/audio/{name}.wav"));
        let Ok(streamed) = log_mel(&bytes, &p) else {
            continue;
        };
        let (info, mono) = decode_mono(&bytes).unwrap();
        let x = preba_preprocess::audio::resample(&mono, info.sample_rate, p.sample_rate);
        let whole = log_mel_samples(&x, &p).unwrap();
        assert_eq!(bits(&streamed.features), bits(&whole), "{name}");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures decoded");
    // Two minutes at 44.1 kHz: many resampler blocks and Mel blocks.
    let (info, mono) = decode_mono(&read("fixtures/audio/speech_44k_s16.wav")).unwrap();
    let mut long = Vec::new();
    while long.len() < 120 * 44_100 {
        long.extend(mono.iter().map(|v| (v * 32_767.0) as i16));
    }
    let data: Vec<u8> = long.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = wav(1, info.sample_rate, 16, 1, &data);
    let streamed = log_mel(&bytes, &p).unwrap();
    let (_, mono) = decode_mono(&bytes).unwrap();
    let whole = log_mel_samples(
        &preba_preprocess::audio::resample(&mono, 44_100, 16_000),
        &p,
    )
    .unwrap();
    assert_eq!(bits(&streamed.features), bits(&whole), "120 s at 44.1 kHz");
}
