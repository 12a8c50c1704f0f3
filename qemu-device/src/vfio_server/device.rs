//! The vfio-user device: regions, IRQs, DMA and reset, wired to the card model.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use preba_protocol::regs;

use super::dma::DmaTable;
use super::irq::{self, IrqGlue};
use super::pci::{self, ConfigSpace};
use crate::{Card, CardConfig};

/// VFIO PCI region indices.
pub const BAR0_REGION: u32 = 0;
pub const BAR2_REGION: u32 = 2;
pub const CONFIG_REGION: u32 = 7;
pub const NUM_REGIONS: u32 = 9;

/// VFIO_REGION_INFO_FLAG_READ / _WRITE.
pub const REGION_READ: u32 = 1 << 0;
pub const REGION_WRITE: u32 = 1 << 1;

/// DMA_UNMAP flag: unmap everything.
pub const UNMAP_ALL: u32 = 1 << 2;

/// How long a device reset may take.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// The size of region `index`.
pub fn region_size(index: u32) -> u64 {
    match index {
        BAR0_REGION => regs::BAR0_SIZE,
        BAR2_REGION => regs::BAR2_SIZE,
        CONFIG_REGION => pci::CONFIG_SIZE as u64,
        _ => 0,
    }
}

/// One region as `DEVICE_GET_REGION_INFO` reports it (`struct vfio_region_info`; all regions
/// are trapped: no mmap, no capabilities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    pub flags: u32,
    pub index: u32,
    pub size: u64,
}

/// The regions the server advertises.
pub fn regions() -> Vec<RegionInfo> {
    (0..NUM_REGIONS)
        .map(|index| {
            let size = region_size(index);
            RegionInfo {
                flags: if size > 0 {
                    REGION_READ | REGION_WRITE
                } else {
                    0
                },
                index,
                size,
            }
        })
        .collect()
}

/// One IRQ index as `DEVICE_GET_IRQ_INFO` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqInfo {
    pub index: u32,
    pub flags: u32,
    pub count: u32,
}

/// The IRQ indices the server advertises: INTx, MSI (none), MSI-X (16), ERR (1), REQ (none).
pub fn irqs() -> Vec<IrqInfo> {
    use irq::*;
    vec![
        IrqInfo {
            index: INTX_INDEX,
            flags: IRQ_INFO_EVENTFD | IRQ_INFO_MASKABLE | IRQ_INFO_AUTOMASKED,
            count: 1,
        },
        IrqInfo {
            index: MSI_INDEX,
            flags: IRQ_INFO_EVENTFD | IRQ_INFO_NORESIZE,
            count: 0,
        },
        IrqInfo {
            index: MSIX_INDEX,
            flags: IRQ_INFO_EVENTFD | IRQ_INFO_NORESIZE,
            count: u32::from(regs::MSIX_VECTORS),
        },
        IrqInfo {
            index: ERR_INDEX,
            flags: IRQ_INFO_EVENTFD,
            count: 1,
        },
        IrqInfo {
            index: REQ_INDEX,
            flags: IRQ_INFO_EVENTFD,
            count: 0,
        },
    ]
}

fn einval(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The device behind the socket.
pub struct Device {
    pub card: Arc<Card>,
    pub dma: Arc<DmaTable>,
    pub irq: Arc<IrqGlue>,
    pub config: Mutex<ConfigSpace>,
}

impl Device {
    /// A card running `firmware` (an ELF) with DMA through a fresh [`DmaTable`] and interrupts
    /// through a fresh [`IrqGlue`].
    pub fn new(config: CardConfig, firmware: &[u8]) -> Result<Device, crate::Error> {
        let dma = Arc::new(DmaTable::new());
        let irq = Arc::new(IrqGlue::new());
        let card = Card::new(config, firmware, dma.clone(), irq.clone())?;
        Ok(Device {
            card: Arc::new(card),
            dma,
            irq,
            config: Mutex::new(ConfigSpace::new()),
        })
    }

    /// Checks an access of `len` bytes at `offset` of region `index`; returns the offset.
    pub fn check(index: u32, offset: u64, len: usize) -> io::Result<usize> {
        let size = region_size(index);
        offset
            .checked_add(len as u64)
            .filter(|&e| e <= size && size > 0)
            .ok_or_else(|| {
                einval(format!(
                    "region {index}: access {offset:#x}+{len:#x} outside {size:#x}"
                ))
            })?;
        Ok(offset as usize)
    }

    /// A read of `data.len()` bytes of region `index` at `offset`.
    pub fn read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let off = Self::check(index, offset, data.len())?;
        match index {
            BAR0_REGION => {
                if matches!(data.len(), 1 | 2 | 4 | 8) {
                    self.card.bar0_read(offset, data);
                } else {
                    data.fill(0xff);
                }
            }
            BAR2_REGION => {
                // The card answers up to 8 bytes at a time; longer reads (a client draining the
                // log) go in 8-byte steps.
                for (i, chunk) in data.chunks_mut(8).enumerate() {
                    self.card.bar2_read(offset + 8 * i as u64, chunk);
                }
            }
            CONFIG_REGION => {
                let level = self.irq.intx_level();
                self.config
                    .lock()
                    .expect("config lock")
                    .read(off, data, level);
            }
            _ => unreachable!("checked: only these regions have a size"),
        }
        Ok(())
    }

    /// A write of `data` to region `index` at `offset`.
    pub fn write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let off = Self::check(index, offset, data.len())?;
        match index {
            BAR0_REGION => self.card.bar0_write(offset, data),
            BAR2_REGION => self.card.bar2_write(offset, data),
            CONFIG_REGION => {
                let (before, after, flr) = {
                    let mut c = self.config.lock().expect("config lock");
                    let before = c.command();
                    let flr = c.write(off, data);
                    (before, c.command(), flr)
                };
                if flr {
                    log::info!("function-level reset (PCIe DevCtl)");
                    return self.reset();
                }
                let bit = pci::COMMAND_INTX_DISABLE;
                if (before ^ after) & bit != 0 {
                    self.irq.set_intx_disable(after & bit != 0);
                }
            }
            _ => unreachable!("checked: only these regions have a size"),
        }
        Ok(())
    }

    /// `DMA_MAP`: `[iova, iova + size)` to `fd` at `offset` (unreachable without an fd).
    pub fn dma_map(
        &self,
        flags: u32,
        offset: u64,
        iova: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        if fd.is_none() {
            // QEMU maps its ROMs (BIOS, option ROMs) so; nothing DMAs there.
            log::debug!("DMA map {iova:#x}+{size:#x} without an fd: DMA there faults");
        }
        let r = self.dma.map(flags, offset, iova, size, fd);
        if let Err(e) = &r {
            log::warn!("DMA map {iova:#x}+{size:#x} refused: {e}");
        }
        r
    }

    /// `DMA_UNMAP`.
    pub fn dma_unmap(&self, flags: u32, iova: u64, size: u64) -> io::Result<()> {
        self.dma
            .unmap(iova, size, flags & UNMAP_ALL != 0)
            .map(|_| ())
    }

    /// `DEVICE_SET_IRQS`.
    pub fn set_irqs(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        let r = self.irq.set_irqs(index, flags, start, count, fds);
        if let Err(e) = &r {
            log::warn!("{e}");
        }
        r
    }

    /// A function-level reset: the card, config space and the INTx state.
    pub fn reset(&self) -> io::Result<()> {
        self.card
            .reset(RESET_TIMEOUT)
            .map_err(|e| io::Error::other(format!("card reset: {e}")))?;
        *self.config.lock().expect("config lock") = ConfigSpace::new();
        self.irq.reset();
        Ok(())
    }

    /// The client is gone: its DMA windows and eventfds are dropped and config space goes back
    /// to reset (the card itself keeps running; a new client resets it if it wants).
    pub fn disconnect(&self) {
        let _ = self.dma.unmap(0, 0, true);
        self.irq.disconnect();
        *self.config.lock().expect("config lock") = ConfigSpace::new();
    }
}
