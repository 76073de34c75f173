//! The ops kit: the systemd unit passes `systemd-analyze verify` and its example environment
//! file names real options; `deploy/nginx.conf` in front of a real server delivers the first
//! event at once, keeps an idle stream open past its `proxy_read_timeout` through heartbeats
//! and resumes with `Last-Event-ID`; `sse-edge check` reports a capacity, the binding limit
//! and the lines to change, and `check::assess` is right on synthetic hosts.

mod util;

use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sse_edge::check::{self, Limit, Readings};
use sse_edge::Config;
use util::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_sse-edge");
const NGINX: &str = "/usr/sbin/nginx";

fn kit_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

// ---- systemd -------------------------------------------------------------------------------

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let tool = find_tool("systemd-analyze")
        .expect("systemd-analyze is missing: run scripts/test (it installs the Debian `systemd` package)");
    let unit = kit_file("systemd/sse-edge.service");
    for line in [
        "ExecStart=/usr/bin/sse-edge --config /etc/sse-edge/sse-edge.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=sse-edge",
        "LimitNOFILE=1048576",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit sets {line}");
    }
    // The stop timeout outlasts the default drain deadline, or systemd kills mid-drain.
    let stop_secs: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec=<seconds>");
    assert!(stop_secs * 1000 > Config::default().drain_timeout_ms + 5_000, "TimeoutStopSec={stop_secs}");

    systemd_verify(&tool, &unit, "sse-edge.service", BIN);
}

#[test]
fn example_environment_file_names_real_options_with_valid_values() {
    let env = kit_file("systemd/sse-edge.env");
    let help =
        String::from_utf8(Command::new(BIN).arg("--help").output().expect("run --help").stdout).unwrap();
    let mut set = Vec::new();
    for line in env.lines() {
        let Some((key, value)) = line.trim_start_matches('#').split_once('=') else { continue };
        if key.starts_with("SSE_EDGE_") {
            let named = help.contains(&format!("env: {key}=")) || help.contains(&format!("env: {key}]"));
            assert!(named, "{key} in sse-edge.env is no option");
            if !line.starts_with('#') {
                set.push((key.to_string(), value.to_string()));
            }
        }
    }
    assert!(!set.is_empty());
    // The values parse and validate: `check` with them runs (0 or 2), not a usage error.
    let out = Command::new(BIN).arg("check").envs(set).output().expect("run check");
    assert!(matches!(out.status.code(), Some(0 | 2)), "{:?}", String::from_utf8_lossy(&out.stderr));
}

// ---- nginx ---------------------------------------------------------------------------------

/// A real nginx in the foreground with `deploy/nginx.conf` inside a temp prefix; stopped by its
/// master pid (SIGTERM, then SIGKILL) when dropped.
struct Nginx {
    /// Stopped by pid when dropped (SIGTERM makes the master stop its workers).
    child: ProcessGuard,
    addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    /// nginx in front of `upstream`, with the streams' `proxy_read_timeout` set to
    /// `read_timeout`, on a free port (another one when a process takes it first); waits
    /// until it accepts connections.
    fn start(upstream: SocketAddr, read_timeout: &str) -> Nginx {
        assert!(Path::new(NGINX).is_file(), "{NGINX} is missing: run scripts/test (it installs nginx-light)");
        start_on_free_port("nginx", |port| Nginx::try_start(upstream, read_timeout, port))
    }

    /// nginx on `port`; `Err(log)` (nginx stopped) when that port was taken.
    fn try_start(upstream: SocketAddr, read_timeout: &str, port: u16) -> Result<Nginx, String> {
        let dir = TempDir::new("nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut site = kit_file("deploy/nginx.conf");
        for (from, to) in [
            ("server 127.0.0.1:8080;", format!("server {upstream};")),
            ("listen 80;", format!("listen {addr};")),
            ("proxy_read_timeout 120s;", format!("proxy_read_timeout {read_timeout};")),
        ] {
            assert_eq!(site.matches(from).count(), 1, "deploy/nginx.conf has exactly one `{from}`");
            site = site.replace(from, &to);
        }
        let t = dir.path.display();
        let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .map(|kind| format!("    {kind}_temp_path {t}/{kind};\n"))
            .concat();
        let conf = format!(
            "worker_processes 1;\nevents {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n{temp_paths}{site}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let log = std::fs::File::create(dir.join("stderr.log")).expect("create log");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir.path)
            .arg("-c")
            .arg(&conf_path)
            .args(["-e", "stderr", "-g"])
            .arg(format!("daemon off; pid {t}/nginx.pid; error_log stderr notice;"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child: ProcessGuard::new("nginx", child), addr, dir };
        // The master logs this once it has bound the port; until then a connection could reach
        // whichever process took the port.
        let deadline = Instant::now() + IO_TIMEOUT;
        while !nginx.log().contains("start worker process") {
            let log = nginx.log();
            if port_taken(&log) {
                return Err(log);
            }
            if let Some(status) = nginx.child.exited() {
                panic!("nginx exited ({status}):\n{}", nginx.log());
            }
            assert!(Instant::now() < deadline, "nginx did not start on {addr}:\n{}", nginx.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {addr}:\n{}", nginx.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

/// An HTTP/1.1 chunked body as a plain byte stream (nginx re-frames the close-delimited
/// upstream stream in chunks for HTTP/1.1 clients).
struct Dechunk<R> {
    inner: R,
    left: usize,
    after_chunk: bool,
}

impl<R: BufRead> Read for Dechunk<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut line = String::new();
            if self.after_chunk {
                self.inner.read_line(&mut line)?; // the CRLF that ends a chunk
                line.clear();
            }
            if self.inner.read_line(&mut line)? == 0 {
                return Ok(0);
            }
            let size = line.trim_end().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {line:?}: {e}"))
            })?;
            self.after_chunk = true;
            if self.left == 0 {
                return Ok(0);
            }
        }
        let len = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..len])?;
        self.left -= n;
        Ok(n)
    }
}

/// A stream subscribed through nginx.
struct ProxiedStream {
    socket: TcpStream,
    frames: BufReader<Dechunk<BufReader<TcpStream>>>,
}

impl ProxiedStream {
    fn connect(nginx: &Nginx, topic: &str, last_event_id: Option<u64>) -> ProxiedStream {
        let mut c = Client::connect(nginx.addr);
        let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        let headers = "Host: sse.example.com\r\nAccept: text/event-stream";
        c.send(format!("GET /events?topic={topic} HTTP/1.1\r\n{headers}\r\n{resume}\r\n").as_bytes());
        let head = c.read_response();
        assert_eq!(head.status, 200, "subscribe through nginx: {head:?}\n{}", nginx.log());
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert_eq!(head.header("transfer-encoding"), Some("chunked"), "{head:?}");
        let socket = c.reader.get_ref().try_clone().expect("clone socket");
        let frames = BufReader::new(Dechunk { inner: c.reader, left: 0, after_chunk: false });
        let mut s = ProxiedStream { socket, frames };
        let prelude = s.next_frame().expect("prelude through nginx");
        assert!(prelude.starts_with("retry: "), "prelude {prelude:?}");
        s
    }

    fn next_frame(&mut self) -> io::Result<String> {
        let mut frame = String::new();
        loop {
            let mut line = String::new();
            if self.frames.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            frame.push_str(&line);
            if line == "\n" {
                return Ok(frame);
            }
        }
    }

    /// The next event with data, skipping heartbeats, within `within`.
    fn next_event(&mut self, within: Duration) -> io::Result<SseEvent> {
        self.socket.set_read_timeout(Some(within))?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = parse_frame(&self.next_frame()?) {
                return Ok(e);
            }
            if Instant::now() > deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    }
}

/// Publishes through nginx's `/publish` location; returns the id.
fn publish_via(nginx: &Nginx, topic: &str, data: &str) -> u64 {
    let r =
        Client::connect(nginx.addr).publish(&format!("topic={topic}"), Some("text/plain"), data.as_bytes());
    assert_eq!(r.status, 202, "publish through nginx: {}\n{}", r.text(), nginx.log());
    r.json()["id"].as_u64().expect("id")
}

#[test]
fn nginx_streams_unbuffered_kept_open_by_heartbeats_and_resumes() {
    let server = TestServer::start(Config { heartbeat_ms: 300, ..Config::loopback() });
    let nginx = Nginx::start(server.addr, "2s");
    let mut sub = ProxiedStream::connect(&nginx, "jobs", None);
    server.wait_stats("stream", |s| s.streams == 1);

    // One small event must not wait for a proxy buffer to fill.
    let first = publish_via(&nginx, "jobs", "first");
    let e = sub.next_event(Duration::from_secs(5)).expect("the first event arrives through nginx within 5 s");
    assert_eq!((e.id_u64(), e.data.as_str()), (first, "first"));

    // Idle for 5 s, more than twice proxy_read_timeout (2 s): heartbeats keep it open.
    let (start, mut heartbeats) = (Instant::now(), 0);
    sub.socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    while start.elapsed() < Duration::from_secs(5) {
        match sub.next_frame() {
            Ok(f) if f == ":\n\n" => heartbeats += 1,
            Ok(f) => panic!("unexpected frame {f:?}"),
            Err(e) => panic!("stream ended after {:?} idle: {e}\n{}", start.elapsed(), nginx.log()),
        }
    }
    assert!(heartbeats >= 5, "{heartbeats} heartbeats in 5 s at a 300 ms interval");
    let second = publish_via(&nginx, "jobs", "second");
    let e = sub.next_event(Duration::from_secs(5)).expect("the idle stream still receives");
    assert_eq!((e.id_u64(), e.data.as_str()), (second, "second"));

    // Reconnect through nginx with Last-Event-ID: the missed events, in order, then live.
    drop(sub);
    let missed: Vec<u64> = (0..3).map(|i| publish_via(&nginx, "jobs", &format!("missed {i}"))).collect();
    let mut sub = ProxiedStream::connect(&nginx, "jobs", Some(second));
    for (i, id) in missed.iter().enumerate() {
        let e = sub.next_event(Duration::from_secs(5)).expect("replayed event");
        assert_eq!((e.id_u64(), e.data), (*id, format!("missed {i}")));
    }
    let live = publish_via(&nginx, "jobs", "live");
    assert_eq!(sub.next_event(Duration::from_secs(5)).expect("live after replay").id_u64(), live);

    // Metrics, health and the status page are not public.
    for path in ["/metrics", "/healthz", "/readyz", "/"] {
        let r =
            Client::connect(nginx.addr).request(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.status, 404, "{path} through nginx");
    }
}

#[test]
fn nginx_closes_a_stream_without_heartbeats_at_proxy_read_timeout() {
    // The control for the test above: the same proxy closes an idle stream whose heartbeat
    // interval is longer than proxy_read_timeout, so the 2 s setting is really in force.
    let server = TestServer::start(Config { heartbeat_ms: 60_000, ..Config::loopback() });
    let nginx = Nginx::start(server.addr, "2s");
    let mut sub = ProxiedStream::connect(&nginx, "quiet", None);
    let start = Instant::now();
    sub.socket.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let end = loop {
        match sub.next_frame() {
            Ok(f) => assert!(f.starts_with(':'), "unexpected frame {f:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(end.kind(), io::ErrorKind::UnexpectedEof, "nginx ended the stream: {end}");
    let idle = start.elapsed();
    assert!(idle >= Duration::from_millis(1500) && idle < Duration::from_secs(6), "closed after {idle:?}");
}

#[test]
fn nginx_serves_gap_fill_from_the_polling_endpoints_with_admin_listen_set() {
    // As deployed (systemd/sse-edge.env): operator endpoints on --admin-listen, and the
    // client's gap fill and polling fallback through nginx's /topics/ location.
    let server = TestServer::start(Config {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::loopback()
    });
    let nginx = Nginx::start(server.addr, "2s");
    let sent: Vec<u64> = (0..3).map(|i| publish_via(&nginx, "jobs", &format!("e{i}"))).collect();
    let get = |path: &str| {
        Client::connect(nginx.addr).request(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    };
    let r = get(&format!("/topics/jobs/events?after={}", sent[0]));
    assert_eq!(r.status, 200, "gap fill through nginx: {}\n{}", r.text(), nginx.log());
    let ids: Vec<u64> = r.json().as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, &sent[1..]);
    let r = get("/topics/jobs/latest");
    assert_eq!(r.status, 200, "latest through nginx: {}", r.text());
    assert_eq!(r.json()["data"], "e2");
    assert_eq!(get("/metrics").status, 404, "metrics stay private");
}

// ---- sse-edge check ------------------------------------------------------------------------

fn run_check(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("SSE_EDGE_MAX_CONNECTIONS").output().expect("run sse-edge check")
}

#[test]
fn check_reports_capacity_binding_limit_and_advice() {
    let out = run_check(&["check", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(v["capacity"].as_u64().unwrap() > 0, "{v:#}");
    let binding = v["binding"].as_str().expect("a binding limit");
    assert!(["open_files", "file_max", "tcp_mem", "memory"].contains(&binding), "{binding}");
    assert_eq!(v["bounds"][0]["limit"], binding);
    assert!(v["readings"]["nofile_hard"].as_u64().is_some() && v["readings"]["mem_total_bytes"].is_u64());
    assert!(v["advice"].is_array() && v["reachable"] == true);

    let human = run_check(&["check"]);
    assert!(human.status.success());
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains("capacity: ") && text.contains("; binding limit: "), "{text}");
    if !v["advice"].as_array().unwrap().is_empty() {
        assert!(text.contains("sysctl/99-sse-edge.conf") || text.contains("LimitNOFILE"), "{text}");
    }

    // Unreachable --max-connections: exit 2 and advice, the option on either side of `check`.
    for args in [["check", "--max-connections", "100000000"], ["--max-connections", "100000000", "check"]] {
        let out = run_check(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(check::EXIT_UNREACHABLE as i32), "{args:?}: {text}");
        assert!(text.contains("--max-connections 100000000 cannot be reached"), "{text}");
        assert!(text.contains("sysctl/99-sse-edge.conf") || text.contains("LimitNOFILE"), "{text}");
    }
}

#[test]
fn check_names_limitnofile_when_the_open_file_limit_binds() {
    let out = Command::new("sh")
        .args(["-c", "ulimit -n 1000 && exec \"$0\" check", BIN])
        .env_remove("SSE_EDGE_MAX_CONNECTIONS")
        .output()
        .expect("run check under ulimit -n 1000");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("capacity: 872 streams; binding limit: open files"), "{text}");
    assert!(text.contains("LimitNOFILE=1048576"), "{text}");
}

// ---- check::assess on synthetic hosts --------------------------------------------------------

const GIB: u64 = 1 << 30;

fn host() -> Readings {
    Readings {
        nofile_soft: Some(1024),
        nofile_hard: Some(20_000),
        file_max: Some(2_466_177),
        nr_open: Some(1_048_576),
        files_in_use: Some(40_000),
        somaxconn: Some(4096),
        tcp_max_syn_backlog: Some(4096),
        ip_local_port_range: Some([32768, 60999]),
        tcp_mem_pages: Some([287_901, 383_868, 575_802]),
        tcp_mem_in_use_pages: Some(0),
        tcp_wmem: Some([4096, 16384, 4_194_304]),
        tcp_rmem: Some([4096, 131_072, 6_291_456]),
        mem_total_bytes: Some(24 * GIB),
        mem_available_bytes: Some(22 * GIB),
        cgroup_memory_limit_bytes: None,
        cgroup_memory_usage_bytes: None,
        cores: 2,
        page_size: 4096,
    }
}

fn lines(r: &check::Report) -> Vec<&str> {
    r.advice.iter().map(|a| a.line.as_str()).collect()
}

#[test]
fn assess_open_file_limit_binds_and_names_limitnofile() {
    let r = check::assess(&host(), &Config::default());
    // The hard limit minus --fd-reserve 64 and --request-reserve 64.
    assert_eq!((r.capacity, r.binding), (19_872, Some(Limit::OpenFiles)));
    assert_eq!(r.server_max_connections, Some(19_872));
    assert!(r.reachable && r.exit_code() == 0);
    assert_eq!(r.advice[0].line, "LimitNOFILE=1048576");
    assert_eq!(r.advice[0].file, "systemd/sse-edge.service");
    // Memory holds ~4M idle streams, so the plan is what LimitNOFILE=1048576 allows.
    assert_eq!(r.target, 1_048_576 - 128);
    assert_eq!(lines(&r), ["LimitNOFILE=1048576", "net.ipv4.tcp_mem = 786432 1048576 1572864"]);
    assert!(r.to_string().contains("binding limit: open files"));
}

#[test]
fn assess_unreachable_max_connections_exits_2_with_every_line_to_change() {
    let config = Config { max_connections: 2_000_000, ..Config::default() };
    let r = check::assess(&host(), &config);
    assert!(!r.reachable);
    assert_eq!(r.exit_code(), check::EXIT_UNREACHABLE);
    assert_eq!(
        lines(&r),
        ["LimitNOFILE=2000128", "fs.nr_open = 2097152", "net.ipv4.tcp_mem = 1523712 2031616 3047424",]
    );
    assert!(r.to_string().contains("--max-connections 2000000 cannot be reached"));
    // Within capacity: reachable, and the server would cap at exactly that.
    let r = check::assess(&host(), &Config { max_connections: 10_000, ..Config::default() });
    assert!(r.reachable && r.server_max_connections == Some(10_000));
}

#[test]
fn assess_cgroup_memory_limit_binds_and_names_memorymax() {
    let h = Readings {
        nofile_hard: Some(1_048_576),
        cgroup_memory_limit_bytes: Some(GIB),
        cgroup_memory_usage_bytes: Some(0),
        ..host()
    };
    let config = Config { max_connections: 500_000, ..Config::default() };
    let r = check::assess(&h, &config);
    // (1 GiB − 256 MiB history) / (5 KiB + 512 B).
    assert_eq!((r.capacity, r.binding), ((GIB - (256 << 20)) / 5632, Some(Limit::Memory)));
    assert_eq!(lines(&r), ["MemoryMax=4G"]);
}

#[test]
fn assess_short_listen_queues_and_unreadable_or_unlimited_hosts() {
    let r = check::assess(&Readings { somaxconn: Some(128), ..host() }, &Config::default());
    assert!(lines(&r).contains(&"net.core.somaxconn = 65535"), "{:?}", lines(&r));
    // Nothing readable: no capacity, no binding limit, and no panic.
    let r = check::assess(&Readings::default(), &Config::default());
    assert_eq!((r.capacity, r.binding, r.reachable), (0, None, true));
    assert!(r.to_string().contains("capacity: unknown"));
    assert!(
        !check::assess(&Readings::default(), &Config { max_connections: 1, ..Config::default() }).reachable
    );
    // RLIM_INFINITY and LONG_MAX file-max do not overflow; tcp_mem binds next.
    let big = Readings { nofile_hard: Some(u64::MAX), file_max: Some(i64::MAX as u64), ..host() };
    let r = check::assess(&big, &Config::default());
    assert_eq!(r.binding, Some(Limit::TcpMem));
}
