//! The host side of a queue pair, once for every host: the driver
//! (`preba-host`), the in-process card harness (`preba_card::harness`), the
//! firmware's test host and the vfio-user socket test all submit and reap
//! through this.
//!
//! It owns the ring state of one queue pair ([`SqProducer`], [`CqConsumer`])
//! and the rules of a host that does not trust its card:
//! - an entry goes in as payload, release barrier, then SQ tail doorbell;
//! - a completion is new when its phase bit matches ([`Cq::poll`]); the phase
//!   word is read first (acquire), then the entry is copied once and only the
//!   copy is parsed;
//! - a completion is refused ([`QueueError`], naming the queue and the value)
//!   when it does not parse (reserved bytes, unknown status), names another
//!   SQ, carries an SQ head outside `[head, tail]` of what was submitted (past
//!   the ring, backwards, past the tail), carries a command id the caller does
//!   not have in flight, or sits behind an empty slot (a skipped or garbled
//!   phase: the card posts in slot order);
//! - the CQ head doorbell is written once per drain, after the entries are
//!   consumed ([`Cq::release`]).
//!
//! What differs per host is only where the rings live and how a doorbell is
//! written: the [`QueueMemory`] trait (the driver's DMA arena and BAR0, the
//! harness's `TestMemory` and `Card`, the firmware test double, a memfd and a
//! vfio-user socket). Command ids are the caller's: the engine asks the caller
//! whether an id is in flight ([`Cq::poll`]) or checks it against the one
//! admin command outstanding ([`Cq::poll_cid`]).

use crate::WireError;
use crate::io::{CQE_SIZE, Cqe, SQE_SIZE};
use crate::regs;
use crate::ring::{CqConsumer, SqProducer};
use core::sync::atomic::{Ordering, fence};

/// A doorbell write: the register and the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doorbell {
    /// SQ tail doorbell of queue `qid`.
    SqTail { qid: u16, tail: u16 },
    /// CQ head doorbell of queue `qid`.
    CqHead { qid: u16, head: u16 },
}

impl Doorbell {
    /// The BAR0 offset of the register.
    pub const fn offset(self) -> u64 {
        match self {
            Doorbell::SqTail { qid, .. } => regs::sq_doorbell(qid),
            Doorbell::CqHead { qid, .. } => regs::cq_doorbell(qid),
        }
    }
    /// The value written (a ring index).
    pub const fn value(self) -> u32 {
        match self {
            Doorbell::SqTail { tail, .. } => tail as u32,
            Doorbell::CqHead { head, .. } => head as u32,
        }
    }
    /// The queue the doorbell belongs to.
    pub const fn qid(self) -> u16 {
        match self {
            Doorbell::SqTail { qid, .. } | Doorbell::CqHead { qid, .. } => qid,
        }
    }
}

/// Where a host's rings live and how it rings the card's doorbells. Addresses
/// are the ring bases given to [`Sq::new`] / [`Cq::new`] plus slot offsets (an
/// IOVA, or an offset in the host's DMA arena: the engine only adds to them).
pub trait QueueMemory {
    /// The memory's or the transport's own failure.
    type Error;
    /// Writes one submission entry at `addr`.
    fn write_sqe(&mut self, addr: u64, entry: &[u8; SQE_SIZE]) -> Result<(), Self::Error>;
    /// Copies the completion entry at `addr` (the engine parses only this copy).
    fn read_cqe(&mut self, addr: u64, entry: &mut [u8; CQE_SIZE]) -> Result<(), Self::Error>;
    /// The phase bit of the completion entry at `addr`, read with acquire ordering:
    /// what the card wrote before the phase bit is visible to reads after this one.
    /// The default copies the whole entry and fences; memory shared with a running
    /// card should load the phase word (bytes 30-31) atomically instead.
    fn cqe_phase(&mut self, addr: u64) -> Result<bool, Self::Error> {
        let mut b = [0u8; CQE_SIZE];
        self.read_cqe(addr, &mut b)?;
        fence(Ordering::Acquire);
        Ok(Cqe::phase_of(&b))
    }
    /// Writes a doorbell register.
    fn doorbell(&mut self, bell: Doorbell) -> Result<(), Self::Error>;
}

/// Why the engine refused: an untrusted completion, or a full SQ. Every variant
/// names the queue and the value it refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// No request in flight has this command id: never submitted, or completed
    /// already (a duplicate).
    UnknownCid { qid: u16, cid: u16 },
    /// A completion for another command than the one outstanding (admin).
    WrongCid { qid: u16, cid: u16, expected: u16 },
    /// The SQ head in a completion lies outside the ring, moves backwards or
    /// passes the tail.
    SqHead { qid: u16, head: u16 },
    /// A completion for another submission queue than this CQ's.
    WrongSq { qid: u16, sq: u16 },
    /// The entry does not parse (reserved bytes, unknown status).
    Malformed { qid: u16, wire: WireError },
    /// CQ slot `next` holds a completion while `slot` before it holds none:
    /// the card skipped `slot` or garbled its phase bit.
    PhaseGap { qid: u16, slot: u16, next: u16 },
    /// The SQ holds `size - 1` entries the card has not consumed.
    SqFull { qid: u16 },
}

impl QueueError {
    /// The queue the error is about.
    pub const fn qid(&self) -> u16 {
        match *self {
            QueueError::UnknownCid { qid, .. }
            | QueueError::WrongCid { qid, .. }
            | QueueError::SqHead { qid, .. }
            | QueueError::WrongSq { qid, .. }
            | QueueError::Malformed { qid, .. }
            | QueueError::PhaseGap { qid, .. }
            | QueueError::SqFull { qid } => qid,
        }
    }
}

impl core::fmt::Display for QueueError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            QueueError::UnknownCid { qid, cid } => write!(
                f,
                "completion with unknown or duplicate command id {cid} on queue {qid}"
            ),
            QueueError::WrongCid { qid, cid, expected } => write!(
                f,
                "completion for cid {cid} on queue {qid} (expected {expected})"
            ),
            QueueError::SqHead { qid, head } => {
                write!(
                    f,
                    "impossible SQ head {head} in a completion on queue {qid}"
                )
            }
            QueueError::WrongSq { qid, sq } => write!(f, "completion for SQ {sq} on CQ {qid}"),
            QueueError::Malformed { qid, wire } => {
                write!(f, "malformed completion on queue {qid}: {wire}")
            }
            QueueError::PhaseGap { qid, slot, next } => write!(
                f,
                "CQ slot {next} holds a completion while slot {slot} before it holds none \
                 (a lost or corrupted completion) on queue {qid}"
            ),
            QueueError::SqFull { qid } => {
                write!(
                    f,
                    "submission queue {qid} full (the card stopped consuming)"
                )
            }
        }
    }
}

/// What an engine call fails with: the engine's refusal, or the memory's error.
#[derive(Debug, PartialEq, Eq)]
pub enum Error<E> {
    Queue(QueueError),
    Memory(E),
}

impl<E> From<QueueError> for Error<E> {
    fn from(e: QueueError) -> Self {
        Error::Queue(e)
    }
}

impl<E: core::fmt::Display> core::fmt::Display for Error<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Queue(q) => q.fmt(f),
            Error::Memory(e) => e.fmt(f),
        }
    }
}

/// The host's submission ring of one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sq {
    qid: u16,
    base: u64,
    ring: SqProducer,
}

impl Sq {
    /// `None` for a size [`crate::ring::valid_size`] refuses.
    pub fn new(qid: u16, entries: u16, base: u64) -> Option<Sq> {
        Some(Sq {
            qid,
            base,
            ring: SqProducer::new(entries)?,
        })
    }
    pub fn qid(&self) -> u16 {
        self.qid
    }
    pub fn base(&self) -> u64 {
        self.base
    }
    pub fn size(&self) -> u16 {
        self.ring.size()
    }
    /// The tail as last published (or about to be, after [`Sq::push`]).
    pub fn tail(&self) -> u16 {
        self.ring.tail()
    }
    /// Entries submitted and not yet consumed by the card (as its completions say).
    pub fn used(&self) -> u16 {
        self.ring.used()
    }
    /// Entries that fit before the ring is full.
    pub fn free(&self) -> u16 {
        self.ring.free()
    }
    /// The address of SQ slot `slot`.
    pub fn slot_addr(&self, slot: u16) -> u64 {
        self.base + u64::from(slot) * SQE_SIZE as u64
    }
    /// Takes the next slot for an entry the caller writes ([`Sq::write`]), or
    /// [`QueueError::SqFull`].
    pub fn reserve(&mut self) -> Result<u16, QueueError> {
        self.ring.push().ok_or(QueueError::SqFull { qid: self.qid })
    }
    /// Writes `entry` into `slot` (one [`Sq::reserve`] gave).
    pub fn write<M: QueueMemory>(
        &self,
        mem: &mut M,
        slot: u16,
        entry: &[u8; SQE_SIZE],
    ) -> Result<(), Error<M::Error>> {
        mem.write_sqe(self.slot_addr(slot), entry)
            .map_err(Error::Memory)
    }
    /// Reserves a slot and writes `entry` into it; [`Sq::ring`] publishes it.
    pub fn push<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        entry: &[u8; SQE_SIZE],
    ) -> Result<u16, Error<M::Error>> {
        let slot = self.reserve()?;
        self.write(mem, slot, entry)?;
        Ok(slot)
    }
    /// Publishes the tail: release barrier (the entries before the index), then the
    /// SQ tail doorbell.
    pub fn ring<M: QueueMemory>(&self, mem: &mut M) -> Result<(), Error<M::Error>> {
        fence(Ordering::Release);
        mem.doorbell(Doorbell::SqTail {
            qid: self.qid,
            tail: self.ring.tail(),
        })
        .map_err(Error::Memory)
    }
    /// [`Sq::push`], then [`Sq::ring`]; returns the slot.
    pub fn submit<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        entry: &[u8; SQE_SIZE],
    ) -> Result<u16, Error<M::Error>> {
        let slot = self.push(mem, entry)?;
        self.ring(mem)?;
        Ok(slot)
    }
}

/// The host's completion ring of one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cq {
    qid: u16,
    base: u64,
    ring: CqConsumer,
    /// Entries consumed since the last CQ head doorbell.
    unreleased: u16,
}

impl Cq {
    /// `None` for a size [`crate::ring::valid_size`] refuses.
    pub fn new(qid: u16, entries: u16, base: u64) -> Option<Cq> {
        Some(Cq {
            qid,
            base,
            ring: CqConsumer::new(entries)?,
            unreleased: 0,
        })
    }
    pub fn qid(&self) -> u16 {
        self.qid
    }
    pub fn base(&self) -> u64 {
        self.base
    }
    pub fn size(&self) -> u16 {
        self.ring.size()
    }
    /// The next slot to look at (the head the next doorbell publishes).
    pub fn head(&self) -> u16 {
        self.ring.head()
    }
    /// The address of CQ slot `slot`.
    pub fn slot_addr(&self, slot: u16) -> u64 {
        self.base + u64::from(slot) * CQE_SIZE as u64
    }

    /// Takes the next completion if the card posted one (`Ok(None)`: none yet),
    /// refusing what the host cannot believe (see the module doc). `known` says
    /// whether the command id is in flight (the caller forgets it there);
    /// `false` is [`QueueError::UnknownCid`]. `sq` is this queue's SQ (its head
    /// moves). A refused entry stays where it is: the CQ head does not move.
    /// The CQ head doorbell is [`Cq::release`]'s.
    pub fn poll<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        sq: &mut Sq,
        known: impl FnOnce(&Cqe) -> bool,
    ) -> Result<Option<Cqe>, Error<M::Error>> {
        let qid = self.qid;
        self.poll_checked(mem, sq, |c| {
            if known(c) {
                Ok(())
            } else {
                Err(QueueError::UnknownCid { qid, cid: c.cid })
            }
        })
    }

    /// [`Cq::poll`] for a queue with one command outstanding, `cid`: any other
    /// command id is [`QueueError::WrongCid`].
    pub fn poll_cid<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        sq: &mut Sq,
        cid: u16,
    ) -> Result<Option<Cqe>, Error<M::Error>> {
        let qid = self.qid;
        self.poll_checked(mem, sq, |c| {
            if c.cid == cid {
                Ok(())
            } else {
                Err(QueueError::WrongCid {
                    qid,
                    cid: c.cid,
                    expected: cid,
                })
            }
        })
    }

    fn poll_checked<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        sq: &mut Sq,
        cid_ok: impl FnOnce(&Cqe) -> Result<(), QueueError>,
    ) -> Result<Option<Cqe>, Error<M::Error>> {
        let qid = self.qid;
        let (slot, phase) = self.ring.next();
        let at = self.slot_addr(slot);
        if mem.cqe_phase(at).map_err(Error::Memory)? != phase {
            // The card posts in slot order, so an entry in the slot after an empty one
            // means this one was skipped or its phase garbled: without this check the host
            // would wait here forever while the card posts behind it. The slot is read
            // again after its successor, so an entry written between the reads is no hole.
            let next = (slot + 1) & (self.size() - 1);
            let next_phase = if next == 0 { !phase } else { phase };
            let next_full =
                mem.cqe_phase(self.slot_addr(next)).map_err(Error::Memory)? == next_phase;
            if mem.cqe_phase(at).map_err(Error::Memory)? != phase {
                return if next_full {
                    Err(QueueError::PhaseGap { qid, slot, next }.into())
                } else {
                    Ok(None)
                };
            }
        }
        let mut b = [0u8; CQE_SIZE];
        mem.read_cqe(at, &mut b).map_err(Error::Memory)?;
        let cqe = Cqe::parse(&b).map_err(|wire| QueueError::Malformed { qid, wire })?;
        if cqe.sq_id != qid {
            return Err(QueueError::WrongSq { qid, sq: cqe.sq_id }.into());
        }
        // Nothing changes until every check passed: a refused entry leaves both rings as
        // they were.
        let mut ring = sq.ring;
        ring.update_head(cqe.sq_head)
            .map_err(|_| QueueError::SqHead {
                qid,
                head: cqe.sq_head,
            })?;
        cid_ok(&cqe)?;
        sq.ring = ring;
        self.ring.advance();
        self.unreleased = self.unreleased.saturating_add(1);
        Ok(Some(cqe))
    }

    /// Writes the CQ head doorbell if entries were consumed since the last one;
    /// returns whether it did.
    pub fn release<M: QueueMemory>(&mut self, mem: &mut M) -> Result<bool, Error<M::Error>> {
        if self.unreleased == 0 {
            return Ok(false);
        }
        mem.doorbell(Doorbell::CqHead {
            qid: self.qid,
            head: self.ring.head(),
        })
        .map_err(Error::Memory)?;
        self.unreleased = 0;
        Ok(true)
    }

    /// Takes every new completion ([`Cq::poll`]; `take` gets each and says whether
    /// its command id was in flight), then [`Cq::release`]. Returns how many.
    pub fn drain<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        sq: &mut Sq,
        mut take: impl FnMut(Cqe) -> bool,
    ) -> Result<usize, Error<M::Error>> {
        let mut n = 0;
        while self.poll(mem, sq, |c| take(*c))?.is_some() {
            n += 1;
        }
        self.release(mem)?;
        Ok(n)
    }
}

/// One queue pair (admin: qid 0) as a host sees it, for hosts that use both
/// rings from one thread. (The driver keeps [`Sq`] with its submitters and
/// [`Cq`] with its reaper.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuePair {
    pub sq: Sq,
    pub cq: Cq,
}

impl QueuePair {
    /// Rings of `entries` each way at `sq_base` and `cq_base`; `None` for a size
    /// [`crate::ring::valid_size`] refuses.
    pub fn new(qid: u16, entries: u16, sq_base: u64, cq_base: u64) -> Option<QueuePair> {
        Some(QueuePair {
            sq: Sq::new(qid, entries, sq_base)?,
            cq: Cq::new(qid, entries, cq_base)?,
        })
    }
    pub fn qid(&self) -> u16 {
        self.sq.qid
    }
    /// [`Sq::submit`].
    pub fn submit<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        entry: &[u8; SQE_SIZE],
    ) -> Result<u16, Error<M::Error>> {
        self.sq.submit(mem, entry)
    }
    /// [`Cq::poll`].
    pub fn poll<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        known: impl FnOnce(&Cqe) -> bool,
    ) -> Result<Option<Cqe>, Error<M::Error>> {
        self.cq.poll(mem, &mut self.sq, known)
    }
    /// [`Cq::poll_cid`], then [`Cq::release`] once the completion came.
    pub fn poll_cid<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        cid: u16,
    ) -> Result<Option<Cqe>, Error<M::Error>> {
        let c = self.cq.poll_cid(mem, &mut self.sq, cid)?;
        if c.is_some() {
            self.cq.release(mem)?;
        }
        Ok(c)
    }
    /// [`Cq::drain`].
    pub fn drain<M: QueueMemory>(
        &mut self,
        mem: &mut M,
        take: impl FnMut(Cqe) -> bool,
    ) -> Result<usize, Error<M::Error>> {
        self.cq.drain(mem, &mut self.sq, take)
    }
    /// [`Cq::release`].
    pub fn release<M: QueueMemory>(&mut self, mem: &mut M) -> Result<bool, Error<M::Error>> {
        self.cq.release(mem)
    }
}
