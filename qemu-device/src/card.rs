//! The card: shared state, the core thread, and the host-facing API (BAR0, BAR2, reset).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use preba_protocol::admin::CuKind;
use preba_protocol::card::{self as c, CuStatus};
use preba_protocol::regs;
use preba_softcore::{Config, Cpu, Exit, Halt};

use crate::boot::{self, Failure};
use crate::bus::CardBus;
use crate::config::{CardConfig, Clock};
use crate::cu::{self, CuState};
use crate::error::Error;
use crate::flash::Flash;
use crate::host_mem::HostMemory;
use crate::hostif::{Effects, HostIf};
use crate::inject::{Fired, InjectMemory, Injector};
use crate::irq::IrqSink;

/// Card memory (HBM): one zeroed allocation, committed by the OS page by page as it is touched.
pub(crate) struct CardMemory {
    size: u32,
    pub data: Mutex<Vec<u8>>,
}

impl CardMemory {
    /// The byte range of `[addr, addr + len)` in the core's map, when it lies in card memory.
    pub fn range(&self, addr: u32, len: u64) -> Option<Range<usize>> {
        let off = u64::from(addr.checked_sub(c::CARD_MEM_BASE)?);
        let end = off.checked_add(len)?;
        (end <= u64::from(self.size)).then_some(off as usize..end as usize)
    }
}

/// The log ring: bytes the firmware writes, LOG_HEAD, read by the host through BAR2.
pub(crate) struct LogRing {
    pub ring: Box<[AtomicU8]>,
    pub head: AtomicU32,
}

/// Wakes the core thread: a generation counter under a mutex, and a condvar. The same lock
/// says whether the core sleeps with nothing to do ([`Card::wait_idle`]).
pub(crate) struct Wake {
    generation: Mutex<WakeState>,
    cv: Condvar,
}

struct WakeState {
    generation: u64,
    /// `Some((g, wake))` while the core sleeps with nothing to do, having seen generation `g`,
    /// until `wake` (a timer; `None`: until kicked): it is idle as long as no kick moved the
    /// generation past `g`.
    idle: Option<(u64, Option<Instant>)>,
}

impl Wake {
    pub fn kick(&self) {
        self.generation.lock().expect("wake lock").generation += 1;
        self.cv.notify_all();
    }
    fn current(&self) -> u64 {
        self.generation.lock().expect("wake lock").generation
    }
    /// Blocks until the generation moves past `seen` or `deadline` passes.
    fn wait(&self, seen: u64, deadline: Option<Instant>) {
        self.wait_marked(seen, deadline, false);
    }
    /// [`Wake::wait`] of a core with nothing to do (no CU work in flight, only its timer at
    /// `deadline` or the host can give it any): marked idle while it blocks.
    fn idle_wait(&self, seen: u64, deadline: Option<Instant>) {
        self.wait_marked(seen, deadline, true);
    }
    fn wait_marked(&self, seen: u64, deadline: Option<Instant>, idle: bool) {
        let mut g = self.generation.lock().expect("wake lock");
        if idle && g.generation == seen {
            g.idle = Some((seen, deadline));
            self.cv.notify_all();
        }
        while g.generation == seen {
            match deadline {
                None => g = self.cv.wait(g).expect("wake lock"),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    g = self.cv.wait_timeout(g, d - now).expect("wake lock").0;
                }
            }
        }
        g.idle = None;
    }
    /// Waits until the core sleeps idle, with no kick since and no timer of its own before
    /// `until`, or `deadline`; whether it does.
    fn wait_quiet(&self, until: Instant, deadline: Instant) -> bool {
        let mut g = self.generation.lock().expect("wake lock");
        loop {
            if let Some((seen, wake)) = g.idle
                && seen == g.generation
                && wake.is_none_or(|w| w >= until)
            {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .expect("wake lock")
                .0;
        }
    }
}

/// What the core is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreState {
    /// Running (or waiting in `wfi` for an interrupt).
    Running,
    /// Stopped by the test device (power off, reset request or failure code): the card waits
    /// for a function reset.
    Halted(Halt),
    /// The card was stopped.
    Stopped,
}

/// State shared by the core thread, the CU workers and the host's threads.
pub(crate) struct Shared {
    pub cfg: CardConfig,
    pub host: Arc<dyn HostMemory>,
    pub sink: Arc<dyn IrqSink>,
    pub hostif: Mutex<HostIf>,
    pub irq_pending: AtomicU32,
    pub wake: Wake,
    pub mem: CardMemory,
    pub log: LogRing,
    pub uart: Mutex<crate::uart::UartCapture>,
    pub gpio_out: AtomicU32,
    /// Soft-core instructions retired since the card was built, over every boot (published
    /// by the core thread after each slice: what the firmware costs per request).
    pub instructions: AtomicU64,
    pub cus: Vec<Mutex<CuState>>,
    pub jobs: Mutex<Option<mpsc::Sender<cu::Job>>>,
    pub flash: Mutex<Flash>,
    /// The debug port's hand-off to the core thread (see [`crate::debug`]).
    pub debug: crate::debug::DebugLink,
    /// INFO_BOOT: what the boot ROM chose at the last (re)boot.
    pub boot_info: AtomicU32,
    /// Fault injection (test only), when the configuration asks for any.
    pub inject: Option<Arc<Injector>>,
    pub epoch: Instant,
    /// The clocks' units (modeled clock).
    pub(crate) time: crate::clock::TimeBase,
    /// Modeled clock: a card time at or before which the core must look at the CUs again (a
    /// bound or a modeled completion); lowered by whoever adds one, recomputed by the core.
    pub cu_horizon: AtomicU64,
    /// The card time (core cycles) at the core's last poll, for observers (modeled clock).
    pub card_t: AtomicU64,
    pub stop: AtomicBool,
    reset_req: AtomicU64,
    reset_done: AtomicU64,
    state: Mutex<CoreState>,
    elf: Vec<u8>,
}

impl Shared {
    /// Raises interrupt-controller sources and wakes the core.
    pub fn raise(&self, bits: u32) {
        self.irq_pending.fetch_or(bits, Ordering::AcqRel);
        self.wake.kick();
    }

    /// Acts on a host-interface access's effects (called without the hostif lock).
    pub fn apply(&self, fx: Effects) {
        if fx.host_irq {
            self.raise(c::IRQ_HOST);
        }
        for v in 0..32 {
            if fx.msix & 1 << v != 0 && self.inject.as_ref().is_none_or(|i| i.pass_msix(v as u16)) {
                self.sink.msix(v as u16);
            }
        }
        if let Some(l) = fx.intx {
            self.sink.intx(l);
        }
    }

    /// A function reset the card asks for itself (fault injection): the core thread runs it
    /// like a host's, nobody waits for it.
    pub(crate) fn request_reset(&self) {
        self.reset_req.fetch_add(1, Ordering::AcqRel);
        self.wake.kick();
    }

    /// A function reset was asked for and the core thread has not run it yet.
    pub(crate) fn reset_pending(&self) -> bool {
        self.reset_req.load(Ordering::Acquire) > self.reset_done.load(Ordering::Acquire)
    }

    /// Whether the card runs on modeled time.
    pub fn modeled(&self) -> bool {
        self.cfg.clock == Clock::Modeled
    }

    /// 10 MHz ticks since the card started.
    pub fn wall_mtime(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() / 100) as u64
    }

    /// Modeled board power now, watts.
    pub fn board_power_w(&self) -> f64 {
        let cus: Vec<(CuKind, bool)> = self
            .cus
            .iter()
            .map(|m| {
                let cu = m.lock().expect("cu lock");
                (cu.kind, cu.status == CuStatus::Busy)
            })
            .collect();
        self.cfg.power.board_w(cus.into_iter())
    }

    pub(crate) fn reset_peripherals(&self) {
        {
            let mut h = self.hostif.lock().expect("hostif lock");
            let level = h.intx_level;
            *h = HostIf::new(self.cfg.cap.encode());
            if level {
                self.sink.intx(false);
            }
        }
        if let Some(i) = &self.inject {
            i.on_reset();
        }
        for i in 0..self.cus.len() {
            cu::reset(self, i);
        }
        self.irq_pending.store(0, Ordering::Release);
        self.log.head.store(0, Ordering::Release);
        for b in self.log.ring.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.gpio_out.store(0, Ordering::Relaxed);
    }

    /// Before a reboot by the boot ROM's watch (not a function reset): the core and the CUs
    /// restart, the PCIe function does not, so what the host programmed (CC, admin queue
    /// addresses, MSI-X table) stays and the next image finds CC.EN as the host left it. The
    /// log ring stays too: it tells what the failed image said.
    fn reset_for_reboot(&self) {
        {
            let mut h = self.hostif.lock().expect("hostif lock");
            let old = h.clone();
            *h = HostIf::new(self.cfg.cap.encode());
            h.cc = old.cc;
            h.aqa = old.aqa;
            h.asq = old.asq;
            h.acq = old.acq;
            h.msix_table = old.msix_table;
            h.intx_mode = old.intx_mode;
            h.scratch = old.scratch;
            if old.intx_level {
                self.sink.intx(false);
            }
        }
        for i in 0..self.cus.len() {
            cu::reset(self, i);
        }
        self.irq_pending.store(0, Ordering::Release);
        self.gpio_out.store(0, Ordering::Relaxed);
    }

    fn set_state(&self, s: CoreState) {
        *self.state.lock().expect("state lock") = s;
        self.wake.kick();
    }
}

/// Statistics of one CU, as the host side sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CuInfo {
    /// Kind.
    pub kind: CuKind,
    /// Jobs finished (done or error).
    pub jobs: u64,
    /// Modeled cycles of the last job.
    pub last_cycles: u64,
    /// Busy now.
    pub busy: bool,
}

/// The emulated card. Host threads call the BAR methods concurrently; the core runs on its own
/// thread; CU jobs run on a worker pool. Dropping the card stops and joins every thread.
pub struct Card {
    sh: Arc<Shared>,
    core: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    /// The spurious-interrupt source of fault injection.
    spurious: Option<JoinHandle<()>>,
}

fn build_cpu(sh: &Arc<Shared>, elf: &[u8]) -> Result<Cpu<CardBus>, Error> {
    let config = Config {
        max_poll_interval: 1 << 12,
        // The core thread decides how much idle time passes (modeled clock: jump or pace).
        wfi_fast_forward: false,
        // The `time` CSR counts mtime's 10 MHz ticks of the core's cycles.
        time_divisor: u64::from(sh.cfg.core_hz / c::MTIME_HZ).max(1),
        ..Config::default()
    };
    let mut cpu = Cpu::new(config, CardBus::new(sh.clone())).map_err(Error::Firmware)?;
    cpu.load_elf(elf).map_err(Error::Firmware)?;
    Ok(cpu)
}

impl Card {
    /// Builds a card with `firmware` (an ELF for the soft core), doing DMA through `host` and
    /// signalling through `irq`. A flash without image slots (a new one, or a new
    /// `config.flash_file`) is factory-programmed with `firmware` in slot A; the boot ROM
    /// ([`crate::boot`]) then picks the image, and `firmware` itself runs only as the recovery
    /// image when no slot can boot.
    pub fn new(
        config: CardConfig,
        firmware: &[u8],
        host: Arc<dyn HostMemory>,
        irq: Arc<dyn IrqSink>,
    ) -> Result<Card, Error> {
        if config.cus() > c::MAX_CUS as usize {
            return Err(Error::Config("more than 24 CUs"));
        }
        if config.card_mem_bytes > c::CARD_MEM_MAX || config.card_mem_bytes == 0 {
            return Err(Error::Config("card memory must be 1 byte..1 GiB"));
        }
        if config.cu_hz == 0 || config.core_hz == 0 {
            return Err(Error::Config("clocks must not be zero"));
        }
        let mut cus = Vec::new();
        for (kind, n) in [
            (CuKind::Image, config.image_cus),
            (CuKind::AudioMel, config.audio_cus),
            (CuKind::AudioNorm, config.norm_cus),
        ] {
            for _ in 0..n {
                cus.push(Mutex::new(CuState::new(kind)));
            }
        }
        if (config.flash_bytes as usize) < preba_protocol::fwimage::FLASH_MIN as usize {
            return Err(Error::Config(
                "flash must be at least 1 MiB (two image slots)",
            ));
        }
        let mut flash = match &config.flash_file {
            Some(p) => Flash::open(p, config.flash_bytes as usize)?.0,
            None => Flash::new(config.flash_bytes as usize),
        };
        if !boot::has_slots(&flash) && !boot::factory_program(&mut flash, firmware) {
            log::warn!("the firmware ELF does not fit a flash slot: it runs as the recovery image");
        }
        let first = boot::select(&mut flash, None);
        let nworkers = match config.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
        .min(cus.len().max(1));
        let (tx, rx) = mpsc::channel();
        let inject =
            (!config.inject.is_empty()).then(|| Arc::new(Injector::new(config.inject.clone())));
        // Every DMA passes the injector, so it sees the queues being created and can refuse,
        // garble or repeat transfers (test only; without a spec the host memory is untouched).
        let host: Arc<dyn HostMemory> = match &inject {
            Some(inj) => Arc::new(InjectMemory {
                inner: host,
                inj: inj.clone(),
            }),
            None => host,
        };
        let time = crate::clock::TimeBase::new(config.core_hz, config.cu_hz);
        let sh = Arc::new(Shared {
            hostif: Mutex::new(HostIf::new(config.cap.encode())),
            mem: CardMemory {
                size: config.card_mem_bytes,
                data: Mutex::new(vec![0; config.card_mem_bytes as usize]),
            },
            log: LogRing {
                ring: (0..c::LOG_RING_SIZE).map(|_| AtomicU8::new(0)).collect(),
                head: AtomicU32::new(0),
            },
            cfg: config,
            host,
            sink: irq,
            irq_pending: AtomicU32::new(0),
            wake: Wake {
                generation: Mutex::new(WakeState {
                    generation: 0,
                    idle: None,
                }),
                cv: Condvar::new(),
            },
            uart: Mutex::new(crate::uart::UartCapture::default()),
            gpio_out: AtomicU32::new(0),
            instructions: AtomicU64::new(0),
            cus,
            jobs: Mutex::new(Some(tx)),
            flash: Mutex::new(flash),
            debug: crate::debug::DebugLink::new(),
            boot_info: AtomicU32::new(first.info()),
            inject,
            epoch: Instant::now(),
            time,
            cu_horizon: AtomicU64::new(u64::MAX),
            card_t: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            reset_req: AtomicU64::new(0),
            reset_done: AtomicU64::new(0),
            state: Mutex::new(CoreState::Running),
            elf: firmware.to_vec(),
        });
        let cpu = match &first.image {
            Some(img) => build_cpu(&sh, img)?,
            None => build_cpu(&sh, firmware)?,
        };
        let watch = first.watch.then(|| Watch::new(first.slot));
        if let Some(inj) = &sh.inject {
            inj.attach(&sh);
        }
        let mut card = Card {
            sh: sh.clone(),
            core: None,
            workers: Vec::new(),
            spurious: None,
        };
        if let Some((i, period)) = sh.inject.as_ref().and_then(|x| x.spurious_period()) {
            let sh = sh.clone();
            let h = std::thread::Builder::new()
                .name("preba-spurious-irq".into())
                .spawn(move || spurious_irqs(sh, i, period))
                .map_err(Error::Spawn)?;
            card.spurious = Some(h);
        }
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..nworkers {
            let (sh, rx) = (sh.clone(), rx.clone());
            let h = std::thread::Builder::new()
                .name(format!("preba-cu-{i}"))
                .spawn(move || cu::worker(sh, rx))
                .map_err(Error::Spawn)?;
            card.workers.push(h);
        }
        let h = std::thread::Builder::new()
            .name("preba-core".into())
            .spawn(move || core_thread(sh, cpu, watch))
            .map_err(Error::Spawn)?;
        card.core = Some(h);
        Ok(card)
    }

    /// A host read of BAR0 (`data.len()` of 1, 2, 4 or 8 bytes at `offset`).
    pub fn bar0_read(&self, offset: u64, data: &mut [u8]) {
        let v = if matches!(data.len(), 1 | 2 | 4 | 8) && offset < regs::BAR0_SIZE {
            self.sh
                .hostif
                .lock()
                .expect("hostif lock")
                .bar0_read(offset, data.len())
        } else {
            u64::MAX
        };
        let n = data.len().min(8);
        data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
    }

    /// A host write of BAR0.
    pub fn bar0_write(&self, offset: u64, data: &[u8]) {
        if !matches!(data.len(), 1 | 2 | 4 | 8) || offset >= regs::BAR0_SIZE {
            return;
        }
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        let mut h = self.sh.hostif.lock().expect("hostif lock");
        let fx = h.bar0_write(offset, data.len(), u64::from_le_bytes(b));
        if let Some(inj) = &self.sh.inject {
            if matches!(offset, regs::ASQ | regs::AQA) || offset == regs::ASQ + 4 {
                inj.set_admin(h.asq, h.aqa);
            }
            if offset == regs::CC && h.cc & regs::CC_EN == 0 {
                inj.on_reset();
            }
        }
        drop(h);
        self.sh.apply(fx);
    }

    /// A host read of BAR2 (the log window): LOG_HEAD at 0, the ring size at 4, the ring at
    /// 0x8000. Any size up to 8 bytes.
    pub fn bar2_read(&self, offset: u64, data: &mut [u8]) {
        for (i, out) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(i as u64);
            *out = match o {
                0..4 => self.sh.log.head.load(Ordering::Acquire).to_le_bytes()[o as usize],
                4..8 => c::LOG_RING_SIZE.to_le_bytes()[o as usize - 4],
                _ if (c::BAR2_LOG_RING..regs::BAR2_SIZE).contains(&o) => {
                    self.sh.log.ring[(o - c::BAR2_LOG_RING) as usize].load(Ordering::Relaxed)
                }
                _ => 0,
            };
        }
    }

    /// BAR2 is read-only: writes are dropped.
    pub fn bar2_write(&self, _offset: u64, _data: &[u8]) {}

    /// 32-bit BAR0 read.
    pub fn read32(&self, offset: u64) -> u32 {
        let mut b = [0; 4];
        self.bar0_read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// 64-bit BAR0 read.
    pub fn read64(&self, offset: u64) -> u64 {
        let mut b = [0; 8];
        self.bar0_read(offset, &mut b);
        u64::from_le_bytes(b)
    }

    /// 32-bit BAR0 write.
    pub fn write32(&self, offset: u64, v: u32) {
        self.bar0_write(offset, &v.to_le_bytes());
    }

    /// 64-bit BAR0 write.
    pub fn write64(&self, offset: u64, v: u64) {
        self.bar0_write(offset, &v.to_le_bytes());
    }

    /// A function reset of the whole card: every register, CU and the log back to reset, and
    /// the boot ROM picks the image again ([`crate::boot::select`]). Card memory keeps its
    /// contents. Waits up to `timeout`.
    pub fn reset(&self, timeout: Duration) -> Result<(), Error> {
        let want = self.sh.reset_req.fetch_add(1, Ordering::AcqRel) + 1;
        self.sh.wake.kick();
        let deadline = Instant::now() + timeout;
        loop {
            if self.sh.reset_done.load(Ordering::Acquire) >= want {
                return Ok(());
            }
            if self.core.as_ref().is_none_or(|h| h.is_finished()) {
                return Err(Error::CoreDied);
            }
            let seen = self.sh.wake.current();
            if self.sh.reset_done.load(Ordering::Acquire) >= want {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout("function reset"));
            }
            self.sh.wake.wait(
                seen,
                Some((Instant::now() + Duration::from_millis(10)).min(deadline)),
            );
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }

    /// What the core is doing.
    pub fn core_state(&self) -> CoreState {
        if self.core.as_ref().is_none_or(|h| h.is_finished()) {
            return CoreState::Stopped;
        }
        *self.sh.state.lock().expect("state lock")
    }

    /// Test support: waits until nothing can change on the card before `deadline` unless the
    /// host acts, or until `deadline`; whether that came first. Then the core sleeps in `wfi`
    /// with no CU job in flight, no host access, reset or CU result since it went to sleep, and
    /// no timer of the firmware's (interrupt coalescing, heartbeat, watchdog) due before
    /// `deadline` (or it halted, or stopped). A harness that would sleep until `deadline` to
    /// let the card act waits for this instead: whatever the card would do by then it has
    /// done, and the rest of the sleep would have changed nothing. A debug halt never counts
    /// (the debugger may resume the hart any time).
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            if self.core_state() == CoreState::Stopped {
                return true;
            }
            // In steps, to notice a core thread that ended.
            let step = (Instant::now() + Duration::from_millis(10)).min(deadline);
            if self.sh.wake.wait_quiet(deadline, step) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// The card's time: modeled time at the core's last poll ([`Clock::Modeled`]: the core's
    /// cycles plus idle time, debug halts and earlier cores' time), or the wall clock since
    /// the card started.
    pub fn time(&self) -> Duration {
        if self.sh.modeled() {
            self.sh
                .time
                .duration(self.sh.card_t.load(Ordering::Acquire))
        } else {
            self.sh.epoch.elapsed()
        }
    }

    /// The newest bytes the firmware wrote to the UART (at least
    /// [`crate::uart::UART_KEEP`]; all of them until that many were written).
    pub fn uart(&self) -> Vec<u8> {
        self.sh.uart.lock().expect("uart lock").bytes().to_vec()
    }

    /// Soft-core instructions retired since the card was built, over every boot (up to the
    /// core's last slice).
    pub fn instructions(&self) -> u64 {
        self.sh.instructions.load(Ordering::Relaxed)
    }

    /// GPIO_OUT (the LEDs).
    pub fn leds(&self) -> u32 {
        self.sh.gpio_out.load(Ordering::Relaxed)
    }

    /// Reads card memory at `addr` (the core's address, from 0xA000_0000), for tests and
    /// debugging; `false` when the range is outside card memory.
    pub fn card_mem_read(&self, addr: u32, buf: &mut [u8]) -> bool {
        match self.sh.mem.range(addr, buf.len() as u64) {
            Some(r) => {
                buf.copy_from_slice(&self.sh.mem.data.lock().expect("card memory lock")[r]);
                true
            }
            None => false,
        }
    }

    /// A copy of the SPI flash array.
    pub fn flash(&self) -> Vec<u8> {
        self.sh
            .flash
            .lock()
            .expect("flash lock")
            .contents()
            .to_vec()
    }

    /// What the boot ROM chose at the last (re)boot: (running slot, outcome, failed slot),
    /// as INFO_BOOT and IDENTIFY report it.
    pub fn boot(&self) -> (u8, Option<preba_protocol::fwimage::BootOutcome>, u8) {
        let v = self.sh.boot_info.load(Ordering::Acquire);
        (
            v as u8,
            preba_protocol::fwimage::BootOutcome::from_u8((v >> 8) as u8),
            (v >> 16) as u8,
        )
    }

    /// Modeled board power now, watts (what the INA226 measures).
    pub fn board_power_w(&self) -> f64 {
        self.sh.board_power_w()
    }

    /// Per-CU statistics.
    pub fn cus(&self) -> Vec<CuInfo> {
        self.sh
            .cus
            .iter()
            .map(|m| {
                let cu = m.lock().expect("cu lock");
                CuInfo {
                    kind: cu.kind,
                    jobs: cu.jobs,
                    last_cycles: cu.cycles,
                    busy: cu.status == CuStatus::Busy,
                }
            })
            .collect()
    }

    /// The configuration the card was built with.
    pub fn config(&self) -> &CardConfig {
        &self.sh.cfg
    }

    /// How often each injected fault fired so far, and when it last did (empty without
    /// `inject`).
    pub fn injected(&self) -> Vec<Fired> {
        self.sh.inject.as_ref().map_or(Vec::new(), |i| i.fired())
    }

    /// Stops the core and the workers and joins them (also done by `Drop`).
    pub fn stop(&mut self) {
        self.sh.stop.store(true, Ordering::Release);
        self.sh.wake.kick();
        if let Some(i) = &self.sh.inject {
            i.stop();
        }
        if let Some(h) = self.spurious.take() {
            let _ = h.join();
        }
        if let Some(h) = self.core.take() {
            let _ = h.join();
        }
        self.sh.debug.join();
        self.sh.jobs.lock().expect("jobs lock").take();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fault injection's spurious interrupts: a message on vector 1 (or an INTx assertion) every
/// `period` with nothing posted, through the host interface so the host's mask still holds.
fn spurious_irqs(sh: Arc<Shared>, fault: usize, period: Duration) {
    let Some(inj) = sh.inject.clone() else {
        return;
    };
    while !inj.wait_stop(period) {
        let fx = sh.hostif.lock().expect("hostif lock").trigger(1);
        // Straight to the sink: a spurious message is not one `lost-msix` counts.
        if fx.msix & 2 != 0 {
            sh.sink.msix(1);
        }
        if let Some(l) = fx.intx {
            sh.sink.intx(l);
        }
        if fx.msix != 0 || fx.intx.is_some() {
            inj.note_spurious(fault);
        }
    }
}

/// A boot attempt the boot ROM watches: a slot that has not reached CSTS.RDY yet.
struct Watch {
    slot: u8,
    /// When the core thread first saw CC.EN during this attempt, nanoseconds since the card
    /// started. Wall-clock on either clock: the watch must roll back within the host's CAP.TO
    /// wait, which is wall time, and card time may run behind it (a spinning image retires
    /// far fewer than 250 M instructions per wall second in the interpreter).
    en_since: Option<u64>,
}

impl Watch {
    fn new(slot: u8) -> Watch {
        Watch {
            slot,
            en_since: None,
        }
    }

    /// The card nanosecond at which the attempt fails, once CC.EN was seen.
    fn deadline(&self, sh: &Shared) -> Option<u64> {
        let d = u64::try_from(sh.cfg.boot_deadline.as_nanos()).unwrap_or(u64::MAX);
        self.en_since.map(|t| t.saturating_add(d))
    }
}

/// Runs the boot ROM and loads what it picked (the recovery image when that fails to load).
fn boot_core(sh: &Arc<Shared>, last: Option<Failure>) -> Option<(Cpu<CardBus>, Option<Watch>)> {
    let choice = boot::select(&mut sh.flash.lock().expect("flash lock"), last);
    sh.boot_info.store(choice.info(), Ordering::Release);
    if choice.outcome != preba_protocol::fwimage::BootOutcome::Active {
        log::warn!(
            "boot ROM: {} (slot {} runs)",
            choice.outcome.describe(),
            preba_protocol::fwimage::slot_name(choice.slot)
        );
    }
    let cpu = match &choice.image {
        Some(img) => build_cpu(sh, img).or_else(|_| build_cpu(sh, &sh.elf)),
        None => build_cpu(sh, &sh.elf),
    }
    .ok()?;
    Some((cpu, choice.watch.then(|| Watch::new(choice.slot))))
}

/// Nanoseconds since the card started (the boot watch's clock).
fn wall_nanos(sh: &Shared) -> u64 {
    u64::try_from(sh.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Checks a watched boot attempt: confirms the slot at CSTS.RDY, or says why it failed.
fn check_watch(sh: &Shared, w: &mut Watch, now_ns: u64) -> Result<bool, Failure> {
    let (csts, cc) = {
        let h = sh.hostif.lock().expect("hostif lock");
        (h.csts, h.cc)
    };
    if csts & regs::CSTS_RDY != 0 {
        boot::confirm(&mut sh.flash.lock().expect("flash lock"), w.slot);
        return Ok(true);
    }
    if matches!(*sh.state.lock().expect("state lock"), CoreState::Halted(_)) {
        return Err(Failure::Crash);
    }
    if cc & regs::CC_EN != 0 {
        w.en_since.get_or_insert(now_ns);
        if w.deadline(sh).is_some_and(|d| now_ns >= d) {
            return Err(Failure::Timeout);
        }
    } else {
        w.en_since = None;
    }
    Ok(false)
}

/// Replaces the core after a reset or reboot; modeled card time carries on from where the
/// old core left it, so mtime, CU start times and completions never go back.
fn replace_core(sh: &Arc<Shared>, old: &Cpu<CardBus>, new: &mut Cpu<CardBus>) {
    let t = old.bus().card_time(old.now());
    new.bus_mut().extra = t.saturating_sub(new.now());
    sh.cu_horizon.store(0, Ordering::Release);
}

/// Modeled clock: debug mode shows to the firmware only as time passing (stoptime 0), so
/// the wall time the hart spent halted is added to card time when it runs again.
fn account_halt(sh: &Shared, cpu: &mut Cpu<CardBus>, since: &mut Option<Instant>) {
    if !sh.modeled() {
        return;
    }
    if cpu.is_halted() {
        since.get_or_insert_with(Instant::now);
    } else if let Some(s) = since.take() {
        let c = sh.time.cycles(s.elapsed());
        let bus = cpu.bus_mut();
        bus.extra = bus.extra.saturating_add(c);
        cpu.request_poll();
    }
}

/// The hart waits in `wfi` with nothing pending (modeled clock): decides how much idle time
/// passes. Nothing happens on the card between now and the next event (the timer, a CU's
/// modeled completion), except what the host does, a CU's host computation finishing or the
/// boot watch's wall-clock deadline. So: while a CU computation still runs that could end before that event, wait
/// for it (wall time; card time stands still); while CU work is in flight otherwise, jump to
/// the event (a stuck CU's watchdog fires at once in wall time); with no CU work, let idle
/// time pass at the wall clock's pace (an idle card sleeps instead of spinning through its
/// heartbeats, and host deadlines keep their real-time meaning).
fn idle_modeled(sh: &Shared, cpu: &mut Cpu<CardBus>, watch: Option<&Watch>, seen: u64) {
    let t = cpu.bus().card_time(cpu.now());
    let cus = cu::deliver(sh, t);
    // Something arrived since `seen` (a host access, a result, a reset or debugger request):
    // the core looks at it at the current time before any time passes.
    if sh.wake.current() != seen || sh.reset_pending() || sh.debug.pending() {
        cpu.request_poll();
        return;
    }
    if cus.bound <= t {
        sh.wake.wait(seen, None);
        cpu.request_poll();
        return;
    }
    let mut next = cus.due;
    let timer = cpu.bus().timer_at();
    if timer > t {
        next = next.min(timer);
    }
    let watch_at = watch
        .and_then(|w| w.deadline(sh))
        .map(|d| sh.epoch + Duration::from_nanos(d));
    if cus.bound <= next {
        sh.wake.wait(seen, watch_at);
    } else if cus.busy {
        if next == u64::MAX {
            sh.wake.wait(seen, watch_at);
        } else {
            cpu.skip_idle(next - t);
        }
    } else {
        let start = Instant::now();
        let pace = (next != u64::MAX).then(|| start + sh.time.duration(next - t));
        let deadline = match (pace, watch_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Nothing to do but let time pass: idle for [`Card::wait_idle`].
        sh.wake.idle_wait(seen, deadline);
        let passed = sh.time.cycles(start.elapsed());
        cpu.skip_idle(passed.min(next - t));
    }
    cpu.request_poll();
}

fn core_thread(sh: Arc<Shared>, mut cpu: Cpu<CardBus>, mut watch: Option<Watch>) {
    let mut resets_seen = 0u64;
    // Instructions of the cores that reboots replaced.
    let mut retired_before = 0u64;
    let mut halted_since = None;
    loop {
        if sh.stop.load(Ordering::Acquire) {
            sh.set_state(CoreState::Stopped);
            return;
        }
        sh.debug.service(&sh, &mut cpu);
        account_halt(&sh, &mut cpu, &mut halted_since);
        let req = sh.reset_req.load(Ordering::Acquire);
        if req != resets_seen {
            resets_seen = req;
            sh.debug.note_reset();
            sh.reset_peripherals();
            let (mut c, w) = match boot_core(&sh, None) {
                Some(c) => c,
                None => return,
            };
            retired_before += cpu.retired();
            replace_core(&sh, &cpu, &mut c);
            (cpu, watch) = (c, w);
            halted_since = None;
            sh.set_state(CoreState::Running);
            sh.reset_done.store(req, Ordering::Release);
            sh.wake.kick();
            continue;
        }
        if let Some(w) = watch.as_mut() {
            match check_watch(&sh, w, wall_nanos(&sh)) {
                Ok(true) => watch = None,
                Ok(false) => {}
                Err(f) => {
                    log::warn!(
                        "boot ROM: slot {} failed to come up ({f:?}): rebooting",
                        preba_protocol::fwimage::slot_name(w.slot)
                    );
                    sh.reset_for_reboot();
                    let (mut c, w) = match boot_core(&sh, Some(f)) {
                        Some(c) => c,
                        None => return,
                    };
                    retired_before += cpu.retired();
                    replace_core(&sh, &cpu, &mut c);
                    (cpu, watch) = (c, w);
                    halted_since = None;
                    sh.set_state(CoreState::Running);
                    continue;
                }
            }
        }
        if *sh.state.lock().expect("state lock") != CoreState::Running {
            let seen = sh.wake.current();
            if sh.stop.load(Ordering::Acquire)
                || sh.reset_req.load(Ordering::Acquire) != resets_seen
                || sh.debug.pending()
            {
                continue;
            }
            // Halted or stopped: nothing happens until the host resets the card.
            sh.wake.idle_wait(seen, None);
            continue;
        }
        let seen = sh.wake.current();
        // After `seen`: a debugger access posted from here on kicks past it, so the waits
        // below cannot sleep through it.
        sh.debug.service(&sh, &mut cpu);
        account_halt(&sh, &mut cpu, &mut halted_since);
        let exit = cpu.run(sh.cfg.slice);
        sh.instructions
            .store(retired_before + cpu.retired(), Ordering::Relaxed);
        match exit {
            Exit::Budget => {}
            Exit::Halt(_) => {
                if let Some(h) = cpu.bus_mut().test_halt.take() {
                    sh.set_state(CoreState::Halted(h));
                } else if cpu.bus().stalled && !sh.reset_pending() && !sh.debug.pending() {
                    // At a CU's bound: its host computation kicks when it is done.
                    sh.wake.wait(seen, None);
                    cpu.request_poll();
                }
            }
            Exit::Debug => {
                account_halt(&sh, &mut cpu, &mut halted_since);
                // Halted for the debugger: nothing to run until it resumes or resets the hart.
                if !sh.debug.spin_for_request() {
                    sh.wake.wait(seen, None);
                }
            }
            Exit::Wfi if sh.modeled() => idle_modeled(&sh, &mut cpu, watch.as_ref(), seen),
            Exit::Wfi => {
                let bus = cpu.bus();
                let mut deadline = if bus.mtimecmp == u64::MAX {
                    None
                } else {
                    let ticks = bus.mtimecmp.saturating_sub(bus.mtime(cpu.now()));
                    Some(Instant::now() + Duration::from_nanos(ticks.saturating_mul(100)))
                };
                if let Some(d) = watch.as_ref().and_then(|w| w.deadline(&sh)) {
                    let d = sh.epoch + Duration::from_nanos(d);
                    deadline = Some(deadline.map_or(d, |x| x.min(d)));
                }
                // Idle when no CU job is in flight (a finishing one kicks the core).
                let cu_busy = sh
                    .cus
                    .iter()
                    .any(|m| m.lock().expect("cu lock").status == CuStatus::Busy);
                if cu_busy {
                    sh.wake.wait(seen, deadline);
                } else {
                    sh.wake.idle_wait(seen, deadline);
                }
                cpu.request_poll();
            }
        }
    }
}
