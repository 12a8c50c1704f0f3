//! `--slices` specs: what kind of slice each worker is.

use crate::SliceError;

/// One slice = one worker process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SliceSpec {
    /// ONNX Runtime on the CPU with `threads` intra-op threads.
    Cpu { threads: usize },
    /// ONNX Runtime's CUDA EP on one device: "MIG-<uuid>", a GPU UUID, or an
    /// index ("0" = the whole first GPU). Becomes CUDA_VISIBLE_DEVICES.
    Cuda { device: String },
    /// No accelerator: sleeps the published latency of `slice_type`.
    Modeled { slice_type: String },
}

impl SliceSpec {
    /// "cpu", "cuda" or "modeled".
    pub fn kind(&self) -> &'static str {
        match self {
            SliceSpec::Cpu { .. } => "cpu",
            SliceSpec::Cuda { .. } => "cuda",
            SliceSpec::Modeled { .. } => "modeled",
        }
    }

    /// The profile-table key: "cpu-2t", "cuda", "a100-1g.5gb".
    pub fn slice_type(&self) -> String {
        match self {
            SliceSpec::Cpu { threads } => format!("cpu-{threads}t"),
            SliceSpec::Cuda { .. } => "cuda".to_string(),
            SliceSpec::Modeled { slice_type } => slice_type.clone(),
        }
    }
}

/// Most slices one spec may ask for: a typo like "cpu:4000" should be an
/// error, not 4000 processes.
const MAX_SLICES: usize = 256;
const MAX_THREADS: usize = 1024;

/// Parses `--slices`:
/// - `cpu:4` four slices of one thread, `cpu:2x3` two slices of three threads;
/// - `cuda:MIG-a,MIG-b` (device names as CUDA_VISIBLE_DEVICES takes them),
///   `cuda:all` every MIG instance NVML reports, or each whole GPU whose MIG
///   mode is off;
/// - `modeled:a100-1g.5gb*7`, mixed: `modeled:a100-3g.20gb*1,a100-2g.10gb*2`
///   (`*N` optional, default 1).
pub fn parse_slices(spec: &str) -> Result<Vec<SliceSpec>, SliceError> {
    let err = |reason: String| SliceError::Spec {
        spec: spec.to_string(),
        reason,
    };
    let (kind, rest) = spec.trim().split_once(':').ok_or_else(|| {
        err(
            "expected KIND:ARGS (cpu:4, cpu:2x3, cuda:all, cuda:MIG-..., modeled:a100-1g.5gb*7)"
                .into(),
        )
    })?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(err(format!("nothing after \"{kind}:\"")));
    }
    let out = match kind.trim() {
        "cpu" => {
            let (n, t) = match rest.split_once('x') {
                Some((n, t)) => (
                    number(n, "slice count").map_err(err)?,
                    number(t, "thread count").map_err(err)?,
                ),
                None => (number(rest, "slice count").map_err(err)?, 1),
            };
            if t > MAX_THREADS {
                return Err(err(format!(
                    "{t} threads per slice is more than {MAX_THREADS}"
                )));
            }
            check_count(n).map_err(err)?;
            vec![SliceSpec::Cpu { threads: t }; n]
        }
        "cuda" if rest == "all" => cuda_all().map_err(err)?,
        "cuda" => {
            let mut v = Vec::new();
            for d in rest.split(',') {
                let d = d.trim();
                if d.is_empty()
                    || !d
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/')
                {
                    return Err(err(format!(
                        "bad CUDA device {d:?} (want MIG-<uuid>, GPU-<uuid> or an index)"
                    )));
                }
                v.push(SliceSpec::Cuda {
                    device: d.to_string(),
                });
            }
            check_count(v.len()).map_err(err)?;
            v
        }
        "modeled" => {
            let mut v = Vec::new();
            for part in rest.split(',') {
                let part = part.trim();
                let (ty, n) = match part.split_once('*') {
                    Some((ty, n)) => (ty.trim(), number(n, "slice count").map_err(err)?),
                    None => (part, 1),
                };
                if ty.is_empty()
                    || !ty
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
                {
                    return Err(err(format!(
                        "bad slice type {ty:?} (want e.g. a100-1g.5gb)"
                    )));
                }
                check_count(v.len() + n).map_err(err)?;
                v.extend(std::iter::repeat_n(
                    SliceSpec::Modeled {
                        slice_type: ty.to_string(),
                    },
                    n,
                ));
            }
            v
        }
        other => {
            return Err(err(format!(
                "unknown slice kind {other:?} (cpu, cuda or modeled)"
            )));
        }
    };
    Ok(out)
}

fn number(s: &str, what: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(format!("{what} must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{what} {:?} is not a positive number", s.trim())),
    }
}

fn check_count(n: usize) -> Result<(), String> {
    if n > MAX_SLICES {
        return Err(format!("{n} slices is more than {MAX_SLICES}"));
    }
    Ok(())
}

/// Every MIG instance of every GPU; a GPU with MIG off counts as one slice
/// (by UUID). NVML missing or no GPU is an error, never a panic.
fn cuda_all() -> Result<Vec<SliceSpec>, String> {
    let nvml = nvml_wrapper::Nvml::init()
        .map_err(|e| format!("cuda:all needs NVML (libnvidia-ml.so) to list GPUs: {e}"))?;
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML device count: {e}"))?;
    let mut out = Vec::new();
    for i in 0..count {
        let dev = nvml
            .device_by_index(i)
            .map_err(|e| format!("NVML GPU {i}: {e}"))?;
        // NotSupported (pre-Ampere) means no MIG: use the whole GPU.
        let mig_on = dev.mig_mode().map(|m| m.current == 1).unwrap_or(false);
        if mig_on {
            let n = dev
                .mig_device_count()
                .map_err(|e| format!("NVML GPU {i} MIG count: {e}"))?;
            for j in 0..n {
                // Unpopulated indices report NotFound: skip them.
                if let Ok(mig) = dev.mig_device_by_index(j) {
                    let uuid = mig
                        .uuid()
                        .map_err(|e| format!("NVML GPU {i} MIG {j} UUID: {e}"))?;
                    out.push(SliceSpec::Cuda { device: uuid });
                }
            }
        } else {
            let uuid = dev.uuid().map_err(|e| format!("NVML GPU {i} UUID: {e}"))?;
            out.push(SliceSpec::Cuda { device: uuid });
        }
    }
    if out.is_empty() {
        return Err("no GPU (NVML lists no devices or MIG instances)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(spec: &str) -> String {
        match parse_slices(spec) {
            Err(e @ SliceError::Spec { .. }) => {
                let s = e.to_string();
                assert!(s.contains(spec.trim()), "{s} names the spec");
                s
            }
            other => panic!("{spec}: expected a spec error, got {other:?}"),
        }
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(
            parse_slices("cpu:4").unwrap(),
            vec![SliceSpec::Cpu { threads: 1 }; 4]
        );
        assert_eq!(
            parse_slices("cpu:2x3").unwrap(),
            vec![SliceSpec::Cpu { threads: 3 }; 2]
        );
        assert_eq!(
            parse_slices(" cpu: 1 ").unwrap(),
            vec![SliceSpec::Cpu { threads: 1 }]
        );
        let s = &parse_slices("cpu:1x2").unwrap()[0];
        assert_eq!((s.kind(), s.slice_type().as_str()), ("cpu", "cpu-2t"));
    }

    #[test]
    fn cuda_forms() {
        assert_eq!(
            parse_slices("cuda:MIG-a,MIG-b").unwrap(),
            vec![
                SliceSpec::Cuda {
                    device: "MIG-a".into()
                },
                SliceSpec::Cuda {
                    device: "MIG-b".into()
                }
            ]
        );
        assert_eq!(parse_slices("cuda:0").unwrap()[0].slice_type(), "cuda");
        assert_eq!(parse_slices("cuda:0").unwrap()[0].kind(), "cuda");
    }

    #[test]
    fn cuda_all_without_gpu_is_an_error() {
        // On a GPU machine this lists devices; elsewhere it must fail cleanly.
        match parse_slices("cuda:all") {
            Ok(v) => assert!(!v.is_empty()),
            Err(e) => assert!(e.to_string().contains("cuda:all"), "{e}"),
        }
    }

    #[test]
    fn modeled_forms() {
        let v = parse_slices("modeled:a100-1g.5gb*7").unwrap();
        assert_eq!(v.len(), 7);
        assert_eq!(v[0].slice_type(), "a100-1g.5gb");
        assert_eq!(v[0].kind(), "modeled");
        let v = parse_slices("modeled:a100-3g.20gb*1,a100-2g.10gb*2").unwrap();
        let types: Vec<String> = v.iter().map(SliceSpec::slice_type).collect();
        assert_eq!(types, ["a100-3g.20gb", "a100-2g.10gb", "a100-2g.10gb"]);
        assert_eq!(parse_slices("modeled:a100-7g.80gb").unwrap().len(), 1);
    }

    #[test]
    fn errors_name_spec_and_reason() {
        assert!(reason("cpu").contains("KIND:ARGS"));
        assert!(reason("cpu:").contains("nothing after"));
        assert!(reason("cpu:0").contains("at least 1"));
        assert!(reason("cpu:x").contains("not a positive number"));
        assert!(reason("cpu:2x0").contains("thread count must be at least 1"));
        assert!(reason("cpu:-1").contains("not a positive number"));
        assert!(reason("cpu:4000").contains("more than 256"));
        assert!(reason("cpu:1x5000").contains("threads per slice"));
        assert!(reason("tpu:1").contains("unknown slice kind"));
        assert!(reason("cuda:MIG-a,,MIG-b").contains("bad CUDA device"));
        assert!(reason("cuda:a b").contains("bad CUDA device"));
        assert!(reason("modeled:a100-1g.5gb*0").contains("at least 1"));
        assert!(reason("modeled:*3").contains("bad slice type"));
        assert!(reason("modeled:a100 1g*2").contains("bad slice type"));
        assert!(reason("modeled:a100-1g.5gb*200,a100-2g.10gb*100").contains("more than 256"));
    }
}
