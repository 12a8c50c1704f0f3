//! Firmware update over PCIe: pack an ELF into a flash image, download it in chunks, commit it
//! to the slot that is not running, check the CRC the card reads back, activate it,
//! function-reset the card and check that IDENTIFY reports the new build id. When the new
//! image does not come up the card's boot ROM rolls back by itself; this module then names
//! the old slot in the boot record again and says what happened. Also: switching back to the
//! other slot (`rollback`) and a card's boot and slot report (`info`).
#![forbid(unsafe_code)]

use crate::driver::{Card, CardError, DriverConfig};
use crate::error::CardFailure;
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
    t.reset().map_err(|e| e.to_string())?;
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
    let vs = t
        .read32(preba_protocol::regs::VS)
        .map_err(|e| e.to_string())?;
    version_ok(vs).map_err(|e| e.to_string())
}

/// One clear line ([`CardFailure::Version`]) when the major versions differ.
pub fn version_ok(vs: u32) -> Result<(), CardFailure> {
    let (major, minor) = (vs >> 16, vs & 0xffff);
    if major != u32::from(preba_protocol::regs::VERSION_MAJOR) {
        return Err(CardFailure::Version { major, minor });
    }
    Ok(())
}

/// New bytes of the card's log stream (defmt frames) and what was lost on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogChunk {
    /// Stream bytes; after a loss they start at a frame boundary.
    pub bytes: Vec<u8>,
    /// Bytes overwritten before they were read (the reader fell more than a ring behind),
    /// plus the partial frame skipped to resynchronise.
    pub lost: u64,
    /// LOG_HEAD went backwards: the card was reset and its log started again.
    pub restarted: bool,
}

/// A cursor into the card's log ring, read through BAR2 (docs/card-spec.md, "BAR2: the log
/// ring"). LOG_HEAD is read before the bytes (the firmware bumps it after writing them), so
/// no byte past the head is read; LOG_HEAD read again afterwards tells which of the copied
/// bytes the firmware overwrote meanwhile (counted as lost, never shown).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogReader {
    cursor: u32,
}

impl LogReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stream offset of the next byte to read.
    pub fn cursor(&self) -> u32 {
        self.cursor
    }

    /// Everything written since the last call.
    pub fn read(&mut self, t: &dyn Transport) -> Result<LogChunk, String> {
        use preba_protocol::card::{BAR2_LOG_HEAD, BAR2_LOG_RING, BAR2_LOG_SIZE};
        let rd32 = |off: u64| -> Result<u32, String> {
            let mut w = [0u8; 4];
            t.bar2_read(off, &mut w).map_err(|e| e.to_string())?;
            Ok(u32::from_le_bytes(w))
        };
        let head = rd32(BAR2_LOG_HEAD)?;
        let size = rd32(BAR2_LOG_SIZE)?;
        if !size.is_power_of_two() || size > 1 << 20 {
            return Err(format!(
                "BAR2 says the log ring holds {size} bytes: not a ring"
            ));
        }
        let mut out = LogChunk::default();
        // A head far "behind" the cursor is a head that restarted from 0 (a reset).
        if self.cursor.wrapping_sub(head) < 1 << 31 && self.cursor != head {
            out.restarted = true;
            self.cursor = 0;
        }
        let mut avail = head.wrapping_sub(self.cursor);
        if avail > size {
            out.lost = u64::from(avail - size);
            self.cursor = head.wrapping_sub(size);
            avail = size;
        }
        let mut bytes = vec![0u8; avail as usize];
        let mut done = 0usize;
        while done < bytes.len() {
            let pos = self.cursor.wrapping_add(done as u32) & (size - 1);
            let n = (bytes.len() - done).min((size - pos) as usize).min(4096);
            t.bar2_read(BAR2_LOG_RING + u64::from(pos), &mut bytes[done..done + n])
                .map_err(|e| e.to_string())?;
            done += n;
        }
        // Bytes the firmware overwrote while they were copied are lost too.
        let after = rd32(BAR2_LOG_HEAD)?;
        let overrun = after.wrapping_sub(self.cursor).saturating_sub(size) as usize;
        let mut skip = overrun.min(bytes.len());
        out.lost += skip as u64;
        self.cursor = head;
        if out.lost > 0 {
            // Resynchronise at the next frame boundary (after a zero byte).
            let frame = bytes[skip..]
                .iter()
                .position(|&b| b == 0)
                .map_or(bytes.len() - skip, |p| p + 1);
            skip += frame;
            out.lost += frame as u64;
        }
        bytes.drain(..skip);
        out.bytes = bytes;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::DmaMem;
    use crate::transport::{Op, Region, TResult, TransportError};
    use preba_protocol::card::{BAR2_LOG_HEAD, BAR2_LOG_RING, BAR2_LOG_SIZE};
    use std::sync::Mutex;
    use std::time::Duration;

    /// A card that is only a log ring of 64 bytes.
    struct Ring {
        head: Mutex<(u32, [u8; 64])>,
        arena: DmaMem,
    }

    impl Ring {
        fn push(&self, b: &[u8]) {
            let mut g = self.head.lock().unwrap();
            for &x in b {
                let at = (g.0 & 63) as usize;
                g.1[at] = x;
                g.0 = g.0.wrapping_add(1);
            }
        }
    }

    impl Transport for Ring {
        fn name(&self) -> String {
            "ring".into()
        }
        fn bar0_read(&self, off: u64, data: &mut [u8]) -> TResult<()> {
            Err(TransportError::Unsupported {
                card: self.name(),
                op: Op::Read {
                    region: Region::Bar0,
                    off,
                    len: data.len(),
                },
            })
        }
        fn bar0_write(&self, off: u64, data: &[u8]) -> TResult<()> {
            Err(TransportError::Unsupported {
                card: self.name(),
                op: Op::Write {
                    region: Region::Bar0,
                    off,
                    len: data.len(),
                },
            })
        }
        fn bar2_read(&self, off: u64, data: &mut [u8]) -> TResult<()> {
            let g = self.head.lock().unwrap();
            match off {
                BAR2_LOG_HEAD => data.copy_from_slice(&g.0.to_le_bytes()),
                BAR2_LOG_SIZE => data.copy_from_slice(&64u32.to_le_bytes()),
                o => {
                    let at = (o - BAR2_LOG_RING) as usize;
                    data.copy_from_slice(&g.1[at..at + data.len()]);
                }
            }
            Ok(())
        }
        fn arena(&self) -> &DmaMem {
            &self.arena
        }
        fn wait_irq(&self, _: u16, _: Duration) -> TResult<bool> {
            Ok(false)
        }
    }

    #[test]
    fn log_reader_wraps_counts_lost_bytes_and_resyncs() {
        let r = Ring {
            head: Mutex::new((0, [0; 64])),
            arena: DmaMem::new(1 << 20, 0x1000_0000).unwrap(),
        };
        let mut lr = LogReader::new();
        r.push(b"abc\0de\0");
        let c = lr.read(&r).unwrap();
        assert_eq!(
            (c.bytes.as_slice(), c.lost, c.restarted),
            (&b"abc\0de\0"[..], 0, false)
        );
        // 60 more bytes: the ring wraps, nothing lost yet.
        let frames: Vec<u8> = (0..15)
            .flat_map(|i| [b'x', b'y', b'0' + i as u8, 0])
            .collect();
        r.push(&frames);
        let c = lr.read(&r).unwrap();
        assert_eq!((c.bytes, c.lost), (frames.clone(), 0));
        // 100 bytes of 5-byte frames: 36 overwritten, then 4 bytes of a partial frame skipped.
        let frames: Vec<u8> = (0..20)
            .flat_map(|i| [b'f', b'r', b'm', b'a' + i as u8, 0])
            .collect();
        r.push(&frames);
        let c = lr.read(&r).unwrap();
        assert_eq!(c.lost, 36 + 4);
        assert_eq!(c.bytes, frames[40..].to_vec());
        assert_eq!(lr.cursor(), 7 + 60 + 100);
        // The card reset: LOG_HEAD restarts from 0.
        *r.head.lock().unwrap() = (0, [0; 64]);
        r.push(b"new\0");
        let c = lr.read(&r).unwrap();
        assert_eq!((c.bytes.as_slice(), c.restarted), (&b"new\0"[..], true));
    }
}
