//! Interrupts from the card to the vfio-user client: eventfds set by `SET_IRQS`.
//!
//! - MSI-X (index 2, 16 vectors): the card model has already applied its per-vector mask; a
//!   message on a vector with an eventfd writes it. QEMU emulates the MSI-X table itself and
//!   hands us one eventfd per vector it enabled.
//! - INTx (index 0): level-triggered and automasked, as VFIO defines it: a rising level (or an
//!   unmask while the level is high) signals the eventfd once and masks the line until the client
//!   unmasks it (`SET_IRQS` ACTION_UNMASK). PCI_COMMAND.INTxDisable holds the line off, and
//!   PCI_STATUS.Interrupt shows the level (the guest kernel ignores INTx without it).
//! - ERR (index 3): advertised so QEMU's error recovery is quiet; signalled when the card dies.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Mutex;

use crate::IrqSink;
use preba_protocol::regs::MSIX_VECTORS;

pub const INTX_INDEX: u32 = 0;
pub const MSI_INDEX: u32 = 1;
pub const MSIX_INDEX: u32 = 2;
pub const ERR_INDEX: u32 = 3;
pub const REQ_INDEX: u32 = 4;

pub const IRQ_INFO_EVENTFD: u32 = 1 << 0;
pub const IRQ_INFO_MASKABLE: u32 = 1 << 1;
pub const IRQ_INFO_AUTOMASKED: u32 = 1 << 2;
pub const IRQ_INFO_NORESIZE: u32 = 1 << 3;

pub const SET_DATA_NONE: u32 = 1 << 0;
pub const SET_DATA_BOOL: u32 = 1 << 1;
pub const SET_DATA_EVENTFD: u32 = 1 << 2;
pub const SET_ACTION_MASK: u32 = 1 << 3;
pub const SET_ACTION_UNMASK: u32 = 1 << 4;
pub const SET_ACTION_TRIGGER: u32 = 1 << 5;

const NV: usize = MSIX_VECTORS as usize;

#[derive(Default)]
struct State {
    intx_fd: Option<File>,
    msix: [Option<File>; NV],
    err_fd: Option<File>,
    /// The card's INTx level.
    level: bool,
    /// Automasked (or masked by the client).
    masked: bool,
    /// PCI_COMMAND.INTxDisable.
    disabled: bool,
    msix_sent: [u64; NV],
    msix_dropped: u64,
    intx_sent: u64,
}

/// Counters for tests and the log.
#[derive(Clone, Copy, Debug, Default)]
pub struct IrqStats {
    pub msix_sent: [u64; NV],
    pub msix_dropped: u64,
    pub intx_sent: u64,
    pub intx_level: bool,
}

/// The card's [`IrqSink`] and the `SET_IRQS` state.
#[derive(Default)]
pub struct IrqGlue {
    st: Mutex<State>,
}

fn signal(f: &File) {
    // An eventfd counter add; EAGAIN (counter saturated) means it is signalled already.
    if let Err(e) = (&*f).write(&1u64.to_ne_bytes())
        && e.kind() != io::ErrorKind::WouldBlock
    {
        log::warn!("cannot signal an interrupt eventfd: {e}");
    }
}

/// Whether `f` is an eventfd. The card signals through these descriptors from its own threads:
/// anything else (a pipe that fills up, a socket, a FIFO) could block the signalling write
/// and with it the card. Where /proc cannot say (not mounted), the descriptor is taken.
fn is_eventfd(f: &File) -> bool {
    use std::os::fd::AsRawFd;
    match std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())) {
        Ok(target) => target.as_os_str() == "anon_inode:[eventfd]",
        Err(e) => {
            log::debug!("cannot tell whether an interrupt descriptor is an eventfd: {e}");
            true
        }
    }
}

fn einval(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl State {
    fn fire_intx(&mut self) {
        if self.level
            && !self.masked
            && !self.disabled
            && let Some(f) = &self.intx_fd
        {
            signal(f);
            self.masked = true;
            self.intx_sent += 1;
        }
    }
}

impl IrqGlue {
    pub fn new() -> IrqGlue {
        IrqGlue::default()
    }

    /// The INTx level (PCI_STATUS.Interrupt).
    pub fn intx_level(&self) -> bool {
        self.st.lock().expect("irq lock").level
    }

    /// PCI_COMMAND.INTxDisable changed.
    pub fn set_intx_disable(&self, disabled: bool) {
        let mut st = self.st.lock().expect("irq lock");
        st.disabled = disabled;
        st.fire_intx();
    }

    /// Device reset: the line drops and unmasks; eventfds stay (the client re-sets them).
    pub fn reset(&self) {
        let mut st = self.st.lock().expect("irq lock");
        st.level = false;
        st.masked = false;
        st.disabled = false;
    }

    /// The client is gone: every eventfd is dropped, and the line unmasks and enables (the
    /// card's level stays).
    pub fn disconnect(&self) {
        let mut st = self.st.lock().expect("irq lock");
        st.intx_fd = None;
        st.msix = Default::default();
        st.err_fd = None;
        st.masked = false;
        st.disabled = false;
    }

    /// The card stopped working: tell the client through the ERR eventfd.
    pub fn error(&self) {
        if let Some(f) = &self.st.lock().expect("irq lock").err_fd {
            signal(f);
        }
    }

    pub fn stats(&self) -> IrqStats {
        let st = self.st.lock().expect("irq lock");
        IrqStats {
            msix_sent: st.msix_sent,
            msix_dropped: st.msix_dropped,
            intx_sent: st.intx_sent,
            intx_level: st.level,
        }
    }

    /// A `SET_IRQS` request (VFIO semantics; `fds` are the eventfds sent with it).
    pub fn set_irqs(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        let data = flags & (SET_DATA_NONE | SET_DATA_BOOL | SET_DATA_EVENTFD);
        let action = flags & (SET_ACTION_MASK | SET_ACTION_UNMASK | SET_ACTION_TRIGGER);
        if data.count_ones() != 1 || action.count_ones() != 1 {
            return Err(einval(format!("SET_IRQS flags {flags:#x}")));
        }
        let max = match index {
            INTX_INDEX | ERR_INDEX => 1,
            MSIX_INDEX => u32::from(MSIX_VECTORS),
            MSI_INDEX | REQ_INDEX => 0,
            _ => return Err(einval(format!("SET_IRQS index {index}"))),
        };
        let end = start
            .checked_add(count)
            .filter(|&e| e <= max)
            .ok_or_else(|| einval(format!("SET_IRQS {index}: {start}+{count} > {max}")))?;
        if data == SET_DATA_EVENTFD && !fds.is_empty() && fds.len() != count as usize {
            return Err(einval(format!(
                "SET_IRQS {index}: {} fds for {count} vectors",
                fds.len()
            )));
        }
        if data == SET_DATA_EVENTFD && !fds.iter().all(is_eventfd) {
            return Err(einval(format!(
                "SET_IRQS {index}: a descriptor that is not an eventfd"
            )));
        }
        let mut st = self.st.lock().expect("irq lock");
        match (index, action, data) {
            // Disable the whole index.
            (_, SET_ACTION_TRIGGER, SET_DATA_NONE) if count == 0 => match index {
                INTX_INDEX => {
                    st.intx_fd = None;
                    st.masked = false;
                }
                MSIX_INDEX => st.msix = Default::default(),
                ERR_INDEX => st.err_fd = None,
                _ => {}
            },
            // Assign eventfds (or, with none sent, de-assign: QEMU sends runs of -1 that way).
            (_, SET_ACTION_TRIGGER, SET_DATA_EVENTFD) => {
                let mut fds = fds.into_iter();
                for v in start..end {
                    let fd = fds.next();
                    match index {
                        INTX_INDEX => {
                            st.intx_fd = fd;
                            st.masked = false;
                        }
                        MSIX_INDEX => st.msix[v as usize] = fd,
                        ERR_INDEX => st.err_fd = fd,
                        _ => {}
                    }
                }
                if index == INTX_INDEX {
                    st.fire_intx();
                }
            }
            // Loopback triggers (tests).
            (_, SET_ACTION_TRIGGER, SET_DATA_NONE) => {
                for v in start..end {
                    let fd = match index {
                        INTX_INDEX => st.intx_fd.as_ref(),
                        MSIX_INDEX => st.msix[v as usize].as_ref(),
                        ERR_INDEX => st.err_fd.as_ref(),
                        _ => None,
                    };
                    if let Some(f) = fd {
                        signal(f);
                    }
                }
            }
            (INTX_INDEX, SET_ACTION_MASK, SET_DATA_NONE) => st.masked = true,
            (INTX_INDEX, SET_ACTION_UNMASK, SET_DATA_NONE) => {
                st.masked = false;
                st.fire_intx();
            }
            // MSI-X masking is the table's business (the model's, or QEMU's emulated one).
            (MSIX_INDEX, SET_ACTION_MASK | SET_ACTION_UNMASK, SET_DATA_NONE) => {}
            _ => {
                return Err(einval(format!(
                    "SET_IRQS index {index} flags {flags:#x}: not supported"
                )));
            }
        }
        Ok(())
    }
}

impl IrqSink for IrqGlue {
    fn msix(&self, vector: u16) {
        let mut st = self.st.lock().expect("irq lock");
        let v = usize::from(vector);
        if v < NV && st.msix[v].is_some() {
            if let Some(f) = &st.msix[v] {
                signal(f);
            }
            st.msix_sent[v] += 1;
        } else {
            st.msix_dropped += 1;
            log::debug!("MSI-X vector {vector} has no eventfd: dropped");
        }
    }

    fn intx(&self, level: bool) {
        let mut st = self.st.lock().expect("irq lock");
        let rising = level && !st.level;
        st.level = level;
        if rising {
            st.fire_intx();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn eventfd() -> File {
        crate::vfio_server::sys::eventfd().unwrap()
    }

    fn count(f: &File) -> u64 {
        let mut b = [0; 8];
        match (&*f).read(&mut b) {
            Ok(8) => u64::from_ne_bytes(b),
            _ => 0,
        }
    }

    #[test]
    fn msix_vectors() {
        let g = IrqGlue::new();
        let e = eventfd();
        g.set_irqs(
            MSIX_INDEX,
            SET_DATA_EVENTFD | SET_ACTION_TRIGGER,
            3,
            1,
            vec![e.try_clone().unwrap()],
        )
        .unwrap();
        g.msix(3);
        g.msix(3);
        g.msix(4);
        assert_eq!(count(&e), 2);
        assert_eq!(g.stats().msix_dropped, 1);
        // De-assign by a run without fds.
        g.set_irqs(
            MSIX_INDEX,
            SET_DATA_EVENTFD | SET_ACTION_TRIGGER,
            3,
            1,
            vec![],
        )
        .unwrap();
        g.msix(3);
        assert_eq!(count(&e), 0);
        assert!(
            g.set_irqs(
                MSIX_INDEX,
                SET_DATA_EVENTFD | SET_ACTION_TRIGGER,
                15,
                2,
                vec![]
            )
            .is_err()
        );
    }

    /// Found by review: a pipe given as an "eventfd" made the card's signalling write block
    /// once the pipe was full (the card's core and the server thread stuck): only eventfds
    /// are taken.
    #[test]
    fn only_eventfds_signal() {
        let g = IrqGlue::new();
        let (_r, w) = std::io::pipe().unwrap();
        let e = g
            .set_irqs(
                MSIX_INDEX,
                SET_DATA_EVENTFD | SET_ACTION_TRIGGER,
                0,
                1,
                vec![File::from(std::os::fd::OwnedFd::from(w))],
            )
            .unwrap_err();
        assert!(e.to_string().contains("not an eventfd"), "{e}");
        let memfd = crate::vfio_server::sys::memfd(c"irq-test", 8, false).unwrap();
        assert!(
            g.set_irqs(
                INTX_INDEX,
                SET_DATA_EVENTFD | SET_ACTION_TRIGGER,
                0,
                1,
                vec![memfd]
            )
            .is_err()
        );
        g.set_irqs(
            MSIX_INDEX,
            SET_DATA_EVENTFD | SET_ACTION_TRIGGER,
            0,
            1,
            vec![eventfd()],
        )
        .unwrap();
    }

    #[test]
    fn intx_automask() {
        let g = IrqGlue::new();
        let e = eventfd();
        g.set_irqs(
            INTX_INDEX,
            SET_DATA_EVENTFD | SET_ACTION_TRIGGER,
            0,
            1,
            vec![e.try_clone().unwrap()],
        )
        .unwrap();
        g.intx(true);
        assert!(g.intx_level());
        assert_eq!(count(&e), 1);
        g.intx(false);
        g.intx(true); // masked: no second signal until the unmask
        assert_eq!(count(&e), 0);
        g.set_irqs(INTX_INDEX, SET_DATA_NONE | SET_ACTION_UNMASK, 0, 1, vec![])
            .unwrap();
        assert_eq!(count(&e), 1);
        g.intx(false);
        g.set_irqs(INTX_INDEX, SET_DATA_NONE | SET_ACTION_UNMASK, 0, 1, vec![])
            .unwrap();
        assert_eq!(count(&e), 0);
        g.set_intx_disable(true);
        g.intx(true);
        assert_eq!(count(&e), 0);
        g.set_intx_disable(false);
        assert_eq!(count(&e), 1);
    }
}
