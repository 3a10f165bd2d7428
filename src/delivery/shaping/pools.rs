//! Source pools chosen by sender domain (virtual MTAs for a brand or a
//! tenant): mail whose envelope sender is in one of a pool's domains goes
//! out from the pool's addresses, whatever queue its recipients are in.
//!
//! A pool splits each destination it sends to into its own sub-queue, as
//! PowerMTA does with a queue per domain and virtual MTA: the recipients
//! of the pool's senders wait at `(domain, pool)` with their own
//! connections, controller and per-destination limits, so a connection only
//! ever carries mail that may leave from its address. Receivers judge
//! reputation per sending address, which is why the controller is per
//! sub-queue too. The queue's limits (`max_connections`,
//! `queue_max_messages`) still bind all of a queue's sub-queues together.
//!
//! An address belongs to at most one pool and is not also in a queue's or
//! `[delivery]`'s `source_ips`: the per-address connection limit is then
//! counted in one place.

use super::warmup::{Warmup, WarmupConfig};
use crate::delivery::queues::Patterns;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::IpAddr;
use std::rc::Rc;

/// `[[delivery.source_pools]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePoolConfig {
    /// Name in the delivery log and the control plane.
    pub name: String,
    /// Envelope-sender domains (exact, or `*.suffix`) whose mail uses it.
    pub sender_domains: Vec<String>,
    /// The local addresses its connections are made from.
    pub source_ips: Vec<IpAddr>,
    /// Connections per destination per address (default: the queue's).
    #[serde(default)]
    pub max_connections_per_source_ip: Option<usize>,
    /// Warm-up schedule for these addresses (default: the queue's).
    #[serde(default)]
    pub warmup: Option<WarmupConfig>,
}

/// A pool, compiled.
#[derive(Debug)]
pub struct SourcePool {
    /// Its name.
    pub name: Rc<str>,
    /// Its addresses.
    pub source_ips: Vec<IpAddr>,
    /// Connections per destination per address, if set.
    pub max_connections_per_source_ip: Option<usize>,
    /// Its warm-up schedule, if set.
    pub warmup: Option<Warmup>,
}

/// Every pool of the configuration and the sender patterns that pick them.
#[derive(Debug, Default)]
pub struct SourcePools {
    pools: Vec<(Patterns, Rc<SourcePool>)>,
}

impl SourcePools {
    /// Compiles the pools; `taken` are the addresses queues already use.
    pub fn new(configs: &[SourcePoolConfig], taken: &[IpAddr]) -> Result<SourcePools, String> {
        let mut names = HashSet::new();
        let mut owners: Vec<(IpAddr, String)> = Vec::new();
        let mut pools = Vec::with_capacity(configs.len());
        for c in configs {
            let at = |e: String| format!("source pool {}: {e}", c.name);
            if c.name.is_empty() || c.name.contains(char::is_whitespace) || !names.insert(&c.name) {
                return Err(format!(
                    "source pool name `{}` is empty, has spaces or is used twice",
                    c.name
                ));
            }
            let senders = Patterns::new(&c.sender_domains).map_err(at)?;
            if senders.is_empty() {
                return Err(at("needs `sender_domains`".into()));
            }
            if c.source_ips.is_empty() {
                return Err(at("needs `source_ips`".into()));
            }
            for ip in &c.source_ips {
                if taken.contains(ip) {
                    return Err(at(format!(
                        "{ip} is also in a queue's source_ips; an address belongs to one pool"
                    )));
                }
                if let Some((_, other)) = owners.iter().find(|(x, _)| x == ip) {
                    return Err(at(format!("{ip} is also in source pool {other}")));
                }
                owners.push((*ip, c.name.clone()));
            }
            if c.max_connections_per_source_ip == Some(0) {
                return Err(at(
                    "max_connections_per_source_ip: must be at least 1".into()
                ));
            }
            let warmup = match &c.warmup {
                Some(w) => Some(Warmup::new(w).map_err(|e| at(format!("warmup: {e}")))?),
                None => None,
            };
            pools.push((
                senders,
                Rc::new(SourcePool {
                    name: Rc::from(c.name.as_str()),
                    source_ips: c.source_ips.clone(),
                    max_connections_per_source_ip: c.max_connections_per_source_ip,
                    warmup,
                }),
            ));
        }
        Ok(SourcePools { pools })
    }

    /// The pool for mail from `reverse_path` (none for the null sender and
    /// senders no pool lists).
    pub fn for_sender(&self, reverse_path: &str) -> Option<&Rc<SourcePool>> {
        if self.pools.is_empty() {
            return None;
        }
        let (_, domain) = reverse_path.rsplit_once('@')?;
        let domain = crate::shard::hash::canonical_domain(domain);
        self.pools
            .iter()
            .find(|(p, _)| p.matches(&domain))
            .map(|(_, pool)| pool)
    }

    /// Whether any pool has its own warm-up schedule.
    pub fn any_warmup(&self) -> bool {
        self.pools.iter().any(|(_, p)| p.warmup.is_some())
    }

    /// The pool called `name`.
    pub fn named(&self, name: &str) -> Option<&Rc<SourcePool>> {
        self.pools.iter().map(|(_, p)| p).find(|p| &*p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, senders: &[&str], ips: &[&str]) -> SourcePoolConfig {
        SourcePoolConfig {
            name: name.into(),
            sender_domains: senders.iter().map(|s| s.to_string()).collect(),
            source_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            max_connections_per_source_ip: None,
            warmup: None,
        }
    }

    #[test]
    fn senders_pick_their_pool() {
        let p = SourcePools::new(
            &[
                pool("news", &["news.example.com"], &["127.0.0.21"]),
                pool("tx", &["*.example.org"], &["127.0.0.22", "127.0.0.23"]),
            ],
            &[],
        )
        .unwrap();
        let name = |s: &str| p.for_sender(s).map(|p| p.name.to_string());
        assert_eq!(name("a@News.Example.com"), Some("news".into()));
        assert_eq!(name("a@mail.example.org"), Some("tx".into()));
        assert_eq!(name("a@example.org"), None);
        assert_eq!(name(""), None);
        assert_eq!(name("a@other.test"), None);
        assert_eq!(p.named("tx").map(|p| p.source_ips.len()), Some(2));
    }

    #[test]
    fn an_address_belongs_to_one_pool() {
        let e = SourcePools::new(
            &[
                pool("a", &["a.test"], &["127.0.0.21"]),
                pool("b", &["b.test"], &["127.0.0.21"]),
            ],
            &[],
        )
        .unwrap_err();
        assert!(e.contains("127.0.0.21 is also in source pool a"), "{e}");
        let taken = ["127.0.0.21".parse().unwrap()];
        let e = SourcePools::new(&[pool("a", &["a.test"], &["127.0.0.21"])], &taken).unwrap_err();
        assert!(e.contains("queue's source_ips"), "{e}");
        let e = SourcePools::new(&[pool("a", &[], &["127.0.0.21"])], &[]).unwrap_err();
        assert!(e.contains("sender_domains"), "{e}");
        let e = SourcePools::new(&[pool("a", &["a.test"], &[])], &[]).unwrap_err();
        assert!(e.contains("source_ips"), "{e}");
    }
}
