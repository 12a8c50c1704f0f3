//! The CUs' cycle and power models and the board power model.
//!
//! Cycle counts are in the engine clock ([`CardConfig::cu_hz`](crate::CardConfig::cu_hz),
//! INFO_CU_HZ). The per-unit costs come from public FPGA figures (docs/background.md section 3) and are
//! clock-independent (cycles per unit of work), so changing the clock scales modeled time:
//!
//! - **JPEG decode**: AMD Vitis JPEG decoder, 1,148 frames/s at 512x512 and 243 MHz:
//!   243e6 / 1148 / 262,144 = 0.8075 cycles per pixel for 4:2:0 (1.5 samples per pixel), i.e.
//!   0.538 cycles per component sample; scaled by samples per pixel (gray 1, 4:2:0 1.5,
//!   4:2:2 and 4:4:0 2, 4:4:4 3). [`JpegCore::CoreJpeg`] models the open-source core_jpeg
//!   instead: 2.1 cycles per pixel for 4:2:0 (1.4 per sample).
//! - **Resize**: Vitis resize, 2,644 MP/s at 341 MHz = 7.75 source pixels per cycle.
//! - **Crop + normalize + convert**: 8 output elements per cycle.
//! - The image CU streams decode -> resize -> crop/normalize, so a job costs the slowest stage
//!   plus a fixed pipeline fill ([`CycleModel::image_fixed`]).
//! - **Audio Mel CU** (our model; no public core to copy): a 128-bit stream reader (16 input bytes
//!   per cycle), a polyphase resampler at one output sample per cycle, and a streaming radix-2^2
//!   SDF FFT at one sample per cycle (n_fft cycles per frame), with power, Mel (each FFT bin feeds
//!   at most two triangular filters, pipelined behind the FFT) and log in the same pipeline:
//!   `max(bytes / 16, resampled samples, frames * n_fft) + fixed`.
//! - **Normalize CU**: two passes (statistics, then scale) over n_mels x T at 4 elements per
//!   cycle, plus a 30-cycle divide/sqrt per band.
//! - Failed jobs cost the header scan: `bytes / 16 + 256`.
//!
//! Power: each CU draws [`PowerModel`] static power always and its kind's dynamic power while
//! busy; CU_ENERGY_NJ is `busy cycles / cu_hz * (static + dynamic)`. The board adds a static
//! floor and the soft core. The INA226 reads board power with the CUs busy at the moment of the
//! read (wall time).

use preba_protocol::admin::CuKind;

/// Which published JPEG decoder the image CU's cycle model follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JpegCore {
    /// AMD Vitis JPEG decoder (0.538 cycles per component sample).
    Vitis,
    /// Open-source core_jpeg (1.4 cycles per component sample: 2.1 per 4:2:0 pixel).
    CoreJpeg,
}

/// Cycle model parameters (all costs in engine cycles).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CycleModel {
    /// Decoder model.
    pub jpeg: JpegCore,
    /// Source pixels the resizer takes per cycle (Vitis resize: 2644 MP/s / 341 MHz).
    pub resize_px_per_cycle: f64,
    /// Output elements the crop/normalize/convert stage writes per cycle.
    pub out_elems_per_cycle: f64,
    /// Fixed cost per image job (header parse, Huffman table load, pipeline fill).
    pub image_fixed: u64,
    /// Input bytes the audio reader takes per cycle.
    pub audio_bytes_per_cycle: f64,
    /// Fixed cost per audio job.
    pub audio_fixed: u64,
    /// Elements per cycle of the normalize CU.
    pub norm_elems_per_cycle: f64,
}

impl Default for CycleModel {
    fn default() -> Self {
        CycleModel {
            jpeg: JpegCore::Vitis,
            resize_px_per_cycle: 2644.0 / 341.0,
            out_elems_per_cycle: 8.0,
            image_fixed: 2_000,
            audio_bytes_per_cycle: 16.0,
            audio_fixed: 1_000,
            norm_elems_per_cycle: 4.0,
        }
    }
}

/// What an image job did, for the cycle model.
#[derive(Clone, Copy, Debug)]
pub struct ImageWork {
    /// Source width and height.
    pub width: u32,
    /// Source height.
    pub height: u32,
    /// Component samples per pixel (1, 1.5, 2 or 3).
    pub samples_per_px: f64,
    /// Output elements (3 * crop * crop).
    pub out_elems: u64,
}

impl CycleModel {
    /// Cycles per component sample of the decoder.
    pub fn jpeg_cycles_per_sample(&self) -> f64 {
        match self.jpeg {
            // 243 MHz / 1148 frames/s / (512 * 512 px * 1.5 samples/px)
            JpegCore::Vitis => 243e6 / 1148.0 / (512.0 * 512.0 * 1.5),
            JpegCore::CoreJpeg => 2.1 / 1.5,
        }
    }

    /// Cycles of one image job.
    pub fn image(&self, w: &ImageWork) -> u64 {
        let px = f64::from(w.width) * f64::from(w.height);
        let decode = px * w.samples_per_px * self.jpeg_cycles_per_sample();
        let resize = px / self.resize_px_per_cycle;
        let out = w.out_elems as f64 / self.out_elems_per_cycle;
        decode.max(resize).max(out).ceil() as u64 + self.image_fixed
    }

    /// Cycles of one Mel job: `bytes` of WAV in, `samples` after resampling (0 when the source
    /// is already at the target rate), `frames` of `n_fft`.
    pub fn audio(&self, bytes: u64, resampled: u64, frames: u64, n_fft: u64) -> u64 {
        let read = bytes as f64 / self.audio_bytes_per_cycle;
        let fft = (frames * n_fft) as f64;
        read.max(resampled as f64).max(fft).ceil() as u64 + self.audio_fixed
    }

    /// Cycles of one normalize job over `n_mels` x `frames`.
    pub fn normalize(&self, n_mels: u64, frames: u64) -> u64 {
        (2.0 * (n_mels * frames) as f64 / self.norm_elems_per_cycle).ceil() as u64 + 30 * n_mels
    }

    /// Cycles of a job that failed after reading `bytes`.
    pub fn failed(&self, bytes: u64) -> u64 {
        (bytes as f64 / self.audio_bytes_per_cycle).ceil() as u64 + 256
    }
}

/// Power model parameters, watts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerModel {
    /// Board floor: HBM refresh, PCIe, regulators, fans (an idle U55C-class board).
    pub board_static_w: f64,
    /// The soft core and its peripherals.
    pub core_w: f64,
    /// Static (leakage) power of one image CU.
    pub image_static_w: f64,
    /// Dynamic power of one image CU while busy (a ~25k-LUT decoder plus resizer).
    pub image_dynamic_w: f64,
    /// Static power of one audio Mel CU.
    pub audio_static_w: f64,
    /// Dynamic power of one audio Mel CU while busy (FFT with DSP slices).
    pub audio_dynamic_w: f64,
    /// Static power of one normalize CU.
    pub norm_static_w: f64,
    /// Dynamic power of one normalize CU while busy.
    pub norm_dynamic_w: f64,
    /// Supply voltage (the INA226 bus voltage).
    pub supply_v: f64,
}

impl Default for PowerModel {
    fn default() -> Self {
        PowerModel {
            board_static_w: 18.0,
            core_w: 0.3,
            image_static_w: 0.15,
            image_dynamic_w: 3.5,
            audio_static_w: 0.1,
            audio_dynamic_w: 2.0,
            norm_static_w: 0.05,
            norm_dynamic_w: 0.6,
            supply_v: 12.0,
        }
    }
}

impl PowerModel {
    /// (static, dynamic) watts of a CU of `kind`.
    pub fn cu_w(&self, kind: CuKind) -> (f64, f64) {
        match kind {
            CuKind::Image => (self.image_static_w, self.image_dynamic_w),
            CuKind::AudioMel => (self.audio_static_w, self.audio_dynamic_w),
            CuKind::AudioNorm => (self.norm_static_w, self.norm_dynamic_w),
        }
    }

    /// Energy of a job of `cycles` at `hz` on a CU of `kind`, nanojoules (saturating u32).
    pub fn job_nj(&self, kind: CuKind, cycles: u64, hz: u32) -> u32 {
        let (s, d) = self.cu_w(kind);
        let nj = cycles as f64 / f64::from(hz.max(1)) * (s + d) * 1e9;
        nj.round().min(f64::from(u32::MAX)) as u32
    }

    /// Board power with the given CUs (kind, busy) in watts.
    pub fn board_w(&self, cus: impl Iterator<Item = (CuKind, bool)>) -> f64 {
        let mut p = self.board_static_w + self.core_w;
        for (k, busy) in cus {
            let (s, d) = self.cu_w(k);
            p += s + if busy { d } else { 0.0 };
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vitis_calibration() {
        let m = CycleModel {
            image_fixed: 0,
            ..CycleModel::default()
        };
        // 512x512 4:2:0 at 243 MHz: 1148 frames/s.
        let c = m.image(&ImageWork {
            width: 512,
            height: 512,
            samples_per_px: 1.5,
            out_elems: 3 * 224 * 224,
        });
        let fps = 243e6 / c as f64;
        assert!((fps - 1148.0).abs() < 1.0, "{fps}");
        let core = CycleModel {
            jpeg: JpegCore::CoreJpeg,
            ..m
        };
        let c = core.image(&ImageWork {
            width: 100,
            height: 100,
            samples_per_px: 1.5,
            out_elems: 0,
        });
        assert!((20_999..=21_001).contains(&c), "{c}");
    }

    #[test]
    fn energy_and_power() {
        let p = PowerModel::default();
        // 1 ms of an image CU: 3.65 W -> 3.65 mJ.
        assert_eq!(p.job_nj(CuKind::Image, 250_000, 250_000_000), 3_650_000);
        let idle = p.board_w([(CuKind::Image, false)].into_iter());
        let busy = p.board_w([(CuKind::Image, true)].into_iter());
        assert!((busy - idle - 3.5).abs() < 1e-9);
    }
}
