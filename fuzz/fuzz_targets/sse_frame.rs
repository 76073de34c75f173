//! The SSE frame encoder (`sse::encode_body`, `frame_with_id`, `frame_with_u64_id`) against a
//! WHATWG event-stream parser, and the validation in front of it.
//!
//! Input: byte 0 says whether there is an event name; the rest is `id 0xFF event 0xFF data`
//! (0xFF never occurs in UTF-8; invalid UTF-8 in a part is read lossily).
//! Invariants:
//! - never panics;
//! - the encoder refuses exactly what it cannot represent by its contract (`sse` invariant 3:
//!   CR, LF or NUL in an id or event name; a name outside 1..=128 bytes), and whatever it
//!   encodes reads back by the WHATWG rules as the same id, event name and data (line ends
//!   read as LF), alone and inside a stream;
//! - what the encoder refuses is refused upstream with 400, before the encoder: by
//!   `publish::validate`, and by `route` for `POST /publish` in the raw form (event name from
//!   the query) and the JSON form (from the envelope); what it accepts, routing publishes
//!   with byte-identical frames.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sse_edge::http::Request;
use sse_edge::publish::{self, Message};
use sse_edge::route::{Action, RouteLimits};
use sse_edge::sse;
use sse_edge_fuzz::{check_event_frame, check_frame, check_route};

const ROUTE: RouteLimits = RouteLimits { max_topics: 4, max_frame: 1 << 30 };

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else { return };
    let mut parts = rest.splitn(3, |&b| b == 0xff).map(String::from_utf8_lossy);
    let id = parts.next().unwrap_or_default();
    let event = parts.next().filter(|_| flags & 1 == 1);
    let data = parts.next().unwrap_or_default();
    let event = event.as_deref();

    let name_ok = event.is_none_or(|e| {
        (1..=sse::MAX_EVENT_NAME_BYTES).contains(&e.len()) && !e.contains(['\r', '\n', '\0'])
    });
    let id_ok = !id.contains(['\r', '\n', '\0']);

    let body = sse::encode_body(&sse::Meta::topic("t"), event, &data);
    assert_eq!(body.is_ok(), name_ok, "event {event:?}: {body:?}");
    let numeric_id = u64::from_le_bytes(std::array::from_fn(|i| id.as_bytes().get(i).copied().unwrap_or(0)));
    if let Ok(body) = &body {
        let framed = sse::frame_with_id(&id, body);
        assert_eq!(framed.is_ok(), id_ok, "id {id:?}: {framed:?}");
        if let Ok(frame) = framed {
            check_frame(&frame, &id, event, &data);
        }
        check_event_frame(body, numeric_id, event, &data);
    }
    check_upstream(event, &data, body.ok());
});

/// Validation refuses what the encoder cannot encode (and the names the node reserves for its
/// own notices), and routing publishes the rest with the encoder's own bytes.
fn check_upstream(event: Option<&str>, data: &str, body: Option<Bytes>) {
    let body = body.filter(|_| event.is_none_or(|name| sse_edge::notices::check_not_reserved(name).is_ok()));
    let msg = Message { event: event.map(str::to_string), ..Message::new("t", data) };
    let validated = publish::validate(&msg);
    assert_eq!(validated.is_ok(), body.is_some(), "validate {event:?}: {validated:?}");
    if let Err(r) = &validated {
        assert_eq!(r.status(), 400);
    }

    let mut query = "topic=t".to_string();
    if let Some(name) = event {
        query.push_str("&event=");
        query.extend(name.bytes().map(|b| format!("%{b:02X}")));
    }
    let raw = post(query, "text/plain", data.as_bytes().to_vec());
    let envelope = serde_json::json!({ "topic": "t", "event": event, "data": data }).to_string();
    let json = post(String::new(), "application/json", envelope.into_bytes());
    for req in [raw, json] {
        match (check_route(&req, ROUTE), &body) {
            (Ok(Action::Publish { events, .. }), Some(body)) => {
                assert_eq!(events.len(), 1);
                assert_eq!(&events[0].body, body, "routing encodes exactly as the encoder");
            }
            (Err(r), None) => assert_eq!(r.status(), 400, "{r:?}"),
            (other, _) => panic!("event {event:?} encodable: {}, routed: {other:?}", body.is_some()),
        }
    }
}

fn post(query: String, content_type: &str, body: Vec<u8>) -> Request {
    Request {
        method: "POST".into(),
        path: "/publish".into(),
        query,
        headers: vec![
            ("content-length".into(), body.len().to_string()),
            ("content-type".into(), content_type.into()),
        ],
        body: body.into(),
        keep_alive: true,
    }
}
