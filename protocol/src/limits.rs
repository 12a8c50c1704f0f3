//! Input limits. Anything past them is refused as INPUT_TOO_LARGE before a
//! single byte is allocated for it, on the card and on the CPU path alike.

/// Largest accepted compressed input (one request), bytes.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;
/// Largest accepted image side, pixels.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest accepted image area, pixels (about a 64 MP photo).
pub const MAX_IMAGE_PIXELS: u64 = 64 << 20;
/// Largest accepted utterance, seconds at the source rate.
pub const MAX_AUDIO_SECONDS: u64 = 600;
/// Largest accepted source sample rate, Hz.
pub const MAX_AUDIO_RATE: u32 = 384_000;
/// Smallest accepted source sample rate, Hz.
pub const MIN_AUDIO_RATE: u32 = 1_000;
/// Most channels in an accepted WAV file.
pub const MAX_AUDIO_CHANNELS: u16 = 32;
