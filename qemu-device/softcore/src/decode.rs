//! Instruction decoding: RV32IMAC + Zicsr (+ `fence.i`, `mret`, `wfi`) into [`Insn`].
//!
//! Both the 32-bit and the 16-bit (C) encodings decode into the same [`Insn`] form; the
//! interpreter caches these per instruction address. Decoding is total: every word decodes,
//! unknown or reserved encodings to [`Op::Illegal`] carrying the raw bits (for `mtval`).
//!
//! Writes to `x0` are redirected at decode time to a sink register ([`SINK`]), so the
//! interpreter never has to test for `rd == 0`.

/// The register index that absorbs writes to `x0`.
pub const SINK: u8 = 32;

/// The operation of a decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Op {
    Lui,
    Auipc,
    Jal,
    Jalr,
    Beq,
    Bne,
    Blt,
    Bge,
    Bltu,
    Bgeu,
    Lb,
    Lh,
    Lw,
    Lbu,
    Lhu,
    Sb,
    Sh,
    Sw,
    Addi,
    Slti,
    Sltiu,
    Xori,
    Ori,
    Andi,
    Slli,
    Srli,
    Srai,
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    LrW,
    ScW,
    AmoSwapW,
    AmoAddW,
    AmoXorW,
    AmoAndW,
    AmoOrW,
    AmoMinW,
    AmoMaxW,
    AmoMinuW,
    AmoMaxuW,
    Fence,
    FenceI,
    Ecall,
    Ebreak,
    Mret,
    Wfi,
    /// `imm` holds the CSR address, `rs1` the source register.
    Csrrw,
    Csrrs,
    Csrrc,
    /// `imm` holds the CSR address, `rs1` the 5-bit immediate.
    Csrrwi,
    Csrrsi,
    Csrrci,
    /// An illegal or reserved encoding; `imm` holds the raw instruction bits.
    Illegal,
    /// Decode-cache marker: not decoded yet (never produced by [`decode`]).
    Undecoded,
    /// Interpreter marker: the fetch faulted (never produced by [`decode`]).
    FetchFault,
}

/// One decoded instruction: 8 bytes, so a decode-cache entry loads in one go.
///
/// The destination is [`SINK`] when the instruction names `x0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C, align(8))]
pub struct Insn {
    pub(crate) op: Op,
    /// Destination register (0..=31, or [`SINK`]) in bits 0..6; bit 7 set for 16-bit encodings.
    pub(crate) rd: u8,
    pub(crate) rs1: u8,
    pub(crate) rs2: u8,
    pub(crate) imm: i32,
}

const COMPRESSED: u8 = 0x80;

impl Insn {
    /// The decode-cache "empty" value.
    pub const UNDECODED: Insn = Insn {
        op: Op::Undecoded,
        rd: 0,
        rs1: 0,
        rs2: 0,
        imm: 0,
    };

    pub(crate) const FETCH_FAULT: Insn = Insn {
        op: Op::FetchFault,
        rd: 0,
        rs1: 0,
        rs2: 0,
        imm: 0,
    };

    /// The operation.
    pub fn op(&self) -> Op {
        self.op
    }

    /// Destination register (1..=31, or [`SINK`] for `x0`).
    pub fn rd(&self) -> u8 {
        self.rd & 63
    }

    /// First source register, or the 5-bit CSR immediate.
    pub fn rs1(&self) -> u8 {
        self.rs1
    }

    /// Second source register.
    pub fn rs2(&self) -> u8 {
        self.rs2
    }

    /// Immediate (sign-extended where the ISA says so), shift amount, CSR address, or the raw
    /// bits of an illegal instruction.
    pub fn imm(&self) -> i32 {
        self.imm
    }

    /// Encoded length in bytes: 2 or 4.
    #[inline(always)]
    pub fn byte_len(&self) -> u32 {
        4 - u32::from(self.rd >> 6 & 2)
    }

    fn new(op: Op, rd: u32, rs1: u32, rs2: u32, imm: i32, len: u8) -> Insn {
        let rd = (rd & 31) as u8;
        let rd = if rd == 0 { SINK } else { rd };
        Insn {
            op,
            rd: if len == 2 { rd | COMPRESSED } else { rd },
            rs1: (rs1 & 31) as u8,
            rs2: (rs2 & 31) as u8,
            imm,
        }
    }

    fn illegal(bits: u32, len: u8) -> Insn {
        Insn::new(Op::Illegal, 0, 0, 0, bits as i32, len)
    }
}

/// Length in bytes of the instruction whose low 16 bits are `low`.
pub fn insn_len(low: u16) -> u8 {
    if low & 3 == 3 { 4 } else { 2 }
}

/// Decodes one instruction. `word`'s low 16 bits are the first parcel; when they end in `0b11`
/// the whole word is a 32-bit instruction, otherwise only the low 16 bits are used.
pub fn decode(word: u32) -> Insn {
    if word & 3 == 3 {
        decode32(word)
    } else {
        decode16(word as u16)
    }
}

fn bits(w: u32, hi: u32, lo: u32) -> u32 {
    (w >> lo) & ((1u32 << (hi - lo + 1)) - 1)
}

fn sext(v: u32, bits: u32) -> i32 {
    let s = 32 - bits;
    ((v << s) as i32) >> s
}

/// Decodes a 32-bit instruction (the low two bits must be `0b11`).
pub fn decode32(w: u32) -> Insn {
    use Op::*;
    let rd = bits(w, 11, 7);
    let rs1 = bits(w, 19, 15);
    let rs2 = bits(w, 24, 20);
    let f3 = bits(w, 14, 12);
    let f7 = bits(w, 31, 25);
    let i_imm = (w as i32) >> 20;
    let s_imm = sext((bits(w, 31, 25) << 5) | bits(w, 11, 7), 12);
    let b_imm = sext(
        (bits(w, 31, 31) << 12)
            | (bits(w, 7, 7) << 11)
            | (bits(w, 30, 25) << 5)
            | (bits(w, 11, 8) << 1),
        13,
    );
    let u_imm = (w & 0xffff_f000) as i32;
    let j_imm = sext(
        (bits(w, 31, 31) << 20)
            | (bits(w, 19, 12) << 12)
            | (bits(w, 20, 20) << 11)
            | (bits(w, 30, 21) << 1),
        21,
    );
    let ill = Insn::illegal(w, 4);
    let mk = |op, imm| Insn::new(op, rd, rs1, rs2, imm, 4);
    match w & 0x7f {
        0x37 => mk(Lui, u_imm),
        0x17 => mk(Auipc, u_imm),
        0x6f => mk(Jal, j_imm),
        0x67 if f3 == 0 => mk(Jalr, i_imm),
        0x63 => {
            let op = match f3 {
                0 => Beq,
                1 => Bne,
                4 => Blt,
                5 => Bge,
                6 => Bltu,
                7 => Bgeu,
                _ => return ill,
            };
            mk(op, b_imm)
        }
        0x03 => {
            let op = match f3 {
                0 => Lb,
                1 => Lh,
                2 => Lw,
                4 => Lbu,
                5 => Lhu,
                _ => return ill,
            };
            mk(op, i_imm)
        }
        0x23 => {
            let op = match f3 {
                0 => Sb,
                1 => Sh,
                2 => Sw,
                _ => return ill,
            };
            mk(op, s_imm)
        }
        0x13 => {
            let op = match f3 {
                0 => Addi,
                2 => Slti,
                3 => Sltiu,
                4 => Xori,
                6 => Ori,
                7 => Andi,
                1 if f7 == 0 => Slli,
                5 if f7 == 0 => Srli,
                5 if f7 == 0x20 => Srai,
                _ => return ill,
            };
            let imm = if matches!(op, Slli | Srli | Srai) {
                rs2 as i32
            } else {
                i_imm
            };
            mk(op, imm)
        }
        0x33 => {
            let op = match (f7, f3) {
                (0, 0) => Add,
                (0x20, 0) => Sub,
                (0, 1) => Sll,
                (0, 2) => Slt,
                (0, 3) => Sltu,
                (0, 4) => Xor,
                (0, 5) => Srl,
                (0x20, 5) => Sra,
                (0, 6) => Or,
                (0, 7) => And,
                (1, 0) => Mul,
                (1, 1) => Mulh,
                (1, 2) => Mulhsu,
                (1, 3) => Mulhu,
                (1, 4) => Div,
                (1, 5) => Divu,
                (1, 6) => Rem,
                (1, 7) => Remu,
                _ => return ill,
            };
            mk(op, 0)
        }
        0x2f if f3 == 2 => {
            let op = match bits(w, 31, 27) {
                0b00010 if rs2 == 0 => LrW,
                0b00011 => ScW,
                0b00001 => AmoSwapW,
                0b00000 => AmoAddW,
                0b00100 => AmoXorW,
                0b01100 => AmoAndW,
                0b01000 => AmoOrW,
                0b10000 => AmoMinW,
                0b10100 => AmoMaxW,
                0b11000 => AmoMinuW,
                0b11100 => AmoMaxuW,
                _ => return ill,
            };
            mk(op, 0)
        }
        // FENCE (any fm/pred/succ, including FENCE.TSO and PAUSE) is a no-op on one hart.
        0x0f if f3 == 0 => Insn::new(Fence, 0, 0, 0, 0, 4),
        0x0f if f3 == 1 => Insn::new(FenceI, 0, 0, 0, 0, 4),
        0x73 => match f3 {
            0 => match w {
                0x0000_0073 => Insn::new(Ecall, 0, 0, 0, 0, 4),
                0x0010_0073 => Insn::new(Ebreak, 0, 0, 0, 0, 4),
                0x3020_0073 => Insn::new(Mret, 0, 0, 0, 0, 4),
                0x1050_0073 => Insn::new(Wfi, 0, 0, 0, 0, 4),
                _ => ill,
            },
            4 => ill,
            _ => {
                let op = match f3 {
                    1 => Csrrw,
                    2 => Csrrs,
                    3 => Csrrc,
                    5 => Csrrwi,
                    6 => Csrrsi,
                    _ => Csrrci,
                };
                mk(op, bits(w, 31, 20) as i32)
            }
        },
        _ => ill,
    }
}

/// Decodes a 16-bit (C extension) instruction.
pub fn decode16(h: u16) -> Insn {
    use Op::*;
    let w = u32::from(h);
    let ill = Insn::illegal(w, 2);
    let mk = |op, rd, rs1, rs2, imm| Insn::new(op, rd, rs1, rs2, imm, 2);
    let f3 = bits(w, 15, 13);
    // Compressed register fields (x8..x15).
    let rdp = bits(w, 4, 2) + 8;
    let rs1p = bits(w, 9, 7) + 8;
    let r = bits(w, 11, 7);
    let r2 = bits(w, 6, 2);
    let ci_imm = sext((bits(w, 12, 12) << 5) | bits(w, 6, 2), 6);
    let cl_off = (bits(w, 12, 10) << 3) | (bits(w, 6, 6) << 2) | (bits(w, 5, 5) << 6);
    let cj_imm = sext(
        (bits(w, 12, 12) << 11)
            | (bits(w, 11, 11) << 4)
            | (bits(w, 10, 9) << 8)
            | (bits(w, 8, 8) << 10)
            | (bits(w, 7, 7) << 6)
            | (bits(w, 6, 6) << 7)
            | (bits(w, 5, 3) << 1)
            | (bits(w, 2, 2) << 5),
        12,
    );
    let cb_imm = sext(
        (bits(w, 12, 12) << 8)
            | (bits(w, 11, 10) << 3)
            | (bits(w, 6, 5) << 6)
            | (bits(w, 4, 3) << 1)
            | (bits(w, 2, 2) << 5),
        9,
    );
    match (w & 3, f3) {
        (0, 0) => {
            // C.ADDI4SPN
            let imm = (bits(w, 12, 11) << 4)
                | (bits(w, 10, 7) << 6)
                | (bits(w, 6, 6) << 2)
                | (bits(w, 5, 5) << 3);
            if imm == 0 {
                return ill; // includes the all-zero illegal instruction
            }
            mk(Addi, rdp, 2, 0, imm as i32)
        }
        (0, 2) => mk(Lw, rdp, rs1p, 0, cl_off as i32),
        (0, 6) => mk(Sw, 0, rs1p, rdp, cl_off as i32),
        (0, _) => ill, // C.FLD, C.FLW, C.FSD, C.FSW and the reserved slot
        (1, 0) => mk(Addi, r, r, 0, ci_imm), // C.NOP / C.ADDI (hints included)
        (1, 1) => mk(Jal, 1, 0, 0, cj_imm), // C.JAL
        (1, 2) => mk(Addi, r, 0, 0, ci_imm), // C.LI
        (1, 3) => {
            if r == 2 {
                // C.ADDI16SP
                let imm = sext(
                    (bits(w, 12, 12) << 9)
                        | (bits(w, 6, 6) << 4)
                        | (bits(w, 5, 5) << 6)
                        | (bits(w, 4, 3) << 7)
                        | (bits(w, 2, 2) << 5),
                    10,
                );
                if imm == 0 {
                    return ill;
                }
                mk(Addi, 2, 2, 0, imm)
            } else {
                // C.LUI
                if ci_imm == 0 {
                    return ill;
                }
                mk(Lui, r, 0, 0, ci_imm << 12)
            }
        }
        (1, 4) => {
            let shamt = bits(w, 6, 2);
            match bits(w, 11, 10) {
                0 | 1 if bits(w, 12, 12) != 0 => ill, // shamt[5] reserved on RV32
                0 => mk(Srli, rs1p, rs1p, 0, shamt as i32),
                1 => mk(Srai, rs1p, rs1p, 0, shamt as i32),
                2 => mk(Andi, rs1p, rs1p, 0, ci_imm),
                _ => {
                    if bits(w, 12, 12) != 0 {
                        return ill; // C.SUBW/C.ADDW and reserved
                    }
                    let op = match bits(w, 6, 5) {
                        0 => Sub,
                        1 => Xor,
                        2 => Or,
                        _ => And,
                    };
                    mk(op, rs1p, rs1p, rdp, 0)
                }
            }
        }
        (1, 5) => mk(Jal, 0, 0, 0, cj_imm), // C.J
        (1, 6) => mk(Beq, 0, rs1p, 0, cb_imm),
        (1, 7) => mk(Bne, 0, rs1p, 0, cb_imm),
        (2, 0) => {
            if bits(w, 12, 12) != 0 {
                return ill;
            }
            mk(Slli, r, r, 0, r2 as i32)
        }
        (2, 2) => {
            if r == 0 {
                return ill;
            }
            let off = (bits(w, 12, 12) << 5) | (bits(w, 6, 4) << 2) | (bits(w, 3, 2) << 6);
            mk(Lw, r, 2, 0, off as i32)
        }
        (2, 4) => match (bits(w, 12, 12), r, r2) {
            (0, 0, 0) => ill,                  // C.JR x0 is reserved
            (0, _, 0) => mk(Jalr, 0, r, 0, 0), // C.JR
            (0, _, _) => mk(Add, r, 0, r2, 0), // C.MV (rd=0: hint)
            (_, 0, 0) => Insn::new(Ebreak, 0, 0, 0, 0, 2),
            (_, _, 0) => mk(Jalr, 1, r, 0, 0), // C.JALR
            (_, _, _) => mk(Add, r, r, r2, 0), // C.ADD (rd=0: hint)
        },
        (2, 6) => {
            let off = (bits(w, 12, 9) << 2) | (bits(w, 8, 7) << 6);
            mk(Sw, 0, 2, r2, off as i32)
        }
        _ => ill, // C.FLDSP, C.FLWSP, C.FSDSP, C.FSWSP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn illegal_encodings() {
        let illegal32: &[(u32, &str)] = &[
            (0xffff_ffff, "all ones"),
            (0x0000_007f, "opcode 0x7f"),
            (0x0000_000b, "custom-0"),
            (0x0000_0007, "LOAD-FP (no F)"),
            (0x0000_0027, "STORE-FP"),
            (0x0000_0053, "OP-FP"),
            (0x0000_001b, "OP-IMM-32 (RV64)"),
            (0x0000_003b, "OP-32 (RV64)"),
            (0x0000_3003, "ld"),
            (0x0000_6003, "lwu"),
            (0x0000_7003, "load funct3 7"),
            (0x0000_3023, "sd"),
            (0x0000_4023, "store funct3 4"),
            (0x0000_2063, "branch funct3 2"),
            (0x0000_3063, "branch funct3 3"),
            (0x0000_1067, "jalr funct3 1"),
            (0x0200_1013, "slli shamt[5]"),
            (0x0200_5013, "srli shamt[5]"),
            (0x4200_5013, "srai shamt[5]"),
            (0x4000_1013, "slli funct7 0x20"),
            (0x2000_5013, "srli bad funct7"),
            (0x4000_1033, "sll funct7 0x20"),
            (0x4000_2033, "slt funct7 0x20"),
            (0x0400_0033, "OP funct7 2"),
            (0x0000_302f, "amo funct3 3 (RV64)"),
            (0x1010_202f, "lr.w with rs2 != 0"),
            (0x1800_202f | (0x1f << 27), "amo funct5 0x1f"),
            (0x0000_2073 & !0x7000 | 0x4000, "system funct3 4"),
            (0x1020_0073, "sret (no S-mode)"),
            (0x0020_0073, "uret"),
            (0x1200_0073, "sfence.vma"),
            (0x7b20_0073, "dret"),
            (0x0010_0173, "ebreak with rd"),
            (0x0000_200f, "fence funct3 2"),
        ];
        for &(w, what) in illegal32 {
            let i = decode(w);
            assert_eq!(i.op(), Op::Illegal, "{what}: {w:#010x} decoded as {i:?}");
            assert_eq!(i.imm() as u32, w, "{what}: mtval must be the bits");
            assert_eq!(i.byte_len(), 4);
        }
        let illegal16: &[(u16, &str)] = &[
            (0x0000, "all zero"),
            (0x0010, "c.addi4spn imm 0"),
            (0x2000, "c.fld"),
            (0x6000, "c.flw"),
            (0xa000, "c.fsd"),
            (0xe000, "c.fsw"),
            (0x8000, "reserved quadrant 0 funct3 4"),
            (0x6101, "c.addi16sp imm 0"),
            (0x6501, "c.lui imm 0"),
            (0x9005, "c.srli shamt[5]"),
            (0x9405, "c.srai shamt[5]"),
            (0x9d01, "c.subw"),
            (0x9d21, "c.addw"),
            (0x1506, "c.slli shamt[5]"),
            (0x4002, "c.lwsp rd 0"),
            (0x8002, "c.jr x0"),
            (0x2002, "c.fldsp"),
            (0x6002, "c.flwsp"),
            (0xa002, "c.fsdsp"),
            (0xe002, "c.fswsp"),
        ];
        for &(h, what) in illegal16 {
            let i = decode(u32::from(h) | 0xabcd_0000);
            assert_eq!(i.op(), Op::Illegal, "{what}: {h:#06x} decoded as {i:?}");
            assert_eq!(i.imm() as u32, u32::from(h), "{what}: mtval is the 16 bits");
            assert_eq!(i.byte_len(), 2);
        }
    }

    #[test]
    fn hints_decode_as_harmless() {
        // c.addi x0 / c.li x0 / c.mv x0 / c.add x0 / c.lui x0 / c.slli x0: writes go to the sink.
        for h in [0x0005u16, 0x4015, 0x802a, 0x902a, 0x6005, 0x0006] {
            let i = decode(u32::from(h));
            assert_ne!(i.op(), Op::Illegal, "{h:#06x}");
            assert_eq!(i.rd(), SINK, "{h:#06x}");
        }
    }

    #[test]
    fn every_16_bit_word_decodes() {
        for h in 0..=u16::MAX {
            if h & 3 == 3 {
                continue;
            }
            let i = decode(u32::from(h));
            assert_eq!(i.byte_len(), 2);
            assert!(i.rd() <= SINK && i.rs1() < 32 && i.rs2() < 32);
            assert_ne!(i.op(), Op::Undecoded);
        }
    }

    #[test]
    fn many_32_bit_words_decode() {
        // A cheap LCG walk over the 32-bit space (proptest covers the interpreter side).
        let mut w: u32 = 1;
        for _ in 0..2_000_000 {
            w = w.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let word = w | 3;
            let i = decode(word);
            assert_eq!(i.byte_len(), 4);
            assert!(i.rd() <= SINK && i.rs1() < 32 && i.rs2() < 32);
            assert!(!matches!(i.op(), Op::Undecoded | Op::FetchFault));
        }
    }

    #[test]
    fn x0_destination_goes_to_the_sink() {
        assert_eq!(decode(0x0000_0013).rd(), SINK); // nop
        assert_eq!(decode(0x0000_0013).op(), Op::Addi);
        assert_eq!(decode(0x0000_006f).rd(), SINK); // j .
    }
}
