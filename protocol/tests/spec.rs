//! Keeps docs/card-spec.md and the code in step: every register, opcode,
//! status and fault of the protocol crate appears in the spec's tables with
//! the same value, and every such table row names something the code has.

use preba_protocol::admin::AdminOpcode;
use preba_protocol::io::IoOpcode;
use preba_protocol::regs::{self, QueueFault};
use preba_protocol::status::Status;
use preba_protocol::{card, limits};
use std::collections::BTreeMap;

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/card-spec.md");
    std::fs::read_to_string(path).expect("docs/card-spec.md exists")
}

fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Rows `| NAME | number | ...` whose NAME is an upper-case identifier.
fn rows(doc: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in doc.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 4 || !cols[0].is_empty() {
            continue;
        }
        let name = cols[1];
        let is_ident = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && name.chars().next().is_some_and(|c| c.is_ascii_uppercase());
        if let (true, Some(v)) = (is_ident, parse_num(cols[2])) {
            assert!(
                m.insert(name.to_string(), v).is_none(),
                "{name} appears twice in the spec tables"
            );
        }
    }
    m
}

fn code_constants() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (n, v) in regs::REGISTERS {
        m.insert(n.to_string(), *v);
    }
    for (n, v) in card::REGISTERS {
        m.insert(n.to_string(), *v as u64);
    }
    for (n, v) in card::CU_REGISTERS {
        m.insert(n.to_string(), *v as u64);
    }
    for f in QueueFault::ALL {
        m.insert(f.name().to_string(), f as u64);
    }
    for o in IoOpcode::ALL {
        m.insert(o.name().to_string(), o as u64);
    }
    for o in AdminOpcode::ALL {
        m.insert(o.name().to_string(), o as u64);
    }
    for s in Status::ALL {
        m.insert(s.name().to_string(), s as u64);
    }
    m.insert(
        "MAX_AUDIO_CHANNELS".into(),
        limits::MAX_AUDIO_CHANNELS as u64,
    );
    m
}

#[test]
fn every_constant_is_in_the_spec_with_its_value() {
    let doc = rows(&spec());
    let code = code_constants();
    let mut problems = Vec::new();
    for (name, v) in &code {
        match doc.get(name) {
            None => problems.push(format!("{name} ({v:#x}) is missing from docs/card-spec.md")),
            Some(d) if d != v => problems.push(format!("{name}: code {v:#x}, spec {d:#x}")),
            _ => {}
        }
    }
    for (name, v) in &doc {
        if !code.contains_key(name) {
            problems.push(format!(
                "spec row {name} ({v:#x}) names nothing in the code"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "spec and code disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn identity_and_limits_match() {
    let doc = spec();
    for (field, v) in [
        ("vendor id", format!("{:#06x}", regs::PCI_VENDOR_ID)),
        ("device id", format!("{:#06x}", regs::PCI_DEVICE_ID)),
        ("class code", format!("{:#08x}", regs::PCI_CLASS_CODE)),
    ] {
        assert!(
            doc.contains(&format!("| {field} | {v}")),
            "spec lacks `| {field} | {v}`"
        );
    }
    assert!(doc.contains(&format!("| BAR0 | {} KiB", regs::BAR0_SIZE >> 10)));
    assert!(doc.contains(&format!("| BAR2 | {} KiB", regs::BAR2_SIZE >> 10)));
    assert!(doc.contains(&format!(
        "| MAX_INPUT_BYTES | {} MiB",
        limits::MAX_INPUT_BYTES >> 20
    )));
    assert!(doc.contains(&format!("| MAX_IMAGE_SIDE | {} px", limits::MAX_IMAGE_SIDE)));
    assert!(doc.contains(&format!(
        "| MAX_IMAGE_PIXELS | {} Mi px",
        limits::MAX_IMAGE_PIXELS >> 20
    )));
    assert!(doc.contains(&format!(
        "| MAX_AUDIO_SECONDS | {} s",
        limits::MAX_AUDIO_SECONDS
    )));
    assert!(doc.contains(&format!(
        "| MAX_AUDIO_CHANNELS | {} |",
        limits::MAX_AUDIO_CHANNELS
    )));
    for (region, base) in [
        ("IMEM", card::IMEM_BASE),
        ("DMEM", card::DMEM_BASE),
        ("log ring", card::LOG_RING_BASE),
        ("card memory", card::CARD_MEM_BASE),
    ] {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {region}")))
            .unwrap_or_else(|| panic!("no {region} row"));
        assert!(
            row.to_lowercase().contains(&format!("{base:#010x}")),
            "{region} base {base:#010x} not in `{row}`"
        );
    }
}
