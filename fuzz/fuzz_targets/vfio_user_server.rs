//! The vfio-user server of `preba-card` (qemu-device/src/vfio_server) fed by a hostile client:
//! sequences of messages, well-formed and not, with memfds, eventfds and other descriptors,
//! framed by the server's own reader over an in-memory stream ([`MemoryWire`]) and handled by
//! [`Server::handle`] in front of a real card (the firmware on the soft core).
//!
//! Properties (docs/threat-model.md, "client -> vfio-user server"):
//! - no panic, no hang, no SIGBUS (the card's DMA goes through memory the client mapped, then
//!   tried to shrink), the card's core never halts;
//! - every message gets exactly one well-formed reply (same id and command, the reply flag, a
//!   size that matches; an error reply is a bare header with a non-zero errno), except a
//!   command that succeeded with the no-reply flag;
//! - a message the script built to be refused (region access outside its region, unsealed or
//!   non-memfd descriptor, short payload, bad index, no-reply on a command that must answer,
//!   ...) gets an error reply, and one built to succeed gets a success reply with the expected
//!   contents;
//! - the reader stays in step with the client's framing: it only fails at the end of the
//!   stream.
//!
//! The card boots once per process; after each input the client's DMA windows, eventfds and
//! config space are dropped ([`Device::disconnect`]) and an enabled controller is disabled
//! (else the card is reset).
//!
//! Input: a script of operations, one opcode byte each: the low 4 bits pick the operation,
//! bit 6 "corrupt" overwrites the message's `message_size` with 4 script bytes, bit 7 sets the
//! no-reply flag. Fields follow (zero-padded at the end of the script):
//!  0 VERSION variant:u8 | 1 DMA_MAP kind:u8 flags:u8 offset iova size [slot:u8 pages:u8
//!  tail:u8] (kind: 0 no fd, 1 sealed memfd, 2 unsealed, 3 sealed then grown, 4 unsealed then
//!  shrunk, 5 eventfd, 6 read-only reopen, 7 sealed, 8 write-sealed, 9 two fds; the slot
//!  fields for the kinds with client memory) | 2 DMA_UNMAP flags:u8 iova size |
//!  3 REGION_READ region offset count | 4 REGION_WRITE region offset count data |
//!  5 DEVICE_GET_INFO len:u8 | 6 GET_REGION_INFO index:u8 | 7 GET_IRQ_INFO index:u8 |
//!  8 SET_IRQS flags:u8 index:u8 start:u8 count:u8 fds:u8 (low 2 bits: how many; bit 2: pipes
//!  instead of eventfds) | 9 DEVICE_RESET (one card reset per input, FLR included) |
//!  10 raw bytes len:u16 nfds:u8 bytes | 11 poke client memory slot:u8 at:u16 len:u8 data |
//!  12 card DMA iova len:u16 write:u8 | 13 wait ms:u8 (0-3 ms, 8 ms per input; ends early
//!  when the card has nothing left to do by then) |
//!  14 unsupported command cmd:u8 len:u8 bytes | 15 BAR0 register write reg:u8 value:u32.
//! (offset, iova, size: one selector byte, values >= 0xf0 take 8 more bytes raw; region and
//! count likewise: see `region`, `count`.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use preba_card::vfio_server::device::{BAR0_REGION, BAR2_REGION, CONFIG_REGION, region_size};
use preba_card::vfio_server::proto::{self, FLAG_ERROR, FLAG_NO_REPLY, FLAG_REPLY, HEADER_SIZE};
use preba_card::vfio_server::{Device, MemoryWire, Server, read_message, sys};
use preba_card::{CardConfig, CoreState, HostMemory, harness};
use preba_protocol::regs;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where the script's DMA windows go by default.
const ARENA: u64 = 0x4000_0000;
/// Client memory slots per input (memfds reused across DMA_MAPs, as QEMU maps guest RAM).
const SLOTS: usize = 8;
/// The most the script sleeps per input.
const WAIT_BUDGET_MS: u64 = 8;
/// Card resets (DEVICE_RESET, FLR through DevCtl) per input: each reboots the firmware on the
/// soft core (~50 ms under ASAN), so later ones are dropped (a reset op) or defused (the FLR
/// bit of a config write is cleared).
const MAX_RESETS: u32 = 1;

struct Fixture {
    server: Server,
    device: Arc<Device>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let elf = harness::firmware_elf().unwrap_or_else(|e| panic!("firmware ELF: {e}"));
        let fw = std::fs::read(&elf).unwrap_or_else(|e| panic!("{}: {e}", elf.display()));
        let config = CardConfig {
            image_cus: 1,
            audio_cus: 1,
            norm_cus: 1,
            workers: 1,
            ..CardConfig::default()
        };
        let device = Arc::new(Device::new(config, &fw).unwrap_or_else(|e| panic!("card: {e}")));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&device.card.uart()).contains("serving queues") {
            assert!(Instant::now() < deadline, "the firmware never booted");
            std::thread::sleep(Duration::from_millis(1));
        }
        Fixture {
            server: Server::new(device.clone()),
            device,
        }
    })
}

/// The script.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let k = n.min(self.0.len());
        let (a, b) = self.0.split_at(k);
        self.0 = b;
        let mut v = a.to_vec();
        v.resize(n, 0);
        v
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes(2).try_into().expect("2"))
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes(4).try_into().expect("4"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes(8).try_into().expect("8"))
    }
    /// A selector byte: below 0xf0 `small(byte)`, else 8 raw bytes.
    fn sel64(&mut self, small: impl Fn(u8) -> u64) -> u64 {
        match self.u8() {
            b if b < 0xf0 => small(b),
            _ => self.u64(),
        }
    }
    /// A region index: mostly 0..=9 (9 is one past the last), else raw.
    fn region(&mut self) -> u32 {
        match self.u8() {
            b if b < 0xf0 => u32::from(b % 10),
            _ => self.u32(),
        }
    }
    /// An access size: the usual register sizes, a few odd ones, else raw.
    fn count(&mut self) -> u32 {
        const C: [u32; 8] = [4, 8, 1, 2, 3, 16, 64, 0];
        match self.u8() {
            b if b < 0xf0 => C[usize::from(b) % C.len()],
            _ => self.u32(),
        }
    }
    /// An offset into `region`: its interesting places (registers, doorbells, MSI-X, the
    /// capabilities, both ends), a small step past one, or raw.
    fn offset(&mut self, region: u32) -> u64 {
        const BAR0: [u64; 22] = [
            regs::CAP,
            regs::VS,
            regs::CC,
            regs::CSTS,
            regs::AQA,
            regs::ASQ,
            regs::ACQ,
            regs::QFAULT,
            regs::INTX,
            regs::FWVER,
            regs::SCRATCH,
            regs::sq_doorbell(0),
            regs::cq_doorbell(0),
            regs::sq_doorbell(1),
            regs::cq_doorbell(1),
            regs::sq_doorbell(15),
            regs::MSIX_TABLE,
            regs::MSIX_TABLE + 12,
            regs::MSIX_PBA,
            regs::BAR0_SIZE - 8,
            regs::BAR0_SIZE - 4,
            regs::BAR0_SIZE,
        ];
        const CONFIG: [u64; 14] = [
            0, 4, 6, 0x10, 0x18, 0x34, 0x3c, 0x40, 0x42, 0x50, 0x58, 0x59, 0xffc, 0x1000,
        ];
        const BAR2: [u64; 5] = [0, 4, 0x8000, 0xfff8, 0x1_0000];
        let table: &[u64] = match region {
            BAR0_REGION => &BAR0,
            CONFIG_REGION => &CONFIG,
            BAR2_REGION => &BAR2,
            _ => &[0, 8],
        };
        match self.u8() {
            b if b < 0xc0 => table[usize::from(b) % table.len()],
            b if b < 0xf0 => {
                let base = table[usize::from(b) % table.len()];
                base.wrapping_add(u64::from(b - 0xc0) % 7 + 1)
            }
            _ => self.u64(),
        }
    }
}

/// What the script expects of one message's reply.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Anything well-formed.
    Any,
    /// An error reply.
    Refused,
    /// Success with exactly this many payload bytes.
    Ok(usize),
    /// DEVICE_GET_INFO's answer.
    DeviceInfo,
    /// GET_REGION_INFO's answer for a region of this size.
    RegionInfo(u32, u64),
    /// GET_IRQ_INFO's answer.
    IrqInfo(u32),
}

struct Op {
    start: usize,
    len: usize,
    no_reply: bool,
    expect: Expect,
}

/// Client memory: a memfd and what was done to it.
struct Slot {
    file: File,
    /// Sealed against shrinking (mappable).
    sealed: bool,
    /// Sealed against writes (a read-write mapping is refused).
    write_sealed: bool,
}

fn message(cmd: u16, id: u16, flags: u32, payload: &[u8]) -> Vec<u8> {
    let h = proto::Header {
        message_id: id,
        command: cmd,
        message_size: (HEADER_SIZE + payload.len()) as u32,
        flags,
        error: 0,
    };
    let mut m = h.encode().to_vec();
    m.extend_from_slice(payload);
    m
}

fn le(v: &[u64], widths: &[usize]) -> Vec<u8> {
    v.iter()
        .zip(widths)
        .flat_map(|(x, &w)| x.to_le_bytes()[..w].to_vec())
        .collect()
}

fn eventfds(n: usize) -> Vec<File> {
    (0..n).map(|_| sys::eventfd().expect("eventfd")).collect()
}

/// Whether an access of `count` bytes at `offset` of `region` is inside it.
fn access_ok(region: u32, offset: u64, count: u32) -> bool {
    let size = region_size(region);
    count <= proto::MAX_DATA_XFER
        && size > 0
        && offset
            .checked_add(u64::from(count))
            .is_some_and(|e| e <= size)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8"))
}

/// Checks one reply against the request's header and the script's expectation.
fn check_reply(req: &proto::Header, reply: Option<&[u8]>, op: Option<&Op>) {
    if let Some(r) = reply {
        assert!(r.len() >= HEADER_SIZE, "reply shorter than a header");
        let h = proto::Header::parse(r[..HEADER_SIZE].try_into().expect("16"));
        assert_eq!(
            (h.message_id, h.command),
            (req.message_id, req.command),
            "reply answers another message"
        );
        assert_eq!(h.flags & 0xf, FLAG_REPLY, "not a reply: {:#x}", h.flags);
        assert_eq!(h.message_size as usize, r.len(), "reply size");
        if h.flags & FLAG_ERROR != 0 {
            assert_eq!(r.len(), HEADER_SIZE, "error reply with a payload");
            assert_ne!(h.error, 0, "error reply without an errno");
        } else {
            assert_eq!(h.error, 0, "success with an errno");
        }
    } else {
        assert!(
            req.flags & FLAG_NO_REPLY != 0,
            "no reply to a message that wants one: {req:?}"
        );
    }
    let Some(op) = op else { return };
    let error = reply.is_some_and(|r| le32(r, 8) & FLAG_ERROR != 0);
    let body = reply.map(|r| &r[HEADER_SIZE..]);
    match op.expect {
        Expect::Any => {}
        Expect::Refused => assert!(error, "accepted, should be refused: {req:?}"),
        e => {
            assert!(!error, "refused, should succeed: {req:?} ({e:?})");
            if op.no_reply {
                assert!(reply.is_none(), "a reply to a no-reply success");
                return;
            }
            let b = body.expect("a success reply");
            match e {
                Expect::Ok(n) => assert_eq!(b.len(), n, "reply payload of {req:?}"),
                Expect::DeviceInfo => {
                    assert_eq!(b.len(), 16);
                    assert_eq!((le32(b, 8), le32(b, 12)), (9, 5), "regions, irqs");
                }
                Expect::RegionInfo(index, size) => {
                    assert_eq!(b.len(), 32);
                    assert_eq!((le32(b, 8), le64(b, 16)), (index, size), "region info");
                }
                Expect::IrqInfo(index) => {
                    assert_eq!(b.len(), 16);
                    assert_eq!(le32(b, 8), index);
                    let want = [1, 0, u32::from(regs::MSIX_VECTORS), 1, 0][index as usize];
                    assert_eq!(le32(b, 12), want, "IRQ count");
                }
                Expect::Any | Expect::Refused => unreachable!(),
            }
        }
    }
}

/// Builds the client's stream from the script: the messages (queued on `wire` with their
/// descriptors) and what each should get; runs the side operations (memory pokes, card DMA,
/// waits) as they come, in between the server's handling of what was queued so far.
struct Client {
    wire: MemoryWire,
    ops: Vec<Op>,
    slots: [Option<Slot>; SLOTS],
    next_id: u16,
    waited_ms: u64,
    resets: u32,
}

impl Client {
    /// Handles every message queued so far, checking each reply.
    fn drain(&mut self, fx: &Fixture) {
        loop {
            let start = self.wire.position();
            if self.wire.remaining() == 0 {
                return;
            }
            let msg = match read_message(&mut self.wire) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    // Only the end of the stream may stop the reader (a message cut short).
                    assert_eq!(self.wire.remaining(), 0, "reader failed mid-stream: {e}");
                    return;
                }
            };
            let req = msg.header;
            let op = self
                .ops
                .iter()
                .find(|o| o.start == start && o.len == req.message_size as usize);
            let reply = fx.server.handle(msg);
            check_reply(&req, reply.as_deref(), op);
        }
    }

    fn push(&mut self, mut m: Vec<u8>, fds: Vec<File>, op: u8, s: &mut Script, expect: Expect) {
        let no_reply = op & 0x80 != 0;
        if no_reply {
            let f = le32(&m, 8) | FLAG_NO_REPLY;
            m[8..12].copy_from_slice(&f.to_le_bytes());
        }
        if op & 0x40 != 0 {
            let size = s.u32();
            m[4..8].copy_from_slice(&size.to_le_bytes());
        }
        if trace() {
            let h = proto::Header::parse(m[..HEADER_SIZE].try_into().expect("16"));
            eprintln!("  message {h:?} fds {} expect {expect:?}", fds.len());
        }
        self.ops.push(Op {
            start: self.wire.position() + self.wire.remaining(),
            len: m.len(),
            no_reply,
            expect,
        });
        self.wire.push(&m, fds);
    }

    fn id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// The client memory slot the script names, made (per `kind`) when empty; its index.
    fn slot(&mut self, s: &mut Script, kind: u8) -> usize {
        let i = usize::from(s.u8()) % SLOTS;
        let pages = u64::from(s.u8() % 65);
        let tail = u64::from(s.u8()) * 16;
        if self.slots[i].is_none() {
            let len = pages * 4096 + tail;
            let file = sys::memfd(c"fuzz-client", len, true).expect("memfd");
            let (sealed, write_sealed) = match kind {
                // unsealed, unsealed-then-shrunk
                2 | 4 => (false, false),
                // sealed against writes too
                8 => {
                    sys::add_seals(&file, sys::SEAL_SHRINK | sys::SEAL_WRITE).expect("seal");
                    (true, true)
                }
                // sealed against shrinking only: may grow after the map
                3 => {
                    sys::add_seals(&file, sys::SEAL_SHRINK).expect("seal");
                    (true, false)
                }
                _ => {
                    sys::add_seals(&file, sys::SEAL_SHRINK | sys::SEAL_GROW).expect("seal");
                    (true, false)
                }
            };
            self.slots[i] = Some(Slot {
                file,
                sealed,
                write_sealed,
            });
        }
        i
    }

    fn op(&mut self, fx: &Fixture, s: &mut Script) {
        let op = s.u8();
        let id = self.id();
        match op & 0xf {
            0 => {
                let variant = s.u8();
                let (data, expect): (Vec<u8>, Expect) = match variant % 8 {
                    0 => (
                        br#"{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576,"migration":{"pgsize":4096}}}"#
                            .to_vec(),
                        Expect::Any,
                    ),
                    1 => (br#"{"capabilities":{"max_msg_fds":16}}"#.to_vec(), Expect::Any),
                    2 => (Vec::new(), Expect::Any),
                    3 => (br#"{"capabilities":{"max_msg_fds":-1}}"#.to_vec(), Expect::Refused),
                    4 => (br#"{"capabilities":{"migration":{}}}"#.to_vec(), Expect::Refused),
                    5 => (br#"{"caps":{}}"#.to_vec(), Expect::Refused),
                    6 => {
                        // Not NUL-terminated.
                        let n = usize::from(s.u8());
                        let mut d = s.bytes(n);
                        d.push(b'x');
                        (d, Expect::Refused)
                    }
                    _ => {
                        let n = usize::from(s.u8());
                        let mut d = s.bytes(n);
                        d.push(0);
                        (d, Expect::Any)
                    }
                };
                let mut p = le(&[0, 1], &[2, 2]);
                p.extend_from_slice(&data);
                if !data.is_empty() && variant % 8 < 6 {
                    p.push(0);
                }
                let expect = match expect {
                    Expect::Any if variant % 8 < 3 => Expect::Ok(4 + server_caps_len()),
                    e => e,
                };
                let expect = if op & 0x80 != 0 {
                    Expect::Refused
                } else {
                    expect
                };
                self.push(
                    message(proto::VERSION, id, 0, &p),
                    Vec::new(),
                    op,
                    s,
                    expect,
                );
            }
            1 => self.dma_map(s, op, id),
            2 => {
                let flags = u64::from(s.u8() & 0x7);
                let iova = s.sel64(|b| ARENA + u64::from(b) * 4096);
                let size = s.sel64(|b| u64::from(b) * 4096);
                let p = le(&[24, flags, iova, size], &[4, 4, 8, 8]);
                self.push(
                    message(proto::DMA_UNMAP, id, 0, &p),
                    Vec::new(),
                    op,
                    s,
                    Expect::Ok(24),
                );
            }
            3 => {
                let region = s.region();
                let offset = s.offset(region);
                let count = s.count();
                let p = le(&[offset, u64::from(region), u64::from(count)], &[8, 4, 4]);
                let expect = if op & 0x80 != 0 || !access_ok(region, offset, count) {
                    Expect::Refused
                } else {
                    Expect::Ok(16 + count as usize)
                };
                self.push(
                    message(proto::REGION_READ, id, 0, &p),
                    Vec::new(),
                    op,
                    s,
                    expect,
                );
            }
            4 => {
                let region = s.region();
                let offset = s.offset(region);
                let count = s.count();
                let n = (count as usize).min(4096);
                let mut p = le(&[offset, u64::from(region), u64::from(count)], &[8, 4, 4]);
                let mut data = s.bytes(n);
                // DevCtl's "initiate FLR" bit resets the card: within the reset budget only.
                const FLR_BYTE: u64 = 0x59;
                if region == CONFIG_REGION
                    && access_ok(region, offset, count)
                    && (offset..offset + n as u64).contains(&FLR_BYTE)
                {
                    let b = &mut data[(FLR_BYTE - offset) as usize];
                    if *b & 0x80 != 0 {
                        if self.resets < MAX_RESETS {
                            self.resets += 1;
                        } else {
                            *b &= !0x80;
                        }
                    }
                }
                p.extend_from_slice(&data);
                // (A write of DevCtl.BCR_FLR resets the card: it succeeds unless the card fails.)
                let expect = if !access_ok(region, offset, count) || n != count as usize {
                    Expect::Refused
                } else {
                    Expect::Ok(16)
                };
                self.push(
                    message(proto::REGION_WRITE, id, 0, &p),
                    Vec::new(),
                    op,
                    s,
                    expect,
                );
            }
            5 => {
                let n = usize::from(s.u8() % 24);
                let mut p = le(&[16], &[4]);
                p.resize(n, 0);
                let expect = if op & 0x80 != 0 || n < 16 {
                    Expect::Refused
                } else {
                    Expect::DeviceInfo
                };
                self.push(
                    message(proto::DEVICE_GET_INFO, id, 0, &p),
                    Vec::new(),
                    op,
                    s,
                    expect,
                );
            }
            6 => {
                let index = match s.u8() {
                    b if b < 0xf0 => u32::from(b % 12),
                    _ => s.u32(),
                };
                let p = le(&[32, 0, u64::from(index), 0, 0, 0], &[4, 4, 4, 4, 8, 8]);
                let expect = if op & 0x80 != 0 || index >= 9 {
                    Expect::Refused
                } else {
                    Expect::RegionInfo(index, region_size(index))
                };
                self.push(
                    message(proto::DEVICE_GET_REGION_INFO, id, 0, &p),
                    Vec::new(),
                    op,
                    s,
                    expect,
                );
            }
            7 => {
                let index = match s.u8() {
                    b if b < 0xf0 => u32::from(b % 7),
                    _ => s.u32(),
                };
                let p = le(&[16, 0, u64::from(index), 0], &[4, 4, 4, 4]);
                let expect = if op & 0x80 != 0 || index >= 5 {
                    Expect::Refused
                } else {
                    Expect::IrqInfo(index)
                };
                self.push(
                    message(proto::DEVICE_GET_IRQ_INFO, id, 0, &p),
                    Vec::new(),
                    op,
                    s,
                    expect,
                );
            }
            8 => {
                const FLAGS: [u32; 6] = [0x24, 0x21, 0x09, 0x11, 0x22, 0x14];
                let f = s.u8();
                let flags = if f < 0xf0 {
                    FLAGS[usize::from(f) % FLAGS.len()]
                } else {
                    s.u32()
                };
                let index = u32::from(s.u8() % 6);
                let start = u32::from(s.u8() % 20);
                let count = u32::from(s.u8() % 20);
                // Low 2 bits: how many descriptors; bit 2: pipes (whose writes can block)
                // instead of eventfds.
                let fd = s.u8();
                let nfds = usize::from(fd % 4);
                let pipes = fd & 4 != 0 && nfds > 0;
                let fds = if pipes {
                    (0..nfds)
                        .map(|_| {
                            let (_r, w) = std::io::pipe().expect("pipe");
                            File::from(std::os::fd::OwnedFd::from(w))
                        })
                        .collect()
                } else {
                    eventfds(nfds)
                };
                let p = le(
                    &[
                        20,
                        u64::from(flags),
                        u64::from(index),
                        u64::from(start),
                        u64::from(count),
                    ],
                    &[4, 4, 4, 4, 4],
                );
                let eventfd_data = flags & 0x7 == 0x4;
                let expect = if index >= 5
                    || flags & proto::IRQ_SET_DATA_BOOL != 0
                    || (pipes && eventfd_data)
                {
                    Expect::Refused
                } else {
                    Expect::Any
                };
                self.push(
                    message(proto::DEVICE_SET_IRQS, id, 0, &p),
                    fds,
                    op,
                    s,
                    expect,
                );
            }
            9 => {
                if self.resets < MAX_RESETS {
                    self.resets += 1;
                    let m = message(proto::DEVICE_RESET, id, 0, &[]);
                    self.push(m, Vec::new(), op, s, Expect::Ok(0));
                }
            }
            10 => {
                let n = usize::from(s.u16() % 512);
                let nfds = usize::from(s.u8() % 3);
                let b = s.bytes(n);
                // Raw: no expectation (it may not even be one message).
                self.wire.push(&b, eventfds(nfds));
            }
            11 => {
                self.drain(fx);
                let i = usize::from(s.u8()) % SLOTS;
                let at = u64::from(s.u16());
                let n = usize::from(s.u8());
                let data = s.bytes(n);
                if let Some(sl) = &self.slots[i] {
                    // The client writes its own memory (the queues the card reads); growing an
                    // unsealed file is allowed, a sealed one refuses.
                    let _ = sl.file.write_all_at(&data, at);
                }
            }
            12 => {
                self.drain(fx);
                let iova = s.sel64(|b| ARENA + u64::from(b) * 512);
                let n = usize::from(s.u16() % 8192);
                let mem = &fx.device.dma;
                if s.u8() & 1 == 0 {
                    let mut b = vec![0u8; n];
                    let _ = mem.read(iova, &mut b);
                } else {
                    let _ = mem.write(iova, &vec![0xa5; n]);
                }
            }
            13 => {
                self.drain(fx);
                let ms = u64::from(s.u8() % 4).min(WAIT_BUDGET_MS - self.waited_ms);
                self.waited_ms += ms;
                // The card does what it would do in `ms` (its timers due by then included); the
                // wait ends once it has nothing left to do before then, which is most of the time
                // (a plain sleep here was a quarter of this target's time).
                fx.device
                    .card
                    .wait_idle(Instant::now() + Duration::from_millis(ms));
            }
            14 => {
                const CMDS: [u16; 5] = [
                    proto::DEVICE_GET_REGION_IO_FDS,
                    proto::DMA_READ,
                    proto::DMA_WRITE,
                    proto::DIRTY_PAGES,
                    0,
                ];
                let c = s.u8();
                let cmd = if c < 0xf0 {
                    CMDS[usize::from(c) % CMDS.len()]
                } else {
                    15 + u16::from(c - 0xf0) * 0x1000
                };
                let n = usize::from(s.u8());
                let p = s.bytes(n);
                self.push(message(cmd, id, 0, &p), Vec::new(), op, s, Expect::Refused);
            }
            _ => {
                const REGS: [u64; 10] = [
                    regs::CC,
                    regs::AQA,
                    regs::ASQ,
                    regs::ASQ + 4,
                    regs::ACQ,
                    regs::ACQ + 4,
                    regs::SCRATCH,
                    regs::sq_doorbell(0),
                    regs::cq_doorbell(0),
                    regs::INTX,
                ];
                let reg = REGS[usize::from(s.u8()) % REGS.len()];
                let v = s.u32();
                let mut p = le(&[reg, u64::from(BAR0_REGION), 4], &[8, 4, 4]);
                p.extend_from_slice(&v.to_le_bytes());
                self.push(
                    message(proto::REGION_WRITE, id, 0, &p),
                    Vec::new(),
                    op,
                    s,
                    Expect::Ok(16),
                );
            }
        }
    }

    fn dma_map(&mut self, s: &mut Script, op: u8, id: u16) {
        let kind = s.u8() % 10;
        let flags = u64::from(s.u8() & 0x7);
        let offset = s.sel64(|b| u64::from(b) * 4096);
        let iova = s.sel64(|b| ARENA + u64::from(b) * 4096);
        let size = s.sel64(|b| u64::from(b % 64) * 4096);
        let want_write = flags & 2 != 0;
        let ranges_ok =
            size > 0 && iova.checked_add(size).is_some() && offset.checked_add(size).is_some();
        // Whether the range lies inside the file (as long as it is now: pokes may grow it).
        let fits = |f: &File| {
            let len = f.metadata().expect("fstat").len();
            offset.checked_add(size).is_some_and(|e| e <= len)
        };
        let mut resize = None;
        let (fds, expect) = match kind {
            0 => (
                Vec::new(),
                if ranges_ok {
                    Expect::Ok(0)
                } else {
                    Expect::Refused
                },
            ),
            // Not memory.
            5 => (eventfds(1), Expect::Refused),
            // Two descriptors.
            9 => {
                let i = self.slot(s, 1);
                let f = self.slots[i]
                    .as_ref()
                    .expect("slot")
                    .file
                    .try_clone()
                    .expect("dup");
                (vec![f, sys::eventfd().expect("eventfd")], Expect::Refused)
            }
            // A read-only descriptor of client memory: mapped read-only.
            6 => {
                let i = self.slot(s, 1);
                let sl = self.slots[i].as_ref().expect("slot");
                let path = format!("/proc/self/fd/{}", sl.file.as_raw_fd());
                let ro = File::open(path).expect("reopen read-only");
                let ok = sl.sealed && ranges_ok && fits(&sl.file);
                let expect = if !ok {
                    Expect::Refused
                } else if sl.write_sealed && want_write {
                    // Which the kernel checks first, the read-only fd (EACCES: mapped
                    // read-only) or the write seal (EPERM: refused), depends on its version.
                    Expect::Any
                } else {
                    Expect::Ok(0)
                };
                (vec![ro], expect)
            }
            _ => {
                let i = self.slot(s, kind);
                let sl = self.slots[i].as_ref().expect("slot");
                // Memory sealed against writes is refused when the device is to write it.
                let ok =
                    ranges_ok && sl.sealed && fits(&sl.file) && !(sl.write_sealed && want_write);
                let len = sl.file.metadata().expect("fstat").len();
                // 3: grows after the map (allowed); 4: shrinks after the map (possible only
                // unsealed, and then the map was refused).
                resize = match kind {
                    3 => Some((i, len + 4096)),
                    4 => Some((i, len / 2)),
                    _ => None,
                };
                let f = sl.file.try_clone().expect("dup");
                (vec![f], if ok { Expect::Ok(0) } else { Expect::Refused })
            }
        };
        if trace() {
            eprintln!("  DMA_MAP kind {kind} offset {offset:#x} iova {iova:#x} size {size:#x}");
        }
        let p = le(&[32, flags, offset, iova, size], &[4, 4, 8, 8, 8]);
        self.push(message(proto::DMA_MAP, id, 0, &p), fds, op, s, expect);
        if let Some((i, len)) = resize {
            // The server maps it first; then the client changes the file under it.
            self.drain(fixture());
            let sl = self.slots[i].as_ref().expect("slot");
            let before = sl.file.metadata().expect("fstat").len();
            let r = sl.file.set_len(len);
            if len < before {
                assert_eq!(
                    r.is_ok(),
                    !sl.sealed,
                    "a file sealed against shrinking shrank"
                );
            }
        }
    }
}

/// `VFU_FUZZ_TRACE=1`: each operation's end time on stderr (to see where an input's time
/// goes).
fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("VFU_FUZZ_TRACE").is_some())
}

fn server_caps_len() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let fx = fixture();
        let m = message(proto::VERSION, 0, 0, &le(&[0, 1], &[2, 2]));
        let mut w = MemoryWire::new();
        w.push(&m, Vec::new());
        let msg = read_message(&mut w).expect("read").expect("a message");
        fx.server.handle(msg).expect("version reply").len() - HEADER_SIZE - 4
    })
}

/// After an input: the client is gone; a controller it enabled is disabled (a reset when that
/// does not work); the core must still run.
fn cleanup(fx: &Fixture) {
    let d = &fx.device;
    d.disconnect();
    let card = &d.card;
    if card.read32(regs::CC) & regs::CC_EN != 0 || card.read32(regs::CSTS) & regs::CSTS_RDY != 0 {
        card.write32(regs::CC, 0);
        let deadline = Instant::now() + Duration::from_secs(2);
        while card.read32(regs::CSTS) & regs::CSTS_RDY != 0 && Instant::now() < deadline {
            // Woken when the card has done what it was given; polled while it idles.
            if card.wait_idle(Instant::now() + Duration::from_micros(200))
                && card.read32(regs::CSTS) & regs::CSTS_RDY != 0
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if card.read32(regs::CSTS) & regs::CSTS_RDY != 0 {
            d.reset()
                .unwrap_or_else(|e| panic!("card reset after a stuck disable: {e}"));
        }
    }
    match card.core_state() {
        CoreState::Running => {}
        st => panic!(
            "the card's core stopped: {st:?}\nUART: {}",
            String::from_utf8_lossy(&card.uart())
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let _ = server_caps_len();
    let mut s = Script(data);
    let mut c = Client {
        wire: MemoryWire::new(),
        ops: Vec::new(),
        slots: Default::default(),
        next_id: 0,
        waited_ms: 0,
        resets: 0,
    };
    let mut n = 0;
    let t0 = Instant::now();
    while !s.0.is_empty() && n < 256 {
        let op = s.0[0];
        c.op(fx, &mut s);
        if trace() {
            c.drain(fx);
            eprintln!("op {:2} ({op:#04x}) done at {:?}", op & 0xf, t0.elapsed());
        }
        n += 1;
    }
    c.drain(fx);
    if trace() {
        let i = fx.device.irq.stats();
        eprintln!(
            "input done at {:?}: CSTS {:#x}, DMA {:?}, MSI-X sent {:?}",
            t0.elapsed(),
            fx.device.card.read32(regs::CSTS),
            fx.device.dma.stats(),
            i.msix_sent
        );
    }
    cleanup(fx);
});
