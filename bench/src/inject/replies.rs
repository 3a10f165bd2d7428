//! Buffered reply reading for a client connection. Pipelined replies
//! usually arrive together, so after one awaited read the rest are taken
//! from the buffer without touching the socket.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use crate::smtp::reply::{parse_reply, ReplyCode, ReplyError};
use crate::stream::Stream;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// TCP connect failed or timed out.
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// Socket error after connecting.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// No reply within the timeout.
    #[error("timed out waiting for a reply")]
    Timeout,
    /// The server closed the connection while replies were outstanding.
    #[error("connection closed by server")]
    Closed,
    /// The server sent something that is not an SMTP reply.
    #[error("bad reply: {0}")]
    Protocol(#[from] ReplyError),
    /// The server refused the session (greeting, EHLO, STARTTLS or AUTH).
    #[error("session refused: {0}")]
    Refused(String),
}

impl SessionError {
    /// Stable short label for grouping in reports.
    pub(crate) fn label(&self) -> String {
        match self {
            SessionError::Connect(e) => format!("connect: {}", e.kind()),
            SessionError::Io(e) => format!("i/o: {}", e.kind()),
            SessionError::Timeout => "timeout".to_string(),
            SessionError::Closed => "closed by server".to_string(),
            SessionError::Protocol(e) => format!("protocol: {e}"),
            SessionError::Refused(what) => format!("refused: {what}"),
        }
    }
}

/// Reads replies from one connection.
#[derive(Debug)]
pub(crate) struct ReplyReader {
    buf: BytesMut,
    timeout: Duration,
}

impl ReplyReader {
    pub(crate) fn new(timeout: Duration) -> Self {
        ReplyReader {
            buf: BytesMut::with_capacity(16 * 1024),
            timeout,
        }
    }

    /// A reply already in the buffer, if complete.
    pub(crate) fn try_next(
        &mut self,
        on_line: impl FnMut(&[u8]),
    ) -> Result<Option<ReplyCode>, SessionError> {
        match parse_reply(&self.buf, on_line)? {
            Some((code, used)) => {
                self.buf.advance(used);
                Ok(Some(code))
            }
            None => Ok(None),
        }
    }

    /// The next reply, reading from the stream as needed.
    pub(crate) async fn next(
        &mut self,
        stream: &mut Stream,
        mut on_line: impl FnMut(&[u8]),
    ) -> Result<ReplyCode, SessionError> {
        loop {
            if let Some(code) = self.try_next(&mut on_line)? {
                return Ok(code);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            match tokio::time::timeout(self.timeout, stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(SessionError::Timeout),
                Ok(Err(e)) => return Err(SessionError::Io(e)),
                Ok(Ok(0)) => return Err(SessionError::Closed),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Drops buffered input (after STARTTLS nothing from before may be used).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }
}
