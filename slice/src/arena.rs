//! The worker's view of the server's arena: the same memfd, mapped shared and
//! read-write (inputs come in through it, outputs go back through it).
//!
//! The server (and the card) may write other parts of the arena at any time,
//! so the mapping is never reached through a Rust reference: only raw
//! pointers, bounds-checked here, with volatile copies or handed to ORT for
//! the duration of one batch (the server keeps a batch's ranges unchanged
//! until the reply).
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;

use crate::SliceError;

pub(crate) struct Arena {
    ptr: NonNull<u8>,
    len: usize,
}

impl Arena {
    /// Maps `len` bytes of the file at `path` (e.g. /proc/<pid>/fd/<n>).
    pub(crate) fn open(path: &Path, len: u64) -> Result<Arena, SliceError> {
        let err = |what: String| SliceError::Arena(format!("{}: {what}", path.display()));
        let len = usize::try_from(len).map_err(|_| err(format!("length {len} too large")))?;
        if len == 0 {
            return Err(err("length 0".into()));
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| err(format!("open read-write: {e}")))?;
        let size = f.metadata().map_err(|e| err(format!("stat: {e}")))?.len();
        if size < len as u64 {
            // Touching pages past the end of a memfd would be SIGBUS, not an error.
            return Err(err(format!("file is {size} bytes, arena_len is {len}")));
        }
        // SAFETY: a fresh shared mapping of a file we opened read-write; the
        // kernel picks the address; the result is checked against MAP_FAILED.
        // The file may be closed afterwards: the mapping keeps it alive.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err(format!("mmap: {}", std::io::Error::last_os_error())));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| err("mmap returned null".into()))?;
        Ok(Arena { ptr, len })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn check(&self, off: u64, len: u64) -> Result<usize, String> {
        match off.checked_add(len) {
            Some(end) if end <= self.len as u64 => Ok(off as usize),
            _ => Err(format!(
                "arena range {off:#x}+{len:#x} outside the {:#x}-byte arena",
                self.len
            )),
        }
    }

    /// Base address of `off..off+len`, bounds-checked. Never made into a
    /// reference; the caller hands it to ORT or the CUDA driver.
    pub(crate) fn ptr(&self, off: u64, len: u64) -> Result<*mut u8, String> {
        let off = self.check(off, len)?;
        // SAFETY: off + len <= self.len (checked), so the result is inside the
        // mapping (or one past its end when len == 0).
        Ok(unsafe { self.ptr.as_ptr().add(off) })
    }

    /// Copies `off..off+dst.len()` out of the arena (volatile loads).
    pub(crate) fn read(&self, off: u64, dst: &mut [u8]) -> Result<(), String> {
        let src = self.ptr(off, dst.len() as u64)?;
        for (i, d) in dst.iter_mut().enumerate() {
            // SAFETY: src + i is inside the checked range; byte loads need no
            // alignment.
            *d = unsafe { src.add(i).read_volatile() };
        }
        Ok(())
    }

    /// Copies `src` into the arena at `off` (volatile stores).
    pub(crate) fn write(&self, off: u64, src: &[u8]) -> Result<(), String> {
        let dst = self.ptr(off, src.len() as u64)?;
        for (i, s) in src.iter().enumerate() {
            // SAFETY: dst + i is inside the checked range.
            unsafe { dst.add(i).write_volatile(*s) };
        }
        Ok(())
    }

    /// Zero-fills `off..off+len` (volatile stores).
    pub(crate) fn zero(&self, off: u64, len: u64) -> Result<(), String> {
        let dst = self.ptr(off, len)?;
        for i in 0..len as usize {
            // SAFETY: dst + i is inside the checked range.
            unsafe { dst.add(i).write_volatile(0) };
        }
        Ok(())
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no references
        // into it exist, and raw pointers handed out live only for one batch.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bounds_and_round_trip() {
        let path = std::env::temp_dir().join(format!("preba-arena-test-{}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&[7u8; 8192])
            .unwrap();
        let a = Arena::open(&path, 8192).unwrap();
        assert_eq!(a.len(), 8192);
        a.write(100, &[1, 2, 3]).unwrap();
        let mut b = [0u8; 4];
        a.read(99, &mut b).unwrap();
        assert_eq!(b, [7, 1, 2, 3]);
        a.zero(100, 2).unwrap();
        a.read(99, &mut b).unwrap();
        assert_eq!(b, [7, 0, 0, 3]);
        assert!(a.write(8190, &[0; 3]).is_err());
        assert!(a.ptr(u64::MAX, 2).is_err());
        assert!(a.ptr(8192, 0).is_ok());
        drop(a);
        assert!(
            Arena::open(&path, 8193)
                .err()
                .unwrap()
                .to_string()
                .contains("8192 bytes")
        );
        assert!(Arena::open(&path, 0).is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(Arena::open(&path, 10).is_err());
    }
}
