//! Single-thread throughput of the image pipeline (what `cargo xtask bench
//! preprocess` runs). Usage:
//!
//!   bench_images [--seconds S] [--only STAGE] SET=FILE[,FILE...] ...
//!
//! For each set, loads the files into memory, warms up, then runs the
//! default profile (resize 256, crop 224, u8 NCHW) round-robin for about S
//! seconds of CPU time on one thread. Prints one line per set and stage:
//! `bench set=<SET> stage=<pipeline|decode|resize> img_per_s=<N> images=<K>`,
//! N being images per second of this thread's CPU time (per core; on a
//! loaded machine wall time would count other processes' time slices).

use preba_preprocess::image::{preprocess_image, probe};
use preba_protocol::profile::ImageProfile;
use std::time::Instant;

/// CPU time of this thread in seconds (Linux: /proc/thread-self/schedstat,
/// nanoseconds on CPU); wall time where that is unavailable.
fn cpu_seconds(wall0: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| wall0.elapsed().as_secs_f64(), |ns| ns as f64 * 1e-9)
}

fn main() {
    let mut seconds = 3.0f64;
    let mut only: Option<String> = None;
    let mut sets: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--seconds" {
            seconds = args
                .next()
                .and_then(|s| s.parse().ok())
                .expect("--seconds S");
            continue;
        }
        if a == "--only" {
            only = Some(args.next().expect("--only STAGE"));
            continue;
        }
        let (name, files) = a.split_once('=').expect("SET=FILE[,FILE...]");
        let data = files
            .split(',')
            .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}")))
            .collect();
        sets.push((name.to_string(), data));
    }
    let profile = ImageProfile::default();
    for (name, data) in &sets {
        for f in data {
            let h = probe(f).expect("bench input must be a JPEG we take");
            std::hint::black_box(h);
        }
        let run = |stage: &str, f: &dyn Fn(&[u8])| {
            if only.as_deref().is_some_and(|o| o != stage) {
                return;
            }
            // Warm-up: one pass over the set.
            for d in data {
                f(d);
            }
            let wall0 = Instant::now();
            let t0 = cpu_seconds(wall0);
            let mut n = 0u64;
            while cpu_seconds(wall0) - t0 < seconds {
                for d in data {
                    f(d);
                    n += 1;
                }
            }
            let rate = n as f64 / (cpu_seconds(wall0) - t0);
            println!(
                "bench set={name} stage={stage} img_per_s={rate:.1} images={}",
                data.len()
            );
        };
        run("pipeline", &|d: &[u8]| {
            let out = preprocess_image(d, &profile).expect("pipeline");
            std::hint::black_box(out);
        });
        run("decode", &|d: &[u8]| {
            let px = preba_preprocess::image::decode_only(d).expect("decode");
            std::hint::black_box(px);
        });
        let decoded: Vec<_> = data
            .iter()
            .map(|d| {
                let h = probe(d).unwrap();
                let (px, ch, _) = preba_preprocess::image::decode_only(d).unwrap();
                (px, h.width, h.height, ch as u8)
            })
            .collect();
        let i = std::cell::Cell::new(0usize);
        run("resize", &|_d: &[u8]| {
            let (px, w, h, ch) = &decoded[i.get() % decoded.len()];
            i.set(i.get() + 1);
            let out = preba_preprocess::image::transform_pixels(px, *w, *h, *ch, &profile).unwrap();
            std::hint::black_box(out);
        });
    }
}
