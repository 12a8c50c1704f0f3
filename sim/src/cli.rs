//! `preba sim --scenario FILE [-o results.json] [--seed N] [--requests N]`.

use std::path::PathBuf;
use std::time::Instant;

use crate::Error;
use crate::engine::{RateResult, simulate_rate};
use crate::scenario::Scenario;

const USAGE: &str = "\
usage: preba sim --scenario FILE [-o results.json] [--seed N] [--requests N]
       preba sim --eval DIR [--quick] [--config FILE]

Simulates the scenario (TOML; see sim/README.md) at each of its offered rates
and prints one row per rate. -o writes the results as JSON. --seed and
--requests override the scenario's. --eval runs the PREBA paper's evaluation
(sim/eval/paper.toml, or --config FILE) and writes DIR/report.md and SVG plots.
Exit 0 ok, 1 failure, 2 usage.
";

struct Args {
    scenario: PathBuf,
    out: Option<PathBuf>,
    seed: Option<u64>,
    requests: Option<usize>,
}

fn parse(args: &[String]) -> Result<Option<Args>, Error> {
    let mut it = args.iter();
    let (mut scenario, mut out, mut seed, mut requests) = (None, None, None, None);
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| Error::Usage(format!("{name} needs a value")))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--scenario" => scenario = Some(PathBuf::from(val(a)?)),
            "-o" | "--output" => out = Some(PathBuf::from(val(a)?)),
            "--seed" => {
                let v = val(a)?;
                seed = Some(v.parse().map_err(|_| {
                    Error::Usage(format!("--seed {v:?}: not a non-negative integer"))
                })?);
            }
            "--requests" => {
                let v = val(a)?;
                requests = Some(v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    Error::Usage(format!("--requests {v:?}: not a positive integer"))
                })?);
            }
            other => return Err(Error::Usage(format!("unexpected argument {other:?}"))),
        }
    }
    let scenario = scenario.ok_or_else(|| Error::Usage("--scenario FILE is required".into()))?;
    Ok(Some(Args {
        scenario,
        out,
        seed,
        requests,
    }))
}

/// `preba sim ARGS...` (the arguments after `sim`): prints a table per rate,
/// writes JSON with `-o`; returns the exit code (0, 1 failure, 2 usage).
pub fn main(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "--eval") {
        return crate::eval::cli(args);
    }
    match main_inner(args) {
        Ok(()) => 0,
        Err(e @ Error::Usage(_)) => {
            eprintln!("preba sim: {e}");
            eprint!("{USAGE}");
            2
        }
        Err(e) => {
            eprintln!("preba sim: {e}");
            1
        }
    }
}

fn main_inner(args: &[String]) -> Result<(), Error> {
    let Some(a) = parse(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let mut sc = Scenario::load(&a.scenario)?;
    if let Some(s) = a.seed {
        sc.seed = s;
    }
    if let Some(n) = a.requests {
        sc.requests = n;
        if sc.warmup >= n {
            sc.warmup = n / 10;
        }
    }
    println!(
        "preba sim: {} ({}): model {}, policy {}, {} slices, seed {}, {} requests per rate ({} warm-up)",
        sc.name,
        a.scenario.display(),
        sc.workload.model(),
        sc.policy.kind,
        sc.slice_count(),
        sc.seed,
        sc.requests,
        sc.warmup
    );
    print!("{}", header());
    let start = Instant::now();
    let mut results = Vec::with_capacity(sc.rates.len());
    for &r in &sc.rates {
        let res = simulate_rate(&sc, r)?;
        print!("{}", row(&res));
        results.push(res);
    }
    let wall = start.elapsed().as_secs_f64();
    let total: usize = results.iter().map(|r| r.requests).sum();
    println!(
        "preba sim: {total} requests in {wall:.2} s ({:.2} M requests/s simulated)",
        total as f64 / wall.max(1e-9) / 1e6
    );
    if let Some(out) = &a.out {
        std::fs::write(out, to_json(&sc, &results)).map_err(|e| Error::Io {
            path: out.display().to_string(),
            problem: e.to_string(),
        })?;
        println!("preba sim: results in {}", out.display());
    }
    Ok(())
}

fn header() -> String {
    format!(
        "{:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>9}\n",
        "offered/s",
        "thru/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "wait ms",
        "prewait",
        "batch",
        "slice%",
        "cpu%",
        "card%",
        "power W",
        "mJ/req",
        "rejected"
    )
}

fn row(r: &RateResult) -> String {
    let card = r
        .card_util
        .map_or_else(|| "-".to_string(), |u| format!("{:.1}", u * 100.0));
    format!(
        "{:>9.0} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>6.2} {:>6.1} {:>6.1} {:>6} {:>8.1} {:>8.2} {:>9}\n",
        r.offered,
        r.throughput,
        r.p50_ms,
        r.p95_ms,
        r.p99_ms,
        r.wait_mean_ms,
        r.pre_wait_mean_ms,
        r.mean_batch,
        r.slice_util * 100.0,
        r.cpu_util * 100.0,
        card,
        r.power_w.total,
        r.j_per_request * 1e3,
        r.rejected
    )
}

/// The readable table of `results`, header first.
pub fn format_table(results: &[RateResult]) -> String {
    let mut s = header();
    for r in results {
        s.push_str(&row(r));
    }
    s
}

/// The JSON written by `-o`: the scenario's name, seed, sources and every rate.
pub fn to_json(sc: &Scenario, results: &[RateResult]) -> String {
    let sources: serde_json::Map<String, serde_json::Value> = sc
        .sources
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let v = serde_json::json!({
        "format": "preba-sim-1",
        "scenario": sc.name,
        "file": sc.origin,
        "model": sc.workload.model(),
        "policy": sc.policy.kind,
        "slices": sc.slices.iter().map(|g| format!("{}x{}", g.slice_type, g.count)).collect::<Vec<_>>(),
        "profile": sc.profile_path.as_ref().map(|p| p.display().to_string()),
        "seed": sc.seed,
        "requests": sc.requests,
        "warmup": sc.warmup,
        "sources": sources,
        "rates": results,
    });
    let mut s = serde_json::to_string_pretty(&v).expect("results are plain numbers and strings");
    s.push('\n');
    s
}
