//! The Redis a fleet shares: revocations (a sorted set plus a pub/sub channel every replica
//! follows, see `follower`), refresh-token families, and login lockout counters.
//!
//! Everything that must not be won twice (a rotation, a lockout count) is one Lua script, so
//! two replicas racing on the same family or username are serialised by Redis. Keys are
//! namespaced by `key_prefix` and expire with the thing they describe.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::auth::refresh::{Family, Rotation, RotationOutcome, TokenRecord, TokenState};
use crate::auth::revocation::Revocations;
use crate::config::RedisSettings;

use super::scripts::{CREATE, LOGIN_BEGIN, LOGIN_SETTLE, RATE_MERGE, REVOKE_FAMILY, ROTATE};

/// Why a Redis operation did not happen.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct Unavailable(pub String);

impl From<redis::RedisError> for Unavailable {
    fn from(err: redis::RedisError) -> Self {
        Unavailable(err.to_string())
    }
}

/// The connection and the key names of one fleet.
pub struct RedisState {
    pub(super) settings: RedisSettings,
    client: redis::Client,
    /// Made by the maintainer task once a runtime runs; `None` until then.
    manager: Mutex<Option<ConnectionManager>>,
    /// The follower holds a subscription and its last resync succeeded.
    pub(super) following: AtomicBool,
    /// Unix seconds of the last good resync or message (0: never): the local copy's age.
    pub(super) synced_at: AtomicU64,
    /// Why the last operation failed, for `/readyz`.
    pub(super) last_error: Mutex<Option<String>>,
    scripts: Scripts,
    /// Route rate-limit arrivals waiting to be shared (see `rate_sync`).
    pub rates: super::rate_sync::RateOutbox,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("settings", &self.settings)
            .field("following", &self.following)
            .finish_non_exhaustive()
    }
}

struct Scripts {
    create: Script,
    rotate: Script,
    revoke_family: Script,
    login_begin: Script,
    login_settle: Script,
}

/// How a lockout script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    Admitted,
    Locked(Duration),
    Settling,
}

impl RedisState {
    pub fn new(settings: RedisSettings) -> Result<RedisState, Unavailable> {
        let client = match &settings.ca {
            Some(ca) => redis::Client::build_with_tls(
                settings.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
            None => redis::Client::open(settings.url.as_str())?,
        };
        Ok(RedisState {
            settings,
            client,
            manager: Mutex::new(None),
            following: AtomicBool::new(false),
            synced_at: AtomicU64::new(0),
            last_error: Mutex::new(Some("not connected yet".into())),
            rates: Default::default(),
            scripts: Scripts {
                create: Script::new(CREATE),
                rotate: Script::new(ROTATE),
                revoke_family: Script::new(REVOKE_FAMILY),
                login_begin: Script::new(LOGIN_BEGIN),
                login_settle: Script::new(LOGIN_SETTLE),
            },
        })
    }

    pub(super) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Make the command connection (in the runtime that will drive it). It reconnects by
    /// itself after a failure.
    pub(super) async fn connect(&self) -> Result<(), Unavailable> {
        let timeout = self.settings.timeout;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = self
            .client
            .get_connection_manager_with_config(config)
            .await?;
        *self.manager.lock().unwrap_or_else(|p| p.into_inner()) = Some(manager);
        Ok(())
    }

    fn connection(&self) -> Result<ConnectionManager, Unavailable> {
        self.manager
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Unavailable("not connected".into()))
    }

    /// Run `op` on a connection under the command deadline; note failures for `/readyz`.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection()?;
        let result = match tokio::time::timeout(self.settings.timeout, op(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Unavailable::from(err)),
            Err(_) => Err(Unavailable("timed out".into())),
        };
        if let Err(err) = &result {
            self.note_error(&err.0);
        }
        result
    }

    pub(super) fn note_error(&self, why: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
    }

    pub(super) fn key(&self, parts: &[&str]) -> String {
        let mut key = self.settings.key_prefix.clone();
        key.push_str(&parts.join(":"));
        key
    }

    pub(super) fn revoked_key(&self) -> String {
        self.key(&["revoked"])
    }

    pub(super) fn channel(&self) -> String {
        self.key(&["revocations"])
    }

    /// Record an access-token revocation (`key` until unix `until`) and tell every replica.
    /// Returns once Redis has it.
    pub async fn revoke_access(&self, key: &str, until: u64) -> Result<(), Unavailable> {
        let (set, channel) = (self.revoked_key(), self.channel());
        let message = format!("{until} {key}");
        self.run(|mut c| async move {
            redis::pipe()
                .atomic()
                .zadd(&set, key, until)
                .ignore()
                .publish(&channel, message)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Every revocation still live at `now`: `(key, until)`.
    pub(super) async fn live_revocations(
        &self,
        now: u64,
    ) -> Result<Vec<(String, u64)>, Unavailable> {
        let set = self.revoked_key();
        self.run(|mut c| async move {
            let _: () = c
                .zrembyscore(&set, "-inf", now.saturating_sub(Revocations::GRACE_SECS))
                .await?;
            c.zrangebyscore_withscores(&set, now.saturating_sub(Revocations::GRACE_SECS), "+inf")
                .await
        })
        .await
    }

    pub async fn create_family(
        &self,
        family: &Family,
        digest: &str,
        token_expires_at: u64,
        access: (&str, u64),
    ) -> Result<(), Unavailable> {
        let keys = [
            self.key(&["fam", &family.id]),
            self.key(&["rt", digest]),
            self.key(&["famat", &family.id]),
        ];
        let script = &self.scripts.create;
        self.run(|mut c| async move {
            script
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(&family.subject)
                .arg(family.scopes.join(" "))
                .arg(&family.credential_version)
                .arg(family.expires_at)
                .arg(&family.id)
                .arg(token_expires_at)
                .arg(access.0)
                .arg(access.1)
                .invoke_async::<i64>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }

    pub async fn lookup(&self, digest: &str) -> Result<Option<TokenRecord>, Unavailable> {
        let token_key = self.key(&["rt", digest]);
        let token: std::collections::HashMap<String, String> = self
            .run(|mut c| async move { c.hgetall(&token_key).await })
            .await?;
        let Some(family_id) = token.get("fam") else {
            return Ok(None);
        };
        let family_key = self.key(&["fam", family_id]);
        let family: std::collections::HashMap<String, String> = self
            .run(|mut c| async move { c.hgetall(&family_key).await })
            .await?;
        let number = |map: &std::collections::HashMap<String, String>, field: &str| {
            map.get(field)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let Some(subject) = family.get("sub") else {
            return Ok(None);
        };
        let state = match token.get("state").map(String::as_str) {
            Some("r") => TokenState::Rotated {
                at: number(&token, "at"),
                sealed: token.get("sealed").cloned().unwrap_or_default(),
            },
            _ => TokenState::Current,
        };
        Ok(Some(TokenRecord {
            family: Family {
                id: family_id.clone(),
                subject: subject.clone(),
                scopes: family
                    .get("scopes")
                    .map(|s| {
                        s.split(' ')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                credential_version: family.get("cv").cloned().unwrap_or_default(),
                expires_at: number(&family, "exp"),
            },
            family_revoked: family.get("revoked").map(String::as_str) != Some("0"),
            state,
            expires_at: number(&token, "exp"),
        }))
    }

    pub async fn rotate(&self, rotation: &Rotation<'_>) -> Result<RotationOutcome, Unavailable> {
        let keys = [
            self.key(&["rt", rotation.old_digest]),
            self.key(&["rt", rotation.new_digest]),
            self.key(&["fam", rotation.family_id]),
            self.key(&["famat", rotation.family_id]),
        ];
        let script = &self.scripts.rotate;
        let answer: Vec<String> = self
            .run(|mut c| async move {
                script
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .key(&keys[3])
                    .arg(rotation.now)
                    .arg(rotation.new_expires_at)
                    .arg(rotation.sealed)
                    .arg(rotation.access_jti)
                    .arg(rotation.access_expires_at)
                    .arg(rotation.family_id)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match answer.first().map(String::as_str) {
            Some("ok") => RotationOutcome::Rotated,
            Some("rotated") => RotationOutcome::AlreadyRotated {
                at: answer.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
                sealed: answer.get(2).cloned().unwrap_or_default(),
            },
            _ => RotationOutcome::Gone,
        })
    }

    /// End a family and revoke (and announce) the access tokens it issued that may be live;
    /// `leeway` is added to their expiry as for a logout.
    pub async fn revoke_family(
        &self,
        family_id: &str,
        now: u64,
        leeway: u64,
    ) -> Result<(), Unavailable> {
        let keys = [
            self.key(&["fam", family_id]),
            self.key(&["famat", family_id]),
            self.revoked_key(),
        ];
        let channel = self.channel();
        let script = &self.scripts.revoke_family;
        self.run(|mut c| async move {
            script
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(now)
                .arg(&channel)
                .arg(leeway)
                .invoke_async::<i64>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Count a login attempt against the username and address keys before hashing.
    pub async fn login_begin(
        &self,
        user: &str,
        address: &str,
        policy: &crate::auth::lockout::LockoutPolicy,
    ) -> Result<LoginGate, Unavailable> {
        let call = self.lockout_call(&self.scripts.login_begin, user, address, policy);
        let answer: Vec<u64> = self
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await?;
        Ok(match answer.as_slice() {
            [1, left, ..] => LoginGate::Locked(Duration::from_millis(*left)),
            [2, ..] => LoginGate::Settling,
            _ => LoginGate::Admitted,
        })
    }

    /// Settle an attempt `login_begin` admitted: `fail`, `ok` or `refund`. Returns the lock
    /// left on either key, if any.
    pub async fn login_settle(
        &self,
        user: &str,
        address: &str,
        policy: &crate::auth::lockout::LockoutPolicy,
        outcome: &'static str,
    ) -> Result<Option<Duration>, Unavailable> {
        let mut call = self.lockout_call(&self.scripts.login_settle, user, address, policy);
        call.arg(outcome);
        let left: u64 = self
            .run(|mut c| async move { call.invoke_async(&mut c).await })
            .await?;
        Ok((left > 0).then(|| Duration::from_millis(left)))
    }

    /// A lockout script with what both take: the username's and the address's keys, now
    /// (ms) and the policy.
    fn lockout_call<'s>(
        &self,
        script: &'s Script,
        user: &str,
        address: &str,
        policy: &crate::auth::lockout::LockoutPolicy,
    ) -> redis::ScriptInvocation<'s> {
        let mut call = script.prepare_invoke();
        call.key(self.key(&["lock", "user", crate::auth::bounded(user)]))
            .key(self.key(&["lock", "addr", address]))
            .arg(u64::try_from(unix_time().as_millis()).unwrap_or(u64::MAX))
            .arg(policy.failures)
            .arg(millis(policy.window))
            .arg(millis(policy.duration));
        call
    }

    /// Connect and PING once (for `check`).
    pub async fn probe(&self) -> Result<(), Unavailable> {
        self.connect().await?;
        self.ping().await
    }

    /// The fleet key of a caller's rate-limit timestamp.
    pub(super) fn rate_key(&self, fleet_key: &[u8; 16]) -> String {
        self.key(&["rl", &crate::auth::hex(fleet_key)])
    }

    /// Add `arrivals` at `interval` microseconds each to each key's fleet timestamp (unix
    /// microseconds) and return the timestamps, in one pipelined round trip.
    pub(super) async fn merge_rates(
        &self,
        requests: &[(String, u64, u32)],
    ) -> Result<Vec<u64>, Unavailable> {
        let now = unix_micros();
        self.run(|mut c| async move {
            // EVAL, not EVALSHA: a pipeline cannot load a script Redis has not seen (it
            // forgets them on restart), and this one is short.
            let mut pipe = redis::pipe();
            for (key, interval, arrivals) in requests {
                pipe.cmd("EVAL")
                    .arg(RATE_MERGE)
                    .arg(1)
                    .arg(key)
                    .arg(now)
                    .arg(*arrivals)
                    .arg((*interval).max(1));
            }
            pipe.query_async::<Vec<u64>>(&mut c).await
        })
        .await
    }

    /// A round trip, for the health check.
    pub(super) async fn ping(&self) -> Result<(), Unavailable> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }
}

/// Wall-clock time since the epoch: what timestamps shared between replicas are counted in.
fn unix_time() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

pub(super) fn unix_micros() -> u64 {
    u64::try_from(unix_time().as_micros()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Mark the state healthy (a command or subscription just worked).
pub(super) fn note_ok(state: &RedisState) {
    *state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
}
