//! Static routes and the smarthost bypass MX lookup; configuration comes
//! from TOML through serde with unknown keys refused.

#[path = "dns_common/mod.rs"]
mod common;

use std::net::IpAddr;

use common::*;
use hickory_proto::rr::RecordType;
use sluice::dns::{DestinationKind, FamilyPreference, Resolver, ResolverConfig};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn from_toml(text: &str) -> ResolverConfig {
    toml::from_str(text).unwrap()
}

#[test]
fn config_deserialises_with_defaults_and_refuses_unknown_keys() {
    let cfg = from_toml(
        r#"
        nameservers = ["127.0.0.53", "127.0.0.1:5353", "[::1]:53"]
        timeout = "500ms"
        attempts = 3
        family = "prefer_ipv6"
        [cache]
        min_ttl = "10s"
        serve_stale = "2h"
        [[routes]]
        domains = ["example.com", "*.example.com"]
        hosts = ["127.0.0.5:2525", "mx.example.net"]
        [smarthost]
        hosts = ["127.0.0.9:587"]
        domains = ["relayed.test"]
        "#,
    );
    assert_eq!(cfg.nameservers.len(), 3);
    assert_eq!(cfg.nameservers[0].to_string(), "127.0.0.53:53");
    assert_eq!(cfg.timeout.as_millis(), 500);
    assert_eq!(cfg.attempts, 3);
    assert_eq!(cfg.family, FamilyPreference::PreferIpv6);
    assert_eq!(cfg.cache.min_ttl.as_secs(), 10);
    assert_eq!(cfg.cache.serve_stale.as_secs(), 7_200);
    assert_eq!(cfg.cache.max_ttl.as_secs(), 86_400, "default kept");
    assert_eq!(cfg.max_mx_hosts, 5);
    assert_eq!(cfg.edns_payload, 1232);
    assert_eq!(cfg.routes.len(), 1);
    assert_eq!(cfg.smarthost.as_ref().unwrap().domains, ["relayed.test"]);
    assert_eq!(from_toml(""), ResolverConfig::default());

    for bad in [
        "nameserver = [\"127.0.0.1\"]",
        "nameservers = [\"localhost\"]",
        "timeout = \"2 fortnights\"",
        "family = \"ipv5\"",
        "[cache]\nmax_size = 3",
        "[[routes]]\ndomains = [\"a.test\"]\nhosts = [\"127.0.0.5\"]\nport = 25",
    ] {
        assert!(toml::from_str::<ResolverConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn routes_and_smarthost_bypass_mx() {
    let stubs = Stubs::new();
    let srv = stubs.start(opts(10, None));
    let stats = srv.stats();
    let mut cfg = from_toml(
        r#"
        family = "ipv4_only"
        [[routes]]
        domains = ["example.com"]
        hosts = ["127.0.0.5:2525", "mx.d3.test", "[::1]:2526"]
        [[routes]]
        domains = ["*.example.org"]
        hosts = ["127.0.0.6"]
        [[routes]]
        domains = ["broken.example"]
        hosts = ["no-such-host.test"]
        [smarthost]
        hosts = ["127.0.0.9:587"]
        domains = ["relayed.test"]
        "#,
    );
    cfg.nameservers = vec![srv.local_addr()];
    cfg.timeout = std::time::Duration::from_millis(300);
    glommio(async {
        let r = Resolver::new(cfg).unwrap();
        let d = r.resolve_route("Example.COM").await.unwrap();
        assert_eq!(d.kind, DestinationKind::Route);
        let hosts: Vec<(&str, u16, u16, Vec<IpAddr>)> = d
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.preference, h.port, h.addrs.clone()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("127.0.0.5", 0, 2525, vec![ip("127.0.0.5")]),
                ("mx.d3.test", 10, 25, vec![ip("127.1.0.4")]),
                ("::1", 20, 2526, vec![ip("::1")]),
            ]
        );

        let d = r.resolve_route("a.b.example.org").await.unwrap();
        assert_eq!(d.hosts[0].addrs, [ip("127.0.0.6")]);
        // The wildcard does not cover the parent itself: MX lookup (NXDOMAIN).
        let e = r.resolve_route("example.org").await.unwrap_err();
        assert_eq!(e.enhanced_status(), (5, 1, 2));

        let d = r.resolve_route("relayed.test").await.unwrap();
        assert_eq!(d.kind, DestinationKind::Smarthost);
        assert_eq!(
            (d.hosts[0].port, d.hosts[0].addrs.clone()),
            (587, vec![ip("127.0.0.9")])
        );

        // Unrouted domains use MX.
        let d = r.resolve_route("d1.test").await.unwrap();
        assert_eq!(d.kind, DestinationKind::Mx);

        // A broken route host defers, never bounces.
        let e = r.resolve_route("broken.example").await.unwrap_err();
        assert_eq!(e.enhanced_status(), (4, 4, 3), "{e}");
        assert!(e.reason().contains("no-such-host.test"), "{e}");
    });
    for routed in [
        "example.com",
        "a.b.example.org",
        "relayed.test",
        "broken.example",
    ] {
        assert_eq!(
            queries(&stats, routed, RecordType::MX),
            0,
            "{routed}: no MX lookup"
        );
    }
    assert_eq!(queries(&stats, "mx.d3.test", RecordType::A), 1);
    assert_eq!(queries(&stats, "d1.test", RecordType::MX), 1);
}

#[test]
fn smarthost_for_everything() {
    glommio(async {
        // The nameserver is never asked: all hosts are IP literals.
        let (_hole, hole) = black_hole();
        let mut cfg = from_toml("[smarthost]\nhosts = [\"127.0.0.9:587\", \"127.0.0.10\"]\n");
        cfg.nameservers = vec![hole];
        let r = Resolver::new(cfg).unwrap();
        for domain in ["gmail.test", "d1.test", "anything.example"] {
            let d = r.resolve_route(domain).await.unwrap();
            assert_eq!(d.kind, DestinationKind::Smarthost);
            let ports: Vec<u16> = d.hosts.iter().map(|h| h.port).collect();
            assert_eq!(ports, [587, 25]);
        }
        assert_eq!(r.stats().udp_queries, 0);
    });
}

#[test]
fn invalid_routes_fail_at_startup() {
    for bad in [
        "nameservers = [\"127.0.0.1\"]\n[[routes]]\ndomains = [\"a.test\"]\nhosts = []",
        "nameservers = [\"127.0.0.1\"]\n[[routes]]\ndomains = [\"a.test\"]\nhosts = [\"x.test:0\"]",
        "nameservers = [\"127.0.0.1\"]\n[[routes]]\ndomains = [\"a.test\", \"A.TEST\"]\nhosts = [\"127.0.0.5\"]",
    ] {
        let cfg: ResolverConfig = toml::from_str(bad).unwrap();
        assert!(Resolver::new(cfg).is_err(), "{bad}");
    }
}
