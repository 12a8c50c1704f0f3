//! Shared helpers of the card's integration tests: the firmware ELF, fixtures, a booted host.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use preba_card::CardConfig;
use preba_card::harness::{Host, firmware_elf};
use preba_protocol::profile::{AudioNorm, AudioProfile, Dtype, ImageProfile, Layout, Profile};

/// The firmware ELF bytes (built once per test binary). Panics loudly when it cannot be had:
/// the end-to-end tests must fail, not skip, without firmware.
pub fn firmware() -> &'static [u8] {
    static ELF: OnceLock<Vec<u8>> = OnceLock::new();
    ELF.get_or_init(|| {
        let p = firmware_elf().unwrap_or_else(|e| panic!("no firmware ELF: {e}"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    })
}

/// One card at a time per test binary: the CUs run the golden model on host threads, so
/// parallel cards on a small machine would only slow each other down (on the modeled clock a
/// starved card is slower, never wrong; the wall-clock tests need the CPU time).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn config() -> CardConfig {
    CardConfig {
        image_cus: 2,
        audio_cus: 1,
        norm_cus: 1,
        workers: 2,
        ..CardConfig::default()
    }
}

pub const IMG_U8: u8 = 0;
pub const IMG_F32: u8 = 1;
pub const AUDIO_NORM: u8 = 2;
pub const AUDIO_RAW: u8 = 3;

pub fn img_u8() -> ImageProfile {
    ImageProfile::default()
}

pub fn img_f32() -> ImageProfile {
    ImageProfile {
        normalize: true,
        dtype: Dtype::F32,
        layout: Layout::Nhwc,
        ..ImageProfile::default()
    }
}

pub fn audio(norm: AudioNorm) -> AudioProfile {
    AudioProfile {
        norm,
        ..AudioProfile::default()
    }
}

/// Waits for the boot banner on the UART (bounded).
pub fn wait_boot(h: &Host) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let u = String::from_utf8_lossy(&h.card.uart()).into_owned();
        if u.contains("serving queues") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "firmware did not report 'serving queues' within 20 s; UART so far:\n{u}\ncore {:?}",
            h.card.core_state()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A card running the firmware, admin queue enabled, profiles set, I/O queues 1 and 2.
pub fn booted(config: CardConfig) -> Host {
    let mut h = Host::new(config, firmware()).expect("card");
    wait_boot(&h);
    h.enable(32).expect("enable");
    h.set_profile(IMG_U8, &Profile::Image(img_u8()))
        .expect("profile 0");
    h.set_profile(IMG_F32, &Profile::Image(img_f32()))
        .expect("profile 1");
    h.set_profile(AUDIO_NORM, &Profile::Audio(audio(AudioNorm::PerFeature)))
        .expect("profile 2");
    h.set_profile(AUDIO_RAW, &Profile::Audio(audio(AudioNorm::None)))
        .expect("profile 3");
    h.create_io_queue(1, 64, 1).expect("queue 1");
    h.create_io_queue(2, 64, 2).expect("queue 2");
    h
}

/// Image fixture names from fixtures/golden/images/index.json.
pub fn image_fixtures() -> Vec<(String, Vec<u8>)> {
    let idx: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("fixtures/golden/images/index.json")).expect("image index"),
    )
    .expect("image index json");
    let files = idx["files"].as_object().expect("files");
    files
        .keys()
        .map(|k| {
            let b = std::fs::read(root().join("fixtures/images").join(k))
                .unwrap_or_else(|e| panic!("{k}: {e}"));
            (k.clone(), b)
        })
        .collect()
}

/// Audio fixtures from fixtures/golden/audio/index.json.
pub fn audio_fixtures() -> Vec<(String, Vec<u8>)> {
    let idx: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("fixtures/golden/audio/index.json")).expect("audio index"),
    )
    .expect("audio index json");
    idx["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            let p = f["file"].as_str().expect("file");
            (
                p.to_string(),
                std::fs::read(root().join(p)).unwrap_or_else(|e| panic!("{p}: {e}")),
            )
        })
        .collect()
}
