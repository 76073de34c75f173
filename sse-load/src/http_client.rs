//! Sans-IO HTTP/1.1 client pieces: the two requests this tool sends and response heads.
//!
//! Contract: request builders append complete requests to a buffer; [`parse_head`] reads one
//! response head from the start of a buffer and says whether it is complete, how long it is and
//! what the caller needs from it (status, body length or chunked framing, whether the connection
//! closes after it).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;

/// Largest response head accepted (a server sending more is broken or hostile).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most response headers parsed.
const MAX_HEADERS: usize = 32;

/// The subscribe request for `topics`.
pub fn subscribe_request(addr: SocketAddr, topics: &[String]) -> Vec<u8> {
    let mut target = String::from("/events");
    for (i, t) in topics.iter().enumerate() {
        let _ = write!(target, "{}topic={}", if i == 0 { '?' } else { '&' }, t);
    }
    format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\
User-Agent: sse-load\r\n\r\n"
    )
    .into_bytes()
}

/// Appends a publish request whose body is `body` to `out`.
pub fn publish_request(out: &mut Vec<u8>, addr: SocketAddr, topic: &str, event: Option<&str>, body: &[u8]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "POST /publish?topic={topic}");
    if let Some(e) = event {
        let _ = write!(out, "&event={e}");
    }
    let _ = write!(
        out,
        " HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

/// What a complete response head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Bytes the head took, including the blank line.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// The server will close the connection after this response.
    pub close: bool,
    /// `Content-Type` is `text/event-stream`.
    pub event_stream: bool,
    /// The body is chunked: `chunked` is the last coding of `Transfer-Encoding`.
    pub chunked: bool,
}

/// Result of looking for a head at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadParse {
    /// More bytes are needed.
    Partial,
    /// A whole head.
    Complete(Head),
    /// Not a valid HTTP/1.x response head.
    Invalid(&'static str),
}

/// Parses a response head at the start of `buf`.
pub fn parse_head(buf: &[u8]) -> HeadParse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            HeadParse::Invalid("response head too large")
        }
        Ok(httparse::Status::Partial) => HeadParse::Partial,
        Err(httparse::Error::TooManyHeaders) => HeadParse::Invalid("too many response headers"),
        Err(_) => HeadParse::Invalid("malformed response head"),
        Ok(httparse::Status::Complete(len)) => {
            let mut head = Head {
                len,
                status: resp.code.unwrap_or(0),
                content_length: None,
                close: resp.version == Some(0),
                event_stream: false,
                chunked: false,
            };
            for h in resp.headers.iter() {
                let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                if h.name.eq_ignore_ascii_case("content-length") {
                    match value.parse() {
                        Ok(n) => head.content_length = Some(n),
                        Err(_) => return HeadParse::Invalid("bad content-length"),
                    }
                } else if h.name.eq_ignore_ascii_case("connection") {
                    head.close = value.eq_ignore_ascii_case("close");
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    // Several headers form one list: the last header's last coding is the last.
                    let last = value.rsplit(',').map(str::trim).find(|c| !c.is_empty());
                    head.chunked = last.is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
                } else if h.name.eq_ignore_ascii_case("content-type") {
                    head.event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
                }
            }
            HeadParse::Complete(head)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:8080".parse().expect("addr")
    }

    #[test]
    fn requests() {
        let s = subscribe_request(addr(), &["a".into(), "b".into()]);
        assert!(s.starts_with(b"GET /events?topic=a&topic=b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        let mut p = Vec::new();
        publish_request(&mut p, addr(), "t", Some("e"), b"hello");
        assert!(p.starts_with(b"POST /publish?topic=t&event=e HTTP/1.1\r\n"));
        assert!(p.ends_with(b"Content-Length: 5\r\n\r\nhello"));
    }

    #[test]
    fn heads_split_anywhere() {
        let resp =
            b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"id\":1}";
        let head_len = resp.len() - 8;
        for cut in 0..head_len {
            assert_eq!(parse_head(&resp[..cut]), HeadParse::Partial, "cut {cut}");
        }
        let want = Head {
            len: head_len,
            status: 202,
            content_length: Some(8),
            close: false,
            event_stream: false,
            chunked: false,
        };
        assert_eq!(parse_head(resp), HeadParse::Complete(want));
    }

    #[test]
    fn stream_head_and_close() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nretry: 1\n";
        match parse_head(h) {
            HeadParse::Complete(h) => assert!(h.event_stream && h.close && h.status == 200),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_head(b"HTTP/1.1 abc\r\n\r\n"), HeadParse::Invalid(_)));
        assert!(matches!(parse_head(&[b'x'; MAX_HEAD + 1]), HeadParse::Invalid(_)));
    }

    #[test]
    fn chunked_only_when_last_coding() {
        let chunked = |te: &str| {
            let h = format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{te}\r\n");
            match parse_head(h.as_bytes()) {
                HeadParse::Complete(h) => h.chunked,
                other => panic!("{other:?}"),
            }
        };
        assert!(chunked("Transfer-Encoding: chunked\r\n"));
        assert!(chunked("transfer-encoding: CHUNKED\r\n"));
        assert!(chunked("Transfer-Encoding: gzip, chunked \r\n"));
        assert!(chunked("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"));
        assert!(!chunked("Transfer-Encoding: chunked, gzip\r\n"));
        assert!(!chunked("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"));
        assert!(!chunked("Content-Length: 10\r\n"));
        assert!(!chunked(""));
    }
}
