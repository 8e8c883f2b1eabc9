//! Token revocations (logout): a bounded table of revoked token ids, shared by every worker
//! thread, kept only until the token could no longer verify anyway.

use std::sync::Mutex;

use dashmap::DashMap;

use crate::auth::bounded;

/// Revoked token ids, kept until their token could no longer verify anyway.
///
/// Entries stay [`Self::GRACE_SECS`] past the given expiry so that a token still accepted
/// within the verifier's leeway stays revoked. Pass `exp`; add the leeway if it is larger
/// than the grace.
///
/// The table is bounded overall and per subject: one account logging out over and over
/// cannot fill it and so break logout for everyone else.
#[derive(Debug)]
pub struct Revocations {
    max: usize,
    /// Looked up on every authenticated request: hashed with seeded foldhash, as the token
    /// cache is (SipHash cost ~250 instructions per lookup); the table is bounded anyway.
    entries: DashMap<String, u64, foldhash::fast::RandomState>,
    /// When each subject's revocations lapse (unix seconds), to cap how many it holds.
    by_subject: DashMap<String, Vec<u64>>,
    last_purge: Mutex<u64>,
}

/// Why a revocation was not recorded. None is ever evicted to make room, and none is
/// dropped silently: the caller must tell the client its token is still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeRefusal {
    /// The subject holds as many live revocations as it may; one lapses in this many
    /// seconds (at least 1).
    SubjectFull { retry_after_secs: u64 },
    /// The whole table is full of live revocations.
    TableFull,
}

impl Revocations {
    /// Retention past `exp`, covering any sane clock leeway.
    pub const GRACE_SECS: u64 = 600;

    pub fn new(max: usize) -> Self {
        Self {
            max,
            entries: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            by_subject: DashMap::new(),
            last_purge: Mutex::new(0),
        }
    }

    /// Revoke `jti`, a token of `subject`, until `expires_at_unix` (+ grace), unless
    /// `subject` already holds `per_subject` live revocations or the table is full.
    pub fn revoke(
        &self,
        subject: &str,
        jti: &str,
        expires_at_unix: u64,
        now_unix: u64,
        per_subject: usize,
    ) -> Result<(), RevokeRefusal> {
        let jti = bounded(jti);
        if self.extend(jti, expires_at_unix) {
            return Ok(());
        }
        self.room(now_unix)?;
        // Held while the entry is added, so concurrent logouts of one subject count right.
        let mut lapses = self
            .by_subject
            .entry(bounded(subject).to_owned())
            .or_default();
        lapses.retain(|lapse| now_unix < *lapse);
        allowance(&lapses, now_unix, per_subject)?;
        lapses.push(expires_at_unix.saturating_add(Self::GRACE_SECS));
        self.store(jti, expires_at_unix);
        Ok(())
    }

    /// Whether [`Self::revoke`] would take a new revocation for `subject` now (it may still
    /// refuse if others race it): for callers that must store it elsewhere first.
    pub fn check_allowance(
        &self,
        subject: &str,
        now_unix: u64,
        per_subject: usize,
    ) -> Result<(), RevokeRefusal> {
        self.room(now_unix)?;
        match self.by_subject.get(bounded(subject)) {
            Some(lapses) => allowance(&lapses, now_unix, per_subject),
            None => Ok(()),
        }
    }

    /// Record a revocation made elsewhere (another replica, or a refresh family ending): no
    /// per-subject allowance applies, it was already granted or is the gateway's own doing.
    /// `false` when the table is full of live entries and it could not be kept.
    pub fn insert(&self, jti: &str, expires_at_unix: u64, now_unix: u64) -> bool {
        let jti = bounded(jti);
        if self.extend(jti, expires_at_unix) {
            return true;
        }
        if self.room(now_unix).is_err() {
            return false;
        }
        self.store(jti, expires_at_unix);
        true
    }

    /// Move an existing entry's expiry forward; `false` when `jti` has none.
    fn extend(&self, jti: &str, expires_at_unix: u64) -> bool {
        match self.entries.get_mut(jti) {
            Some(mut at) => {
                *at = (*at).max(expires_at_unix);
                true
            }
            None => false,
        }
    }

    /// Room for a new entry, after a (throttled) purge if the table is full.
    fn room(&self, now_unix: u64) -> Result<(), RevokeRefusal> {
        if self.entries.len() >= self.max {
            self.purge_throttled(now_unix);
            if self.entries.len() >= self.max {
                return Err(RevokeRefusal::TableFull);
            }
        }
        Ok(())
    }

    fn store(&self, jti: &str, expires_at_unix: u64) {
        self.entries
            .entry(jti.to_owned())
            .and_modify(|at| *at = (*at).max(expires_at_unix))
            .or_insert(expires_at_unix);
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
        self.by_subject.retain(|_, lapses| {
            lapses.retain(|lapse| now_unix < *lapse);
            !lapses.is_empty()
        });
    }

    /// At most one sweep per second, and never two at once.
    fn purge_throttled(&self, now_unix: u64) {
        let Ok(mut last) = self.last_purge.try_lock() else {
            return;
        };
        if *last == now_unix {
            return;
        }
        *last = now_unix;
        drop(last);
        self.purge(now_unix);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A subject whose live revocations (`lapses` after `now_unix`) number `per_subject` gets no
/// more until the first lapses.
fn allowance(lapses: &[u64], now_unix: u64, per_subject: usize) -> Result<(), RevokeRefusal> {
    let live = || lapses.iter().copied().filter(|lapse| now_unix < *lapse);
    if live().count() >= per_subject {
        let first = live().min().unwrap_or(now_unix);
        return Err(RevokeRefusal::SubjectFull {
            retry_after_secs: first.saturating_sub(now_unix).max(1),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 1_000;

    #[test]
    fn revocation_expiry() {
        let r = Revocations::new(2);
        assert_eq!(r.revoke("alice", "a", 1000, 0, CAP), Ok(()));
        assert!(r.is_revoked("a", 999));
        assert!(r.is_revoked("a", 1000 + Revocations::GRACE_SECS - 1));
        assert!(!r.is_revoked("a", 1000 + Revocations::GRACE_SECS));
        assert!(!r.is_revoked("b", 0));
        r.purge(1000 + Revocations::GRACE_SECS);
        assert!(r.is_empty());
        assert!(r.by_subject.is_empty());
    }

    #[test]
    fn revocations_bounded_without_dropping_live_ones() {
        let r = Revocations::new(2);
        let far = u64::MAX - 1;
        assert_eq!(r.revoke("alice", "a", far, 0, CAP), Ok(()));
        assert_eq!(r.revoke("bob", "b", far, 0, CAP), Ok(()));
        assert_eq!(
            r.revoke("carol", "c", far, 0, CAP),
            Err(RevokeRefusal::TableFull)
        );
        assert_eq!(r.revoke("alice", "a", far, 0, CAP), Ok(())); // already present: fine
        assert_eq!(r.len(), 2);
        assert!(r.is_revoked("a", 0) && r.is_revoked("b", 0));
        // Expired entries make room.
        let r = Revocations::new(1);
        assert_eq!(r.revoke("alice", "old", 1, 0, CAP), Ok(()));
        let now = 1 + Revocations::GRACE_SECS;
        assert_eq!(r.revoke("alice", "new", far, now, CAP), Ok(()));
        assert!(r.is_revoked("new", now));
    }

    #[test]
    fn one_subject_cannot_hold_more_than_its_share_and_others_are_unaffected() {
        let r = Revocations::new(100);
        let now = 1_000;
        for i in 0..3 {
            let jti = format!("a{i}");
            assert_eq!(r.revoke("alice", &jti, now + 100 + i, now, 3), Ok(()));
        }
        // The soonest of alice's lapses at its exp (now + 100) + grace.
        let full = RevokeRefusal::SubjectFull {
            retry_after_secs: 100 + Revocations::GRACE_SECS,
        };
        assert_eq!(r.revoke("alice", "a3", now + 900, now, 3), Err(full));
        assert!(!r.is_revoked("a3", now), "refused means not revoked");
        assert_eq!(r.revoke("bob", "b0", now + 100, now, 3), Ok(()));
        // Revoking an already revoked token again takes no new place.
        assert_eq!(r.revoke("alice", "a0", now + 100, now, 3), Ok(()));
        // A lower cap (after a reload) applies at once.
        assert!(r.revoke("bob", "b1", now + 100, now, 1).is_err());
        // Once alice's first revocation lapses she has room again.
        let later = now + 100 + Revocations::GRACE_SECS;
        assert_eq!(r.revoke("alice", "a3", later + 900, later, 3), Ok(()));
        assert!(r.is_revoked("a3", later));
    }
}
