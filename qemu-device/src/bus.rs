//! The soft core's bus: every device of docs/card-spec.md "The soft core's view" that is not
//! the core's own RAM (IMEM and DMEM live in the core).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use preba_protocol::admin::PROFILE_SIZE;
use preba_protocol::card as c;
use preba_softcore::{Bus, Fault, Halt, IRQ_MEI, IRQ_MSI, IRQ_MTI, Mem, Poll};

use crate::card::Shared;
use crate::cu;
use crate::i2c::I2c;

/// Work the core thread does between two instructions, with the core's RAM at hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    /// DMA_CTRL start.
    Dma { to_host: bool },
    /// CU_CTRL start of CU i.
    CuStart(usize),
}

/// DMA engine registers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Dma {
    pub host: u64,
    pub card: u32,
    pub len: u32,
    pub status: u32,
    pub fault: u64,
}

/// The bus. Owned by the core (inside `Cpu`); shared state goes through `sh`.
pub(crate) struct CardBus {
    pub sh: Arc<Shared>,
    mtime_off: u64,
    pub mtimecmp: u64,
    msip: bool,
    irq_enable: u32,
    pub dma: Dma,
    i2c: I2c,
    spi_rx: u8,
    spi_cs: bool,
    pub service: Vec<Service>,
    /// The test device asked to stop the core.
    pub test_halt: Option<Halt>,
    /// Modeled clock: card time minus the core's time base (debug halts, and the card time
    /// an earlier core reached before a reset built this one), so card time never goes back.
    pub extra: u64,
    /// Modeled clock: card time at the last poll (CU starts count from it).
    t: u64,
    /// Modeled clock: the last poll stopped the core at a CU's bound (its host computation
    /// is still running); the core thread waits for it.
    pub stalled: bool,
}

const PERIPH_END: u32 = c::HOSTIF_BASE + (128 << 10);
const TEST_SIZE: u32 = 0x1000;
const CLINT_SIZE: u32 = 0x1_0000;
const UART_SIZE: u32 = 0x100;

impl CardBus {
    pub fn new(sh: Arc<Shared>) -> Self {
        CardBus {
            sh,
            mtime_off: 0,
            mtimecmp: u64::MAX,
            msip: false,
            irq_enable: 0,
            dma: Dma::default(),
            i2c: I2c::default(),
            spi_rx: 0xFF,
            spi_cs: false,
            service: Vec::new(),
            test_halt: None,
            extra: 0,
            t: 0,
            stalled: false,
        }
    }

    /// Card time (core cycles) at the core's time base `now`.
    pub fn card_time(&self, now: u64) -> u64 {
        now.saturating_add(self.extra)
    }

    /// mtime without what software added: card time at 10 MHz (modeled clock), or the wall
    /// clock since the card started.
    fn mtime_base(&self, now: u64) -> u64 {
        if self.sh.modeled() {
            self.sh.time.ticks(self.card_time(now))
        } else {
            self.sh.wall_mtime()
        }
    }

    /// mtime at the core's time base `now` (plus what software added).
    pub fn mtime(&self, now: u64) -> u64 {
        self.mtime_base(now).wrapping_add(self.mtime_off)
    }

    /// Modeled clock: the card time at which mtime reaches mtimecmp (`u64::MAX`: never).
    pub fn timer_at(&self) -> u64 {
        if self.mtimecmp == u64::MAX {
            return u64::MAX;
        }
        // mtime = ticks(t) + off (off is what software wrote to mtime, as a signed shift).
        let target = i128::from(self.mtimecmp) - i128::from(self.mtime_off as i64);
        if target <= 0 {
            return 0;
        }
        self.sh
            .time
            .at_ticks(u64::try_from(target).unwrap_or(u64::MAX))
    }

    fn periph_load(&mut self, a: u32) -> Option<u32> {
        let sh = &self.sh;
        let off = a - c::HOSTIF_BASE;
        Some(match a {
            _ if a < c::DMA_BASE => {
                let h = sh.hostif.lock().expect("hostif lock");
                match a {
                    c::HOSTIF_CC => h.cc,
                    c::HOSTIF_AQA => h.aqa,
                    c::HOSTIF_ASQ_LO => h.asq as u32,
                    c::HOSTIF_ASQ_HI => (h.asq >> 32) as u32,
                    c::HOSTIF_ACQ_LO => h.acq as u32,
                    c::HOSTIF_ACQ_HI => (h.acq >> 32) as u32,
                    c::HOSTIF_CSTS => h.csts,
                    c::HOSTIF_QFAULT => h.qfault,
                    c::HOSTIF_EVENTS => h.events,
                    c::HOSTIF_IRQ_TRIGGER => 0,
                    c::HOSTIF_FWVER_LO => h.fwver as u32,
                    c::HOSTIF_FWVER_HI => (h.fwver >> 32) as u32,
                    c::HOSTIF_SQDB_PENDING => h.sqdb_pending,
                    c::HOSTIF_CQDB_PENDING => h.cqdb_pending,
                    _ if a >= c::HOSTIF_DB_VALUES => {
                        *h.db.get(((a - c::HOSTIF_DB_VALUES) / 4) as usize)?
                    }
                    _ => return None,
                }
            }
            c::DMA_HOST_LO => self.dma.host as u32,
            c::DMA_HOST_HI => (self.dma.host >> 32) as u32,
            c::DMA_CARD => self.dma.card,
            c::DMA_LEN => self.dma.len,
            c::DMA_CTRL => 0,
            c::DMA_STATUS => self.dma.status,
            c::DMA_FAULT_LO => self.dma.fault as u32,
            c::DMA_FAULT_HI => (self.dma.fault >> 32) as u32,
            c::IRQ_PENDING => sh.irq_pending.load(Ordering::Acquire),
            c::IRQ_ENABLE => self.irq_enable,
            c::IRQ_ACK => 0,
            c::LOG_HEAD => sh.log.head.load(Ordering::Acquire),
            c::I2C_ADDR => self.i2c.addr,
            c::I2C_DATA => u32::from(self.i2c.pop()),
            c::I2C_CTRL => 0,
            c::I2C_STATUS => self.i2c.status(),
            c::SPI_DATA => u32::from(self.spi_rx),
            c::SPI_CS => u32::from(self.spi_cs),
            c::SPI_STATUS => 0,
            c::GPIO_OUT => sh.gpio_out.load(Ordering::Relaxed),
            c::GPIO_IN => sh.cfg.gpio_in,
            c::INFO_IMAGE_CUS => u32::from(sh.cfg.image_cus),
            c::INFO_AUDIO_CUS => u32::from(sh.cfg.audio_cus),
            c::INFO_NORM_CUS => u32::from(sh.cfg.norm_cus),
            c::INFO_CARD_MEM_SIZE => sh.cfg.card_mem_bytes,
            c::INFO_CORE_HZ => sh.cfg.core_hz,
            c::INFO_CU_HZ => sh.cfg.cu_hz,
            c::INFO_BOOT => sh.boot_info.load(Ordering::Acquire),
            _ if a >= c::CU_BASE => {
                let i = ((a - c::CU_BASE) / c::CU_STRIDE) as usize;
                let cu = sh.cus.get(i)?.lock().expect("cu lock");
                cu.load((a - c::CU_BASE) % c::CU_STRIDE)?
            }
            _ => {
                let _ = off;
                return None;
            }
        })
    }

    fn periph_store(&mut self, a: u32, v: u32) -> Option<()> {
        let sh = self.sh.clone();
        match a {
            _ if a < c::DMA_BASE => {
                let mut h = sh.hostif.lock().expect("hostif lock");
                match a {
                    c::HOSTIF_CSTS => h.csts = v,
                    c::HOSTIF_QFAULT => h.qfault = v,
                    c::HOSTIF_EVENTS => h.events &= !v,
                    c::HOSTIF_IRQ_TRIGGER => {
                        let fx = h.trigger(v);
                        drop(h);
                        sh.apply(fx);
                    }
                    c::HOSTIF_FWVER_LO => h.fwver = (h.fwver & !0xFFFF_FFFF) | u64::from(v),
                    c::HOSTIF_FWVER_HI => h.fwver = (h.fwver & 0xFFFF_FFFF) | u64::from(v) << 32,
                    c::HOSTIF_SQDB_PENDING => h.sqdb_pending &= !v,
                    c::HOSTIF_CQDB_PENDING => h.cqdb_pending &= !v,
                    c::HOSTIF_CC
                    | c::HOSTIF_AQA
                    | c::HOSTIF_ASQ_LO
                    | c::HOSTIF_ASQ_HI
                    | c::HOSTIF_ACQ_LO
                    | c::HOSTIF_ACQ_HI => {}
                    _ if a >= c::HOSTIF_DB_VALUES
                        && ((a - c::HOSTIF_DB_VALUES) / 4) < h.db.len() as u32 => {}
                    _ => return None,
                }
            }
            c::DMA_HOST_LO => self.dma.host = (self.dma.host & !0xFFFF_FFFF) | u64::from(v),
            c::DMA_HOST_HI => self.dma.host = (self.dma.host & 0xFFFF_FFFF) | u64::from(v) << 32,
            c::DMA_CARD => self.dma.card = v,
            c::DMA_LEN => self.dma.len = v,
            c::DMA_CTRL => {
                if v & c::DMA_CTRL_START != 0 && self.dma.status != c::DmaStatus::Busy as u32 {
                    self.dma.status = c::DmaStatus::Busy as u32;
                    self.service.push(Service::Dma {
                        to_host: v & c::DMA_CTRL_TO_HOST != 0,
                    });
                }
            }
            c::DMA_STATUS | c::DMA_FAULT_LO | c::DMA_FAULT_HI | c::IRQ_PENDING => {}
            c::IRQ_ENABLE => self.irq_enable = v,
            c::IRQ_ACK => {
                sh.irq_pending.fetch_and(!v, Ordering::AcqRel);
            }
            c::LOG_HEAD => sh.log.head.store(v, Ordering::Release),
            c::I2C_ADDR => self.i2c.addr = v & 0x7F,
            c::I2C_DATA => self.i2c.push(v as u8),
            c::I2C_CTRL => {
                let w = sh.board_power_w();
                let volts = sh.cfg.power.supply_v;
                self.i2c.ctrl(v, || (volts, w / volts));
            }
            c::I2C_STATUS => {}
            c::SPI_DATA => {
                self.spi_rx = sh.flash.lock().expect("flash lock").transfer(v as u8);
            }
            c::SPI_CS => {
                self.spi_cs = v & 1 != 0;
                sh.flash.lock().expect("flash lock").select(self.spi_cs);
            }
            c::SPI_STATUS | c::GPIO_IN => {}
            c::GPIO_OUT => sh.gpio_out.store(v, Ordering::Relaxed),
            _ if (c::INFO_BASE..c::INFO_BASE + 0x1C).contains(&a) => {}
            _ if a >= c::CU_BASE => {
                let i = ((a - c::CU_BASE) / c::CU_STRIDE) as usize;
                let off = (a - c::CU_BASE) % c::CU_STRIDE;
                let mut cu = sh.cus.get(i)?.lock().expect("cu lock");
                match off {
                    c::CU_SRC => cu.src = v,
                    c::CU_SRC_LEN => cu.src_len = v,
                    c::CU_DST => cu.dst = v,
                    c::CU_DST_LEN => cu.dst_len = v,
                    c::CU_PROFILE => cu.profile = v,
                    c::CU_CTRL => {
                        drop(cu);
                        if v & c::CU_CTRL_RESET != 0 {
                            cu::reset(&sh, i);
                        } else if v & c::CU_CTRL_START != 0 {
                            self.service.push(Service::CuStart(i));
                        }
                    }
                    _ => {
                        cu.load(off)?;
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }
}

impl CardBus {
    /// Runs the DMA transfers and CU starts the last MMIO store asked for, at the instruction
    /// boundary right after it (the core polls after every MMIO access), with the core's RAM
    /// at hand: to the firmware a DMA is complete when the store to DMA_CTRL retires.
    fn serve(&mut self, mem: &mut Mem<'_>) {
        for s in std::mem::take(&mut self.service) {
            match s {
                Service::Dma { to_host } => self.dma(mem, to_host),
                Service::CuStart(i) => {
                    let sh = self.sh.clone();
                    let addr = sh.cus[i].lock().expect("cu lock").profile;
                    let mut p = [0u8; PROFILE_SIZE];
                    let ok = if let Some(r) = sh.mem.range(addr, PROFILE_SIZE as u64) {
                        p.copy_from_slice(&sh.mem.data.lock().expect("card memory lock")[r]);
                        true
                    } else {
                        mem.read(addr, &mut p).is_ok()
                    };
                    cu::start(&sh, i, ok.then_some(p), self.t);
                }
            }
        }
    }

    fn dma(&mut self, mem: &mut Mem<'_>, to_host: bool) {
        let d = self.dma;
        let sh = self.sh.clone();
        let mut fault = None;
        let ok = if let Some(r) = sh.mem.range(d.card, u64::from(d.len)) {
            let mut m = sh.mem.data.lock().expect("card memory lock");
            let res = if to_host {
                sh.host.write(d.host, &m[r])
            } else {
                sh.host.read(d.host, &mut m[r])
            };
            res.map_err(|f| fault = Some(f.iova)).is_ok()
        } else {
            // DMEM or IMEM (the core's RAM); anything else is refused untouched.
            let mut buf = vec![0; d.len as usize];
            if mem.read(d.card, &mut buf).is_err() {
                false
            } else if to_host {
                sh.host
                    .write(d.host, &buf)
                    .map_err(|f| fault = Some(f.iova))
                    .is_ok()
            } else {
                match sh.host.read(d.host, &mut buf) {
                    Ok(()) => mem.write(d.card, &buf).is_ok(),
                    Err(f) => {
                        fault = Some(f.iova);
                        false
                    }
                }
            }
        };
        if ok {
            self.dma.status = c::DmaStatus::Done as u32;
        } else {
            self.dma.status = c::DmaStatus::Fault as u32;
            self.dma.fault = fault.unwrap_or(d.host);
        }
        sh.raise(c::IRQ_DMA);
    }
}

impl Bus for CardBus {
    fn load(&mut self, a: u32, size: u8, now: u64) -> Result<u32, Fault> {
        match a {
            _ if (c::UART_BASE..c::UART_BASE + UART_SIZE).contains(&a) => {
                Ok(if a - c::UART_BASE == 5 { 0x60 } else { 0 })
            }
            _ if (c::TEST_BASE..c::TEST_BASE + TEST_SIZE).contains(&a) => Ok(0),
            _ if (c::CLINT_BASE..c::CLINT_BASE + CLINT_SIZE).contains(&a) => {
                if size != 4 {
                    return Err(Fault);
                }
                let mt = self.mtime(now);
                Ok(match a {
                    c::CLINT_BASE => u32::from(self.msip),
                    c::CLINT_MTIMECMP => self.mtimecmp as u32,
                    0x0200_4004 => (self.mtimecmp >> 32) as u32,
                    c::CLINT_MTIME => mt as u32,
                    0x0200_BFFC => (mt >> 32) as u32,
                    _ => 0,
                })
            }
            _ if (c::HOSTIF_BASE..PERIPH_END).contains(&a) => {
                if size != 4 || !a.is_multiple_of(4) {
                    return Err(Fault);
                }
                self.periph_load(a).ok_or(Fault)
            }
            _ if (c::LOG_RING_BASE..c::LOG_RING_BASE + c::LOG_RING_SIZE).contains(&a) => {
                let off = (a - c::LOG_RING_BASE) as usize;
                let mut v = 0u32;
                for i in 0..usize::from(size) {
                    let b = self.sh.log.ring.get(off + i).ok_or(Fault)?;
                    v |= u32::from(b.load(Ordering::Relaxed)) << (8 * i);
                }
                Ok(v)
            }
            _ if a >= c::CARD_MEM_BASE => {
                let r = self.sh.mem.range(a, u64::from(size)).ok_or(Fault)?;
                let m = self.sh.mem.data.lock().expect("card memory lock");
                let mut b = [0u8; 4];
                b[..usize::from(size)].copy_from_slice(&m[r]);
                Ok(u32::from_le_bytes(b))
            }
            _ => Err(Fault),
        }
    }

    fn store(&mut self, a: u32, size: u8, v: u32, now: u64) -> Result<(), Fault> {
        match a {
            _ if (c::UART_BASE..c::UART_BASE + UART_SIZE).contains(&a) => {
                if a == c::UART_BASE {
                    let b = v as u8;
                    self.sh.uart.lock().expect("uart lock").push(b);
                    if self.sh.cfg.uart_echo {
                        eprint!("{}", b as char);
                    }
                }
                Ok(())
            }
            _ if (c::TEST_BASE..c::TEST_BASE + TEST_SIZE).contains(&a) => {
                if a == c::TEST_BASE {
                    self.test_halt = match v & 0xFFFF {
                        0x5555 => Some(Halt::PowerOff),
                        0x7777 => Some(Halt::Reset),
                        0x3333 => Some(Halt::Fail(v >> 16)),
                        _ => None,
                    };
                }
                Ok(())
            }
            _ if (c::CLINT_BASE..c::CLINT_BASE + CLINT_SIZE).contains(&a) => {
                if size != 4 {
                    return Err(Fault);
                }
                let set = |r: u64, hi: bool| {
                    if hi {
                        (r & 0xFFFF_FFFF) | u64::from(v) << 32
                    } else {
                        (r & !0xFFFF_FFFF) | u64::from(v)
                    }
                };
                match a {
                    c::CLINT_BASE => self.msip = v & 1 != 0,
                    c::CLINT_MTIMECMP => self.mtimecmp = set(self.mtimecmp, false),
                    0x0200_4004 => self.mtimecmp = set(self.mtimecmp, true),
                    c::CLINT_MTIME | 0x0200_BFFC => {
                        let want = set(self.mtime(now), a != c::CLINT_MTIME);
                        self.mtime_off = want.wrapping_sub(self.mtime_base(now));
                    }
                    _ => {}
                }
                Ok(())
            }
            _ if (c::HOSTIF_BASE..PERIPH_END).contains(&a) => {
                if size != 4 || !a.is_multiple_of(4) {
                    return Err(Fault);
                }
                self.periph_store(a, v).ok_or(Fault)
            }
            _ if (c::LOG_RING_BASE..c::LOG_RING_BASE + c::LOG_RING_SIZE).contains(&a) => {
                let off = (a - c::LOG_RING_BASE) as usize;
                for i in 0..usize::from(size) {
                    let b = self.sh.log.ring.get(off + i).ok_or(Fault)?;
                    b.store((v >> (8 * i)) as u8, Ordering::Relaxed);
                }
                Ok(())
            }
            _ if a >= c::CARD_MEM_BASE => {
                let r = self.sh.mem.range(a, u64::from(size)).ok_or(Fault)?;
                let mut m = self.sh.mem.data.lock().expect("card memory lock");
                m[r].copy_from_slice(&v.to_le_bytes()[..usize::from(size)]);
                Ok(())
            }
            _ => Err(Fault),
        }
    }

    fn poll(&mut self, now: u64, mem: &mut Mem<'_>) -> Poll {
        let modeled = self.sh.modeled();
        let t = self.card_time(now);
        self.t = t;
        if !self.service.is_empty() {
            self.serve(mem);
        }
        let mut next = u64::MAX;
        self.stalled = false;
        if modeled {
            self.sh.card_t.store(t, Ordering::Release);
            let h = self.sh.cu_horizon.load(Ordering::Acquire);
            if t >= h {
                let cus = cu::deliver(&self.sh, t);
                self.stalled = cus.bound <= t;
                next = cus.bound.min(cus.due);
            } else {
                next = h;
            }
            let timer = self.timer_at();
            if timer > t {
                next = next.min(timer);
            }
        }
        let mut irq = 0;
        if self.sh.irq_pending.load(Ordering::Acquire) & self.irq_enable != 0 {
            irq |= IRQ_MEI;
        }
        if self.mtime(now) >= self.mtimecmp {
            irq |= IRQ_MTI;
        }
        if self.msip {
            irq |= IRQ_MSI;
        }
        // A waiting debugger access or reset ends the slice: the core thread serves it. So
        // does a CU's bound: the core thread waits for the host computation.
        let yield_now = self.sh.debug.pending() || self.sh.reset_pending() || self.stalled;
        Poll {
            irq,
            // In the core's time base; the hart runs no further than this between polls.
            next_event: if next == u64::MAX {
                u64::MAX
            } else {
                next.saturating_sub(self.extra).max(now.saturating_add(1))
            },
            halt: if yield_now {
                self.test_halt.or(Some(Halt::Yield))
            } else {
                self.test_halt
            },
        }
    }
}
