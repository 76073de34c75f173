//! `Last-Event-ID` resume with a bus: what the loop's history lacks is asked of the bus on a
//! helper thread ([`crate::bus::resume`]); the loop never waits on Redis.
//!
//! Invariants:
//! 1. The loop asks the bus for a resume id whose replay from history would start with a
//!    gap, and for one it has not read yet (the bus says whether it holds it: then the id is
//!    real, the stream resumes right after it, and live events up to it are skipped);
//!    otherwise the stream starts from history at once.
//! 2. While the bus scans, the connection waits like a parked publisher (its socket is not
//!    read, no timeout closes it) and is not subscribed to anything.
//! 3. When the answer arrives through the loop's channel, the loop replays the bus's events,
//!    then its history after the bus's `through`, and registers the stream, all in one step:
//!    events the loop applied before are in its history, and live events up to the last id
//!    replayed are skipped (`Conn::resume_after`). So there is no duplicate and no gap.
//! 4. A stream that closes while waiting hands back its permit (see `Worker::leave_stream`).

use std::time::Instant;

use crate::bus::resume::{Request, Resumed};
use crate::conn::{Conn, ResumeWait, StreamExtra};
use crate::metrics::LoopStats;
use crate::outbox::Bounds;
use crate::sse;

use super::delivery::FanOut;
use super::Worker;

impl Worker {
    /// Asks the bus for the part of a resume the history lacks (invariant 1). `Ok` when the
    /// stream now waits for the bus; `Err` hands the extras back to start it from history.
    pub(super) fn resume_from_bus(
        &mut self,
        key: usize,
        topics: &[String],
        last_event_id: Option<u64>,
        (extra, holds_slot): (Option<Box<StreamExtra>>, bool),
        cors: Option<&str>,
    ) -> Result<(), (Option<Box<StreamExtra>>, bool)> {
        let (Some(bus), Some(after)) = (self.shared.bus.clone(), last_event_id) else {
            return Err((extra, holds_slot));
        };
        let upto = if after >= self.shared.hub.next_id() {
            // Not read here (yet): another node handed it out and this node's reader is
            // behind it, or it was never issued. The bus says which (`Resumed::holds_after`).
            after.saturating_add(1)
        } else {
            let Some((_, upto)) = self.history.replay(topics, after, Instant::now()).0 else {
                return Err((extra, holds_slot));
            };
            upto
        };
        if !self.conns.get_mut(key).is_some_and(|c| c.requesting().is_some()) {
            return Err((extra, holds_slot));
        }
        let token = self.next_resume_token();
        let max_events = self.shared.config.outbox_max_events;
        let req =
            Request { loop_index: self.index, key, token, topics: topics.to_vec(), after, upto, max_events };
        if !bus.try_resume(req) {
            log::debug!("loop {} conn {key}: bus resume queue full; resuming from history", self.index);
            return Err((extra, holds_slot));
        }
        LoopStats::add(&self.stats().bus_resumes, 1);
        let cors = cors.map(str::to_string);
        let wait = ResumeWait { token, topics: topics.to_vec(), after, extra, holds_slot, cors };
        if let Some(req) = self.conns.get_mut(key).and_then(Conn::requesting) {
            req.resume = Some(Box::new(wait));
        }
        log::debug!(
            "loop {} conn {key}: resume after {after} asked of the bus (history lacks up to {upto})",
            self.index
        );
        Ok(())
    }

    /// A token for one request to the bus's resume thread.
    pub(super) fn next_resume_token(&mut self) -> u64 {
        self.resume_tokens += 1;
        self.resume_tokens
    }

    /// The bus's answer: start the stream with it (invariant 3), if the connection still
    /// waits for it.
    pub(super) fn on_resumed(&mut self, r: Box<Resumed>) {
        let Some(req) = self.conns.get_mut(r.key).and_then(Conn::requesting) else { return };
        if req.poll.as_ref().map(|w| w.token) == Some(r.token) {
            return self.answer_poll_from_bus(&r);
        }
        if req.resume.as_ref().map(|w| w.token) != Some(r.token) {
            return;
        }
        let Some(wait) = req.resume.take() else { return };
        let slot = (wait.extra, wait.holds_slot);
        self.start_stream(r.key, &wait.topics, Some(wait.after), slot, wait.cors.as_deref(), Some(&r));
        // The socket was not read while waiting: an EOF that arrived then has no readiness
        // edge left to announce it, so look now (bytes pipelined after the subscribe are
        // discarded, as on every stream).
        self.discard_input(r.key);
    }
}

/// Queues the bus's gap notice and events on a starting stream; returns the id after which
/// the loop's history continues (the larger of `after` and the bus's `through`).
pub(super) fn replay(conn: &mut Conn, r: &Resumed, after: u64, bounds: Bounds, stats: &LoopStats) -> u64 {
    if let Some((from, to)) = r.gap {
        conn.outbox.push_unbounded(sse::gap_frame(from, to));
        LoopStats::add(&stats.gaps_reported, 1);
    }
    let mut tally = FanOut::default();
    for event in r.events.iter().filter(|e| e.id > after) {
        let outcome = conn.outbox.push_event(event.clone(), bounds);
        tally.add(&outcome, event.class, conn.outbox.queued_bytes());
    }
    tally.record(stats);
    after.max(r.through)
}
