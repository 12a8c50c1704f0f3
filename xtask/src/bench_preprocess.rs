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
//!
//! Then end to end through the CLI (issue 13), fixtures/bench/bench_e2e.py:
//! `preba preprocess --card cpu` to a normalized f32 NCHW .npy on /dev/shm
//! against OpenCV and Pillow writing the same .npy; f16/bf16/NHWC/u8; 1 and 2
//! threads; peak RSS over 1,000 and 10,000 inputs. PREBA_BENCH_E2E_COUNT sets
//! the image count (default 600), PREBA_BENCH_BIN another `preba` binary.

use crate::util::{self, Result, cargo, root};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The release `preba` binary (built here unless PREBA_BENCH_BIN names one).
pub(crate) fn preba_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PREBA_BENCH_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    util::run(cargo().args([
        "build",
        "--release",
        "--package",
        "preba-serve",
        "--bin",
        "preba",
    ]))?;
    Ok(util::target_dir().join("release").join("preba"))
}

/// Scratch directory for the end-to-end benches: /dev/shm when there is one
/// (the setting: the file system is not what is measured).
pub(crate) fn shm_dir(name: &str) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        util::target_dir()
    };
    base.join(format!("preba-bench-{name}-{}", std::process::id()))
}

/// `KEY k=v k=v ...` lines of bench_e2e.py -> (what, field) -> value.
pub(crate) fn parse_e2e(out: &str, key: &str) -> BTreeMap<(String, String), f64> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some(key) {
            continue;
        }
        let kv: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        let what = kv
            .iter()
            .filter(|(k, _)| matches!(*k, "what" | "file" | "side" | "inputs"))
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
            .join("/");
        for (k, v) in &kv {
            if let Ok(v) = v.parse::<f64>() {
                m.insert((what.clone(), k.to_string()), v);
            }
        }
    }
    m
}

/// The end-to-end image lines.
fn e2e_images(py: &std::path::Path, files: &[String]) -> Result<()> {
    let bin = preba_bin()?;
    let fw = crate::setup::build_fw()?;
    util::run(cargo().args([
        "build",
        "--release",
        "--package",
        "preba-card",
        "--bin",
        "preba-card",
    ]))?;
    let card_bin = util::target_dir().join("release").join("preba-card");
    let count = std::env::var("PREBA_BENCH_E2E_COUNT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(600);
    let dir = shm_dir("e2e");
    eprintln!(
        "bench: end to end through the CLI, {count} images, in {}",
        dir.display()
    );
    let out = util::output(
        Command::new(py)
            .arg(root().join("fixtures").join("bench").join("bench_e2e.py"))
            .arg("images")
            .arg("--preba")
            .arg(&bin)
            .arg("--dir")
            .arg(&dir)
            .arg("--count")
            .arg(count.to_string())
            .arg("--card-bin")
            .arg(&card_bin)
            .env("PREBA_FIRMWARE", &fw)
            .args(files)
            .current_dir(root()),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let mut m = parse_e2e(&out, "E2E");
    m.extend(parse_e2e(&out, "E2E-INFO"));
    let get = |what: &str, k: &str| m.get(&(what.to_string(), k.to_string())).copied();
    let rate = |what: &str| {
        get(what, "img_per_s").ok_or_else(|| format!("bench_e2e.py gave no `{what}` line:\n{out}"))
    };
    let ours = rate("preba-f32-nchw")?;
    println!();
    println!(
        "end to end, {count} ImageNet-sized JPEGs -> one normalized [N,3,224,224] .npy on /dev/shm, \
         img/s per CPU second (user + system, start-up included), one thread"
    );
    println!(
        "    {:<44} {:>9.1}",
        "preba preprocess --card cpu --threads 1 f32", ours
    );
    for (what, label) in [
        ("opencv", "OpenCV (imdecode/resize/numpy/tofile)"),
        ("pillow", "Pillow (torchvision-style, numpy)"),
    ] {
        let r = rate(what)?;
        println!(
            "    {label:<44} {r:>9.1}   preba / it = {:.2}x{}",
            ours / r,
            if what == "opencv" {
                "  (target >= 3x)"
            } else {
                ""
            }
        );
    }
    for (what, label) in [
        ("preba-f16-nchw", "preba f16 NCHW"),
        ("preba-bf16-nchw", "preba bf16 NCHW"),
        ("preba-f32-nhwc", "preba f32 NHWC"),
        ("preba-u8-nchw", "preba u8 NCHW (no normalize)"),
    ] {
        let r = rate(what)?;
        println!(
            "    {label:<44} {r:>9.1}   = {:.2}x the f32 NCHW run, {:.2}x OpenCV",
            r / ours,
            r / rate("opencv")?
        );
    }
    let (w1, w2) = (
        get("preba-f32-threads1", "wall_img_per_s"),
        get("preba-f32-threads2", "wall_img_per_s"),
    );
    if let (Some(w1), Some(w2)) = (w1, w2) {
        let (c1, c2) = (rate("preba-f32-threads1")?, rate("preba-f32-threads2")?);
        println!(
            "  scaling (wall clock, f32, --threads N pinned to N cores): 1 thread {w1:.1} img/s, \
             2 threads {w2:.1} img/s = {:.2}x (target >= 1.8x); CPU per image at 2 threads = \
             {:.2}x of 1 thread",
            w2 / w1,
            c1 / c2
        );
    }
    for dtype in ["u8", "f32"] {
        let what = format!("card-host-{dtype}");
        if let (Some(host), Some(card), Some(cpu)) = (
            get(&what, "host_ms_per_img"),
            get(&what, "card_ms_per_img"),
            get(&what, "cpu_ms_per_img"),
        ) {
            println!(
                "  card path ({dtype}, emulated card on a vfio-user socket): host CPU {host:.3} ms/img \
                 vs CPU path {cpu:.3} ms/img = {:.1}x less (target ~10x); the card process \
                 (soft core, CUs, emulation) {card:.3} ms/img",
                cpu / host
            );
        }
    }
    for (k, v) in &m {
        if k.1 == "max_abs_diff_vs_preba" {
            println!("  ({} output vs preba: max |diff| {v:.4})", k.0);
        }
    }
    let rss = parse_e2e(&out, "RSS");
    let mut peaks: Vec<(f64, f64)> = rss
        .iter()
        .filter(|(k, _)| k.1 == "peak_kb")
        .filter_map(|(k, v)| Some((k.0.parse::<f64>().ok()?, *v)))
        .collect();
    peaks.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
        let list: Vec<String> = peaks
            .iter()
            .map(|(n, kb)| format!("{n:.0} inputs {:.1} MiB", kb / 1024.0))
            .collect();
        println!(
            "  peak RSS of preba preprocess (u8, --manifest): {} ({:.2}x from {:.0} to {:.0} inputs)",
            list.join(", "),
            last.1 / first.1,
            first.0,
            last.0
        );
    } else if let Some(line) = out.lines().find(|l| l.starts_with("RSS n/a")) {
        println!("  {line}");
    }
    Ok(())
}

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
    let imagenet: Vec<String> = sets[0]
        .split_once('=')
        .map(|(_, f)| f.split(',').map(str::to_string).collect())
        .unwrap_or_default();
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
    e2e_images(&py, &imagenet)
}
