//! The stub client: one (name, type) question to the configured recursive
//! nameservers, with retries, failover and CNAME chasing across queries,
//! ending in an [`Answer`] (positive, NODATA or NXDOMAIN) or a temporary
//! error whose reason names every server's last outcome.
//!
//! Retry policy: up to `attempts` rounds over the server list, starting
//! at the server that last gave a usable answer (so after a failover the
//! dead primary does not cost a timeout per query; it is tried again as
//! soon as the other servers fail), or at the next server in turn when
//! `rotate` is set. A timeout or network error moves
//! on to the next server and that server is tried again next round; a
//! SERVFAIL/REFUSED moves on and the server is not asked again for this
//! question (a recursive server's SERVFAIL is usually its own cached
//! failure, repeating the question at once is futile). NOERROR and
//! NXDOMAIN are final. Each transmission gets a fresh id and socket.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::counters::{bump, Counters};
use super::error::ResolveError;
use super::transport::{exchange, ExchangeError};
use super::wire::{interpret, show, show_server, Expected, Interpretation, Records};

/// The outcome of one (name, type) resolution that the cache can hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerKind {
    /// Data found.
    Positive(Records),
    /// The name exists but has no data of this type.
    NoData,
    /// The name does not exist.
    NxDomain,
}

/// A resolved question, after CNAME chasing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// What was found.
    pub kind: AnswerKind,
    /// The name asked for.
    pub qname: Name,
    /// The record type asked for.
    pub qtype: RecordType,
    /// The end of the CNAME chain (equals `qname` without CNAMEs).
    pub canonical: Name,
    /// The server that gave the final answer.
    pub server: SocketAddr,
}

impl Answer {
    /// `NXDOMAIN from 127.0.0.53 for x.test MX` (with the CNAME target if any).
    pub fn describe(&self) -> String {
        let what = match self.kind {
            AnswerKind::Positive(_) => "answer",
            AnswerKind::NoData => "NODATA",
            AnswerKind::NxDomain => "NXDOMAIN",
        };
        let via = if self.canonical == self.qname {
            String::new()
        } else {
            format!(" (via CNAME {})", show(&self.canonical))
        };
        format!(
            "{what} from {} for {} {}{via}",
            show_server(self.server),
            show(&self.qname),
            self.qtype
        )
    }
}

/// Nameservers plus retry policy.
pub struct Client {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
    rotate: bool,
    payload: u16,
    cname_limit: usize,
    next: Cell<usize>,
    preferred: Cell<usize>,
    permits: glommio::sync::Semaphore,
}

/// Settings for [`Client::new`].
pub struct ClientSettings {
    /// Nameservers, at least one.
    pub servers: Vec<SocketAddr>,
    /// Per-transmission timeout.
    pub timeout: Duration,
    /// Rounds over the list.
    pub attempts: u32,
    /// Rotate the starting server.
    pub rotate: bool,
    /// EDNS payload size.
    pub payload: u16,
    /// CNAME links allowed.
    pub cname_limit: usize,
    /// Sockets open at once.
    pub max_concurrent: usize,
}

impl Client {
    /// A client for these servers.
    pub fn new(s: ClientSettings) -> Self {
        Client {
            servers: s.servers,
            timeout: s.timeout,
            attempts: s.attempts,
            rotate: s.rotate,
            payload: s.payload,
            cname_limit: s.cname_limit,
            next: Cell::new(0),
            preferred: Cell::new(0),
            permits: glommio::sync::Semaphore::new(
                u64::try_from(s.max_concurrent).unwrap_or(u64::MAX),
            ),
        }
    }

    /// The nameservers asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Resolves `name`/`qtype`, chasing CNAMEs across queries. Returns the
    /// answer and the TTL to cache it for (`None`: do not cache, e.g. a
    /// negative answer without SOA).
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        counters: &Counters,
    ) -> Result<(Answer, Option<u32>), ResolveError> {
        let mut current = name.clone();
        let mut links = 0usize;
        let mut ttl = u32::MAX;
        let mut seen: Vec<Name> = Vec::new();
        loop {
            let (msg, server) = self.query(&current, qtype, counters).await?;
            let budget = self.cname_limit.saturating_sub(links);
            let answer = |kind, canonical| Answer {
                kind,
                qname: name.clone(),
                qtype,
                canonical,
                server,
            };
            match interpret(&msg, &current, qtype, budget) {
                Interpretation::Positive {
                    records,
                    canonical,
                    ttl: t,
                    ..
                } => {
                    return Ok((
                        answer(AnswerKind::Positive(records), canonical),
                        Some(t.min(ttl)),
                    ))
                }
                Interpretation::Negative {
                    nxdomain,
                    canonical,
                    ttl: t,
                    ..
                } => {
                    let kind = if nxdomain {
                        AnswerKind::NxDomain
                    } else {
                        AnswerKind::NoData
                    };
                    return Ok((answer(kind, canonical), t.map(|t| t.min(ttl))));
                }
                Interpretation::Incomplete {
                    target,
                    ttl: t,
                    links: l,
                } => {
                    links += l;
                    ttl = ttl.min(t);
                    if seen.contains(&target) || target == *name {
                        return Err(ResolveError::temporary(format!(
                            "CNAME loop at {} while resolving {} {qtype}",
                            show(&target),
                            show(name)
                        )));
                    }
                    seen.push(target.clone());
                    current = target;
                }
                Interpretation::BadChain(why) => {
                    return Err(ResolveError::temporary(format!(
                        "{why} (limit {}) while resolving {} {qtype}",
                        self.cname_limit,
                        show(name)
                    )))
                }
            }
        }
    }

    /// One question with retries and failover; returns a NOERROR or
    /// NXDOMAIN reply and the server that sent it.
    async fn query(
        &self,
        name: &Name,
        qtype: RecordType,
        counters: &Counters,
    ) -> Result<(Message, SocketAddr), ResolveError> {
        let n = self.servers.len();
        let start = if self.rotate {
            let s = self.next.get();
            self.next.set(s.wrapping_add(1));
            s % n.max(1)
        } else {
            self.preferred.get() % n.max(1)
        };
        let mut outcome: Vec<Option<String>> = vec![None; n];
        let mut given_up = vec![false; n];
        let what = format!("{} {qtype}", show(name));
        for _ in 0..self.attempts {
            for i in 0..n {
                let idx = (start + i) % n;
                let Some(&server) = self.servers.get(idx) else {
                    continue;
                };
                if given_up.get(idx).copied().unwrap_or(true) {
                    continue;
                }
                let expected = Expected {
                    server,
                    id: rand::random(),
                    name: name.clone(),
                    qtype,
                };
                let result = {
                    let _permit =
                        self.permits.acquire_permit(1).await.map_err(|e| {
                            ResolveError::temporary(format!("resolver closed: {e}"))
                        })?;
                    exchange(&expected, self.payload, self.timeout, counters).await
                };
                let srv = show_server(server);
                let note = match result {
                    Ok(msg) => {
                        bump(&counters.answers);
                        match msg.response_code() {
                            ResponseCode::NoError => {
                                self.preferred.set(idx);
                                return Ok((msg, server));
                            }
                            ResponseCode::NXDomain => {
                                bump(&counters.nxdomains);
                                self.preferred.set(idx);
                                return Ok((msg, server));
                            }
                            ResponseCode::ServFail => {
                                bump(&counters.servfails);
                                give_up(&mut given_up, idx);
                                format!("SERVFAIL from {srv} for {what}")
                            }
                            other => {
                                bump(&counters.other_rcodes);
                                give_up(&mut given_up, idx);
                                format!("{} from {srv} for {what}", rcode_name(other))
                            }
                        }
                    }
                    Err(ExchangeError::Timeout) => {
                        bump(&counters.timeouts);
                        format!("timeout after {:?} from {srv} for {what}", self.timeout)
                    }
                    Err(ExchangeError::Network(e)) => {
                        bump(&counters.network_errors);
                        format!("network error ({e}) from {srv} for {what}")
                    }
                    Err(ExchangeError::Encode(e)) => return Err(ResolveError::temporary(e)),
                };
                tracing::debug!("{note}");
                if let Some(slot) = outcome.get_mut(idx) {
                    *slot = Some(note);
                }
            }
        }
        let reason: Vec<String> = outcome.into_iter().flatten().collect();
        Err(ResolveError::temporary(if reason.is_empty() {
            format!("no nameserver to ask for {what}")
        } else {
            reason.join("; ")
        }))
    }
}

/// Mnemonic of an error RCODE for log and bounce text.
fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE {}", u16::from(other)),
    }
}

fn give_up(given_up: &mut [bool], idx: usize) {
    if let Some(g) = given_up.get_mut(idx) {
        *g = true;
    }
}
