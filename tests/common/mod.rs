//! Shared test harness: start the real `sluice` binary with a generated
//! configuration, wait for its ready line, stop it with SIGTERM and read its
//! summary. Everything talks over loopback only.
#![allow(dead_code)]

pub mod lab;
pub mod postfix;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A running sluice daemon.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log: Arc<(Mutex<String>, Condvar)>,
    /// The admin API's address (`sluice: admin listen=`), when enabled.
    pub admin: Option<SocketAddr>,
    exited: mpsc::Receiver<()>,
}

/// What sluice reported when it stopped.
#[derive(Debug, PartialEq, Eq)]
pub struct Stopped {
    pub envelopes: u64,
    pub recipients: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub dsns: u64,
}

impl Daemon {
    /// Starts sluice with `config` (TOML) plus `listen = ["127.0.0.1:0"]`
    /// unless the config names its own listener.
    pub fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config)
    }

    /// Like [`start_in`], as the unprivileged [`TEST_USER`]: the directory
    /// and a copy of the binary are handed to that user first.
    pub fn start_as_service_user(dir: tempfile::TempDir, config: &str) -> Daemon {
        let (uid, gid) = service_user();
        Self::launch(dir, config, Some((uid, gid)))
    }

    /// Like [`start`] with a directory the test already populated.
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Daemon {
        Self::launch(dir, config, None)
    }

    fn launch(dir: tempfile::TempDir, config: &str, user: Option<(u32, u32)>) -> Daemon {
        let mut text = String::new();
        if !config.contains("hostname") {
            text.push_str("hostname = \"sluice.test\"\n");
        }
        // Ingress tests do not deliver (no DNS, no traffic beyond loopback)
        // unless they say so.
        if !config.contains("route") {
            text.push_str("route = \"discard\"\n");
        }
        if !config.contains("state_dir") {
            text.push_str(&format!("state_dir = \"{}\"\n", dir.path().display()));
        }
        text.push_str(config);
        if !config.contains("listen") {
            text.push_str("\n[smtp]\nlisten = [\"127.0.0.1:0\"]\n");
        }
        // Many daemons run at once: the admin API takes any free port.
        if !config.contains("[admin]") {
            text.push_str("\n[admin]\nlisten = \"127.0.0.1:0\"\n");
        }
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, text).unwrap();
        let mut cmd = match user {
            None => Command::new(env!("CARGO_BIN_EXE_sluice")),
            Some((uid, gid)) => {
                use std::os::unix::fs::PermissionsExt;
                use std::os::unix::process::CommandExt;
                // The checkout may sit where the user cannot reach (/root).
                let bin = dir.path().join("sluice-bin");
                std::fs::copy(env!("CARGO_BIN_EXE_sluice"), &bin).unwrap();
                std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
                chown_tree(dir.path(), uid, gid);
                let mut c = Command::new(bin);
                c.uid(uid).gid(gid);
                c
            }
        };
        cmd.args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut cmd);
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("sluice: ready listen=") {
                    let first = rest.split(',').next().unwrap_or("").to_string();
                    let _ = ready_tx.send(first);
                }
                let mut l = log2.0.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
                log2.1.notify_all();
            }
            let _ = exit_tx.send(());
        });
        let addr = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("sluice did not become ready:\n{}", log.0.lock().unwrap());
            }
        };
        // The admin line comes before the ready line.
        let admin = log
            .0
            .lock()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("sluice: admin listen="))
            .and_then(|a| a.trim().parse().ok());
        Daemon {
            child,
            addr,
            dir,
            log,
            admin,
            exited: exit_rx,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// SIGKILL (no chance to flush anything), wait for the process to go,
    /// and hand back its directory for a restart.
    pub fn kill(mut self) -> tempfile::TempDir {
        // It may have exited already (after SIGTERM).
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// SIGTERM, wait for the summary line, and keep the state directory
    /// for a restart.
    pub fn stop_keeping_state(self) -> tempfile::TempDir {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_log("sluice: stopped", 1);
        self.kill()
    }

    /// SIGTERM, wait for exit, parse the summary line.
    pub fn stop(mut self) -> Stopped {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.exited
            .recv_timeout(Duration::from_secs(60))
            .expect("sluice did not exit after SIGTERM");
        let status = self.child.wait().unwrap();
        let log = self.log();
        assert!(status.success(), "sluice exited with {status}:\n{log}");
        let line = log
            .lines()
            .find_map(|l| l.strip_prefix("sluice: stopped "))
            .unwrap_or_else(|| panic!("no summary line:\n{log}"));
        let field = |k: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {line}"))
        };
        Stopped {
            envelopes: field("accepted_envelopes="),
            recipients: field("accepted_recipients="),
            delivered: field("delivered="),
            bounced: field("bounced="),
            dsns: field("dsns="),
        }
    }

    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits until the daemon's stderr contains `needle` `count` times.
    pub fn wait_log(&self, needle: &str, count: usize) -> String {
        let (lock, cv) = &*self.log;
        let guard = lock.lock().unwrap();
        let (guard, timeout) = cv
            .wait_timeout_while(guard, Duration::from_secs(30), |l| {
                l.matches(needle).count() < count
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "no {needle:?} in the log:\n{}",
            *guard
        );
        guard.clone()
    }
}

impl Drop for Daemon {
    // A failed test must not leave its daemon running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A line-oriented SMTP client over a raw socket, for byte-exact checks.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        Self::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one complete (possibly multi-line) reply.
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let line = self.line();
            out.push_str(&line);
            out.push('\n');
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return out;
            }
        }
    }

    /// Reads one line (without CRLF); panics on EOF.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return line;
            }
            let mut tmp = [0u8; 4096];
            let n = self.stream.read(&mut tmp).unwrap();
            assert!(
                n > 0,
                "connection closed; buffered: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Sends `cmd` + CRLF and returns the reply.
    pub fn cmd(&mut self, cmd: &str) -> String {
        self.send(format!("{cmd}\r\n").as_bytes());
        self.reply()
    }

    /// Whether the server closed the connection (EOF with nothing buffered).
    pub fn at_eof(&mut self) -> bool {
        let mut tmp = [0u8; 64];
        matches!(self.stream.read(&mut tmp), Ok(0))
    }
}

/// Asserts that `reply` starts with `prefix`.
#[track_caller]
pub fn expect(reply: &str, prefix: &str) {
    assert!(
        reply.starts_with(prefix),
        "expected `{prefix}…`, got `{reply}`"
    );
}

/// Writes a self-signed certificate and key for `localhost` into `dir`.
pub fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "sluice.test".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// Writes an AUTH users file with one user.
pub fn write_users(dir: &Path, user: &str, password: &str) -> PathBuf {
    let path = dir.join("users");
    let hash = sluice::auth::hash_password(password).unwrap();
    std::fs::write(&path, format!("{user}:{hash}\n")).unwrap();
    path
}

/// Runs a program, returning (success, stdout+stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The unprivileged account tests run the daemon as (what the systemd unit
/// does with `User=sluice`).
pub const TEST_USER: &str = "sluice-test";

/// Whether a user exists.
pub fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The uid and gid of [`TEST_USER`], creating it as a system user if
/// missing. Needs root (CI runs as root).
pub fn service_user() -> (u32, u32) {
    assert!(
        run(Command::new("id").arg("-u")).1.trim() == "0",
        "this test starts sluice as `{TEST_USER}` and must run as root (CI does)"
    );
    if !user_exists(TEST_USER) {
        let (ok, out) = run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
            TEST_USER,
        ]));
        // A concurrent run may have created it in between.
        assert!(ok || user_exists(TEST_USER), "useradd {TEST_USER}: {out}");
    }
    let id = |flag: &str| -> u32 {
        let (ok, out) = run(Command::new("id").args([flag, TEST_USER]));
        assert!(ok, "id {flag} {TEST_USER}: {out}");
        out.trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// Hands a directory tree to `uid:gid`.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                chown_tree(&p, uid, gid);
            } else {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
            }
        }
    }
}

/// Spawns `cmd`. A freshly copied binary can be briefly "text file busy"
/// when another test thread forks while the copy's descriptor is open
/// (the child inherits it until its exec): retry that, nothing else.
pub fn spawn(cmd: &mut Command) -> Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(26) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot start {cmd:?}: {e}"),
        }
    }
}
