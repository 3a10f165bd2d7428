//! Operator commands on one shard's engine, and what the control plane reads
//! from it.
//!
//! These run on the shard's own executor, called by the per-core control
//! task (`runtime::control`) with requests that came from the admin thread:
//! the engine's state stays single-owner and unlocked. Nothing here is on
//! the mail path except [`EngineControl::observe`], which the engine calls
//! once per logged outcome (a few `Cell` updates and one histogram record,
//! no allocation).

use super::engine::{ConnInfo, Dest, Engine, RetryItem};
use super::queue::Rcpt;
use crate::shard::ack::FirstOutcome;
use crate::shard::hash::canonical_domain;
use crate::smtp::client::Outcome;
use crate::smtp::Reply;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Which destinations a pause, resume or flush applies to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Target {
    /// One destination domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Every destination in this queue.
    #[serde(default)]
    pub queue: Option<String>,
}

/// Which queued recipients a bounce or delete applies to; every given
/// field must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Recipient domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Envelope sender (exact, case-insensitive; `""` for the null sender).
    #[serde(default)]
    pub sender: Option<String>,
    /// Queue id, hex as in the 250 reply.
    #[serde(default)]
    pub message_id: Option<String>,
}

impl Filter {
    /// Whether no field is set (refused: it would match everything).
    pub fn is_empty(&self) -> bool {
        self.domain.is_none() && self.sender.is_none() && self.message_id.is_none()
    }

    /// The queue id, parsed.
    pub fn id(&self) -> Result<Option<u64>, String> {
        match &self.message_id {
            None => Ok(None),
            Some(s) => parse_queue_id(s).map(Some),
        }
    }
}

/// Parses a queue id as printed in the 250 reply (16 hex digits).
pub fn parse_queue_id(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim(), 16).map_err(|_| format!("`{s}` is not a queue id (hex)"))
}

/// One destination of one shard, for `destinations` and `queues`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestInfo {
    /// The shard that owns it.
    pub shard: usize,
    /// Domain, or `fallback:<queue>`.
    pub destination: String,
    /// The sender pool of this sub-queue of the domain, if any.
    #[serde(default)]
    pub pool: Option<String>,
    /// The queue whose limits apply.
    pub queue: String,
    /// Recipients waiting for a connection.
    pub waiting: usize,
    /// Recipients in the retry heap.
    pub deferred: usize,
    /// Age in seconds of the oldest queued message (waiting or deferred).
    pub oldest_age_secs: Option<f64>,
    /// Seconds until its earliest retry (0 when due).
    pub next_attempt_secs: Option<f64>,
    /// Connections open.
    pub active_connections: usize,
    /// Paused by the operator (the destination or its queue).
    pub paused: bool,
    /// Recipients delivered, deferred (events), bounced, expired so far.
    pub delivered: u64,
    /// Deferral events.
    pub deferred_total: u64,
    /// Recipients bounced.
    pub bounced: u64,
    /// Recipients expired.
    pub expired: u64,
    /// The controller's allowed rate in messages a second; null while the
    /// destination is not paced (no throttling signal yet).
    pub rate: Option<f64>,
    /// Connections allowed now (static limit, controller, source pool).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// The last signal that changed the controller (`throttled (421)`,
    /// `throttle 80%`, `suspend 60s`…).
    #[serde(default)]
    pub last_signal: Option<String>,
    /// Unix time the suspension (or the warm-up cap) ends.
    #[serde(default)]
    pub suspended_until: Option<f64>,
    /// Messages sent today and today's cap, under a warm-up schedule.
    #[serde(default)]
    pub warmup: Option<(u64, u64)>,
}

/// A recipient of a traced message still queued on a shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedRcpt {
    /// The shard holding it.
    pub shard: usize,
    /// Its destination.
    pub destination: String,
    /// The recipient.
    pub recipient: String,
    /// `waiting` or `deferred`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Seconds until the retry, when deferred.
    pub next_attempt_secs: Option<f64>,
}

/// Latency summary of one shard (accept → delivered, seconds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    /// `(quantile, seconds)` for 0.5, 0.9, 0.99, 0.999.
    pub quantiles: Vec<(f64, f64)>,
    /// Deliveries recorded.
    pub count: u64,
    /// Sum of the recorded latencies, seconds.
    pub sum: f64,
}

impl LatencySummary {
    /// The summary of a histogram of microseconds; `sum` in seconds.
    pub fn from_micros(h: &hdrhistogram::Histogram<u64>, sum: f64) -> Self {
        LatencySummary {
            quantiles: [0.5, 0.9, 0.99, 0.999]
                .iter()
                .map(|&q| (q, h.value_at_quantile(q) as f64 / 1e6))
                .collect(),
            count: h.len(),
            sum,
        }
    }
}

/// Per-destination operator state and counters, kept on the [`Dest`].
#[derive(Debug, Default)]
pub struct DestControl {
    pub(super) paused: Cell<bool>,
    delivered: Cell<u64>,
    deferred: Cell<u64>,
    bounced: Cell<u64>,
    expired: Cell<u64>,
}

impl DestControl {
    /// Outcomes counted so far: delivered, deferred, bounced, expired.
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        (
            self.delivered.get(),
            self.deferred.get(),
            self.bounced.get(),
            self.expired.get(),
        )
    }
}

impl Dest {
    /// Whether the operator paused this destination or its queue: no new
    /// transaction starts; recipients keep waiting.
    pub fn is_paused(&self) -> bool {
        self.ctl.paused.get() || self.queue.borrow().paused.get()
    }
}

/// Shard-wide control-plane state the engine keeps.
pub struct EngineControl {
    // `None` only if hdrhistogram refused the (constant) bounds.
    latency: RefCell<Option<Histogram<u64>>>,
    latency_sum_us: Cell<u64>,
    deleted: Cell<u64>,
}

/// Longest latency the histogram resolves (one week, in µs); longer ones
/// are recorded as this value.
const MAX_LATENCY_US: u64 = 7 * 86_400 * 1_000_000;

impl EngineControl {
    /// Empty counters and histogram.
    pub fn new() -> Self {
        // Two significant digits from 1 µs to a week: fixed size (tens of
        // KiB), so recording never allocates.
        EngineControl {
            latency: RefCell::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).ok()),
            latency_sum_us: Cell::new(0),
            deleted: Cell::new(0),
        }
    }

    /// Counts one logged event for its destination; a delivery also feeds
    /// the latency histogram (accept time from the queue id's µs).
    pub(super) fn observe(&self, event: &str, dest: &Dest, rcpt: &Rcpt) {
        let c = &dest.ctl;
        let bump = |cell: &Cell<u64>| cell.set(cell.get() + 1);
        match event {
            "delivered" => {
                bump(&c.delivered);
                let us = now_us().saturating_sub(rcpt.msg.id >> 8).max(1);
                if let Some(h) = self.latency.borrow_mut().as_mut() {
                    h.saturating_record(us.min(MAX_LATENCY_US));
                }
                self.latency_sum_us
                    .set(self.latency_sum_us.get().saturating_add(us));
            }
            "deferred" => bump(&c.deferred),
            "bounced" => bump(&c.bounced),
            "expired" => bump(&c.expired),
            "deleted" => bump(&self.deleted),
            _ => {}
        }
    }
}

impl Default for EngineControl {
    fn default() -> Self {
        Self::new()
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn age_secs(msg_id: u64) -> f64 {
    now_us().saturating_sub(msg_id >> 8) as f64 / 1e6
}

fn secs_until(due: Instant, now: Instant) -> f64 {
    due.saturating_duration_since(now).as_secs_f64()
}

impl Engine {
    fn matching(&self, t: &Target) -> Vec<Rc<Dest>> {
        let domain = t.domain.as_deref().map(canonical_domain);
        self.dests
            .borrow()
            .values()
            .filter(|d| domain.as_deref().map_or(true, |x| *d.domain == *x))
            .filter(|d| {
                t.queue
                    .as_deref()
                    .map_or(true, |q| *d.queue.borrow().name == *q)
            })
            .cloned()
            .collect()
    }

    /// Pauses or resumes a domain (created if unseen, so mail arriving
    /// later waits too) or a whole queue. Returns the destinations and
    /// queues changed. Resuming kicks: idle connections wake, new ones start.
    pub fn set_paused(self: &Rc<Self>, t: &Target, paused: bool) -> usize {
        let mut n = 0;
        if let Some(q) = &t.queue {
            for queue in self.queues().all().filter(|x| *x.name == **q) {
                queue.paused.set(paused);
                n += 1;
            }
        }
        let dests = match &t.domain {
            Some(d) if t.queue.is_none() => {
                // The domain's own destination (made now if unseen, so
                // mail arriving later waits too) and its pools' sub-queues.
                let mut v = vec![self.dest(&canonical_domain(d), None)];
                v.extend(self.matching(t).into_iter().filter(|x| x.pool().is_some()));
                v
            }
            _ => self.matching(t),
        };
        for d in &dests {
            if t.domain.is_some() {
                d.ctl.paused.set(paused);
                n += 1;
            }
            if !paused {
                d.work.notify(usize::MAX);
                self.kick(d);
            }
        }
        n
    }

    /// Moves the targeted destinations' deferred recipients to the front of
    /// their waiting queues and kicks them. Returns the recipients moved.
    pub fn flush(self: &Rc<Self>, t: &Target) -> usize {
        let dests = self.matching(t);
        let hit = |d: &Rc<Dest>| dests.iter().any(|x| Rc::ptr_eq(x, d));
        let mut moved: Vec<RetryItem> = Vec::new();
        {
            let mut heap = self.retry.borrow_mut();
            let all = std::mem::take(&mut *heap).into_vec();
            let mut keep = Vec::with_capacity(all.len());
            for i in all {
                if hit(&i.dest) {
                    moved.push(i);
                } else {
                    keep.push(i);
                }
            }
            *heap = keep.into();
        }
        // Earliest due first once at the front: push in reverse.
        moved.sort_by_key(|i| std::cmp::Reverse(i.due));
        let n = moved.len();
        for i in moved {
            i.dest.waiting.borrow_mut().push_front(i.rcpt);
        }
        for d in &dests {
            self.kick(d);
        }
        n
    }

    /// Bounces (final failure, DSN) or deletes (silently, logged
    /// `deleted`) every waiting or deferred recipient matching `f`.
    /// Recipients in a transaction on the wire now are not touched.
    /// Returns the count.
    pub fn remove(self: &Rc<Self>, f: &Filter, bounce: bool) -> Result<usize, String> {
        let id = f.id()?;
        let domain = f.domain.as_deref().map(canonical_domain);
        let sender = f.sender.as_deref().map(str::to_ascii_lowercase);
        let matches = |r: &Rcpt| {
            id.map_or(true, |i| r.msg.id == i)
                && sender
                    .as_deref()
                    .map_or(true, |s| r.msg.reverse_path.eq_ignore_ascii_case(s))
                && domain.as_deref().map_or(true, |d| {
                    canonical_domain(crate::shard::hash::domain_of(&r.addr)) == d
                })
        };
        let mut victims: Vec<(Rc<Dest>, Rcpt)> = Vec::new();
        for d in self.dests.borrow().values() {
            let mut w = d.waiting.borrow_mut();
            if !w.iter().any(&matches) {
                continue;
            }
            for r in w.drain_all() {
                if matches(&r) {
                    victims.push((d.clone(), r));
                } else {
                    w.push(r);
                }
            }
        }
        {
            let mut heap = self.retry.borrow_mut();
            let all = std::mem::take(&mut *heap).into_vec();
            let mut keep = Vec::with_capacity(all.len());
            for i in all {
                if matches(&i.rcpt) {
                    victims.push((i.dest, i.rcpt));
                } else {
                    keep.push(i);
                }
            }
            *heap = keep.into();
        }
        let n = victims.len();
        let via = ConnInfo::default();
        let bounced = Outcome::Bounced(Arc::new(Reply::new(
            550,
            Some((5, 0, 0)),
            "bounced by the operator",
        )));
        let deleted = Reply::new(550, Some((5, 0, 0)), "deleted by the operator");
        for (dest, rcpt) in victims {
            if bounce {
                self.outcome(&dest, rcpt, &bounced, &via);
            } else {
                // A client still waiting (`ack = "downstream"`) hears a
                // failure rather than waiting for its timeout.
                if rcpt.attempts == 0 {
                    if let Some(ack) = &rcpt.msg.ack {
                        ack.record(FirstOutcome::Bounced, &deleted);
                    }
                }
                // Journaled like any final outcome: without the record a
                // restart would bring the deleted mail back and deliver it.
                self.record(&rcpt, crate::journal::Outcome::Deleted);
                self.log_entry("deleted", &dest, &rcpt, &deleted, &via);
                self.finish(&rcpt);
            }
        }
        Ok(n)
    }

    /// The destinations matching `t` (all when empty), with their queues'
    /// state.
    pub fn dest_infos(&self, shard: usize, t: &Target) -> Vec<DestInfo> {
        let now = Instant::now();
        // One pass over the retry heap: count and earliest due per dest.
        let mut deferred: HashMap<*const Dest, (usize, Instant, u64)> = HashMap::new();
        for i in self.retry.borrow().iter() {
            let e = deferred
                .entry(Rc::as_ptr(&i.dest))
                .or_insert((0, i.due, i.rcpt.msg.id));
            e.0 += 1;
            e.1 = e.1.min(i.due);
            e.2 = e.2.min(i.rcpt.msg.id);
        }
        let mut out: Vec<DestInfo> = self
            .matching(t)
            .iter()
            .map(|d| {
                let (dcount, due, oldest_deferred) = deferred
                    .get(&Rc::as_ptr(d))
                    .map_or((0, None, None), |(n, due, id)| (*n, Some(*due), Some(*id)));
                let oldest_waiting = d.waiting.borrow().iter().map(|r| r.msg.id).min();
                let oldest = match (oldest_waiting, oldest_deferred) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let (delivered, deferred_total, bounced, expired) = d.ctl.totals();
                let queue = d.queue();
                let pool = d.pool();
                let src = queue.shaping.sources(pool.as_deref());
                let shaper = d.shaper.borrow();
                let unix = now_us() / 1_000_000;
                let warmup = shaper.warmup_state(src, unix);
                let until = shaper
                    .ctl
                    .suspended_until()
                    .filter(|t| *t > now)
                    .or_else(|| {
                        // Over the warm-up cap: closed until the next UTC day.
                        warmup
                            .filter(|(sent, cap)| sent >= cap)
                            .map(|_| now + std::time::Duration::from_secs(86_400 - unix % 86_400))
                    });
                DestInfo {
                    shard,
                    destination: d.domain.to_string(),
                    pool: pool.as_ref().map(|p| p.name.to_string()),
                    queue: d.queue.borrow().name.to_string(),
                    waiting: d.waiting(),
                    deferred: dcount,
                    oldest_age_secs: oldest.map(age_secs),
                    next_attempt_secs: due.map(|x| secs_until(x, now)),
                    active_connections: d.active(),
                    paused: d.is_paused(),
                    delivered,
                    deferred_total,
                    bounced,
                    expired,
                    rate: if queue.shaping.adaptive {
                        shaper.ctl.rate()
                    } else {
                        None
                    },
                    concurrency: Some(shaper.connection_cap(
                        &queue.shaping,
                        src,
                        queue.max_connections_per_destination,
                    )),
                    last_signal: shaper.ctl.last_signal().map(str::to_string),
                    suspended_until: until.map(|t| {
                        now_us() as f64 / 1e6 + t.saturating_duration_since(now).as_secs_f64()
                    }),
                    warmup,
                }
            })
            .collect();
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        out
    }

    /// Where the recipients of message `id` on this shard are now.
    pub fn trace(&self, shard: usize, id: u64) -> Vec<QueuedRcpt> {
        let now = Instant::now();
        let mut out = Vec::new();
        for d in self.dests.borrow().values() {
            for r in d.waiting.borrow().iter().filter(|r| r.msg.id == id) {
                out.push(QueuedRcpt {
                    shard,
                    destination: d.domain.to_string(),
                    recipient: r.addr.to_string(),
                    state: "waiting".into(),
                    attempts: r.attempts,
                    next_attempt_secs: None,
                });
            }
        }
        for i in self.retry.borrow().iter().filter(|i| i.rcpt.msg.id == id) {
            out.push(QueuedRcpt {
                shard,
                destination: i.dest.domain.to_string(),
                recipient: i.rcpt.addr.to_string(),
                state: "deferred".into(),
                attempts: i.rcpt.attempts,
                next_attempt_secs: Some(secs_until(i.due, now)),
            });
        }
        out
    }

    /// Recipients waiting for a connection, all destinations.
    pub fn waiting_total(&self) -> usize {
        self.dests.borrow().values().map(|d| d.waiting()).sum()
    }

    /// Recipients deleted by the operator.
    pub fn deleted(&self) -> u64 {
        self.ctl.deleted.get()
    }

    /// The delivery latency summary (accept → delivered).
    pub fn latency(&self) -> LatencySummary {
        let h = self.ctl.latency.borrow();
        match h.as_ref() {
            Some(h) => LatencySummary::from_micros(h, self.ctl.latency_sum_us.get() as f64 / 1e6),
            None => LatencySummary::default(),
        }
    }
}

/// One queue on one shard: its destinations' totals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueInfo {
    /// The shard.
    pub shard: usize,
    /// Queue name.
    pub queue: String,
    /// Destinations seen in it.
    pub destinations: usize,
    /// Recipients waiting.
    pub waiting: usize,
    /// Recipients in the retry heap.
    pub deferred: usize,
    /// Connections open.
    pub active_connections: usize,
    /// Destinations paused.
    pub paused: usize,
    /// Recipients delivered so far.
    pub delivered: u64,
    /// Deferral events so far.
    pub deferred_total: u64,
    /// Recipients bounced so far.
    pub bounced: u64,
    /// Recipients expired so far.
    pub expired: u64,
}

/// Sums destinations by queue, in queue-name order.
pub fn queue_infos(shard: usize, dests: &[DestInfo]) -> Vec<QueueInfo> {
    let mut by: std::collections::BTreeMap<&str, QueueInfo> = std::collections::BTreeMap::new();
    for d in dests {
        let q = by.entry(d.queue.as_str()).or_insert_with(|| QueueInfo {
            shard,
            queue: d.queue.clone(),
            ..QueueInfo::default()
        });
        q.destinations += 1;
        q.waiting += d.waiting;
        q.deferred += d.deferred;
        q.active_connections += d.active_connections;
        q.paused += usize::from(d.paused);
        q.delivered += d.delivered;
        q.deferred_total += d.deferred_total;
        q.bounced += d.bounced;
        q.expired += d.expired;
    }
    by.into_values().collect()
}

impl Engine {
    /// The shard resolver's counters.
    pub fn resolver_stats(&self) -> crate::dns::ResolverStats {
        self.resolver().stats()
    }
}
