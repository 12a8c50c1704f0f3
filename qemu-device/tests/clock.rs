//! The card's clocks (docs/card-spec.md "Time"): on modeled time a correct job never trips the
//! firmware's CU watchdog however slow the host machine is, card time only moves forward, and
//! the wall clock still works.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use preba_card::harness::Host;
use preba_card::{CardConfig, Clock};
use preba_preprocess::image;
use preba_protocol::io::IoOpcode;
use preba_protocol::status::Status;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("fixtures/images").join(name)).expect("fixture")
}

/// Runs `input` through the card with the u8 image profile; asserts the golden model's bytes.
fn image_on_card(h: &mut Host, name: &str, input: &[u8]) {
    let p = img_u8();
    let want = image::card_preprocess_image(input, &p)
        .expect("golden")
        .data;
    let (c, data) = h
        .run_one(
            1,
            IoOpcode::PreprocessImage,
            IMG_U8,
            input,
            p.output_len() as u32,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(c.status(), Status::Success, "{name}");
    assert!(data == want, "{name}: output differs from the golden model");
}

#[test]
fn a_slow_cu_computation_never_trips_the_watchdog_on_modeled_time() {
    let _serial = serial();
    let name = "large_2560x1440.jpg";
    let input = fixture(name);
    // Longer than the firmware's watchdog (5 s + 1 us per input byte) allows in card time:
    // on the wall clock this job would come back INTERNAL.
    let watchdog = Duration::from_secs(5) + Duration::from_micros(input.len() as u64);
    let delay = watchdog + Duration::from_millis(500);
    let cfg = CardConfig {
        image_cus: 1,
        workers: 1,
        cu_delay: delay,
        ..config()
    };
    let mut h = booted(cfg);
    let (c0, t0) = (h.card.time(), Instant::now());
    image_on_card(&mut h, name, &input);
    let (card, wall) = (h.card.time() - c0, t0.elapsed());
    eprintln!(
        "{name}: {:.1} ms of card time, {:.2} s of wall time (CU computation delayed {:.2} s)",
        card.as_secs_f64() * 1e3,
        wall.as_secs_f64(),
        delay.as_secs_f64()
    );
    assert!(wall >= delay, "the delay hook did not delay ({wall:?})");
    assert!(
        card < Duration::from_millis(200),
        "card time {card:?}: the core ran on while the CU computed"
    );
    // A watchdog reset would have answered INTERNAL; the CU finished the one job itself.
    assert_eq!(h.card.cus()[0].jobs, 1);
}

#[test]
fn a_starved_card_answers_every_job_on_the_card() {
    let _serial = serial();
    // One CU worker thread and more spinning threads than cores: the CUs' host computations
    // wait for CPU time, which on the wall clock is what tripped the watchdog.
    let stop = AtomicBool::new(false);
    let spinners = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let cfg = CardConfig {
        workers: 1,
        cu_delay: Duration::from_millis(20),
        ..config()
    };
    std::thread::scope(|s| {
        for _ in 0..spinners {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let mut h = booted(cfg);
        let mut n = 0;
        for (name, input) in image_fixtures() {
            if input.len() > 8 << 20 || image::card_supports(&input).is_err() {
                continue;
            }
            if image::card_preprocess_image(&input, &img_u8()).is_err() {
                continue;
            }
            image_on_card(&mut h, &name, &input);
            n += 1;
        }
        stop.store(true, Ordering::Relaxed);
        assert!(n > 20, "only {n} fixtures");
        // Every job came back SUCCESS (a watchdog reset answers INTERNAL) from a CU that
        // finished it.
        let jobs: u64 = h.card.cus().iter().map(|c| c.jobs).sum();
        assert_eq!(jobs, n);
    });
}

#[test]
fn card_time_only_moves_forward() {
    let _serial = serial();
    let mut h = booted(config());
    let mut samples = vec![h.card.time()];
    for (name, input) in image_fixtures() {
        if input.len() > 8 << 20
            || image::card_supports(&input).is_err()
            || image::card_preprocess_image(&input, &img_u8()).is_err()
        {
            continue;
        }
        image_on_card(&mut h, &name, &input);
        samples.push(h.card.time());
    }
    for w in samples.windows(2) {
        assert!(
            w[0] < w[1],
            "card time did not move forward: {:?} -> {:?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn the_wall_clock_still_works() {
    let _serial = serial();
    let cfg = CardConfig {
        clock: Clock::Wall,
        ..config()
    };
    let t0 = Instant::now();
    let mut h = booted(cfg);
    for name in ["sampling_420.jpg", "large_1920x1080.jpg", "gray_camera.jpg"] {
        let input = fixture(name);
        image_on_card(&mut h, name, &input);
    }
    // On the wall clock card time is the time since the card started.
    let (card, wall) = (h.card.time(), t0.elapsed());
    assert!(card <= wall, "{card:?} > {wall:?}");
    assert!(wall - card < Duration::from_secs(1), "{card:?} vs {wall:?}");
}
