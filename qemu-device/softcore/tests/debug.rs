//! Debug mode (RISC-V Debug Spec 0.13.2 chapter 4) through the core's public API: halt, resume,
//! single step, ebreak into debug mode, register access and system bus access.

use preba_softcore::{
    Bus, Config, Cpu, Exit, Fault, IMEM, Mem, Poll, cause, csr, dcsr, debug_cause,
};

/// One MMIO register at 0x4000_0000; everything else outside RAM faults.
#[derive(Default)]
struct Reg(u32);

impl Bus for Reg {
    fn load(&mut self, addr: u32, _size: u8, _now: u64) -> Result<u32, Fault> {
        if addr == 0x4000_0000 {
            Ok(self.0)
        } else {
            Err(Fault)
        }
    }
    fn store(&mut self, addr: u32, _size: u8, v: u32, _now: u64) -> Result<(), Fault> {
        if addr == 0x4000_0000 {
            self.0 = v;
            Ok(())
        } else {
            Err(Fault)
        }
    }
    fn poll(&mut self, _now: u64, _mem: &mut Mem<'_>) -> Poll {
        Poll::IDLE
    }
}

const BASE: u32 = IMEM.base;
const NOP: u32 = 0x0000_0013;
const EBREAK: u32 = 0x0010_0073;
const WFI: u32 = 0x1050_0073;
/// `j .` (jump to itself).
const J_SELF: u32 = 0x0000_006f;

fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (rd << 7) | 0x13
}

/// `jal x0, off`.
fn j(off: i32) -> u32 {
    let o = off as u32;
    (((o >> 20) & 1) << 31)
        | (((o >> 1) & 0x3ff) << 21)
        | (((o >> 11) & 1) << 20)
        | (((o >> 12) & 0xff) << 12)
        | 0x6f
}

fn cpu_with(prog: &[u32]) -> Cpu<Reg> {
    let mut cpu = Cpu::new(Config::default(), Reg::default()).unwrap();
    let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
    cpu.write_ram(BASE, &bytes).unwrap();
    cpu
}

fn cause_of(cpu: &Cpu<Reg>) -> u32 {
    (cpu.debug_reg_read(csr::DCSR).unwrap() >> dcsr::CAUSE_SHIFT) & 7
}

#[test]
fn halt_request_stops_a_running_hart_and_resume_continues() {
    // a0 += 1 forever.
    let mut cpu = cpu_with(&[addi(10, 10, 1), j(-4)]);
    assert_eq!(cpu.run(101), Exit::Budget);
    assert!(!cpu.is_halted());
    cpu.request_halt();
    assert_eq!(cpu.run(1000), Exit::Debug);
    assert!(cpu.is_halted());
    assert_eq!(cause_of(&cpu), debug_cause::HALTREQ);
    let dpc = cpu.debug_reg_read(csr::DPC).unwrap();
    assert!(dpc == BASE || dpc == BASE + 4, "dpc {dpc:#x}");
    let a0 = cpu.debug_reg_read(0x100a).unwrap();
    assert_eq!(a0, 51);
    // Halted: nothing runs, no time passes for the firmware's counters.
    let (retired, mcycle) = (cpu.retired(), cpu.csr(csr::MCYCLE).unwrap());
    for _ in 0..3 {
        assert_eq!(cpu.run(1000), Exit::Debug);
    }
    assert_eq!(cpu.retired(), retired);
    assert_eq!(cpu.csr(csr::MCYCLE).unwrap(), mcycle);
    cpu.resume();
    assert!(!cpu.is_halted());
    assert_eq!(cpu.run(100), Exit::Budget);
    assert_eq!(cpu.debug_reg_read(0x100a).unwrap(), 101);
}

#[test]
fn single_step_runs_exactly_one_instruction() {
    let mut cpu = cpu_with(&[addi(10, 0, 7), addi(11, 0, 8), addi(12, 0, 9), J_SELF]);
    cpu.request_halt();
    assert_eq!(cpu.run(10), Exit::Debug);
    assert_eq!(cpu.debug_reg_read(csr::DPC), Some(BASE));
    let d = cpu.debug_reg_read(csr::DCSR).unwrap();
    cpu.debug_reg_write(csr::DCSR, d | dcsr::STEP).unwrap();
    for (n, (reg, val)) in [(10, 7), (11, 8), (12, 9)].into_iter().enumerate() {
        cpu.resume();
        assert_eq!(cpu.run(1000), Exit::Debug);
        assert_eq!(cause_of(&cpu), debug_cause::STEP);
        assert_eq!(
            cpu.debug_reg_read(csr::DPC),
            Some(BASE + 4 * (n as u32 + 1))
        );
        assert_eq!(cpu.debug_reg_read(0x1000 + reg), Some(val));
        assert_eq!(cpu.retired(), n as u64 + 1);
    }
    // Clearing step runs freely again.
    cpu.debug_reg_write(csr::DCSR, d & !dcsr::STEP).unwrap();
    cpu.resume();
    assert_eq!(cpu.run(50), Exit::Budget);
    assert_eq!(cpu.pc(), BASE + 12);
}

#[test]
fn stepping_a_trapping_instruction_halts_on_the_handler() {
    // mtvec = BASE + 0x100 (t0), then a load from an unmapped address.
    let mut prog = vec![NOP; 0x44];
    prog[0] = (0x80000 << 12) | (5 << 7) | 0x37; // lui t0, 0x80000
    prog[1] = addi(5, 5, 0x100);
    prog[2] = (csr::MTVEC as u32) << 20 | (5 << 15) | (1 << 12) | 0x73; // csrw mtvec, t0
    prog[3] = 0x0000_2503; // lw a0, 0(x0): access fault
    prog[0x40] = J_SELF;
    let mut cpu = cpu_with(&prog);
    assert_eq!(cpu.run(3), Exit::Budget);
    assert_eq!(cpu.pc(), BASE + 12);
    cpu.request_halt();
    assert_eq!(cpu.run(10), Exit::Debug);
    let d = cpu.debug_reg_read(csr::DCSR).unwrap();
    cpu.debug_reg_write(csr::DCSR, d | dcsr::STEP).unwrap();
    cpu.resume();
    assert_eq!(cpu.run(10), Exit::Debug);
    assert_eq!(cause_of(&cpu), debug_cause::STEP);
    assert_eq!(cpu.debug_reg_read(csr::DPC), Some(BASE + 0x100));
    assert_eq!(cpu.csr(csr::MCAUSE), Some(cause::LOAD_ACCESS));
    assert_eq!(cpu.csr(csr::MEPC), Some(BASE + 12));
}

#[test]
fn ebreak_enters_debug_mode_only_with_ebreakm() {
    let prog = [addi(10, 0, 1), EBREAK, addi(10, 0, 2), J_SELF];
    // Without ebreakm: an ordinary breakpoint exception to mtvec (0).
    let mut cpu = cpu_with(&prog);
    assert_eq!(cpu.run(2), Exit::Budget);
    assert!(!cpu.is_halted());
    assert_eq!(cpu.csr(csr::MCAUSE), Some(cause::BREAKPOINT));
    // With ebreakm: debug mode, dpc at the ebreak, machine trap state untouched, not retired.
    let mut cpu = cpu_with(&prog);
    let d = cpu.debug_reg_read(csr::DCSR).unwrap();
    cpu.debug_reg_write(csr::DCSR, d | dcsr::EBREAKM).unwrap();
    assert_eq!(cpu.run(100), Exit::Debug);
    assert_eq!(cause_of(&cpu), debug_cause::EBREAK);
    assert_eq!(cpu.debug_reg_read(csr::DPC), Some(BASE + 4));
    assert_eq!(cpu.csr(csr::MCAUSE), Some(0));
    assert_eq!(cpu.retired(), 1);
    // The debugger moves past it.
    cpu.debug_reg_write(csr::DPC, BASE + 8).unwrap();
    cpu.resume();
    assert_eq!(cpu.run(1), Exit::Budget);
    assert_eq!(cpu.debug_reg_read(0x100a), Some(2));
}

#[test]
fn halt_ends_a_wfi_wait() {
    let mut cpu = cpu_with(&[WFI, addi(10, 0, 5), J_SELF]);
    assert_eq!(cpu.run(100), Exit::Wfi);
    cpu.request_halt();
    assert_eq!(cpu.run(100), Exit::Debug);
    assert_eq!(cpu.debug_reg_read(csr::DPC), Some(BASE + 4));
    assert!(!cpu.is_waiting());
    cpu.resume();
    assert_eq!(cpu.run(1), Exit::Budget);
    assert_eq!(cpu.debug_reg_read(0x100a), Some(5));
}

#[test]
fn abstract_register_access() {
    let mut prog = vec![NOP; 0x20];
    prog[0] = J_SELF;
    let mut cpu = cpu_with(&prog);
    cpu.request_halt();
    assert_eq!(cpu.run(10), Exit::Debug);
    assert_eq!(
        cpu.debug_reg_read(csr::MISA),
        Some(preba_softcore::cpu::MISA)
    );
    assert_eq!(cpu.debug_reg_read(csr::MHARTID), Some(0));
    // GPRs: x0 stays zero.
    cpu.debug_reg_write(0x1005, 0xdead_beef).unwrap();
    assert_eq!(cpu.debug_reg_read(0x1005), Some(0xdead_beef));
    cpu.debug_reg_write(0x1000, 1).unwrap();
    assert_eq!(cpu.debug_reg_read(0x1000), Some(0));
    // Machine CSRs go through the ordinary CSR file.
    cpu.debug_reg_write(csr::MSCRATCH, 42).unwrap();
    assert_eq!(cpu.csr(csr::MSCRATCH), Some(42));
    // No triggers, no FPRs, nothing past the GPRs; read-only CSRs refuse writes.
    assert_eq!(cpu.debug_reg_read(0x7a0), None);
    assert_eq!(cpu.debug_reg_write(0x7a0, 0), None);
    assert_eq!(cpu.debug_reg_read(0x1020), None);
    assert_eq!(cpu.debug_reg_write(csr::MHARTID, 3), None);
    // dcsr: fixed fields stay (xdebugver 4, prv M), cause is read-only.
    cpu.debug_reg_write(csr::DCSR, 0).unwrap();
    let d = cpu.debug_reg_read(csr::DCSR).unwrap();
    assert_eq!(d >> 28, 4);
    assert_eq!(d & 3, 3);
    assert_eq!((d >> dcsr::CAUSE_SHIFT) & 7, debug_cause::HALTREQ);
    // Firmware cannot see the debug CSRs.
    assert_eq!(cpu.csr(csr::DCSR), None);
    // dpc write moves where resume continues.
    cpu.debug_reg_write(csr::DPC, BASE + 0x40).unwrap();
    cpu.resume();
    assert_eq!(cpu.run(1), Exit::Budget);
    assert_eq!(cpu.pc(), BASE + 0x44);
}

#[test]
fn reset_leaves_debug_mode() {
    let mut cpu = cpu_with(&[addi(10, 0, 3), J_SELF]);
    cpu.request_halt();
    assert_eq!(cpu.run(10), Exit::Debug);
    cpu.reset();
    assert!(!cpu.is_halted());
    assert_eq!(cpu.pc(), BASE);
    // Reset with a halt request: halts on the first instruction.
    cpu.request_halt();
    assert_eq!(cpu.run(10), Exit::Debug);
    assert_eq!(cpu.debug_reg_read(csr::DPC), Some(BASE));
    assert_eq!(cpu.retired(), 0);
}

#[test]
fn system_bus_access_reaches_ram_and_devices() {
    let mut cpu = cpu_with(&[addi(10, 0, 1), J_SELF]);
    // RAM, every width, little-endian.
    cpu.sys_write(0x8002_0000, 4, 0x1122_3344).unwrap();
    assert_eq!(cpu.sys_read(0x8002_0000, 1), Ok(0x44));
    assert_eq!(cpu.sys_read(0x8002_0002, 2), Ok(0x1122));
    cpu.sys_write(0x8002_0001, 1, 0xaa).unwrap();
    assert_eq!(cpu.sys_read(0x8002_0000, 4), Ok(0x1122_aa44));
    // A device register.
    cpu.sys_write(0x4000_0000, 4, 77).unwrap();
    assert_eq!(cpu.bus().0, 77);
    assert_eq!(cpu.sys_read(0x4000_0000, 4), Ok(77));
    // Unmapped, misaligned, bad size, past the end of RAM.
    assert_eq!(cpu.sys_read(0x1000_0000, 4), Err(Fault));
    assert_eq!(cpu.sys_read(0x8000_0002, 4), Err(Fault));
    assert_eq!(cpu.sys_write(0x8000_0000, 3, 0), Err(Fault));
    assert_eq!(cpu.sys_read(0x8003_0000, 4), Err(Fault));
    // Code written through the system bus replaces what the core decoded before.
    assert_eq!(cpu.run(5), Exit::Budget);
    assert_eq!(cpu.debug_reg_read(0x100a), Some(1));
    cpu.request_halt();
    assert_eq!(cpu.run(1), Exit::Debug);
    cpu.sys_write(BASE, 4, addi(10, 0, 9)).unwrap();
    cpu.debug_reg_write(csr::DPC, BASE).unwrap();
    cpu.resume();
    assert_eq!(cpu.run(1), Exit::Budget);
    assert_eq!(cpu.debug_reg_read(0x100a), Some(9));
}
