//! The firmware's state machine: controller, queues, requests, CUs.
//!
//! One thread, no interrupts taken: the main loop ([`Firmware::run`]) calls
//! [`Firmware::poll`] until it makes no progress, then sleeps with wfi until
//! an interrupt source is pending or the next deadline (watchdog, coalescing,
//! memory wait, heartbeat) passes. Every wait is bounded.

use crate::Platform;
use crate::alloc::CardAlloc;
use crate::hal::{LED_ERROR, LED_HEARTBEAT, Led};
use crate::hw::{self, CardInfo, DmaError, cu_reg};
use embedded_hal::digital::{OutputPin, PinState};
use heapless::{Deque, Vec};
use preba_protocol::card;
use preba_protocol::io::{IoOpcode, SQE_FLAG_SG_INDIRECT, SQE_FLAG_URGENT, SQE_SIZE, Sqe};
use preba_protocol::profile::{AudioNorm, MAX_PROFILES, Profile};
use preba_protocol::regs::{self, QueueFault};
use preba_protocol::ring::{CqProducer, SqConsumer};
use preba_protocol::status::Status;

/// I/O queue pairs (qid 1..=MAX_IO_QUEUES).
pub const MAX_IO_QUEUES: usize = 8;
/// Requests the card holds at once (fetched and not yet posted), all queues.
pub const MAX_REQ: usize = 64;
/// Most SQEs fetched with one DMA.
pub const FETCH_BATCH: u16 = 16;
/// Most requests staged (input DMA + probe) per poll.
pub(crate) const STAGE_PER_POLL: usize = 4;

/// Card-memory layout (offsets from `card::CARD_MEM_BASE`).
pub const SQE_BOUNCE: u32 = card::CARD_MEM_BASE;
pub const SG_BOUNCE: u32 = card::CARD_MEM_BASE + 0x800;
pub const CQE_BOUNCE: u32 = card::CARD_MEM_BASE + 0xC00;
pub const ADMIN_BOUNCE: u32 = card::CARD_MEM_BASE + 0x1000;
/// Staging area of FIRMWARE_DOWNLOAD.
pub const FW_STAGING: u32 = card::CARD_MEM_BASE + 0x1_0000;
pub const FW_MAX: u32 = preba_protocol::fwimage::IMAGE_MAX;
/// Input/output staging heap: from here to the end of card memory.
pub const HEAP_OFFSET: u32 = 0x8_0000;

/// Watchdog: a CU job may run `WD_BASE_TICKS` + `WD_TICKS_PER_BYTE` x input bytes
/// (5 s + ~1 s per MiB at 10 MHz mtime) before its CU is reset.
pub const WD_BASE_TICKS: u64 = 5 * card::MTIME_HZ as u64;
pub const WD_TICKS_PER_BYTE: u64 = 10;
/// Longest a request waits for card memory before it completes TIMEOUT.
pub const MEM_WAIT_TICKS: u64 = 2 * card::MTIME_HZ as u64;
/// Coalescing time used when a count threshold > 1 is set with time 0 (100 us).
pub const DEFAULT_COAL_TICKS: u64 = card::MTIME_HZ as u64 / 10_000;
/// Heartbeat LED and power sampling period (500 ms).
pub const HEARTBEAT_TICKS: u64 = card::MTIME_HZ as u64 / 2;
/// Longest sleep of the main loop.
const MAX_SLEEP_TICKS: u64 = card::MTIME_HZ as u64;

/// Job kinds, also the index of the ready queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Job {
    Image = 0,
    Mel = 1,
    Norm = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Waiting for card memory and its input DMA.
    Staging,
    /// Input in card memory, waiting for a CU of `job`'s kind.
    Ready,
    Running,
    /// FLUSH waiting for the earlier commands of its queue.
    Flush,
    /// Completed; waiting for a CQ slot.
    Done,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Req {
    pub qid: u8,
    pub cid: u16,
    pub seq: u32,
    pub urgent: bool,
    pub op: IoOpcode,
    pub sqe: Sqe,
    pub profile: Option<Profile>,
    pub stage: Stage,
    pub job: Job,
    pub cu: u8,
    pub mem: u32,
    pub mem_len: u64,
    pub prof_addr: u32,
    pub in_addr: u32,
    pub out_addr: u32,
    pub out_cap: u32,
    pub norm_addr: u32,
    pub mel_written: u32,
    pub deadline: u64,
    pub result0: u32,
    pub result1: u32,
    pub cycles: u64,
    pub written: u32,
    pub status: Status,
}

impl Req {
    fn new(qid: u8, cid: u16, seq: u32) -> Req {
        Req {
            qid,
            cid,
            seq,
            urgent: false,
            op: IoOpcode::Nop,
            sqe: Sqe::default(),
            profile: None,
            stage: Stage::Done,
            job: Job::Image,
            cu: 0,
            mem: 0,
            mem_len: 0,
            prof_addr: 0,
            in_addr: 0,
            out_addr: 0,
            out_cap: 0,
            norm_addr: 0,
            mel_written: 0,
            deadline: 0,
            result0: 0,
            result1: 0,
            cycles: 0,
            written: 0,
            status: Status::Success,
        }
    }
}

pub(crate) struct Queue {
    pub qid: u8,
    pub sq: SqConsumer,
    pub cq: CqProducer,
    pub sq_base: u64,
    pub cq_base: u64,
    pub vector: u16,
    pub irq: bool,
    pub stopped: bool,
    pub seq: u32,
    pub done: Deque<u8, MAX_REQ>,
    pub coal_count: u8,
    pub coal_ticks: u64,
    pub pending_irq: u16,
    pub first_pending: u64,
}

impl Queue {
    pub fn new(qid: u8, sq: SqConsumer, cq: CqProducer, sq_base: u64, cq_base: u64) -> Queue {
        Queue {
            qid,
            sq,
            cq,
            sq_base,
            cq_base,
            vector: 0,
            irq: true,
            stopped: false,
            seq: 0,
            done: Deque::new(),
            coal_count: 0,
            coal_ticks: 0,
            pending_irq: 0,
            first_pending: 0,
        }
    }
}

/// Per-CU state and counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cu {
    /// CU_KIND as read at boot (0 image, 1 Mel, 2 normalize; other: unusable).
    pub kind: u8,
    pub busy: Option<u8>,
    pub deadline: u64,
    pub requests: u32,
    pub busy_cycles: u64,
    pub errors: u32,
    pub resets: u32,
    pub energy_nj: u64,
}

/// Card-wide counters (telemetry header).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub power_mw: u32,
    pub energy_uj: u64,
    pub last_power_t: u64,
}

/// The firmware. `p` is public so tests can inspect their platform double.
pub struct Firmware<P: Platform> {
    pub p: P,
    pub(crate) info: CardInfo,
    pub(crate) build_id: u64,
    pub(crate) enabled: bool,
    pub(crate) fatal: bool,
    pub(crate) qfault_latched: bool,
    pub(crate) admin: Option<Queue>,
    pub(crate) io: [Option<Queue>; MAX_IO_QUEUES],
    pub(crate) profiles: [Option<Profile>; MAX_PROFILES],
    pub(crate) reqs: [Option<Req>; MAX_REQ],
    pub(crate) staging: Deque<u8, MAX_REQ>,
    pub(crate) ready: [Deque<u8, MAX_REQ>; 3],
    pub(crate) cus: Vec<Cu, { card::MAX_CUS as usize }>,
    pub(crate) alloc: CardAlloc,
    pub(crate) coal_default: (u8, u64),
    pub(crate) stats: Stats,
    pub(crate) boot_t: u64,
    pub(crate) next_heartbeat: u64,
    pub(crate) led: bool,
    pub(crate) power_ok: bool,
    pub(crate) fw_staged: u32,
    pub(crate) rr: usize,
    /// FLUSH commands waiting (so the common case skips the scan).
    pub(crate) n_flush: u16,
}

impl<P: Platform> Firmware<P> {
    /// Boots: reads the card configuration, publishes FWVER, resets the CUs,
    /// enables the interrupt sources it sleeps on, probes the power monitor.
    pub fn new(mut p: P, build_id: u64) -> Self {
        let info = CardInfo::read(&mut p);
        p.write32(card::HOSTIF_FWVER_LO, build_id as u32);
        p.write32(card::HOSTIF_FWVER_HI, (build_id >> 32) as u32);
        p.write32(card::HOSTIF_CSTS, 0);
        p.write32(card::HOSTIF_QFAULT, 0);
        let mut cus = Vec::new();
        let mut irq = card::IRQ_HOST | card::IRQ_DMA;
        for i in 0..info.cu_count() {
            let kind = p.read32(cu_reg(i, card::CU_KIND));
            p.write32(cu_reg(i, card::CU_CTRL), card::CU_CTRL_RESET);
            let _ = cus.push(Cu {
                kind: kind.min(255) as u8,
                ..Cu::default()
            });
            irq |= 1 << (card::IRQ_CU_SHIFT + i as u32);
        }
        p.write32(card::IRQ_ACK, u32::MAX);
        p.write32(card::IRQ_ENABLE, irq);
        let heap = info.mem_size.saturating_sub(HEAP_OFFSET);
        let alloc = CardAlloc::new(card::CARD_MEM_BASE + HEAP_OFFSET, heap);
        let now = p.now();
        let mut fw = Firmware {
            p,
            info,
            build_id,
            enabled: false,
            fatal: false,
            qfault_latched: false,
            admin: None,
            io: Default::default(),
            profiles: [None; MAX_PROFILES],
            reqs: [None; MAX_REQ],
            staging: Deque::new(),
            ready: [Deque::new(), Deque::new(), Deque::new()],
            cus,
            alloc,
            coal_default: (0, 0),
            stats: Stats {
                last_power_t: now,
                ..Stats::default()
            },
            boot_t: now,
            next_heartbeat: now + HEARTBEAT_TICKS,
            led: false,
            power_ok: false,
            fw_staged: 0,
            rr: 0,
            n_flush: 0,
        };
        fw.power_ok = fw.power_init();
        fw_log!(
            info,
            "boot: build {=u64:x}, {=u8} image + {=u8} mel + {=u8} norm CUs, {=u32} B card memory, core {=u32} Hz, power monitor {=bool}",
            build_id,
            info.image_cus,
            info.audio_cus,
            info.norm_cus,
            info.mem_size,
            info.core_hz,
            fw.power_ok
        );
        fw
    }

    /// The card configuration read at boot.
    pub fn info(&self) -> CardInfo {
        self.info
    }

    /// Serves forever: poll until idle, then sleep until an event or deadline.
    pub fn run(&mut self) -> ! {
        loop {
            self.step();
        }
    }

    /// One iteration of the main loop: poll, and sleep when nothing moved.
    pub fn step(&mut self) {
        if !self.poll() {
            let d = self.next_deadline();
            self.p.wait_for_event(d);
        }
    }

    /// Handles every pending event once; true when anything progressed.
    pub fn poll(&mut self) -> bool {
        let pending = self.p.read32(card::IRQ_PENDING);
        if pending != 0 {
            self.p.write32(card::IRQ_ACK, pending);
        }
        // CC before the events: a CC write landing between the two then shows as
        // an event with the old CC (harmless: the next poll reads the new level),
        // never as the new CC plus an event left for the next poll, which read as
        // an EN 1 -> 0 -> 1 toggle there and reset the queues the host had just
        // started using (its first admin doorbell was lost).
        let en = self.p.read32(card::HOSTIF_CC) & regs::CC_EN != 0;
        let ev = self.p.read32(card::HOSTIF_EVENTS);
        if ev != 0 {
            self.p.write32(card::HOSTIF_EVENTS, ev);
        }
        let mut progress = self.controller(en, ev & card::HOSTIF_EVENT_CC != 0);
        if self.enabled && !self.fatal {
            progress |= self.doorbells();
            progress |= self.admin_step();
            progress |= self.cu_poll();
            progress |= self.dispatch();
            progress |= self.fetch_io();
            progress |= self.stage();
            progress |= self.flushes();
            progress |= self.post_all();
        } else {
            // Doorbells while disabled or stopped are dropped.
            for r in [card::HOSTIF_SQDB_PENDING, card::HOSTIF_CQDB_PENDING] {
                let v = self.p.read32(r);
                if v != 0 {
                    self.p.write32(r, v);
                }
            }
        }
        self.heartbeat();
        progress
    }

    /// When the main loop must wake up at the latest.
    pub fn next_deadline(&mut self) -> u64 {
        let now = self.p.now();
        let mut d = (now + MAX_SLEEP_TICKS).min(self.next_heartbeat);
        for c in self.cus.iter().filter(|c| c.busy.is_some()) {
            d = d.min(c.deadline);
        }
        if let Some(&idx) = self.staging.front()
            && let Some(r) = &self.reqs[idx as usize]
        {
            d = d.min(r.deadline);
        }
        for q in self.io.iter().flatten() {
            if q.pending_irq > 0 {
                d = d.min(q.first_pending + coal_time(q));
            }
        }
        d
    }

    fn heartbeat(&mut self) {
        let now = self.p.now();
        if now < self.next_heartbeat {
            return;
        }
        self.next_heartbeat = now + HEARTBEAT_TICKS;
        self.led = !self.led;
        let _ = Led {
            p: &mut self.p,
            bit: LED_HEARTBEAT,
        }
        .set_state(PinState::from(self.led));
        self.sample_power();
    }

    fn set_error_led(&mut self, on: bool) {
        let _ = Led {
            p: &mut self.p,
            bit: LED_ERROR,
        }
        .set_state(PinState::from(on));
    }

    // ---- controller -------------------------------------------------------

    /// Follows CC.EN (`en`, read before the events). A CC write seen while
    /// enabled with EN still 1 means the host toggled EN 1 -> 0 -> 1 between
    /// two polls (CC has no other bit): reset, then enable again.
    fn controller(&mut self, en: bool, cc_written: bool) -> bool {
        match (self.enabled, en) {
            (false, true) => {
                self.enable();
                true
            }
            (true, false) => {
                self.reset();
                true
            }
            (true, true) if cc_written => {
                self.reset();
                self.enable();
                true
            }
            _ => false,
        }
    }

    fn enable(&mut self) {
        self.enabled = true;
        let aqa = self.p.read32(card::HOSTIF_AQA);
        let asq = self.p.read32(card::HOSTIF_ASQ_LO) as u64
            | (self.p.read32(card::HOSTIF_ASQ_HI) as u64) << 32;
        let acq = self.p.read32(card::HOSTIF_ACQ_LO) as u64
            | (self.p.read32(card::HOSTIF_ACQ_HI) as u64) << 32;
        let sqs = (aqa & 0xfff) + 1;
        let cqs = ((aqa >> 16) & 0xfff) + 1;
        let ok_base = |b: u64| b & 0xfff == 0;
        let rings = SqConsumer::new(sqs as u16).zip(CqProducer::new(cqs as u16));
        match rings {
            Some((sq, cq))
                if ok_base(asq)
                    && ok_base(acq)
                    && asq.checked_add(sqs as u64 * SQE_SIZE as u64).is_some()
                    && acq.checked_add(cqs as u64 * 32).is_some() =>
            {
                self.admin = Some(Queue::new(0, sq, cq, asq, acq));
                self.p.write32(card::HOSTIF_CSTS, regs::CSTS_RDY);
                fw_log!(
                    info,
                    "controller enabled: admin SQ {=u32} CQ {=u32}",
                    sqs,
                    cqs
                );
            }
            _ => {
                fw_log!(error, "BAD_ADMIN_CONFIG aqa {=u32:x}", aqa);
                self.queue_fault(0, QueueFault::BadAdminConfig);
            }
        }
    }

    /// CC.EN 1 -> 0: abort everything, drop the queues, clear the faults.
    fn reset(&mut self) {
        self.p.write32(card::HOSTIF_CSTS, regs::CSTS_SHST);
        for i in 0..self.cus.len() {
            if self.cus[i].busy.take().is_some() {
                self.p
                    .write32(cu_reg(i, card::CU_CTRL), card::CU_CTRL_RESET);
            }
        }
        self.reqs = [None; MAX_REQ];
        self.n_flush = 0;
        self.staging.clear();
        for r in self.ready.iter_mut() {
            r.clear();
        }
        self.admin = None;
        self.io = Default::default();
        self.profiles = [None; MAX_PROFILES];
        self.alloc.reset();
        self.coal_default = (0, 0);
        self.fw_staged = 0;
        self.fatal = false;
        self.qfault_latched = false;
        self.enabled = false;
        // Doorbells rung before the reset mean nothing to the new queues.
        self.p.write32(card::HOSTIF_SQDB_PENDING, u32::MAX);
        self.p.write32(card::HOSTIF_CQDB_PENDING, u32::MAX);
        self.p.write32(card::HOSTIF_QFAULT, 0);
        self.p.write32(card::HOSTIF_CSTS, 0);
        self.set_error_led(false);
        fw_log!(info, "controller reset");
    }

    /// Latches a sticky queue fault (the first one wins) and stops the queue;
    /// on the admin queue, stops the controller (CSTS.CFS).
    pub(crate) fn queue_fault(&mut self, qid: u8, f: QueueFault) {
        if !self.qfault_latched {
            self.qfault_latched = true;
            self.p.write32(card::HOSTIF_QFAULT, f.encode(qid));
        }
        fw_log!(error, "queue {=u8} fault {=str}", qid, f.name());
        self.set_error_led(true);
        if qid == 0 {
            self.fatal = true;
            let csts = self.p.read32(card::HOSTIF_CSTS);
            self.p.write32(card::HOSTIF_CSTS, csts | regs::CSTS_CFS);
        } else if let Some(q) = self.queue_mut(qid) {
            q.stopped = true;
            q.done.clear();
            // Nothing of a stopped queue is ever posted: abort its work and
            // free its request slots for the other queues.
            for i in 0..MAX_REQ {
                match self.reqs[i] {
                    Some(r) if r.qid == qid && r.stage == Stage::Done => self.reqs[i] = None,
                    Some(r) if r.qid == qid => self.abort_req(i),
                    _ => {}
                }
            }
        }
    }

    pub(crate) fn queue_mut(&mut self, qid: u8) -> Option<&mut Queue> {
        if qid == 0 {
            self.admin.as_mut()
        } else {
            self.io.get_mut(qid as usize - 1)?.as_mut()
        }
    }

    fn doorbells(&mut self) -> bool {
        let cq_bits = self.p.read32(card::HOSTIF_CQDB_PENDING);
        if cq_bits != 0 {
            self.p.write32(card::HOSTIF_CQDB_PENDING, cq_bits);
        }
        let sq_bits = self.p.read32(card::HOSTIF_SQDB_PENDING);
        if sq_bits != 0 {
            self.p.write32(card::HOSTIF_SQDB_PENDING, sq_bits);
        }
        let mut bits = cq_bits;
        while bits != 0 {
            let q = bits.trailing_zeros() as u8;
            bits &= bits - 1;
            {
                let v = self.p.read32(card::HOSTIF_DB_VALUES + 8 * q as u32 + 4);
                let r = match self.queue_mut(q) {
                    None => Err(QueueFault::NoSuchQueue),
                    Some(queue) if queue.stopped => Ok(0),
                    Some(queue) => queue.cq.doorbell(v),
                };
                if let Err(f) = r {
                    self.queue_fault(q, f);
                }
            }
        }
        let mut bits = sq_bits;
        while bits != 0 {
            let q = bits.trailing_zeros() as u8;
            bits &= bits - 1;
            {
                let v = self.p.read32(card::HOSTIF_DB_VALUES + 8 * q as u32);
                let r = match self.queue_mut(q) {
                    None => Err(QueueFault::NoSuchQueue),
                    Some(queue) if queue.stopped => Ok(0),
                    Some(queue) => queue.sq.doorbell(v),
                };
                if let Err(f) = r {
                    self.queue_fault(q, f);
                }
            }
        }
        cq_bits | sq_bits != 0
    }

    // ---- completions ------------------------------------------------------

    /// Writes a CQE to host memory: bytes 0..28, then the word holding the
    /// command id, status and phase, so the phase lands last.
    pub(crate) fn write_cqe(
        &mut self,
        base: u64,
        slot: u16,
        cqe: &preba_protocol::io::Cqe,
    ) -> bool {
        let Some(at) = base.checked_add(slot as u64 * 32) else {
            return false;
        };
        let b = cqe.encode();
        hw::write_card(&mut self.p, CQE_BOUNCE, &b);
        hw::dma(&mut self.p, at, CQE_BOUNCE, 28, true).is_ok()
            && hw::dma(&mut self.p, at + 28, CQE_BOUNCE + 28, 4, true).is_ok()
    }

    /// Posts what the CQs have room for; raises (coalesced) interrupts.
    fn post_all(&mut self) -> bool {
        let mut progress = false;
        for qi in 0..MAX_IO_QUEUES {
            progress |= self.post_queue(qi);
        }
        progress
    }

    pub(crate) fn post_queue(&mut self, qi: usize) -> bool {
        let mut progress = false;
        let mut urgent = false;
        loop {
            let Some(q) = self.io[qi].as_mut() else {
                return progress;
            };
            if q.stopped {
                break;
            }
            let Some(&idx) = q.done.front() else { break };
            let Some(r) = self.reqs[idx as usize] else {
                // Never happens (slots of queued completions stay taken);
                // skipping keeps the CQ free of holes if it did.
                q.done.pop_front();
                continue;
            };
            let Some((slot, phase)) = q.cq.push() else {
                break;
            };
            q.done.pop_front();
            self.reqs[idx as usize] = None;
            let cqe = preba_protocol::io::Cqe {
                result0: r.result0,
                result1: r.result1,
                cycles: r.cycles,
                written: r.written,
                sq_head: q.sq.head(),
                sq_id: q.qid as u16,
                cid: r.cid,
                status: r.status as u16,
                phase,
            };
            let (base, qid) = (q.cq_base, q.qid);
            progress = true;
            if !self.write_cqe(base, slot, &cqe) {
                self.queue_fault(qid, QueueFault::CqWriteFault);
                return progress;
            }
            let now = self.p.now();
            let q = self.io[qi].as_mut().expect("queue");
            if q.pending_irq == 0 {
                q.first_pending = now;
            }
            q.pending_irq = q.pending_irq.saturating_add(1);
            urgent |= r.urgent;
        }
        self.maybe_irq(qi, urgent);
        progress
    }

    fn maybe_irq(&mut self, qi: usize, force: bool) {
        let now = self.p.now();
        let Some(q) = self.io[qi].as_mut() else {
            return;
        };
        if q.pending_irq == 0 || q.stopped {
            return;
        }
        let t = coal_time(q);
        let due = force
            || t == 0
            || (q.coal_count != 0 && q.pending_irq >= q.coal_count as u16)
            || now >= q.first_pending + t;
        if due {
            q.pending_irq = 0;
            if q.irq {
                let v = q.vector as u32;
                self.p.write32(card::HOSTIF_IRQ_TRIGGER, v);
            }
        }
    }

    /// Completes a request: frees its card memory and queues its CQE.
    pub(crate) fn complete(&mut self, idx: usize, status: Status) {
        let Some(r) = self.reqs[idx].as_mut() else {
            return;
        };
        if r.mem_len != 0 {
            self.alloc.free(r.mem, r.mem_len);
            r.mem_len = 0;
        }
        if r.stage == Stage::Flush {
            self.n_flush -= 1;
        }
        r.status = status;
        r.stage = Stage::Done;
        let qid = r.qid;
        self.stats.requests += 1;
        if status != Status::Success {
            self.stats.errors += 1;
        }
        let ok = match self.queue_mut(qid) {
            Some(q) if !q.stopped => q.done.push_back(idx as u8).is_ok(),
            _ => false,
        };
        if !ok {
            self.reqs[idx] = None;
        }
    }

    /// Removes `idx` from the staging and ready queues.
    pub(crate) fn purge(&mut self, idx: u8) {
        let purge_one = |d: &mut Deque<u8, MAX_REQ>| {
            for _ in 0..d.len() {
                if let Some(v) = d.pop_front()
                    && v != idx
                {
                    let _ = d.push_back(v);
                }
            }
        };
        purge_one(&mut self.staging);
        for d in self.ready.iter_mut() {
            purge_one(d);
        }
    }

    /// Aborts a request that has not completed: resets its CU if it runs.
    pub(crate) fn abort_req(&mut self, idx: usize) {
        let Some(r) = self.reqs[idx] else { return };
        match r.stage {
            Stage::Done => return,
            Stage::Running => {
                let cu = r.cu as usize;
                if self.cus[cu].busy == Some(idx as u8) {
                    self.cus[cu].busy = None;
                    self.p
                        .write32(cu_reg(cu, card::CU_CTRL), card::CU_CTRL_RESET);
                }
            }
            Stage::Staging | Stage::Ready => self.purge(idx as u8),
            Stage::Flush => {}
        }
        self.complete(idx, Status::Aborted);
    }

    pub(crate) fn dma_status(e: DmaError) -> Status {
        match e {
            DmaError::Fault(_) => Status::DmaFault,
            DmaError::Timeout => Status::Timeout,
        }
    }

    // ---- requests -----------------------------------------------------------

    fn free_slot(&self) -> Option<usize> {
        self.reqs.iter().position(|r| r.is_none())
    }

    fn free_slots(&self) -> usize {
        self.reqs.iter().filter(|r| r.is_none()).count()
    }

    /// Fetches announced SQEs of every I/O queue (round robin) while request
    /// slots are free: one DMA per contiguous batch into card memory, then one
    /// word-copy of each entry into DMEM, which is all that is parsed.
    fn fetch_io(&mut self) -> bool {
        let mut progress = false;
        let announced = self
            .io
            .iter()
            .flatten()
            .any(|q| !q.stopped && q.sq.pending() != 0);
        if !announced {
            return false;
        }
        let mut free = self.free_slots() as u16;
        for k in 0..MAX_IO_QUEUES {
            let qi = (self.rr + k) % MAX_IO_QUEUES;
            if free == 0 {
                break;
            }
            let Some(q) = self.io[qi].as_mut() else {
                continue;
            };
            if q.stopped || q.sq.pending() == 0 {
                continue;
            }
            let head = q.sq.head();
            let n =
                q.sq.pending()
                    .min(q.sq.size() - head)
                    .min(FETCH_BATCH)
                    .min(free);
            let (src, qid) = (q.sq_base + head as u64 * SQE_SIZE as u64, q.qid);
            progress = true;
            free -= n;
            if hw::dma(
                &mut self.p,
                src,
                SQE_BOUNCE,
                n as u32 * SQE_SIZE as u32,
                false,
            )
            .is_err()
            {
                self.queue_fault(qid, QueueFault::SqFetchFault);
                continue;
            }
            for i in 0..n as u32 {
                let mut b = [0u8; SQE_SIZE];
                hw::read_card(&mut self.p, SQE_BOUNCE + i * SQE_SIZE as u32, &mut b);
                if let Some(q) = self.io[qi].as_mut() {
                    q.sq.pop();
                }
                self.accept(qid, &b);
            }
        }
        self.rr = (self.rr + 1) % MAX_IO_QUEUES;
        progress
    }

    /// Turns one SQE copy into a request (or its immediate completion).
    fn accept(&mut self, qid: u8, b: &[u8; SQE_SIZE]) {
        let Some(idx) = self.free_slot() else { return };
        let cid = u16::from_le_bytes([b[2], b[3]]);
        let Some(q) = self.queue_mut(qid) else { return };
        let seq = q.seq;
        q.seq = q.seq.wrapping_add(1);
        let mut r = Req::new(qid, cid, seq);
        r.urgent = b[1] & SQE_FLAG_URGENT != 0;
        let v = match Sqe::parse(b) {
            Ok(v) => v,
            Err(e) => {
                self.reqs[idx] = Some(r);
                self.complete(idx, e.status());
                return;
            }
        };
        r.op = v.op;
        r.sqe = v.raw;
        let status = match v.op {
            IoOpcode::Nop => Some(Status::Success),
            IoOpcode::Flush => {
                r.stage = Stage::Flush;
                self.n_flush += 1;
                None
            }
            IoOpcode::PreprocessImage | IoOpcode::PreprocessAudio => {
                let prof = self.profiles[v.raw.profile as usize];
                r.profile = prof;
                match (v.op, prof) {
                    (IoOpcode::PreprocessImage, Some(Profile::Image(_))) => {
                        (self.info.image_cus == 0).then_some(Status::UnsupportedFormat)
                    }
                    (IoOpcode::PreprocessAudio, Some(Profile::Audio(a))) => {
                        let need_norm = a.norm == AudioNorm::PerFeature;
                        (self.info.audio_cus == 0 || need_norm && self.info.norm_cus == 0)
                            .then_some(Status::UnsupportedFormat)
                    }
                    _ => Some(Status::InvalidField),
                }
            }
        };
        self.reqs[idx] = Some(r);
        match status {
            Some(s) => self.complete(idx, s),
            None if v.op == IoOpcode::Flush => {}
            None => {
                let now = self.p.now();
                if let Some(r) = self.reqs[idx].as_mut() {
                    r.stage = Stage::Staging;
                    r.deadline = now + MEM_WAIT_TICKS;
                }
                let _ = self.staging.push_back(idx as u8);
            }
        }
    }

    /// Completes FLUSHes whose earlier commands have all completed.
    fn flushes(&mut self) -> bool {
        let mut progress = false;
        if self.n_flush == 0 {
            return false;
        }
        for idx in 0..MAX_REQ {
            let Some(f) = &self.reqs[idx] else { continue };
            if f.stage != Stage::Flush {
                continue;
            }
            let (qid, seq) = (f.qid, f.seq);
            let blocked = self.reqs.iter().flatten().any(|r| {
                r.qid == qid && r.stage != Stage::Done && r.seq.wrapping_sub(seq) > u32::MAX / 2
            });
            if !blocked {
                self.complete(idx, Status::Success);
                progress = true;
            }
        }
        progress
    }
}

/// Effective coalescing time of a queue in ticks (0: no coalescing).
fn coal_time(q: &Queue) -> u64 {
    if q.coal_ticks == 0 {
        if q.coal_count > 1 {
            DEFAULT_COAL_TICKS
        } else {
            0
        }
    } else {
        q.coal_ticks
    }
}

/// Whether an SQE uses an indirect SG list.
pub(crate) fn indirect(sqe: &Sqe) -> bool {
    sqe.flags & SQE_FLAG_SG_INDIRECT != 0
}
