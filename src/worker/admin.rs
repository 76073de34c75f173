//! Operator endpoints served by whichever loop owns the connection: `/metrics` (summing
//! every loop's stats), `/healthz` (a probe through every loop's channel; the connection
//! waits, like a parked publisher, until all answer or [`HEALTH_DEADLINE`] passes),
//! `/readyz`, the status page and its snapshot (`/status.json`, built by [`crate::monitor`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::exposition::{self, ConfigScrape, LoopScrape, ProcessScrape, Scrape};
use crate::health::{Probe, HEALTH_DEADLINE};
use crate::histogram::Snapshot;
use crate::http;
use crate::hub::LoopMsg;
use crate::route::Action;
use crate::sys::rlimits;

use super::{Shared, Worker};

/// The status page, embedded at build time.
const STATUS_PAGE: &str = include_str!("../status.html");

impl Worker {
    /// Answers an operator endpoint (`action.is_admin()` and not polling).
    pub(super) fn serve_admin(&mut self, key: usize, action: &Action, keep_alive: bool) {
        let response = match action {
            Action::Metrics => {
                let body = exposition::render(&scrape(&self.shared));
                http::response(
                    200,
                    "",
                    "text/plain; version=0.0.4; charset=utf-8",
                    body.as_bytes(),
                    keep_alive,
                )
            }
            Action::Readyz => readyz(&self.shared, keep_alive),
            Action::StatusPage => http::response(
                200,
                "Cache-Control: no-cache\r\n",
                "text/html; charset=utf-8",
                STATUS_PAGE.as_bytes(),
                keep_alive,
            ),
            Action::StatusJson => status_json(&self.shared, keep_alive),
            Action::ClientScript(index) => match crate::client_js::FILES.get(*index) {
                Some((_, text)) => http::response(
                    200,
                    "Cache-Control: no-cache\r\n",
                    "text/javascript; charset=utf-8",
                    text.as_bytes(),
                    keep_alive,
                ),
                None => return,
            },
            Action::Healthz => return self.start_health_probe(key),
            _ => return,
        };
        self.respond(key, response, keep_alive);
    }

    fn start_health_probe(&mut self, key: usize) {
        let hub = &self.shared.hub;
        let probe = Arc::new(Probe::new(hub.loops()));
        for i in 0..hub.loops() {
            // A full channel cannot take the probe: that loop is too far behind, and stays
            // unanswered.
            hub.send_control(i, LoopMsg::Ping(probe.clone()));
        }
        if let Some(req) = self.conns.get_mut(key).and_then(crate::conn::Conn::requesting) {
            req.health = Some(probe.clone());
        }
        self.health_waiting.push((key, probe));
    }

    /// Answers `/healthz` requests whose probes completed or timed out, then lets those
    /// connections go on with their next requests.
    pub(super) fn check_health(&mut self) {
        let waiting = std::mem::take(&mut self.health_waiting);
        for (key, probe) in waiting {
            let (status, body) = if probe.complete() {
                (200, format!("{{\"status\":\"ok\",\"loops\":{}}}\n", self.shared.hub.loops()))
            } else if probe.started.elapsed() >= HEALTH_DEADLINE {
                (503, format!("{{\"status\":\"unhealthy\",\"unresponsive_loops\":{:?}}}\n", probe.missing()))
            } else {
                self.health_waiting.push((key, probe));
                continue;
            };
            let Some(req) = self.conns.get_mut(key).and_then(crate::conn::Conn::requesting) else { continue };
            // Only the connection that asked (a reused slab key holds someone else).
            if !req.health.as_ref().is_some_and(|h| Arc::ptr_eq(h, &probe)) {
                continue;
            }
            req.health = None;
            let keep_alive = req.health_keep_alive;
            let response = http::response(
                status,
                "Cache-Control: no-cache\r\n",
                "application/json",
                body.as_bytes(),
                keep_alive,
            );
            self.respond(key, response, keep_alive);
            self.process_requests(key);
            self.on_request_readable(key);
        }
    }
}

fn readyz(shared: &Shared, keep_alive: bool) -> Bytes {
    let draining = shared.draining.load(Ordering::Acquire);
    let overloaded =
        shared.overload.load(Ordering::Acquire) && shared.live.get().config.unready_when_overloaded;
    let bus_down = shared.bus.as_ref().is_some_and(|b| b.unready());
    let (status, state) = match (draining, overloaded) {
        (true, _) => (503, "draining"),
        (_, true) => (503, "overloaded"),
        _ if bus_down => (503, "bus unreachable"),
        _ => (200, "ready"),
    };
    let body = format!("{{\"status\":\"{state}\"}}\n");
    let extra = if status == 503 { "Retry-After: 5\r\n" } else { "" };
    http::response(status, extra, "application/json", body.as_bytes(), keep_alive)
}

/// The monitor's newest status snapshot: `503` + `Retry-After` before the first one, `404`
/// when `--status-interval-ms 0` turned snapshots off. Every answer says whether the
/// snapshots also come as a feed on the status topic (`feed`), so the page knows to poll.
fn status_json(shared: &Shared, keep_alive: bool) -> Bytes {
    let snapshot = shared.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (interval_ms, feed) = (shared.config.status_interval_ms, shared.bus.is_none());
    let (status, extra, body) = match snapshot {
        Some(body) => (200, "Cache-Control: no-cache\r\n", body),
        None if interval_ms == 0 => {
            let body = r#"{"status":"off","error":"status snapshots are off (--status-interval-ms 0)","feed":false}"#;
            (404, "Cache-Control: no-cache\r\n", Bytes::from(format!("{body}\n")))
        }
        None => (
            503,
            "Cache-Control: no-cache\r\nRetry-After: 1\r\n",
            Bytes::from(format!(
                "{{\"status\":\"starting\",\"feed\":{feed},\"interval_ms\":{interval_ms}}}\n"
            )),
        ),
    };
    http::response(status, extra, "application/json", &body, keep_alive)
}

/// Gathers one scrape from every loop's stats, the hub and `/proc`.
pub(crate) fn scrape(shared: &Shared) -> Scrape {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let hub_queues = shared.hub.queue_lengths();
    let hub_lags = shared.hub.lags();
    let budget = shared.hub.lag_budget().as_secs_f64();
    let mut s = Scrape {
        capacity: shared.capacity as u64,
        published: shared.hub.published(),
        throttled: shared.hub.throttle.replaced(),
        overload: shared.overload.load(Ordering::Acquire),
        hub_capacity: shared.hub.queue_capacity() as u64,
        delivery_lag: Snapshot::sum(shared.stats.iter().map(|l| &l.delivery_lag)),
        process: ProcessScrape {
            open_fds: shared.open_fds.load(Ordering::Relaxed),
            max_fds: shared.max_fds,
            resident_bytes: rlimits::resident_bytes().unwrap_or(0),
            cpu_seconds: rlimits::cpu_seconds().unwrap_or(0.0),
            start_time_seconds: shared.start_time_seconds,
        },
        config: {
            let r = &shared.live.stats;
            ConfigScrape {
                reloads_ok: r.ok.load(Ordering::Relaxed),
                reloads_error: r.error.load(Ordering::Relaxed),
                last_success_seconds: r.last_success.load(Ordering::Relaxed),
                hash: r.hash.lock().map(|h| h.clone()).unwrap_or_default(),
            }
        },
        ..Scrape::default()
    };
    if let Some(bus) = &shared.bus {
        s.bus = Some(bus.scrape());
        s.published = bus.published();
    }
    for (i, l) in shared.stats.iter().enumerate() {
        for (sum, c) in s.rejected.iter_mut().zip(&l.rejected) {
            *sum += get(c);
        }
        for (sum, c) in s.closed.iter_mut().zip(&l.closed) {
            *sum += get(c);
        }
        for (sum, c) in s.evicted.iter_mut().zip(&l.evicted) {
            *sum += get(c);
        }
        s.conflated += get(&l.conflated);
        s.shed += get(&l.shed);
        s.poll_truncated += get(&l.poll_truncated);
        s.poll_skipped += get(&l.poll_skipped);
        s.gaps += get(&l.gaps_reported);
        s.tokens_expired += get(&l.tokens_expired);
        s.history_events = s.history_events.max(get(&l.history_events));
        s.history_bytes = s.history_bytes.max(get(&l.history_bytes));
        s.loops.push(LoopScrape {
            connections: get(&l.connections),
            streams: get(&l.streams),
            accepted: get(&l.accepted),
            deliveries: get(&l.deliveries),
            bytes_written: get(&l.bytes_written),
            frames_written: get(&l.frames_written),
            writes: get(&l.writes),
            outbox_queued_bytes: get(&l.outbox_queued_bytes),
            write_blocked: get(&l.write_blocked),
            hub_queue: hub_queues.get(i).copied().unwrap_or(0) as u64,
            hub_lag_seconds: hub_lags.get(i).map_or(0.0, std::time::Duration::as_secs_f64),
            saturation: match hub_lags.get(i) {
                Some(lag) if budget > 0.0 => lag.as_secs_f64() / budget,
                _ => 0.0,
            },
            intake_pauses: get(&l.intake_pauses),
            loop_lag_seconds: get(&l.loop_lag_us) as f64 / 1e6,
            up: shared.loop_up.get(i).is_some_and(|u| u.load(Ordering::Relaxed)),
            iteration: Snapshot::sum(std::iter::once(&l.iteration)),
        });
    }
    s
}
