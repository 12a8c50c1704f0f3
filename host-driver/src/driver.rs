//! The card driver over any [`Transport`]: controller enable, admin
//! commands, one I/O queue pair, slot pools in the DMA arena, and the reaper
//! thread that takes completions (by interrupt or polling) and hands each to
//! the thread that waits for it.
//!
//! Invariants:
//! - every submitted request gets exactly one answer: its completion, its own
//!   timeout, or the card's fatal error; never two, never none;
//! - a slot returns to its pool only when the card is done with it (its
//!   completion arrived) or the card is dead: a timed-out request leaves its
//!   slot to the reaper, so a late DMA never lands in a reused buffer;
//! - completions are untrusted: a malformed entry, a wrong SQ id, an
//!   impossible SQ head, an unknown or duplicate command id, or an entry
//!   behind an empty CQ slot (a lost or garbled phase) is a queue error
//!   ([`QueueError`]): the card is marked dead and every in-flight request
//!   fails with [`CardError::Fatal`] naming the card, the cause typed. The
//!   rings and these checks are `preba_protocol::hostq`'s, the one host-side
//!   queue engine; this module supplies the memory ([`Rings`]: arena and BAR0)
//!   and the command ids in flight;
//! - shared memory is read once per entry (copy, then parse the copy).
#![forbid(unsafe_code)]

use crate::error::{CardFailure, QueueError, Refusal};
use crate::transport::{Regs, Transport};
use preba_protocol::admin::{
    AdminOpcode, AdminSqe, IDENTIFY_SIZE, Identify, TELEMETRY_SIZE, Telemetry, encode_profile,
};
use preba_protocol::hostq::{Cq, Doorbell, QueueMemory, QueuePair, Sq};
use preba_protocol::io::{CQE_SIZE, Cqe, IoOpcode, SQE_SIZE, SgEntry, Sqe};
use preba_protocol::profile::{MAX_PROFILES, Profile};
use preba_protocol::regs::{self, QueueFault};
use preba_protocol::status::Status;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Arena layout (offsets from the arena base).
const ADMIN_SQ: usize = 0x0000;
const ADMIN_CQ: usize = 0x1000;
const ADMIN_DATA: usize = 0x2000;
const ADMIN_DATA_LEN: usize = 0x2000;
const ADMIN_ENTRIES: u16 = 16;
const IO_RINGS: usize = 0x4000;
/// The I/O queue pair the driver creates and its MSI-X vector.
const IO_QID: u16 = 1;
/// Base IOVA of the arena (any 4 KiB-aligned value the card accepts).
pub const ARENA_IOVA: u64 = 0x1000_0000;

/// Knobs of the driver.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// I/O queue entries (power of two; capped by the card's CAP.MQES).
    pub queue_size: u16,
    /// Bytes of the DMA arena (sparse: only touched pages cost memory).
    pub arena_bytes: usize,
    /// Deadline of one admin command.
    pub admin_timeout: Duration,
    /// How long the reaper waits for an interrupt before looking anyway.
    pub poll_interval: Duration,
    /// How often the reaper checks CSTS/QFAULT (also notices a lost card).
    pub health_interval: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            queue_size: 64,
            arena_bytes: 256 << 20,
            admin_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(2),
            health_interval: Duration::from_millis(50),
        }
    }
}

pub use crate::error::CardError;

/// The answer to one request.
type Answer = Result<Cqe, CardError>;

struct Pending {
    tx: SyncSender<Answer>,
    /// The waiter gave up; the reaper frees the slot when the card answers.
    abandoned: bool,
    pool: Arc<PoolInner>,
    slot: usize,
    /// Held while the card may still write the caller's output region
    /// (`process_into`); dropped with the entry once the card answered or
    /// died, which is when the caller may reuse the region.
    _out_guard: Option<OutGuard>,
}

/// Keeps a caller-owned output region reserved while the card may write it.
pub type OutGuard = Arc<dyn std::any::Any + Send + Sync>;

/// Where `process_into` makes the card write its output: a region of the
/// arena the caller reserved with [`Card::reserve`].
pub struct OutRegion {
    pub off: usize,
    pub len: usize,
    pub guard: OutGuard,
}

struct AdminQ {
    q: QueuePair,
    next_cid: u16,
}

/// The I/O SQ, shared by the submitting threads; its CQ is the reaper's.
struct IoSq {
    sq: Sq,
    next_cid: u16,
}

/// The driver's rings for the queue engine: ring addresses are offsets in the DMA arena,
/// doorbells are BAR0 writes.
struct Rings<'a>(&'a dyn Transport);

impl QueueMemory for Rings<'_> {
    type Error = CardFailure;
    fn write_sqe(&mut self, addr: u64, entry: &[u8; SQE_SIZE]) -> Result<(), CardFailure> {
        self.0
            .arena()
            .write(addr as usize, entry)
            .map_err(CardFailure::Arena)
    }
    fn read_cqe(&mut self, addr: u64, entry: &mut [u8; CQE_SIZE]) -> Result<(), CardFailure> {
        self.0
            .arena()
            .read(addr as usize, entry)
            .map_err(CardFailure::Arena)
    }
    /// The phase word alone, loaded with acquire: the card writes the arena while we look.
    fn cqe_phase(&mut self, addr: u64) -> Result<bool, CardFailure> {
        let w = self
            .0
            .arena()
            .load_u16_acquire(addr as usize + 30)
            .map_err(CardFailure::Arena)?;
        Ok(w & 1 != 0)
    }
    fn doorbell(&mut self, bell: Doorbell) -> Result<(), CardFailure> {
        Ok(self.0.write32(bell.offset(), bell.value())?)
    }
}

struct Inner {
    t: Arc<dyn Transport>,
    name: String,
    cfg: DriverConfig,
    io_size: u16,
    io_cq_off: usize,
    admin: Mutex<AdminQ>,
    io: Mutex<IoSq>,
    pending: Mutex<HashMap<u16, Pending>>,
    /// Why the card failed, once it has (set once: the first cause wins).
    dead: Mutex<Option<Arc<CardFailure>>>,
    is_dead: AtomicBool,
    stop: AtomicBool,
    /// Next free arena offset for pools.
    bump: Mutex<usize>,
    profiles: Mutex<[Option<[u8; 64]>; MAX_PROFILES]>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A card, enabled, with one I/O queue pair and its reaper running.
pub struct Card {
    inner: Arc<Inner>,
    identify: Identify,
    reaper: Option<JoinHandle<()>>,
}

impl Card {
    /// Resets and enables the card, identifies it and creates the I/O queue.
    pub fn open(t: Arc<dyn Transport>, cfg: DriverConfig) -> Result<Card, CardError> {
        let name = t.name();
        let fatal = |cause: CardFailure| CardError::Fatal {
            card: name.clone(),
            cause: Arc::new(cause),
        };
        let te = |e| fatal(CardFailure::Transport(e));
        let arena = t.arena();
        let need = IO_RINGS + 0x10_0000;
        if arena.len() < need {
            return Err(fatal(CardFailure::ArenaTooSmall {
                len: arena.len(),
                need,
            }));
        }
        let cap = t.read64(regs::CAP).map_err(te)?;
        let vs = t.read32(regs::VS).map_err(te)?;
        crate::firmware::version_ok(vs).map_err(fatal)?;
        let to = Duration::from_millis(100 * ((cap >> 24) & 0xff).max(10))
            .clamp(Duration::from_secs(10), Duration::from_secs(60));
        // Reset whatever state a previous user left.
        t.write32(regs::CC, 0).map_err(te)?;
        wait_csts(&*t, 0, to).map_err(|e| fatal(CardFailure::Reset(Box::new(e))))?;
        arena
            .zero(0, IO_RINGS)
            .map_err(|e| fatal(CardFailure::Arena(e)))?;
        let aqa = u32::from(ADMIN_ENTRIES - 1) | (u32::from(ADMIN_ENTRIES - 1) << 16);
        t.write32(regs::AQA, aqa).map_err(te)?;
        t.write64(regs::ASQ, arena.iova() + ADMIN_SQ as u64)
            .map_err(te)?;
        t.write64(regs::ACQ, arena.iova() + ADMIN_CQ as u64)
            .map_err(te)?;
        t.write32(regs::CC, regs::CC_EN).map_err(te)?;
        wait_csts(&*t, regs::CSTS_RDY, to).map_err(|e| fatal(CardFailure::Enable(Box::new(e))))?;

        let mqes = (cap & 0xffff) as u32 + 1;
        let mut io_size = cfg.queue_size.clamp(2, 4096) as u32;
        io_size = io_size.min(mqes).next_power_of_two();
        if io_size > mqes {
            io_size /= 2;
        }
        let io_size = io_size.max(2) as u16;
        let io_sq_off = IO_RINGS;
        let io_cq_off = IO_RINGS + align4k(io_size as usize * SQE_SIZE);
        let bump = io_cq_off + align4k(io_size as usize * CQE_SIZE);
        // A card opened again on the same arena (after a reset, a flash, a failure) would
        // otherwise show the new queue the old one's entries, whose phase bits read as new.
        arena
            .zero(IO_RINGS, bump - IO_RINGS)
            .map_err(|e| fatal(CardFailure::Arena(e)))?;
        let admin_size = || CardFailure::QueueSize {
            entries: ADMIN_ENTRIES,
        };
        let inner = Arc::new(Inner {
            t: t.clone(),
            name: name.clone(),
            cfg,
            io_size,
            io_cq_off,
            admin: Mutex::new(AdminQ {
                q: QueuePair::new(0, ADMIN_ENTRIES, ADMIN_SQ as u64, ADMIN_CQ as u64)
                    .ok_or_else(|| fatal(admin_size()))?,
                next_cid: 0,
            }),
            io: Mutex::new(IoSq {
                sq: Sq::new(IO_QID, io_size, io_sq_off as u64)
                    .ok_or_else(|| fatal(CardFailure::QueueSize { entries: io_size }))?,
                next_cid: 0,
            }),
            pending: Mutex::new(HashMap::new()),
            dead: Mutex::new(None),
            is_dead: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            bump: Mutex::new(bump),
            profiles: Mutex::new([None; MAX_PROFILES]),
        });
        let mut id = [0u8; IDENTIFY_SIZE];
        inner.admin_cmd(AdminOpcode::Identify, [0; 6], Some(&[]), Some(&mut id))?;
        let identify = Identify::parse(&id);
        crate::firmware::version_ok(
            u32::from(identify.version_major) << 16 | u32::from(identify.version_minor),
        )
        .map_err(|e| {
            fatal(CardFailure::Admin {
                op: AdminOpcode::Identify.name(),
                cause: Box::new(e),
            })
        })?;
        inner.admin_ok(AdminSqe::create_io_queue_pair(
            IO_QID,
            io_size,
            arena.iova() + io_sq_off as u64,
            arena.iova() + io_cq_off as u64,
            Some(IO_QID),
        ))?;
        let r = inner.clone();
        let reaper = std::thread::Builder::new()
            .name("preba-reaper".into())
            .spawn(move || r.reap_loop())
            .map_err(|e| fatal(CardFailure::Reaper(e)))?;
        Ok(Card {
            inner,
            identify,
            reaper: Some(reaper),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }
    pub fn identify(&self) -> &Identify {
        &self.identify
    }
    /// Slots of the I/O queue (in-flight requests are bounded by it).
    pub fn queue_size(&self) -> u16 {
        self.inner.io_size
    }
    /// Why the card failed, once it has.
    pub fn fatal(&self) -> Option<Arc<CardFailure>> {
        self.inner.dead_reason()
    }

    /// One admin command with up to 4 KiB of data to the card; a status other than SUCCESS
    /// comes back as [`CardError::Status`] with the completion.
    pub fn admin(
        &self,
        op: AdminOpcode,
        cdw: [u32; 6],
        data_in: Option<&[u8]>,
    ) -> Result<Cqe, CardError> {
        let cqe = self.inner.admin_cmd_any(op, cdw, data_in, None)?;
        match cqe.status() {
            Status::Success => Ok(cqe),
            status => Err(CardError::Status { status, cqe }),
        }
    }

    /// The transport the card is opened on (for a function reset and reopening).
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.inner.t.clone()
    }

    pub fn telemetry(&self) -> Result<Telemetry, CardError> {
        let mut b = [0u8; TELEMETRY_SIZE];
        self.inner
            .admin_cmd(AdminOpcode::GetTelemetry, [0; 6], Some(&[]), Some(&mut b))?;
        Ok(Telemetry::parse(&b))
    }

    /// Sets `profile` in a free profile slot (or finds it set already) and
    /// carves `slots` input/output slot pairs for it out of the arena.
    /// Output slots are contiguous: a batch of consecutive slots is one
    /// `[N, ...]` tensor.
    pub fn pool(
        &self,
        profile: &Profile,
        slots: usize,
        in_size: usize,
        out_size: usize,
    ) -> Result<Pool, CardError> {
        let enc = encode_profile(profile);
        let pslot = {
            let mut p = lock(&self.inner.profiles);
            match p.iter().position(|x| x.as_ref() == Some(&enc)) {
                Some(i) => i,
                None => {
                    let i = p
                        .iter()
                        .position(|x| x.is_none())
                        .ok_or(CardError::Refused(Refusal::ProfileSlotsFull))?;
                    self.inner.admin_cmd(
                        AdminOpcode::SetProfile,
                        [i as u32, 0, 0, 0, 0, 0],
                        Some(&enc),
                        None,
                    )?;
                    p[i] = Some(enc);
                    i
                }
            }
        };
        // In-flight requests are bounded by the ring: SQ holds size - 1;
        // fewer slots when the arena has less room left (a pinned VFIO
        // arena is kept small).
        let in_size = align4k(in_size.max(1));
        let out_size = align64(out_size.max(1));
        let per_slot =
            in_size
                .checked_add(out_size)
                .ok_or(CardError::Refused(Refusal::SlotTooLarge {
                    in_size,
                    out_size,
                }))?;
        let (base, slots) = {
            let mut b = lock(&self.inner.bump);
            let base = *b;
            let room = self.inner.t.arena().len().saturating_sub(base);
            let slots = slots
                .clamp(1, self.inner.io_size as usize - 1)
                .min(room.saturating_sub(0xfff) / per_slot);
            if slots == 0 {
                return Err(CardError::Refused(Refusal::ArenaExhausted {
                    wanted: per_slot + 0xfff,
                    left: room,
                }));
            }
            *b = base + align4k(slots * per_slot);
            (base, slots)
        };
        let op = match profile {
            Profile::Image(_) => IoOpcode::PreprocessImage,
            Profile::Audio(_) => IoOpcode::PreprocessAudio,
        };
        Ok(Pool {
            inner: Arc::new(PoolInner {
                in_base: base,
                out_base: base + slots * in_size,
                in_size,
                out_size,
                slots,
                profile: pslot as u8,
                op,
                free: Mutex::new(vec![true; slots]),
                cv: Condvar::new(),
            }),
        })
    }

    /// Submits one request and waits for its answer: `Ok` with the output
    /// bytes (copied out of the slot) and the completion, or the request's
    /// own error. Callable from many threads at once.
    pub fn process(
        &self,
        pool: &Pool,
        input: &[u8],
        timeout: Duration,
    ) -> Result<(Cqe, Vec<u8>), CardError> {
        self.request(pool, input, timeout, |arena, off, cqe, out_size| {
            let n = (cqe.written as usize).min(out_size);
            let mut out = vec![0u8; n];
            arena.read(off, &mut out).map(|_| out)
        })
    }

    /// Like [`Card::process`], but the tensor goes straight from the DMA
    /// arena into `out` (one copy, no allocation) when the card wrote exactly
    /// `out.len()` bytes; otherwise `out` is untouched and the CQE (with the
    /// length the card claims) is returned for the caller to judge.
    pub fn process_to(
        &self,
        pool: &Pool,
        input: &[u8],
        out: &mut [u8],
        timeout: Duration,
    ) -> Result<Cqe, CardError> {
        self.request(pool, input, timeout, |arena, off, cqe, out_size| {
            if cqe.written as usize == out.len() && out.len() <= out_size {
                arena.read(off, out)?;
            }
            Ok(())
        })
        .map(|(cqe, ())| cqe)
    }

    /// One request through a slot of `pool`; on success `read` takes the
    /// answer out of the slot's output region (arena, offset, CQE, region
    /// size) before the slot is given back.
    fn request<R>(
        &self,
        pool: &Pool,
        input: &[u8],
        timeout: Duration,
        read: impl FnOnce(&crate::dma::DmaMem, usize, &Cqe, usize) -> std::io::Result<R>,
    ) -> Result<(Cqe, R), CardError> {
        let deadline = Instant::now() + timeout;
        let p = &pool.inner;
        if input.len() > p.in_size {
            return Err(CardError::Refused(Refusal::InputTooLarge {
                len: input.len(),
                max: p.in_size,
            }));
        }
        self.inner.check_alive()?;
        let slot = p.take(1, deadline, timeout, &self.inner)?;
        let ticket = match self.inner.submit_slot(p, slot, input, None) {
            Ok(t) => t,
            Err(e) => {
                p.give(slot, 1);
                return Err(e);
            }
        };
        let cqe = self.inner.await_answer(ticket, deadline, timeout)?;
        let r = match cqe.status() {
            Status::Success => read(self.inner.t.arena(), p.out_off(slot), &cqe, p.out_size)
                .map(|r| (cqe, r))
                .map_err(|e| CardError::Refused(Refusal::Arena(Arc::new(e)))),
            status => Err(CardError::Status { status, cqe }),
        };
        p.give(slot, 1);
        r
    }

    /// The DMA arena (a memfd other processes can map: slice workers read
    /// batches from it in place).
    pub fn arena(&self) -> &crate::dma::DmaMem {
        self.inner.t.arena()
    }

    /// Reserves `bytes` (4 KiB aligned) of the arena for the caller, e.g. the
    /// batch slots of a model; returns the offset. Never given back: callers
    /// reserve once at start.
    pub fn reserve(&self, bytes: usize) -> Result<usize, CardError> {
        let bytes = align4k(bytes.max(1));
        let mut b = lock(&self.inner.bump);
        let base = *b;
        let room = self.inner.t.arena().len().saturating_sub(base);
        if bytes > room {
            return Err(CardError::Refused(Refusal::ArenaExhausted {
                wanted: bytes,
                left: room,
            }));
        }
        *b = base + bytes;
        Ok(base)
    }

    /// Like [`Card::process`], but the card writes the output straight into
    /// `out` (no copy on the host). The region stays reserved by its guard
    /// until the card answered, even when this call times out.
    pub fn process_into(
        &self,
        pool: &Pool,
        input: &[u8],
        out: OutRegion,
        timeout: Duration,
    ) -> Result<Cqe, CardError> {
        let deadline = Instant::now() + timeout;
        let p = &pool.inner;
        if input.len() > p.in_size {
            return Err(CardError::Refused(Refusal::InputTooLarge {
                len: input.len(),
                max: p.in_size,
            }));
        }
        let arena = self.inner.t.arena();
        if out.off.checked_add(out.len).is_none_or(|e| e > arena.len())
            || out.len > u32::MAX as usize
        {
            return Err(CardError::Refused(Refusal::OutputOutsideArena {
                off: out.off,
                len: out.len,
            }));
        }
        self.inner.check_alive()?;
        let slot = p.take(1, deadline, timeout, &self.inner)?;
        let ticket = match self.inner.submit_slot(p, slot, input, Some(out)) {
            Ok(t) => t,
            Err(e) => {
                p.give(slot, 1);
                return Err(e);
            }
        };
        let r = self.inner.await_answer(ticket, deadline, timeout);
        if matches!(r, Err(CardError::Timeout { .. })) {
            // The reaper owns the slot now.
            return r;
        }
        p.give(slot, 1);
        match r? {
            cqe if cqe.status() == Status::Success => Ok(cqe),
            cqe => Err(CardError::Status {
                status: cqe.status(),
                cqe,
            }),
        }
    }

    /// Submits `inputs` into consecutive slots and waits for all of them.
    /// The batch view reads the whole `[N, ...]` output region at once.
    pub fn process_batch(
        &self,
        pool: &Pool,
        inputs: &[&[u8]],
        timeout: Duration,
    ) -> Result<Batch, CardError> {
        let deadline = Instant::now() + timeout;
        let p = &pool.inner;
        if inputs.is_empty() || inputs.len() > p.slots {
            return Err(CardError::Refused(Refusal::BatchSize {
                len: inputs.len(),
                max: p.slots,
            }));
        }
        if let Some(i) = inputs.iter().find(|i| i.len() > p.in_size) {
            return Err(CardError::Refused(Refusal::InputTooLarge {
                len: i.len(),
                max: p.in_size,
            }));
        }
        self.inner.check_alive()?;
        let first = p.take(inputs.len(), deadline, timeout, &self.inner)?;
        let mut rxs = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            match self.inner.submit_slot(p, first + i, input, None) {
                Ok(rx) => rxs.push(rx),
                Err(e) => {
                    // Slots already submitted come back through the reaper
                    // (or with the dead card); give back the rest.
                    rxs.push(dead_rx(e));
                }
            }
        }
        let results = rxs
            .into_iter()
            .map(|t| self.inner.await_answer(t, deadline, timeout))
            .collect();
        Ok(Batch {
            pool: pool.inner.clone(),
            inner: self.inner.clone(),
            first,
            results,
        })
    }
}

/// A submitted request: its command id and where its answer arrives.
struct Ticket {
    cid: u16,
    rx: mpsc::Receiver<Answer>,
}

fn dead_rx(e: CardError) -> Ticket {
    let (tx, rx) = mpsc::sync_channel(1);
    let _ = tx.send(Err(e));
    // An id no pending entry has: the answer is already in the channel.
    Ticket { cid: u16::MAX, rx }
}

impl Drop for Card {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.reaper.take() {
            let _ = h.join();
        }
        // Reset on teardown: the card stops using our memory.
        if !self.inner.is_dead.load(Ordering::SeqCst) {
            let t = &*self.inner.t;
            if t.write32(regs::CC, 0).is_ok() {
                let _ = wait_csts(t, 0, Duration::from_millis(500));
            }
        }
        self.inner.kill(CardFailure::Closed);
    }
}

/// Consecutive slots answered as one batch.
pub struct Batch {
    pool: Arc<PoolInner>,
    inner: Arc<Inner>,
    first: usize,
    results: Vec<Answer>,
}

impl Batch {
    /// Per-input results.
    pub fn results(&self) -> &[Answer] {
        &self.results
    }
    /// Bytes of one output slot (the stride of the batch view).
    pub fn stride(&self) -> usize {
        self.pool.out_size
    }
    /// The whole `[N, stride]` output region, copied in one pass.
    pub fn read_all(&self) -> Result<Vec<u8>, CardError> {
        let mut v = vec![0u8; self.results.len() * self.pool.out_size];
        self.inner
            .t
            .arena()
            .read(self.pool.out_off(self.first), &mut v)
            .map_err(|e| CardError::Refused(Refusal::Arena(Arc::new(e))))?;
        Ok(v)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // Slots of answered requests come back; the reaper owns the others.
        for (i, r) in self.results.iter().enumerate() {
            if !matches!(r, Err(CardError::Timeout { .. })) {
                self.pool.give(self.first + i, 1);
            }
        }
    }
}

/// Slots of one profile in the arena.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    pub fn slots(&self) -> usize {
        self.inner.slots
    }
    pub fn in_size(&self) -> usize {
        self.inner.in_size
    }
    pub fn out_size(&self) -> usize {
        self.inner.out_size
    }
}

struct PoolInner {
    in_base: usize,
    out_base: usize,
    in_size: usize,
    out_size: usize,
    slots: usize,
    profile: u8,
    op: IoOpcode,
    free: Mutex<Vec<bool>>,
    cv: Condvar,
}

impl PoolInner {
    fn in_off(&self, slot: usize) -> usize {
        self.in_base + slot * self.in_size
    }
    fn out_off(&self, slot: usize) -> usize {
        self.out_base + slot * self.out_size
    }
    /// Takes `n` consecutive free slots, waiting until the deadline.
    fn take(
        &self,
        n: usize,
        deadline: Instant,
        timeout: Duration,
        card: &Inner,
    ) -> Result<usize, CardError> {
        let mut free = lock(&self.free);
        loop {
            card.check_alive()?;
            let mut run = 0;
            for i in 0..free.len() {
                run = if free[i] { run + 1 } else { 0 };
                if run == n {
                    let first = i + 1 - n;
                    free[first..=i].iter_mut().for_each(|f| *f = false);
                    return Ok(first);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CardError::Timeout {
                    card: card.name.clone(),
                    after: timeout,
                });
            }
            // Wake now and then to notice a dead card.
            let wait = (deadline - now).min(Duration::from_millis(50));
            free = self
                .cv
                .wait_timeout(free, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    fn give(&self, first: usize, n: usize) {
        let mut free = lock(&self.free);
        for f in free.iter_mut().skip(first).take(n) {
            *f = true;
        }
        drop(free);
        self.cv.notify_all();
    }
}

impl Inner {
    fn dead_reason(&self) -> Option<Arc<CardFailure>> {
        lock(&self.dead).clone()
    }
    /// The error a request gets from the dead card (`Lost` only if called on a live one).
    fn fatal_error(&self) -> CardError {
        CardError::Fatal {
            card: self.name.clone(),
            cause: self
                .dead_reason()
                .unwrap_or_else(|| Arc::new(CardFailure::Lost)),
        }
    }
    fn check_alive(&self) -> Result<(), CardError> {
        if self.is_dead.load(Ordering::Acquire) {
            return Err(self.fatal_error());
        }
        Ok(())
    }
    /// Marks the card dead and fails every request in flight.
    fn kill(&self, cause: CardFailure) {
        lock(&self.dead).get_or_insert_with(|| Arc::new(cause));
        self.is_dead.store(true, Ordering::Release);
        let drained: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in drained {
            if !p.abandoned {
                let _ = p.tx.send(Err(self.fatal_error()));
            }
        }
    }

    /// Copies the input into the slot, writes the SQE, publishes the tail.
    fn submit_slot(
        &self,
        p: &Arc<PoolInner>,
        slot: usize,
        input: &[u8],
        out: Option<OutRegion>,
    ) -> Result<Ticket, CardError> {
        let arena = self.t.arena();
        arena
            .write(p.in_off(slot), input)
            .map_err(|e| CardError::Fatal {
                card: self.name.clone(),
                cause: Arc::new(CardFailure::Arena(e)),
            })?;
        let (tx, rx) = mpsc::sync_channel(1);
        let mut io = lock(&self.io);
        self.check_alive()?;
        // A command id not in flight (ids of abandoned requests stay taken).
        let cid = {
            let pending = lock(&self.pending);
            let mut cid = io.next_cid;
            while pending.contains_key(&cid) {
                cid = cid.wrapping_add(1);
            }
            io.next_cid = cid.wrapping_add(1);
            cid
        };
        let sq_slot = io.sq.reserve().map_err(|e| CardError::Fatal {
            card: self.name.clone(),
            cause: Arc::new(e.into()),
        })?;
        let sqe = Sqe {
            opcode: p.op as u8,
            flags: 0,
            cid,
            profile: p.profile,
            sg_count: 1,
            out_iova: arena.iova() + out.as_ref().map_or(p.out_off(slot), |o| o.off) as u64,
            out_len: out.as_ref().map_or(p.out_size, |o| o.len) as u32,
            in_len: input.len() as u32,
            sg: [
                SgEntry {
                    iova: arena.iova() + p.in_off(slot) as u64,
                    len: input.len() as u32,
                },
                SgEntry::default(),
            ],
        };
        lock(&self.pending).insert(
            cid,
            Pending {
                tx,
                abandoned: false,
                pool: p.clone(),
                slot,
                _out_guard: out.map(|o| o.guard),
            },
        );
        let mut mem = Rings(&*self.t);
        let r = io
            .sq
            .write(&mut mem, sq_slot, &sqe.encode())
            .and_then(|()| io.sq.ring(&mut mem))
            .map_err(CardFailure::from);
        drop(io);
        if let Err(e) = r {
            // The pending entry gets the fatal error through kill().
            self.kill(CardFailure::Submit(Box::new(e)));
        }
        Ok(Ticket { cid, rx })
    }

    /// Waits for the answer; on timeout hands the slot to the reaper.
    fn await_answer(&self, ticket: Ticket, deadline: Instant, timeout: Duration) -> Answer {
        let Ticket { cid, rx } = ticket;
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(a) => a,
            Err(RecvTimeoutError::Disconnected) => Err(self.fatal_error()),
            Err(RecvTimeoutError::Timeout) => {
                // Abandon it, unless the answer arrived meanwhile.
                let mut pending = lock(&self.pending);
                if let Some(p) = pending.get_mut(&cid) {
                    p.abandoned = true;
                    drop(pending);
                    return Err(CardError::Timeout {
                        card: self.name.clone(),
                        after: timeout,
                    });
                }
                drop(pending);
                rx.try_recv().unwrap_or_else(|_| {
                    Err(CardError::Timeout {
                        card: self.name.clone(),
                        after: timeout,
                    })
                })
            }
        }
    }

    fn reap_loop(&self) {
        let mut cq = match Cq::new(IO_QID, self.io_size, self.io_cq_off as u64) {
            Some(c) => c,
            None => {
                return self.kill(CardFailure::QueueSize {
                    entries: self.io_size,
                });
            }
        };
        let mut last_health = Instant::now();
        while !self.stop.load(Ordering::SeqCst) && !self.is_dead.load(Ordering::Acquire) {
            if let Err(e) = self.drain(&mut cq) {
                return self.kill(e);
            }
            if last_health.elapsed() >= self.cfg.health_interval {
                last_health = Instant::now();
                if let Err(e) = self.health() {
                    return self.kill(e);
                }
            }
            if let Err(e) = self.t.wait_irq(IO_QID, self.cfg.poll_interval) {
                return self.kill(e.into());
            }
        }
    }

    /// Checks CSTS and QFAULT; a transport error means the card is gone.
    fn health(&self) -> Result<(), CardFailure> {
        let csts = self.t.read32(regs::CSTS)?;
        let qf = self.t.read32(regs::QFAULT)?;
        if let Some((qid, fault)) = QueueFault::decode(qf) {
            return Err(QueueError::Fault {
                qid: u16::from(qid),
                fault,
            }
            .into());
        }
        if csts & regs::CSTS_CFS != 0 {
            return Err(CardFailure::ControllerFatal);
        }
        if csts & regs::CSTS_RDY == 0 {
            return Err(CardFailure::NotReady);
        }
        Ok(())
    }

    /// Takes every new completion; an untrusted one is a queue error.
    fn drain(&self, cq: &mut Cq) -> Result<(), CardFailure> {
        let mut mem = Rings(&*self.t);
        loop {
            // The SQ lock only while the completion moves the SQ head; the request's entry
            // leaves the pending map as the engine accepts its command id.
            let mut taken = None;
            let Some(cqe) = cq.poll(&mut mem, &mut lock(&self.io).sq, |c| {
                taken = lock(&self.pending).remove(&c.cid);
                taken.is_some()
            })?
            else {
                break;
            };
            if let Some(p) = taken {
                if p.abandoned {
                    p.pool.give(p.slot, 1);
                } else {
                    let _ = p.tx.send(Ok(cqe));
                }
            }
        }
        cq.release(&mut mem)?;
        Ok(())
    }

    fn admin_cmd(
        &self,
        op: AdminOpcode,
        cdw: [u32; 6],
        data_in: Option<&[u8]>,
        data_out: Option<&mut [u8]>,
    ) -> Result<Cqe, CardError> {
        let cqe = self.admin_cmd_any(op, cdw, data_in, data_out)?;
        self.admin_success(op.name(), cqe)
    }

    /// An admin completion that is not SUCCESS fails the card: a setup step it refused.
    fn admin_success(&self, op: &'static str, cqe: Cqe) -> Result<Cqe, CardError> {
        match cqe.status() {
            Status::Success => Ok(cqe),
            st => Err(CardError::Fatal {
                card: self.name.clone(),
                cause: Arc::new(CardFailure::Admin {
                    op,
                    cause: Box::new(CardFailure::Status(st)),
                }),
            }),
        }
    }

    /// An admin command whose completion comes back whatever its status.
    fn admin_cmd_any(
        &self,
        op: AdminOpcode,
        cdw: [u32; 6],
        data_in: Option<&[u8]>,
        data_out: Option<&mut [u8]>,
    ) -> Result<Cqe, CardError> {
        let arena = self.t.arena();
        let len = match (&data_in, &data_out) {
            (_, Some(o)) => o.len(),
            (Some(i), None) => i.len(),
            _ => 0,
        };
        if len > ADMIN_DATA_LEN {
            return Err(CardError::Refused(Refusal::AdminDataTooLarge {
                len,
                max: ADMIN_DATA_LEN,
            }));
        }
        if let Some(i) = data_in {
            arena
                .zero(ADMIN_DATA, ADMIN_DATA_LEN)
                .and_then(|_| arena.write(ADMIN_DATA, i))
                .map_err(|e| CardError::Refused(Refusal::Arena(Arc::new(e))))?;
        }
        let (iova, l) = if len > 0 {
            (arena.iova() + ADMIN_DATA as u64, len as u32)
        } else {
            (0, 0)
        };
        let cqe = self.admin_submit(AdminSqe::new(op, cdw, iova, l))?;
        if let Some(o) = data_out {
            arena
                .read(ADMIN_DATA, o)
                .map_err(|e| CardError::Refused(Refusal::Arena(Arc::new(e))))?;
        }
        Ok(cqe)
    }

    /// One admin command, polled to completion; a status other than SUCCESS fails the card.
    fn admin_ok(&self, sqe: AdminSqe) -> Result<Cqe, CardError> {
        let cqe = self.admin_submit(sqe)?;
        self.admin_success(op_name(&sqe), cqe)
    }

    /// One admin command (its command id is set here), polled to completion, whatever its
    /// status.
    fn admin_submit(&self, mut sqe: AdminSqe) -> Result<Cqe, CardError> {
        let op = op_name(&sqe);
        let fatal = |cause: CardFailure| CardError::Fatal {
            card: self.name.clone(),
            cause: Arc::new(CardFailure::Admin {
                op,
                cause: Box::new(cause),
            }),
        };
        self.check_alive()?;
        let mut mem = Rings(&*self.t);
        let mut a = lock(&self.admin);
        let cid = a.next_cid;
        a.next_cid = a.next_cid.wrapping_add(1);
        sqe.cid = cid;
        a.q.submit(&mut mem, &sqe.encode())
            .map_err(|e| fatal(e.into()))?;
        let deadline = Instant::now() + self.cfg.admin_timeout;
        let mut nap = Duration::from_micros(20);
        loop {
            if let Some(cqe) = a.q.poll_cid(&mut mem, cid).map_err(|e| fatal(e.into()))? {
                return Ok(cqe);
            }
            if Instant::now() >= deadline {
                // Only for the message: a card that cannot answer these reads 0.
                let csts = self.t.read32(regs::CSTS).unwrap_or(0);
                let qfault = self.t.read32(regs::QFAULT).unwrap_or(0);
                return Err(fatal(CardFailure::AdminTimeout {
                    after: self.cfg.admin_timeout,
                    csts,
                    qfault,
                }));
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }
}

/// The name of an admin entry's opcode, for messages.
fn op_name(sqe: &AdminSqe) -> &'static str {
    AdminOpcode::from_u8(sqe.opcode).map_or("unknown admin opcode", AdminOpcode::name)
}

fn wait_csts(t: &dyn Transport, want_rdy: u32, timeout: Duration) -> Result<(), CardFailure> {
    let deadline = Instant::now() + timeout;
    loop {
        let csts = t.read32(regs::CSTS)?;
        if csts & regs::CSTS_CFS != 0 && want_rdy != 0 {
            let qf = t.read32(regs::QFAULT)?;
            let fault = QueueFault::decode(qf).and_then(|(_, f)| f);
            return Err(CardFailure::ControllerFault { fault });
        }
        if csts & regs::CSTS_RDY == want_rdy {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CardFailure::ReadyTimeout {
                want: want_rdy,
                after: timeout,
                csts,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn align4k(n: usize) -> usize {
    (n + 0xfff) & !0xfff
}
fn align64(n: usize) -> usize {
    (n + 63) & !63
}
