//! Connection lifecycle and the binary: no leaks after many connect/disconnect cycles,
//! the CLI documents and validates every option, the release binary serves.

mod util;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

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

/// Starts the binary with `envs` on 127.0.0.1:0 (util's `spawn_sse_edge`: the port comes
/// from its startup line, no free-port guess another process could take meanwhile).
fn spawn_logged(envs: &[(&str, &str)]) -> (ChildGuard, SocketAddr) {
    let mut cmd = bin();
    cmd.envs(envs.iter().copied());
    spawn_sse_edge(cmd)
}

#[test]
fn binary_serves_with_options_from_env() {
    let (_child, addr) = spawn_logged(&[("SSE_EDGE_THREADS", "2"), ("SSE_EDGE_RETRY_MS", "1234")]);
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
    let (child, addr) = spawn_logged(&[("SSE_EDGE_LOG_SAMPLE_EVERY", "1")]);
    let mut sub = SseClient::connect(addr, "/events?topic=logged");
    let id = publish(addr, "logged", "x");
    assert_eq!(sub.next_event().unwrap().id_u64(), id);
    let log = child.log();
    drop(child);
    let text = log.text();
    assert!(text.contains(&format!("published id {id} topic logged class reliable")), "{text}");
    assert!(text.contains("max connections"), "the startup summary names the capacity: {text}");
}
