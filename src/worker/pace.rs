//! How much unwritten work a loop lets into its outboxes: the intake's side of the lag budget.
//!
//! Invariants:
//! 1. `frames` counts frames queued to streams that the write pass will write (writable and
//!    kept up when queued) and not yet written. It is an estimate that only drifts upward
//!    (a frame queued then evicted, or left on a socket that blocked), and it is reset to 0
//!    whenever the flush queue empties, so drift lives at most one pass; and should the
//!    queue never empty (writable edges keep arriving), a gate closed for a whole budget
//!    forgets the count and opens: the gate can delay the intake, never stop it.
//! 2. The loop measures how many frames per second it writes while streams wait for their
//!    write ([`BusyRate`]); `frames / rate` is then how long the queued work takes to write.
//! 3. While that exceeds `--max-delivery-lag-ms / PASS_SHARE_OF_BUDGET`, the loop takes no
//!    event from the hub ([`super::delivery`] invariant 9). Before a rate is measured, it
//!    takes none while more than [`UNMEASURED_MAX_FRAMES`] frames wait for the pass, so a
//!    burst on a fresh loop cannot queue more than about one drain's deliveries unseen. Fan-out queues a delivery in tens
//!    of nanoseconds and a write takes a microsecond or more, so without this gate one
//!    iteration's intake can queue seconds of writing that the hub's admission never sees.
//! 4. Frames per event is a moving average over drains that queued any (the recent fan-out);
//!    the write rate divided by it is the loop's event rate, which with the queued time it
//!    hands to the hub's admission ([`crate::hub::Inbox::pace`]).

use std::time::{Duration, Instant};

use crate::busy_rate::BusyRate;

/// The queued writing may take this fraction of `--max-delivery-lag-ms` before the intake
/// waits; the rest of the budget is for events waiting in the hub channel behind it.
pub(super) const PASS_SHARE_OF_BUDGET: u32 = 4;

/// Frames the pass may have waiting before a write rate is measured (invariant 3): one drain's
/// deliveries.
const UNMEASURED_MAX_FRAMES: u64 = super::delivery::FANOUT_BUDGET as u64;

/// How far one drain moves the frames-per-event average toward what it saw (invariant 4):
/// a quarter, so a single drain of an unusual topic does not swing the event rate.
const FAN_OUT_SMOOTHING: f64 = 0.25;

/// A loop's queued writing (invariant 1) and its write rate (invariant 2).
#[derive(Debug)]
pub(super) struct Pace {
    frames: u64,
    write_rate: BusyRate,
    /// Frames the write pass gets per event taken, smoothed (invariant 4).
    frames_per_event: f64,
    /// Since when the gate has been closed (invariant 1's last resort).
    closed_since: Option<Instant>,
}

impl Pace {
    pub(super) fn new(now: Instant) -> Pace {
        Pace { frames: 0, write_rate: BusyRate::new(now), frames_per_event: 0.0, closed_since: None }
    }

    /// A drain took `events` and queued `frames` of them for the write pass.
    pub(super) fn queued(&mut self, events: usize, frames: u64) {
        self.frames += frames;
        if events > 0 && frames > 0 {
            let per_event = frames as f64 / events as f64;
            self.frames_per_event = match self.frames_per_event {
                f if f > 0.0 => f + FAN_OUT_SMOOTHING * (per_event - f),
                _ => per_event,
            };
        }
    }

    /// Events per second the loop writes while busy (0: unknown; invariant 4).
    pub(super) fn event_rate(&self) -> f64 {
        match (self.write_rate.rate(), self.frames_per_event) {
            (rate, per_event) if rate > 0.0 && per_event > 0.0 => rate / per_event,
            _ => 0.0,
        }
    }

    /// A write slice wrote `frames` by `now`; `waiting`: streams still wait for their write.
    pub(super) fn wrote(&mut self, now: Instant, frames: u64, waiting: bool) {
        self.frames = if waiting { self.frames.saturating_sub(frames) } else { 0 };
        self.write_rate.observe(now, frames as usize, waiting);
    }

    /// How long the queued writing is expected to take (zero before a rate is measured).
    pub(super) fn queued_time(&self) -> Duration {
        match self.write_rate.rate() {
            rate if rate > 0.0 => Duration::from_secs_f64(self.frames as f64 / rate),
            _ => Duration::ZERO,
        }
    }

    /// Whether the gate is closed (the intake waiting since the last [`Pace::full`]).
    pub(super) fn is_closed(&self) -> bool {
        self.closed_since.is_some()
    }

    /// Whether the intake must wait at `now` (invariant 3) under this lag budget (zero:
    /// never); a gate closed for a whole budget opens (invariant 1).
    pub(super) fn full(&mut self, budget: Duration, now: Instant) -> bool {
        let within = match self.write_rate.rate() {
            rate if rate > 0.0 => self.queued_time() <= budget / PASS_SHARE_OF_BUDGET,
            _ => self.frames <= UNMEASURED_MAX_FRAMES,
        };
        if budget.is_zero() || within {
            self.closed_since = None;
            return false;
        }
        let since = *self.closed_since.get_or_insert(now);
        if now.saturating_duration_since(since) > budget {
            self.frames = 0;
            self.closed_since = None;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_intake_waits_for_a_quarter_budget_of_queued_writing() {
        let t0 = Instant::now();
        let t = |ms| t0 + Duration::from_millis(ms);
        let budget = Duration::from_millis(1_000);
        let mut pace = Pace::new(t0);
        pace.queued(6, 60_000);
        const { assert!(60_000 <= UNMEASURED_MAX_FRAMES) };
        assert!(!pace.full(budget, t(0)), "no write rate measured yet: one drain's frames may wait");
        pace.queued(94, 940_000);
        assert!(pace.full(budget, t(0)), "no write rate measured yet: more may not");
        assert!(!pace.full(Duration::ZERO, t(0)), "no budget, no gate");
        pace.wrote(t(100), 100_000, true);
        assert_eq!(pace.queued_time(), Duration::from_millis(900), "1 M frames/s, 900 k left");
        assert_eq!(pace.event_rate(), 100.0, "10,000 frames an event");
        assert!(pace.full(budget, t(100)));
        assert!(!pace.full(Duration::ZERO, t(100)), "no budget, no gate");
        pace.wrote(t(150), 700_000, true);
        assert!(!pace.full(budget, t(150)), "200 ms of writing left");
        pace.queued(1, 50);
        pace.wrote(t(160), 10, false);
        assert_eq!(pace.queued_time(), Duration::ZERO, "flush queue empty: drift reset");
    }

    #[test]
    fn a_gate_closed_for_a_whole_budget_opens() {
        let t0 = Instant::now();
        let t = |ms| t0 + Duration::from_millis(ms);
        let budget = Duration::from_millis(1_000);
        let mut pace = Pace::new(t0);
        pace.queued(1, 10_000);
        pace.wrote(t(100), 1_000, true);
        pace.queued(1, 1_000_000);
        assert!(pace.full(budget, t(200)));
        assert!(pace.full(budget, t(1_100)), "closed for 900 ms");
        assert!(!pace.full(budget, t(1_300)), "closed for 1.1 s: the count was drift");
        assert_eq!(pace.queued_time(), Duration::ZERO);
    }
}
