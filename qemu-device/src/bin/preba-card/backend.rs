//! The vfio-user device: regions, IRQs, DMA and reset, wired to the card model.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use preba_card::Card;
use preba_protocol::regs;
use vfio_bindings::bindings::vfio::vfio_region_info;
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion};

use crate::dma::DmaTable;
use crate::irq::{self, IrqGlue};
use crate::pci::{self, ConfigSpace};

/// VFIO PCI region indices.
pub const BAR0_REGION: u32 = 0;
pub const BAR2_REGION: u32 = 2;
pub const CONFIG_REGION: u32 = 7;
pub const NUM_REGIONS: u32 = 9;

const REGION_READ: u32 = 1 << 0;
const REGION_WRITE: u32 = 1 << 1;

/// DMA_UNMAP flag: unmap everything.
const UNMAP_ALL: u32 = 1 << 2;

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

/// The regions the server advertises (all trapped: no mmap).
pub fn regions() -> Vec<ServerRegion> {
    (0..NUM_REGIONS)
        .map(|index| {
            let size = region_size(index);
            ServerRegion {
                region_info: vfio_region_info {
                    argsz: std::mem::size_of::<vfio_region_info>() as u32,
                    flags: if size > 0 {
                        REGION_READ | REGION_WRITE
                    } else {
                        0
                    },
                    index,
                    cap_offset: 0,
                    size,
                    offset: 0,
                },
                sparse_areas: Vec::new(),
                mmap_fd: None,
            }
        })
        .collect()
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
    fn check(index: u32, offset: u64, len: usize) -> io::Result<usize> {
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
            _ => unreachable!("checked"),
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
            _ => unreachable!("checked"),
        }
        Ok(())
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
}

/// The `ServerBackend` over a shared [`Device`].
pub struct Backend(pub Arc<Device>);

impl ServerBackend for Backend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let r = self.0.read(region, offset, data);
        log::trace!("read  region {region} {offset:#x} {:02x?} -> {r:?}", data);
        r
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        log::trace!("write region {region} {offset:#x} {data:02x?}");
        self.0.write(region, offset, data)
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        log::trace!(
            "dma map {address:#x}+{size:#x} offset {offset:#x} flags {:#x} fd {}",
            flags.bits(),
            fd.is_some()
        );
        if fd.is_none() {
            // QEMU maps its ROMs (BIOS, option ROMs) so; nothing DMAs there.
            log::debug!("DMA map {address:#x}+{size:#x} without an fd: DMA there faults");
        }
        let r = self.0.dma.map(flags.bits(), offset, address, size, fd);
        if let Err(e) = &r {
            log::warn!("DMA map {address:#x}+{size:#x} refused: {e}");
        }
        r
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        log::trace!("dma unmap {address:#x}+{size:#x} flags {:#x}", flags.bits());
        self.0
            .dma
            .unmap(address, size, flags.bits() & UNMAP_ALL != 0)
            .map(|_| ())
    }

    fn reset(&mut self) -> io::Result<()> {
        log::info!("device reset");
        self.0.reset()
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        log::debug!(
            "set_irqs index {index} flags {flags:#x} start {start} count {count} fds {}",
            fds.len()
        );
        let r = self.0.irq.set_irqs(index, flags, start, count, fds);
        if let Err(e) = &r {
            log::warn!("{e}");
        }
        r
    }
}
