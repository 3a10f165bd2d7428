//! One stream type for plain TCP and both TLS directions, so the SMTP state
//! machines on either side can upgrade in place on STARTTLS without being
//! generic over (or boxing) the transport.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection that may have been upgraded to TLS.
#[derive(Debug, Default)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS as a client (injector after STARTTLS).
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS as a server (sink after STARTTLS).
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Placeholder while the TCP stream is moved into a TLS handshake;
    /// every operation on it fails.
    #[default]
    Detached,
}

impl Stream {
    /// Takes the plain TCP stream out for a TLS handshake, leaving
    /// [`Stream::Detached`]; `None` if the stream is not plain.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::take(self) {
            Stream::Plain(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }

    /// True once the stream carries TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ClientTls(_) | Stream::ServerTls(_))
    }
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream detached for TLS handshake",
    )
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $call
            }
            Stream::ClientTls($s) => {
                let $s = Pin::new($s.as_mut());
                $call
            }
            Stream::ServerTls($s) => {
                let $s = Pin::new($s.as_mut());
                $call
            }
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
            Stream::Detached => false,
        }
    }
}
