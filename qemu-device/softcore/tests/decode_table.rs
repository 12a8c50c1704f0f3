//! The decoder against LLVM's assembler: `rvtests/asm/encodings.S` lists every instruction
//! form; its assembled words must decode to the operands written there.

mod common;

use preba_softcore::decode::{Insn, Op, SINK, decode};

#[derive(Debug)]
struct Want {
    op: Op,
    rd: Option<u8>,
    rs1: Option<u8>,
    rs2: Option<u8>,
    imm: Option<i32>,
    len: u32,
}

fn rd(r: u8) -> u8 {
    if r == 0 { SINK } else { r }
}
fn u(op: Op, d: u8, imm: i32) -> Want {
    Want {
        op,
        rd: Some(rd(d)),
        rs1: None,
        rs2: None,
        imm: Some(imm),
        len: 4,
    }
}
fn i(op: Op, d: u8, s1: u8, imm: i32) -> Want {
    Want {
        op,
        rd: Some(rd(d)),
        rs1: Some(s1),
        rs2: None,
        imm: Some(imm),
        len: 4,
    }
}
fn s(op: Op, s1: u8, s2: u8, imm: i32) -> Want {
    Want {
        op,
        rd: None,
        rs1: Some(s1),
        rs2: Some(s2),
        imm: Some(imm),
        len: 4,
    }
}
fn r(op: Op, d: u8, s1: u8, s2: u8) -> Want {
    Want {
        op,
        rd: Some(rd(d)),
        rs1: Some(s1),
        rs2: Some(s2),
        imm: None,
        len: 4,
    }
}
fn n(op: Op) -> Want {
    Want {
        op,
        rd: None,
        rs1: None,
        rs2: None,
        imm: None,
        len: 4,
    }
}
fn c(mut w: Want) -> Want {
    w.len = 2;
    w
}

fn table32() -> Vec<Want> {
    use Op::*;
    vec![
        u(Lui, 10, 0x12345 << 12),
        u(Auipc, 6, 0xfffff000u32 as i32),
        u(Jal, 1, 2048),
        u(Jal, 0, -4096),
        i(Jalr, 11, 12, -1),
        s(Beq, 10, 11, 4094),
        s(Bne, 8, 9, -4096),
        s(Blt, 5, 6, 8),
        s(Bge, 7, 28, -8),
        s(Bltu, 14, 15, 16),
        s(Bgeu, 16, 17, -16),
        i(Lb, 10, 11, -2048),
        i(Lh, 18, 19, 2047),
        i(Lw, 29, 2, 4),
        i(Lbu, 0, 10, 0),
        i(Lhu, 1, 3, -1),
        s(Sb, 11, 10, -2048),
        s(Sh, 19, 18, 2047),
        s(Sw, 2, 29, -4),
        i(Addi, 10, 10, -1),
        i(Slti, 11, 12, 5),
        i(Sltiu, 13, 14, -1),
        i(Xori, 15, 16, 0x555),
        i(Ori, 17, 18, -0x556),
        i(Andi, 19, 20, 0x7ff),
        i(Slli, 21, 22, 31),
        i(Srli, 23, 24, 1),
        i(Srai, 25, 26, 17),
        r(Add, 27, 28, 29),
        r(Sub, 30, 31, 10),
        r(Sll, 10, 11, 12),
        r(Slt, 13, 14, 15),
        r(Sltu, 16, 17, 18),
        r(Xor, 19, 20, 21),
        r(Srl, 22, 23, 24),
        r(Sra, 25, 26, 27),
        r(Or, 28, 29, 30),
        r(And, 31, 10, 11),
        r(Mul, 10, 11, 12),
        r(Mulh, 13, 14, 15),
        r(Mulhsu, 16, 17, 18),
        r(Mulhu, 19, 20, 21),
        r(Div, 22, 23, 24),
        r(Divu, 25, 26, 27),
        r(Rem, 28, 29, 30),
        r(Remu, 31, 10, 11),
        r(LrW, 10, 11, 0),
        r(ScW, 12, 14, 13),
        r(AmoSwapW, 15, 17, 16),
        r(AmoAddW, 0, 19, 18),
        r(AmoXorW, 20, 22, 21),
        r(AmoAndW, 23, 25, 24),
        r(AmoOrW, 26, 28, 27),
        r(AmoMinW, 29, 31, 30),
        r(AmoMaxW, 10, 12, 11),
        r(AmoMinuW, 13, 15, 14),
        r(AmoMaxuW, 16, 18, 17),
        n(Fence),
        n(FenceI),
        n(Fence),
        n(Ecall),
        n(Ebreak),
        n(Mret),
        n(Wfi),
        i(Csrrw, 10, 11, 0x340),
        i(Csrrs, 12, 13, 0x300),
        i(Csrrc, 14, 15, 0x304),
        i(Csrrwi, 16, 31, 0x305),
        i(Csrrsi, 17, 1, 0x341),
        i(Csrrci, 0, 0, 0xc00),
    ]
}

fn table16() -> Vec<Want> {
    use Op::*;
    vec![
        c(i(Addi, 10, 2, 1020)),
        c(i(Lw, 11, 12, 124)),
        c(s(Sw, 14, 13, 0)),
        c(i(Addi, 0, 0, 0)),
        c(i(Addi, 8, 8, -32)),
        c(u(Jal, 1, 2046)),
        c(i(Addi, 15, 0, 31)),
        c(i(Addi, 2, 2, -512)),
        c(u(Lui, 5, 0xfffe0000u32 as i32)),
        c(i(Srli, 9, 9, 31)),
        c(i(Srai, 10, 10, 1)),
        c(i(Andi, 11, 11, -1)),
        c(r(Sub, 12, 12, 13)),
        c(r(Xor, 14, 14, 15)),
        c(r(Or, 8, 8, 9)),
        c(r(And, 10, 10, 11)),
        c(u(Jal, 0, -2048)),
        c(s(Beq, 12, 0, 254)),
        c(s(Bne, 13, 0, -256)),
        c(i(Slli, 6, 6, 31)),
        c(i(Lw, 1, 2, 252)),
        c(i(Jalr, 0, 7, 0)),
        c(r(Add, 28, 0, 29)),
        c(n(Ebreak)),
        c(i(Jalr, 1, 30, 0)),
        c(r(Add, 31, 31, 18)),
        c(s(Sw, 2, 19, 4)),
    ]
}

fn find(hay: &[u8], word: u32) -> usize {
    let w = word.to_le_bytes();
    hay.windows(4)
        .position(|x| x == w)
        .expect("marker in the ELF")
        + 4
}

fn check(bytes: &[u8], want: &[Want]) {
    let mut off = 0;
    for (k, w) in want.iter().enumerate() {
        let word = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
        let got: Insn = decode(word);
        let ctx = format!("entry {k} ({word:#010x}): want {w:?}, got {got:?}");
        assert_eq!(got.op(), w.op, "{ctx}");
        assert_eq!(got.byte_len(), w.len, "{ctx}");
        if let Some(rd) = w.rd {
            assert_eq!(got.rd(), rd, "{ctx}");
        }
        if let Some(rs1) = w.rs1 {
            assert_eq!(got.rs1(), rs1, "{ctx}");
        }
        if let Some(rs2) = w.rs2 {
            assert_eq!(got.rs2(), rs2, "{ctx}");
        }
        if let Some(imm) = w.imm {
            assert_eq!(got.imm(), imm, "{ctx}");
        }
        off += w.len as usize;
    }
}

#[test]
fn every_form_decodes_as_assembled() {
    let elf = common::program("encodings");
    let start32 = find(&elf, 0xfeed_c0de);
    let start16 = find(&elf, 0xc0de_c0de);
    check(&elf[start32..], &table32());
    check(&elf[start16..], &table16());
    assert_eq!(start16 - 4 - start32, table32().len() * 4);
}
