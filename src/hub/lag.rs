//! A loop's delivery lag: how long the oldest event it has not taken from its hub channel
//! has waited (invariant 6 of [`crate::hub`]), and how much more it may be given so that a
//! new event still reaches its streams within the budget (invariant 3).
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
//! 3. Admission looks ahead (Little's law): the loop tells how many events per second it
//!    writes while busy (`rate`, from its measured frame rate and recent fan-out) and how
//!    long the writing already queued in its outboxes will take (`ahead`). A new event behind
//!    `queued` others in the channel then waits about `ahead + queued / rate`, so the channel
//!    takes no more than `rate × (¾ budget − ahead)` ([`Lag::room`], with the writing's
//!    lateness in place of `ahead` when that is longer): the oldest event's age alone reacts
//!    only once a queue that already holds seconds of work has aged past the budget. Before
//!    the loop has ever been busy writing, the rate is unknown and only the age and the
//!    count bound apply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Admission fills a loop's expected wait up to this share of the budget (invariant 3): the
/// forecast errs both ways, and a queue planned to the whole budget crosses it half the time,
/// each crossing stopping every publisher until the lag is back under it (a sawtooth that
/// starves the loop). At 0.75 the lag measured stays under the budget at a steady overload.
const LOOKAHEAD_SHARE: f64 = 0.75;

/// One channel's lag, shared by its sender (the hub) and its loop.
#[derive(Debug, Clone)]
pub(crate) struct Lag {
    since: Arc<AtomicU64>,
    /// When the event that queued the loop's longest-waiting stream was accepted (same units,
    /// 0: none): how late its writing is (invariant 2).
    writing: Arc<AtomicU64>,
    /// The loop's write rate in events per second as `f64` bits, 0: not measured yet
    /// (invariant 3).
    rate: Arc<AtomicU64>,
    /// How long the writing queued in the loop's outboxes takes, µs (invariant 3).
    ahead: Arc<AtomicU64>,
    epoch: Instant,
}

impl Lag {
    /// Nothing waiting; times count from `epoch` (the same for every channel).
    pub(crate) fn new(epoch: Instant) -> Lag {
        Lag {
            since: Arc::new(AtomicU64::new(0)),
            writing: Arc::new(AtomicU64::new(0)),
            rate: Arc::new(AtomicU64::new(0)),
            ahead: Arc::new(AtomicU64::new(0)),
            epoch,
        }
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
        let (untaken, writing) = self.waits(now);
        untaken.max(writing)
    }

    /// How long the oldest untaken event has waited, and how late the writing is, at `now`.
    fn waits(&self, now: Instant) -> (Duration, Duration) {
        let now = self.micros(now);
        let age = |since: u64| match since {
            0 => Duration::ZERO,
            since => Duration::from_micros(now.saturating_sub(since)),
        };
        (age(self.since.load(Ordering::Acquire)), age(self.writing.load(Ordering::Acquire)))
    }

    /// The loop writes `per_second` events while busy (0: unknown) and has `ahead` of
    /// writing queued (invariant 3).
    pub(crate) fn set_pace(&self, per_second: f64, ahead: Duration) {
        self.rate.store(per_second.to_bits(), Ordering::Release);
        self.ahead.store(ahead.as_micros() as u64, Ordering::Release);
    }

    /// The drain rate last measured (0: never).
    pub(crate) fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Acquire))
    }

    /// How many more events the channel, holding `queued`, may take at `now` so that the last
    /// of them is still expected to be written within `budget` (invariant 3); `usize::MAX`
    /// when only the count bound limits it (no budget, or no rate measured yet).
    pub(crate) fn room(&self, now: Instant, budget: Duration, queued: usize) -> usize {
        if budget.is_zero() {
            return usize::MAX;
        }
        let (untaken, writing) = self.waits(now);
        if untaken.max(writing) > budget {
            return 0;
        }
        let rate = self.rate();
        if rate <= 0.0 {
            return usize::MAX;
        }
        let ahead = Duration::from_micros(self.ahead.load(Ordering::Acquire)).max(writing);
        let target = budget.mul_f64(LOOKAHEAD_SHARE);
        let fits = target.saturating_sub(ahead).as_secs_f64() * rate;
        // One event always fits an empty channel: the rate is a forecast, the lag a fact.
        (fits as usize).saturating_sub(queued).max(usize::from(queued == 0))
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

    #[test]
    fn room_is_what_the_rate_drains_within_the_budget() {
        let epoch = Instant::now();
        let lag = Lag::new(epoch);
        let t = |ms| epoch + Duration::from_millis(ms);
        let budget = Duration::from_millis(1_000);
        assert_eq!(lag.room(t(0), budget, 5_000), usize::MAX, "no rate yet: only the count bound");
        assert_eq!(lag.room(t(0), Duration::ZERO, 5), usize::MAX, "no budget");
        lag.set_pace(200.0, Duration::ZERO);
        assert_eq!(lag.room(t(0), budget, 50), 100, "200/s for ¾ of 1 s, 50 queued");
        assert_eq!(lag.room(t(0), budget, 300), 0, "already more than a budget's work");
        lag.writing_since(Some(t(0)));
        assert_eq!(lag.room(t(500), budget, 20), 30, "half the budget spent on late writing");
        lag.set_pace(200.0, Duration::from_millis(600));
        assert_eq!(lag.room(t(500), budget, 10), 20, "600 ms queued in outboxes");
        assert_eq!(lag.room(t(1_200), budget, 0), 0, "over the budget: nothing, even empty");
        lag.writing_since(None);
        lag.set_pace(0.5, Duration::ZERO);
        assert_eq!(lag.room(t(1_200), budget, 0), 1, "an empty channel takes one");
    }
}
