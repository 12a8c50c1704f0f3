//! Verify by checksum on the target, as OpenOCD's `verify_image` does: a 72-byte CRC-32
//! routine is written next to the image, the soft core runs it over each block and stops on
//! its `ebreak` (dcsr.ebreakm), and only the 32-bit result crosses JTAG.
//!
//! Why: probe-rs's Black Magic Probe driver clocks a read scan bit by bit (one TCP round trip
//! per bit, because the scan captures its last bit), so reading the image back costs ~7x the
//! download. A block whose CRC differs is then read back to name the first differing byte, so
//! a verify failure says exactly what the byte-by-byte verify would say.
//!
//! The hart's state is put back afterwards (registers, CSRs, the window's old bytes), so
//! `--reset none` leaves the core as the download found it.

use std::ops::Range;
use std::time::Duration;

use probe_rs::{Core, CoreStatus, MemoryInterface, RegisterId};

/// Integer register `n` in the Debug Module's abstract register numbers.
const fn x(n: u16) -> RegisterId {
    RegisterId(0x1000 + n)
}
const T0: u32 = 5;
const T1: u32 = 6;
const T2: u32 = 7;
const T3: u32 = 28;
const T4: u32 = 29;
const A0: u32 = 10;
const A1: u32 = 11;
const MSTATUS: RegisterId = RegisterId(0x300);
const MTVEC: RegisterId = RegisterId(0x305);
const MEPC: RegisterId = RegisterId(0x341);
const MCAUSE: RegisterId = RegisterId(0x342);
const DCSR: RegisterId = RegisterId(0x7b0);
const DCSR_EBREAKM: u32 = 1 << 15;
const MSTATUS_MIE: u32 = 1 << 3;
/// One block is a few hundred thousand instructions: milliseconds on the soft core.
const RUN_TIMEOUT: Duration = Duration::from_secs(5);

fn i_type(op: u32, rd: u32, f3: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}
fn r_type(rd: u32, f3: u32, rs1: u32, rs2: u32) -> u32 {
    (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | 0x33
}
fn b_type(f3: u32, rs1: u32, rs2: u32, off: i32) -> u32 {
    let o = off as u32;
    (((o >> 12) & 1) << 31)
        | (((o >> 5) & 0x3f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (f3 << 12)
        | (((o >> 1) & 0xf) << 8)
        | (((o >> 11) & 1) << 7)
        | 0x63
}
fn jal(rd: u32, off: i32) -> u32 {
    let o = off as u32;
    (((o >> 20) & 1) << 31)
        | (((o >> 1) & 0x3ff) << 21)
        | (((o >> 11) & 1) << 20)
        | (((o >> 12) & 0xff) << 12)
        | (rd << 7)
        | 0x6f
}
const EBREAK: u32 = 0x0010_0073;

/// CRC-32 (IEEE, reflected, as zlib) of `a1` bytes at `a0`, result in `a0`; RV32I only.
pub fn routine() -> Vec<u32> {
    let (addi, andi, xori, srli, lbu) = (
        |rd, rs1, imm| i_type(0x13, rd, 0, rs1, imm),
        |rd, rs1, imm| i_type(0x13, rd, 7, rs1, imm),
        |rd, rs1, imm| i_type(0x13, rd, 4, rs1, imm),
        |rd, rs1, sh| i_type(0x13, rd, 5, rs1, sh),
        |rd, rs1, imm| i_type(0x03, rd, 4, rs1, imm),
    );
    vec![
        addi(T0, 0, -1),                    // 0: crc = !0
        (0xEDB88 << 12) | (T3 << 7) | 0x37, // 1: lui t3, poly >> 12
        addi(T3, T3, 0x320),                // 2: t3 = 0xEDB88320
        b_type(0, A1, 0, 13 * 4),           // 3: bytes: beq a1, x0, done
        lbu(T1, A0, 0),                     // 4
        r_type(T0, 4, T0, T1),              // 5: crc ^= byte
        addi(T2, 0, 8),                     // 6
        andi(T4, T0, 1),                    // 7: bits:
        srli(T0, T0, 1),                    // 8
        b_type(0, T4, 0, 2 * 4),            // 9: beq t4, x0, skip
        r_type(T0, 4, T0, T3),              // 10: crc ^= poly
        addi(T2, T2, -1),                   // 11: skip:
        b_type(1, T2, 0, -5 * 4),           // 12: bne t2, x0, bits
        addi(A0, A0, 1),                    // 13
        addi(A1, A1, -1),                   // 14
        jal(0, -12 * 4),                    // 15: j bytes
        xori(A0, T0, -1),                   // 16: done: a0 = !crc
        EBREAK,                             // 17
    ]
}

/// The host's CRC-32 of the same bytes (zlib's, the one every firmware-image CRC uses).
pub use preba_protocol::crc::crc32;

/// A word-aligned window for the routine at the top of a RAM region that no segment (including
/// its zero-filled part) touches.
pub fn window(ram: &[Range<u64>], used: &[Range<u64>], len: u64) -> Option<u64> {
    ram.iter().find_map(|r| {
        let at = r.end.checked_sub(len)? & !3;
        let free = at >= r.start && used.iter().all(|u| u.end <= at || u.start >= at + len);
        free.then_some(at)
    })
}

/// What the routine found for one block.
pub enum Block {
    Crc(u32),
    /// The hart did not stop on the routine's ebreak (an exception, a stuck core).
    NoResult(String),
}

/// The hart's state the routine changes, restored by [`Runner::finish`].
pub struct Runner {
    base: u64,
    saved_regs: Vec<(RegisterId, u32)>,
    saved_window: Vec<u8>,
}

type E = probe_rs::Error;

impl Runner {
    /// Saves what the routine will change and installs it at `base` (the core is halted).
    pub fn install(core: &mut Core<'_>, base: u64) -> Result<Runner, E> {
        let code: Vec<u8> = routine().iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut saved_window = vec![0u8; code.len()];
        core.read(base, &mut saved_window)?;
        let pc = core.program_counter().id();
        let mut saved_regs = Vec::new();
        for id in [
            x(T0 as u16),
            x(T1 as u16),
            x(T2 as u16),
            x(T3 as u16),
            x(T4 as u16),
            x(A0 as u16),
            x(A1 as u16),
            pc,
            MSTATUS,
            MTVEC,
            MEPC,
            MCAUSE,
            DCSR,
        ] {
            let v: u32 = core.read_core_reg(id)?;
            saved_regs.push((id, v));
        }
        let get = |id| saved_regs.iter().find(|(r, _)| *r == id).map(|r| r.1);
        let (mstatus, dcsr) = (get(MSTATUS).unwrap_or(0), get(DCSR).unwrap_or(0));
        core.write(base, &code)?;
        // No interrupt may take the hart into the firmware's handler (whose code the download
        // just replaced), an exception stops on the ebreak, and the ebreak enters debug mode.
        let ebreak = base + 4 * (code.len() as u64 / 4 - 1);
        core.write_core_reg(MSTATUS, mstatus & !MSTATUS_MIE)?;
        core.write_core_reg(MTVEC, ebreak as u32)?;
        core.write_core_reg(DCSR, dcsr | DCSR_EBREAKM)?;
        Ok(Runner {
            base,
            saved_regs,
            saved_window,
        })
    }

    fn ebreak(&self) -> u64 {
        self.base + 4 * (routine().len() as u64 - 1)
    }

    /// Runs the routine over `len` bytes at `addr`.
    pub fn crc(&self, core: &mut Core<'_>, addr: u64, len: usize) -> Result<Block, E> {
        core.write_core_reg(x(A0 as u16), addr as u32)?;
        core.write_core_reg(x(A1 as u16), len as u32)?;
        let pc = core.program_counter().id();
        core.write_core_reg(pc, self.base as u32)?;
        core.run()?;
        if let Err(e) = core.wait_for_core_halted(RUN_TIMEOUT) {
            core.halt(RUN_TIMEOUT)?;
            return Ok(Block::NoResult(format!(
                "the checksum routine did not stop: {e}"
            )));
        }
        let stopped: u32 = core.read_core_reg(pc)?;
        if u64::from(stopped) != self.ebreak() {
            return Ok(Block::NoResult(format!(
                "the checksum routine stopped at {stopped:#010x}"
            )));
        }
        let status = core.status()?;
        if !matches!(status, CoreStatus::Halted(_)) {
            return Ok(Block::NoResult(format!("core {status:?}")));
        }
        let crc: u32 = core.read_core_reg(x(A0 as u16))?;
        // An exception lands on the same ebreak (mtvec): mcause tells them apart.
        let cause: u32 = core.read_core_reg(MCAUSE)?;
        let saved_cause = self
            .saved_regs
            .iter()
            .find(|(r, _)| *r == MCAUSE)
            .map_or(0, |r| r.1);
        if cause != saved_cause {
            core.write_core_reg(MCAUSE, saved_cause)?;
            return Ok(Block::NoResult(format!(
                "exception (mcause {cause:#x}) in the checksum routine"
            )));
        }
        Ok(Block::Crc(crc))
    }

    /// Puts back the window's bytes and every register the routine changed.
    pub fn finish(self, core: &mut Core<'_>) -> Result<(), E> {
        core.write(self.base, &self.saved_window)?;
        for (id, v) in self.saved_regs {
            core.write_core_reg(id, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_assembler() {
        // From GNU as for rv32i: the first instructions and the branch/jump forms.
        let r = routine();
        assert_eq!(r[0], 0xfff0_0293, "addi t0, zero, -1");
        assert_eq!(r[1], 0xedb8_8e37, "lui t3, 0xedb88");
        assert_eq!(r[2], 0x320e_0e13, "addi t3, t3, 800");
        assert_eq!(r[4], 0x0005_4303, "lbu t1, 0(a0)");
        assert_eq!(r[5], 0x0062_c2b3, "xor t0, t0, t1");
        assert_eq!(r[8], 0x0012_d293, "srli t0, t0, 1");
        assert_eq!(r[12], 0xfe03_96e3, "bne t2, zero, -20");
        assert_eq!(r[15], 0xfd1f_f06f, "j -48");
        assert_eq!(r[16], 0xfff2_c513, "xori a0, t0, -1");
        assert_eq!(r[17], EBREAK);
        assert_eq!(r.len() * 4, 72);
    }

    #[test]
    fn crc_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn window_avoids_segments() {
        let ram = [0x8000_0000..0x8002_0000, 0x8002_0000..0x8003_0000];
        assert_eq!(
            window(&ram, &[0x8000_0000..0x8000_a000], 72),
            Some(0x8001_ffb8)
        );
        assert_eq!(
            window(&ram, &[0x8000_0000..0x8002_0000], 72),
            Some(0x8002_ffb8)
        );
        assert_eq!(window(&ram, &[0x8000_0000..0x8003_0000], 72), None);
    }
}
