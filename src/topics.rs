//! Topic names and one loop's topic → subscribers index.
//!
//! Invariants:
//! 1. Every membership is a slot in its topic's slab; the connection keeps the
//!    [`Membership`] handle, so unsubscribing is O(1) and never scans a topic.
//! 2. A topic with no subscribers is removed at once: the index holds exactly the topics
//!    someone on this loop listens to (so 10,000 connect/disconnect cycles leave it empty).
//! 3. Topic names are 1..=[`MAX_TOPIC_BYTES`] bytes of `[A-Za-z0-9._:@-]`: safe in a URL path
//!    segment, a metric label and a log line without escaping.

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

/// Longest topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 128;

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

/// A connection's handle on one of its subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    topic: u32,
    slot: u32,
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    subscribers: Slab<usize>,
}

/// One loop's topic index. Not shared: each loop owns its own.
#[derive(Debug, Default)]
pub struct TopicIndex {
    by_name: HashMap<Arc<str>, usize>,
    topics: Slab<Topic>,
    memberships: usize,
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
                let t = self.topics.insert(Topic { name: name.clone(), subscribers: Slab::new() });
                self.by_name.insert(name, t);
                t
            }
        };
        let slot = self.topics[topic].subscribers.insert(conn);
        self.memberships += 1;
        Membership { topic: to_u32(topic), slot: to_u32(slot) }
    }

    /// Removes one membership; drops the topic when it was the last.
    pub fn unsubscribe(&mut self, m: Membership) {
        let t = m.topic as usize;
        let Some(topic) = self.topics.get_mut(t) else { return };
        if topic.subscribers.try_remove(m.slot as usize).is_some() {
            self.memberships -= 1;
        }
        if topic.subscribers.is_empty() {
            let topic = self.topics.remove(t);
            self.by_name.remove(&topic.name);
        }
    }

    /// Connections subscribed to `name` on this loop.
    pub fn subscribers(&self, name: &str) -> impl Iterator<Item = usize> + '_ {
        self.by_name
            .get(name)
            .and_then(|&t| self.topics.get(t))
            .into_iter()
            .flat_map(|topic| topic.subscribers.iter().map(|(_, &conn)| conn))
    }

    /// Topics with at least one subscriber.
    pub fn topic_count(&self) -> usize {
        self.by_name.len()
    }

    /// Total (connection, topic) memberships.
    pub fn membership_count(&self) -> usize {
        self.memberships
    }
}

fn to_u32(n: usize) -> u32 {
    // Slab keys are bounded by the connection count (the fd limit) times topics per stream.
    u32::try_from(n).unwrap_or_else(|_| panic!("topic index key {n} exceeds u32"))
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
}
