//! HTTP publishes with `--bus`: the loop hands the events to the bus publisher and parks the
//! connection until the bus answers, never blocking on the bus itself.
//!
//! Invariants (those of [`super::requests`] hold; these add to them):
//! 1. A publish is answered `202` only once the bus accepted every event, with the ids the
//!    bus gave them; the loop delivers them when the bus reader reads them back, like
//!    everyone else's.
//! 2. While the bus's answer is awaited, or the in-flight window is full, the connection is
//!    parked as on a full hub (its socket is not read), in its own list that does not keep
//!    the loop busy: the bus publisher wakes the loop when the answer is in or window room
//!    is freed, and the publish is retried only then or after
//!    [`crate::room::ROOM_WAIT_FALLBACK`]; `--publish-wait-timeout-ms` applies from the
//!    first park.
//! 4. While a loop of this node is behind its `--max-delivery-lag-ms` budget (no lag room,
//!    [`crate::hub::Hub::lag_room`]), a publish waits as on a full window: every node slows
//!    its own publishers when its own loops are late, and the bus reader keeps feeding the
//!    loops what others published, bounded by the channels.
//! 3. A bus error answers at once, with the ids the bus gave the events before (they are
//!    delivered) and `null` for the rest, counted as `bus_unavailable`: `503` + `Retry-After:
//!    1` with `"outcome":"not_appended"` when the bus never ran the append, `504` with
//!    `"outcome":"unknown"` when it was sent the append and did not answer (the events may
//!    still be delivered: a retry may publish them twice). A `503` never covers events that
//!    may be delivered.

use crate::bus::BusError;
use crate::conn::{Conn, PendingPublish};
use crate::http;
use crate::metrics::{LoopStats, RejectReason};
use crate::publish;

use super::Worker;

impl Worker {
    /// [`Worker::publish`] with a bus: collect an answer, submit the rest, or park.
    pub(super) fn publish_on_bus(&mut self, key: usize, mut pending: PendingPublish) {
        let Some(bus) = self.shared.bus.clone() else { return };
        if self.shared.hub.is_closed() {
            let body = b"{\"error\":\"server is shutting down\"}\n";
            let response = http::response(503, "Retry-After: 1\r\n", "application/json", body, false);
            return self.respond(key, response, false);
        }
        if let Some((ticket, _)) = &pending.ticket {
            match ticket.try_take() {
                Some(Ok(ids)) => {
                    pending.ids.extend(ids);
                    pending.ticket = None;
                }
                Some(Err(e)) => return self.bus_refused(key, &pending, &e),
                None => {}
            }
        }
        if pending.ids.len() == pending.events.len() {
            let body = publish::accepted_body(&pending.answer(), pending.shape);
            let response = http::response(202, "", "application/json", body.as_bytes(), pending.keep_alive);
            return self.respond(key, response, pending.keep_alive);
        }
        let mut window_full = false;
        if pending.ticket.is_none() {
            // Invariant 4: a node behind its lag budget takes no more from its publishers.
            let submitted = match self.shared.hub.lag_room() {
                0 => None,
                _ => bus.try_submit(&pending.events[pending.ids.len()..], Some(self.index)),
            };
            match submitted {
                Some(submitted) => pending.ticket = Some(submitted),
                None => window_full = true,
            }
        }
        let first_window_wait = window_full && !pending.window_waited;
        pending.window_waited |= window_full;
        let waited_ms = self.now_ms.saturating_sub(*pending.parked_since_ms.get_or_insert(self.now_ms));
        let limit_ms = self.shared.config.publish_wait_timeout_ms;
        if limit_ms > 0 && waited_ms >= limit_ms && pending.ticket.is_none() {
            // Only a publish still waiting for window room times out here; one in flight is
            // answered by the bus within its socket timeout (bounded by this limit).
            return self.publish_timed_out(key, &pending, waited_ms);
        }
        let Some(req) = self.conns.get_mut(key).and_then(Conn::requesting) else { return };
        req.pending = Some(pending);
        self.bus_waiting.push(key);
        if first_window_wait {
            LoopStats::add(&self.stats().publish_waits, 1);
        }
        self.update_gauges();
    }

    /// Retries the publishes waiting for the bus once the loop was woken (the bus publisher
    /// wakes it when it answers or frees window room) or [`crate::room::ROOM_WAIT_FALLBACK`]
    /// passed (invariant 2): never once per loop pass.
    pub(super) fn retry_bus_waiting(&mut self) {
        let woken = std::mem::take(&mut self.woken);
        if self.bus_waiting.is_empty() || (!woken && self.now_ms < self.bus_retry_at_ms) {
            return;
        }
        self.bus_retry_at_ms = self.now_ms + crate::room::ROOM_WAIT_FALLBACK.as_millis() as u64;
        let waiting = std::mem::take(&mut self.bus_waiting);
        self.retry_publishes(waiting);
    }

    /// Answers a publish the bus did not take, or whose outcome it did not tell
    /// (invariant 3).
    fn bus_refused(&mut self, key: usize, pending: &PendingPublish, error: &BusError) {
        let status = if error.outcome_unknown() { 504 } else { 503 };
        if let Some(conn) = self.conns.get(key) {
            log::info!(
                "loop {} conn {key} peer {}: publish of {} events (first topic {}) answered {status}: {error}",
                self.index,
                conn.peer,
                pending.events.len(),
                pending.events.first().map_or("-", |e| &*e.topic),
            );
        }
        self.stats().rejected(RejectReason::BusUnavailable);
        // The events never handed to the bus will not be sequenced (throttle invariant 6);
        // those of the failed ticket were claimed or handed back by the publisher thread.
        let handed = pending.ticket.as_ref().map_or(0, |t| t.1);
        self.shared
            .hub
            .throttle
            .abandon(&pending.events[(pending.ids.len() + handed).min(pending.events.len())..]);
        let outcome = if error.outcome_unknown() { "unknown" } else { "not_appended" };
        let body = format!(
            "{{\"error\":{},\"outcome\":\"{outcome}\",\"ids\":{}}}\n",
            serde_json::Value::String(error.to_string()),
            serde_json::Value::from(pending.answer())
        );
        let response = http::response(
            status,
            "Retry-After: 1\r\n",
            "application/json",
            body.as_bytes(),
            pending.keep_alive,
        );
        self.respond(key, response, pending.keep_alive);
    }
}
