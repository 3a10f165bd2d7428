//! The per-shard journal: what makes a `250` under `ack = "journal"` survive
//! kill -9 and power loss.
//!
//! One journal per shard, in its own directory: numbered segment files of
//! CRC-framed records (`frame.rs` has the byte layout, `record.rs` the
//! payloads). Records say
//! "this message and body were accepted", "this recipient was delivered /
//! bounced / expired / moved to another shard / deferred until T", and
//! "campaign checkpoint". A delivered recipient costs one small record, not
//! a file.
//!
//! # Writing: group commit on the blocking thread
//!
//! Appends only encode into an in-memory buffer and return a [`Ticket`];
//! nothing touches the disk on the shard's thread. [`Journal::commit`] waits
//! until the records are durable. The first waiter when the journal is idle
//! starts a flush at once; everything appended while that flush runs goes
//! into the next one, so the batch grows with the load on its own and an
//! idle journal adds no latency. A flush is `pwrite` of the whole batch
//! (rotating to a new segment at a record boundary when the active one is
//! full; the full one is synced before the next is created, so a torn write
//! can only ever be at the end of the last segment) followed by one
//! `fdatasync` per file touched, run on glommio's `spawn_blocking` thread;
//! every waiter is released only after it returns.
//!
//! Why not O_DSYNC or glommio's DMA files: DMA needs 4 KiB-aligned, padded
//! writes, so every small batch (an idle journal's usual case: one message)
//! would either waste most of a block or rewrite the last partial block, and
//! O_DSYNC makes each write its own sync, which is the opposite of grouping.
//! The cost of a plain `fdatasync` is dominated by the device flush either
//! way; the blocking thread costs a thread hop (tens of microseconds) per
//! batch, not per message. The `fsync_histogram` records the sync latency
//! so the choice can be revisited with numbers from real disks.
//!
//! Measured on the 2-core development VM (release, `tests::measure`; a DMA
//! variant was not built to compare): with the machine quiet, fdatasync p50
//! 151 µs / p99 265 µs, one committer 4.6k msg/s (about 70 µs of hop, write
//! and wake-up on top of the sync), 64 committers 98k msg/s at 32 messages
//! per sync, 512 committers 390k msg/s at 256 per sync. With the machine
//! loaded by other builds fdatasync went to ~3.9 ms p50 and the same runs
//! gave 274 / 9.7k / 44.5k msg/s: the batch grows to absorb the latency,
//! which is the point of group commit. A 1 KiB message with one recipient
//! cost 1,087 bytes and its delivered record 18 bytes (81 bytes of
//! overhead in all) in format version 1; version 2 adds 8 bytes of tag to
//! every frame and one byte (the recipient count) to a message record. Recovery of a million pending recipients: 0.35 s as
//! 10,000 messages × 100 recipients, 4.8 s as a million one-recipient
//! messages (per-message allocations dominate).
//!
//! Placement (which segment, which offset) is decided when a batch is
//! flushed, not when a record is appended, and the journal's bookkeeping
//! (`index.rs`) is only updated once a batch is durable. That is what
//! makes a failed write cheap to undo: if a batch fails (ENOSPC, EIO) the
//! files are truncated back to their last durable length, the batch's
//! records are forgotten, every waiter on it gets the error, and the next
//! batch is written where the failed one would have been. If even the
//! truncation fails, the journal refuses further writes until it is
//! reopened ([`JournalError::Poisoned`]); recovery then deals with the tail.
//!
//! # Recovery
//!
//! [`Journal::open`] replays every segment in order. A bad or short frame
//! followed by nothing valid at the end of the last segment is a torn tail
//! and is truncated with a warning; any other bad bytes are reported as a
//! [`DamagedRegion`] and reading resumes at the next intact frame: found by
//! scanning for the frame magic, and accepted only if its keyed tag checks
//! out at the offset where it was found (`frame.rs`), so a frame planted in
//! a message body is never replayed. A segment header that fails its CRC
//! costs only the header when the frames after it prove its key (their
//! tags check out under it and the file's number); a header naming another
//! number than its file is damage and its frames are not applied. Version
//! 1 segments are never resynchronised. Every decoded value is bounded
//! (`record.rs`). Nothing is dropped without being counted. [`recover_dir`]
//! does the same read-only, for another shard's directory.
//!
//! # Failed batches
//!
//! Outcome records of a failed batch are appended again (see
//! `State::requeue_outcomes`): losing one would deliver its recipient twice
//! after a restart and pin its segment. Message records are not: their
//! clients were told.
//!
//! # Retirement and compaction
//!
//! A segment is deleted once every recipient recorded in it is final, it is
//! not the active segment, and every older segment it depends on is gone
//! (`index.rs` explains why the order matters). A few deferred
//! stragglers would pin whole segments, so compaction copies the pending
//! messages of sealed segments forward (a copy of the message record with
//! only its pending recipients and their state); it runs by itself when the
//! sealed segments take more than `compact_factor` × the live bytes, or on
//! [`Journal::compact`].

mod compact;
mod error;
pub(crate) mod frame;
pub(crate) mod index;
mod io;
pub(crate) mod record;
mod recover;
mod writer;

#[cfg(test)]
mod tests;

pub use error::JournalError;
pub use io::retire_dir;
pub use recover::recover_dir;

/// What the fuzz target and the integration tests need to build segments
/// and frames exactly as the journal writes them (and as version 1 wrote
/// them), and to replay segments held in memory. Not an API.
#[doc(hidden)]
pub mod testing {
    use super::frame::{self, FRAME_MAGIC};
    use super::record::{self, T_MESSAGE};
    pub use super::recover::replay_bytes;
    use super::Outcome;

    /// A segment key.
    pub type Key = [u8; 16];

    /// A version 2 segment header.
    pub fn segment_header(seq: u64, key: &Key) -> Vec<u8> {
        frame::segment_header(seq, key).to_vec()
    }

    /// The number and key in a segment header (`None` if it is not a
    /// valid version 2 header).
    pub fn segment_key(header: &[u8]) -> Option<(u64, Key)> {
        let s = frame::parse_segment_header(header).ok()?;
        Some((s.seq, s.key?))
    }

    /// A version 1 segment header, as earlier versions wrote it.
    pub fn segment_header_v1(seq: u64) -> Vec<u8> {
        let mut h = vec![0u8; frame::SEGMENT_HEADER_V1];
        h[..8].copy_from_slice(b"SLUICEJ\x01");
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        h[16..24].copy_from_slice(&seq.to_le_bytes());
        let crc = crc32c::crc32c(&h[..24]);
        h[24..28].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn message_payload(id: u64, rcpts: &[&str], body: &[u8], with_total: bool) -> Vec<u8> {
        let mut b = Vec::new();
        let n = rcpts.len();
        let list = rcpts.iter().enumerate().map(|(i, a)| (i as u32, *a, 0, 0));
        if with_total {
            record::put_message(&mut b, (id, 1, 0, "forger@x.test"), n as u32, n, list, body);
        } else {
            record::put_varint(&mut b, id);
            record::put_varint(&mut b, 1);
            b.push(0);
            record::put_bytes(&mut b, b"forger@x.test");
            record::put_varint(&mut b, n as u64);
            for (i, a, _, _) in list {
                record::put_varint(&mut b, u64::from(i));
                record::put_bytes(&mut b, a.as_bytes());
                record::put_varint(&mut b, 0);
                record::put_varint(&mut b, 0);
            }
            b.extend_from_slice(body);
        }
        b
    }

    fn outcome_payload(id: u64, index: u32, o: &Outcome) -> (u8, Vec<u8>) {
        let mut b = Vec::new();
        record::put_outcome(&mut b, id, index, o);
        (record::outcome_type(o), b)
    }

    fn sealed(ty: u8, payload: &[u8], seq: u64, off: u64, key: &Key) -> Vec<u8> {
        let mut b = Vec::new();
        // Test input is far below the frame limit.
        let _ = frame::encode(&mut b, ty, |x| x.extend_from_slice(payload));
        frame::seal(&mut b, seq, off, key);
        b
    }

    fn v1(ty: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = FRAME_MAGIC.to_vec();
        let len = (payload.len() as u32).to_le_bytes();
        b.extend_from_slice(&len);
        let crc =
            crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(&len), &[ty]), payload);
        b.extend_from_slice(&crc.to_le_bytes());
        b.push(ty);
        b.extend_from_slice(payload);
        b
    }

    /// A message record frame as the journal writes it at offset `off` of
    /// segment `seq` whose key is `key`.
    pub fn message_frame(
        key: &Key,
        seq: u64,
        off: u64,
        id: u64,
        rcpts: &[&str],
        body: &[u8],
    ) -> Vec<u8> {
        sealed(
            T_MESSAGE,
            &message_payload(id, rcpts, body, true),
            seq,
            off,
            key,
        )
    }

    /// An outcome record frame as the journal writes it at offset `off`.
    pub fn outcome_frame(
        key: &Key,
        seq: u64,
        off: u64,
        id: u64,
        index: u32,
        o: Outcome,
    ) -> Vec<u8> {
        let (ty, p) = outcome_payload(id, index, &o);
        sealed(ty, &p, seq, off, key)
    }

    /// A message record frame as version 1 wrote it (valid anywhere).
    pub fn message_frame_v1(id: u64, rcpts: &[&str], body: &[u8]) -> Vec<u8> {
        v1(T_MESSAGE, &message_payload(id, rcpts, body, false))
    }

    /// An outcome record frame as version 1 wrote it.
    pub fn outcome_frame_v1(id: u64, index: u32, o: Outcome) -> Vec<u8> {
        let (ty, p) = outcome_payload(id, index, &o);
        v1(ty, &p)
    }
}
pub use writer::{Journal, JournalStats};

use bytes::Bytes;
use std::time::Duration;

/// How a journal is laid out and when it compacts.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// A segment is closed once it reaches this size (a batch never splits
    /// a record, so a segment can exceed it by one record). Default 64 MiB.
    pub segment_bytes: u64,
    /// Compact when the sealed segments take more than this many times the
    /// live bytes. Default 2.
    pub compact_factor: f64,
    /// Compact automatically after flushes (otherwise only on
    /// [`Journal::compact`]). Default true.
    pub auto_compact: bool,
    /// New messages are refused with [`JournalError::Backpressure`] while
    /// more than this many bytes wait to be written. Default 64 MiB.
    pub max_buffered_bytes: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes: 64 << 20,
            compact_factor: 2.0,
            auto_compact: true,
            max_buffered_bytes: 64 << 20,
        }
    }
}

/// A message as accepted, for [`Journal::append_message`].
#[derive(Debug, Clone, Copy)]
pub struct MessageRecord<'a, R: AsRef<str> = &'a str> {
    /// The queue id (unique among messages not yet final).
    pub id: u64,
    /// Envelope sender; empty for the null sender.
    pub reverse_path: &'a str,
    /// This shard's recipients; their positions are the indexes outcome
    /// records refer to.
    pub recipients: &'a [R],
    /// The message.
    pub body: &'a [u8],
    /// Declared 8-bit.
    pub eight_bit: bool,
    /// Declared SMTPUTF8.
    pub smtputf8: bool,
    /// Unix seconds when accepted.
    pub accepted_unix: u64,
}

/// What happened to one recipient, for [`Journal::append_outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the destination (final).
    Delivered,
    /// Refused permanently (final).
    Bounced,
    /// Gave up after the maximum queue lifetime (final).
    Expired,
    /// Handed to another shard's journal, which now owns it (final here).
    Moved,
    /// Deleted by the operator (final, no DSN).
    Deleted,
    /// Temporarily refused; try again later.
    Deferred {
        /// Attempts made so far.
        attempts: u32,
        /// Unix seconds of the next attempt.
        next_attempt_unix: u64,
    },
}

impl Outcome {
    /// The recipient state this outcome leaves.
    pub fn state(self) -> RcptState {
        match self {
            Outcome::Delivered => RcptState::Delivered,
            Outcome::Bounced => RcptState::Bounced,
            Outcome::Expired => RcptState::Expired,
            Outcome::Moved => RcptState::Moved,
            Outcome::Deleted => RcptState::Deleted,
            Outcome::Deferred {
                attempts,
                next_attempt_unix,
            } => RcptState::Pending {
                attempts,
                next_attempt_unix,
            },
        }
    }
}

/// A recipient's state as recorded in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptState {
    /// Still to be delivered.
    Pending {
        /// Attempts made so far.
        attempts: u32,
        /// Unix seconds of the next attempt (0: as soon as possible).
        next_attempt_unix: u64,
    },
    /// Delivered.
    Delivered,
    /// Bounced.
    Bounced,
    /// Expired.
    Expired,
    /// Moved to another shard.
    Moved,
    /// Deleted by the operator.
    Deleted,
    /// Final, but the record saying how was already retired (a compaction
    /// copy left it out).
    Final,
}

impl RcptState {
    /// Whether delivery is still to be attempted.
    pub fn is_pending(&self) -> bool {
        matches!(self, RcptState::Pending { .. })
    }
}

/// Identifies appended records for [`Journal::durable`]: their span in the
/// journal's logical byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket {
    pub(crate) start: u64,
    pub(crate) end: u64,
}

impl Ticket {
    /// A ticket covering both (for waiting on several appends at once).
    pub fn merge(self, other: Ticket) -> Ticket {
        Ticket {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The position after the records, in bytes appended since open.
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// One message rebuilt by recovery (only messages with a pending recipient).
#[derive(Debug, Clone)]
pub struct RecoveredMessage {
    /// The queue id.
    pub id: u64,
    /// Envelope sender.
    pub reverse_path: String,
    /// The message.
    pub body: Bytes,
    /// Declared 8-bit.
    pub eight_bit: bool,
    /// Declared SMTPUTF8.
    pub smtputf8: bool,
    /// Unix seconds when accepted.
    pub accepted_unix: u64,
    /// Every recipient still known, by original index, with its state.
    pub recipients: Vec<RecoveredRcpt>,
}

/// One recipient of a [`RecoveredMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredRcpt {
    /// Its index in the original message (what outcomes refer to).
    pub index: u32,
    /// The mailbox (empty when only a copy that left it out survives).
    pub addr: String,
    /// Its state.
    pub state: RcptState,
}

/// Bytes that could not be read as records (reported, never silently
/// skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRegion {
    /// Segment number.
    pub segment: u64,
    /// Byte offset in the segment file.
    pub offset: u64,
    /// Length of the unreadable span.
    pub len: u64,
    /// What was wrong.
    pub reason: String,
}

/// What recovery found, for the startup log.
#[derive(Debug, Clone, Default)]
pub struct RecoveryStats {
    /// Segment files read.
    pub segments: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Intact records replayed.
    pub records: u64,
    /// Messages with a pending recipient (returned).
    pub messages: u64,
    /// Recipients seen in message records.
    pub recipients: u64,
    /// Recipients already final.
    pub recipients_final: u64,
    /// Recipients pending (to be delivered).
    pub recipients_pending: u64,
    /// Outcome records about messages no longer in the journal.
    pub orphan_records: u64,
    /// Intact records of a type this version does not know.
    pub unknown_records: u64,
    /// Bytes cut off the end of the last segment (a torn final write), and
    /// where: (segment, offset).
    pub torn_tail: Option<(u64, u64, u64)>,
    /// Unreadable spans elsewhere; records after them were recovered.
    pub damaged: Vec<DamagedRegion>,
    /// Time taken.
    pub elapsed: Duration,
}

/// Everything recovered from a journal directory.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Messages with pending recipients, in journal order.
    pub messages: Vec<RecoveredMessage>,
    /// The latest campaign checkpoint, if any.
    pub checkpoint: Option<Vec<u8>>,
    /// Counts and damage.
    pub stats: RecoveryStats,
}
