//! The card's debug port: a JTAG TAP with the RISC-V Debug Transport Module ([`tap`]) in front
//! of a Debug Module ([`dm`]) on the soft core, served over TCP as the Black Magic Probe remote
//! protocol ([`bmp`]) so that stock probe-rs drives it (`1d50:6018:HOST:PORT`). See the "Debug"
//! section of docs/card-spec.md.
//!
//! Threads: the BMP server thread owns the TAP and clocks it per packet without touching the
//! card; only a DMI access at Update-DR crosses to the core thread, which owns the [`Cpu`] and
//! runs the Debug Module between instruction slices (see [`DebugLink`]).

pub mod bmp;
pub mod dm;
pub mod tap;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use preba_softcore::{Cpu, Fault};

use crate::bus::CardBus;
use crate::card::{Card, Shared};
use crate::error::Error;

pub use dm::{Dm, Hart};
pub use tap::{Dmi, IDCODE, Tap};

/// How long one DMI access may wait for the core thread before the DTM reports it failed.
const DMI_TIMEOUT: Duration = Duration::from_secs(2);
/// Polls (each yielding the CPU) for the other side of a DMI hand-off before sleeping on a
/// condvar: a debugger issues tens of thousands of accesses back to back, and waking a
/// sleeping thread costs more than the access (much more on a loaded machine).
const HANDOFF_SPINS: u32 = 100;

/// How the debug port is set up; the fault switches exist for tests of the debugger's error
/// paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugOptions {
    /// What the TAP's IDCODE register holds.
    pub idcode: u32,
    /// Flip bit 0 of the byte at this address whenever a debugger write covers it (a bad RAM
    /// cell: the download lands corrupted and verification must notice).
    pub corrupt: Option<u32>,
    /// Debugger bus accesses covering this address fail (`sberror` 2).
    pub sberror: Option<u32>,
}

impl Default for DebugOptions {
    fn default() -> Self {
        DebugOptions {
            idcode: IDCODE,
            corrupt: None,
            sberror: None,
        }
    }
}

struct Slot {
    req: Option<(bool, u32, u32)>,
    resp: Option<Option<u32>>,
    dm: Dm,
    opts: DebugOptions,
}

/// The hand-off between the BMP server thread and the core thread for DMI accesses.
pub(crate) struct DebugLink {
    pending: AtomicBool,
    slot: Mutex<Slot>,
    done: Condvar,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl DebugLink {
    pub(crate) fn new() -> DebugLink {
        DebugLink {
            pending: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                req: None,
                resp: None,
                dm: Dm::new(),
                opts: DebugOptions::default(),
            }),
            done: Condvar::new(),
            server: Mutex::new(None),
        }
    }

    /// Whether a DMI access waits for the core thread (the core's bus polls this to yield).
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The core thread: runs a waiting DMI access against the hart.
    pub(crate) fn service(&self, sh: &Arc<Shared>, cpu: &mut Cpu<CardBus>) {
        if !self.pending() {
            return;
        }
        let mut s = self.slot.lock().expect("debug slot lock");
        if let Some((write, addr, data)) = s.req.take() {
            let opts = s.opts;
            let mut hart = CardHart { cpu, sh, opts };
            let r = if write {
                s.dm.write(addr, data, &mut hart);
                0
            } else {
                s.dm.read(addr, &mut hart)
            };
            s.resp = Some(Some(r));
        }
        self.pending.store(false, Ordering::Release);
        self.done.notify_all();
    }

    /// The core thread, with the hart halted for the debugger: polls a while for the next
    /// access before the caller sleeps; true when one is waiting.
    pub(crate) fn spin_for_request(&self) -> bool {
        for _ in 0..HANDOFF_SPINS {
            if self.pending() {
                return true;
            }
            std::thread::yield_now();
        }
        self.pending()
    }

    /// The core thread: the card reset the hart (function reset), so `havereset` is set.
    pub(crate) fn note_reset(&self) {
        self.slot.lock().expect("debug slot lock").dm.note_reset();
    }

    /// Joins the server thread (after `Shared::stop` is set).
    pub(crate) fn join(&self) {
        if let Some(h) = self.server.lock().expect("debug server lock").take() {
            let _ = h.join();
        }
    }
}

/// The server thread's DMI port: hands each access to the core thread and waits for it.
pub(crate) struct CardDmi {
    sh: Arc<Shared>,
}

impl Dmi for CardDmi {
    fn access(&mut self, write: bool, addr: u32, data: u32) -> Option<u32> {
        let link = &self.sh.debug;
        let mut s = link.slot.lock().expect("debug slot lock");
        s.req = Some((write, addr, data));
        s.resp = None;
        link.pending.store(true, Ordering::Release);
        self.sh.wake.kick();
        for _ in 0..HANDOFF_SPINS {
            if !link.pending() {
                break;
            }
            drop(s);
            std::thread::yield_now();
            s = link.slot.lock().expect("debug slot lock");
        }
        let deadline = Instant::now() + DMI_TIMEOUT;
        loop {
            if let Some(r) = s.resp.take() {
                return r;
            }
            let now = Instant::now();
            if now >= deadline || self.sh.stop.load(Ordering::Acquire) {
                // The core thread is gone or stuck: withdraw the request.
                s.req = None;
                link.pending.store(false, Ordering::Release);
                return None;
            }
            s = link
                .done
                .wait_timeout(s, (deadline - now).min(Duration::from_millis(50)))
                .expect("debug slot lock")
                .0;
        }
    }
}

/// The hart as the Debug Module sees it on the card: the core plus the card's peripherals for
/// `ndmreset`.
struct CardHart<'a> {
    cpu: &'a mut Cpu<CardBus>,
    sh: &'a Arc<Shared>,
    opts: DebugOptions,
}

fn covers(addr: u32, size: u8, at: Option<u32>) -> Option<u32> {
    at.filter(|&a| a.wrapping_sub(addr) < u32::from(size))
        .map(|a| a - addr)
}

impl Hart for CardHart<'_> {
    fn halted(&self) -> bool {
        self.cpu.is_halted()
    }
    fn halt(&mut self) {
        self.cpu.request_halt();
    }
    fn resume(&mut self) {
        self.cpu.resume();
    }
    fn hart_reset(&mut self) {
        self.cpu.reset();
    }
    fn system_reset(&mut self) {
        // Everything but the Debug Module and RAM: the card's registers, CUs, log, and the
        // core's own peripherals (timer, interrupt controller) living in its bus.
        self.sh.reset_peripherals();
        *self.cpu.bus_mut() = CardBus::new(self.sh.clone());
        self.cpu.reset();
    }
    fn reg_read(&self, regno: u16) -> Option<u32> {
        self.cpu.debug_reg_read(regno)
    }
    fn reg_write(&mut self, regno: u16, value: u32) -> Option<()> {
        self.cpu.debug_reg_write(regno, value)
    }
    fn sys_read(&mut self, addr: u32, size: u8) -> Result<u32, Fault> {
        if covers(addr, size, self.opts.sberror).is_some() {
            return Err(Fault);
        }
        self.cpu.sys_read(addr, size)
    }
    fn sys_write(&mut self, addr: u32, size: u8, value: u32) -> Result<(), Fault> {
        if covers(addr, size, self.opts.sberror).is_some() {
            return Err(Fault);
        }
        match covers(addr, size, self.opts.corrupt) {
            Some(byte) => self.cpu.sys_write(addr, size, value ^ 1 << (8 * byte)),
            None => self.cpu.sys_write(addr, size, value),
        }
    }
}

impl Card {
    /// Serves the debug port as the Black Magic Probe remote protocol on `addr` (port 0 picks
    /// one) and returns the address it listens on. One debugger at a time; the server stops
    /// with the card.
    pub fn serve_debug_bmp(
        &self,
        addr: SocketAddr,
        opts: DebugOptions,
    ) -> Result<SocketAddr, Error> {
        let mut server = self
            .shared()
            .debug
            .server
            .lock()
            .expect("debug server lock");
        if server.is_some() {
            return Err(Error::Config("the debug port is already served"));
        }
        let listener = TcpListener::bind(addr).map_err(|e| Error::DebugPort(addr, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::DebugPort(addr, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::DebugPort(addr, e))?;
        self.shared()
            .debug
            .slot
            .lock()
            .expect("debug slot lock")
            .opts = opts;
        let sh = self.shared().clone();
        let idcode = opts.idcode;
        let h = std::thread::Builder::new()
            .name("preba-debug-bmp".into())
            .spawn(move || bmp::serve(listener, sh, idcode))
            .map_err(Error::Spawn)?;
        *server = Some(h);
        Ok(local)
    }
}
