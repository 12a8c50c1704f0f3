//! The server's handle on one worker process.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wire::{BatchReply, BatchRequest, Reply, Request, WorkerSpec, read_msg, write_msg};
use crate::{ModelMeta, SliceError, SliceSpec};

/// One worker process. Replies are read by a thread and handed over a
/// channel, so every wait has a deadline. Dropping it stops and reaps the
/// process.
pub struct WorkerClient {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<Result<Reply, String>>,
    last_stderr: Arc<Mutex<Option<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    reaped: Option<ExitStatus>,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerClient")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("reaped", &self.reaped)
            .finish()
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(9)) => "killed by signal 9 (SIGKILL)".into(),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{status}"),
    }
}

impl WorkerClient {
    /// Spawns `exe worker <spec.to_args()>` and waits up to `ready_timeout`
    /// for its hello (the model's metadata). Its stderr is forwarded to ours
    /// line by line, prefixed with "[<name>] ". A cuda slice gets
    /// CUDA_VISIBLE_DEVICES=<device>, so its slice is device 0.
    pub fn spawn(
        exe: &Path,
        spec: &WorkerSpec,
        ready_timeout: Duration,
    ) -> Result<(WorkerClient, ModelMeta), SliceError> {
        let name = spec.name.clone();
        let mut cmd = Command::new(exe);
        cmd.arg("worker")
            .args(spec.to_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let SliceSpec::Cuda { device } = &spec.slice {
            cmd.env("CUDA_VISIBLE_DEVICES", device);
        }
        let mut child = cmd.spawn().map_err(|e| SliceError::Spawn {
            slice: name.clone(),
            reason: format!("{}: {e}", exe.display()),
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SliceError::Spawn {
                slice: name,
                reason: "pipes missing".into(),
            });
        };

        let last_stderr = Arc::new(Mutex::new(None));
        let stderr_thread = {
            let last = Arc::clone(&last_stderr);
            let prefix = name.clone();
            std::thread::Builder::new()
                .name(format!("{name} stderr"))
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        eprintln!("[{prefix}] {line}");
                        if !line.trim().is_empty() {
                            *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
                        }
                    }
                })
                .ok()
        };
        let (tx, replies) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name(format!("{name} replies"))
            .spawn(move || {
                let mut stdout = BufReader::new(stdout);
                loop {
                    let msg = match read_msg::<Reply>(&mut stdout) {
                        Ok(Some(r)) => Ok(r),
                        Ok(None) => Err("closed its stdout".to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    let end = msg.is_err();
                    if tx.send(msg).is_err() || end {
                        break;
                    }
                }
            });
        let mut client = WorkerClient {
            name: name.clone(),
            child,
            stdin: Some(stdin),
            replies,
            last_stderr,
            stderr_thread,
            reaped: None,
        };
        if let Err(e) = reader {
            client.kill();
            return Err(SliceError::Spawn {
                slice: name,
                reason: format!("reader thread: {e}"),
            });
        }
        let fail = |client: &mut WorkerClient, why: String| {
            let reason = client.death_reason(&why);
            SliceError::Spawn {
                slice: client.name.clone(),
                reason,
            }
        };
        match client.replies.recv_timeout(ready_timeout) {
            Ok(Ok(Reply::Hello { meta, .. })) => Ok((client, meta)),
            Ok(Ok(other)) => {
                client.kill();
                Err(fail(
                    &mut client,
                    format!("first message was not a hello: {other:?}"),
                ))
            }
            Ok(Err(why)) => Err(fail(&mut client, why)),
            Err(RecvTimeoutError::Disconnected) => {
                Err(fail(&mut client, "closed its stdout".into()))
            }
            Err(RecvTimeoutError::Timeout) => {
                client.kill();
                Err(fail(
                    &mut client,
                    format!("no hello within {ready_timeout:?}"),
                ))
            }
        }
    }

    /// Runs one batch, blocking up to `timeout`. A per-batch failure is
    /// `SliceError::Batch` and the worker stays up; a dead worker is
    /// `SliceError::Died` (reaped); a timeout kills it.
    pub fn run(&mut self, req: &BatchRequest, timeout: Duration) -> Result<BatchReply, SliceError> {
        if let Some(status) = self.reaped {
            return Err(SliceError::Died {
                slice: self.name.clone(),
                reason: format!("already gone ({})", describe(status)),
            });
        }
        let sent = match self.stdin.as_mut() {
            Some(w) => write_msg(w, &Request::Batch(req.clone())),
            None => Err(SliceError::Wire("stdin already closed".into())),
        };
        if let Err(e) = sent {
            return Err(self.died(&format!("could not send batch {}: {e}", req.id)));
        }
        match self.replies.recv_timeout(timeout) {
            Ok(Ok(Reply::Batch(r))) if r.id == req.id => Ok(r),
            Ok(Ok(Reply::Error { id, message })) if id == req.id => Err(SliceError::Batch {
                slice: self.name.clone(),
                id,
                message,
            }),
            Ok(Ok(other)) => {
                // Out of step: nothing it says can be trusted any more.
                self.kill();
                Err(self.died(&format!(
                    "protocol violation waiting for batch {}: {other:?}",
                    req.id
                )))
            }
            Ok(Err(why)) => Err(self.died(&why)),
            Err(RecvTimeoutError::Disconnected) => Err(self.died("closed its stdout")),
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Err(SliceError::Timeout {
                    slice: self.name.clone(),
                    after: timeout,
                })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Slice name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the worker: closes stdin (it exits 0 at EOF), waits briefly,
    /// then SIGKILL; always reaps.
    pub fn kill(&mut self) {
        self.stop(Duration::from_millis(200));
    }

    fn stop(&mut self, grace: Duration) {
        if self.reaped.is_some() {
            return;
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.reaped = Some(s);
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break,
            }
        }
        let _ = self.child.kill();
        self.reaped = self.child.wait().ok();
    }

    /// The worker is gone or unusable: reap it and build the Died error.
    fn died(&mut self, why: &str) -> SliceError {
        let reason = self.death_reason(why);
        SliceError::Died {
            slice: self.name.clone(),
            reason,
        }
    }

    /// Reaps (a process that closed its pipe is exiting: short grace, then
    /// SIGKILL) and describes: how it ended, its last stderr line.
    fn death_reason(&mut self, why: &str) -> String {
        self.stop(Duration::from_secs(2));
        // The stderr thread ends when the pipe closes; give it a moment to
        // record the last line the worker wrote before exiting.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self
            .stderr_thread
            .as_ref()
            .is_some_and(|t| !t.is_finished())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(t) = self.stderr_thread.take_if(|t| t.is_finished()) {
            let _ = t.join();
        }
        let mut s = why.to_string();
        if let Some(st) = self.reaped {
            s = format!("{s}; {}", describe(st));
        }
        if let Some(line) = self
            .last_stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            s = format!("{s}; last stderr: {line}");
        }
        s
    }
}

impl Drop for WorkerClient {
    fn drop(&mut self) {
        self.stop(Duration::from_millis(500));
    }
}
