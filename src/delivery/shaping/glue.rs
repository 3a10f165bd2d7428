//! Where the engine and connections meet the shaper: gates before a
//! connection or a transaction starts, outcomes turned into controller
//! signals and rule actions, and the timer that reopens a closed gate.
//!
//! Kept out of `engine.rs` so that file only calls in at a few places.

use super::controller::Signal;
use super::rules::Action;
use super::Wait;
use crate::delivery::engine::{ConnInfo, Dest, Engine};
use crate::delivery::queues::Queue;
use crate::smtp::client::Outcome;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long a `next-mx` rule keeps a host out of rotation.
const AVOID_MX_FOR: Duration = Duration::from_secs(300);
/// Recipients deferred by a throttling signal come back after this (plus
/// up to as much again in jitter): the pace, not the retry schedule, is
/// what holds them back now.
const THROTTLED_RETRY: Duration = Duration::from_secs(2);

/// What the engine should do with an outcome after shaping saw it.
pub struct Shaped {
    /// The outcome, possibly changed by a rule (`bounce`, `retry-later`).
    pub outcome: Outcome,
    /// For a deferral: when to try again, instead of the retry schedule.
    pub due: Option<Instant>,
}

impl Engine {
    /// Whether `dest` is closed (suspended, warm-up cap) and until when; a
    /// closed destination gets a timer that kicks it when it reopens.
    pub(in crate::delivery) fn shaping_gate(self: &Rc<Self>, dest: &Rc<Dest>) -> Option<Instant> {
        let queue = dest.queue();
        let pool = dest.pool();
        let src = queue.shaping.sources(pool.as_deref());
        let now = Instant::now();
        let until = {
            let mut s = dest.shaper.borrow_mut();
            let g = s.gate(&queue.shaping, src, now, unix_now());
            s.log_changes(&dest.domain, now);
            g
        };
        if let Some(t) = until {
            self.wake_at(dest, t);
        }
        until
    }

    /// Connections `dest` may have now; notes when the controller's cap (not
    /// the static one) is what holds it back.
    pub(in crate::delivery) fn connection_cap(&self, dest: &Dest, queue: &Queue) -> usize {
        let pool = dest.pool();
        let src = queue.shaping.sources(pool.as_deref());
        let mut s = dest.shaper.borrow_mut();
        let cap = s.connection_cap(&queue.shaping, src, queue.max_connections_per_destination);
        if dest.active() >= cap && cap < queue.max_connections_per_destination {
            s.ctl.conc_gated(Instant::now());
        }
        s.ctl.settle(queue.max_connections_per_destination);
        cap
    }

    /// Asks whether a connection of `dest` may start a transaction now.
    pub(in crate::delivery) fn admit(&self, dest: &Dest, queue: &Queue) -> Result<(), Wait> {
        let now = Instant::now();
        let pool = dest.pool();
        let src = queue.shaping.sources(pool.as_deref());
        let mut s = dest.shaper.borrow_mut();
        let r = s.admit(&queue.shaping, src, now, unix_now());
        s.log_changes(&dest.domain, now);
        r
    }

    /// Whether `dest` has more connections than it may have now (an idle
    /// connection then closes).
    pub(in crate::delivery) fn over_cap(&self, dest: &Dest, queue: &Queue) -> bool {
        let pool = dest.pool();
        let src = queue.shaping.sources(pool.as_deref());
        let s = dest.shaper.borrow();
        dest.active() > s.connection_cap(&queue.shaping, src, queue.max_connections_per_destination)
    }

    /// Kicks `dest` at `t` (once: one timer per destination).
    fn wake_at(self: &Rc<Self>, dest: &Rc<Dest>, t: Instant) {
        {
            let mut s = dest.shaper.borrow_mut();
            if s.wake_armed {
                return;
            }
            s.wake_armed = true;
        }
        let engine = self.clone();
        let dest = dest.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(t.saturating_duration_since(Instant::now())).await;
            dest.shaper.borrow_mut().wake_armed = false;
            dest.work.notify(usize::MAX);
            engine.kick(&dest);
        })
        .detach();
    }

    /// Feeds a recipient's outcome to the controller and applies the first
    /// matching response rule.
    pub(in crate::delivery) fn shape_outcome(
        &self,
        dest: &Dest,
        outcome: &Outcome,
        via: &ConnInfo,
    ) -> Shaped {
        let now = Instant::now();
        let queue = dest.queue();
        let r = outcome.reply();
        let mut shaped = Shaped {
            outcome: outcome.clone(),
            due: None,
        };
        // Only what a remote server said (or how its connection failed)
        // is a signal; operator actions and DNS failures are not.
        if via.mx.is_none() {
            return shaped;
        }
        let action = match outcome {
            Outcome::Delivered(_) => None,
            _ => self.queues().rules().classify(r),
        };
        let mut s = dest.shaper.borrow_mut();
        let adaptive = queue.shaping.adaptive;
        match (action, outcome) {
            (None, Outcome::Delivered(_)) => s.ctl.record(Signal::Accepted, now),
            (None, Outcome::Bounced(_)) => s.ctl.record(Signal::PermFailed, now),
            (None, Outcome::Deferred(_)) => {
                let signal = match (r.code(), r.enhanced()) {
                    (_, Some((4, 4, 1))) => Signal::TimedOut,
                    (421, _) => Signal::Throttled,
                    _ => Signal::TempFailed,
                };
                if signal == Signal::Throttled && adaptive {
                    let open = dest.active();
                    s.ctl.record(signal, now);
                    s.ctl.cap_connections(open, 0.7);
                    shaped.due = Some(retry_soon(now));
                } else {
                    s.ctl.record(signal, now);
                }
            }
            (Some(a), _) => {
                let desc = a.describe();
                match a {
                    Action::Throttle(f) => {
                        if adaptive {
                            let open = dest.active();
                            s.ctl.throttled(now, f, &desc);
                            s.ctl.cap_connections(open, f);
                        }
                        shaped.outcome = Outcome::Deferred(outcome_reply(outcome));
                        shaped.due = Some(retry_soon(now));
                    }
                    Action::Suspend(d) => {
                        if adaptive {
                            s.ctl.suspend(now, d, &desc);
                            shaped.due = s.ctl.suspended_until();
                        }
                        shaped.outcome = Outcome::Deferred(outcome_reply(outcome));
                    }
                    Action::Bounce => {
                        s.ctl.record(Signal::PermFailed, now);
                        shaped.outcome = Outcome::Bounced(outcome_reply(outcome));
                    }
                    Action::RetryLater => {
                        s.ctl.record(Signal::TempFailed, now);
                        shaped.outcome = Outcome::Deferred(outcome_reply(outcome));
                    }
                    Action::NextMx => {
                        s.ctl.record(Signal::TempFailed, now);
                        if let Some(mx) = via.mx.as_deref() {
                            s.avoid_mx(mx, now + AVOID_MX_FOR);
                        }
                        shaped.outcome = Outcome::Deferred(outcome_reply(outcome));
                        shaped.due = Some(now);
                    }
                }
            }
        }
        s.log_changes(&dest.domain, now);
        shaped
    }

    /// No connection could be made to any of `dest`'s hosts.
    pub(in crate::delivery) fn shaping_connect_failed(&self, dest: &Dest) {
        let now = Instant::now();
        let mut s = dest.shaper.borrow_mut();
        s.ctl.record(Signal::ConnectFailed, now);
        s.log_changes(&dest.domain, now);
    }

    /// A transaction of `dest` took `d` from its commands to its last reply.
    pub(in crate::delivery) fn shaping_latency(&self, dest: &Dest, d: Duration) {
        dest.shaper.borrow_mut().ctl.latency(d, Instant::now());
    }
}

fn outcome_reply(o: &Outcome) -> std::sync::Arc<crate::smtp::Reply> {
    match o {
        Outcome::Delivered(r) | Outcome::Deferred(r) | Outcome::Bounced(r) => r.clone(),
    }
}

fn retry_soon(now: Instant) -> Instant {
    let jitter = f64::from(rand::random::<u16>()) / 65536.0;
    now + THROTTLED_RETRY.mul_f64(1.0 + jitter)
}
