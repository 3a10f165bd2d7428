//! Record payloads: what each frame type carries, in LEB128 varints so a
//! recipient outcome costs a handful of bytes.
//!
//! ```text
//! 1 message    id | accepted_unix | flags u8 | rp_len | rp | total
//!              | n | n × (index | addr_len | addr | attempts | next_attempt) | body (rest)
//!              (`total`, the message's recipient count, only in version 2
//!              segments; version 1 records lack it)
//! 2 delivered  id | index          3 bounced   id | index
//! 4 expired    id | index          7 moved     id | index
//! 5 deferred   id | index | attempts | next_attempt_unix
//! 6 checkpoint opaque bytes  8 deleted   id | index
//! ```
//!
//! A message record is written when a message is accepted (every recipient
//! pending, attempts 0) and again when compaction copies a message forward
//! (flag `COPY`, only the still-pending recipients, with their state). Both
//! replace whatever was known about the message, so replay is the same
//! operation for both.
//!
//! Every decoded value is checked against bounds before anything is sized
//! or computed from it: a record is damage unless its recipient indexes are
//! strictly increasing and below the message's recipient count, the count
//! is at most [`MAX_RCPTS`] and times are before [`MAX_UNIX`]. A record
//! can only pass its tag if we wrote it, but a bug, a disk that returns
//! another block's bytes, or a version 1 segment must not be able to make
//! recovery allocate billions of slots or overflow a clock.

use super::frame::Format;
use super::{JournalError, Outcome};

pub(crate) const T_MESSAGE: u8 = 1;
pub(crate) const T_DELIVERED: u8 = 2;
pub(crate) const T_BOUNCED: u8 = 3;
pub(crate) const T_EXPIRED: u8 = 4;
pub(crate) const T_DEFERRED: u8 = 5;
pub(crate) const T_CHECKPOINT: u8 = 6;
pub(crate) const T_MOVED: u8 = 7;
/// An operator's delete. A version that does not know it skips it as an
/// unknown record (and delivers the recipient): never a loss.
pub(crate) const T_DELETED: u8 = 8;

/// Most recipients one message record may have (the SMTP side allows far
/// fewer; `append_message` refuses more).
pub(crate) const MAX_RCPTS: u32 = 1 << 20;
/// Latest Unix time a record may carry (9999-12-31): anything later is
/// damage, not a date.
pub(crate) const MAX_UNIX: u64 = 253_402_300_799;

/// Highest recipient index (exclusive) a version 1 compaction copy may
/// name.
const V1_MAX_COPY_INDEX: u32 = 1 << 16;

pub(crate) const F_EIGHT_BIT: u8 = 1;
pub(crate) const F_SMTPUTF8: u8 = 2;
pub(crate) const F_COPY: u8 = 4;

/// One recipient inside a message record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RcptView<'a> {
    pub index: u32,
    pub addr: &'a str,
    pub attempts: u32,
    pub next_attempt_unix: u64,
}

/// A decoded message record, borrowing from the frame.
#[derive(Debug, Clone)]
pub(crate) struct MsgView<'a> {
    pub id: u64,
    /// The message's recipient count (every index is below it).
    pub total: u32,
    pub accepted_unix: u64,
    pub flags: u8,
    pub reverse_path: &'a str,
    pub rcpts: Vec<RcptView<'a>>,
    pub body: &'a [u8],
}

/// A decoded record.
#[derive(Debug, Clone)]
pub(crate) enum Record<'a> {
    Message(MsgView<'a>),
    Outcome {
        id: u64,
        index: u32,
        outcome: Outcome,
    },
    Checkpoint(&'a [u8]),
}

/// The frame type of an outcome.
pub(crate) fn outcome_type(o: &Outcome) -> u8 {
    match o {
        Outcome::Delivered => T_DELIVERED,
        Outcome::Bounced => T_BOUNCED,
        Outcome::Expired => T_EXPIRED,
        Outcome::Moved => T_MOVED,
        Outcome::Deleted => T_DELETED,
        Outcome::Deferred { .. } => T_DEFERRED,
    }
}

/// Writes an outcome payload.
pub(crate) fn put_outcome(b: &mut Vec<u8>, id: u64, index: u32, o: &Outcome) {
    put_varint(b, id);
    put_varint(b, u64::from(index));
    if let Outcome::Deferred {
        attempts,
        next_attempt_unix,
    } = *o
    {
        put_varint(b, u64::from(attempts));
        put_varint(b, next_attempt_unix);
    }
}

/// Writes a message payload. `rcpts` yields (index, address, attempts,
/// next) in increasing index order, every index below `total`.
pub(crate) fn put_message<'a>(
    b: &mut Vec<u8>,
    head: (u64, u64, u8, &str),
    total: u32,
    n: usize,
    rcpts: impl Iterator<Item = (u32, &'a str, u32, u64)>,
    body: &[u8],
) {
    let (id, accepted_unix, flags, rp) = head;
    put_varint(b, id);
    put_varint(b, accepted_unix);
    b.push(flags);
    put_bytes(b, rp.as_bytes());
    put_varint(b, u64::from(total));
    put_varint(b, n as u64);
    for (index, addr, attempts, next) in rcpts {
        put_varint(b, u64::from(index));
        put_bytes(b, addr.as_bytes());
        put_varint(b, u64::from(attempts));
        put_varint(b, next);
    }
    b.extend_from_slice(body);
}

/// Decodes a payload of type `ty`. `None` for an unknown type; `Err` with
/// a reason when the payload does not parse (a CRC-clean frame that does
/// not decode is a bug or a forged frame, and is reported like damage).
/// `format`: that of the segment the record is in (a version 1 message
/// record has no `total`).
pub(crate) fn decode(ty: u8, p: &[u8], format: Format) -> Option<Result<Record<'_>, &'static str>> {
    let mut r = Reader { d: p, at: 0 };
    let rec = match ty {
        T_MESSAGE => decode_message(&mut r, format).map(Record::Message),
        T_DELIVERED | T_BOUNCED | T_EXPIRED | T_MOVED | T_DELETED | T_DEFERRED => {
            decode_outcome(ty, &mut r)
        }
        T_CHECKPOINT => Ok(Record::Checkpoint(p)),
        _ => return None,
    };
    Some(rec)
}

fn decode_outcome<'a>(ty: u8, r: &mut Reader<'a>) -> Result<Record<'a>, &'static str> {
    let id = r.varint()?;
    let index = r.u32()?;
    let outcome = match ty {
        T_DELIVERED => Outcome::Delivered,
        T_BOUNCED => Outcome::Bounced,
        T_EXPIRED => Outcome::Expired,
        T_MOVED => Outcome::Moved,
        T_DELETED => Outcome::Deleted,
        _ => Outcome::Deferred {
            attempts: r.u32()?,
            next_attempt_unix: r.time()?,
        },
    };
    if index >= MAX_RCPTS {
        return Err("recipient index out of range");
    }
    if r.at != r.d.len() {
        return Err("trailing bytes after an outcome");
    }
    Ok(Record::Outcome { id, index, outcome })
}

fn decode_message<'a>(r: &mut Reader<'a>, format: Format) -> Result<MsgView<'a>, &'static str> {
    let id = r.varint()?;
    let accepted_unix = r.time()?;
    let flags = r.byte()?;
    let reverse_path = r.str()?;
    // A version 1 record does not carry its count: an original lists every
    // recipient (indexes 0..n), a copy is held to a bound that keeps what
    // one record can make recovery allocate small (no version 1 journal
    // had messages anywhere near it).
    let total = match (format, flags & F_COPY != 0) {
        (Format::V2, _) => r.u32()?,
        (Format::V1, true) => V1_MAX_COPY_INDEX,
        (Format::V1, false) => {
            u32::try_from(r.peek_varint()?).map_err(|_| "recipient count overflows")?
        }
    };
    if total > MAX_RCPTS {
        return Err("recipient count out of range");
    }
    let n = r.varint()?;
    if n > u64::from(total) {
        return Err("more recipients listed than the message has");
    }
    // Each recipient takes at least four bytes: a bound that keeps a forged
    // count from reserving memory.
    let cap = usize::try_from(n).map_err(|_| "recipient count overflows")?;
    if cap > r.d.len().saturating_sub(r.at) / 4 {
        return Err("recipient count exceeds the record");
    }
    let mut rcpts: Vec<RcptView<'a>> = Vec::with_capacity(cap);
    for _ in 0..cap {
        let v = RcptView {
            index: r.u32()?,
            addr: r.str()?,
            attempts: r.u32()?,
            next_attempt_unix: r.time()?,
        };
        if v.index >= total || rcpts.last().is_some_and(|p| p.index >= v.index) {
            return Err("recipient index out of order or range");
        }
        rcpts.push(v);
    }
    let body = r.d.get(r.at..).ok_or("truncated")?;
    // A version 1 record does not say; its highest index is the best guess.
    let total = match format {
        Format::V1 => rcpts.last().map_or(0, |p| p.index.saturating_add(1)),
        Format::V2 => total,
    };
    Ok(MsgView {
        id,
        total,
        accepted_unix,
        flags,
        reverse_path,
        rcpts,
        body,
    })
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

pub(crate) fn put_bytes(b: &mut Vec<u8>, s: &[u8]) {
    put_varint(b, s.len() as u64);
    b.extend_from_slice(s);
}

/// Encoded size of a journal error for a too-large payload.
pub(crate) fn too_large(len: usize) -> JournalError {
    JournalError::TooLarge {
        len,
        max: super::frame::MAX_PAYLOAD,
    }
}

struct Reader<'a> {
    d: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let b = *self.d.get(self.at).ok_or("truncated")?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or("varint overflows")?;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }

    fn peek_varint(&mut self) -> Result<u64, &'static str> {
        let at = self.at;
        let v = self.varint();
        self.at = at;
        v
    }

    fn time(&mut self) -> Result<u64, &'static str> {
        Some(self.varint()?)
            .filter(|&t| t <= MAX_UNIX)
            .ok_or("time out of range")
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        u32::try_from(self.varint()?).map_err(|_| "value exceeds 32 bits")
    }

    fn str(&mut self) -> Result<&'a str, &'static str> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
        let end = self.at.checked_add(n).ok_or("length overflows")?;
        let s = self.d.get(self.at..end).ok_or("truncated string")?;
        self.at = end;
        std::str::from_utf8(s).map_err(|_| "address is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_and_outcomes_round_trip() {
        let mut b = Vec::new();
        let rcpts = [
            (0u32, "a@x.test", 0u32, 0u64),
            (300, "b@y.test", 3, 1_700_000_000),
        ];
        put_message(
            &mut b,
            (u64::MAX, 5, F_SMTPUTF8, "s@z.test"),
            301,
            2,
            rcpts.iter().copied(),
            b"body",
        );
        let Some(Ok(Record::Message(m))) = decode(T_MESSAGE, &b, Format::V2) else {
            panic!("decode")
        };
        assert_eq!(
            (m.id, m.accepted_unix, m.flags, m.reverse_path, m.body),
            (u64::MAX, 5, F_SMTPUTF8, "s@z.test", &b"body"[..])
        );
        assert_eq!(m.rcpts.len(), 2);
        assert_eq!(
            (
                m.rcpts[1].index,
                m.rcpts[1].addr,
                m.rcpts[1].attempts,
                m.rcpts[1].next_attempt_unix
            ),
            (300, "b@y.test", 3, 1_700_000_000)
        );
        for cut in 0..b.len() - 4 {
            // Cutting into the header or recipients never panics; it is
            // either an error or (in the body) a shorter body.
            let _ = decode(T_MESSAGE, &b[..cut], Format::V2);
        }

        let o = Outcome::Deferred {
            attempts: 2,
            next_attempt_unix: 99,
        };
        let mut b = Vec::new();
        put_outcome(&mut b, 7, 1, &o);
        let Some(Ok(Record::Outcome { id, index, outcome })) =
            decode(outcome_type(&o), &b, Format::V2)
        else {
            panic!("decode")
        };
        assert_eq!((id, index, outcome), (7, 1, o));
        assert!(decode(99, &b, Format::V2).is_none());
        assert!(matches!(decode(T_DELIVERED, &b, Format::V2), Some(Err(_))));
    }

    #[test]
    fn absurd_values_are_damage_not_allocations_or_overflows() {
        let msg = |total: u32, rcpts: &[(u32, u64)]| {
            let mut b = Vec::new();
            put_message(
                &mut b,
                (1, 5, 0, "s@z.test"),
                total,
                rcpts.len(),
                rcpts.iter().map(|&(i, t)| (i, "a@b.test", 0, t)),
                b"",
            );
            decode(T_MESSAGE, &b, Format::V2).unwrap().is_ok()
        };
        assert!(msg(2, &[(0, 0), (1, 0)]));
        // Index at or past the count, repeated, out of order; a count past
        // the bound; a time past year 9999.
        assert!(!msg(2, &[(0, 0), (2, 0)]));
        assert!(!msg(2, &[(1, 0), (1, 0)]));
        assert!(!msg(2, &[(1, 0), (0, 0)]));
        assert!(!msg(u32::MAX, &[(u32::MAX - 1, 0)]));
        assert!(!msg(1, &[(0, u64::MAX)]));
        let mut b = Vec::new();
        put_outcome(
            &mut b,
            1,
            0,
            &Outcome::Deferred {
                attempts: 1,
                next_attempt_unix: u64::MAX,
            },
        );
        assert!(matches!(decode(T_DEFERRED, &b, Format::V2), Some(Err(_))));
        let mut b = Vec::new();
        put_outcome(&mut b, 1, u32::MAX, &Outcome::Delivered);
        assert!(matches!(decode(T_DELIVERED, &b, Format::V2), Some(Err(_))));
    }
}
