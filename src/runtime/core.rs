//! One core's context: its shard, its channel ends, its session count.
//!
//! A `Core` lives on exactly one executor thread (it is `Rc`, not `Arc`);
//! the only ways into another core are [`Core::deliver`]'s channels.

use super::{ExitCounts, Shared};
use crate::shard::{Batch, Shard};
use crate::smtp::Admission;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Per-core state shared by that core's tasks.
pub struct Core {
    /// This core's shard index.
    pub index: usize,
    /// Number of shards (cores).
    pub shards: usize,
    /// Node-wide state.
    pub shared: Arc<Shared>,
    senders: Senders<Batch>,
    shard: RefCell<Shard>,
    sessions: Cell<usize>,
    max_sessions: usize,
    last_id: Cell<u64>,
    stop: event_listener::Event,
}

impl Core {
    /// Hands a batch to shard `s`: a direct call for our own shard, the
    /// bounded channel otherwise (waiting while it is full: backpressure).
    pub async fn deliver(&self, s: usize, batch: Batch) -> Result<(), ()> {
        if s == self.index {
            self.shard.borrow_mut().accept(batch);
            return Ok(());
        }
        let in_flight = &self.shared.in_flight;
        in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let r = self.senders.send_to(s, batch).await.map_err(|_| ());
        if r.is_err() {
            in_flight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        r
    }

    /// Whether new transactions may start: every shard under its bounds,
    /// counting `pending[shard]` (messages, bytes), what the asking session
    /// accepted in this pass over its input and has not handed over yet.
    pub fn admission(&self, pending: &[crate::shard::Pending]) -> Admission {
        let bp = &self.shared.config.backpressure;
        let bounds = crate::shard::Bounds {
            messages: bp.max_messages,
            bytes: bp.max_bytes.0,
            recipients: bp.max_recipients,
        };
        let over = self.shared.loads.iter().enumerate().any(|(s, l)| {
            let p = pending.get(s).copied().unwrap_or_default();
            l.over(p, &bounds)
        });
        if over {
            Admission::Busy
        } else {
            Admission::Open
        }
    }

    /// A queue id unique across cores and restarts: microseconds since the
    /// epoch (forced to increase) in the high bits, the core in the low 8.
    pub fn next_queue_id(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let t = now.max(self.last_id.get() + 1);
        self.last_id.set(t);
        (t << 8) | (self.index as u64 & 0xff)
    }

    /// Whether the daemon is stopping.
    pub fn is_stopping(&self) -> bool {
        super::stopping(&self.shared)
    }

    /// Fires once the core notices a stop request.
    pub fn stop_listener(&self) -> event_listener::EventListener {
        self.stop.listen()
    }

    /// Counts a session for as long as the guard lives.
    pub fn session_started(self: &Rc<Self>) -> SessionGuard {
        self.sessions.set(self.sessions.get() + 1);
        SessionGuard { core: self.clone() }
    }

    /// Whether this core already holds its share of `max_connections`
    /// (the current session included).
    pub fn over_session_limit(&self) -> bool {
        self.sessions.get() > self.max_sessions
    }

    /// Inbound sessions open on this core.
    pub fn sessions(&self) -> usize {
        self.sessions.get()
    }
}

/// Decrements the session count when a session ends.
pub struct SessionGuard {
    core: Rc<Core>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.core
            .sessions
            .set(self.core.sessions.get().saturating_sub(1));
    }
}

/// Grace period for sessions to finish after a stop request.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a stopping core waits for the others' sessions and the batches
/// in the channels (a core that failed to start never reports).
const HANDOVER_GRACE: Duration = Duration::from_secs(12);

/// The body of one executor: join the mesh, start receivers and listeners,
/// run until a stop is requested, then let sessions finish.
pub async fn run(
    shared: Arc<Shared>,
    mesh: MeshBuilder<Batch, Full>,
    sockets: Vec<socket2::Socket>,
    control: async_channel::Receiver<super::control::Call>,
) -> ExitCounts {
    let Ok((senders, mut receivers)) = mesh.join().await else {
        tracing::error!("could not join the core mesh");
        return ExitCounts::default();
    };
    let index = senders.peer_id();
    let shards = senders.nr_consumers();
    let load = shared.loads.get(index).cloned().unwrap_or_default();
    let per_core = shared.config.smtp.max_connections.div_ceil(shards.max(1));
    let backlog = Rc::new(RefCell::new(crate::shard::Backlog::default()));
    let mut recovery = None;
    let listeners: Vec<std::net::SocketAddr> = sockets
        .iter()
        .filter_map(|s| s.local_addr().ok().and_then(|a| a.as_socket()))
        .collect();
    let engine = match shared.config.route {
        crate::config::Route::Deliver => {
            match build_engine(&shared, index, backlog.clone(), load.clone(), &listeners) {
                Ok((e, r)) => {
                    recovery = r;
                    Some(e)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the delivery engine");
                    eprintln!("sluice: cannot start the delivery engine: {e}");
                    shared
                        .stopping
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    None
                }
            }
        }
        _ => None,
    };
    let core = Rc::new(Core {
        index,
        shards,
        shard: RefCell::new(Shard::new(
            index,
            shared.config.route,
            load,
            backlog,
            engine.clone(),
        )),
        shared,
        senders,
        sessions: Cell::new(0),
        max_sessions: per_core,
        last_id: Cell::new(0),
        stop: event_listener::Event::new(),
    });

    for (_, rx) in receivers.streams() {
        let core = core.clone();
        glommio::spawn_local(async move {
            while let Some(batch) = rx.recv().await {
                core.shard.borrow_mut().accept(batch);
                core.shared
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        })
        .detach();
    }
    if let Some(engine) = &engine {
        glommio::spawn_local(engine.clone().retry_loop()).detach();
        glommio::spawn_local(engine.clone().expiry_loop()).detach();
        glommio::spawn_local(engine.log().clone().flusher(
            Duration::from_millis(200),
            core.shared.config.delivery.log_max_bytes.0,
            core.shared.log_reopen.clone(),
        ))
        .detach();
        glommio::spawn_local(dsn_loop(core.clone(), engine.clone())).detach();
        glommio::spawn_local(warmup_loop(core.clone(), engine.clone())).detach();
        if let Some(r) = recovery.take() {
            glommio::spawn_local(super::recovery::restore(core.clone(), engine.clone(), r))
                .detach();
        }
    }
    glommio::spawn_local(super::control::serve(core.clone(), engine.clone(), control)).detach();
    let listeners: Vec<_> = sockets
        .into_iter()
        .map(|s| glommio::spawn_local(crate::ingress::listener::accept_loop(core.clone(), s)))
        .collect();

    // Control-plane check, off the mail path: a few wakeups per second.
    let mut generation = 0;
    while !super::stopping(&core.shared) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        // A SIGHUP reload: the engine re-reads limits, queues and routes.
        let now = core
            .shared
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        if now != generation {
            generation = now;
            if let Some(e) = &engine {
                e.reconfigure(&core.shared.live.load(), core.shards);
            }
            if let Some(a) = core.shared.applied.get(core.index) {
                a.store(now, std::sync::atomic::Ordering::Release);
            }
        }
    }
    drop(listeners); // stop accepting
    core.stop.notify(usize::MAX);
    let deadline = Instant::now() + STOP_GRACE;
    while core.sessions.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // A batch another core's session handed over (and maybe answered 250
    // for) is still on its way: no core stops taking batches in before
    // every core's sessions are done and the channels are empty.
    core.shared
        .ingress_closed
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let handover = Instant::now() + HANDOVER_GRACE;
    while (core
        .shared
        .ingress_closed
        .load(std::sync::atomic::Ordering::Acquire)
        < core.shards
        || core
            .shared
            .in_flight
            .load(std::sync::atomic::Ordering::Acquire)
            > 0)
        && Instant::now() < handover
    {
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    // Outbound: no new transactions; those on the wire finish (their
    // outcomes are journaled below), then the connections close.
    if let Some(e) = &engine {
        e.drain();
        while e.connections_open() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }
    if let Some(j) = engine.as_ref().and_then(|e| e.journal()) {
        // Outcome records of the last moments: written before we go.
        if let Err(e) = j.commit().await {
            tracing::warn!(error = %e, "journal: final commit failed");
        }
    }
    if let Some(e) = &engine {
        store_warmup(&core, e, None).await;
    }
    let counts = core.shard.borrow().backlog();
    let delivery = engine.as_ref().map(|e| {
        e.log().flush_now();
        e.counters()
    });
    ExitCounts {
        backlog: counts,
        delivery: delivery.unwrap_or_default(),
    }
}

fn build_engine(
    shared: &Arc<Shared>,
    index: usize,
    backlog: Rc<RefCell<crate::shard::Backlog>>,
    load: Arc<crate::shard::ShardLoad>,
    listeners: &[std::net::SocketAddr],
) -> Result<
    (
        Rc<crate::delivery::Engine>,
        Option<crate::journal::Recovery>,
    ),
    String,
> {
    let c = &shared.config;
    let resolver = crate::dns::Resolver::new(c.dns.clone()).map_err(|e| e.to_string())?;
    let mut defaults = c.delivery.queue_defaults(&c.hostname, c.dns.smtp_port);
    // Node-wide (queue) rate limits are shared evenly by the shards.
    defaults.shaping.shards = shared.loads.len().max(1);
    let queues = crate::delivery::queues::Queues::new(&c.delivery.queues, &defaults)?;
    let settings = crate::delivery::EngineSettings {
        hostname: c.hostname.clone(),
        max_connections: std::cell::Cell::new(c.delivery.max_connections),
        connect_timeout: std::cell::Cell::new(c.delivery.connect_timeout.0),
        destination_expiry: std::cell::Cell::new(c.delivery.destination_expiry.0),
        tls_verify: c.delivery.tls_verify,
        own_addresses: std::cell::RefCell::new(crate::delivery::loop_guard::OwnAddresses::new(
            listeners,
            &c.delivery.own_addresses,
            crate::delivery::loop_guard::interface_addresses(),
        )),
    };
    let log_path = c
        .delivery
        .log
        .then(|| c.state_dir.join(format!("delivery-{index}.jsonl")));
    let log = crate::delivery::log::DeliveryLog::new(log_path);
    let (journal, recovery) = if c.ack == crate::config::AckMode::Journal {
        let (j, r) = super::recovery::open_journal(c, index)?;
        (Some(Rc::new(j)), Some(r))
    } else {
        (None, None)
    };
    let engine =
        crate::delivery::Engine::new(settings, queues, resolver, log, backlog, load, journal);
    let shards = shared.loads.len().max(1);
    let today = crate::delivery::shaping::warmup::Warmup::day_of(unix_now());
    let counts = crate::delivery::shaping::checkpoint::load(
        &crate::delivery::shaping::checkpoint::dir(&c.state_dir),
        today,
        |domain| crate::shard::hash::shard_of(domain, shards) == index,
    );
    engine.restore_warmup_counts(today, counts);
    Ok((engine, recovery))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes the shard's warm-up counts when they changed since `last`;
/// returns what is on disk now.
async fn store_warmup(
    core: &Rc<Core>,
    engine: &Rc<crate::delivery::Engine>,
    last: Option<Vec<crate::delivery::shaping::checkpoint::Count>>,
) -> Option<Vec<crate::delivery::shaping::checkpoint::Count>> {
    let today = crate::delivery::shaping::warmup::Warmup::day_of(unix_now());
    let counts = engine.warmup_counts(today);
    if last.as_ref() == Some(&counts) || (last.is_none() && counts.is_empty()) {
        return last;
    }
    let dir = crate::delivery::shaping::checkpoint::dir(&core.shared.config.state_dir);
    let index = core.index;
    let c = counts.clone();
    let r = glommio::executor()
        .spawn_blocking(move || crate::delivery::shaping::checkpoint::store(&dir, index, &c))
        .await;
    match r {
        Ok(()) => Some(counts),
        Err(e) => {
            // Retried at the next interval; only the cap's memory is at stake.
            tracing::warn!(error = %e, "warm-up counts not saved");
            last
        }
    }
}

/// Saves the warm-up counts every few seconds while a schedule is in use.
async fn warmup_loop(core: Rc<Core>, engine: Rc<crate::delivery::Engine>) {
    let mut last = None;
    loop {
        glommio::timer::sleep(crate::delivery::shaping::checkpoint::INTERVAL).await;
        if engine.queues().any_warmup() {
            last = store_warmup(&core, &engine, last).await;
        }
    }
}

/// Sends the DSNs the engine collected to the shards that own the original
/// senders' domains, once a second (so failures of one message share a DSN).
/// Under a journal the bounced recipients' final records follow once the
/// DSN is stored; a DSN the journal refused goes out again next time.
async fn dsn_loop(core: Rc<Core>, engine: Rc<crate::delivery::Engine>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let dsns = engine.take_dsns(|| core.next_queue_id());
        for dsn in dsns {
            let env = dsn.envelope;
            let to = env
                .recipients
                .first()
                .map(|r| crate::shard::hash::domain_of(r).to_string());
            let s = crate::shard::hash::shard_of(to.as_deref().unwrap_or(""), core.shards);
            let ack = env.ack.clone();
            if core.deliver(s, vec![env]).await.is_err() {
                tracing::error!("could not hand a DSN to its shard");
            }
            let (Some(ack), Some(done)) = (ack, dsn.done) else {
                continue;
            };
            let engine = engine.clone();
            glommio::spawn_local(async move {
                match ack.wait(DSN_STORE_TIMEOUT).await {
                    crate::shard::ack::Decision::Accepted => engine.dsn_stored(done),
                    _ => engine.dsn_refused(done),
                }
            })
            .detach();
        }
    }
}

/// How long a DSN may take to be stored before it is sent again.
const DSN_STORE_TIMEOUT: Duration = Duration::from_secs(60);
