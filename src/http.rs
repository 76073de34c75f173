//! Sans-IO HTTP/1.1 request parsing and response heads.
//!
//! [`parse`] takes the bytes received so far and answers with what the caller does next:
//! wait for more bytes, wait for the body (with the parsed head, so the caller can refuse on
//! it, and sending `100 Continue` first if asked), handle a complete request and drop
//! `consumed` bytes, or reject with a status. No socket here.
//!
//! Invariants:
//! 1. A request head is never buffered past `max_head` bytes: beyond it the answer is 414 (the
//!    request line itself is too long) or 431 (the headers are).
//! 2. A body is accepted only with a valid `Content-Length` no larger than `max_body`;
//!    `Transfer-Encoding` bodies get 411, conflicting lengths 400.
//! 3. Keep-alive follows RFC 9112 §9.3 over every `Connection` line: `close` always wins.
//! 4. Every rejection maps to exactly one status in [`Reject::status`]. A rejection from
//!    [`parse`] leaves the byte stream unsynchronised, so the caller closes after answering;
//!    a rejection of a complete request (bad parameter, unknown path) keeps the connection.

use bytes::Bytes;

/// Most headers one request may carry (more gets 431).
pub const MAX_HEADERS: usize = 64;
/// Longest request target (path and query) accepted; longer gets 414.
pub const MAX_TARGET_BYTES: usize = 4096;

/// Size limits applied while parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request line plus headers.
    pub max_head: usize,
    /// Longest body.
    pub max_body: usize,
}

/// Why a request is refused. Mapped to a status in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// 400: malformed request or invalid parameter; the text says which.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 404: no such path.
    #[error("not found")]
    NotFound,
    /// 405: the path exists, the method does not; carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// 406: the client does not accept `text/event-stream`.
    #[error("not acceptable: this endpoint only produces text/event-stream")]
    NotAcceptable,
    /// 411: a body without a `Content-Length`.
    #[error("length required: send the body with Content-Length")]
    LengthRequired,
    /// 413: body (or one encoded event) too large.
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// 414: request target too long.
    #[error("request target too long")]
    UriTooLong,
    /// 431: headers too large or too many.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// 505: not HTTP/1.x.
    #[error("HTTP version not supported")]
    VersionNotSupported,
}

impl Reject {
    /// The HTTP status of this rejection.
    pub fn status(&self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::NotFound => 404,
            Reject::MethodNotAllowed(_) => 405,
            Reject::NotAcceptable => 406,
            Reject::LengthRequired => 411,
            Reject::PayloadTooLarge(_) => 413,
            Reject::UriTooLong => 414,
            Reject::HeadersTooLarge => 431,
            Reject::VersionNotSupported => 505,
        }
    }

    /// The full response for this rejection.
    pub fn response(&self, keep_alive: bool) -> Bytes {
        let body = format!("{{\"error\":{}}}\n", serde_json::Value::String(self.to_string()));
        let extra = match self {
            Reject::MethodNotAllowed(allow) => format!("Allow: {allow}\r\n"),
            _ => String::new(),
        };
        response(self.status(), &extra, "application/json", body.as_bytes(), keep_alive)
    }
}

/// One parsed request. Header names are lower-cased.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, as sent (`GET`, `POST`, ...).
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string (after `?`), not decoded.
    pub query: String,
    /// Headers, names lower-cased, values as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body (empty without `Content-Length`).
    pub body: Bytes,
    /// Whether the connection may serve another request after this one.
    pub keep_alive: bool,
}

impl Request {
    /// First value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Decoded query parameters in order.
    pub fn query_pairs(&self) -> Result<Vec<(String, String)>, Reject> {
        query_pairs(&self.query)
    }
}

/// What the caller does with the buffer next.
#[derive(Debug)]
pub enum Parse {
    /// The head is incomplete: read more.
    Partial,
    /// The head is complete and valid; `total` bytes (head + body) are needed. Send
    /// `100 Continue` first when `expect_continue` is set and it was not yet sent; `head`
    /// (with an empty body) lets the caller refuse on the head before reading the body.
    NeedBody {
        /// The request without its body.
        head: Box<Request>,
        /// Bytes the whole request occupies.
        total: usize,
        /// The client waits for `100 Continue` before sending the body.
        expect_continue: bool,
    },
    /// A complete request; drop `consumed` bytes from the buffer.
    Complete(Box<Request>, usize),
    /// Refuse with this rejection.
    Reject(Reject),
}

/// Parses the start of `buf` as one HTTP/1.x request.
pub fn parse(buf: &[u8], limits: Limits) -> Parse {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head {
                return Parse::Reject(oversized_head(buf, limits.max_head));
            }
            return Parse::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => return Parse::Reject(Reject::HeadersTooLarge),
        Err(httparse::Error::Version) => return Parse::Reject(version_error(buf)),
        Err(e) => return Parse::Reject(Reject::BadRequest(e.to_string())),
    };
    let target = req.path.unwrap_or("/");
    if target.len() > MAX_TARGET_BYTES {
        return Parse::Reject(Reject::UriTooLong);
    }
    if head_len > limits.max_head {
        return Parse::Reject(oversized_head(buf, limits.max_head));
    }
    let version = req.version.unwrap_or(1);
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Parse::Reject(Reject::BadRequest(format!("header {} is not UTF-8", h.name)));
        };
        headers.push((h.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let method = req.method.unwrap_or("GET").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let mut request = Request { method, path, query, headers, body: Bytes::new(), keep_alive: true };
    request.keep_alive = keep_alive(&request, version);
    let body_len = match body_length(&request) {
        Ok(n) => n,
        Err(r) => return Parse::Reject(r),
    };
    if body_len > limits.max_body {
        return Parse::Reject(Reject::PayloadTooLarge(format!(
            "body of {body_len} bytes exceeds {} (--max-body-bytes)",
            limits.max_body
        )));
    }
    let total = head_len + body_len;
    if buf.len() < total {
        let expect_continue =
            request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        return Parse::NeedBody { head: Box::new(request), total, expect_continue };
    }
    request.body = Bytes::copy_from_slice(&buf[head_len..total]);
    Parse::Complete(Box::new(request), total)
}

/// httparse reports any unparsable third token as a version error; only a well-formed
/// three-token line naming another HTTP version is a 505, anything else is malformed.
fn version_error(buf: &[u8]) -> Reject {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    let line = String::from_utf8_lossy(line);
    let tokens: Vec<&str> = line.trim_end_matches('\r').split(' ').collect();
    match tokens.as_slice() {
        [_, _, version] if version.starts_with("HTTP/") => Reject::VersionNotSupported,
        _ => Reject::BadRequest("malformed request line".into()),
    }
}

fn oversized_head(buf: &[u8], max_head: usize) -> Reject {
    let window = &buf[..buf.len().min(max_head)];
    if window.contains(&b'\n') {
        Reject::HeadersTooLarge
    } else {
        Reject::UriTooLong
    }
}

/// RFC 9112 §9.3: the options of every `Connection` line count, `close` always ends the
/// connection, and HTTP/1.0 persists only when it asks for `keep-alive`.
fn keep_alive(req: &Request, version: u8) -> bool {
    let has = |option: &str| {
        req.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|o| o.trim().eq_ignore_ascii_case(option))
    };
    !has("close") && (version != 0 || has("keep-alive"))
}

fn body_length(req: &Request) -> Result<usize, Reject> {
    if req.header("transfer-encoding").is_some() {
        return Err(Reject::LengthRequired);
    }
    let mut length: Option<usize> = None;
    for (_, v) in req.headers.iter().filter(|(n, _)| n == "content-length") {
        // `1*DIGIT`: Rust's integer parser would also take a sign.
        let n: usize = Some(v)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Reject::BadRequest(format!("invalid Content-Length {v:?}")))?;
        if length.is_some_and(|l| l != n) {
            return Err(Reject::BadRequest("conflicting Content-Length headers".into()));
        }
        length = Some(n);
    }
    match length {
        Some(n) => Ok(n),
        None if matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") => Err(Reject::LengthRequired),
        None => Ok(0),
    }
}

/// Decodes an `application/x-www-form-urlencoded` query into pairs.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, Reject> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, Reject> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| Reject::BadRequest(format!("bad percent-encoding in {s:?}")))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Reject::BadRequest(format!("query value {s:?} is not UTF-8")))
}

/// Reason phrase of the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The interim response a client waiting on `Expect: 100-continue` needs.
pub static CONTINUE: Bytes = Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n");

/// A complete response with a `Content-Length` body. `extra` is zero or more full
/// `Name: value\r\n` lines.
pub fn response(status: u16, extra: &str, content_type: &str, body: &[u8], keep_alive: bool) -> Bytes {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n{extra}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// The response to a `HEAD` request: `full` without its content (RFC 9112 §6.3), headers
/// (and so `Content-Length`) unchanged.
pub fn head_only(full: Bytes) -> Bytes {
    match full.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => full.slice(..end + 4),
        None => full,
    }
}

const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: keep-alive\r\n\r\n";

/// `response` with its `Connection: keep-alive` header turned into `Connection: close` (an
/// answer built before the server decided to close, e.g. when a drain began).
pub fn force_close(response: Bytes) -> Bytes {
    // The head ends at the first blank line; its last header line ends with that "\r\n".
    let head = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |end| end + 2);
    let needle = b"\r\nConnection: keep-alive\r\n";
    match response[..head].windows(needle.len()).position(|w| w == needle) {
        Some(at) => {
            let mut out = Vec::with_capacity(response.len());
            out.extend_from_slice(&response[..at]);
            out.extend_from_slice(b"\r\nConnection: close\r\n");
            out.extend_from_slice(&response[at + needle.len()..]);
            Bytes::from(out)
        }
        None => response,
    }
}

/// The head of an event stream: no length, the body ends when the connection does.
pub fn stream_head() -> Bytes {
    Bytes::from_static(STREAM_HEAD)
}

/// `response` with `extra` (full `Name: value\r\n` lines) added to its head.
pub fn with_headers(response: Bytes, extra: &str) -> Bytes {
    match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) if !extra.is_empty() => {
            let mut out = Vec::with_capacity(response.len() + extra.len());
            out.extend_from_slice(&response[..end + 2]);
            out.extend_from_slice(extra.as_bytes());
            out.extend_from_slice(&response[end + 2..]);
            Bytes::from(out)
        }
        _ => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { max_head: 1024, max_body: 64 };

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse(buf, L) {
            Parse::Complete(r, n) => (*r, n),
            other => panic!("expected complete, got {other:?}"),
        }
    }

    fn rejected(buf: &[u8]) -> u16 {
        match parse(buf, L) {
            Parse::Reject(r) => r.status(),
            other => panic!("expected reject, got {other:?}"),
        }
    }

    #[test]
    fn request_split_at_every_byte_parses_the_same() {
        let raw = b"POST /publish?topic=a&event=e%20x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..raw.len() {
            match parse(&raw[..cut], L) {
                Parse::Partial | Parse::NeedBody { .. } => {}
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        let (req, n) = complete(raw);
        assert_eq!(n, raw.len());
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/publish");
        assert_eq!(&req.body[..], b"hello");
        assert_eq!(req.query_pairs().unwrap()[1], ("event".into(), "e x".into()));
        assert!(req.keep_alive);
    }

    #[test]
    fn pipelined_requests_consume_one_at_a_time() {
        let raw = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
        let (a, n) = complete(raw);
        assert_eq!(a.path, "/a");
        let (b, m) = complete(&raw[n..]);
        assert_eq!(b.path, "/b");
        assert!(!b.keep_alive);
        assert_eq!(n + m, raw.len());
    }

    #[test]
    fn statuses_for_bad_input() {
        assert_eq!(rejected(b"GARBAGE\0\r\n\r\n"), 400);
        assert_eq!(rejected(b"POST /publish HTTP/1.1\r\n\r\n"), 411);
        assert_eq!(rejected(b"POST /publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 411);
        assert_eq!(rejected(b"POST /p HTTP/1.1\r\nContent-Length: 65\r\n\r\n"), 413);
        assert_eq!(rejected(b"POST /p HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(rejected(b"POST /p HTTP/1.1\r\nContent-Length: +1\r\n\r\nx"), 400);
        assert_eq!(rejected(b"GET /a b HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(rejected(b"GET /a HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(rejected(b"POST /p HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 400);
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(rejected(long_target.as_bytes()), 414);
        let no_line_end = vec![b'a'; 2000];
        assert_eq!(rejected(&no_line_end), 414);
        let big_headers = format!("GET / HTTP/1.1\r\nX: {}\r\n", "v".repeat(2000));
        assert_eq!(rejected(big_headers.as_bytes()), 431);
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(rejected(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()), 431);
    }

    #[test]
    fn expect_continue_is_reported_before_the_body() {
        let head = b"POST /publish HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
        match parse(head, L) {
            Parse::NeedBody { head: req, total, expect_continue } => {
                assert_eq!(total, head.len() + 3);
                assert!(expect_continue);
                assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/publish"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn http10_closes_unless_asked() {
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").0.keep_alive);
    }

    #[test]
    fn every_connection_line_counts_and_close_wins() {
        // Found by the http_request fuzz target; RFC 9112 §9.3.
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n").0.keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").0.keep_alive);
        assert!(!complete(b"GET / HTTP/1.0\r\nConnection: Close,Keep-Alive\r\n\r\n").0.keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: x\r\nConnection: keep-alive\r\n\r\n").0.keep_alive);
        assert!(complete(b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n").0.keep_alive);
    }

    #[test]
    fn query_decoding_rejects_bad_escapes() {
        assert!(query_pairs("a=%zz").is_err());
        assert!(query_pairs("a=%ff").is_err());
        assert!(query_pairs("a=%+9").is_err());
        assert_eq!(query_pairs("a=1&&b").unwrap(), vec![("a".into(), "1".into()), ("b".into(), "".into())]);
    }

    #[test]
    fn force_close_rewrites_the_connection_header() {
        let r = force_close(response(202, "", "application/json", b"{}", true));
        let text = String::from_utf8(r.to_vec()).unwrap();
        assert!(text.contains("\r\nConnection: close\r\n\r\n{}"), "{text:?}");
        let closed = response(400, "", "text/plain", b"x", false);
        assert_eq!(force_close(closed.clone()), closed);
    }

    #[test]
    fn extra_headers_go_into_the_head() {
        let r = with_headers(response(200, "", "text/plain", b"x", true), "A: 1\r\n");
        let text = String::from_utf8(r.to_vec()).unwrap();
        assert!(text.ends_with("Connection: keep-alive\r\nA: 1\r\n\r\nx"), "{text:?}");
    }

    #[test]
    fn reject_response_is_json_with_status() {
        let r = Reject::MethodNotAllowed("GET").response(true);
        let text = String::from_utf8(r.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Allow: GET\r\n"));
        assert!(text.contains("Connection: keep-alive"));
        assert!(String::from_utf8(Reject::LengthRequired.response(false).to_vec())
            .unwrap()
            .contains("Connection: close"));
    }
}
