//! Host memory as the card's DMA engine sees it: IOVAs translated through the IOMMU windows the
//! host mapped. Every DMA-visible byte is touched only through [`HostMemory`]; the model never
//! holds a reference into memory it shares with the host.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// An access outside the mapped windows (or one whose range overflows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaFault {
    /// The first IOVA that has no translation.
    pub iova: u64,
}

impl std::fmt::Display for DmaFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DMA fault at IOVA {:#x}", self.iova)
    }
}

impl std::error::Error for DmaFault {}

/// The host's memory behind the IOMMU.
///
/// Implementations check `iova + len` with `checked_add` and the whole range against the mapped
/// windows, and return `Err(DmaFault)` for any byte outside them (the firmware then sees
/// `DMA_STATUS` = fault with the IOVA in `DMA_FAULT_LO/HI`; nothing panics). A backend that
/// translates page by page (vfio-user under a vIOMMU maps 4 KiB at a time) walks the range with
/// [`pages`]. Implementations should check the whole range before copying, so a faulting
/// transfer has no effect; if a backend cannot, a partial write before the fault is allowed
/// (real DMA behaves the same).
pub trait HostMemory: Send + Sync {
    /// Copies `buf.len()` bytes at `iova` into `buf`.
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault>;
    /// Copies `data` to `iova`.
    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaFault>;
}

impl<T: HostMemory + ?Sized> HostMemory for Arc<T> {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        (**self).read(iova, buf)
    }
    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        (**self).write(iova, data)
    }
}

/// The 4 KiB page size of the IOMMU.
pub const PAGE_SIZE: u64 = 4096;

/// Splits `[iova, iova + len)` at `page`-aligned boundaries: yields `(iova, offset in the
/// transfer, bytes)` per piece, or `Err` when the range overflows 64 bits. `page` must be a power
/// of two.
pub fn pages(
    iova: u64,
    len: usize,
    page: u64,
) -> Result<impl Iterator<Item = (u64, usize, usize)>, DmaFault> {
    let len64 = u64::try_from(len).map_err(|_| DmaFault { iova })?;
    iova.checked_add(len64).ok_or(DmaFault { iova })?;
    let mut off = 0usize;
    Ok(std::iter::from_fn(move || {
        if off >= len {
            return None;
        }
        let a = iova + off as u64;
        let room = page - (a & (page - 1));
        let n = (room.min((len - off) as u64)) as usize;
        let item = (a, off, n);
        off += n;
        Some(item)
    }))
}

/// A host memory made of Vec-backed windows at fixed IOVAs: the test double (and the harness's
/// "host RAM"). Windows may be mapped and unmapped at any time; a range may span adjacent windows.
#[derive(Default)]
pub struct TestMemory {
    windows: RwLock<BTreeMap<u64, Arc<Mutex<Vec<u8>>>>>,
}

impl TestMemory {
    /// No windows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `size` zeroed bytes at `iova`. Fails when the window overflows or overlaps another.
    pub fn map(&self, iova: u64, size: usize) -> Result<(), DmaFault> {
        let end = iova
            .checked_add(size as u64)
            .filter(|_| size > 0)
            .ok_or(DmaFault { iova })?;
        let mut w = self.windows.write().expect("windows lock");
        if let Some((&b, v)) = w.range(..end).next_back() {
            let vend = b + v.lock().expect("window lock").len() as u64;
            if vend > iova {
                return Err(DmaFault { iova: b.max(iova) });
            }
        }
        w.insert(iova, Arc::new(Mutex::new(vec![0; size])));
        Ok(())
    }

    /// Unmaps the window that starts at `iova`; later accesses there fault.
    pub fn unmap(&self, iova: u64) -> bool {
        self.windows
            .write()
            .expect("windows lock")
            .remove(&iova)
            .is_some()
    }

    /// The pieces of `[iova, iova + len)`: (window, offset in window, offset in transfer, bytes).
    #[allow(clippy::type_complexity)]
    fn walk(
        &self,
        iova: u64,
        len: usize,
    ) -> Result<Vec<(Arc<Mutex<Vec<u8>>>, usize, usize, usize)>, DmaFault> {
        let len64 = len as u64;
        iova.checked_add(len64).ok_or(DmaFault { iova })?;
        let w = self.windows.read().expect("windows lock");
        let mut out = Vec::new();
        let mut done = 0usize;
        while done < len {
            let a = iova + done as u64;
            let (&base, win) = w.range(..=a).next_back().ok_or(DmaFault { iova: a })?;
            let wlen = win.lock().expect("window lock").len() as u64;
            let off = a - base;
            if off >= wlen {
                return Err(DmaFault { iova: a });
            }
            let n = ((wlen - off).min((len - done) as u64)) as usize;
            out.push((win.clone(), off as usize, done, n));
            done += n;
        }
        Ok(out)
    }
}

impl HostMemory for TestMemory {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        for (win, woff, boff, n) in self.walk(iova, buf.len())? {
            let w = win.lock().expect("window lock");
            buf[boff..boff + n].copy_from_slice(&w[woff..woff + n]);
        }
        Ok(())
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        for (win, woff, boff, n) in self.walk(iova, data.len())? {
            let mut w = win.lock().expect("window lock");
            w[woff..woff + n].copy_from_slice(&data[boff..boff + n]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_fault_outside() {
        let m = TestMemory::new();
        m.map(0x1000, 0x1000).unwrap();
        m.map(0x2000, 0x1000).unwrap();
        assert!(m.map(0x2800, 0x1000).is_err());
        assert!(m.map(0x800, 0x1000).is_err());
        m.write(0x1ff0, &[7; 32]).unwrap(); // spans both windows
        let mut b = [0; 32];
        m.read(0x1ff0, &mut b).unwrap();
        assert_eq!(b, [7; 32]);
        assert_eq!(m.read(0x2ff0, &mut b), Err(DmaFault { iova: 0x3000 }));
        assert_eq!(m.read(0xff0, &mut b), Err(DmaFault { iova: 0xff0 }));
        assert_eq!(
            m.read(u64::MAX - 4, &mut b),
            Err(DmaFault { iova: u64::MAX - 4 })
        );
        // Nothing is written when the range faults.
        assert!(m.write(0x2ff0, &[9; 32]).is_err());
        m.read(0x2fe0, &mut b).unwrap();
        assert_eq!(b[16..], [0; 16]);
        assert!(m.unmap(0x2000));
        assert!(m.read(0x2000, &mut b).is_err());
        let mut empty = [0u8; 0];
        m.read(0x9999_0000, &mut empty).unwrap();
    }

    #[test]
    fn page_split() {
        let v: Vec<_> = pages(0xff0, 0x1020, 4096).unwrap().collect();
        assert_eq!(
            v,
            vec![
                (0xff0, 0, 0x10),
                (0x1000, 0x10, 0x1000),
                (0x2000, 0x1010, 0x10)
            ]
        );
        assert!(pages(u64::MAX, 2, 4096).is_err());
    }
}
