//! Audio half of `cargo xtask bench preprocess`: the NeMo-style log-Mel
//! pipeline of `preba-preprocess` against librosa doing the same work, one
//! thread each, in seconds of audio per second of CPU time of the measuring
//! thread (per core; robust to a busy machine).
//!
//! Inputs: fixture speech tiled to 60 s at 16 kHz and at 44.1 kHz (so the
//! second includes resampling), written by fixtures/bench/bench_audio.py into
//! target/bench-audio. Ours: the `bench_audio` example (release). Theirs:
//! the same script's `time` mode in the venv, with BLAS/OpenMP at one thread.
//! Set PREBA_BENCH_MS to change the time budget per measurement (default 2000).
//!
//! Then end to end through the CLI (issue 13): `preba preprocess --card cpu
//! --threads 1` on each input (16, 44.1 and 48 kHz) to an .npz against
//! librosa writing the same features with np.savez (fixtures/bench/bench_e2e.py).

use crate::util::{self, Result, cargo, root};
use std::collections::BTreeMap;
use std::process::Command;

/// `RESULT <file> <audio s per s> <stage> ...` lines -> (file, stage) -> value.
fn parse(out: &str) -> BTreeMap<(String, String), f64> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["RESULT", file, v, stage, ..] = f.as_slice()
            && let Ok(v) = v.parse::<f64>()
        {
            m.insert((file.to_string(), stage.to_string()), v);
        }
    }
    m
}

fn one_thread(cmd: &mut Command) -> &mut Command {
    for v in [
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMBA_NUM_THREADS",
        "RAYON_NUM_THREADS",
    ] {
        cmd.env(v, "1");
    }
    cmd
}

pub fn run(_rest: &[&str]) -> Result<()> {
    let py = crate::setup::venv()?;
    let script = root().join("fixtures").join("bench").join("bench_audio.py");
    let dir = root().join("target").join("bench-audio");
    let made = util::output(
        Command::new(&py)
            .arg(&script)
            .arg("make")
            .arg(&dir)
            .current_dir(root()),
    )?;
    let files: Vec<String> = made.lines().map(|l| l.trim().to_string()).collect();
    if files.is_empty() {
        return Err("bench_audio.py made no inputs".into());
    }
    util::run(cargo().args([
        "build",
        "--release",
        "--package",
        "preba-preprocess",
        "--example",
        "bench_audio",
    ]))?;
    eprintln!("xtask: timing preba (one thread)");
    let ours = util::output(
        one_thread(&mut cargo())
            .args([
                "run",
                "--quiet",
                "--release",
                "--package",
                "preba-preprocess",
                "--example",
                "bench_audio",
                "--",
            ])
            .args(&files),
    )?;
    eprintln!("xtask: timing librosa (one thread)");
    let theirs = util::output(
        one_thread(&mut Command::new(&py))
            .arg(&script)
            .arg("time")
            .args(&files)
            .current_dir(root()),
    )?;
    let (o, t) = (parse(&ours), parse(&theirs));
    println!();
    println!(
        "audio: NeMo log-Mel [80, T] (resample to 16 kHz, pre-emphasis, STFT 512/400/160, Slaney Mel, log, per-feature norm)"
    );
    println!("seconds of audio per CPU second, one thread (per core; higher is better)");
    println!(
        "{:<28} {:>10} {:>10} {:>8}",
        "input / stage", "preba", "librosa", "ratio"
    );
    for f in &files {
        let name = std::path::Path::new(f)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.clone());
        for stage in ["total", "resample", "decode", "mel", "normalize"] {
            let key = (f.clone(), stage.to_string());
            let Some(ov) = o.get(&key) else { continue };
            let label = if stage == "total" {
                name.clone()
            } else {
                format!("  {stage}")
            };
            match t.get(&key) {
                Some(tv) => println!("{label:<28} {ov:>10.0} {tv:>10.0} {:>7.2}x", ov / tv),
                None => println!("{label:<28} {ov:>10.0} {:>10} {:>8}", "-", "-"),
            }
        }
    }
    for line in theirs.lines().filter(|l| l.starts_with('#')) {
        println!("{line}");
    }
    e2e(&py, &script, &files)
}

/// The end-to-end lines: the CLI as a user runs it against librosa.
fn e2e(py: &std::path::Path, script: &std::path::Path, files: &[String]) -> Result<()> {
    let bin = crate::bench_preprocess::preba_bin()?;
    let dir = crate::bench_preprocess::shm_dir("e2e-audio");
    let e2e = script.with_file_name("bench_e2e.py");
    let out = util::output(
        one_thread(&mut Command::new(py))
            .arg(&e2e)
            .arg("audio")
            .arg("--preba")
            .arg(&bin)
            .arg("--dir")
            .arg(&dir)
            .args(files)
            .current_dir(root()),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let m = crate::bench_preprocess::parse_e2e(&out, "E2E");
    println!();
    println!(
        "end to end: `preba preprocess --card cpu --threads 1 -o x.npz` vs librosa + np.savez, \
         seconds of audio per CPU second (start-up included)"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>8}",
        "input", "preba", "librosa", "ratio"
    );
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            std::path::Path::new(f)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.clone())
        })
        .collect();
    for name in &names {
        let get = |side: &str, k: &str| {
            m.get(&(format!("audio/{name}/{side}"), k.to_string()))
                .copied()
        };
        let (Some(o), Some(t)) = (
            get("preba", "audio_s_per_s"),
            get("librosa", "audio_s_per_s"),
        ) else {
            return Err(format!("bench_e2e.py gave no result for {name}:\n{out}"));
        };
        let diff = get("librosa", "max_abs_diff").unwrap_or(f64::NAN);
        println!(
            "{name:<28} {o:>10.0} {t:>10.0} {:>7.2}x   (target >= 3x; max |diff| {diff:.4})",
            o / t
        );
    }
    println!();
    println!(
        "end to end over a dataset: 10 copies of the file in one `preba preprocess` call vs \
         librosa over the same files into one np.savez (as the image lines run 600 files)"
    );
    for name in &names {
        let get = |side: &str| {
            m.get(&(
                format!("audio-dataset/{name}/{side}"),
                "audio_s_per_s".to_string(),
            ))
            .copied()
        };
        let (Some(o), Some(t)) = (get("preba"), get("librosa")) else {
            return Err(format!(
                "bench_e2e.py gave no dataset result for {name}:\n{out}"
            ));
        };
        println!(
            "{name:<28} {o:>10.0} {t:>10.0} {:>7.2}x   (target >= 3x)",
            o / t
        );
    }
    Ok(())
}
