//! preba-batcher: the batching policy of the preba inference server as a pure
//! state machine, and the profile table format it is configured from.
//!
//! Owns: the batching policies behind the [`Policy`] trait (PREBA's rules,
//! [`Preba`]; Triton's dynamic batcher per slice, [`Triton`]; deadline-aware
//! batching, [`Deadline`]), each with its own config type, the profile table (`preba-profile-1` TOML, [`profile`]) and the
//! shipped default A100 MIG table ([`ProfileTable::builtin`]).
//!
//! Must not: do I/O, spawn threads, or read a clock. Time comes in with every
//! event (`now`, nanoseconds on whatever clock the caller uses), so the same
//! code drives the real-time server and a discrete-event simulator in virtual
//! time, and every decision is reproducible from the event sequence alone.
//!
//! # The PREBA rules (arXiv 2411.19114, docs/background.md section 1)
//!
//! - Every request lands in one bucket: images all in bucket 0; audio in bucket
//!   `floor(duration_s / bucket_width_s)`, the last bucket taking everything
//!   longer (and requests without a valid duration going to bucket 0).
//! - Within a bucket, requests are ordered by `arrival` (ties: admission order);
//!   the front is the bucket's oldest request and its deadline is
//!   `arrival + time_queue`.
//! - A bucket is *due* when it holds at least its `Batch_max` requests (full) or
//!   its oldest request's deadline is `<= now` (overdue).
//! - After every event, while a slice is free and some bucket is due, one batch
//!   goes to the lowest-numbered free slice. Among due buckets, the one whose
//!   oldest request is oldest goes first (ties: lower bucket index). So a slice
//!   that comes free while requests are overdue gets them at once, and an
//!   arrival while all slices are busy just waits in its bucket.
//! - A full bucket dispatches its first `Batch_max` requests. An under-full
//!   bucket (due by timeout) takes all of its requests and then borrows, oldest
//!   first, from the other buckets in order of distance: `i-1, i+1, i-2, i+2,
//!   ...` (the shorter neighbour first at equal distance, since borrowing
//!   shorter inputs never raises the batch's padded length). A merged batch
//!   never exceeds the `Batch_max` of its longest input's bucket: borrowing from
//!   bucket `j` stops at `batch_max[max(longest, j)]`, and a bucket whose cap the
//!   batch already meets is skipped.
//! - A slice that got a batch is busy until [`Event::SliceFree`]; a slice that
//!   reported [`Event::SliceDown`] gets nothing until `SliceFree`. All slices
//!   start free.
//! - Admission: when `max_queue` requests are admitted and not yet dispatched,
//!   further arrivals are rejected with [`RejectReason::QueueFull`].
//! - Timer: after every event, if anything is queued and the earliest deadline
//!   differs from the last [`Action::ArmTimer`], a new `ArmTimer` at exactly that
//!   deadline is emitted (it may lie in the past when every slice is busy: fire
//!   it at once, it is harmless). A `Timer` event that arrives before the armed
//!   time (early or spurious) re-emits the same `ArmTimer`, so a driver whose
//!   clock woke it a little early never loses its wake-up.
//!
//! # The `triton` rules ([`Triton`], [`TritonConfig`])
//!
//! What users get today: one Triton server per slice (one model instance,
//! dynamic batcher) behind a round-robin load balancer; not MIG-aware. Modeled
//! on Triton core's `DynamicBatchScheduler::GetDynamicBatch` and its docs:
//!
//! - Each arrival goes, at arrival, to the next slice in round-robin order,
//!   skipping slices that are down (the balancer's health check) unless all
//!   are. Each slice has its own queue (by `arrival`, ties admission order);
//!   requests never move between queues, so a request queued on a busy slice
//!   waits even while another slice is free.
//! - `preferred` empty means `[max_batch_size]` (Triton's config default).
//! - After every event, each free slice with a non-empty queue, `n = min(len,
//!   max_batch_size)`: if `max_queue_delay > 0` and its oldest request has
//!   waited `>= max_queue_delay`, it sends `n`; else if some preferred size is
//!   `<= n`, it sends the largest such at once (Triton sends any preferred size
//!   it can form without waiting, not only the largest); else with
//!   `max_queue_delay == 0` it sends `n`; else it waits for the oldest's delay.
//! - `max_queue` is per slice (each server's `max_queue_size`): an arrival
//!   whose slice already holds that many waiting is rejected (`QueueFull`).
//! - `ArmTimer` at the earliest delay expiry among free, waiting slices (same
//!   one-timer protocol as PREBA). Not modeled: a payload growing after it was
//!   formed (here a free slice starts its batch at once), priorities, queue
//!   timeouts, ragged/shape checks, `preserve_ordering`.
//!
//! # The `deadline` rules ([`Deadline`], [`DeadlineConfig`])
//!
//! Beyond the paper, ELSA-like. Each slice has a latency model
//! `lat_s(b)` ([`SliceModel`], e.g. the p50 curve of its profile entry), so
//! mixed slice sizes work.
//!
//! - A request's deadline is `Request::deadline`, else `arrival + default_sla`.
//!   The queue is earliest-deadline-first (ties: arrival, admission order).
//! - A slice that is up can start at `a_s`: now if free; if busy, its
//!   predicted finish `dispatch time + lat_s(b)` of the batch it runs (now if
//!   that has passed); down slices are out.
//! - Hopeless: after every event (and again after each dispatch), every queued
//!   request whose deadline is before `min_s(a_s + lat_s(1))` (alone, on the
//!   earliest-finishing slice) is rejected with `DeadlineMiss { deadline,
//!   predicted }`, arrivals included (that is the early reject). With no slice
//!   up nothing is rejected: requests wait.
//! - Planning, from the head of the queue, over the slices up: with `d` the
//!   head's deadline and `rest` the requests from the head on, each slice's
//!   `cap_s` is the largest `k <= max_batch` with `a_s + lat_s(j) <= d` for
//!   all `j <= k`. Among slices with `cap_s >= 1`, the one that would finish
//!   `min(rest, max_batch)` earliest (`a_s + lat_s(..)`; ties: a free slice,
//!   then the lower index) gets the batch of the next `min(rest, cap_s)`.
//!   If it is busy, those requests are reserved for it and planning goes on
//!   with the next request and the other slices (so a free slice can still
//!   take later requests). If it is free, the batch is sent now when it is
//!   full (`rest >= cap_s`: adding one more request would break `d` or
//!   `max_batch`) or when `now >= d - lat_s(rest)` (waiting longer would make
//!   the head late); otherwise it waits until that latest start.
//! - So every dispatched request is predicted to finish by its deadline:
//!   `now + lat_s(batch) <= d <=` every deadline in the batch.
//! - `ArmTimer` at the earliest of that latest start and the moment the head
//!   becomes hopeless (`max_s(d - lat_s(1)) + 1` over slices that can still
//!   make it), so rejections come before the deadline, not after it.
//! - Audio with `by_length` (per slice, one model per 2.5 s length bucket,
//!   the last taking everything longer): a request's bucket is its length's
//!   (images and lengths that are not finite and positive: 0), and every
//!   `lat_s(k)` above is taken at the bucket the batch pads to (the largest
//!   bucket among its requests), hopelessness per request at its own bucket.
//!   `Dispatch.bucket` is then that padded-to bucket.
//! - `max_queue` admitted and waiting: `QueueFull`. Without `by_length`,
//!   `Dispatch.bucket` is `None` (`triton` never buckets).
//!
//! Events naming a slice that does not exist are ignored; request ids are the
//! caller's and must be unique among requests in flight.
#![forbid(unsafe_code)]

mod deadline;
mod preba;
pub mod profile;
mod triton;

/// The one timer a policy holds, as the driver sees it: `ArmTimer` goes
/// out only when the wake-up time changes, and a `Timer` that fires early
/// (before the armed time) forgets it so the same time is armed again.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Armed(Option<Time>);

impl Armed {
    /// After a `Timer` event at `now`.
    pub(crate) fn fired(&mut self, now: Time) {
        if self.0.is_some_and(|at| at > now) {
            self.0 = None;
        }
    }

    /// Arms `wake` (or disarms) and emits `ArmTimer` when it changed.
    pub(crate) fn rearm(&mut self, wake: Option<Time>, out: &mut Vec<Action>) {
        match wake {
            Some(at) if self.0 != Some(at) => {
                self.0 = Some(at);
                out.push(Action::ArmTimer { at });
            }
            Some(_) => {}
            None => self.0 = None,
        }
    }
}

pub use deadline::{Deadline, DeadlineConfig, SliceModel};
pub use preba::{AUDIO_BUCKET_WIDTH_S, Preba, PrebaConfig};
pub use profile::{Entry, Point, ProfileTable};
pub use triton::{Triton, TritonConfig};

/// Nanoseconds on the injected clock.
pub type Time = u64;

/// The caller's name for a request; echoed back in [`Action`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Index into the slices serving this model (`0..` the config's slice count).
pub type SliceId = usize;

/// A preprocessed request, ready to batch.
#[derive(Clone, Debug)]
pub struct Request {
    pub id: RequestId,
    /// When the request entered the batching queue; its deadline is
    /// `arrival + time_queue`.
    pub arrival: Time,
    /// Audio length in seconds; `None` for images.
    pub duration_s: Option<f32>,
    /// Absolute time by which the request should be answered (the request's
    /// `timeout`); only the `deadline` policy reads it, and uses
    /// `arrival + default_sla` when it is `None`.
    pub deadline: Option<Time>,
}

#[derive(Clone, Debug)]
pub enum Event {
    /// A preprocessed request is ready to batch.
    Arrival(Request),
    /// The slice finished its batch, or came back after a restart.
    SliceFree { slice: SliceId },
    /// The slice's worker died: dispatch nothing to it until `SliceFree`.
    SliceDown { slice: SliceId },
    /// The armed timer fired (spurious calls are harmless).
    Timer,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Run `batch` (in this order) on `slice`. `bucket` is the length bucket of
    /// the batch's longest input for audio (what to pad to), `None` for images.
    Dispatch {
        slice: SliceId,
        batch: Vec<RequestId>,
        bucket: Option<usize>,
    },
    /// One timer: a new `ArmTimer` replaces the previous one.
    ArmTimer { at: Time },
    /// The request was not admitted and will never be dispatched.
    Reject { id: RequestId, reason: RejectReason },
}

#[derive(Clone, Debug, PartialEq)]
pub enum RejectReason {
    /// `limit` requests were already admitted and waiting.
    QueueFull { limit: usize },
    /// `deadline` policy: even alone, on the slice that would finish it
    /// earliest, the request would finish at `predicted`, after `deadline`.
    DeadlineMiss { deadline: Time, predicted: Time },
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::QueueFull { limit } => {
                write!(f, "batching queue full ({limit} requests waiting)")
            }
            RejectReason::DeadlineMiss {
                deadline,
                predicted,
            } => {
                let late = predicted.saturating_sub(*deadline) as f64 / 1e6;
                write!(
                    f,
                    "deadline cannot be met: even alone on the earliest-finishing slice it \
                     would finish at {:.3} ms, {late:.3} ms after its deadline ({:.3} ms)",
                    *predicted as f64 / 1e6,
                    *deadline as f64 / 1e6
                )
            }
        }
    }
}

/// A batching policy: events in, actions out.
pub trait Policy: Send {
    /// Apply `ev` at time `now` (non-decreasing across calls) and append the
    /// resulting actions to `out`.
    fn handle(&mut self, now: Time, ev: Event, out: &mut Vec<Action>);
    /// Requests admitted and not yet dispatched.
    fn queued(&self) -> usize;
    /// Queued requests per bucket (length 1 for images, and for the
    /// `triton` and `deadline` policies, which do not bucket).
    fn queue_depths(&self) -> Vec<usize>;
    fn name(&self) -> &'static str;
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("batcher config: {0}")]
    Config(String),
    #[error("profile table: {0}")]
    Toml(String),
    #[error("profile table: entry {index} ({model} on {slice}): field `{field}`: {problem}")]
    Entry {
        index: usize,
        model: String,
        slice: String,
        field: &'static str,
        problem: String,
    },
    #[error("profile table: no entry for model {model} on slice {slice}")]
    NoProfile { model: String, slice: String },
}
