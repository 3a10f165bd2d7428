//! Envelopes a session accepted and has not yet handed to their shards.
//!
//! A session collects every message completed in one pass over its input
//! (a pipelined client can finish many), then sends one batch per shard:
//! one channel operation per shard per pass, not per message. The 250s for
//! those messages are written only after the batches are queued, which is
//! what `ack = "memory"` promises. Under `ack = "downstream"` every part of
//! a message carries the same [`Ack`], which the shards complete.

use crate::runtime::Core;
use crate::shard::ack::Ack;
use crate::shard::hash::{domain_of, shard_of};
use crate::shard::Pending;
use crate::shard::{Batch, Envelope};
use std::sync::Arc;

/// Per-shard batches under construction.
pub struct Outbox {
    batches: Vec<Batch>,
    /// Per shard: what `batches` holds, for admission.
    pending: Vec<Pending>,
}

impl Outbox {
    /// An empty outbox for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Outbox {
            batches: (0..shards).map(|_| Vec::new()).collect(),
            pending: vec![Pending::default(); shards],
        }
    }

    /// Splits one message's recipients by owning shard. The body is shared,
    /// never copied; a message whose recipients all live on one shard (the
    /// common case) moves its recipient list without re-allocating it.
    pub fn add(&mut self, id: u64, m: crate::smtp::Message, ack: Option<Ack>) {
        let crate::smtp::Message {
            reverse_path,
            recipients,
            body,
            eight_bit,
            smtputf8,
            ..
        } = m;
        let n = self.batches.len();
        let sender: Arc<str> = Arc::from(reverse_path.as_str());
        let first = recipients.first().map(|r| shard_of(domain_of(r), n));
        let single = first.filter(|&s| recipients.iter().all(|r| shard_of(domain_of(r), n) == s));
        if let Some(s) = single {
            self.count(s, body.len(), recipients.len());
            if let Some(b) = self.batches.get_mut(s) {
                b.push(Envelope {
                    id,
                    reverse_path: sender,
                    recipients,
                    body,
                    eight_bit,
                    smtputf8,
                    ack,
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
            self.count(s, body.len(), rcpts.len());
            if let Some(b) = self.batches.get_mut(s) {
                b.push(Envelope {
                    id,
                    reverse_path: sender.clone(),
                    recipients: rcpts,
                    body: body.clone(),
                    eight_bit,
                    smtputf8,
                    ack: ack.clone(),
                });
            }
        }
    }

    fn count(&mut self, shard: usize, bytes: usize, recipients: usize) {
        if let Some(p) = self.pending.get_mut(shard) {
            p.messages += 1;
            p.bytes += bytes as u64;
            p.recipients += recipients as u64;
        }
    }

    /// Per shard, the envelopes, body bytes and recipients not yet handed
    /// over: what the shard's published load does not count yet.
    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// How many shards a message with these recipients is split over (the
    /// parts a journal acknowledgement waits for).
    pub fn parts(&self, recipients: &[String]) -> usize {
        let n = self.batches.len();
        let mut seen = [0u64; 4];
        let mut parts = 0;
        for r in recipients {
            let s = shard_of(domain_of(r), n) % 256;
            let (word, bit) = (s / 64, 1u64 << (s % 64));
            if let Some(w) = seen.get_mut(word) {
                if *w & bit == 0 {
                    *w |= bit;
                    parts += 1;
                }
            }
        }
        parts
    }

    /// Hands every pending batch to its shard. Waits (backpressure) when a
    /// remote shard's channel is full.
    pub async fn flush(&mut self, core: &Core) -> Result<(), ()> {
        for (s, batch) in self.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let batch = std::mem::take(batch);
            if let Some(p) = self.pending.get_mut(s) {
                *p = Pending::default();
            }
            core.deliver(s, batch).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::hash::shard_of;
    use bytes::Bytes;

    fn msg(from: &str, recipients: Vec<String>, body: Bytes) -> crate::smtp::Message {
        crate::smtp::Message {
            reverse_path: from.to_string(),
            recipients,
            body,
            eight_bit: false,
            smtputf8: false,
            helo: "h".into(),
            auth_user: None,
        }
    }

    #[test]
    fn one_body_is_shared_by_every_shard_envelope() {
        // Find two domains owned by different shards of 2.
        let a = (0..)
            .map(|i| format!("a{i}.test"))
            .find(|d| shard_of(d, 2) == 0)
            .unwrap();
        let b = (0..)
            .map(|i| format!("b{i}.test"))
            .find(|d| shard_of(d, 2) == 1)
            .unwrap();
        let body = Bytes::from(vec![b'x'; 1000]);
        let mut o = Outbox::new(2);
        let rcpts = vec![format!("1@{a}"), format!("2@{b}"), format!("3@{a}")];
        o.add(7, msg("s@x.test", rcpts, body.clone()), None);
        assert_eq!(o.batches[0].len(), 1);
        assert_eq!(o.batches[1].len(), 1);
        let e0 = &o.batches[0][0];
        let e1 = &o.batches[1][0];
        assert_eq!(e0.recipients, vec![format!("1@{a}"), format!("3@{a}")]);
        assert_eq!(e1.recipients, vec![format!("2@{b}")]);
        // The same allocation, not a copy.
        assert_eq!(e0.body.as_ptr(), body.as_ptr());
        assert_eq!(e1.body.as_ptr(), body.as_ptr());
        assert!(Arc::ptr_eq(&e0.reverse_path, &e1.reverse_path));
    }

    #[test]
    fn single_shard_message_keeps_its_recipient_list() {
        let mut o = Outbox::new(4);
        let rcpts = vec!["a@same.test".to_string(), "b@SAME.test".to_string()];
        let ptr = rcpts.as_ptr();
        o.add(1, msg("", rcpts, Bytes::from_static(b"x")), None);
        let s = shard_of("same.test", 4);
        assert_eq!(o.batches[s][0].recipients.as_ptr(), ptr);
    }
}
