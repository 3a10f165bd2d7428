//! Traffic shaping: how fast and how wide each destination is fed.
//!
//! - [`controller`]: the adaptive AIMD controller per destination (sans-IO);
//! - [`bucket`]: token buckets for static message-rate limits and the pace;
//! - [`rules`]: response rules (reply code + regex → action);
//! - [`warmup`]: daily caps on a curve for new sending IPs;
//! - [`source`]: connecting from a chosen local source address.
//!
//! A [`Shaper`] lives on each destination and combines them: the static
//! limits (never exceeded), the controller (below them), the warm-up cap
//! and the source-address pool. The engine asks it whether a connection may
//! start ([`Shaper::gate`], [`Shaper::connection_cap`]) and a connection asks
//! it before each transaction ([`Shaper::admit`]); outcomes flow back as
//! [`controller::Signal`]s. Everything is shard-local: queue-wide limits
//! that apply to the whole node are divided evenly among the shards.

pub mod bucket;
pub mod checkpoint;
pub mod controller;
pub mod glue;
pub mod pools;
pub mod rules;
pub mod source;
pub mod warmup;

use bucket::{Bucket, Buckets, RateLimits};
use controller::{Change, Controller};
use pools::SourcePool;
use rules::RuleConfig;
use serde::Deserialize;
use std::cell::RefCell;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use warmup::{Warmup, WarmupConfig};

/// Shaping keys of `[delivery]` that queues inherit, and the rule sources.
#[derive(Debug, Clone)]
pub struct ShapingDefaults {
    /// Per-destination message-rate limits.
    pub max_messages: RateLimits,
    /// Local source addresses connections are made from (empty: the
    /// kernel's choice).
    pub source_ips: Vec<IpAddr>,
    /// Connections per destination per source address.
    pub max_connections_per_source_ip: Option<usize>,
    /// Source pools chosen by sender domain.
    pub source_pools: Vec<pools::SourcePoolConfig>,
    /// Warm-up schedule.
    pub warmup: Option<WarmupConfig>,
    /// Whether the adaptive controller runs.
    pub adaptive: bool,
    /// The rules file, tried first.
    pub rules_file: Option<PathBuf>,
    /// Inline rules, after the file.
    pub rules: Vec<RuleConfig>,
    /// Whether the embedded default rules follow.
    pub default_rules: bool,
    /// Shards that share node-wide (queue) limits.
    pub shards: usize,
}

impl Default for ShapingDefaults {
    fn default() -> Self {
        ShapingDefaults {
            max_messages: RateLimits::default(),
            source_ips: Vec::new(),
            max_connections_per_source_ip: None,
            source_pools: Vec::new(),
            warmup: None,
            adaptive: true,
            rules_file: None,
            rules: Vec::new(),
            default_rules: true,
            shards: 1,
        }
    }
}

/// The shaping keys a `[[delivery.queues]]` entry may set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueShapingConfig {
    /// Per-destination message-rate limits.
    pub max_messages: Option<RateLimits>,
    /// Message-rate limits for the whole queue on the whole node.
    pub queue_max_messages: Option<RateLimits>,
    /// Source addresses.
    pub source_ips: Option<Vec<IpAddr>>,
    /// Connections per destination per source address.
    pub max_connections_per_source_ip: Option<usize>,
    /// Warm-up schedule.
    pub warmup: Option<WarmupConfig>,
    /// Whether the adaptive controller runs.
    pub adaptive: Option<bool>,
}

/// A queue's shaping, compiled, on one shard.
#[derive(Debug)]
pub struct QueueShaping {
    /// Per-destination limits.
    pub max_messages: RateLimits,
    /// This shard's share of the queue-wide limits.
    pub queue_max_messages: RateLimits,
    queue_buckets: RefCell<Buckets>,
    /// Source addresses.
    pub source_ips: Vec<IpAddr>,
    /// Connections per destination per source address.
    pub max_connections_per_source_ip: usize,
    /// Warm-up schedule.
    pub warmup: Option<Warmup>,
    /// Whether the adaptive controller runs.
    pub adaptive: bool,
}

impl QueueShaping {
    /// Compiles a queue's shaping from its keys and the defaults.
    pub fn new(c: &QueueShapingConfig, d: &ShapingDefaults) -> Result<QueueShaping, String> {
        let max_messages = c.max_messages.unwrap_or(d.max_messages);
        max_messages
            .validate()
            .map_err(|e| format!("max_messages: {e}"))?;
        let queue_total = c.queue_max_messages.unwrap_or_default();
        queue_total
            .validate()
            .map_err(|e| format!("queue_max_messages: {e}"))?;
        let queue_max_messages = queue_total.divided(d.shards);
        let warmup = match c.warmup.as_ref().or(d.warmup.as_ref()) {
            Some(w) => Some(Warmup::new(w)?),
            None => None,
        };
        let per_ip = c
            .max_connections_per_source_ip
            .or(d.max_connections_per_source_ip);
        if per_ip == Some(0) {
            return Err("max_connections_per_source_ip: must be at least 1".into());
        }
        Ok(QueueShaping {
            max_messages,
            queue_max_messages,
            queue_buckets: RefCell::new(queue_max_messages.buckets()),
            source_ips: c.source_ips.clone().unwrap_or_else(|| d.source_ips.clone()),
            max_connections_per_source_ip: per_ip.unwrap_or(usize::MAX),
            warmup,
            adaptive: c.adaptive.unwrap_or(d.adaptive),
        })
    }

    /// The addresses and warm-up a destination of this queue sends under:
    /// its sender pool's where it has one, else the queue's.
    pub fn sources<'a>(&'a self, pool: Option<&'a SourcePool>) -> Sources<'a> {
        match pool {
            None => Sources {
                ips: &self.source_ips,
                per_ip: self.max_connections_per_source_ip,
                warmup: self.warmup.as_ref(),
            },
            Some(p) => Sources {
                ips: &p.source_ips,
                per_ip: p
                    .max_connections_per_source_ip
                    .unwrap_or(self.max_connections_per_source_ip),
                warmup: p.warmup.as_ref().or(self.warmup.as_ref()),
            },
        }
    }
}

/// Where a destination's connections come from and how its daily volume
/// is capped: a sender pool's settings or its queue's.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// Local addresses (empty: the kernel's choice).
    pub ips: &'a [IpAddr],
    /// Connections per destination per address.
    pub per_ip: usize,
    /// Warm-up schedule.
    pub warmup: Option<&'a Warmup>,
}

impl Sources<'_> {
    /// Connections the addresses allow per destination.
    fn capacity(&self) -> usize {
        if self.ips.is_empty() {
            self.per_ip
        } else {
            self.ips.len().saturating_mul(self.per_ip)
        }
    }
}

/// What a destination's shaping state would lose if it were forgotten
/// ([`Shaper::retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Nothing a new shaper would not have.
    Nothing,
    /// Limits learned from the receiver's replies.
    Learned,
    /// State in force now (suspension, refilling buckets, a wake-up).
    Live,
}

/// Why a destination or transaction must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The pace or a rate limit: a token comes at this time.
    Pace(Instant),
    /// Suspended or over the warm-up cap until then: close connections.
    Closed(Instant),
}

/// Every source address is at its per-destination connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcesBusy;

/// One destination's shaping state.
#[derive(Debug, Default)]
pub struct Shaper {
    /// The adaptive controller.
    pub ctl: Controller,
    buckets: Buckets,
    /// The queue (by address) the buckets were made for.
    buckets_for: usize,
    pace: Option<Bucket>,
    day: i64,
    sent_today: u64,
    per_ip: Vec<(IpAddr, usize)>,
    avoid_mx: Option<(String, Instant)>,
    /// A wake-up task is armed for the end of a wait.
    pub(crate) wake_armed: bool,
}

/// Seconds until the next UTC midnight.
fn until_midnight(unix: u64) -> Duration {
    Duration::from_secs(86_400 - unix % 86_400)
}

impl Shaper {
    fn sync_queue(&mut self, q: &QueueShaping) {
        let id = q as *const QueueShaping as usize;
        if self.buckets_for != id {
            self.buckets_for = id;
            self.buckets = q.max_messages.buckets();
        }
    }

    /// Messages sent today (UTC) and today's warm-up cap.
    pub fn warmup_state(&self, src: Sources<'_>, unix: u64) -> Option<(u64, u64)> {
        let w = src.warmup?;
        let day = Warmup::day_of(unix);
        let sent = if day == self.day { self.sent_today } else { 0 };
        w.cap(day).map(|cap| (sent, cap))
    }

    /// Messages counted against the warm-up cap on the day counted last,
    /// if any.
    pub fn warmup_count(&self) -> Option<(i64, u64)> {
        (self.sent_today > 0).then_some((self.day, self.sent_today))
    }

    /// Takes the warm-up count a previous run left for `day`.
    pub fn restore_warmup(&mut self, day: i64, sent: u64) {
        self.day = day;
        self.sent_today = sent;
    }

    /// Whether anything may be sent now: closed while suspended and while
    /// today's warm-up cap is used up.
    pub fn gate(
        &mut self,
        q: &QueueShaping,
        src: Sources<'_>,
        now: Instant,
        unix: u64,
    ) -> Option<Instant> {
        if q.adaptive && self.ctl.is_suspended(now) {
            return self.ctl.suspended_until();
        }
        if let Some((sent, cap)) = self.warmup_state(src, unix) {
            if sent >= cap {
                return Some(now + until_midnight(unix));
            }
        }
        None
    }

    /// Connections allowed now under a static limit of `max`: the static
    /// limit, the controller's cap and the source pool's capacity.
    pub fn connection_cap(&self, q: &QueueShaping, src: Sources<'_>, max: usize) -> usize {
        let ctl = if q.adaptive {
            self.ctl.concurrency(max)
        } else {
            max
        };
        ctl.min(max).min(src.capacity()).max(1)
    }

    /// A transaction may start now (its tokens are taken), or must wait.
    pub fn admit(
        &mut self,
        q: &QueueShaping,
        src: Sources<'_>,
        now: Instant,
        unix: u64,
    ) -> Result<(), Wait> {
        if let Some(t) = self.gate(q, src, now, unix) {
            return Err(Wait::Closed(t));
        }
        self.sync_queue(q);
        let mut wait = self.buckets.check(now).err();
        if !q.queue_max_messages.is_empty() {
            if let Err(w) = q.queue_buckets.borrow_mut().check(now) {
                wait = Some(wait.map_or(w, |x| x.max(w)));
            }
        }
        let rate = if q.adaptive { self.ctl.rate() } else { None };
        let mut paced = false;
        match rate {
            None => self.pace = None,
            Some(r) => {
                let pace = self.pace.get_or_insert_with(|| Bucket::new(r, 1.0));
                if (pace.rate() - r).abs() > f64::EPSILON {
                    pace.set_rate(r, now);
                }
                if let Err(w) = pace.check(now) {
                    paced = true;
                    wait = Some(wait.map_or(w, |x| x.max(w)));
                }
            }
        }
        if let Some(w) = wait {
            if paced {
                self.ctl.rate_gated(now);
            }
            return Err(Wait::Pace(now + w));
        }
        self.buckets.take();
        if !q.queue_max_messages.is_empty() {
            q.queue_buckets.borrow_mut().take();
        }
        if let Some(p) = self.pace.as_mut() {
            p.take();
        }
        if src.warmup.is_some() {
            let day = Warmup::day_of(unix);
            if day != self.day {
                self.day = day;
                self.sent_today = 0;
            }
            self.sent_today += 1;
        }
        Ok(())
    }

    /// Picks the source address with the fewest of this destination's
    /// connections, under the per-address limit. `Ok(None)`: no pool;
    /// `Err`: every address is at its limit.
    pub fn take_source(&mut self, src: Sources<'_>) -> Result<Option<IpAddr>, SourcesBusy> {
        if src.ips.is_empty() {
            return Ok(None);
        }
        let count = |ip: &IpAddr, v: &[(IpAddr, usize)]| {
            v.iter().find(|(x, _)| x == ip).map_or(0, |(_, n)| *n)
        };
        let best = src
            .ips
            .iter()
            .map(|ip| (*ip, count(ip, &self.per_ip)))
            .filter(|(_, n)| *n < src.per_ip)
            .min_by_key(|(_, n)| *n);
        let Some((ip, _)) = best else {
            return Err(SourcesBusy);
        };
        match self.per_ip.iter_mut().find(|(x, _)| *x == ip) {
            Some(e) => e.1 += 1,
            None => self.per_ip.push((ip, 1)),
        }
        Ok(Some(ip))
    }

    /// A connection from `ip` ended.
    pub fn release_source(&mut self, ip: IpAddr) {
        if let Some(e) = self.per_ip.iter_mut().find(|(x, _)| *x == ip) {
            e.1 = e.1.saturating_sub(1);
        }
    }

    /// What forgetting this state at `now` would lose. `Live`: a
    /// suspension or an avoided MX still running, a static rate limit or
    /// the pace not yet refilled (a new shaper would start with a full
    /// burst), a wake-up armed. `Learned`: the controller holds a rate or
    /// connection cap a receiver's throttling taught it; a new shaper would
    /// start at full speed, so this is kept far longer than an idle
    /// destination's (until the receiver has surely forgotten us too).
    /// Warm-up counts are handed back to the engine before the state goes.
    pub fn retention(&mut self, now: Instant) -> Retention {
        let live = self.ctl.suspended_until().is_some_and(|t| now < t)
            || self.avoided_mx(now).is_some()
            || !self.buckets.all_full(now)
            || self.pace.as_mut().is_some_and(|p| !p.is_full(now))
            || self.wake_armed;
        if live {
            Retention::Live
        } else if self.ctl.rate().is_some() || self.ctl.concurrency_cap().is_some() {
            Retention::Learned
        } else {
            Retention::Nothing
        }
    }

    /// Avoid the MX host `name` for `d` (a `next-mx` rule).
    pub fn avoid_mx(&mut self, name: &str, until: Instant) {
        self.avoid_mx = Some((name.to_string(), until));
    }

    /// The MX host to avoid now, if any.
    pub fn avoided_mx(&self, now: Instant) -> Option<&str> {
        match &self.avoid_mx {
            Some((n, until)) if now < *until => Some(n),
            _ => None,
        }
    }

    /// Writes a log line for each controller state change.
    pub fn log_changes(&mut self, destination: &str, now: Instant) {
        while let Some(c) = self.ctl.poll_change() {
            let rate = self.ctl.rate().map(|r| (r * 10.0).round() / 10.0);
            let conc = self.ctl.concurrency_cap();
            let signal = self.ctl.last_signal().unwrap_or("");
            match c {
                Change::Increased => {
                    tracing::debug!(destination, rate, connections = conc, "shaping: increased")
                }
                Change::Decreased => tracing::info!(
                    destination,
                    rate,
                    connections = conc,
                    signal,
                    "shaping: throttled"
                ),
                Change::Suspended(until) => tracing::info!(
                    destination,
                    secs = until.saturating_duration_since(now).as_secs(),
                    signal,
                    "shaping: suspended"
                ),
                Change::Probing => tracing::info!(destination, "shaping: suspension over, probing"),
                Change::Resumed => {
                    tracing::info!(destination, rate, "shaping: probe accepted, resuming")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(c: QueueShapingConfig) -> QueueShaping {
        QueueShaping::new(&c, &ShapingDefaults::default()).unwrap()
    }

    #[test]
    fn static_limits_and_the_pace_gate_transactions() {
        let q = queue(QueueShapingConfig {
            max_messages: Some(RateLimits {
                per_second: Some(5.0),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut s = Shaper::default();
        let t0 = Instant::now();
        assert!(s.admit(&q, q.sources(None), t0, 0).is_ok());
        match s.admit(&q, q.sources(None), t0, 0) {
            Err(Wait::Pace(t)) => assert!(t > t0 && t <= t0 + Duration::from_millis(201)),
            other => panic!("{other:?}"),
        }
        assert!(s
            .admit(&q, q.sources(None), t0 + Duration::from_millis(200), 0)
            .is_ok());
    }

    #[test]
    fn the_warmup_cap_closes_the_destination_until_midnight() {
        let q = queue(QueueShapingConfig {
            warmup: Some(WarmupConfig {
                start: "1970-01-01".into(),
                daily: vec![2, 4],
                after: warmup::After::Unlimited,
            }),
            ..Default::default()
        });
        let mut s = Shaper::default();
        let t0 = Instant::now();
        let noon = 43_200;
        assert!(s.admit(&q, q.sources(None), t0, noon).is_ok());
        assert!(s.admit(&q, q.sources(None), t0, noon).is_ok());
        match s.admit(&q, q.sources(None), t0, noon) {
            Err(Wait::Closed(t)) => assert_eq!(t - t0, Duration::from_secs(43_200)),
            other => panic!("{other:?}"),
        }
        // Day 1: cap 4; day 2: unlimited.
        for _ in 0..4 {
            assert!(s.admit(&q, q.sources(None), t0, 86_400 + 1).is_ok());
        }
        assert!(s.admit(&q, q.sources(None), t0, 86_400 + 2).is_err());
        for _ in 0..10 {
            assert!(s.admit(&q, q.sources(None), t0, 2 * 86_400).is_ok());
        }
    }

    #[test]
    fn sources_are_balanced_under_their_limit() {
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let q = queue(QueueShapingConfig {
            source_ips: Some(vec![a, b]),
            max_connections_per_source_ip: Some(2),
            ..Default::default()
        });
        let mut s = Shaper::default();
        assert_eq!(s.connection_cap(&q, q.sources(None), 20), 4);
        let got: Vec<_> = (0..4)
            .map(|_| s.take_source(q.sources(None)).unwrap())
            .collect();
        assert_eq!(got.iter().filter(|x| **x == Some(a)).count(), 2);
        assert_eq!(s.take_source(q.sources(None)), Err(SourcesBusy));
        s.release_source(b);
        assert_eq!(s.take_source(q.sources(None)), Ok(Some(b)));
    }

    #[test]
    fn queue_limits_are_divided_among_shards() {
        let d = ShapingDefaults {
            shards: 4,
            ..Default::default()
        };
        let q = QueueShaping::new(
            &QueueShapingConfig {
                queue_max_messages: Some(RateLimits {
                    per_second: Some(100.0),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &d,
        )
        .unwrap();
        assert_eq!(q.queue_max_messages.per_second, Some(25.0));
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[test]
    fn what_forgetting_a_shaper_would_lose() {
        let now = Instant::now();
        let mut fresh = Shaper::default();
        assert_eq!(fresh.retention(now), Retention::Nothing);

        let mut avoiding = Shaper::default();
        avoiding.avoid_mx("mx1.test", now + Duration::from_secs(60));
        assert_eq!(avoiding.retention(now), Retention::Live);
        assert_eq!(
            avoiding.retention(now + Duration::from_secs(61)),
            Retention::Nothing
        );

        let mut suspended = Shaper::default();
        suspended.ctl.suspend(now, Duration::from_secs(60), "test");
        assert_eq!(suspended.retention(now), Retention::Live);

        // A receiver's throttling taught it a limit: kept, but not live.
        let mut taught = Shaper::default();
        taught.ctl.throttled(now, 0.5, "421 slow down");
        assert!(
            taught.ctl.rate().is_some() || taught.ctl.concurrency_cap().is_some(),
            "the throttle set no limit"
        );
        assert_eq!(taught.retention(now), Retention::Learned);
    }
}
