//! Reply parsing for the client side. Replies are counted by code and
//! enhanced status (`452 4.3.1`), so both are extracted into a small `Copy`
//! value that can key a map without allocating per reply.

use std::fmt;

use memchr::memchr;

/// Longest reply line accepted before the peer is considered broken; RFC 5321
/// allows 512 octets, real servers send a little more.
pub const MAX_REPLY_LINE: usize = 4096;

/// An RFC 3463 enhanced status code such as `4.3.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedStatus {
    /// 2, 4 or 5.
    pub class: u8,
    /// Subject sub-code.
    pub subject: u16,
    /// Detail sub-code.
    pub detail: u16,
}

/// The parts of a reply that matter for accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode {
    /// Three-digit basic code.
    pub code: u16,
    /// Enhanced status, when the server sent one on the last line.
    pub enhanced: Option<EnhancedStatus>,
}

impl ReplyCode {
    /// 2xx.
    pub fn is_positive(self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx, the intermediate reply to DATA.
    pub fn is_intermediate(self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 421 means the server is closing the connection.
    pub fn is_closing(self) -> bool {
        self.code == 421
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {}.{}.{}", e.class, e.subject, e.detail)?;
        }
        Ok(())
    }
}

/// Malformed reply from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line did not start with three digits and a separator.
    #[error("malformed SMTP reply line")]
    Malformed,
    /// A line grew beyond [`MAX_REPLY_LINE`] without a line ending.
    #[error("SMTP reply line too long")]
    TooLong,
}

/// Looks for one complete (possibly multi-line) reply at the start of `buf`.
///
/// Returns `Ok(None)` when more input is needed. On success returns the code
/// and the number of bytes the reply occupied; `on_line` is then called once
/// per line with the text after the `NNN-`/`NNN ` prefix (used for EHLO
/// keywords). Lines are only reported once the whole reply is present, so a
/// caller that retries after reading more never sees a line twice.
pub fn parse_reply(
    buf: &[u8],
    mut on_line: impl FnMut(&[u8]),
) -> Result<Option<(ReplyCode, usize)>, ReplyError> {
    let mut pos = 0;
    let end = loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some(nl) = memchr(b'\n', rest) else {
            if rest.len() > MAX_REPLY_LINE {
                return Err(ReplyError::TooLong);
            }
            return Ok(None);
        };
        let line = trim_eol(rest.get(..nl).unwrap_or_default());
        let (_, sep) = split_prefix(line)?;
        pos += nl + 1;
        if sep != b'-' {
            break pos;
        }
    };
    let mut code = None;
    let mut last_text: &[u8] = &[];
    let mut start = 0;
    while start < end {
        let rest = buf.get(start..end).unwrap_or_default();
        let nl = memchr(b'\n', rest).unwrap_or(rest.len());
        let line = trim_eol(rest.get(..nl).unwrap_or_default());
        let (c, _) = split_prefix(line)?;
        code.get_or_insert(c);
        last_text = line.get(4..).unwrap_or_default();
        on_line(last_text);
        start += nl + 1;
    }
    let code = code.ok_or(ReplyError::Malformed)?;
    Ok(Some((
        ReplyCode {
            code,
            enhanced: parse_enhanced(last_text),
        },
        end,
    )))
}

fn trim_eol(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits `NNN<sep>` off a reply line; a bare `NNN` counts as a final line.
fn split_prefix(line: &[u8]) -> Result<(u16, u8), ReplyError> {
    match line {
        [a, b, c, rest @ ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            match rest.first() {
                None => Ok((code, b' ')),
                Some(&sep @ (b' ' | b'-')) => Ok((code, sep)),
                Some(_) => Err(ReplyError::Malformed),
            }
        }
        _ => Err(ReplyError::Malformed),
    }
}

/// Parses a leading `c.s.d` enhanced status code from reply text.
pub fn parse_enhanced(text: &[u8]) -> Option<EnhancedStatus> {
    let word_end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let word = text.get(..word_end)?;
    let mut parts = word.split(|&b| b == b'.');
    let class = parse_num(parts.next()?, 1)?;
    let subject = parse_num(parts.next()?, 3)?;
    let detail = parse_num(parts.next()?, 3)?;
    if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
        return None;
    }
    Some(EnhancedStatus {
        class: u8::try_from(class).ok()?,
        subject,
        detail,
    })
}

fn parse_num(digits: &[u8], max_len: usize) -> Option<u16> {
    if digits.is_empty() || digits.len() > max_len {
        return None;
    }
    digits.iter().try_fold(0u16, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u16::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced() {
        let (code, used) = parse_reply(b"452 4.3.1 Insufficient storage\r\nrest", |_| {})
            .unwrap()
            .unwrap();
        assert_eq!(code.to_string(), "452 4.3.1");
        assert_eq!(used, 32);
    }

    #[test]
    fn multi_line_waits_for_last_line() {
        assert_eq!(parse_reply(b"250-a\r\n250-b\r\n", |_| {}).unwrap(), None);
        let mut lines = Vec::new();
        let (code, used) = parse_reply(b"250-a\r\n250-PIPELINING\r\n250 CHUNKING\r\n", |l| {
            lines.push(l.to_vec())
        })
        .unwrap()
        .unwrap();
        assert_eq!(code.code, 250);
        assert_eq!(code.enhanced, None);
        assert_eq!(used, 37);
        assert_eq!(
            lines,
            vec![b"a".to_vec(), b"PIPELINING".to_vec(), b"CHUNKING".to_vec()]
        );
    }

    #[test]
    fn bare_code_and_garbage() {
        let (code, _) = parse_reply(b"354\r\n", |_| {}).unwrap().unwrap();
        assert_eq!(code.code, 354);
        assert_eq!(
            parse_reply(b"hello\r\n", |_| {}),
            Err(ReplyError::Malformed)
        );
        assert_eq!(parse_reply(&[b'2'; 5000], |_| {}), Err(ReplyError::TooLong));
    }

    #[test]
    fn enhanced_code_edge_cases() {
        assert!(parse_enhanced(b"4.7.1 Greylisted").is_some());
        assert!(parse_enhanced(b"Ok").is_none());
        assert!(parse_enhanced(b"3.1.1 x").is_none());
        assert!(parse_enhanced(b"5.1.1000 x").is_none());
    }
}
