//! Server-Sent Events wire format: an event is encoded once into a `Bytes` frame.
//!
//! Invariants (WHATWG HTML, "Parsing an event stream"):
//! 1. Every field line is `name: value\n`; the single space after the colon is always written,
//!    so a value that itself starts with a space survives the parser's strip of one space.
//! 2. `data` is split on `\r\n`, `\r` and `\n` (all three are line ends to a parser), one
//!    `data:` line per line; empty data is one empty `data:` line, which still dispatches.
//! 3. `id` and `event` values may not contain CR, LF or NUL (a parser would split the field,
//!    or ignore an id with NUL); such values are rejected, never escaped.
//! 4. A frame ends with one blank line, so frames can be concatenated in any order.
//! 5. Between `id:` and `event:` a frame names its topic (`topic:`), and for non-reliable
//!    events its class (`class: latest|droppable`) and a `latest` event's `key:`, so a client
//!    on several topics can fill gaps per topic and keep `latest` state per (topic, key).
//!    EventSource ignores field names it does not know (WHATWG: "otherwise, the field is
//!    ignored"), so plain EventSource clients see exactly the same events. Topic names never
//!    hold CR/LF ([`crate::topics::validate`]); class labels are fixed; keys are checked by
//!    [`check_key`] (invariant 3 applies to them as to ids).

use bytes::{BufMut, Bytes, BytesMut};

/// The heartbeat: one shared comment frame, never allocated per stream.
pub static HEARTBEAT: Bytes = Bytes::from_static(b":\n\n");

/// Longest accepted event name, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 128;

/// Why a field cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An `id` or `event` value contains CR, LF or NUL.
    #[error("{field} must not contain CR, LF or NUL")]
    ControlChar {
        /// The field name.
        field: &'static str,
    },
    /// An event name is empty or longer than [`MAX_EVENT_NAME_BYTES`].
    #[error("event name must be 1..={MAX_EVENT_NAME_BYTES} bytes")]
    EventNameLength,
}

fn check_field(field: &'static str, value: &str) -> Result<(), EncodeError> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(EncodeError::ControlChar { field });
    }
    Ok(())
}

/// Validates an event name (the `event:` field).
pub fn check_event_name(name: &str) -> Result<(), EncodeError> {
    if name.is_empty() || name.len() > MAX_EVENT_NAME_BYTES {
        return Err(EncodeError::EventNameLength);
    }
    check_field("event", name)
}

/// Validates an id (the `id:` field).
pub fn check_id(id: &str) -> Result<(), EncodeError> {
    check_field("id", id)
}

/// Validates a `latest` event's key (the `key:` field).
pub fn check_key(key: &str) -> Result<(), EncodeError> {
    check_field("key", key)
}

/// What a frame says about its event besides id, name and data (invariant 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta<'a> {
    /// The topic the event was published on (`topic:`).
    pub topic: &'a str,
    /// The delivery class label for non-reliable events (`class:`); `None` for reliable ones.
    pub class: Option<&'a str>,
    /// The conflation key of a `latest` event (`key:`).
    pub key: Option<&'a str>,
}

impl<'a> Meta<'a> {
    /// A reliable event on `topic`: only the `topic:` line.
    pub fn topic(topic: &'a str) -> Meta<'a> {
        Meta { topic, class: None, key: None }
    }

    /// Bytes the meta lines take in a frame.
    pub fn encoded_len(&self) -> usize {
        let line = |name: &str, v: Option<&str>| v.map_or(0, |v| name.len() + 3 + v.len());
        line("topic", Some(self.topic)) + line("class", self.class) + line("key", self.key)
    }
}

/// Encodes the part of a frame that follows the `id:` line: the meta lines (invariant 5),
/// `event:` (if any), the `data:` lines and the terminating blank line. Done outside the
/// hub's lock; the hub only prepends the id with [`frame_with_id`].
pub fn encode_body(meta: &Meta<'_>, event: Option<&str>, data: &str) -> Result<Bytes, EncodeError> {
    check_field("topic", meta.topic)?;
    if let Some(class) = meta.class {
        check_field("class", class)?;
    }
    if let Some(key) = meta.key {
        check_key(key)?;
    }
    if let Some(name) = event {
        check_event_name(name)?;
    }
    let lines = data.bytes().filter(|&b| b == b'\n' || b == b'\r').count() + 1;
    let mut out = BytesMut::with_capacity(
        meta.encoded_len() + event.map_or(0, |e| e.len() + 8) + data.len() + lines * 7 + 1,
    );
    for (name, value) in [("topic", Some(meta.topic)), ("class", meta.class), ("key", meta.key)] {
        if let Some(value) = value {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_u8(b'\n');
        }
    }
    if let Some(name) = event {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_u8(b'\n');
    }
    for line in split_lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    Ok(out.freeze())
}

/// Prepends `id: <id>\n` to an encoded body: the one copy made per event.
pub fn frame_with_id(id: &str, body: &[u8]) -> Result<Bytes, EncodeError> {
    check_id(id)?;
    let mut out = BytesMut::with_capacity(5 + id.len() + body.len());
    out.put_slice(b"id: ");
    out.put_slice(id.as_bytes());
    out.put_u8(b'\n');
    out.put_slice(body);
    Ok(out.freeze())
}

/// Prepends `id: <id>\n` for a numeric id, which can never hold a control character.
pub fn frame_with_u64_id(id: u64, body: &[u8]) -> Bytes {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = id;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut out = BytesMut::with_capacity(5 + (digits.len() - at) + body.len());
    out.put_slice(b"id: ");
    out.put_slice(&digits[at..]);
    out.put_u8(b'\n');
    out.put_slice(body);
    out.freeze()
}

/// The first bytes of every stream: the reconnection delay and a comment, so clients and
/// proxies see the stream is open before the first event.
pub fn prelude(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n: ok\n\n"))
}

/// The notice a client gets when reliable events with ids `from..=to` were dropped for it:
/// `event: gap` with `{"from","to"}` and no `id:` line (its Last-Event-ID stays put).
pub fn gap_frame(from: u64, to: u64) -> Bytes {
    Bytes::from(format!("event: gap\ndata: {{\"from\":{from},\"to\":{to}}}\n\n"))
}

/// Reads an encoded frame back into its event name and data (lines joined by `\n`), as a
/// client would see them. Used by the JSON polling endpoints, so payloads are stored once.
pub fn decode_frame(frame: &[u8]) -> (Option<String>, String) {
    let text = String::from_utf8_lossy(frame);
    let mut event = None;
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_string()),
            }
        }
    }
    (event, data.unwrap_or_default())
}

/// Splits `data` on `\r\n`, `\r` and `\n`, the way an event-stream parser does.
/// A trailing line end yields a final empty line, exactly as the parser would see it.
pub fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let bytes = data.as_bytes();
    let mut start = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut i = start;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    let line = &data[start..i];
                    start = i + 1;
                    return Some(line);
                }
                b'\r' => {
                    let line = &data[start..i];
                    start = if bytes.get(i + 1) == Some(&b'\n') { i + 2 } else { i + 1 };
                    return Some(line);
                }
                _ => i += 1,
            }
        }
        done = true;
        Some(&data[start..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal event-stream parser written from the WHATWG algorithm, to check frames
    /// against the reader's view rather than against our own encoder.
    fn parse(stream: &str) -> Vec<(Option<String>, String, String)> {
        let mut events = Vec::new();
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        for line in split_lines(stream) {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    events.push((id.clone(), std::mem::take(&mut event), std::mem::take(&mut data)));
                } else {
                    event.clear();
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (name, value) = match line.find(':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (line, ""),
            };
            match name {
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "event" => event = value.to_string(),
                "id" if !value.contains('\0') => id = Some(value.to_string()),
                _ => {}
            }
        }
        events
    }

    fn frame(id: &str, event: Option<&str>, data: &str) -> String {
        let body = encode_body(&Meta::topic("t"), event, data).unwrap();
        String::from_utf8(frame_with_id(id, &body).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn simple_frame_is_byte_exact() {
        // Frames carry `topic:` since issue 12 (invariant 5); the expected bytes changed with it.
        assert_eq!(
            frame("7", Some("job.progress"), "42"),
            "id: 7\ntopic: t\nevent: job.progress\ndata: 42\n\n"
        );
        assert_eq!(frame("1", None, "x"), "id: 1\ntopic: t\ndata: x\n\n");
    }

    #[test]
    fn every_line_break_kind_becomes_its_own_data_line() {
        let f = frame("1", None, "a\r\nb\rc\nd");
        assert_eq!(f, "id: 1\ntopic: t\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(parse(&f), vec![(Some("1".into()), String::new(), "a\nb\nc\nd".into())]);
    }

    #[test]
    fn trailing_and_empty_lines_round_trip() {
        for data in ["", "\n", "a\n", "\r\n\r\n", " leading space", "  two", "colon: inside", "::"] {
            let f = frame("9", Some("e"), data);
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(parse(&f), vec![(Some("9".into()), "e".into(), expected)], "data {data:?}");
        }
    }

    #[test]
    fn empty_data_still_dispatches() {
        assert_eq!(frame("3", None, ""), "id: 3\ntopic: t\ndata: \n\n");
        assert_eq!(parse(&frame("3", None, "")).len(), 1);
    }

    #[test]
    fn numeric_ids_format_like_text_ids() {
        for id in [0, 7, 1_795_313_991_905_920, u64::MAX] {
            assert_eq!(
                frame_with_u64_id(id, b"data: x\n\n"),
                frame_with_id(&id.to_string(), b"data: x\n\n").unwrap()
            );
        }
    }

    #[test]
    fn frames_decode_back_to_event_and_data() {
        let body = encode_body(&Meta::topic("t"), Some("e"), "a\r\nb").unwrap();
        let f = frame_with_id("5", &body).unwrap();
        assert_eq!(decode_frame(&f), (Some("e".into()), "a\nb".into()));
        let f = frame_with_id("5", &encode_body(&Meta::topic("t"), None, "").unwrap()).unwrap();
        assert_eq!(decode_frame(&f), (None, String::new()));
    }

    #[test]
    fn control_chars_in_id_or_event_are_rejected() {
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert!(frame_with_id(bad, b"data: x\n\n").is_err(), "id {bad:?}");
            assert!(encode_body(&Meta::topic("t"), Some(bad), "x").is_err(), "event {bad:?}");
            let meta = Meta { topic: "t", class: Some("latest"), key: Some(bad) };
            assert!(encode_body(&meta, None, "x").is_err(), "key {bad:?}");
            assert!(encode_body(&Meta::topic(bad), None, "x").is_err(), "topic {bad:?}");
        }
        assert_eq!(encode_body(&Meta::topic("t"), Some(""), "x"), Err(EncodeError::EventNameLength));
        let long = "e".repeat(MAX_EVENT_NAME_BYTES + 1);
        assert_eq!(encode_body(&Meta::topic("t"), Some(&long), "x"), Err(EncodeError::EventNameLength));
    }

    #[test]
    fn meta_lines_name_topic_class_and_key_and_parsers_ignore_them() {
        let meta = Meta { topic: "jobs", class: Some("latest"), key: Some(" job 42") };
        let body = encode_body(&meta, Some("p"), "5%").unwrap();
        let f = String::from_utf8(frame_with_id("8", &body).unwrap().to_vec()).unwrap();
        assert_eq!(f, "id: 8\ntopic: jobs\nclass: latest\nkey:  job 42\nevent: p\ndata: 5%\n\n");
        assert_eq!(body.len(), meta.encoded_len() + "event: p\ndata: 5%\n\n".len());
        assert_eq!(parse(&f), vec![(Some("8".into()), "p".into(), "5%".into())]);
        assert_eq!(decode_frame(f.as_bytes()), (Some("p".into()), "5%".into()));
        let meta = Meta { topic: "logs", class: Some("droppable"), key: None };
        let f = frame_with_id("9", &encode_body(&meta, None, "x").unwrap()).unwrap();
        assert_eq!(&f[..], b"id: 9\ntopic: logs\nclass: droppable\ndata: x\n\n");
    }

    #[test]
    fn frames_concatenate_into_a_parsable_stream() {
        let prelude = String::from_utf8(prelude(1500).to_vec()).unwrap();
        let stream = format!("{prelude}{}{}", frame("1", None, "a"), frame("2", Some("b"), "c\nd"));
        let events = parse(&stream);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], (Some("2".into()), "b".into(), "c\nd".into()));
        assert_eq!(&HEARTBEAT[..], b":\n\n");
    }
}
