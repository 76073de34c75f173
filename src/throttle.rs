//! Publish-side throttle for `latest` events: per topic+key, at most one event per interval
//! goes to the loops, and the last value of a window always goes out when the window ends.
//!
//! Invariants:
//! 1. The first value for a topic+key passes at once and opens a window of `interval`.
//!    Values inside the window are held, each replacing the one before (counted).
//! 2. When a window ends with a value held, that value is published (trailing edge) and a
//!    new window opens; a window that ends with nothing held (and nothing it released still
//!    waiting for the hub, invariant 6) is forgotten. So the final
//!    value of a burst (the `100%`) is never lost, and memory is one slot per active key.
//! 3. The throttle's lock is never held while publishing to the hub (see the lock order
//!    below).
//! 4. The effective interval is `interval × multiplier`; overload mode widens it.
//! 5. At most [`MAX_OPEN_WINDOWS`] windows are open; new keys past it are not throttled.
//! 6. The newest value always wins. Every value the throttle releases (passed at once or
//!    taken by the flusher) carries a stamp, increasing in admission order. The hub, under
//!    its own lock, [`Throttle::claim`]s each stamped value as it sequences it; a value older
//!    than one already sequenced for its key is superseded and never sequenced. So however
//!    long a value waits for hub room (the flusher retrying, a publisher parked on a loop),
//!    it can never be sequenced after a newer value and win conflation, replay or `/latest`.
//!    A window stays open while values it released wait to be sequenced: every released
//!    value is either claimed or handed back with [`Throttle::abandon`] by the path that
//!    gives up on it ([`ABANDONED_AFTER`] only guards against a miscount).
//!
//! Lock order: the hub's lock, then the throttle's ([`Throttle::claim`]); nothing takes the
//! hub's lock while holding the throttle's.

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

/// A window whose released values were never all claimed nor [`Throttle::abandon`]ed is
/// forgotten this long after it last released one: a safety net against a miscount only,
/// far longer than any bounded publish waits (`--publish-wait-timeout-ms` is 10 s).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Window {
    ends: Instant,
    held: Option<Prepared>,
    /// Stamp of the newest value of this key the hub sequenced (invariant 6).
    sequenced: u64,
    /// Values released and not yet claimed by the hub.
    outstanding: u32,
    /// When the window last ended with values outstanding (for [`ABANDONED_AFTER`]).
    idle_since: Option<Instant>,
}

impl Window {
    fn new(ends: Instant) -> Window {
        Window { ends, held: None, sequenced: 0, outstanding: 0, idle_since: None }
    }
}

#[derive(Debug, Default)]
struct State {
    windows: HashMap<Key, Window>,
    deadlines: BinaryHeap<Reverse<(Instant, Key)>>,
    stopped: bool,
    replaced: u64,
    /// The last stamp given (invariant 6).
    stamp: u64,
}

impl State {
    /// Stamps a value the throttle releases for sequencing and counts it outstanding.
    fn release(&mut self, key: &Key, mut event: Prepared) -> Prepared {
        if let Some(w) = self.windows.get_mut(key) {
            self.stamp += 1;
            event.stamp = self.stamp;
            w.outstanding += 1;
            w.idle_since = None;
        }
        event
    }
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
                state.deadlines.push(Reverse((w.ends, key.clone())));
                Some(state.release(&key, event))
            }
            None if full => Some(event),
            None => {
                let ends = now + window;
                state.windows.insert(key.clone(), Window::new(ends));
                state.deadlines.push(Reverse((ends, key.clone())));
                self.wake.notify_one();
                Some(state.release(&key, event))
            }
        }
    }

    /// Called by the hub under its lock as it sequences a stamped `latest` value: `false`
    /// when a newer value of the same key was sequenced first, so this one must not be
    /// (invariant 6; counted as replaced). Unstamped values (throttle off, or past
    /// [`MAX_OPEN_WINDOWS`]) always pass.
    pub fn claim(&self, event: &Prepared) -> bool {
        let Some(key) = event.key.as_ref().filter(|_| event.stamp != 0) else { return true };
        let mut state = self.lock();
        let state = &mut *state;
        let Some(w) = state.windows.get_mut(&(event.topic.clone(), key.clone())) else { return true };
        w.outstanding = w.outstanding.saturating_sub(1);
        if event.stamp < w.sequenced {
            state.replaced += 1;
            return false;
        }
        w.sequenced = event.stamp;
        true
    }

    /// Hands back released values that will never be sequenced (their publisher got `Full`,
    /// timed out, or hung up while waiting for room), so their windows' counts stay exact
    /// and a window is kept exactly as long as a value of its key may still be sequenced.
    pub fn abandon(&self, events: &[Prepared]) {
        let mut state = self.lock();
        for event in events {
            let Some(key) = event.key.as_ref().filter(|_| event.stamp != 0) else { continue };
            if let Some(w) = state.windows.get_mut(&(event.topic.clone(), key.clone())) {
                w.outstanding = w.outstanding.saturating_sub(1);
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
                        w.ends = now + window;
                        w.idle_since = None;
                        st.deadlines.push(Reverse((w.ends, key.clone())));
                        due.push(st.release(&key, value));
                    }
                    // Invariant 6: keep the window while released values wait for the hub.
                    None if w.outstanding > 0
                        && now.saturating_duration_since(*w.idle_since.get_or_insert(now))
                            < ABANDONED_AFTER =>
                    {
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
        let k1 = th.admit(latest("k", "1"), now).expect("the first value passes");
        assert!(th.admit(latest("k", "2"), now).is_none());
        assert!(th.admit(latest("k", "3"), now).is_none());
        let x = th.admit(latest("other", "x"), now).expect("keys are independent");
        assert_eq!(th.replaced(), 1);
        let (due, stopped) = th.next_due();
        assert!(!stopped);
        assert_eq!(due.len(), 1);
        assert!(due[0].body.ends_with(b"data: 3\n\n"));
        assert!(k1.stamp < due[0].stamp, "stamps follow admission order");
        // The hub sequences what was released (invariant 6).
        assert!([&k1, &x, &due[0]].iter().all(|v| th.claim(v)));
        assert!(!th.claim(&k1), "an older value after a newer one is superseded");
        // The trailing send opened a new window; with nothing held it is then forgotten.
        let (due, _) = {
            let th2 = &th;
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(300));
                    th2.stop();
                });
                th2.next_due()
            })
        };
        assert!(due.is_empty());
        assert_eq!(th.open_windows(), 0);
    }

    /// Runs the flusher side for `d`, then stops it; returns what came due.
    fn flush_for(th: &Throttle, d: Duration) -> Vec<Prepared> {
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(d);
                th.stop();
            });
            th.next_due().0
        })
    }

    #[test]
    fn a_window_stays_while_a_released_value_waits_and_goes_once_it_is_abandoned() {
        let th = Throttle::new(Duration::from_millis(10));
        let v = th.admit(latest("k", "1"), Instant::now()).expect("passes");
        assert!(flush_for(&th, Duration::from_millis(200)).is_empty());
        assert_eq!(th.open_windows(), 1, "v may still be sequenced: its window stays");
        th.abandon(std::slice::from_ref(&v));
        th.lock().stopped = false; // a second flusher pass over the same windows
        assert!(flush_for(&th, Duration::from_millis(200)).is_empty());
        assert_eq!(th.open_windows(), 0, "abandoned: nothing of k waits, the window is forgotten");
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
