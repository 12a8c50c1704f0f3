//! `preba-softcore`: the card's soft core, an RV32IMAC + Zicsr interpreter running in machine
//! mode only.
//!
//! - [`Cpu`] owns the RAM regions (fast path, with a decode cache for executable ones) and a
//!   [`Bus`] for everything else (the card model's peripherals).
//! - Traps are precise; interrupts come from the bus as `mip` lines at poll points; `wfi`
//!   fast-forwards idle time to the bus's next deadline.
//! - [`virt::VirtBus`] is a small QEMU `virt`-compatible platform (UART, test finisher, CLINT)
//!   so the same test ELFs run here and under `qemu-system-riscv32`.
//!
//! For a platform model (the card): implement [`Bus`] for the peripherals; `load`/`store` get
//! every access outside RAM with the time base `now`; `poll` reports interrupt lines (level),
//! the next deadline (timers, modeled completion times) and may copy data into or out of the
//! core's RAM through [`Mem`] (DMA into the firmware's SRAM). Drive the core with
//! [`Cpu::run`] in slices; [`Exit::Wfi`] means "idle until something external happens": wait
//! for it, then [`Cpu::request_poll`] (and optionally [`Cpu::skip_idle`]) and run again.
//!
//! ```
//! use preba_softcore::{Bus, Config, Cpu, Exit, Fault, Mem, Poll};
//!
//! struct Mailbox(u32);
//! impl Bus for Mailbox {
//!     fn load(&mut self, addr: u32, _size: u8, _now: u64) -> Result<u32, Fault> {
//!         if addr == 0x4000_0000 { Ok(self.0) } else { Err(Fault) }
//!     }
//!     fn store(&mut self, addr: u32, _size: u8, v: u32, _now: u64) -> Result<(), Fault> {
//!         if addr == 0x4000_0000 { self.0 = v; Ok(()) } else { Err(Fault) }
//!     }
//!     fn poll(&mut self, _now: u64, _mem: &mut Mem<'_>) -> Poll { Poll::IDLE }
//! }
//!
//! let mut cpu = Cpu::new(Config::default(), Mailbox(0)).unwrap();
//! // lui a0, 0x40000; li a1, 42; sw a1, 0(a0); wfi
//! let prog: [u32; 4] = [0x4000_0537, 0x02a0_0593, 0x00b5_2023, 0x1050_0073];
//! let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
//! cpu.write_ram(0x8000_0000, &bytes).unwrap();
//! assert_eq!(cpu.run(100), Exit::Wfi);
//! assert_eq!(cpu.bus().0, 42);
//! assert_eq!(cpu.retired(), 4);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bus;
pub mod cpu;
pub mod decode;
pub mod elf;
pub mod error;
pub mod progs;
pub mod virt;

pub use bus::{Bus, Fault, Halt, IRQ_ALL, IRQ_MEI, IRQ_MSI, IRQ_MTI, NoBus, Poll};
pub use cpu::{Config, Cpu, DMEM, Exit, IMEM, Mem, RamRegion, cause, csr, dcsr, debug_cause};
pub use error::Error;
