//! Delivery semantics over real sockets: Last-Event-ID resume (with a concurrent
//! publisher), gaps beyond history, conflation, the latest throttle, class eviction order
//! with gap reports, and the polling endpoints.

mod util;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sse_edge::{Config, Message};
use util::*;

fn gap_range(e: &SseEvent) -> Option<(u64, u64)> {
    if e.event.as_deref() != Some("gap") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&e.data).expect("gap data is JSON");
    Some((v["from"].as_u64().expect("from"), v["to"].as_u64().expect("to")))
}

#[test]
fn resume_with_a_concurrent_publisher_loses_and_repeats_nothing() {
    const EVENTS: usize = 3_000;
    let server = TestServer::start(Config {
        threads: Some(2),
        history_max_events: 10_000,
        outbox_max_events: 10_000,
        ..Config::loopback()
    });
    let mut first = SseClient::connect(server.addr, "/events?topic=r");
    server.wait_stats("stream", |s| s.streams == 1);
    let publisher = server.handle().publisher();
    let published = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (published, done) = (published.clone(), done.clone());
        thread::spawn(move || {
            for n in 0..EVENTS {
                let id = publisher.publish(&Message::new("r", n.to_string())).unwrap().unwrap();
                published.lock().unwrap().push(id);
                if n % 50 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            done.store(true, Ordering::Release);
        })
    };
    // Read a third, hang up mid-stream, reconnect from the last id seen, read the rest.
    let mut seen: Vec<u64> = first.events(EVENTS / 3).iter().map(SseEvent::id_u64).collect();
    drop(first);
    let last = *seen.last().unwrap();
    let mut c = Client::connect(server.addr);
    let head = c.request(format!("GET /events?topic=r HTTP/1.1\r\nLast-Event-ID: {last}\r\n\r\n").as_bytes());
    assert_eq!(head.status, 200);
    let mut second = SseClient { reader: c.reader, head };
    second.next_raw_frame().unwrap(); // prelude
    sender.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    let published = published.lock().unwrap().clone();
    let final_id = *published.last().unwrap();
    while *seen.last().unwrap() != final_id {
        let e = second.next_event().unwrap();
        assert_eq!(gap_range(&e), None, "no gap: history holds everything");
        seen.push(e.id_u64());
    }
    assert_eq!(seen, published, "the union of both streams is exactly the published sequence");
}

#[test]
fn resume_from_before_history_gets_the_gap_then_the_retained_tail() {
    let server = TestServer::start(Config { threads: Some(2), history_max_events: 5, ..Config::loopback() });
    let ids: Vec<u64> = (0..20).map(|n| publish(server.addr, "h", &format!("e{n}"))).collect();
    // Through the query, as EventSource offers no header on the first connect.
    let mut sub = SseClient::connect(server.addr, &format!("/events?topic=h&lastEventId={}", ids[2]));
    let gap = sub.next_event().unwrap();
    assert_eq!(gap_range(&gap), Some((ids[2] + 1, ids[14])));
    assert_eq!(gap.id, None, "a gap notice carries no id");
    let tail: Vec<(u64, String)> = sub.events(5).into_iter().map(|e| (e.id_u64(), e.data)).collect();
    let want: Vec<(u64, String)> = (15..20).map(|n| (ids[n], format!("e{n}"))).collect();
    assert_eq!(tail, want);
    // A resume inside history gets no gap; a malformed id gets 400.
    let mut sub = SseClient::connect(server.addr, &format!("/events?topic=h&lastEventId={}", ids[16]));
    assert_eq!(sub.next_event().unwrap().id_u64(), ids[17]);
    let r =
        Client::connect(server.addr).request(b"GET /events?topic=h HTTP/1.1\r\nLast-Event-ID: abc\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(server.stats().gaps_reported >= 1);
}

/// Publishes 64 KiB droppable filler on `topic` until the subscriber's socket is blocked
/// and frames wait in its outbox.
fn fill_until_blocked(server: &TestServer, topic: &str) {
    let publisher = server.handle().publisher();
    let filler = "f".repeat(64 * 1024);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        publisher.publish(&Message::new(topic, filler.clone()).droppable()).unwrap();
        let s = server.stats();
        if s.write_blocked >= 1 && s.outbox_queued_bytes > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "socket never blocked: {s:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn fast_ticks() -> Config {
    // Gauges (write_blocked, outbox bytes) refresh on the timer tick: heartbeat / 4.
    // A fixed kernel send buffer: once a non-reading client's socket is full it stays full.
    // With only the default low-water mark, the client's receive window (autotuned) can
    // open again for a moment and take one more frame, which these tests count exactly.
    Config {
        threads: Some(1),
        heartbeat_ms: 100,
        stall_timeout_ms: 60_000,
        send_buffer_bytes: 65_536,
        notsent_lowat_bytes: 0,
        ..Config::loopback()
    }
}

#[test]
fn queued_latest_values_conflate_to_the_newest() {
    let server = TestServer::start(Config {
        latest_min_interval_ms: 0,
        outbox_max_bytes: 16 << 20,
        outbox_max_events: 4096,
        ..fast_ticks()
    });
    let mut sub = SseClient::connect(server.addr, "/events?topic=fill&topic=job");
    server.wait_stats("stream", |s| s.streams == 1);
    fill_until_blocked(&server, "fill");
    let publisher = server.handle().publisher();
    let before = server.stats();
    for n in 0..1000 {
        publisher
            .publish(&Message::new("job", format!("progress {n}")).event("job.progress").latest("job-42"))
            .unwrap();
    }
    // Everything drained from the hub (a filler published just before `before` may still be in
    // flight and count among the deliveries).
    let s = server.wait_stats("all queued", |s| {
        s.deliveries - before.deliveries >= 1000 && s.hub_queue_lengths.iter().all(|&n| n == 0)
    });
    assert_eq!(s.conflated - before.conflated, 999, "one queued entry for the key: {s:?}");
    // Reading now: filler, then exactly the newest value.
    sub.set_timeout(Duration::from_secs(10));
    let mut progress = Vec::new();
    let marker = publish(server.addr, "job", "end");
    loop {
        let e = sub.next_event().unwrap();
        if e.id_u64() == marker {
            break;
        }
        if e.event.as_deref() == Some("job.progress") {
            progress.push(e.data);
        }
    }
    assert_eq!(progress, vec!["progress 999".to_string()]);
}

#[test]
fn throttle_sends_a_handful_and_always_the_final_value() {
    let server =
        TestServer::start(Config { threads: Some(2), latest_min_interval_ms: 50, ..Config::loopback() });
    let mut sub = SseClient::connect(server.addr, "/events?topic=job");
    server.wait_stats("stream", |s| s.streams == 1);
    let mut c = Client::connect(server.addr);
    let start = Instant::now();
    let mut held = 0;
    for n in 0..1000 {
        let r = c.publish("topic=job&class=latest&key=job-7", None, format!("{n}").as_bytes());
        assert_eq!(r.status, 202);
        held += usize::from(r.json()["id"].is_null());
        if n % 10 == 9 {
            // Spread the burst over roughly 100 ms.
            let due = start + Duration::from_micros(100 * (n as u64 + 1));
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    let mut values = Vec::new();
    while values.last().map(String::as_str) != Some("999") {
        values.push(sub.next_event().unwrap().data);
    }
    assert!(values.len() <= 12, "a handful, not 1,000: {} values", values.len());
    assert!(held >= 1000 - 12, "the throttle answered null ids: {held}");
    let numbers: Vec<u32> = values.iter().map(|v| v.parse().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "never an older value after a newer one: {numbers:?}");
    assert!(server.stats().throttled > 900);
}

#[test]
fn full_outbox_evicts_droppable_then_latest_then_reliable_and_reports_each_gap() {
    let server = TestServer::start(Config {
        latest_min_interval_ms: 0,
        outbox_max_events: 6,
        outbox_max_bytes: 16 << 20,
        ..fast_ticks()
    });
    let mut sub = SseClient::connect(server.addr, "/events?topic=fill&topic=t");
    server.wait_stats("stream", |s| s.streams == 1);
    fill_until_blocked(&server, "fill");
    let before = server.stats();
    let publisher = server.handle().publisher();
    let mut reliable = Vec::new();
    let mut cheap = Vec::new();
    for (i, m) in [
        Message::new("t", "r0"),
        Message::new("t", "l0").latest("k"),
        Message::new("t", "d0").droppable(),
        Message::new("t", "r1"),
        Message::new("t", "r2"),
        Message::new("t", "r3"),
        Message::new("t", "r4"),
        Message::new("t", "r5"),
        Message::new("t", "r6"),
        Message::new("t", "r7"),
    ]
    .into_iter()
    .enumerate()
    {
        let reliable_one = m.class == sse_edge::Class::Reliable;
        let id = publisher.publish(&m).unwrap().unwrap();
        if reliable_one {
            reliable.push((id, i));
        } else {
            cheap.push(id);
        }
    }
    let s = server.wait_stats("all queued", |s| s.deliveries - before.deliveries >= 10);
    let evicted: Vec<u64> = (0..3).map(|c| s.evicted_by_class[c] - before.evicted_by_class[c]).collect();
    assert!(evicted[2] >= 1, "droppables (filler, d0) went first: {evicted:?}");
    assert_eq!(evicted[1], 1, "then the latest value");
    assert!(evicted[0] >= 2, "then the oldest reliable ones: {evicted:?}");

    // Read everything: every reliable event arrives or is covered by a gap notice that
    // comes before any newer event; the cheap ones are gone.
    sub.set_timeout(Duration::from_secs(10));
    let marker = publish(server.addr, "t", "end");
    let (mut ids, mut gaps, mut order) = (BTreeSet::new(), Vec::new(), Vec::new());
    loop {
        let e = sub.next_event().unwrap();
        if let Some(g) = gap_range(&e) {
            gaps.push(g);
            order.push(None);
            continue;
        }
        if e.id_u64() == marker {
            break;
        }
        ids.insert(e.id_u64());
        order.push(Some(e.id_u64()));
    }
    for id in &cheap {
        assert!(!ids.contains(id), "cheap event {id} should have been evicted");
    }
    for (id, i) in &reliable {
        if ids.contains(id) {
            continue;
        }
        let g = gaps.iter().position(|&(f, t)| f <= *id && *id <= t);
        assert!(g.is_some(), "reliable #{i} ({id}) lost without a gap notice; gaps {gaps:?}");
    }
    let first_gap = order.iter().position(Option::is_none).expect("a gap notice arrived");
    let lost_max = gaps.iter().map(|g| g.1).max().unwrap();
    assert!(
        order[..first_gap].iter().flatten().all(|id| *id < lost_max),
        "nothing newer than the loss arrived before the notice: {order:?}"
    );
    assert_eq!(server.stats().gaps_reported - before.gaps_reported, gaps.len() as u64);
}

#[test]
fn polling_endpoints_serve_history_as_json() {
    let server = TestServer::start(Config { threads: Some(2), history_max_events: 3, ..Config::loopback() });
    let mut c = Client::connect(server.addr);
    let r = c.request(b"GET /topics/p/latest HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 404, "no such topic yet");
    let r = c.request(b"GET /topics/p/events?after=0 HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 404);

    let mut ids = Vec::new();
    for n in 0..5 {
        let body = format!(r#"{{"topic":"p","event":"job.log","data":{{"line":{n}}}}}"#);
        let r = c.publish("", Some("application/json"), body.as_bytes());
        ids.push(r.json()["id"].as_u64().unwrap());
    }
    let r = c.publish("topic=p&class=latest&key=j1", None, b"50%\nhalf");
    let latest_id = r.json()["id"].as_u64().unwrap();

    let r = c.request(b"GET /topics/p/latest HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({"id": latest_id, "topic": "p", "event": null, "data": "50%\nhalf", "class": "latest", "key": "j1"})
    );
    // Only 3 retained: ids[3], ids[4], latest. From ids[3]: one event, nothing dropped after it.
    let r = c.request(format!("GET /topics/p/events?after={} HTTP/1.1\r\n\r\n", ids[3]).as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-gap-from"), None);
    let got = r.json();
    assert_eq!(got.as_array().unwrap().len(), 2);
    assert_eq!(
        got[0],
        serde_json::json!({"id": ids[4], "topic": "p", "event": "job.log", "data": "{\"line\":4}", "class": "reliable"})
    );
    // From before what is retained: the lost range is named, the retained tail follows.
    let r = c.request(format!("GET /topics/p/events?after={}&limit=2 HTTP/1.1\r\n\r\n", ids[0]).as_bytes());
    assert_eq!(r.header("x-gap-from"), Some(ids[1].to_string().as_str()));
    assert_eq!(r.header("x-gap-to"), Some(ids[2].to_string().as_str()));
    let got: Vec<u64> = r.json().as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(got, vec![ids[3], ids[4]]);
    // Past the newest id: an empty array.
    let r = c.request(format!("GET /topics/p/events?after={} HTTP/1.1\r\n\r\n", latest_id + 100).as_bytes());
    assert_eq!((r.status, r.json()), (200, serde_json::json!([])));
    // Bad parameters are 400 and keep the connection.
    assert_eq!(c.request(b"GET /topics/p/events?after=x HTTP/1.1\r\n\r\n").status, 400);
    assert_eq!(c.request(b"GET /topics/p/events?limit=5000 HTTP/1.1\r\n\r\n").status, 400);
    assert_eq!(c.request(b"GET /topics/p/latest HTTP/1.1\r\n\r\n").status, 200);
}

#[test]
fn class_counters_follow_what_was_published() {
    let server =
        TestServer::start(Config { threads: Some(2), latest_min_interval_ms: 0, ..Config::loopback() });
    let mut c = Client::connect(server.addr);
    c.publish("topic=a", None, b"r");
    c.publish("topic=a&class=droppable", None, b"d");
    c.publish("topic=a&class=latest&key=k", None, b"l");
    let body =
        "{\"topic\":\"a\",\"data\":1,\"class\":\"droppable\"}\n{\"topic\":\"a\",\"data\":2,\"key\":\"k\"}\n";
    let r = c.publish("", Some("application/x-ndjson"), body.as_bytes());
    assert_eq!(r.status, 202);
    assert_eq!(server.stats().published_by_class, [1, 2, 2]);
    assert_eq!(c.publish("topic=a&class=latest", None, b"no key").status, 400);
}

/// Issue 12: a browser client on another origin fills gaps from `X-Gap-From`/`X-Gap-To` and
/// pages with `X-Next-After`; a cross-origin `fetch` can read those only when they are exposed.
#[test]
fn polling_answers_expose_their_gap_and_paging_headers_to_cross_origin_clients() {
    const APP: &str = "https://app.example";
    let server = TestServer::start(Config {
        cors_origin: vec![APP.into()],
        history_max_events: 2,
        ..Config::loopback()
    });
    let ids: Vec<u64> = (0..4).map(|n| publish(server.addr, "x", &format!("e{n}"))).collect();
    let raw = format!("GET /topics/x/events?after={}&limit=1 HTTP/1.1\r\nOrigin: {APP}\r\n\r\n", ids[0]);
    let r = Client::connect(server.addr).request(raw.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-expose-headers"), Some("X-Gap-From, X-Gap-To, X-Next-After"));
    assert_eq!(r.header("x-gap-from"), Some(ids[1].to_string().as_str()));
    assert_eq!(r.header("x-next-after"), Some(ids[2].to_string().as_str()));
}
