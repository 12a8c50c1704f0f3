//! One JPEG routing decision: the firmware's probe
//! (`preba_protocol::media::probe_jpeg` + `card_check`), the golden model's
//! probe (`card_supports`, `probe`) and the baseline decoder's header parse
//! classify every input alike (supported / unsupported / corrupt / too
//! large), on the fixtures, on hand-made mutations and on random ones.

use preba_preprocess::Error;
use preba_preprocess::image::{baseline_parse, card_supports, probe};
use preba_protocol::media::{self, JpegWalker, MediaError};
use preba_protocol::status::Status;
use proptest::prelude::*;
use std::path::Path;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/images")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/images");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn status(r: &Result<(), Status>) -> Status {
    match r {
        Ok(()) => Status::Success,
        Err(s) => *s,
    }
}

/// Checks the three paths on `b`; returns the card's status.
fn agree(what: &str, b: &[u8]) -> Status {
    let fw = media::probe_jpeg(&mut &b[..]);
    let fw_card: Result<(), MediaError> = fw.and_then(|p| p.card_check());
    let fw_status = status(&fw_card.map_err(|e| e.status()));
    // The decoder's probe, as routing sees it (card) and as the CPU path does.
    let cpu_card = card_supports(b).map(|_| ()).map_err(|e| e.status());
    assert_eq!(
        fw_status,
        status(&cpu_card),
        "{what}: firmware {fw_card:?} vs decoder's card probe {cpu_card:?}"
    );
    let cpu = probe(b);
    match (&fw, &cpu) {
        (Err(e), Err(c)) => assert_eq!(e.status(), c.status(), "{what}: {e:?} vs {c:?}"),
        (Err(e), Ok(_)) => panic!("{what}: firmware refuses ({e:?}), CPU probe takes it"),
        (Ok(_), Err(c)) => assert_eq!(c.status(), Status::UnsupportedFormat, "{what}: {c:?}"),
        (Ok(_), Ok(_)) => {}
    }
    // The baseline decoder's own parse of the headers.
    match (baseline_parse(b), &fw) {
        (Some(Ok(off)), Ok(p)) => assert_eq!(
            off as u64, p.header.scan_offset,
            "{what}: decoder and probe reach different scans"
        ),
        (Some(Ok(_)), Err(e)) => panic!("{what}: decoder parses what the probe refuses: {e:?}"),
        (Some(Err(d)), Err(e)) => assert_eq!(d.status(), e.status(), "{what}: {d:?} vs {e:?}"),
        (Some(Err(d)), Ok(_)) => {
            // Table contents the probe does not read: corrupt on both paths.
            assert!(matches!(d, Error::CorruptInput(_)), "{what}: {d:?}");
        }
        (None, _) => {}
    }
    fw_status
}

/// Offsets of the marker segments of a well-formed file up to and with SOS:
/// (marker, start of 0xFF, end).
fn segments(b: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut w = JpegWalker::new();
    let mut v = Vec::new();
    while let Ok(s) = w.next_segment(&mut &b[..]) {
        v.push((s.marker, s.body as usize - 4, s.end() as usize));
        if s.marker == 0xDA {
            break;
        }
    }
    v
}

fn insert(b: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut v = b[..at].to_vec();
    v.extend_from_slice(bytes);
    v.extend_from_slice(&b[at..]);
    v
}

/// The named mutations the card/CPU agreement test also runs end to end.
fn named_mutations(b: &[u8]) -> Vec<(String, Vec<u8>)> {
    let segs = segments(b);
    let mut out = Vec::new();
    let Some(&(_, sos, sos_end)) = segs.iter().find(|s| s.0 == 0xDA) else {
        return out;
    };
    let second = segs.get(1).map_or(2, |s| s.1);
    out.push(("junk-after-soi".into(), insert(b, 2, b"\x00\x12\x34")));
    out.push(("junk-before-sos".into(), insert(b, sos, b"abc\x00\xFF\x00")));
    out.push(("fill-bytes".into(), insert(b, second, &[0xFF; 40])));
    out.push(("rst-before-sos".into(), insert(b, sos, b"\xFF\xD0")));
    out.push((
        "rst-tem-after-soi".into(),
        insert(b, 2, b"\xFF\xD7\xFF\x01"),
    ));
    out.push(("junk-64k".into(), insert(b, sos, &vec![0x55; 65 * 1024])));
    let com = b"\xFF\xFE\x00\x02".repeat(1100);
    out.push(("1100-com".into(), insert(b, second, &com)));
    out.push(("unknown-marker".into(), insert(b, sos, b"\xFF\xF0\x00\x02")));
    out.push(("sof5".into(), insert(b, sos, b"\xFF\xC5\x00\x02")));
    out.push(("second-soi".into(), insert(b, sos, b"\xFF\xD8")));
    out.push(("eoi-before-sos".into(), insert(b, sos, b"\xFF\xD9")));
    for (name, cut) in [
        ("cut-50", 50),
        ("cut-before-sos", sos),
        ("cut-in-sos", sos + 5),
        ("cut-mid-scan", (sos_end + b.len()) / 2),
        ("cut-eoi", b.len().saturating_sub(2)),
    ] {
        if cut < b.len() {
            out.push((name.into(), b[..cut].to_vec()));
        }
    }
    for (m, name) in [(0xC4u8, "dht"), (0xDB, "dqt"), (0xC0, "sof")] {
        let found: Vec<_> = segs.iter().filter(|s| s.0 == m).collect();
        if let Some(s) = found.first() {
            let seg = b[s.1..s.2].to_vec();
            out.push((format!("dup-{name}"), insert(b, sos, &seg)));
            let mut v = b[..s.1].to_vec();
            v.extend_from_slice(&b[s.2..]);
            out.push((format!("drop-first-{name}"), v));
        }
        if found.len() > 1 {
            let mut v = Vec::new();
            let mut at = 0;
            for s in &found {
                v.extend_from_slice(&b[at..s.1]);
                at = s.2;
            }
            v.extend_from_slice(&b[at..]);
            out.push((format!("drop-all-{name}"), v));
        }
    }
    // Bit flips in the headers: every 7th header byte, two bit positions.
    for at in (2..sos_end).step_by(7) {
        for bit in [0x01u8, 0x80] {
            let mut v = b.to_vec();
            v[at] ^= bit;
            out.push((format!("flip-{at}-{bit:02x}"), v));
        }
    }
    out
}

#[test]
fn fixtures_and_named_mutations_route_alike() {
    let t = std::time::Instant::now();
    let mut n = 0;
    for (name, b) in all_fixtures() {
        agree(&name, &b);
        n += 1;
        for (m, v) in named_mutations(&b) {
            agree(&format!("{name}/{m}"), &v);
            n += 1;
        }
    }
    eprintln!("{n} inputs in {:?}", t.elapsed());
    assert!(n > 1000, "{n}");
}

#[test]
fn tolerance_rules() {
    let b = fixture("sampling_420.jpg");
    let by_name: std::collections::HashMap<_, _> = named_mutations(&b).into_iter().collect();
    let st = |m: &str| agree(m, &by_name[m]);
    for m in [
        "junk-after-soi",
        "junk-before-sos",
        "fill-bytes",
        "rst-before-sos",
        "rst-tem-after-soi",
        "dup-dht",
        "dup-dqt",
        "drop-all-dht",
    ] {
        assert_eq!(st(m), Status::Success, "{m}");
    }
    for m in [
        "unknown-marker",
        "second-soi",
        "eoi-before-sos",
        "cut-50",
        "cut-before-sos",
        "cut-in-sos",
        "dup-sof",
    ] {
        assert_eq!(st(m), Status::CorruptInput, "{m}");
    }
    assert_eq!(st("sof5"), Status::UnsupportedFormat);
    assert_eq!(st("junk-64k"), Status::InputTooLarge);
    assert_eq!(st("1100-com"), Status::InputTooLarge);
    let p = media::probe_jpeg(&mut &by_name["junk-before-sos"][..]).unwrap();
    assert_eq!((p.skipped.junk, p.skipped.fill), (6, 0));
    let p = media::probe_jpeg(&mut &by_name["rst-tem-after-soi"][..]).unwrap();
    assert_eq!(p.skipped.standalone, 2);
    let p = media::probe_jpeg(&mut &by_name["fill-bytes"][..]).unwrap();
    assert_eq!(p.skipped.fill, 40);
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bits of a byte in the headers (before the first scan's data).
    Flip {
        at: usize,
        xor: u8,
    },
    /// Insert bytes at the start of a segment (junk, fill, RST, TEM, markers).
    Insert {
        seg: usize,
        bytes: Vec<u8>,
    },
    /// Duplicate or remove a segment.
    Dup {
        seg: usize,
        to: usize,
    },
    Remove {
        seg: usize,
    },
    Truncate {
        at: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let piece = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..6),
        Just(vec![0xFF, 0xD0]),
        Just(vec![0xFF, 0x01]),
        Just(vec![0xFF, 0x00]),
        Just(vec![0xFF, 0xFF, 0xFF]),
        (any::<u8>(), any::<u8>()).prop_map(|(m, l)| vec![0xFF, m, 0, l % 6]),
    ];
    prop_oneof![
        4 => (0usize..4096, 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        3 => (0usize..16, piece).prop_map(|(seg, bytes)| Mutation::Insert { seg, bytes }),
        1 => (0usize..16, 0usize..16).prop_map(|(seg, to)| Mutation::Dup { seg, to }),
        1 => (0usize..16).prop_map(|seg| Mutation::Remove { seg }),
        1 => (0usize..100_000).prop_map(|at| Mutation::Truncate { at }),
    ]
}

const SEEDS: &[&str] = &[
    "sampling_420.jpg",
    "restart_rows_422.jpg",
    "gray_brick_odd.jpg",
    "mjpeg_avi1_422.jpg",
    "size_17x17.jpg",
    "progressive_gray.jpg",
    "cmyk_coffee.jpg",
    "rgb_coded_chelsea.jpg",
];

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let segs = segments(&b);
        let seg = |i: usize| segs.get(i % segs.len().max(1)).copied();
        match m {
            Mutation::Flip { at, xor } => {
                let end = segs.last().map_or(b.len(), |s| s.2).min(b.len());
                if end > 0 {
                    b[at % end] ^= xor;
                }
            }
            Mutation::Insert { seg: i, bytes } => {
                let at = seg(*i).map_or(2, |s| s.1).min(b.len());
                b = insert(&b, at, bytes);
            }
            Mutation::Dup { seg: i, to } => {
                if let (Some(s), Some(t)) = (seg(*i), seg(*to)) {
                    let piece = b[s.1..s.2].to_vec();
                    b = insert(&b, t.1, &piece);
                }
            }
            Mutation::Remove { seg: i } => {
                if let Some(s) = seg(*i) {
                    b.drain(s.1..s.2);
                }
            }
            Mutation::Truncate { at } => b.truncate(*at),
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn probes_and_decoder_agree_on_random_mutations(
        seed in 0usize..SEEDS.len(),
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let b = apply(fixture(SEEDS[seed]), &muts);
        agree(&format!("{} {muts:?}", SEEDS[seed]), &b);
    }
}
