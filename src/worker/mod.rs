//! One event loop: its own `mio::Poll`, `SO_REUSEPORT` listener, connection slab, topic
//! index and hub inbox. A connection lives and dies on one loop; nothing here is shared
//! with another loop except the hub's channels and the loop's own stats.
//!
//! One iteration, top to bottom (the data path):
//! 1. `poll` (timeout 0 when work is left over, else until the next timer or park retry);
//! 2. dispatch readiness by token: writable → mark for flush; readable → read and handle
//!    requests ([`requests`]) or discard bytes on streams;
//! 3. accept up to [`ACCEPT_BUDGET`] connections;
//! 4. resume reads cut short by a budget, retry publishers parked on a full hub once a loop
//!    freed room (or the fallback passed), answer
//!    finished health probes ([`admin`]), tell streams when overload mode changed;
//! 5. drain the hub inbox up to [`DRAIN_BUDGET`] events into outboxes ([`delivery`]), and
//!    wake publishers waiting for the room that made;
//! 6. flush the next [`delivery::FLUSH_BUDGET`] queued connections, once each (`writev` over
//!    its queued frames); anything still queued makes the next poll return at once;
//! 7. on the timer tick: heartbeats, stall, request, idle and linger deadlines, gauges
//!    ([`timers`]); while draining for shutdown, the drain deadline.
//!
//! Every drain has a budget, so no single source (a flooding publisher, an accept storm,
//! a large backlog of events) can starve the others.

mod accept;
pub(crate) use accept::ADMIN_MAX_CONNECTIONS;
mod admin;
mod bus_publish;
mod delivery;
use delivery::FlushQueue;
mod gate;
mod pace;
mod poll;
mod poll_bus;
mod reload;
mod requests;
mod resume;
mod timers;

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::admission::Admission;
use crate::config::Config;
use crate::conn::{read_once, Conn, Phase, ReadResult};
use crate::health::Probe;
use crate::histogram;
use crate::history::{History, HistoryLimits};
use crate::hub::{Hub, Inbox};
use crate::live::{Live, LiveCell};
use crate::metrics::{CloseReason, LoopStats};
use crate::outbox::Bounds;
use crate::topics::TopicIndex;
pub use reload::Reloader;

/// The listener's token (slab keys never reach it).
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
/// The admin listener's token (`--admin-listen`, on loop 0 only).
pub(crate) const ADMIN_LISTENER: Token = Token(usize::MAX - 2);
/// The hub's waker token.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// Readiness events taken per `poll`.
const EVENTS_CAPACITY: usize = 1024;
/// Connections accepted per iteration: an accept storm cannot starve established streams.
const ACCEPT_BUDGET: usize = 256;
/// Hub events fanned out per iteration: bounds the time before sockets are flushed.
const DRAIN_BUDGET: usize = 4096;
/// Bytes per `read` call; also the size of the loop's one scratch buffer.
const READ_CHUNK: usize = 64 * 1024;
/// `read` calls per connection per readiness event before yielding to others.
const READ_BUDGET: usize = 16;
/// How often a loop with `/healthz` requests waiting checks whether every loop answered.
const HEALTH_RETRY: Duration = Duration::from_millis(1);
/// How long a closing connection's unread input is drained after the response (so the
/// client reads the response, not a reset).
const LINGER_MS: u64 = 2_000;
/// Pause after `EMFILE`/`ENFILE` on accept before trying again (the listener stays ready,
/// so retrying at once would spin).
const ACCEPT_BACKOFF_MS: u64 = 50;

/// What all loops share: config, hub, per-loop stats, capacity and lifecycle flags.
pub(crate) struct Shared {
    pub config: Config,
    pub hub: Arc<Hub>,
    /// The bus that sequences every event, with `--bus`.
    pub bus: Option<Arc<crate::bus::Bus>>,
    pub stats: Vec<CachePadded<LoopStats>>,
    /// Most connections the node holds (invariant 1 of [`accept`]).
    pub capacity: usize,
    /// Open connections over all loops (touched per connection, never per event); at most
    /// `capacity + --request-reserve` (invariant 1 of [`accept`]).
    pub connections: AtomicUsize,
    /// Open streams from the public listener over all loops; at most `capacity` (invariant 5
    /// of [`accept`]).
    pub streams: AtomicUsize,
    /// Open connections on the admin listener (bounded separately).
    pub admin_connections: AtomicUsize,
    /// Open descriptors, sampled by the monitor (listing `/proc/self/fd` is too slow for a
    /// loop thread at 100k descriptors).
    pub open_fds: std::sync::atomic::AtomicU64,
    /// Per-IP, per-user and per-topic limits.
    pub admission: Admission,
    /// The settings a reload changes (tokens, keys, CORS, heartbeat, retry, thresholds):
    /// loops cache the `Arc` and refresh it when the generation moves ([`crate::live`]).
    pub live: LiveCell,
    /// Draining for shutdown: stop accepting, tell streams, flush, exit.
    pub draining: AtomicBool,
    /// Overload mode (set by the monitor with hysteresis; loops shed and notify).
    pub overload: AtomicBool,
    /// Per loop: answered the monitor's last probe in time.
    pub loop_up: Vec<AtomicBool>,
    /// The open-file limit.
    pub max_fds: u64,
    /// Process start, seconds since the epoch.
    pub start_time_seconds: f64,
    /// Close everything now.
    pub stop: AtomicBool,
    /// The newest status snapshot (JSON) the monitor built, for `GET /status.json`; `None`
    /// before the first one and with `--status-interval-ms 0`.
    pub status: std::sync::Mutex<Option<bytes::Bytes>>,
}

/// One event loop.
pub(crate) struct Worker {
    index: usize,
    shared: Arc<Shared>,
    poll: Poll,
    /// `None` once draining.
    listener: Option<TcpListener>,
    admin_listener: Option<TcpListener>,
    inbox: Inbox,
    conns: Slab<Conn>,
    topics: TopicIndex,
    history: History,
    scratch: Box<[u8]>,
    /// Connections with output to write, in order (invariant 5 of [`delivery`]).
    dirty: FlushQueue,
    /// Publishing connections waiting for hub room.
    parked: Vec<usize>,
    /// Loop clock (ms) at which parked publishes are retried even without a wake-up.
    park_retry_at_ms: u64,
    /// Publishing connections waiting for the bus (its answer or window room); retried only
    /// on a wake-up or after [`crate::room::ROOM_WAIT_FALLBACK`], never per loop pass.
    bus_waiting: Vec<usize>,
    /// The loop's waker fired since `bus_waiting` was last retried.
    woken: bool,
    /// Loop clock (ms) at which `bus_waiting` is retried even without a wake-up.
    bus_retry_at_ms: u64,
    /// Connections whose reads were cut short by [`READ_BUDGET`].
    again: Vec<usize>,
    /// Connections in the stream phase (kept as a count: gauges must not walk the slab).
    streams: usize,
    accept_pending: bool,
    admin_accept_pending: bool,
    accept_paused_until_ms: u64,
    /// The spare descriptor for `EMFILE` (invariant 2 of [`accept`]).
    spare: Option<File>,
    at_capacity: Bytes,
    drain_more: bool,
    /// Connections still to write before the loop takes hub events again; 0 when it is not
    /// behind (invariant 6 of [`delivery`]).
    write_behind: usize,
    /// The writing queued for the pass and its rate (the intake's side of the lag budget).
    pace: pace::Pace,
    /// Frames this loop has written (the pace's measure).
    frames_written: u64,
    /// `--write-delay-ms` (invariant 10 of [`delivery`]).
    write_delay: Duration,
    /// Loop clock (ms) at which a drain gives up on the remaining connections.
    drain_deadline_ms: Option<u64>,
    /// Overload mode as this loop last saw it (a change notifies every stream).
    overloaded: bool,
    /// `/healthz` requests waiting for every loop to answer their probe.
    health_waiting: Vec<(usize, Arc<Probe>)>,
    delivery_lag: histogram::Local,
    iteration: histogram::Local,
    /// Longest iteration since the last tick, in microseconds (the loop lag gauge).
    max_iteration_us: u64,
    epoch: Instant,
    now_ms: u64,
    next_tick_ms: u64,
    tick_ms: u64,
    /// A stream's outbox bounds once its client has fallen behind (the configured ones).
    bounds: Bounds,
    /// A stream's outbox bounds while its client keeps up ([`delivery::pass_bounds`]).
    pass_bounds: Bounds,
    /// The reloadable settings as this loop last took them, and their generation.
    live: Arc<Live>,
    live_generation: u64,
    /// Tokens of resumes asked of the bus (see [`resume`]).
    resume_tokens: u64,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        shared: Arc<Shared>,
        poll: Poll,
        listeners: (TcpListener, Option<TcpListener>),
        inbox: Inbox,
    ) -> Worker {
        let c = &shared.config;
        // The generation first: a reload in between is then taken on the first iteration.
        let live_generation = shared.live.generation();
        let live = shared.live.get();
        let tick_ms = timers::tick_ms(c, &live);
        let bounds = Bounds { max_events: c.outbox_max_events, max_bytes: c.outbox_max_bytes };
        let write_delay = Duration::from_millis(c.write_delay_ms);
        let history = History::new(
            HistoryLimits {
                max_events: c.history_max_events,
                max_bytes: c.history_max_bytes,
                max_age: Duration::from_millis(c.history_max_age_ms),
                max_topics: c.history_max_topics,
                max_total_bytes: c.history_max_total_bytes,
            },
            shared.hub.first_id().saturating_sub(1),
        )
        .shared_by(shared.hub.loops());
        let mut history = history;
        // With a bus, a starting node's history holds the bus's newest events.
        for event in shared.bus.iter().flat_map(|bus| bus.warm_events()) {
            history.record(&event);
        }
        Worker {
            index,
            shared,
            poll,
            listener: Some(listeners.0),
            admin_listener: listeners.1,
            inbox,
            conns: Slab::new(),
            topics: TopicIndex::new(),
            history,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            dirty: FlushQueue::default(),
            parked: Vec::new(),
            bus_waiting: Vec::new(),
            woken: false,
            bus_retry_at_ms: 0,
            park_retry_at_ms: 0,
            again: Vec::new(),
            streams: 0,
            accept_pending: true,
            admin_accept_pending: true,
            accept_paused_until_ms: 0,
            spare: accept::open_spare(),
            at_capacity: accept::at_capacity(),
            drain_more: false,
            write_behind: 0,
            pace: pace::Pace::new(Instant::now()),
            frames_written: 0,
            write_delay,
            drain_deadline_ms: None,
            overloaded: false,
            health_waiting: Vec::new(),
            delivery_lag: histogram::Local::default(),
            iteration: histogram::Local::default(),
            max_iteration_us: 0,
            epoch: Instant::now(),
            now_ms: 0,
            next_tick_ms: tick_ms,
            tick_ms,
            bounds,
            pass_bounds: delivery::pass_bounds(bounds),
            live,
            live_generation,
            resume_tokens: 0,
        }
    }

    fn stats(&self) -> &LoopStats {
        &self.shared.stats[self.index]
    }

    /// Runs until stopped, or until a drain has closed every connection (or timed out).
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while !self.shared.stop.load(Ordering::Acquire) {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("loop {}: poll failed: {e}", self.index);
                    break;
                }
            }
            let started = Instant::now();
            self.now_ms = started.saturating_duration_since(self.epoch).as_millis() as u64;
            if self.shared.live.generation() != self.live_generation {
                self.take_live();
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_pending = true,
                    ADMIN_LISTENER => self.admin_accept_pending = true,
                    WAKER => self.woken = true,
                    Token(key) => {
                        if event.is_writable() {
                            self.on_writable(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key);
                        }
                    }
                }
            }
            if self.now_ms >= self.accept_paused_until_ms {
                if self.accept_pending {
                    self.accept(accept::Which::Public);
                }
                if self.admin_accept_pending {
                    self.accept(accept::Which::Admin);
                }
            }
            self.resume_reads();
            self.retry_parked();
            self.retry_bus_waiting();
            if !self.health_waiting.is_empty() {
                self.check_health();
            }
            let overloaded = self.shared.overload.load(Ordering::Acquire);
            if overloaded != self.overloaded {
                self.overloaded = overloaded;
                self.notify_overload(overloaded);
            }
            self.drain_hub();
            self.flush_dirty();
            if self.shared.draining.load(Ordering::Acquire) && self.drain_step() {
                break;
            }
            if self.now_ms >= self.next_tick_ms {
                self.tick();
                self.next_tick_ms = self.now_ms + self.tick_ms;
            }
            let took = started.elapsed();
            self.iteration.record(took);
            self.max_iteration_us = self.max_iteration_us.max(took.as_micros() as u64);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, CloseReason::Shutdown);
        }
        log::debug!("loop {} stopped", self.index);
    }

    fn poll_timeout(&self) -> Duration {
        let accepting = self.now_ms >= self.accept_paused_until_ms;
        // Parked publishes whose wait a loop ended (or that found room when parking).
        let room_freed = !self.parked.is_empty() && !self.shared.hub.room_awaited(self.index);
        let busy = (accepting && (self.accept_pending || self.admin_accept_pending))
            || !self.again.is_empty()
            || (!self.dirty.is_empty() && self.dirty.only_delayed_until().is_none())
            || self.drain_more
            || room_freed;
        if busy {
            return Duration::ZERO;
        }
        let mut until_ms = self.next_tick_ms;
        if self.accept_pending || self.admin_accept_pending {
            until_ms = until_ms.min(self.accept_paused_until_ms);
        }
        if let Some(deadline) = self.drain_deadline_ms {
            until_ms = until_ms.min(deadline);
        }
        let mut timeout = Duration::from_millis(until_ms.saturating_sub(self.now_ms));
        if !self.parked.is_empty() || !self.bus_waiting.is_empty() {
            // Woken when a loop frees room; the fallback bounds a missed wake-up.
            timeout = timeout.min(crate::room::ROOM_WAIT_FALLBACK);
        }
        if !self.health_waiting.is_empty() {
            timeout = timeout.min(HEALTH_RETRY);
        }
        if let Some(due) = self.dirty.only_delayed_until() {
            // Delayed writes (invariant 10 of [`delivery`]): sleep until the first is due.
            timeout = timeout.min(due.saturating_duration_since(Instant::now()));
        }
        timeout
    }

    fn on_writable(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.writable = true;
            if !conn.outbox.is_empty() {
                self.dirty.push_stream(key, conn);
            }
        }
    }

    fn on_readable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.phase {
            Phase::Request(_) => self.on_request_readable(key),
            Phase::Stream(_) | Phase::Lingering { .. } => self.discard_input(key),
        }
    }

    /// Streams and lingering connections: read and drop bytes until `WouldBlock`, so EOF and
    /// resets are seen. Input never reaches a stream (invariant 2 of [`crate::conn`]).
    fn discard_input(&mut self, key: usize) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else { return };
            match read_once(&mut conn.sock, &mut self.scratch) {
                ReadResult::Data(_) => {}
                ReadResult::WouldBlock => return,
                ReadResult::Eof => return self.close(key, CloseReason::Client),
                ReadResult::Error(e) => {
                    log::debug!("loop {} conn {key}: read: {e}", self.index);
                    return self.close(key, CloseReason::Error);
                }
            }
        }
        self.again.push(key);
    }

    fn resume_reads(&mut self) {
        let again = std::mem::take(&mut self.again);
        for key in again {
            self.on_readable(key);
        }
    }

    /// Shuts the write side once the response is out and drains input until EOF or
    /// [`LINGER_MS`] (invariant 3 of [`crate::conn`]).
    fn begin_linger(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if let Err(e) = conn.sock.shutdown(std::net::Shutdown::Write) {
            log::debug!("loop {} conn {key}: shutdown: {e}", self.index);
            return self.close(key, CloseReason::Error);
        }
        let old = std::mem::replace(&mut conn.phase, Phase::Lingering { until_ms: self.now_ms + LINGER_MS });
        let admin = conn.admin;
        self.leave_stream(old, admin);
        self.discard_input(key);
    }

    /// A stream phase ends (close, or lingering after a drain notice): leaves its topics,
    /// hands back its permit and (public streams: `admin` is false) its capacity slot,
    /// uncounts it. Exactly once per stream, because the phase is moved out. A connection that
    /// waited for the bus's replay holds them already and hands them back the same way.
    fn leave_stream(&mut self, phase: Phase, admin: bool) {
        if let Phase::Request(mut req) = phase {
            if let Some(wait) = req.resume.take() {
                if let Some(permit) = wait.extra.and_then(|x| x.permit) {
                    self.shared.admission.release(permit);
                }
                self.release_stream_slot(wait.holds_slot);
            }
            return;
        }
        if let Phase::Stream(mut stream) = phase {
            for &m in stream.memberships.iter() {
                self.topics.unsubscribe(m);
            }
            if let Some(permit) = stream.extra.take().and_then(|x| x.permit) {
                self.shared.admission.release(permit);
            }
            self.release_stream_slot(!admin);
            self.streams -= 1;
        }
    }

    /// Removes a connection: topic memberships, poll registration, slab entry, in that order.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(mut conn) = self.conns.try_remove(key) else { return };
        let phase = std::mem::replace(&mut conn.phase, Phase::Lingering { until_ms: 0 });
        if let Phase::Request(req) = &phase {
            if let Some(p) = &req.pending {
                // A parked publish that will never be sequenced (throttle invariant 6).
                // Events handed to the bus are claimed there (`p.ticket`).
                let handed = p.ticket.as_ref().map_or(0, |t| t.1);
                self.shared.hub.throttle.abandon(&p.events[(p.ids.len() + handed).min(p.events.len())..]);
            }
        }
        self.leave_stream(phase, conn.admin);
        self.health_waiting.retain(|(k, _)| *k != key);
        if let Err(e) = self.poll.registry().deregister(&mut conn.sock) {
            log::debug!("loop {} conn {key}: deregister: {e}", self.index);
        }
        match reason {
            CloseReason::Stalled => log::info!(
                "loop {} conn {key} peer {}: closed, stalled with {} bytes queued",
                self.index,
                conn.peer,
                conn.outbox.queued_bytes()
            ),
            _ => {
                log::debug!("loop {} conn {key} peer {}: closed ({})", self.index, conn.peer, reason.label())
            }
        }
        let counter = if conn.admin { &self.shared.admin_connections } else { &self.shared.connections };
        counter.fetch_sub(1, Ordering::AcqRel);
        self.stats().closed(reason);
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let stats = self.stats();
        LoopStats::set(&stats.connections, self.conns.len());
        LoopStats::set(&stats.streams, self.streams);
        LoopStats::set(&stats.topics, self.topics.topic_count());
        LoopStats::set(&stats.memberships, self.topics.membership_count());
        LoopStats::set(&stats.parked_publishers, self.parked.len() + self.bus_waiting.len());
    }
}

/// Seconds since the Unix epoch (subscribe tokens expire against it).
pub(crate) use crate::sys::unix_now;
