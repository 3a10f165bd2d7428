//! Incremental parser for server replies (RFC 5321 4.2).
//!
//! The parser consumes only complete lines and leaves a partial line in the
//! caller's buffer, the same contract as
//! [`ServerSession::handle_input`](crate::smtp::ServerSession::handle_input):
//! the driver never has to hold
//! more than one line, and the parser needs no buffer of its own for bytes
//! it has not understood yet. A multi-line reply (`250-...`) is accumulated
//! line by line into one reusable `String`, so a reply whose text nobody
//! looks at (the `250` to a RCPT, the common case) costs no allocation.
//!
//! Everything a server sends is untrusted: lines are capped at
//! [`MAX_LINE`] octets and replies at [`MAX_LINES`] lines, and anything that
//! is not `ddd`, `ddd text` or `ddd-text` with a first digit of 2 to 5 is a
//! protocol error. Both caps are far above what real servers send (EHLO
//! replies are the longest, a few hundred octets) while keeping a hostile
//! server from making the client buffer without bound.

use std::sync::Arc;

use memchr::memchr;

use super::super::reply::Reply;

/// Longest reply line accepted, CRLF included.
pub const MAX_LINE: usize = 4096;
/// Most lines accepted in one multi-line reply.
pub const MAX_LINES: usize = 64;

/// An RFC 3463 enhanced status code: class, subject, detail.
type Enhanced = (u8, u16, u16);

/// Why the server's bytes could not be parsed as a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Not `ddd[ -]text`, a first digit outside 2..=5, or a continuation
    /// line whose code differs from the first line's.
    Malformed,
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
    /// A reply with more than [`MAX_LINES`] lines.
    TooManyLines,
}

/// What one call to [`ReplyParser::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A complete reply is available through the accessors until the next
    /// call to `feed`.
    Reply,
    /// All complete lines were consumed; the rest is a partial line.
    NeedMore,
    /// The input is not a valid reply.
    Error(ReplyError),
}

/// Accumulates one reply at a time. See the module documentation.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// Code of the reply being read or just completed; 0 before the first
    /// line of a reply.
    code: u16,
    /// Lines of the current reply so far.
    lines: usize,
    /// The enhanced status code of the first line, stripped from every line
    /// that repeats it (RFC 2034 puts it on each line).
    enhanced: Option<Enhanced>,
    /// The reply text, lines separated by `\n`, codes and enhanced codes
    /// removed.
    text: String,
    /// The last `feed` completed a reply; the next one starts a new one.
    complete: bool,
}

impl ReplyParser {
    /// A parser waiting for the first line of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes complete lines from `input` until a reply is complete, a
    /// partial line remains, or the input is invalid. Returns the number of
    /// bytes consumed and what was found. After [`Step::Error`] the parser
    /// is in an unspecified state; the session closes the connection.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Step) {
        if self.complete {
            self.complete = false;
            self.code = 0;
            self.lines = 0;
            self.enhanced = None;
            self.text.clear();
        }
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let window = rest.get(..MAX_LINE).unwrap_or(rest);
            let Some(lf) = memchr(b'\n', window) else {
                if rest.len() >= MAX_LINE {
                    return (pos, Step::Error(ReplyError::LineTooLong));
                }
                return (pos, Step::NeedMore);
            };
            let line = rest.get(..lf).unwrap_or_default();
            // Servers are expected to send CRLF; a bare LF is accepted too,
            // since being strict about it here buys nothing.
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos += lf + 1;
            match self.line(line) {
                Err(e) => return (pos, Step::Error(e)),
                Ok(true) => {
                    self.complete = true;
                    return (pos, Step::Reply);
                }
                Ok(false) => {}
            }
        }
    }

    /// Handles one line without its line ending; `Ok(true)` when it was the
    /// last line of the reply.
    fn line(&mut self, line: &[u8]) -> Result<bool, ReplyError> {
        let (code, last, text) = split_line(line).ok_or(ReplyError::Malformed)?;
        if self.lines == 0 {
            self.code = code;
        } else if code != self.code {
            return Err(ReplyError::Malformed);
        }
        self.lines += 1;
        if self.lines > MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        let class = (code / 100) as u8;
        let text = match parse_enhanced(text, class) {
            Some((enh, rest)) if self.lines == 1 => {
                self.enhanced = Some(enh);
                rest
            }
            Some((enh, rest)) if Some(enh) == self.enhanced => rest,
            _ => text,
        };
        if self.lines > 1 {
            self.text.push('\n');
        }
        match std::str::from_utf8(text) {
            Ok(s) => self.text.push_str(s),
            // Servers occasionally send Latin-1 in reply text; keep what can
            // be kept rather than refusing the reply.
            Err(_) => self.text.push_str(&String::from_utf8_lossy(text)),
        }
        Ok(last)
    }

    /// The code of the completed reply.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The text of the completed reply, lines separated by `\n`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The completed reply as an owned [`Reply`]. Allocates, so the session
    /// calls it only for replies that are reported to the driver.
    pub fn to_reply(&self) -> Arc<Reply> {
        Arc::new(Reply::new(self.code, self.enhanced, self.text.clone()))
    }
}

/// Splits `ddd[ -]text` into the code, whether this is the last line, and
/// the text. A bare `ddd` is a last line with empty text.
fn split_line(line: &[u8]) -> Option<(u16, bool, &[u8])> {
    let (digits, rest) = line.split_first_chunk::<3>()?;
    let [a, b, c] = *digits;
    if !(b'2'..=b'5').contains(&a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return None;
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    match rest.split_first() {
        None => Some((code, true, rest)),
        Some((b' ', text)) => Some((code, true, text)),
        Some((b'-', text)) => Some((code, false, text)),
        Some(_) => None,
    }
}

/// Parses an RFC 3463 enhanced status code (`class.subject.detail`) at the
/// start of `text` whose class matches the reply's first digit, returning it
/// and the text after it and its separating space. A mismatched class means
/// the text merely starts with something number-like, so it is left alone.
fn parse_enhanced(text: &[u8], class: u8) -> Option<(Enhanced, &[u8])> {
    let (&c, rest) = text.split_first()?;
    if c != b'0' + class {
        return None;
    }
    let rest = rest.strip_prefix(b".")?;
    let (subject, rest) = number(rest)?;
    let rest = rest.strip_prefix(b".")?;
    let (detail, rest) = number(rest)?;
    let rest = match rest.split_first() {
        None => rest,
        Some((b' ', after)) => after,
        Some(_) => return None,
    };
    Some(((class, subject, detail), rest))
}

/// One to three digits.
fn number(s: &[u8]) -> Option<(u16, &[u8])> {
    let len = s.iter().take(4).take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 3 {
        return None;
    }
    let (digits, rest) = s.split_at_checked(len)?;
    let n = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Some((n, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Parsed = Result<(u16, Option<Enhanced>, String), ReplyError>;

    fn parse_all(input: &[u8]) -> Vec<Parsed> {
        let mut p = ReplyParser::new();
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            let (n, step) = p.feed(&input[pos..]);
            pos += n;
            match step {
                Step::Reply => {
                    let r = p.to_reply();
                    out.push(Ok((r.code(), r.enhanced(), r.text().to_owned())));
                }
                Step::NeedMore => break,
                Step::Error(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn single_and_multi_line() {
        let r = parse_all(b"220 mx.example ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        assert_eq!(
            r,
            vec![
                Ok((220, None, "mx.example ESMTP".into())),
                Ok((250, None, "mx\nPIPELINING\nSIZE 10".into())),
            ]
        );
    }

    #[test]
    fn enhanced_codes_are_split_off_each_line() {
        let r = parse_all(b"550-5.1.1 No such user\r\n550 5.1.1 here\r\n");
        assert_eq!(
            r,
            vec![Ok((550, Some((5, 1, 1)), "No such user\nhere".into()))]
        );
        // Class mismatch: not an enhanced code.
        let r = parse_all(b"250 4.1.1 odd\r\n");
        assert_eq!(r, vec![Ok((250, None, "4.1.1 odd".into()))]);
        // Only the code, no text.
        let r = parse_all(b"250 2.0.0\r\n");
        assert_eq!(r, vec![Ok((250, Some((2, 0, 0)), "".into()))]);
        // Too many digits.
        let r = parse_all(b"250 2.1234.0 x\r\n");
        assert_eq!(r, vec![Ok((250, None, "2.1234.0 x".into()))]);
    }

    #[test]
    fn bare_code_bare_lf_and_latin1() {
        let r = parse_all(b"250\n354 go\r\n451 caf\xe9\r\n");
        assert_eq!(
            r,
            vec![
                Ok((250, None, "".into())),
                Ok((354, None, "go".into())),
                Ok((451, None, "caf\u{fffd}".into())),
            ]
        );
    }

    #[test]
    fn malformed_lines() {
        for bad in [
            &b"25\r\n"[..],
            b"abc ok\r\n",
            b"250x\r\n",
            b"150 x\r\n",
            b"650 x\r\n",
            b"\r\n",
            b"250-a\r\n251 b\r\n",
        ] {
            assert_eq!(
                parse_all(bad).last(),
                Some(&Err(ReplyError::Malformed)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn partial_lines_are_not_consumed() {
        let mut p = ReplyParser::new();
        assert_eq!(p.feed(b"250-a\r\n250 b"), (7, Step::NeedMore));
        assert_eq!(p.feed(b"250 b\r\n"), (7, Step::Reply));
        assert_eq!(p.text(), "a\nb");
        assert_eq!(p.feed(b""), (0, Step::NeedMore));
    }

    #[test]
    fn limits() {
        let long = vec![b'x'; MAX_LINE];
        let mut p = ReplyParser::new();
        assert_eq!(p.feed(&long), (0, Step::Error(ReplyError::LineTooLong)));
        let mut p = ReplyParser::new();
        assert_eq!(p.feed(&long[..MAX_LINE - 1]), (0, Step::NeedMore));
        // A line of exactly MAX_LINE octets with its LF is fine.
        let mut line = b"250 ".to_vec();
        line.resize(MAX_LINE - 2, b'a');
        line.extend_from_slice(b"\r\n");
        assert_eq!(ReplyParser::new().feed(&line), (MAX_LINE, Step::Reply));
        let mut many = Vec::new();
        for _ in 0..MAX_LINES {
            many.extend_from_slice(b"250-x\r\n");
        }
        many.extend_from_slice(b"250 x\r\n");
        assert_eq!(
            parse_all(&many).last(),
            Some(&Err(ReplyError::TooManyLines))
        );
    }

    proptest! {
        #[test]
        fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut p = ReplyParser::new();
            let mut pos = 0;
            loop {
                let (n, step) = p.feed(&input[pos..]);
                prop_assert!(n <= input.len() - pos);
                pos += n;
                if step != Step::Reply {
                    break;
                }
            }
        }

        #[test]
        fn splitting_does_not_change_the_result(cuts in proptest::collection::vec(0usize..80, 0..6)) {
            let input: &[u8] =
                b"220 hi\r\n250-mx\r\n250-SIZE 1\r\n250 8BITMIME\r\n550-5.1.1 a\r\n550 5.1.1 b\r\n";
            let whole = parse_all(input);
            let mut p = ReplyParser::new();
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut last = 0;
            for cut in cuts.into_iter().chain([input.len()]) {
                let cut = cut.min(input.len()).max(last);
                buf.extend_from_slice(&input[last..cut]);
                last = cut;
                loop {
                    let (n, step) = p.feed(&buf);
                    buf.drain(..n);
                    match step {
                        Step::Reply => {
                            let r = p.to_reply();
                            got.push(Ok((r.code(), r.enhanced(), r.text().to_owned())));
                        }
                        _ => break,
                    }
                }
            }
            prop_assert_eq!(got, whole);
        }
    }
}
