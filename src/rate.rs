//! Token buckets, alone and in a bounded map keyed by client or topic (sans-IO: time is
//! passed in, so everything is testable without sleeping).
//!
//! Invariants:
//! 1. A bucket holds at most `burst` tokens and refills at `rate` per second; a clock that
//!    goes back adds nothing; a refusal says how long until a token is available.
//! 2. A [`Buckets`] map holds at most `max_keys` buckets. Full buckets are evicted first (a
//!    full bucket behaves exactly like a fresh one, so that is lossless); only if that is not
//!    enough are the fullest others evicted (they get a fresh burst). Each sweep frees an
//!    eighth of the map, so sweeping costs amortised O(1) per new key.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Tokens within this of a whole token count as one (absorbs floating-point drift).
const EPSILON: f64 = 1e-9;

/// A token bucket: `burst` tokens, refilled at `rate_per_sec`; each admitted event takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A burst below 1 acts as 1; a rate that is not positive and finite
    /// never refills.
    pub fn new(rate_per_sec: f64, burst: f64, now: Instant) -> Self {
        let rate_per_sec = if rate_per_sec.is_finite() && rate_per_sec > 0.0 { rate_per_sec } else { 0.0 };
        let burst = if burst.is_finite() { burst.max(1.0) } else { 1.0 };
        Self { rate_per_sec, burst, tokens: burst, last: now }
    }

    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * self.rate_per_sec).min(self.burst)
    }

    /// Whether the bucket is full at `now` (then it is indistinguishable from a new one).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens_at(now) >= self.burst - EPSILON
    }

    /// Takes one token, or says how long until one is available. `now` earlier than a
    /// previous call counts as no time passed.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.tokens = self.tokens_at(now);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            return Ok(());
        }
        if self.rate_per_sec == 0.0 {
            return Err(Duration::MAX);
        }
        let nanos = ((1.0 - self.tokens) / self.rate_per_sec * 1e9).ceil();
        Err(Duration::try_from_secs_f64(nanos / 1e9).unwrap_or(Duration::MAX))
    }
}

/// A map of token buckets bounded by `max_keys` (invariant 2).
#[derive(Debug)]
pub(crate) struct Buckets<K> {
    map: HashMap<K, TokenBucket>,
    rate: f64,
    burst: f64,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub(crate) fn new(rate: f64, burst: f64, max_keys: usize) -> Self {
        Self { map: HashMap::new(), rate, burst, max_keys: max_keys.max(1) }
    }

    pub(crate) fn take<Q>(&mut self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(bucket) = self.map.get_mut(key) {
            return bucket.take(now);
        }
        if self.map.len() >= self.max_keys {
            self.make_room(now);
        }
        let mut bucket = TokenBucket::new(self.rate, self.burst, now);
        let taken = bucket.take(now);
        self.map.insert(key.to_owned(), bucket);
        taken
    }

    fn make_room(&mut self, now: Instant) {
        self.map.retain(|_, b| !b.is_full(now));
        let target = self.max_keys - self.max_keys.div_ceil(8);
        if self.map.len() > target {
            let mut fullest: Vec<(f64, K)> =
                self.map.iter().map(|(k, b)| (b.tokens_at(now), k.clone())).collect();
            let excess = fullest.len() - target;
            fullest.select_nth_unstable_by(excess - 1, |a, b| b.0.total_cmp(&a.0));
            for (_, key) in &fullest[..excess] {
                self.map.remove(key);
            }
        }
    }

    /// Keys tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t0);
        assert!(b.is_full(t0));
        assert!((0..3).all(|_| b.take(t0).is_ok()));
        let retry = b.take(t0).unwrap_err();
        assert!(retry >= ms(500) && retry <= ms(501), "{retry:?}");
        assert!(b.take(t0 + ms(499)).is_err());
        assert_eq!(b.take(t0 + retry), Ok(()));
        assert!(b.take(t0 + retry).is_err());
        // Refill stops at the burst however long the pause; a clock going back adds nothing.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.is_full(later) && (0..3).all(|_| b.take(later).is_ok()));
        assert!(b.take(later).is_err() && b.take(t0).is_err());
        // A retry at the time given succeeds, even with a rate that is not a nice fraction.
        let mut b = TokenBucket::new(0.3, 1.0, t0);
        let mut now = t0;
        assert!(b.take(now).is_ok());
        for _ in 0..100 {
            now += b.take(now).unwrap_err();
            assert_eq!(b.take(now), Ok(()));
        }
        assert!(((now - t0).as_secs_f64() / 100.0 - 1.0 / 0.3).abs() < 1e-6);
    }

    #[test]
    fn bucket_edge_parameters() {
        let t0 = Instant::now();
        assert!(TokenBucket::new(1.0, 0.0, t0).take(t0).is_ok(), "a burst below 1 acts as 1");
        for rate in [0.0, f64::NAN, f64::INFINITY, -1.0] {
            let mut b = TokenBucket::new(rate, 1.0, t0);
            assert!(b.take(t0).is_ok());
            assert_eq!(b.take(t0 + ms(10_000)), Err(Duration::MAX), "{rate}");
        }
    }
}
