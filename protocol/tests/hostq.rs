//! The host-side queue engine (`preba_protocol::hostq`) against a small card model on
//! plain bytes: submit and reap with doorbells, wrap-around and phase flips, a full SQ,
//! and every completion a host must refuse (each error names the queue and the value,
//! and the refused entry stays unconsumed).

use preba_protocol::WireError;
use preba_protocol::admin::{AdminOpcode, AdminSqe, IDENTIFY_SIZE, PROFILE_SIZE, TELEMETRY_SIZE};
use preba_protocol::hostq::{Cq, Doorbell, Error, QueueError, QueueMemory, QueuePair, Sq};
use preba_protocol::io::{CQE_SIZE, Cqe, IoOpcode, SQE_SIZE, Sqe};
use preba_protocol::ring::{CqProducer, SqConsumer};
use preba_protocol::status::Status;
use proptest::prelude::*;
use std::collections::BTreeSet;

const SQ_BASE: u64 = 0x1000;
const CQ_BASE: u64 = 0x9000;
const MEM: usize = 0x10000;

/// Host memory as bytes, with a doorbell log.
struct Mem {
    bytes: Vec<u8>,
    bells: Vec<Doorbell>,
    /// Fail every access (the memory's own error).
    broken: bool,
    /// Written into memory at the `n`th phase read: a completion that lands between reads.
    late: Option<(usize, u64, [u8; CQE_SIZE])>,
    phase_reads: usize,
}

#[derive(Debug, PartialEq, Eq)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("broken memory")
    }
}

impl Mem {
    fn new() -> Mem {
        Mem {
            bytes: vec![0; MEM],
            bells: Vec::new(),
            broken: false,
            late: None,
            phase_reads: 0,
        }
    }
    fn cq_bells(&self) -> Vec<Doorbell> {
        self.bells
            .iter()
            .copied()
            .filter(|b| matches!(b, Doorbell::CqHead { .. }))
            .collect()
    }
}

impl QueueMemory for Mem {
    type Error = Broken;
    fn write_sqe(&mut self, addr: u64, entry: &[u8; SQE_SIZE]) -> Result<(), Broken> {
        if self.broken {
            return Err(Broken);
        }
        let a = addr as usize;
        self.bytes[a..a + SQE_SIZE].copy_from_slice(entry);
        Ok(())
    }
    fn read_cqe(&mut self, addr: u64, entry: &mut [u8; CQE_SIZE]) -> Result<(), Broken> {
        if self.broken {
            return Err(Broken);
        }
        let a = addr as usize;
        entry.copy_from_slice(&self.bytes[a..a + CQE_SIZE]);
        Ok(())
    }
    fn cqe_phase(&mut self, addr: u64) -> Result<bool, Broken> {
        self.phase_reads += 1;
        if let Some((n, at, e)) = self.late
            && self.phase_reads == n
        {
            self.bytes[at as usize..at as usize + CQE_SIZE].copy_from_slice(&e);
            self.late = None;
        }
        let mut b = [0u8; CQE_SIZE];
        self.read_cqe(addr, &mut b)?;
        Ok(Cqe::phase_of(&b))
    }
    fn doorbell(&mut self, bell: Doorbell) -> Result<(), Broken> {
        if self.broken {
            return Err(Broken);
        }
        self.bells.push(bell);
        Ok(())
    }
}

/// The card: fetches what the SQ doorbells announced, posts completions in slot order.
struct Dev {
    qid: u16,
    sq: SqConsumer,
    cq: CqProducer,
    seen_bells: usize,
    /// Command ids fetched, not yet completed.
    fetched: Vec<u16>,
}

impl Dev {
    fn new(qid: u16, size: u16) -> Dev {
        Dev {
            qid,
            sq: SqConsumer::new(size).unwrap(),
            cq: CqProducer::new(size).unwrap(),
            seen_bells: 0,
            fetched: Vec::new(),
        }
    }
    /// Takes the doorbells the host wrote since last time.
    fn bells(&mut self, m: &Mem) {
        for b in &m.bells[self.seen_bells..] {
            match *b {
                Doorbell::SqTail { qid, tail } if qid == self.qid => {
                    self.sq
                        .doorbell(u32::from(tail))
                        .expect("valid SQ doorbell");
                }
                Doorbell::CqHead { qid, head } if qid == self.qid => {
                    self.cq
                        .doorbell(u32::from(head))
                        .expect("valid CQ doorbell");
                }
                _ => {}
            }
        }
        self.seen_bells = m.bells.len();
    }
    fn fetch(&mut self, m: &Mem) {
        self.bells(m);
        while let Some(slot) = self.sq.pop() {
            let a = (SQ_BASE + u64::from(slot) * SQE_SIZE as u64) as usize;
            let b: [u8; SQE_SIZE] = m.bytes[a..a + SQE_SIZE].try_into().unwrap();
            self.fetched
                .push(Sqe::parse(&b).expect("valid SQE").raw.cid);
        }
    }
    /// The completion the card would post for `cid` now.
    fn cqe(&self, cid: u16) -> Cqe {
        Cqe {
            sq_head: self.sq.head(),
            sq_id: self.qid,
            cid,
            status: Status::Success as u16,
            ..Cqe::default()
        }
    }
    /// Posts raw bytes in the next CQ slot (its phase set by the ring); returns the slot.
    fn post_raw(&mut self, m: &mut Mem, mut b: [u8; CQE_SIZE]) -> u16 {
        self.bells(m);
        let (slot, phase) = self.cq.push().expect("CQ has room");
        b[30] = (b[30] & !1) | phase as u8;
        let a = (CQ_BASE + u64::from(slot) * CQE_SIZE as u64) as usize;
        m.bytes[a..a + CQE_SIZE].copy_from_slice(&b);
        slot
    }
    /// Completes fetched command `i` (any order); returns the CQ slot.
    fn complete(&mut self, m: &mut Mem, i: usize) -> u16 {
        let cid = self.fetched.remove(i);
        let e = self.cqe(cid).encode();
        self.post_raw(m, e)
    }
}

fn nop(cid: u16) -> [u8; SQE_SIZE] {
    Sqe {
        opcode: IoOpcode::Nop as u8,
        cid,
        ..Sqe::default()
    }
    .encode()
}

#[test]
fn submit_reap_and_doorbells() {
    let mut m = Mem::new();
    let mut q = QueuePair::new(3, 4, SQ_BASE, CQ_BASE).unwrap();
    let mut d = Dev::new(3, 4);
    for cid in [10, 11, 12] {
        q.submit(&mut m, &nop(cid)).unwrap();
    }
    assert_eq!(
        m.bells,
        (1..=3)
            .map(|tail| Doorbell::SqTail { qid: 3, tail })
            .collect::<Vec<_>>()
    );
    assert_eq!(
        Doorbell::SqTail { qid: 3, tail: 2 }.offset(),
        0x1000 + 8 * 3
    );
    assert_eq!(
        Doorbell::CqHead { qid: 3, head: 2 }.offset(),
        0x1000 + 8 * 3 + 4
    );
    assert_eq!(q.sq.free(), 0);
    d.fetch(&m);
    assert_eq!(q.poll(&mut m, |_| true), Ok(None), "nothing posted yet");
    d.complete(&mut m, 1);
    d.complete(&mut m, 0);
    let mut got = Vec::new();
    let n = q
        .drain(&mut m, |c| {
            got.push((c.cid, c.sq_head));
            true
        })
        .unwrap();
    assert_eq!((n, got), (2, vec![(11, 3), (10, 3)]));
    assert_eq!(m.cq_bells(), vec![Doorbell::CqHead { qid: 3, head: 2 }]);
    assert_eq!(q.sq.free(), 3, "the card consumed all three");
    // Nothing new: no second CQ doorbell.
    assert_eq!(q.drain(&mut m, |_| true), Ok(0));
    assert_eq!(m.cq_bells().len(), 1);
}

#[test]
fn wraps_and_flips_phase_over_many_laps() {
    for size in [2u16, 4, 8] {
        let mut m = Mem::new();
        let mut q = QueuePair::new(1, size, SQ_BASE, CQ_BASE).unwrap();
        let mut d = Dev::new(1, size);
        let mut next = 0u16;
        let mut done = Vec::new();
        let mut heads = Vec::new();
        for lap in 0..(6 * size as usize) {
            let batch = 1 + lap % (size as usize - 1);
            let mut sent = BTreeSet::new();
            for _ in 0..batch {
                q.submit(&mut m, &nop(next)).unwrap();
                sent.insert(next);
                next += 1;
            }
            d.fetch(&m);
            while !d.fetched.is_empty() {
                d.complete(&mut m, d.fetched.len() - 1);
            }
            q.drain(&mut m, |c| {
                done.push(c.cid);
                sent.remove(&c.cid)
            })
            .unwrap();
            assert!(
                sent.is_empty(),
                "size {size} lap {lap}: {sent:?} not completed"
            );
            heads.push(q.cq.head());
            // Stale entries of the lap before are never taken again.
            assert_eq!(q.poll(&mut m, |_| true), Ok(None));
        }
        let mut all = done.clone();
        all.sort();
        assert_eq!(all, (0..next).collect::<Vec<_>>(), "size {size}");
        assert!(
            next > 2 * size,
            "size {size}: the ring wrapped more than once"
        );
        assert_eq!(
            m.cq_bells()
                .iter()
                .map(|b| b.value() as u16)
                .collect::<Vec<_>>(),
            heads
        );
    }
}

#[test]
fn full_sq_is_refused_naming_the_queue() {
    let mut m = Mem::new();
    let mut q = QueuePair::new(5, 8, SQ_BASE, CQ_BASE).unwrap();
    let mut d = Dev::new(5, 8);
    for cid in 0..7 {
        q.submit(&mut m, &nop(cid)).unwrap();
    }
    let bells = m.bells.len();
    let e = q.submit(&mut m, &nop(7)).unwrap_err();
    assert_eq!(e, Error::Queue(QueueError::SqFull { qid: 5 }));
    assert!(e.to_string().contains("queue 5"), "{e}");
    assert_eq!(m.bells.len(), bells, "no doorbell for a refused entry");
    assert_eq!(q.sq.tail(), 7);
    // The card consumes one: one more fits.
    d.fetch(&m);
    d.complete(&mut m, 0);
    assert_eq!(q.drain(&mut m, |_| true), Ok(1));
    assert_eq!(q.sq.free(), 7, "the card fetched all seven");
    q.submit(&mut m, &nop(7)).unwrap();
    assert_eq!(q.sq.tail(), 0, "the tail wrapped");
}

#[test]
fn reserve_write_ring_is_submit() {
    let mut m = Mem::new();
    let mut sq = Sq::new(2, 4, SQ_BASE).unwrap();
    let a = sq.reserve().unwrap();
    let b = sq.reserve().unwrap();
    sq.write(&mut m, b, &nop(2)).unwrap();
    sq.write(&mut m, a, &nop(1)).unwrap();
    assert!(m.bells.is_empty());
    sq.ring(&mut m).unwrap();
    assert_eq!(m.bells, vec![Doorbell::SqTail { qid: 2, tail: 2 }]);
    let at = sq.slot_addr(1) as usize;
    assert_eq!(&m.bytes[at..at + SQE_SIZE], &nop(2)[..]);
    assert_eq!(sq.slot_addr(1), SQ_BASE + 64);
}

/// One bad completion: what it does to the queue, and its error.
struct Case {
    name: &'static str,
    /// Submitted before (cids 0..n).
    submitted: u16,
    /// Completed correctly first (and reaped).
    good_first: usize,
    /// The bad entry's bytes from the good completion of the next fetched command.
    mutate: fn(&mut [u8; CQE_SIZE]),
    /// Poll with `poll_cid(expect)` instead of a cid set.
    expect_cid: Option<u16>,
    want: QueueError,
    /// Text the message must hold besides the queue.
    value: &'static str,
}

const QID: u16 = 6;
const SIZE: u16 = 8;

fn put16(b: &mut [u8; CQE_SIZE], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "reserved bytes 20-23 not zero",
            submitted: 1,
            good_first: 0,
            mutate: |b| b[21] = 1,
            expect_cid: None,
            want: QueueError::Malformed {
                qid: QID,
                wire: WireError::ReservedNonZero { offset: 20 },
            },
            value: "reserved byte 20",
        },
        Case {
            name: "unknown status",
            submitted: 1,
            good_first: 0,
            mutate: |b| b[30] = (b[30] & 1) | (0x55 << 1),
            expect_cid: None,
            want: QueueError::Malformed {
                qid: QID,
                wire: WireError::InvalidField { field: "status" },
            },
            value: "status",
        },
        Case {
            name: "another SQ's completion",
            submitted: 1,
            good_first: 0,
            mutate: |b| put16(b, 26, 4),
            expect_cid: None,
            want: QueueError::WrongSq { qid: QID, sq: 4 },
            value: "SQ 4",
        },
        Case {
            name: "SQ head outside the ring",
            submitted: 1,
            good_first: 0,
            mutate: |b| put16(b, 24, SIZE),
            expect_cid: None,
            want: QueueError::SqHead {
                qid: QID,
                head: SIZE,
            },
            value: "SQ head 8",
        },
        Case {
            name: "SQ head past the tail",
            submitted: 2,
            good_first: 0,
            mutate: |b| put16(b, 24, 3),
            expect_cid: None,
            want: QueueError::SqHead { qid: QID, head: 3 },
            value: "SQ head 3",
        },
        Case {
            name: "SQ head moving backwards",
            submitted: 3,
            good_first: 1,
            // The good completion reported head 3 (all fetched); this one says 1.
            mutate: |b| put16(b, 24, 1),
            expect_cid: None,
            want: QueueError::SqHead { qid: QID, head: 1 },
            value: "SQ head 1",
        },
        Case {
            name: "command id never submitted",
            submitted: 1,
            good_first: 0,
            mutate: |b| put16(b, 28, 0x4242),
            expect_cid: None,
            want: QueueError::UnknownCid {
                qid: QID,
                cid: 0x4242,
            },
            value: "command id 16962",
        },
        Case {
            name: "duplicate completion",
            submitted: 2,
            good_first: 1,
            // The first good completion was for cid 1 (the last fetched).
            mutate: |b| put16(b, 28, 1),
            expect_cid: None,
            want: QueueError::UnknownCid { qid: QID, cid: 1 },
            value: "command id 1",
        },
        Case {
            name: "another command than the outstanding one",
            submitted: 1,
            good_first: 0,
            mutate: |b| put16(b, 28, 9),
            expect_cid: Some(0),
            want: QueueError::WrongCid {
                qid: QID,
                cid: 9,
                expected: 0,
            },
            value: "cid 9",
        },
    ]
}

/// Runs one case: every bad completion is refused with its error, the CQ head stays, no CQ
/// doorbell is written, and polling again refuses the same entry again.
fn run_case(c: &Case) {
    let mut m = Mem::new();
    let mut q = QueuePair::new(QID, SIZE, SQ_BASE, CQ_BASE).unwrap();
    let mut d = Dev::new(QID, SIZE);
    let mut inflight = BTreeSet::new();
    for cid in 0..c.submitted {
        q.submit(&mut m, &nop(cid)).unwrap();
        inflight.insert(cid);
    }
    d.fetch(&m);
    for _ in 0..c.good_first {
        d.complete(&mut m, d.fetched.len() - 1);
    }
    q.drain(&mut m, |e| inflight.remove(&e.cid)).unwrap();
    let bells = m.cq_bells().len();
    let head = q.cq.head();
    let sq_free = q.sq.free();
    let cid = d.fetched[0];
    let mut b = d.cqe(cid).encode();
    (c.mutate)(&mut b);
    d.post_raw(&mut m, b);
    for attempt in 0..2 {
        let r = match c.expect_cid {
            Some(e) => q.poll_cid(&mut m, e),
            None => q.poll(&mut m, |e| inflight.contains(&e.cid)),
        };
        let e = r.expect_err(c.name);
        assert_eq!(e, Error::Queue(c.want), "{}", c.name);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("queue {QID}")) || msg.contains(&format!("CQ {QID}")),
            "{}: {msg}",
            c.name
        );
        assert!(
            msg.contains(c.value),
            "{}: {msg} lacks {:?}",
            c.name,
            c.value
        );
        assert_eq!(c.want.qid(), QID);
        assert_eq!(
            q.cq.head(),
            head,
            "{} (attempt {attempt}): CQ head moved",
            c.name
        );
        assert_eq!(q.sq.free(), sq_free, "{}: SQ head moved", c.name);
        assert_eq!(m.cq_bells().len(), bells, "{}: CQ doorbell written", c.name);
    }
    // The drain refuses it the same way.
    let e = q.drain(&mut m, |e| inflight.contains(&e.cid)).unwrap_err();
    if c.expect_cid.is_none() {
        assert_eq!(e, Error::Queue(c.want), "{}", c.name);
    }
}

#[test]
fn every_untrusted_completion_is_refused() {
    for c in cases() {
        run_case(&c);
    }
}

/// The same completions, unmutated, are taken: the cases above fail for the mutation alone.
#[test]
fn the_unmutated_completions_are_taken() {
    for c in cases() {
        let mut m = Mem::new();
        let mut q = QueuePair::new(QID, SIZE, SQ_BASE, CQ_BASE).unwrap();
        let mut d = Dev::new(QID, SIZE);
        for cid in 0..c.submitted {
            q.submit(&mut m, &nop(cid)).unwrap();
        }
        d.fetch(&m);
        for _ in 0..c.good_first {
            d.complete(&mut m, d.fetched.len() - 1);
        }
        let mut inflight: BTreeSet<u16> = (0..c.submitted).collect();
        q.drain(&mut m, |e| inflight.remove(&e.cid)).unwrap();
        let cid = d.fetched[0];
        d.post_raw(&mut m, d.cqe(cid).encode());
        let got = match c.expect_cid {
            Some(e) => q.poll_cid(&mut m, e),
            None => q.poll(&mut m, |e| inflight.remove(&e.cid)),
        };
        assert_eq!(got.map(|c| c.map(|c| c.cid)), Ok(Some(cid)), "{}", c.name);
    }
}

#[test]
fn an_entry_behind_an_empty_slot_is_a_phase_gap() {
    // Slot 0 empty, slot 1 posted (the card skipped slot 0).
    let mut m = Mem::new();
    let mut q = QueuePair::new(QID, SIZE, SQ_BASE, CQ_BASE).unwrap();
    let mut d = Dev::new(QID, SIZE);
    q.submit(&mut m, &nop(0)).unwrap();
    q.submit(&mut m, &nop(1)).unwrap();
    d.fetch(&m);
    let skipped = d.cq.push().unwrap();
    assert_eq!(skipped, (0, true));
    d.fetched.remove(0);
    d.complete(&mut m, 0);
    let e = q.poll(&mut m, |_| true).unwrap_err();
    assert_eq!(
        e,
        Error::Queue(QueueError::PhaseGap {
            qid: QID,
            slot: 0,
            next: 1
        })
    );
    let msg = e.to_string();
    assert!(
        msg.contains("slot 1") && msg.contains("slot 0") && msg.contains("queue 6"),
        "{msg}"
    );
    assert_eq!(q.cq.head(), 0);
    assert!(m.cq_bells().is_empty());
    assert_eq!(q.drain(&mut m, |_| true), Err(e));
}

#[test]
fn a_phase_gap_across_the_wrap() {
    // The host waits at the last slot; slot 0 of the next lap (flipped phase) is posted.
    let mut m = Mem::new();
    let mut q = QueuePair::new(QID, 4, SQ_BASE, CQ_BASE).unwrap();
    let mut d = Dev::new(QID, 4);
    for cid in 0..3 {
        q.submit(&mut m, &nop(cid)).unwrap();
    }
    d.fetch(&m);
    for _ in 0..3 {
        d.complete(&mut m, 0);
    }
    assert_eq!(q.drain(&mut m, |_| true), Ok(3));
    for cid in 3..5 {
        q.submit(&mut m, &nop(cid)).unwrap();
    }
    d.fetch(&m);
    d.cq.push().unwrap(); // slot 3 never written
    d.fetched.remove(0);
    let slot = d.complete(&mut m, 0);
    assert_eq!(slot, 0);
    assert_eq!(
        q.poll(&mut m, |_| true),
        Err(Error::Queue(QueueError::PhaseGap {
            qid: QID,
            slot: 3,
            next: 0
        }))
    );
}

#[test]
fn an_entry_landing_between_the_reads_is_no_gap() {
    // The first read of slot 0 sees it empty; by the time slot 1 and slot 0 again are read,
    // both are there: slot 0 is taken, in order.
    let mut m = Mem::new();
    let mut q = QueuePair::new(QID, SIZE, SQ_BASE, CQ_BASE).unwrap();
    let mut d = Dev::new(QID, SIZE);
    q.submit(&mut m, &nop(0)).unwrap();
    q.submit(&mut m, &nop(1)).unwrap();
    d.fetch(&m);
    let first = d.cqe(0);
    let (slot0, phase) = d.cq.push().unwrap();
    d.fetched.remove(0);
    d.complete(&mut m, 0);
    let mut b = first.encode();
    b[30] |= phase as u8;
    m.late = Some((2, CQ_BASE + u64::from(slot0) * CQE_SIZE as u64, b));
    let mut got = Vec::new();
    assert_eq!(
        q.drain(&mut m, |c| {
            got.push(c.cid);
            true
        }),
        Ok(2)
    );
    assert_eq!(got, vec![0, 1]);

    // Landing after the re-read: nothing yet, no error.
    let mut m = Mem::new();
    let mut q = QueuePair::new(QID, SIZE, SQ_BASE, CQ_BASE).unwrap();
    q.submit(&mut m, &nop(0)).unwrap();
    let mut b = Cqe {
        sq_head: 1,
        sq_id: QID,
        ..Cqe::default()
    }
    .encode();
    b[30] |= 1;
    m.late = Some((4, CQ_BASE, b));
    assert_eq!(q.poll(&mut m, |_| true), Ok(None));
    assert_eq!(q.poll(&mut m, |_| true).map(|c| c.is_some()), Ok(true));
}

#[test]
fn memory_errors_come_back_as_memory_errors() {
    let mut m = Mem::new();
    let mut q = QueuePair::new(QID, SIZE, SQ_BASE, CQ_BASE).unwrap();
    m.broken = true;
    assert_eq!(q.submit(&mut m, &nop(0)), Err(Error::Memory(Broken)));
    assert_eq!(q.poll(&mut m, |_| true), Err(Error::Memory(Broken)));
    assert_eq!(q.drain(&mut m, |_| true), Err(Error::Memory(Broken)));
}

#[test]
fn bad_sizes_make_no_queue() {
    for n in [0u16, 1, 3, 5000] {
        assert!(QueuePair::new(1, n, SQ_BASE, CQ_BASE).is_none(), "{n}");
        assert!(Sq::new(1, n, SQ_BASE).is_none() && Cq::new(1, n, CQ_BASE).is_none());
    }
}

#[test]
fn admin_builders_follow_the_spec() {
    let parse = |s: AdminSqe| AdminSqe::parse(&s.encode()).expect("valid admin entry");
    let (op, s) = parse(AdminSqe::create_io_queue_pair(
        3,
        64,
        0x1_2345_6000,
        0xab_cdef_0000,
        Some(5),
    ));
    assert_eq!(op, AdminOpcode::CreateIoQueuePair);
    assert_eq!(s.cdw[0], 3 | 63 << 16);
    assert_eq!((s.cdw[1], s.cdw[2]), (0xcdef_0000, 0xab));
    assert_eq!(s.cdw[3], 5 | 1 << 16);
    assert_eq!((s.data_iova, s.data_len), (0x1_2345_6000, 64 * 64));
    let (_, s) = parse(AdminSqe::create_io_queue_pair(1, 16, 0x1000, 0x2000, None));
    assert_eq!(s.cdw[3], 0, "interrupts off");
    let (op, s) = parse(AdminSqe::identify(0x3000));
    assert_eq!(
        (op, s.data_iova, s.data_len),
        (AdminOpcode::Identify, 0x3000, IDENTIFY_SIZE as u32)
    );
    let (op, s) = parse(AdminSqe::get_telemetry(0x3000));
    assert_eq!(
        (op, s.data_len),
        (AdminOpcode::GetTelemetry, TELEMETRY_SIZE as u32)
    );
    let (op, s) = parse(AdminSqe::set_profile(7, 0x4000));
    assert_eq!(
        (op, s.cdw[0], s.data_iova, s.data_len),
        (AdminOpcode::SetProfile, 7, 0x4000, PROFILE_SIZE as u32)
    );
    let (op, s) = parse(AdminSqe::delete_io_queue_pair(2));
    assert_eq!(
        (op, s.cdw[0], s.data_len),
        (AdminOpcode::DeleteIoQueuePair, 2, 0)
    );
    let (op, s) = parse(AdminSqe::new(
        AdminOpcode::Abort,
        [1 | 9 << 16, 0, 0, 0, 0, 0],
        0,
        0,
    ));
    assert_eq!((op, s.cdw[0], s.cid), (AdminOpcode::Abort, 1 | 9 << 16, 0));
}

#[derive(Clone, Debug)]
enum Step {
    Submit,
    Fetch,
    Complete(u8),
    Reap,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Submit),
        2 => Just(Step::Fetch),
        3 => any::<u8>().prop_map(Step::Complete),
        2 => Just(Step::Reap),
    ]
}

proptest! {
    /// An honest card, any interleaving: never an error, every command completes exactly
    /// once, the SQ never takes more than size - 1 entries.
    #[test]
    fn an_honest_card_is_never_refused(
        size in prop_oneof![Just(2u16), Just(4), Just(8)],
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let mut m = Mem::new();
        let mut q = QueuePair::new(1, size, SQ_BASE, CQ_BASE).unwrap();
        let mut d = Dev::new(1, size);
        let mut inflight = BTreeSet::new();
        let mut next = 0u16;
        let mut done = 0usize;
        for s in steps {
            match s {
                Step::Submit => match q.submit(&mut m, &nop(next)) {
                    Ok(_) => {
                        inflight.insert(next);
                        next += 1;
                    }
                    Err(e) => {
                        prop_assert_eq!(e, Error::Queue(QueueError::SqFull { qid: 1 }));
                        prop_assert_eq!(q.sq.free(), 0);
                    }
                },
                Step::Fetch => d.fetch(&m),
                Step::Complete(i) => {
                    d.bells(&m);
                    if !d.fetched.is_empty() && d.cq.free() > 0 {
                        let i = i as usize % d.fetched.len();
                        d.complete(&mut m, i);
                    }
                }
                Step::Reap => {
                    done += q.drain(&mut m, |c| inflight.remove(&c.cid)).unwrap();
                }
            }
        }
        // Finish: everything submitted completes.
        for _ in 0..1000 {
            if inflight.is_empty() {
                break;
            }
            d.fetch(&m);
            while !d.fetched.is_empty() && d.cq.free() > 0 {
                d.complete(&mut m, 0);
            }
            done += q.drain(&mut m, |c| inflight.remove(&c.cid)).unwrap();
        }
        prop_assert!(inflight.is_empty(), "{:?}", inflight);
        prop_assert_eq!(done, next as usize);
    }
}
