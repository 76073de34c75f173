//! Connection lifecycle and the binary: no leaks after many connect/disconnect cycles,
//! the CLI documents and validates every option, the release binary serves.

mod util;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sse_edge::CloseReason;
use util::*;

#[test]
fn ten_thousand_connect_disconnect_cycles_leave_nothing_behind() {
    const ROUNDS: usize = 20;
    const PER_ROUND: usize = 500;
    let server = TestServer::with_threads(2);
    for round in 0..ROUNDS {
        let subs: Vec<SseClient> = (0..PER_ROUND)
            .map(|i| SseClient::connect(server.addr, &format!("/events?topic=r{}&topic=shared", i % 7)))
            .collect();
        server.wait_stats("round open", |s| s.streams == PER_ROUND as u64);
        for (i, sub) in subs.into_iter().enumerate() {
            if (i + round) % 2 == 0 {
                // Abortive close: the server sees a reset, not an EOF.
                socket2::SockRef::from(sub.reader.get_ref()).set_linger(Some(Duration::ZERO)).unwrap();
            }
            drop(sub);
        }
        server.wait_stats("round closed", |s| s.connections == 0);
    }
    let s = server.wait_stats("all gone", |s| s.connections == 0 && s.topics == 0 && s.memberships == 0);
    assert_eq!(s.streams, 0);
    let closed: u64 = s.closed.iter().sum();
    assert_eq!(closed, (ROUNDS * PER_ROUND) as u64);
    assert_eq!(s.accepted, (ROUNDS * PER_ROUND) as u64);
    // The node still serves after the churn.
    let mut sub = SseClient::connect(server.addr, "/events?topic=after");
    server.wait_stats("stream", |s| s.streams == 1);
    let id = publish(server.addr, "after", "still here");
    assert_eq!(sub.next_event().unwrap().id_u64(), id);
    assert!(s.closed_for(CloseReason::Client) + s.closed_for(CloseReason::Error) == closed);
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sse-edge"))
}

#[test]
fn help_lists_every_option_with_default_and_env() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--listen",
        "--threads",
        "--backlog",
        "--heartbeat-ms",
        "--outbox-max-events",
        "--outbox-max-bytes",
        "--stall-timeout-ms",
        "--max-request-bytes",
        "--max-body-bytes",
        "--hub-queue-events",
    ] {
        let env = format!("SSE_EDGE_{}", opt.trim_start_matches("--").replace('-', "_").to_uppercase());
        let block = help.split(opt).nth(1).unwrap_or_else(|| panic!("{opt} missing from --help"));
        let block = &block[..block.find("\n  -").unwrap_or(block.len())];
        assert!(block.contains(&format!("env: {env}")), "{opt} names {env}: {block}");
        assert!(block.contains("default"), "{opt} shows its default: {block}");
    }
}

#[test]
fn invalid_values_exit_non_zero_naming_the_option() {
    for (args, env, name) in [
        (vec!["--threads", "0"], None, "--threads"),
        (vec!["--outbox-max-bytes", "lots"], None, "--outbox-max-bytes"),
        (vec!["--listen", "nowhere"], None, "--listen"),
        (vec!["--max-request-bytes", "10"], None, "--max-request-bytes"),
        (vec![], Some(("SSE_EDGE_HEARTBEAT_MS", "1")), "--heartbeat-ms"),
    ] {
        let mut cmd = bin();
        cmd.args(&args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} {env:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{args:?}: error names {name}: {err}");
    }
}

/// The binary as a child process, killed (by its pid) when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on 127.0.0.1:0 with `envs`, logging to a temp file, and learns the
/// port from its startup line (no free-port guess another process could take meanwhile).
fn spawn_logged(envs: &[(&str, &str)]) -> (ChildGuard, SocketAddr, std::path::PathBuf) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log_path = std::env::temp_dir().join(format!("sse-edge-{}-{n}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = bin();
    cmd.env("SSE_EDGE_LISTEN", "127.0.0.1:0").env("RUST_LOG", "info");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = ChildGuard(cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap());
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let addr = text
            .lines()
            .find_map(|l| l.split("listening on ").nth(1))
            .and_then(|rest| rest.split(':').take(2).collect::<Vec<_>>().join(":").parse().ok());
        if let Some(addr) = addr {
            return (child, addr, log_path);
        }
        assert!(Instant::now() < deadline, "binary did not start listening: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_serves_with_options_from_env() {
    let (_child, addr, log_path) = spawn_logged(&[("SSE_EDGE_THREADS", "2"), ("SSE_EDGE_RETRY_MS", "1234")]);
    let _ = std::fs::remove_file(log_path);
    let mut c = Client::connect(addr);
    c.send(b"GET /events?topic=x HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.read_response();
    assert_eq!(head.status, 200);
    let mut sub = SseClient { reader: c.reader, head };
    assert_eq!(sub.next_raw_frame().unwrap(), "retry: 1234\n: ok\n\n");
    // The stream is registered by the time the prelude arrives; publish and receive.
    let id = publish(addr, "x", "from the binary");
    let e = sub.next_event().unwrap();
    assert_eq!((e.id_u64(), e.data.as_str()), (id, "from the binary"));
}

#[test]
fn published_events_are_logged_one_in_n_and_deliveries_never() {
    let (child, addr, log_path) = spawn_logged(&[("SSE_EDGE_LOG_SAMPLE_EVERY", "1")]);
    let mut sub = SseClient::connect(addr, "/events?topic=logged");
    let id = publish(addr, "logged", "x");
    assert_eq!(sub.next_event().unwrap().id_u64(), id);
    drop(child);
    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(text.contains(&format!("published id {id} topic logged class reliable")), "{text}");
    assert!(text.contains("max connections"), "the startup summary names the capacity: {text}");
}
