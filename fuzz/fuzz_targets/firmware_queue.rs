//! The firmware's queue consumer, running on the soft core inside the card
//! model, fed by a hostile host: raw I/O and admin entries, media bytes and
//! SG lists pointing at them, host memory rewritten under the card's feet,
//! and doorbells of any value on any queue.
//!
//! Properties (docs/threat-model.md, "host -> card"):
//! - no panic anywhere in the card model, the firmware never halts;
//! - without a hostile doorbell, every submitted command (I/O or admin) gets
//!   exactly one completion with a known command id and a possible SQ head,
//!   within the deadline, and no queue fault is latched (a bad entry fails
//!   only its own request);
//! - after a hostile doorbell the card may latch a queue fault or
//!   controller fatal status, but a controller reset (or else a function
//!   reset) always brings it back to serving IDENTIFY.
//!
//! The card boots once per process (boot takes the soft core ~100 ms) and
//! is reset only after a doorbell desynchronised host and card. The target
//! is bound by waiting, not by computing: after a hostile doorbell a wait
//! ends when the card has done all it would do within [`DESYNC_WAIT`]
//! ([`settle`]), and the controller disable is polled finely.
//!
//! Input: a script of operations, one opcode byte each (low 3 bits pick the
//! operation, bit 7 "relocate" points addresses into the host's buffers):
//! 0 I/O entry (64 bytes), 1 admin entry (64 bytes), 2 doorbell (3 bytes),
//! 3 poke host memory (2-byte offset, 1 length byte, data), 4 media blob
//! (2-byte length, data), 5 wait for what is outstanding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preba_card::harness::{self, HarnessError, Host};
use preba_card::{CardConfig, CoreState, HostMemory};
use preba_protocol::admin::{AdminOpcode, encode_profile};
use preba_protocol::io::SQE_SIZE;
use preba_protocol::profile::{AudioProfile, ImageProfile, Profile};
use preba_protocol::regs;
use std::cell::RefCell;
use std::time::{Duration, Instant};

const IO_QID: u16 = 1;
const IO_ENTRIES: u16 = 16;
const BLOB_LEN: usize = 64 << 10;
/// Outputs go to the upper half of the arena, above everything allocated:
/// an output running past its buffer reaches no queue, and one past the
/// arena is the card's DMA fault to report.
const OUT_BASE: u64 = harness::ARENA_BASE + harness::ARENA_SIZE as u64 / 2;
const OUT_LEN: usize = harness::ARENA_SIZE / 2;
/// Relocated output addresses land in the first part of the output half.
const OUT_WINDOW: u64 = 256 << 10;
const SCRATCH_LEN: usize = 16 << 10;
/// Deadline of every wait the card owes an answer to.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of the waits after a hostile doorbell: nothing is owed then (no
/// completion is checked), so a wait only gives late completions a chance
/// before the next entry or the recovery. Most such waits run out (the queue
/// is faulted): at 100 ms they were two thirds of the target's time.
const DESYNC_WAIT: Duration = Duration::from_millis(10);

/// Admin commands a hostile host may send here. Queue creation/deletion
/// would change which queues the harness tracks, and the firmware-update
/// commands rewrite the card's flash: both have their own tests.
const ADMIN_OPS: [AdminOpcode; 6] = [
    AdminOpcode::Identify,
    AdminOpcode::SetProfile,
    AdminOpcode::GetLog,
    AdminOpcode::SetInterruptCoalescing,
    AdminOpcode::Abort,
    AdminOpcode::GetTelemetry,
];

struct State {
    host: Host,
    blob: u64,
    out: u64,
    scratch: u64,
    /// Allocation mark below the queues, so a re-setup reuses their memory.
    rings: u64,
    next_cid: u16,
}

fn card_config() -> CardConfig {
    CardConfig {
        image_cus: 1,
        audio_cus: 1,
        norm_cus: 1,
        workers: 1,
        ..CardConfig::default()
    }
}

fn image_profile() -> Profile {
    Profile::Image(ImageProfile {
        resize: 32,
        crop: 32,
        ..ImageProfile::default()
    })
}

/// Admin queue, the two profiles and I/O queue 1 on a card that serves.
fn setup(host: &mut Host) -> Result<(), HarnessError> {
    host.enable(16)?;
    host.set_profile(0, &image_profile())?;
    host.set_profile(1, &Profile::Audio(AudioProfile::default()))?;
    host.create_io_queue(IO_QID, IO_ENTRIES, 1)
}

fn boot() -> State {
    let elf = harness::firmware_elf().unwrap_or_else(|e| panic!("firmware ELF: {e}"));
    let fw = std::fs::read(&elf).unwrap_or_else(|e| panic!("{}: {e}", elf.display()));
    let mut host = Host::new(card_config(), &fw).unwrap_or_else(|e| panic!("card: {e}"));
    host.timeout = TIMEOUT;
    host.wait_for("firmware boot (CSTS readable)", |c| {
        String::from_utf8_lossy(&c.uart()).contains("serving queues")
    })
    .unwrap_or_else(|e| panic!("boot: {e}"));
    let blob = host.alloc(BLOB_LEN).expect("blob");
    // Admin data buffers at the top of the arena: GET_LOG may write up to the whole log ring
    // (32 KiB) from any offset, which from a buffer below the rings would overwrite them.
    let scratch = harness::ARENA_BASE + harness::ARENA_SIZE as u64 - SCRATCH_LEN as u64;
    let rings = host.mark();
    setup(&mut host).unwrap_or_else(|e| panic!("setup: {e}"));
    State {
        host,
        blob,
        out: OUT_BASE,
        scratch,
        rings,
        next_cid: 0,
    }
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
    /// The last [`TRAIL_LEN`] queue events across inputs (the card carries
    /// state from one input to the next, so a failure may stem from an
    /// earlier input): printed with every strict failure.
    static TRAIL: RefCell<std::collections::VecDeque<Event>> =
        const { RefCell::new(std::collections::VecDeque::new()) };
}

const TRAIL_LEN: usize = 96;

/// One queue event of the trail: plain data, formatted only when a strict
/// failure prints the trail (every submit, completion and poke records one).
#[derive(Clone, Copy)]
enum Event {
    Input {
        len: usize,
    },
    Submit {
        qid: u16,
        cid: u16,
        op: u8,
    },
    Done {
        qid: u16,
        cid: u16,
        status: u16,
        sq_head: u16,
    },
    Settled {
        qid: u16,
        cid: u16,
        status: u16,
    },
    Doorbell {
        reg: u64,
        value: u32,
    },
    Poke {
        len: usize,
        at: u64,
    },
    Disable,
    Recovered(bool),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Event::Input { len } => write!(f, "-- input of {len} bytes"),
            Event::Submit { qid, cid, op } => write!(f, "q{qid} submit cid {cid} op {op:#x}"),
            Event::Done {
                qid,
                cid,
                status,
                sq_head,
            } => write!(f, "q{qid} done cid {cid} status {status:#x} sqh {sq_head}"),
            Event::Settled { qid, cid, status } => {
                write!(f, "q{qid} settled cid {cid} status {status:#x}")
            }
            Event::Doorbell { reg, value } => write!(f, "hostile doorbell {reg:#x} = {value}"),
            Event::Poke { len, at } => write!(f, "poke {len} bytes at {at:#x}"),
            Event::Disable => write!(f, "recovery: disable"),
            Event::Recovered(ok) => write!(f, "recovered by disable: {ok}"),
        }
    }
}

fn trail(event: Event) {
    TRAIL.with(|t| {
        let mut t = t.borrow_mut();
        if t.len() == TRAIL_LEN {
            t.pop_front();
        }
        t.push_back(event);
    });
}

fn trail_text() -> String {
    TRAIL.with(|t| {
        t.borrow()
            .iter()
            .map(Event::to_string)
            .collect::<Vec<_>>()
            .join("\n  ")
    })
}

/// Pulls `n` bytes off the script (zero-padded at its end).
fn take<'a>(data: &mut &'a [u8], n: usize) -> Vec<u8> {
    let k = n.min(data.len());
    let (a, b) = data.split_at(k);
    *data = b;
    let mut v = a.to_vec();
    v.resize(n, 0);
    v
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

fn check_core(h: &Host) {
    if let CoreState::Halted(why) = h.card.core_state() {
        panic!(
            "firmware halted ({why:?}); UART:\n{}",
            String::from_utf8_lossy(&h.card.uart())
        );
    }
}

/// Reaps queue `qid` until nothing is outstanding. In strict mode every
/// failure is a bug; otherwise the result says whether the queue drained.
fn drain(h: &mut Host, qid: u16, strict: bool) -> bool {
    if !strict {
        return settle(h, qid);
    }
    loop {
        let n = h.host_queue(qid).map_or(0, |q| q.outstanding());
        if n == 0 {
            return true;
        }
        match h.wait(qid, n) {
            Ok(cs) => {
                for c in cs {
                    trail(Event::Done {
                        qid,
                        cid: c.cid,
                        status: c.status,
                        sq_head: c.sq_head,
                    });
                }
            }
            Err(e) if strict => panic!(
                "queue {qid}: {e} (QFAULT {:#x}, CSTS {:#x}); last events:\n  {}",
                h.card.read32(regs::QFAULT),
                h.card.read32(regs::CSTS),
                trail_text()
            ),
            Err(_) => return false,
        }
    }
}

/// After a hostile doorbell nothing is owed: reaps queue `qid` until nothing
/// is outstanding, or until the card has done all it would do within
/// [`DESYNC_WAIT`] (`Card::wait_idle`: most such waits used to run out on a
/// faulted queue; now they end when the card goes idle, with no timer of the
/// firmware's due before the deadline); whether the queue drained.
fn settle(h: &mut Host, qid: u16) -> bool {
    let deadline = Instant::now() + DESYNC_WAIT;
    loop {
        if h.host_queue(qid).map_or(0, |q| q.outstanding()) == 0 {
            return true;
        }
        let idle = h.card.wait_idle(deadline);
        // A reap that took something rang the CQ head doorbell: the card may
        // post more (it may have been waiting for room).
        let took = match h.reap(qid) {
            Ok(c) => {
                for c in &c {
                    trail(Event::Settled {
                        qid,
                        cid: c.cid,
                        status: c.status,
                    });
                }
                !c.is_empty()
            }
            Err(_) => return false,
        };
        if (idle && !took) || Instant::now() >= deadline {
            return h.host_queue(qid).map_or(0, |q| q.outstanding()) == 0;
        }
    }
}

fn run(st: &mut State, mut data: &[u8]) {
    let mut desync = false;
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        let relocate = op & 0x80 != 0;
        match op & 7 {
            0 => {
                let mut e = take(&mut data, SQE_SIZE);
                if h_free(&st.host, IO_QID) == 0 && !drain(&mut st.host, IO_QID, !desync) {
                    break;
                }
                let cid = st.next_cid;
                st.next_cid = st.next_cid.wrapping_add(1);
                e[2..4].copy_from_slice(&cid.to_le_bytes());
                if relocate {
                    // SG elements (or the indirect list) into the blob, the output into its buffer.
                    for o in [24, 40] {
                        let v = st.blob + u64_at(&e, o) % BLOB_LEN as u64;
                        put_u64(&mut e, o, v);
                    }
                    let v = st.out + u64_at(&e, 8) % OUT_WINDOW;
                    put_u64(&mut e, 8, v);
                }
                let v = confine(u64_at(&e, 8), st.out, OUT_LEN);
                put_u64(&mut e, 8, v);
                let entry: [u8; SQE_SIZE] = e.try_into().expect("64 bytes");
                trail(Event::Submit {
                    qid: IO_QID,
                    cid,
                    op: entry[0],
                });
                match st.host.submit_raw(IO_QID, cid, &entry) {
                    Ok(()) => {}
                    Err(_) if desync => break,
                    Err(err) => panic!("submit: {err}"),
                }
            }
            1 => {
                let mut e = take(&mut data, SQE_SIZE);
                if h_free(&st.host, 0) == 0 && !drain(&mut st.host, 0, !desync) {
                    break;
                }
                e[0] = ADMIN_OPS[e[0] as usize % ADMIN_OPS.len()] as u8;
                let cid = st.next_cid;
                st.next_cid = st.next_cid.wrapping_add(1);
                e[2..4].copy_from_slice(&cid.to_le_bytes());
                let v = confine(u64_at(&e, 8), st.scratch, SCRATCH_LEN / 2);
                put_u64(&mut e, 8, v);
                if relocate {
                    let v = st.scratch + u64_at(&e, 8) % (SCRATCH_LEN as u64 / 2);
                    put_u64(&mut e, 8, v);
                    if e[0] == AdminOpcode::SetProfile as u8 {
                        // A well-formed profile of ours in the scratch buffer half the time.
                        let p = if e[20] & 1 == 0 {
                            image_profile()
                        } else {
                            Profile::Audio(AudioProfile::default())
                        };
                        let _ = st.host.mem.write(v, &encode_profile(&p));
                    }
                }
                let entry: [u8; SQE_SIZE] = e.try_into().expect("64 bytes");
                trail(Event::Submit {
                    qid: 0,
                    cid,
                    op: entry[0],
                });
                match st.host.submit_raw(0, cid, &entry) {
                    Ok(()) => {}
                    Err(_) if desync => break,
                    Err(err) => panic!("admin submit: {err}"),
                }
            }
            2 => {
                let b = take(&mut data, 3);
                // Answers owed so far are checked before the desync.
                if !desync {
                    drain(&mut st.host, IO_QID, true);
                    drain(&mut st.host, 0, true);
                }
                let qid = u16::from(b[0] & 3);
                let v = u32::from(u16_at(&b, 1));
                let reg = if b[0] & 4 == 0 {
                    regs::sq_doorbell(qid)
                } else {
                    regs::cq_doorbell(qid)
                };
                trail(Event::Doorbell { reg, value: v });
                st.host.card.write32(reg, v);
                desync = true;
                st.host.timeout = DESYNC_WAIT;
            }
            3 => {
                let b = take(&mut data, 3);
                let len = usize::from(b[2] % 16);
                let v = take(&mut data, len);
                let q = st.host.host_queue(IO_QID).expect("queue 1").clone();
                let off = u64::from(u16_at(&b, 0));
                let at = if relocate {
                    // Inside the blob: a poke running past its end would land in the
                    // admin SQ allocated right after it (a host corrupting its own
                    // queue, which no card can prevent: an admin entry with cid
                    // 0xffff, "unknown cid" in a strict drain, found by this target).
                    st.blob + off % (BLOB_LEN - len) as u64
                } else {
                    // Inside the I/O SQ (not running past its end into the CQ), sparing the
                    // command ids the harness tracks in every entry the poke touches.
                    let sq_len = u64::from(IO_ENTRIES) * SQE_SIZE as u64;
                    let o = (off % sq_len).min(sq_len - len as u64);
                    let (first, last) = (
                        o / SQE_SIZE as u64,
                        (o + len as u64).saturating_sub(1) / SQE_SIZE as u64,
                    );
                    let hits_cid = len > 0
                        && (first..=last).any(|k| {
                            let cid = k * SQE_SIZE as u64 + 2;
                            o < cid + 2 && cid < o + len as u64
                        });
                    if hits_cid {
                        continue;
                    }
                    q.sq_base + o
                };
                trail(Event::Poke { len: v.len(), at });
                let _ = st.host.mem.write(at, &v);
            }
            4 => {
                let b = take(&mut data, 2);
                let len = usize::from(u16_at(&b, 0)).min(data.len());
                let (blob, rest) = data.split_at(len);
                data = rest;
                let _ = st.host.mem.write(st.blob, blob);
            }
            5 => {
                if !drain(&mut st.host, IO_QID, !desync) || !drain(&mut st.host, 0, !desync) {
                    break;
                }
            }
            _ => {}
        }
        check_core(&st.host);
    }
    if !desync {
        drain(&mut st.host, IO_QID, true);
        drain(&mut st.host, 0, true);
        let fault = st.host.card.read32(regs::QFAULT);
        assert_eq!(fault, 0, "queue fault without a hostile doorbell");
        check_core(&st.host);
        return;
    }
    // Whatever the doorbells did, the card answers what it can and a reset
    // brings it back.
    // After a desync nothing is owed: drain briefly.
    st.host.timeout = DESYNC_WAIT;
    let _ = drain(&mut st.host, IO_QID, false);
    let _ = drain(&mut st.host, 0, false);
    st.host.timeout = TIMEOUT;
    check_core(&st.host);
    // Clear CC.EN and watch RDY drop at a finer grain than the harness's
    // millisecond poll (its disable() then finds the controller stopped).
    st.host.card.write32(regs::CC, 0);
    let stop = Instant::now() + Duration::from_millis(50);
    while st.host.card.read32(regs::CSTS) & (regs::CSTS_RDY | regs::CSTS_SHST) != 0
        && Instant::now() < stop
    {
        std::thread::sleep(Duration::from_micros(20));
    }
    trail(Event::Disable);
    let recovered = st.host.disable().is_ok() && {
        st.host.release(st.rings);
        setup(&mut st.host).is_ok()
    };
    trail(Event::Recovered(recovered));
    if !recovered {
        st.host
            .function_reset()
            .unwrap_or_else(|e| panic!("function reset after hostile doorbells: {e}"));
        // enable() waits (with its deadline) for the rebooted firmware's CSTS.RDY.
        st.host.release(st.rings);
        setup(&mut st.host).unwrap_or_else(|e| panic!("setup after a function reset: {e}"));
    }
    st.host
        .identify()
        .unwrap_or_else(|e| panic!("IDENTIFY after recovery: {e}"));
}

/// A buffer the card writes (output, admin data) that lands in the arena
/// goes into `base..base + len`: a host that points the card's writes at
/// its own queues corrupts itself, which no card can prevent. Addresses
/// outside the arena stay (DMA faults are the card's to handle).
fn confine(iova: u64, base: u64, len: usize) -> u64 {
    let arena = harness::ARENA_BASE..harness::ARENA_BASE + harness::ARENA_SIZE as u64;
    if arena.contains(&iova) && !(base..base + len as u64).contains(&iova) {
        base + iova % (len as u64).min(OUT_WINDOW)
    } else {
        iova
    }
}

fn h_free(h: &Host, qid: u16) -> u16 {
    h.host_queue(qid).map_or(0, |q| q.free())
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let st = s.get_or_insert_with(boot);
        trail(Event::Input { len: data.len() });
        run(st, data);
    });
});
