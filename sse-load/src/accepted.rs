//! When the server accepted each published event (its `2xx` answer was read), so readers'
//! latency can also be measured from acceptance, not only from the publisher's stamp: a
//! server that parks a publisher (backpressure) makes the stamp age before the event exists
//! for it, and that wait is the publisher's, not the readers'.
//!
//! Contract: one table per process, set up by the publisher before its first send
//! ([`init`]); subscribers in the same process look events up by lane and seq. Subscribers in
//! worker processes (past one process's fd limit) have no table and record nothing. An
//! event delivered before its answer was read counts as accepted at delivery (0 µs: the
//! answer is on its way), which [`before_answer`] counts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

/// Most entries (lanes × events per lane) a table may hold: 8 bytes each, 256 MiB at most.
const MAX_ENTRIES: u64 = 32 << 20;

struct Table {
    per_lane: u64,
    /// `lane * per_lane + seq` → accept time in µs since the epoch (0: not answered yet).
    at_us: Box<[AtomicU64]>,
    before_answer: AtomicU64,
}

impl Table {
    fn new(lanes: usize, per_lane: u64) -> Option<Table> {
        let entries = (lanes as u64).saturating_mul(per_lane);
        if entries == 0 || entries > MAX_ENTRIES {
            return None;
        }
        let at_us = (0..entries).map(|_| AtomicU64::new(0)).collect();
        Some(Table { per_lane, at_us, before_answer: AtomicU64::new(0) })
    }

    fn slot(&self, lane: u32, seq: u64) -> Option<&AtomicU64> {
        if seq >= self.per_lane {
            return None;
        }
        self.at_us.get((u64::from(lane) * self.per_lane + seq) as usize)
    }

    fn mark(&self, lane: u32, seq: u64, at_us: u64) {
        if let Some(s) = self.slot(lane, seq) {
            s.store(at_us.max(1), Relaxed);
        }
    }

    fn latency_us(&self, lane: u32, seq: u64, now_us: u64) -> Option<u64> {
        match self.slot(lane, seq)?.load(Relaxed) {
            0 => {
                self.before_answer.fetch_add(1, Relaxed);
                Some(0)
            }
            at => Some(now_us.saturating_sub(at)),
        }
    }
}

static TABLE: OnceLock<Table> = OnceLock::new();

/// Sets up this process's table for `lanes` lanes of up to `per_lane` events each; `false`
/// when it would be too large or one exists already (then nothing more is recorded).
pub fn init(lanes: usize, per_lane: u64) -> bool {
    TABLE.get().is_none() && Table::new(lanes, per_lane).is_some_and(|t| TABLE.set(t).is_ok())
}

/// The event `seq` of `lane` was answered `2xx` at `at_us`.
pub fn mark(lane: u32, seq: u64, at_us: u64) {
    if let Some(t) = TABLE.get() {
        t.mark(lane, seq, at_us);
    }
}

/// Latency from acceptance of the event `seq` of `lane` received at `now_us`; `None`
/// without a table (or for an event outside it).
pub fn latency_us(lane: u32, seq: u64, now_us: u64) -> Option<u64> {
    TABLE.get()?.latency_us(lane, seq, now_us)
}

/// Deliveries that arrived before their event's answer was read.
pub fn before_answer() -> u64 {
    TABLE.get().map_or(0, |t| t.before_answer.load(Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_runs_from_the_answer() {
        assert!(Table::new(1, MAX_ENTRIES + 1).is_none(), "bounded");
        let t = Table::new(2, 10).expect("a table");
        t.mark(1, 3, 1_000);
        assert_eq!(t.latency_us(1, 3, 1_250), Some(250));
        assert_eq!(t.latency_us(0, 3, 1_250), Some(0), "delivered before its answer was read");
        assert_eq!(t.before_answer.load(Relaxed), 1);
        assert_eq!(t.latency_us(1, 10, 1_250), None, "outside the table");
        t.mark(7, 0, 1);
    }
}
