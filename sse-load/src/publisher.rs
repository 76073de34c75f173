//! Open-loop publisher: events at a fixed rate over keep-alive, pipelined connections.
//!
//! Contract:
//! - Event `i` is due at `start + i / rate`; it is written when due whatever the server has
//!   answered so far (requests pipeline on each connection, responses are matched in order), so a
//!   slow server cannot slow the schedule down. The tool's own lateness is reported as
//!   `max_schedule_lag_us`.
//! - Event `i` is sent to every server address `a`, on connection (lane)
//!   `a * connections + i % connections` with that lane's next seq, and to topic `i % topics`. A
//!   lane's seqs are consecutive in send order, and one connection's requests are handled in
//!   order, so every subscriber should see each lane's seqs increase.
//! - Bounded: a connection's unsent bytes are capped (`max_backlog_bytes`; past it an event is
//!   counted `not_sent_backlog`; with `max_inflight`, so are its unanswered requests, past it
//!   `not_sent_inflight`), a down connection is retried at most once a second, and the run
//!   ends `response_timeout` after the last send at the latest, or when `stop` is set.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::accepted;
use crate::http_client::{parse_head, publish_request, HeadParse};
use crate::payload::{self, Stamp};
use crate::stats::{count_error, io_kind, Hist, PubResult};

/// Longest poll wait while nothing is due.
const MAX_WAIT: Duration = Duration::from_millis(20);
/// Delay before a down connection is reconnected.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Connect timeout for publisher connections.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes read per `read` call.
const READ_BUF: usize = 64 * 1024;

/// What to publish and how fast.
#[derive(Debug, Clone)]
pub struct PubPlan {
    /// Server addresses; every event goes to each.
    pub addrs: Vec<SocketAddr>,
    /// Topics, used in turn.
    pub topics: Vec<String>,
    /// `event=` name, if any.
    pub event: Option<String>,
    /// Events per second.
    pub rate: f64,
    /// Events in total.
    pub count: u64,
    /// Bytes of data per event.
    pub payload_bytes: usize,
    /// Keep-alive connections (lanes) per address.
    pub connections: usize,
    /// How long to wait for answers after the last send.
    pub response_timeout: Duration,
    /// Unsent bytes allowed per connection.
    pub max_backlog_bytes: usize,
    /// Unanswered requests per connection before events are skipped (0: no bound).
    pub max_inflight: usize,
}

/// Counters for progress reports.
#[derive(Debug, Default)]
pub struct PubLive {
    /// Requests sent.
    pub sent: AtomicU64,
    /// 2xx answers.
    pub accepted: AtomicU64,
    /// Non-2xx answers and failures.
    pub failed: AtomicU64,
    /// Answer latency since the last progress report.
    pub latency: Mutex<Hist>,
}

struct Conn {
    /// Index into the plan's addresses.
    target: usize,
    sock: Option<TcpStream>,
    out: Vec<u8>,
    out_off: usize,
    /// Write time and seq of each unanswered request, oldest first.
    inflight: VecDeque<(Instant, u64)>,
    /// This connection's lane (index in the connection list).
    lane: u32,
    inbuf: Vec<u8>,
    next_seq: u64,
    retry_at: Instant,
}

/// Runs the schedule to its end (or `stop`) and reports.
pub fn run(plan: &PubPlan, live: &PubLive, stop: &AtomicBool) -> PubResult {
    let targets = plan.addrs.len();
    let per_target = plan.connections.max(1);
    let mut res = PubResult {
        planned: plan.count * targets as u64,
        addresses: targets as u64,
        accepted_by_target: vec![0; targets],
        ..PubResult::default()
    };
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            count_error(&mut res.errors, &format!("poll: {}", io_kind(&e)), 1);
            return res;
        }
    };
    let now = Instant::now();
    let mut conns: Vec<Conn> = (0..targets * per_target)
        .map(|k| Conn {
            target: k / per_target,
            lane: k as u32,
            sock: None,
            out: Vec::new(),
            out_off: 0,
            inflight: VecDeque::new(),
            inbuf: Vec::new(),
            next_seq: 0,
            retry_at: now,
        })
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        reconnect(&poll, i, c, plan, &mut res, now);
    }
    // Readers in this process measure latency from acceptance too (see `accepted`).
    accepted::init(conns.len(), plan.count);
    let rate = if plan.rate > 0.0 && plan.rate.is_finite() { plan.rate } else { 1.0 };
    let (mut events, mut buf, mut body) = (Events::with_capacity(256), vec![0u8; READ_BUF], Vec::new());
    let t0 = Instant::now();
    res.first_send_us = payload::now_us();
    let (mut i, mut last_send, mut last_answer) = (0u64, t0, t0);
    let mut interval = Hist::new();
    loop {
        let now = Instant::now();
        if stop.load(Relaxed) {
            break;
        }
        let due = (((now - t0).as_secs_f64() * rate) as u64).saturating_add(1).min(plan.count);
        while i < due {
            let sched = t0 + Duration::from_secs_f64(i as f64 / rate);
            res.max_schedule_lag_us =
                res.max_schedule_lag_us.max(now.saturating_duration_since(sched).as_micros() as u64);
            let topic = &plan.topics[(i % plan.topics.len() as u64) as usize];
            for target in 0..targets {
                let lane = target * per_target + (i % per_target as u64) as usize;
                let c = &mut conns[lane];
                if c.sock.is_none() {
                    res.not_sent_conn_down += 1;
                } else if c.out.len() - c.out_off > plan.max_backlog_bytes {
                    res.not_sent_backlog += 1;
                } else if plan.max_inflight > 0 && c.inflight.len() >= plan.max_inflight {
                    res.not_sent_inflight += 1;
                } else {
                    body.clear();
                    let stamp = Stamp { lane: lane as u32, seq: c.next_seq, ts_us: payload::now_us() };
                    payload::encode(&mut body, stamp, plan.payload_bytes);
                    publish_request(&mut c.out, plan.addrs[target], topic, plan.event.as_deref(), &body);
                    c.inflight.push_back((now, c.next_seq));
                    res.sent += 1;
                    last_send = now;
                }
                c.next_seq += 1;
            }
            i += 1;
        }
        for (k, c) in conns.iter_mut().enumerate() {
            if c.sock.is_none() && c.retry_at <= now && i < plan.count {
                reconnect(&poll, k, c, plan, &mut res, now);
            }
            if let Err(kind) = flush(c) {
                down(&poll, c, &kind, &mut res, now);
            }
        }
        let unanswered: usize = conns.iter().map(|c| c.inflight.len()).sum();
        if i >= plan.count && (unanswered == 0 || now >= last_send + plan.response_timeout) {
            res.unanswered += unanswered as u64;
            break;
        }
        let wait = if i < plan.count {
            (t0 + Duration::from_secs_f64(i as f64 / rate)).saturating_duration_since(now).min(MAX_WAIT)
        } else {
            MAX_WAIT
        };
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                count_error(&mut res.errors, &format!("poll: {}", io_kind(&e)), 1);
                break;
            }
        }
        for ev in events.iter() {
            let Some(c) = conns.get_mut(ev.token().0) else { continue };
            if c.sock.is_none() {
                continue;
            }
            let r =
                read_answers(c, &mut buf, &mut res, &mut interval, &mut last_answer).and_then(|()| flush(c));
            if let Err(kind) = r {
                down(&poll, c, &kind, &mut res, Instant::now());
            }
        }
        live.sent.store(res.sent, Relaxed);
        live.accepted.store(res.accepted, Relaxed);
        live.failed.store(
            res.sent - res.accepted - conns.iter().map(|c| c.inflight.len() as u64).sum::<u64>(),
            Relaxed,
        );
        if interval.count() > 0 {
            if let Ok(mut h) = live.latency.lock() {
                h.merge(&interval.take());
            }
        }
    }
    for c in conns.iter_mut() {
        if let Some(mut s) = c.sock.take() {
            let _ = poll.registry().deregister(&mut s);
        }
    }
    res.send_seconds = (last_send - t0).as_secs_f64();
    res.elapsed_seconds = (last_answer.max(last_send) - t0).as_secs_f64();
    res
}

fn reconnect(poll: &Poll, key: usize, c: &mut Conn, plan: &PubPlan, res: &mut PubResult, now: Instant) {
    c.retry_at = now + RECONNECT_AFTER;
    let addr = plan.addrs[c.target];
    let sock = StdStream::connect_timeout(&addr, CONNECT_TIMEOUT).and_then(|s| {
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        Ok(s)
    });
    let mut sock = match sock {
        Ok(s) => TcpStream::from_std(s),
        Err(e) => return count_error(&mut res.errors, &format!("publish connect: {}", io_kind(&e)), 1),
    };
    match poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE) {
        Ok(()) => c.sock = Some(sock),
        Err(e) => count_error(&mut res.errors, &format!("register: {}", io_kind(&e)), 1),
    }
}

/// Closes a failed connection: its unanswered requests are lost.
fn down(poll: &Poll, c: &mut Conn, kind: &str, res: &mut PubResult, now: Instant) {
    count_error(&mut res.errors, kind, 1);
    res.unanswered += c.inflight.len() as u64;
    c.inflight.clear();
    c.out.clear();
    c.out_off = 0;
    c.inbuf.clear();
    if let Some(mut s) = c.sock.take() {
        let _ = poll.registry().deregister(&mut s);
    }
    c.retry_at = now + RECONNECT_AFTER;
}

/// Writes queued requests until done or the socket would block.
fn flush(c: &mut Conn) -> Result<(), String> {
    let Some(sock) = c.sock.as_mut() else { return Ok(()) };
    while c.out_off < c.out.len() {
        match sock.write(&c.out[c.out_off..]) {
            Ok(0) => return Err("publish write returned 0".into()),
            Ok(n) => c.out_off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("publish write: {}", io_kind(&e))),
        }
    }
    if c.out_off == c.out.len() {
        c.out.clear();
        c.out_off = 0;
    } else if c.out_off > c.out.len() / 2 {
        c.out.drain(..c.out_off);
        c.out_off = 0;
    }
    Ok(())
}

/// Reads and matches every complete answer available. Answers already received are counted
/// even when the connection closed right after them (e.g. a `503` sent on accept).
fn read_answers(
    c: &mut Conn,
    buf: &mut [u8],
    res: &mut PubResult,
    interval: &mut Hist,
    last_answer: &mut Instant,
) -> Result<(), String> {
    let Some(sock) = c.sock.as_mut() else { return Ok(()) };
    let mut closed: Option<String> = None;
    while closed.is_none() {
        match sock.read(buf) {
            Ok(0) => closed = Some("publish connection closed by server".into()),
            Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => closed = Some(format!("publish read: {}", io_kind(&e))),
        }
    }
    let mut used = 0;
    let now = Instant::now();
    while closed.is_none() || used < c.inbuf.len() {
        let head = match parse_head(&c.inbuf[used..]) {
            HeadParse::Partial => break,
            HeadParse::Invalid(why) => return Err(format!("publish response: {why}")),
            HeadParse::Complete(h) => h,
        };
        let total = head.len + head.content_length.unwrap_or(0);
        if c.inbuf.len() - used < total {
            break;
        }
        used += total;
        *res.statuses.entry(head.status.to_string()).or_default() += 1;
        let Some((sent, seq)) = c.inflight.pop_front() else {
            closed = Some(format!("publish response {} without a request", head.status));
            break;
        };
        let us = now.saturating_duration_since(sent).as_micros() as u64;
        res.latency_us.record(us);
        interval.record(us);
        *last_answer = now;
        if (200..300).contains(&head.status) {
            accepted::mark(c.lane, seq, payload::now_us());
            res.accepted += 1;
            if let Some(n) = res.accepted_by_target.get_mut(c.target) {
                *n += 1;
            }
        }
        if head.close {
            closed = Some(format!("publish connection closed by server after {}", head.status));
            break;
        }
    }
    c.inbuf.drain(..used);
    closed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A fake server on port 0: answers each pipelined POST with `answer` (bounded: stops after
    /// `max_conns` connections or 10 s).
    fn fake_server(answer: &'static [u8], on_accept: Option<&'static [u8]>, max_conns: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming().take(max_conns) {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    if let Some(first) = on_accept {
                        let _ = s.write_all(first);
                        return;
                    }
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let (mut buf, mut seen) = (vec![0u8; 65536], Vec::new());
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        seen.extend_from_slice(&buf[..n]);
                        let posts = seen.windows(5).filter(|w| w == b"POST ").count();
                        seen.drain(..seen.len().saturating_sub(4));
                        for _ in 0..posts {
                            if s.write_all(answer).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn plan(addr: SocketAddr, count: u64) -> PubPlan {
        PubPlan {
            addrs: vec![addr],
            topics: vec!["t".into()],
            event: None,
            rate: 2000.0,
            count,
            payload_bytes: 64,
            connections: 2,
            response_timeout: Duration::from_secs(2),
            max_backlog_bytes: 1 << 20,
            max_inflight: 0,
        }
    }

    #[test]
    fn open_loop_pipelined_publishing_is_matched() {
        let addr = fake_server(b"HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n\r\n{\"id\":1}", None, 2);
        let res = run(&plan(addr, 300), &PubLive::default(), &AtomicBool::new(false));
        assert_eq!((res.sent, res.accepted, res.unanswered), (300, 300, 0), "{res:?}");
        assert_eq!(res.accepted_by_target, vec![300]);
        assert_eq!(res.statuses.get("202"), Some(&300));
        assert_eq!(res.latency_us.count(), 300);
    }

    #[test]
    fn refusal_on_accept_is_counted_not_hung() {
        let addr = fake_server(b"", Some(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), 64);
        let t0 = Instant::now();
        let res = run(&plan(addr, 20), &PubLive::default(), &AtomicBool::new(false));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(res.accepted, 0);
        assert!(res.statuses.get("503").is_some_and(|&n| n >= 1), "{res:?}");
    }
}
