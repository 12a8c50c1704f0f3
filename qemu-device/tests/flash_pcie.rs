//! Firmware update over PCIe, end to end: `preba-card --flash FILE` behind vfio-user, the host
//! driver's flash API (download, commit, CRC read back, activate, function reset, IDENTIFY).
//! Image B with another build id runs after the flash; a broken image (valid CRC, crashes in
//! init) makes the card roll back by itself and the flash fails saying why; restarting
//! preba-card on the same flash file (a power cycle) keeps the active image.

mod common;

use common::*;
use preba_card::harness::{firmware_elf, firmware_variant_elf};
use preba_host::driver::{Card, DriverConfig};
use preba_host::firmware::{self, Image, Quiet};
use preba_host::transport::Transport;
use preba_host::vfio_user::{Emulated, connect_retry};
use preba_protocol::fwimage::{BootOutcome, SLOT_A, SLOT_B, SlotState};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn cfg() -> DriverConfig {
    DriverConfig {
        arena_bytes: 16 << 20,
        admin_timeout: Duration::from_secs(30),
        ..DriverConfig::default()
    }
}

/// Starts preba-card on `flash` and opens it.
fn start(fw: &Path, flash: &Path) -> (Emulated, Arc<dyn Transport>, Card) {
    let bin = Path::new(env!("CARGO_BIN_EXE_preba-card"));
    let em = Emulated::spawn(bin, fw, Some(flash)).expect("preba-card starts");
    let t: Arc<dyn Transport> = Arc::new(
        connect_retry(
            em.socket(),
            "flash-test".into(),
            cfg().arena_bytes,
            Duration::from_secs(10),
        )
        .expect("connect"),
    );
    let card =
        Card::open(t.clone(), cfg()).unwrap_or_else(|e| panic!("open: {e}{}", em.log_tail()));
    (em, t, card)
}

#[test]
fn flash_over_vfio_user_rollback_and_power_cycle() {
    let _serial = serial();
    let main = firmware_elf().expect("firmware");
    let b = Image::load(&firmware_variant_elf("b", &[]).expect("variant b")).expect("image b");
    let crash = Image::load(
        &firmware_variant_elf("crash", &["test-crash-in-init"]).expect("crash variant"),
    )
    .expect("crash image");
    let main_img = Image::load(&main).expect("main image");
    assert_ne!(b.build_id, main_img.build_id);
    let dir = std::env::temp_dir().join(format!("preba-flash-pcie-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let flash_file = dir.join("flash.bin");
    let _ = std::fs::remove_file(&flash_file);

    let (em, t, card) = start(&main, &flash_file);
    let id = *card.identify();
    assert_eq!(
        (id.running_slot, id.fw_build_id),
        (SLOT_A, main_img.build_id)
    );

    // Image B: downloaded, committed to slot B, activated; after the reset it runs.
    let f = firmware::flash(card, &t, &cfg(), &b, &mut Quiet).expect("flash B");
    assert_eq!(
        (f.slot, f.new.fw_build_id, f.new.running_slot),
        (SLOT_B, b.build_id, SLOT_B)
    );
    assert_eq!(f.old_build_id, main_img.build_id);
    eprintln!(
        "flashed {} bytes over vfio-user in {:.2} s (download, commit, verify, activate, reset)",
        b.bytes.len(),
        f.elapsed.as_secs_f64()
    );

    // The broken image goes to slot A; the card tries it, rolls back to B by itself, and the
    // flash fails naming why; the boot record names B again.
    let card = Card::open(t.clone(), cfg()).expect("open");
    let e = firmware::flash(card, &t, &cfg(), &crash, &mut Quiet).expect_err("broken image");
    assert!(
        e.contains("did not come up") && e.contains("crashed during init"),
        "{e}"
    );
    assert!(e.contains("slot B is active again"), "{e}");
    let card = Card::open(t.clone(), cfg()).expect("open after rollback");
    let id = *card.identify();
    assert_eq!((id.running_slot, id.fw_build_id), (SLOT_B, b.build_id));
    assert_eq!(
        (id.boot_outcome, id.failed_slot, id.active_slot),
        (BootOutcome::RolledBackCrash as u8, SLOT_A, SLOT_B)
    );
    assert_eq!(id.slot_state, [SlotState::Bad as u8, SlotState::Good as u8]);
    // Rolling back onto the bad slot is refused.
    let e = firmware::rollback(card, &t, &cfg()).expect_err("slot A is bad");
    assert!(e.contains("slot A cannot boot: it is bad"), "{e}");
    drop(t);
    drop(em);

    // Power cycle: a new preba-card on the same flash file boots slot B.
    let (em, t, card) = start(&main, &flash_file);
    let id = *card.identify();
    assert_eq!(
        (id.running_slot, id.fw_build_id, id.boot_outcome),
        (SLOT_B, b.build_id, BootOutcome::Active as u8),
        "{}",
        em.log_tail()
    );
    // Main into slot A again, then roll back to B with the API.
    let f = firmware::flash(card, &t, &cfg(), &main_img, &mut Quiet).expect("flash main to A");
    assert_eq!((f.slot, f.new.fw_build_id), (SLOT_A, main_img.build_id));
    let card = Card::open(t.clone(), cfg()).expect("open");
    let id = firmware::rollback(card, &t, &cfg()).expect("rollback to B");
    assert_eq!((id.running_slot, id.fw_build_id), (SLOT_B, b.build_id));
    drop(t);
    drop(em);
    let _ = std::fs::remove_dir_all(&dir);
}
