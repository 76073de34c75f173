//! The OS edge: listening sockets, thread placement, limits and host readings. Everything here is a thin,
//! documented wrapper over one syscall family; nothing above this module touches
//! `socket2` or `nix` directly.

pub mod affinity;
pub mod listener;
pub mod procfs;
pub mod rlimits;
pub mod signals;
