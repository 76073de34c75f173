//! Graceful shutdown: SIGTERM to the release binary drains 500 streams (each told
//! `server-shutdown` with a spread `retry:`, then EOF) and exits 0 before the drain deadline;
//! a second SIGTERM during a drain exits at once, non-zero; `Handle::shutdown` in process.
//!
//! The binary is the release build: `cargo build --release --bin sse-edge` runs once per test
//! process (a no-op when it is up to date), so the drain is measured on the build that ships.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sse_edge::metrics::RejectReason;
use sse_edge::Config;
use util::*;

/// The release binary, built on first use.
fn release_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let out = Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "sse-edge", "--message-format=json-render-diagnostics"])
            .arg("--manifest-path")
            .arg(&manifest)
            .stdin(Stdio::null())
            .output()
            .expect("run cargo build --release");
        assert!(
            out.status.success(),
            "cargo build --release failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The artifact message names the executable wherever the target directory is.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "sse-edge")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no sse-edge executable")
    })
}

/// The release binary with `args` on a port of its choosing, once it listens; and that address.
fn spawn_server(args: &[&str]) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(release_binary());
    cmd.args(args);
    spawn_sse_edge(cmd)
}

fn signal(child: &ChildGuard, sig: Signal) {
    kill(Pid::from_raw(child.pid() as i32), sig).expect("kill");
}

/// Reads the shutdown notice and then EOF; returns the notice's `retry:` value.
fn read_shutdown(sub: &mut SseClient) -> Result<u64, String> {
    let frame = loop {
        let f = sub.next_raw_frame().map_err(|e| format!("no shutdown notice: {e}"))?;
        if !f.starts_with(':') {
            break f;
        }
    };
    let retry = frame
        .strip_prefix("event: server-shutdown\ndata: {\"reconnect\":true}\nretry: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("not a shutdown notice: {frame:?}"))?;
    let mut rest = Vec::new();
    match sub.reader.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => Ok(retry),
        Ok(_) => Err(format!("bytes after the notice: {:?}", String::from_utf8_lossy(&rest))),
        Err(e) => Err(format!("no clean EOF after the notice: {e}")),
    }
}

/// Publishes one event and checks every stream receives it as its next event.
fn all_receive(addr: SocketAddr, subs: &mut [SseClient], topic: &str, data: &str) {
    let id = publish(addr, topic, data);
    for (i, sub) in subs.iter_mut().enumerate() {
        let e = sub.next_event().unwrap_or_else(|e| panic!("stream {i} waiting for {data:?}: {e}"));
        assert_eq!((e.id_u64(), e.data.as_str()), (id, data), "stream {i}");
    }
}

#[test]
fn sigterm_drains_500_streams_with_spread_retry_then_exits_zero() {
    const STREAMS: usize = 500;
    const DRAIN_MS: u64 = 5000;
    let (mut child, addr) = spawn_server(&[
        "--threads",
        "2",
        "--drain-timeout-ms",
        &DRAIN_MS.to_string(),
        "--retry-ms",
        "1000",
        "--shutdown-retry-spread-ms",
        "4000",
    ]);
    let mut subs: Vec<SseClient> =
        (0..STREAMS).map(|_| SseClient::connect(addr, "/events?topic=drain")).collect();
    // A request in flight (head not finished) is not idle: the drain keeps it, answers it and
    // then closes it. Two publish rounds that every stream receives make sure each loop has
    // read those bytes before the signal (a later poll round reports them).
    let mut in_flight = Client::connect(addr);
    in_flight.send(b"GET /readyz HTTP/1.1\r\nHost: test\r\n");
    all_receive(addr, &mut subs, "drain", "live 1");
    all_receive(addr, &mut subs, "drain", "live 2");

    signal(&child, Signal::SIGTERM);
    let readers: Vec<_> = {
        let mut subs = subs;
        let mut chunks = Vec::new();
        while !subs.is_empty() {
            let rest = subs.split_off(subs.len().min(50));
            chunks.push(std::mem::replace(&mut subs, rest));
        }
        chunks
            .into_iter()
            .map(|mut chunk| {
                std::thread::spawn(move || chunk.iter_mut().map(read_shutdown).collect::<Vec<_>>())
            })
            .collect()
    };
    let results: Vec<Result<u64, String>> =
        readers.into_iter().flat_map(|r| r.join().expect("reader thread")).collect();
    assert_eq!(results.len(), STREAMS);
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {STREAMS} streams: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let retries: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
    assert!(retries.iter().all(|r| (1000..=5000).contains(r)), "retry outside 1000..=5000: {retries:?}");
    let distinct = retries.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert!(distinct > 1, "every stream got the same retry {}", retries[0]);

    // Accepting stopped: new connections are refused once every loop closed its listener.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            other => assert!(Instant::now() < deadline, "still accepting during the drain: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The request in flight is answered: not ready while draining, and the connection closes.
    assert!(child.is_running(), "exited before answering the request in flight");
    in_flight.send(b"\r\n");
    let r = in_flight.read_response();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["status"], "draining");
    // (`Connection: close` on this answer is checked in
    // `answers_during_a_drain_say_connection_close`.)
    assert!(in_flight.is_closed_by_server());
    drop(in_flight); // our EOF ends the server's lingering close at once

    let status = child
        .wait_exit(Duration::from_millis(DRAIN_MS) + Duration::from_secs(10))
        .expect("still running past the drain deadline");
    assert!(status.success(), "exit status {status}");
}

/// Subscribes a socket that never reads (small receive buffer) and publishes far more than
/// the kernel buffers and its outbox hold, so its outbox can never be flushed.
fn stalled_stream(addr: SocketAddr, topic: &str) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(format!("GET /events?topic={topic} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).unwrap();
    let mut c = Client::connect(addr);
    let data = "x".repeat(256 * 1024);
    for _ in 0..128 {
        assert_eq!(c.publish(&format!("topic={topic}"), Some("text/plain"), data.as_bytes()).status, 202);
    }
    s
}

#[test]
fn second_sigterm_during_a_drain_exits_at_once_non_zero() {
    // A drain that would last a minute unless interrupted.
    let (mut child, addr) =
        spawn_server(&["--threads", "1", "--drain-timeout-ms", "60000", "--stall-timeout-ms", "600000"]);
    let mut sub = SseClient::connect(addr, "/events?topic=ok");
    let _stalled = stalled_stream(addr, "big");
    all_receive(addr, std::slice::from_mut(&mut sub), "ok", "before");

    signal(&child, Signal::SIGTERM);
    let retry = read_shutdown(&mut sub).expect("the reading stream drains");
    assert!(retry >= 3000, "default --retry-ms is 3000: {retry}");
    // The stalled stream keeps the drain going.
    assert!(child.is_running(), "drain ended although a stream still holds unsent frames");

    signal(&child, Signal::SIGTERM);
    let status = child.wait_exit(Duration::from_secs(10)).expect("second SIGTERM did not end the process");
    assert!(!status.success(), "exit status {status}");
    assert_eq!(status.code(), Some(1), "exit status {status}");
}

#[test]
fn handle_shutdown_tells_streams_and_returns() {
    let mut server = TestServer::start(Config {
        threads: Some(2),
        retry_ms: 500,
        shutdown_retry_spread_ms: 1000,
        ..Config::loopback()
    });
    let addr = server.addr;
    let mut subs: Vec<SseClient> = (0..20).map(|_| SseClient::connect(addr, "/events?topic=h")).collect();
    all_receive(addr, &mut subs, "h", "before");
    let publisher = server.handle().publisher();

    let handle = server.handle.take().expect("running");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        handle.shutdown();
        let _ = done_tx.send(());
    });
    // Each stream is closed after reading its EOF, which ends the server's lingering close.
    for (i, mut sub) in subs.into_iter().enumerate() {
        let retry = read_shutdown(&mut sub).unwrap_or_else(|e| panic!("stream {i}: {e}"));
        assert!((500..1500).contains(&retry), "stream {i}: retry {retry}");
    }
    done_rx.recv_timeout(IO_TIMEOUT).expect("Handle::shutdown did not return");
    // The loops are gone: nothing listens, and the embedded publisher is refused.
    assert_eq!(TcpStream::connect(addr).map_err(|e| e.kind()).err(), Some(io::ErrorKind::ConnectionRefused));
    assert!(publisher.try_publish(&sse_edge::Message::new("h", "late")).is_err());
}

/// A request in flight when the drain begins is answered and its connection closed; the
/// answer must say so (`Connection: close`), or an HTTP/1.1 client would reuse the
/// connection for its next request and lose it.
#[test]
fn answers_during_a_drain_say_connection_close() {
    let server = TestServer::start(Config { threads: Some(1), ..Config::loopback() });
    let addr = server.addr;
    let mut sub = SseClient::connect(addr, "/events?topic=d");
    let mut ready = Client::connect(addr);
    ready.send(b"GET /readyz HTTP/1.1\r\nHost: test\r\n");
    let mut publisher = Client::connect(addr);
    publisher.send(b"POST /publish?topic=d HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nlat");
    // One loop: once two later events reached the stream, it has read both partial requests.
    all_receive(addr, std::slice::from_mut(&mut sub), "d", "sync 1");
    all_receive(addr, std::slice::from_mut(&mut sub), "d", "sync 2");

    let mut subscriber = Client::connect(addr);
    subscriber.send(b"GET /events?topic=d HTTP/1.1\r\nHost: test\r\n");
    all_receive(addr, std::slice::from_mut(&mut sub), "d", "sync 3");
    all_receive(addr, std::slice::from_mut(&mut sub), "d", "sync 4");

    assert!(server.handle().shutdown_trigger().begin());
    read_shutdown(&mut sub).expect("shutdown notice");
    ready.send(b"\r\n");
    let r = ready.read_response();
    assert_eq!((r.status, r.json()["status"].as_str()), (503, Some("draining")), "{}", r.text());
    assert!(ready.is_closed_by_server(), "connection kept after an answer during the drain");
    let readyz = r.header("connection").map(str::to_string);

    publisher.send(b"e!!");
    let r = publisher.read_response();
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(publisher.is_closed_by_server(), "connection kept after an answer during the drain");
    let published = r.header("connection").map(str::to_string);

    // A stream asked for during the drain is refused: 503, Retry-After, closed.
    subscriber.send(b"\r\n");
    let r = subscriber.read_response();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(subscriber.is_closed_by_server());
    assert_eq!(server.stats().rejected_for(RejectReason::Draining), 1);

    assert_eq!(
        [readyz.as_deref(), published.as_deref()],
        [Some("close"); 2],
        "Connection header of the /readyz and publish answers during the drain (both connections closed)"
    );
}
