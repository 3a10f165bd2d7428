//! RFC 5322 `date-time` formatting for the `Received:` header.
//!
//! The session dates every message it receives, so this runs once per
//! message on the hot path. It writes straight into the body buffer from
//! unix seconds (no time-zone database, no allocation, no `format!`): UTC is
//! the only zone a relay needs, and the civil-from-days conversion is a few
//! integer operations (Howard Hinnant's algorithm, done in unsigned
//! arithmetic because unix seconds are never negative here).

const DAY_NAMES: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const MONTH_NAMES: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A calendar date and time of day in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    /// Proleptic Gregorian year.
    pub year: u64,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
    /// Day of the week, 0 = Sunday.
    pub weekday: u8,
    /// Hour, 0 to 23.
    pub hour: u8,
    /// Minute, 0 to 59.
    pub minute: u8,
    /// Second, 0 to 59 (unix time has no leap seconds).
    pub second: u8,
}

impl CivilTime {
    /// Splits unix seconds into calendar fields (UTC).
    pub fn from_unix(unix: u64) -> Self {
        let days = unix / 86_400;
        let secs = unix % 86_400;
        // 1970-01-01 was a Thursday (index 4 with Sunday = 0).
        let weekday = ((days + 4) % 7) as u8;
        // Shift the epoch to 0000-03-01 so leap days fall at the end of the
        // (March-based) year and every era is exactly 146097 days long.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + u64::from(month <= 2);
        CivilTime {
            year,
            month,
            day,
            weekday,
            hour: (secs / 3_600) as u8,
            minute: (secs % 3_600 / 60) as u8,
            second: (secs % 60) as u8,
        }
    }
}

/// Appends `unix` as an RFC 5322 date, e.g. `Sun, 22 Nov 2026 23:05:09 +0000`.
pub fn write_rfc5322_date(out: &mut Vec<u8>, unix: u64) {
    let t = CivilTime::from_unix(unix);
    let day_name = DAY_NAMES
        .get(usize::from(t.weekday))
        .copied()
        .unwrap_or(b"Sun");
    let month_name = MONTH_NAMES
        .get(usize::from(t.month).wrapping_sub(1))
        .copied()
        .unwrap_or(b"Jan");
    out.extend_from_slice(day_name);
    out.extend_from_slice(b", ");
    push_2digits(out, t.day);
    out.push(b' ');
    out.extend_from_slice(month_name);
    out.push(b' ');
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(t.year).as_bytes());
    out.push(b' ');
    push_2digits(out, t.hour);
    out.push(b':');
    push_2digits(out, t.minute);
    out.push(b':');
    push_2digits(out, t.second);
    out.extend_from_slice(b" +0000");
}

fn push_2digits(out: &mut Vec<u8>, v: u8) {
    out.push(b'0' + (v / 10) % 10);
    out.push(b'0' + v % 10);
}

/// The current time as an RFC 5322 date string (reads the clock: for
/// drivers and the delivery engine, not for the sans-IO machines).
pub fn date_now() -> String {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut v = Vec::with_capacity(32);
    write_rfc5322_date(&mut v, unix);
    String::from_utf8(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fmt(unix: u64) -> String {
        let mut v = Vec::new();
        write_rfc5322_date(&mut v, unix);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn known_dates() {
        assert_eq!(fmt(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(fmt(1_795_388_709), "Sun, 22 Nov 2026 23:05:09 +0000");
        assert_eq!(fmt(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(fmt(951_868_799), "Tue, 29 Feb 2000 23:59:59 +0000");
        assert_eq!(fmt(951_868_800), "Wed, 01 Mar 2000 00:00:00 +0000");
        assert_eq!(fmt(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(fmt(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 +0000");
        assert_eq!(fmt(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 +0000");
    }

    #[test]
    fn extreme_input_does_not_panic() {
        let s = fmt(u64::MAX);
        assert!(s.ends_with(" +0000"));
    }

    /// Days-from-civil, the inverse, computed independently by counting.
    fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let mut days = 0;
        for yy in 1970..y {
            days += if leap(yy) { 366 } else { 365 };
        }
        let mdays = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for mm in 1..m {
            days += mdays[(mm - 1) as usize];
            if mm == 2 && leap(y) {
                days += 1;
            }
        }
        days + d - 1
    }

    proptest! {
        #[test]
        fn civil_round_trip(unix in 0u64..7_258_118_400) {
            let t = CivilTime::from_unix(unix);
            let days = days_from_civil(t.year, u64::from(t.month), u64::from(t.day));
            prop_assert_eq!(days * 86_400 + u64::from(t.hour) * 3600
                + u64::from(t.minute) * 60 + u64::from(t.second), unix);
            prop_assert_eq!(u64::from(t.weekday), (unix / 86_400 + 4) % 7);
        }
    }
}
