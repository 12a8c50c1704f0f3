//! BAR0/BAR2 register map as the host sees it (NVMe-style).
//!
//! All registers are little-endian. 32-bit registers take 32-bit accesses only;
//! 64-bit registers take one 64-bit access or two 32-bit accesses (low first).
//! The card answers other sizes with all-ones reads and drops the writes.

/// PCI vendor id (0x1b36 is Red Hat's QEMU range; ours is an unassigned
/// experimental id kept stable across model and hardware bring-up).
pub const PCI_VENDOR_ID: u16 = 0x1de5;
/// PCI device id of the preprocessing card.
pub const PCI_DEVICE_ID: u16 = 0x0ba1;
/// PCI class: processing accelerator (0x12), subclass 0, prog-if 0.
pub const PCI_CLASS_CODE: u32 = 0x12_00_00;
pub const PCI_REVISION: u8 = 0x01;

/// Size of BAR0 (registers, doorbells, MSI-X table and PBA).
pub const BAR0_SIZE: u64 = 0x4000;
/// Size of BAR2: a read-only window onto the firmware's log ring.
pub const BAR2_SIZE: u64 = 0x1_0000;

/// CAP (RO, 64-bit): MQES bits 0-15 (max entries per queue minus 1),
/// NQP bits 16-23 (I/O queue pairs), TO bits 24-31 (ready timeout, 100 ms units),
/// MAXSG bits 32-39 (max input scatter-gather entries).
pub const CAP: u64 = 0x000;
/// VS (RO): protocol version, major in bits 16-31, minor in 0-15.
pub const VS: u64 = 0x008;
/// CC (RW): controller configuration. Bit 0 EN. Writing 0 to EN resets the
/// queues and clears every sticky fault; 1 starts the firmware's admin queue.
pub const CC: u64 = 0x014;
/// CSTS (RO): bit 0 RDY, bit 1 CFS (fatal: admin queue fault), bit 2 SHST busy.
pub const CSTS: u64 = 0x01C;
/// AQA (RW): admin SQ size minus 1 in bits 0-11, admin CQ size minus 1 in 16-27.
pub const AQA: u64 = 0x024;
/// ASQ (RW, 64-bit): admin submission queue base IOVA (4 KiB aligned).
pub const ASQ: u64 = 0x028;
/// ACQ (RW, 64-bit): admin completion queue base IOVA (4 KiB aligned).
pub const ACQ: u64 = 0x030;
/// QFAULT (RO): sticky queue-level fault: queue id bits 0-7, [`QueueFault`] code bits 8-15,
/// bit 31 valid. Only a reset (CC.EN 1 -> 0) clears it.
pub const QFAULT: u64 = 0x038;
/// INTX (RW): bit 0 set = use INTx instead of MSI-X; W1C bit 1 = de-assert INTx.
pub const INTX: u64 = 0x03C;
/// FWVER (RO, 64-bit): build id of the running firmware (same as IDENTIFY).
pub const FWVER: u64 = 0x040;
/// SCRATCH (RW): a register with no effect, for bus tests.
pub const SCRATCH: u64 = 0x048;
/// First doorbell. Queue `q` (0 = admin) has its SQ tail doorbell at
/// `DOORBELL_BASE + 8 * q` and its CQ head doorbell at `+ 4` (WO; reads 0).
pub const DOORBELL_BASE: u64 = 0x1000;
/// MSI-X table (16 bytes per vector) and pending-bit array.
pub const MSIX_TABLE: u64 = 0x2000;
pub const MSIX_PBA: u64 = 0x3000;
/// MSI-X vectors: vector q serves completion queue q.
pub const MSIX_VECTORS: u16 = 16;

pub const CC_EN: u32 = 1 << 0;
pub const CSTS_RDY: u32 = 1 << 0;
pub const CSTS_CFS: u32 = 1 << 1;
pub const CSTS_SHST: u32 = 1 << 2;
pub const QFAULT_VALID: u32 = 1 << 31;

pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 1;

/// SQ tail doorbell offset of queue `qid`.
pub const fn sq_doorbell(qid: u16) -> u64 {
    DOORBELL_BASE + 8 * qid as u64
}
/// CQ head doorbell offset of queue `qid`.
pub const fn cq_doorbell(qid: u16) -> u64 {
    DOORBELL_BASE + 8 * qid as u64 + 4
}

/// Every BAR0 register, for the spec check and the card model's decoder.
pub const REGISTERS: &[(&str, u64)] = &[
    ("CAP", CAP),
    ("VS", VS),
    ("CC", CC),
    ("CSTS", CSTS),
    ("AQA", AQA),
    ("ASQ", ASQ),
    ("ACQ", ACQ),
    ("QFAULT", QFAULT),
    ("INTX", INTX),
    ("FWVER", FWVER),
    ("SCRATCH", SCRATCH),
    ("DOORBELL_BASE", DOORBELL_BASE),
    ("MSIX_TABLE", MSIX_TABLE),
    ("MSIX_PBA", MSIX_PBA),
];

/// Queue-level faults. They are not per-request statuses: the queue (or for
/// the admin queue, the controller) enters a sticky error state until reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum QueueFault {
    /// An SQ tail doorbell at or past the ring size.
    SqDoorbellOutOfRange = 1,
    /// A CQ head doorbell past the last posted completion.
    CqDoorbellOutOfRange = 2,
    /// A doorbell for a queue that does not exist.
    NoSuchQueue = 3,
    /// Fetching submission entries faulted (SQ base outside the DMA windows).
    SqFetchFault = 4,
    /// Writing a completion entry faulted.
    CqWriteFault = 5,
    /// The admin queue base or size registers were invalid at enable.
    BadAdminConfig = 6,
}

impl QueueFault {
    pub const ALL: [QueueFault; 6] = [
        QueueFault::SqDoorbellOutOfRange,
        QueueFault::CqDoorbellOutOfRange,
        QueueFault::NoSuchQueue,
        QueueFault::SqFetchFault,
        QueueFault::CqWriteFault,
        QueueFault::BadAdminConfig,
    ];
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(QueueFault::SqDoorbellOutOfRange),
            2 => Some(QueueFault::CqDoorbellOutOfRange),
            3 => Some(QueueFault::NoSuchQueue),
            4 => Some(QueueFault::SqFetchFault),
            5 => Some(QueueFault::CqWriteFault),
            6 => Some(QueueFault::BadAdminConfig),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            QueueFault::SqDoorbellOutOfRange => "SQ_DOORBELL_OUT_OF_RANGE",
            QueueFault::CqDoorbellOutOfRange => "CQ_DOORBELL_OUT_OF_RANGE",
            QueueFault::NoSuchQueue => "NO_SUCH_QUEUE",
            QueueFault::SqFetchFault => "SQ_FETCH_FAULT",
            QueueFault::CqWriteFault => "CQ_WRITE_FAULT",
            QueueFault::BadAdminConfig => "BAD_ADMIN_CONFIG",
        }
    }
    /// The QFAULT register value for this fault on queue `qid`.
    pub const fn encode(self, qid: u8) -> u32 {
        QFAULT_VALID | ((self as u32) << 8) | qid as u32
    }
    /// Decodes a QFAULT register value: `None` when no fault is latched.
    pub const fn decode(reg: u32) -> Option<(u8, Option<QueueFault>)> {
        if reg & QFAULT_VALID == 0 {
            None
        } else {
            Some(((reg & 0xff) as u8, QueueFault::from_u8((reg >> 8) as u8)))
        }
    }
}
