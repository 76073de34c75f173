//! Live progress on stderr.
//!
//! Contract: the caller feeds every snapshot to [`Progress::observe`] (which keeps a cumulative
//! latency histogram for "p99 so far") and calls [`Progress::tick`] often; a line is shown about
//! once a second, rewritten in place when stderr is a terminal, or logged as a plain line every
//! [`LOG_EVERY`] otherwise. [`Progress::done`] ends the in-place line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::live::LiveSnap;
use crate::stats::Hist;

/// Period of the in-place line on a terminal.
const TTY_EVERY: Duration = Duration::from_secs(1);
/// Period of plain log lines when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// Publisher counters shown on the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct PubCounts {
    /// Requests sent.
    pub sent: u64,
    /// Accepted (2xx).
    pub accepted: u64,
    /// Failed or refused.
    pub failed: u64,
}

/// The progress line's state.
pub struct Progress {
    tty: bool,
    every: Duration,
    start: Instant,
    last: Instant,
    prev: (u64, u64),
    latency: Hist,
    dirty: bool,
}

impl Progress {
    /// Detects whether stderr is a terminal.
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        let now = Instant::now();
        Progress {
            tty,
            every: if tty { TTY_EVERY } else { LOG_EVERY },
            start: now,
            last: now,
            prev: (0, 0),
            latency: Hist::new(),
            dirty: false,
        }
    }

    /// Takes in one snapshot's interval latency.
    pub fn observe(&mut self, snap: &LiveSnap) {
        self.latency.merge(&snap.latency);
    }

    /// Shows a line if one is due.
    pub fn tick(&mut self, phase: &str, subs: Option<&LiveSnap>, pubs: Option<PubCounts>) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        if now.duration_since(self.last) < self.every {
            return;
        }
        let mut line = format!("[{:>6.1}s] {phase:<8}", now.duration_since(self.start).as_secs_f64());
        if let Some(s) = subs {
            let rate = (s.deliveries.saturating_sub(self.prev.0)) as f64 / dt;
            line += &format!(
                " | streams {}/{} ready ({} failed, {} lost) | recv {:.0}/s | p99 {:.1} ms | errors {}",
                s.ready,
                s.planned,
                s.failed,
                s.lost,
                rate,
                self.latency.quantile(0.99) as f64 / 1000.0,
                s.errors
            );
            self.prev.0 = s.deliveries;
        }
        if let Some(p) = pubs {
            let rate = (p.sent.saturating_sub(self.prev.1)) as f64 / dt;
            line += &format!(" | pub {rate:.0}/s (sent {}, ok {}, failed {})", p.sent, p.accepted, p.failed);
            self.prev.1 = p.sent;
        }
        self.last = now;
        let mut err = std::io::stderr().lock();
        // Progress output is best effort: a closed stderr must not stop the run.
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            self.dirty = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
    }

    /// Ends the in-place line (a newline on a terminal).
    pub fn done(&mut self) {
        if self.tty && self.dirty {
            let _ = writeln!(std::io::stderr());
            self.dirty = false;
        }
    }
}
