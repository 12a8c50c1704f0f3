//! Property: under a random mixed workload (good and bad entries, flushes,
//! aborts, stuck CUs, a host that reaps late) every command id completes
//! exactly once, with a status its kind allows, and no queue faults.
mod common;

use common::*;
use preba_firmware::selftest::{JPEG_BASELINE, JPEG_PROGRESSIVE, WAV_HEADER};
use preba_protocol::admin::{AdminOpcode, AdminSqe};
use preba_protocol::card::HOSTIF_QFAULT;
use preba_protocol::io::{IoOpcode, SgEntry, Sqe};
use preba_protocol::profile::{AudioProfile, Dtype, ImageProfile, Layout, Profile};
use preba_protocol::status::Status;
use proptest::prelude::*;
use std::collections::HashMap;

#[derive(Clone, Debug)]
enum Op {
    Submit { q: u16, kind: u8 },
    Abort { back: u16 },
    Run(u8),
    Reap(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u16..=2, 0u8..6).prop_map(|(q, kind)| Op::Submit { q, kind }),
        1 => (0u16..8).prop_map(|back| Op::Abort { back }),
        3 => (1u8..4).prop_map(Op::Run),
        2 => (1u16..=2).prop_map(Op::Reap),
    ]
}

const PROFILE: ImageProfile = ImageProfile {
    resize: 16,
    crop: 8,
    normalize: false,
    mean: [0.0; 3],
    std: [1.0; 3],
    dtype: Dtype::U8,
    layout: Layout::Nchw,
};

fn sqe(kind: u8, cid: u16) -> (Sqe, &'static [Status]) {
    let img = |iova: u64, len: usize| Sqe {
        opcode: IoOpcode::PreprocessImage as u8,
        cid,
        sg_count: 1,
        out_iova: OUT + (cid as u64 % 64) * 256,
        out_len: 192,
        in_len: len as u32,
        sg: [
            SgEntry {
                iova,
                len: len as u32,
            },
            SgEntry::default(),
        ],
        ..Sqe::default()
    };
    const IMG: &[Status] = &[Status::Success, Status::Aborted, Status::Internal];
    match kind {
        0 => (
            Sqe {
                opcode: IoOpcode::Nop as u8,
                cid,
                ..Sqe::default()
            },
            &[Status::Success],
        ),
        1 => (img(DATA, JPEG_BASELINE.len()), IMG),
        2 => (
            img(DATA + 0x1000, JPEG_PROGRESSIVE.len()),
            &[Status::UnsupportedFormat, Status::Aborted],
        ),
        3 => (
            Sqe {
                opcode: 0x42,
                cid,
                ..Sqe::default()
            },
            &[Status::InvalidOpcode],
        ),
        4 => (
            Sqe {
                opcode: IoOpcode::Flush as u8,
                cid,
                ..Sqe::default()
            },
            &[Status::Success, Status::Aborted],
        ),
        _ => (
            Sqe {
                opcode: IoOpcode::PreprocessAudio as u8,
                cid,
                profile: 1,
                sg_count: 1,
                out_iova: OUT + 0x10_0000,
                out_len: 1 << 16,
                in_len: 244,
                sg: [
                    SgEntry {
                        iova: DATA + 0x2000,
                        len: 244,
                    },
                    SgEntry::default(),
                ],
                ..Sqe::default()
            },
            IMG,
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_cid_completes_exactly_once(
        ops in proptest::collection::vec(op(), 1..120),
        stuck in proptest::bool::ANY,
    ) {
        let mut card = Card::new(2, 1, 1);
        if stuck {
            card.cus[1].mode = CuMode::Stuck;
        }
        let mut h = Host::new(card);
        h.enable();
        prop_assert_eq!(h.create_queue(1, 8, 1).status, 0);
        prop_assert_eq!(h.create_queue(2, 4, 2).status, 0);
        prop_assert_eq!(h.set_profile(0, &Profile::Image(PROFILE)).status, 0);
        prop_assert_eq!(h.set_profile(1, &Profile::Audio(AudioProfile::default())).status, 0);
        h.fw.p.host_write(DATA, &JPEG_BASELINE);
        h.fw.p.host_write(DATA + 0x1000, &JPEG_PROGRESSIVE);
        let mut wav = vec![0u8; 244];
        wav[..44].copy_from_slice(&WAV_HEADER);
        h.fw.p.host_write(DATA + 0x2000, &wav);

        let mut expect: HashMap<u16, (u16, &'static [Status])> = HashMap::new();
        let mut done: HashMap<u16, Status> = HashMap::new();
        let mut inflight: HashMap<u16, usize> = HashMap::new();
        let mut next: u16 = 1;
        let reap = |h: &mut Host, q: u16, done: &mut HashMap<u16, Status>,
                        inflight: &mut HashMap<u16, usize>,
                        expect: &HashMap<u16, (u16, &'static [Status])>| -> Result<(), TestCaseError> {
            for c in h.reap(q) {
                let (eq, _) = expect.get(&c.cid).copied().ok_or_else(|| TestCaseError::fail(format!("unknown cid {}", c.cid)))?;
                prop_assert_eq!(eq, q);
                prop_assert!(done.insert(c.cid, c.status()).is_none(), "cid {} completed twice", c.cid);
                *inflight.get_mut(&q).unwrap() -= 1;
            }
            Ok(())
        };
        inflight.insert(1, 0);
        inflight.insert(2, 0);
        for op in ops {
            match op {
                Op::Submit { q, kind } => {
                    let size = if q == 1 { 8 } else { 4 };
                    if inflight[&q] >= size - 1 {
                        continue;
                    }
                    let (s, ok) = sqe(kind, next);
                    expect.insert(next, (q, ok));
                    h.submit(q, &s);
                    *inflight.get_mut(&q).unwrap() += 1;
                    next += 1;
                }
                Op::Abort { back } => {
                    let cid = next.saturating_sub(back + 1);
                    if let Some(&(q, _)) = expect.get(&cid) {
                        let c = h.admin_cmd(AdminSqe {
                            opcode: AdminOpcode::Abort as u8,
                            cdw: [q as u32 | (cid as u32) << 16, 0, 0, 0, 0, 0],
                            ..AdminSqe::default()
                        });
                        prop_assert_eq!(c.status, 0);
                    }
                }
                Op::Run(n) => h.run(n as usize),
                Op::Reap(q) => reap(&mut h, q, &mut done, &mut inflight, &expect)?,
            }
        }
        for _ in 0..400 {
            if done.len() == expect.len() {
                break;
            }
            h.run(1);
            reap(&mut h, 1, &mut done, &mut inflight, &expect)?;
            reap(&mut h, 2, &mut done, &mut inflight, &expect)?;
        }
        prop_assert_eq!(done.len(), expect.len(), "every cid completes");
        for (cid, st) in &done {
            let (_, ok) = expect[cid];
            prop_assert!(ok.contains(st), "cid {} status {:?} not in {:?}", cid, st, ok);
        }
        prop_assert_eq!(h.card().reg(HOSTIF_QFAULT), 0);
    }
}
