//! `preba-card`: the emulated preba card behind a vfio-user socket.
//!
//! ```text
//! preba-card --socket PATH [--image-cus K] [--audio-cus M] [--norm-cus N] [--firmware ELF]
//!            [--flash FILE] [--clock modeled|wall] [--inject SPEC]
//! ```
//!
//! The card model ([`preba_card::Card`]) runs the firmware ELF on the soft core; this binary puts
//! it behind the library's vfio-user server ([`preba_card::vfio_server`]): PCI config space with
//! the card's IDs and an MSI-X capability, BAR0 and BAR2 forwarded to the model, DMA through the
//! client's map table, interrupts through the client's eventfds, device reset. QEMU 10.1+
//! attaches it with `-device vfio-user-pci`; the host driver's vfio-user backend attaches
//! directly. This file only parses the arguments, sets up logging and turns the stop signals
//! into an event for [`preba_card::vfio_server::run`].
//!
//! Lifecycle: a stale socket file at PATH is removed first; the server takes one connection
//! and the process exits 0 when that client disconnects, or on SIGTERM/SIGINT/SIGHUP, removing
//! the socket file. Logs go to stderr;
//! `PREBA_CARD_LOG=error|warn|info|debug|trace` picks the level (default info).
//!
//! Time: `--clock modeled` (the default) runs the card on modeled time, so a slow or loaded
//! machine never makes a correct job trip the firmware's CU watchdog and the host driver's
//! card/CPU agreement is exact; `--clock wall` puts mtime on the wall clock for a real-time
//! feel (docs/card-spec.md "Time"). The host's own deadlines are wall-clock either way.
//!
//! The firmware: `--firmware ELF`, else `$PREBA_FIRMWARE`, else the ELF `cargo xtask build-fw`
//! makes in this workspace (target/riscv32imac-unknown-none-elf/firmware/preba-firmware).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

use preba_card::CardConfig;
use preba_card::vfio_server::{self, Event, Options};

const USAGE: &str = "\
usage: preba-card --socket PATH [--image-cus K] [--audio-cus M] [--norm-cus N] [--firmware ELF]
                  [--flash FILE] [--clock modeled|wall] [--inject SPEC]

Serves the emulated preba card on a vfio-user socket until the client disconnects or SIGTERM.
  --socket PATH     the vfio-user socket (a stale socket file there is replaced)
  --image-cus K     image compute units (default 4)
  --audio-cus M     audio Mel compute units (default 2)
  --norm-cus N      audio normalize compute units (default 1)
  --workers W       host threads for CU jobs (default: one per core)
  --firmware ELF    the soft core's firmware (default: $PREBA_FIRMWARE, else the workspace's
                    target/riscv32imac-unknown-none-elf/firmware/preba-firmware)
  --uart            copy the firmware's UART output to stderr
  --debug-bmp ADDR:PORT
                    serve the JTAG debug port as the Black Magic Probe remote protocol (probe-rs
                    `--probe 1d50:6018:ADDR:PORT`); port 0 picks one; prints
                    `debug: bmp tcp ADDR:PORT` on stderr
  --debug-idcode HEX, --debug-corrupt ADDR, --debug-sberror ADDR
                    test only: another IDCODE; flip bit 0 of the byte at ADDR when the debugger
                    writes it; fail debugger bus accesses covering ADDR (sberror)
  --flash FILE      keep the SPI flash (boot record, image slots A/B) in FILE, created when
                    missing and then factory-programmed with --firmware in slot A; flashed
                    images survive a restart (without it the flash lives in memory)
  --clock modeled|wall
                    what the card's time (mtime: firmware timers, CU watchdog, log timestamps)
                    runs on: modeled (default) counts the soft core's cycles and the CUs' cycle
                    model, so a slow or loaded machine never trips the CU watchdog; wall is the
                    wall clock (real-time feel; a starved machine can trip the watchdog)
  --inject SPEC     test only: inject faults, comma-separated KIND[@N][:ARG] with N the Nth
                    event (from 1): dma-fault@N[:in|out] (Nth I/O command), stuck-cu@N,
                    bad-length@N[:DELTA] (Nth CU job), corrupt-completion@N[:status|cid|sqid|
                    head|reserved|phase], dup-completion@N (Nth I/O completion),
                    lost-msix@N[:VECTOR] (Nth message on VECTOR, default 1),
                    spurious-irq[:PERIOD] (e.g. 1ms), reset-storm@N[:COUNT] (Nth I/O
                    command); see docs/card-spec.md, Fault injection (test only)
Environment: PREBA_CARD_LOG=error|warn|info|debug|trace (default info).
";

struct Args {
    socket: PathBuf,
    firmware: PathBuf,
    config: CardConfig,
    debug_bmp: Option<std::net::SocketAddr>,
    debug: preba_card::debug::DebugOptions,
}

fn hex_u32(name: &str, v: &str) -> Result<u32, String> {
    let digits = v.strip_prefix("0x").unwrap_or(v);
    u32::from_str_radix(digits, 16).map_err(|_| format!("{name}: not a hex number: {v}"))
}

fn default_firmware() -> PathBuf {
    if let Some(p) = std::env::var_os("PREBA_FIRMWARE") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("riscv32imac-unknown-none-elf")
        .join("firmware")
        .join("preba-firmware")
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut socket = None;
    let mut firmware = None;
    let mut config = CardConfig::default();
    let mut debug_bmp = None;
    let mut debug = preba_card::debug::DebugOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let mut count = |name: &str| -> Result<u8, String> {
            let v = value(name)?;
            v.parse::<u8>()
                .map_err(|_| format!("{name}: not a count: {v}"))
        };
        match a.as_str() {
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--firmware" => firmware = Some(PathBuf::from(value("--firmware")?)),
            "--image-cus" => config.image_cus = count("--image-cus")?,
            "--audio-cus" => config.audio_cus = count("--audio-cus")?,
            "--norm-cus" => config.norm_cus = count("--norm-cus")?,
            "--workers" => {
                let v = value("--workers")?;
                config.workers = v
                    .parse()
                    .map_err(|_| format!("--workers: not a count: {v}"))?;
            }
            "--uart" => config.uart_echo = true,
            "--debug-bmp" => {
                let v = value("--debug-bmp")?;
                debug_bmp = Some(
                    v.parse()
                        .map_err(|_| format!("--debug-bmp: not an ADDR:PORT: {v}"))?,
                );
            }
            "--debug-idcode" => {
                debug.idcode = hex_u32("--debug-idcode", &value("--debug-idcode")?)?
            }
            "--debug-corrupt" => {
                debug.corrupt = Some(hex_u32("--debug-corrupt", &value("--debug-corrupt")?)?)
            }
            "--debug-sberror" => {
                debug.sberror = Some(hex_u32("--debug-sberror", &value("--debug-sberror")?)?)
            }
            "--flash" => config.flash_file = Some(PathBuf::from(value("--flash")?)),
            "--clock" => {
                config.clock = value("--clock")?
                    .parse()
                    .map_err(|e| format!("--clock: {e}"))?;
            }
            "--inject" => {
                config.inject = value("--inject")?
                    .parse()
                    .map_err(|e| format!("--inject: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    Ok(Args {
        socket: socket.ok_or("--socket PATH is required")?,
        firmware: firmware.unwrap_or_else(default_firmware),
        config,
        debug_bmp,
        debug,
    })
}

/// Logs to stderr with a prefix.
struct StderrLog(log::LevelFilter);

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "preba-card: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn init_log() {
    let level = match std::env::var("PREBA_CARD_LOG").as_deref() {
        Ok("off") => log::LevelFilter::Off,
        Ok("error") => log::LevelFilter::Error,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Info,
    };
    let logger: &'static StderrLog = Box::leak(Box::new(StderrLog(level)));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// The signals that stop the server, blocked in every thread and taken by `sigwait`.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    set
}

/// Blocks the stop signals in this thread (and the threads it starts afterwards).
fn block_signals() -> Result<(), String> {
    let set = stop_signals();
    // SAFETY: `set` is initialised; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "pthread_sigmask: {}",
            std::io::Error::from_raw_os_error(r)
        ))
    }
}

/// Waits for a stop signal.
fn wait_signal() -> i32 {
    let set = stop_signals();
    let mut sig = 0;
    loop {
        // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
        let r = unsafe { libc::sigwait(&set, &mut sig) };
        if r == 0 {
            return sig;
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    // Before any thread starts: the card's threads inherit the mask, so only `sigwait` below
    // takes the stop signals.
    block_signals()?;
    let (tx, rx) = mpsc::channel();
    let stx = tx.clone();
    std::thread::Builder::new()
        .name("preba-signals".into())
        .spawn(move || {
            let _ = stx.send(Event::Stop(format!("signal {}", wait_signal())));
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let opts = Options {
        socket: args.socket,
        firmware: args.firmware,
        config: args.config,
        debug_bmp: args.debug_bmp,
        debug: args.debug,
    };
    vfio_server::run(opts, tx, rx)
}

fn main() -> ExitCode {
    init_log();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("preba-card: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => {
            // Exit without unwinding the server thread (it may block in recv) or joining the
            // card's threads: nothing is left to flush.
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("preba-card: error: {e}");
            ExitCode::FAILURE
        }
    }
}
