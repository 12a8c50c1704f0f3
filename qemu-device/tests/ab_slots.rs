//! A/B firmware slots on the in-process card: flash a second image, activate, reset, run it;
//! a broken image (valid CRC, crashes in init) rolls back by itself; the flash file survives
//! a power cycle.

mod common;

use common::*;
use preba_card::flash::crc32;
use preba_card::harness::{Host, firmware_variant_elf};
use preba_card::{Card, CardConfig, NoIrq, TestMemory};
use preba_protocol::admin::{AdminOpcode, AdminSqe, Identify, MAX_ADMIN_DATA};
use preba_protocol::fwimage::{self, BootOutcome, SLOT_A, SLOT_B, SlotState};
use std::sync::Arc;

fn pack(elf: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; fwimage::IMAGE_MAX as usize];
    let n = fwimage::pack(elf, &mut buf).expect("packs");
    buf.truncate(n);
    buf
}

/// Downloads, commits and activates `elf`; returns (slot written, build id).
fn flash(h: &mut Host, elf: &[u8]) -> (u8, u64) {
    let img = pack(elf);
    let id = fwimage::build_id(&img).expect("build id in the image");
    for (k, c) in img.chunks(MAX_ADMIN_DATA as usize).enumerate() {
        let buf = h.put(c).expect("put");
        h.admin(AdminSqe {
            opcode: AdminOpcode::FirmwareDownload as u8,
            data_iova: buf,
            data_len: c.len() as u32,
            cdw: [(k * MAX_ADMIN_DATA as usize) as u32, 0, 0, 0, 0, 0],
            ..AdminSqe::default()
        })
        .expect("download");
    }
    let crc = crc32(&img);
    let c = h
        .admin(AdminSqe {
            opcode: AdminOpcode::FirmwareCommit as u8,
            cdw: [img.len() as u32, crc, id as u32, (id >> 32) as u32, 0, 0],
            ..AdminSqe::default()
        })
        .expect("commit");
    assert_eq!(c.result0, crc, "CRC read back from flash");
    let slot = c.result1 as u8;
    h.admin(AdminSqe {
        opcode: AdminOpcode::FirmwareActivate as u8,
        cdw: [u32::from(slot), 0, 0, 0, 0, 0],
        ..AdminSqe::default()
    })
    .expect("activate");
    (slot, id)
}

fn reboot(h: &mut Host) -> Identify {
    h.function_reset().expect("reset");
    h.enable(8).expect("enable after reset");
    h.identify().expect("identify")
}

/// Waits until the boot ROM marked `slot` good (it does so once it sees CSTS.RDY).
fn wait_good(h: &Host, slot: u8) {
    let base = fwimage::SLOT_BASE[usize::from(slot)] as usize;
    h.wait_for("slot confirmed good", |c| {
        let f = c.flash();
        let b: [u8; fwimage::HEADER_SIZE] = f[base..base + fwimage::HEADER_SIZE]
            .try_into()
            .expect("size");
        fwimage::SlotHeader::parse(&b).is_ok_and(|h| h.state() == SlotState::Good)
    })
    .expect("confirmed");
}

#[test]
fn flash_b_then_broken_image_rolls_back_and_power_cycle_keeps_it() {
    let _serial = serial();
    let main = firmware();
    let b = std::fs::read(firmware_variant_elf("b", &[]).expect("variant b")).expect("read b");
    let crash = std::fs::read(
        firmware_variant_elf("crash", &["test-crash-in-init"]).expect("crash variant"),
    )
    .expect("read crash");
    let dir = std::env::temp_dir().join(format!("preba-ab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let flash_file = dir.join("flash.bin");
    let _ = std::fs::remove_file(&flash_file);
    let cfg = CardConfig {
        flash_file: Some(flash_file.clone()),
        ..config()
    };

    let mut h = Host::new(cfg.clone(), main).expect("card");
    h.enable(8).expect("enable");
    let id = h.identify().expect("identify");
    let main_id = id.fw_build_id;
    assert_eq!(
        (id.running_slot, id.boot_outcome, id.active_slot),
        (SLOT_A, BootOutcome::Active as u8, SLOT_A)
    );
    assert_eq!(
        id.slot_state,
        [SlotState::Good as u8, SlotState::Empty as u8],
        "factory image in A, B empty"
    );
    assert_eq!(fwimage::build_id(&pack(main)), Some(main_id));

    // Image B: another build id, into slot B, activated, runs after a reset.
    let (slot, b_id) = flash(&mut h, &b);
    assert_eq!(slot, SLOT_B);
    assert_ne!(b_id, main_id);
    let id = reboot(&mut h);
    assert_eq!(
        (id.fw_build_id, id.running_slot, id.boot_outcome),
        (b_id, SLOT_B, BootOutcome::Active as u8)
    );
    wait_good(&h, SLOT_B);

    // A broken image (valid header and CRC, panics in init) goes to slot A; after the reset
    // the boot ROM tries it twice, marks it bad and boots B again, by itself.
    let (slot, crash_id) = flash(&mut h, &crash);
    assert_eq!(slot, SLOT_A);
    let id = reboot(&mut h);
    assert_eq!(
        (id.fw_build_id, id.running_slot),
        (b_id, SLOT_B),
        "rolled back to B"
    );
    assert_eq!(
        (id.boot_outcome, id.failed_slot, id.active_slot),
        (BootOutcome::RolledBackCrash as u8, SLOT_A, SLOT_A)
    );
    assert_eq!(id.slot_state[0], SlotState::Bad as u8);
    assert_eq!(id.slot_build_id[0], crash_id);
    assert_eq!(h.card.boot().1, Some(BootOutcome::RolledBackCrash));
    // A bad slot cannot be activated again.
    let c = h
        .admin_raw(AdminSqe {
            opcode: AdminOpcode::FirmwareActivate as u8,
            cdw: [u32::from(SLOT_A), 0, 0, 0, 0, 0],
            ..AdminSqe::default()
        })
        .expect("activate A");
    assert_eq!(c.result1, SlotState::Bad as u32);
    drop(h);

    // Power cycle: a new card on the same flash file boots B (A is marked bad).
    let mem = Arc::new(TestMemory::new());
    let card = Card::new(cfg.clone(), main, mem, Arc::new(NoIrq)).expect("card again");
    let (slot, outcome, failed) = card.boot();
    assert_eq!(
        (slot, outcome, failed),
        (SLOT_B, Some(BootOutcome::ActiveBad), SLOT_A)
    );
    drop(card);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An ELF whose code spins forever at the IMEM base (`j .`): it never sets CSTS.RDY.
fn spinning_elf() -> Vec<u8> {
    let mut e = vec![0u8; 0x100];
    let put16 = |e: &mut Vec<u8>, o: usize, v: u16| e[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |e: &mut Vec<u8>, o: usize, v: u32| e[o..o + 4].copy_from_slice(&v.to_le_bytes());
    e[0..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0]);
    put16(&mut e, 16, 2);
    put16(&mut e, 18, 243);
    put32(&mut e, 20, 1);
    put32(&mut e, 24, preba_protocol::card::IMEM_BASE);
    put32(&mut e, 28, 52);
    put16(&mut e, 40, 52);
    put16(&mut e, 42, 32);
    put16(&mut e, 44, 1);
    put32(&mut e, 52, 1);
    put32(&mut e, 56, 0x100);
    put32(&mut e, 60, preba_protocol::card::IMEM_BASE);
    put32(&mut e, 64, preba_protocol::card::IMEM_BASE);
    put32(&mut e, 68, 4);
    put32(&mut e, 72, 4);
    put32(&mut e, 76, 5);
    e.extend(0x0000_006fu32.to_le_bytes());
    e
}

/// A new image that never becomes ready after CC.EN: the boot ROM gives it `boot_deadline`
/// per attempt, marks it bad after two, and the good slot comes up within the host's wait.
#[test]
fn image_that_never_becomes_ready_rolls_back_on_timeout() {
    let _serial = serial();
    let main = firmware();
    let dir = std::env::temp_dir().join(format!("preba-ab-timeout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let flash_file = dir.join("flash.bin");
    let _ = std::fs::remove_file(&flash_file);
    let cfg = CardConfig {
        flash_file: Some(flash_file.clone()),
        boot_deadline: std::time::Duration::from_millis(300),
        ..config()
    };
    // Factory programming (slot A), then slot B and the boot record written as the firmware
    // would: a packed spinning image, activated.
    drop(Host::new(cfg.clone(), main).expect("card"));
    let mut f = std::fs::read(&flash_file).expect("flash file");
    let img = pack(&spinning_elf());
    let crc = crc32(&img);
    let h = fwimage::SlotHeader::new(img.len() as u32, crc, 0x5917, 0x1_0001);
    let base = fwimage::SLOT_BASE[1] as usize;
    f[base..base + fwimage::HEADER_SIZE].copy_from_slice(&h.encode());
    let at = base + fwimage::IMAGE_OFFSET as usize;
    f[at..at + img.len()].copy_from_slice(&img);
    let rec = fwimage::BootRecord {
        active: SLOT_B,
        seq: 1,
    }
    .encode();
    f[..rec.len()].copy_from_slice(&rec);
    std::fs::write(&flash_file, &f).expect("write flash file");

    let mut h = Host::new(cfg, main).expect("card on slot B");
    assert_eq!(h.card.boot().0, SLOT_B, "boots the new slot first");
    let t0 = std::time::Instant::now();
    h.enable(8)
        .expect("enable: slot A comes up after the rollback");
    let id = h.identify().expect("identify");
    assert_eq!(
        (id.running_slot, id.boot_outcome, id.failed_slot),
        (SLOT_A, BootOutcome::RolledBackTimeout as u8, SLOT_B)
    );
    assert_eq!(id.slot_state[1], SlotState::Bad as u8);
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(600),
        "two attempts of 300 ms each: {:?}",
        t0.elapsed()
    );
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}
