//! Pinning a loop thread to one core, so its connections' state stays in that core's caches.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The cores this process may run on (respects `taskset` and cgroup cpusets).
pub fn allowed_cores() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread, loop number `index`, to the `index`-th allowed core (wrapping).
/// Failure is logged and ignored: pinning is an optimisation, never a requirement.
pub fn pin_loop(index: usize, allowed: &[usize]) {
    if allowed.is_empty() {
        return;
    }
    let core = allowed[index % allowed.len()];
    let mut set = CpuSet::new();
    let result = set.set(core).and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
    match result {
        Ok(()) => log::debug!("loop {index} pinned to core {core}"),
        Err(e) => log::warn!("loop {index}: cannot pin to core {core}: {e}"),
    }
}
