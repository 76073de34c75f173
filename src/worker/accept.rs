//! Accepting: the first gate. Refuse at the edge, before a `Conn` exists.
//!
//! Invariants:
//! 1. The node never holds more than `capacity + --request-reserve` connections
//!    (`--max-connections`, capped by the fd limit, plus the reserve for short requests): the
//!    shared count is taken before a connection is registered and given back when it closes.
//!    Past it, the socket gets a 503 with `Retry-After` and is closed (reason `capacity`).
//! 2. `EMFILE`/`ENFILE` never busy-loops: each loop keeps one spare descriptor; on
//!    exhaustion it frees it, accepts, answers 503, closes, and takes the spare back. If the
//!    spare cannot be taken back, accepts pause for [`super::ACCEPT_BACKOFF_MS`].
//! 3. At most [`super::ACCEPT_BUDGET`] accepts per listener per iteration.
//! 4. Connections on the admin listener count against their own bound
//!    ([`ADMIN_MAX_CONNECTIONS`], inside `--fd-reserve`), not against `capacity`: at capacity
//!    an operator can still scrape, probe and publish there.
//! 5. At most `capacity` streams are open on the public listener: a request that asks to
//!    become a stream takes a slot of the shared stream count first and gets 503 with
//!    `Retry-After` when none is left (reason `stream_capacity`); the stream hands its slot
//!    back when its phase ends. Streams are what the capacity is for, so at stream capacity
//!    publishes, polling, health and metrics are still served from the reserve of
//!    invariant 1.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Token};

use crate::conn::Conn;
use crate::metrics::{LoopStats, RejectReason};

use super::{Worker, ACCEPT_BACKOFF_MS, ACCEPT_BUDGET};

/// Most concurrent connections on the admin listener (they use `--fd-reserve` descriptors).
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// The response to a connection past capacity (or while out of descriptors).
pub(super) fn at_capacity() -> bytes::Bytes {
    let body = b"{\"error\":\"server at capacity, retry later\"}\n";
    crate::http::response(503, "Retry-After: 5\r\n", "application/json", body, false)
}

/// The response to a stream request past the stream capacity (invariant 5). It closes the
/// connection, so a refused subscriber does not keep a place of the request reserve.
pub(super) fn at_stream_capacity() -> bytes::Bytes {
    let body = b"{\"error\":\"server at stream capacity, retry later\"}\n";
    crate::http::response(503, "Retry-After: 5\r\n", "application/json", body, false)
}

/// Opens the spare descriptor kept for `EMFILE` (invariant 2).
pub(super) fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

/// Which listener a readiness event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Public,
    Admin,
}

impl Worker {
    /// Accepts up to the budget from one listener.
    pub(super) fn accept(&mut self, which: Which) {
        for _ in 0..ACCEPT_BUDGET {
            let listener = match which {
                Which::Public => self.listener.as_ref(),
                Which::Admin => self.admin_listener.as_ref(),
            };
            let Some(listener) = listener else { return self.set_accept_pending(which, false) };
            match listener.accept() {
                Ok((sock, peer)) => self.admit(sock, peer, which == Which::Admin),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.set_accept_pending(which, false)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_fd_exhausted(&e) => {
                    if !self.accept_with_spare(which) {
                        log::warn!(
                            "loop {}: accept: {e}; pausing accepts for {ACCEPT_BACKOFF_MS} ms",
                            self.index
                        );
                        self.accept_paused_until_ms = self.now_ms + ACCEPT_BACKOFF_MS;
                        return;
                    }
                }
                Err(e) => log::debug!("loop {}: accept: {e}", self.index),
            }
        }
        self.set_accept_pending(which, true);
    }

    fn set_accept_pending(&mut self, which: Which, pending: bool) {
        match which {
            Which::Public => self.accept_pending = pending,
            Which::Admin => self.admin_accept_pending = pending,
        }
    }

    /// Invariant 1: counts the connection against capacity, registers it, or refuses it.
    fn admit(&mut self, mut sock: TcpStream, peer: std::net::SocketAddr, admin: bool) {
        if self.live.config.connect_rate_per_ip > 0.0 {
            if let Err(refusal) = self.shared.admission.admit_connect(peer.ip(), std::time::Instant::now()) {
                log::debug!("loop {}: refused {peer}: {refusal}", self.index);
                return self.refuse_raw(sock, &refusal.response(false), RejectReason::IpRate);
            }
        }
        // Invariant 4: the admin listener has its own small budget, so operators (and
        // internal publishers) get in when the public side is full.
        let (counter, capacity) = if admin {
            (&self.shared.admin_connections, ADMIN_MAX_CONNECTIONS)
        } else {
            (
                &self.shared.connections,
                self.shared.capacity.saturating_add(self.shared.config.request_reserve),
            )
        };
        if counter.fetch_add(1, Ordering::AcqRel) >= capacity {
            counter.fetch_sub(1, Ordering::AcqRel);
            let response = self.at_capacity.clone();
            self.refuse_raw(sock, &response, RejectReason::Capacity);
            log::debug!("loop {}: refused {peer}: at capacity ({capacity})", self.index);
            return;
        }
        if let Err(e) = sock.set_nodelay(true) {
            log::debug!("loop {}: TCP_NODELAY on {peer}: {e}", self.index);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut sock, Token(key), interest) {
            log::warn!("loop {}: cannot register {peer}: {e}", self.index);
            counter.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let mut conn = Conn::new(sock, peer, self.now_ms);
        conn.admin = admin;
        entry.insert(conn);
        LoopStats::add(&self.stats().accepted, 1);
        self.update_gauges();
    }

    /// Invariant 5: takes a stream slot; `false` at stream capacity.
    pub(super) fn take_stream_slot(&self) -> bool {
        let streams = &self.shared.streams;
        if streams.fetch_add(1, Ordering::AcqRel) >= self.shared.capacity {
            streams.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back a slot taken by [`Worker::take_stream_slot`] for a stream that never started.
    pub(super) fn release_stream_slot(&self, held: bool) {
        if held {
            self.shared.streams.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Invariant 2: one accept on the spare descriptor, answered with 503.
    fn accept_with_spare(&mut self, which: Which) -> bool {
        let Some(spare) = self.spare.take() else { return false };
        drop(spare);
        let listener = match which {
            Which::Public => self.listener.as_ref(),
            Which::Admin => self.admin_listener.as_ref(),
        };
        if let Some(Ok((sock, peer))) = listener.map(TcpListener::accept) {
            log::warn!("loop {}: out of file descriptors; refused {peer} with 503", self.index);
            let response = self.at_capacity.clone();
            self.refuse_raw(sock, &response, RejectReason::Emfile);
        }
        self.spare = open_spare();
        self.spare.is_some()
    }

    /// Answers a socket that never becomes a connection with `response`, then closes it.
    fn refuse_raw(&mut self, mut sock: TcpStream, response: &[u8], reason: RejectReason) {
        // Read what the client already sent so closing does not reset the connection
        // before it reads the answer.
        let _ = sock.read(&mut self.scratch);
        let _ = sock.write(response);
        let _ = sock.shutdown(std::net::Shutdown::Write);
        self.stats().rejected(reason);
    }
}

fn is_fd_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}
