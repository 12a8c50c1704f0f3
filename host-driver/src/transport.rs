//! How the driver reaches a card: BAR0 registers, the BAR2 log window, a DMA
//! arena the card can reach, and interrupts. Implemented by the vfio-user
//! client ([`crate::vfio_user`]), and by the test double
//! ([`crate::fake`]); kernel VFIO plugs in the same way.
#![forbid(unsafe_code)]

use crate::dma::DmaMem;
use std::time::Duration;

pub use crate::error::{Op, Region, TransportError};

pub type TResult<T> = Result<T, TransportError>;

/// A card behind a bus. Accesses are little-endian; `data.len()` is the
/// access size (4 or 8 for BAR0).
pub trait Transport: Send + Sync {
    /// Names the card in messages (`emulated`, `vfio-user:/run/card.sock`).
    fn name(&self) -> String;
    /// A BAR0 access of `data.len()` bytes at `off`.
    fn bar0_read(&self, off: u64, data: &mut [u8]) -> TResult<()>;
    fn bar0_write(&self, off: u64, data: &[u8]) -> TResult<()>;
    /// Reads the BAR2 log window.
    fn bar2_read(&self, off: u64, data: &mut [u8]) -> TResult<()>;
    /// The host memory the card reaches, already mapped for it at
    /// `arena().iova()`.
    fn arena(&self) -> &DmaMem;
    /// Waits up to `timeout` for MSI-X `vector`. Ok(false) on timeout; a
    /// transport without interrupts just sleeps (the driver polls anyway).
    fn wait_irq(&self, vector: u16, timeout: Duration) -> TResult<bool>;
    /// A function-level reset of the card (it reboots and picks its firmware image again);
    /// the transport stays usable (DMA map, bus mastering, interrupts set up again).
    fn reset(&self) -> TResult<()> {
        Err(TransportError::Unsupported {
            card: self.name(),
            op: Op::Reset,
        })
    }
}

/// Register helpers over any transport.
pub trait Regs {
    fn read32(&self, off: u64) -> TResult<u32>;
    fn write32(&self, off: u64, v: u32) -> TResult<()>;
    fn read64(&self, off: u64) -> TResult<u64>;
    fn write64(&self, off: u64, v: u64) -> TResult<()>;
}

impl<T: Transport + ?Sized> Regs for T {
    fn read32(&self, off: u64) -> TResult<u32> {
        let mut b = [0u8; 4];
        self.bar0_read(off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn write32(&self, off: u64, v: u32) -> TResult<()> {
        self.bar0_write(off, &v.to_le_bytes())
    }
    fn read64(&self, off: u64) -> TResult<u64> {
        let mut b = [0u8; 8];
        self.bar0_read(off, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write64(&self, off: u64, v: u64) -> TResult<()> {
        self.bar0_write(off, &v.to_le_bytes())
    }
}
