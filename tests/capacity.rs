//! Capacity for publishers: at `--max-connections` streams, short requests (publish,
//! health, metrics) are still served from `--request-reserve`, a stream past the capacity
//! gets 503 (`stream_capacity`), connections past both get 503 at accept (`capacity`), and
//! the node recovers when connections close.

mod util;

use sse_edge::metrics::RejectReason;
use sse_edge::Config;
use util::*;

fn retry_after(r: &Response) {
    let v = r.header("retry-after").unwrap_or_else(|| panic!("no Retry-After in {:?}", r.headers));
    assert!(v.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After {v:?}");
}

fn expect_event(sub: &mut SseClient, id: u64, data: &str) {
    let e = sub.next_event().unwrap_or_else(|e| panic!("waiting for event {id} {data:?}: {e}"));
    assert_eq!((e.id_u64(), e.data.as_str()), (id, data));
}

fn publish_on(c: &mut Client, topic: &str, data: &str) -> u64 {
    let r = c.publish(&format!("topic={topic}"), None, data.as_bytes());
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_u64().expect("id")
}

#[test]
fn at_stream_capacity_publishers_are_served_from_the_request_reserve() {
    const N: usize = 6;
    const RESERVE: usize = 3;
    let server = TestServer::start(Config {
        threads: Some(2),
        max_connections: N,
        request_reserve: RESERVE,
        ..Config::loopback()
    });
    let addr = server.addr;
    assert_eq!(server.stats().capacity, N as u64);
    let mut streams: Vec<SseClient> = (0..N).map(|_| SseClient::connect(addr, "/events?topic=cap")).collect();
    server.wait_stats("N streams", |s| s.streams == N as u64);

    // A publish gets in at stream capacity, and every stream receives it, id by id.
    let mut publisher = Client::connect(addr);
    let ids: Vec<u64> = (0..3).map(|i| publish_on(&mut publisher, "cap", &format!("full {i}"))).collect();
    for sub in &mut streams {
        for (i, &id) in ids.iter().enumerate() {
            expect_event(sub, id, &format!("full {i}"));
        }
    }
    assert_eq!(http_get(addr, "/healthz").status, 200, "health is served at stream capacity");

    // The N+1th stream is refused with 503 + Retry-After, under its own reason, and its
    // connection is closed (it would hold a place of the reserve).
    let mut extra = Client::connect(addr);
    let refused = extra.try_read_response_after(
        b"GET /events?topic=cap HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n",
    );
    let refused = refused.expect("an answer to the N+1th stream");
    assert_eq!(refused.status, 503, "{}", refused.text());
    retry_after(&refused);
    let s = server.stats();
    assert_eq!(s.rejected_for(RejectReason::StreamCapacity), 1, "{s:#?}");
    assert_eq!(s.rejected_for(RejectReason::Capacity), 0, "{s:#?}");
    assert_eq!(s.streams, N as u64);
    assert!(extra.is_closed_by_server(), "the refused stream's connection stays open");
    drop(extra);
    server.wait_stats("refused stream closed", |s| s.connections == N as u64 + 1);

    // Fill the reserve (the publisher holds one of its places): past it, connections are
    // refused at accept.
    let idle: Vec<Client> = (1..RESERVE).map(|_| Client::connect(addr)).collect();
    server.wait_stats("reserve full", |s| s.connections == (N + RESERVE) as u64);
    let mut past = Client::connect(addr);
    let r = past.read_response();
    assert_eq!(r.status, 503, "{}", r.text());
    retry_after(&r);
    assert!(past.is_closed_by_server(), "a refused connection stays open");
    assert!(server.stats().rejected_for(RejectReason::Capacity) >= 1);

    // Recovery: with the reserve free again a publish gets in; with a stream closed, a new
    // one opens and gets the next event with the others.
    drop((idle, past, publisher));
    streams.pop();
    server.wait_stats("connections closed", |s| s.connections == (N - 1) as u64);
    streams.push(SseClient::connect(addr, "/events?topic=cap"));
    let id = publish(addr, "cap", "recovered");
    for sub in &mut streams {
        expect_event(sub, id, "recovered");
    }
}
