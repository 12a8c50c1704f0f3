//! The PREBA policy; the rules are in the crate doc.

use std::collections::VecDeque;

use crate::profile::ProfileTable;
use crate::{Action, Armed, Entry, Error, Event, Policy, RejectReason, Request, RequestId, Time};

/// The paper's audio bucket width.
pub const AUDIO_BUCKET_WIDTH_S: f32 = 2.5;

#[derive(Clone, Debug)]
pub struct PrebaConfig {
    pub slices: usize,
    /// Per bucket; len 1 for images. Bucket i covers `[i*w, (i+1)*w)` s; the
    /// last bucket takes everything longer.
    pub batch_max: Vec<u32>,
    /// ns: Time_knee / number of slices.
    pub time_queue: Time,
    /// `Some(2.5)` for audio.
    pub bucket_width_s: Option<f32>,
    /// Admitted-but-undispatched limit; beyond it arrivals are rejected.
    pub max_queue: usize,
}

impl PrebaConfig {
    /// Images (or any single-bucket model): Batch_max = Batch_knee,
    /// Time_queue = Time_knee / `slices`.
    pub fn from_profile(entry: &Entry, slices: usize, max_queue: usize) -> PrebaConfig {
        let (batch_knee, time_knee) = entry.knee();
        PrebaConfig {
            slices,
            batch_max: vec![batch_knee],
            time_queue: time_knee / slices.max(1) as u64,
            bucket_width_s: None,
            max_queue,
        }
    }

    /// Audio: one entry per bucket, in bucket order. Each bucket gets its own
    /// Batch_max; the one Time_queue comes from the smallest Time_knee of the
    /// buckets, so no bucket's requests wait longer than its own knee allows.
    pub fn from_bucket_profiles(
        entries: &[&Entry],
        bucket_width_s: f32,
        slices: usize,
        max_queue: usize,
    ) -> Result<PrebaConfig, Error> {
        if entries.is_empty() {
            return Err(Error::Config("no bucket profiles".into()));
        }
        let knees: Vec<_> = entries.iter().map(|e| e.knee()).collect();
        let time_knee = knees.iter().map(|k| k.1).min().unwrap_or(0);
        Ok(PrebaConfig {
            slices,
            batch_max: knees.iter().map(|k| k.0).collect(),
            time_queue: time_knee / slices.max(1) as u64,
            bucket_width_s: Some(bucket_width_s),
            max_queue,
        })
    }

    /// Looks `model` up on `slice` in `table`: bucketed entries (buckets 0..n,
    /// contiguous) make an audio config with [`AUDIO_BUCKET_WIDTH_S`], a single
    /// unbucketed entry an image config.
    pub fn from_table(
        table: &ProfileTable,
        model: &str,
        slice: &str,
        slices: usize,
        max_queue: usize,
    ) -> Result<PrebaConfig, Error> {
        if let Some(e) = table.find(model, slice, None) {
            return Ok(PrebaConfig::from_profile(e, slices, max_queue));
        }
        let mut buckets = Vec::new();
        while let Some(e) = table.find(model, slice, Some(buckets.len() as u32)) {
            buckets.push(e);
        }
        let stray = table
            .entries()
            .iter()
            .any(|e| e.model() == model && e.slice() == slice && e.bucket().is_some());
        if buckets.is_empty() {
            let problem = if stray {
                "bucketed entries must start at bucket 0".to_string()
            } else {
                return Err(Error::NoProfile {
                    model: model.into(),
                    slice: slice.into(),
                });
            };
            return Err(Error::Config(format!("{model} on {slice}: {problem}")));
        }
        let n = table
            .entries()
            .iter()
            .filter(|e| e.model() == model && e.slice() == slice)
            .count();
        if n != buckets.len() {
            return Err(Error::Config(format!(
                "{model} on {slice}: bucket indices are not contiguous from 0"
            )));
        }
        PrebaConfig::from_bucket_profiles(&buckets, AUDIO_BUCKET_WIDTH_S, slices, max_queue)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SliceState {
    Free,
    Busy,
    Down,
}

#[derive(Clone, Debug)]
struct Queued {
    id: RequestId,
    arrival: Time,
}

pub struct Preba {
    cfg: PrebaConfig,
    buckets: Vec<VecDeque<Queued>>,
    slices: Vec<SliceState>,
    queued: usize,
    /// The `at` of the last ArmTimer emitted while something was queued.
    armed: Armed,
}

impl Preba {
    pub fn new(cfg: PrebaConfig) -> Result<Preba, Error> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if cfg.slices == 0 {
            return bad("slices must be at least 1");
        }
        if cfg.batch_max.is_empty() {
            return bad("batch_max needs one entry per bucket");
        }
        if cfg.batch_max.contains(&0) {
            return bad("every batch_max must be at least 1");
        }
        match cfg.bucket_width_s {
            None if cfg.batch_max.len() != 1 => {
                return bad("several batch_max values need bucket_width_s");
            }
            Some(w) if !(w.is_finite() && w > 0.0) => {
                return bad("bucket_width_s must be a positive number");
            }
            _ => {}
        }
        if cfg.max_queue == 0 {
            return bad("max_queue must be at least 1");
        }
        Ok(Preba {
            buckets: vec![VecDeque::new(); cfg.batch_max.len()],
            slices: vec![SliceState::Free; cfg.slices],
            queued: 0,
            armed: Armed::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &PrebaConfig {
        &self.cfg
    }

    fn bucket_of(&self, r: &Request) -> usize {
        let (Some(w), Some(d)) = (self.cfg.bucket_width_s, r.duration_s) else {
            return 0;
        };
        let last = self.buckets.len() - 1;
        if !(d.is_finite() && d > 0.0) {
            return 0;
        }
        // `as` saturates, so absurd durations land in the last bucket.
        ((d / w).floor() as usize).min(last)
    }

    fn deadline(&self, q: &Queued) -> Time {
        q.arrival.saturating_add(self.cfg.time_queue)
    }

    fn due_bucket(&self, now: Time) -> Option<usize> {
        self.buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let head = b.front()?;
                let full = b.len() >= self.cfg.batch_max[i] as usize;
                (full || self.deadline(head) <= now).then_some((head.arrival, i))
            })
            .min()
            .map(|(_, i)| i)
    }

    /// Removes the batch for due bucket `i`; returns it with the bucket of its
    /// longest input.
    fn take_batch(&mut self, i: usize) -> (Vec<RequestId>, usize) {
        let cap = self.cfg.batch_max[i] as usize;
        let own = self.buckets[i].len().min(cap);
        let mut batch: Vec<RequestId> = self.buckets[i].drain(..own).map(|q| q.id).collect();
        let mut longest = i;
        if batch.len() < cap {
            let n = self.buckets.len();
            let order = (1..n).flat_map(|d| [i.checked_sub(d), Some(i + d).filter(|&j| j < n)]);
            for j in order.flatten() {
                let cap = self.cfg.batch_max[longest.max(j)] as usize;
                let take = cap.saturating_sub(batch.len()).min(self.buckets[j].len());
                if take == 0 {
                    continue;
                }
                batch.extend(self.buckets[j].drain(..take).map(|q| q.id));
                longest = longest.max(j);
            }
        }
        self.queued -= batch.len();
        (batch, longest)
    }

    fn dispatch(&mut self, now: Time, out: &mut Vec<Action>) {
        loop {
            let Some(slice) = self.slices.iter().position(|s| *s == SliceState::Free) else {
                return;
            };
            let Some(i) = self.due_bucket(now) else {
                return;
            };
            let (batch, longest) = self.take_batch(i);
            self.slices[slice] = SliceState::Busy;
            out.push(Action::Dispatch {
                slice,
                batch,
                bucket: self.cfg.bucket_width_s.map(|_| longest),
            });
        }
    }

    fn rearm(&mut self, out: &mut Vec<Action>) {
        let earliest = self
            .buckets
            .iter()
            .filter_map(|b| b.front())
            .map(|q| self.deadline(q))
            .min();
        // A stale timer may still fire; a Timer with nothing due is harmless.
        self.armed.rearm(earliest, out);
    }
}

impl Policy for Preba {
    fn handle(&mut self, now: Time, ev: Event, out: &mut Vec<Action>) {
        match ev {
            Event::Arrival(r) => {
                if self.queued >= self.cfg.max_queue {
                    out.push(Action::Reject {
                        id: r.id,
                        reason: RejectReason::QueueFull {
                            limit: self.cfg.max_queue,
                        },
                    });
                } else {
                    let b = self.bucket_of(&r);
                    let q = &mut self.buckets[b];
                    let pos = q.partition_point(|x| x.arrival <= r.arrival);
                    q.insert(
                        pos,
                        Queued {
                            id: r.id,
                            arrival: r.arrival,
                        },
                    );
                    self.queued += 1;
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
                // Fired before the armed time: the driver's timer is spent but
                // the deadline is still ahead, so it must be armed again.
                self.armed.fired(now);
            }
        }
        self.dispatch(now, out);
        self.rearm(out);
    }

    fn queued(&self) -> usize {
        self.queued
    }

    fn queue_depths(&self) -> Vec<usize> {
        self.buckets.iter().map(VecDeque::len).collect()
    }

    fn name(&self) -> &'static str {
        "preba"
    }
}
