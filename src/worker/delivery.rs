//! Fan-out and write: hub inbox → outboxes → one `writev` per touched connection.
//!
//! Invariants:
//! 1. Events are applied in channel order (= id order), so every stream's frames are in
//!    increasing id order.
//! 2. Within one iteration every event drained is queued before any socket is written, so a
//!    connection with several new frames gets them in one vectored write; at light load the
//!    flush happens in the same iteration as the event arrives (no holding back).
//! 3. Every event is recorded in the loop's history before it is fanned out, so a stream
//!    that subscribes later can replay it.
//! 4. A connection is flushed only while `writable`; after `WouldBlock` its frames wait for the
//!    WRITABLE edge, and the drop-oldest outbox bounds what waits.

use crate::conn::{Phase, RESPONSE_BACKLOG_BYTES};
use std::sync::Arc;
use std::time::Instant;

use crate::hub::{Event, LoopMsg};
use crate::metrics::{CloseReason, LoopStats};
use crate::outbox::PushOutcome;
use crate::publish::Class;

use super::{Worker, DRAIN_BUDGET};

impl Worker {
    /// Takes up to [`DRAIN_BUDGET`] events from the hub, records them in history and queues
    /// them to subscribers.
    pub(super) fn drain_hub(&mut self) {
        self.inbox.arm();
        let mut drained = 0;
        let mut tally = FanOut::default();
        while drained < DRAIN_BUDGET {
            let Ok(msg) = self.inbox.rx.try_recv() else { break };
            drained += 1;
            match msg {
                LoopMsg::Event(event) => {
                    self.history.record(&event);
                    self.fan_out(&event, &mut tally);
                }
                LoopMsg::Ping(probe) => probe.answer(self.index),
                LoopMsg::Block(d) => std::thread::sleep(d),
            }
        }
        self.drain_more = drained == DRAIN_BUDGET;
        let stats = self.stats();
        LoopStats::add(&stats.events_in, drained as u64);
        tally.record(stats);
    }

    /// Queues one event to every local subscriber of its topic.
    fn fan_out(&mut self, event: &Arc<Event>, tally: &mut FanOut) {
        if self.overloaded && event.class == Class::Droppable {
            tally.shed += self.topics.subscribers(&event.topic).count() as u64;
            return;
        }
        for key in self.topics.subscribers(&event.topic) {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            if event.id <= conn.resume_after {
                continue;
            }
            let outcome = conn.outbox.push_event(event.clone(), self.bounds);
            tally.add(&outcome, event.class, conn.outbox.queued_bytes());
            conn.last_queued_ms = self.now_ms;
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Flushes every connection touched this iteration, once each.
    pub(super) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            self.flush(key);
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty; // keep the allocation
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
            match conn.outbox.flush_with(&mut conn.sock, self.bounds, delivered) {
                Ok(flushed) => {
                    let stats = &self.shared.stats[self.index];
                    LoopStats::add(&stats.bytes_written, flushed.bytes as u64);
                    LoopStats::add(&stats.frames_written, flushed.frames as u64);
                    LoopStats::add(&stats.writes, flushed.writes as u64);
                    LoopStats::add(&stats.gaps_reported, flushed.gaps as u64);
                    if flushed.blocked {
                        conn.writable = false;
                    }
                    if conn.outbox.is_empty() {
                        conn.blocked_since_ms = None;
                    } else if flushed.bytes > 0 || conn.blocked_since_ms.is_none() {
                        conn.blocked_since_ms = Some(now);
                    }
                }
                Err(e) => {
                    log::debug!("loop {} conn {key} peer {}: write: {e}", self.index, conn.peer);
                    return self.close(key, CloseReason::Error);
                }
            }
        } else if !conn.outbox.is_empty() && conn.blocked_since_ms.is_none() {
            conn.blocked_since_ms = Some(now);
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
    queued: u64,
    shed: u64,
    evicted: [u64; 3],
    conflated: u64,
    peak: usize,
}

impl FanOut {
    pub(super) fn add(&mut self, outcome: &PushOutcome, class: Class, queued_bytes: usize) {
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
