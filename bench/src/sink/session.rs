//! One SMTP server session. Input is parsed straight out of the read
//! buffer; replies for everything that arrived together are collected and
//! written in one go just before the next read, which is exactly what a
//! pipelining client needs and costs one syscall per group.

use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use memchr::memchr;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::command::{
    local_starts_with, parse_bdat, parse_path, parse_verb, size_param, split_addr, Verb,
};
use super::counters::DomainStats;
use super::headers::HeaderCapture;
use super::limits::pair;
use super::profile::{Behavior, DeadMode, RateLimitStyle};
use super::Shared;
use crate::smtp::dot::{scan_data, DataScan};
use crate::stream::Stream;

/// Longest command line accepted; RFC 5321 needs 512 plus extension params.
const MAX_LINE: usize = 4096;
/// Free space ensured before each read.
const READ_RESERVE: usize = 64 * 1024;
/// Idle time after which a silent client is disconnected, as real MTAs do.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Recipients per transaction, as in Postfix's default.
const MAX_RCPTS: usize = 1000;
/// Distinct recipient domains remembered per connection.
const MAX_SESSION_DOMAINS: usize = 1000;
/// Unrecognised commands tolerated before hanging up.
const MAX_ERRORS: u32 = 20;

const CONCURRENCY_REPLY: &[u8] = b"421 4.7.0 Too many concurrent SMTP connections from this IP\r\n";
const SUSPENDED_REPLY: &str = "421 4.7.0 Sending temporarily suspended, try again later";

/// Entry point for an accepted connection.
pub(crate) async fn handle(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let stats = &shared.stats;
    stats.connections.fetch_add(1, Relaxed);
    let local = match tcp.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let host = shared.profile.for_host(local.ip());
    let behavior = shared.profile.behavior(host);
    match behavior.mode {
        DeadMode::Refuse => {
            stats.refused.fetch_add(1, Relaxed);
            return;
        }
        DeadMode::Hang => {
            stats.hung.fetch_add(1, Relaxed);
            hang(tcp).await;
            return;
        }
        DeadMode::Normal | DeadMode::DropMidData => {}
    }
    if behavior.suspended(stats.started.elapsed()) {
        stats.suspended.fetch_add(1, Relaxed);
        let mut tcp = tcp;
        let _ = tcp
            .write_all(format!("{SUSPENDED_REPLY}\r\n").as_bytes())
            .await;
        let _ = tcp.shutdown().await;
        return;
    }
    let _ = tcp.set_nodelay(true);
    let ip = peer.ip();
    let current = stats.per_ip.enter(ip);
    let limit = u64::from(behavior.max_connections_per_ip);
    if limit > 0 && current > limit {
        stats.per_ip.leave(ip, false);
        stats.rejected_concurrency.fetch_add(1, Relaxed);
        let mut tcp = tcp;
        let _ = tcp.write_all(CONCURRENCY_REPLY).await;
        let _ = tcp.shutdown().await;
        return;
    }
    let _guard = ConnGuard {
        shared: shared.clone(),
        ip,
    };
    stats.active.fetch_add(1, Relaxed);
    let mut session = Session::new(shared.clone(), Stream::Plain(tcp), ip, host);
    // The client hanging up or misbehaving at the socket level ends the
    // session; there is nobody left to report that to.
    let _ = session.run().await;
}

/// Reads and discards until the client gives up: a host that accepted the
/// TCP connection but whose SMTP server is wedged.
async fn hang(mut tcp: TcpStream) {
    let mut scratch = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut scratch).await {
        if n == 0 {
            break;
        }
    }
}

/// Undoes the per-IP and active-connection accounting however the session ends.
struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.stats.per_ip.leave(self.ip, true);
        self.shared.stats.active.fetch_sub(1, Relaxed);
    }
}

/// What the input processor asks the I/O loop to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Flush replies and read more.
    NeedInput,
    /// Flush replies, then close.
    Close,
    /// Flush the 220, then run the TLS handshake.
    StartTls,
    /// Close at once without flushing (dead-host imitation).
    Drop,
}

/// How buffered input is to be interpreted.
#[derive(Debug, Clone, Copy)]
enum Input {
    Commands,
    Data {
        at_start: bool,
    },
    Chunk {
        remaining: u64,
        last: bool,
        error: Option<&'static str>,
    },
    AuthResponse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Data,
    Bdat,
}

#[derive(Debug)]
struct Rcpt {
    domain: usize,
    hash: u64,
}

/// The mail transaction in progress.
#[derive(Debug, Default)]
struct Txn {
    active: bool,
    sender: u64,
    rcpts: Vec<Rcpt>,
    /// Behaviours whose rate limiter this transaction already paid for.
    charged: Vec<usize>,
    headers: HeaderCapture,
    size: u64,
    /// Behaviour whose latency applies to the final reply.
    behavior: usize,
    drop_mid_data: bool,
}

impl Txn {
    fn reset(&mut self) {
        self.active = false;
        self.rcpts.clear();
        self.charged.clear();
        self.headers.reset();
        self.size = 0;
        self.drop_mid_data = false;
    }
}

/// A recipient domain this connection has carried.
#[derive(Debug)]
struct SessionDomain {
    name: Box<str>,
    stats: Arc<DomainStats>,
    behavior: Option<usize>,
    /// Sequence number of the last message counted for this domain, so a
    /// message with several recipients in one domain counts once.
    last_message: u64,
}

/// Domains associated with the connection; leaving them on drop keeps the
/// per-domain concurrency right even when the session task is aborted.
#[derive(Debug)]
struct SessionDomains {
    ip: IpAddr,
    list: Vec<SessionDomain>,
}

impl Drop for SessionDomains {
    fn drop(&mut self) {
        for d in &self.list {
            d.stats.per_ip.leave(self.ip, true);
        }
    }
}

enum Slot {
    Index(usize),
    Rejected,
    Close,
}

struct Session {
    shared: Arc<Shared>,
    stream: Stream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    host: usize,
    rng: SmallRng,
    helo: bool,
    authed: bool,
    input: Input,
    txn: Txn,
    messages: u64,
    domains: SessionDomains,
    domain_buf: String,
    reply_behavior: usize,
    errors: u32,
}

impl Session {
    fn new(shared: Arc<Shared>, stream: Stream, ip: IpAddr, host: usize) -> Self {
        Session {
            shared,
            stream,
            rbuf: BytesMut::with_capacity(READ_RESERVE),
            wbuf: Vec::with_capacity(4096),
            host,
            rng: SmallRng::from_entropy(),
            helo: false,
            authed: false,
            input: Input::Commands,
            txn: Txn {
                behavior: host,
                ..Txn::default()
            },
            messages: 0,
            domains: SessionDomains {
                ip,
                list: Vec::new(),
            },
            domain_buf: String::new(),
            reply_behavior: host,
            errors: 0,
        }
    }

    fn host_behavior(&self) -> &Behavior {
        self.shared.profile.behavior(self.host)
    }

    async fn run(&mut self) -> io::Result<()> {
        let _ = write!(
            self.wbuf,
            "220 {} ESMTP sluice-bench sink\r\n",
            self.shared.hostname
        );
        loop {
            match self.process() {
                Step::NeedInput => {}
                Step::Drop => return Ok(()),
                Step::Close => {
                    self.flush().await?;
                    let _ = self.stream.shutdown().await;
                    return Ok(());
                }
                Step::StartTls => {
                    self.flush().await?;
                    self.start_tls().await?;
                    continue;
                }
            }
            self.flush().await?;
            if self.rbuf.capacity() - self.rbuf.len() < READ_RESERVE / 4 {
                self.rbuf.reserve(READ_RESERVE);
            }
            let read =
                tokio::time::timeout(IDLE_TIMEOUT, self.stream.read_buf(&mut self.rbuf)).await;
            match read {
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.reply("421 4.4.2 Idle timeout, closing connection");
                    self.flush().await?;
                    return Ok(());
                }
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let latency = self.shared.profile.behavior(self.reply_behavior).latency;
        if let Some(latency) = latency {
            let micros = latency.sample_micros(&mut self.rng);
            if micros > 0 {
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
        }
        self.stream.write_all(&self.wbuf).await?;
        self.stream.flush().await?;
        self.wbuf.clear();
        Ok(())
    }

    async fn start_tls(&mut self) -> io::Result<()> {
        // RFC 3207: anything pipelined after STARTTLS was sent in clear
        // text and must not be honoured inside the TLS session.
        self.rbuf.clear();
        let (Some(acceptor), Some(tcp)) = (self.shared.tls.clone(), self.stream.take_plain())
        else {
            return Err(io::Error::other("STARTTLS without TLS setup"));
        };
        let tls = acceptor.accept(tcp).await?;
        self.stream = Stream::ServerTls(Box::new(tls));
        self.shared.stats.tls_sessions.fetch_add(1, Relaxed);
        self.helo = false;
        self.authed = false;
        self.txn.reset();
        Ok(())
    }

    fn reply(&mut self, line: &str) {
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    fn protocol_error(&mut self, line: &str) {
        self.shared.stats.protocol_errors.fetch_add(1, Relaxed);
        self.reply(line);
    }

    /// Handles everything in the read buffer that is complete.
    fn process(&mut self) -> Step {
        let mut buf = std::mem::take(&mut self.rbuf);
        let step = self.process_buf(&mut buf);
        self.rbuf = buf;
        step
    }

    fn process_buf(&mut self, buf: &mut BytesMut) -> Step {
        loop {
            match self.input {
                Input::Commands | Input::AuthResponse => {
                    let Some(nl) = memchr(b'\n', buf) else {
                        if buf.len() > MAX_LINE {
                            self.protocol_error("500 5.5.2 Error: line too long");
                            return Step::Close;
                        }
                        return Step::NeedInput;
                    };
                    if nl > MAX_LINE {
                        self.protocol_error("500 5.5.2 Error: line too long");
                        return Step::Close;
                    }
                    if !self.wbuf.is_empty() {
                        self.shared.stats.pipelined_commands.fetch_add(1, Relaxed);
                    }
                    let raw = buf.get(..nl).unwrap_or_default();
                    let line = raw.strip_suffix(b"\r").unwrap_or(raw);
                    let step = if matches!(self.input, Input::AuthResponse) {
                        self.auth_response(line)
                    } else {
                        self.command(line)
                    };
                    buf.advance(nl + 1);
                    if let Some(step) = step {
                        return step;
                    }
                }
                Input::Data { at_start } => {
                    if self.txn.drop_mid_data && !buf.is_empty() {
                        self.shared.stats.dropped_mid_data.fetch_add(1, Relaxed);
                        return Step::Drop;
                    }
                    match scan_data(buf, at_start) {
                        DataScan::End { body_len, consumed } => {
                            self.txn
                                .headers
                                .feed(buf.get(..body_len).unwrap_or_default());
                            self.txn.size += body_len as u64;
                            buf.advance(consumed);
                            self.input = Input::Commands;
                            self.end_of_message(Method::Data);
                        }
                        DataScan::More { consumable } => {
                            if consumable > 0 {
                                self.txn
                                    .headers
                                    .feed(buf.get(..consumable).unwrap_or_default());
                                self.txn.size += consumable as u64;
                                buf.advance(consumable);
                                self.input = Input::Data { at_start: false };
                            }
                            return Step::NeedInput;
                        }
                    }
                }
                Input::Chunk {
                    remaining,
                    last,
                    error,
                } => {
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    if error.is_none() {
                        self.txn.headers.feed(buf.get(..take).unwrap_or_default());
                        self.txn.size += take as u64;
                    }
                    buf.advance(take);
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.input = Input::Chunk {
                            remaining,
                            last,
                            error,
                        };
                        return Step::NeedInput;
                    }
                    self.input = Input::Commands;
                    self.end_of_chunk(last, error);
                }
            }
        }
    }

    fn command(&mut self, line: &[u8]) -> Option<Step> {
        let (verb, args) = parse_verb(line);
        match verb {
            Verb::Ehlo => self.ehlo(args),
            Verb::Helo => {
                self.txn.reset();
                self.helo = true;
                let _ = write!(self.wbuf, "250 {}\r\n", self.shared.hostname);
            }
            Verb::Mail => return self.mail(args),
            Verb::Rcpt => return self.rcpt(args),
            Verb::Data => return self.data(),
            Verb::Bdat => return self.bdat(args),
            Verb::Rset => {
                self.txn.reset();
                self.reply("250 2.0.0 Ok");
            }
            Verb::Noop => self.reply("250 2.0.0 Ok"),
            Verb::Quit => {
                self.reply("221 2.0.0 Bye");
                return Some(Step::Close);
            }
            Verb::StartTls => return self.starttls(),
            Verb::Auth => self.auth(args),
            Verb::Vrfy => self.reply("252 2.0.0 Cannot VRFY user, but will accept message"),
            Verb::Help => self.reply("214 2.0.0 See RFC 5321"),
            Verb::Unknown => {
                self.errors += 1;
                self.protocol_error("500 5.5.2 Error: command not recognized");
                if self.errors > MAX_ERRORS {
                    self.reply("421 4.7.0 Too many errors, closing connection");
                    return Some(Step::Close);
                }
            }
        }
        None
    }

    fn ehlo(&mut self, _args: &[u8]) {
        self.txn.reset();
        self.helo = true;
        let b = self.shared.profile.behavior(self.host);
        let tls_offer = b.starttls && self.shared.tls.is_some() && !self.stream.is_tls();
        let mut lines: [Option<&str>; 9] = [None; 9];
        let flags = [
            (b.pipelining, "PIPELINING"),
            (true, "8BITMIME"),
            (true, "SMTPUTF8"),
            (true, "ENHANCEDSTATUSCODES"),
            (b.chunking, "CHUNKING"),
            (tls_offer, "STARTTLS"),
            (b.auth, "AUTH PLAIN"),
        ];
        for (slot, (on, kw)) in lines.iter_mut().zip(flags) {
            if on {
                *slot = Some(kw);
            }
        }
        let size = b.max_message_size;
        let _ = write!(
            self.wbuf,
            "250-{}\r\n250-SIZE {}\r\n",
            self.shared.hostname, size
        );
        let mut offered = lines.iter().flatten().peekable();
        while let Some(kw) = offered.next() {
            let sep = if offered.peek().is_some() { '-' } else { ' ' };
            let _ = write!(self.wbuf, "250{sep}{kw}\r\n");
        }
    }

    fn mail(&mut self, args: &[u8]) -> Option<Step> {
        if !self.helo {
            self.protocol_error("503 5.5.1 Error: send HELO/EHLO first");
            return None;
        }
        if self.txn.active {
            self.protocol_error("503 5.5.1 Error: nested MAIL command");
            return None;
        }
        let b = self.host_behavior();
        let max_messages = u64::from(b.max_messages_per_connection);
        let max_size = b.max_message_size;
        let drop_mid_data = b.mode == DeadMode::DropMidData;
        if max_messages > 0 && self.messages >= max_messages {
            self.shared
                .stats
                .rejected_max_messages
                .fetch_add(1, Relaxed);
            self.reply("421 4.7.0 Too many messages for this connection, closing connection");
            return Some(Step::Close);
        }
        let Some((addr, params)) = parse_path(args, b"FROM:") else {
            self.protocol_error("501 5.1.7 Bad sender address syntax");
            return None;
        };
        if size_param(params).is_some_and(|s| s > max_size) {
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            return None;
        }
        self.txn.reset();
        self.txn.active = true;
        self.txn.sender = self.shared.hasher.hash_addr(addr);
        self.txn.behavior = self.host;
        self.txn.drop_mid_data = drop_mid_data;
        self.reply_behavior = self.host;
        self.reply("250 2.1.0 Ok");
        None
    }

    fn rcpt(&mut self, args: &[u8]) -> Option<Step> {
        if !self.txn.active {
            self.protocol_error("503 5.5.1 Error: need MAIL command");
            return None;
        }
        let parsed = parse_path(args, b"TO:").and_then(|(addr, _)| Some((addr, split_addr(addr)?)));
        let Some((addr, (local, domain))) = parsed else {
            self.protocol_error("501 5.1.3 Bad recipient address syntax");
            return None;
        };
        if self.txn.rcpts.len() >= MAX_RCPTS {
            self.reply("452 4.5.3 Error: too many recipients");
            return None;
        }
        let slot = match self.domain_slot(domain) {
            Slot::Index(i) => i,
            Slot::Rejected => return None,
            Slot::Close => return Some(Step::Close),
        };
        let d = self.domains.list.get(slot)?;
        let dstats = d.stats.clone();
        let bidx = d.behavior.unwrap_or(self.host);
        self.reply_behavior = bidx;
        let shared = self.shared.clone();
        let b = shared.profile.behavior(bidx);
        let stats = &shared.stats;

        let tempfail = |s: &mut Self, line: &str| {
            stats.tempfailed.fetch_add(1, Relaxed);
            dstats.tempfailed.fetch_add(1, Relaxed);
            s.reply(line);
        };
        if b.suspended(stats.started.elapsed()) {
            stats.suspended.fetch_add(1, Relaxed);
            dstats.suspended.fetch_add(1, Relaxed);
            tempfail(self, SUSPENDED_REPLY);
            return Some(Step::Close);
        }
        if local_starts_with(local, b"tempfail") {
            tempfail(self, &b.tempfail_reply);
            return None;
        }
        if local_starts_with(local, b"permfail") {
            self.permfail(&dstats, &b.permfail_reply);
            return None;
        }
        if let Some(Some(bucket)) = shared.buckets.get(bidx) {
            if !self.txn.charged.contains(&bidx) {
                if bucket.try_take() {
                    self.txn.charged.push(bidx);
                } else {
                    stats.rate_limited.fetch_add(1, Relaxed);
                    dstats.rate_limited.fetch_add(1, Relaxed);
                    return match b.rate_limit_style {
                        RateLimitStyle::Tempfail => {
                            tempfail(
                                self,
                                "450 4.7.1 Recipient address rate limited, please try again later",
                            );
                            None
                        }
                        RateLimitStyle::Disconnect => {
                            tempfail(self, "421 4.7.0 Try again later, closing connection");
                            Some(Step::Close)
                        }
                    };
                }
            }
        }
        let rcpt_hash = shared.hasher.hash_addr(addr);
        if b.greylist && shared.greylist.insert(pair(self.txn.sender, rcpt_hash)) {
            stats.greylisted.fetch_add(1, Relaxed);
            dstats.greylisted.fetch_add(1, Relaxed);
            tempfail(self, "451 4.7.1 Greylisted, please try again later");
            return None;
        }
        if b.permfail_pct > 0.0 || b.tempfail_pct > 0.0 {
            let roll: f64 = self.rng.gen_range(0.0..100.0);
            if roll < b.permfail_pct {
                self.permfail(&dstats, &b.permfail_reply);
                return None;
            }
            if roll < b.permfail_pct + b.tempfail_pct {
                tempfail(self, &b.tempfail_reply);
                return None;
            }
        }
        if self.txn.rcpts.is_empty() {
            self.txn.behavior = bidx;
        }
        self.txn.drop_mid_data |= b.mode == DeadMode::DropMidData;
        self.txn.rcpts.push(Rcpt {
            domain: slot,
            hash: rcpt_hash,
        });
        self.reply("250 2.1.5 Ok");
        None
    }

    fn permfail(&mut self, dstats: &DomainStats, line: &str) {
        self.shared.stats.permfailed.fetch_add(1, Relaxed);
        dstats.permfailed.fetch_add(1, Relaxed);
        self.reply(line);
    }

    /// Finds or creates this connection's entry for a recipient domain,
    /// enforcing a per-domain concurrency limit on first use.
    fn domain_slot(&mut self, domain: &[u8]) -> Slot {
        let Ok(domain) = std::str::from_utf8(domain) else {
            self.protocol_error("501 5.1.3 Bad recipient address syntax");
            return Slot::Rejected;
        };
        self.domain_buf.clear();
        self.domain_buf.push_str(domain);
        self.domain_buf.make_ascii_lowercase();
        if let Some(i) = self
            .domains
            .list
            .iter()
            .position(|d| *d.name == *self.domain_buf)
        {
            return Slot::Index(i);
        }
        if self.domains.list.len() >= MAX_SESSION_DOMAINS {
            self.reply("452 4.5.3 Error: too many recipient domains on this connection");
            return Slot::Rejected;
        }
        let shared = self.shared.clone();
        let stats = shared.stats.domain(&self.domain_buf);
        let behavior = shared.profile.for_domain(&self.domain_buf);
        let current = stats.per_ip.enter(self.domains.ip);
        let limit = behavior.map_or(0, |b| {
            u64::from(shared.profile.behavior(b).max_connections_per_ip)
        });
        if limit > 0 && current > limit {
            stats.per_ip.leave(self.domains.ip, false);
            shared.stats.rejected_concurrency.fetch_add(1, Relaxed);
            self.wbuf.extend_from_slice(CONCURRENCY_REPLY);
            return Slot::Close;
        }
        stats.connections.fetch_add(1, Relaxed);
        self.domains.list.push(SessionDomain {
            name: self.domain_buf.as_str().into(),
            stats,
            behavior,
            last_message: u64::MAX,
        });
        Slot::Index(self.domains.list.len() - 1)
    }

    fn data(&mut self) -> Option<Step> {
        if !self.txn.active {
            self.protocol_error("503 5.5.1 Error: need MAIL command");
        } else if self.txn.rcpts.is_empty() {
            self.reply("554 5.5.1 Error: no valid recipients");
            self.txn.reset();
        } else {
            self.reply("354 End data with <CR><LF>.<CR><LF>");
            self.input = Input::Data { at_start: true };
        }
        None
    }

    fn bdat(&mut self, args: &[u8]) -> Option<Step> {
        let Some((size, last)) = parse_bdat(args) else {
            // Without a valid size the chunk boundary is unknown, so the
            // stream cannot be resynchronised.
            self.protocol_error("501 5.5.4 Syntax error in BDAT parameters");
            return Some(Step::Close);
        };
        let error = if !self.host_behavior().chunking {
            Some("502 5.5.1 Error: BDAT not supported")
        } else if !self.txn.active {
            Some("503 5.5.1 Error: need MAIL command")
        } else if self.txn.rcpts.is_empty() {
            Some("554 5.5.1 Error: no valid recipients")
        } else {
            None
        };
        if error.is_none() && self.txn.drop_mid_data {
            self.shared.stats.dropped_mid_data.fetch_add(1, Relaxed);
            return Some(Step::Drop);
        }
        if error.is_some() {
            self.shared.stats.protocol_errors.fetch_add(1, Relaxed);
        }
        self.input = Input::Chunk {
            remaining: size,
            last,
            error,
        };
        None
    }

    fn end_of_chunk(&mut self, last: bool, error: Option<&'static str>) {
        if let Some(error) = error {
            self.reply(error);
            if last {
                self.txn.reset();
            }
        } else if last {
            self.end_of_message(Method::Bdat);
        } else if self.txn.size > self.host_behavior().max_message_size {
            // Later chunks of this message then meet "need MAIL command".
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            self.txn.reset();
        } else {
            let _ = write!(self.wbuf, "250 2.0.0 {} octets received\r\n", self.txn.size);
        }
    }

    fn end_of_message(&mut self, method: Method) {
        self.reply_behavior = self.txn.behavior;
        if self.txn.size > self.host_behavior().max_message_size {
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            self.txn.reset();
            return;
        }
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let second = stats.second();
        let message_seq = self.messages;
        let mut fresh = 0u32;
        let id_hash = self
            .txn
            .headers
            .message_id()
            .map(|id| shared.hasher.hash(id));
        for rcpt in &self.txn.rcpts {
            let Some(d) = self.domains.list.get_mut(rcpt.domain) else {
                continue;
            };
            d.stats.accepted.fetch_add(1, Relaxed);
            if d.last_message != message_seq {
                d.last_message = message_seq;
                d.stats.messages.fetch_add(1, Relaxed);
                d.stats.rate.record(second);
            }
            if let Some(id_hash) = id_hash {
                if shared.seen.insert(pair(id_hash, rcpt.hash)) {
                    fresh += 1;
                } else {
                    stats.duplicates.fetch_add(1, Relaxed);
                    d.stats.duplicates.fetch_add(1, Relaxed);
                }
            }
        }
        if let (Some(receipts), Some(id_hash)) = (&shared.receipts, id_hash) {
            if fresh > 0 {
                receipts.add(id_hash, fresh);
            }
        }
        stats.mark_accept();
        stats.messages_accepted.fetch_add(1, Relaxed);
        stats.recipients_accepted.fetch_add(
            self.txn.rcpts.len() as u64,
            std::sync::atomic::Ordering::Release,
        );
        stats.rate.record(second);
        match method {
            Method::Data => stats.data_transactions.fetch_add(1, Relaxed),
            Method::Bdat => stats.bdat_transactions.fetch_add(1, Relaxed),
        };
        self.messages += 1;
        let queue_id = shared.queue_ids.fetch_add(1, Relaxed);
        let _ = write!(self.wbuf, "250 2.0.0 Ok: queued as {queue_id:012X}\r\n");
        self.txn.reset();
    }

    fn starttls(&mut self) -> Option<Step> {
        if self.stream.is_tls() {
            self.protocol_error("503 5.5.1 Error: TLS already active");
        } else if !self.host_behavior().starttls || self.shared.tls.is_none() {
            self.protocol_error("502 5.5.1 Error: command not implemented");
        } else {
            self.reply("220 2.0.0 Ready to start TLS");
            return Some(Step::StartTls);
        }
        None
    }

    fn auth(&mut self, args: &[u8]) {
        if !self.host_behavior().auth {
            self.protocol_error("502 5.5.1 Error: authentication not enabled");
            return;
        }
        if !self.helo || self.authed || self.txn.active {
            self.protocol_error("503 5.5.1 Error: AUTH not allowed now");
            return;
        }
        let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
        if !words
            .next()
            .is_some_and(|m| m.eq_ignore_ascii_case(b"PLAIN"))
        {
            self.reply("504 5.5.4 Error: unsupported authentication mechanism");
            return;
        }
        if words.next().is_some() {
            self.auth_ok();
        } else {
            self.reply("334 ");
            self.input = Input::AuthResponse;
        }
    }

    fn auth_response(&mut self, line: &[u8]) -> Option<Step> {
        self.input = Input::Commands;
        if line == b"*" {
            self.reply("501 5.7.0 Authentication aborted");
        } else {
            self.auth_ok();
        }
        None
    }

    fn auth_ok(&mut self) {
        self.authed = true;
        self.shared.stats.auth_sessions.fetch_add(1, Relaxed);
        self.reply("235 2.7.0 Authentication successful");
    }
}
