//! Resume from the bus: a `Last-Event-ID` older than a loop's history but still in the bus
//! is served from the bus, on this helper thread so that no loop ever waits on Redis.
//!
//! Invariants:
//! 1. The scan covers the ids `(after, through]` of the bus and returns every event of the
//!    requested topics in it, in id order. When the client's own last event (`after`) is no
//!    longer in the bus, what lies between it and the oldest entry kept is the exact gap
//!    `(after + 1, first − 1)`. A hole inside the range (positions that jump or go back: the
//!    bus lost entries) ends the scan before it, and the loop reports what lies past
//!    `through` (invariant 2).
//! 2. The scan is bounded: at most `max_events` events returned and [`SCAN_MAX`] entries
//!    read; `through` says how far it got, and the loop reports anything past it that its
//!    own history lacks as a gap (never silence).
//! 4. While the bus is unreachable (the reader lost it, or this thread failed to connect
//!    within the last [`RECONNECT_PAUSE`]) a resume is answered at once with nothing, and the
//!    loop serves it from history with its gap: no resume waits on a dead bus.
//! 3. The answer goes back to the requesting loop through its hub channel
//!    ([`crate::hub::LoopMsg::Resumed`]), which replays it and registers the stream in one
//!    step; live events up to `through` are skipped there, so nothing comes twice.

use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::reader::{event, Topics};
use super::{Bus, Connection};
use crate::hub::{Hub, LoopMsg};

/// Entries read from the bus per resume at most (a topic that is rare in a busy stream
/// cannot make one resume read the whole stream).
pub const SCAN_MAX: usize = 100_000;
/// Entries per `XRANGE` round trip.
const SCAN_BATCH: usize = 1_000;
/// Resumes waiting for the helper thread; past it a resume is served from local history
/// alone (with its gap).
pub const QUEUE: usize = 1_024;

/// A loop asks for the bus's events after `after` on `topics`.
#[derive(Debug)]
pub struct Request {
    /// The asking loop.
    pub loop_index: usize,
    /// The connection (slab key) and the token that proves it is still the same one.
    pub key: usize,
    /// See `key`.
    pub token: u64,
    /// Topics of the stream.
    pub topics: Vec<String>,
    /// The client's last id.
    pub after: u64,
    /// The newest id the loop's history lacks: the scan needs to reach at least this.
    pub upto: u64,
    /// Most events to return (the outbox bound).
    pub max_events: usize,
}

/// The bus's answer to a [`Request`] (defined with the hub channel that carries it).
pub use crate::hub::Resumed;

/// An answer that found nothing: the loop serves the resume from its history alone.
fn nothing(req: &Request) -> Resumed {
    Resumed {
        key: req.key,
        token: req.token,
        gap: None,
        events: Vec::new(),
        through: req.after,
        holds_after: false,
    }
}

/// How often an answer retries a loop channel that was full (rare: the channel holds
/// `--hub-queue-events`, and the loop drains it every iteration).
const LOOP_ROOM_RETRY: Duration = Duration::from_millis(1);
/// After a failed connect or scan, resumes are served from history alone for this long
/// before the thread tries the bus again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// How often the idle resume thread looks whether the server is shutting down.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(100);

/// Serves requests until the hub is closed.
pub(super) fn run(bus: &Bus, hub: &Hub) {
    let mut conn: Option<Box<dyn Connection>> = None;
    let mut topics = Topics::default();
    let mut failed_at: Option<Instant> = None;
    loop {
        let req = match bus.resume_rx.recv_timeout(SHUTDOWN_CHECK) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) if !hub.is_closed() => continue,
            _ => return,
        };
        // While the bus is down, answer at once from history (with its gap) rather than
        // make every queued resume wait out a connect timeout in turn.
        let may_connect = bus.connected.load(std::sync::atomic::Ordering::Acquire)
            && !failed_at.is_some_and(|t| t.elapsed() < RECONNECT_PAUSE);
        if conn.is_none() && may_connect {
            conn = match bus.connector.connect(bus.io_timeout) {
                Ok(c) => Some(c),
                Err(e) => {
                    log::warn!("bus: resume: {e}");
                    failed_at = Some(Instant::now());
                    None
                }
            };
        }
        let answer = match conn.as_mut() {
            Some(c) => scan(c.as_mut(), &req, &mut topics).unwrap_or_else(|e| {
                log::warn!("bus: resume after {} failed ({e}); served from history", req.after);
                conn = None;
                failed_at = Some(Instant::now());
                nothing(&req)
            }),
            None => nothing(&req),
        };
        let mut msg = LoopMsg::Resumed(Box::new(answer));
        // The loop's channel may be full; wait for room as the reader does.
        loop {
            match hub.send_control_or_return(req.loop_index, msg) {
                Ok(()) => break,
                Err(_) if hub.is_closed() => return,
                Err(back) => {
                    msg = back;
                    std::thread::sleep(LOOP_ROOM_RETRY);
                }
            }
        }
    }
}

fn scan(conn: &mut dyn Connection, req: &Request, topics: &mut Topics) -> Result<Resumed, super::BusError> {
    let now = Instant::now();
    let mut answer = nothing(req);
    let mut scanned = 0;
    // The position (`n`) of the entry read last: a jump or a step back is a hole, and the
    // scan stops before it (invariant 1).
    let mut last_n: Option<u64> = None;
    let mut from = req.after;
    while scanned < SCAN_MAX && answer.through < req.upto {
        let read = conn.range_from(from, SCAN_BATCH)?;
        if read.malformed > 0 {
            log::debug!("bus: resume scan skipped {} entries another writer added", read.malformed);
        }
        for e in &read.entries {
            if scanned == 0 && e.id != req.after {
                // The client's own last event is no longer in the bus: what came between it
                // and the oldest entry kept is gone.
                answer.gap = Some((req.after + 1, e.id - 1));
            }
            scanned += 1;
            let hole = matches!((last_n, e.n), (Some(l), Some(n)) if n != l + 1);
            if hole {
                return Ok(answer);
            }
            last_n = e.n;
            if e.id == req.after {
                answer.holds_after = true;
                continue;
            }
            answer.through = e.id;
            if req.topics.contains(&e.topic) {
                answer.events.push(event(e, topics, now));
                if answer.events.len() == req.max_events {
                    return Ok(answer);
                }
            }
        }
        if read.len() < SCAN_BATCH || read.entries.is_empty() {
            // The end of the stream, or a whole batch of another writer's entries (which
            // would not move `through`): answer with what was found.
            break;
        }
        from = answer.through + 1;
    }
    Ok(answer)
}
