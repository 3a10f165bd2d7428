//! Envelopes a session accepted and has not yet handed to their shards.
//!
//! A session collects every message completed in one pass over its input
//! (a pipelined client can finish many), then sends one batch per shard:
//! one channel operation per shard per pass, not per message. The 250s for
//! those messages are written only after the batches are queued, which is
//! what `ack = "memory"` promises.

use crate::runtime::Core;
use crate::shard::hash::{domain_of, shard_of};
use crate::shard::{Batch, Envelope};
use bytes::Bytes;
use std::sync::Arc;

/// Per-shard batches under construction.
pub struct Outbox {
    batches: Vec<Batch>,
}

impl Outbox {
    /// An empty outbox for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Outbox {
            batches: (0..shards).map(|_| Vec::new()).collect(),
        }
    }

    /// Splits one message's recipients by owning shard. The body is shared,
    /// never copied; a message whose recipients all live on one shard (the
    /// common case) moves its recipient list without re-allocating it.
    pub fn add(&mut self, id: u64, reverse_path: &str, recipients: Vec<String>, body: Bytes) {
        let n = self.batches.len();
        let sender: Arc<str> = Arc::from(reverse_path);
        let first = recipients.first().map(|r| shard_of(domain_of(r), n));
        let single = first.filter(|&s| recipients.iter().all(|r| shard_of(domain_of(r), n) == s));
        if let Some(s) = single {
            if let Some(b) = self.batches.get_mut(s) {
                b.push(Envelope {
                    id,
                    reverse_path: sender,
                    recipients,
                    body,
                });
            }
            return;
        }
        let mut split: Vec<Vec<String>> = (0..n).map(|_| Vec::new()).collect();
        for r in recipients {
            let s = shard_of(domain_of(&r), n);
            if let Some(v) = split.get_mut(s) {
                v.push(r);
            }
        }
        for (s, rcpts) in split.into_iter().enumerate() {
            if rcpts.is_empty() {
                continue;
            }
            if let Some(b) = self.batches.get_mut(s) {
                b.push(Envelope {
                    id,
                    reverse_path: sender.clone(),
                    recipients: rcpts,
                    body: body.clone(),
                });
            }
        }
    }

    /// Hands every pending batch to its shard. Waits (backpressure) when a
    /// remote shard's channel is full.
    pub async fn flush(&mut self, core: &Core) -> Result<(), ()> {
        for (s, batch) in self.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            core.deliver(s, batch).await?;
        }
        Ok(())
    }
}
