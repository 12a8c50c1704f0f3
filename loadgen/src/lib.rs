//! `preba bench`: an open-loop KServe v2 load generator (the MLPerf server
//! scenario), its CSV output and its throughput/latency SVG plot.
//!
//! Arrivals follow a fixed schedule (constant gaps, or exponential gaps with
//! `--poisson`) that a slow server cannot slow down: requests in flight are
//! tokio tasks, capped by `--concurrency`, and an arrival that finds the cap
//! reached is counted as the error `dropped: concurrency cap`, never delayed.
//! Latency is measured from each request's scheduled arrival time, so a late
//! generator shows up as latency instead of hiding it.
//!
//! The `preba` binary calls [`main`] with the arguments after `bench`; the
//! xtask and tests use [`RunConfig`], [`run`] / [`prepare`] + [`run_rate`],
//! [`write_csv`], [`read_csv`] and [`plot_svg`].
#![forbid(unsafe_code)]

mod cli;
mod client;
mod inputs;
mod report;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use cli::{Command, OutputOptions, USAGE, parse_args};
pub use report::{CsvRun, format_table, plot_svg, read_csv, write_csv};

/// The reason counted for an arrival that found `--concurrency` requests
/// already outstanding.
pub const DROPPED: &str = "dropped: concurrency cap";

/// The reason counted for a request without an answer after
/// [`RunConfig::timeout`].
pub const TIMEOUT: &str = "timeout";

/// What to run: one server, one model, the inputs and the offered rates.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Server base URL, `http://host:port` (or `host:port`), optionally with a path prefix.
    pub url: String,
    /// Model name as the server knows it.
    pub model: String,
    /// Input files, used round-robin: JPEG/WAV, or `.npy` float32 tensors with `ideal`.
    pub inputs: Vec<PathBuf>,
    /// Offered rates in requests per second, run one after the other.
    pub rates: Vec<f64>,
    /// Exponential inter-arrival gaps instead of constant ones.
    pub poisson: bool,
    /// Length of the arrival schedule per rate.
    pub duration: Duration,
    /// Most requests outstanding at once.
    pub concurrency: usize,
    /// Inputs are preprocessed `.npy` tensors sent as the model's FP32 input.
    pub ideal: bool,
    /// Elements per request.
    pub batch: usize,
    /// A request without an answer after this long counts as [`TIMEOUT`].
    pub timeout: Duration,
    /// Seed of the Poisson schedule.
    pub seed: u64,
}

impl RunConfig {
    /// The defaults of `preba bench`: 10 s at 10 req/s, constant gaps,
    /// concurrency 256, batch 1, 30 s timeout.
    pub fn new(url: impl Into<String>, model: impl Into<String>, inputs: Vec<PathBuf>) -> Self {
        RunConfig {
            url: url.into(),
            model: model.into(),
            inputs,
            rates: vec![10.0],
            poisson: false,
            duration: Duration::from_secs(10),
            concurrency: 256,
            ideal: false,
            batch: 1,
            timeout: Duration::from_secs(30),
            seed: 0x5eed_cafe,
        }
    }
}

/// The outcome of one offered rate.
#[derive(Clone, Debug, PartialEq)]
pub struct RateResult {
    /// Offered rate, requests per second.
    pub offered: f64,
    /// Successful requests per second over the run (the arrival window, or
    /// until the last answer when that came later).
    pub achieved: f64,
    /// Latency percentiles of successful requests in ms (NaN when none succeeded).
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Successful requests.
    pub ok: u64,
    /// Failed or dropped requests by reason.
    pub errors: BTreeMap<String, u64>,
    /// Some answer carried `parameters.preba_modeled: true` (a modeled slice).
    pub modeled: bool,
}

impl RateResult {
    /// Failed and dropped requests, all reasons together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Everything that stops a run (request errors are counted, not raised).
#[derive(Debug)]
pub enum LoadgenError {
    /// A bad command line.
    Usage(String),
    /// An input file that cannot be used.
    Input { path: PathBuf, reason: String },
    /// The server cannot be reached.
    Connect { url: String, reason: String },
    /// The server answered the metadata request with an error.
    Server {
        url: String,
        status: u16,
        text: String,
    },
    /// The server's answer is not what KServe v2 says.
    Protocol(String),
    /// Reading or writing a file.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A CSV file that `plot` cannot read.
    Csv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Drawing the SVG.
    Plot(String),
    /// `--fail-on-error` and some requests failed.
    RequestErrors(u64),
}

impl LoadgenError {
    /// 2 for usage errors (bad arguments or input files), 1 for the rest.
    pub fn exit_code(&self) -> i32 {
        match self {
            LoadgenError::Usage(_) | LoadgenError::Input { .. } => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for LoadgenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadgenError::Usage(m) => write!(f, "usage: {m}"),
            LoadgenError::Input { path, reason } => write!(f, "{}: {reason}", path.display()),
            LoadgenError::Connect { url, reason } => {
                write!(f, "cannot reach server {url}: {reason}")
            }
            LoadgenError::Server { url, status, text } => {
                write!(f, "server {url} answered {status}: {text}")
            }
            LoadgenError::Protocol(m) => write!(f, "bad server answer: {m}"),
            LoadgenError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            LoadgenError::Csv { path, line, reason } => {
                write!(f, "{}:{line}: {reason}", path.display())
            }
            LoadgenError::Plot(m) => write!(f, "plot: {m}"),
            LoadgenError::RequestErrors(n) => write!(f, "{n} requests failed (--fail-on-error)"),
        }
    }
}

impl std::error::Error for LoadgenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadgenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A model ready to be loaded: server reachable, metadata read, request bodies built.
pub struct Prepared {
    cfg: RunConfig,
    client: client::Client,
    /// One request body per input file (the batch starting at that file).
    bodies: Vec<client::Body>,
    /// The input tensor the requests fill, e.g. `IMAGE`.
    pub input_name: String,
}

/// Checks the server and the model, reads the inputs and builds the request bodies.
pub async fn prepare(cfg: &RunConfig) -> Result<Prepared, LoadgenError> {
    if cfg.inputs.is_empty() {
        return Err(LoadgenError::Usage("no INPUT files".into()));
    }
    if cfg.batch == 0 || cfg.concurrency == 0 {
        return Err(LoadgenError::Usage(
            "--batch and --concurrency must be at least 1".into(),
        ));
    }
    let client = client::Client::new(&cfg.url).await?;
    let meta = client.metadata(&cfg.model).await?;
    let files = inputs::read_inputs(&cfg.inputs)?;
    let (input, bodies) = inputs::build_bodies(&meta, &files, cfg.ideal, cfg.batch)?;
    Ok(Prepared {
        cfg: cfg.clone(),
        client,
        bodies,
        input_name: input,
    })
}

/// Offsets of the arrivals from the start of a run, in seconds.
fn schedule(rate: f64, duration: f64, poisson: bool, seed: u64) -> Vec<f64> {
    let mut out = Vec::new();
    if rate <= 0.0 || duration <= 0.0 {
        return out;
    }
    let mut rng = SplitMix(seed);
    let mut t = 0.0;
    let mut k = 0u64;
    loop {
        let at = if poisson { t } else { k as f64 / rate };
        if at >= duration {
            return out;
        }
        out.push(at);
        k += 1;
        if poisson {
            // 1 - u is in (0, 1], so the logarithm is finite.
            t += -(1.0 - rng.next_f64()).ln() / rate;
        }
    }
}

struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Nearest-rank percentile of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Outcome {
    latency: Duration,
    finished: Instant,
    result: Result<bool, String>,
}

/// Runs one offered rate against a prepared model.
pub async fn run_rate(p: &Prepared, rate: f64) -> RateResult {
    let cfg = &p.cfg;
    let offsets = schedule(rate, cfg.duration.as_secs_f64(), cfg.poisson, cfg.seed);
    let cap = Arc::new(Semaphore::new(cfg.concurrency));
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(offsets.len());
    let mut modeled = false;
    let mut last = None::<Instant>;
    let mut take = |o: Outcome, errors: &mut BTreeMap<String, u64>| {
        last = Some(last.map_or(o.finished, |l: Instant| l.max(o.finished)));
        match o.result {
            Ok(m) => {
                modeled |= m;
                latencies.push(o.latency.as_secs_f64() * 1e3);
            }
            Err(reason) => *errors.entry(reason).or_insert(0) += 1,
        }
    };
    let start = tokio::time::Instant::now();
    for (k, off) in offsets.iter().enumerate() {
        let at = start + Duration::from_secs_f64(*off);
        tokio::time::sleep_until(at).await;
        while let Some(done) = tasks.try_join_next() {
            if let Ok(o) = done {
                take(o, &mut errors);
            }
        }
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            *errors.entry(DROPPED.to_string()).or_insert(0) += 1;
            continue;
        };
        let body = p.bodies[(k * cfg.batch) % p.bodies.len()].clone();
        let client = p.client.clone();
        let model = cfg.model.clone();
        let timeout = cfg.timeout;
        let at = at.into_std();
        tasks.spawn(async move {
            let result = match tokio::time::timeout(timeout, client.infer(&model, body)).await {
                Ok(r) => r,
                Err(_) => Err(TIMEOUT.to_string()),
            };
            drop(permit);
            let finished = Instant::now();
            Outcome {
                latency: finished.saturating_duration_since(at),
                finished,
                result,
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(o) => take(o, &mut errors),
            Err(e) => *errors.entry(format!("internal: {e}")).or_insert(0) += 1,
        }
    }
    let start = start.into_std();
    let window = cfg.duration.as_secs_f64();
    let elapsed = last.map_or(window, |l| {
        l.saturating_duration_since(start).as_secs_f64().max(window)
    });
    latencies.sort_by(f64::total_cmp);
    RateResult {
        offered: rate,
        achieved: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p95_ms: percentile(&latencies, 95.0),
        p99_ms: percentile(&latencies, 99.0),
        ok: latencies.len() as u64,
        errors,
        modeled,
    }
}

/// Runs every rate of `cfg` (async form of [`run`]).
pub async fn run_async(cfg: &RunConfig) -> Result<Vec<RateResult>, LoadgenError> {
    let p = prepare(cfg).await?;
    let mut out = Vec::with_capacity(cfg.rates.len());
    for &rate in &cfg.rates {
        out.push(run_rate(&p, rate).await);
    }
    Ok(out)
}

fn runtime() -> Result<tokio::runtime::Runtime, LoadgenError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadgenError::Io {
            path: PathBuf::from("<tokio runtime>"),
            source: e,
        })
}

/// Runs every rate of `cfg` on a fresh tokio runtime.
pub fn run(cfg: &RunConfig) -> Result<Vec<RateResult>, LoadgenError> {
    runtime()?.block_on(run_async(cfg))
}

/// `preba bench ARGS...`: prints the table (and writes CSV/SVG when asked);
/// returns the exit code. Errors are one line on stderr.
pub fn main(args: &[String]) -> i32 {
    match main_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("preba bench: {e}");
            e.exit_code()
        }
    }
}

fn main_inner(args: &[String]) -> Result<(), LoadgenError> {
    match parse_args(args)? {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Plot { out, csvs } => {
            let runs = csvs
                .iter()
                .map(|c| read_csv(c))
                .collect::<Result<Vec<_>, _>>()?;
            plot_svg(&out, &runs)
        }
        Command::Run(cfg, opts) => {
            let label = opts.label.clone().unwrap_or_else(|| cfg.model.clone());
            let results = runtime()?.block_on(async {
                let p = prepare(&cfg).await?;
                println!(
                    "preba bench: {} model {} input {} ({} files, batch {}, {}, {:.1} s per rate, concurrency {})",
                    cfg.url,
                    cfg.model,
                    p.input_name,
                    cfg.inputs.len(),
                    cfg.batch,
                    if cfg.poisson { "poisson" } else { "constant" },
                    cfg.duration.as_secs_f64(),
                    cfg.concurrency
                );
                print!("{}", report::table_header());
                let mut out = Vec::with_capacity(cfg.rates.len());
                for &rate in &cfg.rates {
                    let r = run_rate(&p, rate).await;
                    print!("{}", report::table_row(&r));
                    out.push(r);
                }
                Ok::<_, LoadgenError>(out)
            })?;
            if let Some(csv) = &opts.csv {
                write_csv(csv, &label, &results)?;
            }
            if let Some(svg) = &opts.plot {
                plot_svg(
                    svg,
                    &[CsvRun {
                        label,
                        results: results.clone(),
                    }],
                )?;
            }
            let failed: u64 = results.iter().map(RateResult::error_count).sum();
            if opts.fail_on_error && failed > 0 {
                return Err(LoadgenError::RequestErrors(failed));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_schedule_counts() {
        assert_eq!(schedule(50.0, 0.6, false, 1).len(), 30);
        assert_eq!(schedule(100.0, 1.0, false, 1).len(), 100);
        assert!(schedule(0.0, 1.0, false, 1).is_empty());
    }

    #[test]
    fn poisson_schedule_mean_rate() {
        let s = schedule(1000.0, 10.0, true, 7);
        let n = s.len() as f64;
        assert!((9400.0..10600.0).contains(&n), "{n}");
        assert!(s.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
