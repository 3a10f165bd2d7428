//! Resolver configuration: plain structs with public fields, a `Default`,
//! and serde `Deserialize` with `deny_unknown_fields`, so the config
//! module can embed them in the TOML schema (a typo is an error, not a
//! silently ignored key) and tests can fill in just what they need.
//!
//! Durations are written as `"2s"`, `"500ms"`, `"1h"`, `"1d"` or a bare
//! number of seconds; nameservers as `"127.0.0.53"`, `"127.0.0.1:5353"` or
//! `"[::1]:53"`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::error::ConfigError;
use super::resolv_conf::parse_nameserver;
use super::routes::{RouteConfig, SmarthostConfig};

/// Which address families are looked up for each exchanger, and in which
/// order its addresses are tried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FamilyPreference {
    /// A only.
    Ipv4Only,
    /// AAAA only.
    Ipv6Only,
    /// A and AAAA; IPv4 addresses first. The default: sending over IPv6
    /// needs matching reverse DNS and reputation, which many senders lack.
    #[default]
    PreferIpv4,
    /// A and AAAA; IPv6 addresses first.
    PreferIpv6,
}

/// Cache policy (per shard).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most entries (one per name and record type); the clock hand evicts
    /// beyond it. Default 100 000.
    pub capacity: usize,
    /// Lower clamp of every TTL, positive and negative. Default 30 s.
    #[serde(deserialize_with = "de_duration")]
    pub min_ttl: Duration,
    /// Upper clamp of positive TTLs. Default 1 day.
    #[serde(deserialize_with = "de_duration")]
    pub max_ttl: Duration,
    /// Upper clamp of negative TTLs (RFC 2308 §5). Default 1 hour.
    #[serde(deserialize_with = "de_duration")]
    pub max_negative_ttl: Duration,
    /// How long past expiry a positive answer may still be served while
    /// the nameservers fail (RFC 8767). Zero disables. Default 1 hour.
    #[serde(deserialize_with = "de_duration")]
    pub serve_stale: Duration,
    /// After a failed refresh, serve stale without asking again for this
    /// long (RFC 8767 "failure recheck"). Default 30 s.
    #[serde(deserialize_with = "de_duration")]
    pub stale_retry: Duration,
    /// A hit within the last this-many percent of an entry's TTL starts one
    /// background refresh. Zero disables. Default 10.
    pub refresh_ahead_percent: u8,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 100_000,
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(86_400),
            max_negative_ttl: Duration::from_secs(3_600),
            serve_stale: Duration::from_secs(3_600),
            stale_retry: Duration::from_secs(30),
            refresh_ahead_percent: 10,
        }
    }
}

/// Everything [`Resolver::new`](super::Resolver::new) needs.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverConfig {
    /// Nameservers to ask, in order. Empty: the `nameserver` lines of
    /// [`resolv_conf`](Self::resolv_conf). Never a public fallback.
    #[serde(deserialize_with = "de_nameservers")]
    pub nameservers: Vec<SocketAddr>,
    /// Read when `nameservers` is empty. Default `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// Wait for one answer from one server. Default 2 s.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Rounds over the nameserver list before giving up. Default 2.
    pub attempts: u32,
    /// Start each query at the next server in turn (spreads load) instead
    /// of at the server that last answered. Default false.
    pub rotate: bool,
    /// EDNS0 UDP payload size advertised (RFC 9715 / DNS flag day 2020).
    /// Default 1232.
    pub edns_payload: u16,
    /// Queries (sockets) in flight at once per shard; bounds file
    /// descriptors and bursts at the nameserver (with default socket
    /// buffers a loopback server began dropping datagrams at ~200
    /// outstanding queries). Default 128.
    pub max_concurrent_queries: usize,
    /// Most CNAME links followed for one name. Default 8.
    pub cname_limit: usize,
    /// Most exchangers kept per domain (after ordering). Default 5.
    pub max_mx_hosts: usize,
    /// Address families and their order. Default `prefer_ipv4`.
    pub family: FamilyPreference,
    /// Port of MX-derived hosts. Default 25.
    pub smtp_port: u16,
    /// Cache policy.
    pub cache: CacheConfig,
    /// Static routes; they bypass MX lookup.
    pub routes: Vec<RouteConfig>,
    /// Optional smarthost for everything (or the listed domains) not
    /// matched by a route.
    pub smarthost: Option<SmarthostConfig>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameservers: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            timeout: Duration::from_secs(2),
            attempts: 2,
            rotate: false,
            edns_payload: 1232,
            max_concurrent_queries: 128,
            cname_limit: 8,
            max_mx_hosts: 5,
            family: FamilyPreference::default(),
            smtp_port: 25,
            cache: CacheConfig::default(),
            routes: Vec::new(),
            smarthost: None,
        }
    }
}

impl ResolverConfig {
    /// Checks ranges (not the nameserver list, which may come from
    /// resolv.conf).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if self.timeout.is_zero() {
            return bad("timeout", "must be positive");
        }
        if self.attempts == 0 {
            return bad("attempts", "must be at least 1");
        }
        if self.edns_payload < 512 {
            return bad("edns_payload", "must be at least 512");
        }
        if self.max_concurrent_queries == 0 {
            return bad("max_concurrent_queries", "must be at least 1");
        }
        if self.max_mx_hosts == 0 {
            return bad("max_mx_hosts", "must be at least 1");
        }
        if self.cache.capacity == 0 {
            return bad("cache.capacity", "must be at least 1");
        }
        if self.cache.min_ttl > self.cache.max_ttl {
            return bad("cache.min_ttl", "is above cache.max_ttl");
        }
        let year = Duration::from_secs(365 * 86_400);
        let c = &self.cache;
        for (field, d) in [
            ("timeout", self.timeout),
            ("cache.max_ttl", c.max_ttl),
            ("cache.max_negative_ttl", c.max_negative_ttl),
            ("cache.serve_stale", c.serve_stale),
            ("cache.stale_retry", c.stale_retry),
        ] {
            if d > year {
                return bad(field, "must be at most 365 days");
            }
        }
        if self.cache.refresh_ahead_percent >= 100 {
            return bad("cache.refresh_ahead_percent", "must be below 100");
        }
        Ok(())
    }
}

/// Parses `"2s"`, `"500ms"`, `"5m"`, `"1h"`, `"1d"` or `"30"` (seconds):
/// the daemon's one duration syntax ([`crate::config::parse_duration`]).
pub fn parse_duration(text: &str) -> Option<Duration> {
    crate::config::parse_duration(text).ok()
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {t:?} (expected e.g. \"500ms\", \"2s\", \"1h\")"
            ))
        }),
    }
}

fn de_nameservers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            parse_nameserver(s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid nameserver {s:?} (expected an IP address, optionally with :port)"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("5 m"), Some(Duration::from_secs(300)));
        for bad in ["", "s", "2x", "-1s", "1.5s", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn defaults_validate() {
        ResolverConfig::default().validate().unwrap();
        let c = ResolverConfig {
            attempts: 0,
            ..ResolverConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("attempts"));
        let mut c = ResolverConfig::default();
        c.cache.refresh_ahead_percent = 100;
        assert!(c.validate().is_err());
    }
}
