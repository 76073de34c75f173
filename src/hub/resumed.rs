//! The bus's answer to a resume, as it travels to the asking loop on its hub channel
//! ([`super::LoopMsg::Resumed`]).
//!
//! It lives with the channel's other messages, not with the bus thread that builds it
//! ([`crate::bus::resume`]), so that the hub, which carries it, does not depend on the bus,
//! which sits above it.

use std::sync::Arc;

use super::Event;

/// The bus's answer to a resume request ([`crate::bus::resume::Request`]).
#[derive(Debug)]
pub struct Resumed {
    /// The connection, as in the request.
    pub key: usize,
    /// As in the request.
    pub token: u64,
    /// Ids the bus no longer holds at the start of the range (first, last), as a
    /// [`crate::history::Gap`].
    pub gap: Option<(u64, u64)>,
    /// The events of the requested topics, in id order.
    pub events: Vec<Arc<Event>>,
    /// The scan covered the ids up to here (the client's `after` when it failed).
    pub through: u64,
    /// The bus holds the client's own last event: its id is real even if this node has not
    /// read it yet (another node handed it out).
    pub holds_after: bool,
}
