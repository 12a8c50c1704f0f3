//! The admin queue: every command of docs/card-spec.md, run to completion
//! one at a time (each bounded by its DMA and bus deadlines).

use crate::Platform;
use crate::crc::Crc32;
use crate::drivers::ina226::Ina226;
use crate::drivers::spi_nor::{self, SpiNor};
use crate::fw::{ADMIN_BOUNCE, FW_MAX, FW_STAGING, Firmware, MAX_IO_QUEUES, MAX_REQ, Queue, Stage};
use crate::hal::{PlatI2c, PlatSpi};
use crate::hw;
use preba_protocol::admin::{
    self, AdminOpcode, AdminSqe, IDENTIFY_SIZE, Identify, PROFILE_SIZE, TELEMETRY_SIZE, Telemetry,
};
use preba_protocol::card;
use preba_protocol::fwimage::{self, BootRecord, SlotHeader, SlotState};
use preba_protocol::io::{Cqe, SQE_SIZE};
use preba_protocol::limits;
use preba_protocol::regs::{self, QueueFault};
use preba_protocol::ring::{self, CqProducer, SqConsumer};
use preba_protocol::status::Status;

/// Most admin commands run per poll.
const ADMIN_PER_POLL: usize = 4;

/// What an admin command answers.
struct Answer {
    status: Status,
    result0: u32,
    result1: u32,
}

const fn ok(result0: u32, result1: u32) -> Result<Answer, Status> {
    Ok(Answer {
        status: Status::Success,
        result0,
        result1,
    })
}

impl<P: Platform> Firmware<P> {
    pub(crate) fn admin_step(&mut self) -> bool {
        let mut progress = false;
        for _ in 0..ADMIN_PER_POLL {
            let Some(q) = self.admin.as_mut() else { break };
            if q.stopped || q.sq.pending() == 0 || q.cq.free() == 0 {
                break;
            }
            let slot = q.sq.pop().expect("pending");
            let src = q.sq_base + slot as u64 * SQE_SIZE as u64;
            progress = true;
            if hw::dma(&mut self.p, src, ADMIN_BOUNCE, SQE_SIZE as u32, false).is_err() {
                self.queue_fault(0, QueueFault::SqFetchFault);
                break;
            }
            let mut b = [0u8; SQE_SIZE];
            hw::read_card(&mut self.p, ADMIN_BOUNCE, &mut b);
            let cid = u16::from_le_bytes([b[2], b[3]]);
            let a = match AdminSqe::parse(&b) {
                Ok((op, sqe)) => match self.exec_admin(op, &sqe) {
                    Ok(a) => a,
                    Err(s) => Answer {
                        status: s,
                        result0: 0,
                        result1: 0,
                    },
                },
                Err(e) => Answer {
                    status: e.status(),
                    result0: 0,
                    result1: 0,
                },
            };
            let Some(q) = self.admin.as_mut() else { break };
            let (slot, phase) = q.cq.push().expect("checked free");
            let cqe = Cqe {
                result0: a.result0,
                result1: a.result1,
                sq_head: q.sq.head(),
                sq_id: 0,
                cid,
                status: a.status as u16,
                phase,
                ..Cqe::default()
            };
            let base = q.cq_base;
            if !self.write_cqe(base, slot, &cqe) {
                self.queue_fault(0, QueueFault::CqWriteFault);
                break;
            }
            self.p.write32(card::HOSTIF_IRQ_TRIGGER, 0);
        }
        progress
    }

    fn exec_admin(&mut self, op: AdminOpcode, s: &AdminSqe) -> Result<Answer, Status> {
        match op {
            AdminOpcode::Identify => self.identify(s),
            AdminOpcode::CreateIoQueuePair => self.create_queue(s),
            AdminOpcode::DeleteIoQueuePair => self.delete_queue(s),
            AdminOpcode::SetProfile => self.set_profile(s),
            AdminOpcode::GetLog => self.get_log(s),
            AdminOpcode::SetInterruptCoalescing => self.set_coalescing(s),
            AdminOpcode::Abort => self.abort(s),
            AdminOpcode::FirmwareDownload => self.fw_download(s),
            AdminOpcode::FirmwareCommit => self.fw_commit(s),
            AdminOpcode::GetTelemetry => self.telemetry(s),
            AdminOpcode::FirmwareActivate => self.fw_activate(s),
        }
    }

    /// Copies `bytes` (at most the command's data length) to its data buffer.
    fn send_data(&mut self, s: &AdminSqe, bytes: &[u8]) -> Result<u32, Status> {
        let n = (s.data_len as usize).min(bytes.len());
        hw::write_card(&mut self.p, ADMIN_BOUNCE, &bytes[..n]);
        hw::dma(&mut self.p, s.data_iova, ADMIN_BOUNCE, n as u32, true)
            .map_err(Self::dma_status)?;
        Ok(n as u32)
    }

    pub fn identify_data(&self) -> Identify {
        let mut v = [0u8; 32];
        let s = crate::FW_VERSION_STRING.as_bytes();
        v[..s.len().min(32)].copy_from_slice(&s[..s.len().min(32)]);
        Identify {
            version_major: regs::VERSION_MAJOR,
            version_minor: regs::VERSION_MINOR,
            fw_build_id: self.build_id,
            image_cus: self.info.image_cus,
            audio_cus: self.info.audio_cus,
            norm_cus: self.info.norm_cus,
            max_io_queues: MAX_IO_QUEUES as u8,
            max_queue_entries: ring::MAX_RING,
            max_sg: preba_protocol::io::MAX_SG as u8,
            profile_slots: preba_protocol::profile::MAX_PROFILES as u8,
            max_input_bytes: limits::MAX_INPUT_BYTES as u32,
            max_image_side: limits::MAX_IMAGE_SIDE,
            max_image_pixels: limits::MAX_IMAGE_PIXELS,
            card_mem_bytes: self.info.mem_size as u64,
            clock_mhz: self.info.core_hz / 1_000_000,
            fw_version: v,
            ..Identify::default()
        }
    }

    fn identify(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let mut id = self.identify_data();
        let boot = self.p.read32(card::INFO_BOOT);
        id.running_slot = boot as u8;
        id.boot_outcome = (boot >> 8) as u8;
        id.failed_slot = (boot >> 16) as u8;
        id.active_slot = self.boot_record().map_or(fwimage::SLOT_A, |r| r.active);
        for slot in [fwimage::SLOT_A, fwimage::SLOT_B] {
            let i = usize::from(slot);
            match self.slot_header(slot) {
                Ok(h) => {
                    id.slot_state[i] = h.state() as u8;
                    id.slot_build_id[i] = h.build_id;
                }
                Err(state) => id.slot_state[i] = state as u8,
            }
        }
        let b: [u8; IDENTIFY_SIZE] = id.encode();
        self.send_data(s, &b)?;
        ok(0, 0)
    }

    fn create_queue(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let qid = (s.cdw[0] & 0xffff) as usize;
        let size = (s.cdw[0] >> 16) + 1;
        let cq_base = s.cdw[1] as u64 | (s.cdw[2] as u64) << 32;
        let vector = (s.cdw[3] & 0xffff) as u16;
        let irq = s.cdw[3] & (1 << 16) != 0;
        if !(1..=MAX_IO_QUEUES).contains(&qid) || self.io[qid - 1].is_some() {
            return Err(Status::InvalidField);
        }
        let (Some(sq), Some(cq)) = (SqConsumer::new(size as u16), CqProducer::new(size as u16))
        else {
            return Err(Status::InvalidField);
        };
        if !ring::valid_size(size)
            || !s.data_iova.is_multiple_of(SQE_SIZE as u64)
            || !cq_base.is_multiple_of(32)
            || s.data_iova
                .checked_add(size as u64 * SQE_SIZE as u64)
                .is_none()
            || cq_base.checked_add(size as u64 * 32).is_none()
            || vector >= regs::MSIX_VECTORS
        {
            return Err(Status::InvalidField);
        }
        let mut q = Queue::new(qid as u8, sq, cq, s.data_iova, cq_base);
        q.vector = vector;
        q.irq = irq;
        (q.coal_count, q.coal_ticks) = self.coal_default;
        self.io[qid - 1] = Some(q);
        fw_log!(
            info,
            "queue {=usize} created: {=u32} entries, vector {=u16}",
            qid,
            size,
            vector
        );
        ok(0, 0)
    }

    fn delete_queue(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let qid = s.cdw[0] as usize;
        if !(1..=MAX_IO_QUEUES).contains(&qid) || self.io[qid - 1].is_none() {
            return Err(Status::InvalidField);
        }
        for i in 0..MAX_REQ {
            if self.reqs[i].is_some_and(|r| r.qid as usize == qid && r.stage != Stage::Done) {
                self.abort_req(i);
            }
        }
        // Best effort: post what the CQ has room for, then drop the rest.
        self.post_queue(qid - 1);
        for r in self.reqs.iter_mut() {
            if r.is_some_and(|r| r.qid as usize == qid) {
                *r = None;
            }
        }
        self.io[qid - 1] = None;
        fw_log!(info, "queue {=usize} deleted", qid);
        ok(0, 0)
    }

    fn set_profile(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let slot = s.cdw[0] as usize;
        if slot >= self.profiles.len() || (s.data_len as usize) < PROFILE_SIZE {
            return Err(Status::InvalidField);
        }
        hw::dma(
            &mut self.p,
            s.data_iova,
            ADMIN_BOUNCE,
            PROFILE_SIZE as u32,
            false,
        )
        .map_err(Self::dma_status)?;
        let mut b = [0u8; PROFILE_SIZE];
        hw::read_card(&mut self.p, ADMIN_BOUNCE, &mut b);
        let p = admin::parse_profile(&b).map_err(|e| e.status())?;
        self.profiles[slot] = Some(p);
        ok(0, 0)
    }

    /// Copies log-ring bytes from the cursor: result0 bytes copied, result1
    /// the new cursor. A cursor more than a ring behind (or ahead of the head)
    /// restarts at the oldest byte still in the ring.
    fn get_log(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let head = self.p.read32(card::LOG_HEAD);
        let mut cursor = s.cdw[0];
        let size = card::LOG_RING_SIZE;
        if head.wrapping_sub(cursor) > size {
            cursor = head.saturating_sub(size);
        }
        let n = head.wrapping_sub(cursor).min(s.data_len);
        let mut word = 0u32;
        for k in 0..n {
            let at = cursor.wrapping_add(k) & (size - 1);
            let w = self.p.read32(card::LOG_RING_BASE + (at & !3));
            let byte = (w >> (8 * (at & 3))) & 0xff;
            word |= byte << (8 * (k & 3));
            if k & 3 == 3 || k + 1 == n {
                self.p.write32(ADMIN_BOUNCE + (k & !3), word);
                word = 0;
            }
        }
        hw::dma(&mut self.p, s.data_iova, ADMIN_BOUNCE, n, true).map_err(Self::dma_status)?;
        ok(n, cursor.wrapping_add(n))
    }

    fn set_coalescing(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let time_us = (s.cdw[0] & 0xffff) as u64;
        let count = ((s.cdw[0] >> 16) & 0xff) as u8;
        let ticks = time_us * (card::MTIME_HZ as u64 / 1_000_000);
        let qid = s.cdw[1] & 0xffff;
        if qid == 0xffff {
            self.coal_default = (count, ticks);
            for q in self.io.iter_mut().flatten() {
                (q.coal_count, q.coal_ticks) = (count, ticks);
            }
            return ok(0, 0);
        }
        match self
            .io
            .get_mut((qid as usize).wrapping_sub(1))
            .and_then(|q| q.as_mut())
        {
            Some(q) => {
                (q.coal_count, q.coal_ticks) = (count, ticks);
                ok(0, 0)
            }
            None => Err(Status::InvalidField),
        }
    }

    fn abort(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let sqid = (s.cdw[0] & 0xffff) as u8;
        let cid = (s.cdw[0] >> 16) as u16;
        let found = (0..MAX_REQ).find(|&i| {
            self.reqs[i].is_some_and(|r| r.qid == sqid && r.cid == cid && r.stage != Stage::Done)
        });
        match found {
            Some(i) => {
                self.abort_req(i);
                ok(0, 0)
            }
            None => ok(1, 0),
        }
    }

    fn fw_download(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let off = s.cdw[0];
        match off.checked_add(s.data_len) {
            Some(end) if end <= FW_MAX && off.is_multiple_of(4) => {
                hw::dma(
                    &mut self.p,
                    s.data_iova,
                    FW_STAGING + off,
                    s.data_len,
                    false,
                )
                .map_err(Self::dma_status)?;
                self.fw_staged = self.fw_staged.max(end);
                ok(0, 0)
            }
            _ => Err(Status::InvalidField),
        }
    }

    /// Checks the staged image's CRC-32, then writes it into the slot that is not running
    /// (image first, header last, so a torn write leaves an empty slot, never a half image
    /// with a valid header). result0: the CRC-32 read back from flash, result1: the slot.
    fn fw_commit(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let len = s.cdw[0];
        if len == 0 || len > self.fw_staged {
            return Err(Status::InvalidField);
        }
        let mut crc = Crc32::default();
        let mut buf = [0u8; spi_nor::PAGE as usize];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(spi_nor::PAGE);
            hw::read_card(&mut self.p, FW_STAGING + off, &mut buf[..n as usize]);
            crc.update(&buf[..n as usize]);
            off += n;
        }
        let crc = crc.finish();
        if crc != s.cdw[1] {
            fw_log!(
                warn,
                "firmware commit: CRC {=u32:x} != {=u32:x}",
                crc,
                s.cdw[1]
            );
            return Ok(Answer {
                status: Status::InvalidField,
                result0: crc,
                result1: 0,
            });
        }
        let running = (self.p.read32(card::INFO_BOOT) & 0xff) as u8;
        let slot = if running == fwimage::SLOT_A {
            fwimage::SLOT_B
        } else {
            fwimage::SLOT_A
        };
        let build_id = u64::from(s.cdw[2]) | u64::from(s.cdw[3]) << 32;
        let version = u32::from(regs::VERSION_MAJOR) << 16 | u32::from(regs::VERSION_MINOR);
        let header = SlotHeader::new(len, crc, build_id, version);
        match self.write_slot(slot, &header) {
            Ok(back) if back == crc => {
                fw_log!(
                    info,
                    "firmware image committed to slot {=str}: {=u32} B crc {=u32:x} build {=u64:x}",
                    fwimage::slot_name(slot),
                    len,
                    crc,
                    build_id
                );
                ok(back, u32::from(slot))
            }
            Ok(back) => {
                fw_log!(
                    error,
                    "firmware commit: slot {=str} reads back CRC {=u32:x}",
                    fwimage::slot_name(slot),
                    back
                );
                Ok(Answer {
                    status: Status::Internal,
                    result0: back,
                    result1: u32::from(slot),
                })
            }
            Err(()) => {
                fw_log!(error, "firmware commit: flash write failed");
                Err(Status::Internal)
            }
        }
    }

    fn flash(&mut self) -> Result<SpiNor<PlatSpi<'_, P>>, ()> {
        let mut flash = SpiNor::new(PlatSpi(&mut self.p));
        flash.probe().map_err(|_| ())?;
        if flash.capacity < fwimage::FLASH_MIN {
            return Err(());
        }
        Ok(flash)
    }

    /// Erases `slot`, programs the staged image and then its header; returns the CRC-32 of
    /// the image as read back from flash.
    fn write_slot(&mut self, slot: u8, h: &SlotHeader) -> Result<u32, ()> {
        let base = fwimage::SLOT_BASE[usize::from(slot)];
        let image = base + fwimage::IMAGE_OFFSET;
        let end = image.checked_add(h.len).ok_or(())?;
        let mut a = base;
        while a < end {
            self.flash()?.erase_sector(a).map_err(|_| ())?;
            a += spi_nor::SECTOR;
        }
        let mut buf = [0u8; spi_nor::PAGE as usize];
        let mut off = 0;
        while off < h.len {
            let n = (h.len - off).min(spi_nor::PAGE);
            hw::read_card(&mut self.p, FW_STAGING + off, &mut buf[..n as usize]);
            self.flash()?
                .program(image + off, &buf[..n as usize])
                .map_err(|_| ())?;
            off += n;
        }
        let back = self.flash_crc(image, h.len)?;
        if back == h.crc {
            self.flash()?.program(base, &h.encode()).map_err(|_| ())?;
        }
        Ok(back)
    }

    /// CRC-32 of `len` flash bytes at `addr`.
    fn flash_crc(&mut self, addr: u32, len: u32) -> Result<u32, ()> {
        let mut crc = Crc32::default();
        let mut buf = [0u8; spi_nor::PAGE as usize];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(spi_nor::PAGE);
            self.flash()?
                .read(addr + off, &mut buf[..n as usize])
                .map_err(|_| ())?;
            crc.update(&buf[..n as usize]);
            off += n;
        }
        Ok(crc.finish())
    }

    /// A slot's header, or the state that says why it has none.
    fn slot_header(&mut self, slot: u8) -> Result<SlotHeader, SlotState> {
        let mut b = [0u8; fwimage::HEADER_SIZE];
        let base = fwimage::SLOT_BASE[usize::from(slot & 1)];
        let mut f = self.flash().map_err(|_| SlotState::Empty)?;
        f.read(base, &mut b).map_err(|_| SlotState::Empty)?;
        SlotHeader::parse(&b)
    }

    fn boot_record(&mut self) -> Option<BootRecord> {
        let mut b = [0u8; fwimage::RECORD_SIZE];
        let mut f = self.flash().ok()?;
        f.read(fwimage::BOOT_RECORD, &mut b).ok()?;
        BootRecord::parse(&b)
    }

    /// Names `slot` in the boot record when its header and CRC are valid and the boot ROM has
    /// not marked it bad. result0: the slot; on refusal result1: its `SlotState`.
    fn fw_activate(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let slot = s.cdw[0];
        if slot > 1 {
            return Err(Status::InvalidField);
        }
        let slot = slot as u8;
        let refuse = |state: SlotState| {
            Ok(Answer {
                status: Status::InvalidField,
                result0: u32::from(slot),
                result1: state as u32,
            })
        };
        let h = match self.slot_header(slot) {
            Ok(h) => h,
            Err(state) => return refuse(state),
        };
        if h.state() == SlotState::Bad {
            return refuse(SlotState::Bad);
        }
        let image = fwimage::SLOT_BASE[usize::from(slot)] + fwimage::IMAGE_OFFSET;
        match self.flash_crc(image, h.len) {
            Ok(c) if c == h.crc => {}
            Ok(_) => return refuse(SlotState::Invalid),
            Err(()) => return Err(Status::Internal),
        }
        let seq = self.boot_record().map_or(0, |r| r.seq.wrapping_add(1));
        let rec = BootRecord { active: slot, seq };
        let r = self
            .flash()
            .and_then(|mut f| f.erase_sector(fwimage::BOOT_RECORD).map_err(|_| ()))
            .and_then(|()| {
                self.flash()?
                    .program(fwimage::BOOT_RECORD, &rec.encode())
                    .map_err(|_| ())
            });
        if r.is_err() {
            fw_log!(error, "firmware activate: boot record write failed");
            return Err(Status::Internal);
        }
        fw_log!(
            info,
            "slot {=str} (build {=u64:x}) active after the next reset",
            fwimage::slot_name(slot),
            h.build_id
        );
        ok(u32::from(slot), 0)
    }

    fn telemetry(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        self.sample_power();
        let now = self.p.now();
        let ticks = now - self.boot_t;
        let hz = self.info.core_hz as u64;
        let m = card::MTIME_HZ as u64;
        let mut t = Telemetry {
            uptime_cycles: ticks / m * hz + ticks % m * hz / m,
            requests: self.stats.requests,
            errors: self.stats.errors,
            power_mw: self.stats.power_mw,
            energy_uj: self.stats.energy_uj,
            cu_count: self.cus.len() as u8,
            ..Telemetry::default()
        };
        for (c, s) in self.cus.iter().zip(t.cus.iter_mut()) {
            *s = admin::CuStats {
                kind: c.kind,
                busy_cycles: c.busy_cycles,
                requests: c.requests,
                errors: c.errors,
                energy_uj: c.energy_nj / 1000,
                resets: c.resets,
            };
        }
        let b: [u8; TELEMETRY_SIZE] = t.encode();
        self.send_data(s, &b)?;
        ok(0, 0)
    }

    /// Checks the power monitor's ids and calibrates it.
    pub(crate) fn power_init(&mut self) -> bool {
        let mut m = Ina226::new(PlatI2c(&mut self.p), card::POWER_MONITOR_ADDR);
        m.init().is_ok()
    }

    /// Reads board power and integrates energy since the last sample.
    pub(crate) fn sample_power(&mut self) {
        if !self.power_ok {
            return;
        }
        let now = self.p.now();
        let mut m = Ina226::new(PlatI2c(&mut self.p), card::POWER_MONITOR_ADDR);
        let Ok(mw) = m.power_mw() else { return };
        let dt = now - self.stats.last_power_t;
        // mW x ticks / 10^4 = uJ at 10 MHz mtime.
        self.stats.energy_uj += mw as u64 * dt / (card::MTIME_HZ as u64 / 1_000_000 * 1000);
        self.stats.power_mw = mw;
        self.stats.last_power_t = now;
    }
}
