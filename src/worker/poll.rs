//! The polling endpoints on a loop: the subscribe-token check of streams
//! ([`super::gate::poll`]), then a bounded JSON answer from this loop's history
//! ([`crate::polling`]), with its truncations counted.

use std::time::Instant;

use crate::http::Request;
use crate::metrics::LoopStats;
use crate::polling::{self, PollBounds};
use crate::route::Action;

use super::{gate, Worker};

impl Worker {
    /// Answers `GET /topics/{t}/latest` and `GET /topics/{t}/events`; other actions are
    /// not polling and get nothing here.
    pub(super) fn serve_poll(&mut self, key: usize, request: &Request, action: Action, keep_alive: bool) {
        let (Action::Latest { topic } | Action::EventsAfter { topic, .. }) = &action else { return };
        if let Err((reason, response)) = gate::poll(&self.live, request, topic) {
            return self.refuse_for(key, reason, response, keep_alive);
        }
        if let Action::EventsAfter { topic, after, limit } = &action {
            if self.poll_from_bus(key, topic, *after, *limit, keep_alive) {
                return; // answered when the bus's events are in
            }
        }
        let bounds = self.poll_bounds();
        let now = Instant::now();
        let answer = match &action {
            Action::EventsAfter { topic, after, limit } => {
                polling::events_after(&self.history, topic, *after, *limit, bounds, now, keep_alive)
            }
            _ => polling::latest(&self.history, topic, bounds, now, keep_alive),
        };
        if answer.truncated || answer.skipped > 0 {
            if let Some(conn) = self.conns.get(key) {
                log::debug!(
                    "loop {} conn {key} peer {}: polling {topic:?} answer cut at {} bytes \
                     (--poll-max-bytes), {} events too large left out",
                    self.index,
                    conn.peer,
                    bounds.page_bytes,
                    answer.skipped
                );
            }
            let stats = self.stats();
            LoopStats::add(&stats.poll_truncated, u64::from(answer.truncated));
            LoopStats::add(&stats.poll_skipped, answer.skipped as u64);
        }
        self.respond(key, answer.response, keep_alive);
    }

    /// The bounds of one polling answer.
    pub(super) fn poll_bounds(&self) -> PollBounds {
        let c = &self.shared.config;
        PollBounds { page_bytes: c.poll_max_bytes, event_bytes: c.poll_max_bytes.max(c.outbox_max_bytes) }
    }
}
