//! Soak: random mixed traffic (valid, unsupported, corrupt and oversized images; valid and
//! broken WAVs) from several threads through the host driver into `preba-card` processes, with
//! cards killed (SIGKILL) or stopped (SIGSTOP) at random points and started again.
//!
//! At the end: every request got exactly one answer within its bound; every success is
//! bit-identical to the golden model on the CPU (the path the card mirrors); a valid input
//! fails only while its card is failing; the process has no more threads than after the first
//! card and its RSS did not keep growing.
//!
//! Length: `PREBA_SOAK_SECS` (default 60, what CI runs); `cargo xtask soak --minutes N` runs it
//! in release. `PREBA_SOAK_SEED` replays a run (the seed is printed). Needs `preba-card` and
//! the firmware, as serve/tests/emulated.rs does.

mod common;

use preba_host::backend::{self, Backend, CardSpec, CpuBackend, Job, Output};
use preba_protocol::profile::{AudioProfile, Dtype, ImageProfile};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tiny xorshift: the soak must be replayable from its seed without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One kind of request and the golden model's answer to it.
struct Case {
    name: String,
    input: Vec<u8>,
    job: Job,
    /// Output bytes on success, or the CPU path's error.
    want: Result<Vec<u8>, preba_host::error::RequestError>,
}

fn output_bytes(o: &Output) -> Vec<u8> {
    match o {
        Output::Image(i) => i.data.clone(),
        Output::Audio(a) => a
            .features
            .data
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect(),
    }
}

fn cases() -> Vec<Case> {
    let u8_224 = Job::Image(ImageProfile::default());
    let f32_norm = Job::Image(ImageProfile {
        normalize: true,
        dtype: Dtype::F32,
        ..ImageProfile::default()
    });
    let audio = Job::Audio(AudioProfile::default());
    let mut raw: Vec<(String, Vec<u8>, Job)> = Vec::new();
    for p in common::fixtures("images", &["jpg"]) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("huge_") || name.starts_with("large_") {
            continue; // seconds each on a debug build: the soak wants many requests
        }
        let b = std::fs::read(&p).unwrap();
        raw.push((name.clone(), b.clone(), u8_224));
        if name.starts_with("imagenet_") {
            raw.push((format!("{name} f32"), b.clone(), f32_norm));
            // Corrupt: cut in the entropy-coded data, and a flipped byte in the headers.
            raw.push((format!("{name} cut"), b[..b.len() / 2].to_vec(), u8_224));
            let mut flip = b.clone();
            flip[20] ^= 0x5a;
            raw.push((format!("{name} flip@20"), flip, u8_224));
            // Oversized: past the card's input limit (trailing bytes after EOI), so the host
            // takes the CPU path.
            let mut big = b.clone();
            big.resize(backend::CARD_MAX_INPUT + 4096, 0);
            raw.push((format!("{name} oversized"), big, u8_224));
        }
    }
    for p in common::fixtures("audio", &["wav"]) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        raw.push((name, std::fs::read(&p).unwrap(), audio));
    }
    raw.push((
        "garbage".into(),
        (0..4096u32).map(|i| (i * 7919) as u8).collect(),
        u8_224,
    ));
    raw.into_iter()
        .map(|(name, input, job)| {
            let want = CpuBackend
                .process(&input, &job)
                .map(|(o, _)| output_bytes(&o));
            Case {
                name,
                input,
                job,
                want,
            }
        })
        .collect()
}

fn proc_status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

#[derive(Default)]
struct Tally {
    card: u64,
    fallback: u64,
    cpu: u64,
    refused_as_golden: u64,
    failed_with_card: u64,
    failures: Vec<String>,
    slowest: Duration,
}

/// What is done to the card during an epoch.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    Kill,
    Stop,
}

#[test]
fn soak_mixed_traffic_with_card_failures() {
    let Some((bin, fw)) = common::card_parts(Path::new(env!("CARGO_BIN_EXE_preba"))) else {
        return;
    };
    let secs: u64 = std::env::var("PREBA_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("PREBA_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("soak: {secs} s, PREBA_SOAK_SEED={seed}");
    let cases = Arc::new(cases());
    let dir = tempfile::tempdir().unwrap();
    let sock: PathBuf = dir.path().join("card.sock");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let submitted = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    // An answer may take the request deadline plus one socket deadline (a stopped card).
    let bound =
        backend::REQUEST_TIMEOUT + preba_host::vfio_user::OP_TIMEOUT + Duration::from_secs(5);
    let mut rng = Rng(seed);
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut epochs, mut kills, mut stops) = (0u32, 0u32, 0u32);
    let mut baseline: Option<(u64, u64)> = None;
    let mut rss_after = Vec::new();
    while Instant::now() < end {
        epochs += 1;
        let left = end.saturating_duration_since(Instant::now());
        let length =
            Duration::from_millis(3000 + rng.below(5000)).min(left.max(Duration::from_secs(1)));
        // A stopped card costs a socket deadline (5 s) to notice: rarer than a kill.
        let fault = match rng.below(6) {
            0 | 1 => Fault::Kill,
            2 => Fault::Stop,
            _ => Fault::None,
        };
        let at = Duration::from_millis(rng.below(length.as_millis() as u64).max(200));
        let mut card = common::start_card(&bin, &fw, &sock);
        let be: Box<dyn Backend> = match backend::open(&CardSpec::VfioUser(sock.clone())) {
            Ok(b) => b,
            Err(e) => panic!("epoch {epochs}: opening the card: {e}"),
        };
        let stop = AtomicBool::new(false);
        let failed_at = Mutex::new(None::<Instant>);
        let mut faulted = None;
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let (be, cases, tally) = (&*be, &*cases, &*tally);
                    let (stop, submitted, answered, failed_at) =
                        (&stop, &*submitted, &*answered, &failed_at);
                    let mut rng = Rng(seed
                        ^ (u64::from(epochs) << 8)
                        ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    s.spawn(move || {
                        while !stop.load(Ordering::Acquire) {
                            let c = &cases[rng.below(cases.len() as u64) as usize];
                            submitted.fetch_add(1, Ordering::AcqRel);
                            let t0 = Instant::now();
                            let r = be.process(&c.input, &c.job);
                            let took = t0.elapsed();
                            answered.fetch_add(1, Ordering::AcqRel);
                            let card_failing =
                                be.fatal().is_some() || failed_at.lock().unwrap().is_some();
                            let mut tl = tally.lock().unwrap();
                            tl.slowest = tl.slowest.max(took);
                            if took > bound {
                                tl.failures
                                    .push(format!("{}: answered after {took:?}", c.name));
                            }
                            match (&r, &c.want) {
                                (Ok((o, via)), Ok(want)) => {
                                    if output_bytes(o) != *want {
                                        tl.failures.push(format!(
                                            "{} via {via:?}: output differs from the golden model",
                                            c.name
                                        ));
                                    }
                                    match via {
                                        backend::Via::Card => tl.card += 1,
                                        backend::Via::CpuFallback => tl.fallback += 1,
                                        backend::Via::Cpu => tl.cpu += 1,
                                    }
                                }
                                (Ok((_, via)), Err(e)) => tl.failures.push(format!(
                                    "{} via {via:?}: succeeded where the golden model says {e}",
                                    c.name
                                )),
                                (Err(_), Err(_)) => tl.refused_as_golden += 1,
                                (Err(e), Ok(_)) => {
                                    if card_failing {
                                        tl.failed_with_card += 1;
                                    } else {
                                        tl.failures.push(format!(
                                            "{}: failed with a healthy card: {e}",
                                            c.name
                                        ));
                                    }
                                }
                            }
                            drop(tl);
                            // Once the card is known dead, stop hammering it.
                            if be.fatal().is_some() {
                                break;
                            }
                        }
                    })
                })
                .collect();
            let t_epoch = Instant::now();
            while t_epoch.elapsed() < length {
                if faulted.is_none() && t_epoch.elapsed() >= at {
                    match fault {
                        Fault::Kill => {
                            *failed_at.lock().unwrap() = Some(Instant::now());
                            let _ = card.kill();
                            kills += 1;
                            faulted = Some(Instant::now());
                        }
                        Fault::Stop => {
                            *failed_at.lock().unwrap() = Some(Instant::now());
                            signal(card.id(), libc::SIGSTOP);
                            stops += 1;
                            faulted = Some(Instant::now());
                        }
                        Fault::None => {}
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Release);
            for t in threads {
                t.join().expect("a soak thread panicked");
            }
        });
        if matches!(fault, Fault::Stop) && faulted.is_some() {
            signal(card.id(), libc::SIGCONT);
        }
        drop(be);
        let _ = card.kill();
        let _ = card.wait();
        assert_eq!(
            submitted.load(Ordering::Acquire),
            answered.load(Ordering::Acquire),
            "epoch {epochs}: a request got no answer"
        );
        let now = (proc_status("Threads:"), proc_status("VmRSS:"));
        match baseline {
            None => baseline = Some(now),
            Some((threads, _)) => assert!(
                now.0 <= threads,
                "epoch {epochs}: {} threads after the card closed, {threads} after the first",
                now.0
            ),
        }
        rss_after.push(now.1);
    }
    let tl = tally.lock().unwrap();
    eprintln!(
        "soak: {epochs} epochs ({kills} cards killed, {stops} stopped), {} requests: {} by the card, \
         {} CPU fallback, {} CPU, {} refused as the golden model refuses, {} failed with their card; \
         slowest answer {:?}; RSS after each epoch (KiB): {:?}",
        answered.load(Ordering::Acquire),
        tl.card,
        tl.fallback,
        tl.cpu,
        tl.refused_as_golden,
        tl.failed_with_card,
        tl.slowest,
        rss_after
    );
    assert!(
        tl.failures.is_empty(),
        "{} failures (PREBA_SOAK_SEED={seed}), first ones:\n{}",
        tl.failures.len(),
        tl.failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(tl.card > 0, "the card answered nothing");
    // Memory: after warm-up (the first epochs' caches), RSS must not keep climbing.
    if rss_after.len() >= 4 {
        let early = rss_after[1];
        let last = *rss_after.last().unwrap();
        assert!(
            last < early + 128 * 1024,
            "RSS grew from {early} KiB to {last} KiB over {epochs} epochs"
        );
    }
}
