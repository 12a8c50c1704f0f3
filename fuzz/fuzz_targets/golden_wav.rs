//! The golden model's audio path on hostile WAV files: probe, decode,
//! downmix, resample, pre-emphasis, STFT, Mel, log, normalise, with the
//! card's limits. Beyond "no panic, no hang": the card's header probe and
//! the engine's reader agree (the engine may take more only for 64-bit
//! float), and the features have the announced shape and are finite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preba_preprocess::audio::{AudioNorm, AudioProfile, output_shape, preprocess_audio, probe_wav};
use preba_protocol::media;

fn profile(len: usize) -> AudioProfile {
    let base = AudioProfile::default();
    match len % 3 {
        0 => base,
        1 => AudioProfile {
            sample_rate: 8_000,
            n_fft: 64,
            win_length: 16,
            hop: 64,
            n_mels: 1,
            fmax_hz: 4_000,
            preemph: 0.0,
            norm: AudioNorm::None,
            ..base
        },
        _ => AudioProfile {
            sample_rate: 22_050,
            n_fft: 256,
            win_length: 256,
            hop: 64,
            n_mels: 128,
            fmin_hz: 20,
            fmax_hz: 11_025,
            ..base
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let card = media::probe_wav(&mut &data[..]);
    let cpu = probe_wav(data);
    match (&card, &cpu) {
        (Ok(c), Ok(p)) => assert_eq!(
            (c.channels, c.sample_rate, c.frames),
            (p.channels, p.sample_rate, p.frames),
            "card probe and engine reader disagree"
        ),
        (Ok(c), Err(e)) => panic!("card accepts {c:?}, engine refuses: {e}"),
        (Err(c), Err(e)) => assert_eq!(c.status(), e.status(), "card {c:?} vs engine {e}"),
        (Err(c), Ok(p)) => assert!(
            p.float && p.bits == 64,
            "card refuses ({c:?}) what the engine takes: {p:?}"
        ),
    }
    let profile = profile(data.len());
    if let Ok(out) = preprocess_audio(data, &profile) {
        let info = cpu.expect("features from a file the probe refused");
        let (_, frames) = output_shape(&info, &profile).expect("shape of an accepted file");
        assert_eq!(out.features.frames as u64, frames, "frame count");
        assert_eq!(
            out.features.data.len() as u64,
            frames * profile.n_mels as u64,
            "feature length"
        );
        assert!(
            out.features.data.iter().all(|v| v.is_finite()),
            "non-finite feature"
        );
    }
});
