//! The vfio-user server around [`Card`](crate::Card): what the `preba-card` binary runs, here
//! in the library so the message handling can be tested and fuzzed in process
//! (`fuzz/fuzz_targets/vfio_user_server.rs`).
//!
//! - [`proto`]: the wire format (header, commands, flags); [`wire`]: framing (a message is read
//!   whole, with its descriptors, before it is handled; [`MemoryWire`] is an in-memory client
//!   stream); [`server`]: [`Server::handle`], one message in, at most one reply out, every bad
//!   message refused with an error reply.
//! - [`device`]: the device behind it: BAR0/BAR2 forwarded to the card model, PCI config space
//!   ([`pci`]: MSI-X, PCIe with FLR, INTx), the client's DMA map table as the card's
//!   [`HostMemory`](crate::HostMemory) ([`dma`], page by page, only memfds sealed against
//!   shrinking), interrupts through the client's eventfds ([`irq`]), device reset.
//! - [`run`]: the process lifecycle (stale socket, one connection, the card's health, stop).
//!
//! The server implements the protocol itself (it replaced the `vfio_user` crate's server,
//! whose message handling panicked or lost step on malformed messages); replies to well-formed
//! messages are unchanged. QEMU 10.1+ attaches it with `-device vfio-user-pci`; the host
//! driver's vfio-user backend attaches directly.
//!
//! `unsafe` is denied in this module tree except [`sys`]: `mmap` of the client's memfds, file
//! seals, `recvmsg` with `SCM_RIGHTS`, memfd and eventfd creation (ARCHITECTURE.md).
#![deny(unsafe_code)]

pub mod device;
pub mod dma;
pub mod irq;
pub mod pci;
pub mod proto;
pub mod server;
#[allow(unsafe_code)]
pub mod sys;
pub mod wire;

pub use device::Device;
pub use server::{Refusal, Server};
pub use wire::{MemoryWire, Message, Wire, read_message};

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use crate::{CardConfig, CoreState};

/// What [`run`] needs: the socket, the firmware and the card's configuration.
pub struct Options {
    pub socket: PathBuf,
    pub firmware: PathBuf,
    pub config: CardConfig,
    /// Serve the JTAG debug port as the Black Magic Probe remote protocol here.
    pub debug_bmp: Option<std::net::SocketAddr>,
    pub debug: crate::debug::DebugOptions,
}

/// Events [`run`] waits for.
pub enum Event {
    /// Stop (a signal; the text says which).
    Stop(String),
    /// The connection ended: cleanly, or with the socket error.
    Disconnected(Result<(), String>),
}

/// Removes a socket file left by an earlier server (refuses anything that is not a socket).
pub fn remove_stale_socket(path: &Path) -> Result<(), String> {
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

/// Removes the socket file at `path` if it is still a socket.
fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(md) = std::fs::symlink_metadata(path)
        && md.file_type().is_socket()
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Builds the card, listens on `opts.socket`, serves one client and returns when it
/// disconnects (Ok), on an [`Event::Stop`] sent to `events` (Ok), or when the connection fails
/// (Err). `events` is the receiving end of `tx`; the caller may send [`Event::Stop`] on clones
/// of `tx` (signals). The socket file is removed on the way out; the card's threads end with
/// the process.
pub fn run(opts: Options, tx: Sender<Event>, events: Receiver<Event>) -> Result<(), String> {
    let elf = std::fs::read(&opts.firmware).map_err(|e| {
        format!(
            "cannot read the firmware {}: {e} (build it with `cargo xtask build-fw`, or pass \
             --firmware / PREBA_FIRMWARE)",
            opts.firmware.display()
        )
    })?;
    let device = Arc::new(
        Device::new(opts.config.clone(), &elf)
            .map_err(|e| format!("cannot build the card: {e}"))?,
    );

    remove_stale_socket(&opts.socket)?;
    // Bound under a temporary name and renamed once listening: the socket's path appears only
    // when a connect() to it succeeds (bind and listen are two system calls, and clients wait
    // for the path; one start in ~340 was refused in that gap under load).
    let mut staging = opts.socket.clone().into_os_string();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = std::path::PathBuf::from(staging);
    remove_stale_socket(&staging)?;
    let listener = UnixListener::bind(&staging)
        .and_then(|l| std::fs::rename(&staging, &opts.socket).map(|()| l))
        .map_err(|e| {
            let _ = std::fs::remove_file(&staging);
            format!("cannot listen on {}: {e}", opts.socket.display())
        })?;
    if let Some(addr) = opts.debug_bmp {
        let local = device
            .card
            .serve_debug_bmp(addr, opts.debug)
            .map_err(|e| format!("--debug-bmp: {e}"))?;
        // The line tests and scripts wait for (port 0 picks the port).
        eprintln!("debug: bmp tcp {local}");
    }
    let cfg = &opts.config;
    let (slot, outcome, _) = device.card.boot();
    log::info!(
        "boot: slot {} ({})",
        preba_protocol::fwimage::slot_name(slot),
        outcome.map_or("?", |o| o.describe())
    );
    if !cfg.inject.is_empty() {
        log::warn!("fault injection (test only): {}", cfg.inject);
    }
    if cfg.clock == crate::Clock::Wall {
        log::info!("clock: wall (mtime is wall-clock time)");
    }
    log::info!(
        "listening on {} ({} image, {} audio, {} normalize CUs; firmware {})",
        opts.socket.display(),
        cfg.image_cus,
        cfg.audio_cus,
        cfg.norm_cus,
        opts.firmware.display()
    );

    let server = Server::new(device.clone());
    let socket = opts.socket.clone();
    std::thread::Builder::new()
        .name("preba-vfio-user".into())
        .spawn(move || {
            // One connection per process, as before: the server exits when its client leaves.
            let r = listener
                .accept()
                .and_then(|(mut stream, _)| server.serve(&mut stream))
                .map_err(|e| e.to_string());
            drop(listener);
            remove_socket(&socket);
            let _ = tx.send(Event::Disconnected(r));
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;

    let mut reported = false;
    let result = loop {
        match events.recv_timeout(Duration::from_millis(500)) {
            Ok(Event::Stop(why)) => {
                log::info!("{why}: shutting down");
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
    // The server thread may still block in the socket: remove the path ourselves.
    remove_socket(&opts.socket);
    result
}
