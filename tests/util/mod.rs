//! Shared helpers for integration tests: a server guard on 127.0.0.1:0, a raw HTTP client,
//! an SSE client that parses frames, and a bounded wait.
#![allow(dead_code)]

pub mod bus;
pub mod netns;
pub mod proxy;
pub mod redis;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sse_edge::{Config, Handle, Server, Stats};

/// How long any single read in a test may wait before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1:0; stopped when dropped, also when the test panics.
pub struct TestServer {
    pub handle: Option<Handle>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start(config: Config) -> TestServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let handle = Server::start(config).expect("server starts");
        let addr = handle.local_addr();
        TestServer { handle: Some(handle), addr }
    }

    /// Defaults on loopback with `threads` loops.
    pub fn with_threads(threads: u16) -> TestServer {
        TestServer::start(Config { threads: Some(threads), ..Config::loopback() })
    }

    pub fn handle(&self) -> &Handle {
        self.handle.as_ref().expect("running")
    }

    pub fn stats(&self) -> Stats {
        self.handle().stats()
    }

    /// Waits until `cond(stats)` holds; panics with the last stats after `IO_TIMEOUT`.
    pub fn wait_stats(&self, what: &str, cond: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let s = self.stats();
            if cond(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; stats: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestServer {
    /// Stops at once (dropping the handle closes every connection without a drain).
    fn drop(&mut self) {
        drop(self.handle.take());
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body {:?}: {e}", self.text()))
    }
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        Client { reader: BufReader::new(s) }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream().write_all(raw).expect("write request");
    }

    /// Reads one response (status line, headers, `Content-Length` body).
    pub fn read_response(&mut self) -> Response {
        self.try_read_response().expect("read response")
    }

    pub fn try_read_response(&mut self) -> io::Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("header line");
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut r = Response { status, headers, body: Vec::new() };
        if let Some(len) = r.header("content-length") {
            let mut body = vec![0; len.parse().unwrap()];
            self.reader.read_exact(&mut body)?;
            r.body = body;
        }
        Ok(r)
    }

    /// Sends `raw` (ignoring a write error: the server may close first) and reads a response.
    pub fn try_read_response_after(&mut self, raw: &[u8]) -> io::Result<Response> {
        let _ = self.stream().write_all(raw);
        self.try_read_response()
    }

    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response()
    }

    /// POSTs `body` to `/publish?{query}` with an optional content type.
    pub fn publish(&mut self, query: &str, content_type: Option<&str>, body: &[u8]) -> Response {
        self.send(&publish_request(query, content_type, body));
        self.read_response()
    }

    /// True when the server closed the connection (EOF or reset) within `IO_TIMEOUT`.
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// The bytes of a publish request.
pub fn publish_request(query: &str, content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let ct = content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default();
    let mut raw =
        format!("POST /publish?{query} HTTP/1.1\r\nHost: test\r\n{ct}Content-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Publishes over a fresh connection and returns the assigned id.
pub fn publish(addr: SocketAddr, topic: &str, data: &str) -> u64 {
    let r = Client::connect(addr).publish(&format!("topic={topic}"), Some("text/plain"), data.as_bytes());
    assert_eq!(r.status, 202, "publish: {}", r.text());
    r.json()["id"].as_u64().expect("id")
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn id_u64(&self) -> u64 {
        self.id.as_deref().and_then(|i| i.parse().ok()).expect("numeric id")
    }
}

/// A subscriber: reads the response head, then raw frames.
#[derive(Debug)]
pub struct SseClient {
    pub reader: BufReader<TcpStream>,
    pub head: Response,
}

impl SseClient {
    /// `GET path` and check the event-stream head and prelude.
    pub fn connect(addr: SocketAddr, path: &str) -> SseClient {
        match SseClient::try_open(Client::connect(addr), path, "") {
            Ok(Ok(s)) => s,
            Ok(Err(head)) => panic!("subscribe {path}: want 200, got {} {}", head.status, head.text()),
            Err(e) => panic!("subscribe {path}: {e}"),
        }
    }

    /// `GET path` with extra header lines (each ending in `\r\n`) on `c`: the stream, its
    /// head and prelude checked, on 200; the response otherwise; an error when the server
    /// reset the connection before answering.
    pub fn try_open(mut c: Client, path: &str, headers: &str) -> io::Result<Result<SseClient, Response>> {
        Self::send_open(&mut c, path, headers);
        Self::finish_open(c, path)
    }

    /// Sends the stream request of [`SseClient::try_open`] without waiting for its answer.
    pub fn send_open(c: &mut Client, path: &str, headers: &str) {
        c.send(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{headers}\r\n")
                .as_bytes(),
        );
    }

    /// Reads the answer to a request [`SseClient::send_open`] sent.
    pub fn finish_open(mut c: Client, path: &str) -> io::Result<Result<SseClient, Response>> {
        let head = c.try_read_response()?;
        if head.status != 200 {
            return Ok(Err(head));
        }
        assert_eq!(head.header("content-type"), Some("text/event-stream"), "{path}");
        let mut s = SseClient { reader: c.reader, head };
        let prelude = s.next_raw_frame().expect("prelude");
        assert!(prelude.starts_with("retry: "), "prelude {prelude:?}");
        Ok(Ok(s))
    }

    /// Raw text of the next frame, up to and including its blank line.
    pub fn next_raw_frame(&mut self) -> io::Result<String> {
        let mut frame = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            frame.push_str(&line);
            if line == "\n" {
                return Ok(frame);
            }
        }
    }

    /// The next event with data (comments and heartbeats skipped).
    pub fn next_event(&mut self) -> io::Result<SseEvent> {
        loop {
            let raw = self.next_raw_frame()?;
            if let Some(e) = parse_frame(&raw) {
                return Ok(e);
            }
        }
    }

    /// The next event that carries an id: a published event, skipping the node's own
    /// notices (`system.overloaded`, `gap`...), which carry none.
    pub fn next_published(&mut self) -> io::Result<SseEvent> {
        loop {
            let e = self.next_event()?;
            if e.id.is_some() {
                return Ok(e);
            }
        }
    }

    /// Reads `n` events or panics.
    pub fn events(&mut self, n: usize) -> Vec<SseEvent> {
        (0..n).map(|i| self.next_event().unwrap_or_else(|e| panic!("event {i} of {n}: {e}"))).collect()
    }

    pub fn set_timeout(&self, t: Duration) {
        self.reader.get_ref().set_read_timeout(Some(t)).unwrap();
    }
}

/// Reads `n` published events (the node's own notices skipped) on its own thread, so readers
/// keep up concurrently, as real ones do; stops early at a read error (a timeout): the
/// caller's assertion then shows what arrived. Gives the reader back, still open.
pub fn read_on_thread(
    mut reader: SseClient,
    n: usize,
) -> std::thread::JoinHandle<(SseClient, Vec<SseEvent>)> {
    std::thread::spawn(move || {
        let got = (0..n).map_while(|_| reader.next_published().ok()).collect();
        (reader, got)
    })
}

/// Opens `readers` streams on topic `burst`, holds loop 0 for `hold` while `events` events
/// are published in one batch, has each reader read them on its own thread and checks that
/// every reader got every event, in order; gives the readers back, still open.
pub fn burst_to_readers(
    server: &TestServer,
    readers: usize,
    events: usize,
    hold: Duration,
) -> Vec<SseClient> {
    let subs: Vec<SseClient> =
        (0..readers).map(|_| SseClient::connect(server.addr, "/events?topic=burst")).collect();
    server.wait_stats("streams", |s| s.streams == readers as u64);
    let msgs: Vec<sse_edge::Message> =
        (0..events).map(|n| sse_edge::Message::new("burst", n.to_string())).collect();
    assert!(server.handle().debug_block_loop(0, hold));
    server.handle().publisher().publish_batch(&msgs).unwrap();
    let threads: Vec<_> = subs.into_iter().map(|r| read_on_thread(r, events)).collect();
    let want: Vec<String> = (0..events).map(|n| n.to_string()).collect();
    threads
        .into_iter()
        .map(|t| {
            let (reader, got) = t.join().unwrap();
            let got: Vec<String> = got.into_iter().map(|e| e.data).collect();
            assert_eq!(got.len(), events, "{:?}", server.stats());
            assert_eq!(got, want, "no gap, no loss");
            reader
        })
        .collect()
}

/// Parses one frame the way an EventSource would; `None` for comment-only frames.
pub fn parse_frame(raw: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data, mut has_data) = (None, None, String::new(), false);
    for line in raw.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "id" => id = Some(value.to_string()),
            "event" => event = Some(value.to_string()),
            "data" => {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    has_data.then_some(SseEvent { id, event, data })
}

// ---------------------------------------------------------------------------------------------
// Helpers for external processes and plain HTTP, added for tests/observability.rs and
// tests/status_page.rs (names differ from the binary helpers further down). Fully qualified
// paths, so nothing above changes.
// ---------------------------------------------------------------------------------------------

/// A child process a test started. Dropping it stops that process by its pid: SIGTERM, up to
/// 5 s to exit, then SIGKILL; it is always reaped.
pub struct ProcessGuard {
    pub child: std::process::Child,
    pub name: &'static str,
}

impl ProcessGuard {
    pub fn new(name: &'static str, child: std::process::Child) -> ProcessGuard {
        ProcessGuard { child, name }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        // A test that failed while it had the process stopped (SIGSTOP) must not leave it
        // stopped: a stopped process handles no SIGTERM.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} (pid {}) ignored SIGTERM for 5 s; sending SIGKILL", self.name, self.pid());
        let _ = self.child.kill(); // SIGKILL to this pid only
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it).
pub fn free_local_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A fresh directory under the system temp dir, removed with its contents on drop.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("sse-edge-{prefix}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Panics (never skips) when a system binary the test needs is missing.
pub fn require_binary(path: &str, debian_package: &str) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(path);
    assert!(
        p.is_file(),
        "{path} is missing: run scripts/test, which installs the Debian `{debian_package}` package \
         (or `apt-get install {debian_package}` as root)"
    );
    p
}

/// Runs `systemd-analyze verify` (found at `tool`) on `unit` written as `file_name` in a temp
/// dir, with `/usr/bin/sse-edge` pointed at `binary` (verify checks that `ExecStart` exists);
/// panics with its output unless it passes with nothing said about the unit.
pub fn systemd_verify(tool: &std::path::Path, unit: &str, file_name: &str, binary: &str) {
    let tmp = TempDir::new("unit");
    let path = tmp.join(file_name);
    std::fs::write(&path, unit.replace("/usr/bin/sse-edge", binary)).expect("write unit");
    let out = std::process::Command::new(tool)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains(file_name)).collect();
    assert!(
        out.status.success() || !about_unit.is_empty(),
        "systemd-analyze verify could not run in this environment (its errors are not about the unit); \
         status {}:\n{stderr}",
        out.status
    );
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// `GET path` on a new connection with `Connection: close`; reads a `Content-Length`, chunked
/// or until-EOF body. Errors (refused, timeout) are returned, not panicked on.
pub fn try_http_get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut c = Client { reader: BufReader::new(s) };
    // Head (and a Content-Length body) through the shared parser.
    let mut r = c.try_read_response()?;
    let chunked = r.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            c.reader.read_line(&mut line)?;
            let size =
                usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("chunk size {line:?}: {e}"))
                })?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            c.reader.read_exact(&mut body[start..])?;
            line.clear();
            c.reader.read_line(&mut line)?;
        }
        r.body = body;
    } else if r.header("content-length").is_none() {
        c.reader.read_to_end(&mut r.body)?;
    }
    Ok(r)
}

/// [`try_http_get`] that panics on an I/O error.
/// The value of `name` (a family with its labels, e.g. `sse_bus_gaps_total{reason="trimmed"}`)
/// in a Prometheus text body; panics, showing the body, when it is missing.
pub fn metric_value(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
}

pub fn http_get(addr: SocketAddr, path: &str) -> Response {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}
// ----------------------------- end of observability helpers ----------------------------------

/// The stderr a child wrote so far; clones share the text, which grows until the child exits.
#[derive(Clone, Default)]
pub struct ChildLog(std::sync::Arc<std::sync::Mutex<String>>);

impl ChildLog {
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push_line(&self, line: &str) {
        let mut text = self.0.lock().unwrap_or_else(|e| e.into_inner());
        text.push_str(line);
        text.push('\n');
    }
}

/// A child process (the `sse-edge` binary) from [`spawn_sse_edge`], killed by its own pid when
/// dropped, also when the test panics. `std::process::Child::kill` signals only a child not yet
/// reaped, so a pid the kernel has reused is never touched. When the test panics, the child's
/// log is printed.
pub struct ChildGuard {
    child: std::process::Child,
    log: ChildLog,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr so far (see [`ChildLog`]); the handle stays readable after the guard is gone.
    pub fn log(&self) -> ChildLog {
        self.log.clone()
    }

    /// The exit status if the child exits within `limit`, polling; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The child held the only write end of the pipe, so its reader sees EOF now.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            eprintln!("sse-edge (pid {}) log:\n{}", self.pid(), self.log.text());
        }
    }
}

/// How long a child `sse-edge` may take to log the address it listens on.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `cmd` (an `sse-edge` command line, possibly behind `sh -c '... exec "$0" "$@"'`)
/// with `--listen 127.0.0.1:0` appended and returns once its startup line names the address
/// the kernel chose, so no other process can take the port in between. Sets `RUST_LOG=info`
/// unless `cmd` sets `RUST_LOG` itself (it must keep `sse_edge` at info). A thread collects
/// stderr into [`ChildGuard::log`] until the child exits, so the child never blocks on a full
/// pipe; stdout is discarded.
pub fn spawn_sse_edge(cmd: std::process::Command) -> (ChildGuard, SocketAddr) {
    spawn_sse_edge_on(cmd, "127.0.0.1:0")
}

/// [`spawn_sse_edge`] with `--listen listen` (another process's address, to share its port
/// with `SO_REUSEPORT`).
pub fn spawn_sse_edge_on(mut cmd: std::process::Command, listen: &str) -> (ChildGuard, SocketAddr) {
    use std::process::Stdio;
    use std::sync::mpsc::{self, RecvTimeoutError};

    cmd.args(["--listen", listen]);
    if !cmd.get_envs().any(|(key, _)| key == "RUST_LOG") {
        cmd.env("RUST_LOG", "info");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sse-edge");
    let stderr = child.stderr.take().expect("piped stderr");
    let log = ChildLog::default();
    let (lines_tx, lines_rx) = mpsc::channel();
    let sink = log.clone();
    let stderr_reader = std::thread::spawn(move || {
        let mut stderr = BufReader::new(stderr);
        let mut buf = Vec::new();
        while matches!(stderr.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf).trim_end_matches('\n').to_string();
            sink.push_line(&line);
            let _ = lines_tx.send(line); // nobody listens once the address is known
            buf.clear();
        }
    });
    let mut guard = ChildGuard { child, log, stderr_reader: Some(stderr_reader) };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match lines_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(addr) = listening_addr(&line) {
                    return (guard, addr);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("sse-edge (pid {}) logged no address within {STARTUP_TIMEOUT:?}", guard.pid())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = guard.wait_exit(IO_TIMEOUT).map_or("still running".into(), |s| s.to_string());
                panic!("sse-edge (pid {}) closed stderr before logging its address ({status})", guard.pid())
            }
        }
    }
}

/// The address in sse-edge's startup line `... sse-edge listening on {addr}: {loops} loops, ...`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("sse-edge listening on ")?;
    rest.split_once(": ")?.0.parse().ok()
}

/// How many ports [`start_on_free_port`] tries.
pub const PORT_ATTEMPTS: usize = 5;

/// Starts a third-party server that must be told its port (nginx, Prometheus): calls
/// `start(port)` with a port that was free a moment ago, and again with another one (at most
/// [`PORT_ATTEMPTS`] in all) while it returns `Err(log)`, meaning another process took that
/// port first (see [`port_taken`]). `start` stops its child before returning an error and
/// panics on any other failure.
pub fn start_on_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut log = String::new();
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_local_port();
        match start(port) {
            Ok(up) => return up,
            Err(e) => {
                eprintln!("{what}: port {port} was taken (attempt {attempt} of {PORT_ATTEMPTS})");
                log = e;
            }
        }
    }
    panic!("{what}: the port was taken {PORT_ATTEMPTS} times in a row; last log:\n{log}")
}

/// Whether a server's log says it could not bind its port.
pub fn port_taken(log: &str) -> bool {
    log.to_ascii_lowercase().contains("address already in use")
}

/// A TCP connection to `addr` whose local end is bound to `local` (any 127.0.0.0/8 address
/// works on Linux), so one test can act as several client IPs.
pub fn connect_from(local: std::net::IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(local, 0).into())?;
    sock.connect(&addr.into())?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A [`Client`] whose socket's receive buffer is `bytes` (set before connecting, so the window
/// it advertises stays that small): a client whose kernel buffers fill after a few KiB.
pub fn client_with_receive_buffer(addr: SocketAddr, bytes: usize) -> Client {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    sock.connect(&addr.into()).expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    Client { reader: BufReader::new(s) }
}

/// A [`Client`] over a connection from `local` (see [`connect_from`]).
pub fn client_from(local: std::net::IpAddr, addr: SocketAddr) -> Client {
    Client { reader: BufReader::new(connect_from(local, addr).expect("connect")) }
}

/// An HS256 subscribe token for `sub` on `topics`, expiring at `exp` (Unix seconds).
pub fn mint(key: &[u8], sub: &str, topics: &[&str], exp: u64) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let claims = serde_json::json!({ "sub": sub, "topics": topics, "exp": exp });
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key))
        .expect("HS256 signing")
}

/// Seconds since the Unix epoch (token expiry).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
