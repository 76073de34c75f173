//! An event-stream parser written from the WHATWG HTML standard, section 9.2.6 "Interpreting
//! an event stream", to read frames the way a browser's `EventSource` does, independently of
//! the server's own encoder and of its `sse::decode_frame`.
//!
//! Followed step by step:
//! - the stream is decoded as UTF-8 (a leading BOM is dropped, invalid bytes become U+FFFD);
//! - lines end at CRLF, LF or CR; a last line without its line end is never processed;
//! - an empty line dispatches; a line starting with `:` is a comment;
//! - a field name ends at the first `:`, and one U+0020 after it is removed from the value;
//!   a line without `:` is a field name with an empty value;
//! - `event` sets the event type buffer; `data` appends the value and a LF to the data buffer;
//!   `id` sets the last event ID buffer unless the value contains U+0000; `retry` with only
//!   ASCII digits sets the reconnection time; any other field is ignored;
//! - dispatch: the source's last event ID becomes the buffer's; with an empty data buffer the
//!   data and type buffers are cleared and nothing is dispatched; otherwise one trailing LF is
//!   removed from the data, the type defaults to `message`, and both buffers are cleared (the
//!   last event ID buffer is not).

/// One dispatched `MessageEvent`, as a script sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event.type`: the `event` field, or `message`.
    pub event_type: String,
    /// `event.data`: the `data` lines joined with LF.
    pub data: String,
    /// `event.lastEventId` at dispatch.
    pub last_event_id: String,
}

/// What a stream did to its `EventSource`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Dispatched events, in order.
    pub events: Vec<Event>,
    /// The source's last event ID string after the stream (what a reconnect would send).
    pub last_event_id: String,
    /// The reconnection time the stream set, in ms, if any.
    pub retry_ms: Option<u64>,
}

/// Parses a whole stream.
pub fn parse(stream: &[u8]) -> Parsed {
    let stream = stream.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(stream);
    let text = String::from_utf8_lossy(stream);
    let mut out = Parsed::default();
    let mut event_type = String::new();
    let mut data = String::new();
    let mut id_buffer = String::new();
    for line in complete_lines(&text) {
        if line.is_empty() {
            out.last_event_id = id_buffer.clone();
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            let event_type =
                if event_type.is_empty() { "message".to_string() } else { std::mem::take(&mut event_type) };
            out.events.push(Event {
                event_type,
                data: std::mem::take(&mut data),
                last_event_id: out.last_event_id.clone(),
            });
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event_type = value.to_string(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id_buffer = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // The standard sets the time to the integer; saturate what a u64 cannot hold.
                out.retry_ms = Some(value.parse().unwrap_or(u64::MAX));
            }
            _ => {}
        }
    }
    out
}

/// The lines of `text` that are followed by a line end (CRLF, LF or CR), without it.
fn complete_lines(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut lines = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
            }
            _ => i += 1,
        }
    }
    lines
}

/// What a data value becomes after the trip: every line end (CRLF, CR, LF) reads as LF.
pub fn normalize_line_ends(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event_type: &str, data: &str, id: &str) -> Event {
        Event { event_type: event_type.into(), data: data.into(), last_event_id: id.into() }
    }

    #[test]
    fn the_standards_examples() {
        // "data: YHOO\ndata: +2\ndata: 10\n\n" is one message "YHOO\n+2\n10".
        assert_eq!(
            parse(b"data: YHOO\ndata: +2\ndata: 10\n\n").events,
            vec![ev("message", "YHOO\n+2\n10", "")]
        );
        // The four-block example: a comment fires nothing; "first event" carries id 1; a bare
        // `id` line resets the id to ""; one leading space is stripped, the second is data.
        let s =
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
        assert_eq!(
            parse(s).events,
            vec![
                ev("message", "first event", "1"),
                ev("message", "second event", ""),
                ev("message", " third event", "")
            ]
        );
        // "data\n\ndata\ndata\n\ndata:" dispatches "" and "\n"; the last line is incomplete.
        assert_eq!(
            parse(b"data\n\ndata\ndata\n\ndata:").events,
            vec![ev("message", "", ""), ev("message", "\n", "")]
        );
        // The space after the colon is optional: both blocks are "test".
        assert_eq!(parse(b"data:test\n\ndata: test\n\n").events, vec![ev("message", "test", ""); 2]);
    }

    #[test]
    fn line_ends_ids_retry_and_bom() {
        let p = parse(b"\xEF\xBB\xBFretry: 1500\rid: 7\r\nevent: e\rdata: a\r\rid: x\0y\ndata: b\n\n");
        assert_eq!(p.retry_ms, Some(1500));
        assert_eq!(p.events, vec![ev("e", "a", "7"), ev("message", "b", "7")]);
        assert_eq!(p.last_event_id, "7");
        assert_eq!(parse(b"id: 3\n\n").last_event_id, "3", "an empty block still sets the id");
        assert_eq!(parse(b"retry: 1x\n\n").retry_ms, None);
        assert_eq!(parse(b"data: a\n").events, vec![], "no blank line, no dispatch");
        assert_eq!(parse(b"data: a\r\r").events, vec![ev("message", "a", "")]);
    }
}
