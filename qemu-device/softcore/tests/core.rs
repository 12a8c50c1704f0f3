//! The core's behaviour through its public API, with a small test-double bus.

use preba_softcore::{
    Bus, Config, Cpu, DMEM, Exit, Fault, Halt, IMEM, IRQ_MEI, IRQ_MSI, IRQ_MTI, Mem, Poll, cause,
    csr,
};

/// A test double: one MMIO register at 0x4000_0000, interrupt lines set by the test, an
/// optional deadline, a halt register at 0x4000_0004.
#[derive(Default)]
struct TestBus {
    reg: u32,
    lines: u32,
    deadline: Option<(u64, u32)>,
    halt: Option<Halt>,
    accesses: Vec<(char, u32, u8, u32)>,
    polls: u64,
    /// A pending "DMA": bytes to copy into core RAM at the next poll.
    dma: Option<(u32, Vec<u8>)>,
    dma_result: Option<bool>,
}

impl Bus for TestBus {
    fn load(&mut self, addr: u32, size: u8, _now: u64) -> Result<u32, Fault> {
        self.accesses.push(('r', addr, size, 0));
        match addr {
            0x4000_0000..=0x4000_0003 => Ok(self.reg >> ((addr & 3) * 8)),
            _ => Err(Fault),
        }
    }
    fn store(&mut self, addr: u32, size: u8, v: u32, _now: u64) -> Result<(), Fault> {
        self.accesses.push(('w', addr, size, v));
        match addr {
            0x4000_0000 => self.reg = v,
            0x4000_0004 => self.halt = Some(Halt::Fail(v)),
            0x4000_0008 => self.lines = v,
            0x4000_000c => self.dma = Some((v, self.reg.to_le_bytes().to_vec())),
            _ => return Err(Fault),
        }
        Ok(())
    }
    fn poll(&mut self, now: u64, mem: &mut Mem<'_>) -> Poll {
        self.polls += 1;
        if let Some((addr, bytes)) = self.dma.take() {
            self.dma_result = Some(mem.write(addr, &bytes).is_ok());
        }
        let mut irq = self.lines;
        let mut next_event = u64::MAX;
        if let Some((t, line)) = self.deadline {
            if now >= t {
                irq |= line;
            } else {
                next_event = t;
            }
        }
        Poll {
            irq,
            next_event,
            halt: self.halt.take(),
        }
    }
}

const BASE: u32 = 0x8000_0000;

/// A tiny assembler for the handful of instructions these tests need.
mod asm {
    pub fn i(op: u32, f3: u32, rd: u32, rs1: u32, imm: i32) -> u32 {
        ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
    }
    pub fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
        i(0x13, 0, rd, rs1, imm)
    }
    pub fn lui(rd: u32, imm20: u32) -> u32 {
        (imm20 << 12) | (rd << 7) | 0x37
    }
    pub fn lw(rd: u32, rs1: u32, imm: i32) -> u32 {
        i(0x03, 2, rd, rs1, imm)
    }
    pub fn lb(rd: u32, rs1: u32, imm: i32) -> u32 {
        i(0x03, 0, rd, rs1, imm)
    }
    pub fn sw(rs2: u32, rs1: u32, imm: i32) -> u32 {
        let imm = imm as u32;
        ((imm >> 5 & 0x7f) << 25)
            | (rs2 << 20)
            | (rs1 << 15)
            | (2 << 12)
            | ((imm & 0x1f) << 7)
            | 0x23
    }
    pub fn csrrw(rd: u32, csr: u32, rs1: u32) -> u32 {
        (csr << 20) | (rs1 << 15) | (1 << 12) | (rd << 7) | 0x73
    }
    pub fn csrrs(rd: u32, csr: u32, rs1: u32) -> u32 {
        (csr << 20) | (rs1 << 15) | (2 << 12) | (rd << 7) | 0x73
    }
    pub fn jal(rd: u32, off: i32) -> u32 {
        let o = off as u32;
        ((o >> 20 & 1) << 31)
            | ((o >> 1 & 0x3ff) << 21)
            | ((o >> 11 & 1) << 20)
            | ((o >> 12 & 0xff) << 12)
            | (rd << 7)
            | 0x6f
    }
    pub const WFI: u32 = 0x1050_0073;
    pub const MRET: u32 = 0x3020_0073;
    pub const ECALL: u32 = 0x0000_0073;
    pub const NOP: u32 = 0x0000_0013;
}

fn cpu_with(prog: &[u32]) -> Cpu<TestBus> {
    let mut cpu = Cpu::new(Config::default(), TestBus::default()).unwrap();
    load(&mut cpu, BASE, prog);
    cpu
}

fn load(cpu: &mut Cpu<TestBus>, addr: u32, prog: &[u32]) {
    let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
    cpu.write_ram(addr, &bytes).unwrap();
}

/// Program prologue: mtvec = BASE + 0x100 (x5 scratch).
fn mtvec_at_0x100() -> Vec<u32> {
    vec![
        asm::lui(5, BASE >> 12),
        asm::addi(5, 5, 0x100),
        asm::csrrw(0, 0x305, 5),
    ]
}

#[test]
fn budget_counts_instructions() {
    let mut cpu = cpu_with(&[asm::NOP; 64]);
    assert_eq!(cpu.run(10), Exit::Budget);
    assert_eq!(cpu.retired(), 10);
    assert_eq!(cpu.pc(), BASE + 40);
    assert_eq!(cpu.step(), Exit::Budget);
    assert_eq!(cpu.pc(), BASE + 44);
    assert_eq!(cpu.csr(csr::MINSTRET), Some(11));
}

#[test]
fn mmio_goes_through_the_bus_with_sizes() {
    let mut cpu = cpu_with(&[
        asm::lui(10, 0x40000),
        asm::addi(11, 0, 0x5a),
        asm::sw(11, 10, 0),
        asm::lw(12, 10, 0),
        asm::lb(13, 10, 0),
        asm::WFI,
    ]);
    assert_eq!(cpu.run(100), Exit::Wfi);
    assert_eq!(cpu.reg(12), 0x5a);
    assert_eq!(cpu.reg(13), 0x5a);
    assert_eq!(
        cpu.bus().accesses,
        vec![
            ('w', 0x4000_0000, 4, 0x5a),
            ('r', 0x4000_0000, 4, 0),
            ('r', 0x4000_0000, 1, 0)
        ]
    );
}

#[test]
fn halt_from_the_bus_stops_after_the_store() {
    let mut cpu = cpu_with(&[
        asm::lui(10, 0x40000),
        asm::addi(11, 0, 7),
        asm::sw(11, 10, 4),
        asm::NOP,
    ]);
    assert_eq!(cpu.run(100), Exit::Halt(Halt::Fail(7)));
    assert_eq!(cpu.retired(), 3);
}

#[test]
fn access_fault_is_precise() {
    let mut prog = mtvec_at_0x100();
    prog.extend([
        asm::lui(10, 0x50000),
        asm::addi(12, 0, 99),
        asm::lw(12, 10, 8),
    ]);
    let mut cpu = cpu_with(&prog);
    load(&mut cpu, BASE + 0x100, &[asm::WFI]);
    assert_eq!(cpu.run(100), Exit::Wfi);
    assert_eq!(cpu.csr(csr::MCAUSE), Some(cause::LOAD_ACCESS));
    assert_eq!(cpu.csr(csr::MEPC), Some(BASE + 20));
    assert_eq!(cpu.csr(csr::MTVAL), Some(0x5000_0008));
    assert_eq!(cpu.reg(12), 99, "the faulting load must not write rd");
    // The trap did not retire: 5 instructions + the wfi.
    assert_eq!(cpu.retired(), 6);
}

#[test]
fn external_interrupt_wakes_wfi_and_is_taken() {
    let mut prog = mtvec_at_0x100();
    prog.extend([
        asm::lui(6, 1),
        asm::addi(6, 6, -0x800), // x6 = 0x800 (MEIE)
        asm::csrrw(0, 0x304, 6), // mie
        asm::csrrs(0, 0x300, 0), // read mstatus (no write)
        asm::addi(7, 0, 8),
        asm::csrrs(0, 0x300, 7), // mstatus.MIE = 1
        asm::WFI,
        asm::addi(20, 0, 1),
    ]);
    let mut cpu = cpu_with(&prog);
    // Handler: x21 = mcause, lower the line through MMIO, mret.
    load(
        &mut cpu,
        BASE + 0x100,
        &[
            asm::csrrs(21, 0x342, 0),
            asm::lui(10, 0x40000),
            asm::sw(0, 10, 8),
            asm::MRET,
        ],
    );
    assert_eq!(cpu.run(1000), Exit::Wfi);
    assert!(cpu.is_waiting());
    let wfi_pc = cpu.pc();
    // Nothing happens without the line.
    assert_eq!(cpu.run(1000), Exit::Wfi);
    assert_eq!(cpu.pc(), wfi_pc);
    cpu.bus_mut().lines = IRQ_MEI;
    cpu.request_poll();
    assert_eq!(cpu.run(6), Exit::Budget);
    assert_eq!(cpu.reg(21), cause::INTERRUPT | 11);
    assert_eq!(cpu.csr(csr::MEPC), Some(wfi_pc));
    assert_eq!(cpu.reg(20), 1, "returned after the wfi");
    assert_eq!(cpu.csr(csr::MSTATUS).unwrap() & 0x88, 0x88);
}

#[test]
fn vectored_mode_and_priority() {
    // Vectored mtvec at BASE + 0x100: MEI (11) at +44 wins over MSI and MTI.
    let mut prog = vec![
        asm::lui(5, BASE >> 12),
        asm::addi(5, 5, 0x101),
        asm::csrrw(0, 0x305, 5),
        asm::lui(6, 1),
        asm::addi(6, 6, -0x778), // 0x888
        asm::csrrw(0, 0x304, 6),
        asm::addi(7, 0, 8),
        asm::csrrs(0, 0x300, 7),
    ];
    prog.extend([asm::NOP; 8]);
    let mut cpu = cpu_with(&prog);
    let mut table = vec![asm::jal(0, 0); 12];
    // Each slot writes its cause number to x22 and spins.
    for code in [3u32, 7, 11] {
        table[code as usize] = asm::addi(22, 0, code as i32);
    }
    load(&mut cpu, BASE + 0x100, &table);
    cpu.bus_mut().lines = IRQ_MSI | IRQ_MTI | IRQ_MEI;
    // 8 instructions, the interrupt, the slot's addi.
    cpu.run(10);
    assert_eq!(cpu.reg(22), 11);
    assert_eq!(cpu.csr(csr::MCAUSE), Some(cause::INTERRUPT | 11));
}

#[test]
fn wfi_fast_forwards_to_the_deadline() {
    let mut prog = vec![asm::addi(6, 0, 0x80), asm::csrrw(0, 0x304, 6), asm::WFI];
    prog.push(asm::csrrs(20, 0xB00, 0)); // mcycle
    prog.push(asm::csrrs(21, 0xB02, 0)); // minstret
    prog.push(asm::csrrw(0, 0x304, 0)); // mie = 0: the next wfi really waits
    prog.push(asm::WFI);
    let mut cpu = cpu_with(&prog);
    cpu.bus_mut().deadline = Some((1_000_000, IRQ_MTI));
    // With MIE off the wakeup does not trap; the idle time shows in mcycle, not minstret.
    assert_eq!(cpu.run(100), Exit::Wfi);
    assert_eq!(cpu.reg(20), 1_000_000);
    assert_eq!(cpu.reg(21), 4);
    assert!(cpu.now() >= 1_000_000);
    assert_eq!(cpu.retired(), 7);
    // The host may advance idle time itself.
    let now = cpu.now();
    cpu.skip_idle(500);
    assert_eq!(cpu.now(), now + 500);
    assert_eq!(cpu.run(10), Exit::Wfi);
    assert_eq!(cpu.csr(0xB00), Some((now + 500) as u32));
}

#[test]
fn wfi_without_fast_forward_leaves_idle_time_to_the_platform() {
    let mut prog = vec![asm::addi(6, 0, 0x80), asm::csrrw(0, 0x304, 6), asm::WFI];
    prog.push(asm::csrrs(20, 0xB00, 0)); // mcycle
    prog.push(asm::csrrw(0, 0x304, 0)); // mie = 0: the next wfi really waits
    prog.push(asm::WFI);
    let config = Config {
        wfi_fast_forward: false,
        ..Config::default()
    };
    let mut cpu = Cpu::new(config, TestBus::default()).unwrap();
    let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
    cpu.write_ram(BASE, &bytes).unwrap();
    cpu.bus_mut().deadline = Some((1_000_000, IRQ_MTI));
    // The deadline is known, but the hart does not jump to it.
    assert_eq!(cpu.run(100), Exit::Wfi);
    assert_eq!(cpu.now(), 3);
    assert!(cpu.is_waiting());
    // Part of the way: still waiting; then to the deadline: the wfi ends.
    cpu.skip_idle(1000);
    assert_eq!(cpu.run(100), Exit::Wfi);
    assert_eq!(cpu.now(), 1003);
    cpu.skip_idle(1_000_000 - 1003);
    assert_eq!(cpu.run(100), Exit::Wfi);
    assert_eq!(cpu.reg(20), 1_000_000);
}

#[test]
fn a_trap_loop_still_ends() {
    // mtvec points at unmapped memory: every trap faults again.
    let mut cpu = cpu_with(&[asm::lui(5, 0x50000), asm::csrrw(0, 0x305, 5), asm::ECALL]);
    assert_eq!(cpu.run(10_000), Exit::Budget);
    assert_eq!(cpu.csr(csr::MCAUSE), Some(cause::INSN_ACCESS));
}

#[test]
fn self_modifying_code_is_seen() {
    // Run a loop once, overwrite one of its instructions, run again.
    let mut cpu = cpu_with(&[asm::addi(10, 10, 1), asm::WFI]);
    assert_eq!(cpu.run(10), Exit::Wfi);
    assert_eq!(cpu.reg(10), 1);
    // Store from the program itself: x11 = address, x12 = new instruction.
    load(
        &mut cpu,
        BASE + 8,
        &[
            asm::lui(11, BASE >> 12),
            asm::lw(12, 11, 0x40),
            asm::sw(12, 11, 0),
            asm::jal(0, -20),
        ],
    );
    load(&mut cpu, BASE + 0x40, &[asm::addi(10, 10, 100)]);
    cpu.set_pc(BASE + 8);
    assert_eq!(cpu.run(100), Exit::Wfi);
    assert_eq!(cpu.reg(10), 101);
}

#[test]
fn dmem_is_not_executable_by_default() {
    // Two instructions, an illegal one (zeros) trapping to mtvec in DMEM, a fetch fault.
    let mut cpu = cpu_with(&[asm::lui(5, DMEM.base >> 12), asm::csrrw(0, 0x305, 5)]);
    cpu.run(4);
    assert_eq!(cpu.csr(csr::MCAUSE), Some(cause::INSN_ACCESS));
    assert_eq!(cpu.csr(csr::MTVAL), Some(DMEM.base));
}

#[test]
fn ram_access_for_the_host() {
    let mut cpu = Cpu::new(Config::default(), TestBus::default()).unwrap();
    cpu.write_ram(DMEM.base + 16, b"log!").unwrap();
    assert_eq!(cpu.ram(DMEM.base + 16, 4), Some(&b"log!"[..]));
    assert!(cpu.ram(DMEM.base + DMEM.size - 2, 4).is_none());
    assert!(cpu.write_ram(DMEM.base + DMEM.size, b"x").is_err());
    assert!(
        cpu.write_ram(IMEM.base + IMEM.size - 2, b"xyz").is_err(),
        "spans two regions"
    );
    assert!(cpu.ram(0, 1).is_none());
}

#[test]
fn bad_configurations_are_refused() {
    let mut c = Config::default();
    c.ram.push(IMEM);
    assert!(Cpu::new(c, TestBus::default()).is_err(), "overlap");
    let c = Config {
        ram: vec![],
        ..Config::default()
    };
    assert!(Cpu::new(c, TestBus::default()).is_err(), "no RAM");
    let mut c = Config::default();
    c.ram[0].size = 6;
    assert!(Cpu::new(c, TestBus::default()).is_err(), "size");
    let c = Config {
        ram: vec![preba_softcore::RamRegion {
            base: 0xffff_fff0,
            size: 0x20,
            exec: true,
        }],
        ..Config::default()
    };
    assert!(Cpu::new(c, TestBus::default()).is_err(), "wraps");
}

#[test]
fn polls_are_bounded() {
    let mut cpu = cpu_with(&[asm::jal(0, 0)]); // j .
    cpu.run(1 << 20);
    let polls = cpu.bus().polls;
    assert!(
        (16..64).contains(&polls),
        "{polls} polls for 2^20 instructions"
    );
}

#[test]
fn devices_write_ram_at_poll_points() {
    // reg = an `addi x10, x10, 7` instruction; "DMA" it over the nop at BASE + 0x20, run it.
    let addi = asm::addi(10, 10, 7);
    let mut prog = vec![
        asm::lui(11, 0x40000),
        asm::lui(12, (addi >> 12) + ((addi >> 11) & 1)),
        asm::addi(12, 12, ((addi & 0xfff) as i32) << 20 >> 20),
        asm::sw(12, 11, 0),
        asm::lui(13, BASE >> 12),
        asm::addi(13, 13, 0x20),
        asm::sw(13, 11, 0xc),
        asm::NOP,
    ];
    prog.extend([asm::NOP, asm::WFI]); // 0x20: nop (replaced by the DMA), then wfi
    let mut cpu = cpu_with(&prog);
    assert_eq!(cpu.run(100), Exit::Wfi);
    assert_eq!(cpu.bus().dma_result, Some(true));
    assert_eq!(
        cpu.reg(10),
        7,
        "the DMA-written instruction ran (decode cache invalidated)"
    );
    // Outside RAM the device gets an error, not a crash.
    let mut cpu = cpu_with(&[asm::WFI]);
    cpu.bus_mut().dma = Some((0x1000, vec![1, 2, 3]));
    cpu.request_poll();
    cpu.run(10);
    assert_eq!(cpu.bus().dma_result, Some(false));
}

#[test]
fn yield_returns_and_resumes() {
    let mut cpu = cpu_with(&[asm::addi(10, 10, 1), asm::jal(0, -4)]);
    cpu.bus_mut().halt = Some(Halt::Yield);
    assert_eq!(cpu.run(100), Exit::Halt(Halt::Yield));
    assert_eq!(cpu.retired(), 0);
    assert_eq!(cpu.run(10), Exit::Budget);
    assert_eq!(cpu.reg(10), 5);
}
