//! `preba-flash`: downloads a firmware ELF into the card's soft core over JTAG with probe-rs,
//! verifies it and starts it. `cargo xtask flash --probe` builds and runs this binary; it is its
//! own workspace so that probe-rs stays out of the main workspace's builds.
//!
//! ```text
//! preba-flash --probe SELECTOR [--reset run|halt|none] [--no-verify]
//!             [--chip-description YAML] ELF
//! ```
//!
//! The probe is probe-rs's stock Black Magic Probe driver: `1d50:6018:HOST:PORT` reaches
//! `preba-card --debug-bmp HOST:PORT` over TCP. Every failure ends in one line naming what went
//! wrong; nothing is sent to the probe before the ELF has been checked against the target's
//! memory map.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use object::elf::{EM_RISCV, PT_LOAD};
use object::read::elf::{ElfFile32, FileHeader, ProgramHeader};
use probe_rs::config::{MemoryRegion, Registry};
use probe_rs::probe::{DebugProbeSelector, WireProtocol, list::Lister};
use probe_rs::{MemoryInterface, Permissions};

mod checksum;

/// The target description, built in (`--chip-description` replaces it).
const TARGET_YAML: &str = include_str!("../../xtask/targets/preba-rv32.yaml");
const TARGET_NAME: &str = "preba-rv32";
/// The card's IDCODE (docs/card-spec.md, "Debug").
const PREBA_IDCODE: u32 = 0x150B_AFFD;
/// Bytes per write or read-back call: small enough for smooth progress, large enough that the
/// per-call setup (sbcs, sbaddress0) is noise.
const CHUNK: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const HALT_TIMEOUT: Duration = Duration::from_millis(500);

const USAGE: &str = "\
usage: preba-flash --probe SELECTOR [--reset run|halt|none] [--no-verify]
                   [--chip-description YAML] ELF

Downloads ELF into the card's soft core over JTAG (probe-rs), verifies it by reading it back,
resets and halts the core, sets pc to the ELF entry and runs it.
  --probe SELECTOR   probe-rs probe selector; preba-card --debug-bmp HOST:PORT is
                     1d50:6018:HOST:PORT
  --reset MODE       after the download: run (default), halt (reset and stay halted at the
                     entry), none (no reset: the core stays halted where it was)
  --no-verify        skip the read-back
  --chip-description YAML
                     another probe-rs target description (default: the built-in
                     xtask/targets/preba-rv32.yaml); its target must be named preba-rv32
";

/// Everything that can go wrong, each with what it concerns.
#[derive(Debug)]
enum FlashError {
    Usage(String),
    Elf(PathBuf, String),
    SegmentOutside {
        index: usize,
        paddr: u64,
        memsz: u64,
        map: String,
    },
    Target(String),
    ConnectionRefused(SocketAddr, std::io::Error),
    NoProbe(String, String),
    Idcode {
        found: Option<u32>,
    },
    Attach(String),
    Write(u64, String),
    Read(u64, String),
    Verify {
        addr: u64,
        found: u8,
        want: u8,
    },
    Run(String),
}

impl fmt::Display for FlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashError::Usage(m) => write!(f, "{m}"),
            FlashError::Elf(p, m) => write!(f, "{}: {m}", p.display()),
            FlashError::SegmentOutside {
                index,
                paddr,
                memsz,
                map,
            } => write!(
                f,
                "ELF segment {index} ({paddr:#010x}..{:#010x}, {memsz} bytes) lies outside the \
                 target's memory ({map}); nothing was sent to the probe",
                paddr + memsz
            ),
            FlashError::Target(m) => write!(f, "target description: {m}"),
            FlashError::ConnectionRefused(a, e) => {
                write!(f, "cannot connect to the probe at {a}: {e}")
            }
            FlashError::NoProbe(s, e) => write!(f, "no such probe {s}: {e}"),
            FlashError::Idcode { found: Some(v) } => write!(
                f,
                "wrong IDCODE {v:#010x} on the JTAG chain (the preba card's is {PREBA_IDCODE:#010x})"
            ),
            FlashError::Idcode { found: None } => {
                write!(
                    f,
                    "no IDCODE on the JTAG chain (expected {PREBA_IDCODE:#010x})"
                )
            }
            FlashError::Attach(m) => write!(f, "attach failed: {m}"),
            FlashError::Write(a, m) => {
                write!(
                    f,
                    "download failed in the block at {a:#010x}: {m}{}",
                    sb_hint(m)
                )
            }
            FlashError::Read(a, m) => {
                write!(
                    f,
                    "read-back failed in the block at {a:#010x}: {m}{}",
                    sb_hint(m)
                )
            }
            FlashError::Verify { addr, found, want } => write!(
                f,
                "verify failed: first difference at {addr:#010x} (card {found:#04x}, ELF {want:#04x})"
            ),
            FlashError::Run(m) => write!(f, "reset/run failed: {m}"),
        }
    }
}

/// probe-rs reports a Debug Module `sberror` as "Error using system bus": say what it means.
fn sb_hint(m: &str) -> &'static str {
    if m.contains("system bus") {
        " (sberror: the card's system bus refused the access)"
    } else {
        ""
    }
}

/// One error's message with its causes, on one line (probe-rs nests the useful part, e.g. the
/// DTM version or the sberror, in its sources).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s.replace('\n', " ")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reset {
    Run,
    Halt,
    None,
}

struct Args {
    probe: String,
    reset: Reset,
    verify: bool,
    chip: Option<PathBuf>,
    elf: PathBuf,
}

fn parse_args(args: &[String]) -> Result<Args, FlashError> {
    let mut probe = None;
    let mut reset = Reset::Run;
    let mut verify = true;
    let mut chip = None;
    let mut elf = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| FlashError::Usage(format!("{name} needs a value")))
        };
        match a.as_str() {
            "--probe" => probe = Some(value("--probe")?),
            "--reset" => {
                reset = match value("--reset")?.as_str() {
                    "run" => Reset::Run,
                    "halt" => Reset::Halt,
                    "none" => Reset::None,
                    other => {
                        return Err(FlashError::Usage(format!(
                            "--reset: {other} is not run, halt or none"
                        )));
                    }
                }
            }
            "--no-verify" => verify = false,
            "--chip-description" => chip = Some(PathBuf::from(value("--chip-description")?)),
            "-h" | "--help" => return Err(FlashError::Usage(String::new())),
            s if s.starts_with('-') => {
                return Err(FlashError::Usage(format!("unknown option {s}")));
            }
            s if elf.is_none() => elf = Some(PathBuf::from(s)),
            s => return Err(FlashError::Usage(format!("one ELF only (also got {s})"))),
        }
    }
    Ok(Args {
        probe: probe.ok_or_else(|| FlashError::Usage("--probe SELECTOR is required".into()))?,
        reset,
        verify,
        chip,
        elf: elf.ok_or_else(|| FlashError::Usage("which ELF?".into()))?,
    })
}

/// A loadable segment: where it goes and the bytes it carries (the rest of `memsz` is zeroed by
/// the firmware's start-up code, as on a board).
struct Segment {
    paddr: u64,
    data: Vec<u8>,
}

struct Image {
    entry: u64,
    segments: Vec<Segment>,
    /// Every segment's whole extent (with its zero-filled part): the checksum routine's window
    /// stays out of them.
    extents: Vec<std::ops::Range<u64>>,
}

/// Reads the ELF and checks every `PT_LOAD` segment against the target's RAM regions.
fn load_elf(path: &PathBuf, ram: &[(String, std::ops::Range<u64>)]) -> Result<Image, FlashError> {
    let bad = |m: String| FlashError::Elf(path.clone(), m);
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let file = ElfFile32::<object::LittleEndian>::parse(&*bytes)
        .map_err(|e| bad(format!("not a little-endian ELF32 file: {e}")))?;
    let endian = file.endian();
    let header = file.elf_header();
    if header.e_machine(endian) != EM_RISCV {
        return Err(bad(format!(
            "built for machine {}, not RISC-V",
            header.e_machine(endian)
        )));
    }
    let map = ram
        .iter()
        .map(|(n, r)| format!("{n} {:#010x}..{:#010x}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(", ");
    let mut segments = Vec::new();
    let mut extents = Vec::new();
    for (index, ph) in file.elf_program_headers().iter().enumerate() {
        if ph.p_type(endian) != PT_LOAD || ph.p_memsz(endian) == 0 {
            continue;
        }
        let paddr = u64::from(ph.p_paddr(endian));
        let memsz = u64::from(ph.p_memsz(endian));
        let inside = ram
            .iter()
            .any(|(_, r)| paddr >= r.start && paddr.saturating_add(memsz) <= r.end);
        if !inside {
            return Err(FlashError::SegmentOutside {
                index,
                paddr,
                memsz,
                map,
            });
        }
        extents.push(paddr..paddr + memsz);
        let data = ph
            .data(endian, &*bytes)
            .map_err(|_| bad(format!("segment {index}'s file range is outside the file")))?;
        if !data.is_empty() {
            segments.push(Segment {
                paddr,
                data: data.to_vec(),
            });
        }
    }
    if segments.is_empty() {
        return Err(bad("no loadable segment".into()));
    }
    Ok(Image {
        entry: u64::from(header.e_entry(endian)),
        segments,
        extents,
    })
}

/// Progress on a terminal: one line, rewritten.
struct Progress {
    tty: bool,
    what: &'static str,
    total: usize,
    done: usize,
    start: Instant,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            what,
            total,
            done: 0,
            start: Instant::now(),
        }
    }
    fn add(&mut self, n: usize) {
        self.done += n;
        if self.tty {
            let pct = self.done * 100 / self.total.max(1);
            eprint!(
                "\r{:<9} {:>3}% {:>7}/{} bytes",
                self.what, pct, self.done, self.total
            );
            let _ = std::io::stderr().flush();
        }
    }
    fn finish(self) -> Duration {
        let t = self.start.elapsed();
        if self.tty {
            eprintln!();
        }
        t
    }
}

fn flash(args: &Args) -> Result<(), FlashError> {
    let yaml = match &args.chip {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| FlashError::Target(format!("{}: {e}", p.display())))?,
        None => TARGET_YAML.to_string(),
    };
    let mut registry = Registry::new();
    registry
        .add_target_family_from_yaml(&yaml)
        .map_err(|e| FlashError::Target(chain(&e)))?;
    let target = registry
        .get_target_by_name(TARGET_NAME)
        .map_err(|e| FlashError::Target(chain(&e)))?;
    let ram: Vec<(String, std::ops::Range<u64>)> = target
        .memory_map
        .iter()
        .filter_map(|r| match r {
            MemoryRegion::Ram(r) => Some((r.name.clone().unwrap_or_default(), r.range.clone())),
            _ => None,
        })
        .collect();
    // Checked before anything reaches the probe.
    let image = load_elf(&args.elf, &ram)?;
    let total: usize = image.segments.iter().map(|s| s.data.len()).sum();

    let selector: DebugProbeSelector = args
        .probe
        .parse()
        .map_err(|e| FlashError::NoProbe(args.probe.clone(), chain(&e)))?;
    // probe-rs falls back to serial ports when a BMP's TCP address does not answer and then
    // reports "not found"; say what actually happened.
    if let Some(addr) = selector
        .serial_number
        .as_deref()
        .and_then(|s| s.parse::<SocketAddr>().ok())
    {
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| FlashError::ConnectionRefused(addr, e))?;
    }
    let mut probe = Lister::new()
        .open(selector)
        .map_err(|e| FlashError::NoProbe(args.probe.clone(), chain(&e)))?;
    probe
        .select_protocol(WireProtocol::Jtag)
        .map_err(|e| FlashError::Attach(chain(&e)))?;
    // The chain must hold the card's TAP: an IDCODE check before the DTM is touched.
    {
        let jtag = probe
            .try_as_jtag_probe()
            .ok_or_else(|| FlashError::Attach("the probe cannot do JTAG".into()))?;
        let chain_elems = jtag
            .scan_chain()
            .map_err(|e| FlashError::Attach(format!("JTAG chain scan: {}", chain(&e))))?;
        let found = chain_elems.first().and_then(|e| {
            let name = e.name.as_deref()?;
            let hex = name.split_whitespace().next()?.trim_start_matches("0x");
            u32::from_str_radix(hex, 16).ok()
        });
        if found != Some(PREBA_IDCODE) {
            return Err(FlashError::Idcode { found });
        }
    }
    let mut session = probe
        .attach(target, Permissions::default())
        .map_err(|e| FlashError::Attach(chain(&e)))?;
    let mut core = session.core(0).map_err(|e| FlashError::Attach(chain(&e)))?;
    core.halt(HALT_TIMEOUT)
        .map_err(|e| FlashError::Attach(format!("halt: {}", chain(&e))))?;

    let mut p = Progress::new("download", total);
    for s in &image.segments {
        for (i, chunk) in s.data.chunks(CHUNK).enumerate() {
            let addr = s.paddr + (i * CHUNK) as u64;
            core.write(addr, chunk)
                .map_err(|e| FlashError::Write(addr, chain(&e)))?;
            p.add(chunk.len());
        }
    }
    let t_down = p.finish();
    let mut t_verify = Duration::ZERO;
    if args.verify {
        let mut p = Progress::new("verify", total);
        let mut buf = vec![0u8; CHUNK];
        let ranges: Vec<_> = ram.iter().map(|(_, r)| r.clone()).collect();
        let window = checksum::window(
            &ranges,
            &image.extents,
            4 * checksum::routine().len() as u64,
        );
        let runner = match window {
            Some(base) => Some(
                checksum::Runner::install(&mut core, base)
                    .map_err(|e| FlashError::Read(base, chain(&e)))?,
            ),
            None => None,
        };
        let mut result = Ok(());
        'blocks: for s in &image.segments {
            for (i, chunk) in s.data.chunks(CHUNK).enumerate() {
                let addr = s.paddr + (i * CHUNK) as u64;
                // The block's CRC on the card when the routine could run; a block whose CRC
                // differs (or that got no CRC) is read back to name the first differing byte.
                let same = match &runner {
                    Some(r) => match r.crc(&mut core, addr, chunk.len()) {
                        Ok(checksum::Block::Crc(c)) => c == checksum::crc32(chunk),
                        Ok(checksum::Block::NoResult(why)) => {
                            eprintln!("preba-flash: block {addr:#010x}: {why}; reading it back");
                            false
                        }
                        Err(e) => {
                            result = Err(FlashError::Read(addr, chain(&e)));
                            break 'blocks;
                        }
                    },
                    None => false,
                };
                if !same {
                    let got = &mut buf[..chunk.len()];
                    if let Err(e) = core.read(addr, got) {
                        result = Err(FlashError::Read(addr, chain(&e)));
                        break 'blocks;
                    }
                    if let Some(k) = got.iter().zip(chunk).position(|(a, b)| a != b) {
                        result = Err(FlashError::Verify {
                            addr: addr + k as u64,
                            found: got[k],
                            want: chunk[k],
                        });
                        break 'blocks;
                    }
                }
                p.add(chunk.len());
            }
        }
        if let Some(r) = runner {
            r.finish(&mut core)
                .map_err(|e| FlashError::Read(window.unwrap_or(0), chain(&e)))?;
        }
        result?;
        t_verify = p.finish();
    }
    if args.reset != Reset::None {
        core.reset_and_halt(HALT_TIMEOUT)
            .map_err(|e| FlashError::Run(format!("reset and halt: {}", chain(&e))))?;
        let pc = core.program_counter();
        core.write_core_reg(pc, image.entry)
            .map_err(|e| FlashError::Run(format!("set pc: {}", chain(&e))))?;
        if args.reset == Reset::Run {
            core.run()
                .map_err(|e| FlashError::Run(format!("run: {}", chain(&e))))?;
        }
    }
    let secs = (t_down + t_verify).as_secs_f64();
    eprintln!(
        "preba-flash: {} bytes in {} segment(s): download {:.2} s, verify {:.2} s, {:.0} bytes/s{}; \
         entry {:#010x}, {}",
        total,
        image.segments.len(),
        t_down.as_secs_f64(),
        t_verify.as_secs_f64(),
        total as f64 / secs.max(1e-9),
        if args.verify { "" } else { " (not verified)" },
        image.entry,
        match args.reset {
            Reset::Run => "running",
            Reset::Halt => "halted at the entry",
            Reset::None => "halted (no reset)",
        }
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(FlashError::Usage(m)) if m.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("preba-flash: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match flash(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("preba-flash: error: {e}");
            ExitCode::FAILURE
        }
    }
}
