//! The crate's errors: [`Error`], what a command fails with, and the layers under it, each
//! a typed cause of the one above so callers and tests match variants, not message text:
//!
//! - [`TransportError`]: a BAR access, DMA map, interrupt wait or reset failed (which
//!   operation, which region and offset; the client's or the system's error as the source);
//! - [`QueueError`]: a completion the driver does not believe (untrusted completions);
//! - [`CardFailure`]: why the card as a whole failed (transport, queue error, controller
//!   status, bring-up): every request in flight fails with it;
//! - [`CardError`]: what the driver's calls (`Card::open`, `process`, `pool`, admin
//!   commands) fail with;
//! - [`RequestError`]: what one request through a [`crate::backend::Backend`] fails with.
//!
//! Display strings are complete one-line messages (the CLI prints `PATH: reason` and
//! `preba: card ...: failed: ...`), so a message includes its cause's text; `source()`
//! still gives the typed cause for code that wants to look at it.
#![forbid(unsafe_code)]

use crate::vfio_user_client::ClientError;
use preba_preprocess::Error as PpError;
use preba_protocol::WireError;
use preba_protocol::hostq;
use preba_protocol::io::Cqe;
use preba_protocol::profile::MAX_PROFILES;
use preba_protocol::regs::QueueFault;
use preba_protocol::status::Status;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a `preba` command fails with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command line that cannot run: exit status 2.
    #[error("{0}")]
    Usage(String),
    /// Writing an output file failed.
    #[error("{}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A card step reported as text: starting the emulated card, flashing (the firmware
    /// module's messages tell a whole story: what ran, what was rolled back).
    #[error("card {card}: {reason}")]
    Card { card: String, reason: String },
    /// The card cannot be reached. `log` is the tail of the emulated card's stderr, if any.
    #[error("card {card}: {source}{log}")]
    Transport {
        card: String,
        #[source]
        source: TransportError,
        log: String,
    },
    /// The driver could not bring the card up or use it.
    #[error("card {card}: {source}{log}")]
    Driver {
        card: String,
        #[source]
        source: CardError,
        log: String,
    },
    /// The card failed during a run: the run's last line names the card and the cause.
    #[error("card {card}: failed: {cause} ({failed} of {inputs} inputs failed)")]
    Failed {
        card: String,
        #[source]
        cause: Arc<CardFailure>,
        failed: usize,
        inputs: usize,
    },
}

/// A BAR or config space region of the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    Bar0,
    Bar2,
    Config,
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Region::Bar0 => "BAR0",
            Region::Bar2 => "BAR2",
            Region::Config => "config",
        })
    }
}

/// What a transport was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Connecting to the vfio-user server (and negotiating the version).
    Connect,
    /// Opening the VFIO container.
    VfioContainer,
    /// Opening the VFIO device.
    VfioDevice,
    /// Making the DMA arena.
    Arena,
    /// Mapping the DMA arena for the card (DMA_MAP, the IOMMU map).
    DmaMap,
    /// Making an interrupt eventfd.
    Eventfd,
    /// Waiting for an MSI-X vector.
    IrqWait { vector: u16 },
    /// A read of `len` bytes at `off` in `region`.
    Read {
        region: Region,
        off: u64,
        len: usize,
    },
    /// A write of `len` bytes at `off` in `region`.
    Write {
        region: Region,
        off: u64,
        len: usize,
    },
    /// A function-level reset.
    Reset,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Connect => write!(f, "vfio-user"),
            Op::VfioContainer => write!(f, "VFIO container"),
            Op::VfioDevice => write!(f, "VFIO device"),
            Op::Arena => write!(f, "DMA arena"),
            Op::DmaMap => write!(f, "DMA map"),
            Op::Eventfd => write!(f, "eventfd"),
            Op::IrqWait { vector } => write!(f, "waiting for MSI-X vector {vector}"),
            Op::Read { region, off, len } => write!(f, "{region} read of {len} bytes at {off:#x}"),
            Op::Write { region, off, len } => {
                write!(f, "{region} write of {len} bytes at {off:#x}")
            }
            Op::Reset => write!(f, "function reset"),
        }
    }
}

/// The transport failed: the card is gone, does not answer, or cannot be opened. Fatal for
/// the card, never for one request only.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The vfio-user server did not answer in time, the socket failed, the server refused
    /// the command or answered nonsense: the source ([`ClientError`]) says which.
    #[error("{op}: {source}")]
    VfioUser {
        op: Op,
        #[source]
        source: ClientError,
    },
    /// A host system call failed (memfd, eventfd, poll, the IOMMU map).
    #[error("{op}: {source}")]
    Io {
        op: Op,
        #[source]
        source: std::io::Error,
    },
    /// The kernel VFIO layer refused.
    #[error("{op}: {source}")]
    Vfio {
        op: Op,
        #[source]
        source: vfio_ioctls::VfioError,
    },
    /// Another transport's own error (test transports over an in-process card).
    #[error("{op}: {source}")]
    Other {
        op: Op,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no PCI device {bdf}")]
    NoDevice { bdf: String },
    #[error(
        "{bdf} is bound to {}, not vfio-pci (echo vfio-pci > {}/driver_override; \
         echo {bdf} > /sys/bus/pci/drivers_probe)",
        driver.as_deref().unwrap_or("no driver"),
        sysfs.display()
    )]
    NotVfioPci {
        bdf: String,
        driver: Option<String>,
        sysfs: PathBuf,
    },
    /// The connection to the card is gone (the test double's "unplugged" card).
    #[error("connection to the card lost")]
    Lost,
    /// A thread panicked while it held the connection.
    #[error("vfio-user client poisoned (a thread panicked while using it)")]
    Poisoned,
    /// The transport has no such operation (e.g. no function reset).
    #[error("{card}: {op}: not possible on this transport")]
    Unsupported { card: String, op: Op },
}

impl TransportError {
    /// Whether the operation ran out of time (the card stopped answering), as opposed to
    /// failing, being refused or answered wrongly.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            TransportError::VfioUser {
                source: ClientError::Timeout { .. },
                ..
            }
        )
    }
}

/// A completion (or the card's queue fault register) the driver does not believe: the
/// card is declared dead with this cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// No request in flight has this command id: it was never submitted, or it was
    /// completed already (a duplicate).
    #[error("completion with unknown or duplicate command id {cid} on queue {qid}")]
    UnknownCid { qid: u16, cid: u16 },
    /// An admin completion for another command than the one outstanding.
    #[error("admin completion for cid {cid} on queue {qid} (expected {expected})")]
    WrongCid { qid: u16, cid: u16, expected: u16 },
    /// The SQ head in a completion takes back entries or passes the tail.
    #[error("impossible SQ head {head} in a completion on queue {qid}")]
    SqHead { qid: u16, head: u16 },
    /// A completion for another submission queue than this CQ's.
    #[error("completion for SQ {sq} on CQ {qid}")]
    WrongSq { qid: u16, sq: u16 },
    /// The entry does not parse (reserved bits, unknown status).
    #[error("malformed completion on queue {qid}: {wire}")]
    Malformed { qid: u16, wire: WireError },
    /// CQ slot `next` holds a completion while `slot` before it holds none: the card
    /// skipped `slot` or garbled its phase bit.
    #[error(
        "CQ slot {next} holds a completion while slot {slot} before it holds none \
         (a lost or corrupted completion) on queue {qid}"
    )]
    PhaseGap { qid: u16, slot: u16, next: u16 },
    /// The SQ is full: the card stopped consuming entries.
    #[error("submission queue {qid} full (the card stopped consuming)")]
    SqFull { qid: u16 },
    /// The card's QFAULT register reports a fault (`None`: a code this host does not know).
    #[error("queue fault {} on queue {qid}", fault.map_or("unknown", |f| f.name()))]
    Fault { qid: u16, fault: Option<QueueFault> },
}

/// Why the card as a whole failed: every request in flight, and every later one, fails
/// with this (as [`CardError::Fatal`] or [`RequestError::CardFailed`]).
#[derive(Debug, thiserror::Error)]
pub enum CardFailure {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("queue error: {0}")]
    Queue(#[source] QueueError),
    /// CSTS.CFS while the card was running.
    #[error("controller fatal status (CSTS.CFS)")]
    ControllerFatal,
    /// CSTS.RDY cleared while the card was running.
    #[error("the card is no longer ready (reset?)")]
    NotReady,
    /// CSTS.CFS during reset or enable, with QFAULT's reason (`None`: unknown).
    #[error("controller fault (CSTS.CFS, QFAULT {})", fault.map_or("unknown", |f| f.name()))]
    ControllerFault { fault: Option<QueueFault> },
    /// CSTS.RDY did not reach `want` in time.
    #[error("CSTS.RDY did not become {want} within {after:?} (CSTS {csts:#x})")]
    ReadyTimeout {
        want: u32,
        after: Duration,
        csts: u32,
    },
    /// Resetting the controller (CC.EN = 0) failed.
    #[error("reset: {0}")]
    Reset(#[source] Box<CardFailure>),
    /// Enabling the controller (CC.EN = 1) failed.
    #[error("enable: {0} (is the firmware running and current? cargo xtask build-fw)")]
    Enable(#[source] Box<CardFailure>),
    /// The card speaks another major protocol version.
    #[error(
        "card speaks protocol {major}.{minor}, this preba speaks {}: major versions differ, \
         refusing the card",
        crate::firmware::host_version()
    )]
    Version { major: u32, minor: u32 },
    /// An admin command failed (the op name, then why).
    #[error("{op}: {cause}")]
    Admin {
        op: &'static str,
        #[source]
        cause: Box<CardFailure>,
    },
    /// An admin command the driver needs completed with an error status.
    #[error("status {}", .0.name())]
    Status(Status),
    /// An admin command got no completion in time.
    #[error("no completion within {after:?} (CSTS {csts:#x}, QFAULT {qfault:#x})")]
    AdminTimeout {
        after: Duration,
        csts: u32,
        qfault: u32,
    },
    /// Writing an I/O submission failed (the doorbell, the SQE): the card is unusable.
    #[error("submitting: {0}")]
    Submit(#[source] Box<CardFailure>),
    #[error("DMA arena too small ({len} bytes, {need} needed)")]
    ArenaTooSmall { len: usize, need: usize },
    /// The host's DMA memory refused an access (an offset outside the arena).
    #[error("DMA arena: {0}")]
    Arena(#[source] std::io::Error),
    /// A ring of this many entries cannot be made (the queue size the card allows).
    #[error("no ring of {entries} entries")]
    QueueSize { entries: u16 },
    #[error("cannot start the reaper: {0}")]
    Reaper(#[source] std::io::Error),
    /// The driver closed the card (dropped [`crate::driver::Card`]).
    #[error("the driver closed the card")]
    Closed,
    /// A request's answer channel closed with no card failure recorded (not expected).
    #[error("request lost")]
    Lost,
}

impl From<QueueError> for CardFailure {
    fn from(e: QueueError) -> Self {
        CardFailure::Queue(e)
    }
}

/// The queue engine's refusal (`preba_protocol::hostq`), with its queue id and values.
impl From<hostq::QueueError> for QueueError {
    fn from(e: hostq::QueueError) -> Self {
        use hostq::QueueError as E;
        match e {
            E::UnknownCid { qid, cid } => QueueError::UnknownCid { qid, cid },
            E::WrongCid { qid, cid, expected } => QueueError::WrongCid { qid, cid, expected },
            E::SqHead { qid, head } => QueueError::SqHead { qid, head },
            E::WrongSq { qid, sq } => QueueError::WrongSq { qid, sq },
            E::Malformed { qid, wire } => QueueError::Malformed { qid, wire },
            E::PhaseGap { qid, slot, next } => QueueError::PhaseGap { qid, slot, next },
            E::SqFull { qid } => QueueError::SqFull { qid },
        }
    }
}

impl From<hostq::QueueError> for CardFailure {
    fn from(e: hostq::QueueError) -> Self {
        CardFailure::Queue(e.into())
    }
}

/// An engine call over the driver's rings: its refusal, or the arena's or transport's error.
impl From<hostq::Error<CardFailure>> for CardFailure {
    fn from(e: hostq::Error<CardFailure>) -> Self {
        match e {
            hostq::Error::Queue(q) => q.into(),
            hostq::Error::Memory(f) => f,
        }
    }
}

impl CardFailure {
    /// The queue error behind this failure, if it is one (also through admin and submit
    /// context).
    pub fn queue_error(&self) -> Option<&QueueError> {
        match self {
            CardFailure::Queue(q) => Some(q),
            CardFailure::Admin { cause, .. }
            | CardFailure::Submit(cause)
            | CardFailure::Reset(cause)
            | CardFailure::Enable(cause) => cause.queue_error(),
            _ => None,
        }
    }
}

/// Why the driver would not send something to the card (nothing reached it): the backend
/// answers through the CPU path instead.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error("input of {len} bytes is larger than a card slot ({max} bytes)")]
    InputTooLarge { len: usize, max: usize },
    #[error("output region {off:#x}+{len:#x} is outside the arena")]
    OutputOutsideArena { off: usize, len: usize },
    #[error("a batch holds 1..={max} inputs, not {len}")]
    BatchSize { len: usize, max: usize },
    #[error("all {MAX_PROFILES} profile slots are in use")]
    ProfileSlotsFull,
    #[error("a slot of {in_size} + {out_size} bytes is too large")]
    SlotTooLarge { in_size: usize, out_size: usize },
    #[error("DMA arena exhausted: {wanted} bytes wanted, {left} left")]
    ArenaExhausted { wanted: usize, left: usize },
    #[error("admin data of {len} bytes is larger than {max}")]
    AdminDataTooLarge { len: usize, max: usize },
    /// The host's DMA memory refused an access (an offset outside the arena).
    #[error("DMA arena: {0}")]
    Arena(#[source] Arc<std::io::Error>),
}

/// What the driver's calls fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CardError {
    /// The card completed the command with an error status of its own.
    #[error("card status {}", status.name())]
    Status { status: Status, cqe: Cqe },
    /// The request ran past its deadline on the host.
    #[error("card {card}: no completion within {after:?}")]
    Timeout { card: String, after: Duration },
    /// The card failed as a whole: every request in flight gets this.
    #[error("card {card} failed: {cause}")]
    Fatal {
        card: String,
        #[source]
        cause: Arc<CardFailure>,
    },
    /// The driver did not send it to the card.
    #[error("{0}")]
    Refused(#[source] Refusal),
}

/// What one request through a [`crate::backend::Backend`] fails with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// No answer from the card within the request's deadline (or no free slot in time).
    #[error("card {card}: no completion within {after:?}")]
    Timeout { card: String, after: Duration },
    /// The card failed as a whole; `cause` says why.
    #[error("card {card} failed: {cause}")]
    CardFailed {
        card: String,
        #[source]
        cause: Arc<CardFailure>,
    },
    /// The card failed this input with `status`, though the CPU path takes it.
    #[error("card {card} failed this input with {}", status.name())]
    Status { card: String, status: Status },
    /// The card failed this input with `status` and the CPU path says why.
    #[error("{cpu} (card: {})", status.name())]
    Rejected {
        status: Status,
        #[source]
        cpu: PpError,
    },
    /// The CPU path failed the input.
    #[error(transparent)]
    Cpu(#[from] PpError),
    /// The driver refused a call that has no CPU path (reserving arena space).
    #[error("card {card}: {refusal}")]
    Refused {
        card: String,
        #[source]
        refusal: Refusal,
    },
    /// The backend has no DMA arena to reserve space in.
    #[error("{backend}: no arena to reserve {bytes} bytes in")]
    NoArena { backend: String, bytes: usize },
    /// An output of another size than the buffer it goes to (a caller's mistake).
    #[error("internal: {got} bytes of tensor for a {want}-byte buffer")]
    OutputSize { got: usize, want: usize },
    /// An audio output for an image job (not expected from any backend).
    #[error("internal: audio output for an image job")]
    AudioForImage,
    /// Writing the output into the caller's arena region failed.
    #[error("DMA arena: {0}")]
    Arena(#[source] Arc<std::io::Error>),
}
