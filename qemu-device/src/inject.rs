//! Fault injection (test only): `preba-card --inject SPEC`, [`CardConfig::inject`].
//!
//! The faults happen in the hardware model, never in the firmware: the DMA engine refuses a
//! transfer, a CU hangs or lies about its output length, the completion path garbles or repeats
//! a CQE on its way into host memory, the MSI-X path drops or invents messages, the card resets
//! itself. The unmodified firmware then does what it does on real hardware (its CU watchdog, a
//! DMA_FAULT status), and the host sees what a broken card would show it. docs/card-spec.md
//! "Fault injection (test only)" is the user's reference; docs/threat-model.md lists the host's
//! reaction to each fault and the test that shows it.
//!
//! SPEC is a comma-separated list of `KIND[@N][:ARG]`. N (from 1, default 1) picks the event the
//! fault hits, counted by the model so a test is deterministic:
//!
//! | KIND | N counts | ARG |
//! |---|---|---|
//! | `dma-fault` | I/O commands fetched from I/O submission queues | `in` (default: its input transfer) or `out` (its output transfer) |
//! | `stuck-cu` | CU jobs started | - |
//! | `bad-length` | CU jobs started | signed byte offset added to CU_WRITTEN (default -1) |
//! | `corrupt-completion` | I/O completions posted | field: `status` (default), `cid`, `sqid`, `head`, `reserved`, `phase` |
//! | `dup-completion` | I/O completions posted | - |
//! | `lost-msix` | MSI-X messages on the vector | vector (default 1, the host driver's I/O queue) |
//! | `spurious-irq` | (no N) | period between messages on vector 1 (`500us`, `1ms`, `2s`; default 1ms) |
//! | `reset-storm` | I/O commands fetched | resets (default 3): the Nth command and the first command after each reset reset the card |
//!
//! [`CardConfig::inject`]: crate::CardConfig::inject

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use preba_protocol::admin::AdminOpcode;
use preba_protocol::io::{CQE_SIZE, SQE_SIZE};

use crate::card::Shared;
use crate::host_mem::{DmaFault, HostMemory};

/// A CQE field `corrupt-completion` garbles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CqeField {
    /// Status code 0x7FFF (undefined).
    Status,
    /// Command id with bit 15 flipped (an id the host never issued).
    Cid,
    /// SQ id with bit 7 flipped (a queue that is not this CQ's).
    SqId,
    /// SQ head 0xFFFF (past any ring).
    Head,
    /// The reserved dword set to 0xDEADBEEF.
    Reserved,
    /// The phase bit inverted: the host sees no entry in that slot (a lost completion).
    Phase,
}

impl CqeField {
    const ALL: [(CqeField, &'static str); 6] = [
        (CqeField::Status, "status"),
        (CqeField::Cid, "cid"),
        (CqeField::SqId, "sqid"),
        (CqeField::Head, "head"),
        (CqeField::Reserved, "reserved"),
        (CqeField::Phase, "phase"),
    ];
    fn name(self) -> &'static str {
        CqeField::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("?", |(_, n)| n)
    }
}

/// One kind of fault, with its argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The DMA engine refuses the command's input (`out`: output) transfer as an IOMMU fault.
    DmaFault { output: bool },
    /// The CU job never finishes: busy until the firmware's watchdog resets the CU.
    StuckCu,
    /// The CU job reports `delta` more output bytes (CU_WRITTEN) than it wrote.
    BadLength { delta: i32 },
    /// The completion reaches host memory with one field garbled.
    CorruptCompletion(CqeField),
    /// The completion is posted twice (the copy in the next CQ slot).
    DupCompletion,
    /// The MSI-X message is dropped (the completion is in host memory).
    LostMsix { vector: u16 },
    /// MSI-X messages on vector 1 every `period` with nothing posted.
    SpuriousIrq { period: Duration },
    /// The card resets itself (controller and queues, like a function reset) `count` times.
    ResetStorm { count: u32 },
}

/// One fault of a spec: a kind and the event it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// The event (from 1) it happens at; see the module documentation for what is counted.
    pub at: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FaultKind::DmaFault { output } => {
                write!(
                    f,
                    "dma-fault@{}:{}",
                    self.at,
                    if output { "out" } else { "in" }
                )
            }
            FaultKind::StuckCu => write!(f, "stuck-cu@{}", self.at),
            FaultKind::BadLength { delta } => write!(f, "bad-length@{}:{delta:+}", self.at),
            FaultKind::CorruptCompletion(field) => {
                write!(f, "corrupt-completion@{}:{}", self.at, field.name())
            }
            FaultKind::DupCompletion => write!(f, "dup-completion@{}", self.at),
            FaultKind::LostMsix { vector } => write!(f, "lost-msix@{}:{vector}", self.at),
            FaultKind::SpuriousIrq { period } => {
                write!(f, "spurious-irq:{}us", period.as_micros())
            }
            FaultKind::ResetStorm { count } => write!(f, "reset-storm@{}:{count}", self.at),
        }
    }
}

/// A parsed `--inject` spec; empty (no fault) by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InjectSpec {
    /// The faults, in spec order.
    pub faults: Vec<Fault>,
}

impl InjectSpec {
    /// No fault at all.
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }
}

impl fmt::Display for InjectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, x) in self.faults.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{x}")?;
        }
        Ok(())
    }
}

/// A spec that does not parse: the part at fault and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectError {
    /// The comma-separated part that is wrong, as written.
    pub part: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault `{}`: {}", self.part, self.reason)
    }
}

impl std::error::Error for InjectError {}

const KINDS: &str = "dma-fault, stuck-cu, bad-length, corrupt-completion, dup-completion, \
                     lost-msix, spurious-irq, reset-storm";
/// More faults than this in one spec is a typo or an attack on the parser, not a test.
const MAX_FAULTS: usize = 64;

fn parse_duration(s: &str) -> Option<Duration> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let v: u64 = digits.parse().ok()?;
    match unit {
        "us" => Some(Duration::from_micros(v)),
        "ms" => Some(Duration::from_millis(v)),
        "s" => Some(Duration::from_secs(v)),
        _ => None,
    }
}

fn parse_fault(part: &str) -> Result<Fault, String> {
    let (head, arg) = match part.split_once(':') {
        Some((h, a)) => (h, Some(a)),
        None => (part, None),
    };
    let (kind, at) = match head.split_once('@') {
        Some((k, n)) => {
            let n: u64 = n
                .parse()
                .map_err(|_| format!("`{n}` after @ is not a count"))?;
            if n == 0 {
                return Err("@N counts from 1".into());
            }
            (k, Some(n))
        }
        None => (head, None),
    };
    let no_arg = |arg: Option<&str>| match arg {
        Some(a) => Err(format!("{kind} takes no argument (got `:{a}`)")),
        None => Ok(()),
    };
    let kind = match kind {
        "dma-fault" => FaultKind::DmaFault {
            output: match arg {
                None | Some("in") => false,
                Some("out") => true,
                Some(a) => return Err(format!("`{a}` is not `in` or `out`")),
            },
        },
        "stuck-cu" => {
            no_arg(arg)?;
            FaultKind::StuckCu
        }
        "bad-length" => FaultKind::BadLength {
            delta: match arg {
                None => -1,
                Some(a) => match a.strip_prefix('+').unwrap_or(a).parse::<i32>() {
                    Ok(0) => return Err("a byte offset of 0 is no fault".into()),
                    Ok(d) => d,
                    Err(_) => return Err(format!("`{a}` is not a byte offset like -1 or +64")),
                },
            },
        },
        "corrupt-completion" => FaultKind::CorruptCompletion(match arg {
            None => CqeField::Status,
            Some(a) => CqeField::ALL
                .iter()
                .find(|(_, n)| *n == a)
                .map(|(f, _)| *f)
                .ok_or_else(|| {
                    format!("`{a}` is not a field (status, cid, sqid, head, reserved, phase)")
                })?,
        }),
        "dup-completion" => {
            no_arg(arg)?;
            FaultKind::DupCompletion
        }
        "lost-msix" => FaultKind::LostMsix {
            vector: match arg {
                None => 1,
                Some(a) => a
                    .parse::<u16>()
                    .ok()
                    .filter(|v| *v < preba_protocol::regs::MSIX_VECTORS)
                    .ok_or_else(|| format!("`{a}` is not an MSI-X vector (0..16)"))?,
            },
        },
        "spurious-irq" => {
            if at.is_some() {
                return Err("spurious-irq takes no @N (it runs for the card's life)".into());
            }
            let period = match arg {
                None => Duration::from_millis(1),
                Some(a) => parse_duration(a)
                    .ok_or_else(|| format!("`{a}` is not a period like 500us, 1ms or 2s"))?,
            };
            if !(Duration::from_micros(10)..=Duration::from_secs(10)).contains(&period) {
                return Err("the period must be 10us..10s".into());
            }
            FaultKind::SpuriousIrq { period }
        }
        "reset-storm" => FaultKind::ResetStorm {
            count: match arg {
                None => 3,
                Some(a) => a
                    .parse::<u32>()
                    .ok()
                    .filter(|c| (1..=1000).contains(c))
                    .ok_or_else(|| format!("`{a}` is not a reset count (1..1000)"))?,
            },
        },
        "" => return Err(format!("no fault kind (expected one of: {KINDS})")),
        other => return Err(format!("unknown kind `{other}` (expected one of: {KINDS})")),
    };
    Ok(Fault {
        kind,
        at: at.unwrap_or(1),
    })
}

impl std::str::FromStr for InjectSpec {
    type Err = InjectError;
    fn from_str(s: &str) -> Result<Self, InjectError> {
        let err = |part: &str, reason: String| InjectError {
            part: part.to_string(),
            reason,
        };
        if s.trim().is_empty() {
            return Err(err(s, "empty spec (expected KIND[@N][:ARG],...)".into()));
        }
        let mut faults = Vec::new();
        for part in s.split(',') {
            let p = part.trim();
            if p.is_empty() {
                return Err(err(
                    part,
                    "empty fault (two commas, or one at an end)".into(),
                ));
            }
            if faults.len() == MAX_FAULTS {
                return Err(err(p, format!("more than {MAX_FAULTS} faults")));
            }
            faults.push(parse_fault(p).map_err(|r| err(p, r))?);
        }
        Ok(InjectSpec { faults })
    }
}

/// What the CU path should do with the job it is starting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CuFault {
    None,
    Stuck,
    Length(i32),
}

/// An I/O queue pair the admin queue created, as the injector saw the command go by.
#[derive(Clone, Copy, Debug)]
struct Queue {
    qid: u16,
    entries: u64,
    sq: u64,
    cq: u64,
}

/// A DMA fault waiting for the transfer it hits.
struct Armed {
    fault: usize,
    qid: u16,
    cid: u16,
    output: bool,
    ranges: Vec<(u64, u64)>,
}

#[derive(Default)]
struct State {
    asq: u64,
    asq_entries: u64,
    queues: Vec<Queue>,
    io_commands: u64,
    completions: u64,
    armed: Vec<Armed>,
    /// A reset fired and the card has not reset yet: commands still fetched before it do not
    /// count toward the storm.
    storm_reset_pending: bool,
    storm_left: u32,
}

/// How often each fault of the spec fired, and when it last did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    /// The fault, as the spec names it.
    pub fault: String,
    /// Times it fired.
    pub count: u64,
    /// When it last fired.
    pub last: Option<Instant>,
}

/// The running injector of one card: event counters and the faults' firing state.
pub(crate) struct Injector {
    spec: InjectSpec,
    state: Mutex<State>,
    fired: Mutex<Vec<(u64, Option<Instant>)>>,
    cu_jobs: AtomicU64,
    msix: [AtomicU64; preba_protocol::regs::MSIX_VECTORS as usize],
    card: Mutex<Weak<Shared>>,
    stop: Mutex<bool>,
    stop_cv: Condvar,
}

fn overlaps(iova: u64, len: u64, (start, n): (u64, u64)) -> bool {
    n > 0 && len > 0 && iova < start.saturating_add(n) && start < iova.saturating_add(len)
}

impl Injector {
    pub fn new(spec: InjectSpec) -> Injector {
        let n = spec.faults.len();
        Injector {
            spec,
            state: Mutex::new(State::default()),
            fired: Mutex::new(vec![(0, None); n]),
            cu_jobs: AtomicU64::new(0),
            msix: Default::default(),
            card: Mutex::new(Weak::new()),
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
        }
    }

    /// Connects the injector to its card (for the resets it requests).
    pub fn attach(&self, sh: &Arc<Shared>) {
        *self.card.lock().expect("inject lock") = Arc::downgrade(sh);
    }

    fn fire(&self, i: usize) {
        if let Some(f) = self.fired.lock().expect("inject lock").get_mut(i) {
            f.0 += 1;
            f.1 = Some(Instant::now());
        }
        log::warn!("inject: {}", self.spec.faults[i]);
    }

    fn matching(&self, n: u64, pred: impl Fn(&FaultKind) -> bool) -> Option<(usize, FaultKind)> {
        self.spec
            .faults
            .iter()
            .enumerate()
            .find(|(_, f)| f.at == n && pred(&f.kind))
            .map(|(i, f)| (i, f.kind))
    }

    pub fn fired(&self) -> Vec<Fired> {
        let f = self.fired.lock().expect("inject lock");
        self.spec
            .faults
            .iter()
            .zip(f.iter())
            .map(|(x, (count, last))| Fired {
                fault: x.to_string(),
                count: *count,
                last: *last,
            })
            .collect()
    }

    /// The spurious-interrupt period, when the spec has one.
    pub fn spurious_period(&self) -> Option<(usize, Duration)> {
        self.spec
            .faults
            .iter()
            .enumerate()
            .find_map(|(i, f)| match f.kind {
                FaultKind::SpuriousIrq { period } => Some((i, period)),
                _ => None,
            })
    }

    /// Waits `period` unless the card stops first; true when it stopped.
    pub fn wait_stop(&self, period: Duration) -> bool {
        let deadline = Instant::now() + period;
        let mut s = self.stop.lock().expect("inject lock");
        while !*s {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .stop_cv
                .wait_timeout(s, deadline - now)
                .expect("inject lock")
                .0;
        }
        true
    }

    pub fn stop(&self) {
        *self.stop.lock().expect("inject lock") = true;
        self.stop_cv.notify_all();
    }

    /// A spurious message was sent (counted for the report only).
    pub fn note_spurious(&self, i: usize) {
        self.fire(i);
    }

    /// The host wrote the admin queue registers.
    pub fn set_admin(&self, asq: u64, aqa: u32) {
        let mut s = self.state.lock().expect("inject lock");
        s.asq = asq;
        s.asq_entries = u64::from(aqa & 0xfff) + 1;
    }

    /// A controller disable or a function reset: every I/O queue is gone.
    pub fn on_reset(&self) {
        let mut s = self.state.lock().expect("inject lock");
        s.queues.clear();
        s.armed.clear();
        s.storm_reset_pending = false;
    }

    /// A CU job starts: what to do with it.
    pub fn cu_started(&self) -> CuFault {
        let n = self.cu_jobs.fetch_add(1, Ordering::AcqRel) + 1;
        match self.matching(n, |k| {
            matches!(k, FaultKind::StuckCu | FaultKind::BadLength { .. })
        }) {
            Some((i, FaultKind::StuckCu)) => {
                self.fire(i);
                CuFault::Stuck
            }
            Some((i, FaultKind::BadLength { delta })) => {
                self.fire(i);
                CuFault::Length(delta)
            }
            _ => CuFault::None,
        }
    }

    /// An MSI-X message on `vector` is about to leave: false drops it.
    pub fn pass_msix(&self, vector: u16) -> bool {
        let Some(c) = self.msix.get(usize::from(vector)) else {
            return true;
        };
        let n = c.fetch_add(1, Ordering::AcqRel) + 1;
        match self.matching(
            n,
            |k| matches!(k, FaultKind::LostMsix { vector: v } if *v == vector),
        ) {
            Some((i, _)) => {
                self.fire(i);
                false
            }
            None => true,
        }
    }

    fn request_reset(&self) {
        if let Some(sh) = self.card.lock().expect("inject lock").upgrade() {
            sh.request_reset();
        }
    }

    /// Looks at a host-to-card transfer after it happened: admin and I/O command fetches.
    fn snoop_read(&self, iova: u64, data: &[u8]) {
        let mut s = self.state.lock().expect("inject lock");
        let len = data.len() as u64;
        let admin_end = s.asq.saturating_add(s.asq_entries * SQE_SIZE as u64);
        if len == SQE_SIZE as u64
            && s.asq_entries > 0
            && (s.asq..admin_end).contains(&iova)
            && (iova - s.asq).is_multiple_of(SQE_SIZE as u64)
        {
            let d = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            let q64 = |i: usize| u64::from(d(i)) | u64::from(d(i + 4)) << 32;
            // Admin SQE: opcode @0, data IOVA @8, cdw10.. @20 (the firmware's decoding).
            if data[0] == AdminOpcode::CreateIoQueuePair as u8 {
                let q = Queue {
                    qid: (d(20) & 0xffff) as u16,
                    entries: u64::from(d(20) >> 16) + 1,
                    sq: q64(8),
                    cq: u64::from(d(24)) | u64::from(d(28)) << 32,
                };
                // The firmware refuses a second queue with a known id: the first one stays.
                if s.queues.iter().all(|x| x.qid != q.qid) {
                    s.queues.push(q);
                }
            } else if data[0] == AdminOpcode::DeleteIoQueuePair as u8 {
                let qid = d(20);
                s.queues.retain(|x| u32::from(x.qid) != qid);
            }
            return;
        }
        let Some(q) = s
            .queues
            .iter()
            .find(|q| {
                len.is_multiple_of(SQE_SIZE as u64)
                    && iova >= q.sq
                    && iova.saturating_add(len) <= q.sq.saturating_add(q.entries * SQE_SIZE as u64)
            })
            .copied()
        else {
            return;
        };
        for e in data.chunks_exact(SQE_SIZE) {
            s.io_commands += 1;
            let n = s.io_commands;
            if let Some((i, FaultKind::DmaFault { output })) =
                self.matching(n, |k| matches!(k, FaultKind::DmaFault { .. }))
            {
                let u64at = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap_or([0; 8]));
                let u32at = |o: usize| {
                    u64::from(u32::from_le_bytes(e[o..o + 4].try_into().unwrap_or([0; 4])))
                };
                let ranges = if output {
                    vec![(u64at(8), u32at(16))]
                } else {
                    // Inline entries, or the indirect list sg[0] points to: either way the
                    // firmware's first read of the command's input starts in one of them.
                    (0..usize::from(e[5].min(2)))
                        .map(|k| (u64at(24 + 16 * k), u32at(32 + 16 * k)))
                        .collect()
                };
                s.armed.push(Armed {
                    fault: i,
                    qid: q.qid,
                    cid: u16::from_le_bytes([e[2], e[3]]),
                    output,
                    ranges,
                });
            }
            let storm = self
                .spec
                .faults
                .iter()
                .enumerate()
                .find_map(|(i, f)| match f.kind {
                    FaultKind::ResetStorm { count } => Some((i, f.at, count)),
                    _ => None,
                });
            if let Some((i, at, count)) = storm
                && !s.storm_reset_pending
            {
                let go = if n == at {
                    s.storm_left = count;
                    true
                } else {
                    n > at && s.storm_left > 0
                };
                if go {
                    s.storm_left -= 1;
                    s.storm_reset_pending = true;
                    self.fire(i);
                    self.request_reset();
                }
            }
        }
    }

    /// A DMA fault armed for this transfer, if any (and disarms it).
    fn take_dma_fault(&self, iova: u64, len: u64, write: bool) -> Option<DmaFault> {
        let mut s = self.state.lock().expect("inject lock");
        let k = s
            .armed
            .iter()
            .position(|a| a.output == write && a.ranges.iter().any(|r| overlaps(iova, len, *r)))?;
        let a = s.armed.swap_remove(k);
        drop(s);
        self.fire(a.fault);
        let start = a
            .ranges
            .iter()
            .filter(|r| overlaps(iova, len, **r))
            .map(|r| r.0.max(iova))
            .min()
            .unwrap_or(iova);
        Some(DmaFault { iova: start })
    }

    /// The I/O CQ slot a 4-byte write at `iova` completes (the firmware writes bytes 0..28 of a
    /// CQE, then the word with the command id, status and phase): (queue, slot).
    fn cqe_tail(&self, iova: u64, len: usize) -> Option<(Queue, u64)> {
        if len != 4 {
            return None;
        }
        let s = self.state.lock().expect("inject lock");
        s.queues.iter().find_map(|q| {
            let start = iova.checked_sub(28)?.checked_sub(q.cq)?;
            (start.is_multiple_of(CQE_SIZE as u64) && start / (CQE_SIZE as u64) < q.entries)
                .then(|| (*q, start / CQE_SIZE as u64))
        })
    }
}

/// The host memory the card sees when faults are injected: every DMA passes here first.
pub(crate) struct InjectMemory {
    pub inner: Arc<dyn HostMemory>,
    pub inj: Arc<Injector>,
}

impl InjectMemory {
    /// Writes the completion tail `data` at `iova` (slot `slot` of `q`), garbled or repeated
    /// when a fault says so.
    fn post_cqe(&self, q: Queue, slot: u64, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        let inj = &self.inj;
        let n = {
            let mut s = inj.state.lock().expect("inject lock");
            s.completions += 1;
            let cid = u16::from_le_bytes([data[0], data[1]]);
            s.armed.retain(|a| !(a.qid == q.qid && a.cid == cid));
            s.completions
        };
        let Some((i, kind)) = inj.matching(n, |k| {
            matches!(
                k,
                FaultKind::CorruptCompletion(_) | FaultKind::DupCompletion
            )
        }) else {
            return self.inner.write(iova, data);
        };
        let at = iova - 28;
        let mut e = [0u8; CQE_SIZE];
        self.inner.read(at, &mut e[..28])?;
        e[28..].copy_from_slice(data);
        inj.fire(i);
        match kind {
            FaultKind::DupCompletion => {
                // The copy lands first, so a host that sees the original sees the copy too.
                let next = (slot + 1) % q.entries;
                let mut dup = e;
                if next == 0 {
                    dup[30] ^= 1;
                }
                // The firmware checked base + ring bytes when it created the queue; a queue it
                // refused is never written, so this only guards against our own snooping.
                if let Some(dat) = q.cq.checked_add(next * CQE_SIZE as u64)
                    && dat.checked_add(CQE_SIZE as u64).is_some()
                {
                    self.inner.write(dat, &dup[..28])?;
                    self.inner.write(dat + 28, &dup[28..])?;
                }
                self.inner.write(iova, data)
            }
            FaultKind::CorruptCompletion(field) => {
                match field {
                    CqeField::Status => {
                        let st = (0x7FFFu16 << 1) | u16::from(e[30] & 1);
                        e[30..32].copy_from_slice(&st.to_le_bytes());
                    }
                    CqeField::Cid => e[29] ^= 0x80,
                    CqeField::SqId => e[26] ^= 0x80,
                    CqeField::Head => e[24..26].copy_from_slice(&[0xFF, 0xFF]),
                    CqeField::Reserved => e[20..24].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes()),
                    CqeField::Phase => e[30] ^= 1,
                }
                self.inner.write(at, &e[..28])?;
                self.inner.write(iova, &e[28..])
            }
            _ => self.inner.write(iova, data),
        }
    }
}

impl HostMemory for InjectMemory {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        if let Some(f) = self.inj.take_dma_fault(iova, buf.len() as u64, false) {
            return Err(f);
        }
        self.inner.read(iova, buf)?;
        self.inj.snoop_read(iova, buf);
        Ok(())
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        if let Some(f) = self.inj.take_dma_fault(iova, data.len() as u64, true) {
            return Err(f);
        }
        match self.inj.cqe_tail(iova, data.len()) {
            Some((q, slot)) => self.post_cqe(q, slot, iova, data),
            None => self.inner.write(iova, data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<InjectSpec, InjectError> {
        s.parse()
    }

    #[test]
    fn grammar() {
        let s = parse(
            "dma-fault@3,dma-fault@4:out,stuck-cu@5,bad-length@7,bad-length@8:+64,\
             dup-completion@2,corrupt-completion@4,corrupt-completion@9:phase,lost-msix@6,\
             lost-msix@2:3,spurious-irq:100ms,reset-storm@10,reset-storm@1:5",
        )
        .unwrap();
        let k: Vec<(FaultKind, u64)> = s.faults.iter().map(|f| (f.kind, f.at)).collect();
        assert_eq!(
            k,
            vec![
                (FaultKind::DmaFault { output: false }, 3),
                (FaultKind::DmaFault { output: true }, 4),
                (FaultKind::StuckCu, 5),
                (FaultKind::BadLength { delta: -1 }, 7),
                (FaultKind::BadLength { delta: 64 }, 8),
                (FaultKind::DupCompletion, 2),
                (FaultKind::CorruptCompletion(CqeField::Status), 4),
                (FaultKind::CorruptCompletion(CqeField::Phase), 9),
                (FaultKind::LostMsix { vector: 1 }, 6),
                (FaultKind::LostMsix { vector: 3 }, 2),
                (
                    FaultKind::SpuriousIrq {
                        period: Duration::from_millis(100)
                    },
                    1
                ),
                (FaultKind::ResetStorm { count: 3 }, 10),
                (FaultKind::ResetStorm { count: 5 }, 1),
            ]
        );
        // N defaults to 1; the display form parses back to the same spec.
        assert_eq!(parse("stuck-cu").unwrap().faults[0].at, 1);
        let again = parse(&s.to_string()).unwrap();
        assert_eq!(again, s);
        assert_eq!(
            parse(" stuck-cu@2 , dup-completion ").unwrap().to_string(),
            "stuck-cu@2,dup-completion@1"
        );
        assert!(InjectSpec::default().is_empty());
    }

    #[test]
    fn bad_specs_name_the_part() {
        for (spec, part, why) in [
            ("", "", "empty spec"),
            ("stuck-cu,,dup-completion", "", "empty fault"),
            ("stuck-cu,", "", "empty fault"),
            ("stuck-cu@2,frob@3", "frob@3", "unknown kind `frob`"),
            ("@3", "@3", "no fault kind"),
            ("stuck-cu@0", "stuck-cu@0", "counts from 1"),
            ("stuck-cu@x", "stuck-cu@x", "`x` after @ is not a count"),
            ("stuck-cu@-1", "stuck-cu@-1", "not a count"),
            ("stuck-cu@1:5", "stuck-cu@1:5", "takes no argument"),
            ("dup-completion:x", "dup-completion:x", "takes no argument"),
            (
                "dma-fault@1:sideways",
                "dma-fault@1:sideways",
                "not `in` or `out`",
            ),
            ("bad-length@1:0", "bad-length@1:0", "no fault"),
            (
                "bad-length@1:lots",
                "bad-length@1:lots",
                "not a byte offset",
            ),
            (
                "corrupt-completion:cycles",
                "corrupt-completion:cycles",
                "not a field",
            ),
            ("lost-msix:16", "lost-msix:16", "not an MSI-X vector"),
            ("spurious-irq@2:1ms", "spurious-irq@2:1ms", "takes no @N"),
            ("spurious-irq:fast", "spurious-irq:fast", "not a period"),
            ("spurious-irq:1ns", "spurious-irq:1ns", "not a period"),
            ("spurious-irq:1us", "spurious-irq:1us", "10us..10s"),
            ("spurious-irq:11s", "spurious-irq:11s", "10us..10s"),
            ("reset-storm:0", "reset-storm:0", "not a reset count"),
            (
                "reset-storm:99999",
                "reset-storm:99999",
                "not a reset count",
            ),
            (
                "stuck-cu@99999999999999999999999",
                "stuck-cu@99999999999999999999999",
                "not a count",
            ),
        ] {
            let e = parse(spec).expect_err(spec);
            assert_eq!(e.part.trim(), part, "{spec}: {e}");
            assert!(e.reason.contains(why), "{spec}: {e}");
            assert!(e.to_string().contains(&format!("`{}`", e.part)), "{e}");
        }
        let many = vec!["stuck-cu"; MAX_FAULTS + 1].join(",");
        assert!(parse(&many).unwrap_err().reason.contains("more than"));
    }

    #[test]
    fn counters_fire_once_at_n() {
        let inj = Injector::new(parse("stuck-cu@2,bad-length@3:+8,lost-msix@2").unwrap());
        assert_eq!(inj.cu_started(), CuFault::None);
        assert_eq!(inj.cu_started(), CuFault::Stuck);
        assert_eq!(inj.cu_started(), CuFault::Length(8));
        assert_eq!(inj.cu_started(), CuFault::None);
        assert!(inj.pass_msix(1));
        assert!(inj.pass_msix(0), "other vectors count apart");
        assert!(!inj.pass_msix(1));
        assert!(inj.pass_msix(1));
        assert!(inj.pass_msix(99), "out-of-range vectors are not counted");
        let f = inj.fired();
        assert_eq!(f.iter().map(|f| f.count).collect::<Vec<_>>(), vec![1, 1, 1]);
        assert!(f.iter().all(|f| f.last.is_some()));
    }
}
