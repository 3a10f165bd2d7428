//! Just enough header parsing to find the Message-ID for duplicate
//! detection. Only the header section is kept (bounded), in a buffer the
//! session reuses, so bodies are never stored.

use memchr::memmem;

/// Header bytes kept per message; Message-ID lives near the top.
const CAPTURE_LIMIT: usize = 16 * 1024;

/// Collects the header section of the message being received.
#[derive(Debug, Default)]
pub(crate) struct HeaderCapture {
    buf: Vec<u8>,
    done: bool,
}

impl HeaderCapture {
    /// Forgets the previous message, keeping the allocation.
    pub(crate) fn reset(&mut self) {
        self.buf.clear();
        self.done = false;
    }

    /// Feeds the next piece of message content.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.done || bytes.is_empty() {
            return;
        }
        let before = self.buf.len();
        let take = bytes.len().min(CAPTURE_LIMIT - before);
        self.buf
            .extend_from_slice(bytes.get(..take).unwrap_or_default());
        let from = before.saturating_sub(3);
        let tail = self.buf.get(from..).unwrap_or_default();
        if self.buf.starts_with(b"\r\n")
            || memmem::find(tail, b"\r\n\r\n").is_some()
            || self.buf.len() >= CAPTURE_LIMIT
        {
            self.done = true;
        }
    }

    /// The Message-ID header value, trimmed, if present in the header section.
    pub(crate) fn message_id(&self) -> Option<&[u8]> {
        for line in self.buf.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let Some(name) = line.get(..11) else { continue };
            if name.eq_ignore_ascii_case(b"message-id:") {
                let value = line.get(11..).unwrap_or_default().trim_ascii();
                return (!value.is_empty()).then_some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_message_id_across_pieces() {
        let mut h = HeaderCapture::default();
        h.feed(b"From: a@b\r\nMessage-");
        h.feed(b"ID:  <x@y> \r\nSubject: s\r\n\r\nMessage-ID: <not@header>\r\n");
        assert_eq!(h.message_id(), Some(&b"<x@y>"[..]));
        h.reset();
        h.feed(b"Subject: s\r\n\r\nMessage-ID: <body@only>\r\n");
        assert_eq!(h.message_id(), None);
    }
}
