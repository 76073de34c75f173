//! Protection over real sockets: each admission limit (per-IP streams, per-IP connect rate,
//! per-user streams, per-topic publish rate), CORS, the auth matrix, slowloris and idle
//! keep-alive timeouts, capacity (configured and from the descriptor limit) and garbage
//! input. Every test ends by showing that an allowed client on the same node still streams.
//!
//! All clients are on loopback; binding a client socket to 127.0.0.2, 127.0.0.3, ... makes it
//! a different client IP for the per-IP limits.

mod util;

use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sse_edge::metrics::RejectReason;
use sse_edge::{CloseReason, Config};
use util::*;

/// 127.0.0.`last`: a distinct client address on loopback.
fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn try_stream(c: Client, path: &str, headers: &str) -> Result<SseClient, Response> {
    SseClient::try_open(c, path, headers).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn stream_ok(c: Client, path: &str, headers: &str) -> SseClient {
    try_stream(c, path, headers)
        .unwrap_or_else(|r| panic!("GET {path} {headers:?}: want 200, got {} {}", r.status, r.text()))
}

fn stream_refused(c: Client, path: &str, headers: &str) -> Response {
    match try_stream(c, path, headers) {
        Ok(_) => panic!("GET {path} {headers:?}: want a refusal, got a stream"),
        Err(r) => r,
    }
}

/// The `Retry-After` seconds of `r` (must be present and at least 1).
fn retry_after(r: &Response) -> u64 {
    let v = r.header("retry-after").unwrap_or_else(|| panic!("no Retry-After in {:?}", r.headers));
    let secs: u64 = v.parse().unwrap_or_else(|_| panic!("Retry-After {v:?}"));
    assert!(secs >= 1, "Retry-After {secs}");
    secs
}

/// The `error` string of a JSON error body.
fn error_text(r: &Response) -> String {
    r.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {}", r.text())).to_string()
}

/// Publishes `data` to `topic` over a fresh connection from `from`, with an optional bearer
/// token; returns the id.
fn publish_from(from: IpAddr, addr: SocketAddr, topic: &str, data: &str, token: Option<&str>) -> u64 {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut c = client_from(from, addr);
    c.send(
        format!(
            "POST /publish?topic={topic} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{data}",
            data.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 202, "publish from {from}: {}", r.text());
    r.json()["id"].as_u64().expect("id")
}

/// The subscriber's next event is exactly `(id, data)`.
fn assert_next(sub: &mut SseClient, id: u64, data: &str) {
    let e = sub.next_event().unwrap_or_else(|e| panic!("waiting for event {id} {data:?}: {e}"));
    assert_eq!((e.id_u64(), e.data.as_str()), (id, data));
}

/// The value of the sample `series` (name and labels) in a `/metrics` text.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// Asserts `r` names `origin` as allowed with credentials, each header exactly once (a
/// browser rejects a repeated `Access-Control-Allow-Origin`).
fn assert_cors_for(r: &Response, origin: &str, what: &str) {
    for (name, value) in
        [("access-control-allow-origin", origin), ("access-control-allow-credentials", "true")]
    {
        let values: Vec<&str> =
            r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, [value], "{what}: {name} in {:?}", r.headers);
    }
}

/// True when `r` carries any `Access-Control-*` header.
fn has_cors(r: &Response) -> bool {
    r.headers.iter().any(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-"))
}

/// A publisher on one keep-alive connection that publishes `e0`, `e1`, ... to `topic` until
/// `stop` is set (and at least `min` events went out); returns `(id, data)` in order.
fn spawn_publisher(
    addr: SocketAddr,
    topic: &str,
    stop: Arc<AtomicBool>,
    min: usize,
) -> JoinHandle<Vec<(u64, String)>> {
    let topic = topic.to_string();
    std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        let mut sent = Vec::new();
        while sent.len() < min || !stop.load(Ordering::Acquire) {
            let data = format!("e{}", sent.len());
            let r = c.publish(&format!("topic={topic}"), Some("text/plain"), data.as_bytes());
            assert_eq!(r.status, 202, "publish {data}: {}", r.text());
            sent.push((r.json()["id"].as_u64().expect("id"), data));
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    })
}

/// The subscriber receives exactly the published sequence, in order.
fn assert_sequence(sub: &mut SseClient, sent: &[(u64, String)]) {
    let got: Vec<(u64, String)> = sub.events(sent.len()).into_iter().map(|e| (e.id_u64(), e.data)).collect();
    assert_eq!(got, sent);
}

// ---------------------------------------------------------------------------------------------
// 1. Admission limits
// ---------------------------------------------------------------------------------------------

#[test]
fn max_streams_per_ip_refuses_the_fourth_stream_and_frees_a_slot_on_close() {
    let server = TestServer::start(Config { threads: Some(2), max_streams_per_ip: 3, ..Config::loopback() });
    let addr = server.addr;
    let mut mine: Vec<SseClient> = (0..3).map(|_| SseClient::connect(addr, "/events?topic=a")).collect();

    let r = stream_refused(Client::connect(addr), "/events?topic=a", "");
    assert_eq!(r.status, 429, "{}", r.text());
    retry_after(&r);
    assert!(error_text(&r).contains("--max-streams-per-ip"), "{}", r.text());
    let s = server.stats();
    assert_eq!((s.rejected_for(RejectReason::IpStreams), s.streams), (1, 3));

    // Another address has its own count.
    let mut other = stream_ok(client_from(ip(2), addr), "/events?topic=a", "");

    // One of the three closes: its slot is free again, and only one.
    drop(mine.pop());
    server.wait_stats("a stream of 127.0.0.1 closed", |s| s.streams == 3);
    mine.push(stream_ok(Client::connect(addr), "/events?topic=a", ""));
    let r = stream_refused(Client::connect(addr), "/events?topic=a", "");
    assert_eq!(r.status, 429);
    assert_eq!(server.stats().rejected_for(RejectReason::IpStreams), 2);

    // Publishing is not a stream: not limited. Every admitted stream still streams.
    let id = publish(addr, "a", "after the refusals");
    for sub in mine.iter_mut().chain([&mut other]) {
        assert_next(sub, id, "after the refusals");
    }
}

#[test]
fn connect_rate_per_ip_refuses_past_the_burst_with_a_raw_429_and_refills() {
    // Rate 0.5/s: a refill takes 2 s, so the six quick connects below cannot be helped by one.
    let server = TestServer::start(Config {
        threads: Some(1),
        connect_rate_per_ip: 0.5,
        connect_burst_per_ip: 5.0,
        ..Config::loopback()
    });
    let addr = server.addr;
    let mut burst: Vec<Client> = (0..5).map(|_| Client::connect(addr)).collect();
    // The sixth is answered at accept, before it sends anything, and closed.
    let mut sixth = Client::connect(addr);
    let r = sixth.read_response();
    assert_eq!(r.status, 429, "{}", r.text());
    retry_after(&r);
    assert!(error_text(&r).contains("--connect-rate-per-ip"), "{}", r.text());
    assert!(sixth.is_closed_by_server(), "refused connection stays open");
    let s = server.wait_stats("the refusal counted", |s| s.rejected_for(RejectReason::IpRate) == 1);
    assert_eq!(s.accepted, 5, "{s:#?}");
    // The five of the burst are real connections.
    for c in &mut burst {
        assert_eq!(c.request(b"GET /topics/a/latest HTTP/1.1\r\nHost: t\r\n\r\n").status, 404);
    }

    // Other addresses have their own buckets.
    let mut sub = stream_ok(client_from(ip(2), addr), "/events?topic=a", "");
    let id = publish_from(ip(3), addr, "a", "from another address", None);
    assert_next(&mut sub, id, "from another address");

    // 127.0.0.1 refills at the rate: a new stream from it is admitted again (bounded retries;
    // a refused attempt takes no token).
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut again = loop {
        assert!(Instant::now() < deadline, "127.0.0.1 never admitted again");
        match SseClient::try_open(Client::connect(addr), "/events?topic=a", "") {
            Ok(Ok(s)) => break s,
            Ok(Err(r)) => assert_eq!(r.status, 429, "{}", r.text()),
            // The refusal may reset a connection that had already sent its request.
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(server.stats().rejected_for(RejectReason::IpRate) >= 1);
    let id = publish_from(ip(3), addr, "a", "after the refill", None);
    assert_next(&mut sub, id, "after the refill");
    assert_next(&mut again, id, "after the refill");
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

#[test]
fn max_streams_per_user_counts_the_token_subject() {
    let server = TestServer::start(Config {
        threads: Some(2),
        subscribe_key: vec!["k".into()],
        max_streams_per_user: 3,
        ..Config::loopback()
    });
    let addr = server.addr;
    let exp = unix_now() + 600;
    let alice = bearer(&mint(b"k", "alice", &["a"], exp));
    let bob = bearer(&mint(b"k", "bob", &["a"], exp));
    // Three of alice's streams, each from a different address: the limit is per user.
    let mut alices: Vec<SseClient> =
        (1..=3).map(|n| stream_ok(client_from(ip(n), addr), "/events?topic=a", &alice)).collect();
    let r = stream_refused(client_from(ip(4), addr), "/events?topic=a", &alice);
    assert_eq!(r.status, 429, "{}", r.text());
    retry_after(&r);
    assert!(error_text(&r).contains("--max-streams-per-user"), "{}", r.text());
    assert_eq!(server.stats().rejected_for(RejectReason::UserStreams), 1);
    // bob is another user, even from an address alice uses.
    let mut bobs = stream_ok(client_from(ip(1), addr), "/events?topic=a", &bob);

    drop(alices.remove(0));
    server.wait_stats("one of alice's streams closed", |s| s.streams == 3);
    alices.push(stream_ok(client_from(ip(4), addr), "/events?topic=a", &alice));
    assert_eq!(stream_refused(Client::connect(addr), "/events?topic=a", &alice).status, 429);
    assert_eq!(server.stats().rejected_for(RejectReason::UserStreams), 2);

    let id = publish(addr, "a", "for alice and bob");
    for sub in alices.iter_mut().chain([&mut bobs]) {
        assert_next(sub, id, "for alice and bob");
    }
}

#[test]
fn publish_rate_per_topic_refuses_the_third_publish_on_a_topic_only() {
    let server = TestServer::start(Config {
        threads: Some(1),
        publish_rate_per_topic: 1.0,
        publish_burst_per_topic: 2.0,
        ..Config::loopback()
    });
    let addr = server.addr;
    let mut sub = SseClient::connect(addr, "/events?topic=t&topic=u");
    // Pipelined in one write, so all four are handled within microseconds of each other.
    let mut c = Client::connect(addr);
    let mut raw = Vec::new();
    for (q, body) in [("topic=t", "t1"), ("topic=t", "t2"), ("topic=t", "t3"), ("topic=u", "u1")] {
        raw.extend(publish_request(q, Some("text/plain"), body.as_bytes()));
    }
    c.send(&raw);
    let rs: Vec<Response> = (0..4).map(|_| c.read_response()).collect();
    assert_eq!(rs.iter().map(|r| r.status).collect::<Vec<_>>(), [202, 202, 429, 202], "{rs:?}");
    assert_eq!(retry_after(&rs[2]), 1);
    assert!(error_text(&rs[2]).contains("--publish-rate-per-topic"), "{}", rs[2].text());
    assert_eq!(server.stats().rejected_for(RejectReason::TopicRate), 1);
    let id = |r: &Response| r.json()["id"].as_u64().expect("id");
    assert_next(&mut sub, id(&rs[0]), "t1");
    assert_next(&mut sub, id(&rs[1]), "t2");
    assert_next(&mut sub, id(&rs[3]), "u1");

    // The refusal kept the connection; topic t refills at 1/s (bounded retries).
    let deadline = Instant::now() + IO_TIMEOUT;
    let r = loop {
        let r = c.publish("topic=t", Some("text/plain"), b"t4");
        if r.status == 202 {
            break r;
        }
        assert_eq!(r.status, 429, "{}", r.text());
        assert!(Instant::now() < deadline, "topic t never refilled");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Nothing refused was delivered: the next event is t4.
    assert_next(&mut sub, id(&r), "t4");
}

// ---------------------------------------------------------------------------------------------
// 2. CORS
// ---------------------------------------------------------------------------------------------

const APP: &str = "https://app.example";

#[test]
fn cors_headers_only_for_the_allowed_origin() {
    let server = TestServer::start(Config { cors_origin: vec![APP.into()], ..Config::loopback() });
    let addr = server.addr;
    let allowed = format!("Origin: {APP}\r\n");
    let evil = "Origin: https://evil.example\r\n";

    let mut app_stream = stream_ok(Client::connect(addr), "/events?topic=c", &allowed);
    assert_cors_for(&app_stream.head, APP, "stream head");
    assert_eq!(app_stream.head.header("vary"), Some("Origin"));
    let mut evil_stream = stream_ok(Client::connect(addr), "/events?topic=c", evil);
    assert!(!has_cors(&evil_stream.head), "{:?}", evil_stream.head.headers);

    // Preflight for a publish.
    let preflight = |origin: &str| {
        Client::connect(addr).request(
            format!(
                "OPTIONS /publish?topic=c HTTP/1.1\r\nHost: test\r\n{origin}Access-Control-Request-Method: POST\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    let r = preflight(&allowed);
    assert_eq!(r.status, 204, "{r:?}");
    assert_cors_for(&r, APP, "preflight");
    let methods = r.header("access-control-allow-methods").expect("allow-methods");
    assert!(methods.split(',').any(|m| m.trim() == "POST"), "{methods}");
    assert!(r.header("access-control-allow-headers").is_some_and(|h| h.contains("Content-Type")), "{r:?}");
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    let r = preflight(evil);
    assert_eq!(r.status, 204);
    assert!(!has_cors(&r), "{:?}", r.headers);

    // Publish responses.
    let publish_with = |origin: &str, data: &str| {
        Client::connect(addr).request(
            format!(
                "POST /publish?topic=c HTTP/1.1\r\nHost: test\r\n{origin}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{data}",
                data.len()
            )
            .as_bytes(),
        )
    };
    let r = publish_with(&allowed, "from the app");
    assert_eq!(r.status, 202);
    assert_cors_for(&r, APP, "publish response");
    let id1 = r.json()["id"].as_u64().unwrap();
    // A browser publish from another origin is refused (it needs no preflight as text/plain).
    let r = publish_with(evil, "from elsewhere");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!has_cors(&r), "{:?}", r.headers);
    assert_eq!(server.stats().rejected_for(RejectReason::Origin), 1);
    let r = publish_with("", "without an origin");
    assert_eq!(r.status, 202, "curl and server-side publishers send no Origin");
    let id2 = r.json()["id"].as_u64().unwrap();

    for sub in [&mut app_stream, &mut evil_stream] {
        assert_next(sub, id1, "from the app");
        assert_next(sub, id2, "without an origin");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Auth
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_token_matrix() {
    let server = TestServer::start(Config { publish_token: vec!["s3cret".into()], ..Config::loopback() });
    let addr = server.addr;
    let mut sub = SseClient::connect(addr, "/events?topic=p");
    let attempt = |auth: &str, data: &str| {
        Client::connect(addr).request(
            format!(
                "POST /publish?topic=p HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{data}",
                data.len()
            )
            .as_bytes(),
        )
    };
    for (auth, what) in [
        ("", "no token"),
        ("Authorization: Bearer wrong\r\n", "wrong token"),
        ("Authorization: Bearer s3cre\r\n", "prefix of the token"),
        ("Authorization: Basic czNjcmV0\r\n", "another scheme"),
    ] {
        let r = attempt(auth, what);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
        assert!(!r.text().contains("s3cret"), "{what}: the secret leaks: {}", r.text());
    }
    assert_eq!(server.stats().rejected_for(RejectReason::Unauthorized), 4);
    let r = attempt("Authorization: Bearer s3cret\r\n", "right token");
    assert_eq!(r.status, 202, "{}", r.text());
    // Only the authorized publish reached the stream.
    assert_next(&mut sub, r.json()["id"].as_u64().unwrap(), "right token");
    let id = publish_from(ip(1), addr, "p", "again", Some("s3cret"));
    assert_next(&mut sub, id, "again");

    // No token configured: loopback publishers need none.
    let open = TestServer::start(Config::loopback());
    let mut sub = SseClient::connect(open.addr, "/events?topic=p");
    let id = publish(open.addr, "p", "from loopback");
    assert_next(&mut sub, id, "from loopback");
    let id = publish_from(ip(7), open.addr, "p", "from 127.0.0.7", None);
    assert_next(&mut sub, id, "from 127.0.0.7");
}

#[test]
fn subscribe_token_matrix() {
    let server = TestServer::start(Config {
        threads: Some(2),
        subscribe_key: vec!["k".into()],
        subscribe_cookie: Some("sse_token".into()),
        ..Config::loopback()
    });
    let addr = server.addr;
    let exp = unix_now() + 600;
    let good = mint(b"k", "u-header", &["a"], exp);

    let unauthorized = [
        ("", "missing"),
        (&bearer(&mint(b"not-k", "u", &["a"], exp))[..], "bad signature"),
        (&bearer(&mint(b"k", "u", &["a"], unix_now() - 10))[..], "expired"),
        (&bearer("not.a.jwt")[..], "malformed"),
        (&format!("Cookie: other_cookie={good}\r\n")[..], "token in another cookie"),
    ];
    for (headers, what) in unauthorized {
        let r = stream_refused(Client::connect(addr), "/events?topic=a", headers);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
    }
    assert_eq!(server.stats().rejected_for(RejectReason::Unauthorized), unauthorized.len() as u64);

    for path in ["/events?topic=b", "/events?topic=a&topic=b", "/events?topic=jobs"] {
        let r = stream_refused(Client::connect(addr), path, &bearer(&good));
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert!(r.header("www-authenticate").is_none());
    }
    let r = stream_refused(
        Client::connect(addr),
        "/events?topic=jobs",
        &bearer(&mint(b"k", "p", &["jobs.*"], exp)),
    );
    assert_eq!(r.status, 403, "jobs.* does not match jobs");
    assert_eq!(server.stats().rejected_for(RejectReason::Forbidden), 4);

    // Allowed: via the header, the query and the cookie; a prefix pattern. Distinct users so
    // the per-user limit (3) does not apply.
    let mut via_header = stream_ok(Client::connect(addr), "/events?topic=a", &bearer(&good));
    let q = mint(b"k", "u-query", &["a"], exp);
    let mut via_query = stream_ok(Client::connect(addr), &format!("/events?topic=a&token={q}"), "");
    let c = mint(b"k", "u-cookie", &["a", "b"], exp);
    let mut via_cookie = stream_ok(
        Client::connect(addr),
        "/events?topic=a",
        &format!("Cookie: theme=dark; sse_token={c}\r\n"),
    );
    let p = mint(b"k", "u-prefix", &["jobs.*"], exp);
    let mut via_prefix = stream_ok(Client::connect(addr), "/events?topic=jobs.42", &bearer(&p));
    assert_eq!(server.stats().streams, 4);

    let a = publish(addr, "a", "on a");
    let j = publish(addr, "jobs.42", "on jobs.42");
    for sub in [&mut via_header, &mut via_query, &mut via_cookie] {
        assert_next(sub, a, "on a");
    }
    assert_next(&mut via_prefix, j, "on jobs.42");
}

// ---------------------------------------------------------------------------------------------
// 4. Slowloris and idle keep-alive
// ---------------------------------------------------------------------------------------------

#[test]
fn slowloris_connections_are_closed_while_a_subscriber_keeps_streaming() {
    const HEAD_DRIBBLERS: usize = 200;
    const BODY_DRIBBLERS: usize = 20;
    const ATTACKERS: usize = HEAD_DRIBBLERS + BODY_DRIBBLERS;
    let server =
        TestServer::start(Config { threads: Some(2), request_timeout_ms: 1000, ..Config::loopback() });
    let addr = server.addr;
    let mut sub = SseClient::connect(addr, "/events?topic=live");

    // 200 send the head one byte at a time; 20 send a whole publish head at once, then its
    // body one byte at a time (the timeout covers head and body).
    let mut attackers: Vec<Option<TcpStream>> = (0..ATTACKERS)
        .map(|i| {
            let mut s = TcpStream::connect(addr).expect("connect");
            if i >= HEAD_DRIBBLERS {
                s.write_all(
                    b"POST /publish?topic=live HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n",
                )
                .unwrap();
            }
            s.set_nonblocking(true).unwrap();
            Some(s)
        })
        .collect();
    server.wait_stats("attackers accepted", |s| s.connections as usize == ATTACKERS + 1);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = spawn_publisher(addr, "live", stop.clone(), 20);

    // One header byte per connection per round, a round every 200 ms, until the server has
    // closed every one of them (EOF or reset on read, or an error on write).
    let head = b"GET /events?topic=slow HTTP/1.1\r\nHost: test\r\nX-Slow: ";
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut open, mut step) = (ATTACKERS, 0);
    while open > 0 {
        assert!(Instant::now() < deadline, "{open} of {ATTACKERS} slow connections still open");
        let head_byte = head.get(step).copied().unwrap_or(b'a');
        step += 1;
        for (i, slot) in attackers.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            let byte = if i < HEAD_DRIBBLERS { head_byte } else { b'a' };
            let mut buf = [0u8; 256];
            let closed = match s.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false, // an error response (say 408) before the close is fine too
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.write(&[byte]).is_err(),
                Err(_) => true,
            };
            if closed {
                *slot = None;
                open -= 1;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Release);
    let sent = publisher.join().expect("publisher");

    let s = server
        .wait_stats("slow connections counted", |s| s.closed_for(CloseReason::Timeout) >= ATTACKERS as u64);
    // Exactly the attackers: the subscriber and the publisher were never timed out.
    assert_eq!(s.closed_for(CloseReason::Timeout), ATTACKERS as u64, "{s:#?}");
    // The subscriber got every event published during the attack, in order, nothing else.
    assert_sequence(&mut sub, &sent);
    // And the node still takes new streams.
    let mut fresh = SseClient::connect(addr, "/events?topic=live");
    let id = publish(addr, "live", "after the attack");
    assert_next(&mut sub, id, "after the attack");
    assert_next(&mut fresh, id, "after the attack");
}

/// Sends `raw` on a new connection and reads the answer; with a short idle timeout the server
/// may close a new connection before a stalled test thread writes, so that is retried.
fn request_on_fresh_connection(addr: SocketAddr, raw: &[u8]) -> Response {
    for _ in 0..5 {
        if let Ok(r) = Client::connect(addr).try_read_response_after(raw) {
            return r;
        }
    }
    panic!("five connections closed before answering {:?}", String::from_utf8_lossy(raw));
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_timeout_but_streams_are_not() {
    let server = TestServer::start(Config { keepalive_timeout_ms: 300, ..Config::loopback() });
    let addr = server.addr;
    let mut sub = SseClient::connect(addr, "/events?topic=k");
    // Two requests in one write (so no pause between them can outlast the idle timeout).
    let mut c = Client::connect(addr);
    let mut raw = publish_request("topic=k", Some("text/plain"), b"one");
    raw.extend(publish_request("topic=k", Some("text/plain"), b"two"));
    c.send(&raw);
    let (r1, r2) = (c.read_response(), c.read_response());
    assert_eq!((r1.status, r2.status), (202, 202), "keep-alive serves a second request");
    assert!(c.is_closed_by_server(), "idle keep-alive connection never closed");
    let s = server.wait_stats("idle close counted", |s| s.closed_for(CloseReason::Timeout) == 1);
    assert_eq!(s.streams, 1, "{s:#?}");

    let id = |r: &Response| r.json()["id"].as_u64().unwrap();
    assert_next(&mut sub, id(&r1), "one");
    assert_next(&mut sub, id(&r2), "two");
    // A connection that never sends anything is idle too.
    assert!(Client::connect(addr).is_closed_by_server(), "a silent connection never closed");
    server.wait_stats("silent close counted", |s| s.closed_for(CloseReason::Timeout) == 2);
    // Streams are never idle-closed: this one idled past the timeout twice and still streams.
    let r = request_on_fresh_connection(addr, &publish_request("topic=k", Some("text/plain"), b"three"));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_next(&mut sub, id(&r), "three");
    assert_eq!(server.stats().streams, 1);
}

#[test]
fn timeout_closes_are_exported_in_metrics() {
    let server = TestServer::start(Config { keepalive_timeout_ms: 100, ..Config::loopback() });
    let addr = server.addr;
    assert!(Client::connect(addr).is_closed_by_server(), "a silent connection never closed");
    server.wait_stats("the idle close counted", |s| s.closed_for(CloseReason::Timeout) == 1);
    let text = request_on_fresh_connection(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").text();
    let exported: Vec<&str> = text.lines().filter(|l| l.starts_with("sse_disconnects_total{")).collect();
    let timeouts = text
        .lines()
        .find_map(|l| l.strip_prefix("sse_disconnects_total{reason=\"timeout\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(
        timeouts.is_some_and(|n| n >= 1),
        "Stats::closed_for(Timeout) is {}, but /metrics exports {exported:?}",
        server.stats().closed_for(CloseReason::Timeout)
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Capacity
// ---------------------------------------------------------------------------------------------

#[test]
fn max_connections_refuses_with_503_and_recovers() {
    let server = TestServer::start(Config { threads: Some(2), max_connections: 10, ..Config::loopback() });
    let addr = server.addr;
    assert_eq!(server.stats().capacity, 10);
    let mut streams: Vec<SseClient> =
        (0..10).map(|_| SseClient::connect(addr, "/events?topic=cap")).collect();

    // Short requests have their own reserve (`--request-reserve`, tests/capacity.rs): the
    // eleventh connection is accepted, and refused when it asks for a stream.
    let mut eleventh = Client::connect(addr);
    let r = eleventh
        .try_read_response_after(b"GET /events?topic=cap HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n")
        .expect("an answer to the eleventh stream");
    assert_eq!(r.status, 503, "{}", r.text());
    retry_after(&r);
    assert!(eleventh.is_closed_by_server(), "refused connection stays open");
    let s = server.stats();
    assert!(s.rejected_for(RejectReason::StreamCapacity) >= 1, "{s:#?}");
    assert_eq!(s.streams, 10);

    streams.truncate(8);
    server.wait_stats("two streams closed", |s| s.connections == 8);
    streams.push(SseClient::connect(addr, "/events?topic=cap"));
    let id = publish(addr, "cap", "room again"); // the tenth connection
    for sub in &mut streams {
        assert_next(sub, id, "room again");
    }
    server.wait_stats("publisher closed", |s| s.connections == 9);
}

#[test]
fn out_of_descriptors_answers_503_from_the_spare_and_recovers() {
    // Hard limit 64: the server raises its soft limit to 64 only; with a reserve of 1 its
    // capacity (63) exceeds the descriptors really free, so accept hits EMFILE first.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -n 64; exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_sse-edge")]);
    // No request reserve: the capacity is what it was before the reserve existed.
    cmd.args(["--threads", "1", "--fd-reserve", "1", "--request-reserve", "0"]);
    let (mut child, addr) = spawn_sse_edge(cmd);
    let log = child.log();
    let read_log = || log.text();

    let mut held: Vec<Client> = Vec::new();
    let mut lost = 0; // closed before any answer (the refusal raced our request)
    let refusal = 'open: {
        for _ in 0..200 {
            let s = TcpStream::connect(addr).unwrap_or_else(|e| {
                panic!("connect refused after {} connections: {e}\nlog:\n{}", held.len(), read_log())
            });
            // A socket refused from the spare is answered at accept, before any request.
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut c = Client { reader: BufReader::new(s) };
            match c.try_read_response() {
                Ok(r) => break 'open r,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => {
                    lost += 1;
                    continue;
                }
            }
            c.stream().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            c.send(b"GET /events?topic=fd HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n");
            match c.try_read_response() {
                Ok(r) if r.status == 200 => held.push(c),
                Ok(r) => break 'open r,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    panic!("connection {} hangs: {e}\nlog:\n{}", held.len(), read_log())
                }
                Err(_) => lost += 1,
            }
        }
        panic!("no 503 after {} streams and {lost} lost connections\nlog:\n{}", held.len(), read_log());
    };
    assert_eq!(refusal.status, 503, "{refusal:?}");
    retry_after(&refusal);
    assert!(held.len() >= 40, "EMFILE after only {} streams", held.len());
    assert!(child.is_running(), "the server died\nlog:\n{}", read_log());
    let deadline = Instant::now() + IO_TIMEOUT;
    while !read_log().contains("out of file descriptors") {
        assert!(Instant::now() < deadline, "no EMFILE warning in the log:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(20));
    }

    // Give the descriptors back: a new subscriber and a publisher are served normally.
    drop(held);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut sub = loop {
        match SseClient::try_open(Client::connect(addr), "/events?topic=fd", "") {
            Ok(Ok(s)) => break s,
            other => assert!(Instant::now() < deadline, "never recovered: {other:?}\nlog:\n{}", read_log()),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let id = publish(addr, "fd", "after EMFILE");
    assert_next(&mut sub, id, "after EMFILE");
    // The refusals were counted as EMFILE (the spare path), not as capacity.
    let metrics = Client::connect(addr).request(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").text();
    let emfile = metric(&metrics, "sse_connections_rejected_total{reason=\"emfile\"}");
    assert!(emfile >= 1, "emfile refusals {emfile}");
    assert_eq!(metric(&metrics, "sse_connections_rejected_total{reason=\"capacity\"}"), 0);
    assert!(child.is_running());
}

// ---------------------------------------------------------------------------------------------
// 6. Garbage
// ---------------------------------------------------------------------------------------------

/// xorshift64: a tiny deterministic generator for the garbage.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// 1–4 KiB of random bytes for connection `n`.
fn garbage(n: u64) -> Vec<u8> {
    let mut rng = XorShift(0x5EED_CAFE_F00D_0001 ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let len = 1024 + (rng.next() % 3073) as usize;
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Writes `bytes` and reads until the server closes. `Ok(Some(status))` for an error
/// response, `Ok(None)` for a close without one, `Err` for a hang or a success status.
fn throw_garbage(addr: SocketAddr, bytes: &[u8]) -> Result<Option<u16>, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // The server may close before taking everything; that is allowed.
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(format!(
                    "no close within {IO_TIMEOUT:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Err(_) => break, // reset
        }
    }
    if got.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&got);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    if !(400..=599).contains(&status) {
        return Err(format!("garbage got a success status: {text:?}"));
    }
    Ok(Some(status))
}

#[test]
fn garbage_connections_get_errors_or_closes_and_the_node_keeps_serving() {
    const CONNS: u64 = 500;
    const AT_ONCE: u64 = 50;
    let server =
        TestServer::start(Config { threads: Some(2), request_timeout_ms: 2000, ..Config::loopback() });
    let addr = server.addr;
    let mut sub = SseClient::connect(addr, "/events?topic=g");
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = spawn_publisher(addr, "g", stop.clone(), 20);

    let outcomes: Vec<(u64, Result<Option<u16>, String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..AT_ONCE)
            .map(|w| {
                scope.spawn(move || {
                    (w..CONNS)
                        .step_by(AT_ONCE as usize)
                        .map(|n| (n, throw_garbage(addr, &garbage(n))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("garbage thread")).collect()
    });
    stop.store(true, Ordering::Release);
    let sent = publisher.join().expect("publisher");

    assert_eq!(outcomes.len() as u64, CONNS);
    let failures: Vec<_> = outcomes.iter().filter(|(_, o)| o.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {CONNS} failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let answered = outcomes.iter().filter(|(_, o)| matches!(o, Ok(Some(_)))).count() as u64;

    assert_sequence(&mut sub, &sent);
    let s = server.wait_stats("garbage connections gone", |s| s.connections == 1);
    assert!(s.requests_rejected >= answered, "{answered} error responses, {} counted", s.requests_rejected);
    // A connection closed without an answer was one whose garbage looked like the start of a
    // request: only the request timeout may close it.
    assert_eq!(
        answered + s.closed_for(CloseReason::Timeout),
        CONNS,
        "{answered} answered; closes by reason {:?}",
        s.closed
    );
    assert_eq!(s.streams, 1);
    let mut fresh = SseClient::connect(addr, "/events?topic=g");
    let id = publish(addr, "g", "after the garbage");
    assert_next(&mut sub, id, "after the garbage");
    assert_next(&mut fresh, id, "after the garbage");
}
