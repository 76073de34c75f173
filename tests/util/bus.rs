//! Cluster helpers for the bus fault tests (`tests/bus_faults.rs`): `sse-edge` nodes as child
//! processes on one Redis, a subscriber thread that follows its node's death or drain to
//! another live node with `Last-Event-ID` (as an EventSource does, after the `retry:` delay),
//! and a paced publisher thread that retries an event on the next live node when a node
//! cannot answer it.
//!
//! Bus ids are not dense (they are floored by Redis's clock), so nothing here computes an id:
//! the publisher records the id each `202` names, the followers record what they received,
//! and the tests compare the two as sequences of (id, event, data).

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{parse_frame, spawn_sse_edge, try_http_get, ChildGuard, Client, SseClient, SseEvent, IO_TIMEOUT};

/// The `retry:` every test node sends (`--retry-ms`): short, so a follower comes back soon.
pub const RETRY_MS: u64 = 100;
/// How long a follower keeps looking for a live node that accepts its stream.
pub const RECONNECT_DEADLINE: Duration = Duration::from_secs(20);
/// Attempts the publisher makes for one event (each on the next live node) before failing.
pub const PUBLISH_ATTEMPTS: usize = 100;
/// The publisher's pause after trying every live node once without a `202`.
const PUBLISH_ROUND_PAUSE: Duration = Duration::from_millis(20);

/// One received event: (id, event name, data).
pub type Received = (u64, Option<String>, String);

/// Waits until `cond` holds, for at most [`IO_TIMEOUT`].
pub fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An `sse-edge` process and its public address; killed by its pid when dropped.
pub struct Node {
    pub guard: ChildGuard,
    pub addr: SocketAddr,
}

impl Node {
    /// Starts `cmd` (see [`node_command`]) on a free loopback port.
    pub fn start(cmd: Command) -> Node {
        let (guard, addr) = spawn_sse_edge(cmd);
        Node { guard, addr }
    }

    /// Sends `signal` to this node's pid only.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.guard.pid() as i32), signal)
            .unwrap_or_else(|e| panic!("{signal} to sse-edge pid {}: {e}", self.guard.pid()));
    }
}

/// An `sse-edge` command line on `bus`: one loop, unpinned (several nodes share 2 cores), a
/// short `retry:` and shutdown spread, a drain well inside a test's time; then `extra`.
pub fn node_command(bus: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sse-edge"));
    cmd.args(node_args(bus, extra));
    cmd
}

/// The arguments of [`node_command`] (to run the binary through a wrapper such as
/// `ip netns exec`).
pub fn node_args(bus: &str, extra: &[&str]) -> Vec<String> {
    let retry = RETRY_MS.to_string();
    let mut args = vec!["--threads", "1", "--pin-threads", "false", "--bus", bus, "--retry-ms", &retry];
    args.extend(["--shutdown-retry-spread-ms", "200", "--drain-timeout-ms", "5000"]);
    args.extend(extra);
    args.into_iter().map(String::from).collect()
}

/// Open streams on the node at `addr` (summed over its loops), from `/metrics`.
pub fn streams(addr: SocketAddr) -> usize {
    let body = try_http_get(addr, "/metrics").unwrap_or_else(|e| panic!("metrics of {addr}: {e}")).text();
    body.lines()
        .filter(|l| l.starts_with("sse_streams_active{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// Waits until the node at `addr` holds `n` open streams.
pub fn wait_streams(addr: SocketAddr, n: usize) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let got = streams(addr);
        if got == n {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} holds {got} streams, want {n}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The nodes that take streams and publishes now, shared by the test and its threads.
#[derive(Clone, Default)]
pub struct Live(Arc<Mutex<Vec<SocketAddr>>>);

impl Live {
    pub fn new(addrs: &[SocketAddr]) -> Live {
        Live(Arc::new(Mutex::new(addrs.to_vec())))
    }
    pub fn add(&self, addr: SocketAddr) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(addr);
    }
    pub fn remove(&self, addr: SocketAddr) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|a| *a != addr);
    }
    pub fn snapshot(&self) -> Vec<SocketAddr> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A TCP connection with the tests' read timeout; an error instead of a panic.
fn connect(addr: SocketAddr) -> io::Result<Client> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(Client { reader: BufReader::new(s) })
}

/// Opens a stream on `topic` at `addr`, resuming after `last` when given.
fn open(addr: SocketAddr, topic: &str, last: Option<u64>) -> Result<SseClient, String> {
    let header = last.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    let c = connect(addr).map_err(|e| format!("connect: {e}"))?;
    match SseClient::try_open(c, &format!("/events?topic={topic}"), &header) {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(r)) => Err(format!("{} {}", r.status, r.text())),
        Err(e) => Err(format!("open: {e}")),
    }
}

/// What one follower received over all its connections.
#[derive(Debug, Default)]
pub struct Followed {
    /// Every published event, in arrival order, over all connections.
    pub events: Vec<Received>,
    /// The node of each connection, the first one and each reconnection, in order.
    pub nodes: Vec<SocketAddr>,
    /// Events received on each connection, in the order of [`Followed::nodes`].
    pub per_connection: Vec<usize>,
    /// `server-shutdown` notices received.
    pub shutdowns: usize,
    /// Every other notice (an event without an id, such as `gap`).
    pub notices: Vec<SseEvent>,
}

/// A subscriber on its own thread; see [`follow`].
pub struct Follower {
    /// Published events received so far.
    pub received: Arc<AtomicUsize>,
    thread: JoinHandle<Followed>,
}

impl Follower {
    pub fn join(self) -> Followed {
        self.thread.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

/// Subscribes to `topic` on `first` and reads until an event whose data starts with `end`.
/// When its connection ends (the node died) it waits [`RETRY_MS`]; on `server-shutdown` it
/// closes and waits that notice's `retry:`; then it resumes on the next node of `live` after
/// the one it left, with `Last-Event-ID` set to the last id it received. A read
/// that waits [`IO_TIMEOUT`] fails the follower.
pub fn follow(first: SocketAddr, topic: &str, live: Live, end: &'static str) -> Follower {
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    let topic = topic.to_string();
    let mut sub = open(first, &topic, None).unwrap_or_else(|e| panic!("subscribe on {first}: {e}"));
    let thread = std::thread::spawn(move || {
        let mut out = Followed { nodes: vec![first], per_connection: vec![0], ..Followed::default() };
        let mut node = first;
        let mut last: Option<u64> = None;
        loop {
            let wait_ms = match sub.next_raw_frame() {
                Ok(raw) => {
                    let Some(e) = parse_frame(&raw) else { continue }; // heartbeats, comments
                    if let Some(id) = e.id.as_deref() {
                        let id: u64 = id.parse().unwrap_or_else(|_| panic!("id {id:?} from {node}"));
                        last = Some(id);
                        let done = e.data.starts_with(end);
                        out.events.push((id, e.event, e.data));
                        *out.per_connection.last_mut().expect("a connection") += 1;
                        count.fetch_add(1, Ordering::Release);
                        if done {
                            return out;
                        }
                        continue;
                    }
                    if e.event.as_deref() != Some("server-shutdown") {
                        out.notices.push(e);
                        continue;
                    }
                    out.shutdowns += 1;
                    raw.lines()
                        .find_map(|l| l.strip_prefix("retry:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or_else(|| panic!("server-shutdown without retry: {raw:?}"))
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    panic!("follower on {node}: nothing for {IO_TIMEOUT:?} after id {last:?}")
                }
                Err(_) => RETRY_MS, // the node went away
            };
            std::thread::sleep(Duration::from_millis(wait_ms));
            (sub, node) = reconnect(&live, node, &topic, last);
            out.nodes.push(node);
            out.per_connection.push(0);
        }
    });
    Follower { received, thread }
}

/// Resumes after `last` on the first node of `live` that accepts the stream, trying them in
/// turn from the one after `left` (`left` itself last, if it is still live: an address that
/// several processes share) until [`RECONNECT_DEADLINE`].
fn reconnect(live: &Live, left: SocketAddr, topic: &str, last: Option<u64>) -> (SseClient, SocketAddr) {
    let deadline = Instant::now() + RECONNECT_DEADLINE;
    let mut errors = Vec::new();
    loop {
        let nodes = live.snapshot();
        let start = nodes.iter().position(|a| *a == left).map_or(0, |i| i + 1);
        for i in 0..nodes.len() {
            let addr = nodes[(start + i) % nodes.len()];
            match open(addr, topic, last) {
                Ok(s) => return (s, addr),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        assert!(Instant::now() < deadline, "no live node took the stream back: {errors:?}");
        std::thread::sleep(Duration::from_millis(RETRY_MS));
    }
}

/// What the publisher sent.
#[derive(Debug, Default)]
pub struct Published {
    /// (id, data) of every attempt a node answered `202`, in publish order.
    pub acked: Vec<(u64, String)>,
    /// The data of every attempt that got no `202` (a connection error, the node died or
    /// drained, a `504`): each may or may not have reached the bus before the node failed.
    pub unanswered: Vec<String>,
    /// The data of every attempt answered `503` (not appended): none may ever arrive.
    pub refused: Vec<String>,
}

/// The node a publisher is waiting on, if any, with the attempt's number (attempts are
/// numbered from 1 in the order they start): a test that stops a node can wait for an attempt
/// that started after the stop, which the node cannot have answered.
pub type InFlight = Arc<Mutex<Option<(SocketAddr, u64)>>>;

/// A publisher on its own thread; see [`publish_paced`].
pub struct Publisher {
    /// Events (not attempts) published so far.
    pub progress: Arc<AtomicUsize>,
    /// The node of the attempt in flight, if one is.
    pub in_flight: InFlight,
    /// Attempts started so far (the number of the latest).
    pub attempts: Arc<AtomicU64>,
    finish: mpsc::Sender<()>,
    thread: JoinHandle<Published>,
}

impl Publisher {
    /// Tells the publisher the cluster is stable again: it publishes its end marker once it
    /// has published its count, and returns what it published.
    pub fn finish(self) -> Published {
        let _ = self.finish.send(());
        self.thread.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Waits until `n` events are published.
    pub fn wait_progress(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.progress.load(Ordering::Acquire) < n {
            assert!(Instant::now() < deadline, "the publisher is stuck below {n} events");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Publishes raw events on `topic`, one every `interval` (as far as the nodes keep up), event
/// `k` first on `live[k % len]`: alternating over the nodes. An attempt without a `202` is
/// retried on the next live node with new data (`e{k}.{attempt}`), so the bus may hold at
/// most one copy of each attempt. It goes on until it has published `count` events and
/// [`Publisher::finish`] was called, then publishes the end marker `end.{attempt}`.
pub fn publish_paced(live: Live, topic: &str, count: usize, interval: Duration) -> Publisher {
    let progress = Arc::new(AtomicUsize::new(0));
    let (finish, finished) = mpsc::channel::<()>();
    let done = progress.clone();
    let in_flight = InFlight::default();
    let attempts = Arc::new(AtomicU64::new(0));
    let started = attempts.clone();
    let waiting_on = in_flight.clone();
    let topic = topic.to_string();
    let thread = std::thread::spawn(move || {
        let mut out = Published::default();
        let mut clients = HashMap::new();
        let start = Instant::now();
        let mut k = 0;
        // Until `count` events are out and the test says the cluster is stable again, so
        // every fault of the test happens while events are being published.
        while k < count || finished.try_recv() == Err(mpsc::TryRecvError::Empty) {
            let due = start + interval * k as u32;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            publish_one(
                &live,
                &mut clients,
                (&waiting_on, &started),
                &topic,
                (k, &format!("e{k}")),
                &mut out,
            );
            k += 1;
            done.store(k, Ordering::Release);
        }
        publish_one(&live, &mut clients, (&waiting_on, &started), &topic, (k, "end"), &mut out);
        out
    });
    Publisher { progress, in_flight, attempts, finish, thread }
}

/// Publishes event `k` (data `{stem}.{attempt}`), trying the live nodes in turn from
/// `live[k % len]` until one answers `202`.
fn publish_one(
    live: &Live,
    clients: &mut HashMap<SocketAddr, Client>,
    (in_flight, attempts): (&InFlight, &AtomicU64),
    topic: &str,
    (k, stem): (usize, &str),
    out: &mut Published,
) {
    let mut errors = Vec::new();
    for attempt in 0..PUBLISH_ATTEMPTS {
        let nodes = live.snapshot();
        assert!(!nodes.is_empty(), "no live node to publish on");
        let addr = nodes[(k + attempt) % nodes.len()];
        let data = format!("{stem}.{attempt}");
        let number = attempts.fetch_add(1, Ordering::AcqRel) + 1;
        *in_flight.lock().unwrap_or_else(|e| e.into_inner()) = Some((addr, number));
        let answer = try_publish(clients, addr, topic, &data);
        *in_flight.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match answer {
            Ok(id) => return out.acked.push((id, data)),
            Err(e) => {
                errors.push(format!("{addr}: {e}"));
                out.unanswered.push(data);
            }
        }
        if (attempt + 1) % nodes.len() == 0 {
            std::thread::sleep(PUBLISH_ROUND_PAUSE);
        }
    }
    panic!("event {k} got no 202 in {PUBLISH_ATTEMPTS} attempts: {errors:?}");
}

/// One publish over the keep-alive connection to `addr` (a new one if there is none); the
/// id of a `202`, an error otherwise (the connection is then dropped, as it is when the node
/// says it closes).
fn try_publish(
    clients: &mut HashMap<SocketAddr, Client>,
    addr: SocketAddr,
    topic: &str,
    data: &str,
) -> Result<u64, String> {
    let mut c = match clients.remove(&addr) {
        Some(c) => c,
        None => connect(addr).map_err(|e| format!("connect: {e}"))?,
    };
    let request = super::publish_request(&format!("topic={topic}"), Some("text/plain"), data.as_bytes());
    c.stream().write_all(&request).map_err(|e| format!("write: {e}"))?;
    let r = c.try_read_response().map_err(|e| format!("read: {e}"))?;
    if r.status != 202 {
        return Err(format!("{} {}", r.status, r.text()));
    }
    let id = r.json()["id"].as_u64().ok_or_else(|| format!("202 without an id: {}", r.text()))?;
    if !r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
        clients.insert(addr, c);
    }
    Ok(id)
}

/// Checks `reference` (what one follower received) against what was published and returns
/// how many unanswered attempts it holds: ids strictly increasing; every acknowledged
/// (id, data) in it; every other entry an attempt that got no answer; no data twice.
pub fn check_reference(reference: &[Received], published: &Published) -> usize {
    assert!(reference.windows(2).all(|w| w[0].0 < w[1].0), "ids not strictly increasing: {reference:?}");
    let by_data: HashMap<&str, u64> = reference.iter().map(|(id, _, d)| (d.as_str(), *id)).collect();
    assert_eq!(by_data.len(), reference.len(), "some data arrived twice");
    for (id, data) in &published.acked {
        assert_eq!(
            by_data.get(data.as_str()),
            Some(id),
            "acknowledged {data} (id {id}) not received as such"
        );
    }
    assert!(reference.iter().all(|(_, event, _)| event.is_none()), "an event name nobody published");
    let extra = reference.len() - published.acked.len();
    let unanswered: Vec<&Received> = reference
        .iter()
        .filter(|(id, _, data)| !published.acked.iter().any(|(a, d)| a == id && d == data))
        .collect();
    assert_eq!(unanswered.len(), extra);
    for (id, _, data) in unanswered {
        assert!(!published.refused.contains(data), "{id} {data}: answered 503 (not appended), yet delivered");
        assert!(published.unanswered.contains(data), "{id} {data}: neither acknowledged nor attempted");
    }
    extra
}

/// Joins `followers` after a rolling restart and checks each: the first one's sequence is
/// exactly what was published ([`check_reference`]), every other has the same, none got a
/// notice, each was told of its node's shutdown at least once and resumed over at least
/// `min_nodes` nodes.
pub fn check_rolled_followers(followers: Vec<Follower>, published: &Published, min_nodes: usize) {
    let got: Vec<Followed> = followers.into_iter().map(Follower::join).collect();
    let reference = &got[0].events;
    let extra = check_reference(reference, published);
    eprintln!("{} attempts got no answer, {extra} of them reached the bus", published.unanswered.len());
    for (i, f) in got.iter().enumerate() {
        assert!(f.notices.is_empty(), "client {i} got notices: {:?}", f.notices);
        assert!(f.shutdowns >= 1, "client {i} was told of its node's shutdown");
        assert!(f.nodes.len() >= min_nodes, "client {i} resumed on {} nodes", f.nodes.len());
        assert_eq!(f.events, *reference, "client {i} over {} connections", f.nodes.len());
    }
}
