//! The Black Magic Probe remote protocol (the subset a JTAG host such as probe-rs's BMP driver
//! uses), served over TCP: requests `!<cmd>#` (some prefixed `+#`), replies `&K<hex>#` (ok),
//! `&P…#` (parameter error), `&N#` (not supported).
//!
//! probe-rs clocks JTAG one bit per packet for state moves and captured scans, so this loop is
//! built to be cheap per packet: buffered reader and writer, a fixed packet buffer, no
//! allocation, and the card is only reached for a DMI access at Update-DR.

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::CardDmi;
use super::tap::{Dmi, Tap};
use crate::card::Shared;

/// What `!GA#` answers.
const VERSION: &str = "preba-card BMP remote, JTAG to a RISC-V 0.13.2 Debug Module";
/// The longest request accepted; longer ones are answered with a parameter error.
const MAX_PACKET: usize = 128;
/// How often a blocked read looks at the card's stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Non-blocking polls for the next request before a blocking read (see `session`).
const SPIN_POLLS: u32 = 200;

/// Accepts one debugger at a time until the card stops.
pub(crate) fn serve(listener: TcpListener, sh: Arc<Shared>, idcode: u32) {
    let mut tap = Tap::new(idcode);
    let mut dmi = CardDmi { sh: sh.clone() };
    while !sh.stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                // A new debugger starts from a reset TAP; errors end only this connection.
                tap.reset();
                let _ = session(stream, &sh, &mut tap, &mut dmi);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(STOP_POLL / 5),
            Err(_) => std::thread::sleep(STOP_POLL),
        }
    }
}

fn session(stream: TcpStream, sh: &Shared, tap: &mut Tap, dmi: &mut dyn Dmi) -> io::Result<()> {
    // One reply per request, each awaited by the client: Nagle would add a delay to every bit.
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(STOP_POLL))?;
    let mut reader = BufReader::with_capacity(16 * 1024, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(16 * 1024, stream.try_clone()?);
    let mut parser = Parser::default();
    // The next request usually follows a reply within microseconds: poll for it a little
    // (yielding the CPU, which the client may need) before sleeping in a blocking read, whose
    // wake-up costs more than the request itself.
    let mut spinning = true;
    stream.set_nonblocking(true)?;
    let mut idle_polls = 0u32;
    loop {
        if sh.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let buf = match reader.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::WouldBlock && spinning => {
                idle_polls += 1;
                if idle_polls >= SPIN_POLLS {
                    spinning = false;
                    stream.set_nonblocking(false)?;
                }
                std::thread::yield_now();
                continue;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let n = buf.len();
        for &c in buf {
            if let Some(pkt) = parser.push(c) {
                handle(pkt, tap, dmi, &mut writer)?;
            }
        }
        reader.consume(n);
        writer.flush()?;
        idle_polls = 0;
        if !spinning {
            spinning = true;
            stream.set_nonblocking(true)?;
        }
    }
}

/// Splits the byte stream into packets: everything between `!` and `#`.
#[derive(Debug)]
pub struct Parser {
    buf: [u8; MAX_PACKET],
    len: usize,
    inside: bool,
    overflow: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            buf: [0; MAX_PACKET],
            len: 0,
            inside: false,
            overflow: false,
        }
    }
}

/// A complete request: its body, or `None` when it was too long.
pub type Packet<'a> = Option<&'a [u8]>;

impl Parser {
    /// Feeds one byte; returns a packet when `c` completes one.
    pub fn push(&mut self, c: u8) -> Option<Packet<'_>> {
        if !self.inside {
            if c == b'!' {
                self.inside = true;
                self.len = 0;
                self.overflow = false;
            }
            return None;
        }
        if c == b'#' {
            self.inside = false;
            return Some((!self.overflow).then_some(&self.buf[..self.len]));
        }
        if self.len < MAX_PACKET {
            self.buf[self.len] = c;
            self.len += 1;
        } else {
            self.overflow = true;
        }
        None
    }
}

fn hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &d in digits {
        v = v << 4 | u64::from((d as char).to_digit(16)?);
    }
    Some(v)
}

/// Answers one request.
pub fn handle(
    pkt: Packet<'_>,
    tap: &mut Tap,
    dmi: &mut dyn Dmi,
    w: &mut impl Write,
) -> io::Result<()> {
    let Some(p) = pkt else {
        return w.write_all(b"&P1#");
    };
    match p {
        b"GA" => write!(w, "&K{VERSION}#"),
        // Supported remote protocol version: 1 (JTAG and the high-level JTAG device list).
        b"HC" => w.write_all(b"&K1#"),
        // Probe clock in kHz (nominal: the TAP is clocked per packet).
        b"Gf" => w.write_all(b"&Kfa0#"),
        b"JS" | b"JR" => {
            tap.reset();
            w.write_all(b"&K0#")
        }
        [b'J', b'N', tms, tdi] => {
            let tdo = tap.clock(*tms == b'1', *tdi == b'1', dmi);
            w.write_all(if tdo { b"&K1#" } else { b"&K0#" })
        }
        [b'J', b'T', rest @ ..] => match parse_seq(rest) {
            Some((len, bits)) => {
                for i in 0..len {
                    tap.clock(bits >> i & 1 != 0, true, dmi);
                }
                w.write_all(b"&K0#")
            }
            None => w.write_all(b"&P2#"),
        },
        [b'J', kind @ (b'd' | b'D'), rest @ ..] => match parse_seq(rest) {
            Some((len, bits)) => {
                let mut tdo = 0u64;
                for i in 0..len {
                    let tms = *kind == b'D' && i + 1 == len;
                    if tap.clock(tms, bits >> i & 1 != 0, dmi) {
                        tdo |= 1 << i;
                    }
                }
                write!(w, "&K{tdo:x}#")
            }
            None => w.write_all(b"&P2#"),
        },
        // Target reset line, voltage, clock setting, power, clock output, JTAG device list:
        // accepted, nothing to do on the emulated board.
        [b'G', b'Z' | b'V' | b'F' | b'P' | b'E', ..] | [b'H', b'J', ..] => w.write_all(b"&K0#"),
        _ => w.write_all(b"&N#"),
    }
}

/// `<len:02x><bits:x>` with 1..=64 bits.
fn parse_seq(rest: &[u8]) -> Option<(u32, u64)> {
    if rest.len() < 3 {
        return None;
    }
    let len = hex(&rest[..2])? as u32;
    let bits = hex(&rest[2..])?;
    (1..=64).contains(&len).then_some((len, bits))
}
