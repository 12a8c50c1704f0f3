//! The `deadline` policy (beyond the paper; ELSA-like): earliest-deadline
//! first, per-slice latency models, batches that grow only while their most
//! urgent request still makes its deadline, early rejection of requests that
//! cannot. The rules are in the crate doc.

use crate::{
    AUDIO_BUCKET_WIDTH_S, Action, Armed, Entry, Error, Event, Policy, RejectReason, Request,
    RequestId, SliceId, Time,
};

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
    /// One latency model per slice (mixed slice sizes welcome): images, and
    /// audio when `by_length` is empty.
    pub slices: Vec<SliceModel>,
    /// Audio: per slice, one model per length bucket
    /// ([`AUDIO_BUCKET_WIDTH_S`] wide, the last taking everything longer), so
    /// a batch is predicted at the length it is padded to (its longest
    /// input). Empty: `slices` for every request.
    pub by_length: Vec<Vec<SliceModel>>,
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
    /// Length bucket (0 for images and without `by_length`).
    bucket: usize,
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
        if !cfg.by_length.is_empty() {
            if cfg.by_length.len() != cfg.slices.len() {
                return Err(Error::Config(format!(
                    "by_length has models for {} slices, slices has {}",
                    cfg.by_length.len(),
                    cfg.slices.len()
                )));
            }
            for (i, ms) in cfg.by_length.iter().enumerate() {
                if ms.is_empty() {
                    return bad("by_length needs at least one bucket per slice");
                }
                for m in ms {
                    m.check(i)?;
                }
            }
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

    /// Predicted latency on slice `s` of a batch of `b` padded to bucket
    /// `bucket`.
    fn lat(&self, s: SliceId, b: usize, bucket: usize) -> Time {
        match self.cfg.by_length.get(s) {
            Some(ms) => ms[bucket.min(ms.len() - 1)].latency(b as u32),
            None => self.cfg.slices[s].latency(b as u32),
        }
    }

    fn bucket_of(&self, r: &Request) -> usize {
        match r.duration_s {
            Some(d) if !self.cfg.by_length.is_empty() && d.is_finite() && d > 0.0 => {
                let last = self.cfg.by_length.iter().map(Vec::len).max().unwrap_or(1) - 1;
                // `as` saturates: absurd lengths land in the last bucket.
                ((d / AUDIO_BUCKET_WIDTH_S).floor() as usize).min(last)
            }
            _ => 0,
        }
    }

    /// The bucket a batch of the queued requests `i..i + k` pads to.
    fn pad(&self, i: usize, k: usize) -> usize {
        self.queue[i..i + k]
            .iter()
            .map(|q| q.bucket)
            .max()
            .unwrap_or(0)
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

    /// The largest batch (<= max_batch) of the queued requests from `i` on
    /// that, started on `s` at `start`, finishes by `deadline`, growing from
    /// 1 and stopping at the first size that would not.
    fn cap(&self, s: SliceId, start: Time, deadline: Time, i: usize) -> usize {
        let limit = (self.cfg.max_batch as usize).min(self.queue.len() - i);
        let mut k = 0;
        let mut pad = 0;
        while k < limit {
            pad = pad.max(self.queue[i + k].bucket);
            if start.saturating_add(self.lat(s, k + 1, pad)) > deadline {
                break;
            }
            k += 1;
        }
        // Past the queue, more requests of the batch's own length.
        while k < self.cfg.max_batch as usize
            && k >= limit
            && start.saturating_add(self.lat(s, k + 1, pad)) <= deadline
        {
            k += 1;
        }
        k
    }

    /// Earliest predicted finish of a batch of one request of `bucket` over
    /// the slices that are up.
    fn best_single(&self, now: Time, bucket: usize) -> Option<Time> {
        (0..self.slices.len())
            .filter_map(|s| Some(self.avail(s, now)?.saturating_add(self.lat(s, 1, bucket))))
            .min()
    }

    /// Rejects every queued request that even alone on the earliest-finishing
    /// slice would finish after its deadline (without length buckets an EDF
    /// prefix of the queue).
    fn reject_hopeless(&mut self, now: Time, out: &mut Vec<Action>) {
        let mut predicted: Vec<Option<Option<Time>>> = Vec::new();
        let mut k = 0;
        while k < self.queue.len() {
            let (deadline, bucket) = (self.queue[k].deadline, self.queue[k].bucket);
            if predicted.len() <= bucket {
                predicted.resize(bucket + 1, None);
            }
            let p = match predicted[bucket] {
                Some(p) => p,
                None => {
                    let p = self.best_single(now, bucket);
                    predicted[bucket] = Some(p);
                    p
                }
            };
            let Some(p) = p else {
                return; // no slice up: requests wait
            };
            if deadline < p {
                let q = self.queue.remove(k);
                out.push(Action::Reject {
                    id: q.id,
                    reason: RejectReason::DeadlineMiss {
                        deadline: q.deadline,
                        predicted: p,
                    },
                });
            } else if self.cfg.by_length.is_empty() {
                return; // EDF: every later deadline is later still
            } else {
                k += 1;
            }
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
            let pad_b = self.pad(i, b);
            let best = open
                .iter()
                .enumerate()
                .filter_map(|(k, &(s, a, free))| {
                    let cap = self.cap(s, a, d, i);
                    (cap > 0).then(|| ((a.saturating_add(self.lat(s, b, pad_b)), !free, s), k, cap))
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
                    .saturating_sub(self.lat(s, rest, self.pad(i, rest)))
                    .saturating_sub(self.slack);
                if now < latest_start {
                    wake = Some(latest_start);
                    break;
                }
                rest
            };
            let pad = self.pad(i, take);
            let batch: Vec<RequestId> = self.queue.drain(i..i + take).map(|q| q.id).collect();
            self.slices[s] = SliceState::Busy {
                until: now.saturating_add(self.lat(s, take, pad)),
            };
            out.push(Action::Dispatch {
                slice: s,
                batch,
                bucket: (!self.cfg.by_length.is_empty()).then_some(pad),
            });
            dispatched = true;
        }
        (dispatched, wake)
    }

    /// The first moment a queued request becomes hopeless (None when nothing
    /// is queued or no slice is up): per length bucket, only its most urgent
    /// request can be first.
    fn hopeless_at(&self, now: Time) -> Option<Time> {
        let mut seen: Vec<bool> = Vec::new();
        let mut first = None;
        for q in &self.queue {
            if seen.len() <= q.bucket {
                seen.resize(q.bucket + 1, false);
            }
            if std::mem::replace(&mut seen[q.bucket], true) {
                continue;
            }
            let d = q.deadline;
            let at = (0..self.slices.len())
                .filter(|&s| {
                    self.avail(s, now)
                        .is_some_and(|a| a.saturating_add(self.lat(s, 1, q.bucket)) <= d)
                })
                .map(|s| d - self.lat(s, 1, q.bucket) + 1)
                .max();
            first = match (first, at) {
                (Some(x), Some(y)) => Some(Time::min(x, y)),
                (x, y) => x.or(y),
            };
            if self.cfg.by_length.is_empty() {
                break;
            }
        }
        first
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
                    let bucket = self.bucket_of(&r);
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
                            bucket,
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
