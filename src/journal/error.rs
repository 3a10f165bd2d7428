//! What can go wrong with the journal, in terms the caller can act on.
//!
//! Errors are `Clone` because one failed batch is reported to every session
//! that waited on it; the underlying `io::Error` is shared behind an `Arc`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A journal operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// The file system is full (ENOSPC or EDQUOT). Nothing already durable
    /// was lost; the records of the failed batch were not kept. Answer
    /// `452 4.3.1` and try again once space returns.
    #[error("journal {}: no space left on the device while {op}: {source}", path.display())]
    NoSpace {
        /// The file or directory being written.
        path: PathBuf,
        /// What the journal was doing.
        op: &'static str,
        /// The system error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Any other I/O error. As with [`JournalError::NoSpace`], records of a
    /// failed batch were not kept and earlier durable records are intact.
    #[error("journal {}: {op} failed: {source}", path.display())]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// What the journal was doing.
        op: &'static str,
        /// The system error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A record read back from disk did not check out (bad CRC, bad
    /// framing or an undecodable payload).
    #[error("journal {}: corrupt record at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record in that file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// More than `max_buffered_bytes` of records are waiting to be written:
    /// the disk is not keeping up. Refuse new mail temporarily (`452`).
    #[error("journal is {buffered} bytes behind the disk (limit {limit}); refusing new messages until it catches up")]
    Backpressure {
        /// Bytes waiting to be written.
        buffered: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A message with this id is already in the journal and not final.
    #[error("message {id} is already in the journal")]
    DuplicateMessage {
        /// The message id.
        id: u64,
    },
    /// An outcome names a message or recipient the journal does not hold
    /// as pending (unknown id, index out of range, or already final).
    #[error("message {id} recipient {index} is not pending in the journal")]
    UnknownRecipient {
        /// The message id.
        id: u64,
        /// The recipient's index in the original message.
        index: u32,
    },
    /// A record is too large to be framed.
    #[error("journal record of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge {
        /// The payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another process (or another shard) holds this journal directory.
    #[error("journal {} is in use by another process", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A failed write could not be rolled back, so the journal refuses
    /// further writes until it is reopened (recovery then sorts out the
    /// tail). Seen only when the disk itself is failing.
    #[error("journal is unusable until restart: {reason}")]
    Poisoned {
        /// Why.
        reason: String,
    },
}

impl JournalError {
    /// Classifies an I/O error: ENOSPC and EDQUOT become `NoSpace`.
    pub(crate) fn io(path: &Path, op: &'static str, e: io::Error) -> Self {
        let no_space = matches!(
            e.raw_os_error(),
            Some(c) if c == nix::errno::Errno::ENOSPC as i32 || c == nix::errno::Errno::EDQUOT as i32
        );
        let path = path.to_path_buf();
        let source = Arc::new(e);
        if no_space {
            JournalError::NoSpace { path, op, source }
        } else {
            JournalError::Io { path, op, source }
        }
    }

    /// Whether this is the disk-full case (answer `452 4.3.1`).
    pub fn is_no_space(&self) -> bool {
        matches!(self, JournalError::NoSpace { .. })
    }
}
