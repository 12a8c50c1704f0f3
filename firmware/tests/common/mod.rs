//! A test double of the card: host memory with a DMA window, the DMA engine,
//! CUs with scripted behaviour, doorbells, the interrupt controller, an
//! INA226 on I2C, a SPI NOR flash, GPIO, and a clock that fast-forwards on
//! `wait_for_event`. Plus a small host that drives queues through it.
#![allow(dead_code)]

use preba_firmware::{Firmware, Platform};
use preba_protocol::admin::{AdminSqe, encode_profile, parse_profile};
use preba_protocol::card::*;
use preba_protocol::hostq::{Doorbell, QueueMemory, QueuePair};
use preba_protocol::io::{CQE_SIZE, Cqe, SQE_SIZE, Sqe};
use preba_protocol::profile::Profile;
use preba_protocol::ring;
use std::collections::HashMap;
use std::convert::Infallible;

pub const HOST_BASE: u64 = 0x1000_0000;
pub const HOST_SIZE: usize = 8 << 20;
pub const MEM_SIZE: u32 = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CuMode {
    /// Completes after `latency` ticks.
    Normal,
    /// Never completes.
    Stuck,
    /// Completes with CU_STATUS error and this CU_ERROR code.
    Fail(u32),
}

#[derive(Clone, Debug)]
pub struct CuModel {
    pub kind: u32,
    pub regs: [u32; 16],
    pub status: u32,
    pub finish_at: Option<u64>,
    pub mode: CuMode,
    pub latency: u64,
    pub starts: u32,
    pub resets: u32,
}

pub struct Card {
    pub now: u64,
    pub regs: HashMap<u32, u32>,
    pub host: Vec<u8>,
    pub mem: Vec<u8>,
    pub mem_size: u32,
    pub cus: Vec<CuModel>,
    pub irq_pending: u32,
    pub irq_enable: u32,
    pub triggers: Vec<u32>,
    pub dma_status: u32,
    pub dma_count: u64,
    pub dma_fault: u64,
    /// Mel CU output bytes.
    pub mel_bytes: u32,
    // I2C
    pub i2c_tx: Vec<u8>,
    pub i2c_rx: std::collections::VecDeque<u8>,
    pub i2c_status: u32,
    pub ina_ptr: u8,
    pub ina_cal: u16,
    pub power_mw: u32,
    // SPI flash
    pub flash: Vec<u8>,
    pub spi_cs: bool,
    pub spi_buf: Vec<u8>,
    pub spi_in: u8,
    pub spi_wel: bool,
    pub wfi_calls: u64,
    /// SQ tail doorbells a test rang itself ([`Card::sq_doorbell`]), not yet seen by the
    /// test host: (queue, value).
    pub test_sq_doorbells: Vec<(u32, u32)>,
    /// A CC value the host writes right after the firmware's next write-1-to-clear of
    /// HOSTIF_EVENTS: a host write landing between two of the firmware's register accesses.
    pub cc_after_events_clear: Option<u32>,
}

impl Card {
    pub fn new(image: u32, audio: u32, norm: u32) -> Card {
        let mut cus = Vec::new();
        for (k, n) in [(0, image), (1, audio), (2, norm)] {
            for _ in 0..n {
                cus.push(CuModel {
                    kind: k,
                    regs: [0; 16],
                    status: 0,
                    finish_at: None,
                    mode: CuMode::Normal,
                    latency: 1000,
                    starts: 0,
                    resets: 0,
                });
            }
        }
        let mut regs = HashMap::new();
        regs.insert(INFO_IMAGE_CUS, image);
        regs.insert(INFO_AUDIO_CUS, audio);
        regs.insert(INFO_NORM_CUS, norm);
        regs.insert(INFO_CARD_MEM_SIZE, MEM_SIZE);
        regs.insert(INFO_CORE_HZ, 100_000_000);
        regs.insert(INFO_CU_HZ, 300_000_000);
        Card {
            now: 1000,
            regs,
            host: vec![0; HOST_SIZE],
            mem: vec![0; MEM_SIZE as usize],
            mem_size: MEM_SIZE,
            cus,
            irq_pending: 0,
            irq_enable: 0,
            triggers: Vec::new(),
            dma_status: 0,
            dma_count: 0,
            dma_fault: 0,
            mel_bytes: 80 * 4 * 101,
            i2c_tx: Vec::new(),
            i2c_rx: Default::default(),
            i2c_status: 0,
            ina_ptr: 0,
            ina_cal: 0,
            power_mw: 25_000,
            flash: vec![0xFF; 1 << 20],
            spi_cs: false,
            spi_buf: Vec::new(),
            spi_in: 0,
            spi_wel: false,
            wfi_calls: 0,
            test_sq_doorbells: Vec::new(),
            cc_after_events_clear: None,
        }
    }

    pub fn reg(&self, a: u32) -> u32 {
        *self.regs.get(&a).unwrap_or(&0)
    }

    fn host_range(&self, iova: u64, len: u64) -> Option<usize> {
        let end = iova.checked_add(len)?;
        if iova >= HOST_BASE && end <= HOST_BASE + HOST_SIZE as u64 {
            Some((iova - HOST_BASE) as usize)
        } else {
            None
        }
    }

    fn card_range(&self, a: u32, len: u32) -> Option<usize> {
        let end = (a as u64).checked_add(len as u64)?;
        if a >= CARD_MEM_BASE && end <= CARD_MEM_BASE as u64 + self.mem_size as u64 {
            Some((a - CARD_MEM_BASE) as usize)
        } else {
            None
        }
    }

    pub fn host_write(&mut self, iova: u64, b: &[u8]) {
        let o = self.host_range(iova, b.len() as u64).expect("host range");
        self.host[o..o + b.len()].copy_from_slice(b);
    }

    pub fn host_read(&self, iova: u64, n: usize) -> Vec<u8> {
        let o = self.host_range(iova, n as u64).expect("host range");
        self.host[o..o + n].to_vec()
    }

    pub fn raise(&mut self, bits: u32) {
        self.irq_pending |= bits;
    }

    fn do_dma(&mut self) {
        self.dma_count += 1;
        let host = self.reg(DMA_HOST_LO) as u64 | (self.reg(DMA_HOST_HI) as u64) << 32;
        let cardp = self.reg(DMA_CARD);
        let len = self.reg(DMA_LEN);
        let to_host = self.reg(DMA_CTRL) & DMA_CTRL_TO_HOST != 0;
        let (Some(h), Some(c)) = (
            self.host_range(host, len as u64),
            self.card_range(cardp, len),
        ) else {
            self.dma_status = 3;
            self.dma_fault = host;
            self.raise(IRQ_DMA);
            return;
        };
        let n = len as usize;
        if to_host {
            let src = self.mem[c..c + n].to_vec();
            self.host[h..h + n].copy_from_slice(&src);
        } else {
            let src = self.host[h..h + n].to_vec();
            self.mem[c..c + n].copy_from_slice(&src);
        }
        self.dma_status = 2;
        self.raise(IRQ_DMA);
    }

    fn cu_start(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.cus[i];
        c.starts += 1;
        c.status = 1;
        c.finish_at = match c.mode {
            CuMode::Stuck => None,
            _ => Some(now + c.latency),
        };
    }

    fn cu_finish(&mut self, i: usize) {
        let c = self.cus[i].clone();
        let r = |off: u32| c.regs[(off / 4) as usize];
        let (src, src_len, dst, dst_len, prof) = (
            r(CU_SRC),
            r(CU_SRC_LEN),
            r(CU_DST),
            r(CU_DST_LEN),
            r(CU_PROFILE),
        );
        let mut pb = [0u8; 64];
        let po = self.card_range(prof, 64).expect("profile in card memory");
        pb.copy_from_slice(&self.mem[po..po + 64]);
        let profile = parse_profile(&pb).expect("valid profile");
        let (written, r0, r1) = match (c.kind, profile) {
            (0, Profile::Image(ip)) => (ip.output_len() as u32, 500, 375),
            (1, Profile::Audio(_)) => (self.mel_bytes, 16_000, 16_000),
            (2, _) => (src_len, 101, 0),
            _ => panic!("CU kind {} got the wrong profile", c.kind),
        };
        let cu = &mut self.cus[i];
        cu.finish_at = None;
        cu.regs[(CU_CYCLES_LO / 4) as usize] = 1000;
        cu.regs[(CU_CYCLES_HI / 4) as usize] = 0;
        cu.regs[(CU_ENERGY_NJ / 4) as usize] = 5000;
        if let CuMode::Fail(code) = cu.mode {
            cu.status = 3;
            cu.regs[(CU_ERROR / 4) as usize] = code;
        } else if written > dst_len {
            cu.status = 3;
            cu.regs[(CU_ERROR / 4) as usize] = 4;
        } else {
            cu.status = 2;
            cu.regs[(CU_WRITTEN / 4) as usize] = written;
            cu.regs[(CU_RESULT0 / 4) as usize] = r0;
            cu.regs[(CU_RESULT1 / 4) as usize] = r1;
            let d = self.card_range(dst, written).expect("dst in card memory");
            let s = self.card_range(src, src_len).expect("src in card memory");
            for k in 0..written as usize {
                self.mem[d + k] = if c.kind == 2 {
                    self.mem[s + k] ^ 0xFF
                } else {
                    (k as u32 ^ src_len) as u8
                };
            }
        }
        self.raise(1 << (IRQ_CU_SHIFT + i as u32));
    }

    /// Runs CU completions due at `now`.
    pub fn tick(&mut self) {
        for i in 0..self.cus.len() {
            if self.cus[i].finish_at.is_some_and(|t| t <= self.now) {
                self.cu_finish(i);
            }
        }
    }

    fn next_event(&self) -> Option<u64> {
        self.cus.iter().filter_map(|c| c.finish_at).min()
    }

    // ---- INA226 ----
    fn ina_read(&self, reg: u8) -> Option<u16> {
        Some(match reg {
            0x00 => 0x4127,
            0x02 => (12_000 * 1000 / 1250) as u16,
            0x03 => {
                if self.ina_cal == 0 {
                    0
                } else {
                    (self.power_mw / 25) as u16
                }
            }
            0x04 => {
                if self.ina_cal == 0 {
                    0
                } else {
                    (self.power_mw * 1000 / 12_000) as u16
                }
            }
            0x05 => self.ina_cal,
            0xFE => 0x5449,
            0xFF => 0x2260,
            _ => return None,
        })
    }

    fn i2c_ctrl(&mut self, v: u32) {
        self.i2c_status = 0;
        if self.reg(I2C_ADDR) != POWER_MONITOR_ADDR as u32 {
            self.i2c_status = 2;
            self.i2c_tx.clear();
            return;
        }
        if v & 1 != 0 {
            let tx = std::mem::take(&mut self.i2c_tx);
            if let Some(&p) = tx.first() {
                if self.ina_read(p).is_none() {
                    self.i2c_status = 2;
                    return;
                }
                self.ina_ptr = p;
            }
            if tx.len() == 3 && tx[0] == 0x05 {
                self.ina_cal = u16::from_be_bytes([tx[1], tx[2]]);
            }
        }
        if v & 2 != 0 {
            let n = (v >> 8) & 0xff;
            let val = self.ina_read(self.ina_ptr).unwrap_or(0xffff).to_be_bytes();
            for k in 0..n as usize {
                self.i2c_rx.push_back(val[k % 2]);
            }
        }
    }

    // ---- SPI NOR ----
    fn spi_byte(&mut self, b: u8) {
        self.spi_buf.push(b);
        let buf = &self.spi_buf;
        let pos = buf.len() - 1;
        let addr = |buf: &[u8]| {
            ((buf[1] as usize) << 16 | (buf[2] as usize) << 8 | buf[3] as usize) % (1 << 20)
        };
        self.spi_in = match buf[0] {
            0x9F => [0x00, 0xEF, 0x40, 0x14][pos.min(3)],
            0x05 if pos >= 1 => (self.spi_wel as u8) << 1,
            0x03 if pos >= 4 => self.flash[(addr(buf) + pos - 4) % (1 << 20)],
            _ => 0,
        };
    }

    fn spi_end(&mut self) {
        let buf = std::mem::take(&mut self.spi_buf);
        match buf.first() {
            Some(0x06) => self.spi_wel = true,
            Some(0x20) if buf.len() >= 4 && self.spi_wel => {
                let a =
                    ((buf[1] as usize) << 16 | (buf[2] as usize) << 8 | buf[3] as usize) & !0xfff;
                self.flash[a..a + 4096].fill(0xFF);
                self.spi_wel = false;
            }
            Some(0x02) if buf.len() >= 5 && self.spi_wel => {
                let a = (buf[1] as usize) << 16 | (buf[2] as usize) << 8 | buf[3] as usize;
                let page = a & !0xff;
                for (k, &d) in buf[4..].iter().enumerate() {
                    let at = page + ((a + k) & 0xff);
                    self.flash[at] &= d;
                }
                self.spi_wel = false;
            }
            _ => {}
        }
    }

    // ---- host side ----
    pub fn write_cc(&mut self, v: u32) {
        self.regs.insert(HOSTIF_CC, v);
        *self.regs.entry(HOSTIF_EVENTS).or_default() |= HOSTIF_EVENT_CC;
        self.raise(IRQ_HOST);
    }

    /// An SQ tail doorbell rung by the test itself (the test host's own go through the
    /// queue engine): the test host counts the entries it announces as submitted.
    pub fn sq_doorbell(&mut self, q: u32, v: u32) {
        self.test_sq_doorbells.push((q, v));
        self.ring_sq(q, v);
    }

    fn ring_sq(&mut self, q: u32, v: u32) {
        self.regs.insert(HOSTIF_DB_VALUES + 8 * q, v);
        *self.regs.entry(HOSTIF_SQDB_PENDING).or_default() |= 1 << q;
        *self.regs.entry(HOSTIF_EVENTS).or_default() |= HOSTIF_EVENT_DOORBELL;
        self.raise(IRQ_HOST);
    }

    pub fn cq_doorbell(&mut self, q: u32, v: u32) {
        self.regs.insert(HOSTIF_DB_VALUES + 8 * q + 4, v);
        *self.regs.entry(HOSTIF_CQDB_PENDING).or_default() |= 1 << q;
        *self.regs.entry(HOSTIF_EVENTS).or_default() |= HOSTIF_EVENT_DOORBELL;
        self.raise(IRQ_HOST);
    }
}

impl Platform for Card {
    fn read32(&mut self, addr: u32) -> u32 {
        assert_eq!(addr % 4, 0, "unaligned read {addr:#x}");
        if let Some(o) = self.card_range(addr, 4) {
            return u32::from_le_bytes(self.mem[o..o + 4].try_into().unwrap());
        }
        if (CU_BASE..CU_BASE + 24 * CU_STRIDE).contains(&addr) {
            let i = ((addr - CU_BASE) / CU_STRIDE) as usize;
            let off = (addr - CU_BASE) % CU_STRIDE;
            let Some(c) = self.cus.get(i) else { return 0 };
            return match off {
                CU_KIND => c.kind,
                CU_STATUS => c.status,
                _ => c.regs[(off / 4) as usize],
            };
        }
        match addr {
            IRQ_PENDING => self.irq_pending,
            IRQ_ENABLE => self.irq_enable,
            DMA_STATUS => self.dma_status,
            DMA_FAULT_LO => self.dma_fault as u32,
            DMA_FAULT_HI => (self.dma_fault >> 32) as u32,
            I2C_DATA => self.i2c_rx.pop_front().unwrap_or(0xff) as u32,
            I2C_STATUS => self.i2c_status,
            SPI_DATA => self.spi_in as u32,
            SPI_STATUS => 0,
            _ => self.reg(addr),
        }
    }

    fn write32(&mut self, addr: u32, v: u32) {
        assert_eq!(addr % 4, 0, "unaligned write {addr:#x}");
        if let Some(o) = self.card_range(addr, 4) {
            self.mem[o..o + 4].copy_from_slice(&v.to_le_bytes());
            return;
        }
        if (CU_BASE..CU_BASE + 24 * CU_STRIDE).contains(&addr) {
            let i = ((addr - CU_BASE) / CU_STRIDE) as usize;
            let off = (addr - CU_BASE) % CU_STRIDE;
            if i >= self.cus.len() {
                return;
            }
            if off == CU_CTRL {
                if v & CU_CTRL_RESET != 0 {
                    let c = &mut self.cus[i];
                    c.status = 0;
                    c.finish_at = None;
                    c.resets += 1;
                } else if v & CU_CTRL_START != 0 {
                    assert_ne!(self.cus[i].status, 1, "CU {i} started while busy");
                    self.cu_start(i);
                }
            } else {
                self.cus[i].regs[(off / 4) as usize] = v;
            }
            return;
        }
        match addr {
            IRQ_ENABLE => self.irq_enable = v,
            IRQ_ACK => self.irq_pending &= !v,
            HOSTIF_EVENTS | HOSTIF_SQDB_PENDING | HOSTIF_CQDB_PENDING => {
                *self.regs.entry(addr).or_default() &= !v;
                if addr == HOSTIF_EVENTS
                    && let Some(cc) = self.cc_after_events_clear.take()
                {
                    self.write_cc(cc);
                }
            }
            HOSTIF_IRQ_TRIGGER => self.triggers.push(v),
            DMA_CTRL => {
                self.regs.insert(addr, v);
                if v & DMA_CTRL_START != 0 {
                    self.do_dma();
                }
            }
            I2C_DATA => self.i2c_tx.push(v as u8),
            I2C_CTRL => self.i2c_ctrl(v),
            SPI_CS => {
                let cs = v & 1 != 0;
                if self.spi_cs && !cs {
                    self.spi_end();
                }
                if cs && !self.spi_cs {
                    self.spi_buf.clear();
                }
                self.spi_cs = cs;
            }
            SPI_DATA => self.spi_byte(v as u8),
            HOSTIF_CC
            | HOSTIF_AQA
            | HOSTIF_ASQ_LO
            | HOSTIF_ASQ_HI
            | HOSTIF_ACQ_LO
            | HOSTIF_ACQ_HI
            | HOSTIF_DB_VALUES..=0x4000_01FF
            | INFO_BASE..=0x4000_70FF => {
                panic!("firmware wrote read-only register {addr:#x}")
            }
            _ => {
                self.regs.insert(addr, v);
            }
        }
    }

    fn now(&mut self) -> u64 {
        self.tick();
        self.now
    }

    fn wait_for_event(&mut self, deadline: u64) {
        self.wfi_calls += 1;
        self.tick();
        if self.irq_pending & self.irq_enable != 0 {
            return;
        }
        let t = self.next_event().map_or(deadline, |e| e.min(deadline));
        self.now = self.now.max(t);
        self.tick();
    }
}

// ---- host ----------------------------------------------------------------

pub const ASQ: u64 = HOST_BASE;
pub const ACQ: u64 = HOST_BASE + 0x1000;
pub const ADMIN_DATA: u64 = HOST_BASE + 0x2000;
pub const ADMIN_SIZE: u16 = 16;

/// Host-side view of one queue pair: the queue engine's rings (`preba_protocol::hostq`, as
/// the driver's). `tail` is the SQ tail as published. Entries a test wrote and announced
/// itself (its own [`Card::sq_doorbell`]) count as submitted once the host looks at the
/// queue again, so their completions pass the engine's SQ head check.
pub struct HostQueue {
    pub qid: u16,
    pub tail: u16,
    pub q: QueuePair,
    /// Completions taken to learn the card's SQ head before a push into a full SQ, kept
    /// for the next reap (their CQ slots are released then).
    taken: Vec<Cqe>,
}

impl HostQueue {
    pub fn new(qid: u16, size: u16, sq: u64, cq: u64) -> Self {
        HostQueue {
            qid,
            tail: 0,
            q: QueuePair::new(qid, size, sq, cq).expect("a valid queue size"),
            taken: Vec::new(),
        }
    }

    /// Counts the entries a test's own SQ tail doorbell `v` announced as submitted. A
    /// doorbell the card refuses (out of the ring, taking entries back) announces nothing.
    fn adopt(&mut self, v: u32) {
        let size = self.q.sq.size();
        if v < u32::from(size) {
            let n = ring::distance(size, self.q.sq.tail(), v as u16);
            if n <= self.q.sq.free() {
                for _ in 0..n {
                    let _ = self.q.sq.reserve();
                }
            }
        }
        self.tail = self.q.sq.tail();
    }
}

/// The host side of the card double for the queue engine: host memory and doorbells.
struct Rings<'a>(&'a mut Card);

impl QueueMemory for Rings<'_> {
    type Error = Infallible;
    fn write_sqe(&mut self, addr: u64, entry: &[u8; SQE_SIZE]) -> Result<(), Infallible> {
        self.0.host_write(addr, entry);
        Ok(())
    }
    fn read_cqe(&mut self, addr: u64, entry: &mut [u8; CQE_SIZE]) -> Result<(), Infallible> {
        entry.copy_from_slice(&self.0.host_read(addr, CQE_SIZE));
        Ok(())
    }
    fn doorbell(&mut self, bell: Doorbell) -> Result<(), Infallible> {
        match bell {
            Doorbell::SqTail { qid, tail } => self.0.ring_sq(qid.into(), tail.into()),
            Doorbell::CqHead { qid, head } => self.0.cq_doorbell(qid.into(), head.into()),
        }
        Ok(())
    }
}

pub struct Host {
    pub fw: Firmware<Card>,
    pub admin: HostQueue,
    pub io: HashMap<u16, HostQueue>,
    pub next_cid: u16,
}

pub type Fw = Firmware<Card>;

impl Host {
    pub fn new(card: Card) -> Host {
        let fw = Firmware::new(card, 0x1234_5678_9abc_def0);
        Host {
            fw,
            admin: HostQueue::new(0, ADMIN_SIZE, ASQ, ACQ),
            io: HashMap::new(),
            next_cid: 1,
        }
    }

    pub fn card(&mut self) -> &mut Card {
        &mut self.fw.p
    }

    /// Runs the firmware's main loop for `n` iterations.
    pub fn run(&mut self, n: usize) {
        for _ in 0..n {
            self.fw.step();
        }
    }

    /// AQA, ASQ and ACQ for the test host's admin queue (CC untouched).
    pub fn program_admin(&mut self) {
        let c = self.card();
        c.regs.insert(
            HOSTIF_AQA,
            (ADMIN_SIZE as u32 - 1) | (ADMIN_SIZE as u32 - 1) << 16,
        );
        c.regs.insert(HOSTIF_ASQ_LO, ASQ as u32);
        c.regs.insert(HOSTIF_ACQ_LO, ACQ as u32);
    }

    pub fn enable(&mut self) {
        self.program_admin();
        let c = self.card();
        c.write_cc(1);
        self.run(3);
        assert_eq!(self.card().reg(HOSTIF_CSTS) & 1, 1, "RDY");
    }

    /// Queue `qid` (with the doorbells the test rang on it itself adopted) and the memory
    /// its rings live in.
    fn queue(&mut self, qid: u16) -> (&mut HostQueue, Rings<'_>) {
        let q = if qid == 0 {
            &mut self.admin
        } else {
            self.io.get_mut(&qid).expect("queue")
        };
        let card = &mut self.fw.p;
        card.test_sq_doorbells.retain(|&(bq, v)| {
            if bq != u32::from(qid) {
                return true;
            }
            q.adopt(v);
            false
        });
        (q, Rings(card))
    }

    /// Writes an entry and rings the SQ doorbell. Into a full SQ (as far as the host
    /// knows: the card's SQ head comes only with completions) it first takes the
    /// completions posted, which the next reap returns.
    fn push(&mut self, qid: u16, bytes: [u8; 64]) {
        let (q, mut m) = self.queue(qid);
        if q.q.sq.free() == 0 {
            while let Some(c) =
                q.q.poll(&mut m, |_| true)
                    .unwrap_or_else(|e| panic!("reap: {e}"))
            {
                q.taken.push(c);
            }
        }
        q.q.submit(&mut m, &bytes)
            .unwrap_or_else(|e| panic!("submit: {e}"));
        q.tail = q.q.sq.tail();
    }

    /// Reaps every new completion of a queue and rings its CQ head doorbell. A completion
    /// the host cannot believe panics, naming the queue and the value; command ids are the
    /// tests' to check (they submit raw entries).
    pub fn reap(&mut self, qid: u16) -> Vec<Cqe> {
        let (q, mut m) = self.queue(qid);
        let mut out = std::mem::take(&mut q.taken);
        q.q.drain(&mut m, |c| {
            out.push(c);
            true
        })
        .unwrap_or_else(|e| panic!("reap: {e}"));
        out
    }

    /// Sends an admin command and runs the firmware until its completion (that command id,
    /// nothing else) arrives.
    pub fn admin_cmd(&mut self, mut sqe: AdminSqe) -> Cqe {
        sqe.cid = self.next_cid;
        self.next_cid += 1;
        self.push(0, sqe.encode());
        for _ in 0..50 {
            self.run(1);
            let (q, mut m) = self.queue(0);
            if let Some(c) =
                q.q.poll_cid(&mut m, sqe.cid)
                    .unwrap_or_else(|e| panic!("admin completion: {e}"))
            {
                return c;
            }
        }
        panic!("admin command {:#x} never completed", sqe.opcode);
    }

    pub fn create_queue(&mut self, qid: u16, size: u16, vector: u16) -> Cqe {
        let sq = HOST_BASE + 0x10_0000 + qid as u64 * 0x2_0000;
        let cq = sq + 0x1_0000;
        let c = self.admin_cmd(AdminSqe::create_io_queue_pair(
            qid,
            size,
            sq,
            cq,
            Some(vector),
        ));
        if c.status == 0 {
            // Doorbells rung on an earlier queue of this id are not this one's.
            self.fw
                .p
                .test_sq_doorbells
                .retain(|&(q, _)| q != u32::from(qid));
            self.io.insert(qid, HostQueue::new(qid, size, sq, cq));
        }
        c
    }

    pub fn set_profile(&mut self, slot: u32, p: &Profile) -> Cqe {
        self.fw.p.host_write(ADMIN_DATA, &encode_profile(p));
        self.admin_cmd(AdminSqe::set_profile(slot, ADMIN_DATA))
    }

    pub fn submit(&mut self, qid: u16, sqe: &Sqe) {
        self.push(qid, sqe.encode());
    }

    pub fn submit_raw(&mut self, qid: u16, b: [u8; 64]) {
        self.push(qid, b);
    }

    /// Runs until `n` completions of `qid` arrived (bounded), reaping them.
    pub fn collect(&mut self, qid: u16, n: usize, max_steps: usize) -> Vec<Cqe> {
        let mut out = Vec::new();
        for _ in 0..max_steps {
            out.extend(self.reap(qid));
            if out.len() >= n {
                break;
            }
            self.run(1);
        }
        out
    }
}

/// Input arena for request data in host memory.
pub const DATA: u64 = HOST_BASE + 0x40_0000;
pub const OUT: u64 = HOST_BASE + 0x60_0000;
