//! Fixed-bucket latency histograms: a loop records into a plain local copy (no atomics per
//! sample) and publishes cumulative totals into shared cells once per timer tick; scrapes
//! sum the cells of all loops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus `le`), 0.5 ms .. 60 s; finer between
/// 1 and 2.5 s, where the default delivery-lag budget (1 s) puts an overloaded node's p99.
pub const BOUNDS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

const N: usize = BOUNDS.len() + 1; // the last bucket is +Inf

/// A loop-local histogram.
#[derive(Debug, Clone, Default)]
pub struct Local {
    counts: [u64; N],
    sum_us: u64,
}

impl Local {
    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS.iter().position(|&b| secs <= b).unwrap_or(N - 1);
        self.counts[i] += 1;
        self.sum_us += d.as_micros() as u64;
    }

    /// Stores the totals into `cells` (the owning loop is the only writer).
    pub fn publish(&self, cells: &Cells) {
        for (cell, &n) in cells.counts.iter().zip(&self.counts) {
            cell.store(n, Ordering::Relaxed);
        }
        cells.sum_us.store(self.sum_us, Ordering::Relaxed);
    }
}

/// Shared totals of one loop's histogram.
#[derive(Debug, Default)]
pub struct Cells {
    counts: [AtomicU64; N],
    sum_us: AtomicU64,
}

/// A point-in-time sum of histograms: per-bucket counts (not cumulative) and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Samples per bucket; the last is above every bound.
    pub counts: Vec<u64>,
    /// Sum of all samples, in seconds.
    pub sum: f64,
}

impl Snapshot {
    /// Sums the cells of several loops.
    pub fn sum<'a>(cells: impl Iterator<Item = &'a Cells>) -> Snapshot {
        let mut s = Snapshot { counts: vec![0; N], sum: 0.0 };
        for c in cells {
            for (total, cell) in s.counts.iter_mut().zip(&c.counts) {
                *total += cell.load(Ordering::Relaxed);
            }
            s.sum += c.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        }
        s
    }

    /// Samples in total.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was added since `earlier`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let counts = self
            .counts
            .iter()
            .zip(earlier.counts.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        Snapshot { counts, sum: (self.sum - earlier.sum).max(0.0) }
    }

    /// The `q` quantile's bucket upper bound in seconds (`None` without samples); above the
    /// last bound it reports the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(*BOUNDS.get(i).unwrap_or(&BOUNDS[BOUNDS.len() - 1]));
            }
        }
        Some(BOUNDS[BOUNDS.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_publishes_sums_and_quantiles() {
        let mut a = Local::default();
        for ms in [1u64, 2, 3, 40, 900] {
            a.record(Duration::from_millis(ms));
        }
        let (ca, cb) = (Cells::default(), Cells::default());
        a.publish(&ca);
        let mut b = Local::default();
        b.record(Duration::from_secs(100));
        b.publish(&cb);
        let s = Snapshot::sum([&ca, &cb].into_iter());
        assert_eq!(s.count(), 6);
        assert_eq!(s.counts[N - 1], 1, "100 s lands in +Inf");
        assert!((s.sum - 100.946).abs() < 1e-6);
        assert_eq!(s.quantile(0.5), Some(0.005));
        assert_eq!(s.quantile(0.99), Some(60.0));
        let later = s.clone();
        assert_eq!(later.since(&s).count(), 0);
    }
}
