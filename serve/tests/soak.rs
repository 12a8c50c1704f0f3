//! Soak: random mixed traffic (valid, unsupported, corrupt and oversized images; valid and
//! broken WAVs) from several threads through the host driver into `preba-card` processes.
//! Each card (an epoch) gets, drawn from the seeded RNG, no fault, a kill (SIGKILL), a stop
//! (SIGSTOP), one or two host-initiated resets (a function reset under load, or a quiesced
//! reset and reopen as a firmware update does), or one to three faults injected into the card
//! model (`preba-card --inject`, qemu-device/src/inject.rs) at random event numbers. Injected
//! kinds are dealt from a shuffled deck, so every kind comes up once per nine draws. A card
//! that failed while its process lives is reopened on the same transport, as the host does
//! after a card reset (docs/threat-model.md, "Card faults").
//!
//! Checks, adapted to the documented host reaction of each fault:
//! - every request gets exactly one answer, within its bound;
//! - every success is bit-identical to the golden model on the CPU (the path the card mirrors);
//!   a refusal is the golden model's own error;
//! - a valid input fails only with its card failed (killed, stopped, reset under load, or a
//!   corrupt / duplicate completion or a reset storm), or times out only when a completion was
//!   lost (`corrupt-completion:phase`); never with "request lost";
//! - a card fails only in an epoch with a fault that fails cards, and does fail once a corrupt
//!   completion or a reset storm fired (a duplicate completion's copy can be overwritten by the
//!   card's next completion before the host reads it: counted, not a failure);
//! - an input the clean card takes falls back to the CPU only under a fault that explains it
//!   (DMA fault, stuck CU, bad length: at most one fallback per fault that fired; a reset);
//! - reopening a card that failed (process alive) or was reset works;
//! - no thread growth across epochs, and RSS does not keep climbing.
//!
//! Length: `PREBA_SOAK_SECS` (default 60, what CI runs); `cargo xtask soak --minutes N` runs it
//! in release. `PREBA_SOAK_SEED` replays the fault plan of a run (the seed is printed; which
//! request a fault hits depends on thread timing). Needs `preba-card` and the firmware, as
//! serve/tests/emulated.rs does.

mod common;

use preba_host::backend::{self, Backend, CardBackend, CardSpec, CpuBackend, Job, Output, Via};
use preba_host::driver::{Card, DriverConfig};
use preba_host::error::{CardFailure, RequestError};
use preba_host::transport::Transport;
use preba_protocol::profile::{AudioProfile, Dtype, ImageProfile};
use std::collections::BTreeMap;
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
    /// 1..=n.
    fn upto(&mut self, n: u64) -> u64 {
        1 + self.below(n)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// One kind of request and the golden model's answer to it.
struct Case {
    name: String,
    input: Vec<u8>,
    job: Job,
    /// Output bytes on success, or the CPU path's error.
    want: Result<Vec<u8>, preba_host::error::RequestError>,
    /// A clean card answers it itself (not through the CPU path): set by the warm-up.
    card_takes: bool,
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
                card_takes: false,
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

/// Bytes the allocator has handed out and not had back (glibc's mallinfo2:
/// small chunks plus mmapped ones), KiB. Unlike RSS it does not count memory
/// free inside the allocator's arenas, so a leak shows here while a
/// fragmented but stable heap does not.
fn heap_in_use_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics under its own locks.
        let m = unsafe { libc::mallinfo2() };
        ((m.uordblks + m.hblkhd) / 1024) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// What is done to a card: the soak's fault kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    None,
    Kill,
    Stop,
    /// A function reset from the host (`Transport::reset`) while requests are in flight.
    HostReset,
    /// Traffic stopped, the card closed, `firmware::reset_and_open` (what a flash does).
    HostReopen,
    DmaFault,
    StuckCu,
    BadLength,
    /// `corrupt-completion` on any field but the phase.
    CorruptCompletion,
    /// `corrupt-completion:phase`: a lost completion.
    LostCompletion,
    DupCompletion,
    LostMsix,
    SpuriousIrq,
    ResetStorm,
}

const INJECTED: [Kind; 9] = [
    Kind::DmaFault,
    Kind::StuckCu,
    Kind::BadLength,
    Kind::CorruptCompletion,
    Kind::LostCompletion,
    Kind::DupCompletion,
    Kind::LostMsix,
    Kind::SpuriousIrq,
    Kind::ResetStorm,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Kill => "kill",
            Kind::Stop => "stop",
            Kind::HostReset => "host-reset",
            Kind::HostReopen => "host-reopen",
            Kind::DmaFault => "dma-fault",
            Kind::StuckCu => "stuck-cu",
            Kind::BadLength => "bad-length",
            Kind::CorruptCompletion => "corrupt-completion",
            Kind::LostCompletion => "corrupt-completion:phase",
            Kind::DupCompletion => "dup-completion",
            Kind::LostMsix => "lost-msix",
            Kind::SpuriousIrq => "spurious-irq",
            Kind::ResetStorm => "reset-storm",
        }
    }
    /// The kind of an `inject: FAULT` line of the card's log.
    fn of_fired(fault: &str) -> Option<Kind> {
        let name = fault.split(['@', ':']).next()?;
        if name == "corrupt-completion" && fault.ends_with(":phase") {
            return Some(Kind::LostCompletion);
        }
        INJECTED.into_iter().find(|k| k.name() == name)
    }
    /// The host marks the card failed (docs/threat-model.md, "Card faults").
    fn fails_card(self) -> bool {
        matches!(
            self,
            Kind::Kill
                | Kind::Stop
                | Kind::HostReset
                | Kind::CorruptCompletion
                | Kind::LostCompletion
                | Kind::DupCompletion
                | Kind::ResetStorm
        )
    }
    /// Fails the card as soon as it fires.
    /// A duplicate completion is not here: its copy lands in the next CQ slot, which the card
    /// still counts as free, so under load the card's next completion can overwrite the copy
    /// before the host reads it (then the host never sees a duplicate).
    fn fails_card_at_once(self) -> bool {
        matches!(self, Kind::CorruptCompletion | Kind::ResetStorm)
    }
    /// One request's card-side failure the CPU path answers (DMA_FAULT, INTERNAL, a wrong
    /// length): a fallback for an input the card takes.
    fn falls_back_one(self) -> bool {
        matches!(self, Kind::DmaFault | Kind::StuckCu | Kind::BadLength)
    }
    /// A reset may end commands with ABORTED, which the CPU path answers.
    fn may_fall_back(self) -> bool {
        self.falls_back_one() || matches!(self, Kind::HostReset | Kind::ResetStorm)
    }
}

/// Card-path requests per second the plans assume (about half what a 2-core machine does).
const CARD_PACE: f64 = if cfg!(debug_assertions) {
    300.0
} else {
    1000.0
};

/// What happens to one card.
#[derive(Default)]
struct Plan {
    /// Kill or stop, and when (from the epoch's start).
    signal: Option<(Kind, Duration)>,
    /// Host resets and when, in time order.
    resets: Vec<(Kind, Duration)>,
    /// Injected faults: kind and `--inject` part.
    inject: Vec<(Kind, String)>,
}

impl Plan {
    fn kinds(&self) -> Vec<Kind> {
        let mut k: Vec<Kind> = self
            .signal
            .iter()
            .map(|s| s.0)
            .chain(self.resets.iter().map(|r| r.0))
            .chain(self.inject.iter().map(|i| i.0))
            .collect();
        k.sort();
        k.dedup();
        if k.is_empty() {
            k.push(Kind::None);
        }
        k
    }
    fn spec(&self) -> String {
        self.inject
            .iter()
            .map(|i| i.1.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((k, at)) = self.signal {
            parts.push(format!("{} at {:.1} s", k.name(), at.as_secs_f64()));
        }
        for (k, at) in &self.resets {
            parts.push(format!("{} at {:.1} s", k.name(), at.as_secs_f64()));
        }
        if !self.inject.is_empty() {
            parts.push(format!("--inject {}", self.spec()));
        }
        if parts.is_empty() {
            "no fault".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Deals injected kinds in shuffled rounds: every kind once per round.
struct Deck(Vec<Kind>);
impl Deck {
    fn draw(&mut self, rng: &mut Rng) -> Kind {
        if self.0.is_empty() {
            self.0 = INJECTED.to_vec();
            for i in (1..self.0.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.0.swap(i, j);
            }
        }
        self.0.pop().expect("refilled")
    }
}

/// The `--inject` part for `kind`, hitting an event in 1..=`events` (about the I/O commands
/// the card will see by the epoch's end).
fn inject_part(kind: Kind, events: u64, rng: &mut Rng) -> String {
    let n = rng.upto(events);
    // CU jobs and MSI-X messages are fewer than commands (refused inputs never reach a CU;
    // interrupts coalesce).
    let few = rng.upto(events / 2 + 1);
    match kind {
        Kind::DmaFault => format!("dma-fault@{n}:{}", rng.pick(&["in", "out"])),
        Kind::StuckCu => format!("stuck-cu@{few}"),
        Kind::BadLength => format!(
            "bad-length@{few}:{:+}",
            rng.pick(&[-1, 1, -64, 64, 8, -4096])
        ),
        Kind::CorruptCompletion => format!(
            "corrupt-completion@{n}:{}",
            rng.pick(&["status", "cid", "sqid", "head", "reserved"])
        ),
        Kind::LostCompletion => format!("corrupt-completion@{n}:phase"),
        Kind::DupCompletion => format!("dup-completion@{n}"),
        // Vector 0 is the admin queue's (polled by the driver): a few messages per open.
        Kind::LostMsix if rng.below(4) == 0 => format!("lost-msix@{}:0", rng.upto(4)),
        Kind::LostMsix => format!("lost-msix@{few}:1"),
        Kind::SpuriousIrq => format!("spurious-irq:{}", rng.pick(&["500us", "2ms", "20ms"])),
        Kind::ResetStorm => format!("reset-storm@{n}:{}", rng.upto(3)),
        _ => unreachable!("{kind:?} is not injected"),
    }
}

fn draw_plan(rng: &mut Rng, deck: &mut Deck, length: Duration, events: u64) -> Plan {
    let at = |rng: &mut Rng| Duration::from_millis(rng.below(length.as_millis() as u64).max(200));
    let mut plan = Plan::default();
    match rng.below(20) {
        0..=2 => plan.signal = Some((Kind::Kill, at(rng))),
        // A stopped card costs a socket deadline (5 s) to notice: rarer than a kill.
        3 => plan.signal = Some((Kind::Stop, at(rng))),
        4 | 5 => {
            for _ in 0..rng.upto(2) {
                let k = *rng.pick(&[Kind::HostReset, Kind::HostReopen]);
                plan.resets.push((k, at(rng)));
            }
            plan.resets.sort_by_key(|r| r.1);
        }
        6..=17 => {
            for _ in 0..rng.upto(3) {
                let k = deck.draw(rng);
                // One spurious-interrupt source and one storm per card (the model takes the
                // first of each).
                if matches!(k, Kind::SpuriousIrq | Kind::ResetStorm)
                    && plan.inject.iter().any(|i| i.0 == k)
                {
                    continue;
                }
                plan.inject.push((k, inject_part(k, events, rng)));
            }
        }
        _ => {}
    }
    plan
}

/// How requests ended.
#[derive(Clone, Default)]
struct Outcomes {
    requests: u64,
    card: u64,
    /// CPU fallback for an input the clean card takes: a fault's doing.
    fault_fallback: u64,
    /// CPU fallback for an input the card never takes (oversized, unsupported).
    cpu_path: u64,
    refused: u64,
    failed_with_card: u64,
    timed_out: u64,
}

impl Outcomes {
    fn add(&mut self, o: &Outcomes) {
        self.requests += o.requests;
        self.card += o.card;
        self.fault_fallback += o.fault_fallback;
        self.cpu_path += o.cpu_path;
        self.refused += o.refused;
        self.failed_with_card += o.failed_with_card;
        self.timed_out += o.timed_out;
    }
}

impl std::fmt::Display for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests: {} card, {} CPU fallback after a card fault, {} CPU path \
             (oversized/unsupported), {} refused as the golden model refuses, {} failed with \
             their card, {} timed out",
            self.requests,
            self.card,
            self.fault_fallback,
            self.cpu_path,
            self.refused,
            self.failed_with_card,
            self.timed_out
        )
    }
}

/// One row of the summary: a fault kind over the run (an epoch counts under each of its kinds).
#[derive(Default)]
struct Row {
    epochs: u64,
    armed: u64,
    fired: u64,
    out: Outcomes,
    card_failures: u64,
    reopens: u64,
}

/// The state one epoch's request threads share.
struct Shared<'a> {
    cases: &'a [Case],
    out: Mutex<Outcomes>,
    failures: &'a Mutex<Vec<String>>,
    slowest: &'a Mutex<Duration>,
    submitted: AtomicU64,
    answered: AtomicU64,
    /// Requests for the card path (input within its limit).
    card_bound: AtomicU64,
    bound: Duration,
    /// A lost completion is planned: its request may time out.
    timeouts_ok: bool,
    epoch: u32,
}

fn check_answer(
    sh: &Shared,
    c: &Case,
    r: &Result<(Output, Via), RequestError>,
    took: Duration,
    card_failing: bool,
) {
    let fail = |m: String| {
        sh.failures
            .lock()
            .unwrap()
            .push(format!("epoch {}: {}: {m}", sh.epoch, c.name))
    };
    {
        let mut s = sh.slowest.lock().unwrap();
        *s = (*s).max(took);
    }
    if took > sh.bound {
        fail(format!("answered after {took:?}"));
    }
    let mut o = sh.out.lock().unwrap();
    o.requests += 1;
    match (r, &c.want) {
        (Ok((out, via)), Ok(want)) => {
            if output_bytes(out) != *want {
                fail(format!("via {via:?}: output differs from the golden model"));
            }
            match via {
                Via::Card => o.card += 1,
                Via::CpuFallback if c.card_takes => o.fault_fallback += 1,
                Via::CpuFallback => o.cpu_path += 1,
                Via::Cpu => fail("answered by the plain CPU path through a card".into()),
            }
        }
        (Ok((_, via)), Err(e)) => fail(format!(
            "via {via:?}: succeeded where the golden model says {e}"
        )),
        (Err(RequestError::CardFailed { cause, .. }), _) => {
            if matches!(**cause, CardFailure::Lost) {
                fail(format!("answer lost: {cause}"));
            } else if !card_failing {
                fail(format!("failed with a healthy card: {cause}"));
            } else {
                o.failed_with_card += 1;
            }
        }
        (Err(e @ RequestError::Timeout { .. }), _) => {
            if sh.timeouts_ok {
                o.timed_out += 1;
            } else {
                fail(format!("{e} with no lost completion planned"));
            }
        }
        (Err(e), Err(golden)) => {
            // The card's refusal carries the CPU path's reason.
            if e.to_string().contains(&golden.to_string()) {
                o.refused += 1;
            } else {
                fail(format!(
                    "refused with `{e}`, the golden model with `{golden}`"
                ));
            }
        }
        (Err(e), Ok(_)) => fail(format!("failed where the golden model succeeds: {e}")),
    }
}

/// Why a run of traffic on one opened card ended.
enum SegEnd {
    EpochOver,
    /// The card failed (its process killed or stopped, or the host marked it failed).
    Failed,
    /// A quiesced host reset is due.
    Reopen,
}

/// New `inject:` lines of the card's log, by kind.
struct CardLog {
    path: PathBuf,
    read: usize,
}
impl CardLog {
    fn fired(&mut self) -> BTreeMap<Kind, u64> {
        let mut m = BTreeMap::new();
        let s = std::fs::read(&self.path).unwrap_or_default();
        // Only whole lines: the card may be writing one.
        let end = s.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if end > self.read {
            for line in String::from_utf8_lossy(&s[self.read..end]).lines() {
                if let Some(k) = line
                    .split_once("inject: ")
                    .and_then(|(_, f)| Kind::of_fired(f))
                {
                    *m.entry(k).or_insert(0) += 1;
                }
            }
            self.read = end;
        }
        m
    }
}

/// A short stable name for why a card failed (its variant path).
fn cause_name(c: &CardFailure) -> String {
    let d = format!("{c:?}");
    let mut s: String = d
        .chars()
        .take_while(|ch| ch.is_alphanumeric() || *ch == '(' || *ch == '_')
        .collect();
    s.push_str(&")".repeat(s.matches('(').count()));
    s
}

fn wait_fatal(be: &CardBackend, within: Duration) -> bool {
    let t0 = Instant::now();
    while be.fatal().is_none() {
        if t0.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Opens the card at `sock` as `backend::open` does, but retries a refused connection: the
/// socket file appears at bind(2), a moment before listen(2), and a loaded machine can run the
/// client in between (seen once in ~340 card starts).
fn open_card(sock: &Path, cfg: &DriverConfig, what: &str) -> CardBackend {
    let name = CardSpec::VfioUser(sock.to_path_buf()).to_string();
    let t = preba_host::vfio_user::connect_retry(
        sock,
        name.clone(),
        cfg.arena_bytes,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{what}: connecting to the card: {e}"));
    let card = Card::open(Arc::new(t), cfg.clone())
        .unwrap_or_else(|e| panic!("{what}: opening the card: {e}"));
    CardBackend::new(
        backend::OpenCard {
            card,
            emulated: None,
        },
        name,
        backend::REQUEST_TIMEOUT,
    )
}

/// Found by the soak: a CU that lies about its length in the mel stage of an audio job made
/// the normalisation stage refuse its input with INVALID_FIELD, which the host took for the
/// input's fault (an error for a valid WAV) instead of falling back to the CPU path.
fn audio_bad_length_falls_back(
    bin: &Path,
    fw: &Path,
    sock: &Path,
    cases: &[Case],
    failures: &Mutex<Vec<String>>,
) {
    let c = cases
        .iter()
        .find(|c| c.name == "speech_16k_s16.wav")
        .expect("fixture speech_16k_s16.wav");
    let args = [
        "--inject".to_string(),
        "bad-length@1:-1,bad-length@3:+8".into(),
    ];
    let mut card = common::start_card_with(bin, fw, sock, &args, None);
    let be = open_card(sock, &DriverConfig::default(), "bad-length on audio");
    for want_via in [Via::CpuFallback, Via::CpuFallback, Via::Card] {
        match (be.process(&c.input, &c.job), &c.want) {
            (Ok((o, via)), Ok(want)) if via == want_via && output_bytes(&o) == *want => {}
            (r, _) => failures.lock().unwrap().push(format!(
                "bad-length on an audio job ({}): want {want_via:?} with the golden output, got {:?}",
                args[1],
                r.map(|(_, via)| via)
            )),
        }
    }
    drop(be);
    let _ = card.kill();
    let _ = card.wait();
}

#[test]
fn soak_mixed_traffic_with_card_faults() {
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
    let dir = tempfile::tempdir().unwrap();
    let sock: PathBuf = dir.path().join("card.sock");
    let log_path = dir.path().join("card.log");
    let spec = CardSpec::VfioUser(sock.clone());
    let cfg = DriverConfig::default();
    let open = |what: &str| open_card(&sock, &cfg, what);

    // Warm-up on a clean card: which inputs the card takes itself.
    let mut cases = cases();
    let failures = Mutex::new(Vec::<String>::new());
    {
        let mut card = common::start_card(&bin, &fw, &sock);
        let be = open("warm-up");
        for c in cases.iter_mut() {
            match (be.process(&c.input, &c.job), &c.want) {
                (Ok((o, via)), Ok(want)) if output_bytes(&o) == *want => {
                    c.card_takes = via == Via::Card;
                }
                (Err(_), Err(_)) => {}
                (r, _) => failures.lock().unwrap().push(format!(
                    "warm-up: {}: {:?} disagrees with the golden model",
                    c.name,
                    r.map(|(_, via)| via)
                )),
            }
        }
        drop(be);
        let _ = card.kill();
        let _ = card.wait();
    }
    let cases = cases;
    audio_bad_length_falls_back(&bin, &fw, &sock, &cases, &failures);
    eprintln!(
        "soak: {} cases, {} taken by the clean card",
        cases.len(),
        cases.iter().filter(|c| c.card_takes).count()
    );

    let slowest = Mutex::new(Duration::ZERO);
    let mut total = Outcomes::default();
    let mut rows: BTreeMap<Kind, Row> = BTreeMap::new();
    let mut causes: BTreeMap<String, u64> = BTreeMap::new();
    // An answer may take the request deadline plus one socket deadline (a stopped card).
    let bound =
        backend::REQUEST_TIMEOUT + preba_host::vfio_user::OP_TIMEOUT + Duration::from_secs(5);
    let mut rng = Rng(seed);
    let mut deck = Deck(Vec::new());
    let end = Instant::now() + Duration::from_secs(secs);
    let mut epochs = 0u32;
    let mut baseline: Option<u64> = None;
    let (mut max_threads, mut rss_after, mut heap_after) = (0u64, Vec::new(), Vec::new());
    let (mut reopens_total, mut traffic_time, mut card_bound_total) = (0u64, 0f64, 0u64);
    let mut dup_unseen = 0u64;
    while Instant::now() < end {
        epochs += 1;
        let left = end.saturating_duration_since(Instant::now());
        let length =
            Duration::from_millis(3000 + rng.below(5000)).min(left.max(Duration::from_secs(1)));
        // Injected faults hit an event among those the card sees before about 70% of the
        // epoch, at a pace fixed per build (not measured: the seed alone replays the plan).
        let events = ((CARD_PACE * length.as_secs_f64() * 0.7) as u64).max(3);
        let plan = draw_plan(&mut rng, &mut deck, length, events);
        let kinds = plan.kinds();
        let mut args = Vec::new();
        if !plan.inject.is_empty() {
            args = vec!["--inject".to_string(), plan.spec()];
        }
        let mut card = common::start_card_with(&bin, &fw, &sock, &args, Some(&log_path));
        let mut log = CardLog {
            path: log_path.clone(),
            read: 0,
        };
        let mut be = Some(open(&format!("epoch {epochs}")));
        let t: Arc<dyn Transport> = be.as_ref().unwrap().card().transport();
        let sh = Shared {
            cases: &cases,
            out: Mutex::new(Outcomes::default()),
            failures: &failures,
            slowest: &slowest,
            submitted: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            card_bound: AtomicU64::new(0),
            bound,
            timeouts_ok: kinds.contains(&Kind::LostCompletion),
            epoch: epochs,
        };
        let epoch_fail = |m: String| {
            failures
                .lock()
                .unwrap()
                .push(format!("epoch {epochs} ({}): {m}", plan.describe()))
        };
        let t_epoch = Instant::now();
        let (mut signalled, mut resets_done) = (false, 0usize);
        let (mut fired, mut card_failures, mut reopens) = (BTreeMap::new(), 0u64, 0u64);
        let mut epoch_causes = Vec::new();
        let mut seg = 0u64;
        while let Some(b) = be.take() {
            seg += 1;
            // Set before a fault the soak causes itself: answers after it may fail.
            let failing = AtomicBool::new(false);
            let stop = AtomicBool::new(false);
            let t_seg = Instant::now();
            let why = std::thread::scope(|s| {
                let threads: Vec<_> = (0..4u64)
                    .map(|th| {
                        let (b, sh, stop, failing) = (&b, &sh, &stop, &failing);
                        let mut rng = Rng(seed
                            ^ (u64::from(epochs) << 8)
                            ^ (seg << 40)
                            ^ (th + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                        s.spawn(move || {
                            while !stop.load(Ordering::Acquire) {
                                let c = &sh.cases[rng.below(sh.cases.len() as u64) as usize];
                                sh.submitted.fetch_add(1, Ordering::AcqRel);
                                if c.input.len() <= backend::CARD_MAX_INPUT {
                                    sh.card_bound.fetch_add(1, Ordering::AcqRel);
                                }
                                let t0 = Instant::now();
                                let r = b.process(&c.input, &c.job);
                                let took = t0.elapsed();
                                sh.answered.fetch_add(1, Ordering::AcqRel);
                                let card_failing =
                                    b.fatal().is_some() || failing.load(Ordering::Acquire);
                                check_answer(sh, c, &r, took, card_failing);
                                // Once the card is known dead, stop hammering it.
                                if b.fatal().is_some() {
                                    break;
                                }
                            }
                        })
                    })
                    .collect();
                let why = loop {
                    let now = t_epoch.elapsed();
                    if now >= length {
                        break SegEnd::EpochOver;
                    }
                    if let Some((k, at)) = plan.signal
                        && !signalled
                        && now >= at
                    {
                        failing.store(true, Ordering::Release);
                        match k {
                            Kind::Kill => {
                                let _ = card.kill();
                            }
                            _ => signal(card.id(), libc::SIGSTOP),
                        }
                        signalled = true;
                    }
                    if let Some(&(k, at)) = plan.resets.get(resets_done)
                        && now >= at
                    {
                        resets_done += 1;
                        if k == Kind::HostReopen {
                            break SegEnd::Reopen;
                        }
                        failing.store(true, Ordering::Release);
                        if let Err(e) = t.reset() {
                            epoch_fail(format!("host reset under load: {e}"));
                        }
                    }
                    if b.fatal().is_some() || threads.iter().all(|h| h.is_finished()) {
                        break SegEnd::Failed;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                stop.store(true, Ordering::Release);
                for h in threads {
                    h.join().expect("a soak thread panicked");
                }
                why
            });
            traffic_time += t_seg.elapsed().as_secs_f64();
            // What fired during this run of traffic, and whether the card failed as it should.
            let now_fired = log.fired();
            let must_fail = now_fired.keys().any(|k| k.fails_card_at_once());
            if must_fail && !signalled && !wait_fatal(&b, Duration::from_secs(2)) {
                epoch_fail(format!(
                    "{:?} fired but the card was not marked failed",
                    now_fired.keys().map(|k| k.name()).collect::<Vec<_>>()
                ));
            }
            if now_fired.contains_key(&Kind::DupCompletion)
                && !signalled
                && !wait_fatal(&b, Duration::from_millis(200))
            {
                dup_unseen += 1;
            }
            for (k, n) in now_fired {
                *fired.entry(k).or_insert(0) += n;
            }
            if let Some(cause) = b.fatal() {
                card_failures += 1;
                epoch_causes.push(cause_name(&cause));
                if !kinds.iter().any(|k| k.fails_card()) {
                    epoch_fail(format!(
                        "the card failed with no card-failing fault: {cause}"
                    ));
                }
            }
            match why {
                SegEnd::EpochOver => break,
                // A killed or stopped card is gone: the next epoch starts another.
                SegEnd::Failed if signalled => break,
                SegEnd::Failed => {
                    let cause = b.fatal().map_or("?".into(), |c| c.to_string());
                    drop(b);
                    match Card::open(t.clone(), cfg.clone()) {
                        Ok(card) => {
                            reopens += 1;
                            be = Some(CardBackend::new(
                                backend::OpenCard {
                                    card,
                                    emulated: None,
                                },
                                spec.to_string(),
                                backend::REQUEST_TIMEOUT,
                            ));
                        }
                        Err(e) => epoch_fail(format!("reopening after `{cause}`: {e}")),
                    }
                }
                SegEnd::Reopen => {
                    drop(b);
                    match preba_host::firmware::reset_and_open(&t, &cfg) {
                        Ok(card) => {
                            reopens += 1;
                            be = Some(CardBackend::new(
                                backend::OpenCard {
                                    card,
                                    emulated: None,
                                },
                                spec.to_string(),
                                backend::REQUEST_TIMEOUT,
                            ));
                        }
                        Err(e) => epoch_fail(format!("host reset and reopen: {e}")),
                    }
                }
            }
            // Commands still on the card when the host gave it up complete until the reopen
            // resets it: what fired then belongs to no run of traffic (it is counted, not
            // checked against the reopened card).
            for (k, n) in log.fired() {
                *fired.entry(k).or_insert(0) += n;
            }
        }
        if matches!(plan.signal, Some((Kind::Stop, _))) && signalled {
            signal(card.id(), libc::SIGCONT);
        }
        drop(be);
        drop(t);
        let _ = card.kill();
        let _ = card.wait();
        for (k, n) in log.fired() {
            *fired.entry(k).or_insert(0) += n;
        }
        assert_eq!(
            sh.submitted.load(Ordering::Acquire),
            sh.answered.load(Ordering::Acquire),
            "epoch {epochs}: a request got no answer"
        );
        let out = sh.out.into_inner().unwrap();
        // Fallbacks of inputs the clean card takes need a fault that explains them.
        let one_each: u64 = fired
            .iter()
            .filter(|(k, _)| k.falls_back_one())
            .map(|(_, n)| n)
            .sum();
        // Resets may end commands with ABORTED (answered by the CPU path); otherwise each such
        // fallback is one fired DMA fault, stuck CU or bad length.
        let resets = kinds
            .iter()
            .any(|k| k.may_fall_back() && !k.falls_back_one());
        if !resets && out.fault_fallback > one_each {
            epoch_fail(format!(
                "{} CPU fallbacks of inputs the clean card takes, but {one_each} faults fired \
                 that each fail one request to the CPU path",
                out.fault_fallback
            ));
        }
        card_bound_total += sh.card_bound.load(Ordering::Acquire);
        let signal_done = u64::from(signalled);
        for k in &kinds {
            let row = rows.entry(*k).or_default();
            row.epochs += 1;
            row.armed += match k {
                Kind::None => 0,
                Kind::Kill | Kind::Stop => 1,
                Kind::HostReset | Kind::HostReopen => {
                    plan.resets.iter().filter(|r| r.0 == *k).count() as u64
                }
                _ => plan.inject.iter().filter(|i| i.0 == *k).count() as u64,
            };
            row.fired += match k {
                Kind::None => 0,
                Kind::Kill | Kind::Stop => signal_done,
                Kind::HostReset | Kind::HostReopen => plan
                    .resets
                    .iter()
                    .take(resets_done)
                    .filter(|r| r.0 == *k)
                    .count() as u64,
                _ => fired.get(k).copied().unwrap_or(0),
            };
            row.out.add(&out);
            row.card_failures += card_failures;
            row.reopens += reopens;
        }
        for c in &epoch_causes {
            *causes.entry(c.clone()).or_insert(0) += 1;
        }
        total.add(&out);
        reopens_total += reopens;
        let now = (proc_status("Threads:"), proc_status("VmRSS:"));
        let heap = heap_in_use_kib();
        eprintln!(
            "soak: epoch {epochs} ({:.1} s, {}): {} card, {} fault fallback, {} CPU path, {} refused, \
             {} failed with card, {} timed out; fired {:?}; card failed {card_failures}x {:?}, reopened {reopens}x; \
             RSS {} KiB, heap in use {heap} KiB, {} threads",
            t_epoch.elapsed().as_secs_f64(),
            plan.describe(),
            out.card,
            out.fault_fallback,
            out.cpu_path,
            out.refused,
            out.failed_with_card,
            out.timed_out,
            fired
                .iter()
                .map(|(k, n)| format!("{}x{n}", k.name()))
                .collect::<Vec<_>>(),
            epoch_causes,
            now.1,
            now.0,
        );
        max_threads = max_threads.max(now.0);
        match baseline {
            None => baseline = Some(now.0),
            Some(threads) => assert!(
                now.0 <= threads,
                "epoch {epochs}: {} threads after the card closed, {threads} after the first",
                now.0
            ),
        }
        rss_after.push(now.1);
        heap_after.push(heap);
    }
    let slowest = *slowest.lock().unwrap();
    eprintln!(
        "soak: {epochs} epochs, {total}; slowest answer {slowest:?}; {reopens_total} reopens on \
         the same card process; {:.0} card-path requests/s of traffic (plans assume {CARD_PACE})",
        card_bound_total as f64 / traffic_time.max(1e-3)
    );
    eprintln!(
        "soak: by fault kind (an epoch counts under each of its kinds; armed/fired: planned and \
         done, or fired in the card's log):"
    );
    for (k, r) in &rows {
        eprintln!(
            "soak:   {:<25} {:>3} epochs, armed {:>3}, fired {:>6}; {}; card failed {}x, reopened {}x",
            k.name(),
            r.epochs,
            r.armed,
            r.fired,
            r.out,
            r.card_failures,
            r.reopens
        );
    }
    eprintln!(
        "soak: card failures by cause: {causes:?}; runs of traffic where a duplicate completion \
         fired and the host never saw the copy (overwritten by the next completion): {dup_unseen}"
    );
    let rss_max = rss_after.iter().copied().max().unwrap_or(0);
    // After each quarter of the epochs: a climb shows as a steady rise, warm-up as a plateau.
    let quarters = |v: &[u64]| -> Vec<u64> {
        (1..=4)
            .filter_map(|q| v.get((v.len() * q / 4).saturating_sub(1)).copied())
            .collect()
    };
    eprintln!(
        "soak: RSS (KiB) after epoch 1 {}, after epoch 2 {}, after each quarter of the epochs \
         {:?}, highest {rss_max}; heap in use (KiB) after epoch 2 {}, after each quarter {:?}, \
         highest {}; threads after epoch 1 {}, highest after an epoch {max_threads}",
        rss_after.first().copied().unwrap_or(0),
        rss_after.get(1).copied().unwrap_or(0),
        quarters(&rss_after),
        heap_after.get(1).copied().unwrap_or(0),
        quarters(&heap_after),
        heap_after.iter().copied().max().unwrap_or(0),
        baseline.unwrap_or(0)
    );
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures (PREBA_SOAK_SEED={seed}), first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(total.card > 0, "the card answered nothing");
    // Every injected kind fires over a run of a few minutes.
    if secs >= 300 {
        let missing: Vec<&str> = INJECTED
            .iter()
            .filter(|k| rows.get(k).is_none_or(|r| r.fired == 0))
            .map(|k| k.name())
            .collect();
        assert!(
            missing.is_empty(),
            "never fired in {secs} s: {missing:?} (PREBA_SOAK_SEED={seed})"
        );
    }
    // Memory: after warm-up (the first epochs' caches), RSS must not keep climbing.
    if rss_after.len() >= 4 {
        let early = rss_after[1];
        let last = *rss_after.last().unwrap();
        assert!(
            last < early + 128 * 1024,
            "RSS grew from {early} KiB to {last} KiB over {epochs} epochs"
        );
        // The heap in use is the sharper test of a leak: RSS also counts memory freed into
        // the allocator's arenas (measured: RSS +4 MB, heap in use +26 KiB over 44 epochs and
        // 536,874 requests), so a leak of a few bytes per request shows here first.
        let (early, last) = (heap_after[1], *heap_after.last().unwrap());
        assert!(
            last < early + 8 * 1024,
            "heap in use grew from {early} KiB to {last} KiB over {epochs} epochs ({total})"
        );
    }
}
