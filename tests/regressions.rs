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
