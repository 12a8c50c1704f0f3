//! The discrete-event engine: Poisson arrivals -> preprocessing (CPU cores or
//! card CUs as multi-server FIFO queues) -> the batcher's own `Policy` in
//! virtual time -> slices (lat(b) from the profile table) -> done.
//!
//! Events live in a binary heap keyed by (virtual ns, insertion sequence), so
//! events at the same instant run in the order they were scheduled and a run
//! is a pure function of the scenario and the seed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use preba_batcher::{
    AUDIO_BUCKET_WIDTH_S, Action, Deadline, DeadlineConfig, Entry, Event, Policy, Preba,
    PrebaConfig, Request, RequestId, SliceModel, Time, Triton, TritonConfig,
};
use serde::Serialize;

use crate::Error;
use crate::card;
use crate::rng::Rng;
use crate::scenario::{Preprocess, Scenario, Service, Workload};

/// One request of a trace: when it arrives and its size (source pixels for
/// images, seconds for audio).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arrival {
    pub at: Time,
    pub size: f64,
}

/// A batch as it ran, for traces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BatchRecord {
    pub slice: usize,
    pub start: Time,
    pub end: Time,
    /// Request indices into the trace, in dispatch order.
    pub requests: Vec<u64>,
    pub bucket: Option<usize>,
}

/// Average power over the measurement window, watts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PowerW {
    pub cpu: f64,
    pub gpu: f64,
    pub card: f64,
    pub total: f64,
}

/// What one offered rate gave. Times in ms. Measured requests are those after
/// the warm-up; the window runs from the first measured arrival to the last
/// arrival, and throughput, utilisations and power are over that window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RateResult {
    /// Configured rate, requests/s.
    pub offered: f64,
    /// Arrivals in the window / window.
    pub offered_measured: f64,
    /// Completions in the window / window.
    pub throughput: f64,
    /// Requests simulated (warm-up included).
    pub requests: usize,
    /// Measured requests that completed.
    pub completed: usize,
    /// Measured requests the policy rejected.
    pub rejected: usize,
    /// End-to-end latency (arrival to batch done) of measured requests.
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Batching queue wait (preprocessed to dispatched).
    pub wait_mean_ms: f64,
    pub wait_p50_ms: f64,
    pub wait_p95_ms: f64,
    pub wait_p99_ms: f64,
    /// Preprocessing queue wait (arrival to first service).
    pub pre_wait_mean_ms: f64,
    /// With `policy.sla_ms`: share of measured requests answered within the
    /// SLA of their arrival (rejected ones count as missed).
    pub sla_met: Option<f64>,
    /// Mean requests per batch dispatched in the window.
    pub mean_batch: f64,
    pub slice_util: f64,
    pub cpu_util: f64,
    /// `None` without a card.
    pub card_util: Option<f64>,
    pub power_w: PowerW,
    /// Over the window, joules.
    pub energy_j: f64,
    /// Energy / completions in the window.
    pub j_per_request: f64,
    /// Wall-clock seconds this rate took to simulate.
    pub wall_s: f64,
}

/// A trace's result and its batches.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub result: RateResult,
    pub batches: Vec<BatchRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive(u32),
    StageDone { stage: u8, req: u32 },
    Ready(u32),
    SliceDone(u32),
    Timer(u64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StageKind {
    Cpu,
    ImageCu,
    MelCu,
    NormCu,
}

struct Stage {
    kind: StageKind,
    servers: usize,
    busy: usize,
    queue: VecDeque<u32>,
    busy_ns: f64,
}

struct SliceRt {
    group: usize,
    batch: Vec<u32>,
    busy: bool,
    busy_ns: f64,
}

const UNSET: Time = Time::MAX;
const REJECTED: Time = Time::MAX - 1;

/// Profile entries per slice group, per bucket (images: one).
fn entries(sc: &Scenario) -> Result<Vec<Vec<Entry>>, Error> {
    let model = sc.workload.model();
    let path = sc
        .profile_path
        .as_ref()
        .map_or("the builtin table".to_string(), |p| p.display().to_string());
    sc.slices
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let t = &sc.table;
            let found: Vec<Entry> = if let Some(e) = t.find(model, &g.slice_type, None) {
                vec![e.clone()]
            } else {
                (0u32..)
                    .map_while(|b| t.find(model, &g.slice_type, Some(b)).cloned())
                    .collect()
            };
            if found.is_empty() {
                return Err(Error::Scenario {
                    file: sc.origin.clone(),
                    field: format!("slices.group[{i}].type"),
                    problem: format!(
                        "no profile for model {model} on slice {} in {path}",
                        g.slice_type
                    ),
                });
            }
            Ok(found)
        })
        .collect()
}

/// The policy under test, built from the profile table and the scenario's
/// overrides: the batcher crate's own code.
pub fn build_policy(sc: &Scenario) -> Result<Box<dyn Policy>, Error> {
    let p = &sc.policy;
    let bad = |field: &str, problem: String| Error::Scenario {
        file: sc.origin.clone(),
        field: field.to_string(),
        problem,
    };
    let slices = sc.slice_count();
    let first = &sc.slices[0].slice_type;
    match p.kind.as_str() {
        "preba" => {
            if let Some(g) = sc.slices.iter().find(|g| &g.slice_type != first) {
                return Err(bad(
                    "policy.kind",
                    format!(
                        "preba takes one slice type ({first} and {} given)",
                        g.slice_type
                    ),
                ));
            }
            let mut cfg =
                PrebaConfig::from_table(&sc.table, sc.workload.model(), first, slices, p.max_queue)
                    .map_err(|e| bad("slices.group[0].type", e.to_string()))?;
            if let Some(b) = &p.batch_max {
                if b.len() != cfg.batch_max.len() {
                    return Err(bad(
                        "policy.batch_max",
                        format!("{} values for {} buckets", b.len(), cfg.batch_max.len()),
                    ));
                }
                cfg.batch_max = b.clone();
            }
            if let Some(t) = p.time_queue_ms {
                cfg.time_queue = (t * 1e6).round() as Time;
            }
            Ok(Box::new(
                Preba::new(cfg).map_err(|e| bad("policy", e.to_string()))?,
            ))
        }
        "triton" => {
            // Triton's max_batch_size defaults to the knee of the first slice
            // type: what a user would put in config.pbtxt after profiling.
            let es = entries(sc)?;
            let knee = es[0][0].knee().0;
            let cfg = TritonConfig {
                slices,
                max_batch_size: p.max_batch_size.unwrap_or(knee),
                preferred: p.preferred_batch_size.clone().unwrap_or_default(),
                max_queue_delay: p
                    .max_queue_delay_us
                    .map_or(0, |us| (us * 1e3).round() as Time),
                max_queue: p.max_queue,
            };
            Ok(Box::new(
                Triton::new(cfg).map_err(|e| bad("policy", e.to_string()))?,
            ))
        }
        "deadline" => {
            let es = entries(sc)?;
            let default_sla = p.sla_ms.ok_or_else(|| {
                bad(
                    "policy.sla_ms",
                    "missing (the deadline policy needs it)".into(),
                )
            })?;
            // Audio: each slice's latency model per length bucket (a batch is
            // predicted at the length it pads to); `slices` (the bucket of
            // the mean utterance) is then only the fallback.
            let mean_bucket = match &sc.workload {
                Workload::Audio { duration, .. } => {
                    (mean_of(duration) / f64::from(AUDIO_BUCKET_WIDTH_S)) as usize
                }
                Workload::Image { .. } => 0,
            };
            let models: Vec<SliceModel> = sc
                .slices
                .iter()
                .zip(&es)
                .flat_map(|(g, e)| {
                    let m = SliceModel::from_entry(&e[mean_bucket.min(e.len() - 1)]);
                    std::iter::repeat_n(m, g.count)
                })
                .collect();
            let largest = es
                .iter()
                .flat_map(|e| e.iter().flat_map(|x| x.points().last().map(|p| p.batch)))
                .max()
                .unwrap_or(1);
            let by_length: Vec<Vec<SliceModel>> = if sc.workload.is_audio() {
                sc.slices
                    .iter()
                    .zip(&es)
                    .flat_map(|(g, e)| {
                        let m: Vec<SliceModel> = e.iter().map(SliceModel::from_entry).collect();
                        std::iter::repeat_n(m, g.count)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let cfg = DeadlineConfig {
                slices: models,
                by_length,
                max_batch: p.max_batch_size.unwrap_or(largest),
                default_sla: (default_sla * 1e6).round() as Time,
                max_queue: p.max_queue,
            };
            Ok(Box::new(
                Deadline::new(cfg).map_err(|e| bad("policy", e.to_string()))?,
            ))
        }
        other => Err(bad(
            "policy.kind",
            format!("{other:?}: expected \"preba\", \"triton\" or \"deadline\""),
        )),
    }
}

/// Mean of a size distribution (by sampling for truncated ones).
fn mean_of(d: &crate::scenario::Dist) -> f64 {
    let mut r = Rng::new(0, 0);
    (0..10_000).map(|_| d.sample(&mut r)).sum::<f64>() / 10_000.0
}

/// Checks that the policy builds and every slice group has a profile.
pub fn check(sc: &Scenario) -> Result<(), Error> {
    entries(sc)?;
    build_policy(sc)?;
    Ok(())
}

/// The batcher's request for trace index `i`, ready at `now`; its deadline
/// (with `policy.sla_ms`) counts from its arrival at the server, `arrived`.
fn request(sc: &Scenario, i: u32, now: Time, arrived: Time, size: f64) -> Request {
    Request {
        id: RequestId(u64::from(i)),
        arrival: now,
        duration_s: sc.workload.is_audio().then_some(size as f32),
        deadline: sc
            .policy
            .sla_ms
            .map(|ms| arrived + (ms * 1e6).round() as Time),
    }
}

/// Seed of rate `rate`: independent of where the rate sits in the sweep.
fn rate_seed(seed: u64, rate: f64) -> u64 {
    let mut x = seed ^ rate.to_bits().rotate_left(17);
    crate::rng::splitmix64(&mut x)
}

/// `sc.requests` Poisson arrivals at `rate` requests/s with sizes from the
/// workload's distribution.
pub fn generate(sc: &Scenario, rate: f64) -> Vec<Arrival> {
    let seed = rate_seed(sc.seed, rate);
    let mut gaps = Rng::new(seed, 1);
    let mut sizes = Rng::new(seed, 2);
    let dist = match &sc.workload {
        Workload::Image { pixels, .. } => pixels,
        Workload::Audio { duration, .. } => duration,
    };
    let mean_gap = 1e9 / rate;
    let mut t = 0.0f64;
    (0..sc.requests)
        .map(|_| {
            t += gaps.exp(mean_gap);
            Arrival {
                at: t.round() as Time,
                size: dist.sample(&mut sizes),
            }
        })
        .collect()
}

/// Simulates one offered rate of the scenario.
pub fn simulate_rate(sc: &Scenario, rate: f64) -> Result<RateResult, Error> {
    let start = Instant::now();
    let arrivals = generate(sc, rate);
    let mut out = Sim::new(sc, &arrivals, false, rate_seed(sc.seed, rate))?.run()?;
    out.result.offered = rate;
    out.result.wall_s = start.elapsed().as_secs_f64();
    Ok(out.result)
}

/// Every rate of the scenario, in order.
pub fn run(sc: &Scenario) -> Result<Vec<RateResult>, Error> {
    sc.rates.iter().map(|&r| simulate_rate(sc, r)).collect()
}

/// Simulates the given arrivals (sorted by time) and records every batch.
/// `sc.requests`, `sc.rates` and the arrival seed are not used; `sc.warmup` is.
pub fn simulate_trace(sc: &Scenario, arrivals: &[Arrival]) -> Result<Outcome, Error> {
    let start = Instant::now();
    if arrivals.windows(2).any(|w| w[1].at < w[0].at) {
        return Err(Error::Failed(
            "trace arrivals must be sorted by time".into(),
        ));
    }
    let mut out = Sim::new(sc, arrivals, true, sc.seed)?.run()?;
    out.result.wall_s = start.elapsed().as_secs_f64();
    Ok(out)
}

struct Sim<'a> {
    sc: &'a Scenario,
    arr: &'a [Arrival],
    policy: Box<dyn Policy>,
    heap: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    seq: u64,
    stages: Vec<Stage>,
    pre_start: Vec<Time>,
    ready: Vec<Time>,
    dispatched: Vec<Time>,
    done: Vec<Time>,
    slices: Vec<SliceRt>,
    entries: Vec<Vec<Entry>>,
    svc: Rng,
    timer_gen: u64,
    out: Vec<Action>,
    batches: Option<Vec<BatchRecord>>,
    window: (Time, Time),
    window_batches: u64,
    window_batched: u64,
}

fn overlap(s: Time, e: Time, w: (Time, Time)) -> f64 {
    e.min(w.1).saturating_sub(s.max(w.0)) as f64
}

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario, arr: &'a [Arrival], record: bool, seed: u64) -> Result<Self, Error> {
        if arr.len() >= u32::MAX as usize - 1 {
            return Err(Error::Failed("at most 2^32 - 2 requests per rate".into()));
        }
        let stage = |kind, servers| Stage {
            kind,
            servers,
            busy: 0,
            queue: VecDeque::new(),
            busy_ns: 0.0,
        };
        let stages = match (&sc.preprocess, sc.workload.is_audio()) {
            (Preprocess::None, _) => vec![],
            (Preprocess::Cpu { cores, .. }, _) => vec![stage(StageKind::Cpu, *cores)],
            (Preprocess::Card { image_cus, .. }, false) => {
                vec![stage(StageKind::ImageCu, *image_cus)]
            }
            (
                Preprocess::Card {
                    audio_cus,
                    norm_cus,
                    ..
                },
                true,
            ) => vec![
                stage(StageKind::MelCu, *audio_cus),
                stage(StageKind::NormCu, *norm_cus),
            ],
        };
        let slices = sc
            .slices
            .iter()
            .enumerate()
            .flat_map(|(g, s)| std::iter::repeat_n(g, s.count))
            .map(|group| SliceRt {
                group,
                batch: Vec::new(),
                busy: false,
                busy_ns: 0.0,
            })
            .collect();
        let n = arr.len();
        let w0 = arr.get(sc.warmup).map_or(0, |a| a.at);
        let w1 = arr.last().map_or(0, |a| a.at).max(w0 + 1);
        Ok(Sim {
            sc,
            arr,
            policy: build_policy(sc)?,
            heap: BinaryHeap::new(),
            seq: 0,
            stages,
            pre_start: vec![UNSET; n],
            ready: vec![UNSET; n],
            dispatched: vec![UNSET; n],
            done: vec![UNSET; n],
            slices,
            entries: entries(sc)?,
            svc: Rng::new(seed, 3),
            timer_gen: 0,
            out: Vec::with_capacity(8),
            batches: record.then(Vec::new),
            window: (w0, w1),
            window_batches: 0,
            window_batched: 0,
        })
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    fn draw(&mut self, mean_ns: f64, service: Service) -> Time {
        match service {
            Service::Deterministic => mean_ns.round() as Time,
            Service::Exponential => self.svc.exp(mean_ns).round() as Time,
            Service::Gamma { cv } if cv > 0.0 => {
                // Shape k = 1/CV^2, scale = mean / k: mean kept, spread CV.
                let k = 1.0 / (cv * cv);
                (self.svc.gamma(k) * mean_ns / k).round() as Time
            }
            Service::Gamma { .. } => mean_ns.round() as Time,
        }
    }

    fn service_ns(&mut self, kind: StageKind, i: u32) -> Time {
        let size = self.arr[i as usize].size;
        match (&self.sc.preprocess, &self.sc.workload) {
            (
                Preprocess::Cpu {
                    per_core_rate,
                    reference,
                    service,
                    ..
                },
                _,
            ) => {
                let (r, s) = (*per_core_rate, *service);
                self.draw(size / *reference / r * 1e9, s)
            }
            (Preprocess::Card { cu_hz, jpeg, .. }, w) => {
                let cycles = match (kind, w) {
                    (
                        StageKind::ImageCu,
                        Workload::Image {
                            samples_per_px,
                            crop,
                            ..
                        },
                    ) => card::image_cycles(size, *samples_per_px, *crop, *jpeg),
                    (
                        StageKind::MelCu,
                        Workload::Audio {
                            sample_rate,
                            n_fft,
                            hop,
                            ..
                        },
                    ) => card::mel_cycles(size, *sample_rate, *n_fft, *hop),
                    (
                        StageKind::NormCu,
                        Workload::Audio {
                            sample_rate,
                            hop,
                            n_mels,
                            ..
                        },
                    ) => card::norm_cycles(size, *sample_rate, *hop, *n_mels),
                    _ => 0,
                };
                (cycles as f64 / cu_hz * 1e9).round() as Time
            }
            (Preprocess::None, _) => 0,
        }
    }

    fn enter_stage(&mut self, k: usize, i: u32, now: Time) -> Result<(), Error> {
        if k == self.stages.len() {
            if self.sc.overhead_ns > 0 {
                self.push(now + self.sc.overhead_ns, Ev::Ready(i));
                return Ok(());
            }
            return self.hand_to_batcher(i, now);
        }
        let st = &mut self.stages[k];
        if st.busy < st.servers {
            self.start(k, i, now);
        } else {
            st.queue.push_back(i);
        }
        Ok(())
    }

    fn start(&mut self, k: usize, i: u32, now: Time) {
        if k == 0 {
            self.pre_start[i as usize] = now;
        }
        let d = self.service_ns(self.stages[k].kind, i);
        let w = self.window;
        let st = &mut self.stages[k];
        st.busy += 1;
        st.busy_ns += overlap(now, now + d, w);
        self.push(
            now + d,
            Ev::StageDone {
                stage: k as u8,
                req: i,
            },
        );
    }

    fn hand_to_batcher(&mut self, i: u32, now: Time) -> Result<(), Error> {
        self.ready[i as usize] = now;
        if self.stages.is_empty() {
            self.pre_start[i as usize] = now;
        }
        let a = self.arr[i as usize];
        let r = request(self.sc, i, now, a.at, a.size);
        self.policy.handle(now, Event::Arrival(r), &mut self.out);
        self.apply(now)
    }

    fn apply(&mut self, now: Time) -> Result<(), Error> {
        let mut out = std::mem::take(&mut self.out);
        for a in out.drain(..) {
            match a {
                Action::Dispatch {
                    slice,
                    batch,
                    bucket,
                } => {
                    let Some(s) = self.slices.get(slice) else {
                        return Err(Error::Failed(format!(
                            "policy {} dispatched to slice {slice} of {}",
                            self.policy.name(),
                            self.slices.len()
                        )));
                    };
                    if s.busy || batch.is_empty() {
                        return Err(Error::Failed(format!(
                            "policy {} dispatched {} requests to busy slice {slice}",
                            self.policy.name(),
                            batch.len()
                        )));
                    }
                    let group = s.group;
                    let es = &self.entries[group];
                    let b = bucket.unwrap_or_else(|| {
                        // Policies that do not bucket: pad to the longest input.
                        if !self.sc.workload.is_audio() {
                            return 0;
                        }
                        let longest = batch
                            .iter()
                            .map(|r| self.arr[r.0 as usize].size)
                            .fold(0.0, f64::max);
                        (longest / f64::from(AUDIO_BUCKET_WIDTH_S)) as usize
                    });
                    let e = &es[b.min(es.len() - 1)];
                    let mean = e.latency_ns(batch.len() as u32) as f64;
                    let lat = self.draw(mean, self.sc.slice_latency).max(1);
                    let w = self.window;
                    if (w.0..=w.1).contains(&now) {
                        self.window_batches += 1;
                        self.window_batched += batch.len() as u64;
                    }
                    let ids: Vec<u32> = batch.iter().map(|r| r.0 as u32).collect();
                    for &r in &ids {
                        self.dispatched[r as usize] = now;
                    }
                    if let Some(b) = &mut self.batches {
                        b.push(BatchRecord {
                            slice,
                            start: now,
                            end: now + lat,
                            requests: ids.iter().map(|&r| u64::from(r)).collect(),
                            bucket,
                        });
                    }
                    let s = &mut self.slices[slice];
                    s.busy = true;
                    s.busy_ns += overlap(now, now + lat, w);
                    s.batch = ids;
                    self.push(now + lat, Ev::SliceDone(slice as u32));
                }
                Action::ArmTimer { at } => {
                    self.timer_gen += 1;
                    self.push(at.max(now), Ev::Timer(self.timer_gen));
                }
                Action::Reject { id, .. } => {
                    if let Some(d) = self.done.get_mut(id.0 as usize) {
                        *d = REJECTED;
                    }
                }
            }
        }
        self.out = out;
        Ok(())
    }

    fn run(mut self) -> Result<Outcome, Error> {
        if let Some(a) = self.arr.first() {
            self.push(a.at, Ev::Arrive(0));
        }
        while let Some(Reverse((now, _, ev))) = self.heap.pop() {
            match ev {
                Ev::Arrive(i) => {
                    if let Some(a) = self.arr.get(i as usize + 1) {
                        self.push(a.at, Ev::Arrive(i + 1));
                    }
                    self.enter_stage(0, i, now)?;
                }
                Ev::StageDone { stage, req } => {
                    let k = stage as usize;
                    self.stages[k].busy -= 1;
                    if let Some(j) = self.stages[k].queue.pop_front() {
                        self.start(k, j, now);
                    }
                    self.enter_stage(k + 1, req, now)?;
                }
                Ev::Ready(i) => self.hand_to_batcher(i, now)?,
                Ev::SliceDone(s) => {
                    let sl = &mut self.slices[s as usize];
                    sl.busy = false;
                    for &r in &sl.batch {
                        self.done[r as usize] = now;
                    }
                    sl.batch.clear();
                    self.policy
                        .handle(now, Event::SliceFree { slice: s as usize }, &mut self.out);
                    self.apply(now)?;
                }
                Ev::Timer(g) => {
                    if g == self.timer_gen {
                        self.policy.handle(now, Event::Timer, &mut self.out);
                        self.apply(now)?;
                    }
                }
            }
        }
        if let Some(i) = self.done.iter().position(|&d| d == UNSET) {
            return Err(Error::Failed(format!(
                "policy {} never dispatched request {i} ({} still queued)",
                self.policy.name(),
                self.policy.queued()
            )));
        }
        Ok(self.summarise())
    }

    fn summarise(self) -> Outcome {
        let sc = self.sc;
        let (w0, w1) = self.window;
        let win_ns = (w1 - w0) as f64;
        let win_s = win_ns / 1e9;
        let n = self.arr.len();
        let mut lat = Vec::with_capacity(n - sc.warmup);
        let mut wait = Vec::with_capacity(n - sc.warmup);
        let mut pre_wait = 0.0;
        let mut rejected = 0;
        let sla_ns = sc.policy.sla_ms.map(|ms| (ms * 1e6).round() as Time);
        let mut met = 0usize;
        for i in sc.warmup..n {
            let d = self.done[i];
            if d == REJECTED {
                rejected += 1;
                continue;
            }
            lat.push(d - self.arr[i].at);
            if sla_ns.is_some_and(|s| d - self.arr[i].at <= s) {
                met += 1;
            }
            wait.push(self.dispatched[i] - self.ready[i]);
            pre_wait += (self.pre_start[i] - self.arr[i].at) as f64;
        }
        let completed_in_window = self
            .done
            .iter()
            .filter(|&&d| d != REJECTED && (w0..=w1).contains(&d))
            .count();
        let arrived_in_window = self
            .arr
            .iter()
            .filter(|a| (w0..=w1).contains(&a.at))
            .count();
        let (mean_ms, p50, p95, p99) = stats(&mut lat);
        let (wait_mean, w50, w95, w99) = stats(&mut wait);

        let slice_busy: f64 = self.slices.iter().map(|s| s.busy_ns).sum();
        let slice_util = slice_busy / (win_ns * self.slices.len() as f64);
        let mut gpu_j = 0.0;
        for (g, grp) in sc.slices.iter().enumerate() {
            let busy: f64 = self
                .slices
                .iter()
                .filter(|s| s.group == g)
                .map(|s| s.busy_ns)
                .sum();
            gpu_j += grp.idle_w * grp.count as f64 * win_s + (grp.busy_w - grp.idle_w) * busy / 1e9;
        }
        let mut cpu_j = sc.power.cpu_idle_w * win_s;
        let mut cpu_util = 0.0;
        let mut card_j = 0.0;
        let mut card_util = None;
        let mut card_busy = 0.0;
        let mut card_cus = 0usize;
        for st in &self.stages {
            match st.kind {
                StageKind::Cpu => {
                    cpu_j += sc.power.cpu_core_busy_w * st.busy_ns / 1e9;
                    cpu_util = st.busy_ns / (win_ns * st.servers as f64);
                }
                k => {
                    let (s, d) = match k {
                        StageKind::ImageCu => card::IMAGE_CU_W,
                        StageKind::MelCu => card::AUDIO_CU_W,
                        _ => card::NORM_CU_W,
                    };
                    card_j += s * st.servers as f64 * win_s + d * st.busy_ns / 1e9;
                    card_busy += st.busy_ns;
                    card_cus += st.servers;
                }
            }
        }
        if let Preprocess::Card { .. } = sc.preprocess {
            card_j += (card::BOARD_STATIC_W + card::CORE_W) * win_s;
            card_util = Some(card_busy / (win_ns * card_cus.max(1) as f64));
        }
        let energy_j = cpu_j + gpu_j + card_j;
        let result = RateResult {
            offered: arrived_in_window as f64 / win_s,
            offered_measured: arrived_in_window as f64 / win_s,
            throughput: completed_in_window as f64 / win_s,
            requests: n,
            completed: lat.len(),
            rejected,
            mean_ms,
            p50_ms: p50,
            p95_ms: p95,
            p99_ms: p99,
            wait_mean_ms: wait_mean,
            wait_p50_ms: w50,
            wait_p95_ms: w95,
            wait_p99_ms: w99,
            sla_met: sla_ns.map(|_| met as f64 / (n - sc.warmup) as f64),
            pre_wait_mean_ms: pre_wait / lat.len().max(1) as f64 / 1e6,
            mean_batch: self.window_batched as f64 / self.window_batches.max(1) as f64,
            slice_util,
            cpu_util,
            card_util,
            power_w: PowerW {
                cpu: cpu_j / win_s,
                gpu: gpu_j / win_s,
                card: card_j / win_s,
                total: energy_j / win_s,
            },
            energy_j,
            j_per_request: energy_j / completed_in_window.max(1) as f64,
            wall_s: 0.0,
        };
        Outcome {
            result,
            batches: self.batches.unwrap_or_default(),
        }
    }
}

/// (mean, p50, p95, p99) in ms; percentiles by nearest rank. Sorts `v`.
fn stats(v: &mut [Time]) -> (f64, f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0, 0.0);
    }
    v.sort_unstable();
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let pct = |p: f64| {
        let k = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[k] as f64 / 1e6
    };
    (mean / 1e6, pct(0.50), pct(0.95), pct(0.99))
}
