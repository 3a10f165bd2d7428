//! Shard load published for other cores to read.
//!
//! Each counter has exactly one writer (the owning shard) and is read with
//! relaxed loads by ingress on every core to decide admission. No
//! read-modify-write crosses cores: the owner keeps the truth in a plain
//! [`Backlog`] and stores copies.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A shard's own counters (plain integers, owned by the shard).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Messages waiting in the shard.
    pub queued_messages: u64,
    /// Body bytes waiting in the shard (a shared body counts on each shard).
    pub queued_bytes: u64,
    /// Recipients not final yet in the shard: one message may carry a
    /// thousand, so messages and bytes alone do not bound its memory.
    pub queued_recipients: u64,
    /// Envelopes taken in since start.
    pub accepted_messages: u64,
    /// Recipients taken in since start.
    pub accepted_recipients: u64,
}

/// The published copy of a shard's [`Backlog`].
#[derive(Debug, Default)]
pub struct ShardLoad {
    queued_messages: AtomicU64,
    queued_bytes: AtomicU64,
    queued_recipients: AtomicU64,
    accepted_messages: AtomicU64,
    accepted_recipients: AtomicU64,
}

impl ShardLoad {
    /// Called only by the owning shard.
    pub fn publish(&self, b: &Backlog) {
        self.queued_messages.store(b.queued_messages, Relaxed);
        self.queued_bytes.store(b.queued_bytes, Relaxed);
        self.queued_recipients.store(b.queued_recipients, Relaxed);
        self.accepted_messages.store(b.accepted_messages, Relaxed);
        self.accepted_recipients
            .store(b.accepted_recipients, Relaxed);
    }

    /// A recent copy, for admission decisions and status.
    pub fn snapshot(&self) -> Backlog {
        Backlog {
            queued_messages: self.queued_messages.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed),
            queued_recipients: self.queued_recipients.load(Relaxed),
            accepted_messages: self.accepted_messages.load(Relaxed),
            accepted_recipients: self.accepted_recipients.load(Relaxed),
        }
    }

    /// Whether this shard is past any bound once `pending` (what a session
    /// accepted and has not handed over yet) reaches it.
    pub fn over(&self, pending: Pending, bounds: &Bounds) -> bool {
        self.queued_messages
            .load(Relaxed)
            .saturating_add(pending.messages)
            >= bounds.messages
            || self
                .queued_bytes
                .load(Relaxed)
                .saturating_add(pending.bytes)
                >= bounds.bytes
            || self
                .queued_recipients
                .load(Relaxed)
                .saturating_add(pending.recipients)
                >= bounds.recipients
    }
}

/// What a session accepted for one shard and has not handed over yet.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Envelopes.
    pub messages: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Recipients.
    pub recipients: u64,
}

/// The backlog bounds of one shard (`[backpressure]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Messages.
    pub messages: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Recipients.
    pub recipients: u64,
}
