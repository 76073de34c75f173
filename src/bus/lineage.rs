//! Which topics a hole in the bus cost: the reader's memory of each topic's newest reliable
//! id, checked against the `tprev` every reliable entry carries ([`super::redis`]).
//!
//! Invariants:
//! 1. For every topic tracked, `newest` is the newest reliable id of it this node has read
//!    or already reported lost; ids at or below `since` predate what is tracked (the
//!    reader's start, or the last time the table was cleared).
//! 2. A reliable entry whose `tprev` is above what is known of its topic proves that the
//!    topic's reliable events in `(known, tprev]` never reached this node: that range is
//!    reported, once, and then counts as known. Every other entry reports nothing.
//! 3. At most [`MAX_TOPICS`] topics are tracked (bounded memory); past it the table is
//!    cleared and `since` rises to the newest id read, so an untracked topic is judged
//!    against `since`: a loss is still never missed, only its range may start lower.
//! 4. A trim hole whose losses are told later (by `tprev`, when each topic's next entry is
//!    read) pins `since` below the hole's start until the bus's memory is reset (then every
//!    topic was told), so clearing the table never hides such a loss; the price is that a
//!    topic's range may be reported again.

use std::collections::HashMap;
use std::sync::Arc;

/// Topics tracked at most (~64 bytes each).
pub const MAX_TOPICS: usize = 65_536;

/// The reader's memory of each topic's newest reliable id.
#[derive(Debug)]
pub struct Lineage {
    newest: HashMap<Arc<str>, u64>,
    since: u64,
    /// The start of the earliest trim hole whose losses may still be told (invariant 4).
    deferred: Option<u64>,
}

impl Lineage {
    /// Nothing tracked; ids up to `since` predate this node.
    pub fn new(since: u64) -> Lineage {
        Lineage { newest: HashMap::new(), since, deferred: None }
    }

    /// The newest reliable id of `topic` this node knows of.
    pub fn known(&self, topic: &str) -> u64 {
        self.newest.get(topic).copied().unwrap_or(self.since)
    }

    /// A reliable entry `id` of `topic` was read, `tprev` the topic's reliable event before
    /// it (0: none): the range of the topic's reliable ids that never arrived (invariant 2).
    pub fn read_reliable(&mut self, topic: &Arc<str>, id: u64, tprev: u64) -> Option<(u64, u64)> {
        let known = self.known(topic);
        let lost = (tprev > known).then_some((known + 1, tprev));
        self.set(topic, id, id);
        lost
    }

    /// `topic`'s reliable events up to `to` are lost: the range to report, from the first id
    /// after what is known; `None` when `to` is known already.
    pub fn lost_through(&mut self, topic: &Arc<str>, to: u64, newest_read: u64) -> Option<(u64, u64)> {
        let known = self.known(topic);
        if to <= known {
            return None;
        }
        self.set(topic, to, newest_read);
        Some((known + 1, to))
    }

    /// The bus lost its memory (positions went back) and every topic was told of everything
    /// up to `through`: nothing before it is tracked, nothing deferred remains.
    pub fn forget_all(&mut self, through: u64) {
        self.newest.clear();
        self.since = self.since.max(through);
        self.deferred = None;
    }

    /// A trim hole after id `last` (the newest read before it): some of its losses are told
    /// only when their topics' next entries are read (invariant 4).
    pub fn hole_after(&mut self, last: u64) {
        self.deferred = Some(self.deferred.map_or(last, |d| d.min(last)));
    }

    fn set(&mut self, topic: &Arc<str>, id: u64, newest_read: u64) {
        if !self.newest.contains_key(topic) && self.newest.len() >= MAX_TOPICS {
            self.newest.clear();
            let through = newest_read.saturating_sub(1);
            self.since = self.since.max(self.deferred.map_or(through, |d| d.min(through)));
        }
        let e = self.newest.entry(topic.clone()).or_insert(0);
        *e = (*e).max(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_that_skips_what_was_read_is_a_loss_of_exactly_that_topic() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut l = Lineage::new(100);
        assert_eq!(l.read_reliable(&a, 101, 0), None, "first ever");
        assert_eq!(l.read_reliable(&a, 105, 101), None, "its predecessor was read");
        assert_eq!(l.read_reliable(&b, 106, 90), None, "predates this node");
        // a's 107 and 108 were trimmed unread; 109's tprev says so.
        assert_eq!(l.read_reliable(&a, 109, 108), Some((106, 108)));
        assert_eq!(l.read_reliable(&a, 110, 109), None);
        // Reported once: a hash scan found b's newest (112) lost, its next entry agrees.
        assert_eq!(l.lost_through(&b, 112, 110), Some((107, 112)));
        assert_eq!(l.lost_through(&b, 112, 110), None);
        assert_eq!(l.read_reliable(&b, 115, 112), None);
    }

    #[test]
    fn clearing_the_table_never_hides_a_loss_a_trim_hole_left_to_tell() {
        let mut l = Lineage::new(0);
        let t: Arc<str> = Arc::from("t");
        l.read_reliable(&t, 10, 0);
        l.hole_after(10); // t's 12 falls in the hole; its next entry (20) tells it later
        for i in 0..MAX_TOPICS as u64 {
            l.read_reliable(&Arc::from(format!("x{i}")), 100 + i, 0);
        }
        l.read_reliable(&Arc::from("y"), 200_000, 0); // clears the table
        assert_eq!(l.read_reliable(&t, 200_001, 12), Some((11, 12)), "still told");
    }

    #[test]
    fn past_the_bound_untracked_topics_are_judged_against_the_clear_point() {
        let mut l = Lineage::new(0);
        for i in 0..MAX_TOPICS as u64 {
            l.read_reliable(&Arc::from(format!("t{i}")), i + 1, 0);
        }
        let newest = MAX_TOPICS as u64;
        let x: Arc<str> = Arc::from("x");
        // Clears, since = newest read - 1 ... x's own id is then tracked.
        l.set(&x, newest + 1, newest + 1);
        assert_eq!(l.newest.len(), 1);
        let t0: Arc<str> = Arc::from("t0");
        assert_eq!(l.read_reliable(&t0, newest + 5, 1), None, "read before the clear");
        let t9: Arc<str> = Arc::from("t9");
        assert_eq!(l.read_reliable(&t9, newest + 6, newest + 3), Some((newest + 1, newest + 3)));
    }
}
