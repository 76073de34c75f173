//! A loop's delivery lag: how long the oldest event it has not taken from its hub channel
//! has waited (invariant 6 of [`crate::hub`]).
//!
//! Invariants:
//! 2. `writing` holds when the event that queued the loop's longest-waiting stream for its
//!    write pass was accepted (set by the loop after each pass slice): the lag is the longer of
//!    the two waits, so a loop that takes events promptly but writes them late is behind too.
//! 1. `since` holds when the oldest untaken event was sent, in µs since the hub's epoch, or
//!    0 when none waits. The sender sets it only when it was 0 (an older event may wait);
//!    the loop, after each drain, moves it to the newest event it took (what still waits was
//!    sent no earlier: the channel is FIFO) or clears it when the channel is empty. A send
//!    racing a clear can hide one event's wait until the loop's next drain, which the send
//!    itself wakes up: the lag is never hidden for longer than one iteration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One channel's lag, shared by its sender (the hub) and its loop.
#[derive(Debug, Clone)]
pub(crate) struct Lag {
    since: Arc<AtomicU64>,
    /// When the event that queued the loop's longest-waiting stream was accepted (same units,
    /// 0: none): how late its writing is (invariant 2).
    writing: Arc<AtomicU64>,
    epoch: Instant,
}

impl Lag {
    /// Nothing waiting; times count from `epoch` (the same for every channel).
    pub(crate) fn new(epoch: Instant) -> Lag {
        Lag { since: Arc::new(AtomicU64::new(0)), writing: Arc::new(AtomicU64::new(0)), epoch }
    }

    fn micros(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.epoch).as_micros() as u64).max(1)
    }

    /// The sender put an event in the channel at `now`.
    pub(crate) fn sent(&self, now: Instant) {
        // Most sends find an older event waiting already: a load spares them the exchange.
        if self.since.load(Ordering::Acquire) == 0 {
            let at = self.micros(now);
            let _ = self.since.compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// The loop drained: the channel is now `empty`, and the newest event it took was
    /// accepted at `newest_taken`.
    pub(crate) fn taken(&self, empty: bool, newest_taken: Option<Instant>) {
        if empty {
            self.since.store(0, Ordering::Release);
        } else if let Some(at) = newest_taken {
            self.since.store(self.micros(at), Ordering::Release);
        }
    }

    /// The loop's writing is late since `oldest` (the event that queued the stream it has
    /// waited longest to write was accepted then), or is not late (`None`).
    pub(crate) fn writing_since(&self, oldest: Option<Instant>) {
        self.writing.store(oldest.map_or(0, |at| self.micros(at)), Ordering::Release);
    }

    /// The loop's lag at `now`: the longer of how long the oldest untaken event has waited and
    /// how late its writing is.
    pub(crate) fn at(&self, now: Instant) -> Duration {
        let now = self.micros(now);
        let age = |since: u64| match since {
            0 => 0,
            since => now.saturating_sub(since),
        };
        let oldest = age(self.since.load(Ordering::Acquire)).max(age(self.writing.load(Ordering::Acquire)));
        Duration::from_micros(oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_untaken_event_sets_the_lag() {
        let epoch = Instant::now();
        let lag = Lag::new(epoch);
        let t = |ms| epoch + Duration::from_millis(ms);
        assert_eq!(lag.at(t(5)), Duration::ZERO, "nothing sent");
        lag.sent(t(10));
        lag.sent(t(20));
        assert_eq!(lag.at(t(110)), Duration::from_millis(100), "from the oldest");
        lag.taken(false, Some(t(20)));
        assert_eq!(lag.at(t(110)), Duration::from_millis(90), "what waits came after the newest taken");
        lag.taken(true, Some(t(30)));
        assert_eq!(lag.at(t(500)), Duration::ZERO, "emptied");
        lag.sent(t(600));
        assert_eq!(lag.at(t(650)), Duration::from_millis(50));
        lag.taken(true, None);
        lag.writing_since(Some(t(700)));
        assert_eq!(lag.at(t(900)), Duration::from_millis(200), "late writing counts too");
        lag.writing_since(None);
        assert_eq!(lag.at(t(900)), Duration::ZERO);
    }
}
