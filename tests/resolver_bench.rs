//! Bench-style run for docs/benchmarks.md: resolve 10,000 synthetic
//! domains cold (every MX, A and AAAA from the stub), then warm (all from
//! the cache), and print resolutions per second and the stub's query
//! count. Query counts are asserted; timings are only printed (debug
//! build, shared 2-core machine).
//!
//! `CARGO_TARGET_DIR=/work/scratch/target-resolver cargo test --test bench -- --nocapture`
//!
//! `BENCH_WORKERS` (default 64) sets how many resolutions run at once,
//! like a shard's scheduler asking for many destinations concurrently.

#[path = "dns_common/mod.rs"]
mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use sluice::dns::{Resolver, ResolverConfig};
use sluice_bench::dns::synthetic_domain;

const DOMAINS: usize = 10_000;

/// Resolves every name with `workers` concurrent tasks pulling from a
/// shared cursor; returns the elapsed time.
async fn resolve_all(r: &Rc<Resolver>, names: &Rc<Vec<String>>, workers: usize) -> Duration {
    let t0 = Instant::now();
    let next = Rc::new(Cell::new(0usize));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (r, names, next) = (Rc::clone(r), Rc::clone(names), Rc::clone(&next));
            glommio::spawn_local(async move {
                loop {
                    let i = next.get();
                    let Some(name) = names.get(i) else { break };
                    next.set(i + 1);
                    let d = r.resolve_mx(name).await.unwrap();
                    assert_eq!(d.hosts.len(), 1);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    t0.elapsed()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[test]
fn cold_then_warm_10k_domains() {
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let stubs = Stubs::new();
    let srv = stubs.start(opts(DOMAINS, None));
    let stats = srv.stats();
    let names: Rc<Vec<String>> = Rc::new((0..DOMAINS).map(synthetic_domain).collect());
    glommio(async {
        let r = Resolver::new(ResolverConfig {
            timeout: Duration::from_secs(2),
            ..config(&[srv.local_addr()])
        })
        .unwrap();
        let cold = resolve_all(&r, &names, workers).await;
        let cold_queries = stats.snapshot().queries();
        let s = r.stats();
        let warm = resolve_all(&r, &names, workers).await;
        let warm_queries = stats.snapshot().queries() - cold_queries;
        let t0 = Instant::now();
        for n in names.iter() {
            r.resolve_mx(n).await.unwrap();
        }
        let sequential = t0.elapsed();

        println!(
            "cold ({workers} concurrent): {DOMAINS} domains in {cold:.2?} = {:.0} resolutions/s, \
             {cold_queries} stub queries ({} UDP sent, {} timeouts)",
            rate(DOMAINS, cold),
            s.udp_queries,
            s.timeouts
        );
        println!(
            "warm ({workers} concurrent): {warm:.2?} = {:.0} resolutions/s, {warm_queries} stub queries",
            rate(DOMAINS, warm)
        );
        println!(
            "warm (sequential): {sequential:.2?} = {:.0} resolutions/s ({:.1} us each)",
            rate(DOMAINS, sequential),
            sequential.as_secs_f64() * 1e6 / DOMAINS as f64
        );
        assert_eq!(cold_queries, 3 * DOMAINS as u64, "MX + A + AAAA per domain");
        assert_eq!(warm_queries, 0);
        assert_eq!(r.cache_len(), 3 * DOMAINS);
    });
}
