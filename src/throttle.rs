//! Publish-side throttle for `latest` events: per topic+key, at most one event per interval
//! goes to the loops, and the last value of a window always goes out when the window ends.
//!
//! Invariants:
//! 1. The first value for a topic+key passes at once and opens a window of `interval`.
//!    Values inside the window are held, each replacing the one before (counted).
//! 2. When a window ends with a value held, that value is published (trailing edge) and a
//!    new window opens; a window that ends with nothing held is forgotten. So the final
//!    value of a burst (the `100%`) is never lost, and memory is one slot per active key.
//! 3. The throttle's lock is never held while publishing to the hub, and the hub's lock is
//!    never held while taking the throttle's: no lock order to get wrong.
//! 4. The effective interval is `interval × multiplier`; overload mode widens it.
//! 5. At most [`MAX_OPEN_WINDOWS`] windows are open; new keys past it are not throttled.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::publish::{Class, Prepared};

type Key = (std::sync::Arc<str>, std::sync::Arc<str>);

/// Most topic+key windows open at once; past it new keys pass unthrottled (bounded memory
/// beats throttling: outbox conflation still merges their queued values).
pub const MAX_OPEN_WINDOWS: usize = 100_000;

/// Longest the flusher sleeps when no window is open (it is woken for new ones).
const IDLE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Window {
    ends: Instant,
    held: Option<Prepared>,
}

#[derive(Debug, Default)]
struct State {
    windows: HashMap<Key, Window>,
    deadlines: BinaryHeap<Reverse<(Instant, Key)>>,
    stopped: bool,
    replaced: u64,
}

/// The throttle shared by every publish path.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    multiplier: AtomicU32,
    state: Mutex<State>,
    wake: Condvar,
}

impl Throttle {
    /// A throttle with `interval` between values per topic+key (zero disables it).
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            multiplier: AtomicU32::new(1),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the window multiplier (1 normally, larger in overload mode).
    pub fn set_multiplier(&self, m: u32) {
        self.multiplier.store(m.max(1), Ordering::Relaxed);
    }

    fn window(&self) -> Duration {
        self.interval * self.multiplier.load(Ordering::Relaxed)
    }

    /// Decides for one event: `Some` to publish now, `None` when the throttle holds it.
    pub fn admit(&self, event: Prepared, now: Instant) -> Option<Prepared> {
        let (Class::Latest, Some(key), false) = (event.class, &event.key, self.interval.is_zero()) else {
            return Some(event);
        };
        let key: Key = (event.topic.clone(), key.clone());
        let window = self.window();
        let mut state = self.lock();
        let state = &mut *state;
        let full = state.windows.len() >= MAX_OPEN_WINDOWS;
        match state.windows.get_mut(&key) {
            Some(w) if now < w.ends => {
                if w.held.replace(event).is_some() {
                    state.replaced += 1;
                }
                None
            }
            Some(w) => {
                // The flusher has not run yet for an ended window: this value supersedes.
                if w.held.take().is_some() {
                    state.replaced += 1;
                }
                w.ends = now + window;
                state.deadlines.push(Reverse((w.ends, key)));
                Some(event)
            }
            None if full => Some(event),
            None => {
                let ends = now + window;
                state.windows.insert(key.clone(), Window { ends, held: None });
                state.deadlines.push(Reverse((ends, key)));
                self.wake.notify_one();
                Some(event)
            }
        }
    }

    /// Held values replaced by newer ones before their window ended.
    pub fn replaced(&self) -> u64 {
        self.lock().replaced
    }

    /// Keys with an open window.
    pub fn open_windows(&self) -> usize {
        self.lock().windows.len()
    }

    /// Waits until some window ends (or `stop`), then returns the values whose windows
    /// ended, in no particular order. An empty vector with `stopped` means: exit.
    pub fn next_due(&self) -> (Vec<Prepared>, bool) {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return (Vec::new(), true);
            }
            let now = Instant::now();
            let window = self.window();
            let mut due = Vec::new();
            let st = &mut *state;
            while let Some(Reverse((t, _))) = st.deadlines.peek() {
                if *t > now {
                    break;
                }
                let Some(Reverse((t, key))) = st.deadlines.pop() else { break };
                let Some(w) = st.windows.get_mut(&key) else { continue };
                if w.ends != t {
                    continue; // superseded deadline
                }
                match w.held.take() {
                    Some(value) => {
                        due.push(value);
                        w.ends = now + window;
                        st.deadlines.push(Reverse((w.ends, key)));
                    }
                    None => {
                        st.windows.remove(&key);
                    }
                }
            }
            if !due.is_empty() {
                return (due, false);
            }
            let wait =
                st.deadlines.peek().map_or(IDLE_WAIT, |Reverse((t, _))| t.saturating_duration_since(now));
            state = self
                .wake
                .wait_timeout(state, wait.min(IDLE_WAIT))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Ends [`Throttle::next_due`] waits.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::{prepare, Message};

    fn latest(key: &str, data: &str) -> Prepared {
        prepare(&Message::new("t", data).latest(key), 1000).unwrap()
    }

    #[test]
    fn first_passes_then_held_values_replace_each_other_and_the_last_goes_out() {
        let th = Throttle::new(Duration::from_millis(30));
        let now = Instant::now();
        assert!(th.admit(latest("k", "1"), now).is_some());
        assert!(th.admit(latest("k", "2"), now).is_none());
        assert!(th.admit(latest("k", "3"), now).is_none());
        assert!(th.admit(latest("other", "x"), now).is_some(), "keys are independent");
        assert_eq!(th.replaced(), 1);
        let (due, stopped) = th.next_due();
        assert!(!stopped);
        assert_eq!(due.len(), 1);
        assert!(due[0].body.ends_with(b"data: 3\n\n"));
        // The trailing send opened a new window; with nothing held it is then forgotten.
        let (due, _) = {
            let th2 = &th;
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    th2.stop();
                });
                th2.next_due()
            })
        };
        assert!(due.is_empty());
        assert_eq!(th.open_windows(), 0);
    }

    #[test]
    fn other_classes_and_zero_interval_pass_through() {
        let th = Throttle::new(Duration::ZERO);
        let now = Instant::now();
        assert!(th.admit(latest("k", "1"), now).is_some());
        assert!(th.admit(latest("k", "2"), now).is_some());
        let th = Throttle::new(Duration::from_secs(10));
        let reliable = prepare(&Message::new("t", "r"), 1000).unwrap();
        assert!(th.admit(reliable.clone(), now).is_some());
        assert!(th.admit(reliable, now).is_some());
    }
}
