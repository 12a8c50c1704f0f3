//! Firmware update over PCIe: pack an ELF into a flash image, download it in chunks, commit it
//! to the slot that is not running, check the CRC the card reads back, activate it,
//! function-reset the card and check that IDENTIFY reports the new build id. When the new
//! image does not come up the card's boot ROM rolls back by itself; this module then names
//! the old slot in the boot record again and says what happened. Also: switching back to the
//! other slot (`rollback`) and a card's boot and slot report (`info`).
#![forbid(unsafe_code)]

use crate::driver::{Card, CardError, DriverConfig};
use crate::transport::{Regs, Transport};
use preba_protocol::admin::{AdminOpcode, Identify, MAX_ADMIN_DATA};
use preba_protocol::fwimage::{self, BootOutcome, SlotState};
use preba_protocol::status::Status;
use std::path::Path;
use std::sync::Arc;

/// A firmware image ready to flash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The packed image (ELF header, program headers, loadable bytes).
    pub bytes: Vec<u8>,
    pub build_id: u64,
    pub crc: u32,
}

impl Image {
    /// Packs a firmware ELF. Refuses what is not an ELF for the soft core, what does not fit
    /// a slot, and an ELF without a build id (not a preba firmware).
    pub fn from_elf(elf: &[u8]) -> Result<Image, String> {
        let mut buf = vec![0u8; fwimage::IMAGE_MAX as usize];
        let n = fwimage::pack(elf, &mut buf).map_err(|e| format!("not a flashable image: {e}"))?;
        buf.truncate(n);
        let build_id = fwimage::build_id(&buf).ok_or(
            "no build id in the image (not a preba firmware ELF? build it with cargo xtask build-fw)",
        )?;
        Ok(Image {
            crc: crc32fast::hash(&buf),
            bytes: buf,
            build_id,
        })
    }

    /// Reads and packs an ELF file; errors name the file.
    pub fn load(path: &Path) -> Result<Image, String> {
        let elf = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Image::from_elf(&elf).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The protocol version this host speaks, as "major.minor".
pub fn host_version() -> String {
    format!(
        "{}.{}",
        preba_protocol::regs::VERSION_MAJOR,
        preba_protocol::regs::VERSION_MINOR
    )
}

/// What `preba card info` shows about the firmware.
pub fn describe(id: &Identify) -> Vec<String> {
    let outcome = BootOutcome::from_u8(id.boot_outcome).map_or_else(
        || format!("unknown ({})", id.boot_outcome),
        |o| o.describe().into(),
    );
    let mut v = vec![
        format!(
            "protocol           {}.{} (host {})",
            id.version_major,
            id.version_minor,
            host_version()
        ),
        format!(
            "running            slot {} build {:016x}",
            fwimage::slot_name(id.running_slot),
            id.fw_build_id
        ),
        format!("last boot          {outcome}"),
    ];
    if id.failed_slot != fwimage::SLOT_NONE {
        v.push(format!(
            "passed over        slot {}",
            fwimage::slot_name(id.failed_slot)
        ));
    }
    v.push(format!(
        "boot record        slot {}",
        fwimage::slot_name(id.active_slot)
    ));
    for s in [fwimage::SLOT_A, fwimage::SLOT_B] {
        let i = usize::from(s);
        let state = SlotState::from_u8(id.slot_state[i]).map_or("unknown", |st| st.name());
        let build = if matches!(
            SlotState::from_u8(id.slot_state[i]),
            Some(SlotState::New | SlotState::Good | SlotState::Bad)
        ) {
            format!(" build {:016x}", id.slot_build_id[i])
        } else {
            String::new()
        };
        v.push(format!(
            "slot {}             {state}{build}",
            fwimage::slot_name(s)
        ));
    }
    v
}

/// Steps of a flash, for progress output.
pub trait Report {
    /// `done` of `total` bytes downloaded.
    fn download(&mut self, done: usize, total: usize);
    /// One line about a finished step.
    fn step(&mut self, line: &str);
}

/// A report that says nothing.
pub struct Quiet;

impl Report for Quiet {
    fn download(&mut self, _: usize, _: usize) {}
    fn step(&mut self, _: &str) {}
}

/// What a successful flash did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flashed {
    pub slot: u8,
    pub old_build_id: u64,
    pub new: Identify,
    /// Download + commit + activate + reset + identify.
    pub elapsed: std::time::Duration,
}

fn card_err(e: CardError) -> String {
    e.to_string()
}

fn status_err(op: &str, e: CardError) -> String {
    match e {
        CardError::Status { status, cqe } => format!(
            "{op}: card status {} (result0 {:#x}, result1 {:#x})",
            status.name(),
            cqe.result0,
            cqe.result1
        ),
        e => format!("{op}: {e}"),
    }
}

impl Card {
    /// Downloads `image` into the card's staging area, 4 KiB per command.
    pub fn firmware_download(&self, image: &[u8], r: &mut dyn Report) -> Result<(), String> {
        let chunk = MAX_ADMIN_DATA as usize;
        for (k, c) in image.chunks(chunk).enumerate() {
            self.admin(
                AdminOpcode::FirmwareDownload,
                [(k * chunk) as u32, 0, 0, 0, 0, 0],
                Some(c),
            )
            .map_err(|e| status_err("FIRMWARE_DOWNLOAD", e))?;
            r.download((k * chunk + c.len()).min(image.len()), image.len());
        }
        Ok(())
    }

    /// Commits the staged image: (CRC-32 read back from flash, slot written).
    pub fn firmware_commit(&self, len: u32, crc: u32, build_id: u64) -> Result<(u32, u8), String> {
        let c = self
            .admin(
                AdminOpcode::FirmwareCommit,
                [len, crc, build_id as u32, (build_id >> 32) as u32, 0, 0],
                None,
            )
            .map_err(|e| status_err("FIRMWARE_COMMIT", e))?;
        Ok((c.result0, c.result1 as u8))
    }

    /// Names `slot` in the boot record (it boots after the next reset).
    pub fn firmware_activate(&self, slot: u8) -> Result<(), String> {
        match self.admin(
            AdminOpcode::FirmwareActivate,
            [u32::from(slot), 0, 0, 0, 0, 0],
            None,
        ) {
            Ok(_) => Ok(()),
            Err(CardError::Status {
                status: Status::InvalidField,
                cqe,
            }) => Err(format!(
                "slot {} cannot boot: it is {}",
                fwimage::slot_name(slot),
                SlotState::from_u8(cqe.result1 as u8).map_or("unknown", |s| s.name())
            )),
            Err(e) => Err(status_err("FIRMWARE_ACTIVATE", e)),
        }
    }
}

/// Function-resets the card behind `t` and opens it again.
pub fn reset_and_open(t: &Arc<dyn Transport>, cfg: &DriverConfig) -> Result<Card, String> {
    t.reset().map_err(|e| format!("function reset: {e}"))?;
    Card::open(t.clone(), cfg.clone()).map_err(card_err)
}

/// Flashes `image` onto the card `card` (opened on `t`), activates it, resets the card and
/// checks the new build id runs. On failure the card is left on the image it ran before
/// (the boot ROM rolls back; the boot record is pointed back at the old slot) and the error
/// says what happened.
pub fn flash(
    card: Card,
    t: &Arc<dyn Transport>,
    cfg: &DriverConfig,
    image: &Image,
    r: &mut dyn Report,
) -> Result<Flashed, String> {
    let start = std::time::Instant::now();
    let old = *card.identify();
    card.firmware_download(&image.bytes, r)?;
    let (back, slot) = card.firmware_commit(image.bytes.len() as u32, image.crc, image.build_id)?;
    if back != image.crc {
        return Err(format!(
            "slot {} reads back CRC {back:08x}, the image has {:08x}: not activated, the card \
             stays on build {:016x}",
            fwimage::slot_name(slot),
            image.crc,
            old.fw_build_id
        ));
    }
    r.step(&format!(
        "committed to slot {} (CRC {back:08x} read back)",
        fwimage::slot_name(slot)
    ));
    card.firmware_activate(slot)?;
    r.step(&format!(
        "slot {} active; resetting the card",
        fwimage::slot_name(slot)
    ));
    drop(card);
    let card = reset_and_open(t, cfg).map_err(|e| {
        format!(
            "the card did not come back after the reset: {e} (its boot ROM rolls back to slot {} \
             by itself after {} failed attempts)",
            fwimage::slot_name(old.running_slot),
            fwimage::BOOT_ATTEMPTS
        )
    })?;
    let new = *card.identify();
    if new.fw_build_id == image.build_id && new.running_slot == slot {
        return Ok(Flashed {
            slot,
            old_build_id: old.fw_build_id,
            new,
            elapsed: start.elapsed(),
        });
    }
    let why =
        BootOutcome::from_u8(new.boot_outcome).map_or("unknown boot outcome", |o| o.describe());
    // Point the boot record back at what runs, so the next boot is a plain one.
    let restore = if new.running_slot <= fwimage::SLOT_B && new.active_slot != new.running_slot {
        card.firmware_activate(new.running_slot)
            .map(|()| {
                format!(
                    "; slot {} is active again",
                    fwimage::slot_name(new.running_slot)
                )
            })
            .unwrap_or_else(|e| format!("; could not reactivate it: {e}"))
    } else {
        String::new()
    };
    Err(format!(
        "the new image (build {:016x}, slot {}) did not come up: {why}; the card runs build \
         {:016x} from slot {}{restore}",
        image.build_id,
        fwimage::slot_name(slot),
        new.fw_build_id,
        fwimage::slot_name(new.running_slot),
    ))
}

/// Switches to the other slot (the image that ran before the last flash), resets the card
/// and checks it runs. Returns the new IDENTIFY.
pub fn rollback(
    card: Card,
    t: &Arc<dyn Transport>,
    cfg: &DriverConfig,
) -> Result<Identify, String> {
    let id = *card.identify();
    let other = match id.running_slot {
        fwimage::SLOT_A => fwimage::SLOT_B,
        fwimage::SLOT_B => fwimage::SLOT_A,
        _ => id.active_slot,
    };
    card.firmware_activate(other)
        .map_err(|e| format!("cannot roll back: {e}"))?;
    let want = id.slot_build_id[usize::from(other)];
    drop(card);
    let card = reset_and_open(t, cfg)?;
    let new = *card.identify();
    if new.running_slot != other || new.fw_build_id != want {
        let why = BootOutcome::from_u8(new.boot_outcome).map_or("unknown", |o| o.describe());
        return Err(format!(
            "rollback to slot {} (build {want:016x}) did not take: {why}; the card runs build \
             {:016x} from slot {}",
            fwimage::slot_name(other),
            new.fw_build_id,
            fwimage::slot_name(new.running_slot)
        ));
    }
    Ok(new)
}

/// The version handshake before anything else: the card's VS register against ours.
pub fn check_version(t: &dyn Transport) -> Result<(), String> {
    let vs = t.read32(preba_protocol::regs::VS).map_err(|e| e.0)?;
    version_ok(vs)
}

/// One clear line when the major versions differ.
pub fn version_ok(vs: u32) -> Result<(), String> {
    let (major, minor) = (vs >> 16, vs & 0xffff);
    if major != u32::from(preba_protocol::regs::VERSION_MAJOR) {
        return Err(format!(
            "card speaks protocol {major}.{minor}, this preba speaks {}: major versions differ, \
             refusing the card",
            host_version()
        ));
    }
    Ok(())
}
