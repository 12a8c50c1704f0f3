//! Injected card faults against the real host driver: the card model runs the firmware with
//! `CardConfig::inject` (in process, behind the host's `Transport`) or `preba-card --inject` /
//! a signal (out of process, vfio-user). Each test shows the host's reaction to one fault and
//! prints its reaction time (`reaction:` lines, collected in docs/threat-model.md).
//!
//! The invariant checked everywhere: every submitted request gets exactly one answer (card,
//! CPU fallback or error), every wait has a deadline, nothing panics.

mod common;

use common::{firmware, root, serial};
use preba_card::harness::firmware_elf;
use preba_card::{CardConfig, Clock};
use preba_host::backend::{Backend, CardBackend, CpuBackend, Job, OpenCard, Output, Via};
use preba_host::driver::{Card, CardError, DriverConfig, Pool};
use preba_host::error::{CardFailure, QueueError};
use preba_host::vfio_user::{Emulated, connect_retry};
use preba_protocol::profile::{ImageProfile, Profile};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

// `InProcess`: the card model behind the driver's `Transport`, its host memory the driver's arena.
preba_card::harness::in_process_transport!();

const ARENA_BYTES: usize = 160 << 20;

fn driver_cfg() -> DriverConfig {
    DriverConfig {
        arena_bytes: ARENA_BYTES,
        admin_timeout: Duration::from_secs(5),
        ..DriverConfig::default()
    }
}

/// A card model with `spec` injected, in process, on `clock`.
fn in_proc(spec: &str, clock: Clock) -> Arc<InProcess> {
    let cfg = CardConfig {
        inject: spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}")),
        clock,
        ..common::config()
    };
    InProcess::new(cfg, firmware(), ARENA_BYTES).unwrap_or_else(|e| panic!("{e}"))
}

/// One in-process fault test: the serial lock, the card model with its faults injected, the
/// fixture image and the CPU path's tensor for it.
struct Fault {
    t: Arc<InProcess>,
    input: Vec<u8>,
    want: Vec<u8>,
    _serial: MutexGuard<'static, ()>,
}

impl Fault {
    /// `spec` injected, on the default (modeled) clock.
    fn new(spec: &str) -> Fault {
        Fault::on(spec, Clock::default())
    }

    fn on(spec: &str, clock: Clock) -> Fault {
        let serial = serial();
        let input = image();
        let want = cpu_bytes(&input);
        Fault {
            t: in_proc(spec, clock),
            input,
            want,
            _serial: serial,
        }
    }

    /// The driver opened on the card.
    fn open(&self) -> Card {
        Card::open(self.t.clone(), driver_cfg()).unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// The driver and an image pool on it.
    fn open_pool(&self) -> (Card, Pool) {
        let card = self.open();
        let pool = image_pool(&card);
        (card, pool)
    }

    /// The backend `preba preprocess` and the server use, with a 20 s request deadline.
    fn backend(&self) -> CardBackend {
        let open = OpenCard {
            card: self.open(),
            emulated: None,
        };
        CardBackend::new(open, "in-process".into(), Duration::from_secs(20))
    }

    /// Request `n` of the fixture through `be`: the tensor must be the CPU path's; returns how
    /// it was made and how long it took.
    fn request(&self, be: &CardBackend, n: usize) -> (Via, Duration) {
        let t0 = Instant::now();
        let (out, via) = be
            .process(&self.input, &job())
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        let took = t0.elapsed();
        assert_eq!(image_bytes(&out), &self.want[..], "request {n}");
        (via, took)
    }

    /// When injected fault `i` last fired.
    fn fired_at(&self, i: usize) -> Instant {
        let f = &self.t.card.injected()[i];
        assert!(f.count > 0, "{} never fired", f.fault);
        f.last.expect("fired")
    }

    /// How often injected fault `i` fired.
    fn fired(&self, i: usize) -> u64 {
        self.t.card.injected()[i].count
    }
}

fn image() -> Vec<u8> {
    std::fs::read(root().join("fixtures/images/sampling_420.jpg")).expect("fixture")
}

fn job() -> Job {
    Job::Image(ImageProfile::default())
}

fn cpu_bytes(input: &[u8]) -> Vec<u8> {
    match CpuBackend.process(input, &job()).expect("cpu path") {
        (Output::Image(i), _) => i.data,
        _ => panic!("image job gave audio"),
    }
}

fn image_bytes(o: &Output) -> &[u8] {
    match o {
        Output::Image(i) => &i.data,
        Output::Audio(_) => panic!("image job gave audio"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `n` requests on `pool` at once; returns each answer and when it came. Each request has
/// its own deadline, so this returns by `timeout` plus scheduling.
fn concurrent(
    card: &Card,
    pool: &Pool,
    n: usize,
    timeout: Duration,
) -> Vec<(Instant, Result<(), CardError>)> {
    let input = image();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let input = &input;
                s.spawn(move || {
                    let r = card.process(pool, input, timeout);
                    (Instant::now(), r.map(|_| ()))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    })
}

fn image_pool(card: &Card) -> Pool {
    let p = ImageProfile::default();
    card.pool(&Profile::Image(p), 8, 1 << 20, p.output_len())
        .expect("pool")
}

/// Waits (bounded) until the driver marked the card failed; returns when it saw it.
fn wait_fatal(card: &Card, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if card.fatal().is_some() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "the card was not marked failed within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn dma_fault_falls_back_to_cpu() {
    let f = Fault::new("dma-fault@2:in,dma-fault@4:out");
    let be = f.backend();
    for n in 1..=5 {
        let (via, took) = f.request(&be, n);
        let faulted = n == 2 || n == 4;
        assert_eq!(
            via,
            if faulted { Via::CpuFallback } else { Via::Card },
            "request {n}"
        );
        if faulted {
            eprintln!(
                "reaction: dma-fault ({}) -> DMA_FAULT status -> CPU fallback, request answered in {:.1} ms",
                if n == 2 { "input" } else { "output" },
                ms(took)
            );
        }
    }
    assert_eq!((f.fired(0), f.fired(1)), (1, 1));
    assert!(
        be.fatal().is_none(),
        "a DMA fault fails the request, not the card"
    );
}

/// A stuck CU on `clock`: the firmware's watchdog (5 s + 1 us per input byte of card time)
/// resets it and answers INTERNAL, the host falls back to the CPU, the card keeps serving.
/// Returns the wall time of the stuck request and the card time it took.
fn stuck_cu(clock: Clock) -> (Duration, Duration) {
    let f = Fault::on("stuck-cu@1", clock);
    let be = f.backend();
    let c0 = f.t.card.time();
    let (via, took) = f.request(&be, 1);
    let card_took = f.t.card.time() - c0;
    assert_eq!(via, Via::CpuFallback);
    let watchdog = Duration::from_secs(5) + Duration::from_micros(f.input.len() as u64);
    assert!(
        card_took >= watchdog,
        "answered after {card_took:?} of card time, before the watchdog"
    );
    let tel = be.card().telemetry().expect("telemetry");
    let resets: u32 = tel.cus.iter().map(|c| c.resets).sum();
    assert_eq!(resets, 1, "one watchdog reset");
    // The card keeps serving.
    assert_eq!(f.request(&be, 2).0, Via::Card, "after the watchdog");
    (took, card_took)
}

#[test]
fn stuck_cu_watchdog_then_cpu_fallback() {
    let (took, card_took) = stuck_cu(Clock::Modeled);
    // Modeled time: nothing can happen on the card before the watchdog's deadline but the
    // stuck job itself, so card time jumps there: seconds of card time in milliseconds.
    assert!(
        took < Duration::from_secs(2),
        "a stuck CU took {took:?} of wall time to detect"
    );
    eprintln!(
        "reaction: stuck-cu -> firmware CU watchdog -> INTERNAL -> CPU fallback in {:.1} ms \
         (modeled clock; {:.3} s of card time)",
        ms(took),
        card_took.as_secs_f64()
    );
}

#[test]
fn stuck_cu_watchdog_on_the_wall_clock() {
    let (took, _) = stuck_cu(Clock::Wall);
    assert!(
        took >= Duration::from_secs(5),
        "answered in {took:?}, before the watchdog"
    );
    eprintln!(
        "reaction: stuck-cu -> firmware CU watchdog -> INTERNAL -> CPU fallback in {:.2} s \
         (wall clock)",
        took.as_secs_f64()
    );
}

#[test]
fn bad_output_length_falls_back_to_cpu() {
    let f = Fault::new("bad-length@1:-1,bad-length@2:+64,bad-length@3:-100,bad-length@4:-4");
    let be = f.backend();
    for n in 1..=2 {
        let (via, took) = f.request(&be, n);
        assert_eq!(via, Via::CpuFallback, "request {n}");
        eprintln!(
            "reaction: bad-length ({}) -> {} -> CPU fallback, answered in {:.1} ms",
            if n == 1 { "-1 byte" } else { "+64 bytes" },
            if n == 1 {
                "length check"
            } else {
                "OUTPUT_TOO_SMALL"
            },
            ms(took)
        );
    }
    // The zero-copy path (the server's): the region gets the CPU's tensor.
    let p = ImageProfile::default();
    let len = p.output_len();
    let off = be.reserve(len).expect("reserve");
    let arena = be.arena().expect("arena");
    arena.zero(off, len).expect("zero");
    let guard: preba_host::driver::OutGuard = Arc::new(());
    let via = be
        .process_into(&f.input, &p, arena, (off, len), guard)
        .expect("process_into with a short CU_WRITTEN");
    assert_eq!(via, Via::CpuFallback);
    let mut got = vec![0; len];
    arena.read(off, &mut got).expect("read region");
    assert_eq!(got, f.want);
    // The CLI's path (the tensor read from the arena straight into the
    // caller's buffer): a short answer is not read, the CPU's tensor is.
    let mut out = vec![0xa5u8; len];
    let (_, via) = be
        .process_image_into(&f.input, &p, &mut out)
        .expect("process_image_into with a short CU_WRITTEN");
    assert_eq!(via, Via::CpuFallback);
    assert!(out == f.want, "process_image_into: the CPU path's tensor");
    assert_eq!((0..4).map(|i| f.fired(i)).sum::<u64>(), 4);
    assert_eq!(f.request(&be, 5).0, Via::Card, "after");
    out.fill(0xa5);
    let (_, via) = be
        .process_image_into(&f.input, &p, &mut out)
        .expect("after");
    assert_eq!(via, Via::Card);
    assert!(out == f.want, "process_image_into: the card's tensor");
}

#[test]
fn corrupt_completion_fails_the_card_and_answers_every_request() {
    for field in ["status", "cid", "sqid", "head", "reserved", "phase"] {
        let f = Fault::new(&format!("corrupt-completion@3:{field}"));
        let (card, pool) = f.open_pool();
        let answers = concurrent(&card, &pool, 6, Duration::from_secs(20));
        let ok = answers.iter().filter(|a| a.1.is_ok()).count();
        let reason = card
            .fatal()
            .unwrap_or_else(|| panic!("{field}: card not marked failed"));
        assert!(reason.queue_error().is_some(), "{field}: {reason}");
        // The two completions before the bad one are answers; the rest fail with the card.
        assert_eq!(ok, 2, "{field}: {answers:?}");
        for a in answers.iter().filter(|a| a.1.is_err()) {
            assert!(
                matches!(a.1, Err(CardError::Fatal { .. })),
                "{field}: {:?}",
                a.1
            );
        }
        let fired = f.fired_at(0);
        let last = answers.iter().map(|a| a.0).max().expect("answers");
        // Later requests fail at once.
        let t0 = Instant::now();
        assert!(matches!(
            card.process(&pool, &f.input, Duration::from_secs(5)),
            Err(CardError::Fatal { .. })
        ));
        assert!(t0.elapsed() < Duration::from_millis(100));
        eprintln!(
            "reaction: corrupt-completion:{field} -> queue error, card failed, {} in-flight requests answered {:.2} ms after the bad entry ({reason})",
            6 - ok,
            ms(last.saturating_duration_since(fired))
        );
    }
}

#[test]
fn lost_completion_phase_is_found_by_the_next_one() {
    let f = Fault::new("corrupt-completion@2:phase");
    let (card, pool) = f.open_pool();
    let input = &f.input;
    card.process(&pool, input, Duration::from_secs(20))
        .expect("request 1");
    // Alone in flight, the request whose completion vanished can only time out.
    let t0 = Instant::now();
    let r = card.process(&pool, input, Duration::from_millis(500));
    assert!(matches!(r, Err(CardError::Timeout { .. })), "{:?}", r.err());
    let timed_out = t0.elapsed();
    assert!(card.fatal().is_none());
    // The next completion lands behind the hole: a queue error, the request answered.
    let t1 = Instant::now();
    let r = card.process(&pool, input, Duration::from_secs(20));
    let took = t1.elapsed();
    assert!(matches!(r, Err(CardError::Fatal { .. })), "{:?}", r.err());
    let reason = card.fatal().expect("failed");
    assert!(
        matches!(reason.queue_error(), Some(QueueError::PhaseGap { .. })),
        "{reason}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!(
        "reaction: corrupt-completion:phase (lost completion) -> its request times out ({:.0} ms, its own deadline); the next completion reveals the hole: card failed in {:.1} ms ({reason})",
        ms(timed_out),
        ms(took)
    );
}

#[test]
fn duplicate_completion_fails_the_card() {
    let f = Fault::new("dup-completion@2");
    let (card, pool) = f.open_pool();
    for n in 1..=2 {
        card.process(&pool, &f.input, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
    }
    let seen = wait_fatal(&card, Duration::from_secs(5));
    let reason = card.fatal().expect("failed");
    assert!(
        matches!(reason.queue_error(), Some(QueueError::UnknownCid { .. })),
        "{reason}"
    );
    assert!(matches!(
        card.process(&pool, &f.input, Duration::from_secs(5)),
        Err(CardError::Fatal { .. })
    ));
    eprintln!(
        "reaction: dup-completion -> the original answered once, the copy is a queue error: card failed {:.2} ms after the copy was posted",
        ms(seen.saturating_duration_since(f.fired_at(0)))
    );
}

#[test]
fn lost_msix_is_covered_by_polling() {
    let f = Fault::new("lost-msix@2,lost-msix@3,lost-msix@4");
    let be = f.backend();
    let mut lat = Vec::new();
    for n in 1..=6 {
        let (via, took) = f.request(&be, n);
        lat.push(took);
        assert_eq!(via, Via::Card, "request {n}");
    }
    assert_eq!((0..3).map(|i| f.fired(i)).sum::<u64>(), 3);
    let with_irq: Vec<f64> = [0, 4, 5].iter().map(|&i| ms(lat[i])).collect();
    let lost: Vec<f64> = [1, 2, 3].iter().map(|&i| ms(lat[i])).collect();
    eprintln!(
        "reaction: lost-msix -> the reaper's {} ms poll finds the completion: requests without an interrupt {lost:.1?} ms, with {with_irq:.1?} ms",
        driver_cfg().poll_interval.as_millis()
    );
}

#[test]
fn spurious_interrupts_are_harmless() {
    let f = Fault::new("spurious-irq:200us");
    let be = f.backend();
    let t0 = Instant::now();
    for n in 1..=8 {
        assert_eq!(f.request(&be, n).0, Via::Card, "request {n}");
    }
    let took = t0.elapsed();
    let spurious = f.fired(0);
    assert!(spurious > 0, "no spurious interrupt was sent");
    assert!(be.fatal().is_none());
    eprintln!(
        "reaction: spurious-irq -> none needed (an empty drain): 8 requests right in {:.1} ms with {spurious} spurious interrupts",
        ms(took)
    );
}

#[test]
fn reset_storm_fails_in_flight_requests_and_reopen_recovers() {
    let f = Fault::new("reset-storm@2:3");
    let mut reactions = Vec::new();
    let mut clean = false;
    for _ in 0..6 {
        let (card, pool) = f.open_pool();
        let mut failed = false;
        for _ in 0..3 {
            match card.process(&pool, &f.input, Duration::from_secs(20)) {
                Ok(_) => {}
                Err(CardError::Fatal { cause, .. }) => {
                    assert!(matches!(*cause, CardFailure::NotReady), "{cause}");
                    reactions.push(ms(Instant::now().saturating_duration_since(f.fired_at(0))));
                    failed = true;
                    break;
                }
                Err(e) => panic!("unexpected answer during the storm: {e}"),
            }
        }
        if !failed {
            clean = true;
            break;
        }
    }
    assert!(clean, "the card did not come back after the storm");
    assert_eq!(reactions.len(), 3, "three resets seen: {reactions:?}");
    assert_eq!(f.fired(0), 3);
    eprintln!(
        "reaction: reset-storm (3 card resets) -> health check sees CSTS.RDY=0, card failed and the in-flight request answered {reactions:.1?} ms after each reset; reopening works after the storm"
    );
}

/// One out-of-process fault test: the serial lock, a `preba-card` process started through a
/// wrapper that adds `args` (Emulated starts the binary it is given with the socket and
/// firmware options), the driver on it over vfio-user and an image pool. Dropped in field
/// order: the driver, the process, then its directory.
struct Spawned {
    pool: Pool,
    card: Card,
    em: Emulated,
    _dir: TempDir,
    _serial: MutexGuard<'static, ()>,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Spawned {
    fn new(args: &str) -> Spawned {
        let serial = serial();
        let bin = Path::new(env!("CARGO_BIN_EXE_preba-card"));
        let fw = firmware_elf().expect("firmware ELF");
        let dir = TempDir(std::env::temp_dir().join(format!(
            "preba-faults-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        )));
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        let wrapper = dir.0.join("preba-card");
        std::fs::write(
            &wrapper,
            format!("#!/bin/sh\nexec '{}' {args} \"$@\"\n", bin.display()),
        )
        .expect("wrapper");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let em = Emulated::spawn(&wrapper, &fw, None).expect("preba-card starts");
        let cfg = DriverConfig {
            arena_bytes: 32 << 20,
            ..driver_cfg()
        };
        let t = connect_retry(
            em.socket(),
            "vfio-user".into(),
            cfg.arena_bytes,
            Duration::from_secs(10),
        )
        .expect("connect");
        let card =
            Card::open(Arc::new(t), cfg).unwrap_or_else(|e| panic!("open: {e}{}", em.log_tail()));
        let pool = image_pool(&card);
        Spawned {
            pool,
            card,
            em,
            _dir: dir,
            _serial: serial,
        }
    }

    /// Sends `sig` to the `preba-card` process.
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the child this test started; no memory is involved.
        assert_eq!(unsafe { libc::kill(self.em.pid() as i32, sig) }, 0);
    }
}

/// Requests from 4 threads in a loop until each gets an error; `hit` runs once requests flow.
/// Returns when each thread's last answer came, and its message.
fn load_until_failure(
    card: &Card,
    pool: &Pool,
    timeout: Duration,
    hit: impl FnOnce(),
) -> (Instant, Vec<(Instant, CardError)>) {
    let input = image();
    let served = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let (input, served) = (&input, &served);
                s.spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        match card.process(pool, input, timeout) {
                            Ok(_) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => return (Instant::now(), e),
                        }
                        assert!(Instant::now() < deadline, "the card never failed");
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while served.load(Ordering::Relaxed) < 8 {
            assert!(Instant::now() < deadline, "no requests served");
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = Instant::now();
        hit();
        let answers = hs.into_iter().map(|h| h.join().expect("thread")).collect();
        (at, answers)
    })
}

#[test]
fn stopped_card_process_fails_every_request() {
    let s = Spawned::new("");
    let (card, pool) = (&s.card, &s.pool);
    let (at, answers) = load_until_failure(card, pool, Duration::from_secs(20), || {
        s.signal(libc::SIGSTOP);
    });
    let last = answers.iter().map(|a| a.0).max().expect("answers");
    for (_, e) in &answers {
        assert!(
            matches!(e, CardError::Fatal { .. } | CardError::Timeout { .. }),
            "{e}"
        );
    }
    assert!(card.fatal().is_some());
    let took = last.saturating_duration_since(at);
    assert!(took < Duration::from_secs(12), "{took:?}");
    eprintln!(
        "reaction: SIGSTOP -> vfio-user socket deadline (5 s): card failed, 4 in-flight requests answered within {:.2} s ({})",
        took.as_secs_f64(),
        card.fatal().map(|c| c.to_string()).unwrap_or_default()
    );
}

#[test]
fn killed_card_process_fails_every_request() {
    let s = Spawned::new("");
    let (card, pool) = (&s.card, &s.pool);
    let (at, answers) = load_until_failure(card, pool, Duration::from_secs(20), || {
        s.signal(libc::SIGKILL);
    });
    let last = answers.iter().map(|a| a.0).max().expect("answers");
    assert!(card.fatal().is_some());
    let took = last.saturating_duration_since(at);
    assert!(took < Duration::from_secs(2), "{took:?}");
    eprintln!(
        "reaction: SIGKILL -> the socket closes: card failed, 4 in-flight requests answered within {:.1} ms ({})",
        ms(took),
        card.fatal().map(|c| c.to_string()).unwrap_or_default()
    );
}

#[test]
fn inject_switch_of_the_preba_card_binary() {
    let s = Spawned::new("--inject dup-completion@2");
    for n in 1..=2 {
        s.card
            .process(&s.pool, &image(), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
    }
    wait_fatal(&s.card, Duration::from_secs(5));
    let reason = s.card.fatal().expect("failed");
    assert!(
        matches!(reason.queue_error(), Some(QueueError::UnknownCid { .. })),
        "{reason}"
    );
    // A bad spec: exit status 2, the message names the bad part.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preba-card"))
        .args([
            "--socket",
            "/nonexistent/x.sock",
            "--inject",
            "stuck-cu@2,lost-msix@1:99",
        ])
        .output()
        .expect("run preba-card");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--inject: fault `lost-msix@1:99`: `99` is not an MSI-X vector"),
        "{err}"
    );
}
