//! Warm-up schedules for new sending IPs: a daily cap per destination that
//! grows on a configured curve.
//!
//! Day 0 is `start` (a UTC date); on day `i` a destination may take
//! `daily[i]` messages. After the curve the last value repeats
//! (`after = "repeat"`) or the cap goes away (`after = "unlimited"`, the
//! default). Before `start` the first value applies. Days are UTC days.

use serde::Deserialize;

/// What happens after the last day of the curve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum After {
    /// No cap any more: the IP is warm.
    #[default]
    Unlimited,
    /// The last value stays the cap.
    Repeat,
}

/// `warmup = { start = "2026-11-20", daily = [50, 100, 500], after = "unlimited" }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarmupConfig {
    /// The first day of the curve, `YYYY-MM-DD` (UTC).
    pub start: String,
    /// Messages per destination per UTC day, day by day.
    pub daily: Vec<u64>,
    /// After the curve: `"unlimited"` (default) or `"repeat"`.
    #[serde(default)]
    pub after: After,
}

/// A compiled warm-up schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    start_day: i64,
    daily: Vec<u64>,
    after: After,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    let days_in = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    ((1..=days_in).contains(&d) && (1970..=9999).contains(&y)).then(|| days_from_civil(y, m, d))
}

impl Warmup {
    /// Checks and compiles a configuration.
    pub fn new(c: &WarmupConfig) -> Result<Warmup, String> {
        let start_day = parse_date(&c.start)
            .ok_or_else(|| format!("warmup.start `{}`: expected YYYY-MM-DD", c.start))?;
        if c.daily.is_empty() {
            return Err("warmup.daily: give at least one daily cap".into());
        }
        Ok(Warmup {
            start_day,
            daily: c.daily.clone(),
            after: c.after,
        })
    }

    /// The UTC day number (days since the epoch) of a Unix time.
    pub fn day_of(unix_secs: u64) -> i64 {
        i64::try_from(unix_secs / 86_400).unwrap_or(i64::MAX)
    }

    /// The cap for UTC day `day`, or `None` once unlimited.
    pub fn cap(&self, day: i64) -> Option<u64> {
        let i = (day - self.start_day).max(0);
        match usize::try_from(i).ok().and_then(|i| self.daily.get(i)) {
            Some(n) => Some(*n),
            None => match self.after {
                After::Unlimited => None,
                After::Repeat => self.daily.last().copied(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_map_to_days() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn the_cap_follows_the_curve_then_repeats_or_goes() {
        let c = WarmupConfig {
            start: "2026-11-20".into(),
            daily: vec![50, 100, 500],
            after: After::Unlimited,
        };
        let w = Warmup::new(&c).unwrap();
        let d0 = parse_date("2026-11-20").unwrap();
        assert_eq!(w.cap(d0 - 3), Some(50), "before the start: day 0's cap");
        assert_eq!(w.cap(d0), Some(50));
        assert_eq!(w.cap(d0 + 2), Some(500));
        assert_eq!(w.cap(d0 + 3), None);
        let r = Warmup::new(&WarmupConfig {
            after: After::Repeat,
            ..c.clone()
        })
        .unwrap();
        assert_eq!(r.cap(d0 + 30), Some(500));
        assert_eq!(Warmup::day_of(86_400 * 3 + 5), 3);
        assert!(Warmup::new(&WarmupConfig { daily: vec![], ..c }).is_err());
    }
}
