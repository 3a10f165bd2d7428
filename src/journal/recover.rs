//! Replaying a journal directory: rebuilds every message that still has a
//! pending recipient, the journal's bookkeeping, and a report of anything
//! that could not be read.
//!
//! One pass over the segments, oldest first. A message's body is copied out
//! when its record is read and dropped again as soon as a later record
//! finalises its last recipient, so memory follows what is pending, not
//! what is on disk.
//!
//! After a damaged frame, reading resumes at the next frame whose tag
//! checks out where it was found (`frame.rs`): a frame planted inside a
//! message body is never accepted. In a version 1 segment (no tags) that
//! cannot be told, so nothing after its first bad frame is applied; the
//! rest of such a segment is reported as damage, or cut when it is the
//! torn tail of the last segment, which is decided from the bytes that are
//! there (`frame::looks_torn`), never by scanning for later frames.
//!
//! A segment header that fails its CRC costs the header, not the segment:
//! its frames are read with the key found in its place and the number in
//! the file name, and only frames whose tag checks out are accepted
//! (`frame::salvage`). A header that checks out but names another number
//! than its file (a copy, a backup restored under another name) is damage
//! and none of its frames are applied: its records would be replayed a
//! second time, out of order.

use super::frame::{self, Bad, BadHeader, Format, Seg, SEGMENT_HEADER};
use super::index::{Applied, IdMap, Index, Loc};
use super::io::{list_segments, read_segment};
use super::record::{self, Record, F_COPY, F_EIGHT_BIT, F_SMTPUTF8};
use super::{DamagedRegion, JournalError, RcptState, RecoveredMessage, RecoveredRcpt, Recovery};
use bytes::Bytes;
use std::path::Path;
use std::time::Instant;

/// The result of a replay: what the caller gets and what the journal keeps.
pub(crate) struct Replay {
    pub recovery: Recovery,
    pub index: Index,
    /// The highest segment number seen.
    pub max_seq: u64,
    /// (segment, offset) of a torn tail to cut.
    pub torn: Option<(u64, u64)>,
}

/// Envelope data of a message while it has pending recipients.
struct Held {
    reverse_path: String,
    body: Bytes,
    flags: u8,
    accepted_unix: u64,
    addrs: Vec<String>,
}

/// Reads every record in `dir` without changing anything: for another
/// shard's directory (re-homing after the shard count changed), or for
/// inspection. A torn tail is reported in the stats but not cut.
pub fn recover_dir(dir: &Path) -> Result<Recovery, JournalError> {
    replay(dir).map(|r| r.recovery)
}

/// Replays `dir`.
pub(crate) fn replay(dir: &Path) -> Result<Replay, JournalError> {
    replay_from(dir, list_segments(dir)?, read_segment)
}

/// Replays segments given in memory as (number, bytes), oldest first: the
/// fuzz target's way in. Never touches the file system.
#[doc(hidden)]
pub fn replay_bytes(segments: &[(u64, Vec<u8>)]) -> Result<Recovery, JournalError> {
    let segs = segments
        .iter()
        .enumerate()
        .map(|(i, (seq, _))| (*seq, std::path::PathBuf::from(i.to_string())))
        .collect();
    let read = |p: &Path, buf: &mut Vec<u8>| {
        buf.clear();
        let i: usize = p
            .to_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        if let Some((_, b)) = segments.get(i) {
            buf.extend_from_slice(b);
        }
        Ok(())
    };
    replay_from(Path::new("memory"), segs, read).map(|r| r.recovery)
}

fn replay_from(
    dir: &Path,
    segs: Vec<(u64, std::path::PathBuf)>,
    mut read_segment: impl FnMut(&Path, &mut Vec<u8>) -> Result<(), JournalError>,
) -> Result<Replay, JournalError> {
    let started = Instant::now();
    let mut index = Index::default();
    let mut held: IdMap<Held> = IdMap::default();
    let mut rec = Recovery::default();
    let mut torn = None;
    let mut buf = Vec::new();
    let n = segs.len();
    for (i, (seq, path)) in segs.iter().enumerate() {
        let seq = *seq;
        read_segment(path, &mut buf)?;
        let last = i + 1 == n;
        rec.stats.segments += 1;
        rec.stats.bytes += buf.len() as u64;
        index.seg(seq).len = buf.len() as u64;
        let damage = |rec: &mut Recovery, offset: usize, len: usize, reason: &str| {
            tracing::warn!(segment = %path.display(), offset, len, reason, "journal: damaged region skipped; records after it are recovered");
            rec.stats.damaged.push(DamagedRegion {
                segment: seq,
                offset: offset as u64,
                len: len as u64,
                reason: reason.to_string(),
            });
        };
        let (ctx, mut pos) = match frame::parse_segment_header(&buf) {
            Ok(s) if s.seq == seq => (s, s.header_len()),
            Err(BadHeader::Version(v)) => {
                return Err(JournalError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!(
                        "segment format version {v} is newer than this build reads (2); \
                         run the version that wrote it, or a newer one"
                    ),
                });
            }
            Ok(s) => {
                // A copy or a renamed file (a backup restored under another
                // name): its records are already applied from the original,
                // or belong at another place in the order; replaying them
                // here would make delivered recipients pending again.
                damage(
                    &mut rec,
                    0,
                    buf.len(),
                    &format!(
                        "segment header names segment {:016x}, not the file's number \
                         (a copy or a renamed file): not read, left in place",
                        s.seq
                    ),
                );
                // Out of the bookkeeping, so retirement never deletes what
                // may be an operator's only copy of that segment.
                index.segs.remove(&seq);
                continue;
            }
            Err(BadHeader::Invalid) if buf.len() < SEGMENT_HEADER && last => {
                torn = Some((seq, 0));
                (Seg { seq, key: None }, buf.len())
            }
            Err(BadHeader::Invalid) => match frame::salvage(&buf, seq) {
                Some((s, first)) => {
                    damage(
                        &mut rec,
                        0,
                        first,
                        "bad segment header; the frames after it that prove its key are read",
                    );
                    (s, first)
                }
                None => {
                    damage(&mut rec, 0, buf.len(), "bad segment header");
                    continue;
                }
            },
        };
        let format = ctx.format();
        while pos < buf.len() {
            let f = match frame::parse_at(&buf, pos, &ctx) {
                Ok(f) => f,
                Err(bad) => {
                    let next = match format {
                        // Whatever looks intact after this may be a frame
                        // that was inside a body: never looked for (module
                        // doc).
                        Format::V1 => None,
                        Format::V2 => frame::resync(&buf, pos, &ctx),
                    };
                    match next {
                        Some(next) => {
                            damage(
                                &mut rec,
                                pos,
                                next - pos,
                                if bad == Bad::Short {
                                    "frame overruns the next one"
                                } else {
                                    "bad frame"
                                },
                            );
                            pos = next;
                            continue;
                        }
                        None if last
                            && (format == Format::V2 || frame::looks_torn(&buf, pos, &ctx)) =>
                        {
                            torn = Some((seq, pos as u64));
                        }
                        None if format == Format::V1 => damage(
                            &mut rec,
                            pos,
                            buf.len() - pos,
                            "bad frame in a version 1 segment; the rest of it is not read",
                        ),
                        None => damage(
                            &mut rec,
                            pos,
                            buf.len() - pos,
                            "bad frame at the end of a sealed segment",
                        ),
                    }
                    break;
                }
            };
            let loc = Loc {
                seg: seq,
                off: pos as u64,
                len: f.len as u32,
            };
            match record::decode(f.ty, f.payload, format) {
                None => {
                    tracing::warn!(segment = %path.display(), offset = pos, ty = f.ty, "journal: record of unknown type skipped");
                    rec.stats.unknown_records += 1;
                }
                Some(Err(reason)) => damage(&mut rec, pos, f.len, reason),
                Some(Ok(r)) => {
                    rec.stats.records += 1;
                    apply(&mut index, &mut held, &mut rec, loc, r);
                }
            }
            pos += f.len;
        }
        if let Some((s, at)) = torn.filter(|t| t.0 == seq) {
            let bytes = buf.len() as u64 - at;
            tracing::warn!(segment = %path.display(), offset = at, bytes, "journal: torn tail (an interrupted write) will be truncated");
            rec.stats.torn_tail = Some((s, at, bytes));
        }
    }
    let mut entries: Vec<_> = index.msgs.iter().collect();
    entries.sort_unstable_by_key(|(_, e)| (e.loc.seg, e.loc.off));
    for (&id, e) in entries {
        let Some(h) = held.remove(&id) else { continue };
        let recipients: Vec<RecoveredRcpt> = e
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let state = (*s)?;
                let addr = h.addrs.get(i).cloned().unwrap_or_default();
                Some(RecoveredRcpt {
                    index: i as u32,
                    addr,
                    state,
                })
            })
            .collect();
        rec.stats.recipients_pending += u64::from(e.pending);
        rec.messages.push(RecoveredMessage {
            id,
            reverse_path: h.reverse_path,
            body: h.body,
            eight_bit: h.flags & F_EIGHT_BIT != 0,
            smtputf8: h.flags & F_SMTPUTF8 != 0,
            accepted_unix: h.accepted_unix,
            recipients,
        });
    }
    rec.stats.messages = rec.messages.len() as u64;
    rec.stats.recipients = index.counts.rcpts_seen;
    rec.stats.recipients_final = index.counts.finals;
    rec.stats.orphan_records = index.counts.orphans;
    rec.stats.elapsed = started.elapsed();
    let max_seq = segs.last().map_or(0, |s| s.0);
    if !rec.stats.damaged.is_empty() || torn.is_some() {
        tracing::warn!(dir = %dir.display(), damaged = rec.stats.damaged.len(), torn = ?rec.stats.torn_tail, "journal: recovered with damage");
    }
    Ok(Replay {
        recovery: rec,
        index,
        max_seq,
        torn,
    })
}

fn apply(index: &mut Index, held: &mut IdMap<Held>, rec: &mut Recovery, loc: Loc, r: Record<'_>) {
    match r {
        Record::Message(m) => {
            let copy = m.flags & F_COPY != 0;
            let rcpts = m.rcpts.iter().map(|r| {
                (
                    r.index,
                    RcptState::Pending {
                        attempts: r.attempts,
                        next_attempt_unix: r.next_attempt_unix,
                    },
                )
            });
            if index.apply_message(m.id, loc, copy, rcpts) == Applied::Gone {
                held.remove(&m.id);
                return;
            }
            // A copy of a message already held adds nothing new but its
            // addresses; anything else starts afresh.
            if !(copy && held.contains_key(&m.id)) {
                let h = Held {
                    reverse_path: m.reverse_path.to_string(),
                    body: Bytes::copy_from_slice(m.body),
                    flags: m.flags & !F_COPY,
                    accepted_unix: m.accepted_unix,
                    addrs: Vec::new(),
                };
                held.insert(m.id, h);
            }
            let Some(h) = held.get_mut(&m.id) else { return };
            for r in &m.rcpts {
                let i = r.index as usize;
                if h.addrs.len() <= i {
                    h.addrs.resize(i + 1, String::new());
                }
                if let Some(a) = h.addrs.get_mut(i) {
                    if a.is_empty() {
                        a.push_str(r.addr);
                    }
                }
            }
        }
        Record::Outcome {
            id,
            index: i,
            outcome,
        } => {
            if index.apply_outcome(id, i, outcome, loc.seg) == Applied::Gone {
                held.remove(&id);
            }
        }
        Record::Checkpoint(bytes) => {
            index.apply_checkpoint(loc);
            rec.checkpoint = Some(bytes.to_vec());
        }
    }
}
