//! The host interface: BAR0 as the host sees it, and the mirror the firmware reads through the
//! HOSTIF registers. Pure state; the card wires it to the IRQ sink and the core.

use preba_protocol::regs::{self, MSIX_VECTORS};

/// Doorbell pairs the host interface latches (pending bits are 32-bit masks).
pub const DOORBELL_QUEUES: usize = 32;

/// What a BAR0 access asks the card to do afterwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Raise IRQ_HOST to the firmware.
    pub host_irq: bool,
    /// MSI-X vectors to send now (bit v).
    pub msix: u32,
    /// New INTx level, when it changes.
    pub intx: Option<bool>,
}

/// BAR0 registers and the HOSTIF mirror.
#[derive(Clone, Debug)]
pub struct HostIf {
    /// CAP value.
    pub cap: u64,
    /// CC as the host wrote it.
    pub cc: u32,
    /// AQA.
    pub aqa: u32,
    /// ASQ.
    pub asq: u64,
    /// ACQ.
    pub acq: u64,
    /// CSTS as the firmware set it.
    pub csts: u32,
    /// QFAULT as the firmware (or the doorbell decoder) set it.
    pub qfault: u32,
    /// INTX bit 0: INTx mode.
    pub intx_mode: bool,
    /// INTx asserted.
    pub intx_level: bool,
    /// FWVER as the firmware set it.
    pub fwver: u64,
    /// SCRATCH.
    pub scratch: u32,
    /// HOSTIF_EVENTS.
    pub events: u32,
    /// HOSTIF_SQDB_PENDING.
    pub sqdb_pending: u32,
    /// HOSTIF_CQDB_PENDING.
    pub cqdb_pending: u32,
    /// Raw doorbell values: SQ tail at 2q, CQ head at 2q + 1.
    pub db: [u32; 2 * DOORBELL_QUEUES],
    /// MSI-X table: 4 dwords per vector.
    pub msix_table: [u32; 4 * MSIX_VECTORS as usize],
    /// MSI-X pending bits.
    pub msix_pba: u64,
}

const ONES: u64 = u64::MAX;

impl HostIf {
    /// Reset state with the given CAP.
    pub fn new(cap: u64) -> Self {
        HostIf {
            cap,
            cc: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            csts: 0,
            qfault: 0,
            intx_mode: false,
            intx_level: false,
            fwver: 0,
            scratch: 0,
            events: 0,
            sqdb_pending: 0,
            cqdb_pending: 0,
            db: [0; 2 * DOORBELL_QUEUES],
            msix_table: [0; 4 * MSIX_VECTORS as usize],
            msix_pba: 0,
        }
    }

    /// A host read of `size` bytes (1, 2, 4 or 8) at `off`, as a little-endian value.
    pub fn bar0_read(&self, off: u64, size: usize) -> u64 {
        let r32 = |v: u32| if size == 4 { u64::from(v) } else { ONES };
        let r64 = |v: u64, o: u64| match (size, o) {
            (8, 0) => v,
            (4, 0) => v & 0xFFFF_FFFF,
            (4, 4) => v >> 32,
            _ => ONES,
        };
        let table_end = regs::MSIX_TABLE + 16 * u64::from(MSIX_VECTORS);
        match off {
            o @ (0x000 | 0x004) => r64(self.cap, o),
            regs::VS => r32(u32::from(regs::VERSION_MAJOR) << 16 | u32::from(regs::VERSION_MINOR)),
            regs::CC => r32(self.cc),
            regs::CSTS => r32(self.csts),
            regs::AQA => r32(self.aqa),
            o @ (0x028 | 0x02C) => r64(self.asq, o - 0x028),
            o @ (0x030 | 0x034) => r64(self.acq, o - 0x030),
            regs::QFAULT => r32(self.qfault),
            regs::INTX => r32(u32::from(self.intx_mode)),
            o @ (0x040 | 0x044) => r64(self.fwver, o - 0x040),
            regs::SCRATCH => r32(self.scratch),
            o if (regs::DOORBELL_BASE..regs::MSIX_TABLE).contains(&o) => r32(0),
            o if (regs::MSIX_TABLE..table_end).contains(&o) => {
                let i = ((o - regs::MSIX_TABLE) / 4) as usize;
                match (size, o % 8) {
                    (4, _) => u64::from(self.msix_table[i]),
                    (8, 0) => {
                        u64::from(self.msix_table[i]) | u64::from(self.msix_table[i + 1]) << 32
                    }
                    _ => ONES,
                }
            }
            o if o == regs::MSIX_PBA || o == regs::MSIX_PBA + 4 => {
                r64(self.msix_pba, o - regs::MSIX_PBA)
            }
            _ if size == 4 || size == 8 => 0,
            _ => ONES,
        }
    }

    /// A host write of `size` bytes at `off`.
    pub fn bar0_write(&mut self, off: u64, size: usize, v: u64) -> Effects {
        let mut fx = Effects::default();
        let v32 = v as u32;
        let set64 = |reg: &mut u64, o: u64| match (size, o) {
            (8, 0) => *reg = v,
            (4, 0) => *reg = (*reg & !0xFFFF_FFFF) | u64::from(v32),
            (4, 4) => *reg = (*reg & 0xFFFF_FFFF) | u64::from(v32) << 32,
            _ => {}
        };
        let table_end = regs::MSIX_TABLE + 16 * u64::from(MSIX_VECTORS);
        match off {
            regs::CC if size == 4 => {
                self.cc = v32;
                self.events |= preba_protocol::card::HOSTIF_EVENT_CC;
                fx.host_irq = true;
            }
            regs::AQA if size == 4 => self.aqa = v32,
            o @ (0x028 | 0x02C) => set64(&mut self.asq, o - 0x028),
            o @ (0x030 | 0x034) => set64(&mut self.acq, o - 0x030),
            regs::INTX if size == 4 => {
                self.intx_mode = v32 & 1 != 0;
                if (v32 & 2 != 0 || !self.intx_mode) && self.intx_level {
                    self.intx_level = false;
                    fx.intx = Some(false);
                }
            }
            regs::SCRATCH if size == 4 => self.scratch = v32,
            o if (regs::DOORBELL_BASE..regs::MSIX_TABLE).contains(&o)
                && size == 4
                && o % 4 == 0 =>
            {
                let idx = ((o - regs::DOORBELL_BASE) / 4) as usize;
                let (q, cq) = (idx / 2, idx % 2 == 1);
                if q < DOORBELL_QUEUES {
                    self.db[idx] = v32;
                    if cq {
                        self.cqdb_pending |= 1 << q;
                    } else {
                        self.sqdb_pending |= 1 << q;
                    }
                } else if self.qfault & regs::QFAULT_VALID == 0 {
                    // No pending bit can name this queue: the host interface latches the fault.
                    self.qfault = regs::QueueFault::NoSuchQueue.encode(q as u8);
                }
                self.events |= preba_protocol::card::HOSTIF_EVENT_DOORBELL;
                fx.host_irq = true;
            }
            o if (regs::MSIX_TABLE..table_end).contains(&o)
                && (size == 4 || size == 8 && o % 8 == 0) =>
            {
                let i = ((o - regs::MSIX_TABLE) / 4) as usize;
                self.msix_table[i] = v32;
                if size == 8 {
                    self.msix_table[i + 1] = (v >> 32) as u32;
                }
                // Unmasking a vector with its pending bit set sends the message.
                for vec in 0..MSIX_VECTORS as usize {
                    if self.msix_pba & 1 << vec != 0 && self.msix_table[4 * vec + 3] & 1 == 0 {
                        self.msix_pba &= !(1 << vec);
                        fx.msix |= 1 << vec;
                    }
                }
            }
            _ => {}
        }
        fx
    }

    /// The firmware writes HOSTIF_IRQ_TRIGGER with `vector`.
    pub fn trigger(&mut self, vector: u32) -> Effects {
        let mut fx = Effects::default();
        if self.intx_mode {
            if !self.intx_level {
                self.intx_level = true;
                fx.intx = Some(true);
            }
        } else if vector < u32::from(MSIX_VECTORS) {
            if self.msix_table[4 * vector as usize + 3] & 1 != 0 {
                self.msix_pba |= 1 << vector;
            } else {
                fx.msix |= 1 << vector;
            }
        }
        fx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_sizes() {
        let mut h = HostIf::new(0x10_3208_0FFF);
        assert_eq!(h.bar0_read(0, 8), 0x10_3208_0FFF);
        assert_eq!(h.bar0_read(4, 4), 0x10);
        assert_eq!(h.bar0_read(regs::VS, 4), 0x10001, "protocol 1.1");
        assert_eq!(h.bar0_read(regs::VS, 2), u64::MAX);
        assert_eq!(h.bar0_read(regs::VS, 8), u64::MAX);
        h.bar0_write(regs::SCRATCH, 2, 5);
        assert_eq!(h.bar0_read(regs::SCRATCH, 4), 0);
        h.bar0_write(regs::SCRATCH, 4, 5);
        assert_eq!(h.bar0_read(regs::SCRATCH, 4), 5);
        h.bar0_write(regs::ASQ, 4, 0x1000);
        h.bar0_write(regs::ASQ + 4, 4, 0x2);
        assert_eq!(h.bar0_read(regs::ASQ, 8), 0x2_0000_1000);
        h.bar0_write(regs::ACQ, 8, 0x3_0000_2000);
        assert_eq!(h.asq, 0x2_0000_1000);
        assert_eq!(h.acq, 0x3_0000_2000);
        assert_eq!(h.bar0_read(0x100, 4), 0);
        assert_eq!(h.bar0_read(0x100, 1), u64::MAX);
    }

    #[test]
    fn doorbells_latch() {
        let mut h = HostIf::new(0);
        let fx = h.bar0_write(regs::sq_doorbell(1), 4, 6);
        assert!(fx.host_irq);
        assert_eq!(h.db[2], 6);
        assert_eq!(h.sqdb_pending, 2);
        h.bar0_write(regs::cq_doorbell(3), 4, 9);
        assert_eq!(h.db[7], 9);
        assert_eq!(h.cqdb_pending, 8);
        assert_eq!(h.bar0_read(regs::cq_doorbell(3), 4), 0);
        assert!(!h.bar0_write(regs::sq_doorbell(1), 2, 6).host_irq);
        h.bar0_write(regs::sq_doorbell(40), 4, 1);
        assert_eq!(
            regs::QueueFault::decode(h.qfault),
            Some((40, Some(regs::QueueFault::NoSuchQueue)))
        );
    }

    #[test]
    fn msix_mask_and_intx() {
        let mut h = HostIf::new(0);
        assert_eq!(h.trigger(1).msix, 2);
        h.bar0_write(regs::MSIX_TABLE + 16 + 12, 4, 1); // mask vector 1
        assert_eq!(h.trigger(1).msix, 0);
        assert_eq!(h.bar0_read(regs::MSIX_PBA, 4), 2);
        assert_eq!(h.bar0_write(regs::MSIX_TABLE + 16 + 12, 4, 0).msix, 2);
        assert_eq!(h.msix_pba, 0);
        h.bar0_write(regs::INTX, 4, 1);
        assert_eq!(h.trigger(1).intx, Some(true));
        assert_eq!(h.trigger(1).intx, None);
        assert_eq!(h.bar0_write(regs::INTX, 4, 3).intx, Some(false));
    }
}
