//! Distinct recipients received per Message-ID. `sluice-bench run` needs
//! to know, message by message, whether what the system under test
//! acknowledged reached the sink; totals cannot tell a lost message from
//! one that arrived but was never acknowledged (as happens around a crash).

use std::collections::HashMap;
use std::sync::Mutex;

use super::counters::lock;

/// Independently locked shards, as in the duplicate set.
const SHARDS: usize = 16;

/// Message-ID hash → distinct recipients accepted.
#[derive(Debug)]
pub(crate) struct Receipts {
    shards: Vec<Mutex<HashMap<u64, u32>>>,
}

impl Receipts {
    pub(crate) fn new() -> Self {
        Receipts {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Adds `n` newly seen recipients to the message with this ID hash.
    pub(crate) fn add(&self, id_hash: u64, n: u32) {
        if let Some(shard) = self.shards.get((id_hash as usize) % SHARDS) {
            let mut map = lock(shard);
            let count = map.entry(id_hash).or_default();
            *count = count.saturating_add(n);
        }
    }

    /// Recipients recorded for the message with this ID hash.
    pub(crate) fn get(&self, id_hash: u64) -> u32 {
        self.shards
            .get((id_hash as usize) % SHARDS)
            .and_then(|shard| lock(shard).get(&id_hash).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_message() {
        let r = Receipts::new();
        r.add(7, 1);
        r.add(7, 2);
        r.add(23, 1);
        assert_eq!(r.get(7), 3);
        assert_eq!(r.get(23), 1);
        assert_eq!(r.get(8), 0);
    }
}
