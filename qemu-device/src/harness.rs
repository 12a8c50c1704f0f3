//! A harness that plays the host: it owns "host RAM" (a [`TestMemory`] arena), sets up the
//! admin queue, sends admin commands, creates I/O queue pairs, submits requests by writing
//! entries into host memory and ringing doorbells, and reaps completions by phase. The rings
//! and the checks on completions are the driver's own (`preba_protocol::hostq`, the one
//! host-side queue engine); the harness adds the command ids in flight. Every wait has a
//! deadline: a test fails with [`HarnessError::Timeout`], it never hangs.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use preba_protocol::admin::{self, AdminSqe, IDENTIFY_SIZE, Identify};
use preba_protocol::hostq::{self, Doorbell, QueueMemory, QueuePair};
use preba_protocol::io::{CQE_SIZE, Cqe, IoOpcode, SQE_SIZE, SgEntry, Sqe};
use preba_protocol::profile::Profile;
use preba_protocol::regs::{self, MSIX_VECTORS};
use preba_protocol::status::Status;

use crate::{Card, CardConfig, DmaFault, HostMemory, IrqRecorder, TestMemory};

/// Why a harness step failed.
#[derive(Debug)]
pub enum HarnessError {
    /// A wait ran past its deadline.
    Timeout(String),
    /// The card could not be built or reset.
    Card(crate::Error),
    /// The harness's own host-memory access faulted (a harness bug).
    Dma(DmaFault),
    /// A host-side queue step the harness cannot do (no such queue, a bad size, a cid
    /// already in flight, the arena full).
    Queue(String),
    /// The queue engine refused: a completion the host does not believe (undecodable, another
    /// SQ's, an impossible SQ head, an unknown or duplicate cid, behind an empty slot), or
    /// a full SQ. Names the queue and the value.
    Ring(hostq::QueueError),
    /// A command completed with an error status.
    Status(Cqe),
    /// The firmware image could not be found or built.
    Firmware(String),
}

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HarnessError::Timeout(m) => write!(f, "timed out: {m}"),
            HarnessError::Card(e) => write!(f, "card: {e}"),
            HarnessError::Dma(e) => write!(f, "harness DMA: {e}"),
            HarnessError::Queue(m) => write!(f, "queue protocol: {m}"),
            HarnessError::Ring(e) => write!(f, "queue protocol: {e}"),
            HarnessError::Status(c) => {
                write!(f, "cid {} completed {:?}", c.cid, c.status())
            }
            HarnessError::Firmware(m) => write!(f, "firmware: {m}"),
        }
    }
}

impl std::error::Error for HarnessError {}

impl From<DmaFault> for HarnessError {
    fn from(e: DmaFault) -> Self {
        HarnessError::Dma(e)
    }
}

impl From<crate::Error> for HarnessError {
    fn from(e: crate::Error) -> Self {
        HarnessError::Card(e)
    }
}

impl From<hostq::Error<DmaFault>> for HarnessError {
    fn from(e: hostq::Error<DmaFault>) -> Self {
        match e {
            hostq::Error::Queue(q) => HarnessError::Ring(q),
            hostq::Error::Memory(m) => HarnessError::Dma(m),
        }
    }
}

/// The harness's rings for the queue engine: host memory by IOVA, doorbells on the card.
struct Rings<'a> {
    mem: &'a TestMemory,
    card: &'a Card,
}

impl QueueMemory for Rings<'_> {
    type Error = DmaFault;
    fn write_sqe(
        &mut self,
        addr: u64,
        entry: &[u8; SQE_SIZE],
    ) -> std::result::Result<(), DmaFault> {
        self.mem.write(addr, entry)
    }
    fn read_cqe(
        &mut self,
        addr: u64,
        entry: &mut [u8; CQE_SIZE],
    ) -> std::result::Result<(), DmaFault> {
        self.mem.read(addr, entry)
    }
    fn doorbell(&mut self, bell: Doorbell) -> std::result::Result<(), DmaFault> {
        self.card.write32(bell.offset(), bell.value());
        Ok(())
    }
}

/// Result of the harness.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// Where the host's DMA arena lives (IOVA) and how big it is.
pub const ARENA_BASE: u64 = 0x1_0000_0000;
/// Default arena size.
pub const ARENA_SIZE: usize = 512 << 20;

/// One queue pair as the host sees it.
#[derive(Clone, Debug)]
pub struct HostQueue {
    /// Queue id (0 = admin).
    pub qid: u16,
    /// SQ base IOVA.
    pub sq_base: u64,
    /// CQ base IOVA.
    pub cq_base: u64,
    q: QueuePair,
    outstanding: HashSet<u16>,
}

impl HostQueue {
    fn new(qid: u16, entries: u16, sq_base: u64, cq_base: u64) -> Option<Self> {
        Some(HostQueue {
            qid,
            sq_base,
            cq_base,
            q: QueuePair::new(qid, entries, sq_base, cq_base)?,
            outstanding: HashSet::new(),
        })
    }
    /// Entries.
    pub fn size(&self) -> u16 {
        self.q.sq.size()
    }
    /// Free SQ slots.
    pub fn free(&self) -> u16 {
        self.q.sq.free()
    }
    /// Commands submitted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }
}

/// The host: a card, its memory, its interrupts, its queues.
pub struct Host {
    /// The card.
    pub card: Card,
    /// Host memory (the IOMMU-mapped arena).
    pub mem: Arc<TestMemory>,
    /// Interrupts the card sent.
    pub irq: Arc<IrqRecorder>,
    /// Default deadline of every wait.
    pub timeout: Duration,
    brk: u64,
    admin: Option<HostQueue>,
    io: BTreeMap<u16, HostQueue>,
    next_admin_cid: u16,
}

impl Host {
    /// Builds a card with `config` running `firmware`, maps the arena.
    pub fn new(config: CardConfig, firmware: &[u8]) -> Result<Host> {
        let mem = Arc::new(TestMemory::new());
        mem.map(ARENA_BASE, ARENA_SIZE)?;
        let irq = Arc::new(IrqRecorder::new());
        let card = Card::new(config, firmware, mem.clone(), irq.clone())?;
        Ok(Host {
            card,
            mem,
            irq,
            timeout: Duration::from_secs(20),
            brk: ARENA_BASE,
            admin: None,
            io: BTreeMap::new(),
            next_admin_cid: 0,
        })
    }

    /// Allocates `len` bytes (4 KiB aligned, zeroed on first use) in the arena.
    pub fn alloc(&mut self, len: usize) -> Result<u64> {
        let at = self.brk;
        let end = at
            .checked_add((len as u64).max(1).next_multiple_of(4096))
            .filter(|&e| e <= ARENA_BASE + ARENA_SIZE as u64)
            .ok_or_else(|| HarnessError::Queue(format!("arena full allocating {len} bytes")))?;
        self.brk = end;
        Ok(at)
    }

    /// The allocation mark, for [`Host::release`].
    pub fn mark(&self) -> u64 {
        self.brk
    }

    /// Frees every allocation made after `mark`, zeroing it: memory handed out
    /// again is zeroed as on first use, so a completion queue reallocated there
    /// does not start with the old queue's entries (whose phase bits would read
    /// as new completions), as a real driver clears a queue before creating it.
    pub fn release(&mut self, mark: u64) {
        let mark = mark.clamp(ARENA_BASE, self.brk);
        let zeros = vec![0u8; 64 << 10];
        let mut at = mark;
        while at < self.brk {
            let n = ((self.brk - at) as usize).min(zeros.len());
            // The range was allocated from the mapped arena, so this cannot fail.
            let _ = self.mem.write(at, &zeros[..n]);
            at += n as u64;
        }
        self.brk = mark;
    }

    /// Copies bytes into host memory and returns their IOVA.
    pub fn put(&mut self, data: &[u8]) -> Result<u64> {
        let at = self.alloc(data.len())?;
        self.mem.write(at, data)?;
        Ok(at)
    }

    /// Reads host memory.
    pub fn get(&self, iova: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.mem.read(iova, &mut v)?;
        Ok(v)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Waits until `f` holds or the deadline passes: checked whenever the card has done what it
    /// was given ([`Card::wait_idle`]), and every millisecond.
    pub fn wait_for(&self, what: &str, mut f: impl FnMut(&Card) -> bool) -> Result<()> {
        let deadline = self.deadline();
        loop {
            if f(&self.card) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "{what} (CSTS {:#x}, QFAULT {:#x}, core {:?})",
                    self.card.read32(regs::CSTS),
                    self.card.read32(regs::QFAULT),
                    self.card.core_state()
                )));
            }
            // Until the card has done what it was given; when it has (or had) and `f` still
            // does not hold, nothing changes before `step` but by a firmware timer.
            let step = (Instant::now() + Duration::from_millis(1)).min(deadline);
            if self.card.wait_idle(step) {
                if f(&self.card) {
                    return Ok(());
                }
                std::thread::sleep(step.saturating_duration_since(Instant::now()));
            }
        }
    }

    /// Creates the admin queue (`entries` each way), sets CC.EN and waits for CSTS.RDY.
    pub fn enable(&mut self, entries: u16) -> Result<()> {
        let sq = self.alloc(entries as usize * SQE_SIZE)?;
        let cq = self.alloc(entries as usize * CQE_SIZE)?;
        let q = HostQueue::new(0, entries, sq, cq)
            .ok_or_else(|| HarnessError::Queue(format!("bad admin size {entries}")))?;
        let m = u32::from(entries - 1);
        self.card.write32(regs::AQA, m | m << 16);
        self.card.write64(regs::ASQ, sq);
        self.card.write64(regs::ACQ, cq);
        self.card.write32(regs::CC, regs::CC_EN);
        self.admin = Some(q);
        self.wait_for("CSTS.RDY after CC.EN", |c| {
            c.read32(regs::CSTS) & (regs::CSTS_RDY | regs::CSTS_CFS) != 0
        })?;
        if self.card.read32(regs::CSTS) & regs::CSTS_CFS != 0 {
            return Err(HarnessError::Queue(format!(
                "controller fatal status after enable, QFAULT {:#x}",
                self.card.read32(regs::QFAULT)
            )));
        }
        Ok(())
    }

    /// Clears CC.EN and waits for RDY to drop; forgets the queues.
    pub fn disable(&mut self) -> Result<()> {
        self.card.write32(regs::CC, 0);
        self.admin = None;
        self.io.clear();
        self.wait_for("CSTS.RDY to clear after CC.EN 1->0", |c| {
            c.read32(regs::CSTS) & (regs::CSTS_RDY | regs::CSTS_SHST) == 0
        })
    }

    /// A function reset of the card; forgets the queues.
    pub fn function_reset(&mut self) -> Result<()> {
        self.admin = None;
        self.io.clear();
        self.card.reset(self.timeout)?;
        Ok(())
    }

    /// Queue `qid` and the memory its rings live in.
    fn queue(&mut self, qid: u16) -> Result<(&mut HostQueue, Rings<'_>)> {
        let q = if qid == 0 {
            self.admin.as_mut()
        } else {
            self.io.get_mut(&qid)
        };
        let q = q.ok_or_else(|| {
            HarnessError::Queue(format!("queue {qid} does not exist on the host"))
        })?;
        let rings = Rings {
            mem: &self.mem,
            card: &self.card,
        };
        Ok((q, rings))
    }

    /// Writes a raw 64-byte entry into queue `qid`'s next SQ slot and rings the doorbell.
    /// `cid` is the command id inside the entry (tracked for the exactly-once check).
    pub fn submit_raw(&mut self, qid: u16, cid: u16, entry: &[u8; SQE_SIZE]) -> Result<()> {
        let (q, mut rings) = self.queue(qid)?;
        if q.outstanding.contains(&cid) {
            return Err(HarnessError::Queue(format!(
                "cid {cid} already outstanding on {qid}"
            )));
        }
        q.q.submit(&mut rings, entry)?;
        q.outstanding.insert(cid);
        Ok(())
    }

    /// Submits an I/O entry.
    pub fn submit(&mut self, qid: u16, sqe: &Sqe) -> Result<()> {
        self.submit_raw(qid, sqe.cid, &sqe.encode())
    }

    /// Takes every new completion of queue `qid` (by phase), checks it, advances the CQ head
    /// and writes the CQ head doorbell. Unknown or duplicate command ids are errors.
    pub fn reap(&mut self, qid: u16) -> Result<Vec<Cqe>> {
        let (q, mut rings) = self.queue(qid)?;
        let mut out = Vec::new();
        let outstanding = &mut q.outstanding;
        q.q.drain(&mut rings, |c| {
            out.push(c);
            outstanding.remove(&c.cid)
        })?;
        Ok(out)
    }

    /// Reaps queue `qid` until `n` completions came or the deadline passes.
    pub fn wait(&mut self, qid: u16, n: usize) -> Result<Vec<Cqe>> {
        let deadline = self.deadline();
        let mut got = Vec::new();
        loop {
            let seen = self.irq.total();
            got.extend(self.reap(qid)?);
            if got.len() >= n {
                return Ok(got);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "{} of {n} completions on queue {qid} (CSTS {:#x}, QFAULT {:#x}, core {:?})",
                    got.len(),
                    self.card.read32(regs::CSTS),
                    self.card.read32(regs::QFAULT),
                    self.card.core_state()
                )));
            }
            self.irq.wait_after(
                seen,
                (Instant::now() + Duration::from_millis(2)).min(deadline),
            );
        }
    }

    /// Sends an admin command and waits for its completion (any status).
    pub fn admin_raw(&mut self, mut sqe: AdminSqe) -> Result<Cqe> {
        sqe.cid = self.next_admin_cid;
        self.next_admin_cid = self.next_admin_cid.wrapping_add(1);
        self.submit_raw(0, sqe.cid, &sqe.encode())?;
        let mut c = self.wait(0, 1)?;
        Ok(c.remove(0))
    }

    /// Sends an admin command; a status other than SUCCESS is an error.
    pub fn admin(&mut self, sqe: AdminSqe) -> Result<Cqe> {
        let c = self.admin_raw(sqe)?;
        if c.status() != Status::Success {
            return Err(HarnessError::Status(c));
        }
        Ok(c)
    }

    /// IDENTIFY.
    pub fn identify(&mut self) -> Result<Identify> {
        let buf = self.alloc(IDENTIFY_SIZE)?;
        self.admin(AdminSqe::identify(buf))?;
        let b: [u8; IDENTIFY_SIZE] = self.get(buf, IDENTIFY_SIZE)?.try_into().expect("size");
        Ok(Identify::parse(&b))
    }

    /// SET_PROFILE `slot`.
    pub fn set_profile(&mut self, slot: u8, p: &Profile) -> Result<()> {
        let buf = self.put(&admin::encode_profile(p))?;
        self.admin(AdminSqe::set_profile(u32::from(slot), buf))?;
        Ok(())
    }

    /// CREATE_IO_QUEUE_PAIR `qid` with `entries`, interrupts on MSI-X `vector`.
    pub fn create_io_queue(&mut self, qid: u16, entries: u16, vector: u16) -> Result<()> {
        let sq = self.alloc(entries as usize * SQE_SIZE)?;
        let cq = self.alloc(entries as usize * CQE_SIZE)?;
        let q = HostQueue::new(qid, entries, sq, cq)
            .ok_or_else(|| HarnessError::Queue(format!("bad queue size {entries}")))?;
        self.admin(AdminSqe::create_io_queue_pair(
            qid,
            entries,
            sq,
            cq,
            Some(vector),
        ))?;
        self.io.insert(qid, q);
        Ok(())
    }

    /// The host's view of queue `qid`.
    pub fn host_queue(&self, qid: u16) -> Option<&HostQueue> {
        if qid == 0 {
            self.admin.as_ref()
        } else {
            self.io.get(&qid)
        }
    }

    /// Builds a one-segment request entry for `input` already in host memory.
    pub fn request(op: IoOpcode, cid: u16, slot: u8, input: (u64, u32), output: (u64, u32)) -> Sqe {
        Sqe {
            opcode: op as u8,
            flags: 0,
            cid,
            profile: slot,
            sg_count: 1,
            out_iova: output.0,
            out_len: output.1,
            in_len: input.1,
            sg: [
                SgEntry {
                    iova: input.0,
                    len: input.1,
                },
                SgEntry::default(),
            ],
        }
    }

    /// Copies `input` into host memory, submits one request on `qid`, waits for it and returns
    /// the completion and the output bytes it reports written.
    pub fn run_one(
        &mut self,
        qid: u16,
        op: IoOpcode,
        slot: u8,
        input: &[u8],
        out_len: u32,
    ) -> Result<(Cqe, Vec<u8>)> {
        let mark = self.mark();
        let inp = self.put(input)?;
        let out = self.alloc(out_len as usize)?;
        let cid = 0x7000;
        let sqe = Host::request(op, cid, slot, (inp, input.len() as u32), (out, out_len));
        self.submit(qid, &sqe)?;
        let c = self.wait(qid, 1)?.remove(0);
        let data = self.get(out, (c.written.min(out_len)) as usize)?;
        self.release(mark);
        Ok((c, data))
    }
}

/// The firmware ELF for tests and benches: `$PREBA_FIRMWARE` when set, else built with cargo
/// (see [`preba_softcore::progs::firmware_elf`]).
pub fn firmware_elf() -> Result<PathBuf> {
    preba_softcore::progs::firmware_elf().map_err(HarnessError::Firmware)
}

/// A variant of the firmware ELF for the flashing tests: the same sources with the build id
/// salted by `salt` and the cargo `features` on, built as `cargo xtask build-fw --salt` does
/// (the same [`preba_softcore::progs::firmware_build`] command) into `<target>/fw-variant/<salt>`
/// (cargo skips the work when it is up to date). `$PREBA_FIRMWARE_VARIANTS`, when set, is used
/// instead of `<target>/fw-variant`.
pub fn firmware_variant_elf(salt: &str, features: &[&str]) -> Result<PathBuf> {
    use preba_softcore::progs;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let base = match std::env::var_os("PREBA_FIRMWARE_VARIANTS") {
        Some(d) => PathBuf::from(d),
        None => progs::running_target_dir(&root).join("fw-variant"),
    };
    progs::build_firmware(&root, &base.join(salt), Some(salt), features)
        .map_err(HarnessError::Firmware)
}

/// Which MSI-X messages of an [`IrqRecorder`] a host has taken, per vector: the `wait_irq` of
/// an in-process transport ([`in_process_transport!`]).
#[derive(Debug, Default)]
pub struct MsixTaken(Mutex<[u64; MSIX_VECTORS as usize]>);

impl MsixTaken {
    /// Waits up to `timeout` for a message on `vector` not taken yet: takes every message sent
    /// on it so far and returns true, or returns false at the deadline (at once for a vector
    /// the card does not have).
    pub fn wait(&self, irq: &IrqRecorder, vector: u16, timeout: Duration) -> bool {
        let v = usize::from(vector);
        if v >= MSIX_VECTORS as usize {
            return false;
        }
        let deadline = Instant::now() + timeout;
        loop {
            // `total` before the count: a message after the count moves the total past
            // `seen`, so the wait below cannot sleep through it.
            let seen = irq.total();
            let sent = irq.msix_count(vector);
            {
                let mut taken = self.0.lock().expect("msix lock");
                if sent > taken[v] {
                    taken[v] = sent;
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            irq.wait_after(seen, deadline);
        }
    }
}

/// Defines `InProcess`, the card model in this process behind the host driver's `Transport`
/// (`preba_host::transport`: BAR0, the BAR2 log window, MSI-X waits, function resets, no
/// socket in between), and `InProcessArena`, the driver's DMA arena as the card's host
/// memory, so the card reads and writes the very arena the driver's queues and buffers live
/// in. For tests of the driver and of tools built on it (`qemu-device/tests/faults.rs`,
/// `logs/`).
///
/// A macro, not a type: preba-card does not depend on preba-host (the card model must not
/// build the host driver, and the driver's own tests would close a cycle), so the
/// `Transport` impl is expanded in the calling crate, which needs both `preba_card` and
/// `preba_host`. Everything that is not the impl lives here ([`MsixTaken`]).
///
/// ```ignore
/// preba_card::harness::in_process_transport!();
/// let t = InProcess::new(CardConfig::default(), &elf, 32 << 20)?;
/// let card = preba_host::driver::Card::open(t.clone(), DriverConfig::default())?;
/// ```
#[macro_export]
macro_rules! in_process_transport {
    () => {
        /// The host driver's DMA arena as the card model's host memory (by IOVA).
        pub struct InProcessArena(pub ::preba_host::dma::DmaMem);

        impl $crate::HostMemory for InProcessArena {
            fn read(
                &self,
                iova: u64,
                buf: &mut [u8],
            ) -> ::std::result::Result<(), $crate::DmaFault> {
                let off = self
                    .0
                    .offset_of(iova, buf.len() as u64)
                    .ok_or($crate::DmaFault { iova })?;
                self.0.read(off, buf).map_err(|_| $crate::DmaFault { iova })
            }
            fn write(&self, iova: u64, data: &[u8]) -> ::std::result::Result<(), $crate::DmaFault> {
                let off = self
                    .0
                    .offset_of(iova, data.len() as u64)
                    .ok_or($crate::DmaFault { iova })?;
                // What the card wrote before is visible to a host that sees this (the phase
                // word last).
                ::std::sync::atomic::fence(::std::sync::atomic::Ordering::Release);
                self.0
                    .write(off, data)
                    .map_err(|_| $crate::DmaFault { iova })
            }
        }

        /// The card model in this process behind the host driver's `Transport`.
        pub struct InProcess {
            /// The card model.
            pub card: $crate::Card,
            /// Its host memory: the arena the transport hands the driver.
            pub arena: ::std::sync::Arc<InProcessArena>,
            /// The interrupts it sent.
            pub irq: ::std::sync::Arc<$crate::IrqRecorder>,
            taken: $crate::harness::MsixTaken,
        }

        impl InProcess {
            /// A card with `config` running `firmware`; its host memory is an arena of
            /// `arena_bytes` at the driver's IOVA (`preba_host::driver::ARENA_IOVA`).
            pub fn new(
                config: $crate::CardConfig,
                firmware: &[u8],
                arena_bytes: usize,
            ) -> ::std::result::Result<::std::sync::Arc<InProcess>, ::std::string::String> {
                let mem =
                    ::preba_host::dma::DmaMem::new(arena_bytes, ::preba_host::driver::ARENA_IOVA)
                        .map_err(|e| ::std::format!("arena: {e}"))?;
                let arena = ::std::sync::Arc::new(InProcessArena(mem));
                let irq = ::std::sync::Arc::new($crate::IrqRecorder::new());
                let card = $crate::Card::new(config, firmware, arena.clone(), irq.clone())
                    .map_err(|e| ::std::format!("card: {e}"))?;
                ::std::result::Result::Ok(::std::sync::Arc::new(InProcess {
                    card,
                    arena,
                    irq,
                    taken: ::std::default::Default::default(),
                }))
            }
        }

        impl ::preba_host::transport::Transport for InProcess {
            fn name(&self) -> ::std::string::String {
                "in-process".into()
            }
            fn bar0_read(&self, off: u64, data: &mut [u8]) -> ::preba_host::transport::TResult<()> {
                self.card.bar0_read(off, data);
                Ok(())
            }
            fn bar0_write(&self, off: u64, data: &[u8]) -> ::preba_host::transport::TResult<()> {
                self.card.bar0_write(off, data);
                Ok(())
            }
            fn bar2_read(&self, off: u64, data: &mut [u8]) -> ::preba_host::transport::TResult<()> {
                // The card takes up to 8 bytes an access.
                for (i, c) in data.chunks_mut(8).enumerate() {
                    self.card.bar2_read(off + 8 * i as u64, c);
                }
                Ok(())
            }
            fn arena(&self) -> &::preba_host::dma::DmaMem {
                &self.arena.0
            }
            fn wait_irq(
                &self,
                vector: u16,
                timeout: ::std::time::Duration,
            ) -> ::preba_host::transport::TResult<bool> {
                Ok(self.taken.wait(&self.irq, vector, timeout))
            }
            fn reset(&self) -> ::preba_host::transport::TResult<()> {
                self.card
                    .reset(::std::time::Duration::from_secs(30))
                    .map_err(|e| ::preba_host::transport::TransportError::Other {
                        op: ::preba_host::transport::Op::Reset,
                        source: e.into(),
                    })
            }
        }
    };
}
#[doc(inline)]
pub use crate::in_process_transport;
