//! One outbound connection: a thin driver around [`ClientSession`].
//!
//! Resolve the destination, connect to its hosts in preference order
//! (moving on to the next address when one fails), then keep pulling
//! transactions from the destination's queue — up to the client's pipelining
//! window at a time — until the queue stays empty for `idle_timeout` or the
//! connection has carried `max_messages_per_connection` transactions.
//! Every recipient handed to the session gets exactly one outcome (the
//! machine's invariant); the driver adds a safety net for the impossible.

use super::engine::{ConnInfo, Dest, Engine};
use super::loop_guard::HostsAfterLoopCheck;
use super::queue::Rcpt;
use super::queues::Queue;
use super::shaping::Wait;
use crate::readbuf::InputBuffer;
use crate::smtp::client::{ClientEvent, ClientSession, Outcome, Recipient, Transaction};
use crate::smtp::Reply;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::client::TlsStream;
use glommio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }
    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => s.write_all(buf).await,
        }
    }
    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(s) => s.flush().await,
        }
    }
}

/// A connection's claim on its destination, queue and shard budget,
/// released when the task ends (and leftover work handed on).
pub struct Slot {
    engine: Rc<Engine>,
    dest: Rc<Dest>,
    queue: Rc<Queue>,
    /// The source address taken from the queue's pool, if any.
    source: Option<std::net::IpAddr>,
}

impl Slot {
    /// Wraps counts the engine has already raised.
    pub(super) fn new(engine: Rc<Engine>, dest: Rc<Dest>, queue: Rc<Queue>) -> Slot {
        Slot {
            engine,
            dest,
            queue,
            source: None,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.source {
            self.dest.shaper.borrow_mut().release_source(ip);
        }
        self.engine.connection_ended(&self.dest, &self.queue);
    }
}

/// Runs one connection for its slot's destination.
pub async fn run(mut slot: Slot) {
    let engine = slot.engine.clone();
    let dest = slot.dest.clone();
    let resolver = engine.resolver();
    let resolved = match &dest.fallback {
        Some(target) => resolver.resolve_target(&dest.domain, target).await,
        None => resolver.resolve_route(&dest.domain).await,
    };
    let route = match resolved {
        Ok(r) => r,
        Err(e) => {
            engine.fail_dest(&dest, &e);
            return;
        }
    };
    engine.place_by_mx(&dest, &route);
    // Limits and client settings of the queue the destination is in now.
    let queue = dest.queue();
    let client = queue.client.clone();
    // A source address from the sender pool's or the queue's addresses,
    // under the per-address limit.
    let pool = dest.pool();
    let sources = queue.shaping.sources(pool.as_deref());
    let Ok(source) = dest.shaper.borrow_mut().take_source(sources) else {
        return;
    };
    slot.source = source;
    // A host a `next-mx` rule put aside is tried last.
    let avoid = dest
        .shaper
        .borrow()
        .avoided_mx(std::time::Instant::now())
        .map(str::to_string);
    let checked = engine.settings.own_addresses.borrow().check(&route.hosts);
    let mut hosts = match checked {
        HostsAfterLoopCheck::Usable(hosts) => hosts,
        HostsAfterLoopCheck::LoopsToSelf { host, addr } => {
            let text = format!(
                "mail for {} loops back to myself ({host} [{addr}])",
                dest.domain
            );
            engine.bounce_dest(&dest, Reply::new(554, Some((5, 4, 6)), text));
            return;
        }
    };
    if let Some(a) = &avoid {
        hosts.sort_by_key(|h| h.name.eq_ignore_ascii_case(a));
    }
    let mut info = ConnInfo::default();
    let mut stream = None;
    let mut errors = Vec::new();
    'hosts: for host in hosts {
        for ip in &host.addrs {
            let addr = SocketAddr::new(*ip, host.port);
            let timeout = engine.settings.connect_timeout.get();
            let connect = async {
                match source {
                    Some(from) => super::shaping::source::connect_from(from, addr, timeout).await,
                    None => TcpStream::connect_timeout(addr, timeout)
                        .await
                        .map_err(std::io::Error::from),
                }
            };
            match connect.await {
                Ok(s) => {
                    info.mx = Some(host.name.clone());
                    info.ip = Some(*ip);
                    info.source = s.local_addr().ok().map(|a| a.ip());
                    stream = Some(Stream::Plain(s));
                    break 'hosts;
                }
                Err(e) => errors.push(format!("{} [{addr}]: {e}", host.name)),
            }
        }
    }
    let Some(mut stream) = stream else {
        let text = if errors.is_empty() {
            format!("no usable MX host for {}", dest.domain)
        } else {
            format!("cannot connect: {}", errors.join("; "))
        };
        engine.shaping_connect_failed(&dest);
        engine.defer_dest(&dest, Reply::new(451, Some((4, 4, 1)), text));
        return;
    };
    engine.counted_connection();
    let _ = stream.tcp().set_nodelay(true);
    let _ = stream
        .tcp()
        .set_write_timeout(Some(client.timeouts.data_block));

    let mut session = ClientSession::new(client.clone());
    let mut inflight: Vec<(u64, Vec<Rcpt>)> = Vec::new();
    let mut input = InputBuffer::new(4096, 64 * 1024);
    let mut out = Vec::with_capacity(4096);
    let mut sent = 0usize;
    let window = client.max_pipelined_txns.max(1);
    let mut closed = false;
    let mut quitting = false;
    // Transaction start times, for the controller's latency signal.
    let mut started: Vec<(u64, std::time::Instant)> = Vec::with_capacity(window);
    // Set when the shaper held the next transaction back.
    let mut held: Option<Wait>;

    while !closed {
        // Limits from the queue in force now: a reload applies to the next
        // transaction, even on a connection opened before it.
        let (max_rcpt, max_messages) = {
            let q = dest.queue();
            (
                q.client.max_rcpt_per_txn.max(1),
                q.max_messages_per_connection.max(1),
            )
        };
        // Fill the window from the destination's queue, as the shaper
        // allows. Never hand a transaction to a session we asked to quit: it
        // would come straight back deferred (and wait a whole retry
        // interval).
        // What held the window back last, from this round only.
        held = None;
        while inflight.len() < window
            && sent < max_messages
            && !quitting
            && !dest.is_paused()
            && !engine.draining()
        {
            if dest.waiting.borrow().is_empty() {
                break;
            }
            if let Err(w) = engine.admit(&dest, &dest.queue()) {
                held = Some(w);
                break;
            }
            let batch = dest.waiting.borrow_mut().take_transaction(max_rcpt);
            let Some(first) = batch.first() else { break };
            let id = engine.next_txn.get();
            engine.next_txn.set(id + 1);
            let msg = first.msg.clone();
            let recipients = batch
                .iter()
                .enumerate()
                .map(|(i, r)| Recipient {
                    index: i,
                    address: r.addr.clone(),
                })
                .collect();
            session.enqueue(Transaction {
                id,
                reverse_path: msg.reverse_path.clone(),
                recipients,
                body: msg.body.clone(),
                eight_bit: msg.eight_bit,
                smtputf8: msg.smtputf8,
            });
            inflight.push((id, batch));
            started.push((id, std::time::Instant::now()));
            sent += 1;
        }

        // Write what the session has to say: commands, then any body.
        loop {
            let body = session.poll_transmit(&mut out);
            if out.is_empty() && body.is_none() {
                break;
            }
            let mut ok = stream.write_all(&out).await.is_ok();
            out.clear();
            if let (true, Some(b)) = (ok, body) {
                ok = stream.write_all(&b).await.is_ok();
            }
            if ok {
                ok = stream.flush().await.is_ok();
            }
            if !ok {
                session.handle_closed();
                break;
            }
        }

        // Act on events.
        let mut evented = false;
        while let Some(ev) = session.poll_event() {
            evented = true;
            match ev {
                ClientEvent::Ready => {}
                ClientEvent::StartTls => {
                    input.clear();
                    match start_tls(&engine, stream, info.mx.as_deref(), client.timeouts.other)
                        .await
                    {
                        Some((s, version, cipher)) => {
                            stream = s;
                            info.tls = Some(version);
                            info.cipher = Some(cipher);
                            session.tls_established();
                        }
                        None => {
                            session.handle_closed();
                            // The stream is gone; outcomes follow as events.
                            drain_events(&engine, &dest, &mut session, &mut inflight, &info);
                            settle_leftovers(&engine, &dest, &mut inflight, &info);
                            return;
                        }
                    }
                }
                ClientEvent::RcptOutcome { txn, rcpt, outcome } => {
                    apply(&engine, &dest, &mut inflight, txn, rcpt, &outcome, &info);
                }
                ClientEvent::TxnDone { txn } => {
                    inflight.retain(|(id, _)| *id != txn);
                    if let Some(i) = started.iter().position(|(id, _)| *id == txn) {
                        let (_, t) = started.swap_remove(i);
                        engine.shaping_latency(&dest, t.elapsed());
                    }
                }
                ClientEvent::Closed { .. } => closed = true,
            }
        }
        if closed {
            break;
        }
        if evented {
            // Events (TLS up, outcomes) may have made room or new output:
            // go round again before blocking on a read.
            continue;
        }

        if inflight.is_empty() && session.is_ready() {
            if sent >= max_messages || engine.draining() || engine.over_cap(&dest, &dest.queue()) {
                quitting = true;
                session.quit();
                continue;
            }
            match held.take() {
                // Suspended or capped for the day: let the connection go.
                Some(Wait::Closed(_)) => {
                    quitting = true;
                    session.quit();
                    continue;
                }
                // Paced: wait for the next token, unless that is longer
                // than an idle connection is kept.
                Some(Wait::Pace(at)) => {
                    let wait = at.saturating_duration_since(std::time::Instant::now());
                    if wait > queue.idle_timeout {
                        quitting = true;
                        session.quit();
                    } else {
                        glommio::timer::sleep(wait).await;
                    }
                    continue;
                }
                None => {}
            }
            if dest.waiting.borrow().is_empty() || dest.is_paused() {
                match wait_for_work(&engine, &dest, &queue).await {
                    Idle::Work => {}
                    Idle::TimedOut | Idle::Evicted => {
                        quitting = true;
                        session.quit();
                        // Work that arrived meanwhile needs another connection.
                        engine.kick(&dest);
                    }
                }
            }
            continue;
        }

        // Read replies.
        let timeout = session.timeout().unwrap_or(Duration::from_secs(300));
        let _ = stream.tcp().set_read_timeout(Some(timeout));
        let spare = input.spare();
        if spare.is_empty() {
            session.handle_closed();
            continue;
        }
        // Paced with room in the window: the next token may come before
        // the replies do. Race them, or pacing would cap a connection at
        // one transaction per reply time. (A read dropped unfinished loses
        // nothing: glommio receives only once the socket is readable.)
        let pace = match held {
            Some(Wait::Pace(at)) if inflight.len() < window && sent < max_messages => Some(at),
            _ => None,
        };
        let read = match pace {
            None => stream.read(spare).await,
            Some(at) => {
                let r = futures_lite::future::or(async { Some(stream.read(spare).await) }, async {
                    glommio::timer::sleep(at.saturating_duration_since(std::time::Instant::now()))
                        .await;
                    None
                })
                .await;
                match r {
                    Some(r) => r,
                    None => continue,
                }
            }
        };
        match read {
            Ok(0) => session.handle_closed(),
            Ok(n) => {
                input.filled(n);
                let used = session.handle_input(input.data());
                input.consume(used);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => session.handle_timeout(),
            Err(_) => session.handle_closed(),
        }
    }
    drain_events(&engine, &dest, &mut session, &mut inflight, &info);
    settle_leftovers(&engine, &dest, &mut inflight, &info);
}

enum Idle {
    Work,
    TimedOut,
    Evicted,
}

/// Parks an idle connection until work arrives, its idle timeout passes
/// (never while the destination is at or under its minimum), or the shard
/// evicts it to make room for another destination.
async fn wait_for_work(engine: &Engine, dest: &Dest, queue: &Rc<Queue>) -> Idle {
    dest.idle.set(dest.idle.get() + 1);
    let ticket = engine.went_idle(queue);
    let evicted = ticket.wake.listen();
    let work = dest.work.listen();
    let keep = dest.active.get() <= queue.min_connections_per_destination;
    let has_work = || !dest.waiting.borrow().is_empty() && !dest.is_paused();
    if engine.draining() {
        dest.idle.set(dest.idle.get().saturating_sub(1));
        return Idle::TimedOut;
    }
    // Evicted the moment it went idle (someone waits for the slot).
    let outcome = if ticket.evicted.get() {
        Idle::Evicted
    } else if has_work() {
        Idle::Work
    } else {
        let idle = queue.idle_timeout;
        futures_lite::future::or(
            futures_lite::future::or(
                async {
                    work.await;
                    Idle::Work
                },
                async {
                    evicted.await;
                    Idle::Evicted
                },
            ),
            async {
                if keep {
                    std::future::pending::<()>().await;
                }
                glommio::timer::sleep(idle).await;
                Idle::TimedOut
            },
        )
        .await
    };
    dest.idle.set(dest.idle.get().saturating_sub(1));
    // Eviction wins every race: another destination waits for this slot.
    if ticket.evicted.replace(true) {
        return Idle::Evicted;
    }
    match outcome {
        Idle::TimedOut if has_work() => Idle::Work,
        o => o,
    }
}

fn apply(
    engine: &Rc<Engine>,
    dest: &Rc<Dest>,
    inflight: &mut [(u64, Vec<Rcpt>)],
    txn: u64,
    idx: usize,
    outcome: &Outcome,
    info: &ConnInfo,
) {
    let Some((_, batch)) = inflight.iter_mut().find(|(id, _)| *id == txn) else {
        return;
    };
    if let Some(slot) = batch.get_mut(idx) {
        // Mark the slot as settled by taking its message out of it: a
        // recipient left in `inflight` at the end is one never settled.
        let rcpt = Rcpt {
            msg: slot.msg.clone(),
            addr: std::mem::replace(&mut slot.addr, Arc::from("")),
            attempts: slot.attempts,
            index: slot.index,
        };
        engine.outcome(dest, rcpt, outcome, info);
    }
}

fn drain_events(
    engine: &Rc<Engine>,
    dest: &Rc<Dest>,
    session: &mut ClientSession,
    inflight: &mut Vec<(u64, Vec<Rcpt>)>,
    info: &ConnInfo,
) {
    while let Some(ev) = session.poll_event() {
        match ev {
            ClientEvent::RcptOutcome { txn, rcpt, outcome } => {
                apply(engine, dest, inflight, txn, rcpt, &outcome, info)
            }
            ClientEvent::TxnDone { txn } => inflight.retain(|(id, _)| *id != txn),
            _ => {}
        }
    }
}

/// Safety net: a recipient the session never settled is deferred, never lost.
fn settle_leftovers(
    engine: &Rc<Engine>,
    dest: &Rc<Dest>,
    inflight: &mut Vec<(u64, Vec<Rcpt>)>,
    info: &ConnInfo,
) {
    let reply = Arc::new(Reply::new(
        451,
        Some((4, 4, 2)),
        "connection ended before an outcome",
    ));
    for (_, batch) in inflight.drain(..) {
        for r in batch {
            if !r.addr.is_empty() {
                debug_assert!(false, "recipient without an outcome");
                engine.outcome(dest, r, &Outcome::Deferred(reply.clone()), info);
            }
        }
    }
}

async fn start_tls(
    engine: &Engine,
    stream: Stream,
    mx: Option<&str>,
    timeout: Duration,
) -> Option<(Stream, &'static str, String)> {
    let config = engine.tls.clone()?;
    let Stream::Plain(tcp) = stream else {
        return None;
    };
    let name = mx
        .and_then(|m| rustls::pki_types::ServerName::try_from(m.to_string()).ok())
        .or_else(|| rustls::pki_types::ServerName::try_from("localhost").ok())?;
    let _ = tcp.set_read_timeout(Some(timeout));
    let tls = futures_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .ok()?;
    let (_, conn) = tls.get_ref();
    let version = crate::tls::version_name(conn.protocol_version());
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()))
        .unwrap_or_default();
    Some((Stream::Tls(Box::new(tls)), version, cipher))
}
