//! Ring index algebra as pure functions and small state structs.
//!
//! Every published index (doorbell values, `sq_head` in completions) lies in
//! `[0, size)`; sizes are powers of two in `[MIN_RING, MAX_RING]`, so masking
//! replaces modulo. The submission ring keeps one slot empty (NVMe): it holds
//! at most `size - 1` entries, so "full" and "empty" never look alike.
//! Completions carry a phase bit that starts at 1 and flips on every wrap,
//! so the device needs no CQ tail register.
//!
//! Each side writes only its own index (single writer). Publication order on
//! both sides: payload, release barrier, then index or phase; the reader
//! acquires the index or phase and only then reads the payload. The structs
//! here hold no memory: the barrier lives with whoever touches the memory.

use crate::regs::QueueFault;

pub const MIN_RING: u16 = 2;
pub const MAX_RING: u16 = 4096;

/// Whether `n` is an acceptable ring size.
pub const fn valid_size(n: u32) -> bool {
    n >= MIN_RING as u32 && n <= MAX_RING as u32 && n.is_power_of_two()
}

/// `(a - b) mod size` for indices in `[0, size)`.
pub const fn distance(size: u16, from: u16, to: u16) -> u16 {
    to.wrapping_sub(from) & (size - 1)
}

/// `(i + n) mod size`.
pub const fn advance(size: u16, i: u16, n: u16) -> u16 {
    i.wrapping_add(n) & (size - 1)
}

/// Host side of a submission ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqProducer {
    size: u16,
    tail: u16,
    head: u16,
}

impl SqProducer {
    pub fn new(size: u16) -> Option<Self> {
        valid_size(size as u32).then_some(SqProducer {
            size,
            tail: 0,
            head: 0,
        })
    }
    pub fn size(&self) -> u16 {
        self.size
    }
    /// The tail to publish in the SQ doorbell.
    pub fn tail(&self) -> u16 {
        self.tail
    }
    /// Entries written but not yet consumed by the device (as last reported).
    pub fn used(&self) -> u16 {
        distance(self.size, self.head, self.tail)
    }
    pub fn free(&self) -> u16 {
        self.size - 1 - self.used()
    }
    /// Reserves the next slot; the caller writes the entry there, then
    /// publishes [`tail`](Self::tail). `None` when full.
    pub fn push(&mut self) -> Option<u16> {
        if self.free() == 0 {
            return None;
        }
        let slot = self.tail;
        self.tail = advance(self.size, self.tail, 1);
        Some(slot)
    }
    /// Takes the device's `sq_head` from a completion. A head outside
    /// `[head, tail]` is a lie from the device: refused, state unchanged.
    pub fn update_head(&mut self, new_head: u16) -> Result<(), QueueFault> {
        if new_head >= self.size || distance(self.size, self.head, new_head) > self.used() {
            return Err(QueueFault::SqDoorbellOutOfRange);
        }
        self.head = new_head;
        Ok(())
    }
}

/// Device side of a submission ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqConsumer {
    size: u16,
    head: u16,
    tail: u16,
}

impl SqConsumer {
    pub fn new(size: u16) -> Option<Self> {
        valid_size(size as u32).then_some(SqConsumer {
            size,
            head: 0,
            tail: 0,
        })
    }
    pub fn size(&self) -> u16 {
        self.size
    }
    pub fn head(&self) -> u16 {
        self.head
    }
    /// Entries announced but not yet fetched.
    pub fn pending(&self) -> u16 {
        distance(self.size, self.head, self.tail)
    }
    /// Validates an SQ tail doorbell. A value at or past the ring size, or one
    /// that would take back entries already announced (or claim `size` or
    /// more), is a queue fault: the caller latches it; nothing loops.
    /// Returns how many new entries it announces.
    pub fn doorbell(&mut self, new_tail: u32) -> Result<u16, QueueFault> {
        if new_tail >= self.size as u32 {
            return Err(QueueFault::SqDoorbellOutOfRange);
        }
        let new_tail = new_tail as u16;
        let before = self.pending();
        let after = distance(self.size, self.head, new_tail);
        if after < before {
            return Err(QueueFault::SqDoorbellOutOfRange);
        }
        self.tail = new_tail;
        Ok(after - before)
    }
    /// Next slot to fetch, advancing the head.
    pub fn pop(&mut self) -> Option<u16> {
        if self.pending() == 0 {
            return None;
        }
        let slot = self.head;
        self.head = advance(self.size, self.head, 1);
        Some(slot)
    }
}

/// Device side of a completion ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CqProducer {
    size: u16,
    tail: u16,
    head: u16,
    phase: bool,
}

impl CqProducer {
    pub fn new(size: u16) -> Option<Self> {
        valid_size(size as u32).then_some(CqProducer {
            size,
            tail: 0,
            head: 0,
            phase: true,
        })
    }
    pub fn size(&self) -> u16 {
        self.size
    }
    /// Posted but not yet released by the host.
    pub fn used(&self) -> u16 {
        distance(self.size, self.head, self.tail)
    }
    pub fn free(&self) -> u16 {
        self.size - 1 - self.used()
    }
    /// Reserves the next CQ slot and the phase to write into it. `None` when
    /// full: the completion waits on the device, it is never dropped.
    pub fn push(&mut self) -> Option<(u16, bool)> {
        if self.free() == 0 {
            return None;
        }
        let slot = (self.tail, self.phase);
        self.tail = advance(self.size, self.tail, 1);
        if self.tail == 0 {
            self.phase = !self.phase;
        }
        Some(slot)
    }
    /// Validates a CQ head doorbell: the host may release only entries the
    /// device has posted.
    pub fn doorbell(&mut self, new_head: u32) -> Result<u16, QueueFault> {
        if new_head >= self.size as u32 {
            return Err(QueueFault::CqDoorbellOutOfRange);
        }
        let new_head = new_head as u16;
        let released = distance(self.size, self.head, new_head);
        if released > self.used() {
            return Err(QueueFault::CqDoorbellOutOfRange);
        }
        self.head = new_head;
        Ok(released)
    }
}

/// Host side of a completion ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CqConsumer {
    size: u16,
    head: u16,
    phase: bool,
}

impl CqConsumer {
    pub fn new(size: u16) -> Option<Self> {
        valid_size(size as u32).then_some(CqConsumer {
            size,
            head: 0,
            phase: true,
        })
    }
    pub fn size(&self) -> u16 {
        self.size
    }
    /// The slot to look at next and the phase that marks it as new.
    pub fn next(&self) -> (u16, bool) {
        (self.head, self.phase)
    }
    /// Consumes the entry at [`next`](Self::next); the new head goes to the CQ doorbell.
    pub fn advance(&mut self) -> u16 {
        self.head = advance(self.size, self.head, 1);
        if self.head == 0 {
            self.phase = !self.phase;
        }
        self.head
    }
    pub fn head(&self) -> u16 {
        self.head
    }
}
