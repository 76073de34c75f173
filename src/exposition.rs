//! Prometheus text exposition (format 0.0.4), rendered from a [`Scrape`] (sans-IO).
//!
//! Invariants: every family has one `# HELP` and one `# TYPE` line, label values are only
//! our own fixed labels (reasons, classes, loop numbers), counters end in `_total`, and
//! histogram buckets are cumulative with a final `+Inf` equal to `_count`.

use std::fmt::Write;

use crate::histogram::{Snapshot, BOUNDS};
use crate::metrics::{CloseReason, RejectReason};
use crate::publish::Class;

/// One loop's numbers.
#[derive(Debug, Clone, Default)]
pub struct LoopScrape {
    /// Open connections.
    pub connections: u64,
    /// Open streams.
    pub streams: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Frames queued to streams.
    pub deliveries: u64,
    /// Bytes the kernel accepted.
    pub bytes_written: u64,
    /// Frames the kernel accepted whole (answers and stream heads included).
    pub frames_written: u64,
    /// Vectored write calls that moved bytes (`frames_written / writes` is the batching).
    pub writes: u64,
    /// Unwritten outbox bytes.
    pub outbox_queued_bytes: u64,
    /// Connections waiting for writability.
    pub write_blocked: u64,
    /// Events waiting in the loop's hub channel.
    pub hub_queue: u64,
    /// How long the oldest of them has waited, seconds.
    pub hub_lag_seconds: f64,
    /// That lag divided by `--max-delivery-lag-ms` (0 without a budget).
    pub saturation: f64,
    /// Times the loop paused its hub intake to catch up on writing.
    pub intake_pauses: u64,
    /// Longest recent iteration, seconds.
    pub loop_lag_seconds: f64,
    /// Answered the last health probe.
    pub up: bool,
    /// Iteration time histogram.
    pub iteration: Snapshot,
}

/// Process-level numbers from `/proc`.
#[derive(Debug, Clone, Default)]
pub struct ProcessScrape {
    /// Open descriptors.
    pub open_fds: u64,
    /// The open-file limit.
    pub max_fds: u64,
    /// Resident memory.
    pub resident_bytes: u64,
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Start time, seconds since the epoch.
    pub start_time_seconds: f64,
}

/// Config reloads (see [`crate::live`]).
#[derive(Debug, Clone, Default)]
pub struct ConfigScrape {
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads refused (nothing changed).
    pub reloads_error: u64,
    /// Unix seconds of the last applied reload, or of the start.
    pub last_success_seconds: u64,
    /// Short hash of the effective configuration.
    pub hash: String,
}

/// Everything one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Per loop, in loop order.
    pub loops: Vec<LoopScrape>,
    /// Capacity (`--max-connections` or the fd limit).
    pub capacity: u64,
    /// Refusals by [`RejectReason::ALL`] order.
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Disconnects by [`CloseReason::ALL`] order.
    pub closed: [u64; 6],
    /// Events sequenced by class.
    pub published: [u64; 3],
    /// Frames evicted from outboxes, by class.
    pub evicted: [u64; 3],
    /// Queued latest values replaced in outboxes.
    pub conflated: u64,
    /// Latest values replaced by the publish-side throttle.
    pub throttled: u64,
    /// Droppable deliveries shed in overload mode.
    pub shed: u64,
    /// Gap notices sent.
    pub gaps: u64,
    /// Streams ended because their subscribe token expired.
    pub tokens_expired: u64,
    /// Polling answers cut short by `--poll-max-bytes`.
    pub poll_truncated: u64,
    /// Events left out of polling answers as too large for any answer.
    pub poll_skipped: u64,
    /// Overload mode on.
    pub overload: bool,
    /// Each hub channel's capacity.
    pub hub_capacity: u64,
    /// Events and frame bytes in history.
    pub history_events: u64,
    /// Frame bytes referenced by history.
    pub history_bytes: u64,
    /// Delivery lag over all loops.
    pub delivery_lag: Snapshot,
    /// The bus's gauges; `None` without `--bus`, and then no bus family is rendered (a
    /// single node's metrics are exactly what they were before the bus existed).
    pub bus: Option<crate::bus::BusScrape>,
    /// Config reloads.
    pub config: ConfigScrape,
    /// Process numbers.
    pub process: ProcessScrape,
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
    fn per_loop(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        loops: &[LoopScrape],
        f: impl Fn(&LoopScrape) -> String,
    ) {
        self.family(name, kind, help);
        for (i, l) in loops.iter().enumerate() {
            self.sample(name, &format!("loop=\"{i}\""), f(l));
        }
    }
    fn histogram(&mut self, name: &str, labels: &str, h: &Snapshot) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += h.counts.get(i).copied().unwrap_or(0);
            self.sample(&format!("{name}_bucket"), &format!("{labels}{sep}le=\"{bound}\""), cumulative);
        }
        self.sample(&format!("{name}_bucket"), &format!("{labels}{sep}le=\"+Inf\""), h.count());
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// The bus families, rendered only with `--bus`.
fn render_bus(o: &mut Out, b: &crate::bus::BusScrape) {
    o.family("sse_bus_connected", "gauge", "1 while the bus reader is connected to the bus (--bus).");
    o.sample("sse_bus_connected", "", u8::from(b.connected));
    o.family("sse_bus_publish_inflight", "gauge", "Events appended to the bus and not yet answered.");
    o.sample("sse_bus_publish_inflight", "", b.inflight);
    o.family("sse_bus_publish_window", "gauge", "Most events in flight to the bus (--bus-publish-window).");
    o.sample("sse_bus_publish_window", "", b.window);
    o.family("sse_bus_reconnects_total", "counter", "Times the bus reader reconnected after losing the bus.");
    o.sample("sse_bus_reconnects_total", "", b.reconnects);
    o.family(
        "sse_bus_stale_reconnects_total",
        "counter",
        "Times the bus reader dropped a connection that was open but no longer received.",
    );
    o.sample("sse_bus_stale_reconnects_total", "", b.stale);
    o.family(
        "sse_bus_gaps_total",
        "counter",
        "Losses the bus reader found and told the affected subscribers of with event: gap, by \
         reason (trimmed: the bus trimmed entries before this node read them; bus_reset: the bus \
         lost its tail).",
    );
    for reason in crate::bus::GapReason::ALL {
        o.sample("sse_bus_gaps_total", &format!("reason=\"{}\"", reason.label()), b.gaps[reason as usize]);
    }
    o.family("sse_bus_reader_lag_events", "gauge", "Entries in the bus after the last one this node read.");
    o.sample("sse_bus_reader_lag_events", "", b.lag);
    o.family(
        "sse_bus_foreign_entries_total",
        "counter",
        "Stream entries the bus reader skipped as not written by a node.",
    );
    o.sample("sse_bus_foreign_entries_total", "", b.foreign);
    o.family("sse_bus_publish_seconds", "histogram", "Round trip of one append of a batch to the bus.");
    o.histogram("sse_bus_publish_seconds", "", &b.publish_seconds);
}

/// Renders `s` as Prometheus text.
pub fn render(s: &Scrape) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    let l = &s.loops;
    o.per_loop("sse_connections_active", "gauge", "Open connections.", l, |l| l.connections.to_string());
    o.per_loop("sse_streams_active", "gauge", "Open event streams.", l, |l| l.streams.to_string());
    o.single(
        "sse_connections_max",
        "gauge",
        "Most connections this node holds (--max-connections or the fd limit).",
        s.capacity,
    );
    o.per_loop("sse_connections_accepted_total", "counter", "Connections accepted.", l, |l| {
        l.accepted.to_string()
    });
    o.family("sse_connections_rejected_total", "counter", "Connections or requests refused, by reason.");
    for r in RejectReason::ALL {
        if r == RejectReason::BusUnavailable && s.bus.is_none() {
            continue; // only a node with a bus can refuse for it
        }
        o.sample(
            "sse_connections_rejected_total",
            &format!("reason=\"{}\"", r.label()),
            s.rejected[r.index()],
        );
    }
    o.family("sse_disconnects_total", "counter", "Connections closed, by reason.");
    for (i, r) in CloseReason::ALL.iter().enumerate() {
        o.sample("sse_disconnects_total", &format!("reason=\"{}\"", r.label()), s.closed[i]);
    }
    o.family("sse_events_published_total", "counter", "Events sequenced by the hub, by class.");
    for c in Class::ALL {
        o.sample("sse_events_published_total", &format!("class=\"{}\"", c.label()), s.published[c.index()]);
    }
    o.per_loop("sse_deliveries_total", "counter", "Event frames queued to streams.", l, |l| {
        l.deliveries.to_string()
    });
    o.per_loop("sse_bytes_written_total", "counter", "Bytes accepted by the kernel.", l, |l| {
        l.bytes_written.to_string()
    });
    o.per_loop("sse_frames_written_total", "counter", "Frames the kernel accepted.", l, |l| {
        l.frames_written.to_string()
    });
    o.per_loop(
        "sse_writes_total",
        "counter",
        "Vectored write calls that moved bytes (frames per write is the batching).",
        l,
        |l| l.writes.to_string(),
    );
    o.family("sse_events_dropped_total", "counter", "Events not delivered, by class and reason.");
    for c in Class::ALL {
        o.sample(
            "sse_events_dropped_total",
            &format!("class=\"{}\",reason=\"evicted\"", c.label()),
            s.evicted[c.index()],
        );
    }
    o.sample("sse_events_dropped_total", "class=\"latest\",reason=\"conflated\"", s.conflated);
    o.sample("sse_events_dropped_total", "class=\"latest\",reason=\"throttled\"", s.throttled);
    o.sample("sse_events_dropped_total", "class=\"droppable\",reason=\"shed\"", s.shed);
    o.single("sse_gaps_reported_total", "counter", "event: gap notices sent to clients.", s.gaps);
    o.single(
        "sse_streams_token_expired_total",
        "counter",
        "Streams told event: token-expired and closed because their subscribe token expired.",
        s.tokens_expired,
    );
    o.single(
        "sse_poll_truncated_total",
        "counter",
        "Polling answers cut short by --poll-max-bytes (the client continues at X-Next-After).",
        s.poll_truncated,
    );
    o.single(
        "sse_poll_events_skipped_total",
        "counter",
        "Events left out of polling answers because their JSON alone exceeds the bound (reported as a gap).",
        s.poll_skipped,
    );
    o.per_loop("sse_outbox_queued_bytes", "gauge", "Unwritten bytes in outboxes.", l, |l| {
        l.outbox_queued_bytes.to_string()
    });
    o.per_loop(
        "sse_connections_write_blocked",
        "gauge",
        "Connections waiting for the socket to drain.",
        l,
        |l| l.write_blocked.to_string(),
    );
    o.per_loop("sse_hub_queue_events", "gauge", "Events waiting in the loop's hub channel.", l, |l| {
        l.hub_queue.to_string()
    });
    o.per_loop(
        "sse_loop_behind_seconds",
        "gauge",
        "How far behind the loop is: the longer of how long the oldest event it has not taken from its hub channel has waited and how late its write pass is.",
        l,
        |l| l.hub_lag_seconds.to_string(),
    );
    o.per_loop(
        "sse_loop_saturation",
        "gauge",
        "sse_loop_behind_seconds divided by --max-delivery-lag-ms: at 1 publishers wait (0 without a budget).",
        l,
        |l| l.saturation.to_string(),
    );
    o.per_loop(
        "sse_hub_intake_pauses_total",
        "counter",
        "Times the loop took no hub events until it had written a pass: it was behind on writing, so publishers waited instead of readers losing events.",
        l,
        |l| l.intake_pauses.to_string(),
    );
    o.single(
        "sse_hub_queue_capacity",
        "gauge",
        "Capacity of each hub channel (--hub-queue-events).",
        s.hub_capacity,
    );
    o.family(
        "sse_delivery_lag_seconds",
        "histogram",
        "Hub accept to bytes accepted by the kernel, per delivery.",
    );
    o.histogram("sse_delivery_lag_seconds", "", &s.delivery_lag);
    if let Some(bus) = &s.bus {
        render_bus(&mut o, bus);
    }
    o.family("sse_loop_iteration_seconds", "histogram", "Time a loop spends per iteration.");
    for (i, lp) in l.iter().enumerate() {
        o.histogram("sse_loop_iteration_seconds", &format!("loop=\"{i}\""), &lp.iteration);
    }
    o.per_loop("sse_loop_lag_seconds", "gauge", "Longest recent iteration of the loop.", l, |l| {
        l.loop_lag_seconds.to_string()
    });
    o.per_loop("sse_loop_up", "gauge", "1 if the loop answered the last health probe in time.", l, |l| {
        u8::from(l.up).to_string()
    });
    o.single(
        "sse_overload_mode",
        "gauge",
        "1 while the node sheds droppable events and widens throttles.",
        u8::from(s.overload),
    );
    o.single("sse_history_events", "gauge", "Events retained for resume and polling.", s.history_events);
    o.single("sse_history_bytes", "gauge", "Memory history holds (frames, shared events, ring slots), as counted against --history-max-total-bytes.", s.history_bytes);
    let c = &s.config;
    o.family("sse_config_reloads_total", "counter", "Config reloads (SIGHUP), applied or refused.");
    o.sample("sse_config_reloads_total", "result=\"ok\"", c.reloads_ok);
    o.sample("sse_config_reloads_total", "result=\"error\"", c.reloads_error);
    o.family("sse_config_info", "gauge", "1, labelled with a short hash of the effective configuration.");
    o.sample("sse_config_info", &format!("hash=\"{}\"", c.hash), 1);
    o.single(
        "sse_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the configuration was last applied (reload or start), seconds since the epoch.",
        c.last_success_seconds,
    );
    let p = &s.process;
    o.single("process_open_fds", "gauge", "Open file descriptors.", p.open_fds);
    o.single("process_max_fds", "gauge", "Maximum number of open file descriptors.", p.max_fds);
    o.single("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.resident_bytes);
    o.single(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    o.single(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_declared_once_and_histograms_are_cumulative() {
        let mut lag = Snapshot { counts: vec![0; BOUNDS.len() + 1], sum: 1.5 };
        lag.counts[0] = 2;
        lag.counts[3] = 1;
        let s = Scrape {
            loops: vec![LoopScrape::default(), LoopScrape::default()],
            delivery_lag: lag,
            ..Scrape::default()
        };
        let text = render(&s);
        let mut types = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(types.insert(line.split_whitespace().nth(2).unwrap().to_string()), "{line}");
        }
        assert!(text.contains("sse_delivery_lag_seconds_bucket{le=\"0.0005\"} 2\n"));
        assert!(text.contains("sse_delivery_lag_seconds_bucket{le=\"0.005\"} 3\n"));
        assert!(text.contains("sse_delivery_lag_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("sse_delivery_lag_seconds_count 3\n"));
        assert!(text.contains("sse_connections_active{loop=\"1\"} 0\n"));
        assert!(text.contains("sse_connections_rejected_total{reason=\"emfile\"} 0\n"));
    }

    #[test]
    fn every_reject_reason_has_its_own_series() {
        let mut s = Scrape { bus: Some(Default::default()), ..Scrape::default() };
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "ALL is in counter order");
            s.rejected[r.index()] = i as u64 + 1;
        }
        let text = render(&s);
        for r in RejectReason::ALL {
            let line =
                format!("sse_connections_rejected_total{{reason=\"{}\"}} {}\n", r.label(), r.index() + 1);
            assert!(text.contains(&line), "{line}");
        }
        assert!(text.contains("sse_connections_rejected_total{reason=\"publish_timeout\"} "));
    }
}
