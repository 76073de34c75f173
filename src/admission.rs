//! Admission limits shared by all loops: per-IP connect rate and concurrent streams,
//! per-user concurrent streams, per-topic publish rate.
//!
//! Contract: one [`Admission`] (behind an `Arc`) serves every loop. It is consulted once per
//! accepted connection, stream start, stream end and publish, never per delivered event, so a
//! `Mutex` around each map is cheap. Time is passed in, so everything is testable without
//! sleeping. A refusal is a [`Refusal`] that renders its own `429`.
//!
//! Invariants:
//! 1. Each stream count equals the permits handed out for that key and not yet released:
//!    [`Admission::release`] consumes the [`StreamPermit`] (not `Clone`), so a permit is
//!    released at most once, and decrements saturate at zero.
//! 2. A count that drops to zero is removed: the stream maps hold only keys with live streams.
//! 3. Each rate map holds at most `max_tracked_keys` buckets (the eviction rule is invariant
//!    2 of `crate::rate`, where the token buckets live).
//! 4. A stream or rate limit of 0 is off and tracks nothing.
//! 5. Per-IP limits key a client by [`client_key`]: an IPv4 address (also when it arrives
//!    IPv4-mapped on a dual-stack socket) as itself, an IPv6 address by its network prefix
//!    (`--ipv6-prefix`, default /64, the smallest block one subscriber line is given), so a
//!    host that owns a /64 gets one budget, not 2^64.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::rate::Buckets;
pub use crate::rate::TokenBucket;

/// Default bound on the keys of each rate map (a bucket is a few dozen bytes).
pub const DEFAULT_MAX_TRACKED_KEYS: usize = 100_000;
/// `Retry-After` for a concurrent-stream refusal: a slot frees only when one of the client's
/// other streams ends, so there is no exact time; this keeps retries from hammering.
pub const STREAMS_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Default IPv6 prefix length that per-IP limits key on (invariant 5).
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The limits; `0` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionLimits {
    /// Concurrent streams from one IP (`--max-streams-per-ip`; 0: unlimited).
    pub max_streams_per_ip: usize,
    /// New connections per second from one IP (`--connect-rate-per-ip`; 0: off).
    pub connect_rate_per_ip: f64,
    /// Connections one IP may open at once before the rate applies.
    pub connect_burst_per_ip: f64,
    /// Concurrent streams of one token user (`--max-streams-per-user`; 0: unlimited).
    pub max_streams_per_user: usize,
    /// Publishes per second to one topic (`--publish-rate-per-topic`; 0: off).
    pub publish_rate_per_topic: f64,
    /// Publishes one topic may take at once before the rate applies.
    pub publish_burst_per_topic: f64,
    /// Most keys (IPs, topics) each rate map tracks; bounds its memory.
    pub max_tracked_keys: usize,
    /// IPv6 clients are keyed by this many leading bits (`--ipv6-prefix`, 1..=128).
    pub ipv6_prefix: u8,
}

impl Default for AdmissionLimits {
    /// Everything off except 3 streams per user (the design's default).
    fn default() -> Self {
        Self {
            max_streams_per_ip: 0,
            connect_rate_per_ip: 0.0,
            connect_burst_per_ip: 1.0,
            max_streams_per_user: 3,
            publish_rate_per_topic: 0.0,
            publish_burst_per_topic: 1.0,
            max_tracked_keys: DEFAULT_MAX_TRACKED_KEYS,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

/// The key per-IP limits count `ip` under (invariant 5): IPv4 as is (unwrapping an
/// IPv4-mapped IPv6 address), IPv6 masked to its first `ipv6_prefix` bits.
pub fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(ipv6_prefix.clamp(1, 128));
                let mask = u128::MAX << (128 - bits);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// Too many concurrent streams from one IP.
    IpStreams,
    /// Connecting too fast from one IP.
    IpRate,
    /// Too many concurrent streams of one user.
    UserStreams,
    /// Publishing too fast to one topic.
    TopicRate,
}

impl RefusalReason {
    /// (label, CLI option, message).
    fn describe(self) -> [&'static str; 3] {
        match self {
            RefusalReason::IpStreams => {
                ["ip_streams", "--max-streams-per-ip", "too many concurrent streams from this address"]
            }
            RefusalReason::IpRate => {
                ["ip_rate", "--connect-rate-per-ip", "connecting too fast from this address"]
            }
            RefusalReason::UserStreams => {
                ["user_streams", "--max-streams-per-user", "too many concurrent streams for this user"]
            }
            RefusalReason::TopicRate => {
                ["topic_rate", "--publish-rate-per-topic", "publishing too fast to this topic"]
            }
        }
    }

    /// A stable label for metrics and logs: `ip_streams`, `ip_rate`, `user_streams`,
    /// `topic_rate`.
    pub fn label(self) -> &'static str {
        self.describe()[0]
    }

    /// The CLI option that sets this limit.
    pub fn option(self) -> &'static str {
        self.describe()[1]
    }
}

/// A refused connection, stream or publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} ({})", reason.describe()[2], reason.option())]
pub struct Refusal {
    /// Which limit.
    pub reason: RefusalReason,
    /// When trying again may succeed.
    pub retry_after: Duration,
}

impl Refusal {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs().saturating_add(u64::from(self.retry_after.subsec_nanos() > 0));
        secs.max(1)
    }

    /// The full `429` response: `Retry-After` and a JSON error naming the limit's option.
    pub fn response(&self, keep_alive: bool) -> Bytes {
        let body = format!("{{\"error\":{}}}\n", serde_json::Value::String(self.to_string()));
        let extra = format!("Retry-After: {}\r\n", self.retry_after_secs());
        crate::http::response(429, &extra, "application/json", body.as_bytes(), keep_alive)
    }
}

/// Proof that a stream was counted; hand it back to [`Admission::release`] exactly once.
///
/// Not `Clone`, and `release` takes it by value, so a second release does not compile:
///
/// ```compile_fail
/// use sse_edge::admission::{Admission, AdmissionLimits};
/// let admission = Admission::new(AdmissionLimits::default());
/// let permit = admission.acquire_stream([127, 0, 0, 1].into(), Some("u")).expect("first");
/// admission.release(permit);
/// admission.release(permit);
/// ```
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit that is not released keeps its stream counted"]
pub struct StreamPermit {
    ip: Option<IpAddr>,
    user: Option<String>,
}

#[derive(Debug, Default)]
struct StreamCounts {
    ips: HashMap<IpAddr, usize>,
    users: HashMap<String, usize>,
}

/// The shared admission state. `Send + Sync`; put it in an `Arc`.
#[derive(Debug)]
pub struct Admission {
    /// Replaced by [`Admission::set_limits`] on a config reload.
    limits: std::sync::RwLock<AdmissionLimits>,
    streams: Mutex<StreamCounts>,
    connects: Mutex<Buckets<IpAddr>>,
    publishes: Mutex<Buckets<String>>,
}

/// A poisoned lock still holds consistent counts (no update panics half-way), so use it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_on(rate: f64) -> bool {
    rate.is_finite() && rate > 0.0
}

impl Admission {
    /// Admission with these limits and nothing tracked yet.
    pub fn new(limits: AdmissionLimits) -> Self {
        let l = limits;
        Self {
            limits: std::sync::RwLock::new(limits),
            streams: Mutex::default(),
            connects: Mutex::new(Buckets::new(
                l.connect_rate_per_ip,
                l.connect_burst_per_ip,
                l.max_tracked_keys,
            )),
            publishes: Mutex::new(Buckets::new(
                l.publish_rate_per_topic,
                l.publish_burst_per_topic,
                l.max_tracked_keys,
            )),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> AdmissionLimits {
        *self.limits.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies new limits (a config reload). Stream counts carry over: a lowered limit
    /// refuses new streams until enough old ones end, and a limit turned on from 0 counts
    /// only streams opened after this call (invariant 4: untracked before). A rate or burst
    /// that changed starts its token buckets afresh.
    pub fn set_limits(&self, new: AdmissionLimits) {
        let mut limits = self.limits.write().unwrap_or_else(PoisonError::into_inner);
        let old = *limits;
        if (old.connect_rate_per_ip, old.connect_burst_per_ip)
            != (new.connect_rate_per_ip, new.connect_burst_per_ip)
        {
            *lock(&self.connects) =
                Buckets::new(new.connect_rate_per_ip, new.connect_burst_per_ip, new.max_tracked_keys);
        }
        if (old.publish_rate_per_topic, old.publish_burst_per_topic)
            != (new.publish_rate_per_topic, new.publish_burst_per_topic)
        {
            *lock(&self.publishes) =
                Buckets::new(new.publish_rate_per_topic, new.publish_burst_per_topic, new.max_tracked_keys);
        }
        *limits = new;
    }

    /// Admits a new connection from `ip` under the per-IP connect rate.
    pub fn admit_connect(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let limits = self.limits();
        if !is_on(limits.connect_rate_per_ip) {
            return Ok(());
        }
        lock(&self.connects)
            .take(&client_key(ip, limits.ipv6_prefix), now)
            .map_err(|retry_after| Refusal { reason: RefusalReason::IpRate, retry_after })
    }

    /// Admits a publish to `topic` under the per-topic publish rate.
    pub fn admit_publish(&self, topic: &str, now: Instant) -> Result<(), Refusal> {
        if !is_on(self.limits().publish_rate_per_topic) {
            return Ok(());
        }
        lock(&self.publishes)
            .take(topic, now)
            .map_err(|retry_after| Refusal { reason: RefusalReason::TopicRate, retry_after })
    }

    /// Counts a new stream from `ip` (of `user`, when its token named one). Both limits are
    /// checked before either count moves, so a refusal changes nothing.
    pub fn acquire_stream(&self, ip: IpAddr, user: Option<&str>) -> Result<StreamPermit, Refusal> {
        let limits = self.limits();
        let (max_ip, max_user) = (limits.max_streams_per_ip, limits.max_streams_per_user);
        let user = user.filter(|_| max_user > 0);
        let ip = client_key(ip, limits.ipv6_prefix);
        let refuse = |reason| Refusal { reason, retry_after: STREAMS_RETRY_AFTER };
        let mut counts = lock(&self.streams);
        if max_ip > 0 && counts.ips.get(&ip).copied().unwrap_or(0) >= max_ip {
            return Err(refuse(RefusalReason::IpStreams));
        }
        if let Some(u) = user {
            if counts.users.get(u).copied().unwrap_or(0) >= max_user {
                return Err(refuse(RefusalReason::UserStreams));
            }
        }
        let ip = (max_ip > 0).then_some(ip);
        if let Some(ip) = ip {
            *counts.ips.entry(ip).or_insert(0) += 1;
        }
        let user = user.map(str::to_string);
        if let Some(u) = &user {
            *counts.users.entry(u.clone()).or_insert(0) += 1;
        }
        Ok(StreamPermit { ip, user })
    }

    /// Uncounts the stream `permit` was issued for. Call once when the stream closes.
    pub fn release(&self, permit: StreamPermit) {
        let mut counts = lock(&self.streams);
        if let Some(ip) = permit.ip {
            decrement(&mut counts.ips, &ip);
        }
        if let Some(user) = permit.user {
            decrement(&mut counts.users, user.as_str());
        }
    }

    /// Keys with live streams: `(ips, users)`.
    pub fn tracked(&self) -> (usize, usize) {
        let counts = lock(&self.streams);
        (counts.ips.len(), counts.users.len())
    }
}

fn decrement<K: Hash + Eq + Borrow<Q>, Q: Hash + Eq + ?Sized>(map: &mut HashMap<K, usize>, key: &Q) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn admission(f: impl FnOnce(&mut AdmissionLimits)) -> Admission {
        let mut l = AdmissionLimits { max_streams_per_user: 0, max_tracked_keys: 1000, ..Default::default() };
        f(&mut l);
        Admission::new(l)
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a, 64), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(client_key(a, 64), client_key(b, 64));
        assert_ne!(client_key(a, 64), client_key(other, 64));
        assert_eq!(client_key(a, 48), client_key(other, 48));
        assert_eq!(client_key(a, 128), a);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped, 64), IpAddr::from([192, 0, 2, 7]), "IPv4-mapped: the IPv4 address");
        assert_eq!(client_key(ip(7), 64), ip(7));

        // One /64 shares one stream budget and one connect bucket.
        let adm = admission(|l| {
            l.max_streams_per_ip = 1;
            l.connect_rate_per_ip = 1.0;
            l.connect_burst_per_ip = 1.0;
        });
        let permit = adm.acquire_stream(a, None).unwrap();
        assert_eq!(adm.acquire_stream(b, None).unwrap_err().reason, RefusalReason::IpStreams);
        let elsewhere = adm.acquire_stream(other, None).unwrap();
        adm.release(permit);
        adm.release(elsewhere);
        assert_eq!(adm.tracked().0, 0, "released under the same key it was counted under");
        let now = Instant::now();
        assert!(adm.admit_connect(a, now).is_ok());
        assert_eq!(adm.admit_connect(b, now).unwrap_err().reason, RefusalReason::IpRate);
    }

    #[test]
    fn rate_limits_refuse_per_key_and_recover() {
        let a = admission(|l| (l.connect_rate_per_ip, l.connect_burst_per_ip) = (1.0, 2.0));
        let t0 = Instant::now();
        assert!(a.admit_connect(ip(1), t0).is_ok() && a.admit_connect(ip(1), t0).is_ok());
        let r = a.admit_connect(ip(1), t0).unwrap_err();
        assert_eq!((r.reason, r.retry_after_secs()), (RefusalReason::IpRate, 1));
        assert!(a.admit_connect(ip(2), t0).is_ok(), "other IPs are unaffected");
        assert!(a.admit_connect(ip(1), t0 + ms(999)).is_err());
        assert!(a.admit_connect(ip(1), t0 + ms(1000)).is_ok());
        assert!((0..100).all(|_| a.admit_publish("jobs", t0).is_ok()), "publish rate is off");

        let a = admission(|l| (l.publish_rate_per_topic, l.publish_burst_per_topic) = (10.0, 5.0));
        assert!((0..5).all(|_| a.admit_publish("jobs", t0).is_ok()));
        let r = a.admit_publish("jobs", t0).unwrap_err();
        assert_eq!((r.reason, r.retry_after_secs()), (RefusalReason::TopicRate, 1));
        assert!(a.admit_publish("other", t0).is_ok());
        assert!(a.admit_publish("jobs", t0 + ms(100)).is_ok());
        assert!(a.admit_publish("jobs", t0 + ms(100)).is_err());
        assert!((0..5).all(|_| a.admit_publish("jobs", t0 + ms(1000)).is_ok()));
        assert!((0..100).all(|_| a.admit_connect(ip(1), t0).is_ok()), "connect rate is off");
        assert!(lock(&a.connects).len() == 0, "an off limit tracks nothing");
    }

    #[test]
    fn ip_streams_refuse_at_the_limit_and_recover_on_release() {
        let a = admission(|l| l.max_streams_per_ip = 2);
        let (p1, p2) = (a.acquire_stream(ip(1), None).unwrap(), a.acquire_stream(ip(1), None).unwrap());
        let r = a.acquire_stream(ip(1), None).unwrap_err();
        assert_eq!((r.reason, r.retry_after), (RefusalReason::IpStreams, STREAMS_RETRY_AFTER));
        let p3 = a.acquire_stream(ip(2), Some("alice")).unwrap();
        assert_eq!(a.tracked(), (2, 0), "no user limit: users are not tracked");
        a.release(p1);
        let p4 = a.acquire_stream(ip(1), None).unwrap();
        [p2, p3, p4].into_iter().for_each(|p| a.release(p));
        assert_eq!(a.tracked(), (0, 0));
    }

    #[test]
    fn user_streams_are_limited_independently_of_ip() {
        let a = admission(|l| l.max_streams_per_user = 2);
        let p1 = a.acquire_stream(ip(1), Some("alice")).unwrap();
        let p2 = a.acquire_stream(ip(2), Some("alice")).unwrap();
        assert_eq!(a.acquire_stream(ip(3), Some("alice")).unwrap_err().reason, RefusalReason::UserStreams);
        let bob = a.acquire_stream(ip(1), Some("bob")).unwrap();
        let anon: Vec<_> = (0..10).map(|_| a.acquire_stream(ip(1), None).unwrap()).collect();
        assert_eq!(a.tracked(), (0, 2), "no IP limit: IPs are not tracked");
        a.release(p2);
        let p3 = a.acquire_stream(ip(3), Some("alice")).unwrap();
        [p1, p3, bob].into_iter().chain(anon).for_each(|p| a.release(p));
        assert_eq!(a.tracked(), (0, 0));
    }

    #[test]
    fn a_refusal_changes_no_count_and_a_stray_release_cannot_underflow() {
        let a = admission(|l| (l.max_streams_per_ip, l.max_streams_per_user) = (1, 1));
        let p = a.acquire_stream(ip(1), Some("alice")).unwrap();
        assert_eq!(a.acquire_stream(ip(1), Some("bob")).unwrap_err().reason, RefusalReason::IpStreams);
        assert_eq!(a.acquire_stream(ip(2), Some("alice")).unwrap_err().reason, RefusalReason::UserStreams);
        assert_eq!(a.tracked(), (1, 1));
        a.release(p);
        // A permit from another Admission names keys this one no longer tracks.
        a.release(Admission::new(a.limits()).acquire_stream(ip(1), Some("alice")).unwrap());
        assert_eq!(a.tracked(), (0, 0));
        let p = a.acquire_stream(ip(2), Some("bob")).unwrap();
        assert_eq!(a.tracked(), (1, 1));
        a.release(p);
    }

    #[test]
    fn counts_are_exact_after_many_cycles_across_threads() {
        let a = admission(|l| (l.max_streams_per_ip, l.max_streams_per_user) = (64, 64));
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let a = &a;
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..10_000usize {
                        held.push(a.acquire_stream(ip(t % 2), Some(&format!("u{}", i % 7))).unwrap());
                        if held.len() == 3 || i % 5 == 0 {
                            a.release(held.swap_remove(i % held.len())); // out of order
                        }
                    }
                    held.into_iter().for_each(|p| a.release(p));
                });
            }
        });
        assert_eq!(a.tracked(), (0, 0));
    }

    #[test]
    fn bucket_maps_stay_bounded_and_evict_full_buckets_first() {
        let a = admission(|l| {
            (l.connect_rate_per_ip, l.connect_burst_per_ip, l.max_tracked_keys) = (1.0, 5.0, 4)
        });
        let t0 = Instant::now();
        assert!((0..5).all(|_| a.admit_connect(ip(1), t0).is_ok()));
        assert!((2..=4).all(|n| a.admit_connect(ip(n), t0).is_ok()));
        // One second later 2..=4 are full again and 1 has one token: the full ones go.
        let t1 = t0 + ms(1000);
        assert!(a.admit_connect(ip(5), t1).is_ok());
        assert_eq!(lock(&a.connects).len(), 2);
        assert!(a.admit_connect(ip(1), t1).is_ok());
        assert_eq!(a.admit_connect(ip(1), t1).unwrap_err().reason, RefusalReason::IpRate, "state kept");
        // A flood of distinct keys with no time passing never grows a map past the bound.
        for n in 0..=255 {
            let _ = a.admit_connect(IpAddr::from([192, 0, 2, n]), t1);
            assert!(lock(&a.connects).len() <= 4);
        }
        let a = admission(|l| (l.publish_rate_per_topic, l.max_tracked_keys) = (1.0, 100));
        for i in 0..10_000 {
            assert!(a.admit_publish(&format!("t{i}"), t0).is_ok());
            assert!(lock(&a.publishes).len() <= 100);
        }
    }

    #[test]
    fn refusal_response_is_a_429_naming_the_option() {
        let text =
            |reason, retry_after| String::from_utf8(Refusal { reason, retry_after }.response(true).to_vec());
        let r = text(RefusalReason::IpStreams, ms(200)).unwrap();
        assert!(r.starts_with("HTTP/1.1 429 Too Many Requests\r\n") && r.contains("\r\nRetry-After: 1\r\n"));
        assert!(r.ends_with(
            "{\"error\":\"too many concurrent streams from this address (--max-streams-per-ip)\"}\n"
        ));
        for (reason, retry, secs, option) in [
            (RefusalReason::TopicRate, ms(2300), 3, "--publish-rate-per-topic"),
            (RefusalReason::IpRate, Duration::ZERO, 1, "--connect-rate-per-ip"),
            (RefusalReason::UserStreams, ms(5000), 5, "--max-streams-per-user"),
            (RefusalReason::IpRate, Duration::MAX, u64::MAX, "--connect-rate-per-ip"),
        ] {
            let r = text(reason, retry).unwrap();
            assert!(r.contains(&format!("\r\nRetry-After: {secs}\r\n")) && r.contains(option), "{r}");
        }
        let all = [
            RefusalReason::IpStreams,
            RefusalReason::IpRate,
            RefusalReason::UserStreams,
            RefusalReason::TopicRate,
        ];
        assert_eq!(all.map(RefusalReason::label), ["ip_streams", "ip_rate", "user_streams", "topic_rate"]);
        fn shared<T: Send + Sync>() {}
        shared::<Admission>();
    }
}
