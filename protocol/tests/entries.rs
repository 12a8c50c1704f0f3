//! Round trips and hostile bytes for every entry type.

use preba_protocol::WireError;
use preba_protocol::admin::{self, AdminOpcode, AdminSqe, Identify, PROFILE_SIZE, Telemetry};
use preba_protocol::io::{self, CQE_SIZE, Cqe, IoOpcode, SQE_SIZE, SgEntry, Sqe};
use preba_protocol::profile::{AudioNorm, AudioProfile, Dtype, ImageProfile, Layout, Profile};
use preba_protocol::status::Status;
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: 4096,
        ..ProptestConfig::default()
    }
}

prop_compose! {
    fn arb_valid_data_sqe()(
        op in prop_oneof![Just(IoOpcode::PreprocessImage), Just(IoOpcode::PreprocessAudio)],
        urgent in any::<bool>(),
        cid in any::<u16>(),
        profile in 0u8..16,
        two in any::<bool>(),
        base in 0u64..(1 << 48),
        l0 in 1u32..(1 << 20),
        l1 in 1u32..(1 << 20),
        out_iova in 0u64..(1 << 48),
        out_len in 1u32..u32::MAX,
    ) -> Sqe {
        let mut sg = [SgEntry::default(); 2];
        sg[0] = SgEntry { iova: base, len: l0 };
        let mut in_len = l0;
        if two {
            sg[1] = SgEntry { iova: base + (1 << 30), len: l1 };
            in_len += l1;
        }
        Sqe {
            opcode: op as u8,
            flags: if urgent { io::SQE_FLAG_URGENT } else { 0 },
            cid,
            profile,
            sg_count: if two { 2 } else { 1 },
            out_iova,
            out_len,
            in_len,
            sg,
        }
    }
}

fn arb_profile() -> impl Strategy<Value = Profile> {
    let image = (
        1u16..=4096,
        any::<bool>(),
        0u8..4,
        0u8..2,
        any::<[u16; 6]>(),
    )
        .prop_filter_map("valid image profile", |(resize, normalize, dt, lay, ms)| {
            let crop = resize / 2 + 1;
            let p = ImageProfile {
                resize,
                crop,
                normalize,
                mean: [ms[0] as f32 / 1e4, ms[1] as f32 / 1e4, ms[2] as f32 / 1e4],
                std: [
                    ms[3] as f32 / 1e4 + 0.01,
                    ms[4] as f32 / 1e4 + 0.01,
                    ms[5] as f32 / 1e4 + 0.01,
                ],
                dtype: Dtype::from_u8(dt)?,
                layout: Layout::from_u8(lay)?,
            };
            p.validate().ok().map(|()| Profile::Image(p))
        });
    let audio = (8_000u32..=48_000, 6u32..=12, 1u16..=256, any::<bool>()).prop_filter_map(
        "valid audio profile",
        |(rate, fft_log, n_mels, norm)| {
            let n_fft = 1u16 << fft_log;
            let p = AudioProfile {
                sample_rate: rate,
                n_fft,
                win_length: n_fft / 2 + 16,
                hop: n_fft / 4,
                n_mels,
                fmin_hz: 0,
                fmax_hz: rate / 2,
                preemph: 0.97,
                norm: if norm {
                    AudioNorm::PerFeature
                } else {
                    AudioNorm::None
                },
            };
            p.validate().ok().map(|()| Profile::Audio(p))
        },
    );
    prop_oneof![image, audio]
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn valid_sqe_round_trips(sqe in arb_valid_data_sqe()) {
        let bytes = sqe.encode();
        let v = Sqe::parse(&bytes).expect("valid entry parses");
        prop_assert_eq!(v.raw, sqe);
        prop_assert_eq!(v.raw.encode(), bytes);
    }

    /// Arbitrary bytes: either a specific error or an entry that re-encodes
    /// to exactly the same bytes (nothing ignored, nothing invented).
    #[test]
    fn arbitrary_sqe_bytes(bytes in any::<[u8; SQE_SIZE]>()) {
        match Sqe::parse(&bytes) {
            Ok(v) => prop_assert_eq!(v.raw.encode(), bytes),
            Err(e) => prop_assert!(!matches!(e, WireError::Truncated)),
        }
    }

    /// Single-byte mutations of a valid entry: same rule.
    #[test]
    fn mutated_sqe(sqe in arb_valid_data_sqe(), at in 0usize..SQE_SIZE, v in any::<u8>()) {
        let mut bytes = sqe.encode();
        bytes[at] = v;
        if let Ok(p) = Sqe::parse(&bytes) {
            prop_assert_eq!(p.raw.encode(), bytes);
        }
    }

    #[test]
    fn cqe_round_trips(r0 in any::<u32>(), r1 in any::<u32>(), cycles in any::<u64>(), written in any::<u32>(),
                       head in any::<u16>(), sq in any::<u16>(), cid in any::<u16>(),
                       st in 0usize..Status::ALL.len(), phase in any::<bool>()) {
        let c = Cqe { result0: r0, result1: r1, cycles, written, sq_head: head, sq_id: sq, cid,
                      status: Status::ALL[st] as u16, phase };
        let b = c.encode();
        prop_assert_eq!(Cqe::parse(&b), Ok(c));
        prop_assert_eq!(Cqe::phase_of(&b), phase);
    }

    #[test]
    fn arbitrary_cqe_bytes(bytes in any::<[u8; CQE_SIZE]>()) {
        if let Ok(c) = Cqe::parse(&bytes) {
            prop_assert_eq!(c.encode(), bytes);
        }
    }

    #[test]
    fn admin_round_trips(op in 0usize..AdminOpcode::ALL.len(), cid in any::<u16>(), iova in 0u64..(1<<48),
                         len in 1u32..=admin::MAX_ADMIN_DATA, cdw in any::<[u32; 6]>()) {
        let op = AdminOpcode::ALL[op];
        let (data_iova, data_len) = if op.has_data() { (iova, len) } else { (0, 0) };
        let sqe = AdminSqe { opcode: op as u8, cid, data_iova, data_len, cdw };
        let b = sqe.encode();
        prop_assert_eq!(AdminSqe::parse(&b), Ok((op, sqe)));
    }

    #[test]
    fn arbitrary_admin_bytes(bytes in any::<[u8; SQE_SIZE]>()) {
        if let Ok((_, s)) = AdminSqe::parse(&bytes) {
            prop_assert_eq!(s.encode(), bytes);
        }
    }

    #[test]
    fn profile_round_trips(p in arb_profile()) {
        let b = admin::encode_profile(&p);
        prop_assert_eq!(admin::parse_profile(&b), Ok(p));
    }

    #[test]
    fn arbitrary_profile_bytes(bytes in any::<[u8; PROFILE_SIZE]>()) {
        if let Ok(p) = admin::parse_profile(&bytes) {
            prop_assert_eq!(admin::encode_profile(&p), bytes);
        }
    }

    #[test]
    fn identify_and_telemetry_round_trip(id in any::<u64>(), cus in any::<[u8; 3]>(), mem in any::<u64>(),
                                         busy in any::<u64>(), req in any::<u32>()) {
        let ident = Identify { version_major: 1, fw_build_id: id, image_cus: cus[0], audio_cus: cus[1],
                               norm_cus: cus[2], card_mem_bytes: mem, ..Identify::default() };
        prop_assert_eq!(Identify::parse(&ident.encode()), ident);
        let mut t = Telemetry { uptime_cycles: busy, requests: req as u64, cu_count: 3, ..Telemetry::default() };
        t.cus[2].busy_cycles = busy;
        t.cus[2].requests = req;
        prop_assert_eq!(Telemetry::parse(&t.encode()), t);
    }
}

fn base_image_sqe() -> Sqe {
    Sqe {
        opcode: IoOpcode::PreprocessImage as u8,
        flags: 0,
        cid: 7,
        profile: 0,
        sg_count: 1,
        out_iova: 0x10_0000,
        out_len: 150_528,
        in_len: 1000,
        sg: [
            SgEntry {
                iova: 0x2000,
                len: 1000,
            },
            SgEntry::default(),
        ],
    }
}

#[test]
fn specific_sqe_errors() {
    let ok = base_image_sqe();
    assert!(Sqe::parse(&ok.encode()).is_ok());
    let cases: Vec<(Sqe, WireError)> = vec![
        (Sqe { opcode: 0x7f, ..ok }, WireError::InvalidOpcode(0x7f)),
        (
            Sqe { in_len: 999, ..ok },
            WireError::InvalidField {
                field: "in_len (sum of sg)",
            },
        ),
        (
            Sqe { out_len: 0, ..ok },
            WireError::InvalidField { field: "out_len" },
        ),
        (
            Sqe {
                out_iova: u64::MAX,
                ..ok
            },
            WireError::InvalidField {
                field: "out_iova+out_len",
            },
        ),
        (
            Sqe {
                sg: [
                    SgEntry {
                        iova: u64::MAX - 10,
                        len: 1000,
                    },
                    SgEntry::default(),
                ],
                ..ok
            },
            WireError::InvalidField { field: "sg.len" },
        ),
        (
            Sqe { sg_count: 3, ..ok },
            WireError::InvalidField { field: "sg_count" },
        ),
        (
            Sqe { sg_count: 0, ..ok },
            WireError::InvalidField { field: "sg_count" },
        ),
        (
            Sqe { profile: 16, ..ok },
            WireError::InvalidField { field: "profile" },
        ),
        (
            Sqe { flags: 0x80, ..ok },
            WireError::InvalidField { field: "flags" },
        ),
        (
            Sqe {
                flags: io::SQE_FLAG_SG_INDIRECT,
                sg_count: 17,
                ..ok
            },
            WireError::InvalidField { field: "sg_count" },
        ),
        (
            Sqe {
                opcode: IoOpcode::Nop as u8,
                ..ok
            },
            WireError::InvalidField {
                field: "data fields of NOP/FLUSH",
            },
        ),
    ];
    for (sqe, want) in cases {
        assert_eq!(Sqe::parse(&sqe.encode()), Err(want), "{sqe:?}");
    }
    let mut b = ok.encode();
    b[60] = 1;
    assert_eq!(
        Sqe::parse(&b),
        Err(WireError::ReservedNonZero { offset: 56 })
    );
    let too_big = Sqe {
        in_len: (64 << 20) + 1,
        sg: [
            SgEntry {
                iova: 0,
                len: (64 << 20) + 1,
            },
            SgEntry::default(),
        ],
        ..ok
    };
    assert_eq!(
        Sqe::parse(&too_big.encode()),
        Err(WireError::TooLarge { field: "in_len" })
    );
    assert_eq!(
        WireError::TooLarge { field: "x" }.status(),
        Status::InputTooLarge
    );
    let nop = Sqe {
        opcode: IoOpcode::Nop as u8,
        cid: 3,
        ..Sqe::default()
    };
    assert_eq!(Sqe::parse(&nop.encode()).map(|v| v.op), Ok(IoOpcode::Nop));
}

#[test]
fn indirect_sg_list_checks() {
    let list = [
        SgEntry {
            iova: 0x1000,
            len: 10,
        },
        SgEntry {
            iova: 0x9000,
            len: 20,
        },
    ];
    assert!(io::validate_sg_list(&list, 30).is_ok());
    assert!(io::validate_sg_list(&list, 31).is_err());
    assert!(io::validate_sg_list(&[], 0).is_err());
    assert!(
        io::validate_sg_list(
            &[SgEntry {
                iova: u64::MAX,
                len: 1
            }],
            1
        )
        .is_err()
    );
    for e in list {
        assert_eq!(SgEntry::parse(&e.encode()), Ok(e));
    }
}

#[test]
fn profile_validation() {
    let mut p = ImageProfile::default();
    assert!(p.validate().is_ok());
    assert_eq!(p.output_len(), 3 * 224 * 224);
    p.normalize = true;
    assert!(p.validate().is_err(), "u8 cannot carry normalized values");
    p.dtype = Dtype::F32;
    assert!(p.validate().is_ok());
    p.std[1] = 0.0;
    assert!(p.validate().is_err());
    let a = AudioProfile::default();
    assert!(a.validate().is_ok());
    assert_eq!(a.frames(16_000), 101);
    assert!(AudioProfile { n_fft: 500, ..a }.validate().is_err());
}
