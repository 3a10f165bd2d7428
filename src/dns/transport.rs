//! One query to one nameserver: UDP, with TCP fallback on TC=1.
//!
//! **A fresh UDP socket per query**, bound to an ephemeral port and
//! `connect()`ed to the nameserver, rather than one long-lived shard
//! socket:
//! * every query gets a kernel-random source port on top of its random
//!   16-bit id (~31 bits an off-path spoofer must guess, RFC 5452), where a
//!   shared socket would leave only the id;
//! * the connected socket makes the kernel discard datagrams from any other
//!   address and report ICMP port-unreachable as an error, so a dead
//!   nameserver fails over at once instead of after a timeout;
//! * no demultiplexer task or id table is needed: a query owns its socket,
//!   which closes when the exchange ends (including on cancellation).
//!
//! The cost is a `socket`/`bind`/`connect`/`close` per query, a few
//! microseconds, paid only on cache misses; the resolver bounds how many
//! are open at once (`max_concurrent_queries`). The socket is created with
//! std (no `SO_REUSEPORT`, unlike `glommio::net::UdpSocket::bind`: with
//! reuseport set, Linux may give two of our port-0 sockets the *same*
//! port, and their replies would cross) and handed to glommio.
//!
//! Every datagram that is not the reply (wrong source, id or question, or
//! garbage) is counted and dropped, and we keep waiting until the deadline.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hickory_proto::op::Message;

use super::counters::{bump, Counters};
use super::wire::{build_query, check_reply, Expected};

/// How one exchange ended, short of an accepted reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// No acceptable reply before the deadline.
    Timeout,
    /// Socket-level failure (refused, reset, ...), with detail.
    Network(String),
    /// We could not even build the query.
    Encode(String),
}

/// Receive buffer: more than any sane UDP answer to a 1232-byte EDNS
/// query; an oversized datagram is truncated by the kernel and then fails
/// to decode, which counts as a mismatch.
const UDP_BUFFER: usize = 4096;

/// Runs `fut` until `deadline`; `None` if the deadline passed first.
pub async fn within<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(left).await;
        None
    })
    .await
}

/// Sends `expected`'s question to `expected.server` over UDP (and over TCP
/// if the reply is truncated) and returns the matching reply.
pub async fn exchange(
    expected: &Expected,
    payload: u16,
    timeout: Duration,
    counters: &Counters,
) -> Result<Message, ExchangeError> {
    let query = build_query(expected.id, &expected.name, expected.qtype, payload)
        .map_err(ExchangeError::Encode)?;
    let reply = udp_exchange(expected, &query, timeout, counters).await?;
    if !reply.truncated() {
        return Ok(reply);
    }
    bump(&counters.truncated);
    tcp_exchange(expected, &query, timeout, counters).await
}

fn udp_socket(server: SocketAddr) -> std::io::Result<glommio::net::UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let std_socket = std::net::UdpSocket::bind(local)?;
    std_socket.connect(server)?;
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor comes from a socket we just created and own.
    Ok(unsafe { glommio::net::UdpSocket::from_raw_fd(std_socket.into_raw_fd()) })
}

async fn udp_exchange(
    expected: &Expected,
    query: &[u8],
    timeout: Duration,
    counters: &Counters,
) -> Result<Message, ExchangeError> {
    let net = |e: &dyn std::fmt::Display| ExchangeError::Network(format!("UDP: {e}"));
    let socket = udp_socket(expected.server).map_err(|e| net(&e))?;
    bump(&counters.udp_queries);
    socket.send(query).await.map_err(|e| net(&e))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let Some(received) = within(deadline, socket.recv_from(&mut buf)).await else {
            return Err(ExchangeError::Timeout);
        };
        let (len, from) = received.map_err(|e| net(&e))?;
        let packet = buf.get(..len).unwrap_or_default();
        match check_reply(packet, from, expected) {
            Ok(msg) => return Ok(msg),
            Err(why) => {
                bump(&counters.spoofed_or_mismatched);
                tracing::debug!(server = %expected.server, %from, why, "dropped DNS datagram");
            }
        }
    }
}

async fn tcp_exchange(
    expected: &Expected,
    query: &[u8],
    timeout: Duration,
    counters: &Counters,
) -> Result<Message, ExchangeError> {
    let net = |e: &dyn std::fmt::Display| ExchangeError::Network(format!("TCP: {e}"));
    let len = u16::try_from(query.len()).map_err(|e| ExchangeError::Encode(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let talk = async {
        let mut stream = glommio::net::TcpStream::connect(expected.server)
            .await
            .map_err(|e| net(&e))?;
        let _ = stream.set_nodelay(true);
        let mut frame = Vec::with_capacity(query.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(query);
        bump(&counters.tcp_queries);
        stream.write_all(&frame).await.map_err(|e| net(&e))?;
        stream.flush().await.map_err(|e| net(&e))?;
        // Same strictness as UDP: skip frames that are not our reply.
        loop {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.map_err(|e| net(&e))?;
            let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut packet).await.map_err(|e| net(&e))?;
            match check_reply(&packet, expected.server, expected) {
                Ok(msg) => return Ok(msg),
                Err(why) => {
                    bump(&counters.spoofed_or_mismatched);
                    tracing::debug!(server = %expected.server, why, "dropped DNS frame");
                }
            }
        }
    };
    within(deadline, talk)
        .await
        .unwrap_or(Err(ExchangeError::Timeout))
}
