//! Helpers shared by the audio tests: fixture paths, the golden manifest and
//! a tiny .npy reader (little-endian f32, C order), so no Python is needed.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn read(rel: &str) -> Vec<u8> {
    let p = root().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// fixtures/golden/audio/index.json
pub fn manifest() -> serde_json::Value {
    let text = read("fixtures/golden/audio/index.json");
    serde_json::from_slice(&text).expect("index.json parses")
}

pub fn files() -> Vec<serde_json::Value> {
    manifest()["files"].as_array().expect("files").clone()
}

/// Reads a 2-D little-endian f32 .npy (format 1.0/2.0/3.0, C order).
pub fn read_npy(rel: &str) -> (Vec<usize>, Vec<f32>) {
    let b = read(rel);
    assert_eq!(&b[..6], b"\x93NUMPY", "{rel}: not .npy");
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        _ => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).expect("ascii header");
    assert!(header.contains("'descr': '<f4'"), "{rel}: {header}");
    assert!(header.contains("'fortran_order': False"), "{rel}: {header}");
    let s = header.find("'shape': (").expect("shape") + "'shape': (".len();
    let e = s + header[s..].find(')').expect("shape end");
    let shape: Vec<usize> = header[s..e]
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().expect("dim"))
        .collect();
    let data: Vec<f32> = b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{rel}: size");
    (shape, data)
}

/// (mean absolute difference, max absolute difference).
pub fn diff(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let mut sum = 0f64;
    let mut max = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (*x as f64 - *y as f64).abs();
        sum += d;
        max = max.max(d);
    }
    (sum / a.len().max(1) as f64, max)
}
