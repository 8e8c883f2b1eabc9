//! Login regulation (failure counting and lockouts) and token revocations.
//!
//! Both tables are shared by every worker thread (sharded `DashMap`, no global lock) and
//! bounded, so neither a username spray nor a logout flood can grow memory without limit.
//! Times are parameters so the logic is testable without sleeping.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::time::Instant;

/// Keys longer than this are truncated: real usernames and IPs are far shorter, and
/// over-long junk keys sharing a prefix may share a counter without harm.
pub const MAX_KEY_BYTES: usize = 256;
/// A full table is swept at most this often, so a flood of new keys cannot make every
/// failed login pay for a full scan.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// How many failures within `window` lock a key, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub failures: u32,
    pub window: Duration,
    pub duration: Duration,
    /// IPv6 clients are counted per network of this prefix length (1..=128), see
    /// [`address_key`].
    pub ipv6_prefix: u8,
}

/// The per-client lockout key for `ip`.
///
/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack socket reports) is the
/// IPv4 address, so one client has one key whichever way it connects. Other IPv6 addresses
/// are keyed by their `/ipv6_prefix` network: a single subscriber is routinely handed a
/// whole /64 and could otherwise take a fresh address, and a fresh counter, per guess.
pub fn address_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = ipv6_prefix.clamp(1, 128);
            let mask = u128::MAX << (128 - u32::from(prefix));
            let network = Ipv6Addr::from(u128::from(v6) & mask);
            format!("{network}/{prefix}")
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

impl Entry {
    fn lock_left(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn expired(&self, policy: &LockoutPolicy, now: Instant) -> bool {
        self.lock_left(now).is_none() && now >= self.window_start + policy.window
    }
}

/// Counts failed logins per key with expiry and a size bound.
///
/// Use one instance for usernames and another for client IPs (IPv6 keyed by /64), so a
/// spray of usernames cannot crowd out per-IP tracking. When full (after purging expired
/// entries) a *new* key is not tracked: existing entries, and so existing locks, are never
/// evicted, so filling the table cannot unlock anyone; the untracked key is reported as not
/// locked, and the per-IP table still counts the attacker's failures.
#[derive(Debug)]
pub struct Lockouts {
    policy: LockoutPolicy,
    max_keys: usize,
    entries: DashMap<String, Entry>,
    last_purge: Mutex<Option<Instant>>,
}

/// Whole seconds, rounded up, at least 1: for a `Retry-After` header.
fn retry_after(left: Duration) -> Duration {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

fn bounded(key: &str) -> &str {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let mut end = MAX_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

impl Lockouts {
    pub fn new(policy: LockoutPolicy, max_keys: usize) -> Self {
        Self {
            policy,
            max_keys,
            entries: DashMap::new(),
            last_purge: Mutex::new(None),
        }
    }

    /// The policy this table was built with.
    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// If locked, `Some(retry_after)` (whole seconds, at least 1).
    pub fn locked(&self, key: &str, now: Instant) -> Option<Duration> {
        self.entries
            .get(bounded(key))?
            .lock_left(now)
            .map(retry_after)
    }

    /// Record a failure; `Some(retry_after)` if the key is now locked.
    ///
    /// The window starts at the first failure and resets once it elapses (or once a lock
    /// has run out); reaching `failures` within it locks the key for `duration`. Failures
    /// during an active lock return the remaining time but do not extend it, so an
    /// attacker cannot keep a victim locked any longer than by retrying after expiry.
    /// A zero `duration` disables locking.
    pub fn record_failure(&self, key: &str, now: Instant) -> Option<Duration> {
        let key = bounded(key);
        if let Some(mut entry) = self.entries.get_mut(key) {
            return self.fail(&mut entry, now);
        }
        if self.entries.len() >= self.max_keys {
            self.purge_throttled(now);
            if self.entries.len() >= self.max_keys {
                return None;
            }
        }
        // Only now take the shard lock (`len` above reads every shard).
        let mut entry = self.entries.entry(key.to_owned()).or_insert(Entry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        self.fail(&mut entry, now)
    }

    fn fail(&self, e: &mut Entry, now: Instant) -> Option<Duration> {
        if let Some(left) = e.lock_left(now) {
            return Some(retry_after(left));
        }
        if e.locked_until.is_some() || now >= e.window_start + self.policy.window {
            *e = Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
            };
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= self.policy.failures && !self.policy.duration.is_zero() {
            e.locked_until = Some(now + self.policy.duration);
            return Some(retry_after(self.policy.duration));
        }
        None
    }

    /// Clears the failure count. An active lock is kept: a success cannot happen through a
    /// lock that the caller honours, and keeping it stops a valid account from being used
    /// to reset a shared key (e.g. an IP) between guesses. Callers should normally call
    /// this for the username key only.
    pub fn record_success(&self, key: &str) {
        let key = bounded(key);
        self.entries.remove_if(key, |_, e| e.locked_until.is_none());
        if let Some(mut e) = self.entries.get_mut(key) {
            e.failures = 0;
        }
    }

    /// Drop entries whose window and lock are both over.
    pub fn purge_expired(&self, now: Instant) {
        self.entries.retain(|_, e| !e.expired(&self.policy, now));
    }

    fn purge_throttled(&self, now: Instant) {
        let Ok(mut last) = self.last_purge.try_lock() else {
            return; // someone else is sweeping right now
        };
        if last.is_some_and(|t| now < t + PURGE_INTERVAL) {
            return;
        }
        *last = Some(now);
        drop(last);
        self.purge_expired(now);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Revoked token ids, kept until their token could no longer verify anyway.
///
/// Entries stay [`Self::GRACE_SECS`] past the given expiry so that a token still accepted
/// within the verifier's leeway stays revoked. Pass `exp`; add the leeway if it is larger
/// than the grace.
#[derive(Debug)]
pub struct Revocations {
    max: usize,
    entries: DashMap<String, u64>,
    last_purge: Mutex<u64>,
}

impl Revocations {
    /// Retention past `exp`, covering any sane clock leeway.
    pub const GRACE_SECS: u64 = 600;

    pub fn new(max: usize) -> Self {
        Self {
            max,
            entries: DashMap::new(),
            last_purge: Mutex::new(0),
        }
    }

    /// Revoke `jti` until `expires_at_unix` (+ grace). Returns false if the table is full of
    /// live revocations and this one could not be recorded: a revocation is never dropped
    /// silently, and none is evicted to make room, so the caller must report the failure.
    pub fn revoke(&self, jti: &str, expires_at_unix: u64) -> bool {
        let jti = bounded(jti);
        if let Some(mut at) = self.entries.get_mut(jti) {
            *at = (*at).max(expires_at_unix);
            return true;
        }
        if self.entries.len() >= self.max {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Ok(mut last) = self.last_purge.try_lock() {
                if *last != now {
                    *last = now;
                    drop(last);
                    self.purge(now);
                }
            }
            if self.entries.len() >= self.max {
                return false;
            }
        }
        self.entries
            .entry(jti.to_owned())
            .and_modify(|at| *at = (*at).max(expires_at_unix))
            .or_insert(expires_at_unix);
        true
    }

    pub fn is_revoked(&self, jti: &str, now_unix: u64) -> bool {
        self.entries
            .get(bounded(jti))
            .is_some_and(|at| now_unix < at.saturating_add(Self::GRACE_SECS))
    }

    /// Drop revocations of tokens that can no longer verify.
    pub fn purge(&self, now_unix: u64) {
        self.entries
            .retain(|_, at| now_unix < at.saturating_add(Self::GRACE_SECS));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    const POLICY: LockoutPolicy = LockoutPolicy {
        failures: 3,
        window: Duration::from_secs(60),
        duration: Duration::from_secs(300),
        ipv6_prefix: 64,
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn locks_after_n_failures_and_expires() {
        let l = Lockouts::new(POLICY, 10);
        let t0 = Instant::now();
        assert_eq!(l.record_failure("alice", t0), None);
        assert_eq!(l.record_failure("alice", t0 + secs(1)), None);
        assert_eq!(l.locked("alice", t0 + secs(1)), None);
        assert_eq!(l.record_failure("alice", t0 + secs(2)), Some(secs(300)));
        assert_eq!(l.locked("alice", t0 + secs(2)), Some(secs(300)));
        assert_eq!(
            l.locked("alice", t0 + secs(2) + Duration::from_millis(1500)),
            Some(secs(299))
        );
        assert_eq!(l.locked("bob", t0 + secs(2)), None);
        // A failure during the lock does not extend it.
        assert_eq!(l.record_failure("alice", t0 + secs(100)), Some(secs(202)));
        assert_eq!(l.locked("alice", t0 + secs(301)), Some(secs(1)));
        assert_eq!(l.locked("alice", t0 + secs(302)), None);
        // After expiry the count starts afresh.
        assert_eq!(l.record_failure("alice", t0 + secs(303)), None);
        assert_eq!(l.locked("alice", t0 + secs(303)), None);
    }

    #[test]
    fn window_resets() {
        let l = Lockouts::new(POLICY, 10);
        let t0 = Instant::now();
        l.record_failure("k", t0);
        l.record_failure("k", t0 + secs(59));
        assert_eq!(l.record_failure("k", t0 + secs(60)), None); // new window: count 1
        assert_eq!(l.record_failure("k", t0 + secs(61)), None);
        assert!(l.record_failure("k", t0 + secs(62)).is_some());
    }

    #[test]
    fn success_clears_counter_but_not_lock() {
        let l = Lockouts::new(POLICY, 10);
        let t0 = Instant::now();
        l.record_failure("k", t0);
        l.record_failure("k", t0);
        l.record_success("k");
        assert_eq!(l.len(), 0);
        assert_eq!(l.record_failure("k", t0), None);
        l.record_failure("k", t0);
        assert!(l.record_failure("k", t0).is_some());
        l.record_success("k");
        assert!(l.locked("k", t0).is_some());
    }

    #[test]
    fn zero_duration_never_locks() {
        let l = Lockouts::new(
            LockoutPolicy {
                failures: 1,
                duration: Duration::ZERO,
                ..POLICY
            },
            10,
        );
        let t0 = Instant::now();
        assert_eq!(l.record_failure("k", t0), None);
        assert_eq!(l.locked("k", t0), None);
    }

    #[test]
    fn size_bound_holds() {
        let l = Lockouts::new(POLICY, 100_000);
        let t0 = Instant::now();
        let mut rng = rand::rng();
        for _ in 0..200_000 {
            let key = format!("{:016x}", rng.random::<u64>());
            l.record_failure(&key, t0);
        }
        assert_eq!(l.len(), 100_000);
        // Existing keys still count and lock while full.
        let known = l
            .entries
            .iter()
            .next()
            .map(|e| e.key().clone())
            .expect("a key");
        l.record_failure(&known, t0);
        assert!(l.record_failure(&known, t0).is_some());
        // Once windows elapse, a new key triggers a purge and is tracked.
        l.record_failure("late", t0 + secs(61));
        assert!(l.len() <= 2);
        assert!(l.entries.contains_key("late"));
        l.purge_expired(t0 + secs(400));
        assert!(l.is_empty());
    }

    #[test]
    fn long_keys_are_bounded() {
        let l = Lockouts::new(POLICY, 10);
        let key = "é".repeat(1000);
        l.record_failure(&key, Instant::now());
        assert!(l.entries.iter().all(|e| e.key().len() <= MAX_KEY_BYTES));
    }

    fn key(ip: &str, prefix: u8) -> String {
        address_key(ip.parse().expect("an IP address"), prefix)
    }

    #[test]
    fn ipv6_addresses_in_one_prefix_share_a_key() {
        let a = key("2001:db8:1:2::1", 64);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, key("2001:db8:1:2:ffff:ffff:ffff:ffff", 64));
        assert_ne!(a, key("2001:db8:1:3::1", 64));
        assert_eq!(key("2001:db8:1:2::1", 48), key("2001:db8:1:ffff::1", 48));
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("2001:db8::1", 128), "2001:db8::1/128");
        assert_eq!(key("2001:db8::1", 1), "::/1");
        assert_eq!(key("ffff::1", 1), "8000::/1");
        // Out-of-range prefixes (refused by the config) are clamped, never a panic.
        assert_eq!(key("2001:db8::1", 0), "::/1");
        assert_eq!(key("2001:db8::1", 200), "2001:db8::1/128");
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        assert_eq!(key("::ffff:192.0.2.7", 64), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7", 64), key("192.0.2.7", 64));
        assert_ne!(key("::ffff:192.0.2.7", 64), key("::ffff:192.0.2.8", 64));
        // Only the mapped form is IPv4; other IPv6 stays IPv6.
        assert_eq!(key("64:ff9b::c000:207", 64), "64:ff9b::/64");
    }

    #[test]
    fn revocation_expiry() {
        let r = Revocations::new(2);
        assert!(r.revoke("a", 1000));
        assert!(r.is_revoked("a", 999));
        assert!(r.is_revoked("a", 1000 + Revocations::GRACE_SECS - 1));
        assert!(!r.is_revoked("a", 1000 + Revocations::GRACE_SECS));
        assert!(!r.is_revoked("b", 0));
        r.purge(1000 + Revocations::GRACE_SECS);
        assert!(r.is_empty());
    }

    #[test]
    fn revocations_bounded_without_dropping_live_ones() {
        let r = Revocations::new(2);
        let far = u64::MAX - 1;
        assert!(r.revoke("a", far));
        assert!(r.revoke("b", far));
        assert!(!r.revoke("c", far));
        assert!(r.revoke("a", far)); // already present: fine
        assert_eq!(r.len(), 2);
        assert!(r.is_revoked("a", 0) && r.is_revoked("b", 0));
        // Expired (by the wall clock) entries make room.
        let r = Revocations::new(1);
        assert!(r.revoke("old", 1));
        assert!(r.revoke("new", far));
        assert!(r.is_revoked("new", 0));
    }
}
