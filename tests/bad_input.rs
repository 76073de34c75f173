//! Bad input over real sockets: every refusal has the documented status, a JSON error body and
//! the documented connection fate (closed after unsynchronising input, kept alive after a
//! complete but refused request), and the node keeps serving everyone else afterwards.

mod util;

use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::sync::Barrier;

use sse_edge::Config;
use util::*;

/// The topic of the subscriber that watches every test; bad requests that could publish aim
/// at it, so anything wrongly published shows up before the next liveness frame.
const WATCH: &str = "watch";
/// `max_body_bytes` in these tests.
const MAX_BODY: usize = 8192;
/// `outbox_max_bytes` in these tests: the largest event frame accepted.
const MAX_FRAME: usize = 4096;
/// Default `max_request_bytes`.
const MAX_HEAD: usize = 8192;

fn config() -> Config {
    Config { threads: Some(2), max_body_bytes: MAX_BODY, outbox_max_bytes: MAX_FRAME, ..Config::loopback() }
}

/// A server plus a subscriber connected before any bad request is sent.
struct Node {
    server: TestServer,
    sub: SseClient,
    round: usize,
}

impl Node {
    fn start() -> Node {
        let server = TestServer::start(config());
        let sub = SseClient::connect(server.addr, &format!("/events?topic={WATCH}"));
        Node { server, sub, round: 0 }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// A fresh publisher gets 202, and the subscriber connected before the bad input receives
    /// exactly that event as its next frame (so nothing else was published in between).
    fn assert_still_serves(&mut self, after: &str) {
        self.round += 1;
        let data = format!("alive-{}", self.round);
        let r = Client::connect(self.addr()).publish(
            &format!("topic={WATCH}"),
            Some("text/plain"),
            data.as_bytes(),
        );
        assert_eq!(r.status, 202, "publish after {after}: {}", r.text());
        let id = r.json()["id"].as_u64().expect("id");
        let frame = self.sub.next_raw_frame().unwrap_or_else(|e| panic!("subscriber after {after}: {e}"));
        assert_eq!(
            frame,
            format!("id: {id}\ntopic: {WATCH}\ndata: {data}\n\n"),
            "subscriber's next frame after {after}"
        );
    }

    /// Runs every case with `status`, each followed by the liveness check.
    fn run_family(&mut self, status: u16) -> usize {
        let family: Vec<Case> = cases().into_iter().filter(|c| c.status == status).collect();
        assert!(!family.is_empty());
        for c in &family {
            run_case(self.addr(), c);
            self.assert_still_serves(&c.what);
        }
        family.len()
    }
}

/// One bad request and what must come back.
#[derive(Debug, Clone)]
struct Case {
    what: String,
    raw: Vec<u8>,
    status: u16,
    /// `Connection: close` and EOF; otherwise keep-alive and a second request is served.
    closes: bool,
    allow: Option<&'static str>,
    mentions: Option<&'static str>,
}

fn case(what: &str, raw: impl Into<Vec<u8>>, status: u16, closes: bool) -> Case {
    Case { what: what.to_string(), raw: raw.into(), status, closes, allow: None, mentions: None }
}

impl Case {
    fn allow(mut self, allow: &'static str) -> Case {
        self.allow = Some(allow);
        self
    }
    fn mentions(mut self, text: &'static str) -> Case {
        self.mentions = Some(text);
        self
    }
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

fn req(method: &str, target: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let ct = content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
    let mut raw =
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\n{ct}Content-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn post(target: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    req("POST", target, content_type, body)
}

fn json(body: &str) -> Vec<u8> {
    post("/publish", Some("application/json"), body.as_bytes())
}

fn ndjson(body: &str) -> Vec<u8> {
    post("/publish", Some("application/x-ndjson"), body.as_bytes())
}

/// A request whose head is exactly `len` bytes (padded with one header).
fn head_of_len(len: usize) -> Vec<u8> {
    let base = "GET /nope HTTP/1.1\r\nHost: test\r\nX-Pad: \r\n\r\n".len();
    format!("GET /nope HTTP/1.1\r\nHost: test\r\nX-Pad: {}\r\n\r\n", "p".repeat(len - base)).into_bytes()
}

/// A request with `n` header lines in all (`Host` included).
fn with_headers(n: usize) -> Vec<u8> {
    let extra: String = (1..n).map(|i| format!("X-H{i}: v\r\n")).collect();
    format!("GET /nope HTTP/1.1\r\nHost: test\r\n{extra}\r\n").into_bytes()
}

/// Every bad request the node must refuse, with its status and connection fate.
fn cases() -> Vec<Case> {
    // 400 from the parser: the byte stream is unsynchronised, so the connection closes.
    let malformed: &[(&str, &[u8])] = &[
        ("garbage with NUL", b"GARBAGE\0\r\n\r\n"),
        ("request line without target", b"GET\r\n\r\n"),
        ("request line without version", b"GET /events?topic=watch\r\n\r\n"),
        ("double space in request line", b"GET  /events?topic=watch HTTP/1.1\r\n\r\n"),
        ("trailing token after version", b"GET / HTTP/1.1 extra\r\n\r\n"),
        ("DEL byte in target", b"GET /events?topic=\x7f HTTP/1.1\r\n\r\n"),
        ("TLS ClientHello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"),
        ("header name with a space", b"GET /nope HTTP/1.1\r\nBad Header: x\r\n\r\n"),
        ("empty header name", b"GET /nope HTTP/1.1\r\n: x\r\n\r\n"),
        ("non-UTF-8 header value", b"GET /nope HTTP/1.1\r\nX-Bin: \xff\xfe\r\n\r\n"),
        (
            "non-numeric Content-Length",
            b"POST /publish?topic=watch HTTP/1.1\r\nContent-Length: abc\r\n\r\nabc",
        ),
        ("negative Content-Length", b"POST /publish?topic=watch HTTP/1.1\r\nContent-Length: -1\r\n\r\nx"),
        (
            "Content-Length overflowing u64",
            b"POST /publish?topic=watch HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ),
        (
            "conflicting Content-Length headers",
            b"POST /publish?topic=watch HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
        ),
    ];
    let mut v: Vec<Case> = malformed.iter().map(|&(what, raw)| case(what, raw, 400, true)).collect();

    // 400 from parameters of a complete request: the connection stays usable.
    let bad_topics = [
        ("space", "topic=a%20b"),
        ("plus as space", "topic=a+b"),
        ("empty", "topic="),
        ("bare key", "topic"),
        ("slash", "topic=a/b"),
        ("encoded slash", "topic=a%2Fb"),
        ("non-ASCII", "topic=%C3%A4"),
        ("129 bytes", &format!("topic={}", "t".repeat(129))),
        ("one good one bad", "topic=watch&topic=bad%21"),
    ];
    for (what, query) in bad_topics {
        v.push(case(&format!("subscribe, topic {what}"), get(&format!("/events?{query}")), 400, false));
        v.push(case(
            &format!("publish, topic {what}"),
            post(&format!("/publish?{query}"), Some("text/plain"), b"x"),
            400,
            false,
        ));
    }
    let too_many: String = (0..65).map(|i| format!("topic=t{i}&")).collect();
    v.push(case("65 topics (max 64)", get(&format!("/events?{too_many}")), 400, false));
    v.push(case("subscribe without query", get("/events"), 400, false));
    v.push(case("subscribe without topic", get("/events?foo=bar&Topic=watch"), 400, false));
    v.push(case("raw publish without topic", post("/publish", Some("text/plain"), b"x"), 400, false));
    v.push(case("raw publish, event only", post("/publish?event=e", None, b"x"), 400, false));
    let bad_escapes = [
        ("%zz", "topic=%zz"),
        ("trailing %", "topic=a%"),
        ("one hex digit", "topic=a%4"),
        ("%ff is not UTF-8", "topic=%ff"),
        ("truncated UTF-8", "topic=%C3"),
        ("in a key", "%zz=1&topic=watch"),
        ("in an ignored parameter", "topic=watch&x=%g0"),
    ];
    for (what, query) in bad_escapes {
        v.push(case(&format!("subscribe, {what}"), get(&format!("/events?{query}")), 400, false));
        v.push(case(
            &format!("publish, {what}"),
            post(&format!("/publish?{query}"), Some("text/plain"), b"x"),
            400,
            false,
        ));
    }
    v.push(case(
        "publish, event %G1",
        post("/publish?topic=watch&event=%G1", Some("text/plain"), b"x"),
        400,
        false,
    ));
    let bad_envelopes = [
        ("truncated JSON", r#"{"topic":"watch","data":"#),
        ("not JSON", "not json"),
        ("JSON array", r#"[{"topic":"watch","data":"x"}]"#),
        ("JSON string", r#""watch""#),
        ("no data", r#"{"topic":"watch"}"#),
        ("no topic anywhere", r#"{"data":"x"}"#),
        ("numeric topic", r#"{"topic":5,"data":"x"}"#),
        ("numeric event", r#"{"topic":"watch","event":7,"data":"x"}"#),
        ("event with LF", r#"{"topic":"watch","event":"a\nb","data":"x"}"#),
        ("event with CR", r#"{"topic":"watch","event":"a\rb","data":"x"}"#),
        ("event with CRLF", r#"{"topic":"watch","event":"a\r\nb","data":"x"}"#),
        ("event with NUL", r#"{"topic":"watch","event":"a\u0000b","data":"x"}"#),
        ("empty event", r#"{"topic":"watch","event":"","data":"x"}"#),
        ("invalid topic", r#"{"topic":"a b","data":"x"}"#),
        ("empty topic", r#"{"topic":"","data":"x"}"#),
        ("two envelopes", r#"{"topic":"watch","data":"1"}{"topic":"watch","data":"2"}"#),
    ];
    for (what, body) in bad_envelopes {
        v.push(case(&format!("JSON envelope, {what}"), json(body), 400, false));
    }
    let long_event = format!(r#"{{"topic":"watch","event":"{}","data":"x"}}"#, "e".repeat(129));
    v.push(case("JSON envelope, 129-byte event", json(&long_event), 400, false));
    v.push(case(
        "JSON envelope, non-UTF-8 body",
        post("/publish", Some("application/json"), b"{\"topic\":\"watch\",\"data\":\"\xff\"}"),
        400,
        false,
    ));
    v.push(case(
        "raw publish, non-UTF-8 body",
        post("/publish?topic=watch", Some("text/plain"), b"ok\xff\xfe"),
        400,
        false,
    ));
    v.push(case(
        "raw publish, event with LF",
        post("/publish?topic=watch&event=a%0Ab", Some("text/plain"), b"x"),
        400,
        false,
    ));
    v.push(case(
        "raw publish, event with CR",
        post("/publish?topic=watch&event=a%0Db", Some("text/plain"), b"x"),
        400,
        false,
    ));
    v.push(case("raw publish, empty event", post("/publish?topic=watch&event=", None, b"x"), 400, false));
    v.push(
        case(
            "NDJSON, bad line 2 of 3",
            ndjson("{\"topic\":\"watch\",\"data\":\"1\"}\n{oops\n{\"topic\":\"watch\",\"data\":\"3\"}\n"),
            400,
            false,
        )
        .mentions("line 2"),
    );
    v.push(
        case(
            "NDJSON, envelope without data after a blank line",
            ndjson("{\"topic\":\"watch\",\"data\":\"1\"}\n\n{\"topic\":\"watch\"}\n"),
            400,
            false,
        )
        .mentions("line 3"),
    );
    v.push(case(
        "NDJSON, invalid topic on the last line",
        ndjson("{\"topic\":\"watch\",\"data\":\"1\"}\n{\"topic\":\"no/slash\",\"data\":\"2\"}"),
        400,
        false,
    ));
    v.push(case("NDJSON, only blank lines", ndjson("\n \r\n\n"), 400, false));
    v.push(case(
        "NDJSON, non-UTF-8",
        post("/publish", Some("application/x-ndjson"), b"{\"topic\":\"watch\",\"data\":\"\xc3\"}\n"),
        400,
        false,
    ));

    // 404: the connection stays usable.
    for target in ["/nope", "/events/", "/eventsx?topic=watch", "/EVENTS?topic=watch", "/publish/x"] {
        v.push(case(&format!("GET {target}"), get(target), 404, false));
    }
    v.push(case("POST /nope with a body", post("/nope?topic=watch", Some("text/plain"), b"x"), 404, false));
    v.push(case(
        "leading blank lines, then GET /nope",
        &b"\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"[..],
        404,
        false,
    ));

    // 405 with Allow: the connection stays usable.
    v.push(case("POST /events", post("/events?topic=watch", None, b""), 405, false).allow("GET"));
    v.push(
        case("POST /events with a body", post("/events?topic=watch", None, b"x"), 405, false).allow("GET"),
    );
    v.push(case("PUT /events", req("PUT", "/events?topic=watch", None, b""), 405, false).allow("GET"));
    v.push(
        case("DELETE /events", get("/events?topic=watch").replacen_method("DELETE"), 405, false).allow("GET"),
    );
    v.push(case("GET /publish", get("/publish?topic=watch"), 405, false).allow("POST"));
    v.push(case("PUT /publish", req("PUT", "/publish?topic=watch", None, b"x"), 405, false).allow("POST"));
    v.push(case("DELETE /publish", get("/publish").replacen_method("DELETE"), 405, false).allow("POST"));
    v.push(
        case("lower-case get /events", get("/events?topic=watch").replacen_method("get"), 405, false)
            .allow("GET"),
    );

    // 406: an event stream for a client that refuses event streams; keep-alive.
    for accept in ["application/json", "text/html", "application/json, text/plain;q=0.5"] {
        let raw = format!("GET /events?topic=watch HTTP/1.1\r\nHost: test\r\nAccept: {accept}\r\n\r\n");
        v.push(case(&format!("Accept: {accept}"), raw, 406, false));
    }

    // 411: a body without Content-Length cannot be delimited; the connection closes.
    v.push(case(
        "POST without Content-Length",
        &b"POST /publish?topic=watch HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        411,
        true,
    ));
    v.push(case(
        "chunked POST",
        &b"POST /publish?topic=watch HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        411,
        true,
    ));
    v.push(case(
        "chunked POST that also has Content-Length",
        &b"POST /publish?topic=watch HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello"[..],
        411,
        true,
    ));
    v.push(case(
        "POST /events without Content-Length",
        &b"POST /events?topic=watch HTTP/1.1\r\n\r\n"[..],
        411,
        true,
    ));

    // 413 by Content-Length: refused before the body; the connection closes.
    v.push(case(
        "body one byte over max_body_bytes",
        post("/publish?topic=watch", Some("text/plain"), &vec![b'b'; MAX_BODY + 1]),
        413,
        true,
    ));
    v.push(case(
        "Content-Length of a terabyte, no body",
        &b"POST /publish?topic=watch HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n"[..],
        413,
        true,
    ));
    v.push(case(
        "too large with Expect: 100-continue (no 100 first)",
        format!(
            "POST /publish?topic=watch HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            MAX_BODY + 1
        ),
        413,
        true,
    ));

    // 413 by the encoded frame (body within max_body_bytes): the request was complete, so
    // the connection stays usable.
    let big = "x".repeat(MAX_FRAME);
    v.push(case(
        "raw event frame over outbox_max_bytes",
        post("/publish?topic=watch", Some("text/plain"), big.as_bytes()),
        413,
        false,
    ));
    v.push(case(
        "JSON event frame over outbox_max_bytes",
        json(&format!(r#"{{"topic":"watch","data":"{big}"}}"#)),
        413,
        false,
    ));
    v.push(case(
        "NDJSON batch with one frame over outbox_max_bytes",
        ndjson(&format!(
            "{{\"topic\":\"watch\",\"data\":\"small\"}}\n{{\"topic\":\"watch\",\"data\":\"{big}\"}}\n"
        )),
        413,
        false,
    ));
    let lines = "\n".repeat(MAX_FRAME / 7);
    v.push(case(
        "raw event that grows over the limit by its data: prefixes",
        post("/publish?topic=watch", Some("text/plain"), lines.as_bytes()),
        413,
        false,
    ));

    // 414: the connection closes.
    let long =
        |n: usize| format!("/events?topic=watch&pad={}", "a".repeat(n - "/events?topic=watch&pad=".len()));
    v.push(case("GET with a 4097-byte target", get(&long(4097)), 414, true));
    v.push(case(
        "POST with a 6000-byte target",
        post(&long(6000).replacen("/events", "/publish", 1), Some("text/plain"), b"x"),
        414,
        true,
    ));
    v.push(case(
        "request line longer than max_request_bytes, no line end",
        vec![b'a'; MAX_HEAD + 100],
        414,
        true,
    ));

    // 431: the connection closes.
    v.push(case("head of max_request_bytes + 1", head_of_len(MAX_HEAD + 1), 431, true));
    v.push(case(
        "one 9000-byte header",
        format!("GET /nope HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n", "v".repeat(9000)),
        431,
        true,
    ));
    let unterminated: String = (0..20).map(|i| format!("X-H{i}: {}\r\n", "v".repeat(500))).collect();
    v.push(case(
        "10 KB of headers, never terminated",
        format!("GET /nope HTTP/1.1\r\n{unterminated}"),
        431,
        true,
    ));
    v.push(case("65 headers (max 64)", with_headers(65), 431, true));
    v.push(case("200 headers", with_headers(200), 431, true));

    // 505: the connection closes.
    v.push(case("HTTP/2.0 request line", &b"GET /events?topic=watch HTTP/2.0\r\n\r\n"[..], 505, true));
    v.push(case("HTTP/2 connection preface", &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], 505, true));
    v.push(case(
        "HTTP/3.0 publish",
        &b"POST /publish?topic=watch HTTP/3.0\r\nContent-Length: 1\r\n\r\nx"[..],
        505,
        true,
    ));
    v
}

trait ReplaceMethod {
    fn replacen_method(self, method: &str) -> Vec<u8>;
}

impl ReplaceMethod for Vec<u8> {
    /// Replaces the request's method (the bytes up to the first space).
    fn replacen_method(self, method: &str) -> Vec<u8> {
        let space = self.iter().position(|&b| b == b' ').expect("request line");
        let mut out = method.as_bytes().to_vec();
        out.extend_from_slice(&self[space..]);
        out
    }
}

/// The error message of a refusal, after checking its status and JSON shape.
fn error_message(r: &Response, status: u16, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: got {} {}", r.status, r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let body = r.json();
    let msg = body["error"].as_str().unwrap_or_else(|| panic!("{what}: no error string in {}", r.text()));
    assert!(!msg.is_empty(), "{what}: empty error");
    msg.to_string()
}

/// Sends one bad request on a new connection and checks the whole exchange.
fn run_case(addr: SocketAddr, c: &Case) {
    let mut client = Client::connect(addr);
    client.send(&c.raw);
    let r = client.try_read_response().unwrap_or_else(|e| panic!("{}: no response: {e}", c.what));
    let msg = error_message(&r, c.status, &c.what);
    if let Some(text) = c.mentions {
        assert!(msg.contains(text), "{}: error {msg:?} does not mention {text:?}", c.what);
    }
    assert_eq!(r.header("allow"), c.allow, "{}: Allow header", c.what);
    if c.closes {
        assert_eq!(r.header("connection"), Some("close"), "{}", c.what);
        assert!(client.is_closed_by_server(), "{}: the server left the connection open", c.what);
    } else {
        assert_eq!(r.header("connection"), Some("keep-alive"), "{}", c.what);
        let next = client.publish("topic=follow-up", Some("text/plain"), b"next");
        assert_eq!(next.status, 202, "{}: request after the refusal: {}", c.what, next.text());
        assert!(next.json()["id"].as_u64().is_some(), "{}: {}", c.what, next.text());
    }
}

#[test]
fn malformed_requests_get_400_and_the_connection_closes() {
    let mut node = Node::start();
    let ran = cases().iter().filter(|c| c.status == 400 && c.closes).count();
    assert!(ran >= 10);
    for c in cases().iter().filter(|c| c.status == 400 && c.closes) {
        run_case(node.addr(), c);
        node.assert_still_serves(&c.what);
    }

    // A good publish pipelined in front of garbage is answered and delivered; the request
    // behind the garbage is never read.
    let mut raw = post("/publish?topic=watch", Some("text/plain"), b"before garbage");
    raw.extend_from_slice(b"GARBAGE\0\r\n\r\n");
    raw.extend_from_slice(&post("/publish?topic=watch", Some("text/plain"), b"after garbage"));
    let mut c = Client::connect(node.addr());
    c.send(&raw);
    let first = c.read_response();
    assert_eq!(first.status, 202, "{}", first.text());
    assert_eq!(first.header("connection"), Some("keep-alive"));
    let id = first.json()["id"].as_u64().unwrap();
    let second = c.read_response();
    error_message(&second, 400, "garbage after a publish");
    assert_eq!(second.header("connection"), Some("close"));
    assert!(c.is_closed_by_server());
    assert_eq!(
        node.sub.next_raw_frame().unwrap(),
        format!("id: {id}\ntopic: {WATCH}\ndata: before garbage\n\n")
    );
    node.assert_still_serves("a publish, garbage and a publish in one write");
}

#[test]
fn invalid_parameters_and_bodies_get_400_keep_alive_and_publish_nothing() {
    let mut node = Node::start();
    let family: Vec<Case> = cases().into_iter().filter(|c| c.status == 400 && !c.closes).collect();
    assert!(family.len() >= 40);
    for c in &family {
        run_case(node.addr(), c);
        node.assert_still_serves(&c.what);
    }
    // Several refusals and a success in a row on one connection.
    let mut c = Client::connect(node.addr());
    for raw in [get("/events?topic=a%20b"), json("{oops"), post("/publish?topic=%zz", None, b"x")] {
        let r = c.request(&raw);
        error_message(&r, 400, "refusal on a shared connection");
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    let r = c.publish(&format!("topic={WATCH}"), None, b"after three refusals");
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_u64().unwrap();
    assert_eq!(
        node.sub.next_raw_frame().unwrap(),
        format!("id: {id}\ntopic: {WATCH}\ndata: after three refusals\n\n")
    );
    node.assert_still_serves("three refusals on one connection");
}

#[test]
fn percent_then_plus_sign_is_bad_percent_encoding() {
    // `%+9` is not `"%" HEXDIG HEXDIG`; it must be refused like `%zz`, not decoded as a tab.
    let mut node = Node::start();
    for (what, raw) in [
        ("publish, event a%+9b", post("/publish?topic=pct&event=a%+9b", Some("text/plain"), b"x")),
        ("publish, topic=watch&x=%+1", post("/publish?topic=pct&x=%+1", Some("text/plain"), b"x")),
        ("subscribe, topic=watch&x=%+1", get("/events?topic=watch&x=%+1")),
    ] {
        run_case(node.addr(), &case(what, raw, 400, false));
        node.assert_still_serves(what);
    }
}

#[test]
fn content_length_must_be_digits_only() {
    // `Content-Length = 1*DIGIT`: a sign is malformed framing (a proxy may frame the body
    // differently), so it must be refused with 400 and the connection closed.
    let mut node = Node::start();
    for (what, value) in [("plus sign", "+1"), ("plus sign, zero", "+0")] {
        let raw = format!("POST /publish?topic=watch HTTP/1.1\r\nContent-Length: {value}\r\n\r\nx");
        run_case(node.addr(), &case(&format!("Content-Length {what}"), raw, 400, true));
        node.assert_still_serves(what);
    }
}

#[test]
fn raw_space_in_the_target_is_a_malformed_request_line_not_a_version_error() {
    // The version on this line is HTTP/1.1; the line is malformed (4 tokens). 505 tells the
    // client to change protocol versions, which would not help.
    let mut node = Node::start();
    run_case(
        node.addr(),
        &case("space in the target", &b"GET /events?topic=a b HTTP/1.1\r\nHost: t\r\n\r\n"[..], 400, true),
    );
    node.assert_still_serves("space in the target");
}

#[test]
fn unknown_paths_get_404_and_keep_alive() {
    let mut node = Node::start();
    node.run_family(404);
    // The same connection can go on to become a stream.
    let mut c = Client::connect(node.addr());
    let r = c.request(&get("/nope"));
    error_message(&r, 404, "GET /nope");
    c.send(&get("/events?topic=second"));
    let head = c.read_response();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let mut sub = SseClient { reader: c.reader, head };
    assert!(sub.next_raw_frame().unwrap().starts_with("retry: "));
    let id = publish(node.addr(), "second", "on a reused connection");
    assert_eq!(
        sub.next_raw_frame().unwrap(),
        format!("id: {id}\ntopic: second\ndata: on a reused connection\n\n")
    );
    node.assert_still_serves("404 then subscribe");
}

#[test]
fn wrong_methods_get_405_with_allow_and_keep_alive() {
    let mut node = Node::start();
    assert!(node.run_family(405) >= 6);
}

#[test]
fn head_response_carries_no_body() {
    // A response to HEAD never has content (RFC 9112 §6.3): a client reads the head only and
    // takes the next bytes as the next response.
    let node = Node::start();
    let mut c = Client::connect(node.addr());
    c.send(b"HEAD /events?topic=watch HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut line = String::new();
    c.reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 405 "), "{line:?}");
    loop {
        line.clear();
        c.reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    line.clear();
    c.reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 404 "), "after the HEAD response's head came {line:?}");
}

#[test]
fn unacceptable_accept_gets_406_and_acceptable_ones_stream() {
    let mut node = Node::start();
    node.run_family(406);
    for accept in [
        "text/event-stream",
        "text/*",
        "*/*",
        "application/json, text/event-stream;q=0.5",
        "TEXT/EVENT-STREAM",
    ] {
        let mut c = Client::connect(node.addr());
        c.send(format!("GET /events?topic=acc HTTP/1.1\r\nHost: t\r\nAccept: {accept}\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 200, "Accept: {accept}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("text/event-stream"), "Accept: {accept}");
    }
    node.assert_still_serves("accept variants");
}

#[test]
fn bodies_without_content_length_get_411_and_close() {
    let mut node = Node::start();
    assert_eq!(node.run_family(411), 4);
}

#[test]
fn oversized_bodies_and_frames_get_413() {
    let mut node = Node::start();
    let ran = node.run_family(413);
    assert_eq!(ran, 7);
    // Right at the limits the same requests are accepted.
    let mut c = Client::connect(node.addr());
    let envelope = r#"{"topic":"watch","data":"padded"}"#;
    let body = format!("{envelope}{}", " ".repeat(MAX_BODY - envelope.len()));
    let r = c.publish("", Some("application/json"), body.as_bytes());
    assert_eq!(r.status, 202, "a body of exactly max_body_bytes: {}", r.text());
    let id = r.json()["id"].as_u64().unwrap();
    assert_eq!(node.sub.next_raw_frame().unwrap(), format!("id: {id}\ntopic: {WATCH}\ndata: padded\n\n"));
    // Frames carry `topic: watch\n` since issue 12: the largest data shrinks by that line.
    let data = "y".repeat(MAX_FRAME - 25 - format!("topic: {WATCH}\n").len() - "data: \n\n".len());
    let r = c.publish(&format!("topic={WATCH}"), Some("text/plain"), data.as_bytes());
    assert_eq!(r.status, 202, "largest accepted frame: {}", r.text());
    let id = r.json()["id"].as_u64().unwrap();
    assert_eq!(node.sub.next_raw_frame().unwrap(), format!("id: {id}\ntopic: {WATCH}\ndata: {data}\n\n"));
    let r = c.publish(&format!("topic={WATCH}"), Some("text/plain"), format!("{data}y").as_bytes());
    error_message(&r, 413, "one byte over the largest frame");
    node.assert_still_serves("frames at the limit");
}

#[test]
fn overlong_targets_get_414_and_close() {
    let mut node = Node::start();
    assert_eq!(node.run_family(414), 3);
    // A 4096-byte target is still fine.
    let target = format!("/nope?{}", "a".repeat(4096 - "/nope?".len()));
    run_case(node.addr(), &case("4096-byte target", get(&target), 404, false));
    node.assert_still_serves("4096-byte target");
}

#[test]
fn oversized_or_too_many_headers_get_431_and_close() {
    let mut node = Node::start();
    assert_eq!(node.run_family(431), 5);
    // At the limits the request is parsed and routed (404 here).
    run_case(node.addr(), &case("head of exactly max_request_bytes", head_of_len(MAX_HEAD), 404, false));
    run_case(node.addr(), &case("64 headers", with_headers(64), 404, false));
    node.assert_still_serves("headers at the limits");
}

#[test]
fn other_http_versions_get_505_and_close() {
    let mut node = Node::start();
    assert_eq!(node.run_family(505), 3);
    // HTTP/1.0 is served, and closed after the response unless it asks for keep-alive.
    let mut c = Client::connect(node.addr());
    let r = c.request(b"GET /nope HTTP/1.0\r\n\r\n");
    error_message(&r, 404, "HTTP/1.0 GET /nope");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed_by_server());
    node.assert_still_serves("HTTP/1.0");
}

#[test]
fn all_bad_requests_at_once_while_a_subscriber_streams() {
    let mut node = Node::start();
    let all = cases();
    let rounds = 2;
    let barrier = Barrier::new(all.len() * rounds + 1);
    let addr = node.addr();
    std::thread::scope(|s| {
        for _ in 0..rounds {
            for c in &all {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    run_case(addr, c);
                });
            }
        }
        barrier.wait();
        // Meanwhile the subscriber receives every event published, in order, byte-exact.
        let mut publisher = Client::connect(addr);
        let mut last = 0;
        for i in 0..100 {
            let data = format!("during-{i}");
            let r = publisher.publish(&format!("topic={WATCH}"), Some("text/plain"), data.as_bytes());
            assert_eq!(r.status, 202, "{}", r.text());
            let id = r.json()["id"].as_u64().unwrap();
            assert!(id > last, "ids increase: {id} after {last}");
            last = id;
            assert_eq!(
                node.sub.next_raw_frame().unwrap(),
                format!("id: {id}\ntopic: {WATCH}\ndata: {data}\n\n")
            );
        }
    });
    let s = node.server.stats();
    assert!(s.requests_rejected >= (all.len() * rounds) as u64, "{s:#?}");
    node.assert_still_serves("all bad requests at once");
}

/// Reads exactly `expected.len()` bytes and compares them.
fn read_exactly(c: &mut Client, expected: &str) {
    let mut got = vec![0; expected.len()];
    c.reader.read_exact(&mut got).expect("stream bytes");
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

#[test]
fn garbage_after_subscribing_never_reaches_the_stream() {
    let server = TestServer::start(config());
    let mut c = Client::connect(server.addr);
    // The subscribe, then in the same write: SSE-looking lines, a complete publish request
    // for the same topic, another subscribe, binary junk.
    let mut first = get("/events?topic=g");
    first.extend_from_slice(b"id: 1\nevent: evil\ndata: injected\n\n");
    first.extend_from_slice(&post("/publish?topic=g", Some("text/plain"), b"pipelined evil"));
    first.extend_from_slice(&get("/events?topic=g"));
    first.extend_from_slice(b"\0\xff\xfe\r\n\r\nGARBAGE");
    c.send(&first);
    let head = c.read_response();
    assert_eq!(head.status, 200, "{}", head.text());
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("content-length"), None);

    let mut expected = String::from("retry: 3000\n: ok\n\n");
    read_exactly(&mut c, &expected);

    for round in 0..3 {
        // Later writes: more junk, another publish request, a large blob.
        c.send(b"data: more evil\n\n");
        c.send(&post("/publish?topic=g", Some("text/plain"), b"later evil"));
        c.send(&vec![b'z'; 100_000]);
        expected.clear();
        let mut p = Client::connect(server.addr);
        for i in 0..5 {
            let data = format!("r{round} e{i}\nsecond line");
            let r = p.publish("topic=g&event=real", Some("text/plain"), data.as_bytes());
            assert_eq!(r.status, 202, "{}", r.text());
            let id = r.json()["id"].as_u64().unwrap();
            expected.push_str(&format!(
                "id: {id}\ntopic: g\nevent: real\ndata: r{round} e{i}\ndata: second line\n\n"
            ));
        }
        read_exactly(&mut c, &expected);
    }
    assert_eq!(server.stats().requests_rejected, 0, "stream input was parsed as requests");
    let s = server.stats();
    assert_eq!(s.streams, 1, "{s:#?}");
}
