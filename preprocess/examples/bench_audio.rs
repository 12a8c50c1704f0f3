//! Audio throughput of the CPU pipeline (one thread): seconds of audio per
//! second of this thread's CPU time (per core), per input file. Run by `cargo xtask bench preprocess`:
//!
//!     cargo run --release -p preba-preprocess --example bench_audio -- FILE.wav...
//!
//! Prints one line per file, `RESULT <file> <audio s per s> <stage>`, for the
//! whole pipeline (`total`) and for its parts (`decode`, `resample`, `mel`,
//! `normalize`), best of several timed rounds.

use preba_preprocess::audio::{
    AudioProfile, decode_mono, log_mel_samples, normalize, preprocess_audio, probe_wav, resample,
};
use std::time::{Duration, Instant};

/// CPU time of this thread in seconds (Linux: /proc/thread-self/schedstat,
/// nanoseconds on CPU), so a busy machine does not skew the numbers; wall
/// time where that is unavailable.
fn cpu_seconds(wall0: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| wall0.elapsed().as_secs_f64(), |ns| ns as f64 * 1e-9)
}

/// Calls `f` repeatedly for about `budget` of CPU time; returns the best CPU
/// seconds per call over 5 rounds.
fn best<F: FnMut()>(mut f: F, budget: Duration) -> f64 {
    let wall0 = Instant::now();
    f();
    let mut best = f64::INFINITY;
    let round = budget.as_secs_f64() / 5.0;
    for _ in 0..5 {
        let start = cpu_seconds(wall0);
        let mut n = 0u32;
        while n == 0 || cpu_seconds(wall0) - start < round {
            f();
            n += 1;
        }
        best = best.min((cpu_seconds(wall0) - start) / n as f64);
    }
    best
}

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: bench_audio FILE.wav...");
        std::process::exit(2);
    }
    let p = AudioProfile::default();
    let budget = Duration::from_millis(
        std::env::var("PREBA_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        let info = probe_wav(&bytes).unwrap_or_else(|e| panic!("{f}: {e}"));
        let secs = info.seconds();
        let total = best(
            || {
                std::hint::black_box(preprocess_audio(&bytes, &p).unwrap());
            },
            budget,
        );
        let (_, mono) = decode_mono(&bytes).unwrap();
        let decode = best(
            || {
                std::hint::black_box(decode_mono(&bytes).unwrap());
            },
            budget / 4,
        );
        let x16 = resample(&mono, info.sample_rate, p.sample_rate);
        let rs = if info.sample_rate != p.sample_rate {
            best(
                || {
                    std::hint::black_box(resample(&mono, info.sample_rate, p.sample_rate));
                },
                budget / 2,
            )
        } else {
            0.0
        };
        let mel = best(
            || {
                std::hint::black_box(log_mel_samples(&x16, &p).unwrap());
            },
            budget / 2,
        );
        let feats = log_mel_samples(&x16, &p).unwrap();
        let norm = best(
            || {
                let mut g = feats.clone();
                normalize(&mut g);
                std::hint::black_box(g);
            },
            budget / 4,
        );
        println!(
            "# {f}: {} Hz, {} ch, {} bits{}, {secs:.1} s, {} frames",
            info.sample_rate,
            info.channels,
            info.bits,
            if info.float { " float" } else { "" },
            feats.frames
        );
        for (stage, t) in [
            ("total", total),
            ("decode", decode),
            ("resample", rs),
            ("mel", mel),
            ("normalize", norm),
        ] {
            if t > 0.0 {
                println!("RESULT {f} {:.1} {stage} {:.3}ms", secs / t, t * 1e3);
            }
        }
    }
}
