//! The on-disk framing: a segment header, then frames back to back.
//!
//! ```text
//! segment header (32 bytes):
//!   "SLUICEJ\x01" | version u32 | reserved u32 | seq u64 | crc32c u32 | 4 zero bytes
//! frame (13-byte header + payload):
//!   magic [D3 4A 72 9E] | len u32 | crc32c u32 | type u8 | payload (len bytes)
//! ```
//!
//! All integers are little-endian. The CRC (Castagnoli) covers the length
//! field, the type byte and the payload, so a damaged length is caught as
//! surely as a damaged payload. The magic exists only for resynchronising:
//! after a damaged frame the reader scans forward for the next occurrence
//! of the magic whose frame also passes its CRC. A random 4-byte pattern
//! followed by a matching 32-bit CRC is about a 2^-64 accident, so a frame
//! found that way is trusted. (A frame deliberately embedded in a message
//! body could be picked up this way, but only while resynchronising after
//! real damage inside that very body; in normal reading, bodies are skipped
//! by length and never looked into.)

/// Size of the segment header.
pub(crate) const SEGMENT_HEADER: usize = 32;
/// Size of a frame header (magic, length, CRC, type).
pub(crate) const FRAME_HEADER: usize = 13;
/// Largest payload a frame may carry. Anything claiming more is damage.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

const SEGMENT_MAGIC: &[u8; 8] = b"SLUICEJ\x01";
const SEGMENT_VERSION: u32 = 1;
pub(crate) const FRAME_MAGIC: [u8; 4] = [0xD3, 0x4A, 0x72, 0x9E];

/// The header of segment number `seq`.
pub(crate) fn segment_header(seq: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; returns the sequence number it names.
pub(crate) fn parse_segment_header(data: &[u8]) -> Option<u64> {
    let h = data.get(..SEGMENT_HEADER)?;
    if h.get(..8)? != SEGMENT_MAGIC || u32_at(h, 8)? != SEGMENT_VERSION {
        return None;
    }
    if crc32c::crc32c(h.get(..24)?) != u32_at(h, 24)? {
        return None;
    }
    u64_at(h, 16)
}

/// Appends one frame to `buf`, with the payload written by `payload`.
/// Returns the frame's length, or the payload length if it is too large
/// (in which case `buf` is left as it was).
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    ty: u8,
    payload: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, usize> {
    let start = buf.len();
    buf.extend_from_slice(&FRAME_MAGIC);
    buf.extend_from_slice(&[0; 8]);
    buf.push(ty);
    payload(buf);
    let len = buf.len() - start - FRAME_HEADER;
    if len > MAX_PAYLOAD {
        buf.truncate(start);
        return Err(len);
    }
    // `len` fits in u32: MAX_PAYLOAD < 2^32.
    let len_bytes = (len as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &buf[start + 12..]);
    buf[start + 4..start + 8].copy_from_slice(&len_bytes);
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(buf.len() - start)
}

/// A frame that checked out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    /// The record type.
    pub ty: u8,
    /// The payload.
    pub payload: &'a [u8],
    /// Bytes the whole frame occupies.
    pub len: usize,
}

/// Why there is no valid frame at some position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Fewer bytes remain than the frame needs (a torn write looks like this).
    Short,
    /// The bytes are not a valid frame.
    Invalid,
}

/// The frame starting exactly at `pos`, if it is intact.
pub(crate) fn parse_at(data: &[u8], pos: usize) -> Result<Frame<'_>, Bad> {
    let rest = data.get(pos..).ok_or(Bad::Short)?;
    let Some(head) = rest.get(..FRAME_HEADER) else {
        // A prefix of the magic is a torn header; anything else is junk.
        let n = rest.len().min(4);
        return if rest.get(..n) == FRAME_MAGIC.get(..n) {
            Err(Bad::Short)
        } else {
            Err(Bad::Invalid)
        };
    };
    if head.get(..4) != Some(&FRAME_MAGIC[..]) {
        return Err(Bad::Invalid);
    }
    let len = u32_at(head, 4).ok_or(Bad::Invalid)? as usize;
    if len > MAX_PAYLOAD {
        return Err(Bad::Invalid);
    }
    let total = FRAME_HEADER + len;
    let body = rest.get(12..total).ok_or(Bad::Short)?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(head.get(4..8).ok_or(Bad::Invalid)?), body);
    if Some(crc) != u32_at(head, 8) {
        return Err(Bad::Invalid);
    }
    let (&ty, payload) = body.split_first().ok_or(Bad::Invalid)?;
    Ok(Frame {
        ty,
        payload,
        len: total,
    })
}

/// The first position after `from` where an intact frame starts.
pub(crate) fn resync(data: &[u8], from: usize) -> Option<usize> {
    let mut at = from.checked_add(1)?;
    let finder = memchr::memmem::Finder::new(&FRAME_MAGIC);
    while let Some(i) = data.get(at..).and_then(|d| finder.find(d)) {
        let p = at + i;
        if parse_at(data, p).is_ok() {
            return Some(p);
        }
        at = p + 1;
    }
    None
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut buf = Vec::new();
        let n = encode(&mut buf, 7, |b| b.extend_from_slice(b"hello")).unwrap();
        assert_eq!(n, FRAME_HEADER + 5);
        let f = parse_at(&buf, 0).unwrap();
        assert_eq!((f.ty, f.payload, f.len), (7, &b"hello"[..], n));
        for cut in 0..n {
            assert!(parse_at(&buf[..cut], 0).is_err(), "cut at {cut}");
        }
        assert_eq!(
            parse_at(&buf[..FRAME_HEADER + 2], 0).unwrap_err(),
            Bad::Short
        );
        for i in 0..n {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(parse_at(&b, 0).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn resync_finds_the_next_intact_frame() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, |b| b.extend_from_slice(&FRAME_MAGIC)).unwrap();
        let second = buf.len();
        encode(&mut buf, 2, |b| b.extend_from_slice(b"x")).unwrap();
        buf[5] ^= 1;
        // The magic inside the first payload is not an intact frame.
        assert_eq!(resync(&buf, 0), Some(second));
        assert_eq!(resync(&buf, second), None);
    }

    #[test]
    fn segment_header_checks() {
        let h = segment_header(42);
        assert_eq!(parse_segment_header(&h), Some(42));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(parse_segment_header(&bad), None);
        assert_eq!(parse_segment_header(&h[..10]), None);
    }
}
