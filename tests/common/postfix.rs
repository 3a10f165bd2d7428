//! A private Postfix on loopback (tests/peers/postfix-relay.sh), stopped
//! when dropped, and a free-port helper.
#![allow(dead_code)]

use super::run;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/postfix-relay.sh");

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running private Postfix instance.
pub struct Postfix {
    _base: tempfile::TempDir,
    dir: PathBuf,
    /// Its SMTP port.
    pub port: u16,
}

impl Postfix {
    /// `relay` mode to `nexthop` (`Some("127.0.0.1:PORT")`) or `receive` mode (`None`).
    pub fn start(nexthop: Option<&str>) -> Postfix {
        // Postfix's daemons must be able to reach the directory.
        let base = tempfile::Builder::new()
            .prefix("sluice-pfx")
            .tempdir_in("/tmp")
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = base.path().join("pfx");
        let port = free_port();
        let mut cmd = Command::new("bash");
        cmd.arg(SCRIPT);
        match nexthop {
            Some(hop) => cmd.arg("relay").arg(&dir).arg(port.to_string()).arg(hop),
            None => cmd.arg("receive").arg(&dir).arg(port.to_string()),
        };
        let (ok, out) = run(&mut cmd);
        assert!(ok, "postfix did not start:\n{out}");
        Postfix {
            _base: base,
            dir,
            port,
        }
    }

    /// `sent=N deferred=N bounced=N` from its log.
    pub fn count(&self) -> String {
        let (_, c) = run(Command::new("bash").arg(SCRIPT).arg("count").arg(&self.dir));
        c.trim().to_string()
    }

    /// Waits (Postfix logs asynchronously) until `sent=N`, then returns the count line.
    pub fn wait_sent(&self, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let want = format!("sent={n} ");
        loop {
            let c = self.count();
            if c.starts_with(&want) || Instant::now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}
