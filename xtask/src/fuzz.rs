//! `cargo xtask fuzz [TARGET...] [--seconds N] [--sanitizer address|none] [--fast]`:
//! the cargo-fuzz (libFuzzer) targets of `fuzz/`, each run for N seconds
//! from a corpus seeded with the fixtures. `--fast` is for long runs: no
//! sanitizer and no comparison tracing, 5-8x the executions per second on
//! the targets that run the soft core or the resampler (measured: firmware_queue
//! ~220 -> ~1,700 exec/s, golden_wav ~300 -> ~2,200), built in its own
//! target dir; the corpus is shared, so inputs found with tracing keep
//! guiding it and the next AddressSanitizer run on the machine replays what
//! it found (the corpus lives under target/fuzz). Installs what it needs only when
//! missing (the pinned nightly of fuzz/rust-toolchain.toml, cargo-fuzz at
//! [`CARGO_FUZZ_VERSION`]). Builds and corpora live under target/fuzz (CI
//! caches target/). Prints per target the executions, exec/s and coverage
//! from libFuzzer's final stats; fails on a crash, naming the artifact.

use crate::util::{self, Result, root, run};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// cargo-fuzz release installed by `cargo install --locked`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 20;

/// One fuzz target: where its seeds come from and how long one input may take.
struct Target {
    name: &'static str,
    /// Fixture folders (relative to the root) and the file suffix taken from each.
    fixtures: &'static [(&'static str, &'static str)],
    /// libFuzzer's -timeout: one input running longer is a hang (a crash).
    timeout_s: u64,
    /// Needs the firmware ELF (PREBA_FIRMWARE).
    firmware: bool,
    /// Largest seed taken and largest input made (libFuzzer's -max_len):
    /// big inputs cost executions and seldom reach new code.
    max_len: u64,
}

const TARGETS: &[Target] = &[
    Target {
        name: "protocol_queue",
        fixtures: &[],
        timeout_s: 5,
        firmware: false,
        max_len: 4096,
    },
    Target {
        name: "media_probe",
        fixtures: &[("fixtures/images", ".jpg"), ("fixtures/audio", ".wav")],
        timeout_s: 5,
        firmware: false,
        max_len: 64 << 10,
    },
    Target {
        name: "golden_jpeg",
        fixtures: &[("fixtures/images", ".jpg")],
        timeout_s: 20,
        firmware: false,
        max_len: 64 << 10,
    },
    Target {
        name: "golden_wav",
        fixtures: &[("fixtures/audio", ".wav")],
        timeout_s: 20,
        firmware: false,
        max_len: 64 << 10,
    },
    Target {
        name: "kserve",
        fixtures: &[],
        timeout_s: 5,
        firmware: false,
        max_len: 4096,
    },
    Target {
        name: "firmware_queue",
        fixtures: &[],
        timeout_s: 60,
        firmware: true,
        max_len: 64 << 10,
    },
    Target {
        name: "vfio_user_server",
        fixtures: &[],
        timeout_s: 60,
        firmware: true,
        max_len: 8 << 10,
    },
];

pub fn run_cli(args: &[&str]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut sanitizer = "address";
    let mut trace_compares = true;
    let mut names: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a value")?;
                seconds = v
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("--seconds {v}: not a positive whole number"))?;
            }
            "--sanitizer" => {
                let v = *it.next().ok_or("--sanitizer needs a value")?;
                sanitizer = match v {
                    "address" => "address",
                    "none" => "none",
                    _ => return Err(format!("--sanitizer {v}: expected address or none")),
                };
            }
            "--fast" => {
                sanitizer = "none";
                trace_compares = false;
            }
            _ if a.starts_with('-') => return Err(format!("fuzz: unknown option {a}")),
            _ => names.push(a),
        }
    }
    let targets: Vec<&Target> = if names.is_empty() {
        TARGETS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                TARGETS.iter().find(|t| t.name == *n).ok_or_else(|| {
                    let all: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
                    format!("fuzz: unknown target {n} (targets: {})", all.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    fuzz(
        &targets,
        seconds,
        Build {
            sanitizer,
            trace_compares,
        },
    )
}

/// How the targets are built.
#[derive(Clone, Copy)]
struct Build {
    sanitizer: &'static str,
    /// libFuzzer's comparison tracing (off: faster, less guided).
    trace_compares: bool,
}

/// What `cargo xtask test` runs: every target for a short time.
pub fn ci() -> Result<()> {
    let all: Vec<&Target> = TARGETS.iter().collect();
    fuzz(
        &all,
        10,
        Build {
            sanitizer: "address",
            trace_compares: true,
        },
    )
}

/// The toolchain named in fuzz/rust-toolchain.toml.
fn toolchain() -> Result<String> {
    let p = root().join("fuzz").join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.split('"').nth(1))
        .next()
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: no channel = \"...\" line", p.display()))
}

/// A `cargo` through rustup's proxy on `channel`, free of the variables the
/// outer cargo (stable, running xtask) set for itself.
fn nightly_cargo(channel: &str) -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{channel}"))
        .current_dir(root().join("fuzz"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    c
}

fn ensure_tools(channel: &str) -> Result<()> {
    let have_toolchain = Command::new("rustup")
        .args(["run", channel, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_toolchain {
        run(Command::new("rustup").args(["toolchain", "install", channel, "--profile", "minimal"]))
            .map_err(|e| format!("{e}\n(cargo-fuzz needs the nightly {channel})"))?;
    }
    let version = nightly_cargo(channel)
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !version.split_whitespace().any(|w| w == CARGO_FUZZ_VERSION) {
        // Installed with the project's stable toolchain: cargo-fuzz itself
        // needs no nightly, only the builds it drives do.
        run(util::cargo().args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    Ok(())
}

/// Copies fixture seeds into `corpus` (once each: names are kept, so a
/// rerun copies nothing and libFuzzer's own finds stay beside them).
fn seed(t: &Target, corpus: &Path) -> Result<usize> {
    std::fs::create_dir_all(corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let mut dirs: Vec<(PathBuf, &str)> = t
        .fixtures
        .iter()
        .map(|(d, suffix)| (root().join(d), *suffix))
        .collect();
    // Hand-made seeds (requests, queue scripts) live beside the targets.
    dirs.push((root().join("fuzz").join("seeds").join(t.name), ""));
    let mut n = 0;
    for (dir, suffix) in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(s) = name.to_str() else { continue };
            let small = e
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() <= t.max_len);
            if !small || !s.ends_with(suffix) {
                continue;
            }
            let to = corpus.join(format!("seed-{s}"));
            if !to.exists() {
                std::fs::copy(e.path(), &to)
                    .map_err(|err| format!("{} -> {}: {err}", e.path().display(), to.display()))?;
            }
            n += 1;
        }
    }
    Ok(n)
}

/// libFuzzer's final figures for one run.
#[derive(Default)]
struct Stats {
    execs: Option<u64>,
    exec_per_s: Option<u64>,
    cov: Option<u64>,
    features: Option<u64>,
    corpus: Option<String>,
    artifact: Option<String>,
    summary: Option<String>,
}

impl Stats {
    fn take_line(&mut self, line: &str) {
        let num = |key: &str| -> Option<u64> {
            let rest = line.split(key).nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        };
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            self.execs = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            self.exec_per_s = v.trim().parse().ok();
        } else if line.starts_with('#') && line.contains(" cov: ") {
            self.cov = num(" cov: ").or(self.cov);
            self.features = num(" ft: ").or(self.features);
            if let Some(c) = line.split(" corp: ").nth(1) {
                self.corpus = c.split_whitespace().next().map(str::to_owned);
            }
        } else if let Some(p) = line.split("Test unit written to ").nth(1) {
            self.artifact = Some(p.trim().to_owned());
        } else if line.starts_with("SUMMARY:") || line.contains("==ERROR:") {
            self.summary.get_or_insert_with(|| line.trim().to_owned());
        }
    }
}

fn fuzz(targets: &[&Target], seconds: u64, b: Build) -> Result<()> {
    let sanitizer = b.sanitizer;
    let channel = toolchain()?;
    ensure_tools(&channel)?;
    let dir = util::target_dir().join("fuzz");
    let mut firmware = None;
    if targets.iter().any(|t| t.firmware) {
        firmware = Some(crate::setup::build_fw()?);
    }
    // Each build flavour in its own dir, so switching rebuilds nothing;
    // corpora and artifacts are shared.
    let build_dir = if b.trace_compares {
        dir.clone()
    } else {
        dir.join("fast")
    };
    // Same flags for build and run, so `run` finds the build up to date.
    let flags = |c: &mut Command| {
        c.arg("--fuzz-dir")
            .arg(root().join("fuzz"))
            .arg("--sanitizer")
            .arg(sanitizer)
            .arg("--debug-assertions")
            .arg("--target-dir")
            .arg(&build_dir);
        if !b.trace_compares {
            c.arg("--no-trace-compares");
        }
    };
    let mut build = nightly_cargo(&channel);
    build.args(["fuzz", "build"]);
    flags(&mut build);
    if targets.len() == 1 {
        build.arg(targets[0].name);
    }
    run(&mut build)?;

    let mut report = Vec::new();
    let mut crashed = Vec::new();
    for t in targets {
        let corpus = dir.join("corpus").join(t.name);
        let artifacts = dir.join("artifacts").join(t.name);
        std::fs::create_dir_all(&artifacts).map_err(|e| format!("{}: {e}", artifacts.display()))?;
        let seeds = seed(t, &corpus)?;
        eprintln!(
            "xtask: fuzz {} for {seconds} s ({seeds} fixture seeds)",
            t.name
        );
        let mut cmd = nightly_cargo(&channel);
        cmd.args(["fuzz", "run"]);
        flags(&mut cmd);
        cmd.arg(t.name)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={}", t.timeout_s))
            .arg(format!("-max_len={}", t.max_len))
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        if let Some(fw) = &firmware {
            cmd.env("PREBA_FIRMWARE", fw);
        }
        // The run is bounded by -max_total_time; this only catches a fuzzer
        // that stops answering (one input is bounded by -timeout).
        let deadline = Duration::from_secs(seconds + 10 * t.timeout_s + 300);
        let (stats, ok) = run_fuzzer(&mut cmd, deadline)?;
        let line = format!(
            "{:<16} {:>12} execs {:>8} exec/s  cov {:>6}  ft {:>7}  corpus {}",
            t.name,
            stats.execs.map_or("?".into(), |v| v.to_string()),
            stats.exec_per_s.map_or("?".into(), |v| v.to_string()),
            stats.cov.map_or("?".into(), |v| v.to_string()),
            stats.features.map_or("?".into(), |v| v.to_string()),
            stats.corpus.as_deref().unwrap_or("?"),
        );
        eprintln!("xtask: {line}");
        report.push(line);
        if !ok {
            let what = stats
                .summary
                .as_deref()
                .unwrap_or("libFuzzer stopped with an error");
            crashed.push(match &stats.artifact {
                Some(a) => format!(
                    "{}: {what}\n  artifact: {a}\n  reproduce: cargo +{channel} fuzz run --fuzz-dir fuzz --target-dir {} -s {sanitizer}{} -a {} {a}",
                    t.name,
                    build_dir.display(),
                    if b.trace_compares { "" } else { " --no-trace-compares" },
                    t.name
                ),
                None => format!("{}: {what} (no artifact written)", t.name),
            });
        }
    }
    eprintln!(
        "xtask: fuzz summary ({seconds} s per target, sanitizer {sanitizer}, comparison tracing {}):",
        if b.trace_compares { "on" } else { "off" }
    );
    for l in &report {
        eprintln!("  {l}");
    }
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz: {} target(s) failed:\n{}",
            crashed.len(),
            crashed.join("\n")
        ))
    }
}

/// Runs one fuzzer, echoing libFuzzer's stderr except its per-input
/// progress lines, and collects its final stats. Kills it past `deadline`.
fn run_fuzzer(cmd: &mut Command, deadline: Duration) -> Result<(Stats, bool)> {
    eprintln!("xtask: $ {}", util::show(cmd));
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", util::show(cmd)))?;
    let stderr = child.stderr.take().ok_or("fuzzer stderr not captured")?;
    let reader = std::thread::spawn(move || {
        let mut stats = Stats::default();
        let mut in_dictionary = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // Per-input progress, new-function lists and the recommended
            // dictionary are noise in a CI log.
            if line.starts_with("###### Recommended dictionary") {
                in_dictionary = true;
            }
            let noise = in_dictionary
                || line.starts_with("\tNEW_FUNC")
                || (line.starts_with('#')
                    && (line.contains("\tNEW ")
                        || line.contains("\tREDUCE ")
                        || line.contains("\tpulse ")));
            if line.starts_with("###### End of recommended dictionary") {
                in_dictionary = false;
            }
            if !noise {
                eprintln!("{line}");
            }
            stats.take_line(&line);
        }
        stats
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} still running after {} s: killed",
                    util::show(cmd),
                    deadline.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("waiting for {}: {e}", util::show(cmd))),
        }
    };
    let stats = reader.join().map_err(|_| "fuzzer output reader panicked")?;
    Ok((stats, status.success()))
}
