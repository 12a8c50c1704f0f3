//! Preprocessing profiles: what SET PROFILE carries and what the engines (and
//! the CPU path) obey. One definition, so card, firmware and host cannot drift.

/// Element type of an output tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dtype {
    U8 = 0,
    F16 = 1,
    Bf16 = 2,
    F32 = 3,
}

impl Dtype {
    pub const fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::F32 => 4,
        }
    }
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Dtype::U8),
            1 => Some(Dtype::F16),
            2 => Some(Dtype::Bf16),
            3 => Some(Dtype::F32),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "u8",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::F32 => "f32",
        }
    }
}

/// Memory layout of an image tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Layout {
    /// Planes: [3, C, C].
    Nchw = 0,
    /// Interleaved: [C, C, 3].
    Nhwc = 1,
}

impl Layout {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Layout::Nchw),
            1 => Some(Layout::Nhwc),
            _ => None,
        }
    }
}

/// The torchvision eval transform: resize shorter side to `resize`, centre
/// crop `crop` x `crop`, optionally normalise, convert.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageProfile {
    pub resize: u16,
    pub crop: u16,
    /// When set, output = (x / 255 - mean) / std; `dtype` must then be a float type.
    pub normalize: bool,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub dtype: Dtype,
    pub layout: Layout,
}

impl Default for ImageProfile {
    fn default() -> Self {
        ImageProfile {
            resize: 256,
            crop: 224,
            normalize: false,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            dtype: Dtype::U8,
            layout: Layout::Nchw,
        }
    }
}

/// Why a profile is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileError {
    /// crop must be in 1..=resize and resize in 1..=MAX_RESIZE.
    BadGeometry,
    /// normalisation produces floats: u8 output cannot hold it.
    NormalizeNeedsFloat,
    /// std must be finite and non-zero, mean finite.
    BadMeanStd,
    /// Audio parameters out of range (see [`AudioProfile::validate`]).
    BadAudio,
}

/// Largest accepted resize target (shorter side), in pixels.
pub const MAX_RESIZE: u16 = 4096;

impl ImageProfile {
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.resize == 0 || self.resize > MAX_RESIZE || self.crop == 0 || self.crop > self.resize
        {
            return Err(ProfileError::BadGeometry);
        }
        if self.normalize {
            if self.dtype == Dtype::U8 {
                return Err(ProfileError::NormalizeNeedsFloat);
            }
            for i in 0..3 {
                if !self.mean[i].is_finite() || !self.std[i].is_finite() || self.std[i] == 0.0 {
                    return Err(ProfileError::BadMeanStd);
                }
            }
        }
        Ok(())
    }

    /// Bytes of one output tensor.
    pub fn output_len(&self) -> usize {
        3 * self.crop as usize * self.crop as usize * self.dtype.size()
    }
}

/// Per-utterance normalisation of the log-Mel features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AudioNorm {
    None = 0,
    /// Each band minus its mean over frames, over (std with ddof 1 + 1e-5).
    PerFeature = 1,
}

impl AudioNorm {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(AudioNorm::None),
            1 => Some(AudioNorm::PerFeature),
            _ => None,
        }
    }
}

/// NeMo-style log-Mel front end (the features Conformer and CitriNet take).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AudioProfile {
    /// Target sample rate after resampling, Hz.
    pub sample_rate: u32,
    pub n_fft: u16,
    /// Periodic Hann window length, centred in the n_fft frame.
    pub win_length: u16,
    pub hop: u16,
    pub n_mels: u16,
    pub fmin_hz: u32,
    pub fmax_hz: u32,
    /// Pre-emphasis coefficient; 0 disables it.
    pub preemph: f32,
    pub norm: AudioNorm,
}

impl Default for AudioProfile {
    fn default() -> Self {
        AudioProfile {
            sample_rate: 16_000,
            n_fft: 512,
            win_length: 400,
            hop: 160,
            n_mels: 80,
            fmin_hz: 0,
            fmax_hz: 8_000,
            preemph: 0.97,
            norm: AudioNorm::PerFeature,
        }
    }
}

impl AudioProfile {
    pub fn validate(&self) -> Result<(), ProfileError> {
        let ok = (8_000..=48_000).contains(&self.sample_rate)
            && self.n_fft.is_power_of_two()
            && (64..=4096).contains(&self.n_fft)
            && self.win_length >= 16
            && self.win_length <= self.n_fft
            && self.hop >= 1
            && self.hop <= self.n_fft
            && (1..=256).contains(&self.n_mels)
            && self.fmin_hz < self.fmax_hz
            && self.fmax_hz <= self.sample_rate / 2
            && self.preemph.is_finite()
            && (0.0..1.0).contains(&self.preemph);
        if ok {
            Ok(())
        } else {
            Err(ProfileError::BadAudio)
        }
    }

    /// Frames for `samples` samples at the target rate (centre padding).
    pub fn frames(&self, samples: u64) -> u64 {
        1 + samples / self.hop as u64
    }

    /// Bytes of the f32 [n_mels, frames] output for `samples` target-rate samples.
    pub fn output_len(&self, samples: u64) -> u64 {
        self.n_mels as u64 * self.frames(samples) * 4
    }
}

/// A profile slot: the card keeps [`MAX_PROFILES`] of them, set by SET PROFILE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Profile {
    Image(ImageProfile),
    Audio(AudioProfile),
}

pub const MAX_PROFILES: usize = 16;
