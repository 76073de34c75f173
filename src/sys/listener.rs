//! Listening sockets: one per loop, all bound to the same address with `SO_REUSEPORT`, so
//! the kernel spreads incoming connections across loops (and across processes that share
//! the port) without a shared accept lock.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking `SO_REUSEPORT` listener on `addr` with `backlog`; a non-zero
/// `send_buffer` sets `SO_SNDBUF`, which accepted sockets inherit.
///
/// The kernel silently caps `backlog` at `net.core.somaxconn`.
pub fn bind_reuseport(addr: SocketAddr, backlog: u32, send_buffer: u32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer as usize)?;
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

    /// Accepted sockets inherit the listener's `SO_SNDBUF` (Linux doubles the value set).
    #[test]
    fn accepted_sockets_inherit_the_send_buffer_cap() {
        let listener = bind_reuseport("127.0.0.1:0".parse().unwrap(), 16, 24_576).unwrap();
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
        let size = socket2::SockRef::from(&accepted).send_buffer_size().unwrap();
        assert_eq!(size, 2 * 24_576, "SO_SNDBUF of the accepted socket");
    }
}
