//! Live counters shared by all sink sessions. Hot-path updates are atomic
//! increments; the few structures that need a lock (per-IP concurrency,
//! one-second rate buckets) are touched once per connection or message,
//! never per line.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Distinct recipient domains tracked individually; beyond this (a
/// misbehaving client inventing domains) they are pooled under [`OTHER_DOMAINS`].
pub const MAX_TRACKED_DOMAINS: usize = 10_000;
/// Bucket name for domains beyond [`MAX_TRACKED_DOMAINS`].
pub const OTHER_DOMAINS: &str = "(other)";

/// Locks a mutex, ignoring poisoning: counters stay meaningful even if a
/// session panicked while holding the lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Default, Clone, Copy)]
struct Concurrency {
    current: u64,
    peak: u64,
}

/// Current and peak concurrent connections per source IP.
#[derive(Debug, Default)]
pub(crate) struct PerIp {
    map: Mutex<HashMap<IpAddr, Concurrency>>,
}

impl PerIp {
    /// Registers a connection and returns the new current count.
    pub(crate) fn enter(&self, ip: IpAddr) -> u64 {
        let mut map = lock(&self.map);
        let c = map.entry(ip).or_default();
        c.current += 1;
        c.peak = c.peak.max(c.current);
        c.current
    }

    /// Undoes [`PerIp::enter`]. `keep_peak` false also undoes the peak bump,
    /// for connections that were rejected for exceeding the limit.
    pub(crate) fn leave(&self, ip: IpAddr, keep_peak: bool) {
        let mut map = lock(&self.map);
        if let Some(c) = map.get_mut(&ip) {
            if !keep_peak && c.peak == c.current {
                c.peak -= 1;
            }
            c.current = c.current.saturating_sub(1);
        }
    }

    fn peaks(&self) -> BTreeMap<String, u64> {
        lock(&self.map)
            .iter()
            .filter(|(_, c)| c.peak > 0)
            .map(|(ip, c)| (ip.to_string(), c.peak))
            .collect()
    }
}

/// Messages per one-second bucket, keeping the peak.
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    state: Mutex<(u64, u64, u64)>,
}

impl RateMeter {
    pub(crate) fn record(&self, second: u64) {
        let mut s = lock(&self.state);
        let (bucket, count, peak) = &mut *s;
        if *bucket != second {
            *bucket = second;
            *count = 0;
        }
        *count += 1;
        *peak = (*peak).max(*count);
    }

    fn peak(&self) -> u64 {
        lock(&self.state).2
    }
}

/// Counters for one recipient domain.
#[derive(Debug, Default)]
pub(crate) struct DomainStats {
    pub(crate) accepted: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) tempfailed: AtomicU64,
    pub(crate) permfailed: AtomicU64,
    pub(crate) greylisted: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) suspended: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) per_ip: PerIp,
    pub(crate) rate: RateMeter,
}

/// Process-wide sink counters.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) started: Instant,
    pub(crate) connections: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) hung: AtomicU64,
    pub(crate) dropped_mid_data: AtomicU64,
    pub(crate) rejected_concurrency: AtomicU64,
    pub(crate) rejected_max_messages: AtomicU64,
    pub(crate) messages_accepted: AtomicU64,
    pub(crate) recipients_accepted: AtomicU64,
    pub(crate) tempfailed: AtomicU64,
    pub(crate) permfailed: AtomicU64,
    pub(crate) greylisted: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) suspended: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    /// Microseconds after `started` of the last accepted message, plus one
    /// (0: none yet), for end-to-end rates.
    pub(crate) last_accept_us: AtomicU64,
    pub(crate) data_transactions: AtomicU64,
    pub(crate) bdat_transactions: AtomicU64,
    pub(crate) tls_sessions: AtomicU64,
    pub(crate) auth_sessions: AtomicU64,
    pub(crate) pipelined_commands: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) per_ip: PerIp,
    pub(crate) rate: RateMeter,
    domains: Mutex<HashMap<Box<str>, Arc<DomainStats>>>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            started: Instant::now(),
            connections: AtomicU64::new(0),
            active: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            dropped_mid_data: AtomicU64::new(0),
            rejected_concurrency: AtomicU64::new(0),
            rejected_max_messages: AtomicU64::new(0),
            messages_accepted: AtomicU64::new(0),
            recipients_accepted: AtomicU64::new(0),
            tempfailed: AtomicU64::new(0),
            permfailed: AtomicU64::new(0),
            greylisted: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            suspended: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            last_accept_us: AtomicU64::new(0),
            data_transactions: AtomicU64::new(0),
            bdat_transactions: AtomicU64::new(0),
            tls_sessions: AtomicU64::new(0),
            auth_sessions: AtomicU64::new(0),
            pipelined_commands: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            per_ip: PerIp::default(),
            rate: RateMeter::default(),
            domains: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds since start, the rate-bucket index.
    pub(crate) fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Notes that a message was accepted now.
    pub(crate) fn mark_accept(&self) {
        let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.last_accept_us.fetch_max(us + 1, Relaxed);
    }

    /// When the last message was accepted, if any was.
    pub(crate) fn last_accepted_at(&self) -> Option<Instant> {
        match self.last_accept_us.load(Relaxed) {
            0 => None,
            us => Some(self.started + std::time::Duration::from_micros(us - 1)),
        }
    }

    /// Counters for a lower-case domain, created on first use.
    pub(crate) fn domain(&self, name: &str) -> Arc<DomainStats> {
        let mut map = lock(&self.domains);
        if let Some(d) = map.get(name) {
            return d.clone();
        }
        let key = if map.len() >= MAX_TRACKED_DOMAINS {
            OTHER_DOMAINS
        } else {
            name
        };
        map.entry(key.into()).or_default().clone()
    }

    pub(crate) fn snapshot(&self) -> SinkReport {
        // Totals first: a session bumps its domain counters before the
        // totals (with Release), so a reader that sees a total also sees the
        // per-domain counts behind it and the report never shows a domain
        // lagging the total.
        let mut report = SinkReport {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            connections: self.connections.load(Relaxed),
            active_connections: self.active.load(Relaxed),
            refused: self.refused.load(Relaxed),
            hung: self.hung.load(Relaxed),
            dropped_mid_data: self.dropped_mid_data.load(Relaxed),
            rejected_concurrency: self.rejected_concurrency.load(Relaxed),
            rejected_max_messages: self.rejected_max_messages.load(Relaxed),
            messages_accepted: self.messages_accepted.load(Relaxed),
            recipients_accepted: self
                .recipients_accepted
                .load(std::sync::atomic::Ordering::Acquire),
            tempfailed: self.tempfailed.load(Relaxed),
            permfailed: self.permfailed.load(Relaxed),
            greylisted: self.greylisted.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            suspended: self.suspended.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            last_accepted_secs: self
                .last_accepted_at()
                .map(|t| t.duration_since(self.started).as_secs_f64()),
            data_transactions: self.data_transactions.load(Relaxed),
            bdat_transactions: self.bdat_transactions.load(Relaxed),
            tls_sessions: self.tls_sessions.load(Relaxed),
            auth_sessions: self.auth_sessions.load(Relaxed),
            pipelined_commands: self.pipelined_commands.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            peak_rate: self.rate.peak(),
            peak_connections_per_ip: self.per_ip.peaks(),
            domains: BTreeMap::new(),
        };
        report.domains = lock(&self.domains)
            .iter()
            .map(|(name, d)| {
                (
                    name.to_string(),
                    DomainReport {
                        accepted: d.accepted.load(Relaxed),
                        messages: d.messages.load(Relaxed),
                        tempfailed: d.tempfailed.load(Relaxed),
                        permfailed: d.permfailed.load(Relaxed),
                        greylisted: d.greylisted.load(Relaxed),
                        rate_limited: d.rate_limited.load(Relaxed),
                        suspended: d.suspended.load(Relaxed),
                        duplicates: d.duplicates.load(Relaxed),
                        connections: d.connections.load(Relaxed),
                        peak_connections_per_ip: d.per_ip.peaks(),
                        peak_rate: d.rate.peak(),
                    },
                )
            })
            .collect();
        report
    }
}

/// Per-domain counters in a [`SinkReport`]. Recipient counts, except
/// `messages` and `peak_rate` which count messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainReport {
    /// Recipients whose message was accepted.
    pub accepted: u64,
    /// Accepted messages with at least one recipient in the domain.
    pub messages: u64,
    /// Recipients answered 4xx (random, `tempfail@`, greylisting, rate limit).
    pub tempfailed: u64,
    /// Recipients answered 5xx (random, `permfail@`).
    pub permfailed: u64,
    /// Recipients greylisted (also counted in `tempfailed`).
    pub greylisted: u64,
    /// Recipients refused by the rate limit (also counted in `tempfailed`).
    pub rate_limited: u64,
    /// Recipients answered 421 inside a suspension window (also counted in `tempfailed`).
    #[serde(default)]
    pub suspended: u64,
    /// Accepted (Message-ID, recipient) pairs seen before.
    pub duplicates: u64,
    /// Connections that carried at least one RCPT for the domain.
    pub connections: u64,
    /// Peak concurrent connections per source IP carrying the domain.
    pub peak_connections_per_ip: BTreeMap<String, u64>,
    /// Highest number of messages accepted within one wall-clock second.
    pub peak_rate: u64,
}

/// Snapshot of all sink counters; what the status endpoint and `--summary` emit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    /// Seconds since the sink started.
    pub uptime_secs: f64,
    /// TCP connections accepted, whatever happened to them.
    pub connections: u64,
    /// Connections open right now.
    pub active_connections: u64,
    /// Connections closed at once by `mode = "refuse"`.
    pub refused: u64,
    /// Connections parked by `mode = "hang"`.
    pub hung: u64,
    /// Connections closed in the middle of message content by `mode = "drop_mid_data"`.
    pub dropped_mid_data: u64,
    /// Connections answered `421` for exceeding `max_connections_per_ip`.
    pub rejected_concurrency: u64,
    /// Connections closed with `421` after `max_messages_per_connection`.
    pub rejected_max_messages: u64,
    /// Messages accepted (final 250 to DATA or BDAT LAST).
    pub messages_accepted: u64,
    /// Recipients of accepted messages.
    pub recipients_accepted: u64,
    /// Recipients answered 4xx.
    pub tempfailed: u64,
    /// Recipients answered 5xx.
    pub permfailed: u64,
    /// Recipients greylisted.
    pub greylisted: u64,
    /// Recipients refused by a rate limit.
    pub rate_limited: u64,
    /// Connections and recipients answered 421 inside a suspension window.
    #[serde(default)]
    pub suspended: u64,
    /// Accepted (Message-ID, recipient) pairs seen before.
    pub duplicates: u64,
    /// Seconds after start when the last message was accepted.
    #[serde(default)]
    pub last_accepted_secs: Option<f64>,
    /// Messages accepted through DATA.
    pub data_transactions: u64,
    /// Messages accepted through BDAT.
    pub bdat_transactions: u64,
    /// Successful STARTTLS handshakes.
    pub tls_sessions: u64,
    /// Successful AUTH exchanges.
    pub auth_sessions: u64,
    /// Commands that arrived before the reply to the previous one was sent
    /// (evidence that the client pipelined).
    pub pipelined_commands: u64,
    /// Syntax errors and out-of-sequence commands.
    pub protocol_errors: u64,
    /// Highest number of messages accepted within one wall-clock second.
    pub peak_rate: u64,
    /// Peak concurrent connections per source IP.
    pub peak_connections_per_ip: BTreeMap<String, u64>,
    /// Counters per recipient domain.
    pub domains: BTreeMap<String, DomainReport>,
}
