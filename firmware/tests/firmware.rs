//! The firmware's state machines on the host, against the card double.
mod common;

use common::*;
use preba_firmware::selftest::{JPEG_BASELINE, JPEG_PROGRESSIVE, WAV_HEADER};
use preba_protocol::admin::{AdminOpcode, AdminSqe, Identify, TELEMETRY_SIZE, Telemetry};
use preba_protocol::card::*;
use preba_protocol::fwimage::{self, BootRecord, SlotHeader, SlotState};
use preba_protocol::io::{Cqe, IoOpcode, SQE_FLAG_SG_INDIRECT, SQE_FLAG_URGENT, SgEntry, Sqe};
use preba_protocol::profile::{AudioNorm, AudioProfile, ImageProfile, Profile};
use preba_protocol::regs::QueueFault;
use preba_protocol::status::Status;

const SMALL_IMAGE: ImageProfile = ImageProfile {
    resize: 32,
    crop: 16,
    normalize: false,
    mean: [0.0; 3],
    std: [1.0; 3],
    dtype: preba_protocol::profile::Dtype::U8,
    layout: preba_protocol::profile::Layout::Nchw,
};
const SMALL_OUT: u32 = 3 * 16 * 16;

fn host() -> Host {
    host_with(Card::new(2, 1, 1))
}

fn host_with(card: Card) -> Host {
    let mut h = Host::new(card);
    h.enable();
    assert_eq!(h.create_queue(1, 16, 1).status, 0);
    assert_eq!(h.set_profile(0, &Profile::Image(SMALL_IMAGE)).status, 0);
    assert_eq!(
        h.set_profile(1, &Profile::Audio(AudioProfile::default()))
            .status,
        0
    );
    let a = AudioProfile {
        norm: AudioNorm::None,
        ..AudioProfile::default()
    };
    assert_eq!(h.set_profile(2, &Profile::Audio(a)).status, 0);
    h.fw.p.host_write(DATA, &JPEG_BASELINE);
    h.fw.p.host_write(DATA + 0x1000, &JPEG_PROGRESSIVE);
    let mut wav = vec![0u8; 244];
    wav[..44].copy_from_slice(&WAV_HEADER);
    h.fw.p.host_write(DATA + 0x2000, &wav);
    h
}

fn image(cid: u16, out: u64) -> Sqe {
    Sqe {
        opcode: IoOpcode::PreprocessImage as u8,
        cid,
        profile: 0,
        sg_count: 1,
        out_iova: out,
        out_len: SMALL_OUT,
        in_len: JPEG_BASELINE.len() as u32,
        sg: [
            SgEntry {
                iova: DATA,
                len: JPEG_BASELINE.len() as u32,
            },
            SgEntry::default(),
        ],
        ..Sqe::default()
    }
}

fn audio(cid: u16, profile: u8, out_len: u32) -> Sqe {
    Sqe {
        opcode: IoOpcode::PreprocessAudio as u8,
        cid,
        profile,
        sg_count: 1,
        out_iova: OUT,
        out_len,
        in_len: 244,
        sg: [
            SgEntry {
                iova: DATA + 0x2000,
                len: 244,
            },
            SgEntry::default(),
        ],
        ..Sqe::default()
    }
}

fn nop(cid: u16) -> Sqe {
    Sqe {
        opcode: IoOpcode::Nop as u8,
        cid,
        ..Sqe::default()
    }
}

fn st(c: &Cqe) -> Status {
    c.status()
}

fn qfault(h: &mut Host) -> Option<(u8, Option<QueueFault>)> {
    QueueFault::decode(h.card().reg(HOSTIF_QFAULT))
}

/// IDENTIFY into the admin data buffer.
fn identify_sqe() -> AdminSqe {
    AdminSqe {
        opcode: AdminOpcode::Identify as u8,
        data_iova: ADMIN_DATA,
        data_len: 128,
        ..AdminSqe::default()
    }
}

#[test]
fn boot_publishes_fwver_and_identify() {
    let mut h = host();
    assert_eq!(h.card().reg(HOSTIF_FWVER_LO), 0x9abc_def0);
    assert_eq!(h.card().reg(HOSTIF_FWVER_HI), 0x1234_5678);
    let c = h.admin_cmd(identify_sqe());
    assert_eq!(st(&c), Status::Success);
    let b: [u8; 128] = h.card().host_read(ADMIN_DATA, 128).try_into().unwrap();
    let id = Identify::parse(&b);
    assert_eq!(id.fw_build_id, 0x1234_5678_9abc_def0);
    assert_eq!((id.image_cus, id.audio_cus, id.norm_cus), (2, 1, 1));
    assert_eq!(id.card_mem_bytes, MEM_SIZE as u64);
    assert_eq!(id.clock_mhz, 100);
    assert_eq!(id.max_io_queues, 8);
    assert!(id.fw_version_str().starts_with("preba-fw"));
    // Interrupt sources it sleeps on: host, DMA, 4 CUs.
    assert_eq!(h.card().irq_enable, 0b11 | 0xf << 8);
}

/// The host's CC.EN write lands between the firmware's clear of HOSTIF_EVENTS and its read
/// of CC (posted BAR0 writes make this window easy to hit right after a reset, when the host
/// writes CC=0 and CC=EN back to back). The controller must enable once: a second, spurious
/// reset + enable on the leftover event dropped the admin doorbell the host rang as soon as it
/// saw RDY, so IDENTIFY never completed with CSTS.RDY=1 and no queue fault (found by the
/// soak, `reopening after NotReady: IDENTIFY: no completion within 5s (CSTS 0x1)`).
#[test]
fn cc_enable_racing_the_event_clear_enables_once() {
    let mut h = Host::new(Card::new(2, 1, 1));
    h.program_admin();
    let c = h.card();
    // The host's reset write (its event still pending), then EN inside the window.
    c.write_cc(0);
    c.cc_after_events_clear = Some(1);
    let mut polls = 0;
    while h.card().reg(HOSTIF_CSTS) & 1 == 0 {
        assert!(polls < 5, "never ready");
        h.run(1);
        polls += 1;
    }
    // The host rings its first admin doorbell the moment it sees RDY.
    let c = h.admin_cmd(identify_sqe());
    assert_eq!(st(&c), Status::Success);
    assert!(
        h.card().cc_after_events_clear.is_none(),
        "the window was hit"
    );
}

#[test]
fn bad_admin_config_sets_cfs_and_reset_clears_it() {
    let mut h = Host::new(Card::new(1, 0, 0));
    h.card().regs.insert(HOSTIF_AQA, 2); // SQ size 3: not a power of two
    h.card().regs.insert(HOSTIF_ASQ_LO, ASQ as u32);
    h.card().regs.insert(HOSTIF_ACQ_LO, ACQ as u32);
    h.card().write_cc(1);
    h.run(3);
    assert_eq!(h.card().reg(HOSTIF_CSTS) & 3, 2, "CFS, not RDY");
    assert_eq!(qfault(&mut h), Some((0, Some(QueueFault::BadAdminConfig))));
    h.card().write_cc(0);
    h.run(2);
    assert_eq!(h.card().reg(HOSTIF_CSTS), 0);
    assert_eq!(h.card().reg(HOSTIF_QFAULT), 0);
    h.enable();
}

#[test]
fn create_queue_validation() {
    let mut h = host();
    assert_eq!(st(&h.create_queue(0, 16, 0)), Status::InvalidField);
    assert_eq!(st(&h.create_queue(9, 16, 0)), Status::InvalidField);
    assert_eq!(
        st(&h.create_queue(1, 16, 1)),
        Status::InvalidField,
        "exists"
    );
    assert_eq!(st(&h.create_queue(2, 3, 1)), Status::InvalidField);
    assert_eq!(st(&h.create_queue(2, 16, 16)), Status::InvalidField);
    assert_eq!(st(&h.create_queue(2, 16, 2)), Status::Success);
    // Unknown admin opcode and a reserved byte.
    let mut b = AdminSqe::default().encode();
    b[0] = 0x7f;
    b[2] = 99;
    h.fw.p.host_write(ASQ + h.admin.tail as u64 * 64, &b);
    h.admin.tail += 1;
    let t = h.admin.tail as u32;
    h.card().sq_doorbell(0, t);
    let c = h.collect(0, 1, 10);
    assert_eq!((c[0].cid, st(&c[0])), (99, Status::InvalidOpcode));
}

#[test]
fn image_request_end_to_end() {
    let mut h = host();
    h.submit(1, &image(42, OUT));
    let c = h.collect(1, 1, 50);
    assert_eq!(c.len(), 1);
    let c = c[0];
    assert_eq!(st(&c), Status::Success);
    assert_eq!((c.cid, c.sq_id, c.sq_head), (42, 1, 1));
    assert_eq!((c.result0, c.result1), (500, 375));
    assert_eq!(c.written, SMALL_OUT);
    assert_eq!(c.cycles, 1000);
    let out = h.card().host_read(OUT, SMALL_OUT as usize);
    let want: Vec<u8> = (0..SMALL_OUT)
        .map(|k| (k ^ JPEG_BASELINE.len() as u32) as u8)
        .collect();
    assert_eq!(out, want);
    assert!(h.card().triggers.contains(&1), "MSI-X vector 1");
    assert_eq!(h.card().cus[0].starts, 1);
    // Card memory all returned.
    assert_eq!(h.fw.p.dma_fault, 0);
}

#[test]
fn sqe_errors_fail_only_their_request() {
    let mut h = host();
    let mut bad_op = nop(1).encode();
    bad_op[0] = 0x55;
    h.submit_raw(1, bad_op);
    let mut rsvd = nop(2).encode();
    rsvd[57] = 1;
    h.submit_raw(1, rsvd);
    let mut empty_slot = image(3, OUT);
    empty_slot.profile = 7;
    h.submit(1, &empty_slot);
    let mut wrong_kind = image(4, OUT);
    wrong_kind.profile = 1;
    h.submit(1, &wrong_kind);
    let mut big = image(5, OUT);
    big.sg_count = 2;
    big.sg = [
        SgEntry {
            iova: DATA,
            len: 64 << 20,
        },
        SgEntry { iova: DATA, len: 1 },
    ];
    big.in_len = (64 << 20) + 1;
    h.submit(1, &big);
    let mut sum = image(6, OUT);
    sum.in_len += 1;
    h.submit(1, &sum);
    h.submit(1, &nop(7));
    let mut c = h.collect(1, 7, 50);
    c.sort_by_key(|c| c.cid);
    let got: Vec<(u16, Status)> = c.iter().map(|c| (c.cid, st(c))).collect();
    assert_eq!(
        got,
        vec![
            (1, Status::InvalidOpcode),
            (2, Status::InvalidField),
            (3, Status::InvalidField),
            (4, Status::InvalidField),
            (5, Status::InputTooLarge),
            (6, Status::InvalidField),
            (7, Status::Success),
        ]
    );
    assert_eq!(qfault(&mut h), None);
}

#[test]
fn bad_sq_doorbell_is_a_sticky_queue_fault() {
    let mut h = host();
    assert_eq!(h.create_queue(2, 16, 2).status, 0);
    h.card().sq_doorbell(1, 16);
    h.run(5);
    assert_eq!(
        qfault(&mut h),
        Some((1, Some(QueueFault::SqDoorbellOutOfRange)))
    );
    // Queue 1 stopped; queue 2 still serves.
    h.submit(2, &nop(9));
    let c = h.collect(2, 1, 20);
    assert_eq!((c[0].cid, st(&c[0])), (9, Status::Success));
    h.card().sq_doorbell(1, 1);
    h.run(5);
    assert!(h.reap(1).is_empty());
    // The first fault stays latched.
    h.card().sq_doorbell(5, 1);
    h.run(2);
    assert_eq!(
        qfault(&mut h),
        Some((1, Some(QueueFault::SqDoorbellOutOfRange)))
    );
}

#[test]
fn sq_doorbell_wraps_the_ring() {
    let mut h = host();
    // Announce 3 entries whose fetch we hold off by not running the firmware.
    h.card().sq_doorbell(1, 3);
    h.card().sq_doorbell(1, 2);
    h.run(3);
    // The firmware saw only the latest value (2) and fetched 2 zeroed NOPs...
    let c = h.collect(1, 2, 10);
    assert_eq!(c.len(), 2);
    // A tail "behind" the head is a wrap: it announces 15 entries, not a fault.
    h.card().sq_doorbell(1, 1);
    let c = h.collect(1, 15, 50);
    assert_eq!(c.len(), 15);
    assert_eq!(c.last().unwrap().sq_head, 1);
    assert_eq!(qfault(&mut h), None);
}

#[test]
fn bad_cq_doorbell_and_unknown_queue() {
    let mut h = host();
    h.card().cq_doorbell(1, 5);
    h.run(3);
    assert_eq!(
        qfault(&mut h),
        Some((1, Some(QueueFault::CqDoorbellOutOfRange)))
    );
    let mut h = host();
    h.card().sq_doorbell(4, 1);
    h.run(3);
    assert_eq!(qfault(&mut h), Some((4, Some(QueueFault::NoSuchQueue))));
    // The admin queue still works.
    assert_eq!(h.create_queue(4, 16, 4).status, 0);
}

#[test]
fn bad_admin_doorbell_stops_the_controller() {
    let mut h = host();
    h.card().sq_doorbell(0, 100);
    h.run(3);
    assert_eq!(h.card().reg(HOSTIF_CSTS) & 2, 2, "CFS");
    assert_eq!(
        qfault(&mut h),
        Some((0, Some(QueueFault::SqDoorbellOutOfRange)))
    );
    let wfi = h.card().wfi_calls;
    h.run(20);
    assert!(h.card().wfi_calls >= wfi + 19, "sleeps, does not spin");
}

#[test]
fn dma_faults_fail_the_request() {
    let mut h = host();
    let mut r = image(1, OUT);
    r.sg[0].iova = 0x9000_0000;
    h.submit(1, &r);
    h.submit(1, &image(2, 0x7000_0000));
    let mut c = h.collect(1, 2, 50);
    c.sort_by_key(|c| c.cid);
    assert_eq!(st(&c[0]), Status::DmaFault);
    assert_eq!(st(&c[1]), Status::DmaFault);
    assert_eq!(qfault(&mut h), None);
}

#[test]
fn sq_fetch_fault() {
    let mut h = host();
    let c = h.admin_cmd(AdminSqe {
        opcode: AdminOpcode::CreateIoQueuePair as u8,
        data_iova: 0x7000_0000,
        data_len: 1024,
        cdw: [3 | 15 << 16, ACQ as u32 + 0x800, 0, 3 | 1 << 16, 0, 0],
        ..AdminSqe::default()
    });
    assert_eq!(st(&c), Status::Success);
    h.card().sq_doorbell(3, 1);
    h.run(3);
    assert_eq!(qfault(&mut h), Some((3, Some(QueueFault::SqFetchFault))));
}

#[test]
fn full_cq_keeps_completions_pending() {
    let mut h = host();
    assert_eq!(h.create_queue(2, 4, 2).status, 0);
    for i in 0..3 {
        h.submit(2, &nop(i));
    }
    h.run(5);
    for i in 3..6 {
        h.submit(2, &nop(i));
    }
    h.run(5);
    let first = h.reap(2);
    assert_eq!(first.len(), 3, "CQ of 4 holds 3");
    let rest = h.collect(2, 3, 20);
    let mut cids: Vec<u16> = first.iter().chain(&rest).map(|c| c.cid).collect();
    cids.sort();
    assert_eq!(cids, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(rest.last().unwrap().sq_head, 6 % 4);
}

#[test]
fn interrupt_coalescing() {
    let mut h = host();
    let c = h.admin_cmd(AdminSqe {
        opcode: AdminOpcode::SetInterruptCoalescing as u8,
        cdw: [1000 | 4 << 16, 1, 0, 0, 0, 0],
        ..AdminSqe::default()
    });
    assert_eq!(st(&c), Status::Success);
    let v1 = |h: &mut Host| h.card().triggers.iter().filter(|&&v| v == 1).count();
    for i in 0..4 {
        h.submit(1, &nop(i));
    }
    h.run(3);
    assert_eq!(v1(&mut h), 1, "one interrupt for 4 completions");
    let _ = h.reap(1);
    let t0 = h.card().now;
    for i in 4..6 {
        h.submit(1, &nop(i));
    }
    h.run(1);
    assert_eq!(v1(&mut h), 1, "under the count: waits");
    for _ in 0..20 {
        h.run(1);
        if v1(&mut h) == 2 {
            break;
        }
    }
    assert_eq!(v1(&mut h), 2, "time limit fired");
    assert!(h.card().now >= t0 + 10_000, "after 1000 us");
    let _ = h.reap(1);
    let mut u = nop(9);
    u.flags = SQE_FLAG_URGENT;
    h.submit(1, &u);
    h.run(1);
    assert_eq!(v1(&mut h), 3, "URGENT bypasses coalescing");
}

#[test]
fn watchdog_resets_a_stuck_cu() {
    let mut card = Card::new(1, 0, 0);
    card.cus[0].mode = CuMode::Stuck;
    let mut h = host_with(card);
    h.submit(1, &image(1, OUT));
    let c = h.collect(1, 1, 100);
    assert_eq!(st(&c[0]), Status::Internal);
    assert!(h.card().now >= preba_firmware::fw::WD_BASE_TICKS);
    assert!(h.card().cus[0].resets >= 2, "boot reset + watchdog reset");
    // Telemetry counts the reset.
    let c = h.admin_cmd(AdminSqe {
        opcode: AdminOpcode::GetTelemetry as u8,
        data_iova: ADMIN_DATA,
        data_len: TELEMETRY_SIZE as u32,
        ..AdminSqe::default()
    });
    assert_eq!(st(&c), Status::Success);
    let b: [u8; TELEMETRY_SIZE] = h
        .card()
        .host_read(ADMIN_DATA, TELEMETRY_SIZE)
        .try_into()
        .unwrap();
    let t = Telemetry::parse(&b);
    assert_eq!(t.cus[0].resets, 1);
    assert_eq!(t.errors, 1);
    // The CU works again afterwards.
    h.card().cus[0].mode = CuMode::Normal;
    h.submit(1, &image(2, OUT));
    let c = h.collect(1, 1, 50);
    assert_eq!(st(&c[0]), Status::Success);
}

#[test]
fn cu_error_status_is_the_request_status() {
    let mut card = Card::new(1, 0, 0);
    card.cus[0].mode = CuMode::Fail(Status::CorruptInput as u32);
    let mut h = host_with(card);
    h.submit(1, &image(1, OUT));
    let c = h.collect(1, 1, 50);
    assert_eq!(st(&c[0]), Status::CorruptInput);
}

#[test]
fn flush_completes_after_earlier_commands() {
    let mut h = host();
    h.submit(1, &image(1, OUT));
    h.submit(
        1,
        &Sqe {
            opcode: IoOpcode::Flush as u8,
            cid: 2,
            ..Sqe::default()
        },
    );
    h.submit(1, &nop(3));
    let c = h.collect(1, 3, 50);
    let order: Vec<u16> = c.iter().map(|c| c.cid).collect();
    assert_eq!(order, vec![3, 1, 2]);
    assert!(c.iter().all(|c| st(c) == Status::Success));
}

#[test]
fn abort_in_flight_and_unknown() {
    let mut card = Card::new(1, 0, 0);
    card.cus[0].mode = CuMode::Stuck;
    let mut h = host_with(card);
    h.submit(1, &image(7, OUT));
    h.submit(1, &image(8, OUT + 0x1000)); // waits for the CU
    h.run(3);
    let abort = |h: &mut Host, cid: u32| {
        h.admin_cmd(AdminSqe {
            opcode: AdminOpcode::Abort as u8,
            cdw: [1 | cid << 16, 0, 0, 0, 0, 0],
            ..AdminSqe::default()
        })
    };
    let a = abort(&mut h, 8);
    assert_eq!((st(&a), a.result0), (Status::Success, 0));
    let a = abort(&mut h, 7);
    assert_eq!((st(&a), a.result0), (Status::Success, 0));
    let a = abort(&mut h, 99);
    assert_eq!(a.result0, 1);
    let mut c = h.collect(1, 2, 20);
    c.sort_by_key(|c| c.cid);
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|c| st(c) == Status::Aborted));
    assert_eq!(h.card().cus[0].status, 0, "CU reset");
}

#[test]
fn cc_reset_while_busy_drops_everything() {
    let mut card = Card::new(1, 0, 0);
    card.cus[0].latency = 30_000_000; // 3 s: under the watchdog
    let mut h = host_with(card);
    h.submit(1, &image(1, OUT));
    h.submit(1, &image(2, OUT));
    h.run(2);
    assert_eq!(h.card().cus[0].status, 1);
    h.card().write_cc(0);
    h.run(3);
    assert_eq!(h.card().reg(HOSTIF_CSTS), 0);
    assert_eq!(h.card().cus[0].status, 0, "CU reset");
    h.run(20);
    assert!(h.reap(1).is_empty(), "queues deleted: nothing posted");
    // A fresh controller: queues and profiles are gone, setup works again.
    h.io.clear();
    h.admin = HostQueue::new(0, ADMIN_SIZE, ASQ, ACQ);
    h.card().host[..0x2000].fill(0);
    h.enable();
    assert_eq!(h.create_queue(1, 16, 1).status, 0);
    h.submit(1, &image(3, OUT));
    let c = h.collect(1, 1, 20);
    assert_eq!(
        st(&c[0]),
        Status::InvalidField,
        "profile slot empty after reset"
    );
}

#[test]
fn jpeg_probe_statuses() {
    let mut h = host();
    let mut p = image(1, OUT);
    p.sg[0].iova = DATA + 0x1000;
    h.submit(1, &p);
    let mut w = image(2, OUT);
    w.sg[0].iova = DATA + 0x2000; // a WAV file
    h.submit(1, &w);
    let mut small = image(3, OUT);
    small.out_len = SMALL_OUT - 1;
    h.submit(1, &small);
    let mut c = h.collect(1, 3, 50);
    c.sort_by_key(|c| c.cid);
    assert_eq!(st(&c[0]), Status::UnsupportedFormat);
    assert_eq!(st(&c[1]), Status::CorruptInput);
    assert_eq!(st(&c[2]), Status::OutputTooSmall);
    assert_eq!(
        h.card().cus[0].starts + h.card().cus[1].starts,
        0,
        "no CU programmed"
    );
}

#[test]
fn audio_mel_then_normalize() {
    let mut h = host();
    let mel = h.card().mel_bytes;
    h.submit(1, &audio(1, 1, mel));
    h.submit(1, &audio(2, 2, mel));
    h.submit(1, &audio(3, 2, mel - 4));
    let mut c = h.collect(1, 3, 50);
    c.sort_by_key(|c| c.cid);
    assert_eq!(
        (st(&c[0]), c[0].written, c[0].cycles),
        (Status::Success, mel, 2000)
    );
    assert_eq!((c[0].result0, c[0].result1), (16_000, 16_000));
    assert_eq!((st(&c[1]), c[1].cycles), (Status::Success, 1000));
    assert_eq!(st(&c[2]), Status::OutputTooSmall);
    assert_eq!(h.card().cus[3].starts, 1, "normalize CU once");
}

#[test]
fn indirect_sg_lists() {
    let mut h = host();
    let n = JPEG_BASELINE.len() as u32;
    let list = [
        SgEntry {
            iova: DATA,
            len: 10,
        },
        SgEntry {
            iova: DATA + 10,
            len: 20,
        },
        SgEntry {
            iova: DATA + 30,
            len: n - 30,
        },
    ];
    let mut bytes = Vec::new();
    for e in &list {
        bytes.extend_from_slice(&e.encode());
    }
    h.card().host_write(DATA + 0x3000, &bytes);
    let mut r = image(1, OUT);
    r.flags = SQE_FLAG_SG_INDIRECT;
    r.sg_count = 3;
    r.sg[0] = SgEntry {
        iova: DATA + 0x3000,
        len: 48,
    };
    h.submit(1, &r);
    let mut bad = r;
    bad.cid = 2;
    bad.in_len = n + 1;
    h.submit(1, &bad);
    let mut c = h.collect(1, 2, 50);
    c.sort_by_key(|c| c.cid);
    assert_eq!(st(&c[0]), Status::Success);
    assert_eq!(st(&c[1]), Status::InvalidField);
}

#[test]
fn card_memory_waits_and_never_fits() {
    let mut card = Card::new(1, 0, 0);
    card.cus[0].latency = 50_000;
    let heap = 1 << 20;
    card.regs
        .insert(INFO_CARD_MEM_SIZE, preba_firmware::fw::HEAP_OFFSET + heap);
    let mut h = host_with(card);
    // Each request claims 60 % of the heap: the second waits for the first.
    let mut a = image(1, OUT);
    a.sg[0].len = heap / 10 * 6;
    a.in_len = a.sg[0].len;
    // The input is mostly zeros after the JPEG header: the probe only walks markers.
    let mut b = a;
    b.cid = 2;
    h.submit(1, &a);
    h.submit(1, &b);
    let mut huge = image(3, OUT);
    huge.sg[0].len = heap + 1;
    huge.in_len = heap + 1;
    h.submit(1, &huge);
    let mut c = h.collect(1, 3, 100);
    c.sort_by_key(|c| c.cid);
    assert_eq!(st(&c[0]), Status::Success);
    assert_eq!(st(&c[1]), Status::Success);
    assert_eq!(st(&c[2]), Status::InputTooLarge);
}

#[test]
fn delete_queue_aborts_in_flight() {
    let mut card = Card::new(1, 0, 0);
    card.cus[0].mode = CuMode::Stuck;
    let mut h = host_with(card);
    h.submit(1, &image(1, OUT));
    h.run(3);
    let c = h.admin_cmd(AdminSqe {
        opcode: AdminOpcode::DeleteIoQueuePair as u8,
        cdw: [1, 0, 0, 0, 0, 0],
        ..AdminSqe::default()
    });
    assert_eq!(st(&c), Status::Success);
    let c = h.reap(1);
    assert_eq!((c[0].cid, st(&c[0])), (1, Status::Aborted));
    h.card().sq_doorbell(1, 2);
    h.run(2);
    assert_eq!(qfault(&mut h), Some((1, Some(QueueFault::NoSuchQueue))));
}

#[test]
fn get_log_copies_from_the_ring() {
    let mut h = host();
    for k in 0..4u32 {
        h.card().regs.insert(
            LOG_RING_BASE + 4 * k,
            u32::from_le_bytes([1, 2, 3, 4].map(|b| b + 4 * k as u8)),
        );
    }
    h.card().regs.insert(LOG_HEAD, 13);
    let c = h.admin_cmd(AdminSqe {
        opcode: AdminOpcode::GetLog as u8,
        data_iova: ADMIN_DATA,
        data_len: 100,
        cdw: [2, 0, 0, 0, 0, 0],
        ..AdminSqe::default()
    });
    assert_eq!((st(&c), c.result0, c.result1), (Status::Success, 11, 13));
    assert_eq!(
        h.card().host_read(ADMIN_DATA, 11),
        (3..=13).collect::<Vec<u8>>()
    );
}

#[test]
fn telemetry_reports_power_and_cu_counters() {
    let mut h = host();
    h.submit(1, &image(1, OUT));
    h.collect(1, 1, 20);
    h.run(30); // let time pass for energy
    let c = h.admin_cmd(AdminSqe {
        opcode: AdminOpcode::GetTelemetry as u8,
        data_iova: ADMIN_DATA,
        data_len: TELEMETRY_SIZE as u32,
        ..AdminSqe::default()
    });
    assert_eq!(st(&c), Status::Success);
    let b: [u8; TELEMETRY_SIZE] = h
        .card()
        .host_read(ADMIN_DATA, TELEMETRY_SIZE)
        .try_into()
        .unwrap();
    let t = Telemetry::parse(&b);
    assert_eq!(t.power_mw, 25_000);
    assert!(t.energy_uj > 0);
    assert_eq!(t.cu_count, 4);
    assert_eq!((t.cus[0].kind, t.cus[2].kind, t.cus[3].kind), (0, 1, 2));
    assert_eq!(
        (t.cus[0].requests, t.cus[0].busy_cycles, t.cus[0].energy_uj),
        (1, 1000, 5)
    );
    assert_eq!(t.requests, 1);
    assert!(t.uptime_cycles > 0);
    assert_eq!(h.card().ina_cal, 2560, "calibrated at boot");
}

#[test]
fn firmware_download_and_commit() {
    let mut h = host();
    let image: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 256) as u8).collect();
    let crc = preba_firmware::crc::crc32(&image);
    for (k, chunk) in image.chunks(4096).enumerate() {
        h.card().host_write(ADMIN_DATA, chunk);
        let c = h.admin_cmd(AdminSqe {
            opcode: AdminOpcode::FirmwareDownload as u8,
            data_iova: ADMIN_DATA,
            data_len: chunk.len() as u32,
            cdw: [k as u32 * 4096, 0, 0, 0, 0, 0],
            ..AdminSqe::default()
        });
        assert_eq!(st(&c), Status::Success);
    }
    let commit = |h: &mut Host, crc: u32| {
        h.admin_cmd(AdminSqe {
            opcode: AdminOpcode::FirmwareCommit as u8,
            cdw: [5000, crc, 0x5566_7788, 0x1122_3344, 0, 0],
            ..AdminSqe::default()
        })
    };
    let activate = |h: &mut Host, slot: u32| {
        h.admin_cmd(AdminSqe {
            opcode: AdminOpcode::FirmwareActivate as u8,
            cdw: [slot, 0, 0, 0, 0, 0],
            ..AdminSqe::default()
        })
    };
    let c = commit(&mut h, crc ^ 1);
    assert_eq!((st(&c), c.result0), (Status::InvalidField, crc));
    // Slot B is empty: nothing to activate.
    let c = activate(&mut h, 1);
    assert_eq!(
        (st(&c), c.result1),
        (Status::InvalidField, SlotState::Empty as u32)
    );
    // The card runs slot A (INFO_BOOT 0): the image goes to slot B.
    let c = commit(&mut h, crc);
    assert_eq!((st(&c), c.result0, c.result1), (Status::Success, crc, 1));
    let f = h.card().flash.clone();
    let base = fwimage::SLOT_BASE[1] as usize;
    let img = base + fwimage::IMAGE_OFFSET as usize;
    assert_eq!(&f[img..img + 5000], &image[..]);
    let hdr = SlotHeader::parse(&f[base..base + fwimage::HEADER_SIZE].try_into().unwrap())
        .expect("valid header");
    assert_eq!(
        (hdr.len, hdr.crc, hdr.build_id, hdr.state()),
        (5000, crc, 0x1122_3344_5566_7788, SlotState::New)
    );
    assert!(f[..16].iter().all(|&b| b == 0xFF), "not active yet");
    let c = activate(&mut h, 1);
    assert_eq!((st(&c), c.result0), (Status::Success, 1));
    let rec = BootRecord::parse(&h.card().flash[..16].try_into().unwrap()).expect("record");
    assert_eq!(rec.active, 1);
    let c = activate(&mut h, 2);
    assert_eq!(st(&c), Status::InvalidField);
    // A flipped image byte fails activation's CRC check.
    h.card().flash[img + 100] ^= 0x40;
    let c = activate(&mut h, 1);
    assert_eq!(
        (st(&c), c.result1),
        (Status::InvalidField, SlotState::Invalid as u32)
    );
    // Running slot B: the next image goes to slot A.
    h.card().regs.insert(INFO_BOOT, 1);
    let c = commit(&mut h, crc);
    assert_eq!((st(&c), c.result1), (Status::Success, 0));
    let c = h.admin_cmd(identify_sqe());
    assert_eq!(st(&c), Status::Success);
    let b: [u8; 128] = h.card().host_read(ADMIN_DATA, 128).try_into().unwrap();
    let id = Identify::parse(&b);
    assert_eq!((id.running_slot, id.active_slot), (1, 1));
    assert_eq!(id.slot_state, [SlotState::New as u8, SlotState::New as u8]);
    assert_eq!(id.slot_build_id[0], 0x1122_3344_5566_7788);
    // Out of the staging area.
    let c = h.admin_cmd(AdminSqe {
        opcode: AdminOpcode::FirmwareDownload as u8,
        data_iova: ADMIN_DATA,
        data_len: 16,
        cdw: [preba_firmware::fw::FW_MAX - 8, 0, 0, 0, 0, 0],
        ..AdminSqe::default()
    });
    assert_eq!(st(&c), Status::InvalidField);
}

#[test]
fn heartbeat_led_blinks_while_idle() {
    let mut h = host();
    let mut seen = [false; 2];
    for _ in 0..10 {
        h.run(1);
        seen[(h.card().reg(GPIO_OUT) & 1) as usize] = true;
    }
    assert_eq!(seen, [true, true]);
    assert_eq!(h.card().reg(GPIO_OUT) & 2, 0, "no error LED");
}

#[test]
fn cc_toggle_between_polls_resets() {
    let mut h = host();
    // EN 1 -> 0 -> 1 before the firmware polls: only the CC event tells.
    h.card().write_cc(0);
    h.card().write_cc(1);
    h.run(2);
    assert_eq!(h.card().reg(HOSTIF_CSTS) & 1, 1, "RDY again");
    h.admin = HostQueue::new(0, ADMIN_SIZE, ASQ, ACQ);
    h.card().host[..0x2000].fill(0);
    // Queue 1 was deleted by the reset: it can be created again.
    assert_eq!(h.create_queue(1, 16, 1).status, 0);
}

#[test]
fn stopped_queue_releases_its_slots() {
    let mut card = Card::new(1, 0, 0);
    card.cus[0].mode = CuMode::Stuck;
    let mut h = host_with(card);
    assert_eq!(h.create_queue(2, 16, 2).status, 0);
    h.submit(1, &image(1, OUT));
    h.run(2);
    assert_eq!(h.card().cus[0].status, 1);
    h.card().cq_doorbell(1, 9);
    h.run(2);
    assert_eq!(
        qfault(&mut h),
        Some((1, Some(QueueFault::CqDoorbellOutOfRange)))
    );
    assert_eq!(h.card().cus[0].status, 0, "its CU job was aborted");
    h.card().cus[0].mode = CuMode::Normal;
    let mut r = image(2, OUT);
    r.cid = 2;
    h.submit(2, &r);
    let c = h.collect(2, 1, 20);
    assert_eq!(st(&c[0]), Status::Success);
    assert!(h.reap(1).is_empty());
}
