//! `preba-logs` (run by `cargo xtask logs`): reads the card's defmt log ring through BAR2 and
//! decodes it with defmt-decoder against the firmware ELF whose build id the card runs.
//!
//! ```text
//! preba-logs --card SPEC [--elf ELF] [--search DIR]... [--follow]
//! preba-logs --stdin --build-id HEX [--elf ELF] [--search DIR]...
//! ```
//!
//! `--stdin` decodes ring bytes another process read (`preba card info` pipes the log it read
//! through its own connection, so defmt-decoder stays out of `preba`; ARCHITECTURE.md).
//!
//! The card is not enabled or reset: the tool reads FWVER (BAR0) and the ring (BAR2) only, so
//! it can watch a card another process drives. Lines: `[seconds since boot] LEVEL message`.
//! Overwritten bytes are reported as a count, never decoded as garbage.

use defmt_decoder::{DecodeError, Frame, StreamDecoder, Table};
use preba_host::backend::CardSpec;
use preba_host::firmware::{LogChunk, LogReader};
use preba_host::transport::{Regs, Transport};
use preba_host::vfio_user::{Emulated, VfioUser, connect_retry};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: preba-logs --card SPEC [--elf ELF] [--search DIR]... [--follow]
       preba-logs --stdin --build-id HEX [--elf ELF] [--search DIR]...
  --card SPEC   emulated, emulated:FLASH_FILE, vfio-user:SOCKET or vfio:BDF
  --stdin       decode log-ring bytes from stdin (from the start of a frame), for a card
                that runs build HEX (--build-id)
  --elf ELF     decode against this ELF (refused unless the card runs its build id)
  --search DIR  without --elf: look for the ELF the card runs under DIR (repeatable)
  --follow      keep printing new lines (Ctrl-C ends)";

/// How often --follow looks at LOG_HEAD.
const POLL: Duration = Duration::from_millis(50);
/// The arena a log reader maps (it does no DMA).
const ARENA: usize = 1 << 20;

/// Where the log bytes come from.
enum Source {
    Card(CardSpec),
    /// Bytes on stdin, from a card running this build id.
    Stdin(u64),
}

struct Args {
    source: Source,
    elf: Option<PathBuf>,
    search: Vec<PathBuf>,
    follow: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut spec, mut elf, mut search, mut follow) = (None, None, Vec::new(), false);
    let (mut stdin, mut build_id) = (false, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--card" => spec = Some(val()?.parse::<CardSpec>()?),
            "--elf" => elf = Some(PathBuf::from(val()?)),
            "--search" => search.push(PathBuf::from(val()?)),
            "--follow" => follow = true,
            "--stdin" => stdin = true,
            "--build-id" => {
                let v = val()?;
                build_id = Some(
                    u64::from_str_radix(v.trim_start_matches("0x"), 16)
                        .map_err(|_| format!("--build-id {v}: not a hex build id"))?,
                );
            }
            o => return Err(format!("unknown argument {o}")),
        }
    }
    if stdin {
        if spec.is_some() || follow {
            return Err("--stdin takes neither --card nor --follow".into());
        }
        let id = build_id.ok_or("--stdin needs --build-id HEX")?;
        return Ok(Args {
            source: Source::Stdin(id),
            elf,
            search,
            follow,
        });
    }
    let spec = spec.ok_or("--card SPEC is required")?;
    if spec == CardSpec::Cpu {
        return Err("cpu is not a card".into());
    }
    Ok(Args {
        source: Source::Card(spec),
        elf,
        search,
        follow,
    })
}

/// Reaches the card's registers without enabling or resetting it.
fn open(spec: &CardSpec) -> Result<(Arc<dyn Transport>, Option<Emulated>), String> {
    let name = spec.to_string();
    match spec {
        CardSpec::Emulated | CardSpec::EmulatedFlash(_) => {
            let flash = match spec {
                CardSpec::EmulatedFlash(p) => Some(p.as_path()),
                _ => None,
            };
            let em = Emulated::start_with(flash)?;
            let t = connect_retry(em.socket(), name, ARENA, Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            Ok((Arc::new(t), Some(em)))
        }
        CardSpec::VfioUser(p) => Ok((
            Arc::new(VfioUser::connect(p, name, ARENA).map_err(|e| e.to_string())?),
            None,
        )),
        CardSpec::Vfio(bdf) => Ok((
            Arc::new(
                preba_host::vfio::Vfio::open_with(bdf, name, ARENA, false)
                    .map_err(|e| e.to_string())?,
            ),
            None,
        )),
        CardSpec::Cpu => Err("cpu is not a card".into()),
    }
}

/// The build id the running firmware published in FWVER (waits for a booting card).
fn card_build_id(t: &dyn Transport, patience: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + patience;
    loop {
        let id = t
            .read64(preba_protocol::regs::FWVER)
            .map_err(|e| format!("FWVER: {e}"))?;
        if id != 0 {
            return Ok(id);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the card published no build id (FWVER 0) within {patience:?}: is its firmware up?"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn elf_build_id(path: &Path) -> Result<(Vec<u8>, Option<u64>), String> {
    let elf = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let id = preba_protocol::fwimage::build_id(&elf);
    Ok((elf, id))
}

fn find_elfs(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && depth > 0 {
            find_elfs(&p, out, depth - 1);
        } else if p.file_name().is_some_and(|n| n == "preba-firmware") && p.is_file() {
            out.push(p);
        }
    }
}

/// The ELF to decode with: `--elf` when its build id is the card's, else the first ELF under
/// the search dirs whose build id is.
fn pick_elf(card_id: u64, elf: Option<&Path>, search: &[PathBuf]) -> Result<Vec<u8>, String> {
    if let Some(p) = elf {
        let (bytes, id) = elf_build_id(p)?;
        return match id {
            Some(id) if id == card_id => Ok(bytes),
            Some(id) => Err(format!(
                "{} is build {id:016x} but the card runs build {card_id:016x}: its log would \
                 decode to nonsense (pass the ELF of the running build)",
                p.display()
            )),
            None => Err(format!(
                "{} has no preba build id: not a preba firmware ELF",
                p.display()
            )),
        };
    }
    let mut cands = Vec::new();
    for d in search {
        find_elfs(d, &mut cands, 6);
    }
    for p in &cands {
        if let Ok((bytes, Some(id))) = elf_build_id(p)
            && id == card_id
        {
            eprintln!("preba-logs: decoding with {}", p.display());
            return Ok(bytes);
        }
    }
    Err(format!(
        "no firmware ELF of build {card_id:016x} under {} ({} ELFs looked at): pass --elf",
        search
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cands.len()
    ))
}

/// One decoded line: `[seconds] LEVEL message`.
fn line(f: &Frame) -> String {
    let ts = f
        .display_timestamp()
        .map_or_else(|| "-".to_string(), |t| t.to_string());
    let level = f
        .level()
        .map_or("PRINT".to_string(), |l| l.as_str().to_uppercase());
    format!("[{ts}] {level:<5} {}", f.display_message())
}

/// Decodes a chunk into lines, reporting lost bytes and restarts as lines of their own.
/// After a loss the decoder starts afresh (the chunk begins at a frame boundary then).
fn render<'t>(
    table: &'t Table,
    decoder: &mut Box<dyn StreamDecoder + Send + Sync + 't>,
    chunk: &LogChunk,
) -> Vec<String> {
    let mut out = Vec::new();
    if chunk.restarted {
        out.push("(the card was reset: its log starts again)".to_string());
        *decoder = table.new_stream_decoder();
    }
    if chunk.lost > 0 {
        out.push(format!(
            "({} bytes of log lost: overwritten before they were read)",
            chunk.lost
        ));
        *decoder = table.new_stream_decoder();
    }
    decoder.received(&chunk.bytes);
    loop {
        match decoder.decode() {
            Ok(f) => out.push(line(&f)),
            Err(DecodeError::UnexpectedEof) => break,
            Err(DecodeError::Malformed) => {
                out.push("(malformed frame skipped)".to_string());
                *decoder = table.new_stream_decoder();
                break;
            }
        }
    }
    out
}

/// `--stdin`: the bytes another reader took from the ring, decoded once.
fn run_stdin(id: u64, a: &Args) -> Result<(), String> {
    use std::io::Read;
    let elf = pick_elf(id, a.elf.as_deref(), &a.search)?;
    let table = Table::parse(&elf)
        .map_err(|e| format!("defmt table: {e}"))?
        .ok_or("the ELF carries no defmt data")?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("stdin: {e}"))?;
    let mut decoder = table.new_stream_decoder();
    let chunk = LogChunk {
        bytes,
        lost: 0,
        restarted: false,
    };
    let mut o = std::io::stdout().lock();
    for l in render(&table, &mut decoder, &chunk) {
        writeln!(o, "{l}").map_err(|e| format!("stdout: {e}"))?;
    }
    o.flush().map_err(|e| format!("stdout: {e}"))
}

fn run(a: Args) -> Result<(), String> {
    let spec = match &a.source {
        Source::Stdin(id) => return run_stdin(*id, &a),
        Source::Card(spec) => spec,
    };
    let (t, _em) = open(spec)?;
    let id = card_build_id(&*t, Duration::from_secs(10))?;
    let elf = pick_elf(id, a.elf.as_deref(), &a.search)?;
    let table = Table::parse(&elf)
        .map_err(|e| format!("defmt table: {e}"))?
        .ok_or("the ELF carries no defmt data")?;
    let mut decoder = table.new_stream_decoder();
    let mut reader = LogReader::new();
    let stdout = std::io::stdout();
    loop {
        let chunk = reader.read(&*t)?;
        let mut o = stdout.lock();
        for l in render(&table, &mut decoder, &chunk) {
            writeln!(o, "{l}").map_err(|e| format!("stdout: {e}"))?;
        }
        o.flush().map_err(|e| format!("stdout: {e}"))?;
        if !a.follow {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("preba-logs: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("preba-logs: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preba_card::CardConfig;
    use preba_protocol::regs;

    // `InProcess`: the card model behind the host's Transport (the one in preba_card::harness).
    preba_card::harness::in_process_transport!();

    fn card() -> (Arc<InProcess>, Vec<u8>) {
        let path = preba_card::harness::firmware_elf().expect("firmware ELF");
        let elf = std::fs::read(&path).expect("read ELF");
        let cfg = CardConfig {
            image_cus: 1,
            audio_cus: 1,
            norm_cus: 1,
            workers: 1,
            ..CardConfig::default()
        };
        (InProcess::new(cfg, &elf, ARENA).unwrap(), elf)
    }

    /// Reads and renders until a line satisfies `want` or `within` passes.
    fn until<'t>(
        t: &InProcess,
        table: &'t Table,
        decoder: &mut Box<dyn StreamDecoder + Send + Sync + 't>,
        reader: &mut LogReader,
        within: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Result<(String, Vec<String>), Vec<String>> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let chunk = reader.read(t).unwrap();
            for l in render(table, decoder, &chunk) {
                if want(&l) {
                    return Ok((l, seen));
                }
                seen.push(l);
            }
            if Instant::now() >= deadline {
                return Err(seen);
            }
            std::thread::sleep(POLL);
        }
    }

    #[test]
    fn boot_banner_follow_and_elf_checks() {
        let (t, elf) = card();
        let id = card_build_id(&*t, Duration::from_secs(20)).expect("build id");
        // The ELF is picked by build id; another build's ELF is refused.
        let dir = std::env::temp_dir().join(format!("preba-logs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("x")).unwrap();
        std::fs::write(dir.join("x").join("preba-firmware"), &elf).unwrap();
        assert_eq!(pick_elf(id, None, std::slice::from_ref(&dir)).unwrap(), elf);
        let e = pick_elf(id ^ 1, Some(&dir.join("x").join("preba-firmware")), &[]).unwrap_err();
        assert!(e.contains("but the card runs build"), "{e}");
        let e = pick_elf(id ^ 1, None, std::slice::from_ref(&dir)).unwrap_err();
        assert!(e.contains("no firmware ELF of build"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);

        let table = Table::parse(&elf).unwrap().unwrap();
        let mut decoder = table.new_stream_decoder();
        let mut reader = LogReader::new();
        let banner = format!("build {id:x} up");
        let (l, _) = until(
            &t,
            &table,
            &mut decoder,
            &mut reader,
            Duration::from_secs(20),
            |l| l.contains(&banner),
        )
        .unwrap_or_else(|seen| panic!("no boot banner with {banner:?} in {seen:?}"));
        assert!(
            l.starts_with('[') && l.contains("] INFO "),
            "timestamp and level: {l}"
        );

        // --follow: a new line shows within a second. CC.EN with no admin queue configured
        // makes the firmware log an error.
        t.card.write32(regs::CC, regs::CC_EN);
        let start = Instant::now();
        let (l, seen) = until(
            &t,
            &table,
            &mut decoder,
            &mut reader,
            Duration::from_secs(1),
            |l| l.contains("BAD_ADMIN_CONFIG"),
        )
        .unwrap_or_else(|seen| panic!("no new line within 1 s: {seen:?}"));
        assert!(l.contains("] ERROR"), "{l}");
        assert!(seen.iter().all(|l| !l.contains("lost")), "{seen:?}");
        eprintln!("followed line after {:?}: {l}", start.elapsed());
    }

    #[test]
    fn lost_bytes_are_a_count_not_garbage() {
        let (t, elf) = card();
        card_build_id(&*t, Duration::from_secs(20)).expect("boots");
        let table = Table::parse(&elf).unwrap().unwrap();
        // Whole frames from the ring, then the same bytes as if the reader had lost 1000
        // bytes and resynchronised after a frame boundary.
        let mut reader = LogReader::new();
        let mut bytes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while bytes.iter().filter(|&&b| b == 0).count() < 2 && Instant::now() < deadline {
            bytes.extend(reader.read(&*t).unwrap().bytes);
            std::thread::sleep(POLL);
        }
        let first = bytes.iter().position(|&b| b == 0).expect("a frame") + 1;
        let mut decoder = table.new_stream_decoder();
        // Half a frame first: what a decoder fed across a loss would choke on.
        decoder.received(&bytes[1..first]);
        let chunk = LogChunk {
            bytes: bytes[first..].to_vec(),
            lost: 1000,
            restarted: false,
        };
        let lines = render(&table, &mut decoder, &chunk);
        assert_eq!(
            lines[0],
            "(1000 bytes of log lost: overwritten before they were read)"
        );
        assert!(lines.len() >= 2, "{lines:?}");
        assert!(
            lines[1..].iter().all(|l| l.starts_with('[')),
            "decoded frames after the loss: {lines:?}"
        );
    }
}
