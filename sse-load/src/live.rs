//! State shared between subscriber loops and whoever watches them.
//!
//! Contract: [`Control`] is written by the coordinator (stop, with the accepted counts) and read
//! by the loops once per iteration; [`Live`] is written by the loops at most every few hundred
//! milliseconds (counter deltas and their interval latency) and read by snapshots, so the
//! per-event path touches neither. [`LiveSnap`] is also the progress line workers send their
//! parent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::stats::Hist;

/// Stop signal shared with the loops.
#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicBool,
    /// Accepted publishes per server address, when known.
    accepted: Mutex<Option<Vec<u64>>>,
}

impl Control {
    /// Asks the loops to stop; `accepted[k]` is the number of events every reading stream on
    /// address `k` should have got.
    pub fn stop(&self, accepted: Option<Vec<u64>>) {
        if accepted.is_some() {
            if let Ok(mut a) = self.accepted.lock() {
                *a = accepted;
            }
        }
        self.stop.store(true, Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    pub fn accepted(&self) -> Option<Vec<u64>> {
        self.accepted.lock().ok().and_then(|a| a.clone())
    }
}

/// Counters the loops push for progress reports.
#[derive(Debug, Default)]
pub struct Live {
    /// Streams with a `200` head.
    pub connected: AtomicU64,
    /// Streams ready.
    pub ready: AtomicU64,
    /// Reading streams ready.
    pub readers_ready: AtomicU64,
    /// Streams given up on.
    pub failed: AtomicU64,
    /// Ready streams that closed.
    pub lost: AtomicU64,
    /// Stamped events received.
    pub deliveries: AtomicU64,
    /// Errors of any kind.
    pub errors: AtomicU64,
    /// Latency pushed since the last snapshot.
    pub latency: Mutex<Hist>,
}

/// A progress snapshot (also the wire form workers send to their parent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LiveSnap {
    /// Streams planned.
    pub planned: u64,
    /// Streams with a `200` head.
    pub connected: u64,
    /// Streams ready.
    pub ready: u64,
    /// Reading streams ready (every event is expected on each).
    pub readers_ready: u64,
    /// Streams given up on.
    pub failed: u64,
    /// Ready streams that closed.
    pub lost: u64,
    /// Stamped events received.
    pub deliveries: u64,
    /// Errors of any kind.
    pub errors: u64,
    /// Latency recorded since the previous snapshot.
    pub latency: Hist,
}

impl LiveSnap {
    /// Streams that are ready or given up on.
    pub fn settled(&self) -> u64 {
        self.ready + self.failed
    }

    /// Adds another snapshot (counters and interval latency).
    pub fn add(&mut self, o: &LiveSnap) {
        self.planned += o.planned;
        self.connected += o.connected;
        self.ready += o.ready;
        self.readers_ready += o.readers_ready;
        self.failed += o.failed;
        self.lost += o.lost;
        self.deliveries += o.deliveries;
        self.errors += o.errors;
        self.latency.merge(&o.latency);
    }
}
