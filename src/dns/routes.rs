//! Static routes and the smarthost: configured next hops that bypass MX
//! lookup (explicit host names still get A/AAAA lookups, IP literals need
//! none).
//!
//! Matching order, most specific first: an exact route domain, then the
//! longest `*.suffix` wildcard route (which matches names *below* the
//! suffix, not the suffix itself), then the smarthost (every domain, or
//! only its listed domains/patterns), then normal MX resolution. Routes
//! are compiled once at start-up into hash maps, so a lookup costs one
//! probe per label of the domain.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use hickory_proto::rr::Name;
use serde::Deserialize;

use super::error::ConfigError;
use super::mx::DestinationKind;

/// `[[routes]]`: domains (exact or `*.suffix`) sent to explicit hosts.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `example.com` or `*.example.com`.
    pub domains: Vec<String>,
    /// Hosts in the order to try: `127.0.0.5:2525`, `[::1]:2525`,
    /// `mx.example.net`, `mx.example.net:587`. Default port: `smtp_port`.
    pub hosts: Vec<String>,
}

/// `[smarthost]`: a relay for everything not routed, or only for `domains`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmarthostConfig {
    /// Relay hosts, same syntax as [`RouteConfig::hosts`].
    pub hosts: Vec<String>,
    /// Domains or `*.suffix` patterns sent to the relay; empty = all.
    #[serde(default)]
    pub domains: Vec<String>,
}

/// One configured next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteHost {
    /// An IP literal: no lookup.
    Ip(SocketAddr),
    /// A host name (fully qualified, lower case) and port.
    Name(Name, u16),
}

/// A compiled route target: hosts that replace MX lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    /// Route or smarthost.
    pub(crate) kind: DestinationKind,
    /// Hosts in order.
    pub(crate) hosts: Vec<RouteHost>,
}

#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, Rc<RouteTarget>>,
    wildcard: HashMap<String, Rc<RouteTarget>>,
}

/// Compiled routes.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    routes: Table,
    smarthost: Option<(Rc<RouteTarget>, Option<Table>)>,
}

impl RouteTarget {
    /// A delivery queue's fallback route: `hosts` tried in order.
    pub fn fallback(hosts: &[String], default_port: u16) -> Result<RouteTarget, ConfigError> {
        Ok(RouteTarget {
            kind: DestinationKind::Route,
            hosts: parse_hosts(hosts, default_port)?,
        })
    }
}

impl Routes {
    /// Validates and compiles the configuration.
    pub(crate) fn new(
        routes: &[RouteConfig],
        smarthost: Option<&SmarthostConfig>,
        default_port: u16,
    ) -> Result<Self, ConfigError> {
        let mut table = Table::default();
        for r in routes {
            let target = Rc::new(RouteTarget {
                kind: DestinationKind::Route,
                hosts: parse_hosts(&r.hosts, default_port)?,
            });
            if r.domains.is_empty() {
                return Err(route_error(&r.hosts.join(","), "route without domains"));
            }
            for d in &r.domains {
                table.add(d, Rc::clone(&target))?;
            }
        }
        let smarthost = match smarthost {
            None => None,
            Some(s) => {
                let target = Rc::new(RouteTarget {
                    kind: DestinationKind::Smarthost,
                    hosts: parse_hosts(&s.hosts, default_port)?,
                });
                let only = if s.domains.is_empty() {
                    None
                } else {
                    let mut t = Table::default();
                    for d in &s.domains {
                        t.add(d, Rc::clone(&target))?;
                    }
                    Some(t)
                };
                Some((target, only))
            }
        };
        Ok(Routes {
            routes: table,
            smarthost,
        })
    }

    /// The target for `domain` (lower case, no trailing dot), if routed.
    pub(crate) fn find(&self, domain: &str) -> Option<Rc<RouteTarget>> {
        if let Some(t) = self.routes.find(domain) {
            return Some(t);
        }
        match &self.smarthost {
            Some((target, None)) => Some(Rc::clone(target)),
            Some((_, Some(only))) => only.find(domain),
            None => None,
        }
    }
}

impl Table {
    fn add(&mut self, pattern: &str, target: Rc<RouteTarget>) -> Result<(), ConfigError> {
        let p = normalise(pattern);
        let (map, key) = match p.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_string()),
            None => (&mut self.exact, p.clone()),
        };
        if key.is_empty() || key.contains('*') || Name::from_str_relaxed(&key).is_err() {
            return Err(route_error(pattern, "expected a domain or *.domain"));
        }
        if map.insert(key, target).is_some() {
            return Err(route_error(pattern, "listed twice"));
        }
        Ok(())
    }

    fn find(&self, domain: &str) -> Option<Rc<RouteTarget>> {
        if let Some(t) = self.exact.get(domain) {
            return Some(Rc::clone(t));
        }
        if self.wildcard.is_empty() {
            return None;
        }
        // Longest suffix first: for a.b.c try b.c, then c.
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(t) = self.wildcard.get(parent) {
                return Some(Rc::clone(t));
            }
            rest = parent;
        }
        None
    }
}

fn normalise(s: &str) -> String {
    crate::shard::hash::canonical_pattern(s)
}

fn route_error(entry: &str, reason: &str) -> ConfigError {
    ConfigError::Route {
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_hosts(hosts: &[String], default_port: u16) -> Result<Vec<RouteHost>, ConfigError> {
    if hosts.is_empty() {
        return Err(route_error("hosts", "at least one host is required"));
    }
    hosts.iter().map(|h| parse_host(h, default_port)).collect()
}

/// Parses `127.0.0.5:2525`, `[::1]:2525`, `::1`, `127.0.0.5`,
/// `mx.example.net` or `mx.example.net:587`.
pub(crate) fn parse_host(text: &str, default_port: u16) -> Result<RouteHost, ConfigError> {
    let t = text.trim();
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok(RouteHost::Ip(sa));
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(RouteHost::Ip(SocketAddr::new(ip, default_port)));
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<IpAddr>()
            .map(|ip| RouteHost::Ip(SocketAddr::new(ip, default_port)))
            .map_err(|_| route_error(text, "invalid IP literal"));
    }
    let (host, port) = match t.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| route_error(text, "invalid port"))?,
        ),
        None => (t, default_port),
    };
    let host = normalise(host);
    if host.is_empty() {
        return Err(route_error(text, "empty host name"));
    }
    let mut name = Name::from_str_relaxed(&host).map_err(|e| route_error(text, &e.to_string()))?;
    name.set_fqdn(true);
    Ok(RouteHost::Name(name.to_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(domains: &[&str], hosts: &[&str]) -> RouteConfig {
        RouteConfig {
            domains: domains.iter().map(|s| s.to_string()).collect(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn parses_host_specs() {
        let ip = |s: &str| RouteHost::Ip(s.parse().unwrap());
        assert_eq!(
            parse_host("127.0.0.5:2525", 25).unwrap(),
            ip("127.0.0.5:2525")
        );
        assert_eq!(parse_host("127.0.0.5", 25).unwrap(), ip("127.0.0.5:25"));
        assert_eq!(parse_host("[::1]:2526", 25).unwrap(), ip("[::1]:2526"));
        assert_eq!(parse_host("::1", 25).unwrap(), ip("[::1]:25"));
        assert_eq!(parse_host("[::1]", 26).unwrap(), ip("[::1]:26"));
        assert_eq!(
            parse_host("MX.Example.NET:587", 25).unwrap(),
            RouteHost::Name(Name::from_ascii("mx.example.net.").unwrap(), 587)
        );
        assert_eq!(
            parse_host("mx.example.net.", 25).unwrap(),
            RouteHost::Name(Name::from_ascii("mx.example.net.").unwrap(), 25)
        );
        for bad in [
            "mx.example.net:0",
            "mx.example.net:99999",
            "[nope]",
            "",
            "a..b",
        ] {
            assert!(parse_host(bad, 25).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_then_longest_wildcard_then_smarthost() {
        let routes = [
            route(&["example.com"], &["127.0.0.5:2525"]),
            route(&["*.example.com"], &["127.0.0.6"]),
            route(&["*.deep.example.com", "other.test."], &["127.0.0.7"]),
        ];
        let r = Routes::new(&routes, None, 25).unwrap();
        let first = |d: &str| r.find(d).map(|t| t.hosts[0].clone());
        let ip = |s: &str| Some(RouteHost::Ip(s.parse().unwrap()));
        assert_eq!(first("example.com"), ip("127.0.0.5:2525"));
        assert_eq!(first("a.example.com"), ip("127.0.0.6:25"));
        assert_eq!(first("x.deep.example.com"), ip("127.0.0.7:25"));
        assert_eq!(first("deep.example.com"), ip("127.0.0.6:25"));
        assert_eq!(first("other.test"), ip("127.0.0.7:25"));
        assert_eq!(first("example.org"), None);
        assert_eq!(first("notexample.com"), None);

        let all = SmarthostConfig {
            hosts: vec!["127.0.0.9:587".into()],
            domains: vec![],
        };
        let r = Routes::new(&routes, Some(&all), 25).unwrap();
        assert_eq!(
            r.find("example.org").unwrap().kind,
            DestinationKind::Smarthost
        );
        assert_eq!(r.find("example.com").unwrap().kind, DestinationKind::Route);

        let some = SmarthostConfig {
            hosts: vec!["relay.test".into()],
            domains: vec!["relayed.test".into(), "*.relayed.org".into()],
        };
        let r = Routes::new(&[], Some(&some), 25).unwrap();
        assert!(r.find("relayed.test").is_some());
        assert!(r.find("a.relayed.org").is_some());
        assert!(r.find("relayed.org").is_none());
        assert!(r.find("example.org").is_none());
    }

    #[test]
    fn rejects_bad_config() {
        let dup = [
            route(&["a.test"], &["127.0.0.5"]),
            route(&["A.test."], &["127.0.0.6"]),
        ];
        assert!(Routes::new(&dup, None, 25)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(Routes::new(&[route(&["a.test"], &[])], None, 25).is_err());
        assert!(Routes::new(&[route(&[], &["127.0.0.5"])], None, 25).is_err());
        assert!(Routes::new(&[route(&["*.*.a.test"], &["127.0.0.5"])], None, 25).is_err());
        assert!(Routes::new(&[route(&["*."], &["127.0.0.5"])], None, 25).is_err());
        assert!(Routes::new(&[], None, 25).unwrap().find("a.test").is_none());
    }
}
