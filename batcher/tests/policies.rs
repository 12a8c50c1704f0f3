//! Property test for the `triton` and `deadline` policies: random event
//! interleavings, with the invariants of the crate doc checked on the actions
//! alone (the checker keeps its own view of slices, queues and predictions).

use std::collections::{HashMap, HashSet};

use preba_batcher::{
    Action, Deadline, DeadlineConfig, Event, Policy, RejectReason, Request, RequestId, SliceModel,
    Time, Triton, TritonConfig,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Arrive {
        dt: Time,
        late: Time,
        due: Option<Time>,
        /// Audio length in seconds (read only with length buckets).
        secs: f32,
    },
    /// SliceFree at a random moment (the prediction is off).
    Free(usize),
    /// Time moves to the earliest predicted finish; that slice reports free.
    FinishNext,
    Down(usize),
    /// Time moves to the armed timer, which fires.
    FireTimer,
    /// A spurious or early timer.
    Timer {
        dt: Time,
    },
    Advance(Time),
}

fn op(slices: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            0..4u64,
            prop_oneof![3 => Just(0u64), 1 => 0..8u64],
            prop::option::of(0..40u64),
            prop_oneof![4 => 0.0f32..12.0, 1 => Just(1e30f32), 1 => Just(f32::NAN)],
        )
            .prop_map(|(dt, late, due, secs)| Op::Arrive { dt, late, due, secs }),
        2 => (0..slices).prop_map(Op::Free),
        3 => Just(Op::FinishNext),
        1 => (0..slices).prop_map(Op::Down),
        2 => Just(Op::FireTimer),
        1 => (0..12u64).prop_map(|dt| Op::Timer { dt }),
        2 => (0..12u64).prop_map(Op::Advance),
    ]
}

#[derive(Clone, Debug)]
enum Cfg {
    Triton(TritonConfig),
    Deadline(DeadlineConfig),
}

impl Cfg {
    fn slices(&self) -> usize {
        match self {
            Cfg::Triton(c) => c.slices,
            Cfg::Deadline(c) => c.slices.len(),
        }
    }
    /// Latency of a batch of `b` on slice `s`, padded to length `bucket`.
    fn lat(&self, s: usize, b: usize, bucket: usize) -> Time {
        match self {
            Cfg::Triton(_) => 1 + b as Time,
            Cfg::Deadline(c) if c.by_length.is_empty() => c.slices[s].latency(b as u32),
            Cfg::Deadline(c) => {
                let ms = &c.by_length[s];
                ms[bucket.min(ms.len() - 1)].latency(b as u32)
            }
        }
    }
    /// The checker's own bucket rule: 2.5 s wide, the last one (over all
    /// slices) taking everything longer, images and bad lengths in 0.
    fn bucket(&self, secs: Option<f32>) -> usize {
        match (self, secs) {
            (Cfg::Deadline(c), Some(d)) if !c.by_length.is_empty() && d.is_finite() && d > 0.0 => {
                let last = c.by_length.iter().map(Vec::len).max().unwrap() - 1;
                ((d / 2.5).floor() as usize).min(last)
            }
            _ => 0,
        }
    }
}

fn triton_cfg() -> impl Strategy<Value = Cfg> {
    (
        1..4usize,
        1..7u32,
        prop_oneof![1 => Just(0u64), 3 => 1..15u64],
        1..10usize,
    )
        .prop_flat_map(|(slices, max, delay, max_queue)| {
            prop::collection::vec(1..=max, 0..3).prop_map(move |preferred| {
                Cfg::Triton(TritonConfig {
                    slices,
                    max_batch_size: max,
                    preferred,
                    max_queue_delay: delay,
                    max_queue,
                })
            })
        })
}

fn slice_model() -> impl Strategy<Value = SliceModel> {
    prop_oneof![
        (1..8u64, 0..4u64).prop_map(|(a, c)| SliceModel {
            latency_ns: vec![(1, a + c), (2, a + 2 * c)]
        }),
        (1..3u32, 1..8u64).prop_map(|(b, l)| SliceModel {
            latency_ns: vec![(b, l)]
        }),
        (1..8u64, 0..4u64, 0..6u64).prop_map(|(a, c, e)| SliceModel {
            latency_ns: vec![(1, a + c), (3, a + 3 * c + e), (4, a + 3 * c)]
        }),
    ]
}

fn deadline_cfg() -> impl Strategy<Value = Cfg> {
    (
        prop::collection::vec(slice_model(), 1..4),
        1..7u32,
        0..30u64,
        1..25usize,
    )
        .prop_flat_map(|(slices, max_batch, default_sla, max_queue)| {
            let n = slices.len();
            // Half the configs have per-slice length-bucket models (audio).
            let by_length = prop_oneof![
                Just(Vec::new()),
                prop::collection::vec(prop::collection::vec(slice_model(), 1..4), n..=n),
            ];
            (
                Just(slices),
                by_length,
                Just(max_batch),
                Just(default_sla),
                Just(max_queue),
            )
        })
        .prop_map(|(slices, by_length, max_batch, default_sla, max_queue)| {
            Cfg::Deadline(DeadlineConfig {
                slices,
                by_length,
                max_batch,
                default_sla,
                max_queue,
            })
        })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum S {
    Free,
    Busy { until: Time },
    Down,
}

struct W {
    arrival: Time,
    deadline: Time,
    slice: usize,
    bucket: usize,
}

struct Checker {
    cfg: Cfg,
    slices: Vec<S>,
    waiting: HashMap<RequestId, W>,
    dispatched: HashSet<RequestId>,
    rejected: HashSet<RequestId>,
    timer: Option<Time>,
    rr: usize,
}

impl Checker {
    /// Deadline policy: earliest finish of a batch of one request of
    /// `bucket` over the slices up.
    fn best_single(&self, now: Time, bucket: usize) -> Option<Time> {
        (0..self.slices.len())
            .filter_map(|s| match self.slices[s] {
                S::Free => Some(now + self.cfg.lat(s, 1, bucket)),
                S::Busy { until } => Some(until.max(now) + self.cfg.lat(s, 1, bucket)),
                S::Down => None,
            })
            .min()
    }

    fn check(&mut self, now: Time, ev: &Event, out: &[Action]) {
        match ev {
            Event::Arrival(r) => {
                let n = self.slices.len();
                let slice = (0..n)
                    .map(|k| (self.rr + k) % n)
                    .find(|&s| self.slices[s] != S::Down)
                    .unwrap_or(self.rr);
                let deadline = match &self.cfg {
                    Cfg::Triton(_) => {
                        self.rr = (slice + 1) % n;
                        0
                    }
                    Cfg::Deadline(c) => r.deadline.unwrap_or(r.arrival + c.default_sla),
                };
                let full = out.iter().any(|a| {
                    matches!(a, Action::Reject { id, reason: RejectReason::QueueFull { .. } } if *id == r.id)
                });
                if full {
                    assert!(self.rejected.insert(r.id));
                    match &self.cfg {
                        Cfg::Triton(c) => assert_eq!(
                            self.waiting.values().filter(|w| w.slice == slice).count(),
                            c.max_queue,
                            "rejected below the slice's limit"
                        ),
                        Cfg::Deadline(c) => assert_eq!(self.waiting.len(), c.max_queue),
                    }
                } else {
                    self.waiting.insert(
                        r.id,
                        W {
                            arrival: r.arrival,
                            deadline,
                            slice,
                            bucket: self.cfg.bucket(r.duration_s),
                        },
                    );
                }
            }
            Event::SliceFree { slice } => self.slices[*slice] = S::Free,
            Event::SliceDown { slice } => self.slices[*slice] = S::Down,
            Event::Timer => {}
        }
        for a in out {
            match a {
                Action::Dispatch {
                    slice,
                    batch,
                    bucket,
                } => {
                    assert_eq!(
                        self.slices[*slice],
                        S::Free,
                        "slice {slice} not free at {now}"
                    );
                    assert!(!batch.is_empty());
                    let ws: Vec<W> = batch
                        .iter()
                        .map(|id| {
                            assert!(self.dispatched.insert(*id), "{id:?} dispatched twice");
                            self.waiting.remove(id).expect("dispatched unknown id")
                        })
                        .collect();
                    let pad = ws.iter().map(|w| w.bucket).max().unwrap();
                    let bucketed = matches!(&self.cfg, Cfg::Deadline(c) if !c.by_length.is_empty());
                    assert_eq!(
                        *bucket,
                        bucketed.then_some(pad),
                        "the bucket a batch pads to"
                    );
                    let until = now + self.cfg.lat(*slice, batch.len(), pad);
                    match &self.cfg {
                        Cfg::Triton(c) => {
                            assert!(batch.len() <= c.max_batch_size as usize);
                            assert!(ws.iter().all(|w| w.slice == *slice), "queues are per slice");
                            let preferred = if c.preferred.is_empty() {
                                vec![c.max_batch_size]
                            } else {
                                c.preferred.clone()
                            };
                            let oldest = ws.iter().map(|w| w.arrival).min().unwrap();
                            assert!(
                                preferred.contains(&(batch.len() as u32))
                                    || c.max_queue_delay == 0
                                    || oldest + c.max_queue_delay <= now,
                                "a batch of {} before its delay expired",
                                batch.len()
                            );
                        }
                        Cfg::Deadline(c) => {
                            assert!(batch.len() <= c.max_batch as usize);
                            for w in &ws {
                                assert!(
                                    until <= w.deadline,
                                    "dispatched at {now} on {slice}, predicted to finish at \
                                     {until}, after a deadline {}",
                                    w.deadline
                                );
                            }
                        }
                    }
                    self.slices[*slice] = S::Busy { until };
                }
                Action::ArmTimer { at } => self.timer = Some(*at),
                Action::Reject {
                    id,
                    reason:
                        RejectReason::DeadlineMiss {
                            deadline,
                            predicted,
                        },
                } => {
                    assert!(matches!(self.cfg, Cfg::Deadline(_)));
                    let w = self.waiting.remove(id).expect("rejected unknown id");
                    assert!(self.rejected.insert(*id));
                    assert_eq!(*deadline, w.deadline);
                    assert_eq!(Some(*predicted), self.best_single(now, w.bucket));
                    assert!(predicted > deadline, "rejected though it could make it");
                }
                Action::Reject { .. } => {}
            }
        }
        match &self.cfg {
            Cfg::Triton(c) => {
                let min_pref = c
                    .preferred
                    .iter()
                    .min()
                    .copied()
                    .unwrap_or(c.max_batch_size);
                let mut wake = None::<Time>;
                for s in 0..self.slices.len() {
                    let q: Vec<&W> = self.waiting.values().filter(|w| w.slice == s).collect();
                    if self.slices[s] != S::Free || q.is_empty() {
                        continue;
                    }
                    let oldest = q.iter().map(|w| w.arrival).min().unwrap();
                    assert!(
                        q.len() < min_pref as usize,
                        "slice {s} free with a preferred batch"
                    );
                    assert!(c.max_queue_delay > 0 && oldest + c.max_queue_delay > now);
                    let at = oldest + c.max_queue_delay;
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
                if wake.is_some() {
                    assert_eq!(self.timer, wake, "timer not at the earliest expiry");
                }
            }
            Cfg::Deadline(_) => {
                for w in self.waiting.values() {
                    if let Some(best) = self.best_single(now, w.bucket) {
                        assert!(best <= w.deadline, "a hopeless request still waits");
                        assert!(self.timer.is_some_and(|t| t > now), "no wake-up armed");
                    }
                }
            }
        }
    }
}

fn run(cfg: Cfg, ops: Vec<Op>) {
    let mut p: Box<dyn Policy> = match &cfg {
        Cfg::Triton(c) => Box::new(Triton::new(c.clone()).unwrap()),
        Cfg::Deadline(c) => Box::new(Deadline::new(c.clone()).unwrap()),
    };
    let n = cfg.slices();
    let mut c = Checker {
        cfg,
        slices: vec![S::Free; n],
        waiting: HashMap::new(),
        dispatched: HashSet::new(),
        rejected: HashSet::new(),
        timer: None,
        rr: 0,
    };
    let mut now: Time = 10;
    let mut next_id = 0;
    let step = |now: Time, ev: Event, p: &mut Box<dyn Policy>, c: &mut Checker| {
        let mut out = Vec::new();
        p.handle(now, ev.clone(), &mut out);
        c.check(now, &ev, &out);
        assert_eq!(p.queued(), c.waiting.len());
        assert_eq!(p.queue_depths(), vec![p.queued()]);
    };
    for o in ops {
        let ev = match o {
            Op::Arrive {
                dt,
                late,
                due,
                secs,
            } => {
                now += dt;
                next_id += 1;
                Event::Arrival(Request {
                    id: RequestId(next_id),
                    arrival: now - late,
                    duration_s: Some(secs).filter(|_| next_id % 4 != 0),
                    deadline: due.map(|d| now - late + d),
                })
            }
            Op::Free(s) => Event::SliceFree { slice: s },
            Op::FinishNext => {
                let next = (0..n)
                    .filter_map(|s| match c.slices[s] {
                        S::Busy { until } => Some((until, s)),
                        _ => None,
                    })
                    .min();
                let Some((until, s)) = next else { continue };
                now = now.max(until);
                Event::SliceFree { slice: s }
            }
            Op::Down(s) => Event::SliceDown { slice: s },
            Op::FireTimer => {
                let Some(at) = c.timer else { continue };
                now = now.max(at);
                Event::Timer
            }
            Op::Timer { dt } => {
                now += dt;
                Event::Timer
            }
            Op::Advance(dt) => {
                now += dt;
                continue;
            }
        };
        step(now, ev, &mut p, &mut c);
    }
    // Drain: time passes every delay and deadline, every slice comes back.
    now += 1_000;
    for _ in 0..=next_id + 1 {
        step(now, Event::Timer, &mut p, &mut c);
        for s in 0..n {
            step(now, Event::SliceFree { slice: s }, &mut p, &mut c);
        }
    }
    assert!(c.waiting.is_empty());
    assert_eq!(
        c.dispatched.len() + c.rejected.len(),
        next_id as usize,
        "every request is dispatched or rejected, once"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn triton_keeps_its_invariants(
        (cfg, ops) in triton_cfg().prop_flat_map(|cfg| {
            let n = cfg.slices();
            (Just(cfg), prop::collection::vec(op(n), 0..120))
        })
    ) {
        run(cfg, ops);
    }

    #[test]
    fn deadline_keeps_its_invariants(
        (cfg, ops) in deadline_cfg().prop_flat_map(|cfg| {
            let n = cfg.slices();
            (Just(cfg), prop::collection::vec(op(n), 0..120))
        })
    ) {
        run(cfg, ops);
    }
}
