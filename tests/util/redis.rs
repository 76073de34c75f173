//! A private `redis-server` per test: on a unix socket in its own temp dir (`--port 0`, so no
//! TCP port can clash), no persistence unless asked, stopped by its pid when dropped.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{require_binary, ProcessGuard, TempDir};

/// How long a `redis-server` may take to answer `PING` after it was started.
const REDIS_STARTUP: Duration = Duration::from_secs(10);

/// One `redis-server` listening on `<dir>/redis.sock` (and, from [`RedisServer::start_tcp`],
/// on a loopback port too).
pub struct RedisServer {
    pub dir: TempDir,
    pub guard: Option<ProcessGuard>,
    /// The TCP port, when it listens on one.
    pub port: Option<u16>,
}

impl RedisServer {
    /// Starts an empty Redis without persistence.
    pub fn start() -> RedisServer {
        let mut r = RedisServer { dir: TempDir::new("redis"), guard: None, port: None };
        r.launch();
        r
    }

    /// Starts an empty Redis that also listens on a free loopback port (retried when another
    /// process takes the port first, see [`super::start_on_free_port`]).
    pub fn start_tcp() -> RedisServer {
        super::start_on_free_port("redis-server", |port| {
            let mut r = RedisServer { dir: TempDir::new("redis"), guard: None, port: Some(port) };
            r.launch();
            match r.guard.as_mut().map(|g| g.exited()) {
                Some(None) => Ok(r),
                _ => Err(format!("redis-server on port {port} exited")),
            }
        })
    }

    /// The `redis://` URL of its TCP port.
    pub fn tcp_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port.expect("started with start_tcp"))
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The `--bus` URL of this Redis.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn launch(&mut self) {
        let bin = require_binary("/usr/bin/redis-server", "redis-server");
        let port = self.port.unwrap_or(0).to_string();
        let child = Command::new(bin)
            .args(["--port", &port, "--bind", "127.0.0.1", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.guard = Some(ProcessGuard::new("redis-server", child));
        let deadline = Instant::now() + REDIS_STARTUP;
        while self.command(&["PING"]).as_deref() != Some("+PONG\r\n") {
            if self.guard.as_mut().is_some_and(|g| g.exited().is_some()) {
                return; // the port was taken: the caller retries
            }
            assert!(Instant::now() < deadline, "redis-server did not answer PING within {REDIS_STARTUP:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`: the data is gone (no persistence), the socket file stays behind.
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            let _ = g.child.kill();
            let _ = g.child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Kills this Redis and starts a new, empty one on the same socket.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.launch();
    }

    /// Sends one command (RESP) and returns the raw reply read within a short wait, or
    /// `None` when Redis cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = UnixStream::connect(self.socket()).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}
