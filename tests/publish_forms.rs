//! The publish forms (raw body, JSON envelope, NDJSON batch) and the ways a request may
//! arrive (pipelined, dribbled, with `Expect: 100-continue`), checked byte-exact on a real
//! event stream.

mod util;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

use sse_edge::Config;
use util::*;

fn config() -> Config {
    Config { threads: Some(2), ..Config::loopback() }
}

/// The exact frame for a reliable event on `topic` (frames name their topic since issue 12).
fn frame(topic: &str, id: u64, event: Option<&str>, lines: &[&str]) -> String {
    let mut f = format!("id: {id}\ntopic: {topic}\n");
    if let Some(e) = event {
        f.push_str(&format!("event: {e}\n"));
    }
    for l in lines {
        f.push_str(&format!("data: {l}\n"));
    }
    f.push('\n');
    f
}

/// The id of a 202 single-event answer.
fn accepted_id(r: &Response, what: &str) -> u64 {
    assert_eq!(r.status, 202, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let body = r.json();
    let obj = body.as_object().unwrap_or_else(|| panic!("{what}: {}", r.text()));
    assert_eq!(obj.len(), 1, "{what}: only an id: {}", r.text());
    body["id"].as_u64().unwrap_or_else(|| panic!("{what}: {}", r.text()))
}

/// The ids of a 202 batch answer.
fn accepted_ids(r: &Response, what: &str) -> Vec<u64> {
    assert_eq!(r.status, 202, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let body = r.json();
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{what}: only ids: {}", r.text());
    let ids = body["ids"].as_array().unwrap_or_else(|| panic!("{what}: {}", r.text()));
    ids.iter().map(|v| v.as_u64().expect("numeric id")).collect()
}

fn assert_increasing(ids: &[u64], what: &str) {
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{what}: ids not strictly increasing: {ids:?}");
}

/// Reads `expected.len()` frames and compares them one by one.
fn expect_frames(sub: &mut SseClient, expected: &[String]) {
    for (i, want) in expected.iter().enumerate() {
        let got = sub.next_raw_frame().unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!(&got, want, "frame {i}");
    }
}

/// Publishes a marker on `topic` and checks it is `sub`'s next frame: nothing else was
/// delivered before it.
fn expect_nothing_before_marker(addr: SocketAddr, sub: &mut SseClient, topic: &str, what: &str) {
    let marker = format!("marker after {what}");
    let id = publish(addr, topic, &marker);
    let got = sub.next_raw_frame().expect("marker frame");
    assert_eq!(got, frame(topic, id, None, &[&marker]), "next frame after {what}");
}

fn raw_post(query: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST /publish?{query} HTTP/1.1\r\nHost: test\r\n{extra_headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// (query, content type, body, expected event name, expected data lines)
type RawCase<'a> = (&'a str, Option<&'a str>, &'a str, Option<&'a str>, &'a [&'a str]);
/// (query, content type, body, expected event name, expected data lines)
type JsonCase<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, &'a [&'a str]);

#[test]
fn raw_body_is_the_data_and_every_line_break_splits_it() {
    let server = TestServer::start(config());
    let mut sub = SseClient::connect(server.addr, "/events?topic=raw");
    let cases: &[RawCase] = &[
        ("topic=raw", Some("text/plain"), "hello", None, &["hello"]),
        (
            "topic=raw&event=greeting",
            Some("text/plain"),
            "one\r\ntwo\rthree\nfour",
            Some("greeting"),
            &["one", "two", "three", "four"],
        ),
        ("topic=raw", Some("text/plain"), "", None, &[""]),
        ("topic=raw", Some("text/plain"), "trailing\n", None, &["trailing", ""]),
        ("topic=raw", Some("text/plain"), "\r\n\r\n", None, &["", "", ""]),
        ("topic=raw", Some("text/plain"), "a\n\rb", None, &["a", "", "b"]),
        ("topic=raw", Some("text/plain"), "a\r\r\nb", None, &["a", "", "b"]),
        ("topic=raw", Some("text/plain"), " leading space", None, &[" leading space"]),
        (
            "topic=raw",
            Some("text/plain"),
            "data: not a field\n\nid: 0",
            None,
            &["data: not a field", "", "id: 0"],
        ),
        ("topic=raw", Some("text/plain; charset=utf-8"), "héllo ✓", None, &["héllo ✓"]),
        ("topic=raw", None, "no content type", None, &["no content type"]),
        ("topic=raw", Some("application/octet-stream"), "{\"not\":\"json\"}", None, &["{\"not\":\"json\"}"]),
        ("topic=raw&event=a%20b%3Ac", None, "x", Some("a b:c"), &["x"]),
        ("topic=raw&event=a+b", None, "x", Some("a b"), &["x"]),
        ("to%70ic=raw&unknown=1", None, "encoded key", None, &["encoded key"]),
        ("topic=other&topic=raw", None, "last topic wins", None, &["last topic wins"]),
    ];
    let mut publisher = Client::connect(server.addr);
    let mut ids = Vec::new();
    let mut expected = Vec::new();
    for (query, ct, body, event, lines) in cases {
        let r = publisher.publish(query, *ct, body.as_bytes());
        assert_eq!(r.header("connection"), Some("keep-alive"));
        let id = accepted_id(&r, &format!("{query} {body:?}"));
        ids.push(id);
        expected.push(frame("raw", id, *event, lines));
    }
    assert_increasing(&ids, "sequential raw publishes");
    expect_frames(&mut sub, &expected);
    expect_nothing_before_marker(server.addr, &mut sub, "raw", "raw publishes");
}

#[test]
fn subscriptions_to_several_topics_get_each_event_once_in_id_order() {
    let server = TestServer::start(config());
    let mut sub =
        SseClient::connect(server.addr, "/events?topic=a&topic=b&topic=a&topic=job.42%3Ax%40eu-1_y");
    let mut expected = Vec::new();
    for (topic, data) in
        [("a", "1"), ("b", "2"), ("c", "not subscribed"), ("a", "3"), ("job.42:x@eu-1_y", "4")]
    {
        let query = format!("topic={}", topic.replace(':', "%3A"));
        let r = Client::connect(server.addr).publish(&query, None, data.as_bytes());
        let id = accepted_id(&r, topic);
        if topic != "c" {
            expected.push(frame(topic, id, None, &[data]));
        }
    }
    expect_frames(&mut sub, &expected);
    expect_nothing_before_marker(server.addr, &mut sub, "b", "multi-topic publishes");
}

#[test]
fn json_envelopes_send_strings_raw_and_other_values_as_compact_json() {
    let server = TestServer::start(config());
    let mut sub = SseClient::connect(server.addr, "/events?topic=json");
    let cases: &[JsonCase] = &[
        (
            "",
            "application/json",
            r#"{"topic":"json","event":"e1","data":"plain string"}"#,
            Some("e1"),
            &["plain string"],
        ),
        ("", "application/json", r#"{"topic":"json","data":{ "x" : 1 }}"#, None, &[r#"{"x":1}"#]),
        ("", "application/json", r#"{"topic":"json","data":[1, 2 , "three"]}"#, None, &[r#"[1,2,"three"]"#]),
        (
            "",
            "application/json",
            r#"{"topic":"json","data":{"a":{"b":[null, false]}}}"#,
            None,
            &[r#"{"a":{"b":[null,false]}}"#],
        ),
        ("", "application/json", r#"{"topic":"json","data":42}"#, None, &["42"]),
        ("", "application/json", r#"{"topic":"json","data":-1.5}"#, None, &["-1.5"]),
        ("", "application/json", r#"{"topic":"json","data":true}"#, None, &["true"]),
        ("", "application/json", r#"{"topic":"json","data":null}"#, None, &["null"]),
        ("", "application/json", r#"{"topic":"json","data":"{\"quoted\":1}"}"#, None, &[r#"{"quoted":1}"#]),
        (
            "",
            "application/json",
            r#"{"topic":"json","data":"l1\nl2\r\nl3\rl4"}"#,
            None,
            &["l1", "l2", "l3", "l4"],
        ),
        ("", "application/json", r#"{"topic":"json","data":"caf\u00e9 \ud83d\ude00"}"#, None, &["café 😀"]),
        ("", "application/json", r#"{"topic":"json","data":""}"#, None, &[""]),
        ("", "application/json", r#"{"topic":"json","data":{"s":"a\nb"}}"#, None, &[r#"{"s":"a\nb"}"#]),
        ("", "application/json", "  {\"topic\":\"json\",\"data\":\"ws\"}\r\n", None, &["ws"]),
        ("", "application/json", r#"{"topic":"json","data":"x","extra":{"ignored":true}}"#, None, &["x"]),
        // The query supplies defaults ...
        ("topic=json&event=dflt", "application/json", r#"{"data":"defaults"}"#, Some("dflt"), &["defaults"]),
        (
            "topic=json&event=dflt",
            "application/json",
            r#"{"event":null,"topic":null,"data":"nulls"}"#,
            Some("dflt"),
            &["nulls"],
        ),
        // ... which the envelope overrides.
        (
            "topic=elsewhere&event=q",
            "application/json",
            r#"{"topic":"json","event":"env","data":"o"}"#,
            Some("env"),
            &["o"],
        ),
        ("", "application/json; charset=utf-8", r#"{"topic":"json","data":"charset"}"#, None, &["charset"]),
        ("", "Application/JSON", r#"{"topic":"json","data":"case"}"#, None, &["case"]),
    ];
    let mut publisher = Client::connect(server.addr);
    let mut ids = Vec::new();
    let mut expected = Vec::new();
    for (query, ct, body, event, lines) in cases {
        let r = publisher.publish(query, Some(ct), body.as_bytes());
        let id = accepted_id(&r, body);
        ids.push(id);
        expected.push(frame("json", id, *event, lines));
    }
    assert_increasing(&ids, "JSON publishes");
    // An envelope that names another topic does not reach this stream.
    let r =
        publisher.publish("topic=json", Some("application/json"), br#"{"topic":"elsewhere","data":"no"}"#);
    accepted_id(&r, "envelope topic overrides the query");
    expect_frames(&mut sub, &expected);
    expect_nothing_before_marker(server.addr, &mut sub, "json", "JSON publishes");
}

#[test]
fn ndjson_batches_publish_every_line_in_order() {
    let server = TestServer::start(config());
    let mut sub = SseClient::connect(server.addr, "/events?topic=n1&topic=n2");
    let mut publisher = Client::connect(server.addr);
    let mut expected = Vec::new();
    let mut all_ids = Vec::new();

    let body = concat!(
        "{\"topic\":\"n1\",\"data\":\"first\"}\n",
        "\n",
        "{\"topic\":\"n2\",\"event\":\"e\",\"data\":{\"k\":[1,2]}}\r\n",
        "   \n",
        "{\"data\":\"query topic\"}\n",
        "{\"topic\":\"other\",\"data\":\"not subscribed\"}\n",
        "{\"topic\":\"n1\",\"data\":\"two\\nlines\"}",
    );
    let r = publisher.publish("topic=n2&event=q", Some("application/x-ndjson"), body.as_bytes());
    let ids = accepted_ids(&r, "x-ndjson batch");
    assert_eq!(ids.len(), 5);
    assert_increasing(&ids, "batch");
    expected.push(frame("n1", ids[0], Some("q"), &["first"]));
    expected.push(frame("n2", ids[1], Some("e"), &[r#"{"k":[1,2]}"#]));
    expected.push(frame("n2", ids[2], Some("q"), &["query topic"]));
    expected.push(frame("n1", ids[4], Some("q"), &["two", "lines"]));
    all_ids.extend(ids);

    for ct in ["application/jsonl", "application/jsonlines", "application/x-ndjson; charset=utf-8"] {
        let body =
            format!("{{\"topic\":\"n1\",\"data\":\"{ct} a\"}}\n{{\"topic\":\"n2\",\"data\":\"{ct} b\"}}\n");
        let r = publisher.publish("", Some(ct), body.as_bytes());
        let ids = accepted_ids(&r, ct);
        assert_eq!(ids.len(), 2, "{ct}");
        expected.push(frame("n1", ids[0], None, &[&format!("{ct} a")]));
        expected.push(frame("n2", ids[1], None, &[&format!("{ct} b")]));
        all_ids.extend(ids);
    }
    // A batch of one still answers with a list.
    let r = publisher.publish("topic=n1", Some("application/x-ndjson"), b"{\"data\":\"single\"}");
    let ids = accepted_ids(&r, "batch of one");
    assert_eq!(ids.len(), 1);
    expected.push(frame("n1", ids[0], None, &["single"]));
    all_ids.extend(ids);

    assert_increasing(&all_ids, "all batches");
    expect_frames(&mut sub, &expected);
    expect_nothing_before_marker(server.addr, &mut sub, "n1", "NDJSON batches");
}

#[test]
fn ndjson_batch_with_a_bad_line_publishes_none_of_it() {
    let server = TestServer::start(config());
    let mut sub = SseClient::connect(server.addr, "/events?topic=batch");
    let mut publisher = Client::connect(server.addr);
    let ok = "{\"topic\":\"batch\",\"data\":\"must not be published\"}";
    let cases: &[(&str, String, Option<&str>)] = &[
        ("bad first line", format!("{{oops\n{ok}\n{ok}\n"), Some("line 1")),
        ("bad middle line", format!("{ok}\n[1]\n{ok}\n"), Some("line 2")),
        ("bad last line after blanks", format!("{ok}\n\n\n{{\"topic\":\"batch\"}}"), Some("line 4")),
        (
            "non-string event on line 3",
            format!("{ok}\n{ok}\n{{\"topic\":\"batch\",\"event\":1,\"data\":\"x\"}}\n"),
            Some("line 3"),
        ),
        ("invalid topic on line 2", format!("{ok}\n{{\"topic\":\"a b\",\"data\":\"x\"}}\n{ok}\n"), None),
        (
            "event with LF on line 2",
            format!("{ok}\n{{\"topic\":\"batch\",\"event\":\"a\\nb\",\"data\":\"x\"}}\n"),
            None,
        ),
        ("two envelopes on one line", format!("{ok}\n{ok}{ok}\n"), Some("line 2")),
    ];
    for (what, body, line) in cases {
        let r = publisher.publish("", Some("application/x-ndjson"), body.as_bytes());
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.header("connection"), Some("keep-alive"), "{what}");
        let msg = r.json()["error"].as_str().expect("error message").to_string();
        if let Some(line) = line {
            assert!(msg.contains(line), "{what}: {msg:?} does not name {line}");
        }
        expect_nothing_before_marker(server.addr, &mut sub, "batch", what);
    }
    // Oversized lines refuse the whole batch too.
    let server2 = TestServer::start(Config { outbox_max_bytes: 4096, ..config() });
    let mut sub2 = SseClient::connect(server2.addr, "/events?topic=batch");
    let body = format!("{ok}\n{{\"topic\":\"batch\",\"data\":\"{}\"}}\n", "x".repeat(5000));
    let r = Client::connect(server2.addr).publish("", Some("application/x-ndjson"), body.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    expect_nothing_before_marker(server2.addr, &mut sub2, "batch", "an oversized line");
}

#[test]
fn ndjson_invalid_topic_or_event_error_names_the_line() {
    // Like a syntax error, an envelope whose topic or event name is invalid is a bad line:
    // the 400 must say which line, or the publisher cannot find it in a large batch.
    let server = TestServer::start(config());
    let ok = "{\"topic\":\"batch\",\"data\":\"x\"}";
    let bad_topic = "{\"topic\":\"a b\",\"data\":\"x\"}";
    let bad_event = "{\"topic\":\"batch\",\"event\":\"a\\nb\",\"data\":\"x\"}";
    for (what, body, line) in [
        ("invalid topic", format!("{ok}\n{bad_topic}\n{ok}\n"), "line 2"),
        ("event with LF after a blank line", format!("{ok}\n\n{bad_event}\n"), "line 3"),
    ] {
        let r = Client::connect(server.addr).publish("", Some("application/x-ndjson"), body.as_bytes());
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let msg = r.json()["error"].as_str().expect("error message").to_string();
        assert!(msg.contains(line), "{what}: error {msg:?} does not name {line:?}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let server = TestServer::start(config());
    let mut sub = SseClient::connect(server.addr, "/events?topic=p");
    let mut raw = Vec::new();
    raw.extend_from_slice(&raw_post("topic=p&event=one", "Content-Type: text/plain\r\n", b"first"));
    raw.extend_from_slice(b"GET /nope HTTP/1.1\r\nHost: test\r\n\r\n");
    raw.extend_from_slice(&raw_post(
        "",
        "Content-Type: application/json\r\n",
        br#"{"topic":"p","data":{"n":2}}"#,
    ));
    raw.extend_from_slice(b"POST /events?topic=p HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    raw.extend_from_slice(&raw_post(
        "topic=p",
        "Content-Type: application/x-ndjson\r\n",
        b"{\"data\":\"third\"}\n{\"data\":\"fourth\"}\n",
    ));
    raw.extend_from_slice(b"GET /events?topic=a%20b HTTP/1.1\r\n\r\n");
    raw.extend_from_slice(b"GET /publish HTTP/1.1\r\n\r\n");
    raw.extend_from_slice(&raw_post("topic=p", "Connection: close\r\n", b"last"));
    let mut c = Client::connect(server.addr);
    c.send(&raw);

    let r1 = c.read_response();
    let id1 = accepted_id(&r1, "first");
    assert_eq!(c.read_response().status, 404);
    let id2 = accepted_id(&c.read_response(), "JSON");
    let r = c.read_response();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    let batch = accepted_ids(&c.read_response(), "batch");
    assert_eq!(c.read_response().status, 400);
    let r = c.read_response();
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    let last = c.read_response();
    let id5 = accepted_id(&last, "last");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.is_closed_by_server());

    let ids = [id1, id2, batch[0], batch[1], id5];
    assert_increasing(&ids, "pipelined publishes");
    expect_frames(
        &mut sub,
        &[
            frame("p", id1, Some("one"), &["first"]),
            frame("p", id2, None, &[r#"{"n":2}"#]),
            frame("p", batch[0], None, &["third"]),
            frame("p", batch[1], None, &["fourth"]),
            frame("p", id5, None, &["last"]),
        ],
    );
    expect_nothing_before_marker(server.addr, &mut sub, "p", "the pipeline");
}

#[test]
fn many_pipelined_publishes_keep_order_when_the_hub_queue_is_full() {
    // With room for one event per loop, the second publish of the pipeline already has to
    // wait for the loops to drain: the connection parks and resumes, in order.
    let server = TestServer::start(Config { hub_queue_events: 1, ..config() });
    let mut sub = SseClient::connect(server.addr, "/events?topic=q");
    let n = 300;
    let mut raw = Vec::new();
    for i in 0..n {
        raw.extend_from_slice(&raw_post("topic=q", "", format!("event {i}").as_bytes()));
    }
    let batch: String = (0..40).map(|i| format!("{{\"topic\":\"q\",\"data\":\"batch {i}\"}}\n")).collect();
    raw.extend_from_slice(&raw_post("", "Content-Type: application/x-ndjson\r\n", batch.as_bytes()));
    raw.extend_from_slice(&raw_post("topic=q", "", b"after the batch"));
    let mut c = Client::connect(server.addr);
    let mut writer = c.stream().try_clone().unwrap();
    let send = std::thread::spawn(move || writer.write_all(&raw).unwrap());

    let mut expected = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = accepted_id(&c.read_response(), &format!("event {i}"));
        ids.push(id);
        expected.push(frame("q", id, None, &[&format!("event {i}")]));
    }
    let batch_ids = accepted_ids(&c.read_response(), "batch");
    assert_eq!(batch_ids.len(), 40);
    for (i, &id) in batch_ids.iter().enumerate() {
        expected.push(frame("q", id, None, &[&format!("batch {i}")]));
    }
    ids.extend(batch_ids);
    let id = accepted_id(&c.read_response(), "after the batch");
    ids.push(id);
    expected.push(frame("q", id, None, &["after the batch"]));
    send.join().unwrap();

    assert_increasing(&ids, "pipelined publishes through a full hub");
    expect_frames(&mut sub, &expected);
    assert!(server.stats().publish_waits > 0, "the pipeline never waited: {:#?}", server.stats());
    expect_nothing_before_marker(server.addr, &mut sub, "q", "the long pipeline");
}

#[test]
fn a_pipeline_may_end_in_a_subscription() {
    let server = TestServer::start(config());
    let mut raw = raw_post("topic=elsewhere", "", b"before subscribing");
    raw.extend_from_slice(b"GET /nope HTTP/1.1\r\n\r\n");
    raw.extend_from_slice(b"GET /events?topic=late HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n");
    let mut c = Client::connect(server.addr);
    c.send(&raw);
    accepted_id(&c.read_response(), "publish before subscribing");
    assert_eq!(c.read_response().status, 404);
    let head = c.read_response();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let mut sub = SseClient { reader: c.reader, head };
    assert_eq!(sub.next_raw_frame().unwrap(), "retry: 3000\n: ok\n\n");
    let id = publish(server.addr, "late", "hello");
    assert_eq!(sub.next_raw_frame().unwrap(), frame("late", id, None, &["hello"]));
}

/// Writes `raw` one byte per write.
fn dribble(c: &mut Client, raw: &[u8]) {
    for b in raw {
        c.stream().write_all(std::slice::from_ref(b)).expect("write one byte");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn requests_dribbled_one_byte_per_write_work() {
    let server = TestServer::start(config());
    // A dribbled subscribe.
    let mut c = Client::connect(server.addr);
    dribble(&mut c, b"GET /events?topic=slow&topic=drip HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n");
    let head = c.read_response();
    assert_eq!(head.status, 200, "{}", head.text());
    let mut sub = SseClient { reader: c.reader, head };
    assert!(sub.next_raw_frame().unwrap().starts_with("retry: "));

    // Dribbled publishes, raw and JSON, on one keep-alive connection.
    let mut p = Client::connect(server.addr);
    dribble(&mut p, &raw_post("topic=slow&event=d", "Content-Type: text/plain\r\n", b"byte\r\nby byte"));
    let id1 = accepted_id(&p.read_response(), "dribbled raw publish");
    dribble(&mut p, &raw_post("", "Content-Type: application/json\r\n", br#"{"topic":"drip","data":[1]}"#));
    let id2 = accepted_id(&p.read_response(), "dribbled JSON publish");
    // And a dribbled bad request is still answered and keeps the connection.
    dribble(&mut p, b"GET /nope HTTP/1.1\r\n\r\n");
    assert_eq!(p.read_response().status, 404);
    let id3 = accepted_id(&p.publish("topic=slow", None, b"fast"), "fast publish");

    expect_frames(
        &mut sub,
        &[
            frame("slow", id1, Some("d"), &["byte", "by byte"]),
            frame("drip", id2, None, &["[1]"]),
            frame("slow", id3, None, &["fast"]),
        ],
    );
}

#[test]
fn expect_continue_gets_100_before_the_body_is_sent() {
    let server = TestServer::start(config());
    let mut sub = SseClient::connect(server.addr, "/events?topic=cont");
    let mut c = Client::connect(server.addr);
    let mut expected = Vec::new();
    for (ct, body, lines) in [
        ("text/plain", &b"waited\nfor 100"[..], &["waited", "for 100"][..]),
        ("application/json", &br#"{"topic":"cont","data":{"ok":true}}"#[..], &[r#"{"ok":true}"#][..]),
        ("application/x-ndjson", &b"{\"topic\":\"cont\",\"data\":\"b1\"}\n"[..], &["b1"][..]),
    ] {
        // The head alone; the body is sent only after the interim response arrived.
        c.send(
            format!(
                "POST /publish?topic=cont HTTP/1.1\r\nHost: test\r\nContent-Type: {ct}\r\n\
                 Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        let mut line = String::new();
        c.reader.read_line(&mut line).unwrap();
        assert_eq!(line, "HTTP/1.1 100 Continue\r\n", "{ct}");
        line.clear();
        c.reader.read_line(&mut line).unwrap();
        assert_eq!(line, "\r\n", "{ct}: 100 Continue has no headers");
        c.send(body);
        let r = c.read_response();
        let id = if ct == "application/x-ndjson" { accepted_ids(&r, ct)[0] } else { accepted_id(&r, ct) };
        expected.push(frame("cont", id, None, lines));
    }
    // Without the header there is no interim response.
    let id = accepted_id(&c.publish("topic=cont", None, b"plain"), "no Expect");
    expected.push(frame("cont", id, None, &["plain"]));
    expect_frames(&mut sub, &expected);
}

#[test]
fn connection_close_and_http10_publishes_close_after_the_answer() {
    let server = TestServer::start(config());
    let mut sub = SseClient::connect(server.addr, "/events?topic=v");
    let mut expected = Vec::new();
    for (what, head, data, keep) in [
        ("HTTP/1.0", "POST /publish?topic=v HTTP/1.0\r\n", "v1.0", false),
        ("Connection: close", "POST /publish?topic=v HTTP/1.1\r\nConnection: close\r\n", "close", false),
        ("HTTP/1.0 keep-alive", "POST /publish?topic=v HTTP/1.0\r\nConnection: keep-alive\r\n", "ka", true),
    ] {
        let mut c = Client::connect(server.addr);
        let r = c.request(format!("{head}Content-Length: {}\r\n\r\n{data}", data.len()).as_bytes());
        let id = accepted_id(&r, what);
        expected.push(frame("v", id, None, &[data]));
        if keep {
            assert_eq!(r.header("connection"), Some("keep-alive"), "{what}");
            accepted_id(&c.publish("topic=w", None, b"again"), "second request");
        } else {
            assert_eq!(r.header("connection"), Some("close"), "{what}");
            assert!(c.is_closed_by_server(), "{what}");
        }
    }
    expect_frames(&mut sub, &expected);
}

#[test]
fn concurrent_publishers_get_distinct_ids_that_the_stream_shows_in_order() {
    let server = TestServer::start(config());
    let topics = ["c0", "c1", "c2", "c3"];
    let mut sub = SseClient::connect(server.addr, "/events?topic=c0&topic=c1&topic=c2&topic=c3");
    let per = 50;
    let addr = server.addr;
    let mut published: Vec<(u64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = topics
            .iter()
            .map(|t| {
                s.spawn(move || {
                    let mut c = Client::connect(addr);
                    let mut out = Vec::new();
                    for i in 0..per {
                        let data = format!("{t}-{i}");
                        let id = accepted_id(&c.publish(&format!("topic={t}"), None, data.as_bytes()), &data);
                        out.push((id, data));
                    }
                    assert_increasing(&out.iter().map(|(id, _)| *id).collect::<Vec<_>>(), t);
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    published.sort();
    let ids: Vec<u64> = published.iter().map(|(id, _)| *id).collect();
    assert_increasing(&ids, "all publishers (distinct)");
    let events = sub.events(published.len());
    let seen: Vec<(u64, String)> = events.iter().map(|e| (e.id_u64(), e.data.clone())).collect();
    assert_eq!(seen, published, "the stream shows every event once, in id order");
}
