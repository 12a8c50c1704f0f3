//! Image half of `cargo xtask bench preprocess`: our CPU pipeline (decode,
//! resize 256, centre crop 224, u8 NCHW) against Pillow (what torchvision
//! runs), OpenCV (imdecode + resize), and libjpeg-turbo + OpenCV, one thread
//! each, in images per second of CPU time (per core).
//!
//! Sets: `imagenet` = fixtures/images/imagenet_*.jpg (~500x375, q90, 4:2:0),
//! `large` = fixtures/images/large_*.jpg (1920x1080, 2560x1440, 1411x1411).
//! Ours: the `bench_images` example (release); theirs:
//! fixtures/bench/bench_images.py in the venv. Set PREBA_BENCH_MS to change
//! the CPU-time budget per measurement (default 3000).

use crate::util::{self, Result, cargo, root};
use std::collections::BTreeMap;
use std::process::Command;

/// `bench set=S stage=T img_per_s=N ...` lines -> (set, stage) -> N.
fn parse(out: &str) -> BTreeMap<(String, String), f64> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let mut set = None;
        let mut stage = None;
        let mut rate = None;
        for kv in line.split_whitespace().skip(1) {
            match kv.split_once('=') {
                Some(("set", v)) => set = Some(v.to_string()),
                Some(("stage", v)) => stage = Some(v.to_string()),
                Some(("img_per_s", v)) => rate = v.parse::<f64>().ok(),
                _ => {}
            }
        }
        if line.starts_with("bench ")
            && let (Some(s), Some(t), Some(r)) = (set, stage, rate)
        {
            m.insert((s, t), r);
        }
    }
    m
}

fn sets() -> Result<Vec<String>> {
    let dir = root().join("fixtures").join("images");
    let mut out = Vec::new();
    for (set, prefix) in [("imagenet", "imagenet_"), ("large", "large_")] {
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".jpg"))
            })
            .map(|p| p.display().to_string())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!("no {prefix}*.jpg in {}", dir.display()));
        }
        out.push(format!("{set}={}", files.join(",")));
    }
    Ok(out)
}

pub fn run(_rest: &[&str]) -> Result<()> {
    let seconds = std::env::var("PREBA_BENCH_MS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(3000.0)
        / 1000.0;
    let sets = sets()?;
    let py = crate::setup::venv()?;
    util::run(cargo().args([
        "build",
        "--release",
        "--package",
        "preba-preprocess",
        "--example",
        "bench_images",
    ]))?;
    let target = util::target_dir();
    let ours_bin = target.join("release").join("examples").join("bench_images");
    let secs = format!("{seconds}");
    eprintln!("bench: images, {seconds} s of CPU time per measurement, one thread each");
    let ours = util::output(
        Command::new(&ours_bin)
            .arg("--seconds")
            .arg(&secs)
            .args(&sets)
            .current_dir(root()),
    )?;
    let mut py_cmd = Command::new(&py);
    for v in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
        py_cmd.env(v, "1");
    }
    let theirs = util::output(
        py_cmd
            .arg(
                root()
                    .join("fixtures")
                    .join("bench")
                    .join("bench_images.py"),
            )
            .arg("--seconds")
            .arg(&secs)
            .args(&sets)
            .current_dir(root()),
    )?;
    for line in theirs.lines().filter(|l| l.starts_with("bench info")) {
        println!("{}", &line["bench ".len()..]);
    }
    let mut m = parse(&ours);
    m.extend(parse(&theirs));
    let get = |set: &str, stage: &str| m.get(&(set.to_string(), stage.to_string())).copied();
    println!(
        "image preprocessing, img/s per core (CPU time, one thread), resize 256 + crop 224 -> u8 [3,224,224]"
    );
    for set in ["imagenet", "large"] {
        let Some(our) = get(set, "pipeline") else {
            return Err(format!("no result for our pipeline on {set}"));
        };
        println!("  {set}:");
        println!("    {:<28} {:>9.1}", "preba (ours)", our);
        for (stage, label) in [
            ("pillow", "Pillow (torchvision)"),
            ("opencv", "OpenCV"),
            ("turbo+opencv", "libjpeg-turbo + OpenCV"),
        ] {
            match get(set, stage) {
                Some(r) => println!("    {label:<28} {r:>9.1}   ours / it = {:.2}x", our / r),
                None => println!("    {label:<28} {:>9}", "n/a"),
            }
        }
        for (stage, label) in [
            ("turbo-decode", "(libjpeg-turbo decode only)"),
            ("decode", "(preba decode only)"),
            ("resize", "(preba resize+crop only)"),
        ] {
            if let Some(r) = get(set, stage) {
                println!("    {label:<28} {r:>9.1}");
            }
        }
    }
    Ok(())
}
