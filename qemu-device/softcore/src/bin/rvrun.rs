//! Runs a bare-metal RV32 ELF on the soft core with the QEMU `virt`-like platform.
//!
//! `rvrun [--bench] [--max N] ELF`: prints the program's UART output; `--bench` runs it three
//! times without echo and prints the best rate as `N MIPS` on the last line.

use std::process::ExitCode;
use std::time::Instant;

use preba_softcore::virt::{VirtBus, virt_config};
use preba_softcore::{Cpu, Exit, Halt};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut bench = false;
    let mut max = u64::MAX;
    let mut path = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => bench = true,
            "--max" => match it.next().and_then(|v| v.parse().ok()) {
                Some(v) => max = v,
                None => return usage(),
            },
            _ if path.is_none() => path = Some(a.clone()),
            _ => return usage(),
        }
    }
    let Some(path) = path else { return usage() };
    let elf = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rvrun: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runs = if bench { 3 } else { 1 };
    let mut best = 0.0f64;
    let mut best_cpu = 0.0f64;
    let mut code = ExitCode::SUCCESS;
    for _ in 0..runs {
        let config = virt_config();
        let mut bus = VirtBus::new(config.time_divisor);
        bus.echo = !bench;
        let mut cpu = match Cpu::new(config, bus) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("rvrun: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = cpu.load_elf(&elf) {
            eprintln!("rvrun: {path}: {e}: {:?}", std::error::Error::source(&e));
            return ExitCode::FAILURE;
        }
        let t = Instant::now();
        let cpu0 = thread_cpu_ns();
        let exit = cpu.run(max);
        let secs = t.elapsed().as_secs_f64();
        let cpu_secs = thread_cpu_ns().zip(cpu0).map(|(b, a)| (b - a) as f64 / 1e9);
        let n = cpu.retired();
        let mips = n as f64 / secs / 1e6;
        best = best.max(mips);
        if let Some(c) = cpu_secs {
            best_cpu = best_cpu.max(n as f64 / c / 1e6);
        }
        let on_cpu = cpu_secs
            .map(|c| format!("; {:.1} MIPS per CPU-second", n as f64 / c / 1e6))
            .unwrap_or_default();
        eprintln!("rvrun: {exit:?} after {n} instructions in {secs:.3} s ({mips:.1} MIPS{on_cpu})");
        if bench {
            let out = String::from_utf8_lossy(&cpu.bus().uart).into_owned();
            println!("{}", out.trim_end());
        }
        code = match exit {
            Exit::Halt(Halt::PowerOff) => ExitCode::SUCCESS,
            Exit::Halt(Halt::Fail(c)) => ExitCode::from((c & 0xff).max(1) as u8),
            _ => ExitCode::from(2),
        };
    }
    if bench {
        // The thread's own CPU time tells the interpreter's speed on a busy machine.
        println!("{best_cpu:.0} MIPS per CPU-second (best run)");
        println!("{best:.0} MIPS");
    }
    code
}

/// Time this thread spent on a CPU (Linux `/proc/thread-self/schedstat`), to tell the
/// interpreter's speed from a busy machine's.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn usage() -> ExitCode {
    eprintln!("usage: rvrun [--bench] [--max N] ELF");
    ExitCode::from(2)
}
