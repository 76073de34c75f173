//! Mergeable measurements: HDR histograms, subscriber and publisher results, error kinds.
//!
//! Contract: every result type here is plain data that (de)serializes to JSON and merges by
//! [`SubResult::merge`] / [`Hist::merge`] so that per-thread and per-process results combine into
//! exactly what one process would have measured. Histograms travel as `[value, count]` pairs of
//! their recorded buckets (each value is its bucket's highest equivalent value, so re-recording it
//! lands in the same bucket): lossless for counts and percentiles, and plain JSON.

use std::collections::BTreeMap;
use std::io;

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Highest value a histogram holds: one hour in microseconds (larger values are clamped).
const HIST_HIGH_US: u64 = 3_600_000_000;
/// Significant decimal digits kept by every histogram (0.1 % value resolution).
const HIST_SIGFIG: u8 = 3;

/// A microsecond HDR histogram, 1 µs .. 1 h, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Recorded values.
    pub count: u64,
    /// Mean value.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value (its bucket's highest equivalent).
    pub max: u64,
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts; a failure is a programming error.
        Hist(Histogram::new_with_bounds(1, HIST_HIGH_US, HIST_SIGFIG).expect("constant histogram bounds"))
    }

    /// Records one value, clamped into range.
    pub fn record(&mut self, v: u64) {
        self.0.saturating_record(v);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides, so addition cannot go out of range.
        if self.0.add(&other.0).is_err() {
            for (v, n) in other.pairs() {
                self.0.saturating_record_n(v, n);
            }
        }
    }

    /// Returns the counts recorded so far and empties this histogram.
    pub fn take(&mut self) -> Hist {
        let out = self.clone();
        self.0.reset();
        out
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    /// The usual percentiles.
    pub fn percentiles(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.0.len(),
            mean: self.0.mean(),
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.0.max(),
        }
    }

    /// The recorded buckets as `(highest equivalent value, count)`.
    pub fn pairs(&self) -> Vec<(u64, u64)> {
        self.0.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
    }

    /// Rebuilds a histogram from [`Hist::pairs`].
    pub fn from_pairs(pairs: &[(u64, u64)]) -> Hist {
        let mut h = Hist::new();
        for &(v, n) in pairs {
            h.0.saturating_record_n(v, n);
        }
        h
    }
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.pairs().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(d)?;
        Ok(Hist::from_pairs(&pairs))
    }
}

/// Error counts by kind (`"connect refused"`, `"http status 503"`, ...).
pub type Errors = BTreeMap<String, u64>;

/// Adds `n` to the count of `kind`.
pub fn count_error(errors: &mut Errors, kind: &str, n: u64) {
    *errors.entry(kind.to_owned()).or_default() += n;
}

/// Adds every count of `from` into `into`.
pub fn merge_errors(into: &mut Errors, from: &Errors) {
    for (k, n) in from {
        count_error(into, k, *n);
    }
}

/// A short, stable name for an I/O error, used as an error kind.
pub fn io_kind(e: &io::Error) -> String {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::ConnectionRefused, _) => "connect refused".into(),
        (io::ErrorKind::ConnectionReset, _) => "reset".into(),
        (io::ErrorKind::TimedOut, _) => "timeout".into(),
        (io::ErrorKind::BrokenPipe, _) => "broken pipe".into(),
        (io::ErrorKind::AddrNotAvailable, _) => "address not available".into(),
        (io::ErrorKind::AddrInUse, _) => "address in use".into(),
        (_, Some(24)) => "too many open files (EMFILE)".into(),
        (_, Some(23)) => "too many open files (ENFILE)".into(),
        (kind, _) => format!("io: {kind}"),
    }
}

/// What a set of subscriber streams measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubResult {
    /// Streams this run was asked to hold.
    pub planned: u64,
    /// Planned streams that never read after the response head.
    pub slow_planned: u64,
    /// Connection attempts started (retries included).
    pub attempts: u64,
    /// Streams that got a `200` event-stream head.
    pub connected: u64,
    /// Reading streams that got the prelude (plus slow streams that got the head).
    pub ready: u64,
    /// Reading streams that got the prelude: the ones every event is expected on.
    pub readers_ready: u64,
    /// Streams given up on before they were ready (after retries).
    pub failed: u64,
    /// Ready streams that closed before the end of the run.
    pub lost: u64,
    /// Streams still open when the run stopped.
    pub open_at_end: u64,
    /// Connect start → TCP established, µs.
    pub connect_us: Hist,
    /// Connect start → first SSE item (the prelude), µs, reading streams only.
    pub ttfb_us: Hist,
    /// Publisher timestamp → receipt, µs, per stamped event.
    pub latency_us: Hist,
    /// The publish's `2xx` answer → receipt, µs, per stamped event whose publisher runs in the
    /// same process (`crate::accepted`): what readers wait once the server took the event.
    #[serde(default)]
    pub accept_latency_us: Hist,
    /// Of those, events received before their answer was read (counted as 0 µs).
    #[serde(default)]
    pub before_answer: u64,
    /// Stamped events received (every stream counted).
    pub deliveries: u64,
    /// Events without a publisher stamp (and not gap notices).
    pub other_events: u64,
    /// Comment lines, prelude and heartbeats included.
    pub comments: u64,
    /// Body bytes read (chunked framing included: what came off the socket).
    pub bytes: u64,
    /// `event: gap` notices.
    pub gap_notices: u64,
    /// Ids covered by those notices (`to - from + 1` summed).
    pub gap_notice_ids: u64,
    /// Ids not strictly above the previous one on the same stream (decimal ids only).
    pub id_regressions: u64,
    /// Reading streams that got at least one id that is not a decimal u64 (a peer's own id
    /// scheme): informational, not an error; such ids are not checked for order.
    #[serde(default)]
    pub streams_non_numeric_ids: u64,
    /// Seqs skipped over (may include publishes the server refused).
    pub seq_holes: u64,
    /// Seqs not above the previous one of their lane.
    pub seq_regressions: u64,
    /// Accepted publishes × reading streams that were ready, per their server address, when
    /// the publisher's counts are known.
    pub expected_deliveries: Option<u64>,
    /// Sum over reading streams of accepted − distinct received.
    pub missing_total: u64,
    /// Reading streams missing at least one accepted event.
    pub streams_with_missing: u64,
    /// Most events missed by one stream.
    pub max_missing: u64,
    /// Wall-clock µs of the first and last stamped delivery (0 = none).
    pub first_delivery_us: u64,
    /// See `first_delivery_us`.
    pub last_delivery_us: u64,
    /// Failures by kind (every attempt counted).
    pub errors: Errors,
}

impl SubResult {
    /// Adds `o` into `self` (sums, maxima, histogram merges, min/max of times).
    pub fn merge(&mut self, o: &SubResult) {
        let sums = [
            (&mut self.planned, o.planned),
            (&mut self.slow_planned, o.slow_planned),
            (&mut self.attempts, o.attempts),
            (&mut self.connected, o.connected),
            (&mut self.ready, o.ready),
            (&mut self.readers_ready, o.readers_ready),
            (&mut self.failed, o.failed),
            (&mut self.lost, o.lost),
            (&mut self.open_at_end, o.open_at_end),
            (&mut self.deliveries, o.deliveries),
            (&mut self.other_events, o.other_events),
            (&mut self.comments, o.comments),
            (&mut self.bytes, o.bytes),
            (&mut self.gap_notices, o.gap_notices),
            (&mut self.gap_notice_ids, o.gap_notice_ids),
            (&mut self.id_regressions, o.id_regressions),
            (&mut self.streams_non_numeric_ids, o.streams_non_numeric_ids),
            (&mut self.seq_holes, o.seq_holes),
            (&mut self.seq_regressions, o.seq_regressions),
            (&mut self.missing_total, o.missing_total),
            (&mut self.streams_with_missing, o.streams_with_missing),
        ];
        for (into, v) in sums {
            *into += v;
        }
        self.max_missing = self.max_missing.max(o.max_missing);
        self.expected_deliveries = match (self.expected_deliveries, o.expected_deliveries) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.first_delivery_us = match (self.first_delivery_us, o.first_delivery_us) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.last_delivery_us = self.last_delivery_us.max(o.last_delivery_us);
        self.connect_us.merge(&o.connect_us);
        self.ttfb_us.merge(&o.ttfb_us);
        self.latency_us.merge(&o.latency_us);
        self.accept_latency_us.merge(&o.accept_latency_us);
        self.before_answer += o.before_answer;
        merge_errors(&mut self.errors, &o.errors);
    }
}

/// What the publisher measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PubResult {
    /// Server addresses every event was sent to.
    pub addresses: u64,
    /// Requests scheduled (events × server addresses).
    pub planned: u64,
    /// Requests written to a connection's buffer.
    pub sent: u64,
    /// `2xx` answers: events the server accepted.
    pub accepted: u64,
    /// `2xx` answers per server address.
    pub accepted_by_target: Vec<u64>,
    /// Requests not sent because their connection's unsent backlog was full.
    pub not_sent_backlog: u64,
    /// Requests not sent because their connection had `--max-inflight` unanswered.
    pub not_sent_inflight: u64,
    /// Requests not sent because their connection was down.
    pub not_sent_conn_down: u64,
    /// Requests sent that got no answer (connection closed, or the response timeout passed).
    pub unanswered: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Failures by kind.
    pub errors: Errors,
    /// Request written → response parsed, µs.
    pub latency_us: Hist,
    /// Largest delay of a send behind its scheduled time, µs (the tool's own lag).
    pub max_schedule_lag_us: u64,
    /// First send → last send, seconds.
    pub send_seconds: f64,
    /// First send → last answer, seconds.
    pub elapsed_seconds: f64,
    /// Wall-clock µs of the first send.
    pub first_send_us: u64,
}

impl PubResult {
    /// Events sent per second to each address, over the sending window.
    pub fn send_rate(&self) -> f64 {
        per_second(self.sent.saturating_sub(self.addresses.max(1)), self.send_seconds)
            / self.addresses.max(1) as f64
    }

    /// Events accepted per second by each address, over the whole run.
    pub fn accept_rate(&self) -> f64 {
        per_second(self.accepted, self.elapsed_seconds) / self.addresses.max(1) as f64
    }
}

/// `n / seconds`, 0 when the window is empty.
pub fn per_second(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) % 5_000_000
            })
            .collect()
    }

    #[test]
    fn merge_through_json_equals_recording_everything_in_one() {
        let (a, b) = (spread(1, 20_000), spread(2, 7_000));
        let mut one = Hist::new();
        let (mut ha, mut hb) = (Hist::new(), Hist::new());
        for &v in &a {
            one.record(v);
            ha.record(v);
        }
        for &v in &b {
            one.record(v);
            hb.record(v);
        }
        let wire = serde_json::to_string(&hb).expect("serializes");
        let back: Hist = serde_json::from_str(&wire).expect("deserializes");
        ha.merge(&back);
        assert_eq!(ha.count(), 27_000);
        assert_eq!(ha.percentiles(), one.percentiles());
        assert_eq!(ha.pairs(), one.pairs());
    }

    #[test]
    fn sub_results_merge() {
        let mut a = SubResult {
            planned: 3,
            deliveries: 10,
            max_missing: 2,
            first_delivery_us: 50,
            ..Default::default()
        };
        a.latency_us.record(100);
        count_error(&mut a.errors, "reset", 1);
        let mut b = SubResult {
            planned: 4,
            deliveries: 5,
            max_missing: 7,
            first_delivery_us: 40,
            ..Default::default()
        };
        b.latency_us.record(300);
        b.last_delivery_us = 99;
        count_error(&mut b.errors, "reset", 2);
        count_error(&mut b.errors, "timeout", 1);
        let b: SubResult = serde_json::from_str(&serde_json::to_string(&b).expect("ser")).expect("de");
        a.merge(&b);
        assert_eq!((a.planned, a.deliveries, a.max_missing), (7, 15, 7));
        assert_eq!((a.first_delivery_us, a.last_delivery_us), (40, 99));
        assert_eq!(a.latency_us.count(), 2);
        assert_eq!(a.errors.get("reset"), Some(&3));
        assert_eq!(a.errors.get("timeout"), Some(&1));
    }

    #[test]
    fn empty_histogram_reads_zero() {
        assert_eq!(Hist::new().percentiles(), Percentiles::default());
        assert_eq!(Hist::new().quantile(0.99), 0);
    }
}
