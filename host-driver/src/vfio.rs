//! The kernel VFIO transport (`vfio:BDF`), for a card bound to vfio-pci (in
//! the QEMU guest: the emulated card behind vfio-user-pci and a vIOMMU).
//! Container and group through `vfio-ioctls` (without KVM), BAR accesses by
//! region read/write on the device fd, the memfd arena mapped into the IOMMU
//! at the driver's IOVAs, MSI-X routed to eventfds.
#![forbid(unsafe_code)]

use crate::dma::{self, DmaMem};
use crate::transport::{Op, TResult, Transport, TransportError};
use preba_protocol::regs::MSIX_VECTORS;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vfio_ioctls::{VfioContainer, VfioDevice, VfioOps};
use vmm_sys_util::eventfd::EventFd;

const BAR0_REGION: u32 = 0;
const BAR2_REGION: u32 = 2;
const CONFIG_REGION: u32 = 7;
const MSIX_IRQ_INDEX: u32 = 2;
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

pub struct Vfio {
    name: String,
    device: VfioDevice,
    container: Arc<VfioContainer>,
    arena: DmaMem,
    irqs: Vec<EventFd>,
}

fn io_err(op: Op) -> impl FnOnce(std::io::Error) -> TransportError {
    move |source| TransportError::Io { op, source }
}

fn vfio_err(op: Op) -> impl FnOnce(vfio_ioctls::VfioError) -> TransportError {
    move |source| TransportError::Vfio { op, source }
}

impl Vfio {
    /// Opens the card and function-resets it.
    pub fn open(bdf: &str, name: String, arena_bytes: usize) -> TResult<Vfio> {
        Vfio::open_with(bdf, name, arena_bytes, true)
    }

    /// Opens the card; without `reset` it keeps running as it is (to read its log).
    pub fn open_with(bdf: &str, name: String, arena_bytes: usize, reset: bool) -> TResult<Vfio> {
        let sys = PathBuf::from("/sys/bus/pci/devices").join(bdf);
        if !sys.exists() {
            return Err(TransportError::NoDevice {
                bdf: bdf.to_string(),
            });
        }
        let driver = std::fs::read_link(sys.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        if driver.as_deref() != Some("vfio-pci") {
            return Err(TransportError::NotVfioPci {
                bdf: bdf.to_string(),
                driver,
                sysfs: sys,
            });
        }
        let container = Arc::new(VfioContainer::new(None).map_err(vfio_err(Op::VfioContainer))?);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device =
            VfioDevice::new(Path::new(&sys), ops, false).map_err(vfio_err(Op::VfioDevice))?;
        if reset {
            device.reset();
        }
        let arena =
            DmaMem::new(arena_bytes, crate::driver::ARENA_IOVA).map_err(io_err(Op::Arena))?;
        dma::vfio_dma_map(&container, &arena).map_err(io_err(Op::DmaMap))?;
        let mut cmd = [0u8; 2];
        device.region_read(CONFIG_REGION, &mut cmd, PCI_COMMAND);
        let c = u16::from_le_bytes(cmd) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
        device.region_write(CONFIG_REGION, &c.to_le_bytes(), PCI_COMMAND);
        let mut irqs = Vec::new();
        if let Some(info) = device.get_irq_info(MSIX_IRQ_INDEX).filter(|i| i.count > 0) {
            let n = info.count.min(u32::from(MSIX_VECTORS));
            for _ in 0..n {
                irqs.push(EventFd::new(libc::EFD_NONBLOCK).map_err(io_err(Op::Eventfd))?);
            }
            if device.enable_msix(irqs.iter().collect()).is_err() {
                irqs.clear();
            }
        }
        Ok(Vfio {
            name,
            device,
            container,
            arena,
            irqs,
        })
    }
}

impl Transport for Vfio {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn bar0_read(&self, off: u64, data: &mut [u8]) -> TResult<()> {
        // A failed read leaves all-ones, like a device that fell off the bus:
        // CSTS then reads with CFS set and the driver declares the card dead.
        data.fill(0xff);
        self.device.region_read(BAR0_REGION, data, off);
        Ok(())
    }
    fn bar0_write(&self, off: u64, data: &[u8]) -> TResult<()> {
        self.device.region_write(BAR0_REGION, data, off);
        Ok(())
    }
    fn bar2_read(&self, off: u64, data: &mut [u8]) -> TResult<()> {
        data.fill(0xff);
        self.device.region_read(BAR2_REGION, data, off);
        Ok(())
    }
    fn arena(&self) -> &DmaMem {
        &self.arena
    }
    fn reset(&self) -> TResult<()> {
        // VFIO_DEVICE_RESET (the card has FLR); the kernel restores config space, so bus
        // mastering and MSI-X stay as they were.
        self.device.reset();
        Ok(())
    }
    fn wait_irq(&self, vector: u16, timeout: Duration) -> TResult<bool> {
        match self.irqs.get(vector as usize) {
            Some(e) => {
                let ready = dma::poll_readable(e.as_raw_fd(), timeout)
                    .map_err(io_err(Op::IrqWait { vector }))?;
                if ready {
                    let _ = e.read();
                }
                Ok(ready)
            }
            None => {
                std::thread::sleep(timeout);
                Ok(false)
            }
        }
    }
}

impl Drop for Vfio {
    fn drop(&mut self) {
        if !self.irqs.is_empty() {
            let _ = self.device.disable_msix();
        }
        let _ = self
            .container
            .vfio_dma_unmap(self.arena.iova(), self.arena.len());
    }
}
