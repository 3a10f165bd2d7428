//! The inbound byte stream: plain TCP, or TLS after STARTTLS.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;
use std::io;

/// A client connection before or after STARTTLS.
pub enum Conn {
    /// Plaintext.
    Plain(TcpStream),
    /// After a successful STARTTLS handshake.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Reads some bytes; 0 means the peer closed its side.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
        }
    }

    /// Writes all of `buf` (one syscall for plaintext in the common case).
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(buf).await,
            Conn::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    /// The underlying TCP stream, for timeouts.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(s) => Some(s.get_ref().0),
        }
    }

    /// Closes the write side so the client sees our last reply, then EOF.
    pub async fn close(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.close().await,
            Conn::Tls(s) => s.close().await,
        };
    }
}
