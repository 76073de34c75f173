//! Fan-out and write: hub inbox → outboxes → one `writev` per touched connection.
//!
//! Invariants:
//! 1. Events are applied in channel order (= id order), so every stream's frames are in
//!    increasing id order.
//! 2. Every event drained is queued before its connections are written, so a connection with
//!    several new frames gets them in one vectored write; at light load the flush happens in
//!    the same iteration as the event arrives (no holding back).
//! 5. Connections wait in one FIFO [`FlushQueue`], each at most once, and an iteration writes
//!    at most [`FLUSH_BUDGET`] of them. A pass over many streams (10,000 `writev`s is tens of
//!    milliseconds of kernel time) is thus cut into slices with polls, publishes and hub
//!    drains in between: an event published mid-pass joins the outboxes still waiting in
//!    this pass instead of waiting for the pass to end, so each stream is written about once
//!    per pass with everything queued for it, and no event waits longer than about one pass.
//!    Answers to requests go to the front: a publisher's `202` never waits behind a pass.
//! 6. Falling behind on writing pauses the intake, not the readers: when a push leaves the
//!    outbox of a stream that is writable *and* was emptied by its last write
//!    (`Conn::kept_up`) without room for two more frames like it under the pass's bounds
//!    (`Outbox::nearly_full`, invariant 11), the loop cannot write as fast as events arrive. A
//!    client that is slow is not counted: its socket blocked with frames left, so it stays
//!    out of this rule until a write empties its outbox again. A new stream starts outside
//!    it too, until its first write empties its outbox: a `Last-Event-ID` replay that fills
//!    half an outbox is the client's backlog, and a reconnect storm of replays must not
//!    stop every publisher. The loop then takes no more
//!    events from the hub until it has written every connection queued at that moment; the
//!    hub channel fills, its events age past `--max-delivery-lag-ms`, and publishers wait
//!    ([`crate::hub`] parks them), so readers the loop is merely late for lose nothing to
//!    eviction. Streams whose clients do not read still
//!    lose their oldest frames, as before.
//! 3. Every event is recorded in the loop's history before it is fanned out, so a stream
//!    that subscribes later can replay it.
//! 7. A loss the bus reader reports ([`Lost`]) reaches each affected stream as one gap notice
//!    queued after its older frames, in the event order, and the history forgets the range.
//! 8. How late the loop's writing is (the event that queued the stream waiting longest was
//!    accepted how long ago) counts in the loop's lag with the hub channel's wait
//!    ([`crate::hub`] invariant 6): a loop whose outboxes wait past `--max-delivery-lag-ms`
//!    for their pass slows publishers even while it keeps its channel empty.
//! 9. While the writing already queued is expected to take more than a quarter of
//!    `--max-delivery-lag-ms` ([`super::pace`]), the loop takes no more events: they wait in
//!    the hub channel, whose drain rate then measures what the loop can really write and
//!    whose admission looks ahead with it ([`crate::hub`] invariant 6). Taken into outboxes
//!    instead, they would queue seconds of writing that admission never sees.
//! 10. With `--write-delay-ms`, a stream that an event queues waits up to that long before its
//!     write, so the events after it leave in the same `writev`: fewer, fuller writes for a
//!     bounded latency. Delayed streams wait in one FIFO in the order they were queued, each
//!     due at its queueing time plus the delay, and the loop sleeps until the front is due:
//!     no timer per connection or per event, one clock read per drain. Only deliveries are
//!     delayed: answers, heartbeats, notices and a socket turning writable are written in
//!     the next pass, a stream already queued by one of them takes its new events along,
//!     and a draining loop, or one whose intake pauses (invariant 6), releases every
//!     delayed stream at once.
//! 11. `--outbox-max-bytes`/`--outbox-max-events` bound what a stream keeps for a client that
//!     has fallen behind, not how far the loop's pass may run ahead of a stream whose client
//!     keeps up. A stream that is writable and emptied by its last write queues under the
//!     larger [`PASS_BOUNDS`]: what it waits for is the loop, and the pace gate bounds the
//!     loop's queued writing in time (invariant 9; before the loop has measured its write
//!     rate, to about one drain's deliveries), so each `writev` carries everything that
//!     arrived during a pass at any outbox size. Without a lag budget there is no pace gate,
//!     and every stream queues under the configured bounds. When a stream's write blocks with
//!     frames left, its outbox is trimmed to the configured bounds at once, by class with a
//!     gap notice (as a push would evict), so a client that stops reading keeps no more than
//!     its bounds once its socket is full.
//! 4. A connection is flushed only while `writable`; after `WouldBlock` its frames wait for the
//!    WRITABLE edge, and the drop-oldest outbox bounds what waits.

use crate::conn::{Conn, Phase, RESPONSE_BACKLOG_BYTES};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::hub::{Event, LoopMsg, Lost};
use crate::metrics::{CloseReason, LoopStats};
use crate::outbox::{Bounds, PushOutcome};
use crate::publish::Class;

use super::{Worker, DRAIN_BUDGET};

/// The bounds a kept-up stream's outbox queues under (invariant 11): the default outbox's.
pub(super) const PASS_BOUNDS: Bounds = Bounds {
    max_events: crate::config::DEFAULT_OUTBOX_MAX_EVENTS,
    max_bytes: crate::config::DEFAULT_OUTBOX_MAX_BYTES,
};

/// The bounds for streams whose clients keep up: the larger of `client`'s and [`PASS_BOUNDS`].
pub(super) fn pass_bounds(client: Bounds) -> Bounds {
    Bounds {
        max_events: client.max_events.max(PASS_BOUNDS.max_events),
        max_bytes: client.max_bytes.max(PASS_BOUNDS.max_bytes),
    }
}

/// Connections written per iteration (≈ 2 ms of loopback `writev`s at 100 B a frame).
pub(super) const FLUSH_BUDGET: usize = 256;
/// Deliveries queued per iteration (≈ 2 ms at ~25 ns each): with 10,000 subscribers a topic
/// drains about 7 events per iteration, so a backlog of events cannot hold up the writes.
pub(super) const FANOUT_BUDGET: usize = 65_536;

/// Connections with output waiting to be written: answers, then streams, each in order.
///
/// A connection is queued at most once (`Conn::dirty` says it is queued); a key may outlive
/// its connection in the queue, and then flushing it finds nothing or a newer connection's
/// frames, both harmless. Answers have their own queue, written whole every iteration (they
/// are bounded by the requests read in it), so a stream of requests can neither wait behind
/// a pass over the streams nor take the streams' budget.
#[derive(Default)]
pub(super) struct FlushQueue {
    answers: VecDeque<usize>,
    /// Streams in the order they were queued, each with since when it waits: when the event
    /// that queued it was accepted, or when it was queued (heartbeats, notices, a socket that
    /// became writable). The front's is how late the loop's writing is (invariant 8).
    streams: VecDeque<Waiting>,
    /// Streams a delivery queued under `--write-delay-ms`, in the order they were queued, each
    /// due at `since`'s queueing plus the delay (invariant 10); moved to `streams` when due.
    delayed: VecDeque<(Waiting, Instant)>,
}

/// A stream waiting in the [`FlushQueue`].
struct Waiting {
    key: usize,
    /// When the event that queued it was accepted (or when it was queued, for anything else).
    since: Instant,
}

impl FlushQueue {
    /// Queues a stream behind everything already waiting (heartbeats, notices).
    pub(super) fn push_stream(&mut self, key: usize, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            self.streams.push_back(Waiting { key, since: Instant::now() });
        }
    }

    /// Queues a stream for an event accepted at `accepted_at` (fan-out), to be written
    /// at `due` or, without a write delay (`None`), in this pass (invariant 10).
    fn push_delivery(&mut self, key: usize, conn: &mut Conn, accepted_at: Instant, due: Option<Instant>) {
        if !conn.dirty {
            conn.dirty = true;
            let waiting = Waiting { key, since: accepted_at };
            match due {
                Some(due) => self.delayed.push_back((waiting, due)),
                None => self.streams.push_back(waiting),
            }
        }
    }

    /// Moves the delayed streams due by now (all of them with `all`) behind the others; reads
    /// the clock only when some stream is delayed.
    fn release_due(&mut self, all: bool) {
        if self.delayed.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some((_, due)) = self.delayed.front() {
            if !all && *due > now {
                break;
            }
            if let Some((waiting, _)) = self.delayed.pop_front() {
                self.streams.push_back(waiting);
            }
        }
    }

    /// When the first delayed stream is due, if nothing else waits to be written.
    pub(super) fn only_delayed_until(&self) -> Option<Instant> {
        if self.answers.is_empty() && self.streams.is_empty() {
            self.delayed.front().map(|&(_, due)| due)
        } else {
            None
        }
    }

    /// Since when the longest-waiting stream waits, delayed or not.
    fn oldest_delivery(&self) -> Option<Instant> {
        let queued = self.streams.front().map(|w| w.since);
        let delayed = self.delayed.front().map(|(w, _)| w.since);
        match (queued, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Queues an answer to a request (or a new stream's head) ahead of the streams.
    pub(super) fn push_answer(&mut self, key: usize, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            self.answers.push_back(key);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.answers.is_empty() && self.streams.is_empty() && self.delayed.is_empty()
    }

    /// Streams waiting (what a pause of the intake waits for).
    fn streams_len(&self) -> usize {
        self.streams.len()
    }
}

impl Worker {
    /// Takes up to [`DRAIN_BUDGET`] events (or [`FANOUT_BUDGET`] deliveries) from the hub,
    /// records them in history and queues them to subscribers; takes nothing while the loop
    /// is behind on writing (invariant 6).
    pub(super) fn drain_hub(&mut self) {
        if self.write_behind > 0 {
            return;
        }
        let was_closed = self.pace.is_closed();
        let budget = self.shared.hub.lag_budget();
        if self.pace.full(budget, Instant::now()) {
            // Invariant 9: come back next iteration (the flush queue keeps the loop busy).
            // Each closing counts as an intake pause, as invariant 6's do.
            LoopStats::add(&self.stats().intake_pauses, u64::from(!was_closed));
            self.drain_more = true;
            return;
        }
        self.inbox.arm();
        let mut drained = 0;
        let mut tally = FanOut::default();
        let mut newest_taken = None;
        // Invariant 10: one clock read per drain, not one per delivery.
        let due = (!self.write_delay.is_zero()).then(|| Instant::now() + self.write_delay);
        // Invariant 11: the pass's bounds need the pace gate that bounds the pass in time.
        let pass = if budget.is_zero() { self.bounds } else { self.pass_bounds };
        while drained < DRAIN_BUDGET && tally.pushes < FANOUT_BUDGET && !tally.behind {
            let Ok(msg) = self.inbox.rx.try_recv() else { break };
            drained += 1;
            match msg {
                LoopMsg::Event(event) => {
                    newest_taken = Some(event.accepted_at);
                    self.history.record(&event);
                    self.fan_out(&event, &mut tally, due, pass);
                }
                LoopMsg::Ping(probe) => probe.answer(self.index),
                LoopMsg::Block(d) => std::thread::sleep(d),
                LoopMsg::Resumed(r) => self.on_resumed(r),
                LoopMsg::Lost(lost) => self.on_lost(&lost),
            }
        }
        self.inbox.taken_up_to(newest_taken);
        self.pace.queued(drained, tally.for_pass);
        if drained > 0 {
            // Wake the publishers parked on a full channel (any loop's, and embedded ones).
            self.shared.hub.room_freed();
        }
        self.drain_more = drained == DRAIN_BUDGET || tally.pushes >= FANOUT_BUDGET;
        if tally.behind {
            // The pause waits for every stream queued now, delayed ones included (invariant
            // 10): a loop that is behind has no writes to hold back, and a delayed stream left
            // out would take pushes past its bound while the intake went on.
            self.dirty.release_due(true);
            self.write_behind = self.dirty.streams_len().max(1);
        }
        let stats = self.stats();
        LoopStats::add(&stats.events_in, drained as u64);
        LoopStats::add(&stats.intake_pauses, u64::from(tally.behind));
        tally.record(stats);
    }

    /// Tells every stream that may have missed the lost range (the topic's subscribers, or
    /// every stream) of it with one `event: gap` after what it has queued, and makes the
    /// history vouch for nothing up to it (invariant 7). A stream that resumed past the
    /// range is not affected.
    fn on_lost(&mut self, lost: &Lost) {
        self.history.forget_through(lost.topic.as_ref(), lost.to);
        let mut told = 0;
        let mut tell = |key: usize, conn: &mut Conn, dirty: &mut FlushQueue| {
            if matches!(conn.phase, Phase::Stream(_)) && conn.resume_after < lost.to {
                conn.outbox.push_lost(lost.from.max(conn.resume_after + 1), lost.to);
                dirty.push_stream(key, conn);
                told += 1;
            }
        };
        match &lost.topic {
            Some(topic) => {
                for key in self.topics.subscribers(topic) {
                    if let Some(conn) = self.conns.get_mut(key) {
                        tell(key, conn, &mut self.dirty);
                    }
                }
            }
            None => {
                for (key, conn) in self.conns.iter_mut() {
                    tell(key, conn, &mut self.dirty);
                }
            }
        }
        LoopStats::add(&self.stats().gaps_reported, told);
        log::debug!(
            "loop {}: ids {}..={} of {} lost on the bus; {told} streams told",
            self.index,
            lost.from,
            lost.to,
            lost.topic.as_deref().unwrap_or("every topic")
        );
    }

    /// Queues one event to every local subscriber of its topic.
    /// `pass`: the bounds of streams whose clients keep up (invariant 11).
    fn fan_out(&mut self, event: &Arc<Event>, tally: &mut FanOut, due: Option<Instant>, pass: Bounds) {
        if self.overloaded && event.class == Class::Droppable {
            tally.shed += self.topics.subscribers(&event.topic).count() as u64;
            return;
        }
        for key in self.topics.subscribers(&event.topic) {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            if event.id <= conn.resume_after {
                continue;
            }
            // Invariant 11: a stream whose client keeps up queues under the pass's bounds.
            let kept_up = conn.writable && conn.kept_up;
            let bounds = if kept_up { pass } else { self.bounds };
            let outcome = conn.outbox.push_event(event.clone(), bounds);
            tally.add(&outcome, event.class, conn.outbox.queued_bytes());
            tally.for_pass += u64::from(kept_up && !outcome.rejected);
            tally.behind |= kept_up && conn.outbox.nearly_full(pass, event.frame.len());
            conn.last_queued_ms = self.now_ms;
            self.dirty.push_delivery(key, conn, event.accepted_at, due);
        }
    }

    /// Writes every queued answer and the next [`FLUSH_BUDGET`] queued streams, once each
    /// (invariant 5); the intake resumes once the streams that a pause waits for are written
    /// (invariant 6), and the next iteration drains the hub (no wake-up is armed meanwhile).
    pub(super) fn flush_dirty(&mut self) {
        for _ in 0..self.dirty.answers.len() {
            let Some(key) = self.dirty.answers.pop_front() else { break };
            self.flush(key);
        }
        let draining = self.drain_deadline_ms.is_some();
        self.dirty.release_due(draining);
        let paused = self.write_behind > 0;
        let written_before = self.frames_written;
        for _ in 0..FLUSH_BUDGET {
            let Some(Waiting { key, .. }) = self.dirty.streams.pop_front() else { break };
            self.flush(key);
            self.write_behind = self.write_behind.saturating_sub(1);
        }
        let waiting = !self.dirty.streams.is_empty();
        self.pace.wrote(Instant::now(), self.frames_written - written_before, waiting);
        self.inbox.pace(self.pace.event_rate(), self.pace.queued_time());
        if self.dirty.streams.is_empty() {
            self.write_behind = 0;
        }
        self.inbox.writing_since(self.dirty.oldest_delivery());
        if paused && self.write_behind == 0 {
            self.drain_more = true;
        }
    }

    /// Writes as much of one outbox as the socket takes; handles close-after-response.
    pub(super) fn flush(&mut self, key: usize) {
        let now = self.now_ms;
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.dirty = false;
        if conn.writable && !conn.outbox.is_empty() {
            let at = Instant::now();
            let lag = &mut self.delivery_lag;
            let delivered = |e: &Event| lag.record(at.saturating_duration_since(e.accepted_at));
            let bounds = if conn.kept_up { self.pass_bounds } else { self.bounds };
            match conn.outbox.flush_with(&mut conn.sock, bounds, delivered) {
                Ok(flushed) => {
                    let stats = &self.shared.stats[self.index];
                    LoopStats::add(&stats.bytes_written, flushed.bytes as u64);
                    LoopStats::add(&stats.frames_written, flushed.frames as u64);
                    self.frames_written += flushed.frames as u64;
                    LoopStats::add(&stats.writes, flushed.writes as u64);
                    LoopStats::add(&stats.gaps_reported, flushed.gaps as u64);
                    let mut evicted = flushed.evicted;
                    if flushed.blocked {
                        conn.writable = false;
                        // Invariant 11: the client fell behind; it keeps what its own
                        // bounds allow (the pending gap is told at its next write).
                        let trimmed = conn.outbox.trim(self.bounds);
                        for (sum, n) in evicted.iter_mut().zip(trimmed.evicted) {
                            *sum += n;
                        }
                    }
                    for (counter, n) in stats.evicted.iter().zip(evicted) {
                        LoopStats::add(counter, u64::from(n));
                    }
                    conn.kept_up = conn.outbox.is_empty();
                    if conn.outbox.is_empty() {
                        conn.set_blocked_since_ms(None);
                    } else if flushed.bytes > 0 || conn.blocked_since_ms().is_none() {
                        conn.set_blocked_since_ms(Some(now));
                    }
                }
                Err(e) => {
                    log::debug!("loop {} conn {key} peer {}: write: {e}", self.index, conn.peer);
                    return self.close(key, CloseReason::Error);
                }
            }
        } else if !conn.outbox.is_empty() && conn.blocked_since_ms().is_none() {
            conn.set_blocked_since_ms(Some(now));
        }
        if let Phase::Request(req) = &mut conn.phase {
            if req.paused_for_output && conn.outbox.queued_bytes() <= RESPONSE_BACKLOG_BYTES / 2 {
                req.paused_for_output = false;
                self.again.push(key);
            }
        }
        if conn.close_after_flush && conn.outbox.is_empty() && !matches!(conn.phase, Phase::Lingering { .. })
        {
            self.begin_linger(key);
        }
    }
}

/// Counts of one drain, added to the loop's stats once per drain (not per delivery).
#[derive(Default)]
pub(super) struct FanOut {
    /// Outbox pushes, queued or not (the drain's work, for [`FANOUT_BUDGET`]).
    pushes: usize,
    queued: u64,
    shed: u64,
    evicted: [u64; 3],
    conflated: u64,
    peak: usize,
    /// A writable stream's outbox is without room for two more frames (invariant 6).
    behind: bool,
    /// Frames queued to streams the write pass will write ([`super::pace`]).
    for_pass: u64,
}

impl FanOut {
    pub(super) fn add(&mut self, outcome: &PushOutcome, class: Class, queued_bytes: usize) {
        self.pushes += 1;
        for (sum, n) in self.evicted.iter_mut().zip(outcome.evicted) {
            *sum += u64::from(n);
        }
        if outcome.rejected {
            self.evicted[class.index()] += 1;
        } else {
            self.queued += 1;
        }
        self.conflated += u64::from(outcome.conflated);
        self.peak = self.peak.max(queued_bytes);
    }

    pub(super) fn record(&self, stats: &LoopStats) {
        LoopStats::add(&stats.deliveries, self.queued);
        for (counter, &n) in stats.evicted.iter().zip(&self.evicted) {
            LoopStats::add(counter, n);
        }
        LoopStats::add(&stats.conflated, self.conflated);
        LoopStats::add(&stats.shed, self.shed);
        stats.outbox_peak_bytes.fetch_max(self.peak as u64, std::sync::atomic::Ordering::Relaxed);
    }
}
