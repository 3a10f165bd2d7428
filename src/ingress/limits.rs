//! Per-client limits shared by every core: concurrent sessions per address
//! and per network, and failed AUTH attempts per address.
//!
//! Each core accepts on its own SO_REUSEPORT socket, so one client's
//! connections land on any core and the counts must be node-wide. They are
//! sharded maps behind small mutexes, touched only at connect, disconnect
//! and AUTH — never per command. Entries exist only while they count
//! something (sessions) or within their window (failures), and the failure
//! table has a fixed capacity, so memory is bounded.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// The network a client address belongs to for the per-network caps: its
/// /24 (IPv4) or /64 (IPv6) — what one customer or host typically holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// The first three octets.
    V4([u8; 3]),
    /// The first 64 bits.
    V6(u64),
}

impl Network {
    /// The network of `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> Network {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Network::V4([a, b, c])
            }
            IpAddr::V6(v6) => Network::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// The key failed AUTH attempts are counted under: the address for IPv4,
/// the /64 for IPv6 (a single host commonly holds a whole /64).
fn auth_key(ip: IpAddr) -> AuthKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => AuthKey::V4(v4.octets()),
        IpAddr::V6(_) => AuthKey::V6(Network::of(ip)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AuthKey {
    V4([u8; 4]),
    V6(Network),
}

struct Sharded<K, V> {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<HashMap<K, V>>>,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    fn new() -> Self {
        Sharded {
            hasher: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn with<R>(&self, key: &K, f: impl FnOnce(&mut HashMap<K, V>) -> R) -> Option<R> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        let shard = self.shards.get(i)?;
        // A panic while holding the lock cannot leave a count half-updated
        // in a way that matters more than refusing service: carry on.
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        Some(f(&mut map))
    }
}

/// Caps for one client; 0 means no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Concurrent sessions from the address.
    pub per_address: usize,
    /// Concurrent sessions from its /24 or /64.
    pub per_network: usize,
}

/// Which cap a refused connection hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverCap {
    /// Its address holds `per_address` sessions already.
    Address,
    /// Its network holds `per_network` sessions already.
    Network,
}

/// Sessions per address and per network, node-wide.
pub struct ClientTable {
    addresses: Sharded<IpAddr, usize>,
    networks: Sharded<Network, usize>,
}

impl Default for ClientTable {
    fn default() -> Self {
        ClientTable {
            addresses: Sharded::new(),
            networks: Sharded::new(),
        }
    }
}

/// A counted session; uncounted when dropped. Only capped counts are
/// kept: a client without caps (a relay client by default) costs no lock.
pub struct ClientSlot {
    table: Arc<ClientTable>,
    address: Option<IpAddr>,
    network: Option<Network>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.address {
            self.table.addresses.with(&ip, |m| give_back(m, &ip));
        }
        if let Some(net) = self.network {
            self.table.networks.with(&net, |m| give_back(m, &net));
        }
    }
}

/// Counts one more for `key` unless it holds `cap` already (0: no cap).
fn take<K: Hash + Eq>(map: &mut HashMap<K, usize>, key: K, cap: usize) -> bool {
    let n = map.entry(key).or_insert(0);
    if cap != 0 && *n >= cap {
        return false;
    }
    *n = n.saturating_add(1);
    true
}

fn give_back<K: Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl ClientTable {
    /// Counts a new session from `ip` unless that puts its address or
    /// network over `caps`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, caps: Caps) -> Result<ClientSlot, OverCap> {
        let ip = ip.to_canonical();
        let net = Network::of(ip);
        // Built first, so an early return gives back what was taken.
        let mut slot = ClientSlot {
            table: self.clone(),
            address: None,
            network: None,
        };
        if caps.per_address != 0 {
            if self.addresses.with(&ip, |m| take(m, ip, caps.per_address)) != Some(true) {
                return Err(OverCap::Address);
            }
            slot.address = Some(ip);
        }
        if caps.per_network != 0 {
            if self.networks.with(&net, |m| take(m, net, caps.per_network)) != Some(true) {
                return Err(OverCap::Network);
            }
            slot.network = Some(net);
        }
        Ok(slot)
    }

    /// Sessions counted for `ip` now.
    pub fn sessions_of(&self, ip: IpAddr) -> usize {
        let ip = ip.to_canonical();
        self.addresses
            .with(&ip, |m| m.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Failed AUTH attempts per address within a window.
pub struct AuthFailures {
    table: Sharded<AuthKey, Failures>,
}

struct Failures {
    since: Instant,
    count: u32,
}

/// Most addresses tracked per shard. Past it, expired entries are dropped;
/// if none is, a new address is not tracked (its attempts still queue on
/// the bounded hashing pool, which is what protects the node).
const FAILURE_ENTRIES_PER_SHARD: usize = 4096;

/// The failure limit in force: `max` attempts per `window`; `max` 0 turns
/// the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    /// Failed attempts allowed per window.
    pub max: u32,
    /// How long failures are remembered, from the first one.
    pub window: Duration,
}

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures {
            table: Sharded::new(),
        }
    }
}

impl AuthFailures {
    /// Whether `ip` may try a password now. If so, the attempt counts as a
    /// failure until [`AuthFailures::succeeded`] says otherwise, so that
    /// concurrent attempts from one address cannot all start before the
    /// first one has failed.
    pub fn try_begin(&self, ip: IpAddr, limit: FailureLimit, now: Instant) -> bool {
        if limit.max == 0 {
            return true;
        }
        let key = auth_key(ip);
        self.table
            .with(&key, |m| {
                if let Some(f) = m.get_mut(&key) {
                    if now.saturating_duration_since(f.since) >= limit.window {
                        *f = Failures {
                            since: now,
                            count: 0,
                        };
                    }
                    if f.count >= limit.max {
                        return false;
                    }
                    f.count = f.count.saturating_add(1);
                    return true;
                }
                if m.len() >= FAILURE_ENTRIES_PER_SHARD {
                    m.retain(|_, f| now.saturating_duration_since(f.since) < limit.window);
                    if m.len() >= FAILURE_ENTRIES_PER_SHARD {
                        return true;
                    }
                }
                m.insert(
                    key,
                    Failures {
                        since: now,
                        count: 1,
                    },
                );
                true
            })
            .unwrap_or(true)
    }

    /// The attempt begun for `ip` did not fail (it succeeded, or was never
    /// checked): it no longer counts.
    pub fn succeeded(&self, ip: IpAddr) {
        let key = auth_key(ip);
        self.table.with(&key, |m| {
            if let Some(f) = m.get_mut(&key) {
                f.count = f.count.saturating_sub(1);
                if f.count == 0 {
                    m.remove(&key);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn address_and_network_caps_are_counted_and_released() {
        let t = Arc::new(ClientTable::default());
        let caps = Caps {
            per_address: 2,
            per_network: 3,
        };
        let a1 = t.admit(ip("10.0.0.1"), caps).unwrap();
        let _a2 = t.admit(ip("10.0.0.1"), caps).unwrap();
        assert_eq!(t.admit(ip("10.0.0.1"), caps).err(), Some(OverCap::Address));
        let _b1 = t.admit(ip("10.0.0.2"), caps).unwrap();
        assert_eq!(t.admit(ip("10.0.0.3"), caps).err(), Some(OverCap::Network));
        // The refused network attempt did not keep an address count.
        assert_eq!(t.sessions_of(ip("10.0.0.3")), 0);
        let _c = t.admit(ip("10.0.1.1"), caps).unwrap();
        drop(a1);
        assert_eq!(t.sessions_of(ip("10.0.0.1")), 1);
        let _a3 = t.admit(ip("10.0.0.1"), caps).unwrap();
        // IPv6: one /64 is one network; mapped IPv4 is IPv4.
        let _d = t.admit(ip("2001:db8::1"), caps).unwrap();
        let _e = t.admit(ip("2001:db8::2"), caps).unwrap();
        let _f = t.admit(ip("2001:db8::3"), caps).unwrap();
        assert_eq!(
            t.admit(ip("2001:db8::4"), caps).err(),
            Some(OverCap::Network)
        );
        assert_eq!(t.sessions_of(ip("::ffff:10.0.0.1")), 2);
        let unlimited = Caps {
            per_address: 0,
            per_network: 0,
        };
        let many: Vec<_> = (0..100)
            .map(|_| t.admit(ip("10.0.0.1"), unlimited).unwrap())
            .collect();
        // Uncapped sessions are not counted (nor do they count against
        // capped clients of the same address).
        assert_eq!(t.sessions_of(ip("10.0.0.1")), 2);
        drop(many);
        assert_eq!(t.sessions_of(ip("10.0.0.1")), 2);
    }

    #[test]
    fn failures_lock_an_address_out_for_the_window() {
        let f = AuthFailures::default();
        let limit = FailureLimit {
            max: 2,
            window: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert!(f.try_begin(a, limit, t0));
        f.succeeded(a);
        assert!(f.try_begin(a, limit, t0));
        assert!(f.try_begin(a, limit, t0));
        assert!(!f.try_begin(a, limit, t0), "third attempt in the window");
        assert!(f.try_begin(ip("192.0.2.2"), limit, t0), "other address");
        assert!(f.try_begin(a, limit, t0 + Duration::from_secs(61)));
        // IPv6 counts per /64.
        assert!(f.try_begin(ip("2001:db8::1"), limit, t0));
        assert!(f.try_begin(ip("2001:db8::2"), limit, t0));
        assert!(!f.try_begin(ip("2001:db8::3"), limit, t0));
        let off = FailureLimit { max: 0, ..limit };
        assert!(f.try_begin(ip("2001:db8::3"), off, t0));
    }
}
