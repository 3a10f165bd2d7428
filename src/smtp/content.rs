//! Content rules for message data, applied alike to DATA lines and BDAT
//! chunks.
//!
//! DATA hands the server whole lines, BDAT hands it octets cut anywhere, so
//! the rules are written for a byte stream: [`ContentScan::feed`] takes any
//! slice, keeps the few bits of state a line split across reads or chunks
//! needs (a CR waiting for its LF, the length of the line so far, how far the
//! start of a header line matches `Received:`), and never allocates. One
//! scanner for both paths means a client cannot pick the command whose rules
//! are looser: a bare CR that DATA refuses must not reach the queue through
//! BDAT and then go out in an outbound DATA stream as `\r.\r`, which some
//! receivers end data on (SMTP smuggling).
//!
//! It also counts `Received:` fields in the header section (up to the first
//! empty line), the hop count a mail loop drives up.

use memchr::memchr3;

/// A reason the content is refused; the server keeps these as a bit set.
pub type Breach = u8;

/// A line is longer than `max_line_length`.
pub const LONG_LINE: Breach = 2;
/// A CR not followed by LF, or an LF not preceded by CR.
pub const BARE_NEWLINE: Breach = 4;
/// A NUL octet.
pub const NUL: Breach = 8;
/// More `Received:` fields than the hop limit allows.
pub const TOO_MANY_HOPS: Breach = 32;

/// The field name whose occurrences are hops, lowercase.
const RECEIVED: &[u8] = b"received";

/// Where the scanner is within the header section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// In the field name of a header line; this many octets of `received`
    /// matched so far (case-insensitively).
    Name(u8),
    /// `received` matched, then whitespace: a `:` makes it a Received field
    /// (RFC 5322 obsolete syntax allows the space).
    AfterName,
    /// The rest of a header line that needs no more looking at.
    Rest,
    /// Past the empty line that ends the header section.
    Body,
}

/// Streaming checker for one message's content. See the module docs.
#[derive(Debug, Clone)]
pub struct ContentScan {
    /// Longest line allowed, CRLF included.
    line_max: usize,
    /// Received fields beyond which [`TOO_MANY_HOPS`] is raised.
    max_hops: u32,
    /// Octets of the current line so far, without its line end.
    line_len: usize,
    /// The last octet fed was a CR: the next must be LF.
    pending_cr: bool,
    header: Header,
    hops: u32,
    breaches: Breach,
}

impl ContentScan {
    /// A scanner for a message whose lines may be `line_max` octets long
    /// (CRLF included) and which may carry `max_hops` Received fields.
    pub fn new(line_max: usize, max_hops: u32) -> Self {
        ContentScan {
            line_max,
            max_hops,
            line_len: 0,
            pending_cr: false,
            header: Header::Name(0),
            hops: 0,
            breaches: 0,
        }
    }

    /// Received fields counted so far.
    pub fn hops(&self) -> u32 {
        self.hops
    }

    /// Checks the next octets of the message and returns every rule broken
    /// so far (0: none).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Breach {
        while let Some((&first, tail)) = bytes.split_first() {
            if self.pending_cr {
                self.pending_cr = false;
                if first == b'\n' {
                    self.end_line();
                    bytes = tail;
                    continue;
                }
                // The CR was content after all.
                self.breaches |= BARE_NEWLINE;
                self.grow(1);
            }
            if !matches!(self.header, Header::Rest | Header::Body) {
                bytes = self.match_name(bytes);
            }
            match memchr3(b'\r', b'\n', 0, bytes) {
                None => {
                    self.grow(bytes.len());
                    break;
                }
                Some(i) => {
                    self.grow(i);
                    match bytes.get(i) {
                        Some(b'\r') => {
                            // Room for the CRLF this CR probably starts.
                            if self.line_len.saturating_add(2) > self.line_max {
                                self.breaches |= LONG_LINE;
                            }
                            self.pending_cr = true;
                        }
                        Some(b'\n') => {
                            self.breaches |= BARE_NEWLINE;
                            self.end_line();
                        }
                        _ => {
                            self.breaches |= NUL;
                            self.grow(1);
                        }
                    }
                    bytes = bytes.get(i + 1..).unwrap_or_default();
                }
            }
        }
        self.breaches
    }

    /// The message is complete: a CR left waiting is bare. Returns every
    /// rule broken.
    pub fn finish(&mut self) -> Breach {
        if std::mem::take(&mut self.pending_cr) {
            self.breaches |= BARE_NEWLINE;
        }
        self.breaches
    }

    /// Advances the field-name match over the start of `bytes` until it is
    /// decided or a line end / NUL comes; returns what is left.
    fn match_name<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let mut used = 0;
        for &b in bytes {
            if matches!(b, b'\r' | b'\n' | 0) {
                break;
            }
            used += 1;
            self.header = match self.header {
                Header::Name(n) => match RECEIVED.get(usize::from(n)) {
                    Some(&want) if b.to_ascii_lowercase() == want => Header::Name(n + 1),
                    None if b == b':' => self.count_hop(),
                    None if b == b' ' || b == b'\t' => Header::AfterName,
                    _ => Header::Rest,
                },
                Header::AfterName if b == b':' => self.count_hop(),
                Header::AfterName if b == b' ' || b == b'\t' => Header::AfterName,
                _ => Header::Rest,
            };
            if self.header == Header::Rest {
                break;
            }
        }
        self.grow(used);
        bytes.get(used..).unwrap_or_default()
    }

    fn count_hop(&mut self) -> Header {
        self.hops = self.hops.saturating_add(1);
        if self.hops > self.max_hops {
            self.breaches |= TOO_MANY_HOPS;
        }
        Header::Rest
    }

    /// Adds content octets to the current line. The limit counts the line
    /// end too, as DATA's framing does: a line that leaves no room for even
    /// a one-octet end is too long whatever follows.
    fn grow(&mut self, n: usize) {
        self.line_len = self.line_len.saturating_add(n);
        if self.line_len >= self.line_max {
            self.breaches |= LONG_LINE;
        }
    }

    fn end_line(&mut self) {
        self.header = match self.header {
            Header::Body => Header::Body,
            // An empty line (or one that matched nothing yet and is empty)
            // ends the header section.
            Header::Name(0) if self.line_len == 0 => Header::Body,
            _ => Header::Name(0),
        };
        self.line_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan(input: &[u8]) -> (Breach, u32) {
        let mut s = ContentScan::new(1000, 50);
        s.feed(input);
        (s.finish(), s.hops())
    }

    #[test]
    fn clean_text_passes() {
        assert_eq!(scan(b"Subject: x\r\n\r\nbody\r\n"), (0, 0));
        assert_eq!(scan(b""), (0, 0));
    }

    #[test]
    fn bare_cr_and_lf_anywhere_are_caught() {
        for bad in [
            &b"a\nb\r\n"[..],
            b"a\rb\r\n",
            b"a\r\n.\n",
            b"\r.\r",
            b"x\r",
            b"\n",
            b"a\r\r\n",
        ] {
            assert_eq!(scan(bad).0 & BARE_NEWLINE, BARE_NEWLINE, "{bad:?}");
        }
    }

    #[test]
    fn nul_and_long_lines() {
        assert_eq!(scan(b"a\0b\r\n").0, NUL);
        let mut s = ContentScan::new(10, 50);
        assert_eq!(s.feed(b"12345678\r\n"), 0);
        assert_eq!(s.feed(b"123456789\r\n"), LONG_LINE);
    }

    #[test]
    fn received_fields_are_counted_in_the_header_only() {
        let msg = b"Received: a\r\nRECEIVED : b\r\n\tReceived: folded\r\n\
            X-Received: no\r\nReceivedX: no\r\nreceived\t:c\r\n\r\nReceived: body\r\n";
        assert_eq!(scan(msg), (0, 3));
        let mut s = ContentScan::new(1000, 2);
        s.feed(b"Received: 1\r\nReceived: 2\r\n");
        assert_eq!(s.finish(), 0);
        s.feed(b"Received: 3\r\n");
        assert_eq!(s.finish(), TOO_MANY_HOPS);
    }

    proptest! {
        /// Cutting the stream anywhere changes nothing: the state carried
        /// between calls is complete.
        #[test]
        fn split_feeds_match_one_feed(
            body in proptest::collection::vec(prop_oneof![
                Just(b'\r'), Just(b'\n'), Just(0u8), Just(b':'), Just(b' '),
                Just(b'R'), Just(b'e'), Just(b'c'), Just(b'i'), Just(b'v'), Just(b'd'),
                Just(b'x'),
            ], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let mut whole = ContentScan::new(20, 3);
            whole.feed(&body);
            let mut split = ContentScan::new(20, 3);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort_unstable();
            let mut last = 0;
            for c in cuts.into_iter().chain([body.len()]) {
                split.feed(&body[last..c]);
                last = c;
            }
            prop_assert_eq!(whole.finish(), split.finish());
            prop_assert_eq!(whole.hops(), split.hops());
        }
    }
}
