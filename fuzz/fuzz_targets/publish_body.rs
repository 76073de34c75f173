//! The publish body parser (`publish::parse`: raw, JSON envelope, NDJSON batch) as
//! `route::route` calls it for `POST /publish`.
//!
//! Input: byte 0 picks the `Content-Type` (low nibble) and `--outbox-max-bytes` (high
//! nibble); the rest up to the first LF is the query string, after it the body.
//! Invariants:
//! - never panics; every refusal is a known status with a well-formed response;
//! - what `route` accepts is what `publish::parse` read, event for event and in order;
//! - the raw form publishes the body as is, under the query's topic and event name;
//! - the JSON forms publish each envelope's `data` (a string as is, any other value as
//!   compact JSON), one message per non-blank NDJSON line;
//! - each prepared frame, once the hub adds an id, reads back by the WHATWG rules as exactly
//!   that event: same name (or `message`), same data with line ends read as LF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sse_edge::http::{self, Request};
use sse_edge::publish::{self, Shape};
use sse_edge::route::{Action, RouteLimits};
use sse_edge_fuzz::{check_event_frame, check_route};

const CONTENT_TYPES: [Option<&str>; 10] = [
    Some("text/plain"),
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("Application/JSON"),
    Some("application/x-ndjson"),
    Some("application/jsonl"),
    Some("application/jsonlines; charset=utf-8"),
    Some("application/octet-stream"),
    Some("application/x-ndjson"),
];
const MAX_FRAMES: [usize; 4] = [64, 256, 4096, 1 << 20];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(selector & 0x0f) % CONTENT_TYPES.len()];
    let max_frame = MAX_FRAMES[usize::from(selector >> 4) % MAX_FRAMES.len()];
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    // A query reaches the router as UTF-8 (the parser refuses other header bytes).
    let Ok(query) = std::str::from_utf8(query) else { return };
    let mut headers = vec![("content-length".to_string(), body.len().to_string())];
    if let Some(ct) = content_type {
        headers.push(("content-type".to_string(), ct.to_string()));
    }
    let req = Request {
        method: "POST".into(),
        path: "/publish".into(),
        query: query.into(),
        headers,
        body: body.to_vec().into(),
        keep_alive: true,
    };

    let parsed = publish::parse(&req);
    let routed = check_route(&req, RouteLimits { max_topics: 4, max_frame });
    let Ok(Action::Publish { events, shape }) = routed else { return };
    let (messages, parsed_shape) = parsed.expect("route accepted what publish::parse refused");
    assert_eq!(shape, parsed_shape);
    assert_eq!(events.len(), messages.len());
    for (n, (e, m)) in events.iter().zip(&messages).enumerate() {
        assert_eq!(&*e.topic, m.topic);
        assert_eq!(e.class, m.class);
        assert_eq!(e.key.as_deref(), m.key.as_deref());
        check_event_frame(&e.body, n as u64, m.event.as_deref(), &m.data);
    }

    // What each form should have read, from the body alone.
    let text = std::str::from_utf8(body).expect("accepted bodies are UTF-8");
    let form = content_type.map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let query_value = |name: &str| {
        http::query_pairs(query).ok()?.into_iter().filter(|(k, _)| k == name).map(|(_, v)| v).next_back()
    };
    match form.as_deref() {
        Some("application/json") => {
            assert_eq!(shape, Shape::Single);
            assert_eq!(messages.len(), 1);
            check_envelope(text, &messages[0], &query_value("topic"), &query_value("event"));
        }
        Some("application/x-ndjson" | "application/jsonl" | "application/jsonlines") => {
            assert_eq!(shape, Shape::Batch);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), messages.len());
            for (line, m) in lines.iter().zip(&messages) {
                check_envelope(line, m, &query_value("topic"), &query_value("event"));
            }
        }
        _ => {
            assert_eq!(shape, Shape::Single);
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0].data, text, "the raw form publishes the body as is");
            assert_eq!(Some(&messages[0].topic), query_value("topic").as_ref());
            assert_eq!(messages[0].event, query_value("event"));
        }
    }
});

/// `m` is what envelope `line` says, with the query's topic and event as defaults.
fn check_envelope(line: &str, m: &publish::Message, topic: &Option<String>, event: &Option<String>) {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
        panic!("accepted envelope {line:?} is not a JSON object")
    };
    let data = match &map["data"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert_eq!(m.data, data);
    let string = |name: &str| map.get(name).and_then(Value::as_str).map(str::to_string);
    assert_eq!(Some(&m.topic), string("topic").or(topic.clone()).as_ref());
    assert_eq!(m.event, string("event").or(event.clone()));
}
