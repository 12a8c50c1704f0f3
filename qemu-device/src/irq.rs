//! Interrupts from the card to the host.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use preba_protocol::regs::MSIX_VECTORS;

/// Where the card's interrupts go: the vfio-user server signals the client's eventfds; tests
/// record them. Called from the card's core thread, never with a card lock held.
pub trait IrqSink: Send + Sync {
    /// An MSI-X message for `vector` (0..16), already filtered by the per-vector mask.
    fn msix(&self, vector: u16);
    /// The INTx line changes level (only when the host chose INTx in BAR0 INTX).
    fn intx(&self, level: bool);
}

/// A sink that drops every interrupt.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIrq;

impl IrqSink for NoIrq {
    fn msix(&self, _vector: u16) {}
    fn intx(&self, _level: bool) {}
}

#[derive(Debug, Default)]
struct Counts {
    msix: [u64; MSIX_VECTORS as usize],
    intx: bool,
    intx_edges: u64,
    total: u64,
}

/// A sink that counts interrupts per vector and lets a thread wait for the next one.
#[derive(Debug, Default)]
pub struct IrqRecorder {
    state: Mutex<Counts>,
    cv: Condvar,
}

impl IrqRecorder {
    /// Nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }
    /// MSI-X messages seen on `vector`.
    pub fn msix_count(&self, vector: u16) -> u64 {
        let s = self.state.lock().expect("irq lock");
        s.msix.get(usize::from(vector)).copied().unwrap_or(0)
    }
    /// Current INTx level and the number of rising edges seen.
    pub fn intx(&self) -> (bool, u64) {
        let s = self.state.lock().expect("irq lock");
        (s.intx, s.intx_edges)
    }
    /// Every interrupt event seen so far (a sequence number for [`IrqRecorder::wait_after`]).
    pub fn total(&self) -> u64 {
        self.state.lock().expect("irq lock").total
    }
    /// Waits until more than `seen` events were recorded or `deadline` passes; returns the
    /// new total.
    pub fn wait_after(&self, seen: u64, deadline: Instant) -> u64 {
        let mut s = self.state.lock().expect("irq lock");
        while s.total <= seen {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self.cv.wait_timeout(s, deadline - now).expect("irq lock").0;
        }
        s.total
    }
}

impl IrqSink for IrqRecorder {
    fn msix(&self, vector: u16) {
        let mut s = self.state.lock().expect("irq lock");
        if let Some(c) = s.msix.get_mut(usize::from(vector)) {
            *c += 1;
        }
        s.total += 1;
        self.cv.notify_all();
    }
    fn intx(&self, level: bool) {
        let mut s = self.state.lock().expect("irq lock");
        if level && !s.intx {
            s.intx_edges += 1;
        }
        s.intx = level;
        s.total += 1;
        self.cv.notify_all();
    }
}
