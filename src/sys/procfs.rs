//! Numbers from `/proc` and cgroup files, for `sse-edge check`. Every reader returns `None`
//! when a file is missing or not in the expected form; nothing here writes.

use std::path::{Path, PathBuf};

/// Reads `N` whitespace-separated numbers from a `/proc` file.
pub fn read_fields<const N: usize>(path: &str) -> Option<[u64; N]> {
    parse_fields(&std::fs::read_to_string(path).ok()?)
}

/// Parses `N` whitespace-separated numbers.
pub fn parse_fields<const N: usize>(text: &str) -> Option<[u64; N]> {
    let mut out = [0; N];
    let mut words = text.split_whitespace();
    for slot in &mut out {
        *slot = words.next()?.parse().ok()?;
    }
    Some(out)
}

/// A `/proc/meminfo` entry (`Key:   123 kB`) in bytes.
pub fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.split(':').next() == Some(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The tightest memory limit over this process's cgroup and its ancestors (v2 `memory.max`
/// or v1 `memory.limit_in_bytes`), with that cgroup's usage. `max` reads as no limit.
pub fn cgroup_memory() -> Option<(u64, Option<u64>)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<(u64, Option<u64>)> = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (base, limit_file, usage_file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes")
        } else {
            continue;
        };
        let mut dir = PathBuf::from(format!("{base}{path}"));
        loop {
            let limit = read_fields::<1>(&dir.join(limit_file).to_string_lossy()).map(|[v]| v);
            if let Some(limit) = limit.filter(|&l| best.map_or(true, |(b, _)| l < b)) {
                let usage = read_fields::<1>(&dir.join(usage_file).to_string_lossy()).map(|[v]| v);
                best = Some((limit, usage));
            }
            if dir.as_path() == Path::new(base) || !dir.pop() {
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(parse_fields::<3>("40423\t0\t2466177\n"), Some([40423, 0, 2466177]));
        assert_eq!(parse_fields::<2>("32768\t60999\n"), Some([32768, 60999]));
        assert_eq!(parse_fields::<3>("1 2\n"), None);
        let meminfo = "MemTotal:       24684092 kB\nMemAvailable:   23996792 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemAvailable"), Some(23_996_792 * 1024));
        assert_eq!(meminfo_bytes(meminfo, "MemFree"), None);
    }
}
