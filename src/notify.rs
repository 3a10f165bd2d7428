//! The systemd notification protocol (`sd_notify(3)`), spoken directly.
//!
//! The protocol is one datagram of `KEY=VALUE` lines sent to the unix socket
//! named by `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with
//! `@`). That is a dozen lines over std's [`UnixDatagram`], so Sluice does not
//! take a crate or libsystemd for it (docs/decisions.md). Outside systemd the
//! variable is unset and every call here does nothing.
//!
//! The watchdog half lives here too: [`Liveness`] holds one heartbeat counter
//! per executor, each executor bumps its own from a timer task, and the
//! [`spawn_watchdog`] thread pings systemd only while every counter keeps
//! moving. A core that panicked, exited or is stuck in a task that never
//! yields stops its counter, the pings stop, and systemd restarts the service.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where notifications go: the socket named by `$NOTIFY_SOCKET`.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    // A failing socket is worth one log line, not one per watchdog ping.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`; disabled when it is unset or unusable.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|name| {
            let name = name.into_encoded_bytes();
            match Self::open(&name) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(socket = %String::from_utf8_lossy(&name), error = %e,
                        "NOTIFY_SOCKET is set but unusable; systemd will not hear from us");
                    None
                }
            }
        });
        Notifier {
            target,
            warned: AtomicBool::new(false),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            warned: AtomicBool::new(false),
        }
    }

    fn open(name: &[u8]) -> io::Result<(UnixDatagram, SocketAddr)> {
        let addr = match name {
            [] => return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty name")),
            [b'@', abstract_name @ ..] => SocketAddr::from_abstract_name(abstract_name)?,
            [b'/', ..] => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name))?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract name (@...)",
                ))
            }
        };
        Ok((UnixDatagram::unbound()?, addr))
    }

    /// Whether systemd is listening (`$NOTIFY_SOCKET` was usable).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines) as one datagram.
    /// Failures are logged once and otherwise ignored: notification is a
    /// courtesy to the service manager, never a reason to stop mail.
    pub fn send(&self, state: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot notify systemd");
            }
        }
    }

    /// `READY=1`: startup (or a reload) finished; `status` is shown by
    /// `systemctl status`.
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={}\nMAINPID={}\n",
            one_line(status),
            std::process::id()
        ));
    }

    /// `RELOADING=1`: a reload started. `MONOTONIC_USEC` lets systemd match
    /// it to the `systemctl reload` that asked (required for
    /// `Type=notify-reload`, harmless before).
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading\n",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`: shutdown started.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: finishing sessions\n");
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1\n");
    }
}

/// A status must stay one line: a newline would start a new assignment.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares against.
fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000,
        Err(_) => 0,
    }
}

/// The watchdog timeout systemd asked for (`$WATCHDOG_USEC`), if it is meant
/// for this process (`$WATCHDOG_PID`, when set, names it).
pub fn watchdog_timeout() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// How often an executor bumps its heartbeat for a watchdog `timeout`: well
/// inside the half-timeout ping period, so a healthy core always has moved
/// between two checks, and at most once a second to stay free on idle cores.
pub fn heartbeat_period(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

/// One heartbeat counter per executor.
#[derive(Debug)]
pub struct Liveness {
    beats: Vec<AtomicU64>,
}

impl Liveness {
    /// Counters for `executors` executors.
    pub fn new(executors: usize) -> Liveness {
        Liveness {
            beats: (0..executors).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Called only by executor `i`, from its heartbeat task.
    pub fn beat(&self, i: usize) {
        if let Some(b) = self.beats.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Vec<u64> {
        self.beats
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The running watchdog thread; dropping it does not stop it, [`close`](Watchdog::close) does.
pub struct Watchdog {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Watchdog {
    /// Stops pinging and waits for the thread.
    pub fn close(self) {
        drop(self.stop);
        let _ = self.handle.join();
    }
}

/// Pings systemd every half of `timeout` (as sd_watchdog_enabled(3)
/// recommends) while every executor's heartbeat has advanced since the
/// previous check. Once one stalls the thread stops pinging for good: a core
/// that stopped once is not trusted to be healthy later.
pub fn spawn_watchdog(
    notifier: Arc<Notifier>,
    timeout: Duration,
    liveness: Arc<Liveness>,
) -> io::Result<Watchdog> {
    let (stop, stopped) = mpsc::channel::<()>();
    let every = timeout / 2;
    let handle = std::thread::Builder::new()
        .name("sluice-watchdog".into())
        .spawn(move || {
            let mut last = liveness.snapshot();
            // The executors were just started and have not beaten yet: the
            // first ping vouches only for startup having completed.
            notifier.watchdog();
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let now = liveness.snapshot();
                let stalled: Vec<usize> = now
                    .iter()
                    .zip(&last)
                    .enumerate()
                    .filter(|(_, (n, l))| n == l)
                    .map(|(i, _)| i)
                    .collect();
                if !stalled.is_empty() {
                    tracing::error!(cores = ?stalled,
                        "an executor stopped making progress; no more watchdog pings");
                    return;
                }
                notifier.watchdog();
                last = now;
            }
        })?;
    Ok(Watchdog { stop, handle })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> (tempfile::TempDir, UnixDatagram, Notifier) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier {
            target: Some(Notifier::open(path.as_os_str().as_encoded_bytes()).unwrap()),
            warned: AtomicBool::new(false),
        };
        (dir, rx, n)
    }

    fn recv(rx: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = rx.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_carries_status_on_one_line_and_the_pid() {
        let (_dir, rx, n) = listen();
        n.ready("up\nINJECTED=1");
        let got = recv(&rx);
        assert!(got.starts_with("READY=1\nSTATUS=up INJECTED=1\n"), "{got}");
        assert!(got.contains(&format!("MAINPID={}\n", std::process::id())));
    }

    #[test]
    fn reloading_carries_a_monotonic_timestamp() {
        let (_dir, rx, n) = listen();
        n.reloading();
        let got = recv(&rx);
        let usec: u64 = got
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(got.starts_with("RELOADING=1\n") && usec > 0, "{got}");
    }

    #[test]
    fn abstract_names_and_bad_names() {
        let rx = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(format!("sluice-test-{}", std::process::id())).unwrap(),
        )
        .unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier {
            target: Some(
                Notifier::open(format!("@sluice-test-{}", std::process::id()).as_bytes()).unwrap(),
            ),
            warned: AtomicBool::new(false),
        };
        n.stopping();
        assert!(recv(&rx).starts_with("STOPPING=1\n"));
        assert!(Notifier::open(b"relative/path").is_err());
        assert!(Notifier::open(b"").is_err());
        // Disabled: nothing to send, nothing fails.
        Notifier::disabled().watchdog();
    }

    #[test]
    fn watchdog_pings_while_beating_and_stops_when_a_core_stalls() {
        let (_dir, rx, n) = listen();
        let live = Arc::new(Liveness::new(2));
        // Generous: the test thread must beat within one check period on a busy CI host.
        let timeout = Duration::from_secs(2);
        let w = spawn_watchdog(Arc::new(n), timeout, live.clone()).unwrap();
        assert_eq!(recv(&rx), "WATCHDOG=1\n");
        // Both cores beat: another ping follows.
        live.beat(0);
        live.beat(1);
        assert_eq!(recv(&rx), "WATCHDOG=1\n");
        // Core 1 stalls: no ping arrives within a full timeout.
        live.beat(0);
        rx.set_read_timeout(Some(timeout * 2)).unwrap();
        let mut buf = [0u8; 64];
        // At most one ping can be in flight from before the stall.
        let mut pings = 0;
        while rx.recv(&mut buf).is_ok() {
            pings += 1;
            live.beat(0);
        }
        assert!(pings <= 1, "{pings} pings after core 1 stalled");
        w.close();
    }

    #[test]
    fn heartbeat_is_well_inside_the_ping_period() {
        assert_eq!(
            heartbeat_period(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            heartbeat_period(Duration::from_millis(800)),
            Duration::from_millis(100)
        );
    }
}
