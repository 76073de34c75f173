//! `--write-delay-ms`: a stream's first new event waits up to the delay so the events after
//! it leave in the same `writev`, with nothing lost or reordered; without it, each event is
//! written as it comes.

mod util;

use std::time::Duration;

use sse_edge::{Config, Message};
use util::{burst_to_readers, SseClient, TestServer};

const STREAMS: usize = 20;
const EVENTS: usize = 10;

/// Publishes `EVENTS` events 5 ms apart to `STREAMS` streams and returns how many vectored
/// writes the node made for them, after checking that every stream got every event in order.
fn writes_for_spaced_events(write_delay_ms: u64) -> u64 {
    let server = TestServer::start(Config { threads: Some(1), write_delay_ms, ..Config::loopback() });
    let mut streams: Vec<SseClient> =
        (0..STREAMS).map(|_| SseClient::connect(server.addr, "/events?topic=batch")).collect();
    server.wait_stats("streams", |s| s.streams == STREAMS as u64);
    let before = server.wait_stats("stream heads written", |s| s.writes >= STREAMS as u64).writes;
    let publisher = server.handle().publisher();
    let mut ids = Vec::new();
    for i in 0..EVENTS {
        let id = publisher.publish(&Message::new("batch", format!("e{i}"))).expect("published");
        ids.push(id.expect("a reliable event gets an id"));
        std::thread::sleep(Duration::from_millis(5));
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        let got: Vec<u64> = stream.events(EVENTS).iter().map(|e| e.id_u64()).collect();
        assert_eq!(got, ids, "stream {n} got every event, in order");
    }
    server.stats().writes - before
}

#[test]
fn a_write_delay_batches_the_events_that_follow_into_one_write() {
    // 10 events within ~50 ms and a 1 s delay: each stream's events leave in one write.
    let delayed = writes_for_spaced_events(1_000);
    assert!(
        delayed <= 2 * STREAMS as u64,
        "{delayed} writes for {STREAMS} streams × {EVENTS} events with a 1 s write delay"
    );
    // The same without a delay: written as they come (the comparison shows the test can fail).
    let immediate = writes_for_spaced_events(0);
    eprintln!("writes: {delayed} with a 1 s delay, {immediate} without");
    assert!(
        immediate > 3 * STREAMS as u64,
        "{immediate} writes without a delay: each event should have been written as it came"
    );
}

/// Many events at a short delay: every stream gets exactly the published sequence.
#[test]
fn a_write_delay_loses_and_reorders_nothing() {
    let server = TestServer::start(Config { threads: Some(2), write_delay_ms: 5, ..Config::loopback() });
    let mut streams: Vec<SseClient> =
        (0..50).map(|_| SseClient::connect(server.addr, "/events?topic=many")).collect();
    server.wait_stats("streams", |s| s.streams == 50);
    let publisher = server.handle().publisher();
    let ids: Vec<u64> = (0..300)
        .map(|i| publisher.publish(&Message::new("many", format!("{i}"))).expect("published").expect("an id"))
        .collect();
    for (n, stream) in streams.iter_mut().enumerate() {
        let got: Vec<u64> = stream.events(ids.len()).iter().map(|e| e.id_u64()).collect();
        assert_eq!(got, ids, "stream {n}");
    }
}

/// A loop that falls behind while its streams wait out a write delay pauses its intake until
/// they are written, as without a delay: a burst past what a pass may queue for one stream
/// (1,024 frames) reaches readers that keep up whole, with no gap notice.
#[test]
fn a_write_delay_does_not_let_a_burst_evict_from_readers_that_keep_up() {
    const EVENTS: usize = 3_000;
    let server = TestServer::start(Config {
        threads: Some(1),
        write_delay_ms: 200,
        hub_queue_events: 2 * EVENTS,
        ..Config::loopback()
    });
    // The loop takes the whole batch in one drain when it wakes; each reader reads on its
    // own thread, as real ones do, so both keep up.
    burst_to_readers(&server, 2, EVENTS, Duration::from_secs(1));
    let s = server.stats();
    assert_eq!((s.frames_evicted, s.gaps_reported), (0, 0), "{s:?}");
    assert!(s.intake_pauses > 0, "{s:?}");
}
