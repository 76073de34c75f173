//! Scale-out: an external bus (Redis Streams) sequences the events of every node.
//!
//! With `--bus`, the bus is the sequencer instead of the process: every publish of this node
//! (HTTP raw, JSON, NDJSON batch, the embedded `Publisher`, the `latest` throttle's trailing
//! edge) is appended to the bus, which decides its id, and one reader per process reads the
//! bus back in batches and hands each event to every loop through the hub's bounded
//! channels ([`crate::hub::Hub::deliver`]). A node never delivers its own publishes locally
//! first: what every subscriber of every node sees is the bus's one order.
//!
//! The boundary to a bus is small ([`Connector`], [`Connection`]) so that another one (NATS
//! JetStream) can follow without touching the loops; [`redis`] implements it.
//!
//! Invariants:
//! 1. Ids come from the bus, strictly increasing in the bus's one order, contiguous within a
//!    batch (the first id of an append and the batch's length give every id), below 2^53.
//!    Each append passes a floor (the highest id this node has seen, plus one), so a bus that
//!    lost its data starts above every id this node handed out: ids are never reused.
//! 2. At most `--bus-publish-window` events are in flight (appended and not yet answered);
//!    a publisher that finds the window full waits exactly as on a full hub (an HTTP
//!    publisher's connection is parked, `try_publish` returns `Full`).
//! 3. One publisher thread owns one connection and appends everything queued to it in one
//!    round trip (up to [`APPEND_MAX`] events), so a node pushes many events per round trip.
//!    It claims `latest` values from the throttle in submission order before appending them,
//!    so within a node an older value never follows a newer one (hub invariant 5).
//! 4. One reader thread per process reads the bus in id order and waits for room in the
//!    loops' channels, so backpressure reaches the bus reads, not memory.
//! 5. A bus error answers the publishes it affects at once; nothing queues without a bound.
//!    An append that was never written whole (no connection, a failed write, an error
//!    reply) is "not appended": `503` + `Retry-After` over HTTP,
//!    [`crate::PublishError::Unavailable`] embedded. One written whose answer never came is
//!    "outcome unknown" ([`BusError::Unknown`]): `504` + `Retry-After`,
//!    [`crate::PublishError::OutcomeUnknown`]. A `503` is never given for events that may
//!    still be delivered.

pub mod config;
mod lineage;
mod publisher;
mod reader;
pub mod redis;
pub mod resume;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::histogram;
use crate::hub::{Event, Hub, PublishError};
use crate::publish::{Class, Prepared};

pub use config::BusConfig;
pub use publisher::run_throttle_flusher;

/// Most events appended in one round trip (one script call): bounds the request size and
/// the time one append holds the bus.
pub const APPEND_MAX: usize = 4096;

/// An embedded publisher finding the window full sleeps from this ...
const WINDOW_BACKOFF_MIN: Duration = Duration::from_micros(50);
/// ... doubling up to this, so it notices room within 2 ms without spinning.
const WINDOW_BACKOFF_MAX: Duration = Duration::from_millis(2);
/// How often a blocked embedded publisher looks whether the server is shutting down.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(100);

/// How many of `wanted` events one submission takes with `inflight` of `window` in flight:
/// what the window has room for, and at most [`APPEND_MAX`] (one append's worth).
fn reservation(window: usize, inflight: usize, wanted: usize) -> usize {
    window.saturating_sub(inflight).min(wanted).min(APPEND_MAX)
}

/// The bus failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached or the connection broke; the text says why.
    #[error("bus unreachable: {0}")]
    Unreachable(String),
    /// The bus answered something this node cannot use.
    #[error("bus protocol error: {0}")]
    Protocol(String),
    /// The append reached the bus but its answer did not come back (the connection timed
    /// out or broke after the request was written): the events may or may not have been
    /// appended. Never reported as "not appended" (invariant 5).
    #[error(
        "the bus did not answer an append it was sent ({0}): the events may or may not have been appended"
    )]
    Unknown(String),
}

impl BusError {
    /// The events may have been appended: the connection is not to be trusted either.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, BusError::Unknown(_))
    }
}

/// What a publisher is told when the bus failed it (here, not in the hub: the hub sits below
/// the bus and knows nothing of it).
impl From<BusError> for PublishError {
    fn from(e: BusError) -> PublishError {
        if e.outcome_unknown() {
            PublishError::OutcomeUnknown(e.to_string())
        } else {
            PublishError::Unavailable(e.to_string())
        }
    }
}

/// Why the reader told subscribers of a loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// Entries were trimmed before the reader read them.
    Trimmed = 0,
    /// The bus lost its tail (restarted empty, or failed over without it).
    BusReset = 1,
}

impl GapReason {
    /// Every reason, by index.
    pub const ALL: [GapReason; 2] = [GapReason::Trimmed, GapReason::BusReset];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            GapReason::Trimmed => "trimmed",
            GapReason::BusReset => "bus_reset",
        }
    }
}

/// One event as stored in the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The id the bus gave it.
    pub id: u64,
    /// Its position in the bus: entries appended before it, plus one (dense, so a jump is
    /// a hole and a step back a bus that lost its tail). `None` in entries without one.
    pub n: Option<u64>,
    /// The id of the previous reliable event of its topic (0: none known, or not reliable).
    pub tprev: u64,
    /// Topic.
    pub topic: String,
    /// Delivery class.
    pub class: Class,
    /// Conflation key of a `latest` event.
    pub key: Option<String>,
    /// The encoded frame without its `id:` line ([`Prepared::body`]).
    pub body: Bytes,
}

/// A stream entry's raw id `<ms>-<seq>`: this node's entries are `<id>-0`, another writer's
/// (say an operator's `XADD ... *`) may be anything; the reader reads after the raw id it
/// last read so such an entry is passed, never read again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    /// The part before the dash (our event id).
    pub ms: u64,
    /// The part after the dash (0 in our entries).
    pub seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What one read of the bus found: the entries that are ours, in id order, and those it
/// skipped (not written by a node: malformed, or ids not `<n>-0`).
#[derive(Debug, Default)]
pub struct Read {
    /// Our entries, in id order.
    pub entries: Vec<Entry>,
    /// Entries skipped as not ours.
    pub malformed: usize,
    /// Why the first skipped entry was refused (for the log).
    pub first_error: Option<BusError>,
    /// The raw id of the last entry read, ours or not.
    pub last: Option<StreamId>,
}

impl Read {
    /// Entries read, ours or not.
    pub fn len(&self) -> usize {
        self.entries.len() + self.malformed
    }

    /// Nothing was read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts and logs (once per read) the entries skipped as not ours.
    fn note_malformed(&self, bus_skipped: &AtomicU64, what: &str) {
        if self.malformed > 0 {
            bus_skipped.fetch_add(self.malformed as u64, Ordering::Relaxed);
            log::warn!(
                "bus: {what} skipped {} stream entries another writer added (first: {})",
                self.malformed,
                self.first_error.as_ref().map_or_else(|| "-".to_string(), ToString::to_string)
            );
        }
    }
}

/// Opens connections to a bus.
pub trait Connector: Send + Sync {
    /// A new connection whose reads wait at most `read_timeout`.
    fn connect(&self, read_timeout: Duration) -> Result<Box<dyn Connection>, BusError>;
    /// The bus's address for logs, without credentials.
    fn describe(&self) -> String;
}

/// One connection to a bus.
pub trait Connection: Send {
    /// Appends `events` in order as one unit and returns the id of the first; the others
    /// follow contiguously. With no events, returns the id the next event will get.
    /// `floor`: the lowest id the bus may hand out if it has lost its counter (invariant 1).
    fn append(&mut self, events: &[&Prepared], floor: u64) -> Result<u64, BusError>;
    /// Up to `count` entries after raw id `after` in id order, waiting up to `block` for one.
    fn read_after(&mut self, after: StreamId, count: usize, block: Duration) -> Result<Read, BusError>;
    /// Up to `count` entries from id `from` in id order (`from` itself included), without
    /// waiting (for resume).
    fn range_from(&mut self, from: u64, count: usize) -> Result<Read, BusError>;
    /// The newest `count` entries, oldest first.
    fn tail(&mut self, count: usize) -> Result<Read, BusError>;
    /// Entries ever appended (the next entry's position minus one; 0 for an empty bus).
    fn entries_appended(&mut self) -> Result<u64, BusError>;
    /// The topics whose newest reliable id lies strictly between `after` and `before`, with
    /// that id; `None` when there are too many topics to look through.
    fn topics_newest_in(&mut self, after: u64, before: u64) -> Result<Option<Vec<(String, u64)>>, BusError>;
}

/// A publish handed to the bus publisher; the publisher fills in the outcome.
#[derive(Debug)]
pub struct Ticket {
    outcome: Mutex<Option<Result<Vec<u64>, BusError>>>,
    done: Condvar,
    /// The loop that submitted it (woken when the outcome is in), if any.
    from_loop: Option<usize>,
}

impl Ticket {
    fn new(from_loop: Option<usize>) -> Ticket {
        Ticket { outcome: Mutex::new(None), done: Condvar::new(), from_loop }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Result<Vec<u64>, BusError>>> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn complete(&self, outcome: Result<Vec<u64>, BusError>) {
        *self.lock() = Some(outcome);
        self.done.notify_all();
    }

    /// The outcome, if it is in (taken: later calls return `None`).
    pub fn try_take(&self) -> Option<Result<Vec<u64>, BusError>> {
        self.lock().take()
    }

    /// Waits up to `limit` for the outcome.
    pub fn wait(&self, limit: Duration) -> Option<Result<Vec<u64>, BusError>> {
        let guard = self.lock();
        let (mut guard, _) =
            self.done.wait_timeout_while(guard, limit, |o| o.is_none()).unwrap_or_else(|p| p.into_inner());
        guard.take()
    }
}

struct Submission {
    events: Vec<Prepared>,
    ticket: Arc<Ticket>,
}

/// This node's side of the bus: the publisher's queue and window, and the gauges.
pub struct Bus {
    connector: Arc<dyn Connector>,
    config: BusConfig,
    tx: Sender<Submission>,
    rx: crossbeam_channel::Receiver<Submission>,
    /// Events submitted and not yet answered (invariant 2).
    inflight: AtomicUsize,
    /// A publisher found the window full: the publisher thread wakes every loop when it
    /// frees room, so parked HTTP publishers retry at once.
    window_waiters: AtomicBool,
    /// The highest id this node has seen (appended or read).
    seen: AtomicU64,
    /// The reader's connection is up.
    connected: AtomicBool,
    /// Events appended, by class.
    published: [AtomicU64; 3],
    /// The highest id this node's publisher appended (the stale-reader watchdog's proof
    /// that there is something to read).
    appended: AtomicU64,
    /// Times the reader reconnected.
    reconnects: AtomicU64,
    /// Times the reader dropped a stale connection.
    stale: AtomicU64,
    /// Losses the reader found and told subscribers of, by [`GapReason`].
    gaps: [AtomicU64; 2],
    /// Entries in the bus after the last one the reader read (sampled).
    lag: AtomicU64,
    /// Stream entries skipped as not written by a node (see [`Read`]).
    foreign: AtomicU64,
    /// Round trips of appends.
    publish_seconds: histogram::Cells,
    /// Events read at start to warm the loops' history (taken once the loops are built).
    warm: Mutex<Vec<Arc<Event>>>,
    /// The id after which the reader starts.
    start_after: u64,
    /// The position (`n`) of that entry, when known.
    start_n: Option<u64>,
    /// Socket timeout of the publisher's reads and everyone's writes.
    io_timeout: Duration,
    resume_tx: Sender<resume::Request>,
    resume_rx: crossbeam_channel::Receiver<resume::Request>,
}

/// What a bus gauge scrape reads.
#[derive(Debug, Clone, Default)]
pub struct BusScrape {
    /// The reader's connection is up.
    pub connected: bool,
    /// Events in flight.
    pub inflight: u64,
    /// `--bus-publish-window`.
    pub window: u64,
    /// Reader reconnects.
    pub reconnects: u64,
    /// Stale reader connections dropped.
    pub stale: u64,
    /// Losses told to subscribers, by [`GapReason`].
    pub gaps: [u64; 2],
    /// Entries in the bus the reader has yet to read.
    pub lag: u64,
    /// Entries skipped as another writer's.
    pub foreign: u64,
    /// Append round trips.
    pub publish_seconds: histogram::Snapshot,
}

impl Bus {
    /// Connects, finds where the stream ends and reads the newest `--bus-warm-events` events.
    /// Fails when the bus cannot be reached (the node does not start without its sequencer).
    pub fn open(config: &BusConfig, io_timeout: Duration) -> Result<Bus, BusError> {
        let url = config.url.as_deref().ok_or_else(|| BusError::Protocol("no --bus".into()))?;
        let connector: Arc<dyn Connector> = Arc::new(redis::RedisConnector::new(url, config, io_timeout)?);
        let mut conn = connector.connect(io_timeout)?;
        let tail = conn.tail(config.warm_events.max(1))?;
        if tail.malformed > 0 {
            // Logged only: those after the last of ours are read (and counted) by the reader.
            log::warn!(
                "bus: the stream's newest entries hold {} another writer added; skipped (first: {})",
                tail.malformed,
                tail.first_error.as_ref().map_or_else(|| "-".to_string(), ToString::to_string)
            );
        }
        let tail = tail.entries;
        let (start_after, start_n, warm) = match tail.last() {
            Some(last) => {
                let now = std::time::Instant::now();
                let mut topics = reader::Topics::default();
                let keep = tail.len().min(config.warm_events);
                let warm =
                    tail[tail.len() - keep..].iter().map(|e| reader::event(e, &mut topics, now)).collect();
                (last.id, last.n, warm)
            }
            // Empty: the next id is the first this node can know of.
            None => (conn.append(&[], 1)?.saturating_sub(1), Some(conn.entries_appended()?), Vec::new()),
        };
        log::info!(
            "bus {}: stream {:?} ends at id {start_after}; {} events warm the history",
            connector.describe(),
            config.stream_key(),
            warm.len()
        );
        let (tx, rx) = crossbeam_channel::bounded(config.publish_window);
        let (resume_tx, resume_rx) = crossbeam_channel::bounded(resume::QUEUE);
        Ok(Bus {
            connector,
            config: config.clone(),
            tx,
            rx,
            inflight: AtomicUsize::new(0),
            window_waiters: AtomicBool::new(false),
            seen: AtomicU64::new(start_after),
            connected: AtomicBool::new(true),
            published: Default::default(),
            appended: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            gaps: Default::default(),
            lag: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            publish_seconds: Default::default(),
            warm: Mutex::new(warm),
            start_after,
            start_n,
            io_timeout,
            resume_tx,
            resume_rx,
        })
    }

    /// The first id the loops may learn of: ids below it predate this node (its history
    /// floor), the oldest warm event's id when there are any.
    pub fn first_id(&self) -> u64 {
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).first().map_or(self.start_after + 1, |e| e.id)
    }

    /// The id after the newest the bus held at start.
    pub fn next_id(&self) -> u64 {
        self.start_after + 1
    }

    /// The events that warm every loop's history, oldest first.
    pub(crate) fn warm_events(&self) -> Vec<Arc<Event>> {
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets the warm events once every loop holds them.
    pub(crate) fn clear_warm(&self) {
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Starts the publisher and reader threads; they stop once the hub is closed.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        let (bus, h) = (self.clone(), hub.clone());
        let publisher = std::thread::Builder::new()
            .name("sse-bus-publish".into())
            .spawn(move || publisher::run(&bus, &h))?;
        let (bus, h) = (self.clone(), hub.clone());
        let reader =
            std::thread::Builder::new().name("sse-bus-read".into()).spawn(move || reader::run(&bus, &h))?;
        let (bus, h) = (self.clone(), hub.clone());
        let resumer =
            std::thread::Builder::new().name("sse-bus-resume".into()).spawn(move || resume::run(&bus, &h))?;
        Ok(vec![publisher, reader, resumer])
    }

    /// Queues a resume for the helper thread; `false` when its queue is full.
    pub(crate) fn try_resume(&self, req: resume::Request) -> bool {
        self.resume_tx.try_send(req).is_ok()
    }

    /// Hands a prefix of `events` (as many as the window has room for, at least one) to the
    /// publisher; `None` when the window is full (invariant 2). The count says how many.
    pub fn try_submit(&self, events: &[Prepared], from_loop: Option<usize>) -> Option<(Arc<Ticket>, usize)> {
        let window = self.config.publish_window;
        let mut take = 0;
        let mut reserve = || {
            self.inflight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |inflight| {
                take = reservation(window, inflight, events.len());
                (take > 0).then_some(inflight + take)
            })
        };
        if reserve().is_err() {
            // Register, then look again (the publisher frees room, then looks for waiters;
            // all `SeqCst`): either it sees the flag and wakes us, or we see its room.
            self.window_waiters.store(true, Ordering::SeqCst);
            if reserve().is_err() {
                return None;
            }
        }
        let ticket = Arc::new(Ticket::new(from_loop));
        let submission = Submission { events: events[..take].to_vec(), ticket: ticket.clone() };
        // The channel holds at most `window` submissions of at least one event each, and the
        // reservation above keeps the events in flight within the window: this cannot fail
        // unless the publisher has exited, which answers the ticket here.
        if self.tx.try_send(submission).is_err() {
            self.inflight.fetch_sub(take, Ordering::AcqRel);
            ticket.complete(Err(BusError::Unreachable("the bus publisher has stopped".into())));
        }
        Some((ticket, take))
    }

    /// Publishes `events` in order, blocking: waits for window room and for the bus's
    /// answer. Ids in order ([`crate::hub::SUPERSEDED`] for a superseded `latest` value).
    pub fn publish_blocking(&self, hub: &Hub, events: &[Prepared]) -> Result<Vec<u64>, BusError> {
        let mut ids = Vec::with_capacity(events.len());
        let mut backoff = WINDOW_BACKOFF_MIN;
        while ids.len() < events.len() {
            if hub.is_closed() {
                return Err(BusError::Unreachable("the server is shutting down".into()));
            }
            let Some((ticket, _)) = self.try_submit(&events[ids.len()..], None) else {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(WINDOW_BACKOFF_MAX);
                continue;
            };
            backoff = WINDOW_BACKOFF_MIN;
            loop {
                match ticket.wait(SHUTDOWN_CHECK) {
                    Some(outcome) => {
                        ids.extend(outcome?);
                        break;
                    }
                    None if hub.is_closed() => {
                        return Err(BusError::Unreachable("the server is shutting down".into()))
                    }
                    None => {}
                }
            }
        }
        Ok(ids)
    }

    fn saw(&self, id: u64) {
        self.seen.fetch_max(id, Ordering::AcqRel);
    }

    /// The gauges, for `/metrics`.
    pub fn scrape(&self) -> BusScrape {
        BusScrape {
            connected: self.connected.load(Ordering::Acquire),
            inflight: self.inflight.load(Ordering::Acquire) as u64,
            window: self.config.publish_window as u64,
            reconnects: self.reconnects.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            gaps: [0, 1].map(|i| self.gaps[i].load(Ordering::Relaxed)),
            lag: self.lag.load(Ordering::Relaxed),
            foreign: self.foreign.load(Ordering::Relaxed),
            publish_seconds: histogram::Snapshot::sum(std::iter::once(&self.publish_seconds)),
        }
    }

    /// `/readyz` should say not ready: the reader lost the bus and
    /// `--bus-unready-when-down` is on.
    pub fn unready(&self) -> bool {
        self.config.unready_when_down && !self.connected.load(Ordering::Acquire)
    }

    /// Events this node appended, by class.
    pub fn published(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.published[i].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_takes_at_most_one_append() {
        assert_eq!(reservation(100_000, 0, 10_000), APPEND_MAX);
        assert_eq!(reservation(100_000, 99_000, 10_000), 1_000);
        assert_eq!(reservation(8, 3, 2), 2);
        assert_eq!(reservation(8, 8, 2), 0);
        assert_eq!(reservation(8, 9, 2), 0);
    }
}
