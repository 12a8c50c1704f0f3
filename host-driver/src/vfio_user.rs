//! The vfio-user transport: a client of a vfio-user server (`preba-card`)
//! through our own [`crate::vfio_user_client::Client`] (deadlines on every
//! socket operation, untrusted replies). BAR accesses are REGION_READ /
//! REGION_WRITE messages; the DMA arena is a memfd handed to the server with
//! DMA_MAP (vfio_user 0.1.7 has no server-to-client DMA messages, so the
//! server maps our memory); interrupts are eventfds given with SET_IRQS for
//! the MSI-X index. The driver polls as well, so a server that never signals
//! still works (more slowly).
//!
//! Also [`Emulated`]: starts `preba-card` on a private socket and stops it on
//! drop.
#![forbid(unsafe_code)]

use crate::dma::{DmaMem, EventFd};
use crate::transport::{Op, Region, TResult, Transport, TransportError};
use crate::vfio_user_client::{Client, ClientError};
use preba_protocol::regs::MSIX_VECTORS;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BAR0_REGION: u32 = 0;
const BAR2_REGION: u32 = 2;
const CONFIG_REGION: u32 = 7;
const MSIX_IRQ_INDEX: u32 = 2;
const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;
const PCI_CAP_PTR: u64 = 0x34;
const PCI_CAP_ID_MSIX: u8 = 0x11;
const MSIX_ENABLE: u16 = 1 << 15;
/// Deadline of one socket operation (a register access is microseconds; a
/// card that takes this long is stopped or gone).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of DEVICE_RESET: the card's boot ROM may retry a slot.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(30);

pub struct VfioUser {
    name: String,
    client: Mutex<Client>,
    arena: DmaMem,
    irqs: Vec<EventFd>,
}

fn client_err(op: Op) -> impl FnOnce(ClientError) -> TransportError {
    move |source| TransportError::VfioUser { op, source }
}

fn io_err(op: Op) -> impl FnOnce(std::io::Error) -> TransportError {
    move |source| TransportError::Io { op, source }
}

fn read_op(region: Region, off: u64, len: usize) -> Op {
    Op::Read { region, off, len }
}

fn write_op(region: Region, off: u64, len: usize) -> Op {
    Op::Write { region, off, len }
}

impl VfioUser {
    /// Connects, maps the arena for the device, enables memory and bus
    /// mastering, and routes MSI-X to eventfds (when the server has MSI-X).
    pub fn connect(path: &Path, name: String, arena_bytes: usize) -> TResult<VfioUser> {
        let mut client = Client::connect(path, OP_TIMEOUT).map_err(client_err(Op::Connect))?;
        let arena =
            DmaMem::new(arena_bytes, crate::driver::ARENA_IOVA).map_err(io_err(Op::Arena))?;
        client
            .dma_map(0, arena.iova(), arena.len() as u64, arena.fd())
            .map_err(client_err(Op::DmaMap))?;
        let mut irqs = Vec::new();
        let count = if client.num_irqs() > MSIX_IRQ_INDEX {
            client.irq_count(MSIX_IRQ_INDEX).unwrap_or(0)
        } else {
            0
        };
        if count > 0 {
            for _ in 0..count.min(u32::from(MSIX_VECTORS)) {
                irqs.push(EventFd::new().map_err(io_err(Op::Eventfd))?);
            }
        }
        if !setup(&mut client, &irqs)? {
            irqs.clear();
        }
        Ok(VfioUser {
            name,
            client: Mutex::new(client),
            arena,
            irqs,
        })
    }

    /// Whether interrupts reach the driver (else it polls).
    pub fn has_irqs(&self) -> bool {
        !self.irqs.is_empty()
    }

    fn client(&self) -> TResult<std::sync::MutexGuard<'_, Client>> {
        self.client.lock().map_err(|_| TransportError::Poisoned)
    }
}

/// Memory and bus mastering on, MSI-X routed to `irqs` and enabled: after connecting and
/// again after a device reset (which clears config space). False when the server took no
/// eventfds (the driver then polls).
fn setup(client: &mut Client, irqs: &[EventFd]) -> TResult<bool> {
    let mut cmd = [0u8; 2];
    client
        .region_read(CONFIG_REGION, PCI_COMMAND, &mut cmd)
        .map_err(client_err(read_op(Region::Config, PCI_COMMAND, 2)))?;
    let c = u16::from_le_bytes(cmd) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
    client
        .region_write(CONFIG_REGION, PCI_COMMAND, &c.to_le_bytes())
        .map_err(client_err(write_op(Region::Config, PCI_COMMAND, 2)))?;
    if irqs.is_empty() {
        return Ok(false);
    }
    let fds: Vec<_> = irqs.iter().map(|e| e.raw()).collect();
    let routed = client
        .set_irqs(
            MSIX_IRQ_INDEX,
            IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            0,
            &fds,
        )
        .is_ok();
    if routed {
        enable_msix(client);
    }
    Ok(routed)
}

/// Sets MSI-X enable in the capability's message control, if there is one.
fn enable_msix(client: &mut Client) {
    let mut b = [0u8; 1];
    if client
        .region_read(CONFIG_REGION, PCI_CAP_PTR, &mut b)
        .is_err()
    {
        return;
    }
    let mut ptr = u64::from(b[0] & !3);
    for _ in 0..48 {
        if !(0x40..=0xfc).contains(&ptr) {
            return;
        }
        let mut hdr = [0u8; 4];
        if client.region_read(CONFIG_REGION, ptr, &mut hdr).is_err() {
            return;
        }
        if hdr[0] == PCI_CAP_ID_MSIX {
            let ctl = u16::from_le_bytes([hdr[2], hdr[3]]) | MSIX_ENABLE;
            let _ = client.region_write(CONFIG_REGION, ptr + 2, &ctl.to_le_bytes());
            return;
        }
        ptr = u64::from(hdr[1] & !3);
    }
}

impl Transport for VfioUser {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn bar0_read(&self, off: u64, data: &mut [u8]) -> TResult<()> {
        self.client()?
            .region_read(BAR0_REGION, off, data)
            .map_err(client_err(read_op(Region::Bar0, off, data.len())))
    }
    /// Posted, as a PCIe memory write is: doorbells cost the host one
    /// message, not a round trip (two context switches and a receive per
    /// request each way); reads after it are answered after it is applied.
    fn bar0_write(&self, off: u64, data: &[u8]) -> TResult<()> {
        self.client()?
            .region_write_posted(BAR0_REGION, off, data)
            .map_err(client_err(write_op(Region::Bar0, off, data.len())))
    }
    fn bar2_read(&self, off: u64, data: &mut [u8]) -> TResult<()> {
        self.client()?
            .region_read(BAR2_REGION, off, data)
            .map_err(client_err(read_op(Region::Bar2, off, data.len())))
    }
    fn arena(&self) -> &DmaMem {
        &self.arena
    }
    fn wait_irq(&self, vector: u16, timeout: Duration) -> TResult<bool> {
        match self.irqs.get(vector as usize) {
            Some(e) => e.wait(timeout).map_err(io_err(Op::IrqWait { vector })),
            None => {
                std::thread::sleep(timeout);
                Ok(false)
            }
        }
    }
    fn reset(&self) -> TResult<()> {
        let mut c = self.client()?;
        c.reset(RESET_TIMEOUT).map_err(client_err(Op::Reset))?;
        setup(&mut c, &self.irqs)?;
        Ok(())
    }
}

impl Drop for VfioUser {
    fn drop(&mut self) {
        if let Ok(c) = self.client.get_mut() {
            c.shutdown();
        }
    }
}

/// A `preba-card` process on a private socket; killed on drop.
pub struct Emulated {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Emulated {
    /// The `preba-card` binary: `PREBA_CARD_BIN`, else next to the running
    /// executable (or one directory up, for test binaries in `deps/`).
    pub fn card_bin() -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("PREBA_CARD_BIN") {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let dir = exe.parent().unwrap_or(Path::new("."));
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join("preba-card");
            if p.is_file() {
                return Ok(p);
            }
        }
        Err(format!(
            "no preba-card binary next to {} (build it: cargo build -p preba-card; or set PREBA_CARD_BIN)",
            exe.display()
        ))
    }

    /// The firmware ELF: `PREBA_FIRMWARE`, else the workspace's build output.
    pub fn firmware() -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("PREBA_FIRMWARE") {
            return Ok(PathBuf::from(p));
        }
        let mut cands = Vec::new();
        let rel = Path::new("target/riscv32imac-unknown-none-elf/firmware/preba-firmware");
        if let Ok(cwd) = std::env::current_dir() {
            for a in cwd.ancestors() {
                cands.push(a.join(rel));
            }
        }
        if let Ok(exe) = std::env::current_exe() {
            for a in exe.ancestors().skip(1) {
                cands.push(a.join(rel));
            }
        }
        cands.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel));
        cands.into_iter().find(|p| p.is_file()).ok_or_else(|| {
            "no firmware ELF (build it: cargo xtask build-fw; or set PREBA_FIRMWARE)".to_string()
        })
    }

    /// Starts the card and waits until its socket accepts.
    pub fn start() -> Result<Emulated, String> {
        Emulated::start_with(None)
    }

    /// Starts the card, with its SPI flash kept in `flash` when given, and waits until its
    /// socket accepts.
    pub fn start_with(flash: Option<&Path>) -> Result<Emulated, String> {
        Emulated::spawn(&Emulated::card_bin()?, &Emulated::firmware()?, flash)
    }

    /// Starts `bin` (a `preba-card`) with firmware `fw`, its SPI flash in `flash` when given,
    /// and waits until its socket accepts.
    pub fn spawn(bin: &Path, fw: &Path, flash: Option<&Path>) -> Result<Emulated, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("preba-card-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        let socket = dir.join("card.sock");
        let log = std::fs::File::create(dir.join("card.log"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--socket").arg(&socket).arg("--firmware").arg(fw);
        if let Some(f) = flash {
            cmd.arg("--flash").arg(f);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut em = Emulated { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = em.child.try_wait() {
                return Err(format!(
                    "preba-card exited at start ({st}){}",
                    em.log_tail()
                ));
            }
            if em.socket.exists() {
                return Ok(em);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "preba-card did not open its socket within 30 s{}",
                    em.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the card wrote to stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("card.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!(":\n  {tail}")
        }
    }
}

impl Drop for Emulated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects to a socket, retrying while the server comes up.
pub fn connect_retry(
    path: &Path,
    name: String,
    arena_bytes: usize,
    patience: Duration,
) -> TResult<VfioUser> {
    let deadline = Instant::now() + patience;
    loop {
        match VfioUser::connect(path, name.clone(), arena_bytes) {
            Ok(v) => return Ok(v),
            // Only a refused connection is retried: a server that accepted
            // serves one connection only.
            Err(TransportError::VfioUser {
                source: ClientError::Connect(..),
                ..
            }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e),
        }
    }
}
