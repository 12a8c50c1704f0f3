//! `preba sim --eval DIR [--quick] [--config FILE]`: the PREBA paper's evaluation
//! (arXiv 2411.19114) reproduced in the simulator, and extended. Reads the
//! evaluation config (default: the embedded `sim/eval/paper.toml`, every
//! assumption with its source), simulates each (model, preprocessing, slices,
//! policy) at the rates a bisection needs to find the largest throughput whose
//! p95 meets the SLA, and writes `DIR/report.md` plus SVG plots. The last line
//! of the report, and of the command, is
//! `eval: report at PATH; PREBA share of ideal: min X% over N models`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use preba_batcher::ProfileTable;
use serde::Deserialize;

use crate::Error;
use crate::card;
use crate::engine::{RateResult, check, simulate_rate};
use crate::plot::{self, Series};
use crate::rng::Rng;
use crate::scenario::{
    Dist, JpegCore, PolicySpec, Power, Preprocess, Scenario, Service, SliceGroup, Workload,
};

/// The shipped evaluation config.
pub const DEFAULT_CONFIG: &str = include_str!("../eval/paper.toml");

// ---------------------------------------------------------------- config

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub format: String,
    pub source: String,
    pub seed: u64,
    pub effort: Efforts,
    pub sla: Sla,
    pub images: Images,
    pub audio: Audio,
    pub cpu: Cpu,
    pub card: CardCfg,
    pub power: PowerCfg,
    pub cost: Cost,
    pub gpu: Vec<Gpu>,
    pub hopper: Hopper,
    pub model: Vec<ModelCfg>,
    pub mixed: Mixed,
    pub capacity: Capacity,
    pub paper: Paper,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Efforts {
    pub full: Effort,
    pub quick: Effort,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Effort {
    pub requests: usize,
    pub bisect_steps: usize,
    pub curve_points: Vec<f64>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    pub image_ms: f64,
    pub audio_ms: f64,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Images {
    pub median_px: f64,
    pub sigma: f64,
    pub min_px: f64,
    pub max_px: f64,
    pub samples_per_px: f64,
    pub crop: u32,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Audio {
    pub mean_s: f64,
    pub std_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub cores: usize,
    pub reference_px: f64,
    pub opencv_per_core: f64,
    pub pillow_per_core: f64,
    pub golden_per_core: f64,
    pub librosa_per_core: f64,
    pub golden_audio_per_core: f64,
    pub measured: String,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct CardCfg {
    pub image_cus: usize,
    pub audio_cus: usize,
    pub norm_cus: usize,
    pub cu_mhz: f64,
    pub overhead_us: f64,
    pub sweep_image_cus: Vec<usize>,
    pub sweep_audio_cus: Vec<usize>,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct PowerCfg {
    pub cpu_idle_w: f64,
    pub cpu_core_busy_w: f64,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    pub server_usd: f64,
    pub card_usd: f64,
    pub kwh_usd: f64,
    pub years: f64,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub name: String,
    pub idle_w: f64,
    pub busy_w: f64,
    pub usd: f64,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Hopper {
    pub h100_speedup: f64,
    pub h200_small_model_c: f64,
    pub small_models: Vec<String>,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ModelCfg {
    pub name: String,
    pub label: String,
    pub kind: String,
    pub derive_from: Option<String>,
    pub c_scale: Option<f64>,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Mixed {
    pub slices: Vec<(String, usize)>,
    pub models: Vec<String>,
    pub triton_max_queue_delay_us: f64,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    pub loads: Vec<f64>,
    pub source: String,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Paper {
    pub throughput_x: f64,
    pub p95_x: f64,
    pub energy_x: f64,
    pub cost_x: f64,
    pub share_min_pct: f64,
    pub share_models: usize,
    pub citrinet_cores: f64,
    pub ablation_card_pct: f64,
    pub ablation_batch_pct: f64,
    pub cpu_cost_pct: f64,
    pub source: String,
}

impl Config {
    pub fn parse(text: &str, file: &str) -> Result<Config, Error> {
        let c: Config = toml::from_str(text).map_err(|e| Error::Scenario {
            file: file.to_string(),
            field: "(eval config)".into(),
            problem: e.to_string(),
        })?;
        if c.format != "preba-eval-1" {
            return Err(Error::Scenario {
                file: file.to_string(),
                field: "format".into(),
                problem: format!("{:?} is not \"preba-eval-1\"", c.format),
            });
        }
        Ok(c)
    }
}

// ---------------------------------------------------------------- profile table

/// Slice types the evaluation derives for Hopper.
pub const H100_1G: &str = "h100-1g.10gb";
pub const H200_1G: &str = "h200-1g.18gb";
const A100_TYPES: [&str; 4] = [
    "a100-1g.5gb",
    "a100-2g.10gb",
    "a100-3g.20gb",
    "a100-7g.40gb",
];

fn fmt_entry(
    model: &str,
    slice: &str,
    bucket: Option<u32>,
    src: &preba_batcher::Entry,
    scale: f64,
    source: &str,
) -> String {
    // lat(b) = a + c b, fitted through the first and last points.
    let pts = src.points();
    let (p0, p1) = (&pts[0], &pts[pts.len() - 1]);
    let c = if p1.batch > p0.batch {
        (p1.p50_ms - p0.p50_ms) / f64::from(p1.batch - p0.batch)
    } else {
        0.0
    };
    let a = p0.p50_ms - c * f64::from(p0.batch);
    let mut s = format!("\n[[entry]]\nmodel = \"{model}\"\nslice = \"{slice}\"\n");
    if let Some(b) = bucket {
        let _ = writeln!(s, "bucket = {b}");
    }
    let _ = writeln!(s, "source = {:?}", source);
    s.push_str("points = [\n");
    for p in pts {
        let lat = a + c * scale * f64::from(p.batch);
        let r95 = p.p95_ms / p.p50_ms;
        let _ = writeln!(
            s,
            "  {{ batch = {}, p50_ms = {:.6}, p95_ms = {:.6}, throughput = {:.4} }},",
            p.batch,
            lat,
            lat * r95,
            f64::from(p.batch) / lat * 1e3
        );
    }
    s.push_str("]\n");
    s
}

/// The builtin table plus the entries the evaluation derives (models with
/// `derive_from`, Hopper 1g slices), and the derived TOML alone.
pub fn eval_table(cfg: &Config) -> Result<(ProfileTable, String), Error> {
    let base = ProfileTable::builtin();
    let mut extra = String::new();
    let buckets =
        |t: &ProfileTable, m: &str, s: &str| -> Vec<(Option<u32>, preba_batcher::Entry)> {
            if let Some(e) = t.find(m, s, None) {
                return vec![(None, e.clone())];
            }
            (0u32..)
                .map_while(|b| t.find(m, s, Some(b)).map(|e| (Some(b), e.clone())))
                .collect()
        };
    for m in &cfg.model {
        if let Some(from) = &m.derive_from {
            let k = m.c_scale.unwrap_or(1.0);
            for s in A100_TYPES {
                for (b, e) in buckets(&base, from, s) {
                    let src = format!(
                        "[D] eval: {}; lat(b) = a + {k} x c x b from the {from} entry (a, c fitted to its points): {}",
                        m.source,
                        e.source()
                    );
                    extra.push_str(&fmt_entry(&m.name, s, b, &e, k, &src));
                }
            }
        }
    }
    let with_derived = ProfileTable::parse(&format!("{}{}", base.to_toml(), extra))
        .map_err(|e| Error::Failed(format!("derived profile entries do not parse: {e}")))?;
    let h = &cfg.hopper;
    for m in &cfg.model {
        for (slice, k) in [
            (H100_1G, 1.0 / h.h100_speedup),
            (
                H200_1G,
                if h.small_models.contains(&m.name) {
                    h.h200_small_model_c / h.h100_speedup
                } else {
                    1.0 / h.h100_speedup
                },
            ),
        ] {
            for (b, e) in buckets(&with_derived, &m.name, "a100-1g.5gb") {
                let src = format!(
                    "[D] eval: {}; c x {k:.4} from the a100-1g.5gb entry, floor kept: {}",
                    h.source,
                    e.source()
                );
                extra.push_str(&fmt_entry(&m.name, slice, b, &e, k, &src));
            }
        }
    }
    let t = ProfileTable::parse(&format!("{}{}", base.to_toml(), extra))
        .map_err(|e| Error::Failed(format!("derived profile entries do not parse: {e}")))?;
    Ok((t, extra))
}

// ---------------------------------------------------------------- setups

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pre {
    /// The paper's "ideal": inputs arrive preprocessed.
    None,
    /// `cores` CPU cores at `per_core` requests/s at the reference size.
    Cpu { per_core: f64 },
    /// The card with `cus` image CUs (images) or Mel CUs (audio).
    Card { cus: usize },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pol {
    Preba,
    NoBatching,
    Triton,
    Deadline,
}

/// The best operating point of one configuration.
#[derive(Clone, Debug)]
pub struct Best {
    pub rate: f64,
    pub r: Option<RateResult>,
    pub capex: f64,
}

impl Best {
    pub fn thr(&self) -> f64 {
        self.r.as_ref().map_or(0.0, |r| r.throughput)
    }
    pub fn p95(&self) -> f64 {
        self.r.as_ref().map_or(f64::NAN, |r| r.p95_ms)
    }
    pub fn power(&self) -> f64 {
        self.r.as_ref().map_or(f64::NAN, |r| r.power_w.total)
    }
    /// Requests per joule.
    pub fn per_joule(&self) -> f64 {
        self.thr() / self.power()
    }
    /// Requests/s per 1,000 USD of CAPEX + OPEX over the years.
    pub fn per_kusd(&self, cost: &Cost) -> f64 {
        let opex = self.power() / 1000.0 * 24.0 * 365.0 * cost.years * cost.kwh_usd;
        self.thr() / ((self.capex + opex) / 1000.0)
    }
}

struct Ctx<'a> {
    cfg: &'a Config,
    table: &'a ProfileTable,
    eff: &'a Effort,
}

fn gpcs(slice: &str) -> f64 {
    slice
        .split_once('-')
        .and_then(|(_, r)| r.split_once('g'))
        .and_then(|(g, _)| g.parse::<f64>().ok())
        .unwrap_or(7.0)
}

impl Ctx<'_> {
    fn model(&self, name: &str) -> &ModelCfg {
        self.cfg
            .model
            .iter()
            .find(|m| m.name == name)
            .expect("models come from the config")
    }
    fn audio(m: &ModelCfg) -> bool {
        m.kind == "audio"
    }
    fn sla(&self, m: &ModelCfg) -> f64 {
        if Self::audio(m) {
            self.cfg.sla.audio_ms
        } else {
            self.cfg.sla.image_ms
        }
    }
    fn gpu(&self, slice: &str) -> &Gpu {
        let prefix = slice.split('-').next().unwrap_or("");
        self.cfg
            .gpu
            .iter()
            .find(|g| g.name == prefix)
            .unwrap_or(&self.cfg.gpu[0])
    }
    fn size_dist(&self, m: &ModelCfg) -> Dist {
        if Self::audio(m) {
            let a = &self.cfg.audio;
            Dist::Gamma {
                mean: a.mean_s,
                std: a.std_s,
                min: a.min_s,
                max: a.max_s,
            }
        } else {
            let i = &self.cfg.images;
            Dist::Lognormal {
                median: i.median_px,
                sigma: i.sigma,
                min: i.min_px,
                max: i.max_px,
            }
        }
    }
    fn mean_size(&self, m: &ModelCfg) -> f64 {
        let d = self.size_dist(m);
        let mut r = Rng::new(7, 9);
        (0..20_000).map(|_| d.sample(&mut r)).sum::<f64>() / 20_000.0
    }
    /// Requests/s one core gives at the mean size.
    fn per_core_at_mean(&self, m: &ModelCfg, per_core: f64) -> f64 {
        if Self::audio(m) {
            per_core / self.mean_size(m)
        } else {
            per_core * self.cfg.cpu.reference_px / self.mean_size(m)
        }
    }
    fn baseline_cpu(&self, m: &ModelCfg) -> f64 {
        if Self::audio(m) {
            self.cfg.cpu.librosa_per_core
        } else {
            self.cfg.cpu.opencv_per_core
        }
    }
    fn golden_cpu(&self, m: &ModelCfg) -> f64 {
        if Self::audio(m) {
            self.cfg.cpu.golden_audio_per_core
        } else {
            self.cfg.cpu.golden_per_core
        }
    }
    fn default_cus(&self, m: &ModelCfg) -> usize {
        if Self::audio(m) {
            self.cfg.card.audio_cus
        } else {
            self.cfg.card.image_cus
        }
    }

    fn scenario(
        &self,
        m: &ModelCfg,
        pre: Pre,
        slices: &[(String, usize)],
        pol: Pol,
    ) -> Result<Scenario, Error> {
        let cfg = self.cfg;
        let workload = if Self::audio(m) {
            Workload::Audio {
                model: m.name.clone(),
                duration: self.size_dist(m),
                sample_rate: 16_000,
                n_fft: 512,
                hop: 160,
                n_mels: 80,
            }
        } else {
            Workload::Image {
                model: m.name.clone(),
                pixels: self.size_dist(m),
                samples_per_px: cfg.images.samples_per_px,
                crop: cfg.images.crop,
            }
        };
        let (preprocess, overhead_us) = match pre {
            Pre::None => (Preprocess::None, 0.0),
            Pre::Cpu { per_core } => (
                Preprocess::Cpu {
                    cores: cfg.cpu.cores,
                    per_core_rate: per_core,
                    reference: if Self::audio(m) {
                        1.0
                    } else {
                        cfg.cpu.reference_px
                    },
                    service: Service::Deterministic,
                },
                0.0,
            ),
            Pre::Card { cus } => (
                Preprocess::Card {
                    image_cus: if Self::audio(m) { 0 } else { cus },
                    audio_cus: if Self::audio(m) { cus } else { 0 },
                    norm_cus: if Self::audio(m) { cfg.card.norm_cus } else { 0 },
                    cu_hz: cfg.card.cu_mhz * 1e6,
                    jpeg: JpegCore::Vitis,
                },
                cfg.card.overhead_us,
            ),
        };
        let sla = self.sla(m);
        let buckets = (0u32..)
            .take_while(|&b| self.table.find(&m.name, &slices[0].0, Some(b)).is_some())
            .count()
            .max(1);
        let policy = PolicySpec {
            kind: match pol {
                Pol::Preba | Pol::NoBatching => "preba",
                Pol::Triton => "triton",
                Pol::Deadline => "deadline",
            }
            .into(),
            batch_max: (pol == Pol::NoBatching).then(|| vec![1; buckets]),
            time_queue_ms: (pol == Pol::NoBatching).then_some(0.0),
            max_queue: 1024,
            max_batch_size: None,
            preferred_batch_size: None,
            max_queue_delay_us: (pol == Pol::Triton).then_some(cfg.mixed.triton_max_queue_delay_us),
            sla_ms: Some(sla),
        };
        let groups = slices
            .iter()
            .map(|(t, n)| {
                let g = self.gpu(t);
                let f = gpcs(t) / 7.0;
                SliceGroup {
                    slice_type: t.clone(),
                    count: *n,
                    idle_w: g.idle_w * f,
                    busy_w: g.busy_w * f,
                }
            })
            .collect();
        let requests = self.eff.requests;
        let sc = Scenario {
            name: format!("{} {:?} {:?} {:?}", m.name, pre, slices, pol),
            origin: "eval".into(),
            seed: cfg.seed,
            requests,
            warmup: requests / 10,
            rates: vec![1.0],
            workload,
            preprocess,
            overhead_ns: (overhead_us * 1e3).round() as u64,
            policy,
            slices: groups,
            slice_latency: Service::Deterministic,
            profile_path: None,
            table: self.table.clone(),
            power: Power {
                cpu_idle_w: cfg.power.cpu_idle_w,
                cpu_core_busy_w: cfg.power.cpu_core_busy_w,
            },
            sources: vec![],
        };
        check(&sc)?;
        Ok(sc)
    }

    fn capex(&self, sc: &Scenario) -> f64 {
        let gpu = self.gpu(&sc.slices[0].slice_type).usd;
        let card = match sc.preprocess {
            Preprocess::Card { .. } => self.cfg.cost.card_usd,
            _ => 0.0,
        };
        self.cfg.cost.server_usd + gpu + card
    }

    /// An upper bound on the throughput of `sc`: the smaller of the slices'
    /// best profiled throughput and the preprocessing's capacity at the mean size.
    fn capacity(&self, sc: &Scenario, m: &ModelCfg) -> f64 {
        let mean = self.mean_size(m);
        let bucket = (mean / 2.5) as u32;
        let gpu: f64 = sc
            .slices
            .iter()
            .map(|g| {
                let e = self
                    .table
                    .find(&m.name, &g.slice_type, None)
                    .or_else(|| self.table.find(&m.name, &g.slice_type, Some(bucket)));
                let t = e.map_or(0.0, |e| {
                    e.points()
                        .iter()
                        .map(|p| f64::from(p.batch) / p.p50_ms * 1e3)
                        .fold(0.0, f64::max)
                });
                t * g.count as f64
            })
            .sum();
        let pre = match (&sc.preprocess, &sc.workload) {
            (Preprocess::None, _) => f64::INFINITY,
            (
                Preprocess::Cpu {
                    cores,
                    per_core_rate,
                    reference,
                    ..
                },
                _,
            ) => *cores as f64 * per_core_rate * reference / mean,
            (
                Preprocess::Card {
                    image_cus, cu_hz, ..
                },
                Workload::Image {
                    samples_per_px,
                    crop,
                    ..
                },
            ) => {
                *image_cus as f64 * cu_hz
                    / card::image_cycles(mean, *samples_per_px, *crop, JpegCore::Vitis) as f64
            }
            (
                Preprocess::Card {
                    audio_cus,
                    norm_cus,
                    cu_hz,
                    ..
                },
                Workload::Audio { .. },
            ) => {
                let mel =
                    *audio_cus as f64 * cu_hz / card::mel_cycles(mean, 16_000, 512, 160) as f64;
                let norm =
                    *norm_cus as f64 * cu_hz / card::norm_cycles(mean, 16_000, 160, 80) as f64;
                mel.min(norm)
            }
        };
        gpu.min(pre)
    }

    fn point(&self, sc: &Scenario, rate: f64) -> Result<RateResult, Error> {
        simulate_rate(sc, rate)
    }

    fn ok(&self, m: &ModelCfg, r: &RateResult) -> bool {
        let n = (r.completed + r.rejected).max(1) as f64;
        r.p95_ms <= self.sla(m)
            && (r.rejected as f64) <= 0.01 * n
            && r.throughput >= 0.95 * r.offered_measured
    }

    /// The largest offered rate (by bisection) whose result meets the SLA.
    fn best(&self, sc: &Scenario, m: &ModelCfg) -> Result<Best, Error> {
        let (mut lo, mut hi) = (0.0, 1.25 * self.capacity(sc, m).max(1.0));
        let mut best = None;
        for _ in 0..self.eff.bisect_steps.max(1) {
            let mid = 0.5 * (lo + hi);
            let r = self.point(sc, mid)?;
            if self.ok(m, &r) {
                lo = mid;
                best = Some(r);
            } else {
                hi = mid;
            }
        }
        Ok(Best {
            rate: lo,
            r: best,
            capex: self.capex(sc),
        })
    }

    fn run(
        &self,
        m: &ModelCfg,
        pre: Pre,
        slices: &[(String, usize)],
        pol: Pol,
    ) -> Result<Best, Error> {
        let sc = self.scenario(m, pre, slices, pol)?;
        self.best(&sc, m)
    }
}

// ---------------------------------------------------------------- experiments

/// One partition's three configurations.
#[derive(Clone, Debug)]
pub struct Trio {
    pub cpu: Best,
    pub preba: Best,
    pub ideal: Best,
    /// (CPU p95, PREBA p95) at 80% of the CPU baseline's best rate.
    pub p95_at_cpu: (f64, f64),
}

#[derive(Clone, Debug)]
pub struct ModelResult {
    pub name: String,
    pub label: String,
    pub audio: bool,
    pub mean_size: f64,
    pub sla_ms: f64,
    pub g1: Trio,
    pub g7: Trio,
    /// Fig 17/18 curves on 1g x7: (name, results) for cpu / preba / ideal.
    pub curves: Vec<(String, Vec<RateResult>)>,
    pub golden: Best,
    pub no_batching: Best,
    /// The card with the baseline's batcher (Triton), 1g x7.
    pub card_triton: Best,
    /// (CUs, best) on 1g x7.
    pub sweep: Vec<(usize, Best)>,
    pub h100: Trio,
    pub h200: Trio,
    /// (setup label, policy, best) for the policy comparison.
    pub policies: Vec<(String, String, Best)>,
    /// Cores to feed the ideal throughput: (1g x7, 7g x1).
    pub cores_needed: (f64, f64),
    pub knee_1g: (u32, f64),
}

fn one(t: &str, n: usize) -> Vec<(String, usize)> {
    vec![(t.to_string(), n)]
}

/// The p95 comparison runs both at this fraction of the CPU baseline's max.
const P95_LOAD: f64 = 0.8;

fn trio(cx: &Ctx, m: &ModelCfg, slices: &[(String, usize)]) -> Result<Trio, Error> {
    let cpu_sc = cx.scenario(
        m,
        Pre::Cpu {
            per_core: cx.baseline_cpu(m),
        },
        slices,
        Pol::Triton,
    )?;
    let cpu = cx.best(&cpu_sc, m)?;
    let preba_sc = cx.scenario(
        m,
        Pre::Card {
            cus: cx.default_cus(m),
        },
        slices,
        Pol::Preba,
    )?;
    let preba = cx.best(&preba_sc, m)?;
    let ideal = cx.run(m, Pre::None, slices, Pol::Preba)?;
    let p95_at_cpu = if cpu.rate > 0.0 {
        let at = P95_LOAD * cpu.rate;
        (
            cx.point(&cpu_sc, at)?.p95_ms,
            cx.point(&preba_sc, at)?.p95_ms,
        )
    } else {
        (f64::NAN, f64::NAN)
    };
    Ok(Trio {
        cpu,
        preba,
        ideal,
        p95_at_cpu,
    })
}

fn evaluate_model(cx: &Ctx, m: &ModelCfg) -> Result<ModelResult, Error> {
    let audio = Ctx::audio(m);
    let g1s = one("a100-1g.5gb", 7);
    let g1 = trio(cx, m, &g1s)?;
    let g7 = trio(cx, m, &one("a100-7g.40gb", 1))?;
    let mut curves = Vec::new();
    for (name, pre, pol, best) in [
        (
            if audio {
                "CPU (librosa)"
            } else {
                "CPU (OpenCV)"
            },
            Pre::Cpu {
                per_core: cx.baseline_cpu(m),
            },
            Pol::Triton,
            &g1.cpu,
        ),
        (
            "PREBA (card + preba)",
            Pre::Card {
                cus: cx.default_cus(m),
            },
            Pol::Preba,
            &g1.preba,
        ),
        ("ideal (no preprocessing)", Pre::None, Pol::Preba, &g1.ideal),
    ] {
        let sc = cx.scenario(m, pre, &g1s, pol)?;
        let mut v = Vec::new();
        for &f in &cx.eff.curve_points {
            if best.rate > 0.0 {
                v.push(cx.point(&sc, best.rate * f)?);
            }
        }
        curves.push((name.to_string(), v));
    }
    let golden = cx.run(
        m,
        Pre::Cpu {
            per_core: cx.golden_cpu(m),
        },
        &g1s,
        Pol::Triton,
    )?;
    let no_batching = cx.run(
        m,
        Pre::Card {
            cus: cx.default_cus(m),
        },
        &g1s,
        Pol::NoBatching,
    )?;
    let card_triton = cx.run(
        m,
        Pre::Card {
            cus: cx.default_cus(m),
        },
        &g1s,
        Pol::Triton,
    )?;
    let sweep_cus = if audio {
        &cx.cfg.card.sweep_audio_cus
    } else {
        &cx.cfg.card.sweep_image_cus
    };
    let mut sweep = Vec::new();
    for &cus in sweep_cus {
        sweep.push((cus, cx.run(m, Pre::Card { cus }, &g1s, Pol::Preba)?));
    }
    let h100 = trio(cx, m, &one(H100_1G, 7))?;
    let h200 = trio(cx, m, &one(H200_1G, 7))?;
    let mut policies = Vec::new();
    if cx.cfg.mixed.models.contains(&m.name) {
        let card = Pre::Card {
            cus: cx.default_cus(m),
        };
        let mixed_label = cx
            .cfg
            .mixed
            .slices
            .iter()
            .map(|(t, n)| format!("{}x{n}", t.trim_start_matches("a100-")))
            .collect::<Vec<_>>()
            .join(" + ");
        policies.push((
            "1g.5gbx7".to_string(),
            "preba".to_string(),
            g1.preba.clone(),
        ));
        for (p, name) in [(Pol::Triton, "triton"), (Pol::Deadline, "deadline")] {
            policies.push((
                "1g.5gbx7".to_string(),
                name.to_string(),
                cx.run(m, card, &g1s, p)?,
            ));
        }
        policies.push((
            mixed_label.clone(),
            "preba".to_string(),
            Best {
                rate: f64::NAN,
                r: None,
                capex: 0.0,
            },
        ));
        for (p, name) in [(Pol::Triton, "triton"), (Pol::Deadline, "deadline")] {
            policies.push((
                mixed_label.clone(),
                name.to_string(),
                cx.run(m, card, &cx.cfg.mixed.slices, p)?,
            ));
        }
    }
    let pc = cx.per_core_at_mean(m, cx.baseline_cpu(m));
    let cores_needed = (g1.ideal.thr() / pc, g7.ideal.thr() / pc);
    let sc = cx.scenario(m, Pre::None, &g1s, Pol::Preba)?;
    let mean_bucket = (cx.mean_size(m) / 2.5) as u32;
    let knee_1g = sc
        .table
        .find(&m.name, "a100-1g.5gb", None)
        .or_else(|| sc.table.find(&m.name, "a100-1g.5gb", Some(mean_bucket)))
        .map_or((0, 0.0), |e| {
            let (b, t) = e.knee();
            (b, t as f64 / 1e6)
        });
    Ok(ModelResult {
        name: m.name.clone(),
        label: m.label.clone(),
        audio,
        mean_size: cx.mean_size(m),
        sla_ms: cx.sla(m),
        g1,
        g7,
        curves,
        golden,
        no_batching,
        card_triton,
        sweep,
        h100,
        h200,
        policies,
        cores_needed,
        knee_1g,
    })
}

/// What a run of the evaluation gives.
#[derive(Clone, Debug)]
pub struct Summary {
    pub report: PathBuf,
    pub min_share_pct: f64,
    pub models: usize,
    pub last_line: String,
    pub results: Vec<ModelResult>,
}

/// Runs the evaluation with `cfg` into `dir` (created); `quick` uses the
/// config's quick effort.
pub fn evaluate(cfg: &Config, dir: &Path, quick: bool) -> Result<Summary, Error> {
    let t0 = Instant::now();
    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
        path: dir.display().to_string(),
        problem: e.to_string(),
    })?;
    let (table, derived) = eval_table(cfg)?;
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::Io {
            path: p.display().to_string(),
            problem: e.to_string(),
        })
    };
    write(
        "derived-profiles.toml",
        &format!(
            "# Profile entries derived by the evaluation (appended to the builtin table).\nformat = \"preba-profile-1\"\n{derived}"
        ),
    )?;
    let eff = if quick {
        &cfg.effort.quick
    } else {
        &cfg.effort.full
    };
    let cx = Ctx {
        cfg,
        table: &table,
        eff,
    };
    let results: Vec<Result<ModelResult, Error>> = std::thread::scope(|s| {
        let hs: Vec<_> = cfg
            .model
            .iter()
            .map(|m| {
                let cx = &cx;
                s.spawn(move || {
                    let t = Instant::now();
                    let r = evaluate_model(cx, m);
                    eprintln!(
                        "preba sim --eval: {} done in {:.1} s",
                        m.name,
                        t.elapsed().as_secs_f64()
                    );
                    r
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Failed("an evaluation thread panicked".into())))
            })
            .collect()
    });
    let results: Vec<ModelResult> = results.into_iter().collect::<Result<_, _>>()?;
    plots(&cx, &results, dir)?;
    let report_path = dir.join("report.md");
    let (text, min_share) = report(&cx, &results, quick, t0.elapsed().as_secs_f64());
    let last_line = format!(
        "eval: report at {}; PREBA share of ideal: min {:.1}% over {} models",
        report_path.display(),
        min_share,
        results.len()
    );
    write("report.md", &format!("{text}\n{last_line}\n"))?;
    Ok(Summary {
        report: report_path,
        min_share_pct: min_share,
        models: results.len(),
        last_line,
        results,
    })
}

// ---------------------------------------------------------------- report

fn pct(a: f64, b: f64) -> f64 {
    if b > 0.0 { 100.0 * a / b } else { 0.0 }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 && a.is_finite() { a / b } else { 0.0 }
}

fn mean(v: &[f64]) -> f64 {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        0.0
    } else {
        f.iter().sum::<f64>() / f.len() as f64
    }
}

fn f(x: f64, d: usize) -> String {
    if x.is_finite() {
        format!("{x:.d$}")
    } else {
        "-".into()
    }
}

struct Ratios {
    thr: f64,
    p95: f64,
    energy: f64,
    cost: f64,
    share: f64,
}

fn ratios(t: &Trio, cost: &Cost) -> Ratios {
    Ratios {
        thr: ratio(t.preba.thr(), t.cpu.thr()),
        p95: ratio(t.p95_at_cpu.0, t.p95_at_cpu.1),
        energy: ratio(t.preba.per_joule(), t.cpu.per_joule()),
        cost: ratio(t.preba.per_kusd(cost), t.cpu.per_kusd(cost)),
        share: pct(t.preba.thr(), t.ideal.thr()),
    }
}

fn report(cx: &Ctx, rs: &[ModelResult], quick: bool, wall: f64) -> (String, f64) {
    let cfg = cx.cfg;
    let p = &cfg.paper;
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# PREBA reproduction: evaluation report\n");
    let _ = writeln!(
        w,
        "Generated by `cargo xtask eval{}` (`preba sim --eval`) from `sim/eval/paper.toml`: {} models, {} requests per simulated rate, {} bisection steps, seed {}, {:.0} s. Everything below is simulated by `preba sim` driving the batcher crate's own policies in virtual time; no GPU was used. The paper is Yeo, Kim, Choi, Rhu, \"PREBA\", arXiv 2411.19114.\n",
        if quick { " --quick" } else { "" },
        rs.len(),
        cx.eff.requests,
        cx.eff.bisect_steps,
        cfg.seed,
        wall
    );
    if quick {
        let _ = writeln!(
            w,
            "**Quick run**: few requests per rate and a coarse bisection; numbers are indicative only. The committed full report is docs/eval/report.md.\n"
        );
    }
    let _ = writeln!(
        w,
        "Definitions. *Max throughput* = the largest throughput (bisection over Poisson offered rates) with p95 <= SLA ({} ms vision, {} ms speech), <= 1% rejected and >= 95% of the offered load served. *CPU* = 32 EPYC cores preprocessing at the per-core rate measured here (OpenCV for images, librosa for audio), Triton's dynamic batcher (max_batch_size = Batch_knee, no queue delay) round-robin over the slices. *PREBA* = the card ({} image CUs / {} Mel + {} normalize CUs at {} MHz) + the `preba` policy. *Ideal* = preprocessed inputs + the `preba` policy. p95 ratio = CPU p95 / PREBA p95, both at 80% of the CPU baseline's max throughput (the same offered load). Energy efficiency = requests per joule (CPU + GPU + card power) at each configuration's max-throughput point; cost efficiency = throughput / (CAPEX + OPEX x {} years at ${}/kWh).\n",
        cfg.sla.image_ms,
        cfg.sla.audio_ms,
        cfg.card.image_cus,
        cfg.card.audio_cus,
        cfg.card.norm_cus,
        cfg.card.cu_mhz,
        cfg.cost.years,
        cfg.cost.kwh_usd
    );

    // Headline.
    let rat: Vec<Ratios> = rs.iter().map(|r| ratios(&r.g1, &cfg.cost)).collect();
    let min_share = rat.iter().map(|r| r.share).fold(f64::INFINITY, f64::min);
    let min_share = if min_share.is_finite() {
        min_share
    } else {
        0.0
    };
    let _ = writeln!(w, "## Headline: paper vs ours\n");
    let _ = writeln!(
        w,
        "A100 1g.5gb x7 (the paper's headline setting). Paper numbers are the paper's averages / bounds (docs/background.md section 1); ours per model, then the mean over models and ours / paper.\n"
    );
    let _ = writeln!(
        w,
        "| model | throughput x (paper {}) | p95 lower x (paper {}) | energy eff x (paper {}) | cost eff x (paper {}) | share of ideal % (paper >= {} on {}/6) | cores to feed (paper CitriNet {}) |",
        p.throughput_x,
        p.p95_x,
        p.energy_x,
        p.cost_x,
        p.share_min_pct,
        p.share_models,
        p.citrinet_cores
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for (r, q) in rs.iter().zip(&rat) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            f(q.thr, 2),
            f(q.p95, 2),
            f(q.energy, 2),
            f(q.cost, 2),
            f(q.share, 1),
            f(r.cores_needed.0, 0)
        );
    }
    let mthr = mean(&rat.iter().map(|r| r.thr).collect::<Vec<_>>());
    let mp95 = mean(&rat.iter().map(|r| r.p95).collect::<Vec<_>>());
    let men = mean(&rat.iter().map(|r| r.energy).collect::<Vec<_>>());
    let mco = mean(&rat.iter().map(|r| r.cost).collect::<Vec<_>>());
    let above = rat.iter().filter(|r| r.share >= p.share_min_pct).count();
    let citri = rs
        .iter()
        .find(|r| r.name.starts_with("citrinet"))
        .map_or(f64::NAN, |r| r.cores_needed.0);
    let _ = writeln!(
        w,
        "| **mean (ours)** | **{}** | **{}** | **{}** | **{}** | **min {} ({} of {} >= {})** | CitriNet **{}** |",
        f(mthr, 2),
        f(mp95, 2),
        f(men, 2),
        f(mco, 2),
        f(min_share, 1),
        above,
        rs.len(),
        p.share_min_pct,
        f(citri, 0)
    );
    let _ = writeln!(
        w,
        "| **ours / paper** | {} | {} | {} | {} | {} | {} |\n",
        f(mthr / p.throughput_x, 2),
        f(mp95 / p.p95_x, 2),
        f(men / p.energy_x, 2),
        f(mco / p.cost_x, 2),
        f(min_share / p.share_min_pct, 2),
        f(citri / p.citrinet_cores, 2)
    );
    let cpu_cost = mean(
        &rs.iter()
            .map(|r| 100.0 - pct(r.g1.cpu.thr(), r.g1.ideal.thr()))
            .collect::<Vec<_>>(),
    );
    let ab: Vec<&ModelResult> = rs.iter().filter(|r| r.audio).collect();
    let ab_card = mean(
        &ab.iter()
            .map(|r| pct(r.card_triton.thr(), r.g1.cpu.thr()) - 100.0)
            .collect::<Vec<_>>(),
    );
    let ab_batch = mean(
        &ab.iter()
            .map(|r| pct(r.g1.preba.thr(), r.card_triton.thr()) - 100.0)
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(
        w,
        "Other paper numbers: CPU preprocessing costs {} % of the ideal throughput on 1g.5gb x7 (paper {} %, ours / paper {}, mean over models); audio ablation: the card alone {:+.0} % over CPU (paper +{} %), PREBA batching a further {:+.0} % (paper +{} %) (mean over the audio models).\n",
        f(cpu_cost, 1),
        p.cpu_cost_pct,
        f(cpu_cost / p.cpu_cost_pct, 2),
        ab_card,
        p.ablation_card_pct,
        ab_batch,
        p.ablation_batch_pct
    );

    // Assumptions.
    let _ = writeln!(w, "## Assumptions and sources\n");
    let _ = writeln!(
        w,
        "Labels: [P] published, [M] measured here, [D] derived, [A] assumed. Full text in sim/eval/paper.toml; derived profile entries in derived-profiles.toml next to this report.\n"
    );
    for (k, v) in [
        ("evaluation", &cfg.source),
        ("SLA", &cfg.sla.source),
        ("images", &cfg.images.source),
        ("audio", &cfg.audio.source),
        ("CPU", &cfg.cpu.source),
        ("card", &cfg.card.source),
        ("power", &cfg.power.source),
        ("cost", &cfg.cost.source),
        ("H100/H200", &cfg.hopper.source),
        ("mixed slices", &cfg.mixed.source),
        ("capacity", &cfg.capacity.source),
        ("paper", &cfg.paper.source),
    ] {
        let _ = writeln!(w, "- **{k}**: {v}");
    }
    for g in &cfg.gpu {
        let _ = writeln!(w, "- **GPU {}**: {}", g.name, g.source);
    }
    for m in &cfg.model {
        let _ = writeln!(w, "- **{}** (`{}`): {}", m.label, m.name, m.source);
    }
    let _ = writeln!(
        w,
        "\nPer-core CPU rates (measured {}): OpenCV {} img/s, Pillow {} img/s, ours {} img/s at {} px; librosa {} s/s, ours {} s/s of audio.\n",
        cfg.cpu.measured,
        cfg.cpu.opencv_per_core,
        cfg.cpu.pillow_per_core,
        cfg.cpu.golden_per_core,
        cfg.cpu.reference_px,
        cfg.cpu.librosa_per_core,
        cfg.cpu.golden_audio_per_core
    );
    let _ = writeln!(
        w,
        "| model | kind | mean request | SLA ms | Batch_knee 1g.5gb | Time_knee 1g.5gb ms | Time_queue ms |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for r in rs {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            if r.audio { "audio" } else { "image" },
            if r.audio {
                format!("{:.2} s", r.mean_size)
            } else {
                format!("{:.0} px", r.mean_size)
            },
            r.sla_ms,
            r.knee_1g.0,
            f(r.knee_1g.1, 2),
            f(r.knee_1g.1 / 7.0, 2)
        );
    }
    let _ = writeln!(w);

    // Card sizing.
    let _ = writeln!(w, "## Card sizing: CU count and clock\n");
    let mean_px = rs
        .iter()
        .find(|r| !r.audio)
        .map_or(cfg.images.median_px, |r| r.mean_size);
    let hz = cfg.card.cu_mhz * 1e6;
    let img_cu = hz
        / card::image_cycles(
            mean_px,
            cfg.images.samples_per_px,
            cfg.images.crop,
            JpegCore::Vitis,
        ) as f64;
    let mel_cu = hz / card::mel_cycles(cfg.audio.mean_s, 16_000, 512, 160) as f64;
    let _ = writeln!(
        w,
        "At {} MHz our cycle model gives {:.0} images/s per image CU (a {:.0} px JPEG) and {:.0} utterances/s per Mel CU (a {} s utterance). The paper's 6.13 GB/s of PCIe for MobileNet is ~10,000 f32 224x224x3 tensors/s ({:.1} image CUs at this clock); its 0.9 GB/s for CitriNet ~3,800 utterances/s ({:.1} Mel CUs). We assume **{} image CUs** ({:.0} img/s) and **{} Mel + {} normalize CUs** ({:.0} utt/s) at **{} MHz**; the table shows PREBA's max throughput under the SLA on 1g.5gb x7 as the CU count moves (share of ideal in brackets).\n",
        cfg.card.cu_mhz,
        img_cu,
        mean_px,
        mel_cu,
        cfg.audio.mean_s,
        10_000.0 / img_cu,
        3_800.0 / mel_cu,
        cfg.card.image_cus,
        img_cu * cfg.card.image_cus as f64,
        cfg.card.audio_cus,
        cfg.card.norm_cus,
        mel_cu * cfg.card.audio_cus as f64,
        cfg.card.cu_mhz
    );
    for audio in [false, true] {
        let sel: Vec<&ModelResult> = rs.iter().filter(|r| r.audio == audio).collect();
        let Some(first) = sel.first() else { continue };
        let _ = write!(w, "| {} CUs |", if audio { "Mel" } else { "image" });
        for r in &sel {
            let _ = write!(w, " {} req/s |", r.label);
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "|---|{}", "---|".repeat(sel.len()));
        for (i, (cus, _)) in first.sweep.iter().enumerate() {
            let _ = write!(w, "| {cus} |");
            for r in &sel {
                let b = &r.sweep[i].1;
                let _ = write!(
                    w,
                    " {} ({}%) |",
                    f(b.thr(), 0),
                    f(pct(b.thr(), r.g1.ideal.thr()), 0)
                );
            }
            let _ = writeln!(w);
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w, "![CU sensitivity](sensitivity.svg)\n");

    // Fig 8.
    let _ = writeln!(w, "## Fig 8: CPU cores needed to feed the GPU\n");
    let _ = writeln!(
        w,
        "Cores = the ideal max throughput under the SLA x the mean request / the per-core rate of the paper's baseline (OpenCV, librosa), i.e. cores 100% busy. Paper: CitriNet needs {} cores for one A100.\n",
        p.citrinet_cores
    );
    let _ = writeln!(
        w,
        "| model | ideal 1g.5gb x7 req/s | cores (1g x7) | ideal 7g.40gb req/s | cores (7g) |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|");
    for r in rs {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            r.label,
            f(r.g1.ideal.thr(), 0),
            f(r.cores_needed.0, 0),
            f(r.g7.ideal.thr(), 0),
            f(r.cores_needed.1, 0)
        );
    }
    let _ = writeln!(w, "\n![cores](fig8_cores.svg)\n");

    // Fig 17/18.
    let _ = writeln!(w, "## Fig 17/18: throughput vs p95 latency\n");
    for (title, pick) in [("A100 1g.5gb x7", 0usize), ("A100 7g.40gb x1", 1usize)] {
        let _ = writeln!(
            w,
            "{title}: max throughput under the SLA (p95 there, ms).\n"
        );
        let _ = writeln!(
            w,
            "| model | CPU req/s (p95) | PREBA req/s (p95) | ideal req/s (p95) | PREBA / CPU | PREBA share of ideal % |"
        );
        let _ = writeln!(w, "|---|---|---|---|---|---|");
        for r in rs {
            let t = if pick == 0 { &r.g1 } else { &r.g7 };
            let _ = writeln!(
                w,
                "| {} | {} ({}) | {} ({}) | {} ({}) | {} | {} |",
                r.label,
                f(t.cpu.thr(), 0),
                f(t.cpu.p95(), 1),
                f(t.preba.thr(), 0),
                f(t.preba.p95(), 1),
                f(t.ideal.thr(), 0),
                f(t.ideal.p95(), 1),
                f(ratio(t.preba.thr(), t.cpu.thr()), 2),
                f(pct(t.preba.thr(), t.ideal.thr()), 1)
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "Curves (1g.5gb x7; offered rate at fractions of each configuration's max):\n"
    );
    for r in rs {
        let _ = writeln!(w, "![{}](fig17_{}.svg)", r.label, r.name);
    }
    let _ = writeln!(w);

    // Fig 20.
    let _ = writeln!(w, "## Fig 20: power and energy efficiency\n");
    let _ = writeln!(
        w,
        "At each configuration's max-throughput point on 1g.5gb x7. Power = CPU (idle + busy cores) + GPU slices + card.\n"
    );
    let _ = writeln!(
        w,
        "| model | CPU W | CPU req/J | PREBA W (card W) | PREBA req/J | ideal W | ideal req/J | PREBA / CPU |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for r in rs {
        let t = &r.g1;
        let card_w = t.preba.r.as_ref().map_or(f64::NAN, |x| x.power_w.card);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
            r.label,
            f(t.cpu.power(), 0),
            f(t.cpu.per_joule(), 1),
            f(t.preba.power(), 0),
            f(card_w, 1),
            f(t.preba.per_joule(), 1),
            f(t.ideal.power(), 0),
            f(t.ideal.per_joule(), 1),
            f(ratio(t.preba.per_joule(), t.cpu.per_joule()), 2)
        );
    }
    let _ = writeln!(w, "\n![energy](fig20_energy.svg)\n");

    // Fig 21.
    let _ = writeln!(w, "## Fig 21: cost efficiency\n");
    let _ = writeln!(
        w,
        "Throughput / (CAPEX + OPEX x {} years) in requests/s per 1,000 USD. CAPEX: server {} USD + A100 {} USD (+ card {} USD for PREBA); OPEX at {} USD/kWh of the average power at the operating point.\n",
        cfg.cost.years,
        cfg.cost.server_usd,
        cx.gpu("a100").usd,
        cfg.cost.card_usd,
        cfg.cost.kwh_usd
    );
    let _ = writeln!(
        w,
        "| model | CPU CAPEX+OPEX USD | CPU req/s per kUSD | PREBA CAPEX+OPEX USD | PREBA req/s per kUSD | PREBA / CPU |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    let tco =
        |b: &Best| b.capex + b.power() / 1000.0 * 24.0 * 365.0 * cfg.cost.years * cfg.cost.kwh_usd;
    for r in rs {
        let t = &r.g1;
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            r.label,
            f(tco(&t.cpu), 0),
            f(t.cpu.per_kusd(&cfg.cost), 1),
            f(tco(&t.preba), 0),
            f(t.preba.per_kusd(&cfg.cost), 1),
            f(
                ratio(t.preba.per_kusd(&cfg.cost), t.cpu.per_kusd(&cfg.cost)),
                2
            )
        );
    }
    let _ = writeln!(w, "\n![cost](fig21_cost.svg)\n");

    // Fig 22.
    let _ = writeln!(w, "## Fig 22: audio ablation\n");
    let _ = writeln!(
        w,
        "1g.5gb x7: CPU (librosa) with the baseline's batcher (Triton, max_batch_size = Batch_knee, no delay); the card with the same batcher (the card only: no PREBA batching); the card + PREBA batching. For reference, the card with no batching at all (Batch_max 1, Time_queue 0). Paper: the card +{} %, then PREBA batching +{} %.\n",
        p.ablation_card_pct, p.ablation_batch_pct
    );
    let _ = writeln!(
        w,
        "| model | CPU req/s | card, no batching req/s | card only (Triton batcher) req/s | card + PREBA req/s | card vs CPU | PREBA batching vs card only |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for r in rs.iter().filter(|r| r.audio) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {:+.0} % | {:+.0} % |",
            r.label,
            f(r.g1.cpu.thr(), 0),
            f(r.no_batching.thr(), 0),
            f(r.card_triton.thr(), 0),
            f(r.g1.preba.thr(), 0),
            pct(r.card_triton.thr(), r.g1.cpu.thr()) - 100.0,
            pct(r.g1.preba.thr(), r.card_triton.thr()) - 100.0
        );
    }
    let _ = writeln!(w, "\n![ablation](fig22_ablation.svg)\n");

    // Policies.
    let _ = writeln!(
        w,
        "## Beyond the paper: batching policies on mixed slices\n"
    );
    let _ = writeln!(
        w,
        "Card preprocessing; max throughput under the SLA (p95 ms, share of requests within the SLA incl. rejected). `preba` takes one slice type (one Batch_max cannot be right for 3g and 2g at once), so it has no mixed-slice row.\n"
    );
    let _ = writeln!(
        w,
        "| model | slices | policy | req/s | p95 ms | within SLA % | mean batch |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for r in rs {
        for (slices, pol, b) in &r.policies {
            match &b.r {
                Some(x) => {
                    let _ = writeln!(
                        w,
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        r.label,
                        slices,
                        pol,
                        f(x.throughput, 0),
                        f(x.p95_ms, 1),
                        f(x.sla_met.unwrap_or(f64::NAN) * 100.0, 2),
                        f(x.mean_batch, 1)
                    );
                }
                None => {
                    let _ = writeln!(
                        w,
                        "| {} | {} | {} | n/a | - | - | - |",
                        r.label, slices, pol
                    );
                }
            }
        }
    }
    let mut deadline_notes = Vec::new();
    for r in rs {
        let get = |sl: &str, pol: &str| {
            r.policies
                .iter()
                .find(|(s, p, _)| s == sl && p == pol)
                .map(|x| x.2.thr())
        };
        if let (Some(d), Some(p)) = (get("1g.5gbx7", "deadline"), get("1g.5gbx7", "preba")) {
            deadline_notes.push(if d > 0.0 && p > 0.0 {
                format!(
                    "{}: deadline / preba on 1g.5gb x7 = {:.2}x",
                    r.label,
                    ratio(d, p)
                )
            } else {
                format!(
                    "{}: deadline or preba met the SLA at no rate on 1g.5gb x7 (n/a: p95 over the SLA or > 1% rejected at every rate tried)",
                    r.label
                )
            });
        }
        if let Some((sl, _, _)) = r.policies.iter().find(|(s, _, _)| s != "1g.5gbx7")
            && let (Some(d), Some(t)) = (get(sl, "deadline"), get(sl, "triton"))
        {
            deadline_notes.push(if d > 0.0 && t > 0.0 {
                format!(
                    "{}: deadline / triton on {sl} = {:.2}x",
                    r.label,
                    ratio(d, t)
                )
            } else {
                format!("{}: deadline or triton n/a on {sl}", r.label)
            });
        }
    }
    let _ = writeln!(w, "\n{}.\n", deadline_notes.join("; "));

    // Capacity.
    let _ = writeln!(w, "## Beyond the paper: capacity planning\n");
    let _ = writeln!(w, "{}\n", cfg.capacity.source);
    let _ = write!(w, "| model |");
    for l in &cfg.capacity.loads {
        let _ = write!(
            w,
            " {l:.0} req/s: A100s+cards (PREBA) / A100s+32-core hosts (CPU) / CPU cores |"
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "|---|{}", "---|".repeat(cfg.capacity.loads.len()));
    for r in rs {
        let _ = write!(w, "| {} |", r.label);
        let pc = cx.per_core_at_mean(cx.model(&r.name), cx.baseline_cpu(cx.model(&r.name)));
        for l in &cfg.capacity.loads {
            let g = |t: f64| {
                if t > 0.0 {
                    format!("{:.0}", (l / t).ceil())
                } else {
                    "-".into()
                }
            };
            let _ = write!(
                w,
                " {} / {} / {:.0} |",
                g(r.g1.preba.thr()),
                g(r.g1.cpu.thr()),
                l / pc
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w);

    // Golden.
    let _ = writeln!(
        w,
        "## Beyond the paper: our golden model as the CPU baseline\n"
    );
    let _ = writeln!(
        w,
        "How much of PREBA's gain remains against a fast CPU path: 32 cores running our preprocessing (preba-preprocess) at its measured per-core rate ({} img/s, {} s/s of audio) instead of OpenCV / librosa; 1g.5gb x7.\n",
        cfg.cpu.golden_per_core, cfg.cpu.golden_audio_per_core
    );
    let _ = writeln!(
        w,
        "| model | CPU paper baseline req/s | CPU ours req/s | PREBA req/s | PREBA / paper baseline | PREBA / ours |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for r in rs {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            r.label,
            f(r.g1.cpu.thr(), 0),
            f(r.golden.thr(), 0),
            f(r.g1.preba.thr(), 0),
            f(ratio(r.g1.preba.thr(), r.g1.cpu.thr()), 2),
            f(ratio(r.g1.preba.thr(), r.golden.thr()), 2)
        );
    }
    let _ = writeln!(w);

    // Hopper.
    let _ = writeln!(w, "## Beyond the paper: H100 / H200 slices\n");
    let _ = writeln!(w, "{}\n", cfg.hopper.source);
    let _ = writeln!(
        w,
        "| model | slices | CPU req/s | PREBA req/s | ideal req/s | PREBA / CPU | share of ideal % | cores to feed |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for r in rs {
        for (sl, t) in [
            ("A100 1g.5gb x7", &r.g1),
            ("H100 1g.10gb x7", &r.h100),
            ("H200 1g.18gb x7", &r.h200),
        ] {
            let pc = cx.per_core_at_mean(cx.model(&r.name), cx.baseline_cpu(cx.model(&r.name)));
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                sl,
                f(t.cpu.thr(), 0),
                f(t.preba.thr(), 0),
                f(t.ideal.thr(), 0),
                f(ratio(t.preba.thr(), t.cpu.thr()), 2),
                f(pct(t.preba.thr(), t.ideal.thr()), 1),
                f(t.ideal.thr() / pc, 0)
            );
        }
    }
    let _ = writeln!(w);

    // Differences.
    let _ = writeln!(w, "## Where the reproduction differs, and why\n");
    let worst = rs
        .iter()
        .zip(&rat)
        .min_by(|a, b| a.1.share.total_cmp(&b.1.share))
        .map(|(r, q)| format!("{} ({:.1}%)", r.label, q.share))
        .unwrap_or_default();
    let _ = writeln!(
        w,
        "- **The GPU side is derived, not measured.** Only ResNet-50 and ViT-B/16 have published per-slice MIG sweeps (MIGPerf, PyTorch eager FP32); the paper's six models are derived from them by cost ratios and a floor fitted to the paper's Batch_knee values, the audio models from one CitriNet TITAN V sweep, and the second Conformer is a further 2x guess. Absolute requests/s therefore differ from the paper's (which ran TensorRT/PyTorch on a real A100); the *ratios* depend mostly on which side (CPU, card or GPU) is the bottleneck, which the derivation preserves to first order.\n\
- **Throughput ratio ({:.2}x vs {}x).** Our CPU baseline runs at per-core rates measured on this machine's cores (OpenCV {:.0} img/s, librosa {:.0} s/s per core), assumed equal to an EPYC 7502 core; the paper's baseline (Python front ends, PyTorch DataLoader workers, resampling from 44.1 kHz or 22 kHz sources) is likely slower per core, which makes its ratios larger for the fast models and smaller for Swin-T, whose GPU time hides preprocessing.\n\
- **p95 ratio.** We compare p95 at one offered load, 80% of the CPU baseline's max throughput, where the CPU cores already queue and the card does not; the ratio grows without bound as that load nears the CPU's limit, and the paper reports its own operating points, so this ratio is the least comparable of the four.\n\
- **Energy and cost** rest on assumed powers (EPYC idle 55 W, A100 idle 35 W / 250 W busy, the card model's 18 W board) and assumed prices (sim/eval/paper.toml); the paper's are not reachable here. PREBA's gain in req/J tracks its throughput gain because wall power changes little between the configurations.\n\
- **Share of ideal.** Ours: min {} over the models, {} of {} at >= {}%. Where PREBA falls short the card is the bottleneck at the assumed CU count (see the sensitivity table); the paper's 91.6%-on-5-of-6 depends on its (unstated) CU count just as ours does. The batching itself costs little: `preba` with preprocessed inputs (the ideal) is the reference, so the gap is preprocessing capacity plus the 30 us host hop.\n\
- **Audio ablation.** librosa measured here does {:.0} s of 16 kHz audio per second per core, so 32 cores feed ~{:.0} utterances/s: for audio the CPU is *not* our bottleneck, the baseline's batcher is (Triton with one max_batch_size, no length buckets, padding every batch to its longest utterance). So the card alone adds ~0% and PREBA's bucketed batching adds the gain, where the paper saw +101% from the card (its CPU path, 393 cores for CitriNet, is ~10x slower per core than librosa here: Python, resampling, file decode) and +54% from batching. The deadline policy predicts each audio batch at the length bucket it pads to, but it forms batches in deadline order, so lengths mix and every batch pays for its longest utterance: on audio PREBA's length buckets beat it (the policy table above), while it still beats Triton's batcher on mixed slices.\n\
- **Validation of the simulator** (`cargo xtask eval --validate`, SqueezeNet, CPU preprocessing on one pinned core of this machine, the load generator on the other, modeled 1g.5gb x7): the simulated core's mean service time is the server's own CPU per request, and its fixed wait (HTTP, hand-offs) and service-time spread are fitted on runs apart from the sweep; then throughput agrees within 4% and p95 within 15% up to ~80% CPU (docs/eval/validate.txt: 3.9% and 6.2%). Near saturation the p95 of a short run is volatile on both sides.\n\
- **Not modeled**: PCIe bandwidth limits (card -> host -> GPU), audio resampling on the card, CPU work of the server itself in these scenarios (HTTP, copies: see `cargo xtask bench serve`; `--validate` measures it), GPU latency variance (slices take lat(b) = p50 of the profile deterministically).\n",
        mthr,
        p.throughput_x,
        cfg.cpu.opencv_per_core,
        cfg.cpu.librosa_per_core,
        worst,
        above,
        rs.len(),
        p.share_min_pct,
        cfg.cpu.librosa_per_core,
        cfg.cpu.librosa_per_core * cfg.cpu.cores as f64 / cfg.audio.mean_s
    );
    (s, min_share)
}

// ---------------------------------------------------------------- plots

fn plots(cx: &Ctx, rs: &[ModelResult], dir: &Path) -> Result<(), Error> {
    for r in rs {
        let series: Vec<Series> = r
            .curves
            .iter()
            .map(|(n, v)| Series {
                name: n.clone(),
                points: v.iter().map(|x| (x.throughput, x.p95_ms)).collect(),
            })
            .collect();
        plot::lines(
            &dir.join(format!("fig17_{}.svg", r.name)),
            &format!("{}: p95 vs throughput, A100 1g.5gb x7", r.label),
            "throughput (req/s)",
            "p95 latency (ms)",
            &series,
            true,
        )?;
    }
    let cats: Vec<String> = rs.iter().map(|r| r.label.clone()).collect();
    plot::bars(
        &dir.join("fig8_cores.svg"),
        "CPU cores needed to feed the GPU (OpenCV / librosa)",
        "cores",
        &cats,
        &["A100 1g.5gb x7", "A100 7g.40gb x1"],
        &[
            rs.iter().map(|r| r.cores_needed.0).collect(),
            rs.iter().map(|r| r.cores_needed.1).collect(),
        ],
    )?;
    plot::bars(
        &dir.join("fig20_energy.svg"),
        "Energy efficiency at max throughput under the SLA (1g.5gb x7)",
        "requests per joule",
        &cats,
        &["CPU", "PREBA", "ideal"],
        &[
            rs.iter().map(|r| r.g1.cpu.per_joule()).collect(),
            rs.iter().map(|r| r.g1.preba.per_joule()).collect(),
            rs.iter().map(|r| r.g1.ideal.per_joule()).collect(),
        ],
    )?;
    plot::bars(
        &dir.join("fig21_cost.svg"),
        "Cost efficiency (1g.5gb x7)",
        "req/s per 1,000 USD (3-year TCO)",
        &cats,
        &["CPU", "PREBA"],
        &[
            rs.iter().map(|r| r.g1.cpu.per_kusd(&cx.cfg.cost)).collect(),
            rs.iter()
                .map(|r| r.g1.preba.per_kusd(&cx.cfg.cost))
                .collect(),
        ],
    )?;
    let au: Vec<&ModelResult> = rs.iter().filter(|r| r.audio).collect();
    plot::bars(
        &dir.join("fig22_ablation.svg"),
        "Audio ablation (1g.5gb x7)",
        "max throughput under the SLA (req/s)",
        &au.iter().map(|r| r.label.clone()).collect::<Vec<_>>(),
        &[
            "CPU (librosa)",
            "card, no batching",
            "card only (Triton)",
            "card + PREBA",
        ],
        &[
            au.iter().map(|r| r.g1.cpu.thr()).collect(),
            au.iter().map(|r| r.no_batching.thr()).collect(),
            au.iter().map(|r| r.card_triton.thr()).collect(),
            au.iter().map(|r| r.g1.preba.thr()).collect(),
        ],
    )?;
    let series: Vec<Series> = rs
        .iter()
        .map(|r| Series {
            name: r.label.clone(),
            points: r
                .sweep
                .iter()
                .map(|(c, b)| (*c as f64, pct(b.thr(), r.g1.ideal.thr())))
                .collect(),
        })
        .collect();
    plot::lines(
        &dir.join("sensitivity.svg"),
        "PREBA share of ideal vs card CUs (image CUs / Mel CUs), 1g.5gb x7",
        "CUs",
        "% of ideal",
        &series,
        false,
    )?;
    Ok(())
}

// ---------------------------------------------------------------- command line

/// `preba sim --eval DIR [--quick] [--config FILE]`: returns the exit code.
pub fn cli(args: &[String]) -> i32 {
    let mut dir = None;
    let mut quick = false;
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--eval" => dir = it.next().cloned(),
            "--quick" => quick = true,
            "--config" => config = it.next().cloned(),
            other => {
                eprintln!(
                    "preba sim: unexpected argument {other:?}\nusage: preba sim --eval DIR [--quick] [--config FILE]"
                );
                return 2;
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!(
            "preba sim: --eval needs a directory\nusage: preba sim --eval DIR [--quick] [--config FILE]"
        );
        return 2;
    };
    let cfg = match &config {
        None => Config::parse(DEFAULT_CONFIG, "sim/eval/paper.toml"),
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| Error::Io {
                path: p.clone(),
                problem: e.to_string(),
            })
            .and_then(|t| Config::parse(&t, p)),
    };
    match cfg.and_then(|c| evaluate(&c, Path::new(&dir), quick)) {
        Ok(s) => {
            println!("{}", s.last_line);
            0
        }
        Err(e) => {
            eprintln!("preba sim --eval: {e}");
            1
        }
    }
}
