//! The on-disk framing: a segment header, then frames back to back.
//!
//! ```text
//! segment header, version 2 (48 bytes):
//!   "SLUICEJ\x01" | version u32 = 2 | reserved u32 | seq u64 | key [16]
//!   | crc32c u32 (of the 40 bytes before) | 4 zero bytes
//! frame, version 2 (21-byte header + payload):
//!   magic [D3 4A 72 9E] | len u32 | crc32c u32 | tag u64 | type u8 | payload
//!     crc32c = CRC of len, type and payload
//!     tag    = SipHash-2-4 keyed with the segment's key, of
//!              (seq u64, file offset u64, len u32, crc32c u32)
//!
//! version 1 (read only): 32-byte header without the key; frames of
//!   magic | len u32 | crc32c u32 | type u8 | payload (13-byte header)
//! ```
//!
//! All integers are little-endian. The CRC catches damage to the length,
//! type and payload. The tag binds a frame to the segment and the offset it
//! was written at, under a random key that is created with the segment and
//! never leaves the file. It is what makes resynchronising safe: after a
//! damaged frame the reader scans forward for the magic and accepts only a
//! frame whose tag checks out at the offset where it was found. A message
//! body can carry any bytes (an attacker can plant a frame there, built with
//! our own encoder); without the key, such a frame passes with probability
//! 2^-64, and a frame copied from another offset or segment never does.
//! The tag is checked from the header alone before any payload is read, so
//! a body full of magics with huge lengths costs one SipHash each, not a
//! CRC over the rest of the segment (resync stays linear).
//!
//! Version 1 frames carry no tag, so a frame found inside a body cannot be
//! told from a real one: reading a version 1 segment stops at its first bad
//! frame (see `recover.rs` and docs/decisions.md).

use std::hash::Hasher;

/// Size of a (version 2) segment header: where a new segment's first frame
/// goes.
pub(crate) const SEGMENT_HEADER: usize = 48;
/// Size of a version 1 segment header.
pub(crate) const SEGMENT_HEADER_V1: usize = 32;
/// Size of a (version 2) frame header (magic, length, CRC, tag, type).
pub(crate) const FRAME_HEADER: usize = 21;
const FRAME_HEADER_V1: usize = 13;
/// Largest payload a frame may carry. Anything claiming more is damage.
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

const SEGMENT_MAGIC: &[u8; 8] = b"SLUICEJ\x01";
const SEGMENT_VERSION: u32 = 2;
pub(crate) const FRAME_MAGIC: [u8; 4] = [0xD3, 0x4A, 0x72, 0x9E];

/// A segment's secret key.
pub(crate) type Key = [u8; 16];

/// What a frame is checked against: the segment it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seg {
    /// The segment number.
    pub seq: u64,
    /// Its key; `None` for a version 1 segment (no tags).
    pub key: Option<Key>,
}

impl Seg {
    /// Where the first frame starts.
    pub fn header_len(&self) -> usize {
        match self.format() {
            Format::V2 => SEGMENT_HEADER,
            Format::V1 => SEGMENT_HEADER_V1,
        }
    }

    /// The segment's format version.
    pub fn format(&self) -> Format {
        if self.key.is_some() {
            Format::V2
        } else {
            Format::V1
        }
    }
}

/// A segment's format version: what its frames and records look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Written before frames were tagged: read only, never resynchronised.
    V1,
    /// Tagged frames; message records carry their recipient count.
    V2,
}

/// A fresh random key for a new segment.
pub(crate) fn new_key() -> Key {
    rand::random()
}

/// The header of segment number `seq` with `key`.
pub(crate) fn segment_header(seq: u64, key: &Key) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..40].copy_from_slice(key);
    let crc = crc32c::crc32c(&h[..40]);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadHeader {
    /// Not a segment header (or damaged).
    Invalid,
    /// A version this build cannot read.
    Version(u32),
}

/// Checks a segment header; returns the segment it describes.
pub(crate) fn parse_segment_header(data: &[u8]) -> Result<Seg, BadHeader> {
    let h = data.get(..SEGMENT_HEADER_V1).ok_or(BadHeader::Invalid)?;
    if h.get(..8) != Some(&SEGMENT_MAGIC[..]) {
        return Err(BadHeader::Invalid);
    }
    let version = u32_at(h, 8).ok_or(BadHeader::Invalid)?;
    let (len, crc_at) = match version {
        1 => (SEGMENT_HEADER_V1, 24),
        _ => (SEGMENT_HEADER, 40),
    };
    let h = data.get(..len).ok_or(BadHeader::Invalid)?;
    let covered = h.get(..crc_at).ok_or(BadHeader::Invalid)?;
    if Some(crc32c::crc32c(covered)) != u32_at(h, crc_at) {
        return Err(BadHeader::Invalid);
    }
    // Later versions keep this much of the layout (a checked 48-byte
    // header): a damaged version field is damage, a newer one is refused.
    if version > SEGMENT_VERSION {
        return Err(BadHeader::Version(version));
    }
    if version == 0 {
        return Err(BadHeader::Invalid);
    }
    let seq = u64_at(h, 16).ok_or(BadHeader::Invalid)?;
    let key = match version {
        1 => None,
        _ => Some(
            h.get(24..40)
                .and_then(|k| k.try_into().ok())
                .ok_or(BadHeader::Invalid)?,
        ),
    };
    Ok(Seg { seq, key })
}

/// How to read segment `seq` (the number in its file name), whose bytes
/// are `data`, when its header does not check out, and where its first
/// readable frame is; `None` if nothing in it can be trusted.
///
/// One bad sector in a header must not cost a whole segment of
/// acknowledged mail. The header's key is taken from its place and the
/// number from the file name, and the first frame whose tag checks out
/// under them is looked for: a valid tag proves both were intact (a damaged
/// key, or a file renamed from another number, makes every tag fail, and a
/// planted frame cannot carry a valid tag). A version 1 header (magic and
/// version intact) has no key to prove anything with; its frames are read
/// only if one starts exactly where its header ends, as they always were.
pub(crate) fn salvage(data: &[u8], seq: u64) -> Option<(Seg, usize)> {
    let key = data.get(24..40).and_then(|k| Key::try_from(k).ok());
    if let Some(key) = key {
        let s = Seg {
            seq,
            key: Some(key),
        };
        // `resync` starts one past `from`: the first candidate is the
        // first byte after a version 2 header.
        if let Some(first) = resync(data, SEGMENT_HEADER - 1, &s) {
            return Some((s, first));
        }
    }
    let v1 = Seg { seq, key: None };
    let looks_v1 = data.get(..8) == Some(&SEGMENT_MAGIC[..]) && u32_at(data, 8) == Some(1);
    (looks_v1 && parse_at(data, SEGMENT_HEADER_V1, &v1).is_ok()).then_some((v1, SEGMENT_HEADER_V1))
}

/// How to read segment `seq` whose bytes are `data`: its header if it
/// checks out and names `seq`, else what [`salvage`] finds.
pub(crate) fn segment_of(data: &[u8], seq: u64) -> Option<Seg> {
    match parse_segment_header(data) {
        Ok(s) => (s.seq == seq).then_some(s),
        Err(_) => salvage(data, seq).map(|(s, _)| s),
    }
}

/// Whether the bytes from `pos` (where a frame is bad) are what an
/// interrupted append leaves: a prefix of a frame, then possibly zeros
/// (blocks the file system allocated but the crash never wrote), and
/// nothing else. The writer only ever appends whole batches at the end, so
/// a kill -9 or power loss cuts the last one short; complete-looking bytes
/// that fail their CRC are damage. Decided without scanning for later
/// frames (one pass, at most one CRC): a version 1 segment cannot tell a
/// real frame from a planted one anyway, and a body full of planted magics
/// must not make recovery quadratic.
pub(crate) fn looks_torn(data: &[u8], pos: usize, seg: &Seg) -> bool {
    let rest = data.get(pos..).unwrap_or_default();
    let Some(last) = rest.iter().rposition(|&b| b != 0) else {
        return true;
    };
    let end = pos.saturating_add(last).saturating_add(1);
    data.get(..end)
        .is_some_and(|d| parse_at(d, pos, seg).err() == Some(Bad::Short))
}

/// Appends one frame to `buf`, with the payload written by `payload` and
/// its tag left blank: the tag depends on where the frame lands, which is
/// decided when its batch is written ([`seal`]). Returns the frame's
/// length, or the payload length if it is too large (in which case `buf`
/// is left as it was).
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    ty: u8,
    payload: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, usize> {
    let start = buf.len();
    buf.extend_from_slice(&FRAME_MAGIC);
    buf.extend_from_slice(&[0; 16]);
    buf.push(ty);
    payload(buf);
    let len = buf.len() - start - FRAME_HEADER;
    if len > MAX_PAYLOAD {
        buf.truncate(start);
        return Err(len);
    }
    // `len` fits in u32: MAX_PAYLOAD < 2^32.
    let len_bytes = (len as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &buf[start + 20..]);
    buf[start + 4..start + 8].copy_from_slice(&len_bytes);
    buf[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(buf.len() - start)
}

/// Fills in the tag of the frame at the start of `frame` for offset `off`
/// of segment `seq` with `key`.
pub(crate) fn seal(frame: &mut [u8], seq: u64, off: u64, key: &Key) {
    let (Some(len), Some(crc)) = (u32_at(frame, 4), u32_at(frame, 8)) else {
        return;
    };
    if let Some(t) = frame.get_mut(12..20) {
        t.copy_from_slice(&tag(key, seq, off, len, crc).to_le_bytes());
    }
}

fn tag(key: &Key, seq: u64, off: u64, len: u32, crc: u32) -> u64 {
    let k0 = u64::from_le_bytes([
        key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
    ]);
    let k1 = u64::from_le_bytes([
        key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15],
    ]);
    let mut m = [0u8; 24];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..16].copy_from_slice(&off.to_le_bytes());
    m[16..20].copy_from_slice(&len.to_le_bytes());
    m[20..24].copy_from_slice(&crc.to_le_bytes());
    // SipHash-2-4 (the standard algorithm; `tests` pins it to the reference
    // vector, so the on-disk tags cannot change under us). Deprecated in
    // std only because HashMap moved on, not because it is unsound.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
    h.write(&m);
    h.finish()
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

/// The frame starting exactly at `pos` of segment `seg`, if it is intact
/// (and, in a version 2 segment, was written at `pos` of this segment).
pub(crate) fn parse_at<'a>(data: &'a [u8], pos: usize, seg: &Seg) -> Result<Frame<'a>, Bad> {
    let Some(key) = &seg.key else {
        return parse_v1(data, pos);
    };
    let rest = data.get(pos..).ok_or(Bad::Short)?;
    let Some(head) = rest.get(..FRAME_HEADER) else {
        return torn_or_junk(rest);
    };
    if head.get(..4) != Some(&FRAME_MAGIC[..]) {
        return Err(Bad::Invalid);
    }
    let len = u32_at(head, 4).ok_or(Bad::Invalid)?;
    let crc = u32_at(head, 8).ok_or(Bad::Invalid)?;
    if len as usize > MAX_PAYLOAD {
        return Err(Bad::Invalid);
    }
    // The header alone says whether this frame was written here: checked
    // before the payload is looked at (see the module doc).
    if u64_at(head, 12) != Some(tag(key, seg.seq, pos as u64, len, crc)) {
        return Err(Bad::Invalid);
    }
    let total = FRAME_HEADER + len as usize;
    let body = rest.get(20..total).ok_or(Bad::Short)?;
    if crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), body) != crc {
        return Err(Bad::Invalid);
    }
    let (&ty, payload) = body.split_first().ok_or(Bad::Invalid)?;
    Ok(Frame {
        ty,
        payload,
        len: total,
    })
}

/// A prefix of the magic is a torn header; anything else is junk.
fn torn_or_junk(rest: &[u8]) -> Result<Frame<'_>, Bad> {
    let n = rest.len().min(4);
    if rest.get(..n) == FRAME_MAGIC.get(..n) {
        Err(Bad::Short)
    } else {
        Err(Bad::Invalid)
    }
}

fn parse_v1(data: &[u8], pos: usize) -> Result<Frame<'_>, Bad> {
    let rest = data.get(pos..).ok_or(Bad::Short)?;
    let Some(head) = rest.get(..FRAME_HEADER_V1) else {
        return torn_or_junk(rest);
    };
    if head.get(..4) != Some(&FRAME_MAGIC[..]) {
        return Err(Bad::Invalid);
    }
    let len = u32_at(head, 4).ok_or(Bad::Invalid)? as usize;
    if len > MAX_PAYLOAD {
        return Err(Bad::Invalid);
    }
    let total = FRAME_HEADER_V1 + len;
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
pub(crate) fn resync(data: &[u8], from: usize, seg: &Seg) -> Option<usize> {
    let mut at = from.checked_add(1)?;
    let finder = memchr::memmem::Finder::new(&FRAME_MAGIC);
    while let Some(i) = data.get(at..).and_then(|d| finder.find(d)) {
        let p = at + i;
        if parse_at(data, p, seg).is_ok() {
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

    const SEG: Seg = Seg {
        seq: 5,
        key: Some([7; 16]),
    };

    fn sealed(ty: u8, payload: &[u8], at: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, ty, |b| b.extend_from_slice(payload)).unwrap();
        seal(&mut buf, SEG.seq, at, SEG.key.as_ref().unwrap());
        buf
    }

    #[test]
    fn the_tag_is_standard_siphash_2_4() {
        // The reference vector of the SipHash paper: key 00..0f, message
        // 00..0e.
        let key: Vec<u8> = (0u8..16).collect();
        let k0 = u64::from_le_bytes(key[..8].try_into().unwrap());
        let k1 = u64::from_le_bytes(key[8..].try_into().unwrap());
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
        h.write(&(0u8..15).collect::<Vec<_>>());
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let buf = sealed(7, b"hello", 0);
        let n = buf.len();
        assert_eq!(n, FRAME_HEADER + 5);
        let f = parse_at(&buf, 0, &SEG).unwrap();
        assert_eq!((f.ty, f.payload, f.len), (7, &b"hello"[..], n));
        for cut in 0..n {
            assert!(parse_at(&buf[..cut], 0, &SEG).is_err(), "cut at {cut}");
        }
        assert_eq!(
            parse_at(&buf[..FRAME_HEADER + 2], 0, &SEG).unwrap_err(),
            Bad::Short
        );
        for i in 0..n {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(parse_at(&b, 0, &SEG).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn a_frame_is_valid_only_where_it_was_written() {
        // Sealed for offset 100, found at offset 0 (or in another segment,
        // or under another key): refused.
        let buf = sealed(2, b"forged", 100);
        assert_eq!(parse_at(&buf, 0, &SEG).unwrap_err(), Bad::Invalid);
        let mut at100 = vec![0u8; 100];
        at100.extend_from_slice(&buf);
        assert!(parse_at(&at100, 100, &SEG).is_ok());
        let other_seq = Seg { seq: 6, ..SEG };
        assert!(parse_at(&at100, 100, &other_seq).is_err());
        let other_key = Seg {
            key: Some([8; 16]),
            ..SEG
        };
        assert!(parse_at(&at100, 100, &other_key).is_err());
        // Nor is a version 1 frame (what today's bodies may carry).
        let mut v1 = vec![0u8; 100];
        v1.extend_from_slice(&FRAME_MAGIC);
        let len = 0u32.to_le_bytes();
        v1.extend_from_slice(&len);
        v1.extend_from_slice(&crc32c::crc32c_append(crc32c::crc32c(&len), &[2]).to_le_bytes());
        v1.push(2);
        assert!(parse_at(&v1, 100, &Seg { seq: 5, key: None }).is_ok());
        assert!(parse_at(&v1, 100, &SEG).is_err());
    }

    #[test]
    fn resync_finds_the_next_intact_frame() {
        let mut buf = sealed(1, &FRAME_MAGIC, 0);
        let second = buf.len();
        buf.extend_from_slice(&sealed(2, b"x", second as u64));
        buf[5] ^= 1;
        // The magic inside the first payload is not an intact frame.
        assert_eq!(resync(&buf, 0, &SEG), Some(second));
        assert_eq!(resync(&buf, second, &SEG), None);
    }

    #[test]
    fn segment_header_checks() {
        let h = segment_header(42, &[9; 16]);
        assert_eq!(
            parse_segment_header(&h),
            Ok(Seg {
                seq: 42,
                key: Some([9; 16])
            })
        );
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(parse_segment_header(&bad), Err(BadHeader::Invalid));
        assert_eq!(parse_segment_header(&h[..10]), Err(BadHeader::Invalid));
        let mut future = h;
        future[8] = 3;
        assert_eq!(parse_segment_header(&future), Err(BadHeader::Invalid));
        let crc = crc32c::crc32c(&future[..40]);
        future[40..44].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(parse_segment_header(&future), Err(BadHeader::Version(3)));
    }
}
