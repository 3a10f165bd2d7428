//! The SMTP server session as a sans-IO state machine.
//!
//! The driver owns the socket, the clock and TLS; the session owns the
//! protocol. Bytes go in through [`ServerSession::handle_input`], which
//! consumes every complete command (so a pipelined group of commands yields
//! one batch of replies, RFC 2920) and reports how much it consumed; replies
//! come out of [`ServerSession::poll_transmit`]; decisions the session cannot
//! make itself (TLS handshake, credential checks, storing a message) come out
//! of [`ServerSession::poll_event`] and pause the session until the driver
//! answers. Keeping I/O out makes every protocol path testable with plain
//! byte strings and lets the driver batch reads and writes as it likes.
//!
//! A message's verdict is the exception: a pipelining client may send the
//! next transaction (BDAT LAST, then MAIL…) before the reply to the last
//! one, so up to [`MAX_PENDING_VERDICTS`] messages may await their verdicts
//! while later commands are processed. Their replies are held back at the
//! place each verdict goes, so replies still leave in command order; the
//! driver can make a whole pipelined batch durable with one journal commit
//! instead of one per message.
//!
//! Message content is held to the same rules whichever command carries
//! it: DATA lines and BDAT chunk octets both go through one
//! [`ContentScan`] (line ends, NUL, line
//! length, Received hop count), so a client cannot choose the looser path.
//!
//! Memory is bounded by design: a command or DATA line is never held beyond
//! `max_line_length` (longer lines are consumed and discarded), DATA lines
//! and BDAT chunk bytes are appended to the message body as they arrive
//! rather than waiting in the input buffer, and nothing is appended once the
//! body exceeds `max_message_size`.
//!
//! Error counting (`max_errors`): every 4xx/5xx reply caused by the client
//! counts (syntax, sequence, bad lines, failed AUTH, refused message
//! content), except replies that are policy rather than misbehaviour:
//! `452 4.3.1` (we are busy), `552 5.3.4` (too big), `452 4.5.3` (too many
//! recipients) and the driver's own verdicts, nor the `503`s a pipelining
//! client gets for the rest of a transaction whose MAIL such a policy reply
//! refused. A relay denial counts at most
//! once per transaction: relay permission is per session, so a client that
//! is denied one recipient is denied all of them, and counting each would
//! turn one misconfigured 100-recipient message into a 421 (which the client
//! retries forever) instead of the 554s it should bounce on; counting once
//! still stops a client that probes transaction after transaction.

use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use memchr::memchr;

use super::command::{parse_command, AuthMechanism, BodyType, Command, MailParams};
use super::content::{self, ContentScan};
use super::date::write_rfc5322_date;
use super::reply::{push_sanitized, wire, Reply};

/// Static configuration shared by all sessions of a listener.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Our name in the greeting, EHLO reply and Received header.
    pub hostname: String,
    /// Advertised as `SIZE`; larger messages get `552 5.3.4`.
    pub max_message_size: usize,
    /// RCPTs beyond this get `452 4.5.3 Too many recipients`.
    pub max_recipients: usize,
    /// Client errors before `421 4.7.0 Too many errors` and close. 0 closes
    /// on the first error.
    pub max_errors: u32,
    /// Longest command or DATA line, CRLF included (RFC 5321: 1000 for text
    /// lines, 512 minimum for commands). Values below 3 are treated as 3.
    pub max_line_length: usize,
    /// TLS is configured, so STARTTLS is offered.
    pub offer_starttls: bool,
    /// A users file is configured, so AUTH is offered.
    pub auth_enabled: bool,
    /// Offer and allow AUTH on plaintext connections.
    pub auth_without_tls: bool,
    /// Accept 8-bit message data without `BODY=8BITMIME`/`SMTPUTF8`.
    pub allow_undeclared_8bit: bool,
    /// Read deadline while waiting for a command (RFC 5321 4.5.3.2.7).
    pub command_timeout: Duration,
    /// Read deadline between DATA lines / BDAT chunks.
    pub data_timeout: Duration,
    /// Most `Received:` fields a message may leave with, ours included;
    /// more get `554 5.4.6 Too many hops` (a mail loop).
    pub max_hops: u32,
    /// Commands that move no message (NOOP, RSET, VRFY, HELP, EHLO/HELO)
    /// allowed since the last message ended (end of DATA or `BDAT LAST`,
    /// accepted or refused); the next one gets `421 4.7.0` and the session
    /// closes. 0: no cap.
    pub max_junk_commands: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".to_owned(),
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 1000,
            max_errors: 20,
            max_line_length: 1000,
            offer_starttls: false,
            auth_enabled: false,
            auth_without_tls: false,
            allow_undeclared_8bit: false,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            max_hops: 50,
            max_junk_commands: 100,
        }
    }
}

/// What the driver knows about the connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// Our address the client connected to.
    pub local: SocketAddr,
    /// The client's IP is in a network allowed to relay without AUTH.
    pub relay_allowed: bool,
}

/// The negotiated TLS parameters, recorded in the Received header.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: &'static str,
    /// Cipher suite name.
    pub cipher: String,
}

/// Whether the node currently takes new messages; set by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// Accept transactions.
    #[default]
    Open,
    /// Refuse MAIL with `452 4.3.1` (queue full, disk low, ...).
    Busy,
}

/// The driver's answer to [`Event::Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored durably under this id.
    Accepted {
        /// Shown to the client as 16 hex digits.
        queue_id: u64,
    },
    /// Not stored; this reply goes to the client.
    Rejected(Reply),
}

/// A received message, ready to be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The envelope sender; `""` for the null sender.
    pub reverse_path: String,
    /// The accepted envelope recipients, in RCPT order.
    pub recipients: Vec<String>,
    /// Our Received header followed by the data: dot-unstuffed, CRLF line
    /// ends, without the terminating `.` line.
    pub body: Bytes,
    /// `BODY=8BITMIME` or `SMTPUTF8` was declared.
    pub eight_bit: bool,
    /// `SMTPUTF8` was declared.
    pub smtputf8: bool,
    /// The HELO/EHLO name.
    pub helo: String,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
}

/// Something the driver must act on. The session is paused until it does.
pub enum Event {
    /// The client sent STARTTLS and we said `220`. Flush
    /// [`ServerSession::poll_transmit`], discard any plaintext already
    /// buffered after the command (RFC 3207 5, CVE-2011-0411), run the
    /// handshake, then call [`ServerSession::tls_established`].
    StartTls,
    /// Verify these credentials, then call [`ServerSession::auth_result`].
    /// The session keeps no copy of the password.
    Auth {
        /// The mechanism the client used.
        mechanism: AuthMechanism,
        /// Authorization identity (PLAIN only; empty if not given).
        authzid: String,
        /// Authentication identity.
        username: String,
        /// The password.
        password: String,
    },
    /// Store this message, then call [`ServerSession::decide`].
    Message(Message),
}

impl std::fmt::Debug for Event {
    // Hand-written so a logged event can never leak a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::StartTls => f.write_str("StartTls"),
            Event::Auth {
                mechanism,
                authzid,
                username,
                ..
            } => f
                .debug_struct("Auth")
                .field("mechanism", mechanism)
                .field("authzid", authzid)
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Event::Message(m) => f.debug_tuple("Message").field(m).finish(),
        }
    }
}

/// The driver's answer to [`Event::Auth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAnswer {
    /// The credentials are valid: `235`.
    Accepted,
    /// They are not: `535 5.7.8` (counts as an error).
    Rejected,
    /// They could not be checked now (the hashing pool is full or did not
    /// answer in time): `454 4.7.0`, the client may try again later. It
    /// counts toward `max_errors`.
    Unavailable,
    /// The client failed too often recently: `421 4.7.0` and close.
    LockedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Await {
    StartTls,
    Auth,
}

/// Messages that may await their verdicts at once, per session.
pub const MAX_PENDING_VERDICTS: usize = 32;

#[derive(Debug)]
enum Phase {
    Command,
    /// Between `354` and CRLF.CRLF. `prev_crlf`: the previous line ended in
    /// CRLF, so a `.` line here is the end marker (only CRLF.CRLF ends data).
    Data {
        prev_crlf: bool,
    },
    Bdat(Chunk),
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass(String),
}

#[derive(Debug)]
struct Chunk {
    size: u64,
    remaining: u64,
    last: bool,
    /// The chunk was refused at the command; its octets are only skipped.
    discard: bool,
    /// Octets since the last progress tick.
    since_tick: u64,
}

// Reasons a message is refused at the end of DATA, in reply priority order.
const BAD_TOO_BIG: u8 = 1;
const BAD_LONG_LINE: u8 = content::LONG_LINE;
const BAD_NEWLINE: u8 = content::BARE_NEWLINE;
const BAD_NUL: u8 = content::NUL;
const BAD_8BIT: u8 = 16;
const BAD_HOPS: u8 = content::TOO_MANY_HOPS;

/// BDAT chunks can be arbitrarily large; without a tick every so many
/// octets a slow but steady upload of one big chunk would hit the data
/// timeout, while a tick per read would let a byte-a-second client live
/// forever.
const BDAT_TICK: u64 = 64 * 1024;

/// Cap on the body preallocation a client can trigger with `SIZE=`.
const MAX_PREALLOC: usize = 1 << 20;

/// Clients differ on base64 padding in SASL responses; accept either.
const SASL_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

struct Transaction {
    reverse_path: String,
    recipients: Vec<String>,
    eight_bit: bool,
    smtputf8: bool,
    size_hint: Option<u64>,
    relay_denial_counted: bool,
    /// BDAT has started: the body is being built from chunks.
    bdat: bool,
    body: Vec<u8>,
    /// Octets of client data, excluding our Received header.
    data_len: usize,
    /// The same content rules for DATA lines and BDAT chunks.
    scan: ContentScan,
    bad: u8,
}

impl Transaction {
    fn mark(&mut self, reason: u8) {
        if reason == 0 {
            return;
        }
        if self.bad == 0 {
            // The message is refused anyway; give the memory back now.
            self.body = Vec::new();
        }
        self.bad |= reason;
    }
}

/// One SMTP server connection. See the module documentation.
pub struct ServerSession {
    config: Arc<ServerConfig>,
    peer: PeerInfo,
    line_max: usize,
    tls: Option<TlsInfo>,
    helo: Option<String>,
    esmtp: bool,
    auth_user: Option<String>,
    /// Username of an Auth event awaiting its result.
    pending_user: Option<String>,
    admission: Admission,
    phase: Phase,
    txn: Option<Transaction>,
    /// Discarding the rest of an over-long line.
    skipping: bool,
    /// The last byte discarded was CR (to know how the long line ended).
    skip_last_cr: bool,
    out: Vec<u8>,
    /// Offsets in `out` where the verdicts of messages not decided yet go,
    /// oldest first; nothing from the first one on may be sent.
    verdicts: std::collections::VecDeque<usize>,
    event: Option<Event>,
    awaiting: Option<Await>,
    errors: u32,
    /// Commands that moved no message since the last message ended.
    junk: u32,
    progress: u64,
    closing: bool,
    /// The last MAIL was refused by policy (busy, too big): the 503s a
    /// pipelining client gets for the rest of that transaction are not its
    /// errors, so they do not count toward `max_errors`.
    mail_refused: bool,
}

impl ServerSession {
    /// A session that greets with `220 <hostname> ESMTP Sluice`.
    pub fn new(config: Arc<ServerConfig>, peer: PeerInfo) -> Self {
        let mut s = Self::blank(config, peer);
        s.out.extend_from_slice(b"220 ");
        push_sanitized(&mut s.out, s.config.hostname.as_bytes());
        s.out.extend_from_slice(b" ESMTP Sluice\r\n");
        s
    }

    /// A session that greets with `reply` (e.g. [`Reply::too_busy`]) and
    /// then wants to close without reading anything.
    pub fn new_refusing(config: Arc<ServerConfig>, peer: PeerInfo, reply: Reply) -> Self {
        let mut s = Self::blank(config, peer);
        reply.write_to(&mut s.out);
        s.closing = true;
        s
    }

    fn blank(config: Arc<ServerConfig>, peer: PeerInfo) -> Self {
        ServerSession {
            line_max: config.max_line_length.max(3),
            config,
            peer,
            tls: None,
            helo: None,
            esmtp: false,
            auth_user: None,
            pending_user: None,
            admission: Admission::Open,
            phase: Phase::Command,
            txn: None,
            skipping: false,
            skip_last_cr: false,
            out: Vec::with_capacity(256),
            verdicts: std::collections::VecDeque::new(),
            event: None,
            awaiting: None,
            errors: 0,
            junk: 0,
            progress: 0,
            closing: false,
            mail_refused: false,
        }
    }

    /// Sets whether new transactions are admitted; checked at each MAIL.
    pub fn set_admission(&mut self, admission: Admission) {
        self.admission = admission;
    }

    /// Processes as much of `input` as possible and returns the number of
    /// bytes consumed. The caller keeps the rest and passes it again,
    /// followed by newly read bytes. Stops early after emitting an event
    /// (answer it, then call again) or when the session wants to close.
    /// An incomplete line shorter than `max_line_length` is not consumed.
    /// `now_unix` dates the Received header of a message started here.
    pub fn handle_input(&mut self, input: &[u8], now_unix: u64) -> usize {
        let mut pos = 0;
        while self.takes_input() {
            let rest = match input.get(pos..) {
                Some(r) if !r.is_empty() => r,
                _ => break,
            };
            let n = if self.skipping {
                self.skip_long_line(rest)
            } else if matches!(self.phase, Phase::Bdat(_)) {
                self.take_chunk(rest)
            } else {
                self.take_line(rest, now_unix)
            };
            if n == 0 {
                break;
            }
            pos += n;
        }
        pos
    }

    /// The daemon is stopping. Between transactions the session says
    /// `421 4.3.2` and closes (true); inside one (or while an answer is
    /// awaited) it is left to finish and false is returned — ask again.
    pub fn shutdown(&mut self) -> bool {
        if self.closing {
            return true;
        }
        if self.txn.is_some() || self.is_awaiting() || !matches!(self.phase, Phase::Command) {
            return false;
        }
        self.out.extend_from_slice(b"421 4.3.2 ");
        push_sanitized(&mut self.out, self.config.hostname.as_bytes());
        self.out.extend_from_slice(b" Service shutting down\r\n");
        self.close();
        true
    }

    /// The read deadline fired: say so and close.
    pub fn handle_timeout(&mut self) {
        if self.closing {
            return;
        }
        self.out.extend_from_slice(b"421 4.4.2 ");
        push_sanitized(&mut self.out, self.config.hostname.as_bytes());
        self.out.extend_from_slice(b" Error: timeout exceeded\r\n");
        self.close();
    }

    /// The session reached its maximum lifetime: say so and close,
    /// whatever it was doing (a transaction in progress is dropped, with no
    /// 250 given for it).
    pub fn expire(&mut self) {
        if self.closing {
            return;
        }
        self.out.extend_from_slice(b"421 4.4.2 ");
        push_sanitized(&mut self.out, self.config.hostname.as_bytes());
        self.out
            .extend_from_slice(b" Error: session lifetime exceeded\r\n");
        self.close();
    }

    /// The TLS handshake after STARTTLS succeeded. Everything learned on
    /// the plaintext connection is forgotten (RFC 3207 4.2); no greeting is
    /// sent, the client starts again with EHLO.
    pub fn tls_established(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.helo = None;
        self.esmtp = false;
        self.auth_user = None;
        self.pending_user = None;
        self.txn = None;
        self.phase = Phase::Command;
        self.skipping = false;
        self.event = None;
        if self.awaiting == Some(Await::StartTls) {
            self.awaiting = None;
        }
    }

    /// The driver's verdict on the credentials of [`Event::Auth`].
    pub fn auth_result(&mut self, ok: bool) {
        self.auth_answer(if ok {
            AuthAnswer::Accepted
        } else {
            AuthAnswer::Rejected
        });
    }

    /// The driver's answer to [`Event::Auth`].
    pub fn auth_answer(&mut self, answer: AuthAnswer) {
        if self.awaiting != Some(Await::Auth) {
            return;
        }
        self.awaiting = None;
        if answer == AuthAnswer::Accepted {
            self.auth_user = self.pending_user.take();
            return self.push(wire::AUTH_OK);
        }
        self.pending_user = None;
        match answer {
            // Not the client's fault, but counted all the same: while the
            // pool is full, 454 costs nothing, and a client must not be able
            // to retry AUTH for ever on one session.
            AuthAnswer::Unavailable => self.error(wire::AUTH_UNAVAILABLE),
            AuthAnswer::LockedOut => {
                self.out.extend_from_slice(b"421 4.7.0 ");
                push_sanitized(&mut self.out, self.config.hostname.as_bytes());
                self.out
                    .extend_from_slice(b" Too many failed authentications, try again later\r\n");
                self.close();
            }
            _ => self.error(wire::AUTH_FAILED),
        }
    }

    /// The driver's verdict on the oldest [`Event::Message`] not decided
    /// yet; this is the reply to the end of DATA or to `BDAT ... LAST`.
    pub fn decide(&mut self, verdict: Verdict) {
        let Some(at) = self.verdicts.pop_front() else {
            return;
        };
        let mut reply = [0u8; 512];
        let mut v;
        let bytes: &[u8] = match verdict {
            Verdict::Accepted { queue_id } => {
                const PREFIX: &[u8] = b"250 2.0.0 Ok: queued as ";
                let (head, tail) = reply.split_at_mut(PREFIX.len());
                head.copy_from_slice(PREFIX);
                for (i, b) in tail.iter_mut().take(16).enumerate() {
                    let shift = 60 - 4 * i as u32;
                    let nibble = ((queue_id >> shift) & 0xf) as u8;
                    *b = if nibble < 10 {
                        b'0' + nibble
                    } else {
                        b'A' + nibble - 10
                    };
                }
                let end = PREFIX.len() + 16;
                if let Some(crlf) = reply.get_mut(end..end + 2) {
                    crlf.copy_from_slice(b"\r\n");
                }
                reply.get(..end + 2).unwrap_or_default()
            }
            Verdict::Rejected(r) => {
                v = Vec::new();
                r.write_to(&mut v);
                &v
            }
        };
        let at = at.min(self.out.len());
        self.out.splice(at..at, bytes.iter().copied());
        for later in self.verdicts.iter_mut() {
            *later += bytes.len();
        }
    }

    /// Appends every reply byte that may be sent now to `out`, in order:
    /// everything before the first verdict still awaited.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        let ready = self
            .verdicts
            .front()
            .copied()
            .unwrap_or(self.out.len())
            .min(self.out.len());
        if ready == self.out.len() && out.is_empty() {
            // Hand over our buffer instead of copying it.
            mem::swap(out, &mut self.out);
            self.out.clear();
        } else {
            out.extend_from_slice(self.out.get(..ready).unwrap_or_default());
            self.out.drain(..ready);
        }
        for v in self.verdicts.iter_mut() {
            *v = v.saturating_sub(ready);
        }
    }

    /// Whether [`ServerSession::handle_input`] would consume anything now:
    /// not closing, no event unanswered, fewer than
    /// [`MAX_PENDING_VERDICTS`] verdicts awaited.
    pub fn takes_input(&self) -> bool {
        !self.closing
            && self.awaiting.is_none()
            && self.event.is_none()
            && self.verdicts.len() < MAX_PENDING_VERDICTS
    }

    /// Messages whose verdicts the driver has not given yet.
    pub fn pending_verdicts(&self) -> usize {
        self.verdicts.len()
    }

    /// The next event for the driver, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// The read deadline for the current phase.
    pub fn timeout(&self) -> Duration {
        match self.phase {
            Phase::Data { .. } | Phase::Bdat(_) => self.config.data_timeout,
            _ => self.config.command_timeout,
        }
    }

    /// A counter that moves on each complete command line once the client
    /// has said HELO/EHLO, each DATA line, BDAT chunk (and every 64 KiB
    /// inside a chunk). The driver restarts its read deadline when it
    /// changes, so neither trickling bytes nor NOOPs before EHLO keep a
    /// session alive.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// The connection should be closed once pending output is flushed.
    pub fn wants_close(&self) -> bool {
        self.closing
    }

    /// An event was emitted and the driver has not answered it yet.
    pub fn is_awaiting(&self) -> bool {
        self.awaiting.is_some() || !self.verdicts.is_empty()
    }

    /// True after TLS was established on this connection.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The authenticated user, if any.
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// Client errors counted so far.
    pub fn error_count(&self) -> u32 {
        self.errors
    }

    // ---- input framing ---------------------------------------------------

    fn take_line(&mut self, rest: &[u8], now: u64) -> usize {
        let window = rest.get(..self.line_max).unwrap_or(rest);
        match memchr(b'\n', window) {
            Some(i) => {
                let line = rest.get(..=i).unwrap_or_default();
                match self.phase {
                    Phase::Command => self.on_command_line(line, now),
                    Phase::Data { prev_crlf } => {
                        self.progress = self.progress.wrapping_add(1);
                        self.on_data_line(line, prev_crlf)
                    }
                    _ => {
                        self.progress = self.progress.wrapping_add(1);
                        self.on_auth_line(line)
                    }
                }
                i + 1
            }
            None if rest.len() >= self.line_max => {
                // The line is longer than allowed whatever follows; drop
                // what we have so the driver never buffers more.
                self.skipping = true;
                // The CR of a CRLF may be the last byte we drop here.
                self.skip_last_cr = window.last() == Some(&b'\r');
                if let (Phase::Data { .. }, Some(txn)) = (&self.phase, self.txn.as_mut()) {
                    txn.mark(BAD_LONG_LINE);
                }
                self.line_max
            }
            None => 0,
        }
    }

    fn skip_long_line(&mut self, rest: &[u8]) -> usize {
        let Some(i) = memchr(b'\n', rest) else {
            self.skip_last_cr = rest.last() == Some(&b'\r');
            return rest.len();
        };
        let ended_crlf = match i.checked_sub(1) {
            Some(j) => rest.get(j) == Some(&b'\r'),
            None => self.skip_last_cr,
        };
        self.skipping = false;
        self.progress = self.progress.wrapping_add(1);
        match self.phase {
            Phase::Data { .. } => {
                self.phase = Phase::Data {
                    prev_crlf: ended_crlf,
                }
            }
            Phase::Command => self.error(wire::LINE_TOO_LONG),
            _ => {
                self.phase = Phase::Command;
                self.error(wire::LINE_TOO_LONG);
            }
        }
        i + 1
    }

    // ---- replies and errors ----------------------------------------------

    fn push(&mut self, reply: &'static [u8]) {
        self.out.extend_from_slice(reply);
    }

    /// Sends a reply that counts toward `max_errors`.
    fn error(&mut self, reply: &'static [u8]) {
        self.push(reply);
        self.count_error();
    }

    fn count_error(&mut self) {
        self.errors = self.errors.saturating_add(1);
        if self.errors >= self.config.max_errors && !self.closing {
            self.out.extend_from_slice(b"421 4.7.0 ");
            push_sanitized(&mut self.out, self.config.hostname.as_bytes());
            self.out.extend_from_slice(b" Too many errors\r\n");
            self.close();
        }
    }

    fn close(&mut self) {
        self.closing = true;
        self.txn = None;
        self.phase = Phase::Command;
        self.skipping = false;
    }

    // ---- commands ----------------------------------------------------------

    /// A command line is progress (restarts the driver's idle deadline)
    /// once the client has said HELO/EHLO: before that, NOOPs and garbage
    /// must not keep a session that never starts alive.
    fn on_command_line(&mut self, line: &[u8], now: u64) {
        let greeted = self.helo.is_some();
        self.command_line(line, now);
        if greeted || self.helo.is_some() {
            self.progress = self.progress.wrapping_add(1);
        }
    }

    fn command_line(&mut self, line: &[u8], now: u64) {
        let Some(content) = line.strip_suffix(b"\r\n") else {
            return self.error(wire::BARE_LF);
        };
        if memchr::memchr2(0, b'\r', content).is_some() {
            return self.error(wire::BAD_CHAR);
        }
        match parse_command(content) {
            Ok(cmd) => self.dispatch(cmd, now),
            Err(e) => self.error(e.reply_bytes()),
        }
    }

    fn dispatch(&mut self, cmd: Command<'_>, now: u64) {
        if !matches!(
            cmd,
            Command::Rcpt { .. } | Command::Data | Command::Bdat { .. }
        ) {
            self.mail_refused = false;
        }
        let junk = matches!(
            cmd,
            Command::Noop
                | Command::Rset
                | Command::Help
                | Command::Vrfy
                | Command::Ehlo { .. }
                | Command::Helo { .. }
        );
        if junk && self.over_junk_limit() {
            return;
        }
        match cmd {
            Command::Ehlo { domain } => self.cmd_hello(domain, true),
            Command::Helo { domain } => self.cmd_hello(domain, false),
            Command::Mail {
                reverse_path,
                params,
            } => self.cmd_mail(reverse_path, params),
            Command::Rcpt { forward_path } => self.cmd_rcpt(forward_path),
            Command::Data => self.cmd_data(now),
            Command::Bdat { size, last } => self.cmd_bdat(size, last, now),
            Command::Rset => {
                self.txn = None;
                self.push(wire::OK);
            }
            Command::Noop => self.push(wire::OK),
            Command::Help => self.push(wire::HELP),
            Command::Vrfy => self.push(wire::VRFY),
            Command::Quit => {
                self.push(wire::BYE);
                self.close();
            }
            Command::StartTls => self.cmd_starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.cmd_auth(mechanism, initial_response),
        }
    }

    /// Counts a command that moves no message; past the cap, says 421 and
    /// closes (true). Like Postfix's `smtpd_junk_command_limit`: a client
    /// that only keeps the connection busy gives its slot back.
    fn over_junk_limit(&mut self) -> bool {
        self.junk = self.junk.saturating_add(1);
        let max = self.config.max_junk_commands;
        if max == 0 || self.junk <= max {
            return false;
        }
        self.out.extend_from_slice(b"421 4.7.0 ");
        push_sanitized(&mut self.out, self.config.hostname.as_bytes());
        self.out
            .extend_from_slice(b" Too many commands without a transaction\r\n");
        self.close();
        true
    }

    fn auth_offered(&self) -> bool {
        self.config.auth_enabled && (self.tls.is_some() || self.config.auth_without_tls)
    }

    fn cmd_hello(&mut self, domain: &str, esmtp: bool) {
        self.txn = None;
        let helo = self.helo.get_or_insert_with(String::new);
        helo.clear();
        helo.push_str(domain);
        self.esmtp = esmtp;
        let starttls = self.config.offer_starttls && self.tls.is_none();
        let auth = self.auth_offered();
        let out = &mut self.out;
        if !esmtp {
            out.extend_from_slice(b"250 ");
            push_sanitized(out, self.config.hostname.as_bytes());
            out.extend_from_slice(b"\r\n");
            return;
        }
        out.extend_from_slice(b"250-");
        push_sanitized(out, self.config.hostname.as_bytes());
        out.extend_from_slice(b"\r\n250-PIPELINING\r\n250-SIZE ");
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(num.format(self.config.max_message_size).as_bytes());
        out.extend_from_slice(b"\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n");
        let tail: [Option<&[u8]>; 3] = [
            Some(b"CHUNKING"),
            starttls.then_some(b"STARTTLS"),
            auth.then_some(b"AUTH PLAIN LOGIN"),
        ];
        let count = tail.iter().flatten().count();
        for (i, keyword) in tail.iter().flatten().enumerate() {
            out.extend_from_slice(if i + 1 == count { b"250 " } else { b"250-" });
            out.extend_from_slice(keyword);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn cmd_mail(&mut self, path: &str, params: MailParams) {
        if self.helo.is_none() {
            return self.error(wire::NEED_HELO);
        }
        if self.txn.is_some() {
            return self.error(wire::NESTED_MAIL);
        }
        if !self.esmtp && !params.is_empty() {
            return self.error(wire::UNKNOWN_PARAM);
        }
        if !path.is_ascii() && !params.smtputf8 {
            return self.error(wire::NEED_SMTPUTF8);
        }
        if self.admission == Admission::Busy {
            self.mail_refused = true;
            return self.push(wire::BUSY);
        }
        let max = self.config.max_message_size as u64;
        if params.size.is_some_and(|s| s > max) {
            self.mail_refused = true;
            return self.push(wire::TOO_BIG);
        }
        self.txn = Some(Transaction {
            reverse_path: path.to_owned(),
            recipients: Vec::new(),
            eight_bit: params.body == Some(BodyType::EightBitMime) || params.smtputf8,
            smtputf8: params.smtputf8,
            size_hint: params.size,
            relay_denial_counted: false,
            bdat: false,
            body: Vec::new(),
            data_len: 0,
            // Our own Received header is not scanned: it is the one more
            // hop the limit allows for.
            scan: ContentScan::new(self.line_max, self.config.max_hops.saturating_sub(1)),
            bad: 0,
        });
        self.push(wire::OK_MAIL);
    }

    /// `503 need MAIL`: the client's error, unless its MAIL was refused by
    /// our policy and it pipelined the rest of the transaction.
    fn need_mail(&mut self) {
        if self.mail_refused {
            self.push(wire::NEED_MAIL);
        } else {
            self.error(wire::NEED_MAIL);
        }
    }

    fn cmd_rcpt(&mut self, path: &str) {
        let may_relay = self.peer.relay_allowed || self.auth_user.is_some();
        let max_rcpt = self.config.max_recipients;
        let Some(txn) = self.txn.as_mut() else {
            return self.need_mail();
        };
        if txn.bdat {
            return self.error(wire::RCPT_AFTER_BDAT);
        }
        if !path.is_ascii() && !txn.smtputf8 {
            return self.error(wire::NEED_SMTPUTF8);
        }
        if !may_relay {
            let count = !mem::replace(&mut txn.relay_denial_counted, true);
            self.out.extend_from_slice(b"554 5.7.1 <");
            self.out.extend_from_slice(path.as_bytes());
            self.out.extend_from_slice(b">: Relay access denied\r\n");
            if count {
                self.count_error();
            }
            return;
        }
        if txn.recipients.len() >= max_rcpt {
            return self.push(wire::TOO_MANY_RCPT);
        }
        txn.recipients.push(path.to_owned());
        self.push(wire::OK_RCPT);
    }

    fn cmd_data(&mut self, now: u64) {
        match &self.txn {
            None => {
                // DATA ends what a client may pipeline after its MAIL.
                self.need_mail();
                self.mail_refused = false;
                return;
            }
            Some(t) if t.bdat => return self.error(wire::DATA_AFTER_BDAT),
            Some(t) if t.recipients.is_empty() => return self.error(wire::NO_VALID_RCPT),
            Some(_) => {}
        }
        self.start_body(now);
        self.phase = Phase::Data { prev_crlf: true };
        self.push(wire::START_DATA);
    }

    fn cmd_bdat(&mut self, size: u64, last: bool, now: u64) {
        let refusal = if !self.esmtp {
            Some(wire::NEED_EHLO)
        } else {
            match &self.txn {
                None => Some(wire::NEED_MAIL),
                Some(t) if t.recipients.is_empty() => Some(wire::NEED_RCPT),
                Some(_) => None,
            }
        };
        if let Some(reply) = refusal {
            self.txn = None;
            if reply == wire::NEED_MAIL {
                self.need_mail();
            } else {
                self.error(reply);
            }
            if last {
                self.mail_refused = false;
            }
            return self.begin_chunk(size, last, true);
        }
        let max = self.config.max_message_size as u64;
        let fits = self.txn.as_ref().is_some_and(|t| {
            (t.data_len as u64)
                .checked_add(size)
                .is_some_and(|total| total <= max)
        });
        if !fits {
            self.txn = None;
            self.push(wire::TOO_BIG);
            return self.begin_chunk(size, last, true);
        }
        if self.txn.as_ref().is_some_and(|t| !t.bdat) {
            self.start_body(now);
            if let Some(t) = self.txn.as_mut() {
                t.bdat = true;
            }
        }
        self.begin_chunk(size, last, false);
    }

    fn cmd_starttls(&mut self) {
        if !self.config.offer_starttls {
            return self.error(wire::NOT_IMPLEMENTED);
        }
        if self.tls.is_some() {
            return self.error(wire::TLS_ACTIVE);
        }
        if self.txn.is_some() {
            return self.error(wire::IN_TRANSACTION);
        }
        self.push(wire::READY_TLS);
        self.event = Some(Event::StartTls);
        self.awaiting = Some(Await::StartTls);
    }

    fn cmd_auth(&mut self, mechanism: AuthMechanism, initial: Option<&[u8]>) {
        if !self.config.auth_enabled {
            return self.error(wire::AUTH_NOT_ENABLED);
        }
        if !self.auth_offered() {
            return self.error(wire::AUTH_NEEDS_TLS);
        }
        if !self.esmtp {
            return self.error(wire::NEED_EHLO);
        }
        if self.auth_user.is_some() {
            return self.error(wire::ALREADY_AUTH);
        }
        if self.txn.is_some() {
            return self.error(wire::IN_TRANSACTION);
        }
        match (mechanism, initial) {
            (AuthMechanism::Plain, Some(resp)) => self.auth_plain(resp),
            (AuthMechanism::Plain, None) => {
                self.push(wire::AUTH_PLAIN_CHALLENGE);
                self.phase = Phase::AuthPlain;
            }
            (AuthMechanism::Login, Some(resp)) => self.auth_login_user(resp),
            (AuthMechanism::Login, None) => {
                self.push(wire::AUTH_LOGIN_USER);
                self.phase = Phase::AuthLoginUser;
            }
        }
    }

    // ---- AUTH exchange -----------------------------------------------------

    fn on_auth_line(&mut self, line: &[u8]) {
        // Whatever happens, this line ends the current step.
        let phase = mem::replace(&mut self.phase, Phase::Command);
        let Some(content) = line.strip_suffix(b"\r\n") else {
            return self.error(wire::BARE_LF);
        };
        if content == b"*" {
            return self.error(wire::AUTH_CANCELLED);
        }
        match phase {
            Phase::AuthPlain => self.auth_plain(content),
            Phase::AuthLoginUser => self.auth_login_user(content),
            Phase::AuthLoginPass(username) => match decode_sasl_text(content) {
                Some(password) => {
                    self.emit_auth(AuthMechanism::Login, String::new(), username, password)
                }
                None => self.error(wire::AUTH_BAD_RESPONSE),
            },
            _ => {}
        }
    }

    fn auth_plain(&mut self, response: &[u8]) {
        let Some(decoded) = decode_sasl(response) else {
            return self.error(wire::AUTH_BAD_RESPONSE);
        };
        // authzid NUL authcid NUL passwd (RFC 4616 2)
        let mut parts = decoded.split(|&b| b == 0);
        let fields = (parts.next(), parts.next(), parts.next(), parts.next());
        let (Some(authzid), Some(user), Some(pass), None) = fields else {
            return self.error(wire::AUTH_BAD_RESPONSE);
        };
        let (Ok(authzid), Ok(user), Ok(pass)) = (
            std::str::from_utf8(authzid),
            std::str::from_utf8(user),
            std::str::from_utf8(pass),
        ) else {
            return self.error(wire::AUTH_BAD_RESPONSE);
        };
        if user.is_empty() {
            return self.error(wire::AUTH_BAD_RESPONSE);
        }
        let (authzid, user, pass) = (authzid.to_owned(), user.to_owned(), pass.to_owned());
        self.emit_auth(AuthMechanism::Plain, authzid, user, pass);
    }

    fn auth_login_user(&mut self, response: &[u8]) {
        match decode_sasl_text(response) {
            Some(user) if !user.is_empty() => {
                self.push(wire::AUTH_LOGIN_PASS);
                self.phase = Phase::AuthLoginPass(user);
            }
            _ => self.error(wire::AUTH_BAD_RESPONSE),
        }
    }

    fn emit_auth(
        &mut self,
        mechanism: AuthMechanism,
        authzid: String,
        username: String,
        password: String,
    ) {
        self.pending_user = Some(username.clone());
        self.event = Some(Event::Auth {
            mechanism,
            authzid,
            username,
            password,
        });
        self.awaiting = Some(Await::Auth);
    }

    // ---- message data ------------------------------------------------------

    fn start_body(&mut self, now: u64) {
        let proto: &[u8] = match (self.esmtp, self.tls.is_some(), self.auth_user.is_some()) {
            (false, _, _) => b"SMTP",
            (true, false, false) => b"ESMTP",
            (true, true, false) => b"ESMTPS",
            (true, false, true) => b"ESMTPA",
            (true, true, true) => b"ESMTPSA",
        };
        let Some(txn) = self.txn.as_mut() else { return };
        let hint = txn
            .size_hint
            .map_or(0, |s| usize::try_from(s).unwrap_or(usize::MAX))
            .min(self.config.max_message_size)
            .min(MAX_PREALLOC);
        let body = &mut txn.body;
        body.reserve(hint.saturating_add(256));
        body.extend_from_slice(b"Received: from ");
        push_sanitized(body, self.helo.as_deref().unwrap_or("unknown").as_bytes());
        body.extend_from_slice(b" ([");
        push_ip(body, self.peer.remote);
        body.extend_from_slice(b"])\r\n\tby ");
        push_sanitized(body, self.config.hostname.as_bytes());
        body.extend_from_slice(b" (Sluice) with ");
        body.extend_from_slice(proto);
        if let Some(tls) = &self.tls {
            body.extend_from_slice(b"\r\n\t(version=");
            push_sanitized(body, tls.version.as_bytes());
            body.extend_from_slice(b" cipher=");
            push_sanitized(body, tls.cipher.as_bytes());
            body.push(b')');
        }
        if let [only] = txn.recipients.as_slice() {
            body.extend_from_slice(b"\r\n\tfor <");
            body.extend_from_slice(only.as_bytes());
            body.push(b'>');
        }
        body.extend_from_slice(b"; ");
        write_rfc5322_date(body, now);
        body.extend_from_slice(b"\r\n");
    }

    fn on_data_line(&mut self, line: &[u8], prev_crlf: bool) {
        let (content, crlf) = match line.strip_suffix(b"\r\n") {
            Some(c) => (c, true),
            None => (line.strip_suffix(b"\n").unwrap_or(line), false),
        };
        if crlf && prev_crlf && content == b"." {
            self.phase = Phase::Command;
            return self.end_of_message();
        }
        self.phase = Phase::Data { prev_crlf: crlf };
        let check_8bit = !self.config.allow_undeclared_8bit;
        let max = self.config.max_message_size;
        let Some(txn) = self.txn.as_mut() else { return };
        // The line as the client meant it: unstuffed, with its own ending.
        let breaches = txn.scan.feed(line.strip_prefix(b".").unwrap_or(line));
        txn.mark(breaches);
        let content = content.strip_prefix(b".").unwrap_or(content);
        if check_8bit && !txn.eight_bit && !content.is_ascii() {
            txn.mark(BAD_8BIT);
        }
        txn.data_len = txn.data_len.saturating_add(content.len() + 2);
        if txn.data_len > max {
            txn.mark(BAD_TOO_BIG);
        }
        if txn.bad == 0 {
            txn.body.extend_from_slice(content);
            txn.body.extend_from_slice(b"\r\n");
        }
    }

    fn end_of_message(&mut self) {
        let Some(mut txn) = self.txn.take() else {
            return;
        };
        // A whole message: the session is doing its job. Only here, so
        // that no command which moves no message for good (`BDAT 0`
        // without LAST, a DATA the client never ends) resets the count.
        self.junk = 0;
        let breaches = txn.scan.finish();
        txn.mark(breaches);
        if txn.bad != 0 {
            return self.refuse(txn.bad);
        }
        self.event = Some(Event::Message(Message {
            reverse_path: txn.reverse_path,
            recipients: txn.recipients,
            body: Bytes::from(txn.body),
            eight_bit: txn.eight_bit,
            smtputf8: txn.smtputf8,
            helo: self.helo.clone().unwrap_or_default(),
            auth_user: self.auth_user.clone(),
        }));
        self.verdicts.push_back(self.out.len());
    }

    /// Replies to a message refused for `bad` (DATA or BDAT alike), most
    /// important reason first.
    fn refuse(&mut self, bad: u8) {
        if bad & BAD_TOO_BIG != 0 {
            self.push(wire::TOO_BIG);
        } else if bad & BAD_LONG_LINE != 0 {
            self.out
                .extend_from_slice(b"554 5.6.0 Message contains a line longer than ");
            let mut num = itoa::Buffer::new();
            self.out
                .extend_from_slice(num.format(self.config.max_line_length).as_bytes());
            self.out.extend_from_slice(b" octets\r\n");
            self.count_error();
        } else if bad & BAD_NEWLINE != 0 {
            self.error(wire::MSG_BARE_NEWLINE);
        } else if bad & BAD_NUL != 0 {
            self.error(wire::MSG_NUL);
        } else if bad & BAD_8BIT != 0 {
            self.error(wire::MSG_8BIT);
        } else if bad & BAD_HOPS != 0 {
            // A loop, not the client's misbehaviour: not counted.
            self.push(wire::TOO_MANY_HOPS);
        }
    }

    fn begin_chunk(&mut self, size: u64, last: bool, discard: bool) {
        if self.closing {
            return;
        }
        self.phase = Phase::Bdat(Chunk {
            size,
            remaining: size,
            last,
            discard,
            since_tick: 0,
        });
        if size == 0 {
            self.end_chunk();
        }
    }

    fn take_chunk(&mut self, rest: &[u8]) -> usize {
        let Phase::Bdat(chunk) = &mut self.phase else {
            return 0;
        };
        let n = usize::try_from(chunk.remaining).map_or(rest.len(), |r| r.min(rest.len()));
        let piece = rest.get(..n).unwrap_or_default();
        chunk.remaining -= n as u64;
        chunk.since_tick += n as u64;
        if chunk.since_tick >= BDAT_TICK {
            chunk.since_tick = 0;
            self.progress = self.progress.wrapping_add(1);
        }
        let done = chunk.remaining == 0;
        if !chunk.discard {
            let check_8bit = !self.config.allow_undeclared_8bit;
            if let Some(txn) = self.txn.as_mut() {
                // The size was checked against the announced length, so
                // appending cannot exceed max_message_size.
                txn.data_len = txn.data_len.saturating_add(n);
                if check_8bit && !txn.eight_bit && !piece.is_ascii() {
                    txn.mark(BAD_8BIT);
                }
                let breaches = txn.scan.feed(piece);
                txn.mark(breaches);
                if txn.bad == 0 {
                    txn.body.extend_from_slice(piece);
                }
            }
        }
        if done {
            self.end_chunk();
        }
        n
    }

    fn end_chunk(&mut self) {
        let Phase::Bdat(chunk) = mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        self.progress = self.progress.wrapping_add(1);
        if chunk.discard {
            return;
        }
        let bad = self.txn.as_ref().map_or(0, |t| t.bad);
        if bad != 0 {
            // RFC 3030 leaves the transaction to us after a failed chunk;
            // we abort it so the client cannot build on a refused body.
            self.txn = None;
            if chunk.last {
                // A whole message, refused: as at the end of DATA.
                self.junk = 0;
            }
            return self.refuse(bad);
        }
        if chunk.last {
            return self.end_of_message();
        }
        self.out.extend_from_slice(b"250 2.0.0 ");
        let mut num = itoa::Buffer::new();
        self.out
            .extend_from_slice(num.format(chunk.size).as_bytes());
        self.out.extend_from_slice(b" octets received\r\n");
    }
}

fn decode_sasl(response: &[u8]) -> Option<Vec<u8>> {
    // "=" is the RFC 4954 spelling of an empty initial response.
    if response == b"=" {
        return Some(Vec::new());
    }
    SASL_B64.decode(response).ok()
}

fn decode_sasl_text(response: &[u8]) -> Option<String> {
    String::from_utf8(decode_sasl(response)?).ok()
}

fn push_ip(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) => {
            // The common case, once per message: digits without the
            // formatting machinery.
            let mut num = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(num.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail; RFC 5952 text from std.
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_795_388_709;
    const DATE: &str = "Sun, 22 Nov 2026 23:05:09 +0000";
    const EHLO_BASE: &str = "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10000\r\n\
        250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n";

    fn config() -> ServerConfig {
        ServerConfig {
            hostname: "mx.example".into(),
            max_message_size: 10_000,
            max_recipients: 3,
            max_errors: 10,
            ..ServerConfig::default()
        }
    }

    fn peer(relay_allowed: bool) -> PeerInfo {
        PeerInfo {
            remote: "192.0.2.7:40000".parse().unwrap(),
            local: "198.51.100.1:25".parse().unwrap(),
            relay_allowed,
        }
    }

    fn plain(user: &str, pass: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// Plays the driver: keeps unconsumed input, answers events the way a
    /// real driver would, collects replies.
    struct Harness {
        s: ServerSession,
        buf: Vec<u8>,
        out: Vec<u8>,
        messages: Vec<Message>,
        auths: Vec<(AuthMechanism, String, String, String)>,
        starttls: usize,
        next_id: u64,
        verdict: Option<Verdict>,
        line_max: usize,
    }

    impl Harness {
        fn new(cfg: ServerConfig, relay: bool) -> Self {
            let line_max = cfg.max_line_length.max(3);
            let mut h = Harness {
                s: ServerSession::new(Arc::new(cfg), peer(relay)),
                buf: Vec::new(),
                out: Vec::new(),
                messages: Vec::new(),
                auths: Vec::new(),
                starttls: 0,
                next_id: 0,
                verdict: None,
                line_max,
            };
            h.s.poll_transmit(&mut h.out);
            h.out.clear();
            h
        }

        /// A relay-allowed session past the greeting and EHLO.
        fn ready(cfg: ServerConfig) -> Self {
            let mut h = Self::new(cfg, true);
            h.feed(b"EHLO client.example\r\n");
            h.take();
            h
        }

        fn feed(&mut self, bytes: &[u8]) -> &mut Self {
            self.buf.extend_from_slice(bytes);
            self.pump();
            self
        }

        fn pump(&mut self) {
            loop {
                let n = self.s.handle_input(&self.buf, NOW);
                assert!(n <= self.buf.len());
                self.buf.drain(..n);
                let mut answered = false;
                while let Some(ev) = self.s.poll_event() {
                    answered = true;
                    match ev {
                        Event::StartTls => {
                            self.s.poll_transmit(&mut self.out);
                            self.buf.clear();
                            self.starttls += 1;
                            self.s.tls_established(TlsInfo {
                                version: "TLSv1.3",
                                cipher: "TLS_AES_128_GCM_SHA256".into(),
                            });
                        }
                        Event::Auth {
                            mechanism,
                            authzid,
                            username,
                            password,
                        } => {
                            let ok = username == "alice" && password == "secret";
                            self.auths.push((mechanism, authzid, username, password));
                            self.s.auth_result(ok);
                        }
                        Event::Message(m) => {
                            self.messages.push(m);
                            self.next_id += 1;
                            let v = self.verdict.clone().unwrap_or(Verdict::Accepted {
                                queue_id: self.next_id,
                            });
                            self.s.decide(v);
                        }
                    }
                }
                assert!(!self.s.is_awaiting());
                if self.s.wants_close() || (n == 0 && !answered) || self.buf.is_empty() {
                    break;
                }
            }
            if !self.s.wants_close() {
                // The driver never has to hold more than one line.
                assert!(
                    self.buf.len() < self.line_max,
                    "buffered {}",
                    self.buf.len()
                );
            }
            self.s.poll_transmit(&mut self.out);
        }

        fn take(&mut self) -> String {
            String::from_utf8(mem::take(&mut self.out)).unwrap()
        }

        fn reply(&mut self, bytes: &str) -> String {
            self.feed(bytes.as_bytes());
            self.take()
        }
    }

    fn received(helo: &str, proto: &str, tls: bool, rcpt: Option<&str>) -> String {
        let mut s =
            format!("Received: from {helo} ([192.0.2.7])\r\n\tby mx.example (Sluice) with {proto}");
        if tls {
            s.push_str("\r\n\t(version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256)");
        }
        if let Some(r) = rcpt {
            s.push_str(&format!("\r\n\tfor <{r}>"));
        }
        s.push_str(&format!("; {DATE}\r\n"));
        s
    }

    // ---- greeting, EHLO, HELO ------------------------------------------

    #[test]
    fn greeting() {
        let mut h = Harness::new(config(), false);
        assert_eq!(h.take(), "");
        let mut s = ServerSession::new(Arc::new(config()), peer(false));
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        assert_eq!(out, b"220 mx.example ESMTP Sluice\r\n");
        assert!(!s.wants_close());
        assert!(!s.is_awaiting());
        h.s.poll_transmit(&mut out);
    }

    #[test]
    fn refusing_greeting_closes() {
        let mut s = ServerSession::new_refusing(Arc::new(config()), peer(true), Reply::too_busy());
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        assert_eq!(out, b"421 4.3.2 Too many connections, try again later\r\n");
        assert!(s.wants_close());
        assert_eq!(s.handle_input(b"EHLO x\r\n", NOW), 0);
    }

    #[test]
    fn ehlo_plain() {
        let mut h = Harness::new(config(), true);
        assert_eq!(
            h.reply("EHLO c\r\n"),
            format!("{EHLO_BASE}250 CHUNKING\r\n")
        );
        // A second EHLO is fine.
        assert_eq!(
            h.reply("ehlo c\r\n"),
            format!("{EHLO_BASE}250 CHUNKING\r\n")
        );
    }

    #[test]
    fn ehlo_with_starttls_and_auth_before_and_after_tls() {
        let cfg = ServerConfig {
            offer_starttls: true,
            auth_enabled: true,
            ..config()
        };
        let mut h = Harness::new(cfg, false);
        assert_eq!(
            h.reply("EHLO c\r\n"),
            format!("{EHLO_BASE}250-CHUNKING\r\n250 STARTTLS\r\n")
        );
        assert_eq!(h.reply("STARTTLS\r\n"), "220 2.0.0 Ready to start TLS\r\n");
        assert_eq!(h.starttls, 1);
        assert!(h.s.is_tls());
        assert_eq!(
            h.reply("EHLO c\r\n"),
            format!("{EHLO_BASE}250-CHUNKING\r\n250 AUTH PLAIN LOGIN\r\n")
        );
    }

    #[test]
    fn ehlo_auth_without_tls() {
        let cfg = ServerConfig {
            offer_starttls: true,
            auth_enabled: true,
            auth_without_tls: true,
            ..config()
        };
        let mut h = Harness::new(cfg, false);
        assert_eq!(
            h.reply("EHLO c\r\n"),
            format!("{EHLO_BASE}250-CHUNKING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n")
        );
        // Auth configured but not offered without TLS and no STARTTLS.
        let cfg = ServerConfig {
            auth_enabled: true,
            ..config()
        };
        let mut h = Harness::new(cfg, false);
        assert_eq!(
            h.reply("EHLO c\r\n"),
            format!("{EHLO_BASE}250 CHUNKING\r\n")
        );
        assert_eq!(
            h.reply("AUTH PLAIN\r\n"),
            "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        );
    }

    #[test]
    fn helo_has_no_extensions() {
        let mut h = Harness::new(config(), true);
        assert_eq!(h.reply("HELO c\r\n"), "250 mx.example\r\n");
        assert_eq!(
            h.reply("MAIL FROM:<a@b> SIZE=10\r\n"),
            "555 5.5.4 MAIL FROM/RCPT TO parameters not recognized or not implemented\r\n"
        );
        assert_eq!(
            h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"),
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
        );
        // BDAT is ESMTP-only; its octets are still skipped.
        assert_eq!(
            h.reply("BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n"),
            "503 5.5.1 Error: send EHLO first\r\n250 2.0.0 Ok\r\n"
        );
        assert_eq!(
            h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"),
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        h.reply("hi\r\n.\r\n");
        assert_eq!(h.messages.len(), 1);
        let body = &h.messages[0].body;
        assert!(body.starts_with(received("c", "SMTP", false, Some("c@d")).as_bytes()));
    }

    #[test]
    fn hello_resets_transaction() {
        let mut h = Harness::ready(config());
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
        h.reply("EHLO again\r\n");
        assert_eq!(
            h.reply("RCPT TO:<c@d>\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        assert_eq!(h.reply("MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
    }

    // ---- transactions ----------------------------------------------------

    #[test]
    fn pipelined_transaction_in_one_input() {
        let mut h = Harness::new(config(), true);
        let mut s = ServerSession::new(Arc::new(config()), peer(true));
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        out.clear();
        let input = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n";
        assert_eq!(s.handle_input(input, NOW), input.len());
        s.poll_transmit(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{EHLO_BASE}250 CHUNKING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
                 354 End data with <CR><LF>.<CR><LF>\r\n"
            )
        );
        // Whole session through the harness, data included in the same input.
        let replies = h.reply(
            "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n\
             Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(
            replies,
            format!(
                "{EHLO_BASE}250 CHUNKING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
                 354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 0000000000000001\r\n\
                 221 2.0.0 Bye\r\n"
            )
        );
        assert!(h.s.wants_close());
        let m = &h.messages[0];
        assert_eq!(m.reverse_path, "a@b");
        assert_eq!(m.recipients, ["x@y", "z@y"]);
        assert_eq!(m.helo, "c");
        assert_eq!(m.auth_user, None);
        assert!(!m.eight_bit && !m.smtputf8);
        assert_eq!(
            m.body,
            format!(
                "{}Subject: hi\r\n\r\nbody\r\n",
                received("c", "ESMTP", false, None)
            )
            .as_bytes()
        );
    }

    #[test]
    fn dot_stuffing_and_end_marker() {
        let mut h = Harness::ready(config());
        h.reply("MAIL FROM:<>\r\nRCPT TO:<x@y>\r\nDATA\r\n");
        let r = h.reply("..leading\r\n..\r\n");
        assert_eq!(r, "");
        let r = h.reply("...\r\nmid.dle\r\n. \r\n.x\r\n\r\n.\r\n");
        assert_eq!(r, "250 2.0.0 Ok: queued as 0000000000000001\r\n");
        let m = &h.messages[0];
        assert_eq!(m.reverse_path, "");
        let expected = format!(
            "{}.leading\r\n.\r\n..\r\nmid.dle\r\n \r\nx\r\n\r\n",
            received("client.example", "ESMTP", false, Some("x@y"))
        );
        assert_eq!(m.body, expected.as_bytes());
    }

    #[test]
    fn empty_message() {
        let mut h = Harness::ready(config());
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n");
        assert_eq!(
            h.reply(".\r\n"),
            "250 2.0.0 Ok: queued as 0000000000000001\r\n"
        );
        assert_eq!(
            h.messages[0].body,
            received("client.example", "ESMTP", false, Some("x@y")).as_bytes()
        );
    }

    #[test]
    fn data_split_byte_by_byte() {
        let input = "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nline 1\r\n..two\r\n.\r\nNOOP\r\n";
        let mut whole = Harness::ready(config());
        let expected = whole.reply(input);
        let mut split = Harness::ready(config());
        let mut got = String::new();
        for b in input.bytes() {
            got.push_str(&split.reply(std::str::from_utf8(&[b]).unwrap()));
        }
        assert_eq!(got, expected);
        assert_eq!(split.messages, whole.messages);
        assert!(expected.ends_with("queued as 0000000000000001\r\n250 2.0.0 Ok\r\n"));
    }

    #[test]
    fn sequence_errors() {
        let mut h = Harness::new(config(), true);
        assert_eq!(
            h.reply("MAIL FROM:<a@b>\r\n"),
            "503 5.5.1 Error: send HELO/EHLO first\r\n"
        );
        h.reply("EHLO c\r\n");
        assert_eq!(
            h.reply("RCPT TO:<a@b>\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        assert_eq!(
            h.reply("DATA\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n"
        );
        assert_eq!(h.reply("MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
        assert_eq!(
            h.reply("MAIL FROM:<a@b>\r\n"),
            "503 5.5.1 Error: nested MAIL command\r\n"
        );
        assert_eq!(h.reply("DATA\r\n"), "554 5.5.1 No valid recipients\r\n");
        assert_eq!(h.reply("RSET\r\n"), "250 2.0.0 Ok\r\n");
        assert_eq!(h.reply("MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
        assert_eq!(h.s.error_count(), 5);
    }

    #[test]
    fn simple_commands() {
        let mut h = Harness::new(config(), true);
        assert_eq!(h.reply("NOOP\r\n"), "250 2.0.0 Ok\r\n");
        assert_eq!(h.reply("RSET\r\n"), "250 2.0.0 Ok\r\n");
        assert!(h.reply("HELP\r\n").starts_with("214 2.0.0 "));
        assert!(h.reply("VRFY bob\r\n").starts_with("252 2.0.0 "));
        assert_eq!(
            h.reply("FOO\r\n"),
            "500 5.5.2 Error: command not recognized\r\n"
        );
        assert_eq!(
            h.reply("DATA x\r\n"),
            "501 5.5.4 Syntax error in parameters or arguments\r\n"
        );
        assert_eq!(h.s.error_count(), 2);
    }

    #[test]
    fn quit_closes_and_stops_consuming() {
        let mut s = ServerSession::new(Arc::new(config()), peer(true));
        let input = b"NOOP\r\nQUIT\r\nNOOP\r\n";
        assert_eq!(s.handle_input(input, NOW), 12);
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        assert!(out.ends_with(b"250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"));
        assert!(s.wants_close());
        assert_eq!(s.handle_input(b"NOOP\r\n", NOW), 0);
    }

    #[test]
    fn bad_addresses() {
        let mut h = Harness::ready(config());
        assert_eq!(
            h.reply("MAIL FROM:a@b\r\n"),
            "501 5.1.7 Bad sender address syntax\r\n"
        );
        assert_eq!(h.reply("MAIL FROM: <a@b>\r\n"), "250 2.1.0 Ok\r\n");
        assert_eq!(
            h.reply("RCPT TO:<>\r\n"),
            "501 5.1.3 Bad recipient address syntax\r\n"
        );
        assert_eq!(
            h.reply("RCPT TO:<nodomain>\r\n"),
            "501 5.1.3 Bad recipient address syntax\r\n"
        );
        assert_eq!(h.reply("RCPT TO:<@r1,@r2:u@d>\r\n"), "250 2.1.5 Ok\r\n");
        assert_eq!(
            h.reply("RCPT TO:<u@d> NOTIFY=NEVER\r\n"),
            "555 5.5.4 MAIL FROM/RCPT TO parameters not recognized or not implemented\r\n"
        );
        h.reply("DATA\r\n.\r\n");
        assert_eq!(h.messages[0].recipients, ["u@d"]);
    }

    #[test]
    fn smtputf8_addresses() {
        let mut h = Harness::ready(config());
        assert_eq!(
            h.reply("MAIL FROM:<j\u{f6}rg@b\u{fc}cher.example>\r\n"),
            "553 5.6.7 SMTPUTF8 required for non-ASCII address\r\n"
        );
        assert_eq!(h.reply("MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
        assert_eq!(
            h.reply("RCPT TO:<\u{fc}@d>\r\n"),
            "553 5.6.7 SMTPUTF8 required for non-ASCII address\r\n"
        );
        h.reply("RSET\r\n");
        assert_eq!(
            h.reply("MAIL FROM:<j\u{f6}rg@b\u{fc}cher.example> SMTPUTF8\r\nRCPT TO:<\u{fc}@d>\r\n"),
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
        );
        h.reply("DATA\r\nSubject: \u{e4}\r\n.\r\n");
        let m = &h.messages[0];
        assert!(m.smtputf8 && m.eight_bit);
        assert_eq!(m.recipients, ["\u{fc}@d"]);
    }

    // ---- message content checks ------------------------------------------

    fn data_reply(cfg: ServerConfig, mail: &str, body: &[u8]) -> (String, usize) {
        let mut h = Harness::ready(cfg);
        h.reply(&format!("{mail}\r\nRCPT TO:<x@y>\r\nDATA\r\n"));
        h.feed(body);
        let r = h.take();
        // The session is usable afterwards.
        assert_eq!(h.reply("NOOP\r\n"), "250 2.0.0 Ok\r\n");
        (r, h.messages.len())
    }

    #[test]
    fn bare_lf_and_cr_in_data_are_refused() {
        let refused = "554 5.6.11 Bare LF/CR not allowed in message\r\n";
        let m = "MAIL FROM:<a@b>";
        assert_eq!(
            data_reply(config(), m, b"a\nb\r\n.\r\n"),
            (refused.into(), 0)
        );
        assert_eq!(
            data_reply(config(), m, b"a\rb\r\n.\r\n"),
            (refused.into(), 0)
        );
        assert_eq!(
            data_reply(config(), m, b"a\r\r\n.\r\n"),
            (refused.into(), 0)
        );
        // Smuggling: "\n.\r\n" and ".\n" must not end the data.
        let (r, n) = data_reply(
            config(),
            m,
            b"x\n.\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@x>\r\nDATA\r\n.\n\r\n.\r\n",
        );
        assert_eq!((r.as_str(), n), (refused, 0));
    }

    #[test]
    fn nul_in_data_is_refused() {
        let (r, n) = data_reply(config(), "MAIL FROM:<a@b>", b"a\0b\r\n.\r\n");
        assert_eq!(
            (r.as_str(), n),
            ("554 5.6.0 Message contains NUL characters\r\n", 0)
        );
    }

    #[test]
    fn eight_bit_needs_declaration() {
        let body = "caf\u{e9}\r\n.\r\n".as_bytes();
        let (r, n) = data_reply(config(), "MAIL FROM:<a@b>", body);
        assert_eq!(
            (r.as_str(), n),
            ("554 5.6.1 8-bit data requires BODY=8BITMIME\r\n", 0)
        );
        let ok = "250 2.0.0 Ok: queued as 0000000000000001\r\n";
        let (r, n) = data_reply(config(), "MAIL FROM:<a@b> BODY=8BITMIME", body);
        assert_eq!((r.as_str(), n), (ok, 1));
        let (r, n) = data_reply(config(), "MAIL FROM:<a@b> SMTPUTF8", body);
        assert_eq!((r.as_str(), n), (ok, 1));
        let lax = ServerConfig {
            allow_undeclared_8bit: true,
            ..config()
        };
        let (r, n) = data_reply(lax, "MAIL FROM:<a@b> BODY=7BIT", body);
        assert_eq!((r.as_str(), n), (ok, 1));
    }

    #[test]
    fn size_limits() {
        let mut h = Harness::ready(config());
        assert_eq!(
            h.reply("MAIL FROM:<a@b> SIZE=10001\r\n"),
            "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        );
        assert_eq!(
            h.reply("MAIL FROM:<a@b> SIZE=10000\r\n"),
            "250 2.1.0 Ok\r\n"
        );
        h.reply("RCPT TO:<x@y>\r\nDATA\r\n");
        let line = format!("{}\r\n", "x".repeat(98));
        for _ in 0..100 {
            assert_eq!(h.reply(&line), "");
        }
        // Exactly at the limit is fine.
        assert_eq!(
            h.reply(".\r\n"),
            "250 2.0.0 Ok: queued as 0000000000000001\r\n"
        );
        // One more line over, without SIZE: consumed, body dropped, 552 at the end.
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n");
        for _ in 0..101 {
            assert_eq!(h.reply(&line), "");
        }
        let held = h.s.txn.as_ref().unwrap().body.capacity();
        assert_eq!(held, 0, "the body is dropped once over the limit");
        assert_eq!(
            h.reply(".\r\n"),
            "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        );
        assert_eq!(h.messages.len(), 1);
        // Size rejections are policy, not client errors.
        assert_eq!(h.s.error_count(), 0);
    }

    #[test]
    fn max_recipients() {
        let mut h = Harness::ready(config());
        let r = h.reply(
            "MAIL FROM:<a@b>\r\nRCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nRCPT TO:<3@y>\r\nRCPT TO:<4@y>\r\nDATA\r\n.\r\n",
        );
        assert_eq!(
            r,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n\
             452 4.5.3 Too many recipients\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
             250 2.0.0 Ok: queued as 0000000000000001\r\n"
        );
        assert_eq!(h.messages[0].recipients, ["1@y", "2@y", "3@y"]);
    }

    #[test]
    fn long_command_line() {
        let mut h = Harness::ready(config());
        // 999 octets + CRLF = 1001 > 1000.
        let long = format!("NOOP {}\r\n", "x".repeat(994));
        assert_eq!(long.len(), 1001);
        // Fed in pieces: the driver never holds more than a line.
        for piece in long.as_bytes().chunks(300) {
            h.feed(piece);
        }
        assert_eq!(h.take(), "500 5.5.2 Line too long\r\n");
        // Exactly 1000 is fine.
        let ok = format!("NOOP {}\r\n", "x".repeat(993));
        assert_eq!(h.reply(&ok), "250 2.0.0 Ok\r\n");
        // A long line ending in a bare LF, then a normal command.
        let long = format!("{}\nNOOP\r\n", "y".repeat(5000));
        assert_eq!(
            h.reply(&long),
            "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"
        );
    }

    #[test]
    fn long_data_line() {
        let mut h = Harness::ready(config());
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n");
        let long = format!("{}\r\n", "z".repeat(1500));
        for piece in long.as_bytes().chunks(7) {
            assert_eq!(h.reply(std::str::from_utf8(piece).unwrap()), "");
        }
        assert_eq!(
            h.reply("short\r\n.\r\nNOOP\r\n"),
            "554 5.6.0 Message contains a line longer than 1000 octets\r\n250 2.0.0 Ok\r\n"
        );
        assert!(h.messages.is_empty());
        // A long line right before the end marker, the CR and LF split.
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n");
        h.feed("q".repeat(2000).as_bytes());
        h.feed(b"\r");
        h.feed(b"\n.\r\n");
        assert_eq!(
            h.take(),
            "554 5.6.0 Message contains a line longer than 1000 octets\r\n"
        );
    }

    #[test]
    fn long_data_line_with_cr_at_the_window_edge() {
        // 999 octets + CRLF: the window ends on the CR, the LF comes next.
        let mut h = Harness::ready(config());
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n");
        let line = format!("{}\r\n", "w".repeat(999));
        assert_eq!(
            h.reply(&format!("{line}.\r\nNOOP\r\n")),
            "554 5.6.0 Message contains a line longer than 1000 octets\r\n250 2.0.0 Ok\r\n"
        );
        // Same for a command line.
        assert_eq!(
            h.reply(&format!("{line}NOOP\r\n")),
            "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"
        );
    }

    #[test]
    fn bare_lf_and_nul_in_commands() {
        let mut h = Harness::ready(config());
        assert_eq!(h.reply("NOOP\n"), "500 5.5.2 Bare LF not allowed\r\n");
        assert_eq!(
            h.reply("NO\0OP\r\n"),
            "500 5.5.2 Invalid character in command\r\n"
        );
        assert_eq!(
            h.reply("NOOP\rx\r\n"),
            "500 5.5.2 Invalid character in command\r\n"
        );
        assert_eq!(h.reply("NOOP\r\n"), "250 2.0.0 Ok\r\n");
    }

    // ---- relay control ------------------------------------------------------

    #[test]
    fn relay_denied_allowed_and_authenticated() {
        let mut h = Harness::new(config(), false);
        h.reply("EHLO c\r\n");
        let r = h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n");
        assert_eq!(
            r,
            "250 2.1.0 Ok\r\n554 5.7.1 <x@y>: Relay access denied\r\n\
             554 5.7.1 <z@y>: Relay access denied\r\n554 5.5.1 No valid recipients\r\n"
        );
        // Denials count once per transaction, plus the DATA error.
        assert_eq!(h.s.error_count(), 2);

        let mut h = Harness::ready(config());
        assert_eq!(
            h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n"),
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
        );

        let cfg = ServerConfig {
            auth_enabled: true,
            auth_without_tls: true,
            ..config()
        };
        let mut h = Harness::new(cfg, false);
        h.reply("EHLO c\r\n");
        let r = h.reply(&format!("AUTH PLAIN {}\r\n", plain("alice", "secret")));
        assert_eq!(r, "235 2.7.0 Authentication successful\r\n");
        assert_eq!(h.s.auth_user(), Some("alice"));
        let r = h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n.\r\n");
        assert!(r.contains("250 2.1.5 Ok\r\n"));
        let m = &h.messages[0];
        assert_eq!(m.auth_user.as_deref(), Some("alice"));
        assert!(m
            .body
            .starts_with(received("c", "ESMTPA", false, Some("x@y")).as_bytes()));
    }

    // ---- AUTH -------------------------------------------------------------

    fn auth_harness() -> Harness {
        let cfg = ServerConfig {
            auth_enabled: true,
            auth_without_tls: true,
            ..config()
        };
        let mut h = Harness::new(cfg, false);
        h.reply("EHLO c\r\n");
        h
    }

    #[test]
    fn auth_plain_flows() {
        let mut h = auth_harness();
        assert_eq!(h.reply("AUTH PLAIN\r\n"), "334 \r\n");
        assert_eq!(
            h.reply(&format!("{}\r\n", plain("alice", "wrong"))),
            "535 5.7.8 Authentication credentials invalid\r\n"
        );
        assert_eq!(h.s.auth_user(), None);
        assert_eq!(h.reply("AUTH PLAIN\r\n"), "334 \r\n");
        assert_eq!(
            h.reply(&format!("{}\r\n", plain("alice", "secret"))),
            "235 2.7.0 Authentication successful\r\n"
        );
        assert_eq!(
            h.auths,
            [
                (
                    AuthMechanism::Plain,
                    String::new(),
                    "alice".into(),
                    "wrong".into()
                ),
                (
                    AuthMechanism::Plain,
                    String::new(),
                    "alice".into(),
                    "secret".into()
                ),
            ]
        );
        assert_eq!(
            h.reply("AUTH PLAIN\r\n"),
            "503 5.5.1 Error: already authenticated\r\n"
        );
        // The session keeps no password.
        assert!(h.s.pending_user.is_none());
    }

    #[test]
    fn auth_plain_authzid_and_bad_data() {
        let mut h = auth_harness();
        let resp = base64::engine::general_purpose::STANDARD.encode("admin\0alice\0secret");
        h.reply(&format!("AUTH PLAIN {resp}\r\n"));
        assert_eq!(h.auths[0].1, "admin");
        let mut h = auth_harness();
        assert_eq!(
            h.reply("AUTH PLAIN !!!\r\n"),
            "501 5.5.2 Cannot decode response\r\n"
        );
        assert_eq!(
            h.reply("AUTH PLAIN =\r\n"),
            "501 5.5.2 Cannot decode response\r\n"
        );
        let no_nul = b64("alicesecret");
        assert_eq!(
            h.reply(&format!("AUTH PLAIN {no_nul}\r\n")),
            "501 5.5.2 Cannot decode response\r\n"
        );
        // Unpadded base64 is accepted.
        let unpadded = plain("alice", "secret").trim_end_matches('=').to_string();
        assert_eq!(
            h.reply(&format!("AUTH PLAIN {unpadded}\r\n")),
            "235 2.7.0 Authentication successful\r\n"
        );
    }

    #[test]
    fn auth_login_flows() {
        let mut h = auth_harness();
        assert_eq!(h.reply("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
        assert_eq!(
            h.reply(&format!("{}\r\n", b64("alice"))),
            "334 UGFzc3dvcmQ6\r\n"
        );
        assert_eq!(
            h.reply(&format!("{}\r\n", b64("secret"))),
            "235 2.7.0 Authentication successful\r\n"
        );
        assert_eq!(
            h.auths[0],
            (
                AuthMechanism::Login,
                String::new(),
                "alice".into(),
                "secret".into()
            )
        );

        // Initial response carries the username.
        let mut h = auth_harness();
        assert_eq!(
            h.reply(&format!("AUTH LOGIN {}\r\n", b64("alice"))),
            "334 UGFzc3dvcmQ6\r\n"
        );
        assert_eq!(
            h.reply(&format!("{}\r\n", b64("nope"))),
            "535 5.7.8 Authentication credentials invalid\r\n"
        );
    }

    #[test]
    fn auth_cancel_and_errors() {
        let mut h = auth_harness();
        assert_eq!(h.reply("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
        assert_eq!(h.reply("*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
        assert_eq!(h.reply("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
        assert_eq!(
            h.reply(&format!("{}\r\n", b64("alice"))),
            "334 UGFzc3dvcmQ6\r\n"
        );
        assert_eq!(h.reply("*\r\n"), "501 5.0.0 Authentication cancelled\r\n");
        assert_eq!(h.reply("AUTH PLAIN\r\n"), "334 \r\n");
        assert_eq!(
            h.reply("not base64!\r\n"),
            "501 5.5.2 Cannot decode response\r\n"
        );
        // Auth lines are not commands.
        assert_eq!(h.reply("AUTH PLAIN\r\n"), "334 \r\n");
        assert_eq!(h.reply("QUIT\r\n"), "501 5.5.2 Cannot decode response\r\n");
        assert!(!h.s.wants_close());
        assert_eq!(
            h.reply("AUTH CRAM-MD5\r\n"),
            "504 5.5.4 Unrecognized authentication type\r\n"
        );
        assert_eq!(h.reply("MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
        assert_eq!(
            h.reply("AUTH PLAIN\r\n"),
            "503 5.5.1 Error: MAIL transaction in progress\r\n"
        );
        assert!(h.auths.is_empty());

        let mut h = Harness::ready(config());
        assert_eq!(
            h.reply("AUTH PLAIN\r\n"),
            "503 5.5.1 Error: authentication not enabled\r\n"
        );

        let cfg = ServerConfig {
            auth_enabled: true,
            auth_without_tls: true,
            ..config()
        };
        let mut h = Harness::new(cfg, false);
        h.reply("HELO c\r\n");
        assert_eq!(
            h.reply("AUTH PLAIN\r\n"),
            "503 5.5.1 Error: send EHLO first\r\n"
        );
    }

    #[test]
    fn auth_event_debug_hides_password() {
        let mut s = ServerSession::new(
            Arc::new(ServerConfig {
                auth_enabled: true,
                auth_without_tls: true,
                ..config()
            }),
            peer(false),
        );
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {}\r\nNOOP\r\n",
            plain("alice", "hunter2")
        );
        let n = s.handle_input(input.as_bytes(), NOW);
        assert_eq!(n, input.len() - 6, "stops right after the AUTH line");
        assert!(s.is_awaiting());
        assert_eq!(s.handle_input(b"NOOP\r\n", NOW), 0);
        let ev = s.poll_event().unwrap();
        let dbg = format!("{ev:?}");
        assert!(dbg.contains("alice") && !dbg.contains("hunter2"), "{dbg}");
        s.auth_result(true);
        assert!(!s.is_awaiting());
    }

    // ---- STARTTLS -----------------------------------------------------------

    #[test]
    fn starttls_stops_consumption() {
        let cfg = ServerConfig {
            offer_starttls: true,
            ..config()
        };
        let mut s = ServerSession::new(Arc::new(cfg), peer(true));
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        out.clear();
        let head = b"EHLO c\r\nSTARTTLS\r\n";
        let mut input = head.to_vec();
        input.extend_from_slice(b"MAIL FROM:<injected@x>\r\n");
        assert_eq!(s.handle_input(&input, NOW), head.len());
        assert!(matches!(s.poll_event(), Some(Event::StartTls)));
        assert!(s.is_awaiting());
        s.poll_transmit(&mut out);

        assert!(out.ends_with(b"250 STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n"));
        // Nothing is processed until the handshake is reported.
        assert_eq!(s.handle_input(b"NOOP\r\n", NOW), 0);
        s.tls_established(TlsInfo {
            version: "TLSv1.3",
            cipher: "TLS_AES_128_GCM_SHA256".into(),
        });
        assert!(!s.is_awaiting());
        out.clear();
        // The plaintext EHLO is forgotten; no new greeting.
        s.poll_transmit(&mut out);
        assert!(out.is_empty());
        s.handle_input(b"MAIL FROM:<a@b>\r\nSTARTTLS\r\n", NOW);
        s.poll_transmit(&mut out);
        assert_eq!(
            out,
            b"503 5.5.1 Error: send HELO/EHLO first\r\n503 5.5.1 Error: TLS already active\r\n"
        );
    }

    #[test]
    fn starttls_not_offered_or_in_transaction() {
        let mut h = Harness::ready(config());
        assert_eq!(
            h.reply("STARTTLS\r\n"),
            "502 5.5.1 Error: command not implemented\r\n"
        );
        let mut h = Harness::ready(ServerConfig {
            offer_starttls: true,
            ..config()
        });
        h.reply("MAIL FROM:<a@b>\r\n");
        assert_eq!(
            h.reply("STARTTLS\r\n"),
            "503 5.5.1 Error: MAIL transaction in progress\r\n"
        );
        assert_eq!(h.starttls, 0);
    }

    #[test]
    fn received_header_with_tls_and_auth() {
        let cfg = ServerConfig {
            offer_starttls: true,
            auth_enabled: true,
            ..config()
        };
        let mut h = Harness::new(cfg, false);
        h.reply("EHLO c\r\nSTARTTLS\r\n");
        h.reply("EHLO c2\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n");
        assert!(h.take().is_empty());
        h.reply("RSET\r\nDATA\r\n");
        h.reply(&format!("AUTH PLAIN {}\r\n", plain("alice", "secret")));
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nhi\r\n.\r\n");
        assert_eq!(
            h.messages[0].body,
            format!("{}hi\r\n", received("c2", "ESMTPSA", true, Some("x@y"))).as_bytes()
        );
        let mut h = Harness::new(
            ServerConfig {
                offer_starttls: true,
                ..config()
            },
            true,
        );
        h.reply(
            "EHLO c\r\nSTARTTLS\r\nEHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n.\r\n",
        );
        h.reply("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n.\r\n");
        assert_eq!(
            h.messages[0].body,
            received("c", "ESMTPS", true, Some("x@y")).as_bytes()
        );
    }

    #[test]
    fn ipv6_peer_in_received() {
        for (remote, text) in [
            ("[2001:db8::7]:4000", "2001:db8::7"),
            ("[::ffff:203.0.113.9]:4000", "203.0.113.9"),
            ("198.51.100.77:4000", "198.51.100.77"),
        ] {
            let mut s = ServerSession::new(
                Arc::new(config()),
                PeerInfo {
                    remote: remote.parse().unwrap(),
                    local: "[2001:db8::1]:25".parse().unwrap(),
                    relay_allowed: true,
                },
            );
            s.handle_input(
                b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n.\r\n",
                NOW,
            );
            let Some(Event::Message(m)) = s.poll_event() else {
                panic!()
            };
            let expected = format!("Received: from c ([{text}])\r\n");
            assert!(m.body.starts_with(expected.as_bytes()), "{remote}");
        }
    }

    // ---- errors, timeouts, admission -----------------------------------------

    #[test]
    fn too_many_errors() {
        let mut s = ServerSession::new(
            Arc::new(ServerConfig {
                max_errors: 3,
                ..config()
            }),
            peer(true),
        );
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        out.clear();
        let input = b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n";
        assert_eq!(s.handle_input(input, NOW), 15);
        s.poll_transmit(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n\
             500 5.5.2 Error: command not recognized\r\n421 4.7.0 mx.example Too many errors\r\n"
        );
        assert!(s.wants_close());
        assert_eq!(s.handle_input(b"NOOP\r\n", NOW), 0);
    }

    #[test]
    fn timeout_and_progress() {
        let mut h = Harness::ready(config());
        assert_eq!(h.s.timeout(), Duration::from_secs(300));
        let p0 = h.s.progress();
        h.feed(b"NO");
        assert_eq!(h.s.progress(), p0, "partial lines are not progress");
        h.feed(b"OP\r\n");
        assert_eq!(h.s.progress(), p0 + 1);
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n");
        assert_eq!(h.s.timeout(), Duration::from_secs(180));
        let p1 = h.s.progress();
        h.feed(b"a\r\nb\r\n");
        assert_eq!(h.s.progress(), p1 + 2);
        h.s.handle_timeout();
        assert_eq!(h.take(), "");
        let mut out = Vec::new();
        h.s.poll_transmit(&mut out);
        assert_eq!(out, b"421 4.4.2 mx.example Error: timeout exceeded\r\n");
        assert!(h.s.wants_close());
        assert_eq!(h.s.handle_input(b".\r\n", NOW), 0);
        assert!(h.messages.is_empty());
    }

    #[test]
    fn nothing_before_hello_is_progress_and_junk_is_capped() {
        let cfg = ServerConfig {
            max_junk_commands: 3,
            ..config()
        };
        let mut h = Harness::new(cfg, true);
        h.take();
        let p0 = h.s.progress();
        h.reply("NOOP\r\nRSET\r\nBOGUS\r\n");
        assert_eq!(h.s.progress(), p0, "no progress before HELO/EHLO");
        // EHLO is the third junk command, and progress.
        h.reply("EHLO c\r\n");
        assert_eq!(h.s.progress(), p0 + 1);
        // A message's data resets the count.
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n.\r\n");
        assert_eq!(h.messages.len(), 1);
        assert_eq!(
            h.reply("NOOP\r\nVRFY x\r\nHELP\r\n")
                .matches("\r\n")
                .count(),
            3
        );
        assert_eq!(
            h.reply("RSET\r\nNOOP\r\n"),
            "421 4.7.0 mx.example Too many commands without a transaction\r\n"
        );
        assert!(h.s.wants_close());
    }

    #[test]
    fn only_a_whole_message_resets_the_junk_count() {
        let cfg = ServerConfig {
            max_junk_commands: 4,
            ..config()
        };
        // MAIL, RCPT and a `BDAT 0` without LAST move no message: looping
        // them between NOOPs does not escape the cap.
        let mut h = Harness::ready(cfg.clone());
        let round = "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 0\r\nNOOP\r\nNOOP\r\nRSET\r\n";
        assert!(!h.reply(round).contains("421"));
        let r = h.reply(round);
        assert!(
            r.ends_with("421 4.7.0 mx.example Too many commands without a transaction\r\n"),
            "{r}"
        );
        assert!(h.s.wants_close());
        assert!(h.messages.is_empty());

        // `BDAT ... LAST` ends a message, accepted or refused: that resets.
        let mut h = Harness::ready(cfg.clone());
        for body in ["Subject: x\r\n\r\nok\r\n", "bare\rcr\r\n"] {
            h.reply("NOOP\r\nNOOP\r\nNOOP\r\n");
            h.reply(&format!(
                "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT {} LAST\r\n{body}",
                body.len()
            ));
        }
        assert_eq!(h.messages.len(), 1);
        assert_eq!(
            h.reply("NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
                .matches("250 ")
                .count(),
            4
        );
        assert!(h.reply("NOOP\r\n").starts_with("421 4.7.0"));
    }

    #[test]
    fn auth_answers_and_lifetime() {
        let cfg = Arc::new(ServerConfig {
            auth_enabled: true,
            auth_without_tls: true,
            ..config()
        });
        let auth = format!("EHLO c\r\nAUTH PLAIN {}\r\n", plain("u", "p"));
        let run = |answer: AuthAnswer| {
            let mut s = ServerSession::new(cfg.clone(), peer(false));
            let n = s.handle_input(auth.as_bytes(), NOW);
            assert_eq!(n, auth.len());
            assert!(matches!(s.poll_event(), Some(Event::Auth { .. })));
            s.auth_answer(answer);
            let mut out = Vec::new();
            s.poll_transmit(&mut out);
            let text = String::from_utf8(out).unwrap();
            let last = text.lines().last().unwrap_or_default().to_string();
            (last, s.wants_close(), s.error_count())
        };
        assert_eq!(
            run(AuthAnswer::Unavailable),
            (
                "454 4.7.0 Temporary authentication failure".into(),
                false,
                1
            )
        );
        assert_eq!(
            run(AuthAnswer::LockedOut),
            (
                "421 4.7.0 mx.example Too many failed authentications, try again later".into(),
                true,
                0
            )
        );
        assert_eq!(
            run(AuthAnswer::Rejected),
            (
                "535 5.7.8 Authentication credentials invalid".into(),
                false,
                1
            )
        );
        let mut h = Harness::ready(config());
        h.feed(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nhalf a mess");
        h.take();
        h.s.expire();
        let mut out = Vec::new();
        h.s.poll_transmit(&mut out);
        assert_eq!(
            out,
            b"421 4.4.2 mx.example Error: session lifetime exceeded\r\n"
        );
        assert!(h.s.wants_close());
        assert_eq!(h.s.handle_input(b"age\r\n.\r\n", NOW), 0);
        assert!(h.messages.is_empty());
    }

    #[test]
    fn repeated_auth_while_unavailable_reaches_the_error_limit() {
        let cfg = Arc::new(ServerConfig {
            auth_enabled: true,
            auth_without_tls: true,
            max_errors: 3,
            ..config()
        });
        let mut s = ServerSession::new(cfg, peer(false));
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        s.handle_input(b"EHLO c\r\n", NOW);
        s.poll_transmit(&mut out);
        let auth = format!("AUTH PLAIN {}\r\n", plain("u", "p"));
        let mut answers = Vec::new();
        for _ in 0..3 {
            out.clear();
            assert_eq!(s.handle_input(auth.as_bytes(), NOW), auth.len());
            assert!(matches!(s.poll_event(), Some(Event::Auth { .. })));
            s.auth_answer(AuthAnswer::Unavailable);
            s.poll_transmit(&mut out);
            answers.push(String::from_utf8(out.clone()).unwrap());
        }
        assert_eq!(answers[0], "454 4.7.0 Temporary authentication failure\r\n");
        assert_eq!(
            answers[2],
            "454 4.7.0 Temporary authentication failure\r\n\
             421 4.7.0 mx.example Too many errors\r\n"
        );
        assert!(s.wants_close());
    }

    #[test]
    fn bdat_progress_ticks_inside_big_chunks() {
        let mut h = Harness::ready(ServerConfig {
            max_message_size: 1 << 20,
            ..config()
        });
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 200000\r\n");
        assert_eq!(h.s.timeout(), Duration::from_secs(180));
        let p = h.s.progress();
        h.feed(&vec![b'a'; 70_000]);
        assert_eq!(h.s.progress(), p + 1);
        h.feed(&[b'a'; 10]);
        assert_eq!(h.s.progress(), p + 1);
    }

    #[test]
    fn admission_busy() {
        let mut h = Harness::ready(config());
        h.s.set_admission(Admission::Busy);
        assert_eq!(
            h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n"),
            "452 4.3.1 Insufficient system storage, try again later\r\n\
             503 5.5.1 Error: need MAIL command\r\n"
        );
        h.s.set_admission(Admission::Open);
        assert_eq!(h.reply("MAIL FROM:<a@b>\r\n"), "250 2.1.0 Ok\r\n");
    }

    #[test]
    fn a_pipelining_client_refused_while_busy_is_not_counted_as_erring() {
        let mut h = Harness::ready(ServerConfig {
            max_errors: 3,
            ..config()
        });
        h.s.set_admission(Admission::Busy);
        let txn = "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nBDAT 2 LAST\r\nhi";
        for _ in 0..5 {
            let r = h.reply(txn);
            assert!(r.starts_with("452 4.3.1"), "{r}");
            assert!(!r.contains("421"), "{r}");
        }
        assert_eq!(h.s.error_count(), 0);
        // Without a refused MAIL, the same 503s are errors.
        h.s.set_admission(Admission::Open);
        let r = h.reply("RCPT TO:<x@y>\r\nRCPT TO:<x@y>\r\nRCPT TO:<x@y>\r\n");
        assert!(r.contains("421 4.7.0"), "{r}");
        assert!(h.s.wants_close());
    }

    #[test]
    fn rejected_verdict_and_transaction_reset() {
        let mut h = Harness::ready(config());
        h.verdict = Some(Verdict::Rejected(Reply::new(
            451,
            Some((4, 3, 0)),
            "Queue write failed\nTry later",
        )));
        let r = h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n.\r\nRCPT TO:<x@y>\r\n");
        assert!(r.ends_with(
            "354 End data with <CR><LF>.<CR><LF>\r\n451-4.3.0 Queue write failed\r\n\
             451 4.3.0 Try later\r\n503 5.5.1 Error: need MAIL command\r\n"
        ));
        assert_eq!(h.messages.len(), 1);
    }

    #[test]
    fn answers_when_not_awaiting_are_ignored() {
        let mut h = Harness::ready(config());
        h.s.decide(Verdict::Accepted { queue_id: 1 });
        h.s.auth_result(true);
        assert_eq!(h.s.auth_user(), None);
        assert_eq!(h.take(), "");
        let mut out = Vec::new();
        h.s.poll_transmit(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn queue_id_is_16_hex_digits() {
        let mut s = ServerSession::new(Arc::new(config()), peer(true));
        s.handle_input(
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n.\r\n",
            NOW,
        );
        assert!(s.poll_event().is_some());
        s.decide(Verdict::Accepted {
            queue_id: 0x0123_4567_89AB_CDEF,
        });
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        assert!(out.ends_with(b"250 2.0.0 Ok: queued as 0123456789ABCDEF\r\n"));
    }

    // ---- BDAT ---------------------------------------------------------------

    #[test]
    fn bdat_basic_and_split() {
        let input =
            "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 7\r\nhello\r\nBDAT 5 LAST\r\n.\r\n\r\nNOOP\r\n";
        let mut whole = Harness::ready(config());
        let r = whole.reply(input);
        assert_eq!(
            r,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 7 octets received\r\n\
             250 2.0.0 Ok: queued as 0000000000000001\r\n250 2.0.0 Ok\r\n"
        );
        assert_eq!(
            whole.messages[0].body,
            format!(
                "{}hello\r\n.\r\n\r\n",
                received("client.example", "ESMTP", false, Some("x@y"))
            )
            .as_bytes()
        );
        let mut split = Harness::ready(config());
        let mut got = String::new();
        for b in input.bytes() {
            got.push_str(&split.reply(std::str::from_utf8(&[b]).unwrap()));
        }
        assert_eq!(got, r);
        assert_eq!(split.messages, whole.messages);
    }

    #[test]
    fn pipelined_transactions_await_their_verdicts_with_replies_in_order() {
        let mut s = ServerSession::new(Arc::new(config()), peer(true));
        let mut out = Vec::new();
        s.handle_input(b"EHLO c\r\n", NOW);
        s.poll_transmit(&mut out);
        out.clear();
        let txn =
            |rcpt: &str| format!("MAIL FROM:<a@b>\r\nRCPT TO:<{rcpt}@y>\r\nBDAT 2 LAST\r\nhi");
        let input = format!("{}{}{}NOOP\r\n", txn("one"), txn("two"), txn("three"));
        let mut pos = 0;
        let mut ids = Vec::new();
        while pos < input.len() {
            let n = s.handle_input(&input.as_bytes()[pos..], NOW);
            pos += n;
            match s.poll_event() {
                Some(Event::Message(m)) => ids.push(m.recipients[0].clone()),
                other => assert!(n > 0, "stuck at {pos}: {other:?}"),
            }
        }
        // All three messages came out before any verdict was given.
        assert_eq!(ids, ["one@y", "two@y", "three@y"]);
        assert_eq!(s.pending_verdicts(), 3);
        assert!(s.is_awaiting() && s.takes_input());
        s.poll_transmit(&mut out);
        assert_eq!(
            out, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n",
            "held at the first verdict"
        );
        out.clear();
        s.decide(Verdict::Accepted { queue_id: 0xA });
        s.poll_transmit(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "250 2.0.0 Ok: queued as 000000000000000A\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
        );
        out.clear();
        s.decide(Verdict::Rejected(Reply::new(451, Some((4, 3, 0)), "later")));
        s.decide(Verdict::Accepted { queue_id: 0xC });
        assert!(!s.is_awaiting());
        s.poll_transmit(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "451 4.3.0 later\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
             250 2.0.0 Ok: queued as 000000000000000C\r\n250 2.0.0 Ok\r\n"
        );
    }

    #[test]
    fn replies_sent_up_to_a_pending_verdict_keep_it_in_place() {
        let mut s = ServerSession::new(Arc::new(config()), peer(true));
        let mut out = Vec::new();
        s.handle_input(
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 1 LAST\r\nx",
            NOW,
        );
        assert!(matches!(s.poll_event(), Some(Event::Message(_))));
        // Everything before the verdict goes out; the verdict is next.
        s.poll_transmit(&mut out);
        assert!(out.ends_with(b"250 2.1.5 Ok\r\n"));
        out.clear();
        s.handle_input(b"NOOP\r\n", NOW);
        s.poll_transmit(&mut out);
        assert!(out.is_empty(), "held behind the verdict");
        s.decide(Verdict::Accepted { queue_id: 1 });
        s.poll_transmit(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "250 2.0.0 Ok: queued as 0000000000000001\r\n250 2.0.0 Ok\r\n"
        );
    }

    #[test]
    fn pending_verdicts_are_bounded() {
        let mut s = ServerSession::new(Arc::new(config()), peer(true));
        s.handle_input(b"EHLO c\r\n", NOW);
        let one = "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 1 LAST\r\nx";
        let input = one.repeat(MAX_PENDING_VERDICTS + 5);
        let mut pos = 0;
        let mut events = 0;
        loop {
            let n = s.handle_input(&input.as_bytes()[pos..], NOW);
            pos += n;
            if s.poll_event().is_some() {
                events += 1;
            } else if n == 0 {
                break;
            }
        }
        assert_eq!(events, MAX_PENDING_VERDICTS);
        assert!(!s.takes_input());
        assert_eq!(s.handle_input(&input.as_bytes()[pos..], NOW), 0);
        s.decide(Verdict::Accepted { queue_id: 1 });
        assert!(s.handle_input(&input.as_bytes()[pos..], NOW) > 0);
    }

    #[test]
    fn bdat_zero_last_and_data_after_bdat() {
        let mut h = Harness::ready(config());
        let r = h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 0 LAST\r\n");
        assert!(r.ends_with("250 2.0.0 Ok: queued as 0000000000000001\r\n"));
        let r = h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 3\r\nabcDATA\r\nRCPT TO:<z@y>\r\nBDAT 0 LAST\r\n");
        assert_eq!(
            r,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n\
             503 5.5.1 Error: DATA not allowed after BDAT\r\n\
             503 5.5.1 Error: RCPT not allowed after BDAT\r\n\
             250 2.0.0 Ok: queued as 0000000000000002\r\n"
        );
        assert!(h.messages[1].body.ends_with(b"abc"));
    }

    #[test]
    fn failed_bdat_consumes_its_octets() {
        let mut h = Harness::ready(config());
        // No transaction: 503, octets skipped (they look like commands).
        assert_eq!(
            h.reply("BDAT 6\r\nQUIT\r\nNOOP\r\n"),
            "503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n"
        );
        // Without recipients.
        assert_eq!(
            h.reply("MAIL FROM:<a@b>\r\nBDAT 6 LAST\r\nQUIT\r\n"),
            "250 2.1.0 Ok\r\n503 5.5.1 Error: need RCPT command\r\n"
        );
        // Too big: 552, transaction aborted, later chunks 503, all skipped.
        let big = "x".repeat(10_001);
        let r = h.reply(&format!(
            "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 10001\r\n{big}BDAT 4 LAST\r\nQUITRSET\r\nMAIL FROM:<a@b>\r\n"
        ));
        assert_eq!(
            r,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
             552 5.3.4 Message size exceeds fixed maximum message size\r\n\
             503 5.5.1 Error: need MAIL command\r\n250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n"
        );
        assert!(!h.s.wants_close());
        // A chunk that only overflows together with the earlier ones.
        h.reply("RCPT TO:<x@y>\r\n");
        let lines = "a".repeat(98) + "\r\n";
        assert_eq!(
            h.reply(&format!("BDAT 6000\r\n{}", lines.repeat(60))),
            "250 2.0.0 6000 octets received\r\n"
        );
        assert_eq!(
            h.reply(&format!("BDAT 6000 LAST\r\n{}", lines.repeat(60))),
            "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        );
        assert!(h.messages.is_empty());
    }

    #[test]
    fn bdat_huge_announced_size_is_streamed() {
        let mut h = Harness::ready(config());
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n");
        assert_eq!(
            h.reply("BDAT 18446744073709551615\r\n"),
            "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        );
        for _ in 0..10 {
            h.feed(&[b'z'; 4096]);
            assert!(h.buf.is_empty());
        }
        assert_eq!(h.take(), "");
    }

    /// The reply to `body` sent as BDAT chunks cut at `cuts`, and whether a
    /// message was queued; the session must stay usable.
    fn bdat_reply(cfg: ServerConfig, body: &[u8], cuts: &[usize]) -> (String, usize) {
        let mut h = Harness::ready(cfg);
        h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n");
        let mut last = 0;
        let mut replies = String::new();
        let ends: Vec<usize> = cuts.iter().copied().chain([body.len()]).collect();
        for (i, &end) in ends.iter().enumerate() {
            let chunk = &body[last..end];
            let kw = if i + 1 == ends.len() { " LAST" } else { "" };
            h.feed(format!("BDAT {}{kw}\r\n", chunk.len()).as_bytes());
            h.feed(chunk);
            replies.push_str(&h.take());
            last = end;
        }
        assert_eq!(h.reply("NOOP\r\n"), "250 2.0.0 Ok\r\n");
        (replies, h.messages.len())
    }

    /// Every end-of-data look-alike, as message content.
    const LOOK_ALIKES: [&[u8]; 5] = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n"];

    #[test]
    fn bdat_content_is_held_to_the_data_rules() {
        let refused = "554 5.6.11 Bare LF/CR not allowed in message\r\n";
        for look in LOOK_ALIKES {
            let body = [&b"Subject: x\r\n\r\na"[..], look, b"b\r\n"].concat();
            // In one chunk, and cut at every place (a CR and its LF apart).
            let (r, n) = bdat_reply(config(), &body, &[]);
            assert_eq!((r.as_str(), n), (refused, 0), "{look:?}");
            for cut in 1..body.len() {
                let (r, n) = bdat_reply(config(), &body, &[cut]);
                assert!(r.contains(refused), "{look:?} cut {cut}: {r}");
                assert_eq!(n, 0);
            }
            // DATA refuses the same content.
            let mut data = body.clone();
            data.extend_from_slice(b".\r\n");
            let (r, n) = data_reply(config(), "MAIL FROM:<a@b>", &data);
            assert_eq!((r.as_str(), n), (refused, 0), "DATA {look:?}");
        }
        // A CR at the end of the last chunk is bare.
        assert_eq!(bdat_reply(config(), b"a\r", &[]), (refused.into(), 0));
        // A CRLF split between chunks is fine.
        let (r, n) = bdat_reply(config(), b"a\r\nb\r\n", &[2]);
        assert!(r.ends_with("queued as 0000000000000001\r\n"), "{r}");
        assert_eq!(n, 1);
        // NUL and over-long lines, as DATA refuses them.
        let (r, n) = bdat_reply(config(), b"a\0b\r\n", &[]);
        assert_eq!(
            (r.as_str(), n),
            ("554 5.6.0 Message contains NUL characters\r\n", 0)
        );
        let long = [&b"x".repeat(999)[..], b"\r\n"].concat();
        let (r, n) = bdat_reply(config(), &long, &[500]);
        assert_eq!(
            (r.as_str(), n),
            ("250 2.0.0 500 octets received\r\n554 5.6.0 Message contains a line longer than 1000 octets\r\n", 0)
        );
        let (_, n) = bdat_reply(config(), &long[1..], &[500]);
        assert_eq!(n, 1, "a line of exactly 1000 octets is allowed");
        // A refused middle chunk ends the transaction then and there.
        let mut h = Harness::ready(config());
        let r = h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 2\r\na\nBDAT 3 LAST\r\nb\r\n");
        assert_eq!(
            r,
            format!(
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n{refused}503 5.5.1 Error: need MAIL command\r\n"
            )
        );
        assert!(h.messages.is_empty());
    }

    fn with_received(n: usize, rest: &str) -> String {
        let mut m = String::new();
        for i in 0..n {
            m.push_str(&format!("Received: from hop{i}\r\n\tby x; date\r\n"));
        }
        m.push_str(rest);
        m
    }

    #[test]
    fn too_many_hops_are_refused_by_data_and_bdat() {
        let hops = "554 5.4.6 Too many hops\r\n";
        let m = "MAIL FROM:<a@b>";
        let cfg = || ServerConfig {
            max_hops: 5,
            ..config()
        };
        // Ours is the fifth: four may arrive.
        let ok = with_received(4, "Subject: x\r\n\r\nbody\r\n");
        let (r, n) = data_reply(cfg(), m, format!("{ok}.\r\n").as_bytes());
        assert!(r.starts_with("250 2.0.0 Ok: queued"), "{r}");
        assert_eq!(n, 1);
        let (r, n) = bdat_reply(cfg(), ok.as_bytes(), &[3, 40]);
        assert!(r.ends_with("queued as 0000000000000001\r\n"), "{r}");
        assert_eq!(n, 1);
        let loop5 = with_received(5, "Subject: x\r\n\r\nbody\r\n");
        assert_eq!(
            data_reply(cfg(), m, format!("{loop5}.\r\n").as_bytes()),
            (hops.into(), 0)
        );
        let (r, n) = bdat_reply(cfg(), loop5.as_bytes(), &[7]);
        assert!(r.ends_with(hops), "{r}");
        assert_eq!(n, 0);
        // Lower case, a space before the colon; only the header counts.
        let mixed = "received : a\r\nRECEIVED: b\r\nX-Received: c\r\n\r\n".to_owned()
            + &with_received(9, "");
        let (r, n) = data_reply(
            ServerConfig {
                max_hops: 3,
                ..config()
            },
            m,
            format!("{mixed}.\r\n").as_bytes(),
        );
        assert!(r.starts_with("250 2.0.0 Ok: queued"), "{r}");
        assert_eq!(n, 1);
        let (r, _) = data_reply(
            ServerConfig {
                max_hops: 2,
                ..config()
            },
            m,
            format!("{mixed}.\r\n").as_bytes(),
        );
        assert_eq!(r, hops);
        // Not a client error: it does not count toward max_errors.
        let mut h = Harness::ready(ServerConfig {
            max_errors: 1,
            ..cfg()
        });
        h.reply(&format!("{m}\r\nRCPT TO:<x@y>\r\nDATA\r\n"));
        assert_eq!(h.reply(&format!("{loop5}.\r\n")), hops);
        assert!(!h.s.wants_close());
    }

    #[test]
    fn bdat_8bit_rule() {
        let mut h = Harness::ready(config());
        let r = h.reply("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 2 LAST\r\n\u{e9}NOOP\r\n");
        assert_eq!(
            r,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n554 5.6.1 8-bit data requires BODY=8BITMIME\r\n250 2.0.0 Ok\r\n"
        );
        let r =
            h.reply("MAIL FROM:<a@b> BODY=8BITMIME\r\nRCPT TO:<x@y>\r\nBDAT 4 LAST\r\n\u{e9}\r\n");
        assert!(r.ends_with("250 2.0.0 Ok: queued as 0000000000000001\r\n"));
        assert!(h.messages[0].eight_bit);
        assert!(h.messages[0].body.ends_with("\u{e9}\r\n".as_bytes()));
    }

    // ---- property tests -------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Step {
        Data { eight: bool, lines: Vec<String> },
        Bdat { chunks: Vec<Vec<u8>> },
        Noop,
        Rset,
        Junk,
        LongLine(usize),
        DataLongLine(usize),
        AuthLogin(bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        let line = prop_oneof![
            "[ -~]{0,40}",
            "\\.[ -~]{0,10}",
            Just(".".to_string()),
            Just(String::new()),
            "[a-z\u{e9}]{0,10}",
        ];
        prop_oneof![
            (any::<bool>(), prop::collection::vec(line, 0..12))
                .prop_map(|(eight, lines)| Step::Data { eight, lines }),
            prop::collection::vec(prop::collection::vec(0u8..0x80, 0..50), 0..4)
                .prop_map(|chunks| Step::Bdat { chunks }),
            Just(Step::Noop),
            Just(Step::Rset),
            Just(Step::Junk),
            (1000usize..3000).prop_map(Step::LongLine),
            (990usize..1010).prop_map(Step::DataLongLine),
            any::<bool>().prop_map(Step::AuthLogin),
        ]
    }

    fn transcript(steps: &[Step]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut t = b"EHLO client.example\r\n".to_vec();
        let mut bodies = Vec::new();
        for s in steps {
            match s {
                Step::Data { eight, lines } => {
                    let body = if *eight { " BODY=8BITMIME" } else { "" };
                    t.extend_from_slice(
                        format!("MAIL FROM:<a@b>{body}\r\nRCPT TO:<x@y>\r\nDATA\r\n").as_bytes(),
                    );
                    let mut expected = Vec::new();
                    for l in lines {
                        if l.starts_with('.') {
                            t.push(b'.');
                        }
                        t.extend_from_slice(l.as_bytes());
                        t.extend_from_slice(b"\r\n");
                        expected.extend_from_slice(l.as_bytes());
                        expected.extend_from_slice(b"\r\n");
                    }
                    t.extend_from_slice(b".\r\n");
                    if *eight || expected.is_ascii() {
                        bodies.push(expected);
                    }
                }
                Step::Bdat { chunks } => {
                    t.extend_from_slice(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\n");
                    let mut expected = Vec::new();
                    for (i, c) in chunks.iter().enumerate() {
                        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
                        t.extend_from_slice(format!("BDAT {}{last}\r\n", c.len()).as_bytes());
                        t.extend_from_slice(c);
                        expected.extend_from_slice(c);
                    }
                    if chunks.is_empty() {
                        t.extend_from_slice(b"BDAT 0 LAST\r\n");
                    }
                    if well_formed(&expected) {
                        bodies.push(expected);
                    }
                }
                Step::Noop => t.extend_from_slice(b"NOOP\r\n"),
                Step::Rset => t.extend_from_slice(b"RSET\r\n"),
                Step::Junk => t.extend_from_slice(b"XYZZY plugh\r\n"),
                Step::LongLine(n) => {
                    t.extend(std::iter::repeat(b'L').take(*n));
                    t.extend_from_slice(b"\r\n");
                }
                Step::DataLongLine(n) => {
                    t.extend_from_slice(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n");
                    t.extend(std::iter::repeat(b'D').take(*n));
                    t.extend_from_slice(b"\r\n.\r\n");
                    if n + 2 <= 1000 {
                        let mut expected = vec![b'D'; *n];
                        expected.extend_from_slice(b"\r\n");
                        bodies.push(expected);
                    }
                }
                Step::AuthLogin(good) => {
                    let pass = if *good { "secret" } else { "bad" };
                    t.extend_from_slice(
                        format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64("alice"), b64(pass)).as_bytes(),
                    );
                }
            }
        }
        t.extend_from_slice(b"QUIT\r\n");
        (t, bodies)
    }

    /// The DATA rules, independently of the scanner: no NUL, every CR in
    /// a CRLF, every LF after a CR.
    fn well_formed(b: &[u8]) -> bool {
        b.iter().enumerate().all(|(i, &c)| match c {
            0 => false,
            b'\r' => b.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && b[i - 1] == b'\r',
            _ => true,
        })
    }

    fn prop_config() -> ServerConfig {
        ServerConfig {
            auth_enabled: true,
            auth_without_tls: true,
            max_errors: 1000,
            ..config()
        }
    }

    type Outcome = (
        String,
        Vec<Message>,
        Vec<(AuthMechanism, String, String, String)>,
    );

    fn run_split(input: &[u8], cuts: &[usize]) -> Outcome {
        let mut h = Harness::new(prop_config(), true);
        let mut pos = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([input.len()]) {
            h.feed(&input[pos..c]);
            pos = c;
        }
        (h.take(), h.messages, h.auths)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn split_transcript_matches_whole(
            steps in prop::collection::vec(step(), 1..8),
            cuts in prop::collection::vec(any::<usize>(), 0..40),
        ) {
            let (input, bodies) = transcript(&steps);
            let whole = run_split(&input, &[]);
            let split = run_split(&input, &cuts);
            prop_assert_eq!(&whole.0, &split.0);
            prop_assert_eq!(&whole.1, &split.1);
            prop_assert_eq!(&whole.2, &split.2);
            prop_assert!(whole.0.ends_with("221 2.0.0 Bye\r\n"));
            // Every message arrives with exactly the data the client meant.
            prop_assert_eq!(whole.1.len(), bodies.len());
            for (m, data) in whole.1.iter().zip(&bodies) {
                prop_assert!(m.body.starts_with(b"Received: from client.example ([192.0.2.7])\r\n"));
                prop_assert!(m.body.ends_with(data));
                let header_end = m.body.windows(8).position(|w| w == b"+0000\r\n".as_slice() || w == b" +0000\r\n").unwrap();
                prop_assert_eq!(m.body.len() - header_end - 8, data.len());
            }
        }

        #[test]
        fn random_input_never_panics_and_output_stays_bounded(
            pieces in prop::collection::vec(prop_oneof![
                prop::sample::select(vec![
                    "EHLO x\r\n", "HELO x\r\n", "MAIL FROM:<a@b>\r\n", "MAIL FROM:<a@b> BODY=8BITMIME\r\n",
                    "RCPT TO:<c@d>\r\n", "DATA\r\n", ".\r\n", "BDAT 3\r\n", "BDAT 2 LAST\r\n",
                    "AUTH LOGIN\r\n", "AUTH PLAIN\r\n", "STARTTLS\r\n", "RSET\r\n", "*\r\n",
                    "YWxpY2U=\r\n", "\r\n", "\n", "\r", "\0", "..\r\n",
                ]).prop_map(|s| s.as_bytes().to_vec()),
                prop::collection::vec(any::<u8>(), 0..64),
                (0usize..2500).prop_map(|n| vec![b'x'; n]),
            ], 0..60),
            chunk in 1usize..300,
            relay in any::<bool>(),
        ) {
            let input: Vec<u8> = pieces.concat();
            let cfg = ServerConfig {
                offer_starttls: true,
                ..prop_config()
            };
            let mut h = Harness::new(cfg, relay);
            h.take();
            let mut total_out = 0;
            for c in input.chunks(chunk) {
                h.feed(c);
                let out = h.take();
                // Replies are proportional to input: the largest reply per
                // octet is an EHLO answer to an 8-octet line.
                prop_assert!(out.len() <= 32 * c.len() + 1024, "{} for {}", out.len(), c.len());
                total_out += out.len();
                if h.s.wants_close() {
                    break;
                }
            }
            prop_assert!(total_out <= 32 * input.len() + 1024);
        }

        #[test]
        fn random_bytes_after_greeting_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..2000),
            chunk in 1usize..64,
        ) {
            let mut h = Harness::new(prop_config(), false);
            for c in bytes.chunks(chunk) {
                h.feed(c);
                if h.s.wants_close() {
                    break;
                }
            }
        }
    }
}
