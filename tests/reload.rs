//! The config file and SIGHUP reload, end to end on the `sse-edge` binary: rotating publish
//! tokens and subscribe keys under 1,000 open streams drops none of them, a broken file
//! changes nothing, a restart-only setting is logged and kept, and `--print-config` shows
//! each value's source with secrets masked.

mod util;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use util::*;

const BIN: &str = env!("CARGO_BIN_EXE_sse-edge");

/// Writes the config file whole (a rename), so a reload never reads half of it.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// What every test's file starts with: 2 loops, unpinned (the machine is shared).
const BASE: &str = "threads = 2\npin_threads = false\n";

/// `sse-edge --config path` with `RUST_LOG` unset, so `log_level` rules.
fn spawn(path: &Path, extra: &[&str]) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(path).args(extra);
    cmd.env_remove("RUST_LOG");
    spawn_sse_edge(cmd)
}

fn hup(child: &ChildGuard) {
    kill(Pid::from_raw(child.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
}

fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").text()
}

/// Waits until `sse_config_reloads_total{result=...}` reaches `n` (a reload is asynchronous
/// to the signal), then checks it did not overshoot.
fn wait_reloads(addr: SocketAddr, child: &ChildGuard, result: &str, n: f64) {
    let name = format!("sse_config_reloads_total{{result=\"{result}\"}}");
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let got = metric_value(&metrics(addr), &name);
        if got >= n {
            assert_eq!(got, n, "{name}");
            return;
        }
        assert!(Instant::now() < deadline, "{name} stayed {got}, want {n}; log:\n{}", child.log().text());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn config_hash(addr: SocketAddr) -> String {
    let body = metrics(addr);
    let line = body.lines().find(|l| l.starts_with("sse_config_info{")).expect("sse_config_info");
    line.split('"').nth(1).expect("hash label").to_string()
}

fn publish_with(addr: SocketAddr, token: &str, topic: &str, data: &str) -> Response {
    let raw = format!(
        "POST /publish?topic={topic} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{data}",
        data.len()
    );
    Client::connect(addr).request(raw.as_bytes())
}

fn published_id(r: &Response) -> u64 {
    assert_eq!(r.status, 202, "publish: {}", r.text());
    r.json()["id"].as_u64().expect("id")
}

fn mint(key: &str, topics: &[&str]) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = serde_json::json!({"sub": "reload", "topics": topics, "exp": exp});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(key.as_bytes())).expect("sign")
}

/// Opens a stream on `topic` with a token signed by `key`: the stream, or the refusal.
fn subscribe(addr: SocketAddr, topic: &str, key: &str) -> Result<SseClient, Response> {
    let path = format!("/events?topic={topic}&token={}", mint(key, &[topic]));
    SseClient::try_open(Client::connect(addr), &path, "").expect("subscribe")
}

/// Every stream receives exactly the event `id` next.
fn all_receive(streams: &mut [SseClient], id: u64) {
    for (i, s) in streams.iter_mut().enumerate() {
        let e = s.next_published().unwrap_or_else(|e| panic!("stream {i}: no event {id}: {e}"));
        assert_eq!(e.id_u64(), id, "stream {i}");
    }
}

const STREAMS: usize = 1_000;

#[test]
fn rotating_tokens_and_keys_under_a_thousand_streams_drops_none() {
    let dir = TempDir::new("reload-rotate");
    let path = dir.join("sse-edge.toml");
    let base = format!("{BASE}max_streams_per_user = 0\n");
    write_config(&path, &format!("{base}publish_token = [\"tok-old\"]\nsubscribe_key = \"key-old\"\n"));
    let (child, addr) = spawn(&path, &[]);
    let mut streams: Vec<SseClient> = (0..STREAMS)
        .map(|i| subscribe(addr, "jobs", "key-old").unwrap_or_else(|r| panic!("stream {i}: {}", r.status)))
        .collect();
    let first = published_id(&publish_with(addr, "tok-old", "jobs", "before"));
    all_receive(&mut streams, first);
    assert_eq!(publish_with(addr, "tok-new", "jobs", "x").status, 401, "not listed yet");
    let hash_before = config_hash(addr);

    // Rotation begins: both tokens and both keys accepted, new ones first.
    write_config(
        &path,
        &format!(
            "{base}publish_token = [\"tok-new\", \"tok-old\"]\nsubscribe_key = [\"key-new\", \"key-old\"]\n"
        ),
    );
    hup(&child);
    wait_reloads(addr, &child, "ok", 1.0);
    assert_ne!(config_hash(addr), hash_before);
    let by_new = published_id(&publish_with(addr, "tok-new", "jobs", "new token"));
    let by_old = published_id(&publish_with(addr, "tok-old", "jobs", "old token, still listed"));
    all_receive(&mut streams, by_new);
    all_receive(&mut streams, by_old);
    let mut late_new = subscribe(addr, "jobs", "key-new").expect("a token signed with the new key");
    let mut late_old = subscribe(addr, "jobs", "key-old").expect("the old key, still listed");

    // Rotation ends: the old token and key are gone.
    write_config(&path, &format!("{base}publish_token = \"tok-new\"\nsubscribe_key = [\"key-new\"]\n"));
    hup(&child);
    wait_reloads(addr, &child, "ok", 2.0);
    let refused = publish_with(addr, "tok-old", "jobs", "old token, removed");
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(subscribe(addr, "jobs", "key-old").expect_err("old key removed").status, 401);
    let mut latest = subscribe(addr, "jobs", "key-new").expect("new key");
    let last = published_id(&publish_with(addr, "tok-new", "jobs", "after"));
    // Every stream opened before any reload is still open and got every event, id by id.
    all_receive(&mut streams, last);
    // Streams admitted under the old key stay open after it is removed (a key is checked
    // when a stream starts; the token's `exp` still ends it).
    for s in [&mut late_new, &mut late_old] {
        assert_eq!(s.next_published().expect("late stream").id_u64(), last);
    }
    assert_eq!(latest.next_published().expect("latest stream").id_u64(), last);
    let m = metrics(addr);
    let open: f64 = m
        .lines()
        .filter(|l| l.starts_with("sse_streams_active{"))
        .map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        .sum();
    assert_eq!(open, (STREAMS + 3) as f64, "streams open after two reloads");
    assert_eq!(metric_value(&m, "sse_config_reloads_total{result=\"error\"}"), 0.0);
}

#[test]
fn a_broken_file_changes_nothing_and_says_where() {
    let dir = TempDir::new("reload-broken");
    let path = dir.join("sse-edge.toml");
    write_config(&path, &format!("{BASE}publish_token = \"tok-old\"\nretry_ms = 1500\n"));
    let (child, addr) = spawn(&path, &[]);
    let hash = config_hash(addr);
    let path_text = path.display().to_string();
    let broken = [
        ("syntax", "publish_token = \"tok-new\"\nretry_ms = = 2\n", ":4: ", None),
        (
            "unknown key",
            "publish_token = \"tok-new\"\n\nretri_ms = 2\n",
            ":5: key `retri_ms`: unknown key",
            None,
        ),
        (
            "bad value",
            "publish_token = \"tok-new\"\nheartbeat_ms = 1\n",
            ":4: key `heartbeat_ms`:",
            Some("10..=3600000"),
        ),
        (
            "bad relation",
            "publish_token = \"tok-new\"\nhistory_max_bytes = 999999999999\n",
            "",
            Some("--history-max-bytes"),
        ),
        (
            "empty key",
            "publish_token = \"tok-new\"\nsubscribe_key = \"\"\n",
            "",
            Some("--subscribe-key must not be empty"),
        ),
    ];
    for (n, (what, text, at, detail)) in broken.iter().enumerate() {
        write_config(&path, &format!("{BASE}{text}"));
        hup(&child);
        wait_reloads(addr, &child, "error", (n + 1) as f64);
        // The counter can move before the log line has come through the pipe: wait for it.
        let failure = |log: &str| {
            log.lines()
                .filter(|l| l.contains("config reload failed, nothing changed"))
                .nth(n)
                .map(str::to_string)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            let log = child.log().text();
            match failure(&log) {
                Some(line) => break line,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                None => panic!("{what}: no failure logged:\n{log}"),
            }
        };
        if !at.is_empty() {
            assert!(line.contains(&format!("{path_text}{at}")), "{what}: {line}");
        }
        if let Some(detail) = detail {
            assert!(line.contains(detail), "{what}: {line}");
        }
        // Nothing changed: the old token works, the new one does not, new streams get the
        // old retry, the hash is the same.
        published_id(&publish_with(addr, "tok-old", "t", what));
        assert_eq!(publish_with(addr, "tok-new", "t", what).status, 401, "{what}");
        assert_eq!(config_hash(addr), hash, "{what}");
        let s = SseClient::try_open(Client::connect(addr), "/events?topic=t", "").unwrap().unwrap();
        assert_eq!(s.head.status, 200);
    }
    assert_eq!(metric_value(&metrics(addr), "sse_config_reloads_total{result=\"ok\"}"), 0.0);
    // A good file applies again.
    write_config(&path, &format!("{BASE}publish_token = \"tok-new\"\n"));
    hup(&child);
    wait_reloads(addr, &child, "ok", 1.0);
    published_id(&publish_with(addr, "tok-new", "t", "fixed"));
}

/// A new stream on topic `r` with extra header lines, and the `retry:` of its prelude.
fn open_with_retry(addr: SocketAddr, headers: &str) -> (SseClient, u64) {
    let mut c = Client::connect(addr);
    SseClient::send_open(&mut c, "/events?topic=r", headers);
    let head = c.read_response();
    assert_eq!(head.status, 200, "{}", head.text());
    let mut s = SseClient { reader: c.reader, head };
    let prelude = s.next_raw_frame().expect("prelude");
    let retry = prelude.lines().find_map(|l| l.strip_prefix("retry: ")).expect("retry line");
    (s, retry.parse().expect("retry ms"))
}

#[test]
fn restart_settings_are_logged_and_kept_while_live_ones_apply() {
    let dir = TempDir::new("reload-restart");
    let path = dir.join("sse-edge.toml");
    let first = "backlog = 128\nretry_ms = 1500\nheartbeat_ms = 60000\nlog_level = \"info\"\n";
    write_config(&path, &format!("{BASE}{first}"));
    let (child, addr) = spawn(&path, &[]);
    let origin = "Origin: https://app.example\r\n";
    let (mut old_stream, retry) = open_with_retry(addr, origin);
    assert_eq!(retry, 1500);
    assert_eq!(old_stream.head.header("access-control-allow-origin"), None, "no CORS origin yet");
    write_config(
        &path,
        "threads = 3\npin_threads = false\nbacklog = 256\nlisten = \"127.0.0.1:1\"\nretry_ms = 2500\n\
         heartbeat_ms = 50\nlog_level = \"debug\"\ncors_origin = [\"https://app.example\"]\n\
         max_streams_per_ip = 2\n",
    );
    hup(&child);
    wait_reloads(addr, &child, "ok", 1.0);
    let log = child.log().text();
    for key in ["backlog", "threads"] {
        assert!(log.contains(&format!("config reload: {key} changed, needs restart")), "{key}:\n{log}");
    }
    // `listen` is set on the command line (by the test helper), so the file's value is not
    // even a change: the flag wins over the file.
    assert!(!log.contains("listen changed"), "{log}");
    // Kept: still 2 loops on the same address.
    let m = metrics(addr);
    assert_eq!(m.lines().filter(|l| l.starts_with("sse_loop_up{")).count(), 2, "{m}");
    // Applied to the open stream: the new heartbeat.
    old_stream.set_timeout(IO_TIMEOUT);
    while old_stream.next_raw_frame().expect("a heartbeat on the old stream") != ":\n\n" {}
    // Applied to new streams: retry, CORS, and the per-IP limit (streams opened before the
    // reload were not counted, so two more fit, the third is refused).
    let (a, retry) = open_with_retry(addr, origin);
    assert_eq!(retry, 2500);
    assert_eq!(a.head.header("access-control-allow-origin"), Some("https://app.example"));
    let _b = open_with_retry(addr, "");
    let refused =
        SseClient::try_open(Client::connect(addr), "/events?topic=r", "").unwrap().expect_err("limit");
    assert_eq!(refused.status, 429, "{}", refused.text());
    // The old stream is untouched and still delivered to.
    let id = publish(addr, "r", "after reload");
    assert_eq!(old_stream.next_published().expect("old stream").id_u64(), id);
    // The log level went to debug: a closed connection is logged at debug now.
    let before = child.log().text().matches("closed (").count();
    drop(Client::connect(addr));
    let deadline = Instant::now() + IO_TIMEOUT;
    while child.log().text().matches("closed (").count() == before {
        assert!(Instant::now() < deadline, "no debug line after log_level = debug");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn print_config_shows_sources_and_masks_secrets_and_check_takes_the_file() {
    let dir = TempDir::new("print-config");
    let path = dir.join("sse-edge.toml");
    write_config(
        &path,
        "max_streams_per_ip = 10\nheartbeat_ms = 5000\nretry_ms = 9000\n\
         publish_token = [\"very-secret-a\", \"very-secret-b\"]\nbus = \"redis://u:very-secret-pw@h:6379\"\n",
    );
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&path)
        .args(["--print-config", "--retry-ms", "100"])
        .env("SSE_EDGE_HEARTBEAT_MS", "7000")
        .env_remove("SSE_EDGE_MAX_STREAMS_PER_IP")
        .output()
        .expect("run --print-config");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "retry_ms = 100  # flag\n",
        "heartbeat_ms = 7000  # env\n",
        "max_streams_per_ip = 10  # file\n",
        "backlog = 4096  # default\n",
        "publish_token = [\"********\", \"********\"]  # file\n",
        "bus = \"redis://***@h:6379\"  # file\n",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("very-secret"), "{text}");

    // `check` reads the same file; a bad one fails naming the file, line and key.
    write_config(&path, "max_connections = 1234\n");
    let check = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(&path)
        .env_remove("SSE_EDGE_MAX_CONNECTIONS")
        .output()
        .expect("check");
    assert!(matches!(check.status.code(), Some(0 | 2)), "{}", String::from_utf8_lossy(&check.stderr));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("check --json prints JSON");
    assert_eq!(report["max_connections"], 1234, "check used the file's max_connections: {report}");
    write_config(&path, "max_streams_per_ip = 10\nmax_connections = \"many\"\n");
    let bad = Command::new(BIN).args(["check", "--config"]).arg(&path).output().expect("check");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{}:2: key `max_connections`", path.display())), "{err}");
}

/// Polls `path` until it answers `status`.
fn wait_status(addr: SocketAddr, child: &ChildGuard, path: &str, status: u16) -> Response {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let r = http_get(addr, path);
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {}: {}; log:\n{}",
            r.status,
            r.text(),
            child.log().text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn overload_thresholds_and_readiness_reload() {
    let dir = TempDir::new("reload-overload");
    let path = dir.join("sse-edge.toml");
    write_config(&path, &format!("{BASE}status_interval_ms = 50\n"));
    let (child, addr) = spawn(&path, &[]);
    let mut stream = SseClient::connect(addr, "/events?topic=o");
    wait_status(addr, &child, "/readyz", 200);
    // A zero queued-bytes threshold is always crossed: overload mode, and not ready.
    write_config(
        &path,
        &format!(
            "{BASE}status_interval_ms = 50\noverload_queued_bytes = 0\nunready_when_overloaded = true\n"
        ),
    );
    hup(&child);
    wait_reloads(addr, &child, "ok", 1.0);
    wait_status(addr, &child, "/readyz", 503);
    assert_eq!(metric_value(&metrics(addr), "sse_overload_mode"), 1.0);
    assert_eq!(stream.next_event().expect("overload notice").event.as_deref(), Some("system.overloaded"));
    // Back to the defaults: the node recovers (after its hold) and is ready again.
    write_config(&path, &format!("{BASE}status_interval_ms = 50\n"));
    hup(&child);
    wait_reloads(addr, &child, "ok", 2.0);
    wait_status(addr, &child, "/readyz", 200);
    assert_eq!(stream.next_event().expect("recovery notice").event.as_deref(), Some("system.recovered"));
}
