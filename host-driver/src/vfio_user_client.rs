//! Our own vfio-user client (the protocol of QEMU's docs/interop/vfio-user.rst,
//! as the `vfio_user` crate's server speaks it), because the crate's client
//! can neither be given socket deadlines (its stream is private) nor be
//! trusted with a hostile server (it sizes buffers from the server's
//! `message_size` unchecked). Here:
//!
//! - every send and every receive has a deadline (`SO_SNDTIMEO` /
//!   `SO_RCVTIMEO`), so a stopped card (SIGSTOP) fails the operation within
//!   it instead of blocking a host thread forever;
//! - a reply must carry the command's id, the command, the reply flag, and a
//!   size inside the bound the command allows; anything else is an error
//!   naming what was wrong, never a panic or an unbounded allocation;
//! - after a timeout or a malformed reply the stream is out of step, so the
//!   client refuses every later call (`Broken`) instead of reading a stale
//!   reply as the answer to a new question.
#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const HEADER: usize = 16;
const VERSION: u16 = 1;
const DMA_MAP: u16 = 2;
const DEVICE_GET_INFO: u16 = 4;
const GET_IRQ_INFO: u16 = 7;
const SET_IRQS: u16 = 8;
const REGION_READ: u16 = 9;
const REGION_WRITE: u16 = 10;
const DEVICE_RESET: u16 = 13;
const FLAG_REPLY: u32 = 1;
const FLAG_ERROR: u32 = 1 << 5;
/// A command the sender wants no reply to (vfio-user "No_reply").
const FLAG_NO_REPLY: u32 = 1 << 4;
const DMA_READ_WRITE: u32 = 0b11;
/// Largest region access we ask for (BAR reads of a few bytes to a log page).
pub const MAX_ACCESS: usize = 1 << 20;
/// The version reply's capability JSON is small; a server that sends more is broken.
const MAX_VERSION_JSON: usize = 64 << 10;

#[derive(Debug)]
pub enum ClientError {
    Connect(String, std::io::Error),
    /// No (complete) answer within the deadline.
    Timeout {
        op: &'static str,
        after: Duration,
    },
    Io {
        op: &'static str,
        err: std::io::Error,
    },
    /// The server answered the command with its error flag (errno).
    Refused {
        op: &'static str,
        errno: u32,
    },
    /// The reply does not fit the command (id, command, flags or size).
    BadReply {
        op: &'static str,
        why: String,
    },
    /// An earlier timeout or bad reply (`first`, its message) left the stream out of step.
    Broken {
        first: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(p, e) => write!(f, "connecting to {p}: {e}"),
            ClientError::Timeout { op, after } => {
                write!(f, "{op}: no answer from the card within {after:?}")
            }
            ClientError::Io { op, err } => write!(f, "{op}: {err}"),
            ClientError::Refused { op, errno } => {
                write!(f, "{op}: refused by the card (errno {errno})")
            }
            ClientError::BadReply { op, why } => write!(f, "{op}: malformed reply: {why}"),
            ClientError::Broken { first } => write!(
                f,
                "the vfio-user connection is out of step since an earlier failure ({first})"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

type Result<T> = std::result::Result<T, ClientError>;

pub struct Client {
    stream: UnixStream,
    next_id: u16,
    timeout: Duration,
    /// The failure that put the stream out of step, if one has.
    broken: Option<String>,
    num_irqs: u32,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Client {
    /// Connects and negotiates the protocol version, each step within `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client> {
        let stream = UnixStream::connect(path)
            .map_err(|e| ClientError::Connect(path.display().to_string(), e))?;
        let io = |err| ClientError::Io {
            op: "socket options",
            err,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut c = Client {
            stream,
            next_id: 0,
            timeout,
            broken: None,
            num_irqs: 0,
        };
        // Version 0.1 with the capabilities the crate's server parses (one
        // fd per message, 1 MiB transfers).
        let caps = br#"{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576,"migration":{"pgsize":4096}}}"#;
        let mut p = Vec::with_capacity(4 + caps.len() + 1);
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend_from_slice(&1u16.to_le_bytes());
        p.extend_from_slice(caps);
        p.push(0);
        let r = c.call("VERSION", VERSION, &p, &[], 4, 4 + MAX_VERSION_JSON)?;
        if r.len() < 4 {
            return c.bad("VERSION", format!("{} bytes, want at least 4", r.len()));
        }
        let info = c.call(
            "DEVICE_GET_INFO",
            DEVICE_GET_INFO,
            &[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[],
            16,
            16,
        )?;
        c.num_irqs = le32(&info, 12);
        Ok(c)
    }

    /// IRQ indexes the device reports (DEVICE_GET_INFO).
    pub fn num_irqs(&self) -> u32 {
        self.num_irqs
    }

    fn bad<T>(&mut self, op: &'static str, why: String) -> Result<T> {
        let e = ClientError::BadReply { op, why };
        self.broken = Some(e.to_string());
        Err(e)
    }

    fn io_err(&mut self, op: &'static str, err: std::io::Error) -> ClientError {
        // Whatever part of the exchange happened, the stream is out of step.
        let e = match err.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => ClientError::Timeout {
                op,
                after: self.timeout,
            },
            _ => ClientError::Io { op, err },
        };
        self.broken = Some(e.to_string());
        e
    }

    /// Sends one command message (`flags`: 0, or [`FLAG_NO_REPLY`]);
    /// returns its message id.
    fn send(
        &mut self,
        op: &'static str,
        command: u16,
        flags: u32,
        payload: &[u8],
        fds: &[RawFd],
    ) -> Result<u16> {
        if let Some(first) = &self.broken {
            return Err(ClientError::Broken {
                first: first.clone(),
            });
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut msg = Vec::with_capacity(HEADER + payload.len());
        msg.extend_from_slice(&id.to_le_bytes());
        msg.extend_from_slice(&command.to_le_bytes());
        msg.extend_from_slice(&((HEADER + payload.len()) as u32).to_le_bytes());
        msg.extend_from_slice(&flags.to_le_bytes()); // a command
        msg.extend_from_slice(&0u32.to_le_bytes());
        msg.extend_from_slice(payload);
        let sent = if fds.is_empty() {
            self.stream.write_all(&msg).map(|()| msg.len())
        } else {
            // The fds ride on the first bytes; the server reads the header
            // with them and the rest after.
            self.stream
                .send_with_fds(&[&msg[..]], fds)
                .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
        };
        match sent {
            Ok(n) if n < msg.len() => {
                if let Err(e) = self.stream.write_all(&msg[n..]) {
                    return Err(self.io_err(op, e));
                }
            }
            Ok(_) => {}
            Err(e) => return Err(self.io_err(op, e)),
        }
        Ok(id)
    }

    /// One command and its reply: returns the reply's payload (after the
    /// header), which must be `min..=max` bytes.
    fn call(
        &mut self,
        op: &'static str,
        command: u16,
        payload: &[u8],
        fds: &[RawFd],
        min: usize,
        max: usize,
    ) -> Result<Vec<u8>> {
        let id = self.send(op, command, 0, payload, fds)?;
        let mut h = [0u8; HEADER];
        if let Err(e) = self.stream.read_exact(&mut h) {
            return Err(self.io_err(op, e));
        }
        let (rid, rcmd) = (
            u16::from_le_bytes([h[0], h[1]]),
            u16::from_le_bytes([h[2], h[3]]),
        );
        let (size, flags, errno) = (le32(&h, 4) as usize, le32(&h, 8), le32(&h, 12));
        if rid != id || rcmd != command {
            return self.bad(
                op,
                format!("answers message {rid} command {rcmd}, asked {id} command {command}"),
            );
        }
        if flags & 0xf != FLAG_REPLY {
            return self.bad(op, format!("flags {flags:#x} are not a reply"));
        }
        if flags & FLAG_ERROR != 0 {
            // An error reply is a bare header; anything after it would be
            // read as the next reply.
            if size != HEADER {
                return self.bad(op, format!("error reply of {size} bytes"));
            }
            return Err(ClientError::Refused { op, errno });
        }
        let body = size.checked_sub(HEADER).filter(|b| (min..=max).contains(b));
        let Some(body) = body else {
            return self.bad(
                op,
                format!(
                    "message_size {size}, want {}..={}",
                    HEADER + min,
                    HEADER + max
                ),
            );
        };
        let mut r = vec![0u8; body];
        if let Err(e) = self.stream.read_exact(&mut r) {
            return Err(self.io_err(op, e));
        }
        Ok(r)
    }

    /// DMA_MAP: `size` bytes of `fd` from `offset` at device address `iova`, read/write.
    pub fn dma_map(&mut self, offset: u64, iova: u64, size: u64, fd: RawFd) -> Result<()> {
        let mut p = Vec::with_capacity(32);
        p.extend_from_slice(&32u32.to_le_bytes());
        p.extend_from_slice(&DMA_READ_WRITE.to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&iova.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        self.call("DMA_MAP", DMA_MAP, &p, &[fd], 0, 0).map(drop)
    }

    fn access_head(offset: u64, region: u32, count: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(16 + count);
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&region.to_le_bytes());
        p.extend_from_slice(&(count as u32).to_le_bytes());
        p
    }

    /// REGION_READ of `data.len()` bytes (at most [`MAX_ACCESS`]).
    pub fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> Result<()> {
        if data.len() > MAX_ACCESS {
            return Err(ClientError::BadReply {
                op: "REGION_READ",
                why: format!("{} bytes asked, at most {MAX_ACCESS}", data.len()),
            });
        }
        let p = Self::access_head(offset, region, data.len());
        let n = 16 + data.len();
        let r = self.call("REGION_READ", REGION_READ, &p, &[], n, n)?;
        if le32(&r, 8) != region || le32(&r, 12) as usize != data.len() {
            return self.bad(
                "REGION_READ",
                "region or count differ from the request".into(),
            );
        }
        data.copy_from_slice(&r[16..]);
        Ok(())
    }

    /// REGION_WRITE of `data` (at most [`MAX_ACCESS`] bytes).
    pub fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        let p = Self::write_payload(region, offset, data)?;
        self.call("REGION_WRITE", REGION_WRITE, &p, &[], 16, 16)
            .map(drop)
    }

    /// A REGION_WRITE's payload (`data` at most [`MAX_ACCESS`] bytes).
    fn write_payload(region: u32, offset: u64, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() > MAX_ACCESS {
            return Err(ClientError::BadReply {
                op: "REGION_WRITE",
                why: format!("{} bytes given, at most {MAX_ACCESS}", data.len()),
            });
        }
        let mut p = Self::access_head(offset, region, data.len());
        p.extend_from_slice(data);
        Ok(p)
    }

    /// REGION_WRITE of `data` as a posted write (the no-reply flag), as an
    /// MMIO store is on PCIe: sent, not waited for. The server applies
    /// messages in order, so a later read sees it. A server that refuses it
    /// answers with an error reply anyway, which the next call reads as out
    /// of step: the client is then broken, as after any bad reply.
    pub fn region_write_posted(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<()> {
        let p = Self::write_payload(region, offset, data)?;
        self.send("REGION_WRITE", REGION_WRITE, FLAG_NO_REPLY, &p, &[])
            .map(drop)
    }

    /// DEVICE_GET_IRQ_INFO: the number of vectors of IRQ index `index`.
    pub fn irq_count(&mut self, index: u32) -> Result<u32> {
        let mut p = Vec::with_capacity(16);
        p.extend_from_slice(&16u32.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&index.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        let r = self.call("DEVICE_GET_IRQ_INFO", GET_IRQ_INFO, &p, &[], 16, 16)?;
        if le32(&r, 8) != index {
            return self.bad("DEVICE_GET_IRQ_INFO", "answers another index".into());
        }
        Ok(le32(&r, 12))
    }

    /// DEVICE_SET_IRQS: `fds` (eventfds) for vectors `start..` of `index`.
    pub fn set_irqs(&mut self, index: u32, flags: u32, start: u32, fds: &[RawFd]) -> Result<()> {
        let mut p = Vec::with_capacity(20);
        p.extend_from_slice(&20u32.to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&index.to_le_bytes());
        p.extend_from_slice(&start.to_le_bytes());
        p.extend_from_slice(&(fds.len() as u32).to_le_bytes());
        self.call("DEVICE_SET_IRQS", SET_IRQS, &p, fds, 0, 0)
            .map(drop)
    }

    /// DEVICE_RESET. The card answers once its boot ROM has brought the
    /// firmware up again, which may take longer than a register access: the
    /// deadline is `reset_timeout` for this call.
    pub fn reset(&mut self, reset_timeout: Duration) -> Result<()> {
        let io = |err| ClientError::Io {
            op: "socket options",
            err,
        };
        self.stream
            .set_read_timeout(Some(reset_timeout))
            .map_err(io)?;
        let (t, saved) = (reset_timeout, self.timeout);
        self.timeout = t;
        let r = self
            .call("DEVICE_RESET", DEVICE_RESET, &[], &[], 0, 0)
            .map(drop);
        self.timeout = saved;
        self.stream.set_read_timeout(Some(saved)).map_err(io)?;
        r
    }

    /// Closes both directions (the server sees the disconnect at once).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    /// A server that answers VERSION and DEVICE_GET_INFO properly and then
    /// does `then` with the next command's bytes.
    fn server(
        then: impl FnOnce(&mut UnixStream, [u8; 16]) + Send + 'static,
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let reply = |s: &mut UnixStream, h: [u8; 16], body: &[u8]| {
                let mut m = h.to_vec();
                m[4..8].copy_from_slice(&((16 + body.len()) as u32).to_le_bytes());
                m[8..12].copy_from_slice(&1u32.to_le_bytes());
                m.extend_from_slice(body);
                s.write_all(&m).unwrap();
            };
            for body in [
                &b"\0\0\x01\0{}\0"[..],
                &[16, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0],
            ] {
                let mut h = [0u8; 16];
                s.read_exact(&mut h).unwrap();
                let mut rest = vec![0u8; le32(&h, 4) as usize - 16];
                s.read_exact(&mut rest).unwrap();
                reply(&mut s, h, body);
            }
            let mut h = [0u8; 16];
            if s.read_exact(&mut h).is_ok() {
                then(&mut s, h);
            }
            std::thread::sleep(Duration::from_secs(5));
        });
        (dir, path)
    }

    #[test]
    fn a_silent_server_times_out_and_the_client_stays_broken() {
        let (_d, p) = server(|_, _| {});
        let mut c = Client::connect(&p, Duration::from_millis(200)).unwrap();
        assert_eq!(c.num_irqs(), 4);
        let t0 = Instant::now();
        let mut b = [0u8; 4];
        let e = c.region_read(0, 0, &mut b).unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Timeout {
                    op: "REGION_READ",
                    ..
                }
            ),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(matches!(
            c.region_read(0, 0, &mut b).unwrap_err(),
            ClientError::Broken { .. }
        ));
    }

    /// A posted write goes out with the no-reply flag and is not waited
    /// for: the server answers only the read after it (which it applies in
    /// order). A server that answers the posted write with an error anyway
    /// puts the stream out of step: the next call fails and the client stays
    /// broken.
    #[test]
    fn posted_writes_are_not_waited_for() {
        let (_d, p) = server(|s, h| {
            // The posted write: no reply. Then a REGION_READ of 4 bytes.
            assert_eq!(u16::from_le_bytes([h[2], h[3]]), REGION_WRITE);
            assert_eq!(le32(&h, 8), FLAG_NO_REPLY);
            let mut rest = vec![0u8; le32(&h, 4) as usize - 16];
            s.read_exact(&mut rest).unwrap();
            assert_eq!(&rest[16..], &[1, 2, 3, 4]);
            let mut r = [0u8; 16];
            s.read_exact(&mut r).unwrap();
            let mut body = vec![0u8; le32(&r, 4) as usize - 16];
            s.read_exact(&mut body).unwrap();
            let mut m = r.to_vec();
            m[4..8].copy_from_slice(&(16u32 + 16 + 4).to_le_bytes());
            m[8..12].copy_from_slice(&FLAG_REPLY.to_le_bytes());
            m.extend_from_slice(&body[..16]);
            m.extend_from_slice(&[1, 2, 3, 4]);
            s.write_all(&m).unwrap();
            // A second posted write, answered with an error reply anyway.
            let mut w = [0u8; 16];
            s.read_exact(&mut w).unwrap();
            let mut rest = vec![0u8; le32(&w, 4) as usize - 16];
            s.read_exact(&mut rest).unwrap();
            let mut e = w.to_vec();
            e[8..12].copy_from_slice(&(FLAG_REPLY | FLAG_ERROR).to_le_bytes());
            e[12..16].copy_from_slice(&22u32.to_le_bytes());
            s.write_all(&e).unwrap();
        });
        let mut c = Client::connect(&p, Duration::from_secs(2)).unwrap();
        let t0 = Instant::now();
        c.region_write_posted(0, 0x1000, &[1, 2, 3, 4]).unwrap();
        assert!(t0.elapsed() < Duration::from_millis(500), "not waited for");
        let mut b = [0u8; 4];
        c.region_read(0, 0x1000, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        c.region_write_posted(0, 0x1000, &[5, 6, 7, 8]).unwrap();
        let e = c.region_read(0, 0x1000, &mut b).unwrap_err();
        assert!(!matches!(e, ClientError::Timeout { .. }), "{e}");
        assert!(matches!(
            c.region_read(0, 0, &mut b).unwrap_err(),
            ClientError::Broken { .. }
        ));
    }

    #[test]
    fn hostile_replies_are_errors_not_panics() {
        // (message_size, flags, id offset): each reply is wrong in one way.
        let cases: [(u32, u32, u16, &str); 5] = [
            (u32::MAX, 1, 0, "message_size"),
            (3, 1, 0, "message_size"),
            // A 4-byte read's reply carries 16 + 4 bytes after the header.
            (16 + 24, 1, 0, "message_size"),
            (16 + 20, 0, 0, "not a reply"),
            (16 + 20, 1, 1, "answers message"),
        ];
        for (size, flags, did, want) in cases {
            let (_d, p) = server(move |s, h| {
                let mut m = h.to_vec();
                let id = u16::from_le_bytes([h[0], h[1]]).wrapping_add(did);
                m[0..2].copy_from_slice(&id.to_le_bytes());
                m[4..8].copy_from_slice(&size.to_le_bytes());
                m[8..12].copy_from_slice(&flags.to_le_bytes());
                let _ = s.write_all(&m);
            });
            let mut c = Client::connect(&p, Duration::from_secs(2)).unwrap();
            let mut b = [0u8; 4];
            let e = c.region_read(0, 0, &mut b).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
            assert!(matches!(
                c.reset(Duration::from_secs(1)).unwrap_err(),
                ClientError::Broken { .. }
            ));
        }
    }

    #[test]
    fn an_error_reply_is_refused_with_its_errno() {
        let (_d, p) = server(|s, h| {
            let mut m = h.to_vec();
            m[4..8].copy_from_slice(&16u32.to_le_bytes());
            m[8..12].copy_from_slice(&(1u32 | FLAG_ERROR).to_le_bytes());
            m[12..16].copy_from_slice(&22u32.to_le_bytes());
            s.write_all(&m).unwrap();
        });
        let mut c = Client::connect(&p, Duration::from_secs(2)).unwrap();
        let e = c.reset(Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Refused {
                    op: "DEVICE_RESET",
                    errno: 22
                }
            ),
            "{e}"
        );
    }
}
