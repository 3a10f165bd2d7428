//! Stateful policies that span connections: the per-destination rate
//! limit, greylisting memory and duplicate detection. Keys are hashes, so
//! memory per remembered item is a few words whatever the address length.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Instant;

use super::counters::lock;

/// Token bucket holding one second of burst: a destination limited to
/// `rate` msgs/s accepts `rate` messages at once, then `rate` per second.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(crate) fn new(rate: f64) -> Self {
        TokenBucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes one token if available.
    pub(crate) fn try_take(&self) -> bool {
        let mut s = lock(&self.state);
        let (tokens, last) = &mut *s;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Number of independently locked shards for process-wide hash sets, so
/// sessions on different cores rarely wait for each other.
const SHARDS: usize = 16;

/// Keys are already SipHash outputs, so hashing them again would only
/// cost time: fold the two halves instead.
#[derive(Debug, Default, Clone, Copy)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u128 keys, which this set never has.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

type Set = HashSet<u128, BuildHasherDefault<PreHashed>>;

/// A concurrent set of 128-bit keys.
#[derive(Debug)]
pub(crate) struct KeySet {
    shards: Vec<Mutex<Set>>,
}

impl KeySet {
    pub(crate) fn new() -> Self {
        KeySet {
            shards: (0..SHARDS).map(|_| Mutex::new(Set::default())).collect(),
        }
    }

    /// Inserts `key`; returns false if it was already present.
    pub(crate) fn insert(&self, key: u128) -> bool {
        let idx = (key as usize) % SHARDS;
        match self.shards.get(idx) {
            Some(shard) => lock(shard).insert(key),
            None => true,
        }
    }
}

/// Hashes byte strings into the 64-bit halves of [`KeySet`] keys.
#[derive(Debug, Default)]
pub(crate) struct KeyHasher {
    state: std::collections::hash_map::RandomState,
}

impl KeyHasher {
    pub(crate) fn hash(&self, bytes: &[u8]) -> u64 {
        let mut h = self.state.build_hasher();
        h.write(bytes);
        h.finish()
    }

    /// Hash of an address, ignoring ASCII case so `User@D0.test` and
    /// `user@d0.test` are one recipient for greylisting and duplicates.
    pub(crate) fn hash_addr(&self, addr: &[u8]) -> u64 {
        let mut h = self.state.build_hasher();
        for &b in addr {
            h.write_u8(b.to_ascii_lowercase());
        }
        h.finish()
    }
}

/// Combines two 64-bit hashes into a set key.
pub(crate) fn pair(a: u64, b: u64) -> u128 {
    (u128::from(a) << 64) | u128::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_one_second_of_burst() {
        let b = TokenBucket::new(3.0);
        let granted = (0..10).filter(|_| b.try_take()).count();
        assert_eq!(granted, 3);
    }

    #[test]
    fn keyset_reports_duplicates() {
        let s = KeySet::new();
        assert!(s.insert(pair(1, 2)));
        assert!(s.insert(pair(2, 1)));
        assert!(!s.insert(pair(1, 2)));
    }

    #[test]
    fn addr_hash_ignores_case() {
        let h = KeyHasher::default();
        assert_eq!(h.hash_addr(b"A@B.test"), h.hash_addr(b"a@b.test"));
        assert_ne!(h.hash_addr(b"a@b.test"), h.hash_addr(b"a@c.test"));
    }
}
