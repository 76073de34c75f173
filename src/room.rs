//! Waiting for hub room without polling: a publisher that found a loop's channel full
//! registers here, and a loop that took events out of its channel wakes every registered
//! waiter (a parked HTTP publish through its loop's `mio::Waker`, an embedded publisher or
//! the throttle flusher through a `Condvar`).
//!
//! Invariants:
//! 1. No lost wake-up: a waiter registers first, then checks for room; a loop takes events
//!    first, then looks for waiters; both with a `SeqCst` fence in between. So either the loop
//!    sees the registration and wakes the waiter, or the waiter sees the room and does not
//!    wait.
//! 2. A loop with nothing registered pays one fence and one atomic load per drain.
//! 3. Waits are bounded anyway ([`ROOM_WAIT_FALLBACK`]): a waiter that is never woken (a
//!    loop stuck in a write, say) retries after it, never hangs.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Longest a waiter waits for a wake-up before it retries anyway (invariant 3).
pub const ROOM_WAIT_FALLBACK: Duration = Duration::from_millis(50);

/// Who waits for room in the hub's channels.
#[derive(Debug)]
pub(crate) struct Room {
    /// Per loop: a publish parked on that loop waits.
    loops: Vec<AtomicBool>,
    /// Embedded publishers (and the throttle flusher) waiting.
    embedded: AtomicUsize,
    /// Anyone registered since the last wake (the loops' cheap check).
    any: AtomicBool,
    /// Bumped on every wake of embedded waiters.
    generation: Mutex<u64>,
    freed: Condvar,
}

impl Room {
    pub(crate) fn new(loops: usize) -> Room {
        Room {
            loops: (0..loops).map(|_| AtomicBool::new(false)).collect(),
            embedded: AtomicUsize::new(0),
            any: AtomicBool::new(false),
            generation: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Registers loop `index` as waiting; `true` (and unregistered) when `has_room` already
    /// holds, so the caller retries now (invariant 1).
    pub(crate) fn register_loop(&self, index: usize, has_room: impl Fn() -> bool) -> bool {
        let Some(flag) = self.loops.get(index) else { return true };
        flag.store(true, Ordering::SeqCst);
        self.any.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if has_room() {
            flag.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Whether loop `index` still waits (registered and not woken since).
    pub(crate) fn loop_waits(&self, index: usize) -> bool {
        self.loops.get(index).is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Blocks an embedded publisher until a loop frees room, `has_room` holds at
    /// registration, or `timeout` passes. `true` unless it timed out.
    pub(crate) fn wait(&self, timeout: Duration, has_room: impl Fn() -> bool) -> bool {
        let generation = self.generation.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let seen = *generation;
        self.embedded.fetch_add(1, Ordering::SeqCst);
        self.any.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let woken = has_room() || {
            let (_generation, result) = self
                .freed
                .wait_timeout_while(generation, timeout, |g| *g == seen)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            !result.timed_out()
        };
        self.embedded.fetch_sub(1, Ordering::SeqCst);
        woken
    }

    /// Called by a loop after it took events out of its channel: wakes every waiter.
    /// `wake_loop(i)` wakes loop `i` (its waker).
    pub(crate) fn freed(&self, wake_loop: impl Fn(usize)) {
        fence(Ordering::SeqCst);
        if !self.any.load(Ordering::SeqCst) || !self.any.swap(false, Ordering::SeqCst) {
            return;
        }
        for (i, flag) in self.loops.iter().enumerate() {
            if flag.swap(false, Ordering::SeqCst) {
                wake_loop(i);
            }
        }
        if self.embedded.load(Ordering::SeqCst) > 0 {
            self.wake_embedded();
        }
    }

    /// Wakes every embedded waiter (room freed, or the hub closed).
    pub(crate) fn wake_embedded(&self) {
        let mut generation = self.generation.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *generation += 1;
        self.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiting_publisher_is_woken_when_a_loop_frees_room() {
        let room = Arc::new(Room::new(2));
        let waiter = {
            let room = room.clone();
            // The waiter never sees room itself: only a wake-up ends its wait before the
            // timeout (which returns false).
            std::thread::spawn(move || room.wait(Duration::from_secs(30), || false))
        };
        while room.embedded.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        room.freed(|_| {});
        assert!(waiter.join().unwrap(), "woken, not timed out");
    }

    #[test]
    fn a_parked_loop_is_woken_once_and_registration_sees_room() {
        let room = Room::new(3);
        assert!(!room.register_loop(1, || false));
        assert!(room.loop_waits(1));
        let woken = std::sync::Mutex::new(Vec::new());
        room.freed(|i| woken.lock().unwrap().push(i));
        assert_eq!(*woken.lock().unwrap(), vec![1]);
        assert!(!room.loop_waits(1));
        room.freed(|i| woken.lock().unwrap().push(i));
        assert_eq!(woken.lock().unwrap().len(), 1, "nothing registered: no wake");
        assert!(room.register_loop(2, || true), "room already there: retry now");
        assert!(!room.loop_waits(2));
    }

    #[test]
    fn a_wait_without_wake_ends_at_its_timeout() {
        let room = Room::new(1);
        assert!(!room.wait(Duration::from_millis(5), || false));
        assert!(room.wait(Duration::from_millis(5), || true));
    }
}
