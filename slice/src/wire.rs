//! Server <-> worker protocol over the worker's stdin/stdout.
//!
//! Each message is a u32-LE length followed by that many bytes of JSON
//! (serde_json), at most [`MAX_MESSAGE`] bytes. The server sends
//! [`Request`]s; the worker answers [`Reply::Hello`] once at start, then
//! exactly one [`Reply::Batch`] or [`Reply::Error`] per request, in order.
//! Tensors travel through the shared arena as `(offset, len)` ranges, so
//! messages stay small; JSON keeps them readable in a log.
//!
//! Either side may be hostile or broken: a bad length, truncated body or
//! garbled JSON is a [`SliceError::Wire`], never a panic or an unbounded
//! allocation.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::{Dtype, ModelMeta, SliceError, SliceSpec};

/// Largest message body in bytes.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Where one input's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Source {
    /// `(offset, len)` ranges of the arena, concatenated in order.
    Arena(Vec<(u64, u64)>),
    /// The bytes themselves (small inputs, tests).
    Inline(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputBinding {
    pub name: String,
    pub dtype: Dtype,
    /// Concrete, batch first.
    pub shape: Vec<i64>,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchRequest {
    pub id: u64,
    pub inputs: Vec<InputBinding>,
    /// Audio: the length bucket the batch is padded to (its longest input's,
    /// 2.5 s wide as in the profile table); a modeled slice sleeps that
    /// bucket's latency. `None` for images.
    #[serde(default)]
    pub bucket: Option<u32>,
    /// Where results go in the arena: `out_off .. out_off + out_cap`.
    pub out_off: u64,
    pub out_cap: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputBinding {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<i64>,
    /// Arena offset and length of the output's bytes (row-major).
    pub off: u64,
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchReply {
    pub id: u64,
    pub outputs: Vec<OutputBinding>,
    /// True when a modeled slice produced zeros after sleeping its latency.
    pub modeled: bool,
    /// Time in the runtime (not counting input gathering or output copies).
    pub exec_ns: u64,
    /// Inputs copied because their ranges were not one contiguous run.
    pub gather_copies: u32,
}

/// Server -> worker.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Request {
    Batch(BatchRequest),
}

/// Worker -> server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// Sent once the model is loaded: the worker is ready for batches.
    Hello {
        meta: ModelMeta,
        runtime: String,
    },
    Batch(BatchReply),
    /// A per-batch failure (bad shape, ORT error); the worker stays up.
    Error {
        id: u64,
        message: String,
    },
}

/// Encodes one message (length prefix included).
pub fn encode<T: serde::Serialize>(msg: &T) -> Result<Vec<u8>, SliceError> {
    let body = serde_json::to_vec(msg).map_err(|e| SliceError::Wire(format!("encode: {e}")))?;
    if body.len() > MAX_MESSAGE {
        return Err(SliceError::Wire(format!(
            "message of {} bytes is over the {MAX_MESSAGE}-byte limit",
            body.len()
        )));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes one whole message from `buf` (prefix + body, nothing after it).
pub fn decode<T: serde::de::DeserializeOwned>(buf: &[u8]) -> Result<T, SliceError> {
    let (prefix, body) = buf.split_first_chunk::<4>().ok_or_else(|| {
        SliceError::Wire(format!(
            "{} bytes is shorter than a length prefix",
            buf.len()
        ))
    })?;
    let n = check_len(*prefix)?;
    if body.len() != n {
        return Err(SliceError::Wire(format!(
            "length prefix says {n} bytes, {} follow",
            body.len()
        )));
    }
    parse(body)
}

fn check_len(prefix: [u8; 4]) -> Result<usize, SliceError> {
    let n = u32::from_le_bytes(prefix) as usize;
    if n > MAX_MESSAGE {
        return Err(SliceError::Wire(format!(
            "length prefix {n} is over the {MAX_MESSAGE}-byte limit"
        )));
    }
    Ok(n)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, SliceError> {
    serde_json::from_slice(body).map_err(|e| SliceError::Wire(format!("bad message: {e}")))
}

/// Writes one message and flushes.
pub fn write_msg<T: serde::Serialize>(w: &mut impl Write, msg: &T) -> Result<(), SliceError> {
    let buf = encode(msg)?;
    w.write_all(&buf)
        .and_then(|()| w.flush())
        .map_err(|e| SliceError::io("write message", e))
}

/// Reads one message. Ok(None) on a clean EOF before the first byte; EOF in
/// the middle of a message is an error.
pub fn read_msg<T: serde::de::DeserializeOwned>(
    r: &mut impl Read,
) -> Result<Option<T>, SliceError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(SliceError::Wire("EOF inside a length prefix".into())),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SliceError::io("read message", e)),
        }
    }
    let n = check_len(prefix)?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            SliceError::Wire(format!("EOF inside a {n}-byte message"))
        } else {
            SliceError::io("read message", e)
        }
    })?;
    parse(&body).map(Some)
}

/// Everything a worker process needs, passed as its command line (after
/// `worker`).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSpec {
    /// Slice name for messages, e.g. "squeezenet/cpu1".
    pub name: String,
    pub slice: SliceSpec,
    /// The .onnx file.
    pub model: PathBuf,
    /// "/proc/<pid>/fd/<n>" of the server's arena memfd.
    pub arena: PathBuf,
    pub arena_len: u64,
    /// libonnxruntime.so; None -> [`crate::find_onnxruntime`].
    pub onnxruntime: Option<PathBuf>,
    /// For modeled slices: (batch, latency ns) points; linear interpolation
    /// between them, extrapolation along the end segments.
    pub modeled_latency_ns: Vec<(u32, u64)>,
    /// For modeled audio slices: the same per length bucket (index = bucket,
    /// the last one taking everything longer); empty: `modeled_latency_ns`
    /// for every batch.
    pub modeled_bucket_latency_ns: Vec<Vec<(u32, u64)>>,
}

impl WorkerSpec {
    /// `--name N --model P --arena P --arena-len L` plus one of `--cpu
    /// THREADS`, `--cuda DEVICE`, `--modeled TYPE`, then optional
    /// `--onnxruntime P`, repeated `--latency BATCH:NS` and repeated
    /// `--bucket-latency BUCKET:BATCH:NS`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--name".to_string(),
            self.name.clone(),
            "--model".into(),
            self.model.to_string_lossy().into_owned(),
            "--arena".into(),
            self.arena.to_string_lossy().into_owned(),
            "--arena-len".into(),
            self.arena_len.to_string(),
        ];
        match &self.slice {
            SliceSpec::Cpu { threads } => a.extend(["--cpu".into(), threads.to_string()]),
            SliceSpec::Cuda { device } => a.extend(["--cuda".into(), device.clone()]),
            SliceSpec::Modeled { slice_type } => a.extend(["--modeled".into(), slice_type.clone()]),
        }
        if let Some(p) = &self.onnxruntime {
            a.extend(["--onnxruntime".into(), p.to_string_lossy().into_owned()]);
        }
        for (b, ns) in &self.modeled_latency_ns {
            a.extend(["--latency".into(), format!("{b}:{ns}")]);
        }
        for (k, pts) in self.modeled_bucket_latency_ns.iter().enumerate() {
            for (b, ns) in pts {
                a.extend(["--bucket-latency".into(), format!("{k}:{b}:{ns}")]);
            }
        }
        a
    }

    pub fn from_args(args: &[String]) -> Result<WorkerSpec, SliceError> {
        let bad = |m: String| SliceError::Args(m);
        let (mut name, mut model, mut arena, mut arena_len) = (None, None, None, None);
        let (mut slice, mut ort, mut lat) = (None, None, Vec::new());
        let mut bucket_lat: Vec<Vec<(u32, u64)>> = Vec::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| bad(format!("{flag} needs a value")))
            };
            let num = |v: &str, what: &str| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("{what} {v:?} is not a number")))
            };
            let set_slice = |slice: &mut Option<SliceSpec>, s: SliceSpec| {
                if slice.replace(s).is_some() {
                    return Err(bad("more than one of --cpu/--cuda/--modeled".into()));
                }
                Ok(())
            };
            match flag.as_str() {
                "--name" => name = Some(val()?),
                "--model" => model = Some(PathBuf::from(val()?)),
                "--arena" => arena = Some(PathBuf::from(val()?)),
                "--arena-len" => arena_len = Some(num(&val()?, "--arena-len")?),
                "--cpu" => {
                    let t = num(&val()?, "--cpu")?;
                    if t == 0 || t > 1024 {
                        return Err(bad(format!("--cpu {t}: threads must be 1..=1024")));
                    }
                    set_slice(
                        &mut slice,
                        SliceSpec::Cpu {
                            threads: t as usize,
                        },
                    )?
                }
                "--cuda" => set_slice(&mut slice, SliceSpec::Cuda { device: val()? })?,
                "--modeled" => set_slice(&mut slice, SliceSpec::Modeled { slice_type: val()? })?,
                "--onnxruntime" => ort = Some(PathBuf::from(val()?)),
                "--latency" => {
                    let v = val()?;
                    let (b, ns) = v
                        .split_once(':')
                        .ok_or_else(|| bad(format!("--latency {v:?}: want BATCH:NS")))?;
                    let b = u32::try_from(num(b, "--latency batch")?)
                        .map_err(|_| bad(format!("--latency {v:?}: batch too large")))?;
                    lat.push((b, num(ns, "--latency ns")?));
                }
                "--bucket-latency" => {
                    let v = val()?;
                    let mut f = v.splitn(3, ':');
                    let (Some(k), Some(b), Some(ns)) = (f.next(), f.next(), f.next()) else {
                        return Err(bad(format!("--bucket-latency {v:?}: want BUCKET:BATCH:NS")));
                    };
                    let k = num(k, "--bucket-latency bucket")?;
                    if k >= 64 {
                        return Err(bad(format!("--bucket-latency {v:?}: bucket must be < 64")));
                    }
                    let b = u32::try_from(num(b, "--bucket-latency batch")?)
                        .map_err(|_| bad(format!("--bucket-latency {v:?}: batch too large")))?;
                    let k = k as usize;
                    if bucket_lat.len() <= k {
                        bucket_lat.resize(k + 1, Vec::new());
                    }
                    bucket_lat[k].push((b, num(ns, "--bucket-latency ns")?));
                }
                other => return Err(bad(format!("unknown argument {other:?}"))),
            }
        }
        fn need<T>(o: Option<T>, f: &str) -> Result<T, SliceError> {
            o.ok_or_else(|| SliceError::Args(format!("missing {f}")))
        }
        Ok(WorkerSpec {
            name: need(name, "--name")?,
            slice: need(slice, "--cpu, --cuda or --modeled")?,
            model: need(model, "--model")?,
            arena: need(arena, "--arena")?,
            arena_len: need(arena_len, "--arena-len")?,
            onnxruntime: ort,
            modeled_latency_ns: lat,
            modeled_bucket_latency_ns: bucket_lat,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req() -> Request {
        Request::Batch(BatchRequest {
            id: 7,
            bucket: None,
            inputs: vec![InputBinding {
                name: "input".into(),
                dtype: Dtype::F32,
                shape: vec![2, 3],
                source: Source::Arena(vec![(0, 12), (64, 12)]),
            }],
            out_off: 4096,
            out_cap: 100,
        })
    }

    #[test]
    fn round_trip_through_a_pipe() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &req()).unwrap();
        write_msg(&mut buf, &req()).unwrap();
        assert_eq!(decode::<Request>(&buf[..buf.len() / 2]).unwrap(), req());
        let mut r = &buf[..];
        assert_eq!(read_msg::<Request>(&mut r).unwrap(), Some(req()));
        assert_eq!(read_msg::<Request>(&mut r).unwrap(), Some(req()));
        assert_eq!(read_msg::<Request>(&mut r).unwrap(), None);
        let mut cut = &buf[..buf.len() / 2 - 1];
        assert!(
            read_msg::<Request>(&mut cut)
                .unwrap_err()
                .to_string()
                .contains("EOF inside")
        );
        let mut cut = &buf[..2];
        assert!(read_msg::<Request>(&mut cut).is_err());
    }

    #[test]
    fn oversized_prefix_is_refused_without_allocating() {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        let e = read_msg::<Request>(&mut r).unwrap_err().to_string();
        assert!(e.contains("over the"), "{e}");
        let big = Reply::Error {
            id: 1,
            message: "x".repeat(MAX_MESSAGE),
        };
        assert!(encode(&big).is_err());
    }

    #[test]
    fn worker_spec_args_round_trip() {
        for slice in [
            SliceSpec::Cpu { threads: 3 },
            SliceSpec::Cuda {
                device: "MIG-1234".into(),
            },
            SliceSpec::Modeled {
                slice_type: "a100-1g.5gb".into(),
            },
        ] {
            let s = WorkerSpec {
                name: "squeezenet/cpu1".into(),
                slice,
                model: "/m/model.onnx".into(),
                arena: "/proc/1/fd/3".into(),
                arena_len: 1 << 30,
                onnxruntime: Some("/x/libonnxruntime.so.1.31.1".into()),
                modeled_latency_ns: vec![(1, 1_000_000), (8, 5_000_000)],
                modeled_bucket_latency_ns: vec![
                    vec![(1, 2_000_000)],
                    vec![(1, 9_000_000), (4, 20_000_000)],
                ],
            };
            assert_eq!(WorkerSpec::from_args(&s.to_args()).unwrap(), s);
        }
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = |v: &[&str]| WorkerSpec::from_args(&args(v)).unwrap_err().to_string();
        assert!(e(&["--name"]).contains("needs a value"));
        assert!(e(&["--bogus", "1"]).contains("unknown argument"));
        assert!(e(&["--name", "a"]).contains("missing"));
        assert!(e(&["--cpu", "1", "--modeled", "x"]).contains("more than one"));
        assert!(e(&["--arena-len", "x"]).contains("not a number"));
        assert!(e(&["--latency", "12"]).contains("BATCH:NS"));
        assert!(e(&["--cpu", "0"]).contains("1..=1024"));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Reply>(&bytes);
            let mut r = &bytes[..];
            while let Ok(Some(_)) = read_msg::<Reply>(&mut r) {}
        }

        #[test]
        fn json_ish_bodies_never_panic(body in "[\\[\\]{}\":,0-9a-zA-Z_ -]{0,200}") {
            let mut buf = (body.len() as u32).to_le_bytes().to_vec();
            buf.extend_from_slice(body.as_bytes());
            let _ = decode::<Request>(&buf);
            let _ = decode::<Reply>(&buf);
        }

        #[test]
        fn mutated_valid_messages_never_panic(pos in 0usize..400, byte in any::<u8>()) {
            let mut buf = encode(&req()).unwrap();
            let p = pos % buf.len();
            buf[p] = byte;
            let _ = decode::<Request>(&buf);
        }
    }
}
