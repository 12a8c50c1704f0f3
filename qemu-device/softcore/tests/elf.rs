//! The ELF loader: placement at p_paddr, bss zero-fill, validation, hostile bytes.

use preba_softcore::elf::{ElfError, parse};
use preba_softcore::{Config, Cpu, DMEM, Error, IMEM, NoBus};
use proptest::prelude::*;

struct Seg {
    vaddr: u32,
    paddr: u32,
    data: Vec<u8>,
    memsz: u32,
    p_type: u32,
}

fn load_seg(paddr: u32, data: &[u8], memsz: u32) -> Seg {
    Seg {
        vaddr: paddr ^ 0x4000_0000,
        paddr,
        data: data.to_vec(),
        memsz,
        p_type: 1,
    }
}

/// A minimal ELF32 RISC-V executable.
fn build_elf(entry: u32, segs: &[Seg]) -> Vec<u8> {
    let phoff = 52u32;
    let mut data_off = phoff + 32 * segs.len() as u32;
    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF");
    out.extend_from_slice(&[1, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out.extend_from_slice(&243u16.to_le_bytes()); // EM_RISCV
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&entry.to_le_bytes());
    out.extend_from_slice(&phoff.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // flags
    out.extend_from_slice(&52u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(&(segs.len() as u16).to_le_bytes());
    out.extend_from_slice(&40u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    assert_eq!(out.len(), 52);
    for s in segs {
        for v in [
            s.p_type,
            data_off,
            s.vaddr,
            s.paddr,
            s.data.len() as u32,
            s.memsz,
            5,
            4,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        data_off += s.data.len() as u32;
    }
    for s in segs {
        out.extend_from_slice(&s.data);
    }
    out
}

fn sample() -> Vec<u8> {
    build_elf(
        IMEM.base + 4,
        &[
            load_seg(IMEM.base, &[0x13, 0, 0, 0, 0x73, 0, 0x50, 0x10], 8),
            load_seg(DMEM.base + 0x100, b"data", 64),
            Seg {
                p_type: 4,
                ..load_seg(0, b"note", 4)
            },
        ],
    )
}

fn cpu() -> Cpu<NoBus> {
    Cpu::new(Config::default(), NoBus).unwrap()
}

#[test]
fn loads_at_paddr_and_zero_fills() {
    let mut cpu = cpu();
    cpu.write_ram(DMEM.base + 0x100, &[0xff; 64]).unwrap();
    let entry = cpu.load_elf(&sample()).unwrap();
    assert_eq!(entry, IMEM.base + 4);
    assert_eq!(cpu.pc(), entry);
    assert_eq!(cpu.ram(IMEM.base, 4).unwrap(), &[0x13, 0, 0, 0]);
    assert_eq!(cpu.ram(DMEM.base + 0x100, 4).unwrap(), b"data");
    assert!(
        cpu.ram(DMEM.base + 0x104, 60)
            .unwrap()
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn refuses_malformed_images() {
    let good = sample();
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    let mut b = good.clone();
    b[0] = 0;
    cases.push((b, "magic"));
    let mut b = good.clone();
    b[4] = 2;
    cases.push((b, "64-bit"));
    let mut b = good.clone();
    b[5] = 2;
    cases.push((b, "big-endian"));
    let mut b = good.clone();
    b[18] = 62;
    cases.push((b, "x86-64"));
    let mut b = good.clone();
    b[16] = 3;
    cases.push((b, "ET_DYN"));
    let mut b = good.clone();
    b[42] = 56;
    cases.push((b, "phentsize"));
    let mut b = good.clone();
    b[44] = 200;
    cases.push((b, "phnum"));
    cases.push((good[..40].to_vec(), "truncated header"));
    cases.push((good[..100].to_vec(), "truncated program headers"));
    let loads_only = build_elf(IMEM.base, &[load_seg(IMEM.base, &[1; 8], 8)]);
    cases.push((
        loads_only[..loads_only.len() - 2].to_vec(),
        "truncated segment data",
    ));
    cases.push((
        build_elf(IMEM.base + 1, &[load_seg(IMEM.base, &[0; 4], 4)]),
        "odd entry",
    ));
    cases.push((build_elf(IMEM.base, &[]), "no segments"));
    cases.push((
        build_elf(IMEM.base, &[load_seg(IMEM.base, &[0; 8], 4)]),
        "filesz > memsz",
    ));
    cases.push((
        build_elf(IMEM.base, &[load_seg(0x1000, &[0; 4], 4)]),
        "outside RAM",
    ));
    cases.push((
        build_elf(IMEM.base, &[load_seg(DMEM.base - 4, &[0; 8], 8)]),
        "spans IMEM and DMEM",
    ));
    cases.push((
        build_elf(IMEM.base, &[load_seg(0xffff_fff0, &[], 0x100)]),
        "wraps past 4 GiB",
    ));
    for (bytes, what) in cases {
        let mut cpu = cpu();
        let before = cpu.ram(IMEM.base, 16).unwrap().to_vec();
        assert!(cpu.load_elf(&bytes).is_err(), "{what} was accepted");
        assert_eq!(
            cpu.ram(IMEM.base, 16).unwrap(),
            &before[..],
            "{what} wrote RAM"
        );
    }
    assert!(matches!(parse(b"\x7fELF"), Err(ElfError::Truncated { .. })));
    assert!(matches!(
        cpu().load_elf(&build_elf(IMEM.base, &[load_seg(0x1000, &[0; 4], 4)])),
        Err(Error::SegmentOutsideRam { paddr: 0x1000, .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn hostile_bytes_never_panic(
        flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..12),
        cut in 0usize..400,
    ) {
        let mut bytes = sample();
        for (pos, v) in flips {
            if let Some(b) = bytes.get_mut(pos) {
                *b = v;
            }
        }
        bytes.truncate(cut.max(1));
        let mut cpu = cpu();
        if let Ok(entry) = cpu.load_elf(&bytes) {
            prop_assert_eq!(entry & 1, 0);
            prop_assert_eq!(cpu.pc(), entry);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&bytes);
        let _ = cpu().load_elf(&bytes);
    }
}
