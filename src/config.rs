//! Every limit of the node as one documented field with its default.
//!
//! The same struct is the CLI (`sse-edge --help`), the environment (`SSE_EDGE_*`) and the
//! embedding API (`Config::default()` then set fields). [`Config::validate`] checks the
//! relations between fields that a single value parser cannot see; it runs in
//! [`crate::Server::start`], so an embedder gets the same errors as the CLI.

use std::net::SocketAddr;

use clap::Args;
use serde::Serialize;

/// Server configuration. Every field is a named bound with a sane default.
///
/// Serialized (for `--print-config` and reload), every key is the option's long flag name
/// with `-` turned into `_`, the same keys as the config file ([`crate::config_file`]).
#[derive(Debug, Clone, Args, Serialize)]
pub struct Config {
    /// Address every event loop listens on (each loop binds its own `SO_REUSEPORT` socket).
    #[arg(long, env = "SSE_EDGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Separate address for `/metrics`, `/healthz`, `/readyz` and the status page; when set,
    /// the public listener no longer serves them. The polling endpoints are client API and
    /// stay on the public listener (the admin listener serves them too, with the same auth).
    #[arg(long, env = "SSE_EDGE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Number of event loops, one thread each [default: number of available cores].
    #[arg(long, env = "SSE_EDGE_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Listen backlog of each loop's socket (the kernel caps it at `net.core.somaxconn`).
    #[arg(long, env = "SSE_EDGE_BACKLOG", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub backlog: u32,

    /// Kernel send buffer of each public connection (`SO_SNDBUF`, set on the listeners and
    /// inherited by accepted sockets; the kernel doubles it for bookkeeping), 0: the kernel's
    /// autotuning (`net.ipv4.tcp_wmem`). A fixed buffer caps a stream at about twice this per
    /// round trip (64 KiB: ~1.3 MB/s at 100 ms); `--notsent-lowat-bytes` bounds what a
    /// stalled client pins without that cap, so the default leaves this to the kernel.
    #[arg(long, env = "SSE_EDGE_SEND_BUFFER_BYTES", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=64 << 20))]
    pub send_buffer_bytes: u32,

    /// `TCP_NOTSENT_LOWAT` of each public connection (0: off): the socket turns unwritable
    /// once this many bytes wait unsent in the kernel, however large the in-flight part grows
    /// under the kernel's autotuning. A client that stops reading then turns write-blocked
    /// early, so the loop stops spending `writev`s on it and its backlog waits in the outbox
    /// (bounded, evicted by class with a gap notice), while a fast client's throughput to a
    /// distant reader is not capped the way `--send-buffer-bytes` caps it. Measured on M4b
    /// (`benches/send_queue.sh`): 16 KiB gave the lowest readers' p99 and kernel memory.
    #[arg(long, env = "SSE_EDGE_NOTSENT_LOWAT_BYTES", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(0..=64 << 20))]
    pub notsent_lowat_bytes: u32,

    /// Pin loop `i` to core `i mod cores` so a connection's cache lines stay on one core.
    #[arg(long, env = "SSE_EDGE_PIN_THREADS", default_value_t = true, action = clap::ArgAction::Set)]
    pub pin_threads: bool,

    /// A stream that was sent nothing for this long gets a `:` comment frame, so proxies and
    /// browsers keep it open.
    #[arg(long, env = "SSE_EDGE_HEARTBEAT_MS", default_value_t = 25_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub heartbeat_ms: u64,

    /// The `retry:` reconnection delay sent to every new stream, in milliseconds.
    #[arg(long, env = "SSE_EDGE_RETRY_MS", default_value_t = 3_000,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub retry_ms: u64,

    /// Most frames kept for a connection whose client has fallen behind (its socket blocked);
    /// past it the oldest unsent frame is dropped. A client that keeps up may have more
    /// queued while the loop's write pass reaches it (up to the default, if this is less).
    #[arg(long, env = "SSE_EDGE_OUTBOX_MAX_EVENTS", default_value_t = DEFAULT_OUTBOX_MAX_EVENTS,
          value_parser = parse_positive_usize)]
    pub outbox_max_events: usize,

    /// Most bytes kept for a connection whose client has fallen behind (its socket blocked);
    /// past it the oldest unsent frames are dropped. A client that keeps up may have more
    /// queued while the loop's write pass reaches it (up to the default, if this is less).
    /// Also the largest single event frame the node accepts (larger publishes get 413).
    #[arg(long, env = "SSE_EDGE_OUTBOX_MAX_BYTES", default_value_t = DEFAULT_OUTBOX_MAX_BYTES,
          value_parser = parse_positive_usize)]
    pub outbox_max_bytes: usize,

    /// A stream's first new event may wait this long before it is written, so the events
    /// after it leave in the same `writev` (fewer, fuller writes: less CPU per delivery for
    /// at most this much latency; Centrifugo's `write_delay`, Kafka's `linger.ms`). 0: written
    /// in the next pass. Never delays answers, heartbeats or notices.
    #[arg(long, env = "SSE_EDGE_WRITE_DELAY_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=1_000))]
    pub write_delay_ms: u64,

    /// A connection with queued frames whose socket accepts no byte for this long is closed
    /// (the client resumes later); protects memory from clients that stopped reading.
    #[arg(long, env = "SSE_EDGE_STALL_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub stall_timeout_ms: u64,

    /// Largest request line plus headers; a longer target gets 414, longer headers 431.
    #[arg(long, env = "SSE_EDGE_MAX_REQUEST_BYTES", default_value_t = 8192,
          value_parser = parse_request_bytes)]
    pub max_request_bytes: usize,

    /// Largest request body (a publish or a batch of publishes); larger gets 413.
    #[arg(long, env = "SSE_EDGE_MAX_BODY_BYTES", default_value_t = 1 << 20,
          value_parser = parse_positive_usize)]
    pub max_body_bytes: usize,

    /// Most body bytes of one polling answer (`/topics/{t}/events`): events are added until
    /// the next would cross it and `X-Next-After` says where to continue. Bounds the memory a
    /// polling client pins until it reads its answer; one event larger than this is answered
    /// alone if its JSON fits `--outbox-max-bytes`.
    #[arg(long, env = "SSE_EDGE_POLL_MAX_BYTES", default_value_t = 256 << 10,
          value_parser = parse_poll_bytes)]
    pub poll_max_bytes: usize,

    /// Most topics one stream may subscribe to in one request; more gets 400.
    #[arg(long, env = "SSE_EDGE_MAX_TOPICS_PER_STREAM", default_value_t = 64,
          value_parser = parse_positive_usize)]
    pub max_topics_per_stream: usize,

    /// Events kept per topic for `Last-Event-ID` resume and the polling endpoints (0 turns
    /// history off).
    #[arg(long, env = "SSE_EDGE_HISTORY_MAX_EVENTS", default_value_t = 1000)]
    pub history_max_events: usize,

    /// Frame bytes kept per topic in history.
    #[arg(long, env = "SSE_EDGE_HISTORY_MAX_BYTES", default_value_t = 1 << 20,
          value_parser = parse_positive_usize)]
    pub history_max_bytes: usize,

    /// Memory history holds over all topics: frames, the shared events and every loop's ring
    /// slots (see `history` invariant 4; this is the node's bound); past it the least
    /// recently published topics are forgotten.
    #[arg(long, env = "SSE_EDGE_HISTORY_MAX_TOTAL_BYTES", default_value_t = 256 << 20,
          value_parser = parse_positive_usize)]
    pub history_max_total_bytes: usize,

    /// Oldest event kept in history, in milliseconds.
    #[arg(long, env = "SSE_EDGE_HISTORY_MAX_AGE_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub history_max_age_ms: u64,

    /// Topics kept in history; past it the least recently published is forgotten.
    #[arg(long, env = "SSE_EDGE_HISTORY_MAX_TOPICS", default_value_t = 100_000,
          value_parser = parse_positive_usize)]
    pub history_max_topics: usize,

    /// At most one `latest` event per topic+key per this interval goes to subscribers; the
    /// last value of each window is always delivered when it ends (0 turns throttling off).
    #[arg(long, env = "SSE_EDGE_LATEST_MIN_INTERVAL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub latest_min_interval_ms: u64,

    /// Log one line for every n-th published event (topic, id, class, size) at `info`;
    /// 0 logs none. Deliveries are never logged.
    #[arg(long, env = "SSE_EDGE_LOG_SAMPLE_EVERY", default_value_t = 0)]
    pub log_sample_every: u64,

    /// Capacity of each hub→loop channel, in events. When any loop's channel is full,
    /// publishers wait (HTTP publishers are no longer read; `try_publish` returns `Full`).
    #[arg(long, env = "SSE_EDGE_HUB_QUEUE_EVENTS", default_value_t = 16_384,
          value_parser = parse_positive_usize)]
    pub hub_queue_events: usize,

    /// Delivery-lag budget, in ms: when a loop is further behind than this (the oldest event
    /// it has not taken from its channel, or the event that queued the stream its write pass
    /// has waited longest to write, was accepted longer ago), publishers wait exactly as on a
    /// full channel (HTTP
    /// publishers are parked, `publish` waits, `try_publish` returns `Full`), so a node that
    /// falls behind slows its publishers instead of queueing seconds of events. The channel
    /// bound (`--hub-queue-events`) stays as the memory ceiling; with `--bus` publishers are
    /// paced by the bus window instead (the budget is not applied yet). 0: no budget. The
    /// saturation gauge `sse_loop_saturation` is lag / budget, per loop.
    #[arg(long, env = "SSE_EDGE_MAX_DELIVERY_LAG_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub max_delivery_lag_ms: u64,

    /// Longest an HTTP publisher waits for hub room (its connection parked, its socket not
    /// read); past it the publish is answered `503` with `Retry-After: 1` and the ids of the
    /// events already sequenced. 0: no limit (wait as long as the hub stays full).
    #[arg(long, env = "SSE_EDGE_PUBLISH_WAIT_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub publish_wait_timeout_ms: u64,

    /// Most open streams; 0 derives it from the open-file limit (the soft limit is raised
    /// to the hard limit at start) minus `--fd-reserve` and `--request-reserve`, and a larger
    /// value is capped by it. Past it a new stream gets 503 with Retry-After.
    #[arg(long, env = "SSE_EDGE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Connections beyond `--max-connections` kept for short requests (publish, polling,
    /// health, metrics), so publishers still get in when the streams fill the node; they are
    /// counted in the descriptor budget. Past both, new connections get 503 at accept.
    #[arg(long, env = "SSE_EDGE_REQUEST_RESERVE", default_value_t = 64)]
    pub request_reserve: usize,

    /// File descriptors kept back from connections for listeners, pollers, logs and the
    /// spare descriptor that answers accepts during EMFILE.
    #[arg(long, env = "SSE_EDGE_FD_RESERVE", default_value_t = 64)]
    pub fd_reserve: usize,

    /// A request (head and body) not complete this long after its first byte is closed
    /// (slowloris).
    #[arg(long, env = "SSE_EDGE_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub request_timeout_ms: u64,

    /// An idle keep-alive connection (no stream, no request in progress) is closed after
    /// this long.
    #[arg(long, env = "SSE_EDGE_KEEPALIVE_TIMEOUT_MS", default_value_t = 75_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub keepalive_timeout_ms: u64,

    /// Bearer token publishers must send (`Authorization: Bearer <token>`); without one,
    /// only loopback peers may publish. Repeat it (a list in the config file) to accept
    /// several, so old and new overlap during a rotation; the environment holds one.
    #[arg(long, env = "SSE_EDGE_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Vec<String>,

    /// HS256 secret that signs subscribe tokens (claims `sub`, `topics`, `exp`); when set,
    /// every stream needs a valid token (header, cookie or `?token=`). Repeat it (a list in
    /// the config file) to accept tokens signed with any of several keys during a rotation;
    /// the node only verifies, so sign new tokens with the first. The environment holds one.
    #[arg(long, env = "SSE_EDGE_SUBSCRIBE_KEY", hide_env_values = true)]
    pub subscribe_key: Vec<String>,

    /// Cookie that carries the subscribe token (browser EventSource cannot set headers).
    #[arg(long, env = "SSE_EDGE_SUBSCRIBE_COOKIE")]
    pub subscribe_cookie: Option<String>,

    /// Origins allowed to use streams and publish from a browser (`*` for any); repeat or
    /// separate with commas. Other origins get no CORS headers.
    #[arg(long, env = "SSE_EDGE_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,

    /// Concurrent streams from one IP (0: unlimited). Refusals get 429.
    #[arg(long, env = "SSE_EDGE_MAX_STREAMS_PER_IP", default_value_t = 0)]
    pub max_streams_per_ip: usize,

    /// New connections per second from one IP, token bucket (0: off). Refusals get 429.
    #[arg(long, env = "SSE_EDGE_CONNECT_RATE_PER_IP", default_value_t = 0.0)]
    pub connect_rate_per_ip: f64,

    /// IPv6 clients count against the per-IP limits by this many leading bits of their
    /// address (64: a subscriber's whole /64 is one client, so it cannot rotate through 2^64
    /// budgets; 128: each address alone). IPv4 addresses always count alone.
    #[arg(long, env = "SSE_EDGE_IPV6_PREFIX", default_value_t = crate::admission::DEFAULT_IPV6_PREFIX,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_prefix: u8,

    /// Connections one IP may open in a burst before `--connect-rate-per-ip` applies.
    #[arg(long, env = "SSE_EDGE_CONNECT_BURST_PER_IP", default_value_t = 50.0)]
    pub connect_burst_per_ip: f64,

    /// Concurrent streams of one user (the `sub` of a verified subscribe token; 0: unlimited).
    #[arg(long, env = "SSE_EDGE_MAX_STREAMS_PER_USER", default_value_t = 3)]
    pub max_streams_per_user: usize,

    /// Publishes per second to one topic, token bucket (0: off). Refusals get 429.
    #[arg(long, env = "SSE_EDGE_PUBLISH_RATE_PER_TOPIC", default_value_t = 0.0)]
    pub publish_rate_per_topic: f64,

    /// Publishes one topic may take in a burst before `--publish-rate-per-topic` applies.
    #[arg(long, env = "SSE_EDGE_PUBLISH_BURST_PER_TOPIC", default_value_t = 100.0)]
    pub publish_burst_per_topic: f64,

    /// Overload mode begins when a loop iteration takes this long (the loop lags).
    #[arg(long, env = "SSE_EDGE_OVERLOAD_LAG_MS", default_value_t = 1_000)]
    pub overload_lag_ms: u64,

    /// Overload mode begins when all outboxes together hold this many unwritten bytes.
    #[arg(long, env = "SSE_EDGE_OVERLOAD_QUEUED_BYTES", default_value_t = 1 << 30)]
    pub overload_queued_bytes: u64,

    /// Answer `/readyz` with 503 while in overload mode (so a balancer sends new clients
    /// elsewhere).
    #[arg(long, env = "SSE_EDGE_UNREADY_WHEN_OVERLOADED", default_value_t = false, action = clap::ArgAction::Set)]
    pub unready_when_overloaded: bool,

    /// How often the node builds its status snapshot (`/status.json`; without `--bus` also
    /// published on topic `sse-edge.status`, the status page's feed) and checks overload;
    /// 0 turns the snapshots and the feed off.
    #[arg(long, env = "SSE_EDGE_STATUS_INTERVAL_MS", default_value_t = 1_000)]
    pub status_interval_ms: u64,

    /// On shutdown, streams get `event: server-shutdown` and this long to receive what is
    /// queued before the process exits.
    #[arg(long, env = "SSE_EDGE_DRAIN_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub drain_timeout_ms: u64,

    /// On shutdown each stream's `retry:` is `--retry-ms` plus a random share of this, so
    /// clients do not all come back in the same second.
    #[arg(long, env = "SSE_EDGE_SHUTDOWN_RETRY_SPREAD_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub shutdown_retry_spread_ms: u64,

    /// Log level, changed live on reload: `off`, `error`, `warn`, `info`, `debug` or `trace`
    /// [default: `RUST_LOG` if set, else `info`]. A level, not a filter: `RUST_LOG` (read at
    /// start only) still filters per module below it.
    #[arg(long, env = "SSE_EDGE_LOG_LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<String>,

    /// Scale-out over a bus (`--bus`, `--bus-*`); see [`crate::bus`].
    #[command(flatten)]
    #[serde(flatten)]
    pub bus: crate::bus::BusConfig,
}

impl Default for Config {
    fn default() -> Self {
        use clap::{FromArgMatches, Parser};
        /// Parses an empty command line so defaults have one source of truth.
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        let matches =
            <Defaults as clap::CommandFactory>::command().ignore_errors(true).get_matches_from(["sse-edge"]);
        Defaults::from_arg_matches(&matches)
            .map(|d| d.config)
            .unwrap_or_else(|e| panic!("built-in defaults must parse: {e}"))
    }
}

/// A configuration that is internally inconsistent; the message names the options.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// A config for tests and embedders: port 0 on loopback, no pinning, defaults otherwise.
    pub fn loopback() -> Self {
        Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), pin_threads: false, ..Config::default() }
    }

    /// The kernel send queue bounds of public connections.
    pub fn send_queue(&self) -> crate::sys::listener::SendQueue {
        crate::sys::listener::SendQueue {
            buffer: self.send_buffer_bytes,
            notsent_lowat: self.notsent_lowat_bytes,
        }
    }

    /// Number of loops to run: `--threads` or the number of cores available to this process.
    pub fn loop_count(&self) -> usize {
        match self.threads {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Checks relations between fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.outbox_max_events == 0 || self.outbox_max_bytes == 0 {
            return Err(ConfigError("--outbox-max-events and --outbox-max-bytes must be at least 1".into()));
        }
        if self.max_request_bytes < MIN_REQUEST_BYTES {
            return Err(ConfigError(format!("--max-request-bytes must be at least {MIN_REQUEST_BYTES}")));
        }
        if self.history_max_bytes > self.history_max_total_bytes {
            return Err(ConfigError("--history-max-bytes must not exceed --history-max-total-bytes".into()));
        }
        if self.outbox_max_events < 4 || self.outbox_max_bytes < 4096 {
            return Err(ConfigError(
                "--outbox-max-events must be at least 4 and --outbox-max-bytes at least 4096 \
                 (room for the stream head, the prelude and one notice)"
                    .into(),
            ));
        }
        if self.send_buffer_bytes != 0 && self.send_buffer_bytes < 4096 {
            return Err(ConfigError(
                "--send-buffer-bytes must be 0 (kernel autotuning) or at least 4096 \
                 (the kernel raises smaller values to its own minimum)"
                    .into(),
            ));
        }
        if self.poll_max_bytes < MIN_POLL_BYTES {
            return Err(ConfigError(format!("--poll-max-bytes must be at least {MIN_POLL_BYTES}")));
        }
        if self.hub_queue_events == 0 {
            return Err(ConfigError("--hub-queue-events must be at least 1".into()));
        }
        self.bus.validate().map_err(ConfigError)?;
        Ok(())
    }
}

/// `--outbox-max-events`'s default; also what a stream whose client keeps up may queue.
pub const DEFAULT_OUTBOX_MAX_EVENTS: usize = 1024;

/// `--outbox-max-bytes`'s default; also what a stream whose client keeps up may queue.
pub const DEFAULT_OUTBOX_MAX_BYTES: usize = 1 << 20;

/// Smallest useful request head: a request line and a few short headers.
pub const MIN_REQUEST_BYTES: usize = 256;

/// Smallest polling answer bound: room for a page of a few small events.
pub const MIN_POLL_BYTES: usize = 1024;

fn parse_poll_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n < MIN_POLL_BYTES {
        return Err(format!("must be at least {MIN_POLL_BYTES}"));
    }
    Ok(n)
}

fn parse_log_level(s: &str) -> Result<String, String> {
    let level: log::LevelFilter =
        s.parse().map_err(|_| "must be one of off, error, warn, info, debug, trace".to_string())?;
    Ok(level.as_str().to_ascii_lowercase())
}

fn parse_positive_usize(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

fn parse_request_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n < MIN_REQUEST_BYTES {
        return Err(format!("must be at least {MIN_REQUEST_BYTES}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.heartbeat_ms, 25_000);
        assert_eq!(c.publish_wait_timeout_ms, 10_000);
        assert_eq!((c.send_buffer_bytes, c.notsent_lowat_bytes), (0, 16_384));
        assert!(c.validate().is_ok());
        assert!(c.loop_count() >= 1);
    }

    #[test]
    fn send_buffer_is_off_or_at_least_a_page() {
        let with = |send_buffer_bytes| Config { send_buffer_bytes, ..Config::default() }.validate();
        assert!(with(0).is_ok());
        assert!(with(4096).is_ok());
        let err = with(1024).expect_err("1 KiB is below the kernel's minimum");
        assert!(err.0.contains("--send-buffer-bytes"), "{}", err.0);
    }

    #[test]
    fn poll_max_bytes_defaults_under_the_outbox_and_has_a_floor() {
        let c = Config::default();
        assert_eq!(c.poll_max_bytes, 256 << 10);
        assert!(c.poll_max_bytes < c.outbox_max_bytes);
        let err = Config { poll_max_bytes: 100, ..Config::default() }.validate().expect_err("too small");
        assert!(err.0.contains("--poll-max-bytes"), "{}", err.0);
        assert!(parse_poll_bytes("1023").is_err() && parse_poll_bytes("1024").is_ok());
    }
}
