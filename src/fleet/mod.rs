//! State the replicas of a fleet must agree on: access-token revocations, refresh-token
//! families and login lockouts. `state:` unset keeps it in this process's memory; with
//! `state.redis` it lives in Redis, where scripts make races between replicas safe.
//!
//! The request hot path never waits on Redis: it reads revocations from the local table,
//! which the [`follower`] keeps in step (pub/sub, plus a full resync on every (re)connect).
//! Only the gateway's own endpoints (login, refresh, logout, revoke) talk to Redis, and they
//! acknowledge nothing Redis has not stored.

pub mod families;
pub mod follower;
pub mod login_gate;
pub mod rate_sync;
pub mod redis_state;
mod scripts;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::refresh::{Family, Rotation, RotationOutcome, TokenRecord};
use crate::auth::revocation::{Revocations, RevokeRefusal};
use crate::config::{redact_url, StateSettings};

use families::MemoryFamilies;
use redis_state::{RedisState, Unavailable};

/// Where the shared state lives, chosen at start.
#[derive(Debug)]
pub enum Fleet {
    Memory(MemoryFamilies),
    Redis(Arc<RedisState>),
}

/// Why a state operation was not done. Nothing was acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// A bounded local table is full of live entries.
    #[error("state table full")]
    Full,
    /// The subject holds as many live revocations as it may.
    #[error("revocation allowance used up")]
    Refused(RevokeRefusal),
}

/// How the shared state is doing, for `/readyz` and metrics.
#[derive(Debug, Clone)]
pub struct FleetStatus {
    /// `redis://host:port` with any password hidden.
    pub url: String,
    pub connected: bool,
    /// Seconds since the local revocation copy was last known complete (`None`: never).
    pub copy_age: Option<u64>,
    pub last_error: Option<String>,
}

impl Fleet {
    pub fn new(settings: &StateSettings) -> Result<Fleet, Unavailable> {
        Ok(match settings {
            StateSettings::Memory => Fleet::Memory(MemoryFamilies::default()),
            StateSettings::Redis(redis) => Fleet::Redis(Arc::new(RedisState::new(redis.clone())?)),
        })
    }

    pub fn redis(&self) -> Option<&RedisState> {
        match self {
            Fleet::Redis(state) => Some(state),
            Fleet::Memory(_) => None,
        }
    }

    /// Revoke an access token (`key`, of `subject`) until unix `until`; `Ok` only once it is
    /// recorded where every replica will see it, and only then in this process's table (a
    /// refusal must leave the token working everywhere, as the client is told). The
    /// per-subject allowance bounds this process's table, so it is checked first.
    pub async fn revoke_access(
        &self,
        revocations: &Revocations,
        subject: &str,
        key: &str,
        until: u64,
        now: u64,
        per_subject: usize,
    ) -> Result<(), StoreError> {
        let refused = |refusal| match refusal {
            RevokeRefusal::TableFull => StoreError::Full,
            other => StoreError::Refused(other),
        };
        let Fleet::Redis(state) = self else {
            return revocations
                .revoke(subject, key, until, now, per_subject)
                .map_err(refused);
        };
        revocations
            .check_allowance(subject, now, per_subject)
            .map_err(refused)?;
        state.revoke_access(key, until).await?;
        // Redis has it: it holds here whatever a racing logout did to the allowance.
        if revocations
            .revoke(subject, key, until, now, per_subject)
            .is_err()
        {
            revocations.insert(key, until, now);
        }
        Ok(())
    }

    /// Store a new family with its first refresh token and access token.
    pub async fn create_family(
        &self,
        family: Family,
        digest: &str,
        token_expires_at: u64,
        access: (&str, u64),
        now: u64,
    ) -> Result<(), StoreError> {
        match self {
            Fleet::Memory(families) => families
                .create(family, digest, token_expires_at, access, now)
                .map_err(|_| StoreError::Full),
            Fleet::Redis(state) => Ok(state
                .create_family(&family, digest, token_expires_at, access)
                .await?),
        }
    }

    pub async fn lookup(&self, digest: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self {
            Fleet::Memory(families) => Ok(families.lookup(digest)),
            Fleet::Redis(state) => Ok(state.lookup(digest).await?),
        }
    }

    pub async fn rotate(&self, rotation: &Rotation<'_>) -> Result<RotationOutcome, StoreError> {
        match self {
            Fleet::Memory(families) => Ok(families.rotate(rotation)),
            Fleet::Redis(state) => Ok(state.rotate(rotation).await?),
        }
    }

    /// End a family and revoke the access tokens it issued (with `leeway` added to their
    /// expiry, as for a logout), on every replica.
    pub async fn revoke_family(
        &self,
        revocations: &Revocations,
        family_id: &str,
        now: u64,
        leeway: u64,
    ) -> Result<(), StoreError> {
        match self {
            Fleet::Memory(families) => {
                for (jti, exp) in families.revoke(family_id, now) {
                    if !revocations.insert(&jti, exp.saturating_add(leeway), now) {
                        return Err(StoreError::Full);
                    }
                }
                Ok(())
            }
            // The script announces each revoked token; the follower applies it here too.
            Fleet::Redis(state) => Ok(state.revoke_family(family_id, now, leeway).await?),
        }
    }

    /// With Redis: wait (at most `within`) until the local revocation copy was loaded once,
    /// so a replica that starts does not serve tokens the fleet has revoked. `true` when it
    /// was (always in memory mode).
    pub async fn wait_first_sync(&self, within: Duration) -> bool {
        let Some(state) = self.redis() else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + within;
        while state.synced_at.load(Ordering::Relaxed) == 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Whether the local copy was ever complete (always in memory mode): `/readyz` is 503
    /// until then.
    pub fn ever_synced(&self) -> bool {
        self.redis()
            .is_none_or(|state| state.synced_at.load(Ordering::Relaxed) > 0)
    }

    /// `None` in memory mode.
    pub fn status(&self, now: u64) -> Option<FleetStatus> {
        let state = self.redis()?;
        let synced = state.synced_at.load(Ordering::Relaxed);
        Some(FleetStatus {
            url: redact_url(&state.settings.url),
            connected: state.following.load(Ordering::Relaxed),
            copy_age: (synced > 0).then(|| now.saturating_sub(synced)),
            last_error: state
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        })
    }
}

/// `Retry-After` for an endpoint refused while Redis is unreachable: reconnects are tried
/// with a backoff of at most this.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(2);
