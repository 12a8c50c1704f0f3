//! Profile entries as `preba-profile-1` TOML: the knee (by the batcher's
//! rule), formatting, and merging into an existing table.

use std::fmt::Write as _;

use preba_batcher::profile::{KNEE_THROUGHPUT_FRACTION, ProfileTable};
use serde::{Deserialize, Serialize};

use crate::ProfileError;

/// One measured batch size.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasuredPoint {
    pub batch: u32,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Requests per second: batch / mean latency.
    pub throughput: f64,
    /// Timed batches behind the numbers.
    pub samples: usize,
}

/// One (model, slice type, bucket) curve with its knee.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasuredEntry {
    pub model: String,
    pub slice: String,
    pub bucket: Option<u32>,
    pub source: String,
    pub points: Vec<MeasuredPoint>,
    /// Batch_knee by the batcher's rule.
    pub batch_knee: u32,
    /// Time_knee (p95 at Batch_knee), ms.
    pub time_knee_ms: f64,
}

/// The knee rule, in words, as written into tables and printed.
pub fn knee_rule() -> String {
    format!(
        "Batch_knee = the smallest profiled batch whose throughput is at least {:.0}% of the best throughput over the points; Time_knee = the p95 latency at Batch_knee (preba_batcher::profile)",
        KNEE_THROUGHPUT_FRACTION * 100.0
    )
}

fn round(x: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    ((x * m).round() / m).max(1.0 / m)
}

/// Rounds the points as they are written (ms to 4 decimals, throughput to 2).
pub fn rounded(points: &[MeasuredPoint]) -> Vec<MeasuredPoint> {
    points
        .iter()
        .map(|p| {
            let p50 = round(p.p50_ms, 4);
            MeasuredPoint {
                batch: p.batch,
                p50_ms: p50,
                p95_ms: round(p.p95_ms, 4).max(p50),
                throughput: round(p.throughput, 2),
                samples: p.samples,
            }
        })
        .collect()
}

/// (Batch_knee, Time_knee ms) of a curve by the batcher's rule: the points
/// are written as a `preba-profile-1` entry without knees, parsed by
/// [`ProfileTable::parse`] and asked for [`preba_batcher::profile::Entry::knee`].
pub fn knee(points: &[MeasuredPoint]) -> Result<(u32, f64), ProfileError> {
    if points.is_empty() {
        return Err(ProfileError::Other("no points to find a knee in".into()));
    }
    let mut text = format!("format = \"{}\"\n", preba_batcher::profile::FORMAT);
    write_entry(
        &mut text,
        "knee",
        "knee",
        None,
        None,
        None,
        "knee finder",
        points,
    );
    let table = ProfileTable::parse(&text).map_err(|e| {
        ProfileError::Other(format!(
            "knee: the measured points do not form a profile entry: {e}"
        ))
    })?;
    let (b, t_ns) = table.entries()[0].knee();
    Ok((b, t_ns as f64 / 1e6))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn num(x: f64) -> String {
    format!("{x:?}")
}

#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut String,
    model: &str,
    slice: &str,
    bucket: Option<u32>,
    batch_knee: Option<u32>,
    time_knee_ms: Option<f64>,
    source: &str,
    points: &[MeasuredPoint],
) {
    let _ = writeln!(out, "\n[[entry]]");
    let _ = writeln!(out, "model = {}", toml_str(model));
    let _ = writeln!(out, "slice = {}", toml_str(slice));
    if let Some(b) = bucket {
        let _ = writeln!(out, "bucket = {b}");
    }
    if let Some(b) = batch_knee {
        let _ = writeln!(out, "batch_knee = {b}");
    }
    if let Some(t) = time_knee_ms {
        let _ = writeln!(out, "time_knee_ms = {}", num(t));
    }
    let _ = writeln!(out, "source = {}", toml_str(source));
    let _ = writeln!(out, "points = [");
    for p in points {
        let _ = writeln!(
            out,
            "  {{ batch = {}, p50_ms = {}, p95_ms = {}, throughput = {} }},",
            p.batch,
            num(p.p50_ms),
            num(p.p95_ms),
            num(p.throughput)
        );
    }
    let _ = writeln!(out, "]");
}

/// An existing table's entry, every field kept as written.
#[derive(Serialize, Deserialize)]
struct RawTable {
    #[allow(dead_code)]
    format: Option<String>,
    #[serde(default)]
    entry: Vec<RawEntry>,
}

#[derive(Serialize, Deserialize)]
struct RawEntry {
    model: String,
    slice: String,
    bucket: Option<u32>,
    batch_knee: Option<u32>,
    time_knee_ms: Option<f64>,
    source: String,
    points: Vec<RawPoint>,
}

#[derive(Serialize, Deserialize)]
struct RawPoint {
    batch: u32,
    p50_ms: f64,
    p95_ms: f64,
    throughput: Option<f64>,
}

fn header() -> String {
    format!(
        "# preba profile table (format {}), written by `preba profile`.\n# Knee rule: {}.\n# Latencies are per batch in ms, round trip to the slice's worker process;\n# throughput = batch / mean latency (requests/s).\nformat = \"{}\"\n",
        preba_batcher::profile::FORMAT,
        knee_rule(),
        preba_batcher::profile::FORMAT
    )
}

/// The `preba-profile-1` text of `entries`, merged into `existing` (a table's
/// text) when given: entries with the same (model, slice, bucket) are replaced
/// in place, the others kept as written, new ones appended. The result is
/// checked with [`ProfileTable::parse`].
pub fn render(existing: Option<&str>, entries: &[MeasuredEntry]) -> Result<String, ProfileError> {
    let mut out = header();
    let mut pending: Vec<&MeasuredEntry> = entries.iter().collect();
    let emit = |out: &mut String, e: &MeasuredEntry| {
        write_entry(
            out,
            &e.model,
            &e.slice,
            e.bucket,
            Some(e.batch_knee),
            Some(e.time_knee_ms),
            &e.source,
            &rounded(&e.points),
        )
    };
    if let Some(text) = existing {
        ProfileTable::parse(text).map_err(|e| {
            ProfileError::Other(format!(
                "not a {} table: {e}",
                preba_batcher::profile::FORMAT
            ))
        })?;
        let raw: RawTable = toml::from_str(text).map_err(|e| ProfileError::Other(e.to_string()))?;
        for r in raw.entry {
            let same = pending
                .iter()
                .position(|e| e.model == r.model && e.slice == r.slice && e.bucket == r.bucket);
            match same {
                Some(i) => emit(&mut out, pending.remove(i)),
                None => {
                    let pts: Vec<MeasuredPoint> = r
                        .points
                        .iter()
                        .map(|p| MeasuredPoint {
                            batch: p.batch,
                            p50_ms: p.p50_ms,
                            p95_ms: p.p95_ms,
                            throughput: p
                                .throughput
                                .unwrap_or(f64::from(p.batch) * 1000.0 / p.p50_ms),
                            samples: 0,
                        })
                        .collect();
                    write_entry(
                        &mut out,
                        &r.model,
                        &r.slice,
                        r.bucket,
                        r.batch_knee,
                        r.time_knee_ms,
                        &r.source,
                        &pts,
                    );
                }
            }
        }
    }
    for e in pending {
        emit(&mut out, e);
    }
    ProfileTable::parse(&out).map_err(|e| {
        ProfileError::Other(format!("internal: the written table does not parse: {e}"))
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(lat: &[(u32, f64)]) -> Vec<MeasuredPoint> {
        lat.iter()
            .map(|&(b, ms)| MeasuredPoint {
                batch: b,
                p50_ms: ms,
                p95_ms: ms * 1.1,
                throughput: f64::from(b) * 1000.0 / ms,
                samples: 1,
            })
            .collect()
    }

    fn entry(model: &str, bucket: Option<u32>, lat: &[(u32, f64)]) -> MeasuredEntry {
        let points = pts(lat);
        let (b, t) = knee(&points).unwrap();
        MeasuredEntry {
            model: model.into(),
            slice: "cpu-1t".into(),
            bucket,
            source: "test \"quoted\"".into(),
            points,
            batch_knee: b,
            time_knee_ms: t,
        }
    }

    #[test]
    fn render_round_trips_and_merges() {
        let a = entry("a", None, &[(1, 1.0), (2, 1.5), (4, 2.5)]);
        let text = render(None, std::slice::from_ref(&a)).unwrap();
        let t = ProfileTable::parse(&text).unwrap();
        let e = t.find("a", "cpu-1t", None).unwrap();
        assert_eq!(e.points().len(), 3);
        assert_eq!(e.source(), "test \"quoted\"");
        assert_eq!(e.knee().0, a.batch_knee);
        // Merge: replace a, keep the builtin-style entry b, append c.
        let b = entry("b", Some(1), &[(1, 2.0)]);
        let text2 = render(Some(&text), std::slice::from_ref(&b)).unwrap();
        let a2 = entry("a", None, &[(1, 3.0), (2, 3.1)]);
        let text3 = render(Some(&text2), std::slice::from_ref(&a2)).unwrap();
        let t3 = ProfileTable::parse(&text3).unwrap();
        assert_eq!(t3.entries().len(), 2);
        assert_eq!(t3.entries()[0].model(), "a");
        assert_eq!(t3.entries()[0].points().len(), 2);
        assert_eq!(
            t3.find("b", "cpu-1t", Some(1)).unwrap().points()[0].p50_ms,
            2.0
        );
        assert!(render(Some("format = \"x\""), &[a2]).is_err());
    }
}
