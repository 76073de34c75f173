//! Liveness that exercises the loops: a probe travels through every loop's own hub channel,
//! so a loop that is stuck (or too far behind to drain its channel) cannot answer it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long `/healthz` waits for every loop before answering 503.
pub const HEALTH_DEADLINE: Duration = Duration::from_millis(1_000);

/// One round of pings, one flag per loop.
#[derive(Debug)]
pub struct Probe {
    answered: Vec<AtomicBool>,
    /// When the probe was sent.
    pub started: Instant,
}

impl Probe {
    /// A probe for `loops` loops.
    pub fn new(loops: usize) -> Probe {
        Probe { answered: (0..loops).map(|_| AtomicBool::new(false)).collect(), started: Instant::now() }
    }

    /// Loop `index` drained the probe from its channel.
    pub fn answer(&self, index: usize) {
        if let Some(flag) = self.answered.get(index) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Every loop answered.
    pub fn complete(&self) -> bool {
        self.answered.iter().all(|a| a.load(Ordering::Acquire))
    }

    /// Loops that have not answered.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.answered.len()).filter(|&i| !self.answered[i].load(Ordering::Acquire)).collect()
    }
}
