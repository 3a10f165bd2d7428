//! Cache behaviour over loopback: in-flight de-duplication, TTL expiry,
//! negative caching, serve-stale and refresh-ahead. Time passes on glommio
//! timers against TTLs of one or two seconds (min clamp 0), so "expired"
//! is an event, not a guess; the exact policy arithmetic is unit-tested in
//! `cache.rs` with a synthetic clock.

#[path = "dns_common/mod.rs"]
mod common;

use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use sluice::dns::{CacheConfig, FamilyPreference, Resolver, ResolverConfig};
use sluice_bench::dns::DnsOptions;

fn short_ttl_config(addr: std::net::SocketAddr, refresh_ahead_percent: u8) -> ResolverConfig {
    ResolverConfig {
        family: FamilyPreference::Ipv4Only,
        cache: CacheConfig {
            min_ttl: Duration::ZERO,
            refresh_ahead_percent,
            ..CacheConfig::default()
        },
        ..config(&[addr])
    }
}

async fn sleep_until(t: Instant) {
    glommio::timer::sleep(t.saturating_duration_since(Instant::now())).await;
}

/// Spawns 10,000 concurrent `resolve_mx(domain)` tasks and checks they
/// all got the same destination.
async fn ten_thousand(r: &Rc<Resolver>, domain: &'static str) {
    let tasks: Vec<_> = (0..10_000)
        .map(|_| {
            let r = Rc::clone(r);
            glommio::spawn_local(async move { r.resolve_mx(domain).await })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let want = format!("mx.{domain}");
    assert!(results.iter().all(|d| d.hosts[0].name == want));
}

#[test]
fn ten_thousand_concurrent_lookups_send_one_query_per_type() {
    let stubs = Stubs::new();
    let srv = stubs.start(opts(10, None));
    let stats = srv.stats();
    let (_hole, hole) = black_hole();
    glommio(async {
        // Fast server: whether the other callers join the flight or find
        // the answer already cached depends on scheduling, but there is
        // exactly one query per type either way.
        let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
        ten_thousand(&r, "d7.test").await;
        let s = r.stats();
        assert_eq!(s.udp_queries, 3, "MX, A, AAAA: {s:?}");
        assert_eq!(s.cache_hits + s.cache_misses, 30_000, "{s:?}");
        assert_eq!(
            s.cache_misses - s.in_flight_joins,
            3,
            "three flights: {s:?}"
        );

        // Slow path (the first server is silent, so the MX query is in
        // flight for a whole timeout): every other caller joins it.
        let r = Resolver::new(config(&[hole, srv.local_addr()])).unwrap();
        ten_thousand(&r, "d8.test").await;
        let s = r.stats();
        assert!(s.in_flight_joins >= 9_999, "{s:?}");
        assert_eq!(
            s.cache_misses - s.in_flight_joins,
            3,
            "three flights: {s:?}"
        );
        assert_eq!((s.udp_queries, s.timeouts), (4, 1), "{s:?}");
    });
    for d in ["d7.test", "d8.test"] {
        assert_eq!(queries(&stats, d, RecordType::MX), 1, "{d}");
        assert_eq!(queries(&stats, &format!("mx.{d}"), RecordType::A), 1, "{d}");
        assert_eq!(
            queries(&stats, &format!("mx.{d}"), RecordType::AAAA),
            1,
            "{d}"
        );
    }
}

#[test]
fn a_cancelled_caller_does_not_cancel_the_query() {
    // The first server is silent, so the MX query takes one timeout.
    let (_hole, hole) = black_hole();
    let stubs = Stubs::new();
    let srv = stubs.start(opts(10, None));
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(config(&[hole, srv.local_addr()])).unwrap();
        let first =
            futures_lite::future::or(async { Some(r.resolve_mx("d3.test").await) }, async {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                None
            })
            .await;
        assert!(first.is_none(), "the first caller gave up and was dropped");
        let d = r.resolve_mx("d3.test").await.unwrap();
        assert_eq!(d.hosts[0].name, "mx.d3.test");
        assert_eq!(r.stats().in_flight_joins, 1, "joined the surviving query");
    });
    assert_eq!(queries(&stats, "d3.test", RecordType::MX), 1);
}

#[test]
fn entries_expire_with_their_ttl() {
    let stubs = Stubs::new();
    let srv = stubs.start(DnsOptions {
        ttl: 1,
        ..opts(10, None)
    });
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(short_ttl_config(srv.local_addr(), 0)).unwrap();
        let t0 = Instant::now();
        r.resolve_mx("d1.test").await.unwrap();
        r.resolve_mx("d1.test").await.unwrap();
        assert_eq!(
            queries(&stats, "d1.test", RecordType::MX),
            1,
            "second lookup cached"
        );
        assert!(
            t0.elapsed() < Duration::from_millis(900),
            "test too slow to be meaningful"
        );
        sleep_until(t0 + Duration::from_millis(1_100)).await;
        r.resolve_mx("d1.test").await.unwrap();
        assert_eq!(
            queries(&stats, "d1.test", RecordType::MX),
            2,
            "re-queried after expiry"
        );
        let s = r.stats();
        assert_eq!(s.cache_hits, 2, "{s:?}");
    });
}

#[test]
fn negative_answers_are_cached_for_the_soa_ttl() {
    let stubs = Stubs::new();
    let srv = stubs.start(DnsOptions {
        negative_ttl: 1,
        ..opts(10, None)
    });
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(ResolverConfig {
            family: FamilyPreference::PreferIpv4,
            ..short_ttl_config(srv.local_addr(), 0)
        })
        .unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            let e = r.resolve_mx("nosuch.test").await.unwrap_err();
            assert_eq!(e.enhanced_status(), (5, 1, 2));
            // AAAA of the host is NODATA: cached too.
            r.resolve_mx("d2.test").await.unwrap();
        }
        assert_eq!(queries(&stats, "nosuch.test", RecordType::MX), 1);
        assert_eq!(queries(&stats, "mx.d2.test", RecordType::AAAA), 1);
        sleep_until(t0 + Duration::from_millis(1_100)).await;
        r.resolve_mx("nosuch.test").await.unwrap_err();
        assert_eq!(
            queries(&stats, "nosuch.test", RecordType::MX),
            2,
            "negative TTL expired"
        );
    });
}

#[test]
fn negative_ttl_is_clamped_by_min_ttl() {
    let stubs = Stubs::new();
    let srv = stubs.start(DnsOptions {
        negative_ttl: 0,
        ..opts(10, None)
    });
    let stats = srv.stats();
    glommio(async {
        // Default min_ttl (30 s) keeps a zero negative TTL for 30 s.
        let r = Resolver::new(config(&[srv.local_addr()])).unwrap();
        for _ in 0..3 {
            r.resolve_mx("nosuch.test").await.unwrap_err();
        }
    });
    assert_eq!(queries(&stats, "nosuch.test", RecordType::MX), 1);
}

#[test]
fn stale_answers_served_while_nameservers_fail() {
    for mode in ["servfail", "timeout"] {
        let stubs = Stubs::new();
        let healthy = stubs.start(DnsOptions {
            ttl: 1,
            ..opts(10, None)
        });
        let addr = healthy.local_addr();
        glommio(async {
            let r = Resolver::new(ResolverConfig {
                timeout: Duration::from_millis(200),
                ..short_ttl_config(addr, 0)
            })
            .unwrap();
            let t0 = Instant::now();
            let fresh = r.resolve_mx("d1.test").await.unwrap();

            // Same address, now failing for the domain and its host.
            stubs.stop(healthy);
            let failing = stubs.start(DnsOptions {
                listen: addr,
                failures: vec![
                    failure(&format!("d1.test={mode}")),
                    failure(&format!("mx.d1.test={mode}")),
                ],
                ..opts(10, None)
            });
            let fstats = failing.stats();
            sleep_until(t0 + Duration::from_millis(1_100)).await;

            let stale = r.resolve_mx("d1.test").await.unwrap();
            assert_eq!(stale, fresh, "{mode}: stale answer served");
            let s = r.stats();
            assert_eq!(s.stale_served, 2, "{mode}: MX and A served stale: {s:?}");
            // SERVFAIL is final for a server; a timeout is retried once.
            let asked = queries(&fstats, "d1.test", RecordType::MX);
            assert_eq!(asked, if mode == "servfail" { 1 } else { 2 }, "{mode}");

            // Within stale_retry: served stale at once, no new query.
            let t1 = Instant::now();
            r.resolve_mx("d1.test").await.unwrap();
            assert!(
                t1.elapsed() < Duration::from_millis(100),
                "{mode}: no waiting"
            );
            assert_eq!(queries(&fstats, "d1.test", RecordType::MX), asked);
            assert_eq!(r.stats().stale_served, 4);
            stubs.stop(failing);
        });
    }
}

#[test]
fn busy_entries_are_refreshed_ahead_of_expiry() {
    let stubs = Stubs::new();
    let srv = stubs.start(DnsOptions {
        ttl: 2,
        ..opts(10, None)
    });
    let stats = srv.stats();
    glommio(async {
        let r = Resolver::new(short_ttl_config(srv.local_addr(), 30)).unwrap();
        let t0 = Instant::now();
        r.resolve_mx("d1.test").await.unwrap();
        // Refresh window: the last 30 % of 2 s, i.e. from 1.4 s.
        sleep_until(t0 + Duration::from_millis(1_500)).await;
        let before = r.stats();
        r.resolve_mx("d1.test").await.unwrap();
        let after = r.stats();
        assert_eq!(
            after.cache_misses, before.cache_misses,
            "answered from cache"
        );
        assert_eq!(after.refreshes, 2, "MX and A refreshed in the background");
        eventually("background refresh", || {
            queries(&stats, "d1.test", RecordType::MX) == 2
                && queries(&stats, "mx.d1.test", RecordType::A) == 2
        })
        .await;
        // Past the original expiry the refreshed entries are still fresh.
        sleep_until(t0 + Duration::from_millis(2_300)).await;
        r.resolve_mx("d1.test").await.unwrap();
        let s = r.stats();
        assert_eq!(
            s.cache_misses, after.cache_misses,
            "no miss after refresh: {s:?}"
        );
        assert_eq!(s.refreshes, 2, "no second refresh yet");
        assert_eq!(queries(&stats, "d1.test", RecordType::MX), 2);
    });
}
