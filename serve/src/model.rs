//! One served model at run time: its batching policy driven in real time,
//! and one supervisor thread per slice that owns the worker process, runs
//! the batches it is given and restarts the worker when it dies.
//!
//! The policy (`preba_batcher::Policy`) sits behind one lock and is run in
//! place by whoever has an event: the HTTP task that submits an arrival, the
//! supervisor whose slice became free or died, and a timer thread that sleeps
//! until the time the policy armed. Its actions go out as batches to slice
//! threads or as rejections. The same policy code runs in virtual time in
//! the simulator.
#![forbid(unsafe_code)]

use crate::arena::{Arena, SlotLease, SlotPool, runs};
use crate::metrics::{ModelMetrics, SliceMetrics};
use crate::repo::{Kind, ModelConfig};
use preba_batcher::{Action, Event, Policy, RejectReason, Request, RequestId, Time};
use preba_slice::wire::{BatchRequest, InputBinding, Source};
use preba_slice::{Dtype, ModelMeta, SliceError, SliceSpec, WorkerClient, WorkerSpec};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long one batch may run on a worker before it counts as hung.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a worker may take to load its model.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What a request carries into the batcher.
pub enum Item {
    /// A preprocessed tensor in its arena slot.
    Slot(Arc<SlotLease>),
    /// Log-Mel features `[n_mels, frames]` (audio batches are padded, so
    /// they are copied into the slice's input region at dispatch anyway).
    Features { frames: usize, data: Vec<f32> },
}

/// One output row of one request.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub dtype: Dtype,
    /// Without the batch dimension.
    pub shape: Vec<i64>,
    pub raw: Vec<u8>,
}

#[derive(Debug)]
pub struct Answer {
    pub rows: Vec<Row>,
    pub modeled: bool,
}

/// A request's failure: HTTP status and message.
pub type Failure = (u16, String);

struct Waiting {
    item: Item,
    tx: oneshot::Sender<Result<Answer, Failure>>,
    enq: Instant,
    /// Audio length in seconds (the batch's length bucket follows its longest).
    duration_s: Option<f32>,
}

struct BatchJob {
    items: Vec<Waiting>,
}

/// The running model.
pub struct Model {
    pub cfg: ModelConfig,
    pub meta: ModelMeta,
    /// The ONNX input the batch goes to (preprocessed tensor / features).
    pub tensor_input: preba_slice::TensorMeta,
    /// Per-item tensor shape fed to the model (without batch), for images.
    pub item_shape: Vec<i64>,
    pub item_dtype: Dtype,
    pub slots: Option<Arc<SlotPool>>,
    pub metrics: Arc<ModelMetrics>,
    pub slice_specs: Vec<SliceSpec>,
    pub batch_max: Vec<u32>,
    pub time_queue: Duration,
    pub max_queue: usize,
    /// Elements admitted and not yet answered.
    pub inflight: AtomicUsize,
    next_id: AtomicU64,
    batcher: Arc<Batcher>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stopping: Arc<AtomicBool>,
}

/// How the server starts a model.
pub struct Launch {
    pub exe: PathBuf,
    pub onnxruntime: Option<PathBuf>,
    pub arena: Arc<Arena>,
    pub policy: Box<dyn Policy>,
    pub batch_max: Vec<u32>,
    pub time_queue: Duration,
    pub max_queue: usize,
    pub slices: Vec<SliceSpec>,
    /// Per slice: modeled latency points (batch, ns).
    pub modeled_latency: Vec<Vec<(u32, u64)>>,
    /// Modeled audio slices: per slice, the same per length bucket.
    pub modeled_bucket_latency: Vec<Vec<Vec<(u32, u64)>>>,
}

fn dtype_of(d: preba_protocol::profile::Dtype) -> Dtype {
    use preba_protocol::profile::Dtype as P;
    match d {
        P::U8 => Dtype::U8,
        P::F16 => Dtype::F16,
        P::Bf16 => Dtype::BF16,
        P::F32 => Dtype::F32,
    }
}

impl Model {
    /// Spawns one worker per slice (the first reports the model's metadata),
    /// checks the model against its preprocessing, reserves arena regions and
    /// starts the timer and slice threads.
    pub fn start(cfg: ModelConfig, l: Launch) -> Result<Arc<Model>, String> {
        let n = l.slices.len();
        if n == 0 {
            return Err(format!("model {}: no slices", cfg.name));
        }
        let arena = l.arena.clone();
        let bmax = *l.batch_max.iter().max().unwrap_or(&1) as usize;
        // Results: generous per slice; the worker refuses a batch whose
        // outputs do not fit (a clear per-batch error).
        let out_cap = 16usize << 20;
        let mut clients = Vec::with_capacity(n);
        let mut specs = Vec::with_capacity(n);
        let mut meta: Option<ModelMeta> = None;
        for (i, s) in l.slices.iter().enumerate() {
            let out_off = arena.reserve(out_cap)?;
            let in_off = if cfg.kind == Kind::Audio {
                Some(arena.reserve(AUDIO_INPUT_BYTES)?)
            } else {
                None
            };
            let spec = WorkerSpec {
                name: format!("{}/{}{}", cfg.name, s.kind(), i),
                slice: s.clone(),
                model: cfg.onnx.clone(),
                arena: arena.proc_path(),
                arena_len: arena.mem().len() as u64,
                onnxruntime: l.onnxruntime.clone(),
                modeled_latency_ns: l.modeled_latency.get(i).cloned().unwrap_or_default(),
                modeled_bucket_latency_ns: l
                    .modeled_bucket_latency
                    .get(i)
                    .cloned()
                    .unwrap_or_default(),
            };
            let (client, m) = WorkerClient::spawn(&l.exe, &spec, READY_TIMEOUT)
                .map_err(|e| format!("model {}: {e}", cfg.name))?;
            if meta.is_none() {
                meta = Some(m);
            }
            clients.push(client);
            specs.push((spec, out_off, in_off));
        }
        let meta = meta.ok_or("no worker")?;
        let (tensor_input, item_shape, item_dtype) = check_model(&cfg, &meta)?;
        let slots = if cfg.kind == Kind::Image {
            let len = preba_slice::tensor_bytes(item_dtype, &item_shape)
                .ok_or("tensor size overflow")? as usize;
            // Enough for the queue limit (up to MAX_SLOTS: beyond it a full
            // arena answers 503 like a full queue) plus a full batch on
            // every slice.
            let count = (l.max_queue.min(MAX_SLOTS) + bmax * n).max(16);
            let base = arena.reserve(SlotPool::bytes(len, count))?;
            Some(SlotPool::new(base, len, count))
        } else {
            None
        };
        let mut metrics = ModelMetrics::default();
        for (spec, _, _) in &specs {
            metrics.slices.push(SliceMetrics {
                name: spec.name.clone(),
                kind: spec.slice.kind().into(),
                modeled: matches!(spec.slice, SliceSpec::Modeled { .. }),
                ..Default::default()
            });
        }
        *metrics
            .queue_depth
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = vec![0; l.batch_max.len()];
        let metrics = Arc::new(metrics);
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut slice_txs = Vec::new();
        let model_info = Arc::new(BatchShape {
            kind: cfg.kind,
            input: tensor_input.clone(),
            item_shape: item_shape.clone(),
            item_dtype,
            lengths_input: meta
                .inputs
                .iter()
                .find(|t| t.dtype == Dtype::I64)
                .map(|t| t.name.clone()),
            n_mels: cfg.audio.n_mels as usize,
        });
        let mut slice_rxs = Vec::new();
        for _ in 0..n {
            let (tx, rx) = mpsc::channel::<BatchJob>();
            slice_txs.push(tx);
            slice_rxs.push(rx);
        }
        let batcher = Arc::new(Batcher {
            core: Mutex::new(Core {
                policy: l.policy,
                waiting: HashMap::new(),
                slices: slice_txs,
                timer: None,
                stopped: false,
                actions: Vec::new(),
            }),
            timer_cv: Condvar::new(),
            start: Instant::now(),
            metrics: metrics.clone(),
            debug: std::env::var_os("PREBA_DEBUG_BATCHER").is_some(),
        });
        for (i, ((client, (spec, out_off, in_off)), rx)) in
            clients.into_iter().zip(specs).zip(slice_rxs).enumerate()
        {
            let sup = Supervisor {
                idx: i,
                spec,
                exe: l.exe.clone(),
                client: Some(client),
                out_off: out_off as u64,
                out_cap: out_cap as u64,
                in_off,
                arena: arena.clone(),
                batcher: batcher.clone(),
                metrics: metrics.clone(),
                shape: model_info.clone(),
                stopping: stopping.clone(),
                next_batch: 0,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("slice-{i}"))
                    .spawn(move || sup.run(rx))
                    .map_err(|e| e.to_string())?,
            );
        }
        let b = batcher.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("timer-{}", cfg.name))
                .spawn(move || b.timer_loop())
                .map_err(|e| e.to_string())?,
        );
        Ok(Arc::new(Model {
            cfg,
            meta,
            tensor_input,
            item_shape,
            item_dtype,
            slots,
            metrics,
            slice_specs: l.slices,
            batch_max: l.batch_max,
            time_queue: l.time_queue,
            max_queue: l.max_queue,
            inflight: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            batcher,
            threads: Mutex::new(threads),
            stopping,
        }))
    }

    /// Hands a preprocessed item to the batcher; the answer arrives on the
    /// returned channel (exactly once).
    /// `budget`: how long the request may take from now (its SLA or the
    /// client's `timeout`); policies that plan by deadline use it.
    pub fn submit(
        &self,
        item: Item,
        duration_s: Option<f32>,
        budget: Option<Duration>,
    ) -> oneshot::Receiver<Result<Answer, Failure>> {
        let (tx, rx) = oneshot::channel();
        let id = RequestId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let w = Waiting {
            item,
            tx,
            enq: Instant::now(),
            duration_s,
        };
        self.batcher.event(Input::Arrive(id, duration_s, budget, w));
        rx
    }

    /// Stops the policy and the workers (after the caller has drained
    /// requests); waits for the threads.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.batcher.stop();
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Most queued image tensors per model held in the arena.
const MAX_SLOTS: usize = 512;

/// Bytes of the padded audio batch region per slice.
const AUDIO_INPUT_BYTES: usize = 64 << 20;

/// Checks the ONNX model against the preprocessing and finds the tensor
/// input: (input, item shape, item dtype).
fn check_model(
    cfg: &ModelConfig,
    meta: &ModelMeta,
) -> Result<(preba_slice::TensorMeta, Vec<i64>, Dtype), String> {
    let name = &cfg.name;
    let input = meta
        .inputs
        .iter()
        .find(|t| matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::U8))
        .ok_or_else(|| {
            format!(
                "model {name}: no float or u8 input in {}",
                cfg.onnx.display()
            )
        })?
        .clone();
    match cfg.kind {
        Kind::Image => {
            let p = &cfg.image;
            let c = i64::from(p.crop);
            let shape = match p.layout {
                preba_protocol::profile::Layout::Nchw => vec![3, c, c],
                preba_protocol::profile::Layout::Nhwc => vec![c, c, 3],
            };
            let dt = dtype_of(p.dtype);
            if input.dtype != dt {
                return Err(format!(
                    "model {name}: input {} is {} but preprocessing makes {} (set preprocess.dtype in config.toml)",
                    input.name,
                    input.dtype.triton_name(),
                    dt.triton_name()
                ));
            }
            let ok = input.shape.len() == 4
                && input.shape[1..]
                    .iter()
                    .zip(&shape)
                    .all(|(&m, &s)| m == -1 || m == s);
            if !ok {
                return Err(format!(
                    "model {name}: input {} has shape {:?}, preprocessing makes [N, {}] (check crop and layout)",
                    input.name,
                    input.shape,
                    shape
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Ok((input, shape, dt))
        }
        Kind::Audio => {
            if input.dtype != Dtype::F32 || input.shape.len() != 3 {
                return Err(format!(
                    "model {name}: audio models take FP32 [batch, n_mels, frames]; input {} is {} {:?}",
                    input.name,
                    input.dtype.triton_name(),
                    input.shape
                ));
            }
            let m = i64::from(cfg.audio.n_mels);
            if input.shape[1] != -1 && input.shape[1] != m {
                return Err(format!(
                    "model {name}: input {} has {} mel bands, preprocessing makes {m}",
                    input.name, input.shape[1]
                ));
            }
            Ok((input, vec![m, -1], Dtype::F32))
        }
    }
}

struct BatchShape {
    kind: Kind,
    input: preba_slice::TensorMeta,
    item_shape: Vec<i64>,
    item_dtype: Dtype,
    lengths_input: Option<String>,
    n_mels: usize,
}

/// The policy and what waits on it, driven in place: callers (HTTP tasks
/// submitting, slice supervisors reporting free/down) run the policy under
/// the lock themselves, so an arrival costs no thread hand-off; only the
/// armed timer has a thread of its own, which sleeps until the earliest
/// deadline the policy asked for.
struct Batcher {
    core: Mutex<Core>,
    /// Wakes the timer thread when the armed time moves or on stop.
    timer_cv: Condvar,
    start: Instant,
    metrics: Arc<ModelMetrics>,
    debug: bool,
}

struct Core {
    policy: Box<dyn Policy>,
    waiting: HashMap<RequestId, Waiting>,
    slices: Vec<Sender<BatchJob>>,
    timer: Option<Time>,
    stopped: bool,
    actions: Vec<Action>,
}

enum Input {
    Arrive(RequestId, Option<f32>, Option<Duration>, Waiting),
    Free(usize),
    Down(usize),
}

impl Batcher {
    fn now(&self) -> Time {
        self.start.elapsed().as_nanos() as Time
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One event into the policy, its actions carried out.
    fn event(&self, input: Input) {
        let mut c = self.lock();
        if c.stopped {
            if let Input::Arrive(_, _, _, w) = input {
                let _ = w.tx.send(Err((503, "the server is shutting down".into())));
            }
            return;
        }
        let now = self.now();
        let ev = match input {
            Input::Arrive(id, dur, budget, w) => {
                c.waiting.insert(id, w);
                Event::Arrival(Request {
                    id,
                    arrival: now,
                    duration_s: dur,
                    deadline: budget.map(|b| now + b.as_nanos() as Time),
                })
            }
            Input::Free(s) => Event::SliceFree { slice: s },
            Input::Down(s) => Event::SliceDown { slice: s },
        };
        self.run_policy(&mut c, now, ev);
    }

    fn run_policy(&self, c: &mut Core, now: Time, ev: Event) {
        let dbg = self.debug.then(|| format!("{ev:?}"));
        let mut actions = std::mem::take(&mut c.actions);
        c.policy.handle(now, ev, &mut actions);
        if let Some(d) = dbg {
            eprintln!("batcher {} ms: {d} -> {actions:?}", now as f64 / 1e6);
        }
        for a in actions.drain(..) {
            match a {
                Action::Dispatch { slice, batch, .. } => {
                    let items: Vec<Waiting> =
                        batch.iter().filter_map(|id| c.waiting.remove(id)).collect();
                    if let Some(tx) = c.slices.get(slice)
                        && let Err(mpsc::SendError(job)) = tx.send(BatchJob { items })
                    {
                        for w in job.items {
                            let _ = w.tx.send(Err((500, format!("slice {slice} is gone"))));
                        }
                    }
                }
                Action::ArmTimer { at } => {
                    if c.timer.is_none_or(|t| at < t) {
                        self.timer_cv.notify_one();
                    }
                    c.timer = Some(at);
                }
                Action::Reject { id, reason } => {
                    if let Some(w) = c.waiting.remove(&id) {
                        // A full queue is the server's state (503, as Triton);
                        // a missed deadline is this request's (429: ask for
                        // less, or later).
                        let status = match reason {
                            RejectReason::QueueFull { .. } => {
                                self.metrics.rejected_queue_full.add(1);
                                503
                            }
                            RejectReason::DeadlineMiss { .. } => {
                                self.metrics.rejected_deadline.add(1);
                                429
                            }
                        };
                        let _ = w.tx.send(Err((status, reason.to_string())));
                    }
                }
            }
        }
        c.actions = actions;
        *self
            .metrics
            .queue_depth
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = c.policy.queue_depths();
    }

    /// The timer thread: fires `Timer` at the armed time.
    fn timer_loop(&self) {
        let mut c = self.lock();
        loop {
            if c.stopped {
                return;
            }
            let now = self.now();
            match c.timer {
                None => {
                    c = self.timer_cv.wait(c).unwrap_or_else(|e| e.into_inner());
                }
                Some(at) if at <= now => {
                    c.timer = None;
                    self.run_policy(&mut c, now, Event::Timer);
                }
                Some(at) => {
                    c = self
                        .timer_cv
                        .wait_timeout(c, Duration::from_nanos(at - now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
    }

    /// Stops dispatching: what is queued gets its one answer, slice
    /// threads see their channels close.
    fn stop(&self) {
        let mut c = self.lock();
        c.stopped = true;
        c.slices.clear();
        for (_, w) in c.waiting.drain() {
            let _ = w.tx.send(Err((503, "the server is shutting down".into())));
        }
        drop(c);
        self.timer_cv.notify_all();
    }
}

struct Supervisor {
    idx: usize,
    spec: WorkerSpec,
    exe: PathBuf,
    client: Option<WorkerClient>,
    out_off: u64,
    out_cap: u64,
    in_off: Option<usize>,
    arena: Arc<Arena>,
    batcher: Arc<Batcher>,
    metrics: Arc<ModelMetrics>,
    shape: Arc<BatchShape>,
    stopping: Arc<AtomicBool>,
    next_batch: u64,
}

impl Supervisor {
    fn run(mut self, rx: Receiver<BatchJob>) {
        while let Ok(job) = rx.recv() {
            self.batch(job);
            if self.client.is_none() {
                self.batcher.event(Input::Down(self.idx));
                if !self.respawn() {
                    return;
                }
            }
            self.batcher.event(Input::Free(self.idx));
        }
        if let Some(mut c) = self.client.take() {
            c.kill();
        }
    }

    /// Restarts the worker with backoff until it is up or the server stops.
    fn respawn(&mut self) -> bool {
        let mut wait = Duration::from_millis(100);
        while !self.stopping.load(Ordering::SeqCst) {
            match WorkerClient::spawn(&self.exe, &self.spec, READY_TIMEOUT) {
                Ok((c, _)) => {
                    self.client = Some(c);
                    self.metrics.slices[self.idx].restarts.add(1);
                    eprintln!("preba serve: slice {} restarted", self.spec.name);
                    return true;
                }
                Err(e) => {
                    eprintln!("preba serve: slice {}: restart failed: {e}", self.spec.name);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        false
    }

    fn batch(&mut self, job: BatchJob) {
        let n = job.items.len();
        if n == 0 {
            return;
        }
        let m = self.metrics.clone();
        let now = Instant::now();
        let mut queue_ns = 0u64;
        for w in &job.items {
            queue_ns += now.duration_since(w.enq).as_nanos() as u64;
        }
        m.queue_ns.add(queue_ns);
        m.queue_count.add(n as u64);
        let req = match self.request(&job.items) {
            Ok(r) => r,
            Err(e) => return fail_all(job, 500, &format!("slice {}: {e}", self.spec.name)),
        };
        let Some(client) = self.client.as_mut() else {
            return fail_all(job, 500, &format!("slice {} is down", self.spec.name));
        };
        let t0 = Instant::now();
        let r = client.run(&req, BATCH_TIMEOUT);
        let busy = t0.elapsed().as_nanos() as u64;
        let sm = &m.slices[self.idx];
        sm.busy_ns.add(busy);
        sm.batches.add(1);
        match r {
            Ok(reply) => {
                m.batch(n as u64, reply.exec_ns);
                m.infer_ns.add(reply.exec_ns * n as u64);
                m.gather_copies.add(u64::from(reply.gather_copies));
                let mut rows: Vec<Vec<Row>> = (0..n).map(|_| Vec::new()).collect();
                for o in &reply.outputs {
                    let bad = o.shape.first().is_none_or(|&b| b != n as i64)
                        || o.len % n as u64 != 0
                        || o.off < self.out_off
                        || o.off + o.len > self.out_off + self.out_cap;
                    if bad {
                        return fail_all(
                            job,
                            500,
                            &format!(
                                "slice {}: output {} has shape {:?} for a batch of {n}",
                                self.spec.name, o.name, o.shape
                            ),
                        );
                    }
                    let row = (o.len / n as u64) as usize;
                    for (i, r) in rows.iter_mut().enumerate() {
                        let mut raw = vec![0u8; row];
                        if let Err(e) = self.arena.mem().read(o.off as usize + i * row, &mut raw) {
                            return fail_all(job, 500, &format!("slice {}: {e}", self.spec.name));
                        }
                        r.push(Row {
                            name: o.name.clone(),
                            dtype: o.dtype,
                            shape: o.shape[1..].to_vec(),
                            raw,
                        });
                    }
                }
                for (w, rows) in job.items.into_iter().zip(rows) {
                    let _ = w.tx.send(Ok(Answer {
                        rows,
                        modeled: reply.modeled,
                    }));
                }
            }
            Err(e @ (SliceError::Died { .. } | SliceError::Timeout { .. })) => {
                sm.failures.add(1);
                if let Some(mut c) = self.client.take() {
                    c.kill();
                }
                eprintln!("preba serve: {e}");
                fail_all(job, 500, &format!("{e} (during a batch of {n})"));
            }
            Err(e) => {
                sm.failures.add(1);
                fail_all(job, 500, &e.to_string());
            }
        }
    }

    /// The worker request for a batch: image slots as arena ranges (one
    /// range when contiguous), audio padded into this slice's input region.
    fn request(&mut self, items: &[Waiting]) -> Result<BatchRequest, String> {
        let n = items.len() as i64;
        self.next_batch += 1;
        let sh = &self.shape;
        let mut inputs = Vec::new();
        match sh.kind {
            Kind::Image => {
                let regions = items.iter().map(|w| match &w.item {
                    Item::Slot(s) => Ok(s.region()),
                    Item::Features { .. } => Err("audio item in an image batch".to_string()),
                });
                let regions: Vec<(usize, usize)> = regions.collect::<Result<_, _>>()?;
                let mut shape = vec![n];
                shape.extend(&sh.item_shape);
                inputs.push(InputBinding {
                    name: sh.input.name.clone(),
                    dtype: sh.item_dtype,
                    shape,
                    source: Source::Arena(runs(regions)),
                });
            }
            Kind::Audio => {
                let mut feats = Vec::with_capacity(items.len());
                for w in items {
                    match &w.item {
                        Item::Features { frames, data } => feats.push((*frames, data)),
                        Item::Slot(_) => return Err("image item in an audio batch".into()),
                    }
                }
                let tmax = feats.iter().map(|f| f.0).max().unwrap_or(1).max(1);
                let mels = sh.n_mels;
                let row = mels * tmax * 4;
                let total = row * feats.len();
                if total > AUDIO_INPUT_BYTES {
                    return Err(format!(
                        "padded audio batch of {total} bytes exceeds the slice's {AUDIO_INPUT_BYTES}-byte input region"
                    ));
                }
                let base = self.in_off.ok_or("no audio input region")?;
                let mut buf = vec![0u8; total];
                for (i, (frames, data)) in feats.iter().enumerate() {
                    for b in 0..mels {
                        for t in 0..*frames {
                            let v = data.get(b * frames + t).copied().unwrap_or(0.0);
                            let o = i * row + (b * tmax + t) * 4;
                            buf[o..o + 4].copy_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                self.arena
                    .mem()
                    .write(base, &buf)
                    .map_err(|e| e.to_string())?;
                self.metrics.pad_copies.add(1);
                inputs.push(InputBinding {
                    name: sh.input.name.clone(),
                    dtype: Dtype::F32,
                    shape: vec![n, mels as i64, tmax as i64],
                    source: Source::Arena(vec![(base as u64, total as u64)]),
                });
                if let Some(l) = &sh.lengths_input {
                    let lens: Vec<u8> = feats
                        .iter()
                        .flat_map(|f| (f.0 as i64).to_le_bytes())
                        .collect();
                    inputs.push(InputBinding {
                        name: l.clone(),
                        dtype: Dtype::I64,
                        shape: vec![n],
                        source: Source::Inline(lens),
                    });
                }
            }
        }
        // The profile table's length buckets: 2.5 s wide, by the longest input.
        let bucket = items
            .iter()
            .filter_map(|w| w.duration_s)
            .filter(|d| d.is_finite() && *d > 0.0)
            .map(|d| (d / preba_batcher::AUDIO_BUCKET_WIDTH_S).floor() as u32)
            .max();
        Ok(BatchRequest {
            id: self.next_batch,
            bucket,
            inputs,
            out_off: self.out_off,
            out_cap: self.out_cap,
        })
    }
}

fn fail_all(job: BatchJob, status: u16, msg: &str) {
    for w in job.items {
        let _ = w.tx.send(Err((status, msg.to_string())));
    }
}
