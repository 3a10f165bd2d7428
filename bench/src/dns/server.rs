//! Sockets and tasks: one UDP socket read by a few worker tasks, and one
//! TCP listener with a task per connection, both on the same port.
//!
//! Shutdown is a `watch` channel: every task selects on it, connection
//! tasks are held in a `JoinSet` and aborted when the listener stops, and
//! dropping the [`DnsServer`] handle stops everything too, so a failing
//! test cannot leave a server running.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::counters::{DnsSnapshot, DnsStats, Transport};
use super::error::DnsError;
use super::options::DnsOptions;
use super::respond::Responder;

/// Largest DNS message (UDP datagram or TCP frame).
const MAX_MESSAGE: usize = u16::MAX as usize;

/// How often a port-0 bind retries when the UDP port is taken for TCP.
const BIND_ATTEMPTS: usize = 16;

/// What a finished server reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsReport {
    /// The address it served on.
    pub local_addr: SocketAddr,
    /// Final counters.
    pub stats: DnsSnapshot,
}

/// A running server; see [`start`].
#[derive(Debug)]
pub struct DnsServer {
    local_addr: SocketAddr,
    stats: DnsStats,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Handle on the live counters.
    pub fn stats(&self) -> DnsStats {
        self.stats.clone()
    }

    /// Stops all tasks, waits for them and returns the final counters.
    pub async fn shutdown(mut self) -> DnsReport {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        DnsReport {
            local_addr: self.local_addr,
            stats: self.stats.snapshot(),
        }
    }
}

/// Binds `opts.listen` (UDP and TCP) and serves in background tasks on the
/// current Tokio runtime until [`DnsServer::shutdown`] or drop.
pub async fn start(opts: DnsOptions) -> Result<DnsServer, DnsError> {
    opts.validate()?;
    let stats = DnsStats::new(opts.count_names);
    let responder = Arc::new(Responder::new(&opts, stats.clone())?);
    let (udp, tcp) = bind_pair(opts.listen).await?;
    let local_addr = udp
        .local_addr()
        .map_err(|e| DnsError::io("reading the bound UDP address", e))?;
    let (shutdown, rx) = watch::channel(false);
    let udp = Arc::new(udp);
    let mut tasks = Vec::with_capacity(opts.udp_workers + 1);
    for _ in 0..opts.udp_workers {
        tasks.push(tokio::spawn(udp_worker(
            Arc::clone(&udp),
            Arc::clone(&responder),
            rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(tcp_acceptor(
        tcp,
        responder,
        stats.clone(),
        rx,
        opts.tcp_idle_timeout,
    )));
    Ok(DnsServer {
        local_addr,
        stats,
        shutdown,
        tasks,
    })
}

/// Runs a server until `shutdown` completes, then returns its report.
pub async fn serve(
    opts: DnsOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<DnsReport, DnsError> {
    let server = start(opts).await?;
    shutdown.await;
    Ok(server.shutdown().await)
}

/// Binds UDP and TCP on the same address; with port 0, retries until the
/// port the kernel picked for UDP is also free for TCP.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let attempts = if addr.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| DnsError::io(format!("binding UDP {addr}"), e))?;
        let bound = udp
            .local_addr()
            .map_err(|e| DnsError::io("reading the bound UDP address", e))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some((bound, e)),
        }
    }
    let (bound, e) = last.unwrap_or_else(|| (addr, io::Error::other("no bind attempt made")));
    Err(DnsError::io(format!("binding TCP {bound}"), e))
}

async fn udp_worker(
    socket: Arc<UdpSocket>,
    responder: Arc<Responder>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut out = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            received = socket.recv_from(&mut buf) => {
                // Errors here are per-datagram (e.g. a queued ICMP error);
                // the socket itself stays usable.
                let Ok((len, peer)) = received else { continue };
                let Some(packet) = buf.get(..len) else { continue };
                if responder.handle(packet, Transport::Udp, &mut out) {
                    let _ = socket.send_to(&out, peer).await;
                }
            }
        }
    }
}

async fn tcp_acceptor(
    listener: TcpListener,
    responder: Arc<Responder>,
    stats: DnsStats,
    mut stop: watch::Receiver<bool>,
    idle: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    stats.tcp_connection();
                    connections.spawn(tcp_connection(stream, Arc::clone(&responder), idle));
                }
                // Typically EMFILE; back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Serves length-prefixed queries (RFC 1035 §4.2.2, RFC 7766) in order
/// until the client closes, goes idle, or sends a broken frame.
async fn tcp_connection(mut stream: TcpStream, responder: Arc<Responder>, idle: Duration) {
    let _ = stream.set_nodelay(true);
    // Grown to the largest frame seen, not 64 KiB up front: a load test
    // may hold thousands of connections.
    let mut packet = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(512);
    let mut frame = Vec::with_capacity(512);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        packet.resize(usize::from(u16::from_be_bytes(len)), 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if !responder.handle(&packet, Transport::Tcp, &mut out) {
            continue;
        }
        let Ok(out_len) = u16::try_from(out.len()) else {
            continue;
        };
        frame.clear();
        frame.extend_from_slice(&out_len.to_be_bytes());
        frame.extend_from_slice(&out);
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}
