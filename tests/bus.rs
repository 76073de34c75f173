//! Scale-out on Redis Streams (`--bus`), against a real `redis-server` per test (on a unix
//! socket in a temp dir) and real sockets: one order for every node, every publish form,
//! two processes on one port, Redis restarted empty, a restarted node resuming from the bus.

mod util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use sse_edge::{Config, Message};
use util::redis::RedisServer;
use util::{
    http_get, spawn_sse_edge, spawn_sse_edge_on, Client, SseClient, SseEvent, TestServer, IO_TIMEOUT,
};

/// Ids must stay exact as JavaScript numbers.
const MAX_SAFE_ID: u64 = (1 << 53) - 1;

fn bus_config(redis: &RedisServer) -> Config {
    let mut c = Config { threads: Some(2), ..Config::loopback() };
    c.bus.url = Some(redis.url());
    c
}

/// Publishes `body` as NDJSON envelopes on `topic`, one per line; the ids in order.
fn publish_ndjson(addr: SocketAddr, topic: &str, data: &[&str]) -> Vec<u64> {
    let body: String = data.iter().map(|d| format!("{{\"topic\":\"{topic}\",\"data\":\"{d}\"}}\n")).collect();
    let r = Client::connect(addr).publish("", Some("application/x-ndjson"), body.as_bytes());
    assert_eq!(r.status, 202, "ndjson publish: {}", r.text());
    r.json()["ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("numeric id")).collect()
}

/// Publishes one raw event with an event name; its id.
fn publish_raw(addr: SocketAddr, topic: &str, event: &str, data: &str) -> u64 {
    let r = Client::connect(addr).publish(
        &format!("topic={topic}&event={event}"),
        Some("text/plain"),
        data.as_bytes(),
    );
    assert_eq!(r.status, 202, "raw publish: {}", r.text());
    r.json()["id"].as_u64().expect("id")
}

/// Reads events until `n` published ones arrived; panics on a gap notice.
fn read_published(sub: &mut SseClient, n: usize) -> Vec<SseEvent> {
    (0..n)
        .map(|i| {
            let e = sub.next_event().unwrap_or_else(|e| panic!("event {i} of {n}: {e}"));
            assert!(e.id.is_some(), "unexpected notice {e:?} at {i}");
            e
        })
        .collect()
}

/// (a) Two nodes on one Redis, every publish form on each in turn: every subscriber of either
/// node sees the identical sequence of (id, event, data), ids strictly increasing below 2^53,
/// and each publish's answer names the ids its events were delivered with.
#[test]
fn two_nodes_deliver_one_order_with_the_same_ids() {
    let redis = RedisServer::start();
    let a = TestServer::start(bus_config(&redis));
    let b = TestServer::start(bus_config(&redis));
    let mut subs: Vec<SseClient> = [a.addr, a.addr, b.addr, b.addr]
        .iter()
        .map(|&addr| SseClient::connect(addr, "/events?topic=jobs"))
        .collect();
    a.wait_stats("two streams on a", |s| s.streams == 2);
    b.wait_stats("two streams on b", |s| s.streams == 2);

    let mut expected: BTreeMap<u64, (Option<String>, String)> = BTreeMap::new();
    let (pa, pb) = (a.handle().publisher(), b.handle().publisher());
    for round in 0..4 {
        let id = publish_raw(a.addr, "jobs", "raw", &format!("a-raw-{round}"));
        expected.insert(id, (Some("raw".into()), format!("a-raw-{round}")));
        let data: Vec<String> = (0..5).map(|i| format!("b-nd-{round}-{i}")).collect();
        let refs: Vec<&str> = data.iter().map(String::as_str).collect();
        for (id, d) in publish_ndjson(b.addr, "jobs", &refs).into_iter().zip(&data) {
            expected.insert(id, (None, d.clone()));
        }
        let msg = Message::new("jobs", format!("a-emb-{round}")).event("emb");
        let id = pa.publish(&msg).expect("embedded publish on a").expect("an id");
        expected.insert(id, (Some("emb".into()), format!("a-emb-{round}")));
        let id = publish_raw(b.addr, "jobs", "raw", &format!("b-raw-{round}"));
        expected.insert(id, (Some("raw".into()), format!("b-raw-{round}")));
        let ids = pb
            .publish_batch(&[
                Message::new("jobs", format!("b-emb-{round}")),
                Message::new("other", "elsewhere"),
            ])
            .expect("embedded batch on b");
        expected.insert(ids[0].expect("an id"), (None, format!("b-emb-{round}")));
        let data: Vec<String> = (0..3).map(|i| format!("a-nd-{round}-{i}")).collect();
        let refs: Vec<&str> = data.iter().map(String::as_str).collect();
        for (id, d) in publish_ndjson(a.addr, "jobs", &refs).into_iter().zip(&data) {
            expected.insert(id, (None, d.clone()));
        }
    }
    let want: Vec<(u64, Option<String>, String)> =
        expected.into_iter().map(|(id, (event, data))| (id, event, data)).collect();
    assert_eq!(want.len(), 4 * 12);
    for (i, sub) in subs.iter_mut().enumerate() {
        let got: Vec<(u64, Option<String>, String)> =
            read_published(sub, want.len()).into_iter().map(|e| (e.id_u64(), e.event, e.data)).collect();
        assert_eq!(got, want, "subscriber {i} (0, 1 on node a; 2, 3 on node b)");
    }
    assert!(want.windows(2).all(|w| w[0].0 < w[1].0), "ids strictly increasing");
    assert!(want.iter().all(|w| w.0 <= MAX_SAFE_ID), "ids below 2^53");
    // Both nodes count what they appended.
    let published = |s: &TestServer| s.stats().published_by_class.iter().sum::<u64>();
    assert_eq!(published(&a) + published(&b), 4 * 13, "every event appended once (one on `other`)");
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sse-edge"))
}

use util::metric_value as metric;

/// (b) Two processes share one port (`SO_REUSEPORT`), each with its own admin listener:
/// subscribers land on both, publishes land on both, and every subscriber receives every
/// event in the same order.
#[test]
fn two_processes_on_one_port_both_deliver_every_event() {
    let redis = RedisServer::start();
    let admin = [util::free_local_port(), util::free_local_port()];
    let node = |admin: u16| {
        let mut cmd = bin();
        cmd.args(["--threads", "1", "--bus", &redis.url(), "--admin-listen", &format!("127.0.0.1:{admin}")]);
        cmd
    };
    let (p1, addr) = spawn_sse_edge(node(admin[0]));
    let (p2, _) = spawn_sse_edge_on(node(admin[1]), &addr.to_string());
    let metrics = |i: usize| http_get(SocketAddr::from(([127, 0, 0, 1], admin[i])), "/metrics").text();
    let streams = |i: usize| metric(&metrics(i), "sse_streams_active{loop=\"0\"}") as usize;
    // The kernel spreads connections by hash: open streams until both processes hold some.
    let mut subs = Vec::new();
    while subs.len() < 64 && (subs.len() < 4 || streams(0) == 0 || streams(1) == 0) {
        subs.push(SseClient::connect(addr, "/events?topic=shared"));
        let deadline = Instant::now() + IO_TIMEOUT;
        while streams(0) + streams(1) < subs.len() {
            assert!(Instant::now() < deadline, "streams never registered");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(streams(0) > 0 && streams(1) > 0, "64 streams all landed on one process");
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(util::publish(addr, "shared", &format!("e{i}")));
    }
    let published = |i: usize| metric(&metrics(i), "sse_events_published_total{class=\"reliable\"}");
    assert!(published(0) > 0.0 && published(1) > 0.0, "20 publishes all landed on one process");
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    for (n, sub) in subs.iter_mut().enumerate() {
        let got: Vec<(u64, String)> =
            read_published(sub, 20).into_iter().map(|e| (e.id_u64(), e.data)).collect();
        let want: Vec<(u64, String)> = sorted
            .iter()
            .map(|id| (*id, format!("e{}", ids.iter().position(|x| x == id).expect("published id"))))
            .collect();
        assert_eq!(got, want, "subscriber {n}");
    }
    drop((p1, p2));
}

/// (c) Redis is killed and restarted empty: publishes meanwhile get 503 + Retry-After (never
/// a hang), the open stream stays open, the reader reconnects by itself, and the new ids are
/// above every id handed out before (none is reused).
#[test]
fn redis_restarted_empty_continues_above_every_old_id() {
    let mut redis = RedisServer::start();
    let node = TestServer::start(Config { publish_wait_timeout_ms: 2_000, ..bus_config(&redis) });
    let mut sub = SseClient::connect(node.addr, "/events?topic=t");
    node.wait_stats("stream", |s| s.streams == 1);
    // Old ids far above Redis's clock (as after a failover to a host whose clock is behind):
    // once Redis comes back empty, only the node's own floor keeps new ids above them.
    let ahead = util::unix_now() * 1_000_000 + 1_000_000_000_000;
    assert_eq!(redis.command(&["SET", "{sse-edge}:seq", &ahead.to_string()]).as_deref(), Some("+OK\r\n"));
    let before: Vec<u64> = (0..3).map(|i| util::publish(node.addr, "t", &format!("old{i}"))).collect();
    assert!(before[0] > ahead, "the old ids come from the raised counter");
    let got = read_published(&mut sub, 3);
    assert_eq!(got.iter().map(SseEvent::id_u64).collect::<Vec<_>>(), before);

    redis.kill();
    let r = Client::connect(node.addr).publish("topic=t", Some("text/plain"), b"lost");
    assert_eq!(r.status, 503, "publish while the bus is down: {}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["ids"], serde_json::json!([null]));
    assert!(node.stats().rejected_for(sse_edge::metrics::RejectReason::BusUnavailable) >= 1);

    redis.restart_empty();
    // The publisher reconnects on the next publish; retry while it does.
    let deadline = Instant::now() + IO_TIMEOUT;
    let first_new = loop {
        let r = Client::connect(node.addr).publish("topic=t", Some("text/plain"), b"new0");
        if r.status == 202 {
            break r.json()["id"].as_u64().expect("id");
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(Instant::now() < deadline, "publishing never recovered: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    };
    let second_new = util::publish(node.addr, "t", "new1");
    assert!(first_new > before[2], "new id {first_new} must be above the old {}", before[2]);
    assert!(second_new == first_new + 1);
    let got = read_published(&mut sub, 2);
    assert_eq!(
        got.iter().map(|e| (e.id_u64(), e.data.as_str())).collect::<Vec<_>>(),
        vec![(first_new, "new0"), (second_new, "new1")],
        "the same stream receives the events published after the restart"
    );
}

/// (e) A restarted node warms its history from the bus: a client resuming from an id
/// published before the restart gets every later event, no gap, then live events.
#[test]
fn a_restarted_node_resumes_from_before_its_restart() {
    let redis = RedisServer::start();
    let first = TestServer::start(bus_config(&redis));
    let ids: Vec<u64> = (0..6).map(|i| util::publish(first.addr, "r", &format!("v{i}"))).collect();
    drop(first);
    let second = TestServer::start(bus_config(&redis));
    let c = Client::connect(second.addr);
    let header = format!("Last-Event-ID: {}\r\n", ids[1]);
    let mut sub = match SseClient::try_open(c, "/events?topic=r", &header).expect("open") {
        Ok(s) => s,
        Err(r) => panic!("resume refused: {} {}", r.status, r.text()),
    };
    let live = util::publish(second.addr, "r", "live");
    let got: Vec<(u64, String)> =
        read_published(&mut sub, 5).into_iter().map(|e| (e.id_u64(), e.data)).collect();
    let mut want: Vec<(u64, String)> = (2..6).map(|i| (ids[i], format!("v{i}"))).collect();
    want.push((live, "live".into()));
    assert_eq!(got, want);
}

/// (d) Without `--bus` the node needs no Redis and keeps numbering its own events.
#[test]
fn without_a_bus_nothing_changes() {
    assert_eq!(Config::default().bus.url, None);
    let node = TestServer::with_threads(1);
    let id = util::publish(node.addr, "t", "x");
    assert_eq!(util::publish(node.addr, "t", "y"), id + 1);
    let body = http_get(node.addr, "/metrics").text();
    assert!(
        !body.contains("sse_bus_") && !body.contains("bus_unavailable"),
        "no bus metric without a bus:\n{body}"
    );
}

/// A `--bus` that cannot be reached fails the start with a message naming the option.
#[test]
fn an_unreachable_bus_fails_the_start() {
    let dir = util::TempDir::new("nobus");
    let mut c = Config::loopback();
    c.bus.url = Some(format!("unix://{}", dir.join("none.sock").display()));
    let err = sse_edge::Server::start(c).err().expect("start must fail");
    assert!(err.to_string().starts_with("--bus"), "{err}");
}

/// Opens `/events?topic=<topic>` resuming after `after` (the `Last-Event-ID` header).
fn resume(addr: SocketAddr, topic: &str, after: u64) -> SseClient {
    let header = format!("Last-Event-ID: {after}\r\n");
    match SseClient::try_open(Client::connect(addr), &format!("/events?topic={topic}"), &header)
        .expect("open")
    {
        Ok(s) => s,
        Err(r) => panic!("resume refused: {} {}", r.status, r.text()),
    }
}

/// (e) A resume from an id the loop's history no longer holds (it keeps 2 events a topic)
/// but the bus does is served from the bus, while another thread keeps publishing: the
/// client gets every event after its id exactly once, in order, and no gap notice.
#[test]
fn a_resume_older_than_history_is_served_from_the_bus_without_gap_or_duplicate() {
    let redis = RedisServer::start();
    // History keeps 100 events of `r`: the resume id (the 2nd of 120) is older than that,
    // and the publishes during the resume stay well inside it while the bus answers (a
    // history that drops events while a bus resume is in flight is a known limit, README).
    let node = TestServer::start(Config { history_max_events: 100, ..bus_config(&redis) });
    let publisher = node.handle().publisher();
    let before: Vec<u64> = (0..120)
        .map(|i| publisher.publish(&Message::new("r", format!("b{i}"))).expect("publish").expect("id"))
        .collect();
    util::publish(node.addr, "other", "not on r");
    let during = std::thread::spawn(move || {
        (0..200)
            .map(|i| {
                if i % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                publisher.publish(&Message::new("r", format!("d{i}"))).expect("publish").expect("id")
            })
            .collect::<Vec<u64>>()
    });
    let mut sub = resume(node.addr, "r", before[1]);
    let during = during.join().expect("publisher thread");
    let want: Vec<u64> = before[2..].iter().chain(&during).copied().collect();
    let got: Vec<u64> = read_published(&mut sub, want.len()).iter().map(SseEvent::id_u64).collect();
    assert_eq!(got, want, "every event after the resume id, once, in order");
}

/// (e) Ids the bus no longer retains (trimmed) get a gap notice with the exact range, then
/// the retained events.
#[test]
fn a_resume_older_than_the_bus_retains_gets_the_exact_gap() {
    let redis = RedisServer::start();
    let node = TestServer::start(Config { history_max_events: 2, ..bus_config(&redis) });
    let ids: Vec<u64> = (0..8).map(|i| util::publish(node.addr, "r", &format!("v{i}"))).collect();
    let trimmed = redis.command(&["XTRIM", "{sse-edge}:events", "MINID", &format!("{}-0", ids[4])]);
    assert_eq!(trimmed.as_deref(), Some(":4\r\n"), "four entries trimmed");
    let mut sub = resume(node.addr, "r", ids[1]);
    let gap = sub.next_event().expect("gap notice");
    assert_eq!(gap.event.as_deref(), Some("gap"));
    let range: serde_json::Value = serde_json::from_str(&gap.data).expect("gap json");
    assert_eq!(range, serde_json::json!({"from": ids[1] + 1, "to": ids[4] - 1}));
    let got: Vec<u64> = read_published(&mut sub, 4).iter().map(SseEvent::id_u64).collect();
    assert_eq!(got, ids[4..].to_vec());
}

/// With a bus no id comes from anywhere but the bus: the node's own status feed (which the
/// hub would sequence locally) stays off, so a stream on a topic and the status topic sees
/// only bus ids, strictly increasing.
#[test]
fn with_a_bus_no_locally_sequenced_id_reaches_a_stream() {
    let redis = RedisServer::start();
    let node = TestServer::start(Config { status_interval_ms: 10, ..bus_config(&redis) });
    let mut sub = SseClient::connect(node.addr, "/events?topic=jobs&topic=sse-edge.status");
    node.wait_stats("stream", |s| s.streams == 1);
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(util::publish(node.addr, "jobs", &format!("j{i}")));
        std::thread::sleep(Duration::from_millis(3));
    }
    let got: Vec<u64> = read_published(&mut sub, ids.len()).iter().map(SseEvent::id_u64).collect();
    assert_eq!(got, ids, "only the bus's events, in the bus's order");
}

/// `?lastEventId=` (what EventSource sends on a first connect) resumes from the bus too.
#[test]
fn the_query_resume_id_is_served_from_the_bus() {
    let redis = RedisServer::start();
    let node = TestServer::start(Config { history_max_events: 1, ..bus_config(&redis) });
    let ids: Vec<u64> = (0..4).map(|i| util::publish(node.addr, "q", &format!("v{i}"))).collect();
    let mut sub = SseClient::connect(node.addr, &format!("/events?topic=q&lastEventId={}", ids[0]));
    let got: Vec<u64> = read_published(&mut sub, 3).iter().map(SseEvent::id_u64).collect();
    assert_eq!(got, ids[1..].to_vec());
}

/// A one-event in-flight window: concurrent HTTP publishers wait for it (parked, woken when
/// the bus answers) and every publish is answered 202 and delivered once.
#[test]
fn a_full_publish_window_makes_publishers_wait_not_fail() {
    let redis = RedisServer::start();
    let mut config = bus_config(&redis);
    config.bus.publish_window = 1;
    let node = TestServer::start(config);
    let mut sub = SseClient::connect(node.addr, "/events?topic=w");
    node.wait_stats("stream", |s| s.streams == 1);
    let addr = node.addr;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let data: Vec<String> = (0..5).map(|i| format!("t{t}-{i}")).collect();
                let refs: Vec<&str> = data.iter().map(String::as_str).collect();
                let mut c = Client::connect(addr);
                (0..5)
                    .flat_map(|_| {
                        let body: String =
                            refs.iter().map(|d| format!("{{\"topic\":\"w\",\"data\":\"{d}\"}}\n")).collect();
                        let r = c.publish("", Some("application/x-ndjson"), body.as_bytes());
                        assert_eq!(r.status, 202, "{}", r.text());
                        r.json()["ids"]
                            .as_array()
                            .expect("ids")
                            .iter()
                            .map(|v| v.as_u64().expect("id"))
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads.into_iter().flat_map(|t| t.join().expect("publisher")).collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 100);
    let got: Vec<u64> = read_published(&mut sub, 100).iter().map(SseEvent::id_u64).collect();
    assert_eq!(got, ids, "every event delivered once, in id order");
    assert!(node.stats().publish_waits > 0, "publishers found the window full and waited");
}

/// A stream that waits for the bus's replay holds a capacity slot; a client that hangs up
/// while it waits (the resume thread's new connection to Redis goes unanswered, while the
/// reader's stays up) is noticed once the answer is in, and its slot is given back.
#[test]
fn a_stream_closed_while_waiting_for_the_bus_gives_back_its_slot() {
    let redis = RedisServer::start();
    let proxy = util::proxy::SwitchProxy::start(redis.socket());
    let mut c = Config { max_connections: 2, history_max_events: 1, ..bus_config(&redis) };
    c.bus.url = Some(proxy.url());
    let node = TestServer::start(c);
    let ids: Vec<u64> = (0..3).map(|i| util::publish(node.addr, "s", &format!("v{i}"))).collect();
    // The reader and the publisher keep their connections; the resume thread's first one
    // (made now) is accepted and never answered, so its scan waits out the socket timeout.
    proxy.switch_to(None);
    let waiting: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(node.addr);
            c.send(
                format!("GET /events?topic=s HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {}\r\n\r\n", ids[0])
                    .as_bytes(),
            );
            c
        })
        .collect();
    // Both requests were parsed and handed to the bus (connections alone could count one
    // still unread, whose slot a third stream could then take first).
    node.wait_stats("both resumes waiting for the bus", |s| s.bus_resumes == 2 && s.streams == 0);
    let full = SseClient::try_open(Client::connect(node.addr), "/events?topic=s", "").expect("answer");
    assert_eq!(full.err().map(|r| r.status), Some(503), "both slots are held by the waiting resumes");
    // Both clients hang up while their streams wait for the bus.
    drop(waiting);
    proxy.switch_to(Some(redis.socket()));
    node.wait_stats("hung-up resumes closed", |s| s.connections == 0);
    let mut a = SseClient::connect(node.addr, "/events?topic=s");
    let mut b = SseClient::connect(node.addr, "/events?topic=s");
    let id = util::publish(node.addr, "s", "after");
    assert_eq!(a.next_published().expect("a").id_u64(), id);
    assert_eq!(b.next_published().expect("b").id_u64(), id);
}

/// `/topics/{t}/events?after=` older than the loop's history is answered from the bus (no
/// gap headers, every event after the id); after a trim the exact range the bus lost is in
/// `X-Gap-From`/`X-Gap-To`; the connection serves its next request after either.
#[test]
fn polling_older_than_history_is_answered_from_the_bus() {
    let redis = RedisServer::start();
    let node = TestServer::start(Config { history_max_events: 2, ..bus_config(&redis) });
    let ids: Vec<u64> = (0..8).map(|i| util::publish(node.addr, "p", &format!("v{i}"))).collect();
    util::publish(node.addr, "elsewhere", "x");
    let mut c = Client::connect(node.addr);
    let get = |c: &mut Client, after: u64| {
        c.request(format!("GET /topics/p/events?after={after} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
    };
    let r = get(&mut c, ids[1]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gap-from"), None, "{}", r.text());
    let got: Vec<(u64, String)> = r
        .json()
        .as_array()
        .expect("list")
        .iter()
        .map(|e| (e["id"].as_u64().expect("id"), e["data"].as_str().expect("data").to_string()))
        .collect();
    let want: Vec<(u64, String)> = (2..8).map(|i| (ids[i], format!("v{i}"))).collect();
    assert_eq!(got, want);

    redis.command(&["XTRIM", "{sse-edge}:events", "MINID", &format!("{}-0", ids[4])]);
    let r = get(&mut c, ids[1]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gap-from"), Some((ids[1] + 1).to_string().as_str()));
    assert_eq!(r.header("x-gap-to"), Some((ids[4] - 1).to_string().as_str()));
    let got: Vec<u64> =
        r.json().as_array().expect("list").iter().map(|e| e["id"].as_u64().expect("id")).collect();
    assert_eq!(got, ids[4..].to_vec());
}

/// `--bus redis://host:port/db` (TCP) works as the unix socket does.
#[test]
fn a_redis_url_over_tcp_works() {
    let redis = RedisServer::start_tcp();
    let mut config = Config { threads: Some(1), ..Config::loopback() };
    config.bus.url = Some(redis.tcp_url());
    let node = TestServer::start(config);
    let mut sub = SseClient::connect(node.addr, "/events?topic=tcp");
    node.wait_stats("stream", |s| s.streams == 1);
    let id = util::publish(node.addr, "tcp", "over tcp");
    let e = sub.next_published().expect("event");
    assert_eq!((e.id_u64(), e.data.as_str()), (id, "over tcp"));
    assert_eq!(redis.command(&["XLEN", "{sse-edge}:events"]).as_deref(), Some(":1\r\n"));
}

/// The `latest` throttle's trailing edge goes through the bus too: a value the throttle held
/// (answered with a null id) reaches the subscribers of both nodes later with one bus id.
#[test]
fn the_throttle_trailing_edge_is_sequenced_by_the_bus() {
    let redis = RedisServer::start();
    // A window far longer than three publishes take, even on a loaded machine.
    let config = || Config { latest_min_interval_ms: 1_000, ..bus_config(&redis) };
    let (a, b) = (TestServer::start(config()), TestServer::start(config()));
    let mut subs =
        [SseClient::connect(a.addr, "/events?topic=job"), SseClient::connect(b.addr, "/events?topic=job")];
    a.wait_stats("stream on a", |s| s.streams == 1);
    b.wait_stats("stream on b", |s| s.streams == 1);
    let publish = |data: &str| {
        let query = "topic=job&class=latest&key=j1";
        Client::connect(a.addr).publish(query, Some("text/plain"), data.as_bytes()).json()["id"].as_u64()
    };
    let first = publish("10%").expect("the first value passes at once");
    assert_eq!(publish("50%"), None, "held by the throttle");
    assert_eq!(publish("100%"), None, "replaces the held value");
    let mut trailing = Vec::new();
    for sub in &mut subs {
        let got: Vec<(u64, String)> =
            read_published(sub, 2).into_iter().map(|e| (e.id_u64(), e.data)).collect();
        assert_eq!(got[0], (first, "10%".to_string()));
        assert_eq!(got[1].1, "100%", "the trailing edge carries the last value");
        assert!(got[1].0 > first);
        trailing.push(got[1].0);
    }
    assert_eq!(trailing[0], trailing[1], "one bus id on both nodes");
    assert_eq!(redis.command(&["XLEN", "{sse-edge}:events"]).as_deref(), Some(":2\r\n"), "two appends");
}

/// `/readyz` says 503 while the bus reader has lost Redis and 200 again once it is back, with
/// no operator action; the open stream stays open throughout and receives what follows.
#[test]
fn readyz_follows_the_bus() {
    let mut redis = RedisServer::start();
    let node = TestServer::start(bus_config(&redis));
    let mut sub = SseClient::connect(node.addr, "/events?topic=r");
    node.wait_stats("stream", |s| s.streams == 1);
    let ready = || http_get(node.addr, "/readyz");
    assert_eq!(ready().status, 200);
    redis.kill();
    let wait_for = |status: u16| {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let r = ready();
            if r.status == status {
                return r;
            }
            assert!(Instant::now() < deadline, "/readyz never answered {status}: {} {}", r.status, r.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let down = wait_for(503);
    assert!(down.text().contains("bus unreachable"), "{}", down.text());
    redis.restart_empty();
    wait_for(200);
    let deadline = Instant::now() + IO_TIMEOUT;
    let id = loop {
        let r = Client::connect(node.addr).publish("topic=r", Some("text/plain"), b"back");
        if r.status == 202 {
            break r.json()["id"].as_u64().expect("id");
        }
        assert!(Instant::now() < deadline, "publishing never recovered: {}", r.text());
        std::thread::sleep(Duration::from_millis(20));
    };
    let e = sub.next_published().expect("the stream stayed open");
    assert_eq!((e.id_u64(), e.data.as_str()), (id, "back"));
}

/// A bus connection that stays open but stops answering (Redis stopped with SIGSTOP) is
/// noticed by the reader's socket timeout (longer than its `XREAD BLOCK`): `/readyz` turns
/// 503, and after SIGCONT the reader reconnects and delivers again.
#[test]
fn a_stale_bus_connection_is_noticed() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let redis = RedisServer::start();
    let node = TestServer::start(bus_config(&redis));
    let mut sub = SseClient::connect(node.addr, "/events?topic=st");
    node.wait_stats("stream", |s| s.streams == 1);
    let pid = Pid::from_raw(redis.guard.as_ref().expect("redis runs").pid() as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP redis-server");
    let deadline = Instant::now() + IO_TIMEOUT;
    while http_get(node.addr, "/readyz").status != 503 {
        assert!(Instant::now() < deadline, "a silent bus was never noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(pid, Signal::SIGCONT).expect("SIGCONT redis-server");
    let deadline = Instant::now() + IO_TIMEOUT;
    while http_get(node.addr, "/readyz").status != 200 {
        assert!(Instant::now() < deadline, "the reader never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = util::publish(node.addr, "st", "after the stall");
    assert_eq!(sub.next_published().expect("event").id_u64(), id);
    let body = http_get(node.addr, "/metrics").text();
    assert!(metric(&body, "sse_bus_reconnects_total") >= 1.0, "the reader reconnected");
    // With a bus, every bus family is exported (without one, none is).
    for family in [
        "sse_bus_connected",
        "sse_bus_publish_inflight",
        "sse_bus_publish_window",
        "sse_bus_gaps_total{reason=\"trimmed\"}",
        "sse_bus_reader_lag_events",
        "sse_bus_publish_seconds_count",
    ] {
        metric(&body, family);
    }
    assert!(body.contains("sse_connections_rejected_total{reason=\"bus_unavailable\"}"), "{body}");
}

/// While a publish waits for the bus (Redis stopped with SIGSTOP, so its answer cannot
/// come), the loop sleeps: the publish is retried on a wake-up or after the fallback, not on
/// every loop pass. Once Redis answers, the publish gets its 202 and its event arrives.
#[test]
fn a_publish_waiting_for_the_bus_does_not_spin_the_loop() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let redis = RedisServer::start();
    let node = TestServer::start(Config { threads: Some(1), ..bus_config(&redis) });
    let mut sub = SseClient::connect(node.addr, "/events?topic=p");
    node.wait_stats("stream", |s| s.streams == 1);
    let pid = Pid::from_raw(redis.guard.as_ref().expect("redis runs").pid() as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP redis-server");
    let addr = node.addr;
    let publisher = std::thread::spawn(move || util::publish(addr, "p", "while stopped"));
    let before = node.wait_stats("the publish waits for the bus", |s| s.parked_publishers == 1);
    // Long enough for a spinning loop to retry it many thousand times.
    std::thread::sleep(Duration::from_millis(300));
    let during = node.stats();
    kill(pid, Signal::SIGCONT).expect("SIGCONT redis-server");
    let id = publisher.join().expect("publisher");
    assert_eq!(sub.next_published().expect("event").id_u64(), id);
    let retries = during.publish_retries - before.publish_retries;
    // About one per ROOM_WAIT_FALLBACK (50 ms) plus wake-ups; a spinning loop makes thousands.
    assert!(retries <= 30, "{retries} retries in 300 ms while waiting for the bus");
}

/// An entry another writer added to the stream (an operator's `XADD ... * f v`: id
/// `<ms>-<seq>`, no topic or body) is skipped and counted: subscribers still get the events
/// published before and after it, and a node started on a stream whose newest entry is such
/// an entry starts and delivers.
#[test]
fn an_entry_another_writer_added_is_skipped() {
    let redis = RedisServer::start();
    let node = TestServer::start(bus_config(&redis));
    let mut sub = SseClient::connect(node.addr, "/events?topic=f");
    node.wait_stats("stream", |s| s.streams == 1);
    let first = util::publish(node.addr, "f", "before");
    let added = redis.command(&["XADD", "{sse-edge}:events", "*", "f", "v"]).expect("XADD");
    assert!(added.starts_with('$'), "XADD answered {added:?}");
    let second = util::publish(node.addr, "f", "after");
    let got: Vec<u64> = read_published(&mut sub, 2).iter().map(SseEvent::id_u64).collect();
    assert_eq!(got, vec![first, second]);
    let gaps = |addr| metric(&http_get(addr, "/metrics").text(), "sse_bus_foreign_entries_total");
    assert_eq!(gaps(node.addr), 1.0, "the foreign entry is counted");
    // A node that starts with the foreign entry as the stream's newest.
    redis.command(&["XADD", "{sse-edge}:events", "*", "f", "v"]).expect("XADD");
    let late = TestServer::start(bus_config(&redis));
    let mut late_sub = SseClient::connect(late.addr, "/events?topic=f");
    late.wait_stats("stream", |s| s.streams == 1);
    let third = util::publish(late.addr, "f", "third");
    assert_eq!(late_sub.next_published().expect("late node delivers").id_u64(), third);
    assert_eq!(sub.next_published().expect("first node delivers").id_u64(), third);
}
