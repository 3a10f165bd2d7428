//! Listening sockets: one per core per address, all bound with SO_REUSEPORT
//! so the kernel spreads inbound connections across the cores.

use crate::runtime::Core;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;

/// Creates a listening socket. Created on the main thread before the
/// executors start so that bind errors surface at startup and a port of 0
/// is resolved once for every core.
pub fn bind(addr: SocketAddr) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    // A deep backlog absorbs connection bursts (the kernel caps it at somaxconn).
    sock.listen(4096)?;
    Ok(sock)
}

/// Accepts connections on `sock` forever, one session task each.
pub async fn accept_loop(core: Rc<Core>, sock: Socket) {
    // SAFETY: the fd comes from a freshly created listening socket that we own.
    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(sock.into_raw_fd()) };
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let core = core.clone();
                glommio::spawn_local(crate::ingress::session::run(core, stream)).detach();
            }
            Err(e) => {
                // Out of descriptors or memory: back off briefly instead of
                // spinning; existing sessions keep running.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
