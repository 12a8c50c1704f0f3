//! `preba-guest-check BDF`: runs inside the QEMU guest (static musl binary in the initramfs) and
//! drives the card through the kernel's VFIO (type1 IOMMU behind QEMU's intel-iommu), printing
//! one `PREBA-CHECK <name> ok|fail [detail]` line per check for `cargo xtask qemu test`.
//!
//! It is a deliberately small driver, independent of `preba-host`: config space and BARs through
//! the device fd, a DMA arena mapped with `VFIO_IOMMU_MAP_DMA`, the admin queue (IDENTIFY) with
//! completions by MSI-X and by INTx (eventfds), a DMA fault, and a function reset mid-stream.
//! The checks of the card's data path through `preba preprocess --card vfio:BDF` run beside it
//! once the CLI has a kernel VFIO backend.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use preba_preprocess::image::card_preprocess_image;
use preba_protocol::admin::{AdminOpcode, AdminSqe, IDENTIFY_SIZE, Identify, encode_profile};
use preba_protocol::io::{CQE_SIZE, Cqe, IoOpcode, SQE_SIZE, SgEntry, Sqe};
use preba_protocol::profile::{Dtype, ImageProfile, Layout, Profile};
use preba_protocol::regs;
use preba_protocol::status::Status;

// VFIO ioctls: _IO(';', 100 + n).
const fn vio(n: u64) -> u64 {
    (b';' as u64) << 8 | (100 + n)
}
const VFIO_GET_API_VERSION: u64 = vio(0);
const VFIO_CHECK_EXTENSION: u64 = vio(1);
const VFIO_SET_IOMMU: u64 = vio(2);
const VFIO_GROUP_GET_STATUS: u64 = vio(3);
const VFIO_GROUP_SET_CONTAINER: u64 = vio(4);
const VFIO_GROUP_GET_DEVICE_FD: u64 = vio(6);
const VFIO_DEVICE_GET_REGION_INFO: u64 = vio(8);
const VFIO_DEVICE_GET_IRQ_INFO: u64 = vio(9);
const VFIO_DEVICE_SET_IRQS: u64 = vio(10);
const VFIO_DEVICE_RESET: u64 = vio(11);
const VFIO_IOMMU_MAP_DMA: u64 = vio(13);
const VFIO_TYPE1V2_IOMMU: u64 = 3;
const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;

const BAR0: u32 = 0;
const BAR2: u32 = 2;
const CONFIG: u32 = 7;
const INTX: u32 = 0;
const MSIX: u32 = 2;
const IRQ_SET_DATA_NONE: u32 = 1;
const IRQ_SET_DATA_EVENTFD: u32 = 4;
const IRQ_SET_ACTION_UNMASK: u32 = 16;
const IRQ_SET_ACTION_TRIGGER: u32 = 32;

/// The DMA arena: IOVA and size. Everything the card may touch lies in it.
const ARENA_IOVA: u64 = 0x1000_0000;
const ARENA_SIZE: usize = 8 << 20;
const ASQ_OFF: usize = 0;
const ACQ_OFF: usize = 0x1000;
const DATA_OFF: usize = 0x2000;
const IOSQ_OFF: usize = 0x4000;
const IOCQ_OFF: usize = 0x5000;
const INPUT_OFF: usize = 0x10_0000;
const OUTPUT_OFF: usize = 0x20_0000;
const OUTPUT_SLOT: usize = 1 << 20;
const ADMIN_ENTRIES: u16 = 16;
const IO_ENTRIES: u16 = 16;
/// An IOVA nothing is mapped at.
const UNMAPPED_IOVA: u64 = 0x7000_0000;

#[repr(C)]
#[derive(Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RegionInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}

#[repr(C)]
#[derive(Default)]
struct IrqInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    count: u32,
}

#[repr(C)]
struct IrqSet1 {
    argsz: u32,
    flags: u32,
    index: u32,
    start: u32,
    count: u32,
    fd: i32,
}

#[repr(C)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// An ioctl whose argument is a pointer to `T`.
fn ioctl_ptr<T>(fd: RawFd, req: u64, arg: &mut T) -> Result<i32, String> {
    // SAFETY: `arg` is a live, properly laid out (repr(C)) argument of the ioctl `req`; the
    // kernel reads and writes at most `argsz` bytes of it, which we set to its size.
    let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if r < 0 {
        Err(format!("ioctl {req:#x}: {}", errno()))
    } else {
        Ok(r)
    }
}

/// An ioctl with an integer argument.
fn ioctl_val(fd: RawFd, req: u64, arg: u64) -> Result<i32, String> {
    // SAFETY: the ioctl takes an integer argument, not a pointer.
    let r = unsafe { libc::ioctl(fd, req as _, arg as libc::c_ulong) };
    if r < 0 {
        Err(format!("ioctl {req:#x}: {}", errno()))
    } else {
        Ok(r)
    }
}

struct Vfio {
    _container: File,
    _group: File,
    dev: File,
    regions: [RegionInfo; 8],
    arena: *mut u8,
}

impl Vfio {
    fn open(bdf: &str) -> Result<Vfio, String> {
        let link = std::fs::read_link(format!("/sys/bus/pci/devices/{bdf}/iommu_group"))
            .map_err(|e| format!("iommu_group of {bdf}: {e}"))?;
        let group_id = link
            .file_name()
            .ok_or("iommu_group link")?
            .to_string_lossy()
            .into_owned();
        let rw = |p: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map_err(|e| format!("{p}: {e}"))
        };
        let container = rw("/dev/vfio/vfio")?;
        let c = container.as_raw_fd();
        if ioctl_val(c, VFIO_GET_API_VERSION, 0)? != 0 {
            return Err("unexpected VFIO API version".into());
        }
        if ioctl_val(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1V2_IOMMU)? != 1 {
            return Err("no TYPE1v2 IOMMU".into());
        }
        let group = rw(&format!("/dev/vfio/{group_id}"))?;
        let g = group.as_raw_fd();
        let mut st = GroupStatus { argsz: 8, flags: 0 };
        ioctl_ptr(g, VFIO_GROUP_GET_STATUS, &mut st)?;
        if st.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(format!("group {group_id} is not viable"));
        }
        let mut cfd = c;
        ioctl_ptr(g, VFIO_GROUP_SET_CONTAINER, &mut cfd)?;
        ioctl_val(c, VFIO_SET_IOMMU, VFIO_TYPE1V2_IOMMU)?;
        let name = std::ffi::CString::new(bdf).map_err(|e| e.to_string())?;
        // SAFETY: the ioctl takes a NUL-terminated device name.
        let dfd = unsafe { libc::ioctl(g, VFIO_GROUP_GET_DEVICE_FD as _, name.as_ptr()) };
        if dfd < 0 {
            return Err(format!("GET_DEVICE_FD {bdf}: {}", errno()));
        }
        // SAFETY: a fresh fd the kernel gave us.
        let dev = unsafe { File::from_raw_fd(dfd) };
        let mut regions = [RegionInfo::default(); 8];
        for (i, r) in regions.iter_mut().enumerate() {
            r.argsz = std::mem::size_of::<RegionInfo>() as u32;
            r.index = i as u32;
            ioctl_ptr(dfd, VFIO_DEVICE_GET_REGION_INFO, r)?;
        }
        // SAFETY: an anonymous private mapping; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ARENA_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap arena: {}", errno()));
        }
        let mut map = DmaMap {
            argsz: std::mem::size_of::<DmaMap>() as u32,
            flags: 3,
            vaddr: p as u64,
            iova: ARENA_IOVA,
            size: ARENA_SIZE as u64,
        };
        ioctl_ptr(c, VFIO_IOMMU_MAP_DMA, &mut map)?;
        Ok(Vfio {
            _container: container,
            _group: group,
            dev,
            regions,
            arena: p.cast(),
        })
    }

    fn read(&self, region: u32, off: u64, buf: &mut [u8]) -> Result<(), String> {
        let r = &self.regions[region as usize];
        self.dev
            .read_exact_at(buf, r.offset + off)
            .map_err(|e| format!("read region {region} {off:#x}: {e}"))
    }

    fn write(&self, region: u32, off: u64, buf: &[u8]) -> Result<(), String> {
        let r = &self.regions[region as usize];
        self.dev
            .write_all_at(buf, r.offset + off)
            .map_err(|e| format!("write region {region} {off:#x}: {e}"))
    }

    fn r32(&self, region: u32, off: u64) -> u32 {
        let mut b = [0xff; 4];
        let _ = self.read(region, off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w32(&self, region: u32, off: u64, v: u32) {
        let _ = self.write(region, off, &v.to_le_bytes());
    }

    fn irq_count(&self, index: u32) -> Result<u32, String> {
        let mut i = IrqInfo {
            argsz: 16,
            index,
            ..IrqInfo::default()
        };
        ioctl_ptr(self.dev.as_raw_fd(), VFIO_DEVICE_GET_IRQ_INFO, &mut i)?;
        Ok(i.count)
    }

    /// Points vectors 0.. of `index` at `fds`.
    fn set_irqs(&self, index: u32, fds: &[&File]) -> Result<(), String> {
        #[repr(C)]
        struct IrqSetN {
            argsz: u32,
            flags: u32,
            index: u32,
            start: u32,
            count: u32,
            fds: [i32; 4],
        }
        let mut s = IrqSetN {
            argsz: 20 + 4 * fds.len() as u32,
            flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            index,
            start: 0,
            count: fds.len() as u32,
            fds: [-1; 4],
        };
        for (i, f) in fds.iter().enumerate().take(4) {
            s.fds[i] = f.as_raw_fd();
        }
        ioctl_ptr(self.dev.as_raw_fd(), VFIO_DEVICE_SET_IRQS, &mut s).map(|_| ())
    }

    /// Points vector 0 of `index` at `fd` (or disables the index with `None`).
    fn set_irq(&self, index: u32, fd: Option<&File>) -> Result<(), String> {
        let mut s = IrqSet1 {
            argsz: std::mem::size_of::<IrqSet1>() as u32,
            flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            index,
            start: 0,
            count: 1,
            fd: fd.map_or(-1, |f| f.as_raw_fd()),
        };
        if fd.is_none() {
            s.flags = IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER;
            s.count = 0;
            s.argsz = 20;
        }
        ioctl_ptr(self.dev.as_raw_fd(), VFIO_DEVICE_SET_IRQS, &mut s).map(|_| ())
    }

    fn unmask_intx(&self) -> Result<(), String> {
        let mut s = IrqSet1 {
            argsz: 20,
            flags: IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK,
            index: INTX,
            start: 0,
            count: 1,
            fd: -1,
        };
        ioctl_ptr(self.dev.as_raw_fd(), VFIO_DEVICE_SET_IRQS, &mut s).map(|_| ())
    }

    fn reset(&self) -> Result<(), String> {
        ioctl_val(self.dev.as_raw_fd(), VFIO_DEVICE_RESET, 0).map(|_| ())
    }

    /// Copies into the arena (the card reads it by DMA).
    fn put(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= ARENA_SIZE);
        // SAFETY: in bounds of the live arena mapping; DMA-visible memory is only touched
        // through raw-pointer copies, never references. The card does not touch these bytes
        // until the doorbell that follows the fence.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.arena.add(off), data.len()) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Copies out of the arena (the card writes it by DMA).
    fn get(&self, off: usize, out: &mut [u8]) {
        assert!(off + out.len() <= ARENA_SIZE);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: as in `put`; read after the completion says the card is done with them.
        unsafe { std::ptr::copy_nonoverlapping(self.arena.add(off), out.as_mut_ptr(), out.len()) };
    }
}

fn eventfd() -> Result<File, String> {
    // SAFETY: plain eventfd creation.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(format!("eventfd: {}", errno()));
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Waits up to `t` for `fd` to be signalled; returns the count read.
fn wait_event(fd: &File, t: Duration) -> u64 {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, t.as_millis() as i32) };
    if r <= 0 {
        return 0;
    }
    let mut b = [0u8; 8];
    match std::io::Read::read(&mut &*fd, &mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}

/// A queue pair as the checks drive it (qid 0: the admin queue).
struct Queue {
    qid: u16,
    sq_off: usize,
    cq_off: usize,
    entries: u16,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    cid: u16,
}

impl Queue {
    fn new(qid: u16, sq_off: usize, cq_off: usize, entries: u16, v: &Vfio) -> Queue {
        v.put(sq_off, &vec![0; SQE_SIZE * usize::from(entries)]);
        v.put(cq_off, &vec![0; CQE_SIZE * usize::from(entries)]);
        Queue {
            qid,
            sq_off,
            cq_off,
            entries,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            cid: 1,
        }
    }

    /// Sets up the admin queue and enables the controller (waits for CSTS.RDY).
    fn enable(v: &Vfio) -> Result<Queue, String> {
        let q = Queue::new(0, ASQ_OFF, ACQ_OFF, ADMIN_ENTRIES, v);
        let n = u32::from(ADMIN_ENTRIES - 1);
        v.w32(BAR0, regs::AQA, n | n << 16);
        let asq = ARENA_IOVA + ASQ_OFF as u64;
        let acq = ARENA_IOVA + ACQ_OFF as u64;
        v.w32(BAR0, regs::ASQ, asq as u32);
        v.w32(BAR0, regs::ASQ + 4, (asq >> 32) as u32);
        v.w32(BAR0, regs::ACQ, acq as u32);
        v.w32(BAR0, regs::ACQ + 4, (acq >> 32) as u32);
        v.w32(BAR0, regs::CC, regs::CC_EN);
        let t = Instant::now();
        loop {
            let csts = v.r32(BAR0, regs::CSTS);
            if csts & regs::CSTS_RDY != 0 {
                break;
            }
            if csts & regs::CSTS_CFS != 0 {
                return Err(format!("CSTS.CFS, QFAULT {:#x}", v.r32(BAR0, regs::QFAULT)));
            }
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!("CSTS.RDY not set after 20 s (CSTS {csts:#x})"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(q)
    }

    fn next_cid(&mut self) -> u16 {
        let c = self.cid;
        self.cid = self.cid.wrapping_add(1).max(1);
        c
    }

    /// Writes `entry` into the SQ and rings the doorbell.
    fn submit(&mut self, v: &Vfio, entry: &[u8; SQE_SIZE]) {
        v.put(self.sq_off + SQE_SIZE * usize::from(self.sq_tail), entry);
        self.sq_tail = (self.sq_tail + 1) % self.entries;
        v.w32(BAR0, regs::sq_doorbell(self.qid), u32::from(self.sq_tail));
    }

    /// Waits (polling the phase bit) for the next completion.
    fn reap(&mut self, v: &Vfio, t: Duration) -> Result<Cqe, String> {
        let start = Instant::now();
        let off = self.cq_off + CQE_SIZE * usize::from(self.cq_head);
        let mut b = [0u8; CQE_SIZE];
        loop {
            v.get(off, &mut b);
            if Cqe::phase_of(&b) == self.phase {
                break;
            }
            if start.elapsed() > t {
                return Err(format!(
                    "no completion on queue {} in {t:?} (CSTS {:#x} QFAULT {:#x})",
                    self.qid,
                    v.r32(BAR0, regs::CSTS),
                    v.r32(BAR0, regs::QFAULT)
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let cqe = Cqe::parse(&b).map_err(|e| format!("bad CQE: {e:?}"))?;
        self.cq_head = (self.cq_head + 1) % self.entries;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        v.w32(BAR0, regs::cq_doorbell(self.qid), u32::from(self.cq_head));
        Ok(cqe)
    }

    /// Submits `sqe` and waits for its completion.
    fn run(&mut self, v: &Vfio, mut sqe: AdminSqe) -> Result<Cqe, String> {
        sqe.cid = self.next_cid();
        self.submit(v, &sqe.encode());
        let cqe = self.reap(v, Duration::from_secs(20))?;
        if cqe.cid != sqe.cid {
            return Err(format!(
                "completion for cid {} (expected {})",
                cqe.cid, sqe.cid
            ));
        }
        if cqe.status != 0 && sqe.opcode != AdminOpcode::Identify as u8 {
            return Err(format!(
                "admin {:#x}: status {:?}",
                sqe.opcode,
                cqe.status()
            ));
        }
        Ok(cqe)
    }

    fn identify(&mut self, v: &Vfio, iova: u64) -> Result<(Cqe, Identify), String> {
        v.put(DATA_OFF, &[0; IDENTIFY_SIZE]);
        let cqe = self.run(
            v,
            AdminSqe {
                opcode: AdminOpcode::Identify as u8,
                data_iova: iova,
                data_len: IDENTIFY_SIZE as u32,
                ..AdminSqe::default()
            },
        )?;
        let mut b = [0u8; IDENTIFY_SIZE];
        v.get(DATA_OFF, &mut b);
        Ok((cqe, Identify::parse(&b)))
    }
}

struct Report {
    pass: u32,
    fail: u32,
}

impl Report {
    fn check(&mut self, name: &str, r: Result<String, String>) -> bool {
        match r {
            Ok(d) => {
                self.pass += 1;
                println!("PREBA-CHECK {name} ok {d}");
                true
            }
            Err(d) => {
                self.fail += 1;
                println!("PREBA-CHECK {name} fail {d}");
                false
            }
        }
    }
}

fn identify_ok(cqe: &Cqe, id: &Identify) -> Result<String, String> {
    if cqe.status != 0 {
        return Err(format!("status {:?}", cqe.status()));
    }
    if (id.version_major, id.version_minor) != (regs::VERSION_MAJOR, regs::VERSION_MINOR) {
        return Err(format!("version {}.{}", id.version_major, id.version_minor));
    }
    Ok(format!(
        "v{}.{} fw {:#x} '{}' cus {}+{}+{}",
        id.version_major,
        id.version_minor,
        id.fw_build_id,
        id.fw_version_str(),
        id.image_cus,
        id.audio_cus,
        id.norm_cus
    ))
}

fn image_sqe(cid: u16, slot: u8, in_len: u32, out_len: u32, out_slot: usize) -> Sqe {
    Sqe {
        opcode: IoOpcode::PreprocessImage as u8,
        flags: 0,
        cid,
        profile: slot,
        sg_count: 1,
        out_iova: ARENA_IOVA + (OUTPUT_OFF + out_slot * OUTPUT_SLOT) as u64,
        out_len,
        in_len,
        sg: [
            SgEntry {
                iova: ARENA_IOVA + INPUT_OFF as u64,
                len: in_len,
            },
            SgEntry::default(),
        ],
    }
}

/// SET_PROFILE (u8 NCHW in slot 0, f32 NHWC normalized in slot 1), an I/O queue on MSI-X
/// vector 1, then every fixture image through the card, compared with the CPU path.
fn image_checks(
    v: &Vfio,
    a: &mut Queue,
    ev_io: &File,
    files: &[PathBuf],
    rep: &mut Report,
) -> Result<Queue, String> {
    let profiles = [
        ImageProfile::default(),
        ImageProfile {
            normalize: true,
            dtype: Dtype::F32,
            layout: Layout::Nhwc,
            ..ImageProfile::default()
        },
    ];
    for (slot, p) in profiles.iter().enumerate() {
        v.put(DATA_OFF, &encode_profile(&Profile::Image(*p)));
        a.run(
            v,
            AdminSqe {
                opcode: AdminOpcode::SetProfile as u8,
                data_iova: ARENA_IOVA + DATA_OFF as u64,
                data_len: 64,
                cdw: [slot as u32, 0, 0, 0, 0, 0],
                ..AdminSqe::default()
            },
        )?;
    }
    let mut q = Queue::new(1, IOSQ_OFF, IOCQ_OFF, IO_ENTRIES, v);
    let cq = ARENA_IOVA + IOCQ_OFF as u64;
    a.run(
        v,
        AdminSqe {
            opcode: AdminOpcode::CreateIoQueuePair as u8,
            data_iova: ARENA_IOVA + IOSQ_OFF as u64,
            data_len: (SQE_SIZE * usize::from(IO_ENTRIES)) as u32,
            cdw: [
                1 | u32::from(IO_ENTRIES - 1) << 16,
                cq as u32,
                (cq >> 32) as u32,
                1 | 1 << 16,
                0,
                0,
            ],
            ..AdminSqe::default()
        },
    )?;
    let (mut same, mut card_ms, mut cpu_ms) = (0, 0.0, 0.0);
    let mut good: Option<Vec<u8>> = None;
    for (i, f) in files.iter().enumerate() {
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let input = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        if input.len() > OUTPUT_OFF - INPUT_OFF {
            continue;
        }
        let slot = if i % 4 == 0 { 1 } else { 0 };
        let p = &profiles[slot];
        let t = Instant::now();
        let want = card_preprocess_image(&input, p)
            .map(|o| o.data)
            .map_err(|e| e.status());
        cpu_ms += t.elapsed().as_secs_f64() * 1e3;
        let out_len = p.output_len() as u32;
        v.put(INPUT_OFF, &input);
        let cid = q.next_cid();
        let t = Instant::now();
        q.submit(
            v,
            &image_sqe(cid, slot as u8, input.len() as u32, out_len, 0).encode(),
        );
        let c = q.reap(v, Duration::from_secs(60))?;
        card_ms += t.elapsed().as_secs_f64() * 1e3;
        let r = if c.cid != cid {
            Err(format!("completion for cid {} (expected {cid})", c.cid))
        } else {
            match want {
                Ok(bytes) => {
                    let mut got = vec![0u8; (c.written as usize).min(out_len as usize)];
                    v.get(OUTPUT_OFF, &mut got);
                    if c.status != 0 {
                        Err(format!("card status {:?}, CPU path succeeded", c.status()))
                    } else if got != bytes {
                        Err(format!(
                            "{} bytes differ from the CPU path ({} bytes)",
                            got.len(),
                            bytes.len()
                        ))
                    } else {
                        same += 1;
                        if good.is_none() && slot == 0 {
                            good = Some(input.clone());
                        }
                        Ok(format!(
                            "slot {slot}: {} bytes identical to the CPU path",
                            bytes.len()
                        ))
                    }
                }
                // The card refuses more than the CPU path (UNSUPPORTED_FORMAT: the host falls back).
                Err(st) if c.status == st as u16 => Ok(format!("slot {slot}: {st:?} on both")),
                Err(_) if input.is_empty() && c.status != 0 => {
                    Ok(format!("empty: {:?}", c.status()))
                }
                Err(st) => Err(format!("card {:?}, CPU path {st:?}", c.status())),
            }
        };
        let r = match r {
            Err(e) if c.status == Status::UnsupportedFormat as u16 => Ok(format!(
                "UNSUPPORTED_FORMAT on the card (CPU fallback): {e}"
            )),
            r => r,
        };
        rep.check(&format!("image-{name}"), r);
    }
    println!(
        "PREBA-GUEST: {same} images bit-identical; card {card_ms:.0} ms, guest CPU path {cpu_ms:.0} ms"
    );
    let n = wait_event(ev_io, Duration::from_millis(100));
    rep.check(
        "msix-io-irq",
        if n > 0 {
            Ok(format!("{n} event(s) on vector 1"))
        } else {
            Err("no MSI-X on vector 1".into())
        },
    );
    // Hostile: an output buffer outside the DMA windows.
    let input = good.ok_or("no image went through the card")?;
    v.put(INPUT_OFF, &input);
    let cid = q.next_cid();
    let mut sqe = image_sqe(cid, 0, input.len() as u32, 150528, 0);
    sqe.out_iova = UNMAPPED_IOVA;
    q.submit(v, &sqe.encode());
    let c = q.reap(v, Duration::from_secs(60))?;
    rep.check(
        "io-dma-fault",
        if c.status == Status::DmaFault as u16 {
            Ok("DMA_FAULT".into())
        } else {
            Err(format!("status {:?}", c.status()))
        },
    );
    let cid = q.next_cid();
    q.submit(
        v,
        &image_sqe(cid, 0, input.len() as u32, 150528, 0).encode(),
    );
    let c = q.reap(v, Duration::from_secs(60))?;
    rep.check(
        "io-queue-survives-fault",
        if c.status == 0 {
            Ok(format!("{:?}", c.status()))
        } else {
            Err(format!("{:?}", c.status()))
        },
    );
    Ok(q)
}

fn checks(bdf: &str, files: &[PathBuf], rep: &mut Report) -> Result<(), String> {
    let v = Vfio::open(bdf)?;
    rep.check("vfio-open", Ok(bdf.to_string()));
    let id = v.r32(CONFIG, 0);
    let class = v.r32(CONFIG, 8) >> 8;
    rep.check(
        "config-ids",
        if id == u32::from(regs::PCI_DEVICE_ID) << 16 | u32::from(regs::PCI_VENDOR_ID)
            && class == regs::PCI_CLASS_CODE
        {
            Ok(format!("{id:#010x} class {class:#08x}"))
        } else {
            Err(format!("{id:#010x} class {class:#08x}"))
        },
    );
    let msix = v.irq_count(MSIX).unwrap_or(0);
    rep.check(
        "msix-vectors",
        if msix == u32::from(regs::MSIX_VECTORS) {
            Ok(format!("{msix}"))
        } else {
            Err(format!("{msix}"))
        },
    );
    // Memory space and bus mastering on.
    let cmd = v.r32(CONFIG, 4) & 0xffff;
    v.write(CONFIG, 4, &((cmd | 0x6) as u16).to_le_bytes())?;
    let vs = v.r32(BAR0, regs::VS);
    rep.check(
        "bar0-vs",
        if vs == u32::from(regs::VERSION_MAJOR) << 16 | u32::from(regs::VERSION_MINOR) {
            Ok(format!("{vs:#x}"))
        } else {
            Err(format!("{vs:#x}"))
        },
    );
    v.w32(BAR0, regs::SCRATCH, 0x5a5a_1234);
    let s = v.r32(BAR0, regs::SCRATCH);
    rep.check(
        "bar0-scratch",
        if s == 0x5a5a_1234 {
            Ok(String::new())
        } else {
            Err(format!("{s:#x}"))
        },
    );
    let ring = v.r32(BAR2, 4);
    rep.check(
        "bar2-log",
        if ring == 0x8000 {
            Ok(format!("ring {ring:#x}"))
        } else {
            Err(format!("{ring:#x}"))
        },
    );

    // MSI-X vector 0 serves the admin queue.
    let ev = eventfd()?;
    let ev_io = eventfd()?;
    v.set_irqs(MSIX, &[&ev, &ev_io])?;
    let mut a = Queue::enable(&v)?;
    rep.check("admin-enable", Ok(String::new()));
    let t = Instant::now();
    let (cqe, id) = a.identify(&v, ARENA_IOVA + DATA_OFF as u64)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    rep.check(
        "identify-dma",
        identify_ok(&cqe, &id).map(|d| format!("{d} in {ms:.1} ms")),
    );
    let n = wait_event(&ev, Duration::from_secs(5));
    rep.check(
        "msix-irq",
        if n > 0 {
            Ok(format!("{n} event(s)"))
        } else {
            Err("no MSI-X event in 5 s".into())
        },
    );

    // Hostile: a command whose data buffer is not mapped: the request fails, the queue lives.
    let (cqe, _) = a.identify(&v, UNMAPPED_IOVA)?;
    rep.check(
        "dma-fault",
        if cqe.status == preba_protocol::status::Status::DmaFault as u16 {
            Ok("DMA_FAULT".into())
        } else {
            Err(format!("status {:?}", cqe.status()))
        },
    );
    let (cqe, id) = a.identify(&v, ARENA_IOVA + DATA_OFF as u64)?;
    rep.check("queue-survives-fault", identify_ok(&cqe, &id));

    // The data path: images through an I/O queue, compared bit for bit with the CPU path.
    let mut q = image_checks(&v, &mut a, &ev_io, files, rep)?;

    // Hostile: a function reset with requests in flight on the I/O queue.
    let big: Vec<&PathBuf> = files.iter().rev().take(4).collect();
    for (k, f) in big.iter().enumerate() {
        let input = std::fs::read(f).map_err(|e| e.to_string())?;
        if input.len() > OUTPUT_OFF - INPUT_OFF {
            continue;
        }
        v.put(INPUT_OFF, &input);
        let cid = q.next_cid();
        q.submit(
            &v,
            &image_sqe(
                cid,
                0,
                input.len() as u32,
                ImageProfile::default().output_len() as u32,
                k,
            )
            .encode(),
        );
    }
    v.reset()?;
    let csts = v.r32(BAR0, regs::CSTS);
    let scratch = v.r32(BAR0, regs::SCRATCH);
    rep.check(
        "reset-clears",
        if csts & regs::CSTS_RDY == 0 && scratch == 0 {
            Ok(String::new())
        } else {
            Err(format!("CSTS {csts:#x} SCRATCH {scratch:#x}"))
        },
    );
    // The reset also cleared PCI_COMMAND (function reset): turn memory and mastering back on.
    let cmd = v.r32(CONFIG, 4) & 0xffff;
    v.write(CONFIG, 4, &((cmd | 0x6) as u16).to_le_bytes())?;

    // After the reset, INTx instead of MSI-X.
    v.set_irq(MSIX, None)?;
    let ev_intx = eventfd()?;
    v.set_irq(INTX, Some(&ev_intx))?;
    v.w32(BAR0, regs::INTX, 1);
    let mut a = Queue::enable(&v)?;
    let (cqe, id) = a.identify(&v, ARENA_IOVA + DATA_OFF as u64)?;
    rep.check("reset-recovers", identify_ok(&cqe, &id));
    let n = wait_event(&ev_intx, Duration::from_secs(5));
    let status = v.r32(CONFIG, 4) >> 16;
    rep.check(
        "intx-irq",
        if n > 0 {
            Ok(format!("{n} event(s), PCI_STATUS {status:#x}"))
        } else {
            Err(format!("no INTx event in 5 s (PCI_STATUS {status:#x})"))
        },
    );
    // De-assert (INTX bit 1), unmask, and take a second one.
    v.w32(BAR0, regs::INTX, 3);
    v.unmask_intx()?;
    let (cqe, id) = a.identify(&v, ARENA_IOVA + DATA_OFF as u64)?;
    let n2 = wait_event(&ev_intx, Duration::from_secs(5));
    rep.check(
        "intx-again",
        identify_ok(&cqe, &id).and_then(|_| {
            if n2 > 0 {
                Ok(String::new())
            } else {
                Err("no second INTx event".into())
            }
        }),
    );
    v.w32(BAR0, regs::INTX, 3);
    Ok(())
}

fn main() {
    let bdf = std::env::args().nth(1).unwrap_or_default();
    let mut files: Vec<PathBuf> = std::env::args().skip(2).map(PathBuf::from).collect();
    files.sort();
    let mut rep = Report { pass: 0, fail: 0 };
    if files.is_empty() {
        rep.check("fixtures", Err("no image files given".into()));
    }
    if let Err(e) = checks(&bdf, &files, &mut rep) {
        rep.check("guest-driver", Err(e));
    }
    println!("PREBA-GUEST-CHECK pass={} fail={}", rep.pass, rep.fail);
    std::process::exit(if rep.fail == 0 { 0 } else { 1 });
}
