//! The model repository, in Triton's shape: `DIR/NAME/config.toml` and
//! `DIR/NAME/1/model.onnx`; `--model NAME=PATH.onnx` for an image model with
//! defaults. Everything here is checked before a worker starts, and every
//! error names the file and the field.
#![forbid(unsafe_code)]

use crate::error::ServeError;
use preba_protocol::profile::{AudioNorm, AudioProfile, Dtype, ImageProfile, Layout};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What a model takes from clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Image,
    Audio,
}

impl Kind {
    /// The BYTES input clients send.
    pub fn input_name(self) -> &'static str {
        match self {
            Kind::Image => "IMAGE",
            Kind::Audio => "AUDIO",
        }
    }
}

/// One model, resolved.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub name: String,
    /// The version directory served (Triton's numeric versions; we serve one).
    pub version: String,
    pub onnx: PathBuf,
    pub kind: Kind,
    pub image: ImageProfile,
    pub audio: AudioProfile,
    pub max_batch_size: u32,
    pub batching: Batching,
    pub labels: Vec<String>,
    pub sla_ms: Option<f64>,
    /// `--slices` for this model only.
    pub slices: Option<String>,
}

/// `[batching]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batching {
    pub policy: String,
    pub batch_max: Option<u32>,
    pub time_queue_ms: Option<f64>,
    pub bucket_width_s: f32,
    /// The name under which the profile table knows this model (default: its name).
    pub profile_model: Option<String>,
    /// `triton` policy: Triton's preferred_batch_size (empty: [max_batch_size]).
    pub preferred_batch_size: Vec<u32>,
    /// `triton` policy: Triton's max_queue_delay_microseconds.
    pub max_queue_delay_us: u64,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            policy: "preba".into(),
            batch_max: None,
            time_queue_ms: None,
            bucket_width_s: 2.5,
            profile_model: None,
            preferred_batch_size: Vec::new(),
            max_queue_delay_us: 0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kind: Option<String>,
    max_batch_size: Option<u32>,
    labels: Option<String>,
    sla_ms: Option<f64>,
    slices: Option<String>,
    #[serde(default)]
    preprocess: RawPre,
    #[serde(default)]
    batching: RawBatching,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPre {
    // image
    resize: Option<u16>,
    crop: Option<u16>,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    dtype: Option<String>,
    layout: Option<String>,
    normalize: Option<bool>,
    // audio
    sample_rate: Option<u32>,
    n_mels: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBatching {
    policy: Option<String>,
    batch_max: Option<u32>,
    time_queue_ms: Option<f64>,
    bucket_width_s: Option<f32>,
    profile_model: Option<String>,
    preferred_batch_size: Option<Vec<u32>>,
    max_queue_delay_us: Option<u64>,
}

/// The serving default of an image model: the torchvision ImageNet eval
/// transform as FP32 NCHW (what ONNX classifiers take).
pub fn default_image_profile() -> ImageProfile {
    ImageProfile {
        normalize: true,
        dtype: Dtype::F32,
        layout: Layout::Nchw,
        ..ImageProfile::default()
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> ServeError {
    ServeError::Config(format!("{}: {reason}", path.display()))
}

/// Reads `DIR/NAME/config.toml` (missing file = defaults of an image model).
pub fn load_model(dir: &Path, name: &str) -> Result<ModelConfig, ServeError> {
    let mdir = dir.join(name);
    let cfg_path = mdir.join("config.toml");
    let raw: RawConfig = match std::fs::read_to_string(&cfg_path) {
        Ok(t) => toml::from_str(&t).map_err(|e| bad(&cfg_path, e.message().to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RawConfig::default(),
        Err(e) => return Err(bad(&cfg_path, e)),
    };
    let version = newest_version(&mdir)?;
    let onnx = mdir.join(&version).join("model.onnx");
    if !onnx.is_file() {
        return Err(bad(&onnx, "missing (Triton's layout: NAME/1/model.onnx)"));
    }
    resolve(name, version, onnx, raw, &cfg_path, &mdir)
}

/// The highest numeric version directory.
fn newest_version(mdir: &Path) -> Result<String, ServeError> {
    let rd = std::fs::read_dir(mdir).map_err(|e| bad(mdir, e))?;
    rd.filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()))
        .max()
        .map(|v| v.to_string())
        .ok_or_else(|| bad(mdir, "no version directory (expected NAME/1/model.onnx)"))
}

fn resolve(
    name: &str,
    version: String,
    onnx: PathBuf,
    raw: RawConfig,
    cfg_path: &Path,
    mdir: &Path,
) -> Result<ModelConfig, ServeError> {
    let kind = match raw.kind.as_deref().unwrap_or("image") {
        "image" => Kind::Image,
        "audio" => Kind::Audio,
        k => {
            return Err(bad(
                cfg_path,
                format!("kind = {k:?}: expected \"image\" or \"audio\""),
            ));
        }
    };
    let p = &raw.preprocess;
    if kind == Kind::Image && (p.sample_rate.is_some() || p.n_mels.is_some()) {
        return Err(bad(
            cfg_path,
            "preprocess.sample_rate/n_mels are audio settings",
        ));
    }
    if kind == Kind::Audio
        && (p.resize.is_some() || p.crop.is_some() || p.mean.is_some() || p.layout.is_some())
    {
        return Err(bad(
            cfg_path,
            "preprocess.resize/crop/mean/layout are image settings",
        ));
    }
    let mut image = default_image_profile();
    if let Some(r) = p.resize {
        image.resize = r;
    }
    if let Some(c) = p.crop {
        image.crop = c;
    }
    if let Some(m) = p.mean {
        image.mean = m;
    }
    if let Some(s) = p.std {
        image.std = s;
    }
    if let Some(n) = p.normalize {
        image.normalize = n;
    }
    if let Some(d) = &p.dtype {
        image.dtype = match d.as_str() {
            "u8" => Dtype::U8,
            "f16" => Dtype::F16,
            "bf16" => Dtype::Bf16,
            "f32" => Dtype::F32,
            _ => {
                return Err(bad(
                    cfg_path,
                    format!("preprocess.dtype = {d:?}: u8, f16, bf16 or f32"),
                ));
            }
        };
        if image.dtype == Dtype::U8 && p.normalize.is_none() {
            image.normalize = false;
        }
    }
    if let Some(l) = &p.layout {
        image.layout = match l.as_str() {
            "nchw" => Layout::Nchw,
            "nhwc" => Layout::Nhwc,
            _ => {
                return Err(bad(
                    cfg_path,
                    format!("preprocess.layout = {l:?}: nchw or nhwc"),
                ));
            }
        };
    }
    if kind == Kind::Image {
        image
            .validate()
            .map_err(|e| bad(cfg_path, format!("preprocess: {e:?}")))?;
    }
    let mut audio = AudioProfile {
        norm: AudioNorm::PerFeature,
        ..AudioProfile::default()
    };
    if let Some(sr) = p.sample_rate {
        audio.sample_rate = sr;
    }
    if let Some(n) = p.n_mels {
        audio.n_mels = n;
    }
    if kind == Kind::Audio {
        if p.dtype.as_deref().is_some_and(|d| d != "f32") {
            return Err(bad(cfg_path, "audio features are f32"));
        }
        if p.normalize == Some(false) {
            audio.norm = AudioNorm::None;
        }
        audio
            .validate()
            .map_err(|e| bad(cfg_path, format!("preprocess: {e:?}")))?;
    }
    let max_batch_size = raw.max_batch_size.unwrap_or(32);
    if !(1..=1024).contains(&max_batch_size) {
        return Err(bad(cfg_path, "max_batch_size must be in 1..=1024"));
    }
    let b = raw.batching;
    let batching = Batching {
        policy: b.policy.unwrap_or_else(|| "preba".into()),
        batch_max: b.batch_max,
        time_queue_ms: b.time_queue_ms,
        bucket_width_s: b.bucket_width_s.unwrap_or(2.5),
        profile_model: b.profile_model,
        preferred_batch_size: b.preferred_batch_size.unwrap_or_default(),
        max_queue_delay_us: b.max_queue_delay_us.unwrap_or(0),
    };
    if !matches!(batching.policy.as_str(), "preba" | "triton" | "deadline") {
        return Err(bad(
            cfg_path,
            format!(
                "batching.policy = {:?}: preba, triton or deadline",
                batching.policy
            ),
        ));
    }
    if batching
        .preferred_batch_size
        .iter()
        .any(|&b| b == 0 || b > max_batch_size)
    {
        return Err(bad(
            cfg_path,
            "batching.preferred_batch_size: each must be in 1..=max_batch_size",
        ));
    }
    if batching
        .batch_max
        .is_some_and(|m| m == 0 || m > max_batch_size)
    {
        return Err(bad(
            cfg_path,
            "batching.batch_max must be in 1..=max_batch_size",
        ));
    }
    if batching
        .time_queue_ms
        .is_some_and(|t| !(0.0..=60_000.0).contains(&t))
    {
        return Err(bad(cfg_path, "batching.time_queue_ms must be in 0..=60000"));
    }
    if !(batching.bucket_width_s.is_finite() && batching.bucket_width_s > 0.0) {
        return Err(bad(cfg_path, "batching.bucket_width_s must be positive"));
    }
    if raw.sla_ms.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
        return Err(bad(cfg_path, "sla_ms must be positive"));
    }
    let labels = match &raw.labels {
        Some(f) => {
            let lp = mdir.join(f);
            std::fs::read_to_string(&lp)
                .map_err(|e| bad(&lp, e))?
                .lines()
                .map(|l| l.trim().to_string())
                .collect()
        }
        None => Vec::new(),
    };
    Ok(ModelConfig {
        name: name.to_string(),
        version,
        onnx,
        kind,
        image,
        audio,
        max_batch_size,
        batching,
        labels,
        sla_ms: raw.sla_ms,
        slices: raw.slices,
    })
}

/// Every model of a repository directory (sorted by name).
pub fn load_repository(dir: &Path) -> Result<Vec<ModelConfig>, ServeError> {
    let rd = std::fs::read_dir(dir).map_err(|e| bad(dir, e))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names.iter().map(|n| load_model(dir, n)).collect()
}

/// `--model NAME=PATH.onnx`: an image model with defaults.
pub fn model_shorthand(arg: &str) -> Result<ModelConfig, ServeError> {
    let (name, path) = arg
        .split_once('=')
        .ok_or_else(|| ServeError::Usage(format!("--model {arg}: expected NAME=PATH.onnx")))?;
    if !valid_name(name) {
        return Err(ServeError::Usage(format!(
            "--model {arg}: model names are letters, digits, '_', '-' and '.'"
        )));
    }
    let onnx = PathBuf::from(path);
    if !onnx.is_file() {
        return Err(ServeError::Usage(format!(
            "--model {arg}: {path}: no such file"
        )));
    }
    let dir = onnx.parent().unwrap_or(Path::new("."));
    resolve(
        name,
        "1".into(),
        onnx.clone(),
        RawConfig::default(),
        &onnx,
        dir,
    )
}

/// Names that are safe in URLs and metric labels.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && n != "."
        && n != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(cfg: &str) -> (tempfile::TempDir, Result<ModelConfig, ServeError>) {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        std::fs::create_dir_all(m.join("1")).unwrap();
        std::fs::write(m.join("1/model.onnx"), b"x").unwrap();
        std::fs::write(m.join("config.toml"), cfg).unwrap();
        let r = load_model(d.path(), "m");
        (d, r)
    }

    #[test]
    fn defaults_are_the_imagenet_eval_transform_in_f32() {
        let (_d, r) = repo("");
        let c = r.unwrap();
        assert_eq!(c.kind, Kind::Image);
        assert_eq!((c.image.resize, c.image.crop), (256, 224));
        assert!(c.image.normalize);
        assert_eq!(c.image.dtype, Dtype::F32);
        assert_eq!(c.version, "1");
        assert_eq!(c.batching, Batching::default());
    }

    #[test]
    fn audio_and_overrides() {
        let (_d, r) = repo(
            "kind = \"audio\"\nmax_batch_size = 8\nsla_ms = 200\n[preprocess]\nn_mels = 64\n[batching]\nbatch_max = 4\ntime_queue_ms = 3.5\nbucket_width_s = 5.0\n",
        );
        let c = r.unwrap();
        assert_eq!(c.kind, Kind::Audio);
        assert_eq!(c.audio.n_mels, 64);
        assert_eq!(c.batching.batch_max, Some(4));
        assert_eq!(c.batching.time_queue_ms, Some(3.5));
        assert_eq!(c.batching.bucket_width_s, 5.0);
        assert_eq!(c.sla_ms, Some(200.0));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        for (cfg, want) in [
            ("kind = \"video\"", "kind = \"video\""),
            ("[preprocess]\ndtype = \"f64\"", "preprocess.dtype"),
            ("[preprocess]\ncrop = 300", "preprocess"),
            ("bogus = 1", "unknown field"),
            ("max_batch_size = 0", "max_batch_size"),
            (
                "max_batch_size = 4\n[batching]\nbatch_max = 8",
                "batching.batch_max",
            ),
            ("[batching]\npolicy = \"fifo\"", "batching.policy"),
            (
                "max_batch_size = 4\n[batching]\npolicy = \"triton\"\npreferred_batch_size = [8]",
                "preferred_batch_size",
            ),
            (
                "kind = \"audio\"\n[preprocess]\nresize = 10",
                "image settings",
            ),
            ("labels = \"nope.txt\"", "nope.txt"),
        ] {
            let (_d, r) = repo(cfg);
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("config.toml") || e.contains("nope.txt"),
                "{cfg}: {e}"
            );
            assert!(e.contains(want), "{cfg}: {e}");
        }
    }

    #[test]
    fn missing_version_dir_and_shorthand() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("m")).unwrap();
        assert!(
            load_model(d.path(), "m")
                .unwrap_err()
                .to_string()
                .contains("version")
        );
        assert!(model_shorthand("noequals").is_err());
        assert!(model_shorthand("a/b=x.onnx").is_err());
        assert!(model_shorthand("m=/nonexistent.onnx").is_err());
        let f = d.path().join("x.onnx");
        std::fs::write(&f, b"x").unwrap();
        let c = model_shorthand(&format!("sq={}", f.display())).unwrap();
        assert_eq!(c.name, "sq");
        assert_eq!(c.kind, Kind::Image);
    }
}
