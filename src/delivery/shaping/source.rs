//! Connecting from a chosen local address (a "virtual MTA").
//!
//! glommio 0.9's `TcpStream::connect` cannot bind a source address and its
//! reactor's connect is private, so the socket is made with socket2: bind
//! the source, start a non-blocking `connect`, and watch for completion by
//! asking the kernel (`SO_ERROR`, then `getpeername`) between short timer
//! sleeps — 0.2 ms at first, doubling to 20 ms — so the executor never
//! blocks. On loopback the connection is up at the first look; across the
//! Internet the polling adds at most ~20 ms to a connect (see
//! docs/decisions.md). The connected socket then becomes a glommio
//! `TcpStream` (io_uring for everything after).

use glommio::net::TcpStream;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

/// Connects to `to` from `from` (port chosen by the kernel) within `timeout`.
pub async fn connect_from(
    from: IpAddr,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    if from.is_ipv4() != to.is_ipv4() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("source {from} and destination {to} differ in address family"),
        ));
    }
    let domain = if to.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.bind(&SockAddr::from(SocketAddr::new(from, 0)))?;
    match socket.connect(&SockAddr::from(to)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        match socket.peer_addr() {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        glommio::timer::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    // SAFETY: the descriptor comes from `into_raw_fd`, so the new owner is
    // its only owner.
    Ok(unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) })
}
