//! The one module with `unsafe` code: host memory the card reaches by DMA (a
//! memfd mapped shared, so a vfio-user server or the kernel's VFIO can map the
//! same pages), and eventfds for interrupts.
//!
//! Memory the card can write at any moment is never reached through a Rust
//! reference (that would be undefined behaviour: the compiler may assume it
//! does not change). Every access goes through a raw pointer with volatile
//! byte/word copies or an atomic load, bounds-checked against the mapping.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// A shared, memfd-backed mapping that the card reaches at `iova ..
/// iova + len`.
pub struct DmaMem {
    ptr: NonNull<u8>,
    len: usize,
    iova: u64,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory owned by this value until drop;
// all accesses are volatile or atomic through raw pointers, which is as sound
// from several threads as it is against the device writing concurrently.
unsafe impl Send for DmaMem {}
// SAFETY: as above: no method hands out references into the mapping.
unsafe impl Sync for DmaMem {}

impl DmaMem {
    /// Creates `len` bytes (rounded up to 4 KiB) of zeroed shared memory.
    pub fn new(len: usize, iova: u64) -> io::Result<DmaMem> {
        let len = len
            .checked_add(0xfff)
            .map(|l| l & !0xfff)
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if iova & 0xfff != 0 || iova.checked_add(len as u64).is_none() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it
        // returns a new descriptor or -1.
        let raw = unsafe {
            libc::memfd_create(
                c"preba-dma".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The card maps this file: sealed against resizing, it can never shrink under the
        // card's mapping (a vfio-user server refuses unsealed memory; docs/card-spec.md).
        // SAFETY: fcntl F_ADD_SEALS on our own memfd, integer arguments only.
        let sealed = unsafe {
            libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            )
        };
        if sealed != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh shared mapping of our memfd; the kernel picks the
        // address; the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(DmaMem { ptr, len, iova, fd })
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// IOVA of byte 0.
    pub fn iova(&self) -> u64 {
        self.iova
    }
    /// The memfd, for DMA_MAP (vfio-user) or a test double.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    /// The mapping's address, for a kernel DMA map (VFIO_IOMMU_MAP_DMA).
    /// Never turned into a reference.
    pub fn host_addr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Offset of `iova..iova+len` in the mapping, if it lies inside.
    pub fn offset_of(&self, iova: u64, len: u64) -> Option<usize> {
        let off = iova.checked_sub(self.iova)?;
        let end = off.checked_add(len)?;
        (end <= self.len as u64).then_some(off as usize)
    }

    fn check(&self, off: usize, len: usize) -> io::Result<()> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("DMA access {off:#x}+{len:#x} outside {:#x} bytes", self.len),
            )),
        }
    }

    /// Copies `src` into the mapping at `off` (volatile stores).
    pub fn write(&self, off: usize, src: &[u8]) -> io::Result<()> {
        self.check(off, src.len())?;
        // SAFETY: `off + src.len() <= self.len` (checked), so the base lies in
        // the mapping.
        let base = unsafe { self.ptr.as_ptr().add(off) };
        let mut i = 0;
        while i < src.len() && !(base as usize + i).is_multiple_of(8) {
            // SAFETY: in bounds (i < src.len()); a byte store needs no alignment.
            unsafe { base.add(i).write_volatile(src[i]) };
            i += 1;
        }
        while i + 8 <= src.len() {
            let w = u64::from_ne_bytes(src[i..i + 8].try_into().unwrap_or([0; 8]));
            // SAFETY: in bounds; `base + i` is 8-byte aligned by the loop above.
            unsafe { base.add(i).cast::<u64>().write_volatile(w) };
            i += 8;
        }
        while i < src.len() {
            // SAFETY: in bounds.
            unsafe { base.add(i).write_volatile(src[i]) };
            i += 1;
        }
        Ok(())
    }

    /// Copies `dst.len()` bytes out of the mapping at `off` (volatile loads).
    pub fn read(&self, off: usize, dst: &mut [u8]) -> io::Result<()> {
        self.check(off, dst.len())?;
        // SAFETY: in bounds (checked above).
        let base = unsafe { self.ptr.as_ptr().add(off) };
        let mut i = 0;
        while i < dst.len() && !(base as usize + i).is_multiple_of(8) {
            // SAFETY: in bounds.
            dst[i] = unsafe { base.add(i).read_volatile() };
            i += 1;
        }
        while i + 8 <= dst.len() {
            // SAFETY: in bounds and 8-byte aligned.
            let w = unsafe { base.add(i).cast::<u64>().read_volatile() };
            dst[i..i + 8].copy_from_slice(&w.to_ne_bytes());
            i += 8;
        }
        while i < dst.len() {
            // SAFETY: in bounds.
            dst[i] = unsafe { base.add(i).read_volatile() };
            i += 1;
        }
        Ok(())
    }

    /// Fills `off..off+len` with zeros.
    pub fn zero(&self, off: usize, len: usize) -> io::Result<()> {
        self.check(off, len)?;
        for i in 0..len {
            // SAFETY: in bounds (checked above).
            unsafe { self.ptr.as_ptr().add(off + i).write_volatile(0) };
        }
        Ok(())
    }

    /// Acquire load of a little-endian u16 at an even offset (a CQE's
    /// status-and-phase word): reads after it see what the card wrote before.
    pub fn load_u16_acquire(&self, off: usize) -> io::Result<u16> {
        self.check(off, 2)?;
        if !off.is_multiple_of(2) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: in bounds and 2-byte aligned (the mapping is page aligned);
        // the memory is only ever accessed atomically or volatilely, never
        // through references, so viewing it as an AtomicU16 is sound.
        let a = unsafe { AtomicU16::from_ptr(self.ptr.as_ptr().add(off).cast::<u16>()) };
        Ok(u16::from_le(a.load(Ordering::Acquire)))
    }

    /// Release store of a little-endian u16 (the card side of a phase bit, for
    /// test doubles).
    pub fn store_u16_release(&self, off: usize, v: u16) -> io::Result<()> {
        self.check(off, 2)?;
        if !off.is_multiple_of(2) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: as in `load_u16_acquire`.
        let a = unsafe { AtomicU16::from_ptr(self.ptr.as_ptr().add(off).cast::<u16>()) };
        a.store(v.to_le(), Ordering::Release);
        Ok(())
    }
}

impl Drop for DmaMem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no references into
        // it exist (none are ever handed out).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Maps the whole arena into a VFIO container's IOMMU at `mem.iova()`.
pub fn vfio_dma_map(container: &vfio_ioctls::VfioContainer, mem: &DmaMem) -> io::Result<()> {
    // SAFETY: the range is our own shared mapping, reached only through raw
    // pointers with volatile or atomic accesses (never references), which is
    // what `vfio_dma_map` requires until the range is unmapped from the
    // IOMMU or munmapped (DmaMem's drop, which ends the obligation).
    unsafe { container.vfio_dma_map(mem.iova(), mem.len(), mem.host_addr()) }
        .map_err(|e| io::Error::other(format!("VFIO_IOMMU_MAP_DMA: {e}")))
}

/// Waits up to `timeout` until `fd` is readable. Ok(true) when it is.
pub fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(r > 0)
}

/// An eventfd: the card (vfio-user server, kernel VFIO or a test double)
/// signals it for an interrupt; the driver waits on it.
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(EventFd { fd })
    }
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    /// Adds one to the counter (what the card does for an interrupt).
    pub fn signal(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        let n = unsafe { libc::write(self.raw(), (&raw const one).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    /// Waits up to `timeout` for a signal and clears the counter. Ok(true)
    /// when signalled.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        if !poll_readable(self.raw(), timeout)? {
            return Ok(false);
        }
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; non-blocking descriptor.
        unsafe { libc::read(self.raw(), (&raw mut v).cast(), 8) };
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_unaligned() {
        let m = DmaMem::new(10_000, 0x1000_0000).unwrap();
        assert_eq!(m.len(), 12_288);
        let src: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        m.write(3, &src).unwrap();
        let mut dst = vec![0u8; 1000];
        m.read(3, &mut dst).unwrap();
        assert_eq!(src, dst);
        assert!(m.write(12_000, &src).is_err());
        assert_eq!(m.offset_of(0x1000_0010, 16), Some(0x10));
        assert_eq!(m.offset_of(0x0fff_ffff, 1), None);
        m.store_u16_release(30, 0xbeef).unwrap();
        assert_eq!(m.load_u16_acquire(30).unwrap(), 0xbeef);
    }

    #[test]
    fn eventfd_signals() {
        let e = EventFd::new().unwrap();
        assert!(!e.wait(Duration::from_millis(1)).unwrap());
        e.signal().unwrap();
        assert!(e.wait(Duration::from_millis(100)).unwrap());
        assert!(!e.wait(Duration::from_millis(1)).unwrap());
    }
}
