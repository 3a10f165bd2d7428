//! A connection's read buffer: one allocation per connection, grown only
//! when a read fills it, so idle connections stay small and busy ones get
//! large reads (fewer syscalls per message).

/// Bytes read from the peer and not yet consumed by the protocol machine.
pub struct InputBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl InputBuffer {
    /// A buffer starting at `initial` bytes that may grow to `max`.
    pub fn new(initial: usize, max: usize) -> Self {
        InputBuffer {
            buf: vec![0; initial.max(64)],
            start: 0,
            end: 0,
            max: max.max(initial),
        }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Drops everything buffered (e.g. plaintext pipelined after STARTTLS).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Free space to read into, making room first by compacting or growing.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < self.max {
                let n = (self.buf.len() * 2).min(self.max);
                self.buf.resize(n, 0);
            }
        }
        self.buf.get_mut(self.end..).unwrap_or(&mut [])
    }

    /// Records that `n` bytes were read into [`spare`](Self::spare).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_compacts_and_consumes() {
        let mut b = InputBuffer::new(64, 256);
        let s = b.spare();
        assert_eq!(s.len(), 64);
        s.fill(b'a');
        b.filled(64);
        assert_eq!(b.spare().len(), 64); // grew to 128
        b.consume(60);
        assert_eq!(b.data().len(), 4);
        b.filled(64);
        assert_eq!(b.data().len(), 68);
        b.consume(68);
        assert!(b.is_empty());
        assert_eq!(b.spare().len(), 128);
    }
}
