//! Property test: random event interleavings against a naive reference model
//! (exact actions) and the invariants of the crate doc (checked on the
//! actions alone, independently of either implementation).

use std::collections::{HashMap, HashSet};

use preba_batcher::{Action, Event, Policy, Preba, PrebaConfig, Request, RequestId, Time};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Arrival after `dt`; `late` makes `arrival` lie before `now` (preprocessing
    /// finished out of order).
    Arrive {
        dt: Time,
        late: Time,
        dur: f32,
    },
    Free(usize),
    Down(usize),
    Timer {
        dt: Time,
    },
    Advance(Time),
}

fn op(slices: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u64, prop_oneof![3 => Just(0u64), 1 => 0..8u64], 0.0f32..14.0)
            .prop_map(|(dt, late, dur)| Op::Arrive { dt, late, dur }),
        3 => (0..slices).prop_map(Op::Free),
        1 => (0..slices).prop_map(Op::Down),
        2 => (0..12u64).prop_map(|dt| Op::Timer { dt }),
        2 => (0..12u64).prop_map(Op::Advance),
    ]
}

fn config() -> impl Strategy<Value = PrebaConfig> {
    (
        1..4usize,
        prop::collection::vec(1..6u32, 1..5),
        0..15u64,
        1..25usize,
    )
        .prop_map(|(slices, batch_max, time_queue, max_queue)| PrebaConfig {
            slices,
            bucket_width_s: (batch_max.len() > 1).then_some(2.5),
            batch_max,
            time_queue,
            max_queue,
        })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum S {
    Free,
    Busy,
    Down,
}

/// The rules, written the slow and obvious way.
struct Model {
    cfg: PrebaConfig,
    /// (arrival, admission seq, id, bucket)
    queue: Vec<(Time, u64, RequestId, usize)>,
    slices: Vec<S>,
    armed: Option<Time>,
    seq: u64,
}

impl Model {
    fn bucket(&self, dur: Option<f32>) -> usize {
        match (self.cfg.bucket_width_s, dur) {
            (Some(w), Some(d)) => ((d / w) as usize).min(self.cfg.batch_max.len() - 1),
            _ => 0,
        }
    }

    fn in_bucket(&self, b: usize) -> Vec<(Time, u64, RequestId, usize)> {
        let mut v: Vec<_> = self.queue.iter().copied().filter(|q| q.3 == b).collect();
        v.sort();
        v
    }

    fn step(&mut self, now: Time, ev: &Event) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::Arrival(r) => {
                if self.queue.len() >= self.cfg.max_queue {
                    out.push(Action::Reject {
                        id: r.id,
                        reason: preba_batcher::RejectReason::QueueFull {
                            limit: self.cfg.max_queue,
                        },
                    });
                } else {
                    self.seq += 1;
                    let b = self.bucket(r.duration_s);
                    self.queue.push((r.arrival, self.seq, r.id, b));
                }
            }
            Event::SliceFree { slice } => self.slices[*slice] = S::Free,
            Event::SliceDown { slice } => self.slices[*slice] = S::Down,
            Event::Timer => {
                if self.armed.is_some_and(|a| a > now) {
                    self.armed = None;
                }
            }
        }
        let n = self.cfg.batch_max.len();
        let tq = self.cfg.time_queue;
        while let Some(slice) = self.slices.iter().position(|s| *s == S::Free) {
            let mut due = Vec::new();
            for b in 0..n {
                let q = self.in_bucket(b);
                if let Some(head) = q.first()
                    && (q.len() >= self.cfg.batch_max[b] as usize || head.0 + tq <= now)
                {
                    due.push((head.0, b));
                }
            }
            let Some(&(_, b)) = due.iter().min() else {
                break;
            };
            let own = self.in_bucket(b);
            let mut batch: Vec<RequestId> = own
                .iter()
                .take(self.cfg.batch_max[b] as usize)
                .map(|q| q.2)
                .collect();
            let mut longest = b;
            if own.len() < self.cfg.batch_max[b] as usize {
                let mut order = Vec::new();
                for d in 1..n {
                    if b >= d {
                        order.push(b - d);
                    }
                    if b + d < n {
                        order.push(b + d);
                    }
                }
                for j in order {
                    for q in self.in_bucket(j) {
                        if batch.len() < self.cfg.batch_max[longest.max(j)] as usize {
                            batch.push(q.2);
                            longest = longest.max(j);
                        }
                    }
                }
            }
            self.queue.retain(|q| !batch.contains(&q.2));
            self.slices[slice] = S::Busy;
            out.push(Action::Dispatch {
                slice,
                batch,
                bucket: self.cfg.bucket_width_s.map(|_| longest),
            });
        }
        match self.queue.iter().map(|q| q.0 + tq).min() {
            Some(at) if self.armed != Some(at) => {
                self.armed = Some(at);
                out.push(Action::ArmTimer { at });
            }
            Some(_) => {}
            None => self.armed = None,
        }
        out
    }
}

/// What the invariants need to know, tracked from events and actions only.
#[derive(Default)]
struct Checker {
    /// id -> (arrival, bucket) for admitted, undispatched requests
    waiting: HashMap<RequestId, (Time, usize)>,
    dispatched: HashSet<RequestId>,
    rejected: HashSet<RequestId>,
    slices: Vec<S>,
    timer: Option<Time>,
}

impl Checker {
    fn check(&mut self, cfg: &PrebaConfig, now: Time, ev: &Event, out: &[Action], bucket: usize) {
        let mut admitted = None;
        match ev {
            Event::Arrival(r) => admitted = Some((r.id, r.arrival)),
            Event::SliceFree { slice } => self.slices[*slice] = S::Free,
            Event::SliceDown { slice } => self.slices[*slice] = S::Down,
            Event::Timer => {}
        }
        if let Some((id, arrival)) = admitted {
            let rejected = out
                .iter()
                .any(|a| matches!(a, Action::Reject { id: r, .. } if *r == id));
            if rejected {
                assert!(self.rejected.insert(id));
                assert_eq!(
                    self.waiting.len(),
                    cfg.max_queue,
                    "rejected below the limit"
                );
            } else {
                self.waiting.insert(id, (arrival, bucket));
            }
        }
        for a in out {
            match a {
                Action::Dispatch {
                    slice,
                    batch,
                    bucket,
                } => {
                    assert_eq!(self.slices[*slice], S::Free, "slice {slice} not free");
                    self.slices[*slice] = S::Busy;
                    assert!(!batch.is_empty());
                    let buckets: Vec<usize> = batch
                        .iter()
                        .map(|id| {
                            assert!(self.dispatched.insert(*id), "{id:?} dispatched twice");
                            self.waiting.remove(id).expect("dispatched unknown id").1
                        })
                        .collect();
                    let longest = *buckets.iter().max().unwrap();
                    assert!(
                        batch.len() <= cfg.batch_max[longest] as usize,
                        "batch of {} over Batch_max {} of bucket {longest}",
                        batch.len(),
                        cfg.batch_max[longest]
                    );
                    assert_eq!(*bucket, cfg.bucket_width_s.map(|_| longest));
                }
                Action::ArmTimer { at } => self.timer = Some(*at),
                Action::Reject { .. } => {}
            }
        }
        let free = self.slices.contains(&S::Free);
        let earliest = self.waiting.values().map(|w| w.0 + cfg.time_queue).min();
        if let Some(earliest) = earliest {
            assert!(
                !(free && earliest <= now),
                "a request is overdue at {now} while a slice is free"
            );
            assert_eq!(
                self.timer,
                Some(earliest),
                "timer not at the earliest deadline"
            );
        }
    }
}

fn run(cfg: PrebaConfig, ops: Vec<Op>) {
    let mut p = Preba::new(cfg.clone()).unwrap();
    let mut m = Model {
        cfg: cfg.clone(),
        queue: Vec::new(),
        slices: vec![S::Free; cfg.slices],
        armed: None,
        seq: 0,
    };
    let mut c = Checker {
        slices: vec![S::Free; cfg.slices],
        ..Checker::default()
    };
    let mut now: Time = 10;
    let mut next_id = 0;
    let step = |now: Time, ev: Event, p: &mut Preba, m: &mut Model, c: &mut Checker| {
        let bucket = match &ev {
            Event::Arrival(r) => m.bucket(r.duration_s),
            _ => 0,
        };
        let mut out = Vec::new();
        p.handle(now, ev.clone(), &mut out);
        assert_eq!(out, m.step(now, &ev), "at {now} after {ev:?}");
        c.check(&cfg, now, &ev, &out, bucket);
        assert_eq!(p.queued(), c.waiting.len());
        assert_eq!(p.queue_depths().iter().sum::<usize>(), p.queued());
    };
    for o in ops {
        let ev = match o {
            Op::Arrive { dt, late, dur } => {
                now += dt;
                next_id += 1;
                Event::Arrival(Request {
                    id: RequestId(next_id),
                    arrival: now - late,
                    duration_s: cfg.bucket_width_s.map(|_| dur),
                    deadline: None,
                })
            }
            Op::Free(s) => Event::SliceFree { slice: s },
            Op::Down(s) => Event::SliceDown { slice: s },
            Op::Timer { dt } => {
                now += dt;
                Event::Timer
            }
            Op::Advance(dt) => {
                now += dt;
                continue;
            }
        };
        step(now, ev, &mut p, &mut m, &mut c);
    }
    // Drain: once every slice is back and time has passed, everything admitted
    // has gone out exactly once.
    now += cfg.time_queue + 1;
    for _ in 0..=next_id {
        for s in 0..cfg.slices {
            step(now, Event::SliceFree { slice: s }, &mut p, &mut m, &mut c);
        }
    }
    assert!(c.waiting.is_empty());
    assert_eq!(
        c.dispatched.len() + c.rejected.len(),
        next_id as usize,
        "every request is dispatched or rejected"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]
    #[test]
    fn preba_matches_the_model_and_keeps_its_invariants(
        (cfg, ops) in config().prop_flat_map(|cfg| {
            let n = cfg.slices;
            (Just(cfg), prop::collection::vec(op(n), 0..120))
        })
    ) {
        run(cfg, ops);
    }
}
