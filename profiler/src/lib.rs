//! preba-profiler: `preba profile`, measuring a model's latency curve on each
//! slice type and writing the `preba-profile-1` table that `preba serve` and
//! `preba sim` read (Batch_knee / Time_knee by the batcher's knee rule).
//!
//! ```text
//! preba profile --model-repository DIR --model M --slices SPEC
//!               [--batches 1,2,4,...] [--lengths 2.5,5,...] [--iterations N] [--warmup N]
//!               [--time-per-batch S] [--max-latency-ms MS] [-o profile.toml]
//!               [--plot OUT.svg] [--onnxruntime PATH] [--profile TABLE]
//! ```
//!
//! One worker process per distinct slice type of SPEC (the `preba worker`
//! of preba-slice, fed from a memfd arena like the server's); per batch size
//! `warmup` untimed batches, then timed ones until `iterations` or
//! `time-per-batch` seconds, whichever first; the batch stops growing once
//! p50 passes `max-latency-ms`. Latency = round trip to the worker (what the
//! server's batcher sees), throughput = batch / mean latency.

mod measure;
mod plot;
mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use preba_batcher::ProfileTable;
use preba_slice::{ModelMeta, SliceError, SliceSpec, WorkerClient, WorkerSpec, parse_slices};

pub use plot::{plot_svg, render_svg};
pub use table::{MeasuredEntry, MeasuredPoint, knee, knee_rule, render};

/// Audio length bucket width (s), as the batcher's.
pub const BUCKET_WIDTH_S: f64 = 2.5;
/// Audio frames per second (10 ms hop).
pub const FRAMES_PER_S: f64 = 100.0;

pub const USAGE: &str = "usage: preba profile --model-repository DIR --model M --slices SPEC [--batches 1,2,4,...] [--lengths 2.5,5,...] [--iterations N] [--warmup N] [--time-per-batch S] [--max-latency-ms MS] [-o profile.toml] [--plot OUT.svg] [--onnxruntime PATH] [--profile TABLE]";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Bad command line: exit 2.
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Slice(#[from] SliceError),
    #[error("{0}")]
    Other(String),
}

/// Everything `preba profile` is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileOptions {
    pub model_repository: PathBuf,
    pub model: String,
    /// `--slices` text (`cpu:1`, `modeled:a100-1g.5gb*7`, ...).
    pub slices: String,
    /// Increasing batch sizes.
    pub batches: Vec<u32>,
    /// Audio lengths in s, each the upper edge of its 2.5 s bucket.
    pub lengths: Vec<f64>,
    pub iterations: u32,
    pub warmup: u32,
    /// Most timed seconds per batch size (at least one batch is timed).
    pub time_per_batch: Duration,
    /// Stop growing the batch once its p50 is above this.
    pub max_latency_ms: f64,
    pub output: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub onnxruntime: Option<PathBuf>,
    /// Table the modeled slices take their latencies from (default: builtin).
    pub profile: Option<PathBuf>,
}

impl ProfileOptions {
    /// Defaults for everything but the three required flags.
    pub fn new(model_repository: PathBuf, model: &str, slices: &str) -> ProfileOptions {
        ProfileOptions {
            model_repository,
            model: model.into(),
            slices: slices.into(),
            batches: vec![1, 2, 4, 8, 16, 32, 64, 128, 256],
            lengths: vec![2.5, 5.0, 7.5, 10.0, 12.5, 15.0],
            iterations: 20,
            warmup: 2,
            time_per_batch: Duration::from_secs(2),
            max_latency_ms: 2000.0,
            output: None,
            plot: None,
            onnxruntime: None,
            profile: None,
        }
    }
}

fn usage(msg: impl Into<String>) -> ProfileError {
    ProfileError::Usage(msg.into())
}

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>, ProfileError> {
    v.split(',')
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| usage(format!("{flag}: {s:?} is not a number")))
        })
        .collect()
}

/// Parses the arguments after `profile`.
pub fn parse_args(args: &[String]) -> Result<ProfileOptions, ProfileError> {
    let mut kv: BTreeMap<&'static str, String> = BTreeMap::new();
    const FLAGS: [&str; 14] = [
        "--model-repository",
        "--model",
        "--slices",
        "--batches",
        "--lengths",
        "--iterations",
        "--warmup",
        "--time-per-batch",
        "--max-latency-ms",
        "-o",
        "--output",
        "--plot",
        "--onnxruntime",
        "--profile",
    ];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            return Err(usage("help requested"));
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let Some(&flag) = FLAGS.iter().find(|f| **f == name) else {
            return Err(usage(format!("unknown argument {a:?}")));
        };
        let flag = if flag == "--output" { "-o" } else { flag };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| usage(format!("{flag} needs a value")))?,
        };
        if kv.insert(flag, value).is_some() {
            return Err(usage(format!("{flag} given twice")));
        }
    }
    let need = |f: &str| {
        kv.get(f)
            .cloned()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| usage(format!("{f} is required")))
    };
    let mut o = ProfileOptions::new(
        PathBuf::from(need("--model-repository")?),
        &need("--model")?,
        &need("--slices")?,
    );
    parse_slices(&o.slices).map_err(|e| usage(e.to_string()))?;
    if let Some(v) = kv.get("--batches") {
        let b: Vec<u32> = list("--batches", v)?;
        if b.contains(&0) {
            return Err(usage("--batches: batch sizes must be at least 1"));
        }
        if b.windows(2).any(|w| w[1] <= w[0]) {
            return Err(usage("--batches: batch sizes must increase"));
        }
        o.batches = b;
    }
    if let Some(v) = kv.get("--lengths") {
        let l: Vec<f64> = list("--lengths", v)?;
        if l.iter()
            .any(|x| !(x.is_finite() && *x > 0.0 && *x <= 600.0))
        {
            return Err(usage("--lengths: lengths are seconds in (0, 600]"));
        }
        let mut buckets: Vec<u32> = l.iter().map(|&x| bucket_of(x)).collect();
        buckets.dedup();
        if buckets.len() != l.len() || buckets.windows(2).any(|w| w[1] <= w[0]) {
            return Err(usage(format!(
                "--lengths: lengths must increase and fall in distinct {BUCKET_WIDTH_S} s buckets"
            )));
        }
        o.lengths = l;
    }
    if let Some(v) = kv.get("--iterations") {
        o.iterations = v
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| usage(format!("--iterations: {v:?} is not a count >= 1")))?;
    }
    if let Some(v) = kv.get("--warmup") {
        o.warmup = v
            .parse()
            .map_err(|_| usage(format!("--warmup: {v:?} is not a count")))?;
    }
    if let Some(v) = kv.get("--time-per-batch") {
        let s: f64 = v
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
            .ok_or_else(|| {
                usage(format!(
                    "--time-per-batch: {v:?} is not seconds in (0, 3600]"
                ))
            })?;
        o.time_per_batch = Duration::from_secs_f64(s);
    }
    if let Some(v) = kv.get("--max-latency-ms") {
        o.max_latency_ms = v
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s > 0.0)
            .ok_or_else(|| usage(format!("--max-latency-ms: {v:?} is not a positive number")))?;
    }
    o.output = kv.get("-o").map(PathBuf::from);
    o.plot = kv.get("--plot").map(PathBuf::from);
    o.onnxruntime = kv.get("--onnxruntime").map(PathBuf::from);
    o.profile = kv.get("--profile").map(PathBuf::from);
    Ok(o)
}

/// Bucket index of an audio length (s), the length being the bucket's upper
/// edge: 2.5 -> 0, 5 -> 1, 3 -> 1.
pub fn bucket_of(length_s: f64) -> u32 {
    ((length_s / BUCKET_WIDTH_S).ceil() as u32).saturating_sub(1)
}

/// The model's kind and the name its table entries go under.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub onnx: PathBuf,
    pub audio: bool,
    /// `[batching] profile_model` of config.toml, else the model's name.
    pub profile_name: String,
}

#[derive(serde::Deserialize)]
struct Config {
    kind: Option<String>,
    #[serde(default)]
    batching: Batching,
}

#[derive(serde::Deserialize, Default)]
struct Batching {
    profile_model: Option<String>,
}

/// Finds DIR/M/1/model.onnx and reads `kind` / `profile_model` from
/// DIR/M/config.toml (absent: image, unless the model has an INT64 input,
/// decided later).
pub fn model_info(repo: &Path, model: &str) -> Result<(ModelInfo, Option<bool>), ProfileError> {
    let dir = repo.join(model);
    let onnx = dir.join("1/model.onnx");
    if model.contains('/') || !onnx.is_file() {
        return Err(ProfileError::Other(format!(
            "model {model:?}: not in the repository ({} does not exist)",
            onnx.display()
        )));
    }
    let cfg_path = dir.join("config.toml");
    let (kind, pname) = match std::fs::read_to_string(&cfg_path) {
        Ok(text) => {
            let c: Config = toml::from_str(&text).map_err(|e| {
                ProfileError::Other(format!("model {model:?}: {}: {e}", cfg_path.display()))
            })?;
            let kind = match c.kind.as_deref() {
                Some("image") => Some(false),
                Some("audio") => Some(true),
                None => None,
                Some(k) => {
                    return Err(ProfileError::Other(format!(
                        "model {model:?}: {}: kind {k:?} is not \"image\" or \"audio\"",
                        cfg_path.display()
                    )));
                }
            };
            (kind, c.batching.profile_model)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
        Err(e) => {
            return Err(ProfileError::Io {
                what: cfg_path.display().to_string(),
                source: e,
            });
        }
    };
    Ok((
        ModelInfo {
            onnx,
            audio: kind.unwrap_or(false),
            profile_name: pname.unwrap_or_else(|| model.to_string()),
        },
        kind,
    ))
}

/// The host's CPU model from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "an unknown CPU".into())
}

/// Today's UTC date, YYYY-MM-DD.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What `run` did, besides writing.
#[derive(Clone, Debug)]
pub struct Report {
    pub entries: Vec<MeasuredEntry>,
    /// The table as written (merged when `-o` existed).
    pub table: String,
    /// Notes printed on stderr (stopped early, skipped batches).
    pub notes: Vec<String>,
}

/// Profiles as `opts` says, with `worker_exe` as the worker executable
/// (`worker_exe worker ARGS`; `preba` itself in the product). Writes `-o`
/// (or returns the table for stdout) and the plot.
pub fn run(opts: &ProfileOptions, worker_exe: &Path) -> Result<Report, ProfileError> {
    let (info, kind) = model_info(&opts.model_repository, &opts.model)?;
    let slices = parse_slices(&opts.slices).map_err(|e| usage(e.to_string()))?;
    let mut types: Vec<SliceSpec> = Vec::new();
    for s in slices {
        if !types.iter().any(|t| t.slice_type() == s.slice_type()) {
            types.push(s);
        }
    }
    let source_table = match &opts.profile {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ProfileError::Io {
                what: p.display().to_string(),
                source: e,
            })?;
            ProfileTable::parse(&text)
                .map_err(|e| ProfileError::Other(format!("{}: {e}", p.display())))?
        }
        None => ProfileTable::builtin(),
    };
    // The existing output is checked before minutes of measuring.
    let existing = match &opts.output {
        Some(p) if p.exists() => {
            let text = std::fs::read_to_string(p).map_err(|e| ProfileError::Io {
                what: p.display().to_string(),
                source: e,
            })?;
            ProfileTable::parse(&text).map_err(|e| {
                ProfileError::Other(format!(
                    "{} exists and is not a profile table: {e}",
                    p.display()
                ))
            })?;
            Some(text)
        }
        _ => None,
    };
    let ort_name = opts
        .onnxruntime
        .clone()
        .or_else(|| preba_slice::find_onnxruntime().ok())
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "onnxruntime".into());

    let mut entries = Vec::new();
    let mut notes = Vec::new();
    let max_batch = *opts.batches.last().unwrap_or(&1);
    // Audio buckets are only known once the model's metadata is; the first
    // worker tells (a modeled one is respawned per bucket).
    let mut meta: Option<ModelMeta> = None;
    let mut audio = info.audio;
    for ty in &types {
        let stype = ty.slice_type();
        let mut bucket_list: Vec<Option<f64>> = if meta.is_some() && audio {
            opts.lengths.iter().map(|&l| Some(l)).collect()
        } else {
            vec![None]
        };
        let mut bi = 0;
        let mut worker: Option<(WorkerClient, Option<u32>)> = None;
        let mut arena: Option<measure::Arena> = None;
        while bi < bucket_list.len() {
            let length = bucket_list[bi];
            let bucket = length.map(bucket_of);
            let modeled = matches!(ty, SliceSpec::Modeled { .. });
            let latency = if modeled {
                let e = source_table
                    .find(&info.profile_name, &stype, bucket)
                    .or_else(|| source_table.find(&info.profile_name, &stype, None))
                    .or_else(|| source_table.find(&info.profile_name, &stype, Some(0)))
                    .ok_or_else(|| {
                        ProfileError::Other(format!(
                            "model {:?}: modeled slice {stype}: no profile for {} on {stype}{} (set batching.profile_model in config.toml or give --profile)",
                            opts.model,
                            info.profile_name,
                            bucket.map(|b| format!(" bucket {b}")).unwrap_or_default()
                        ))
                    })?;
                e.points()
                    .iter()
                    .map(|p| (p.batch, (p.p50_ms * 1e6) as u64))
                    .collect()
            } else {
                Vec::new()
            };
            if worker
                .as_ref()
                .is_some_and(|(_, b)| modeled && *b != bucket)
            {
                worker = None;
            }
            if arena.is_none() {
                // Size from the largest shape once the metadata is known; the
                // first spawn only needs a small arena to say hello.
                let len = match &meta {
                    Some(m) => {
                        let frames = opts.lengths.iter().fold(0.0f64, |a, &b| a.max(b));
                        let frames = (frames * FRAMES_PER_S).round() as i64;
                        let s = measure::Shape {
                            batch: max_batch,
                            frames: audio.then_some(frames.max(1)),
                        };
                        let (i, o) = measure::bytes_needed(m, s)?;
                        i + o
                    }
                    None => 1 << 20,
                };
                arena = Some(measure::Arena::new(len)?);
            }
            let a = arena.as_ref().expect("set above");
            if worker.is_none() {
                let spec = WorkerSpec {
                    name: format!("{}/{stype}", opts.model),
                    slice: ty.clone(),
                    model: info.onnx.clone(),
                    arena: a.path(),
                    arena_len: a.len,
                    onnxruntime: opts.onnxruntime.clone(),
                    modeled_latency_ns: latency,
                    modeled_bucket_latency_ns: Vec::new(),
                };
                let (client, m) = WorkerClient::spawn(worker_exe, &spec, Duration::from_secs(120))?;
                worker = Some((client, bucket));
                if meta.is_none() {
                    audio = kind.unwrap_or_else(|| {
                        m.inputs.iter().any(|t| t.dtype == preba_slice::Dtype::I64)
                    });
                    meta = Some(m);
                    // Now sized for real: a new arena, a new worker on it.
                    arena = None;
                    worker = None;
                    if audio {
                        bucket_list = opts.lengths.iter().map(|&l| Some(l)).collect();
                    }
                    continue;
                }
            }
            let m = meta.as_ref().expect("set with the first worker");
            let (client, _) = worker.as_mut().expect("spawned above");
            let frames = length.map(|l| (l * FRAMES_PER_S).round().max(1.0) as i64);
            let mut points = Vec::new();
            let mut id = 0u64;
            let budget = measure::Budget {
                warmup: opts.warmup,
                iterations: opts.iterations,
                time: opts.time_per_batch,
                timeout: Duration::from_secs_f64(opts.max_latency_ms * 10.0 / 1e3 + 60.0),
            };
            let label = match bucket {
                Some(b) => format!(
                    "{} on {stype} bucket {b} ({} s)",
                    info.profile_name,
                    length.unwrap_or(0.0)
                ),
                None => format!("{} on {stype}", info.profile_name),
            };
            let mut worker_died = false;
            for &b in &opts.batches {
                let s = measure::Shape { batch: b, frames };
                let (in_bytes, _) = measure::bytes_needed(m, s)?;
                let out_off = in_bytes.next_multiple_of(4096);
                let mut req = measure::prepare(a, m, s, out_off)?;
                match measure::time_batches(client, &mut req, b, budget, &mut id) {
                    Ok(p) => {
                        eprintln!(
                            "preba profile: {label}: batch {b}: p50 {:.3} ms, p95 {:.3} ms, {:.1}/s ({} batches)",
                            p.p50_ms, p.p95_ms, p.throughput, p.samples
                        );
                        let over = p.p50_ms > opts.max_latency_ms;
                        points.push(p);
                        if over {
                            let n = format!(
                                "{label}: stopped after batch {b}: p50 is over --max-latency-ms {}",
                                opts.max_latency_ms
                            );
                            eprintln!("preba profile: {n}");
                            notes.push(n);
                            break;
                        }
                    }
                    Err(e) => {
                        let n = format!("{label}: stopped at batch {b}: {e}");
                        eprintln!("preba profile: {n}");
                        notes.push(n);
                        worker_died = matches!(
                            e,
                            ProfileError::Slice(
                                SliceError::Died { .. } | SliceError::Timeout { .. }
                            )
                        );
                        break;
                    }
                }
            }
            if worker_died {
                worker = None;
            }
            if points.is_empty() {
                return Err(ProfileError::Other(format!(
                    "{label}: no batch size could be measured"
                )));
            }
            let (batch_knee, time_knee_ms) = knee(&table::rounded(&points))?;
            eprintln!(
                "preba profile: {label}: Batch_knee {batch_knee}, Time_knee {time_knee_ms:.3} ms"
            );
            let runtime = match ty {
                SliceSpec::Cpu { threads } => format!(
                    "ONNX Runtime CPU EP ({ort_name}), {threads} intra-op thread{}",
                    if *threads == 1 { "" } else { "s" }
                ),
                SliceSpec::Cuda { device } => {
                    format!("ONNX Runtime CUDA EP ({ort_name}) on {device}")
                }
                SliceSpec::Modeled { slice_type } => format!(
                    "modeled slice (sleeps the p50 of the {} entry for {} on {slice_type})",
                    opts.profile
                        .as_ref()
                        .map_or("builtin".to_string(), |p| p.display().to_string()),
                    info.profile_name
                ),
            };
            let source = format!(
                "measured by preba profile on {}, {}, {runtime}; up to {} timed batches ({} s cap) after {} warm-up per batch size, random input{}; latency = round trip to the worker process",
                cpu_model(),
                today(),
                opts.iterations,
                opts.time_per_batch.as_secs_f64(),
                opts.warmup,
                length
                    .map(|l| format!(" of {l} s ({} frames)", frames.unwrap_or(0)))
                    .unwrap_or_default()
            );
            entries.push(MeasuredEntry {
                model: info.profile_name.clone(),
                slice: stype.clone(),
                bucket,
                source,
                points,
                batch_knee,
                time_knee_ms,
            });
            bi += 1;
        }
    }
    let table = render(existing.as_deref(), &entries)?;
    if let Some(p) = &opts.output {
        let tmp = p.with_extension("toml.tmp");
        std::fs::write(&tmp, &table)
            .and_then(|()| std::fs::rename(&tmp, p))
            .map_err(|e| ProfileError::Io {
                what: p.display().to_string(),
                source: e,
            })?;
    }
    if let Some(p) = &opts.plot {
        plot_svg(p, &entries)?;
    }
    Ok(Report {
        entries,
        table,
        notes,
    })
}

/// `preba profile ARGS` with an explicit worker executable. Exit 0 done, 2
/// usage, 1 anything else (one line naming the cause on stderr).
pub fn main_with_worker(args: &[String], worker_exe: &Path) -> i32 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("preba profile: {e}\n{USAGE}");
            return 2;
        }
    };
    match run(&opts, worker_exe) {
        Ok(r) => {
            eprintln!("preba profile: knee rule: {}", knee_rule());
            if opts.output.is_none() {
                print!("{}", r.table);
            } else if let Some(p) = &opts.output {
                eprintln!("preba profile: wrote {}", p.display());
            }
            if let Some(p) = &opts.plot {
                eprintln!("preba profile: plot at {}", p.display());
            }
            0
        }
        Err(ProfileError::Usage(m)) => {
            eprintln!("preba profile: {m}\n{USAGE}");
            2
        }
        Err(e) => {
            eprintln!("preba profile: {e}");
            1
        }
    }
}

/// `preba profile ARGS` (the arguments after "profile"); the workers are this
/// executable (`preba worker`).
pub fn main(args: &[String]) -> i32 {
    match std::env::current_exe() {
        Ok(exe) => main_with_worker(args, &exe),
        Err(e) => {
            eprintln!("preba profile: cannot find the preba executable: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn args() {
        let o = parse_args(&s(&[
            "--model-repository",
            "/r",
            "--model=m",
            "--slices",
            "cpu:2x2",
            "--batches",
            "1,2,8",
            "--lengths",
            "2.5,5",
            "-o",
            "t.toml",
        ]))
        .unwrap();
        assert_eq!(o.batches, vec![1, 2, 8]);
        assert_eq!(o.lengths, vec![2.5, 5.0]);
        assert_eq!(o.output, Some(PathBuf::from("t.toml")));
        assert_eq!(o.iterations, 20);
        for bad in [
            vec!["--model", "m", "--slices", "cpu:1"],
            vec![
                "--model-repository",
                "r",
                "--model",
                "m",
                "--slices",
                "gpu:1",
            ],
            vec![
                "--model-repository",
                "r",
                "--model",
                "m",
                "--slices",
                "cpu:1",
                "--batches",
                "4,2",
            ],
            vec![
                "--model-repository",
                "r",
                "--model",
                "m",
                "--slices",
                "cpu:1",
                "--batches",
                "0",
            ],
            vec![
                "--model-repository",
                "r",
                "--model",
                "m",
                "--slices",
                "cpu:1",
                "--lengths",
                "2,2.4",
            ],
            vec![
                "--model-repository",
                "r",
                "--model",
                "m",
                "--slices",
                "cpu:1",
                "--iterations",
                "0",
            ],
            vec![
                "--model-repository",
                "r",
                "--model",
                "m",
                "--slices",
                "cpu:1",
                "--bogus",
            ],
            vec!["--model-repository", "r", "--model", "m", "--slices"],
        ] {
            assert!(
                matches!(parse_args(&s(&bad)), Err(ProfileError::Usage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn buckets() {
        assert_eq!(bucket_of(2.5), 0);
        assert_eq!(bucket_of(1.0), 0);
        assert_eq!(bucket_of(5.0), 1);
        assert_eq!(bucket_of(3.0), 1);
        assert_eq!(bucket_of(15.0), 5);
    }

    #[test]
    fn date_looks_like_a_date() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
