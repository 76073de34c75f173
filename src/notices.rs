//! The control events the node itself sends on a stream, and the names publishers may
//! therefore not use.
//!
//! Invariants:
//! 1. Every control event the node emits has its name in [`RESERVED_EVENT_NAMES`], and
//!    [`check_not_reserved`] refuses those names on every publish path (HTTP and embedded),
//!    so a client can trust that `gap`, `server-shutdown`, `system.overloaded`,
//!    `system.recovered` and `token-expired` come from the node, never from a publisher.
//! 2. Control frames carry no `id:` line: they never move a client's Last-Event-ID.

use bytes::Bytes;

/// Event names only the node sends (exact, case-sensitive match, as EventSource dispatches).
pub const RESERVED_EVENT_NAMES: [&str; 5] =
    ["gap", "server-shutdown", "system.overloaded", "system.recovered", "token-expired"];

/// Refuses an event name the node uses for its own notices (invariant 1).
pub fn check_not_reserved(name: &str) -> Result<(), String> {
    if RESERVED_EVENT_NAMES.contains(&name) {
        return Err(format!(
            "event name {name:?} is reserved for the server's own notices ({})",
            RESERVED_EVENT_NAMES.join(", ")
        ));
    }
    Ok(())
}

/// `event: system.overloaded` (`on`) or `event: system.recovered`.
pub fn overload(on: bool) -> Bytes {
    let name = if on { "system.overloaded" } else { "system.recovered" };
    Bytes::from(format!("event: {name}\ndata: {{\"overloaded\":{on}}}\n\n"))
}

/// `event: server-shutdown` with the reconnection delay this stream should use.
pub fn shutdown(retry_ms: u64) -> Bytes {
    Bytes::from(format!("event: server-shutdown\ndata: {{\"reconnect\":true}}\nretry: {retry_ms}\n\n"))
}

/// `event: token-expired`: the subscribe token this stream was opened with expired at `exp`
/// (Unix seconds); the stream closes after it, and the client reconnects after `retry_ms`
/// (jittered by the caller, as tokens minted together expire together) with a fresh token
/// and its Last-Event-ID.
pub fn token_expired(exp: u64, retry_ms: u64) -> Bytes {
    Bytes::from(format!(
        "event: token-expired\ndata: {{\"exp\":{exp},\"reconnect\":true}}\nretry: {retry_ms}\n\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_the_node_sends_uses_a_reserved_name() {
        for frame in
            [overload(true), overload(false), shutdown(10), token_expired(1, 10), crate::sse::gap_frame(1, 2)]
        {
            let text = std::str::from_utf8(&frame).unwrap();
            let name = text.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
            assert!(check_not_reserved(name).is_err(), "{name} is not reserved");
            assert!(!text.contains("\nid:") && !text.starts_with("id:"), "{text}");
        }
        assert!(check_not_reserved("job.progress").is_ok());
        assert!(check_not_reserved("Gap").is_ok(), "names are case-sensitive, as EventSource's");
    }
}
