//! The system calls of the vfio-user server that need `unsafe`, each behind a safe function:
//! mapping a client's memory file ([`FileMap`]), reading a file's seals, receiving file
//! descriptors with `recvmsg(SCM_RIGHTS)`, and making memfds and eventfds (for clients, tests
//! and the fuzz target). The rest of [`crate::vfio_server`] is safe code (`deny(unsafe_code)`).
//!
//! Why a mapping is sound here: the client's file is mapped whole, shared, and only after
//! [`seals`] showed `F_SEAL_SHRINK`, so no byte of the mapping can go beyond the end of the file
//! (the SIGBUS case); every copy is bounds-checked against the mapping's length; the bytes are
//! copied as plain bytes (the client may change them at any time, as a DMA source may), and no
//! reference into the mapping is ever handed out.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;

/// File seals (`fcntl(F_ADD_SEALS)`).
pub const SEAL_SEAL: i32 = libc::F_SEAL_SEAL;
pub const SEAL_SHRINK: i32 = libc::F_SEAL_SHRINK;
pub const SEAL_GROW: i32 = libc::F_SEAL_GROW;
pub const SEAL_WRITE: i32 = libc::F_SEAL_WRITE;

/// A file mapped whole and shared into this process.
pub struct FileMap {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain shared memory owned by this struct; it is only reached through
// bounds-checked byte copies and unmapped once, in Drop.
unsafe impl Send for FileMap {}
// SAFETY: as above: no references into the mapping are ever handed out.
unsafe impl Sync for FileMap {}

impl FileMap {
    /// Maps the first `len` bytes of `file`: read-write when `write` is asked for (read-only
    /// when the descriptor was opened read-only), else read-only. The caller has checked that
    /// the file is sealed against shrinking and at least `len` bytes long. A file sealed against
    /// writes cannot be mapped for writing (EPERM).
    pub fn new(file: &File, len: usize, write: bool) -> io::Result<FileMap> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty file",
            ));
        }
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
                NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
            }
        };
        let read_only = || {
            Ok(FileMap {
                ptr: map(libc::PROT_READ)?,
                len,
                writable: false,
            })
        };
        if !write {
            return read_only();
        }
        match map(libc::PROT_READ | libc::PROT_WRITE) {
            Ok(ptr) => Ok(FileMap {
                ptr,
                len,
                writable: true,
            }),
            // A read-only fd: the client maps device-readable memory only.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => read_only(),
            Err(e) => Err(e),
        }
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (an empty file is refused by [`FileMap::new`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping may be written.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Copies `buf.len()` bytes at `at` into `buf`; `false` (nothing copied) when the range is
    /// not inside the mapping.
    pub fn read(&self, at: usize, buf: &mut [u8]) -> bool {
        if at.checked_add(buf.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: `at + buf.len() <= len` (checked above), so the source lies inside the live
        // mapping this struct owns; `buf` is a distinct, writable buffer of that length. The
        // client may change the bytes concurrently: they are copied as plain bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(at), buf.as_mut_ptr(), buf.len())
        };
        true
    }

    /// Copies `data` to `at`; `false` (nothing copied) when the range is not inside the mapping
    /// or the mapping is read-only.
    pub fn write(&self, at: usize, data: &[u8]) -> bool {
        if !self.writable || at.checked_add(data.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: as in `read`: the destination lies inside the live, writable mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(at), data.len())
        };
        true
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`; nothing else refers to it
        // (copies borrow `self`, so none is in flight while it drops).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The seals of `file` (`fcntl(F_GET_SEALS)`); an error for a file that cannot be sealed (not
/// a memfd or shmem file).
pub fn seals(file: &File) -> io::Result<i32> {
    // SAFETY: fcntl F_GET_SEALS on a descriptor we hold; integer arguments only.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Adds `seals` ([`SEAL_SHRINK`], ...) to `file` (`fcntl(F_ADD_SEALS)`).
pub fn add_seals(file: &File, seals: i32) -> io::Result<()> {
    // SAFETY: fcntl F_ADD_SEALS on a descriptor we hold; integer arguments only.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A new memfd of `len` bytes (close-on-exec; sealable when `sealing`).
pub fn memfd(name: &CStr, len: u64, sealing: bool) -> io::Result<File> {
    let flags = libc::MFD_CLOEXEC | if sealing { libc::MFD_ALLOW_SEALING } else { 0 };
    // SAFETY: memfd_create with a valid NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.set_len(len)?;
    Ok(f)
}

/// A new non-blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<File> {
    // SAFETY: plain eventfd creation, integer arguments only.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The most descriptors one `recvmsg` takes (as many as a vfio-user client may send with one
/// message; more are closed by the kernel and reported as truncated).
pub const MAX_FDS: usize = 16;

/// One `recvmsg`: up to `buf.len()` bytes into `buf`, and the descriptors sent with them
/// appended to `fds` (close-on-exec). Returns the bytes read (0 at end of stream) and whether
/// the kernel had to drop descriptors (more than [`MAX_FDS`]). Retries on EINTR.
pub fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<File>,
) -> io::Result<(usize, bool)> {
    const SPACE: usize = MAX_FDS * std::mem::size_of::<libc::c_int>();
    // CMSG_SPACE of MAX_FDS ints, in u64 words so the buffer is aligned for cmsghdr.
    let mut cbuf = [0u64; (SPACE + 2 * std::mem::size_of::<libc::cmsghdr>()).div_ceil(8)];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; every pointer field used is set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(SPACE as u32) } as usize;
        msg.msg_controllen = space.min(std::mem::size_of_val(&cbuf)) as _;
        // SAFETY: `msg` points at `iov` (over `buf`) and `cbuf`, both live for the call and of
        // the lengths given.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: `msg` was filled by the kernel; CMSG_FIRSTHDR/NXTHDR stay inside
        // `msg_control..msg_controllen`, which the kernel set to what it wrote.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: `c` is a complete cmsghdr inside the control buffer (CMSG_FIRSTHDR and
            // CMSG_NXTHDR return null otherwise).
            let hdr = unsafe { &*c };
            if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
                // SAFETY: pure size computation.
                let head = unsafe { libc::CMSG_LEN(0) } as usize;
                let count = (hdr.cmsg_len as usize).saturating_sub(head)
                    / std::mem::size_of::<libc::c_int>();
                // SAFETY: CMSG_DATA points at `count` ints inside this cmsg (cmsg_len covers
                // them); they may be unaligned, so each is read unaligned.
                let data = unsafe { libc::CMSG_DATA(c) }.cast::<libc::c_int>();
                for i in 0..count {
                    // SAFETY: `i < count`, inside the cmsg's data as above.
                    let fd = unsafe { data.add(i).read_unaligned() };
                    if fd >= 0 {
                        // SAFETY: SCM_RIGHTS installed `fd` in this process for us alone.
                        fds.push(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
            }
            // SAFETY: `c` is a cmsghdr of `msg` (see above).
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
        let truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
        return Ok((n as usize, truncated));
    }
}
