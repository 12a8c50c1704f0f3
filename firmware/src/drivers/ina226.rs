//! INA226-style power monitor on I2C (address `card::POWER_MONITOR_ADDR`, 0x40).
//!
//! Register semantics the card model must match (all 16-bit, big-endian on
//! the wire; a read is: write the 1-byte register pointer, repeated start,
//! read 2 bytes MSB first; a write is: pointer byte, MSB, LSB):
//!
//! | reg | name | meaning |
//! |---|---|---|
//! | 0x00 | CONFIG | RW, reset 0x4127; the driver does not change it |
//! | 0x01 | SHUNT_VOLTAGE | RO, i16, 2.5 uV/LSB (not used by the firmware) |
//! | 0x02 | BUS_VOLTAGE | RO, u16, 1.25 mV/LSB |
//! | 0x03 | POWER | RO, u16, power LSB = 25 x current LSB |
//! | 0x04 | CURRENT | RO, i16, current LSB set by CALIBRATION |
//! | 0x05 | CALIBRATION | RW; the firmware writes [`CALIBRATION`] = 2560 at init |
//! | 0xFE | MANUFACTURER_ID | RO, 0x5449 ("TI") |
//! | 0xFF | DIE_ID | RO, 0x2260 |
//!
//! With CALIBRATION = 0.00512 / (current_LSB x R_shunt) = 2560 for a 2 mOhm
//! shunt and a 1 mA current LSB, CURRENT counts milliamps and POWER counts
//! 25 mW units: a model reports `CURRENT = round(I / 1 mA)` and
//! `POWER = round(P / 25 mW)`, `BUS_VOLTAGE = round(V / 1.25 mV)` (or the
//! datasheet arithmetic from SHUNT_VOLTAGE and CALIBRATION, which gives the
//! same units). A real INA226 resets CALIBRATION to 0 (CURRENT and POWER read
//! 0 until it is written); the firmware writes 2560 at boot, so a model may
//! reset it to 0 or 2560. Unknown register pointers NACK.

use embedded_hal::i2c::I2c;

pub const REG_CONFIG: u8 = 0x00;
pub const REG_SHUNT: u8 = 0x01;
pub const REG_BUS: u8 = 0x02;
pub const REG_POWER: u8 = 0x03;
pub const REG_CURRENT: u8 = 0x04;
pub const REG_CALIBRATION: u8 = 0x05;
pub const REG_MANUFACTURER: u8 = 0xFE;
pub const REG_DIE: u8 = 0xFF;
pub const MANUFACTURER_ID: u16 = 0x5449;
pub const DIE_ID: u16 = 0x2260;
/// Current LSB in microamps.
pub const CURRENT_LSB_UA: u32 = 1_000;
/// Shunt resistance in micro-ohms.
pub const SHUNT_UOHM: u32 = 2_000;
/// 0.00512 / (1 mA x 2 mOhm).
pub const CALIBRATION: u16 = 2560;
/// Bus voltage LSB in microvolts.
pub const BUS_LSB_UV: u32 = 1_250;
/// Power LSB in microwatts (25 x current LSB in W).
pub const POWER_LSB_UW: u32 = 25 * CURRENT_LSB_UA;

/// Errors of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ina226Error<E> {
    Bus(E),
    /// Manufacturer or die id did not match: (manufacturer, die).
    WrongDevice(u16, u16),
}

/// One reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub bus_mv: u32,
    pub current_ma: i32,
    pub power_mw: u32,
}

pub struct Ina226<I> {
    i2c: I,
    addr: u8,
}

impl<I: I2c> Ina226<I> {
    pub fn new(i2c: I, addr: u8) -> Self {
        Ina226 { i2c, addr }
    }

    pub fn release(self) -> I {
        self.i2c
    }

    pub fn read_reg(&mut self, reg: u8) -> Result<u16, Ina226Error<I::Error>> {
        let mut b = [0u8; 2];
        self.i2c
            .write_read(self.addr, &[reg], &mut b)
            .map_err(Ina226Error::Bus)?;
        Ok(u16::from_be_bytes(b))
    }

    pub fn write_reg(&mut self, reg: u8, v: u16) -> Result<(), Ina226Error<I::Error>> {
        let [hi, lo] = v.to_be_bytes();
        self.i2c
            .write(self.addr, &[reg, hi, lo])
            .map_err(Ina226Error::Bus)
    }

    /// Checks the ids and writes the calibration register.
    pub fn init(&mut self) -> Result<(), Ina226Error<I::Error>> {
        let m = self.read_reg(REG_MANUFACTURER)?;
        let d = self.read_reg(REG_DIE)?;
        if m != MANUFACTURER_ID || d != DIE_ID {
            return Err(Ina226Error::WrongDevice(m, d));
        }
        self.write_reg(REG_CALIBRATION, CALIBRATION)
    }

    pub fn bus_mv(&mut self) -> Result<u32, Ina226Error<I::Error>> {
        Ok(self.read_reg(REG_BUS)? as u32 * BUS_LSB_UV / 1000)
    }

    pub fn current_ma(&mut self) -> Result<i32, Ina226Error<I::Error>> {
        Ok(self.read_reg(REG_CURRENT)? as i16 as i32 * CURRENT_LSB_UA as i32 / 1000)
    }

    pub fn power_mw(&mut self) -> Result<u32, Ina226Error<I::Error>> {
        Ok(self.read_reg(REG_POWER)? as u32 * POWER_LSB_UW / 1000)
    }

    pub fn read(&mut self) -> Result<Reading, Ina226Error<I::Error>> {
        Ok(Reading {
            bus_mv: self.bus_mv()?,
            current_ma: self.current_ma()?,
            power_mw: self.power_mw()?,
        })
    }
}
