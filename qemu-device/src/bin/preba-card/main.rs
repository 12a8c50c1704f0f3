//! `preba-card`: the emulated preba card behind a vfio-user socket.
//!
//! ```text
//! preba-card --socket PATH [--image-cus K] [--audio-cus M] [--norm-cus N] [--firmware ELF]
//!            [--flash FILE] [--clock modeled|wall] [--inject SPEC]
//! ```
//!
//! The card model ([`preba_card::Card`]) runs the firmware ELF on the soft core; this binary puts
//! it behind the `vfio_user` crate's server: PCI config space with the card's IDs and an MSI-X
//! capability, BAR0 and BAR2 forwarded to the model, DMA through the client's map table
//! ([`dma::DmaTable`]), interrupts through the client's eventfds ([`irq::IrqGlue`]), device
//! reset. QEMU 10.1+ attaches it with `-device vfio-user-pci`; the host driver's vfio-user
//! backend attaches directly.
//!
//! Lifecycle: a stale socket file at PATH is removed first; the server takes one connection
//! (vfio_user 0.1.7 serves one per `Server::run`) and the process exits 0 when that client
//! disconnects, or on SIGTERM/SIGINT/SIGHUP, removing the socket file. Logs go to stderr;
//! `PREBA_CARD_LOG=error|warn|info|debug|trace` picks the level (default info).
//!
//! Time: `--clock modeled` (the default) runs the card on modeled time, so a slow or loaded
//! machine never makes a correct job trip the firmware's CU watchdog and the host driver's
//! card/CPU agreement is exact; `--clock wall` puts mtime on the wall clock for a real-time
//! feel (docs/card-spec.md "Time"). The host's own deadlines are wall-clock either way.
//!
//! The firmware: `--firmware ELF`, else `$PREBA_FIRMWARE`, else the ELF `cargo xtask build-fw`
//! makes in this workspace (target/riscv32imac-unknown-none-elf/firmware/preba-firmware).

mod backend;
mod dma;
mod irq;
mod pci;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use preba_card::{Card, CardConfig, CoreState};

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

/// Removes a socket file left by an earlier server (refuses anything that is not a socket).
fn remove_stale_socket(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            log::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))
        }
        Ok(_) => Err(format!(
            "{} exists and is not a socket: refusing to replace it",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

enum Event {
    Signal(i32),
    Disconnected(Result<(), String>),
}

fn run(args: Args) -> Result<(), String> {
    block_signals()?;
    let elf = std::fs::read(&args.firmware).map_err(|e| {
        format!(
            "cannot read the firmware {}: {e} (build it with `cargo xtask build-fw`, or pass \
             --firmware / PREBA_FIRMWARE)",
            args.firmware.display()
        )
    })?;
    let dma = Arc::new(dma::DmaTable::new());
    let irq = Arc::new(irq::IrqGlue::new());
    let card = Card::new(args.config.clone(), &elf, dma.clone(), irq.clone())
        .map_err(|e| format!("cannot build the card: {e}"))?;
    let device = Arc::new(backend::Device {
        card: Arc::new(card),
        dma,
        irq,
        config: Mutex::new(pci::ConfigSpace::new()),
    });

    remove_stale_socket(&args.socket)?;
    let server = vfio_user::Server::new(&args.socket, true, backend::irqs(), backend::regions())
        .map_err(|e| format!("cannot listen on {}: {e}", args.socket.display()))?;
    if let Some(addr) = args.debug_bmp {
        let local = device
            .card
            .serve_debug_bmp(addr, args.debug)
            .map_err(|e| format!("--debug-bmp: {e}"))?;
        // The line tests and scripts wait for (port 0 picks the port).
        eprintln!("debug: bmp tcp {local}");
    }
    let cfg = &args.config;
    let (slot, outcome, _) = device.card.boot();
    log::info!(
        "boot: slot {} ({})",
        preba_protocol::fwimage::slot_name(slot),
        outcome.map_or("?", |o| o.describe())
    );
    if !cfg.inject.is_empty() {
        log::warn!("fault injection (test only): {}", cfg.inject);
    }
    if cfg.clock == preba_card::Clock::Wall {
        log::info!("clock: wall (mtime is wall-clock time)");
    }
    log::info!(
        "listening on {} ({} image, {} audio, {} normalize CUs; firmware {})",
        args.socket.display(),
        cfg.image_cus,
        cfg.audio_cus,
        cfg.norm_cus,
        args.firmware.display()
    );

    let (tx, rx) = mpsc::channel();
    let stx = tx.clone();
    std::thread::Builder::new()
        .name("preba-signals".into())
        .spawn(move || {
            let _ = stx.send(Event::Signal(wait_signal()));
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let mut be = backend::Backend(device.clone());
    std::thread::Builder::new()
        .name("preba-vfio-user".into())
        .spawn(move || {
            let r = server.run(&mut be).map_err(|e| e.to_string());
            // Dropping the server removes the socket file.
            drop(server);
            let _ = tx.send(Event::Disconnected(r));
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;

    let mut reported = false;
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Event::Signal(sig)) => {
                log::info!("signal {sig}: shutting down");
                break Ok(());
            }
            Ok(Event::Disconnected(Ok(()))) => {
                log::info!("client disconnected: shutting down");
                break Ok(());
            }
            Ok(Event::Disconnected(Err(e))) => break Err(format!("vfio-user server: {e}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let st = device.card.core_state();
                if !reported && st != CoreState::Running {
                    log::warn!("the card's core stopped: {st:?}");
                    device.irq.error();
                    reported = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err("server thread lost".into()),
        }
    };
    let d = device.dma.stats();
    let i = device.irq.stats();
    log::info!(
        "DMA maps {} unmaps {} (entries left {}); MSI-X sent {} dropped {}; INTx sent {} (level {})",
        d.maps,
        d.unmaps,
        d.entries,
        i.msix_sent.iter().sum::<u64>(),
        i.msix_dropped,
        i.intx_sent,
        i.intx_level
    );
    // The server thread may still block in the socket: remove the path ourselves. The card's
    // threads end with the process.
    if let Ok(md) = std::fs::symlink_metadata(&args.socket) {
        use std::os::unix::fs::FileTypeExt;
        if md.file_type().is_socket() {
            let _ = std::fs::remove_file(&args.socket);
        }
    }
    result
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
