//! The request phase: read → parse → route → subscribe or publish, with hub backpressure.
//!
//! Invariants:
//! 1. Responses are queued in request order; pipelined requests after a publish that waits
//!    for hub room wait with it (nothing is reordered, nothing is dropped).
//! 2. While a publish waits (the connection is *parked*), the socket is not read: the
//!    client's bytes stay in the kernel buffers and TCP flow control slows the publisher.
//!    The loop itself never blocks; a parked publish is retried when a loop that drained
//!    its hub channel wakes this one ([`crate::room`]), or after
//!    [`crate::room::ROOM_WAIT_FALLBACK`] without a wake-up, never on a timer per
//!    millisecond.
//! 3. The request buffer holds at most one incomplete request plus one read chunk: complete
//!    requests are handled after every read.
//! 4. After `GET /events` the buffer is dropped with whatever followed the request.
//! 5. Unread responses are bounded too: past [`RESPONSE_BACKLOG_BYTES`] queued, requests are
//!    no longer read until the client reads its responses (and the stall timeout applies).
//! 6. A publish stays parked at most `--publish-wait-timeout-ms` (0: no limit), counted on
//!    the loop clock from its first park. Each retry tries the hub first; a publish still
//!    incomplete past the limit is answered `503` + `Retry-After: 1` with the ids sequenced
//!    so far (`null` for the rest), counted as `publish_timeout`, and the connection goes on
//!    with its next request (or closes, without keep-alive). The poll timeout is capped at
//!    [`crate::room::ROOM_WAIT_FALLBACK`] while any publish is parked, so the limit is kept to
//!    within that (a loop that itself is stuck answers when it wakes).
//! 7. A publish is authorised on its head ([`super::gate`]): a refusal goes out before
//!    `100 Continue` and before the body is buffered, and closes the connection. Any other
//!    request that announces a body is refused `413` the same way: only `POST /publish`
//!    takes one, so no path lets a client pin `--max-body-bytes` of buffer.

use crate::admission::{Refusal, RefusalReason};
use crate::auth::AuthError;
use crate::conn::{
    read_once, Conn, PendingPublish, Phase, ReadResult, StreamExtra, StreamState, RESPONSE_BACKLOG_BYTES,
};
use crate::http::{self, Limits, Parse, Reject, Request};
use crate::hub::PublishError;
use crate::metrics::{CloseReason, LoopStats, RejectReason};
use std::time::Instant;

use crate::route::{self, Action, RouteLimits};
use crate::{publish, sse};

use super::delivery::FanOut;
use super::{gate, Worker, READ_BUDGET};

/// Request buffers larger than this are released once empty, so a connection that sent
/// one big publish does not keep a big buffer while idle.
const KEEP_BUFFER_BYTES: usize = 8 * 1024;

impl Worker {
    /// Reads what the socket has and handles every complete request.
    pub(super) fn on_request_readable(&mut self, key: usize) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let Phase::Request(req) = &mut conn.phase else { return self.on_readable(key) };
            if req.is_waiting() || req.peer_closed || req.paused_for_output || conn.close_after_flush {
                return;
            }
            match read_once(&mut conn.sock, &mut self.scratch) {
                ReadResult::Data(n) => {
                    req.buf.extend_from_slice(&self.scratch[..n]);
                    req.started_ms.get_or_insert(self.now_ms);
                }
                ReadResult::WouldBlock => return self.process_requests(key),
                ReadResult::Eof => req.peer_closed = true,
                ReadResult::Error(e) => {
                    log::debug!("loop {} conn {key} peer {}: read: {e}", self.index, conn.peer);
                    return self.close(key, CloseReason::Error);
                }
            }
            self.process_requests(key);
        }
        self.again.push(key);
    }

    /// Parses and handles buffered requests until one is incomplete, parked or final.
    pub(super) fn process_requests(&mut self, key: usize) {
        let limits = Limits {
            max_head: self.shared.config.max_request_bytes,
            max_body: self.shared.config.max_body_bytes,
        };
        let mut consumed = 0;
        let mut refused = None;
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let Phase::Request(req) = &mut conn.phase else { return };
            if req.is_waiting() || conn.close_after_flush {
                break;
            }
            if conn.outbox.queued_bytes() > RESPONSE_BACKLOG_BYTES {
                req.paused_for_output = true;
                break;
            }
            match http::parse(&req.buf[consumed..], limits) {
                Parse::Partial | Parse::NeedBody { .. } if req.peer_closed => {
                    conn.close_after_flush = true;
                    self.dirty.push_answer(key, conn);
                    break;
                }
                Parse::Partial => break,
                Parse::NeedBody { head, expect_continue, .. } => {
                    if !req.head_checked {
                        req.head_checked = true;
                        // Invariant 7: refused before 100 Continue and before the body.
                        if !(head.method == "POST" && head.path == "/publish") {
                            req.buf = Vec::new();
                            let reject = Reject::PayloadTooLarge(format!(
                                "{} {} takes no request body (only POST /publish does)",
                                head.method, head.path
                            ));
                            self.refuse(key, &reject, false);
                            break;
                        }
                        if let Err(refusal) = gate::publish(&self.live, &head, conn.peer.addr(), false) {
                            req.cors = self.live.cors.headers_for(&head);
                            req.buf = Vec::new();
                            refused = Some(refusal);
                            break;
                        }
                    }
                    if expect_continue && !req.continue_sent {
                        req.continue_sent = true;
                        conn.outbox.push_unbounded(http::CONTINUE.clone());
                        self.dirty.push_answer(key, conn);
                    }
                    break;
                }
                Parse::Reject(reject) => {
                    self.refuse(key, &reject, false);
                    break;
                }
                Parse::Complete(request, n) => {
                    consumed += n;
                    req.continue_sent = false;
                    req.head_checked = false;
                    self.handle(key, &request);
                }
            }
        }
        if let Some((reason, response)) = refused {
            // The body that follows is never read: the connection ends with this answer.
            return self.refuse_for(key, reason, response, false);
        }
        let now = self.now_ms;
        if let Some(req) = self.conns.get_mut(key).and_then(Conn::requesting) {
            req.buf.drain(..consumed.min(req.buf.len()));
            if consumed > 0 {
                req.idle_since_ms = now;
                req.started_ms = (!req.buf.is_empty()).then_some(now);
            }
            if req.buf.is_empty() && req.buf.capacity() > KEEP_BUFFER_BYTES {
                req.buf = Vec::new();
            }
        }
    }

    fn handle(&mut self, key: usize, request: &Request) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.head_only = request.method == "HEAD";
        let (peer, admin) = (conn.peer.addr(), conn.admin);
        let cors = self.live.cors.headers_for(request);
        if let Phase::Request(req) = &mut conn.phase {
            req.cors = cors.clone();
        }
        let keep_alive = request.keep_alive;
        if request.method == "OPTIONS" {
            // The preflight carries its own CORS headers; do not add them twice.
            if let Some(req) = self.conns.get_mut(key).and_then(Conn::requesting) {
                req.cors = None;
            }
            let response = self.live.cors.preflight(request, keep_alive);
            return self.respond(key, response, keep_alive);
        }
        // Authorize publishers before their body is parsed and encoded (a publish whose
        // body came with its head; others were judged on the head alone).
        if let Err((reason, response)) = gate::publish(&self.live, request, peer, keep_alive) {
            return self.refuse_for(key, reason, response, keep_alive);
        }
        let c = &self.shared.config;
        let limits = RouteLimits { max_topics: c.max_topics_per_stream, max_frame: c.outbox_max_bytes };
        let admin_elsewhere = c.admin_listen.is_some() && !admin;
        let now = Instant::now();
        match route::route(request, limits) {
            Ok(Action::Subscribe { topics, last_event_id }) => {
                if self.draining() {
                    return self.refuse_for(key, RejectReason::Draining, draining_response(), false);
                }
                // Streams on the admin listener have its own bound (invariant 4 of accept).
                let holds_slot = !admin;
                if holds_slot && !self.take_stream_slot() {
                    let response = super::accept::at_stream_capacity();
                    return self.refuse_for(key, RejectReason::StreamCapacity, response, false);
                }
                let extra = match self.admit_stream(request, &topics, peer) {
                    Ok(extra) => extra,
                    Err((reason, response)) => {
                        self.release_stream_slot(holds_slot);
                        return self.refuse_for(key, reason, response, keep_alive);
                    }
                };
                let Err((extra, holds_slot)) =
                    self.resume_from_bus(key, &topics, last_event_id, (extra, holds_slot), cors.as_deref())
                else {
                    return; // the stream starts when the bus's replay is in
                };
                self.start_stream(key, &topics, last_event_id, (extra, holds_slot), cors.as_deref(), None);
            }
            Ok(Action::Publish { events, shape }) => {
                if self.live.config.publish_rate_per_topic > 0.0 {
                    for event in &events {
                        if let Err(refusal) = self.shared.admission.admit_publish(&event.topic, now) {
                            let reason = refusal_reason(&refusal);
                            return self.refuse_for(key, reason, refusal.response(keep_alive), keep_alive);
                        }
                    }
                }
                let (events, held) = self.shared.hub.admit(events);
                let pending = PendingPublish {
                    events,
                    ids: Vec::new(),
                    held,
                    shape,
                    keep_alive,
                    parked_since_ms: None,
                    ticket: None,
                    window_waited: false,
                };
                self.publish(key, pending);
            }
            Ok(action) if action.is_admin() && admin_elsewhere => {
                self.refuse(key, &Reject::NotFound, keep_alive)
            }
            Ok(action @ (Action::Latest { .. } | Action::EventsAfter { .. })) => {
                self.serve_poll(key, request, action, keep_alive)
            }
            Ok(Action::Healthz) => {
                if let Some(req) = self.conns.get_mut(key).and_then(Conn::requesting) {
                    req.health_keep_alive = keep_alive;
                }
                self.serve_admin(key, &Action::Healthz, keep_alive);
            }
            Ok(action) => self.serve_admin(key, &action, keep_alive),
            Err(reject) => self.refuse(key, &reject, keep_alive),
        }
    }

    /// Verifies the subscribe token (when configured) and takes a stream permit (when per-IP
    /// or per-user limits are on); the token's expiry and the permit go into the stream's
    /// extras, allocated only when there is one of them.
    fn admit_stream(
        &self,
        request: &Request,
        topics: &[String],
        peer: std::net::SocketAddr,
    ) -> Result<Option<Box<StreamExtra>>, (RejectReason, bytes::Bytes)> {
        let subject = match &self.live.verifier {
            Some(verifier) => match verifier.verify(request, topics, super::unix_now()) {
                Ok(subject) => Some(subject),
                Err(e) => return Err((auth_reason(&e), e.response(request.keep_alive))),
            },
            None => None,
        };
        let user = subject.as_ref().map(|s| s.user.as_str());
        let token_expires_at = subject.as_ref().map_or(0, |s| s.expires_at);
        let limits = self.shared.admission.limits();
        let permit = if limits.max_streams_per_ip == 0 && (user.is_none() || limits.max_streams_per_user == 0)
        {
            None
        } else {
            match self.shared.admission.acquire_stream(peer.ip(), user) {
                Ok(permit) => Some(permit),
                Err(refusal) => return Err((refusal_reason(&refusal), refusal.response(request.keep_alive))),
            }
        };
        Ok((permit.is_some() || token_expires_at != 0)
            .then(|| Box::new(StreamExtra { permit, token_expires_at })))
    }

    /// Answers a refused request with a prepared response and counts the reason.
    pub(super) fn refuse_for(
        &mut self,
        key: usize,
        reason: RejectReason,
        response: bytes::Bytes,
        keep_alive: bool,
    ) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        log::debug!("loop {} conn {key} peer {}: refused ({})", self.index, conn.peer, reason.label());
        self.stats().rejected(reason);
        self.respond(key, response, keep_alive);
    }

    /// Queues an error response; without keep-alive the connection closes after it.
    fn refuse(&mut self, key: usize, reject: &Reject, keep_alive: bool) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        log::debug!("loop {} conn {key} peer {}: {} {reject}", self.index, conn.peer, reject.status());
        self.respond(key, reject.response(keep_alive), keep_alive);
        LoopStats::add(&self.stats().requests_rejected, 1);
    }

    pub(super) fn respond(&mut self, key: usize, response: bytes::Bytes, keep_alive: bool) {
        // During a drain every answer closes its connection, and says so.
        let (response, keep_alive) = if keep_alive && self.draining() {
            (http::force_close(response), false)
        } else {
            (response, keep_alive)
        };
        let Some(conn) = self.conns.get_mut(key) else { return };
        let response = match conn.requesting().and_then(|req| req.cors.take()) {
            Some(extra) => http::with_headers(response, &extra),
            None => response,
        };
        let response = if std::mem::take(&mut conn.head_only) { http::head_only(response) } else { response };
        conn.outbox.push_unbounded(response);
        if !keep_alive {
            conn.close_after_flush = true;
        }
        self.dirty.push_answer(key, conn);
    }

    /// Turns the connection into an event stream on `topics` (invariant 4); with a resume
    /// id, first replays history (a gap notice, then retained events in id order). The
    /// replay and the registration happen in one step of the loop, so no event published
    /// meanwhile can fall between them or come twice.
    pub(super) fn start_stream(
        &mut self,
        key: usize,
        topics: &[String],
        last_event_id: Option<u64>,
        (extra, holds_slot): (Option<Box<StreamExtra>>, bool),
        cors: Option<&str>,
        from_bus: Option<&crate::bus::resume::Resumed>,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            if let Some(permit) = extra.and_then(|x| x.permit) {
                self.shared.admission.release(permit);
            }
            return self.release_stream_slot(holds_slot);
        };
        let memberships = topics.iter().map(|t| self.topics.subscribe(t, key)).collect();
        conn.phase = Phase::Stream(Box::new(StreamState { memberships, extra }));
        let head = match cors {
            Some(extra) => http::with_headers(http::stream_head(), extra),
            None => http::stream_head(),
        };
        conn.outbox.push_unbounded(head);
        conn.outbox.push_unbounded(self.live.prelude.clone());
        // Invariant 6 of `delivery`: a new stream's backlog (its head, a replay) is its own,
        // not a sign that the loop is behind; it counts as keeping up once a write empties it.
        conn.kept_up = false;
        if self.overloaded {
            // Streams open at the transition were told; one opened since is told now.
            conn.outbox.push_unbounded(crate::notices::overload(true));
        }
        if let Some(after) = last_event_id {
            // An id this node never issued and the bus does not hold (from before a clock
            // jump, or made up): its position is unknown, so resume from this process's first
            // id — the client gets every retained event. Nothing before that can be told
            // apart from what it already saw, so no gap is reported for it. One the bus holds
            // is real even if this node has not read it yet: the stream resumes after it.
            let held_by_bus = from_bus.is_some_and(|r| r.holds_after);
            let after = if after >= self.shared.hub.next_id() && !held_by_bus {
                log::debug!("loop {} conn {key}: Last-Event-ID {after} was never issued here", self.index);
                self.shared.hub.first_id().saturating_sub(1)
            } else {
                after
            };
            // With a bus's replay: it covers the ids up to its `through`, history the rest.
            let after = match from_bus {
                Some(r) => super::resume::replay(conn, r, after, self.bounds, &self.shared.stats[self.index]),
                None => after,
            };
            conn.resume_after = after;
            let (gap, events) = self.history.replay(topics, after, Instant::now());
            if let Some((from, to)) = gap {
                conn.outbox.push_unbounded(sse::gap_frame(from, to));
                LoopStats::add(&self.shared.stats[self.index].gaps_reported, 1);
            }
            let mut tally = FanOut::default();
            for event in events {
                let class = event.class;
                let outcome = conn.outbox.push_event(event, self.bounds);
                tally.add(&outcome, class, conn.outbox.queued_bytes());
            }
            tally.record(&self.shared.stats[self.index]);
        }
        conn.last_queued_ms = self.now_ms;
        self.dirty.push_answer(key, conn);
        self.streams += 1;
        log::debug!("loop {} conn {key} peer {}: stream on {}", self.index, conn.peer, topics.join(","));
        self.update_gauges();
    }

    /// Hands a publish to the hub; parks the connection if the hub has no room for all of it
    /// (invariant 2), and answers 503 once it has been parked for `--publish-wait-timeout-ms`
    /// (invariant 6).
    fn publish(&mut self, key: usize, mut pending: PendingPublish) {
        if self.shared.bus.is_some() {
            return self.publish_on_bus(key, pending);
        }
        let done = pending.ids.len();
        match self.shared.hub.try_publish(&pending.events[done..], Some(self.index)) {
            Ok(ids) => pending.ids.extend(ids),
            Err(PublishError::Closed) => {
                let body = b"{\"error\":\"server is shutting down\"}\n";
                let response = http::response(503, "Retry-After: 1\r\n", "application/json", body, false);
                return self.respond(key, response, false);
            }
            Err(e) => return self.refuse(key, &Reject::BadRequest(e.to_string()), pending.keep_alive),
        }
        if pending.ids.len() == pending.events.len() {
            let body = publish::accepted_body(&pending.answer(), pending.shape);
            let response = http::response(202, "", "application/json", body.as_bytes(), pending.keep_alive);
            return self.respond(key, response, pending.keep_alive);
        }
        let first_wait = pending.parked_since_ms.is_none();
        let waited_ms = self.now_ms.saturating_sub(*pending.parked_since_ms.get_or_insert(self.now_ms));
        let limit_ms = self.shared.config.publish_wait_timeout_ms;
        if limit_ms > 0 && waited_ms >= limit_ms {
            return self.publish_timed_out(key, &pending, waited_ms);
        }
        let Some(req) = self.conns.get_mut(key).and_then(Conn::requesting) else { return };
        req.pending = Some(pending);
        self.parked.push(key);
        // Wait for a wake-up; with room already there, the next poll returns at once.
        self.shared.hub.await_room(self.index);
        if first_wait {
            LoopStats::add(&self.stats().publish_waits, 1);
        }
        self.update_gauges();
    }

    /// Answers a publish that waited `--publish-wait-timeout-ms` for hub room: 503 with
    /// `Retry-After: 1` and, in request order, the ids of the events already sequenced (they
    /// are delivered) and `null` for the rest, which the client may resend; a `latest` value
    /// the throttle holds is `null` too, as in the 202. The connection stays usable when
    /// keep-alive allows.
    pub(super) fn publish_timed_out(&mut self, key: usize, pending: &PendingPublish, waited_ms: u64) {
        let Some(conn) = self.conns.get(key) else { return };
        log::info!(
            "loop {} conn {key} peer {}: publish of {} events (first topic {}) answered 503 after \
             waiting {waited_ms} ms for hub room (--publish-wait-timeout-ms); {} sequenced",
            self.index,
            conn.peer,
            pending.events.len(),
            pending.events.first().map_or("-", |e| &*e.topic),
            pending.ids.len(),
        );
        self.stats().rejected(RejectReason::PublishTimeout);
        self.shared.hub.throttle.abandon(&pending.events[pending.ids.len()..]);
        let body = publish::timed_out_body(&pending.answer(), waited_ms);
        self.respond_retry_later(key, &body, pending.keep_alive);
    }

    /// A `503` + `Retry-After: 1` with a JSON body that says which events got ids; the
    /// connection stays usable when keep-alive allows.
    pub(super) fn respond_retry_later(&mut self, key: usize, body: &str, keep_alive: bool) {
        let response =
            http::response(503, "Retry-After: 1\r\n", "application/json", body.as_bytes(), keep_alive);
        self.respond(key, response, keep_alive);
    }

    /// Retries every parked publish; a connection that got through resumes its requests and
    /// its reads (its socket may hold bytes no readiness edge will announce again).
    pub(super) fn retry_parked(&mut self) {
        if self.parked.is_empty()
            || (self.shared.hub.room_awaited(self.index) && self.now_ms < self.park_retry_at_ms)
        {
            return;
        }
        self.park_retry_at_ms = self.now_ms + crate::room::ROOM_WAIT_FALLBACK.as_millis() as u64;
        let parked = std::mem::take(&mut self.parked);
        self.retry_publishes(parked);
    }

    /// Retries the publishes parked on `keys` (counted in `publish_retries`).
    pub(super) fn retry_publishes(&mut self, keys: Vec<usize>) {
        LoopStats::add(&self.stats().publish_retries, keys.len() as u64);
        for key in keys {
            let Some(req) = self.conns.get_mut(key).and_then(Conn::requesting) else { continue };
            let Some(pending) = req.pending.take() else { continue };
            self.publish(key, pending);
            if self.conns.get(key).is_some_and(|c| !c.is_parked()) {
                self.process_requests(key);
                self.on_request_readable(key);
            }
        }
        self.update_gauges();
    }
}

pub(super) fn auth_reason(e: &AuthError) -> RejectReason {
    match e {
        AuthError::Unauthorized(_) => RejectReason::Unauthorized,
        AuthError::Forbidden(_) => RejectReason::Forbidden,
    }
}

fn refusal_reason(r: &Refusal) -> RejectReason {
    match r.reason {
        RefusalReason::IpStreams => RejectReason::IpStreams,
        RefusalReason::IpRate => RejectReason::IpRate,
        RefusalReason::UserStreams => RejectReason::UserStreams,
        RefusalReason::TopicRate => RejectReason::TopicRate,
    }
}

fn draining_response() -> bytes::Bytes {
    let body = b"{\"error\":\"server is draining for shutdown; reconnect shortly\"}\n";
    http::response(503, "Retry-After: 2\r\n", "application/json", body, false)
}
