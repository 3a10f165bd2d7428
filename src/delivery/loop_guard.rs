//! Never deliver to ourselves.
//!
//! A recipient at `[127.0.0.1]`, or a domain whose MX (or a static route)
//! points back at this appliance, would otherwise circle through Sluice for
//! ever: every lap is accepted, journaled, fsynced and delivered again.
//! Postfix's rule is followed: hosts are tried in preference order, and the
//! first host with one of our own addresses cuts the list there — it and
//! every host of equal or lower preference are dropped (we are a backup MX
//! for the domain at best). When nothing is left, the mail "loops back to
//! myself": a permanent `5.4.6` failure with a DSN, never an endless retry.
//!
//! "Ours" is a listening socket's address and port. A listener on the
//! unspecified address (`0.0.0.0:25`, `[::]:25`) is reached through every
//! local address: the loopback networks, `0.0.0.0` itself (which Linux
//! connects to the local host) and the addresses on the interfaces, read
//! when the engine is built and again at every reload (SIGHUP). Addresses that reach us from outside (NAT,
//! a load balancer) are configured in `delivery.own_addresses`.

use crate::dns::MxHost;
use std::net::{IpAddr, SocketAddr};

/// An address that reaches this appliance's SMTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnAddress {
    /// This address and port exactly.
    Socket(SocketAddr),
    /// Any port of this address (operator configured, e.g. a NAT front).
    Ip(IpAddr),
    /// Any local address on this port (a listener on `0.0.0.0` / `::`).
    AnyLocal(u16),
}

impl<'de> serde::Deserialize<'de> for OwnAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(s) = text.parse::<SocketAddr>() {
            return Ok(OwnAddress::Socket(s));
        }
        text.parse::<IpAddr>().map(OwnAddress::Ip).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not an address (\"192.0.2.1\", \"192.0.2.1:25\" or \"[2001:db8::1]:25\")"
            ))
        })
    }
}

/// The addresses that would deliver mail back to us.
#[derive(Debug, Clone, Default)]
pub struct OwnAddresses {
    /// From the listeners: fixed for the life of the process.
    listeners: Vec<OwnAddress>,
    /// The listeners' entries, then `delivery.own_addresses`.
    own: Vec<OwnAddress>,
    /// Addresses on this host's interfaces, for unspecified listeners.
    local: Vec<IpAddr>,
}

/// Where delivery may go once our own addresses are taken out.
#[derive(Debug, PartialEq, Eq)]
pub enum HostsAfterLoopCheck<'a> {
    /// These hosts, best first (all of them when none is ours).
    Usable(Vec<&'a MxHost>),
    /// The best host is ourselves: the mail would loop.
    LoopsToSelf {
        /// The host that turned out to be us.
        host: String,
        /// The address of it that is ours.
        addr: SocketAddr,
    },
}

impl OwnAddresses {
    /// Our listeners (as bound: port 0 already resolved), the configured
    /// extra addresses, and the host's interface addresses.
    pub fn new(listeners: &[SocketAddr], extra: &[OwnAddress], local: Vec<IpAddr>) -> Self {
        let mut own: Vec<OwnAddress> = listeners
            .iter()
            .map(|l| {
                if l.ip().is_unspecified() {
                    OwnAddress::AnyLocal(l.port())
                } else {
                    OwnAddress::Socket(SocketAddr::new(l.ip().to_canonical(), l.port()))
                }
            })
            .collect();
        let listeners = own.clone();
        own.extend_from_slice(extra);
        OwnAddresses {
            listeners,
            own,
            local,
        }
    }

    /// Takes a reloaded `delivery.own_addresses` and a fresh reading of the
    /// interface addresses (one added since start is then ours too).
    pub fn reconfigure(&mut self, extra: &[OwnAddress], local: Vec<IpAddr>) {
        self.own.clone_from(&self.listeners);
        self.own.extend_from_slice(extra);
        self.local = local;
    }

    /// Whether connecting to `addr` would reach one of our listeners.
    pub fn is_own(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.own.iter().any(|o| match *o {
            OwnAddress::Socket(s) => s.port() == addr.port() && s.ip().to_canonical() == ip,
            OwnAddress::Ip(i) => i.to_canonical() == ip,
            OwnAddress::AnyLocal(port) => port == addr.port() && self.is_local(ip),
        })
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || ip.is_unspecified() || self.local.contains(&ip)
    }

    /// Applies the rule to `hosts` (best first): cut at the first host with
    /// one of our addresses, and everything of its preference or worse.
    pub fn check<'a>(&self, hosts: &'a [MxHost]) -> HostsAfterLoopCheck<'a> {
        let ours = hosts.iter().find_map(|h| {
            h.addrs
                .iter()
                .map(|ip| SocketAddr::new(*ip, h.port))
                .find(|a| self.is_own(*a))
                .map(|a| (h, a))
        });
        let Some((me, addr)) = ours else {
            return HostsAfterLoopCheck::Usable(hosts.iter().collect());
        };
        let better: Vec<&MxHost> = hosts
            .iter()
            .filter(|h| h.preference < me.preference)
            .collect();
        if better.is_empty() {
            HostsAfterLoopCheck::LoopsToSelf {
                host: me.name.clone(),
                addr,
            }
        } else {
            HostsAfterLoopCheck::Usable(better)
        }
    }
}

/// The addresses on this host's interfaces (empty if they cannot be read:
/// loopback and explicit listener addresses are still recognised).
pub fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, preference: u16, port: u16, addrs: &[&str]) -> MxHost {
        MxHost {
            name: name.into(),
            preference,
            port,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn names(r: &HostsAfterLoopCheck) -> Vec<String> {
        match r {
            HostsAfterLoopCheck::Usable(h) => h.iter().map(|h| h.name.clone()).collect(),
            HostsAfterLoopCheck::LoopsToSelf { host, .. } => vec![format!("loop:{host}")],
        }
    }

    #[test]
    fn explicit_listener_matches_address_and_port_only() {
        let own = OwnAddresses::new(&["127.0.0.1:2525".parse().unwrap()], &[], vec![]);
        assert!(own.is_own("127.0.0.1:2525".parse().unwrap()));
        assert!(own.is_own("[::ffff:127.0.0.1]:2525".parse().unwrap()));
        assert!(!own.is_own("127.0.0.1:25".parse().unwrap()));
        assert!(!own.is_own("127.0.0.2:2525".parse().unwrap()));
    }

    #[test]
    fn unspecified_listener_matches_every_local_address_on_its_port() {
        let local = vec!["192.0.2.7".parse().unwrap()];
        let own = OwnAddresses::new(&["0.0.0.0:25".parse().unwrap()], &[], local);
        for a in [
            "127.0.0.1:25",
            "127.9.9.9:25",
            "0.0.0.0:25",
            "[::1]:25",
            "192.0.2.7:25",
        ] {
            assert!(own.is_own(a.parse().unwrap()), "{a}");
        }
        assert!(!own.is_own("192.0.2.8:25".parse().unwrap()));
        assert!(!own.is_own("127.0.0.1:26".parse().unwrap()));
    }

    #[test]
    fn configured_address_matches_any_port() {
        let extra = [OwnAddress::Ip("198.51.100.1".parse().unwrap())];
        let own = OwnAddresses::new(&[], &extra, vec![]);
        assert!(own.is_own("198.51.100.1:25".parse().unwrap()));
        assert!(own.is_own("198.51.100.1:587".parse().unwrap()));
    }

    #[test]
    fn best_host_ours_loops_lower_one_ours_is_cut() {
        let own = OwnAddresses::new(&["127.0.0.1:25".parse().unwrap()], &[], vec![]);
        let hosts = [
            host("a", 10, 25, &["127.0.0.2"]),
            host("b", 20, 25, &["127.0.0.3"]),
            host("me", 30, 25, &["127.0.0.9", "127.0.0.1"]),
            host("c", 30, 25, &["127.0.0.4"]),
            host("d", 40, 25, &["127.0.0.5"]),
        ];
        assert_eq!(names(&own.check(&hosts)), ["a", "b"]);
        let looped = own.check(&hosts[2..]);
        assert_eq!(
            looped,
            HostsAfterLoopCheck::LoopsToSelf {
                host: "me".into(),
                addr: "127.0.0.1:25".parse().unwrap()
            }
        );
        assert_eq!(names(&own.check(&hosts[..2])), ["a", "b"]);
    }
}
