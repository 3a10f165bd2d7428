//! The live journal: appends, group commit, retirement.

use super::frame::{self, Key, SEGMENT_HEADER};
use super::index::{Index, Loc};
use super::io::{self, Chunk, Job, JobResult, Target};
use super::record::{self, F_EIGHT_BIT, F_SMTPUTF8, MAX_RCPTS, MAX_UNIX, T_CHECKPOINT, T_MESSAGE};
use super::{JournalError, JournalOptions, MessageRecord, Outcome, RcptState, Recovery, Ticket};
use event_listener::Event;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// A shard's journal. Cheap to clone (a handle); not `Send`: it belongs to
/// the shard that opened it.
#[derive(Clone)]
pub struct Journal {
    pub(crate) sh: Rc<Shared>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.sh.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: JournalOptions,
    pub st: RefCell<State>,
    /// Notified whenever a batch settles (durable or failed).
    pub settled_ev: Event,
    /// The directory lock; each write job holds a clone too, so the lock
    /// outlives a job still running on the blocking thread after the
    /// journal was dropped.
    lock: Arc<nix::fcntl::Flock<File>>,
}

/// A record appended but not yet durable, in append order. Its frame is
/// the next `len` bytes of the buffer.
#[derive(Debug)]
pub(crate) struct Effect {
    pub len: u32,
    pub kind: EffectKind,
}

#[derive(Debug)]
pub(crate) enum EffectKind {
    Message {
        id: u64,
        rcpts: Rcpts,
    },
    Outcome {
        id: u64,
        index: u32,
        outcome: Outcome,
    },
    Checkpoint,
}

/// Recipients of a message record: all pending (a new message) or listed
/// with their state (a compaction copy).
#[derive(Debug)]
pub(crate) enum Rcpts {
    Fresh(u32),
    Copy(Vec<(u32, RcptState)>),
}

pub(crate) struct State {
    /// Frames appended, not yet taken by a flush.
    pub buf: Vec<u8>,
    pub effects: Vec<Effect>,
    /// Effects of the batch being written (applied when it is durable).
    pub inflight: Vec<Effect>,
    spare: Vec<u8>,
    /// Bytes appended since open (logical; failed batches included).
    pub appended: u64,
    /// Everything below this has been written durably or has failed.
    pub settled: u64,
    /// Failed spans of the logical stream, with their error.
    failures: Vec<(u64, u64, JournalError)>,
    flushing: bool,
    maintaining: bool,
    pub compacting: bool,
    poisoned: Option<String>,
    pub active_seq: u64,
    active_file: Arc<File>,
    /// The active segment's key (frames are sealed with it at flush).
    pub(crate) active_key: Key,
    next_seq: u64,
    /// Durable bookkeeping.
    pub index: Index,
    /// Messages appended and not yet settled: id → recipient count.
    new_ids: HashMap<u64, u32>,
    syncs: u64,
    hist: Histogram<u64>,
    retired: u64,
    pub compactions: u64,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct JournalStats {
    /// Batches made durable (one fdatasync round each).
    pub syncs: u64,
    /// Bytes appended since open.
    pub appended: u64,
    /// Bytes settled (durable, or failed and reported) since open.
    pub settled: u64,
    /// Bytes durable since open (`settled` minus failed batches).
    pub durable: u64,
    /// Segment files deleted since open.
    pub retired_segments: u64,
    /// Compaction runs since open.
    pub compactions: u64,
    /// Segment files now.
    pub segments: u64,
    /// Pending recipients (durable state).
    pub pending_recipients: u64,
}

impl Journal {
    /// Opens (creating) `dir`, recovers what is there and returns the
    /// journal ready to append, with what was recovered. A torn tail is cut
    /// and appends go to a fresh segment. Synchronous: call it at startup.
    pub fn open(dir: &Path, opts: JournalOptions) -> Result<(Journal, Recovery), JournalError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| JournalError::io(dir, "creating the journal directory", e))?;
        let lock = io::lock_dir(dir)?;
        let mut replay = super::recover::replay(dir)?;
        if let Some((seq, at)) = replay.torn {
            io::cut_tail(dir, seq, at)?;
            if at < SEGMENT_HEADER as u64 {
                replay.index.segs.remove(&seq);
            } else {
                replay.index.seg(seq).len = at;
            }
        }
        let seq = replay.max_seq + 1;
        let (file, key) = io::create_segment(dir, seq)?;
        let mut index = replay.index;
        index.seg(seq).len = SEGMENT_HEADER as u64;
        let (done, err) = io::delete_waves(dir, &index.retire_plan(Some(seq)));
        for s in &done {
            index.segs.remove(s);
        }
        let retired = done.len() as u64;
        if let Some(e) = err {
            tracing::warn!(error = %e, "journal: could not retire a segment at open");
        }
        let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| {
            JournalError::Poisoned {
                reason: format!("histogram: {e}"),
            }
        })?;
        let st = State {
            buf: Vec::new(),
            effects: Vec::new(),
            inflight: Vec::new(),
            spare: Vec::new(),
            appended: 0,
            settled: 0,
            failures: Vec::new(),
            flushing: false,
            maintaining: false,
            compacting: false,
            poisoned: None,
            active_seq: seq,
            active_file: Arc::new(file),
            active_key: key,
            next_seq: seq + 1,
            index,
            new_ids: HashMap::new(),
            syncs: 0,
            hist,
            retired,
            compactions: 0,
        };
        let sh = Shared {
            dir: dir.to_path_buf(),
            opts,
            st: RefCell::new(st),
            settled_ev: Event::new(),
            lock: Arc::new(lock),
        };
        Ok((Journal { sh: Rc::new(sh) }, replay.recovery))
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.sh.dir
    }

    /// Buffers a message record (envelope, recipients, body). It is durable
    /// once [`Journal::commit`] (or [`Journal::durable`] with the returned
    /// ticket) returns `Ok`. Refused with `Backpressure` when the disk is
    /// behind, `DuplicateMessage` if the id is still pending.
    pub fn append_message<R: AsRef<str>>(
        &self,
        m: &MessageRecord<'_, R>,
    ) -> Result<Ticket, JournalError> {
        let mut st = self.sh.st.borrow_mut();
        st.usable()?;
        let limit = self.sh.opts.max_buffered_bytes;
        if st.buf.len() > limit {
            return Err(JournalError::Backpressure {
                buffered: st.buf.len(),
                limit,
            });
        }
        if st.index.msgs.contains_key(&m.id) || st.new_ids.contains_key(&m.id) {
            return Err(JournalError::DuplicateMessage { id: m.id });
        }
        let n = u32::try_from(m.recipients.len())
            .ok()
            .filter(|&n| n <= MAX_RCPTS)
            .ok_or_else(|| record::too_large(usize::MAX))?;
        let flags =
            if m.eight_bit { F_EIGHT_BIT } else { 0 } | if m.smtputf8 { F_SMTPUTF8 } else { 0 };
        let rcpts = m
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u32, r.as_ref(), 0, 0));
        let len = frame::encode(&mut st.buf, T_MESSAGE, |b| {
            record::put_message(
                b,
                (m.id, m.accepted_unix.min(MAX_UNIX), flags, m.reverse_path),
                n,
                n as usize,
                rcpts,
                m.body,
            )
        })
        .map_err(record::too_large)?;
        st.new_ids.insert(m.id, n);
        Ok(st.push(
            len,
            EffectKind::Message {
                id: m.id,
                rcpts: Rcpts::Fresh(n),
            },
        ))
    }

    /// Buffers an outcome for recipient `index` of message `id`. Refused
    /// with `UnknownRecipient` unless that recipient is pending (durably or
    /// in a record not yet settled).
    pub fn append_outcome(
        &self,
        id: u64,
        index: u32,
        outcome: Outcome,
    ) -> Result<Ticket, JournalError> {
        let mut st = self.sh.st.borrow_mut();
        st.usable()?;
        let known = match st.index.msgs.get(&id) {
            Some(e) => matches!(e.slots.get(index as usize), Some(Some(s)) if s.is_pending()),
            None => st.new_ids.get(&id).is_some_and(|&n| index < n),
        };
        if !known {
            return Err(JournalError::UnknownRecipient { id, index });
        }
        // Recovery refuses a time past MAX_UNIX as damage: never write one.
        let outcome = match outcome {
            Outcome::Deferred {
                attempts,
                next_attempt_unix,
            } => Outcome::Deferred {
                attempts,
                next_attempt_unix: next_attempt_unix.min(MAX_UNIX),
            },
            o => o,
        };
        let len = frame::encode(&mut st.buf, record::outcome_type(&outcome), |b| {
            record::put_outcome(b, id, index, &outcome)
        })
        .map_err(record::too_large)?;
        Ok(st.push(len, EffectKind::Outcome { id, index, outcome }))
    }

    /// [`Journal::append_outcome`] with `Delivered`.
    pub fn append_delivered(&self, id: u64, index: u32) -> Result<Ticket, JournalError> {
        self.append_outcome(id, index, Outcome::Delivered)
    }

    /// [`Journal::append_outcome`] with `Bounced`.
    pub fn append_bounced(&self, id: u64, index: u32) -> Result<Ticket, JournalError> {
        self.append_outcome(id, index, Outcome::Bounced)
    }

    /// [`Journal::append_outcome`] with `Expired`.
    pub fn append_expired(&self, id: u64, index: u32) -> Result<Ticket, JournalError> {
        self.append_outcome(id, index, Outcome::Expired)
    }

    /// [`Journal::append_outcome`] with `Deferred`.
    pub fn append_deferred(
        &self,
        id: u64,
        index: u32,
        attempts: u32,
        next_attempt_unix: u64,
    ) -> Result<Ticket, JournalError> {
        self.append_outcome(
            id,
            index,
            Outcome::Deferred {
                attempts,
                next_attempt_unix,
            },
        )
    }

    /// Buffers an opaque campaign checkpoint. Recovery returns the latest.
    pub fn append_checkpoint(&self, bytes: &[u8]) -> Result<Ticket, JournalError> {
        let mut st = self.sh.st.borrow_mut();
        st.usable()?;
        let len = frame::encode(&mut st.buf, T_CHECKPOINT, |b| b.extend_from_slice(bytes))
            .map_err(record::too_large)?;
        Ok(st.push(len, EffectKind::Checkpoint))
    }

    /// Waits until everything appended before this call is durable (group
    /// commit). Returns the error of any batch holding records that were
    /// still unsettled when it was called; a caller that commits right
    /// after appending (without awaiting in between) thus learns exactly
    /// whether its own records are durable. Must run on a glommio executor.
    pub async fn commit(&self) -> Result<(), JournalError> {
        let (from, to) = {
            let st = self.sh.st.borrow();
            (st.settled, st.appended)
        };
        self.wait(from, to).await
    }

    /// Waits until the records of `t` are settled: `Ok` if durable, the
    /// batch's error if they were not written.
    pub async fn durable(&self, t: Ticket) -> Result<(), JournalError> {
        self.wait(t.start, t.end).await
    }

    /// Starts writing what is buffered without waiting for it (for
    /// outcomes, which nobody waits on but should not linger).
    pub fn request_flush(&self) {
        let start = {
            let mut st = self.sh.st.borrow_mut();
            !st.buf.is_empty() && st.claim_flusher()
        };
        if start {
            self.spawn_flusher();
        }
    }

    async fn wait(&self, from: u64, to: u64) -> Result<(), JournalError> {
        loop {
            let start = {
                let mut st = self.sh.st.borrow_mut();
                if st.settled >= to {
                    return st.result_for(from, to);
                }
                st.claim_flusher()
            };
            if start {
                self.spawn_flusher();
            }
            let listener = self.sh.settled_ev.listen();
            if self.sh.st.borrow().settled >= to {
                continue;
            }
            listener.await;
        }
    }

    /// Spawns the flusher (after [`State::claim_flusher`]; never while the
    /// state is borrowed: glommio may run the new task at once).
    fn spawn_flusher(&self) {
        glommio::spawn_local(flush_loop(self.sh.clone())).detach();
    }

    /// Bytes in the segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.sh.st.borrow().index.disk_bytes()
    }

    /// Bytes of records still needed (messages with a pending recipient and
    /// the latest checkpoint), as of the last durable batch.
    pub fn live_bytes(&self) -> u64 {
        self.sh.st.borrow().index.live_bytes()
    }

    /// A copy of the fdatasync latency histogram, in microseconds (one
    /// sample per batch).
    pub fn fsync_histogram(&self) -> Histogram<u64> {
        self.sh.st.borrow().hist.clone()
    }

    /// Counters.
    pub fn stats(&self) -> JournalStats {
        let st = self.sh.st.borrow();
        let failed: u64 = st.failures.iter().map(|f| f.1 - f.0).sum();
        JournalStats {
            syncs: st.syncs,
            appended: st.appended,
            settled: st.settled,
            durable: st.settled - failed,
            retired_segments: st.retired,
            compactions: st.compactions,
            segments: st.index.segs.len() as u64,
            pending_recipients: st.index.pending(),
        }
    }

    /// Deletes every segment that is no longer needed (normally done after
    /// each batch by itself).
    pub async fn retire(&self) -> Result<u64, JournalError> {
        let mut total = 0;
        loop {
            let waves = {
                let st = self.sh.st.borrow();
                st.index.retire_plan(Some(st.active_seq))
            };
            if waves.is_empty() {
                return Ok(total);
            }
            let dir = self.sh.dir.clone();
            let (done, err) = glommio::executor()
                .spawn_blocking(move || io::delete_waves(&dir, &waves))
                .await;
            {
                let mut st = self.sh.st.borrow_mut();
                for s in &done {
                    st.index.segs.remove(s);
                }
                st.retired += done.len() as u64;
            }
            total += done.len() as u64;
            if let Some(e) = err {
                return Err(e);
            }
        }
    }

    /// Whether the sealed segments take more than `compact_factor` × the
    /// live bytes and compaction could free something.
    pub fn needs_compaction(&self) -> bool {
        let st = self.sh.st.borrow();
        let active = st.active_seq;
        let active_len = st.index.segs.get(&active).map_or(0, |s| s.len);
        let sealed = st.index.disk_bytes().saturating_sub(active_len);
        let live = st.index.live_bytes() as f64;
        let movable = st
            .index
            .segs
            .iter()
            .any(|(&s, i)| s != active && (i.pending > 0 || i.checkpoint));
        movable && sealed as f64 > live * self.sh.opts.compact_factor
    }

    /// Runs the background upkeep after a batch: retirement, then
    /// compaction when due.
    fn start_maintenance(&self) {
        let (busy, due_retire) = {
            let st = self.sh.st.borrow();
            (
                st.maintaining || st.compacting,
                !st.index.retirable(Some(st.active_seq)).is_empty(),
            )
        };
        if busy || !(due_retire || self.sh.opts.auto_compact && self.needs_compaction()) {
            return;
        }
        self.sh.st.borrow_mut().maintaining = true;
        let j = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = j.retire().await {
                tracing::warn!(error = %e, "journal: retiring segments failed; will retry after the next batch");
            }
            if j.sh.opts.auto_compact && j.needs_compaction() {
                match j.compact().await {
                    Ok(n) => tracing::debug!(copied = n, "journal: compacted"),
                    Err(e) => tracing::warn!(error = %e, "journal: compaction failed; will retry"),
                }
            }
            j.sh.st.borrow_mut().maintaining = false;
        })
        .detach();
    }
}

impl State {
    /// Marks the flusher running; true if the caller must spawn it.
    fn claim_flusher(&mut self) -> bool {
        !std::mem::replace(&mut self.flushing, true)
    }

    fn usable(&self) -> Result<(), JournalError> {
        match &self.poisoned {
            Some(reason) => Err(JournalError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records an effect for the frame just encoded.
    pub(crate) fn push(&mut self, len: usize, kind: EffectKind) -> Ticket {
        let start = self.appended;
        self.appended += len as u64;
        self.effects.push(Effect {
            len: len as u32,
            kind,
        });
        Ticket {
            start,
            end: self.appended,
        }
    }

    fn result_for(&self, from: u64, to: u64) -> Result<(), JournalError> {
        match self.failures.iter().rev().find(|f| f.0 < to && f.1 > from) {
            Some(f) => Err(f.2.clone()),
            None => Ok(()),
        }
    }

    /// Takes the buffered records as a batch and decides where each goes.
    /// Each frame is sealed here for the segment and offset it goes to (its
    /// tag, see `frame.rs`). Also returns the key of the last segment the
    /// batch creates, if any.
    fn plan(&mut self, dir: &Path, segment_bytes: u64) -> (Job, Vec<Loc>, Option<Key>) {
        let mut buf = std::mem::replace(&mut self.buf, std::mem::take(&mut self.spare));
        let mut key = self.active_key;
        let mut created_key = None;
        self.inflight = std::mem::take(&mut self.effects);
        let mut chunks = Vec::new();
        let mut locs = Vec::with_capacity(self.inflight.len());
        let mut seq = self.active_seq;
        let mut target = Some(Target::Existing(
            self.active_file.clone(),
            io::seg_path(dir, seq),
        ));
        let mut file_len = self
            .index
            .segs
            .get(&seq)
            .map_or(SEGMENT_HEADER as u64, |s| s.len);
        let (mut chunk_start, mut chunk_off, mut pos) = (0usize, file_len, 0usize);
        for e in &self.inflight {
            let len = u64::from(e.len);
            if file_len > SEGMENT_HEADER as u64 && file_len + len > segment_bytes {
                if let Some(t) = target.take() {
                    if pos > chunk_start || matches!(t, Target::Create(..)) {
                        chunks.push(Chunk {
                            seq,
                            target: t,
                            off: chunk_off,
                            range: chunk_start..pos,
                        });
                    }
                }
                seq = self.next_seq;
                self.next_seq += 1;
                key = frame::new_key();
                created_key = Some(key);
                target = Some(Target::Create(io::seg_path(dir, seq), key));
                file_len = SEGMENT_HEADER as u64;
                (chunk_start, chunk_off) = (pos, file_len);
            }
            locs.push(Loc {
                seg: seq,
                off: file_len,
                len: e.len,
            });
            if let Some(f) = buf.get_mut(pos..pos + e.len as usize) {
                frame::seal(f, seq, file_len, &key);
            }
            file_len += len;
            pos += e.len as usize;
        }
        if let Some(t) = target {
            chunks.push(Chunk {
                seq,
                target: t,
                off: chunk_off,
                range: chunk_start..pos,
            });
        }
        (
            Job {
                dir: dir.to_path_buf(),
                buf,
                chunks,
                lock: None,
            },
            locs,
            created_key,
        )
    }
}

/// Writes batches while there is something buffered. Spawned by the first
/// waiter of an idle journal; exits when the buffer is empty.
async fn flush_loop(sh: Rc<Shared>) {
    loop {
        let (job, locs, new_key, start, end) = {
            let mut st = sh.st.borrow_mut();
            if st.buf.is_empty() {
                st.flushing = false;
                return;
            }
            if let Some(reason) = st.poisoned.clone() {
                let (start, end) = (st.settled, st.appended);
                st.fail(start, end, JournalError::Poisoned { reason });
                st.buf.clear();
                st.effects.clear();
                st.flushing = false;
                drop(st);
                sh.settled_ev.notify(usize::MAX);
                return;
            }
            let (start, end) = (st.settled, st.appended);
            let (mut job, locs, new_key) = st.plan(&sh.dir, sh.opts.segment_bytes);
            job.lock = Some(sh.lock.clone());
            (job, locs, new_key, start, end)
        };
        let chunk_ends: Vec<(u64, u64)> = job
            .chunks
            .iter()
            .map(|c| (c.seq, c.off + (c.range.end - c.range.start) as u64))
            .collect();
        let res: JobResult = glommio::executor().spawn_blocking(move || job.run()).await;
        let mut failed = false;
        {
            let mut st = sh.st.borrow_mut();
            let State { hist, .. } = &mut *st;
            let _ = hist.record(res.sync_micros.max(1));
            let mut buf = res.buf;
            buf.clear();
            st.spare = buf;
            let inflight = std::mem::take(&mut st.inflight);
            for e in &inflight {
                if let EffectKind::Message {
                    id,
                    rcpts: Rcpts::Fresh(_),
                } = e.kind
                {
                    st.new_ids.remove(&id);
                }
            }
            match res.outcome {
                Ok(created) => {
                    for (seq, len) in chunk_ends {
                        let s = st.index.seg(seq);
                        s.len = s.len.max(len);
                    }
                    if let (Some((seq, f)), Some(key)) = (created.into_iter().last(), new_key) {
                        st.active_seq = seq;
                        st.active_file = f;
                        st.active_key = key;
                    }
                    for (e, loc) in inflight.into_iter().zip(locs) {
                        apply_effect(&mut st.index, e.kind, loc);
                    }
                    st.syncs += 1;
                    st.settled = end;
                }
                Err((e, poisoned)) => {
                    tracing::warn!(error = %e, "journal: batch not written; its messages were refused and waiters told, its outcome records are written again");
                    if poisoned {
                        st.poisoned = Some(e.to_string());
                    }
                    st.fail(start, end, e);
                    if !poisoned {
                        failed = st.requeue_outcomes(inflight) > 0;
                    }
                }
            }
        }
        sh.settled_ev.notify(usize::MAX);
        if failed {
            // The disk is full or failing: try again, but not in a spin.
            glommio::timer::sleep(RETRY_PAUSE).await;
        }
        Journal { sh: sh.clone() }.start_maintenance();
    }
}

/// Pause before writing again after a batch failed with outcome records
/// to retry.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl State {
    /// Appends again the outcome records of a failed batch (their messages'
    /// records are durable; losing them would deliver those recipients
    /// twice after a restart and pin their segments for ever). Message and
    /// checkpoint records are not retried: their waiters were told.
    /// Bounded: at most one record per recipient still pending in the
    /// durable index is kept; one superseded by a later outcome for the
    /// same recipient, or whose recipient is no longer pending, is dropped.
    /// Returns the number re-appended.
    fn requeue_outcomes(&mut self, failed: Vec<Effect>) -> usize {
        let later: std::collections::HashSet<(u64, u32)> = self
            .effects
            .iter()
            .filter_map(|e| match e.kind {
                EffectKind::Outcome { id, index, .. } => Some((id, index)),
                _ => None,
            })
            .collect();
        let mut keep: Vec<(u64, u32, Outcome)> = Vec::new();
        for e in failed {
            let EffectKind::Outcome { id, index, outcome } = e.kind else {
                continue;
            };
            let pending = self
                .index
                .msgs
                .get(&id)
                .and_then(|m| m.slots.get(index as usize))
                .is_some_and(|s| s.is_some_and(|s| s.is_pending()));
            if !pending || later.contains(&(id, index)) {
                continue;
            }
            match keep.iter_mut().find(|k| k.0 == id && k.1 == index) {
                // A final outcome sticks, as in replay.
                Some(k) if k.2.state().is_pending() => k.2 = outcome,
                Some(_) => {}
                None => keep.push((id, index, outcome)),
            }
        }
        let n = keep.len();
        for (id, index, outcome) in keep {
            if let Ok(len) = frame::encode(&mut self.buf, record::outcome_type(&outcome), |b| {
                record::put_outcome(b, id, index, &outcome)
            }) {
                self.push(len, EffectKind::Outcome { id, index, outcome });
            }
        }
        n
    }

    fn fail(&mut self, start: u64, end: u64, e: JournalError) {
        // Consecutive failed batches (a disk full for a while) merge into
        // one span, so the list grows with outages, not with batches.
        match self.failures.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.failures.push((start, end, e)),
        }
        self.settled = end;
    }
}

/// Applies a durable record to the bookkeeping.
fn apply_effect(index: &mut Index, kind: EffectKind, loc: Loc) {
    match kind {
        EffectKind::Message {
            id,
            rcpts: Rcpts::Fresh(n),
        } => {
            let pending = RcptState::Pending {
                attempts: 0,
                next_attempt_unix: 0,
            };
            index.apply_message(id, loc, false, (0..n).map(|i| (i, pending)));
        }
        EffectKind::Message {
            id,
            rcpts: Rcpts::Copy(list),
        } => {
            index.apply_message(id, loc, true, list.into_iter());
        }
        EffectKind::Outcome {
            id,
            index: i,
            outcome,
        } => {
            index.apply_outcome(id, i, outcome, loc.seg);
        }
        EffectKind::Checkpoint => index.apply_checkpoint(loc),
    }
}
