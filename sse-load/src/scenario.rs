//! The three scenarios: phases, deadlines, server sampling and the report.
//!
//! Contract: every phase is bounded in time — connect (`ready_timeout`), publish (the schedule
//! plus the response timeout, or the overall deadline), drain (`--drain-seconds`, ended early
//! once every expected delivery arrived) — and the overall deadline stops the publisher and the
//! streams (whose own plan carries the same deadline). Streams run in this process when they
//! fit under its open-file limit, otherwise in worker processes ([`crate::multiproc`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::cli::{FanoutCmd, OutArgs, PublishCmd, SubArgs, SubscribeCmd};
use crate::live::LiveSnap;
use crate::multiproc::{split, Group, LocalGroup, Workers};
use crate::net;
use crate::payload;
use crate::procstat::{own_cpu_seconds, sample_all, ProcSample, TcpMemSampler};
use crate::progress::{Progress, PubCounts};
use crate::publisher::{self, PubLive, PubPlan};
use crate::report::{pub_section, server_section, sub_section, Report};
use crate::stats::{count_error, PubResult, SubResult};
use crate::subscriber::Plan;

/// How often the coordinator looks at the streams and the publisher.
const TICK: Duration = Duration::from_millis(100);
/// How long to wait for a stopped group's final result.
const FINISH_TIMEOUT: Duration = Duration::from_secs(20);
/// Slack added to derived deadlines.
const SLACK: Duration = Duration::from_secs(60);

/// Streams held for a run, wherever they run.
struct Streams {
    groups: Vec<Box<dyn Group>>,
    workers: Workers,
    processes: u64,
}

impl Streams {
    /// Starts `plan` here, or split over workers past `--streams-per-process` or the fd limit
    /// (minus `reserve` fds this process needs for itself).
    fn start(plan: &Plan, sub: &SubArgs, reserve: u64) -> Result<Streams, String> {
        let limit = net::raise_nofile().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
        let per_process =
            sub.streams_per_process.unwrap_or(net::capacity(limit).saturating_sub(reserve)).max(1);
        let mut workers = Workers::default();
        if plan.streams <= per_process {
            let local = LocalGroup::start(plan).map_err(|e| format!("starting subscribers: {e}"))?;
            return Ok(Streams { groups: vec![Box::new(local)], workers, processes: 1 });
        }
        let parts = split(plan, plan.streams.div_ceil(per_process));
        log::info!(
            "{} streams exceed {per_process} per process (open-file limit {limit}): using {} worker processes",
            plan.streams,
            parts.len()
        );
        let mut groups: Vec<Box<dyn Group>> = Vec::with_capacity(parts.len());
        for p in &parts {
            // On error `workers` is dropped here, which kills the children already started.
            groups.push(Box::new(workers.spawn(p).map_err(|e| format!("starting a worker process: {e}"))?));
        }
        Ok(Streams { groups, workers, processes: parts.len() as u64 })
    }

    fn snapshot(&mut self) -> LiveSnap {
        let mut total = LiveSnap::default();
        for g in &mut self.groups {
            total.add(&g.snapshot());
        }
        total
    }

    /// Stops every group, then collects and merges their results.
    fn finish(mut self, accepted: Option<&[u64]>) -> SubResult {
        for g in &mut self.groups {
            g.stop(accepted);
        }
        let mut total = SubResult::default();
        for g in self.groups.drain(..) {
            total.merge(&g.finish(FINISH_TIMEOUT));
        }
        self.workers.wait_all(Duration::from_secs(5));
        total.before_answer = crate::accepted::before_answer();
        total
    }
}

/// Waits until every stream is ready or given up on, or `until`; returns the seconds it took.
fn wait_ready(streams: &mut Streams, progress: &mut Progress, until: Instant) -> f64 {
    let start = Instant::now();
    loop {
        let snap = streams.snapshot();
        progress.observe(&snap);
        progress.tick("connect", Some(&snap), None);
        if snap.settled() >= snap.planned || Instant::now() >= until {
            return start.elapsed().as_secs_f64();
        }
        std::thread::sleep(TICK);
    }
}

/// Runs the publisher on a thread while showing progress; stops it at `until`.
fn publish_with_progress(
    plan: &PubPlan,
    mut streams: Option<&mut Streams>,
    progress: &mut Progress,
    tcp: &mut TcpMemSampler,
    until: Instant,
) -> PubResult {
    let (live, stop) = (PubLive::default(), AtomicBool::new(false));
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| publisher::run(plan, &live, &stop));
        while !handle.is_finished() {
            std::thread::sleep(TICK);
            let counts = PubCounts {
                sent: live.sent.load(Relaxed),
                accepted: live.accepted.load(Relaxed),
                failed: live.failed.load(Relaxed),
            };
            let snap = streams.as_mut().map(|s| s.snapshot());
            if let Some(s) = &snap {
                progress.observe(s);
            }
            progress.tick("publish", snap.as_ref(), Some(counts));
            tcp.tick();
            if Instant::now() >= until {
                stop.store(true, Relaxed);
            }
        }
        handle.join().unwrap_or_else(|_| {
            let mut r = PubResult::default();
            count_error(&mut r.errors, "internal: publisher thread panicked", 1);
            r
        })
    })
}

fn started_unix_s() -> u64 {
    payload::now_us() / 1_000_000
}

/// Prints the summary and writes the requested files.
pub fn emit(report: &Report, out: &OutArgs) -> Result<(), String> {
    let md = report.to_markdown();
    print!("{md}");
    if let Some(p) = &out.json_out {
        std::fs::write(p, report.to_json()).map_err(|e| format!("--json-out {}: {e}", p.display()))?;
    }
    if let Some(p) = &out.md_out {
        std::fs::write(p, &md).map_err(|e| format!("--md-out {}: {e}", p.display()))?;
    }
    Ok(())
}

fn config<T: serde::Serialize>(cmd: &T) -> serde_json::Value {
    serde_json::to_value(cmd).unwrap_or(serde_json::Value::Null)
}

fn deadline(out: &OutArgs, derived: Duration) -> Result<Duration, String> {
    match out.deadline_seconds {
        Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        Some(_) => Err("--deadline-seconds must be positive".into()),
        None => Ok(derived + SLACK),
    }
}

/// `sse-load fanout`.
pub fn fanout(cmd: &FanoutCmd) -> Result<Report, String> {
    let (t0, started) = (Instant::now(), started_unix_s());
    let pub_plan = cmd.publish.plan(&cmd.publish_target())?;
    let ready_timeout = cmd.sub.ready_timeout()?;
    let drain = Duration::from_secs_f64(cmd.drain_seconds.clamp(0.0, 3600.0));
    let schedule = Duration::from_secs_f64(cmd.publish.schedule_seconds(&pub_plan));
    let overall = deadline(&cmd.out, ready_timeout + schedule + pub_plan.response_timeout + drain)?;
    let mut plan = cmd.sub.plan(&cmd.target, true, overall.as_secs_f64())?;
    plan.lanes_per_publish_addr = cmd.lanes_per_publish_addr();
    let end_by = t0 + overall;
    let pids = &cmd.out.server_pids;
    let mut progress = Progress::new();

    let s_start = sample_all(pids);
    let mut tcp = TcpMemSampler::start();
    let mut streams = Streams::start(&plan, &cmd.sub, pub_plan.connections as u64)?;
    let connect_s = wait_ready(&mut streams, &mut progress, (Instant::now() + ready_timeout).min(end_by));
    let s_ready = sample_all(pids);
    tcp.ready();
    let snap = streams.snapshot();
    progress.done();
    log::info!(
        "{} of {} streams ready ({} failed) after {connect_s:.1} s; publishing {} events at {}/s",
        snap.ready,
        snap.planned,
        snap.failed,
        pub_plan.count,
        pub_plan.rate
    );

    let pub_res = publish_with_progress(&pub_plan, Some(&mut streams), &mut progress, &mut tcp, end_by);
    let accepted = pub_res.accepted_by_target.clone();
    // With one address this is exact; with several it can only make the drain wait longer.
    // Per `--addr`, or per `--publish-addr` when given (see `Plan::lanes_per_publish_addr`).
    let most = accepted.iter().copied().max().unwrap_or(0);
    let drain_until = (Instant::now() + drain).min(end_by);
    loop {
        let snap = streams.snapshot();
        progress.observe(&snap);
        progress.tick("drain", Some(&snap), None);
        tcp.tick();
        if snap.deliveries >= most * snap.readers_ready || Instant::now() >= drain_until {
            break;
        }
        std::thread::sleep(TICK);
    }
    let s_end = sample_all(pids);
    let tcp = tcp.finish();
    let processes = streams.processes;
    let sub_res = streams.finish(Some(&accepted));
    progress.done();

    let server = (!pids.is_empty())
        .then(|| server_section(s_start, s_ready, s_end, sub_res.ready, sub_res.deliveries, tcp));
    Ok(Report {
        mode: "fanout".into(),
        started_unix_s: started,
        elapsed_seconds: t0.elapsed().as_secs_f64(),
        config: config(cmd),
        subscriber_processes: processes,
        connect_phase_seconds: Some(connect_s),
        subscribers: Some(sub_section(sub_res)),
        publisher: Some(pub_section(pub_res, pub_plan.rate)),
        server,
        loadgen_cpu_seconds: own_cpu_seconds(),
    })
}

/// `sse-load subscribe`.
pub fn subscribe(cmd: &SubscribeCmd) -> Result<Report, String> {
    let (t0, started) = (Instant::now(), started_unix_s());
    let ready_timeout = cmd.sub.ready_timeout()?;
    let hold = Duration::from_secs_f64(cmd.duration.clamp(0.0, 7.0 * 86_400.0));
    let overall = deadline(&cmd.out, ready_timeout + hold)?;
    let plan = cmd.sub.plan(&cmd.target, false, overall.as_secs_f64())?;
    let end_by = t0 + overall;
    let pids = &cmd.out.server_pids;
    let mut progress = Progress::new();

    let s_start = sample_all(pids);
    let mut tcp = TcpMemSampler::start();
    let mut streams = Streams::start(&plan, &cmd.sub, 0)?;
    let connect_s = wait_ready(&mut streams, &mut progress, (Instant::now() + ready_timeout).min(end_by));
    let s_ready: Vec<ProcSample> = sample_all(pids);
    tcp.ready();
    let hold_until = (Instant::now() + hold).min(end_by);
    while Instant::now() < hold_until {
        let snap = streams.snapshot();
        progress.observe(&snap);
        progress.tick("hold", Some(&snap), None);
        tcp.tick();
        std::thread::sleep(TICK);
    }
    let s_end = sample_all(pids);
    let tcp = tcp.finish();
    let processes = streams.processes;
    let sub_res = streams.finish(None);
    progress.done();
    let server = (!pids.is_empty())
        .then(|| server_section(s_start, s_ready, s_end, sub_res.ready, sub_res.deliveries, tcp));
    Ok(Report {
        mode: "subscribe".into(),
        started_unix_s: started,
        elapsed_seconds: t0.elapsed().as_secs_f64(),
        config: config(cmd),
        subscriber_processes: processes,
        connect_phase_seconds: Some(connect_s),
        subscribers: Some(sub_section(sub_res)),
        publisher: None,
        server,
        loadgen_cpu_seconds: own_cpu_seconds(),
    })
}

/// `sse-load publish`.
pub fn publish(cmd: &PublishCmd) -> Result<Report, String> {
    let (t0, started) = (Instant::now(), started_unix_s());
    let plan = cmd.publish.plan(&cmd.target)?;
    let schedule = Duration::from_secs_f64(cmd.publish.schedule_seconds(&plan));
    let overall = deadline(&cmd.out, schedule + plan.response_timeout)?;
    let pids = &cmd.out.server_pids;
    let mut progress = Progress::new();
    let s_start = sample_all(pids);
    let mut tcp = TcpMemSampler::start();
    tcp.ready();
    let pub_res = publish_with_progress(&plan, None, &mut progress, &mut tcp, t0 + overall);
    progress.done();
    let s_end = sample_all(pids);
    let tcp = tcp.finish();
    let server = (!pids.is_empty()).then(|| server_section(s_start.clone(), s_start, s_end, 0, 0, tcp));
    Ok(Report {
        mode: "publish".into(),
        started_unix_s: started,
        elapsed_seconds: t0.elapsed().as_secs_f64(),
        config: config(cmd),
        subscriber_processes: 0,
        connect_phase_seconds: None,
        subscribers: None,
        publisher: Some(pub_section(pub_res, plan.rate)),
        server,
        loadgen_cpu_seconds: own_cpu_seconds(),
    })
}
