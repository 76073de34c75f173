//! sse-edge: a thread-per-core Server-Sent Events fan-out server.
//!
//! The data path, one module each: accept and loop ([`worker`]) → parse ([`http`]) →
//! route ([`route`]) → publish ([`publish`]) → sequence ([`hub`]) → fan out to a
//! connection's bounded outbox ([`outbox`]) → `writev` to the socket. Events are encoded
//! once ([`sse`]) into a shared `Bytes` frame that every outbox holds by reference.
//!
//! Layering: a module uses only modules on lower lines of this list, never one above it or
//! one that uses it back (`tests/layering.rs` fails on any import cycle and names its lines).
//! A module's submodules (`worker::*`, `hub::*`, `bus::*`, ...) count as the module.
//!
//! 1. `monitor` (the watcher thread), [`check`] (the host's capacity report), `config_file`
//!    (the TOML file and `--print-config`).
//! 2. `worker`: the loops (accept, read, route, fan out, flush, timers, admin) and the
//!    [`Reloader`] that swaps their live settings.
//! 3. `live`: the settings a reload changes (tokens, keys, CORS, limits, timers).
//! 4. `conn`, [`polling`], [`exposition`], [`config`]: one connection, polling answers,
//!    the metrics text, the options.
//! 5. [`bus`], [`history`], [`outbox`]: the Redis sequencer and reader, a loop's history, a
//!    connection's outbox.
//! 6. [`hub`]: the in-process sequencer and the hub→loop channel messages (events, losses,
//!    the bus's resume answers).
//! 7. [`route`], [`cors`], [`throttle`], [`intern`].
//! 8. [`publish`], [`admission`], [`auth`], [`metrics`].
//! 9. Leaves: [`http`], [`sse`], [`topics`] (names, the reserved prefix, the index),
//!    [`notices`], [`health`], [`histogram`], `rate`, `room`, `busy_rate`, [`client_js`], [`sys`].
//!
//! Embedding:
//!
//! ```no_run
//! use sse_edge::{Config, Message, Server};
//!
//! let handle = Server::start(Config::loopback()).expect("start");
//! println!("listening on {}", handle.local_addr());
//! let publisher = handle.publisher();
//! publisher.publish(&Message::new("jobs", "hello").event("greeting")).expect("publish");
//! // Rotate the publish token live (both accepted while listed); see `live` for what reloads.
//! let mut config = handle.reloader().config();
//! config.publish_token = vec!["new".into(), "old".into()];
//! handle.reloader().reload(config).expect("valid");
//! handle.shutdown();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod admission;
pub mod auth;
pub mod bus;
mod busy_rate;
pub mod check;
pub mod client_js;
pub mod config;
pub mod config_file;
mod conn;
pub mod cors;
pub mod exposition;
pub mod health;
pub mod histogram;
pub mod history;
pub mod http;
pub mod hub;
pub mod intern;
pub mod live;
pub mod metrics;
mod monitor;
pub mod notices;
pub mod outbox;
pub mod polling;
pub mod publish;
mod rate;
mod room;
pub mod route;
pub mod sse;
pub mod sys;
pub mod throttle;
pub mod topics;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use mio::{Interest, Poll, Waker};

pub use config::{Config, ConfigError};
pub use hub::{Event, PublishError};
pub use metrics::{CloseReason, Stats};
pub use publish::{Class, Message};
pub use worker::Reloader;

use hub::Hub;
use worker::{Shared, Worker, ADMIN_LISTENER, LISTENER, WAKER};

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// Binding the listening address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The bus (`--bus`) could not be reached or used at start.
    #[error("--bus: {0}")]
    Bus(bus::BusError),
    /// Another OS resource (poll instance, waker, thread) could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being created.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Entry point of the embedding API.
pub struct Server;

impl Server {
    /// Binds one listener per loop, starts the loops and returns at once.
    pub fn start(config: Config) -> Result<Handle, StartError> {
        config.validate()?;
        let loops = config.loop_count();
        if let Some(max) = sys::listener::somaxconn() {
            if max < config.backlog {
                log::warn!(
                    "net.core.somaxconn={max} caps --backlog={}; see sysctl/99-sse-edge.conf",
                    config.backlog
                );
            }
        }
        let io_err = |what| move |source| StartError::Io { what, source };
        let mut max_fds = 0;
        let capacity = match sys::rlimits::raise_nofile() {
            Ok(fd) => {
                max_fds = fd.soft;
                // Each loop holds an epoll, a waker, a listener and a spare descriptor; the
                // admin listener's connections and short requests past the stream capacity
                // (`--request-reserve`) have their own budgets.
                let admin = if config.admin_listen.is_some() { worker::ADMIN_MAX_CONNECTIONS + 1 } else { 0 };
                let overhead = config.fd_reserve + 4 * loops + admin + config.request_reserve;
                let capacity = sys::rlimits::max_connections(fd, overhead, config.max_connections);
                log::info!(
                    "open-file limit: soft {} (was {}), hard {}; max connections {capacity} \
                     (--max-connections {}, --fd-reserve {}, --request-reserve {}, {} more for \
                     loops and admin)",
                    fd.soft,
                    fd.soft_before,
                    fd.hard,
                    config.max_connections,
                    config.fd_reserve,
                    config.request_reserve,
                    4 * loops + admin
                );
                capacity
            }
            Err(e) => {
                log::warn!("cannot read or raise RLIMIT_NOFILE ({e}); using --max-connections as is");
                if config.max_connections == 0 {
                    usize::MAX
                } else {
                    config.max_connections
                }
            }
        };
        if capacity == 0 {
            return Err(StartError::Config(ConfigError(
                "no file descriptors left for streams: raise the open-file limit or lower --fd-reserve \
                 or --request-reserve"
                    .into(),
            )));
        }
        let mut addr = config.listen;
        let mut parts = Vec::with_capacity(loops);
        let mut wakers = Vec::with_capacity(loops);
        for i in 0..loops {
            let poll = Poll::new().map_err(io_err("creating a poll instance"))?;
            let mut listener = sys::listener::bind_reuseport(addr, config.backlog, config.send_queue())
                .map_err(|source| StartError::Bind { addr, source })?;
            if i == 0 {
                // With port 0 the first bind picks the port; the other loops join it.
                addr = listener.local_addr().map_err(io_err("reading the bound address"))?;
            }
            poll.registry()
                .register(&mut listener, LISTENER, Interest::READABLE)
                .map_err(io_err("registering the listener"))?;
            wakers.push(Arc::new(Waker::new(poll.registry(), WAKER).map_err(io_err("creating a waker"))?));
            let admin = match (i, config.admin_listen) {
                (0, Some(admin_addr)) => {
                    let mut admin =
                        sys::listener::bind_reuseport(admin_addr, config.backlog, Default::default())
                            .map_err(|source| StartError::Bind { addr: admin_addr, source })?;
                    poll.registry()
                        .register(&mut admin, ADMIN_LISTENER, Interest::READABLE)
                        .map_err(io_err("registering the admin listener"))?;
                    Some(admin)
                }
                _ => None,
            };
            parts.push((poll, (listener, admin)));
        }
        let latest_interval = Duration::from_millis(config.latest_min_interval_ms);
        let live = live::Live::new(config.clone())?;
        let (hub, inboxes) =
            Hub::new(wakers, config.hub_queue_events, latest_interval, config.log_sample_every);
        hub.set_lag_budget(Duration::from_millis(config.max_delivery_lag_ms));
        let mut hub = hub;
        let bus = match &config.bus.url {
            Some(_) => {
                let bus = bus::Bus::open(&config.bus, bus_io_timeout(&config)).map_err(StartError::Bus)?;
                hub.start_at(bus.first_id(), bus.next_id());
                Some(Arc::new(bus))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            stats: (0..loops).map(|_| CachePadded::new(Default::default())).collect(),
            hub: Arc::new(hub),
            bus,
            stop: Default::default(),
            capacity,
            connections: Default::default(),
            streams: Default::default(),
            admin_connections: Default::default(),
            open_fds: sys::rlimits::open_fds().unwrap_or(0).into(),
            admission: admission::Admission::new(live.admission_limits()),
            live: live::LiveCell::new(live),
            draining: Default::default(),
            overload: Default::default(),
            loop_up: (0..loops).map(|_| std::sync::atomic::AtomicBool::new(true)).collect(),
            max_fds,
            start_time_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            status: Default::default(),
            config,
        });
        let cores = if shared.config.pin_threads { sys::affinity::allowed_cores() } else { Vec::new() };
        let mut threads = Vec::with_capacity(loops);
        let admin_addr = match &parts[0].1 .1 {
            Some(admin) => Some(admin.local_addr().map_err(io_err("reading the admin address"))?),
            None => None,
        };
        for (index, ((poll, listeners), inbox)) in parts.into_iter().zip(inboxes).enumerate() {
            let worker = Worker::new(index, shared.clone(), poll, listeners, inbox);
            let cores = cores.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sse-loop-{index}"))
                .spawn(move || {
                    sys::affinity::pin_loop(index, &cores);
                    worker.run();
                })
                .map_err(io_err("spawning a loop thread"))?;
            threads.push(thread);
        }
        let hub = shared.hub.clone();
        let mut helper_threads = Vec::new();
        let flusher = match shared.bus.clone() {
            Some(bus) => {
                bus.clear_warm();
                helper_threads.extend(bus.spawn(&hub).map_err(io_err("spawning the bus threads"))?);
                std::thread::Builder::new()
                    .name("sse-throttle".into())
                    .spawn(move || bus::run_throttle_flusher(&bus, &hub))
            }
            None => std::thread::Builder::new()
                .name("sse-throttle".into())
                .spawn(move || hub.run_throttle_flusher()),
        }
        .map_err(io_err("spawning the throttle thread"))?;
        let c = &shared.config;
        log::info!(
            "sse-edge listening on {addr}: {loops} loops, backlog {}, outbox {} events / {} bytes, heartbeat {} ms, stall timeout {} ms",
            c.backlog,
            c.outbox_max_events,
            c.outbox_max_bytes,
            c.heartbeat_ms,
            c.stall_timeout_ms
        );
        let watched = shared.clone();
        let monitor = std::thread::Builder::new()
            .name("sse-monitor".into())
            .spawn(move || monitor::run(watched))
            .map_err(io_err("spawning the monitor thread"))?;
        helper_threads.extend([flusher, monitor]);
        let loop_threads = threads;
        Ok(Handle { addr, admin_addr, shared, loop_threads, helper_threads })
    }
}

/// Socket timeout of the bus's publish connection: a publish hears from the bus within
/// about this long (bounded by `--publish-wait-timeout-ms`, at most 5 s).
fn bus_io_timeout(config: &Config) -> Duration {
    match config.publish_wait_timeout_ms {
        0 => Duration::from_secs(5),
        ms => Duration::from_millis(ms.clamp(100, 5_000)),
    }
}

/// A running server. Dropping it stops the server at once (no drain); call
/// [`Handle::shutdown`] for a graceful one.
pub struct Handle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    loop_threads: Vec<JoinHandle<()>>,
    helper_threads: Vec<JoinHandle<()>>,
}

impl Handle {
    /// The address the loops listen on (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when `--admin-listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// A cloneable, `Send` handle for publishing from this process.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            hub: self.shared.hub.clone(),
            bus: self.shared.bus.clone(),
            max_frame: self.shared.config.outbox_max_bytes,
        }
    }

    /// Counters and gauges summed over all loops.
    pub fn stats(&self) -> Stats {
        let hub = &self.shared.hub;
        let mut stats = Stats::sum(self.shared.stats.iter().map(|s| &**s), hub.queue_lengths());
        stats.published_by_class = hub.published();
        stats.hub_lags = hub.lags();
        if let Some(bus) = &self.shared.bus {
            stats.published_by_class = bus.published();
        }
        stats.throttled = hub.throttle.replaced();
        stats.capacity = self.shared.capacity as u64;
        stats.overloaded = self.shared.overload.load(Ordering::Acquire);
        stats
    }

    /// The configuration the server started with (a reload changes [`Reloader::config`]).
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A `Send + Clone` handle that applies a new configuration live ([`Reloader`]).
    pub fn reloader(&self) -> Reloader {
        Reloader { shared: self.shared.clone() }
    }

    /// A `Send + Clone` trigger for a graceful shutdown from another thread (a signal
    /// handler thread, say).
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger { shared: self.shared.clone() }
    }

    /// Test hook: makes loop `index` sleep for `d` (a stuck loop), through its channel.
    #[doc(hidden)]
    pub fn debug_block_loop(&self, index: usize, d: Duration) -> bool {
        self.shared.hub.send_control(index, hub::LoopMsg::Block(d))
    }

    /// Blocks until every loop has exited: after a drain started by a [`ShutdownTrigger`],
    /// or a fatal poll error. Then stops the helper threads.
    pub fn wait(mut self) {
        self.join_all();
    }

    /// Graceful shutdown: stop accepting, tell every stream `server-shutdown` with a spread
    /// `retry:`, flush within `--drain-timeout-ms`, close, and return.
    pub fn shutdown(mut self) {
        self.shutdown_trigger().begin();
        self.join_all();
    }

    fn join_all(&mut self) {
        for t in self.loop_threads.drain(..) {
            if t.join().is_err() {
                log::error!("a loop thread panicked");
            }
        }
        self.shared.hub.close();
        self.shared.stop.store(true, Ordering::Release);
        for t in self.helper_threads.drain(..) {
            if t.join().is_err() {
                log::error!("a helper thread panicked");
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.loop_threads.is_empty() {
            self.shared.stop.store(true, Ordering::Release);
            self.shared.hub.close();
            self.join_all();
        }
    }
}

/// Starts a graceful shutdown of the server it came from.
#[derive(Clone)]
pub struct ShutdownTrigger {
    shared: Arc<Shared>,
}

impl ShutdownTrigger {
    /// Begins the drain (idempotent); returns `false` if it had already begun.
    pub fn begin(&self) -> bool {
        let first = !self.shared.draining.swap(true, Ordering::AcqRel);
        if first {
            log::info!("shutdown: draining");
            self.shared.hub.wake_all();
        }
        first
    }
}

/// Publishes events into a running server from this process (no HTTP hop).
#[derive(Clone)]
pub struct Publisher {
    hub: Arc<Hub>,
    bus: Option<Arc<bus::Bus>>,
    max_frame: usize,
}

impl Publisher {
    fn prepare(&self, msgs: &[Message]) -> Result<Vec<publish::Prepared>, PublishError> {
        msgs.iter()
            .map(|m| publish::prepare(m, self.max_frame))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PublishError::Invalid(e.to_string()))
    }

    /// Publishes one event, or returns [`PublishError::Full`] at once when a loop's queue is
    /// full. `Ok(None)`: a `latest` event the throttle holds (it goes out when its window
    /// ends, unless a newer value for its key replaces it). With `--bus` it returns `Full`
    /// only when the in-flight window is full; otherwise it waits for the bus's answer (one
    /// round trip) and returns [`PublishError::Unavailable`] when the bus did not take it.
    pub fn try_publish(&self, msg: &Message) -> Result<Option<u64>, PublishError> {
        let (send, _) = self.hub.admit(self.prepare(std::slice::from_ref(msg))?);
        if send.is_empty() {
            return Ok(None);
        }
        if let Some(bus) = &self.bus {
            // The bus answers within its socket timeout; only a full window, or a loop behind
            // its lag budget, is `Full`.
            let submitted = if self.hub.lag_room() == 0 { None } else { bus.try_submit(&send, None) };
            let Some((ticket, _)) = submitted else {
                self.hub.throttle.abandon(&send);
                return Err(PublishError::Full);
            };
            let ids = loop {
                match ticket.wait(Duration::from_millis(100)) {
                    Some(outcome) => break outcome.map_err(PublishError::from)?,
                    None if self.hub.is_closed() => return Err(PublishError::Closed),
                    None => {}
                }
            };
            return Ok(ids.first().copied().filter(|&id| id != hub::SUPERSEDED));
        }
        match self.hub.try_publish(&send, None)?.first() {
            Some(&id) => Ok(Some(id).filter(|&id| id != hub::SUPERSEDED)),
            None => {
                self.hub.throttle.abandon(&send);
                Err(PublishError::Full)
            }
        }
    }

    /// Publishes one event, waiting (woken when a loop frees room, never spinning) while a
    /// loop's queue is full.
    /// `Ok(None)` as for [`Publisher::try_publish`].
    pub fn publish(&self, msg: &Message) -> Result<Option<u64>, PublishError> {
        Ok(self.publish_batch(std::slice::from_ref(msg))?[0])
    }

    /// Publishes events in order, waiting while queues are full. Validates all first: an
    /// invalid message fails the batch before any is sent. Ids in order, `None` for
    /// `latest` events the throttle holds.
    pub fn publish_batch(&self, msgs: &[Message]) -> Result<Vec<Option<u64>>, PublishError> {
        let (send, held) = self.hub.admit(self.prepare(msgs)?);
        let mut ids = Vec::with_capacity(send.len());
        if let Some(bus) = &self.bus {
            while self.hub.lag_room() == 0 && !self.hub.is_closed() {
                self.hub.wait_for_room();
            }
            if self.hub.is_closed() {
                return Err(PublishError::Closed);
            }
            ids = bus.publish_blocking(&self.hub, &send)?;
        }
        while ids.len() < send.len() {
            let got = self.hub.try_publish(&send[ids.len()..], None)?;
            if got.is_empty() {
                self.hub.wait_for_room();
            } else {
                ids.extend(got);
            }
        }
        let mut ids = ids.into_iter();
        let sequenced = |id: &u64| *id != hub::SUPERSEDED;
        Ok(held.into_iter().map(|h| if h { None } else { ids.next().filter(sequenced) }).collect())
    }
}
