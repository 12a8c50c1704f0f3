//! The client's DMA map table: the card's IOMMU.
//!
//! A vfio-user client maps guest (or host) memory with `DMA_MAP` messages that carry an fd, an
//! offset into it and an IOVA range. QEMU under a vIOMMU sends one message per 4 KiB page, each
//! with a fresh duplicate of the guest-RAM memfd: the table therefore maps each distinct file
//! (same device and inode) once, whole, and keeps per-range entries that point into it. A range
//! mapped without an fd cannot be reached (the server implements no `DMA_READ`/`DMA_WRITE`
//! messages), so accesses there fault, like accesses outside every window. Only files sealed
//! against shrinking are mapped ([`sys::seals`]): a client that truncated a mapped file would
//! otherwise turn the card's next access into SIGBUS.
//!
//! [`DmaTable`] implements the card model's [`HostMemory`]: every access is translated entry by
//! entry (so page by page under a vIOMMU), the whole range is checked before the first byte is
//! copied, and an unmap waits for accesses in flight (the table lock) before the pages go away.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, RwLock, Weak};

use super::sys::{self, FileMap};
use crate::{DmaFault, HostMemory};

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
                let sealed = sys::seals(&f).is_ok_and(|s| s & sys::SEAL_SHRINK != 0);
                if !sealed {
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
                // An earlier mapping of the file serves if it is long enough and, when the
                // device is to write, writable: a read-only one (from a read-only fd) must not
                // silently take the write access away from a later read-write map.
                let want_write = flags & MAP_WRITE != 0;
                let existing = inner
                    .files
                    .get(&key)
                    .and_then(Weak::upgrade)
                    .filter(|m| m.len() as u64 >= end_in_file && (m.writable() || !want_write));
                let fm = match existing {
                    Some(m) => m,
                    None => {
                        let len = usize::try_from(md.len())
                            .map_err(|_| einval("DMA map file too large"))?;
                        let m = Arc::new(FileMap::new(&f, len, want_write)?);
                        inner.files.insert(key, Arc::downgrade(&m));
                        m
                    }
                };
                Some((fm, offset))
                // `f` (our duplicate of the client's fd) closes here; the mapping stays.
            }
        };
        let write = flags & MAP_WRITE != 0 && file.as_ref().is_some_and(|(m, _)| m.writable());
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

    /// The pieces of `[iova, iova + len)`: (file mapping, offset in it, offset in the
    /// transfer, bytes), after checking every byte is mapped with the access wanted.
    fn walk(
        entries: &BTreeMap<u64, Entry>,
        iova: u64,
        len: usize,
        write: bool,
    ) -> Result<Vec<(&FileMap, usize, usize, usize)>, DmaFault> {
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
            // Inside the file: checked at map time (the entry lies inside its file).
            let at = usize::try_from(foff + off).map_err(|_| fault)?;
            out.push((&**fm, at, done, n));
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
        // The read lock keeps every mapping alive (no unmap can run) during the copies.
        let inner = self.inner.read().expect("dma lock");
        for (fm, at, boff, n) in Self::walk(&inner.entries, iova, buf.len(), false)? {
            if !fm.read(at, &mut buf[boff..boff + n]) {
                return Err(DmaFault {
                    iova: iova + boff as u64,
                });
            }
        }
        Ok(())
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        let inner = self.inner.read().expect("dma lock");
        for (fm, at, boff, n) in Self::walk(&inner.entries, iova, data.len(), true)? {
            if !fm.write(at, &data[boff..boff + n]) {
                return Err(DmaFault {
                    iova: iova + boff as u64,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    fn memfd(len: u64) -> File {
        let f = sys::memfd(c"dma-test", len, true).unwrap();
        sys::add_seals(&f, sys::SEAL_SHRINK | sys::SEAL_GROW).unwrap();
        f
    }

    /// A client that could shrink the file after DMA_MAP would crash the card with SIGBUS on
    /// its next access: unsealed memory is refused, and sealed memory cannot shrink.
    #[test]
    fn only_memory_sealed_against_shrinking_is_mapped() {
        let unsealed = sys::memfd(c"dma-unsealed", 4 * 4096, false).unwrap();
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

    /// Found by the vfio_user_server fuzz target: a file first mapped through a read-only fd
    /// kept its read-only mapping for a later read-write DMA_MAP of the same file (through a
    /// writable fd), so the device's writes there faulted although the map succeeded; and a
    /// file sealed against writes was "mapped for writing" that way.
    #[test]
    fn a_read_only_mapping_is_not_reused_for_a_write_map() {
        let f = memfd(4 * 4096);
        let ro = File::open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&f)
        ))
        .unwrap();
        let t = DmaTable::new();
        t.map(MAP_READ | MAP_WRITE, 0, 0x1000, 4096, Some(ro))
            .unwrap();
        assert!(
            t.write(0x1000, &[1]).is_err(),
            "read-only fd: no device writes"
        );
        t.map(
            MAP_READ | MAP_WRITE,
            4096,
            0x8000,
            4096,
            Some(f.try_clone().unwrap()),
        )
        .unwrap();
        t.write(0x8000, &[7; 8]).unwrap();
        let mut b = [0u8; 8];
        t.read(0x8000, &mut b).unwrap();
        assert_eq!(b, [7; 8]);
        // The read-only window still reads the same file.
        t.read(0x1000, &mut b).unwrap();

        let sealed = sys::memfd(c"dma-write-sealed", 4096, true).unwrap();
        sys::add_seals(&sealed, sys::SEAL_SHRINK | sys::SEAL_WRITE).unwrap();
        let ro = File::open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&sealed)
        ))
        .unwrap();
        t.map(MAP_READ, 0, 0x2_0000, 4096, Some(ro)).unwrap();
        assert!(
            t.map(
                MAP_READ | MAP_WRITE,
                0,
                0x3_0000,
                4096,
                Some(sealed.try_clone().unwrap())
            )
            .is_err(),
            "a write-sealed file mapped for device writes"
        );
        t.map(MAP_READ, 0, 0x4_0000, 4096, Some(sealed)).unwrap();
        t.read(0x4_0000, &mut b).unwrap();
        assert!(t.write(0x4_0000, &b).is_err());
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
