//! A cluster across network namespaces, for the bus fault tests (`tests/bus_faults.rs`):
//! Redis in one namespace, nodes A and B in two others, each joined by a veth pair to one
//! bridge in the root namespace, where the test runs and reaches every process over the
//! bridge. The bus traffic crosses real interfaces, so a test can cut a link or a route.
//! Everything made is removed by a `Drop` guard, also when the test fails; names carry the
//! pid and the test's tag, and each test gets its own /24.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use super::bus::{node_args, wait_for, Node, Published};
use super::redis::RedisServer;
use super::{http_get, spawn_sse_edge_on, Client, ProcessGuard, Response, SseClient, TempDir};

/// Network namespaces and links made for one test; removed when dropped, also when the test
/// fails. Names carry the test process's pid and the test's tag, so parallel tests and runs
/// do not collide.
pub struct Netns {
    tag: String,
    namespaces: Vec<String>,
    links: Vec<String>,
}

/// `ip` with `args`; its stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// One bridge in the root namespace with `prefix.1/24`, and a namespace per role, each
    /// joined to the bridge by a veth pair whose namespace end is `prefix.{2 + index}`.
    /// `Err` when namespaces cannot be made here (the test then skips); any later failure
    /// panics (what was made so far is removed).
    pub fn create(tag: char, prefix: &str, roles: &[&str]) -> Result<Netns, String> {
        let mut net =
            Netns { tag: format!("{}{tag}", std::process::id()), namespaces: Vec::new(), links: Vec::new() };
        let first = net.namespace(roles[0]);
        ip(&["netns", "add", &first])?;
        net.namespaces.push(first);
        let must = |r: Result<(), String>| r.unwrap_or_else(|e| panic!("{e}"));
        let bridge = format!("sf{}br", net.tag);
        must(ip(&["link", "add", &bridge, "type", "bridge"]));
        net.links.push(bridge.clone());
        must(ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge]));
        must(ip(&["link", "set", &bridge, "up"]));
        for (i, role) in roles.iter().enumerate() {
            let ns = net.namespace(role);
            if i > 0 {
                must(ip(&["netns", "add", &ns]));
                net.namespaces.push(ns.clone());
            }
            let (host, peer) = (net.host_link(i), format!("sf{}p{i}", net.tag));
            must(ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]));
            net.links.push(host.clone());
            must(ip(&["link", "set", &peer, "netns", &ns]));
            must(ip(&["link", "set", &host, "master", &bridge, "up"]));
            must(ip(&["-n", &ns, "addr", "add", &format!("{prefix}.{}/24", 2 + i), "dev", &peer]));
            must(ip(&["-n", &ns, "link", "set", &peer, "up"]));
            must(ip(&["-n", &ns, "link", "set", "lo", "up"]));
        }
        Ok(net)
    }

    pub fn namespace(&self, role: &str) -> String {
        format!("ssef{}{role}", self.tag)
    }

    /// The root-namespace end of role `index`'s veth pair.
    pub fn host_link(&self, index: usize) -> String {
        format!("sf{}h{index}", self.tag)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for link in self.links.iter().rev() {
            if let Err(e) = ip(&["link", "del", link]) {
                eprintln!("cleanup: {e}");
            }
        }
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Bytes the root-namespace end of a veth sent into its namespace.
pub fn tx_bytes(link: &str) -> u64 {
    let path = format!("/sys/class/net/{link}/statistics/tx_bytes");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().parse().expect("tx_bytes")
}

/// The publish token of the namespace tests: their publishers are not on loopback.
pub const NETNS_TOKEN: &str = "netns-test-token";

/// Redis in namespace `r`, nodes A and B in namespaces `a` and `b`, one bridge between them
/// and the test. Fields drop in order: the processes first, the namespaces last.
pub struct NsCluster {
    pub a: Node,
    pub b: Node,
    /// Held for its `Drop` (stops redis-server before the namespaces go).
    _redis: RedisServer,
    pub net: Netns,
    /// The bridge's /24 (`10.x.y`): Redis is `.2`, A `.3`, B `.4`.
    pub prefix: String,
}

impl NsCluster {
    /// The cluster for the test tagged `tag` (its names) and numbered `index` (0 to 3: its
    /// /24), nodes started with `extra` args; `None` (after printing why) where namespaces
    /// are not permitted.
    pub fn start(tag: char, index: u32, extra: &[&str]) -> Option<NsCluster> {
        assert!(index < 4, "four /24s per test run");
        let pid = std::process::id();
        let prefix = format!("10.{}.{}", 100 + index * 35 + (pid >> 8) % 35, pid & 255);
        let net = match Netns::create(tag, &prefix, &["r", "a", "b"]) {
            Ok(net) => net,
            Err(e) => {
                eprintln!("skipped: network namespaces are not permitted here ({e})");
                return None;
            }
        };
        let dir = TempDir::new("netns-redis");
        let child = Command::new("ip")
            .args(["netns", "exec", &net.namespace("r"), "/usr/bin/redis-server", "--port", "6379"])
            .args(["--bind", &format!("{prefix}.2"), "--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no", "--unixsocket"])
            .arg(dir.join("redis.sock"))
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&dir.path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn redis-server in its namespace");
        // The control socket is a file, reachable from here; the nodes use TCP over the bridge.
        let redis = RedisServer { dir, guard: Some(ProcessGuard::new("redis-server", child)), port: None };
        wait_for("redis-server in its namespace", || {
            redis.command(&["PING"]).as_deref() == Some("+PONG\r\n")
        });
        let bus = format!("redis://{prefix}.2:6379/0");
        let mut extra = extra.to_vec();
        extra.extend(["--publish-token", NETNS_TOKEN]);
        let node = |role: &str, host: u8| {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &net.namespace(role), env!("CARGO_BIN_EXE_sse-edge")]);
            cmd.args(node_args(&bus, &extra));
            let (guard, addr) = spawn_sse_edge_on(cmd, &format!("{prefix}.{host}:0"));
            Node { guard, addr }
        };
        let (a, b) = (node("a", 3), node("b", 4));
        Some(NsCluster { a, b, _redis: redis, net, prefix })
    }
}

/// Publishes `data` on `topic` at `addr` with the namespace tests' token.
pub fn publish_with_token(addr: SocketAddr, topic: &str, data: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(
        format!(
            "POST /publish?topic={topic} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {NETNS_TOKEN}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{data}",
            data.len()
        )
        .as_bytes(),
    );
    c.read_response()
}

/// Reads published events until one whose data is `end`; fails on a notice.
pub fn read_until(sub: &mut SseClient, end: &str, bound: usize) -> Vec<(u64, Option<String>, String)> {
    let mut got = Vec::new();
    while got.len() < bound {
        let e = sub.next_event().expect("event");
        assert!(e.id.is_some(), "unexpected notice {e:?} after {got:?}");
        let done = e.data == end;
        got.push((e.id_u64(), e.event, e.data));
        if done {
            return got;
        }
    }
    panic!("no {end:?} within {bound} events: {got:?}");
}

/// Publishes `e{k}` on `topic` at `addr` (with the namespace token) and records it: `202`
/// in `acked`, `503` (not appended) in `refused`, `504` (outcome unknown) in `unanswered`
/// (both must carry `Retry-After`); its status.
pub fn publish_counted(addr: SocketAddr, topic: &str, k: usize, out: &mut Published) -> u16 {
    let data = format!("e{k}");
    let r = publish_with_token(addr, topic, &data);
    match r.status {
        202 => out.acked.push((r.json()["id"].as_u64().expect("id"), data)),
        503 | 504 => {
            assert!(r.header("retry-after").is_some(), "{} without Retry-After: {}", r.status, r.text());
            let (list, outcome) = if r.status == 503 {
                (&mut out.refused, "not_appended")
            } else {
                (&mut out.unanswered, "unknown")
            };
            assert_eq!(r.json()["outcome"], outcome, "{}", r.text());
            list.push(data);
        }
        s => panic!("publish on {addr}: {s} {}", r.text()),
    }
    r.status
}

/// How long a node may take to be ready again once Redis is reachable (the reader's
/// reconnection backoff is at most 2 s, a connection attempt at most 2 s more).
pub const RECOVERY: Duration = Duration::from_secs(20);

/// Waits until `/readyz` at `addr` says ready, for at most [`RECOVERY`].
pub fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + RECOVERY;
    while http_get(addr, "/readyz").status != 200 {
        assert!(Instant::now() < deadline, "{addr} never became ready again");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Once Redis is back: one acknowledged publish on each of `addrs` in turn, numbered from
/// `k` (a node's publish connection reconnects on demand, so a `503` is retried, for at most
/// [`RECOVERY`]); the next number.
pub fn publish_after_recovery(addrs: &[SocketAddr], topic: &str, mut k: usize, out: &mut Published) -> usize {
    for &addr in addrs {
        let deadline = Instant::now() + RECOVERY;
        while publish_counted(addr, topic, k, out) != 202 {
            assert!(Instant::now() < deadline, "publishing on {addr} never recovered");
            k += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        k += 1;
    }
    k
}

/// Bytes the namespace `ns` still has to send to `peer` over TCP (summed `Send-Q`): zero
/// once every byte a node wrote to Redis was acknowledged or its socket is gone.
pub fn unsent_to(ns: &str, peer: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Htn", "dst", peer])
        .output()
        .unwrap_or_else(|e| panic!("ss in {ns}: {e}"));
    assert!(out.status.success(), "ss in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}
