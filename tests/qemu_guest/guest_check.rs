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

use preba_protocol::admin::{AdminOpcode, AdminSqe, IDENTIFY_SIZE, Identify};
use preba_protocol::io::{CQE_SIZE, Cqe, SQE_SIZE};
use preba_protocol::regs;

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
const ARENA_SIZE: usize = 1 << 20;
const ASQ_OFF: usize = 0;
const ACQ_OFF: usize = 0x1000;
const DATA_OFF: usize = 0x2000;
const ADMIN_ENTRIES: u16 = 16;
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
        // through raw-pointer volatile copies.
        for (i, b) in data.iter().enumerate() {
            unsafe { self.arena.add(off + i).write_volatile(*b) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    /// Copies out of the arena (the card writes it by DMA).
    fn get(&self, off: usize, out: &mut [u8]) {
        assert!(off + out.len() <= ARENA_SIZE);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: as in `put`.
            *b = unsafe { self.arena.add(off + i).read_volatile() };
        }
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

/// The admin queue as the checks drive it.
struct Admin {
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    cid: u16,
}

impl Admin {
    fn enable(v: &Vfio) -> Result<Admin, String> {
        v.put(ASQ_OFF, &[0; 0x2000]);
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
        Ok(Admin {
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            cid: 1,
        })
    }

    /// Submits `sqe` and waits (polling the phase bit, up to 20 s) for its completion.
    fn run(&mut self, v: &Vfio, mut sqe: AdminSqe) -> Result<Cqe, String> {
        sqe.cid = self.cid;
        self.cid = self.cid.wrapping_add(1);
        v.put(
            ASQ_OFF + SQE_SIZE * usize::from(self.sq_tail),
            &sqe.encode(),
        );
        self.sq_tail = (self.sq_tail + 1) % ADMIN_ENTRIES;
        v.w32(BAR0, regs::sq_doorbell(0), u32::from(self.sq_tail));
        let t = Instant::now();
        let off = ACQ_OFF + CQE_SIZE * usize::from(self.cq_head);
        let mut b = [0u8; CQE_SIZE];
        loop {
            v.get(off, &mut b);
            if Cqe::phase_of(&b) == self.phase {
                break;
            }
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "no completion for cid {} in 20 s (CSTS {:#x} QFAULT {:#x})",
                    sqe.cid,
                    v.r32(BAR0, regs::CSTS),
                    v.r32(BAR0, regs::QFAULT)
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let cqe = Cqe::parse(&b).map_err(|e| format!("bad CQE: {e:?}"))?;
        self.cq_head = (self.cq_head + 1) % ADMIN_ENTRIES;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        v.w32(BAR0, regs::cq_doorbell(0), u32::from(self.cq_head));
        if cqe.cid != sqe.cid {
            return Err(format!(
                "completion for cid {} (expected {})",
                cqe.cid, sqe.cid
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

fn checks(bdf: &str, rep: &mut Report) -> Result<(), String> {
    let v = Vfio::open(bdf)?;
    rep.check("vfio-open", Ok(format!("{bdf}")));
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
        if vs == 0x0001_0000 {
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
    v.set_irq(MSIX, Some(&ev))?;
    let mut a = Admin::enable(&v)?;
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

    // Hostile: a function reset with the queue live (the next command is mid-flight).
    let sqe = AdminSqe {
        opcode: AdminOpcode::Identify as u8,
        cid: 999,
        data_iova: ARENA_IOVA + DATA_OFF as u64,
        data_len: IDENTIFY_SIZE as u32,
        ..AdminSqe::default()
    };
    v.put(ASQ_OFF + SQE_SIZE * usize::from(a.sq_tail), &sqe.encode());
    v.w32(
        BAR0,
        regs::sq_doorbell(0),
        u32::from((a.sq_tail + 1) % ADMIN_ENTRIES),
    );
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
    let mut a = Admin::enable(&v)?;
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
    let mut rep = Report { pass: 0, fail: 0 };
    if let Err(e) = checks(&bdf, &mut rep) {
        rep.check("guest-driver", Err(e));
    }
    println!("PREBA-GUEST-CHECK pass={} fail={}", rep.pass, rep.fail);
    std::process::exit(if rep.fail == 0 { 0 } else { 1 });
}
