//! Message framing: a message is read whole (header, then `message_size - 16` payload bytes,
//! with the descriptors sent alongside) before it is handled, so the stream stays in step with
//! the client's own framing whatever the message says. A header shorter than itself
//! (`message_size < 16`) has no payload; a payload over [`MAX_PAYLOAD`] is read and thrown away;
//! both become a [`Message::bad_frame`] that the handler refuses. Only the end of the stream
//! (or a socket error) ends the connection.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;

use super::proto::{HEADER_SIZE, Header, MAX_PAYLOAD};
use super::sys;

/// One message as read off the wire.
#[derive(Debug)]
pub struct Message {
    pub header: Header,
    /// The payload (`message_size - 16` bytes; empty for a bad frame).
    pub payload: Vec<u8>,
    /// Descriptors sent with the message's bytes.
    pub fds: Vec<File>,
    /// Why the frame itself is unusable: the handler refuses the message with this.
    pub bad_frame: Option<BadFrame>,
}

/// A message whose framing is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFrame {
    /// `message_size` is less than the header.
    Short,
    /// The payload is over [`MAX_PAYLOAD`] bytes (it was read and dropped).
    TooLong,
    /// More descriptors than one receive takes ([`sys::MAX_FDS`]); the kernel closed the rest.
    TooManyFds,
}

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadFrame::Short => "message_size is less than the 16-byte header",
            BadFrame::TooLong => "message longer than the server takes",
            BadFrame::TooManyFds => "more file descriptors than a message may carry",
        })
    }
}

/// A byte stream with descriptors: the client's socket, or [`MemoryWire`] in tests.
pub trait Wire {
    /// One receive of up to `buf.len()` bytes, appending the descriptors sent with them to
    /// `fds`; returns the bytes read (0 at the end of the stream) and whether descriptors were
    /// dropped for lack of room.
    fn recv(&mut self, buf: &mut [u8], fds: &mut Vec<File>) -> io::Result<(usize, bool)>;
    /// Sends all of `data`.
    fn send(&mut self, data: &[u8]) -> io::Result<()>;
}

impl Wire for UnixStream {
    fn recv(&mut self, buf: &mut [u8], fds: &mut Vec<File>) -> io::Result<(usize, bool)> {
        sys::recv_with_fds(self, buf, fds)
    }

    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data)
    }
}

/// Fills `buf` from the wire; Ok(false) when the stream ended before the first byte.
fn fill(
    w: &mut dyn Wire,
    buf: &mut [u8],
    fds: &mut Vec<File>,
    truncated: &mut bool,
) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let (n, t) = w.recv(&mut buf[got..], fds)?;
        *truncated |= t;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection inside a message",
            ));
        }
        got += n;
    }
    Ok(true)
}

/// Reads the next message; `None` when the client closed the connection between messages.
pub fn read_message(w: &mut dyn Wire) -> io::Result<Option<Message>> {
    let mut fds = Vec::new();
    let mut truncated = false;
    let mut hb = [0u8; HEADER_SIZE];
    if !fill(w, &mut hb, &mut fds, &mut truncated)? {
        return Ok(None);
    }
    let header = Header::parse(&hb);
    let eof = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client closed the connection inside a message",
        )
    };
    let (payload, mut bad_frame) = match header.payload_len() {
        None => (Vec::new(), Some(BadFrame::Short)),
        Some(n) if n > MAX_PAYLOAD => {
            // Read and drop it, so the next message starts where the client thinks it does.
            let mut left = n;
            let mut chunk = vec![0u8; 64 << 10];
            while left > 0 {
                let k = left.min(chunk.len());
                let mut dropped = Vec::new();
                if !fill(w, &mut chunk[..k], &mut dropped, &mut truncated)? {
                    return Err(eof());
                }
                left -= k;
            }
            (Vec::new(), Some(BadFrame::TooLong))
        }
        Some(n) => {
            let mut p = vec![0u8; n];
            if !fill(w, &mut p, &mut fds, &mut truncated)? {
                return Err(eof());
            }
            (p, None)
        }
    };
    if truncated && bad_frame.is_none() {
        bad_frame = Some(BadFrame::TooManyFds);
    }
    Ok(Some(Message {
        header,
        payload,
        fds,
        bad_frame,
    }))
}

/// An in-memory client stream for tests and the fuzz target: messages (with descriptors) are
/// queued with [`MemoryWire::push`], replies collect in [`MemoryWire::output`]. Like a Unix
/// socket, one receive never crosses a point where descriptors were attached.
#[derive(Default)]
pub struct MemoryWire {
    input: Vec<u8>,
    pos: usize,
    fds: BTreeMap<usize, Vec<File>>,
    /// Everything the server sent.
    pub output: Vec<u8>,
}

impl MemoryWire {
    pub fn new() -> MemoryWire {
        MemoryWire::default()
    }

    /// Queues `bytes`, with `fds` attached to the first of them.
    pub fn push(&mut self, bytes: &[u8], fds: Vec<File>) {
        if !fds.is_empty() && !bytes.is_empty() {
            self.fds.entry(self.input.len()).or_default().extend(fds);
        }
        self.input.extend_from_slice(bytes);
    }

    /// How many queued bytes the server has read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes queued and not read yet.
    pub fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }
}

impl Wire for MemoryWire {
    fn recv(&mut self, buf: &mut [u8], fds: &mut Vec<File>) -> io::Result<(usize, bool)> {
        let mut truncated = false;
        if let Some(f) = self.fds.remove(&self.pos) {
            truncated = f.len() > sys::MAX_FDS;
            fds.extend(f.into_iter().take(sys::MAX_FDS));
        }
        let next_fds = self
            .fds
            .range(self.pos + 1..)
            .next()
            .map_or(self.input.len(), |(&at, _)| at);
        let n = buf.len().min(next_fds - self.pos);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok((n, truncated))
    }

    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.output.extend_from_slice(data);
        Ok(())
    }
}
