//! The fixtures a run puts around the SUT: a scratch directory, the DNS
//! stub and the sink, plus the free ports handed to the SUT.
//!
//! The sink listens on 127.0.0.1 and, with `mx_listeners`, on the MX
//! address the DNS stub gives every synthetic domain (`d{i}.test` →
//! `127.1.{i/254}.{i%254+1}`), all on one port: an MTA that resolves MX
//! records and connects to "port 25" (the sink's port, `{sink_port}`)
//! lands on the sink with a distinct local address per destination.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::scenario::Scenario;
use crate::dns::{self, DnsOptions, DnsServer, FailureRule, Zone};
use crate::error::{Error, Result};
use crate::sink::{Profile, Sink, SinkHandle, SinkOptions, SinkReport};

/// Attempts at binding the sink when its port was picked at random.
const BIND_ATTEMPTS: usize = 5;

/// A free TCP port on 127.0.0.1 (released again, so the SUT can bind it).
pub(crate) fn free_port() -> Result<u16> {
    StdListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("picking a free port on 127.0.0.1", e))
}

/// A scratch directory under the system temp dir, world-searchable so
/// that Postfix's unprivileged daemons can reach an instance inside it.
pub(crate) fn make_work_dir() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "sluice-bench-run-{}-{nanos:09}",
        std::process::id()
    ));
    let err = |e| Error::io(format!("creating {}", dir.display()), e);
    std::fs::create_dir_all(dir.join("state")).map_err(err)?;
    for d in [dir.clone(), dir.join("state")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    }
    Ok(dir)
}

/// Starts the DNS stub for the scenario's synthetic domains.
pub(crate) async fn start_dns(scenario: &Scenario, dir: &Path) -> Result<DnsServer> {
    let s = &scenario.dns;
    let zone = s
        .zone
        .as_ref()
        .map(|p| Zone::load(&dir.join(p)))
        .transpose()
        .map_err(|e| Error::Scenario(format!("[dns] zone: {e}")))?;
    let failures = s
        .failures
        .iter()
        .map(|f| f.parse::<FailureRule>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Scenario(format!("[dns] failures: {e}")))?;
    let opts = DnsOptions {
        // Past the synthetic address range the stub serves nothing: such
        // domains (many-domains.toml) reach the sink by a static route, and
        // any that do not are NXDOMAIN and show up as bounced.
        domains: scenario.inject.domains.min(dns::MAX_SYNTHETIC_DOMAINS),
        zone,
        failures,
        ttl: s.ttl,
        aaaa: s.aaaa,
        ..DnsOptions::default()
    };
    dns::start(opts)
        .await
        .map_err(|e| Error::Scenario(format!("[dns]: {e}")))
}

/// The sink's behaviour profile from `[sink]`.
fn profile(scenario: &Scenario, dir: &Path) -> Result<Profile> {
    if let Some(table) = &scenario.sink.profile {
        let text =
            toml::to_string(table).map_err(|e| Error::Scenario(format!("[sink.profile]: {e}")))?;
        return Profile::from_toml_str(&text).map_err(|e| match e {
            Error::Profile(m) => Error::Scenario(format!("[sink.profile] {m}")),
            other => other,
        });
    }
    match &scenario.sink.profile_file {
        Some(p) => Profile::load(&dir.join(p)),
        None => Ok(Profile::default()),
    }
}

/// A sink serving in a background task.
pub(crate) struct RunningSink {
    /// The 127.0.0.1 address.
    pub(crate) addr: SocketAddr,
    /// Live counters.
    pub(crate) handle: SinkHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<SinkReport>>,
}

impl RunningSink {
    /// Binds 127.0.0.1 and the synthetic MX addresses on one port.
    pub(crate) async fn start(scenario: &Scenario, dir: &Path) -> Result<RunningSink> {
        let s = &scenario.sink;
        let profile = profile(scenario, dir)?;
        let mut attempt = 0;
        let sink = loop {
            attempt += 1;
            let port = if s.port == 0 { free_port()? } else { s.port };
            let mut listen = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
            if s.mx_listeners {
                listen.extend(
                    (0..scenario.inject.domains)
                        .filter_map(dns::synthetic_mx_addr)
                        .map(|ip| SocketAddr::new(IpAddr::V4(ip), port)),
                );
            }
            let mut opts = SinkOptions::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            opts.listen = listen;
            opts.profile = profile.clone();
            opts.tls = s.tls;
            opts.track_receipts = true;
            if let Some(h) = &s.hostname {
                opts.hostname.clone_from(h);
            }
            match Sink::bind(opts).await {
                Ok(sink) => break sink,
                // Someone took the picked port in between: pick another.
                Err(_) if s.port == 0 && attempt < BIND_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        };
        let addr = sink
            .local_addr()
            .ok_or_else(|| Error::Sut("sink has no address".into()))?;
        let handle = sink.handle();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sink.run(async move {
            let _ = rx.await;
        }));
        Ok(RunningSink {
            addr,
            handle,
            stop,
            task,
        })
    }

    /// Stops the sink; returns its final counters.
    pub(crate) async fn stop(self) -> Result<SinkReport> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| Error::Sut(format!("sink task failed: {e}")))?
    }
}
