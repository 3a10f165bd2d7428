//! DATA transparency (RFC 5321 §4.5.2): the injector stuffs its templates
//! once up front and the sink finds the terminator without copying the body.

use memchr::memmem;

/// Appends `src` to `dst` with every line starting with `.` given an extra dot.
pub fn dot_stuff(src: &[u8], dst: &mut Vec<u8>) {
    let mut at_line_start = true;
    for &b in src {
        if at_line_start && b == b'.' {
            dst.push(b'.');
        }
        dst.push(b);
        at_line_start = b == b'\n';
    }
}

/// What [`scan_data`] found in the buffered DATA input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataScan {
    /// The terminator was found: `body_len` bytes of (stuffed) body precede
    /// it and `consumed` bytes including the terminator can be dropped.
    End {
        /// Length of the message content, including its final CRLF.
        body_len: usize,
        /// Bytes to consume, terminator included.
        consumed: usize,
    },
    /// No terminator yet: the first `consumable` bytes are body and can be
    /// dropped; the rest may be the start of a split terminator.
    More {
        /// Bytes that are certainly body.
        consumable: usize,
    },
}

const TERMINATOR: &[u8] = b"\r\n.\r\n";

/// Scans buffered DATA input for the end-of-data marker.
///
/// `at_start` is true until any body byte was consumed, because the CRLF
/// that precedes a terminator on an empty body belongs to the DATA command.
pub fn scan_data(buf: &[u8], at_start: bool) -> DataScan {
    if at_start {
        if buf.starts_with(b".\r\n") {
            return DataScan::End {
                body_len: 0,
                consumed: 3,
            };
        }
        if buf.len() < 3 && b".\r\n".starts_with(buf) {
            return DataScan::More { consumable: 0 };
        }
    }
    match memmem::find(buf, TERMINATOR) {
        Some(i) => DataScan::End {
            body_len: i + 2,
            consumed: i + TERMINATOR.len(),
        },
        None => DataScan::More {
            consumable: buf.len().saturating_sub(TERMINATOR.len() - 1),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing() {
        let mut out = Vec::new();
        dot_stuff(b".a\r\nb.\r\n..c\r\n", &mut out);
        assert_eq!(out, b"..a\r\nb.\r\n...c\r\n");
    }

    #[test]
    fn finds_terminator_and_empty_body() {
        assert_eq!(
            scan_data(b"hi\r\n.\r\nQUIT", true),
            DataScan::End {
                body_len: 4,
                consumed: 7
            }
        );
        assert_eq!(
            scan_data(b".\r\n", true),
            DataScan::End {
                body_len: 0,
                consumed: 3
            }
        );
        assert_eq!(scan_data(b".\r", true), DataScan::More { consumable: 0 });
        assert_eq!(scan_data(b".\r\n", false), DataScan::More { consumable: 0 });
    }

    #[test]
    fn split_terminator_is_kept_for_the_next_scan() {
        // Feed a message in every possible two-piece split.
        let msg = b"Subject: x\r\n\r\nbody\r\n..stuffed\r\n.\r\n";
        for split in 0..msg.len() {
            let mut buf = msg[..split].to_vec();
            let mut at_start = true;
            let mut total = 0;
            let mut fed = split;
            loop {
                match scan_data(&buf, at_start) {
                    DataScan::End { consumed, .. } => {
                        total += consumed;
                        break;
                    }
                    DataScan::More { consumable } => {
                        total += consumable;
                        if consumable > 0 {
                            at_start = false;
                        }
                        buf.drain(..consumable);
                        assert!(fed < msg.len(), "terminator not found for split {split}");
                        buf.extend_from_slice(&msg[fed..]);
                        fed = msg.len();
                    }
                }
            }
            assert_eq!(total, msg.len(), "split {split}");
        }
    }
}
