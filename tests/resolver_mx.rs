//! RFC 5321 §5.1 rules over real loopback sockets against the bench_dns
//! stub: preference order and shuffling, implicit MX, null MX, CNAME
//! chasing and its limit, address families, host caps and skipping.

#[path = "dns_common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::net::IpAddr;

use common::*;
use hickory_proto::rr::RecordType;
use sluice::dns::{DestinationKind, FamilyPreference, Resolver, ResolverConfig};
use sluice_bench::dns::DnsOptions;

const ZONE: &str = r#"
[[record]]
name = "multi.test"
type = "MX"
data = "10 a.multi.test"
[[record]]
name = "multi.test"
type = "MX"
data = "10 b.multi.test"
[[record]]
name = "multi.test"
type = "MX"
data = "20 c.multi.test"
[[record]]
name = "a.multi.test"
type = "A"
data = "127.3.0.1"
[[record]]
name = "b.multi.test"
type = "A"
data = "127.3.0.2"
[[record]]
name = "c.multi.test"
type = "A"
data = "127.3.0.3"

[[record]]
name = "implicit.test"
type = "A"
data = "127.3.1.1"
[[record]]
name = "noaddr.test"
type = "TXT"
data = "exists but has no MX and no A"

[[record]]
name = "nomail.test"
type = "MX"
data = "0 ."

[[record]]
name = "alias.test"
type = "CNAME"
data = "hop1.test"
[[record]]
name = "hop1.test"
type = "CNAME"
data = "hop2.test"
[[record]]
name = "hop2.test"
type = "CNAME"
data = "example.test"
[[record]]
name = "example.test"
type = "MX"
data = "10 mail.example.test"
[[record]]
name = "mail.example.test"
type = "A"
data = "127.3.2.1"

[[record]]
name = "mxcname.test"
type = "MX"
data = "10 mxalias.test"
[[record]]
name = "mxalias.test"
type = "CNAME"
data = "realmx.test"
[[record]]
name = "realmx.test"
type = "A"
data = "127.3.3.1"

[[record]]
name = "deadhosts.test"
type = "MX"
data = "10 gone1.test"
[[record]]
name = "deadhosts.test"
type = "MX"
data = "20 gone2.test"

[[record]]
name = "halfdead.test"
type = "MX"
data = "10 gone1.test"
[[record]]
name = "halfdead.test"
type = "MX"
data = "20 real.halfdead.test"
[[record]]
name = "real.halfdead.test"
type = "A"
data = "127.3.4.1"

[[record]]
name = "nodatahost.test"
type = "MX"
data = "10 txtonly.test"
[[record]]
name = "txtonly.test"
type = "TXT"
data = "no address here"
"#;

/// `c0.test → c1.test → … → c{links}.test`, the last one with an MX.
fn chain_zone(prefix: &str, links: usize) -> String {
    let mut z = String::new();
    for i in 0..links {
        z += &format!(
            "[[record]]\nname = \"{prefix}{i}.test\"\ntype = \"CNAME\"\ndata = \"{prefix}{}.test\"\n",
            i + 1
        );
    }
    z += &format!(
        "[[record]]\nname = \"{prefix}{links}.test\"\ntype = \"MX\"\ndata = \"10 mx.{prefix}{links}.test\"\n"
    );
    z += &format!(
        "[[record]]\nname = \"mx.{prefix}{links}.test\"\ntype = \"A\"\ndata = \"127.3.5.1\"\n"
    );
    z
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn preference_order_and_shuffled_ties() {
    let stubs = Stubs::new();
    let srv = stubs.start(opts(0, Some(ZONE)));
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
        let mut firsts = HashSet::new();
        for _ in 0..64 {
            let d = r.resolve_mx("multi.test").await.unwrap();
            assert_eq!(d.kind, DestinationKind::Mx);
            let names: Vec<&str> = d.hosts.iter().map(|h| h.name.as_str()).collect();
            let prefs: Vec<u16> = d.hosts.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, [10, 10, 20]);
            assert_eq!(names[2], "c.multi.test");
            assert_eq!(d.hosts[2].addrs, [ip("127.3.0.3")]);
            assert!(d.hosts.iter().all(|h| h.port == 25));
            firsts.insert(names[0].to_string());
        }
        assert_eq!(
            firsts.len(),
            2,
            "both orders of the equal preferences: {firsts:?}"
        );
        // Composed from the cache each time: one MX query in total.
        assert_eq!(queries(&stats, "multi.test", RecordType::MX), 1);
        assert_eq!(queries(&stats, "a.multi.test", RecordType::A), 1);
    });
}

#[test]
fn implicit_mx_and_no_mail_route() {
    let stubs = Stubs::new();
    let srv = stubs.start(opts(0, Some(ZONE)));
    glommio(async {
        let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
        let d = r.resolve_mx("Implicit.Test.").await.unwrap();
        assert_eq!(d.kind, DestinationKind::ImplicitMx);
        assert_eq!(d.domain, "implicit.test");
        assert_eq!(d.hosts.len(), 1);
        assert_eq!(d.hosts[0].name, "implicit.test");
        assert_eq!(d.hosts[0].preference, 0);
        assert_eq!(d.hosts[0].addrs, [ip("127.3.1.1")]);

        // Exists, but neither MX nor A/AAAA: no mail route, permanent.
        let e = r.resolve_mx("noaddr.test").await.unwrap_err();
        assert_eq!(e.enhanced_status(), (5, 1, 2), "{e}");
        assert!(e.reason().contains("no MX and no address"), "{e}");
    });
}

#[test]
fn null_mx_bounces_without_address_lookups() {
    let stubs = Stubs::new();
    let srv = stubs.start(DnsOptions {
        failures: vec![failure("d3.test=nullmx")],
        ..opts(10, Some(ZONE))
    });
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
        for domain in ["nomail.test", "d3.test"] {
            let e = r.resolve_mx(domain).await.unwrap_err();
            assert_eq!(e.enhanced_status(), (5, 1, 10), "{e}");
            assert!(e.is_permanent());
            assert!(e.reason().contains("null MX"), "{e}");
            assert_eq!(queries(&stats, domain, RecordType::MX), 1);
            assert_eq!(queries(&stats, domain, RecordType::A), 0);
            assert_eq!(queries(&stats, domain, RecordType::AAAA), 0);
        }
        assert_eq!(stats.name(".").total(), 0, "never looks up the root");
        assert_eq!(queries(&stats, "mx.d3.test", RecordType::A), 0);
    });
}

#[test]
fn cname_chased_by_server_or_client_for_domain_and_mx_target() {
    for server_chase in [8, 0] {
        let stubs = Stubs::new();
        let srv = stubs.start(DnsOptions {
            max_cname_chase: server_chase,
            ..opts(0, Some(ZONE))
        });
        let stats = srv.stats();
        glommio(async {
            let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
            let d = r.resolve_mx("alias.test").await.unwrap();
            assert_eq!(d.domain, "alias.test");
            assert_eq!(d.hosts[0].name, "mail.example.test");
            assert_eq!(d.hosts[0].addrs, [ip("127.3.2.1")]);
            let d = r.resolve_mx("mxcname.test").await.unwrap();
            assert_eq!(
                d.hosts[0].name, "mxalias.test",
                "TLS name stays the MX target"
            );
            assert_eq!(d.hosts[0].addrs, [ip("127.3.3.1")]);
        });
        let hop_queries = queries(&stats, "hop1.test", RecordType::MX)
            + queries(&stats, "hop2.test", RecordType::MX)
            + queries(&stats, "example.test", RecordType::MX);
        if server_chase == 0 {
            assert_eq!(hop_queries, 3, "client followed every hop itself");
            assert_eq!(queries(&stats, "realmx.test", RecordType::A), 1);
        } else {
            assert_eq!(hop_queries, 0, "the server's chain was used");
        }
    }
}

#[test]
fn cname_chain_limit() {
    let zone = chain_zone("k", 8) + &chain_zone("l", 10);
    for server_chase in [8, 0] {
        let stubs = Stubs::new();
        let srv = stubs.start(DnsOptions {
            max_cname_chase: server_chase,
            ..opts(0, Some(&zone))
        });
        glommio(async {
            let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
            let d = r.resolve_mx("k0.test").await.unwrap();
            assert_eq!(d.hosts[0].name, "mx.k8.test");
            let e = r.resolve_mx("l0.test").await.unwrap_err();
            assert_eq!(e.enhanced_status(), (4, 4, 3), "{e}");
            assert!(e.reason().contains("CNAME"), "{e}");
        });
    }
}

#[test]
fn address_families() {
    let stubs = Stubs::new();
    let srv = stubs.start(DnsOptions {
        aaaa: true,
        ..opts(10, None)
    });
    let stats = srv.stats();
    let v4 = ip("127.1.0.2");
    let v6 = ip("::1");
    let cases = [
        (FamilyPreference::Ipv4Only, "d1.test", vec![v4]),
        (FamilyPreference::Ipv6Only, "d2.test", vec![v6]),
        (
            FamilyPreference::PreferIpv4,
            "d3.test",
            vec![ip("127.1.0.4"), v6],
        ),
        (
            FamilyPreference::PreferIpv6,
            "d4.test",
            vec![v6, ip("127.1.0.5")],
        ),
    ];
    glommio(async {
        for (family, domain, want) in cases {
            let r = Resolver::new(ResolverConfig {
                family,
                ..config(&[srv.local_addr()])
            })
            .unwrap();
            let d = r.resolve_mx(domain).await.unwrap();
            assert_eq!(d.hosts[0].addrs, want, "{family:?}");
            let host = format!("mx.{domain}");
            let a = queries(&stats, &host, RecordType::A);
            let aaaa = queries(&stats, &host, RecordType::AAAA);
            match family {
                FamilyPreference::Ipv4Only => assert_eq!((a, aaaa), (1, 0)),
                FamilyPreference::Ipv6Only => assert_eq!((a, aaaa), (0, 1)),
                _ => assert_eq!((a, aaaa), (1, 1)),
            }
        }
    });
    // Without AAAA records prefer_ipv4 still works (AAAA is NODATA).
    let srv2 = stubs.start(opts(10, None));
    glommio(async {
        let r = Resolver::new(config(&[srv2.local_addr()])).unwrap();
        let d = r.resolve_mx("d7.test").await.unwrap();
        assert_eq!(d.hosts[0].addrs, [ip("127.1.0.8")]);
        assert!(d.skipped.is_empty());
    });
}

#[test]
fn hosts_without_addresses_are_skipped() {
    let stubs = Stubs::new();
    let srv = stubs.start(opts(0, Some(ZONE)));
    glommio(async {
        let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
        let d = r.resolve_mx("halfdead.test").await.unwrap();
        assert_eq!(d.hosts.len(), 1);
        assert_eq!(d.hosts[0].name, "real.halfdead.test");
        assert_eq!(d.skipped.len(), 1);
        assert!(d.skipped[0].contains("NXDOMAIN"), "{:?}", d.skipped);

        let e = r.resolve_mx("deadhosts.test").await.unwrap_err();
        assert_eq!(
            e.enhanced_status(),
            (5, 1, 2),
            "all exchangers NXDOMAIN: {e}"
        );
        assert!(e.reason().contains("gone1.test") && e.reason().contains("gone2.test"));

        let e = r.resolve_mx("nodatahost.test").await.unwrap_err();
        assert_eq!(
            e.enhanced_status(),
            (4, 4, 3),
            "NODATA host is temporary: {e}"
        );
    });
}

#[test]
fn max_mx_hosts_caps_lookups() {
    let mut zone = String::new();
    for i in 0..7 {
        zone += &format!(
            "[[record]]\nname = \"many.test\"\ntype = \"MX\"\ndata = \"{} h{i}.many.test\"\n\
             [[record]]\nname = \"h{i}.many.test\"\ntype = \"A\"\ndata = \"127.3.6.{}\"\n",
            10 * (i + 1),
            i + 1
        );
    }
    let stubs = Stubs::new();
    let srv = stubs.start(opts(0, Some(&zone)));
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(ResolverConfig {
            max_mx_hosts: 3,
            family: FamilyPreference::Ipv4Only,
            ..config(&[srv.local_addr()])
        })
        .unwrap();
        let d = r.resolve_mx("many.test").await.unwrap();
        let names: Vec<&str> = d.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["h0.many.test", "h1.many.test", "h2.many.test"]);
        assert_eq!(queries(&stats, "h3.many.test", RecordType::A), 0);
    });
}

#[test]
fn address_literals_and_invalid_domains() {
    let stubs = Stubs::new();
    let srv = stubs.start(opts(1, None));
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
        let d = r.resolve_mx("[127.0.0.9]").await.unwrap();
        assert_eq!(d.kind, DestinationKind::AddressLiteral);
        assert_eq!(d.hosts[0].addrs, [ip("127.0.0.9")]);
        let d = r.resolve_mx("[IPv6:::1]").await.unwrap();
        assert_eq!(d.hosts[0].addrs, [ip("::1")]);
        let e = r.resolve_mx("bad..domain").await.unwrap_err();
        assert_eq!(e.enhanced_status(), (5, 1, 2));
    });
    assert_eq!(stats.snapshot().queries(), 0);
}
