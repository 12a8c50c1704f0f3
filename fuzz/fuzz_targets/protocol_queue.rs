//! Every parser of host-written queue memory and admin data (the card's side
//! of the PCIe boundary), and the device's ring state machines under hostile
//! doorbells. Properties beyond "no panic": an entry the parser accepts
//! re-encodes to exactly the bytes it came from (no field is silently
//! dropped or defaulted), and ring indices stay inside the ring.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preba_protocol::admin::{
    AdminSqe, IDENTIFY_SIZE, Identify, PROFILE_SIZE, TELEMETRY_SIZE, Telemetry, encode_profile,
    parse_profile,
};
use preba_protocol::io::{
    CQE_SIZE, Cqe, MAX_SG, SG_ENTRY_SIZE, SQE_SIZE, SgEntry, Sqe, validate_sg_list,
};
use preba_protocol::ring::{CqProducer, SqConsumer};

/// The first `N` bytes of `data`, zero-padded: short inputs still reach
/// every parser, and zeros are what a host's fresh pages hold.
fn head<const N: usize>(data: &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    let n = data.len().min(N);
    b[..n].copy_from_slice(&data[..n]);
    b
}

fuzz_target!(|data: &[u8]| {
    let sqe = head::<SQE_SIZE>(data);
    if let Ok(v) = Sqe::parse(&sqe) {
        assert_eq!(
            v.raw.encode(),
            sqe,
            "accepted I/O SQE does not re-encode to itself"
        );
        assert!(v.raw.in_len as u64 <= preba_protocol::limits::MAX_INPUT_BYTES);
    }
    if let Ok((_, a)) = AdminSqe::parse(&sqe) {
        assert_eq!(
            a.encode(),
            sqe,
            "accepted admin SQE does not re-encode to itself"
        );
    }
    let cqe = head::<CQE_SIZE>(data);
    if let Ok(c) = Cqe::parse(&cqe) {
        assert_eq!(c.encode(), cqe, "accepted CQE does not re-encode to itself");
        assert_eq!(c.phase, Cqe::phase_of(&cqe));
    }
    let p = head::<PROFILE_SIZE>(data);
    if let Ok(profile) = parse_profile(&p) {
        assert_eq!(
            encode_profile(&profile),
            p,
            "accepted profile does not re-encode to itself"
        );
    }
    // Host-side parsers of card-written structures (the card is untrusted
    // too): infallible by design, so only "no panic" and a usable version
    // string are checked.
    let id = Identify::parse(&head::<IDENTIFY_SIZE>(data));
    let _ = id.fw_version_str().len();
    let _ = Telemetry::parse(&head::<TELEMETRY_SIZE>(data));

    // An indirect scatter-gather list as the card copies it out of host memory.
    let mut list = Vec::with_capacity(MAX_SG + 1);
    let mut ok = true;
    for chunk in data.chunks_exact(SG_ENTRY_SIZE).take(MAX_SG + 1) {
        match SgEntry::parse(chunk.try_into().expect("chunks_exact yields 16 bytes")) {
            Ok(e) => list.push(e),
            Err(_) => ok = false,
        }
    }
    if ok && !list.is_empty() {
        let in_len = u32::from_le_bytes(head::<4>(data));
        if validate_sg_list(&list, in_len).is_ok() {
            let sum: u64 = list.iter().map(|e| e.len as u64).sum();
            assert_eq!(
                sum, in_len as u64,
                "accepted SG list does not sum to in_len"
            );
            assert!(list.len() <= MAX_SG);
        }
    }

    // Hostile doorbells: the ring size from the first byte, then one u16
    // doorbell value per 2 bytes, alternating SQ tail and CQ head, with pops
    // and pushes in between as the device would do them.
    let size = 1u16 << (1 + data.first().copied().unwrap_or(0) % 12);
    let (Some(mut sq), Some(mut cq)) = (SqConsumer::new(size), CqProducer::new(size)) else {
        panic!("ring size {size} refused");
    };
    for (i, w) in data.chunks_exact(2).enumerate() {
        let v = u16::from_le_bytes([w[0], w[1]]) as u32;
        if i % 2 == 0 {
            let before = sq.pending();
            match sq.doorbell(v) {
                Ok(new) => assert_eq!(sq.pending(), before + new),
                Err(_) => assert_eq!(sq.pending(), before, "refused doorbell moved the SQ"),
            }
            if v & 1 != 0 {
                if let Some(slot) = sq.pop() {
                    assert!(slot < size);
                }
            }
        } else {
            let before = cq.used();
            match cq.doorbell(v) {
                Ok(released) => assert_eq!(cq.used() + released, before),
                Err(_) => assert_eq!(cq.used(), before, "refused doorbell moved the CQ"),
            }
            if v & 1 != 0 {
                if let Some((slot, _)) = cq.push() {
                    assert!(slot < size);
                }
            }
        }
        assert!(sq.head() < size && sq.pending() < size);
        assert!(cq.used() < size);
    }
});
