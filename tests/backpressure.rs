//! Backpressure over real sockets: a flooding publisher is slowed, not answered with loss;
//! a subscriber that never reads is bounded by its outbox while everyone else gets
//! everything.

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sse_edge::metrics::RejectReason;
use sse_edge::{Class, CloseReason, Config, Message};
use util::*;

#[test]
fn flooding_publisher_is_slowed_and_every_event_reaches_every_reader() {
    const EVENTS: usize = 20_000;
    const QUEUE: usize = 16;
    let server =
        TestServer::start(Config { hub_queue_events: QUEUE, threads: Some(2), ..Config::loopback() });
    let mut subs: Vec<SseClient> =
        (0..8).map(|_| SseClient::connect(server.addr, "/events?topic=flood")).collect();
    server.wait_stats("streams", |s| s.streams == 8);

    // One connection, every request pipelined as fast as the socket takes them.
    let mut client = Client::connect(server.addr);
    let mut writer = client.stream().try_clone().unwrap();
    let flood = thread::spawn(move || {
        let mut batch = Vec::new();
        for n in 0..EVENTS {
            batch.extend_from_slice(&publish_request(
                "topic=flood",
                Some("text/plain"),
                format!("{n}").as_bytes(),
            ));
            if batch.len() > 32 * 1024 {
                writer.write_all(&batch).unwrap();
                batch.clear();
            }
        }
        writer.write_all(&batch).unwrap();
    });
    let readers: Vec<_> = subs
        .drain(..)
        .map(|mut sub| {
            thread::spawn(move || {
                let mut last = 0u64;
                for n in 0..EVENTS {
                    let e = sub.next_event().unwrap_or_else(|e| panic!("event {n}: {e}"));
                    assert_eq!(e.data, n.to_string(), "events arrive complete and in order");
                    assert!(e.id_u64() > last);
                    last = e.id_u64();
                }
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(EVENTS);
    for _ in 0..EVENTS {
        let r = client.read_response();
        assert_eq!(r.status, 202);
        ids.push(r.json()["id"].as_u64().unwrap());
    }
    flood.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let s = server.stats();
    assert!(s.publish_waits > 0, "the publisher had to wait for hub room: {s:?}");
    assert_eq!(s.frames_evicted, 0);
    assert!(s.hub_queue_lengths.iter().all(|&n| n <= QUEUE));
}

#[test]
fn blocking_embedded_publish_waits_for_room_and_loses_nothing() {
    const EVENTS: usize = 5_000;
    let server = TestServer::start(Config { hub_queue_events: 4, threads: Some(2), ..Config::loopback() });
    let mut sub = SseClient::connect(server.addr, "/events?topic=t");
    server.wait_stats("stream", |s| s.streams == 1);
    let publisher = server.handle().publisher();
    let msgs: Vec<Message> = (0..EVENTS).map(|n| Message::new("t", n.to_string())).collect();
    let sender = thread::spawn(move || publisher.publish_batch(&msgs).unwrap());
    let got: Vec<String> = sub.events(EVENTS).into_iter().map(|e| e.data).collect();
    let ids = sender.join().unwrap();
    assert_eq!(ids.len(), EVENTS);
    assert_eq!(got, (0..EVENTS).map(|n| n.to_string()).collect::<Vec<_>>());
}

#[test]
fn subscriber_that_never_reads_stays_within_its_outbox_bound() {
    const OUTBOX_BYTES: usize = 256 * 1024;
    const EVENT_BYTES: usize = 64 * 1024;
    const EVENTS: usize = 800; // 50 MiB in total
    let server = TestServer::start(Config {
        outbox_max_bytes: OUTBOX_BYTES,
        stall_timeout_ms: 120_000,
        threads: Some(2),
        ..Config::loopback()
    });
    // Subscribes, then never reads again.
    let stalled = SseClient::connect(server.addr, "/events?topic=bulk");
    let readers: Vec<SseClient> =
        (0..3).map(|_| SseClient::connect(server.addr, "/events?topic=bulk")).collect();
    server.wait_stats("streams", |s| s.streams == 4);

    // Readers report progress; the publisher keeps at most IN_FLIGHT events ahead of the
    // slowest reader, so readers never fall behind by more than their outbox holds, while
    // the stalled client falls behind by everything.
    const IN_FLIGHT: usize = 2;
    let progress: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    let reader_threads: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(r, mut sub)| {
            let progress = progress.clone();
            thread::spawn(move || {
                let mut ids = Vec::with_capacity(EVENTS);
                for n in 0..EVENTS {
                    let e = sub.next_event().unwrap_or_else(|e| panic!("event {n}: {e}"));
                    assert_eq!(e.data.len(), EVENT_BYTES);
                    assert!(e.data.starts_with(&format!("{n}:")), "reader {r} missed event {n}");
                    ids.push(e.id_u64());
                    progress[r].store(n + 1, Ordering::Release);
                }
                ids
            })
        })
        .collect();
    let publisher = server.handle().publisher();
    let mut published = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        let deadline = Instant::now() + IO_TIMEOUT;
        while progress.iter().map(|p| p.load(Ordering::Acquire)).min().unwrap_or(0) + IN_FLIGHT < n {
            assert!(Instant::now() < deadline, "readers stopped at event {n}");
            thread::yield_now();
        }
        let prefix = format!("{n}:");
        let data = format!("{prefix}{}", "y".repeat(EVENT_BYTES - prefix.len()));
        published.push(
            publisher.publish(&Message::new("bulk", data)).unwrap().expect("reliable events get an id"),
        );
    }
    for t in reader_threads {
        assert_eq!(t.join().unwrap(), published, "every reader got every event");
    }
    // (The peak may pass the bound: while its socket still took bytes, the stalled stream was
    // kept up, and a pass may queue more than the bound for such a stream. Once its write
    // blocked, it was trimmed to the bound.)
    let s = server.wait_stats("outbox gauge refreshed", |s| s.outbox_queued_bytes > 0);
    assert!(s.outbox_queued_bytes <= OUTBOX_BYTES as u64, "{s:?}");
    assert!(s.frames_evicted > 0, "the stalled outbox dropped its oldest frames");
    assert_eq!(s.closed_for(CloseReason::Stalled), 0);
    // The readers have hung up; the stalled stream is still open.
    server.wait_stats("only the stalled stream left", |s| s.streams == 1);

    // When it finally reads, the stalled client sees whole frames with increasing ids, and
    // every event it did not get is covered by an `event: gap` notice that came before
    // anything newer: nothing reliable is lost silently.
    let mut stalled = stalled;
    stalled.set_timeout(Duration::from_secs(5));
    let (mut last, mut seen, mut gaps) = (0u64, Vec::new(), Vec::new());
    while let Ok(e) = stalled.next_event() {
        if e.event.as_deref() == Some("gap") {
            let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            let (from, to) = (v["from"].as_u64().unwrap(), v["to"].as_u64().unwrap());
            assert!(from > last, "a gap notice comes before newer events");
            gaps.push((from, to));
            continue;
        }
        assert!(e.id_u64() > last);
        assert_eq!(e.data.len(), EVENT_BYTES);
        last = e.id_u64();
        seen.push(last);
        if last == *published.last().unwrap() {
            break;
        }
    }
    assert!(seen.len() < EVENTS, "some frames were dropped, not buffered without bound");
    assert_eq!(last, *published.last().unwrap(), "the newest event is delivered");
    for id in &published {
        assert!(
            seen.contains(id) || gaps.iter().any(|&(f, t)| f <= *id && *id <= t),
            "event {id} neither delivered nor reported in a gap"
        );
    }
    assert!(server.stats().gaps_reported >= gaps.len() as u64);
}

#[test]
fn pipelining_client_that_never_reads_responses_is_no_longer_read() {
    const REQUESTS: usize = 400_000;
    let server = TestServer::with_threads(2);
    let mut client = Client::connect(server.addr);
    let request = |n: usize| publish_request("topic=p", Some("text/plain"), format!("{n:08}").as_bytes());
    let request_len = request(0).len();
    let mut writer = client.stream().try_clone().unwrap();
    writer.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // Writes until the server stops reading and the kernel buffers are full (the write
    // times out), never reading a response.
    let written = thread::spawn(move || {
        let mut total = 0usize;
        let mut pending: Vec<u8> = Vec::new();
        for n in 0..REQUESTS {
            pending.extend_from_slice(&request(n));
            if pending.len() < 64 * 1024 && n + 1 < REQUESTS {
                continue;
            }
            let mut at = 0;
            while at < pending.len() {
                match writer.write(&pending[at..]) {
                    Ok(k) => at += k,
                    Err(_) => return total + at,
                }
            }
            total += at;
            pending.clear();
        }
        total
    })
    .join()
    .unwrap();
    let complete = written / request_len;
    assert!(complete < REQUESTS, "the server stopped reading before all {REQUESTS} requests");
    let s = server.wait_stats("outbox gauge", |s| s.outbox_queued_bytes > 0);
    assert!(s.outbox_queued_bytes <= 80 * 1024, "unread responses are bounded: {}", s.outbox_queued_bytes);

    // Others are served meanwhile.
    let mut sub = SseClient::connect(server.addr, "/events?topic=other");
    server.wait_stats("stream", |s| s.streams == 1);
    let id = publish(server.addr, "other", "still serving");
    assert_eq!(sub.next_event().unwrap().id_u64(), id);

    // Once the client reads, every complete request is answered, in order.
    let mut last = 0;
    for n in 0..complete {
        let r = client.read_response();
        assert_eq!(r.status, 202, "response {n}");
        let id = r.json()["id"].as_u64().unwrap();
        assert!(id > last);
        last = id;
    }
}

/// Publishes a burst sixteen times a 16-frame outbox to four readers while the loop is held;
/// returns the node's stats after every reader got every event, in order.
fn burst_to_readers_with_a_small_outbox(max_delivery_lag_ms: u64) -> sse_edge::Stats {
    const EVENTS: usize = 256;
    const OUTBOX: usize = 16;
    let server = TestServer::start(Config {
        outbox_max_events: OUTBOX,
        hub_queue_events: 2 * EVENTS,
        max_delivery_lag_ms,
        threads: Some(1),
        ..Config::loopback()
    });
    burst_to_readers(&server, 4, EVENTS, Duration::from_millis(300));
    let s = server.stats();
    assert_eq!((s.frames_evicted, s.gaps_reported), (0, 0), "{s:?}");
    s
}

/// `--outbox-max-events` bounds what a client that falls behind keeps, not how far the loop's
/// pass runs ahead of readers that keep up: a burst sixteen times the outbox, piled up while
/// the loop was held, reaches every reader whole, in order, without pausing the intake.
#[test]
fn a_small_outbox_does_not_cut_a_burst_for_readers_that_keep_up() {
    let s = burst_to_readers_with_a_small_outbox(1_000);
    assert_eq!(s.intake_pauses, 0, "{s:?}");
}

/// Without a lag budget nothing bounds the pass in time, so the configured bounds hold for
/// every stream: the same burst is taken in outbox-sized steps, and still nothing is lost.
#[test]
fn without_a_lag_budget_the_outbox_bound_cuts_the_pass() {
    let s = burst_to_readers_with_a_small_outbox(0);
    assert!(s.intake_pauses > 0, "{s:?}");
}

/// A loop that falls behind on writing (here: held while a burst larger than what a pass may
/// queue for one stream piles up in the hub) stops taking events until it has written them
/// out, instead of evicting them from readers that are keeping up.
#[test]
fn a_loop_behind_on_writing_pauses_its_intake_and_readers_lose_nothing() {
    // Past the pass's bound (the default outbox's 1,024 frames), and small enough (~32 KB of
    // frames) for the readers' socket buffers: readers that keep up, even on a busy machine.
    const EVENTS: usize = 1_500;
    let server = TestServer::start(Config {
        outbox_max_events: 16,
        hub_queue_events: 2 * EVENTS,
        threads: Some(1),
        ..Config::loopback()
    });
    // The loop takes the whole batch in one drain when it wakes (publishing it takes a few
    // milliseconds of the second it sleeps), so a stream's outbox reaches the pass's bound.
    let _open = burst_to_readers(&server, 2, EVENTS, Duration::from_secs(1));
    let s = server.stats();
    assert_eq!((s.frames_evicted, s.gaps_reported), (0, 0), "{s:?}");
    assert!(s.intake_pauses > 0, "the burst was taken in steps: {s:?}");
    // The node goes on serving: a new stream gets a new event.
    let mut late = SseClient::connect(server.addr, "/events?topic=burst");
    server.wait_stats("late stream", |s| s.streams == 3);
    let id = publish(server.addr, "burst", "after");
    // The slept loop may have put the node in overload mode: a new stream is told so first.
    let e = late.next_published().unwrap();
    assert_eq!((e.data.as_str(), e.id_u64()), ("after", id));
}

/// A stream whose client stops reading while the loop's pass had queued it more than its own
/// bound keeps no more than that bound once its socket blocks: the oldest frames go, it is
/// told which with one gap notice before anything newer, and a reader beside it loses nothing.
#[test]
fn a_client_that_falls_behind_is_trimmed_to_its_own_bound() {
    const EVENTS: usize = 400;
    const OUTBOX: usize = 16;
    let server = TestServer::start(Config {
        outbox_max_events: OUTBOX,
        hub_queue_events: 2 * EVENTS,
        threads: Some(1),
        ..Config::loopback()
    });
    // The stalled client's kernel buffers take a few KiB; the reader's default ones take the
    // whole burst (~45 KB) even before it reads, so only the stalled one can fall behind.
    let mut stalled =
        match SseClient::try_open(client_with_receive_buffer(server.addr, 2048), "/events?topic=t", "") {
            Ok(Ok(s)) => s,
            other => panic!("subscribe: {:?}", other.map(|r| r.map(|_| ()).map_err(|h| h.status))),
        };
    let reader = SseClient::connect(server.addr, "/events?topic=t");
    server.wait_stats("streams", |s| s.streams == 2);
    // 400 events of ~110 bytes, taken in one drain while the pass may queue 1,024 frames a
    // stream: the stalled stream holds 25 times its bound until its socket blocks.
    let payload = "x".repeat(80);
    let msgs: Vec<Message> = (0..EVENTS).map(|n| Message::new("t", format!("{n} {payload}"))).collect();
    assert!(server.handle().debug_block_loop(0, Duration::from_secs(1)));
    let ids: Vec<u64> =
        server.handle().publisher().publish_batch(&msgs).unwrap().into_iter().flatten().collect();
    assert_eq!(ids.len(), EVENTS, "every event sequenced (none held)");
    let got: Vec<u64> =
        read_on_thread(reader, EVENTS).join().unwrap().1.iter().map(SseEvent::id_u64).collect();
    assert_eq!(got, ids, "the reader lost nothing");
    let s = server.wait_stats("the stalled stream blocked and trimmed", |s| {
        s.write_blocked == 1 && s.frames_evicted > 0
    });
    assert_eq!(s.evicted_by_class[Class::Reliable.index()], s.frames_evicted, "{s:?}");
    assert!(s.outbox_queued_bytes as usize <= OUTBOX * 200, "trimmed at once, not at the next push: {s:?}");

    // The stalled client reads now: a contiguous prefix (what its socket took), one gap notice
    // naming exactly the evicted ids, then at most its bound of the newest, ending at the last.
    let (mut before, mut gap, mut after) = (Vec::new(), None, Vec::new());
    while after.last() != ids.last() && before.last() != ids.last() {
        let e = stalled.next_event().unwrap();
        match (e.event.as_deref(), gap) {
            (Some("gap"), None) => {
                let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                gap = Some((v["from"].as_u64().unwrap(), v["to"].as_u64().unwrap()));
            }
            (Some("gap"), Some(_)) => panic!("a second gap notice: {e:?}"),
            // The node's own notices (overload mode) carry no id.
            _ if e.id.is_none() => {}
            (_, None) => before.push(e.id_u64()),
            (_, Some(_)) => after.push(e.id_u64()),
        }
    }
    let (from, to) = gap.expect("a gap notice");
    assert_eq!(before, ids[..before.len()].to_vec(), "a contiguous prefix");
    assert_eq!(from, ids[before.len()], "the notice starts after the prefix");
    assert_eq!(after, ((to + 1)..=ids[EVENTS - 1]).collect::<Vec<_>>(), "then the rest after the notice");
    assert!(after.len() < OUTBOX, "kept at most its bound (one place for the notice): {}", after.len());
    let s = server.stats();
    assert_eq!(s.frames_evicted, to - from + 1, "every eviction counted once: {s:?}");
    assert_eq!(s.gaps_reported, 1, "{s:?}");
}

/// A publish parked on a full hub waits at most `--publish-wait-timeout-ms`: then it gets 503
/// with `Retry-After` and, per event, its id if it was sequenced (and so delivered) or `null`.
/// The connection stays usable, and the node goes on serving once the stuck loop wakes.
#[test]
fn a_publish_parked_past_its_wait_timeout_gets_503_with_the_ids_sequenced_so_far() {
    const QUEUE: usize = 4;
    const BATCH: usize = 3 * QUEUE;
    // SO_REUSEPORT spreads these over both loops; the ones on loop 1 are parked while loop 0
    // sleeps (all landing on loop 0 has a chance of 2^-16).
    const PUBLISHERS: usize = 16;
    let server = TestServer::start(Config {
        threads: Some(2),
        hub_queue_events: QUEUE,
        publish_wait_timeout_ms: 200,
        ..Config::loopback()
    });
    let mut sub = SseClient::connect(server.addr, "/events?topic=wedged");
    server.wait_stats("stream", |s| s.streams == 1);

    // Loop 0 sleeps inside its hub drain: its channel fills after QUEUE events and stays full
    // for ten times the publish wait limit.
    assert!(server.handle().debug_block_loop(0, Duration::from_secs(2)));
    let body: String = (0..BATCH).map(|n| format!("{{\"topic\":\"wedged\",\"data\":\"{n}\"}}\n")).collect();
    let request = publish_request("", Some("application/x-ndjson"), body.as_bytes());
    let mut clients: Vec<Client> = (0..PUBLISHERS).map(|_| Client::connect(server.addr)).collect();
    for c in &mut clients {
        c.send(&request);
    }
    let (mut timed_out, mut sequenced) = (Vec::new(), Vec::new());
    for (n, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        let ids = r.json()["ids"].as_array().unwrap_or_else(|| panic!("publisher {n}: {}", r.text())).clone();
        assert_eq!(ids.len(), BATCH, "publisher {n}: one entry per event: {}", r.text());
        let done: Vec<u64> = ids.iter().map_while(|id| id.as_u64()).collect();
        assert!(done.windows(2).all(|w| w[0] < w[1]), "publisher {n}: increasing ids: {}", r.text());
        match r.status {
            503 => {
                assert_eq!(r.header("retry-after"), Some("1"), "publisher {n}");
                assert_eq!(r.header("content-type"), Some("application/json"), "publisher {n}");
                assert_eq!(r.header("connection"), Some("keep-alive"), "publisher {n}");
                let error = r.json()["error"].as_str().unwrap_or_default().to_string();
                assert!(error.contains("--publish-wait-timeout-ms"), "publisher {n}: {error}");
                assert!(done.len() < BATCH, "publisher {n}: a 503 left something unsequenced");
                assert!(ids[done.len()..].iter().all(|id| id.is_null()), "publisher {n}: {}", r.text());
                timed_out.push(n);
            }
            // A publisher on loop 0 is accepted only when the loop wakes, and may get through.
            202 => assert_eq!(done.len(), BATCH, "publisher {n}: {}", r.text()),
            other => panic!("publisher {n}: {other} {}", r.text()),
        }
        sequenced.extend(done);
    }
    assert!(!timed_out.is_empty(), "some publisher waited on loop 1 while loop 0 slept");
    let s = server.stats();
    assert_eq!(s.rejected_for(RejectReason::PublishTimeout), timed_out.len() as u64, "{s:#?}");
    assert!(s.publish_waits >= timed_out.len() as u64, "{s:#?}");

    // Every event that got an id is delivered, in id order (frames without an id, such as
    // the overload notices the slept loop causes, are skipped).
    sequenced.sort_unstable();
    let mut delivered = Vec::with_capacity(sequenced.len());
    while delivered.len() < sequenced.len() {
        let e =
            sub.next_event().unwrap_or_else(|e| panic!("after {} of {sequenced:?}: {e}", delivered.len()));
        if e.id.is_some() {
            delivered.push(e.id_u64());
        }
    }
    assert_eq!(delivered, sequenced, "the sequenced events, each once, in id order");

    // Once the loop is awake and its channel drained, the node serves as before: the timed
    // out connections publish again, a new stream gets a new event.
    server.wait_stats("loop 0 awake and drained", |s| {
        s.hub_queue_lengths.iter().all(|&n| n == 0) && s.parked_publishers == 0
    });
    for &n in &timed_out {
        let r = clients[n].publish("topic=wedged", Some("text/plain"), b"again");
        assert_eq!(r.status, 202, "publisher {n} after its 503: {}", r.text());
    }
    let mut late = SseClient::connect(server.addr, "/events?topic=after");
    server.wait_stats("late stream", |s| s.streams == 2);
    let id = publish(server.addr, "after", "still serving");
    // The slept loop may have put the node in overload mode: a stream opened during it is
    // told so first.
    let e = late.next_published().unwrap();
    assert_eq!((e.data.as_str(), e.id_u64()), ("still serving", id));
}

/// A client that reads slowly is the client's problem, not the loop's: its writable edges
/// (after it reads a little) must not pause the loop's intake for everyone.
#[test]
fn a_slow_reader_does_not_pause_the_intake() {
    use std::io::Read;
    const BIG: usize = 4096;
    let server = TestServer::start(Config {
        outbox_max_events: 16,
        send_buffer_bytes: 4096,
        threads: Some(1),
        ..Config::loopback()
    });
    let mut slow = SseClient::connect(server.addr, "/events?topic=slow");
    server.wait_stats("stream", |s| s.streams == 1);
    let payload = "x".repeat(BIG);
    let publisher = server.handle().publisher();
    // Fill the slow client's socket and outbox until frames are evicted.
    let mut n = 0;
    while server.stats().frames_evicted == 0 {
        assert!(n < 10_000, "nothing was evicted after {n} events: {:?}", server.stats());
        publisher.publish(&Message::new("slow", payload.clone())).unwrap();
        n += 1;
        if n % 64 == 0 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    // (Pauses so far are the loop's own: bursts bigger than the outbox arrived while the
    // client still kept up.) Now read a little at a time while events keep coming: every read
    // can bring a writable edge while the outbox is still full.
    let pauses_before = server.stats().intake_pauses;
    let mut buf = vec![0; 16 * 1024];
    slow.reader.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..40 {
        let got = slow.reader.get_mut().read(&mut buf).unwrap();
        assert!(got > 0, "the server closed the slow stream");
        for _ in 0..4 {
            publisher.publish(&Message::new("slow", payload.clone())).unwrap();
        }
        thread::sleep(Duration::from_millis(2));
    }
    let s = server.stats();
    assert!(s.frames_evicted > 0, "{s:?}");
    assert_eq!(s.intake_pauses, pauses_before, "a slow client paused the loop's intake: {s:?}");
    // And the node still serves others at once.
    let mut other = SseClient::connect(server.addr, "/events?topic=other");
    server.wait_stats("second stream", |s| s.streams == 2);
    let id = publish(server.addr, "other", "hello");
    let e = other.next_event().unwrap();
    assert_eq!((e.data.as_str(), e.id_u64()), ("hello", id));
}
