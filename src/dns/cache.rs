//! The per-shard answer cache: pure policy, no sockets, no clock reads
//! (every call takes `now`), so TTL expiry, serve-stale and refresh-ahead
//! are unit-tested by moving `now` instead of sleeping.
//!
//! Policy:
//! * TTLs are clamped to `[min_ttl, max_ttl]` (positive) or
//!   `[min_ttl, max_negative_ttl]` (negative, RFC 2308).
//! * **Serve-stale** (RFC 8767): a *positive* entry may be returned up to
//!   `serve_stale` past its expiry when revalidation fails. Negative
//!   entries are never served stale: a stale NXDOMAIN would bounce mail on
//!   old evidence, a deferral is cheaper than a wrong bounce.
//! * After a failed refresh the entry is not revalidated again for
//!   `stale_retry` ("failure recheck"), so a dead nameserver costs one
//!   timeout per name per interval, not one per lookup.
//! * **Refresh-ahead**: the first hit within the last
//!   `refresh_ahead_percent` of a positive entry's TTL returns
//!   `refresh: true` once; the caller starts one background query.
//! * **Bounded** by `capacity` with CLOCK (second-chance) eviction: a hit
//!   sets a reference bit, the hand clears bits and evicts the first
//!   unreferenced (or dead) slot. O(1) amortised, no list shuffling on
//!   hits.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::config::CacheConfig;

/// What the cache knows about a key at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLookup<V> {
    /// Within TTL. `refresh` is true once, when the entry entered its
    /// refresh-ahead window: start one background refresh.
    Fresh {
        /// The cached value.
        value: V,
        /// Start a background refresh.
        refresh: bool,
    },
    /// Expired but servable. With `revalidate` the caller should query and
    /// fall back to `value` on a temporary failure; without, it should
    /// serve `value` at once (a recent refresh failed).
    Stale {
        /// The expired value.
        value: V,
        /// Query before serving.
        revalidate: bool,
    },
    /// Nothing usable.
    Miss,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    negative: bool,
    ttl: Duration,
    expires: Instant,
    refreshing: bool,
    retry_after: Option<Instant>,
}

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    entry: Entry<V>,
    referenced: bool,
}

/// Bounded TTL cache with serve-stale and refresh-ahead.
#[derive(Debug)]
pub struct Cache<K, V> {
    policy: CacheConfig,
    index: HashMap<K, usize>,
    slots: Vec<Slot<K, V>>,
    hand: usize,
}

impl<V> Entry<V> {
    fn stale_until(&self, policy: &CacheConfig) -> Instant {
        if self.negative {
            self.expires
        } else {
            later(self.expires, policy.serve_stale)
        }
    }

    fn may_retry(&self, now: Instant) -> bool {
        self.retry_after.map_or(true, |t| now >= t)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// An empty cache with this policy (capacity at least 1).
    pub fn new(policy: CacheConfig) -> Self {
        Cache {
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
            policy,
        }
    }

    /// Entries held (including expired ones not yet overwritten).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Looks `key` up at `now`.
    pub fn get(&mut self, key: &K, now: Instant) -> CacheLookup<V> {
        let Some(&i) = self.index.get(key) else {
            return CacheLookup::Miss;
        };
        let policy = &self.policy;
        let Some(slot) = self.slots.get_mut(i) else {
            return CacheLookup::Miss;
        };
        let e = &mut slot.entry;
        if now < e.expires {
            slot.referenced = true;
            let window = e.ttl * u32::from(policy.refresh_ahead_percent) / 100;
            let refresh = !e.negative
                && !window.is_zero()
                && !e.refreshing
                && e.may_retry(now)
                && later(now, window) >= e.expires;
            if refresh {
                e.refreshing = true;
            }
            return CacheLookup::Fresh {
                value: e.value.clone(),
                refresh,
            };
        }
        if now < e.stale_until(policy) {
            slot.referenced = true;
            return CacheLookup::Stale {
                value: e.value.clone(),
                revalidate: e.may_retry(now),
            };
        }
        CacheLookup::Miss
    }

    /// Stores an answer whose DNS TTL is `ttl` seconds (clamped here).
    pub fn insert(&mut self, key: K, value: V, ttl: u32, negative: bool, now: Instant) {
        let max = if negative {
            self.policy.max_negative_ttl
        } else {
            self.policy.max_ttl
        };
        let ttl = Duration::from_secs(u64::from(ttl))
            .clamp(self.policy.min_ttl, max.max(self.policy.min_ttl));
        let entry = Entry {
            value,
            negative,
            ttl,
            expires: later(now, ttl),
            refreshing: false,
            retry_after: None,
        };
        if let Some(slot) = self.index.get(&key).and_then(|&i| self.slots.get_mut(i)) {
            slot.entry = entry;
            slot.referenced = true;
            return;
        }
        if self.slots.len() < self.policy.capacity.max(1) {
            self.index.insert(key.clone(), self.slots.len());
            self.slots.push(Slot {
                key,
                entry,
                referenced: false,
            });
            return;
        }
        let victim = self.victim(now);
        if let Some(slot) = self.slots.get_mut(victim) {
            self.index.remove(&slot.key);
            self.index.insert(key.clone(), victim);
            *slot = Slot {
                key,
                entry,
                referenced: false,
            };
        }
    }

    /// Records that refreshing or revalidating `key` failed at `now`: the
    /// entry stays (stale if expired) and is not retried for `stale_retry`.
    pub fn failed(&mut self, key: &K, now: Instant) {
        if let Some(slot) = self.index.get(key).and_then(|&i| self.slots.get_mut(i)) {
            slot.entry.refreshing = false;
            slot.entry.retry_after = Some(later(now, self.policy.stale_retry));
        }
    }

    /// CLOCK: dead slots go first, referenced ones get a second chance.
    /// Terminates within two sweeps because each visit clears a bit.
    fn victim(&mut self, now: Instant) -> usize {
        let len = self.slots.len();
        for _ in 0..2 * len {
            let i = self.hand % len;
            self.hand = (i + 1) % len;
            let Some(slot) = self.slots.get_mut(i) else {
                break;
            };
            let dead = now >= slot.entry.stale_until(&self.policy);
            if slot.referenced && !dead {
                slot.referenced = false;
            } else {
                return i;
            }
        }
        self.hand % len.max(1)
    }
}

/// `t + d`, saturating instead of panicking on absurd durations
/// (configuration caps them well below that anyway).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CacheConfig {
        CacheConfig {
            capacity: 3,
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(86_400),
            max_negative_ttl: Duration::from_secs(3_600),
            serve_stale: Duration::from_secs(3_600),
            stale_retry: Duration::from_secs(30),
            refresh_ahead_percent: 10,
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ttl_is_clamped_and_expires() {
        let t0 = Instant::now();
        let mut c = Cache::new(policy());
        c.insert("short", 1, 5, false, t0); // clamped up to 30 s
        c.insert("long", 2, u32::MAX, false, t0); // clamped down to 1 day
        assert!(matches!(
            c.get(&"short", t0 + 29 * S),
            CacheLookup::Fresh { value: 1, .. }
        ));
        assert!(matches!(
            c.get(&"short", t0 + 30 * S),
            CacheLookup::Stale { value: 1, .. }
        ));
        assert!(matches!(
            c.get(&"long", t0 + 86_399 * S),
            CacheLookup::Fresh { value: 2, .. }
        ));
        assert!(matches!(
            c.get(&"long", t0 + 86_400 * S),
            CacheLookup::Stale { .. }
        ));
        assert_eq!(c.get(&"absent", t0), CacheLookup::Miss);
    }

    #[test]
    fn negative_entries_clamp_and_never_go_stale() {
        let t0 = Instant::now();
        let mut c = Cache::new(policy());
        c.insert("nx", 0, 86_400, true, t0); // clamped to 1 h
        assert!(matches!(
            c.get(&"nx", t0 + 3_599 * S),
            CacheLookup::Fresh { refresh: false, .. }
        ));
        assert_eq!(c.get(&"nx", t0 + 3_600 * S), CacheLookup::Miss);
    }

    #[test]
    fn serve_stale_window_and_failure_recheck() {
        let t0 = Instant::now();
        let mut c = Cache::new(policy());
        c.insert("k", 7, 60, false, t0);
        let t1 = t0 + 61 * S;
        assert_eq!(
            c.get(&"k", t1),
            CacheLookup::Stale {
                value: 7,
                revalidate: true
            }
        );
        c.failed(&"k", t1);
        assert_eq!(
            c.get(&"k", t1 + 29 * S),
            CacheLookup::Stale {
                value: 7,
                revalidate: false
            }
        );
        assert_eq!(
            c.get(&"k", t1 + 30 * S),
            CacheLookup::Stale {
                value: 7,
                revalidate: true
            }
        );
        // One hour past expiry it is gone.
        assert_eq!(c.get(&"k", t0 + 60 * S + 3_600 * S), CacheLookup::Miss);
        // A fresh answer replaces it and clears the failure mark.
        c.insert("k", 8, 60, false, t1);
        assert!(matches!(
            c.get(&"k", t1),
            CacheLookup::Fresh {
                value: 8,
                refresh: false
            }
        ));
    }

    #[test]
    fn refresh_ahead_fires_once_in_the_last_tenth() {
        let t0 = Instant::now();
        let mut c = Cache::new(policy());
        c.insert("k", 1, 100, false, t0);
        assert_eq!(
            c.get(&"k", t0 + 89 * S),
            CacheLookup::Fresh {
                value: 1,
                refresh: false
            }
        );
        assert_eq!(
            c.get(&"k", t0 + 90 * S),
            CacheLookup::Fresh {
                value: 1,
                refresh: true
            }
        );
        assert_eq!(
            c.get(&"k", t0 + 91 * S),
            CacheLookup::Fresh {
                value: 1,
                refresh: false
            }
        );
        // A failed refresh may be retried after stale_retry.
        c.failed(&"k", t0 + 91 * S);
        assert_eq!(
            c.get(&"k", t0 + 92 * S),
            CacheLookup::Fresh {
                value: 1,
                refresh: false
            }
        );
        // Refreshed value resets the window.
        c.insert("k", 2, 100, false, t0 + 95 * S);
        assert_eq!(
            c.get(&"k", t0 + 96 * S),
            CacheLookup::Fresh {
                value: 2,
                refresh: false
            }
        );
        // Disabled with 0 %.
        let mut c = Cache::new(CacheConfig {
            refresh_ahead_percent: 0,
            ..policy()
        });
        c.insert("k", 1, 100, false, t0);
        assert_eq!(
            c.get(&"k", t0 + 99 * S),
            CacheLookup::Fresh {
                value: 1,
                refresh: false
            }
        );
    }

    #[test]
    fn clock_eviction_keeps_referenced_entries() {
        let t0 = Instant::now();
        let mut c = Cache::new(policy());
        c.insert("a", 1, 60, false, t0);
        c.insert("b", 2, 60, false, t0);
        c.insert("c", 3, 60, false, t0);
        // a and c are used; b is not: b goes.
        c.get(&"a", t0);
        c.get(&"c", t0);
        c.insert("d", 4, 60, false, t0);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&"b", t0), CacheLookup::Miss);
        for k in ["a", "c", "d"] {
            assert!(matches!(c.get(&k, t0), CacheLookup::Fresh { .. }), "{k}");
        }
        // Everything referenced: still evicts exactly one.
        c.insert("e", 5, 60, false, t0);
        assert_eq!(c.len(), 3);
        assert!(matches!(c.get(&"e", t0), CacheLookup::Fresh { .. }));
        // A dead entry is preferred over a referenced live one.
        let mut c = Cache::new(policy());
        c.insert("live1", 1, 60, false, t0);
        c.insert("dead", 2, 30, true, t0);
        c.insert("live2", 3, 60, false, t0);
        let later = t0 + 40 * S;
        c.get(&"live1", later);
        c.get(&"live2", later);
        c.insert("new", 4, 60, false, later);
        assert!(matches!(c.get(&"live1", later), CacheLookup::Fresh { .. }));
        assert!(matches!(c.get(&"live2", later), CacheLookup::Fresh { .. }));
    }

    #[test]
    fn zero_min_ttl_allows_short_entries() {
        let t0 = Instant::now();
        let mut c = Cache::new(CacheConfig {
            min_ttl: Duration::ZERO,
            ..policy()
        });
        c.insert("k", 1, 1, false, t0);
        assert!(matches!(c.get(&"k", t0), CacheLookup::Fresh { .. }));
        assert!(matches!(c.get(&"k", t0 + S), CacheLookup::Stale { .. }));
    }
}
