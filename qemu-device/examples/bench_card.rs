//! Throughput of the card model (firmware on the soft core, all CUs) on the image fixtures,
//! against the golden model alone on the same number of host threads.
//!
//! `cargo run --release -p preba-card --example bench_card -- [--seconds S] [--cus K]
//! [--clock modeled|wall]` (`cargo xtask bench card` runs it with the firmware it builds).
//! The card is the default card (its image CU count, modeled clock) on as many CU worker
//! threads as the golden model gets; `--cus` and `--clock` change that. Prints img/s for
//! each and the ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use preba_card::harness::{Host, firmware_elf};
use preba_card::{CardConfig, Clock};
use preba_preprocess::image;
use preba_protocol::io::IoOpcode;
use preba_protocol::media;
use preba_protocol::profile::{ImageProfile, Profile};
use preba_protocol::status::Status;

fn fixtures() -> Vec<Vec<u8>> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let idx: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("fixtures/golden/images/index.json")).expect("index"),
    )
    .expect("json");
    let p = ImageProfile::default();
    idx["files"]
        .as_object()
        .expect("files")
        .keys()
        .map(|k| std::fs::read(root.join("fixtures/images").join(k)).expect("fixture"))
        // The images the card decodes (the rest go to the host's CPU path).
        .filter(|b| {
            let mut s: &[u8] = b;
            media::probe_jpeg(&mut s)
                .and_then(|h| h.card_check())
                .is_ok()
                && image::card_preprocess_image(b, &p).is_ok()
        })
        .collect()
}

fn golden(imgs: &[Vec<u8>], threads: usize, secs: f64) -> f64 {
    let p = ImageProfile::default();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(secs);
    let done: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let next = next.clone();
                s.spawn(move || {
                    let mut n = 0;
                    while Instant::now() < stop {
                        let i = next.fetch_add(1, Ordering::Relaxed) % imgs.len();
                        std::hint::black_box(image::card_preprocess_image(&imgs[i], &p).ok());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

/// What the card phase measured.
struct CardRun {
    img_per_s: f64,
    /// Modeled engine cycles per image.
    cycles: u64,
    /// Soft-core instructions per image (the firmware's cost per request).
    instructions: u64,
}

fn card(imgs: &[Vec<u8>], cfg: CardConfig, secs: f64) -> CardRun {
    let elf = std::fs::read(firmware_elf().expect("firmware")).expect("elf");
    let mut h = Host::new(cfg, &elf).expect("card");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&h.card.uart()).contains("serving queues") {
        assert!(Instant::now() < deadline, "firmware did not boot");
        std::thread::sleep(Duration::from_millis(2));
    }
    h.enable(16).expect("enable");
    h.set_profile(0, &Profile::Image(ImageProfile::default()))
        .expect("profile");
    let depth = 64u16;
    h.create_io_queue(1, depth, 1).expect("queue");
    let out_len = ImageProfile::default().output_len() as u32;
    // Inputs staged once in host memory; one output buffer per slot.
    let inputs: Vec<(u64, u32)> = imgs
        .iter()
        .map(|b| (h.put(b).expect("put"), b.len() as u32))
        .collect();
    let outs: Vec<u64> = (0..depth)
        .map(|_| h.alloc(out_len as usize).expect("alloc"))
        .collect();
    let mut free: Vec<u16> = (0..depth - 1).collect();
    let mut next = 0usize;
    let mut done = 0usize;
    let mut cycles = 0u64;
    let instr0 = h.card.instructions();
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(secs);
    let mut inflight = 0;
    loop {
        let submitting = Instant::now() < stop;
        while submitting && let Some(cid) = free.pop() {
            let input = inputs[next % inputs.len()];
            next += 1;
            let sqe = Host::request(
                IoOpcode::PreprocessImage,
                cid,
                0,
                input,
                (outs[cid as usize], out_len),
            );
            h.submit(1, &sqe).expect("submit");
            inflight += 1;
        }
        if inflight == 0 {
            break;
        }
        for c in h.wait(1, 1).expect("completions") {
            assert_eq!(c.status(), Status::Success, "cid {}", c.cid);
            cycles += c.cycles;
            free.push(c.cid);
            inflight -= 1;
            done += 1;
        }
    }
    let img_per_s = done as f64 / start.elapsed().as_secs_f64();
    // The core publishes its count after each slice: let it finish the one under way.
    let _ = h
        .card
        .wait_idle(Instant::now() + Duration::from_millis(100));
    CardRun {
        img_per_s,
        cycles: cycles / done.max(1) as u64,
        instructions: (h.card.instructions() - instr0) / done.max(1) as u64,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = arg("--seconds", 5.0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cus = arg("--cus", f64::from(CardConfig::default().image_cus)) as u8;
    let clock: Clock = args
        .iter()
        .position(|a| a == "--clock")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(Clock::default()), |v| v.parse())
        .expect("--clock modeled|wall");
    let imgs = fixtures();
    println!(
        "{} card-decodable image fixtures, {threads} host threads, {cus} image CUs on \
         {threads} worker threads, {clock:?} clock",
        imgs.len()
    );
    let g = golden(&imgs, threads, secs);
    println!("golden model alone: {g:.1} img/s ({threads} threads)");
    let cfg = CardConfig {
        image_cus: cus,
        audio_cus: 1,
        norm_cus: 1,
        workers: threads,
        clock,
        ..CardConfig::default()
    };
    let cu_hz = cfg.cu_hz;
    let run = card(&imgs, cfg, secs);
    let (c, cyc) = (run.img_per_s, run.cycles);
    println!(
        "card model: {c:.1} img/s (modeled {cyc} engine cycles/img = {:.0} img/s per CU at {} MHz)",
        f64::from(cu_hz) / cyc.max(1) as f64,
        cu_hz / 1_000_000
    );
    println!(
        "firmware: {} soft-core instructions per image (all of the core's work: queues, probes, \
         DMA, CU hand-offs)",
        run.instructions
    );
    println!("ratio card/golden: {:.3} (target >= 0.9)", c / g);
}
