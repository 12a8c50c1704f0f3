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
    start_on(preba, env, args, None)
}

/// `start`, with the server (and the workers it spawns) pinned to `cpus`
/// (a taskset list) when given.
pub fn start_on(
    preba: &Path,
    env: &[(String, String)],
    args: &[String],
    cpus: Option<&str>,
) -> Result<Server> {
    let mut cmd = match cpus {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", c]).arg(preba);
            t
        }
        None => Command::new(preba),
    };
    let mut child = cmd
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

/// utime + stime of one process (not its children), seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0;
    let u: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (u + st) / tick
}

/// CPU seconds of a process and its live children (a server and its workers).
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let mut total = cpu_seconds(pid);
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.filter_map(|e| e.ok()) {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids
                .split_whitespace()
                .filter_map(|k| k.parse::<u32>().ok())
            {
                total += cpu_seconds(k);
            }
        }
    }
    total
}

/// One rate of a `preba bench --csv` file.
pub struct Rate {
    pub offered: f64,
    pub achieved: f64,
    pub p50: f64,
    pub p95: f64,
    pub ok: u64,
    pub errors: u64,
}

pub fn read_csv(p: &Path) -> Result<Vec<Rate>> {
    let t = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut lines = t.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |n: &str| {
        head.iter()
            .position(|h| *h == n)
            .ok_or(format!("{} lacks {n}", p.display()))
    };
    let (o, a, p50, p95, ok, e) = (
        col("offered_rps")?,
        col("achieved_rps")?,
        col("p50_ms")?,
        col("p95_ms")?,
        col("ok")?,
        col("errors")?,
    );
    Ok(lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let g = |i: usize| {
                f.get(i)
                    .and_then(|x| x.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            Rate {
                offered: g(o),
                achieved: g(a),
                p50: g(p50),
                p95: g(p95),
                ok: g(ok) as u64,
                errors: g(e) as u64,
            }
        })
        .collect())
}
