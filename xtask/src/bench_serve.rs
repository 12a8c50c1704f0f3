//! `cargo xtask bench serve [--slices SPEC] [--rates A:B:S] [--duration S] [--sla MS]`:
//! `preba serve` side by side in one run, same model (SqueezeNet 1.1 fixture) and
//! slices, Poisson load from `preba bench` at a sweep of rates:
//!   (a) `--card emulated`, (b) `--card cpu` (the paper's CPU-preprocessing
//!   baseline) on the same host, (c) preprocessed tensors sent directly (the ideal).
//! Prints, per configuration, the highest achieved throughput whose p95 <= SLA, and
//! the ratios; then the server's own cost: requests per second per core with
//! zero-latency modeled slices and the ideal input (HTTP included; target 20,000),
//! and the server process's CPU per request on the card path vs the CPU path
//! (the emulated card and the workers are other processes and are not counted).
//!
//! Default slices are modeled A100 1g.5gb x7 (the paper's set-up; their outputs are
//! marked modeled), so the GPU side is not the bottleneck on a machine without one.

use crate::served::{Rate, cpu_seconds, read_csv, start};
use crate::util::{self, Result, cargo, root};
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(clippy::too_many_arguments)]
fn bench(
    preba: &Path,
    url: &str,
    label: &str,
    model: &str,
    inputs: &[PathBuf],
    extra: &[&str],
    rates: &str,
    dur: &str,
    dir: &Path,
) -> Result<Vec<Rate>> {
    let csv = dir.join(format!("{label}.csv"));
    util::run(
        Command::new(preba)
            .args([
                "bench",
                url,
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
            .args(["--model", model])
            .args(extra)
            .args(inputs),
    )?;
    read_csv(&csv)
}

fn best(rows: &[Rate], sla: f64) -> f64 {
    rows.iter()
        .filter(|r| r.p95 <= sla && r.errors == 0 && r.ok > 0)
        .map(|r| r.achieved)
        .fold(0.0, f64::max)
}

/// Splits `preba preprocess`'s [N,3,C,C] f32 .npy into one file per image.
fn split_npy(all: &Path, dir: &Path, c: usize, stem: &str) -> Result<Vec<PathBuf>> {
    let b = std::fs::read(all).map_err(|e| format!("{}: {e}", all.display()))?;
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let data = &b[10 + hl..];
    let row = 3 * c * c * 4;
    let mut out = Vec::new();
    for (i, t) in data.chunks_exact(row).enumerate() {
        let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': (3, {c}, {c}), }}");
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        f.extend_from_slice(&(h.len() as u16).to_le_bytes());
        f.extend_from_slice(h.as_bytes());
        f.extend_from_slice(t);
        let p = dir.join(format!("{stem}_{i}.npy"));
        std::fs::write(&p, f).map_err(|e| e.to_string())?;
        out.push(p);
    }
    Ok(out)
}

pub fn run(rest: &[&str]) -> Result<()> {
    let mut slices = "modeled:a100-1g.5gb*7".to_string();
    let mut rates = "100:700:100".to_string();
    let mut dur = "4".to_string();
    let mut sla = 100.0f64;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match *a {
            "--slices" => slices = v.to_string(),
            "--rates" => rates = v.to_string(),
            "--duration" => dur = v.to_string(),
            "--sla" => sla = v.parse().map_err(|_| "--sla MS")?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    let fw = crate::setup::build_fw()?;
    let fw_env = [("PREBA_FIRMWARE".to_string(), fw.display().to_string())];
    let env = crate::setup::serving_env()?;
    util::run(cargo().args([
        "build",
        "--release",
        "--quiet",
        "--bin",
        "preba",
        "--bin",
        "preba-card",
    ]))?;
    let preba = util::target_dir().join("release").join("preba");
    let models = PathBuf::from(
        &env.iter()
            .find(|(k, _)| k == "PREBA_MODELS")
            .ok_or("no models")?
            .1,
    );
    let dir = util::target_dir().join("bench-serve");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let repo = dir.join("repo");
    let mdir = repo.join("sq").join("1");
    std::fs::create_dir_all(&mdir).map_err(|e| e.to_string())?;
    std::fs::copy(
        models.join("squeezenet1_1/1/model.onnx"),
        mdir.join("model.onnx"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        repo.join("sq").join("config.toml"),
        format!("sla_ms = {sla}\n[batching]\nprofile_model = \"squeezenet1_1\"\n"),
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
    // The server-cost model: 16x16 inputs, so HTTP and the server's own
    // path dominate, not a 602 KB memcpy.
    let tdir = repo.join("tiny").join("1");
    std::fs::create_dir_all(&tdir).map_err(|e| e.to_string())?;
    std::fs::copy(
        models.join("tiny_image/1/model.onnx"),
        tdir.join("model.onnx"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        repo.join("tiny").join("config.toml"),
        "max_batch_size = 64\n[preprocess]\nresize = 16\ncrop = 16\n[batching]\nprofile_model = \"squeezenet1_1\"\n",
    )
    .map_err(|e| e.to_string())?;
    let tensors = |c: usize, stem: &str| -> Result<Vec<PathBuf>> {
        let all = dir.join(format!("{stem}_all.npy"));
        let cs = c.to_string();
        util::run(
            Command::new(&preba)
                .args([
                    "preprocess",
                    "--card",
                    "cpu",
                    "--dtype",
                    "f32",
                    "--resize",
                    if c == 224 { "256" } else { &cs },
                    "--crop",
                    &cs,
                    "--mean",
                    "0.485,0.456,0.406",
                    "--std",
                    "0.229,0.224,0.225",
                    "-o",
                ])
                .arg(&all)
                .args(&images),
        )?;
        split_npy(&all, &dir, c, stem)
    };
    let ideal = tensors(224, "ideal")?;
    let tiny_ideal = tensors(16, "tiny")?;
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();
    let repo_s = repo.display().to_string();
    let base = |card: &str, slices: &str| -> Vec<String> {
        [
            "--model-repository",
            &repo_s,
            "--slices",
            slices,
            "--card",
            card,
            "--cpu-threads",
            &threads,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    println!(
        "bench serve: SqueezeNet 1.1 fixture, slices {slices}, Poisson rates {rates} req/s, {dur} s each, SLA p95 <= {sla} ms"
    );
    let mut results = Vec::new();
    let mut cpu_per_req = Vec::new();
    for (label, card, ideal_in) in [
        ("card-emulated", "emulated", false),
        ("cpu-preprocessing", "cpu", false),
        ("ideal", "cpu", true),
    ] {
        let s = start(&preba, &fw_env, &base(card, &slices))?;
        let pid = s.child.id();
        let c0 = cpu_seconds(pid);
        let rows = if ideal_in {
            bench(
                &preba,
                &s.url,
                label,
                "sq",
                &ideal,
                &["--ideal"],
                &rates,
                &dur,
                &dir,
            )?
        } else {
            bench(
                &preba,
                &s.url,
                label,
                "sq",
                &images,
                &[],
                &rates,
                &dur,
                &dir,
            )?
        };
        let c1 = cpu_seconds(pid);
        let reqs: u64 = rows.iter().map(|r| r.ok).sum();
        cpu_per_req.push((label, (c1 - c0) / reqs.max(1) as f64 * 1e6));
        for r in &rows {
            println!(
                "  {label:18} offered {:7.1}  achieved {:7.1} req/s  p95 {:8.2} ms  ok {:6}  errors {}",
                r.offered, r.achieved, r.p95, r.ok, r.errors
            );
        }
        results.push((label, best(&rows, sla)));
        drop(s);
    }
    let csvs: Vec<PathBuf> = results
        .iter()
        .map(|(l, _)| dir.join(format!("{l}.csv")))
        .collect();
    let plot = dir.join("serve.svg");
    let _ = util::run(
        Command::new(&preba)
            .arg("bench")
            .arg("plot")
            .arg(&plot)
            .args(&csvs),
    );
    println!("\nmax throughput with p95 <= {sla} ms:");
    for (l, t) in &results {
        println!("  {l:18} {t:8.1} req/s");
    }
    let get = |n: &str| results.iter().find(|r| r.0 == n).map_or(0.0, |r| r.1);
    let (card, cpu, ideal_t) = (get("card-emulated"), get("cpu-preprocessing"), get("ideal"));
    println!("  card / cpu        {:8.2}x", card / cpu.max(1e-9));
    println!(
        "  card / ideal      {:8.2}  ({:.1}% of the ideal)",
        card / ideal_t.max(1e-9),
        100.0 * card / ideal_t.max(1e-9)
    );
    println!("  (the emulated card's CUs are threads on this machine's cores: its throughput here");
    println!("   cannot show a real card's; the host CPU per request below is what a card saves)");
    println!("\nserver process CPU per request (card and workers are other processes):");
    for (l, us) in &cpu_per_req {
        println!("  {l:18} {us:8.1} us");
    }
    // Server cost: zero-latency modeled slices, ideal input, closed to the
    // server's own limit.
    let prof = dir.join("zero.toml");
    let mut t = String::from("format = \"preba-profile-1\"\n");
    t.push_str("[[entry]]\nmodel = \"squeezenet1_1\"\nslice = \"zero\"\nbatch_knee = 32\ntime_knee_ms = 1.0\nsource = \"bench: a slice that takes (almost) no time\"\npoints = [");
    for b in [1, 2, 4, 8, 16, 32] {
        t.push_str(&format!(
            "{{ batch = {b}, p50_ms = 0.001, p95_ms = 0.001, throughput = {} }}, ",
            b as f64 * 1e6
        ));
    }
    t.push_str("]\n");
    std::fs::write(&prof, t).map_err(|e| e.to_string())?;
    let mut a = base("cpu", "modeled:zero*1");
    a.extend([
        "--profile".into(),
        prof.display().to_string(),
        "--max-queue".into(),
        "100000".into(),
    ]);
    let s = start(&preba, &fw_env, &a)?;
    let pid = s.child.id();
    // One rate at a time, so the CPU of each is the server's at that load:
    // per-request cost falls as batches fill, so the rate is part of the number.
    let mut best_per_core = 0.0f64;
    println!(
        "\nserver cost (tiny 16x16 model, zero-latency modeled slice, ideal input, HTTP included):"
    );
    for rate in ["4000", "10000", "16000"] {
        let c0 = cpu_seconds(pid);
        let rows = bench(
            &preba,
            &s.url,
            &format!("server-cost-{rate}"),
            "tiny",
            &tiny_ideal,
            &["--ideal", "--concurrency", "1024"],
            &format!("{rate}:{rate}:1"),
            "4",
            &dir,
        )?;
        let cpu_s = cpu_seconds(pid) - c0;
        let reqs: u64 = rows.iter().map(|r| r.ok).sum();
        let errors: u64 = rows.iter().map(|r| r.errors).sum();
        let per_core = reqs as f64 / cpu_s.max(1e-9);
        if errors == 0 {
            best_per_core = best_per_core.max(per_core);
        }
        println!(
            "  offered {rate:>6} req/s: {reqs} ok, {errors} errors, {cpu_s:.2} CPU-s of the server process = {per_core:.0} req/s per core, {:.1} us per request",
            cpu_s / reqs.max(1) as f64 * 1e6
        );
    }
    drop(s);
    println!(
        "server cost: {best_per_core:.0} req/s per core at the best error-free rate (target 20,000; {:.2}x)",
        best_per_core / 20_000.0
    );
    println!("plot: {}", plot.display());
    Ok(())
}
