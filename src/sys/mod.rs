//! The OS edge: listening sockets, thread placement, limits and host readings. Everything here is a thin,
//! documented wrapper over one syscall family; nothing above this module touches
//! `socket2` or `nix` directly.

pub mod affinity;
pub mod listener;
pub mod procfs;
pub mod rlimits;
pub mod signals;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
