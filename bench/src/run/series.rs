//! A time series of the run, five samples a second (fine enough to time
//! domains that finish within seconds): the sink's per-domain
//! counters (accepted, 4xx, connections, suspended replies) and, when the
//! SUT is a sluice with its admin API on `{admin}`, each destination's
//! controller state from `/v1/destinations` (rate, allowed connections,
//! open connections), plus the messages the SUT had acknowledged to the
//! injector. `shaping-plot` draws it; [`steady_rate`] turns it into the
//! report's steady delivery rate of a group of domains.
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

use crate::inject::Live;
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
    /// Messages the SUT had acknowledged to the injector so far.
    #[serde(default)]
    pub injected: u64,
    /// Per recipient domain.
    pub domains: BTreeMap<String, DomainSample>,
}

/// The delivery rate of a group of domains (all but some excluded ones)
/// over the middle of their mail: from the moment the sink had accepted
/// `from_fraction` of the group's recipients to the moment it had
/// `to_fraction` of them (times interpolated between samples). Leaving out
/// the first and last few per cent keeps the figure free of the start-up
/// ramp and of the tail (the last messages drain at whatever pace, and one
/// straggler deferred by a retry would stretch a first-to-last span).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SteadyRate {
    /// Domains in the group.
    pub domains: usize,
    /// Domains left out (as configured; absent ones included).
    pub excluded: Vec<String>,
    /// Recipients of the group the sink accepted by the last sample.
    pub recipients: u64,
    /// Lower end of the window, as a fraction of `recipients`.
    pub from_fraction: f64,
    /// Upper end.
    pub to_fraction: f64,
    /// When the sink had `from_fraction` of them (s since injection start).
    pub from_secs: f64,
    /// When it had `to_fraction` of them.
    pub to_secs: f64,
    /// Recipients of the group accepted per second in that window.
    pub rcpts_per_sec: f64,
    /// Messages the SUT acknowledged to the injector per second in the same
    /// window (all domains): whether the load kept coming meanwhile.
    pub injected_per_sec: f64,
}

/// Whether `from`..`to` is a window of fractions: 0 <= from < to <= 1.
pub(crate) fn valid_window(from: f64, to: f64) -> bool {
    (0.0..1.0).contains(&from) && from < to && to <= 1.0
}

/// [`SteadyRate`] of every domain of `series` but `exclude`, between the
/// fractions `from` and `to` of its recipients; `None` when the group got
/// nothing or the window is empty.
pub fn steady_rate(
    series: &[Sample],
    exclude: &[String],
    from: f64,
    to: f64,
) -> Option<SteadyRate> {
    if !valid_window(from, to) {
        return None;
    }
    let included = |name: &str| !exclude.iter().any(|e| e.eq_ignore_ascii_case(name));
    // Cumulative (t, group recipients, injected), starting from nothing at 0.
    let mut points = vec![(0.0, 0u64, 0u64)];
    points.extend(series.iter().map(|s| {
        let n = s
            .domains
            .iter()
            .filter(|(k, _)| included(k))
            .map(|(_, d)| d.accepted)
            .sum();
        (s.t, n, s.injected)
    }));
    let total = points.last().map_or(0, |p| p.1);
    if total == 0 {
        return None;
    }
    // When the group's count reached `target`, interpolated linearly.
    let crossing = |target: f64| -> Option<f64> {
        let i = points.iter().position(|p| p.1 as f64 >= target)?;
        let (t1, n1, _) = *points.get(i)?;
        let Some(&(t0, n0, _)) = i.checked_sub(1).and_then(|j| points.get(j)) else {
            return Some(t1);
        };
        let span = n1.saturating_sub(n0) as f64;
        let part = if span > 0.0 {
            (target - n0 as f64) / span
        } else {
            1.0
        };
        Some(t0 + (t1 - t0) * part.clamp(0.0, 1.0))
    };
    let t_from = crossing(from * total as f64)?;
    let t_to = crossing(to * total as f64)?;
    if t_to <= t_from {
        return None;
    }
    // The injector's count at a time, interpolated the same way.
    let injected_at = |t: f64| -> f64 {
        let i = points
            .iter()
            .position(|p| p.0 >= t)
            .unwrap_or(points.len() - 1);
        let (t1, _, a1) = points.get(i).copied().unwrap_or_default();
        match i.checked_sub(1).and_then(|j| points.get(j)) {
            Some(&(t0, _, a0)) if t1 > t0 => {
                a0 as f64 + (a1 as f64 - a0 as f64) * ((t - t0) / (t1 - t0)).clamp(0.0, 1.0)
            }
            _ => a1 as f64,
        }
    };
    let domains = series
        .last()
        .map_or(0, |s| s.domains.keys().filter(|k| included(k)).count());
    Some(SteadyRate {
        domains,
        excluded: exclude.to_vec(),
        recipients: total,
        from_fraction: from,
        to_fraction: to,
        from_secs: t_from,
        to_secs: t_to,
        rcpts_per_sec: (to - from) * total as f64 / (t_to - t_from),
        injected_per_sec: (injected_at(t_to) - injected_at(t_from)) / (t_to - t_from),
    })
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
    sink: SinkHandle,
    live: Arc<Live>,
    started: Instant,
}

impl Sampler {
    /// Samples every [`INTERVAL`] from `started` on.
    pub(crate) fn start(
        sink: SinkHandle,
        live: Arc<Live>,
        admin: Option<Admin>,
        started: Instant,
    ) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let (sink_, live_) = (sink.clone(), live.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            loop {
                tick.tick().await;
                let mut sample = sink_sample(&sink_, &live_, started);
                if let Some(a) = &admin {
                    if let Some(list) = destinations(a).await {
                        merge(&mut sample.domains, &list);
                    }
                }
                if let Ok(mut v) = out.lock() {
                    v.push(sample);
                }
            }
        });
        Sampler {
            task,
            samples,
            sink,
            live,
            started,
        }
    }

    /// Stops sampling and returns the series, ending with the sink's
    /// counters now (so the last sample has everything the sink got).
    pub(crate) fn finish(self) -> Vec<Sample> {
        self.task.abort();
        let mut v = self
            .samples
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        v.push(sink_sample(&self.sink, &self.live, self.started));
        v
    }
}

/// The sink's and the injector's counters now.
fn sink_sample(sink: &SinkHandle, live: &Live, started: Instant) -> Sample {
    let t = started.elapsed().as_secs_f64();
    let injected = live.accepted();
    let report = sink.snapshot();
    let domains = report
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
    Sample {
        t,
        injected,
        domains,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A series at 1 s: `fast` gets `rate`/s until it has `n`; `slow` 10/s.
    fn series(rate: u64, n: u64, secs: u32) -> Vec<Sample> {
        (1..=secs)
            .map(|t| {
                let t = f64::from(t);
                let mut domains = BTreeMap::new();
                let fast = (rate as f64 * t).min(n as f64) as u64;
                for (name, accepted) in [("fast.test", fast), ("slow.test", 10 * t as u64)] {
                    domains.insert(
                        name.to_string(),
                        DomainSample {
                            accepted,
                            ..DomainSample::default()
                        },
                    );
                }
                Sample {
                    t,
                    injected: 2 * fast,
                    domains,
                }
            })
            .collect()
    }

    #[test]
    fn steady_rate_is_the_middle_of_the_group_and_ignores_the_tail() {
        let slow = vec!["slow.test".to_string()];
        // 1,000/s until 20,000 (t = 20 s); the run goes on to 60 s.
        let s = series(1000, 20_000, 60);
        let r = steady_rate(&s, &slow, 0.05, 0.95).unwrap();
        assert_eq!(r.domains, 1);
        assert_eq!(r.recipients, 20_000);
        assert!((r.from_secs - 1.0).abs() < 1e-9, "{}", r.from_secs);
        assert!((r.to_secs - 19.0).abs() < 1e-9, "{}", r.to_secs);
        assert!(
            (r.rcpts_per_sec - 1000.0).abs() < 1e-6,
            "{}",
            r.rcpts_per_sec
        );
        assert!((r.injected_per_sec - 2000.0).abs() < 1e-6);
        // With the slow domain in the group, a start-to-last span takes
        // its 60 s: a third of the rate the fast domain had all along.
        let all = steady_rate(&s, &[], 0.0, 1.0).unwrap();
        assert_eq!(all.recipients, 20_600);
        assert!((all.to_secs - 60.0).abs() < 1e-9);
        assert!(all.rcpts_per_sec < 350.0, "{}", all.rcpts_per_sec);
        // Interpolated between samples: 5% of 30,000 at 1.5 s.
        let r = steady_rate(&series(1000, 30_000, 40), &slow, 0.05, 0.95).unwrap();
        assert!((r.from_secs - 1.5).abs() < 1e-9, "{}", r.from_secs);
        assert!((r.rcpts_per_sec - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn steady_rate_needs_mail_and_a_window() {
        let none = vec!["fast.test".to_string(), "slow.test".to_string()];
        assert!(steady_rate(&series(1000, 20_000, 30), &none, 0.05, 0.95).is_none());
        assert!(steady_rate(&[], &[], 0.05, 0.95).is_none());
        assert!(steady_rate(&series(1000, 20_000, 30), &[], 0.5, 0.5).is_none());
        assert!(steady_rate(&series(1000, 20_000, 30), &[], 0.1, 1.5).is_none());
    }
}
