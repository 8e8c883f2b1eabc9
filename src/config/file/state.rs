//! Sessions as written in `gateway.yaml`: `login:` (endpoint and lockout), `tokens.refresh:`
//! and `state:`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::Spanned;

/// `tokens.refresh:` — refresh tokens (RFC 6749 §6) with rotation and reuse detection.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshFile {
    /// Lifetime of each refresh token; every use issues a new one (duration, default 14d).
    #[schemars(with = "Option<String>")]
    pub ttl: Option<Spanned<String>>,
    /// Absolute lifetime of a login's chain of refresh tokens (duration, default 90d).
    #[schemars(with = "Option<String>")]
    pub max_lifetime: Option<Spanned<String>>,
    /// A client retrying a refresh within this after losing the answer gets the same new
    /// pair; any other reuse of a used token ends the whole chain (duration, default 10s,
    /// at most 5m; `0s` disables).
    #[schemars(with = "Option<String>")]
    pub reuse_grace: Option<Spanned<String>>,
}

/// `state:` — where revocations, lockouts and refresh tokens live (default: this process's
/// memory).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// Share state with other replicas through Redis.
    #[schemars(with = "Option<RedisFile>")]
    pub redis: Option<Spanned<RedisFile>>,
}

/// `state.redis:` — the Redis every replica of a fleet shares.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    /// `redis://[user:pass@]host:port[/db]` or `rediss://` for TLS; use `${VAR}`.
    pub url: String,
    /// Prefix of every key and channel (default `portcullis:`): fleets sharing a Redis
    /// keep apart by it.
    pub key_prefix: Option<String>,
    /// PEM CA bundle trusted for `rediss://` instead of the system roots.
    pub ca: Option<String>,
    /// Deadline of one Redis command (duration, default 1s).
    pub timeout: Option<String>,
    /// What a concern does while Redis cannot be reached.
    #[serde(default)]
    pub on_unavailable: OnUnavailableFile,
}

/// `state.redis.on_unavailable:` — `fail_closed` (503 with `Retry-After`) or `fail_open`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnUnavailableFile {
    /// Logins: `fail_closed` (default) or `fail_open` (regulated by this replica alone).
    pub login: Option<String>,
    /// Refresh-token grants: only `fail_closed` (a rotation cannot be made safely elsewhere).
    pub refresh: Option<String>,
}

/// `login:` — endpoint path and brute-force regulation.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    /// Path of the login endpoint (default `/login`).
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Failures within `window` that lock a username or address for `duration`.
    pub lockout: Option<LockoutFile>,
    /// Live logouts one user may hold (default 100).
    #[schemars(with = "Option<u64>")]
    pub max_revocations_per_subject: Option<Spanned<u64>>,
}

/// `login.lockout:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockoutFile {
    /// Failures that lock the key.
    #[schemars(with = "u64")]
    pub failures: Spanned<u64>,
    /// Period the failures are counted over (duration).
    #[schemars(with = "String")]
    pub window: Spanned<String>,
    /// How long a locked key stays locked (duration).
    #[schemars(with = "String")]
    pub duration: Spanned<String>,
    /// IPv6 clients are counted per network of this prefix length (default 64).
    #[schemars(with = "Option<u64>")]
    pub ipv6_prefix: Option<Spanned<u64>>,
}
