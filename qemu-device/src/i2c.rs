//! The I2C controller and the INA226-style board power monitor at address 0x40.

use preba_protocol::card::POWER_MONITOR_ADDR;

/// INA226 registers.
pub mod reg {
    /// Configuration (reset 0x4127).
    pub const CONFIG: u8 = 0x00;
    /// Shunt voltage, 2.5 uV/LSB (signed).
    pub const SHUNT: u8 = 0x01;
    /// Bus voltage, 1.25 mV/LSB.
    pub const BUS: u8 = 0x02;
    /// Power, 25 x current LSB per bit.
    pub const POWER: u8 = 0x03;
    /// Current, current LSB per bit (signed).
    pub const CURRENT: u8 = 0x04;
    /// Calibration.
    pub const CALIBRATION: u8 = 0x05;
    /// Mask/enable.
    pub const MASK: u8 = 0x06;
    /// Alert limit.
    pub const ALERT: u8 = 0x07;
    /// Manufacturer id (0x5449, "TI").
    pub const MANUFACTURER: u8 = 0xFE;
    /// Die id (0x2260).
    pub const DIE: u8 = 0xFF;
}

/// Shunt resistance of the board, ohms.
pub const SHUNT_OHMS: f64 = 0.002;
/// Calibration at reset: 0.00512 / (1 mA * 2 mOhm) = 2560, so current reads 1 mA/LSB and power
/// 25 mW/LSB without a driver having to program it (a real INA226 resets to 0).
pub const DEFAULT_CAL: u16 = 2560;

/// The power monitor's register file; readings come from a (volts, amps) sample.
#[derive(Clone, Debug)]
pub struct Ina226 {
    config: u16,
    cal: u16,
    mask: u16,
    alert: u16,
    pointer: u8,
}

impl Default for Ina226 {
    fn default() -> Self {
        Ina226 {
            config: 0x4127,
            cal: DEFAULT_CAL,
            mask: 0,
            alert: 0,
            pointer: 0,
        }
    }
}

impl Ina226 {
    /// Register value given the board's bus voltage and current.
    pub fn read(&self, r: u8, volts: f64, amps: f64) -> Option<u16> {
        let shunt = (amps * SHUNT_OHMS / 2.5e-6)
            .round()
            .clamp(-32768.0, 32767.0) as i16;
        let bus = (volts / 1.25e-3).round().clamp(0.0, 32767.0) as u16;
        // Datasheet arithmetic: current = shunt * cal / 2048; power = current * bus / 20000.
        let current = (i64::from(shunt) * i64::from(self.cal) / 2048).clamp(-32768, 32767);
        let power = (current.unsigned_abs() * u64::from(bus) / 20000).min(0xFFFF);
        Some(match r {
            reg::CONFIG => self.config,
            reg::SHUNT => shunt as u16,
            reg::BUS => bus,
            reg::POWER => power as u16,
            reg::CURRENT => current as i16 as u16,
            reg::CALIBRATION => self.cal,
            reg::MASK => self.mask,
            reg::ALERT => self.alert,
            reg::MANUFACTURER => 0x5449,
            reg::DIE => 0x2260,
            _ => return None,
        })
    }

    fn write(&mut self, r: u8, v: u16) -> bool {
        match r {
            reg::CONFIG => {
                if v & 0x8000 != 0 {
                    *self = Ina226::default();
                } else {
                    self.config = v;
                }
            }
            reg::CALIBRATION => self.cal = v & 0x7FFF,
            reg::MASK => self.mask = v,
            reg::ALERT => self.alert = v,
            _ => return false,
        }
        true
    }
}

/// The controller: byte FIFOs, a target address, a status register.
#[derive(Clone, Debug, Default)]
pub struct I2c {
    /// Target address (7-bit).
    pub addr: u32,
    tx: Vec<u8>,
    rx: std::collections::VecDeque<u8>,
    nack: bool,
    monitor: Ina226,
}

impl I2c {
    /// Queues a byte to send.
    pub fn push(&mut self, b: u8) {
        if self.tx.len() < 64 {
            self.tx.push(b);
        }
    }

    /// Pops a received byte (0 when empty).
    pub fn pop(&mut self) -> u8 {
        self.rx.pop_front().unwrap_or(0)
    }

    /// STATUS: bit 0 busy (never: transfers complete at once), bit 1 NACK.
    pub fn status(&self) -> u32 {
        u32::from(self.nack) << 1
    }

    /// CTRL: bit 0 write the queued bytes, bit 1 then read `(ctrl >> 8) & 0xff` bytes, bit 2
    /// stop. `board` gives the (volts, amps) the monitor measures now.
    pub fn ctrl(&mut self, ctrl: u32, board: impl FnOnce() -> (f64, f64)) {
        self.nack = false;
        let tx = std::mem::take(&mut self.tx);
        if self.addr & 0x7F != u32::from(POWER_MONITOR_ADDR) {
            self.nack = ctrl & 3 != 0;
            return;
        }
        if ctrl & 1 != 0 && !tx.is_empty() {
            self.monitor.pointer = tx[0];
            if tx.len() >= 3 {
                let v = u16::from_be_bytes([tx[1], tx[2]]);
                if !self.monitor.write(tx[0], v) {
                    self.nack = true;
                }
            }
        }
        if ctrl & 2 != 0 {
            let n = (ctrl >> 8) & 0xFF;
            let (v, a) = board();
            match self.monitor.read(self.monitor.pointer, v, a) {
                Some(val) => {
                    let be = val.to_be_bytes();
                    for i in 0..n as usize {
                        self.rx.push_back(be[i % 2]);
                    }
                }
                None => self.nack = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_reg(i: &mut I2c, r: u8, v: f64, a: f64) -> u16 {
        i.push(r);
        i.ctrl(1 | 2 | 4 | (2 << 8), || (v, a));
        u16::from_be_bytes([i.pop(), i.pop()])
    }

    #[test]
    fn ina226_readings() {
        let mut i = I2c {
            addr: 0x40,
            ..I2c::default()
        };
        assert_eq!(read_reg(&mut i, reg::MANUFACTURER, 12.0, 2.0), 0x5449);
        assert_eq!(read_reg(&mut i, reg::DIE, 12.0, 2.0), 0x2260);
        assert_eq!(read_reg(&mut i, reg::BUS, 12.0, 2.0), 9600);
        assert_eq!(read_reg(&mut i, reg::CURRENT, 12.0, 2.0), 2000);
        assert_eq!(read_reg(&mut i, reg::POWER, 12.0, 2.0), 960); // 24 W / 25 mW
        assert_eq!(i.status(), 0);
        i.addr = 0x41;
        read_reg(&mut i, reg::BUS, 12.0, 2.0);
        assert_eq!(i.status(), 2);
    }
}
