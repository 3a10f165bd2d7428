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
    accepted_messages: AtomicU64,
    accepted_recipients: AtomicU64,
}

impl ShardLoad {
    /// Called only by the owning shard.
    pub fn publish(&self, b: &Backlog) {
        self.queued_messages.store(b.queued_messages, Relaxed);
        self.queued_bytes.store(b.queued_bytes, Relaxed);
        self.accepted_messages.store(b.accepted_messages, Relaxed);
        self.accepted_recipients
            .store(b.accepted_recipients, Relaxed);
    }

    /// A recent copy, for admission decisions and status.
    pub fn snapshot(&self) -> Backlog {
        Backlog {
            queued_messages: self.queued_messages.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed),
            accepted_messages: self.accepted_messages.load(Relaxed),
            accepted_recipients: self.accepted_recipients.load(Relaxed),
        }
    }

    /// Whether this shard is past either bound once `pending` (messages,
    /// bytes a session accepted and has not handed over yet) reaches it.
    pub fn over(&self, pending: (u64, u64), max_messages: u64, max_bytes: u64) -> bool {
        self.queued_messages.load(Relaxed).saturating_add(pending.0) >= max_messages
            || self.queued_bytes.load(Relaxed).saturating_add(pending.1) >= max_bytes
    }
}
