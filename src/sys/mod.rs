//! The OS edge: listening sockets and thread placement. Everything here is a thin,
//! documented wrapper over one syscall family; nothing above this module touches
//! `socket2` or `nix` directly.

pub mod affinity;
pub mod listener;
pub mod rlimits;
pub mod signals;
