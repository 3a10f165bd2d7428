//! Token buckets for static message-rate limits and the controller's pace.
//!
//! A bucket holds up to `burst` tokens and gains `rate` tokens a second;
//! a transaction takes one. Checking and taking are separate so that a
//! transaction gated by several buckets (destination, queue, controller)
//! takes from all of them or from none.

use std::time::{Duration, Instant};

/// One token bucket. Pure arithmetic on the `Instant`s it is given.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    /// A full bucket: `rate` tokens a second, at most `burst` saved up.
    pub fn new(rate: f64, burst: f64) -> Bucket {
        let burst = burst.max(1.0);
        Bucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// `n` messages per `period`: a bucket refilled at `n / period` that
    /// saves up at most `burst` tokens.
    pub fn per(n: f64, period: Duration, burst: f64) -> Bucket {
        Bucket::new(n / period.as_secs_f64().max(1e-9), burst)
    }

    /// Tokens a second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Changes the rate, keeping the tokens saved (the controller's pace).
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        self.refill(now);
        self.rate = rate.max(f64::MIN_POSITIVE);
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// `Ok` when a token is there now, else how long until one is.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            let secs = (1.0 - self.tokens) / self.rate;
            Err(Duration::from_secs_f64(secs.min(86_400.0 * 366.0)))
        }
    }

    /// Takes one token (after a successful [`Bucket::check`]).
    pub fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// Whether the bucket is back to its full burst at `now`: forgetting it
    /// then loses nothing, since a new bucket starts full.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Messages per second, minute, hour and day: the static limits of a
/// destination or a queue. Absent fields are unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Messages (transactions) a second; paced, one at a time.
    pub per_second: Option<f64>,
    /// Messages a minute.
    pub per_minute: Option<f64>,
    /// Messages an hour.
    pub per_hour: Option<f64>,
    /// Messages a day.
    pub per_day: Option<f64>,
}

impl RateLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.per_second.is_none()
            && self.per_minute.is_none()
            && self.per_hour.is_none()
            && self.per_day.is_none()
    }

    /// Every limit divided by `n` (a node-wide limit shared by `n` shards).
    pub fn divided(&self, n: usize) -> RateLimits {
        let d = n.max(1) as f64;
        RateLimits {
            per_second: self.per_second.map(|v| v / d),
            per_minute: self.per_minute.map(|v| v / d),
            per_hour: self.per_hour.map(|v| v / d),
            per_day: self.per_day.map(|v| v / d),
        }
    }

    /// Checks the values (positive, finite).
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [
            ("per_second", self.per_second),
            ("per_minute", self.per_minute),
            ("per_hour", self.per_hour),
            ("per_day", self.per_day),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("{k} = {v}: must be a positive number"));
                }
            }
        }
        Ok(())
    }

    /// The buckets that enforce these limits. The per-second one saves up
    /// a single token, so messages are paced evenly and no wall-clock
    /// second sees more than the limit; the longer ones save up a whole
    /// period's worth (a burst of up to the limit, the long-run average
    /// exact).
    pub fn buckets(&self) -> Buckets {
        let mut v = Vec::new();
        if let Some(n) = self.per_second {
            v.push(Bucket::per(n, Duration::from_secs(1), 1.0));
        }
        for (n, secs) in [
            (self.per_minute, 60),
            (self.per_hour, 3600),
            (self.per_day, 86_400),
        ] {
            if let Some(n) = n {
                v.push(Bucket::per(n, Duration::from_secs(secs), n));
            }
        }
        Buckets(v)
    }
}

/// Several buckets that all must allow a transaction.
#[derive(Debug, Clone, Default)]
pub struct Buckets(Vec<Bucket>);

impl Buckets {
    /// `Ok` when each has a token, else the longest wait among them.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        let mut wait = None::<Duration>;
        for b in &mut self.0 {
            if let Err(w) = b.check(now) {
                wait = Some(wait.map_or(w, |x| x.max(w)));
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Takes a token from each (after a successful check).
    pub fn take(&mut self) {
        for b in &mut self.0 {
            b.take();
        }
    }

    /// Whether there is no bucket.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every bucket is full at `now`.
    pub fn all_full(&mut self, now: Instant) -> bool {
        self.0.iter_mut().all(|b| b.is_full(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_per_second_bucket_paces_evenly() {
        let t0 = Instant::now();
        let mut b = RateLimits {
            per_second: Some(10.0),
            ..Default::default()
        }
        .buckets();
        let mut sent = 0;
        let mut now = t0;
        // Ask every millisecond for two seconds: 10 a second, paced.
        while now < t0 + Duration::from_secs(2) {
            if b.check(now).is_ok() {
                b.take();
                sent += 1;
            }
            now += Duration::from_millis(1);
        }
        assert!((20..=21).contains(&sent), "{sent}");
        let wait = b.check(now).map(|_| ()).err();
        assert!(wait.map_or(true, |w| w <= Duration::from_millis(100)));
    }

    #[test]
    fn longer_periods_allow_a_burst_then_the_average() {
        let t0 = Instant::now();
        let mut b = RateLimits {
            per_minute: Some(60.0),
            ..Default::default()
        }
        .buckets();
        for _ in 0..60 {
            assert!(b.check(t0).is_ok());
            b.take();
        }
        let w = b.check(t0).unwrap_err();
        assert!((w.as_secs_f64() - 1.0).abs() < 0.01, "{w:?}");
        assert!(b.check(t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn node_wide_limits_divide_among_shards() {
        let l = RateLimits {
            per_second: Some(100.0),
            per_day: Some(1000.0),
            ..Default::default()
        };
        let d = l.divided(4);
        assert_eq!(d.per_second, Some(25.0));
        assert_eq!(d.per_day, Some(250.0));
        assert!(RateLimits {
            per_hour: Some(-1.0),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
