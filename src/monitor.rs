//! The node's own watcher, one thread: every `--status-interval-ms` it
//! 1. probes every loop through its channel (`sse_loop_up`; a stuck loop reads 0),
//! 2. decides overload mode with hysteresis: on when the longest recent loop iteration
//!    reaches `--overload-lag-ms` or all outboxes together hold `--overload-queued-bytes`;
//!    off only after both have stayed below half of their thresholds for
//!    [`RECOVERY_HOLD`]. While on, the `latest` throttle windows are 4× wider and loops shed
//!    droppable events and tell streams (`system.overloaded` / `system.recovered`);
//! 3. samples the open descriptor count for `/metrics` (too slow to list on a loop);
//! 4. builds a status snapshot (JSON, with a `bus` object under `--bus`), keeps the newest
//!    for `GET /status.json` and, without a bus, publishes it on topic [`STATUS_TOPIC`] (the
//!    status page's feed) as a `latest` event so a slow page only ever gets the newest one.
//!
//! With `--bus` the feed stays off: the bus assigns every id, and a snapshot sequenced here
//! would take an id the bus hands out too (or, delivered locally between bus events, break
//! every loop's id order). The snapshot says `"feed": false` and the page polls
//! `/status.json` instead; the snapshot is node-local and never touches the bus.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bus::BusScrape;
use crate::health::Probe;
use crate::histogram::Snapshot;
use crate::hub::LoopMsg;
use crate::publish::{self, Message};
use crate::worker::Shared;

/// The reserved topic of the status feed (publishers may not use the
/// [`crate::topics::RESERVED_PREFIX`] prefix).
pub const STATUS_TOPIC: &str = "sse-edge.status";
/// How long both overload signals must stay low before overload mode ends.
pub const RECOVERY_HOLD: Duration = Duration::from_secs(2);
/// Throttle window multiplier in overload mode.
pub const OVERLOAD_THROTTLE_FACTOR: u32 = 4;

struct Totals {
    at: Instant,
    published: u64,
    deliveries: u64,
    dropped: u64,
    gaps: u64,
    lag: Snapshot,
    /// The bus's gauges and append round trips, with `--bus`.
    bus: Option<BusScrape>,
}

/// Runs until the node stops or drains.
pub(crate) fn run(shared: Arc<Shared>) {
    let interval = Duration::from_millis(shared.config.status_interval_ms.max(50));
    let mut probe: Option<Arc<Probe>> = None;
    let mut calm_since: Option<Instant> = None;
    let mut last = totals(&shared);
    while !shared.stop.load(Ordering::Acquire) && !shared.draining.load(Ordering::Acquire) {
        std::thread::sleep(interval.min(Duration::from_millis(50)));
        if last.at.elapsed() < interval {
            continue;
        }
        if let Some(p) = probe.take() {
            for (i, up) in shared.loop_up.iter().enumerate() {
                up.store(!p.missing().contains(&i), Ordering::Relaxed);
            }
        }
        let p = Arc::new(Probe::new(shared.hub.loops()));
        for i in 0..shared.hub.loops() {
            shared.hub.send_control(i, LoopMsg::Ping(p.clone()));
        }
        probe = Some(p);
        if shared.draining.load(Ordering::Acquire) {
            // Thousands of streams closing at once look like lag; a draining node is not
            // overloaded.
            break;
        }
        update_overload(&shared, &mut calm_since);
        if let Some(n) = crate::sys::rlimits::open_fds() {
            shared.open_fds.store(n, Ordering::Relaxed);
        }
        let now = totals(&shared);
        if shared.config.status_interval_ms > 0 {
            let status = snapshot(&shared, &last, &now);
            // With a bus every id is the bus's (module doc): no feed, `/status.json` only.
            if shared.bus.is_none() {
                publish_status(&shared, &status);
            }
            *shared.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.to_string().into());
        }
        last = now;
    }
}

fn loop_signals(shared: &Shared) -> (Duration, u64) {
    let lag_us = shared.stats.iter().map(|l| l.loop_lag_us.load(Ordering::Relaxed)).max().unwrap_or(0);
    let queued = shared.stats.iter().map(|l| l.outbox_queued_bytes.load(Ordering::Relaxed)).sum();
    (Duration::from_micros(lag_us), queued)
}

fn update_overload(shared: &Shared, calm_since: &mut Option<Instant>) {
    let live = shared.live.get();
    let c = &live.config;
    let (lag, queued) = loop_signals(shared);
    let lag_limit = Duration::from_millis(c.overload_lag_ms);
    let hot = lag >= lag_limit || queued >= c.overload_queued_bytes;
    let calm = lag < lag_limit / 2 && queued < c.overload_queued_bytes / 2;
    let on = shared.overload.load(Ordering::Acquire);
    if !on && hot {
        shared.overload.store(true, Ordering::Release);
        shared.hub.throttle.set_multiplier(OVERLOAD_THROTTLE_FACTOR);
        shared.hub.wake_all();
        *calm_since = None;
        log::warn!(
            "overload mode ON: loop lag {lag:?} (limit {lag_limit:?}), queued {queued} bytes (limit {}); \
             shedding droppable events, throttle windows x{OVERLOAD_THROTTLE_FACTOR}",
            c.overload_queued_bytes
        );
    } else if on {
        let since = if calm { *calm_since.get_or_insert_with(Instant::now) } else { Instant::now() };
        if !calm {
            *calm_since = None;
        }
        if calm && since.elapsed() >= RECOVERY_HOLD {
            shared.overload.store(false, Ordering::Release);
            shared.hub.throttle.set_multiplier(1);
            shared.hub.wake_all();
            *calm_since = None;
            log::warn!("overload mode OFF: loop lag {lag:?}, queued {queued} bytes");
        }
    }
}

fn totals(shared: &Shared) -> Totals {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let published = shared.bus.as_ref().map_or_else(|| shared.hub.published(), |b| b.published());
    let mut t = Totals {
        at: Instant::now(),
        published: published.iter().sum(),
        deliveries: 0,
        dropped: shared.hub.throttle.replaced(),
        gaps: 0,
        lag: Snapshot::sum(shared.stats.iter().map(|l| &l.delivery_lag)),
        bus: shared.bus.as_ref().map(|b| b.scrape()),
    };
    for l in &shared.stats {
        t.deliveries += get(&l.deliveries);
        t.dropped += l.evicted.iter().map(get).sum::<u64>() + get(&l.conflated) + get(&l.shed);
        t.gaps += get(&l.gaps_reported);
    }
    t
}

/// The most saturated loop's hub lag over `--max-delivery-lag-ms` (0 without a budget).
fn saturation(shared: &Shared) -> f64 {
    let budget = shared.hub.lag_budget().as_secs_f64();
    let worst = shared.hub.lags().into_iter().max().unwrap_or_default().as_secs_f64();
    if budget > 0.0 {
        worst / budget
    } else {
        0.0
    }
}

/// The status snapshot between two totals: the feed's `status` event and `/status.json`.
fn snapshot(shared: &Shared, last: &Totals, now: &Totals) -> serde_json::Value {
    let secs = now.at.duration_since(last.at).as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let lag_p99_ms = now.lag.since(&last.lag).quantile(0.99).map_or(0.0, |s| s * 1000.0);
    let mut status = serde_json::json!({
        "ts_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "connections": shared.connections.load(Ordering::Relaxed),
        "streams": shared.stats.iter().map(|l| get(&l.streams)).sum::<u64>(),
        "capacity": shared.capacity,
        "events_per_sec": rate(now.published, last.published),
        "deliveries_per_sec": rate(now.deliveries, last.deliveries),
        "dropped_per_sec": rate(now.dropped, last.dropped),
        "gaps_per_sec": rate(now.gaps, last.gaps),
        "lag_p99_ms": lag_p99_ms,
        "overload": shared.overload.load(Ordering::Acquire),
        "loops": shared.hub.loops(),
        "saturation": saturation(shared),
        "feed": shared.bus.is_none(),
        "interval_ms": shared.config.status_interval_ms,
    });
    if let Some(b) = &now.bus {
        let appends = match &last.bus {
            Some(last) => b.publish_seconds.since(&last.publish_seconds),
            None => b.publish_seconds.clone(),
        };
        status["bus"] = serde_json::json!({
            "connected": b.connected,
            "inflight": b.inflight,
            "window": b.window,
            "reconnects": b.reconnects,
            "lag": b.lag,
            "gaps": { "trimmed": b.gaps[0], "bus_reset": b.gaps[1] },
            "publish_p99_ms": appends.quantile(0.99).map(|s| s * 1000.0),
        });
    }
    status
}

fn publish_status(shared: &Shared, status: &serde_json::Value) {
    let msg = Message::new(STATUS_TOPIC, status.to_string()).event("status").latest("node");
    if let Ok(prepared) = publish::prepare(&msg, shared.config.outbox_max_bytes) {
        // Best effort: a full hub skips one snapshot rather than waiting.
        let _ = shared.hub.try_publish(std::slice::from_ref(&prepared), None);
    }
}
