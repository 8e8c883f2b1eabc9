//! Login regulation: failure counting and lockouts per username and per client address.
//!
//! Each table is shared by every worker thread (sharded `DashMap`, no global lock) and
//! bounded, so a username spray cannot grow memory without limit.
//! Times are parameters so the logic is testable without sleeping.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::auth::bounded;

/// A full table is swept at most this often, so a flood of new keys cannot make every
/// failed login pay for a full scan.
const PURGE_INTERVAL: Duration = Duration::from_secs(1);
/// `Retry-After` for an attempt refused because earlier ones are still being checked:
/// they settle within a hash or two.
const SETTLING: Duration = Duration::from_secs(1);

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
    match network(ip, ipv6_prefix) {
        IpAddr::V4(v4) => v4.to_string(),
        v6 => format!("{v6}/{}", ipv6_prefix.clamp(1, 128)),
    }
}

/// The address a client is counted by: IPv4 as is (IPv4-mapped IPv6 unwrapped), IPv6 by its
/// network of `ipv6_prefix` bits (one subscriber usually holds a whole /64).
pub fn network(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = ipv6_prefix.clamp(1, 128);
            let mask = u128::MAX << (128 - u32::from(prefix));
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    /// Attempts admitted and still being checked: they hold a place below the threshold
    /// until settled, so concurrent guesses cannot all start before the first one fails.
    in_flight: u32,
    locked_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            window_start: now,
            failures: 0,
            in_flight: 0,
            locked_until: None,
        }
    }

    /// Start counting afresh once the window has elapsed or a lock has run out (call only
    /// when not locked). Attempts in flight stay counted.
    fn roll(&mut self, policy: &LockoutPolicy, now: Instant) {
        if self.locked_until.is_some() || now >= self.window_start + policy.window {
            self.window_start = now;
            self.failures = 0;
            self.locked_until = None;
        }
    }

    /// Nothing worth remembering.
    fn idle(&self) -> bool {
        self.in_flight == 0 && self.failures == 0 && self.locked_until.is_none()
    }

    fn lock_left(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn expired(&self, policy: &LockoutPolicy, now: Instant) -> bool {
        self.in_flight == 0
            && self.lock_left(now).is_none()
            && now >= self.window_start + policy.window
    }

    /// When this entry will have expired, if nothing more happens to it (an attempt in
    /// flight may free it at any moment).
    fn expires_at(&self, policy: &LockoutPolicy, now: Instant) -> Instant {
        if self.in_flight > 0 {
            return now;
        }
        let window_end = self.window_start + policy.window;
        self.locked_until
            .map_or(window_end, |until| until.max(window_end))
    }
}

/// Why a login may not go ahead. Both are answered before any password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key is locked, or enough attempts on it are still being checked to lock it;
    /// retry after this (whole seconds, at least 1).
    Locked(Duration),
    /// The key is not tracked yet and the table is full of live entries, so a failure could
    /// not be counted; retry after this, when the first entry is due to expire.
    Full(Duration),
}

/// Counts failed logins per key with expiry and a size bound.
///
/// Use one instance for usernames and another for client addresses (see [`address_key`]),
/// so a spray of usernames cannot crowd out per-address tracking. Existing entries, and so
/// existing locks, are never evicted: filling the table cannot unlock anyone. When it is
/// full (after purging expired entries) a login for a key it does not track yet is refused
/// ([`Refusal::Full`]) rather than let through uncounted: a flood of junk keys can then
/// deny logins to new keys until entries expire, but never open unlimited guessing.
#[derive(Debug)]
pub struct Lockouts {
    policy: LockoutPolicy,
    max_keys: usize,
    entries: DashMap<String, Entry>,
    last_purge: Mutex<Option<Instant>>,
    /// When the soonest entry left by the last purge expires: the `Retry-After` of a
    /// [`Refusal::Full`].
    room_at: Mutex<Option<Instant>>,
}

/// Whole seconds, rounded up, at least 1: for a `Retry-After` header.
pub fn retry_after(left: Duration) -> Duration {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

impl Lockouts {
    pub fn new(policy: LockoutPolicy, max_keys: usize) -> Self {
        Self {
            policy,
            max_keys,
            entries: DashMap::new(),
            last_purge: Mutex::new(None),
            room_at: Mutex::new(None),
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

    /// Count a login attempt against `key` before its password is checked; settle it with
    /// [`Attempt::failed`] or [`Attempt::succeeded`].
    ///
    /// Refused while the key is locked, while the failures so far plus the attempts still
    /// being checked reach the threshold (were those all wrong, the key would lock, so no
    /// further guess may start until they settle), and for a new key when the table is full.
    pub fn begin(&self, key: &str, now: Instant) -> Result<Attempt<'_>, Refusal> {
        let key = bounded(key);
        if let Some(mut entry) = self.entries.get_mut(key) {
            self.take_slot(&mut entry, now)?;
        } else {
            self.room_for_new_key(now)?;
            let mut entry = self
                .entries
                .entry(key.to_owned())
                .or_insert_with(|| Entry::new(now));
            self.take_slot(&mut entry, now)?;
        }
        Ok(Attempt {
            table: self,
            key: key.to_owned(),
            settled: false,
        })
    }

    fn take_slot(&self, e: &mut Entry, now: Instant) -> Result<(), Refusal> {
        if let Some(left) = e.lock_left(now) {
            return Err(Refusal::Locked(retry_after(left)));
        }
        e.roll(&self.policy, now);
        let locking = !self.policy.duration.is_zero();
        if locking && e.failures.saturating_add(e.in_flight) >= self.policy.failures {
            return Err(Refusal::Locked(SETTLING));
        }
        e.in_flight += 1;
        Ok(())
    }

    /// Give an attempt's place back; forget the key if nothing else holds it. Returns the
    /// lock left on the key, if any.
    fn release(&self, key: &str, now: Instant) -> Option<Duration> {
        let left = self.entries.get_mut(key).and_then(|mut e| {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.lock_left(now)
        });
        self.entries.remove_if(key, |_, e| e.idle());
        left
    }

    /// Record a failure; `Ok(Some(retry_after))` if the key is now locked.
    ///
    /// The window starts at the first failure and resets once it elapses (or once a lock
    /// has run out); reaching `failures` within it locks the key for `duration`. Failures
    /// during an active lock return the remaining time but do not extend it, so an
    /// attacker cannot keep a victim locked any longer than by retrying after expiry.
    /// A zero `duration` disables locking. A new key is refused when the table is full.
    pub fn record_failure(&self, key: &str, now: Instant) -> Result<Option<Duration>, Refusal> {
        let key = bounded(key);
        if let Some(mut entry) = self.entries.get_mut(key) {
            return Ok(self.fail(&mut entry, now));
        }
        self.room_for_new_key(now)?;
        // Only now take the shard lock (`len` above reads every shard).
        let mut entry = self
            .entries
            .entry(key.to_owned())
            .or_insert_with(|| Entry::new(now));
        Ok(self.fail(&mut entry, now))
    }

    fn room_for_new_key(&self, now: Instant) -> Result<(), Refusal> {
        if self.entries.len() < self.max_keys {
            return Ok(());
        }
        self.purge_throttled(now);
        if self.entries.len() < self.max_keys {
            return Ok(());
        }
        let room_at = *self.room_at.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = room_at.map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
        Err(Refusal::Full(retry_after(wait)))
    }

    fn fail(&self, e: &mut Entry, now: Instant) -> Option<Duration> {
        if let Some(left) = e.lock_left(now) {
            return Some(retry_after(left));
        }
        e.roll(&self.policy, now);
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
        if let Some(mut e) = self.entries.get_mut(key) {
            e.failures = 0;
        }
        self.entries.remove_if(key, |_, e| e.idle());
    }

    /// Drop entries whose window and lock are both over; note when the next one will be.
    pub fn purge_expired(&self, now: Instant) {
        let mut soonest: Option<Instant> = None;
        self.entries.retain(|_, e| {
            if e.expired(&self.policy, now) {
                return false;
            }
            let at = e.expires_at(&self.policy, now);
            soonest = Some(soonest.map_or(at, |s| s.min(at)));
            true
        });
        *self.room_at.lock().unwrap_or_else(PoisonError::into_inner) = soonest;
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

/// A login attempt counted against one key of one table while its password is checked.
///
/// Dropped unsettled (the check could not run, or the client went away before any answer)
/// it is refunded: nothing was learned about the password.
#[derive(Debug)]
#[must_use = "an attempt holds its place until settled or dropped"]
pub struct Attempt<'a> {
    table: &'a Lockouts,
    key: String,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was wrong: count the failure. `Some(retry_after)` if the key is locked.
    pub fn failed(mut self, now: Instant) -> Option<Duration> {
        self.settled = true;
        let table = self.table;
        // In-flight entries are never purged; `or_insert_with` only guards the impossible.
        let mut entry = table
            .entries
            .entry(std::mem::take(&mut self.key))
            .or_insert_with(|| Entry::new(now));
        entry.in_flight = entry.in_flight.saturating_sub(1);
        table.fail(&mut entry, now)
    }

    /// The password was right: give the place back. `Err(retry_after)` if the key was
    /// locked while the password was being checked; that lock wins over the password.
    pub fn succeeded(mut self, now: Instant) -> Result<(), Duration> {
        self.settled = true;
        match self.table.release(&self.key, now) {
            Some(left) => Err(retry_after(left)),
            None => Ok(()),
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.table.release(&self.key, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::MAX_KEY_BYTES;
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
        assert_eq!(l.record_failure("alice", t0), Ok(None));
        assert_eq!(l.record_failure("alice", t0 + secs(1)), Ok(None));
        assert_eq!(l.locked("alice", t0 + secs(1)), None);
        assert_eq!(l.record_failure("alice", t0 + secs(2)), Ok(Some(secs(300))));
        assert_eq!(l.locked("alice", t0 + secs(2)), Some(secs(300)));
        assert_eq!(
            l.locked("alice", t0 + secs(2) + Duration::from_millis(1500)),
            Some(secs(299))
        );
        assert_eq!(l.locked("bob", t0 + secs(2)), None);
        // A failure during the lock does not extend it.
        assert_eq!(
            l.record_failure("alice", t0 + secs(100)),
            Ok(Some(secs(202)))
        );
        assert_eq!(l.locked("alice", t0 + secs(301)), Some(secs(1)));
        assert_eq!(l.locked("alice", t0 + secs(302)), None);
        // After expiry the count starts afresh.
        assert_eq!(l.record_failure("alice", t0 + secs(303)), Ok(None));
        assert_eq!(l.locked("alice", t0 + secs(303)), None);
    }

    #[test]
    fn window_resets() {
        let l = Lockouts::new(POLICY, 10);
        let t0 = Instant::now();
        let _ = l.record_failure("k", t0);
        let _ = l.record_failure("k", t0 + secs(59));
        assert_eq!(l.record_failure("k", t0 + secs(60)), Ok(None)); // new window: count 1
        assert_eq!(l.record_failure("k", t0 + secs(61)), Ok(None));
        assert!(matches!(l.record_failure("k", t0 + secs(62)), Ok(Some(_))));
    }

    #[test]
    fn success_clears_counter_but_not_lock() {
        let l = Lockouts::new(POLICY, 10);
        let t0 = Instant::now();
        let _ = l.record_failure("k", t0);
        let _ = l.record_failure("k", t0);
        l.record_success("k");
        assert_eq!(l.len(), 0);
        assert_eq!(l.record_failure("k", t0), Ok(None));
        let _ = l.record_failure("k", t0);
        assert!(matches!(l.record_failure("k", t0), Ok(Some(_))));
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
        assert_eq!(l.record_failure("k", t0), Ok(None));
        assert_eq!(l.locked("k", t0), None);
    }

    #[test]
    fn size_bound_holds() {
        let l = Lockouts::new(POLICY, 100_000);
        let t0 = Instant::now();
        let mut rng = rand::rng();
        for _ in 0..200_000 {
            let key = format!("{:016x}", rng.random::<u64>());
            let _ = l.record_failure(&key, t0);
        }
        assert_eq!(l.len(), 100_000);
        // A new key is refused, not silently left uncounted.
        assert!(matches!(l.record_failure("new", t0), Err(Refusal::Full(_))));
        // Existing keys still count and lock while full.
        let known = l
            .entries
            .iter()
            .next()
            .map(|e| e.key().clone())
            .expect("a key");
        let _ = l.record_failure(&known, t0);
        assert!(matches!(l.record_failure(&known, t0), Ok(Some(_))));
        // Once windows elapse, a new key triggers a purge and is tracked.
        let _ = l.record_failure("late", t0 + secs(61));
        assert!(l.len() <= 2);
        assert!(l.entries.contains_key("late"));
        l.purge_expired(t0 + secs(400));
        assert!(l.is_empty());
    }

    /// Begin and at once refund an attempt.
    fn admit(l: &Lockouts, key: &str, now: Instant) -> Result<(), Refusal> {
        l.begin(key, now).map(drop)
    }

    #[test]
    fn attempts_beyond_the_threshold_are_refused_while_earlier_ones_are_checked() {
        let l = Lockouts::new(POLICY, 10);
        let t0 = Instant::now();
        let [a1, a2, a3] = ["k"; 3].map(|k| l.begin(k, t0).expect("admitted"));
        // Were the three all wrong the key would lock: a fourth guess may not start.
        assert_eq!(admit(&l, "k", t0), Err(Refusal::Locked(secs(1))));
        assert_eq!(a1.failed(t0 + secs(1)), None);
        assert_eq!(a2.failed(t0 + secs(1)), None);
        assert_eq!(admit(&l, "k", t0 + secs(1)), Err(Refusal::Locked(secs(1))));
        assert_eq!(a3.failed(t0 + secs(2)), Some(secs(300)));
        assert_eq!(
            admit(&l, "k", t0 + secs(2)),
            Err(Refusal::Locked(secs(300)))
        );
        // Other keys are unaffected.
        assert_eq!(admit(&l, "other", t0 + secs(2)), Ok(()));
    }

    #[test]
    fn refunded_and_successful_attempts_give_their_place_back() {
        let l = Lockouts::new(POLICY, 10);
        let t0 = Instant::now();
        let [a1, a2, a3] = ["k"; 3].map(|k| l.begin(k, t0).expect("admitted"));
        drop(a1); // the check never ran
        let a4 = l.begin("k", t0).expect("the refunded place is free again");
        assert_eq!(a2.succeeded(t0), Ok(()));
        assert_eq!(a3.failed(t0), None);
        assert_eq!(a4.succeeded(t0), Ok(()));
        assert_eq!(l.len(), 1, "the failure is remembered");
        l.record_success("k");
        assert!(l.is_empty(), "nothing left to remember");
        // A lone successful attempt leaves nothing behind either.
        l.begin("fresh", t0)
            .expect("admitted")
            .succeeded(t0)
            .expect("not locked");
        assert!(l.is_empty());
    }

    #[test]
    fn a_right_password_whose_check_ends_after_the_key_locked_is_refused() {
        let l = Lockouts::new(POLICY, 10);
        let t0 = Instant::now();
        let right = l.begin("k", t0).expect("admitted");
        // Meanwhile the key is locked (failures counted outside this attempt's places).
        for i in 1..=3 {
            let _ = l.record_failure("k", t0 + secs(i));
        }
        assert_eq!(right.succeeded(t0 + secs(4)), Err(secs(299)));
        assert_eq!(l.locked("k", t0 + secs(4)), Some(secs(299)));
    }

    #[test]
    fn without_locking_attempts_are_never_refused_for_being_in_flight() {
        let l = Lockouts::new(
            LockoutPolicy {
                duration: Duration::ZERO,
                ..POLICY
            },
            10,
        );
        let t0 = Instant::now();
        let held: Vec<_> = (0..10)
            .map(|_| l.begin("k", t0).expect("admitted"))
            .collect();
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn a_full_table_refuses_new_keys_until_an_entry_expires_and_still_counts_old_ones() {
        let l = Lockouts::new(POLICY, 2);
        let t0 = Instant::now();
        assert_eq!(l.record_failure("a", t0), Ok(None));
        assert_eq!(l.record_failure("b", t0 + secs(10)), Ok(None));
        // `a`'s window (60 s) ends first.
        assert_eq!(admit(&l, "c", t0 + secs(20)), Err(Refusal::Full(secs(40))));
        assert_eq!(
            l.record_failure("c", t0 + secs(20)),
            Err(Refusal::Full(secs(40)))
        );
        assert_eq!(l.len(), 2);
        // Tracked keys are admitted, and still count and lock.
        assert_eq!(admit(&l, "a", t0 + secs(21)), Ok(()));
        assert_eq!(l.record_failure("a", t0 + secs(21)), Ok(None));
        assert_eq!(l.record_failure("a", t0 + secs(22)), Ok(Some(secs(300))));
        assert_eq!(
            admit(&l, "a", t0 + secs(22)),
            Err(Refusal::Locked(secs(300)))
        );
        // `a` is now held by its lock: the next room is `b`'s, at t0 + 70 s.
        assert_eq!(admit(&l, "c", t0 + secs(61)), Err(Refusal::Full(secs(9))));
        assert_eq!(admit(&l, "c", t0 + secs(70)), Ok(()));
        assert_eq!(l.record_failure("c", t0 + secs(70)), Ok(None));
        assert!(l.entries.contains_key("a") && l.entries.contains_key("c"));
    }

    #[test]
    fn long_keys_are_bounded() {
        let l = Lockouts::new(POLICY, 10);
        let key = "é".repeat(1000);
        let _ = l.record_failure(&key, Instant::now());
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
}
