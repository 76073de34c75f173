//! One loop's recent events per topic, for `Last-Event-ID` resume and the polling endpoints.
//!
//! Every loop receives every event in id order, so every loop's history is the same; a loop
//! applies events and subscriptions serially, so "replay what is retained after id X, then
//! go live" has no race: nothing can arrive between the replay and the registration.
//!
//! Invariants:
//! 1. Each topic's ring holds clones of the shared events (refcounts, no payload copies),
//!    in id order, bounded by `max_events` and `max_bytes`; events past `max_age` are never
//!    replayed and are dropped on the next timer walk.
//! 2. A topic remembers the newest id it has dropped (`dropped_up_to`); a resume from an
//!    older id is told of the loss as a gap, never silently.
//! 3. At most `max_topics` topics and `max_total_bytes` bytes of memory (invariant 5) are
//!    kept; past either the topic
//!    published least recently is forgotten and `floor` rises to its newest id. The floor
//!    starts just below this process's first id (events from before a restart are gone), and
//!    with history off (`max_events == 0`) it follows every event.
//! 4. This loop vouches for no id at or below `floor` on a topic it holds no ring for, and
//!    a ring created later starts with `dropped_up_to = floor`: a topic first seen (or seen
//!    again after being forgotten) never hides what came before it. So a resume or a poll
//!    from any id below the floor is told of the loss as a gap, on every topic. `after == 0`
//!    is no position at all and is told of nothing.
//! 5. The bytes counted against `max_total_bytes` are what history really holds, not only
//!    frame bytes: per event its frame's heap chunk, [`EVENT_OVERHEAD_BYTES`] (the shared
//!    `Event` and the frame's shared header), its key and, when the event does not share its
//!    ring's topic name (names are interned by the hub), its own name; per ring, its name, its
//!    map entries ([`RING_OVERHEAD_BYTES`]) and one [`SLOT_BYTES`] slot per unit of capacity.
//!    Events are shared by all loops and counted once; per-loop parts (rings and slots) are
//!    counted once per loop sharing the history (`History::shared_by`), so each loop's total
//!    is the node's. A ring shrinks when it is mostly empty and frees its slots when emptied.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hub::Event;
use crate::publish::Class;

/// The bounds of one loop's history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Events kept per topic.
    pub max_events: usize,
    /// Frame bytes kept per topic.
    pub max_bytes: usize,
    /// Oldest event kept.
    pub max_age: Duration,
    /// Topics kept.
    pub max_topics: usize,
    /// Memory kept over all topics (invariant 5).
    pub max_total_bytes: usize,
}

/// Heap bytes the allocator (glibc malloc) takes for a request of `n` bytes: an 8-byte
/// header, rounded up to 16, at least 32.
pub const fn heap_chunk(n: usize) -> usize {
    let c = (n + 8 + 15) & !15;
    if c < 32 {
        32
    } else {
        c
    }
}

/// `Arc`'s two counters in front of the value it allocates.
const ARC_COUNTS: usize = 2 * size_of::<usize>();

/// What a retained event costs besides its frame's chunk, once per node: the `Arc<Event>`
/// allocation (counters and [`Event`]) and the header `bytes` allocates for a frame that is
/// cloned (a pointer, a capacity and a count).
pub const EVENT_OVERHEAD_BYTES: usize =
    heap_chunk(ARC_COUNTS + size_of::<Event>()) + heap_chunk(3 * size_of::<usize>());

/// One slot of a ring (`VecDeque<Arc<Event>>`), per loop, per unit of capacity.
pub const SLOT_BYTES: usize = size_of::<Arc<Event>>();

/// One ring's entries, per loop: its map entry (key and `Ring`) and its recency entry,
/// doubled for the maps' spare room (hash tables grow by doubling, B-tree nodes are at
/// least half full).
pub const RING_OVERHEAD_BYTES: usize = 2 * (size_of::<(Arc<str>, Ring)>() + size_of::<(u64, Arc<str>)>());

/// Memory one retained event holds (invariant 5): `ring_name` is its ring's name.
pub fn event_bytes(e: &Event, ring_name: &Arc<str>) -> usize {
    let name = if Arc::ptr_eq(&e.topic, ring_name) { 0 } else { heap_chunk(ARC_COUNTS + e.topic.len()) };
    let key = e.key.as_ref().map_or(0, |k| heap_chunk(ARC_COUNTS + k.len()));
    heap_chunk(e.frame.len()) + EVENT_OVERHEAD_BYTES + key + name
}

/// Memory a node holds per retained event of `frame_len` bytes with `loops` loops (what
/// `sse-edge check` plans with): its share of [`event_bytes`] and a slot in every loop.
pub fn event_bytes_estimate(frame_len: usize, loops: usize) -> usize {
    heap_chunk(frame_len) + EVENT_OVERHEAD_BYTES + loops * SLOT_BYTES
}

/// One topic's retained events.
#[derive(Debug)]
struct Ring {
    name: Arc<str>,
    events: VecDeque<Arc<Event>>,
    /// Frame bytes (the per-topic bound, `max_bytes`).
    bytes: usize,
    /// [`event_bytes`] summed over `events`.
    held: usize,
    dropped_up_to: u64,
    newest: u64,
}

impl Ring {
    /// A new ring vouches for nothing up to `floor` (invariant 4).
    fn new(name: Arc<str>, floor: u64) -> Ring {
        Ring { name, events: VecDeque::new(), bytes: 0, held: 0, dropped_up_to: floor, newest: 0 }
    }

    /// What this ring holds (invariant 5), with per-loop parts counted `loops` times.
    fn cost(&self, loops: usize) -> usize {
        let per_loop = RING_OVERHEAD_BYTES + self.events.capacity() * SLOT_BYTES;
        self.held + loops * per_loop + heap_chunk(ARC_COUNTS + self.name.len())
    }

    fn push_back(&mut self, e: &Arc<Event>) {
        self.bytes += e.frame.len();
        self.held += event_bytes(e, &self.name);
        self.events.push_back(e.clone());
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.events.pop_front() {
            self.bytes -= e.frame.len();
            self.held -= event_bytes(&e, &self.name);
            self.dropped_up_to = self.dropped_up_to.max(e.id);
        }
    }

    fn expire(&mut self, limits: &HistoryLimits, now: Instant) {
        while self
            .events
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.accepted_at) > limits.max_age)
        {
            self.pop_front();
        }
    }

    /// Drops every event up to `to` and vouches for nothing up to it; the bytes freed.
    fn forget_through(&mut self, to: u64, loops: usize) -> usize {
        let before = self.cost(loops);
        while self.events.front().is_some_and(|e| e.id <= to) {
            self.pop_front();
        }
        self.dropped_up_to = self.dropped_up_to.max(to);
        self.shrink();
        before - self.cost(loops)
    }

    /// Gives back slots a mostly empty ring no longer needs (all of them when empty).
    fn shrink(&mut self) {
        let (len, cap) = (self.events.len(), self.events.capacity());
        if len == 0 {
            self.events = VecDeque::new();
        } else if cap > 4 * len {
            self.events.shrink_to(2 * len);
        }
    }
}

/// An inclusive range of ids a client may have missed.
pub type Gap = (u64, u64);

/// Merges `gap` into `into`.
pub fn merge_gap(into: &mut Option<Gap>, gap: Gap) {
    *into = Some(match *into {
        Some((f, t)) => (f.min(gap.0), t.max(gap.1)),
        None => gap,
    });
}

/// One loop's history.
#[derive(Debug)]
pub struct History {
    limits: HistoryLimits,
    topics: HashMap<Arc<str>, Ring>,
    /// Topics by the id of their newest event: the front is the least recently published.
    recency: BTreeMap<u64, Arc<str>>,
    floor: u64,
    total_bytes: usize,
    /// Loops holding a history like this one (invariant 5).
    loops: usize,
}

impl History {
    /// An empty history; ids at or below `floor` predate it.
    pub fn new(limits: HistoryLimits, floor: u64) -> History {
        History { limits, topics: HashMap::new(), recency: BTreeMap::new(), floor, total_bytes: 0, loops: 1 }
    }

    /// Counts the per-loop parts of the memory held `loops` times: every loop of a node
    /// holds the same history, so one loop's total is then the node's (invariant 5).
    pub fn shared_by(mut self, loops: usize) -> History {
        self.loops = loops.max(1);
        self
    }

    /// Retains `event` (invariant 1); forgets the least recent topic past `max_topics`.
    pub fn record(&mut self, event: &Arc<Event>) {
        if self.limits.max_events == 0 {
            // Nothing is kept, so nothing up to here can be vouched for (invariant 4).
            self.floor = self.floor.max(event.id);
            return;
        }
        let loops = self.loops;
        let (ring, before) = match self.topics.get_mut(&event.topic) {
            Some(ring) => {
                self.recency.remove(&ring.newest);
                let before = ring.cost(loops);
                (ring, before)
            }
            None => {
                let ring = Ring::new(event.topic.clone(), self.floor);
                (self.topics.entry(event.topic.clone()).or_insert(ring), 0)
            }
        };
        ring.newest = event.id;
        ring.push_back(event);
        while ring.events.len() > self.limits.max_events || ring.bytes > self.limits.max_bytes {
            ring.pop_front();
        }
        ring.expire(&self.limits, event.accepted_at);
        self.total_bytes = self.total_bytes + ring.cost(loops) - before;
        self.recency.insert(event.id, ring.name.clone());
        self.evict_past_limits();
    }

    /// Forgets the least recently published topics while past `max_topics` or
    /// `max_total_bytes` (invariant 3).
    fn evict_past_limits(&mut self) {
        while self.topics.len() > self.limits.max_topics || self.total_bytes > self.limits.max_total_bytes {
            let Some((newest, topic)) = self.recency.pop_first() else { break };
            if let Some(ring) = self.topics.remove(&topic) {
                self.total_bytes -= ring.cost(self.loops);
            }
            self.floor = self.floor.max(newest);
        }
    }

    /// Drops events older than `max_age` from every topic (one walk per timer tick; a ring
    /// also expires its head whenever it is published to).
    pub fn expire(&mut self, now: Instant) {
        let (limits, loops) = (self.limits, self.loops);
        let mut freed = 0;
        for ring in self.topics.values_mut() {
            let before = ring.cost(loops);
            ring.expire(&limits, now);
            ring.shrink();
            freed += before - ring.cost(loops);
        }
        self.total_bytes -= freed;
    }

    /// Reliable events up to `to` of `topic` (of every topic: `None`) were lost before they
    /// reached this loop: nothing at or below `to` is vouched for any more, so a resume or
    /// a poll from below `to` is told of a gap, never served across the hole in silence
    /// (invariant 2). Events retained below the hole go too: a ring holds one contiguous
    /// stretch. A topic with no ring gets an empty one that remembers the loss.
    pub fn forget_through(&mut self, topic: Option<&Arc<str>>, to: u64) {
        let loops = self.loops;
        let Some(topic) = topic else {
            self.floor = self.floor.max(to);
            let mut freed = 0;
            for ring in self.topics.values_mut() {
                freed += ring.forget_through(to, loops);
            }
            self.total_bytes -= freed;
            return;
        };
        if self.limits.max_events == 0 {
            self.floor = self.floor.max(to);
            return;
        }
        match self.topics.get_mut(topic) {
            Some(ring) => self.total_bytes -= ring.forget_through(to, loops),
            None if to > self.floor => {
                let mut ring = Ring::new(topic.clone(), to);
                ring.newest = to;
                self.total_bytes += ring.cost(loops);
                self.recency.insert(to, topic.clone());
                self.topics.insert(topic.clone(), ring);
                self.evict_past_limits();
            }
            None => {}
        }
    }

    /// The gap a reader of `topic` who has seen everything up to `after` must be told of:
    /// events dropped from the ring, and events still in it but past `max_age` (which a
    /// replay leaves out). `after == 0` is no position at all ("from the oldest retained"):
    /// such a reader has missed nothing, so it gets no gap.
    fn gap_for(&self, topic: &str, after: u64, now: Instant) -> Option<Gap> {
        if after == 0 {
            return None;
        }
        let lost_up_to = match self.topics.get(topic) {
            Some(ring) => {
                let expired = ring
                    .events
                    .iter()
                    .take_while(|e| now.saturating_duration_since(e.accepted_at) > self.limits.max_age)
                    .last()
                    .map_or(0, |e| e.id);
                ring.dropped_up_to.max(expired)
            }
            None => self.floor,
        };
        (after < lost_up_to).then_some((after + 1, lost_up_to))
    }

    /// Every retained event after `after` on `topics`, merged in id order, with the gap the
    /// client must be told of first. Superseded `latest` values (same topic and key, a newer
    /// one in the replay) are left out: a resuming client needs the newest state only.
    pub fn replay(&self, topics: &[String], after: u64, now: Instant) -> (Option<Gap>, Vec<Arc<Event>>) {
        let mut gap = None;
        let mut events: Vec<Arc<Event>> = Vec::new();
        for topic in topics {
            if let Some(g) = self.gap_for(topic, after, now) {
                merge_gap(&mut gap, g);
            }
            events.extend(self.retained_after(topic, after, now).cloned());
        }
        events.sort_unstable_by_key(|e| e.id);
        let mut newest_per_key: HashMap<(&str, &str), u64> = HashMap::new();
        for e in &events {
            if let (Class::Latest, Some(k)) = (e.class, &e.key) {
                newest_per_key.insert((&e.topic, k), e.id);
            }
        }
        let keep = |e: &Arc<Event>| match (e.class, &e.key) {
            (Class::Latest, Some(k)) => newest_per_key.get(&(&*e.topic, &**k)) == Some(&e.id),
            _ => true,
        };
        let events = events.iter().filter(|e| keep(e)).cloned().collect();
        (gap, events)
    }

    fn retained_after<'a>(
        &'a self,
        topic: &str,
        after: u64,
        now: Instant,
    ) -> impl Iterator<Item = &'a Arc<Event>> {
        let max_age = self.limits.max_age;
        self.topics.get(topic).into_iter().flat_map(move |ring| {
            let start = ring.events.partition_point(|e| e.id <= after);
            ring.events
                .range(start..)
                .filter(move |e| now.saturating_duration_since(e.accepted_at) <= max_age)
        })
    }

    /// Up to `limit` retained events of `topic` after `after`, with the gap before them.
    /// `None` when the loop holds no ring for the topic and vouches for every id after
    /// `after` (nothing was lost: there is simply nothing); a topic it holds no ring for
    /// with `after` below the floor gets the gap and no events (invariant 4).
    pub fn after(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
        now: Instant,
    ) -> Option<(Option<Gap>, Vec<Arc<Event>>)> {
        if !self.topics.contains_key(topic) {
            let gap = self.gap_for(topic, after, now)?;
            return Some((Some(gap), Vec::new()));
        }
        let events = self.retained_after(topic, after, now).take(limit).cloned().collect();
        Some((self.gap_for(topic, after, now), events))
    }

    /// The newest retained event of `topic`.
    pub fn latest(&self, topic: &str, now: Instant) -> Option<&Arc<Event>> {
        self.topics
            .get(topic)?
            .events
            .back()
            .filter(|e| now.saturating_duration_since(e.accepted_at) <= self.limits.max_age)
    }

    /// Topics retained and events retained (summed over topics).
    pub fn size(&self) -> (usize, usize) {
        (self.topics.len(), self.topics.values().map(|r| r.events.len()).sum())
    }

    /// Memory retained over all topics, as counted against `max_total_bytes` (invariant 5).
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }
}

#[cfg(test)]
mod tests;
