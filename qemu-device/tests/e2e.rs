//! The firmware ELF on the soft core inside the card model, with the harness as the host:
//! outputs bit-identical to the golden model, mixed workloads, hostile entries.

mod common;

use std::collections::HashMap;

use common::*;
use preba_card::harness::Host;
use preba_preprocess::{audio, image};
use preba_protocol::admin::{AdminOpcode, AdminSqe};
use preba_protocol::io::{IoOpcode, SgEntry, Sqe};
use preba_protocol::media;
use preba_protocol::profile::{AudioNorm, ImageProfile};
use preba_protocol::regs::{self, QueueFault};
use preba_protocol::status::Status;

/// What the card must answer for an image: the golden model's bytes or status.
/// The firmware probes the header first (preba_protocol::media, as docs/card-spec.md says)
/// and only then programs a CU running the golden model.
fn expect_image(input: &[u8], p: &ImageProfile) -> Result<Vec<u8>, Status> {
    let mut src = input;
    media::probe_jpeg(&mut src)
        .and_then(|h| h.card_check())
        .map_err(|e| e.status())?;
    image::card_preprocess_image(input, p)
        .map(|o| o.data)
        .map_err(|e| e.status())
}

fn expect_audio(input: &[u8], norm: AudioNorm) -> Result<Vec<u8>, Status> {
    let mut src = input;
    media::probe_wav(&mut src).map_err(|e| e.status())?;
    let p = audio(norm);
    let mut out = audio::log_mel(input, &p).map_err(|e| e.status())?;
    if norm == AudioNorm::PerFeature {
        audio::normalize(&mut out.features);
    }
    Ok(out
        .features
        .data
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect())
}

fn check(name: &str, input: &[u8], got: (Status, Vec<u8>), want: Result<Vec<u8>, Status>) {
    match want {
        Ok(bytes) => {
            assert_eq!(got.0, Status::Success, "{name}: status");
            assert!(
                got.1 == bytes,
                "{name}: output differs from the golden model ({} vs {} bytes)",
                got.1.len(),
                bytes.len()
            );
        }
        Err(_) if input.is_empty() => {
            assert_ne!(got.0, Status::Success, "{name}: empty input succeeded");
        }
        Err(s) => assert_eq!(got.0, s, "{name}: status"),
    }
}

#[test]
fn boots_and_identifies() {
    let _serial = serial();
    let mut h = Host::new(config(), firmware()).expect("card");
    wait_boot(&h);
    h.enable(8).expect("enable");
    let id = h.identify().expect("identify");
    assert_eq!((id.image_cus, id.audio_cus, id.norm_cus), (2, 1, 1));
    assert_eq!(id.card_mem_bytes, u64::from(config().card_mem_bytes));
    assert_eq!(id.fw_build_id, h.card.read64(regs::FWVER));
    assert_ne!(id.fw_build_id, 0);
}

/// `Card::wait_idle` (what the fuzz harnesses wait for instead of sleeping): true once the
/// card has done what it was given, false while its work or a timer is still due.
#[test]
fn wait_idle_ends_when_the_card_has_nothing_to_do() {
    use std::time::{Duration, Instant};
    let _serial = serial();
    let mut h = Host::new(config(), firmware()).expect("card");
    wait_boot(&h);
    // Idle with no timer within the next millisecond (the firmware's nearest, the heartbeat,
    // is half a second apart): true within a few such windows.
    let settles =
        |h: &Host| (0..5000).any(|_| h.card.wait_idle(Instant::now() + Duration::from_millis(1)));
    assert!(settles(&h), "idle after boot");
    // CC.EN kicks the core: once it is idle again it has set CSTS.RDY.
    h.enable(8).expect("enable");
    assert!(settles(&h));
    assert_ne!(h.card.read32(regs::CSTS) & regs::CSTS_RDY, 0);
    h.identify().expect("identify");
    assert!(settles(&h));
    // The heartbeat (every half second) is a firmware timer: within a window that holds
    // one, the card is not idle for the whole window.
    let t = Instant::now();
    assert!(
        !h.card.wait_idle(t + Duration::from_secs(2)) || t.elapsed() >= Duration::from_millis(400)
    );
    h.disable().expect("disable");
    assert!(settles(&h));
    assert_eq!(h.card.read32(regs::CSTS) & regs::CSTS_RDY, 0);
}

#[test]
fn images_match_golden_model() {
    let _serial = serial();
    let mut h = booted(config());
    for (name, input) in image_fixtures() {
        if input.len() > 8 << 20 {
            continue; // the huge_* headers are probed, not decoded: still submitted below
        }
        for (slot, p) in [(IMG_U8, img_u8()), (IMG_F32, img_f32())] {
            let want = expect_image(&input, &p);
            let out_len = p.output_len() as u32;
            let (c, data) = h
                .run_one(1, IoOpcode::PreprocessImage, slot, &input, out_len)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check(
                &format!("{name} slot {slot}"),
                &input,
                (c.status(), data),
                want,
            );
        }
    }
}

#[test]
fn audio_matches_golden_model() {
    let _serial = serial();
    let mut h = booted(config());
    for (name, input) in audio_fixtures() {
        for (slot, norm) in [
            (AUDIO_NORM, AudioNorm::PerFeature),
            (AUDIO_RAW, AudioNorm::None),
        ] {
            let want = expect_audio(&input, norm);
            let out_len = match &want {
                Ok(b) => b.len() as u32,
                Err(_) => 1 << 20,
            };
            let (c, data) = h
                .run_one(1, IoOpcode::PreprocessAudio, slot, &input, out_len.max(4))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check(
                &format!("{name} slot {slot}"),
                &input,
                (c.status(), data),
                want,
            );
        }
    }
}

/// (fixture, expected output or status, output IOVA, output capacity) per (queue, cid).
type Expected = (String, Result<Vec<u8>, Status>, u64, u32);

#[test]
fn mixed_workload_completes_exactly_once() {
    let _serial = serial();
    let mut h = booted(config());
    let images: Vec<_> = image_fixtures()
        .into_iter()
        .filter(|(_, b)| !b.is_empty() && b.len() < 1 << 20)
        .collect();
    let audios: Vec<_> = audio_fixtures()
        .into_iter()
        .filter(|(_, b)| !b.is_empty())
        .take(12)
        .collect();
    // Expected results, keyed by (queue, cid).
    let mut want: HashMap<(u16, u16), Expected> = HashMap::new();
    let mut cid = 0u16;
    let mut pending = 0usize;
    let rounds = 2;
    for _ in 0..rounds {
        for (i, (name, input)) in images.iter().chain(audios.iter()).enumerate() {
            let is_audio = name.ends_with(".wav");
            let qid = 1 + (i % 2) as u16;
            let (op, slot, w, out_len) = if is_audio {
                let w = expect_audio(input, AudioNorm::PerFeature);
                let len = w.as_ref().map_or(1 << 20, |b| b.len().max(4));
                (IoOpcode::PreprocessAudio, AUDIO_NORM, w, len as u32)
            } else {
                let p = img_u8();
                (
                    IoOpcode::PreprocessImage,
                    IMG_U8,
                    expect_image(input, &p),
                    p.output_len() as u32,
                )
            };
            let inp = h.put(input).expect("put");
            let out = h.alloc(out_len as usize).expect("alloc");
            while h.host_queue(qid).expect("queue").free() == 0 {
                for c in h.wait(qid, 1).expect("drain") {
                    pending -= 1;
                    let (name, w, out, len) = want.remove(&(qid, c.cid)).expect("known cid");
                    let data = h.get(out, c.written.min(len) as usize).expect("get");
                    check(&name, b"x", (c.status(), data), w);
                }
            }
            let sqe = Host::request(op, cid, slot, (inp, input.len() as u32), (out, out_len));
            h.submit(qid, &sqe).expect("submit");
            want.insert((qid, cid), (name.clone(), w, out, out_len));
            cid = cid.wrapping_add(1);
            pending += 1;
        }
    }
    for qid in [1u16, 2] {
        let n = want.keys().filter(|k| k.0 == qid).count();
        for c in h.wait(qid, n).expect("completions") {
            pending -= 1;
            let (name, w, out, len) = want.remove(&(qid, c.cid)).expect("known cid");
            let data = h.get(out, c.written.min(len) as usize).expect("get");
            check(&name, b"x", (c.status(), data), w);
        }
    }
    assert_eq!(pending, 0);
    assert!(want.is_empty());
    // Nothing more arrives. Not a wall-clock sleep (a starved core thread would run no
    // firmware in it, so the check could pass by accident): card time, which on the modeled
    // clock passes only as the firmware runs or idles in wfi. Its main loop never sleeps past
    // the next heartbeat (500 ms of card time, MAX_SLEEP_TICKS 1 s; firmware/src/fw.rs), so
    // once 1 s of card time has passed since the last completion with every CU idle, it has
    // run at least one whole poll (CU results, posting) after it: anything it still had to post
    // is in host memory by then.
    assert_eq!(h.card.config().clock, preba_card::Clock::Modeled);
    let until = h.card.time() + std::time::Duration::from_secs(1);
    h.wait_for("1 s of card time after the last completion", |c| {
        c.time() >= until && c.cus().iter().all(|cu| !cu.busy)
    })
    .expect("card time passes");
    assert!(h.reap(1).expect("reap").is_empty() && h.reap(2).expect("reap").is_empty());
    let used: Vec<_> = h.card.cus().iter().map(|c| c.jobs).collect();
    assert!(used.iter().all(|&j| j > 0), "every CU took work: {used:?}");
}

fn one(h: &mut Host, qid: u16, sqe: Sqe) -> Status {
    h.submit(qid, &sqe).expect("submit");
    h.wait(qid, 1).expect("completion")[0].status()
}

#[test]
fn hostile_entries_fail_per_request() {
    let _serial = serial();
    let mut h = booted(config());
    let jpeg = std::fs::read(root().join("fixtures/images/sampling_420.jpg")).expect("jpeg");
    let inp = h.put(&jpeg).expect("put");
    let out_len = img_u8().output_len() as u32;
    let out = h.alloc(out_len as usize).expect("alloc");
    let n = jpeg.len() as u32;
    let good = Host::request(
        IoOpcode::PreprocessImage,
        1,
        IMG_U8,
        (inp, n),
        (out, out_len),
    );
    assert_eq!(one(&mut h, 1, good), Status::Success);

    // Unknown opcode.
    let mut s = good;
    s.cid = 2;
    s.opcode = 0x42;
    assert_eq!(one(&mut h, 1, s), Status::InvalidOpcode);
    // Bad lengths: in_len != sum of SG, output too small, zero-length input.
    let mut s = good;
    s.cid = 3;
    s.in_len = n + 1;
    assert_eq!(one(&mut h, 1, s), Status::InvalidField);
    let mut s = good;
    s.cid = 4;
    s.out_len = 100;
    assert_eq!(one(&mut h, 1, s), Status::OutputTooSmall);
    let mut s = good;
    s.cid = 5;
    s.in_len = 0;
    s.sg[0].len = 0;
    assert_ne!(one(&mut h, 1, s), Status::Success);
    // IOVAs outside the windows: input and output.
    let mut s = good;
    s.cid = 6;
    s.sg[0].iova = 0x10;
    assert_eq!(one(&mut h, 1, s), Status::DmaFault);
    let mut s = good;
    s.cid = 7;
    s.out_iova = 0xdead_0000_0000;
    assert_eq!(one(&mut h, 1, s), Status::DmaFault);
    let mut s = good;
    s.cid = 8;
    s.sg[0].iova = u64::MAX - 4;
    assert_ne!(one(&mut h, 1, s), Status::Success);
    // Indirect SG list outside the windows.
    let mut s = good;
    s.cid = 9;
    s.flags = preba_protocol::io::SQE_FLAG_SG_INDIRECT;
    s.sg = [
        SgEntry {
            iova: 0x20,
            len: 16,
        },
        SgEntry::default(),
    ];
    assert_ne!(one(&mut h, 1, s), Status::Success);
    // Overlapping outputs: two requests write the same buffer; each completes on its own.
    let mut a = good;
    a.cid = 10;
    let mut b = good;
    b.cid = 11;
    h.submit(1, &a).expect("submit");
    h.submit(1, &b).expect("submit");
    let cs = h.wait(1, 2).expect("both");
    assert!(cs.iter().all(|c| c.status() == Status::Success));
    let want = expect_image(&jpeg, &img_u8()).expect("golden");
    assert_eq!(h.get(out, want.len()).expect("out"), want);
    // Output overlapping the input buffer.
    let mut s = good;
    s.cid = 12;
    s.out_iova = inp;
    assert_eq!(one(&mut h, 1, s), Status::Success);
    // Empty profile slot.
    let mut s = good;
    s.cid = 13;
    s.profile = 9;
    assert_eq!(one(&mut h, 1, s), Status::InvalidField);
    // The card still serves good work.
    let inp2 = h.put(&jpeg).expect("put");
    let mut s = Host::request(
        IoOpcode::PreprocessImage,
        14,
        IMG_U8,
        (inp2, n),
        (out, out_len),
    );
    s.cid = 14;
    assert_eq!(one(&mut h, 2, s), Status::Success);
    assert_eq!(
        h.card.read32(regs::QFAULT),
        0,
        "no queue fault from per-request errors"
    );
}

#[test]
fn doorbell_past_ring_latches_queue_fault_and_reset_recovers() {
    let _serial = serial();
    let mut h = booted(config());
    // SQ tail doorbell >= ring size on queue 1.
    h.card.write32(regs::sq_doorbell(1), 64);
    h.wait_for("QFAULT after a doorbell past the ring", |c| {
        c.read32(regs::QFAULT) != 0
    })
    .expect("qfault");
    assert_eq!(
        QueueFault::decode(h.card.read32(regs::QFAULT)),
        Some((1, Some(QueueFault::SqDoorbellOutOfRange)))
    );
    // The admin queue still answers.
    h.identify().expect("identify after an I/O queue fault");
    // Doorbell of a queue that does not exist, and of the admin queue past its ring.
    h.card.write32(regs::sq_doorbell(7), 1);
    h.card.write32(regs::sq_doorbell(0), 1000);
    h.wait_for("CSTS.CFS after an admin doorbell past the ring", |c| {
        c.read32(regs::CSTS) & regs::CSTS_CFS != 0
    })
    .expect("cfs");
    // Controller reset clears the sticky fault and the card serves again.
    h.disable().expect("disable");
    assert_eq!(h.card.read32(regs::QFAULT), 0);
    h.enable(16).expect("re-enable");
    h.identify().expect("identify after reset");
    // A function reset too.
    h.function_reset().expect("function reset");
    wait_boot(&h);
    h.enable(16).expect("enable after function reset");
    h.identify().expect("identify after function reset");
}

#[test]
fn unknown_admin_opcode_and_bad_admin_entry() {
    let _serial = serial();
    let mut h = booted(config());
    let c = h
        .admin_raw(AdminSqe {
            opcode: 0x7f,
            ..AdminSqe::default()
        })
        .expect("completion");
    assert_eq!(c.status(), Status::InvalidOpcode);
    let c = h
        .admin_raw(AdminSqe {
            opcode: AdminOpcode::CreateIoQueuePair as u8,
            data_iova: 0x10,
            data_len: 64 * 4,
            cdw: [3 | 3 << 16, 0x20, 0, 1 | 1 << 16, 0, 0],
            ..AdminSqe::default()
        })
        .expect("completion");
    assert_ne!(c.status(), Status::Success);
    h.identify().expect("still serving");
}
