//! A one-line progress bar on stderr, only when stderr is a terminal.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    total: usize,
    state: Option<Mutex<(usize, Instant)>>,
    start: Instant,
}

impl Progress {
    /// A bar for `total` items; silent unless stderr is a terminal and the
    /// run is long enough to need one.
    pub fn new(total: usize) -> Self {
        let on = std::io::stderr().is_terminal() && total > 1;
        let now = Instant::now();
        Progress {
            total,
            state: on.then(|| Mutex::new((0, now))),
            start: now,
        }
    }

    pub fn tick(&self) {
        let Some(m) = &self.state else { return };
        let Ok(mut g) = m.lock() else { return };
        g.0 += 1;
        let done = g.0;
        // Redraw at most 10 times a second, and at the end.
        if done != self.total && g.1.elapsed() < Duration::from_millis(100) {
            return;
        }
        g.1 = Instant::now();
        let width = 30;
        let filled = done * width / self.total.max(1);
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r[{}{}] {done}/{} {rate:.1}/s",
            "=".repeat(filled),
            " ".repeat(width - filled),
            self.total
        );
        if done == self.total {
            let _ = writeln!(e);
        }
    }
}
