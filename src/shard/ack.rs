//! The client's reply to the end of DATA, when it must wait for the
//! shards: for the journal (`ack = "journal"`: every owning shard made its
//! part durable) or for the destinations (`ack = "downstream"`).
//!
//! Under `journal`, each shard part reports stored or failed; one failed
//! part fails the message (`452 4.3.1` on a full disk) and the parts that
//! were stored are withdrawn, so a client that sends again never causes a
//! duplicate. A deadline that passes also fails it, for the same reason.
//!
//! Under `downstream`:
//! A message may be split over several shards (its recipients' domains),
//! so the shared state is an `Arc` with atomics, touched once per
//! recipient's *first* outcome by whichever shard owns it, and awaited by
//! the ingress session on its own core.
//!
//! One reply must speak for every recipient, so it is chosen to never lose
//! a message and never duplicate one:
//! - every recipient delivered → `250`;
//! - none delivered, all refused permanently → the first `5xx` (the client
//!   bounces; we send no DSN);
//! - none delivered, some deferred → `451` with the first temporary reason
//!   (the client keeps the message and retries; we drop our copy);
//! - some delivered and others not → `250`, and we keep the rest: deferred
//!   recipients are retried and refused ones get our DSN — answering 4xx
//!   here would make the client send the delivered ones twice.
//!
//! A destination that has not answered within the deadline gets the same
//! treatment as the mixed case: `250`, and the message stays with us.

use crate::smtp::Reply;
use event_listener::Event;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What became of the message, as far as the client is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not decided yet: first outcomes are still missing.
    Pending,
    /// The client was told 250: what was not delivered is ours to finish.
    Accepted,
    /// The client was told 4xx and will send it again: drop our copy.
    Returned,
    /// The client was told 5xx and will bounce it: drop our copy, no DSN.
    Refused,
}

const PENDING: u8 = 0;
const ACCEPTED: u8 = 1;
const RETURNED: u8 = 2;
const REFUSED: u8 = 3;

/// The first outcome of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstOutcome {
    /// Accepted by the destination.
    Delivered,
    /// Deferred (4xx, connection or DNS trouble).
    Deferred,
    /// Refused permanently.
    Bounced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Journal,
    Downstream,
}

struct State {
    mode: Mode,
    waiting: AtomicU32,
    delivered: AtomicU32,
    deferred: AtomicU32,
    decision: AtomicU8,
    first_temp: Mutex<Option<Reply>>,
    first_perm: Mutex<Option<Reply>>,
    done: Event,
}

/// A message's pending downstream acknowledgement (cheap to clone).
#[derive(Clone)]
pub struct Ack(Arc<State>);

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Ack").field(&self.decision()).finish()
    }
}

impl Ack {
    /// An acknowledgement waiting for `recipients` first outcomes.
    pub fn downstream(recipients: usize) -> Ack {
        Self::new(Mode::Downstream, recipients)
    }

    /// An acknowledgement waiting for `parts` shards to store their part.
    pub fn journal(parts: usize) -> Ack {
        Self::new(Mode::Journal, parts)
    }

    /// A shard made its part durable.
    pub fn part_stored(&self) {
        self.record(
            FirstOutcome::Delivered,
            &Reply::new(250, Some((2, 0, 0)), "stored"),
        );
    }

    /// A shard could not store its part; `reply` says why (4xx).
    pub fn part_failed(&self, reply: &Reply) {
        self.record(FirstOutcome::Deferred, reply);
    }

    /// Waits (without a deadline) until the decision is made.
    pub async fn decided(&self) -> Decision {
        loop {
            let listener = self.0.done.listen();
            let d = self.decision();
            if d != Decision::Pending {
                return d;
            }
            listener.await;
        }
    }

    fn new(mode: Mode, n: usize) -> Ack {
        Ack(Arc::new(State {
            mode,
            waiting: AtomicU32::new(u32::try_from(n).unwrap_or(u32::MAX)),
            delivered: AtomicU32::new(0),
            deferred: AtomicU32::new(0),
            decision: AtomicU8::new(PENDING),
            first_temp: Mutex::new(None),
            first_perm: Mutex::new(None),
            done: Event::new(),
        }))
    }

    /// The decision so far.
    pub fn decision(&self) -> Decision {
        match self.0.decision.load(Ordering::Acquire) {
            ACCEPTED => Decision::Accepted,
            RETURNED => Decision::Returned,
            REFUSED => Decision::Refused,
            _ => Decision::Pending,
        }
    }

    /// Records one recipient's first outcome; the last one decides.
    pub fn record(&self, outcome: FirstOutcome, reply: &Reply) {
        let s = &self.0;
        match outcome {
            FirstOutcome::Delivered => {
                s.delivered.fetch_add(1, Ordering::AcqRel);
            }
            FirstOutcome::Deferred => {
                s.deferred.fetch_add(1, Ordering::AcqRel);
                remember(&s.first_temp, reply);
            }
            FirstOutcome::Bounced => remember(&s.first_perm, reply),
        }
        if s.waiting.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let delivered = s.delivered.load(Ordering::Acquire);
        let deferred = s.deferred.load(Ordering::Acquire);
        let all_failed = delivered == 0;
        let decision = match (s.mode, all_failed, deferred) {
            (Mode::Journal, _, 0) => ACCEPTED,
            (Mode::Journal, _, _) => RETURNED,
            (Mode::Downstream, true, 0) => REFUSED,
            (Mode::Downstream, true, _) => RETURNED,
            (Mode::Downstream, false, _) => ACCEPTED,
        };
        // A timed-out waiter may already have decided: that stands.
        let _ = s
            .decision
            .compare_exchange(PENDING, decision, Ordering::AcqRel, Ordering::Acquire);
        s.done.notify(usize::MAX);
    }

    /// Waits for the decision, at most `timeout`. A timeout accepts under
    /// `downstream` (the destinations are slow; the message stays with us)
    /// and fails under `journal` (a 250 must never precede durability).
    pub async fn wait(&self, timeout: Duration) -> Decision {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let listener = self.0.done.listen();
            let d = self.decision();
            if d != Decision::Pending {
                return d;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                if self.0.mode == Mode::Journal {
                    remember(
                        &self.0.first_temp,
                        &Reply::new(451, Some((4, 3, 0)), "the journal did not answer in time"),
                    );
                }
                let on_timeout = match self.0.mode {
                    Mode::Journal => RETURNED,
                    Mode::Downstream => ACCEPTED,
                };
                let _ = self.0.decision.compare_exchange(
                    PENDING,
                    on_timeout,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                return self.decision();
            }
            futures_lite::future::or(listener, async {
                glommio::timer::sleep(left).await;
            })
            .await;
        }
    }

    /// The reply for a `Returned` or `Refused` decision.
    pub fn failure_reply(&self) -> Reply {
        let s = &self.0;
        match self.decision() {
            Decision::Refused => lock(&s.first_perm)
                .clone()
                .unwrap_or_else(|| Reply::new(550, Some((5, 0, 0)), "refused by the destination")),
            _ if s.mode == Mode::Journal => lock(&s.first_temp)
                .clone()
                .unwrap_or_else(|| Reply::new(451, Some((4, 3, 0)), "could not store the message")),
            _ => {
                let first = lock(&s.first_temp).clone();
                let (status, text) = match &first {
                    Some(r) => (r.enhanced(), r.text().to_string()),
                    None => (None, "no answer from the destination".into()),
                };
                let status = status.filter(|s| s.0 == 4).or(Some((4, 4, 0)));
                Reply::new(451, status, format!("downstream deferred: {text}"))
            }
        }
    }
}

fn lock(m: &Mutex<Option<Reply>>) -> std::sync::MutexGuard<'_, Option<Reply>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn remember(slot: &Mutex<Option<Reply>>, reply: &Reply) {
    let mut g = lock(slot);
    if g.is_none() {
        *g = Some(reply.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: u16, s: (u8, u16, u16), t: &'static str) -> Reply {
        Reply::new(code, Some(s), t)
    }

    #[test]
    fn one_reply_speaks_for_every_recipient() {
        let ok = r(250, (2, 0, 0), "ok");
        let temp = r(450, (4, 7, 1), "slow down");
        let perm = r(550, (5, 1, 1), "no such user");

        let a = Ack::downstream(2);
        a.record(FirstOutcome::Delivered, &ok);
        assert_eq!(a.decision(), Decision::Pending);
        a.record(FirstOutcome::Delivered, &ok);
        assert_eq!(a.decision(), Decision::Accepted);

        let a = Ack::downstream(2);
        a.record(FirstOutcome::Bounced, &perm);
        a.record(FirstOutcome::Bounced, &r(550, (5, 7, 1), "policy"));
        assert_eq!(a.decision(), Decision::Refused);
        assert_eq!(a.failure_reply().text(), "no such user");
        assert_eq!(a.failure_reply().enhanced(), Some((5, 1, 1)));

        let a = Ack::downstream(2);
        a.record(FirstOutcome::Bounced, &perm);
        a.record(FirstOutcome::Deferred, &temp);
        assert_eq!(a.decision(), Decision::Returned);
        let f = a.failure_reply();
        assert_eq!((f.code(), f.enhanced()), (451, Some((4, 7, 1))));
        assert!(f.text().contains("slow down"));

        // Mixed: the delivered one must not be sent twice, so we keep the rest.
        let a = Ack::downstream(2);
        a.record(FirstOutcome::Deferred, &temp);
        a.record(FirstOutcome::Delivered, &ok);
        assert_eq!(a.decision(), Decision::Accepted);
    }

    #[test]
    fn one_failed_journal_part_fails_the_message() {
        let full = r(452, (4, 3, 1), "disk full");
        let a = Ack::journal(2);
        a.part_stored();
        assert_eq!(a.decision(), Decision::Pending);
        a.part_failed(&full);
        assert_eq!(a.decision(), Decision::Returned);
        assert_eq!(a.failure_reply(), full);
        let a = Ack::journal(1);
        a.part_stored();
        assert_eq!(a.decision(), Decision::Accepted);
    }
}
