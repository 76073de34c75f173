//! How fast a stage works while it has a backlog: the rate that sizes what it may be given
//! (Little's law: what waits ≈ rate × how long it may wait).
//!
//! Invariants:
//! 1. A window of at least [`BusyRate::WINDOW`] measures the stage's capacity only if work
//!    waited at every observation in it; such a window moves the estimate halfway to what it
//!    saw. A window with idle moments measured the arrivals, which say only that the
//!    capacity is at least that much: it can raise the estimate, never lower it.
//! 2. The estimate is 0 until a first busy window: callers treat 0 as "unknown", not "none".

use std::time::{Duration, Instant};

/// A stage's work rate (units per second) as seen while it was busy.
#[derive(Debug)]
pub(crate) struct BusyRate {
    start: Instant,
    done: u64,
    /// Work waited at every observation of the window (invariant 1).
    busy: bool,
    /// Smoothed rate, units per second (0: none yet).
    rate: f64,
}

impl BusyRate {
    /// Shortest measuring window: long enough to span several write slices (each a few
    /// milliseconds), short enough to follow a change of load within a fraction of a second.
    pub(crate) const WINDOW: Duration = Duration::from_millis(100);

    pub(crate) fn new(now: Instant) -> BusyRate {
        BusyRate { start: now, done: 0, busy: true, rate: 0.0 }
    }

    /// The estimate (0: none yet).
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// The stage did `done` units by `now` and has work left (`backlog`) or not; returns the
    /// new estimate when a window closed and changed it.
    pub(crate) fn observe(&mut self, now: Instant, done: usize, backlog: bool) -> Option<f64> {
        self.done += done as u64;
        self.busy &= backlog;
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed < Self::WINDOW {
            return None;
        }
        let observed = self.done as f64 / elapsed.as_secs_f64();
        let (done, busy) = (self.done, self.busy);
        *self = BusyRate { start: now, done: 0, busy: true, rate: self.rate };
        let rate = if busy && done > 0 {
            if self.rate > 0.0 {
                0.5 * self.rate + 0.5 * observed
            } else {
                observed
            }
        } else if self.rate > 0.0 && observed > self.rate {
            observed
        } else {
            return None;
        };
        self.rate = rate;
        Some(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_measured_while_busy_and_raised_while_not() {
        let epoch = Instant::now();
        let t = |ms| epoch + Duration::from_millis(ms);
        let mut rate = BusyRate::new(epoch);
        assert_eq!(rate.observe(t(50), 10, true), None, "window still open");
        assert_eq!(rate.observe(t(100), 10, true), Some(200.0), "20 taken in 100 ms, backlogged");
        assert_eq!(rate.observe(t(200), 40, false), Some(400.0), "faster while keeping up: raised");
        assert_eq!(rate.observe(t(300), 5, false), None, "slower while keeping up: arrivals, kept");
        assert_eq!(rate.observe(t(400), 20, true), Some(300.0), "behind again: smoothed toward 200");
    }
}
