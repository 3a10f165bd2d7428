//! A child process whose output is watched line by line: readiness is a
//! line (or an open port), the summary is a line printed at exit, and the
//! last lines explain a failed start. Reader threads copy everything to a
//! log file, so nothing is lost when the SUT is noisy.
//!
//! Signals go through `kill(1)` rather than libc so the bench crate needs
//! no new dependency; SIGKILL uses [`Child::kill`].

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::regex::Regex;
use crate::error::{Error, Result};

/// Output lines kept for error messages.
const TAIL_LINES: usize = 20;
/// How often exits and ports are checked while waiting.
const POLL: Duration = Duration::from_millis(50);

/// What "ready" means for a process.
#[derive(Debug, Clone)]
pub(crate) enum Ready {
    /// A stdout or stderr line matching this.
    Line(Regex),
    /// A TCP connect to this address succeeds.
    Port(SocketAddr),
}

#[derive(Debug, Default)]
struct Output {
    tail: VecDeque<String>,
    summary: Option<String>,
}

/// A running child.
pub(crate) struct Proc {
    child: Child,
    lines: UnboundedReceiver<String>,
    output: Arc<Mutex<Output>>,
    readers: Vec<JoinHandle<()>>,
}

fn lock(m: &Mutex<Output>) -> std::sync::MutexGuard<'_, Output> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proc {
    /// Starts `argv`, appending its output to `log`. Lines starting with
    /// `summary_prefix` are remembered as the exit summary.
    pub(crate) fn spawn(
        argv: &[String],
        log: &Path,
        summary_prefix: Option<&'static str>,
    ) -> Result<Proc> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::Sut("empty command line".into()))?;
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let log_file = Arc::new(Mutex::new(log_file));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Sut(format!("cannot start {program}: {e}")))?;
        let (tx, lines) = unbounded_channel();
        let output = Arc::new(Mutex::new(Output::default()));
        let mut readers = Vec::new();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let (tx, output, log) = (tx.clone(), output.clone(), log_file.clone());
            readers.push(std::thread::spawn(move || {
                read_lines(pipe, &tx, &output, &log, summary_prefix)
            }));
        }
        Ok(Proc {
            child,
            lines,
            output,
            readers,
        })
    }

    /// Waits until ready; returns the ready line, if readiness is a line.
    pub(crate) async fn wait_ready(
        &mut self,
        ready: &Ready,
        timeout: Duration,
    ) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ready::Port(addr) = ready {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    self.stop_listening();
                    return Ok(None);
                }
            }
            let wait = tokio::time::sleep(POLL);
            tokio::select! {
                line = self.lines.recv() => match (line, ready) {
                    (Some(line), Ready::Line(re)) if re.is_match(&line) => {
                        self.stop_listening();
                        return Ok(Some(line));
                    }
                    (Some(_), _) => {}
                    // Output closed: only an exit or the deadline can end the wait now.
                    (None, _) => tokio::time::sleep(POLL).await,
                },
                _ = wait => {}
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Sut(format!(
                    "exited ({status}) before it was ready; last output:\n{}",
                    self.tail()
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Sut(format!(
                    "not ready after {:.0} s; last output:\n{}",
                    timeout.as_secs_f64(),
                    self.tail()
                )));
            }
        }
    }

    /// Once ready, lines are only logged: nobody reads the channel any
    /// more, so it must not grow with a chatty SUT.
    fn stop_listening(&mut self) {
        self.lines.close();
        while self.lines.try_recv().is_ok() {}
    }

    /// The last lines of output, for error messages.
    pub(crate) fn tail(&self) -> String {
        let out = lock(&self.output);
        out.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill(&mut self) -> Result<()> {
        self.child
            .kill()
            .map_err(|e| Error::Sut(format!("SIGKILL failed: {e}")))?;
        let _ = self.child.wait();
        Ok(())
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; returns the summary
    /// line once all output has been read.
    pub(crate) async fn terminate(mut self, grace: Duration) -> Option<String> {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill")
                .args(["-TERM", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + grace;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.kill();
            }
        }
        let _ = self.child.wait();
        for r in std::mem::take(&mut self.readers) {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
        lock(&self.output).summary.clone()
    }
}

impl Drop for Proc {
    /// A run that fails half-way must not leave its SUT behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_lines(
    pipe: Box<dyn Read + Send>,
    tx: &UnboundedSender<String>,
    output: &Mutex<Output>,
    log: &Mutex<File>,
    summary_prefix: Option<&str>,
) {
    for line in BufReader::new(pipe).split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches('\r')
            .to_string();
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{text}");
        }
        {
            let mut out = lock(output);
            if summary_prefix.is_some_and(|p| text.starts_with(p)) {
                out.summary = Some(text.clone());
            }
            if out.tail.len() == TAIL_LINES {
                out.tail.pop_front();
            }
            out.tail.push_back(text.clone());
        }
        let _ = tx.send(text);
    }
}

/// Waits until `addr` accepts TCP connections.
pub(crate) async fn wait_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() >= deadline {
            return Err(Error::Sut(format!(
                "{addr} not accepting connections after {:.0} s",
                timeout.as_secs_f64()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}
