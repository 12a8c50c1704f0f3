//! Profile tables: measured or derived latency curves per (model, slice type,
//! audio bucket), the input of Batch_knee / Time_knee.
//!
//! Format `preba-profile-1` (TOML), shared by `preba serve --profile FILE`,
//! modeled slices, `preba profile` and `preba sim`:
//!
//! ```toml
//! format = "preba-profile-1"
//! [[entry]]
//! model = "squeezenet1_1"
//! slice = "a100-1g.5gb"      # slice type
//! bucket = 0                  # optional: audio length bucket index
//! batch_knee = 4              # optional: from the knee rule when absent
//! time_knee_ms = 3.1          # optional: p95 at batch_knee when absent
//! source = "where the numbers come from, [P] published or [D] derived"
//! points = [ { batch = 1, p50_ms = 1.0, p95_ms = 1.2, throughput = 900.0 } ]
//! ```
//!
//! `points` are strictly increasing in `batch`, latencies positive with
//! `p95_ms >= p50_ms`; `throughput` (requests/s) defaults to
//! `batch * 1000 / p50_ms`.
//!
//! Knee rule: Batch_knee is the smallest profiled batch whose throughput is at
//! least 90% of the best throughput over the points (past it, more batching
//! buys under 10% throughput and costs latency linearly); Time_knee is the p95
//! latency at that batch.
//!
//! Latency between points is interpolated linearly, extrapolated past the last
//! point along the last two points (with one point: at constant throughput),
//! and never below the first point's latency (which also holds for batches
//! smaller than the first point's).

use serde::{Deserialize, Serialize};

use crate::{Error, Time};

/// Fraction of the best throughput the knee must reach.
pub const KNEE_THROUGHPUT_FRACTION: f64 = 0.9;

pub const FORMAT: &str = "preba-profile-1";

const BUILTIN: &str = include_str!("../profiles/a100-mig.toml");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub batch: u32,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Requests per second.
    pub throughput: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    model: String,
    slice: String,
    bucket: Option<u32>,
    batch_knee: Option<u32>,
    time_knee_ms: Option<f64>,
    source: String,
    points: Vec<Point>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProfileTable {
    entries: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    format: Option<String>,
    #[serde(default)]
    entry: Vec<RawEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    model: Option<String>,
    slice: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_knee: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_knee_ms: Option<f64>,
    source: Option<String>,
    points: Option<Vec<RawPoint>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoint {
    batch: Option<u32>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    throughput: Option<f64>,
}

fn ms_to_ns(ms: f64) -> Time {
    // `as` saturates: negative and NaN cannot occur after validation anyway.
    (ms * 1e6).round() as Time
}

impl ProfileTable {
    pub fn parse(text: &str) -> Result<ProfileTable, Error> {
        let raw: RawTable = toml::from_str(text).map_err(|e| Error::Toml(e.to_string()))?;
        match raw.format.as_deref() {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Error::Toml(format!(
                    "field `format`: {other:?} is not {FORMAT:?}"
                )));
            }
            None => return Err(Error::Toml(format!("field `format`: missing ({FORMAT:?})"))),
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.entry.len());
        for (index, e) in raw.entry.into_iter().enumerate() {
            let entry = validate(index, e)?;
            if entries.iter().any(|o| {
                o.model == entry.model && o.slice == entry.slice && o.bucket == entry.bucket
            }) {
                return Err(entry.err(index, "bucket", "duplicate (model, slice, bucket)".into()));
            }
            entries.push(entry);
        }
        Ok(ProfileTable { entries })
    }

    /// The shipped default: A100 MIG slices, `batcher/profiles/a100-mig.toml`.
    pub fn builtin() -> ProfileTable {
        ProfileTable::parse(BUILTIN).expect("the builtin profile table is tested to parse")
    }

    pub fn find(&self, model: &str, slice: &str, bucket: Option<u32>) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.model == model && e.slice == slice && e.bucket == bucket)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The table as `preba-profile-1` TOML; `parse` gives back an equal table.
    pub fn to_toml(&self) -> String {
        let raw = RawTable {
            format: Some(FORMAT.into()),
            entry: self
                .entries
                .iter()
                .map(|e| RawEntry {
                    model: Some(e.model.clone()),
                    slice: Some(e.slice.clone()),
                    bucket: e.bucket,
                    batch_knee: e.batch_knee,
                    time_knee_ms: e.time_knee_ms,
                    source: Some(e.source.clone()),
                    points: Some(
                        e.points
                            .iter()
                            .map(|p| RawPoint {
                                batch: Some(p.batch),
                                p50_ms: Some(p.p50_ms),
                                p95_ms: Some(p.p95_ms),
                                throughput: Some(p.throughput),
                            })
                            .collect(),
                    ),
                })
                .collect(),
        };
        toml::to_string(&raw).expect("profile tables hold only TOML-representable values")
    }
}

fn validate(index: usize, e: RawEntry) -> Result<Entry, Error> {
    let model = e.model.clone().unwrap_or_default();
    let slice = e.slice.clone().unwrap_or_default();
    let err = |field: &'static str, problem: String| Error::Entry {
        index,
        model: if model.is_empty() {
            "?".into()
        } else {
            model.clone()
        },
        slice: if slice.is_empty() {
            "?".into()
        } else {
            slice.clone()
        },
        field,
        problem,
    };
    let need = |field: &'static str, v: Option<String>| match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(err(field, "empty".into())),
        None => Err(err(field, "missing".into())),
    };
    let model_s = need("model", e.model)?;
    let slice_s = need("slice", e.slice)?;
    let source = need("source", e.source)?;
    let raw_points = e.points.ok_or_else(|| err("points", "missing".into()))?;
    if raw_points.is_empty() {
        return Err(err("points", "empty".into()));
    }
    let mut points: Vec<Point> = Vec::with_capacity(raw_points.len());
    for (k, p) in raw_points.into_iter().enumerate() {
        let at = |what: &str| format!("point {k}: {what}");
        let batch = p.batch.ok_or_else(|| err("batch", at("missing")))?;
        if batch == 0 {
            return Err(err("batch", at("must be at least 1")));
        }
        if let Some(prev) = points.last()
            && batch <= prev.batch
        {
            return Err(err(
                "batch",
                at(&format!("{batch} does not increase on {}", prev.batch)),
            ));
        }
        let positive = |field: &'static str, v: Option<f64>| match v {
            None => Err(err(field, at("missing"))),
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err(err(field, at(&format!("{x} is not a positive number")))),
        };
        let p50_ms = positive("p50_ms", p.p50_ms)?;
        let p95_ms = positive("p95_ms", p.p95_ms)?;
        if p95_ms < p50_ms {
            return Err(err(
                "p95_ms",
                at(&format!("{p95_ms} is below p50 {p50_ms}")),
            ));
        }
        let throughput = match p.throughput {
            None => f64::from(batch) * 1000.0 / p50_ms,
            t => positive("throughput", t)?,
        };
        points.push(Point {
            batch,
            p50_ms,
            p95_ms,
            throughput,
        });
    }
    if e.batch_knee == Some(0) {
        return Err(err("batch_knee", "must be at least 1".into()));
    }
    if let Some(t) = e.time_knee_ms
        && !(t.is_finite() && t > 0.0)
    {
        return Err(err("time_knee_ms", format!("{t} is not a positive number")));
    }
    Ok(Entry {
        model: model_s,
        slice: slice_s,
        bucket: e.bucket,
        batch_knee: e.batch_knee,
        time_knee_ms: e.time_knee_ms,
        source,
        points,
    })
}

impl Entry {
    pub fn model(&self) -> &str {
        &self.model
    }
    pub fn slice(&self) -> &str {
        &self.slice
    }
    pub fn bucket(&self) -> Option<u32> {
        self.bucket
    }
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    fn err(&self, index: usize, field: &'static str, problem: String) -> Error {
        Error::Entry {
            index,
            model: self.model.clone(),
            slice: self.slice.clone(),
            field,
            problem,
        }
    }

    fn curve(&self, batch: u32, f: impl Fn(&Point) -> f64) -> f64 {
        let pts = &self.points;
        let b = f64::from(batch);
        let first = &pts[0];
        if batch <= first.batch {
            return f(first);
        }
        if pts.len() == 1 {
            return f(first) * b / f64::from(first.batch);
        }
        // The segment holding `batch`, or the last one to extrapolate along.
        let k = pts
            .windows(2)
            .position(|w| batch <= w[1].batch)
            .unwrap_or(pts.len() - 2);
        let (p, q) = (&pts[k], &pts[k + 1]);
        let (x0, x1) = (f64::from(p.batch), f64::from(q.batch));
        let v = f(p) + (f(q) - f(p)) * (b - x0) / (x1 - x0);
        v.max(f(first))
    }

    /// p50 latency of a batch of `batch`, in ns.
    pub fn latency_ns(&self, batch: u32) -> Time {
        ms_to_ns(self.curve(batch, |p| p.p50_ms))
    }

    /// p95 latency of a batch of `batch`, in ns.
    pub fn p95_ns(&self, batch: u32) -> Time {
        ms_to_ns(self.curve(batch, |p| p.p95_ms))
    }

    /// (Batch_knee, Time_knee in ns): the entry's own values where given,
    /// otherwise the knee rule of the module doc.
    pub fn knee(&self) -> (u32, Time) {
        let batch = self.batch_knee.unwrap_or_else(|| {
            let best = self.points.iter().map(|p| p.throughput).fold(0.0, f64::max);
            self.points
                .iter()
                .find(|p| p.throughput >= KNEE_THROUGHPUT_FRACTION * best)
                .map_or(self.points[0].batch, |p| p.batch)
        });
        let time = self
            .time_knee_ms
            .map_or_else(|| self.p95_ns(batch), ms_to_ns);
        (batch, time)
    }
}
