//! The card's cycle and power models, restated from `qemu-device/src/model.rs`
//! (`CycleModel::default()`, `PowerModel::default()`) so that `preba-sim` does
//! not pull the vfio-user server into the `preba` binary. The constants are
//! checked against that crate in `tests/card_model.rs`.
//!
//! Sources (docs/background.md section 3): AMD Vitis JPEG decoder, 1,148 frames/s at
//! 512x512 4:2:0 and 243 MHz; Vitis resize 2,644 MP/s at 341 MHz; core_jpeg
//! 2.1 cycles per 4:2:0 pixel; the audio Mel CU is the card model's own
//! (reader 16 B/cycle, FFT one sample per cycle); power figures are the card
//! model's (an idle U55C-class board 18 W, image CU 0.15 W static + 3.5 W busy).

use crate::scenario::JpegCore;

/// Vitis JPEG: cycles per component sample.
pub const VITIS_CYCLES_PER_SAMPLE: f64 = 243e6 / 1148.0 / (512.0 * 512.0 * 1.5);
/// core_jpeg: 2.1 cycles per 4:2:0 pixel.
pub const CORE_JPEG_CYCLES_PER_SAMPLE: f64 = 2.1 / 1.5;
/// Vitis resize: source pixels per cycle.
pub const RESIZE_PX_PER_CYCLE: f64 = 2644.0 / 341.0;
/// Crop/normalize/convert: output elements per cycle.
pub const OUT_ELEMS_PER_CYCLE: f64 = 8.0;
pub const IMAGE_FIXED_CYCLES: u64 = 2_000;
pub const AUDIO_BYTES_PER_CYCLE: f64 = 16.0;
pub const AUDIO_FIXED_CYCLES: u64 = 1_000;
pub const NORM_ELEMS_PER_CYCLE: f64 = 4.0;

pub const BOARD_STATIC_W: f64 = 18.0;
pub const CORE_W: f64 = 0.3;
/// (static, dynamic) watts per CU kind.
pub const IMAGE_CU_W: (f64, f64) = (0.15, 3.5);
pub const AUDIO_CU_W: (f64, f64) = (0.1, 2.0);
pub const NORM_CU_W: (f64, f64) = (0.05, 0.6);

/// Cycles of one image job: `pixels` source pixels, `samples_per_px`
/// component samples per pixel, output `3 x crop x crop`.
pub fn image_cycles(pixels: f64, samples_per_px: f64, crop: u32, jpeg: JpegCore) -> u64 {
    let cps = match jpeg {
        JpegCore::Vitis => VITIS_CYCLES_PER_SAMPLE,
        JpegCore::CoreJpeg => CORE_JPEG_CYCLES_PER_SAMPLE,
    };
    let decode = pixels * samples_per_px * cps;
    let resize = pixels / RESIZE_PX_PER_CYCLE;
    let out = 3.0 * f64::from(crop) * f64::from(crop) / OUT_ELEMS_PER_CYCLE;
    decode.max(resize).max(out).ceil() as u64 + IMAGE_FIXED_CYCLES
}

/// Samples and frames of an utterance of `duration_s` at `sample_rate`
/// (`T = 1 + samples / hop`, preprocess/src/audio.rs).
pub fn audio_frames(duration_s: f64, sample_rate: u32, hop: u32) -> (u64, u64) {
    let samples = (duration_s * f64::from(sample_rate)).round() as u64;
    (samples, 1 + samples / u64::from(hop))
}

/// Cycles of one Mel job on a 16-bit mono WAV already at `sample_rate` (no
/// resampling): `max(bytes / 16, frames * n_fft) + fixed`.
pub fn mel_cycles(duration_s: f64, sample_rate: u32, n_fft: u32, hop: u32) -> u64 {
    let (samples, frames) = audio_frames(duration_s, sample_rate, hop);
    let bytes = 44 + 2 * samples;
    let read = bytes as f64 / AUDIO_BYTES_PER_CYCLE;
    let fft = (frames * u64::from(n_fft)) as f64;
    read.max(fft).ceil() as u64 + AUDIO_FIXED_CYCLES
}

/// Cycles of one normalize job over `n_mels x frames`.
pub fn norm_cycles(duration_s: f64, sample_rate: u32, hop: u32, n_mels: u32) -> u64 {
    let (_, frames) = audio_frames(duration_s, sample_rate, hop);
    let n_mels = u64::from(n_mels);
    (2.0 * (n_mels * frames) as f64 / NORM_ELEMS_PER_CYCLE).ceil() as u64 + 30 * n_mels
}
