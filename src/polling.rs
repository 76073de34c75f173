//! The polling fallback (sans-IO): JSON views of a loop's history, so a client can fill a
//! gap, or follow a topic, without a stream.
//!
//! - `GET /topics/{t}/latest` → `200 {"id","topic","event","data","class"[,"key"]}`, `404` when the
//!   topic has no retained event.
//! - `GET /topics/{t}/events?after=ID&limit=N` → `200 [...]` in id order (`[]` when nothing
//!   is newer), `404` for a topic this node holds no history of (and, after `ID`, lost none of). When events after `ID`
//!   were dropped from history, `X-Gap-From`/`X-Gap-To` name the inclusive range that is
//!   gone (the same range a stream would report as `event: gap`). When more retained events
//!   follow the answer (cut by `limit` or by the byte bound), `X-Next-After` names the id to
//!   pass as `after` for the rest. These three headers are named in
//!   `Access-Control-Expose-Headers`, so a cross-origin browser client can read them.
//!
//! Invariants (the answer's size, [`PollBounds`]):
//! 1. An answer's body holds at most `page_bytes` (`--poll-max-bytes`) unless it holds a
//!    single event: events are added in id order until the next would cross the bound.
//! 2. The first event of a page is always answered if its JSON alone fits `event_bytes`
//!    (the larger of `--poll-max-bytes` and `--outbox-max-bytes`, the node's bound on what
//!    one connection may hold), so paging always moves forward.
//! 3. An event whose JSON alone is over `event_bytes` (possible only when JSON escaping
//!    inflates a frame several times) is never built into an answer: at the start of a page
//!    it is left out and reported in `X-Gap-From`/`X-Gap-To` (a stream can still replay it),
//!    elsewhere the page ends before it. `/latest` answers such an event `404` with a
//!    message saying so.
//! 4. Following `X-Next-After` from any `after` yields every retained event exactly once,
//!    in id order.

use std::io;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::history::{merge_gap, History};
use crate::http;
use crate::hub::Event;

/// The headers of a `/events?after=` answer a cross-origin browser client must be able to
/// read (`Access-Control-Expose-Headers`): without them it cannot see a loss or page on.
pub const EXPOSE_HEADERS: &str = "X-Gap-From, X-Gap-To, X-Next-After";

/// How large one polling answer may grow.
#[derive(Debug, Clone, Copy)]
pub struct PollBounds {
    /// Most body bytes of an answer holding more than one event (`--poll-max-bytes`).
    pub page_bytes: usize,
    /// Most JSON bytes of one event answered at all (invariant 2).
    pub event_bytes: usize,
}

/// A polling answer and what the bounds left out of it (for the counters).
#[derive(Debug)]
pub struct Answer {
    /// The full HTTP response.
    pub response: Bytes,
    /// The page ended early because of `page_bytes` (the rest is at `X-Next-After`).
    pub truncated: bool,
    /// Events left out because their JSON alone is over `event_bytes` (invariant 3).
    pub skipped: usize,
}

impl Answer {
    fn plain(response: Bytes) -> Answer {
        Answer { response, truncated: false, skipped: 0 }
    }
}

/// One event as the polling endpoints show it.
pub fn event_json(e: &Event) -> Value {
    let (event, data) = crate::sse::decode_frame(&e.frame);
    let mut v =
        json!({ "id": e.id, "topic": &*e.topic, "event": event, "data": data, "class": e.class.label() });
    if let Some(k) = &e.key {
        v["key"] = Value::from(&**k);
    }
    v
}

/// Bytes `v` takes as compact JSON, measured without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

fn not_found(message: String, keep_alive: bool) -> Bytes {
    let body = json!({ "error": message }).to_string() + "\n";
    http::response(404, "", "application/json", body.as_bytes(), keep_alive)
}

fn no_history(topic: &str, keep_alive: bool) -> Bytes {
    not_found(format!("no retained events for topic {topic:?}"), keep_alive)
}

/// `GET /topics/{topic}/latest`.
pub fn latest(history: &History, topic: &str, bounds: PollBounds, now: Instant, keep_alive: bool) -> Answer {
    let Some(e) = history.latest(topic, now) else {
        return Answer::plain(no_history(topic, keep_alive));
    };
    let v = event_json(e);
    let len = json_len(&v);
    if len > bounds.event_bytes {
        let message = format!(
            "the newest event of topic {topic:?} (id {}) is {len} bytes as JSON, more than a polling \
             answer may hold ({} bytes: --poll-max-bytes, --outbox-max-bytes); read it from a stream",
            e.id, bounds.event_bytes
        );
        return Answer { response: not_found(message, keep_alive), truncated: false, skipped: 1 };
    }
    let body = v.to_string() + "\n";
    let response =
        http::response(200, "Cache-Control: no-cache\r\n", "application/json", body.as_bytes(), keep_alive);
    Answer::plain(response)
}

/// `GET /topics/{topic}/events?after=ID&limit=N`.
pub fn events_after(
    history: &History,
    topic: &str,
    after: u64,
    limit: usize,
    bounds: PollBounds,
    now: Instant,
    keep_alive: bool,
) -> Answer {
    // One more than asked for: whether anything follows the page.
    let Some((mut gap, events)) = history.after(topic, after, limit.saturating_add(1), now) else {
        return Answer::plain(no_history(topic, keep_alive));
    };
    let mut body = Vec::from(&b"["[..]);
    let (mut count, mut last, mut skipped, mut truncated) = (0, after, 0, false);
    let mut ended_early = false;
    for e in &events {
        if count == limit {
            ended_early = true;
            break;
        }
        let v = event_json(e);
        let len = json_len(&v);
        if len > bounds.event_bytes {
            if count > 0 {
                // The next page starts with it and leaves it out there (invariant 3).
                (ended_early, truncated) = (true, true);
                break;
            }
            log::debug!("polling {topic:?}: event {} left out, {len} bytes as JSON", e.id);
            merge_gap(&mut gap, (e.id, e.id));
            (skipped, last) = (skipped + 1, e.id);
            continue;
        }
        // `,` before it and `]\n` after it.
        if count > 0 && body.len() + 1 + len + 2 > bounds.page_bytes {
            (ended_early, truncated) = (true, true);
            break;
        }
        if count > 0 {
            body.push(b',');
        }
        // Writing a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, &v);
        (count, last) = (count + 1, e.id);
    }
    // All `limit + 1` taken (some left out): more may follow.
    let more = ended_early || events.len() > limit;
    body.extend_from_slice(b"]\n");
    // A browser's cross-origin `fetch` may read these only when exposed (the header grants
    // nothing without CORS's Allow-Origin), and a client fills gaps from them.
    let mut extra = format!("Cache-Control: no-cache\r\nAccess-Control-Expose-Headers: {EXPOSE_HEADERS}\r\n");
    if let Some((from, to)) = gap {
        extra.push_str(&format!("X-Gap-From: {from}\r\nX-Gap-To: {to}\r\n"));
    }
    if more {
        extra.push_str(&format!("X-Next-After: {last}\r\n"));
    }
    let response = http::response(200, &extra, "application/json", &body, keep_alive);
    Answer { response, truncated, skipped }
}
