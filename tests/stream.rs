//! Streams over real sockets: byte-exact frames, fan-out across loops, id order,
//! multi-topic subscriptions, heartbeats and the stall timeout.

mod util;

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use sse_edge::{CloseReason, Config, Message};
use util::*;

#[test]
fn one_subscriber_receives_byte_exact_frames() {
    let server = TestServer::with_threads(2);
    let mut sub = SseClient::connect(server.addr, "/events?topic=jobs");
    assert_eq!(sub.head.header("cache-control"), Some("no-cache"));
    assert_eq!(sub.head.header("x-accel-buffering"), Some("no"));
    server.wait_stats("stream open", |s| s.streams == 1);

    let mut publisher = Client::connect(server.addr);
    let r = publisher.publish("topic=jobs&event=job.progress", Some("text/plain"), b"42%");
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_u64().unwrap();
    assert_eq!(
        sub.next_raw_frame().unwrap(),
        format!("id: {id}\ntopic: jobs\nevent: job.progress\ndata: 42%\n\n")
    );

    let r = publisher.publish("topic=jobs", None, b"a\r\nb\rc\nd");
    let id = r.json()["id"].as_u64().unwrap();
    assert_eq!(
        sub.next_raw_frame().unwrap(),
        format!("id: {id}\ntopic: jobs\ndata: a\ndata: b\ndata: c\ndata: d\n\n")
    );
}

#[test]
fn thousand_subscribers_on_two_loops_each_get_every_event_in_order() {
    const SUBS: usize = 1000;
    const EVENTS: usize = 20;
    let server = TestServer::with_threads(2);
    let mut subs: Vec<SseClient> =
        (0..SUBS).map(|_| SseClient::connect(server.addr, "/events?topic=fan")).collect();
    let stats = server.wait_stats("all streams open", |s| s.streams == SUBS as u64);
    assert!(stats.loop_streams.iter().all(|&n| n > 0), "both loops hold streams: {:?}", stats.loop_streams);

    let mut publisher = Client::connect(server.addr);
    let mut expected = Vec::new();
    for i in 0..EVENTS {
        let data = format!("event number {i}");
        let r = publisher.publish("topic=fan", None, data.as_bytes());
        let id = r.json()["id"].as_u64().unwrap();
        expected.push(format!("id: {id}\ntopic: fan\ndata: {data}\n\n"));
    }
    for (n, sub) in subs.iter_mut().enumerate() {
        for (i, want) in expected.iter().enumerate() {
            let got = sub.next_raw_frame().unwrap_or_else(|e| panic!("subscriber {n} event {i}: {e}"));
            assert_eq!(&got, want, "subscriber {n} event {i}");
        }
    }
    let s = server.stats();
    assert_eq!(s.deliveries, (SUBS * EVENTS) as u64);
    assert_eq!(s.frames_evicted, 0);
}

#[test]
fn multi_topic_stream_gets_both_topics_in_id_order_and_nothing_else() {
    let server = TestServer::with_threads(2);
    let mut both = SseClient::connect(server.addr, "/events?topic=a&topic=b");
    let mut only_a = SseClient::connect(server.addr, "/events?topic=a");
    server.wait_stats("streams", |s| s.streams == 2);
    let ids: Vec<(u64, &str)> =
        ["a", "b", "c", "a", "b"].iter().map(|t| (publish(server.addr, t, &format!("on {t}")), *t)).collect();
    let got: Vec<u64> = both.events(4).iter().map(SseEvent::id_u64).collect();
    let want: Vec<u64> = ids.iter().filter(|(_, t)| *t != "c").map(|(id, _)| *id).collect();
    assert_eq!(got, want);
    let got_a: Vec<(u64, String)> = only_a.events(2).into_iter().map(|e| (e.id_u64(), e.data)).collect();
    let want_a: Vec<(u64, String)> =
        ids.iter().filter(|(_, t)| *t == "a").map(|(id, _)| (*id, "on a".to_string())).collect();
    assert_eq!(got_a, want_a);
}

#[test]
fn ids_strictly_increase_for_every_subscriber_with_concurrent_publishers() {
    const PER_PUBLISHER: usize = 300;
    let server = TestServer::with_threads(2);
    let topics = ["t0", "t1", "t2", "t3"];
    let path = format!("/events?{}", topics.map(|t| format!("topic={t}")).join("&"));
    let mut subs: Vec<SseClient> = (0..40).map(|_| SseClient::connect(server.addr, &path)).collect();
    server.wait_stats("streams", |s| s.streams == 40);

    let addr = server.addr;
    let embedded = server.handle().publisher();
    let mut threads = Vec::new();
    for (i, topic) in topics.iter().enumerate() {
        let topic = topic.to_string();
        let embedded = embedded.clone();
        threads.push(thread::spawn(move || {
            let mut http = Client::connect(addr);
            for n in 0..PER_PUBLISHER {
                if i % 2 == 0 {
                    let r = http.publish(&format!("topic={topic}"), None, format!("{n}").as_bytes());
                    assert_eq!(r.status, 202);
                } else {
                    embedded.publish(&Message::new(topic.clone(), n.to_string())).unwrap();
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let total = PER_PUBLISHER * topics.len();
    for sub in &mut subs {
        let ids: Vec<u64> = sub.events(total).iter().map(SseEvent::id_u64).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not strictly increasing");
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), total);
    }
}

#[test]
fn heartbeat_reaches_an_idle_stream() {
    let server = TestServer::start(Config { heartbeat_ms: 50, threads: Some(1), ..Config::loopback() });
    let mut sub = SseClient::connect(server.addr, "/events?topic=quiet");
    assert_eq!(sub.next_raw_frame().unwrap(), ":\n\n");
    assert_eq!(sub.next_raw_frame().unwrap(), ":\n\n");
    assert!(server.stats().heartbeats >= 2);
    // Heartbeats never hide events.
    let id = publish(server.addr, "quiet", "x");
    assert_eq!(sub.next_event().unwrap().id_u64(), id);
}

#[test]
fn stall_timeout_closes_a_client_that_stopped_reading() {
    let server = TestServer::start(Config {
        stall_timeout_ms: 300,
        outbox_max_bytes: 256 * 1024,
        threads: Some(1),
        ..Config::loopback()
    });
    let mut stalled = SseClient::connect(server.addr, "/events?topic=big");
    let mut reader = SseClient::connect(server.addr, "/events?topic=big");
    server.wait_stats("streams", |s| s.streams == 2);
    let publisher = server.handle().publisher();
    let payload = "x".repeat(60 * 1024);
    // Enough to fill the stalled client's kernel buffers many times over.
    let reader_thread = thread::spawn(move || {
        reader.set_timeout(Duration::from_secs(10));
        let mut n = 0;
        while reader.next_event().is_ok() {
            n += 1;
        }
        n
    });
    for _ in 0..500 {
        publisher.publish(&Message::new("big", payload.clone())).unwrap();
        if server.stats().closed_for(CloseReason::Stalled) > 0 {
            break;
        }
        thread::sleep(Duration::from_millis(2));
    }
    let s = server.wait_stats("stalled client closed", |s| s.closed_for(CloseReason::Stalled) == 1);
    assert_eq!(s.streams, 1, "the reading client stays");
    // The stalled client sees the end of its stream once it drains what was sent.
    stalled.set_timeout(Duration::from_secs(10));
    while stalled.next_raw_frame().is_ok() {}
    drop(server);
    assert!(reader_thread.join().unwrap() > 0);
}

#[test]
fn a_burst_leaves_in_few_vectored_writes() {
    const EVENTS: usize = 2_000;
    let server =
        TestServer::start(Config { outbox_max_events: EVENTS, threads: Some(1), ..Config::loopback() });
    let mut sub = SseClient::connect(server.addr, "/events?topic=burst");
    // The stream head and prelude are two frames; the client can read them before the loop
    // has counted them, so wait for the count too.
    let before = server.wait_stats("stream", |s| s.streams == 1 && s.frames_written >= 2);
    let msgs: Vec<Message> = (0..EVENTS).map(|n| Message::new("burst", n.to_string())).collect();
    // Hold the loop while the burst is queued, so the test does not depend on how the OS
    // schedules the publishing thread against the loop: the whole burst is waiting when the
    // loop drains.
    assert!(server.handle().debug_block_loop(0, Duration::from_millis(300)));
    server.handle().publisher().publish_batch(&msgs).unwrap();
    let got: Vec<String> = sub.events(EVENTS).into_iter().map(|e| e.data).collect();
    assert_eq!(got, (0..EVENTS).map(|n| n.to_string()).collect::<Vec<_>>());
    let s = server.stats();
    let (frames, writes) = (s.frames_written - before.frames_written, s.writes - before.writes);
    assert_eq!(frames, EVENTS as u64);
    assert!(writes * 4 <= frames, "{frames} frames in {writes} writes: events were not batched");
}

/// Issue 12: every event frame names its topic, and non-reliable frames their class (and a
/// `latest` frame its key), between `id:` and `event:`/`data:`; an EventSource-style parser
/// ignores those fields and reads the same id, event and data; the polling JSON names the topic.
#[test]
fn frames_name_topic_class_and_key_and_eventsource_parsers_ignore_them() {
    let server = TestServer::start(Config { latest_min_interval_ms: 0, ..Config::loopback() });
    let mut sub = SseClient::connect(server.addr, "/events?topic=jobs&topic=logs");
    server.wait_stats("stream open", |s| s.streams == 1);
    let mut publisher = Client::connect(server.addr);
    let mut publish = |query: &str, body: &str| {
        let r = publisher.publish(query, Some("text/plain"), body.as_bytes());
        assert_eq!(r.status, 202, "{query}: {}", r.text());
        r.json()["id"].as_u64().expect("id")
    };
    let reliable = publish("topic=jobs&event=job.done", "ok");
    let latest = publish("topic=logs&class=latest&key=job-1", "50%");
    let droppable = publish("topic=logs&class=droppable", "tick");
    let expected = [
        (format!("id: {reliable}\ntopic: jobs\nevent: job.done\ndata: ok\n\n"), Some("job.done"), "ok"),
        (format!("id: {latest}\ntopic: logs\nclass: latest\nkey: job-1\ndata: 50%\n\n"), None, "50%"),
        (format!("id: {droppable}\ntopic: logs\nclass: droppable\ndata: tick\n\n"), None, "tick"),
    ];
    for (i, (want, event, data)) in expected.iter().enumerate() {
        let raw = sub.next_raw_frame().unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!(&raw, want, "frame {i}");
        let e = parse_frame(&raw).expect("an event");
        assert_eq!(
            (e.event.as_deref(), e.data.as_str()),
            (*event, *data),
            "frame {i} as EventSource reads it"
        );
    }
    let r = http_get(server.addr, "/topics/logs/events?after=0");
    assert_eq!(r.status, 200, "{}", r.text());
    let events = r.json();
    assert_eq!(events[0]["topic"], "logs");
    assert_eq!(events[0]["key"], "job-1");
    assert_eq!(events[1]["topic"], "logs");
    assert_eq!(events[1]["class"], "droppable");
    // A key that would split the frame is refused, and the node keeps serving.
    let r = Client::connect(server.addr).publish("topic=logs&key=a%0Ab", Some("text/plain"), b"x");
    assert_eq!(r.status, 400, "{}", r.text());
    let id = publish("topic=jobs", "after");
    assert_eq!(sub.next_raw_frame().unwrap(), format!("id: {id}\ntopic: jobs\ndata: after\n\n"));
}
