//! Board drivers: the INA226 and SPI NOR drivers against hand-written
//! embedded-hal mocks, and through the platform's I2C/SPI controllers.
mod common;

use common::Card;
use embedded_hal::i2c::{self, I2c, Operation as I2cOp};
use embedded_hal::spi::{self, Operation as SpiOp, SpiDevice};
use preba_firmware::drivers::ina226::{self, Ina226, Ina226Error};
use preba_firmware::drivers::spi_nor::{FlashError, SpiNor};
use preba_firmware::hal::{Led, MtimeDelay, PlatI2c, PlatSpi};
use preba_protocol::card;

/// An INA226 on an embedded-hal I2c bus, with a transaction log.
struct MockIna {
    regs: std::collections::HashMap<u8, u16>,
    ptr: u8,
    log: Vec<String>,
}

#[derive(Debug, PartialEq)]
struct Nack;
impl i2c::Error for Nack {
    fn kind(&self) -> i2c::ErrorKind {
        i2c::ErrorKind::NoAcknowledge(i2c::NoAcknowledgeSource::Address)
    }
}
impl i2c::ErrorType for MockIna {
    type Error = Nack;
}
impl I2c for MockIna {
    fn transaction(&mut self, addr: u8, ops: &mut [I2cOp<'_>]) -> Result<(), Nack> {
        if addr != 0x40 {
            return Err(Nack);
        }
        for op in ops {
            match op {
                I2cOp::Write(w) => {
                    self.log.push(format!("w {w:02x?}"));
                    self.ptr = w[0];
                    if w.len() == 3 {
                        self.regs.insert(w[0], u16::from_be_bytes([w[1], w[2]]));
                    }
                }
                I2cOp::Read(r) => {
                    let v = *self.regs.get(&self.ptr).ok_or(Nack)?;
                    r.copy_from_slice(&v.to_be_bytes()[..r.len()]);
                    self.log.push(format!("r {}", r.len()));
                }
            }
        }
        Ok(())
    }
}

fn mock_ina(man: u16, die: u16) -> MockIna {
    let mut regs = std::collections::HashMap::new();
    regs.insert(0xFE, man);
    regs.insert(0xFF, die);
    regs.insert(0x02, 9600); // 12.000 V
    regs.insert(0x03, 1000); // 25 W
    regs.insert(0x04, (-2000i16) as u16); // -2 A
    MockIna {
        regs,
        ptr: 0,
        log: Vec::new(),
    }
}

#[test]
fn ina226_init_and_read() {
    let mut m = Ina226::new(mock_ina(0x5449, 0x2260), 0x40);
    m.init().unwrap();
    let r = m.read().unwrap();
    assert_eq!(r.bus_mv, 12_000);
    assert_eq!(r.power_mw, 25_000);
    assert_eq!(r.current_ma, -2000);
    let bus = m.release();
    assert_eq!(bus.regs[&0x05], ina226::CALIBRATION);
    assert_eq!(&bus.log[..3], &["w [fe]", "r 2", "w [ff]"]);
    assert!(bus.log.contains(&"w [05, 0a, 00]".to_string()));
}

#[test]
fn ina226_wrong_device_and_nack() {
    let mut m = Ina226::new(mock_ina(0x1234, 0x2260), 0x40);
    assert_eq!(m.init(), Err(Ina226Error::WrongDevice(0x1234, 0x2260)));
    let mut m = Ina226::new(mock_ina(0x5449, 0x2260), 0x41);
    assert!(matches!(m.init(), Err(Ina226Error::Bus(_))));
}

#[test]
fn ina226_through_the_i2c_controller() {
    let mut card = Card::new(1, 0, 0);
    let mut m = Ina226::new(PlatI2c(&mut card), card::POWER_MONITOR_ADDR);
    m.init().unwrap();
    assert_eq!(m.power_mw().unwrap(), 25_000);
    assert_eq!(m.bus_mv().unwrap(), 12_000);
    let _ = m.release();
    assert_eq!(card.ina_cal, 2560);
    let mut m = Ina226::new(PlatI2c(&mut card), 0x41);
    assert!(matches!(
        m.init(),
        Err(Ina226Error::Bus(preba_firmware::hal::BusError::Nack))
    ));
    // Unknown register pointer NACKs.
    let mut m = Ina226::new(PlatI2c(&mut card), card::POWER_MONITOR_ADDR);
    assert!(m.read_reg(0x33).is_err());
}

/// A SPI NOR chip at the embedded-hal SpiDevice level.
struct MockFlash {
    mem: Vec<u8>,
    wel: bool,
    busy_polls: u32,
    ops: Vec<u8>,
}

#[derive(Debug, PartialEq)]
struct SpiErr;
impl spi::Error for SpiErr {
    fn kind(&self) -> spi::ErrorKind {
        spi::ErrorKind::Other
    }
}
impl spi::ErrorType for MockFlash {
    type Error = SpiErr;
}
impl SpiDevice for MockFlash {
    fn transaction(&mut self, ops: &mut [SpiOp<'_, u8>]) -> Result<(), SpiErr> {
        let mut cmd: Vec<u8> = Vec::new();
        for op in ops.iter_mut() {
            match op {
                SpiOp::Write(w) => cmd.extend_from_slice(w),
                SpiOp::Read(r) => match cmd[0] {
                    0x9F => r.copy_from_slice(&[0xEF, 0x40, 0x10][..r.len()]),
                    0x05 => {
                        let busy = if self.busy_polls > 0 {
                            self.busy_polls -= 1;
                            1
                        } else {
                            0
                        };
                        r[0] = busy | (self.wel as u8) << 1;
                    }
                    0x03 => {
                        let a = (cmd[1] as usize) << 16 | (cmd[2] as usize) << 8 | cmd[3] as usize;
                        r.copy_from_slice(&self.mem[a..a + r.len()]);
                    }
                    _ => return Err(SpiErr),
                },
                SpiOp::DelayNs(_) => {}
                _ => return Err(SpiErr),
            }
        }
        if let Some(&c) = cmd.first() {
            self.ops.push(c);
            match c {
                0x06 => self.wel = true,
                0x20 => {
                    assert!(self.wel, "erase without WREN");
                    let a = ((cmd[1] as usize) << 16 | (cmd[2] as usize) << 8) & !0xfff;
                    self.mem[a..a + 4096].fill(0xff);
                    self.wel = false;
                    self.busy_polls = 3;
                }
                0x02 => {
                    assert!(self.wel, "program without WREN");
                    let a = (cmd[1] as usize) << 16 | (cmd[2] as usize) << 8 | cmd[3] as usize;
                    assert!(
                        a % 256 + cmd.len() - 4 <= 256,
                        "page program crosses a page"
                    );
                    for (k, d) in cmd[4..].iter().enumerate() {
                        self.mem[a + k] &= d;
                    }
                    self.wel = false;
                    self.busy_polls = 1;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[test]
fn spi_nor_erase_program_read() {
    let mut f = SpiNor::new(MockFlash {
        mem: vec![0; 64 << 10],
        wel: false,
        busy_polls: 0,
        ops: Vec::new(),
    });
    assert_eq!(f.probe().unwrap(), [0xEF, 0x40, 0x10]);
    assert_eq!(f.capacity, 64 << 10);
    f.erase_sector(0x1234).unwrap();
    let data: Vec<u8> = (0..700u32).map(|i| (i * 13) as u8).collect();
    f.program(0x1000 + 200, &data).unwrap();
    let mut back = vec![0u8; 700];
    f.read(0x1000 + 200, &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(f.program(0xFFFF, &[1, 2]), Err(FlashError::OutOfRange));
    // Programming without an erase fails verification.
    assert_eq!(f.program(0x1000 + 200, &[0xFF; 4]), Err(FlashError::Verify));
    let bus = f.release();
    // 700 bytes from offset 200 in a page: 56 + 256 + 256 + 132, four page programs.
    assert_eq!(bus.ops.iter().filter(|&&c| c == 0x02).count(), 5);
}

#[test]
fn spi_nor_through_the_spi_controller() {
    let mut card = Card::new(1, 0, 0);
    let mut f = SpiNor::new(PlatSpi(&mut card));
    assert_eq!(f.probe().unwrap(), [0xEF, 0x40, 0x14]);
    assert_eq!(f.capacity, 1 << 20);
    f.erase_sector(0x2000).unwrap();
    f.program(0x2000, b"preba flash").unwrap();
    let mut b = [0u8; 11];
    f.read(0x2000, &mut b).unwrap();
    assert_eq!(&b, b"preba flash");
    let _ = f.release();
    assert_eq!(&card.flash[0x2000..0x200b], b"preba flash");
    assert!(!card.spi_cs, "chip select released");
}

#[test]
fn leds_and_delay() {
    use embedded_hal::delay::DelayNs;
    use embedded_hal::digital::{OutputPin, StatefulOutputPin};
    let mut card = Card::new(1, 0, 0);
    {
        let mut led = Led {
            p: &mut card,
            bit: 1,
        };
        led.set_high().unwrap();
        assert!(led.is_set_high().unwrap());
    }
    assert_eq!(card.reg(card::GPIO_OUT), 2);
    let t0 = card.now;
    MtimeDelay(&mut card).delay_us(250);
    assert!(card.now >= t0 + 2500);
}
