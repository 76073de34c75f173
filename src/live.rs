//! The settings that change without a restart (SIGHUP, [`crate::Reloader::reload`]):
//! publish tokens, subscribe keys, CORS origins, admission limits, heartbeat and retry,
//! overload thresholds, the delivery-lag budget and the log level ([`RELOADABLE`]).
//!
//! Contract: the running node holds one `Arc<Live>` behind a lock plus a generation counter.
//! A reload validates the new [`Config`], builds a new `Live` from it, swaps the `Arc` and
//! bumps the generation; each loop compares the generation once per iteration (one relaxed
//! load, never per event) and takes the new `Arc` when it moved. Other threads read the
//! `Arc` per request or per check. Streams are never touched by a reload: they see new
//! values the next time they are read (the next heartbeat, the next admission check).
//!
//! Invariants:
//! 1. A config that fails [`Config::validate`] or cannot build a `Live` (an empty subscribe
//!    key, a bad cookie name) changes nothing; the failure is counted and logged once.
//! 2. Options outside [`RELOADABLE`] keep the value the node started with; each one that
//!    differs in the new config is logged "changed, needs restart" at every reload.
//! 3. `Live::config` is the effective configuration: reloadable options from the newest
//!    successful reload, the rest from start. Its [`config_hash`] labels `sse_config_info`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;

use crate::admission::{AdmissionLimits, DEFAULT_MAX_TRACKED_KEYS};
use crate::auth::{PublishAuth, SubscribeVerifier};
use crate::cors::Cors;
use crate::{Config, ConfigError};

/// Options applied live by a reload (keys as in the config file). Every other option needs
/// a restart.
pub const RELOADABLE: &[&str] = &[
    "publish_token",
    "subscribe_key",
    "subscribe_cookie",
    "cors_origin",
    "max_streams_per_ip",
    "connect_rate_per_ip",
    "connect_burst_per_ip",
    "ipv6_prefix",
    "max_streams_per_user",
    "publish_rate_per_topic",
    "publish_burst_per_topic",
    "heartbeat_ms",
    "retry_ms",
    "overload_lag_ms",
    "overload_queued_bytes",
    "unready_when_overloaded",
    "max_delivery_lag_ms",
    "log_level",
];

/// The reloadable part of the running configuration, and what is built from it.
pub(crate) struct Live {
    /// The effective configuration (invariant 3).
    pub config: Config,
    /// Who may publish.
    pub publish_auth: PublishAuth,
    /// Subscribe token verification, when `--subscribe-key` is set.
    pub verifier: Option<SubscribeVerifier>,
    /// Allowed browser origins.
    pub cors: Cors,
    /// The first bytes of every new stream (carries `retry:`).
    pub prelude: Bytes,
}

impl Live {
    /// Builds what the loops use from `config`.
    pub fn new(config: Config) -> Result<Live, ConfigError> {
        let verifier = if config.subscribe_key.is_empty() {
            None
        } else {
            let keys: Vec<&[u8]> = config.subscribe_key.iter().map(|k| k.as_bytes()).collect();
            Some(
                SubscribeVerifier::with_keys(&keys, config.subscribe_cookie.clone())
                    .map_err(|e| ConfigError(format!("--subscribe-key/--subscribe-cookie: {e}")))?,
            )
        };
        Ok(Live {
            publish_auth: PublishAuth::new(config.publish_token.iter().cloned()),
            verifier,
            cors: Cors::new(&config.cors_origin),
            prelude: crate::sse::prelude(config.retry_ms),
            config,
        })
    }

    /// The admission limits of this configuration.
    pub fn admission_limits(&self) -> AdmissionLimits {
        limits(&self.config)
    }
}

/// The admission limits of `c`.
pub(crate) fn limits(c: &Config) -> AdmissionLimits {
    AdmissionLimits {
        max_streams_per_ip: c.max_streams_per_ip,
        connect_rate_per_ip: c.connect_rate_per_ip,
        connect_burst_per_ip: c.connect_burst_per_ip,
        max_streams_per_user: c.max_streams_per_user,
        publish_rate_per_topic: c.publish_rate_per_topic,
        publish_burst_per_topic: c.publish_burst_per_topic,
        max_tracked_keys: DEFAULT_MAX_TRACKED_KEYS,
        ipv6_prefix: c.ipv6_prefix,
    }
}

/// `running` with every [`RELOADABLE`] option taken from `new`, and the keys of the other
/// options whose values differ (invariant 2).
pub fn merge(running: &Config, new: &Config) -> (Config, Vec<String>) {
    let mut merged = running.clone();
    merged.publish_token = new.publish_token.clone();
    merged.subscribe_key = new.subscribe_key.clone();
    merged.subscribe_cookie = new.subscribe_cookie.clone();
    merged.cors_origin = new.cors_origin.clone();
    merged.max_streams_per_ip = new.max_streams_per_ip;
    merged.connect_rate_per_ip = new.connect_rate_per_ip;
    merged.connect_burst_per_ip = new.connect_burst_per_ip;
    merged.ipv6_prefix = new.ipv6_prefix;
    merged.max_streams_per_user = new.max_streams_per_user;
    merged.publish_rate_per_topic = new.publish_rate_per_topic;
    merged.publish_burst_per_topic = new.publish_burst_per_topic;
    merged.heartbeat_ms = new.heartbeat_ms;
    merged.retry_ms = new.retry_ms;
    merged.overload_lag_ms = new.overload_lag_ms;
    merged.overload_queued_bytes = new.overload_queued_bytes;
    merged.unready_when_overloaded = new.unready_when_overloaded;
    merged.max_delivery_lag_ms = new.max_delivery_lag_ms;
    merged.log_level = new.log_level.clone();
    let (was, wanted) = (json(&merged), json(new));
    let restart = wanted
        .iter()
        .filter(|(key, value)| was.get(*key) != Some(value))
        .map(|(key, _)| key.clone())
        .collect();
    (merged, restart)
}

fn json(c: &Config) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// A short, stable hash of the effective configuration (FNV-1a over its JSON form with
/// secrets masked, 12 hex digits; not a cryptographic digest): equal on nodes that run the same settings, changed
/// by every applied reload that changes one.
pub fn config_hash(c: &Config) -> String {
    // Over the masked form: the hash is published (`sse_config_info`, logs), and a hash of
    // the secrets would let anyone who reads it guess a short token offline.
    let masked: serde_json::Map<String, serde_json::Value> =
        json(c).iter().map(|(key, value)| (key.clone(), masked(key, value))).collect();
    let text = serde_json::Value::Object(masked).to_string();
    let hash =
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{:012x}", hash >> 16)
}

/// Keys whose values are secrets: masked wherever the configuration is printed or hashed.
const SECRET_KEYS: [&str; 2] = ["publish_token", "subscribe_key"];
/// What a masked secret prints as.
const MASK: &str = "********";

/// `value` with secrets replaced (`--print-config`, [`config_hash`]).
pub(crate) fn masked(key: &str, value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Array(items) if SECRET_KEYS.contains(&key) => {
            Value::Array(items.iter().map(|_| Value::String(MASK.into())).collect())
        }
        Value::String(_) if SECRET_KEYS.contains(&key) => Value::String(MASK.into()),
        Value::String(url) if key == "bus" => Value::String(crate::bus::redis::redact(url)),
        other => other.clone(),
    }
}

/// The log level `config` asks for; `None` keeps the level the process started with.
pub(crate) fn log_level(config: &Config) -> Option<log::LevelFilter> {
    config.log_level.as_deref().and_then(|l| l.parse().ok())
}

/// Reload counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ReloadStats {
    /// Reloads applied.
    pub ok: AtomicU64,
    /// Reloads refused (invariant 1).
    pub error: AtomicU64,
    /// Unix seconds of the last applied reload (or start).
    pub last_success: AtomicU64,
    /// [`config_hash`] of the effective configuration.
    pub hash: Mutex<String>,
}

/// The running reloadable state (the lock and generation of the module contract).
pub(crate) struct LiveCell {
    current: RwLock<Arc<Live>>,
    generation: AtomicU64,
    /// The log level at start, restored when a reload unsets `log_level`.
    base_level: log::LevelFilter,
    /// Reload counters.
    pub stats: ReloadStats,
    /// Held for a whole reload, so two at once (SIGHUP and an embedder) apply one after the
    /// other, never interleaved.
    pub(crate) reloading: Mutex<()>,
}

impl LiveCell {
    /// Holds `live`, the configuration the node starts with; applies its log level.
    pub fn new(live: Live) -> LiveCell {
        let base_level = log::max_level();
        if let Some(level) = log_level(&live.config) {
            log::set_max_level(level);
        }
        let stats = ReloadStats::default();
        *stats.hash.lock().unwrap_or_else(PoisonError::into_inner) = config_hash(&live.config);
        stats.last_success.store(crate::sys::unix_now(), Ordering::Relaxed);
        LiveCell {
            current: RwLock::new(Arc::new(live)),
            generation: AtomicU64::new(0),
            base_level,
            stats,
            reloading: Mutex::new(()),
        }
    }

    /// The current settings.
    pub fn get(&self) -> Arc<Live> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Changes whenever [`LiveCell::get`] would return new settings.
    pub fn generation(&self) -> u64 {
        // Acquire pairs with the Release of `set`: a loop that sees the new generation then
        // takes the new `Arc` (free on x86, where every load is an acquire).
        self.generation.load(Ordering::Acquire)
    }

    /// Swaps in `live` and applies its log level.
    pub fn set(&self, live: Live) {
        log::set_max_level(log_level(&live.config).unwrap_or(self.base_level));
        *self.stats.hash.lock().unwrap_or_else(PoisonError::into_inner) = config_hash(&live.config);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(live);
        self.generation.fetch_add(1, Ordering::Release);
        self.stats.ok.fetch_add(1, Ordering::Relaxed);
        self.stats.last_success.store(crate::sys::unix_now(), Ordering::Relaxed);
    }

    /// Counts and logs a refused reload (invariant 1).
    pub fn failed(&self, why: &dyn std::fmt::Display) {
        self.stats.error.fetch_add(1, Ordering::Relaxed);
        log::error!("config reload failed, nothing changed: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_takes_exactly_the_reloadable_options() {
        let running = Config::loopback();
        let mut new = Config::loopback();
        new.publish_token = vec!["a".into(), "b".into()];
        new.subscribe_key = vec!["k".into()];
        new.subscribe_cookie = Some("c".into());
        new.cors_origin = vec!["https://a".into()];
        new.max_streams_per_ip += 1;
        new.connect_rate_per_ip += 1.0;
        new.connect_burst_per_ip += 1.0;
        new.ipv6_prefix = 48;
        new.max_streams_per_user += 1;
        new.publish_rate_per_topic += 1.0;
        new.publish_burst_per_topic += 1.0;
        new.heartbeat_ms += 1;
        new.retry_ms += 1;
        new.overload_lag_ms += 1;
        new.overload_queued_bytes += 1;
        new.unready_when_overloaded = !new.unready_when_overloaded;
        new.max_delivery_lag_ms += 1;
        new.log_level = Some("debug".into());
        new.backlog += 1;
        new.threads = Some(7);
        let (merged, restart) = merge(&running, &new);
        let (m, n, r) = (json(&merged), json(&new), json(&running));
        for key in RELOADABLE {
            assert_ne!(r.get(*key), n.get(*key), "the test changes {key}");
            assert_eq!(m.get(*key), n.get(*key), "{key} is reloaded");
        }
        for (key, value) in &r {
            if !RELOADABLE.contains(&key.as_str()) {
                assert_eq!(m.get(key), Some(value), "{key} keeps its running value");
            }
        }
        let mut restart = restart;
        restart.sort();
        assert_eq!(restart, vec!["backlog".to_string(), "threads".to_string()]);
        assert_ne!(config_hash(&merged), config_hash(&running));
        assert_eq!(config_hash(&running), config_hash(&Config::loopback()));
    }

    #[test]
    fn the_published_hash_does_not_depend_on_secret_values() {
        let mut a = Config::loopback();
        a.publish_token = vec!["short".into()];
        a.subscribe_key = vec!["k1".into()];
        let mut b = a.clone();
        b.publish_token = vec!["other".into()];
        b.subscribe_key = vec!["k2".into()];
        assert_eq!(config_hash(&a), config_hash(&b), "the hash must not leak the tokens");
        b.publish_token.push("second".into());
        assert_ne!(config_hash(&a), config_hash(&b), "adding a token still changes it");
    }

    #[test]
    fn every_reloadable_key_is_an_option() {
        let keys = json(&Config::default());
        for key in RELOADABLE {
            assert!(keys.contains_key(*key), "{key}");
        }
    }
}
