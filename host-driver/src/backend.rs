//! Backends: where a request is preprocessed. One trait, so the CLI and a
//! server do not care whether a card, the emulated card or the CPU does it.
#![forbid(unsafe_code)]

use crate::dma::DmaMem;
use crate::driver::{Card, CardError, DriverConfig, OutGuard, OutRegion, Pool};
use crate::error::{CardFailure, RequestError};
use crate::vfio_user::{Emulated, VfioUser, connect_retry};
use preba_preprocess::Error as PpError;
use preba_preprocess::audio::{self, AudioOutput};
use preba_preprocess::image::{self, ImageOutput};
use preba_protocol::admin::encode_profile;
use preba_protocol::io::Cqe;
use preba_protocol::profile::{AudioProfile, ImageProfile, Profile};
use preba_protocol::status::Status;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one request asks for.
#[derive(Clone, Copy, Debug)]
pub enum Job {
    Image(ImageProfile),
    Audio(AudioProfile),
}

/// What one request produced.
#[derive(Debug)]
pub enum Output {
    Image(ImageOutput),
    Audio(AudioOutput),
}

/// Which path produced an output (the manifest's `via`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The card's engines.
    Card,
    /// The card refused it as unsupported; the CPU path did it.
    CpuFallback,
    /// The run used the CPU path only.
    Cpu,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Card => "card",
            Via::CpuFallback => "cpu-fallback",
            Via::Cpu => "cpu",
        }
    }
}

/// A preprocessing backend. `process` is called from several threads at once.
pub trait Backend: Sync {
    /// Names the backend in messages (e.g. `cpu`, `vfio-user:/run/card.sock`).
    fn name(&self) -> String;
    /// Preprocesses one input; the error is the request's own failure (a
    /// failed card fails every request with [`RequestError::CardFailed`], naming the card).
    fn process(&self, input: &[u8], job: &Job) -> Result<(Output, Via), RequestError>;
    /// Preprocesses an image into `out` (exactly `profile.output_len()`
    /// bytes, reused by the caller); returns the source width and height.
    /// The CPU path makes the tensor there; a card's answer is copied in.
    fn process_image_into(
        &self,
        input: &[u8],
        profile: &ImageProfile,
        out: &mut [u8],
    ) -> Result<((u32, u32), Via), RequestError> {
        match self.process(input, &Job::Image(*profile))? {
            (Output::Image(img), via) if img.data.len() == out.len() => {
                out.copy_from_slice(&img.data);
                Ok(((img.width, img.height), via))
            }
            (Output::Image(img), _) => Err(RequestError::OutputSize {
                got: img.data.len(),
                want: out.len(),
            }),
            (Output::Audio(_), _) => Err(RequestError::AudioForImage),
        }
    }
    /// Why the backend failed as a whole, once it has.
    fn fatal(&self) -> Option<Arc<CardFailure>> {
        None
    }
    /// Requests worth having in flight at once (a card wants its slots
    /// full); callers use at least this many threads by default.
    fn parallelism(&self) -> usize {
        1
    }
    /// The DMA arena of this backend's card, if it has one: a server puts
    /// its batch slots there so the card writes tensors where the slice
    /// workers read them.
    fn arena(&self) -> Option<&DmaMem> {
        None
    }
    /// Reserves `bytes` of [`Backend::arena`].
    fn reserve(&self, bytes: usize) -> Result<usize, RequestError> {
        Err(RequestError::NoArena {
            backend: self.name(),
            bytes,
        })
    }
    /// Preprocesses an image into `arena` at `off..off+len` (exactly
    /// `profile.output_len()` bytes). A card writes its own arena in place;
    /// other paths copy their output there. `guard` keeps the region
    /// reserved while a card may still write it.
    fn process_into(
        &self,
        input: &[u8],
        job: &ImageProfile,
        arena: &DmaMem,
        region: (usize, usize),
        guard: OutGuard,
    ) -> Result<Via, RequestError> {
        let _ = guard;
        let (out, via) = self.process(input, &Job::Image(*job))?;
        write_image(arena, region, out)?;
        Ok(via)
    }
}

/// Copies an image output into an arena region of exactly its size.
fn write_image(
    arena: &DmaMem,
    (off, len): (usize, usize),
    out: Output,
) -> Result<(), RequestError> {
    let Output::Image(img) = out else {
        return Err(RequestError::AudioForImage);
    };
    if img.data.len() != len {
        return Err(RequestError::OutputSize {
            got: img.data.len(),
            want: len,
        });
    }
    arena
        .write(off, &img.data)
        .map_err(|e| RequestError::Arena(Arc::new(e)))
}

/// The golden model on host threads.
pub struct CpuBackend;

fn cpu(input: &[u8], job: &Job, via: Via) -> Result<(Output, Via), PpError> {
    match job {
        Job::Image(p) => image::preprocess_image(input, p).map(|o| (Output::Image(o), via)),
        Job::Audio(p) => audio::preprocess_audio(input, p).map(|o| (Output::Audio(o), via)),
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }
    fn process(&self, input: &[u8], job: &Job) -> Result<(Output, Via), RequestError> {
        Ok(cpu(input, job, Via::Cpu)?)
    }
    fn process_image_into(
        &self,
        input: &[u8],
        profile: &ImageProfile,
        out: &mut [u8],
    ) -> Result<((u32, u32), Via), RequestError> {
        Ok(image::preprocess_image_into(input, profile, out).map(|wh| (wh, Via::Cpu))?)
    }
}

/// Slots per pool: in-flight requests per profile.
const POOL_SLOTS: usize = 16;
/// Largest input that goes to the card through this driver; larger ones take
/// the CPU path (manifest: cpu-fallback).
pub const CARD_MAX_INPUT: usize = 4 << 20;
/// Largest audio feature output taken from the card (about 130 s of 16 kHz
/// audio at hop 160 and 80 bands); longer inputs take the CPU path.
pub const CARD_MAX_AUDIO_OUT: usize = 4 << 20;
/// Host-side deadline of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A card (and the process behind it, for `emulated`). Field order matters:
/// the card is reset before the process stops.
pub struct OpenCard {
    pub card: Card,
    pub emulated: Option<Emulated>,
}

/// The card backend: requests go to the card; what it calls unsupported goes
/// through the CPU path.
pub struct CardBackend {
    open: OpenCard,
    name: String,
    pools: Mutex<Vec<([u8; 64], Pool)>>,
    timeout: Duration,
}

impl CardBackend {
    pub fn new(open: OpenCard, name: String, timeout: Duration) -> CardBackend {
        CardBackend {
            open,
            name,
            pools: Mutex::new(Vec::new()),
            timeout,
        }
    }

    pub fn card(&self) -> &Card {
        &self.open.card
    }

    /// A driver error as this request's failure, naming this backend's card.
    fn request_error(&self, e: CardError) -> RequestError {
        let card = self.name.clone();
        match e {
            CardError::Timeout { after, .. } => RequestError::Timeout { card, after },
            CardError::Fatal { cause, .. } => RequestError::CardFailed { card, cause },
            CardError::Refused(refusal) => RequestError::Refused { card, refusal },
            CardError::Status { status, .. } => RequestError::Status { card, status },
        }
    }

    /// The card failed the input with `status`, which is the input's fault: the CPU model
    /// explains a bad input better than a status code, so it is asked why.
    fn rejected(&self, input: &[u8], job: &Job, status: Status) -> RequestError {
        match cpu(input, job, Via::CpuFallback) {
            Err(cpu) => RequestError::Rejected { status, cpu },
            Ok(_) => RequestError::Status {
                card: self.name.clone(),
                status,
            },
        }
    }

    fn pool(&self, job: &Job) -> Result<Pool, CardError> {
        let profile = match job {
            Job::Image(p) => Profile::Image(*p),
            Job::Audio(p) => Profile::Audio(*p),
        };
        let key = encode_profile(&profile);
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = pools.iter().find(|(k, _)| *k == key) {
            return Ok(p.clone());
        }
        let out = match job {
            Job::Image(p) => p.output_len(),
            Job::Audio(_) => CARD_MAX_AUDIO_OUT,
        };
        let pool = self
            .open
            .card
            .pool(&profile, POOL_SLOTS, CARD_MAX_INPUT, out)?;
        pools.push((key, pool.clone()));
        Ok(pool)
    }

    /// Whether the card can take this input through its slots at all.
    fn fits(input: &[u8], job: &Job) -> bool {
        if input.len() > CARD_MAX_INPUT {
            return false;
        }
        match job {
            Job::Image(_) => true,
            Job::Audio(p) => match audio::probe_wav(input)
                .and_then(|info| audio::output_shape(&info, p))
            {
                Ok((_, frames)) => {
                    (frames as usize).saturating_mul(p.n_mels as usize * 4) <= CARD_MAX_AUDIO_OUT
                }
                // Broken headers go to the card: it answers with a status.
                Err(_) => true,
            },
        }
    }

    /// The one routing decision for the card's answer to a request:
    /// `Some` is the card's usable answer; `None` sends the request through
    /// the CPU path (the card answered with the wrong shape, failed for
    /// reasons of its own, or does not take it; with `serving`, also a dead
    /// card: a server keeps serving, the CLI reports it); an error is the
    /// input's (rejected with its status) or the transport's.
    fn route<T>(
        &self,
        input: &[u8],
        job: &Job,
        answer: Result<Option<T>, CardError>,
        serving: bool,
    ) -> Result<Option<T>, RequestError> {
        match answer {
            Ok(v) => Ok(v),
            Err(CardError::Status { status, .. }) if card_side_failure(status) => Ok(None),
            Err(CardError::Status { status, .. }) => Err(self.rejected(input, job, status)),
            Err(CardError::Refused(_)) => Ok(None),
            Err(CardError::Fatal { .. }) if serving => Ok(None),
            Err(e) => Err(self.request_error(e)),
        }
    }

    /// Builds the output from the card's bytes, checking them against what
    /// the request asked for (the card is not trusted with shapes).
    fn output(&self, input: &[u8], job: &Job, cqe: &Cqe, data: Vec<u8>) -> Result<Output, String> {
        match job {
            Job::Image(p) => {
                if data.len() != p.output_len() {
                    return Err(format!(
                        "card {}: wrote {} bytes, the profile needs {}",
                        self.name,
                        data.len(),
                        p.output_len()
                    ));
                }
                Ok(Output::Image(ImageOutput {
                    width: cqe.result0,
                    height: cqe.result1,
                    data,
                }))
            }
            Job::Audio(p) => {
                let info = audio::probe_wav(input).map_err(|e| e.to_string())?;
                let (_, frames) = audio::output_shape(&info, p).map_err(|e| e.to_string())?;
                let n_mels = p.n_mels as usize;
                let want = frames as usize * n_mels * 4;
                if data.len() != want {
                    return Err(format!(
                        "card {}: wrote {} bytes of features, expected {want}",
                        self.name,
                        data.len()
                    ));
                }
                let feats = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(Output::Audio(AudioOutput {
                    info,
                    features: audio::Features {
                        n_mels,
                        frames: frames as usize,
                        data: feats,
                    },
                }))
            }
        }
    }
}

impl Backend for CardBackend {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn process(&self, input: &[u8], job: &Job) -> Result<(Output, Via), RequestError> {
        if input.is_empty() || !CardBackend::fits(input, job) {
            return Ok(cpu(input, job, Via::CpuFallback)?);
        }
        let pool = self.pool(job).map_err(|e| self.request_error(e))?;
        // An answer of the wrong shape is the card's fault, not the input's.
        let answer = self
            .open
            .card
            .process(&pool, input, self.timeout)
            .map(|(cqe, data)| self.output(input, job, &cqe, data).ok());
        match self.route(input, job, answer, false)? {
            Some(o) => Ok((o, Via::Card)),
            None => Ok(cpu(input, job, Via::CpuFallback)?),
        }
    }
    /// The tensor goes from the DMA arena straight into `out`; every other
    /// outcome as in [`CardBackend::process`].
    fn process_image_into(
        &self,
        input: &[u8],
        profile: &ImageProfile,
        out: &mut [u8],
    ) -> Result<((u32, u32), Via), RequestError> {
        let job = Job::Image(*profile);
        if out.len() != profile.output_len() {
            return Err(RequestError::OutputSize {
                got: out.len(),
                want: profile.output_len(),
            });
        }
        let cpu_into = |out: &mut [u8]| -> Result<((u32, u32), Via), RequestError> {
            Ok(image::preprocess_image_into(input, profile, out)
                .map(|wh| (wh, Via::CpuFallback))?)
        };
        if input.is_empty() || !CardBackend::fits(input, &job) {
            return cpu_into(out);
        }
        let pool = self.pool(&job).map_err(|e| self.request_error(e))?;
        let want = out.len();
        let answer = self
            .open
            .card
            .process_to(&pool, input, out, self.timeout)
            .map(|cqe| (cqe.written as usize == want).then_some((cqe.result0, cqe.result1)));
        match self.route(input, &job, answer, false)? {
            Some(wh) => Ok((wh, Via::Card)),
            None => cpu_into(out),
        }
    }
    fn fatal(&self) -> Option<Arc<CardFailure>> {
        self.open.card.fatal()
    }
    fn parallelism(&self) -> usize {
        POOL_SLOTS
    }
    fn arena(&self) -> Option<&DmaMem> {
        Some(self.open.card.arena())
    }
    fn reserve(&self, bytes: usize) -> Result<usize, RequestError> {
        self.open
            .card
            .reserve(bytes)
            .map_err(|e| self.request_error(e))
    }
    fn process_into(
        &self,
        input: &[u8],
        job: &ImageProfile,
        arena: &DmaMem,
        (off, len): (usize, usize),
        guard: OutGuard,
    ) -> Result<Via, RequestError> {
        let own = std::ptr::eq(arena, self.open.card.arena());
        let whole = Job::Image(*job);
        // A server keeps serving through the CPU path once its card died
        // (the CLI, by contrast, reports the dead card: see `process`).
        let dead = self.open.card.fatal().is_some();
        if dead || !own || input.is_empty() || !CardBackend::fits(input, &whole) {
            let (out, via) = self.process(input, &whole)?;
            return write_image(arena, (off, len), out).map(|()| via);
        }
        let pool = self.pool(&whole).map_err(|e| self.request_error(e))?;
        let fallback = || {
            let (o, via) = cpu(input, &whole, Via::CpuFallback)?;
            write_image(arena, (off, len), o).map(|()| via)
        };
        let region = OutRegion { off, len, guard };
        // The card answered and is done with the region: a wrong length is
        // its fault, and the CPU's tensor overwrites what it wrote.
        let answer = self
            .open
            .card
            .process_into(&pool, input, region, self.timeout)
            .map(|cqe| (cqe.written as usize == len).then_some(()));
        // A timed-out request may still be written by the card: the region
        // stays held by its guard, so the caller must not reuse it (the
        // error goes back, no CPU answer is written).
        match self.route(input, &whole, answer, true)? {
            Some(()) => Ok(Via::Card),
            None => fallback(),
        }
    }
}

/// A status that says the card failed, not the input: the CPU path answers
/// instead. UNSUPPORTED_FORMAT is what the card does not take; INTERNAL a
/// watchdog reset of a stuck CU or an engine error; TIMEOUT and ABORTED its
/// own deadline or a reset; DMA_FAULT a transfer the IOMMU refused, which
/// cannot be the input's doing (the driver's slots lie in the mapped arena);
/// OUTPUT_TOO_SMALL, since the driver sizes every output slot from the profile
/// (and audio the card cannot hold never goes to it); INVALID_FIELD, since the
/// driver builds every field of the command and only sets profiles the card
/// accepted (the input's bytes cannot cause it: a compute unit that lies about
/// its output length makes the next stage, audio normalisation, refuse its
/// input with it).
fn card_side_failure(status: Status) -> bool {
    matches!(
        status,
        Status::UnsupportedFormat
            | Status::Internal
            | Status::Timeout
            | Status::Aborted
            | Status::DmaFault
            | Status::OutputTooSmall
            | Status::InvalidField
    )
}

/// `--card SPEC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardSpec {
    /// Start `preba-card` with the built firmware on a private socket.
    Emulated,
    /// The same, with the card's SPI flash kept in this file (created when missing), so a
    /// flashed image survives to the next start: `emulated:PATH`.
    EmulatedFlash(PathBuf),
    /// A running `preba-card` (or other vfio-user server) at this socket.
    VfioUser(PathBuf),
    /// A card bound to vfio-pci at this PCI address.
    Vfio(String),
    Cpu,
}

impl std::str::FromStr for CardSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "emulated" {
            Ok(CardSpec::Emulated)
        } else if s == "cpu" {
            Ok(CardSpec::Cpu)
        } else if let Some(p) = s.strip_prefix("emulated:") {
            if p.is_empty() {
                return Err("emulated:PATH needs a flash file path".into());
            }
            Ok(CardSpec::EmulatedFlash(PathBuf::from(p)))
        } else if let Some(p) = s.strip_prefix("vfio-user:") {
            if p.is_empty() {
                return Err("vfio-user:PATH needs a socket path".into());
            }
            Ok(CardSpec::VfioUser(PathBuf::from(p)))
        } else if let Some(bdf) = s.strip_prefix("vfio:") {
            if !valid_bdf(bdf) {
                return Err(format!("vfio:{bdf}: not a PCI address like 0000:00:03.0"));
            }
            Ok(CardSpec::Vfio(bdf.to_string()))
        } else {
            Err(format!(
                "unknown card `{s}` (expected emulated, emulated:FLASH_FILE, vfio-user:PATH, \
                 vfio:BDF or cpu)"
            ))
        }
    }
}

impl std::fmt::Display for CardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CardSpec::Emulated => write!(f, "emulated"),
            CardSpec::EmulatedFlash(p) => write!(f, "emulated:{}", p.display()),
            CardSpec::VfioUser(p) => write!(f, "vfio-user:{}", p.display()),
            CardSpec::Vfio(b) => write!(f, "vfio:{b}"),
            CardSpec::Cpu => write!(f, "cpu"),
        }
    }
}

/// `DDDD:BB:DD.F` with hex digits.
fn valid_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b':',
            10 => c == b'.',
            11 => (b'0'..=b'7').contains(&c),
            _ => c.is_ascii_hexdigit(),
        })
}

/// Bytes of DMA arena for a kernel VFIO card: the IOMMU map pins all of it.
pub const VFIO_ARENA_BYTES: usize = 96 << 20;

/// Opens the card a spec names (not `cpu`). `PREBA_ARENA_MB` overrides the
/// arena size.
pub fn open_card(spec: &CardSpec, mut cfg: DriverConfig) -> Result<OpenCard, crate::Error> {
    if let CardSpec::Vfio(_) = spec {
        cfg.arena_bytes = cfg.arena_bytes.min(VFIO_ARENA_BYTES);
    }
    if let Some(mb) = std::env::var("PREBA_ARENA_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        cfg.arena_bytes = mb.clamp(8, 4096) << 20;
    }
    let name = spec.to_string();
    let fail = |reason: String| crate::Error::Card {
        card: name.clone(),
        reason,
    };
    let transport = |source, log| crate::Error::Transport {
        card: name.clone(),
        source,
        log,
    };
    let driver = |source, log| crate::Error::Driver {
        card: name.clone(),
        source,
        log,
    };
    match spec {
        CardSpec::Cpu => Err(fail("the cpu backend is not a card".into())),
        CardSpec::Vfio(bdf) => {
            let t = crate::vfio::Vfio::open(bdf, name.clone(), cfg.arena_bytes)
                .map_err(|e| transport(e, String::new()))?;
            let card = Card::open(Arc::new(t), cfg).map_err(|e| driver(e, String::new()))?;
            Ok(OpenCard {
                card,
                emulated: None,
            })
        }
        CardSpec::VfioUser(path) => {
            let t = VfioUser::connect(path, name.clone(), cfg.arena_bytes)
                .map_err(|e| transport(e, String::new()))?;
            let card = Card::open(Arc::new(t), cfg).map_err(|e| driver(e, String::new()))?;
            Ok(OpenCard {
                card,
                emulated: None,
            })
        }
        CardSpec::Emulated | CardSpec::EmulatedFlash(_) => {
            let flash = match spec {
                CardSpec::EmulatedFlash(p) => Some(p.as_path()),
                _ => None,
            };
            let em = Emulated::start_with(flash).map_err(&fail)?;
            let t = connect_retry(
                em.socket(),
                name.clone(),
                cfg.arena_bytes,
                Duration::from_secs(10),
            )
            .map_err(|e| transport(e, em.log_tail()))?;
            let card = Card::open(Arc::new(t), cfg).map_err(|e| driver(e, em.log_tail()))?;
            Ok(OpenCard {
                card,
                emulated: Some(em),
            })
        }
    }
}

/// Opens the backend a spec names.
pub fn open(spec: &CardSpec) -> Result<Box<dyn Backend>, crate::Error> {
    match spec {
        CardSpec::Cpu => Ok(Box::new(CpuBackend)),
        other => {
            let open = open_card(other, DriverConfig::default())?;
            Ok(Box::new(CardBackend::new(
                open,
                other.to_string(),
                REQUEST_TIMEOUT,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_specs_parse() {
        assert_eq!("cpu".parse(), Ok(CardSpec::Cpu));
        assert_eq!("emulated".parse(), Ok(CardSpec::Emulated));
        assert_eq!(
            "vfio-user:/tmp/s".parse(),
            Ok(CardSpec::VfioUser("/tmp/s".into()))
        );
        assert_eq!(
            "vfio:0000:00:03.0".parse(),
            Ok(CardSpec::Vfio("0000:00:03.0".into()))
        );
        assert!("vfio:00:03.0".parse::<CardSpec>().is_err());
        assert!("vfio-user:".parse::<CardSpec>().is_err());
        assert!("gpu".parse::<CardSpec>().is_err());
    }
}
