//! `preba serve`: start-up (backend, arena, models, workers), the KServe v2
//! HTTP front end, the metrics endpoint and graceful shutdown.
#![forbid(unsafe_code)]

use crate::arena::Arena;
use crate::error::ServeError;
use crate::infer::{self, Reply};
use crate::metrics::{self, CardGauges};
use crate::model::{Launch, Model};
use crate::repo::{self, ModelConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use preba_batcher::{
    Deadline, DeadlineConfig, Policy, Preba, PrebaConfig, ProfileTable, SliceModel, Triton,
    TritonConfig,
};
use preba_host::backend::{self, Backend, CardBackend, CardSpec, CpuBackend};
use preba_slice::SliceSpec;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// `preba serve` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Triton-shaped repository: DIR/NAME/config.toml and DIR/NAME/1/model.onnx.
    #[arg(long, value_name = "DIR")]
    pub model_repository: Option<PathBuf>,
    /// An image model with default preprocessing: NAME=PATH.onnx (repeatable).
    #[arg(long = "model", value_name = "NAME=PATH.onnx")]
    pub models: Vec<String>,
    /// emulated (default), cpu, vfio-user:PATH or vfio:BDF.
    #[arg(long, default_value = "emulated")]
    pub card: String,
    /// Preprocessing threads for --card cpu (default: the machine's cores).
    #[arg(long)]
    pub cpu_threads: Option<usize>,
    /// Slices each model is served on: cpu:N, cpu:NxT, cuda:MIG-..,.., cuda:all, modeled:a100-1g.5gb*7.
    #[arg(long, default_value = "cpu:1")]
    pub slices: String,
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub http: String,
    #[arg(long, default_value = "127.0.0.1:8002")]
    pub metrics: String,
    /// Profile table (TOML) for Batch_knee/Time_knee and modeled slices (default: the built-in A100 MIG table).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Inputs admitted per model before 503 (queue full).
    #[arg(long, default_value_t = 1024)]
    pub max_queue: usize,
    /// Largest request body in bytes (413 beyond it).
    #[arg(long, default_value_t = 64 << 20)]
    pub max_body: usize,
    /// libonnxruntime.so for the workers (default: ORT_DYLIB_PATH, then the project's venv).
    #[arg(long, value_name = "PATH")]
    pub onnxruntime: Option<PathBuf>,
}

/// Batch_max and Time_knee for a model without a profile entry: small
/// batches and a short wait, so an unprofiled model is never slow to answer.
/// `preba profile` (or config.toml overrides) replaces these.
pub const DEFAULT_BATCH_MAX: u32 = 4;
pub const DEFAULT_TIME_KNEE: Duration = Duration::from_millis(10);

pub struct State {
    pub models: Vec<Arc<Model>>,
    pub backend: Arc<dyn Backend + Send + Sync>,
    pub card: Option<Arc<CardBackend>>,
    pub arena: Arc<Arena>,
    pub stopping: AtomicBool,
    pub preprocess_permits: Semaphore,
    pub max_body: usize,
    pub backend_name: String,
}

impl State {
    fn model(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.iter().find(|m| m.cfg.name == name)
    }
}

fn usage(s: impl Into<String>) -> ServeError {
    ServeError::Usage(s.into())
}

/// Runs the server until SIGTERM/SIGINT; returns the exit code.
pub fn serve(args: &ServeArgs) -> Result<i32, ServeError> {
    let mut configs: Vec<ModelConfig> = Vec::new();
    if let Some(dir) = &args.model_repository {
        configs.extend(repo::load_repository(dir)?);
    }
    for m in &args.models {
        configs.push(repo::model_shorthand(m)?);
    }
    if configs.is_empty() {
        return Err(usage(
            "no models: give --model-repository DIR or --model NAME=PATH.onnx",
        ));
    }
    for (i, c) in configs.iter().enumerate() {
        if configs[..i].iter().any(|d| d.name == c.name) {
            return Err(usage(format!("model {} is given twice", c.name)));
        }
    }
    let http: SocketAddr = args
        .http
        .parse()
        .map_err(|_| usage(format!("--http {}: expected ADDR:PORT", args.http)))?;
    let metrics_addr: SocketAddr = args
        .metrics
        .parse()
        .map_err(|_| usage(format!("--metrics {}: expected ADDR:PORT", args.metrics)))?;
    if args.max_queue == 0 {
        return Err(usage("--max-queue must be at least 1"));
    }
    let table = match &args.profile {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .map_err(|e| usage(format!("--profile {}: {e}", p.display())))?;
            ProfileTable::parse(&t).map_err(|e| usage(format!("--profile {}: {e}", p.display())))?
        }
        None => ProfileTable::builtin(),
    };
    let default_slices =
        preba_slice::parse_slices(&args.slices).map_err(|e| usage(e.to_string()))?;
    let onnxruntime = match &args.onnxruntime {
        Some(p) if !p.is_file() => {
            return Err(usage(format!(
                "--onnxruntime {}: no such file",
                p.display()
            )));
        }
        Some(p) => p.clone(),
        None => preba_slice::find_onnxruntime().map_err(|e| ServeError::Startup(e.to_string()))?,
    };
    let spec: CardSpec = args
        .card
        .parse()
        .map_err(|e: String| usage(format!("--card: {e}")))?;
    let threads = args
        .cpu_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    if threads == 0 {
        return Err(usage("--cpu-threads must be at least 1"));
    }
    // The card first: its arena is where the batch slots live.
    let (backend, card): (Arc<dyn Backend + Send + Sync>, Option<Arc<CardBackend>>) = match &spec {
        CardSpec::Cpu => (Arc::new(CpuBackend), None),
        other => {
            let cfg = preba_host::driver::DriverConfig {
                arena_bytes: 2 << 30,
                ..Default::default()
            };
            let open = backend::open_card(other, cfg)?;
            let c = Arc::new(CardBackend::new(
                open,
                other.to_string(),
                backend::REQUEST_TIMEOUT,
            ));
            (c.clone(), Some(c))
        }
    };
    let permits = if card.is_some() {
        backend.parallelism().max(threads)
    } else {
        threads
    };
    let arena = Arc::new(
        Arena::new(backend.clone()).map_err(|e| ServeError::Startup(format!("arena: {e}")))?,
    );
    let exe =
        std::env::current_exe().map_err(|e| ServeError::Startup(format!("own executable: {e}")))?;
    let mut models = Vec::new();
    for cfg in configs {
        let slices = match &cfg.slices {
            Some(s) => preba_slice::parse_slices(s)
                .map_err(|e| usage(format!("model {}: {e}", cfg.name)))?,
            None => default_slices.clone(),
        };
        let launch = plan(
            &cfg,
            &slices,
            &table,
            args.max_queue,
            exe.clone(),
            Some(onnxruntime.clone()),
            arena.clone(),
        )?;
        eprintln!(
            "preba serve: model {} on {} slice(s) [{}], policy {}, Batch_max {:?}, Time_queue {:.3} ms",
            cfg.name,
            slices.len(),
            slices
                .iter()
                .map(|s| s.slice_type())
                .collect::<Vec<_>>()
                .join(","),
            cfg.batching.policy,
            launch.batch_max,
            launch.time_queue.as_secs_f64() * 1e3
        );
        let m = Model::start(cfg, launch).map_err(ServeError::Startup)?;
        models.push(m);
    }
    let state = Arc::new(State {
        models,
        backend_name: backend.name(),
        backend,
        card,
        arena,
        stopping: AtomicBool::new(false),
        preprocess_permits: Semaphore::new(permits),
        max_body: args.max_body,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("preba-http")
        .build()
        .map_err(|e| ServeError::Startup(format!("runtime: {e}")))?;
    let code = rt.block_on(run(state.clone(), http, metrics_addr))?;
    for m in &state.models {
        m.stop();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(code)
}

/// Batch_max / Time_queue / modeled latencies for one model.
fn plan(
    cfg: &ModelConfig,
    slices: &[SliceSpec],
    table: &ProfileTable,
    max_queue: usize,
    exe: PathBuf,
    onnxruntime: Option<PathBuf>,
    arena: Arc<Arena>,
) -> Result<Launch, ServeError> {
    let n = slices.len();
    let pname = cfg
        .batching
        .profile_model
        .clone()
        .unwrap_or_else(|| cfg.name.clone());
    let stype = slices[0].slice_type();
    // Mixed slice types: one Batch_max cannot be right for all (the deadline
    // policy of the science issue handles them); PREBA uses the first type.
    let mut pc = match PrebaConfig::from_table(table, &pname, &stype, n, max_queue) {
        Ok(c) => c,
        Err(_) => PrebaConfig {
            slices: n,
            batch_max: vec![DEFAULT_BATCH_MAX.min(cfg.max_batch_size)],
            time_queue: DEFAULT_TIME_KNEE.as_nanos() as u64 / n as u64,
            bucket_width_s: None,
            max_queue,
        },
    };
    if cfg.kind == crate::repo::Kind::Audio && pc.bucket_width_s.is_none() {
        pc.bucket_width_s = Some(cfg.batching.bucket_width_s);
        let b = pc.batch_max[0];
        // Longer buckets take half the batch of shorter ones, down to 1.
        pc.batch_max = (0..6).map(|i| (b >> (i / 2)).max(1)).collect();
    }
    if let Some(b) = cfg.batching.batch_max {
        pc.batch_max.iter_mut().for_each(|x| *x = b);
    }
    if let Some(t) = cfg.batching.time_queue_ms {
        pc.time_queue = (t * 1e6) as u64;
    }
    for b in pc.batch_max.iter_mut() {
        *b = (*b).min(cfg.max_batch_size).max(1);
    }
    let mut modeled = Vec::with_capacity(n);
    let mut modeled_buckets = Vec::with_capacity(n);
    let curve = |e: &preba_batcher::Entry| -> Vec<(u32, u64)> {
        e.points()
            .iter()
            .map(|p| (p.batch, (p.p50_ms * 1e6) as u64))
            .collect()
    };
    for s in slices {
        if let SliceSpec::Modeled { slice_type } = s {
            let e = table.find(&pname, slice_type, None).or_else(|| table.find(&pname, slice_type, Some(0))).ok_or_else(|| {
                usage(format!(
                    "model {}: modeled slice {slice_type}: no profile for {pname} on {slice_type} (set batching.profile_model in config.toml to a model the table has, or give --profile)",
                    cfg.name
                ))
            })?;
            modeled.push(curve(e));
            // Audio: a modeled slice sleeps the latency of the length its
            // batch is padded to, not of the shortest bucket.
            modeled_buckets.push(if cfg.kind == crate::repo::Kind::Audio {
                (0u32..)
                    .map_while(|b| table.find(&pname, slice_type, Some(b)))
                    .map(curve)
                    .collect()
            } else {
                Vec::new()
            });
        } else {
            modeled.push(Vec::new());
            modeled_buckets.push(Vec::new());
        }
    }
    let bad = |e: preba_batcher::Error| usage(format!("model {}: {e}", cfg.name));
    let (policy, batch_max, time_queue): (Box<dyn Policy>, Vec<u32>, Duration) = match cfg
        .batching
        .policy
        .as_str()
    {
        // Triton's dynamic batcher per slice behind a round-robin balancer:
        // what users get today (not MIG-aware).
        "triton" => {
            let tc = TritonConfig {
                slices: n,
                max_batch_size: cfg.max_batch_size,
                preferred: cfg.batching.preferred_batch_size.clone(),
                max_queue_delay: cfg.batching.max_queue_delay_us * 1000,
                max_queue: max_queue.div_ceil(n),
            };
            let pref = if tc.preferred.is_empty() {
                vec![cfg.max_batch_size]
            } else {
                tc.preferred.clone()
            };
            let tq = Duration::from_micros(cfg.batching.max_queue_delay_us);
            (Box::new(Triton::new(tc).map_err(bad)?), pref, tq)
        }
        // Deadline-aware: per-slice latency models (mixed slice sizes),
        // batches grown only while the oldest request still makes it.
        "deadline" => {
            let mut models = Vec::with_capacity(n);
            let mut by_length = Vec::new();
            for s in slices {
                let t = s.slice_type();
                // Audio profiles are per length bucket: the policy then
                // predicts each batch at the length it pads to.
                let buckets: Vec<SliceModel> = (0u32..)
                    .map_while(|b| table.find(&pname, &t, Some(b)))
                    .map(SliceModel::from_entry)
                    .collect();
                let e = table.find(&pname, &t, None).or_else(|| table.find(&pname, &t, Some(0))).ok_or_else(|| {
                        usage(format!(
                            "model {}: the deadline policy needs a profile of {pname} on {t} (run `preba profile`, give --profile)",
                            cfg.name
                        ))
                    })?;
                models.push(SliceModel::from_entry(e));
                if cfg.kind == crate::repo::Kind::Audio && !buckets.is_empty() {
                    by_length.push(buckets);
                }
            }
            if by_length.len() != models.len() {
                by_length.clear();
            }
            let sla = cfg.sla_ms.unwrap_or(100.0);
            let dc = DeadlineConfig {
                slices: models,
                by_length,
                max_batch: *pc.batch_max.iter().max().unwrap_or(&1),
                default_sla: (sla * 1e6) as u64,
                max_queue,
            };
            let bm = vec![dc.max_batch];
            // Real clocks wake late (thread hand-offs, a busy machine):
            // batches leave 2 ms or 5% of the SLA before their latest start.
            let slack = ((sla * 0.05).max(2.0) * 1e6) as u64;
            (
                Box::new(Deadline::new(dc).map_err(bad)?.with_slack(slack)),
                bm,
                Duration::from_secs_f64(sla / 1e3),
            )
        }
        _ => {
            let tq = Duration::from_nanos(pc.time_queue);
            let bm = pc.batch_max.clone();
            (Box::new(Preba::new(pc).map_err(bad)?), bm, tq)
        }
    };
    Ok(Launch {
        exe,
        onnxruntime,
        arena,
        policy,
        batch_max,
        time_queue,
        max_queue,
        slices: slices.to_vec(),
        modeled_latency: modeled,
        modeled_bucket_latency: modeled_buckets,
    })
}

async fn run(
    state: Arc<State>,
    http: SocketAddr,
    metrics_addr: SocketAddr,
) -> Result<i32, ServeError> {
    let listener = TcpListener::bind(http)
        .await
        .map_err(|e| ServeError::Startup(format!("--http {http}: {e}")))?;
    let mlistener = TcpListener::bind(metrics_addr)
        .await
        .map_err(|e| ServeError::Startup(format!("--metrics {metrics_addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Startup(e.to_string()))?;
    let mlocal = mlistener
        .local_addr()
        .map_err(|e| ServeError::Startup(e.to_string()))?;
    tokio::spawn(accept_loop(listener, state.clone(), false));
    tokio::spawn(accept_loop(mlistener, state.clone(), true));
    eprintln!("preba serve: metrics on http://{mlocal}/metrics");
    eprintln!("preba serve: listening on http://{local}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ServeError::Startup(e.to_string()))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| ServeError::Startup(e.to_string()))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Stop admitting (new requests get 503), then answer everything in flight.
    state.stopping.store(true, Ordering::SeqCst);
    eprintln!("preba serve: shutting down, answering requests in flight");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while state
        .models
        .iter()
        .any(|m| m.inflight.load(Ordering::SeqCst) > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the last responses leave their sockets.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(0)
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, metrics_only: bool) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // Nagle + delayed ACK cost 44 ms per request (docs/background.md section 5).
        let _ = stream.set_nodelay(true);
        let st = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, std::convert::Infallible>(route(st, req, metrics_only).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: u16, body: Vec<u8>, content_type: &str, header_len: Option<usize>) -> Resp {
    let mut r = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type);
    if let Some(h) = header_len {
        r = r.header("inference-header-content-length", h.to_string());
    }
    r.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn json_resp(status: u16, v: &Value) -> Resp {
    respond(
        status,
        serde_json::to_vec(v).unwrap_or_default(),
        "application/json",
        None,
    )
}

fn err_resp(status: u16, msg: &str) -> Resp {
    json_resp(status, &json!({ "error": msg }))
}

async fn route(st: Arc<State>, req: Request<Incoming>, metrics_only: bool) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if metrics_only {
        return match (method, path.as_str()) {
            (Method::GET, "/metrics") => respond(
                200,
                metrics_text(&st).into_bytes(),
                "text/plain; version=0.0.4",
                None,
            ),
            _ => err_resp(404, &format!("no route {path} (metrics are at /metrics)")),
        };
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ready = !st.stopping.load(Ordering::SeqCst);
    match (&method, segs.as_slice()) {
        (&Method::GET, ["v2", "health", "live"]) => respond(200, Vec::new(), "text/plain", None),
        (&Method::GET, ["v2", "health", "ready"]) => {
            // A dead card does not make the server unready: images go
            // through the CPU path then (preba_cpu_fallback_total counts them).
            if ready {
                respond(200, Vec::new(), "text/plain", None)
            } else {
                respond(503, Vec::new(), "text/plain", None)
            }
        }
        (&Method::GET, ["v2"]) => json_resp(
            200,
            &json!({"name": "preba", "version": env!("CARGO_PKG_VERSION"),
                "extensions": ["classification", "binary_tensor_data", "model_repository", "statistics"]}),
        ),
        (&Method::GET | &Method::POST, ["v2", "repository", "index"]) => json_resp(
            200,
            &Value::Array(
                st.models
                    .iter()
                    .map(|m| json!({"name": m.cfg.name, "version": m.cfg.version, "state": if ready {"READY"} else {"UNAVAILABLE"}}))
                    .collect(),
            ),
        ),
        (&Method::GET, ["v2", "models", "stats"]) => json_resp(
            200,
            &json!({"model_stats": st.models.iter().map(|m| metrics::stats_json(&m.cfg.name, &m.cfg.version, &m.metrics)).collect::<Vec<_>>()}),
        ),
        (_, ["v2", "models", name, rest @ ..]) => {
            let Some(m) = st.model(name).cloned() else {
                return err_resp(404, &format!("unknown model {name}"));
            };
            let rest = match rest {
                ["versions", v, r @ ..] => {
                    if *v != m.cfg.version {
                        return err_resp(404, &format!("model {name} has no version {v} (serving version {})", m.cfg.version));
                    }
                    r
                }
                r => r,
            };
            match (&method, rest) {
                (&Method::GET, []) => json_resp(200, &model_metadata(&m)),
                (&Method::GET, ["ready"]) => respond(if ready { 200 } else { 503 }, Vec::new(), "text/plain", None),
                (&Method::GET, ["config"]) => json_resp(200, &model_config(&m)),
                (&Method::GET, ["stats"]) => json_resp(
                    200,
                    &json!({"model_stats": [metrics::stats_json(&m.cfg.name, &m.cfg.version, &m.metrics)]}),
                ),
                (&Method::POST, ["infer"]) => infer_http(st, m, req).await,
                _ => err_resp(404, &format!("no route {method} {path}")),
            }
        }
        _ => err_resp(404, &format!("no route {method} {path}")),
    }
}

async fn infer_http(st: Arc<State>, m: Arc<Model>, req: Request<Incoming>) -> Resp {
    if st.stopping.load(Ordering::SeqCst) {
        return err_resp(503, "the server is shutting down");
    }
    let header_len = match req.headers().get("inference-header-content-length") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => return err_resp(400, "Inference-Header-Content-Length is not a number"),
        },
    };
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<usize>().ok())
        && len > st.max_body
    {
        return err_resp(
            413,
            &format!(
                "request body of {len} bytes is over the {}-byte limit",
                st.max_body
            ),
        );
    }
    let body = match Limited::new(req.into_body(), st.max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                err_resp(
                    413,
                    &format!("request body is over the {}-byte limit", st.max_body),
                )
            } else {
                err_resp(400, &format!("reading the request body: {e}"))
            };
        }
    };
    let Reply {
        status,
        body,
        header_len,
    } = infer::infer(st, m, body, header_len).await;
    let ct = if header_len.is_some() {
        "application/octet-stream"
    } else {
        "application/json"
    };
    respond(status, body, ct, header_len)
}

fn model_metadata(m: &Model) -> Value {
    let k = m.cfg.kind;
    json!({
        "name": m.cfg.name,
        "versions": [m.cfg.version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": k.input_name(), "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": m.meta.outputs.iter().map(|o| json!({"name": o.name, "datatype": o.dtype.triton_name(), "shape": o.shape})).collect::<Vec<_>>(),
        "parameters": {
            "preba_tensor_input": {"name": m.tensor_input.name, "datatype": m.item_dtype.triton_name(), "shape": std::iter::once(-1).chain(m.item_shape.iter().copied()).collect::<Vec<i64>>()}
        }
    })
}

fn triton_type(dt: &str) -> String {
    match dt {
        "BYTES" => "TYPE_STRING".into(),
        d => format!("TYPE_{d}"),
    }
}

fn model_config(m: &Model) -> Value {
    let k = m.cfg.kind;
    let kinds: Vec<Value> = m
        .slice_specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"name": format!("{}_{}{}", m.cfg.name, s.kind(), i), "count": 1,
                "kind": match s { SliceSpec::Cuda { .. } => "KIND_GPU", SliceSpec::Cpu { .. } => "KIND_CPU", SliceSpec::Modeled { .. } => "KIND_MODEL" }})
        })
        .collect();
    json!({
        "name": m.cfg.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": m.cfg.max_batch_size,
        "input": [{"name": k.input_name(), "data_type": "TYPE_STRING", "format": "FORMAT_NONE", "dims": [1]}],
        "output": m.meta.outputs.iter().map(|o| json!({"name": o.name, "data_type": triton_type(o.dtype.triton_name()),
            "dims": o.shape.iter().skip(1).copied().collect::<Vec<i64>>(), "label_filename": ""})).collect::<Vec<_>>(),
        "dynamic_batching": {
            "preferred_batch_size": m.batch_max,
            "max_queue_delay_microseconds": m.time_queue.as_micros() as u64,
        },
        "instance_group": kinds,
        "parameters": {
            "preba_policy": {"string_value": m.cfg.batching.policy},
            "preba_time_queue_us": {"string_value": m.time_queue.as_micros().to_string()},
            "preba_sla_ms": {"string_value": m.cfg.sla_ms.map(|s| s.to_string()).unwrap_or_default()}
        }
    })
}

fn metrics_text(st: &State) -> String {
    let rows: Vec<(&str, &str, &crate::metrics::ModelMetrics)> = st
        .models
        .iter()
        .map(|m| (m.cfg.name.as_str(), m.cfg.version.as_str(), &*m.metrics))
        .collect();
    let card = st.card.as_ref().and_then(|c| {
        let card = c.card();
        let id = card.identify();
        let t = card.telemetry().ok()?;
        let clock = f64::from(id.clock_mhz.max(1)) * 1e6;
        Some(CardGauges {
            name: st.backend_name.clone(),
            power_w: f64::from(t.power_mw) / 1000.0,
            cu_busy_s: t
                .cus
                .iter()
                .take(t.cu_count as usize)
                .map(|c| c.busy_cycles as f64)
                .sum::<f64>()
                / clock,
            cus: u32::from(id.image_cus) + u32::from(id.audio_cus) + u32::from(id.norm_cus),
            requests: t.requests,
            errors: t.errors,
        })
    });
    metrics::render(&rows, card.as_ref())
}
