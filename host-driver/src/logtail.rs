//! The last lines of the card's defmt log for `preba card info`. The bytes are read here
//! (through the card connection `card info` already holds); decoding them needs the defmt
//! table of the running build and defmt-decoder, which stays out of this workspace
//! (ARCHITECTURE.md, "Log decoding outside the workspace"), so `preba-logs --stdin` decodes
//! them in its own process. Without `preba-logs` the caller says how to get the lines instead.

use crate::firmware::LogReader;
use crate::transport::{Regs, Transport};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the decoder may take (it parses the ELF's defmt table once).
const DECODE_TIMEOUT: Duration = Duration::from_secs(20);

/// `preba-logs`: `$PREBA_LOGS_BIN`, or next to this executable.
fn decoder() -> Option<PathBuf> {
    std::env::var_os("PREBA_LOGS_BIN")
        .map(PathBuf::from)
        .or_else(|| Some(std::env::current_exe().ok()?.with_file_name("preba-logs")))
        .filter(|p| p.is_file())
}

/// The last `n` decoded lines of the log since the card's reset (or since the oldest byte the
/// ring still holds). The error says why there are none.
pub fn last_lines(t: &dyn Transport, n: usize) -> Result<Vec<String>, String> {
    let bin = decoder().ok_or_else(|| {
        "preba-logs not found next to preba (or $PREBA_LOGS_BIN); `cargo xtask logs` builds it"
            .to_string()
    })?;
    let id = t
        .read64(preba_protocol::regs::FWVER)
        .map_err(|e| format!("FWVER: {e}"))?;
    let chunk = LogReader::new().read(t)?;
    let mut cmd = Command::new(&bin);
    cmd.args(["--stdin", "--build-id", &format!("{id:016x}")]);
    // The ELF of the running build: the one this process was pointed at, else the firmware
    // builds under the target directory `preba` was built in.
    if let Some(fw) = std::env::var_os("PREBA_FIRMWARE") {
        let fw = PathBuf::from(fw);
        if fw.is_file() {
            cmd.arg("--search").arg(fw.parent().unwrap_or(&fw));
        }
    }
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.to_path_buf()))
    {
        cmd.arg("--search").arg(target);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A decoder that exits early (no ELF) closes the pipe: its stderr says why.
        let _ = stdin.write_all(&chunk.bytes);
    }
    // Drained on their own threads, so a long output cannot fill the pipe while we wait.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + DECODE_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("preba-logs: {e}"))? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "preba-logs gave no answer within {DECODE_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let why = err.lines().last().unwrap_or("").trim();
        return Err(format!("preba-logs failed ({status}): {why}"));
    }
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    let skip = lines.len().saturating_sub(n);
    Ok(lines.into_iter().skip(skip).collect())
}
