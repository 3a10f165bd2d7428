//! The delivery log: one JSON line per recipient outcome.
//!
//! Lines are appended to an in-memory buffer on the shard (no syscall per
//! line) and written by a flusher task through glommio's blocking pool, so
//! a slow disk never stalls delivery. The file is reopened when SIGHUP bumps
//! the reopen generation (logrotate's `copytruncate`-free rotation) and
//! rotated by the shard itself when it passes `max_bytes`.

use serde::Serialize;
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One line of the delivery log.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// Unix time with milliseconds.
    pub time: f64,
    /// `delivered`, `deferred`, `bounced` or `expired`.
    pub event: &'a str,
    /// The queue whose limits applied (`general` or a configured name).
    pub queue: &'a str,
    /// The destination domain (or `fallback:<queue>`).
    pub destination: &'a str,
    /// The sender pool the mail left from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<&'a str>,
    /// The message's queue id.
    pub message_id: &'a str,
    /// The envelope sender.
    pub sender: &'a str,
    /// The recipient.
    pub recipient: &'a str,
    /// The MX host name, if a connection was made.
    pub mx: Option<&'a str>,
    /// The remote IP, if a connection was made.
    pub ip: Option<String>,
    /// Our address on that connection.
    pub source_ip: Option<String>,
    /// TLS version, if used.
    pub tls: Option<&'a str>,
    /// TLS cipher, if used.
    pub cipher: Option<&'a str>,
    /// The reply code.
    pub code: u16,
    /// The enhanced status code (`5.1.1`).
    pub status: String,
    /// The reply text, or our reason.
    pub text: &'a str,
    /// Attempt number (1 for the first).
    pub attempt: u32,
    /// Seconds since the message was accepted.
    pub latency: f64,
}

/// The shard's log writer.
pub struct DeliveryLog {
    buf: RefCell<Vec<u8>>,
    path: Option<PathBuf>,
}

impl DeliveryLog {
    /// A log writing to `path` (`None`: keep nothing).
    pub fn new(path: Option<PathBuf>) -> Rc<Self> {
        Rc::new(DeliveryLog {
            buf: RefCell::new(Vec::with_capacity(64 * 1024)),
            path,
        })
    }

    /// Appends one entry to the buffer.
    pub fn record(&self, e: &Entry<'_>) {
        if self.path.is_none() {
            return;
        }
        let mut b = self.buf.borrow_mut();
        if serde_json::to_writer(&mut *b, e).is_ok() {
            b.push(b'\n');
        }
    }

    /// Writes buffered lines every `period` until the process ends.
    pub async fn flusher(self: Rc<Self>, period: Duration, max_bytes: u64, reopen: Arc<AtomicU64>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut file: Option<File> = None;
        let mut generation = reopen.load(Ordering::Relaxed);
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            glommio::timer::sleep(period).await;
            if self.buf.borrow().is_empty() {
                continue;
            }
            std::mem::swap(&mut *self.buf.borrow_mut(), &mut spare);
            let g = reopen.load(Ordering::Relaxed);
            let reopen_now = g != generation;
            generation = g;
            let p = path.clone();
            let f = file.take();
            let (f, buf) = glommio::executor()
                .spawn_blocking(move || {
                    let f = write_rotating(f, &p, &spare, max_bytes, reopen_now);
                    spare.clear();
                    (f, spare)
                })
                .await;
            file = f;
            spare = buf;
        }
    }

    /// Writes what is buffered now, synchronously (at shutdown).
    pub fn flush_now(&self) {
        let Some(path) = &self.path else { return };
        let buf = std::mem::take(&mut *self.buf.borrow_mut());
        if !buf.is_empty() {
            let _ = write_rotating(None, path, &buf, u64::MAX, false);
        }
    }
}

fn open(path: &PathBuf) -> Option<File> {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the delivery log");
            None
        }
    }
}

fn write_rotating(
    file: Option<File>,
    path: &PathBuf,
    data: &[u8],
    max: u64,
    reopen: bool,
) -> Option<File> {
    let mut f = if reopen { None } else { file };
    if f.is_none() {
        f = open(path);
    }
    let mut f = f?;
    if f.metadata().map(|m| m.len()).unwrap_or(0) >= max {
        let mut old = path.clone().into_os_string();
        old.push(".1");
        let _ = std::fs::rename(path, &old);
        f = open(path)?;
    }
    if let Err(e) = f.write_all(data) {
        tracing::error!(path = %path.display(), error = %e, "delivery log write failed");
    }
    Some(f)
}
