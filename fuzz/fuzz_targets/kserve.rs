//! The KServe v2 request parser of `preba serve` (serve/src/kserve.rs) on
//! hostile bodies: JSON headers, the binary tensor data extension and its
//! `Inference-Header-Content-Length`. Beyond "no panic": binary ranges lie
//! inside the body, BYTES elements inside their tensor, and FP32 JSON data
//! has exactly the element count of its shape.
//!
//! Input: byte 0 bit 0 set means a header length follows as u16 LE in
//! bytes 1-2 (the body starts at byte 3); clear means no header length (the
//! body starts at byte 1).
#![no_main]

// The module is compiled from the server's own source file: it depends on
// serde_json alone, while the preba-serve crate brings ~150 crates (tokio,
// hyper, ONNX Runtime, CUDA bindings) that would triple the sanitizer build.
#[path = "../../serve/src/kserve.rs"]
#[allow(dead_code)]
mod kserve;

use kserve::{TensorData, encode_bytes, json_bytes, json_f32, parse_infer, split_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (body, header_len) = if flags & 1 != 0 && rest.len() >= 2 {
        (
            &rest[2..],
            Some(u16::from_le_bytes([rest[0], rest[1]]) as usize),
        )
    } else {
        (rest, None)
    };
    let Ok(req) = parse_infer(body, header_len) else {
        return;
    };
    assert!(!req.inputs.is_empty());
    let mut next = header_len.unwrap_or(body.len());
    for inp in &req.inputs {
        let elements = inp
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))
            .expect("accepted shape has a element count");
        assert!(elements <= kserve::MAX_ELEMENTS);
        match &inp.data {
            TensorData::Binary(r) => {
                assert_eq!(r.start, next, "binary inputs are not back to back");
                assert!(r.end <= body.len(), "binary range past the body");
                next = r.end;
                let raw = &body[r.clone()];
                if let Ok(items) = split_bytes(raw, &inp.name) {
                    for it in &items {
                        assert!(it.end <= raw.len());
                    }
                    let again = encode_bytes(items.iter().map(|it| raw[it.clone()].to_vec()));
                    assert_eq!(
                        again, raw,
                        "BYTES elements do not re-encode to their tensor"
                    );
                }
            }
            TensorData::Json(v) => {
                let _ = json_bytes(v, &inp.name);
                if let Ok(f) = json_f32(v, &inp.name, elements) {
                    assert_eq!(f.len(), elements * 4, "FP32 data length");
                }
            }
        }
    }
    assert_eq!(next, body.len(), "bytes after the last binary input");
});
