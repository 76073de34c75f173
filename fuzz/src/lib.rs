//! Invariant checks shared by the fuzz targets in `fuzz_targets/`.
//!
//! Every check panics (so libFuzzer reports a crash) when sse-edge breaks a promise its
//! module docs make: a rejection maps to a known status and a well-formed response, a route
//! only hands the loop validated values, and an encoded frame reads back, by the WHATWG
//! rules ([`whatwg`]), as exactly the event that was published.

pub mod whatwg;

use sse_edge::http::{self, Reject, Request};
use sse_edge::publish::{self, Class};
use sse_edge::route::{self, Action, RouteLimits};
use sse_edge::{sse, topics};

/// Statuses `Reject::status` may answer.
pub const REJECT_STATUSES: [u16; 9] = [400, 404, 405, 406, 411, 413, 414, 431, 505];

/// The most the hub adds to a prepared body: `id: ` + 20 digits + `\n`.
pub const ID_LINE_MAX: usize = 25;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A rejection has a known status and answers with a well-formed response whose head holds
/// nothing but printable ASCII lines (no client byte can split or add a header).
pub fn check_reject(r: &Reject) {
    let status = r.status();
    assert!(REJECT_STATUSES.contains(&status), "{r:?} -> {status}");
    assert_ne!(http::reason(status), "Unknown", "{r:?}");
    for keep_alive in [true, false] {
        let resp = r.response(keep_alive);
        let end = find(&resp, b"\r\n\r\n").expect("a response head ends with a blank line");
        let head = std::str::from_utf8(&resp[..end]).expect("the head is ASCII");
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head:?}");
        for line in head.split("\r\n") {
            assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "head line {line:?}");
        }
        let body = &resp[end + 4..];
        assert!(head.contains(&format!("\r\nContent-Length: {}\r", body.len())), "{head:?}");
        let connection = if keep_alive { "keep-alive" } else { "close" };
        assert!(head.contains(&format!("\r\nConnection: {connection}")), "{head:?}");
        serde_json::from_slice::<serde_json::Value>(body).expect("the body is JSON");
    }
}

/// The frame the hub makes of `body` with numeric `id` reads back as one event with that id,
/// the event name (or `message`) and `data` with its line ends read as LF; the polling
/// endpoints' `decode_frame` agrees; and the frame concatenates with the other frames a
/// stream carries.
pub fn check_event_frame(body: &[u8], id: u64, event: Option<&str>, data: &str) {
    let frame = sse::frame_with_u64_id(id, body);
    check_frame(&frame, &id.to_string(), event, data);
}

/// [`check_event_frame`] for a frame with any id.
pub fn check_frame(frame: &[u8], id: &str, event: Option<&str>, data: &str) {
    assert!(frame.ends_with(b"\n\n"), "a frame ends with a blank line: {frame:?}");
    assert!(!frame.contains(&b'\r'), "a frame never holds CR: {frame:?}");
    let want = whatwg::Event {
        event_type: event.unwrap_or("message").to_string(),
        data: whatwg::normalize_line_ends(data),
        last_event_id: id.to_string(),
    };
    let parsed = whatwg::parse(frame);
    assert_eq!(parsed.events, vec![want.clone()], "frame {:?}", String::from_utf8_lossy(frame));
    assert_eq!(parsed.last_event_id, id);
    assert_eq!(parsed.retry_ms, None);
    assert_eq!(sse::decode_frame(frame), (event.map(str::to_string), want.data.clone()), "decode_frame");

    // In a stream: prelude, heartbeat, the frame, a gap notice (no id: the client's
    // Last-Event-ID stays), the frame again.
    let mut stream = sse::prelude(1500).to_vec();
    stream.extend_from_slice(&sse::HEARTBEAT);
    stream.extend_from_slice(frame);
    stream.extend_from_slice(&sse::gap_frame(3, 9));
    stream.extend_from_slice(frame);
    let parsed = whatwg::parse(&stream);
    let gap = whatwg::Event {
        event_type: "gap".into(),
        data: "{\"from\":3,\"to\":9}".into(),
        last_event_id: id.to_string(),
    };
    assert_eq!(parsed.events, vec![want.clone(), gap, want]);
    assert_eq!(parsed.retry_ms, Some(1500));
}

/// Routes `req` and checks that what the loop is handed is valid: topics validated, within
/// limits and not reserved, publish frames within `max_frame` and readable as one event each,
/// polling limits in range; a refusal is a well-formed rejection.
pub fn check_route(req: &Request, limits: RouteLimits) -> Result<Action, Reject> {
    let routed = route::route(req, limits);
    match &routed {
        Err(r) => check_reject(r),
        Ok(Action::Subscribe { topics: wanted, .. }) => {
            assert_eq!(req.path, "/events");
            assert!(!wanted.is_empty() && wanted.len() <= limits.max_topics, "{wanted:?}");
            for (i, t) in wanted.iter().enumerate() {
                assert!(topics::validate(t).is_ok(), "{t:?}");
                assert!(!wanted[..i].contains(t), "duplicate topic {t:?}");
            }
        }
        Ok(Action::Publish { events, .. }) => {
            assert!(!events.is_empty());
            for e in events {
                assert!(topics::validate(&e.topic).is_ok(), "{:?}", e.topic);
                assert!(publish::check_not_reserved(&e.topic).is_ok(), "{:?}", e.topic);
                assert!(e.body.len() + ID_LINE_MAX <= limits.max_frame, "{} bytes", e.body.len());
                match (e.class, &e.key) {
                    (Class::Latest, Some(k)) => assert!(!k.is_empty() && k.len() <= publish::MAX_KEY_BYTES),
                    (Class::Latest, None) => panic!("latest without a key"),
                    (_, key) => assert!(key.is_none(), "{key:?}"),
                }
                let frame = sse::frame_with_u64_id(u64::MAX, &e.body);
                let parsed = whatwg::parse(&frame);
                assert_eq!(parsed.events.len(), 1, "{frame:?}");
                assert_eq!(parsed.events[0].last_event_id, u64::MAX.to_string());
            }
        }
        Ok(Action::Latest { topic }) => assert!(topics::validate(topic).is_ok(), "{topic:?}"),
        Ok(Action::EventsAfter { topic, limit, .. }) => {
            assert!(topics::validate(topic).is_ok(), "{topic:?}");
            assert!((1..=route::MAX_POLL_LIMIT).contains(limit), "{limit}");
        }
        Ok(Action::ClientScript(index)) => {
            assert_eq!(req.path, format!("/client/{}", sse_edge::client_js::FILES[*index].0));
        }
        Ok(_) => {
            assert!(
                matches!(req.path.as_str(), "/metrics" | "/healthz" | "/readyz" | "/" | "/status.json"),
                "{}",
                req.path
            );
            assert!(matches!(req.method.as_str(), "GET" | "HEAD"), "{}", req.method);
        }
    }
    routed
}

#[cfg(test)]
mod tests {
    use super::*;
    use sse_edge::publish::Message;

    /// The `topic:`/`class:`/`key:` lines every published frame carries (issue 12) are
    /// fields EventSource ignores: by the WHATWG rules each frame reads back as exactly the
    /// published id, event name and data, for every class, alone and inside a stream.
    #[test]
    fn meta_lines_are_invisible_to_eventsource() {
        let cases = [
            Message::new("jobs", "a\r\nb").event("job.done"),
            Message::new("logs", "").droppable(),
            Message::new("p", "50%").latest(" job:42"),
            Message::new("t", "key: not a field"),
        ];
        for msg in cases {
            let prepared = publish::prepare(&msg, 1 << 20).expect("valid message");
            let text = String::from_utf8_lossy(&prepared.body).to_string();
            assert!(text.starts_with(&format!("topic: {}\n", msg.topic)), "{text:?}");
            assert_eq!(text.contains("\nclass: "), msg.class != Class::Reliable, "{text:?}");
            assert_eq!(text.contains("\nkey: "), msg.key.is_some(), "{text:?}");
            check_event_frame(&prepared.body, 1_795_313_991_905_920, msg.event.as_deref(), &msg.data);
        }
    }
}
