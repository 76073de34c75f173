//! `/topics/{t}/events?after=` with a bus: an `after` older than the loop's history but
//! still in the bus is answered from the bus, asked on the bus's resume thread
//! ([`crate::bus::resume`]) so that the loop never waits on Redis.
//!
//! Invariants:
//! 1. Asked only when the history's answer would start with a gap and the id was issued.
//! 2. The answer is the bus's events of the topic after `after`, then the loop's history
//!    after the bus's `through`, paged exactly as a history answer ([`polling::events_after`]);
//!    ids the bus no longer holds are the `X-Gap-From`/`X-Gap-To` range.
//! 3. A bus scan that stopped before covering what the history lacks (or failed) is never
//!    passed off as complete: the history's answer, with its gap, goes out instead.

use std::time::{Duration, Instant};

use crate::bus::resume::{Request, Resumed};
use crate::conn::{Conn, PollWait};
use crate::history::{History, HistoryLimits};
use crate::http;
use crate::polling;

use super::Worker;

impl Worker {
    /// Asks the bus for a polling answer the history cannot give in full; `true` when the
    /// connection now waits for it (invariant 1).
    pub(super) fn poll_from_bus(
        &mut self,
        key: usize,
        topic: &str,
        after: u64,
        limit: usize,
        keep_alive: bool,
    ) -> bool {
        let Some(bus) = self.shared.bus.clone() else { return false };
        if after >= self.shared.hub.next_id() {
            return false;
        }
        let Some((Some((_, upto)), _)) = self.history.after(topic, after, 1, Instant::now()) else {
            return false;
        };
        if !self.conns.get_mut(key).is_some_and(|c| c.requesting().is_some()) {
            return false;
        }
        let token = self.next_resume_token();
        let topics = vec![topic.to_string()];
        let max_events = limit.saturating_add(1);
        if !bus.try_resume(Request { loop_index: self.index, key, token, topics, after, upto, max_events }) {
            return false;
        }
        let wait = PollWait { token, topic: topic.to_string(), after, limit, upto, keep_alive };
        if let Some(req) = self.conns.get_mut(key).and_then(Conn::requesting) {
            req.poll = Some(Box::new(wait));
        }
        true
    }

    /// Answers a polling request from the bus's events (invariants 2 and 3), then goes on
    /// with the connection's requests.
    pub(super) fn answer_poll_from_bus(&mut self, r: &Resumed) {
        let Some(wait) = self.conns.get_mut(r.key).and_then(Conn::requesting).and_then(|q| q.poll.take())
        else {
            return;
        };
        let (bounds, now) = (self.poll_bounds(), Instant::now());
        let full = r.events.len() > wait.limit;
        // The bus's part, then the loop's history after it, merged into one answer.
        let merged = (full || r.through >= wait.upto).then(|| {
            let limits = HistoryLimits {
                max_events: usize::MAX,
                max_bytes: usize::MAX,
                max_age: Duration::from_millis(self.shared.config.history_max_age_ms),
                max_topics: 1,
                max_total_bytes: usize::MAX,
            };
            // Ids up to the floor are the bus's gap (or none: the client's own `after`).
            let mut merged = History::new(limits, r.gap.map_or(wait.after, |(_, to)| to));
            for e in r.events.iter().filter(|e| e.id > wait.after) {
                merged.record(e);
            }
            // History's events after the bus's part, unless history dropped some of them
            // while the bus answered: then the answer ends with the bus's part, and the
            // client's next poll (after its last id) asks the bus again; merging across the
            // hole would let it skip the hole silently.
            if !full {
                if let Some((None, local)) =
                    self.history.after(&wait.topic, r.through, wait.limit.saturating_add(1), now)
                {
                    for e in local.iter().filter(|e| e.id > r.through) {
                        merged.record(e);
                    }
                }
            }
            merged
        });
        let answer = match &merged {
            Some(m) if m.size().1 == 0 && r.gap.is_none() => {
                let response = http::response(
                    200,
                    "Cache-Control: no-cache\r\n",
                    "application/json",
                    b"[]\n",
                    wait.keep_alive,
                );
                polling::Answer { response, truncated: false, skipped: 0 }
            }
            source => polling::events_after(
                source.as_ref().unwrap_or(&self.history),
                &wait.topic,
                wait.after,
                wait.limit,
                bounds,
                now,
                wait.keep_alive,
            ),
        };
        self.respond(r.key, answer.response, wait.keep_alive);
        // The connection was not read while it waited.
        self.process_requests(r.key);
        self.on_request_readable(r.key);
    }
}
