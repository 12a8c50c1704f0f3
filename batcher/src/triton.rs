//! The `triton` policy: what users get today, one Triton server (dynamic
//! batcher, one model instance) per slice behind a round-robin load balancer.
//! The rules are in the crate doc.

use std::collections::VecDeque;

use crate::{Action, Armed, Error, Event, Policy, RejectReason, RequestId, SliceId, Time};

#[derive(Clone, Debug)]
pub struct TritonConfig {
    pub slices: usize,
    /// Triton's `max_batch_size`.
    pub max_batch_size: u32,
    /// Triton's `dynamic_batching.preferred_batch_size`, each in
    /// `1..=max_batch_size`, any order. Empty means `[max_batch_size]`, as
    /// Triton fills it in when the model config leaves it out.
    pub preferred: Vec<u32>,
    /// Triton's `max_queue_delay_microseconds`, in ns; 0: never wait.
    pub max_queue_delay: Time,
    /// Per slice (Triton's `default_queue_policy.max_queue_size` of each
    /// server): an arrival assigned to a slice with this many waiting is
    /// rejected.
    pub max_queue: usize,
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

pub struct Triton {
    cfg: TritonConfig,
    /// Sorted ascending, deduplicated, never empty.
    preferred: Vec<u32>,
    queues: Vec<VecDeque<Queued>>,
    slices: Vec<SliceState>,
    /// The slice the load balancer tries next.
    next: SliceId,
    queued: usize,
    armed: Armed,
}

impl Triton {
    pub fn new(cfg: TritonConfig) -> Result<Triton, Error> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if cfg.slices == 0 {
            return bad("slices must be at least 1");
        }
        if cfg.max_batch_size == 0 {
            return bad("max_batch_size must be at least 1");
        }
        if cfg
            .preferred
            .iter()
            .any(|&p| p == 0 || p > cfg.max_batch_size)
        {
            return bad("every preferred batch size must be in 1..=max_batch_size");
        }
        if cfg.max_queue == 0 {
            return bad("max_queue must be at least 1");
        }
        let mut preferred = cfg.preferred.clone();
        if preferred.is_empty() {
            preferred.push(cfg.max_batch_size);
        }
        preferred.sort_unstable();
        preferred.dedup();
        Ok(Triton {
            preferred,
            queues: vec![VecDeque::new(); cfg.slices],
            slices: vec![SliceState::Free; cfg.slices],
            next: 0,
            queued: 0,
            armed: Armed::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &TritonConfig {
        &self.cfg
    }

    /// Waiting requests per slice queue.
    pub fn slice_queue_depths(&self) -> Vec<usize> {
        self.queues.iter().map(VecDeque::len).collect()
    }

    /// The load balancer: round robin, skipping slices that are down (its
    /// health check) unless all are.
    fn assign(&mut self) -> SliceId {
        let n = self.cfg.slices;
        let s = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|&s| self.slices[s] != SliceState::Down)
            .unwrap_or(self.next);
        self.next = (s + 1) % n;
        s
    }

    /// How many of slice `s`'s queue to send now, or `Err(at)`: wait until `at`.
    fn batch_size(&self, s: SliceId, now: Time) -> Result<usize, Time> {
        let q = &self.queues[s];
        let n = q.len().min(self.cfg.max_batch_size as usize);
        let expires = q[0].arrival.saturating_add(self.cfg.max_queue_delay);
        let delay = self.cfg.max_queue_delay;
        if delay > 0 && expires <= now {
            return Ok(n);
        }
        if let Some(&p) = self.preferred.iter().rev().find(|&&p| p as usize <= n) {
            return Ok(p as usize);
        }
        if delay == 0 { Ok(n) } else { Err(expires) }
    }

    fn dispatch(&mut self, now: Time, out: &mut Vec<Action>) -> Option<Time> {
        let mut wake: Option<Time> = None;
        for s in 0..self.cfg.slices {
            if self.slices[s] != SliceState::Free || self.queues[s].is_empty() {
                continue;
            }
            match self.batch_size(s, now) {
                Ok(b) => {
                    let batch: Vec<RequestId> = self.queues[s].drain(..b).map(|q| q.id).collect();
                    self.queued -= batch.len();
                    self.slices[s] = SliceState::Busy;
                    out.push(Action::Dispatch {
                        slice: s,
                        batch,
                        bucket: None,
                    });
                }
                Err(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
            }
        }
        wake
    }
}

impl Policy for Triton {
    fn handle(&mut self, now: Time, ev: Event, out: &mut Vec<Action>) {
        match ev {
            Event::Arrival(r) => {
                let s = self.assign();
                let q = &mut self.queues[s];
                if q.len() >= self.cfg.max_queue {
                    out.push(Action::Reject {
                        id: r.id,
                        reason: RejectReason::QueueFull {
                            limit: self.cfg.max_queue,
                        },
                    });
                } else {
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
                self.armed.fired(now);
            }
        }
        let wake = self.dispatch(now, out);
        self.armed.rearm(wake, out);
    }

    fn queued(&self) -> usize {
        self.queued
    }

    fn queue_depths(&self) -> Vec<usize> {
        vec![self.queued]
    }

    fn name(&self) -> &'static str {
        "triton"
    }
}
