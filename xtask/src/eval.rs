//! `cargo xtask eval [--quick] [--validate] [--out DIR]`: the PREBA paper's
//! evaluation reproduced by `preba sim --eval` (sim/src/eval.rs, config
//! sim/eval/paper.toml), written to eval/report.md with SVG plots. The last
//! line is `eval: report at PATH; PREBA share of ideal: min X% over N models`.
//!
//! `--validate` (after the report) checks the simulator against the real
//! server on this machine: `preba serve --card cpu --slices
//! modeled:a100-1g.5gb*7` with the SqueezeNet 1.1 fixture, `preba bench` at a
//! sweep of Poisson rates, and `preba sim` of the same configuration (same
//! profile table, this machine's CPU preprocessing time per image measured
//! with `preba preprocess --card cpu --threads 1`, as many cores as the server
//! has preprocessing threads; the server's own CPU per request, fixed wait
//! and service-time spread fitted on runs apart from the sweep). Prints both
//! side by side; its last line is
//! `validate: throughput error X%, p95 error Y%` (the worst over the rates the
//! simulation puts below saturation, CPU < 80% busy). Exits non-zero when the
//! bounds (throughput 5%, p95 15%) are not met: the numbers are printed
//! either way.

use crate::served::{Rate, read_csv, start_on, tree_cpu_seconds};
use crate::util::{self, Result, cargo, root};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const USAGE: &str =
    "usage: cargo xtask eval [--quick] [--validate] [--out DIR] [--rates A:B:S] [--duration S]";

pub fn run(rest: &[&str]) -> Result<()> {
    let mut quick = false;
    let mut validate = false;
    let mut out = root().join("eval");
    // Default: seven rates from 10% to 94% of the capacity measured at the
    // start of the run (machines differ, and so does one machine under load).
    let mut rates: Option<String> = None;
    let mut dur = "8".to_string();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match *a {
            "--quick" => quick = true,
            "--validate" => validate = true,
            "--out" => out = PathBuf::from(it.next().ok_or(USAGE)?),
            "--rates" => rates = Some(it.next().ok_or(USAGE)?.to_string()),
            "--duration" => dur = it.next().ok_or(USAGE)?.to_string(),
            _ => return Err(format!("unknown option {a}\n{USAGE}")),
        }
    }
    util::run(cargo().args(["build", "--release", "--quiet", "--bin", "preba"]))?;
    let preba = util::target_dir().join("release").join("preba");
    let mut cmd = Command::new(&preba);
    cmd.args(["sim", "--eval"]).arg(&out);
    if quick {
        cmd.arg("--quick");
    }
    let text = util::output(&mut cmd)?;
    let last = text.lines().last().unwrap_or("").to_string();
    if !last.starts_with("eval: report at ") {
        return Err(format!("preba sim --eval ended with {last:?}"));
    }
    if validate {
        let (ok, line) = validate_run(&preba, &out.join("validate"), rates.as_deref(), &dur)?;
        println!("{line}");
        if !ok {
            println!("{last}");
            return Err("validate: the bounds (throughput 5%, p95 15%) are not met".into());
        }
    }
    println!("{last}");
    Ok(())
}

/// Seconds per image of `preba preprocess --card cpu --threads 1` (f32,
/// resize 256, crop 224, ImageNet mean/std: the server's path), from the
/// difference of a long and a short run so start-up cancels.
fn preprocess_seconds(preba: &Path, images: &[PathBuf], dir: &Path) -> Result<f64> {
    let time = |n: usize| -> Result<f64> {
        let inputs: Vec<&PathBuf> = images.iter().cycle().take(n).collect();
        let t = Instant::now();
        util::output(
            Command::new(preba)
                .args([
                    "preprocess",
                    "--card",
                    "cpu",
                    "--threads",
                    "1",
                    "--dtype",
                    "f32",
                    "--resize",
                    "256",
                    "--crop",
                    "224",
                    "--mean",
                    "0.485,0.456,0.406",
                    "--std",
                    "0.229,0.224,0.225",
                    "-o",
                ])
                .arg(dir.join("pre.npy"))
                .args(inputs),
        )?;
        Ok(t.elapsed().as_secs_f64())
    };
    let (short, long) = (images.len(), images.len() * 40);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let d = time(long)? - time(short)?;
        best = best.min(d / (long - short) as f64);
    }
    Ok(best)
}

fn validate_run(
    preba: &Path,
    dir: &Path,
    rates: Option<&str>,
    dur: &str,
) -> Result<(bool, String)> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let env = crate::setup::serving_env()?;
    let models = std::env::var("PREBA_MODELS")
        .ok()
        .or_else(|| {
            env.iter()
                .find(|(k, _)| k == "PREBA_MODELS")
                .map(|x| x.1.clone())
        })
        .map(PathBuf::from)
        .ok_or("no model directory (PREBA_MODELS)")?;
    let repo = dir.join("repo");
    let mdir = repo.join("sq").join("1");
    std::fs::create_dir_all(&mdir).map_err(|e| e.to_string())?;
    std::fs::copy(
        models.join("squeezenet1_1/1/model.onnx"),
        mdir.join("model.onnx"),
    )
    .map_err(|e| format!("{}: {e}", models.display()))?;
    std::fs::write(
        repo.join("sq").join("config.toml"),
        "sla_ms = 100\n[batching]\npolicy = \"preba\"\nprofile_model = \"squeezenet1_1\"\n",
    )
    .map_err(|e| e.to_string())?;
    let mut images: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/images"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("imagenet_"))
        })
        .collect();
    images.sort();
    // The load generator gets the last core, the server (and its workers)
    // the others: contention for the same cores is what the simulator cannot
    // see, so the two are kept apart.
    let ncpu = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (server_cpus, bench_cpu, threads) = if ncpu >= 2 {
        (
            Some(format!("0-{}", ncpu - 2)),
            Some((ncpu - 1).to_string()),
            ncpu - 1,
        )
    } else {
        (None, None, 1)
    };
    let per_image = preprocess_seconds(preba, &images, dir)?;
    let per_image_pre = per_image;
    // The fixtures differ (2.5 to 4.5 ms here): the spread matters for p95,
    // so the simulated sizes are uniform over the measured range.
    let mut each = Vec::with_capacity(images.len());
    for im in &images {
        each.push(preprocess_seconds(preba, std::slice::from_ref(im), dir)?);
    }
    let mean_each = each.iter().sum::<f64>() / each.len().max(1) as f64;
    let lo = each.iter().copied().fold(f64::INFINITY, f64::min) / mean_each;
    let hi = each.iter().copied().fold(0.0f64, f64::max) / mean_each;
    println!(
        "validate: CPU preprocessing of this machine: {:.2} ms per 500x375 image per core ({:.0} img/s per core, preba preprocess --card cpu --threads 1, f32 out); server --cpu-threads {threads}",
        per_image * 1e3,
        1.0 / per_image
    );

    // The real server.
    let repo_s = repo.display().to_string();
    let t = threads.to_string();
    let server = start_on(
        preba,
        &env,
        &[
            "--model-repository",
            &repo_s,
            "--slices",
            "modeled:a100-1g.5gb*7",
            "--card",
            "cpu",
            "--cpu-threads",
            &t,
        ]
        .map(String::from),
        server_cpus.as_deref(),
    )?;
    let spid = server.child.id();
    let bench = |label: &str, rates: &str, dur: &str| -> Result<Vec<Rate>> {
        let csv = dir.join(format!("{label}.csv"));
        let mut cmd = match &bench_cpu {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.args(["-c", c]).arg(preba);
                t
            }
            None => Command::new(preba),
        };
        util::run(
            cmd.args([
                "bench",
                &server.url,
                "--poisson",
                "--rates",
                rates,
                "--duration",
                dur,
                "--label",
                label,
                "--csv",
            ])
            .arg(&csv)
            .args(["--model", "sq"])
            .args(&images),
        )?;
        read_csv(&csv)
    };
    // Warm-up (per-thread scratch, worker pipes, the blocking pool), then a
    // light-load run that calibrates the server's fixed per-request cost
    // (HTTP, hand-offs, the worker round trip) which the simulator does not
    // model by itself: it becomes the scenario's overhead_us.
    // The warm-up runs at the highest rate of the sweep: the first run at a
    // rate touches arena slots, pool threads and pipe buffers no slower run
    // did, and a calibration that paid for that would fit a transient.
    let top = match rates {
        Some(r) => r
            .split(':')
            .nth(1)
            .and_then(|r| r.parse::<f64>().ok())
            .unwrap_or(100.0),
        None => (threads as f64 / per_image).round(),
    };
    bench(
        "warmup",
        &format!("20:{top}:{}", (top - 20.0).max(1.0) / 2.0),
        "2",
    )?;
    let calib = bench("calibrate", "10:10:1", "8")?;
    // The server's whole CPU cost per request (preprocessing, HTTP, the
    // batcher, the workers' pipes) becomes the simulated cores' service
    // time. Measured at ~40% load: at light load every request pays the
    // wake-ups a busier server shares across a batch.
    let mid = (0.4 * threads as f64 / per_image).round().max(10.0);
    let c0 = tree_cpu_seconds(spid);
    let load = bench("calibrate-cpu", &format!("{mid}:{mid}:1"), "10")?;
    let cal_ok: u64 = load.iter().map(|r| r.ok).sum();
    let cpu_per_req = (tree_cpu_seconds(spid) - c0) / cal_ok.max(1) as f64;
    let per_image = if cpu_per_req > 0.0 {
        cpu_per_req
    } else {
        per_image
    };
    println!(
        "validate: server CPU per request at {mid} req/s: {:.2} ms (preprocessing alone {:.2} ms)",
        cpu_per_req * 1e3,
        per_image_pre * 1e3
    );
    let rates = match rates {
        Some(r) => r.to_string(),
        None => {
            let cap = threads as f64 / per_image;
            let (a, step) = ((0.1 * cap).round().max(1.0), (0.14 * cap).round().max(1.0));
            format!("{a}:{}:{step}", a + 6.0 * step)
        }
    };
    // One run per rate, so the server's own CPU per request is known at each
    // (where it grows with load, the simulator's constant mean cannot follow).
    let parts: Vec<f64> = rates
        .split(':')
        .map(|x| {
            x.parse::<f64>()
                .map_err(|_| format!("--rates {rates}: A:B:STEP"))
        })
        .collect::<Result<_>>()?;
    let [a, b, step] = parts[..] else {
        return Err(format!("--rates {rates}: A:B:STEP"));
    };
    let mut real = Vec::new();
    let mut real_cpu = Vec::new();
    let mut r = a;
    while r <= b + 1e-9 {
        let c0 = tree_cpu_seconds(spid);
        let row = bench("real", &format!("{r}:{r}:1"), dur)?;
        let cpu = tree_cpu_seconds(spid) - c0;
        for x in row {
            real_cpu.push(cpu / x.ok.max(1) as f64);
            real.push(x);
        }
        r += step;
    }
    drop(server);

    // The simulation of the same configuration.
    let rate_list: Vec<String> = real.iter().map(|r| format!("{:.1}", r.offered)).collect();
    let write_scenario = |path: &Path, rates: &[String], overhead_us: f64, service: &str| {
        std::fs::write(
        path,
        format!(
            r#"# Written by `cargo xtask eval --validate`: what `preba serve` ran, in the simulator.
name = "validate: squeezenet1_1, modeled a100-1g.5gb x7, {threads} CPU threads, preba"
source = "cargo xtask eval --validate on this machine"
seed = 1
requests = 40000
warmup = 4000

[arrivals]
process = "poisson"
rates = [{rates}]
source = "the rates preba bench offered (Poisson)"

[workload]
kind = "image"
model = "squeezenet1_1"
samples_per_px = 1.5
crop = 224
source = "fixtures/images/imagenet_*.jpg: six 500x375 (or 375x500) JPEGs"
[workload.pixels]
distribution = "uniform"
min = {pmin:.0}
max = {pmax:.0}
source = "[M] per-fixture preprocessing times on this machine, as pixel equivalents of a 500x375 image: {lo:.2}x to {hi:.2}x the mean"

[preprocess]
kind = "cpu"
cores = {threads}
per_core_rate = {rate:.3}
reference = 187500.0
service = "{service}"
overhead_us = {overhead_us:.1}
source = "[M] the server's CPU per request at ~40% load on this machine (preprocessing + HTTP + batcher + worker pipes): {ms:.3} ms; cores = the server's --cpu-threads, pinned, with preba bench on another core; overhead_us = real p50 - simulated p50 at 10 req/s (waits that take no CPU); service = the spread of service times (gamma CV) fitted to the real p95 of the ~40% load run, a run apart from the sweep below"

[policy]
kind = "preba"
max_queue = 1024
source = "preba serve's default policy and --max-queue"

[slices]
latency = "p50"
source = "modeled slices sleep lat(b) = p50 of the builtin profile table"
[[slices.group]]
type = "a100-1g.5gb"
count = 7
idle_w = 5.0
busy_w = 35.7

[power]
cpu_idle_w = 55.0
cpu_core_busy_w = 3.9
"#,
            rates = rates.join(", "),
            rate = 1.0 / per_image,
            ms = per_image * 1e3,
            pmin = 187500.0 * lo,
            pmax = 187500.0 * hi,
        ),
    )
    .map_err(|e| e.to_string())
    };
    let sim_rows = |path: &Path| -> Result<Vec<Vec<f64>>> {
        let out = util::output(Command::new(preba).args(["sim", "--scenario"]).arg(path))?;
        // Rows: offered thru p50 p95 p99 wait prewait batch slice% cpu% card% W mJ rejected.
        Ok(out
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("offered/s"))
            .skip(1)
            .map(|l| {
                l.split_whitespace()
                    .map(|x| x.parse::<f64>().unwrap_or(f64::NAN))
                    .collect::<Vec<f64>>()
            })
            .filter(|v| v.len() >= 14 && v[0].is_finite())
            .collect())
    };
    // Two things the simulator cannot know are fitted on runs apart from the
    // sweep it is judged on: the fixed wait per request that costs no CPU
    // (HTTP, hand-offs, the worker round trip; at 10 req/s) and the spread
    // of the core's service times (preemption by the server's own threads
    // and the workers, cache state; p95 at 10 req/s and at ~40% load). The
    // spread is what makes p95 grow with load: with a constant service time
    // the simulator was 12-26% optimistic.
    let cal_path = dir.join("calibrate.toml");
    let real_p50 = calib.first().map_or(f64::NAN, |r| r.p50);
    let real_low_p95 = calib.first().map_or(f64::NAN, |r| r.p95);
    let real_mid_p95 = load.first().map_or(f64::NAN, |r| r.p95);
    // For each spread: the fixed wait that matches p50 at 10 req/s, then the
    // p95 errors at 10 req/s and at ~40% load; the spread with the smaller
    // worse of the two wins (one point alone fits noise at the other end).
    let mut best = (f64::INFINITY, 0.0, 0.0, f64::NAN, f64::NAN);
    for step in 0..=15 {
        let cv = f64::from(step) * 0.1;
        let service = format!("gamma:{cv:.1}");
        write_scenario(&cal_path, &["10.0".to_string()], 0.0, &service)?;
        let sim_p50 = sim_rows(&cal_path)?.first().map_or(f64::NAN, |r| r[2]);
        let overhead = ((real_p50 - sim_p50) * 1e3).max(0.0);
        write_scenario(
            &cal_path,
            &["10.0".to_string(), format!("{mid:.1}")],
            overhead,
            &service,
        )?;
        let rows = sim_rows(&cal_path)?;
        let (low, hi) = match rows.as_slice() {
            [a, b] => (a[3], b[3]),
            _ => return Err(format!("preba sim gave {} rows for 2 rates", rows.len())),
        };
        let worse = ((low - real_low_p95) / real_low_p95)
            .abs()
            .max(((hi - real_mid_p95) / real_mid_p95).abs());
        if worse < best.0 {
            best = (worse, cv, overhead, low, hi);
        }
    }
    let (_, cv, overhead_us, low, hi) = best;
    let service = format!("gamma:{cv:.1}");
    println!(
        "validate: fitted on runs apart from the sweep: overhead_us = {overhead_us:.0} (p50 at 10 req/s: real {real_p50:.2} ms), service-time CV {cv:.1} (p95 at 10 req/s: real {real_low_p95:.2} ms, simulated {low:.2}; at {mid} req/s: real {real_mid_p95:.2} ms, simulated {hi:.2})"
    );
    let scenario = dir.join("scenario.toml");
    write_scenario(&scenario, &rate_list, overhead_us, &service)?;
    let sim = sim_rows(&scenario)?;
    if sim.len() != real.len() {
        return Err(format!(
            "preba sim gave {} rows for {} rates",
            sim.len(),
            real.len()
        ));
    }
    println!(
        "\n{:>9} | {:>10} {:>10} {:>7} | {:>9} {:>9} {:>7} | {:>6} {:>8} {:>10} | below saturation",
        "offered/s",
        "real thr",
        "sim thr",
        "err %",
        "real p95",
        "sim p95",
        "err %",
        "cpu%",
        "real cpu%",
        "real ms/req"
    );
    let (mut wt, mut wp) = (0.0f64, 0.0f64);
    let mut n = 0;
    for ((r, s), cpu) in real.iter().zip(&sim).zip(&real_cpu) {
        let real_busy = 100.0 * cpu * r.achieved / threads as f64;
        let et = 100.0 * (s[1] - r.achieved) / r.achieved;
        let ep = 100.0 * (s[3] - r.p95) / r.p95;
        let below = s[9] < 80.0;
        if below {
            wt = wt.max(et.abs());
            wp = wp.max(ep.abs());
            n += 1;
        }
        println!(
            "{:>9.1} | {:>10.1} {:>10.1} {:>7.1} | {:>9.2} {:>9.2} {:>7.1} | {:>6.1} {:>8.1} {:>10.3} | {}{}",
            r.offered,
            r.achieved,
            s[1],
            et,
            r.p95,
            s[3],
            ep,
            s[9],
            real_busy,
            cpu * 1e3,
            if below { "yes" } else { "no" },
            if r.errors > 0 {
                format!(" ({} errors)", r.errors)
            } else {
                String::new()
            }
        );
    }
    println!(
        "\n(real = preba serve + preba bench on this machine, {dur} s per rate; sim = preba sim of {}; error = (sim - real) / real; rates with the simulated CPU < 80% busy count)",
        scenario.display()
    );
    if n == 0 {
        return Ok((
            false,
            "validate: no rate below saturation; throughput error n/a, p95 error n/a".into(),
        ));
    }
    let ok = wt <= 5.0 && wp <= 15.0;
    Ok((
        ok,
        format!("validate: throughput error {wt:.1}%, p95 error {wp:.1}%"),
    ))
}
