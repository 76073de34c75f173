//! The bus reader thread: one per process. Reads the bus in id order, in batches of up to
//! [`READ_COUNT`], turns each entry into one shared [`Event`] (its frame encoded once) and
//! hands the batch to every loop through the hub, waiting while the loops' channels are
//! full (invariant 4 of [`crate::bus`]). A failed read or connect is retried after a
//! jittered backoff (reset by a successful read) and reading resumes after the raw stream id
//! read last, so nothing is read twice. An entry another writer added (malformed, or an id
//! not `<n>-0`) is skipped, counted in the read gaps and logged once per read: it never
//! stops delivery.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Bus, Connection, Entry, StreamId};
use crate::hub::{Event, Hub};
use crate::sse;

/// Entries read per round trip: bounds the reader's batch (and its memory) while keeping
/// round trips per event low.
pub(super) const READ_COUNT: usize = 1024;
/// How long one read waits on the bus for a new entry (the reader checks for shutdown in
/// between).
const BLOCK: Duration = Duration::from_millis(200);
/// The reader's socket timeout: longer than [`BLOCK`], so a dead connection is an error.
const READ_TIMEOUT: Duration = Duration::from_millis(200 + 2_000);
/// Shortest and longest pause between reconnection attempts (doubled per failure, jittered).
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Topic names interned at most; past it the table is cleared (bounded memory).
const MAX_INTERNED_TOPICS: usize = 65_536;

/// Interned topic names, so the events of one topic share one `Arc<str>`.
#[derive(Default)]
pub(super) struct Topics(HashMap<String, Arc<str>>);

impl Topics {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(t) = self.0.get(name) {
            return t.clone();
        }
        if self.0.len() >= MAX_INTERNED_TOPICS {
            self.0.clear();
        }
        let t: Arc<str> = Arc::from(name);
        self.0.insert(name.to_string(), t.clone());
        t
    }
}

/// One bus entry as the loops' shared event.
pub(super) fn event(e: &Entry, topics: &mut Topics, now: Instant) -> Arc<Event> {
    Arc::new(Event {
        id: e.id,
        topic: topics.get(&e.topic),
        class: e.class,
        key: e.key.as_deref().map(Arc::from),
        frame: sse::frame_with_u64_id(e.id, &e.body),
        accepted_at: now,
    })
}

/// A pause of about `base`, jittered by up to a half so that nodes do not reconnect in step.
fn jittered(base: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let spread = (base.as_micros() as u64 / 2).max(1);
    base / 2 + Duration::from_micros(u64::from(nanos) % spread) + base / 4
}

/// Reads until the hub is closed.
pub(super) fn run(bus: &Bus, hub: &Hub) {
    let mut last = bus.start_after;
    // The raw id read last, ours or another writer's: the next read starts after it.
    let mut cursor = StreamId { ms: last, seq: 0 };
    let mut conn: Option<Box<dyn Connection>> = None;
    let mut backoff = BACKOFF_MIN;
    let mut topics = Topics::default();
    let mut was_down = false;
    while !hub.is_closed() {
        let Some(c) = conn.as_mut() else {
            match bus.connector.connect(READ_TIMEOUT) {
                Ok(c) => {
                    // `backoff` is reset by a successful read, not here: a connection that
                    // opens but fails every read must not be retried without a pause.
                    conn = Some(c);
                    bus.connected.store(true, Ordering::Release);
                    if was_down {
                        bus.reconnects.fetch_add(1, Ordering::Relaxed);
                        log::info!(
                            "bus {}: reader reconnected; reading after id {last}",
                            bus.connector.describe()
                        );
                        was_down = false;
                    }
                }
                Err(e) => {
                    // Also the first connection: the one `Bus::open` made is not the reader's.
                    bus.connected.store(false, Ordering::Release);
                    was_down = true;
                    log::debug!("bus {}: reader cannot connect: {e}", bus.connector.describe());
                    sleep_unless_closed(hub, jittered(backoff));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            continue;
        };
        let read = match c.read_after(cursor, READ_COUNT, BLOCK) {
            Ok(read) => read,
            Err(e) => {
                log::warn!("bus {}: reader lost the bus ({e}); reconnecting", bus.connector.describe());
                bus.connected.store(false, Ordering::Release);
                conn = None;
                was_down = true;
                sleep_unless_closed(hub, jittered(backoff));
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        read.note_malformed(&bus.skipped, "reader");
        cursor = cursor.max(read.last.unwrap_or_default());
        let now = Instant::now();
        let mut batch = Vec::with_capacity(read.entries.len());
        for e in &read.entries {
            if e.id <= last {
                continue;
            }
            if e.id > last + 1 {
                // Item 5 of the bus issue turns this into gap notices; counted and logged now.
                bus.skipped.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "bus: ids {}..={} were never read by this node (trimmed before it read them, or \
                     the bus lost data)",
                    last + 1,
                    e.id - 1
                );
            }
            last = e.id;
            batch.push(event(e, &mut topics, now));
        }
        cursor = cursor.max(StreamId { ms: last, seq: 0 });
        bus.saw(last);
        deliver(hub, &batch);
    }
    bus.connected.store(false, Ordering::Release);
}

/// Hands `batch` to every loop in order, waiting while a loop's channel is full.
fn deliver(hub: &Hub, batch: &[Arc<Event>]) {
    let mut done = 0;
    let mut backoff = Duration::from_micros(50);
    while done < batch.len() {
        let n = hub.deliver(&batch[done..]);
        if n == 0 {
            if hub.is_closed() {
                return;
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(2));
        } else {
            backoff = Duration::from_micros(50);
        }
        done += n;
    }
}

fn sleep_unless_closed(hub: &Hub, d: Duration) {
    let until = Instant::now() + d;
    while !hub.is_closed() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
