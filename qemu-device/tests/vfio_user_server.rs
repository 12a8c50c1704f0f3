//! `preba-card` as a process, spoken to over its vfio-user socket by a minimal raw-protocol
//! client: version, device/region/IRQ info, config space, BAR0 and BAR2, DMA mapped page by page
//! from a memfd (translation, unmap, a DMA fault), MSI-X through an eventfd, device reset, and
//! the lifecycle (stale socket replaced, exit on disconnect and on SIGTERM, socket removed).
//!
//! The firmware ELF comes from `$PREBA_FIRMWARE`, else the card harness builds it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use preba_protocol::admin::{AdminSqe, IDENTIFY_SIZE, Identify};
use preba_protocol::hostq::{Doorbell, QueueMemory, QueuePair};
use preba_protocol::io::{CQE_SIZE, Cqe, SQE_SIZE};
use preba_protocol::regs;
use preba_protocol::status::Status;

const VERSION: u16 = 1;
const DMA_MAP: u16 = 2;
const DMA_UNMAP: u16 = 3;
const DEVICE_GET_INFO: u16 = 4;
const GET_REGION_INFO: u16 = 5;
const GET_IRQ_INFO: u16 = 7;
const SET_IRQS: u16 = 8;
const REGION_READ: u16 = 9;
const REGION_WRITE: u16 = 10;
const DEVICE_RESET: u16 = 13;
const FLAG_REPLY: u32 = 1;
const FLAG_ERROR: u32 = 1 << 5;

const BAR0: u32 = 0;
const BAR2: u32 = 2;
const CONFIG: u32 = 7;

/// The firmware ELF: `$PREBA_FIRMWARE`, else built by the card harness (once per target dir).
fn firmware() -> Option<PathBuf> {
    static FW: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    Some(
        FW.get_or_init(|| preba_card::harness::firmware_elf().expect("the firmware ELF"))
            .clone(),
    )
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("preba-vfu-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running preba-card; killed on drop.
struct Card {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Card {
    fn start(sock: &Path, fw: &Path) -> Card {
        Card::start_with(sock, fw, &[])
    }

    fn start_with(sock: &Path, fw: &Path, extra: &[&str]) -> Card {
        let mut child = Command::new(env!("CARGO_BIN_EXE_preba-card"))
            .arg("--socket")
            .arg(sock)
            .arg("--firmware")
            .arg(fw)
            .args([
                "--image-cus",
                "1",
                "--audio-cus",
                "1",
                "--norm-cus",
                "1",
                "--workers",
                "1",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start preba-card");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut c = Card {
            child: Some(child),
            lines,
            log: Vec::new(),
        };
        c.wait_line("listening on", Duration::from_secs(30));
        c
    }

    fn wait_line(&mut self, pat: &str, t: Duration) {
        let deadline = Instant::now() + t;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(pat);
                    self.log.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "preba-card never said {pat:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Waits for the process to exit; returns its status.
    fn wait_exit(&mut self, t: Duration) -> std::process::ExitStatus {
        let ch = self.child.as_mut().unwrap();
        let deadline = Instant::now() + t;
        loop {
            if let Some(st) = ch.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "preba-card did not exit in {t:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }
}

/// A raw vfio-user client.
struct Client {
    s: UnixStream,
    id: u16,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Client { s, id: 0 };
        let caps = br#"{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576}}"#;
        let mut p = vec![0, 0, 1, 0];
        p.extend_from_slice(caps);
        p.push(0);
        let r = c.call(VERSION, &p, &[]).expect("version");
        assert_eq!(&r[..4], &[0, 0, 0, 0], "server version 0.0");
        c
    }

    /// Sends a command; returns the reply payload, or the error number.
    fn call(&mut self, cmd: u16, payload: &[u8], fds: &[RawFd]) -> Result<Vec<u8>, u32> {
        self.id = self.id.wrapping_add(1);
        let mut m = Vec::with_capacity(16 + payload.len());
        m.extend_from_slice(&self.id.to_le_bytes());
        m.extend_from_slice(&cmd.to_le_bytes());
        m.extend_from_slice(&((16 + payload.len()) as u32).to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(payload);
        if fds.is_empty() {
            self.s.write_all(&m).unwrap();
        } else {
            send_fds(&self.s, &m, fds);
        }
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).expect("reply header");
        let id = u16::from_le_bytes([h[0], h[1]]);
        let rcmd = u16::from_le_bytes([h[2], h[3]]);
        let size = le32(&h, 4) as usize;
        let flags = le32(&h, 8);
        assert_eq!((id, rcmd), (self.id, cmd), "reply matches request");
        assert_ne!(flags & FLAG_REPLY, 0);
        let mut body = vec![0; size - 16];
        self.s.read_exact(&mut body).unwrap();
        if flags & FLAG_ERROR != 0 {
            return Err(le32(&h, 12));
        }
        Ok(body)
    }

    fn read(&mut self, region: u32, off: u64, n: u32) -> Result<Vec<u8>, u32> {
        let mut p = off.to_le_bytes().to_vec();
        p.extend_from_slice(&region.to_le_bytes());
        p.extend_from_slice(&n.to_le_bytes());
        self.call(REGION_READ, &p, &[]).map(|r| r[16..].to_vec())
    }

    fn write(&mut self, region: u32, off: u64, data: &[u8]) -> Result<(), u32> {
        let mut p = off.to_le_bytes().to_vec();
        p.extend_from_slice(&region.to_le_bytes());
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
        p.extend_from_slice(data);
        self.call(REGION_WRITE, &p, &[]).map(|_| ())
    }

    fn r32(&mut self, off: u64) -> u32 {
        le32(&self.read(BAR0, off, 4).unwrap(), 0)
    }

    fn w32(&mut self, off: u64, v: u32) {
        self.write(BAR0, off, &v.to_le_bytes()).unwrap();
    }

    fn dma_map(&mut self, fd: RawFd, offset: u64, iova: u64, size: u64) {
        let mut p = 32u32.to_le_bytes().to_vec();
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&iova.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        self.call(DMA_MAP, &p, &[fd]).expect("dma map");
    }

    fn dma_unmap(&mut self, iova: u64, size: u64) {
        let mut p = 24u32.to_le_bytes().to_vec();
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&iova.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        self.call(DMA_UNMAP, &p, &[]).expect("dma unmap");
    }

    fn set_irq(&mut self, index: u32, start: u32, fd: RawFd) {
        let mut p = 20u32.to_le_bytes().to_vec();
        p.extend_from_slice(&(4u32 | 32).to_le_bytes()); // DATA_EVENTFD | ACTION_TRIGGER
        p.extend_from_slice(&index.to_le_bytes());
        p.extend_from_slice(&start.to_le_bytes());
        p.extend_from_slice(&1u32.to_le_bytes());
        self.call(SET_IRQS, &p, &[fd]).expect("set irqs");
    }
}

fn send_fds(s: &UnixStream, data: &[u8], fds: &[RawFd]) {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds one cmsg of `fd_bytes` (CMSG_SPACE above); the data
    // pointer is inside it, and `fds` is copied in whole.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), fd_bytes);
    }
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, 0) };
    assert_eq!(
        n as usize,
        data.len(),
        "sendmsg: {}",
        std::io::Error::last_os_error()
    );
}

fn memfd(len: u64) -> File {
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"preba-test-arena".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(len).unwrap();
    // preba-card maps only memory that cannot shrink under it.
    // SAFETY: fcntl F_ADD_SEALS on our own memfd, integer arguments only.
    let r = unsafe {
        libc::fcntl(
            fd,
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    assert_eq!(r, 0);
    f
}

fn eventfd() -> File {
    // SAFETY: plain eventfd creation.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd we own.
    unsafe { File::from_raw_fd(fd) }
}

fn wait_event(f: &File, t: Duration) -> u64 {
    let deadline = Instant::now() + t;
    loop {
        let mut b = [0u8; 8];
        if let Ok(8) = (&*f).read(&mut b) {
            return u64::from_ne_bytes(b);
        }
        if Instant::now() > deadline {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The test's DMA arena: a memfd, mapped to the card page by page in reverse order of the file
/// (IOVA page i is file page PAGES - 1 - i), as a vIOMMU may.
const ARENA_IOVA: u64 = 0x4000_0000;
const PAGES: u64 = 16;
fn file_off(iova: u64) -> u64 {
    let i = (iova - ARENA_IOVA) / 4096;
    (PAGES - 1 - i) * 4096 + iova % 4096
}

/// Writes through the test's own page table (page by page, like the card).
fn put(mem: &File, iova: u64, b: &[u8]) {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < b.len() {
        let a = iova + done as u64;
        let n = ((4096 - a % 4096) as usize).min(b.len() - done);
        mem.write_all_at(&b[done..done + n], file_off(a)).unwrap();
        done += n;
    }
}

fn get(mem: &File, iova: u64, b: &mut [u8]) {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < b.len() {
        let a = iova + done as u64;
        let n = ((4096 - a % 4096) as usize).min(b.len() - done);
        mem.read_exact_at(&mut b[done..done + n], file_off(a))
            .unwrap();
        done += n;
    }
}

/// The test's rings for the host-side queue engine (`preba_protocol::hostq`, the driver's):
/// the memfd through the test's page table, doorbells as BAR0 writes over the socket.
struct Rings<'a> {
    c: &'a mut Client,
    mem: &'a File,
}

impl QueueMemory for Rings<'_> {
    type Error = std::convert::Infallible;
    fn write_sqe(&mut self, addr: u64, entry: &[u8; SQE_SIZE]) -> Result<(), Self::Error> {
        put(self.mem, addr, entry);
        Ok(())
    }
    fn read_cqe(&mut self, addr: u64, entry: &mut [u8; CQE_SIZE]) -> Result<(), Self::Error> {
        get(self.mem, addr, entry);
        Ok(())
    }
    fn doorbell(&mut self, bell: Doorbell) -> Result<(), Self::Error> {
        self.c.w32(bell.offset(), bell.value());
        Ok(())
    }
}

struct Admin<'a> {
    c: &'a mut Client,
    mem: &'a File,
    q: QueuePair,
    cid: u16,
}

const ASQ: u64 = ARENA_IOVA;
const ACQ: u64 = ARENA_IOVA + 0x1000;
const DATA: u64 = ARENA_IOVA + 0x2000;
const ENTRIES: u16 = 8;

impl Admin<'_> {
    fn enable<'a>(c: &'a mut Client, mem: &'a File) -> Admin<'a> {
        let n = u32::from(ENTRIES - 1);
        c.w32(regs::AQA, n | n << 16);
        c.write(BAR0, regs::ASQ, &ASQ.to_le_bytes()).unwrap();
        c.write(BAR0, regs::ACQ, &ACQ.to_le_bytes()).unwrap();
        c.w32(regs::CC, regs::CC_EN);
        let t = Instant::now();
        while c.r32(regs::CSTS) & regs::CSTS_RDY == 0 {
            assert!(t.elapsed() < Duration::from_secs(20), "CSTS.RDY");
            std::thread::sleep(Duration::from_millis(2));
        }
        Admin {
            c,
            mem,
            q: QueuePair::new(0, ENTRIES, ASQ, ACQ).unwrap(),
            cid: 1,
        }
    }

    fn identify(&mut self, data: u64) -> (Cqe, Identify) {
        let mut sqe = AdminSqe::identify(data);
        sqe.cid = self.cid;
        self.cid += 1;
        let mut rings = Rings {
            c: &mut *self.c,
            mem: self.mem,
        };
        if let Err(e) = self.q.submit(&mut rings, &sqe.encode()) {
            panic!("admin submit: {e}");
        }
        let t = Instant::now();
        let cqe = loop {
            match self.q.poll_cid(&mut rings, sqe.cid) {
                Ok(Some(c)) => break c,
                Ok(None) => {}
                Err(e) => panic!("admin completion: {e}"),
            }
            assert!(t.elapsed() < Duration::from_secs(20), "no completion");
            std::thread::sleep(Duration::from_millis(1));
        };
        let mut d = [0u8; IDENTIFY_SIZE];
        if (ARENA_IOVA..ARENA_IOVA + PAGES * 4096).contains(&data) {
            get(self.mem, data, &mut d);
        }
        (cqe, Identify::parse(&d))
    }
}

#[test]
fn vfio_user_device_end_to_end() {
    let Some(fw) = firmware() else { return };
    let dir = tmpdir("e2e");
    let sock = dir.join("card.sock");
    // A stale socket file from a killed server: replaced at start.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut card = Card::start(&sock, &fw);
    let mut c = Client::connect(&sock);

    // Device, regions, IRQs.
    let info = c
        .call(DEVICE_GET_INFO, &16u32.to_le_bytes().repeat(4), &[])
        .unwrap();
    assert_eq!(le32(&info, 4) & 3, 3, "PCI and RESET flags");
    assert_eq!((le32(&info, 8), le32(&info, 12)), (9, 5), "regions, irqs");
    for (index, size) in [
        (BAR0, regs::BAR0_SIZE),
        (1, 0),
        (BAR2, regs::BAR2_SIZE),
        (CONFIG, 4096),
    ] {
        let mut p = vec![0u8; 32];
        p[..4].copy_from_slice(&32u32.to_le_bytes());
        p[8..12].copy_from_slice(&index.to_le_bytes());
        let r = c.call(GET_REGION_INFO, &p, &[]).unwrap();
        assert_eq!(le64(&r, 16), size, "region {index} size");
    }
    let mut p = 16u32.to_le_bytes().to_vec();
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(&2u32.to_le_bytes());
    p.extend_from_slice(&[0; 4]);
    let r = c.call(GET_IRQ_INFO, &p, &[]).unwrap();
    assert_eq!(le32(&r, 12), 16, "MSI-X vectors");

    // Config space: IDs, class, MSI-X capability.
    let cfg = c.read(CONFIG, 0, 64).unwrap();
    assert_eq!(u16::from_le_bytes([cfg[0], cfg[1]]), regs::PCI_VENDOR_ID);
    assert_eq!(u16::from_le_bytes([cfg[2], cfg[3]]), regs::PCI_DEVICE_ID);
    assert_eq!(le32(&cfg, 8) >> 8, regs::PCI_CLASS_CODE);
    assert_eq!(cfg[8], regs::PCI_REVISION);
    let cap = cfg[0x34] as u64;
    let msix = c.read(CONFIG, cap, 12).unwrap();
    assert_eq!(msix[0], 0x11);
    assert_eq!(u16::from_le_bytes([msix[2], msix[3]]) & 0x7ff, 15);
    assert_eq!(le32(&msix, 4), regs::MSIX_TABLE as u32);
    assert_eq!(le32(&msix, 8), regs::MSIX_PBA as u32);
    // BAR sizing.
    c.write(CONFIG, 0x10, &[0xff; 4]).unwrap();
    assert_eq!(
        le32(&c.read(CONFIG, 0x10, 4).unwrap(), 0),
        !(regs::BAR0_SIZE as u32 - 1)
    );
    // Out of range: an error reply, the connection lives on.
    assert!(c.read(BAR0, regs::BAR0_SIZE - 2, 4).is_err());
    assert!(c.read(1, 0, 4).is_err());

    // BAR0 and BAR2.
    assert_eq!(c.r32(regs::VS), 0x0001_0001, "protocol 1.1");
    let cap = le64(&c.read(BAR0, regs::CAP, 8).unwrap(), 0);
    assert_eq!(cap & 0xffff, 4095, "MQES");
    c.w32(regs::SCRATCH, 0xdead_beef);
    assert_eq!(c.r32(regs::SCRATCH), 0xdead_beef);
    assert_eq!(
        le32(&c.read(BAR2, 4, 4).unwrap(), 0),
        0x8000,
        "log ring size"
    );

    // DMA through a memfd mapped page by page, MSI-X vector 0 for the admin queue.
    let mem = memfd(PAGES * 4096);
    for i in 0..PAGES {
        c.dma_map(
            mem.as_raw_fd(),
            (PAGES - 1 - i) * 4096,
            ARENA_IOVA + i * 4096,
            4096,
        );
    }
    let ev = eventfd();
    c.set_irq(2, 0, ev.as_raw_fd());
    let mut a = Admin::enable(&mut c, &mem);
    let (cqe, id) = a.identify(DATA);
    assert_eq!(cqe.status(), Status::Success);
    assert_eq!((id.version_major, id.version_minor), (1, 1));
    assert_eq!((id.image_cus, id.audio_cus, id.norm_cus), (1, 1, 1));
    assert!(
        wait_event(&ev, Duration::from_secs(5)) > 0,
        "MSI-X vector 0 fired"
    );
    // The identify data spans no page boundary; put it across one: IOVA page 2 -> 3 are file
    // pages 13 and 12, so translation must be per page.
    let (cqe, id2) = a.identify(DATA + 0x1000 - 64);
    assert_eq!(cqe.status(), Status::Success);
    assert_eq!(id2, id);
    // Unmapped data page: the request fails with DMA_FAULT, the queue goes on.
    a.c.dma_unmap(ARENA_IOVA + 5 * 4096, 4096);
    let (cqe, _) = a.identify(ARENA_IOVA + 5 * 4096);
    assert_eq!(cqe.status(), Status::DmaFault);
    let (cqe, _) = a.identify(DATA);
    assert_eq!(cqe.status(), Status::Success);

    // Device reset: registers back to reset values, the core restarted.
    c.call(DEVICE_RESET, &[], &[]).unwrap();
    assert_eq!(c.r32(regs::SCRATCH), 0);
    assert_eq!(c.r32(regs::CSTS) & regs::CSTS_RDY, 0);
    let mut a = Admin::enable(&mut c, &mem);
    let (cqe, _) = a.identify(DATA);
    assert_eq!(cqe.status(), Status::Success);

    // Disconnect: the server exits 0 and removes its socket.
    drop(c);
    let st = card.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit status {st}");
    assert!(!sock.exists(), "socket removed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vfio_user_sigterm_and_refusals() {
    let Some(fw) = firmware() else { return };
    let dir = tmpdir("term");
    let sock = dir.join("card.sock");
    let mut card = Card::start(&sock, &fw);
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(card.pid(), libc::SIGTERM) }, 0);
    let st = card.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit status {st}");
    assert!(!sock.exists(), "socket removed");

    // With a client connected, SIGTERM still ends it (this one on the wall clock).
    let mut card = Card::start_with(&sock, &fw, &["--clock", "wall"]);
    assert!(
        card.log.iter().any(|l| l.contains("clock: wall")),
        "{:?}",
        card.log
    );
    let mut c = Client::connect(&sock);
    assert_eq!(c.r32(regs::VS), 0x0001_0001, "protocol 1.1");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(card.pid(), libc::SIGTERM) }, 0);
    assert!(card.wait_exit(Duration::from_secs(10)).success());
    assert!(!sock.exists());

    // A path that is not a socket is never replaced.
    std::fs::write(&sock, b"not a socket").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_preba-card"))
        .arg("--socket")
        .arg(&sock)
        .arg("--firmware")
        .arg(&fw)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&sock).unwrap(), b"not a socket");
    // Bad arguments and a missing firmware fail clearly.
    let out = Command::new(env!("CARGO_BIN_EXE_preba-card"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_preba-card"))
        .args(["--socket"])
        .arg(dir.join("x.sock"))
        .args(["--clock", "sundial"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--clock: not a clock"));
    let out = Command::new(env!("CARGO_BIN_EXE_preba-card"))
        .args(["--socket"])
        .arg(dir.join("x.sock"))
        .args(["--firmware", "/nonexistent/preba-firmware"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("firmware"));
    let _ = std::fs::remove_dir_all(&dir);
}
