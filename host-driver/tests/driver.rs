//! The driver against the fake card (a test double of the spec's card side):
//! bit-exact results, CPU fallback, many threads, untrusted completions,
//! timeouts and a card that dies.

mod common;

use preba_host::backend::{Backend, CardBackend, CpuBackend, Job, OpenCard, Output, Via};
use preba_host::driver::{Card, CardError, DriverConfig};
use preba_host::error::{CardFailure, QueueError, Refusal, RequestError};
use preba_host::fake::{Behaviour, FakeCard};
use preba_protocol::profile::{AudioProfile, ImageProfile, Profile};
use preba_protocol::status::Status;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fixtures under 4 MiB (the big ones only test limits).
fn fixtures(kind: &str, ext: &str) -> Vec<PathBuf> {
    common::fixtures(kind, &[ext])
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() < 4 << 20)
        .collect()
}

fn cfg() -> DriverConfig {
    DriverConfig {
        arena_bytes: 160 << 20,
        admin_timeout: Duration::from_secs(2),
        ..DriverConfig::default()
    }
}

fn fake(b: Behaviour) -> (Arc<FakeCard>, Card) {
    let f = Arc::new(FakeCard::new(cfg().arena_bytes, b).unwrap());
    let card = Card::open(f.clone(), cfg()).unwrap();
    (f, card)
}

fn backend(b: Behaviour, timeout: Duration) -> (Arc<FakeCard>, CardBackend) {
    let (f, card) = fake(b);
    let be = CardBackend::new(
        OpenCard {
            card,
            emulated: None,
        },
        "fake".into(),
        timeout,
    );
    (f, be)
}

fn bytes_of(o: &Output) -> Vec<u8> {
    match o {
        Output::Image(i) => i.data.clone(),
        Output::Audio(a) => a
            .features
            .data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    }
}

fn image_job() -> Job {
    Job::Image(ImageProfile::default())
}

fn small_images() -> Vec<Vec<u8>> {
    [
        "imagenet_chelsea.jpg",
        "sampling_420.jpg",
        "size_224x224.jpg",
        "gray_camera.jpg",
    ]
    .iter()
    .map(|n| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fixtures/images")
                .join(n),
        )
        .unwrap()
    })
    .collect()
}

#[test]
fn identify_and_telemetry() {
    let (_f, card) = fake(Behaviour::Normal);
    assert_eq!(card.identify().fw_build_id, preba_host::fake::FAKE_BUILD_ID);
    assert_eq!(card.identify().fw_version_str(), "fake");
    let t = card.telemetry().unwrap();
    assert_eq!(t.requests, 0);
}

#[test]
fn images_match_cpu_bit_for_bit_with_fallback() {
    let (_f, be) = backend(Behaviour::Normal, Duration::from_secs(20));
    let job = image_job();
    let mut card_n = 0;
    let mut fallback_n = 0;
    for p in fixtures("images", "jpg") {
        let input = std::fs::read(&p).unwrap();
        let cpu = CpuBackend.process(&input, &job);
        let got = be.process(&input, &job);
        match (cpu, got) {
            (Ok((c, _)), Ok((g, via))) => {
                assert_eq!(bytes_of(&c), bytes_of(&g), "{}", p.display());
                if let (Output::Image(c), Output::Image(g)) = (&c, &g) {
                    assert_eq!((c.width, c.height), (g.width, g.height));
                }
                match via {
                    Via::Card => card_n += 1,
                    Via::CpuFallback => fallback_n += 1,
                    Via::Cpu => panic!("via cpu from the card backend"),
                }
                let name = p.file_name().unwrap().to_str().unwrap();
                if name.starts_with("progressive") || name.starts_with("cmyk") {
                    assert_eq!(via, Via::CpuFallback, "{name}");
                }
                if name.starts_with("imagenet") || name.starts_with("sampling_420") {
                    assert_eq!(via, Via::Card, "{name}");
                }
            }
            // Both refuse it: the input's fault, explained by the CPU model.
            (Err(_), Err(e)) => assert!(
                matches!(e, RequestError::Rejected { .. } | RequestError::Cpu(_)),
                "{}: {e}",
                p.display()
            ),
            (c, g) => panic!(
                "{}: cpu {:?} vs card {:?}",
                p.display(),
                c.is_ok(),
                g.is_ok()
            ),
        }
    }
    assert!(
        card_n > 10 && fallback_n >= 3,
        "card {card_n} fallback {fallback_n}"
    );
    assert!(be.fatal().is_none());
}

#[test]
fn audio_matches_cpu_bit_for_bit() {
    let (_f, be) = backend(Behaviour::Normal, Duration::from_secs(20));
    let job = Job::Audio(AudioProfile::default());
    let mut n = 0;
    for p in fixtures("audio", "wav") {
        let input = std::fs::read(&p).unwrap();
        match (CpuBackend.process(&input, &job), be.process(&input, &job)) {
            (Ok((c, _)), Ok((g, via))) => {
                assert_eq!(bytes_of(&c), bytes_of(&g), "{}", p.display());
                assert_eq!(via, Via::Card);
                n += 1;
            }
            (Err(_), Err(_)) => {}
            (c, g) => panic!(
                "{}: cpu {:?} vs card {:?}",
                p.display(),
                c.is_ok(),
                g.is_ok()
            ),
        }
    }
    assert!(n > 5);
}

#[test]
fn many_threads_each_answered_once() {
    let (f, be) = backend(Behaviour::Normal, Duration::from_secs(30));
    let imgs = small_images();
    let job = image_job();
    let want: Vec<Vec<u8>> = imgs
        .iter()
        .map(|i| bytes_of(&CpuBackend.process(i, &job).unwrap().0))
        .collect();
    let per_thread = 12;
    let threads = 8;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (be, imgs, want, job) = (&be, &imgs, &want, &job);
            s.spawn(move || {
                for k in 0..per_thread {
                    let i = (t + k) % imgs.len();
                    let (o, via) = be.process(&imgs[i], job).unwrap();
                    assert_eq!(via, Via::Card);
                    assert_eq!(bytes_of(&o), want[i]);
                }
            });
        }
    });
    assert_eq!(f.served(), (threads * per_thread) as u64);
}

#[test]
fn batch_view_is_contiguous() {
    let (_f, card) = fake(Behaviour::Normal);
    let p = ImageProfile::default();
    let pool = card
        .pool(&Profile::Image(p), 8, 1 << 20, p.output_len())
        .unwrap();
    let imgs = small_images();
    let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
    let batch = card
        .process_batch(&pool, &refs, Duration::from_secs(20))
        .unwrap();
    assert!(batch.results().iter().all(|r| r.is_ok()));
    let all = batch.read_all().unwrap();
    assert_eq!(batch.stride(), p.output_len());
    for (i, img) in imgs.iter().enumerate() {
        let cpu = preba_preprocess::image::preprocess_image(img, &p).unwrap();
        assert_eq!(
            &all[i * batch.stride()..(i + 1) * batch.stride()],
            &cpu.data[..]
        );
    }
}

/// Runs `n` requests on `threads` threads; returns their results and the
/// slowest answer time.
fn storm(be: &CardBackend, threads: usize, n: usize) -> (Vec<Result<Via, RequestError>>, Duration) {
    let (r, slowest, _) = storm_at(be, threads, n);
    (r, slowest)
}

/// As [`storm`], also with the instant of the last answer.
fn storm_at(
    be: &CardBackend,
    threads: usize,
    n: usize,
) -> (Vec<Result<Via, RequestError>>, Duration, Instant) {
    let last = std::sync::Mutex::new(Instant::now());
    let imgs = small_images();
    let job = image_job();
    let out = std::sync::Mutex::new(Vec::new());
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (imgs, job, out, slowest, last) = (&imgs, &job, &out, &slowest, &last);
            s.spawn(move || {
                for k in 0..n {
                    let t0 = Instant::now();
                    let r = be.process(&imgs[(t + k) % imgs.len()], job).map(|x| x.1);
                    let dt = t0.elapsed();
                    *last.lock().unwrap() = Instant::now();
                    let mut sl = slowest.lock().unwrap();
                    *sl = (*sl).max(dt);
                    out.lock().unwrap().push(r);
                }
            });
        }
    });
    (
        out.into_inner().unwrap(),
        slowest.into_inner().unwrap(),
        last.into_inner().unwrap(),
    )
}

/// Every result is the card's failure (or a timeout), naming the card.
fn assert_all_fail_naming_card(results: &[Result<Via, RequestError>], what: &str) {
    assert!(!results.is_empty());
    for r in results {
        let e = r.as_ref().expect_err("request should fail");
        assert!(
            matches!(e, RequestError::CardFailed { card, .. } | RequestError::Timeout { card, .. }
                if card == "fake"),
            "{what}: {e}"
        );
    }
}

/// The queue error the card died of.
fn queue_error(be: &CardBackend) -> QueueError {
    let cause = be.fatal().expect("the card failed");
    cause
        .queue_error()
        .cloned()
        .unwrap_or_else(|| panic!("not a queue error: {cause}"))
}

#[test]
fn duplicate_completion_is_a_queue_error() {
    let (_f, be) = backend(Behaviour::DuplicateCompletion, Duration::from_secs(10));
    let (results, slowest) = storm(&be, 4, 6);
    // The first completions may be delivered before the duplicate arrives;
    // after that every request fails, naming the card.
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).cloned().collect();
    assert!(failed.len() >= results.len() - 4, "{results:?}");
    assert_all_fail_naming_card(&failed, "duplicate");
    assert!(
        matches!(queue_error(&be), QueueError::UnknownCid { qid: 1, .. }),
        "{:?}",
        be.fatal()
    );
    assert!(slowest < Duration::from_secs(5));
}

#[test]
fn unknown_cid_is_a_queue_error() {
    let (_f, be) = backend(Behaviour::UnknownCid, Duration::from_secs(10));
    let (results, _) = storm(&be, 4, 4);
    assert_all_fail_naming_card(&results, "unknown cid");
    assert!(
        matches!(queue_error(&be), QueueError::UnknownCid { qid: 1, .. }),
        "{:?}",
        be.fatal()
    );
}

#[test]
fn impossible_sq_head_is_a_queue_error() {
    let (_f, be) = backend(Behaviour::BadSqHead, Duration::from_secs(10));
    let (results, _) = storm(&be, 2, 3);
    assert_all_fail_naming_card(&results, "sq head");
    assert!(
        matches!(queue_error(&be), QueueError::SqHead { qid: 1, .. }),
        "{:?}",
        be.fatal()
    );
}

#[test]
fn silent_card_times_out_every_request() {
    let timeout = Duration::from_millis(400);
    let (_f, be) = backend(Behaviour::Silent, timeout);
    let t0 = Instant::now();
    // More requests than slots: later ones time out waiting for a slot.
    let (results, slowest) = storm(&be, 4, 6);
    assert_eq!(results.len(), 24);
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(e, RequestError::Timeout { card, after } if card == "fake" && *after == timeout),
            "{e}"
        );
    }
    // Each request fails at its deadline (slack for a loaded 2-core machine).
    assert!(
        slowest < timeout + Duration::from_millis(600),
        "{slowest:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    let t1 = Instant::now();
    drop(be);
    assert!(t1.elapsed() < Duration::from_secs(2), "teardown hung");
}

#[test]
fn dead_card_fails_in_flight_within_a_second() {
    let (f, be) = backend(Behaviour::DieAfter(5), Duration::from_secs(30));
    let (results, _, last) = storm_at(&be, 4, 5);
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok <= 5, "{ok} answers after death");
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).cloned().collect();
    assert_all_fail_naming_card(&failed, "dead");
    let died = f.died_at().expect("the card died");
    let after = last.saturating_duration_since(died);
    assert!(
        after < Duration::from_secs(1),
        "last answer {after:?} after death"
    );
    assert!(be.fatal().is_some());
    f.kill();
}

#[test]
fn card_errors_are_per_request() {
    let (_f, be) = backend(Behaviour::Normal, Duration::from_secs(10));
    let job = image_job();
    let bad = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/images/broken_truncated_header.jpg"),
    )
    .unwrap();
    let e = be.process(&bad, &job).unwrap_err();
    assert!(
        matches!(
            e,
            RequestError::Rejected {
                status: Status::CorruptInput,
                cpu: preba_preprocess::Error::CorruptInput(_),
            }
        ),
        "{e}"
    );
    // The message the CLI prints: the CPU model's reason, then the card's status.
    assert!(e.to_string().ends_with("(card: CORRUPT_INPUT)"), "{e}");
    let good = &small_images()[0];
    assert_eq!(be.process(good, &job).unwrap().1, Via::Card);
    assert!(be.fatal().is_none());
}

#[test]
fn refused_requests_keep_errors_typed() {
    let (_f, card) = fake(Behaviour::Normal);
    let p = ImageProfile::default();
    let pool = card
        .pool(&Profile::Image(p), 2, 4096, p.output_len())
        .unwrap();
    let big = vec![0u8; 10_000];
    assert!(matches!(
        card.process(&pool, &big, Duration::from_secs(1)),
        Err(CardError::Refused(Refusal::InputTooLarge {
            len: 10_000,
            max: 4096
        }))
    ));
}

#[test]
fn timed_out_slots_come_back_when_the_card_answers() {
    let (f, card) = fake(Behaviour::Normal);
    let p = ImageProfile::default();
    let pool = card
        .pool(&Profile::Image(p), 4, 1 << 20, p.output_len())
        .unwrap();
    let imgs = small_images();
    // Deadlines far too short: most requests time out while the card still
    // holds their slots.
    let outcomes: Vec<bool> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let (card, pool, imgs) = (&card, &pool, &imgs);
                s.spawn(move || {
                    (0..10)
                        .map(|k| {
                            card.process(
                                pool,
                                &imgs[(t + k) % imgs.len()],
                                Duration::from_millis(1),
                            )
                            .is_ok()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes.len(), 40);
    // Once the card has answered everything it took, every slot is free
    // again and full-length requests succeed on all of them at once.
    let t0 = Instant::now();
    let ok = loop {
        let refs: Vec<&[u8]> = imgs.iter().map(|v| v.as_slice()).collect();
        match card.process_batch(&pool, &refs, Duration::from_secs(10)) {
            Ok(b) if b.results().iter().all(|r| r.is_ok()) => break true,
            _ if t0.elapsed() > Duration::from_secs(20) => break false,
            _ => {}
        }
    };
    assert!(ok, "slots did not come back (served {})", f.served());
    assert!(card.fatal().is_none());
}

#[test]
fn pools_shrink_to_the_arena_left() {
    let cfg = DriverConfig {
        arena_bytes: 8 << 20,
        ..cfg()
    };
    let f = Arc::new(FakeCard::new(cfg.arena_bytes, Behaviour::Normal).unwrap());
    let card = Card::open(f, cfg).unwrap();
    let p = ImageProfile::default();
    let pool = card
        .pool(&Profile::Image(p), 16, 1 << 20, p.output_len())
        .unwrap();
    assert!(pool.slots() >= 4 && pool.slots() < 8, "{}", pool.slots());
    let imgs = small_images();
    let (cqe, out) = card
        .process(&pool, &imgs[0], Duration::from_secs(20))
        .unwrap();
    assert_eq!(out.len(), p.output_len());
    assert_eq!(cqe.written as usize, p.output_len());
    // Nothing left for a second pool of that size.
    let a = preba_protocol::profile::AudioProfile::default();
    assert!(matches!(
        card.pool(&Profile::Audio(a), 16, 4 << 20, 4 << 20),
        Err(CardError::Refused(Refusal::ArenaExhausted { .. }))
    ));
}

/// Version handshake: a card whose major protocol version differs is refused with one line
/// naming both versions; a newer minor version is accepted.
#[test]
fn refuses_a_card_of_another_major_version() {
    let f = Arc::new(FakeCard::new(cfg().arena_bytes, Behaviour::Version(2, 0)).unwrap());
    let e = match Card::open(f, cfg()) {
        Ok(_) => panic!("a 2.0 card was accepted"),
        Err(e) => e,
    };
    assert!(
        matches!(&e, CardError::Fatal { cause, .. }
            if matches!(**cause, CardFailure::Version { major: 2, minor: 0 })),
        "{e}"
    );
    // The message is the contract here: one line naming both versions.
    let e = e.to_string();
    let ours = format!(
        "{}.{}",
        preba_protocol::regs::VERSION_MAJOR,
        preba_protocol::regs::VERSION_MINOR
    );
    assert!(e.contains("protocol 2.0") && e.contains(&ours), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    let minor = preba_protocol::regs::VERSION_MINOR + 7;
    let f = Arc::new(
        FakeCard::new(
            cfg().arena_bytes,
            Behaviour::Version(preba_protocol::regs::VERSION_MAJOR, minor),
        )
        .unwrap(),
    );
    assert!(Card::open(f, cfg()).is_ok(), "same major, newer minor");
}
