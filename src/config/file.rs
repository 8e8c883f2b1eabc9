//! Serde mirror of `gateway.yaml`: the only file that knows YAML.
//!
//! Every struct rejects unknown keys, so a typo is an error with its line rather than a
//! silently ignored setting. Values that later checks may complain about carry their
//! [`Spanned`] location, so those complaints can name `file:line:col` too.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
pub use serde_saphyr::{Location, Spanned};

mod policy;
mod state;
mod tls;
mod trace;
pub use policy::{ClaimConditionFile, CorsFile, ScalarSchema};
pub use state::{LockoutFile, LoginFile, OnUnavailableFile, RedisFile, RefreshFile, StateFile};
pub use tls::{TlsFile, UpstreamTlsFile};
pub use trace::{OtlpFile, TraceFile};

/// Budget against YAML bombs: far above any real gateway config, far below a memory problem.
const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// The whole file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Address the HTTPS listener binds, e.g. `127.0.0.1:8443` (default `0.0.0.0:8443`).
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
    /// PEM certificate chain and key; omit for a self-signed development certificate.
    pub tls: Option<TlsFile>,
    /// Plain-HTTP admin listener for `/healthz`, `/readyz`, `/metrics`; keep it on loopback.
    #[schemars(with = "Option<String>")]
    pub admin: Option<Spanned<String>>,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` is believed.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Connection, header, body and timeout limits.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Access-token signing and validation.
    #[serde(default)]
    pub tokens: TokensFile,
    /// The login endpoint and brute-force lockouts.
    #[serde(default)]
    pub login: LoginFile,
    /// Access-log format.
    #[serde(default)]
    pub log: LogFile,
    /// Span export (OTLP); trace context is propagated without it.
    #[serde(default)]
    pub trace: TraceFile,
    /// The scope vocabulary: name → description or `{ description, implies }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ScopeFile>")]
    pub scopes: BTreeMap<String, Spanned<ScopeFile>>,
    /// Users who may log in (or give `users_file`).
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, UserFile>>")]
    pub users: Option<BTreeMap<String, Spanned<UserFile>>>,
    /// A YAML file of users, same shape as `users` (relative to this file).
    #[schemars(with = "Option<String>")]
    pub users_file: Option<Spanned<String>>,
    /// Upstream apps: name → `http://host:port`, `https://host:port` (or `echo:`), or the long
    /// form.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, UpstreamFile>")]
    pub upstreams: BTreeMap<String, Spanned<UpstreamFile>>,
    /// Rules in order; the first match decides; anything unmatched is 404.
    #[serde(default)]
    #[schemars(with = "Vec<RouteFile>")]
    pub routes: Vec<Spanned<RouteFile>>,
    /// Default per-identity rate limit for proxied routes (a route's own `rate_limit:` wins).
    pub rate_limit: Option<RateLimitFile>,
    /// External identity providers whose tokens are accepted: name → settings. `local` (the
    /// gateway's own tokens) is reserved.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, IssuerFile>")]
    pub issuers: BTreeMap<String, Spanned<IssuerFile>>,
    /// Extension methods (WebDAV and the like) that `methods:` may list.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub extra_methods: Vec<Spanned<String>>,
    /// CORS answered by the gateway: the default for routes without their own `cors:`, and
    /// the policy of login, logout and the `/.well-known/` documents.
    #[schemars(with = "Option<CorsFile>")]
    pub cors: Option<Spanned<CorsFile>>,
    /// Where revocations, lockouts and refresh tokens live: this process's memory (the
    /// default) or a Redis shared by a fleet; read at start only.
    #[serde(default)]
    pub state: StateFile,
}

/// `limits:` — every field optional; defaults live in the domain layer.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Request-head deadline, also the TLS handshake and first byte (duration, default 10s).
    #[schemars(with = "Option<String>")]
    pub header_read_timeout: Option<Spanned<String>>,
    /// HTTP/2 GOAWAY after this long with no request in progress (default 60s).
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Spanned<String>>,
    /// Largest request head (size, default 16KiB).
    #[schemars(with = "Option<String>")]
    pub max_header_bytes: Option<Spanned<String>>,
    /// Most header fields per request (default 100).
    #[schemars(with = "Option<u64>")]
    pub max_headers: Option<Spanned<u64>>,
    /// Open client connections beyond which new ones are closed (default 10000).
    #[schemars(with = "Option<u64>")]
    pub max_connections: Option<Spanned<u64>>,
    /// How long in-flight requests may finish after SIGTERM (duration).
    #[schemars(with = "Option<String>")]
    pub shutdown_grace: Option<Spanned<String>>,
    /// Concurrent HTTP/2 streams per connection (default 200).
    #[schemars(with = "Option<u64>")]
    pub max_h2_streams: Option<Spanned<u64>>,
    /// Total time a client may keep the gateway waiting for body bytes (duration).
    #[schemars(with = "Option<String>")]
    pub body_read_timeout: Option<Spanned<String>>,
    /// Bytes per second that earn one more second of body allowance (size).
    #[schemars(with = "Option<String>")]
    pub body_min_rate: Option<Spanned<String>>,
    /// Largest proxied request body (size); unset streams any size.
    #[schemars(with = "Option<String>")]
    pub max_body_size: Option<Spanned<String>>,
    /// A response write stalled this long closes the connection (duration).
    #[schemars(with = "Option<String>")]
    pub write_timeout: Option<Spanned<String>>,
}

/// `tokens:` — signing and validation settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    /// `iss` of issued tokens, required in accepted ones.
    #[schemars(with = "Option<String>")]
    pub issuer: Option<Spanned<String>>,
    /// `aud` of issued tokens, required in accepted ones.
    #[schemars(with = "Option<String>")]
    pub audience: Option<Spanned<String>>,
    /// HS256 (default), HS384 or HS512, with `secret`; or give `keys` instead.
    #[schemars(with = "Option<String>")]
    pub algorithm: Option<Spanned<String>>,
    /// HMAC key, at least 32 bytes; use `${VAR}`. Unset (and no `keys`): random per process.
    #[schemars(with = "Option<String>")]
    pub secret: Option<Spanned<String>>,
    /// The key ring, instead of `algorithm` + `secret`: one `active` key signs, `next` keys
    /// are published ahead of promotion, `retired` keys verify until their tokens expire.
    #[schemars(with = "Option<Vec<KeyFile>>")]
    pub keys: Option<Vec<Spanned<KeyFile>>>,
    /// Access-token lifetime (duration, default 1h, at most 365d).
    #[schemars(with = "Option<String>")]
    pub ttl: Option<Spanned<String>>,
    /// Clock skew allowed when checking token times (duration, default 30s).
    #[schemars(with = "Option<String>")]
    pub leeway: Option<Spanned<String>>,
    /// Profile fields issued tokens also carry: `email`, `name`.
    #[schemars(with = "Option<Vec<String>>")]
    pub claims: Option<Vec<Spanned<String>>>,
    /// Refresh tokens: when given, a login also returns a rotating `refresh_token`.
    pub refresh: Option<RefreshFile>,
}

/// One key of `tokens.keys`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Key id put in token headers and the JWKS (letters, digits, `.`, `_`, `-`; at most 64).
    pub kid: String,
    /// ES256, EdDSA, HS256, HS384 or HS512.
    pub algorithm: String,
    /// ES256/EdDSA: PKCS#8 PEM private key file (`${VAR}` allowed; `portcullis gen-key`
    /// makes one). Omitted: a key generated for this process (demo only).
    pub key: Option<String>,
    /// HS256/384/512: the secret, at least 32 bytes; use `${VAR}`.
    pub secret: Option<String>,
    /// `active` (signs; exactly one), `next` (published, not yet signing) or `retired`.
    pub status: String,
    /// When a `retired` key was retired (RFC 3339, e.g. `2026-12-01T10:00:00Z`): `check`
    /// says when it may be removed.
    pub retired_at: Option<String>,
}

/// A rate limit: `requests` per `per` on average, at most `burst` back to back.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The period (duration, e.g. `1s`, `1m`).
    pub per: String,
    /// Most requests passing back to back (default: `requests`).
    pub burst: Option<u32>,
    /// Also send `RateLimit-Policy`/`RateLimit` on allowed responses (always on 429).
    #[serde(default)]
    pub headers: bool,
}

/// A route's `rate_limit:`: its own limit, or `false` for none.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RouteRateLimitFile {
    Off(bool),
    Limit(RateLimitFile),
}

/// One entry of `issuers:`: an external identity provider.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    /// The exact `iss` of its tokens, an `https://` URL; OIDC discovery is read from
    /// `<issuer>/.well-known/openid-configuration` unless `jwks_uri` is given.
    pub issuer: String,
    /// `aud` its tokens must carry for this gateway (required).
    pub audience: String,
    /// Where its keys are, skipping discovery (`https://`).
    pub jwks_uri: Option<String>,
    /// Algorithms accepted (asymmetric only; default RS256, ES256).
    pub algorithms: Option<Vec<String>>,
    /// PEM CA bundle trusted for fetching discovery and keys, instead of the system roots.
    pub ca: Option<String>,
    /// Claim naming the user, forwarded as `X-Forwarded-User` (dotted path; default `sub`).
    pub user_claim: Option<String>,
    /// Claims read as scopes, strings (space-separated) or arrays (default `scope`, `scp`),
    /// e.g. `realm_access.roles`.
    pub scope_claims: Option<Vec<String>>,
    /// Provider scope or role names → Portcullis scope names (others are kept as they are).
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Longest token lifetime accepted (duration, default 24h).
    pub max_token_lifetime: Option<String>,
    /// An unknown `kid` refetches the keys at most once per this (duration, default 5m).
    pub refetch_cooldown: Option<String>,
    /// Keys are refreshed after their response's `max-age`, but no sooner than this
    /// (duration, default 1m)…
    pub min_refresh: Option<String>,
    /// …and no later than this (duration, default 24h).
    pub max_refresh: Option<String>,
}

/// `log:` — access-log format (`pretty` or `json`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `pretty` (default) or `json`.
    #[schemars(with = "Option<String>")]
    pub format: Option<Spanned<String>>,
}

/// A scope: either a bare description or `{ description, implies }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScopeFile {
    Description(String),
    Full(ScopeFull),
}

/// The long form of a scope.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeFull {
    /// What the scope allows, for people.
    #[serde(default)]
    pub description: String,
    /// Scopes this one also grants (`"*"`: every scope).
    #[serde(default)]
    pub implies: Vec<String>,
}

/// One user record.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    /// argon2id PHC string from `portcullis hash-password`.
    pub password: String,
    /// Scopes the user holds.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Refused at login and every token refused, without deleting the entry.
    #[serde(default)]
    pub disabled: bool,
    /// Forwarded as `X-Forwarded-Email`.
    pub email: Option<String>,
    /// Forwarded as `X-Forwarded-Name` (RFC 8187 when not ASCII).
    pub name: Option<String>,
    /// Forwarded comma-separated as `X-Forwarded-Groups`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free-form strings, each forwarded as `X-Forwarded-Attr-<key>`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// The shape of a `users_file:`.
pub type UsersFile = BTreeMap<String, Spanned<UserFile>>;

/// An upstream: a URL string or the long form.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum UpstreamFile {
    Url(String),
    Full(Box<UpstreamFull>),
}

// By hand rather than derived with `#[serde(untagged)]` (which the schema still describes):
// untagged buffers the value, which loses the positions of the long form's keys and turns a
// typo in it into "did not match any variant".
impl<'de> Deserialize<'de> for UpstreamFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = UpstreamFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an upstream URL or a mapping with `url`")
            }
            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<UpstreamFile, E> {
                Ok(UpstreamFile::Url(url.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<UpstreamFile, A::Error> {
                let full = serde::de::value::MapAccessDeserializer::new(map);
                UpstreamFull::deserialize(full).map(|f| UpstreamFile::Full(Box::new(f)))
            }
        }
        deserializer.deserialize_any(Either)
    }
}

/// The long form of an upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFull {
    /// `http://host[:port]` or `https://host[:port]` (no path), or `echo:`.
    pub url: String,
    /// Connect deadline (duration).
    pub connect_timeout: Option<String>,
    /// Deadline for the upstream's response head (duration).
    pub timeout: Option<String>,
    /// Forward the client's (verified) `Authorization` header.
    #[serde(default)]
    pub pass_token: bool,
    /// TLS settings of an `https://` upstream (certificates are always verified).
    #[schemars(with = "Option<UpstreamTlsFile>")]
    pub tls: Option<Spanned<UpstreamTlsFile>>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Name in logs, metrics and rule tests (default `route-N`).
    pub id: Option<String>,
    /// Pattern: literal segments, `{name}` for one segment, `*`, and a final `**`.
    pub path: String,
    /// Methods the rule applies to (uppercase; GET includes HEAD); omit for all.
    #[schemars(with = "Option<Vec<String>>")]
    pub methods: Option<Vec<Spanned<String>>>,
    /// Host the rule applies to (no port); omit for any.
    pub host: Option<String>,
    /// Upstream name (not for `deny` routes).
    pub upstream: Option<String>,
    /// Anyone may pass, with or without a token.
    #[serde(default)]
    pub public: bool,
    /// No one may pass (403).
    #[serde(default)]
    pub deny: bool,
    /// A token holding all of these scopes may pass.
    pub scopes: Option<Vec<String>>,
    /// A token holding at least one of these scopes may pass.
    pub any_scopes: Option<Vec<String>>,
    /// This route's rate limit per caller, or `false` for none (default: the top-level one).
    pub rate_limit: Option<RouteRateLimitFile>,
    /// Issuers whose tokens this route accepts (`local` = the gateway's own; default: all).
    pub issuers: Option<Vec<String>>,
    /// Match literal segments ignoring ASCII case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Overrides `limits.max_body_size` for this route.
    pub max_body_size: Option<String>,
    /// Conditions on the token's claims, all of which must hold (with `scopes`/`any_scopes`;
    /// checked after them).
    #[schemars(with = "Option<Vec<ClaimConditionFile>>")]
    pub claims: Option<Vec<Spanned<ClaimConditionFile>>>,
    /// CORS for this route, replacing the top-level `cors:`.
    #[schemars(with = "Option<CorsFile>")]
    pub cors: Option<Spanned<CorsFile>>,
}

/// A YAML document that did not parse into the schema.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub location: Option<(u64, u64)>,
    pub message: String,
}

/// Parse YAML text into `T`, keeping the error position.
pub fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, SyntaxError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(SyntaxError {
            location: None,
            message: format!("file larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    // The default options carry serde-saphyr's budget (events, aliases, depth) against YAML bombs.
    serde_saphyr::from_str(text).map_err(|err| {
        let location = err
            .location()
            .filter(|l| l.line() > 0)
            .map(|l| (l.line(), l.column()));
        SyntaxError {
            location,
            message: without_position(first_line(&err.to_string())),
        }
    })
}

/// serde-saphyr renders a source snippet after the message; the caller prints its own
/// `file:line:col`, so keep only the headline.
fn first_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid YAML")
        .trim_start_matches("error: ")
        .to_owned()
}

/// serde-saphyr may prefix its message with `line N column M: `; we print our own position.
fn without_position(message: String) -> String {
    if let Some(rest) = message.strip_prefix("line ") {
        if let Some((_, after)) = rest.split_once(": ") {
            if rest.split(':').next().is_some_and(|p| p.contains("column")) {
                return after.to_owned();
            }
        }
    }
    message
}
