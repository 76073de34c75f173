//! Shared topic names: one `Arc<str>` per topic in use, so the events of a topic (in every
//! loop's history, outbox and channel) share one name instead of each carrying a copy.
//!
//! Invariants:
//! 1. Interning returns the name already held for an equal topic, else keeps the given one.
//! 2. The table holds only names still in use, plus what was added since the last purge: once
//!    it reaches `purge_at` entries, names no event or history holds any more (strong count
//!    1: only the table) are dropped, and `purge_at` becomes twice what is left (at least
//!    [`MIN_PURGE_AT`]), so purges cost amortized O(1) per intern and the table stays within
//!    twice the live names.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::publish::Prepared;

/// The table is not purged below this many names (purging a small table saves nothing).
pub const MIN_PURGE_AT: usize = 1024;

/// The node's shared topic names.
#[derive(Debug)]
pub struct Interner {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    names: HashSet<Arc<str>>,
    purge_at: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner { state: Mutex::new(State { names: HashSet::new(), purge_at: MIN_PURGE_AT }) }
    }
}

impl Interner {
    /// Replaces each event's topic with the shared name (one lock for the batch).
    pub fn intern_all(&self, events: &mut [Prepared]) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for event in events {
            event.topic = state.intern(&event.topic);
        }
    }

    /// Names held now.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).names.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn intern(&mut self, name: &Arc<str>) -> Arc<str> {
        if let Some(held) = self.names.get(&**name) {
            return held.clone();
        }
        if self.names.len() >= self.purge_at {
            // Invariant 2.
            self.names.retain(|n| Arc::strong_count(n) > 1);
            self.purge_at = (2 * self.names.len()).max(MIN_PURGE_AT);
        }
        self.names.insert(name.clone());
        name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{prepare, Message};

    fn prepared(topic: &str) -> Prepared {
        prepare(&Message::new(topic, "x"), 1000).unwrap()
    }

    #[test]
    fn equal_topics_share_one_name() {
        let interner = Interner::default();
        let mut events = vec![prepared("a"), prepared("b"), prepared("a")];
        interner.intern_all(&mut events);
        let mut later = vec![prepared("a")];
        interner.intern_all(&mut later);
        assert!(Arc::ptr_eq(&events[0].topic, &events[2].topic));
        assert!(Arc::ptr_eq(&events[0].topic, &later[0].topic));
        assert!(!Arc::ptr_eq(&events[0].topic, &events[1].topic));
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn names_nobody_holds_are_purged() {
        let interner = Interner::default();
        let kept = {
            let mut e = vec![prepared("kept")];
            interner.intern_all(&mut e);
            e.pop().unwrap()
        };
        for i in 0..10 * MIN_PURGE_AT {
            interner.intern_all(&mut [prepared(&format!("t{i}"))]);
        }
        assert!(interner.len() <= MIN_PURGE_AT + 1, "{} names held", interner.len());
        let mut again = vec![prepared("kept")];
        interner.intern_all(&mut again);
        assert!(Arc::ptr_eq(&kept.topic, &again[0].topic), "a name in use survives purges");
    }
}
