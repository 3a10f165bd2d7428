//! A simulated Internet on loopback for delivery tests: the bench DNS stub
//! and SMTP sink, in-process on a tokio runtime, and a sluice daemon whose
//! resolver and MX port point at them.
#![allow(dead_code)]

use super::Daemon;
use sluice_bench::dns::{self, DnsOptions, DnsServer, Zone};
use sluice_bench::sink::{Profile, Sink, SinkHandle, SinkOptions, SinkReport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// DNS stub + sink + sluice.
pub struct Lab {
    pub rt: tokio::runtime::Runtime,
    pub dns: Option<DnsServer>,
    pub sink: SinkHandle,
    pub sink_addr: SocketAddr,
    stop_sink: Option<tokio::sync::oneshot::Sender<()>>,
    pub sluice: Option<Daemon>,
    base: String,
}

/// Records every lab zone has: the sink's MX host, the sender's domain and
/// the two ordinary destinations most tests deliver to.
pub const BASE_ZONE: &str = r#"
[[record]]
name = "mx.lab.test"
type = "A"
data = "127.0.0.1"
[[record]]
name = "sender.test"
type = "MX"
data = "10 mx.lab.test"
[[record]]
name = "d1.test"
type = "MX"
data = "10 mx.lab.test"
[[record]]
name = "d2.test"
type = "MX"
data = "10 mx.lab.test"
"#;

impl Lab {
    /// Starts the stub with `BASE_ZONE` + `zone`, the sink with `profile`,
    /// and sluice with `config` (plus the lab's DNS and port settings).
    pub fn start(zone: &str, profile: &str, config: &str) -> Lab {
        Self::start_with_port(zone, profile, config, None)
    }

    /// Like [`start`], but MX deliveries go to `smtp_port` (another
    /// receiver, such as Postfix or aiosmtpd) instead of the sink.
    pub fn start_with_port(zone: &str, profile: &str, config: &str, smtp_port: Option<u16>) -> Lab {
        Self::launch(zone, profile, &|_| config.to_string(), smtp_port, false)
    }

    /// Like [`start_with_port`], with sluice's configuration written once
    /// the sink's address is known (to route some domains to it).
    pub fn start_around_sink(
        zone: &str,
        profile: &str,
        config: &dyn Fn(SocketAddr) -> String,
        smtp_port: Option<u16>,
    ) -> Lab {
        Self::launch(zone, profile, config, smtp_port, false)
    }

    fn launch(
        zone: &str,
        profile: &str,
        config: &dyn Fn(SocketAddr) -> String,
        smtp_port: Option<u16>,
        service_user: bool,
    ) -> Lab {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let zone = Zone::from_toml_str(&format!("{BASE_ZONE}\n{zone}")).unwrap();
        let dns = rt
            .block_on(dns::start(DnsOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                domains: 0,
                zone: Some(zone),
                ..DnsOptions::default()
            }))
            .unwrap();
        let mut opts = SinkOptions::new("127.0.0.1:0".parse().unwrap());
        opts.profile = Profile::from_toml_str(profile).unwrap();
        opts.track_receipts = true;
        let sink = rt.block_on(Sink::bind(opts)).unwrap();
        let sink_addr = sink.local_addr().unwrap();
        let handle = sink.handle();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(async move {
            let _ = sink
                .run(async {
                    let _ = rx.await;
                })
                .await;
        });
        let config = config(sink_addr);
        let cfg = format!(
            "route = \"deliver\"\n{config}\n[dns]\nnameservers = [\"{}\"]\nsmtp_port = {}\n",
            dns.local_addr(),
            smtp_port.unwrap_or(sink_addr.port())
        );
        let dir = tempfile::tempdir().unwrap();
        let sluice = if service_user {
            Daemon::start_as_service_user(dir, &cfg)
        } else {
            Daemon::start_in(dir, &cfg)
        };
        let base = cfg.clone();
        Lab {
            base,
            rt,
            dns: Some(dns),
            sink: handle,
            sink_addr,
            stop_sink: Some(tx),
            sluice: Some(sluice),
        }
    }

    /// Like [`start`], with sluice running as the unprivileged service user.
    pub fn start_as_service_user(zone: &str, profile: &str, config: &str) -> Lab {
        Self::launch(zone, profile, &|_| config.to_string(), None, true)
    }

    /// Kills sluice with SIGKILL and starts it again on the same state
    /// directory, with `extra` appended to its configuration.
    pub fn kill_and_restart(&mut self, extra: &str) {
        let dir = self.sluice.take().unwrap().kill();
        let cfg = format!("{}\n{extra}", self.base);
        self.sluice = Some(Daemon::start_in(dir, &cfg));
    }

    /// Starts sluice on `dir` (a stopped or killed daemon's state) with
    /// `config`, and returns the journal's recovery line of the new run.
    pub fn restart_on(&mut self, dir: tempfile::TempDir, config: &str) -> String {
        self.sluice = Some(Daemon::start_in(dir, config));
        let log = self.sluice().wait_log("recovered messages=", 1);
        log.lines()
            .rfind(|l| l.contains("recovered messages="))
            .unwrap_or_else(|| panic!("no recovery line:\n{log}"))
            .to_string()
    }

    /// The configuration sluice was started with.
    pub fn config(&self) -> &str {
        &self.base
    }

    pub fn sluice(&self) -> &Daemon {
        self.sluice.as_ref().unwrap()
    }

    /// Waits (up to 60 s) until `pred` holds for the sink's counters.
    pub fn wait_sink(&self, what: &str, pred: impl Fn(&SinkReport) -> bool) -> SinkReport {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.sink.snapshot();
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; sink: {r:#?}\nsluice:\n{}",
                self.sluice().log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until sluice's delivery log has `n` lines containing all of `needles`.
    pub fn wait_log(&self, needles: &[&str], n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lines = self.log_lines(needles);
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} log lines with {needles:?}; have:\n{}",
                self.log_lines(&[]).join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Delivery-log lines (all shards) containing all of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..8 {
            let p = self.sluice().path(&format!("delivery-{i}.jsonl"));
            if let Ok(text) = std::fs::read_to_string(p) {
                out.extend(
                    text.lines()
                        .filter(|l| needles.iter().all(|n| l.contains(n)))
                        .map(str::to_string),
                );
            }
        }
        out
    }

    /// Runs `sluicectl --json ARGS` against this lab's daemon; returns
    /// whether it succeeded and its output as JSON (null if none).
    pub fn ctl(&self, args: &[&str]) -> (bool, serde_json::Value) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicectl"))
            .arg("--url")
            .arg(format!(
                "http://{}",
                self.sluice().admin.expect("admin API")
            ))
            .arg("--token-file")
            .arg(self.sluice().path("admin.token"))
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out.status.success(), v)
    }

    /// Stops sluice and returns its summary line's numbers.
    pub fn stop(mut self) -> super::Stopped {
        let s = self.sluice.take().unwrap().stop();
        if let Some(tx) = self.stop_sink.take() {
            let _ = tx.send(());
        }
        s
    }
}

/// Sends `n` messages from `from` to `rcpts` over one session, each with a
/// distinct Message-ID, expecting `250 2.0.0` for each.
pub fn send(d: &Daemon, from: &str, rcpts: &[&str], n: usize) {
    let mut c = super::Client::connect(d.addr);
    super::expect(&c.reply(), "220");
    super::expect(&c.cmd("EHLO client.test"), "250");
    for i in 0..n {
        super::expect(&c.cmd(&format!("MAIL FROM:<{from}>")), "250");
        for r in rcpts {
            super::expect(&c.cmd(&format!("RCPT TO:<{r}>")), "250");
        }
        super::expect(&c.cmd("DATA"), "354");
        super::expect(
            &c.cmd(&format!(
                "Message-ID: <m{i}.{}@client.test>\r\nSubject: t{i}\r\n\r\nbody {i}\r\n.",
                rcpts.len()
            )),
            "250 2.0.0",
        );
    }
    super::expect(&c.cmd("QUIT"), "221");
}
