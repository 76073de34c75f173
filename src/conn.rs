//! One connection's state. The loop ([`crate::worker`]) drives it; this file holds the data
//! and the small operations that touch only the connection itself.
//!
//! Lifecycle (numbered invariants):
//! 1. `Request`: bytes are buffered (at most one incomplete request plus one read chunk) and
//!    parsed; responses go to the outbox in request order (pipelining keeps order).
//! 2. `Stream`: after `GET /events` the request buffer is freed; the connection only holds
//!    its outbox and its topic memberships. Bytes it receives are read and discarded so EOF
//!    and RST are noticed; they never reach the stream.
//! 3. `Lingering`: after a response that ends the connection, the write side is shut once the
//!    outbox is flushed and reads are discarded until EOF or a deadline, so the client reads
//!    the response instead of a reset.
//! 4. Registered once for READABLE | WRITABLE, edge-triggered; `writable` turns false on
//!    `WouldBlock` and true on the next writable event. No re-registration per event.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;

use crate::admission::StreamPermit;
use crate::outbox::Outbox;
use crate::publish::{Prepared, Shape};
use crate::topics::Membership;

/// One socket and what the loop knows about it.
pub(crate) struct Conn {
    pub sock: TcpStream,
    pub peer: Peer,
    pub phase: Phase,
    pub outbox: Outbox,
    /// The socket can take bytes (no `WouldBlock` since the last writable edge).
    pub writable: bool,
    /// Already in the loop's flush queue.
    pub dirty: bool,
    /// Close (via lingering) once the outbox is empty.
    pub close_after_flush: bool,
    /// The request being answered is `HEAD`: its response goes out without content.
    pub head_only: bool,
    /// Accepted on the admin listener (`--admin-listen`).
    pub admin: bool,
    /// The last write emptied the outbox: the client keeps up, so a backlog that builds up
    /// now is the loop's (invariant 6 of the worker's delivery module).
    pub kept_up: bool,
    /// Loop clock (ms) when a frame was last queued: heartbeats go to streams idle longer.
    pub last_queued_ms: u64,
    /// Loop clock (ms) since which queued bytes have waited with no progress;
    /// [`NOT_BLOCKED`] when nothing waits (see [`Conn::blocked_since_ms`]).
    blocked_since_ms: u64,
    /// A resumed stream skips live events up to this id: another loop may have delivered
    /// them before the reconnect while this loop has not drained them yet.
    pub resume_after: u64,
}

pub(crate) enum Phase {
    Request(Box<Requesting>),
    Stream(Box<StreamState>),
    Lingering { until_ms: u64 },
}

/// What a stream keeps besides its outbox: its topics and, only when it needs them, the
/// extras below (so a plain stream costs no allocation for them).
pub(crate) struct StreamState {
    pub memberships: Box<[Membership]>,
    pub extra: Option<Box<StreamExtra>>,
}

/// The rarer parts of a stream's state.
pub(crate) struct StreamExtra {
    /// When per-IP or per-user limits are on, the permit that counts the stream (handed back
    /// exactly once, on close).
    pub permit: Option<StreamPermit>,
    /// Unix seconds at which the subscribe token it was opened with expires (0: no token);
    /// the timer walk then tells the client and closes the stream.
    pub token_expires_at: u64,
}

/// A connection still sending requests.
#[derive(Default)]
pub(crate) struct Requesting {
    pub buf: Vec<u8>,
    /// `100 Continue` sent for the request at the head of `buf`.
    pub continue_sent: bool,
    /// The head of the request at the head of `buf` passed the gate (publish auth is decided
    /// on the head, before its body is read).
    pub head_checked: bool,
    /// The peer closed its write side; answer what is buffered, then close.
    pub peer_closed: bool,
    /// A publish waiting for room in the hub queues; reading is paused meanwhile.
    pub pending: Option<PendingPublish>,
    /// Loop clock (ms) of the first byte of the request being received (request timeout).
    pub started_ms: Option<u64>,
    /// Loop clock (ms) since which the connection has had nothing to do (keep-alive timeout).
    pub idle_since_ms: u64,
    /// CORS header lines for the response to the request being handled.
    pub cors: Option<String>,
    /// A `/healthz` probe this connection waits on (reading is paused meanwhile).
    pub health: Option<std::sync::Arc<crate::health::Probe>>,
    /// Keep-alive of the `/healthz` request being answered.
    pub health_keep_alive: bool,
    /// Responses the client has not read yet exceed [`RESPONSE_BACKLOG_BYTES`]; reading is
    /// paused until the outbox drains (a pipelining client that never reads its responses
    /// cannot grow our memory).
    pub paused_for_output: bool,
    /// A subscribe waiting for the bus to replay what the loop's history lacks.
    pub resume: Option<Box<ResumeWait>>,
    /// A `/topics/{t}/events?after=` waiting for the bus for the same reason.
    pub poll: Option<Box<PollWait>>,
}

/// A polling request answered once the bus's events are in (`--bus`).
pub(crate) struct PollWait {
    /// Matches the bus's answer to this connection.
    pub token: u64,
    pub topic: String,
    pub after: u64,
    pub limit: usize,
    /// The newest id the loop's history lacks.
    pub upto: u64,
    pub keep_alive: bool,
}

/// A stream about to start once the bus's replay is in (`--bus`).
pub(crate) struct ResumeWait {
    /// Matches the bus's answer to this connection (a slab key is reused).
    pub token: u64,
    pub topics: Vec<String>,
    pub after: u64,
    pub extra: Option<Box<StreamExtra>>,
    /// The stream holds a capacity slot (a public stream).
    pub holds_slot: bool,
    pub cors: Option<String>,
}

/// Unread response bytes past which a connection's requests are no longer read.
pub(crate) const RESPONSE_BACKLOG_BYTES: usize = 64 * 1024;

impl Requesting {
    /// Waiting on the hub (a parked publish) or on the loops (a health probe): the socket is
    /// not read and no further request is handled until that ends.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some() || self.health.is_some() || self.resume.is_some() || self.poll.is_some()
    }
}

/// A publish the hub could not take whole yet.
pub(crate) struct PendingPublish {
    /// The events to sequence (those the throttle let through), in request order.
    pub events: Vec<Prepared>,
    /// Ids of `events[..ids.len()]`, already sequenced.
    pub ids: Vec<u64>,
    /// Per event of the request: held by the `latest` throttle (answered with a null id).
    pub held: Vec<bool>,
    pub shape: Shape,
    pub keep_alive: bool,
    /// Loop clock (ms) when the publish was first parked; `--publish-wait-timeout-ms` counts
    /// from here.
    pub parked_since_ms: Option<u64>,
    /// With `--bus`: the bus's answer for the next `.1` events, handed to it and not yet
    /// answered.
    pub ticket: Option<(std::sync::Arc<crate::bus::Ticket>, usize)>,
    /// With `--bus`: the publish found the in-flight window full once (counted once in
    /// `publish_waits`).
    pub window_waited: bool,
}

impl PendingPublish {
    /// Ids in request order: `None` for held or superseded `latest` values and, while the
    /// publish is incomplete, for events not sequenced yet.
    pub fn answer(&self) -> Vec<Option<u64>> {
        let mut ids = self.ids.iter();
        let sequenced = |id: &u64| *id != crate::hub::SUPERSEDED;
        self.held
            .iter()
            .map(|&held| if held { None } else { ids.next().copied().filter(sequenced) })
            .collect()
    }
}

/// Result of one `read` call.
pub(crate) enum ReadResult {
    Data(usize),
    WouldBlock,
    Eof,
    Error(io::Error),
}

/// One `read` from `sock` into `scratch`.
pub(crate) fn read_once(sock: &mut TcpStream, scratch: &mut [u8]) -> ReadResult {
    loop {
        return match sock.read(scratch) {
            Ok(0) => ReadResult::Eof,
            Ok(n) => ReadResult::Data(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadResult::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => ReadResult::Error(e),
        };
    }
}

/// [`Conn::blocked_since_ms`] when nothing waits (a sentinel keeps `Conn` 8 bytes smaller than
/// an `Option<u64>` would: every idle stream pays for every field).
const NOT_BLOCKED: u64 = u64::MAX;

/// A peer address without IPv6 flow info and scope id: 20 bytes instead of `SocketAddr`'s 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    ip: IpAddr,
    port: u16,
}

impl Peer {
    pub fn addr(self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        Peer { ip: addr.ip(), port: addr.port() }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr().fmt(f)
    }
}

impl Conn {
    pub fn new(sock: TcpStream, peer: SocketAddr, now_ms: u64) -> Conn {
        Conn {
            sock,
            peer: Peer::from(peer),
            phase: Phase::Request(Box::new(Requesting { idle_since_ms: now_ms, ..Requesting::default() })),
            outbox: Outbox::new(),
            writable: true,
            dirty: false,
            close_after_flush: false,
            head_only: false,
            admin: false,
            kept_up: true,
            last_queued_ms: now_ms,
            blocked_since_ms: NOT_BLOCKED,
            resume_after: 0,
        }
    }

    /// Loop clock (ms) since which queued bytes have waited with no write progress.
    pub fn blocked_since_ms(&self) -> Option<u64> {
        (self.blocked_since_ms != NOT_BLOCKED).then_some(self.blocked_since_ms)
    }

    pub fn set_blocked_since_ms(&mut self, since: Option<u64>) {
        self.blocked_since_ms = since.unwrap_or(NOT_BLOCKED);
    }

    pub fn requesting(&mut self) -> Option<&mut Requesting> {
        match &mut self.phase {
            Phase::Request(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_parked(&self) -> bool {
        matches!(&self.phase, Phase::Request(r) if r.is_waiting())
    }
}

const _: () = assert!(std::mem::size_of::<Conn>() <= 168, "a Conn is paid by every idle stream");
