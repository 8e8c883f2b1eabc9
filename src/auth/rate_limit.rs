//! The per-identity rate-limit table: one GCRA timestamp per (route, caller), bounded, shared
//! by every serving thread. The caller is the verified subject (per issuer) or, for anonymous
//! requests, the client address (per IPv6 network) — never a raw client header.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::auth::lockout::network;
use crate::policy::rate_limit::{RateLimit, Verdict};

/// Who a request counts against.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    Subject { issuer: &'a str, subject: &'a str },
    Address(IpAddr),
}

/// The table. Keys are keyed hashes (no allocation per request; a process-random key keeps
/// anyone from choosing a subject that collides with someone else's).
#[derive(Debug)]
pub struct RateLimits {
    table: DashMap<u64, AtomicU64>,
    hasher: std::collections::hash_map::RandomState,
    max_keys: usize,
    epoch: Instant,
    ipv6_prefix: u8,
}

impl RateLimits {
    pub fn new(max_keys: usize, ipv6_prefix: u8) -> RateLimits {
        RateLimits {
            table: DashMap::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            max_keys,
            epoch: Instant::now(),
            ipv6_prefix,
        }
    }

    /// Count one request of `caller` on `route` against `limit`. `None` when the table is
    /// full of live keys (the caller decides what that means).
    pub fn check(&self, route: &str, caller: Caller<'_>, limit: &RateLimit) -> Option<Verdict> {
        let key = self.key(route, caller);
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let Some(entry) = self.table.get(&key) {
            return Some(update(&entry, limit, now));
        }
        if self.table.len() >= self.max_keys {
            self.sweep(now);
            if self.table.len() >= self.max_keys {
                return None;
            }
        }
        let entry = self.table.entry(key).or_insert_with(|| AtomicU64::new(0));
        Some(update(&entry, limit, now))
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// This process's key of `(route, caller)` (what [`Self::raise`] takes).
    pub fn local_key(&self, route: &str, caller: Caller<'_>) -> u64 {
        self.key(route, caller)
    }

    /// The same key as every replica computes it (a digest, no process secret): what the
    /// fleet's shared counters are stored under.
    pub fn fleet_key(&self, route: &str, caller: Caller<'_>) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        digest.update(route.as_bytes());
        match caller {
            Caller::Subject { issuer, subject } => {
                digest.update([0, 0]);
                digest.update(issuer.as_bytes());
                digest.update([0]);
                digest.update(subject.as_bytes());
            }
            Caller::Address(ip) => {
                digest.update([0, 1]);
                match network(ip, self.ipv6_prefix) {
                    IpAddr::V4(v4) => digest.update(v4.octets()),
                    IpAddr::V6(v6) => digest.update(v6.octets()),
                }
            }
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest.finalize()[..16]);
        key
    }

    /// The table's clock: nanoseconds since it was made.
    pub fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Move a tracked key's timestamp forward to `tat` (on this table's clock) if it is
    /// behind: what the rest of the fleet consumed of the same allowance.
    pub fn raise(&self, local_key: u64, tat: u64) {
        if let Some(entry) = self.table.get(&local_key) {
            entry.fetch_max(tat, Ordering::AcqRel);
        }
    }

    /// The timestamp of a tracked key (0 when untracked).
    pub fn tat(&self, local_key: u64) -> u64 {
        self.table
            .get(&local_key)
            .map_or(0, |entry| entry.load(Ordering::Acquire))
    }

    /// Drop keys whose timestamp has passed: they are back to a full burst anyway.
    fn sweep(&self, now: u64) {
        self.table
            .retain(|_, tat| tat.load(Ordering::Relaxed) > now);
    }

    fn key(&self, route: &str, caller: Caller<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        route.hash(&mut h);
        match caller {
            Caller::Subject { issuer, subject } => {
                0u8.hash(&mut h);
                issuer.hash(&mut h);
                subject.hash(&mut h);
            }
            Caller::Address(ip) => {
                1u8.hash(&mut h);
                network(ip, self.ipv6_prefix).hash(&mut h);
            }
        }
        h.finish()
    }
}

/// Apply the limit to one key's timestamp, atomically against other threads.
fn update(tat: &AtomicU64, limit: &RateLimit, now: u64) -> Verdict {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let verdict = limit.check(current, now);
        let Verdict::Allow { tat: next, .. } = verdict else {
            return verdict;
        };
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return verdict,
            Err(actual) => current = actual,
        }
    }
}

/// Seconds to wait, rounded up (a `Retry-After` of 0 would invite an immediate retry).
pub fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, burst: u32) -> RateLimit {
        RateLimit {
            requests,
            period: Duration::from_secs(60),
            burst,
            headers: false,
        }
    }

    #[test]
    fn callers_and_routes_are_counted_apart() {
        let limits = RateLimits::new(100, 64);
        let l = limit(2, 2);
        let alice = Caller::Subject {
            issuer: "local",
            subject: "alice",
        };
        let alice_elsewhere = Caller::Subject {
            issuer: "corp",
            subject: "alice",
        };
        for _ in 0..2 {
            assert!(matches!(
                limits.check("r", alice, &l),
                Some(Verdict::Allow { .. })
            ));
        }
        assert!(matches!(
            limits.check("r", alice, &l),
            Some(Verdict::Deny { .. })
        ));
        assert!(matches!(
            limits.check("other", alice, &l),
            Some(Verdict::Allow { .. })
        ));
        assert!(matches!(
            limits.check("r", alice_elsewhere, &l),
            Some(Verdict::Allow { .. })
        ));
    }

    #[test]
    fn ipv6_addresses_of_one_network_share_a_key() {
        let limits = RateLimits::new(100, 64);
        let l = limit(1, 1);
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::2".parse().expect("ip");
        assert!(matches!(
            limits.check("r", Caller::Address(a), &l),
            Some(Verdict::Allow { .. })
        ));
        assert!(matches!(
            limits.check("r", Caller::Address(b), &l),
            Some(Verdict::Deny { .. })
        ));
    }

    #[test]
    fn a_full_table_of_live_keys_says_so() {
        let limits = RateLimits::new(2, 64);
        let l = limit(1, 1);
        for n in 0..2u8 {
            let ip = IpAddr::from([10, 0, 0, n]);
            assert!(limits.check("r", Caller::Address(ip), &l).is_some());
        }
        let ip = IpAddr::from([10, 0, 0, 9]);
        assert_eq!(limits.check("r", Caller::Address(ip), &l), None);
        assert_eq!(limits.len(), 2);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::from_millis(3001)), 4);
    }
}
