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
    assert_eq!(http_get(addr, "/metrics").status, 200, "metrics are served at stream capacity");
    assert_eq!(http_get(addr, "/topics/cap/latest").status, 200, "polling is served at stream capacity");

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

/// A publish parked on a full hub is woken when the loop that was behind drains its channel,
/// not retried every millisecond under the hub's lock while it waits.
#[test]
fn parked_publishers_are_woken_when_room_frees_not_polled() {
    const QUEUE: usize = 4;
    const BATCH: usize = 3 * QUEUE;
    // SO_REUSEPORT spreads these over both loops; the ones on loop 1 park while loop 0
    // sleeps (all landing on loop 0 has a chance of 2^-16).
    const PUBLISHERS: usize = 16;
    const BLOCK: std::time::Duration = std::time::Duration::from_secs(2);
    let server = TestServer::start(Config {
        threads: Some(2),
        hub_queue_events: QUEUE,
        publish_wait_timeout_ms: 0,
        status_interval_ms: 0,
        ..Config::loopback()
    });
    let mut sub = SseClient::connect(server.addr, "/events?topic=parked");
    server.wait_stats("stream", |s| s.streams == 1);

    // Loop 0 sleeps inside its hub drain: its channel fills after QUEUE events.
    assert!(server.handle().debug_block_loop(0, BLOCK));
    let body: String = (0..BATCH).map(|n| format!("{{\"topic\":\"parked\",\"data\":\"{n}\"}}\n")).collect();
    let request = publish_request("", Some("application/x-ndjson"), body.as_bytes());
    let mut clients: Vec<Client> = (0..PUBLISHERS).map(|_| Client::connect(server.addr)).collect();
    for c in &mut clients {
        c.send(&request);
    }
    // Every publisher is answered once loop 0 wakes and drains: all its events sequenced.
    let mut sequenced = Vec::new();
    for (n, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        assert_eq!(r.status, 202, "publisher {n}: {}", r.text());
        let ids: Vec<u64> =
            r.json()["ids"].as_array().expect("ids").iter().filter_map(|v| v.as_u64()).collect();
        assert_eq!(ids.len(), BATCH, "publisher {n}: {}", r.text());
        sequenced.extend(ids);
    }
    sequenced.sort_unstable();
    let mut delivered = Vec::with_capacity(sequenced.len());
    while delivered.len() < sequenced.len() {
        let e = sub.next_event().unwrap_or_else(|e| panic!("after {} events: {e}", delivered.len()));
        if e.id.is_some() {
            delivered.push(e.id_u64());
        }
    }
    assert_eq!(delivered, sequenced, "every sequenced event, once, in id order");

    // Polling every millisecond retried the parked publishes ~14,000 times in all (~2,000
    // each while loop 0 slept); woken ones are retried per wake-up (and every
    // ROOM_WAIT_FALLBACK without one): ~1,000-1,500 here, mostly once loop 0 drains.
    let s = server.stats();
    eprintln!("{} parked publishes, {} retries", s.publish_waits, s.publish_retries);
    assert!(s.publish_waits >= 1, "some publisher parked on loop 1: {s:#?}");
    assert!(
        s.publish_retries < 200 * s.publish_waits,
        "{} retries for {} parked publishes",
        s.publish_retries,
        s.publish_waits
    );
}
