//! Every way a node can lose events on the bus ends in a gap notice to exactly the affected
//! subscribers, never in silence: a node stopped (SIGSTOP) while the bus trims past it, and
//! Redis restarted empty while a node had events left to read. Real `redis-server`, a real
//! second node process, real sockets; each test checks what every client received, id by id.

mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sse_edge::Config;
use util::proxy::SwitchProxy;
use util::redis::RedisServer;
use util::{http_get, spawn_sse_edge, Client, SseClient, SseEvent, TestServer, IO_TIMEOUT};

fn bus_config(redis: &RedisServer, maxlen: u64) -> Config {
    let mut c = Config { threads: Some(1), ..Config::loopback() };
    c.bus.url = Some(redis.url());
    c.bus.maxlen = maxlen;
    c
}

/// A second node, in its own process (so that it can be stopped).
fn node_process(redis: &RedisServer) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sse-edge"));
    cmd.args(["--threads", "1", "--bus", &redis.url(), "--heartbeat-ms", "60000"]);
    cmd
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap_or_else(|e| panic!("{sig} to {pid}: {e}"));
}

/// Publishes `n` events on `topic` in NDJSON batches of 100; their ids in order.
fn publish_many(addr: std::net::SocketAddr, topic: &str, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let batch = (n - ids.len()).min(100);
        let body: String = (0..batch)
            .map(|i| format!("{{\"topic\":\"{topic}\",\"data\":\"{}\"}}\n", ids.len() + i))
            .collect();
        let r = Client::connect(addr).publish("", Some("application/x-ndjson"), body.as_bytes());
        assert_eq!(r.status, 202, "{}", r.text());
        ids.extend(r.json()["ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id")));
    }
    ids
}

/// A gap notice's range.
fn gap_range(e: &SseEvent) -> Option<(u64, u64)> {
    if e.event.as_deref() != Some("gap") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&e.data).expect("gap data is JSON");
    Some((v["from"].as_u64().expect("from"), v["to"].as_u64().expect("to")))
}

/// Reads until the event with id `until` arrived: every frame with an id or a gap notice.
fn read_until(sub: &mut SseClient, until: u64) -> Vec<SseEvent> {
    let mut got = Vec::new();
    loop {
        let e = sub.next_event().unwrap_or_else(|e| panic!("waiting for {until}, got {got:?}: {e}"));
        if e.id.is_none() && gap_range(&e).is_none() {
            continue;
        }
        let done = e.id.is_some() && e.id_u64() >= until;
        got.push(e);
        if done {
            return got;
        }
    }
}

/// Checks that `got` is a prefix of `published` (after `had`, the last id the client had),
/// then exactly one gap covering exactly the ids of `published` it skips, then the rest of
/// `published`, then `live`; returns the gap.
fn assert_one_exact_gap(got: &[SseEvent], had: u64, published: &[u64], live: u64) -> (u64, u64) {
    let gaps: Vec<(usize, (u64, u64))> =
        got.iter().enumerate().filter_map(|(i, e)| gap_range(e).map(|g| (i, g))).collect();
    assert_eq!(gaps.len(), 1, "exactly one gap notice: {got:?}");
    let (at, (from, to)) = gaps[0];
    let before: Vec<u64> = got[..at].iter().map(SseEvent::id_u64).collect();
    let after: Vec<u64> = got[at + 1..].iter().map(SseEvent::id_u64).collect();
    assert_eq!(before, published[..before.len()], "before the gap: the oldest published, in order");
    let last_before = before.last().copied().unwrap_or(had);
    assert_eq!(from, last_before + 1, "the gap starts right after the last event received");
    let lost: Vec<u64> = published[before.len()..].iter().copied().filter(|&id| id <= to).collect();
    assert!(!lost.is_empty(), "the gap covers published events");
    assert_eq!(to, *lost.last().expect("lost"), "the gap ends at the last lost event");
    let rest: Vec<u64> = published[before.len() + lost.len()..].iter().copied().chain([live]).collect();
    assert_eq!(after, rest, "after the gap: every later event, then the live one");
    (from, to)
}

fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    util::metric_value(&http_get(addr, "/metrics").text(), name)
}

/// A node stopped while publishing on another node passes the bus's trim: after SIGCONT, the
/// subscribers of the topic that lost events get exactly one gap with the exact range, then
/// every event still in the bus and live events; a topic whose only event fell in the trim is
/// told too (its newest id from the topics hash); a topic that lost nothing gets nothing.
#[test]
fn a_node_stopped_past_the_trim_tells_exactly_the_affected_subscribers() {
    let redis = RedisServer::start();
    let a = TestServer::start(bus_config(&redis, 10));
    let (mut b, b_addr) = spawn_sse_edge(node_process(&redis));
    let mut subs: Vec<SseClient> = ["t", "quiet", "tail"]
        .iter()
        .map(|t| SseClient::connect(b_addr, &format!("/events?topic={t}")))
        .collect();
    let mut opened = 0.0;
    let deadline = Instant::now() + IO_TIMEOUT;
    while opened < 3.0 {
        assert!(Instant::now() < deadline, "streams never opened on b");
        std::thread::sleep(Duration::from_millis(10));
        opened = metric(b_addr, "sse_streams_active{loop=\"0\"}");
    }
    let t0 = util::publish(a.addr, "t", "t0");
    let q0 = util::publish(a.addr, "quiet", "q0");
    assert_eq!(subs[0].next_published().expect("t0").id_u64(), t0);
    assert_eq!(subs[1].next_published().expect("q0").id_u64(), q0);

    signal(b.pid(), Signal::SIGSTOP);
    // The stopped node's pending read is answered with the first batch (it reads those on
    // waking); the rest, the tail topic's one event among them, is trimmed before it reads.
    let mut published = publish_many(a.addr, "t", 300);
    let tail = util::publish(a.addr, "tail", "only one");
    published.extend(publish_many(a.addr, "t", 1_000));
    let len: u64 =
        redis.command(&["XLEN", "{sse-edge}:events"]).and_then(|r| r[1..].trim().parse().ok()).expect("XLEN");
    assert!(len < 1_000, "the bus trimmed (kept {len})");
    signal(b.pid(), Signal::SIGCONT);

    let live = util::publish(a.addr, "t", "live");
    let got = read_until(&mut subs[0], live);
    assert_one_exact_gap(&got, t0, &published, live);
    // The tail topic: its one event was trimmed and nothing followed it.
    let e = subs[2].next_event().expect("tail notice");
    let (from, to) = gap_range(&e).unwrap_or_else(|| panic!("a gap, got {e:?}"));
    assert_eq!(to, tail, "ends at the tail topic's lost event");
    assert!(from <= tail, "{from}..={to}");
    // The quiet topic lost nothing: its next frame is its next event.
    let q1 = util::publish(a.addr, "quiet", "q1");
    let e = subs[1].next_event().expect("q1");
    assert_eq!((e.id_u64(), e.data.as_str()), (q1, "q1"), "no notice for a topic that lost nothing");
    assert_eq!(metric(b_addr, "sse_bus_gaps_total{reason=\"trimmed\"}"), 1.0);
    assert_eq!(metric(b_addr, "sse_bus_gaps_total{reason=\"bus_reset\"}"), 0.0);
    assert!(b.is_running(), "b serves on");
}

/// Redis restarted empty while a stopped node still had events to read: once it runs again,
/// its subscribers get one gap from the last event they received to just before the first
/// event of the new bus, then that event; new ids are above every old one.
#[test]
fn redis_restarted_empty_tells_every_subscriber_what_it_may_have_missed() {
    let mut redis = RedisServer::start();
    let a = TestServer::start(Config { publish_wait_timeout_ms: 2_000, ..bus_config(&redis, 1_000_000) });
    let (mut b, b_addr) = spawn_sse_edge(node_process(&redis));
    let mut sub = SseClient::connect(b_addr, "/events?topic=t");
    let deadline = Instant::now() + IO_TIMEOUT;
    while metric(b_addr, "sse_streams_active{loop=\"0\"}") < 1.0 {
        assert!(Instant::now() < deadline, "stream never opened on b");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = util::publish(a.addr, "t", "t0");
    assert_eq!(sub.next_published().expect("t0").id_u64(), t0);

    signal(b.pid(), Signal::SIGSTOP);
    let unread: Vec<u64> = (1..=3).map(|i| util::publish(a.addr, "t", &format!("t{i}"))).collect();
    redis.kill();
    redis.restart_empty();
    let deadline = Instant::now() + IO_TIMEOUT;
    let first_new = loop {
        let r = Client::connect(a.addr).publish("topic=t", Some("text/plain"), b"new");
        if r.status == 202 {
            break r.json()["id"].as_u64().expect("id");
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(Instant::now() < deadline, "publishing never recovered: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(first_new > unread[2], "new id {first_new} is above every old one");
    signal(b.pid(), Signal::SIGCONT);

    // What the stopped node had already been sent arrives; the rest is gone with the bus,
    // which no longer knows which topics it was on: the gap runs up to the new bus's first.
    let got = read_until(&mut sub, first_new);
    let at = got.iter().position(|e| gap_range(e).is_some()).unwrap_or_else(|| panic!("no gap: {got:?}"));
    let before: Vec<u64> = got[..at].iter().map(SseEvent::id_u64).collect();
    assert_eq!(before, unread[..before.len()], "{got:?}");
    assert!(before.len() < unread.len(), "some events were lost: {got:?}");
    let from = before.last().copied().unwrap_or(t0) + 1;
    assert_eq!(gap_range(&got[at]), Some((from, first_new - 1)), "{got:?}");
    assert_eq!(got[at + 1..].iter().map(SseEvent::id_u64).collect::<Vec<_>>(), vec![first_new]);
    assert_eq!(metric(b_addr, "sse_bus_gaps_total{reason=\"bus_reset\"}"), 1.0);
    assert!(b.is_running(), "b serves on");
}

/// A client resuming on a node with an id another node handed out and this node has not
/// read yet (its reader is a batch behind) resumes right after that id: no event twice, none
/// missing. Tried many times, as the window is short; each try must be exact either way.
#[test]
fn a_resume_id_this_node_has_not_read_yet_resumes_right_after_it() {
    let redis = RedisServer::start();
    let a = TestServer::start(bus_config(&redis, 1_000_000));
    let b = TestServer::start(bus_config(&redis, 1_000_000));
    for round in 0..20 {
        let ids = publish_many(a.addr, "r", 1_000);
        let last = *ids.last().expect("ids");
        let header = format!("Last-Event-ID: {last}\r\n");
        let mut sub = SseClient::try_open(Client::connect(b.addr), "/events?topic=r", &header)
            .expect("open")
            .unwrap_or_else(|r| panic!("round {round}: {}", r.status));
        let next = util::publish(a.addr, "r", "next");
        let e = sub.next_event().unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!((e.id.clone(), e.data.as_str()), (Some(next.to_string()), "next"), "round {round}: {e:?}");
    }
}

/// Kills every client of `redis` but the one blocked in `XREAD` (the node's reader), taken
/// at a moment it is blocked (between two reads it briefly is not).
fn kill_all_but_the_reader(redis: &RedisServer) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let list = loop {
        let list = redis.command(&["CLIENT", "LIST"]).expect("CLIENT LIST");
        if list.lines().any(|l| l.contains("cmd=xread") && l.contains("flags=b")) {
            break list;
        }
        assert!(Instant::now() < deadline, "the reader never blocked in XREAD: {list}");
        std::thread::sleep(Duration::from_millis(5));
    };
    for line in
        list.lines().filter(|l| l.contains("id=") && !(l.contains("cmd=xread") && l.contains("flags=b")))
    {
        let id = line
            .split(' ')
            .find_map(|f| f.strip_prefix("id="))
            .expect("id")
            .trim_start_matches(|c: char| !c.is_ascii_digit());
        redis.command(&["CLIENT", "KILL", "ID", id]);
    }
}

/// The reader's connection stays open and answers, but to a Redis that no longer gets the
/// cluster's appends (the old primary after a failover): the watchdog sees that this node's
/// own appends go unread, reconnects, and the subscriber is told of what the switch may have
/// cost (the new Redis is empty) before the event arrives.
#[test]
fn a_reader_left_on_a_replaced_redis_is_noticed_by_the_watchdog() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let proxy = SwitchProxy::start(old.socket());
    let mut c = Config { threads: Some(1), publish_wait_timeout_ms: 1_000, ..Config::loopback() };
    c.bus.url = Some(format!("unix://{}", proxy.path.display()));
    let node = TestServer::start(c);
    let mut sub = SseClient::connect(node.addr, "/events?topic=w");
    node.wait_stats("stream", |s| s.streams == 1);
    let before = util::publish(node.addr, "w", "before");
    assert_eq!(sub.next_published().expect("before").id_u64(), before);

    proxy.switch_to(Some(new.socket()));
    kill_all_but_the_reader(&old);
    let deadline = Instant::now() + IO_TIMEOUT;
    let after = loop {
        let r = Client::connect(node.addr).publish("topic=w", Some("text/plain"), b"after");
        if r.status == 202 {
            break r.json()["id"].as_u64().expect("id");
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(Instant::now() < deadline, "publishing never moved to the new Redis: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(after > before);
    let got = read_until(&mut sub, after);
    let ids: Vec<Option<(u64, u64)>> = got.iter().map(gap_range).collect();
    assert_eq!(ids, vec![Some((before + 1, after - 1)), None], "{got:?}");
    assert_eq!(got[1].id_u64(), after);
    assert_eq!(metric(node.addr, "sse_bus_stale_reconnects_total"), 1.0);
}

/// While Redis does not answer (stopped with SIGSTOP: connections hang instead of failing),
/// resumes older than history are answered at once from history, each with its gap: none
/// waits on the dead bus, however many queue up. After SIGCONT the bus serves them again.
#[test]
fn resumes_while_the_bus_hangs_are_answered_from_history_at_once() {
    let redis = RedisServer::start();
    let node = TestServer::start(Config { history_max_events: 2, ..bus_config(&redis, 1_000_000) });
    let ids = publish_many(node.addr, "h", 10);
    let pid = redis.guard.as_ref().expect("running").pid();
    signal(pid, Signal::SIGSTOP);
    let deadline = Instant::now() + IO_TIMEOUT;
    while http_get(node.addr, "/readyz").status != 503 {
        assert!(Instant::now() < deadline, "the reader never noticed the bus hanging");
        std::thread::sleep(Duration::from_millis(20));
    }
    let header = format!("Last-Event-ID: {}\r\n", ids[0]);
    // All twenty asked at once, then their answers read, the last asked first (it would
    // wait behind every other one if resumes waited on the bus in turn).
    let asked: Vec<Client> = (0..20)
        .map(|_| {
            let mut c = Client::connect(node.addr);
            SseClient::send_open(&mut c, "/events?topic=h", &header);
            c
        })
        .collect();
    let subs: Vec<SseClient> = asked
        .into_iter()
        .enumerate()
        .rev()
        .map(|(i, c)| {
            SseClient::finish_open(c, "/events?topic=h")
                .unwrap_or_else(|e| panic!("resume {i} waited on the bus: {e}"))
                .unwrap_or_else(|r| panic!("resume {i}: {}", r.status))
        })
        .collect();
    for (i, mut sub) in subs.into_iter().enumerate() {
        let e = sub.next_event().unwrap_or_else(|e| panic!("resume {i}: {e}"));
        assert_eq!(gap_range(&e), Some((ids[0] + 1, ids[7])), "resume {i}: told of what history lacks");
        let got: Vec<u64> = (0..2).map(|_| sub.next_published().expect("event").id_u64()).collect();
        assert_eq!(got, ids[8..], "resume {i}: then history");
    }
    signal(pid, Signal::SIGCONT);
    // Once the bus answers again, a resume is served from it in full.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut sub = SseClient::try_open(Client::connect(node.addr), "/events?topic=h", &header)
            .expect("open")
            .unwrap_or_else(|r| panic!("{}", r.status));
        let e = sub.next_event().expect("first frame");
        if gap_range(&e).is_none() {
            assert_eq!(e.id_u64(), ids[1], "from the bus, no gap");
            break;
        }
        assert!(Instant::now() < deadline, "the bus never served resumes again");
        std::thread::sleep(Duration::from_millis(100));
    }
}
