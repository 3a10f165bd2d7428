//! The per-shard delivery engine: destinations, their queues, connection
//! tasks, retries and outcomes.
//!
//! Everything here runs on one executor and is owned by one shard, so state
//! is `Rc`/`Cell`/`RefCell` and never locked. No `RefCell` borrow is held
//! across an `.await`.
//!
//! Scheduling is by tasks, not by a central loop: each destination has up
//! to `max_connections_per_destination` connection tasks, each pulling
//! transactions from the destination's queue. glommio runs ready tasks
//! round-robin, so every destination with work gets turns and one slow or
//! hung receiver only ties up its own connections (no head-of-line
//! blocking). Deferred recipients wait in a timer heap served by one task.

use super::log::{DeliveryLog, Entry};
use super::queue::{Msg, Rcpt, RcptQueue};
use super::retry::RetrySchedule;
use crate::dns::{ResolveError, Resolver};
use crate::shard::{Backlog, Envelope, ShardLoad};
use crate::smtp::client::{ClientConfig, Outcome};
use crate::smtp::Reply;
use event_listener::Event;
use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Settings the engine needs, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Our host name (DSNs).
    pub hostname: String,
    /// Connection tasks per destination.
    pub max_connections_per_destination: usize,
    /// Transactions per connection before it is recycled.
    pub max_messages_per_connection: usize,
    /// Close an idle connection after this long.
    pub idle_timeout: Duration,
    /// TCP connect timeout per address.
    pub connect_timeout: Duration,
    /// How long a message may stay deferred before it bounces.
    pub message_expiry: Duration,
    /// Retry schedule.
    pub retry: RetrySchedule,
    /// Whether to verify server certificates on STARTTLS.
    pub tls_verify: bool,
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
}

/// One destination domain of this shard.
pub struct Dest {
    /// The domain (lower case).
    pub domain: Rc<str>,
    pub(super) queue: RefCell<RcptQueue>,
    pub(super) active: Cell<usize>,
    pub(super) idle: Cell<usize>,
    pub(super) work: Event,
}

struct RetryItem {
    due: Instant,
    seq: u64,
    dest: Rc<Dest>,
    rcpt: Rcpt,
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
}

/// Where a connection got to, for the log.
#[derive(Debug, Default, Clone)]
pub struct ConnInfo {
    /// MX host name.
    pub mx: Option<String>,
    /// Remote address.
    pub ip: Option<std::net::IpAddr>,
    /// TLS version.
    pub tls: Option<&'static str>,
    /// TLS cipher.
    pub cipher: Option<String>,
}

/// The shard's delivery engine.
pub struct Engine {
    pub(super) settings: EngineSettings,
    pub(super) client: Arc<ClientConfig>,
    pub(super) resolver: Rc<Resolver>,
    dests: RefCell<HashMap<Rc<str>, Rc<Dest>>>,
    retry: RefCell<BinaryHeap<RetryItem>>,
    retry_seq: Cell<u64>,
    retry_wake: Event,
    pub(super) log: Rc<DeliveryLog>,
    counters: Cell<DeliveryCounters>,
    backlog: Rc<RefCell<Backlog>>,
    load: Arc<ShardLoad>,
    dsns: RefCell<Vec<PendingDsn>>,
    pub(super) next_txn: Cell<u64>,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
}

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
        client: Arc<ClientConfig>,
        resolver: Rc<Resolver>,
        log: Rc<DeliveryLog>,
        backlog: Rc<RefCell<Backlog>>,
        load: Arc<ShardLoad>,
    ) -> Rc<Self> {
        let tls = super::tls::client_config(settings.tls_verify);
        Rc::new(Engine {
            settings,
            client,
            resolver,
            dests: RefCell::new(HashMap::new()),
            retry: RefCell::new(BinaryHeap::new()),
            retry_seq: Cell::new(0),
            retry_wake: Event::new(),
            log,
            counters: Cell::new(DeliveryCounters::default()),
            backlog,
            load,
            dsns: RefCell::new(Vec::new()),
            next_txn: Cell::new(1),
            tls,
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

    fn count(&self, f: impl FnOnce(&mut DeliveryCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    pub(super) fn counted_connection(&self) {
        self.count(|c| c.connections += 1);
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
        });
        {
            let mut b = self.backlog.borrow_mut();
            b.queued_messages += 1;
            b.queued_bytes += msg.body.len() as u64;
            self.load.publish(&b);
        }
        let mut touched: Vec<Rc<Dest>> = Vec::new();
        for addr in env.recipients {
            let domain = crate::shard::hash::domain_of(&addr).to_ascii_lowercase();
            let dest = self.dest(&domain);
            dest.queue.borrow_mut().push(Rcpt {
                msg: msg.clone(),
                addr: Arc::from(addr),
                attempts: 0,
            });
            if !touched.iter().any(|d| Rc::ptr_eq(d, &dest)) {
                touched.push(dest);
            }
        }
        for d in touched {
            self.kick(&d);
        }
    }

    fn dest(&self, domain: &str) -> Rc<Dest> {
        if let Some(d) = self.dests.borrow().get(domain) {
            return d.clone();
        }
        let name: Rc<str> = Rc::from(domain);
        let d = Rc::new(Dest {
            domain: name.clone(),
            queue: RefCell::new(RcptQueue::default()),
            active: Cell::new(0),
            idle: Cell::new(0),
            work: Event::new(),
        });
        self.dests.borrow_mut().insert(name, d.clone());
        d
    }

    /// Makes sure someone works on `dest`'s queue: wake an idle connection,
    /// or start another one while under the destination's limit and the
    /// queue is deeper than the active connections can take in one turn.
    pub(super) fn kick(self: &Rc<Self>, dest: &Rc<Dest>) {
        let queued = dest.queue.borrow().len();
        if queued == 0 {
            return;
        }
        if dest.idle.get() > 0 {
            dest.work.notify(queued.min(dest.idle.get()));
            return;
        }
        let active = dest.active.get();
        let per_conn = self.client.max_rcpt_per_txn.max(1) * self.client.max_pipelined_txns.max(1);
        if active < self.settings.max_connections_per_destination.max(1)
            && (active == 0 || queued > active * per_conn)
        {
            dest.active.set(active + 1);
            glommio::spawn_local(super::connection::run(self.clone(), dest.clone())).detach();
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
        rcpt.attempts += 1;
        match outcome {
            Outcome::Delivered(r) => {
                self.log_entry("delivered", dest, &rcpt, r, via);
                self.count(|c| c.delivered += 1);
                self.finish(&rcpt);
            }
            Outcome::Bounced(r) => {
                self.log_entry("bounced", dest, &rcpt, r, via);
                self.count(|c| c.bounced += 1);
                self.add_dsn(&rcpt, r, via);
                self.finish(&rcpt);
            }
            Outcome::Deferred(r) => self.defer(dest, rcpt, r, via),
        }
    }

    fn defer(self: &Rc<Self>, dest: &Rc<Dest>, rcpt: Rcpt, r: &Reply, via: &ConnInfo) {
        let age = unix_now().saturating_sub(rcpt.msg.accepted_unix);
        if age >= self.settings.message_expiry.as_secs() {
            let text = format!(
                "message expired after {} attempts; last error: {} {}",
                rcpt.attempts,
                r.code(),
                r.text()
            );
            let expired = Reply::new(550, Some((5, 4, 7)), text);
            self.log_entry("expired", dest, &rcpt, &expired, via);
            self.count(|c| c.expired += 1);
            self.add_dsn(&rcpt, &expired, via);
            self.finish(&rcpt);
            return;
        }
        self.log_entry("deferred", dest, &rcpt, r, via);
        self.count(|c| c.deferred += 1);
        let unit = f64::from(rand::random::<u16>()) / 65536.0;
        let due = Instant::now() + self.settings.retry.delay(rcpt.attempts, unit);
        let seq = self.retry_seq.get() + 1;
        self.retry_seq.set(seq);
        let earliest = self.retry.borrow().peek().map(|i| i.due);
        self.retry.borrow_mut().push(RetryItem {
            due,
            seq,
            dest: dest.clone(),
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
        let all = dest.queue.borrow_mut().drain_all();
        for r in all {
            self.outcome(dest, r, &outcome, &ConnInfo::default());
        }
    }

    /// Defers every queued recipient of `dest` (no connection possible).
    pub(super) fn defer_dest(self: &Rc<Self>, dest: &Rc<Dest>, reply: Reply) {
        let outcome = Outcome::Deferred(Arc::new(reply));
        let all = dest.queue.borrow_mut().drain_all();
        for r in all {
            self.outcome(dest, r, &outcome, &ConnInfo::default());
        }
    }

    fn finish(&self, rcpt: &Rcpt) {
        let left = rcpt.msg.pending.get().saturating_sub(1);
        rcpt.msg.pending.set(left);
        if left == 0 {
            let mut b = self.backlog.borrow_mut();
            b.queued_messages = b.queued_messages.saturating_sub(1);
            b.queued_bytes = b.queued_bytes.saturating_sub(rcpt.msg.body.len() as u64);
            self.load.publish(&b);
        }
    }

    fn add_dsn(&self, rcpt: &Rcpt, r: &Reply, via: &ConnInfo) {
        if rcpt.msg.reverse_path.is_empty() {
            return; // never bounce a bounce
        }
        let status = r
            .enhanced()
            .map(|(a, b, c)| format!("{a}.{b}.{c}"))
            .unwrap_or_else(|| format!("{}.0.0", r.code() / 100));
        let diag = match &via.mx {
            Some(_) => format!("smtp; {} {}", r.code(), r.text()),
            None => format!("x-sluice; {}", r.text()),
        };
        let mut d = self.dsns.borrow_mut();
        match d.iter_mut().find(|p| Rc::ptr_eq(&p.msg, &rcpt.msg)) {
            Some(p) => p
                .failed
                .push((rcpt.addr.clone(), status, via.mx.clone(), diag)),
            None => d.push(PendingDsn {
                msg: rcpt.msg.clone(),
                failed: vec![(rcpt.addr.clone(), status, via.mx.clone(), diag)],
            }),
        }
    }

    /// Renders the DSNs collected since the last call, as envelopes from the
    /// null sender to each original sender.
    pub fn take_dsns(&self, mut next_id: impl FnMut() -> u64) -> Vec<Envelope> {
        let pending = std::mem::take(&mut *self.dsns.borrow_mut());
        let date = crate::smtp::date_now();
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
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
            out.push(Envelope {
                id,
                reverse_path: Arc::from(""),
                recipients: vec![p.msg.reverse_path.to_string()],
                body,
                eight_bit: false,
                smtputf8: false,
            });
        }
        self.count(|c| c.dsns += out.len() as u64);
        out
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
                i.dest.queue.borrow_mut().push(i.rcpt);
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

    fn log_entry(&self, event: &str, dest: &Dest, rcpt: &Rcpt, r: &Reply, via: &ConnInfo) {
        let mut idbuf = [0u8; 16];
        let id = hex16(rcpt.msg.id, &mut idbuf);
        let status = r
            .enhanced()
            .map(|(a, b, c)| format!("{a}.{b}.{c}"))
            .unwrap_or_default();
        let now = unix_now_f64();
        self.log.record(&Entry {
            time: (now * 1000.0).round() / 1000.0,
            event,
            queue: &dest.domain,
            message_id: id,
            sender: &rcpt.msg.reverse_path,
            recipient: &rcpt.addr,
            mx: via.mx.as_deref(),
            ip: via.ip.map(|i| i.to_string()),
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
