//! The KServe v2 inference protocol as bytes: request parsing (JSON and the
//! binary tensor data extension), response building, classification. Pure
//! functions over untrusted bytes, so a second front end (gRPC) reuses them
//! and the fuzz tests reach them without a socket.
#![forbid(unsafe_code)]

use serde_json::{Map, Value, json};
use std::ops::Range;

/// Largest JSON header we parse (Triton's requests are a few hundred bytes).
pub const MAX_HEADER: usize = 4 << 20;
/// Most elements in one input tensor.
pub const MAX_ELEMENTS: usize = 1 << 26;

/// A parsed `POST .../infer` body.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<Value>,
    pub inputs: Vec<InputTensor>,
    pub outputs: Vec<RequestedOutput>,
    /// `parameters.binary_data_output`: outputs not named default to binary.
    pub binary_default: bool,
    /// `parameters.timeout` (microseconds, as Triton), if given.
    pub timeout_us: Option<u64>,
}

#[derive(Debug)]
pub struct InputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

#[derive(Debug)]
pub enum TensorData {
    /// Bytes of the body after the JSON header.
    Binary(Range<usize>),
    /// The `data` member.
    Json(Value),
}

#[derive(Debug, Clone)]
pub struct RequestedOutput {
    pub name: String,
    pub binary: Option<bool>,
    pub classification: Option<usize>,
}

fn err(s: impl Into<String>) -> String {
    s.into()
}

/// Parses an infer request. `header_len` is `Inference-Header-Content-Length`
/// (absent: the whole body is JSON).
pub fn parse_infer(body: &[u8], header_len: Option<usize>) -> Result<InferRequest, String> {
    let hlen = header_len.unwrap_or(body.len());
    if hlen > body.len() {
        return Err(format!(
            "Inference-Header-Content-Length {hlen} is larger than the body ({} bytes)",
            body.len()
        ));
    }
    if hlen > MAX_HEADER {
        return Err(format!("JSON header of {hlen} bytes (limit {MAX_HEADER})"));
    }
    let v: Value =
        serde_json::from_slice(&body[..hlen]).map_err(|e| format!("request JSON: {e}"))?;
    let obj = v.as_object().ok_or("request JSON: not an object")?;
    let params = obj.get("parameters").and_then(Value::as_object);
    let binary_default = params
        .and_then(|p| p.get("binary_data_output"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let timeout_us = params
        .and_then(|p| p.get("timeout"))
        .and_then(Value::as_u64);
    let raw_inputs = obj
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("request JSON: `inputs` must be an array")?;
    if raw_inputs.is_empty() {
        return Err(err("request JSON: `inputs` is empty"));
    }
    let mut cursor = hlen;
    let mut inputs = Vec::with_capacity(raw_inputs.len());
    for (i, inp) in raw_inputs.iter().enumerate() {
        let o = inp
            .as_object()
            .ok_or_else(|| format!("inputs[{i}]: not an object"))?;
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("inputs[{i}]: `name` missing"))?
            .to_string();
        let datatype = o
            .get("datatype")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("input {name}: `datatype` missing"))?
            .to_string();
        let shape: Vec<i64> = o
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("input {name}: `shape` missing"))?
            .iter()
            .map(|d| d.as_i64().filter(|&d| d >= 0))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("input {name}: `shape` must be non-negative integers"))?;
        // Element count bounded before anything is sized by it.
        shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| format!("input {name}: shape {shape:?} is too large"))?;
        let bin = o
            .get("parameters")
            .and_then(Value::as_object)
            .and_then(|p| p.get("binary_data_size"));
        let data = match bin {
            Some(b) => {
                let n = b
                    .as_u64()
                    .ok_or_else(|| format!("input {name}: binary_data_size must be an integer"))?
                    as usize;
                let end = cursor
                    .checked_add(n)
                    .filter(|&e| e <= body.len())
                    .ok_or_else(|| {
                        format!(
                            "input {name}: binary_data_size {n} runs past the body ({} bytes after the header)",
                            body.len() - hlen
                        )
                    })?;
                let r = cursor..end;
                cursor = end;
                TensorData::Binary(r)
            }
            None => TensorData::Json(
                o.get("data")
                    .cloned()
                    .ok_or_else(|| format!("input {name}: neither `data` nor binary_data_size"))?,
            ),
        };
        inputs.push(InputTensor {
            name,
            datatype,
            shape,
            data,
        });
    }
    if cursor != body.len() {
        return Err(format!(
            "{} bytes of binary data after the last input",
            body.len() - cursor
        ));
    }
    let mut outputs = Vec::new();
    if let Some(outs) = obj.get("outputs") {
        let outs = outs
            .as_array()
            .ok_or("request JSON: `outputs` must be an array")?;
        for (i, o) in outs.iter().enumerate() {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("outputs[{i}]: `name` missing"))?
                .to_string();
            let p = o.get("parameters").and_then(Value::as_object);
            let binary = p
                .and_then(|p| p.get("binary_data"))
                .and_then(Value::as_bool);
            let classification = match p.and_then(|p| p.get("classification")) {
                None => None,
                Some(k) => Some(
                    k.as_u64()
                        .filter(|&k| (1..=65_536).contains(&k))
                        .ok_or_else(|| format!("output {name}: classification must be 1..=65536"))?
                        as usize,
                ),
            };
            outputs.push(RequestedOutput {
                name,
                binary,
                classification,
            });
        }
    }
    Ok(InferRequest {
        id: obj.get("id").cloned(),
        inputs,
        outputs,
        binary_default,
        timeout_us,
    })
}

/// Splits a BYTES tensor's raw buffer into its elements (u32-LE length +
/// bytes each).
pub fn split_bytes(buf: &[u8], what: &str) -> Result<Vec<Range<usize>>, String> {
    let mut v = Vec::new();
    let mut p = 0usize;
    while p < buf.len() {
        let Some(lb) = buf.get(p..p + 4) else {
            return Err(format!(
                "{what}[{}]: truncated length prefix ({} bytes left)",
                v.len(),
                buf.len() - p
            ));
        };
        let n = u32::from_le_bytes([lb[0], lb[1], lb[2], lb[3]]) as usize;
        let start = p + 4;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= buf.len())
            .ok_or_else(|| {
                format!(
                    "{what}[{}]: element of {n} bytes runs past the tensor data",
                    v.len()
                )
            })?;
        v.push(start..end);
        p = end;
    }
    Ok(v)
}

/// The elements of a BYTES input given as JSON: strings (their UTF-8 bytes),
/// possibly nested in arrays.
pub fn json_bytes(v: &Value, what: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<Vec<u8>>, what: &str) -> Result<(), String> {
        match v {
            Value::String(s) => {
                out.push(s.as_bytes().to_vec());
                Ok(())
            }
            Value::Array(a) => a.iter().try_for_each(|x| walk(x, out, what)),
            _ => Err(format!(
                "{what}[{}]: BYTES elements in JSON are strings",
                out.len()
            )),
        }
    }
    walk(v, &mut out, what)?;
    Ok(out)
}

/// FP32 elements given as JSON numbers (flat or nested), as LE bytes.
pub fn json_f32(v: &Value, what: &str, want: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(want.min(MAX_ELEMENTS) * 4);
    fn walk(v: &Value, out: &mut Vec<u8>, what: &str, want: usize) -> Result<(), String> {
        match v {
            Value::Number(n) => {
                if out.len() / 4 >= want {
                    return Err(format!("{what}: more than {want} elements"));
                }
                let f = n.as_f64().unwrap_or(f64::NAN) as f32;
                out.extend_from_slice(&f.to_le_bytes());
                Ok(())
            }
            Value::Array(a) => a.iter().try_for_each(|x| walk(x, out, what, want)),
            _ => Err(format!("{what}: FP32 elements in JSON are numbers")),
        }
    }
    walk(v, &mut out, what, want)?;
    if out.len() / 4 != want {
        return Err(format!(
            "{what}: {} elements, the shape needs {want}",
            out.len() / 4
        ));
    }
    Ok(out)
}

/// One output tensor of a response.
#[derive(Debug, Clone)]
pub struct OutTensor {
    pub name: String,
    /// Triton's datatype name (FP32, INT64, BYTES...).
    pub datatype: String,
    pub shape: Vec<i64>,
    /// Little-endian element bytes; for BYTES, the length-prefixed encoding.
    pub raw: Vec<u8>,
    pub binary: bool,
}

/// Element values as JSON (the `data` member of a JSON output).
fn json_data(t: &OutTensor) -> Value {
    let r = &t.raw;
    macro_rules! nums {
        ($ty:ty, $n:expr) => {
            Value::Array(
                r.chunks_exact($n)
                    .map(|c| json!(<$ty>::from_le_bytes(c.try_into().unwrap_or([0; $n]))))
                    .collect(),
            )
        };
    }
    match t.datatype.as_str() {
        "FP32" => Value::Array(
            r.chunks_exact(4)
                .map(|c| {
                    let f = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    // JSON has no NaN/inf; Triton writes them as null too.
                    serde_json::Number::from_f64(f as f64).map_or(Value::Null, Value::Number)
                })
                .collect(),
        ),
        "FP64" => Value::Array(
            r.chunks_exact(8)
                .map(|c| {
                    let f = f64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                })
                .collect(),
        ),
        "INT64" => nums!(i64, 8),
        "INT32" => nums!(i32, 4),
        "INT16" => nums!(i16, 2),
        "INT8" => nums!(i8, 1),
        "UINT8" => nums!(u8, 1),
        "UINT16" => nums!(u16, 2),
        "BOOL" => Value::Array(r.iter().map(|&b| json!(b != 0)).collect()),
        "BYTES" => Value::Array(
            split_bytes(r, &t.name)
                .unwrap_or_default()
                .into_iter()
                .map(|rg| json!(String::from_utf8_lossy(&r[rg])))
                .collect(),
        ),
        // FP16/BF16 in JSON: as their float values.
        "FP16" => Value::Array(
            r.chunks_exact(2)
                .map(|c| json!(half_to_f32(u16::from_le_bytes([c[0], c[1]]))))
                .collect(),
        ),
        "BF16" => Value::Array(
            r.chunks_exact(2)
                .map(|c| {
                    json!(f32::from_bits(
                        u32::from(u16::from_le_bytes([c[0], c[1]])) << 16
                    ))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

fn half_to_f32(h: u16) -> f32 {
    let s = u32::from(h >> 15) << 31;
    let e = (h >> 10) & 0x1f;
    let m = u32::from(h & 0x3ff);
    let bits = match e {
        0 if m == 0 => s,
        0 => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            s | (e << 23) | ((m & 0x3ff) << 13)
        }
        31 => s | 0x7f80_0000 | (m << 13),
        _ => s | ((u32::from(e) + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Builds a response body; returns it and the JSON header length when any
/// output is binary (for `Inference-Header-Content-Length`).
pub fn build_response(
    model: &str,
    version: &str,
    id: Option<&Value>,
    outputs: &[OutTensor],
    parameters: Map<String, Value>,
) -> (Vec<u8>, Option<usize>) {
    let mut outs = Vec::with_capacity(outputs.len());
    let mut binary = Vec::new();
    for t in outputs {
        let mut o = json!({"name": t.name, "datatype": t.datatype, "shape": t.shape});
        if t.binary {
            o["parameters"] = json!({"binary_data_size": t.raw.len()});
            binary.extend_from_slice(&t.raw);
        } else {
            o["data"] = json_data(t);
        }
        outs.push(o);
    }
    let mut head = json!({"model_name": model, "model_version": version, "outputs": outs});
    if let Some(id) = id {
        head["id"] = id.clone();
    }
    if !parameters.is_empty() {
        head["parameters"] = Value::Object(parameters);
    }
    let mut body = serde_json::to_vec(&head).unwrap_or_default();
    let any_binary = outputs.iter().any(|t| t.binary);
    let hlen = body.len();
    body.extend_from_slice(&binary);
    (body, any_binary.then_some(hlen))
}

/// Length-prefixed BYTES encoding of `items`.
pub fn encode_bytes<I: IntoIterator<Item = Vec<u8>>>(items: I) -> Vec<u8> {
    let mut v = Vec::new();
    for it in items {
        v.extend_from_slice(&(it.len() as u32).to_le_bytes());
        v.extend_from_slice(&it);
    }
    v
}

/// Triton's classification extension for one element: the top `k` scores
/// as "score:index[:label]", highest first (ties: lower index first).
pub fn classify(scores: &[f32], k: usize, labels: &[String]) -> Vec<Vec<u8>> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    idx.into_iter()
        .take(k)
        .map(|i| {
            let s = format!("{:.6}:{i}", scores[i]);
            match labels.get(i) {
                Some(l) if !l.is_empty() => format!("{s}:{l}").into_bytes(),
                _ => s.into_bytes(),
            }
        })
        .collect()
}

/// The JSON error body.
pub fn error_body(msg: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "error": msg })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_request(header: &Value, data: &[u8]) -> (Vec<u8>, usize) {
        let mut b = serde_json::to_vec(header).unwrap();
        let h = b.len();
        b.extend_from_slice(data);
        (b, h)
    }

    #[test]
    fn binary_bytes_input_round_trip() {
        let data = encode_bytes([b"abc".to_vec(), Vec::new(), vec![7u8; 10]]);
        let (body, h) = binary_request(
            &json!({"id": "x", "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [3, 1],
                "parameters": {"binary_data_size": data.len()}}],
                "outputs": [{"name": "output", "parameters": {"binary_data": true, "classification": 3}}]}),
            &data,
        );
        let r = parse_infer(&body, Some(h)).unwrap();
        assert_eq!(r.id, Some(json!("x")));
        let TensorData::Binary(rg) = &r.inputs[0].data else {
            panic!()
        };
        let el = split_bytes(&body[rg.clone()], "IMAGE").unwrap();
        let el: Vec<&[u8]> = el.iter().map(|e| &body[rg.start..][e.clone()]).collect();
        assert_eq!(el, [&b"abc"[..], &b""[..], &[7u8; 10][..]]);
        assert_eq!(r.outputs[0].classification, Some(3));
        assert_eq!(r.outputs[0].binary, Some(true));
    }

    #[test]
    fn framing_errors_name_the_input() {
        for (hdr, data, hlen, want) in [
            (json!({"inputs": []}), vec![], None, "empty"),
            (
                json!({"inputs": [{"name": "IMAGE", "shape": [1]}]}),
                vec![],
                None,
                "datatype",
            ),
            (
                json!({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 100}}]}),
                vec![0u8; 10],
                Some(0),
                "runs past",
            ),
            (
                json!({"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 2}}]}),
                vec![0u8; 10],
                Some(0),
                "after the last input",
            ),
            (
                json!({"inputs": [{"name": "I", "datatype": "FP32", "shape": [-1]}]}),
                vec![],
                None,
                "non-negative",
            ),
            (
                json!({"inputs": [{"name": "I", "datatype": "FP32", "shape": [1]}]}),
                vec![],
                None,
                "neither",
            ),
        ] {
            let (body, h) = binary_request(&hdr, &data);
            let hl = hlen.map(|_| h);
            let e = parse_infer(&body, hl).unwrap_err();
            assert!(e.contains(want), "{e} (want {want})");
        }
        assert!(
            parse_infer(b"{", None)
                .unwrap_err()
                .contains("request JSON")
        );
        assert!(
            parse_infer(b"{}", Some(10))
                .unwrap_err()
                .contains("larger than the body")
        );
        assert!(
            split_bytes(&[5, 0, 0, 0, 1], "IMAGE")
                .unwrap_err()
                .contains("IMAGE[0]")
        );
        assert!(
            split_bytes(&[0, 0, 0, 0, 1], "IMAGE")
                .unwrap_err()
                .contains("IMAGE[1]")
        );
    }

    #[test]
    fn json_values() {
        assert_eq!(
            json_bytes(&json!([["a"], ["bc"]]), "X").unwrap(),
            [b"a".to_vec(), b"bc".to_vec()]
        );
        assert!(json_bytes(&json!([1]), "X").is_err());
        let f = json_f32(&json!([[1.0, 2.5]]), "X", 2).unwrap();
        assert_eq!(f, [1.0f32.to_le_bytes(), 2.5f32.to_le_bytes()].concat());
        assert!(
            json_f32(&json!([1.0]), "X", 2)
                .unwrap_err()
                .contains("needs 2")
        );
        assert!(json_f32(&json!([1.0, 2.0, 3.0]), "X", 2).is_err());
    }

    #[test]
    fn responses_json_and_binary() {
        let t = OutTensor {
            name: "out".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            raw: [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat(),
            binary: false,
        };
        let (b, h) = build_response(
            "m",
            "1",
            Some(&json!("id1")),
            std::slice::from_ref(&t),
            Map::new(),
        );
        assert!(h.is_none());
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["outputs"][0]["data"], json!([1.5, -2.0]));
        assert_eq!(v["id"], json!("id1"));
        let tb = OutTensor { binary: true, ..t };
        let (b, h) = build_response("m", "1", None, &[tb], Map::new());
        let h = h.unwrap();
        let v: Value = serde_json::from_slice(&b[..h]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], json!(8));
        assert_eq!(b.len() - h, 8);
    }

    #[test]
    fn classification_order_and_labels() {
        let c = classify(&[0.1, 0.9, 0.5, 0.9], 3, &["a".into(), "b".into()]);
        let c: Vec<String> = c
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        assert_eq!(c, ["0.900000:1:b", "0.900000:3", "0.500000:2"]);
    }

    #[test]
    fn half_floats() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 5.960_464_5e-8);
    }
}
