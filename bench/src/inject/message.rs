//! Message content. Every message of a size class shares one pre-built,
//! already dot-stuffed template; the only per-message work is writing the
//! sequence number into the Message-ID of a per-connection copy.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::smtp::dot::dot_stuff;

/// Digits reserved for the sequence number inside the Message-ID.
const SEQ_DIGITS: usize = 12;
const SEQ_MODULUS: u64 = 1_000_000_000_000;
/// Padding line length; well under RFC 5322's 78-character advice.
const LINE: usize = 76;
const FILLER: &[u8] = b"The quick brown fox jumps over the lazy dog while Sluice relays the mail ";

/// One size class: template bytes and where the sequence digits live.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    bytes: Vec<u8>,
    seq_at: usize,
}

impl Template {
    /// Builds a message of `size` bytes (or just the headers if they are
    /// larger). The body never starts a line with `.`, and the result is
    /// dot-stuffed anyway, so the same bytes serve DATA and BDAT.
    pub(crate) fn build(run: &str, from: &str, date: &str, size: usize) -> Template {
        let (mut head, seq_at) = headers(run, from, date, 0);
        if size.checked_sub(head.len()) == Some(1) {
            // A one-byte body cannot be a line; lengthen the Subject instead.
            (head, _) = headers(run, from, date, 1);
        }
        let mut remaining = size.saturating_sub(head.len());
        let mut filler = FILLER.iter().cycle();
        while remaining >= 2 {
            let mut len = remaining.min(LINE + 2);
            // Never leave a single byte, which could not form a line.
            if remaining - len == 1 {
                len -= 2;
            }
            head.extend(filler.by_ref().take(len - 2));
            head.extend_from_slice(b"\r\n");
            remaining -= len;
        }
        let mut bytes = Vec::with_capacity(head.len() + 16);
        dot_stuff(&head, &mut bytes);
        Template { bytes, seq_at }
    }

    /// Writes `seq` into the Message-ID and returns the message.
    pub(crate) fn with_seq(&mut self, seq: u64) -> &[u8] {
        let mut n = seq % SEQ_MODULUS;
        if let Some(digits) = self.bytes.get_mut(self.seq_at..self.seq_at + SEQ_DIGITS) {
            for d in digits.iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
        }
        &self.bytes
    }

    /// Message length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// Header section (with the blank line) and the offset of the sequence
/// digits; `subject_pad` extra characters lengthen the Subject.
fn headers(run: &str, from: &str, date: &str, subject_pad: usize) -> (Vec<u8>, usize) {
    let mut head = Vec::with_capacity(512);
    let _ = write!(head, "Message-ID: <inj-{run}-");
    let seq_at = head.len();
    head.extend(std::iter::repeat(b'0').take(SEQ_DIGITS));
    let _ = write!(
        head,
        "@sluice-bench>\r\nDate: {date}\r\nFrom: <{from}>\r\nTo: undisclosed-recipients:;\r\n\
         Subject: sluice-bench load test{:!<subject_pad$}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n",
        ""
    );
    (head, seq_at)
}

/// The Message-ID (with angle brackets) of message `seq` of run `run`,
/// exactly as written into the message header.
pub fn message_id(run: &str, seq: u64) -> String {
    format!("<inj-{run}-{:012}@sluice-bench>", seq % SEQ_MODULUS)
}

/// A short random-ish run identifier so Message-IDs of different runs never collide.
pub(crate) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ rand::random::<u64>();
    format!("{:08x}", mixed as u32)
}

/// RFC 5322 date for `now`, in UTC.
pub(crate) fn rfc5322_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc5322(secs)
}

fn rfc5322(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let tod = unix % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 >= 0.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = DAYS.get((days % 7) as usize).unwrap_or(&"Thu");
    let month_name = MONTHS.get((month - 1) as usize).unwrap_or(&"Jan");
    format!(
        "{weekday}, {day} {month_name} {year} {:02}:{:02}:{:02} +0000",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes_and_patched_ids() {
        for size in (0..600).chain([1024, 4096, 65536, 65537]) {
            let mut t = Template::build(
                "abcd1234",
                "a@b.test",
                "Thu, 1 Jan 1970 00:00:00 +0000",
                size,
            );
            let header_only = t.len() > size;
            assert!(
                header_only || t.len() == size,
                "size {size} built {}",
                t.len()
            );
            let msg = t.with_seq(42).to_vec();
            let text = String::from_utf8(msg).unwrap();
            assert!(text.contains("Message-ID: <inj-abcd1234-000000000042@sluice-bench>\r\n"));
            assert!(text.contains(&message_id("abcd1234", 42)));
            assert!(text.ends_with("\r\n"));
            assert!(!text.contains("\r\n."), "a line starts with a dot");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc5322(1_763_852_280), "Sat, 22 Nov 2025 22:58:00 +0000");
    }
}
