//! Per-resolver counters. The resolver lives on one shard thread, so they
//! are plain `Cell`s (no atomics on the hot path); the control plane asks
//! each shard for a [`ResolverStats`] snapshot and adds them up.

use std::cell::Cell;

/// Point-in-time copy of a resolver's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Queries sent over UDP (every transmission, retries included).
    pub udp_queries: u64,
    /// Queries sent over TCP (after TC=1).
    pub tcp_queries: u64,
    /// Replies accepted (any RCODE).
    pub answers: u64,
    /// Replies with TC=1 (each followed by a TCP query).
    pub truncated: u64,
    /// Transmissions that got no acceptable reply in time.
    pub timeouts: u64,
    /// SERVFAIL replies.
    pub servfails: u64,
    /// REFUSED and other error RCODEs (not SERVFAIL, not NXDOMAIN).
    pub other_rcodes: u64,
    /// NXDOMAIN replies.
    pub nxdomains: u64,
    /// Socket errors (e.g. ICMP port unreachable, TCP reset).
    pub network_errors: u64,
    /// Datagrams or frames dropped because they were not the reply to our
    /// query (wrong source, id or question, or undecodable).
    pub spoofed_or_mismatched: u64,
    /// Lookups (name, type) answered from a fresh cache entry.
    pub cache_hits: u64,
    /// Lookups that needed a query (absent, expired, or stale revalidation).
    pub cache_misses: u64,
    /// Lookups answered with an expired entry because the servers failed.
    pub stale_served: u64,
    /// Background refreshes started (refresh-ahead).
    pub refreshes: u64,
    /// Lookups that joined a query already in flight instead of sending one.
    pub in_flight_joins: u64,
}

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        /// Live counters (one shard, no atomics).
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $field: Cell<u64>,)*
        }

        impl Counters {
            /// Copies all counters.
            pub(crate) fn snapshot(&self) -> ResolverStats {
                ResolverStats { $($field: self.$field.get(),)* }
            }
        }
    };
}

counters!(
    udp_queries,
    tcp_queries,
    answers,
    truncated,
    timeouts,
    servfails,
    other_rcodes,
    nxdomains,
    network_errors,
    spoofed_or_mismatched,
    cache_hits,
    cache_misses,
    stale_served,
    refreshes,
    in_flight_joins,
);

/// Adds one.
pub(crate) fn bump(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_copies() {
        let c = Counters::default();
        bump(&c.udp_queries);
        bump(&c.udp_queries);
        bump(&c.in_flight_joins);
        let s = c.snapshot();
        assert_eq!((s.udp_queries, s.in_flight_joins, s.tcp_queries), (2, 1, 0));
    }
}
