//! The card's boot ROM: at every reset it reads the boot record and the slot headers in SPI
//! flash (`preba_protocol::fwimage`) and picks the image the core runs. A slot that has not
//! yet reached CSTS.RDY is watched by the core thread (`card.rs`): a failed attempt (the core
//! stopped, or no RDY within the deadline after CC.EN) reboots, and after
//! `BOOT_ATTEMPTS` failed attempts the slot is marked bad and the other slot boots.

use preba_protocol::fwimage::{
    self, BOOT_ATTEMPTS, BootOutcome, BootRecord, HEADER_SIZE, RECORD_SIZE, SLOT_A, SLOT_B,
    SLOT_NONE, SlotHeader, SlotState,
};

use crate::flash::{Flash, crc32};

/// Why a watched boot attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The core stopped (trap, panic, power-off) before CSTS.RDY.
    Crash,
    /// No CSTS.RDY within the deadline after CC.EN.
    Timeout,
}

/// What the boot ROM decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The packed image to load; None: the recovery image (the ELF the card was built with).
    pub image: Option<Vec<u8>>,
    /// The slot booted (`SLOT_NONE` for recovery).
    pub slot: u8,
    pub outcome: BootOutcome,
    /// The slot that was passed over (`SLOT_NONE`: none).
    pub failed: u8,
    /// The slot the boot record names.
    pub active: u8,
    /// The slot has not reached CSTS.RDY yet: the core thread watches this attempt.
    pub watch: bool,
}

impl Choice {
    /// INFO_BOOT as the firmware reads it.
    pub fn info(&self) -> u32 {
        fwimage::info_boot(self.slot, self.outcome, self.failed, self.active)
    }
}

fn header(flash: &Flash, slot: u8) -> Result<SlotHeader, SlotState> {
    let base = fwimage::SLOT_BASE[usize::from(slot)] as usize;
    let b: [u8; HEADER_SIZE] = flash
        .contents()
        .get(base..base + HEADER_SIZE)
        .and_then(|s| s.try_into().ok())
        .ok_or(SlotState::Empty)?;
    SlotHeader::parse(&b)
}

/// The slot's image when its header and CRC are valid and it loads as an ELF.
fn image(flash: &Flash, slot: u8, h: &SlotHeader) -> Option<Vec<u8>> {
    let start = (fwimage::SLOT_BASE[usize::from(slot)] + fwimage::IMAGE_OFFSET) as usize;
    let img = flash.contents().get(start..start + h.len as usize)?;
    (crc32(img) == h.crc && preba_softcore::elf::parse(img).is_ok()).then(|| img.to_vec())
}

fn word_addr(slot: u8, off: u32) -> usize {
    (fwimage::SLOT_BASE[usize::from(slot)] + off) as usize
}

/// The boot record's active slot (slot A when the record is erased or damaged).
pub fn active_slot(flash: &Flash) -> u8 {
    let b: Option<[u8; RECORD_SIZE]> = flash
        .contents()
        .get(..RECORD_SIZE)
        .and_then(|s| s.try_into().ok());
    b.and_then(|b| BootRecord::parse(&b))
        .map_or(SLOT_A, |r| r.active)
}

/// Picks the image for this reset. `last` is the watched attempt that just failed, if any
/// (it names the reason when the slot runs out of attempts).
pub fn select(flash: &mut Flash, last: Option<Failure>) -> Choice {
    let active = active_slot(flash);
    let other = if active == SLOT_A { SLOT_B } else { SLOT_A };
    let mut outcome = BootOutcome::Active;
    let mut failed = SLOT_NONE;
    for slot in [active, other] {
        let passed_over = match header(flash, slot) {
            Err(_) => BootOutcome::ActiveInvalid,
            Ok(h) if h.state() == SlotState::Bad => BootOutcome::ActiveBad,
            Ok(h) if h.state() == SlotState::New && h.attempts() >= BOOT_ATTEMPTS => {
                flash.program_word(word_addr(slot, fwimage::HEADER_STATE), fwimage::STATE_BAD);
                match last {
                    Some(Failure::Crash) => BootOutcome::RolledBackCrash,
                    Some(Failure::Timeout) => BootOutcome::RolledBackTimeout,
                    None => BootOutcome::ActiveBad,
                }
            }
            Ok(h) => match image(flash, slot, &h) {
                None => BootOutcome::ActiveInvalid,
                Some(img) => {
                    let watch = h.state() == SlotState::New;
                    if watch {
                        flash.program_word(
                            word_addr(slot, fwimage::HEADER_ATTEMPTS),
                            h.next_attempts_word(),
                        );
                    }
                    return Choice {
                        image: Some(img),
                        slot,
                        outcome,
                        failed,
                        active,
                        watch,
                    };
                }
            },
        };
        if slot == active {
            outcome = passed_over;
            failed = slot;
        }
    }
    Choice {
        image: None,
        slot: SLOT_NONE,
        outcome: BootOutcome::Recovery,
        failed,
        active,
        watch: false,
    }
}

/// The slot came up (CSTS.RDY): it is good from now on.
pub fn confirm(flash: &mut Flash, slot: u8) {
    if slot <= SLOT_B {
        flash.program_word(word_addr(slot, fwimage::HEADER_STATE), fwimage::STATE_GOOD);
    }
}

/// Factory programming: `elf` packed into slot A, marked good (a factory image is trusted),
/// and a boot record naming slot A. False when the ELF cannot be packed (the card then boots
/// it as its recovery image).
pub fn factory_program(flash: &mut Flash, elf: &[u8]) -> bool {
    let mut buf = vec![0u8; fwimage::IMAGE_MAX as usize];
    let Ok(n) = fwimage::pack(elf, &mut buf) else {
        return false;
    };
    let img = &buf[..n];
    let mut h = SlotHeader::new(
        n as u32,
        crc32(img),
        fwimage::build_id(img).unwrap_or(0),
        u32::from(preba_protocol::regs::VERSION_MAJOR) << 16
            | u32::from(preba_protocol::regs::VERSION_MINOR),
    );
    h.state_word = fwimage::STATE_GOOD;
    let base = fwimage::SLOT_BASE[0] as usize;
    let size = fwimage::SLOT_SIZE as usize;
    let erased = vec![0xFF; size];
    flash.load(base, &erased);
    flash.load(base + fwimage::IMAGE_OFFSET as usize, img);
    flash.load(base, &h.encode());
    let mut rec = [0xFFu8; 4096];
    rec[..RECORD_SIZE].copy_from_slice(
        &BootRecord {
            active: SLOT_A,
            seq: 0,
        }
        .encode(),
    );
    flash.load(fwimage::BOOT_RECORD as usize, &rec);
    true
}

/// Whether the flash holds any slot with a header (a board that was programmed before).
pub fn has_slots(flash: &Flash) -> bool {
    [SLOT_A, SLOT_B].iter().any(|&s| header(flash, s).is_ok())
}
