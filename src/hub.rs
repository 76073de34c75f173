//! The sequencer: assigns every event its id and hands it to every loop, in id order.
//!
//! Invariants:
//! 1. Ids are u64, strictly increasing, global across topics. Assigning an id and sending the
//!    event to every loop happen under one lock, so each loop's channel receives events in id
//!    order, and a loop applies its channel serially: every subscriber sees increasing ids.
//! 2. Every hub→loop channel is bounded (`--hub-queue-events`). Under the lock the hub first
//!    computes the room left in the fullest channel and sends at most that many events, so a
//!    send never fails and never blocks: only lock holders send, and consumers only make room.
//! 3. Nothing waits while holding the lock, and it is held for at most [`EVENTS_PER_LOCK`]
//!    events at a time. A publisher that finds no room gets back fewer
//!    ids than events (possibly none) and retries later: a loop parks the publishing
//!    connection (TCP pushes back on the client), the embedded `publish` waits and retries,
//!    `try_publish` returns `Full`. Waiters are woken when a loop drains its channel
//!    (`room.rs`), with a bounded fallback, so nobody retries on a timer.
//! 4. Ids start at the wall clock in microseconds, so a restarted node never reissues an id
//!    a client already saw and resumes from.
//! 6. A loop's lag is the longer of how long the oldest event it has not taken from its
//!    channel has waited and how late its writing is ([`lag::Lag`]). While some loop's lag is over `--max-delivery-lag-ms`, there is
//!    no room (invariant 3 applies: publishers wait or get `Full`), so a node that cannot
//!    keep up slows its publishers by the time events wait, not only by how many do. Below
//!    the budget a channel takes no more than its loop is expected to drain within what is
//!    left of it ([`lag::Lag::room`]): admission looks ahead, not only at the oldest age.
//! 5. The newest `latest` value wins: under the lock each stamped `latest` value is claimed
//!    from the throttle ([`Throttle::claim`]); one older than a value of its key already
//!    sequenced gets no id ([`SUPERSEDED`]), however long it waited for room.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use mio::Waker;

use crate::publish::{Class, Prepared};
use crate::sse;
use crate::throttle::Throttle;

mod lag;
mod resumed;
use lag::Lag;
pub use resumed::Resumed;

/// One sequenced event, shared by every loop (one allocation per event, not per loop).
#[derive(Debug)]
pub struct Event {
    /// Global, strictly increasing id.
    pub id: u64,
    /// Topic it was published on.
    pub topic: Arc<str>,
    /// Delivery class.
    pub class: Class,
    /// Conflation key of a `latest` event.
    pub key: Option<Arc<str>>,
    /// The complete encoded frame (`id:` line included).
    pub frame: Bytes,
    /// When the hub accepted it (the start of delivery lag).
    pub accepted_at: Instant,
}

/// What travels on a hub→loop channel.
#[derive(Debug)]
#[doc(hidden)]
pub enum LoopMsg {
    /// Fan this event out to local subscribers.
    Event(Arc<Event>),
    /// Answer a health probe (proves the loop drains its channel).
    Ping(Arc<crate::health::Probe>),
    /// Test hook: sleep this long (a stuck loop, for health tests).
    Block(Duration),
    /// The bus's answer to a resume this loop asked for ([`crate::bus::resume`]).
    Resumed(Box<Resumed>),
    /// The bus reader found reliable events it can never deliver ([`Lost`]).
    Lost(Arc<Lost>),
}

/// Reliable events the bus reader will never deliver (trimmed before it read them, or the
/// bus lost them): the ids `from..=to` of `topic`, or of every topic when `None` (the bus
/// lost its memory of which topics they were on). Travels in id order with the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The topic, or every topic.
    pub topic: Option<Arc<str>>,
    /// First id that may be lost.
    pub from: u64,
    /// Last id that may be lost.
    pub to: u64,
}

/// What the bus reader hands the loops, in order.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    /// An event to record and fan out.
    Event(Arc<Event>),
    /// A loss to tell the affected subscribers of.
    Lost(Arc<Lost>),
}

impl Delivery {
    fn message(&self) -> LoopMsg {
        match self {
            Delivery::Event(e) => LoopMsg::Event(e.clone()),
            Delivery::Lost(l) => LoopMsg::Lost(l.clone()),
        }
    }

    /// The newest id it accounts for: the bus handed out every id up to it.
    fn newest_id(&self) -> u64 {
        match self {
            Delivery::Event(e) => e.id,
            Delivery::Lost(l) => l.to,
        }
    }
}

/// The hub's end of one loop's channel.
struct Link {
    tx: Sender<LoopMsg>,
    waker: Arc<Waker>,
    /// How long the oldest event the loop has not taken has waited (invariant 6).
    lag: Lag,
    /// Set by a publisher that woke the loop; cleared by the loop before it drains, so a
    /// burst of publishes costs one wake-up syscall, not one per event.
    wake_pending: Arc<AtomicBool>,
}

/// The loop's end of its channel.
pub(crate) struct Inbox {
    pub rx: Receiver<LoopMsg>,
    pub wake_pending: Arc<AtomicBool>,
    lag: Lag,
}

impl Inbox {
    /// Call before draining: publishers after this point wake the loop again.
    pub fn arm(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
    }

    /// Call after draining, with when the newest event taken was accepted (invariant 6).
    pub fn taken_up_to(&self, newest_taken: Option<Instant>) {
        self.lag.taken(self.rx.is_empty(), newest_taken);
    }

    /// Call after each write slice: the loop writes about `events_per_second` events while
    /// busy (0: unknown) and has `queued` worth of writing in its outboxes ([`lag`]
    /// invariant 3).
    pub fn pace(&self, events_per_second: f64, queued: Duration) {
        self.lag.set_pace(events_per_second, queued);
    }

    /// Call after each write slice, with when the event that queued the stream waiting
    /// longest to be written was accepted (invariant 6).
    pub fn writing_since(&self, oldest: Option<Instant>) {
        self.lag.writing_since(oldest);
    }
}

/// Publishing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// A loop's channel is full; retry later (only from `try_publish`).
    #[error("hub queue full (--hub-queue-events)")]
    Full,
    /// The message is invalid; the text says why.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// The server is shutting down.
    #[error("server is shut down")]
    Closed,
    /// The bus (`--bus`) did not take the event; retry later. The text says why.
    #[error("{0}")]
    Unavailable(String),
    /// The bus was sent the events and did not answer: they may or may not have been
    /// appended (and delivered). Retrying may publish them twice. The text says why.
    #[error("{0}")]
    OutcomeUnknown(String),
}

/// What the hub's lock protects: the id counter and the per-class publish counters
/// (plain integers: they are only touched under the lock that assigns ids anyway).
struct Sequencer {
    next_id: u64,
    published: [u64; 3],
}

/// Stands in the ids [`Hub::try_publish`] returns for a `latest` value that was not
/// sequenced because a newer value of its key was sequenced first (invariant 5); answered
/// like a value the throttle holds (`null`). Never a real id: ids start at the wall clock.
pub const SUPERSEDED: u64 = 0;

/// Events sequenced per hold of the hub's lock (invariant 3).
pub const EVENTS_PER_LOCK: usize = 256;

/// The sequencer shared by all loops and publishers.
pub struct Hub {
    seq: Mutex<Sequencer>,
    first_id: u64,
    /// Mirror of the sequencer's next id, readable without the lock.
    issued_below: std::sync::atomic::AtomicU64,
    links: Vec<Link>,
    capacity: usize,
    closed: AtomicBool,
    /// The publish-side throttle for `latest` events.
    pub throttle: Throttle,
    /// Shared topic names: a retained event costs no name of its own.
    names: crate::intern::Interner,
    /// Publishers waiting for room in the channels.
    room: crate::room::Room,
    /// Log every n-th published event (0: none).
    log_sample_every: u64,
    /// With `--bus` the bus assigns every id: [`Hub::try_publish`] refuses, so no id is
    /// ever sequenced here that the bus also hands out.
    bus_sequenced: bool,
    /// `--max-delivery-lag-ms` in microseconds (zero: none); a reload may change it.
    lag_budget_us: std::sync::atomic::AtomicU64,
}

impl Hub {
    /// A hub with one bounded channel per loop; returns the loops' inboxes in loop order.
    pub(crate) fn new(
        wakers: Vec<Arc<Waker>>,
        capacity: usize,
        latest_interval: Duration,
        log_sample_every: u64,
    ) -> (Hub, Vec<Inbox>) {
        let mut links = Vec::with_capacity(wakers.len());
        let mut inboxes = Vec::with_capacity(wakers.len());
        let epoch = Instant::now();
        for waker in wakers {
            let (tx, rx) = crossbeam_channel::bounded(capacity);
            let wake_pending = Arc::new(AtomicBool::new(false));
            let lag = Lag::new(epoch);
            links.push(Link { tx, waker, wake_pending: wake_pending.clone(), lag: lag.clone() });
            inboxes.push(Inbox { rx, wake_pending, lag });
        }
        let first = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64).max(1);
        let hub = Hub {
            seq: Mutex::new(Sequencer { next_id: first, published: [0; 3] }),
            first_id: first,
            issued_below: std::sync::atomic::AtomicU64::new(first),
            links,
            capacity,
            closed: AtomicBool::new(false),
            throttle: Throttle::new(latest_interval),
            names: Default::default(),
            room: crate::room::Room::new(inboxes.len()),
            log_sample_every,
            bus_sequenced: false,
            lag_budget_us: Default::default(),
        };
        (hub, inboxes)
    }

    /// Sets the delivery-lag budget (`--max-delivery-lag-ms`; zero: none): at start, and
    /// on a config reload (publishers read it on their next attempt).
    pub(crate) fn set_lag_budget(&self, budget: Duration) {
        let us = u64::try_from(budget.as_micros()).unwrap_or(u64::MAX);
        self.lag_budget_us.store(us, Ordering::Relaxed);
    }

    /// How long the oldest event each loop has not taken yet has waited (invariant 6).
    pub fn lags(&self) -> Vec<Duration> {
        let now = Instant::now();
        self.links.iter().map(|l| l.lag.at(now)).collect()
    }

    /// The budget, for the saturation gauge (zero: none).
    pub fn lag_budget(&self) -> Duration {
        Duration::from_micros(self.lag_budget_us.load(Ordering::Relaxed))
    }

    /// Room in every channel for the next events: the fullest channel's room, and no more
    /// than each loop is expected to write within the lag budget (none while some loop is
    /// over it: invariants 2 and 6).
    fn room(&self) -> usize {
        let now = Instant::now();
        let budget = self.lag_budget();
        self.links
            .iter()
            .map(|l| {
                let queued = l.tx.len();
                self.capacity.saturating_sub(queued).min(l.lag.room(now, budget, queued))
            })
            .min()
            .unwrap_or(0)
    }

    /// How many more events every loop is expected to write within the lag budget
    /// (invariant 6; `usize::MAX` without a budget). With `--bus` the bus orders events and
    /// the channels fill from the bus reader, so publishers of this node check only this.
    pub(crate) fn lag_room(&self) -> usize {
        let now = Instant::now();
        let budget = self.lag_budget();
        self.links.iter().map(|l| l.lag.room(now, budget, l.tx.len())).min().unwrap_or(0)
    }

    /// The id the next event will get (every issued id is below it).
    pub fn next_id(&self) -> u64 {
        self.issued_below.load(Ordering::Acquire)
    }

    /// The first id this process assigns; anything below predates it.
    pub fn first_id(&self) -> u64 {
        self.first_id
    }

    /// With a bus: the bus decides ids; `first` is the first id this process can know of
    /// (anything below predates it) and `next` the id the bus hands out next. Called once,
    /// before the loops start.
    pub(crate) fn start_at(&mut self, first: u64, next: u64) {
        self.first_id = first;
        self.seq.get_mut().unwrap_or_else(|p| p.into_inner()).next_id = next;
        *self.issued_below.get_mut() = next;
        self.bus_sequenced = true;
    }

    /// Hands events the bus already sequenced (and the losses between them) to every loop,
    /// in order, as many as every channel has room for (invariant 2); returns how many. The
    /// caller retries the rest.
    pub(crate) fn deliver(&self, items: &[Delivery]) -> usize {
        let take = {
            let mut seq = self.lock();
            // The bus reader is not slowed by the lag budget: the bus's own window and the
            // channel bound pace it (invariant 6 covers this node's own publishers).
            let room = self.links.iter().map(|l| self.capacity.saturating_sub(l.tx.len())).min().unwrap_or(0);
            let take = room.min(items.len());
            let now = Instant::now();
            for item in &items[..take] {
                for link in &self.links {
                    // Room was measured under this lock (invariant 2).
                    let _ = link.tx.try_send(item.message());
                    link.lag.sent(now);
                }
                seq.next_id = seq.next_id.max(item.newest_id() + 1);
            }
            self.issued_below.store(seq.next_id, Ordering::Release);
            take
        };
        if take > 0 {
            self.wake_all_but(None);
        }
        take
    }

    /// Wakes loop `index` (a bus answer for a publisher parked on it is in).
    pub(crate) fn wake_loop(&self, index: usize) {
        if let Some(link) = self.links.get(index) {
            let _ = link.waker.wake();
        }
    }

    /// Events sequenced so far, by [`Class::index`].
    pub fn published(&self) -> [u64; 3] {
        self.lock().published
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sequencer> {
        self.seq.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `latest` events through the throttle. Returns the events to publish now and,
    /// per input event, whether the throttle held it (it goes out later, or is replaced).
    /// Topic names are interned here, so every event of a topic shares one name.
    pub fn admit(&self, mut events: Vec<Prepared>) -> (Vec<Prepared>, Vec<bool>) {
        self.names.intern_all(&mut events);
        let now = Instant::now();
        let mut held = Vec::with_capacity(events.len());
        let mut send = Vec::with_capacity(events.len());
        for event in events {
            match self.throttle.admit(event, now) {
                Some(e) => {
                    send.push(e);
                    held.push(false);
                }
                None => held.push(true),
            }
        }
        (send, held)
    }

    /// The throttle's trailing edge: publishes each held value whose window ended, waiting
    /// for hub room as the embedded `publish` does. Returns when the throttle is stopped.
    pub(crate) fn run_throttle_flusher(&self) {
        loop {
            let (due, stopped) = self.throttle.next_due();
            if stopped {
                return;
            }
            let mut sent = 0;
            while sent < due.len() {
                match self.try_publish(&due[sent..], None) {
                    Ok(ids) if ids.is_empty() => self.wait_for_room(),
                    Ok(ids) => sent += ids.len(),
                    Err(_) => return,
                }
            }
        }
    }

    /// Sequences and sends as many of `events` (in order) as every loop has room for and
    /// returns their ids: all of them, a prefix, or none when a channel is full.
    /// `from_loop` is the calling loop, which drains its own channel without a wake-up.
    pub fn try_publish(
        &self,
        events: &[Prepared],
        from_loop: Option<usize>,
    ) -> Result<Vec<u64>, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed);
        }
        if self.bus_sequenced {
            return Err(PublishError::Unavailable("with --bus the bus sequences every event".into()));
        }
        let mut ids = Vec::with_capacity(events.len());
        // Invariant 3: the lock is taken per chunk, so a huge batch never holds up other
        // publishers (or a loop's own HTTP publish) for long.
        for chunk in events.chunks(EVENTS_PER_LOCK) {
            let before = ids.len();
            let sent = self.sequence_chunk(chunk, &mut ids);
            self.log_sampled(&chunk[..sent], &ids[before..]);
            if sent < chunk.len() {
                break;
            }
        }
        if !ids.is_empty() {
            self.wake_all_but(from_loop);
        }
        Ok(ids)
    }

    /// Logs every `--log-sample-every`-th event (by id), outside the lock.
    fn log_sampled(&self, events: &[Prepared], ids: &[u64]) {
        if self.log_sample_every == 0 || !log::log_enabled!(log::Level::Info) {
            return;
        }
        for (e, id) in events.iter().zip(ids) {
            if *id != SUPERSEDED && id % self.log_sample_every == 0 {
                log::info!(
                    "published id {id} topic {} class {} body {} bytes (1 in {} logged)",
                    e.topic,
                    e.class.label(),
                    e.body.len(),
                    self.log_sample_every
                );
            }
        }
    }

    /// Sequences as much of `chunk` as every channel has room for, under one lock hold.
    fn sequence_chunk(&self, chunk: &[Prepared], ids: &mut Vec<u64>) -> usize {
        let mut seq = self.lock();
        let take = self.room().min(chunk.len());
        let now = Instant::now();
        for prepared in &chunk[..take] {
            if prepared.class == Class::Latest && !self.throttle.claim(prepared) {
                ids.push(SUPERSEDED);
                continue;
            }
            let id = seq.next_id;
            seq.next_id += 1;
            seq.published[prepared.class.index()] += 1;
            let event = Arc::new(Event {
                id,
                topic: prepared.topic.clone(),
                class: prepared.class,
                key: prepared.key.clone(),
                frame: sse::frame_with_u64_id(id, &prepared.body),
                accepted_at: now,
            });
            for link in &self.links {
                // Invariant 2: room was measured under this lock; this cannot fail
                // unless the loop has exited, when dropping the event is right.
                let _ = link.tx.try_send(LoopMsg::Event(event.clone()));
                link.lag.sent(now);
            }
            ids.push(id);
        }
        self.issued_below.store(seq.next_id, Ordering::Release);
        take
    }

    fn wake_all_but(&self, from_loop: Option<usize>) {
        for (i, link) in self.links.iter().enumerate() {
            if Some(i) != from_loop && !link.wake_pending.swap(true, Ordering::SeqCst) {
                if let Err(e) = link.waker.wake() {
                    log::error!("hub: waking loop {i} failed: {e}");
                }
            }
        }
    }

    /// Whether every channel has room for one more event and no loop is over its lag
    /// budget.
    fn has_room(&self) -> bool {
        self.room() > 0
    }

    /// Blocks the calling (embedded) publisher until a loop frees room or
    /// [`crate::room::ROOM_WAIT_FALLBACK`] passes; returns at once when the hub is closed.
    pub(crate) fn wait_for_room(&self) {
        let fallback = crate::room::ROOM_WAIT_FALLBACK;
        self.room.wait(fallback, || self.has_room() || self.is_closed());
    }

    /// Registers a publish parked on loop `index` as waiting for room; `true` when there is
    /// room already (retry now, no wake-up will come).
    pub(crate) fn await_room(&self, index: usize) -> bool {
        self.room.register_loop(index, || self.has_room())
    }

    /// Whether a publish parked on loop `index` still waits for a wake-up.
    pub(crate) fn room_awaited(&self, index: usize) -> bool {
        self.room.loop_waits(index)
    }

    /// Called by a loop that took events out of its channel: wakes the parked publishers of
    /// every loop and the embedded ones.
    pub(crate) fn room_freed(&self) {
        self.room.freed(|i| {
            if let Some(link) = self.links.get(i) {
                if let Err(e) = link.waker.wake() {
                    log::error!("hub: waking loop {i} for room failed: {e}");
                }
            }
        });
    }

    /// Sends a control message to loop `index`, under the lock so the room that publishers
    /// compute stays exact (invariant 2). `false` when that channel is full.
    pub(crate) fn send_control(&self, index: usize, msg: LoopMsg) -> bool {
        let Some(link) = self.links.get(index) else { return false };
        let sent = {
            let _seq = self.lock();
            link.tx.len() < self.capacity && link.tx.try_send(msg).is_ok()
        };
        if sent {
            let _ = link.waker.wake();
        }
        sent
    }

    /// [`Hub::send_control`] that hands the message back when the channel is full.
    pub(crate) fn send_control_or_return(&self, index: usize, msg: LoopMsg) -> Result<(), LoopMsg> {
        let Some(link) = self.links.get(index) else { return Err(msg) };
        {
            let _seq = self.lock();
            if link.tx.len() >= self.capacity {
                return Err(msg);
            }
            link.tx.try_send(msg).map_err(|e| e.into_inner())?;
        }
        let _ = link.waker.wake();
        Ok(())
    }

    /// Number of loops.
    pub fn loops(&self) -> usize {
        self.links.len()
    }

    /// Events waiting in each loop's channel (a gauge of how far each loop is behind).
    pub fn queue_lengths(&self) -> Vec<usize> {
        self.links.iter().map(|l| l.tx.len()).collect()
    }

    /// Capacity of each loop's channel.
    pub fn queue_capacity(&self) -> usize {
        self.capacity
    }

    /// Wakes every loop (so it notices a lifecycle change at once).
    pub(crate) fn wake_all(&self) {
        for link in &self.links {
            let _ = link.waker.wake();
        }
    }

    /// Refuses further publishes and wakes every loop so it notices shutdown.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.throttle.stop();
        self.room.wake_embedded();
        for link in &self.links {
            let _ = link.waker.wake();
        }
    }

    /// Whether [`Hub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
