//! The adaptive feed-rate controller of one destination: a sans-IO state
//! machine fed with outcomes and `Instant`s, answering how fast (messages
//! a second) and how wide (connections) the destination may be fed.
//!
//! AIMD, as TCP does it for a congestion window:
//!
//! - A new destination is presumed healthy: no pace, connections up to the
//!   static limit. The first throttling signal starts control.
//! - **Multiplicative decrease** on a throttling signal (a 421, a reply
//!   a response rule marks `throttle N%`, a rate-limit text): rate and
//!   connections drop to a fraction of what the destination actually
//!   accepted lately, at most once per epoch (the signals of one burst are
//!   one event).
//! - **Additive increase** at the end of every epoch (1 s) in which the
//!   limit was binding, acceptance stayed high (few tempfails, connection
//!   failures, timeouts) and latency stayed flat: the rate grows by a step
//!   fixed at the last decrease (5% of the rate it set), connections by one.
//!   Below the slow-start threshold (after a suspension) it doubles instead.
//! - **Suspension** on a strong signal (a `suspend` rule): nothing for the
//!   given time, then a gentle probe: one connection at the probe rate,
//!   slow start when it is accepted, and a new suspension if not.
//!
//! The parameters are in [`Params`]; docs/shaping.md explains them.

use std::time::{Duration, Instant};

/// The controller's constants.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Length of one measurement epoch.
    pub epoch: Duration,
    /// Default decrease factor for throttling signals without a rule's own.
    pub decrease: f64,
    /// Additive step as a fraction of the rate set by the last decrease.
    pub increase: f64,
    /// Smallest additive step, messages a second.
    pub min_step: f64,
    /// The rate never goes below this, messages a second.
    pub min_rate: f64,
    /// Pace of the probe after a suspension, messages a second.
    pub probe_rate: f64,
    /// Epoch mean latency above `latency_factor` × the baseline (plus
    /// `latency_slack`) holds increases.
    pub latency_factor: f64,
    /// Absolute slack on the latency test.
    pub latency_slack: Duration,
    /// Share of tempfails, connection failures and timeouts in an epoch
    /// above which nothing increases.
    pub failure_hold: f64,
    /// Epochs the accepted rate is measured over when decreasing.
    pub measure_epochs: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            epoch: Duration::from_secs(1),
            decrease: 0.7,
            increase: 0.05,
            min_step: 0.5,
            min_rate: 0.2,
            probe_rate: 1.0,
            latency_factor: 2.0,
            latency_slack: Duration::from_millis(20),
            failure_hold: 0.05,
            measure_epochs: 3,
        }
    }
}

/// An outcome as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// 2xx.
    Accepted,
    /// A throttling 4xx (421, a rate-limit text, a `throttle` rule).
    Throttled,
    /// Another 4xx (greylisting, mailbox busy…).
    TempFailed,
    /// A 5xx.
    PermFailed,
    /// The connection was refused or could not be made.
    ConnectFailed,
    /// The server stopped answering.
    TimedOut,
}

/// A state change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Rate and connections cut.
    Decreased,
    /// Rate or connections raised.
    Increased,
    /// Suspended until the given time.
    Suspended(Instant),
    /// The suspension ended: probing.
    Probing,
    /// The probe was accepted: growing again.
    Resumed,
}

#[derive(Debug, Clone, Copy, Default)]
struct Epoch {
    accepted: u32,
    throttled: u32,
    failed: u32,
    permfailed: u32,
    connect_failed: u32,
    latency_sum: f64,
    latency_n: u32,
    rate_gated: bool,
    conc_gated: bool,
}

const HISTORY: usize = 8;

/// One destination's controller.
#[derive(Debug, Clone)]
pub struct Controller {
    p: Params,
    rate: Option<f64>,
    conc: Option<usize>,
    step: f64,
    ssthresh: Option<f64>,
    suspended_until: Option<Instant>,
    probing: bool,
    last_signal: Option<String>,
    last_decrease: Option<Instant>,
    started: Option<Instant>,
    epoch_start: Option<Instant>,
    cur: Epoch,
    hist: [Epoch; HISTORY],
    hist_next: usize,
    base_latency: Option<f64>,
    change: Option<Change>,
}

impl Default for Controller {
    fn default() -> Self {
        Controller::new(Params::default())
    }
}

impl Controller {
    /// A controller for a destination presumed healthy.
    pub fn new(p: Params) -> Controller {
        Controller {
            p,
            rate: None,
            conc: None,
            step: p.min_step,
            ssthresh: None,
            suspended_until: None,
            probing: false,
            last_signal: None,
            last_decrease: None,
            started: None,
            epoch_start: None,
            cur: Epoch::default(),
            hist: [Epoch::default(); HISTORY],
            hist_next: 0,
            base_latency: None,
            change: None,
        }
    }

    // ---- getters ----

    /// The allowed rate in messages a second; `None`: not paced.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// The allowed connections under a static limit of `max`.
    pub fn concurrency(&self, max: usize) -> usize {
        self.conc.map_or(max, |c| c.min(max)).max(1)
    }

    /// The allowed connections, when below the static limit.
    pub fn concurrency_cap(&self) -> Option<usize> {
        self.conc
    }

    /// The last signal that changed something, as text.
    pub fn last_signal(&self) -> Option<&str> {
        self.last_signal.as_deref()
    }

    /// When the current suspension ends.
    pub fn suspended_until(&self) -> Option<Instant> {
        self.suspended_until
    }

    /// Whether the destination is suspended at `now`. The first call after
    /// the end of a suspension starts the probe.
    pub fn is_suspended(&mut self, now: Instant) -> bool {
        match self.suspended_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.suspended_until = None;
                self.change = Some(Change::Probing);
                false
            }
            None => false,
        }
    }

    /// Whether the last suspension's probe is still unanswered.
    pub fn probing(&self) -> bool {
        self.probing
    }

    /// The state change since the last call, if any (for the log).
    pub fn poll_change(&mut self) -> Option<Change> {
        self.change.take()
    }

    // ---- inputs ----

    /// One recipient's (or connection's) outcome.
    pub fn record(&mut self, s: Signal, now: Instant) {
        self.tick(now);
        match s {
            Signal::Accepted => {
                self.cur.accepted += 1;
                if self.probing && self.suspended_until.is_none() {
                    self.probing = false;
                    self.change = Some(Change::Resumed);
                }
            }
            Signal::Throttled => self.throttled(now, self.p.decrease, "throttled (421)"),
            Signal::TempFailed | Signal::TimedOut => self.cur.failed += 1,
            Signal::PermFailed => self.cur.permfailed += 1,
            Signal::ConnectFailed => {
                self.cur.failed += 1;
                self.cur.connect_failed += 1;
            }
        }
    }

    /// A transaction's latency (commands written → last reply).
    pub fn latency(&mut self, d: Duration, now: Instant) {
        self.tick(now);
        self.cur.latency_sum += d.as_secs_f64();
        self.cur.latency_n += 1;
    }

    /// A transaction waited for the pace: the rate limit is binding.
    pub fn rate_gated(&mut self, now: Instant) {
        self.tick(now);
        self.cur.rate_gated = true;
    }

    /// A connection was not opened for the connection cap.
    pub fn conc_gated(&mut self, now: Instant) {
        self.tick(now);
        self.cur.conc_gated = true;
    }

    /// A throttling signal asking to keep `factor` of the rate (a rule's
    /// `throttle N%`, or the default decrease).
    pub fn throttled(&mut self, now: Instant, factor: f64, why: &str) {
        self.tick(now);
        self.cur.throttled += 1;
        self.throttle(now, factor, why);
    }

    /// Multiplicative decrease to `factor` of what the destination took
    /// lately (at most once per epoch).
    pub fn throttle(&mut self, now: Instant, factor: f64, why: &str) {
        self.tick(now);
        if self.suspended_until.is_some_and(|t| now < t) {
            return;
        }
        let cooling = self
            .last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < self.p.epoch);
        if cooling {
            return;
        }
        let factor = factor.clamp(0.01, 0.99);
        let measured = self.accepted_rate(now);
        let base = match (self.rate, measured > 0.0) {
            (Some(r), true) => r.min(measured),
            (Some(r), false) => r,
            (None, true) => measured,
            (None, false) => self.p.probe_rate / factor,
        };
        let rate = (base * factor).max(self.p.min_rate);
        self.rate = Some(rate);
        let c = self.conc.unwrap_or(usize::MAX / 2);
        let c = if c >= usize::MAX / 4 {
            // Never capped yet: the first cut starts from what is open;
            // the caller caps it at the static limit anyway.
            None
        } else {
            Some(((c as f64 * factor).floor() as usize).max(1))
        };
        if c.is_some() {
            self.conc = c;
        }
        self.step = (rate * self.p.increase).max(self.p.min_step);
        self.ssthresh = Some(rate);
        self.probing = false;
        self.last_decrease = Some(now);
        self.last_signal = Some(why.to_string());
        self.change = Some(Change::Decreased);
    }

    /// Caps connections at `open` × `factor` when the controller has no cap
    /// yet (the first decrease only knows how many are open at the caller).
    pub fn cap_connections(&mut self, open: usize, factor: f64) {
        if self.conc.is_none() && self.last_decrease.is_some() {
            self.conc = Some(((open as f64 * factor).floor() as usize).max(1));
        }
    }

    /// Suspends the destination for `d` (a strong signal), then probes.
    pub fn suspend(&mut self, now: Instant, d: Duration, why: &str) {
        self.tick(now);
        let until = now + d;
        let before = self.rate.unwrap_or_else(|| self.accepted_rate(now));
        if self.suspended_until.map_or(true, |t| t < until) {
            self.suspended_until = Some(until);
        }
        if !self.probing {
            // Slow start back to half of what it had before the trouble;
            // with nothing known (suspended from the first attempt) slow
            // start runs until the next throttling signal.
            self.ssthresh = (before >= 2.0 * self.p.probe_rate).then_some(before / 2.0);
        }
        self.rate = Some(self.p.probe_rate);
        self.conc = Some(1);
        self.step = (self.ssthresh.unwrap_or(0.0) * self.p.increase).max(self.p.min_step);
        self.probing = true;
        self.last_decrease = Some(now);
        self.last_signal = Some(why.to_string());
        self.change = Some(Change::Suspended(until));
    }

    // ---- internals ----

    /// Recipients accepted a second over the last few epochs.
    fn accepted_rate(&self, now: Instant) -> f64 {
        let Some(start) = self.epoch_start else {
            return 0.0;
        };
        let mut n = f64::from(self.cur.accepted);
        let mut span = now.saturating_duration_since(start).as_secs_f64();
        let full = self.p.measure_epochs.saturating_sub(1) as usize;
        let since = self
            .started
            .map_or(0.0, |s| start.saturating_duration_since(s).as_secs_f64());
        let epochs = full.min((since / self.p.epoch.as_secs_f64()).round() as usize);
        for k in 1..=epochs {
            let i = (self.hist_next + HISTORY - k) % HISTORY;
            if let Some(e) = self.hist.get(i) {
                n += f64::from(e.accepted);
                span += self.p.epoch.as_secs_f64();
            }
        }
        n / span.max(self.p.epoch.as_secs_f64())
    }

    fn tick(&mut self, now: Instant) {
        let Some(mut start) = self.epoch_start else {
            self.started = Some(now);
            self.epoch_start = Some(now);
            return;
        };
        let mut rolled = 0;
        while now.saturating_duration_since(start) >= self.p.epoch {
            let e = std::mem::take(&mut self.cur);
            if rolled == 0 {
                self.end_epoch(e, start + self.p.epoch);
            }
            if let Some(slot) = self.hist.get_mut(self.hist_next) {
                *slot = e;
            }
            self.hist_next = (self.hist_next + 1) % HISTORY;
            start += self.p.epoch;
            rolled += 1;
            if rolled > HISTORY {
                // A long quiet spell: jump to the current epoch.
                start = now;
                break;
            }
        }
        self.epoch_start = Some(start);
    }

    fn end_epoch(&mut self, e: Epoch, now: Instant) {
        if let Some(mean) = (e.latency_n > 0).then(|| e.latency_sum / f64::from(e.latency_n)) {
            // The baseline follows the lowest latency seen, forgetting it
            // slowly (1% an epoch) so a lasting change is learned.
            self.base_latency = Some(self.base_latency.map_or(mean, |b| mean.min(b * 1.01)));
        }
        if self.suspended_until.is_some() || e.throttled > 0 {
            return;
        }
        let total = e.accepted + e.failed;
        if total == 0 {
            return;
        }
        let failing = f64::from(e.failed) / f64::from(total);
        if e.connect_failed >= 3 && failing > 0.5 {
            // The hosts refuse connections: fewer of them.
            if let Some(c) = self.conc {
                self.conc = Some((c / 2).max(1));
            }
            return;
        }
        let latency_ok = match (self.base_latency, e.latency_n) {
            (Some(b), n) if n > 0 => {
                e.latency_sum / f64::from(n)
                    <= b * self.p.latency_factor + self.p.latency_slack.as_secs_f64()
            }
            _ => true,
        };
        if failing > self.p.failure_hold || !latency_ok || e.accepted == 0 {
            return;
        }
        let slow_start = |x: f64, t: Option<f64>| t.map_or(true, |t| x < t);
        let mut grew = false;
        if let (Some(r), true) = (self.rate, e.rate_gated) {
            let next = if slow_start(r, self.ssthresh) && self.probing_done() {
                r * 2.0
            } else {
                r + self.step
            };
            self.rate = Some(next);
            grew = true;
        }
        if let (Some(c), true) = (self.conc, e.conc_gated) {
            let next = if slow_start(self.rate.unwrap_or(0.0), self.ssthresh) {
                c * 2
            } else {
                c + 1
            };
            self.conc = Some(next);
            grew = true;
        }
        if grew {
            let _ = now;
            self.change = Some(Change::Increased);
        }
    }

    fn probing_done(&self) -> bool {
        !self.probing
    }

    /// Forgets the connection cap once it reaches the static limit.
    pub fn settle(&mut self, max: usize) {
        if self.conc.is_some_and(|c| c >= max) {
            self.conc = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiver that accepts `rate` messages a second with one second
    /// of burst (as the bench sink does) and refuses the rest with a 4xx.
    struct FakeReceiver {
        rate: f64,
        tokens: f64,
        last: Instant,
    }

    impl FakeReceiver {
        fn offer(&mut self, now: Instant) -> bool {
            let dt = now.saturating_duration_since(self.last).as_secs_f64();
            self.last = now;
            self.tokens = (self.tokens + dt * self.rate).min(self.rate);
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    /// Drives a controller against a fake receiver for `secs` seconds with
    /// an endless backlog, 1 ms steps; returns per-second (accepted,
    /// refused) counts.
    fn simulate(receiver_rate: f64, secs: u64) -> (Controller, Vec<(u32, u32)>) {
        let t0 = Instant::now();
        let mut c = Controller::default();
        let mut pace = super::super::bucket::Bucket::new(1000.0, 1.0);
        let mut rx = FakeReceiver {
            rate: receiver_rate,
            tokens: receiver_rate,
            last: t0,
        };
        let mut per_sec = vec![(0u32, 0u32); secs as usize];
        // Without a pace the sender offers 500 messages a second.
        let mut unpaced_next = t0;
        for ms in 0..secs * 1000 {
            let now = t0 + Duration::from_millis(ms);
            let may = match c.rate() {
                None => {
                    if now >= unpaced_next {
                        unpaced_next = now + Duration::from_millis(2);
                        true
                    } else {
                        false
                    }
                }
                Some(r) => {
                    pace.set_rate(r, now);
                    match pace.check(now) {
                        Ok(()) => {
                            pace.take();
                            true
                        }
                        Err(_) => {
                            c.rate_gated(now);
                            false
                        }
                    }
                }
            };
            if !may {
                continue;
            }
            let s = &mut per_sec[(ms / 1000) as usize];
            if rx.offer(now) {
                s.0 += 1;
                c.record(Signal::Accepted, now);
                c.latency(Duration::from_millis(5), now);
            } else {
                s.1 += 1;
                c.record(Signal::Throttled, now);
            }
        }
        (c, per_sec)
    }

    #[test]
    fn aimd_converges_near_a_receivers_rate_limit() {
        for r in [20.0, 50.0, 200.0] {
            let (c, per_sec) = simulate(r, 120);
            let steady = &per_sec[30..];
            let accepted: u32 = steady.iter().map(|s| s.0).sum();
            let refused: u32 = steady.iter().map(|s| s.1).sum();
            let rate = f64::from(accepted) / steady.len() as f64;
            let refused_pct = 100.0 * f64::from(refused) / f64::from(accepted + refused);
            assert!(
                (rate - r).abs() <= 0.15 * r,
                "R={r}: delivered {rate:.1}/s; {per_sec:?}"
            );
            assert!(refused_pct < 5.0, "R={r}: {refused_pct:.1}% refused");
            assert!(c.rate().is_some());
        }
    }

    #[test]
    fn suspension_stops_everything_then_probes_and_slow_starts() {
        let t0 = Instant::now();
        let mut c = Controller::default();
        for i in 0..100 {
            c.record(Signal::Accepted, t0 + Duration::from_millis(i * 10));
        }
        let t1 = t0 + Duration::from_secs(1);
        c.suspend(t1, Duration::from_secs(60), "suspend 60s");
        assert!(matches!(c.poll_change(), Some(Change::Suspended(_))));
        assert!(c.is_suspended(t1 + Duration::from_secs(59)));
        assert_eq!(c.concurrency(20), 1);
        assert_eq!(c.last_signal(), Some("suspend 60s"));
        // Throttling signals during the suspension change nothing.
        c.record(Signal::Throttled, t1 + Duration::from_secs(2));
        assert_eq!(c.rate(), Some(1.0));
        let t2 = t1 + Duration::from_secs(60);
        assert!(!c.is_suspended(t2));
        assert_eq!(c.poll_change(), Some(Change::Probing));
        assert!(c.probing());
        c.record(Signal::Accepted, t2);
        assert_eq!(c.poll_change(), Some(Change::Resumed));
        // Slow start: doubling while the pace binds.
        let mut now = t2;
        for _ in 0..4 {
            c.rate_gated(now);
            c.conc_gated(now);
            c.record(Signal::Accepted, now);
            now += Duration::from_secs(1);
            c.record(Signal::Accepted, now);
        }
        assert!(c.rate().unwrap() >= 8.0, "{:?}", c.rate());
        assert!(c.concurrency(20) >= 4);
    }

    #[test]
    fn rising_latency_or_tempfails_hold_the_increase() {
        let t0 = Instant::now();
        let mut c = Controller::default();
        c.record(Signal::Accepted, t0);
        c.latency(Duration::from_millis(10), t0);
        c.throttle(t0 + Duration::from_millis(500), 0.5, "throttle 50%");
        let r0 = c.rate().unwrap();
        // Latency 10× the baseline: no increase.
        let mut now = t0 + Duration::from_secs(2);
        for _ in 0..3 {
            c.rate_gated(now);
            c.record(Signal::Accepted, now);
            c.latency(Duration::from_millis(200), now);
            now += Duration::from_secs(1);
        }
        c.record(Signal::Accepted, now);
        assert_eq!(c.rate(), Some(r0));
        // Flat latency but 50% tempfails: no increase either.
        for _ in 0..3 {
            c.rate_gated(now);
            c.record(Signal::Accepted, now);
            c.record(Signal::TempFailed, now);
            c.latency(Duration::from_millis(10), now);
            now += Duration::from_secs(1);
        }
        assert_eq!(c.rate(), Some(r0));
        // Healthy: additive increase.
        for _ in 0..3 {
            c.rate_gated(now);
            c.record(Signal::Accepted, now);
            c.latency(Duration::from_millis(10), now);
            now += Duration::from_secs(1);
        }
        c.record(Signal::Accepted, now);
        assert!(c.rate().unwrap() > r0);
    }

    #[test]
    fn one_burst_of_signals_is_one_decrease() {
        let t0 = Instant::now();
        let mut c = Controller::default();
        for i in 0..50 {
            c.record(Signal::Accepted, t0 + Duration::from_millis(i * 20));
        }
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..20 {
            c.record(Signal::Throttled, t1 + Duration::from_millis(i));
        }
        let r = c.rate().unwrap();
        assert!(r > 20.0, "{r}");
        assert_eq!(c.poll_change(), Some(Change::Decreased));
    }
}
