//! The run report: derived figures, JSON and Markdown.
//!
//! Contract: [`Report`] is built from merged results only (never from live counters), so the
//! JSON file, the Markdown file and stdout always agree. Derived figures are defined here once:
//! - deliveries/s = stamped deliveries / (last delivery − first delivery, wall clock);
//! - expected deliveries = Σ over ready reading streams of the publishes accepted by the
//!   stream's server address (accepted × streams with one address);
//! - RSS per stream = (server RSS after all streams were ready − RSS before connecting) / ready
//!   streams, summed over every `--server-pid`;
//! - CPU per million deliveries = server CPU seconds from "all ready" to the end of the drain,
//!   divided by deliveries, × 10⁶.

use std::fmt::Write as _;

use serde::Serialize;

use crate::procstat::{total, ProcSample, TcpMem};
use crate::stats::{per_second, Errors, Hist, PubResult, SubResult};

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Ms {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Ms {
    /// From a microsecond histogram.
    pub fn of(h: &Hist) -> Ms {
        let p = h.percentiles();
        let ms = |us: u64| us as f64 / 1000.0;
        Ms {
            count: p.count,
            mean: p.mean / 1000.0,
            p50: ms(p.p50),
            p90: ms(p.p90),
            p99: ms(p.p99),
            p999: ms(p.p999),
            max: ms(p.max),
        }
    }
}

/// Subscriber figures.
#[derive(Debug, Serialize)]
pub struct SubSection {
    /// Connect start → TCP established.
    pub connect_ms: Ms,
    /// Connect start → prelude.
    pub ttfb_ms: Ms,
    /// Publish timestamp → receipt.
    pub latency_ms: Ms,
    /// The publish's `2xx` answer → receipt (publisher in this process only).
    pub accept_latency_ms: Ms,
    /// See the module doc.
    pub deliveries_per_s: f64,
    /// Accepted publishes × ready reading streams (per server address); `None` without a
    /// publisher in this run.
    pub expected_deliveries: Option<u64>,
    /// Mean events missed per reading stream.
    pub mean_missing_per_stream: f64,
    /// Everything measured, histograms as `[value_us, count]` buckets.
    pub raw: SubResult,
}

/// Publisher figures.
#[derive(Debug, Serialize)]
pub struct PubSection {
    /// Scheduled rate.
    pub target_rate: f64,
    /// Rate of sends achieved.
    pub send_rate: f64,
    /// Rate of accepted events over the whole run.
    pub accept_rate: f64,
    /// Request → answer.
    pub latency_ms: Ms,
    /// Everything measured.
    pub raw: PubResult,
}

/// Server process figures.
#[derive(Debug, Serialize)]
pub struct ServerSection {
    /// Samples before connecting.
    pub start: Vec<ProcSample>,
    /// Samples once every stream was ready (or given up on).
    pub ready: Vec<ProcSample>,
    /// Samples at the end.
    pub end: Vec<ProcSample>,
    /// See the module doc.
    pub rss_per_stream_bytes: Option<f64>,
    /// RSS growth from "ready" to the end (queued frames, histories), bytes.
    pub rss_growth_during_run_bytes: i64,
    /// Server CPU seconds from "ready" to the end.
    pub cpu_seconds_during_run: f64,
    /// See the module doc.
    pub cpu_s_per_million_deliveries: Option<f64>,
    /// Host-wide kernel TCP buffer memory (`/proc/net/sockstat`), if readable: where a stalled
    /// stream's backlog sits when it is not in the server's RSS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_tcp_mem_bytes: Option<TcpMem>,
    /// Kernel TCP memory peak during the run minus its value at "ready", bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_tcp_mem_growth_bytes: Option<i64>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `subscribe`, `publish` or `fanout`.
    pub mode: String,
    /// Wall-clock start, Unix seconds.
    pub started_unix_s: u64,
    /// Run time, seconds.
    pub elapsed_seconds: f64,
    /// The options the run used.
    pub config: serde_json::Value,
    /// Processes that held streams (1 = this one).
    pub subscriber_processes: u64,
    /// Time until every stream was ready or given up on.
    pub connect_phase_seconds: Option<f64>,
    /// Subscriber figures, if streams were held.
    pub subscribers: Option<SubSection>,
    /// Publisher figures, if events were published.
    pub publisher: Option<PubSection>,
    /// Server figures, if `--server-pid` was given.
    pub server: Option<ServerSection>,
    /// CPU seconds this tool used (all its processes): it shares the host with the server.
    pub loadgen_cpu_seconds: f64,
}

/// Derives the subscriber section.
pub fn sub_section(raw: SubResult) -> SubSection {
    let window = raw.last_delivery_us.saturating_sub(raw.first_delivery_us) as f64 / 1e6;
    let readers = raw.readers_ready;
    SubSection {
        connect_ms: Ms::of(&raw.connect_us),
        ttfb_ms: Ms::of(&raw.ttfb_us),
        latency_ms: Ms::of(&raw.latency_us),
        accept_latency_ms: Ms::of(&raw.accept_latency_us),
        deliveries_per_s: per_second(raw.deliveries, window),
        expected_deliveries: raw.expected_deliveries,
        mean_missing_per_stream: if readers > 0 { raw.missing_total as f64 / readers as f64 } else { 0.0 },
        raw,
    }
}

/// Derives the publisher section.
pub fn pub_section(raw: PubResult, target_rate: f64) -> PubSection {
    PubSection {
        target_rate,
        send_rate: raw.send_rate(),
        accept_rate: raw.accept_rate(),
        latency_ms: Ms::of(&raw.latency_us),
        raw,
    }
}

/// Derives the server section from three sampling points.
pub fn server_section(
    start: Vec<ProcSample>,
    ready: Vec<ProcSample>,
    end: Vec<ProcSample>,
    ready_streams: u64,
    deliveries: u64,
    tcp: Option<TcpMem>,
) -> ServerSection {
    let (s, r, e) = (total(&start), total(&ready), total(&end));
    let comparable = start.len() == ready.len() && ready.len() == end.len();
    let cpu = e.cpu_seconds - r.cpu_seconds;
    ServerSection {
        rss_per_stream_bytes: (comparable && ready_streams > 0)
            .then(|| (r.rss_bytes as f64 - s.rss_bytes as f64) / ready_streams as f64),
        rss_growth_during_run_bytes: e.rss_bytes as i64 - r.rss_bytes as i64,
        cpu_seconds_during_run: cpu,
        cpu_s_per_million_deliveries: (comparable && deliveries > 0).then(|| cpu / deliveries as f64 * 1e6),
        kernel_tcp_mem_growth_bytes: tcp.map(|t| t.peak as i64 - t.ready as i64),
        kernel_tcp_mem_bytes: tcp,
        start,
        ready,
        end,
    }
}

impl Report {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\":\"report serialization: {e}\"}}"))
    }

    /// The Markdown summary (also printed to stdout).
    pub fn to_markdown(&self) -> String {
        let mut md = format!("# sse-load {} report\n\n| metric | value |\n|---|---|\n", self.mode);
        let mut row = |k: &str, v: String| {
            let _ = writeln!(md, "| {k} | {v} |");
        };
        row("elapsed", format!("{:.1} s", self.elapsed_seconds));
        row("subscriber processes", self.subscriber_processes.to_string());
        if let Some(t) = self.connect_phase_seconds {
            row("connect phase", format!("{t:.2} s"));
        }
        if let Some(s) = &self.subscribers {
            let r = &s.raw;
            row(
                "streams",
                format!(
                    "{} planned, {} connected, {} ready ({} reading, {} slow), {} failed, {} lost, {} open at end",
                    r.planned,
                    r.connected,
                    r.ready,
                    r.readers_ready,
                    r.ready.saturating_sub(r.readers_ready),
                    r.failed,
                    r.lost,
                    r.open_at_end
                ),
            );
            row("connect time p50 / p99 / max", ms3(&s.connect_ms, false));
            row("time to first byte (prelude) p50 / p99 / max", ms3(&s.ttfb_ms, false));
            row("deliveries", format!("{} ({:.0}/s)", r.deliveries, s.deliveries_per_s));
            if let Some(x) = s.expected_deliveries {
                row("expected deliveries (accepted × reading streams)", x.to_string());
            }
            row(
                "missing events (total / streams with any / max per stream / mean per stream)",
                format!(
                    "{} / {} / {} / {:.2}",
                    r.missing_total, r.streams_with_missing, r.max_missing, s.mean_missing_per_stream
                ),
            );
            row(
                "seq holes / seq regressions / id regressions",
                format!("{} / {} / {}", r.seq_holes, r.seq_regressions, r.id_regressions),
            );
            if r.streams_non_numeric_ids > 0 {
                row(
                    "streams with non-numeric ids (ids not order-checked; seqs are)",
                    r.streams_non_numeric_ids.to_string(),
                );
            }
            row("gap notices (ids covered)", format!("{} ({})", r.gap_notices, r.gap_notice_ids));
            row("other events / comments", format!("{} / {}", r.other_events, r.comments));
            row("latency p50 / p90 / p99 / p99.9 / max", ms3(&s.latency_ms, true));
            if r.accept_latency_us.count() > 0 {
                row(
                    "latency from acceptance p50 / p90 / p99 / p99.9 / max (received before the answer)",
                    format!("{} ({})", ms3(&s.accept_latency_ms, true), r.before_answer),
                );
            }
            row("subscriber errors", errors(&r.errors));
        }
        if let Some(p) = &self.publisher {
            let r = &p.raw;
            row(
                "published (planned / sent / accepted)",
                format!("{} / {} / {}", r.planned, r.sent, r.accepted),
            );
            row(
                "publish rate per address target / sent / accepted",
                format!("{:.1} / {:.1} / {:.1} per s", p.target_rate, p.send_rate, p.accept_rate),
            );
            row(
                "not sent (backlog / in flight / connection down) / unanswered",
                format!(
                    "{} / {} / {} / {}",
                    r.not_sent_backlog, r.not_sent_inflight, r.not_sent_conn_down, r.unanswered
                ),
            );
            if r.accepted_by_target.len() > 1 {
                row("accepted per server address", format!("{:?}", r.accepted_by_target));
            }
            row("publish statuses", errors(&r.statuses));
            row("publish answer latency p50 / p90 / p99 / p99.9 / max", ms3(&p.latency_ms, true));
            row("publisher max schedule lag", format!("{:.1} ms", r.max_schedule_lag_us as f64 / 1000.0));
            row("publisher errors", errors(&r.errors));
        }
        if let Some(s) = &self.server {
            let pids: Vec<String> = s.start.iter().map(|p| p.pid.to_string()).collect();
            row("server pids", pids.join(", "));
            row(
                "server RSS start / ready / end",
                format!(
                    "{} / {} / {}",
                    mib(total(&s.start).rss_bytes),
                    mib(total(&s.ready).rss_bytes),
                    mib(total(&s.end).rss_bytes)
                ),
            );
            row(
                "server RSS delta per stream",
                s.rss_per_stream_bytes.map_or("n/a".into(), |b| format!("{b:.0} B")),
            );
            if let Some(t) = &s.kernel_tcp_mem_bytes {
                row(
                    "kernel TCP buffer memory (host-wide) ready / peak / end",
                    format!("{} / {} / {}", mib(t.ready), mib(t.peak), mib(t.end)),
                );
            }
            row("server CPU during run", format!("{:.2} s", s.cpu_seconds_during_run));
            row(
                "server CPU-s per million deliveries",
                s.cpu_s_per_million_deliveries.map_or("n/a".into(), |c| format!("{c:.3}")),
            );
        }
        row("load generator CPU (all its processes)", format!("{:.2} s", self.loadgen_cpu_seconds));
        md
    }
}

fn ms3(m: &Ms, long: bool) -> String {
    if m.count == 0 {
        return "n/a".into();
    }
    if long {
        format!("{:.2} / {:.2} / {:.2} / {:.2} / {:.2} ms", m.p50, m.p90, m.p99, m.p999, m.max)
    } else {
        format!("{:.2} / {:.2} / {:.2} ms", m.p50, m.p99, m.max)
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn errors(e: &Errors) -> String {
    if e.is_empty() {
        return "none".into();
    }
    e.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_figures() {
        let mut raw = SubResult {
            readers_ready: 10,
            deliveries: 1000,
            missing_total: 5,
            expected_deliveries: Some(1000),
            first_delivery_us: 1_000_000,
            last_delivery_us: 3_000_000,
            ..SubResult::default()
        };
        raw.latency_us.record(1500);
        let s = sub_section(raw);
        assert_eq!(s.expected_deliveries, Some(1000));
        assert!((s.deliveries_per_s - 500.0).abs() < 1e-9);
        assert!((s.mean_missing_per_stream - 0.5).abs() < 1e-9);
        let p = |pid, rss, cpu| ProcSample { pid, rss_bytes: rss, cpu_seconds: cpu };
        let srv = server_section(
            vec![p(1, 1000, 1.0), p(2, 1000, 1.0)],
            vec![p(1, 3000, 1.5), p(2, 3000, 1.5)],
            vec![p(1, 3500, 2.0), p(2, 3000, 2.0)],
            8,
            2_000_000,
            Some(TcpMem { start: 1 << 20, ready: 2 << 20, end: 3 << 20, peak: 5 << 20 }),
        );
        assert_eq!(srv.rss_per_stream_bytes, Some(500.0));
        assert_eq!(srv.rss_growth_during_run_bytes, 500);
        assert_eq!(srv.cpu_s_per_million_deliveries, Some(0.5));
        assert_eq!(srv.kernel_tcp_mem_growth_bytes, Some(3 << 20));
        let report = Report {
            mode: "fanout".into(),
            started_unix_s: 0,
            elapsed_seconds: 1.0,
            config: serde_json::json!({}),
            subscriber_processes: 1,
            connect_phase_seconds: Some(0.5),
            subscribers: Some(s),
            publisher: None,
            server: Some(srv),
            loadgen_cpu_seconds: 0.0,
        };
        let md = report.to_markdown();
        assert!(md.contains("| server RSS delta per stream | 500 B |"), "{md}");
        assert!(
            md.contains(
                "| kernel TCP buffer memory (host-wide) ready / peak / end | 2.0 MiB / 5.0 MiB / 3.0 MiB |"
            ),
            "{md}"
        );
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(v["server"]["kernel_tcp_mem_bytes"]["peak"], 5 << 20);
        assert_eq!(v["server"]["kernel_tcp_mem_growth_bytes"], 3 << 20);
        assert_eq!(v["subscribers"]["expected_deliveries"], 1000);
    }
}
