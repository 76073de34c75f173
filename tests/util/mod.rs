//! Shared helpers for integration tests: a server guard on 127.0.0.1:0, a raw HTTP client,
//! an SSE client that parses frames, and a bounded wait.
#![allow(dead_code)]

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
pub struct SseClient {
    pub reader: BufReader<TcpStream>,
    pub head: Response,
}

impl SseClient {
    /// `GET path` and check the event-stream head and prelude.
    pub fn connect(addr: SocketAddr, path: &str) -> SseClient {
        let mut c = Client::connect(addr);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n").as_bytes());
        let head = c.read_response();
        assert_eq!(head.status, 200, "subscribe {path}: {}", head.text());
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        let mut s = SseClient { reader: c.reader, head };
        let prelude = s.next_raw_frame().expect("prelude");
        assert!(prelude.starts_with("retry: "), "prelude {prelude:?}");
        s
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

    /// Reads `n` events or panics.
    pub fn events(&mut self, n: usize) -> Vec<SseEvent> {
        (0..n).map(|i| self.next_event().unwrap_or_else(|e| panic!("event {i} of {n}: {e}"))).collect()
    }

    pub fn set_timeout(&self, t: Duration) {
        self.reader.get_ref().set_read_timeout(Some(t)).unwrap();
    }
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
