//! The per-shard delivery engine: destinations, their queues, connection
//! tasks, retries and outcomes.
//!
//! Everything here runs on one executor and is owned by one shard, so state
//! is `Rc`/`Cell`/`RefCell` and never locked. No `RefCell` borrow is held
//! across an `.await`.
//!
//! Scheduling is by tasks, not by a central loop: each destination has up
//! to its queue's `max_connections_per_destination` connection tasks, each
//! pulling transactions from the destination's recipients. glommio runs
//! ready tasks round-robin, so every destination with work gets turns and
//! one slow or hung receiver only ties up its own connections (no
//! head-of-line blocking). Deferred recipients wait in a timer heap served
//! by one task.
//!
//! Connections are bounded three ways: per destination and per queue (see
//! [`super::queues`]) and by the shard's connection budget. When the budget
//! is full, a destination that needs a connection closes the least recently
//! used idle one; when none is idle it waits its turn in a FIFO that every
//! closing connection serves.

use super::log::{DeliveryLog, Entry};
use super::queue::{Msg, Rcpt, RcptQueue};
use super::queues::{Queue, Queues};
use super::shaping::pools::SourcePool;
use crate::dns::{Destination, ResolveError, Resolver, RouteTarget};
use crate::journal::{Journal, Outcome as Recorded};
use crate::shard::ack::{Decision, FirstOutcome};
use crate::shard::{Backlog, Envelope, ShardLoad};
use crate::smtp::client::Outcome;
use crate::smtp::Reply;
use event_listener::Event;
use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Settings the engine needs, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Our host name (DSNs).
    pub hostname: String,
    /// Outbound connections this shard may hold open at once.
    pub max_connections: Cell<usize>,
    /// TCP connect timeout per address.
    pub connect_timeout: Cell<Duration>,
    /// Whether to verify server certificates on STARTTLS.
    pub tls_verify: bool,
    /// Where delivery would reach our own listeners (mail loops).
    pub own_addresses: RefCell<super::loop_guard::OwnAddresses>,
    /// A destination with nothing queued, running or remembered is
    /// forgotten after this long without activity.
    pub destination_expiry: Cell<Duration>,
}

/// Per-shard delivery counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeliveryCounters {
    /// Recipients delivered.
    pub delivered: u64,
    /// Deferral events.
    pub deferred: u64,
    /// Recipients bounced.
    pub bounced: u64,
    /// Recipients expired (bounced after `message_expiry`).
    pub expired: u64,
    /// DSNs generated.
    pub dsns: u64,
    /// Outbound connections opened.
    pub connections: u64,
    /// Idle connections closed to make room under the shard budget.
    pub evicted: u64,
    /// Recipients dropped because the client was told 4xx/5xx (`ack = "downstream"`).
    pub returned: u64,
}

/// One destination of this shard: a domain, or a queue's fallback route.
pub struct Dest {
    /// The domain (lower case), or `fallback:<queue>`.
    pub domain: Rc<str>,
    /// The queue whose limits apply.
    pub(super) queue: RefCell<Rc<Queue>>,
    /// Whether MX patterns were checked against its hosts yet.
    pub(super) mx_placed: Cell<bool>,
    /// For a fallback destination: where it goes instead of MX lookup.
    pub(super) fallback: Option<Rc<RouteTarget>>,
    /// Recipients waiting for a connection.
    pub(super) waiting: RefCell<RcptQueue>,
    pub(super) active: Cell<usize>,
    pub(super) idle: Cell<usize>,
    pub(super) work: Event,
    starved: Cell<bool>,
    /// Operator state (paused) and per-destination counters.
    pub(super) ctl: super::control::DestControl,
    /// Feed-rate controller, rate limits, warm-up, source addresses.
    pub(super) shaper: RefCell<super::shaping::Shaper>,
    /// The sender pool its mail leaves from (`None`: the queue's sources).
    pub(super) pool: RefCell<Option<Rc<SourcePool>>>,
    /// Work arrived or an outcome came in since the last expiry sweep.
    seen: Cell<bool>,
    /// Consecutive expiry sweeps that found it idle.
    idle_sweeps: Cell<u32>,
}

impl Dest {
    /// The sender pool its mail leaves from, if any.
    pub fn pool(&self) -> Option<Rc<SourcePool>> {
        self.pool.borrow().clone()
    }

    /// The queue whose limits apply now.
    pub fn queue(&self) -> Rc<Queue> {
        self.queue.borrow().clone()
    }

    /// Recipients waiting for a connection.
    pub fn waiting(&self) -> usize {
        self.waiting.borrow().len()
    }

    /// Connections open.
    pub fn active(&self) -> usize {
        self.active.get()
    }
}

/// An idle connection's place in the LRU: the engine sets `evicted` and
/// wakes it to take its budget slot.
pub(super) struct IdleTicket {
    pub(super) evicted: Cell<bool>,
    pub(super) wake: Event,
    queue: Rc<Queue>,
}

/// What [`Engine::kick`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kick {
    /// Nothing needed (no work, an idle connection woken, enough running).
    Done,
    /// A new connection was started.
    Started,
    /// The destination or its queue is at its limit.
    AtLimit,
    /// The shard budget is full and nothing idle could be closed.
    NoBudget,
}

pub(super) struct RetryItem {
    pub(super) due: Instant,
    seq: u64,
    pub(super) dest: Rc<Dest>,
    pub(super) rcpt: Rcpt,
}

impl PartialEq for RetryItem {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due && self.seq == o.seq
    }
}
impl Eq for RetryItem {}
impl PartialOrd for RetryItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for RetryItem {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.due.cmp(&self.due).then(o.seq.cmp(&self.seq))
    }
}

/// Failed recipients of one message waiting to be reported in one DSN.
pub(super) struct PendingDsn {
    pub msg: Rc<Msg>,
    pub failed: Vec<(Arc<str>, String, Option<String>, String)>,
    /// Final outcomes journaled only once the DSN itself is durable, so a
    /// crash in between re-tries (and bounces again) instead of losing it.
    pub records: Vec<(u32, Recorded)>,
}

/// A DSN ready to go to its shard. Under a journal it carries an
/// acknowledgement: once the DSN is stored, [`Engine::dsn_stored`] journals
/// the bounced recipients' final outcomes; if it could not be stored,
/// [`Engine::dsn_refused`] keeps it for the next round.
pub struct DsnOut {
    /// The DSN message.
    pub envelope: Envelope,
    /// What to journal once it is stored.
    pub done: Option<DsnRecords>,
}

/// The original message's final outcomes that wait for its DSN.
pub struct DsnRecords {
    msg_id: u64,
    records: Vec<(u32, Recorded)>,
    envelope: Envelope,
}

/// Where a connection got to, for the log.
#[derive(Debug, Default, Clone)]
pub struct ConnInfo {
    /// MX host name.
    pub mx: Option<String>,
    /// Remote address.
    pub ip: Option<std::net::IpAddr>,
    /// Our address on the connection.
    pub source: Option<std::net::IpAddr>,
    /// TLS version.
    pub tls: Option<&'static str>,
    /// TLS cipher.
    pub cipher: Option<String>,
}

/// The shard's delivery engine.
pub struct Engine {
    pub(super) settings: EngineSettings,
    queues: RefCell<Rc<Queues>>,
    resolver: RefCell<Rc<Resolver>>,
    pub(super) dests: RefCell<HashMap<Rc<str>, Rc<Dest>>>,
    conns: Cell<usize>,
    idle_lru: RefCell<VecDeque<Weak<IdleTicket>>>,
    starved: RefCell<VecDeque<Rc<Dest>>>,
    pub(super) retry: RefCell<BinaryHeap<RetryItem>>,
    retry_seq: Cell<u64>,
    retry_wake: Event,
    pub(super) log: Rc<DeliveryLog>,
    counters: Cell<DeliveryCounters>,
    backlog: Rc<RefCell<Backlog>>,
    load: Arc<ShardLoad>,
    dsns: RefCell<Vec<PendingDsn>>,
    dsn_retry: RefCell<Vec<DsnRecords>>,
    pub(super) next_txn: Cell<u64>,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    journal: Option<Rc<Journal>>,
    draining: Cell<bool>,
    /// Control-plane counters and the delivery latency histogram.
    pub(super) ctl: super::control::EngineControl,
    /// Scratch space for sub-queue keys.
    key_scratch: RefCell<String>,
    /// Warm-up counts a previous run left, by destination key, for a day;
    /// taken as destinations are first seen.
    warmup_restored: RefCell<(i64, HashMap<String, u64>)>,
}

/// The furthest a recovered recipient's next attempt is put off (30 days):
/// a later recorded time is brought forward to this.
const MAX_RETRY_HORIZON_SECS: u64 = 30 * 86_400;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Engine {
    /// An engine for one shard.
    pub fn new(
        settings: EngineSettings,
        queues: Queues,
        resolver: Rc<Resolver>,
        log: Rc<DeliveryLog>,
        backlog: Rc<RefCell<Backlog>>,
        load: Arc<ShardLoad>,
        journal: Option<Rc<Journal>>,
    ) -> Rc<Self> {
        let tls = super::tls::client_config(settings.tls_verify);
        Rc::new(Engine {
            settings,
            queues: RefCell::new(Rc::new(queues)),
            resolver: RefCell::new(resolver),
            dests: RefCell::new(HashMap::new()),
            conns: Cell::new(0),
            idle_lru: RefCell::new(VecDeque::new()),
            starved: RefCell::new(VecDeque::new()),
            retry: RefCell::new(BinaryHeap::new()),
            retry_seq: Cell::new(0),
            retry_wake: Event::new(),
            log,
            counters: Cell::new(DeliveryCounters::default()),
            backlog,
            load,
            dsns: RefCell::new(Vec::new()),
            dsn_retry: RefCell::new(Vec::new()),
            next_txn: Cell::new(1),
            tls,
            journal,
            draining: Cell::new(false),
            ctl: super::control::EngineControl::new(),
            key_scratch: RefCell::new(String::new()),
            warmup_restored: RefCell::new((0, HashMap::new())),
        })
    }

    /// The delivery log.
    pub fn log(&self) -> &Rc<DeliveryLog> {
        &self.log
    }

    /// The counters so far.
    pub fn counters(&self) -> DeliveryCounters {
        self.counters.get()
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut DeliveryCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    pub(super) fn counted_connection(&self) {
        self.count(|c| c.connections += 1);
    }

    /// Outbound connections open on this shard.
    pub fn connections_open(&self) -> usize {
        self.conns.get()
    }

    /// Stopping: no new connections or transactions; idle connections
    /// close now, busy ones after the transactions on the wire.
    pub fn drain(&self) {
        self.draining.set(true);
        for d in self.dests.borrow().values() {
            d.work.notify(usize::MAX);
        }
    }

    /// Whether [`Engine::drain`] was called.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// The shard's queues (replaced on reload).
    pub fn queues(&self) -> Rc<Queues> {
        self.queues.borrow().clone()
    }

    /// The shard's resolver (replaced on reload when DNS settings change).
    pub fn resolver(&self) -> Rc<Resolver> {
        self.resolver.borrow().clone()
    }

    /// Applies a reloaded configuration: new queues and limits, new routes.
    /// Every destination is placed again (by domain now, by MX at its next
    /// connection); connections already open finish under the limits they
    /// started with. Pause flags carry over by queue name. The caller has
    /// validated `c` ([`crate::runtime::Shared::reload`]).
    pub fn reconfigure(self: &Rc<Self>, c: &crate::config::Config, shards: usize) {
        let mut defaults = c.delivery.queue_defaults(&c.hostname, c.dns.smtp_port);
        // Node-wide queue limits are divided among the shards.
        defaults.shaping.shards = shards.max(1);
        let queues = match Queues::new(&c.delivery.queues, &defaults) {
            Ok(q) => Rc::new(q),
            Err(e) => {
                tracing::error!(error = %e, "reload: queues refused; keeping the old ones");
                return;
            }
        };
        let old = self.queues();
        for q in old.all().filter(|q| q.paused.get()) {
            for n in queues.all().filter(|n| n.name == q.name) {
                n.paused.set(true);
            }
        }
        if &c.dns != self.resolver().config() {
            match Resolver::new(c.dns.clone()) {
                Ok(r) => *self.resolver.borrow_mut() = r,
                Err(e) => {
                    tracing::error!(error = %e, "reload: resolver refused; keeping the old one")
                }
            }
        }
        self.settings
            .max_connections
            .set(c.delivery.max_connections);
        self.settings
            .connect_timeout
            .set(c.delivery.connect_timeout.0);
        self.settings
            .destination_expiry
            .set(c.delivery.destination_expiry.0);
        self.settings.own_addresses.borrow_mut().reconfigure(
            &c.delivery.own_addresses,
            super::loop_guard::interface_addresses(),
        );
        *self.queues.borrow_mut() = queues.clone();
        let dests: Vec<Rc<Dest>> = self.dests.borrow().values().cloned().collect();
        for d in dests {
            if d.fallback.is_some() {
                continue;
            }
            *d.queue.borrow_mut() = queues.for_domain(&d.domain);
            // A pool the new configuration dropped: its recipients leave
            // from the queue's sources.
            let pool = d
                .pool()
                .and_then(|p| queues.pools().named(&p.name).cloned());
            *d.pool.borrow_mut() = pool;
            d.mx_placed.set(false);
            self.kick(&d);
        }
    }

    /// Every destination this shard has seen, in no particular order.
    pub fn destinations(&self) -> Vec<Rc<Dest>> {
        self.dests.borrow().values().cloned().collect()
    }

    /// Takes an envelope for delivery: one record per recipient, queued at
    /// its destination, connections started as needed.
    pub fn intake(self: &Rc<Self>, env: Envelope) {
        let msg = Rc::new(Msg {
            id: env.id,
            reverse_path: env.reverse_path,
            eight_bit: env.eight_bit,
            smtputf8: env.smtputf8,
            body: env.body,
            accepted_unix: unix_now(),
            pending: Cell::new(env.recipients.len() as u32),
            ack: env.ack,
        });
        {
            let mut b = self.backlog.borrow_mut();
            b.queued_messages += 1;
            b.queued_bytes += msg.body.len() as u64;
            b.queued_recipients += u64::from(msg.pending.get());
            self.load.publish(&b);
        }
        let queues = self.queues();
        let pool = queues.pools().for_sender(&msg.reverse_path);
        let mut touched: Vec<Rc<Dest>> = Vec::new();
        for (index, addr) in env.recipients.into_iter().enumerate() {
            let domain = crate::shard::hash::canonical_domain(crate::shard::hash::domain_of(&addr));
            let dest = self.dest(&domain, pool);
            dest.waiting.borrow_mut().push(Rcpt {
                msg: msg.clone(),
                addr: Arc::from(addr),
                attempts: 0,
                index: u32::try_from(index).unwrap_or(u32::MAX),
            });
            if !touched.iter().any(|d| Rc::ptr_eq(d, &dest)) {
                touched.push(dest);
            }
        }
        for d in touched {
            self.kick(&d);
        }
    }

    /// Puts a message recovered from the journal back in the queues: each
    /// pending recipient whose domain `mine` accepts waits for its recorded
    /// next attempt, with its attempt count. The pending recipients of other
    /// shards (after a change of core count) come back as an envelope for
    /// them, with their indexes here (to be recorded as moved once the new
    /// owner has them).
    pub fn restore(
        self: &Rc<Self>,
        m: crate::journal::RecoveredMessage,
        mine: impl Fn(&str) -> bool,
    ) -> Option<(Envelope, Vec<u32>)> {
        let pending: Vec<_> = m
            .recipients
            .into_iter()
            .filter_map(|r| match r.state {
                crate::journal::RcptState::Pending {
                    attempts,
                    next_attempt_unix,
                } if !r.addr.is_empty() => Some((r.index, r.addr, attempts, next_attempt_unix)),
                _ => None,
            })
            .collect();
        let (local, foreign): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(_, addr, _, _)| {
                mine(&crate::shard::hash::canonical_domain(
                    crate::shard::hash::domain_of(addr),
                ))
            });
        let reverse_path: Arc<str> = Arc::from(m.reverse_path.as_str());
        if !local.is_empty() {
            let msg = Rc::new(Msg {
                id: m.id,
                reverse_path: reverse_path.clone(),
                eight_bit: m.eight_bit,
                smtputf8: m.smtputf8,
                body: m.body.clone(),
                accepted_unix: m.accepted_unix,
                pending: Cell::new(local.len() as u32),
                ack: None,
            });
            {
                let mut b = self.backlog.borrow_mut();
                b.queued_messages += 1;
                b.queued_bytes += msg.body.len() as u64;
                b.queued_recipients += u64::from(msg.pending.get());
                self.load.publish(&b);
            }
            let now_unix = unix_now();
            let now = Instant::now();
            let queues = self.queues();
            let pool = queues.pools().for_sender(&msg.reverse_path);
            let mut touched: Vec<Rc<Dest>> = Vec::new();
            for (index, addr, attempts, next) in local {
                let domain =
                    crate::shard::hash::canonical_domain(crate::shard::hash::domain_of(&addr));
                let dest = self.dest(&domain, pool);
                let rcpt = Rcpt {
                    msg: msg.clone(),
                    addr: Arc::from(addr),
                    attempts,
                    index,
                };
                if next > now_unix {
                    // Checked: a recorded time is data from disk. No retry
                    // is put further off than the horizon.
                    let wait = Duration::from_secs((next - now_unix).min(MAX_RETRY_HORIZON_SECS));
                    self.schedule(dest, rcpt, now.checked_add(wait).unwrap_or(now));
                } else {
                    dest.waiting.borrow_mut().push(rcpt);
                    if !touched.iter().any(|d| Rc::ptr_eq(d, &dest)) {
                        touched.push(dest);
                    }
                }
            }
            for d in touched {
                self.kick(&d);
            }
        }
        if foreign.is_empty() {
            return None;
        }
        let indexes = foreign.iter().map(|f| f.0).collect();
        let env = Envelope {
            id: m.id,
            reverse_path,
            recipients: foreign.into_iter().map(|f| f.1).collect(),
            body: m.body,
            eight_bit: m.eight_bit,
            smtputf8: m.smtputf8,
            ack: None,
        };
        Some((env, indexes))
    }

    /// Takes the warm-up counts a previous run left for UTC day `day`.
    pub fn restore_warmup_counts(&self, day: i64, counts: HashMap<String, u64>) {
        *self.warmup_restored.borrow_mut() = (day, counts);
    }

    /// Today's warm-up counts of this shard's destinations (and those
    /// restored but not seen again yet), for the checkpoint file.
    pub fn warmup_counts(&self, today: i64) -> Vec<super::shaping::checkpoint::Count> {
        let mut out: Vec<_> = self
            .dests
            .borrow()
            .values()
            .filter_map(|d| {
                let (day, sent) = d.shaper.borrow().warmup_count()?;
                (day == today).then(|| super::shaping::checkpoint::Count {
                    destination: d.domain.to_string(),
                    pool: d.pool.borrow().as_ref().map(|p| p.name.to_string()),
                    day,
                    sent,
                })
            })
            .collect();
        let r = self.warmup_restored.borrow();
        if r.0 == today {
            for (key, sent) in &r.1 {
                let (destination, pool) = match key.split_once(' ') {
                    Some((d, p)) => (d.to_string(), Some(p.to_string())),
                    None => (key.clone(), None),
                };
                out.push(super::shaping::checkpoint::Count {
                    destination,
                    pool,
                    day: today,
                    sent: *sent,
                });
            }
        }
        out.sort_by(|a, b| (&a.destination, &a.pool).cmp(&(&b.destination, &b.pool)));
        out
    }

    /// The journal, when `ack = "journal"`.
    pub fn journal(&self) -> Option<&Rc<Journal>> {
        self.journal.as_ref()
    }

    /// The destination for `domain`'s recipients of mail from `pool`'s
    /// senders: each pool has its own sub-queue of the domain (created on
    /// first use, paused if the domain is).
    pub(super) fn dest(&self, domain: &str, pool: Option<&Rc<SourcePool>>) -> Rc<Dest> {
        // The key of a pool's sub-queue is `domain pool` (spaces occur in
        // neither), built in a reused buffer: no allocation per recipient.
        let mut keybuf = self.key_scratch.borrow_mut();
        let key = match pool {
            None => domain,
            Some(p) => {
                keybuf.clear();
                keybuf.push_str(domain);
                keybuf.push(' ');
                keybuf.push_str(&p.name);
                keybuf.as_str()
            }
        };
        if let Some(d) = self.dests.borrow().get(key) {
            return d.clone();
        }
        let paused = pool.is_some()
            && self
                .dests
                .borrow()
                .get(domain)
                .is_some_and(|d| d.ctl.paused.get());
        let d = Rc::new(Dest {
            domain: Rc::from(domain),
            queue: RefCell::new(self.queues().for_domain(domain)),
            mx_placed: Cell::new(false),
            fallback: None,
            waiting: RefCell::new(RcptQueue::default()),
            active: Cell::new(0),
            idle: Cell::new(0),
            work: Event::new(),
            starved: Cell::new(false),
            ctl: Default::default(),
            shaper: Default::default(),
            pool: RefCell::new(pool.cloned()),
            seen: Cell::new(true),
            idle_sweeps: Cell::new(0),
        });
        d.ctl.paused.set(paused);
        {
            let mut r = self.warmup_restored.borrow_mut();
            let day = r.0;
            if let Some(sent) = r.1.remove(key) {
                d.shaper.borrow_mut().restore_warmup(day, sent);
            }
        }
        self.dests.borrow_mut().insert(Rc::from(key), d.clone());
        d
    }

    /// The destination that carries `queue`'s fallback route.
    fn fallback_dest(&self, queue: &Rc<Queue>, target: &Rc<RouteTarget>) -> Rc<Dest> {
        let key = format!("fallback:{}", queue.name);
        if let Some(d) = self.dests.borrow().get(key.as_str()) {
            return d.clone();
        }
        let name: Rc<str> = Rc::from(key);
        let d = Rc::new(Dest {
            domain: name.clone(),
            queue: RefCell::new(queue.clone()),
            mx_placed: Cell::new(true),
            fallback: Some(target.clone()),
            waiting: RefCell::new(RcptQueue::default()),
            active: Cell::new(0),
            idle: Cell::new(0),
            work: Event::new(),
            starved: Cell::new(false),
            ctl: Default::default(),
            shaper: Default::default(),
            pool: RefCell::new(None),
            seen: Cell::new(true),
            idle_sweeps: Cell::new(0),
        });
        self.dests.borrow_mut().insert(name, d.clone());
        d
    }

    /// Moves a general-queue destination to the specific queue whose MX
    /// pattern matches its hosts, once, after its first resolution.
    pub(super) fn place_by_mx(&self, dest: &Dest, route: &Destination) {
        if dest.mx_placed.replace(true) {
            return;
        }
        let queues = self.queues();
        if let Some(q) = queues.for_mx(route) {
            if Rc::ptr_eq(&dest.queue(), queues.general()) {
                *dest.queue.borrow_mut() = q;
            }
        }
    }

    /// Makes sure someone works on `dest`'s recipients: wake an idle
    /// connection, or start another one while under the limits and the
    /// backlog is deeper than the active connections take in one turn.
    pub(super) fn kick(self: &Rc<Self>, dest: &Rc<Dest>) -> Kick {
        dest.seen.set(true);
        let queued = dest.waiting.borrow().len();
        if queued == 0 || dest.is_paused() {
            return Kick::Done;
        }
        // Suspended or over the warm-up cap: a timer kicks it again later.
        if self.shaping_gate(dest).is_some() {
            return Kick::AtLimit;
        }
        if dest.idle.get() > 0 {
            dest.work.notify(queued.min(dest.idle.get()));
            return Kick::Done;
        }
        let queue = dest.queue();
        let active = dest.active.get();
        let per_conn =
            queue.client.max_rcpt_per_txn.max(1) * queue.client.max_pipelined_txns.max(1);
        if active > 0 && queued <= active * per_conn {
            return Kick::Done;
        }
        if active >= self.connection_cap(dest, &queue) {
            return Kick::AtLimit;
        }
        // At the queue's or the shard's limit, a destination without any
        // connection asks the least recently used idle one (of the queue,
        // or of any queue) to close; it gets the slot when that one has
        // gone (so the limits hold on the wire too), and waits in the FIFO
        // either way. One eviction per waiting destination.
        let queue_full = queue.active.get() >= queue.max_connections;
        let budget_full = self.conns.get() >= self.settings.max_connections.get().max(1);
        if queue_full || budget_full {
            if active == 0 && !dest.starved.get() {
                self.evict_idle(queue_full.then_some(&queue));
                self.starve(dest);
            }
            return if budget_full {
                Kick::NoBudget
            } else {
                Kick::AtLimit
            };
        }
        dest.active.set(active + 1);
        queue.active.set(queue.active.get() + 1);
        self.conns.set(self.conns.get() + 1);
        let slot = super::connection::Slot::new(self.clone(), dest.clone(), queue);
        glommio::spawn_local(super::connection::run(slot)).detach();
        Kick::Started
    }

    fn starve(&self, dest: &Rc<Dest>) {
        if !dest.starved.replace(true) {
            self.starved.borrow_mut().push_back(dest.clone());
        }
    }

    /// Asks the least recently used idle connection (of `only` that queue,
    /// when given) to close. False when none is idle.
    fn evict_idle(&self, only: Option<&Rc<Queue>>) -> bool {
        let mut lru = self.idle_lru.borrow_mut();
        let mut i = 0;
        while let Some(weak) = lru.get(i) {
            let Some(ticket) = weak.upgrade() else {
                lru.remove(i);
                continue;
            };
            if ticket.evicted.get() || only.is_some_and(|q| !Rc::ptr_eq(q, &ticket.queue)) {
                i += 1;
                continue;
            }
            lru.remove(i);
            ticket.evicted.set(true);
            ticket.wake.notify(1);
            drop(lru);
            self.count(|c| c.evicted += 1);
            return true;
        }
        false
    }

    /// Registers an idle connection at the back of the LRU.
    pub(super) fn went_idle(&self, queue: &Rc<Queue>) -> Rc<IdleTicket> {
        let t = Rc::new(IdleTicket {
            evicted: Cell::new(false),
            wake: Event::new(),
            queue: queue.clone(),
        });
        let mut lru = self.idle_lru.borrow_mut();
        // Tickets die when their connection stops idling; sweep them out
        // now and then so the deque stays the size of the idle set.
        if lru.len() > 64 && lru.len() > 2 * self.conns.get() {
            lru.retain(|w| w.strong_count() > 0);
        }
        lru.push_back(Rc::downgrade(&t));
        drop(lru);
        // Someone already waits for a slot this connection could free:
        // close it rather than idle.
        if self.slot_wanted(queue) {
            t.evicted.set(true);
            self.count(|c| c.evicted += 1);
        }
        t
    }

    /// Whether a starved destination would get a connection if one of
    /// `queue`'s connections closed.
    fn slot_wanted(&self, queue: &Rc<Queue>) -> bool {
        let starved = self.starved.borrow();
        if starved.is_empty() {
            return false;
        }
        if self.conns.get() >= self.settings.max_connections.get().max(1) {
            return true;
        }
        starved
            .iter()
            .take(16)
            .any(|d| Rc::ptr_eq(&d.queue(), queue))
    }

    /// A connection ended: release its counts and let waiting destinations
    /// have the room.
    pub(super) fn connection_ended(self: &Rc<Self>, dest: &Rc<Dest>, queue: &Queue) {
        dest.active.set(dest.active.get().saturating_sub(1));
        queue.active.set(queue.active.get().saturating_sub(1));
        self.conns.set(self.conns.get().saturating_sub(1));
        self.kick(dest);
        // Serve starved destinations in arrival order until the budget is
        // full again; ones still at their own limits go to the back.
        let rounds = self.starved.borrow().len();
        for _ in 0..rounds {
            let next = self.starved.borrow_mut().pop_front();
            let Some(d) = next else { break };
            d.starved.set(false);
            if self.kick(&d) == Kick::NoBudget {
                break;
            }
        }
    }

    /// Applies one recipient's outcome.
    pub(super) fn outcome(
        self: &Rc<Self>,
        dest: &Rc<Dest>,
        mut rcpt: Rcpt,
        outcome: &Outcome,
        via: &ConnInfo,
    ) {
        dest.seen.set(true);
        // The controller learns from it; a response rule may change it.
        let shaped = self.shape_outcome(dest, outcome, via);
        let outcome = &shaped.outcome;
        // Saturating: a recovered count is data from disk.
        rcpt.attempts = rcpt.attempts.saturating_add(1);
        if rcpt.attempts == 1 {
            if let Some(ack) = &rcpt.msg.ack {
                let (kind, reply) = match outcome {
                    Outcome::Delivered(r) => (FirstOutcome::Delivered, r),
                    Outcome::Deferred(r) => (FirstOutcome::Deferred, r),
                    Outcome::Bounced(r) => (FirstOutcome::Bounced, r),
                };
                ack.record(kind, reply);
            }
        }
        match outcome {
            Outcome::Delivered(r) => {
                self.record(&rcpt, Recorded::Delivered);
                self.log_entry("delivered", dest, &rcpt, r, via);
                self.count(|c| c.delivered += 1);
                self.finish(&rcpt);
            }
            Outcome::Bounced(r) => {
                if !self.add_dsn(&rcpt, r, via, Recorded::Bounced) {
                    self.record(&rcpt, Recorded::Bounced);
                }
                self.log_entry("bounced", dest, &rcpt, r, via);
                self.count(|c| c.bounced += 1);
                self.finish(&rcpt);
            }
            Outcome::Deferred(r) => self.defer(dest, rcpt, r, via, shaped.due),
        }
    }

    /// Defers a recipient until `due`, or by the retry schedule.
    fn defer(
        self: &Rc<Self>,
        dest: &Rc<Dest>,
        rcpt: Rcpt,
        r: &Reply,
        via: &ConnInfo,
        due: Option<Instant>,
    ) {
        let queue = dest.queue();
        let age = unix_now().saturating_sub(rcpt.msg.accepted_unix);
        if age >= queue.message_expiry.as_secs() {
            let text = format!(
                "message expired after {} attempts; last error: {} {}",
                rcpt.attempts,
                r.code(),
                r.text()
            );
            let expired = Reply::new(550, Some((5, 4, 7)), text);
            if !self.add_dsn(&rcpt, &expired, via, Recorded::Expired) {
                self.record(&rcpt, Recorded::Expired);
            }
            self.log_entry("expired", dest, &rcpt, &expired, via);
            self.count(|c| c.expired += 1);
            self.finish(&rcpt);
            return;
        }
        self.log_entry("deferred", dest, &rcpt, r, via);
        self.count(|c| c.deferred += 1);
        // After enough failures a queue's fallback route takes over, at once.
        if let Some(fb) = queue.fallback.as_ref() {
            if dest.fallback.is_none() && rcpt.attempts >= fb.after_attempts {
                let to = self.fallback_dest(&queue, &fb.target);
                self.schedule(to, rcpt, Instant::now());
                return;
            }
        }
        let unit = f64::from(rand::random::<u16>()) / 65536.0;
        let delay = match due {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => queue.retry.delay(rcpt.attempts, unit),
        };
        self.record(
            &rcpt,
            Recorded::Deferred {
                attempts: rcpt.attempts,
                next_attempt_unix: unix_now() + delay.as_secs(),
            },
        );
        self.schedule(dest.clone(), rcpt, Instant::now() + delay);
    }

    /// Journals a recipient's outcome (when there is a journal). Nobody
    /// waits for it, but it is written at once: a delivered recipient
    /// whose record is lost in a crash would be delivered again.
    pub(super) fn record(&self, rcpt: &Rcpt, outcome: Recorded) {
        let Some(j) = &self.journal else { return };
        match j.append_outcome(rcpt.msg.id, rcpt.index, outcome) {
            Ok(_) => j.request_flush(),
            // Mail the journal never took (a DSN on a full disk) has no
            // record to update.
            Err(e) => tracing::debug!(error = %e, "journal: outcome not recorded"),
        }
    }

    fn schedule(&self, dest: Rc<Dest>, rcpt: Rcpt, due: Instant) {
        let seq = self.retry_seq.get() + 1;
        self.retry_seq.set(seq);
        let earliest = self.retry.borrow().peek().map(|i| i.due);
        self.retry.borrow_mut().push(RetryItem {
            due,
            seq,
            dest,
            rcpt,
        });
        if earliest.map_or(true, |e| due < e) {
            self.retry_wake.notify(1);
        }
    }

    /// Fails every queued recipient of `dest` after a DNS failure.
    pub(super) fn fail_dest(self: &Rc<Self>, dest: &Rc<Dest>, e: &ResolveError) {
        let (class, subject, detail) = e.enhanced_status();
        let code = if e.is_permanent() { 550 } else { 451 };
        let reply = Reply::new(code, Some((class, subject, detail)), e.to_string());
        let outcome = if e.is_permanent() {
            Outcome::Bounced(Arc::new(reply))
        } else {
            Outcome::Deferred(Arc::new(reply))
        };
        self.settle_dest(dest, &outcome);
    }

    /// Defers every queued recipient of `dest` (no connection possible).
    pub(super) fn defer_dest(self: &Rc<Self>, dest: &Rc<Dest>, reply: Reply) {
        self.settle_dest(dest, &Outcome::Deferred(Arc::new(reply)));
    }

    /// Bounces every queued recipient of `dest` (no delivery ever possible,
    /// e.g. the mail would loop back to us).
    pub(super) fn bounce_dest(self: &Rc<Self>, dest: &Rc<Dest>, reply: Reply) {
        self.settle_dest(dest, &Outcome::Bounced(Arc::new(reply)));
    }

    fn settle_dest(self: &Rc<Self>, dest: &Rc<Dest>, outcome: &Outcome) {
        let all = dest.waiting.borrow_mut().drain_all();
        for r in all {
            self.outcome(dest, r, outcome, &ConnInfo::default());
        }
    }

    pub(super) fn finish(&self, rcpt: &Rcpt) {
        let left = rcpt.msg.pending.get().saturating_sub(1);
        rcpt.msg.pending.set(left);
        let mut b = self.backlog.borrow_mut();
        b.queued_recipients = b.queued_recipients.saturating_sub(1);
        // Published when the message is done: between, the shard looks a
        // little fuller than it is, never emptier.
        if left == 0 {
            b.queued_messages = b.queued_messages.saturating_sub(1);
            b.queued_bytes = b.queued_bytes.saturating_sub(rcpt.msg.body.len() as u64);
            self.load.publish(&b);
        }
    }

    /// Adds a failed recipient to its message's DSN. Returns whether its
    /// final `outcome` record now waits for the DSN to be stored (under a
    /// journal), instead of being written by the caller.
    fn add_dsn(&self, rcpt: &Rcpt, r: &Reply, via: &ConnInfo, outcome: Recorded) -> bool {
        if rcpt.msg.reverse_path.is_empty() {
            return false; // never bounce a bounce
        }
        let held = self.journal.is_some();
        let status = r
            .enhanced()
            .map(|(a, b, c)| format!("{a}.{b}.{c}"))
            .unwrap_or_else(|| format!("{}.0.0", r.code() / 100));
        let diag = match &via.mx {
            Some(_) => format!("smtp; {} {}", r.code(), r.text()),
            None => format!("x-sluice; {}", r.text()),
        };
        let mut d = self.dsns.borrow_mut();
        let p = match d.iter().position(|p| Rc::ptr_eq(&p.msg, &rcpt.msg)) {
            Some(i) => d.get_mut(i),
            None => {
                d.push(PendingDsn {
                    msg: rcpt.msg.clone(),
                    failed: Vec::new(),
                    records: Vec::new(),
                });
                d.last_mut()
            }
        };
        let Some(p) = p else { return false };
        p.failed
            .push((rcpt.addr.clone(), status, via.mx.clone(), diag));
        if held {
            p.records.push((rcpt.index, outcome));
        }
        held
    }

    /// The DSN of `done` is durable: its message's bounced recipients get
    /// their final records now.
    pub fn dsn_stored(&self, done: DsnRecords) {
        let Some(j) = &self.journal else { return };
        for (index, outcome) in done.records {
            if let Err(e) = j.append_outcome(done.msg_id, index, outcome) {
                tracing::debug!(error = %e, "journal: outcome not recorded");
            }
        }
        j.request_flush();
    }

    /// The DSN of `done` could not be stored (a full disk): it goes out
    /// again with the next round; its message stays pending meanwhile.
    pub fn dsn_refused(&self, done: DsnRecords) {
        tracing::warn!(
            id = done.envelope.id,
            "DSN not stored; trying again in a second"
        );
        self.dsn_retry.borrow_mut().push(done);
    }

    /// Renders the DSNs collected since the last call, as envelopes from the
    /// null sender to each original sender.
    pub fn take_dsns(&self, mut next_id: impl FnMut() -> u64) -> Vec<DsnOut> {
        let pending = std::mem::take(&mut *self.dsns.borrow_mut());
        let date = crate::smtp::date_now();
        let mut out = Vec::with_capacity(pending.len());
        // DSNs a full disk refused last time, with a fresh acknowledgement.
        for mut done in std::mem::take(&mut *self.dsn_retry.borrow_mut()) {
            let ack = crate::shard::ack::Ack::journal(1);
            done.envelope.ack = Some(ack);
            out.push(DsnOut {
                envelope: done.envelope.clone(),
                done: Some(done),
            });
        }
        let fresh = out.len();
        for p in pending {
            // Under `ack = "downstream"` the client may report the failure
            // itself: wait for the decision, and report only what we kept.
            match p.msg.ack.as_ref().map(|a| a.decision()) {
                Some(Decision::Pending) => {
                    self.dsns.borrow_mut().push(p);
                    continue;
                }
                Some(Decision::Returned | Decision::Refused) => continue,
                _ => {}
            }
            let id = next_id();
            let failed = p
                .failed
                .iter()
                .map(|(a, s, mx, d)| super::dsn::FailedRcpt {
                    address: a,
                    status: s.clone(),
                    remote_mta: mx.as_deref(),
                    diagnostic: d.clone(),
                })
                .collect();
            let body = super::dsn::render(&super::dsn::DsnInput {
                hostname: &self.settings.hostname,
                to: &p.msg.reverse_path,
                queue_id: p.msg.id,
                original: &p.msg.body,
                date: &date,
                unique: id,
                failed,
            });
            let mut envelope = Envelope {
                id,
                reverse_path: Arc::from(""),
                recipients: vec![p.msg.reverse_path.to_string()],
                // Quoted 8-bit headers need 8BITMIME; a non-ASCII sender
                // address (only from an SMTPUTF8 message) needs SMTPUTF8.
                eight_bit: super::dsn::needs_8bitmime(&body) || !p.msg.reverse_path.is_ascii(),
                smtputf8: !p.msg.reverse_path.is_ascii(),
                body,
                ack: None,
            };
            let done = if self.journal.is_some() {
                envelope.ack = Some(crate::shard::ack::Ack::journal(1));
                Some(DsnRecords {
                    msg_id: p.msg.id,
                    records: p.records,
                    envelope: envelope.clone(),
                })
            } else {
                None
            };
            out.push(DsnOut { envelope, done });
        }
        self.count(|c| c.dsns += (out.len() - fresh) as u64);
        out
    }

    /// Forgets destinations idle for `destination_expiry`, forever: one
    /// sweep every quarter of it. Per-destination state is otherwise kept
    /// for every domain ever mailed (a million domains, a million entries,
    /// walked by every reload and status call).
    /// `destination_expiry = 0` turns it off (checked again each minute, so
    /// a reload can turn it on).
    pub async fn expiry_loop(self: Rc<Self>) {
        loop {
            let expiry = self.settings.destination_expiry.get();
            if expiry.is_zero() {
                glommio::timer::sleep(Duration::from_secs(60)).await;
                continue;
            }
            glommio::timer::sleep((expiry / 4).max(Duration::from_millis(250))).await;
            self.expire_idle(Instant::now());
        }
    }

    /// One expiry sweep at `now`; returns how many destinations went.
    ///
    /// A destination goes when nothing else holds it (no connection, retry,
    /// starved wait: only the map's `Rc` left), nothing waits in it, it is
    /// not paused, its shaping state holds nothing a new one would lack
    /// ([`Shaper::retention`](super::shaping::Shaper::retention); learned limits six times as long), and
    /// enough consecutive sweeps saw no activity. Its warm-up count for
    /// today is kept aside and given back if the domain comes again.
    pub fn expire_idle(&self, now: Instant) -> usize {
        use super::shaping::Retention;
        // Four sweeps a quarter of the expiry apart; limits learned from a
        // receiver's throttling are kept six times as long.
        const SWEEPS: u32 = 4;
        const LEARNED_SWEEPS: u32 = 6 * SWEEPS;
        let today = super::shaping::warmup::Warmup::day_of(unix_now());
        let mut gone: Vec<Rc<str>> = Vec::new();
        for (key, d) in self.dests.borrow().iter() {
            let unused = Rc::strong_count(d) == 1
                && d.waiting.borrow().is_empty()
                && d.active.get() == 0
                && d.idle.get() == 0
                && !d.ctl.paused.get();
            let needed = match d.shaper.borrow_mut().retention(now) {
                Retention::Nothing => SWEEPS,
                Retention::Learned => LEARNED_SWEEPS,
                Retention::Live => u32::MAX,
            };
            if !unused || needed == u32::MAX || d.seen.replace(false) {
                d.idle_sweeps.set(0);
                continue;
            }
            let n = d.idle_sweeps.get().saturating_add(1);
            d.idle_sweeps.set(n);
            if n >= needed {
                gone.push(key.clone());
            }
        }
        let mut dests = self.dests.borrow_mut();
        let mut kept = self.warmup_restored.borrow_mut();
        for key in &gone {
            let Some(d) = dests.remove(key) else { continue };
            let count = d.shaper.borrow().warmup_count();
            if let Some((day, sent)) = count {
                if day == today {
                    if kept.0 != today {
                        *kept = (today, HashMap::new());
                    }
                    kept.1.insert(key.to_string(), sent);
                }
            }
        }
        gone.len()
    }

    /// Serves the retry heap forever: sleeps until the earliest due time
    /// (or an earlier item arrives) and re-queues what is due.
    pub async fn retry_loop(self: Rc<Self>) {
        loop {
            let next = self.retry.borrow().peek().map(|i| i.due);
            let listener = self.retry_wake.listen();
            match next {
                None => listener.await,
                Some(due) => {
                    let now = Instant::now();
                    if due > now {
                        let wait = due - now;
                        futures_lite::future::or(listener, async {
                            glommio::timer::sleep(wait).await;
                        })
                        .await;
                        continue;
                    }
                }
            }
            let now = Instant::now();
            let mut due_items = Vec::new();
            {
                let mut heap = self.retry.borrow_mut();
                while heap.peek().is_some_and(|i| i.due <= now) {
                    if let Some(i) = heap.pop() {
                        due_items.push(i);
                    }
                }
            }
            let mut touched: Vec<Rc<Dest>> = Vec::new();
            for i in due_items {
                match i.rcpt.msg.ack.as_ref().map(|a| a.decision()) {
                    // The client has not been answered yet: look again soon.
                    Some(Decision::Pending) => {
                        self.schedule(i.dest, i.rcpt, now + Duration::from_secs(1));
                        continue;
                    }
                    // The client was told to try again (or bounce): not ours.
                    Some(Decision::Returned | Decision::Refused) => {
                        let r = Reply::new(
                            451,
                            Some((4, 4, 0)),
                            "returned to the client, which retries or bounces it",
                        );
                        self.log_entry("returned", &i.dest, &i.rcpt, &r, &ConnInfo::default());
                        self.count(|c| c.returned += 1);
                        self.finish(&i.rcpt);
                        continue;
                    }
                    _ => {}
                }
                i.dest.waiting.borrow_mut().push(i.rcpt);
                if !touched.iter().any(|d| Rc::ptr_eq(d, &i.dest)) {
                    touched.push(i.dest);
                }
            }
            for d in touched {
                self.kick(&d);
            }
        }
    }

    /// Recipients waiting for a retry.
    pub fn deferred_waiting(&self) -> usize {
        self.retry.borrow().len()
    }

    pub(super) fn log_entry(
        &self,
        event: &str,
        dest: &Dest,
        rcpt: &Rcpt,
        r: &Reply,
        via: &ConnInfo,
    ) {
        self.ctl.observe(event, dest, rcpt);
        let mut idbuf = [0u8; 16];
        let id = hex16(rcpt.msg.id, &mut idbuf);
        let status = r
            .enhanced()
            .map(|(a, b, c)| format!("{a}.{b}.{c}"))
            .unwrap_or_default();
        let now = unix_now_f64();
        let pool = dest.pool();
        self.log.record(&Entry {
            time: (now * 1000.0).round() / 1000.0,
            event,
            queue: &dest.queue.borrow().name,
            destination: &dest.domain,
            pool: pool.as_deref().map(|p| &*p.name),
            message_id: id,
            sender: &rcpt.msg.reverse_path,
            recipient: &rcpt.addr,
            mx: via.mx.as_deref(),
            ip: via.ip.map(|i| i.to_string()),
            source_ip: via.source.map(|i| i.to_string()),
            tls: via.tls,
            cipher: via.cipher.as_deref(),
            code: r.code(),
            status,
            text: r.text(),
            attempt: rcpt.attempts,
            latency: (now - rcpt.msg.accepted_unix as f64).max(0.0),
        });
    }
}

fn hex16(v: u64, buf: &mut [u8; 16]) -> &str {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, b) in buf.iter_mut().enumerate() {
        let shift = 60 - 4 * i as u32;
        *b = HEX
            .get(((v >> shift) & 0xf) as usize)
            .copied()
            .unwrap_or(b'0');
    }
    std::str::from_utf8(buf).unwrap_or("")
}
