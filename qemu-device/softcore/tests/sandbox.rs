//! The interpreter never panics: random instruction words, random registers, a bus that
//! faults, answers garbage and toggles interrupt lines at random.

use preba_softcore::{Bus, Config, Cpu, DMEM, Exit, Fault, Halt, IMEM, Mem, Poll};
use proptest::prelude::*;

struct ChaosBus {
    rng: u64,
}

impl ChaosBus {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

impl Bus for ChaosBus {
    fn load(&mut self, _addr: u32, _size: u8, _now: u64) -> Result<u32, Fault> {
        let r = self.next();
        if r & 3 == 0 {
            Err(Fault)
        } else {
            Ok((r >> 8) as u32)
        }
    }
    fn store(&mut self, _addr: u32, _size: u8, _v: u32, _now: u64) -> Result<(), Fault> {
        if self.next() & 3 == 0 {
            Err(Fault)
        } else {
            Ok(())
        }
    }
    fn poll(&mut self, now: u64, mem: &mut Mem<'_>) -> Poll {
        let r = self.next();
        if r >> 62 == 0 {
            // A random "DMA" into (or near) RAM, possibly over code.
            let addr = if r & 1 == 0 { IMEM.base } else { DMEM.base }
                .wrapping_add((r >> 8) as u32 % (IMEM.size + 64));
            let _ = mem.write(addr, &(r as u32).to_le_bytes()[..(r >> 40) as usize % 5]);
        }
        Poll {
            irq: (r as u32) & preba_softcore::IRQ_ALL,
            next_event: match r >> 60 {
                0 => u64::MAX,
                1 => now,
                2 => 0,
                _ => now.saturating_add(r >> 40),
            },
            halt: if r >> 56 == 0xff {
                Some(Halt::Reset)
            } else {
                None
            },
        }
    }
}

fn arb_reg() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        (0u32..IMEM.size).prop_map(|o| IMEM.base + o),
        (0u32..DMEM.size + 8).prop_map(|o| DMEM.base + o),
        Just(0u32),
        Just(u32::MAX),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_programs_never_panic(
        words in proptest::collection::vec(any::<u32>(), 1..256),
        halves in proptest::collection::vec(any::<u16>(), 0..64),
        regs in proptest::collection::vec(arb_reg(), 31),
        mtvec in arb_reg(),
        seed in 1u64..,
        trap_misaligned in any::<bool>(),
        dmem_exec in any::<bool>(),
        budget in 1u64..5000,
    ) {
        let mut config = Config { trap_misaligned, max_poll_interval: 64, ..Config::default() };
        config.ram[1].exec = dmem_exec;
        let mut cpu = Cpu::new(config, ChaosBus { rng: seed }).unwrap();
        // First instruction: csrw mtvec, x31.
        let csrw_mtvec_x31: u32 = (0x305 << 20) | (31 << 15) | (1 << 12) | 0x73;
        let mut bytes: Vec<u8> = std::iter::once(csrw_mtvec_x31)
            .chain(words.iter().copied())
            .flat_map(|w| w.to_le_bytes())
            .collect();
        bytes.extend(halves.iter().flat_map(|h| h.to_le_bytes()));
        cpu.write_ram(IMEM.base, &bytes).unwrap();
        // Also some code at the end of DMEM, where a 32-bit fetch straddles the end.
        cpu.write_ram(DMEM.base + DMEM.size - 2, &[0xff, 0xff]).unwrap();
        for (i, r) in regs.iter().enumerate() {
            cpu.set_reg(i + 1, *r);
        }
        cpu.set_reg(31, mtvec);
        let before = cpu.retired();
        let exit = cpu.run(budget);
        prop_assert!(cpu.retired() - before <= budget);
        prop_assert!(matches!(exit, Exit::Budget | Exit::Wfi | Exit::Halt(_)));
        // And it can go on after any exit.
        let _ = cpu.run(100);
        let _ = cpu.step();
    }
}
