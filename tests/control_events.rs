//! Events only the node may send, over real sockets: publishers cannot forge them, and a
//! stream whose subscribe token expires is told so and closed.

mod util;

use std::time::Instant;

use sse_edge::{Config, Message, PublishError};
use util::*;

const RESERVED: [&str; 5] =
    ["gap", "server-shutdown", "system.overloaded", "system.recovered", "token-expired"];

#[test]
fn control_event_names_are_refused_on_every_publish_path() {
    let server = TestServer::with_threads(2);
    let addr = server.addr;
    let mut sub = SseClient::connect(addr, "/events?topic=t");
    server.wait_stats("stream", |s| s.streams == 1);
    let published_before = server.stats().events_in;

    for name in RESERVED {
        // Raw body, name in the query.
        let r = Client::connect(addr).publish(&format!("topic=t&event={name}"), Some("text/plain"), b"{}");
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        let text = r.text();
        assert!(text.contains("reserved") && RESERVED.iter().all(|n| text.contains(n)), "{text}");
        // JSON envelope.
        let body = serde_json::json!({"topic": "t", "event": name, "data": {"from": 1, "to": 9}}).to_string();
        let r = Client::connect(addr).publish("", Some("application/json"), body.as_bytes());
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        // NDJSON batch: one forged line refuses the whole batch, nothing of it is published.
        let batch = format!(
            "{{\"topic\":\"t\",\"data\":\"ok\"}}\n{{\"topic\":\"t\",\"event\":\"{name}\",\"data\":\"x\"}}\n"
        );
        let r = Client::connect(addr).publish("", Some("application/x-ndjson"), batch.as_bytes());
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        // The embedded publisher.
        let e = server.handle().publisher().publish(&Message::new("t", "x").event(name));
        assert!(matches!(e, Err(PublishError::Invalid(ref m)) if m.contains("reserved")), "{name}: {e:?}");
    }
    assert_eq!(server.stats().events_in, published_before, "nothing forged was sequenced");
    // Names are case-sensitive (as EventSource dispatches them): `Gap` is an ordinary event.
    let r = Client::connect(addr).publish("topic=t&event=Gap", Some("text/plain"), b"fine");
    assert_eq!(r.status, 202, "{}", r.text());
    let ordinary = r.json()["id"].as_u64().unwrap();

    // The node kept serving: the subscriber got exactly the ordinary events, nothing forged.
    let id = publish(addr, "t", "after the refusals");
    let got = sub.events(2);
    assert_eq!(got[0].id_u64(), ordinary);
    assert_eq!(got[0].event.as_deref(), Some("Gap"));
    assert_eq!(
        (got[1].id_u64(), got[1].event.as_deref(), got[1].data.as_str()),
        (id, None, "after the refusals")
    );
}

fn stream_with(addr: std::net::SocketAddr, token: &str) -> SseClient {
    let header = format!("Authorization: Bearer {token}\r\n");
    match SseClient::try_open(Client::connect(addr), "/events?topic=inbox", &header) {
        Ok(Ok(s)) => s,
        other => panic!("stream: {other:?}"),
    }
}

/// Revocation by expiry: a stream does not outlive its subscribe token.
#[test]
fn a_stream_is_told_and_closed_when_its_token_expires() {
    let server = TestServer::start(Config {
        threads: Some(2),
        subscribe_key: vec!["k".into()],
        heartbeat_ms: 400, // the timer walk runs every 100 ms
        ..Config::loopback()
    });
    let addr = server.addr;
    // Whole seconds: 4 leaves at least 3 s for the steps before the expiry.
    let exp = unix_now() + 4;
    let mut short = stream_with(addr, &mint(b"k", "alice", &["inbox"], exp));
    let mut long = stream_with(addr, &mint(b"k", "bob", &["inbox"], unix_now() + 600));
    server.wait_stats("two streams", |s| s.streams == 2);
    let first = publish(addr, "inbox", "before expiry");
    for sub in [&mut short, &mut long] {
        assert_eq!(sub.next_event().expect("event").id_u64(), first);
    }

    // The short stream's next event is the notice, then the server closes it.
    let raw = loop {
        let frame = short.next_raw_frame().expect("token-expired notice");
        if !frame.starts_with(':') {
            break frame; // heartbeats may come first
        }
    };
    assert!(unix_now() >= exp, "told before its token expired");
    let e = parse_frame(&raw).expect("an event");
    assert_eq!((e.event.as_deref(), e.id.as_deref()), (Some("token-expired"), None), "{raw:?}");
    let v: serde_json::Value = serde_json::from_str(&e.data).expect("JSON");
    assert_eq!(v, serde_json::json!({"exp": exp, "reconnect": true}));
    let retry: u64 = raw
        .lines()
        .find_map(|l| l.strip_prefix("retry: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a retry: line in {raw:?}"));
    assert!((3_000..13_000).contains(&retry), "retry {retry}: --retry-ms plus a share of the spread");
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match short.next_raw_frame() {
            Err(_) => break, // closed by the server
            Ok(frame) => {
                assert!(frame.starts_with(':'), "only heartbeats may follow the notice, got {frame:?}");
                assert!(Instant::now() < deadline, "the expired stream stays open");
            }
        }
    }
    let s = server.wait_stats("one stream left", |s| s.streams == 1);
    assert_eq!(s.tokens_expired, 1, "{s:?}");
    let metrics = http_get(addr, "/metrics").text();
    assert!(metrics.lines().any(|l| l == "sse_streams_token_expired_total 1"), "{metrics}");

    // The other user's stream is untouched, and an expired token cannot reconnect.
    let later = publish(addr, "inbox", "after expiry");
    assert_eq!(long.next_event().expect("event").id_u64(), later);
    let header = format!("Authorization: Bearer {}\r\n", mint(b"k", "alice", &["inbox"], exp));
    match SseClient::try_open(Client::connect(addr), "/events?topic=inbox", &header) {
        Ok(Err(r)) => assert_eq!(r.status, 401, "{}", r.text()),
        other => panic!("an expired token is refused: {other:?}"),
    }
}
