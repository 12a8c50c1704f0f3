//! The scenario file (TOML): every assumption of a simulation, with its source.
//! The format is documented in sim/README.md; `Scenario::parse` validates it
//! and names the file and field of every problem.

use std::path::{Path, PathBuf};

use preba_batcher::ProfileTable;
use serde::Deserialize;

use crate::Error;
use crate::rng::Rng;

/// A distribution of request sizes (pixels for images, seconds for audio),
/// truncated to `[min, max]` by redrawing.
#[derive(Clone, Debug, PartialEq)]
pub enum Dist {
    Fixed(f64),
    Uniform {
        min: f64,
        max: f64,
    },
    /// `exp(N(ln median, sigma^2))`.
    Lognormal {
        median: f64,
        sigma: f64,
        min: f64,
        max: f64,
    },
    /// Gamma matched to `mean` and `std` (shape = (mean/std)^2).
    Gamma {
        mean: f64,
        std: f64,
        min: f64,
        max: f64,
    },
    Exponential {
        mean: f64,
        min: f64,
        max: f64,
    },
}

impl Dist {
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        let (min, max) = match *self {
            Dist::Fixed(v) => return v,
            Dist::Uniform { min, max } => return min + (max - min) * rng.uniform(),
            Dist::Lognormal { min, max, .. }
            | Dist::Gamma { min, max, .. }
            | Dist::Exponential { min, max, .. } => (min, max),
        };
        let mut draw = || match *self {
            Dist::Lognormal { median, sigma, .. } => median * (sigma * rng.normal()).exp(),
            Dist::Gamma { mean, std, .. } => {
                let shape = (mean / std).powi(2);
                rng.gamma(shape) * mean / shape
            }
            Dist::Exponential { mean, .. } => rng.exp(mean),
            Dist::Fixed(_) | Dist::Uniform { .. } => unreachable!(),
        };
        for _ in 0..1000 {
            let x = draw();
            if (min..=max).contains(&x) {
                return x;
            }
        }
        draw().clamp(min, max)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    Image {
        model: String,
        /// Source pixels (width x height).
        pixels: Dist,
        /// Component samples per pixel (4:2:0 = 1.5).
        samples_per_px: f64,
        crop: u32,
    },
    Audio {
        model: String,
        /// Utterance length, seconds.
        duration: Dist,
        sample_rate: u32,
        n_fft: u32,
        hop: u32,
        n_mels: u32,
    },
}

impl Workload {
    pub fn model(&self) -> &str {
        match self {
            Workload::Image { model, .. } | Workload::Audio { model, .. } => model,
        }
    }
    pub fn is_audio(&self) -> bool {
        matches!(self, Workload::Audio { .. })
    }
}

/// Deterministic service times, exponential ones with the same mean (for
/// queueing-theory checks), or gamma ones with the same mean and a given
/// coefficient of variation (`"gamma:CV"`): a real core's service times
/// spread (preemption by the server's other threads, cache state), and the
/// spread, not the mean, is what makes p95 grow with load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Service {
    Deterministic,
    Exponential,
    Gamma { cv: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JpegCore {
    Vitis,
    CoreJpeg,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Preprocess {
    /// Requests reach the batcher already preprocessed (the paper's "ideal").
    None,
    /// N cores as an N-server FIFO queue; a request of size `x` takes
    /// `x / reference / per_core_rate` seconds.
    Cpu {
        cores: usize,
        per_core_rate: f64,
        reference: f64,
        service: Service,
    },
    /// The card: image CUs, or audio Mel CUs followed by normalize CUs, with
    /// service times from the card's cycle model (`card` module).
    Card {
        image_cus: usize,
        audio_cus: usize,
        norm_cus: usize,
        cu_hz: f64,
        jpeg: JpegCore,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct PolicySpec {
    /// "preba" (or whatever the batcher crate offers; see `engine::build_policy`).
    pub kind: String,
    /// Overrides of Batch_max per bucket.
    pub batch_max: Option<Vec<u32>>,
    /// Override of Time_queue.
    pub time_queue_ms: Option<f64>,
    pub max_queue: usize,
    /// Triton: max_batch_size, preferred sizes, max queue delay.
    pub max_batch_size: Option<u32>,
    pub preferred_batch_size: Option<Vec<u32>>,
    pub max_queue_delay_us: Option<f64>,
    /// Deadline policy / per-request deadline: arrival + sla.
    pub sla_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SliceGroup {
    /// Slice type as named in the profile table, e.g. `a100-1g.5gb`.
    pub slice_type: String,
    pub count: usize,
    pub idle_w: f64,
    pub busy_w: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Power {
    pub cpu_idle_w: f64,
    pub cpu_core_busy_w: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// Where the scenario came from (file path, or a label).
    pub origin: String,
    pub seed: u64,
    /// Requests simulated per rate, warm-up included.
    pub requests: usize,
    /// The first `warmup` requests of each rate are simulated but not measured.
    pub warmup: usize,
    /// Offered loads, requests/s (Poisson arrivals).
    pub rates: Vec<f64>,
    pub workload: Workload,
    pub preprocess: Preprocess,
    /// Fixed delay between preprocessing and the batcher (host / DMA), ns.
    pub overhead_ns: u64,
    pub policy: PolicySpec,
    pub slices: Vec<SliceGroup>,
    /// How a batch's latency is drawn from its profile entry.
    pub slice_latency: Service,
    pub profile_path: Option<PathBuf>,
    pub table: ProfileTable,
    pub power: Power,
    /// Every `source` string of the file, by section.
    pub sources: Vec<(String, String)>,
}

// ---- raw TOML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Option<String>,
    source: Option<String>,
    seed: Option<u64>,
    requests: Option<usize>,
    warmup: Option<usize>,
    profile: Option<String>,
    arrivals: Option<RawArrivals>,
    workload: Option<RawWorkload>,
    preprocess: Option<RawPreprocess>,
    policy: Option<RawPolicy>,
    slices: Option<RawSlices>,
    power: Option<RawPower>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArrivals {
    process: Option<String>,
    rates: Option<Vec<f64>>,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDist {
    distribution: Option<String>,
    value: Option<f64>,
    median: Option<f64>,
    sigma: Option<f64>,
    mean: Option<f64>,
    std: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    kind: Option<String>,
    model: Option<String>,
    source: Option<String>,
    pixels: Option<RawDist>,
    samples_per_px: Option<f64>,
    crop: Option<u32>,
    duration: Option<RawDist>,
    sample_rate: Option<u32>,
    n_fft: Option<u32>,
    hop: Option<u32>,
    n_mels: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPreprocess {
    kind: Option<String>,
    source: Option<String>,
    overhead_us: Option<f64>,
    cores: Option<usize>,
    per_core_rate: Option<f64>,
    reference: Option<f64>,
    service: Option<String>,
    image_cus: Option<usize>,
    audio_cus: Option<usize>,
    norm_cus: Option<usize>,
    cu_mhz: Option<f64>,
    jpeg: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    kind: Option<String>,
    source: Option<String>,
    batch_max: Option<Vec<u32>>,
    time_queue_ms: Option<f64>,
    max_queue: Option<usize>,
    max_batch_size: Option<u32>,
    preferred_batch_size: Option<Vec<u32>>,
    max_queue_delay_us: Option<f64>,
    sla_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlices {
    latency: Option<String>,
    source: Option<String>,
    group: Option<Vec<RawGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(rename = "type")]
    slice_type: Option<String>,
    count: Option<usize>,
    idle_w: Option<f64>,
    busy_w: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPower {
    cpu_idle_w: Option<f64>,
    cpu_core_busy_w: Option<f64>,
    source: Option<String>,
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: &str, problem: impl Into<String>) -> Error {
        Error::Scenario {
            file: self.file.to_string(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }
    fn need<T>(&self, field: &str, v: Option<T>) -> Result<T, Error> {
        v.ok_or_else(|| self.err(field, "missing"))
    }
    fn pos(&self, field: &str, v: Option<f64>) -> Result<f64, Error> {
        let x = self.need(field, v)?;
        if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err(self.err(field, format!("{x} is not a positive number")))
        }
    }
    fn nonneg(&self, field: &str, v: f64) -> Result<f64, Error> {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(self.err(field, format!("{v} is not a number >= 0")))
        }
    }
    fn service(&self, field: &str, v: Option<String>) -> Result<Service, Error> {
        match v.as_deref() {
            None | Some("deterministic") | Some("p50") => Ok(Service::Deterministic),
            Some("exponential") => Ok(Service::Exponential),
            Some(o) if o.starts_with("gamma:") => match o["gamma:".len()..].parse::<f64>() {
                Ok(cv) if cv.is_finite() && (0.0..=10.0).contains(&cv) => Ok(Service::Gamma { cv }),
                _ => Err(self.err(
                    field,
                    format!("{o:?}: expected \"gamma:CV\" with 0 <= CV <= 10"),
                )),
            },
            Some(o) => Err(self.err(
                field,
                format!(
                    "{o:?}: expected \"deterministic\" (\"p50\"), \"exponential\" or \"gamma:CV\""
                ),
            )),
        }
    }

    fn dist(&self, field: &str, d: Option<RawDist>) -> Result<Dist, Error> {
        let d = self.need(field, d)?;
        let f = |k: &str| format!("{field}.{k}");
        let kind = self.need(&f("distribution"), d.distribution)?;
        let min = self.nonneg(&f("min"), d.min.unwrap_or(0.0))?;
        let max = d.max.unwrap_or(f64::INFINITY);
        if max.is_nan() || max <= min {
            return Err(self.err(&f("max"), format!("{max} is not above min {min}")));
        }
        let dist = match kind.as_str() {
            "fixed" => Dist::Fixed(self.pos(&f("value"), d.value)?),
            "uniform" => {
                if !max.is_finite() {
                    return Err(self.err(&f("max"), "missing (uniform needs min and max)"));
                }
                Dist::Uniform { min, max }
            }
            "lognormal" => Dist::Lognormal {
                median: self.pos(&f("median"), d.median)?,
                sigma: self.nonneg(&f("sigma"), self.need(&f("sigma"), d.sigma)?)?,
                min,
                max,
            },
            "gamma" => Dist::Gamma {
                mean: self.pos(&f("mean"), d.mean)?,
                std: self.pos(&f("std"), d.std)?,
                min,
                max,
            },
            "exponential" => Dist::Exponential {
                mean: self.pos(&f("mean"), d.mean)?,
                min,
                max,
            },
            o => {
                return Err(self.err(
                    &f("distribution"),
                    format!("{o:?}: expected fixed, uniform, lognormal, gamma or exponential"),
                ));
            }
        };
        let _ = d.source;
        Ok(dist)
    }
}

impl Scenario {
    /// Reads and validates the scenario at `path`; a relative `profile` path
    /// is taken relative to the scenario's directory.
    pub fn load(path: &Path) -> Result<Scenario, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        Scenario::parse(&text, &path.display().to_string(), path.parent())
    }

    /// Validates scenario `text`; `file` names it in errors, `dir` resolves a
    /// relative `profile` path (the current directory when `None`).
    pub fn parse(text: &str, file: &str, dir: Option<&Path>) -> Result<Scenario, Error> {
        let cx = Ctx { file };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let field = msg
                .split('`')
                .nth(1)
                .filter(|_| msg.contains("field"))
                .unwrap_or("(toml)");
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            cx.err(field, format!("{msg}{at}"))
        })?;
        let mut sources = Vec::new();
        let mut src = |section: &str, s: &Option<String>| {
            if let Some(s) = s {
                sources.push((section.to_string(), s.clone()));
            }
        };
        src("scenario", &raw.source);

        let requests = cx.need("requests", raw.requests)?;
        if requests == 0 {
            return Err(cx.err("requests", "must be at least 1"));
        }
        let warmup = raw.warmup.unwrap_or(0);
        if warmup >= requests {
            return Err(cx.err(
                "warmup",
                format!("{warmup} leaves nothing of {requests} requests to measure"),
            ));
        }

        let arr = cx.need("arrivals", raw.arrivals)?;
        src("arrivals", &arr.source);
        match arr.process.as_deref() {
            None | Some("poisson") => {}
            Some(o) => return Err(cx.err("arrivals.process", format!("{o:?}: only \"poisson\""))),
        }
        let rates = cx.need("arrivals.rates", arr.rates)?;
        if rates.is_empty() {
            return Err(cx.err("arrivals.rates", "empty"));
        }
        for (i, &r) in rates.iter().enumerate() {
            cx.pos(&format!("arrivals.rates[{i}]"), Some(r))?;
        }

        let w = cx.need("workload", raw.workload)?;
        src("workload", &w.source);
        for (k, d) in [
            ("workload.pixels", &w.pixels),
            ("workload.duration", &w.duration),
        ] {
            if let Some(d) = d {
                src(k, &d.source);
            }
        }
        let model = cx.need("workload.model", w.model)?;
        let workload = match cx.need("workload.kind", w.kind)?.as_str() {
            "image" => Workload::Image {
                model,
                pixels: cx.dist("workload.pixels", w.pixels)?,
                samples_per_px: cx
                    .pos("workload.samples_per_px", w.samples_per_px.or(Some(1.5)))?,
                crop: w.crop.unwrap_or(224),
            },
            "audio" => {
                let pos_u = |f: &str, v: Option<u32>, d: u32| {
                    let v = v.unwrap_or(d);
                    if v == 0 {
                        Err(cx.err(f, "must be at least 1"))
                    } else {
                        Ok(v)
                    }
                };
                Workload::Audio {
                    model,
                    duration: cx.dist("workload.duration", w.duration)?,
                    sample_rate: pos_u("workload.sample_rate", w.sample_rate, 16_000)?,
                    n_fft: pos_u("workload.n_fft", w.n_fft, 512)?,
                    hop: pos_u("workload.hop", w.hop, 160)?,
                    n_mels: pos_u("workload.n_mels", w.n_mels, 80)?,
                }
            }
            o => return Err(cx.err("workload.kind", format!("{o:?}: expected image or audio"))),
        };

        let p = cx.need("preprocess", raw.preprocess)?;
        src("preprocess", &p.source);
        let overhead_us = cx.nonneg("preprocess.overhead_us", p.overhead_us.unwrap_or(0.0))?;
        let count = |f: &str, v: Option<usize>| -> Result<usize, Error> {
            match cx.need(f, v)? {
                0 => Err(cx.err(f, "must be at least 1")),
                n => Ok(n),
            }
        };
        let preprocess = match cx.need("preprocess.kind", p.kind)?.as_str() {
            "none" => Preprocess::None,
            "cpu" => Preprocess::Cpu {
                cores: count("preprocess.cores", p.cores)?,
                per_core_rate: cx.pos("preprocess.per_core_rate", p.per_core_rate)?,
                reference: cx.pos("preprocess.reference", p.reference)?,
                service: cx.service("preprocess.service", p.service)?,
            },
            "card" => {
                let audio = workload.is_audio();
                Preprocess::Card {
                    image_cus: if audio {
                        p.image_cus.unwrap_or(0)
                    } else {
                        count("preprocess.image_cus", p.image_cus)?
                    },
                    audio_cus: if audio {
                        count("preprocess.audio_cus", p.audio_cus)?
                    } else {
                        p.audio_cus.unwrap_or(0)
                    },
                    norm_cus: if audio {
                        count("preprocess.norm_cus", p.norm_cus)?
                    } else {
                        p.norm_cus.unwrap_or(0)
                    },
                    cu_hz: cx.pos("preprocess.cu_mhz", p.cu_mhz)? * 1e6,
                    jpeg: match p.jpeg.as_deref() {
                        None | Some("vitis") => JpegCore::Vitis,
                        Some("core_jpeg") => JpegCore::CoreJpeg,
                        Some(o) => {
                            return Err(cx.err(
                                "preprocess.jpeg",
                                format!("{o:?}: expected \"vitis\" or \"core_jpeg\""),
                            ));
                        }
                    },
                }
            }
            o => {
                return Err(cx.err(
                    "preprocess.kind",
                    format!("{o:?}: expected none, cpu or card"),
                ));
            }
        };

        let pol = cx.need("policy", raw.policy)?;
        src("policy", &pol.source);
        let policy = PolicySpec {
            kind: cx.need("policy.kind", pol.kind)?,
            batch_max: pol.batch_max,
            time_queue_ms: pol
                .time_queue_ms
                .map(|t| cx.nonneg("policy.time_queue_ms", t))
                .transpose()?,
            max_queue: match pol.max_queue.unwrap_or(1 << 20) {
                0 => return Err(cx.err("policy.max_queue", "must be at least 1")),
                n => n,
            },
            max_batch_size: pol.max_batch_size,
            preferred_batch_size: pol.preferred_batch_size,
            max_queue_delay_us: pol
                .max_queue_delay_us
                .map(|t| cx.nonneg("policy.max_queue_delay_us", t))
                .transpose()?,
            sla_ms: pol
                .sla_ms
                .map(|t| cx.pos("policy.sla_ms", Some(t)))
                .transpose()?,
        };

        let s = cx.need("slices", raw.slices)?;
        src("slices", &s.source);
        let slice_latency = cx.service("slices.latency", s.latency)?;
        let groups = cx.need("slices.group", s.group)?;
        if groups.is_empty() {
            return Err(cx.err("slices.group", "empty"));
        }
        let mut slices = Vec::new();
        for (i, g) in groups.into_iter().enumerate() {
            let f = |k: &str| format!("slices.group[{i}].{k}");
            let idle_w = cx.nonneg(&f("idle_w"), cx.need(&f("idle_w"), g.idle_w)?)?;
            let busy_w = cx.nonneg(&f("busy_w"), cx.need(&f("busy_w"), g.busy_w)?)?;
            if busy_w < idle_w {
                return Err(cx.err(&f("busy_w"), format!("{busy_w} is below idle_w {idle_w}")));
            }
            slices.push(SliceGroup {
                slice_type: cx.need(&f("type"), g.slice_type)?,
                count: count(&f("count"), g.count)?,
                idle_w,
                busy_w,
            });
        }

        let pw = cx.need("power", raw.power)?;
        src("power", &pw.source);
        let power = Power {
            cpu_idle_w: cx.nonneg(
                "power.cpu_idle_w",
                cx.need("power.cpu_idle_w", pw.cpu_idle_w)?,
            )?,
            cpu_core_busy_w: cx.nonneg(
                "power.cpu_core_busy_w",
                cx.need("power.cpu_core_busy_w", pw.cpu_core_busy_w)?,
            )?,
        };

        let (table, profile_path) = match raw.profile {
            None => (ProfileTable::builtin(), None),
            Some(p) => {
                let path = match dir {
                    Some(d) if Path::new(&p).is_relative() => d.join(&p),
                    _ => PathBuf::from(&p),
                };
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| cx.err("profile", format!("{}: {e}", path.display())))?;
                let t = ProfileTable::parse(&text)
                    .map_err(|e| cx.err("profile", format!("{}: {e}", path.display())))?;
                (t, Some(path))
            }
        };

        let sc = Scenario {
            name: raw.name.unwrap_or_else(|| file.to_string()),
            origin: file.to_string(),
            seed: raw.seed.unwrap_or(1),
            requests,
            warmup,
            rates,
            workload,
            preprocess,
            overhead_ns: (overhead_us * 1e3).round() as u64,
            policy,
            slices,
            slice_latency,
            profile_path,
            table,
            power,
            sources,
        };
        // Fail now, naming the file, if the profile or policy do not fit.
        crate::engine::check(&sc).map_err(|e| match e {
            Error::Scenario { field, problem, .. } => cx.err(&field, problem),
            other => other,
        })?;
        Ok(sc)
    }

    /// Total slices.
    pub fn slice_count(&self) -> usize {
        self.slices.iter().map(|g| g.count).sum()
    }
}
