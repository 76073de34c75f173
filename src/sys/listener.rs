//! Listening sockets: one per loop, all bound to the same address with `SO_REUSEPORT`, so
//! the kernel spreads incoming connections across loops (and across processes that share
//! the port) without a shared accept lock.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// How much a connection's kernel send queue may hold; accepted sockets inherit both.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendQueue {
    /// `SO_SNDBUF` (0: the kernel's autotuning): caps sent-but-unacknowledged plus unsent.
    pub buffer: u32,
    /// `TCP_NOTSENT_LOWAT` (0: off): caps only the unsent part, so the socket turns
    /// unwritable once this much waits unsent while autotuning still grows the in-flight part.
    pub notsent_lowat: u32,
}

/// Binds a non-blocking `SO_REUSEPORT` listener on `addr` with `backlog`, with the send
/// queue bounds of [`SendQueue`] set so that accepted sockets inherit them.
///
/// The kernel silently caps `backlog` at `net.core.somaxconn`.
pub fn bind_reuseport(addr: SocketAddr, backlog: u32, send: SendQueue) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if send.buffer > 0 {
        socket.set_send_buffer_size(send.buffer as usize)?;
    }
    if send.notsent_lowat > 0 {
        socket.set_tcp_notsent_lowat(send.notsent_lowat)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// Reads `net.core.somaxconn`, the kernel's cap on any listen backlog.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Accepted sockets inherit the listener's `SO_SNDBUF` (Linux doubles the value set) and
    /// `TCP_NOTSENT_LOWAT`.
    #[test]
    fn accepted_sockets_inherit_the_send_queue_bounds() {
        let send = SendQueue { buffer: 24_576, notsent_lowat: 16_384 };
        let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 16, send).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (accepted, _) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        let sock = socket2::SockRef::from(&accepted);
        assert_eq!(sock.send_buffer_size().unwrap(), 2 * 24_576, "SO_SNDBUF of the accepted socket");
        assert_eq!(sock.tcp_notsent_lowat().unwrap(), 16_384, "TCP_NOTSENT_LOWAT of the accepted socket");
    }
}
