//! The card model restated in `preba_sim::card` equals the card's own
//! (`qemu-device/src/model.rs`).

use preba_card::model::{CycleModel, ImageWork, JpegCore, PowerModel};
use preba_protocol::admin::CuKind;
use preba_sim::card;

#[test]
fn cycle_model_matches_the_card() {
    let m = CycleModel::default();
    for (px, w, h) in [
        (187_500.0, 500, 375),
        (250_000.0, 500, 500),
        (10_000.0, 100, 100),
    ] {
        for (ours, theirs) in [
            (preba_sim::JpegCore::Vitis, JpegCore::Vitis),
            (preba_sim::JpegCore::CoreJpeg, JpegCore::CoreJpeg),
        ] {
            let c = CycleModel { jpeg: theirs, ..m };
            let want = c.image(&ImageWork {
                width: w,
                height: h,
                samples_per_px: 1.5,
                out_elems: 3 * 224 * 224,
            });
            assert_eq!(card::image_cycles(px, 1.5, 224, ours), want, "{w}x{h}");
        }
    }
    for d in [1.0, 7.4, 35.0] {
        let (samples, frames) = card::audio_frames(d, 16_000, 160);
        let want = m.audio(44 + 2 * samples, 0, frames, 512);
        assert_eq!(card::mel_cycles(d, 16_000, 512, 160), want, "{d} s");
        assert_eq!(
            card::norm_cycles(d, 16_000, 160, 80),
            m.normalize(80, frames)
        );
    }
}

#[test]
fn power_model_matches_the_card() {
    let p = PowerModel::default();
    assert_eq!(p.board_static_w, card::BOARD_STATIC_W);
    assert_eq!(p.core_w, card::CORE_W);
    assert_eq!(p.cu_w(CuKind::Image), card::IMAGE_CU_W);
    assert_eq!(p.cu_w(CuKind::AudioMel), card::AUDIO_CU_W);
    assert_eq!(p.cu_w(CuKind::AudioNorm), card::NORM_CU_W);
}
