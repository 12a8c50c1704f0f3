//! A test double of the card: a [`Transport`] whose "card" is a thread that
//! serves the spec's admin and I/O queues from the DMA arena with the golden
//! model. It lets the driver be tested (and misbehaved against) without the
//! emulated card: see [`Behaviour`].
#![forbid(unsafe_code)]

use crate::dma::{DmaMem, EventFd};
use crate::transport::{Op, TResult, Transport, TransportError};
use preba_protocol::admin::{
    AdminOpcode, AdminSqe, CuStats, Identify, PROFILE_SIZE, Telemetry, parse_profile,
};
use preba_protocol::io::{CQE_SIZE, Cqe, SQE_SIZE, Sqe};
use preba_protocol::media;
use preba_protocol::profile::{MAX_PROFILES, Profile};
use preba_protocol::regs;
use preba_protocol::ring::{CqProducer, SqConsumer};
use preba_protocol::status::Status;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the fake card (mis)behaves on the I/O queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Follows the spec.
    Normal,
    /// Takes I/O requests but never completes them.
    Silent,
    /// Posts every completion twice.
    DuplicateCompletion,
    /// Completes with a command id nobody submitted.
    UnknownCid,
    /// Reports an SQ head the host never published.
    BadSqHead,
    /// Every BAR access fails after this many I/O requests (a dead card).
    DieAfter(u64),
    /// Otherwise normal, but speaks this protocol version (major, minor) in VS and IDENTIFY.
    Version(u16, u16),
}

pub const FAKE_BUILD_ID: u64 = 0x0fa4_e000_0000_0001;

struct Queue {
    sq_base: u64,
    cq_base: u64,
    sq: SqConsumer,
    cq: CqProducer,
    backlog: VecDeque<Cqe>,
    sq_tail: Option<u32>,
    cq_head: Option<u32>,
}

#[derive(Default)]
struct State {
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    admin: Option<Queue>,
    io: Option<Queue>,
    profiles: [Option<Profile>; MAX_PROFILES],
    requests: u64,
    errors: u64,
    dirty: bool,
}

struct Shared {
    arena: DmaMem,
    irq: EventFd,
    state: Mutex<State>,
    cv: Condvar,
    stop: AtomicBool,
    dead: AtomicBool,
    behaviour: Behaviour,
    served: AtomicU64,
    died_at: Mutex<Option<Instant>>,
}

/// The fake card; drop stops its thread.
pub struct FakeCard {
    s: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl FakeCard {
    pub fn new(arena_bytes: usize, behaviour: Behaviour) -> std::io::Result<FakeCard> {
        let s = Arc::new(Shared {
            arena: DmaMem::new(arena_bytes, crate::driver::ARENA_IOVA)?,
            irq: EventFd::new()?,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            behaviour,
            served: AtomicU64::new(0),
            died_at: Mutex::new(None),
        });
        let s2 = s.clone();
        let worker = std::thread::Builder::new()
            .name("fake-card".into())
            .spawn(move || s2.run())?;
        Ok(FakeCard {
            s,
            worker: Some(worker),
        })
    }
    /// I/O requests the card has finished (completion posted or dropped).
    pub fn served(&self) -> u64 {
        self.s.served.load(Ordering::SeqCst)
    }
    /// Makes every later BAR access fail, as if the card process died.
    pub fn kill(&self) {
        if let Ok(mut d) = self.s.died_at.lock() {
            d.get_or_insert_with(Instant::now);
        }
        self.s.dead.store(true, Ordering::SeqCst);
    }
    /// When the card died ([`Behaviour::DieAfter`] or [`FakeCard::kill`]).
    pub fn died_at(&self) -> Option<Instant> {
        self.s.died_at.lock().ok().and_then(|d| *d)
    }
}

impl Drop for FakeCard {
    fn drop(&mut self) {
        self.s.stop.store(true, Ordering::SeqCst);
        self.s.cv.notify_all();
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}

impl Transport for FakeCard {
    fn name(&self) -> String {
        "fake".into()
    }
    fn bar0_read(&self, off: u64, data: &mut [u8]) -> TResult<()> {
        self.s.alive()?;
        let st = self.s.state.lock().map_err(|_| gone())?;
        let v: u64 = match off {
            regs::CAP => 4095 | (8 << 16) | (20 << 24) | (16u64 << 32),
            regs::VS => match self.s.behaviour {
                Behaviour::Version(major, minor) => u64::from(major) << 16 | u64::from(minor),
                _ => u64::from(regs::VERSION_MAJOR) << 16 | u64::from(regs::VERSION_MINOR),
            },
            regs::CC => st.cc.into(),
            regs::CSTS => st.csts.into(),
            regs::AQA => st.aqa.into(),
            regs::ASQ => st.asq,
            regs::ACQ => st.acq,
            regs::FWVER => FAKE_BUILD_ID,
            _ => 0,
        };
        let b = v.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&b[..n]);
        Ok(())
    }
    fn bar0_write(&self, off: u64, data: &[u8]) -> TResult<()> {
        self.s.alive()?;
        let mut b = [0u8; 8];
        let n = data.len().min(8);
        b[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(b);
        let mut st = self.s.state.lock().map_err(|_| gone())?;
        match off {
            regs::CC => {
                let was = st.cc & 1;
                st.cc = v as u32;
                if was == 1 && v & 1 == 0 {
                    st.admin = None;
                    st.io = None;
                    st.csts = 0;
                    st.profiles = [None; MAX_PROFILES];
                } else if was == 0 && v & 1 == 1 {
                    let sq = (st.aqa & 0xfff) as u16 + 1;
                    let cq = ((st.aqa >> 16) & 0xfff) as u16 + 1;
                    match (SqConsumer::new(sq), CqProducer::new(cq)) {
                        (Some(s), Some(c)) => {
                            st.admin = Some(Queue {
                                sq_base: st.asq,
                                cq_base: st.acq,
                                sq: s,
                                cq: c,
                                backlog: VecDeque::new(),
                                sq_tail: None,
                                cq_head: None,
                            });
                            st.csts = regs::CSTS_RDY;
                        }
                        _ => st.csts = regs::CSTS_CFS,
                    }
                }
            }
            regs::AQA => st.aqa = v as u32,
            regs::ASQ => st.asq = v,
            regs::ACQ => st.acq = v,
            o if (regs::DOORBELL_BASE..regs::DOORBELL_BASE + 16).contains(&o) => {
                let q = if o < regs::DOORBELL_BASE + 8 {
                    st.admin.as_mut()
                } else {
                    st.io.as_mut()
                };
                if let Some(q) = q {
                    if o % 8 == 0 {
                        q.sq_tail = Some(v as u32);
                    } else {
                        q.cq_head = Some(v as u32);
                    }
                }
            }
            _ => {}
        }
        st.dirty = true;
        drop(st);
        self.s.cv.notify_all();
        Ok(())
    }
    fn bar2_read(&self, _off: u64, data: &mut [u8]) -> TResult<()> {
        self.s.alive()?;
        data.fill(0);
        Ok(())
    }
    fn arena(&self) -> &DmaMem {
        &self.s.arena
    }
    fn wait_irq(&self, vector: u16, timeout: Duration) -> TResult<bool> {
        self.s.alive()?;
        self.s
            .irq
            .wait(timeout)
            .map_err(|source| TransportError::Io {
                op: Op::IrqWait { vector },
                source,
            })
    }
}

fn gone() -> TransportError {
    TransportError::Lost
}

impl Shared {
    fn alive(&self) -> TResult<()> {
        if self.dead.load(Ordering::SeqCst) {
            Err(gone())
        } else {
            Ok(())
        }
    }

    fn run(&self) {
        while !self.stop.load(Ordering::SeqCst) {
            let mut st = match self.state.lock() {
                Ok(s) => s,
                Err(_) => return,
            };
            if !st.dirty {
                st = match self.cv.wait_timeout(st, Duration::from_millis(5)) {
                    Ok((s, _)) => s,
                    Err(_) => return,
                };
            }
            st.dirty = false;
            self.serve_admin(&mut st);
            // Fetch under the lock, compute without it (BAR accesses go on
            // meanwhile), post under it again.
            let Some(mut q) = st.io.take() else { continue };
            self.take_cq_head(&mut q);
            let entries: Vec<_> = self
                .fetch(&mut q)
                .into_iter()
                .map(|b| (b, q.sq.head()))
                .collect();
            let profiles = st.profiles;
            st.io = Some(q);
            drop(st);
            if entries.is_empty() {
                continue;
            }
            let mut done = Vec::new();
            for (b, head) in entries {
                let n = self.served.fetch_add(1, Ordering::SeqCst) + 1;
                match self.behaviour {
                    Behaviour::Silent => continue,
                    Behaviour::DieAfter(k) if n > k => {
                        if let Ok(mut d) = self.died_at.lock() {
                            d.get_or_insert_with(Instant::now);
                        }
                        self.dead.store(true, Ordering::SeqCst);
                        continue;
                    }
                    _ => {}
                }
                let mut cqe = self.io(&profiles, &b);
                cqe.sq_head = head;
                cqe.sq_id = 1;
                done.push(cqe);
            }
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            let Some(mut q) = st.io.take() else { continue };
            for mut cqe in done {
                st.requests += 1;
                if cqe.status != 0 {
                    st.errors += 1;
                }
                match self.behaviour {
                    Behaviour::DuplicateCompletion => {
                        self.post(&mut q, cqe);
                        self.post(&mut q, cqe);
                    }
                    Behaviour::UnknownCid => {
                        cqe.cid = cqe.cid.wrapping_add(1000);
                        self.post(&mut q, cqe);
                    }
                    Behaviour::BadSqHead => {
                        cqe.sq_head = cqe.sq_head.wrapping_add(7) & (q.sq.size() - 1);
                        self.post(&mut q, cqe);
                    }
                    _ => {
                        self.post(&mut q, cqe);
                    }
                }
            }
            st.io = Some(q);
            drop(st);
            let _ = self.irq.signal();
        }
    }

    fn iova_off(&self, iova: u64, len: u64) -> Option<usize> {
        self.arena.offset_of(iova, len)
    }

    fn post(&self, q: &mut Queue, mut cqe: Cqe) -> bool {
        let Some((slot, phase)) = q.cq.push() else {
            q.backlog.push_back(cqe);
            return false;
        };
        cqe.phase = phase;
        let b = cqe.encode();
        let Some(off) = self.iova_off(q.cq_base + slot as u64 * CQE_SIZE as u64, CQE_SIZE as u64)
        else {
            return false;
        };
        let _ = self.arena.write(off, &b[..30]);
        let _ = self
            .arena
            .store_u16_release(off + 30, u16::from_le_bytes([b[30], b[31]]));
        true
    }

    fn take_cq_head(&self, q: &mut Queue) {
        if let Some(h) = q.cq_head.take() {
            let _ = q.cq.doorbell(h);
        }
        while let Some(c) = q.backlog.front().copied() {
            if q.cq.free() == 0 {
                break;
            }
            q.backlog.pop_front();
            self.post(q, c);
        }
    }

    fn fetch(&self, q: &mut Queue) -> Vec<[u8; SQE_SIZE]> {
        let mut v = Vec::new();
        if let Some(t) = q.sq_tail.take()
            && q.sq.doorbell(t).is_err()
        {
            return v;
        }
        while let Some(slot) = q.sq.pop() {
            let mut b = [0u8; SQE_SIZE];
            if let Some(off) =
                self.iova_off(q.sq_base + slot as u64 * SQE_SIZE as u64, SQE_SIZE as u64)
            {
                let _ = self.arena.read(off, &mut b);
            }
            v.push(b);
        }
        v
    }

    fn serve_admin(&self, st: &mut State) {
        let Some(mut q) = st.admin.take() else { return };
        self.take_cq_head(&mut q);
        for b in self.fetch(&mut q) {
            let head = q.sq.head();
            let mut cqe = Cqe {
                sq_head: head,
                sq_id: 0,
                cid: u16::from_le_bytes([b[2], b[3]]),
                ..Cqe::default()
            };
            let status = match AdminSqe::parse(&b) {
                Err(e) => e.status(),
                Ok((op, sqe)) => self.admin(st, op, &sqe),
            };
            cqe.status = status as u16;
            self.post(&mut q, cqe);
        }
        if st.csts & regs::CSTS_RDY != 0 {
            st.admin = Some(q);
        }
    }

    fn admin(&self, st: &mut State, op: AdminOpcode, sqe: &AdminSqe) -> Status {
        let data = self.iova_off(sqe.data_iova, sqe.data_len.into());
        match op {
            AdminOpcode::Identify => {
                let mut id = Identify {
                    version_major: 1,
                    fw_build_id: FAKE_BUILD_ID,
                    image_cus: 2,
                    audio_cus: 1,
                    norm_cus: 1,
                    max_io_queues: 8,
                    max_queue_entries: 4096,
                    max_sg: 16,
                    profile_slots: 16,
                    max_input_bytes: 64 << 20,
                    max_image_side: 16384,
                    max_image_pixels: 64 << 20,
                    card_mem_bytes: 1 << 30,
                    clock_mhz: 250,
                    ..Identify::default()
                };
                id.fw_version[..4].copy_from_slice(b"fake");
                let enc = id.encode();
                match data {
                    Some(o) => {
                        let n = enc.len().min(sqe.data_len as usize);
                        let _ = self.arena.write(o, &enc[..n]);
                        Status::Success
                    }
                    None => Status::DmaFault,
                }
            }
            AdminOpcode::SetProfile => {
                let slot = sqe.cdw[0] as usize;
                let mut b = [0u8; PROFILE_SIZE];
                match data {
                    Some(o) if sqe.data_len as usize >= PROFILE_SIZE && slot < MAX_PROFILES => {
                        let _ = self.arena.read(o, &mut b);
                        match parse_profile(&b) {
                            Ok(p) => {
                                st.profiles[slot] = Some(p);
                                Status::Success
                            }
                            Err(_) => Status::InvalidField,
                        }
                    }
                    Some(_) => Status::InvalidField,
                    None => Status::DmaFault,
                }
            }
            AdminOpcode::CreateIoQueuePair => {
                let qid = sqe.cdw[0] & 0xffff;
                let size = (sqe.cdw[0] >> 16) as u16 as u32 + 1;
                let cq_base = u64::from(sqe.cdw[1]) | u64::from(sqe.cdw[2]) << 32;
                if qid != 1 || size > 4096 {
                    return Status::InvalidField;
                }
                let size = size as u16;
                match (SqConsumer::new(size), CqProducer::new(size)) {
                    (Some(s), Some(c)) => {
                        st.io = Some(Queue {
                            sq_base: sqe.data_iova,
                            cq_base,
                            sq: s,
                            cq: c,
                            backlog: VecDeque::new(),
                            sq_tail: None,
                            cq_head: None,
                        });
                        Status::Success
                    }
                    _ => Status::InvalidField,
                }
            }
            AdminOpcode::GetTelemetry => {
                let mut t = Telemetry {
                    requests: st.requests,
                    errors: st.errors,
                    cu_count: 1,
                    ..Telemetry::default()
                };
                t.cus[0] = CuStats {
                    kind: 0,
                    requests: st.requests as u32,
                    ..CuStats::default()
                };
                let enc = t.encode();
                match data {
                    Some(o) => {
                        let n = enc.len().min(sqe.data_len as usize);
                        let _ = self.arena.write(o, &enc[..n]);
                        Status::Success
                    }
                    None => Status::DmaFault,
                }
            }
            _ => Status::Success,
        }
    }

    fn io(&self, profiles: &[Option<Profile>; MAX_PROFILES], b: &[u8; SQE_SIZE]) -> Cqe {
        let mut cqe = Cqe {
            cid: u16::from_le_bytes([b[2], b[3]]),
            ..Cqe::default()
        };
        let sqe = match Sqe::parse(b) {
            Ok(s) => s.raw,
            Err(e) => {
                cqe.status = e.status() as u16;
                return cqe;
            }
        };
        let Some(profile) = profiles[sqe.profile as usize] else {
            cqe.status = Status::InvalidField as u16;
            return cqe;
        };
        let (Some(in_off), Some(out_off)) = (
            self.iova_off(sqe.sg[0].iova, sqe.in_len.into()),
            self.iova_off(sqe.out_iova, sqe.out_len.into()),
        ) else {
            cqe.status = Status::DmaFault as u16;
            return cqe;
        };
        let mut input = vec![0u8; sqe.in_len as usize];
        let _ = self.arena.read(in_off, &mut input);
        let result = match profile {
            Profile::Image(p) => match media::probe_jpeg(&mut &input[..]) {
                Err(e) => Err(e.status()),
                Ok(probe) => match probe.card_check() {
                    Err(e) => Err(e.status()),
                    Ok(()) => preba_preprocess::image::preprocess_image(&input, &p)
                        .map(|o| (o.width, o.height, o.data))
                        .map_err(|e| e.status()),
                },
            },
            Profile::Audio(p) => preba_preprocess::audio::preprocess_audio(&input, &p)
                .map(|o| {
                    let mut d = Vec::with_capacity(o.features.data.len() * 4);
                    for v in &o.features.data {
                        d.extend_from_slice(&v.to_le_bytes());
                    }
                    (o.info.sample_rate, o.info.frames as u32, d)
                })
                .map_err(|e| e.status()),
        };
        match result {
            Ok((r0, r1, data)) if data.len() <= sqe.out_len as usize => {
                let _ = self.arena.write(out_off, &data);
                cqe.result0 = r0;
                cqe.result1 = r1;
                cqe.written = data.len() as u32;
            }
            Ok(_) => cqe.status = Status::OutputTooSmall as u16,
            Err(s) => cqe.status = s as u16,
        }
        cqe
    }
}
