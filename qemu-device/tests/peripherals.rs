//! The soft core's peripherals, driven by small hand-assembled programs on the core inside the
//! card (no firmware needed): DMA (card memory, DMEM, faults, refusal of the register windows),
//! the INA226 power monitor, the SPI flash, MSI-X triggers, the CLINT timer in wall time, the
//! test device and a function reset.

use std::sync::Arc;
use std::time::{Duration, Instant};

use preba_card::{Card, CardConfig, Clock, CoreState, HostMemory, IrqRecorder, TestMemory};
use preba_protocol::card as c;
use preba_softcore::Halt;

// --- a tiny RV32I assembler -------------------------------------------------------------
const T0: u32 = 5;
const T1: u32 = 6;
const S0: u32 = 8;
const S1: u32 = 9;

fn lui(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x37
}
fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (rd << 7) | 0x13
}
fn li(rd: u32, v: u32) -> Vec<u32> {
    let hi = v.wrapping_add(0x800) >> 12;
    let lo = v.wrapping_sub(hi << 12) as i32;
    vec![lui(rd, hi & 0xfffff), addi(rd, rd, lo)]
}
fn sw(rs2: u32, off: i32, rs1: u32) -> u32 {
    let i = off as u32 & 0xfff;
    ((i >> 5) << 25) | (rs2 << 20) | (rs1 << 15) | (2 << 12) | ((i & 31) << 7) | 0x23
}
fn lw(rd: u32, off: i32, rs1: u32) -> u32 {
    ((off as u32 & 0xfff) << 20) | (rs1 << 15) | (2 << 12) | (rd << 7) | 0x03
}
/// `bne rs1, rs2, off` (off even, within +-4 KiB).
fn bne(rs1: u32, rs2: u32, off: i32) -> u32 {
    let i = off as u32;
    ((i >> 12) & 1) << 31
        | ((i >> 5) & 0x3f) << 25
        | rs2 << 20
        | rs1 << 15
        | 1 << 12
        | ((i >> 1) & 0xf) << 8
        | ((i >> 11) & 1) << 7
        | 0x63
}
const WFI: u32 = 0x1050_0073;
const SPIN: u32 = 0x0000_006f; // j .
fn csrs_mie(rs1: u32) -> u32 {
    (0x304 << 20) | (rs1 << 15) | (2 << 12) | 0x73
}

struct Prog {
    code: Vec<u32>,
    out: u32, // next result slot in card memory
}

const RESULTS: u32 = 0xA000_1000;

impl Prog {
    fn new() -> Self {
        Prog {
            code: li(S1, RESULTS),
            out: 0,
        }
    }
    fn w(&mut self, addr: u32, v: u32) -> &mut Self {
        self.code.extend(li(S0, addr));
        self.code.extend(li(T0, v));
        self.code.push(sw(T0, 0, S0));
        self
    }
    /// Loads `addr` and stores it to the next result slot.
    fn r(&mut self, addr: u32) -> &mut Self {
        self.code.extend(li(S0, addr));
        self.code.push(lw(T1, 0, S0));
        self.code.push(sw(T1, (4 * self.out) as i32, S1));
        self.out += 1;
        self
    }
    fn dma(&mut self, host: u64, card: u32, len: u32, to_host: bool) -> &mut Self {
        self.w(c::DMA_HOST_LO, host as u32)
            .w(c::DMA_HOST_HI, (host >> 32) as u32)
            .w(c::DMA_CARD, card)
            .w(c::DMA_LEN, len)
            .w(c::DMA_CTRL, 1 | u32::from(to_host) << 1)
            .r(c::DMA_STATUS)
    }
    fn power_off(&mut self) -> Vec<u8> {
        self.w(c::TEST_BASE, 0x5555);
        self.code.push(SPIN);
        elf(&self.code)
    }
}

/// A minimal ELF32 RISC-V executable with one PT_LOAD at IMEM.
fn elf(code: &[u32]) -> Vec<u8> {
    let text: Vec<u8> = code.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut e = vec![0u8; 0x100];
    e[0..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0]);
    let put16 = |e: &mut Vec<u8>, o: usize, v: u16| e[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |e: &mut Vec<u8>, o: usize, v: u32| e[o..o + 4].copy_from_slice(&v.to_le_bytes());
    put16(&mut e, 16, 2);
    put16(&mut e, 18, 243);
    put32(&mut e, 20, 1);
    put32(&mut e, 24, c::IMEM_BASE);
    put32(&mut e, 28, 52);
    put16(&mut e, 40, 52);
    put16(&mut e, 42, 32);
    put16(&mut e, 44, 1);
    put16(&mut e, 46, 40);
    let ph = 52;
    put32(&mut e, ph, 1);
    put32(&mut e, ph + 4, 0x100);
    put32(&mut e, ph + 8, c::IMEM_BASE);
    put32(&mut e, ph + 12, c::IMEM_BASE);
    put32(&mut e, ph + 16, text.len() as u32);
    put32(&mut e, ph + 20, text.len() as u32);
    put32(&mut e, ph + 24, 5);
    put32(&mut e, ph + 28, 4);
    e.extend(text);
    e
}

const HOST: u64 = 0x2_0000_0000;

fn card(prog: &[u8]) -> (Card, Arc<TestMemory>, Arc<IrqRecorder>) {
    card_with(prog, |_| {})
}

/// A card running `prog`, with host memory prepared by `setup` before the core starts.
fn card_with(
    prog: &[u8],
    setup: impl FnOnce(&TestMemory),
) -> (Card, Arc<TestMemory>, Arc<IrqRecorder>) {
    card_on(prog, Clock::default(), setup)
}

fn card_on(
    prog: &[u8],
    clock: Clock,
    setup: impl FnOnce(&TestMemory),
) -> (Card, Arc<TestMemory>, Arc<IrqRecorder>) {
    let mem = Arc::new(TestMemory::new());
    mem.map(HOST, 1 << 20).expect("map");
    setup(&mem);
    let irq = Arc::new(IrqRecorder::new());
    let cfg = CardConfig {
        card_mem_bytes: 16 << 20,
        workers: 1,
        clock,
        ..CardConfig::default()
    };
    let card = Card::new(cfg, prog, mem.clone(), irq.clone()).expect("card");
    (card, mem, irq)
}

fn wait_halt(card: &Card) -> CoreState {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = card.core_state();
        if s != CoreState::Running {
            return s;
        }
        assert!(Instant::now() < deadline, "program did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn results(card: &Card, n: usize) -> Vec<u32> {
    let mut b = vec![0u8; 4 * n];
    assert!(card.card_mem_read(RESULTS, &mut b));
    b.chunks(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect()
}

#[test]
fn dma_engine_paths_and_faults() {
    let mut p = Prog::new();
    p.dma(HOST, 0xA000_0000, 16, false) // host -> card memory
        .dma(HOST + 0x100, 0xA000_0000, 16, true) // card memory -> host
        .dma(HOST, c::DMEM_BASE + 0x8000, 16, false) // host -> DMEM
        .dma(HOST + 0x200, c::DMEM_BASE + 0x8000, 16, true) // DMEM -> host
        .dma(0x10, 0xA000_0000, 16, false) // outside the IOMMU windows
        .r(c::DMA_FAULT_LO)
        .r(c::DMA_FAULT_HI)
        .dma(HOST, c::HOSTIF_BASE, 16, false) // into the card's own registers: refused
        .dma(HOST, c::LOG_RING_BASE, 16, false)
        .dma(HOST, 0xA000_0000 + (16 << 20) - 8, 16, false) // past the end of card memory
        .r(c::IRQ_PENDING);
    let prog = p.power_off();
    let (card, mem, _irq) = card_with(&prog, |mem| mem.write(HOST, b"0123456789abcdef").unwrap());
    assert_eq!(wait_halt(&card), CoreState::Halted(Halt::PowerOff));
    let r = results(&card, 11);
    assert_eq!(&r[..4], &[2, 2, 2, 2], "done, done, done, done");
    let mut b = [0u8; 16];
    mem.read(HOST + 0x100, &mut b).unwrap();
    assert_eq!(&b, b"0123456789abcdef");
    mem.read(HOST + 0x200, &mut b).unwrap();
    assert_eq!(&b, b"0123456789abcdef");
    assert_eq!(r[4], 3, "fault outside the windows");
    assert_eq!((r[5], r[6]), (0x10, 0));
    assert_eq!(
        &r[7..10],
        &[3, 3, 3],
        "register windows and out-of-range card side refused"
    );
    assert_ne!(r[10] & c::IRQ_DMA, 0, "IRQ_DMA pending");
    let mut back = [0u8; 16];
    mem.read(HOST, &mut back).unwrap();
    assert_eq!(
        &back, b"0123456789abcdef",
        "a refused transfer touches nothing"
    );
}

#[test]
fn board_peripherals() {
    let mut p = Prog::new();
    // INA226: manufacturer, die id, bus voltage, power.
    for reg in [0xFEu32, 0xFF, 0x02, 0x03] {
        p.w(c::I2C_ADDR, 0x40)
            .w(c::I2C_DATA, reg)
            .w(c::I2C_CTRL, 0x207)
            .r(c::I2C_DATA)
            .r(c::I2C_DATA);
    }
    // A missing target NACKs.
    p.w(c::I2C_ADDR, 0x41)
        .w(c::I2C_DATA, 0)
        .w(c::I2C_CTRL, 0x207)
        .r(c::I2C_STATUS);
    // SPI flash: RDID, then READ 4 bytes at 0 (the boot record's magic).
    p.w(c::SPI_CS, 1).w(c::SPI_DATA, 0x9F);
    for _ in 0..3 {
        p.w(c::SPI_DATA, 0).r(c::SPI_DATA);
    }
    p.w(c::SPI_CS, 0).w(c::SPI_CS, 1);
    for b in [0x03, 0, 0, 0] {
        p.w(c::SPI_DATA, b);
    }
    for _ in 0..4 {
        p.w(c::SPI_DATA, 0).r(c::SPI_DATA);
    }
    p.w(c::SPI_CS, 0);
    // INFO, GPIO, MSI-X trigger, log ring.
    p.r(c::INFO_IMAGE_CUS)
        .r(c::INFO_AUDIO_CUS)
        .r(c::INFO_NORM_CUS)
        .r(c::INFO_CARD_MEM_SIZE)
        .r(c::INFO_CU_HZ)
        .w(c::GPIO_OUT, 3)
        .w(c::HOSTIF_IRQ_TRIGGER, 3)
        .w(c::LOG_RING_BASE, 0x0403_0201)
        .w(c::LOG_HEAD, 4)
        .r(c::CU_BASE + c::CU_KIND)
        .r(c::CU_BASE + 4 * c::CU_STRIDE + c::CU_KIND)
        .r(c::CU_BASE + 6 * c::CU_STRIDE + c::CU_KIND);
    let prog = p.power_off();
    let (card, _mem, irq) = card(&prog);
    assert_eq!(wait_halt(&card), CoreState::Halted(Halt::PowerOff));
    let r = results(&card, 36);
    let reg = |i: usize| (r[2 * i] << 8) | r[2 * i + 1];
    assert_eq!(reg(0), 0x5449);
    assert_eq!(reg(1), 0x2260);
    assert_eq!(reg(2), 9600, "12 V at 1.25 mV/LSB");
    let watts = f64::from(reg(3)) * 0.025;
    assert!((watts - card.board_power_w()).abs() < 0.1, "{watts} W");
    assert_eq!(r[8] & 2, 2, "NACK from 0x41");
    assert_eq!(&r[9..12], &[0xEF, 0x40, 0x18], "JEDEC id of a 16 MiB flash");
    assert_eq!(
        &r[12..16],
        &[b'P' as u32, b'B' as u32, b'R' as u32, b'1' as u32]
    );
    assert_eq!(&r[16..21], &[4, 2, 1, 16 << 20, 250_000_000]);
    assert_eq!(
        &r[21..24],
        &[0, 1, 2],
        "CU kinds: image, audio Mel, normalize"
    );
    assert_eq!(card.leds(), 3);
    assert_eq!(irq.msix_count(3), 1);
    let mut head = [0u8; 4];
    card.bar2_read(0, &mut head);
    assert_eq!(u32::from_le_bytes(head), 4);
    let mut ring = [0u8; 4];
    card.bar2_read(0x8000, &mut ring);
    assert_eq!(ring, [1, 2, 3, 4]);
}

/// mtimecmp = mtime + 30 ms, mie.MTIE, wfi (MIE stays 0: wfi ends, nothing traps); mtime
/// before and after, then a '!' on the UART and power off.
fn timer_prog() -> Vec<u8> {
    let mut p = Prog::new();
    p.r(c::CLINT_MTIME);
    p.code.extend(li(S0, c::CLINT_MTIME));
    p.code.push(lw(T1, 0, S0));
    p.code.push(addi(T1, T1, 0)); // t1 = mtime
    p.code.extend(li(T0, 300_000));
    p.code.push((T0 << 20) | (T1 << 15) | (T1 << 7) | 0x33); // add t1, t1, t0
    p.code.extend(li(S0, c::CLINT_MTIMECMP + 4));
    p.code.extend(li(T0, 0));
    p.code.push(sw(T0, 0, S0));
    p.code.extend(li(S0, c::CLINT_MTIMECMP));
    p.code.push(sw(T1, 0, S0));
    p.code.extend(li(T0, 1 << 7));
    p.code.push(csrs_mie(T0));
    p.code.push(WFI);
    p.r(c::CLINT_MTIME);
    p.w(c::UART_BASE, u32::from(b'!'));
    p.power_off()
}

#[test]
fn timer_wakes_wfi_in_wall_time_and_reset_restarts() {
    let t = Instant::now();
    let (card, _mem, _irq) = card_on(&timer_prog(), Clock::Wall, |_| {});
    assert_eq!(wait_halt(&card), CoreState::Halted(Halt::PowerOff));
    let r = results(&card, 2);
    let ticks = r[1].wrapping_sub(r[0]);
    assert!(ticks >= 300_000, "woke after {ticks} ticks");
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(card.uart(), b"!");
    // A function reset runs the program again from the entry.
    card.reset(Duration::from_secs(5)).expect("reset");
    assert_eq!(wait_halt(&card), CoreState::Halted(Halt::PowerOff));
    assert_eq!(card.uart(), b"!!");
}

#[test]
fn timer_wakes_wfi_at_its_modeled_deadline() {
    let t = Instant::now();
    let (card, _mem, _irq) = card_on(&timer_prog(), Clock::Modeled, |_| {});
    assert_eq!(wait_halt(&card), CoreState::Halted(Halt::PowerOff));
    let r = results(&card, 2);
    let ticks = r[1].wrapping_sub(r[0]);
    // 15 instructions from the first read to the wfi, 2 after it: under one tick (25 cycles)
    // past the deadline.
    assert!(
        (300_000..=300_001).contains(&ticks),
        "woke after {ticks} ticks"
    );
    // Nothing in flight: idle time passes at the wall clock's pace.
    assert!(t.elapsed() >= Duration::from_millis(30));
    // A reset does not take card time back.
    let before = card.time();
    card.reset(Duration::from_secs(5)).expect("reset");
    assert_eq!(wait_halt(&card), CoreState::Halted(Halt::PowerOff));
    assert!(
        card.time() >= before + Duration::from_millis(30),
        "{:?} then {:?}",
        before,
        card.time()
    );
    let r = results(&card, 2);
    assert!(
        r[0] as u64 * 100 >= before.as_nanos() as u64 - 100,
        "mtime after the reset"
    );
}

#[test]
fn modeled_mtime_counts_instructions() {
    // mtime; 2 x N instructions of a countdown loop; mtime; minstret.
    const N: u32 = 5_000_000;
    let mut p = Prog::new();
    p.r(c::CLINT_MTIME);
    p.code.extend(li(T0, N));
    p.code.push(addi(T0, T0, -1));
    p.code.push(bne(T0, 0, -4));
    p.r(c::CLINT_MTIME);
    let prog = p.power_off();
    let t = Instant::now();
    let (card, _mem, _irq) = card_on(&prog, Clock::Modeled, |_| {});
    assert_eq!(wait_halt(&card), CoreState::Halted(Halt::PowerOff));
    let wall = t.elapsed();
    let r = results(&card, 2);
    // Between the two loads: the store of the first result, li (2), the loop (2N), li (2).
    let instructions = u64::from(2 * N) + 5;
    let ticks = u64::from(r[1].wrapping_sub(r[0]));
    let core_hz = u64::from(CardConfig::default().core_hz);
    let want = instructions * 10_000_000 / core_hz;
    assert!(
        ticks.abs_diff(want) <= 1,
        "{ticks} ticks for {instructions} instructions (want {want})"
    );
    eprintln!(
        "{instructions} instructions = {:.1} ms of card time in {:.1} ms of wall time \
         ({:.0} M instructions per wall second)",
        ticks as f64 / 1e4,
        wall.as_secs_f64() * 1e3,
        instructions as f64 / wall.as_secs_f64() / 1e6
    );
    // The card's instruction count: the whole program (the loop and a few dozen around it),
    // and after a reset the second run on top of the first (counted over every boot).
    let first = card.instructions();
    assert!(
        (instructions..instructions + 64).contains(&first),
        "{first} instructions retired, the loop alone is {instructions}"
    );
    card.reset(Duration::from_secs(5)).expect("reset");
    assert_eq!(wait_halt(&card), CoreState::Halted(Halt::PowerOff));
    assert_eq!(card.instructions(), 2 * first);
}

#[test]
fn bar0_rules_without_firmware() {
    let (card, _mem, irq) = card(&elf(&[WFI, SPIN]));
    use preba_protocol::regs;
    assert_eq!(card.read32(regs::VS), 0x0001_0001, "protocol 1.1");
    let cap = card.read64(regs::CAP);
    assert_eq!(cap & 0xffff, 4095);
    assert_eq!((cap >> 16) & 0xff, 8);
    card.write32(regs::SCRATCH, 0x1234_5678);
    assert_eq!(card.read32(regs::SCRATCH), 0x1234_5678);
    let mut b2 = [0u8; 2];
    card.bar0_read(regs::SCRATCH, &mut b2);
    assert_eq!(b2, [0xff, 0xff], "other sizes read all-ones");
    card.bar0_write(regs::SCRATCH, &[1, 2]);
    assert_eq!(card.read32(regs::SCRATCH), 0x1234_5678, "and drop writes");
    card.write32(regs::sq_doorbell(2), 5);
    assert_eq!(card.read32(regs::sq_doorbell(2)), 0, "doorbells read 0");
    card.write64(regs::ASQ, 0x1_2345_6000);
    assert_eq!(card.read64(regs::ASQ), 0x1_2345_6000);
    assert_eq!(card.read32(0x500), 0, "unlisted offsets read 0");
    let mut b = [0u8; 4];
    card.bar2_read(4, &mut b);
    assert_eq!(u32::from_le_bytes(b), c::LOG_RING_SIZE);
    assert_eq!(irq.total(), 0);
    drop(card); // joins the core and the workers
}

fn beq(rs1: u32, rs2: u32, off: i32) -> u32 {
    let i = off as u32 & 0x1fff;
    ((i >> 12) << 31)
        | (((i >> 5) & 0x3f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (((i >> 1) & 0xf) << 8)
        | (((i >> 11) & 1) << 7)
        | 0x63
}

#[test]
fn cu_reset_discards_and_job_matches_golden() {
    use preba_protocol::admin::encode_profile;
    use preba_protocol::profile::{ImageProfile, Profile};
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let jpeg = std::fs::read(root.join("fixtures/images/sampling_420.jpg")).expect("jpeg");
    let prof = ImageProfile::default();
    // The aborted job decodes a large photo, so it is surely still running
    // when the reset comes a few instructions later.
    let big = std::fs::read(root.join("fixtures/images/large_2560x1440.jpg")).expect("jpeg");
    let n = jpeg.len() as u32;
    let nb = big.len() as u32;
    let (src, dst, pa) = (0xA001_0000u32, 0xA010_0000u32, 0xA000_0000u32);
    let src_big = 0xA020_0000u32;
    let cu = |off: u32| c::CU_BASE + off;
    let mut p = Prog::new();
    p.dma(HOST, src, n, false)
        .dma(HOST + 0xF_F000, pa, 64, false)
        .dma(HOST + 0x1_0000, src_big, nb, false)
        .w(cu(c::CU_SRC), src_big)
        .w(cu(c::CU_SRC_LEN), nb)
        .w(cu(c::CU_DST), dst)
        .w(cu(c::CU_DST_LEN), prof.output_len() as u32)
        .w(cu(c::CU_PROFILE), pa)
        .w(cu(c::CU_CTRL), 1)
        .w(cu(c::CU_CTRL), 2) // reset: the running job is aborted, its result discarded
        .r(cu(c::CU_STATUS))
        .w(c::IRQ_ACK, u32::MAX)
        .w(cu(c::CU_SRC), src)
        .w(cu(c::CU_SRC_LEN), n)
        .w(cu(c::CU_CTRL), 1);
    // while CU_STATUS == busy {}
    p.code.extend(li(S0, cu(c::CU_STATUS)));
    p.code.push(addi(T0, 0, 1));
    p.code.push(lw(T1, 0, S0));
    p.code.push(beq(T1, T0, -4));
    p.r(cu(c::CU_STATUS))
        .r(cu(c::CU_WRITTEN))
        .r(cu(c::CU_RESULT0))
        .r(cu(c::CU_RESULT1))
        .r(cu(c::CU_CYCLES_LO))
        .r(cu(c::CU_ENERGY_NJ))
        .r(c::IRQ_PENDING);
    let prog = p.power_off();
    let (card, _mem, _irq) = card_with(&prog, |mem| {
        mem.write(HOST, &jpeg).unwrap();
        mem.write(HOST + 0x1_0000, &big).unwrap();
        mem.write(HOST + 0xF_F000, &encode_profile(&Profile::Image(prof)))
            .unwrap();
    });
    assert_eq!(wait_halt(&card), CoreState::Halted(Halt::PowerOff));
    let r = results(&card, 11);
    assert_eq!(&r[..3], &[2, 2, 2], "DMAs done");
    let r = &r[1..];
    assert_eq!(r[2], 0, "idle right after CU_CTRL reset");
    assert_eq!(r[3], 2, "second job done");
    let want = preba_preprocess::image::card_preprocess_image(&jpeg, &prof).expect("golden");
    assert_eq!(r[4] as usize, want.data.len());
    assert_eq!((r[5], r[6]), (want.width, want.height));
    assert!(
        r[7] > 0 && r[8] > 0,
        "modeled cycles {} and energy {} nJ",
        r[7],
        r[8]
    );
    assert_ne!(r[9] & 1 << c::IRQ_CU_SHIFT, 0, "CU 0 completion pending");
    let mut out = vec![0u8; want.data.len()];
    assert!(card.card_mem_read(dst, &mut out));
    assert!(
        out == want.data,
        "CU output bit-identical to the golden model"
    );
    // The aborted job must not count or overwrite. No wait needed, none would prove it: with
    // one worker thread the CU jobs run in the order they started, so the aborted job's
    // computation had ended (its result checked against the CU's generation and dropped)
    // before the second job, whose output was read above, began.
    assert_eq!(
        card.config().workers,
        1,
        "one worker: jobs run in start order"
    );
    let cus = card.cus();
    assert_eq!(cus[0].jobs, 1, "the aborted job's result was discarded");
    assert!(!cus[0].busy);
}
