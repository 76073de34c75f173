//! Topic names and one loop's topic → subscribers index.
//!
//! Invariants:
//! 1. Every membership is an entry of the index's membership slab that records its topic
//!    and its position in that topic's dense subscriber list; the connection keeps the
//!    [`Membership`] handle (the entry's key), so unsubscribing is O(1) and never scans a
//!    topic: the last subscriber moves into the freed position (`swap_remove`) and its entry
//!    is updated.
//! 2. A topic with no subscribers is removed at once: the index holds exactly the topics
//!    someone on this loop listens to (so 10,000 connect/disconnect cycles leave it empty).
//! 3. Topic names are 1..=[`MAX_TOPIC_BYTES`] bytes of `[A-Za-z0-9._:@-]`: safe in a URL path
//!    segment, a metric label and a log line without escaping.
//! 4. Fan-out cost follows the current subscriber count: a topic's subscribers are a dense
//!    list with no vacant slots, and its capacity shrinks once it is less than a quarter
//!    used, so a topic that once had 10,000 subscribers and now has 100 walks 100.

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 128;
/// Topics with this prefix belong to the node (its status feed): publishers may not use them
/// ([`crate::publish::check_not_reserved`]).
pub const RESERVED_PREFIX: &str = "sse-edge.";

/// Checks a topic name; the error says what is wrong.
pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOPIC_BYTES {
        return Err(format!("topic must be 1..={MAX_TOPIC_BYTES} bytes"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._:@-".contains(*c))) {
        return Err(format!("topic {name:?} has {c:?}; allowed are A-Z a-z 0-9 . _ : @ -"));
    }
    Ok(())
}

/// A connection's handle on one of its subscriptions (the key of its membership entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership(u32);

/// Where a membership lives: its topic and its position in the topic's subscriber list. A
/// vacant entry has `topic == VACANT` and chains the free list through `pos`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    topic: u32,
    pos: u32,
}

/// `Entry::topic` of a vacant entry (topic keys never reach it: see [`to_u32`]).
const VACANT: u32 = u32::MAX;

/// The membership entries: 8 bytes each, with an intrusive free list (a `Slab` would spend
/// 16 bytes an entry, and every idle stream pays per membership).
#[derive(Debug, Default)]
struct Entries {
    slots: Vec<Entry>,
    /// First vacant slot.
    free: Option<u32>,
    live: usize,
}

impl Entries {
    fn insert(&mut self, entry: Entry) -> u32 {
        self.live += 1;
        match self.free {
            Some(i) => {
                let slot = &mut self.slots[i as usize];
                self.free = (slot.pos != VACANT).then_some(slot.pos);
                *slot = entry;
                i
            }
            None => {
                self.slots.push(entry);
                to_u32(self.slots.len() - 1)
            }
        }
    }

    fn try_remove(&mut self, i: u32) -> Option<Entry> {
        let slot = self.slots.get_mut(i as usize).filter(|e| e.topic != VACANT)?;
        let entry = *slot;
        *slot = Entry { topic: VACANT, pos: self.free.unwrap_or(VACANT) };
        self.free = Some(i);
        self.live -= 1;
        Some(entry)
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut Entry> {
        self.slots.get_mut(i as usize).filter(|e| e.topic != VACANT)
    }
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    /// Dense: (connection, membership) for every subscriber, in no particular order; 8 bytes
    /// each (connection keys are bounded by the fd limit, see [`to_u32`]).
    subscribers: Vec<(u32, Membership)>,
}

/// A topic's subscriber list keeps at least this capacity when it shrinks (shrinking
/// tiny lists saves nothing and reallocates often).
const MIN_SUBSCRIBER_CAPACITY: usize = 8;

/// One loop's topic index. Not shared: each loop owns its own.
#[derive(Debug, Default)]
pub struct TopicIndex {
    by_name: HashMap<Arc<str>, usize>,
    topics: Slab<Topic>,
    entries: Entries,
}

impl TopicIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds connection `conn` to `name`.
    pub fn subscribe(&mut self, name: &str, conn: usize) -> Membership {
        let topic = match self.by_name.get(name) {
            Some(&t) => t,
            None => {
                let name: Arc<str> = Arc::from(name);
                let t = self.topics.insert(Topic { name: name.clone(), subscribers: Vec::new() });
                self.by_name.insert(name, t);
                t
            }
        };
        let subscribers = &mut self.topics[topic].subscribers;
        let m =
            Membership(self.entries.insert(Entry { topic: to_u32(topic), pos: to_u32(subscribers.len()) }));
        subscribers.push((to_u32(conn), m));
        m
    }

    /// Removes one membership in O(1) (invariant 1); drops the topic when it was the last.
    pub fn unsubscribe(&mut self, m: Membership) {
        let Some(entry) = self.entries.try_remove(m.0) else { return };
        let t = entry.topic as usize;
        let Some(topic) = self.topics.get_mut(t) else { return };
        let pos = entry.pos as usize;
        if pos < topic.subscribers.len() {
            topic.subscribers.swap_remove(pos);
            if let Some(&(_, moved)) = topic.subscribers.get(pos) {
                if let Some(e) = self.entries.get_mut(moved.0) {
                    e.pos = entry.pos;
                }
            }
        }
        let subscribers = &mut topic.subscribers;
        if subscribers.is_empty() {
            let topic = self.topics.remove(t);
            self.by_name.remove(&topic.name);
        } else if subscribers.capacity() > MIN_SUBSCRIBER_CAPACITY
            && subscribers.len() * 4 < subscribers.capacity()
        {
            // Invariant 4; halving at a quarter keeps the shrinks amortized O(1).
            subscribers.shrink_to((subscribers.len() * 2).max(MIN_SUBSCRIBER_CAPACITY));
        }
    }

    /// Connections subscribed to `name` on this loop.
    pub fn subscribers(&self, name: &str) -> impl Iterator<Item = usize> + '_ {
        self.by_name
            .get(name)
            .and_then(|&t| self.topics.get(t))
            .into_iter()
            .flat_map(|topic| topic.subscribers.iter().map(|&(conn, _)| conn as usize))
    }

    /// Topics with at least one subscriber.
    pub fn topic_count(&self) -> usize {
        self.by_name.len()
    }

    /// Total (connection, topic) memberships.
    pub fn membership_count(&self) -> usize {
        self.entries.live
    }

    /// Capacity of `name`'s subscriber list (what a fan-out over it could walk at most).
    pub fn subscriber_capacity(&self, name: &str) -> usize {
        self.by_name.get(name).and_then(|&t| self.topics.get(t)).map_or(0, |t| t.subscribers.capacity())
    }
}

fn to_u32(n: usize) -> u32 {
    // Keys are bounded by the connection count (the fd limit) times topics per stream, far
    // below `VACANT`.
    u32::try_from(n)
        .ok()
        .filter(|&k| k != VACANT)
        .unwrap_or_else(|| panic!("topic index key {n} exceeds u32"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate("job.42:progress@eu-1_x").is_ok());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(MAX_TOPIC_BYTES + 1)] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unsubscribe_is_exact_and_empties_the_index() {
        let mut idx = TopicIndex::new();
        let a1 = idx.subscribe("a", 1);
        let a2 = idx.subscribe("a", 2);
        let b1 = idx.subscribe("b", 1);
        let mut subs: Vec<_> = idx.subscribers("a").collect();
        subs.sort();
        assert_eq!(subs, vec![1, 2]);
        idx.unsubscribe(a1);
        assert_eq!(idx.subscribers("a").collect::<Vec<_>>(), vec![2]);
        idx.unsubscribe(a2);
        idx.unsubscribe(b1);
        assert_eq!((idx.topic_count(), idx.membership_count()), (0, 0));
        assert_eq!(idx.subscribers("a").count(), 0);
    }

    #[test]
    fn unsubscribe_in_any_order_keeps_every_other_membership_exact() {
        let mut idx = TopicIndex::new();
        let mut held: Vec<(usize, Membership)> = (0..100).map(|c| (c, idx.subscribe("t", c))).collect();
        // Remove from the front, back and middle: every swap_remove moves another membership.
        for pick in [0, 98, 40, 0, 50, 7, 90, 3] {
            let (_, m) = held.remove(pick.min(held.len() - 1));
            idx.unsubscribe(m);
            idx.unsubscribe(m); // again, before the entry is reused: harmless
            let mut subs: Vec<usize> = idx.subscribers("t").collect();
            subs.sort_unstable();
            let mut want: Vec<usize> = held.iter().map(|&(c, _)| c).collect();
            want.sort_unstable();
            assert_eq!(subs, want);
            assert_eq!(idx.membership_count(), held.len());
        }
        for (_, m) in held {
            idx.unsubscribe(m);
        }
        assert_eq!((idx.topic_count(), idx.membership_count()), (0, 0));
    }

    #[test]
    fn a_topic_that_shrank_walks_and_holds_only_its_current_subscribers() {
        let mut idx = TopicIndex::new();
        let held: Vec<Membership> = (0..10_000).map(|c| idx.subscribe("t", c)).collect();
        for &m in &held[100..] {
            idx.unsubscribe(m);
        }
        assert_eq!(idx.subscribers("t").count(), 100);
        assert!(idx.subscriber_capacity("t") <= 400, "capacity {}", idx.subscriber_capacity("t"));
        let mut subs: Vec<usize> = idx.subscribers("t").collect();
        subs.sort_unstable();
        assert_eq!(subs, (0..100).collect::<Vec<_>>());
    }
}
