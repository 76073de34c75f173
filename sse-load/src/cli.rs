//! Command-line options and their validation into run plans. No I/O beyond reading the options.
//!
//! Contract: every option has a default that yields a short, bounded run; [`SubArgs::plan`] and
//! [`PubArgs::plan`] refuse out-of-range values with a message naming the option, and refuse
//! any target or source address outside loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::net;
use crate::publisher::PubPlan;
use crate::subscriber::Plan;
use crate::tracker::MAX_LANES;

/// Load generator for sse-edge: holds many SSE streams, publishes at a fixed rate, checks every
/// stream for order and gaps, and reports latency, server memory and CPU per delivery.
#[derive(Debug, Parser)]
#[command(name = "sse-load", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Scenarios.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Hold N streams for a while and check what arrives on them.
    Subscribe(SubscribeCmd),
    /// Publish at a fixed rate (open loop) and report the server's answers.
    Publish(PublishCmd),
    /// Subscribe N streams, wait until all are ready, publish, drain, report (the benchmark).
    Fanout(FanoutCmd),
    /// Internal: hold a share of the streams for a parent process.
    #[command(hide = true)]
    Worker(WorkerCmd),
}

/// Where to connect.
#[derive(Debug, Clone, Args, Serialize)]
pub struct TargetArgs {
    /// Server address (loopback only). Repeatable, for server processes on distinct ports:
    /// stream i connects to address i mod N, and every event is published to each address.
    #[arg(long = "addr", default_value = "127.0.0.1:8080")]
    pub addrs: Vec<SocketAddr>,
    /// Topic to subscribe to / publish on (repeatable; streams subscribe to all, events rotate).
    #[arg(long = "topic", default_value = "bench")]
    pub topics: Vec<String>,
}

/// How to hold streams.
#[derive(Debug, Clone, Args, Serialize)]
pub struct SubArgs {
    /// Streams to hold in total (split over worker processes past one process's fd limit).
    #[arg(long, default_value_t = 1000)]
    pub streams: u64,
    /// Source addresses to bind client sockets to, comma separated (each has its own ports).
    #[arg(long, conflicts_with = "source_count")]
    pub sources: Option<String>,
    /// Use 127.0.0.1 ..= 127.0.0.K as source addresses.
    #[arg(long)]
    pub source_count: Option<u8>,
    /// New connections per second over all processes (0 = unpaced).
    #[arg(long, default_value_t = 5000.0)]
    pub connect_rate: f64,
    /// Connects in flight (started, not yet ready) at once over all processes.
    #[arg(long, default_value_t = 512)]
    pub connect_concurrency: u64,
    /// A stream not ready (prelude received) this long after its connect started is failed.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Extra attempts for a stream that fails before it is ready.
    #[arg(long, default_value_t = 1)]
    pub connect_retries: u32,
    /// Fraction of streams that never read after the response head (0..=1).
    #[arg(long, default_value_t = 0.0)]
    pub slow: f64,
    /// SO_RCVBUF for slow streams, bytes (smaller fills the server's outbox sooner).
    #[arg(long)]
    pub slow_rcvbuf: Option<usize>,
    /// Event-loop threads per process.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Streams per process (default: the raised open-file limit minus a reserve of 100).
    #[arg(long)]
    pub streams_per_process: Option<u64>,
    /// How long to wait for every stream to be ready (default: from streams and connect rate).
    #[arg(long)]
    pub ready_timeout_seconds: Option<f64>,
}

/// How to publish.
#[derive(Debug, Clone, Args, Serialize)]
pub struct PubArgs {
    /// Events per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds to publish for (ignored with --count).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Events to publish in total (default: rate × duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// Bytes of data per event (a stamp `{"lane","seq","ts_us","pad"}` padded to this size).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Keep-alive publishing connections, requests pipelined on each.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// `event` name for published events.
    #[arg(long)]
    pub event: Option<String>,
    /// How long to wait for answers after the last send.
    #[arg(long, default_value_t = 10_000)]
    pub response_timeout_ms: u64,
    /// Unsent request bytes allowed per connection before events are skipped.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_backlog_bytes: usize,
    /// Requests sent and not yet answered allowed per connection before events are skipped
    /// (counted `not_sent_inflight`); 0: no bound (open loop). A bound makes the publisher feel
    /// a server that parks publishers: it offers less instead of queueing requests.
    #[arg(long, default_value_t = 0)]
    pub max_inflight: usize,
}

/// Reports and server sampling.
#[derive(Debug, Clone, Args, Serialize)]
pub struct OutArgs {
    /// Write the JSON report here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Write the Markdown summary here.
    #[arg(long)]
    pub md_out: Option<PathBuf>,
    /// Server process to sample for RSS and CPU (repeatable, e.g. several SO_REUSEPORT servers).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Hard limit on the whole run, seconds (default: derived from the phases).
    #[arg(long)]
    pub deadline_seconds: Option<f64>,
}

/// `sse-load subscribe`.
#[derive(Debug, Args, Serialize)]
pub struct SubscribeCmd {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub sub: SubArgs,
    /// Seconds to hold the streams once they are ready.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `sse-load publish`.
#[derive(Debug, Args, Serialize)]
pub struct PublishCmd {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub publish: PubArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `sse-load fanout`.
#[derive(Debug, Args, Serialize)]
pub struct FanoutCmd {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Address to publish to instead of the --addr list (repeatable, loopback only); every event
    /// goes to each. E.g. each server's --admin-listen, or one per SO_REUSEPORT process behind a
    /// single --addr: each stream is then expected to get every event accepted by the publish
    /// address whose events reach it.
    #[arg(long = "publish-addr")]
    pub publish_addrs: Vec<SocketAddr>,
    #[command(flatten)]
    pub sub: SubArgs,
    #[command(flatten)]
    pub publish: PubArgs,
    /// Seconds to wait after the last answer for the last deliveries (ends early when all came).
    #[arg(long, default_value_t = 5.0)]
    pub drain_seconds: f64,
    #[command(flatten)]
    pub out: OutArgs,
}

/// `sse-load worker` (internal).
#[derive(Debug, Args)]
pub struct WorkerCmd {
    /// The worker's share, as JSON.
    #[arg(long)]
    pub plan: String,
}

impl FanoutCmd {
    /// Where the publisher side sends events: `--publish-addr` if given, else `--addr`.
    pub fn publish_target(&self) -> TargetArgs {
        let mut t = self.target.clone();
        if !self.publish_addrs.is_empty() {
            t.addrs.clone_from(&self.publish_addrs);
        }
        t
    }

    /// Publisher lanes per publish address when `--publish-addr` sets publishing apart from the
    /// stream addresses (see [`Plan::lanes_per_publish_addr`]).
    pub fn lanes_per_publish_addr(&self) -> Option<usize> {
        (!self.publish_addrs.is_empty()).then_some(self.publish.connections)
    }
}

impl TargetArgs {
    /// Topics are valid and every address (and source) is loopback.
    fn check(&self, sources: &[std::net::IpAddr]) -> Result<(), String> {
        check_topics(&self.topics)?;
        if self.addrs.is_empty() {
            return Err("--addr: at least one".into());
        }
        self.addrs.iter().try_for_each(|&a| net::check_loopback(a, sources))
    }
}

fn check_topics(topics: &[String]) -> Result<(), String> {
    let ok = |t: &String| {
        (1..=128).contains(&t.len())
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
    };
    match topics.iter().find(|t| !ok(t)) {
        Some(t) => Err(format!("--topic {t:?}: 1-128 bytes of A-Z a-z 0-9 . _ : @ -")),
        None if topics.is_empty() => Err("--topic: at least one".into()),
        None => Ok(()),
    }
}

fn positive(name: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{name} must be a positive number"))
    }
}

impl SubArgs {
    /// The plan for all streams (before any split over processes).
    pub fn plan(&self, target: &TargetArgs, from_zero: bool, max_seconds: f64) -> Result<Plan, String> {
        let sources = net::sources(self.sources.as_deref(), self.source_count)?;
        target.check(&sources)?;
        if !(0.0..=1.0).contains(&self.slow) {
            return Err("--slow must be within 0..=1".into());
        }
        if !(self.connect_rate.is_finite() && self.connect_rate >= 0.0) {
            return Err("--connect-rate must be 0 (unpaced) or positive".into());
        }
        if !(1..=64).contains(&self.client_threads) {
            return Err("--client-threads must be within 1..=64".into());
        }
        if self.streams > 10_000_000 {
            return Err("--streams: at most 10,000,000".into());
        }
        if self.connect_concurrency == 0 || self.connect_timeout_ms == 0 {
            return Err("--connect-concurrency and --connect-timeout-ms must be positive".into());
        }
        Ok(Plan {
            addrs: target.addrs.clone(),
            topics: target.topics.clone(),
            first_index: 0,
            streams: self.streams,
            sources,
            slow: self.slow,
            slow_rcvbuf: self.slow_rcvbuf,
            connect_rate: self.connect_rate,
            connect_concurrency: self.connect_concurrency,
            connect_timeout_ms: self.connect_timeout_ms,
            connect_retries: self.connect_retries,
            threads: self.client_threads,
            from_zero,
            max_seconds,
            lanes_per_publish_addr: None,
        })
    }

    /// How long the connect phase may take.
    pub fn ready_timeout(&self) -> Result<Duration, String> {
        let secs = match self.ready_timeout_seconds {
            Some(s) => positive("--ready-timeout-seconds", s)?,
            None => {
                let paced =
                    if self.connect_rate > 0.0 { self.streams as f64 / self.connect_rate } else { 0.0 };
                let attempts = f64::from(self.connect_retries + 1);
                paced * 2.0 + attempts * self.connect_timeout_ms as f64 / 1000.0 + 10.0
            }
        };
        Ok(Duration::from_secs_f64(secs))
    }
}

impl PubArgs {
    /// The publishing plan.
    pub fn plan(&self, target: &TargetArgs) -> Result<PubPlan, String> {
        target.check(&[])?;
        let rate = positive("--rate", self.rate)?;
        let count = match self.count {
            Some(n) => n,
            None => (rate * positive("--duration", self.duration)?).round() as u64,
        };
        if self.connections == 0 || self.connections * target.addrs.len() > MAX_LANES {
            return Err(format!("--connections × addresses must be within 1..={MAX_LANES}"));
        }
        if self.payload_bytes > 1 << 20 {
            return Err("--payload-bytes: at most 1 MiB".into());
        }
        if let Some(e) = &self.event {
            if e.is_empty()
                || !e.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err("--event: letters, digits, . _ - only".into());
            }
        }
        Ok(PubPlan {
            addrs: target.addrs.clone(),
            topics: target.topics.clone(),
            event: self.event.clone(),
            rate,
            count,
            payload_bytes: self.payload_bytes,
            connections: self.connections,
            response_timeout: Duration::from_millis(self.response_timeout_ms),
            max_backlog_bytes: self.max_backlog_bytes,
            max_inflight: self.max_inflight,
        })
    }

    /// Seconds the schedule takes.
    pub fn schedule_seconds(&self, plan: &PubPlan) -> f64 {
        plan.count as f64 / plan.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_validation() {
        let cli =
            Cli::try_parse_from(["sse-load", "fanout", "--streams", "10", "--topic", "a", "--topic", "b"])
                .expect("parses");
        let Cmd::Fanout(f) = cli.cmd else { panic!("fanout") };
        let plan = f.sub.plan(&f.target, true, 60.0).expect("valid");
        assert_eq!(plan.topics, vec!["a", "b"]);
        assert_eq!(f.publish.plan(&f.target).expect("valid").count, 1000);
        let bad = Cli::try_parse_from(["sse-load", "fanout", "--addr", "10.1.2.3:80"]).expect("parses");
        let Cmd::Fanout(f) = bad.cmd else { panic!("fanout") };
        assert!(f.sub.plan(&f.target, true, 1.0).is_err());
        assert!(f.publish.plan(&f.target).is_err());
        let bad =
            Cli::try_parse_from(["sse-load", "fanout", "--publish-addr", "10.1.2.3:80"]).expect("parses");
        let Cmd::Fanout(f) = bad.cmd else { panic!("fanout") };
        assert!(f.publish.plan(&f.publish_target()).is_err());
        let slow = Cli::try_parse_from(["sse-load", "subscribe", "--slow", "1.5"]).expect("parses");
        let Cmd::Subscribe(s) = slow.cmd else { panic!("subscribe") };
        assert!(s.sub.plan(&s.target, false, 1.0).is_err());
    }

    #[test]
    fn publish_addrs_default_to_addrs() {
        let args = ["sse-load", "fanout", "--addr", "127.0.0.1:1", "--addr", "127.0.0.1:2"];
        let Cmd::Fanout(f) = Cli::try_parse_from(args).expect("parses").cmd else { panic!("fanout") };
        assert_eq!(f.publish_target().addrs, f.target.addrs);
        assert_eq!(f.lanes_per_publish_addr(), None);
        let args = ["sse-load", "fanout", "--addr", "127.0.0.1:1", "--connections", "3"];
        let more = ["--publish-addr", "127.0.0.1:7", "--publish-addr", "127.0.0.2:8"];
        let cli = Cli::try_parse_from(args.iter().chain(&more)).expect("parses");
        let Cmd::Fanout(f) = cli.cmd else { panic!("fanout") };
        let plan = f.publish.plan(&f.publish_target()).expect("valid");
        let want: Vec<SocketAddr> = vec!["127.0.0.1:7".parse().unwrap(), "127.0.0.2:8".parse().unwrap()];
        assert_eq!(plan.addrs, want);
        assert_eq!(f.sub.plan(&f.target, true, 1.0).expect("valid").addrs, vec![f.target.addrs[0]]);
        assert_eq!(f.lanes_per_publish_addr(), Some(3));
    }
}
