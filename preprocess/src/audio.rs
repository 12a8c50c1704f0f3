//! Audio pipeline: NeMo-style log-Mel features (the features Conformer and
//! CitriNet take), in the card's two compute units.
//!
//! Stage 1, [`log_mel`] (the "Mel CU"): WAV decode ([`decode_mono`]; the
//! header rules are in `audio/wav.rs`), downmix by
//! averaging, band-limited resampling to `profile.sample_rate`
//! ([`resample`]), pre-emphasis `y[0] = x[0], y[n] = x[n] - a * x[n-1]`,
//! STFT (periodic Hann of `win_length` centred in `n_fft`, hop `hop`, centre
//! padding with zeros), power spectrum, Slaney Mel filterbank, `ln(x + 2^-24)`.
//!
//! Stage 2, [`normalize`] (the "normalize CU", it needs the whole utterance):
//! per feature, minus the mean over frames, over (std with ddof 1) + 1e-5;
//! with one frame the std is taken as 0 (NeMo's NaN-to-0), so the output is 0.
//!
//! [`preprocess_audio`] runs both as the profile says: the CPU path and the
//! golden model. Output is f32 `[n_mels, T]`, `T = 1 + samples / hop`,
//! `samples` counted after resampling (`ceil(frames * rate / source_rate)`).
//!
//! Precision: f32 signal, FFT and Mel sums (f64 for filter design and the
//! normalisation statistics). Against float64 librosa goldens the 16 kHz
//! fixtures are within 5e-7 mean absolute difference after normalisation
//! (the contract is 0.01), so f64 would buy nothing but time; resampled input
//! is within 3e-3 of soxr HQ (fixtures/AUDIO.md).
//!
//! Every call is single-threaded with a fixed operation order, so the card
//! (which calls these same functions) and the CPU path agree bit for bit
//! whatever the thread count. (rustfft picks its SIMD kernels from the CPU
//! at run time, so two different machines may differ in the last bits; one
//! host always agrees with itself.) Nothing panics on any input bytes; every size
//! is checked against `preba_protocol::limits` and [`MAX_FEATURE_BYTES`]
//! before allocation.

mod mel;
mod resample;
mod wav;

pub use mel::{LOG_GUARD, mel_filterbank, window};
pub use resample::{PASSBAND, STOPBAND_DB, output_len as resampled_len, resample};
pub use wav::{WavInfo, decode_mono, probe_wav};

use crate::Error;
pub use preba_protocol::profile::{AudioNorm, AudioProfile};

/// Largest feature tensor produced, bytes (f32 [n_mels, T]). The default
/// profile needs 19.2 MB for the longest accepted utterance (600 s).
pub const MAX_FEATURE_BYTES: u64 = 256 << 20;

/// Added to the standard deviation in per-feature normalisation (NeMo).
pub const NORM_EPS: f64 = 1e-5;

/// Log-Mel features, row-major `[n_mels, frames]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub n_mels: usize,
    pub frames: usize,
    pub data: Vec<f32>,
}

impl Features {
    /// Band `m` over all frames.
    pub fn band(&self, m: usize) -> &[f32] {
        &self.data[m * self.frames..(m + 1) * self.frames]
    }
}

/// Features with the header of the file they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioOutput {
    pub info: WavInfo,
    pub features: Features,
}

fn check_profile(profile: &AudioProfile) -> Result<(), Error> {
    profile
        .validate()
        .map_err(|e| Error::InvalidProfile(format!("audio profile {e:?}: {profile:?}")))
}

/// Output geometry for a file with header `info`: (samples at the target
/// rate, frames). Refuses outputs past [`MAX_FEATURE_BYTES`].
pub fn output_shape(info: &WavInfo, profile: &AudioProfile) -> Result<(u64, u64), Error> {
    let samples = resample::output_len(info.frames, info.sample_rate, profile.sample_rate);
    let frames = profile.frames(samples);
    let bytes = profile.output_len(samples);
    if bytes > MAX_FEATURE_BYTES {
        return Err(Error::InputTooLarge(format!(
            "{bytes} bytes of features (limit {MAX_FEATURE_BYTES})"
        )));
    }
    Ok((samples, frames))
}

/// Stage 1 (the card's "Mel CU"): decode, downmix, resample, pre-emphasis,
/// STFT, power, Mel, log. Not normalised. The signal streams from the WAV
/// through the resampler into the Mel stage in blocks; only the input and
/// the features are ever whole.
pub fn log_mel(input: &[u8], profile: &AudioProfile) -> Result<AudioOutput, Error> {
    check_profile(profile)?;
    let wav = wav::parse(input)?;
    let info = wav.info;
    let (samples, frames) = output_shape(&info, profile)?;
    let plan = mel::plan(profile);
    let n_mels = profile.n_mels as usize;
    let mut data = vec![0f32; n_mels * frames as usize];
    let mut stream = mel::MelStream::new(
        &plan,
        profile.preemph,
        samples as usize,
        frames as usize,
        &mut data,
    );
    if info.sample_rate == profile.sample_rate {
        const CHUNK: usize = 1 << 14;
        let mut buf = vec![0f32; CHUNK];
        let total = info.frames as usize;
        let mut at = 0;
        while at < total {
            let n = CHUNK.min(total - at);
            wav.decode_into(at, &mut buf[..n]);
            stream.push(&buf[..n])?;
            at += n;
        }
    } else {
        let mut failed = None;
        resample::resample_each(&wav, info.sample_rate, profile.sample_rate, &mut |c| {
            if failed.is_none() {
                failed = stream.push(c).err();
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    stream.finish()?;
    Ok(AudioOutput {
        info,
        features: Features {
            n_mels,
            frames: frames as usize,
            data,
        },
    })
}

/// In place: `y[0] = x[0]`, `y[n] = x[n] - a * x[n-1]` (f32).
pub fn pre_emphasis(x: &mut [f32], a: f32) {
    if a == 0.0 {
        return;
    }
    for n in (1..x.len()).rev() {
        x[n] -= a * x[n - 1];
    }
}

/// Log-Mel features of mono samples at the profile's rate, pre-emphasis
/// included (stage 1 without the WAV decode and the resampler).
pub fn log_mel_samples(samples: &[f32], profile: &AudioProfile) -> Result<Features, Error> {
    check_profile(profile)?;
    let frames = profile.frames(samples.len() as u64) as usize;
    if profile.output_len(samples.len() as u64) > MAX_FEATURE_BYTES {
        return Err(Error::InputTooLarge(
            "features past MAX_FEATURE_BYTES".into(),
        ));
    }
    let plan = mel::plan(profile);
    let n_mels = profile.n_mels as usize;
    let mut data = vec![0f32; n_mels * frames];
    let mut stream = mel::MelStream::new(&plan, profile.preemph, samples.len(), frames, &mut data);
    stream.push(samples)?;
    stream.finish()?;
    Ok(Features {
        n_mels,
        frames,
        data,
    })
}

/// Stage 2 (the card's "normalize CU"): per-feature normalisation in place.
/// Statistics in f64 (four partial sums in a fixed order), result rounded
/// to f32 once.
pub fn normalize(features: &mut Features) {
    let t = features.frames;
    if t == 0 {
        return;
    }
    for row in features.data.chunks_exact_mut(t).take(features.n_mels) {
        let mean = sum4(row, |v| v as f64) / t as f64;
        let std = if t > 1 {
            let ss = sum4(row, |v| (v as f64 - mean) * (v as f64 - mean));
            (ss / (t - 1) as f64).sqrt()
        } else {
            0.0
        };
        let scale = 1.0 / (std + NORM_EPS);
        for v in row.iter_mut() {
            *v = ((*v as f64 - mean) * scale) as f32;
        }
    }
}

/// Sum of `f(v)` with four partial sums (element i into sum i % 4), added
/// in a fixed order: deterministic, and not bound by the latency of one add
/// chain. Written over chunks of four so the four sums are one vector.
fn sum4(row: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut s = [0f64; 4];
    let chunks = row.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for (acc, &v) in s.iter_mut().zip(c) {
            *acc += f(v);
        }
    }
    for (acc, &v) in s.iter_mut().zip(rest) {
        *acc += f(v);
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

/// Both stages as `profile.norm` says: the CPU path and the golden model.
pub fn preprocess_audio(input: &[u8], profile: &AudioProfile) -> Result<AudioOutput, Error> {
    let mut out = log_mel(input, profile)?;
    match profile.norm {
        AudioNorm::None => {}
        AudioNorm::PerFeature => normalize(&mut out.features),
    }
    Ok(out)
}
