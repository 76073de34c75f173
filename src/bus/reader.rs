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

use super::lineage::Lineage;
use super::{Bus, BusError, Connection, Entry, GapReason, Read, StreamId};
use crate::hub::{Delivery, Event, Hub, Lost};
use crate::publish::Class;
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
/// A reader that has read none of this node's own appends for this long drops its
/// connection and reconnects (the stale-connection watchdog).
const STALE_AFTER: Duration = Duration::from_secs(5);
/// How often the reader samples its lag (one `GET` round trip).
const LAG_SAMPLE: Duration = Duration::from_secs(1);

/// Interned topic names, so the events of one topic share one `Arc<str>`.
#[derive(Default)]
pub(super) struct Topics(HashMap<String, Arc<str>>);

impl Topics {
    pub(super) fn get(&mut self, name: &str) -> Arc<str> {
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
    event_on(e, topics.get(&e.topic), now)
}

fn event_on(e: &Entry, topic: Arc<str>, now: Instant) -> Arc<Event> {
    Arc::new(Event {
        id: e.id,
        topic,
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

/// What the reader has read so far.
struct Position {
    /// The id of the last entry of ours read.
    last: u64,
    /// Its position (`n`), when it had one.
    last_n: Option<u64>,
    /// The raw id read last, ours or another writer's: the next read starts after it.
    cursor: StreamId,
    lineage: Lineage,
}

/// Reads until the hub is closed.
pub(super) fn run(bus: &Bus, hub: &Hub) {
    let last = bus.start_after;
    let mut pos = Position {
        last,
        last_n: bus.start_n,
        cursor: StreamId { ms: last, seq: 0 },
        lineage: Lineage::new(last),
    };
    let mut conn: Option<Box<dyn Connection>> = None;
    let mut backoff = BACKOFF_MIN;
    let mut topics = Topics::default();
    let mut was_down = false;
    let mut watch = Watchdog::default();
    while !hub.is_closed() {
        let Some(c) = conn.as_mut() else {
            match bus.connector.connect(READ_TIMEOUT) {
                Ok(c) => {
                    // `backoff` is reset by a successful read, not here: a connection that
                    // opens but fails every read must not be retried without a pause.
                    conn = Some(c);
                    watch = Watchdog::default();
                    bus.connected.store(true, Ordering::Release);
                    if was_down {
                        bus.reconnects.fetch_add(1, Ordering::Relaxed);
                        log::info!(
                            "bus {}: reader reconnected; reading after id {}",
                            bus.connector.describe(),
                            pos.last
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
        let read = c.read_after(pos.cursor, READ_COUNT, BLOCK);
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                log::warn!("bus {}: reader lost the bus ({e}); reconnecting", bus.connector.describe());
                (conn, was_down) = (None, true);
                bus.connected.store(false, Ordering::Release);
                sleep_unless_closed(hub, jittered(backoff));
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        read.note_malformed(&bus.foreign, "reader");
        let items = take(bus, c.as_mut(), &mut pos, &read, &mut topics);
        bus.saw(pos.last);
        deliver(hub, &items);
        if let Err(e) = watch.sample_lag(bus, c.as_mut(), &pos) {
            log::warn!("bus {}: reader lost the bus ({e}); reconnecting", bus.connector.describe());
            (conn, was_down) = (None, true);
            bus.connected.store(false, Ordering::Release);
        } else if watch.stale(bus, pos.last, !read.entries.is_empty()) {
            log::warn!(
                "bus {}: reader connection is stale (this node appended past id {} and read none of \
                 it for {STALE_AFTER:?}); reconnecting",
                bus.connector.describe(),
                pos.last
            );
            bus.stale.fetch_add(1, Ordering::Relaxed);
            conn = None;
        }
    }
    bus.connected.store(false, Ordering::Release);
}

/// Turns one read into what the loops get, in order: each new entry as an event, preceded
/// by the losses it reveals (invariant 3 of [`super::redis`]):
/// - positions that go back: the bus lost a tail (restarted empty, or failed over without
///   it), and which topics it held is gone with it: every topic may have lost the ids
///   between the last one read and this entry;
/// - positions that jump: entries were trimmed before they were read; the topics hash says
///   which topics' newest reliable events fell in the hole, and the `tprev` of each later
///   reliable entry says whether its topic lost any ([`Lineage`]).
///
/// A failed look into the topics hash reports the hole on every topic: the entries are
/// taken in any case, so nothing read is ever dropped.
fn take(
    bus: &Bus,
    conn: &mut dyn Connection,
    pos: &mut Position,
    read: &Read,
    topics: &mut Topics,
) -> Vec<Delivery> {
    let now = Instant::now();
    let mut items = Vec::with_capacity(read.entries.len());
    for e in &read.entries {
        if e.id <= pos.last {
            continue;
        }
        let topic = topics.get(&e.topic);
        match (pos.last_n, e.n) {
            (Some(last_n), Some(n)) if n <= last_n => {
                log::warn!(
                    "bus: positions went back ({last_n} read, now {n}): the bus lost its tail; ids \
                     {}..{} may be lost on every topic",
                    pos.last + 1,
                    e.id
                );
                bus.gaps[GapReason::BusReset as usize].fetch_add(1, Ordering::Relaxed);
                pos.lineage.forget_all(e.id - 1);
                if e.id > pos.last + 1 {
                    items.push(lost(None, pos.last + 1, e.id - 1));
                }
            }
            (Some(last_n), Some(n)) if n > last_n + 1 => {
                log::warn!(
                    "bus: {} entries (ids {}..{}) were trimmed before this node read them",
                    n - last_n - 1,
                    pos.last + 1,
                    e.id
                );
                bus.gaps[GapReason::Trimmed as usize].fetch_add(1, Ordering::Relaxed);
                pos.lineage.hole_after(pos.last);
                match conn.topics_newest_in(pos.last, e.id) {
                    Ok(Some(hit)) => {
                        for (name, to) in hit {
                            let t = topics.get(&name);
                            if let Some((from, to)) = pos.lineage.lost_through(&t, to, pos.last) {
                                items.push(lost(Some(t), from, to));
                            }
                        }
                    }
                    other => {
                        if let Err(err) = other {
                            log::warn!("bus: cannot tell which topics the trim cost ({err}): telling all");
                        }
                        items.push(lost(None, pos.last + 1, e.id - 1));
                    }
                }
            }
            _ => {}
        }
        if e.class == Class::Reliable {
            if let Some((from, to)) = pos.lineage.read_reliable(&topic, e.id, e.tprev) {
                items.push(lost(Some(topic.clone()), from, to));
            }
        }
        pos.last = e.id;
        pos.last_n = e.n;
        items.push(Delivery::Event(event_on(e, topic, now)));
    }
    pos.cursor = pos.cursor.max(read.last.unwrap_or_default()).max(StreamId { ms: pos.last, seq: 0 });
    items
}

fn lost(topic: Option<Arc<str>>, from: u64, to: u64) -> Delivery {
    Delivery::Lost(Arc::new(Lost { topic, from, to }))
}

/// Notices a reader connection that is open but no longer receives (say, still attached to a
/// Redis that was replaced): this node's own appends are the proof that there is something
/// to read. Also samples the reader's lag.
#[derive(Default)]
struct Watchdog {
    /// Since when this node has appended ids the reader has not read.
    unread_since: Option<Instant>,
    /// When the lag was sampled last.
    lag_sampled: Option<Instant>,
}

impl Watchdog {
    /// `true` when this node's appends have gone unread for [`STALE_AFTER`].
    fn stale(&mut self, bus: &Bus, last: u64, progressed: bool) -> bool {
        let appended = bus.appended.load(Ordering::Acquire);
        if progressed || appended <= last {
            self.unread_since = None;
            return false;
        }
        let since = *self.unread_since.get_or_insert_with(Instant::now);
        since.elapsed() >= STALE_AFTER
    }

    /// Every [`LAG_SAMPLE`], the entries in the bus after the last one read.
    fn sample_lag(&mut self, bus: &Bus, conn: &mut dyn Connection, pos: &Position) -> Result<(), BusError> {
        if self.lag_sampled.is_some_and(|t| t.elapsed() < LAG_SAMPLE) {
            return Ok(());
        }
        self.lag_sampled = Some(Instant::now());
        let head = conn.entries_appended()?;
        let lag = pos.last_n.map_or(0, |n| head.saturating_sub(n));
        bus.lag.store(lag, Ordering::Relaxed);
        Ok(())
    }
}

/// Hands `items` to every loop in order, waiting while a loop's channel is full.
fn deliver(hub: &Hub, items: &[Delivery]) {
    let mut done = 0;
    let mut backoff = Duration::from_micros(50);
    while done < items.len() {
        let n = hub.deliver(&items[done..]);
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
