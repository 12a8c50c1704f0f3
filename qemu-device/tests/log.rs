//! The firmware's defmt log, read through BAR2 and decoded on the host with `defmt-decoder`
//! against the same ELF.

mod common;

use std::time::{Duration, Instant};

use common::*;
use defmt_decoder::{DecodeError, Table};
use preba_card::LogReader;
use preba_card::harness::Host;

#[test]
fn defmt_log_decodes_with_boot_banner() {
    let _serial = serial();
    let elf = firmware();
    let table = Table::parse(elf)
        .expect("defmt table")
        .expect("the firmware ELF carries defmt data");
    let mut h = Host::new(config(), elf).expect("card");
    wait_boot(&h);
    // Some traffic that logs: a controller enable and reset.
    h.enable(8).expect("enable");
    h.disable().expect("disable");
    let mut reader = LogReader::new();
    let mut decoder = table.new_stream_decoder();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let chunk = reader.read(&h.card);
        assert_eq!(chunk.lost, 0, "the boot log fits the ring");
        decoder.received(&chunk.bytes);
        loop {
            match decoder.decode() {
                Ok(f) => messages.push(f.display_message().to_string()),
                Err(DecodeError::UnexpectedEof) => break,
                Err(DecodeError::Malformed) => panic!("malformed defmt frame after {messages:?}"),
            }
        }
        if messages.iter().any(|m| m.contains("controller reset")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let banner = messages
        .iter()
        .find(|m| m.contains(" build ") && m.ends_with(" up"))
        .unwrap_or_else(|| panic!("no boot banner among {messages:?}"));
    let id = format!("{:x}", h.card.read64(preba_protocol::regs::FWVER));
    assert!(banner.contains(&id), "banner {banner:?} names build {id}");
    assert!(
        messages.iter().any(|m| m.contains("controller reset")),
        "{messages:?}"
    );
}
