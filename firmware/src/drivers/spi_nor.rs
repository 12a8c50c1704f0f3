//! SPI NOR flash (25-series command set, 3-byte addresses, mode 0), the
//! firmware image store. Commands the card model must implement:
//!
//! | cmd | name | bytes after the command |
//! |---|---|---|
//! | 0x9F | RDID | reads 3: manufacturer, memory type, capacity (log2 bytes) |
//! | 0x05 | RDSR | reads status register 1: bit 0 WIP (busy), bit 1 WEL |
//! | 0x06 | WREN | sets WEL |
//! | 0x02 | PAGE PROGRAM | addr (3, MSB first) + 1..256 data; wraps within the 256-byte page; needs WEL; bits only go 1 -> 0 |
//! | 0x20 | SECTOR ERASE | addr (3): erases the 4 KiB sector to 0xFF; needs WEL |
//! | 0x03 | READ | addr (3) then any number of bytes, crossing pages |
//!
//! Program and erase clear WEL when done. The driver polls RDSR.WIP a bounded
//! number of times, each poll after a 10 us `Operation::DelayNs` inside the
//! same transaction (chip select asserted, no clocks), so it needs no
//! separate delay object.

use embedded_hal::spi::{Operation, SpiDevice};

pub const CMD_RDID: u8 = 0x9F;
pub const CMD_RDSR: u8 = 0x05;
pub const CMD_WREN: u8 = 0x06;
pub const CMD_PP: u8 = 0x02;
pub const CMD_SE: u8 = 0x20;
pub const CMD_READ: u8 = 0x03;
pub const PAGE: u32 = 256;
pub const SECTOR: u32 = 4096;
pub const SR_WIP: u8 = 1;
pub const SR_WEL: u8 = 2;
/// RDSR polls before an operation counts as stuck (with 10 us between: 2 s).
pub const MAX_POLLS: u32 = 200_000;
const POLL_DELAY_NS: u32 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashError<E> {
    Spi(E),
    /// WIP still set after [`MAX_POLLS`] polls.
    Timeout,
    /// WREN did not set WEL.
    NotWritable,
    /// Address range past the device (or past 24-bit addressing).
    OutOfRange,
    /// Read-back after programming differs.
    Verify,
}

pub struct SpiNor<S> {
    spi: S,
    /// Capacity in bytes from RDID (0 until [`SpiNor::probe`]).
    pub capacity: u32,
}

impl<S: SpiDevice> SpiNor<S> {
    pub fn new(spi: S) -> Self {
        SpiNor { spi, capacity: 0 }
    }

    pub fn jedec_id(&mut self) -> Result<[u8; 3], FlashError<S::Error>> {
        let mut id = [0u8; 3];
        self.spi
            .transaction(&mut [Operation::Write(&[CMD_RDID]), Operation::Read(&mut id)])
            .map_err(FlashError::Spi)?;
        Ok(id)
    }

    /// Reads the JEDEC id and sets the capacity (2^id[2] bytes, capped at 16 MiB).
    pub fn probe(&mut self) -> Result<[u8; 3], FlashError<S::Error>> {
        let id = self.jedec_id()?;
        self.capacity = if (10..=24).contains(&id[2]) {
            1 << id[2]
        } else {
            0
        };
        Ok(id)
    }

    pub fn status(&mut self) -> Result<u8, FlashError<S::Error>> {
        let mut sr = [0u8; 1];
        self.spi
            .transaction(&mut [Operation::Write(&[CMD_RDSR]), Operation::Read(&mut sr)])
            .map_err(FlashError::Spi)?;
        Ok(sr[0])
    }

    pub fn wait_ready(&mut self) -> Result<(), FlashError<S::Error>> {
        if self.status()? & SR_WIP == 0 {
            return Ok(());
        }
        for _ in 0..MAX_POLLS {
            let mut sr = [0u8; 1];
            self.spi
                .transaction(&mut [
                    Operation::DelayNs(POLL_DELAY_NS),
                    Operation::Write(&[CMD_RDSR]),
                    Operation::Read(&mut sr),
                ])
                .map_err(FlashError::Spi)?;
            if sr[0] & SR_WIP == 0 {
                return Ok(());
            }
        }
        Err(FlashError::Timeout)
    }

    fn write_enable(&mut self) -> Result<(), FlashError<S::Error>> {
        self.spi.write(&[CMD_WREN]).map_err(FlashError::Spi)?;
        if self.status()? & SR_WEL == 0 {
            return Err(FlashError::NotWritable);
        }
        Ok(())
    }

    fn check(&self, addr: u32, len: u32) -> Result<(), FlashError<S::Error>> {
        match addr.checked_add(len) {
            Some(end) if end <= self.capacity && end <= 1 << 24 => Ok(()),
            _ => Err(FlashError::OutOfRange),
        }
    }

    fn cmd_addr(cmd: u8, addr: u32) -> [u8; 4] {
        [cmd, (addr >> 16) as u8, (addr >> 8) as u8, addr as u8]
    }

    pub fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), FlashError<S::Error>> {
        self.check(addr, buf.len() as u32)?;
        self.spi
            .transaction(&mut [
                Operation::Write(&Self::cmd_addr(CMD_READ, addr)),
                Operation::Read(buf),
            ])
            .map_err(FlashError::Spi)
    }

    /// Erases the 4 KiB sector holding `addr`.
    pub fn erase_sector(&mut self, addr: u32) -> Result<(), FlashError<S::Error>> {
        let addr = addr & !(SECTOR - 1);
        self.check(addr, SECTOR)?;
        self.write_enable()?;
        self.spi
            .write(&Self::cmd_addr(CMD_SE, addr))
            .map_err(FlashError::Spi)?;
        self.wait_ready()
    }

    /// Programs within one page (the caller splits at page boundaries).
    pub fn program_page(&mut self, addr: u32, data: &[u8]) -> Result<(), FlashError<S::Error>> {
        if data.is_empty() {
            return Ok(());
        }
        if (addr % PAGE) as usize + data.len() > PAGE as usize {
            return Err(FlashError::OutOfRange);
        }
        self.check(addr, data.len() as u32)?;
        self.write_enable()?;
        self.spi
            .transaction(&mut [
                Operation::Write(&Self::cmd_addr(CMD_PP, addr)),
                Operation::Write(data),
            ])
            .map_err(FlashError::Spi)?;
        self.wait_ready()
    }

    /// Programs `data` at `addr` (already erased), page by page, and verifies it.
    pub fn program(&mut self, addr: u32, data: &[u8]) -> Result<(), FlashError<S::Error>> {
        self.check(addr, data.len() as u32)?;
        let mut off = 0usize;
        while off < data.len() {
            let a = addr + off as u32;
            let n = ((PAGE - a % PAGE) as usize).min(data.len() - off);
            self.program_page(a, &data[off..off + n])?;
            off += n;
        }
        let mut chunk = [0u8; 64];
        let mut off = 0usize;
        while off < data.len() {
            let n = chunk.len().min(data.len() - off);
            self.read(addr + off as u32, &mut chunk[..n])?;
            if chunk[..n] != data[off..off + n] {
                return Err(FlashError::Verify);
            }
            off += n;
        }
        Ok(())
    }

    pub fn release(self) -> S {
        self.spi
    }
}
