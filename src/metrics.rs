//! Per-loop counters and gauges, summed when someone asks ([`crate::Handle::stats`]).
//!
//! Invariants:
//! 1. Each loop writes only its own [`LoopStats`] (cache-padded, so loops never share a
//!    line); readers sum all loops. No atomic is shared between loops on the delivery path.
//! 2. Counters are bumped once per batch (per event fanned out, per flush), never once per
//!    delivered frame.
//! 3. Gauges are written by the owning loop: connection counts at once, outbox totals on
//!    every timer tick (a walk the loop makes anyway for heartbeats and stalls).

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection was closed. Feeds the log line and the counters in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed (EOF) or asked for `Connection: close`.
    Client,
    /// Socket error (reset, broken pipe, ...).
    Error,
    /// Queued frames and no byte accepted for `--stall-timeout-ms`.
    Stalled,
    /// The request was refused with an error status.
    Rejected,
    /// The server is shutting down.
    Shutdown,
    /// A request took longer than `--request-timeout-ms`, or a keep-alive connection sat
    /// idle past `--keepalive-timeout-ms`.
    Timeout,
}

impl CloseReason {
    /// All reasons, in counter order.
    pub const ALL: [CloseReason; 6] = [
        CloseReason::Client,
        CloseReason::Error,
        CloseReason::Stalled,
        CloseReason::Rejected,
        CloseReason::Shutdown,
        CloseReason::Timeout,
    ];

    /// Stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Error => "error",
            CloseReason::Stalled => "stalled",
            CloseReason::Rejected => "rejected",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Timeout => "timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection or request was refused before it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Past `--max-connections` (503).
    Capacity,
    /// `accept` failed with EMFILE/ENFILE; answered from the spare descriptor (503).
    Emfile,
    /// `--max-streams-per-ip` (429).
    IpStreams,
    /// `--connect-rate-per-ip` (429).
    IpRate,
    /// `--max-streams-per-user` (429).
    UserStreams,
    /// `--publish-rate-per-topic` (429).
    TopicRate,
    /// Missing or invalid token (401).
    Unauthorized,
    /// Not allowed (403).
    Forbidden,
    /// The node is draining for shutdown (503).
    Draining,
    /// A publish waited `--publish-wait-timeout-ms` for hub room and was answered 503.
    PublishTimeout,
    /// A browser publish (`Origin` header) from an origin `--cors-origin` does not allow (403).
    Origin,
    /// A stream request past `--max-connections` streams (503; short requests still served).
    StreamCapacity,
    /// The bus (`--bus`) did not take a publish (503).
    BusUnavailable,
}

impl RejectReason {
    /// All reasons, in counter order.
    pub const ALL: [RejectReason; 13] = [
        RejectReason::Capacity,
        RejectReason::Emfile,
        RejectReason::IpStreams,
        RejectReason::IpRate,
        RejectReason::UserStreams,
        RejectReason::TopicRate,
        RejectReason::Unauthorized,
        RejectReason::Forbidden,
        RejectReason::Draining,
        RejectReason::PublishTimeout,
        RejectReason::Origin,
        RejectReason::StreamCapacity,
        RejectReason::BusUnavailable,
    ];

    /// Stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Capacity => "capacity",
            RejectReason::Emfile => "emfile",
            RejectReason::IpStreams => "ip_streams",
            RejectReason::IpRate => "ip_rate",
            RejectReason::UserStreams => "user_streams",
            RejectReason::TopicRate => "topic_rate",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::Forbidden => "forbidden",
            RejectReason::Draining => "draining",
            RejectReason::PublishTimeout => "publish_timeout",
            RejectReason::Origin => "origin",
            RejectReason::StreamCapacity => "stream_capacity",
            RejectReason::BusUnavailable => "bus_unavailable",
        }
    }

    /// Index into [`Stats::rejected`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One loop's counters (monotonic) and gauges (current value).
#[derive(Debug, Default)]
pub struct LoopStats {
    // gauges
    pub(crate) connections: AtomicU64,
    pub(crate) streams: AtomicU64,
    pub(crate) topics: AtomicU64,
    pub(crate) memberships: AtomicU64,
    pub(crate) outbox_queued_bytes: AtomicU64,
    pub(crate) outbox_peak_bytes: AtomicU64,
    pub(crate) write_blocked: AtomicU64,
    pub(crate) parked_publishers: AtomicU64,
    pub(crate) history_topics: AtomicU64,
    pub(crate) history_events: AtomicU64,
    pub(crate) history_bytes: AtomicU64,
    // counters
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: [AtomicU64; RejectReason::ALL.len()],
    pub(crate) closed: [AtomicU64; 6],
    pub(crate) requests_rejected: AtomicU64,
    pub(crate) events_in: AtomicU64,
    pub(crate) deliveries: AtomicU64,
    pub(crate) evicted: [AtomicU64; 3],
    pub(crate) conflated: AtomicU64,
    pub(crate) gaps_reported: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) frames_written: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) tokens_expired: AtomicU64,
    pub(crate) publish_waits: AtomicU64,
    pub(crate) bus_resumes: AtomicU64,
    pub(crate) publish_retries: AtomicU64,
    pub(crate) intake_pauses: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) poll_truncated: AtomicU64,
    pub(crate) poll_skipped: AtomicU64,
    /// Longest iteration since the previous timer tick, in microseconds.
    pub(crate) loop_lag_us: AtomicU64,
    pub(crate) iteration: crate::histogram::Cells,
    pub(crate) delivery_lag: crate::histogram::Cells,
}

impl LoopStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn set(gauge: &AtomicU64, n: usize) {
        gauge.store(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        Self::add(&self.closed[reason.index()], 1);
    }

    pub(crate) fn rejected(&self, reason: RejectReason) {
        Self::add(&self.rejected[reason.index()], 1);
    }
}

/// A point-in-time sum over all loops.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Open connections of any kind.
    pub connections: u64,
    /// Open event streams.
    pub streams: u64,
    /// Distinct (loop, topic) index entries with at least one subscriber.
    pub topics: u64,
    /// (stream, topic) subscriptions.
    pub memberships: u64,
    /// Unwritten bytes in all outboxes (as of each loop's last timer tick).
    pub outbox_queued_bytes: u64,
    /// The most bytes any single outbox has held since start.
    pub outbox_peak_bytes: u64,
    /// Connections waiting for the socket to become writable.
    pub write_blocked: u64,
    /// Publishing connections paused because a hub queue is full.
    pub parked_publishers: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections or requests refused, by [`RejectReason::ALL`] order.
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Most connections this node holds (`--max-connections` or the fd limit).
    pub capacity: u64,
    /// Connections closed, by [`CloseReason::ALL`] order.
    pub closed: [u64; 6],
    /// Requests answered with an error status.
    pub requests_rejected: u64,
    /// Events taken from the hub, summed over loops (each event counts once per loop).
    pub events_in: u64,
    /// Frames queued to streams.
    pub deliveries: u64,
    /// Frames dropped from full outboxes (all classes).
    pub frames_evicted: u64,
    /// Frames dropped from full outboxes, by [`crate::publish::Class::index`].
    pub evicted_by_class: [u64; 3],
    /// Queued `latest` values replaced by newer ones in an outbox.
    pub conflated: u64,
    /// `event: gap` notices sent (outbox evictions and resumes from beyond history).
    pub gaps_reported: u64,
    /// Events sequenced by the hub, by class.
    pub published_by_class: [u64; 3],
    /// `latest` values the publish-side throttle replaced before their window ended.
    pub throttled: u64,
    /// Topics in history (largest over loops; every loop holds the same history).
    pub history_topics: u64,
    /// Events in history (largest over loops).
    pub history_events: u64,
    /// Frame bytes referenced by history (largest over loops; frames are shared).
    pub history_bytes: u64,
    /// Bytes accepted by the kernel.
    pub bytes_written: u64,
    /// Frames completely written (responses, preludes, events, heartbeats).
    pub frames_written: u64,
    /// Vectored write calls that moved bytes: `frames_written / writes` is the batching.
    pub writes: u64,
    /// Heartbeat frames queued.
    pub heartbeats: u64,
    /// Streams closed because their subscribe token expired (`event: token-expired`).
    pub tokens_expired: u64,
    /// Times a publisher had to wait for room in the hub queues.
    pub publish_waits: u64,
    /// Resumes (`Last-Event-ID` or polling) this node asked of the bus.
    pub bus_resumes: u64,
    /// Retries of parked publishes (after a wake-up that room was freed, or the fallback).
    pub publish_retries: u64,
    /// Times a loop stopped taking hub events until it had written a pass, because it was
    /// behind on writing (a writable stream's outbox without room for two more frames).
    pub intake_pauses: u64,
    /// Droppable events not queued because the node was in overload mode.
    pub shed: u64,
    /// Polling answers cut short by `--poll-max-bytes` (the client continues at `X-Next-After`).
    pub poll_truncated: u64,
    /// Events left out of polling answers because their JSON alone is over the bound
    /// (reported to the client as a gap).
    pub poll_skipped: u64,
    /// Longest recent loop iteration over all loops, in seconds.
    pub loop_lag_seconds: f64,
    /// Whether the node is in overload mode.
    pub overloaded: bool,
    /// Events waiting in each loop's hub channel.
    pub hub_queue_lengths: Vec<usize>,
    /// How long the oldest of them has waited, per loop (`sse_loop_behind_seconds`).
    pub hub_lags: Vec<std::time::Duration>,
    /// Open streams on each loop (how evenly the kernel spreads connections).
    pub loop_streams: Vec<u64>,
}

impl Stats {
    /// Connections closed for `reason`.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }

    /// Connections or requests refused for `reason`.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }

    pub(crate) fn sum<'a>(
        loops: impl Iterator<Item = &'a LoopStats>,
        hub_queue_lengths: Vec<usize>,
    ) -> Stats {
        let mut s = Stats { hub_queue_lengths, ..Stats::default() };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for l in loops {
            s.connections += get(&l.connections);
            s.streams += get(&l.streams);
            s.loop_streams.push(get(&l.streams));
            s.topics += get(&l.topics);
            s.memberships += get(&l.memberships);
            s.outbox_queued_bytes += get(&l.outbox_queued_bytes);
            s.outbox_peak_bytes = s.outbox_peak_bytes.max(get(&l.outbox_peak_bytes));
            s.write_blocked += get(&l.write_blocked);
            s.parked_publishers += get(&l.parked_publishers);
            s.accepted += get(&l.accepted);
            for (sum, c) in s.rejected.iter_mut().zip(&l.rejected) {
                *sum += get(c);
            }
            for (sum, c) in s.closed.iter_mut().zip(&l.closed) {
                *sum += get(c);
            }
            s.requests_rejected += get(&l.requests_rejected);
            s.events_in += get(&l.events_in);
            s.deliveries += get(&l.deliveries);
            for (sum, c) in s.evicted_by_class.iter_mut().zip(&l.evicted) {
                *sum += get(c);
            }
            s.conflated += get(&l.conflated);
            s.gaps_reported += get(&l.gaps_reported);
            s.history_topics = s.history_topics.max(get(&l.history_topics));
            s.history_events = s.history_events.max(get(&l.history_events));
            s.history_bytes = s.history_bytes.max(get(&l.history_bytes));
            s.bytes_written += get(&l.bytes_written);
            s.frames_written += get(&l.frames_written);
            s.writes += get(&l.writes);
            s.heartbeats += get(&l.heartbeats);
            s.tokens_expired += get(&l.tokens_expired);
            s.publish_waits += get(&l.publish_waits);
            s.bus_resumes += get(&l.bus_resumes);
            s.publish_retries += get(&l.publish_retries);
            s.intake_pauses += get(&l.intake_pauses);
            s.shed += get(&l.shed);
            s.poll_truncated += get(&l.poll_truncated);
            s.poll_skipped += get(&l.poll_skipped);
            s.loop_lag_seconds = s.loop_lag_seconds.max(get(&l.loop_lag_us) as f64 / 1e6);
        }
        s.frames_evicted = s.evicted_by_class.iter().sum();
        s
    }
}
