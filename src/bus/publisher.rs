//! The bus publisher thread: takes every submission queued since its last round trip (up
//! to [`APPEND_MAX`] events), appends them to the bus in one call, and answers each ticket
//! with its ids (invariant 3 of [`crate::bus`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::{Bus, BusError, Connection, Submission, APPEND_MAX};
use crate::histogram;
use crate::hub::{Hub, SUPERSEDED};
use crate::publish::{Class, Prepared};

/// How often an idle publisher checks for shutdown.
const IDLE_CHECK: Duration = Duration::from_millis(100);
/// After a failed connection attempt, submissions fail at once for this long instead of
/// each waiting for a connect timeout.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// How often the publish histogram is copied into the shared cells.
const HISTOGRAM_PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Runs until the hub is closed; then answers whatever is still queued with an error.
pub(super) fn run(bus: &Bus, hub: &Hub) {
    let mut conn: Option<Box<dyn Connection>> = None;
    let mut failed_at: Option<Instant> = None;
    let mut local = histogram::Local::default();
    let mut published_at = Instant::now();
    let io_timeout = bus.io_timeout;
    // A submission taken from the queue that did not fit in the last batch: the next one's.
    let mut carry: Option<Submission> = None;
    loop {
        let first = match carry.take().map_or_else(|| bus.rx.recv_timeout(IDLE_CHECK), Ok) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) if !hub.is_closed() => continue,
            _ => break,
        };
        let (batch, events, rest) = collect(first, |s| s.events.len(), || bus.rx.try_recv().ok());
        carry = rest;
        if conn.is_none() && failed_at.map_or(true, |at| at.elapsed() >= RECONNECT_PAUSE) {
            match bus.connector.connect(io_timeout) {
                Ok(c) => {
                    conn = Some(c);
                    failed_at = None;
                }
                Err(e) => {
                    log::warn!("bus {}: publisher cannot connect: {e}", bus.connector.describe());
                    failed_at = Some(Instant::now());
                }
            }
        }
        let started = Instant::now();
        let outcome = match conn.as_mut() {
            Some(c) => append(bus, hub, c.as_mut(), &batch),
            None => {
                // Nothing was claimed from the throttle: hand the values back.
                for s in &batch {
                    hub.throttle.abandon(&s.events);
                }
                Err(BusError::Unreachable("not connected".into()))
            }
        };
        match outcome {
            Ok(ids) => {
                local.record(started.elapsed());
                let mut ids = ids.into_iter();
                for s in &batch {
                    s.ticket.complete(Ok(ids.by_ref().take(s.events.len()).collect()));
                }
            }
            Err(e) => {
                if matches!(e, BusError::Unreachable(_) | BusError::Unknown(_)) {
                    conn = None;
                }
                log::debug!("bus: append of {events} events failed: {e}");
                for s in &batch {
                    s.ticket.complete(Err(e.clone()));
                }
            }
        }
        bus.inflight.fetch_sub(events, Ordering::SeqCst);
        if bus.window_waiters.swap(false, Ordering::SeqCst) {
            hub.wake_all();
        }
        for s in &batch {
            if let Some(i) = s.ticket.from_loop {
                hub.wake_loop(i);
            }
        }
        if published_at.elapsed() >= HISTOGRAM_PUBLISH_EVERY {
            local.publish(&bus.publish_seconds);
            published_at = Instant::now();
        }
    }
    local.publish(&bus.publish_seconds);
    for s in carry.into_iter().chain(bus.rx.try_iter()) {
        s.ticket.complete(Err(BusError::Unreachable("the server is shutting down".into())));
    }
}

/// One batch: `first` and the queued submissions after it (from `next`) while the total of
/// their `len`s stays within [`APPEND_MAX`]; the submission that would pass it is returned
/// to lead the next batch. Returns the batch, its event count and that submission.
fn collect<T>(
    first: T,
    len: impl Fn(&T) -> usize,
    mut next: impl FnMut() -> Option<T>,
) -> (Vec<T>, usize, Option<T>) {
    let mut events = len(&first);
    let mut batch = vec![first];
    while events < APPEND_MAX {
        let Some(s) = next() else { break };
        if events + len(&s) > APPEND_MAX {
            return (batch, events, Some(s));
        }
        events += len(&s);
        batch.push(s);
    }
    (batch, events, None)
}

/// Claims `latest` values from the throttle in submission order (superseded ones get
/// [`SUPERSEDED`]), appends the rest in one call, and returns every event's id in order.
fn append(
    bus: &Bus,
    hub: &Hub,
    conn: &mut dyn Connection,
    batch: &[Submission],
) -> Result<Vec<u64>, BusError> {
    let all: Vec<&Prepared> = batch.iter().flat_map(|s| s.events.iter()).collect();
    let send: Vec<bool> = all.iter().map(|p| p.class != Class::Latest || hub.throttle.claim(p)).collect();
    let sent: Vec<&Prepared> = all.iter().zip(&send).filter(|(_, &s)| s).map(|(p, _)| *p).collect();
    let mut next =
        if sent.is_empty() { 0 } else { conn.append(&sent, bus.seen.load(Ordering::Acquire) + 1)? };
    if !sent.is_empty() {
        bus.saw(next + sent.len() as u64 - 1);
        bus.appended.fetch_max(next + sent.len() as u64 - 1, Ordering::AcqRel);
        for p in &sent {
            bus.published[p.class.index()].fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(send
        .iter()
        .map(|&s| {
            if s {
                next += 1;
                next - 1
            } else {
                SUPERSEDED
            }
        })
        .collect())
}

/// The throttle's trailing edge with a bus: publishes each held value whose window ended
/// through the bus, waiting for window room; a bus error is retried with a backoff until the
/// bus answers or the server shuts down (the value is never dropped silently).
pub fn run_throttle_flusher(bus: &Bus, hub: &Hub) {
    loop {
        let (due, stopped) = hub.throttle.next_due();
        if stopped {
            return;
        }
        let mut backoff = Duration::from_millis(10);
        loop {
            match bus.publish_blocking(hub, &due) {
                Ok(_) => break,
                Err(_) if hub.is_closed() => return,
                Err(e) => {
                    log::warn!("bus: throttled values of {} keys wait for the bus: {e}", due.len());
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_never_passes_append_max() {
        let mut queue = vec![APPEND_MAX - 10, 10, 1, 5].into_iter();
        let (batch, events, rest) = collect(1, |&n| n, || queue.next());
        assert_eq!((batch, events, rest), (vec![1, APPEND_MAX - 10], APPEND_MAX - 9, Some(10)));
        let (batch, events, rest) = collect(10, |&n| n, || queue.next());
        assert_eq!((batch, events, rest), (vec![10, 1, 5], 16, None));
        let mut full = vec![1].into_iter();
        let (batch, events, rest) = collect(APPEND_MAX, |&n| n, || full.next());
        assert_eq!((batch, events, rest), (vec![APPEND_MAX], APPEND_MAX, None));
        assert_eq!(full.next(), Some(1), "a full batch takes nothing more from the queue");
    }
}
