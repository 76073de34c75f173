//! The status page (`GET /`) in a real browser: headless Chromium loads it from the node while
//! subscribers are attached, and the stream count the page shows is the node's own count. With
//! `--bus` (a private `redis-server`) the page has no feed, polls `/status.json` and shows the
//! bus's state as the node sees it, down included.
//!
//! Chromium comes from the Debian `chromium` package that `scripts/test` installs; without
//! `/usr/bin/chromium` this test fails with a pointer to `scripts/test` (it never passes
//! silently).
//!
//! Why DevTools and not `--dump-dom`: `--dump-dom` (and `--screenshot`) act when the document
//! has loaded, before the page's EventSource has received its first `status` event (the DOM
//! then still shows `data-value=""`), `--timeout` only shortens that, and
//! `--virtual-time-budget` never ends while an EventSource is open. So the test starts Chromium
//! with `--remote-debugging-port=0` and, over the DevTools protocol (a minimal WebSocket client
//! below), reads `document.documentElement.outerHTML` — the same DOM `--dump-dom` prints — until
//! the feed has arrived, then captures the screenshot.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sse_edge::Config;
use util::redis::RedisServer;
use util::*;

/// Subscribers the test attaches besides the page.
const S: u64 = 7;

#[test]
fn status_page_shows_the_nodes_stream_count() {
    let chromium = require_binary("/usr/bin/chromium", "chromium");
    let server =
        TestServer::start(Config { threads: Some(2), status_interval_ms: 200, ..Config::loopback() });
    let _subs: Vec<SseClient> =
        (0..S).map(|_| SseClient::connect(server.addr, "/events?topic=jobs")).collect();
    server.wait_stats("S streams", |s| s.streams == S);

    // The page itself holds one stream (its EventSource on `sse-edge.status`), and the feed's
    // "streams" is the sum of every loop's open streams: S + 1 while the page is open.
    let expected = S + 1;
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    {
        let profile = TempDir::new("chromium");
        let mut browser = Browser::launch(&chromium, &profile, &url);
        let mut page = browser.page(&url);

        let deadline = Instant::now() + Duration::from_secs(20);
        let (dom, shown, node) = loop {
            let dom = page.dom();
            let shown = attribute(&dom, "streams", "data-value");
            let node = server.stats().streams;
            if shown.as_deref() == Some(expected.to_string().as_str()) && node == expected {
                break (dom, shown, node);
            }
            if Instant::now() > deadline {
                save_artifact("status_page.html", dom.as_bytes());
                panic!(
                    "the page shows streams data-value={shown:?}, the node has {node} streams, \
                     want {expected} for both; DOM saved as an artifact; chromium log:\n{}",
                    browser.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        println!("page shows {shown:?} streams; the node has {node}");
        assert_eq!(shown, Some(expected.to_string()), "data-value of #streams");
        assert_eq!(node, expected, "Handle::stats().streams while the page is open");
        assert_eq!(text_of(&dom, "streams").as_deref(), Some(expected.to_string().as_str()));
        assert_eq!(attribute(&dom, "overload", "data-value").as_deref(), Some("false"));
        assert_eq!(attribute(&dom, "saturation", "data-value").as_deref(), Some("0"), "an idle node");
        let conn_class = attribute(&dom, "conn", "class").unwrap_or_default();
        assert!(conn_class.split(' ').any(|c| c == "connected"), "#conn class {conn_class:?}");
        save_artifact("status_page.html", dom.as_bytes());

        let png = page.screenshot();
        let path = save_artifact("status_page.png", &png);
        println!("screenshot: {} ({} bytes)", path.display(), png.len());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        let (w, h) = (be32(&png[16..20]), be32(&png[20..24]));
        assert!(w >= 800 && h >= 500, "screenshot is {w}x{h}");
        assert!(png.len() > 10_000, "screenshot is only {} bytes", png.len());
        let written = std::fs::metadata(&path).expect("screenshot file").len();
        assert_eq!(written, png.len() as u64);
    } // Chromium stops here (SIGTERM by pid), then its profile directory is removed.

    // The page's stream was the extra one: it goes when the browser goes.
    server.wait_stats("the page's stream closed", |s| s.streams == S);
}

/// A node on `redis` with fast status snapshots and a small publish window (to tell it apart
/// from the default on the page).
fn bus_node(redis: &RedisServer) -> TestServer {
    let mut c = Config { threads: Some(2), status_interval_ms: 100, ..Config::loopback() };
    c.bus.url = Some(redis.url());
    c.bus.publish_window = BUS_WINDOW;
    TestServer::start(c)
}

const BUS_WINDOW: usize = 1_000;

/// Polls `/status.json` until a `200` answer satisfies `cond`; returns that snapshot.
fn wait_status(addr: SocketAddr, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let r = http_get(addr, "/status.json");
        let last = r.text();
        if r.status == 200 {
            assert_eq!(r.header("content-type"), Some("application/json"), "{last}");
            let s = r.json();
            if cond(&s) {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "/status.json never showed {what}; last: {} {last}", r.status);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With `--bus` the snapshot says there is no feed and carries the bus's state, and follows
/// it: down while Redis is gone, connected again (with a reconnect counted) once it is back.
#[test]
fn status_json_carries_the_bus_state() {
    let mut redis = RedisServer::start();
    let node = bus_node(&redis);
    let _subs: Vec<SseClient> = (0..3).map(|_| SseClient::connect(node.addr, "/events?topic=jobs")).collect();
    node.wait_stats("3 streams", |s| s.streams == 3);
    let s = wait_status(node.addr, "3 streams and the bus connected", |s| {
        s["streams"] == 3 && s["bus"]["connected"] == true
    });
    println!("{s}");
    assert_eq!(s["feed"], false, "with a bus the node publishes no status feed");
    assert_eq!(s["bus"]["window"], BUS_WINDOW, "--bus-publish-window");
    assert_eq!(s["bus"]["reconnects"], 0);
    assert_eq!(s["bus"]["lag"], 0, "the reader is caught up");
    assert_eq!(s["bus"]["gaps"]["trimmed"], 0);
    assert!(s["bus"]["inflight"].as_u64().is_some_and(|n| n <= BUS_WINDOW as u64), "{s}");

    redis.kill();
    wait_status(node.addr, "the bus down", |s| s["bus"]["connected"] == false);
    redis.restart_empty();
    let s = wait_status(node.addr, "the bus back", |s| {
        s["bus"]["connected"] == true && s["bus"]["reconnects"].as_u64().is_some_and(|n| n >= 1)
    });
    println!("{s}");
    // The streams stayed open throughout.
    assert_eq!(s["streams"], 3);
}

/// The status page reads its feed through the JS client library, served from the binary at
/// `/client/<file>.js`: every module the page imports is there, with a JavaScript type; any
/// other name is 404 and the node keeps serving.
#[test]
fn the_client_library_is_served_for_the_status_page() {
    let server = TestServer::start(Config::loopback());
    let page = http_get(server.addr, "/").text();
    assert!(page.contains("from \"/client/index.js\""), "the page imports the client library");
    for (name, text) in sse_edge::client_js::FILES {
        let r = http_get(server.addr, &format!("/client/{name}"));
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("content-type"), Some("text/javascript; charset=utf-8"), "{name}");
        assert_eq!(r.text(), text, "{name}");
    }
    for bad in ["/client/", "/client/nope.js", "/client/../Cargo.toml", "/client/index.js.map"] {
        assert_eq!(http_get(server.addr, bad).status, 404, "{bad}");
    }
    assert_eq!(http_get(server.addr, "/client/index.js").status, 200, "still serving");
}

/// Without a bus the snapshot is what the feed carries (`feed: true`, no `bus`); with
/// `--status-interval-ms 0` there is none (404); only GET and HEAD are allowed; with
/// `--admin-listen` it moves there with the page.
#[test]
fn status_json_without_a_bus() {
    let node = TestServer::start(Config { threads: Some(1), status_interval_ms: 100, ..Config::loopback() });
    let s = wait_status(node.addr, "a snapshot", |_| true);
    assert_eq!(s["feed"], true, "{s}");
    assert_eq!(s["saturation"], 0.0, "an idle node is not saturated: {s}");
    assert!(s.get("bus").is_none(), "no bus object without --bus: {s}");
    assert_eq!(s["interval_ms"], 100);
    let r = Client::connect(node.addr).request(b"POST /status.json HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")), "{}", r.text());
    assert_eq!(http_get(node.addr, "/healthz").status, 200, "the node keeps serving");

    let off = TestServer::start(Config { threads: Some(1), status_interval_ms: 0, ..Config::loopback() });
    let r = http_get(off.addr, "/status.json");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["feed"], false);

    let split = TestServer::start(Config {
        threads: Some(1),
        status_interval_ms: 100,
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::loopback()
    });
    let admin = split.handle().admin_addr().expect("admin address");
    assert_eq!(wait_status(admin, "a snapshot on the admin address", |_| true)["feed"], true);
    let r = http_get(split.addr, "/status.json");
    assert_eq!(r.status, 404, "the public address does not serve it: {}", r.text());
    assert_eq!(r.json()["error"], "not found");
}

/// The page on a bus node: no feed stream (the page polls), the node's stream count, and the
/// bus card with the node's window and reconnects; when Redis goes, the card says so.
#[test]
fn status_page_shows_the_bus_state() {
    let chromium = require_binary("/usr/bin/chromium", "chromium");
    let mut redis = RedisServer::start();
    let node = bus_node(&redis);
    let _subs: Vec<SseClient> = (0..S).map(|_| SseClient::connect(node.addr, "/events?topic=jobs")).collect();
    node.wait_stats("S streams", |s| s.streams == S);
    let url = format!("http://127.0.0.1:{}/", node.addr.port());
    let profile = TempDir::new("chromium");
    let mut browser = Browser::launch(&chromium, &profile, &url);
    let mut page = browser.page(&url);

    let dom =
        wait_dom(&mut page, &browser, "status_page_bus.html", "S streams and the bus connected", |dom| {
            attribute(dom, "streams", "data-value") == Some(S.to_string())
                && attribute(dom, "bus-state", "data-value").as_deref() == Some("connected")
        });
    // Polling holds no stream: the node still has exactly the S subscribers.
    assert_eq!(node.stats().streams, S, "the page opened no stream");
    assert!(!start_tag(&dom, "bus-card").unwrap_or_default().contains(" hidden"), "the bus card is shown");
    assert_eq!(attribute(&dom, "bus-window", "data-value").map(|v| v.parse::<u64>().is_ok()), Some(true));
    assert!(
        text_of(&dom, "bus-window").is_some_and(|t| t.ends_with("/ 1,000")),
        "{:?}",
        text_of(&dom, "bus-window")
    );
    assert_eq!(attribute(&dom, "bus-reconnects", "data-value").as_deref(), Some("0"));
    let conn_class = attribute(&dom, "conn", "class").unwrap_or_default();
    assert!(conn_class.split(' ').any(|c| c == "connected"), "#conn class {conn_class:?}");
    let png = page.screenshot();
    println!("screenshot: {}", save_artifact("status_page_bus.png", &png).display());

    redis.kill();
    let dom = wait_dom(&mut page, &browser, "status_page_bus.html", "the bus down", |dom| {
        attribute(dom, "bus-state", "data-value").as_deref() == Some("down")
    });
    assert_eq!(text_of(&dom, "bus-state").as_deref(), Some("DOWN — publishes get 503"));
    save_artifact("status_page_bus.html", dom.as_bytes());
}

/// Reads the page's DOM until `cond` holds; on timeout saves it as `artifact` and panics.
fn wait_dom(
    page: &mut Page,
    browser: &Browser,
    artifact: &str,
    what: &str,
    cond: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dom = page.dom();
        if cond(&dom) {
            return dom;
        }
        if Instant::now() > deadline {
            save_artifact(artifact, dom.as_bytes());
            panic!("the page never showed {what}; DOM saved as {artifact}; chromium log:\n{}", browser.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes a test artifact under `CARGO_TARGET_TMPDIR` (or `target/test-artifacts`).
fn save_artifact(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = match option_env!("CARGO_TARGET_TMPDIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts"),
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The start tag of the element with `id`, e.g. `<div class="big" id="streams" data-value="8">`.
fn start_tag<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let at = html.find(&format!(" id=\"{id}\""))?;
    let open = html[..at].rfind('<')?;
    let close = at + html[at..].find('>')?;
    Some(&html[open..=close])
}

/// An attribute of the element with `id`, as the serialised DOM has it.
fn attribute(html: &str, id: &str, name: &str) -> Option<String> {
    let tag = start_tag(html, id)?;
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = at + tag[at..].find('"')?;
    Some(tag[at..end].replace("&amp;", "&").replace("&quot;", "\""))
}

/// The text up to the next tag after the element's start tag (its leading text node).
fn text_of(html: &str, id: &str) -> Option<String> {
    let tag = start_tag(html, id)?;
    let at = html.find(tag)? + tag.len();
    let end = at + html[at..].find('<')?;
    Some(html[at..end].to_string())
}

#[test]
fn dom_helpers_read_attributes_and_text() {
    let html = r#"<div class="big" id="streams" data-value="8">8</div><div id="conn" class="pill connected">x</div>"#;
    assert_eq!(attribute(html, "streams", "data-value").as_deref(), Some("8"));
    assert_eq!(attribute(html, "conn", "class").as_deref(), Some("pill connected"));
    assert_eq!(text_of(html, "streams").as_deref(), Some("8"));
    assert_eq!(attribute(html, "nope", "class"), None);
    assert_eq!(attribute(html, "streams", "title"), None);
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium with remote debugging, and a minimal DevTools-protocol client.
// ---------------------------------------------------------------------------------------------

struct Browser {
    process: ProcessGuard,
    devtools: SocketAddr,
    log_path: PathBuf,
}

impl Browser {
    fn launch(chromium: &std::path::Path, profile: &TempDir, url: &str) -> Browser {
        let log_path = profile.join("chromium.log");
        let log = std::fs::File::create(&log_path).expect("chromium log");
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1200,800",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chromium");
        let mut process = ProcessGuard::new("chromium", child);
        println!("chromium pid {}", process.pid());
        // Chromium writes the port it picked to <profile>/DevToolsActivePort.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port: u16 = loop {
            if let Some(status) = process.exited() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("chromium exited at start ({status}):\n{log}");
            }
            let first = std::fs::read_to_string(&port_file).ok().and_then(|s| s.lines().next()?.parse().ok());
            if let Some(port) = first {
                break port;
            }
            assert!(Instant::now() < deadline, "chromium wrote no DevToolsActivePort in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser { process, devtools: ([127, 0, 0, 1], port).into(), log_path }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Attaches to the tab that shows `url`.
    fn page(&mut self, url: &str) -> Page {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = http_get(self.devtools, "/json/list");
            assert_eq!(r.status, 200, "/json/list: {}", r.text());
            let targets: Value = serde_json::from_slice(&r.body).expect("/json/list JSON");
            let tab =
                targets.as_array().into_iter().flatten().find(|t| t["type"] == "page" && t["url"] == url);
            if let Some(ws) = tab.and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
                return Page { ws: WebSocket::connect(ws), next_id: 0 };
            }
            if let Some(status) = self.process.exited() {
                panic!("chromium exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no tab for {url}: {targets}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One tab, driven over its DevTools WebSocket.
struct Page {
    ws: WebSocket,
    next_id: u64,
}

impl Page {
    /// Sends one command and returns its `result` (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send_text(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let msg: Value = serde_json::from_str(&self.ws.read_message()).expect("DevTools JSON");
            if msg["id"] == id {
                assert!(msg.get("error").is_none(), "{method}: {msg}");
                return msg["result"].clone();
            }
        }
    }

    /// The serialised DOM, as `--dump-dom` prints it.
    fn dom(&mut self) -> String {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": "document.documentElement.outerHTML", "returnByValue": true}),
        );
        // Before the page has a document (navigation still starting) the expression throws;
        // that is "not yet", and the caller polls again.
        r["result"]["value"].as_str().unwrap_or_default().to_string()
    }

    fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }
}

/// A client WebSocket (RFC 6455) over plain TCP: text frames out (masked), messages in.
struct WebSocket {
    s: TcpStream,
}

impl WebSocket {
    fn connect(url: &str) -> WebSocket {
        let rest = url.strip_prefix("ws://").unwrap_or_else(|| panic!("not a ws:// URL: {url}"));
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut s = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes()).expect("handshake");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).expect("handshake response");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "WebSocket upgrade refused:\n{head}");
        WebSocket { s }
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x5a, 0x17, 0xc3, 0x9e];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&frame).expect("WebSocket write");
    }

    fn send_text(&mut self, text: &str) {
        self.send_frame(0x1, text.as_bytes());
    }

    /// The next complete text message (pings answered, fragments joined).
    fn read_message(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h).expect("WebSocket frame");
            let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
            assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.s.read_exact(&mut b).unwrap();
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.s.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            assert!(len < 64 << 20, "frame of {len} bytes");
            let mut payload = vec![0u8; len as usize];
            self.s.read_exact(&mut payload).expect("WebSocket payload");
            match opcode {
                0x0 | 0x1 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("UTF-8 message");
                    }
                }
                0x8 => panic!("DevTools closed the WebSocket: {:?}", String::from_utf8_lossy(&payload)),
                0x9 => self.send_frame(0xA, &payload),
                _ => {}
            }
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().fold(0u32, |acc, &c| acc << 6 | value(c)) << (6 * (4 - chunk.len()));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_padded_and_unpadded_input() {
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(base64_decode("YQ=="), b"a");
    assert_eq!(base64_decode("YWI="), b"ab");
    assert_eq!(base64_decode("YWJj"), b"abc");
    assert_eq!(base64_decode(""), b"");
}
