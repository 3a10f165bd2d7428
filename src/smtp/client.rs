//! Outbound SMTP: the client side of a connection as a sans-IO state
//! machine.
//!
//! Like [`ServerSession`](super::ServerSession), a [`ClientSession`] never
//! touches a socket, a clock or a thread. The delivery engine owns those and
//! drives the session with four calls:
//!
//! - [`ClientSession::handle_input`] with bytes read from the server,
//! - [`ClientSession::poll_transmit`] for bytes to write (commands appended
//!   to the caller's `Vec`, plus at most one body as a `Bytes` to write
//!   right after them),
//! - [`ClientSession::poll_event`] for what happened ([`ClientEvent`]):
//!   setup finished, TLS handshake wanted, one outcome per recipient, one
//!   `TxnDone` per transaction, and finally `Closed`,
//! - [`ClientSession::timeout`] / [`ClientSession::handle_timeout`] /
//!   [`ClientSession::handle_closed`] for the deadline and the socket's end.
//!
//! # Shape
//!
//! Every command the session writes pushes what it expects in return onto a
//! FIFO (`expect`); every reply pops it. Replies are thus matched purely by
//! order, which is what makes pipelining (RFC 2920) safe: a group such as
//! `MAIL, RCPT, RCPT, DATA` is written at once and its replies are matched
//! one by one as they arrive, in whatever pieces the network delivers them.
//! Commands are planned into a small queue of `Cmd`s (no heap data in them)
//! and rendered into the caller's buffer by `poll_transmit`; without
//! PIPELINING the same queue is used, but a command is only rendered once
//! every reply is in (lock-step), and commands made pointless by an earlier
//! reply (RCPT after a refused MAIL, DATA with no accepted recipient) are
//! dropped at that point.
//!
//! Transactions ([`Transaction`]) are queued with [`ClientSession::enqueue`]
//! and sent in order once the session is ready. A transaction with more
//! recipients than [`ClientConfig::max_rcpt_per_txn`] is split here into
//! several SMTP transactions sharing the same body (`Bytes` clones, no
//! copies); the caller still sees one `TxnDone` for it.
//!
//! With PIPELINING, CHUNKING and [`ClientConfig::prefer_bdat`], a
//! transaction is one write (`MAIL`, `RCPT`s, `BDAT <n> LAST`) plus the body,
//! and up to [`ClientConfig::max_pipelined_txns`] transactions may be in
//! flight back to back. Because the outcome of the previous one is unknown
//! when the next is written, each such follow-up transaction starts with a
//! pipelined `RSET`: RFC 3030 leaves the server's state undefined after a
//! refused BDAT, and an `RSET` after a successful one costs a few bytes.
//! With DATA, only one transaction is in flight (the body can only follow the
//! 354); after a failed transaction the next group starts with `RSET`.
//!
//! # The invariant
//!
//! Every recipient handed to [`ClientSession::enqueue`] gets exactly one
//! [`ClientEvent::RcptOutcome`], whatever the server does: replies that
//! cannot be matched, garbage, 421, timeouts and disconnects all end with
//! every recipient still without an outcome being deferred with a reply
//! that says why (a synthetic one with an RFC 3463 code when the server
//! gave none). Per-recipient state lives in one small array per transaction,
//! and one function (`settle`) is the only place outcomes are produced, so
//! the invariant is checked in one place.
//!
//! # Policy decisions
//!
//! - A refusal of the connection itself (a 4xx/5xx greeting, EHLO and HELO
//!   refused, TLS or AUTH unavailable) defers every recipient, even for a 5xx:
//!   it says nothing about the recipients, and another MX may take them.
//! - Messages that cannot be sent to this server as they are bounce without
//!   being sent: larger than its SIZE limit (`552 5.3.4`), SMTPUTF8 to a
//!   server without SMTPUTF8 (`550 5.6.7`, RFC 6531 3.2), 8-bit data to a
//!   server without 8BITMIME (`554 5.6.3`; the relay does not downconvert).
//! - A `452` to a RCPT (too many recipients) defers that recipient; the
//!   caller retries it, on this connection or another.
//! - AUTH PLAIN (smarthosts) is only ever sent over TLS: with credentials
//!   configured, a connection that did not reach TLS defers everything.

mod dot;
mod ehlo;
mod reply_parser;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;

use super::reply::{push_sanitized, Reply};

pub use ehlo::Capabilities;
pub use reply_parser::{ReplyError, MAX_LINE, MAX_LINES};

use dot::Prepared;
use reply_parser::{ReplyParser, Step};

/// Whether to use STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// Never start TLS, even when offered.
    Disabled,
    /// Start TLS when offered; continue in plaintext when it is not offered
    /// or the server refuses STARTTLS.
    #[default]
    Opportunistic,
    /// Deliver only over TLS: when STARTTLS is not offered or refused,
    /// every recipient is deferred and the session QUITs.
    Required,
}

/// How long to wait for each reply (RFC 5321 4.5.3.2). The session reports
/// the one for the reply it is waiting for through
/// [`ClientSession::timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Initial 220 greeting (4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// EHLO/HELO reply (not in the RFC; 5 minutes like the other commands).
    pub ehlo: Duration,
    /// MAIL reply (4.5.3.2.2: 5 minutes).
    pub mail: Duration,
    /// Each RCPT reply (4.5.3.2.3: 5 minutes).
    pub rcpt: Duration,
    /// The 354 to DATA (4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each write of body data (4.5.3.2.5: 3 minutes). The session never
    /// waits on writes; this is for the driver's write deadline.
    pub data_block: Duration,
    /// The reply after the end of data or `BDAT LAST` (4.5.3.2.6:
    /// 10 minutes; the server may be filtering the message).
    pub data_termination: Duration,
    /// STARTTLS and the TLS handshake, AUTH, RSET and QUIT (5 minutes).
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const MIN: u64 = 60;
        Timeouts {
            greeting: Duration::from_secs(5 * MIN),
            ehlo: Duration::from_secs(5 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data_init: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            data_termination: Duration::from_secs(10 * MIN),
            other: Duration::from_secs(5 * MIN),
        }
    }
}

/// Static configuration shared by the sessions of a delivery engine.
#[derive(Clone)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO.
    pub ehlo_name: String,
    /// Most RCPTs per SMTP transaction (RFC 5321 4.5.3.1.8 requires servers
    /// to take at least 100). Larger transactions are split by the session.
    /// 0 is treated as 1.
    pub max_rcpt_per_txn: usize,
    /// Use BDAT instead of DATA when the server offers CHUNKING: no
    /// dot-stuffing, and the body follows its command without a round trip.
    pub prefer_bdat: bool,
    /// Most transactions in flight at once when BDAT is pipelined. 0 is
    /// treated as 1. Ignored with DATA or without PIPELINING.
    pub max_pipelined_txns: usize,
    /// STARTTLS policy.
    pub tls_policy: TlsPolicy,
    /// Username and password for AUTH PLAIN (smarthosts). Only sent over
    /// TLS; see the module documentation.
    pub auth: Option<(String, String)>,
    /// Reply deadlines.
    pub timeouts: Timeouts,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            ehlo_name: "localhost".to_owned(),
            max_rcpt_per_txn: 100,
            prefer_bdat: true,
            max_pipelined_txns: 4,
            tls_policy: TlsPolicy::Opportunistic,
            auth: None,
            timeouts: Timeouts::default(),
        }
    }
}

impl fmt::Debug for ClientConfig {
    // Hand-written so a logged configuration never shows the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("ehlo_name", &self.ehlo_name)
            .field("max_rcpt_per_txn", &self.max_rcpt_per_txn)
            .field("prefer_bdat", &self.prefer_bdat)
            .field("max_pipelined_txns", &self.max_pipelined_txns)
            .field("tls_policy", &self.tls_policy)
            .field("auth", &self.auth.as_ref().map(|(u, _)| (u, "<redacted>")))
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// One envelope recipient of a [`Transaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The caller's handle for this recipient (e.g. its index in the queue
    /// entry), reported back in [`ClientEvent::RcptOutcome`].
    pub index: usize,
    /// The mailbox, without angle brackets.
    pub address: Arc<str>,
}

/// A message to send on this connection.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The caller's handle, reported back in events.
    pub id: u64,
    /// The envelope sender without angle brackets; `""` for the null sender.
    pub reverse_path: Arc<str>,
    /// The recipients; each gets exactly one outcome.
    pub recipients: Vec<Recipient>,
    /// The message with CRLF line endings, not dot-stuffed.
    pub body: Bytes,
    /// The body has 8-bit data: sent with `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// The envelope or headers need SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

/// The fate of one recipient. The reply is shared (`Arc`) by all the
/// recipients it applies to, so a 100-recipient delivery reports 100
/// outcomes without 100 allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took responsibility: the reply to the end of data.
    Delivered(Arc<Reply>),
    /// Try again later: a 4xx reply, or a synthetic one when the connection
    /// failed (timeouts `4.4.1`, lost connection `4.4.2`, protocol errors
    /// `4.5.0`, TLS/AUTH unavailable `4.7.x`), or any reply that refused the
    /// connection rather than the recipient.
    Deferred(Arc<Reply>),
    /// Permanent failure: a 5xx reply to this recipient or message, or a
    /// synthetic one when the message cannot be sent to this server.
    Bounced(Arc<Reply>),
}

impl Outcome {
    /// The reply behind the outcome.
    pub fn reply(&self) -> &Reply {
        match self {
            Outcome::Delivered(r) | Outcome::Deferred(r) | Outcome::Bounced(r) => r,
        }
    }
}

/// Why the session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// [`ClientSession::quit`] and the QUIT exchange.
    Quit,
    /// The server refused the connection: a 4xx/5xx greeting, or EHLO and
    /// HELO refused.
    Refused,
    /// The server sent 421 (RFC 5321 3.8).
    ServiceClosing,
    /// [`TlsPolicy::Required`] could not be met.
    TlsUnavailable,
    /// AUTH was needed and failed, was not offered, or TLS was missing.
    AuthFailed,
    /// The server broke the protocol (garbage, unexpected or unsolicited
    /// replies, data after the STARTTLS reply).
    ProtocolError,
    /// [`ClientSession::handle_timeout`].
    Timeout,
    /// [`ClientSession::handle_closed`].
    ConnectionLost,
}

/// Something the driver must know or do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Greeting, EHLO and any STARTTLS/AUTH are done; queued transactions
    /// are being sent. Emitted once.
    Ready,
    /// Write everything from [`ClientSession::poll_transmit`] (the
    /// STARTTLS command is already answered with 220), discard any unread
    /// plaintext, run the TLS handshake, then call
    /// [`ClientSession::tls_established`] (or
    /// [`ClientSession::handle_closed`] if it failed).
    StartTls,
    /// The outcome for one recipient; exactly one per recipient.
    RcptOutcome {
        /// [`Transaction::id`].
        txn: u64,
        /// [`Recipient::index`].
        rcpt: usize,
        /// What happened.
        outcome: Outcome,
    },
    /// Every recipient of the transaction has its outcome.
    TxnDone {
        /// [`Transaction::id`].
        txn: u64,
    },
    /// Close the connection once pending output is written. Emitted once;
    /// every recipient has its outcome by then.
    Closed {
        /// Why.
        reason: CloseReason,
        /// The reply behind it (server's or synthetic), if any.
        reply: Option<Arc<Reply>>,
    },
}

/// Synthetic replies. Kept together so their wording and codes are
/// reviewable in one place.
mod synth {
    use super::Reply;

    pub(super) const LOST: Reply = Reply::new_static(451, Some((4, 4, 2)), "Connection lost");
    pub(super) const CLOSING: Reply = Reply::new_static(
        451,
        Some((4, 4, 2)),
        "Connection closing before the message was sent",
    );
    pub(super) const TIMEOUT_GREETING: Reply =
        Reply::new_static(451, Some((4, 4, 1)), "Timeout waiting for greeting");
    pub(super) const TIMEOUT_EHLO: Reply =
        Reply::new_static(451, Some((4, 4, 1)), "Timeout waiting for EHLO reply");
    pub(super) const TIMEOUT_TLS: Reply =
        Reply::new_static(451, Some((4, 4, 1)), "Timeout during STARTTLS");
    pub(super) const TIMEOUT_AUTH: Reply =
        Reply::new_static(451, Some((4, 4, 1)), "Timeout waiting for AUTH reply");
    pub(super) const TIMEOUT_MAIL: Reply =
        Reply::new_static(451, Some((4, 4, 1)), "Timeout waiting for MAIL reply");
    pub(super) const TIMEOUT_RCPT: Reply =
        Reply::new_static(451, Some((4, 4, 1)), "Timeout waiting for RCPT reply");
    pub(super) const TIMEOUT_DATA: Reply =
        Reply::new_static(451, Some((4, 4, 1)), "Timeout waiting for DATA reply");
    pub(super) const TIMEOUT_END: Reply = Reply::new_static(
        451,
        Some((4, 4, 1)),
        "Timeout waiting for reply to end of data",
    );
    pub(super) const TIMEOUT_OTHER: Reply =
        Reply::new_static(451, Some((4, 4, 1)), "Timeout waiting for server reply");
    pub(super) const MALFORMED: Reply =
        Reply::new_static(451, Some((4, 5, 0)), "Malformed reply from server");
    pub(super) const LINE_TOO_LONG: Reply =
        Reply::new_static(451, Some((4, 5, 0)), "Reply line from server too long");
    pub(super) const TOO_MANY_LINES: Reply =
        Reply::new_static(451, Some((4, 5, 0)), "Reply from server has too many lines");
    pub(super) const UNEXPECTED: Reply =
        Reply::new_static(451, Some((4, 5, 0)), "Unexpected reply code from server");
    pub(super) const UNSOLICITED: Reply =
        Reply::new_static(451, Some((4, 5, 0)), "Unsolicited reply from server");
    pub(super) const AFTER_STARTTLS: Reply = Reply::new_static(
        451,
        Some((4, 5, 0)),
        "Server sent data after its STARTTLS reply",
    );
    pub(super) const RSET_FAILED: Reply =
        Reply::new_static(451, Some((4, 5, 0)), "Server refused RSET");
    pub(super) const INTERNAL: Reply =
        Reply::new_static(451, Some((4, 3, 0)), "Internal error in SMTP client");
    pub(super) const TLS_NOT_OFFERED: Reply = Reply::new_static(
        451,
        Some((4, 7, 4)),
        "TLS required but STARTTLS not offered",
    );
    pub(super) const AUTH_NEEDS_TLS: Reply = Reply::new_static(
        451,
        Some((4, 7, 10)),
        "Authentication configured but the connection is not encrypted",
    );
    pub(super) const AUTH_NOT_OFFERED: Reply =
        Reply::new_static(451, Some((4, 7, 4)), "AUTH PLAIN not offered by server");
    pub(super) const TOO_BIG: Reply = Reply::new_static(
        552,
        Some((5, 3, 4)),
        "Message size exceeds fixed maximum message size",
    );
    pub(super) const NO_SMTPUTF8: Reply = Reply::new_static(
        550,
        Some((5, 6, 7)),
        "Message requires SMTPUTF8, not supported by server",
    );
    pub(super) const NO_8BITMIME: Reply = Reply::new_static(
        554,
        Some((5, 6, 3)),
        "Message has 8-bit data, server does not support 8BITMIME",
    );
    pub(super) const BAD_SENDER: Reply =
        Reply::new_static(553, Some((5, 1, 7)), "Invalid sender address");
    pub(super) const BAD_RECIPIENT: Reply =
        Reply::new_static(553, Some((5, 1, 3)), "Invalid recipient address");
}

/// Where the connection is, outside of transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Greeting, EHLO/HELO, STARTTLS, AUTH.
    Setup,
    /// STARTTLS was accepted; the driver is doing the handshake.
    TlsHandshake,
    /// Transactions flow.
    Ready,
    /// QUIT is queued or sent.
    Quitting,
    /// Done; `Closed` was emitted.
    Closed,
}

/// A reply the session is waiting for, in command order. Transaction
/// entries name their part (by sequence number) and recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Auth,
    Rset,
    Quit,
    Mail(u64),
    Rcpt(u64, usize),
    Data(u64),
    DataEnd(u64),
    Bdat(u64),
}

/// A command to render in `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Ehlo,
    Helo,
    StartTls,
    Auth,
    Rset,
    Quit,
    Mail(u64),
    Rcpt(u64, usize),
    Data(u64),
    Bdat(u64),
    /// The DATA body, after the 354.
    Body(u64),
    /// The end marker: after a body sent unchanged (`true`), or alone to
    /// end data nobody will receive after a stray 354 (`false`).
    DataEnd(u64, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RcptState {
    /// No outcome, not accepted (queued or RCPT sent).
    Pending,
    /// RCPT got 2xx; waiting for the end of data.
    Accepted,
    /// Outcome reported.
    Done,
}

/// A queued caller transaction.
#[derive(Debug)]
struct Txn {
    id: u64,
    reverse_path: Arc<str>,
    rcpts: Vec<Recipient>,
    body: Bytes,
    eight_bit: bool,
    smtputf8: bool,
    /// One entry per recipient: the only per-recipient state, allocated
    /// once per transaction.
    state: Vec<RcptState>,
    /// Recipients without an outcome.
    remaining: usize,
    /// First recipient not yet assigned to a part.
    next: usize,
    /// Message-level checks against the capabilities were done.
    checked: bool,
}

/// One SMTP transaction on the wire: a slice of a [`Txn`]'s recipients.
#[derive(Debug)]
struct Part {
    seq: u64,
    txn: u64,
    /// Recipient index range in the txn.
    start: usize,
    end: usize,
    /// Refcounted copies so rendering never needs the txn.
    reverse_path: Arc<str>,
    body: Bytes,
    eight_bit: bool,
    smtputf8: bool,
    /// MAIL was refused: every recipient already has its outcome.
    mail_failed: bool,
    /// RCPTs that got 2xx.
    accepted: usize,
}

/// One outbound SMTP connection. See the module documentation.
pub struct ClientSession {
    cfg: Arc<ClientConfig>,
    phase: Phase,
    caps: Capabilities,
    tls: bool,
    /// STARTTLS was refused (opportunistic): do not ask again.
    starttls_refused: bool,
    authenticated: bool,
    ready_emitted: bool,
    use_bdat: bool,
    parser: ReplyParser,
    expect: VecDeque<Expect>,
    pending: VecDeque<Cmd>,
    txns: VecDeque<Txn>,
    /// Sequence number of `txns.front()`; txns leave only from the front.
    txn_base: u64,
    next_txn_seq: u64,
    /// The txn whose recipients are being handed out to parts.
    send_txn: u64,
    parts: VecDeque<Part>,
    next_part_seq: u64,
    /// The server may hold transaction state: RSET before the next MAIL.
    need_rset: bool,
    quit_requested: bool,
    /// What `Closed` will report once the QUIT exchange ends.
    close_reason: Option<(CloseReason, Option<Arc<Reply>>)>,
    events: VecDeque<ClientEvent>,
    /// Recipients enqueued without an outcome.
    unsettled: usize,
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("phase", &self.phase)
            .field("caps", &self.caps)
            .field("tls", &self.tls)
            .field("expect", &self.expect)
            .field("pending", &self.pending)
            .field("txns", &self.txns.len())
            .field("parts", &self.parts.len())
            .field("unsettled", &self.unsettled)
            .finish()
    }
}

impl ClientSession {
    /// A session for a freshly connected socket, waiting for the greeting.
    pub fn new(cfg: Arc<ClientConfig>) -> Self {
        let mut expect = VecDeque::with_capacity(16);
        expect.push_back(Expect::Greeting);
        ClientSession {
            cfg,
            phase: Phase::Setup,
            caps: Capabilities::default(),
            tls: false,
            starttls_refused: false,
            authenticated: false,
            ready_emitted: false,
            use_bdat: false,
            parser: ReplyParser::new(),
            expect,
            pending: VecDeque::with_capacity(16),
            txns: VecDeque::new(),
            txn_base: 0,
            next_txn_seq: 0,
            send_txn: 0,
            parts: VecDeque::new(),
            next_part_seq: 0,
            need_rset: false,
            quit_requested: false,
            close_reason: None,
            events: VecDeque::new(),
            unsettled: 0,
        }
    }

    // ---- public API ------------------------------------------------------

    /// Processes server bytes and returns how many were consumed. A partial
    /// reply line at the end is not consumed: keep it and pass it again
    /// with the next bytes read (it is never longer than [`MAX_LINE`]).
    /// Returns 0 while a TLS handshake is pending, and consumes (discards)
    /// everything once the session is closed.
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            match self.phase {
                Phase::Closed => return input.len(),
                Phase::TlsHandshake => {
                    if pos < input.len() {
                        // Nothing may follow the 220 to STARTTLS in
                        // plaintext: the server waits for our ClientHello.
                        // Bytes here were injected by a man in the middle
                        // (the STARTTLS command-injection class of attacks)
                        // and must never be read as replies, before or
                        // after the handshake.
                        self.protocol_error(synth::AFTER_STARTTLS);
                        return input.len();
                    }
                    return pos;
                }
                _ => {}
            }
            let rest = input.get(pos..).unwrap_or_default();
            if rest.is_empty() {
                return pos;
            }
            let (n, step) = self.parser.feed(rest);
            pos += n;
            match step {
                Step::NeedMore => return pos,
                Step::Reply => self.on_reply(),
                Step::Error(e) => {
                    self.protocol_error(match e {
                        ReplyError::Malformed => synth::MALFORMED,
                        ReplyError::LineTooLong => synth::LINE_TOO_LONG,
                        ReplyError::TooManyLines => synth::TOO_MANY_LINES,
                    });
                    return input.len();
                }
            }
        }
    }

    /// Queues a transaction. It is sent once the session is ready, after
    /// those queued before it. On a session that is closing or closed,
    /// every recipient is deferred at once.
    pub fn enqueue(&mut self, txn: Transaction) {
        let n = txn.recipients.len();
        let seq = self.next_txn_seq;
        self.next_txn_seq += 1;
        if self.txns.is_empty() {
            self.txn_base = seq;
        }
        self.txns.push_back(Txn {
            id: txn.id,
            reverse_path: txn.reverse_path,
            rcpts: txn.recipients,
            body: txn.body,
            eight_bit: txn.eight_bit,
            smtputf8: txn.smtputf8,
            state: vec![RcptState::Pending; n],
            remaining: n,
            next: 0,
            checked: false,
        });
        self.unsettled += n;
        if n == 0 {
            self.events.push_back(ClientEvent::TxnDone { txn: txn.id });
            self.pop_done_txns();
        } else if self.quit_requested || matches!(self.phase, Phase::Quitting | Phase::Closed) {
            self.settle_txn(seq, Outcome::Deferred(Arc::new(synth::CLOSING)));
        }
    }

    /// Appends the next commands to `out` and returns the body to write
    /// right after them, if one is due. Call it until it appends nothing
    /// and returns `None` (after each `handle_input`, `enqueue`, `quit` and
    /// `tls_established`); write `out` and then the body, in order.
    ///
    /// With BDAT the body is the caller's `Bytes` itself; with DATA it is
    /// too unless the body has lines starting with `.`, which need a stuffed
    /// copy.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> Option<Bytes> {
        loop {
            if self.phase == Phase::Closed {
                return None;
            }
            let lock_step = !(self.phase == Phase::Ready && self.caps.pipelining);
            if !self.pending.is_empty() {
                if lock_step && !self.expect.is_empty() {
                    return None;
                }
                let cmd = self.pending.pop_front()?;
                if let Some(body) = self.render(cmd, out) {
                    return Some(body);
                }
                continue;
            }
            if !self.plan() {
                return None;
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The read deadline for the reply the session is waiting for (or the
    /// TLS handshake); `None` when it waits for nothing. Re-read it after
    /// every call that changes the session.
    pub fn timeout(&self) -> Option<Duration> {
        let t = &self.cfg.timeouts;
        if self.phase == Phase::TlsHandshake {
            return Some(t.other);
        }
        if self.phase == Phase::Closed {
            return None;
        }
        Some(match self.expect.front()? {
            Expect::Greeting => t.greeting,
            Expect::Ehlo | Expect::Helo => t.ehlo,
            Expect::Mail(_) => t.mail,
            Expect::Rcpt(..) => t.rcpt,
            Expect::Data(_) => t.data_init,
            Expect::DataEnd(_) | Expect::Bdat(_) => t.data_termination,
            Expect::StartTls | Expect::Auth | Expect::Rset | Expect::Quit => t.other,
        })
    }

    /// The deadline from [`timeout`](Self::timeout) passed: every recipient
    /// without an outcome is deferred (`451 4.4.1`) and the session closes
    /// without QUIT (the server is not answering). Called while the session
    /// waits for nothing (an idle limit, say), it closes the same way; use
    /// [`quit`](Self::quit) for a polite idle close.
    pub fn handle_timeout(&mut self) {
        let reply = match (self.phase, self.expect.front()) {
            (Phase::Closed, _) => return,
            (Phase::Quitting, _) => return self.finish_quit(),
            (Phase::TlsHandshake, _) => synth::TIMEOUT_TLS,
            (_, Some(Expect::Greeting)) => synth::TIMEOUT_GREETING,
            (_, Some(Expect::Ehlo | Expect::Helo)) => synth::TIMEOUT_EHLO,
            (_, Some(Expect::StartTls)) => synth::TIMEOUT_TLS,
            (_, Some(Expect::Auth)) => synth::TIMEOUT_AUTH,
            (_, Some(Expect::Mail(_))) => synth::TIMEOUT_MAIL,
            (_, Some(Expect::Rcpt(..))) => synth::TIMEOUT_RCPT,
            (_, Some(Expect::Data(_))) => synth::TIMEOUT_DATA,
            (_, Some(Expect::DataEnd(_) | Expect::Bdat(_))) => synth::TIMEOUT_END,
            (_, Some(Expect::Rset | Expect::Quit) | None) => synth::TIMEOUT_OTHER,
        };
        self.fail(CloseReason::Timeout, Arc::new(reply));
    }

    /// The peer closed or reset the connection (or the TLS handshake
    /// failed): every recipient without an outcome is deferred
    /// (`451 4.4.2`).
    pub fn handle_closed(&mut self) {
        match self.phase {
            Phase::Closed => {}
            Phase::Quitting => self.finish_quit(),
            _ => self.fail(CloseReason::ConnectionLost, Arc::new(synth::LOST)),
        }
    }

    /// The TLS handshake after [`ClientEvent::StartTls`] succeeded. The
    /// session forgets the plaintext capabilities and sends EHLO again
    /// (RFC 3207 4.2).
    pub fn tls_established(&mut self) {
        if self.phase != Phase::TlsHandshake {
            return;
        }
        self.tls = true;
        self.caps = Capabilities::default();
        self.phase = Phase::Setup;
        self.pending.push_back(Cmd::Ehlo);
    }

    /// Sends QUIT once every queued transaction is finished; transactions
    /// enqueued after this are deferred at once.
    pub fn quit(&mut self) {
        self.quit_requested = true;
    }

    /// Setup is done and no transaction or command is outstanding.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Ready
            && self.unsettled == 0
            && self.expect.is_empty()
            && self.pending.is_empty()
            && self.parts.is_empty()
    }

    /// Setup is done and the session is not closing: transactions enqueued
    /// now go out without delay.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready && !self.quit_requested
    }

    /// The server's capabilities from the last EHLO (all off before it and
    /// after HELO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// TLS was established on this connection.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Recipients enqueued that have no outcome yet (queued or on the
    /// wire).
    pub fn in_flight(&self) -> usize {
        self.unsettled
    }

    // ---- planning --------------------------------------------------------

    /// Queues the next commands when nothing is pending. Returns whether it
    /// queued any.
    fn plan(&mut self) -> bool {
        match self.phase {
            Phase::Ready => {}
            _ => return false,
        }
        if self.start_part() {
            return true;
        }
        if self.quit_requested && self.is_idle() {
            self.begin_quit(CloseReason::Quit, None);
            return true;
        }
        false
    }

    /// Starts the next SMTP transaction if the window allows and there is
    /// work. Returns whether commands were queued.
    fn start_part(&mut self) -> bool {
        let pipelined_bdat = self.caps.pipelining && self.use_bdat;
        if pipelined_bdat {
            if self.parts.len() >= self.cfg.max_pipelined_txns.max(1) {
                return false;
            }
        } else if !self.parts.is_empty() || !self.expect.is_empty() {
            return false;
        }
        let Some((txn_seq, start, end)) = self.select_recipients() else {
            return false;
        };
        let seq = self.next_part_seq;
        let Some(txn) = self.txn(txn_seq) else {
            return false;
        };
        let part = Part {
            seq,
            txn: txn_seq,
            start,
            end,
            reverse_path: txn.reverse_path.clone(),
            body: txn.body.clone(),
            eight_bit: txn.eight_bit,
            smtputf8: txn.smtputf8,
            mail_failed: false,
            accepted: 0,
        };
        self.next_part_seq += 1;
        if self.need_rset || !self.parts.is_empty() {
            // See the module documentation: a previous transaction failed,
            // or its outcome is not known yet.
            self.need_rset = false;
            self.pending.push_back(Cmd::Rset);
        }
        self.pending.push_back(Cmd::Mail(seq));
        for i in start..end {
            // Those in the range that the address check did not settle.
            let pending = self
                .txn(txn_seq)
                .and_then(|t| t.state.get(i))
                .is_some_and(|s| *s == RcptState::Pending);
            if pending {
                self.pending.push_back(Cmd::Rcpt(seq, i));
            }
        }
        self.pending.push_back(if self.use_bdat {
            Cmd::Bdat(seq)
        } else {
            Cmd::Data(seq)
        });
        self.parts.push_back(part);
        true
    }

    /// Finds the next recipients to send: `(txn seq, start, end)` with at
    /// least one recipient in the range still pending. Settles on the way
    /// what cannot be sent: whole messages the server cannot take, and
    /// recipients with unusable addresses.
    fn select_recipients(&mut self) -> Option<(u64, usize, usize)> {
        let max = self.cfg.max_rcpt_per_txn.max(1);
        loop {
            self.send_txn = self.send_txn.max(self.txn_base);
            let seq = self.send_txn;
            let txn = self.txn(seq)?;
            let refusal = if txn.checked {
                None
            } else {
                message_refusal(txn, &self.caps)
            };
            if let Some(reply) = refusal {
                self.settle_txn(seq, Outcome::Bounced(Arc::new(reply)));
                self.send_txn += 1;
                continue;
            }
            let txn = self.txn_mut(seq)?;
            txn.checked = true;
            let start = txn.next;
            let mut i = start;
            let mut count = 0;
            let mut bad = Vec::new();
            while count < max {
                let (Some(state), Some(rcpt)) = (txn.state.get(i), txn.rcpts.get(i)) else {
                    break;
                };
                if *state == RcptState::Pending {
                    if valid_address(&rcpt.address) {
                        count += 1;
                    } else {
                        bad.push(i);
                    }
                }
                i += 1;
            }
            txn.next = i;
            let exhausted = i >= txn.rcpts.len();
            if !bad.is_empty() {
                let reply = Arc::new(synth::BAD_RECIPIENT);
                for b in bad {
                    self.settle(seq, b, Outcome::Bounced(reply.clone()));
                }
            }
            if exhausted {
                self.send_txn += 1;
            }
            if count > 0 {
                return Some((seq, start, i));
            }
        }
    }

    /// Queues QUIT and remembers what `Closed` will say.
    fn begin_quit(&mut self, reason: CloseReason, reply: Option<Arc<Reply>>) {
        self.phase = Phase::Quitting;
        self.close_reason = Some((reason, reply));
        self.pending.clear();
        self.pending.push_back(Cmd::Quit);
    }

    /// Ends the QUIT exchange (reply, timeout or the server closing first).
    fn finish_quit(&mut self) {
        let (reason, reply) = self
            .close_reason
            .take()
            .unwrap_or((CloseReason::Quit, None));
        // Nothing is in flight when QUIT is queued; settling here only
        // guards the invariant against a late enqueue.
        self.settle_all(Outcome::Deferred(Arc::new(synth::CLOSING)));
        self.close(reason, reply);
    }

    // ---- rendering -------------------------------------------------------

    /// Appends one command to `out` and records the reply it expects.
    /// Returns a body that must follow `out`.
    fn render(&mut self, cmd: Cmd, out: &mut Vec<u8>) -> Option<Bytes> {
        match cmd {
            Cmd::Ehlo | Cmd::Helo => {
                out.extend_from_slice(if cmd == Cmd::Ehlo { b"EHLO " } else { b"HELO " });
                push_sanitized(out, self.cfg.ehlo_name.as_bytes());
                out.extend_from_slice(b"\r\n");
                self.expect.push_back(if cmd == Cmd::Ehlo {
                    Expect::Ehlo
                } else {
                    Expect::Helo
                });
            }
            Cmd::StartTls => {
                out.extend_from_slice(b"STARTTLS\r\n");
                self.expect.push_back(Expect::StartTls);
            }
            Cmd::Auth => {
                out.extend_from_slice(b"AUTH PLAIN ");
                if let Some((user, pass)) = &self.cfg.auth {
                    // RFC 4616: authzid NUL authcid NUL passwd, with an
                    // empty authzid. One allocation per connection.
                    let mut raw = Vec::with_capacity(user.len() + pass.len() + 2);
                    raw.push(0);
                    raw.extend_from_slice(user.as_bytes());
                    raw.push(0);
                    raw.extend_from_slice(pass.as_bytes());
                    let engine = &base64::engine::general_purpose::STANDARD;
                    let start = out.len();
                    let len = base64::encoded_len(raw.len(), true).unwrap_or(0);
                    out.resize(start + len, 0);
                    let written = out
                        .get_mut(start..)
                        .and_then(|buf| engine.encode_slice(&raw, buf).ok())
                        .unwrap_or(0);
                    out.truncate(start + written);
                }
                out.extend_from_slice(b"\r\n");
                self.expect.push_back(Expect::Auth);
            }
            Cmd::Rset => {
                out.extend_from_slice(b"RSET\r\n");
                self.expect.push_back(Expect::Rset);
            }
            Cmd::Quit => {
                out.extend_from_slice(b"QUIT\r\n");
                self.expect.push_back(Expect::Quit);
            }
            Cmd::Mail(p) => {
                let caps = &self.caps;
                let part = self.part(p)?;
                out.extend_from_slice(b"MAIL FROM:<");
                out.extend_from_slice(part.reverse_path.as_bytes());
                out.push(b'>');
                if caps.size.is_some() {
                    out.extend_from_slice(b" SIZE=");
                    let mut n = itoa::Buffer::new();
                    out.extend_from_slice(n.format(part.body.len()).as_bytes());
                }
                if part.eight_bit && caps.eight_bit_mime {
                    out.extend_from_slice(b" BODY=8BITMIME");
                }
                if part.smtputf8 && caps.smtputf8 {
                    out.extend_from_slice(b" SMTPUTF8");
                }
                out.extend_from_slice(b"\r\n");
                self.expect.push_back(Expect::Mail(p));
            }
            Cmd::Rcpt(p, i) => {
                let part = self.part(p)?;
                if part.mail_failed {
                    // Lock-step: the MAIL was refused, its recipients are
                    // settled; drop the rest of the transaction's RCPTs.
                    return None;
                }
                let txn_seq = part.txn;
                let Some(rcpt) = self.txn(txn_seq).and_then(|t| t.rcpts.get(i)) else {
                    self.internal_error();
                    return None;
                };
                out.extend_from_slice(b"RCPT TO:<");
                out.extend_from_slice(rcpt.address.as_bytes());
                out.extend_from_slice(b">\r\n");
                self.expect.push_back(Expect::Rcpt(p, i));
            }
            Cmd::Data(p) | Cmd::Bdat(p) => {
                let part = self.part(p)?;
                let pipelining = self.caps.pipelining;
                if !pipelining && (part.mail_failed || part.accepted == 0) {
                    // Lock-step and nobody accepted: no data. The server
                    // may hold the MAIL, so RSET before the next one.
                    self.need_rset = true;
                    self.finish_part(p);
                    return None;
                }
                if let Cmd::Data(_) = cmd {
                    out.extend_from_slice(b"DATA\r\n");
                    self.expect.push_back(Expect::Data(p));
                    return None;
                }
                // Same lines as DATA would carry: no bare CR or LF.
                let body = dot::line_ends(&part.body);
                out.extend_from_slice(b"BDAT ");
                let mut n = itoa::Buffer::new();
                out.extend_from_slice(n.format(body.len()).as_bytes());
                out.extend_from_slice(b" LAST\r\n");
                self.expect.push_back(Expect::Bdat(p));
                if !body.is_empty() {
                    return Some(body);
                }
            }
            Cmd::Body(p) => {
                let part = self.part(p)?;
                if part.body.is_empty() {
                    out.extend_from_slice(dot::END);
                    self.expect.push_back(Expect::DataEnd(p));
                    return None;
                }
                return match dot::prepare(&part.body) {
                    Prepared::Original(body) => {
                        self.pending.push_front(Cmd::DataEnd(p, true));
                        Some(body)
                    }
                    Prepared::Stuffed(body) => {
                        self.expect.push_back(Expect::DataEnd(p));
                        Some(body)
                    }
                };
            }
            Cmd::DataEnd(p, after_body) => {
                let part = self.part(p)?;
                out.extend_from_slice(if after_body {
                    dot::end_marker(&part.body)
                } else {
                    dot::END
                });
                self.expect.push_back(Expect::DataEnd(p));
            }
        }
        None
    }

    // ---- replies ---------------------------------------------------------

    /// Dispatches the reply the parser just completed.
    fn on_reply(&mut self) {
        let code = self.parser.code();
        let Some(expect) = self.expect.pop_front() else {
            // Servers may announce an idle or shutdown close with an
            // unprompted 421 (RFC 5321 3.8); anything else is garbage.
            if code == 421 {
                let reply = self.parser.to_reply();
                return self.fail(CloseReason::ServiceClosing, reply);
            }
            return self.protocol_error(synth::UNSOLICITED);
        };
        if code == 421 && expect != Expect::Quit {
            // The server is going away whatever we asked; no QUIT needed.
            let reply = self.parser.to_reply();
            return self.fail(CloseReason::ServiceClosing, reply);
        }
        let class = code / 100;
        match expect {
            Expect::Greeting => match class {
                2 => self.pending.push_back(Cmd::Ehlo),
                4 | 5 => self.refuse(CloseReason::Refused),
                _ => self.protocol_error(synth::UNEXPECTED),
            },
            Expect::Ehlo => match class {
                2 => {
                    self.caps = Capabilities::parse_ehlo(self.parser.text());
                    self.after_hello();
                }
                // RFC 5321 4.1.4: a server that does not know EHLO gets HELO.
                5 => self.pending.push_back(Cmd::Helo),
                4 => self.refuse(CloseReason::Refused),
                _ => self.protocol_error(synth::UNEXPECTED),
            },
            Expect::Helo => match class {
                2 => {
                    self.caps = Capabilities::default();
                    self.after_hello();
                }
                4 | 5 => self.refuse(CloseReason::Refused),
                _ => self.protocol_error(synth::UNEXPECTED),
            },
            Expect::StartTls => match class {
                2 => {
                    self.phase = Phase::TlsHandshake;
                    self.events.push_back(ClientEvent::StartTls);
                }
                4 | 5 if self.cfg.tls_policy == TlsPolicy::Required => {
                    self.refuse(CloseReason::TlsUnavailable)
                }
                4 | 5 => {
                    // Opportunistic: the plaintext session and its
                    // capabilities are still valid.
                    self.starttls_refused = true;
                    self.after_hello();
                }
                _ => self.protocol_error(synth::UNEXPECTED),
            },
            Expect::Auth => match class {
                2 => {
                    self.authenticated = true;
                    self.after_hello();
                }
                4 | 5 => self.refuse(CloseReason::AuthFailed),
                // A 334 challenge: we sent an initial response, so the
                // server is not speaking RFC 4954 with us.
                _ => self.protocol_error(synth::UNEXPECTED),
            },
            Expect::Rset => {
                if class != 2 {
                    self.protocol_error(synth::RSET_FAILED);
                }
            }
            Expect::Quit => self.finish_quit(),
            Expect::Mail(p) => self.on_mail(p, class),
            Expect::Rcpt(p, i) => self.on_rcpt(p, i, class),
            Expect::Data(p) => self.on_data(p, class),
            Expect::DataEnd(p) | Expect::Bdat(p) => self.on_final(p, class),
        }
    }

    /// After a successful EHLO/HELO (or a refused opportunistic STARTTLS,
    /// or AUTH): the next setup step, or ready.
    fn after_hello(&mut self) {
        let policy = self.cfg.tls_policy;
        if !self.tls
            && policy != TlsPolicy::Disabled
            && self.caps.starttls
            && !self.starttls_refused
        {
            self.pending.push_back(Cmd::StartTls);
            return;
        }
        if !self.tls && policy == TlsPolicy::Required {
            return self.refuse_with(
                CloseReason::TlsUnavailable,
                Arc::new(synth::TLS_NOT_OFFERED),
            );
        }
        if self.cfg.auth.is_some() && !self.authenticated {
            if !self.tls {
                return self.refuse_with(CloseReason::AuthFailed, Arc::new(synth::AUTH_NEEDS_TLS));
            }
            if !self.caps.auth_plain {
                return self
                    .refuse_with(CloseReason::AuthFailed, Arc::new(synth::AUTH_NOT_OFFERED));
            }
            self.pending.push_back(Cmd::Auth);
            return;
        }
        self.phase = Phase::Ready;
        self.use_bdat = self.cfg.prefer_bdat && self.caps.chunking;
        if !self.ready_emitted {
            self.ready_emitted = true;
            self.events.push_back(ClientEvent::Ready);
        }
    }

    fn on_mail(&mut self, p: u64, class: u16) {
        match class {
            2 => {}
            4 | 5 => {
                let reply = self.parser.to_reply();
                let outcome = failure(class, reply);
                let Some(part) = self.part_mut(p) else {
                    return;
                };
                part.mail_failed = true;
                let (txn, start, end) = (part.txn, part.start, part.end);
                for i in start..end {
                    self.settle(txn, i, outcome.clone());
                }
                self.need_rset = true;
            }
            _ => self.protocol_error(synth::UNEXPECTED),
        }
    }

    fn on_rcpt(&mut self, p: u64, i: usize, class: u16) {
        let Some(part) = self.part_mut(p) else {
            return;
        };
        if part.mail_failed {
            // The 503s that follow a refused MAIL say nothing new.
            return;
        }
        let txn = part.txn;
        match class {
            2 => {
                let mut accepted = false;
                if let Some(state) = self.txn_mut(txn).and_then(|t| t.state.get_mut(i)) {
                    if *state == RcptState::Pending {
                        *state = RcptState::Accepted;
                        accepted = true;
                    }
                }
                if let Some(part) = self.part_mut(p).filter(|_| accepted) {
                    part.accepted += 1;
                }
            }
            4 | 5 => {
                let reply = self.parser.to_reply();
                self.settle(txn, i, failure(class, reply));
            }
            _ => self.protocol_error(synth::UNEXPECTED),
        }
    }

    fn on_data(&mut self, p: u64, class: u16) {
        let Some(part) = self.part(p) else {
            return;
        };
        let deliverable = !part.mail_failed && part.accepted > 0;
        match class {
            3 if deliverable => self.pending.push_front(Cmd::Body(p)),
            3 => {
                // A 354 although nobody was accepted (pipelined): end the
                // empty data at once; the final reply is ignored, and no
                // recipient of ours is on this message.
                self.pending.push_front(Cmd::DataEnd(p, false));
            }
            4 | 5 => {
                if deliverable {
                    let reply = self.parser.to_reply();
                    self.settle_accepted(p, failure(class, reply));
                }
                self.need_rset = true;
                self.finish_part(p);
            }
            _ => self.protocol_error(synth::UNEXPECTED),
        }
    }

    /// The reply to the end of data or to `BDAT LAST`.
    fn on_final(&mut self, p: u64, class: u16) {
        let Some(part) = self.part(p) else {
            return;
        };
        let deliverable = !part.mail_failed && part.accepted > 0;
        if !deliverable {
            // BDAT refused for lack of recipients (its bytes were sent
            // anyway, RFC 3030 has the server discard them), or the empty
            // data after a stray 354: nothing to report, but the server's
            // transaction state is unknown.
            self.need_rset = true;
            return self.finish_part(p);
        }
        match class {
            2 => {
                let reply = self.parser.to_reply();
                self.settle_accepted(p, Outcome::Delivered(reply));
                // Parts finish in order, so the last one to finish decides
                // whether the server is left holding a transaction.
                self.need_rset = false;
            }
            4 | 5 => {
                let reply = self.parser.to_reply();
                self.settle_accepted(p, failure(class, reply));
                self.need_rset = true;
            }
            _ => return self.protocol_error(synth::UNEXPECTED),
        }
        self.finish_part(p);
    }

    // ---- failure paths ---------------------------------------------------

    /// The server refused the connection with the reply just parsed.
    fn refuse(&mut self, reason: CloseReason) {
        let reply = self.parser.to_reply();
        self.refuse_with(reason, reply);
    }

    /// Defers everything and QUITs politely: the server is healthy, it just
    /// will not (or may not) take our mail.
    fn refuse_with(&mut self, reason: CloseReason, reply: Arc<Reply>) {
        self.settle_all(Outcome::Deferred(reply.clone()));
        self.parts.clear();
        if self.expect.is_empty() {
            self.begin_quit(reason, Some(reply));
        } else {
            // Replies still owed would be matched against QUIT; just close.
            self.close(reason, Some(reply));
        }
    }

    /// Defers everything in flight or queued with `reply` and closes
    /// without QUIT: the stream cannot be trusted any more.
    fn fail(&mut self, reason: CloseReason, reply: Arc<Reply>) {
        self.settle_all(Outcome::Deferred(reply.clone()));
        self.close(reason, Some(reply));
    }

    fn protocol_error(&mut self, reply: Reply) {
        self.fail(CloseReason::ProtocolError, Arc::new(reply));
    }

    /// Bookkeeping that should be impossible went wrong; fail safe by
    /// closing (an unterminated DATA is never delivered).
    fn internal_error(&mut self) {
        self.fail(CloseReason::ProtocolError, Arc::new(synth::INTERNAL));
    }

    fn close(&mut self, reason: CloseReason, reply: Option<Arc<Reply>>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.expect.clear();
        self.pending.clear();
        self.parts.clear();
        self.events.push_back(ClientEvent::Closed { reason, reply });
    }

    // ---- bookkeeping -----------------------------------------------------

    fn txn(&self, seq: u64) -> Option<&Txn> {
        let idx = usize::try_from(seq.checked_sub(self.txn_base)?).ok()?;
        self.txns.get(idx)
    }

    fn txn_mut(&mut self, seq: u64) -> Option<&mut Txn> {
        txn_at(&mut self.txns, self.txn_base, seq)
    }

    fn part(&self, seq: u64) -> Option<&Part> {
        self.parts.iter().find(|p| p.seq == seq)
    }

    fn part_mut(&mut self, seq: u64) -> Option<&mut Part> {
        self.parts.iter_mut().find(|p| p.seq == seq)
    }

    fn finish_part(&mut self, seq: u64) {
        self.parts.retain(|p| p.seq != seq);
    }

    /// Settles every accepted recipient of part `p`.
    fn settle_accepted(&mut self, p: u64, outcome: Outcome) {
        let Some(part) = self.part(p) else {
            return;
        };
        let (txn, start, end) = (part.txn, part.start, part.end);
        for i in start..end {
            let accepted = self
                .txn(txn)
                .and_then(|t| t.state.get(i))
                .is_some_and(|s| *s == RcptState::Accepted);
            if accepted {
                self.settle(txn, i, outcome.clone());
            }
        }
    }

    /// Gives recipient `i` of txn `seq` its outcome, unless it has one.
    /// The only place outcomes are produced.
    fn settle(&mut self, seq: u64, i: usize, outcome: Outcome) {
        let Some(txn) = txn_at(&mut self.txns, self.txn_base, seq) else {
            return;
        };
        if settle_in(txn, i, outcome, &mut self.events) {
            self.unsettled = self.unsettled.saturating_sub(1);
        }
        self.pop_done_txns();
    }

    fn settle_txn(&mut self, seq: u64, outcome: Outcome) {
        if let Some(txn) = txn_at(&mut self.txns, self.txn_base, seq) {
            for i in 0..txn.rcpts.len() {
                if settle_in(txn, i, outcome.clone(), &mut self.events) {
                    self.unsettled = self.unsettled.saturating_sub(1);
                }
            }
        }
        self.pop_done_txns();
    }

    fn settle_all(&mut self, outcome: Outcome) {
        for txn in self.txns.iter_mut() {
            for i in 0..txn.rcpts.len() {
                if settle_in(txn, i, outcome.clone(), &mut self.events) {
                    self.unsettled = self.unsettled.saturating_sub(1);
                }
            }
        }
        self.pop_done_txns();
    }

    /// Drops finished transactions from the front. Later finished ones wait
    /// their turn so that sequence numbers keep mapping to positions.
    fn pop_done_txns(&mut self) {
        while self.txns.front().is_some_and(|t| t.remaining == 0) {
            self.txns.pop_front();
            self.txn_base += 1;
        }
    }
}

/// The txn with sequence number `seq` in `txns`, whose front is `base`.
/// A free function so callers can borrow other fields alongside.
fn txn_at(txns: &mut VecDeque<Txn>, base: u64, seq: u64) -> Option<&mut Txn> {
    let idx = usize::try_from(seq.checked_sub(base)?).ok()?;
    txns.get_mut(idx)
}

/// Settles one recipient; returns whether it had no outcome before. Emits
/// `TxnDone` with the last one.
fn settle_in(
    txn: &mut Txn,
    i: usize,
    outcome: Outcome,
    events: &mut VecDeque<ClientEvent>,
) -> bool {
    let (Some(state), Some(rcpt)) = (txn.state.get_mut(i), txn.rcpts.get(i)) else {
        return false;
    };
    if *state == RcptState::Done {
        return false;
    }
    *state = RcptState::Done;
    events.push_back(ClientEvent::RcptOutcome {
        txn: txn.id,
        rcpt: rcpt.index,
        outcome,
    });
    txn.remaining = txn.remaining.saturating_sub(1);
    if txn.remaining == 0 {
        events.push_back(ClientEvent::TxnDone { txn: txn.id });
    }
    true
}

/// Deferred for 4xx, Bounced for 5xx.
fn failure(class: u16, reply: Arc<Reply>) -> Outcome {
    if class == 4 {
        Outcome::Deferred(reply)
    } else {
        Outcome::Bounced(reply)
    }
}

/// Why this message cannot go to a server with `caps` at all, if it cannot.
fn message_refusal(txn: &Txn, caps: &Capabilities) -> Option<Reply> {
    if !valid_address(&txn.reverse_path) {
        return Some(synth::BAD_SENDER);
    }
    if caps
        .max_size()
        .is_some_and(|max| txn.body.len() as u64 > max)
    {
        return Some(synth::TOO_BIG);
    }
    if txn.smtputf8 && !caps.smtputf8 {
        return Some(synth::NO_SMTPUTF8);
    }
    if txn.eight_bit && !caps.eight_bit_mime {
        return Some(synth::NO_8BITMIME);
    }
    None
}

/// An address we can put between angle brackets without changing the
/// command: no control characters (CR/LF would inject commands) and no
/// brackets. Syntax beyond that is the server's to judge.
fn valid_address(addr: &str) -> bool {
    addr.bytes()
        .all(|b| b >= 0x20 && b != 0x7f && b != b'<' && b != b'>')
}
