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
//! 3. At most `max_topics` topics and `max_total_bytes` bytes are kept; past either the topic
//!    published least recently is forgotten and `floor` rises to its newest id. The floor
//!    starts just below this process's first id (events from before a restart are gone), and
//!    with history off (`max_events == 0`) it follows every event.
//! 4. This loop vouches for no id at or below `floor` on a topic it holds no ring for, and
//!    a ring created later starts with `dropped_up_to = floor`: a topic first seen (or seen
//!    again after being forgotten) never hides what came before it. So a resume or a poll
//!    from any id below the floor is told of the loss as a gap, on every topic. `after == 0`
//!    is no position at all and is told of nothing.

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
    /// Frame bytes kept over all topics.
    pub max_total_bytes: usize,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
    dropped_up_to: u64,
    newest: u64,
}

impl Ring {
    fn pop_front(&mut self) {
        if let Some(e) = self.events.pop_front() {
            self.bytes -= e.frame.len();
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
}

impl History {
    /// An empty history; ids at or below `floor` predate it.
    pub fn new(limits: HistoryLimits, floor: u64) -> History {
        History { limits, topics: HashMap::new(), recency: BTreeMap::new(), floor, total_bytes: 0 }
    }

    /// Retains `event` (invariant 1); forgets the least recent topic past `max_topics`.
    pub fn record(&mut self, event: &Arc<Event>) {
        if self.limits.max_events == 0 {
            // Nothing is kept, so nothing up to here can be vouched for (invariant 4).
            self.floor = self.floor.max(event.id);
            return;
        }
        let ring = match self.topics.get_mut(&event.topic) {
            Some(ring) => {
                self.recency.remove(&ring.newest);
                ring
            }
            // Invariant 4: a new ring cannot vouch for anything up to the floor.
            None => self
                .topics
                .entry(event.topic.clone())
                .or_insert_with(|| Ring { dropped_up_to: self.floor, ..Ring::default() }),
        };
        let before = ring.bytes;
        ring.newest = event.id;
        ring.bytes += event.frame.len();
        ring.events.push_back(event.clone());
        while ring.events.len() > self.limits.max_events || ring.bytes > self.limits.max_bytes {
            ring.pop_front();
        }
        ring.expire(&self.limits, event.accepted_at);
        self.total_bytes = self.total_bytes + ring.bytes - before;
        self.recency.insert(event.id, event.topic.clone());
        while self.topics.len() > self.limits.max_topics || self.total_bytes > self.limits.max_total_bytes {
            let Some((newest, topic)) = self.recency.pop_first() else { break };
            if let Some(ring) = self.topics.remove(&topic) {
                self.total_bytes -= ring.bytes;
            }
            self.floor = self.floor.max(newest);
        }
    }

    /// Drops events older than `max_age` from every topic (one walk per timer tick; a ring
    /// also expires its head whenever it is published to).
    pub fn expire(&mut self, now: Instant) {
        let limits = self.limits;
        let mut freed = 0;
        for ring in self.topics.values_mut() {
            let before = ring.bytes;
            ring.expire(&limits, now);
            freed += before - ring.bytes;
        }
        self.total_bytes -= freed;
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

    /// Frame bytes retained over all topics.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(id: u64, topic: &str, class: Class, key: Option<&str>) -> Arc<Event> {
        Arc::new(Event {
            id,
            topic: Arc::from(topic),
            class,
            key: key.map(Arc::from),
            frame: Bytes::from(format!("id: {id}\ndata: x\n\n")),
            accepted_at: Instant::now(),
        })
    }

    fn limits(max_events: usize) -> HistoryLimits {
        HistoryLimits {
            max_events,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
            max_topics: 10,
            max_total_bytes: 1 << 20,
        }
    }

    fn ids(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn replay_merges_topics_in_id_order_after_the_given_id() {
        let mut h = History::new(limits(10), 0);
        for (id, t) in [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "b")] {
            h.record(&ev(id, t, Class::Reliable, None));
        }
        let (gap, events) = h.replay(&["a".into(), "b".into()], 1, Instant::now());
        assert_eq!(gap, None);
        assert_eq!(ids(&events), vec![2, 4, 5]);
    }

    #[test]
    fn resume_from_before_the_ring_reports_the_dropped_range() {
        let mut h = History::new(limits(3), 0);
        for id in 10..20 {
            h.record(&ev(id, "a", Class::Reliable, None));
        }
        let (gap, events) = h.replay(&["a".into()], 12, Instant::now());
        assert_eq!(gap, Some((13, 16)));
        assert_eq!(ids(&events), vec![17, 18, 19]);
        assert_eq!(h.replay(&["a".into()], 16, Instant::now()).0, None);
    }

    #[test]
    fn unknown_topics_and_forgotten_topics_report_from_the_floor() {
        let mut h = History::new(HistoryLimits { max_topics: 2, ..limits(10) }, 100);
        assert_eq!(h.replay(&["x".into()], 50, Instant::now()).0, Some((51, 100)));
        assert_eq!(h.replay(&["x".into()], 100, Instant::now()).0, None);
        h.record(&ev(101, "a", Class::Reliable, None));
        h.record(&ev(102, "b", Class::Reliable, None));
        h.record(&ev(103, "c", Class::Reliable, None)); // forgets "a"
        assert_eq!(h.size().0, 2);
        assert_eq!(h.replay(&["a".into()], 100, Instant::now()).0, Some((101, 101)));
        let (gap, events) = h.after("a", 50, 10, Instant::now()).expect("a gap, not a 404");
        assert_eq!((gap, events.len()), (Some((51, 101)), 0));
        assert!(h.after("a", 0, 10, Instant::now()).is_none(), "no position: nothing missed");
        assert!(h.after("a", 101, 10, Instant::now()).is_none(), "nothing lost after the floor");
        // Published again, the forgotten topic's new ring still reports what it forgot.
        h.record(&ev(104, "a", Class::Reliable, None));
        let (gap, events) = h.replay(&["a".into()], 100, Instant::now());
        assert_eq!((gap, ids(&events)), (Some((101, 101)), vec![104]));
    }

    #[test]
    fn a_topic_first_seen_after_a_restart_reports_everything_before_the_floor() {
        // A restarted process: its floor is just below its first id.
        let mut h = History::new(limits(10), 1_000);
        h.record(&ev(1_001, "t", Class::Reliable, None));
        let (gap, events) = h.replay(&["t".into()], 5, Instant::now());
        assert_eq!((gap, ids(&events)), (Some((6, 1_000)), vec![1_001]));
        let (gap, events) = h.after("t", 5, 10, Instant::now()).unwrap();
        assert_eq!((gap, ids(&events)), (Some((6, 1_000)), vec![1_001]));
        assert_eq!(h.replay(&["t".into()], 1_000, Instant::now()).0, None);
    }

    #[test]
    fn replay_keeps_only_the_newest_latest_value_per_key() {
        let mut h = History::new(limits(10), 0);
        h.record(&ev(1, "a", Class::Latest, Some("k")));
        h.record(&ev(2, "a", Class::Reliable, None));
        h.record(&ev(3, "a", Class::Latest, Some("k")));
        h.record(&ev(4, "a", Class::Latest, Some("j")));
        assert_eq!(ids(&h.replay(&["a".into()], 0, Instant::now()).1), vec![2, 3, 4]);
        assert_eq!(h.latest("a", Instant::now()).map(|e| e.id), Some(4));
    }

    #[test]
    fn total_bytes_bound_forgets_least_recent_topics() {
        let mut h = History::new(HistoryLimits { max_total_bytes: 40, ..limits(10) }, 0);
        h.record(&ev(1, "a", Class::Reliable, None)); // 17 bytes each
        h.record(&ev(2, "b", Class::Reliable, None));
        assert_eq!(h.size(), (2, 2));
        h.record(&ev(3, "c", Class::Reliable, None));
        assert_eq!(h.size(), (2, 2));
        assert!(h.total_bytes() <= 40);
        assert_eq!(h.replay(&["a".into()], 0, Instant::now()).0, None, "no position: nothing missed");
        h.record(&ev(4, "a", Class::Reliable, None)); // forgets "b"
        assert_eq!(h.replay(&["a".into(), "b".into()], 1, Instant::now()).0, Some((2, 2)), "b forgot 2");
    }

    #[test]
    fn old_events_expire_by_age() {
        let mut h = History::new(HistoryLimits { max_age: Duration::from_millis(10), ..limits(10) }, 0);
        h.record(&ev(1, "a", Class::Reliable, None));
        h.record(&ev(2, "a", Class::Reliable, None));
        let later = Instant::now() + Duration::from_millis(50);
        assert!(h.latest("a", later).is_none());
        assert_eq!(h.replay(&["a".into()], 1, later).0, Some((2, 2)), "expired, not yet dropped: a gap");
        h.expire(later);
        assert_eq!(h.size(), (1, 0));
        assert_eq!(h.replay(&["a".into()], 1, later).0, Some((2, 2)));
    }
}
