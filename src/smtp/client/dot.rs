//! Dot-stuffing for DATA (RFC 5321 4.5.2) without copying when possible.
//!
//! Most messages have no line starting with `.`, so the common case is a
//! single `memmem` scan that finds nothing: the caller's `Bytes` goes out as
//! is and only the end marker is written separately. When stuffing is
//! needed the body is copied once into a buffer sized exactly, with the end
//! marker appended, so the copy path is still one allocation and one write.

use bytes::Bytes;
use memchr::memmem;

/// End marker when the body already ends in CRLF.
pub const END: &[u8] = b".\r\n";
/// End marker when it does not: the last line is terminated first, since
/// only CRLF.CRLF ends the data.
pub const CRLF_END: &[u8] = b"\r\n.\r\n";

/// A body ready for DATA.
#[derive(Debug)]
pub enum Prepared {
    /// No stuffing was needed: the original bytes, to be followed by
    /// [`end_marker`].
    Original(Bytes),
    /// A stuffed copy that already includes the end marker.
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

/// Stuffs `body` if any line starts with `.`; see the module documentation.
/// Lines are found after every LF, so even a body with stray bare LFs cannot
/// end the data early.
pub fn prepare(body: &Bytes) -> Prepared {
    let b: &[u8] = body;
    let leading = b.first() == Some(&b'.');
    let finder = memmem::Finder::new(b"\n.");
    let Some(first) = finder.find(b) else {
        if !leading {
            return Prepared::Original(body.clone());
        }
        return Prepared::Stuffed(stuff(b, leading, std::iter::empty()));
    };
    // Counting the rest first sizes the copy exactly; the second scan is
    // far cheaper than a reallocation of a large body.
    let rest = b.get(first + 1..).unwrap_or_default();
    let more = finder.find_iter(rest).map(|i| i + first + 1);
    Prepared::Stuffed(stuff(b, leading, std::iter::once(first).chain(more)))
}

/// Copies `b` with a `.` inserted after each LF at `positions` (positions of
/// "\n.") and at the start if `leading`, then the end marker.
fn stuff(b: &[u8], leading: bool, positions: impl Iterator<Item = usize> + Clone) -> Bytes {
    let extra = positions.clone().count() + usize::from(leading);
    let end = end_marker(b);
    let mut out = Vec::with_capacity(b.len() + extra + end.len());
    if leading {
        out.push(b'.');
    }
    let mut last = 0;
    for pos in positions {
        // Through the LF, then the extra dot; the original dot follows with
        // the next segment.
        out.extend_from_slice(b.get(last..=pos).unwrap_or_default());
        out.push(b'.');
        last = pos + 1;
    }
    out.extend_from_slice(b.get(last..).unwrap_or_default());
    out.extend_from_slice(end);
    Bytes::from(out)
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

    proptest! {
        #[test]
        fn round_trips(body in proptest::collection::vec(
            prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64)
        ) {
            let data = wire(&body);
            prop_assert!(data.ends_with(b"\r\n.\r\n") || data == b".\r\n");
            let mut expect = body.clone();
            if !expect.is_empty() && !expect.ends_with(b"\r\n") {
                expect.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(unstuff(&data), expect);
        }
    }
}
