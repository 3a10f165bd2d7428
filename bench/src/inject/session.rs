//! One injector connection: connect, greet, negotiate, then push
//! transactions in the densest shape the server allows. With PIPELINING
//! and CHUNKING a whole transaction is one write and several are kept in
//! flight, so round-trip latency does not cap throughput.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::message::{rfc5322_now, run_id, Template};
use super::mix::Mix;
use super::options::{InjectOptions, Stop};
use super::replies::{ReplyReader, SessionError};
use super::stats::{ConnStats, Live};
use crate::error::{Error, Result};
use crate::smtp::base64;
use crate::smtp::ehlo::Extensions;
use crate::smtp::reply::ReplyCode;
use crate::stream::Stream;
use crate::tls::{insecure_client_config, loopback_server_name};

/// Sessions in a row without a finished transaction before a connection
/// task gives up, so a dead or refusing target ends the run instead of
/// being hammered with reconnects.
const MAX_FRUITLESS_SESSIONS: u32 = 3;
/// How long to wait for the reply to QUIT; the run is over anyway.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between reconnection attempts under [`InjectOptions::retry_for`],
/// short because a restarting target is usually back within a second.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// State shared by all connection tasks of a run.
pub(crate) struct Shared {
    pub(crate) opts: InjectOptions,
    pub(crate) mix: Mix,
    pub(crate) templates: Vec<Template>,
    pub(crate) run_id: String,
    pub(crate) limit: Option<u64>,
    pub(crate) progress: Arc<Live>,
    pub(crate) histogram: Histogram<u64>,
    next: AtomicU64,
    deadline: Option<Instant>,
    tls: Option<TlsConnector>,
    auth_line: Option<String>,
}

impl Shared {
    pub(crate) fn new(opts: InjectOptions, progress: Arc<Live>) -> Result<Self> {
        let mix = Mix::new(&opts);
        let run_id = run_id();
        let date = rfc5322_now();
        let templates = mix
            .sizes
            .iter()
            .map(|&size| Template::build(&run_id, &opts.from, &date, size))
            .collect();
        let tls = if opts.starttls {
            Some(TlsConnector::from(insecure_client_config()?))
        } else {
            None
        };
        let auth_line = opts.auth.as_ref().map(|c| {
            let token = base64::encode(format!("\0{}\0{}", c.user, c.pass).as_bytes());
            format!("AUTH PLAIN {token}\r\n")
        });
        let (limit, deadline) = match opts.stop {
            Stop::Messages(n) => (Some(n), None),
            Stop::Duration(d) => (None, Some(Instant::now() + d)),
        };
        // 1 µs to 1 h at three significant digits.
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .map_err(|e| Error::InvalidOption(format!("latency histogram: {e}")))?;
        Ok(Shared {
            opts,
            mix,
            templates,
            run_id,
            limit,
            progress,
            histogram,
            next: AtomicU64::new(0),
            deadline,
            tls,
            auth_line,
        })
    }

    /// Reserves the next message sequence number, if the run is not over.
    fn claim(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let seq = self.next.fetch_add(1, Relaxed);
        match self.limit {
            Some(n) if seq >= n => None,
            _ => Some(seq),
        }
    }

    fn exhausted(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
            || self.limit.is_some_and(|n| self.next.load(Relaxed) >= n)
    }
}

/// Runs one connection slot until the run is over; returns its counters.
///
/// Without `retry_for`, a failed connect or [`MAX_FRUITLESS_SESSIONS`]
/// sessions in a row without a finished transaction end the slot. With it,
/// the slot keeps reconnecting (every [`RETRY_PAUSE`]) until that much
/// time has passed without a finished transaction: a target that is being
/// restarted is ridden out, a dead one still ends the run.
pub(crate) async fn connection(shared: Arc<Shared>, index: usize) -> ConnStats {
    let mut conn = Conn::new(shared, index);
    let retry_for = conn.shared.opts.retry_for;
    let mut fruitless = 0;
    let mut last_progress = Instant::now();
    while !conn.shared.exhausted() {
        let before = conn.stats.transactions;
        let mut connect_failed = false;
        match conn.session().await {
            Ok(()) => {}
            Err(e @ SessionError::Connect(_)) => {
                conn.stats.connect_errors += 1;
                conn.stats.count_error(e.label());
                connect_failed = true;
            }
            Err(e) => {
                conn.stats.connection_errors += 1;
                conn.stats.count_error(e.label());
            }
        }
        if conn.stats.transactions != before {
            fruitless = 0;
            last_progress = Instant::now();
            continue;
        }
        fruitless += 1;
        if !retry_for.is_zero() {
            if last_progress.elapsed() >= retry_for {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        } else if connect_failed || fruitless >= MAX_FRUITLESS_SESSIONS {
            break;
        }
    }
    conn.stats
}

/// Replies the server may have to buffer towards us while we are busy
/// writing: if they exceeded our socket's receive buffer, both sides could
/// block in write and deadlock. 64 bytes per reply is generous.
const MAX_UNREAD_REPLY_BYTES: usize = 32 * 1024;

/// The configured window, reduced so that the replies of a full window fit
/// in [`MAX_UNREAD_REPLY_BYTES`].
fn effective_window(opts: &InjectOptions) -> usize {
    let reply_bytes = (opts.rcpts + 2) * 64;
    opts.window.min(MAX_UNREAD_REPLY_BYTES / reply_bytes).max(1)
}

/// How a transaction ends on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    PipelinedBdat,
    PipelinedData,
    LockstepBdat,
    LockstepData,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::PipelinedBdat => "pipelined-bdat",
            Shape::PipelinedData => "pipelined-data",
            Shape::LockstepBdat => "lockstep-bdat",
            Shape::LockstepData => "lockstep-data",
        }
    }
}

/// Why a session's transaction loop stopped without an error.
enum End {
    /// No more messages to send.
    Exhausted,
    /// The server answered 421 and is closing.
    ServerClosing,
}

/// What a reply means for the transaction at the head of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaction {
    Continue,
    SendBody,
    Closing,
}

/// A transaction whose replies are still outstanding.
#[derive(Debug)]
struct Pending {
    sent: Instant,
    seq: u64,
    class: usize,
    nrcpt: usize,
    /// Replies received so far (0 = waiting for MAIL's).
    step: usize,
    accepted: usize,
    data: bool,
}

struct Conn {
    shared: Arc<Shared>,
    stats: ConnStats,
    rng: SmallRng,
    templates: Vec<Template>,
    wbuf: Vec<u8>,
    pending: VecDeque<Pending>,
    /// Domain index and acceptance of every outstanding recipient, in order.
    rcpts: VecDeque<(u32, bool)>,
    /// Whether the last lock-step command was refused.
    last_failed: bool,
}

impl Conn {
    fn new(shared: Arc<Shared>, index: usize) -> Self {
        let stats = ConnStats::new(shared.mix.domains.len(), &shared.histogram);
        let templates = shared.templates.clone();
        let window = shared.opts.window;
        let max_size = templates.iter().map(Template::len).max().unwrap_or(0);
        Conn {
            stats,
            rng: SmallRng::seed_from_u64(rand::random::<u64>() ^ index as u64),
            templates,
            wbuf: Vec::with_capacity((max_size + 512).saturating_mul(window).min(16 << 20)),
            pending: VecDeque::with_capacity(window),
            rcpts: VecDeque::new(),
            last_failed: false,
            shared,
        }
    }

    async fn session(&mut self) -> Result<(), SessionError> {
        let shared = self.shared.clone();
        let opts = &shared.opts;
        let tcp = match tokio::time::timeout(opts.timeout, TcpStream::connect(opts.target)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(SessionError::Connect(e)),
            Err(_) => {
                return Err(SessionError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect timed out",
                )))
            }
        };
        let _ = tcp.set_nodelay(true);
        self.stats.sessions += 1;
        let mut stream = Stream::Plain(tcp);
        let mut replies = ReplyReader::new(opts.timeout);

        let greeting = replies.next(&mut stream, |_| {}).await?;
        if !greeting.is_positive() {
            self.stats.count_reply(greeting);
            return Err(SessionError::Refused(format!("greeting {greeting}")));
        }
        let mut ext = self.ehlo(&mut stream, &mut replies).await?;
        if let Some(connector) = &shared.tls {
            if !ext.starttls {
                return Err(SessionError::Refused("STARTTLS not offered".into()));
            }
            self.wbuf.extend_from_slice(b"STARTTLS\r\n");
            self.write(&mut stream).await?;
            let r = replies.next(&mut stream, |_| {}).await?;
            if r.code != 220 {
                self.stats.count_reply(r);
                return Err(SessionError::Refused(format!("STARTTLS {r}")));
            }
            replies.clear();
            let tcp = stream
                .take_plain()
                .ok_or_else(|| SessionError::Refused("STARTTLS on a TLS stream".into()))?;
            let tls =
                tokio::time::timeout(opts.timeout, connector.connect(loopback_server_name(), tcp))
                    .await
                    .map_err(|_| SessionError::Timeout)??;
            stream = Stream::ClientTls(Box::new(tls));
            ext = self.ehlo(&mut stream, &mut replies).await?;
        }
        if let Some(line) = &shared.auth_line {
            self.wbuf.extend_from_slice(line.as_bytes());
            self.write(&mut stream).await?;
            let r = replies.next(&mut stream, |_| {}).await?;
            if r.code != 235 {
                self.stats.count_reply(r);
                return Err(SessionError::Refused(format!("AUTH {r}")));
            }
        }

        let pipelining = opts.pipelining && ext.pipelining;
        let chunking = opts.chunking && ext.chunking;
        let shape = match (pipelining, chunking) {
            (true, true) => Shape::PipelinedBdat,
            (true, false) => Shape::PipelinedData,
            (false, true) => Shape::LockstepBdat,
            (false, false) => Shape::LockstepData,
        };
        *self.stats.modes.entry(shape.name()).or_default() += 1;
        let result = match shape {
            Shape::PipelinedBdat | Shape::PipelinedData => {
                self.pipelined(
                    &mut stream,
                    &mut replies,
                    ext.size,
                    shape == Shape::PipelinedBdat,
                )
                .await
            }
            Shape::LockstepBdat | Shape::LockstepData => {
                self.lockstep(
                    &mut stream,
                    &mut replies,
                    ext.size,
                    shape == Shape::LockstepBdat,
                )
                .await
            }
        };
        self.abort_pending();
        match result? {
            End::Exhausted => {
                self.wbuf.extend_from_slice(b"QUIT\r\n");
                if self.write(&mut stream).await.is_ok() {
                    let _ =
                        tokio::time::timeout(QUIT_TIMEOUT, replies.next(&mut stream, |_| {})).await;
                }
                let _ = stream.shutdown().await;
                Ok(())
            }
            End::ServerClosing => Ok(()),
        }
    }

    /// EHLO, falling back to HELO (no extensions) if EHLO is refused.
    async fn ehlo(
        &mut self,
        stream: &mut Stream,
        replies: &mut ReplyReader,
    ) -> Result<Extensions, SessionError> {
        let shared = self.shared.clone();
        let _ = write!(self.wbuf, "EHLO {}\r\n", shared.opts.ehlo);
        self.write(stream).await?;
        let mut ext = Extensions::default();
        let r = replies.next(stream, |line| ext.add_line(line)).await?;
        if r.is_positive() {
            return Ok(ext);
        }
        self.stats.count_reply(r);
        let _ = write!(self.wbuf, "HELO {}\r\n", shared.opts.ehlo);
        self.write(stream).await?;
        let r = replies.next(stream, |_| {}).await?;
        if r.is_positive() {
            Ok(Extensions::default())
        } else {
            self.stats.count_reply(r);
            Err(SessionError::Refused(format!("HELO {r}")))
        }
    }

    async fn write(&mut self, stream: &mut Stream) -> Result<(), SessionError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.opts.timeout;
        let written = tokio::time::timeout(timeout, async {
            stream.write_all(&self.wbuf).await?;
            stream.flush().await
        })
        .await;
        self.wbuf.clear();
        match written {
            Ok(r) => r.map_err(SessionError::Io),
            Err(_) => Err(SessionError::Timeout),
        }
    }

    /// PIPELINING: whole envelopes in one write. With BDAT the body goes in
    /// the same write and up to `window` transactions are in flight; with
    /// DATA the body must wait for the 354, so one transaction at a time.
    async fn pipelined(
        &mut self,
        stream: &mut Stream,
        replies: &mut ReplyReader,
        size_ext: bool,
        bdat: bool,
    ) -> Result<End, SessionError> {
        let window = if bdat {
            effective_window(&self.shared.opts)
        } else {
            1
        };
        loop {
            let now = Instant::now();
            while self.pending.len() < window {
                let Some(seq) = self.shared.claim() else {
                    break;
                };
                let class = self.begin(seq, now, !bdat);
                self.push_mail(class, size_ext);
                for i in 0..self.shared.opts.rcpts {
                    self.push_rcpt(seq, i);
                }
                if bdat {
                    self.push_bdat(class, seq);
                } else {
                    self.wbuf.extend_from_slice(b"DATA\r\n");
                }
            }
            self.write(stream).await?;
            if self.pending.is_empty() {
                return Ok(End::Exhausted);
            }
            let mut reaction = self.on_reply(replies.next(stream, |_| {}).await?);
            while reaction == Reaction::Continue {
                match replies.try_next(|_| {})? {
                    Some(r) => reaction = self.on_reply(r),
                    None => break,
                }
            }
            match reaction {
                Reaction::Closing => return Ok(End::ServerClosing),
                Reaction::SendBody => {
                    if let Some(p) = self.pending.front() {
                        let (class, seq) = (p.class, p.seq);
                        self.push_data_body(class, seq);
                    }
                }
                Reaction::Continue => {}
            }
        }
    }

    /// No PIPELINING: one command, one reply.
    async fn lockstep(
        &mut self,
        stream: &mut Stream,
        replies: &mut ReplyReader,
        size_ext: bool,
        bdat: bool,
    ) -> Result<End, SessionError> {
        loop {
            let Some(seq) = self.shared.claim() else {
                return Ok(End::Exhausted);
            };
            let class = self.begin(seq, Instant::now(), !bdat);
            self.push_mail(class, size_ext);
            if let Some(end) = self.exchange(stream, replies).await? {
                return Ok(end);
            }
            if self.last_failed {
                self.finish(None);
                continue;
            }
            for i in 0..self.shared.opts.rcpts {
                self.push_rcpt(seq, i);
                if let Some(end) = self.exchange(stream, replies).await? {
                    return Ok(end);
                }
            }
            if self.pending.front().is_some_and(|p| p.accepted == 0) {
                self.wbuf.extend_from_slice(b"RSET\r\n");
                self.write(stream).await?;
                let r = replies.next(stream, |_| {}).await?;
                self.finish(None);
                if !r.is_positive() {
                    self.stats.count_reply(r);
                }
                if r.is_closing() {
                    return Ok(End::ServerClosing);
                }
                continue;
            }
            if bdat {
                self.push_bdat(class, seq);
            } else {
                self.wbuf.extend_from_slice(b"DATA\r\n");
            }
            self.write(stream).await?;
            let mut reaction = self.on_reply(replies.next(stream, |_| {}).await?);
            if reaction == Reaction::SendBody {
                self.push_data_body(class, seq);
                self.write(stream).await?;
                reaction = self.on_reply(replies.next(stream, |_| {}).await?);
            }
            if reaction == Reaction::Closing {
                return Ok(End::ServerClosing);
            }
        }
    }

    /// Sends what is buffered and processes the one reply it earns.
    async fn exchange(
        &mut self,
        stream: &mut Stream,
        replies: &mut ReplyReader,
    ) -> Result<Option<End>, SessionError> {
        self.write(stream).await?;
        let r = replies.next(stream, |_| {}).await?;
        self.last_failed = !r.is_positive();
        Ok((self.on_reply(r) == Reaction::Closing).then_some(End::ServerClosing))
    }

    /// Starts tracking a transaction; returns its size class.
    fn begin(&mut self, seq: u64, sent: Instant, data: bool) -> usize {
        let class = self.shared.mix.size_class(&mut self.rng);
        self.pending.push_back(Pending {
            sent,
            seq,
            class,
            nrcpt: 0,
            step: 0,
            accepted: 0,
            data,
        });
        class
    }

    fn push_mail(&mut self, class: usize, size_ext: bool) {
        let _ = write!(self.wbuf, "MAIL FROM:<{}>", self.shared.opts.from);
        if size_ext {
            let len = self.templates.get(class).map_or(0, Template::len);
            let _ = write!(self.wbuf, " SIZE={len}");
        }
        self.wbuf.extend_from_slice(b"\r\n");
    }

    fn push_rcpt(&mut self, seq: u64, i: usize) {
        let d = self.shared.mix.domain(&mut self.rng);
        let domain = self
            .shared
            .mix
            .domains
            .get(d)
            .map_or("invalid.test", String::as_str);
        // Local parts repeat across messages, as real traffic does, which
        // is what greylisting and per-recipient state key on.
        let _ = write!(
            self.wbuf,
            "RCPT TO:<u{}@{}>\r\n",
            (seq + i as u64) % 1000,
            domain
        );
        self.rcpts
            .push_back((u32::try_from(d).unwrap_or(u32::MAX), false));
        if let Some(p) = self.pending.back_mut() {
            p.nrcpt += 1;
        }
    }

    fn push_bdat(&mut self, class: usize, seq: u64) {
        if let Some(t) = self.templates.get_mut(class) {
            let body = t.with_seq(seq);
            let _ = write!(self.wbuf, "BDAT {} LAST\r\n", body.len());
            self.wbuf.extend_from_slice(body);
        }
    }

    fn push_data_body(&mut self, class: usize, seq: u64) {
        if let Some(t) = self.templates.get_mut(class) {
            // Templates are dot-stuffed and end in CRLF.
            self.wbuf.extend_from_slice(t.with_seq(seq));
        }
        self.wbuf.extend_from_slice(b".\r\n");
    }

    /// Accounts one reply against the oldest outstanding transaction.
    fn on_reply(&mut self, r: ReplyCode) -> Reaction {
        let closing = r.is_closing();
        let Some(p) = self.pending.front_mut() else {
            self.stats.count_reply(r);
            return if closing {
                Reaction::Closing
            } else {
                Reaction::Continue
            };
        };
        let step = p.step;
        p.step += 1;
        let (nrcpt, data) = (p.nrcpt, p.data);
        if step == 0 {
            if !r.is_positive() {
                self.stats.count_reply(r);
            }
        } else if step <= nrcpt {
            if r.is_positive() {
                p.accepted += 1;
                if let Some(entry) = self.rcpts.get_mut(step - 1) {
                    entry.1 = true;
                }
            } else {
                self.stats.count_reply(r);
            }
        } else if data && step == nrcpt + 1 && r.code == 354 {
            if !closing {
                return Reaction::SendBody;
            }
        } else {
            self.finish(Some(r));
        }
        if closing {
            Reaction::Closing
        } else {
            Reaction::Continue
        }
    }

    /// Retires the oldest transaction with its final reply (`None` when it
    /// ended early, e.g. no recipient accepted in lock-step mode).
    fn finish(&mut self, reply: Option<ReplyCode>) {
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        let micros = u64::try_from(p.sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.latency.saturating_record(micros.max(1));
        self.stats.transactions += 1;
        let positive = reply.is_some_and(ReplyCode::is_positive);
        if let Some(r) = reply.filter(|r| !r.is_positive()) {
            self.stats.count_reply(r);
        }
        let ok = positive && p.accepted > 0;
        if ok {
            self.stats.accepted_messages += 1;
            self.stats.accepted_rcpts += p.accepted as u64;
            if self.shared.opts.record_acks {
                let accepted = u32::try_from(p.accepted).unwrap_or(u32::MAX);
                self.stats.acks.push((p.seq, accepted));
            }
        }
        for _ in 0..p.nrcpt {
            if let Some((d, accepted)) = self.rcpts.pop_front() {
                if ok && accepted {
                    if let Some(n) = self.stats.per_domain.get_mut(d as usize) {
                        *n += 1;
                    }
                }
            }
        }
        self.shared.progress.record(ok);
    }

    /// Transactions still waiting when the session ends are lost.
    fn abort_pending(&mut self) {
        let n = self.pending.len() as u64;
        self.stats.aborted += n;
        if n > 0 {
            self.shared.progress.record_aborted(n);
        }
        self.pending.clear();
        self.rcpts.clear();
        self.wbuf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_shrinks_with_many_recipients() {
        let mut o = InjectOptions::new("127.0.0.1:25".parse().unwrap());
        assert_eq!(effective_window(&o), 8);
        o.window = 10_000;
        assert_eq!(effective_window(&o), 170);
        o.rcpts = 1000;
        assert_eq!(effective_window(&o), 1);
    }
}
