//! The polling fallback (sans-IO): JSON views of a loop's history, so a client can fill a
//! gap, or follow a topic, without a stream.
//!
//! - `GET /topics/{t}/latest` → `200 {"id","event","data","class"[,"key"]}`, `404` when the
//!   topic has no retained event.
//! - `GET /topics/{t}/events?after=ID&limit=N` → `200 [...]` in id order (`[]` when nothing
//!   is newer), `404` for a topic this node holds no history of (and, after `ID`, lost none of). When events after `ID`
//!   were dropped from history, `X-Gap-From`/`X-Gap-To` name the inclusive range that is
//!   gone (the same range a stream would report as `event: gap`).

use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::history::History;
use crate::http;
use crate::hub::Event;

/// One event as the polling endpoints show it.
pub fn event_json(e: &Event) -> Value {
    let (event, data) = crate::sse::decode_frame(&e.frame);
    let mut v = json!({ "id": e.id, "event": event, "data": data, "class": e.class.label() });
    if let Some(k) = &e.key {
        v["key"] = Value::from(&**k);
    }
    v
}

fn not_found(topic: &str, keep_alive: bool) -> Bytes {
    let body = json!({ "error": format!("no retained events for topic {topic:?}") }).to_string() + "\n";
    http::response(404, "", "application/json", body.as_bytes(), keep_alive)
}

/// `GET /topics/{topic}/latest`.
pub fn latest(history: &History, topic: &str, now: Instant, keep_alive: bool) -> Bytes {
    match history.latest(topic, now) {
        Some(e) => {
            let body = event_json(e).to_string() + "\n";
            http::response(
                200,
                "Cache-Control: no-cache\r\n",
                "application/json",
                body.as_bytes(),
                keep_alive,
            )
        }
        None => not_found(topic, keep_alive),
    }
}

/// `GET /topics/{topic}/events?after=ID&limit=N`.
pub fn events_after(
    history: &History,
    topic: &str,
    after: u64,
    limit: usize,
    now: Instant,
    keep_alive: bool,
) -> Bytes {
    let Some((gap, events)) = history.after(topic, after, limit, now) else {
        return not_found(topic, keep_alive);
    };
    let mut extra = String::from("Cache-Control: no-cache\r\n");
    if let Some((from, to)) = gap {
        extra.push_str(&format!("X-Gap-From: {from}\r\nX-Gap-To: {to}\r\n"));
    }
    let body = Value::from(events.iter().map(|e| event_json(e)).collect::<Vec<_>>()).to_string() + "\n";
    http::response(200, &extra, "application/json", body.as_bytes(), keep_alive)
}
