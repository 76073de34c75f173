//! Server process sampling from `/proc`: resident memory and CPU time, plus the host-wide
//! kernel TCP buffer memory from `/proc/net/sockstat` (where a stalled stream's backlog sits when
//! the server leaves it in the socket buffers: not in any process's RSS).
//!
//! Contract: [`sample`] reads `/proc/PID/status` (`VmRSS`) and `/proc/PID/stat` (`utime` +
//! `stime`, converted from clock ticks with `sysconf(_SC_CLK_TCK)`) of one process at one
//! instant; a process that is gone or unreadable is an `Err`, never a panic. Parsers are split
//! out as pure functions over the file text so they are tested without a process.

use std::io;

use sse_edge::sys::rlimits::{page_size, sockstat_tcp_mem_pages};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One process at one instant.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcSample {
    /// Process id.
    pub pid: u32,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
}

/// Samples `pid` now.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = |what: &str| {
        io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/{what}: unexpected format"))
    };
    let rss_bytes = vm_rss_bytes(&status).ok_or_else(|| bad("status"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| bad("stat"))?;
    Ok(ProcSample { pid, rss_bytes, cpu_seconds: ticks as f64 / clock_ticks_per_second() as f64 })
}

/// Samples every pid; failures are logged and left out.
pub fn sample_all(pids: &[u32]) -> Vec<ProcSample> {
    pids.iter()
        .filter_map(|&pid| match sample(pid) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("cannot sample server pid {pid}: {e}");
                None
            }
        })
        .collect()
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
pub fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

/// `utime + stime` of a `/proc/PID/stat` text, in clock ticks.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces or ')'; fields
    // after the last ')' start at field 3 (state); utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)`, 100 if unavailable.
pub fn clock_ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as u64,
        _ => 100,
    }
}

/// CPU seconds used by this process plus its reaped children (the worker processes).
pub fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    use nix::sys::time::TimeValLike;
    [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN]
        .into_iter()
        .filter_map(|who| getrusage(who).ok())
        .map(|u| (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 / 1e6)
        .sum()
}

/// Sums several processes' samples (several server processes sharing one port).
pub fn total(samples: &[ProcSample]) -> ProcSample {
    samples.iter().fold(ProcSample::default(), |acc, s| ProcSample {
        pid: 0,
        rss_bytes: acc.rss_bytes + s.rss_bytes,
        cpu_seconds: acc.cpu_seconds + s.cpu_seconds,
    })
}

/// Host-wide kernel TCP buffer memory (`TCP: ... mem P` of `/proc/net/sockstat`), bytes.
pub fn tcp_mem_bytes() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat")?;
    let pages = sockstat_tcp_mem_pages(&text).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "/proc/net/sockstat: no `TCP: ... mem N` line")
    })?;
    Ok(pages * page_size())
}

/// Host-wide kernel TCP buffer memory over a run, bytes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct TcpMem {
    /// Before connecting.
    pub start: u64,
    /// Once every stream was ready (or given up on).
    pub ready: u64,
    /// At the end.
    pub end: u64,
    /// Highest of "ready", "end" and the samples taken (at most once a second) between them.
    pub peak: u64,
}

/// Samples [`tcp_mem_bytes`] at start / ready / end and, throttled, in between for the peak.
#[derive(Debug, Default)]
pub struct TcpMemSampler {
    start: Option<u64>,
    ready: Option<u64>,
    peak: Option<u64>,
    last: Option<Instant>,
}

impl TcpMemSampler {
    /// How often [`TcpMemSampler::tick`] actually reads the file.
    const EVERY: Duration = Duration::from_secs(1);

    fn read() -> Option<u64> {
        tcp_mem_bytes().map_err(|e| log::debug!("kernel TCP memory: {e}")).ok()
    }

    /// Takes the "start" sample.
    pub fn start() -> TcpMemSampler {
        let start = tcp_mem_bytes().map_err(|e| log::warn!("not sampling kernel TCP memory: {e}")).ok();
        TcpMemSampler { start, ..TcpMemSampler::default() }
    }

    /// Takes the "ready" sample; the peak is tracked from here on.
    pub fn ready(&mut self) {
        if self.start.is_some() {
            self.ready = Self::read();
            self.peak = self.ready;
            self.last = Some(Instant::now());
        }
    }

    /// Called on every coordinator tick; samples at most once per [`Self::EVERY`].
    pub fn tick(&mut self) {
        let Some(last) = self.last else { return };
        if last.elapsed() >= Self::EVERY {
            self.last = Some(Instant::now());
            if let Some(v) = Self::read() {
                self.peak = self.peak.max(Some(v));
            }
        }
    }

    /// Takes the "end" sample; `None` when any fixed sample is missing.
    pub fn finish(self) -> Option<TcpMem> {
        let (start, ready) = (self.start?, self.ready?);
        let end = Self::read()?;
        Some(TcpMem { start, ready, end, peak: self.peak.unwrap_or(ready).max(end) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tsse-edge\nVmPeak:\t  1000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_bytes(status), Some(5120 * 1024));
        assert_eq!(vm_rss_bytes("Name: x\n"), None);
        let stat = "4242 (sse edge) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_bytes > 0);
        assert!(s.cpu_seconds >= 0.0);
        assert!(clock_ticks_per_second() > 0);
        assert!(sample(u32::MAX).is_err());
        assert!(own_cpu_seconds() >= 0.0);
    }

    #[test]
    fn parses_sockstat() {
        let text = "sockets: used 312\nTCP: inuse 12 orphan 0 tw 3 alloc 15 mem 42\n\
                    UDP: inuse 4 mem 7\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n";
        assert_eq!(sockstat_tcp_mem_pages(text), Some(42));
        assert_eq!(sockstat_tcp_mem_pages("UDP: inuse 4 mem 7\n"), None);
        assert_eq!(sockstat_tcp_mem_pages("TCP: inuse 1 alloc 2\n"), None);
        assert!(page_size() > 0);
        if std::path::Path::new("/proc/net/sockstat").exists() {
            assert!(tcp_mem_bytes().is_ok());
        }
    }
}
