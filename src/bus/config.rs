//! The bus options (`--bus*`), flattened into [`crate::Config`].

use clap::Args;
use serde::Serialize;

/// Scale-out over a bus. Without `--bus` none of these matter and the node sequences its
/// own events.
#[derive(Debug, Clone, Args, Serialize)]
pub struct BusConfig {
    /// Sequence every event through this Redis (Streams): `redis://[user:pass@]host:port[/db]`
    /// or `unix:///path/to/redis.sock`. Every node on the same bus and key prefix delivers
    /// the same events in the same order with the same ids. Unset: this process is its own
    /// sequencer and needs no other service.
    #[arg(long = "bus", env = "SSE_EDGE_BUS")]
    #[serde(rename = "bus")]
    pub url: Option<String>,

    /// Prefix of the bus's keys: the stream `{PREFIX}:events`, the id counter `{PREFIX}:seq`,
    /// the entry counter `{PREFIX}:n` and the hash `{PREFIX}:topics` of each topic's newest
    /// reliable id (one hash tag, so all live on one Redis shard). Nodes with the same prefix
    /// form one cluster.
    #[arg(long = "bus-key-prefix", env = "SSE_EDGE_BUS_KEY_PREFIX", default_value = "sse-edge")]
    #[serde(rename = "bus_key_prefix")]
    pub key_prefix: String,

    /// Events the bus retains (approximate `MAXLEN ~`: Redis trims whole internal nodes, so
    /// a little more may be kept). Bounds Redis's memory; resume from an older id gets a gap.
    #[arg(long = "bus-maxlen", env = "SSE_EDGE_BUS_MAXLEN", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    #[serde(rename = "bus_maxlen")]
    pub maxlen: u64,

    /// Events this node may have appended to the bus and not yet had answered. When it is
    /// full, publishers wait as on a full hub (HTTP publishers are parked, `try_publish`
    /// returns `Full`). Bounds the memory of publishes waiting for the bus.
    #[arg(long = "bus-publish-window", env = "SSE_EDGE_BUS_PUBLISH_WINDOW", default_value_t = 65_536,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16_777_216))]
    #[serde(rename = "bus_publish_window")]
    pub publish_window: usize,

    /// Newest events read from the bus at start into every loop's history, so a node that
    /// restarts serves `Last-Event-ID` resumes from before its restart (bounded further by
    /// the history limits).
    #[arg(long = "bus-warm-events", env = "SSE_EDGE_BUS_WARM_EVENTS", default_value_t = 10_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1_000_000))]
    #[serde(rename = "bus_warm_events")]
    pub warm_events: usize,

    /// Answer `/readyz` with 503 while the bus reader has lost the bus (a balancer then
    /// sends new clients to nodes that still deliver).
    #[arg(long = "bus-unready-when-down", env = "SSE_EDGE_BUS_UNREADY_WHEN_DOWN", default_value_t = true,
          action = clap::ArgAction::Set)]
    #[serde(rename = "bus_unready_when_down")]
    pub unready_when_down: bool,
}

impl BusConfig {
    /// The Redis stream holding the events.
    pub fn stream_key(&self) -> String {
        format!("{{{}}}:events", self.key_prefix)
    }

    /// The Redis key holding the last id handed out.
    pub fn counter_key(&self) -> String {
        format!("{{{}}}:seq", self.key_prefix)
    }

    /// The Redis key counting the entries ever appended (dense: a jump is a loss).
    pub fn entries_key(&self) -> String {
        format!("{{{}}}:n", self.key_prefix)
    }

    /// The Redis hash of each topic's newest reliable id.
    pub fn topics_key(&self) -> String {
        format!("{{{}}}:topics", self.key_prefix)
    }

    /// Checks the URL's scheme and the prefix; the message names the option.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.url {
            let known = ["redis://", "unix://", "redis+unix://"];
            if !known.iter().any(|s| url.starts_with(s)) {
                return Err(
                    "--bus must be redis://[user:pass@]host:port[/db] or unix:///path/to/redis.sock".into()
                );
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err("--bus-key-prefix must be non-empty and contain no braces".into());
        }
        Ok(())
    }
}
