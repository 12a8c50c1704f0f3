//! A SPI NOR flash (Winbond W25Q-style command set, 3-byte addresses) behind the SPI controller.
//! It holds the boot record and the two firmware image slots (`preba_protocol::fwimage`); the
//! boot ROM ([`crate::boot`]) picks the image at every reset.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// JEDEC id answered to RDID (manufacturer 0xEF, memory type 0x40, capacity code).
pub const JEDEC_MANUFACTURER: u8 = 0xEF;
/// Page program size.
pub const PAGE: usize = 256;
/// Sector erase size.
pub const SECTOR: usize = 4096;

/// Commands.
pub mod cmd {
    /// Read JEDEC id: 3 bytes.
    pub const RDID: u8 = 0x9F;
    /// Read status register 1 (bit 0 WIP, bit 1 WEL), repeated.
    pub const RDSR: u8 = 0x05;
    /// Write enable.
    pub const WREN: u8 = 0x06;
    /// Write disable.
    pub const WRDI: u8 = 0x04;
    /// Page program: 3 address bytes, then up to 256 data bytes (wrapping inside the page).
    pub const PP: u8 = 0x02;
    /// 4 KiB sector erase: 3 address bytes.
    pub const SE: u8 = 0x20;
    /// 64 KiB block erase: 3 address bytes.
    pub const BE: u8 = 0xD8;
    /// Chip erase.
    pub const CE: u8 = 0xC7;
    /// Read: 3 address bytes, then data.
    pub const READ: u8 = 0x03;
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Cmd(u8),
    Addr { cmd: u8, addr: u32, got: u8 },
    Read { addr: u32 },
    Program { addr: u32, data: Vec<u8> },
    Id(u8),
    Status,
    Erase { cmd: u8, addr: u32 },
    Ignore,
}

pub use preba_protocol::crc::crc32;

/// The flash array and its command state machine; with a backing file, every program and
/// erase is written through to it (a board's flash survives power cycles).
#[derive(Debug)]
pub struct Flash {
    data: Vec<u8>,
    wel: bool,
    selected: bool,
    state: State,
    file: Option<(File, PathBuf)>,
    /// Page programs and erases performed (for tests).
    pub writes: u64,
}

impl Flash {
    /// An erased flash of `size` bytes (power of two, 64 KiB..16 MiB).
    pub fn new(size: usize) -> Self {
        let size = size.clamp(64 << 10, 16 << 20).next_power_of_two();
        Flash {
            data: vec![0xFF; size],
            wel: false,
            selected: false,
            state: State::Idle,
            file: None,
            writes: 0,
        }
    }

    /// A flash kept in `path`: its contents when the file exists (it must be exactly the
    /// flash's size), else an erased flash and a new file. The bool says whether it was created.
    pub fn open(path: &Path, size: usize) -> Result<(Flash, bool), Error> {
        let mut f = Flash::new(size);
        let io = |e: std::io::Error| Error::FlashFile(format!("{}: {e}", path.display()));
        let created = match std::fs::read(path) {
            Ok(bytes) if bytes.len() == f.data.len() => {
                f.data.copy_from_slice(&bytes);
                false
            }
            Ok(bytes) => {
                return Err(Error::FlashFile(format!(
                    "{}: {} bytes, but the flash is {} bytes (a file of another card?)",
                    path.display(),
                    bytes.len(),
                    f.data.len()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::write(path, &f.data).map_err(io)?;
                true
            }
            Err(e) => return Err(io(e)),
        };
        let file = OpenOptions::new().write(true).open(path).map_err(io)?;
        f.file = Some((file, path.to_path_buf()));
        Ok((f, created))
    }

    /// The array.
    pub fn contents(&self) -> &[u8] {
        &self.data
    }

    /// Writes `range` of the array through to the backing file. A failing file is logged,
    /// not fatal: the card keeps running on its in-memory flash.
    fn persist(&self, start: usize, end: usize) {
        if let Some((f, path)) = &self.file
            && let Err(e) = f.write_all_at(&self.data[start..end], start as u64)
        {
            log::error!("flash file {}: {e}", path.display());
        }
    }

    /// Programs the array directly (factory programming), erasing what it covers first.
    pub fn load(&mut self, offset: usize, bytes: &[u8]) {
        let end = (offset + bytes.len()).min(self.data.len());
        if offset < end {
            self.data[offset..end].copy_from_slice(&bytes[..end - offset]);
            self.persist(offset, end);
        }
    }

    /// Programs one word as NOR flash does (bits only go from 1 to 0), for the boot ROM's
    /// attempts and state words.
    pub fn program_word(&mut self, offset: usize, v: u32) {
        if let Some(w) = self.data.get_mut(offset..offset + 4) {
            for (b, n) in w.iter_mut().zip(v.to_le_bytes()) {
                *b &= n;
            }
            self.persist(offset, offset + 4);
        }
    }

    fn capacity_code(&self) -> u8 {
        self.data.len().trailing_zeros() as u8
    }

    fn mask(&self, a: u32) -> usize {
        a as usize & (self.data.len() - 1)
    }

    /// Chip select: `true` asserts (starts a command), `false` ends it (commits programs and
    /// erases).
    pub fn select(&mut self, on: bool) {
        if on == self.selected {
            return;
        }
        self.selected = on;
        if on {
            self.state = State::Idle;
            return;
        }
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Program { addr, data } if self.wel => {
                let page = addr as usize & !(PAGE - 1);
                let mut col = addr as usize & (PAGE - 1);
                for b in data {
                    let a = self.mask((page + col) as u32);
                    self.data[a] &= b;
                    col = (col + 1) % PAGE;
                }
                let page = self.mask(page as u32);
                self.persist(page, page + PAGE);
                self.wel = false;
                self.writes += 1;
            }
            State::Erase { cmd, addr } if self.wel => {
                let size = match cmd {
                    cmd::SE => SECTOR,
                    cmd::BE => 64 << 10,
                    _ => self.data.len(),
                };
                let start = self.mask(addr) & !(size - 1);
                let end = (start + size).min(self.data.len());
                self.data[start..end].fill(0xFF);
                self.persist(start, end);
                self.wel = false;
                self.writes += 1;
            }
            State::Cmd(cmd::WREN) => self.wel = true,
            State::Cmd(cmd::WRDI) => self.wel = false,
            State::Cmd(cmd::CE) if self.wel => {
                self.data.fill(0xFF);
                self.persist(0, self.data.len());
                self.wel = false;
                self.writes += 1;
            }
            _ => {}
        }
    }

    /// One byte out, one byte in (full duplex). Without chip select the flash ignores the bus
    /// and the controller reads 0xFF.
    pub fn transfer(&mut self, out: u8) -> u8 {
        if !self.selected {
            return 0xFF;
        }
        let (next, inb) = match std::mem::replace(&mut self.state, State::Ignore) {
            State::Idle => {
                let s = match out {
                    cmd::RDID => State::Id(0),
                    cmd::RDSR => State::Status,
                    cmd::READ | cmd::PP | cmd::SE | cmd::BE => State::Addr {
                        cmd: out,
                        addr: 0,
                        got: 0,
                    },
                    c => State::Cmd(c),
                };
                (s, 0xFF)
            }
            State::Id(i) => {
                let v = match i {
                    0 => JEDEC_MANUFACTURER,
                    1 => 0x40,
                    2 => self.capacity_code(),
                    _ => 0xFF,
                };
                (State::Id(i.saturating_add(1)), v)
            }
            State::Status => (State::Status, u8::from(self.wel) << 1),
            State::Addr { cmd, addr, got } => {
                let addr = addr << 8 | u32::from(out);
                if got < 2 {
                    (
                        State::Addr {
                            cmd,
                            addr,
                            got: got + 1,
                        },
                        0xFF,
                    )
                } else {
                    let s = match cmd {
                        cmd::READ => State::Read { addr },
                        cmd::PP => State::Program {
                            addr,
                            data: Vec::new(),
                        },
                        c => State::Erase { cmd: c, addr },
                    };
                    (s, 0xFF)
                }
            }
            State::Read { addr } => {
                let v = self.data[self.mask(addr)];
                (
                    State::Read {
                        addr: addr.wrapping_add(1),
                    },
                    v,
                )
            }
            State::Program { addr, mut data } => {
                if data.len() < PAGE {
                    data.push(out);
                } else {
                    // Past a page: the page buffer wraps; keep the last 256 bytes.
                    data.remove(0);
                    data.push(out);
                }
                (State::Program { addr, data }, 0xFF)
            }
            s @ (State::Cmd(_) | State::Erase { .. } | State::Ignore) => (s, 0xFF),
        };
        self.state = next;
        inb
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(f: &mut Flash, bytes: &[u8], read: usize) -> Vec<u8> {
        f.select(true);
        for &b in bytes {
            f.transfer(b);
        }
        let out = (0..read).map(|_| f.transfer(0)).collect();
        f.select(false);
        out
    }

    #[test]
    fn id_program_erase_read() {
        let mut f = Flash::new(16 << 20);
        assert_eq!(cmd(&mut f, &[cmd::RDID], 3), [0xEF, 0x40, 0x18]);
        // Program without WREN does nothing.
        cmd(&mut f, &[cmd::PP, 0, 0x10, 0, 1, 2, 3], 0);
        assert_eq!(cmd(&mut f, &[cmd::READ, 0, 0x10, 0], 3), [0xFF; 3]);
        cmd(&mut f, &[cmd::WREN], 0);
        assert_eq!(cmd(&mut f, &[cmd::RDSR], 2), [2, 2]);
        cmd(&mut f, &[cmd::PP, 0, 0x10, 0xFE, 1, 2, 3], 0); // wraps inside the page
        assert_eq!(cmd(&mut f, &[cmd::RDSR], 1), [0]);
        assert_eq!(cmd(&mut f, &[cmd::READ, 0, 0x10, 0xFE], 2), [1, 2]);
        assert_eq!(cmd(&mut f, &[cmd::READ, 0, 0x10, 0x00], 2), [3, 0xFF]);
        cmd(&mut f, &[cmd::WREN], 0);
        cmd(&mut f, &[cmd::SE, 0, 0x1F, 0xFF], 0);
        assert_eq!(cmd(&mut f, &[cmd::READ, 0, 0x10, 0xFE], 2), [0xFF; 2]);
        assert_eq!(f.writes, 2);
    }

    #[test]
    fn crc_and_file_persistence() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let dir = tempdir();
        let path = dir.join("flash.bin");
        let (mut f, created) = Flash::open(&path, 1 << 20).expect("create");
        assert!(created);
        cmd(&mut f, &[cmd::WREN], 0);
        cmd(&mut f, &[cmd::PP, 0, 0x20, 0x10, 9, 8, 7], 0);
        f.program_word(0x100, 0x1234_5678);
        drop(f);
        let (f, created) = Flash::open(&path, 1 << 20).expect("reopen");
        assert!(!created);
        assert_eq!(&f.contents()[0x2010..0x2013], &[9, 8, 7]);
        assert_eq!(&f.contents()[0x100..0x104], &0x1234_5678u32.to_le_bytes());
        let e = Flash::open(&path, 2 << 20).expect_err("size differs");
        assert!(e.to_string().contains("flash.bin"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "preba-flash-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }
}
