//! A time series of the run, five samples a second (fine enough to time
//! domains that finish within seconds): the sink's per-domain
//! counters (accepted, 4xx, connections, suspended replies) and, when the
//! SUT is a sluice with its admin API on `{admin}`, each destination's
//! controller state from `/v1/destinations` (rate, allowed connections,
//! open connections). `sluice-bench plot` draws it.
//!
//! The admin API is read with a minimal HTTP/1.0 GET on loopback: one
//! request a second needs no HTTP client crate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::sink::SinkHandle;

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// One destination at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainSample {
    /// Recipients the sink accepted so far.
    pub accepted: u64,
    /// Recipients the sink answered 4xx so far.
    pub tempfailed: u64,
    /// Connections that carried the domain so far.
    pub connections: u64,
    /// Replies inside a suspension window so far.
    pub suspended: u64,
    /// The SUT's allowed rate (msgs/s), when it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// The SUT's allowed connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    /// The SUT's open connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<u64>,
    /// Whether the SUT had the destination suspended.
    #[serde(default)]
    pub suspended_now: bool,
}

/// One sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since injection started.
    pub t: f64,
    /// Per recipient domain.
    pub domains: BTreeMap<String, DomainSample>,
}

/// Where to read sluice's controller state.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    pub(crate) addr: SocketAddr,
    pub(crate) token_file: PathBuf,
}

/// The running sampler.
pub(crate) struct Sampler {
    task: JoinHandle<()>,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Sampler {
    /// Samples every [`INTERVAL`] from `started` on.
    pub(crate) fn start(sink: SinkHandle, admin: Option<Admin>, started: Instant) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            loop {
                tick.tick().await;
                let t = started.elapsed().as_secs_f64();
                let report = sink.snapshot();
                let mut domains: BTreeMap<String, DomainSample> = report
                    .domains
                    .iter()
                    .map(|(k, d)| {
                        (
                            k.clone(),
                            DomainSample {
                                accepted: d.accepted,
                                tempfailed: d.tempfailed,
                                connections: d.connections,
                                suspended: d.suspended,
                                ..DomainSample::default()
                            },
                        )
                    })
                    .collect();
                if let Some(a) = &admin {
                    if let Some(list) = destinations(a).await {
                        merge(&mut domains, &list);
                    }
                }
                if let Ok(mut v) = out.lock() {
                    v.push(Sample { t, domains });
                }
            }
        });
        Sampler { task, samples }
    }

    /// Stops sampling and returns the series.
    pub(crate) fn finish(self) -> Vec<Sample> {
        self.task.abort();
        self.samples
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

fn merge(domains: &mut BTreeMap<String, DomainSample>, list: &serde_json::Value) {
    let Some(list) = list.as_array() else { return };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for d in list {
        let Some(name) = d.get("destination").and_then(|v| v.as_str()) else {
            continue;
        };
        let e = domains.entry(name.to_string()).or_default();
        e.rate = d.get("rate").and_then(|v| v.as_f64());
        e.concurrency = d.get("concurrency").and_then(|v| v.as_u64());
        e.active = d.get("active_connections").and_then(|v| v.as_u64());
        e.suspended_now = d
            .get("suspended_until")
            .and_then(|v| v.as_f64())
            .is_some_and(|t| t > now);
    }
}

/// `GET /v1/destinations`, or `None` on any failure (the SUT may not
/// have an admin API, or not yet).
async fn destinations(a: &Admin) -> Option<serde_json::Value> {
    let token = std::fs::read_to_string(&a.token_file).ok()?;
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(a.addr).await.ok()?;
        let req = format!(
            "GET /v1/destinations HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
            a.addr,
            token.trim()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let at = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        if !buf.starts_with(b"HTTP/1.1 200") && !buf.starts_with(b"HTTP/1.0 200") {
            return None;
        }
        serde_json::from_slice(buf.get(at + 4..)?).ok()
    };
    tokio::time::timeout(Duration::from_millis(800), fut)
        .await
        .ok()
        .flatten()
}
