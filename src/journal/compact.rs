//! Compaction: copies the pending messages of sealed segments forward so a
//! few deferred stragglers never pin old segments.
//!
//! For each sealed segment that still holds pending recipients (oldest
//! first), the segment is read back on the blocking thread, each message
//! whose latest record is still there is re-encoded as a copy carrying only
//! its pending recipients and their state, and the copies are committed.
//! The old segment then has nothing pending and retires like any other.
//!
//! The state written into a copy is the durable state overlaid with every
//! outcome appended but not yet durable, so a copy never resurrects a
//! recipient whose outcome precedes it in the log.

use super::frame;
use super::index::Loc;
use super::io;
use super::record::{self, Record, F_COPY, T_CHECKPOINT, T_MESSAGE};
use super::writer::{EffectKind, Rcpts};
use super::{Journal, JournalError, RcptState};
use std::collections::HashMap;

impl Journal {
    /// Copies every pending message out of sealed segments, commits, and
    /// retires what that freed. Returns the number of messages copied.
    /// Runs by itself when `auto_compact` is set and the sealed segments
    /// take more than `compact_factor` × the live bytes.
    pub async fn compact(&self) -> Result<u64, JournalError> {
        {
            let mut st = self.sh.st.borrow_mut();
            if st.compacting {
                return Ok(0);
            }
            st.compacting = true;
            st.compactions += 1;
        }
        let r = match self.compact_all().await {
            Ok(n) => self.retire().await.map(|_| n),
            Err(e) => Err(e),
        };
        self.sh.st.borrow_mut().compacting = false;
        r
    }

    async fn compact_all(&self) -> Result<u64, JournalError> {
        let segs: Vec<u64> = {
            let st = self.sh.st.borrow();
            st.index
                .segs
                .iter()
                .filter(|(&s, i)| s != st.active_seq && (i.pending > 0 || i.checkpoint))
                .map(|(&s, _)| s)
                .collect()
        };
        let mut copied = 0;
        for seq in segs {
            let path = io::seg_path(&self.sh.dir, seq);
            let p = path.clone();
            let data = glommio::executor()
                .spawn_blocking(move || {
                    let mut buf = Vec::new();
                    io::read_segment(&p, &mut buf).map(|()| buf)
                })
                .await?;
            copied += self.copy_forward(seq, &path, &data)?;
            self.commit().await?;
        }
        Ok(copied)
    }

    /// Appends copies of the messages (and checkpoint) whose latest record
    /// is in segment `seq`, whose bytes are `data`.
    fn copy_forward(
        &self,
        seq: u64,
        path: &std::path::Path,
        data: &[u8],
    ) -> Result<u64, JournalError> {
        let mut st = self.sh.st.borrow_mut();
        let overlay =
            pending_outcomes(st.inflight.iter().chain(st.effects.iter()).map(|e| &e.kind));
        let Some(info) = st.index.segs.get(&seq) else {
            return Ok(0);
        };
        let seg = frame::segment_of(data, seq);
        let mut ids = info.msgs.clone();
        ids.sort_unstable();
        ids.dedup();
        let mut copied = 0;
        for id in ids {
            let Some(e) = st.index.msgs.get(&id).filter(|e| e.loc.seg == seq) else {
                continue;
            };
            let loc = e.loc;
            let mut list: Vec<(u32, RcptState)> = Vec::new();
            for (i, s) in e.slots.iter().enumerate() {
                let Some(RcptState::Pending { .. }) = s else {
                    continue;
                };
                let mut state = s.unwrap_or(RcptState::Final);
                if let Some(o) = overlay.get(&(id, i as u32)) {
                    state = *o;
                }
                if state.is_pending() {
                    list.push((i as u32, state));
                }
            }
            if list.is_empty() {
                continue;
            }
            let view = read_message(path, data, seg.as_ref(), loc)?;
            let addr = |i: u32| {
                view.rcpts
                    .iter()
                    .find(|r| r.index == i)
                    .map_or("", |r| r.addr)
            };
            let rcpts = list.iter().map(|&(i, s)| match s {
                RcptState::Pending {
                    attempts,
                    next_attempt_unix,
                } => (i, addr(i), attempts, next_attempt_unix),
                _ => (i, addr(i), 0, 0),
            });
            let head = (
                view.id,
                view.accepted_unix,
                view.flags | F_COPY,
                view.reverse_path,
            );
            let len = frame::encode(&mut st.buf, T_MESSAGE, |b| {
                record::put_message(b, head, view.total, list.len(), rcpts, view.body)
            })
            .map_err(record::too_large)?;
            st.push(
                len,
                EffectKind::Message {
                    id,
                    rcpts: Rcpts::Copy(list),
                },
            );
            copied += 1;
        }
        // A newer checkpoint on its way supersedes this one; copying the old
        // one after it would make the old one the latest.
        let newer = st
            .inflight
            .iter()
            .chain(st.effects.iter())
            .any(|e| matches!(e.kind, EffectKind::Checkpoint));
        if let Some(loc) = st.index.checkpoint.filter(|c| c.seg == seq && !newer) {
            let f = frame_at(path, data, seg.as_ref(), loc)?;
            let bytes = f.payload.to_vec();
            let len = frame::encode(&mut st.buf, T_CHECKPOINT, |b| b.extend_from_slice(&bytes))
                .map_err(record::too_large)?;
            st.push(len, EffectKind::Checkpoint);
        }
        Ok(copied)
    }
}

/// The latest state each not-yet-durable outcome leaves, by (id, index).
/// A final outcome sticks, as it does in replay.
fn pending_outcomes<'a>(
    kinds: impl Iterator<Item = &'a EffectKind>,
) -> HashMap<(u64, u32), RcptState> {
    let mut m: HashMap<(u64, u32), RcptState> = HashMap::new();
    for k in kinds {
        if let EffectKind::Outcome { id, index, outcome } = *k {
            let e = m.entry((id, index)).or_insert(RcptState::Pending {
                attempts: 0,
                next_attempt_unix: 0,
            });
            if e.is_pending() {
                *e = outcome.state();
            }
        }
    }
    m
}

/// The frame at `loc` of a segment whose bytes are `data`, read as `seg`
/// (`frame::segment_of`: the same reading as recovery's, a damaged header
/// included).
fn frame_at<'a>(
    path: &std::path::Path,
    data: &'a [u8],
    seg: Option<&frame::Seg>,
    loc: Loc,
) -> Result<frame::Frame<'a>, JournalError> {
    let corrupt = |reason: &str| JournalError::Corrupt {
        path: path.to_path_buf(),
        offset: loc.off,
        reason: reason.to_string(),
    };
    let seg = seg.ok_or_else(|| corrupt("segment header no longer checks out"))?;
    let f = frame::parse_at(data, loc.off as usize, seg)
        .map_err(|_| corrupt("record no longer checks out"))?;
    if f.len != loc.len as usize {
        return Err(corrupt("record length changed"));
    }
    Ok(f)
}

fn read_message<'a>(
    path: &std::path::Path,
    data: &'a [u8],
    seg: Option<&frame::Seg>,
    loc: Loc,
) -> Result<record::MsgView<'a>, JournalError> {
    let f = frame_at(path, data, seg, loc)?;
    let format = seg.map_or(frame::Format::V2, |s| s.format());
    match record::decode(f.ty, f.payload, format) {
        Some(Ok(Record::Message(m))) => Ok(m),
        _ => Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            offset: loc.off,
            reason: "not a message record".into(),
        }),
    }
}
