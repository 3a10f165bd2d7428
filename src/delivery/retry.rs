//! When a deferred recipient is tried again.
//!
//! A queue's schedule is either exponential with jitter (the default: Postfix
//! and PowerMTA both back off roughly this way) or an explicit list of
//! intervals, the last one repeating. Jitter spreads the retries of a burst
//! that failed together, so a receiver that throttled us does not get the
//! whole burst back at the same instant.

use serde::Deserialize;
use std::time::Duration;

/// A retry schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum RetrySchedule {
    /// `initial * factor^(attempt-1)`, capped at `max`, ± `jitter` (0..1).
    Exponential {
        /// First retry interval.
        initial: Duration,
        /// Growth per attempt.
        factor: f64,
        /// Largest interval.
        max: Duration,
        /// Relative jitter, e.g. 0.2 for ±20 %.
        jitter: f64,
    },
    /// Fixed intervals; the last one repeats.
    List(Vec<Duration>),
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule::Exponential {
            initial: Duration::from_secs(60),
            factor: 2.0,
            max: Duration::from_secs(4 * 3600),
            jitter: 0.2,
        }
    }
}

impl RetrySchedule {
    /// The wait before attempt `attempt + 1`, given that `attempt` attempts
    /// (≥ 1) have failed. `unit` is a uniform sample in [0, 1) for the jitter,
    /// passed in so that the schedule itself is deterministic and testable.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        match self {
            RetrySchedule::Exponential {
                initial,
                factor,
                max,
                jitter,
            } => {
                let exp = attempt.saturating_sub(1).min(64) as i32;
                let base = initial.as_secs_f64() * factor.max(1.0).powi(exp);
                let base = base.min(max.as_secs_f64());
                let j = jitter.clamp(0.0, 1.0);
                let scaled = base * (1.0 - j + 2.0 * j * unit.clamp(0.0, 1.0));
                Duration::from_secs_f64(scaled.max(0.0))
            }
            RetrySchedule::List(list) => {
                let i = (attempt.saturating_sub(1) as usize).min(list.len().saturating_sub(1));
                list.get(i).copied().unwrap_or(Duration::from_secs(300))
            }
        }
    }
}

/// The configuration form of a schedule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First interval (exponential). Default 60 s.
    #[serde(default)]
    pub initial: Option<crate::config::Seconds>,
    /// Growth factor (exponential). Default 2.
    #[serde(default)]
    pub factor: Option<f64>,
    /// Largest interval (exponential). Default 4 h.
    #[serde(default)]
    pub max: Option<crate::config::Seconds>,
    /// Relative jitter. Default 0.2.
    #[serde(default)]
    pub jitter: Option<f64>,
    /// Explicit intervals instead of the exponential schedule.
    #[serde(default)]
    pub intervals: Option<Vec<crate::config::Seconds>>,
}

impl RetryConfig {
    /// The schedule this configuration describes.
    pub fn schedule(&self) -> RetrySchedule {
        if let Some(list) = &self.intervals {
            return RetrySchedule::List(list.iter().map(|s| s.0).collect());
        }
        let RetrySchedule::Exponential {
            initial,
            factor,
            max,
            jitter,
        } = RetrySchedule::default()
        else {
            return RetrySchedule::default();
        };
        RetrySchedule::Exponential {
            initial: self.initial.map_or(initial, |s| s.0),
            factor: self.factor.unwrap_or(factor),
            max: self.max.map_or(max, |s| s.0),
            jitter: self.jitter.unwrap_or(jitter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_grows_caps_and_jitters() {
        let s = RetrySchedule::default();
        assert_eq!(s.delay(1, 0.5), Duration::from_secs(60));
        assert_eq!(s.delay(2, 0.5), Duration::from_secs(120));
        assert_eq!(s.delay(3, 0.5), Duration::from_secs(240));
        assert_eq!(s.delay(30, 0.5), Duration::from_secs(4 * 3600));
        assert_eq!(s.delay(1, 0.0), Duration::from_secs(48));
        assert_eq!(s.delay(1, 1.0), Duration::from_secs(72));
    }

    #[test]
    fn list_repeats_its_last_interval() {
        let s = RetrySchedule::List(vec![Duration::from_secs(5), Duration::from_secs(30)]);
        assert_eq!(s.delay(1, 0.3), Duration::from_secs(5));
        assert_eq!(s.delay(2, 0.3), Duration::from_secs(30));
        assert_eq!(s.delay(9, 0.3), Duration::from_secs(30));
    }
}
