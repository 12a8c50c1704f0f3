//! The golden model's audio path on hostile WAV files: probe, decode,
//! downmix, resample, pre-emphasis, STFT, Mel, log, normalise, with the
//! card's limits. Beyond "no panic, no hang": the card's header probe and
//! the engine's reader agree (the engine may take more only for 64-bit
//! float), and the features have the announced shape and are finite.
//!
//! Fuzz-only cap (like the image target's pixel cap): a file the engine's
//! probe takes with more than [`MAX_FUZZ_SAMPLES`] samples (frames times
//! channels) or longer than [`MAX_FUZZ_MS`] (what the resampler makes at the
//! profile's rate) is probed (card probe vs engine reader, the whole header
//! walk) but not turned into features; the features cost grows with the
//! samples, and a long file reaches no code a short one does not. Files the probe
//! refuses still go to `preprocess_audio`, which must refuse them too.
//! Likewise a rate pair whose resampler table has more than
//! [`MAX_FUZZ_PHASES`] phases is taken for one input in [`RARE_RATE_EVERY`].
//! Short seeds of every format the reader takes are in fuzz/seeds/golden_wav
//! (fuzz/seeds/gen_media_seeds.py).
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

/// Most samples turned into features (a quarter second of 16 kHz stereo:
/// several STFT frames at every profile, resampler blocks, every format).
const MAX_FUZZ_SAMPLES: u64 = 8192;
/// Longest file turned into features, in milliseconds (at 1 kHz, the lowest
/// rate, 8192 samples would be 8 s: 180 k samples at 22.05 kHz).
const MAX_FUZZ_MS: u64 = 500;

/// Resampler phases (output rate / gcd of the rates) always taken: 640 is
/// 11.025 kHz -> 16 kHz, the largest among the rates of practice (8, 11.025,
/// 16, 22.05, 32, 44.1, 48, 96 kHz) and the profiles' rates. Odd rates need
/// up to 4096.
const MAX_FUZZ_PHASES: u64 = 640;
/// One input in this many (by length) takes a larger resampler table.
const RARE_RATE_EVERY: usize = 16;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
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
    let too_long = cpu.as_ref().is_ok_and(|p| {
        p.frames.saturating_mul(u64::from(p.channels)) > MAX_FUZZ_SAMPLES
            || p.frames.saturating_mul(1000) > MAX_FUZZ_MS * u64::from(p.sample_rate.max(1))
    });
    if too_long {
        return;
    }
    let profile = profile(data.len());
    // A rate pair with many phases needs a resampler table of up to a million
    // windowed-sinc taps, built per call (~70% of this target's time when
    // every input paid it): such inputs get through one in RARE_RATE_EVERY,
    // picked by length so an input always runs the same way.
    let phases = cpu.as_ref().map_or(0, |p| {
        let (s, d) = (u64::from(p.sample_rate), u64::from(profile.sample_rate));
        d / gcd(s, d).max(1)
    });
    if phases > MAX_FUZZ_PHASES && !data.len().is_multiple_of(RARE_RATE_EVERY) {
        return;
    }
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
