//! Input files and the infer request bodies built from them.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::LoadgenError;
use crate::client::Body;

pub(crate) struct InputFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

pub(crate) fn read_inputs(paths: &[PathBuf]) -> Result<Vec<InputFile>, LoadgenError> {
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| LoadgenError::Input {
                path: p.clone(),
                reason: e.to_string(),
            })?;
            if bytes.is_empty() {
                return Err(LoadgenError::Input {
                    path: p.clone(),
                    reason: "empty file".into(),
                });
            }
            Ok(InputFile {
                path: p.clone(),
                bytes,
            })
        })
        .collect()
}

fn input_err(path: &Path, reason: impl Into<String>) -> LoadgenError {
    LoadgenError::Input {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A `.npy` float32 little-endian C-order tensor: (shape, raw data bytes).
pub(crate) fn parse_npy(path: &Path, b: &[u8]) -> Result<(Vec<usize>, Vec<u8>), LoadgenError> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(input_err(path, "not a .npy file"));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(input_err(path, format!(".npy version {v} not supported"))),
    };
    let header = b
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| input_err(path, "truncated .npy header"))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or_else(|| input_err(path, ".npy header has no descr"))?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        return Err(input_err(
            path,
            format!(
                "dtype {} is not float32 little-endian",
                &descr[..descr.find(',').unwrap_or(descr.len())]
            ),
        ));
    }
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(input_err(path, "Fortran-order .npy not supported"));
    }
    let shape_txt = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| input_err(path, ".npy header has no shape"))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| input_err(path, format!("bad .npy shape ({shape_txt})")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = &b[start + hlen..];
    let want = shape.iter().product::<usize>() * 4;
    if data.len() != want {
        return Err(input_err(
            path,
            format!("{} data bytes for shape {shape:?}, want {want}", data.len()),
        ));
    }
    Ok((shape, data.to_vec()))
}

fn names(list: &[Value]) -> String {
    list.iter()
        .filter_map(|i| i.get("name")?.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks the model input to fill, checks the files against it and builds one
/// body per file (the batch of `batch` files starting there, round-robin).
pub(crate) fn build_bodies(
    meta: &Value,
    files: &[InputFile],
    ideal: bool,
    batch: usize,
) -> Result<(String, Vec<Body>), LoadgenError> {
    let model = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("the model");
    let inputs = meta
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| LoadgenError::Protocol(format!("metadata of {model} lists no inputs")))?;
    let outputs: Vec<&str> = meta
        .get("outputs")
        .and_then(Value::as_array)
        .map(|o| o.iter().filter_map(|o| o.get("name")?.as_str()).collect())
        .unwrap_or_default();
    let (name, datatype, elem_shape, elems): (String, &str, Vec<usize>, Vec<Vec<u8>>) = if ideal {
        // preba serve lists only IMAGE/AUDIO as inputs (so perf_analyzer
        // sends those) and names the preprocessed tensor input in the
        // metadata's parameters.
        let input = inputs
            .iter()
            .find(|i| i.get("datatype").and_then(Value::as_str) == Some("FP32"))
            .or_else(|| {
                meta.get("parameters")
                    .and_then(|p| p.get("preba_tensor_input"))
                    .filter(|i| i.get("datatype").and_then(Value::as_str) == Some("FP32"))
            })
            .ok_or_else(|| {
                LoadgenError::Usage(format!(
                    "--ideal: {model} has no FP32 input (inputs: {})",
                    names(inputs)
                ))
            })?;
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        // Model dims without the batch dimension; -1 matches anything.
        let dims: Vec<i64> = input
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_i64).skip(1).collect())
            .unwrap_or_default();
        let mut shape = None::<Vec<usize>>;
        let mut elems = Vec::new();
        for f in files {
            let (mut s, data) = parse_npy(&f.path, &f.bytes)?;
            if s.len() == dims.len() + 1 && s.first() == Some(&1) {
                s.remove(0);
            }
            let fits = !dims.is_empty()
                && s.len() == dims.len()
                && s.iter().zip(&dims).all(|(&a, &d)| d < 0 || a as i64 == d);
            if !fits && !dims.is_empty() {
                return Err(input_err(
                    &f.path,
                    format!(
                        "shape {s:?} does not fit input {name} {dims:?} (after the batch dimension)"
                    ),
                ));
            }
            if shape.as_ref().is_some_and(|sh| *sh != s) {
                return Err(input_err(
                    &f.path,
                    format!("shape {s:?} differs from the other inputs' {shape:?}"),
                ));
            }
            shape = Some(s);
            elems.push(data);
        }
        (name, "FP32", shape.unwrap_or_default(), elems)
    } else {
        let input = inputs
            .iter()
            .find(|i| matches!(i.get("name").and_then(Value::as_str), Some("IMAGE" | "AUDIO")))
            .ok_or_else(|| {
                LoadgenError::Usage(format!(
                    "{model} has no IMAGE or AUDIO input (inputs: {}); for preprocessed tensors use --ideal",
                    names(inputs)
                ))
            })?;
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for f in files {
            let jpeg = f.bytes.starts_with(&[0xff, 0xd8]);
            let wav = f.bytes.starts_with(b"RIFF");
            if name == "IMAGE" && wav {
                return Err(input_err(
                    &f.path,
                    format!("a WAV file, but {model} takes IMAGE (JPEG)"),
                ));
            }
            if name == "AUDIO" && jpeg {
                return Err(input_err(
                    &f.path,
                    format!("a JPEG file, but {model} takes AUDIO (WAV)"),
                ));
            }
        }
        let elems = files
            .iter()
            .map(|f| {
                let mut e = Vec::with_capacity(4 + f.bytes.len());
                e.extend_from_slice(&(f.bytes.len() as u32).to_le_bytes());
                e.extend_from_slice(&f.bytes);
                e
            })
            .collect();
        (name, "BYTES", vec![1], elems)
    };
    let bodies = (0..elems.len())
        .map(|start| {
            let mut data = Vec::new();
            for k in 0..batch {
                data.extend_from_slice(&elems[(start + k) % elems.len()]);
            }
            let mut shape = vec![batch];
            shape.extend_from_slice(&elem_shape);
            let mut header = json!({
                "inputs": [{
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": data.len()},
                }],
            });
            if !outputs.is_empty() {
                header["outputs"] = outputs
                    .iter()
                    .map(|o| json!({"name": o, "parameters": {"binary_data": true}}))
                    .collect();
            }
            let mut bytes = serde_json::to_vec(&header).expect("JSON of plain values");
            let json_len = bytes.len();
            bytes.extend_from_slice(&data);
            Body {
                bytes: Bytes::from(bytes),
                json_len,
            }
        })
        .collect();
    Ok((name, bodies))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn npy(shape: &[usize]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let mut h = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
            dims.join(", ")
        );
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.resize(b.len() + shape.iter().product::<usize>() * 4, 0);
        b
    }

    #[test]
    fn npy_shapes() {
        let p = Path::new("x.npy");
        assert_eq!(
            parse_npy(p, &npy(&[1, 3, 4, 4])).unwrap().0,
            vec![1, 3, 4, 4]
        );
        let mut bad = npy(&[3, 4, 4]);
        bad.pop();
        assert!(parse_npy(p, &bad).is_err());
        assert!(parse_npy(p, b"\xff\xd8 not npy").is_err());
    }

    #[test]
    fn bytes_bodies_round_robin() {
        let files = vec![
            InputFile {
                path: "a.jpg".into(),
                bytes: vec![0xff, 0xd8, 1],
            },
            InputFile {
                path: "b.jpg".into(),
                bytes: vec![0xff, 0xd8, 2, 2],
            },
        ];
        let meta = json!({"name": "m", "inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [-1, 1]}],
                          "outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 1000]}]});
        let (name, bodies) = build_bodies(&meta, &files, false, 3).unwrap();
        assert_eq!(name, "IMAGE");
        let b = &bodies[1];
        let header: Value = serde_json::from_slice(&b.bytes[..b.json_len]).unwrap();
        assert_eq!(header["inputs"][0]["shape"], json!([3, 1]));
        assert_eq!(
            header["outputs"][0]["parameters"]["binary_data"],
            json!(true)
        );
        let data = &b.bytes[b.json_len..];
        assert_eq!(
            header["inputs"][0]["parameters"]["binary_data_size"],
            json!(data.len())
        );
        assert_eq!(
            data,
            [
                4, 0, 0, 0, 0xff, 0xd8, 2, 2, 3, 0, 0, 0, 0xff, 0xd8, 1, 4, 0, 0, 0, 0xff, 0xd8, 2,
                2
            ]
        );
        let wav = vec![InputFile {
            path: "a.wav".into(),
            bytes: b"RIFF....".to_vec(),
        }];
        assert_eq!(
            build_bodies(&meta, &wav, false, 1).unwrap_err().exit_code(),
            2
        );
    }

    #[test]
    fn ideal_bodies() {
        let meta = json!({"name": "m", "inputs": [
            {"name": "IMAGE", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "input", "datatype": "FP32", "shape": [-1, 3, 4, 4]}]});
        let files = vec![InputFile {
            path: "a.npy".into(),
            bytes: npy(&[1, 3, 4, 4]),
        }];
        let (name, bodies) = build_bodies(&meta, &files, true, 2).unwrap();
        assert_eq!(name, "input");
        let b = &bodies[0];
        let header: Value = serde_json::from_slice(&b.bytes[..b.json_len]).unwrap();
        assert_eq!(header["inputs"][0]["shape"], json!([2, 3, 4, 4]));
        assert_eq!(b.bytes.len() - b.json_len, 2 * 48 * 4);
        let wrong = vec![InputFile {
            path: "a.npy".into(),
            bytes: npy(&[3, 5, 5]),
        }];
        assert_eq!(
            build_bodies(&meta, &wrong, true, 1)
                .unwrap_err()
                .exit_code(),
            2
        );
    }
}
