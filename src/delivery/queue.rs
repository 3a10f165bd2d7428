//! What a shard keeps per message and per recipient while delivering.
//!
//! A message's body and sender live once in a [`Msg`] shared by reference
//! count; each recipient is a small [`Rcpt`] record pointing at it. A
//! destination's queue is a deque of such records, so a message with 1,000
//! recipients costs one body and 1,000 small records — never 1,000 copies.
//! Recipients of one message arrive together and stay adjacent in the
//! queue, which is how a connection finds the run of recipients that share
//! sender and body and sends them in one transaction.

use bytes::Bytes;
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

/// One accepted message, as far as this shard is concerned.
#[derive(Debug)]
pub struct Msg {
    /// The queue id given in the 250.
    pub id: u64,
    /// Envelope sender; empty for the null sender.
    pub reverse_path: Arc<str>,
    /// The message (our Received header first).
    pub body: Bytes,
    /// Unix seconds when accepted (for expiry).
    pub accepted_unix: u64,
    /// Recipients of this message on this shard not yet final.
    pub pending: Cell<u32>,
    /// The body needs 8BITMIME.
    pub eight_bit: bool,
    /// The envelope needs SMTPUTF8.
    pub smtputf8: bool,
    /// The client still waits for our answer (`ack = "downstream"`).
    pub ack: Option<crate::shard::ack::Ack>,
}

/// One recipient waiting for delivery.
#[derive(Debug, Clone)]
pub struct Rcpt {
    /// Its message.
    pub msg: Rc<Msg>,
    /// The mailbox.
    pub addr: Arc<str>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Its position in the shard's part of the message (what journal
    /// records refer to).
    pub index: u32,
}

/// Recipients of one destination waiting for a connection.
#[derive(Debug, Default)]
pub struct RcptQueue {
    q: VecDeque<Rcpt>,
}

impl RcptQueue {
    /// Adds a recipient at the back.
    pub fn push(&mut self, r: Rcpt) {
        self.q.push_back(r);
    }

    /// Puts a recipient at the front (an operator's flush: retry now).
    pub fn push_front(&mut self, r: Rcpt) {
        self.q.push_front(r);
    }

    /// The recipients waiting, front first.
    pub fn iter(&self) -> impl Iterator<Item = &Rcpt> {
        self.q.iter()
    }

    /// Recipients waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Takes the front run of recipients that share one message, at most
    /// `max`: one SMTP transaction's worth.
    pub fn take_transaction(&mut self, max: usize) -> Vec<Rcpt> {
        let Some(first) = self.q.front() else {
            return Vec::new();
        };
        let msg = first.msg.clone();
        let mut n = 0;
        while n < max.max(1) {
            match self.q.get(n) {
                Some(r) if Rc::ptr_eq(&r.msg, &msg) => n += 1,
                _ => break,
            }
        }
        self.q.drain(..n).collect()
    }

    /// Removes everything (for failing a whole destination at once).
    pub fn drain_all(&mut self) -> Vec<Rcpt> {
        self.q.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64) -> Rc<Msg> {
        Rc::new(Msg {
            id,
            reverse_path: Arc::from("s@x.test"),
            body: Bytes::from_static(b"x"),
            accepted_unix: 0,
            pending: Cell::new(0),
            eight_bit: false,
            smtputf8: false,
            ack: None,
        })
    }

    #[test]
    fn transactions_group_adjacent_recipients_of_one_message() {
        let (a, b) = (msg(1), msg(2));
        let mut q = RcptQueue::default();
        for (m, n) in [(&a, 3), (&b, 1), (&a, 1)] {
            for i in 0..n {
                q.push(Rcpt {
                    msg: m.clone(),
                    addr: Arc::from(format!("r{i}@d.test")),
                    attempts: 0,
                    index: i,
                });
            }
        }
        let t = q.take_transaction(2);
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|r| r.msg.id == 1));
        assert_eq!(q.take_transaction(100).len(), 1);
        assert_eq!(q.take_transaction(100)[0].msg.id, 2);
        assert_eq!(q.take_transaction(100)[0].msg.id, 1);
        assert!(q.take_transaction(100).is_empty());
    }
}
