//! Dot-stuffing for DATA (RFC 5321 4.5.2) without copying when possible,
//! safe for any bytes that reach it.
//!
//! Most messages are clean CRLF text with no line starting with `.`, so the
//! common case is one scan that finds nothing to change: the caller's
//! `Bytes` goes out as is and only the end marker is written separately.
//! Otherwise the body is copied once, rewritten and with the end marker
//! appended, so the copy path is still one allocation and one write.
//!
//! The ingress refuses bare CR and bare LF, but a body can still carry them
//! (a journal written before that rule, a bug elsewhere). Sent as they are,
//! `\r.\r` or `\n.\n` end the data early at receivers that accept a bare
//! line end: the rest of the body is then read as commands (SMTP
//! smuggling). So every bare CR and bare LF is rewritten to CRLF, and the
//! dot is stuffed after every line end of the result: nothing but our own
//! final CRLF.CRLF can end the data, whatever the receiver's idea of a line.

use bytes::Bytes;
use memchr::{memchr2, memchr2_iter};

/// End marker when the body already ends in CRLF.
pub const END: &[u8] = b".\r\n";
/// End marker when it does not: the last line is terminated first, since
/// only CRLF.CRLF ends the data.
pub const CRLF_END: &[u8] = b"\r\n.\r\n";

/// A body ready for DATA.
#[derive(Debug)]
pub enum Prepared {
    /// Nothing needed changing: the original bytes, to be followed by
    /// [`end_marker`].
    Original(Bytes),
    /// A rewritten copy that already includes the end marker.
    Stuffed(Bytes),
}

/// The end marker that must follow `body` sent unchanged.
pub fn end_marker(body: &[u8]) -> &'static [u8] {
    if body.is_empty() || body.ends_with(b"\r\n") {
        END
    } else {
        CRLF_END
    }
}

/// Prepares `body` for DATA; see the module documentation.
pub fn prepare(body: &Bytes) -> Prepared {
    if body.first() != Some(&b'.') && scan(body, true) == Scan::Clean {
        return Prepared::Original(body.clone());
    }
    let mut out = rewrite(body, true);
    out.extend_from_slice(end_marker(&out));
    Prepared::Stuffed(Bytes::from(out))
}

/// `body` with every bare CR and bare LF made CRLF, for BDAT (which needs
/// no stuffing but should carry the same lines as DATA would); the
/// original when it has none.
pub fn line_ends(body: &Bytes) -> Bytes {
    if scan(body, false) == Scan::Clean {
        return body.clone();
    }
    Bytes::from(rewrite(body, false))
}

#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// CRLF line ends only and, if stuffing, no line after the first
    /// starts with `.`.
    Clean,
    /// Something must change.
    Rewrite,
}

fn scan(b: &[u8], stuff: bool) -> Scan {
    for i in memchr2_iter(b'\r', b'\n', b) {
        let next = b.get(i + 1);
        let ok = if b.get(i) == Some(&b'\r') {
            next == Some(&b'\n')
        } else {
            i.checked_sub(1).and_then(|p| b.get(p)) == Some(&b'\r')
                && !(stuff && next == Some(&b'.'))
        };
        if !ok {
            return Scan::Rewrite;
        }
    }
    Scan::Clean
}

/// Copies `b` with every line end (CRLF, bare CR, bare LF) written as CRLF
/// and, if `stuff`, a `.` before each line that starts with one.
fn rewrite(b: &[u8], stuff: bool) -> Vec<u8> {
    // Most rewritten bodies gain a few octets; the rest grow once.
    let mut out = Vec::with_capacity(b.len().saturating_add(b.len() / 64).saturating_add(8));
    let mut rest = b;
    while !rest.is_empty() {
        if stuff && rest.first() == Some(&b'.') {
            out.push(b'.');
        }
        let Some(i) = memchr2(b'\r', b'\n', rest) else {
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(rest.get(..i).unwrap_or_default());
        out.extend_from_slice(b"\r\n");
        let crlf = rest.get(i) == Some(&b'\r') && rest.get(i + 1) == Some(&b'\n');
        rest = rest.get(i + 1 + usize::from(crlf)..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The whole DATA payload the server sees.
    fn wire(body: &[u8]) -> Vec<u8> {
        match prepare(&Bytes::copy_from_slice(body)) {
            Prepared::Original(b) => [&b[..], end_marker(&b)].concat(),
            Prepared::Stuffed(b) => b.to_vec(),
        }
    }

    /// What a server recovers (RFC 5321 4.5.2 receiver side).
    fn unstuff(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut lines = data.split_inclusive(|&b| b == b'\n');
        for line in &mut lines {
            if line == b".\r\n" {
                return out;
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        panic!("no end marker");
    }

    #[test]
    fn no_stuffing_is_zero_copy() {
        let body = Bytes::from_static(b"Subject: x\r\n\r\nhello\r\n");
        match prepare(&body) {
            Prepared::Original(b) => assert_eq!(b.as_ptr(), body.as_ptr()),
            Prepared::Stuffed(_) => panic!("copied"),
        }
        assert_eq!(end_marker(&body), END);
        assert_eq!(end_marker(b"no crlf"), CRLF_END);
        assert_eq!(end_marker(b""), END);
    }

    #[test]
    fn stuffing() {
        assert_eq!(wire(b".a\r\n"), b"..a\r\n.\r\n");
        assert_eq!(wire(b"a\r\n.\r\nb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(wire(b"a\r\n..b\r\n."), b"a\r\n...b\r\n..\r\n.\r\n");
        assert_eq!(wire(b"x"), b"x\r\n.\r\n");
        assert_eq!(wire(b""), b".\r\n");
        assert_eq!(wire(b"."), b"..\r\n.\r\n");
    }

    #[test]
    fn bare_line_ends_become_crlf_and_look_alikes_are_stuffed() {
        assert_eq!(wire(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(wire(b"a\n.\r\nb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(wire(b"a\r\n.\nb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(wire(b"a\r.\rb\r\n"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(wire(b"a\r.\r\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(wire(b"a\r"), b"a\r\n.\r\n");
        assert_eq!(wire(b"\n"), b"\r\n.\r\n");
        assert_eq!(wire(b"a\r\r\n"), b"a\r\n\r\n.\r\n");
        assert_eq!(
            &line_ends(&Bytes::from_static(b"a\rb\n"))[..],
            b"a\r\nb\r\n"
        );
        let clean = Bytes::from_static(b"a\r\n.b\r\n");
        assert_eq!(line_ends(&clean).as_ptr(), clean.as_ptr());
    }

    /// No CR without its LF and no LF without its CR.
    fn no_bare_line_ends(data: &[u8]) -> bool {
        data.iter().enumerate().all(|(i, &c)| match c {
            b'\r' => data.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && data[i - 1] == b'\r',
            _ => true,
        })
    }

    /// Where a receiver that takes any CR or LF as a line end would see
    /// the data end: the first line that is just `.`.
    fn lenient_end(data: &[u8]) -> Option<usize> {
        let mut start = 0;
        for (i, &c) in data.iter().enumerate() {
            if c == b'\r' || c == b'\n' {
                if &data[start..i] == b"." {
                    return Some(start);
                }
                start = i + 1;
            }
        }
        None
    }

    proptest! {
        #[test]
        fn round_trips(body in proptest::collection::vec(
            prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64)
        ) {
            let data = wire(&body);
            prop_assert!(data.ends_with(b"\r\n.\r\n") || data == b".\r\n");
            prop_assert!(no_bare_line_ends(&data));
            // Strict or lenient, a receiver finds the end only at the end.
            prop_assert_eq!(lenient_end(&data), Some(data.len() - 3));
            // Clean CRLF text comes back exactly.
            if no_bare_line_ends(&body) {
                let mut expect = body.clone();
                if !expect.is_empty() && !expect.ends_with(b"\r\n") {
                    expect.extend_from_slice(b"\r\n");
                }
                prop_assert_eq!(unstuff(&data), expect);
            }
        }

        #[test]
        fn any_bytes_are_safe(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let data = wire(&body);
            prop_assert!(no_bare_line_ends(&data));
            prop_assert!(data.ends_with(b"\r\n.\r\n") || data == b".\r\n");
            prop_assert_eq!(lenient_end(&data), Some(data.len() - 3));
            // The text between line ends is the original's, unstuffed.
            let got = unstuff(&data);
            let strip = |v: &[u8]| v.iter().copied().filter(|&c| c != b'\r' && c != b'\n').collect::<Vec<u8>>();
            prop_assert_eq!(strip(&got), strip(&body));
        }
    }
}
