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
use preba_protocol::io::{Cqe, SQE_SIZE};
use preba_protocol::limits;
use preba_protocol::regs::{self, QueueFault};
use preba_protocol::ring::{self, CqProducer, SqConsumer};
use preba_protocol::status::Status;

/// Most admin commands run per poll.
const ADMIN_PER_POLL: usize = 4;
/// SPI flash layout: a 16-byte header in sector 0, the image from 0x1000.
pub const FLASH_HEADER: u32 = 0;
pub const FLASH_IMAGE: u32 = 0x1000;
/// Header magic "PFW1" (little-endian u32), then length, CRC-32, !CRC-32.
pub const FLASH_MAGIC: u32 = u32::from_le_bytes(*b"PFW1");

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
        }
    }

    fn identify(&mut self, s: &AdminSqe) -> Result<Answer, Status> {
        let b: [u8; IDENTIFY_SIZE] = self.identify_data().encode();
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

    /// Checks the staged image's CRC-32, then writes header and image to the
    /// SPI flash (erase, program, verify). result0: the CRC computed.
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
        let r = self.flash_image(len, crc);
        match r {
            Ok(()) => {
                fw_log!(
                    info,
                    "firmware image committed: {=u32} B crc {=u32:x}",
                    len,
                    crc
                );
                ok(crc, 0)
            }
            Err(()) => {
                fw_log!(error, "firmware commit: flash write failed");
                Err(Status::Internal)
            }
        }
    }

    fn flash_image(&mut self, len: u32, crc: u32) -> Result<(), ()> {
        let mut flash = SpiNor::new(PlatSpi(&mut self.p));
        flash.probe().map_err(|_| ())?;
        let end = FLASH_IMAGE.checked_add(len).ok_or(())?;
        if end > flash.capacity {
            return Err(());
        }
        let mut a = 0;
        while a < end {
            flash.erase_sector(a).map_err(|_| ())?;
            a += spi_nor::SECTOR;
        }
        let cap = flash.capacity;
        let mut buf = [0u8; spi_nor::PAGE as usize];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(spi_nor::PAGE);
            hw::read_card(&mut self.p, FW_STAGING + off, &mut buf[..n as usize]);
            let mut flash = SpiNor::new(PlatSpi(&mut self.p));
            flash.capacity = cap;
            flash
                .program(FLASH_IMAGE + off, &buf[..n as usize])
                .map_err(|_| ())?;
            off += n;
        }
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&FLASH_MAGIC.to_le_bytes());
        hdr[4..8].copy_from_slice(&len.to_le_bytes());
        hdr[8..12].copy_from_slice(&crc.to_le_bytes());
        hdr[12..16].copy_from_slice(&(!crc).to_le_bytes());
        let mut flash = SpiNor::new(PlatSpi(&mut self.p));
        flash.capacity = cap;
        flash.program(FLASH_HEADER, &hdr).map_err(|_| ())
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
