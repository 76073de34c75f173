//! OS edge for client sockets: source addresses, the open-file limit, non-blocking connects.
//!
//! Contract: [`start_connect`] returns a non-blocking socket whose connect is in progress (or
//! done), bound to the given source address first, so every source address has its own
//! ephemeral port range. The bind uses `IP_BIND_ADDRESS_NO_PORT` so the port is picked at
//! connect time from the whole 4-tuple (ports in TIME_WAIT from an earlier run are reusable
//! there, and a bind never scans the port range on its own); [`raise_nofile`] lifts the soft `RLIMIT_NOFILE` to the hard limit
//! and reports the streams one process may hold. Targets are checked to be loopback by the CLI.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// File descriptors kept back from the limit for pipes, the poller, logs and the publisher.
pub const FD_RESERVE: u64 = 100;

/// Raises the soft open-file limit to the hard limit; returns the limit now in force.
pub fn raise_nofile() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        log::info!("raised RLIMIT_NOFILE from {soft} to {hard}");
        return Ok(hard);
    }
    Ok(soft)
}

/// Streams one process can hold under an open-file limit.
pub fn capacity(limit: u64) -> u64 {
    limit.saturating_sub(FD_RESERVE)
}

/// Source addresses from `--sources` (comma separated) or `--source-count K`
/// (127.0.0.1 ..= 127.0.0.K); empty means "let the kernel choose".
pub fn sources(list: Option<&str>, count: Option<u8>) -> Result<Vec<IpAddr>, String> {
    if let Some(list) = list {
        return list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<IpAddr>().map_err(|e| format!("--sources: {s:?}: {e}")))
            .collect();
    }
    match count {
        None => Ok(Vec::new()),
        Some(0) => Err("--source-count must be at least 1".into()),
        Some(k) => Ok((1..=k).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))).collect()),
    }
}

/// Refuses any target outside the loopback range: this tool only ever loads this host.
pub fn check_loopback(addr: SocketAddr, sources: &[IpAddr]) -> Result<(), String> {
    if !addr.ip().is_loopback() {
        return Err(format!("--addr {addr}: only loopback targets (127.0.0.0/8, ::1) are allowed"));
    }
    if let Some(s) = sources.iter().find(|s| !s.is_loopback()) {
        return Err(format!("source {s}: only loopback source addresses are allowed"));
    }
    Ok(())
}

/// Options applied to every client socket before it connects.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketOpts {
    /// Bind to this address (port 0) before connecting.
    pub source: Option<IpAddr>,
    /// `SO_RCVBUF` in bytes (the kernel doubles it), if set.
    pub recv_buffer: Option<usize>,
}

/// Starts a non-blocking TCP connect to `addr`.
pub fn start_connect(addr: SocketAddr, opts: SocketOpts) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(size) = opts.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(ip) = opts.source {
        if ip.is_ipv4() {
            // Best effort: without it (kernels before 4.2) bind picks the port itself.
            let _ = bind_address_no_port(&socket);
        }
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(std::net::TcpStream::from(socket)))
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (not wrapped by socket2).
fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use nix::libc::{c_int, socklen_t};
    let one: c_int = 1;
    // SAFETY: `socket` owns an open descriptor for the whole call; the option value points to a
    // live `c_int` and the length passed is exactly its size, as IP_BIND_ADDRESS_NO_PORT expects.
    let rc = unsafe {
        nix::libc::setsockopt(
            socket.as_raw_fd(),
            nix::libc::IPPROTO_IP,
            nix::libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const c_int).cast(),
            std::mem::size_of::<c_int>() as socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// After a writable (or error) event on a connecting socket: `Ok(true)` once established,
/// `Ok(false)` if still in progress, `Err` with the connect error.
pub fn connect_result(stream: &mio::net::TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_lists() {
        assert_eq!(sources(None, None), Ok(vec![]));
        let four = sources(None, Some(4)).expect("valid");
        assert_eq!(four.len(), 4);
        assert_eq!(four[3], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
        assert_eq!(sources(Some("127.0.0.1, 127.0.0.9"), Some(4)).expect("valid").len(), 2);
        assert!(sources(Some("127.0.0.1,nope"), None).is_err());
        assert!(sources(None, Some(0)).is_err());
    }

    #[test]
    fn only_loopback() {
        let lo: SocketAddr = "127.0.0.1:80".parse().expect("addr");
        assert!(check_loopback(lo, &[IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))]).is_ok());
        assert!(check_loopback("10.0.0.1:80".parse().expect("addr"), &[]).is_err());
        assert!(check_loopback(lo, &[IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))]).is_err());
    }

    #[test]
    fn connect_to_a_closed_port_is_refused() {
        // Bind then drop a listener to find a port nobody listens on.
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let opts = SocketOpts { source: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))), recv_buffer: None };
        let s = start_connect(addr, opts).expect("socket");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match connect_result(&s) {
                Err(e) => {
                    assert_eq!(io_kind_name(&e), "connect refused");
                    break;
                }
                Ok(true) => panic!("connected to a closed port"),
                Ok(false) => {
                    assert!(std::time::Instant::now() < deadline, "no connect result");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }

    #[test]
    fn bind_without_port_defers_the_port_to_connect() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        bind_address_no_port(&s).expect("IP_BIND_ADDRESS_NO_PORT");
        s.bind(&SockAddr::from(SocketAddr::from(([127, 0, 0, 3], 0)))).expect("bind");
        let local = s.local_addr().expect("local").as_socket().expect("inet");
        assert_eq!((local.ip(), local.port()), (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), 0));
    }

    fn io_kind_name(e: &io::Error) -> String {
        crate::stats::io_kind(e)
    }
}
