//! "A client never loses a reliable event without being told", over real sockets: resume
//! across a restart and after history forgot a topic, a replaying stream that must not
//! slow publishers, and the overload notice for a stream opened during overload.

mod util;

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

/// A stream on `path` resuming after `last` through the `Last-Event-ID` header.
fn resume(addr: std::net::SocketAddr, path: &str, last: u64) -> SseClient {
    match SseClient::try_open(Client::connect(addr), path, &format!("Last-Event-ID: {last}\r\n")) {
        Ok(Ok(s)) => s,
        other => panic!("resume {path} after {last}: {other:?}"),
    }
}

fn gap_headers(r: &Response) -> Option<(u64, u64)> {
    let num = |h| r.header(h).map(|v: &str| v.parse::<u64>().expect("numeric gap header"));
    Some((num("x-gap-from")?, num("x-gap-to")?))
}

/// Ids of the JSON array a polling answer holds.
fn polled_ids(r: &Response) -> Vec<u64> {
    r.json().as_array().expect("array").iter().map(|e| e["id"].as_u64().expect("id")).collect()
}

#[test]
fn resume_across_a_restart_reports_what_the_new_process_never_had() {
    let first = TestServer::with_threads(1);
    let old: Vec<u64> = (1..=3).map(|n| publish(first.addr, "T", &format!("e{n}"))).collect();
    drop(first);

    let second = TestServer::with_threads(2);
    let new = publish(second.addr, "T", "after the restart");
    assert!(new > old[2], "ids keep rising across a restart ({new} after {old:?})");
    let mut sub = resume(second.addr, "/events?topic=T", old[0]);
    let gap = sub.next_event().expect("gap notice");
    let (from, to) = gap_range(&gap).unwrap_or_else(|| panic!("a gap notice first, got {gap:?}"));
    assert_eq!(from, old[0] + 1, "the gap starts right after the resume point");
    assert!(to >= old[2] && to < new, "e2 and e3 ({old:?}) fall inside {from}..={to}; {new} does not");
    let e = sub.next_event().expect("the new event");
    assert_eq!((e.id_u64(), e.data.as_str()), (new, "after the restart"));

    // The polling endpoint tells the same loss.
    let r = http_get(second.addr, &format!("/topics/T/events?after={}", old[0]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gap_headers(&r), Some((from, to)), "{:?}", r.headers);
    assert_eq!(polled_ids(&r), [new]);
    // A topic nobody published to since the restart: nothing to return, but not "nothing lost".
    let r = http_get(second.addr, &format!("/topics/quiet/events?after={}", old[0]));
    assert_eq!((r.status, gap_headers(&r)), (200, Some((from, to))), "{}", r.text());
    assert_eq!(polled_ids(&r), Vec::<u64>::new());
    // From the newest id there is nothing to report.
    let mut sub = resume(second.addr, "/events?topic=T", new);
    let id = publish(second.addr, "T", "live");
    let e = sub.next_event().expect("live event");
    assert_eq!((e.id_u64(), gap_range(&e)), (id, None), "{e:?}");
}

#[test]
fn a_topic_forgotten_by_history_and_published_again_reports_what_it_forgot() {
    let server = TestServer::start(Config { threads: Some(2), history_max_topics: 1, ..Config::loopback() });
    let addr = server.addr;
    let a: Vec<u64> = (1..=3).map(|n| publish(addr, "a", &format!("a{n}"))).collect();
    publish(addr, "b", "pushes topic a out of history");
    let again = publish(addr, "a", "a4");

    let mut sub = resume(addr, "/events?topic=a", a[0]);
    let gap = sub.next_event().expect("gap notice");
    let (from, to) = gap_range(&gap).unwrap_or_else(|| panic!("a gap notice first, got {gap:?}"));
    assert_eq!(from, a[0] + 1);
    assert!(to >= a[2] && to < again, "a2, a3 ({a:?}) are inside {from}..={to}");
    let e = sub.next_event().expect("a4");
    assert_eq!((e.id_u64(), e.data.as_str()), (again, "a4"));

    let r = http_get(addr, &format!("/topics/a/events?after={}", a[0]));
    assert_eq!((r.status, gap_headers(&r)), (200, Some((from, to))), "{}", r.text());
    assert_eq!(polled_ids(&r), [again]);
}

#[test]
fn with_history_off_a_resume_is_told_of_everything_it_missed() {
    let server = TestServer::start(Config { threads: Some(2), history_max_events: 0, ..Config::loopback() });
    let addr = server.addr;
    let ids: Vec<u64> = (1..=3).map(|n| publish(addr, "h", &format!("e{n}"))).collect();
    let mut sub = resume(addr, "/events?topic=h", ids[0]);
    let gap = sub.next_event().expect("gap notice");
    assert_eq!(gap_range(&gap), Some((ids[0] + 1, ids[2])), "{gap:?}");
    let live = publish(addr, "h", "live");
    let e = sub.next_event().expect("live");
    assert_eq!((e.id_u64(), gap_range(&e)), (live, None));
    let r = http_get(addr, &format!("/topics/h/events?after={}", ids[0]));
    assert_eq!((r.status, gap_headers(&r)), (200, Some((ids[0] + 1, live))), "{}", r.text());
}

/// A reconnect storm is many of these: a stream whose `Last-Event-ID` replay fills more than
/// half its outbox, with a publish fanned out to it before its first write. That is the
/// client's backlog, not the loop falling behind: the loop must not pause its intake (which
/// parks every publisher of the node until it has written a whole pass).
#[test]
fn a_replaying_new_stream_does_not_pause_the_intake() {
    const RETAINED: usize = 700; // over half of the default 1,024-frame outbox
    let server = TestServer::start(Config {
        threads: Some(1),
        history_max_events: 1_000,
        outbox_max_events: 1_024,
        ..Config::loopback()
    });
    let addr = server.addr;
    let publisher = server.handle().publisher();
    let ids: Vec<u64> = (0..RETAINED)
        .map(|n| publisher.publish(&Message::new("big", format!("r{n}"))).unwrap().unwrap())
        .collect();
    let mut sub_conn = Client::connect(addr);
    let mut pub_conn = Client::connect(addr);
    server.wait_stats("both connections accepted", |s| s.connections == 2);
    let pauses_before = server.stats().intake_pauses;

    // While the loop sleeps, the resume request and then a publish arrive: the next
    // iteration starts the stream (its replay) and fans the publish out to it before any
    // write, exactly as in a storm of reconnects with publishers active.
    // The loop sleeps 1 s; both requests are sent within its first 100 ms, so they wait for
    // the same iteration even on a loaded machine.
    assert!(server.handle().debug_block_loop(0, Duration::from_secs(1)));
    std::thread::sleep(Duration::from_millis(50));
    sub_conn.send(
        format!(
            "GET /events?topic=big HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: {}\r\n\r\n",
            ids[0] - 1
        )
        .as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(50));
    pub_conn.send(&publish_request("topic=big", Some("text/plain"), b"live"));

    let r = pub_conn.read_response();
    assert_eq!(r.status, 202, "{}", r.text());
    let live = r.json()["id"].as_u64().expect("id");
    let head = sub_conn.read_response();
    assert_eq!(head.status, 200);
    let mut sub = SseClient { reader: sub_conn.reader, head };
    sub.next_raw_frame().expect("prelude");
    let got: Vec<u64> = sub.events(RETAINED + 1).iter().map(SseEvent::id_u64).collect();
    let mut want = ids.clone();
    want.push(live);
    assert_eq!(got, want, "the whole replay, then the live event, id by id, no gap");
    let s = server.stats();
    assert_eq!(s.intake_pauses, pauses_before, "a replay paused the intake for every publisher: {s:?}");
}

/// Streams open when overload mode begins are told; one opened while it lasts must be told
/// too, right after its prelude, or its widget never falls back to polling.
#[test]
fn a_stream_opened_during_overload_is_told_at_once() {
    let server = TestServer::start(Config {
        threads: Some(1),
        overload_lag_ms: 200,
        status_interval_ms: 100,
        ..Config::loopback()
    });
    let addr = server.addr;
    let mut before = SseClient::connect(addr, "/events?topic=x");
    server.wait_stats("stream", |s| s.streams == 1);
    assert!(server.handle().debug_block_loop(0, Duration::from_millis(800)));
    let e = before.next_event().expect("system.overloaded");
    assert_eq!(e.event.as_deref(), Some("system.overloaded"), "{e:?}");
    assert!(server.stats().overloaded, "overload mode holds for a while after the lag");

    let mut during = match SseClient::try_open(Client::connect(addr), "/events?topic=x", "") {
        Ok(Ok(s)) => s,
        other => panic!("stream during overload: {other:?}"),
    };
    let frame = during.next_raw_frame().expect("the frame after the prelude");
    let e = parse_frame(&frame).unwrap_or_else(|| panic!("an event right after the prelude, got {frame:?}"));
    assert_eq!(e.event.as_deref(), Some("system.overloaded"), "{frame:?}");
    assert_eq!(e.id, None, "a notice moves no Last-Event-ID");
    // It recovers like every other stream.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let e = during.next_event().expect("system.recovered");
        if e.event.as_deref() == Some("system.recovered") {
            break;
        }
        assert!(Instant::now() < deadline, "no system.recovered");
    }
}
