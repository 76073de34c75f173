//! `sse-edge check`: how many streams this host can hold with its current limits, which limit
//! binds first, and the exact lines to change.
//!
//! Two halves. [`read_host`] gathers [`Readings`] from `RLIMIT_NOFILE`, `/proc/sys`,
//! `/proc/meminfo`, `/proc/net/sockstat` and the process's memory cgroup, and changes nothing
//! (the server raises its soft open-file limit to the hard one at start, so the check counts
//! the hard limit). [`assess`] is pure: readings + [`Config`] → [`Report`] with one capacity
//! per limit, the smallest of them binding, and advice naming the line to change in
//! `sysctl/99-sse-edge.conf` or `systemd/sse-edge.service`; tests feed it synthetic hosts.
//!
//! System-wide readings (open files, available memory, TCP memory in use) count what runs
//! now: on a node already serving streams the capacity they give is the headroom left.

use std::fmt;
use std::io::Write as _;

use serde::Serialize;

use crate::sys::procfs::{cgroup_memory, meminfo_bytes, read_fields};
use crate::sys::rlimits::{self, FdLimits};
use crate::Config;

/// Kernel memory of one idle TCP stream, in bytes: `tcp_sock` (~2.3 KiB), file, inode and
/// dentry (~1 KiB), epoll item, slab overhead — 4–6 KiB measured; not in the process's RSS.
pub const KERNEL_BYTES_PER_STREAM: u64 = 5 * 1024;
/// sse-edge's own memory per idle stream, in bytes (the design bound; ~256 B measured).
pub const USER_BYTES_PER_STREAM: u64 = 512;
/// `LimitNOFILE=` in `systemd/sse-edge.service`: the least the advice asks for.
pub const UNIT_LIMIT_NOFILE: u64 = 1_048_576;
/// `fs.file-max` in `sysctl/99-sse-edge.conf`: the least the advice asks for.
pub const KIT_FILE_MAX: u64 = 8_388_608;
/// `net.core.somaxconn` and `net.ipv4.tcp_max_syn_backlog` in `sysctl/99-sse-edge.conf`.
pub const KIT_BACKLOG: u64 = 65_535;
/// Exit status of `sse-edge check` when a non-zero `--max-connections` cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 2;

const SYSCTL_FILE: &str = "sysctl/99-sse-edge.conf";
const UNIT_FILE: &str = "systemd/sse-edge.service";

/// What the host allows, as read; `None` where a reading was not available.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Readings {
    /// Soft `RLIMIT_NOFILE` of this process.
    pub nofile_soft: Option<u64>,
    /// Hard `RLIMIT_NOFILE`: what the server's soft limit becomes at start.
    pub nofile_hard: Option<u64>,
    /// `fs.file-max`: open files allowed system-wide.
    pub file_max: Option<u64>,
    /// `fs.nr_open`: the ceiling for any process's `RLIMIT_NOFILE`.
    pub nr_open: Option<u64>,
    /// Files open system-wide now (`fs.file-nr`, first field).
    pub files_in_use: Option<u64>,
    /// `net.core.somaxconn`: the cap on every listen backlog.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`: half-open connections per listener.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.ipv4.ip_local_port_range`: ports for outgoing connections (proxies, load tools).
    pub ip_local_port_range: Option<[u64; 2]>,
    /// `net.ipv4.tcp_mem` (low, pressure, high), in pages.
    pub tcp_mem_pages: Option<[u64; 3]>,
    /// TCP buffer memory in use now, in pages (`/proc/net/sockstat`).
    pub tcp_mem_in_use_pages: Option<u64>,
    /// `net.ipv4.tcp_wmem` (min, default, max), in bytes.
    pub tcp_wmem: Option<[u64; 3]>,
    /// `net.ipv4.tcp_rmem` (min, default, max), in bytes.
    pub tcp_rmem: Option<[u64; 3]>,
    /// `MemTotal`, in bytes.
    pub mem_total_bytes: Option<u64>,
    /// `MemAvailable`, in bytes.
    pub mem_available_bytes: Option<u64>,
    /// The tightest memory cgroup limit over this process's cgroup and its parents, when
    /// below `MemTotal` (systemd `MemoryMax=`, a container limit).
    pub cgroup_memory_limit_bytes: Option<u64>,
    /// Memory charged to that cgroup now.
    pub cgroup_memory_usage_bytes: Option<u64>,
    /// Cores this process may run on.
    pub cores: u64,
    /// Page size in bytes (the unit of `tcp_mem`).
    pub page_size: u64,
}

/// A limit that caps the number of streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The process's open-file limit (`RLIMIT_NOFILE`, systemd `LimitNOFILE=`).
    OpenFiles,
    /// The system-wide open-file limit (`fs.file-max`).
    FileMax,
    /// TCP buffer memory (`net.ipv4.tcp_mem`) with one page in flight on every stream.
    TcpMem,
    /// Available memory (host or cgroup) at the idle per-stream cost.
    Memory,
}

impl Limit {
    /// A short human name.
    pub fn name(self) -> &'static str {
        match self {
            Limit::OpenFiles => "open files (RLIMIT_NOFILE)",
            Limit::FileMax => "fs.file-max",
            Limit::TcpMem => "net.ipv4.tcp_mem",
            Limit::Memory => "memory",
        }
    }
}

/// The streams one limit allows, and how that number came about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bound {
    /// The limit.
    pub limit: Limit,
    /// Streams it allows.
    pub streams: u64,
    /// The arithmetic, for humans.
    pub how: String,
}

/// One line to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// The setting (`LimitNOFILE`, `net.ipv4.tcp_mem`, ...).
    pub setting: String,
    /// The shipped file that holds it (empty when no file does).
    pub file: String,
    /// The exact line to put there.
    pub line: String,
    /// Why.
    pub why: String,
}

/// The outcome of a check: readings, capacity, binding limit, advice.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was read.
    pub readings: Readings,
    /// Assumed kernel bytes per idle stream ([`KERNEL_BYTES_PER_STREAM`]).
    pub kernel_bytes_per_stream: u64,
    /// Assumed sse-edge bytes per idle stream ([`USER_BYTES_PER_STREAM`]).
    pub user_bytes_per_stream: u64,
    /// `--fd-reserve`.
    pub fd_reserve: u64,
    /// `--request-reserve`: connections for short requests beyond the stream capacity.
    pub request_reserve: u64,
    /// Memory set aside for history (`--history-max-total-bytes`).
    pub history_reserved_bytes: u64,
    /// `--max-connections` (0: derived from the open-file limit).
    pub max_connections: u64,
    /// What the server would set as its connection limit at start.
    pub server_max_connections: Option<u64>,
    /// Streams each readable limit allows, lowest first.
    pub bounds: Vec<Bound>,
    /// Streams this host can hold: the lowest bound (0 when nothing could be read).
    pub capacity: u64,
    /// The limit that binds first.
    pub binding: Option<Limit>,
    /// The streams the advice plans for: `--max-connections`, or else what memory holds up
    /// to what the shipped `LimitNOFILE=` allows.
    pub target: u64,
    /// Whether a non-zero `--max-connections` fits in the capacity.
    pub reachable: bool,
    /// Lines to change, the binding limit first.
    pub advice: Vec<Advice>,
    /// Observations that do not limit sse-edge itself.
    pub notes: Vec<String>,
}

impl Report {
    /// 0, or [`EXIT_UNREACHABLE`] when `--max-connections` cannot be reached.
    pub fn exit_code(&self) -> u8 {
        if self.reachable {
            0
        } else {
            EXIT_UNREACHABLE
        }
    }
}

/// Reads the host's limits. Changes nothing; unreadable values stay `None`.
pub fn read_host() -> Readings {
    let (nofile_soft, nofile_hard) = match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => (Some(soft), Some(hard)),
        Err(_) => (None, None),
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_bytes = meminfo_bytes(&meminfo, "MemTotal");
    let cgroup = cgroup_memory().filter(|&(limit, _)| mem_total_bytes.map_or(true, |t| limit < t));
    Readings {
        nofile_soft,
        nofile_hard,
        file_max: read_fields::<1>("/proc/sys/fs/file-max").map(|[v]| v),
        nr_open: read_fields::<1>("/proc/sys/fs/nr_open").map(|[v]| v),
        files_in_use: read_fields::<3>("/proc/sys/fs/file-nr")
            .map(|[used, free, _]| used.saturating_sub(free)),
        somaxconn: read_fields::<1>("/proc/sys/net/core/somaxconn").map(|[v]| v),
        tcp_max_syn_backlog: read_fields::<1>("/proc/sys/net/ipv4/tcp_max_syn_backlog").map(|[v]| v),
        ip_local_port_range: read_fields("/proc/sys/net/ipv4/ip_local_port_range"),
        tcp_mem_pages: read_fields("/proc/sys/net/ipv4/tcp_mem"),
        tcp_mem_in_use_pages: std::fs::read_to_string("/proc/net/sockstat")
            .ok()
            .and_then(|s| crate::sys::rlimits::sockstat_tcp_mem_pages(&s)),
        tcp_wmem: read_fields("/proc/sys/net/ipv4/tcp_wmem"),
        tcp_rmem: read_fields("/proc/sys/net/ipv4/tcp_rmem"),
        mem_total_bytes,
        mem_available_bytes: meminfo_bytes(&meminfo, "MemAvailable"),
        cgroup_memory_limit_bytes: cgroup.map(|(limit, _)| limit),
        cgroup_memory_usage_bytes: cgroup.and_then(|(_, usage)| usage),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        page_size: crate::sys::rlimits::page_size(),
    }
}

/// Computes capacity, binding limit and advice from `r` for the server `config` describes.
pub fn assess(r: &Readings, config: &Config) -> Report {
    // Descriptors no stream can take: `--fd-reserve`, and the connections kept for short
    // requests past the stream capacity (`--request-reserve`).
    let reserve = config.fd_reserve.saturating_add(config.request_reserve) as u64;
    let history = config.history_max_total_bytes as u64;
    let per_stream = KERNEL_BYTES_PER_STREAM + USER_BYTES_PER_STREAM;
    let page = r.page_size.max(1);
    let per_socket_pages = tcp_pages_per_socket(r);
    let mut bounds = Vec::new();
    if let Some(hard) = r.nofile_hard {
        let soft = r.nofile_soft.map_or("?".into(), |s| s.to_string());
        let how = format!(
            "hard limit {hard} (soft {soft} is raised to it at start) − --fd-reserve {} − \
             --request-reserve {}",
            config.fd_reserve, config.request_reserve
        );
        bounds.push(Bound { limit: Limit::OpenFiles, streams: hard.saturating_sub(reserve), how });
    }
    if let (Some(max), Some(used)) = (r.file_max, r.files_in_use) {
        let how = format!("{max} − {used} files open on the host now");
        bounds.push(Bound { limit: Limit::FileMax, streams: max.saturating_sub(used), how });
    }
    if let Some([_, _, high]) = r.tcp_mem_pages {
        let used = r.tcp_mem_in_use_pages.unwrap_or(0);
        let how = format!(
            "high {high} pages ({}) − {used} in use, {per_socket_pages} page(s) per stream with an event \
             in flight (tcp_wmem min)",
            human_bytes(high.saturating_mul(page))
        );
        bounds.push(Bound {
            limit: Limit::TcpMem,
            streams: high.saturating_sub(used) / per_socket_pages,
            how,
        });
    }
    if let Some(avail) = available_memory(r) {
        let how = format!(
            "{} available − {} history bound (--history-max-total-bytes), {per_stream} B per idle stream \
             (kernel ~{KERNEL_BYTES_PER_STREAM} + sse-edge ~{USER_BYTES_PER_STREAM})",
            human_bytes(avail),
            human_bytes(history)
        );
        bounds.push(Bound { limit: Limit::Memory, streams: avail.saturating_sub(history) / per_stream, how });
    }
    bounds.sort_by_key(|b| b.streams);
    let capacity = bounds.first().map_or(0, |b| b.streams);
    let configured = config.max_connections as u64;
    let by_memory = bounds.iter().find(|b| b.limit == Limit::Memory).map(|b| b.streams);
    let target = match configured {
        0 => by_memory.unwrap_or(u64::MAX).min(UNIT_LIMIT_NOFILE.saturating_sub(reserve)),
        n => n,
    };
    let server_max_connections = r.nofile_hard.map(|hard| {
        let fd = FdLimits { soft_before: r.nofile_soft.unwrap_or(hard), soft: hard, hard };
        rlimits::max_connections(fd, reserve as usize, config.max_connections) as u64
    });
    let mut advice = Vec::new();
    for b in bounds.iter().filter(|b| b.streams < target) {
        advise_limit(r, b, target, reserve, history, &mut advice);
    }
    advise_backlog(r, u64::from(config.backlog), &mut advice);
    let mut notes = Vec::new();
    if let Some([lo, hi]) = r.ip_local_port_range {
        notes.push(format!(
            "ip_local_port_range {lo}–{hi} ({} ports) does not limit sse-edge (it only accepts) but \
             a proxy in front or a load generator here: that many streams per source address",
            hi.saturating_sub(lo) + 1
        ));
    }
    if let Some(server) = server_max_connections.filter(|&m| m > capacity && configured == 0) {
        notes.push(format!(
            "the server would admit {server} connections, more than this host holds: set \
             --max-connections {capacity} so clients past it get 503 instead of exhausting the host"
        ));
    }
    notes.push(format!(
        "per-stream memory assumes idle streams; queued events come on top: at most --outbox-max-bytes \
         ({}) for a client that has fallen behind, and for one that keeps up what the write pass queues \
         for it, up to {} (bounded in time by --max-delivery-lag-ms; with it 0, --outbox-max-bytes)",
        human_bytes(config.outbox_max_bytes as u64),
        human_bytes(config.outbox_max_bytes.max(crate::config::DEFAULT_OUTBOX_MAX_BYTES) as u64)
    ));
    notes.push(history_note(config));
    Report {
        readings: r.clone(),
        kernel_bytes_per_stream: KERNEL_BYTES_PER_STREAM,
        user_bytes_per_stream: USER_BYTES_PER_STREAM,
        fd_reserve: config.fd_reserve as u64,
        request_reserve: config.request_reserve as u64,
        history_reserved_bytes: history,
        max_connections: configured,
        server_max_connections,
        binding: bounds.first().map(|b| b.limit),
        bounds,
        capacity,
        target,
        reachable: configured == 0 || configured <= capacity,
        advice,
        notes,
    }
}

/// Frame of a typical small event planned for in [`history_note`]: `id:`, 100 bytes of
/// data, an event name.
const TYPICAL_FRAME_BYTES: usize = 150;

/// What the history bound holds, with the same per-event cost the server counts.
fn history_note(config: &Config) -> String {
    let loops = config.loop_count();
    let per_event = crate::history::event_bytes_estimate(TYPICAL_FRAME_BYTES, loops);
    format!(
        "history holds at most --history-max-total-bytes ({}) in memory: about {} events of \
         {TYPICAL_FRAME_BYTES} B frames at {per_event} B each (frame, shared event and a slot \
         in each of {loops} loops)",
        human_bytes(config.history_max_total_bytes as u64),
        config.history_max_total_bytes / per_event
    )
}

/// Adds the lines that lift bound `b` to `target` streams.
fn advise_limit(r: &Readings, b: &Bound, target: u64, reserve: u64, history: u64, out: &mut Vec<Advice>) {
    let allows = format!("{} allows {} streams, {target} wanted", b.limit.name(), b.streams);
    match b.limit {
        Limit::OpenFiles => {
            let value = target.saturating_add(reserve).max(UNIT_LIMIT_NOFILE);
            out.push(Advice {
                setting: "LimitNOFILE".into(),
                file: UNIT_FILE.into(),
                line: format!("LimitNOFILE={value}"),
                why: format!(
                    "{allows}; outside systemd run `ulimit -n {value}` as root before starting, or set \
                     `nofile {value}` in /etc/security/limits.conf"
                ),
            });
            if let Some(nr_open) = r.nr_open.filter(|&n| n < value) {
                out.push(Advice {
                    setting: "fs.nr_open".into(),
                    file: SYSCTL_FILE.into(),
                    line: format!("fs.nr_open = {}", round_up(value, 1 << 20)),
                    why: format!("fs.nr_open {nr_open} caps every process's open-file limit below {value}"),
                });
            }
        }
        Limit::FileMax => {
            let need = r.files_in_use.unwrap_or(0).saturating_add(target).saturating_add(reserve);
            out.push(Advice {
                setting: "fs.file-max".into(),
                file: SYSCTL_FILE.into(),
                line: format!("fs.file-max = {}", round_up(need, 1 << 20).max(KIT_FILE_MAX)),
                why: allows,
            });
        }
        Limit::TcpMem => {
            let pressure = round_up(target.saturating_mul(tcp_pages_per_socket(r)), 1 << 16);
            let high = pressure.saturating_mul(3) / 2;
            let mut why = format!("{allows}; in pages of {} B", r.page_size);
            if r.mem_total_bytes.is_some_and(|t| high.saturating_mul(r.page_size) > t / 2) {
                why.push_str(": that is over half of this host's memory — plan fewer streams per host");
            }
            out.push(Advice {
                setting: "net.ipv4.tcp_mem".into(),
                file: SYSCTL_FILE.into(),
                line: format!("net.ipv4.tcp_mem = {} {pressure} {high}", pressure * 3 / 4),
                why,
            });
        }
        Limit::Memory => {
            let per_stream = KERNEL_BYTES_PER_STREAM + USER_BYTES_PER_STREAM;
            let need = target.saturating_mul(per_stream).saturating_add(history);
            let by_cgroup =
                matches!((available_memory(r), r.mem_available_bytes), (Some(a), Some(h)) if a < h);
            let (setting, file, line) = if by_cgroup {
                let gib = need.div_ceil(1 << 30) + 1;
                ("MemoryMax", UNIT_FILE, format!("MemoryMax={gib}G"))
            } else {
                (
                    "memory",
                    "",
                    format!("add memory or lower --history-max-total-bytes: {} needed", human_bytes(need)),
                )
            };
            out.push(Advice { setting: setting.into(), file: file.into(), line, why: allows });
        }
    }
}

/// Adds lines for listen queues shorter than `--backlog`.
fn advise_backlog(r: &Readings, backlog: u64, out: &mut Vec<Advice>) {
    for (setting, value, effect) in [
        ("net.core.somaxconn", r.somaxconn, "caps the accept queue"),
        ("net.ipv4.tcp_max_syn_backlog", r.tcp_max_syn_backlog, "caps half-open handshakes"),
    ] {
        if let Some(v) = value.filter(|&v| v < backlog) {
            out.push(Advice {
                setting: setting.into(),
                file: SYSCTL_FILE.into(),
                line: format!("{setting} = {}", backlog.max(KIT_BACKLOG)),
                why: format!(
                    "{setting} {v} {effect} below --backlog {backlog}: reconnect storms overflow it"
                ),
            });
        }
    }
}

/// Pages every socket keeps under memory pressure: `tcp_wmem` min, at least one page.
fn tcp_pages_per_socket(r: &Readings) -> u64 {
    let page = r.page_size.max(1);
    r.tcp_wmem.map_or(1, |[min, _, _]| min.div_ceil(page)).max(1)
}

/// Memory left for streams: `MemAvailable`, or the cgroup's headroom when that is smaller.
fn available_memory(r: &Readings) -> Option<u64> {
    let host = r.mem_available_bytes?;
    Some(match r.cgroup_memory_limit_bytes {
        Some(limit) => host.min(limit.saturating_sub(r.cgroup_memory_usage_bytes.unwrap_or(0))),
        None => host,
    })
}

/// `sse-edge check`: reads the host, prints the report (JSON with `json`), returns the exit
/// status.
pub fn run(config: &Config, json: bool) -> u8 {
    if let Err(e) = config.validate() {
        eprintln!("sse-edge check: invalid configuration: {e}");
        return 1;
    }
    let report = assess(&read_host(), config);
    let text = match json {
        true => serde_json::to_string_pretty(&report).map(|s| s + "\n").map_err(std::io::Error::from),
        false => Ok(report.to_string()),
    };
    match text.and_then(|t| std::io::stdout().lock().write_all(t.as_bytes())) {
        Ok(()) => report.exit_code(),
        Err(e) => {
            eprintln!("sse-edge check: writing the report: {e}");
            1
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.readings;
        let opt = |v: Option<u64>| v.map_or("unreadable".to_string(), |v| v.to_string());
        let list = |v: Option<&[u64]>| {
            v.map_or("unreadable".into(), |v| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" "))
        };
        let bytes = |v: Option<u64>| v.map_or("unreadable".to_string(), human_bytes);
        let cgroup = r.cgroup_memory_limit_bytes.map_or("no cgroup limit".to_string(), |l| {
            format!("cgroup limit {}, {} used", human_bytes(l), bytes(r.cgroup_memory_usage_bytes))
        });
        writeln!(f, "sse-edge check: stream capacity of this host (nothing was changed)\n\nreadings")?;
        for (k, v) in [
            ("RLIMIT_NOFILE", format!("soft {}, hard {}", opt(r.nofile_soft), opt(r.nofile_hard))),
            ("fs.file-max", format!("{} ({} open now)", opt(r.file_max), opt(r.files_in_use))),
            ("fs.nr_open", opt(r.nr_open)),
            ("net.core.somaxconn", opt(r.somaxconn)),
            ("net.ipv4.tcp_max_syn_backlog", opt(r.tcp_max_syn_backlog)),
            ("net.ipv4.ip_local_port_range", list(r.ip_local_port_range.as_ref().map(|v| &v[..]))),
            ("net.ipv4.tcp_mem (pages)", list(r.tcp_mem_pages.as_ref().map(|v| &v[..]))),
            ("TCP memory in use (pages)", opt(r.tcp_mem_in_use_pages)),
            ("net.ipv4.tcp_wmem", list(r.tcp_wmem.as_ref().map(|v| &v[..]))),
            ("net.ipv4.tcp_rmem", list(r.tcp_rmem.as_ref().map(|v| &v[..]))),
            (
                "memory",
                format!(
                    "{} total, {} available, {cgroup}",
                    bytes(r.mem_total_bytes),
                    bytes(r.mem_available_bytes)
                ),
            ),
            ("cores", format!("{} (page size {} B)", r.cores, r.page_size)),
        ] {
            writeln!(f, "  {k:<30} {v}")?;
        }
        writeln!(f, "\nstreams each limit allows")?;
        for (i, b) in self.bounds.iter().enumerate() {
            let mark = if i == 0 { "  <- binds first" } else { "" };
            writeln!(f, "  {:<28} {:>12}  {}{mark}", b.limit.name(), b.streams, b.how)?;
        }
        match self.binding {
            Some(l) => writeln!(f, "\ncapacity: {} streams; binding limit: {}", self.capacity, l.name()),
            None => writeln!(f, "\ncapacity: unknown (no limit could be read)"),
        }?;
        writeln!(
            f,
            "the server would start with max connections {} (--max-connections {}, --fd-reserve {}, \
             --request-reserve {})",
            opt(self.server_max_connections),
            self.max_connections,
            self.fd_reserve,
            self.request_reserve
        )?;
        if !self.reachable {
            writeln!(
                f,
                "--max-connections {} cannot be reached on this host (capacity {}): exit status {}",
                self.max_connections, self.capacity, EXIT_UNREACHABLE
            )?;
        }
        if self.advice.is_empty() {
            writeln!(f, "\nnothing to change for {} streams", self.target)?;
        } else {
            writeln!(f, "\nto hold {} streams, change:", self.target)?;
            for a in &self.advice {
                let file = if a.file.is_empty() { "-" } else { &a.file };
                writeln!(f, "  {file:<26} {}\n  {:<26}   ({})", a.line, "", a.why)?;
            }
            writeln!(
                f,
                "then: cp {SYSCTL_FILE} /etc/sysctl.d/ && sysctl --system; for the unit: \
                 systemctl daemon-reload && systemctl restart sse-edge"
            )?;
        }
        writeln!(f, "\nnotes")?;
        self.notes.iter().try_for_each(|n| writeln!(f, "  - {n}"))
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to).saturating_mul(to)
}

fn human_bytes(b: u64) -> String {
    let (v, unit) = match b {
        0..=1023 => return format!("{b} B"),
        1024..=0xF_FFFF => (b as f64 / 1024.0, "KiB"),
        0x10_0000..=0x3FFF_FFFF => (b as f64 / f64::from(1 << 20), "MiB"),
        _ => (b as f64 / f64::from(1 << 30), "GiB"),
    };
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let sockstat = "sockets: used 5\nTCP: inuse 3 orphan 0 tw 1 alloc 4 mem 17\nUDP: inuse 0 mem 0\n";
        assert_eq!(crate::sys::rlimits::sockstat_tcp_mem_pages(sockstat), Some(17));
        assert_eq!(human_bytes(1536), "1.5 KiB");
        let config = Config { threads: Some(2), history_max_total_bytes: 1 << 20, ..Config::default() };
        let per_event = crate::history::event_bytes_estimate(TYPICAL_FRAME_BYTES, 2);
        assert!(per_event > TYPICAL_FRAME_BYTES + 100, "{per_event}");
        let note = history_note(&config);
        assert!(note.contains(&format!("about {} events", (1 << 20) / per_event)), "{note}");
    }
}
