//! Capacity from the kernel: the open-file limit decides how many sockets one process can
//! hold, so it decides `--max-connections`.

use std::io;

/// What the process may open, after raising the soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimits {
    /// Soft limit before start (what the service manager gave us).
    pub soft_before: u64,
    /// Soft limit now (raised to the hard limit when allowed).
    pub soft: u64,
    /// Hard limit (raising it needs CAP_SYS_RESOURCE; see systemd `LimitNOFILE=`).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and reports both.
pub fn raise_nofile() -> io::Result<FdLimits> {
    let (soft_before, hard) = rlimit::Resource::NOFILE.get()?;
    if soft_before < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
    }
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    Ok(FdLimits { soft_before, soft, hard })
}

/// Connections this process can hold: the soft limit minus `reserve`, capped by
/// `configured` when that is non-zero.
pub fn max_connections(limits: FdLimits, reserve: usize, configured: usize) -> usize {
    let by_fds = usize::try_from(limits.soft).unwrap_or(usize::MAX).saturating_sub(reserve);
    if configured == 0 {
        by_fds
    } else {
        configured.min(by_fds)
    }
}

/// File descriptors this process has open now (`/proc/self/fd`).
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// Resident memory in bytes (`/proc/self/statm`, second field, in pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// CPU time (user + system) in seconds, from `/proc/self/stat`.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks() as f64)
}

/// Assumed when `sysconf` cannot tell (the page size of x86-64 and most arm64 hosts).
const FALLBACK_PAGE_SIZE: u64 = 4096;

/// `sysconf(_SC_PAGESIZE)` in bytes, [`FALLBACK_PAGE_SIZE`] if unavailable.
pub fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => FALLBACK_PAGE_SIZE,
    }
}

/// The `mem` field (pages of all TCP sockets' buffers) of the `TCP:` line of a
/// `/proc/net/sockstat` text.
pub fn sockstat_tcp_mem_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).find(|w| w[0] == "mem")?[1].parse().ok()
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map_or(100, |v| v.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_limit_minus_reserve_capped_by_config() {
        let l = FdLimits { soft_before: 1024, soft: 20_000, hard: 20_000 };
        assert_eq!(max_connections(l, 64, 0), 19_936);
        assert_eq!(max_connections(l, 64, 100), 100);
        assert_eq!(max_connections(l, 64, 50_000), 19_936);
        assert_eq!(max_connections(FdLimits { soft: 10, ..l }, 64, 0), 0);
    }

    #[test]
    fn proc_readings_work_here() {
        let limits = raise_nofile().unwrap();
        assert_eq!(limits.soft, limits.hard);
        assert!(open_fds().unwrap() >= 3);
        assert!(resident_bytes().unwrap() > 0);
        assert!(cpu_seconds().unwrap() >= 0.0);
    }
}
