//! The table on stdout, the CSV file and the SVG plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::{LoadgenError, RateResult};

/// The CSV header line (without the newline).
pub const CSV_HEADER: &str =
    "label,offered_rps,achieved_rps,p50_ms,p95_ms,p99_ms,ok,errors,error_detail,modeled";

/// One run read back from a CSV file (or just measured).
#[derive(Clone, Debug, PartialEq)]
pub struct CsvRun {
    pub label: String,
    pub results: Vec<RateResult>,
}

fn ms(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.2}")
    }
}

pub(crate) fn table_header() -> String {
    format!(
        "{:>10} {:>11} {:>9} {:>9} {:>9} {:>8} {:>7}  {}\n",
        "offered/s", "achieved/s", "p50 ms", "p95 ms", "p99 ms", "ok", "errors", "note"
    )
}

pub(crate) fn table_row(r: &RateResult) -> String {
    let mut s = format!(
        "{:>10.1} {:>11.1} {:>9} {:>9} {:>9} {:>8} {:>7}  {}\n",
        r.offered,
        r.achieved,
        ms(r.p50_ms),
        ms(r.p95_ms),
        ms(r.p99_ms),
        r.ok,
        r.error_count(),
        if r.modeled { "modeled" } else { "" }
    );
    for (reason, n) in &r.errors {
        let _ = writeln!(s, "{:>12} x {reason}", n);
    }
    s
}

/// The readable table of a run: header, one row per rate, errors by reason under each row.
pub fn format_table(results: &[RateResult]) -> String {
    let mut s = table_header();
    for r in results {
        s.push_str(&table_row(r));
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_num(x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        format!("{x:.3}")
    }
}

/// Writes one row per rate under [`CSV_HEADER`].
pub fn write_csv(path: &Path, label: &str, results: &[RateResult]) -> Result<(), LoadgenError> {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in results {
        let detail: Vec<String> = r
            .errors
            .iter()
            .map(|(k, n)| format!("{}={n}", k.replace(';', ",")))
            .collect();
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{}",
            csv_field(label),
            csv_num(r.offered),
            csv_num(r.achieved),
            csv_num(r.p50_ms),
            csv_num(r.p95_ms),
            csv_num(r.p99_ms),
            r.ok,
            r.error_count(),
            csv_field(&detail.join("; ")),
            r.modeled
        );
    }
    std::fs::write(path, s).map_err(|e| LoadgenError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Splits one CSV line (RFC 4180 quoting, no embedded newlines).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

/// Reads a CSV written by [`write_csv`]; the label is the first row's label column.
pub fn read_csv(path: &Path) -> Result<CsvRun, LoadgenError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadgenError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let err = |line: usize, reason: String| LoadgenError::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim_end()).unwrap_or("");
    if header != CSV_HEADER {
        return Err(err(1, format!("header is not `{CSV_HEADER}`")));
    }
    let mut label = None;
    let mut results = Vec::new();
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let f = split_csv(line).map_err(|e| err(n, e))?;
        if f.len() != 10 {
            return Err(err(n, format!("{} columns, want 10", f.len())));
        }
        let num = |k: usize| -> Result<f64, LoadgenError> {
            if f[k].is_empty() {
                return Ok(f64::NAN);
            }
            f[k].parse()
                .map_err(|_| err(n, format!("column {k} is not a number: {:?}", f[k])))
        };
        let mut errors = BTreeMap::new();
        for part in f[8].split("; ").filter(|p| !p.is_empty()) {
            let (k, v) = part
                .rsplit_once('=')
                .ok_or_else(|| err(n, format!("bad error detail {part:?}")))?;
            let v = v
                .parse()
                .map_err(|_| err(n, format!("bad error count {part:?}")))?;
            errors.insert(k.to_string(), v);
        }
        label.get_or_insert_with(|| f[0].clone());
        results.push(RateResult {
            offered: num(1)?,
            achieved: num(2)?,
            p50_ms: num(3)?,
            p95_ms: num(4)?,
            p99_ms: num(5)?,
            ok: f[6]
                .parse()
                .map_err(|_| err(n, format!("ok count {:?}", f[6])))?,
            errors,
            modeled: f[9] == "true",
        });
    }
    let label = label.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(CsvRun { label, results })
}

/// Throughput (x) against p95 latency (y), one line per run.
pub fn plot_svg(out: &Path, runs: &[CsvRun]) -> Result<(), LoadgenError> {
    let pts = |r: &CsvRun| -> Vec<(f64, f64)> {
        r.results
            .iter()
            .filter(|x| x.achieved.is_finite() && x.p95_ms.is_finite())
            .map(|x| (x.achieved, x.p95_ms))
            .collect()
    };
    let all: Vec<(f64, f64)> = runs.iter().flat_map(pts).collect();
    let xmax = all.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.1;
    let ymax = all.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        let perr = |e: &dyn std::fmt::Display| LoadgenError::Plot(e.to_string());
        root.fill(&WHITE).map_err(|e| perr(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("p95 latency against throughput", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)
            .map_err(|e| perr(&e))?;
        chart
            .configure_mesh()
            .x_desc("achieved throughput (requests/s)")
            .y_desc("p95 latency (ms)")
            .draw()
            .map_err(|e| perr(&e))?;
        for (i, run) in runs.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let p = pts(run);
            chart
                .draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))
                .map_err(|e| perr(&e))?
                .label(run.label.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 16, y + 4)], color.filled())
                });
            chart
                .draw_series(p.into_iter().map(|xy| Circle::new(xy, 3, color.filled())))
                .map_err(|e| perr(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| perr(&e))?;
        root.present().map_err(|e| perr(&e))?;
    }
    std::fs::write(out, svg).map_err(|e| LoadgenError::Io {
        path: out.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(
            split_csv(r#"a,"b,c","d""e",,"#).unwrap(),
            vec!["a", "b,c", "d\"e", "", ""]
        );
        assert!(split_csv(r#"a,"b"#).is_err());
    }
}
