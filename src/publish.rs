//! Publish bodies → validated, pre-encoded events (sans-IO).
//!
//! Three body forms, chosen by `Content-Type`:
//! - anything but the JSON types: the body is the event's data (UTF-8), topic and event name
//!   from the query (`?topic=t&event=name`);
//! - `application/json`: one envelope `{"topic","event","data"}`; `data` may be any JSON
//!   value (a string is sent as is, anything else as compact JSON); the query's `topic` and
//!   `event` are defaults for the envelope's;
//! - `application/x-ndjson` (also `application/jsonl`, `application/jsonlines`): one envelope
//!   per line, blank lines skipped, published in order.
//!
//! Every form carries a delivery class: `class` = `reliable` (default) | `latest` (needs a
//! `key`) | `droppable`, from the envelope or the query (`?class=latest&key=job-42`).
//!
//! Invariant: everything that can make a publish fail is checked here, before the hub, so
//! the hub's lock only assigns ids and enqueues: a batch is accepted or refused whole.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::http::{Reject, Request};
use crate::{sse, topics};

/// How an event is treated when a subscriber falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Class {
    /// Evicted only when nothing cheaper is queued; every eviction is reported to the client
    /// as an `event: gap` with the missed id range.
    #[default]
    Reliable,
    /// Progress-like state for one `key`: a queued, unsent older value is replaced by the
    /// newer one, and publishes are throttled per topic+key (the last value always goes out).
    Latest,
    /// Dropped first when an outbox is full; shed in overload mode.
    Droppable,
}

impl Class {
    /// All classes, in counter order (cheapest last).
    pub const ALL: [Class; 3] = [Class::Reliable, Class::Latest, Class::Droppable];

    /// The name used in the API, metrics and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Class::Reliable => "reliable",
            Class::Latest => "latest",
            Class::Droppable => "droppable",
        }
    }

    /// Index into per-class counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses an API name.
    pub fn parse(name: &str) -> Result<Class, String> {
        Class::ALL
            .into_iter()
            .find(|c| c.label() == name)
            .ok_or_else(|| format!("class {name:?} is not one of reliable, latest, droppable"))
    }
}

/// Longest `key` of a `latest` event, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// One event as a publisher describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic to publish on.
    pub topic: String,
    /// Optional event name (the SSE `event:` field).
    pub event: Option<String>,
    /// The data; line breaks become separate `data:` lines.
    pub data: String,
    /// Delivery class.
    pub class: Class,
    /// Conflation key (required for, and only allowed with, [`Class::Latest`]).
    pub key: Option<String>,
}

impl Message {
    /// A reliable message with data and no event name.
    pub fn new(topic: impl Into<String>, data: impl Into<String>) -> Self {
        Message { topic: topic.into(), event: None, data: data.into(), class: Class::Reliable, key: None }
    }

    /// Sets the event name.
    pub fn event(mut self, name: impl Into<String>) -> Self {
        self.event = Some(name.into());
        self
    }

    /// Makes this a [`Class::Latest`] event for `key`.
    pub fn latest(mut self, key: impl Into<String>) -> Self {
        self.class = Class::Latest;
        self.key = Some(key.into());
        self
    }

    /// Makes this a [`Class::Droppable`] event.
    pub fn droppable(mut self) -> Self {
        self.class = Class::Droppable;
        self.key = None;
        self
    }
}

/// A message checked and encoded, waiting only for its id.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Interned topic name, shared by the event on every loop.
    pub topic: Arc<str>,
    /// The frame without its `id:` line.
    pub body: Bytes,
    /// Delivery class.
    pub class: Class,
    /// Conflation key of a `latest` event.
    pub key: Option<Arc<str>>,
    /// Admission order of a `latest` value the throttle released (0: none); the hub uses it
    /// so an older value never overtakes a newer one ([`crate::throttle`] invariant 6).
    pub stamp: u64,
}

/// Checks a message and encodes its frame body. `max_frame` is the largest frame a
/// connection's outbox can hold (`--outbox-max-bytes`).
pub fn prepare(msg: &Message, max_frame: usize) -> Result<Prepared, Reject> {
    validate(msg)?;
    let meta = sse::Meta {
        topic: &msg.topic,
        class: (msg.class != Class::Reliable).then(|| msg.class.label()),
        key: msg.key.as_deref(),
    };
    let body = sse::encode_body(&meta, msg.event.as_deref(), &msg.data)
        .map_err(|e| Reject::BadRequest(e.to_string()))?;
    // `id: ` + 20 digits + `\n` is the most the hub adds.
    if body.len() + 25 > max_frame {
        return Err(Reject::PayloadTooLarge(format!(
            "encoded event of {} bytes exceeds {max_frame} (--outbox-max-bytes)",
            body.len() + 25
        )));
    }
    Ok(Prepared {
        topic: Arc::from(msg.topic.as_str()),
        body,
        class: msg.class,
        key: msg.key.as_deref().map(Arc::from),
        stamp: 0,
    })
}

/// Checks topic, event name, class and key: everything but the encoded size.
pub fn validate(msg: &Message) -> Result<(), Reject> {
    topics::validate(&msg.topic).map_err(Reject::BadRequest)?;
    if let Some(name) = &msg.event {
        sse::check_event_name(name).map_err(|e| Reject::BadRequest(e.to_string()))?;
        crate::notices::check_not_reserved(name).map_err(Reject::BadRequest)?;
    }
    match (msg.class, &msg.key) {
        (Class::Latest, None) => Err(Reject::BadRequest("class latest needs a key".into())),
        (Class::Latest, Some(k)) if k.is_empty() || k.len() > MAX_KEY_BYTES => {
            Err(Reject::BadRequest(format!("key must be 1..={MAX_KEY_BYTES} bytes")))
        }
        (Class::Latest, Some(k)) => sse::check_key(k).map_err(|e| Reject::BadRequest(e.to_string())),
        (Class::Reliable | Class::Droppable, Some(_)) => {
            Err(Reject::BadRequest("key is only allowed with class latest".into()))
        }
        _ => Ok(()),
    }
}

/// Refuses topics reserved for the node itself (its status feed).
pub fn check_not_reserved(topic: &str) -> Result<(), Reject> {
    if topic.starts_with(topics::RESERVED_PREFIX) {
        return Err(Reject::BadRequest(format!(
            "topic {topic:?} is reserved: the {} prefix belongs to the node",
            topics::RESERVED_PREFIX
        )));
    }
    Ok(())
}

/// How the publisher framed its request; decides the response shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One event: answered `{"id":N}`.
    Single,
    /// Newline-delimited batch: answered `{"ids":[...]}`.
    Batch,
}

/// Parses a `POST /publish` request into messages.
pub fn parse(req: &Request) -> Result<(Vec<Message>, Shape), Reject> {
    let mut defaults = Defaults::default();
    for (k, v) in req.query_pairs()? {
        match k.as_str() {
            "topic" => defaults.topic = Some(v),
            "event" => defaults.event = Some(v),
            "class" => defaults.class = Some(Class::parse(&v).map_err(Reject::BadRequest)?),
            "key" => defaults.key = Some(v),
            _ => {}
        }
    }
    let content_type = req
        .header("content-type")
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let text = std::str::from_utf8(&req.body).map_err(|_| Reject::BadRequest("body is not UTF-8".into()))?;
    match content_type.as_str() {
        "application/json" => Ok((vec![envelope(text, &defaults)?], Shape::Single)),
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => {
            let mut batch = Vec::new();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let msg = envelope(line, &defaults).and_then(|m| validate(&m).map(|()| m));
                batch.push(msg.map_err(|e| match e {
                    Reject::BadRequest(m) => Reject::BadRequest(format!("line {}: {m}", n + 1)),
                    other => other,
                })?);
            }
            if batch.is_empty() {
                return Err(Reject::BadRequest("empty batch".into()));
            }
            Ok((batch, Shape::Batch))
        }
        _ => {
            let Defaults { topic, event, class, key } = defaults;
            let topic = topic.ok_or_else(|| Reject::BadRequest("missing ?topic=".into()))?;
            let class = class.unwrap_or(if key.is_some() { Class::Latest } else { Class::Reliable });
            Ok((vec![Message { topic, event, data: text.to_string(), class, key }], Shape::Single))
        }
    }
}

/// Values from the query that apply to every message of the request unless overridden.
#[derive(Default)]
struct Defaults {
    topic: Option<String>,
    event: Option<String>,
    class: Option<Class>,
    key: Option<String>,
}

fn envelope(text: &str, defaults: &Defaults) -> Result<Message, Reject> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Reject::BadRequest(format!("invalid JSON envelope: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(Reject::BadRequest("envelope must be a JSON object".into()));
    };
    let field = |map: &mut serde_json::Map<String, Value>, name: &str| match map.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reject::BadRequest(format!("envelope field {name:?} must be a string"))),
    };
    let topic = field(&mut map, "topic")?
        .or_else(|| defaults.topic.clone())
        .ok_or_else(|| Reject::BadRequest("envelope has no \"topic\" and the query none".into()))?;
    let event = field(&mut map, "event")?.or_else(|| defaults.event.clone());
    let key = field(&mut map, "key")?.or_else(|| defaults.key.clone());
    let class = match field(&mut map, "class")? {
        Some(name) => Class::parse(&name).map_err(Reject::BadRequest)?,
        None => defaults.class.unwrap_or(if key.is_some() { Class::Latest } else { Class::Reliable }),
    };
    let data = match map.remove("data") {
        None => return Err(Reject::BadRequest("envelope has no \"data\"".into())),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    Ok(Message { topic, event, data, class, key })
}

/// The 202 body: the id of each event, or `null` for a `latest` event the throttle holds
/// (it goes out, with a later id, when its window ends unless a newer value replaces it).
pub fn accepted_body(ids: &[Option<u64>], shape: Shape) -> String {
    match (shape, ids) {
        (Shape::Single, [Some(id)]) => format!("{{\"id\":{id}}}\n"),
        (Shape::Single, [None]) => "{\"id\":null,\"throttled\":true}\n".to_string(),
        _ => format!("{{\"ids\":{}}}\n", Value::from(ids.to_vec())),
    }
}

/// The 503 body of a publish that waited `--publish-wait-timeout-ms` for hub room: per event
/// of the request, in order, its id if it was sequenced (it is delivered) or `null` (not
/// sequenced, or held by the `latest` throttle); always a list, also for a single publish.
pub fn timed_out_body(ids: &[Option<u64>], waited_ms: u64) -> String {
    let error = format!("hub queue full: waited {waited_ms} ms (--publish-wait-timeout-ms)");
    format!("{{\"error\":{},\"ids\":{}}}\n", Value::String(error), Value::from(ids.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{self, Limits, Parse};

    fn request(raw: &str) -> Request {
        match http::parse(raw.as_bytes(), Limits { max_head: 4096, max_body: 4096 }) {
            Parse::Complete(r, _) => *r,
            other => panic!("{other:?}"),
        }
    }

    fn post(content_type: &str, query: &str, body: &str) -> Request {
        request(&format!(
            "POST /publish{query} HTTP/1.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    #[test]
    fn raw_body_uses_query_topic_and_event() {
        let (msgs, shape) = parse(&post("text/plain", "?topic=a&event=job.progress", "50%")).unwrap();
        assert_eq!(shape, Shape::Single);
        assert_eq!(msgs, vec![Message::new("a", "50%").event("job.progress")]);
    }

    #[test]
    fn json_envelope_data_may_be_any_value() {
        let (msgs, _) = parse(&post("application/json", "", r#"{"topic":"t","data":{"pct":5}}"#)).unwrap();
        assert_eq!(msgs[0].data, r#"{"pct":5}"#);
        let (msgs, _) =
            parse(&post("application/json; charset=utf-8", "?topic=q", r#"{"data":"s"}"#)).unwrap();
        assert_eq!(msgs[0], Message::new("q", "s"));
    }

    #[test]
    fn ndjson_batch_keeps_order_and_names_bad_lines() {
        let body = "{\"topic\":\"a\",\"data\":1}\n\n{\"topic\":\"b\",\"event\":\"e\",\"data\":\"x\"}\n";
        let (msgs, shape) = parse(&post("application/x-ndjson", "", body)).unwrap();
        assert_eq!(shape, Shape::Batch);
        assert_eq!(msgs, vec![Message::new("a", "1"), Message::new("b", "x").event("e")]);
        let err =
            parse(&post("application/x-ndjson", "", "{\"topic\":\"a\",\"data\":1}\n{oops\n")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn class_and_key_from_query_or_envelope() {
        let (msgs, _) = parse(&post("text/plain", "?topic=a&class=latest&key=job-1", "5%")).unwrap();
        assert_eq!(msgs[0], Message::new("a", "5%").latest("job-1"));
        let (msgs, _) = parse(&post("text/plain", "?topic=a&key=job-1", "5%")).unwrap();
        assert_eq!(msgs[0].class, Class::Latest, "a key alone implies latest");
        let body = r#"{"topic":"a","data":1,"class":"droppable"}"#;
        assert_eq!(parse(&post("application/json", "", body)).unwrap().0[0].class, Class::Droppable);
        assert!(parse(&post("text/plain", "?topic=a&class=urgent", "x")).is_err());
        assert!(prepare(&Message { key: None, ..Message::new("a", "x").latest("k") }, 1000).is_err());
        assert!(prepare(&Message { key: Some("k".into()), ..Message::new("a", "x") }, 1000).is_err());
        assert_eq!(accepted_body(&[None], Shape::Single), "{\"id\":null,\"throttled\":true}\n");
        assert_eq!(accepted_body(&[Some(3), None], Shape::Batch), "{\"ids\":[3,null]}\n");
    }

    #[test]
    fn timed_out_body_lists_sequenced_ids_and_nulls() {
        let body = timed_out_body(&[Some(7), Some(8), None], 10_000);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "hub queue full: waited 10000 ms (--publish-wait-timeout-ms)");
        assert_eq!(v["ids"], serde_json::json!([7, 8, null]));
        assert!(body.ends_with('\n'));
    }

    #[test]
    fn invalid_publishes_are_refused() {
        assert!(parse(&post("text/plain", "", "x")).is_err());
        assert!(parse(&post("application/json", "", "[1]")).is_err());
        assert!(parse(&post("application/json", "", r#"{"topic":"a"}"#)).is_err());
        assert!(prepare(&Message::new("bad topic", "x"), 1000).is_err());
        assert!(prepare(&Message::new("t", "x").event("a\nb"), 1000).is_err());
        assert_eq!(prepare(&Message::new("t", "x".repeat(1000)), 1000).unwrap_err().status(), 413);
        assert!(prepare(&Message::new("t", "x").latest("a\nb"), 1000).is_err(), "a key is a frame field");
        assert!(prepare(&Message::new("t", "x").latest("a\rb"), 1000).is_err());
    }

    #[test]
    fn the_node_s_topic_prefix_is_refused_to_publishers() {
        for topic in ["sse-edge.status", "sse-edge.", "sse-edge.anything"] {
            let err = check_not_reserved(topic).unwrap_err();
            assert_eq!(err.status(), 400, "{topic}");
            assert!(format!("{err:?}").contains("prefix belongs to the node"), "{err:?}");
        }
        for topic in ["jobs", "sse-edge", "my.sse-edge.status", "sse-edgeX"] {
            assert!(check_not_reserved(topic).is_ok(), "{topic}");
        }
    }
}
