//! `preba preprocess` against its contract, on the committed fixtures.

mod common;

use preba_preprocess::{audio, image};
use preba_protocol::profile::{AudioProfile, Dtype, ImageProfile, Layout};
use std::path::PathBuf;
use std::process::Command;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    common::fixtures(kind, &["jpg", "wav"])
}

fn preba(args: &[&str], inputs: &[PathBuf]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_preba"))
        .args(args)
        .args(inputs)
        .output()
        .unwrap();
    common::code_and_stderr(&out)
}

/// Minimal .npy reader: (descr, shape, data).
fn read_npy(bytes: &[u8]) -> (String, Vec<usize>, &[u8]) {
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let n = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let h = std::str::from_utf8(&bytes[10..10 + n]).unwrap();
    let descr = h
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    let shape = h
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (descr, shape, &bytes[10 + n..])
}

/// Members of a stored zip: name -> bytes.
fn read_npz(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p + 30 <= bytes.len() && bytes[p..p + 4] == 0x0403_4b50u32.to_le_bytes() {
        let size = u32::from_le_bytes(bytes[p + 18..p + 22].try_into().unwrap()) as usize;
        let nlen = u16::from_le_bytes(bytes[p + 26..p + 28].try_into().unwrap()) as usize;
        let name = String::from_utf8(bytes[p + 30..p + 30 + nlen].to_vec()).unwrap();
        let start = p + 30 + nlen;
        let data = &bytes[start..start + size];
        assert_eq!(
            crc32fast::hash(data),
            u32::from_le_bytes(bytes[p + 14..p + 18].try_into().unwrap())
        );
        out.push((name, data.to_vec()));
        p = start + size;
    }
    out
}

#[test]
fn images_contract() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.npy");
    let man = dir.path().join("m.json");
    let inputs = fixtures("images");
    let (code, stderr) = preba(
        &[
            "preprocess",
            "--card",
            "cpu",
            "-o",
            out.to_str().unwrap(),
            "--manifest",
            man.to_str().unwrap(),
        ],
        &inputs,
    );
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&man).unwrap()).unwrap();
    let entries = m["inputs"].as_array().unwrap();
    assert_eq!(entries.len(), inputs.len(), "one manifest entry per input");
    let bytes = std::fs::read(&out).unwrap();
    let (descr, shape, data) = read_npy(&bytes);
    assert_eq!(descr, "|u1");
    let mut ok = 0;
    for (i, (e, p)) in entries.iter().zip(&inputs).enumerate() {
        assert_eq!(
            e["path"],
            p.display().to_string(),
            "entry {i} in input order"
        );
        let want = image::preprocess_image(&std::fs::read(p).unwrap(), &ImageProfile::default());
        match want {
            Ok(o) => {
                assert_eq!(e["status"], "ok");
                assert_eq!(e["index"], ok);
                assert_eq!(e["via"], "cpu");
                assert_eq!(e["width"], o.width);
                let n = o.data.len();
                assert_eq!(&data[ok * n..(ok + 1) * n], &o.data[..], "{}", p.display());
                ok += 1;
            }
            Err(err) => {
                assert_eq!(e["status"], "error");
                assert_eq!(e["index"], serde_json::Value::Null);
                let line = format!("{}: {}", p.display(), err);
                assert!(stderr.lines().any(|l| l == line), "stderr lacks `{line}`");
            }
        }
    }
    assert_eq!(shape, vec![ok, 3, 224, 224]);
    assert!(
        ok > 20 && ok < inputs.len(),
        "fixtures hold good and bad files"
    );
    assert_eq!(code, 1, "some inputs failed");
}

#[test]
fn normalized_nhwc_f32_and_all_ok_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("n.npy");
    let inputs: Vec<PathBuf> = common::fixtures_named("images", &["jpg"], "sampling_4");
    assert!(inputs.len() >= 3);
    let args = [
        "preprocess",
        "--card",
        "cpu",
        "--resize",
        "160",
        "--crop",
        "128",
        "--mean",
        "0.5,0.4,0.3",
        "--std",
        "0.2,0.25,0.3",
        "--layout",
        "nhwc",
        "--threads",
        "2",
        "-o",
        out.to_str().unwrap(),
    ];
    let (code, stderr) = preba(&args, &inputs);
    assert_eq!(code, 0, "{stderr}");
    let bytes = std::fs::read(&out).unwrap();
    let (descr, shape, data) = read_npy(&bytes);
    assert_eq!(
        (descr.as_str(), shape),
        ("<f4", vec![inputs.len(), 128, 128, 3])
    );
    let profile = ImageProfile {
        resize: 160,
        crop: 128,
        normalize: true,
        mean: [0.5, 0.4, 0.3],
        std: [0.2, 0.25, 0.3],
        dtype: Dtype::F32,
        layout: Layout::Nhwc,
    };
    let want = image::preprocess_image(&std::fs::read(&inputs[1]).unwrap(), &profile).unwrap();
    let n = want.data.len();
    assert_eq!(&data[n..2 * n], &want.data[..]);
}

#[test]
fn audio_contract() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.npz");
    let man = dir.path().join("m.json");
    let inputs = fixtures("audio");
    let (code, _) = preba(
        &[
            "preprocess",
            "--card",
            "cpu",
            "-o",
            out.to_str().unwrap(),
            "--manifest",
            man.to_str().unwrap(),
        ],
        &inputs,
    );
    assert_eq!(code, 1);
    let members = read_npz(&std::fs::read(&out).unwrap());
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&man).unwrap()).unwrap();
    let entries = m["inputs"].as_array().unwrap();
    assert_eq!(entries.len(), inputs.len());
    let mut seen = 0;
    for (i, (e, p)) in entries.iter().zip(&inputs).enumerate() {
        match audio::preprocess_audio(&std::fs::read(p).unwrap(), &AudioProfile::default()) {
            Ok(o) => {
                let (name, npy) = &members[seen];
                assert_eq!(name, &format!("{i}.npy"), "keyed by argument position");
                let (descr, shape, data) = read_npy(npy);
                assert_eq!(
                    (descr.as_str(), shape),
                    ("<f4", vec![80, o.features.frames])
                );
                let want: Vec<u8> = o
                    .features
                    .data
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                assert_eq!(data, &want[..]);
                assert_eq!(e["sample_rate"], o.info.sample_rate);
                seen += 1;
            }
            Err(_) => assert_eq!(e["status"], "error"),
        }
    }
    assert_eq!(seen, members.len());
    assert!(seen > 10);
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixtures("images")
        .into_iter()
        .find(|p| p.ends_with("size_17x17.jpg"))
        .unwrap();
    let wav = fixtures("audio")
        .into_iter()
        .find(|p| p.ends_with("speech_16k_s16.wav"))
        .unwrap();
    let o = dir.path().join("x.npy");
    let o = o.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Vec<PathBuf>)> = vec![
        (vec!["preprocess", "-o", o], vec![]),
        (
            vec![
                "preprocess",
                "-o",
                o,
                "--dtype",
                "u8",
                "--mean",
                "1,1,1",
                "--std",
                "1,1,1",
            ],
            vec![img.clone()],
        ),
        (
            vec!["preprocess", "-o", o, "--mean", "1,1,1"],
            vec![img.clone()],
        ),
        (
            vec!["preprocess", "-o", o, "--crop", "300"],
            vec![img.clone()],
        ),
        (
            vec!["preprocess", "-o", o, "--card", "gpu"],
            vec![img.clone()],
        ),
        (
            vec!["preprocess", "-o", o, "--resize", "100"],
            vec![wav.clone()],
        ),
        (vec!["preprocess", "-o", o], vec![wav.clone()]),
        (
            vec!["preprocess", "-o", o, "--std", "1,2"],
            vec![img.clone()],
        ),
    ];
    for (args, inputs) in cases {
        let (code, stderr) = preba(&args, &inputs);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(!stderr.is_empty());
    }
}

#[test]
fn mixed_kinds_fail_per_input() {
    let dir = tempfile::tempdir().unwrap();
    let img = fixtures("images")
        .into_iter()
        .find(|p| p.ends_with("size_17x17.jpg"))
        .unwrap();
    let wav = fixtures("audio")
        .into_iter()
        .find(|p| p.ends_with("speech_16k_s16.wav"))
        .unwrap();
    let missing = dir.path().join("nope.jpg");
    let o = dir.path().join("x.npy");
    let (code, stderr) = preba(
        &["preprocess", "--card", "cpu", "-o", o.to_str().unwrap()],
        &[img, wav.clone(), missing.clone()],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "{}: is a WAV file, but this run preprocesses images",
            wav.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}: cannot read", missing.display())),
        "{stderr}"
    );
    let (_, shape, _) = read_npy(&std::fs::read(&o).unwrap());
    assert_eq!(shape, vec![1, 3, 224, 224]);
}

/// An output that cannot be written (here: past the file size limit, the
/// way a full disk fails a worker's row write) stops the run with an error
/// naming the output (`preba: PATH: reason`, exit 1 as for any failure that
/// is not a usage error), not a signal or a hang.
#[test]
fn output_write_failure_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("big.npy");
    let inputs: Vec<PathBuf> = common::fixtures_named("images", &["jpg"], "imagenet_");
    assert!(inputs.len() >= 6);
    // 1,000 KiB: six u8 rows are 882 KiB after the header, so the limit
    // falls inside a row, whichever worker writes it. SIGXFSZ ignored (an
    // ignored signal stays ignored across exec), so the write gets EFBIG.
    let script = format!(
        "trap '' XFSZ; ulimit -f 2000; exec \"$0\" preprocess --card cpu --threads 2 -o {} \"$@\"",
        out.display()
    );
    let mut inputs12 = inputs.clone();
    inputs12.extend(inputs.iter().cloned());
    let res = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_preba"))
        .args(&inputs12)
        .output()
        .unwrap();
    let (code, stderr) = common::code_and_stderr(&res);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("preba: {}: ", out.display())) && stderr.contains("too large"),
        "{stderr}"
    );
}
