//! The client's DMA map table: the card's IOMMU.
//!
//! A vfio-user client maps guest (or host) memory with `DMA_MAP` messages that carry an fd, an
//! offset into it and an IOVA range. QEMU under a vIOMMU sends one message per 4 KiB page, each
//! with a fresh duplicate of the guest-RAM memfd: the table therefore maps each distinct file
//! (same device and inode) once, whole, and keeps per-range entries that point into it. A range
//! mapped without an fd cannot be reached (vfio_user 0.1.7 has no `DMA_READ`/`DMA_WRITE`
//! messages), so accesses there fault, like accesses outside every window.
//!
//! [`DmaTable`] implements the card model's [`HostMemory`]: every access is translated entry by
//! entry (so page by page under a vIOMMU), the whole range is checked before the first byte is
//! copied, and an unmap waits for accesses in flight (the table lock) before the pages go away.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, RwLock, Weak};

use preba_card::{DmaFault, HostMemory};

/// One file mapped whole into this process.
struct FileMap {
    ptr: *mut u8,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain shared memory owned by this struct; it is only reached through
// raw-pointer copies made under the table lock, and unmapped once in Drop.
unsafe impl Send for FileMap {}
// SAFETY: as above: no references into the mapping are ever handed out.
unsafe impl Sync for FileMap {}

impl FileMap {
    fn new(file: &File, len: usize) -> io::Result<FileMap> {
        let map = |prot| {
            // SAFETY: a fresh shared mapping of `len` bytes of a file we hold open; the kernel
            // picks the address, so no existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(p.cast::<u8>())
            }
        };
        match map(libc::PROT_READ | libc::PROT_WRITE) {
            Ok(ptr) => Ok(FileMap {
                ptr,
                len,
                writable: true,
            }),
            // A read-only fd: the client maps device-readable memory only.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(FileMap {
                ptr: map(libc::PROT_READ)?,
                len,
                writable: false,
            }),
            Err(e) => Err(e),
        }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`; every entry that pointed
        // into it is gone (this runs when the last Arc drops, with no copy in flight).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// One mapped IOVA range.
#[derive(Clone)]
struct Entry {
    len: u64,
    /// The file and the offset of the range's first byte in it; `None` when mapped without an
    /// fd (unreachable).
    file: Option<(Arc<FileMap>, u64)>,
    read: bool,
    write: bool,
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<u64, Entry>,
    files: HashMap<(u64, u64), Weak<FileMap>>,
}

/// Counters for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaStats {
    pub maps: u64,
    pub unmaps: u64,
    pub entries: usize,
    pub files: usize,
}

/// The IOVA -> host-memory table.
#[derive(Default)]
pub struct DmaTable {
    inner: RwLock<Inner>,
    stats: std::sync::Mutex<(u64, u64)>,
}

/// DMA_MAP flags (vfio-user): the device may read / write the range.
pub const MAP_READ: u32 = 1;
pub const MAP_WRITE: u32 = 2;

fn einval(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

impl DmaTable {
    pub fn new() -> DmaTable {
        DmaTable::default()
    }

    /// Maps `[iova, iova + size)` to `fd` at `offset` (or to nothing when `fd` is `None`).
    /// A range that overlaps existing entries replaces them there.
    pub fn map(
        &self,
        flags: u32,
        offset: u64,
        iova: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        if size == 0 {
            return Err(einval("DMA map of zero bytes"));
        }
        iova.checked_add(size)
            .ok_or_else(|| einval("DMA map range overflows"))?;
        let end_in_file = offset
            .checked_add(size)
            .ok_or_else(|| einval("DMA map file range overflows"))?;
        let mut inner = self.inner.write().expect("dma lock");
        let file = match fd {
            None => None,
            Some(f) => {
                // A file that can shrink after we map it would turn the card's next access
                // into SIGBUS: only memory sealed against shrinking is mapped (QEMU's
                // memory-backend-memfd seals by default; preba's host driver seals its arena).
                // SAFETY: fcntl F_GET_SEALS on a descriptor we own; no memory is involved.
                let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
                if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
                    return Err(einval(
                        "DMA map refused: the fd is not sealed against shrinking (F_SEAL_SHRINK); \
                         map a sealed memfd",
                    ));
                }
                let md = f.metadata()?;
                if md.len() < end_in_file {
                    return Err(einval("DMA map past the end of its file"));
                }
                let key = (md.dev(), md.ino());
                let existing = inner
                    .files
                    .get(&key)
                    .and_then(Weak::upgrade)
                    .filter(|m| m.len as u64 >= end_in_file);
                let fm = match existing {
                    Some(m) => m,
                    None => {
                        let len = usize::try_from(md.len())
                            .map_err(|_| einval("DMA map file too large"))?;
                        let m = Arc::new(FileMap::new(&f, len)?);
                        inner.files.insert(key, Arc::downgrade(&m));
                        m
                    }
                };
                Some((fm, offset))
                // `f` (our duplicate of the client's fd) closes here; the mapping stays.
            }
        };
        let write = flags & MAP_WRITE != 0 && file.as_ref().is_some_and(|(m, _)| m.writable);
        let entry = Entry {
            len: size,
            file,
            read: flags & MAP_READ != 0,
            write,
        };
        if remove_range(&mut inner.entries, iova, size) {
            log::warn!("DMA map {iova:#x}+{size:#x} replaces an earlier mapping");
        }
        inner.entries.insert(iova, entry);
        inner.files.retain(|_, w| w.strong_count() > 0);
        drop(inner);
        self.stats.lock().expect("stats lock").0 += 1;
        Ok(())
    }

    /// Unmaps `[iova, iova + size)` (parts of entries are split off), or everything with `all`.
    /// Returns whether anything was mapped there.
    pub fn unmap(&self, iova: u64, size: u64, all: bool) -> io::Result<bool> {
        let mut inner = self.inner.write().expect("dma lock");
        let found = if all {
            let had = !inner.entries.is_empty();
            inner.entries.clear();
            had
        } else {
            // A range past the end of the IOVA space (QEMU unmaps "everything above" so) is
            // clipped to it.
            remove_range(&mut inner.entries, iova, size)
        };
        inner.files.retain(|_, w| w.strong_count() > 0);
        drop(inner);
        self.stats.lock().expect("stats lock").1 += 1;
        Ok(found)
    }

    pub fn stats(&self) -> DmaStats {
        let inner = self.inner.read().expect("dma lock");
        let (maps, unmaps) = *self.stats.lock().expect("stats lock");
        DmaStats {
            maps,
            unmaps,
            entries: inner.entries.len(),
            files: inner.files.len(),
        }
    }

    /// The pieces of `[iova, iova + len)`: (host pointer, offset in the transfer, bytes), after
    /// checking every byte is mapped with the access wanted.
    fn walk(
        entries: &BTreeMap<u64, Entry>,
        iova: u64,
        len: usize,
        write: bool,
    ) -> Result<Vec<(*mut u8, usize, usize)>, DmaFault> {
        let len64 = u64::try_from(len).map_err(|_| DmaFault { iova })?;
        iova.checked_add(len64).ok_or(DmaFault { iova })?;
        let mut out = Vec::new();
        let mut done = 0usize;
        while done < len {
            let a = iova + done as u64;
            let fault = DmaFault { iova: a };
            let (&base, e) = entries.range(..=a).next_back().ok_or(fault)?;
            let off = a - base;
            if off >= e.len || !(if write { e.write } else { e.read }) {
                return Err(fault);
            }
            let (fm, foff) = e.file.as_ref().ok_or(fault)?;
            let n = (e.len - off).min((len - done) as u64) as usize;
            let at = foff + off; // < file length: checked at map time
            // SAFETY: `at + n <= fm.len` (the entry lies inside its file, checked in `map`), so
            // the pointer stays inside the live mapping that `fm` owns.
            let p = unsafe { fm.ptr.add(at as usize) };
            out.push((p, done, n));
            done += n;
        }
        Ok(out)
    }
}

/// Removes `[iova, iova + size)` from `entries`, splitting entries that straddle its ends.
fn remove_range(entries: &mut BTreeMap<u64, Entry>, iova: u64, size: u64) -> bool {
    let end = iova.saturating_add(size);
    let mut hit = Vec::new();
    if let Some((&b, e)) = entries.range(..iova).next_back()
        && b + e.len > iova
    {
        hit.push(b);
    }
    hit.extend(entries.range(iova..end).map(|(&b, _)| b));
    let found = !hit.is_empty();
    for b in hit {
        let e = entries.remove(&b).expect("entry present");
        let eend = b + e.len;
        if b < iova {
            let mut head = e.clone();
            head.len = iova - b;
            entries.insert(b, head);
        }
        if eend > end {
            let mut tail = e.clone();
            tail.len = eend - end;
            if let Some((_, off)) = tail.file.as_mut() {
                *off += end - b;
            }
            entries.insert(end, tail);
        }
    }
    found
}

impl HostMemory for DmaTable {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let inner = self.inner.read().expect("dma lock");
        for (p, boff, n) in Self::walk(&inner.entries, iova, buf.len(), false)? {
            // SAFETY: `p..p+n` lies in a live shared mapping (held by the read lock, so no unmap
            // can run); `buf[boff..boff+n]` is in bounds. The client may change the bytes
            // concurrently, as a DMA source may: they are copied as plain bytes.
            unsafe { std::ptr::copy_nonoverlapping(p, buf[boff..].as_mut_ptr(), n) };
        }
        Ok(())
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        let inner = self.inner.read().expect("dma lock");
        for (p, boff, n) in Self::walk(&inner.entries, iova, data.len(), true)? {
            // SAFETY: as in `read`; the mapping is writable (checked by `walk`).
            unsafe { std::ptr::copy_nonoverlapping(data[boff..].as_ptr(), p, n) };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    fn memfd(len: u64) -> File {
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"dma-test".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0);
        // SAFETY: `fd` is a fresh descriptor we own.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        f.set_len(len).unwrap();
        seal(&f);
        f
    }

    fn seal(f: &File) {
        // SAFETY: fcntl F_ADD_SEALS on our own memfd, integer arguments only.
        let r = unsafe {
            libc::fcntl(
                f.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            )
        };
        assert_eq!(r, 0);
    }

    /// A client that could shrink the file after DMA_MAP would crash the card with SIGBUS on
    /// its next access: unsealed memory is refused, and sealed memory cannot shrink.
    #[test]
    fn only_memory_sealed_against_shrinking_is_mapped() {
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"dma-unsealed".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: `fd` is a fresh descriptor we own.
        let unsealed = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        unsealed.set_len(4 * 4096).unwrap();
        let t = DmaTable::new();
        let e = t
            .map(
                3,
                0,
                0x10_0000,
                4 * 4096,
                Some(unsealed.try_clone().unwrap()),
            )
            .unwrap_err();
        assert!(e.to_string().contains("F_SEAL_SHRINK"), "{e}");
        assert_eq!(t.stats().entries, 0);
        // A regular file is no better.
        let path = std::env::temp_dir().join(format!("preba-dma-test-{}", std::process::id()));
        let tmp = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        tmp.set_len(4 * 4096).unwrap();
        assert!(t.map(3, 0, 0x10_0000, 4 * 4096, Some(tmp)).is_err());

        let sealed = memfd(4 * 4096);
        t.map(3, 0, 0x10_0000, 4 * 4096, Some(sealed.try_clone().unwrap()))
            .unwrap();
        assert!(sealed.set_len(4096).is_err(), "a sealed memfd shrank");
        let mut b = [0u8; 8];
        t.read(0x10_0000 + 3 * 4096, &mut b).unwrap();
    }

    #[test]
    fn pages_translate_and_unmap() {
        let mut f = memfd(4 * 4096);
        let t = DmaTable::new();
        // IOVA pages in reverse order of file pages, as a vIOMMU may map them.
        for i in 0..4u64 {
            t.map(
                3,
                (3 - i) * 4096,
                0x10_0000 + i * 4096,
                4096,
                Some(f.try_clone().unwrap()),
            )
            .unwrap();
        }
        assert_eq!(t.stats().files, 1);
        let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        t.write(0x10_0800, &data).unwrap(); // spans pages 0, 1, 2
        let mut back = vec![0; 8192];
        t.read(0x10_0800, &mut back).unwrap();
        assert_eq!(back, data);
        // Page 0 of the IOVA space is file page 3.
        let mut fb = vec![0; 0x800];
        f.seek(SeekFrom::Start(3 * 4096 + 0x800)).unwrap();
        f.read_exact(&mut fb).unwrap();
        assert_eq!(fb, data[..0x800]);
        // The client writes; the card reads it.
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&[0xAB; 16]).unwrap();
        let mut b = [0; 16];
        t.read(0x10_3000, &mut b).unwrap();
        assert_eq!(b, [0xAB; 16]);
        // Faults: outside, overflow, straddling the end.
        assert_eq!(t.read(0x10_4000, &mut b), Err(DmaFault { iova: 0x10_4000 }));
        assert_eq!(t.read(0x10_3ff8, &mut b), Err(DmaFault { iova: 0x10_4000 }));
        assert!(t.read(u64::MAX - 3, &mut b).is_err());
        // Unmap a middle page: accesses there fault, neighbours still work.
        assert!(t.unmap(0x10_1000, 4096, false).unwrap());
        assert_eq!(t.read(0x10_0ff8, &mut b), Err(DmaFault { iova: 0x10_1000 }));
        t.read(0x10_2000, &mut b).unwrap();
        assert!(t.unmap(0, 0, true).unwrap());
        assert_eq!(t.stats().entries, 0);
        assert_eq!(t.stats().files, 0);
    }

    #[test]
    fn permissions_split_and_no_fd() {
        let f = memfd(16 * 4096);
        let t = DmaTable::new();
        t.map(MAP_READ, 0, 0x1000, 4096, Some(f.try_clone().unwrap()))
            .unwrap();
        let mut b = [0; 8];
        t.read(0x1000, &mut b).unwrap();
        assert!(t.write(0x1000, &b).is_err());
        t.map(3, 0, 0x2000, 4096, None).unwrap();
        assert!(t.read(0x2000, &mut b).is_err());
        // Past the end of the file: refused.
        assert!(
            t.map(3, 16 * 4096, 0x9000, 4096, Some(f.try_clone().unwrap()))
                .is_err()
        );
        // One big entry, then a hole punched in its middle.
        t.map(3, 0, 0x10_0000, 8 * 4096, Some(f.try_clone().unwrap()))
            .unwrap();
        t.write(0x10_5000, &[5; 8]).unwrap();
        assert!(t.unmap(0x10_2000, 2 * 4096, false).unwrap());
        assert!(t.read(0x10_2000, &mut b).is_err());
        assert!(t.read(0x10_3ff8, &mut b).is_err());
        t.read(0x10_5000, &mut b).unwrap();
        assert_eq!(b, [5; 8]);
        t.read(0x10_1ff8, &mut b).unwrap();
        // Remapping over an existing range replaces it.
        t.map(3, 4096, 0x10_0000, 4096, Some(f)).unwrap();
        t.read(0x10_0000, &mut b).unwrap();
        // An unmap past the end of the IOVA space is clipped to it.
        assert!(t.unmap(0x8_0000, u64::MAX, false).unwrap());
        assert!(t.read(0x10_0000, &mut b).is_err());
        t.read(0x1000, &mut b).unwrap();
    }
}
