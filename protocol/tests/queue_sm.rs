//! State-machine tests of one queue pair (I/O and admin) against a plain
//! reference model: a host producer and reaper, a device consumer and
//! completer, shared rings of bytes between them, random interleavings,
//! wrap-around, full and empty rings, phase flips, out-of-order and coalesced
//! completions, and hostile doorbells.

use preba_protocol::admin::{AdminOpcode, AdminSqe};
use preba_protocol::io::{CQE_SIZE, Cqe, IoOpcode, SQE_SIZE, SgEntry, Sqe};
use preba_protocol::regs::QueueFault;
use preba_protocol::ring::{CqConsumer, CqProducer, SqConsumer, SqProducer};
use preba_protocol::status::Status;
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};

/// What kind of entries travel through the queue under test.
trait EntryKind {
    fn encode(cid: u16) -> [u8; SQE_SIZE];
    fn parse(bytes: &[u8; SQE_SIZE]) -> Option<u16>;
}

struct Io;
impl EntryKind for Io {
    fn encode(cid: u16) -> [u8; SQE_SIZE] {
        Sqe {
            opcode: IoOpcode::PreprocessImage as u8,
            cid,
            sg_count: 1,
            out_iova: 0x100_0000 + cid as u64 * 0x1000,
            out_len: 4096,
            in_len: 100 + cid as u32,
            sg: [
                SgEntry {
                    iova: 0x10_0000,
                    len: 100 + cid as u32,
                },
                SgEntry::default(),
            ],
            ..Sqe::default()
        }
        .encode()
    }
    fn parse(bytes: &[u8; SQE_SIZE]) -> Option<u16> {
        let v = Sqe::parse(bytes).ok()?;
        (v.raw.in_len == 100 + v.raw.cid as u32).then_some(v.raw.cid)
    }
}

struct Admin;
impl EntryKind for Admin {
    fn encode(cid: u16) -> [u8; SQE_SIZE] {
        AdminSqe {
            opcode: AdminOpcode::SetInterruptCoalescing as u8,
            cid,
            cdw: [cid as u32, 0xffff, 0, 0, 0, 0],
            ..AdminSqe::default()
        }
        .encode()
    }
    fn parse(bytes: &[u8; SQE_SIZE]) -> Option<u16> {
        let (op, s) = AdminSqe::parse(bytes).ok()?;
        (op == AdminOpcode::SetInterruptCoalescing && s.cdw[0] == s.cid as u32).then_some(s.cid)
    }
}

#[derive(Clone, Debug)]
enum Action {
    Submit(u8),
    RingSq,
    HostileSq(u32),
    Fetch(u8),
    /// Completes the fetched command at this index (mod len): CUs finish out of order.
    Complete(u8),
    Post(u8),
    /// The coalescing timer fires: signal whatever is posted.
    Timer,
    Reap(u8),
    RingCq,
    HostileCq(u32),
}

fn arb_action(hostile: u32) -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (1u8..8).prop_map(Action::Submit),
        4 => Just(Action::RingSq),
        hostile => any::<u32>().prop_map(|v| Action::HostileSq(v % 64)),
        5 => (1u8..8).prop_map(Action::Fetch),
        5 => any::<u8>().prop_map(Action::Complete),
        4 => (1u8..8).prop_map(Action::Post),
        2 => Just(Action::Timer),
        5 => (1u8..8).prop_map(Action::Reap),
        3 => Just(Action::RingCq),
        hostile => any::<u32>().prop_map(|v| Action::HostileCq(v % 64)),
    ]
}

struct World {
    size: u16,
    sq_mem: Vec<[u8; SQE_SIZE]>,
    cq_mem: Vec<[u8; CQE_SIZE]>,
    // host
    prod: SqProducer,
    cons: CqConsumer,
    next_cid: u16,
    outstanding: BTreeMap<u16, ()>,
    irq_seen: bool,
    // device
    sqc: SqConsumer,
    cqp: CqProducer,
    fetched: Vec<u16>,
    ready: VecDeque<u16>,
    unsignaled: u32,
    coalesce_count: u32,
    fault: Option<QueueFault>,
    /// A hostile doorbell the device could not tell from a real one was
    /// accepted: the device may now read stale entries or overwrite unread
    /// completions. The host must notice (unknown cid) instead of misbehaving.
    tainted: bool,
    host_fault: bool,
    // reference model
    ref_written: Vec<Option<u16>>,
    ref_announced: u16,
    ref_sq_head: u16,
    ref_posted_unreleased: u16,
    ref_cq_head: u16,
    completions: BTreeMap<u16, u32>,
    submitted: u32,
}

impl World {
    fn new(size: u16, coalesce_count: u32) -> Self {
        World {
            size,
            sq_mem: vec![[0; SQE_SIZE]; size as usize],
            cq_mem: vec![[0; CQE_SIZE]; size as usize],
            prod: SqProducer::new(size).unwrap(),
            cons: CqConsumer::new(size).unwrap(),
            next_cid: 0,
            outstanding: BTreeMap::new(),
            irq_seen: false,
            sqc: SqConsumer::new(size).unwrap(),
            cqp: CqProducer::new(size).unwrap(),
            fetched: Vec::new(),
            ready: VecDeque::new(),
            unsignaled: 0,
            coalesce_count,
            fault: None,
            tainted: false,
            host_fault: false,
            ref_written: vec![None; size as usize],
            ref_announced: 0,
            ref_sq_head: 0,
            ref_posted_unreleased: 0,
            ref_cq_head: 0,
            completions: BTreeMap::new(),
            submitted: 0,
        }
    }

    fn step<K: EntryKind>(&mut self, a: &Action) -> Result<(), TestCaseError> {
        let size = self.size as u32;
        match *a {
            Action::Submit(n) => {
                for _ in 0..n {
                    // The host also bounds in-flight commands by the ring size.
                    if self.outstanding.len() as u32 >= size - 1 {
                        break;
                    }
                    let Some(slot) = self.prod.push() else { break };
                    prop_assert!(
                        self.tainted || self.ref_written[slot as usize].is_none(),
                        "host overwrote slot {} before the device consumed it",
                        slot
                    );
                    let cid = self.next_cid;
                    self.next_cid = self.next_cid.wrapping_add(1);
                    prop_assert!(!self.outstanding.contains_key(&cid));
                    self.sq_mem[slot as usize] = K::encode(cid);
                    self.ref_written[slot as usize] = Some(cid);
                    self.outstanding.insert(cid, ());
                    self.submitted += 1;
                }
            }
            Action::RingSq => self.sq_doorbell(self.prod.tail() as u32)?,
            Action::HostileSq(v) => self.sq_doorbell(v)?,
            Action::Fetch(n) => {
                if self.fault.is_some() {
                    return Ok(());
                }
                for _ in 0..n {
                    let Some(slot) = self.sqc.pop() else { break };
                    prop_assert_eq!(slot, self.ref_sq_head);
                    self.ref_sq_head = (self.ref_sq_head + 1) % self.size;
                    self.ref_announced -= 1;
                    // Copy once, parse the copy.
                    let copy = self.sq_mem[slot as usize];
                    let cid = K::parse(&copy);
                    let want = self.ref_written[slot as usize].take();
                    if want.is_none() {
                        prop_assert!(self.tainted, "device consumed a slot nobody wrote");
                        // A stale entry: the device answers it under the cid it carries.
                        self.fetched.push(u16::from_le_bytes([copy[2], copy[3]]));
                        continue;
                    }
                    prop_assert_eq!(cid, want, "entry changed before it was consumed");
                    self.fetched.push(cid.unwrap());
                }
            }
            Action::Complete(i) => {
                if !self.fetched.is_empty() {
                    let cid = self.fetched.swap_remove(i as usize % self.fetched.len());
                    self.ready.push_back(cid);
                }
            }
            Action::Post(n) => {
                if self.fault.is_some() {
                    return Ok(());
                }
                for _ in 0..n {
                    if self.ready.is_empty() {
                        break;
                    }
                    let Some((slot, phase)) = self.cqp.push() else {
                        prop_assert_eq!(self.ref_posted_unreleased, self.size - 1);
                        break;
                    };
                    let cid = self.ready.pop_front().unwrap();
                    let cqe = Cqe {
                        cid,
                        sq_head: self.sqc.head(),
                        status: Status::Success as u16,
                        phase,
                        ..Cqe::default()
                    };
                    self.cq_mem[slot as usize] = cqe.encode();
                    self.ref_posted_unreleased += 1;
                    self.unsignaled += 1;
                    if self.unsignaled >= self.coalesce_count {
                        self.irq_seen = true;
                        self.unsignaled = 0;
                    }
                }
            }
            Action::Timer => {
                if self.unsignaled > 0 {
                    self.irq_seen = true;
                    self.unsignaled = 0;
                }
            }
            Action::Reap(n) => {
                // The host reaps on an interrupt; after draining it re-checks
                // once more (disable, drain, re-enable, re-check).
                if !self.irq_seen || self.host_fault {
                    return Ok(());
                }
                for _ in 0..n {
                    let (slot, phase) = self.cons.next();
                    let bytes = self.cq_mem[slot as usize];
                    if Cqe::phase_of(&bytes) != phase {
                        // Drained: only now may the host wait for the next
                        // interrupt. Clearing it earlier loses a wake-up.
                        self.irq_seen = false;
                        break;
                    }
                    let cqe =
                        Cqe::parse(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
                    if self.outstanding.remove(&cqe.cid).is_none()
                        || self.prod.update_head(cqe.sq_head).is_err()
                    {
                        // Untrusted completion: unknown or duplicate cid, or an
                        // impossible head. Only a hostile doorbell explains it.
                        prop_assert!(
                            self.tainted,
                            "unknown or duplicate cid {} in an honest run",
                            cqe.cid
                        );
                        self.host_fault = true;
                        return Ok(());
                    }
                    *self.completions.entry(cqe.cid).or_default() += 1;
                    self.cons.advance();
                }
            }
            Action::RingCq => self.cq_doorbell(self.cons.head() as u32)?,
            Action::HostileCq(v) => self.cq_doorbell(v)?,
        }
        Ok(())
    }

    fn sq_doorbell(&mut self, v: u32) -> Result<(), TestCaseError> {
        if self.fault.is_some() {
            return Ok(());
        }
        let size = self.size as u32;
        let ahead = (v + size - self.ref_sq_head as u32) % size;
        let expect_ok = v < size && ahead >= self.ref_announced as u32;
        match self.sqc.doorbell(v) {
            Ok(n) => {
                prop_assert!(expect_ok, "doorbell {} accepted", v);
                prop_assert_eq!(n as u32, ahead - self.ref_announced as u32);
                self.ref_announced = ahead as u16;
                let written = (0..self.size)
                    .take_while(|k| {
                        self.ref_written[((self.ref_sq_head + k) % self.size) as usize].is_some()
                    })
                    .count();
                if ahead as usize > written {
                    self.tainted = true;
                }
            }
            Err(f) => {
                prop_assert!(!expect_ok, "valid doorbell {} refused", v);
                prop_assert_eq!(f, QueueFault::SqDoorbellOutOfRange);
                self.fault = Some(f);
            }
        }
        Ok(())
    }

    fn cq_doorbell(&mut self, v: u32) -> Result<(), TestCaseError> {
        if self.fault.is_some() {
            return Ok(());
        }
        let size = self.size as u32;
        let released = (v + size - self.ref_cq_head as u32) % size;
        let expect_ok = v < size && released <= self.ref_posted_unreleased as u32;
        match self.cqp.doorbell(v) {
            Ok(n) => {
                prop_assert!(expect_ok);
                prop_assert_eq!(n as u32, released);
                let reaped = (self.cons.head() as u32 + size - self.ref_cq_head as u32) % size;
                if released > reaped {
                    self.tainted = true;
                }
                self.ref_posted_unreleased -= released as u16;
                self.ref_cq_head = v as u16;
            }
            Err(f) => {
                prop_assert!(!expect_ok, "valid CQ doorbell {} refused", v);
                prop_assert_eq!(f, QueueFault::CqDoorbellOutOfRange);
                self.fault = Some(f);
            }
        }
        Ok(())
    }

    /// Runs every side to quiescence; bounded, so a livelock fails the test.
    fn drain<K: EntryKind>(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..(4 * self.size as u32 + 16) {
            if self.outstanding.is_empty() || self.host_fault || self.fault.is_some() {
                break;
            }
            for a in [
                Action::RingSq,
                Action::Fetch(255),
                Action::Complete(0),
                Action::Complete(0),
                Action::Post(255),
                Action::Timer,
                Action::Reap(255),
                Action::RingCq,
            ] {
                self.step::<K>(&a)?;
            }
        }
        Ok(())
    }

    fn check_end(&self) -> Result<(), TestCaseError> {
        if self.fault.is_none() && !self.tainted {
            prop_assert!(!self.host_fault);
            prop_assert!(
                self.outstanding.is_empty(),
                "lost commands: {:?}",
                self.outstanding.keys()
            );
            prop_assert_eq!(self.completions.values().sum::<u32>(), self.submitted);
        }
        prop_assert!(
            self.completions.values().all(|&n| n == 1),
            "a command completed twice"
        );
        Ok(())
    }
}

fn run<K: EntryKind>(
    size_log: u32,
    coalesce: u32,
    actions: &[Action],
) -> Result<(), TestCaseError> {
    let mut w = World::new(1 << size_log, coalesce);
    for a in actions {
        w.step::<K>(a)?;
    }
    w.drain::<K>()?;
    w.check_end()
}

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn io_queue_pair(size_log in 1u32..6, coalesce in 1u32..6,
                     actions in proptest::collection::vec(arb_action(1), 0..300)) {
        run::<Io>(size_log, coalesce, &actions)?;
    }

    #[test]
    fn admin_queue_pair(size_log in 1u32..5, coalesce in 1u32..4,
                        actions in proptest::collection::vec(arb_action(1), 0..200)) {
        run::<Admin>(size_log, coalesce, &actions)?;
    }
}

/// Without hostile doorbells every command completes exactly once, however
/// the sides interleave (the drain must finish what the actions left).
#[test]
fn honest_runs_complete_everything() {
    let mut runner = proptest::test_runner::TestRunner::new(cfg());
    let honest = proptest::collection::vec(
        arb_action(1).prop_map(|a| match a {
            Action::HostileSq(_) => Action::RingSq,
            Action::HostileCq(_) => Action::RingCq,
            a => a,
        }),
        0..400,
    );
    runner
        .run(&(1u32..6, 1u32..6, honest), |(s, c, a)| {
            let mut w = World::new(1 << s, c);
            for x in &a {
                w.step::<Io>(x)?;
            }
            w.drain::<Io>()?;
            prop_assert!(w.fault.is_none());
            w.check_end()
        })
        .unwrap();
}

#[test]
fn full_ring_wraps_many_times() {
    let mut w = World::new(4, 1);
    for _ in 0..50 {
        w.step::<Io>(&Action::Submit(8)).unwrap();
        assert_eq!(w.prod.free(), 0, "ring holds size-1 entries");
        w.drain::<Io>().unwrap();
    }
    assert_eq!(w.submitted, 150);
    w.check_end().unwrap();
}

#[test]
fn doorbell_edge_values() {
    let mut c = SqConsumer::new(8).unwrap();
    assert_eq!(c.doorbell(8), Err(QueueFault::SqDoorbellOutOfRange));
    assert_eq!(c.doorbell(u32::MAX), Err(QueueFault::SqDoorbellOutOfRange));
    assert_eq!(c.doorbell(7), Ok(7));
    assert_eq!(
        c.doorbell(3),
        Err(QueueFault::SqDoorbellOutOfRange),
        "taking back entries"
    );
    let mut p = CqProducer::new(8).unwrap();
    assert_eq!(
        p.doorbell(1),
        Err(QueueFault::CqDoorbellOutOfRange),
        "nothing posted yet"
    );
    assert_eq!(p.push(), Some((0, true)));
    assert_eq!(p.doorbell(1), Ok(1));
    let mut s = SqProducer::new(8).unwrap();
    s.push();
    assert!(
        s.update_head(2).is_err(),
        "device claims to have consumed more than written"
    );
    assert!(s.update_head(1).is_ok());
}
