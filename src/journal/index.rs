//! The journal's own bookkeeping: which recipients are still pending, where
//! each message's latest record lives, and which segments are still needed.
//!
//! Replay at startup and the live journal (after each durable batch) drive
//! the same [`Index::apply_message`] / [`Index::apply_outcome`] /
//! [`Index::apply_checkpoint`], so what is retired live is exactly what
//! recovery would no longer need.
//!
//! Segments are retired out of order, which needs one more rule than "all
//! its recipients are final". A record about a message whose record sits in
//! an older segment (an outcome, or a compaction copy) is only safe to lose
//! once that older segment is gone too; otherwise replay would find the old
//! message record without the later record that finalised it, and deliver
//! again. So every segment keeps `refs`, the older segments its records
//! depend on, and is retired only after all of them.

use super::RcptState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes message ids (our own queue ids, not attacker-chosen) with one
/// multiply, rather than SipHash: replay does a few map operations per
/// record.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

/// A map keyed by message id.
pub(crate) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seg: u64,
    pub off: u64,
    pub len: u32,
}

/// A message with at least one pending recipient.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Its latest message record (original or compaction copy).
    pub loc: Loc,
    /// Recipients still pending.
    pub pending: u32,
    /// State by original recipient index; `None` where a copy left a
    /// recipient out and nothing earlier is known about it.
    pub slots: Vec<Option<RcptState>>,
}

/// What the journal knows about one segment file.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegInfo {
    /// Bytes in the file.
    pub len: u64,
    /// Pending recipients of the messages whose latest record is here.
    pub pending: u64,
    /// Bytes of records here that are still needed (message records with
    /// pending recipients, the latest checkpoint).
    pub live: u64,
    /// Older segments this one's records depend on (see the module doc).
    pub refs: BTreeSet<u64>,
    /// Messages whose record was here when written (may be stale; checked
    /// against the index before use).
    pub msgs: Vec<u64>,
    /// Holds the latest checkpoint.
    pub checkpoint: bool,
}

/// Counters kept while applying records.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    /// Recipients first seen in a message record.
    pub rcpts_seen: u64,
    /// Recipients that became final.
    pub finals: u64,
    /// Outcome records for messages not (or no longer) in the index.
    pub orphans: u64,
    /// Outcome records for recipients already final.
    pub redundant: u64,
    /// Original message records that replaced a message still pending.
    pub replaced: u64,
}

/// Whether a message is still pending after a record was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It has pending recipients.
    Live,
    /// It has none left and was dropped from the index.
    Gone,
    /// The record changed nothing.
    Ignored,
}

/// The bookkeeping itself.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub msgs: IdMap<Entry>,
    pub segs: BTreeMap<u64, SegInfo>,
    pub checkpoint: Option<Loc>,
    pub counts: Counts,
}

impl Index {
    /// The segment's info, created if new.
    pub fn seg(&mut self, seq: u64) -> &mut SegInfo {
        self.segs.entry(seq).or_default()
    }

    /// Applies a message record at `loc`. `rcpts` are (index, state) pairs;
    /// for an original record all pending. A copy replaces the pending set:
    /// a recipient pending before and not listed was finalised by a record
    /// the copy already accounted for.
    pub fn apply_message(
        &mut self,
        id: u64,
        loc: Loc,
        copy: bool,
        rcpts: impl Iterator<Item = (u32, RcptState)>,
    ) -> Applied {
        let old = self.msgs.remove(&id);
        let mut slots = Vec::new();
        if let Some(old) = old {
            self.detach(&old);
            if old.loc.seg < loc.seg {
                self.seg(loc.seg).refs.insert(old.loc.seg);
            }
            if copy {
                slots = old.slots;
                for s in slots
                    .iter_mut()
                    .filter(|s| matches!(s, Some(RcptState::Pending { .. })))
                {
                    *s = Some(RcptState::Final);
                    self.counts.finals += 1;
                }
            } else {
                self.counts.replaced += 1;
            }
        }
        for (i, st) in rcpts {
            let i = i as usize;
            if slots.len() <= i {
                slots.resize(i + 1, None);
            }
            if let Some(slot) = slots.get_mut(i) {
                match slot {
                    None => self.counts.rcpts_seen += 1,
                    // A copy lists it pending: undo the provisional final.
                    Some(RcptState::Final) if st.is_pending() => self.counts.finals -= 1,
                    Some(_) => {}
                }
                *slot = Some(st);
            }
        }
        let pending = slots
            .iter()
            .filter(|s| matches!(s, Some(RcptState::Pending { .. })))
            .count() as u32;
        if pending == 0 {
            return Applied::Gone;
        }
        let seg = self.seg(loc.seg);
        seg.pending += u64::from(pending);
        seg.live += u64::from(loc.len);
        seg.msgs.push(id);
        self.msgs.insert(
            id,
            Entry {
                loc,
                pending,
                slots,
            },
        );
        Applied::Live
    }

    /// Applies an outcome record found in segment `rec_seg`.
    pub fn apply_outcome(
        &mut self,
        id: u64,
        index: u32,
        outcome: super::Outcome,
        rec_seg: u64,
    ) -> Applied {
        let Some(e) = self.msgs.get_mut(&id) else {
            self.counts.orphans += 1;
            return Applied::Ignored;
        };
        let Some(slot @ Some(RcptState::Pending { .. })) = e.slots.get_mut(index as usize) else {
            self.counts.redundant += 1;
            return Applied::Ignored;
        };
        let new = outcome.state();
        *slot = Some(new);
        let (msg_seg, len) = (e.loc.seg, e.loc.len);
        let mut gone = false;
        if !new.is_pending() {
            e.pending -= 1;
            gone = e.pending == 0;
            self.counts.finals += 1;
            let seg = self.seg(msg_seg);
            seg.pending = seg.pending.saturating_sub(1);
            if gone {
                seg.live = seg.live.saturating_sub(u64::from(len));
            }
        }
        if msg_seg < rec_seg {
            self.seg(rec_seg).refs.insert(msg_seg);
        }
        if gone {
            self.msgs.remove(&id);
            Applied::Gone
        } else {
            Applied::Live
        }
    }

    /// Applies a checkpoint record at `loc`: the latest one wins.
    pub fn apply_checkpoint(&mut self, loc: Loc) {
        if let Some(old) = self.checkpoint.take() {
            let seg = self.seg(old.seg);
            seg.checkpoint = false;
            seg.live = seg.live.saturating_sub(u64::from(old.len));
        }
        let seg = self.seg(loc.seg);
        seg.checkpoint = true;
        seg.live += u64::from(loc.len);
        self.checkpoint = Some(loc);
    }

    /// Removes a message's contribution to its segment's counters.
    fn detach(&mut self, e: &Entry) {
        let seg = self.seg(e.loc.seg);
        seg.pending = seg.pending.saturating_sub(u64::from(e.pending));
        seg.live = seg.live.saturating_sub(u64::from(e.loc.len));
    }

    /// Segments that may be deleted now: not `active`, nothing pending or
    /// live in them, and every segment they depend on already deleted.
    pub fn retirable(&self, active: Option<u64>) -> Vec<u64> {
        self.retire_plan(active)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// Segments that may be deleted, in waves: each wave only depends on
    /// segments already gone or deleted in an earlier wave, so deleting a
    /// wave, syncing the directory, then the next, is safe whatever the
    /// crash point.
    pub fn retire_plan(&self, active: Option<u64>) -> Vec<Vec<u64>> {
        let mut unneeded: Vec<(u64, &SegInfo)> = self
            .segs
            .iter()
            .filter(|(&seq, s)| Some(seq) != active && s.pending == 0 && !s.checkpoint)
            .map(|(&seq, s)| (seq, s))
            .collect();
        let mut gone = BTreeSet::new();
        let mut waves = Vec::new();
        loop {
            let wave: Vec<u64> = unneeded
                .iter()
                .filter(|(_, s)| {
                    s.refs
                        .iter()
                        .all(|r| gone.contains(r) || !self.segs.contains_key(r))
                })
                .map(|(seq, _)| *seq)
                .collect();
            if wave.is_empty() {
                return waves;
            }
            unneeded.retain(|(seq, _)| !wave.contains(seq));
            gone.extend(wave.iter().copied());
            waves.push(wave);
        }
    }

    /// Bytes in all segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.segs.values().map(|s| s.len).sum()
    }

    /// Bytes of records still needed.
    pub fn live_bytes(&self) -> u64 {
        self.segs.values().map(|s| s.live).sum()
    }

    /// Pending recipients in the whole journal.
    pub fn pending(&self) -> u64 {
        self.segs.values().map(|s| s.pending).sum()
    }
}
