//! The timer walk and the shutdown drain.
//!
//! One walk over the loop's connections per tick (`min(heartbeat, stall, request, keep-alive) /
//! 4`, clamped to 5 ms ..= 1 s) does everything time-based:
//! 1. a stream with nothing queued for `--heartbeat-ms` gets the shared `:` frame;
//! 2. a connection with queued bytes and no write progress for `--stall-timeout-ms` is
//!    closed (`stalled`);
//! 3. a request not complete `--request-timeout-ms` after its first byte is closed
//!    (`timeout`: slowloris), and so is a keep-alive connection idle for
//!    `--keepalive-timeout-ms`; a publisher parked on a full hub is exempt (we made it wait;
//!    `--publish-wait-timeout-ms` bounds that wait, see [`super::requests`]);
//! 4. a lingering close past its deadline is closed;
//! 5. a stream whose subscribe token expired leaves its topics at once, gets
//!    `event: token-expired` and closes once that is written (so revoking access by expiry
//!    works: a stream never outlives its token by more than a tick);
//! 6. outbox and history gauges are refreshed.
//!
//! A config reload ([`crate::live`]) that changes `--heartbeat-ms` recomputes the tick; the
//! next walk uses the new heartbeat for every stream.
//!
//! Drain (SIGTERM, `Handle::shutdown`): stop accepting; every stream gets
//! `event: server-shutdown` with `data: {"reconnect":true}` and a `retry:` spread over
//! `--shutdown-retry-spread-ms` so clients do not return in the same second; idle
//! connections close at once, requests in flight get their answer and close; the loop
//! exits when it holds no connection or `--drain-timeout-ms` has passed.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::Config;
use crate::conn::Phase;
use crate::live::Live;
use crate::metrics::{CloseReason, LoopStats};

use super::Worker;

impl Worker {
    /// Takes the settings of the newest reload (module contract of [`crate::live`]).
    pub(super) fn take_live(&mut self) {
        self.live_generation = self.shared.live.generation();
        self.live = self.shared.live.get();
        self.tick_ms = tick_ms(&self.shared.config, &self.live);
        self.next_tick_ms = self.next_tick_ms.min(self.now_ms + self.tick_ms);
    }

    /// Heartbeats, stall, request, idle and linger deadlines, gauges: one walk per tick.
    pub(super) fn tick(&mut self) {
        let c = &self.shared.config;
        let (heartbeat_ms, stall_ms, now) = (self.live.config.heartbeat_ms, c.stall_timeout_ms, self.now_ms);
        let (request_ms, idle_ms) = (c.request_timeout_ms, c.keepalive_timeout_ms);
        let mut to_close = Vec::new();
        let mut expired = Vec::new();
        // Only expiry ends an open stream: removing its subscribe key on a reload refuses new
        // streams signed with it, never the ones already open (README "Reload").
        let now_unix = super::unix_now();
        let (mut queued, mut blocked, mut heartbeats) = (0usize, 0usize, 0u64);
        for (key, conn) in self.conns.iter_mut() {
            match &conn.phase {
                Phase::Stream(s)
                    if s.extra.as_ref().is_some_and(|x| token_expired(x.token_expires_at, now_unix)) =>
                {
                    expired.push(key);
                }
                Phase::Stream(_) if conn.outbox.is_empty() && now - conn.last_queued_ms >= heartbeat_ms => {
                    conn.outbox.push(crate::sse::HEARTBEAT.clone(), self.bounds);
                    conn.last_queued_ms = now;
                    heartbeats += 1;
                    self.dirty.push_stream(key, conn);
                }
                Phase::Request(req) if !req.is_waiting() => {
                    let slow = req.started_ms.is_some_and(|t| now - t >= request_ms);
                    let idle = req.started_ms.is_none()
                        && conn.outbox.is_empty()
                        && now - req.idle_since_ms >= idle_ms;
                    if slow || idle {
                        to_close.push((key, CloseReason::Timeout));
                    }
                }
                Phase::Lingering { until_ms } if now >= *until_ms => {
                    to_close.push((key, CloseReason::Client))
                }
                _ => {}
            }
            if conn.blocked_since_ms().is_some_and(|since| now - since >= stall_ms) {
                to_close.push((key, CloseReason::Stalled));
            }
            queued += conn.outbox.queued_bytes();
            blocked += usize::from(!conn.writable);
        }
        for (key, reason) in to_close {
            self.close(key, reason);
        }
        for key in expired {
            self.end_expired_stream(key);
        }
        self.history.expire(Instant::now());
        let (history_topics, history_events) = self.history.size();
        let max_iteration_us = std::mem::take(&mut self.max_iteration_us);
        let stats = self.stats();
        LoopStats::add(&stats.heartbeats, heartbeats);
        LoopStats::set(&stats.outbox_queued_bytes, queued);
        LoopStats::set(&stats.write_blocked, blocked);
        LoopStats::set(&stats.history_topics, history_topics);
        LoopStats::set(&stats.history_events, history_events);
        LoopStats::set(&stats.history_bytes, self.history.total_bytes());
        stats.loop_lag_us.store(max_iteration_us, Ordering::Relaxed);
        self.iteration.publish(&stats.iteration);
        self.delivery_lag.publish(&stats.delivery_lag);
    }

    /// Invariant 5: the stream's token expired. It leaves its topics now (nothing published
    /// after the expiry reaches it), is told why, and closes once the notice is written (the
    /// stall timeout bounds a client that never reads it).
    fn end_expired_stream(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Phase::Stream(stream) = &mut conn.phase else { return };
        let Some(extra) = stream.extra.as_mut() else { return };
        let exp = std::mem::take(&mut extra.token_expires_at);
        for m in std::mem::take(&mut stream.memberships).iter() {
            self.topics.unsubscribe(*m);
        }
        // Tokens minted together expire together: spread their reconnects like a drain's.
        let (retry_ms, spread_ms) = (self.live.config.retry_ms, self.shared.config.shutdown_retry_spread_ms);
        let jitter = if spread_ms == 0 { 0 } else { mix(exp ^ (key as u64) << 20) % spread_ms };
        conn.outbox.push_unbounded(crate::notices::token_expired(exp, retry_ms + jitter));
        conn.close_after_flush = true;
        self.dirty.push_stream(key, conn);
        log::info!(
            "loop {} conn {key} peer {}: subscribe token expired at {exp}; stream closed",
            self.index,
            conn.peer
        );
        LoopStats::add(&self.stats().tokens_expired, 1);
        self.update_gauges();
    }

    /// Tells every stream that overload mode began (`system.overloaded`, so widgets can
    /// fall back to polling) or ended (`system.recovered`).
    pub(super) fn notify_overload(&mut self, on: bool) {
        let frame = crate::notices::overload(on);
        for (key, conn) in self.conns.iter_mut() {
            if let Phase::Stream(_) = conn.phase {
                conn.outbox.push_unbounded(frame.clone());
                self.dirty.push_stream(key, conn);
            }
        }
    }

    /// One step of the drain; `true` when the loop may exit.
    pub(super) fn drain_step(&mut self) -> bool {
        let deadline = match self.drain_deadline_ms {
            Some(d) => d,
            None => self.begin_drain(),
        };
        self.conns.is_empty() || self.now_ms >= deadline
    }

    fn begin_drain(&mut self) -> u64 {
        let c = &self.shared.config;
        let deadline = self.now_ms + c.drain_timeout_ms;
        let (retry_ms, spread_ms) = (self.live.config.retry_ms, c.shutdown_retry_spread_ms);
        self.drain_deadline_ms = Some(deadline);
        for listener in [self.listener.take(), self.admin_listener.take()].into_iter().flatten() {
            let mut listener = listener;
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_pending = false;
        self.admin_accept_pending = false;
        let seed = self.epoch.elapsed().as_nanos() as u64 ^ (self.index as u64) << 56;
        let mut idle = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            match &conn.phase {
                Phase::Stream(_) => {
                    let jitter = if spread_ms == 0 { 0 } else { mix(seed ^ key as u64) % spread_ms };
                    conn.outbox.push_unbounded(crate::notices::shutdown(retry_ms + jitter));
                    conn.close_after_flush = true;
                    self.dirty.push_stream(key, conn);
                }
                Phase::Request(req)
                    if req.pending.is_none() && req.buf.is_empty() && conn.outbox.is_empty() =>
                {
                    idle.push(key);
                }
                Phase::Request(_) | Phase::Lingering { .. } => {}
            }
        }
        for key in idle {
            self.close(key, CloseReason::Shutdown);
        }
        log::info!(
            "loop {}: draining {} connections ({} streams) within {} ms",
            self.index,
            self.conns.len(),
            self.streams,
            deadline - self.now_ms
        );
        deadline
    }

    /// Whether the node is draining (answers close their connection).
    pub(super) fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }
}

/// The timer walk's period: a quarter of the shortest timer, within 5 ms..1 s.
pub(super) fn tick_ms(c: &Config, live: &Live) -> u64 {
    let shortest = live
        .config
        .heartbeat_ms
        .min(c.stall_timeout_ms)
        .min(c.request_timeout_ms)
        .min(c.keepalive_timeout_ms);
    (shortest / 4).clamp(5, 1_000)
}

/// A token expiring at `expires_at` (0: no token) has expired at `now_unix`.
fn token_expired(expires_at: u64, now_unix: u64) -> bool {
    expires_at != 0 && now_unix >= expires_at
}

/// splitmix64: spreads a seed into an evenly distributed value (jitter, not security).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn jitter_spreads_over_the_window() {
        let spread = 10_000;
        let buckets = (0..10_000u64).fold([0u32; 10], |mut b, k| {
            b[(super::mix(k) % spread / 1000) as usize] += 1;
            b
        });
        assert!(buckets.iter().all(|&n| n > 800), "{buckets:?}");
    }
}
