//! The debug port without the card: the JTAG TAP and DTM clocked bit by bit, the Debug Module on
//! a bare soft core, and the Black Magic Probe request handler.

use preba_card::debug::bmp::{Parser, handle};
use preba_card::debug::dm::{cmderr, reg, sberror};
use preba_card::debug::tap::{IR_DMI, IR_DTMCS, IR_LEN};
use preba_card::debug::{Dm, Dmi, IDCODE, Tap};
use preba_softcore::{Config, Cpu, IMEM, NoBus, csr, dcsr, debug_cause};

/// A Debug Module on a bare core; the test drives the core between accesses as the card's
/// core thread would.
struct Direct {
    dm: Dm,
    cpu: Cpu<NoBus>,
}

impl Dmi for Direct {
    fn access(&mut self, write: bool, addr: u32, data: u32) -> Option<u32> {
        if write {
            self.dm.write(addr, data, &mut self.cpu);
            Some(0)
        } else {
            Some(self.dm.read(addr, &mut self.cpu))
        }
    }
}

fn direct(prog: &[u32]) -> Direct {
    let mut cpu = Cpu::new(Config::default(), NoBus).unwrap();
    let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
    cpu.write_ram(IMEM.base, &bytes).unwrap();
    Direct { dm: Dm::new(), cpu }
}

/// A JTAG host: the TAP plus a DMI backend.
struct Jtag<D = Direct> {
    tap: Tap,
    d: D,
}

impl Jtag {
    fn new(prog: &[u32]) -> Jtag {
        Jtag::with(direct(prog))
    }
}

impl<D: Dmi> Jtag<D> {
    fn with(d: D) -> Jtag<D> {
        let mut j = Jtag {
            tap: Tap::new(IDCODE),
            d,
        };
        j.reset();
        j
    }
    fn clk(&mut self, tms: bool, tdi: bool) -> bool {
        self.tap.clock(tms, tdi, &mut self.d)
    }
    fn reset(&mut self) {
        for _ in 0..5 {
            self.clk(true, false);
        }
        self.clk(false, false); // Run-Test/Idle
    }
    /// From Run-Test/Idle: shift `len` bits of `value` through IR (`ir` true) or DR and back to
    /// Run-Test/Idle; returns what was captured.
    fn scan(&mut self, ir: bool, value: u64, len: u32) -> u64 {
        self.clk(true, false); // Select-DR
        if ir {
            self.clk(true, false); // Select-IR
        }
        self.clk(false, false); // Capture
        self.clk(false, false); // Shift
        let mut out = 0;
        for i in 0..len {
            if self.clk(i + 1 == len, value >> i & 1 != 0) {
                out |= 1 << i;
            }
        }
        self.clk(true, false); // Update
        self.clk(false, false); // Idle
        out
    }
    fn ir(&mut self, v: u8) -> u64 {
        self.scan(true, u64::from(v), IR_LEN)
    }
    fn dmi(&mut self, op: u64, addr: u32, data: u32) -> (u32, u32) {
        self.ir(IR_DMI);
        self.scan(false, u64::from(addr) << 34 | u64::from(data) << 2 | op, 41);
        // The result comes with the next scan (a nop).
        let r = self.scan(false, 0, 41);
        ((r >> 2) as u32, (r & 3) as u32)
    }
    fn read(&mut self, addr: u32) -> u32 {
        let (v, op) = self.dmi(1, addr, 0);
        assert_eq!(op, 0, "DMI read of {addr:#x} failed");
        v
    }
    fn write(&mut self, addr: u32, v: u32) {
        let (_, op) = self.dmi(2, addr, v);
        assert_eq!(op, 0, "DMI write of {addr:#x} failed");
    }
    fn cmderr(&mut self) -> u32 {
        (self.read(reg::ABSTRACTCS) >> 8) & 7
    }
    /// Access Register command, 32-bit, transfer.
    fn access_reg(&mut self, regno: u16, write: bool) {
        let c = 2 << 20 | 1 << 17 | u32::from(write) << 16 | u32::from(regno);
        self.write(reg::COMMAND, c);
    }
    fn read_reg(&mut self, regno: u16) -> Result<u32, u32> {
        self.access_reg(regno, false);
        match self.cmderr() {
            0 => Ok(self.read(reg::DATA0)),
            e => {
                self.write(reg::ABSTRACTCS, 7 << 8);
                Err(e)
            }
        }
    }
    fn write_reg(&mut self, regno: u16, v: u32) -> Result<(), u32> {
        self.write(reg::DATA0, v);
        self.access_reg(regno, true);
        match self.cmderr() {
            0 => Ok(()),
            e => {
                self.write(reg::ABSTRACTCS, 7 << 8);
                Err(e)
            }
        }
    }
}

const NOP: u32 = 0x0000_0013;
/// `addi a0, a0, 1; j .-4`
const COUNT: [u32; 2] = [0x0015_0513, 0xffdf_f06f];

#[test]
fn tap_reports_idcode_ir_capture_and_dtmcs() {
    let mut j = Jtag::new(&[NOP]);
    // Test-Logic-Reset selects IDCODE.
    assert_eq!(j.scan(false, u64::MAX, 32) as u32, IDCODE);
    assert_eq!(IDCODE & 1, 1);
    assert!((1..127).contains(&((IDCODE >> 1) & 0x7f)), "JEDEC-shaped");
    // IR captures 0b00001.
    assert_eq!(j.ir(IR_DTMCS), 1);
    let dtmcs = j.scan(false, 0, 32) as u32;
    assert_eq!(dtmcs & 0xf, 1, "version 0.13");
    assert_eq!((dtmcs >> 4) & 0x3f, 7, "abits");
    assert_eq!((dtmcs >> 10) & 3, 0, "dmistat");
    // BYPASS is one bit of 0.
    j.ir(0x1f);
    assert_eq!(j.scan(false, 0b1110, 4), 0b1100);
}

#[test]
fn dm_halt_resume_and_status() {
    let mut j = Jtag::new(&COUNT);
    // Inactive DM: dmcontrol reads dmactive 0.
    assert_eq!(j.read(reg::DMCONTROL) & 1, 0);
    j.write(reg::DMCONTROL, 1);
    let s = j.read(reg::DMSTATUS);
    assert_eq!(s & 0xf, 2, "version 0.13");
    assert_ne!(s & 1 << 7, 0, "authenticated");
    assert_ne!(s & 3 << 10, 0, "running");
    assert_eq!(s & 3 << 8, 0);
    // hartsel is hardwired to 0: one hart.
    j.write(reg::DMCONTROL, 0x3ff_ffc0 | 1);
    assert_eq!(j.read(reg::DMCONTROL) & 0x3ff_ffc0, 0);
    assert_eq!(
        j.read(reg::ABSTRACTCS) & 0x1f00_000f,
        1,
        "no progbuf, datacount 1"
    );
    // Run a bit, then halt.
    assert_eq!(j.d.cpu.run(1001), preba_softcore::Exit::Budget);
    j.write(reg::DMCONTROL, 1 << 31 | 1);
    let s = j.read(reg::DMSTATUS);
    assert_eq!(s & 3 << 8, 3 << 8, "allhalted");
    assert_eq!(s & 3 << 10, 0);
    assert_eq!(j.read(reg::HALTSUM0), 1);
    assert_eq!(j.read_reg(0x100a), Ok(501));
    let d = j.read_reg(csr::DCSR).unwrap();
    assert_eq!((d >> dcsr::CAUSE_SHIFT) & 7, debug_cause::HALTREQ);
    // Resume: resumeack, running again.
    j.write(reg::DMCONTROL, 1 << 30 | 1);
    let s = j.read(reg::DMSTATUS);
    assert_eq!(s & 3 << 16, 3 << 16, "allresumeack");
    assert_ne!(s & 3 << 10, 0, "running");
    assert!(!j.d.cpu.is_halted());
    // dmactive 0 resets the DM, not the hart.
    j.write(reg::DMCONTROL, 0);
    assert_eq!(j.read(reg::DMCONTROL), 0);
    assert!(!j.d.cpu.is_halted());
}

#[test]
fn dm_single_step_and_ebreak() {
    let mut j = Jtag::new(&[NOP, NOP, 0x0010_0073, NOP]);
    j.write(reg::DMCONTROL, 1 << 31 | 1);
    j.write(reg::DMCONTROL, 1);
    let d = j.read_reg(csr::DCSR).unwrap();
    j.write_reg(csr::DCSR, d | dcsr::STEP | dcsr::EBREAKM)
        .unwrap();
    j.write(reg::DMCONTROL, 1 << 30 | 1);
    // The step runs on the core (the card's core thread does this between accesses).
    assert_eq!(j.d.cpu.run(100), preba_softcore::Exit::Debug);
    assert_eq!(j.read_reg(csr::DPC), Ok(IMEM.base + 4));
    let d = j.read_reg(csr::DCSR).unwrap();
    assert_eq!((d >> dcsr::CAUSE_SHIFT) & 7, debug_cause::STEP);
    // Without step: runs into the ebreak, which enters debug mode.
    j.write_reg(csr::DCSR, d & !dcsr::STEP).unwrap();
    j.write(reg::DMCONTROL, 1 << 30 | 1);
    assert_eq!(j.d.cpu.run(100), preba_softcore::Exit::Debug);
    assert_eq!(j.read_reg(csr::DPC), Ok(IMEM.base + 8));
    let d = j.read_reg(csr::DCSR).unwrap();
    assert_eq!((d >> dcsr::CAUSE_SHIFT) & 7, debug_cause::EBREAK);
}

#[test]
fn dm_abstract_commands() {
    let mut j = Jtag::new(&[NOP]);
    j.write(reg::DMCONTROL, 1 << 31 | 1);
    j.write(reg::DMCONTROL, 1);
    assert_eq!(j.read_reg(csr::MISA), Ok(preba_softcore::cpu::MISA));
    assert_eq!(j.read_reg(csr::MHARTID), Ok(0));
    j.write_reg(0x1008, 0x1234_5678).unwrap();
    assert_eq!(j.d.cpu.reg(8), 0x1234_5678);
    assert_eq!(j.read_reg(0x1008), Ok(0x1234_5678));
    j.write_reg(csr::DPC, IMEM.base + 0x10).unwrap();
    assert_eq!(j.read_reg(csr::DPC), Ok(IMEM.base + 0x10));
    // tselect: no triggers, an exception (probe-rs reads this as "0 triggers").
    assert_eq!(j.read_reg(0x7a0), Err(cmderr::EXCEPTION));
    // cmderr is sticky: a command is ignored until it is cleared.
    j.access_reg(0x7a0, false);
    assert_eq!(j.cmderr(), cmderr::EXCEPTION);
    j.write(reg::DATA0, 0);
    j.access_reg(csr::MHARTID, false);
    assert_eq!(j.read(reg::DATA0), 0);
    assert_eq!(j.cmderr(), cmderr::EXCEPTION);
    j.write(reg::ABSTRACTCS, 7 << 8);
    assert_eq!(j.cmderr(), 0);
    // 64-bit size, postexec (no program buffer) and other command types: not supported.
    j.write(reg::COMMAND, 3 << 20 | 1 << 17 | 0x1008);
    assert_eq!(j.cmderr(), cmderr::NOT_SUPPORTED);
    j.write(reg::ABSTRACTCS, 7 << 8);
    j.write(reg::COMMAND, 2 << 20 | 1 << 18);
    assert_eq!(j.cmderr(), cmderr::NOT_SUPPORTED);
    j.write(reg::ABSTRACTCS, 7 << 8);
    j.write(reg::COMMAND, 2 << 24);
    assert_eq!(j.cmderr(), cmderr::NOT_SUPPORTED);
    j.write(reg::ABSTRACTCS, 7 << 8);
    // abstractauto on data0 with postincrement: consecutive GPR writes.
    j.write(reg::COMMAND, 2 << 20 | 1 << 19 | 1 << 17 | 1 << 16 | 0x100a);
    j.write(reg::ABSTRACTAUTO, 1);
    assert_eq!(j.read(reg::ABSTRACTAUTO), 1);
    j.write(reg::DATA0, 11);
    j.write(reg::DATA0, 12);
    j.write(reg::ABSTRACTAUTO, 0);
    // The command ran when written (data0 was 0), then once per data0 write.
    assert_eq!(
        [j.d.cpu.reg(10), j.d.cpu.reg(11), j.d.cpu.reg(12)],
        [0, 11, 12]
    );
}

#[test]
fn dm_system_bus_access() {
    let mut j = Jtag::new(&[NOP]);
    j.write(reg::DMCONTROL, 1);
    let sbcs = j.read(reg::SBCS);
    assert_eq!(sbcs >> 29, 1, "sbversion");
    assert_eq!((sbcs >> 5) & 0x7f, 32, "sbasize");
    assert_eq!(sbcs & 0x1f, 0b111, "8/16/32-bit");
    // Autoincrementing 32-bit writes.
    j.write(reg::SBCS, 2 << 17 | 1 << 16);
    j.write(reg::SBADDRESS0, 0x8002_0000);
    for i in 0..4u32 {
        j.write(reg::SBDATA0, 0x1111_1111 * (i + 1));
    }
    assert_eq!(j.read(reg::SBADDRESS0), 0x8002_0010);
    assert_eq!(
        j.d.cpu.ram(0x8002_0000, 8).unwrap(),
        &[0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22]
    );
    // Block read: readonaddr + readondata + autoincrement.
    j.write(reg::SBCS, 1 << 20 | 2 << 17 | 1 << 16 | 1 << 15);
    j.write(reg::SBADDRESS0, 0x8002_0000);
    let got: Vec<u32> = (0..4).map(|_| j.read(reg::SBDATA0)).collect();
    assert_eq!(got, [0x1111_1111, 0x2222_2222, 0x3333_3333, 0x4444_4444]);
    // Byte access.
    j.write(reg::SBCS, 1 << 20);
    j.write(reg::SBADDRESS0, 0x8002_0005);
    assert_eq!(j.read(reg::SBDATA0), 0x22);
    // Errors: bad address, alignment, size; sticky until cleared, accesses ignored meanwhile.
    j.write(reg::SBCS, 2 << 17);
    j.write(reg::SBADDRESS0, 0x1000_0000);
    j.write(reg::SBDATA0, 5);
    assert_eq!((j.read(reg::SBCS) >> 12) & 7, sberror::BAD_ADDRESS);
    j.write(reg::SBADDRESS0, 0x8002_0000);
    j.write(reg::SBDATA0, 0xdead);
    assert_eq!(
        j.d.cpu.ram(0x8002_0000, 1).unwrap(),
        &[0x11],
        "ignored while sberror"
    );
    j.write(reg::SBCS, 7 << 12 | 2 << 17);
    assert_eq!((j.read(reg::SBCS) >> 12) & 7, 0);
    j.write(reg::SBADDRESS0, 0x8002_0002);
    j.write(reg::SBDATA0, 5);
    assert_eq!((j.read(reg::SBCS) >> 12) & 7, sberror::ALIGNMENT);
    j.write(reg::SBCS, 7 << 12 | 3 << 17);
    j.write(reg::SBADDRESS0, 0x8002_0000);
    j.write(reg::SBDATA0, 5);
    assert_eq!((j.read(reg::SBCS) >> 12) & 7, sberror::SIZE);
}

#[test]
fn dm_hartreset_and_ndmreset_with_halt() {
    let mut j = Jtag::new(&COUNT);
    j.write(reg::DMCONTROL, 1);
    assert_eq!(j.d.cpu.run(100), preba_softcore::Exit::Budget);
    // hartreset + haltreq: hartreset sticks (supported), the hart is held.
    j.write(reg::DMCONTROL, 1 << 31 | 1 << 29 | 1);
    assert_ne!(j.read(reg::DMCONTROL) & 1 << 29, 0);
    assert_ne!(j.read(reg::DMSTATUS) & 3 << 12, 0, "unavailable in reset");
    j.write(reg::DMCONTROL, 1 << 31 | 1);
    let s = j.read(reg::DMSTATUS);
    assert_eq!(s & 3 << 8, 3 << 8, "halted out of reset");
    assert_eq!(s & 3 << 18, 3 << 18, "havereset");
    assert_eq!(j.read_reg(csr::DPC), Ok(IMEM.base));
    assert_eq!(j.read_reg(0x100a), Ok(0), "registers reset");
    j.write(reg::DMCONTROL, 1 << 28 | 1);
    assert_eq!(j.read(reg::DMSTATUS) & 3 << 18, 0, "ackhavereset");
    // ndmreset without haltreq: runs from the reset vector once released.
    j.write(reg::DMCONTROL, 1 << 1 | 1);
    j.write(reg::DMCONTROL, 1);
    assert!(!j.d.cpu.is_halted());
    assert_eq!(j.d.cpu.pc(), IMEM.base);
    assert_ne!(j.read(reg::DMSTATUS) & 3 << 18, 0);
}

#[test]
fn dtm_reports_a_failed_access_until_dmireset() {
    struct Broken;
    impl Dmi for Broken {
        fn access(&mut self, _: bool, _: u32, _: u32) -> Option<u32> {
            None
        }
    }
    let mut j = Jtag::with(Broken);
    let (_, op) = j.dmi(1, reg::DMSTATUS, 0);
    assert_eq!(op, 2, "op failed");
    j.ir(IR_DTMCS);
    assert_eq!((j.scan(false, 0, 32) >> 10) & 3, 2, "dmistat");
    j.scan(false, 1 << 16, 32); // dmireset
    assert_eq!((j.scan(false, 0, 32) >> 10) & 3, 0);
}

#[test]
fn bmp_requests() {
    let mut tap = Tap::new(IDCODE);
    let mut d = direct(&[NOP]);
    let mut run = |input: &str, tap: &mut Tap| -> String {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for &c in input.as_bytes() {
            if let Some(pkt) = p.push(c) {
                handle(pkt, tap, &mut d, &mut out).unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    };
    assert!(run("+#!GA#", &mut tap).starts_with("&Kpreba-card"));
    assert_eq!(run("!HC#", &mut tap), "&K1#");
    assert_eq!(run(" !GV#!GZ0#!GF003d0900#", &mut tap), "&K0#&K0#&K0#");
    assert_eq!(run("!HJ0000000500000000ffffffff#", &mut tap), "&K0#");
    // IDCODE through batched shifts: reset, TMS 0,1,0,0 to Shift-DR, 32 bits out.
    assert_eq!(run("+#!JR#", &mut tap), "&K0#");
    assert_eq!(run("!JT0402#", &mut tap), "&K0#");
    assert_eq!(run("!Jd20ffffffff#", &mut tap), format!("&K{IDCODE:x}#"));
    // Then the ones shifted in come back; the last bit with TMS (D) leaves Shift-DR.
    assert_eq!(run("!JD08ff#", &mut tap), "&Kff#");
    // Bit by bit: TLR, Idle, Select-DR, Capture, Shift, then the IDCODE's LSB.
    run("!JR#", &mut tap);
    for s in ["!JN00#", "!JN10#", "!JN00#", "!JN00#"] {
        assert_eq!(run(s, &mut tap), "&K0#");
    }
    assert_eq!(run("!JN01#", &mut tap), "&K1#");
    // Unknown, malformed and too long requests.
    assert_eq!(run("!HL000000000000000#", &mut tap), "&N#");
    assert_eq!(run("!Jdzz#", &mut tap), "&P2#");
    assert_eq!(run("!Jd00#", &mut tap), "&P2#");
    let long = format!("!J{}#", "1".repeat(500));
    assert_eq!(run(&long, &mut tap), "&P1#");
}
