//! A `preba serve` child process for the benches: started on free ports,
//! its URL read from its one "listening" line, stopped with SIGTERM.

use crate::util::Result;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `preba serve`, stopped with SIGTERM on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(preba: &Path, env: &[(String, String)], args: &[String]) -> Result<Server> {
    let mut child = Command::new(preba)
        .arg("serve")
        .args(args)
        .args(["--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("preba serve: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if !sent && let Some(u) = line.strip_prefix("preba serve: listening on ") {
                let _ = tx.send(u.trim().to_string());
                sent = true;
            } else if !line.starts_with("preba serve:") {
                eprintln!("  {line}");
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| format!("preba serve {args:?} did not start"))?;
    Ok(Server { child, url })
}
