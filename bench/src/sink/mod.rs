//! An SMTP receiver that behaves like the receiving MTAs Sluice meets in
//! production: slow, flaky, rate-limiting, greylisting or dead. It exists so
//! that Sluice's retry, back-off and per-destination concurrency logic can
//! be exercised on loopback, and so that the injector has something faster
//! than itself to push into.
//!
//! # Destinations
//!
//! Behaviour is chosen per destination. A connection gets the behaviour of
//! the local address it arrived on (`[hosts."127.0.0.2"]`; every such
//! address is bound on the same port as the first `--listen` address, since
//! binding the wildcard address is not allowed), falling back to
//! `[default]`. Each recipient then uses the section of its domain
//! (`[domains."gmail.test"]`) if there is one, else the connection's.
//! Every section inherits unset keys from `[default]`.
//!
//! Connection-level keys (`mode` except `drop_mid_data`,
//! `max_messages_per_connection`, `pipelining`, `chunking`, `starttls`,
//! `auth`, `max_message_size`) only have an effect in `[default]` and
//! `[hosts.*]`; `max_connections_per_ip` in a domain section limits the
//! connections carrying that domain, counted from their first RCPT for it.
//!
//! # Profile schema (TOML)
//!
//! ```toml
//! [default]
//! latency = 0                       # ms before each reply group, or:
//! # latency = { dist = "uniform", min_ms = 5, max_ms = 50 }
//! # latency = { dist = "normal", mean_ms = 20, stddev_ms = 5 }
//! tempfail_pct = 0.0                # % of recipients answered tempfail_reply
//! permfail_pct = 0.0                # % of recipients answered permfail_reply
//! tempfail_reply = "451 4.3.0 Temporary server error. Please try again later"
//! permfail_reply = "550 5.1.1 The email account that you tried to reach does not exist"
//! max_connections_per_ip = 0        # 0 = unlimited; over it: 421 4.7.0 ... from this IP
//! rate_limit = 0                    # accepted msgs/s (1 s of burst); 0 = unlimited
//! rate_limit_style = "tempfail"     # "tempfail": 450 4.7.1 at RCPT; "disconnect": 421 + close
//! max_messages_per_connection = 0   # then 421 4.7.0 at the next MAIL
//! greylist = false                  # 451 4.7.1 on the first (sender, recipient) attempt
//! mode = "normal"                   # "refuse" | "hang" | "drop_mid_data"
//! pipelining = true                 # advertise PIPELINING
//! chunking = true                   # advertise and accept BDAT
//! starttls = true                   # advertise STARTTLS
//! auth = false                      # advertise AUTH PLAIN, accept any credentials
//! max_message_size = 52428800       # advertised SIZE; larger messages get 552 5.3.4
//! suspend_after_secs = 0            # with suspend_for_secs > 0: from this many seconds after
//! suspend_for_secs = 0              #   start, for that long, every attempt gets 421 + close
//!
//! [hosts."127.0.0.2"]
//! mode = "hang"
//!
//! [domains."gmail.test"]
//! rate_limit = 100
//! ```
//!
//! Local parts starting with `tempfail` or `permfail` (`tempfail@x.test`,
//! `permfail+3@x.test`) always get the section's tempfail/permfail reply.
//! Latency is applied once per group of replies written together, so a
//! pipelined transaction pays it once and a DATA transaction twice (once
//! for the envelope, once for the final reply).

mod command;
mod counters;
mod headers;
mod limits;
pub mod profile;
mod receipts;
mod session;
mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use counters::{DomainReport, SinkReport};
pub use profile::{Behavior, DeadMode, LatencyConfig, LatencyDist, Profile, RateLimitStyle};

use crate::error::{Error, Result};
use crate::loopback::ensure_loopback;
use counters::Stats;
use limits::{KeyHasher, KeySet, TokenBucket};
use receipts::Receipts;

/// Configuration of a sink.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// SMTP listen addresses (loopback only; port 0 picks a free port).
    /// Addresses named in the profile's `[hosts]` are bound in addition,
    /// on the port of the first entry.
    pub listen: Vec<SocketAddr>,
    /// Destination behaviours.
    pub profile: Profile,
    /// Address of the JSON status endpoint, if wanted (loopback only).
    pub status: Option<SocketAddr>,
    /// Name used in the greeting and EHLO reply.
    pub hostname: String,
    /// Generate a self-signed certificate and offer STARTTLS.
    pub tls: bool,
    /// Count the distinct recipients accepted per Message-ID, readable with
    /// [`SinkHandle::received_recipients`]; costs one small map entry per message.
    pub track_receipts: bool,
}

impl SinkOptions {
    /// Default behaviour on one address, STARTTLS enabled, no status endpoint.
    pub fn new(listen: SocketAddr) -> Self {
        SinkOptions {
            listen: vec![listen],
            profile: Profile::default(),
            status: None,
            hostname: "sink.sluice-bench.test".to_string(),
            tls: true,
            track_receipts: false,
        }
    }
}

/// State shared by every session of one sink.
pub(crate) struct Shared {
    pub(crate) profile: Profile,
    pub(crate) stats: Stats,
    /// Rate limiter per behaviour index, for behaviours that have one.
    pub(crate) buckets: Vec<Option<TokenBucket>>,
    pub(crate) greylist: KeySet,
    pub(crate) seen: KeySet,
    pub(crate) hasher: KeyHasher,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) hostname: String,
    pub(crate) queue_ids: AtomicU64,
    pub(crate) receipts: Option<Receipts>,
}

/// A bound sink, ready to [`run`](Sink::run).
pub struct Sink {
    listeners: Vec<TcpListener>,
    status: Option<TcpListener>,
    shared: Arc<Shared>,
}

/// Totals from [`SinkHandle::totals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkTotals {
    /// Messages accepted.
    pub messages_accepted: u64,
    /// Recipients of accepted messages (duplicates included).
    pub recipients_accepted: u64,
    /// Recipients answered 4xx.
    pub tempfailed: u64,
    /// Recipients answered 5xx.
    pub permfailed: u64,
    /// Accepted (Message-ID, recipient) pairs seen before.
    pub duplicates: u64,
}

/// Cheap, clonable access to a running sink's live counters.
#[derive(Clone)]
pub struct SinkHandle {
    shared: Arc<Shared>,
}

impl SinkHandle {
    /// Current values of all counters.
    pub fn snapshot(&self) -> SinkReport {
        self.shared.stats.snapshot()
    }

    /// The few totals that are cheap to read (no per-domain map), for
    /// callers that poll often.
    pub fn totals(&self) -> SinkTotals {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.shared.stats;
        SinkTotals {
            messages_accepted: s.messages_accepted.load(Relaxed),
            recipients_accepted: s.recipients_accepted.load(Relaxed),
            tempfailed: s.tempfailed.load(Relaxed),
            permfailed: s.permfailed.load(Relaxed),
            duplicates: s.duplicates.load(Relaxed),
        }
    }

    /// When the last message was accepted, if any was.
    pub fn last_accepted_at(&self) -> Option<Instant> {
        self.shared.stats.last_accepted_at()
    }

    /// Distinct recipients accepted so far in messages carrying this
    /// Message-ID (angle brackets included, as in the header); always 0
    /// unless [`SinkOptions::track_receipts`] was set.
    pub fn received_recipients(&self, message_id: &[u8]) -> u32 {
        self.shared.receipts.as_ref().map_or(0, |r| {
            r.get(self.shared.hasher.hash(message_id.trim_ascii()))
        })
    }
}

impl std::fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandle").finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    ensure_loopback(addr)?;
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("binding {addr}"), e))
}

impl Sink {
    /// Binds all listeners and prepares TLS; fails on non-loopback addresses.
    pub async fn bind(opts: SinkOptions) -> Result<Sink> {
        let Some(&first) = opts.listen.first() else {
            return Err(Error::InvalidOption(
                "sink needs at least one listen address".into(),
            ));
        };
        let mut listeners = Vec::new();
        for addr in &opts.listen {
            listeners.push(bind(*addr).await?);
        }
        let port = listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .map_or(first.port(), |a| a.port());
        for ip in opts.profile.host_addrs() {
            let addr = SocketAddr::new(ip, port);
            let already = listeners
                .iter()
                .any(|l| l.local_addr().is_ok_and(|a| a.ip() == ip));
            if !already {
                listeners.push(bind(addr).await?);
            }
        }
        let status = match opts.status {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let tls = if opts.tls {
            Some(TlsAcceptor::from(crate::tls::self_signed_server_config()?))
        } else {
            None
        };
        let buckets = opts
            .profile
            .behaviors()
            .iter()
            .map(|b| (b.rate_limit > 0.0).then(|| TokenBucket::new(b.rate_limit)))
            .collect();
        let shared = Arc::new(Shared {
            profile: opts.profile,
            stats: Stats::new(),
            buckets,
            greylist: KeySet::new(),
            seen: KeySet::new(),
            hasher: KeyHasher::default(),
            tls,
            hostname: opts.hostname,
            queue_ids: AtomicU64::new(1),
            receipts: opts.track_receipts.then(Receipts::new),
        });
        Ok(Sink {
            listeners,
            status,
            shared,
        })
    }

    /// All SMTP addresses actually bound (ports resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The first SMTP address bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listeners.first().and_then(|l| l.local_addr().ok())
    }

    /// The status endpoint's address, if enabled.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle for reading live counters while [`run`](Sink::run) is going.
    pub fn handle(&self) -> SinkHandle {
        SinkHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` completes, then closes every session and
    /// returns the final counters (all sessions have finished by then).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<SinkReport> {
        let Sink {
            listeners,
            status,
            shared,
        } = self;
        tokio::pin!(shutdown);
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = accept_any(&listeners) => match accepted {
                    Ok((tcp, peer)) => {
                        tasks.spawn(session::handle(shared.clone(), tcp, peer));
                    }
                    // Out of descriptors or similar: back off briefly
                    // instead of spinning on the error.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                accepted = accept_opt(status.as_ref()) => {
                    if let Ok((tcp, _)) = accepted {
                        tasks.spawn(status::handle(shared.clone(), tcp));
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listeners);
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        Ok(shared.stats.snapshot())
    }
}

/// Binds and serves until `shutdown` completes; returns the final counters.
/// Use [`Sink::bind`] + [`Sink::handle`] + [`Sink::run`] to watch counters live.
pub async fn serve(opts: SinkOptions, shutdown: impl Future<Output = ()>) -> Result<SinkReport> {
    Sink::bind(opts).await?.run(shutdown).await
}

/// Accepts from whichever listener is ready first.
async fn accept_any(listeners: &[TcpListener]) -> std::io::Result<(TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        for l in listeners {
            if let Poll::Ready(r) = l.poll_accept(cx) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

async fn accept_opt(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}
