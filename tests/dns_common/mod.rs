//! Test harness: the bench_dns stub on a Tokio runtime (its worker thread
//! runs in the background) and the resolver under test in a glommio
//! LocalExecutor on the test thread. Everything binds 127.0.0.1 only.
#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use sluice::dns::{CacheConfig, ResolverConfig};
use sluice_bench::dns::{start, DnsOptions, DnsServer, DnsStats, FailureRule, Zone};

/// The stub's runtime.
pub struct Stubs {
    rt: tokio::runtime::Runtime,
}

impl Stubs {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Stubs { rt }
    }

    /// Starts a stub; its tasks run on the runtime's worker thread.
    pub fn start(&self, opts: DnsOptions) -> DnsServer {
        self.rt.block_on(start(opts)).unwrap()
    }

    /// Stops a stub and waits until its sockets are closed.
    pub fn stop(&self, server: DnsServer) {
        self.rt.block_on(server.shutdown());
    }
}

/// Stub options: `domains` synthetic domains plus an optional zone.
pub fn opts(domains: usize, zone: Option<&str>) -> DnsOptions {
    DnsOptions {
        domains,
        zone: zone.map(|z| Zone::from_toml_str(z).unwrap()),
        ..DnsOptions::default()
    }
}

pub fn failure(rule: &str) -> FailureRule {
    rule.parse().unwrap()
}

/// Resolver config for tests: these nameservers, short timeouts.
pub fn config(nameservers: &[SocketAddr]) -> ResolverConfig {
    ResolverConfig {
        nameservers: nameservers.to_vec(),
        timeout: Duration::from_millis(300),
        attempts: 2,
        cache: CacheConfig {
            refresh_ahead_percent: 0,
            ..CacheConfig::default()
        },
        ..ResolverConfig::default()
    }
}

/// Runs `fut` in a fresh glommio executor on this thread.
pub fn glommio<T>(fut: impl Future<Output = T>) -> T {
    glommio::LocalExecutor::default().run(fut)
}

/// Queries of `qtype` the stub received for `name` (both transports).
pub fn queries(stats: &DnsStats, name: &str, qtype: RecordType) -> u64 {
    stats.name(name).of_type(qtype)
}

/// Waits (on glommio timers, bounded) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// A UDP socket on loopback that never answers (kept open so the kernel
/// sends no ICMP error: queries to it simply time out).
pub fn black_hole() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}
