//! Where subscriber streams run: in this process, or in worker processes when one process's
//! open-file limit cannot hold them all.
//!
//! Contract:
//! - [`Group`] is the parent's view of a set of streams: progress snapshots, `stop`, `finish`.
//!   [`LocalGroup`] runs an [`Engine`] in this process; [`ChildGroup`] is one worker process.
//! - A worker is this executable re-run as `sse-load worker --plan JSON` (hidden subcommand). It
//!   writes one JSON [`WorkerMsg`] per line on stdout (progress every [`PROGRESS_EVERY`], then
//!   one final result) and reads `stop N,M,..` (accepted publishes per server address) or
//!   `stop` from stdin; stdin
//!   closing (the parent died) also stops it, and so does the plan's own deadline.
//! - [`Workers`] owns the child processes: dropping it kills (by pid, SIGKILL via
//!   `Child::kill`) and reaps every child that has not exited, so a failing parent leaves none.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::live::{Control, LiveSnap};
use crate::net;
use crate::stats::{count_error, Hist, SubResult};
use crate::subscriber::{Engine, Plan};

/// How often a worker reports progress.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// One line a worker writes to its parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// Counters so far and the latency since the previous progress line.
    Progress(LiveSnap),
    /// The worker's final result.
    Final(Box<SubResult>),
}

/// The parent's view of some subscriber streams.
pub trait Group {
    /// Counters so far, and latency recorded since the previous call.
    fn snapshot(&mut self) -> LiveSnap;
    /// Asks the streams to stop; `accepted[k]`: events each reader on address `k` should have.
    fn stop(&mut self, accepted: Option<&[u64]>);
    /// Waits up to `timeout` for the final result (stops first if not stopped).
    fn finish(self: Box<Self>, timeout: Duration) -> SubResult;
}

/// Streams held by this process.
pub struct LocalGroup {
    /// Taken by `finish`.
    engine: Option<Engine>,
    ctl: Arc<Control>,
}

impl LocalGroup {
    /// Starts the plan's streams in this process.
    pub fn start(plan: &Plan) -> io::Result<LocalGroup> {
        let ctl = Arc::new(Control::default());
        Ok(LocalGroup { engine: Some(Engine::start(plan, ctl.clone())?), ctl })
    }
}

impl Drop for LocalGroup {
    /// A parent that gives up early must not leave its loops running until their deadline.
    fn drop(&mut self) {
        self.ctl.stop(None);
    }
}

impl Group for LocalGroup {
    fn snapshot(&mut self) -> LiveSnap {
        self.engine.as_ref().map(Engine::snapshot).unwrap_or_default()
    }

    fn stop(&mut self, accepted: Option<&[u64]>) {
        self.ctl.stop(accepted.map(<[u64]>::to_vec));
    }

    fn finish(mut self: Box<Self>, _timeout: Duration) -> SubResult {
        // The loops poll with a short timeout and end within one iteration after `stop`.
        self.ctl.stop(None);
        self.engine.take().map(Engine::finish).unwrap_or_default()
    }
}

/// Splits `plan` over `procs` processes: contiguous index ranges, rate and in-flight shares.
pub fn split(plan: &Plan, procs: u64) -> Vec<Plan> {
    let procs = procs.max(1);
    let mut next = plan.first_index;
    (0..procs)
        .map(|k| {
            let streams = plan.streams / procs + u64::from(k < plan.streams % procs);
            let mut p = plan.clone();
            p.first_index = next;
            p.streams = streams;
            p.connect_rate = plan.connect_rate / procs as f64;
            p.connect_concurrency = plan.connect_concurrency.div_ceil(procs).max(1);
            next += streams;
            p
        })
        .collect()
}

/// The worker processes; kills and reaps any still running when dropped.
#[derive(Default)]
pub struct Workers {
    children: Vec<Child>,
}

impl Workers {
    /// Starts one worker per plan and returns its group.
    pub fn spawn(&mut self, plan: &Plan) -> io::Result<ChildGroup> {
        let exe = std::env::current_exe()?;
        let json = serde_json::to_string(plan).map_err(io::Error::other)?;
        let mut child = Command::new(exe)
            .arg("worker")
            .arg("--plan")
            .arg(json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        self.children.push(child);
        let stdout = stdout.ok_or_else(|| io::Error::other("worker stdout not piped"))?;
        let state = Arc::new(Mutex::new(ChildState::default()));
        let reader_state = state.clone();
        let reader = std::thread::Builder::new()
            .name(format!("worker-{pid}"))
            .spawn(move || read_worker(BufReader::new(stdout), &reader_state))?;
        Ok(ChildGroup { pid, stdin, state, reader: Some(reader), planned: plan.streams, stopped: false })
    }

    /// Waits up to `timeout` for every child to exit; the rest are killed on drop.
    pub fn wait_all(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.children.iter_mut().all(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                log::warn!("killing worker pid {}", c.id());
                // Sends SIGKILL to this child's pid only; it may have exited meanwhile.
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

#[derive(Default)]
struct ChildState {
    snap: LiveSnap,
    latency: Hist,
    result: Option<SubResult>,
    eof: bool,
    bad_lines: u64,
}

/// One worker process, seen from the parent.
pub struct ChildGroup {
    pid: u32,
    stdin: Option<ChildStdin>,
    state: Arc<Mutex<ChildState>>,
    reader: Option<JoinHandle<()>>,
    planned: u64,
    /// A stop line was sent (the worker may exit right after, so never write twice).
    stopped: bool,
}

fn read_worker(mut out: impl BufRead, state: &Mutex<ChildState>) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap_or(0);
        let Ok(mut s) = state.lock() else { return };
        if n == 0 {
            s.eof = true;
            return;
        }
        match serde_json::from_str::<WorkerMsg>(&line) {
            Ok(WorkerMsg::Progress(mut p)) => {
                s.latency.merge(&p.latency.take());
                s.snap = p;
            }
            Ok(WorkerMsg::Final(r)) => s.result = Some(*r),
            Err(_) => s.bad_lines += 1,
        }
    }
}

impl Group for ChildGroup {
    fn snapshot(&mut self) -> LiveSnap {
        match self.state.lock() {
            Ok(mut s) => {
                let mut snap = s.snap.clone();
                snap.planned = self.planned;
                snap.latency = s.latency.take();
                snap
            }
            Err(_) => LiveSnap { planned: self.planned, ..LiveSnap::default() },
        }
    }

    fn stop(&mut self, accepted: Option<&[u64]>) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        if let Some(stdin) = self.stdin.as_mut() {
            let line = match accepted {
                Some(a) => format!("stop {}\n", a.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
                None => "stop\n".to_owned(),
            };
            if stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).is_err() {
                log::warn!("worker pid {} is gone (stdin closed)", self.pid);
            }
        }
    }

    fn finish(mut self: Box<Self>, timeout: Duration) -> SubResult {
        self.stop(None);
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.state.lock().map(|s| s.result.is_some() || s.eof).unwrap_or(true);
            if done || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let taken = self.state.lock().ok().map(|mut s| (s.result.take(), s.bad_lines));
        if self.reader.as_ref().is_some_and(JoinHandle::is_finished) {
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
        let (result, bad_lines) = taken.unwrap_or((None, 0));
        let mut result = result.unwrap_or_else(|| {
            let mut r = SubResult { planned: self.planned, ..SubResult::default() };
            count_error(&mut r.errors, "internal: worker sent no result", 1);
            r
        });
        if bad_lines > 0 {
            count_error(&mut result.errors, "internal: unreadable worker lines", bad_lines);
        }
        result
    }
}

/// Body of the hidden `worker` subcommand.
pub fn worker_main(plan_json: &str) -> ExitCode {
    let plan: Plan = match serde_json::from_str(plan_json) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sse-load worker: bad plan: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = net::raise_nofile() {
        log::warn!("worker: cannot raise RLIMIT_NOFILE: {e}");
    }
    let ctl = Arc::new(Control::default());
    let engine = match Engine::start(&plan, ctl.clone()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("sse-load worker: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let stdin_ctl = ctl.clone();
    let watcher = std::thread::Builder::new().name("worker-stdin".into()).spawn(move || {
        let mut line = String::new();
        let mut stdin = io::stdin().lock();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => return stdin_ctl.stop(None),
                Ok(_) => {
                    let mut words = line.split_whitespace();
                    if words.next() == Some("stop") {
                        return stdin_ctl.stop(words.next().and_then(parse_accepted));
                    }
                }
            }
        }
    });
    if watcher.is_err() {
        ctl.stop(None);
    }
    let mut out = io::stdout().lock();
    while !engine.is_finished() {
        std::thread::sleep(PROGRESS_EVERY);
        if send(&mut out, &WorkerMsg::Progress(engine.snapshot())).is_err() {
            ctl.stop(None);
        }
    }
    match send(&mut out, &WorkerMsg::Final(Box::new(engine.finish()))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

/// Parses `N,M,..` from a `stop` line.
fn parse_accepted(s: &str) -> Option<Vec<u64>> {
    s.split(',').map(|n| n.parse().ok()).collect()
}

fn send(out: &mut impl Write, msg: &WorkerMsg) -> io::Result<()> {
    serde_json::to_writer(&mut *out, msg).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(streams: u64) -> Plan {
        Plan {
            addrs: vec!["127.0.0.1:1".parse().expect("addr")],
            topics: vec!["t".into()],
            first_index: 0,
            streams,
            sources: vec![],
            slow: 0.0,
            slow_rcvbuf: None,
            connect_rate: 1000.0,
            connect_concurrency: 10,
            connect_timeout_ms: 1000,
            connect_retries: 0,
            threads: 1,
            from_zero: true,
            lanes_per_publish_addr: None,
            max_seconds: 1.0,
        }
    }

    #[test]
    fn split_covers_every_index_once() {
        let parts = split(&plan(25_001), 3);
        assert_eq!(parts.iter().map(|p| p.streams).collect::<Vec<_>>(), vec![8334, 8334, 8333]);
        assert_eq!(parts[1].first_index, 8334);
        assert_eq!(parts[2].first_index, 16_668);
        assert!((parts[0].connect_rate - 333.33).abs() < 0.01);
        assert_eq!(parts[0].connect_concurrency, 4);
    }

    #[test]
    fn stop_lines() {
        assert_eq!(parse_accepted("150,149"), Some(vec![150, 149]));
        assert_eq!(parse_accepted("7"), Some(vec![7]));
        assert_eq!(parse_accepted("7,x"), None);
    }

    #[test]
    fn worker_lines_roundtrip() {
        let mut snap = LiveSnap { ready: 5, ..LiveSnap::default() };
        snap.latency.record(250);
        let mut final_ = SubResult { deliveries: 9, ..SubResult::default() };
        final_.latency_us.record(77);
        let mut wire = Vec::new();
        send(&mut wire, &WorkerMsg::Progress(snap)).expect("write");
        send(&mut wire, &WorkerMsg::Final(Box::new(final_))).expect("write");
        wire.extend_from_slice(b"not json\n");
        let state = Mutex::new(ChildState::default());
        read_worker(&wire[..], &state);
        let s = state.lock().expect("lock");
        assert_eq!((s.snap.ready, s.latency.count(), s.bad_lines, s.eof), (5, 1, 1, true));
        assert_eq!(s.result.as_ref().map(|r| (r.deliveries, r.latency_us.count())), Some((9, 1)));
    }
}
