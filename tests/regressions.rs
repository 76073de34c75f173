//! Regressions found in review, each over real sockets.

mod util;

use sse_edge::Config;
use util::*;

#[test]
fn a_last_event_id_never_issued_here_resumes_from_this_nodes_history() {
    let server = TestServer::with_threads(2);
    let first = publish(server.addr, "f", "before");
    // An id far in the future (another node's clock, say) must not silence the stream.
    let foreign = first + 600_000_000;
    let mut sub = SseClient::connect(server.addr, &format!("/events?topic=f&lastEventId={foreign}"));
    let mut got = Vec::new();
    let live = publish(server.addr, "f", "after");
    while got.last() != Some(&live) {
        let e = sub.next_event().unwrap();
        if e.event.as_deref() != Some("gap") {
            got.push(e.id_u64());
        }
    }
    assert_eq!(got, vec![first, live], "retained history, then live events");
}

#[test]
fn a_cors_preflight_names_the_origin_once() {
    let server =
        TestServer::start(Config { cors_origin: vec!["https://app.example".into()], ..Config::loopback() });
    let r = Client::connect(server.addr).request(
        b"OPTIONS /publish HTTP/1.1\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    );
    assert_eq!(r.status, 204);
    let count = |name: &str| r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count();
    assert_eq!(count("access-control-allow-origin"), 1, "{:?}", r.headers);
    assert_eq!(count("access-control-allow-credentials"), 1, "{:?}", r.headers);
}

#[test]
fn draining_streams_leave_their_topics_at_once() {
    let server = TestServer::start(Config { drain_timeout_ms: 5_000, ..Config::loopback() });
    // Subscribers that never read: the drain notice cannot be flushed out at once, yet the
    // streams must stop counting as subscribers (no fan-out into half-closed sockets).
    let subs: Vec<SseClient> = (0..3).map(|_| SseClient::connect(server.addr, "/events?topic=d")).collect();
    server.wait_stats("streams", |s| s.streams == 3);
    let handle = server.handle();
    assert!(handle.shutdown_trigger().begin());
    let s = server.wait_stats("streams left their topics", |s| s.memberships == 0 && s.streams == 0);
    assert_eq!(s.topics, 0);
    drop(subs);
}

/// Found by the `http_request` fuzz target (RFC 9112 §9.3 oracle): only the first
/// `Connection` line was read, and HTTP/1.0 ignored `close` next to `keep-alive`. Every
/// `Connection` line counts, and `close` always wins.
#[test]
fn connection_options_from_every_line_decide_keep_alive_and_close_wins() {
    let server = TestServer::start(Config::loopback());
    let cases: [(&str, &[u8], bool); 4] = [
        (
            "close on a second line",
            b"GET /nope HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            false,
        ),
        ("HTTP/1.0 keep-alive, close", b"GET /nope HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false),
        (
            "HTTP/1.0 keep-alive on a second line",
            b"GET /nope HTTP/1.0\r\nConnection: x\r\nConnection: keep-alive\r\n\r\n",
            true,
        ),
        ("HTTP/1.1 without options", b"GET /nope HTTP/1.1\r\nConnection: te\r\n\r\n", true),
    ];
    for (what, raw, keep) in cases {
        let mut c = Client::connect(server.addr);
        let r = c.request(raw);
        assert_eq!(r.status, 404, "{what}");
        assert_eq!(r.header("connection"), Some(if keep { "keep-alive" } else { "close" }), "{what}");
        if keep {
            assert_eq!(c.request(b"GET /nope HTTP/1.1\r\n\r\n").status, 404, "{what}: served again");
        } else {
            assert!(c.is_closed_by_server(), "{what}: the server closes after the answer");
        }
    }
    // The node keeps serving others.
    let mut sub = SseClient::connect(server.addr, "/events?topic=k");
    let id = publish(server.addr, "k", "still serving");
    assert_eq!(sub.next_raw_frame().unwrap(), format!("id: {id}\ntopic: k\ndata: still serving\n\n"));
}

/// Kept from the `http_request` fuzz target: `Content-Length` lines that spell one value
/// differently (`5`, `005`) are one length (RFC 9110 §8.6); different values are a 400 that
/// closes the connection (the stream cannot be resynchronised).
#[test]
fn content_length_lines_naming_one_value_are_one_length() {
    let server = TestServer::start(Config::loopback());
    let mut sub = SseClient::connect(server.addr, "/events?topic=cl");
    let mut c = Client::connect(server.addr);
    let r = c
        .request(b"POST /publish?topic=cl HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 005\r\n\r\nhello");
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_u64().expect("id");
    assert_eq!(sub.next_raw_frame().unwrap(), format!("id: {id}\ntopic: cl\ndata: hello\n\n"));
    let r =
        c.request(b"POST /publish?topic=cl HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(c.is_closed_by_server());
}
