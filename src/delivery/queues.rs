//! Delivery queues: the *specific* queues an operator configures (one
//! domain, a list of domains, or every domain whose MX matches a pattern
//! such as `*.google.com`) and the *general* queue for everything else.
//!
//! A queue is a set of limits and policies shared by its destinations:
//! connection limits (for the whole queue on this shard and per
//! destination), messages per connection, recipients per transaction, idle
//! timeout, retry schedule, expiry, STARTTLS policy and an optional
//! fallback route after N failed attempts. Destinations keep their own
//! recipient queues; the queue is what they have in common.
//!
//! Domain lists are matched when a destination is first seen; MX patterns
//! only once its MX hosts are known, so a destination starts in the general
//! queue and moves to its provider's queue after the first resolution
//! (before its first connection).

use crate::config::{OutboundTls, Seconds};
use crate::delivery::retry::{RetryConfig, RetrySchedule};
use crate::delivery::shaping::bucket::RateLimits;
use crate::delivery::shaping::pools::SourcePools;
use crate::delivery::shaping::rules::Rules;
use crate::delivery::shaping::{QueueShaping, QueueShapingConfig, ShapingDefaults};
use crate::dns::Destination;
use crate::smtp::client::{ClientConfig, TlsPolicy};
use serde::Deserialize;
use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// `[[delivery.queues]]`: a specific queue. Every limit left out takes the
/// value from `[delivery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Name used in the delivery log and metrics.
    pub name: String,
    /// Domains (exact, or `*.suffix` for every name below the suffix).
    #[serde(default)]
    pub domains: Vec<String>,
    /// MX host patterns (`*.google.com`, `mx.example.net`): every domain
    /// with an exchanger matching one joins the queue.
    #[serde(default)]
    pub mx: Vec<String>,
    /// Connections for the whole queue, on each shard.
    pub max_connections: Option<usize>,
    /// Connections for the whole queue on the whole node (a provider):
    /// each shard gets an even share, at least one.
    #[serde(default)]
    pub queue_max_connections: Option<usize>,
    /// Connections per destination, on each shard.
    pub max_connections_per_destination: Option<usize>,
    /// Connections per destination kept open while idle.
    pub min_connections_per_destination: Option<usize>,
    /// Transactions per connection.
    pub max_messages_per_connection: Option<usize>,
    /// RCPTs per transaction.
    pub max_rcpt_per_txn: Option<usize>,
    /// Idle connections close after this long.
    pub idle_timeout: Option<Seconds>,
    /// Deferred recipients bounce after this long.
    pub message_expiry: Option<Seconds>,
    /// Retry schedule.
    pub retry: Option<RetryConfig>,
    /// STARTTLS policy.
    pub tls: Option<OutboundTls>,
    /// Where recipients go after repeated failures.
    pub fallback: Option<FallbackConfig>,
    /// Messages per second/minute/hour/day to each destination.
    #[serde(default)]
    pub max_messages: Option<RateLimits>,
    /// Messages per second/minute/hour/day for the whole queue on the whole
    /// node (each shard gets an even share).
    #[serde(default)]
    pub queue_max_messages: Option<RateLimits>,
    /// Local source addresses for its connections.
    #[serde(default)]
    pub source_ips: Option<Vec<std::net::IpAddr>>,
    /// Connections per destination per source address.
    #[serde(default)]
    pub max_connections_per_source_ip: Option<usize>,
    /// Warm-up schedule (daily caps per destination).
    #[serde(default)]
    pub warmup: Option<crate::delivery::shaping::warmup::WarmupConfig>,
    /// Whether the adaptive feed-rate controller runs.
    #[serde(default)]
    pub adaptive: Option<bool>,
}

impl QueueConfig {
    fn shaping(&self) -> QueueShapingConfig {
        QueueShapingConfig {
            max_messages: self.max_messages,
            queue_max_messages: self.queue_max_messages,
            source_ips: self.source_ips.clone(),
            max_connections_per_source_ip: self.max_connections_per_source_ip,
            warmup: self.warmup.clone(),
            adaptive: self.adaptive,
        }
    }
}

/// A queue's fallback route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Failed attempts at the normal destination before the fallback is used.
    pub after_attempts: u32,
    /// Hosts to relay through, as in `[[dns.routes]]` (`127.0.0.5:2525`,
    /// `relay.example.net`, `relay.example.net:587`).
    pub hosts: Vec<String>,
}

/// The `[delivery]` values a queue inherits.
#[derive(Debug, Clone)]
pub struct QueueDefaults {
    /// Our EHLO name.
    pub ehlo_name: String,
    /// Per-destination connections.
    pub max_connections_per_destination: usize,
    /// Idle connections kept per destination.
    pub min_connections_per_destination: usize,
    /// Transactions per connection.
    pub max_messages_per_connection: usize,
    /// RCPTs per transaction.
    pub max_rcpt_per_txn: usize,
    /// BDAT transactions in flight.
    pub max_pipelined_txns: usize,
    /// Use BDAT when offered.
    pub prefer_bdat: bool,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Expiry.
    pub message_expiry: Duration,
    /// Retry schedule.
    pub retry: RetrySchedule,
    /// STARTTLS policy.
    pub tls: OutboundTls,
    /// Default port for fallback hosts without one.
    pub smtp_port: u16,
    /// Traffic shaping: limits, sources, warm-up, rules, shard count.
    pub shaping: ShapingDefaults,
}

/// A queue's fallback, compiled.
#[derive(Debug)]
pub struct Fallback {
    /// Attempts before the fallback takes over.
    pub after_attempts: u32,
    /// Where to.
    pub target: Rc<crate::dns::RouteTarget>,
}

/// One queue on one shard: its limits and its live connection count.
#[derive(Debug)]
pub struct Queue {
    /// `general` or the configured name.
    pub name: Rc<str>,
    /// Connections for the whole queue.
    pub max_connections: usize,
    /// Connections per destination.
    pub max_connections_per_destination: usize,
    /// Idle connections kept per destination.
    pub min_connections_per_destination: usize,
    /// Transactions per connection.
    pub max_messages_per_connection: usize,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Expiry.
    pub message_expiry: Duration,
    /// Retry schedule.
    pub retry: RetrySchedule,
    /// The SMTP client settings its connections use.
    pub client: Arc<ClientConfig>,
    /// Fallback route.
    pub fallback: Option<Fallback>,
    /// Connections open now.
    pub(super) active: Cell<usize>,
    /// Paused by the operator (`sluicectl pause --queue`).
    pub(super) paused: Cell<bool>,
    /// Rate limits, source addresses, warm-up, controller switch.
    pub shaping: QueueShaping,
}

impl Queue {
    /// The general queue: `[delivery]` values, limited by the shard
    /// budget alone.
    pub fn general(d: &QueueDefaults) -> Result<Queue, String> {
        let shaping = QueueShaping::new(&QueueShapingConfig::default(), &d.shaping)
            .map_err(|e| format!("delivery: {e}"))?;
        Ok(Queue {
            name: Rc::from("general"),
            max_connections: usize::MAX,
            max_connections_per_destination: d.max_connections_per_destination,
            min_connections_per_destination: d.min_connections_per_destination,
            max_messages_per_connection: d.max_messages_per_connection,
            idle_timeout: d.idle_timeout,
            message_expiry: d.message_expiry,
            retry: d.retry.clone(),
            client: Arc::new(client_config(d, d.max_rcpt_per_txn, d.tls)),
            fallback: None,
            active: Cell::new(0),
            paused: Cell::new(false),
            shaping,
        })
    }

    /// A specific queue from its configuration; without `max_connections`
    /// only the shard budget limits it.
    pub fn specific(c: &QueueConfig, d: &QueueDefaults) -> Result<Queue, String> {
        let fallback = match &c.fallback {
            None => None,
            Some(f) => Some(Fallback {
                after_attempts: f.after_attempts.max(1),
                target: Rc::new(
                    crate::dns::RouteTarget::fallback(&f.hosts, d.smtp_port)
                        .map_err(|e| format!("queue {}: fallback: {e}", c.name))?,
                ),
            }),
        };
        let shaping = QueueShaping::new(&c.shaping(), &d.shaping)
            .map_err(|e| format!("queue {}: {e}", c.name))?;
        let node_share = match c.queue_max_connections {
            Some(0) => {
                return Err(format!(
                    "queue {}: queue_max_connections: must be at least 1",
                    c.name
                ))
            }
            // Never above the node-wide limit, unless it is below the
            // number of shards: every shard needs one to reach its domains.
            Some(n) => (n / d.shaping.shards.max(1)).max(1),
            None => usize::MAX,
        };
        Ok(Queue {
            name: Rc::from(c.name.as_str()),
            max_connections: c
                .max_connections
                .unwrap_or(usize::MAX)
                .min(node_share)
                .max(1),
            max_connections_per_destination: c
                .max_connections_per_destination
                .unwrap_or(d.max_connections_per_destination)
                .max(1),
            min_connections_per_destination: c
                .min_connections_per_destination
                .unwrap_or(d.min_connections_per_destination),
            max_messages_per_connection: c
                .max_messages_per_connection
                .unwrap_or(d.max_messages_per_connection)
                .max(1),
            idle_timeout: c.idle_timeout.map_or(d.idle_timeout, |s| s.0),
            message_expiry: c.message_expiry.map_or(d.message_expiry, |s| s.0),
            retry: c.retry.as_ref().map_or(d.retry.clone(), |r| r.schedule()),
            client: Arc::new(client_config(
                d,
                c.max_rcpt_per_txn.unwrap_or(d.max_rcpt_per_txn),
                c.tls.unwrap_or(d.tls),
            )),
            fallback,
            active: Cell::new(0),
            paused: Cell::new(false),
            shaping,
        })
    }

    /// Connections open now for this queue.
    pub fn active(&self) -> usize {
        self.active.get()
    }
}

fn client_config(d: &QueueDefaults, max_rcpt: usize, tls: OutboundTls) -> ClientConfig {
    ClientConfig {
        ehlo_name: d.ehlo_name.clone(),
        max_rcpt_per_txn: max_rcpt.max(1),
        prefer_bdat: d.prefer_bdat,
        max_pipelined_txns: d.max_pipelined_txns.max(1),
        tls_policy: match tls {
            OutboundTls::None => TlsPolicy::Disabled,
            OutboundTls::Opportunistic => TlsPolicy::Opportunistic,
            OutboundTls::Required => TlsPolicy::Required,
        },
        auth: None,
        timeouts: Default::default(),
    }
}

/// Name patterns: exact names and `*.suffix` wildcards (names below the
/// suffix). Lower case, no trailing dot.
#[derive(Debug, Default)]
pub(crate) struct Patterns {
    exact: HashSet<String>,
    suffixes: HashSet<String>,
}

impl Patterns {
    pub(crate) fn new(list: &[String]) -> Result<Patterns, String> {
        let mut p = Patterns::default();
        for raw in list {
            let s = crate::shard::hash::canonical_pattern(raw);
            match s.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                    p.suffixes.insert(suffix.to_string());
                }
                None if !s.is_empty() && !s.contains('*') => {
                    p.exact.insert(s);
                }
                _ => return Err(format!("`{raw}`: expected a name or *.suffix")),
            }
        }
        Ok(p)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        if self.exact.contains(name) {
            return true;
        }
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if self.suffixes.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    }
}

/// A shard's queues and the rules that place a destination in one.
#[derive(Debug)]
pub struct Queues {
    general: Rc<Queue>,
    specific: Vec<(Patterns, Patterns, Rc<Queue>)>,
    any_mx: bool,
    rules: Rules,
    pools: SourcePools,
}

impl Queues {
    /// Builds the queues of one shard.
    pub fn new(configs: &[QueueConfig], defaults: &QueueDefaults) -> Result<Queues, String> {
        let mut specific = Vec::new();
        let mut names = HashSet::new();
        for c in configs {
            if c.name.is_empty() || c.name == "general" || !names.insert(c.name.clone()) {
                return Err(format!(
                    "queue name `{}` is empty, reserved or used twice",
                    c.name
                ));
            }
            let domains =
                Patterns::new(&c.domains).map_err(|e| format!("queue {}: {e}", c.name))?;
            let mx = Patterns::new(&c.mx).map_err(|e| format!("queue {}: {e}", c.name))?;
            if domains.is_empty() && mx.is_empty() {
                return Err(format!("queue {}: needs `domains` or `mx`", c.name));
            }
            specific.push((domains, mx, Rc::new(Queue::specific(c, defaults)?)));
        }
        let any_mx = specific.iter().any(|(_, mx, _)| !mx.is_empty());
        let s = &defaults.shaping;
        let rules = Rules::build(s.rules_file.as_deref(), &s.rules, s.default_rules)?;
        let general = Rc::new(Queue::general(defaults)?);
        let taken: Vec<_> = std::iter::once(&general)
            .chain(specific.iter().map(|(_, _, q)| q))
            .flat_map(|q| q.shaping.source_ips.iter().copied())
            .collect();
        let pools = SourcePools::new(&s.source_pools, &taken)?;
        Ok(Queues {
            general,
            specific,
            any_mx,
            rules,
            pools,
        })
    }

    /// The response rules, compiled.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The source pools chosen by sender domain.
    pub fn pools(&self) -> &SourcePools {
        &self.pools
    }

    /// Whether any queue or pool has a warm-up schedule.
    pub fn any_warmup(&self) -> bool {
        self.all().any(|q| q.shaping.warmup.is_some()) || self.pools.any_warmup()
    }

    /// The general queue.
    pub fn general(&self) -> &Rc<Queue> {
        &self.general
    }

    /// The queue for `domain` by its name alone: the first specific queue
    /// listing it, else the general queue.
    pub fn for_domain(&self, domain: &str) -> Rc<Queue> {
        self.specific
            .iter()
            .find(|(d, _, _)| d.matches(domain))
            .map_or_else(|| self.general.clone(), |(_, _, q)| q.clone())
    }

    /// The first specific queue with an MX pattern matching one of the
    /// destination's hosts, if any.
    pub fn for_mx(&self, dest: &Destination) -> Option<Rc<Queue>> {
        if !self.any_mx {
            return None;
        }
        self.specific
            .iter()
            .find(|(_, mx, _)| dest.hosts.iter().any(|h| mx.matches(&h.name)))
            .map(|(_, _, q)| q.clone())
    }

    /// Every queue, general first.
    pub fn all(&self) -> impl Iterator<Item = &Rc<Queue>> {
        std::iter::once(&self.general).chain(self.specific.iter().map(|(_, _, q)| q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{DestinationKind, MxHost};

    fn defaults() -> QueueDefaults {
        QueueDefaults {
            ehlo_name: "me.test".into(),
            max_connections_per_destination: 20,
            min_connections_per_destination: 0,
            max_messages_per_connection: 1000,
            max_rcpt_per_txn: 100,
            max_pipelined_txns: 4,
            prefer_bdat: true,
            idle_timeout: Duration::from_secs(5),
            message_expiry: Duration::from_secs(86400),
            retry: RetrySchedule::default(),
            tls: OutboundTls::Opportunistic,
            smtp_port: 25,
            shaping: ShapingDefaults::default(),
        }
    }

    fn queue(name: &str, domains: &[&str], mx: &[&str]) -> QueueConfig {
        QueueConfig {
            name: name.into(),
            domains: domains.iter().map(|s| s.to_string()).collect(),
            mx: mx.iter().map(|s| s.to_string()).collect(),
            max_connections: Some(7),
            queue_max_connections: None,
            max_connections_per_destination: None,
            min_connections_per_destination: None,
            max_messages_per_connection: None,
            max_rcpt_per_txn: Some(10),
            idle_timeout: None,
            message_expiry: None,
            retry: None,
            tls: Some(OutboundTls::Required),
            fallback: None,
            max_messages: None,
            queue_max_messages: None,
            source_ips: None,
            max_connections_per_source_ip: None,
            warmup: None,
            adaptive: None,
        }
    }

    fn dest(hosts: &[&str]) -> Destination {
        Destination {
            domain: "x.test".into(),
            kind: DestinationKind::Mx,
            hosts: hosts
                .iter()
                .map(|h| MxHost {
                    name: h.to_string(),
                    preference: 10,
                    port: 25,
                    addrs: vec![],
                })
                .collect(),
            skipped: vec![],
        }
    }

    #[test]
    fn domains_and_mx_patterns_pick_the_queue_and_its_limits() {
        let qs = Queues::new(
            &[
                queue("big", &["big.test", "*.corp.test"], &[]),
                queue("google", &[], &["*.google.test"]),
            ],
            &defaults(),
        )
        .unwrap();
        assert_eq!(&*qs.for_domain("big.test").name, "big");
        assert_eq!(&*qs.for_domain("a.corp.test").name, "big");
        assert_eq!(&*qs.for_domain("corp.test").name, "general");
        assert_eq!(&*qs.for_domain("other.test").name, "general");
        let g = qs
            .for_mx(&dest(&["mx1.other.test", "alt2.aspmx.l.google.test"]))
            .unwrap();
        assert_eq!(&*g.name, "google");
        assert_eq!(g.max_connections, 7);
        assert_eq!(g.max_connections_per_destination, 20, "inherited");
        assert_eq!(g.client.max_rcpt_per_txn, 10);
        assert_eq!(g.client.tls_policy, TlsPolicy::Required);
        assert!(qs.for_mx(&dest(&["mx.other.test"])).is_none());
        assert_eq!(qs.general().max_connections, usize::MAX);
    }

    #[test]
    fn a_node_wide_connection_limit_is_shared_among_the_shards() {
        let mut d = defaults();
        d.shaping.shards = 4;
        let mut q = queue("p", &[], &["*.provider.test"]);
        q.max_connections = None;
        q.queue_max_connections = Some(10);
        assert_eq!(Queue::specific(&q, &d).unwrap().max_connections, 2);
        // The per-shard limit still applies when it is lower.
        q.max_connections = Some(1);
        assert_eq!(Queue::specific(&q, &d).unwrap().max_connections, 1);
        // Fewer than one per shard: one each, or no shard could reach them.
        q.max_connections = None;
        q.queue_max_connections = Some(3);
        assert_eq!(Queue::specific(&q, &d).unwrap().max_connections, 1);
        q.queue_max_connections = Some(0);
        assert!(Queue::specific(&q, &d).is_err());
    }

    #[test]
    fn bad_queue_definitions_are_refused_with_the_queue_name() {
        let d = defaults();
        let e = Queues::new(&[queue("q", &[], &[])], &d).unwrap_err();
        assert!(e.contains("queue q"), "{e}");
        let e = Queues::new(&[queue("q", &["a*.test"], &[])], &d).unwrap_err();
        assert!(e.contains("a*.test"), "{e}");
        let e = Queues::new(
            &[queue("q", &["a.test"], &[]), queue("q", &["b.test"], &[])],
            &d,
        )
        .unwrap_err();
        assert!(e.contains("used twice"), "{e}");
        let mut f = queue("q", &["a.test"], &[]);
        f.fallback = Some(FallbackConfig {
            after_attempts: 2,
            hosts: vec![],
        });
        assert!(Queues::new(&[f], &d).unwrap_err().contains("fallback"));
    }
}
