//! `cargo xtask flash --card SPEC [--rollback] [ELF]`: firmware update over PCIe. The work is
//! `preba card flash` (host-driver/src/firmware.rs: chunks with progress, commit, CRC read
//! back, activate, function reset, IDENTIFY check, old image kept on failure); this builds
//! what it needs (the firmware ELF when none is given, preba and preba-card in release) and
//! runs it.

use crate::util::Result;
use crate::{flash, setup};
use std::process::Command;

const USAGE: &str = "usage: cargo xtask flash --card SPEC [--rollback] [ELF]
  SPEC: emulated:FLASH_FILE (preba-card with its SPI flash in FLASH_FILE), vfio-user:SOCKET,
        vfio:BDF
  ELF:  the firmware to flash (default: the cargo xtask build-fw output)";

pub fn run_flash(args: &[&str]) -> Result<()> {
    let mut spec = None;
    let mut rollback = false;
    let mut elf = None;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--card" => spec = Some(*it.next().ok_or(format!("--card needs SPEC\n{USAGE}"))?),
            "--rollback" => rollback = true,
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s if elf.is_none() => elf = Some(s),
            s => return Err(format!("one ELF only (got {s} too)\n{USAGE}")),
        }
    }
    let spec = spec.ok_or(format!("--card SPEC is required\n{USAGE}"))?;
    if rollback && elf.is_some() {
        return Err(format!("--rollback takes no ELF\n{USAGE}"));
    }
    // The workspace's firmware is also the emulated card's factory image.
    let fw = setup::build_fw()?;
    // `preba` finds `preba-card` next to itself (emulated:FLASH_FILE starts it).
    let (preba, _card) = flash::card_binaries(true)?;
    let mut cmd = Command::new(preba);
    cmd.args(["card", "flash", "--card", spec])
        .env("PREBA_FIRMWARE", &fw);
    if rollback {
        cmd.arg("--rollback");
    } else {
        cmd.arg(elf.map_or_else(|| fw.clone(), std::path::PathBuf::from));
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start preba: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "flash over PCIe failed ({status}); see the line above"
        ))
    }
}
