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
use preba_card::{Card as CardModel, CardConfig, Clock, DmaFault, HostMemory, IrqSink};
use preba_host::backend::{Backend, CardBackend, CpuBackend, Job, OpenCard, Output, Via};
use preba_host::dma::DmaMem;
use preba_host::driver::{ARENA_IOVA, Card, CardError, DriverConfig, Pool};
use preba_host::error::{CardFailure, QueueError};
use preba_host::transport::{Op, TResult, Transport, TransportError};
use preba_host::vfio_user::{Emulated, connect_retry};
use preba_protocol::profile::{ImageProfile, Profile};
use preba_protocol::regs::MSIX_VECTORS;
use std::path::Path;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The driver's DMA arena, as the card model's host memory.
struct Arena(DmaMem);

impl HostMemory for Arena {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let off = self
            .0
            .offset_of(iova, buf.len() as u64)
            .ok_or(DmaFault { iova })?;
        self.0.read(off, buf).map_err(|_| DmaFault { iova })
    }
    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        let off = self
            .0
            .offset_of(iova, data.len() as u64)
            .ok_or(DmaFault { iova })?;
        // What the card wrote before is visible to a host that sees this (the phase word last).
        fence(Ordering::Release);
        self.0.write(off, data).map_err(|_| DmaFault { iova })
    }
}

/// MSI-X messages per vector, for `wait_irq`.
#[derive(Default)]
struct Irqs {
    sent: Mutex<[u64; MSIX_VECTORS as usize]>,
    cv: Condvar,
}

impl IrqSink for Irqs {
    fn msix(&self, vector: u16) {
        if let Some(c) = self.sent.lock().unwrap().get_mut(usize::from(vector)) {
            *c += 1;
        }
        self.cv.notify_all();
    }
    fn intx(&self, _level: bool) {}
}

/// The card model in this process behind the host driver's `Transport`.
struct InProc {
    card: CardModel,
    arena: Arc<Arena>,
    irqs: Arc<Irqs>,
    taken: Mutex<[u64; MSIX_VECTORS as usize]>,
}

impl Transport for InProc {
    fn name(&self) -> String {
        "in-process".into()
    }
    fn bar0_read(&self, off: u64, data: &mut [u8]) -> TResult<()> {
        self.card.bar0_read(off, data);
        Ok(())
    }
    fn bar0_write(&self, off: u64, data: &[u8]) -> TResult<()> {
        self.card.bar0_write(off, data);
        Ok(())
    }
    fn bar2_read(&self, off: u64, data: &mut [u8]) -> TResult<()> {
        for (i, c) in data.chunks_mut(8).enumerate() {
            self.card.bar2_read(off + 8 * i as u64, c);
        }
        Ok(())
    }
    fn arena(&self) -> &DmaMem {
        &self.arena.0
    }
    fn wait_irq(&self, vector: u16, timeout: Duration) -> TResult<bool> {
        let v = usize::from(vector);
        let deadline = Instant::now() + timeout;
        let mut sent = self.irqs.sent.lock().unwrap();
        loop {
            let mut taken = self.taken.lock().unwrap();
            let Some(&n) = sent.get(v) else {
                return Ok(false);
            };
            if n > taken[v] {
                taken[v] = n;
                return Ok(true);
            }
            drop(taken);
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            sent = self.irqs.cv.wait_timeout(sent, deadline - now).unwrap().0;
        }
    }
    fn reset(&self) -> TResult<()> {
        self.card
            .reset(Duration::from_secs(30))
            .map_err(|e| TransportError::Other {
                op: Op::Reset,
                source: e.into(),
            })
    }
}

const ARENA_BYTES: usize = 160 << 20;

fn driver_cfg() -> DriverConfig {
    DriverConfig {
        arena_bytes: ARENA_BYTES,
        admin_timeout: Duration::from_secs(5),
        ..DriverConfig::default()
    }
}

/// A card model with `spec` injected, in process, on the default (modeled) clock.
fn in_proc(spec: &str) -> Arc<InProc> {
    in_proc_clock(spec, Clock::default())
}

fn open(t: &Arc<InProc>) -> Card {
    Card::open(t.clone(), driver_cfg()).unwrap_or_else(|e| panic!("open: {e}"))
}

fn backend(t: &Arc<InProc>, timeout: Duration) -> CardBackend {
    let open = OpenCard {
        card: open(t),
        emulated: None,
    };
    CardBackend::new(open, "in-process".into(), timeout)
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

/// When the injected fault `i` last fired.
fn fired_at(t: &InProc, i: usize) -> Instant {
    let f = &t.card.injected()[i];
    assert!(f.count > 0, "{} never fired", f.fault);
    f.last.expect("fired")
}

fn fired_count(t: &InProc, i: usize) -> u64 {
    t.card.injected()[i].count
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
    let _s = serial();
    let t = in_proc("dma-fault@2:in,dma-fault@4:out");
    let be = backend(&t, Duration::from_secs(20));
    let input = image();
    let want = cpu_bytes(&input);
    for n in 1..=5 {
        let t0 = Instant::now();
        let (out, via) = be
            .process(&input, &job())
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        let took = t0.elapsed();
        assert_eq!(image_bytes(&out), &want[..], "request {n}");
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
    assert_eq!((fired_count(&t, 0), fired_count(&t, 1)), (1, 1));
    assert!(
        be.fatal().is_none(),
        "a DMA fault fails the request, not the card"
    );
}

/// A card model with `spec` injected, on `clock`.
fn in_proc_clock(spec: &str, clock: Clock) -> Arc<InProc> {
    let arena = Arc::new(Arena(DmaMem::new(ARENA_BYTES, ARENA_IOVA).expect("arena")));
    let irqs = Arc::new(Irqs::default());
    let cfg = CardConfig {
        inject: spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}")),
        clock,
        ..common::config()
    };
    let card = CardModel::new(cfg, firmware(), arena.clone(), irqs.clone()).expect("card");
    Arc::new(InProc {
        card,
        arena,
        irqs,
        taken: Mutex::new([0; MSIX_VECTORS as usize]),
    })
}

/// A stuck CU on `clock`: the firmware's watchdog (5 s + 1 us per input byte of card time)
/// resets it and answers INTERNAL, the host falls back to the CPU, the card keeps serving.
/// Returns the wall time of the stuck request and the card time it took.
fn stuck_cu(clock: Clock) -> (Duration, Duration) {
    let t = in_proc_clock("stuck-cu@1", clock);
    let be = backend(&t, Duration::from_secs(20));
    let input = image();
    let (c0, t0) = (t.card.time(), Instant::now());
    let (out, via) = be.process(&input, &job()).expect("stuck CU request");
    let (took, card_took) = (t0.elapsed(), t.card.time() - c0);
    assert_eq!(via, Via::CpuFallback);
    assert_eq!(image_bytes(&out), &cpu_bytes(&input)[..]);
    let watchdog = Duration::from_secs(5) + Duration::from_micros(input.len() as u64);
    assert!(
        card_took >= watchdog,
        "answered after {card_took:?} of card time, before the watchdog"
    );
    let tel = be.card().telemetry().expect("telemetry");
    let resets: u32 = tel.cus.iter().map(|c| c.resets).sum();
    assert_eq!(resets, 1, "one watchdog reset");
    // The card keeps serving.
    let (_, via) = be.process(&input, &job()).expect("after the watchdog");
    assert_eq!(via, Via::Card);
    (took, card_took)
}

#[test]
fn stuck_cu_watchdog_then_cpu_fallback() {
    let _s = serial();
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
    let _s = serial();
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
    let _s = serial();
    let t = in_proc("bad-length@1:-1,bad-length@2:+64,bad-length@3:-100");
    let be = backend(&t, Duration::from_secs(20));
    let input = image();
    let want = cpu_bytes(&input);
    for n in 1..=2 {
        let t0 = Instant::now();
        let (out, via) = be
            .process(&input, &job())
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        assert_eq!(
            (via, image_bytes(&out)),
            (Via::CpuFallback, &want[..]),
            "request {n}"
        );
        eprintln!(
            "reaction: bad-length ({}) -> {} -> CPU fallback, answered in {:.1} ms",
            if n == 1 { "-1 byte" } else { "+64 bytes" },
            if n == 1 {
                "length check"
            } else {
                "OUTPUT_TOO_SMALL"
            },
            ms(t0.elapsed())
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
        .process_into(&input, &p, arena, (off, len), guard)
        .expect("process_into with a short CU_WRITTEN");
    assert_eq!(via, Via::CpuFallback);
    let mut got = vec![0; len];
    arena.read(off, &mut got).expect("read region");
    assert_eq!(got, want);
    assert_eq!((1..=3).map(|i| fired_count(&t, i - 1)).sum::<u64>(), 3);
    let (_, via) = be.process(&input, &job()).expect("after");
    assert_eq!(via, Via::Card);
}

#[test]
fn corrupt_completion_fails_the_card_and_answers_every_request() {
    let _s = serial();
    for field in ["status", "cid", "sqid", "head", "reserved", "phase"] {
        let t = in_proc(&format!("corrupt-completion@3:{field}"));
        let card = open(&t);
        let pool = image_pool(&card);
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
        let fired = fired_at(&t, 0);
        let last = answers.iter().map(|a| a.0).max().expect("answers");
        // Later requests fail at once.
        let t0 = Instant::now();
        assert!(matches!(
            card.process(&pool, &image(), Duration::from_secs(5)),
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
    let _s = serial();
    let t = in_proc("corrupt-completion@2:phase");
    let card = open(&t);
    let pool = image_pool(&card);
    let input = image();
    card.process(&pool, &input, Duration::from_secs(20))
        .expect("request 1");
    // Alone in flight, the request whose completion vanished can only time out.
    let t0 = Instant::now();
    let r = card.process(&pool, &input, Duration::from_millis(500));
    assert!(matches!(r, Err(CardError::Timeout { .. })), "{:?}", r.err());
    let timed_out = t0.elapsed();
    assert!(card.fatal().is_none());
    // The next completion lands behind the hole: a queue error, the request answered.
    let t1 = Instant::now();
    let r = card.process(&pool, &input, Duration::from_secs(20));
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
    let _s = serial();
    let t = in_proc("dup-completion@2");
    let card = open(&t);
    let pool = image_pool(&card);
    let input = image();
    for n in 1..=2 {
        card.process(&pool, &input, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
    }
    let seen = wait_fatal(&card, Duration::from_secs(5));
    let reason = card.fatal().expect("failed");
    assert!(
        matches!(reason.queue_error(), Some(QueueError::UnknownCid { .. })),
        "{reason}"
    );
    assert!(matches!(
        card.process(&pool, &input, Duration::from_secs(5)),
        Err(CardError::Fatal { .. })
    ));
    eprintln!(
        "reaction: dup-completion -> the original answered once, the copy is a queue error: card failed {:.2} ms after the copy was posted",
        ms(seen.saturating_duration_since(fired_at(&t, 0)))
    );
}

#[test]
fn lost_msix_is_covered_by_polling() {
    let _s = serial();
    let t = in_proc("lost-msix@2,lost-msix@3,lost-msix@4");
    let be = backend(&t, Duration::from_secs(20));
    let input = image();
    let want = cpu_bytes(&input);
    let mut lat = Vec::new();
    for n in 1..=6 {
        let t0 = Instant::now();
        let (out, via) = be
            .process(&input, &job())
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        lat.push(t0.elapsed());
        assert_eq!(
            (via, image_bytes(&out)),
            (Via::Card, &want[..]),
            "request {n}"
        );
    }
    assert_eq!((0..3).map(|i| fired_count(&t, i)).sum::<u64>(), 3);
    let with_irq: Vec<f64> = [0, 4, 5].iter().map(|&i| ms(lat[i])).collect();
    let lost: Vec<f64> = [1, 2, 3].iter().map(|&i| ms(lat[i])).collect();
    eprintln!(
        "reaction: lost-msix -> the reaper's {} ms poll finds the completion: requests without an interrupt {lost:.1?} ms, with {with_irq:.1?} ms",
        driver_cfg().poll_interval.as_millis()
    );
}

#[test]
fn spurious_interrupts_are_harmless() {
    let _s = serial();
    let t = in_proc("spurious-irq:200us");
    let be = backend(&t, Duration::from_secs(20));
    let input = image();
    let want = cpu_bytes(&input);
    let t0 = Instant::now();
    for n in 1..=8 {
        let (out, via) = be
            .process(&input, &job())
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        assert_eq!(
            (via, image_bytes(&out)),
            (Via::Card, &want[..]),
            "request {n}"
        );
    }
    let took = t0.elapsed();
    let spurious = fired_count(&t, 0);
    assert!(spurious > 0, "no spurious interrupt was sent");
    assert!(be.fatal().is_none());
    eprintln!(
        "reaction: spurious-irq -> none needed (an empty drain): 8 requests right in {:.1} ms with {spurious} spurious interrupts",
        ms(took)
    );
}

#[test]
fn reset_storm_fails_in_flight_requests_and_reopen_recovers() {
    let _s = serial();
    let t = in_proc("reset-storm@2:3");
    let input = image();
    let mut reactions = Vec::new();
    let mut clean = false;
    for _ in 0..6 {
        let card = open(&t);
        let pool = image_pool(&card);
        let mut failed = false;
        for _ in 0..3 {
            match card.process(&pool, &input, Duration::from_secs(20)) {
                Ok(_) => {}
                Err(CardError::Fatal { cause, .. }) => {
                    assert!(matches!(*cause, CardFailure::NotReady), "{cause}");
                    reactions.push(ms(Instant::now().saturating_duration_since(fired_at(&t, 0))));
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
    assert_eq!(fired_count(&t, 0), 3);
    eprintln!(
        "reaction: reset-storm (3 card resets) -> health check sees CSTS.RDY=0, card failed and the in-flight request answered {reactions:.1?} ms after each reset; reopening works after the storm"
    );
}

/// A `preba-card` process started through a wrapper that adds `args` (Emulated starts the
/// binary it is given with the socket and firmware options).
fn spawn_card(args: &str) -> (Emulated, std::path::PathBuf) {
    let bin = Path::new(env!("CARGO_BIN_EXE_preba-card"));
    let fw = firmware_elf().expect("firmware ELF");
    let dir = std::env::temp_dir().join(format!(
        "preba-faults-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let wrapper = dir.join("preba-card");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec '{}' {args} \"$@\"\n", bin.display()),
    )
    .expect("wrapper");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let em = Emulated::spawn(&wrapper, &fw, None).expect("preba-card starts");
    (em, dir)
}

fn open_vfio_user(em: &Emulated) -> Card {
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
    Card::open(Arc::new(t), cfg).unwrap_or_else(|e| panic!("open: {e}{}", em.log_tail()))
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
    let _s = serial();
    let (em, dir) = spawn_card("");
    let card = open_vfio_user(&em);
    let pool = image_pool(&card);
    let pid = em.pid() as i32;
    let (at, answers) = load_until_failure(&card, &pool, Duration::from_secs(20), || {
        // SAFETY: kill(2) on the child this test started; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
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
    drop(card);
    drop(em);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn killed_card_process_fails_every_request() {
    let _s = serial();
    let (em, dir) = spawn_card("");
    let card = open_vfio_user(&em);
    let pool = image_pool(&card);
    let pid = em.pid() as i32;
    let (at, answers) = load_until_failure(&card, &pool, Duration::from_secs(20), || {
        // SAFETY: kill(2) on the child this test started; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
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
    drop(card);
    drop(em);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn inject_switch_of_the_preba_card_binary() {
    let _s = serial();
    let (em, dir) = spawn_card("--inject dup-completion@2");
    let card = open_vfio_user(&em);
    let pool = image_pool(&card);
    for n in 1..=2 {
        card.process(&pool, &image(), Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
    }
    wait_fatal(&card, Duration::from_secs(5));
    let reason = card.fatal().expect("failed");
    assert!(
        matches!(reason.queue_error(), Some(QueueError::UnknownCid { .. })),
        "{reason}"
    );
    drop(card);
    drop(em);
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
    let _ = std::fs::remove_dir_all(dir);
}
