//! A token bucket that paces connection attempts.
//!
//! Contract: [`Pacer::try_take`] grants at most `rate` tokens per second on average and at most
//! `burst` at once; [`Pacer::wait`] says how long until the next token. A rate that is not a
//! positive finite number means "unpaced".

use std::time::{Duration, Instant};

/// Token bucket over a monotonic clock.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// A bucket that starts with one token; the burst is 20 ms worth of tokens, at least one.
    pub fn new(rate: f64, now: Instant) -> Self {
        let burst = (rate / 50.0).max(1.0);
        Pacer { rate, burst, tokens: 1.0, last: now }
    }

    fn unpaced(&self) -> bool {
        !(self.rate.is_finite() && self.rate > 0.0)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if one is available at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.unpaced() {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Time from `now` until a token is available.
    pub fn wait(&mut self, now: Instant) -> Duration {
        if self.unpaced() {
            return Duration::ZERO;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000.0, t0);
        let mut granted = 0;
        // Simulated clock: 1 s in 100 µs steps, taking as many tokens as allowed.
        for step in 0..=10_000u64 {
            let now = t0 + Duration::from_micros(step * 100);
            while p.try_take(now) {
                granted += 1;
            }
        }
        assert!((1000..=1021).contains(&granted), "{granted}");
    }

    #[test]
    fn burst_is_bounded_and_wait_is_right() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100.0, t0);
        assert!(p.try_take(t0));
        assert!(!p.try_take(t0));
        let w = p.wait(t0);
        assert!(w > Duration::from_millis(9) && w <= Duration::from_millis(10), "{w:?}");
        // After a long idle time only `burst` (here 2) tokens are available at once.
        let later = t0 + Duration::from_secs(10);
        let n = (0..10).filter(|_| p.try_take(later)).count();
        assert_eq!(n, 2);
    }

    #[test]
    fn zero_rate_is_unpaced() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0.0, t0);
        assert!((0..1000).all(|_| p.try_take(t0)));
        assert_eq!(p.wait(t0), Duration::ZERO);
    }
}
