//! The control plane's way into the cores.
//!
//! The admin thread (tokio) never touches a shard: it sends a [`Call`] over
//! a bounded `async-channel` to the core that owns the state (or to every
//! core) and awaits the answer on a one-slot channel. Each core runs
//! [`serve`], a task that answers calls against its own engine — the same
//! single-owner rule as the mail path (an explicit hop, like Seastar's
//! `submit_to`), so no lock and no shared map is needed. `async-channel`
//! works here because glommio accepts wakes from foreign threads (its
//! tasks queue them and wake the executor).

use super::Core;
use crate::delivery::control::{
    queue_infos, DestInfo, Filter, LatencySummary, QueueInfo, QueuedRcpt, Target,
};
use crate::delivery::Engine;
use crate::dns::ResolverStats;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Calls in flight to one core before senders wait.
pub const CHANNEL_CAPACITY: usize = 16;

/// How long the admin thread waits for a core before giving up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the control plane asks a core.
#[derive(Debug, Clone)]
pub enum Request {
    /// Counters.
    Status,
    /// Destinations matching the target (all when empty).
    Destinations(Target),
    /// Queue totals.
    Queues,
    /// Pause (`true`) or resume.
    Pause(Target, bool),
    /// Retry deferred recipients now.
    Flush(Target),
    /// Bounce (`true`) or delete matching recipients.
    Remove(Filter, bool),
    /// Where a message's recipients are.
    Trace(u64),
    /// Everything `/metrics` shows.
    Metrics,
}

/// A core's answer.
#[derive(Debug)]
pub enum Response {
    /// For [`Request::Status`].
    Status(ShardStatus),
    /// For [`Request::Destinations`].
    Destinations(Vec<DestInfo>),
    /// For [`Request::Queues`].
    Queues(Vec<QueueInfo>),
    /// Destinations or recipients affected.
    Count(usize),
    /// For [`Request::Trace`].
    Trace(Vec<QueuedRcpt>),
    /// For [`Request::Metrics`].
    Metrics(Box<ShardMetrics>),
    /// The request could not be served.
    Error(String),
}

/// One request and where to answer it.
pub struct Call {
    /// The request.
    pub request: Request,
    /// A one-slot channel for the answer.
    pub reply: async_channel::Sender<Response>,
}

/// One shard's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShardStatus {
    /// Shard (core) index.
    pub shard: usize,
    /// Envelopes taken in.
    pub accepted_messages: u64,
    /// Recipients taken in.
    pub accepted_recipients: u64,
    /// Recipients delivered.
    pub delivered: u64,
    /// Deferral events.
    pub deferred: u64,
    /// Recipients bounced (the operator's bounces included).
    pub bounced: u64,
    /// Recipients expired.
    pub expired: u64,
    /// Recipients deleted by the operator.
    pub deleted: u64,
    /// DSNs generated.
    pub dsns: u64,
    /// Inbound SMTP sessions open on this core.
    pub sessions_open: usize,
    /// Outbound connections open.
    pub connections_open: usize,
    /// Outbound connections opened since start.
    pub connections_opened: u64,
    /// Messages queued (not final on this shard).
    pub queued_messages: u64,
    /// Body bytes queued.
    pub queued_bytes: u64,
    /// Recipients waiting or deferred (in-flight ones not counted).
    pub queued_recipients: usize,
    /// Recipients in the retry heap.
    pub retry_heap: usize,
}

/// Journal figures, filled in by the journal once it exists (never
/// invented before that).
#[derive(Debug, Clone, Default)]
pub struct JournalMetrics {
    /// Bytes appended.
    pub bytes_written: u64,
    /// fsync latency summary.
    pub fsync: LatencySummary,
}

/// Everything `/metrics` shows for one shard.
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    /// Counters.
    pub status: ShardStatus,
    /// Per-queue totals.
    pub queues: Vec<QueueInfo>,
    /// The shard's busiest destinations (by recipients handled).
    pub top_destinations: Vec<DestInfo>,
    /// Resolver counters.
    pub resolver: ResolverStats,
    /// Seconds the executor spent running tasks since start.
    pub busy_seconds: f64,
    /// Tasks the executor ran since start.
    pub tasks_executed: u64,
    /// Delivery latency, accept → delivered.
    pub latency: LatencySummary,
    /// Journal figures: `None` until the journal reports them.
    pub journal: Option<JournalMetrics>,
}

/// Destinations per shard kept for `/metrics`; the admin thread keeps
/// the node-wide top [`TOP_DESTINATIONS`] of these.
pub const TOP_DESTINATIONS: usize = 100;

/// The admin thread's side: one sender per core.
#[derive(Clone)]
pub struct ControlHandle {
    cores: Vec<async_channel::Sender<Call>>,
}

impl ControlHandle {
    /// Channels to every core; the receivers go to the cores' [`serve`].
    pub fn new(cores: usize) -> (ControlHandle, Vec<async_channel::Receiver<Call>>) {
        let (tx, rx) = (0..cores)
            .map(|_| async_channel::bounded(CHANNEL_CAPACITY))
            .unzip();
        (ControlHandle { cores: tx }, rx)
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.cores.len()
    }

    /// Asks core `shard` and waits for its answer.
    pub async fn ask(&self, shard: usize, request: Request) -> Response {
        let Some(core) = self.cores.get(shard) else {
            return Response::Error(format!("no core {shard}"));
        };
        let (tx, rx) = async_channel::bounded(1);
        if core.send(Call { request, reply: tx }).await.is_err() {
            return Response::Error(format!("core {shard} is not serving control requests"));
        }
        rx.recv()
            .await
            .unwrap_or_else(|_| Response::Error(format!("core {shard} dropped the request")))
    }

    /// Asks every core, in shard order.
    pub async fn ask_all(&self, request: Request) -> Vec<Response> {
        let mut out = Vec::with_capacity(self.cores.len());
        // Sent to all first, then collected: the cores work in parallel.
        let mut waiting = Vec::with_capacity(self.cores.len());
        for (i, core) in self.cores.iter().enumerate() {
            let (tx, rx) = async_channel::bounded(1);
            let call = Call {
                request: request.clone(),
                reply: tx,
            };
            let sent = core.send(call).await.is_ok();
            waiting.push((i, sent, rx));
        }
        for (i, sent, rx) in waiting {
            out.push(if sent {
                rx.recv()
                    .await
                    .unwrap_or_else(|_| Response::Error(format!("core {i} dropped the request")))
            } else {
                Response::Error(format!("core {i} is not serving control requests"))
            });
        }
        out
    }
}

/// Serves control calls for one core until every sender is gone.
pub(super) async fn serve(
    core: Rc<Core>,
    engine: Option<Rc<Engine>>,
    calls: async_channel::Receiver<Call>,
) {
    let state = CoreControl {
        core,
        engine,
        busy: Cell::new(Duration::ZERO),
        tasks: Cell::new(0),
    };
    while let Ok(call) = calls.recv().await {
        let finishes = matches!(call.request, Request::Remove(..));
        let mut answer = state.handle(call.request);
        // A bounce or delete is answered once its records are durable, so
        // an operator who saw "deleted" never sees the mail come back after
        // a crash.
        if let (true, Some(j)) = (finishes, state.engine.as_ref().and_then(|e| e.journal())) {
            if let Err(e) = j.commit().await {
                answer = Response::Error(format!("journal: {e}"));
            }
        }
        // The admin side may have given up (timeout): nothing to do then.
        let _ = call.reply.try_send(answer);
    }
}

struct CoreControl {
    core: Rc<Core>,
    engine: Option<Rc<Engine>>,
    // glommio hands out executor stats as deltas since the last call.
    busy: Cell<Duration>,
    tasks: Cell<u64>,
}

impl CoreControl {
    fn handle(&self, request: Request) -> Response {
        let shard = self.core.index;
        let no_engine =
            || Response::Error("this daemon does not deliver (route is not \"deliver\")".into());
        match request {
            Request::Status => Response::Status(self.status()),
            Request::Metrics => Response::Metrics(Box::new(self.metrics())),
            Request::Destinations(t) => Response::Destinations(
                self.engine
                    .as_ref()
                    .map(|e| e.dest_infos(shard, &t))
                    .unwrap_or_default(),
            ),
            Request::Queues => Response::Queues(
                self.engine
                    .as_ref()
                    .map(|e| queue_infos(shard, &e.dest_infos(shard, &Target::default())))
                    .unwrap_or_default(),
            ),
            Request::Trace(id) => Response::Trace(
                self.engine
                    .as_ref()
                    .map(|e| e.trace(shard, id))
                    .unwrap_or_default(),
            ),
            Request::Pause(t, paused) => match &self.engine {
                Some(e) => Response::Count(e.set_paused(&t, paused)),
                None => no_engine(),
            },
            Request::Flush(t) => match &self.engine {
                Some(e) => Response::Count(e.flush(&t)),
                None => no_engine(),
            },
            Request::Remove(f, bounce) => match &self.engine {
                Some(e) => match e.remove(&f, bounce) {
                    Ok(n) => Response::Count(n),
                    Err(m) => Response::Error(m),
                },
                None => no_engine(),
            },
        }
    }

    fn status(&self) -> ShardStatus {
        let shard = self.core.index;
        let load = self
            .core
            .shared
            .loads
            .get(shard)
            .map(|l| l.snapshot())
            .unwrap_or_default();
        let mut s = ShardStatus {
            shard,
            accepted_messages: load.accepted_messages,
            accepted_recipients: load.accepted_recipients,
            queued_messages: load.queued_messages,
            queued_bytes: load.queued_bytes,
            sessions_open: self.core.sessions(),
            ..ShardStatus::default()
        };
        if let Some(e) = &self.engine {
            let c = e.counters();
            s.delivered = c.delivered;
            s.deferred = c.deferred;
            s.bounced = c.bounced;
            s.expired = c.expired;
            s.deleted = e.deleted();
            s.dsns = c.dsns;
            s.connections_open = e.connections_open();
            s.connections_opened = c.connections;
            s.retry_heap = e.deferred_waiting();
            s.queued_recipients = e.waiting_total() + s.retry_heap;
        }
        s
    }

    fn metrics(&self) -> ShardMetrics {
        let stats = glommio::executor().executor_stats();
        self.busy.set(self.busy.get() + stats.executor_runtime());
        self.tasks.set(self.tasks.get() + stats.tasks_executed());
        let mut m = ShardMetrics {
            status: self.status(),
            busy_seconds: self.busy.get().as_secs_f64(),
            tasks_executed: self.tasks.get(),
            ..ShardMetrics::default()
        };
        if let Some(e) = &self.engine {
            let shard = self.core.index;
            let mut dests = e.dest_infos(shard, &Target::default());
            m.queues = queue_infos(shard, &dests);
            let volume = |d: &DestInfo| d.delivered + d.bounced + d.expired + d.deferred_total;
            dests.sort_by_key(|d| std::cmp::Reverse(volume(d)));
            dests.truncate(TOP_DESTINATIONS);
            m.top_destinations = dests;
            m.resolver = e.resolver_stats();
            m.latency = e.latency();
            m.journal = e.journal().map(|j| {
                let h = j.fsync_histogram();
                let sum = h.mean() * h.len() as f64 / 1e6;
                JournalMetrics {
                    bytes_written: j.stats().appended,
                    fsync: LatencySummary::from_micros(&h, sum),
                }
            });
        }
        m
    }
}
