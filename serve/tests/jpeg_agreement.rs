//! One JPEG routing decision, end to end: every image fixture plus
//! mutations (junk between segments, RST/TEM before the scan, fill bytes,
//! truncations, duplicated and missing tables, bit flips in the headers)
//! give the same outcome through `preba preprocess --card emulated` (the
//! firmware's probe on the soft core, the CUs) and `--card cpu`: the same
//! tensor bytes or the same failure status. Like the WAV agreement test in
//! emulated.rs; needs `preba-card` and the firmware ELF (see there).

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn preba() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_preba"))
}

fn insert(b: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut v = b[..at].to_vec();
    v.extend_from_slice(bytes);
    v.extend_from_slice(&b[at..]);
    v
}

/// (marker, start, end) of each segment of a well-formed file up to SOS.
fn segments(b: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut v = Vec::new();
    let mut i = 2;
    while i + 4 <= b.len() && b[i] == 0xFF {
        let m = b[i + 1];
        let end = i + 2 + usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        v.push((m, i, end.min(b.len())));
        if m == 0xDA {
            break;
        }
        i = end;
    }
    v
}

fn mutations(b: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let segs = segments(b);
    let Some(&(_, sos, sos_end)) = segs.iter().find(|s| s.0 == 0xDA) else {
        return Vec::new();
    };
    let second = segs.get(1).map_or(2, |s| s.1);
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![
        ("junk-after-soi", insert(b, 2, b"\x00\x12\x34")),
        ("junk-before-sos", insert(b, sos, b"abc\x00\xFF\x00")),
        ("fill-bytes", insert(b, second, &[0xFF; 40])),
        ("rst-before-sos", insert(b, sos, b"\xFF\xD0")),
        ("rst-tem-after-soi", insert(b, 2, b"\xFF\xD7\xFF\x01")),
        ("junk-64k", insert(b, sos, &vec![0x55; 65 * 1024])),
        (
            "1100-com",
            insert(b, second, &b"\xFF\xFE\x00\x02".repeat(1100)),
        ),
        ("unknown-marker", insert(b, sos, b"\xFF\xF0\x00\x02")),
        ("sof5", insert(b, sos, b"\xFF\xC5\x00\x02")),
        ("eoi-before-sos", insert(b, sos, b"\xFF\xD9")),
        ("cut-50", b[..50.min(b.len())].to_vec()),
        ("cut-before-sos", b[..sos].to_vec()),
        ("cut-mid-scan", b[..(sos_end + b.len()) / 2].to_vec()),
        ("cut-eoi", b[..b.len() - 2].to_vec()),
    ];
    for (m, dup, drop) in [
        (0xC4u8, "dup-dht", "drop-dht"),
        (0xDB, "dup-dqt", "drop-dqt"),
        (0xC0, "dup-sof", "drop-sof"),
    ] {
        if let Some(&(_, s, e)) = segs.iter().find(|s| s.0 == m) {
            out.push((dup, insert(b, sos, &b[s..e])));
            let mut v = b[..s].to_vec();
            v.extend_from_slice(&b[e..]);
            out.push((drop, v));
        }
    }
    let all_dht: Vec<u8> = {
        let mut v = Vec::new();
        let mut at = 0;
        for &(_, s, e) in segs.iter().filter(|s| s.0 == 0xC4) {
            v.extend_from_slice(&b[at..s]);
            at = e;
        }
        v.extend_from_slice(&b[at..]);
        v
    };
    out.push(("drop-all-dht", all_dht));
    // Bit flips in the headers (a sample of positions; the property test in
    // preprocess covers them all without the card).
    for (k, at) in (2..sos_end).step_by(23).enumerate() {
        let mut v = b.to_vec();
        v[at] ^= if k % 2 == 0 { 0x01 } else { 0x80 };
        out.push(("flip", v));
    }
    out
}

fn run(card: &str, bin: &Path, fw: &Path, dir: &Path, inputs: &[PathBuf]) -> (i32, Vec<u8>, Value) {
    let (out, man) = (
        dir.join(format!("{card}.npy")),
        dir.join(format!("{card}.json")),
    );
    let o = Command::new(preba())
        .env("PREBA_CARD_BIN", bin)
        .env("PREBA_FIRMWARE", fw)
        .args(["preprocess", "--card", card, "-o"])
        .arg(&out)
        .arg("--manifest")
        .arg(&man)
        .args(inputs)
        .output()
        .unwrap();
    let (rc, err) = common::code_and_stderr(&o);
    let man: Value = serde_json::from_slice(
        &std::fs::read(&man).unwrap_or_else(|e| panic!("{card}: no manifest ({e}): {err}")),
    )
    .unwrap();
    (rc, std::fs::read(&out).unwrap_or_default(), man)
}

/// Whether the card's probe takes this JPEG (else the host routes it to the CPU).
fn card_takes(path: &Path) -> bool {
    let b = std::fs::read(path).unwrap();
    preba_protocol::media::probe_jpeg(&mut &b[..]).is_ok_and(|p| p.card_check().is_ok())
}

/// The failure class of a manifest error ("corrupt input", "unsupported
/// format", "input too large", ...): the text before the first colon.
fn class(e: &Value) -> Option<&str> {
    e.as_str().map(|m| m.split(':').next().unwrap_or(m))
}

#[test]
fn jpeg_fixtures_and_mutations_agree_between_card_and_cpu() {
    let Some((bin, fw)) = common::card_parts(&preba()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for f in common::fixtures("images", &["jpg"]) {
        let b = std::fs::read(&f).unwrap();
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        inputs.push(f);
        if !stem.starts_with("large_") {
            for (k, (m, v)) in mutations(&b).into_iter().enumerate() {
                let p = dir.path().join(format!("{stem}.{k:03}.{m}.jpg"));
                std::fs::write(&p, v).unwrap();
                inputs.push(p);
            }
        }
    }
    let t = Instant::now();
    let (rc_cpu, out_cpu, man_cpu) = run("cpu", &bin, &fw, dir.path(), &inputs);
    let t_cpu = t.elapsed();
    let t = Instant::now();
    let (rc_card, out_card, man_card) = run("emulated", &bin, &fw, dir.path(), &inputs);
    eprintln!(
        "{} inputs: cpu {t_cpu:?}, emulated card {:?}",
        inputs.len(),
        t.elapsed()
    );
    let (mc, me) = (
        man_cpu["inputs"].as_array().unwrap(),
        man_card["inputs"].as_array().unwrap(),
    );
    assert_eq!(mc.len(), inputs.len());
    assert_eq!(me.len(), inputs.len());
    let mut diffs = Vec::new();
    let mut on_card = 0;
    for (c, e) in mc.iter().zip(me) {
        let (cc, ce) = (class(&c["error"]), class(&e["error"]));
        if (&c["status"], &c["index"], cc) != (&e["status"], &e["index"], ce) {
            diffs.push(format!(
                "{}: cpu {} {} vs card {} {}",
                c["path"], c["status"], c["error"], e["status"], e["error"]
            ));
        }
        // A status the card answered itself must say the same.
        if let Some(s) = e["error"].as_str().and_then(|m| m.split("(card: ").nth(1)) {
            let want = match cc {
                Some("corrupt input") => "CORRUPT_INPUT)",
                Some("input too large") => "INPUT_TOO_LARGE)",
                Some("unsupported format") => "UNSUPPORTED_FORMAT)",
                _ => "?",
            };
            if s != want {
                diffs.push(format!(
                    "{}: card status {s} vs cpu {}",
                    c["path"], c["error"]
                ));
            }
        }
        on_card += usize::from(e["via"] == "card");
        // Every input the card's probe takes and the CPU decodes is made on the
        // card: no watchdog fallbacks (the card runs on modeled time).
        if c["status"] == "ok"
            && e["via"] != "card"
            && card_takes(Path::new(c["path"].as_str().unwrap()))
        {
            diffs.push(format!(
                "{}: fell back to the CPU ({})",
                c["path"], e["via"]
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differ:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert_eq!(rc_cpu, rc_card);
    assert!(out_cpu == out_card, "tensor bytes differ");
    assert!(on_card > 100, "only {on_card} inputs on the card");
}
