//! Subscriber engine: a few threads, each one mio event loop driving thousands of [`Client`]s.
//!
//! Contract:
//! - [`Engine::start`] spreads the plan's streams over `threads` loops (stream `i` on loop
//!   `i % threads`, bound to source `i % sources`, slow when `i` falls on the `--slow` spread) and
//!   returns at once; each loop connects at its share of the connect rate with its share of the
//!   in-flight bound (a connect is in flight until the stream is ready or given up).
//! - Every loop ends when [`Control::stop`] is called or the plan's `max_seconds` pass; then it
//!   computes per-stream completeness against the accepted counts given to `stop` (if any),
//!   per server address (stream `i` uses address `i % addrs`), or per publish address when
//!   `lanes_per_publish_addr` is set (see [`StreamCheck::expected`]).
//! - [`Engine::snapshot`] is cheap and lock-free except for the interval latency histogram.
//! - Per-connect timeout: a stream not ready `connect_timeout_ms` after its connect started is
//!   closed as `connect timeout` (and retried up to `connect_retries` times, like any failure
//!   before ready). A ready stream that closes is `lost` and never reconnected.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use slab::Slab;

use crate::client::{Client, Ctx, Spec, Step};
use crate::http_client::subscribe_request;
use crate::live::{Control, Live, LiveSnap};
use crate::net::{self, SocketOpts};
use crate::pacer::Pacer;
use crate::sse_parse::Limits;
use crate::stats::{count_error, io_kind, Hist, SubResult};
use crate::tracker::StreamCheck;

/// Read buffer per loop: large enough to take a burst of frames for one stream in one read.
const READ_BUF: usize = 64 * 1024;
/// Reads per client per turn, so one firehose stream cannot starve the others.
const READ_BUDGET: usize = 8;
/// Readiness events taken per poll call.
const EVENTS: usize = 1024;
/// Longest poll wait, so stop requests and deadlines are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// How often a loop publishes its counters and interval latency for progress reports.
const PUSH_EVERY: Duration = Duration::from_millis(200);

/// Everything one process needs to run its share of the streams (sent to worker processes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Server addresses; stream `i` connects to `addrs[i % addrs.len()]`.
    pub addrs: Vec<SocketAddr>,
    /// Topics every stream subscribes to.
    pub topics: Vec<String>,
    /// Global index of this process's first stream.
    pub first_index: u64,
    /// Streams this process holds.
    pub streams: u64,
    /// Source addresses, assigned by global index.
    pub sources: Vec<IpAddr>,
    /// Fraction of all streams that never read after the head.
    pub slow: f64,
    /// `SO_RCVBUF` for slow streams.
    pub slow_rcvbuf: Option<usize>,
    /// Connects per second for this process.
    pub connect_rate: f64,
    /// In-flight connects for this process.
    pub connect_concurrency: u64,
    /// Per-attempt deadline to become ready.
    pub connect_timeout_ms: u64,
    /// Extra attempts for a stream that fails before it is ready.
    pub connect_retries: u32,
    /// Event loops (threads) in this process.
    pub threads: usize,
    /// Each lane's first expected seq is 0 (the publisher starts after all streams are ready).
    pub from_zero: bool,
    /// Safety deadline: the loops stop by themselves after this long.
    pub max_seconds: f64,
    /// Set when events are published to addresses other than `addrs` (`--publish-addr`): the
    /// publisher's connections (lanes) per publish address. The accepted counts given to `stop`
    /// are then per publish address, and each stream is held to the one feeding it.
    #[serde(default)]
    pub lanes_per_publish_addr: Option<usize>,
}

/// Whether global stream `i` is a slow (non-reading) one: an even spread of `fraction`.
pub fn is_slow(i: u64, fraction: f64) -> bool {
    let f = fraction.clamp(0.0, 1.0);
    ((i + 1) as f64 * f).floor() > (i as f64 * f).floor()
}

/// Running subscriber loops of this process.
pub struct Engine {
    threads: Vec<JoinHandle<SubResult>>,
    live: Arc<Live>,
    planned: u64,
}

impl Engine {
    /// Spawns the loops; see the module doc.
    pub fn start(plan: &Plan, ctl: Arc<Control>) -> io::Result<Engine> {
        let threads = plan.threads.max(1);
        let live = Arc::new(Live::default());
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let specs: VecDeque<Spec> = (plan.first_index..plan.first_index + plan.streams)
                .skip(t)
                .step_by(threads)
                .map(|index| Spec {
                    index,
                    target: (index % plan.addrs.len().max(1) as u64) as usize,
                    source: (!plan.sources.is_empty())
                        .then(|| plan.sources[(index % plan.sources.len() as u64) as usize]),
                    slow: is_slow(index, plan.slow),
                    attempt: 0,
                })
                .collect();
            let mut share = plan.clone();
            share.connect_rate = plan.connect_rate / threads as f64;
            share.connect_concurrency = plan.connect_concurrency.div_ceil(threads as u64).max(1);
            let (ctl, live) = (ctl.clone(), live.clone());
            let handle = std::thread::Builder::new()
                .name(format!("sub-{t}"))
                .spawn(move || Loop::new(share, ctl, live).run(specs))?;
            handles.push(handle);
        }
        Ok(Engine { threads: handles, live, planned: plan.streams })
    }

    /// Counters so far, and the latency recorded since the previous snapshot.
    pub fn snapshot(&self) -> LiveSnap {
        let l = &self.live;
        let latency = match l.latency.lock() {
            Ok(mut h) => h.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        LiveSnap {
            planned: self.planned,
            connected: l.connected.load(Relaxed),
            ready: l.ready.load(Relaxed),
            readers_ready: l.readers_ready.load(Relaxed),
            failed: l.failed.load(Relaxed),
            lost: l.lost.load(Relaxed),
            deliveries: l.deliveries.load(Relaxed),
            errors: l.errors.load(Relaxed),
            latency,
        }
    }

    /// True once every loop has ended.
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Waits for the loops (stop them first) and merges their results.
    pub fn finish(self) -> SubResult {
        let mut total = SubResult::default();
        for h in self.threads {
            match h.join() {
                Ok(r) => total.merge(&r),
                Err(_) => count_error(&mut total.errors, "internal: subscriber thread panicked", 1),
            }
        }
        total
    }
}

/// One event loop and its clients.
struct Loop {
    plan: Plan,
    ctl: Arc<Control>,
    live: Arc<Live>,
    res: SubResult,
    interval: Hist,
    clients: Slab<Client>,
    pending: VecDeque<Spec>,
    inflight: u64,
    /// `(deadline, key, serial)`, in deadline order (one constant timeout, monotonic starts).
    timeouts: VecDeque<(Instant, usize, u64)>,
    /// Ready reading streams that closed (with their target), for the completeness count.
    closed: Vec<(usize, StreamCheck)>,
    serial: u64,
    pushed: [u64; 7],
}

impl Loop {
    fn new(plan: Plan, ctl: Arc<Control>, live: Arc<Live>) -> Loop {
        Loop {
            plan,
            ctl,
            live,
            res: SubResult::default(),
            interval: Hist::new(),
            clients: Slab::new(),
            pending: VecDeque::new(),
            inflight: 0,
            timeouts: VecDeque::new(),
            closed: Vec::new(),
            serial: 0,
            pushed: [0; 7],
        }
    }

    fn run(mut self, specs: VecDeque<Spec>) -> SubResult {
        self.res.planned = specs.len() as u64;
        self.res.slow_planned = specs.iter().filter(|s| s.slow).count() as u64;
        self.clients.reserve(specs.len());
        self.pending = specs;
        let mut poll = match Poll::new() {
            Ok(p) => p,
            Err(e) => {
                count_error(&mut self.res.errors, &format!("poll: {}", io_kind(&e)), 1);
                self.res.failed = self.res.planned;
                return self.res;
            }
        };
        let requests: Vec<Vec<u8>> =
            self.plan.addrs.iter().map(|&a| subscribe_request(a, &self.plan.topics)).collect();
        let mut buf = vec![0u8; READ_BUF];
        let mut events = Events::with_capacity(EVENTS);
        let mut again: Vec<usize> = Vec::new();
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(self.plan.max_seconds.max(0.0));
        let timeout = Duration::from_millis(self.plan.connect_timeout_ms);
        let mut pacer = Pacer::new(self.plan.connect_rate, start);
        let mut last_push = start;
        loop {
            let now = Instant::now();
            if self.ctl.stopped() || now >= deadline {
                break;
            }
            while self.inflight < self.plan.connect_concurrency
                && !self.pending.is_empty()
                && pacer.try_take(now)
            {
                if let Some(spec) = self.pending.pop_front() {
                    self.start_one(&poll, spec, now, timeout);
                }
            }
            let mut wait = MAX_WAIT;
            if !again.is_empty() {
                wait = Duration::ZERO;
            }
            if !self.pending.is_empty() && self.inflight < self.plan.connect_concurrency {
                wait = wait.min(pacer.wait(now));
            }
            if let Some(&(d, _, _)) = self.timeouts.front() {
                wait = wait.min(d.saturating_duration_since(now));
            }
            if let Err(e) = poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    count_error(&mut self.res.errors, &format!("poll: {}", io_kind(&e)), 1);
                    break;
                }
            }
            let mut ctx = Ctx {
                requests: &requests,
                buf: &mut buf,
                stats: &mut self.res,
                interval: &mut self.interval,
                limits: Limits::default(),
                read_budget: READ_BUDGET,
            };
            let mut closes = Vec::new();
            let keys = events.iter().map(|e| e.token().0).chain(std::mem::take(&mut again));
            for key in keys {
                let Some(c) = self.clients.get_mut(key) else { continue };
                let was_ready = c.ready;
                let step = c.drive(&mut ctx);
                if !was_ready && c.ready {
                    self.inflight -= 1;
                    ctx.stats.ready += 1;
                    if !c.spec.slow {
                        ctx.stats.readers_ready += 1;
                    }
                }
                match step {
                    Step::Wait => {}
                    Step::Again => again.push(key),
                    Step::Close(kind) => closes.push((key, c.serial, kind)),
                }
            }
            for (key, serial, kind) in closes {
                self.close(&poll, key, serial, &kind);
            }
            let now = Instant::now();
            while let Some(&(d, key, serial)) = self.timeouts.front() {
                if d > now {
                    break;
                }
                self.timeouts.pop_front();
                if self.clients.get(key).is_some_and(|c| c.serial == serial && !c.ready) {
                    self.close(&poll, key, serial, "connect timeout");
                }
            }
            if now.duration_since(last_push) >= PUSH_EVERY {
                self.push();
                last_push = now;
            }
        }
        self.finish(&poll)
    }

    fn start_one(&mut self, poll: &Poll, spec: Spec, now: Instant, timeout: Duration) {
        self.res.attempts += 1;
        let opts = SocketOpts {
            source: spec.source,
            recv_buffer: if spec.slow { self.plan.slow_rcvbuf } else { None },
        };
        let Some(&addr) = self.plan.addrs.get(spec.target) else {
            return self.give_up_or_retry(spec, "internal: no address");
        };
        let mut sock = match net::start_connect(addr, opts) {
            Ok(s) => s,
            Err(e) => return self.give_up_or_retry(spec, &io_kind(&e)),
        };
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        if let Err(e) =
            poll.registry().register(&mut sock, Token(key), Interest::READABLE | Interest::WRITABLE)
        {
            return self.give_up_or_retry(spec, &format!("register: {}", io_kind(&e)));
        }
        self.serial += 1;
        entry.insert(Client::new(sock, spec, self.serial, self.plan.from_zero, now));
        self.inflight += 1;
        self.timeouts.push_back((now + timeout, key, self.serial));
    }

    fn give_up_or_retry(&mut self, mut spec: Spec, kind: &str) {
        count_error(&mut self.res.errors, kind, 1);
        if spec.attempt < self.plan.connect_retries {
            spec.attempt += 1;
            self.pending.push_back(spec);
        } else {
            self.res.failed += 1;
        }
    }

    fn close(&mut self, poll: &Poll, key: usize, serial: u64, kind: &str) {
        if !self.clients.get(key).is_some_and(|c| c.serial == serial) {
            return;
        }
        let mut c = self.clients.remove(key);
        log::debug!("stream {} (attempt {}) closed: {kind}", c.spec.index, c.spec.attempt + 1);
        // The socket is closed right after; a failed deregister changes nothing.
        let _ = poll.registry().deregister(&mut c.sock);
        if c.ready {
            count_error(&mut self.res.errors, kind, 1);
            self.res.lost += 1;
            if !c.spec.slow {
                self.closed.push((c.spec.target, c.check));
            }
        } else {
            self.inflight -= 1;
            self.give_up_or_retry(c.spec, kind);
        }
    }

    fn push(&mut self) {
        let r = &self.res;
        let now =
            [r.connected, r.ready, r.readers_ready, r.failed, r.lost, r.deliveries, r.errors.values().sum()];
        let targets = [
            &self.live.connected,
            &self.live.ready,
            &self.live.readers_ready,
            &self.live.failed,
            &self.live.lost,
            &self.live.deliveries,
            &self.live.errors,
        ];
        for ((target, new), old) in targets.iter().zip(now).zip(self.pushed.iter_mut()) {
            target.fetch_add(new.saturating_sub(*old), Relaxed);
            *old = new;
        }
        if let Ok(mut h) = self.live.latency.lock() {
            h.merge(&self.interval.take());
        }
    }

    fn finish(mut self, poll: &Poll) -> SubResult {
        self.push();
        let accepted = self.ctl.accepted();
        let mut checks = std::mem::take(&mut self.closed);
        for mut c in self.clients.drain() {
            let _ = poll.registry().deregister(&mut c.sock);
            self.res.open_at_end += 1;
            if c.ready && !c.spec.slow {
                checks.push((c.spec.target, c.check));
            }
        }
        if accepted.is_some() {
            self.res.expected_deliveries = Some(0);
        }
        for (target, c) in &checks {
            self.res.id_regressions += c.id_regressions;
            self.res.streams_non_numeric_ids += u64::from(c.non_numeric_ids > 0);
            self.res.seq_holes += c.holes;
            self.res.seq_regressions += c.seq_regressions;
            if let Some(accepted) = &accepted {
                let n = c.expected(accepted, *target, self.plan.lanes_per_publish_addr);
                self.res.expected_deliveries = self.res.expected_deliveries.map(|e| e + n);
                let missing = c.missing(n);
                self.res.missing_total += missing;
                self.res.streams_with_missing += u64::from(missing > 0);
                self.res.max_missing = self.res.max_missing.max(missing);
            }
        }
        self.res
    }
}

#[cfg(test)]
mod tests {
    use super::is_slow;

    #[test]
    fn slow_spread_is_even() {
        let slow: Vec<u64> = (0..20).filter(|&i| is_slow(i, 0.2)).collect();
        assert_eq!(slow, vec![4, 9, 14, 19]);
        assert_eq!((0..1000).filter(|&i| is_slow(i, 0.0)).count(), 0);
        assert_eq!((0..1000).filter(|&i| is_slow(i, 1.0)).count(), 1000);
        assert_eq!((0..1000).filter(|&i| is_slow(i, 0.333)).count(), 333);
    }
}
