//! Query counters shared between the socket tasks and whoever watches the
//! run (bench runner, tests).
//!
//! Totals are plain atomics so the hot path never takes a lock for them;
//! the per-name map sits behind a mutex because it is a test aid ("the
//! resolver sent exactly one MX query for d5.test") and can be switched
//! off with `DnsOptions::count_names`. Counters for a query are final
//! before its response is sent, so a client that has received an answer
//! can read exact numbers; for queries that get no answer (timeouts,
//! garbage) [`DnsStats::wait_for`] awaits the update instead of sleeping.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use tokio::sync::Notify;

/// The transport a query arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP datagram.
    Udp,
    /// TCP stream (two-byte length framing).
    Tcp,
}

/// Query types with their own counter; everything else is `other_types`.
const TRACKED_TYPES: [RecordType; 10] = [
    RecordType::A,
    RecordType::NS,
    RecordType::CNAME,
    RecordType::SOA,
    RecordType::PTR,
    RecordType::MX,
    RecordType::TXT,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::ANY,
];

/// Response codes 0..=15 plus BADVERS (16).
const RCODES: usize = 17;

#[derive(Default)]
struct TransportCounters {
    queries: AtomicU64,
    responses: AtomicU64,
    truncated: AtomicU64,
    dropped: AtomicU64,
    other_types: AtomicU64,
    by_type: [AtomicU64; TRACKED_TYPES.len()],
    by_rcode: [AtomicU64; RCODES],
}

#[derive(Default)]
struct Inner {
    udp: TransportCounters,
    tcp: TransportCounters,
    malformed: AtomicU64,
    tcp_connections: AtomicU64,
    by_name: Option<Mutex<HashMap<Name, NameCounts>>>,
    changed: Notify,
}

/// Cloneable handle on the live counters of one server.
#[derive(Clone, Default)]
pub struct DnsStats {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DnsStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// Point-in-time copy of all counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSnapshot {
    /// Queries over UDP.
    pub udp: TransportSnapshot,
    /// Queries over TCP.
    pub tcp: TransportSnapshot,
    /// Packets or frames dropped without an answer because the header could
    /// not be read (shorter than 12 bytes) or had QR=1.
    pub malformed: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
    /// Per query name (lower case, no trailing dot; `.` for the root);
    /// empty when `DnsOptions::count_names` is off.
    pub by_name: BTreeMap<String, NameCounts>,
}

/// Counters of one transport. For every transport
/// `queries == responses + dropped`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportSnapshot {
    /// Messages with a readable header and QR=0.
    pub queries: u64,
    /// Responses sent.
    pub responses: u64,
    /// Responses sent with TC=1 (too big, or the `truncate` failure mode).
    pub truncated: u64,
    /// Queries deliberately left unanswered (`timeout` failure mode).
    pub dropped: u64,
    /// Queries whose single question was readable, by QTYPE (non-zero
    /// entries only; types outside the tracked set go to `other_types`).
    pub by_type: BTreeMap<RecordType, u64>,
    /// Questions of an untracked type.
    pub other_types: u64,
    /// Responses sent, by RCODE value (non-zero entries only).
    pub by_rcode: BTreeMap<u16, u64>,
}

/// Queries received for one name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameCounts {
    /// Over UDP.
    pub udp: u64,
    /// Over TCP.
    pub tcp: u64,
    /// By QTYPE, both transports together.
    pub by_type: BTreeMap<RecordType, u64>,
}

impl NameCounts {
    /// UDP plus TCP.
    pub fn total(&self) -> u64 {
        self.udp + self.tcp
    }

    /// Queries of one type, both transports.
    pub fn of_type(&self, qtype: RecordType) -> u64 {
        self.by_type.get(&qtype).copied().unwrap_or(0)
    }
}

impl TransportSnapshot {
    /// Responses sent with this RCODE.
    pub fn rcode(&self, rcode: ResponseCode) -> u64 {
        self.by_rcode.get(&u16::from(rcode)).copied().unwrap_or(0)
    }

    /// Questions of this QTYPE (0 for untracked types).
    pub fn qtype(&self, qtype: RecordType) -> u64 {
        self.by_type.get(&qtype).copied().unwrap_or(0)
    }
}

impl DnsSnapshot {
    /// Queries over both transports.
    pub fn queries(&self) -> u64 {
        self.udp.queries + self.tcp.queries
    }

    /// Responses with this RCODE over both transports.
    pub fn rcode(&self, rcode: ResponseCode) -> u64 {
        self.udp.rcode(rcode) + self.tcp.rcode(rcode)
    }

    /// Counts for one name (`d5.test` or `D5.test.`); zero if never queried.
    pub fn name(&self, name: &str) -> NameCounts {
        self.by_name
            .get(&normalise(name))
            .cloned()
            .unwrap_or_default()
    }
}

fn normalise(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some("") | None => lower,
        Some(stripped) => stripped.to_string(),
    }
}

fn name_key(name: &Name) -> String {
    if name.is_root() {
        ".".to_string()
    } else {
        normalise(&name.to_ascii())
    }
}

impl DnsStats {
    /// Fresh counters; `count_names` enables the per-name map.
    pub fn new(count_names: bool) -> Self {
        DnsStats {
            inner: Arc::new(Inner {
                by_name: count_names.then(|| Mutex::new(HashMap::new())),
                ..Inner::default()
            }),
        }
    }

    fn transport(&self, t: Transport) -> &TransportCounters {
        match t {
            Transport::Udp => &self.inner.udp,
            Transport::Tcp => &self.inner.tcp,
        }
    }

    pub(crate) fn malformed(&self) {
        self.inner.malformed.fetch_add(1, Relaxed);
    }

    pub(crate) fn tcp_connection(&self) {
        self.inner.tcp_connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn query(&self, t: Transport) {
        self.transport(t).queries.fetch_add(1, Relaxed);
    }

    pub(crate) fn question(&self, t: Transport, name: &Name, qtype: RecordType) {
        let c = self.transport(t);
        match TRACKED_TYPES.iter().position(|&k| k == qtype) {
            Some(i) => {
                if let Some(slot) = c.by_type.get(i) {
                    slot.fetch_add(1, Relaxed);
                }
            }
            None => {
                c.other_types.fetch_add(1, Relaxed);
            }
        }
        if let Some(map) = &self.inner.by_name {
            let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = match map.get_mut(name) {
                Some(e) => e,
                None => map.entry(name.to_lowercase()).or_default(),
            };
            match t {
                Transport::Udp => entry.udp += 1,
                Transport::Tcp => entry.tcp += 1,
            }
            *entry.by_type.entry(qtype).or_default() += 1;
        }
    }

    pub(crate) fn dropped(&self, t: Transport) {
        self.transport(t).dropped.fetch_add(1, Relaxed);
    }

    pub(crate) fn response(&self, t: Transport, rcode: ResponseCode, truncated: bool) {
        let c = self.transport(t);
        c.responses.fetch_add(1, Relaxed);
        if truncated {
            c.truncated.fetch_add(1, Relaxed);
        }
        let code = usize::from(u16::from(rcode)).min(RCODES - 1);
        if let Some(slot) = c.by_rcode.get(code) {
            slot.fetch_add(1, Relaxed);
        }
    }

    /// Wakes [`wait_for`](Self::wait_for) callers; called once per packet.
    pub(crate) fn notify(&self) {
        self.inner.changed.notify_waiters();
    }

    /// Copies all counters.
    pub fn snapshot(&self) -> DnsSnapshot {
        let by_name = match &self.inner.by_name {
            Some(map) => map
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(name, counts)| (name_key(name), counts.clone()))
                .collect(),
            None => BTreeMap::new(),
        };
        DnsSnapshot {
            udp: snapshot_transport(&self.inner.udp),
            tcp: snapshot_transport(&self.inner.tcp),
            malformed: self.inner.malformed.load(Relaxed),
            tcp_connections: self.inner.tcp_connections.load(Relaxed),
            by_name,
        }
    }

    /// Counts for one name (`d5.test` or `D5.test.`); zero if never queried.
    pub fn name(&self, name: &str) -> NameCounts {
        let Some(map) = &self.inner.by_name else {
            return NameCounts::default();
        };
        let Ok(parsed) = super::zone::parse_name(name) else {
            return NameCounts::default();
        };
        map.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&parsed)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `pred` holds for a snapshot, re-checking after every
    /// packet the server handles. Use it for events that produce no
    /// response (dropped or malformed queries); wrap it in
    /// `tokio::time::timeout` to bound the wait.
    pub async fn wait_for(&self, mut pred: impl FnMut(&DnsSnapshot) -> bool) -> DnsSnapshot {
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let snap = self.snapshot();
            if pred(&snap) {
                return snap;
            }
            notified.await;
        }
    }
}

fn snapshot_transport(c: &TransportCounters) -> TransportSnapshot {
    let by_type = TRACKED_TYPES
        .iter()
        .zip(&c.by_type)
        .filter_map(|(&t, n)| {
            let n = n.load(Relaxed);
            (n > 0).then_some((t, n))
        })
        .collect();
    let by_rcode = c
        .by_rcode
        .iter()
        .enumerate()
        .filter_map(|(code, n)| {
            let n = n.load(Relaxed);
            (n > 0).then_some((u16::try_from(code).unwrap_or(u16::MAX), n))
        })
        .collect();
    TransportSnapshot {
        queries: c.queries.load(Relaxed),
        responses: c.responses.load(Relaxed),
        truncated: c.truncated.load(Relaxed),
        dropped: c.dropped.load(Relaxed),
        by_type,
        other_types: c.other_types.load(Relaxed),
        by_rcode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_snapshots() {
        let s = DnsStats::new(true);
        let name = Name::from_ascii("D5.Test.").unwrap();
        s.query(Transport::Udp);
        s.question(Transport::Udp, &name, RecordType::MX);
        s.response(Transport::Udp, ResponseCode::NoError, false);
        s.query(Transport::Tcp);
        s.question(
            Transport::Tcp,
            &Name::from_ascii("d5.test.").unwrap(),
            RecordType::HINFO,
        );
        s.dropped(Transport::Tcp);
        let snap = s.snapshot();
        assert_eq!(snap.udp.qtype(RecordType::MX), 1);
        assert_eq!(snap.udp.rcode(ResponseCode::NoError), 1);
        assert_eq!(snap.tcp.other_types, 1);
        assert_eq!(snap.tcp.dropped, 1);
        let n = snap.name("d5.TEST.");
        assert_eq!((n.udp, n.tcp, n.total()), (1, 1, 2));
        assert_eq!(n.of_type(RecordType::MX), 1);
        assert_eq!(s.name("d5.test"), n);
        assert_eq!(snap.by_name.keys().collect::<Vec<_>>(), vec!["d5.test"]);
        assert_eq!(DnsStats::new(false).name("d5.test"), NameCounts::default());
    }
}
