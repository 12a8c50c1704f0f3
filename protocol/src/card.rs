//! The card as the firmware sees it: the soft core's memory map and the
//! peripheral registers the card model implements. All registers are 32-bit,
//! little-endian, naturally aligned; other access sizes raise an access fault.
//!
//! The low map (UART, test device, CLINT, IMEM) is QEMU `virt`'s, so the same
//! ELF runs under `qemu-system-riscv32 -M virt` for the oracle tests.

/// Firmware code (and read-only data), loaded from the ELF / SPI flash.
pub const IMEM_BASE: u32 = 0x8000_0000;
pub const IMEM_SIZE: u32 = 128 << 10;
/// Firmware data, bss and stack.
pub const DMEM_BASE: u32 = 0x8002_0000;
pub const DMEM_SIZE: u32 = 64 << 10;

/// 16550-compatible debug UART (THR at +0, LSR at +5), as on QEMU virt.
pub const UART_BASE: u32 = 0x1000_0000;
/// QEMU virt's SiFive test device: 0x5555 powers off, 0x3333 resets,
/// `(code << 16) | 0x3333` exits with a failure code.
pub const TEST_BASE: u32 = 0x0010_0000;
/// CLINT: 64-bit mtimecmp and mtime, as on QEMU virt.
pub const CLINT_BASE: u32 = 0x0200_0000;
pub const CLINT_MTIMECMP: u32 = 0x0200_4000;
pub const CLINT_MTIME: u32 = 0x0200_BFF8;
/// mtime ticks per second (QEMU virt's 10 MHz).
pub const MTIME_HZ: u32 = 10_000_000;

/// Host interface: what the host wrote to BAR0, and the firmware's answers.
pub const HOSTIF_BASE: u32 = 0x4000_0000;
/// RO: mirror of BAR0 CC.
pub const HOSTIF_CC: u32 = HOSTIF_BASE;
/// RO: mirror of BAR0 AQA.
pub const HOSTIF_AQA: u32 = HOSTIF_BASE + 0x04;
/// RO: mirror of BAR0 ASQ (low, high).
pub const HOSTIF_ASQ_LO: u32 = HOSTIF_BASE + 0x08;
pub const HOSTIF_ASQ_HI: u32 = HOSTIF_BASE + 0x0C;
/// RO: mirror of BAR0 ACQ (low, high).
pub const HOSTIF_ACQ_LO: u32 = HOSTIF_BASE + 0x10;
pub const HOSTIF_ACQ_HI: u32 = HOSTIF_BASE + 0x14;
/// RW: the value the host reads as BAR0 CSTS.
pub const HOSTIF_CSTS: u32 = HOSTIF_BASE + 0x18;
/// RW: the value the host reads as BAR0 QFAULT.
pub const HOSTIF_QFAULT: u32 = HOSTIF_BASE + 0x1C;
/// W1C: events since last cleared. Bit 0: CC written. Bit 1: a doorbell written.
pub const HOSTIF_EVENTS: u32 = HOSTIF_BASE + 0x20;
/// WO: write a vector number to signal MSI-X vector (or INTx when the host chose it).
pub const HOSTIF_IRQ_TRIGGER: u32 = HOSTIF_BASE + 0x24;
/// RW: the value the host reads as BAR0 FWVER (low, high).
pub const HOSTIF_FWVER_LO: u32 = HOSTIF_BASE + 0x28;
pub const HOSTIF_FWVER_HI: u32 = HOSTIF_BASE + 0x2C;
/// W1C: bit q set when queue q's SQ tail doorbell was written.
pub const HOSTIF_SQDB_PENDING: u32 = HOSTIF_BASE + 0x30;
/// W1C: bit q set when queue q's CQ head doorbell was written.
pub const HOSTIF_CQDB_PENDING: u32 = HOSTIF_BASE + 0x34;
/// RO: last value written to doorbells: SQ tail of queue q at `+ 8q`, CQ head at `+ 8q + 4`.
/// Raw 32-bit values: the firmware validates them (ring::SqConsumer::doorbell).
pub const HOSTIF_DB_VALUES: u32 = HOSTIF_BASE + 0x100;
pub const HOSTIF_EVENT_CC: u32 = 1 << 0;
pub const HOSTIF_EVENT_DOORBELL: u32 = 1 << 1;

/// DMA engine: one channel, one contiguous transfer per start; the firmware
/// walks scatter-gather lists. Every host access goes through the IOMMU map.
pub const DMA_BASE: u32 = 0x4000_1000;
/// RW: host IOVA low/high.
pub const DMA_HOST_LO: u32 = DMA_BASE;
pub const DMA_HOST_HI: u32 = DMA_BASE + 0x04;
/// RW: card address (in the core's map: card memory, DMEM or IMEM).
pub const DMA_CARD: u32 = DMA_BASE + 0x08;
/// RW: length in bytes.
pub const DMA_LEN: u32 = DMA_BASE + 0x0C;
/// WO: bit 0 start; bit 1 direction (0 host to card, 1 card to host).
pub const DMA_CTRL: u32 = DMA_BASE + 0x10;
/// RO: [`DmaStatus`].
pub const DMA_STATUS: u32 = DMA_BASE + 0x14;
/// RO: the faulting host IOVA low/high after a fault.
pub const DMA_FAULT_LO: u32 = DMA_BASE + 0x18;
pub const DMA_FAULT_HI: u32 = DMA_BASE + 0x1C;
pub const DMA_CTRL_START: u32 = 1 << 0;
pub const DMA_CTRL_TO_HOST: u32 = 1 << 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DmaStatus {
    Idle = 0,
    Busy = 1,
    Done = 2,
    /// Host side outside the mapped windows, or the card side outside card
    /// memory, or a transfer that would touch the card's own register windows.
    Fault = 3,
}

/// Interrupt controller: one machine external interrupt line for all sources.
pub const IRQ_BASE: u32 = 0x4000_2000;
/// RO: pending sources.
pub const IRQ_PENDING: u32 = IRQ_BASE;
/// RW: enabled sources; the line is `(PENDING & ENABLE) != 0`.
pub const IRQ_ENABLE: u32 = IRQ_BASE + 0x04;
/// W1C: clears pending sources.
pub const IRQ_ACK: u32 = IRQ_BASE + 0x08;
/// Source bits.
pub const IRQ_HOST: u32 = 1 << 0;
pub const IRQ_DMA: u32 = 1 << 1;
/// CU `i` (global CU index) raises bit `IRQ_CU_SHIFT + i`.
pub const IRQ_CU_SHIFT: u32 = 8;

/// Log ring control: the defmt byte stream goes to `LOG_RING_BASE`.
pub const LOG_BASE: u32 = 0x4000_3000;
/// RW: bytes written since reset (free-running); the firmware bumps it
/// after writing the bytes, so a reader never sees a torn frame's head move.
pub const LOG_HEAD: u32 = LOG_BASE;
/// The ring itself: LOG_RING_SIZE bytes, byte-writable. BAR2 maps LOG_HEAD
/// at offset 0 and the ring at offset `BAR2_LOG_RING`.
pub const LOG_RING_BASE: u32 = 0x4010_0000;
pub const LOG_RING_SIZE: u32 = 0x8000;
pub const BAR2_LOG_HEAD: u64 = 0x0;
pub const BAR2_LOG_SIZE: u64 = 0x4;
pub const BAR2_LOG_RING: u64 = 0x8000;

/// I2C controller (board power monitor behind it).
pub const I2C_BASE: u32 = 0x4000_4000;
/// RW: 7-bit target address.
pub const I2C_ADDR: u32 = I2C_BASE;
/// RW: byte FIFO: writes queue a byte to send, reads pop a received byte.
pub const I2C_DATA: u32 = I2C_BASE + 0x04;
/// WO: bit 0 start a write of the queued bytes; bit 1 then read `(ctrl >> 8) & 0xff` bytes; bit 2 stop.
pub const I2C_CTRL: u32 = I2C_BASE + 0x08;
/// RO: bit 0 busy, bit 1 NACK (no such target or register).
pub const I2C_STATUS: u32 = I2C_BASE + 0x0C;
/// I2C address of the INA226-style power monitor.
pub const POWER_MONITOR_ADDR: u8 = 0x40;

/// SPI controller (firmware flash behind it).
pub const SPI_BASE: u32 = 0x4000_5000;
/// RW: write sends a byte, read returns the byte clocked in by the last send.
pub const SPI_DATA: u32 = SPI_BASE;
/// RW: bit 0 chip select asserted.
pub const SPI_CS: u32 = SPI_BASE + 0x04;
/// RO: bit 0 busy.
pub const SPI_STATUS: u32 = SPI_BASE + 0x08;

/// GPIO: LEDs on the low bits of OUT.
pub const GPIO_BASE: u32 = 0x4000_6000;
pub const GPIO_OUT: u32 = GPIO_BASE;
pub const GPIO_IN: u32 = GPIO_BASE + 0x04;

/// RO card configuration, so one firmware runs on every CU count.
pub const INFO_BASE: u32 = 0x4000_7000;
pub const INFO_IMAGE_CUS: u32 = INFO_BASE;
pub const INFO_AUDIO_CUS: u32 = INFO_BASE + 0x04;
pub const INFO_NORM_CUS: u32 = INFO_BASE + 0x08;
pub const INFO_CARD_MEM_SIZE: u32 = INFO_BASE + 0x0C;
/// Soft-core clock, Hz.
pub const INFO_CORE_HZ: u32 = INFO_BASE + 0x10;
/// Engine clock, Hz (CU cycle counts are in this clock).
pub const INFO_CU_HZ: u32 = INFO_BASE + 0x14;
/// The boot ROM's report (`fwimage::info_boot`): running slot, outcome, failed slot, active slot.
pub const INFO_BOOT: u32 = INFO_BASE + 0x18;

/// Compute units: CU `i` has its registers at `CU_BASE + i * CU_STRIDE`.
/// Global index order: image CUs, then audio Mel CUs, then normalize CUs.
pub const CU_BASE: u32 = 0x4001_0000;
pub const CU_STRIDE: u32 = 0x100;
pub const MAX_CUS: u32 = 24;
/// RO: [`crate::admin::CuKind`].
pub const CU_KIND: u32 = 0x00;
/// RW: input address and length in card memory.
pub const CU_SRC: u32 = 0x04;
pub const CU_SRC_LEN: u32 = 0x08;
/// RW: output address and capacity in card memory.
pub const CU_DST: u32 = 0x0C;
pub const CU_DST_LEN: u32 = 0x10;
/// RW: card address of an encoded profile ([`crate::admin::PROFILE_SIZE`] bytes).
pub const CU_PROFILE: u32 = 0x14;
/// WO: bit 0 start, bit 1 reset (aborts a running job; status back to idle).
pub const CU_CTRL: u32 = 0x18;
/// RO: [`CuStatus`].
pub const CU_STATUS: u32 = 0x1C;
/// RO: a [`crate::status::Status`] code after an error.
pub const CU_ERROR: u32 = 0x20;
/// RO: image width / audio source rate; image height / audio source samples.
pub const CU_RESULT0: u32 = 0x24;
pub const CU_RESULT1: u32 = 0x28;
/// RO: bytes written to DST.
pub const CU_WRITTEN: u32 = 0x2C;
/// RO: modeled engine cycles of the last job (low, high).
pub const CU_CYCLES_LO: u32 = 0x30;
pub const CU_CYCLES_HI: u32 = 0x34;
/// RO: modeled energy of the last job, nanojoules.
pub const CU_ENERGY_NJ: u32 = 0x38;
pub const CU_CTRL_START: u32 = 1 << 0;
pub const CU_CTRL_RESET: u32 = 1 << 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CuStatus {
    Idle = 0,
    Busy = 1,
    Done = 2,
    Error = 3,
}

/// Card memory (HBM): staging for inputs and outputs. The engines work
/// here; the firmware only moves addresses (and peeks at media headers).
pub const CARD_MEM_BASE: u32 = 0xA000_0000;
/// Largest card memory the map has room for.
pub const CARD_MEM_MAX: u32 = 0x4000_0000;

/// Every peripheral register, for the spec check.
pub const REGISTERS: &[(&str, u32)] = &[
    ("HOSTIF_CC", HOSTIF_CC),
    ("HOSTIF_AQA", HOSTIF_AQA),
    ("HOSTIF_ASQ_LO", HOSTIF_ASQ_LO),
    ("HOSTIF_ASQ_HI", HOSTIF_ASQ_HI),
    ("HOSTIF_ACQ_LO", HOSTIF_ACQ_LO),
    ("HOSTIF_ACQ_HI", HOSTIF_ACQ_HI),
    ("HOSTIF_CSTS", HOSTIF_CSTS),
    ("HOSTIF_QFAULT", HOSTIF_QFAULT),
    ("HOSTIF_EVENTS", HOSTIF_EVENTS),
    ("HOSTIF_IRQ_TRIGGER", HOSTIF_IRQ_TRIGGER),
    ("HOSTIF_FWVER_LO", HOSTIF_FWVER_LO),
    ("HOSTIF_FWVER_HI", HOSTIF_FWVER_HI),
    ("HOSTIF_SQDB_PENDING", HOSTIF_SQDB_PENDING),
    ("HOSTIF_CQDB_PENDING", HOSTIF_CQDB_PENDING),
    ("HOSTIF_DB_VALUES", HOSTIF_DB_VALUES),
    ("DMA_HOST_LO", DMA_HOST_LO),
    ("DMA_HOST_HI", DMA_HOST_HI),
    ("DMA_CARD", DMA_CARD),
    ("DMA_LEN", DMA_LEN),
    ("DMA_CTRL", DMA_CTRL),
    ("DMA_STATUS", DMA_STATUS),
    ("DMA_FAULT_LO", DMA_FAULT_LO),
    ("DMA_FAULT_HI", DMA_FAULT_HI),
    ("IRQ_PENDING", IRQ_PENDING),
    ("IRQ_ENABLE", IRQ_ENABLE),
    ("IRQ_ACK", IRQ_ACK),
    ("LOG_HEAD", LOG_HEAD),
    ("I2C_ADDR", I2C_ADDR),
    ("I2C_DATA", I2C_DATA),
    ("I2C_CTRL", I2C_CTRL),
    ("I2C_STATUS", I2C_STATUS),
    ("SPI_DATA", SPI_DATA),
    ("SPI_CS", SPI_CS),
    ("SPI_STATUS", SPI_STATUS),
    ("GPIO_OUT", GPIO_OUT),
    ("GPIO_IN", GPIO_IN),
    ("INFO_IMAGE_CUS", INFO_IMAGE_CUS),
    ("INFO_AUDIO_CUS", INFO_AUDIO_CUS),
    ("INFO_NORM_CUS", INFO_NORM_CUS),
    ("INFO_CARD_MEM_SIZE", INFO_CARD_MEM_SIZE),
    ("INFO_CORE_HZ", INFO_CORE_HZ),
    ("INFO_CU_HZ", INFO_CU_HZ),
    ("INFO_BOOT", INFO_BOOT),
];

/// Per-CU register offsets, for the spec check.
pub const CU_REGISTERS: &[(&str, u32)] = &[
    ("CU_KIND", CU_KIND),
    ("CU_SRC", CU_SRC),
    ("CU_SRC_LEN", CU_SRC_LEN),
    ("CU_DST", CU_DST),
    ("CU_DST_LEN", CU_DST_LEN),
    ("CU_PROFILE", CU_PROFILE),
    ("CU_CTRL", CU_CTRL),
    ("CU_STATUS", CU_STATUS),
    ("CU_ERROR", CU_ERROR),
    ("CU_RESULT0", CU_RESULT0),
    ("CU_RESULT1", CU_RESULT1),
    ("CU_WRITTEN", CU_WRITTEN),
    ("CU_CYCLES_LO", CU_CYCLES_LO),
    ("CU_CYCLES_HI", CU_CYCLES_HI),
    ("CU_ENERGY_NJ", CU_ENERGY_NJ),
];
