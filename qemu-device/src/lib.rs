//! `preba-card`: the emulated preprocessing card of docs/card-spec.md.
//!
//! - [`Card`]: BAR0 (registers, doorbells, MSI-X) and BAR2 (log window) for the host, a soft
//!   core (`preba-softcore`) running the firmware ELF on its own thread, and the CUs running the
//!   golden model (`preba-preprocess`) on a worker pool with a cycle and power model
//!   ([`model`]).
//! - DMA goes through [`HostMemory`] (the IOMMU: an access outside the mapped windows is a DMA
//!   fault reported to the firmware, never a crash); interrupts leave through [`IrqSink`].
//! - [`vfio_server`] puts a card behind a vfio-user socket (the `preba-card` binary runs it).
//! - [`harness`] plays the host: admin queue, profiles, I/O queues, requests, completions, with a
//!   deadline on every wait.
//!
//! The card's time ([`Clock`]) is modeled by default: the core's cycles, CU jobs finishing at
//! the cycle model's time (the core waits for a job's host computation rather than run past its
//! modeled completion), idle time jumping ahead while CU work is in flight and paced against
//! the wall clock otherwise; [`Clock::Wall`] makes mtime wall-clock time at 10 MHz. The core
//! thread blocks on a condvar while the firmware idles in `wfi`, until a BAR write, a CU
//! completion or the next deadline.
//!
//! ```no_run
//! use std::sync::Arc;
//! use preba_card::{Card, CardConfig, IrqRecorder, TestMemory};
//! let mem = Arc::new(TestMemory::new());
//! mem.map(0x1000_0000, 1 << 20).unwrap();
//! let irq = Arc::new(IrqRecorder::new());
//! let elf = std::fs::read("preba-firmware").unwrap();
//! let card = Card::new(CardConfig::default(), &elf, mem.clone(), irq.clone()).unwrap();
//! card.write32(preba_protocol::regs::SCRATCH, 7);
//! assert_eq!(card.read32(preba_protocol::regs::SCRATCH), 7);
//! ```

pub mod boot;
pub mod bus;
pub mod card;
mod clock;
pub mod config;
pub mod cu;
pub mod debug;
pub mod error;
pub mod flash;
pub mod harness;
pub mod host_mem;
pub mod hostif;
pub mod i2c;
pub mod inject;
pub mod irq;
pub mod log;
pub mod model;
pub mod uart;
pub mod vfio_server;

pub use card::{Card, CoreState, CuInfo};
pub use config::{Cap, CardConfig, Clock};
pub use error::Error;
pub use host_mem::{DmaFault, HostMemory, PAGE_SIZE, TestMemory, pages};
pub use inject::{InjectError, InjectSpec};
pub use irq::{IrqRecorder, IrqSink, NoIrq};
pub use log::{LogChunk, LogReader};
