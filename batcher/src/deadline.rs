//! The `deadline` policy (beyond the paper; ELSA-like): earliest-deadline
//! first, per-slice latency models, batches that grow only while their most
//! urgent request still makes its deadline, early rejection of requests that
//! cannot. The rules are in the crate doc.

use crate::{Action, Armed, Entry, Error, Event, Policy, RejectReason, RequestId, SliceId, Time};

/// Latency of one slice as a function of batch size: `(batch, ns)` points,
/// strictly increasing in batch, interpolated like [`Entry::latency_ns`].
#[derive(Clone, Debug, PartialEq)]
pub struct SliceModel {
    pub latency_ns: Vec<(u32, Time)>,
}

impl SliceModel {
    /// The p50 curve of `entry` (what modeled slices sleep).
    pub fn from_entry(entry: &Entry) -> SliceModel {
        SliceModel {
            latency_ns: entry
                .points()
                .iter()
                .map(|p| (p.batch, entry.latency_ns(p.batch)))
                .collect(),
        }
    }

    /// Predicted latency of a batch of `batch`, in ns: linear between points,
    /// past the last along the last two (one point: constant throughput),
    /// never below the first point's latency.
    pub fn latency(&self, batch: u32) -> Time {
        let pts = &self.latency_ns;
        let (b0, l0) = pts[0];
        if batch <= b0 {
            return l0;
        }
        let b = f64::from(batch);
        if pts.len() == 1 {
            return (l0 as f64 * b / f64::from(b0)).round() as Time;
        }
        let k = pts
            .windows(2)
            .position(|w| batch <= w[1].0)
            .unwrap_or(pts.len() - 2);
        let ((x0, y0), (x1, y1)) = (pts[k], pts[k + 1]);
        let (x0, x1, y0, y1) = (f64::from(x0), f64::from(x1), y0 as f64, y1 as f64);
        let v = y0 + (y1 - y0) * (b - x0) / (x1 - x0);
        v.max(l0 as f64).round() as Time
    }

    fn check(&self, i: usize) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(format!("slice {i} latency model: {m}")));
        if self.latency_ns.is_empty() {
            return bad("needs at least one point");
        }
        if self.latency_ns[0].0 == 0 {
            return bad("batch sizes must be at least 1");
        }
        if self.latency_ns.windows(2).any(|w| w[1].0 <= w[0].0) {
            return bad("batch sizes must increase strictly");
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct DeadlineConfig {
    /// One latency model per slice (mixed slice sizes welcome).
    pub slices: Vec<SliceModel>,
    /// No batch is larger.
    pub max_batch: u32,
    /// Deadline of a request that carries none: `arrival + default_sla`.
    pub default_sla: Time,
    /// Admitted-but-undispatched limit; beyond it arrivals are rejected.
    pub max_queue: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SliceState {
    Free,
    /// Running a batch predicted to finish at `until`.
    Busy {
        until: Time,
    },
    Down,
}

#[derive(Clone, Debug)]
struct Queued {
    id: RequestId,
    arrival: Time,
    deadline: Time,
}

pub struct Deadline {
    cfg: DeadlineConfig,
    /// Earliest deadline first (ties: arrival, then admission order).
    queue: Vec<Queued>,
    slices: Vec<SliceState>,
    armed: Armed,
    /// A waiting batch leaves this long before its latest start.
    slack: Time,
}

impl Deadline {
    pub fn new(cfg: DeadlineConfig) -> Result<Deadline, Error> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if cfg.slices.is_empty() {
            return bad("slices must be at least 1");
        }
        for (i, m) in cfg.slices.iter().enumerate() {
            m.check(i)?;
        }
        if cfg.max_batch == 0 {
            return bad("max_batch must be at least 1");
        }
        if cfg.max_queue == 0 {
            return bad("max_queue must be at least 1");
        }
        Ok(Deadline {
            queue: Vec::new(),
            slices: vec![SliceState::Free; cfg.slices.len()],
            armed: Armed::default(),
            slack: 0,
            cfg,
        })
    }

    /// Leave `slack` before the latest start when waiting to grow a batch. A
    /// real-time driver needs it: its timer fires a little late, and a batch
    /// started at exactly the latest start would then miss by that much (the
    /// request is rejected instead of served). Virtual time needs none.
    pub fn with_slack(mut self, slack: Time) -> Deadline {
        self.slack = slack;
        self
    }

    pub fn config(&self) -> &DeadlineConfig {
        &self.cfg
    }

    fn lat(&self, s: SliceId, b: usize) -> Time {
        self.cfg.slices[s].latency(b as u32)
    }

    /// When slice `s` could start a batch: now if free, at its predicted
    /// finish if busy (now if that has passed), never if down.
    fn avail(&self, s: SliceId, now: Time) -> Option<Time> {
        match self.slices[s] {
            SliceState::Free => Some(now),
            SliceState::Busy { until } => Some(until.max(now)),
            SliceState::Down => None,
        }
    }

    /// The largest batch (<= max_batch) that, started on `s` at `start`,
    /// finishes by `deadline`, growing from 1 and stopping at the first size
    /// that would not.
    fn cap(&self, s: SliceId, start: Time, deadline: Time) -> usize {
        let mut k = 0;
        while k < self.cfg.max_batch as usize
            && start.saturating_add(self.lat(s, k + 1)) <= deadline
        {
            k += 1;
        }
        k
    }

    /// Earliest predicted finish of a batch of one over the slices that are
    /// up, with the slice where that is.
    fn best_single(&self, now: Time) -> Option<Time> {
        (0..self.slices.len())
            .filter_map(|s| Some(self.avail(s, now)?.saturating_add(self.lat(s, 1))))
            .min()
    }

    /// Rejects every queued request that even alone on the earliest-finishing
    /// slice would finish after its deadline (an EDF prefix of the queue).
    fn reject_hopeless(&mut self, now: Time, out: &mut Vec<Action>) {
        let Some(predicted) = self.best_single(now) else {
            return;
        };
        let n = self.queue.partition_point(|q| q.deadline < predicted);
        for q in self.queue.drain(..n) {
            out.push(Action::Reject {
                id: q.id,
                reason: RejectReason::DeadlineMiss {
                    deadline: q.deadline,
                    predicted,
                },
            });
        }
    }

    /// One planning pass (see the crate doc); returns whether it dispatched
    /// and when it wants to be woken.
    fn plan(&mut self, now: Time, out: &mut Vec<Action>) -> (bool, Option<Time>) {
        let mut open: Vec<(SliceId, Time, bool)> = (0..self.slices.len())
            .filter_map(|s| {
                let a = self.avail(s, now)?;
                Some((s, a, self.slices[s] == SliceState::Free))
            })
            .collect();
        let mut i = 0;
        let mut dispatched = false;
        let mut wake = None;
        while i < self.queue.len() && !open.is_empty() {
            let d = self.queue[i].deadline;
            let rest = self.queue.len() - i;
            let b = rest.min(self.cfg.max_batch as usize);
            let best = open
                .iter()
                .enumerate()
                .filter_map(|(k, &(s, a, free))| {
                    let cap = self.cap(s, a, d);
                    (cap > 0).then(|| ((a.saturating_add(self.lat(s, b)), !free, s), k, cap))
                })
                .min();
            let Some(((_, busy, s), k, cap)) = best else {
                break;
            };
            open.swap_remove(k);
            if busy {
                // Reserved for the slice that finishes it earliest.
                i += b.min(cap);
                continue;
            }
            let take = if rest >= cap {
                cap
            } else {
                let latest_start = d
                    .saturating_sub(self.lat(s, rest))
                    .saturating_sub(self.slack);
                if now < latest_start {
                    wake = Some(latest_start);
                    break;
                }
                rest
            };
            let batch: Vec<RequestId> = self.queue.drain(i..i + take).map(|q| q.id).collect();
            self.slices[s] = SliceState::Busy {
                until: now.saturating_add(self.lat(s, take)),
            };
            out.push(Action::Dispatch {
                slice: s,
                batch,
                bucket: None,
            });
            dispatched = true;
        }
        (dispatched, wake)
    }

    /// The first moment the queue's most urgent request becomes hopeless
    /// (None when nothing is queued or no slice is up).
    fn hopeless_at(&self, now: Time) -> Option<Time> {
        let d = self.queue.first()?.deadline;
        (0..self.slices.len())
            .filter(|&s| {
                self.avail(s, now)
                    .is_some_and(|a| a.saturating_add(self.lat(s, 1)) <= d)
            })
            .map(|s| d - self.lat(s, 1) + 1)
            .max()
    }
}

impl Policy for Deadline {
    fn handle(&mut self, now: Time, ev: Event, out: &mut Vec<Action>) {
        match ev {
            Event::Arrival(r) => {
                if self.queue.len() >= self.cfg.max_queue {
                    out.push(Action::Reject {
                        id: r.id,
                        reason: RejectReason::QueueFull {
                            limit: self.cfg.max_queue,
                        },
                    });
                } else {
                    let deadline = r
                        .deadline
                        .unwrap_or_else(|| r.arrival.saturating_add(self.cfg.default_sla));
                    let key = (deadline, r.arrival);
                    let pos = self
                        .queue
                        .partition_point(|q| (q.deadline, q.arrival) <= key);
                    self.queue.insert(
                        pos,
                        Queued {
                            id: r.id,
                            arrival: r.arrival,
                            deadline,
                        },
                    );
                }
            }
            Event::SliceFree { slice } => {
                if let Some(s) = self.slices.get_mut(slice) {
                    *s = SliceState::Free;
                }
            }
            Event::SliceDown { slice } => {
                if let Some(s) = self.slices.get_mut(slice) {
                    *s = SliceState::Down;
                }
            }
            Event::Timer => {
                self.armed.fired(now);
            }
        }
        let wake = loop {
            self.reject_hopeless(now, out);
            let (dispatched, wake) = self.plan(now, out);
            if !dispatched {
                break wake;
            }
        };
        let wake = match (wake, self.hopeless_at(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.armed.rearm(wake, out);
    }

    fn queued(&self) -> usize {
        self.queue.len()
    }

    fn queue_depths(&self) -> Vec<usize> {
        vec![self.queue.len()]
    }

    fn name(&self) -> &'static str {
        "deadline"
    }
}
