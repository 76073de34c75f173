//! Observability and overload: `/metrics` counts what the test did and passes `promtool check
//! metrics`; a real Prometheus server scrapes the node; `/healthz` names a stuck loop; overload
//! mode sheds droppable events, tells streams, turns `/readyz` to 503 and recovers.
//!
//! `promtool` and `prometheus` come from the Debian `prometheus` package that `scripts/test`
//! installs. Without them these tests fail with a pointer to `scripts/test`; they never pass
//! silently.

mod util;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sse_edge::{Class, CloseReason, Config, Message};
use util::*;

// ---------------------------------------------------------------------------------------------
// A small parser for the Prometheus text format: `name{label="value",...} value [timestamp]`.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|e| panic!("bad exposition line {l:?}: {e}")))
            .collect();
        Metrics { text: text.to_string(), samples }
    }

    fn family(&self, name: &str) -> Vec<&Sample> {
        let found: Vec<&Sample> = self.samples.iter().filter(|s| s.name == name).collect();
        assert!(!found.is_empty(), "no samples named {name} in /metrics:\n{}", self.text);
        found
    }

    /// The sum over every sample named `name` (all label sets).
    fn sum(&self, name: &str) -> f64 {
        self.family(name).iter().map(|s| s.value).sum()
    }

    /// The one sample named `name` whose labels are exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found: Vec<&Sample> = self.family(name).into_iter().filter(|s| s.labels == want).collect();
        assert_eq!(found.len(), 1, "{name}{want:?}: expected one sample, found {found:?}");
        found[0].value
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        loop {
            // label name up to '='
            let mut key = String::new();
            loop {
                match chars.next() {
                    Some((_, '=')) => break,
                    Some((i, '}')) if key.is_empty() => {
                        rest = &inner[i + 1..];
                        return finish(name, labels, rest);
                    }
                    Some((_, c)) if c.is_ascii_alphanumeric() || c == '_' => key.push(c),
                    other => return Err(format!("bad label name at {other:?}")),
                }
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} value is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")? {
                    (_, '"') => break,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            }
            if labels.insert(key.clone(), value).is_some() {
                return Err(format!("label {key} repeated"));
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    rest = &inner[i + 1..];
                    return finish(name, labels, rest);
                }
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
    }
    finish(name, labels, rest)
}

fn finish(name: &str, labels: BTreeMap<String, String>, rest: &str) -> Result<Sample, String> {
    let mut parts = rest.split_whitespace();
    let raw = parts.next().ok_or("no value")?;
    let value = match raw {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>().map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

#[test]
fn the_exposition_parser_reads_labels_escapes_and_specials() {
    let m = Metrics::parse(
        "# HELP a x\n# TYPE a counter\na_total 3\nb{x=\"1\",y=\"q\\\"uo,te}\"} 2.5\nc{} +Inf\n\
         b{x=\"2\",y=\"\"} 1 1700000000000\n",
    );
    assert_eq!(m.get("a_total", &[]), 3.0);
    assert_eq!(m.get("b", &[("x", "1"), ("y", "q\"uo,te}")]), 2.5);
    assert_eq!(m.sum("b"), 3.5);
    assert!(m.get("c", &[]).is_infinite());
    assert!(parse_sample("bad name 1").is_err());
    assert!(parse_sample("x{a=1} 1").is_err());
    assert!(parse_sample("x 1 2 3").is_err());
}

/// `GET /metrics` on a new connection.
fn scrape(addr: SocketAddr) -> Metrics {
    let r = http_get(addr, "/metrics");
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    Metrics::parse(&r.text())
}

/// Polls `/metrics` until `cond` holds; panics with the last scrape after `IO_TIMEOUT`.
fn wait_metrics(addr: SocketAddr, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let m = scrape(addr);
        if cond(&m) {
            return m;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what} in /metrics:\n{}", m.text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `promtool check metrics` with `text` on stdin, prints its output, asserts exit 0.
fn promtool_check_metrics(text: &str) {
    let bin = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    let mut child = match Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "promtool is not installed ({bin:?} not found): run scripts/test, which installs the \
             `prometheus` Debian package that provides it (or `apt-get install prometheus`)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("promtool check metrics ({}):\n{output}", out.status);
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{output}\n--- scraped ---\n{text}",
        out.status
    );
}

/// A subscriber with a tiny receive buffer that does not read (until the test makes it), so
/// its kernel buffers fill quickly and the server's outbox for it overflows.
fn non_reading_subscriber(addr: SocketAddr, path: &str) -> SseClient {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.connect(&addr.into()).expect("connect");
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut c = Client { reader: std::io::BufReader::new(stream) };
    c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n").as_bytes());
    let head = c.read_response();
    assert_eq!(head.status, 200, "subscribe {path}: {}", head.text());
    let mut s = SseClient { reader: c.reader, head };
    let prelude = s.next_raw_frame().expect("prelude");
    assert!(prelude.starts_with("retry: "), "prelude {prelude:?}");
    s
}

fn json_body(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{} body {:?}: {e}", r.status, r.text()))
}

// ---------------------------------------------------------------------------------------------
// 1. /metrics counts what the test did; promtool accepts the text.
// ---------------------------------------------------------------------------------------------

#[test]
fn metrics_count_streams_events_deliveries_drops_and_gaps_and_pass_promtool() {
    const N: u64 = 5;
    const M: u64 = 20;
    let server = TestServer::start(Config {
        threads: Some(2),
        status_interval_ms: 0, // no status feed: every published event is one of ours
        outbox_max_events: 8,
        outbox_max_bytes: 8192,
        ..Config::loopback()
    });
    let addr = server.addr;

    let m0 = scrape(addr);
    assert_eq!(m0.family("sse_streams_active").len(), 2, "one sample per loop");
    assert_eq!(m0.sum("sse_streams_active"), 0.0);
    assert_eq!(m0.sum("sse_events_published_total"), 0.0);
    assert_eq!(m0.sum("sse_deliveries_total"), 0.0);

    let mut subs: Vec<SseClient> = (0..N).map(|_| SseClient::connect(addr, "/events?topic=obs")).collect();
    server.wait_stats("N streams", |s| s.streams == N);
    for i in 0..M {
        publish(addr, "obs", &format!("event {i}"));
    }
    for sub in &mut subs {
        let got: Vec<String> = sub.events(M as usize).into_iter().map(|e| e.data).collect();
        let want: Vec<String> = (0..M).map(|i| format!("event {i}")).collect();
        assert_eq!(got, want);
    }
    server.wait_stats("N x M deliveries", |s| s.deliveries == N * M);

    let m = scrape(addr);
    assert_eq!(m.sum("sse_streams_active"), N as f64, "sum(sse_streams_active)");
    // Every connection so far: N subscribers, M publishes (one connection each), 2 scrapes.
    let accepted = m.sum("sse_connections_accepted_total");
    assert!(accepted >= N as f64, "accepted {accepted} < N");
    assert_eq!(accepted, (N + M + 2) as f64, "sse_connections_accepted_total");
    assert!(m.sum("sse_connections_active") >= (N + 1) as f64);
    assert_eq!(m.get("sse_events_published_total", &[("class", "reliable")]), M as f64);
    assert_eq!(m.get("sse_events_published_total", &[("class", "latest")]), 0.0);
    assert_eq!(m.get("sse_events_published_total", &[("class", "droppable")]), 0.0);
    assert_eq!(m.sum("sse_deliveries_total"), (N * M) as f64, "sum(sse_deliveries_total)");
    assert_eq!(m.sum("sse_events_dropped_total"), 0.0);
    assert_eq!(m.get("sse_gaps_reported_total", &[]), 0.0);
    assert_eq!(m.get("sse_overload_mode", &[]), 0.0);
    assert_eq!(m.sum("sse_loop_up"), 2.0);

    // Forced eviction: a subscriber that does not read, then floods of droppable and reliable
    // events larger than its kernel buffers and its 8-frame / 8 KiB outbox.
    let mut slow = non_reading_subscriber(addr, "/events?topic=flood");
    server.wait_stats("the slow stream", |s| s.streams == N + 1);
    let publisher = server.handle().publisher();
    let payload = "x".repeat(2048);
    for (class, label) in [(Class::Droppable, "droppable"), (Class::Reliable, "reliable")] {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut sent = 0u64;
        while server.stats().evicted_by_class[class.index()] == 0 {
            assert!(
                Instant::now() < deadline && sent < 100_000,
                "no {label} eviction after {sent} events: {:#?}",
                server.stats()
            );
            for _ in 0..64 {
                let msg = Message::new("flood", payload.as_str());
                let msg = if class == Class::Droppable { msg.droppable() } else { msg };
                publisher.publish(&msg).expect("publish");
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let before = server.stats();
    let m = scrape(addr);
    let after = server.stats();
    for (class, label) in [(Class::Droppable, "droppable"), (Class::Reliable, "reliable")] {
        let v = m.get("sse_events_dropped_total", &[("class", label), ("reason", "evicted")]);
        let (lo, hi) = (before.evicted_by_class[class.index()], after.evicted_by_class[class.index()]);
        assert!(v > 0.0, "sse_events_dropped_total{{class={label},reason=evicted}} = {v}");
        assert!(lo as f64 <= v && v <= hi as f64, "{label} evicted {v} not within stats [{lo}, {hi}]");
    }
    assert_eq!(m.get("sse_events_dropped_total", &[("class", "droppable"), ("reason", "shed")]), 0.0);

    // Once it reads, it gets a gap notice for the lost reliable range, and the counter moves.
    let mut gap = None;
    for _ in 0..200_000 {
        let e = slow.next_event().expect("slow subscriber reads");
        if e.event.as_deref() == Some("gap") {
            gap = Some(e);
            break;
        }
    }
    let gap = gap.expect("an event: gap after reliable evictions");
    assert_eq!(gap.id, None, "gap notices carry no id");
    let range: serde_json::Value = serde_json::from_str(&gap.data).expect("gap JSON");
    let (from, to) = (range["from"].as_u64().expect("from"), range["to"].as_u64().expect("to"));
    assert!(from <= to, "gap {range}");
    server.wait_stats("a gap reported", |s| s.gaps_reported > 0);
    let m = scrape(addr);
    let gaps = m.get("sse_gaps_reported_total", &[]);
    assert!(gaps > 0.0 && gaps <= server.stats().gaps_reported as f64, "sse_gaps_reported_total {gaps}");
    assert_eq!(
        m.get("sse_events_published_total", &[("class", "reliable")]),
        server.stats().published_by_class[Class::Reliable.index()] as f64
    );

    promtool_check_metrics(&m.text);
}

// ---------------------------------------------------------------------------------------------
// 2. A real Prometheus server scrapes the node.
// ---------------------------------------------------------------------------------------------

/// The value of an instant query's first sample, or `None` (not ready, no data, error).
fn prom_query(prom: SocketAddr, query: &str) -> Option<String> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let r = try_http_get(prom, &format!("/api/v1/query?query={encoded}")).ok()?;
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    assert_eq!(v["status"], "success", "{query}: {v}");
    v["data"]["result"].get(0)?["value"].get(1)?.as_str().map(str::to_string)
}

/// Prometheus with `dir`'s `prometheus.yml` on 127.0.0.1:`port`, logging to `log_path`, once
/// it answers `/-/ready`; `Err(log)` (Prometheus stopped) when that port was taken.
fn start_prometheus(
    prometheus: &Path,
    dir: &TempDir,
    log_path: &Path,
    port: u16,
) -> Result<(ProcessGuard, SocketAddr), String> {
    let log = std::fs::File::create(log_path).expect("log file");
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let mut prom = ProcessGuard::new("prometheus", child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let read_log = || std::fs::read_to_string(log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = read_log();
        if port_taken(&log) {
            return Err(log);
        }
        if let Some(status) = prom.exited() {
            panic!("prometheus exited ({status}):\n{}", read_log());
        }
        // The body tells Prometheus from another process that took the port.
        match try_http_get(addr, "/-/ready") {
            Ok(r) if r.status == 200 && r.text().contains("Prometheus") => return Ok((prom, addr)),
            _ => {}
        }
        assert!(Instant::now() < deadline, "prometheus not ready on {addr} after 30 s:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_real_prometheus_scrapes_stream_counts() {
    const S: u64 = 6;
    const M: u64 = 3;
    let prometheus = require_binary("/usr/bin/prometheus", "prometheus");
    let server = TestServer::start(Config { threads: Some(2), status_interval_ms: 0, ..Config::loopback() });
    let _subs: Vec<SseClient> =
        (0..S).map(|_| SseClient::connect(server.addr, "/events?topic=prom")).collect();
    server.wait_stats("S streams", |s| s.streams == S);
    for i in 0..M {
        publish(server.addr, "prom", &i.to_string());
    }

    let dir = TempDir::new("prometheus");
    let target = format!("      - targets: ['127.0.0.1:{}']", server.addr.port());
    let config = [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "  evaluation_interval: 1s",
        "scrape_configs:",
        "  - job_name: sse-edge",
        "    scrape_interval: 1s",
        "    scrape_timeout: 1s",
        "    static_configs:",
        &target,
        "",
    ]
    .join("\n");
    std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
    let log_path = dir.join("prometheus.log");
    let (mut prom, prom_addr) =
        start_on_free_port("prometheus", |port| start_prometheus(&prometheus, &dir, &log_path, port));
    println!("prometheus pid {} on {prom_addr}", prom.pid());

    let want = [
        ("sum(sse_streams_active)", S.to_string()),
        ("up{job=\"sse-edge\"}", "1".to_string()),
        ("sum(sse_events_published_total{class=\"reliable\"})", M.to_string()),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    for (query, expected) in want {
        let mut last = None;
        loop {
            if let Some(status) = prom.exited() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("prometheus exited ({status}):\n{log}");
            }
            last = prom_query(prom_addr, query).or(last);
            if last.as_deref() == Some(expected.as_str()) {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("{query}: want {expected}, last {last:?} after 30 s; prometheus log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(server.stats().streams, S);
}

// ---------------------------------------------------------------------------------------------
// 3. /healthz names a stuck loop; /readyz.
// ---------------------------------------------------------------------------------------------

#[test]
fn healthz_reports_a_stuck_loop_and_recovers() {
    let server = TestServer::start(Config {
        threads: Some(2),
        admin_listen: Some(([127, 0, 0, 1], 0).into()),
        status_interval_ms: 100,
        ..Config::loopback()
    });
    // The admin listener lives on loop 0 only, so its connections are never owned by loop 1.
    let admin = server.handle().admin_addr().expect("admin address");
    let mut c = Client::connect(admin);
    let get =
        |c: &mut Client, path: &str| c.request(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());

    let r = get(&mut c, "/healthz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_body(&r), serde_json::json!({"status": "ok", "loops": 2}));
    let r = get(&mut c, "/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_body(&r)["status"], "ready");
    // With an admin listener, the public one no longer serves operator endpoints.
    let r = Client::connect(server.addr).request(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 404, "public /healthz: {}", r.text());

    assert!(server.handle().debug_block_loop(1, Duration::from_secs(3)), "block message queued");
    let r = get(&mut c, "/healthz");
    assert_eq!(r.status, 503, "while loop 1 sleeps: {}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(json_body(&r), serde_json::json!({"status": "unhealthy", "unresponsive_loops": [1]}));
    // The monitor's own probe marks the loop down too (it is still asleep).
    let m = wait_metrics(admin, "sse_loop_up{loop=1} = 0", |m| m.get("sse_loop_up", &[("loop", "1")]) == 0.0);
    assert_eq!(m.get("sse_loop_up", &[("loop", "0")]), 1.0);
    // /readyz does not depend on the loops' health.
    assert_eq!(get(&mut c, "/readyz").status, 200);

    // After the block ends, loop 1 answers again.
    let deadline = Instant::now() + IO_TIMEOUT;
    let r = loop {
        let r = get(&mut c, "/healthz");
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
    };
    assert_eq!(r.status, 200, "after the block: {}", r.text());
    assert_eq!(json_body(&r), serde_json::json!({"status": "ok", "loops": 2}));
    wait_metrics(admin, "sse_loop_up{loop=1} = 1", |m| m.sum("sse_loop_up") == 2.0);
}

// ---------------------------------------------------------------------------------------------
// 4. Overload mode: on from queued bytes, shed droppable, tell streams, unready, recover.
// ---------------------------------------------------------------------------------------------

#[test]
fn overload_sheds_droppable_tells_streams_and_recovers() {
    const QUEUED_LIMIT: u64 = 256 << 10;
    let server = TestServer::start(Config {
        threads: Some(2),
        overload_queued_bytes: QUEUED_LIMIT,
        status_interval_ms: 100,
        heartbeat_ms: 100, // outbox gauges refresh every 25 ms
        unready_when_overloaded: true,
        ..Config::loopback()
    });
    let addr = server.addr;
    let mut reader = SseClient::connect(addr, "/events?topic=news");
    let mut status = SseClient::connect(addr, "/events?topic=sse-edge.status");
    let stuck: Vec<SseClient> = (0..4).map(|_| non_reading_subscriber(addr, "/events?topic=big")).collect();
    server.wait_stats("6 streams", |s| s.streams == 6);
    assert_eq!(http_get(addr, "/readyz").status, 200);

    // Large events the stuck subscribers never read, until overload mode begins.
    let publisher = server.handle().publisher();
    let big = "B".repeat(64 << 10);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut sent = 0;
    while scrape(addr).get("sse_overload_mode", &[]) == 0.0 {
        assert!(
            Instant::now() < deadline && sent < 5_000,
            "no overload after {sent} events of 64 KiB: {:#?}",
            server.stats()
        );
        for _ in 0..8 {
            publisher.publish(&Message::new("big", big.as_str())).expect("publish");
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("overload after {sent} events of 64 KiB; queued {} bytes", server.stats().outbox_queued_bytes);
    assert!(server.stats().outbox_queued_bytes >= QUEUED_LIMIT / 2);

    // The reading subscriber is told first (it is subscribed to nothing that was published).
    let e = reader.next_event().expect("system.overloaded");
    assert_eq!(e.event.as_deref(), Some("system.overloaded"), "{e:?}");
    assert_eq!(e.id, None);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&e.data).unwrap(),
        serde_json::json!({"overloaded": true})
    );
    // The status feed says so too.
    let mut seen = 0;
    loop {
        let e = status.next_event().expect("status feed");
        seen += 1;
        assert!(seen < 1000, "no status event with overload=true");
        if e.event.as_deref() == Some("status") {
            let s: serde_json::Value = serde_json::from_str(&e.data).expect("status JSON");
            if s["overload"] == true {
                break;
            }
        }
    }

    let r = http_get(addr, "/readyz");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(json_body(&r)["status"], "overloaded");
    assert_eq!(r.header("retry-after"), Some("5"));

    // Droppable events are shed; reliable ones still arrive, in order.
    let shed_before = server.stats().shed;
    for i in 0..5 {
        let r = Client::connect(addr).publish(
            &format!("topic=news&class=droppable&event=d{i}"),
            None,
            b"drop me",
        );
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let id = publish(addr, "news", "still here");
    let e = reader.next_event().expect("the reliable event");
    assert_eq!((e.data.as_str(), e.id_u64()), ("still here", id), "droppable events were not shed: {e:?}");
    let s = server.wait_stats("5 shed", |s| s.shed >= shed_before + 5);
    assert_eq!(s.shed, shed_before + 5, "one shed delivery per droppable event (one subscriber)");
    let m = scrape(addr);
    assert_eq!(m.get("sse_overload_mode", &[]), 1.0);
    assert_eq!(
        m.get("sse_events_dropped_total", &[("class", "droppable"), ("reason", "shed")]),
        s.shed as f64
    );
    assert_eq!(m.get("sse_events_published_total", &[("class", "droppable")]), 5.0);

    // Queued bytes fall once the stuck clients go; after the 2 s hold, overload ends.
    drop(stuck);
    server.wait_stats("stuck streams closed", |s| s.streams == 2);
    let e = reader.next_event().expect("system.recovered (hold is 2 s)");
    assert_eq!(
        e.event.as_deref(),
        Some("system.recovered"),
        "the next event after the stuck clients left: {e:?}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&e.data).unwrap(),
        serde_json::json!({"overloaded": false})
    );
    wait_metrics(addr, "sse_overload_mode 0", |m| m.get("sse_overload_mode", &[]) == 0.0);
    assert_eq!(http_get(addr, "/readyz").status, 200);

    // Droppable events flow again.
    let r = Client::connect(addr).publish("topic=news&class=droppable", None, b"telemetry");
    assert_eq!(r.status, 202);
    let e = reader.next_event().expect("droppable after recovery");
    assert_eq!(e.data, "telemetry");
}

// ---------------------------------------------------------------------------------------------
// Consistency between Stats, /metrics and the documented metric set.
// ---------------------------------------------------------------------------------------------

/// Overload from loop lag (`--overload-lag-ms`): `/metrics` and `Handle::stats()` agree.
#[test]
fn overload_from_loop_lag_shows_in_metrics_and_stats() {
    let server = TestServer::start(Config {
        threads: Some(2),
        overload_lag_ms: 200,
        // The lag gauge holds each tick's longest iteration for one tick (1 s with the default
        // heartbeat), so the 100 ms monitor cannot miss it.
        status_interval_ms: 100,
        ..Config::loopback()
    });
    let mut sub = SseClient::connect(server.addr, "/events?topic=lag");
    server.wait_stats("stream", |s| s.streams == 1);
    assert!(!server.stats().overloaded);
    assert!(server.handle().debug_block_loop(0, Duration::from_millis(800)));
    let e = sub.next_event().expect("system.overloaded");
    assert_eq!(e.event.as_deref(), Some("system.overloaded"), "{e:?}");
    let (m, stats) = {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let m1 = scrape(server.addr);
            let stats = server.stats();
            let m2 = scrape(server.addr);
            let on = |m: &Metrics| m.get("sse_overload_mode", &[]) == 1.0;
            if on(&m1) && on(&m2) {
                break (m2, stats);
            }
            assert!(Instant::now() < deadline, "sse_overload_mode never 1:\n{}", m2.text);
        }
    };
    assert!(m.get("sse_loop_lag_seconds", &[("loop", "0")]) >= 0.0);
    // Without --unready-when-overloaded, readiness is unaffected.
    assert_eq!(http_get(server.addr, "/readyz").status, 200);
    assert!(
        stats.overloaded,
        "BUG: sse_overload_mode is 1 but Handle::stats().overloaded is false \
         (Handle::stats never fills Stats::overloaded): {stats:#?}"
    );
}

/// Every close reason counted in `Stats::closed` is exported as `sse_disconnects_total`.
#[test]
fn disconnects_by_reason_cover_request_timeouts() {
    let server =
        TestServer::start(Config { threads: Some(1), request_timeout_ms: 200, ..Config::loopback() });
    // A request head that never completes is closed for `timeout` (slowloris).
    let mut slow = Client::connect(server.addr);
    slow.send(b"GET /events?topic=x HTTP/1.1\r\n");
    assert!(slow.is_closed_by_server(), "slow request closed");
    let stats = server.wait_stats("a timeout close", |s| s.closed_for(CloseReason::Timeout) == 1);
    let m = scrape(server.addr);
    let total: u64 = stats.closed.iter().sum();
    assert_eq!(
        m.sum("sse_disconnects_total"),
        total as f64,
        "BUG: sum(sse_disconnects_total) differs from Stats::closed {:?}: the `timeout` reason is missing \
         (CloseReason::ALL in src/metrics.rs omits CloseReason::Timeout, so exposition never renders it, \
         so monitoring/alerts.yml's SseEdgeAbnormalDisconnects never counts timeouts)",
        stats.closed
    );
    assert_eq!(m.get("sse_disconnects_total", &[("reason", "timeout")]), 1.0);
}
