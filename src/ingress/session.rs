//! The inbound session driver: a thin loop around [`ServerSession`].
//!
//! Read into the buffer, feed the machine, answer its events, hand accepted
//! envelopes to their shards, then write every pending reply in one write —
//! so a pipelined group costs one read and one write, however many commands
//! it holds. Under `ack = "journal"` (or `"downstream"`) the messages of a
//! pipelined group all reach their shards before the first verdict is
//! awaited, so one group commit makes the whole group durable.

use super::conn::Conn;
use super::limits::{Caps, FailureLimit};
use super::outbox::Outbox;
use crate::config::AckMode;
use crate::readbuf::InputBuffer;
use crate::runtime::Core;
use crate::shard::ack::{Ack, Decision};
use crate::smtp::{AuthAnswer, Event, PeerInfo, Reply, ServerSession, TlsInfo, Verdict};
use glommio::net::TcpStream;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How long a client waits for the journal before it is told 451: far
/// beyond a healthy fsync, well within a client's 10-minute DATA timeout.
const JOURNAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Initial and largest read buffer per session.
const READ_INITIAL: usize = 2 * 1024;
const READ_MAX: usize = 256 * 1024;

/// Runs one inbound SMTP session to completion.
pub async fn run(core: Rc<Core>, stream: TcpStream) {
    let _guard = core.session_started();
    let (Ok(remote), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let shared = core.shared.clone();
    let peer = PeerInfo {
        remote,
        local,
        relay_allowed: shared.relay_allowed(remote.ip()),
    };
    let cfg = shared.smtp.load_full();
    let live = shared.live.load_full();
    let started = Instant::now();
    // Relay clients are the appliance's own feeders, trusted to send at
    // full rate: only their own (optional) per-address cap applies.
    let caps = if peer.relay_allowed {
        Caps {
            per_address: live.smtp.relay_max_connections_per_ip,
            per_network: 0,
        }
    } else {
        Caps {
            per_address: live.smtp.max_connections_per_ip,
            per_network: live.smtp.max_connections_per_network,
        }
    };
    let slot = shared.clients.admit(remote.ip(), caps);
    // The session ends at this instant whatever it is doing. The lifetime
    // bounds strangers holding slots; feeders keep long pipelined sessions
    // open on purpose, and cutting them mid-transaction only costs a retry.
    let lifetime = if peer.relay_allowed {
        live.smtp.relay_max_session_duration.0
    } else {
        live.smtp.max_session_duration.0
    };
    let end = Some(lifetime)
        .filter(|d| !d.is_zero())
        .and_then(|d| started.checked_add(d));
    let mut session = if core.over_session_limit() {
        ServerSession::new_refusing(
            cfg,
            peer,
            Reply::new(
                421,
                Some((4, 3, 2)),
                "Too many connections, try again later",
            ),
        )
    } else if slot.is_err() {
        ServerSession::new_refusing(
            cfg,
            peer,
            Reply::new(
                421,
                Some((4, 7, 0)),
                "Too many connections from your address",
            ),
        )
    } else {
        ServerSession::new(cfg, peer)
    };
    let _ = stream.set_write_timeout(Some(shared.config.smtp.command_timeout.0));
    let mut conn = Conn::Plain(stream);
    let mut input = InputBuffer::new(READ_INITIAL, READ_MAX);
    let mut out = Vec::with_capacity(512);
    let mut outbox = Outbox::new(core.shards);
    let mut progress = session.progress();
    let mut deadline = Instant::now() + session.timeout();
    // Whether the reply to DATA waits for the shards, and for what.
    let deliver = shared.config.route == crate::config::Route::Deliver;
    let waits = match shared.config.ack {
        AckMode::Downstream => Some(AckMode::Downstream),
        // discard and hold keep nothing, so there is nothing to make durable.
        AckMode::Journal if deliver => Some(AckMode::Journal),
        _ => None,
    };
    // Messages whose verdicts wait for the shards, oldest first.
    let mut pending: VecDeque<(u64, Ack)> = VecDeque::new();
    let ack_timeout = || match waits {
        Some(AckMode::Journal) => JOURNAL_TIMEOUT,
        _ => shared.live.load().delivery.downstream_timeout.0,
    };

    loop {
        // Feed input and answer events until the machine makes no progress.
        loop {
            let mut moved = false;
            if !input.is_empty() && session.takes_input() {
                // Messages accepted earlier in this pass are not in their
                // shards' counts yet: a pipelining client must not pass the
                // bound inside one batch of input.
                session.set_admission(core.admission(outbox.pending()));
                let n = session.handle_input(input.data(), unix_now());
                input.consume(n);
                moved = n > 0;
            }
            while let Some(event) = session.poll_event() {
                moved = true;
                match event {
                    Event::Message(m) if waits.is_some() => {
                        // The answer waits for the shards (below).
                        let id = core.next_queue_id();
                        let ack = if waits == Some(AckMode::Journal) {
                            Ack::journal(outbox.parts(&m.recipients))
                        } else {
                            Ack::downstream(m.recipients.len())
                        };
                        outbox.add(id, m, Some(ack.clone()));
                        pending.push_back((id, ack));
                    }
                    Event::Message(m) => {
                        let id = core.next_queue_id();
                        outbox.add(id, m, None);
                        session.decide(Verdict::Accepted { queue_id: id });
                    }
                    Event::Auth {
                        username, password, ..
                    } => {
                        let answer = check_auth(&shared, remote.ip(), username, password).await;
                        session.auth_answer(answer);
                    }
                    Event::StartTls => {
                        if outbox.flush(&core).await.is_err() {
                            return;
                        }
                        answer(&mut session, &mut pending, ack_timeout()).await;
                        session.poll_transmit(&mut out);
                        if conn.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                        // RFC 3207: plaintext pipelined after STARTTLS must not
                        // be acted on once TLS is up (CVE-2011-0411).
                        input.clear();
                        match start_tls(&shared, conn, end).await {
                            Some((tls, info)) => {
                                conn = tls;
                                session.tls_established(info);
                            }
                            None => return,
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
        // Envelopes reach their shards before any 250 for them is sent.
        if outbox.flush(&core).await.is_err() {
            return;
        }
        // Every message the input held is with its shard now: one journal
        // commit can cover them all. Their verdicts are given in order
        // before anything else is read (the client may be waiting for
        // them), then the machine may take more input.
        if !pending.is_empty() {
            answer(&mut session, &mut pending, ack_timeout()).await;
            continue;
        }
        session.poll_transmit(&mut out);
        if !out.is_empty() {
            if conn.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        if session.wants_close() {
            break;
        }

        // Restart the deadline only on protocol progress, so a client that
        // trickles a byte at a time still times out.
        let now = Instant::now();
        if session.progress() != progress {
            progress = session.progress();
            deadline = now + session.timeout();
        }
        let until = end.map_or(deadline, |e| e.min(deadline));
        let remaining = until.saturating_duration_since(now);
        if remaining.is_zero() {
            expire_or_time_out(&mut session, end, now);
            continue;
        }
        if let Some(tcp) = conn.tcp() {
            let _ = tcp.set_read_timeout(Some(remaining));
        }
        let spare = input.spare();
        if spare.is_empty() {
            // The machine bounds every line it buffers, so this cannot
            // happen with a well-behaved machine; close rather than spin.
            break;
        }
        // A stop request ends an idle session at once (421) rather than
        // at its read deadline; one inside a transaction finishes it first.
        if core.is_stopping() && session.shutdown() {
            continue;
        }
        let stop = core.stop_listener();
        let read = futures_lite::future::or(async { Some(conn.read(spare).await) }, async {
            stop.await;
            None
        })
        .await;
        match read {
            None => {
                session.shutdown();
            }
            Some(Ok(0)) => break,
            Some(Ok(n)) => input.filled(n),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                expire_or_time_out(&mut session, end, Instant::now())
            }
            Some(Err(_)) => break,
        }
    }
    conn.close().await;
    drop(slot);
}

/// The read deadline passed: the session's lifetime if that is what ended,
/// else the idle timeout.
fn expire_or_time_out(session: &mut ServerSession, end: Option<Instant>, now: Instant) {
    if end.is_some_and(|e| now >= e) {
        session.expire();
    } else {
        session.handle_timeout();
    }
}

/// Checks AUTH credentials: refused outright while the address is locked
/// out, hashed on the AUTH pool (never on this core or its blocking
/// thread, which the journal needs), and a failure is answered only after
/// `auth.failure_delay`, awaited on a timer without holding a pool slot.
/// A check not answered within `auth.verify_timeout` is `454`.
async fn check_auth(
    shared: &crate::runtime::Shared,
    ip: std::net::IpAddr,
    username: String,
    password: String,
) -> AuthAnswer {
    let (limit, delay, timeout) = {
        let live = shared.live.load();
        let limit = FailureLimit {
            max: live.auth.max_failures,
            window: live.auth.failure_window.0,
        };
        (limit, live.auth.failure_delay.0, live.auth.verify_timeout.0)
    };
    if !shared.auth_failures.try_begin(ip, limit, Instant::now()) {
        return AuthAnswer::LockedOut;
    }
    let users = shared.users.load_full();
    // The hashing threads run at nice 19: under full load a check may
    // not be answered for a long time, and the client is better told 454.
    let deadline = glommio::timer::sleep(timeout);
    match shared
        .verifier
        .verify(users, username, password, deadline)
        .await
    {
        Ok(true) => {
            shared.auth_failures.succeeded(ip);
            AuthAnswer::Accepted
        }
        Ok(false) => {
            glommio::timer::sleep(delay).await;
            AuthAnswer::Rejected
        }
        Err(_) => {
            // Not checked, so not a failure of the client's.
            shared.auth_failures.succeeded(ip);
            AuthAnswer::Unavailable
        }
    }
}

/// Gives the session the verdict of every pending message, in order,
/// waiting for each to be decided (at most `timeout` each).
async fn answer(
    session: &mut ServerSession,
    pending: &mut VecDeque<(u64, Ack)>,
    timeout: std::time::Duration,
) {
    while let Some((id, ack)) = pending.pop_front() {
        let verdict = match ack.wait(timeout).await {
            Decision::Returned | Decision::Refused => Verdict::Rejected(ack.failure_reply()),
            _ => Verdict::Accepted { queue_id: id },
        };
        session.decide(verdict);
    }
}

/// Runs the server side of the TLS handshake. The handshake as a whole
/// must finish within `smtp.tls_handshake_timeout` (and `command_timeout`,
/// and the session's lifetime): a per-read timeout would let a client that
/// dribbles its ClientHello a byte at a time hold the session for ever.
async fn start_tls(
    shared: &crate::runtime::Shared,
    conn: Conn,
    end: Option<Instant>,
) -> Option<(Conn, TlsInfo)> {
    let config = shared.tls.load_full()?;
    let Conn::Plain(tcp) = conn else {
        return None;
    };
    let live = shared.live.load();
    let now = Instant::now();
    let mut limit = live
        .smtp
        .tls_handshake_timeout
        .0
        .min(live.smtp.command_timeout.0);
    if let Some(e) = end {
        limit = limit.min(e.saturating_duration_since(now));
    }
    let _ = tcp.set_read_timeout(Some(limit.max(std::time::Duration::from_millis(1))));
    let handshake = futures_rustls::TlsAcceptor::from(config).accept(tcp);
    let tls = futures_lite::future::or(async { Some(handshake.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await?
    .ok()?;
    let (_, state) = tls.get_ref();
    let info = TlsInfo {
        version: crate::tls::version_name(state.protocol_version()),
        cipher: state
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
    };
    Some((Conn::Tls(Box::new(tls)), info))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
