//! A test platform compatible with the parts of QEMU `virt` the test programs use, so the same
//! ELF runs under `qemu-system-riscv32 -M virt -bios none` and on this core:
//!
//! | address | device |
//! |---|---|
//! | `0x0010_0000` | SiFive test finisher: write `0x5555` pass, `0x7777` reset, `(code << 16) \| 0x3333` fail |
//! | `0x0200_0000` | CLINT: `msip` (+0), `mtimecmp` (+0x4000), `mtime` (+0xBFF8) |
//! | `0x1000_0000` | 16550 UART: THR (+0) prints a byte, LSR (+5) reads `0x60` |
//!
//! `mtime` counts `now / time_divisor` (the core's time base divided by
//! [`Config::time_divisor`](crate::Config::time_divisor)).

use crate::bus::{Bus, Fault, Halt, IRQ_MSI, IRQ_MTI, Poll};
use crate::cpu::{Config, Cpu, Exit, Mem};
use crate::error::Error;

/// SiFive test finisher base.
pub const TEST_BASE: u32 = 0x0010_0000;
/// CLINT base.
pub const CLINT_BASE: u32 = 0x0200_0000;
/// UART base.
pub const UART_BASE: u32 = 0x1000_0000;

/// The `virt`-like bus: UART, test finisher, CLINT.
#[derive(Clone, Debug)]
pub struct VirtBus {
    /// Bytes written to the UART.
    pub uart: Vec<u8>,
    /// Also copy UART bytes to stdout.
    pub echo: bool,
    time_divisor: u64,
    mtime_off: u64,
    mtimecmp: u64,
    msip: bool,
    halt: Option<Halt>,
}

impl VirtBus {
    /// A bus whose `mtime` ticks every `time_divisor` cycles.
    pub fn new(time_divisor: u64) -> Self {
        VirtBus {
            uart: Vec::new(),
            echo: false,
            time_divisor: time_divisor.max(1),
            mtime_off: 0,
            // As QEMU's ACLINT: mtimecmp resets to 0, so MTIP is pending until it is written.
            mtimecmp: 0,
            msip: false,
            halt: None,
        }
    }

    fn mtime(&self, now: u64) -> u64 {
        (now / self.time_divisor).wrapping_add(self.mtime_off)
    }

    fn clint_reg(&self, off: u32, now: u64) -> Option<u64> {
        Some(match off & !3 {
            0 => u64::from(self.msip),
            0x4000 | 0x4004 => self.mtimecmp,
            0xBFF8 | 0xBFFC => self.mtime(now),
            _ => return None,
        })
    }
}

fn sub_bytes(reg: u64, off: u32, size: u8) -> u32 {
    let shift = (off & 7) * 8;
    let v = reg >> shift;
    match size {
        1 => v as u32 & 0xff,
        2 => v as u32 & 0xffff,
        _ => v as u32,
    }
}

fn merge(reg: u64, off: u32, size: u8, value: u32) -> u64 {
    let shift = (off & 7) * 8;
    let mask: u64 = match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    };
    (reg & !(mask << shift)) | ((u64::from(value) & mask) << shift)
}

impl Bus for VirtBus {
    fn load(&mut self, addr: u32, size: u8, now: u64) -> Result<u32, Fault> {
        match addr {
            TEST_BASE..0x0010_1000 => Ok(0),
            CLINT_BASE..0x0201_0000 => {
                let off = addr - CLINT_BASE;
                let reg = self.clint_reg(off & !7, now).ok_or(Fault)?;
                Ok(sub_bytes(reg, off, size))
            }
            UART_BASE..0x1000_0100 => Ok(match addr - UART_BASE {
                5 => 0x60,
                _ => 0,
            }),
            _ => Err(Fault),
        }
    }

    fn store(&mut self, addr: u32, size: u8, value: u32, now: u64) -> Result<(), Fault> {
        match addr {
            TEST_BASE..0x0010_1000 => {
                if addr == TEST_BASE && size == 4 {
                    self.halt = match value & 0xffff {
                        0x5555 => Some(Halt::PowerOff),
                        0x7777 => Some(Halt::Reset),
                        0x3333 => Some(Halt::Fail(value >> 16)),
                        _ => self.halt,
                    };
                }
                Ok(())
            }
            CLINT_BASE..0x0201_0000 => {
                let off = addr - CLINT_BASE;
                match off & !7 {
                    0 if off < 4 => self.msip = merge(0, off, size, value) & 1 != 0,
                    0 => {}
                    0x4000 => self.mtimecmp = merge(self.mtimecmp, off, size, value),
                    0xBFF8 => {
                        let t = merge(self.mtime(now), off, size, value);
                        self.mtime_off = t.wrapping_sub(now / self.time_divisor);
                    }
                    _ => return Err(Fault),
                }
                Ok(())
            }
            UART_BASE..0x1000_0100 => {
                if addr == UART_BASE {
                    let b = value as u8;
                    self.uart.push(b);
                    if self.echo {
                        use std::io::Write;
                        let _ = std::io::stdout().write_all(&[b]);
                    }
                }
                Ok(())
            }
            _ => Err(Fault),
        }
    }

    fn poll(&mut self, now: u64, _mem: &mut Mem<'_>) -> Poll {
        let mtime = self.mtime(now);
        let mut irq = 0;
        if self.msip {
            irq |= IRQ_MSI;
        }
        let next_event = if mtime >= self.mtimecmp {
            irq |= IRQ_MTI;
            u64::MAX
        } else {
            // The first cycle at which mtime reaches mtimecmp.
            let ticks = self.mtimecmp.wrapping_sub(self.mtime_off);
            // mtime_off may make the target tick lie before the current one: poll soon.
            ticks.saturating_mul(self.time_divisor).max(now + 1)
        };
        Poll {
            irq,
            next_event,
            halt: self.halt.take(),
        }
    }
}

/// The result of [`run_elf`].
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Why the run stopped.
    pub exit: Exit,
    /// UART output.
    pub uart: Vec<u8>,
    /// Instructions retired.
    pub retired: u64,
}

/// Loads `elf` into a core with the given RAM layout and a [`VirtBus`], runs it for at most
/// `max_instructions`, and returns what it printed.
pub fn run_elf(config: Config, elf: &[u8], max_instructions: u64) -> Result<RunResult, Error> {
    let bus = VirtBus::new(config.time_divisor);
    let mut cpu = Cpu::new(config, bus)?;
    cpu.load_elf(elf)?;
    let exit = cpu.run(max_instructions);
    let retired = cpu.retired();
    Ok(RunResult {
        exit,
        uart: cpu.into_bus().uart,
        retired,
    })
}

/// The core as the QEMU oracle sees it: IMEM and DMEM as on the card but both executable (QEMU
/// does not forbid it), and QEMU's `-icount` instruction counting.
pub fn virt_config() -> Config {
    let mut c = Config {
        qemu_icount_compat: true,
        ..Config::default()
    };
    for r in &mut c.ram {
        r.exec = true;
    }
    c
}
