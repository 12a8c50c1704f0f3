//! Shared by the host-driver integration tests (each test binary uses a part).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// The committed fixtures under `fixtures/<kind>` with one of the
/// extensions `exts`, sorted.
pub fn fixtures(kind: &str, exts: &[&str]) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| exts.iter().any(|x| e == *x)))
        .collect();
    v.sort();
    v
}

/// Exit code (-1 for a signal) and stderr of a finished `preba` run.
pub fn code_and_stderr(o: &Output) -> (i32, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
