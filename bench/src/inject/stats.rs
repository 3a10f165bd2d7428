//! Per-connection tallies. Each connection task owns its counters and
//! histogram outright, so recording a transaction is a few plain adds;
//! they are merged once at the end of the run.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

use crate::smtp::reply::ReplyCode;

/// Counters for one connection task (and, after merging, the whole run).
#[derive(Debug, Clone)]
pub(crate) struct ConnStats {
    /// Transaction latency in microseconds.
    pub(crate) latency: Histogram<u64>,
    pub(crate) transactions: u64,
    pub(crate) accepted_messages: u64,
    pub(crate) accepted_rcpts: u64,
    pub(crate) aborted: u64,
    pub(crate) sessions: u64,
    pub(crate) connect_errors: u64,
    pub(crate) connection_errors: u64,
    pub(crate) per_domain: Vec<u64>,
    pub(crate) codes: HashMap<ReplyCode, u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) modes: BTreeMap<&'static str, u64>,
    /// `(sequence, accepted recipients)` of every acknowledged message,
    /// kept only with [`InjectOptions::record_acks`](super::InjectOptions::record_acks).
    pub(crate) acks: Vec<(u64, u32)>,
}

impl ConnStats {
    /// `histogram` is an empty histogram with the run's bounds, created
    /// once so that construction errors surface before any connection.
    pub(crate) fn new(domains: usize, histogram: &Histogram<u64>) -> Self {
        ConnStats {
            latency: histogram.clone(),
            transactions: 0,
            accepted_messages: 0,
            accepted_rcpts: 0,
            aborted: 0,
            sessions: 0,
            connect_errors: 0,
            connection_errors: 0,
            per_domain: vec![0; domains],
            codes: HashMap::new(),
            errors: BTreeMap::new(),
            modes: BTreeMap::new(),
            acks: Vec::new(),
        }
    }

    pub(crate) fn count_reply(&mut self, code: ReplyCode) {
        *self.codes.entry(code).or_default() += 1;
    }

    pub(crate) fn count_error(&mut self, label: String) {
        *self.errors.entry(label).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: &ConnStats) {
        // Adding histograms with identical bounds cannot fail; a failure
        // would only lose latency samples, not counts.
        let _ = self.latency.add(&other.latency);
        self.transactions += other.transactions;
        self.accepted_messages += other.accepted_messages;
        self.accepted_rcpts += other.accepted_rcpts;
        self.aborted += other.aborted;
        self.sessions += other.sessions;
        self.connect_errors += other.connect_errors;
        self.connection_errors += other.connection_errors;
        for (mine, theirs) in self.per_domain.iter_mut().zip(&other.per_domain) {
            *mine += theirs;
        }
        for (code, n) in &other.codes {
            *self.codes.entry(*code).or_default() += n;
        }
        for (label, n) in &other.errors {
            *self.errors.entry(label.clone()).or_default() += n;
        }
        for (mode, n) in &other.modes {
            *self.modes.entry(mode).or_default() += n;
        }
        self.acks.extend_from_slice(&other.acks);
    }
}

/// Live totals of a running injection, readable while it runs: the
/// progress display uses them, and so does `sluice-bench run` to show
/// injected-versus-received and to time a crash of the system under test.
#[derive(Debug, Default)]
pub struct Live {
    done: AtomicU64,
    accepted: AtomicU64,
    aborted: AtomicU64,
}

impl Live {
    /// Transactions finished so far, whatever their outcome (aborted ones included).
    pub fn done(&self) -> u64 {
        self.done.load(Relaxed)
    }

    /// Messages accepted by the target so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    /// Transactions lost with their connection so far.
    pub fn aborted(&self) -> u64 {
        self.aborted.load(Relaxed)
    }

    pub(crate) fn record(&self, accepted: bool) {
        self.done.fetch_add(1, Relaxed);
        if accepted {
            self.accepted.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn record_aborted(&self, n: u64) {
        self.done.fetch_add(n, Relaxed);
        self.aborted.fetch_add(n, Relaxed);
    }
}
