//! embedded-hal 1.0 implementations over the card's peripheral registers
//! (docs/card-spec.md: I2C_*, SPI_*, GPIO_*, CLINT mtime). Every wait polls a
//! status bit a bounded number of times: a wedged controller is an error,
//! never a hang.

use crate::Platform;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{self, OutputPin, StatefulOutputPin};
use embedded_hal::i2c::{self, I2c, NoAcknowledgeSource, Operation as I2cOp};
use embedded_hal::spi::{self, Operation as SpiOp, SpiDevice};
use preba_protocol::card;

/// Status polls before a bus operation counts as wedged.
pub const BUS_POLLS: u32 = 100_000;

/// Controller errors of the I2C and SPI controllers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// I2C_STATUS.NACK after the transfer.
    Nack,
    /// Busy past [`BUS_POLLS`] status reads.
    Timeout,
}

impl i2c::Error for BusError {
    fn kind(&self) -> i2c::ErrorKind {
        match self {
            BusError::Nack => i2c::ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown),
            BusError::Timeout => i2c::ErrorKind::Other,
        }
    }
}

impl spi::Error for BusError {
    fn kind(&self) -> spi::ErrorKind {
        spi::ErrorKind::Other
    }
}

fn wait_idle<P: Platform>(p: &mut P, status: u32) -> Result<u32, BusError> {
    for _ in 0..BUS_POLLS {
        let s = p.read32(status);
        if s & 1 == 0 {
            return Ok(s);
        }
    }
    Err(BusError::Timeout)
}

/// The I2C controller. Per transfer: queue the bytes to send in I2C_DATA, then
/// one I2C_CTRL write: bit 0 send them, bit 1 then read `(ctrl >> 8) & 0xff`
/// bytes (repeated start), bit 2 stop at the end. A write immediately followed
/// by a read in one transaction is one CTRL write (write + read + stop).
pub struct PlatI2c<'a, P>(pub &'a mut P);

impl<P: Platform> i2c::ErrorType for PlatI2c<'_, P> {
    type Error = BusError;
}

impl<P: Platform> PlatI2c<'_, P> {
    fn run(&mut self, ctrl: u32) -> Result<(), BusError> {
        self.0.write32(card::I2C_CTRL, ctrl);
        let s = wait_idle(self.0, card::I2C_STATUS)?;
        if s & 2 != 0 {
            return Err(BusError::Nack);
        }
        Ok(())
    }
    fn pop(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.0.read32(card::I2C_DATA) as u8;
        }
    }
}

impl<P: Platform> I2c for PlatI2c<'_, P> {
    fn transaction(&mut self, address: u8, ops: &mut [I2cOp<'_>]) -> Result<(), BusError> {
        self.0.write32(card::I2C_ADDR, address as u32 & 0x7f);
        let n = ops.len();
        let mut i = 0;
        while i < n {
            let last = |k: usize| if k + 1 == n { 4 } else { 0 };
            match &mut ops[i] {
                I2cOp::Write(w) => {
                    for &b in w.iter() {
                        self.0.write32(card::I2C_DATA, b as u32);
                    }
                    // Fold a following read of <= 255 bytes into the same CTRL write.
                    if let Some(I2cOp::Read(r)) = ops.get_mut(i + 1)
                        && !r.is_empty()
                        && r.len() <= 255
                    {
                        let len = r.len() as u32;
                        self.run(1 | 2 | (len << 8) | last(i + 1))?;
                        self.pop(r);
                        i += 2;
                        continue;
                    }
                    self.run(1 | last(i))?;
                }
                I2cOp::Read(r) => {
                    let total = r.len();
                    let mut done = 0;
                    while done < total {
                        let chunk = (total - done).min(255);
                        let stop = if done + chunk == total { last(i) } else { 0 };
                        self.run(2 | ((chunk as u32) << 8) | stop)?;
                        self.pop(&mut r[done..done + chunk]);
                        done += chunk;
                    }
                }
            }
            i += 1;
        }
        Ok(())
    }
}

/// The SPI controller as one device: SPI_CS bit 0 asserted for the whole
/// transaction; each SPI_DATA write clocks one byte out, and SPI_DATA read
/// afterwards returns the byte clocked in. Reads send 0x00.
pub struct PlatSpi<'a, P>(pub &'a mut P);

impl<P: Platform> spi::ErrorType for PlatSpi<'_, P> {
    type Error = BusError;
}

impl<P: Platform> PlatSpi<'_, P> {
    fn xfer(&mut self, out: u8) -> Result<u8, BusError> {
        self.0.write32(card::SPI_DATA, out as u32);
        wait_idle(self.0, card::SPI_STATUS)?;
        Ok(self.0.read32(card::SPI_DATA) as u8)
    }
    fn ops(&mut self, ops: &mut [SpiOp<'_, u8>]) -> Result<(), BusError> {
        for op in ops {
            match op {
                SpiOp::Read(r) => {
                    for b in r.iter_mut() {
                        *b = self.xfer(0)?;
                    }
                }
                SpiOp::Write(w) => {
                    for &b in w.iter() {
                        self.xfer(b)?;
                    }
                }
                SpiOp::Transfer(r, w) => {
                    let n = r.len().max(w.len());
                    for k in 0..n {
                        let v = self.xfer(w.get(k).copied().unwrap_or(0))?;
                        if let Some(d) = r.get_mut(k) {
                            *d = v;
                        }
                    }
                }
                SpiOp::TransferInPlace(b) => {
                    for x in b.iter_mut() {
                        *x = self.xfer(*x)?;
                    }
                }
                SpiOp::DelayNs(ns) => MtimeDelay(&mut *self.0).delay_ns(*ns),
            }
        }
        Ok(())
    }
}

impl<P: Platform> SpiDevice for PlatSpi<'_, P> {
    fn transaction(&mut self, ops: &mut [SpiOp<'_, u8>]) -> Result<(), BusError> {
        self.0.write32(card::SPI_CS, 1);
        let r = self.ops(ops);
        self.0.write32(card::SPI_CS, 0);
        r
    }
}

/// LED `n` (bit `n` of GPIO_OUT): LED0 heartbeat, LED1 error.
pub struct Led<'a, P> {
    pub p: &'a mut P,
    pub bit: u8,
}

/// GPIO never fails.
#[derive(Clone, Copy, Debug)]
pub enum NoError {}

impl digital::Error for NoError {
    fn kind(&self) -> digital::ErrorKind {
        digital::ErrorKind::Other
    }
}

impl<P: Platform> digital::ErrorType for Led<'_, P> {
    type Error = NoError;
}

impl<P: Platform> OutputPin for Led<'_, P> {
    fn set_low(&mut self) -> Result<(), NoError> {
        let v = self.p.read32(card::GPIO_OUT) & !(1 << self.bit);
        self.p.write32(card::GPIO_OUT, v);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), NoError> {
        let v = self.p.read32(card::GPIO_OUT) | (1 << self.bit);
        self.p.write32(card::GPIO_OUT, v);
        Ok(())
    }
}

impl<P: Platform> StatefulOutputPin for Led<'_, P> {
    fn is_set_high(&mut self) -> Result<bool, NoError> {
        Ok(self.p.read32(card::GPIO_OUT) & (1 << self.bit) != 0)
    }
    fn is_set_low(&mut self) -> Result<bool, NoError> {
        Ok(!self.is_set_high()?)
    }
}

pub const LED_HEARTBEAT: u8 = 0;
pub const LED_ERROR: u8 = 1;

/// DelayNs over mtime (100 ns per tick): sleeps with wfi until the deadline.
pub struct MtimeDelay<'a, P>(pub &'a mut P);

impl<P: Platform> DelayNs for MtimeDelay<'_, P> {
    fn delay_ns(&mut self, ns: u32) {
        let ns_per_tick = 1_000_000_000 / card::MTIME_HZ;
        let ticks = (ns as u64).div_ceil(ns_per_tick as u64);
        let deadline = self.0.now() + ticks;
        // Bounded: at most one wake-up per tick of the wait, and mtime only grows.
        for _ in 0..=ticks {
            if self.0.now() >= deadline {
                break;
            }
            self.0.wait_for_event(deadline);
        }
    }
}
