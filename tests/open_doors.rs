//! Open doors closed (issue 10, items 5, 7, 8, 9), each over real sockets:
//! - the polling endpoints take the subscribe token and topic check of streams, and stay on
//!   the public listener when `--admin-listen` is set;
//! - `--cors-origin '*'` is "any origin, without credentials", and a browser publish from an
//!   origin that is not allowed is refused on its head, even from loopback;
//! - publish auth is decided on the head: no `100 Continue`, no body buffered;
//! - polling answers are bounded by `--poll-max-bytes` and say where to continue.

mod util;

use std::io::Write;

use sse_edge::metrics::RejectReason;
use sse_edge::Config;
use util::*;

fn get(addr: std::net::SocketAddr, path: &str, headers: &str) -> Response {
    Client::connect(addr).request(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n").as_bytes())
}

/// The ids of a `/topics/{t}/events` answer, in order.
fn ids(r: &Response) -> Vec<u64> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().expect("array").iter().map(|e| e["id"].as_u64().expect("id")).collect()
}

// ---------------------------------------------------------------------------------------------
// Item 5: polling auth, and polling on the public listener
// ---------------------------------------------------------------------------------------------

#[test]
fn polling_takes_the_subscribe_token_and_topic_check_of_streams() {
    let server = TestServer::start(Config {
        subscribe_key: vec!["k".into()],
        subscribe_cookie: Some("sse_token".into()),
        ..Config::loopback()
    });
    let addr = server.addr;
    let topic = "user.42.inbox";
    let private: Vec<u64> = (0..2).map(|i| publish(addr, topic, &format!("private {i}"))).collect();
    let events = format!("/topics/{topic}/events?after=0");
    let latest = format!("/topics/{topic}/latest");
    let exp = unix_now() + 600;
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");

    let unauthorized = [
        (String::new(), "no token"),
        (bearer(&mint(b"not-k", "u42", &[topic], exp)), "bad signature"),
        (bearer(&mint(b"k", "u42", &[topic], unix_now() - 10)), "expired"),
        (format!("Cookie: other={}\r\n", mint(b"k", "u42", &[topic], exp)), "another cookie"),
    ];
    for (headers, what) in &unauthorized {
        for path in [&events, &latest] {
            let r = get(addr, path, headers);
            assert_eq!(r.status, 401, "{path} {what}: {}", r.text());
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path} {what}");
            assert!(!r.text().contains("private"), "{path} {what}: {}", r.text());
        }
    }
    let other = bearer(&mint(b"k", "u7", &["user.7.*"], exp));
    for path in [&events, &latest] {
        let r = get(addr, path, &other);
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        assert!(!r.text().contains("private"), "{}", r.text());
    }
    let s = server.stats();
    assert_eq!(s.rejected_for(RejectReason::Unauthorized), 2 * unauthorized.len() as u64, "{s:#?}");
    assert_eq!(s.rejected_for(RejectReason::Forbidden), 2, "{s:#?}");

    // The right token, from the header, the cookie or the query, opens both endpoints.
    let good = mint(b"k", "u42", &["user.42.*"], exp);
    for (path, headers) in [
        (events.clone(), bearer(&good)),
        (events.clone(), format!("Cookie: theme=dark; sse_token={good}\r\n")),
        (format!("{events}&token={good}"), String::new()),
    ] {
        assert_eq!(ids(&get(addr, &path, &headers)), private, "{path} {headers:?}");
    }
    let r = get(addr, &latest, &bearer(&good));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["id"].as_u64(), r.json()["data"].as_str()), (Some(private[1]), Some("private 1")));
    // A stream with the same token is still admitted: the node keeps serving.
    let mut sub =
        SseClient::try_open(Client::connect(addr), &format!("/events?topic={topic}"), &bearer(&good))
            .expect("stream")
            .unwrap_or_else(|r| panic!("stream refused: {} {}", r.status, r.text()));
    let id = publish(addr, topic, "live");
    let e = sub.next_event().expect("live event");
    assert_eq!((e.id_u64(), e.data.as_str()), (id, "live"));
}

#[test]
fn polling_stays_on_the_public_listener_with_admin_listen_and_both_check_tokens() {
    let server = TestServer::start(Config {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        subscribe_key: vec!["k".into()],
        ..Config::loopback()
    });
    let (public, admin) = (server.addr, server.handle().admin_addr().expect("admin address"));
    let sent: Vec<u64> = (0..3).map(|i| publish(public, "jobs", &format!("e{i}"))).collect();
    let token = format!("Authorization: Bearer {}\r\n", mint(b"k", "u", &["jobs"], unix_now() + 600));
    for addr in [public, admin] {
        assert_eq!(ids(&get(addr, "/topics/jobs/events?after=0", &token)), sent, "{addr}");
        let r = get(addr, "/topics/jobs/latest", &token);
        assert_eq!(r.status, 200, "{addr}: {}", r.text());
        assert_eq!(r.json()["id"].as_u64(), Some(sent[2]));
        assert_eq!(get(addr, "/topics/jobs/events?after=0", "").status, 401, "{addr} without a token");
    }
    // Operator endpoints stay off the public listener.
    assert_eq!(get(public, "/metrics", "").status, 404);
    assert_eq!(get(admin, "/metrics", "").status, 200);
}

// ---------------------------------------------------------------------------------------------
// Item 7: CORS
// ---------------------------------------------------------------------------------------------

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

fn header_values<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

#[test]
fn cors_star_allows_any_origin_without_credentials() {
    let server = TestServer::start(Config { cors_origin: vec!["*".into()], ..Config::loopback() });
    let addr = server.addr;
    publish(addr, "c", "x");
    let origin = format!("Origin: {EVIL}\r\n");
    let stream = SseClient::try_open(Client::connect(addr), "/events?topic=c", &origin).unwrap().unwrap();
    let poll = get(addr, "/topics/c/events?after=0", &origin);
    let preflight = Client::connect(addr).request(
        format!("OPTIONS /events HTTP/1.1\r\nHost: t\r\n{origin}Access-Control-Request-Method: GET\r\n\r\n")
            .as_bytes(),
    );
    for (r, what) in [(&stream.head, "stream"), (&poll, "polling"), (&preflight, "preflight")] {
        assert_eq!(header_values(r, "access-control-allow-origin"), ["*"], "{what}: {:?}", r.headers);
        assert!(header_values(r, "access-control-allow-credentials").is_empty(), "{what}: {:?}", r.headers);
    }
    // Without an Origin header nothing changes for curl and server-side clients.
    assert!(get(addr, "/topics/c/latest", "").headers.iter().all(|(n, _)| !n.starts_with("Access-Control")));
}

#[test]
fn cors_credentials_only_for_listed_origins_even_next_to_star() {
    let server =
        TestServer::start(Config { cors_origin: vec!["*".into(), APP.into()], ..Config::loopback() });
    let addr = server.addr;
    let r = SseClient::try_open(Client::connect(addr), "/events?topic=c", &format!("Origin: {APP}\r\n"))
        .unwrap()
        .unwrap()
        .head;
    assert_eq!(header_values(&r, "access-control-allow-origin"), [APP], "{:?}", r.headers);
    assert_eq!(header_values(&r, "access-control-allow-credentials"), ["true"], "{:?}", r.headers);
    assert_eq!(header_values(&r, "vary"), ["Origin"]);
    let r = SseClient::try_open(Client::connect(addr), "/events?topic=c", &format!("Origin: {EVIL}\r\n"))
        .unwrap()
        .unwrap()
        .head;
    assert_eq!(header_values(&r, "access-control-allow-origin"), ["*"], "{:?}", r.headers);
    assert!(header_values(&r, "access-control-allow-credentials").is_empty(), "{:?}", r.headers);
    // Answers differ by origin, so caches must key on it.
    assert_eq!(header_values(&r, "vary"), ["Origin"]);
}

/// A `text/plain` publish as a browser sends it cross-site (no preflight needed), with
/// `Content-Length: len` and `body` (which may be shorter: the rest is never sent).
fn browser_publish(origin: Option<&str>, extra: &str, len: usize, body: &[u8]) -> Vec<u8> {
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    let mut raw = format!(
        "POST /publish?topic=b HTTP/1.1\r\nHost: 127.0.0.1\r\n{origin}{extra}Content-Type: text/plain\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

#[test]
fn cross_site_publish_from_a_disallowed_origin_is_refused_on_its_head_even_from_loopback() {
    let server = TestServer::start(Config { cors_origin: vec![APP.into()], ..Config::loopback() });
    let addr = server.addr;
    let mut sub = SseClient::connect(addr, "/events?topic=b");

    // The whole request at once: refused, nothing published.
    let r = Client::connect(addr).request(&browser_publish(Some(EVIL), "", 6, b"forged"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("--cors-origin"), "{}", r.text());
    // Only the head of a large one: refused at once, without the body, and closed.
    let mut c = Client::connect(addr);
    c.send(&browser_publish(Some("null"), "", 900_000, b""));
    let r = c.read_response();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed_by_server());
    assert_eq!(server.stats().rejected_for(RejectReason::Origin), 2);

    // Allowed: the listed origin, and requests without Origin (curl, server-side publishers).
    for origin in [Some(APP), None] {
        let r = Client::connect(addr).request(&browser_publish(origin, "", 2, b"ok"));
        assert_eq!(r.status, 202, "{origin:?}: {}", r.text());
        let e = sub.next_event().expect("the allowed publish arrives");
        assert_eq!((e.id_u64(), e.data.as_str()), (r.json()["id"].as_u64().unwrap(), "ok"));
    }
}

#[test]
fn cors_star_does_not_extend_loopback_trust_but_a_publish_token_works_from_any_origin() {
    // No publish token: only loopback may publish, and a browser page on this machine is on
    // loopback. `*` must not let any site use that.
    let open = TestServer::start(Config { cors_origin: vec!["*".into()], ..Config::loopback() });
    let r = Client::connect(open.addr).request(&browser_publish(Some(EVIL), "", 6, b"forged"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(open.stats().rejected_for(RejectReason::Origin), 1);

    // With a token the token decides: any origin may publish with it under `*`.
    let guarded = TestServer::start(Config {
        cors_origin: vec!["*".into()],
        publish_token: vec!["s3cret".into()],
        ..Config::loopback()
    });
    let r = Client::connect(guarded.addr).request(&browser_publish(
        Some(EVIL),
        "Authorization: Bearer s3cret\r\n",
        2,
        b"ok",
    ));
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(header_values(&r, "access-control-allow-origin"), ["*"]);
}

// ---------------------------------------------------------------------------------------------
// Item 8: publish auth on the head
// ---------------------------------------------------------------------------------------------

#[test]
fn publish_auth_is_decided_on_the_head_before_100_continue_and_the_body() {
    let server = TestServer::start(Config { publish_token: vec!["s3cret".into()], ..Config::loopback() });
    let addr = server.addr;
    let mut sub = SseClient::connect(addr, "/events?topic=b");
    for (extra, what) in [
        ("Expect: 100-continue\r\n", "bad token, waiting for 100 Continue"),
        ("Authorization: Bearer wrong\r\n", "bad token, body withheld"),
        ("Authorization: Bearer wrong\r\nExpect: 100-continue\r\n", "both"),
    ] {
        let mut c = Client::connect(addr);
        // A body near --max-body-bytes is announced and never sent.
        c.send(&browser_publish(None, extra, 1_000_000, b""));
        let r = c.read_response();
        assert_eq!(r.status, 401, "{what}: got {} (a 100 Continue?) {}", r.status, r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
        assert_eq!(r.header("connection"), Some("close"), "{what}");
        assert!(c.is_closed_by_server(), "{what}: the connection is closed");
    }
    assert_eq!(server.stats().rejected_for(RejectReason::Unauthorized), 3);

    // No other route takes a body: announcing one is refused on the head, whatever the path.
    for (method, path) in [("GET", "/events?topic=b"), ("POST", "/topics/b/events"), ("PUT", "/publish")] {
        let mut c = Client::connect(addr);
        c.send(
            format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response();
        assert_eq!(r.status, 413, "{method} {path}: got {} (a 100 Continue?) {}", r.status, r.text());
        assert!(r.text().contains("only POST /publish"), "{}", r.text());
        assert!(c.is_closed_by_server(), "{method} {path}: the connection is closed");
    }

    // An authorised publisher is served afterwards, with 100 Continue when it asks.
    let mut c = Client::connect(addr);
    c.send(&browser_publish(None, "Authorization: Bearer s3cret\r\nExpect: 100-continue\r\n", 5, b""));
    assert_eq!(c.read_response().status, 100);
    c.stream().write_all(b"hello").unwrap();
    let r = c.read_response();
    assert_eq!(r.status, 202, "{}", r.text());
    let e = sub.next_event().expect("the authorised publish arrives");
    assert_eq!((e.id_u64(), e.data.as_str()), (r.json()["id"].as_u64().unwrap(), "hello"));
}

// ---------------------------------------------------------------------------------------------
// Item 9: bounded polling answers
// ---------------------------------------------------------------------------------------------

/// Follows `X-Next-After` from `after=0`; returns every page's body length and all ids.
fn page_through(
    addr: std::net::SocketAddr,
    topic: &str,
    limit: usize,
) -> (Vec<usize>, Vec<u64>, Vec<Response>) {
    let (mut sizes, mut all, mut pages) = (Vec::new(), Vec::new(), Vec::new());
    let mut after = 0;
    let mut c = Client::connect(addr);
    loop {
        let r = c.request(
            format!("GET /topics/{topic}/events?after={after}&limit={limit} HTTP/1.1\r\nHost: t\r\n\r\n")
                .as_bytes(),
        );
        sizes.push(r.body.len());
        all.extend(ids(&r));
        let next = r.header("x-next-after").map(|v| v.parse::<u64>().expect("X-Next-After is an id"));
        pages.push(r);
        match next {
            Some(n) => {
                assert!(n > after, "X-Next-After {n} does not move past {after}");
                after = n;
            }
            None => return (sizes, all, pages),
        }
        assert!(pages.len() < 1000, "paging does not end");
    }
}

#[test]
fn polling_pages_stay_under_the_bound_and_continue_to_every_event_once() {
    // The default --poll-max-bytes (256 KiB) against 400 events of ~1 KiB, some of them full
    // of control characters that JSON escaping turns into six bytes each.
    const BOUND: usize = 256 * 1024;
    let server = TestServer::start(Config::loopback());
    let addr = server.addr;
    let mut c = Client::connect(addr);
    let mut sent = Vec::new();
    for i in 0..400 {
        let data = if i % 10 == 0 { "\u{1}".repeat(900) } else { format!("{i:04}{}", "x".repeat(1000)) };
        let r = c.publish("topic=big", Some("text/plain"), data.as_bytes());
        assert_eq!(r.status, 202, "{}", r.text());
        sent.push(r.json()["id"].as_u64().unwrap());
    }
    let (sizes, got, _) = page_through(addr, "big", 1000);
    assert!(sizes.len() >= 2, "over the bound in total, yet one page: {sizes:?}");
    assert!(sizes.iter().all(|&n| n <= BOUND), "a page over {BOUND} bytes: {sizes:?}");
    assert_eq!(got, sent, "every event exactly once, in id order");
    assert!(server.stats().poll_truncated >= 1);
    // `limit` pages say where to continue too.
    let (sizes, got, _) = page_through(addr, "big", 7);
    assert!(sizes.len() >= 400 / 7);
    assert_eq!(got, sent);
}

#[test]
fn an_event_over_the_page_bound_comes_alone_and_one_too_large_for_any_answer_is_a_gap() {
    let server =
        TestServer::start(Config { poll_max_bytes: 4096, outbox_max_bytes: 8192, ..Config::loopback() });
    let addr = server.addr;
    let mut c = Client::connect(addr);
    let mut publish = |data: String| {
        let r = c.publish("topic=odd", Some("text/plain"), data.as_bytes());
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"].as_u64().unwrap()
    };
    let small = publish("a".repeat(3000));
    // Over --poll-max-bytes, within --outbox-max-bytes: answered on a page of its own.
    let big = publish("b".repeat(6000));
    // 5000 control characters: a 5 KB frame, ~30 KB as JSON, over both bounds.
    let huge = publish("\u{1}".repeat(5000));
    let last = publish("d".repeat(10));

    let (sizes, got, pages) = page_through(addr, "odd", 100);
    assert_eq!(got, [small, big, last], "{sizes:?}");
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes[0] <= 4096 && sizes[1] <= 8192 && sizes[2] <= 4096, "{sizes:?}");
    // The left-out event is reported as a gap on the page where it would have started.
    let gap =
        |r: &Response| (r.header("x-gap-from").map(str::to_string), r.header("x-gap-to").map(str::to_string));
    assert_eq!(gap(&pages[0]), (None, None));
    assert_eq!(gap(&pages[2]), (Some(huge.to_string()), Some(huge.to_string())));
    // A stream still replays the large event whole.
    let mut sub = SseClient::connect(addr, &format!("/events?topic=odd&lastEventId={big}"));
    let e = sub.next_event().unwrap();
    assert_eq!((e.id_u64(), e.data.len()), (huge, 5000), "{:?}", e.event);
    // /latest says so instead of building it.
    let r = get(addr, "/topics/odd/latest", "");
    assert_eq!(r.status, 200);
    publish("\u{1}".repeat(5000));
    let r2 = get(addr, "/topics/odd/latest", "");
    assert_eq!(r2.status, 404, "{}", r2.text());
    assert!(r2.text().contains("read it from a stream"), "{}", r2.text());
    let s = server.stats();
    assert_eq!((s.poll_truncated, s.poll_skipped), (2, 2), "{s:#?}");
}
