//! The `preba` command line.
#![forbid(unsafe_code)]

use crate::Error;
use crate::backend::{self, Backend, CardSpec, Job, Output, Via};
use crate::npy;
use crate::progress::Progress;
use crate::rows::Rows;
use clap::{Parser, Subcommand, ValueEnum};
use preba_protocol::limits::MAX_INPUT_BYTES;
use preba_protocol::media::{self, Kind};
use preba_protocol::profile::{AudioProfile, Dtype, ImageProfile, Layout};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "preba",
    version,
    about = "Preprocessing for MIG inference servers: images and audio on the preba card"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Preprocess JPEG images into a tensor (.npy) or WAV audio into log-Mel features (.npz).
    Preprocess(PreprocessArgs),
    /// Inspect a card.
    #[command(subcommand)]
    Card(CardCommand),
}

#[derive(Subcommand, Debug)]
pub enum CardCommand {
    /// Print IDENTIFY and telemetry (CU counts, busy time, energy), the running firmware's
    /// build id and slot, the last boot's outcome and the A/B slots.
    Info {
        /// emulated, emulated:FLASH_FILE, vfio-user:PATH or vfio:BDF.
        spec: Option<String>,
        /// The same as the positional SPEC.
        #[arg(long = "card")]
        card: Option<String>,
    },
    /// Flash a firmware ELF over PCIe into the slot that is not running, activate it, reset
    /// the card and check it runs the new build; on failure the card stays on its old image.
    Flash {
        /// emulated:FLASH_FILE, vfio-user:PATH or vfio:BDF.
        #[arg(long = "card")]
        card: String,
        /// Switch back to the other slot (the image before the last flash) instead.
        #[arg(long)]
        rollback: bool,
        /// The firmware ELF (default: $PREBA_FIRMWARE, else this workspace's build-fw output).
        elf: Option<PathBuf>,
    },
}

fn card_spec(s: &str) -> Result<CardSpec, Error> {
    let spec: CardSpec = s.parse().map_err(Error::Usage)?;
    if spec == CardSpec::Cpu {
        return Err(Error::Usage("cpu is not a card".into()));
    }
    Ok(spec)
}

/// Download progress and steps on stderr.
struct FlashReport {
    bar: Option<Progress>,
}

impl crate::firmware::Report for FlashReport {
    fn download(&mut self, _done: usize, total: usize) {
        // One tick per chunk: the bar counts FIRMWARE_DOWNLOAD commands.
        let bar = self.bar.get_or_insert_with(|| {
            eprintln!("downloading {total} bytes");
            Progress::new(total.div_ceil(preba_protocol::admin::MAX_ADMIN_DATA as usize))
        });
        bar.tick();
    }
    fn step(&mut self, line: &str) {
        eprintln!("{line}");
    }
}

/// Runs `preba card ...`.
pub fn card(cmd: &CardCommand) -> Result<i32, Error> {
    match cmd {
        CardCommand::Info { spec, card } => {
            let s = card.as_ref().or(spec.as_ref()).ok_or_else(|| {
                Error::Usage("preba card info needs a card: SPEC or --card SPEC".into())
            })?;
            let spec = card_spec(s)?;
            let open = backend::open_card(&spec, crate::driver::DriverConfig::default())?;
            let card = &open.card;
            let tel = card.telemetry().map_err(|source| Error::Driver {
                card: spec.to_string(),
                source,
                log: String::new(),
            })?;
            print!(
                "{}",
                card_info_text(&spec.to_string(), card.identify(), &tel)
            );
            for l in crate::firmware::describe(card.identify()) {
                println!("{l}");
            }
            let mut head = [0u8; 4];
            if card
                .transport()
                .bar2_read(preba_protocol::card::BAR2_LOG_HEAD, &mut head)
                .is_ok()
            {
                println!(
                    "log                {} bytes of defmt frames since reset (all of it: cargo xtask logs --card {spec})",
                    u32::from_le_bytes(head)
                );
                match crate::logtail::last_lines(&*card.transport(), CARD_INFO_LOG_LINES) {
                    Ok(lines) => {
                        for l in lines {
                            println!("  {l}");
                        }
                    }
                    Err(e) => println!("  (log not decoded: {e})"),
                }
            }
            Ok(0)
        }
        CardCommand::Flash {
            card,
            rollback,
            elf,
        } => {
            let spec = card_spec(card)?;
            let fail = |reason: String| Error::Card {
                card: spec.to_string(),
                reason,
            };
            let image = if *rollback {
                None
            } else {
                let path = match elf {
                    Some(p) => p.clone(),
                    None => crate::vfio_user::Emulated::firmware().map_err(Error::Usage)?,
                };
                Some(crate::firmware::Image::load(&path).map_err(Error::Usage)?)
            };
            let cfg = crate::driver::DriverConfig {
                admin_timeout: std::time::Duration::from_secs(30),
                arena_bytes: 16 << 20,
                ..crate::driver::DriverConfig::default()
            };
            let open = backend::open_card(&spec, cfg.clone())?;
            let t = open.card.transport();
            match image {
                None => {
                    let id = crate::firmware::rollback(open.card, &t, &cfg).map_err(fail)?;
                    println!(
                        "rolled back: slot {} runs build {:016x}",
                        preba_protocol::fwimage::slot_name(id.running_slot),
                        id.fw_build_id
                    );
                }
                Some(image) => {
                    let mut r = FlashReport { bar: None };
                    let f = crate::firmware::flash(open.card, &t, &cfg, &image, &mut r)
                        .map_err(fail)?;
                    println!(
                        "flashed build {:016x} ({} bytes) to slot {} in {:.2} s; it runs (was build {:016x})",
                        f.new.fw_build_id,
                        image.bytes.len(),
                        preba_protocol::fwimage::slot_name(f.slot),
                        f.elapsed.as_secs_f64(),
                        f.old_build_id
                    );
                }
            }
            drop(open.emulated);
            Ok(0)
        }
    }
}

/// The text `preba card info` prints.
pub fn card_info_text(
    name: &str,
    id: &preba_protocol::admin::Identify,
    t: &preba_protocol::admin::Telemetry,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let clock = u64::from(id.clock_mhz.max(1)) * 1_000_000;
    let _ = writeln!(s, "card               {name}");
    let _ = writeln!(
        s,
        "protocol           {}.{}",
        id.version_major, id.version_minor
    );
    let _ = writeln!(
        s,
        "firmware           {} (build id {:#018x})",
        id.fw_version_str(),
        id.fw_build_id
    );
    let _ = writeln!(
        s,
        "compute units      {} image, {} audio-mel, {} audio-norm",
        id.image_cus, id.audio_cus, id.norm_cus
    );
    let _ = writeln!(
        s,
        "queues             {} I/O pairs, {} entries max, {} SG max, {} profile slots",
        id.max_io_queues, id.max_queue_entries, id.max_sg, id.profile_slots
    );
    let _ = writeln!(
        s,
        "limits             input {} MiB, image side {} px, {} Mpx",
        id.max_input_bytes >> 20,
        id.max_image_side,
        id.max_image_pixels >> 20
    );
    let _ = writeln!(s, "card memory        {} MiB", id.card_mem_bytes >> 20);
    let _ = writeln!(s, "core clock         {} MHz", id.clock_mhz);
    let _ = writeln!(
        s,
        "uptime             {:.3} s ({} cycles)",
        t.uptime_cycles as f64 / clock as f64,
        t.uptime_cycles
    );
    let _ = writeln!(s, "requests           {} ({} errors)", t.requests, t.errors);
    let _ = writeln!(
        s,
        "board power        {:.3} W",
        f64::from(t.power_mw) / 1000.0
    );
    let _ = writeln!(s, "board energy       {:.6} J", t.energy_uj as f64 / 1e6);
    for (i, cu) in t.cus.iter().take(t.cu_count as usize).enumerate() {
        let kind = preba_protocol::admin::CuKind::from_u8(cu.kind).map_or("?", |k| k.name());
        let _ = writeln!(
            s,
            "cu {i:<2} {kind:<11} requests {:>8}  busy {:>14} cycles  errors {:>4}  watchdog {:>3}  energy {:.6} J",
            cu.requests,
            cu.busy_cycles,
            cu.errors,
            cu.resets,
            cu.energy_uj as f64 / 1e6
        );
    }
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Image,
    Audio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    U8,
    F16,
    Bf16,
    F32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    Nchw,
    Nhwc,
}

#[derive(clap::Args, Debug)]
pub struct PreprocessArgs {
    /// Where to preprocess: emulated (preba-card with the built firmware, started
    /// on a private socket), vfio-user:PATH, vfio:BDF or cpu.
    #[arg(long, default_value = "emulated")]
    pub card: String,
    /// Input kind; by default detected from each file's contents.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Shorter side after resizing (images).
    #[arg(long)]
    pub resize: Option<u16>,
    /// Centre crop size (images).
    #[arg(long)]
    pub crop: Option<u16>,
    /// Per-channel mean for normalization, r,g,b (images).
    #[arg(long, value_parser = parse_rgb)]
    pub mean: Option<[f32; 3]>,
    /// Per-channel std for normalization, r,g,b (images).
    #[arg(long, value_parser = parse_rgb)]
    pub std: Option<[f32; 3]>,
    /// Output element type (images); default u8, or f32 when normalizing.
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Output layout (images).
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
    /// Worker threads (default: all cores, at least the card's in-flight slots).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output file: .npy for images, .npz for audio.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// JSON manifest with one entry per input.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Input files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

fn parse_rgb(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<&str> = s.split(',').collect();
    if v.len() != 3 {
        return Err(format!(
            "`{s}`: expected three comma-separated numbers r,g,b"
        ));
    }
    let mut out = [0f32; 3];
    for (o, t) in out.iter_mut().zip(v) {
        *o = t
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not a number"))?;
        if !o.is_finite() {
            return Err(format!("`{t}` is not finite"));
        }
    }
    Ok(out)
}

/// What one input produced: an image tensor sits in the worker's buffer
/// that travels with it, audio features in the output.
enum Made {
    Image { width: u32, height: u32 },
    Audio(preba_preprocess::audio::AudioOutput),
}

/// The outcome of input `pos`, with the buffer its tensor was made in
/// (handed back to a worker for the next input).
struct Done {
    pos: usize,
    result: Result<(Made, Via), Failure>,
    buf: Vec<u8>,
}

/// Why an input produced nothing: its own fault (a manifest entry, the run
/// goes on), or the output's (the run stops with that error).
enum Failure {
    Input(String),
    Output(std::io::Error),
}

/// A worker's reusable memory: the input file's bytes; the tensor buffer
/// travels with each [`Done`] to the writer and back.
#[derive(Default)]
struct Scratch {
    input: Vec<u8>,
}

/// Buffers above this are dropped after use (one huge input must not pin
/// its memory in every worker).
const KEEP_MAX: usize = 8 << 20;

/// Runs `preba preprocess`; returns the exit status (0 all ok, 1 some failed).
pub fn preprocess(args: &PreprocessArgs) -> Result<i32, Error> {
    let spec: CardSpec = args.card.parse().map_err(Error::Usage)?;
    let kind = match args.kind {
        Some(KindArg::Image) => Kind::Jpeg,
        Some(KindArg::Audio) => Kind::Wav,
        None => detect_kind(&args.inputs, &args.output),
    };
    let job = build_job(args, kind)?;
    let backend = backend::open(&spec)?;
    let threads = args
        .threads
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores.max(backend.parallelism())
        })
        .clamp(1, 256);
    let file = create_output(&args.output)?;
    let mut manifest = match &args.manifest {
        Some(m) => Some(Manifest::create(m, backend.name(), kind, args, &job)?),
        None => None,
    };
    let ctx = Ctx {
        args,
        kind,
        backend: backend.as_ref(),
        threads,
    };
    let failed = match &job {
        Job::Image(p) => {
            let out = ImageOut::create(file, &args.output, p, args.inputs.len())?;
            // Rows are written only for inputs that succeeded, and results
            // come here in input order: the i-th success is row i.
            let mut kept = 0usize;
            let failed = ctx.drive(Task::Image(p, &out.rows), &mut manifest, &mut |_, _| {
                kept += 1;
                Ok(kept - 1)
            })?;
            out.finish(kept)?;
            failed
        }
        Job::Audio(_) => {
            let mut out = AudioOut {
                zip: npy::NpzWriter::new(BufWriter::new(file)),
                path: args.output.clone(),
            };
            let failed = ctx.drive(Task::Audio(&job), &mut manifest, &mut |pos, made| {
                out.add(pos, made)
            })?;
            out.finish()?;
            failed
        }
    };
    let fatal = backend.fatal();
    if let Some(m) = manifest {
        m.finish()?;
    }
    if let Some(cause) = fatal {
        return Err(Error::Failed {
            card: backend.name(),
            cause,
            failed,
            inputs: args.inputs.len(),
        });
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// What the workers do with each input: an image's tensor goes into its
/// row of the output, written by the worker itself; audio features come
/// back to the run's thread, which writes them in input order.
#[derive(Clone, Copy)]
enum Task<'a> {
    Image(&'a ImageProfile, &'a Rows),
    Audio(&'a Job),
}

/// What every input of a run shares.
struct Ctx<'a> {
    args: &'a PreprocessArgs,
    kind: Kind,
    backend: &'a dyn Backend,
    threads: usize,
}

impl Ctx<'_> {
    /// Runs every input through `task`; `record(pos, made)` files each
    /// success in input order and gives its index in the output. Returns
    /// how many inputs failed.
    fn drive(
        &self,
        task: Task<'_>,
        manifest: &mut Option<Manifest>,
        record: &mut dyn FnMut(usize, &Made) -> Result<usize, Error>,
    ) -> Result<usize, Error> {
        let args = self.args;
        let progress = Progress::new(args.inputs.len());
        let mut failed = 0usize;
        // Results are taken in input order as they complete; the manifest is
        // streamed too, so memory stays flat however many inputs there are.
        let mut take = |d: Done| -> Result<Vec<u8>, Error> {
            let path = &args.inputs[d.pos];
            let entry = match d.result {
                Ok((made, via)) => {
                    let index = record(d.pos, &made)?;
                    entry_ok(path, &made, via, index)
                }
                Err(Failure::Output(source)) => {
                    return Err(Error::Output {
                        path: args.output.clone(),
                        source,
                    });
                }
                Err(Failure::Input(reason)) => {
                    failed += 1;
                    eprintln!("{}: {reason}", path.display());
                    json!({"path": path.display().to_string(), "status": "error", "error": reason,
                           "index": Value::Null, "via": Value::Null})
                }
            };
            if let Some(m) = manifest {
                m.add(&entry)?;
            }
            let mut buf = d.buf;
            if buf.capacity() > KEEP_MAX {
                buf = Vec::new();
            }
            Ok(buf)
        };
        if self.threads == 1 || args.inputs.len() == 1 {
            // One thread: all on this one, no hand-offs.
            let mut scratch = Scratch::default();
            let mut buf = Vec::new();
            for pos in 0..args.inputs.len() {
                let d = self.work(pos, task, &mut scratch, buf);
                progress.tick();
                buf = take(d)?;
            }
        } else {
            self.pool(task, &progress, &mut take)?;
        }
        Ok(failed)
    }

    /// `threads` long-lived workers take inputs in order and hand each result,
    /// with the buffer it was made in, to this thread, which writes them in
    /// input order and hands the buffers back. A worker takes a free buffer
    /// before it takes an input, so the input the writer waits for always has
    /// one: `2 * threads` buffers bound the results held out of order.
    fn pool(
        &self,
        task: Task<'_>,
        progress: &Progress,
        take: &mut dyn FnMut(Done) -> Result<Vec<u8>, Error>,
    ) -> Result<(), Error> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Mutex, mpsc};
        let inputs = &self.args.inputs;
        let threads = self.threads.min(inputs.len());
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..2 * threads {
            let _ = free_tx.send(Vec::new());
        }
        let free_rx = Mutex::new(free_rx);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let done_tx = done_tx.clone();
                let (next, stop, free_rx) = (&next, &stop, &free_rx);
                s.spawn(move || {
                    let mut scratch = Scratch::default();
                    loop {
                        let buf = {
                            let Ok(rx) = free_rx.lock() else { return };
                            match rx.recv() {
                                Ok(b) => b,
                                Err(_) => return,
                            }
                        };
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let pos = next.fetch_add(1, Ordering::Relaxed);
                        if pos >= inputs.len() {
                            return;
                        }
                        let d = self.work(pos, task, &mut scratch, buf);
                        progress.tick();
                        if done_tx.send(d).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            let mut held: std::collections::BTreeMap<usize, Done> = Default::default();
            let mut want = 0usize;
            let mut result = Ok(());
            while want < inputs.len() {
                let d = match held.remove(&want) {
                    Some(d) => d,
                    None => match done_rx.recv() {
                        Ok(d) if d.pos == want => d,
                        Ok(d) => {
                            held.insert(d.pos, d);
                            continue;
                        }
                        // Every worker ended without this input: only after a
                        // panic in one of them.
                        Err(_) => {
                            result = Err(Error::Usage(format!(
                                "internal error: worker lost input {}",
                                inputs[want].display()
                            )));
                            break;
                        }
                    },
                };
                want += 1;
                match take(d) {
                    Ok(buf) => {
                        let _ = free_tx.send(buf);
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            // Wake and end the workers (on an error, before they finish).
            stop.store(true, Ordering::Relaxed);
            drop(free_tx);
            result
        })
    }

    /// Reads and preprocesses input `pos` into `buf` and from there into its
    /// row of the output (images), or into a new output (audio).
    fn work(&self, pos: usize, task: Task<'_>, scratch: &mut Scratch, mut buf: Vec<u8>) -> Done {
        let path = &self.args.inputs[pos];
        let result = one(path, pos, task, self.kind, self.backend, scratch, &mut buf);
        if scratch.input.capacity() > KEEP_MAX {
            scratch.input = Vec::new();
        }
        Done { pos, result, buf }
    }
}

/// The streamed `--manifest` JSON: the run's fields first, then one entry
/// per input as it is written.
struct Manifest {
    file: BufWriter<File>,
    path: PathBuf,
    entries: usize,
}

impl Manifest {
    fn create(
        path: &Path,
        card: String,
        kind: Kind,
        args: &PreprocessArgs,
        job: &Job,
    ) -> Result<Manifest, Error> {
        let io = |e| Error::Output {
            path: path.to_path_buf(),
            source: e,
        };
        let file = File::create(path).map_err(io)?;
        let mut m = Manifest {
            file: BufWriter::new(file),
            path: path.to_path_buf(),
            entries: 0,
        };
        let head = [
            ("card", json!(card)),
            (
                "kind",
                json!(if kind == Kind::Jpeg { "image" } else { "audio" }),
            ),
            ("output", json!(args.output.display().to_string())),
            (
                "dtype",
                json!(match job {
                    Job::Image(p) => p.dtype.name(),
                    Job::Audio(_) => "f32",
                }),
            ),
            (
                "dtype_note",
                json!(if matches!(job, Job::Image(p) if p.dtype == Dtype::Bf16) {
                    "bf16 stored as uint16 bits"
                } else {
                    ""
                }),
            ),
        ];
        let mut text = String::from("{\n");
        for (k, v) in head {
            text += &format!("  {}: {v},\n", json!(k));
        }
        text += "  \"inputs\": [";
        m.file.write_all(text.as_bytes()).map_err(io)?;
        Ok(m)
    }

    fn add(&mut self, entry: &Value) -> Result<(), Error> {
        let sep = if self.entries == 0 {
            "\n    "
        } else {
            ",\n    "
        };
        self.entries += 1;
        let text = format!("{sep}{entry}");
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| Error::Output {
                path: self.path.clone(),
                source: e,
            })
    }

    fn finish(mut self) -> Result<(), Error> {
        let tail = if self.entries == 0 {
            "]\n}\n"
        } else {
            "\n  ]\n}\n"
        };
        let io = |e| Error::Output {
            path: self.path.clone(),
            source: e,
        };
        self.file.write_all(tail.as_bytes()).map_err(io)?;
        self.file.flush().map_err(io)
    }
}

fn entry_ok(path: &Path, made: &Made, via: Via, index: usize) -> Value {
    let mut e = json!({"path": path.display().to_string(), "status": "ok", "error": Value::Null,
                       "index": index, "via": via.name()});
    match made {
        Made::Image { width, height } => {
            e["width"] = json!(width);
            e["height"] = json!(height);
        }
        Made::Audio(o) => {
            e["sample_rate"] = json!(o.info.sample_rate);
            e["samples"] = json!(o.info.frames);
            e["frames"] = json!(o.features.frames);
        }
    }
    e
}

/// The kind of the first input whose contents say what it is.
fn detect_kind(inputs: &[PathBuf], output: &Path) -> Kind {
    for p in inputs {
        let mut head = [0u8; 12];
        if let Ok(mut f) = File::open(p) {
            let mut n = 0;
            while n < head.len() {
                match f.read(&mut head[n..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            if let Some(k) = media::sniff(&head[..n]) {
                return k;
            }
        }
    }
    if output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
    {
        Kind::Wav
    } else {
        Kind::Jpeg
    }
}

fn build_job(args: &PreprocessArgs, kind: Kind) -> Result<Job, Error> {
    match kind {
        Kind::Jpeg => {
            let mut p = ImageProfile::default();
            if let Some(r) = args.resize {
                p.resize = r;
                if args.crop.is_none() {
                    p.crop = p.crop.min(r);
                }
            }
            if let Some(c) = args.crop {
                p.crop = c;
            }
            match (args.mean, args.std) {
                (Some(m), Some(s)) => {
                    p.normalize = true;
                    p.mean = m;
                    p.std = s;
                    p.dtype = Dtype::F32;
                }
                (None, None) => {}
                _ => return Err(Error::Usage("--mean and --std go together".into())),
            }
            if let Some(d) = args.dtype {
                p.dtype = match d {
                    DtypeArg::U8 => Dtype::U8,
                    DtypeArg::F16 => Dtype::F16,
                    DtypeArg::Bf16 => Dtype::Bf16,
                    DtypeArg::F32 => Dtype::F32,
                };
            }
            if let Some(l) = args.layout {
                p.layout = match l {
                    LayoutArg::Nchw => Layout::Nchw,
                    LayoutArg::Nhwc => Layout::Nhwc,
                };
            }
            p.validate().map_err(|e| {
                Error::Usage(match e {
                    preba_protocol::profile::ProfileError::NormalizeNeedsFloat => {
                        "--dtype u8 cannot hold normalized values (--mean/--std): use f16, bf16 or f32".into()
                    }
                    preba_protocol::profile::ProfileError::BadMeanStd => "--std must be non-zero".into(),
                    _ => format!(
                        "--resize {} --crop {}: need 1 <= crop <= resize <= {}",
                        p.resize,
                        p.crop,
                        preba_protocol::profile::MAX_RESIZE
                    ),
                })
            })?;
            if !args
                .output
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
            {
                return Err(Error::Usage(format!(
                    "{}: image output must be a .npy file",
                    args.output.display()
                )));
            }
            Ok(Job::Image(p))
        }
        Kind::Wav => {
            let image_opts = [
                ("--resize", args.resize.is_some()),
                ("--crop", args.crop.is_some()),
                ("--mean", args.mean.is_some()),
                ("--std", args.std.is_some()),
                ("--dtype", args.dtype.is_some()),
                ("--layout", args.layout.is_some()),
            ];
            if let Some((name, _)) = image_opts.iter().find(|(_, set)| *set) {
                return Err(Error::Usage(format!(
                    "{name} applies to images; the inputs are audio"
                )));
            }
            if !args
                .output
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
            {
                return Err(Error::Usage(format!(
                    "{}: audio output must be a .npz file",
                    args.output.display()
                )));
            }
            Ok(Job::Audio(AudioProfile::default()))
        }
    }
}

/// Preprocesses input `pos`; an image's tensor is made in `buf` and written
/// to its row of the output by this (worker) thread.
fn one(
    path: &Path,
    pos: usize,
    task: Task<'_>,
    kind: Kind,
    backend: &dyn Backend,
    scratch: &mut Scratch,
    buf: &mut Vec<u8>,
) -> Result<(Made, Via), Failure> {
    read_bounded(path, &mut scratch.input).map_err(Failure::Input)?;
    let bytes = &scratch.input;
    match media::sniff(bytes) {
        Some(k) if k != kind => {
            let (is, run) = if k == Kind::Jpeg {
                ("a JPEG image", "audio")
            } else {
                ("a WAV file", "images")
            };
            return Err(Failure::Input(format!(
                "is {is}, but this run preprocesses {run}"
            )));
        }
        _ => {}
    }
    // The backend reports unrecognised bytes as corrupt input of the run's kind.
    match task {
        Task::Image(p, rows) => {
            // Every byte is overwritten: no zero-fill needed after the first use.
            buf.resize(p.output_len(), 0);
            let ((width, height), via) = backend
                .process_image_into(bytes, p, buf)
                .map_err(|e| Failure::Input(e.to_string()))?;
            rows.write(pos, buf).map_err(Failure::Output)?;
            Ok((Made::Image { width, height }, via))
        }
        Task::Audio(job) => match backend
            .process(bytes, job)
            .map_err(|e| Failure::Input(e.to_string()))?
        {
            (Output::Audio(o), via) => Ok((Made::Audio(o), via)),
            (Output::Image(_), _) => Err(Failure::Input(
                "internal error: image output for audio".into(),
            )),
        },
    }
}

/// Reads a file into `bytes` (reused), refusing it before reading when it
/// is past the input limit.
fn read_bounded(path: &Path, bytes: &mut Vec<u8>) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let len = f.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    if len > MAX_INPUT_BYTES {
        return Err(format!(
            "input too large: {len} bytes (limit {} MiB)",
            MAX_INPUT_BYTES >> 20
        ));
    }
    bytes.clear();
    bytes.reserve(len as usize + 1);
    f.take(MAX_INPUT_BYTES + 1)
        .read_to_end(bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "input too large: more than {} MiB",
            MAX_INPUT_BYTES >> 20
        ));
    }
    Ok(())
}

/// Creates (truncates) the output file, opened read-write.
fn create_output(path: &Path) -> Result<File, Error> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| Error::Output {
            path: path.to_path_buf(),
            source,
        })
}

/// The image `.npy`: rows written at their offsets by the workers
/// ([`Rows`]), the header for the final row count at the end.
struct ImageOut {
    rows: Rows,
    path: PathBuf,
    descr: &'static str,
    item_shape: [usize; 3],
    header_len: usize,
}

impl ImageOut {
    fn create(file: File, path: &Path, p: &ImageProfile, inputs: usize) -> Result<ImageOut, Error> {
        let c = p.crop as usize;
        let item_shape = if p.layout == Layout::Nchw {
            [3, c, c]
        } else {
            [c, c, 3]
        };
        let descr = npy::descr(p.dtype);
        // Room for any row count: the header is written at the end.
        let header_len = npy::header_min(
            descr,
            &[usize::MAX, item_shape[0], item_shape[1], item_shape[2]],
            0,
        )
        .len();
        let rows = Rows::new(file, header_len, p.output_len(), inputs).map_err(|source| {
            Error::Output {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(ImageOut {
            rows,
            path: path.to_path_buf(),
            descr,
            item_shape,
            header_len,
        })
    }

    /// Ends the file; `kept` is how many rows the manifest gave indices to.
    fn finish(self, kept: usize) -> Result<(), Error> {
        let ImageOut {
            rows,
            path,
            descr,
            item_shape,
            header_len,
        } = self;
        let n = rows
            .finish(|n| {
                npy::header_min(
                    descr,
                    &[n, item_shape[0], item_shape[1], item_shape[2]],
                    header_len,
                )
            })
            .map_err(|source| Error::Output {
                path: path.clone(),
                source,
            })?;
        if n != kept {
            return Err(Error::Output {
                path,
                source: std::io::Error::other(format!(
                    "internal error: {n} rows written, {kept} reported"
                )),
            });
        }
        Ok(())
    }
}

/// The audio `.npz`: one array per input that succeeded, named by its
/// input position, streamed in input order.
struct AudioOut {
    zip: npy::NpzWriter<BufWriter<File>>,
    path: PathBuf,
}

impl AudioOut {
    fn add(&mut self, pos: usize, made: &Made) -> Result<usize, Error> {
        let Made::Audio(o) = made else {
            return Err(Error::Usage(
                "internal error: image output in an audio run".into(),
            ));
        };
        let f = &o.features;
        // `<f4` is the in-memory layout on little-endian hosts: the
        // features go to the file from where they were made.
        let converted: Vec<u8>;
        let bytes: &[u8] = if cfg!(target_endian = "little") {
            bytemuck::cast_slice(&f.data)
        } else {
            converted = f.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            &converted
        };
        self.zip
            .add(&pos.to_string(), "<f4", &[f.n_mels, f.frames], bytes)
            .map_err(|source| Error::Output {
                path: self.path.clone(),
                source,
            })?;
        Ok(pos)
    }

    fn finish(self) -> Result<(), Error> {
        self.zip
            .finish()
            .map(|_| ())
            .map_err(|source| Error::Output {
                path: self.path,
                source,
            })
    }
}

/// Log lines `preba card info` shows (the newest).
const CARD_INFO_LOG_LINES: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_images() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/images");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        v.sort();
        v
    }

    fn args(out: &Path, man: &Path, threads: &str, inputs: &[PathBuf]) -> PreprocessArgs {
        let mut argv: Vec<String> = [
            "preba",
            "preprocess",
            "--card",
            "cpu",
            "--resize",
            "40",
            "--crop",
            "32",
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.25,0.25,0.25",
            "--threads",
            threads,
            "-o",
            out.to_str().unwrap(),
            "--manifest",
            man.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(inputs.iter().map(|p| p.display().to_string()));
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Preprocess(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// Rows written by the workers at their offsets, holes of failed
    /// inputs squeezed out at the end: the same file and manifest whatever
    /// the thread count; failures sit among the successes in the fixtures
    /// (corrupt, unsupported, progressive).
    #[test]
    fn output_is_independent_of_threads() {
        let inputs = fixture_images();
        let dir = tempfile::tempdir().unwrap();
        let mut made = Vec::new();
        for threads in ["1", "2", "5"] {
            let out = dir.path().join(format!("{threads}.npy"));
            let man = dir.path().join(format!("{threads}.json"));
            let code = preprocess(&args(&out, &man, threads, &inputs)).unwrap();
            assert_eq!(code, 1, "the fixtures hold bad files");
            let npy = std::fs::read(&out).unwrap();
            let mut m: Value = serde_json::from_slice(&std::fs::read(&man).unwrap()).unwrap();
            m["output"] = Value::Null;
            made.push((threads, npy, m));
        }
        let (_, npy0, m0) = &made[0];
        let ok = m0["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["status"] == "ok")
            .count();
        assert!(ok > 10 && ok < inputs.len());
        let header = npy::header_min("<f4", &[ok, 3, 32, 32], 0);
        let body = npy0.len() - ok * 3 * 32 * 32 * 4;
        assert!(
            std::str::from_utf8(&npy0[10..body])
                .unwrap()
                .contains(&format!("'shape': ({ok}, 3, 32, 32)")),
            "{header:?}"
        );
        for (threads, npy, m) in &made[1..] {
            assert!(npy == npy0, "x{threads}: .npy differs");
            assert_eq!(m, m0, "x{threads}: manifest differs");
        }
    }
}
