//! Validated configuration: the domain types built from [`file`]'s serde mirror.
//!
//! Loading is two-stage (parse, then convert and validate) so that every rule about what a
//! valid gateway is lives here, in one place, and every complaint names `file:line:col`.

mod build;
pub mod file;
pub mod lint;
pub mod methods;
pub mod units;
pub mod upstream_tls;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use ipnet::IpNet;

use crate::auth::jwt::TokenSettings;
use crate::auth::lockout::LockoutPolicy;
use crate::auth::refresh::RefreshPolicy;
use crate::auth::user::Users;
use crate::policy::authz::Vocabulary;
use crate::policy::claim_path::ClaimPath;
use crate::policy::cors::CorsPolicy;
use crate::policy::routes::RouteTable;
use upstream_tls::UpstreamTls;

/// Minimum HMAC secret length (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest timeout or grace period accepted (connection and upstream timeouts, token
/// leeway): anything longer is a typo, and deadlines are computed as `now + timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Longest token lifetime and lockout window or duration accepted.
pub const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default and largest `login.max_revocations_per_subject`. The default allows more than a
/// logout a minute over a one-hour token's life and grace; at the largest, filling the
/// million-entry table still takes a hundred accounts.
pub const DEFAULT_REVOCATIONS_PER_SUBJECT: usize = 100;
const MAX_REVOCATIONS_PER_SUBJECT: u64 = 10_000;
/// IPv6 clients are locked out per /64 unless `login.lockout.ipv6_prefix` says otherwise:
/// the block a single subscriber is normally given (RFC 6177).
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// A table every proxied request looks up by name (its upstream). The keys come only from
/// the config, never from a client, so a fast seeded hash serves (std's SipHash cost about
/// 170 instructions per lookup).
pub type ByName<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// A config that cannot be used, with where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(u64, u64)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Server limits (SPEC defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Also the TLS handshake and first-byte deadline.
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub max_h2_streams: u32,
    /// How long in total a client may keep us waiting for request-body bytes…
    pub body_read_timeout: Duration,
    /// …plus one second per this many bytes delivered (bytes per second, at least 1).
    pub body_min_rate: u64,
    /// Cap on proxied request bodies; `None` streams any size.
    pub max_body_size: Option<u64>,
    /// How long a response write may stall on a client that does not read.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(30),
            max_h2_streams: 200,
            body_read_timeout: Duration::from_secs(10),
            body_min_rate: 500,
            max_body_size: None,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Where the TLS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `tls.session_ticket_key`: session ticket keys are derived from it.
    pub session_ticket_key: Option<TicketKeyFile>,
}

/// A `tls.session_ticket_key` file, read when the config is built (so `check` reports a
/// missing or short one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketKeyFile {
    pub path: PathBuf,
    pub secret: TicketSecret,
}

/// Fewest bytes a `tls.session_ticket_key` file may hold: 256 bits.
pub const MIN_TICKET_SECRET_BYTES: usize = 32;
/// Most: a larger file is not a key file (a certificate bundle, a log).
pub const MAX_TICKET_SECRET_BYTES: usize = 4096;

/// The bytes of a `tls.session_ticket_key` file, as they are. Its `Debug` form hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketSecret(Arc<[u8]>);

impl TicketSecret {
    pub fn new(bytes: Vec<u8>) -> TicketSecret {
        TicketSecret(bytes.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TicketSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketSecret({} bytes)", self.0.len())
    }
}

/// `trace.otlp`: one span per request, exported to an OpenTelemetry collector.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// An `http://` URL with an authority and a path.
    pub endpoint: http::Uri,
    pub service_name: String,
    /// Share of new traces exported (a caller's `traceparent` decides by its flag).
    pub sample_ratio: f64,
    pub timeout: Duration,
    pub max_batch: usize,
    pub max_queue: usize,
    pub flush_interval: Duration,
}

/// `POST /login` (and `/logout`) settings.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    pub path: String,
    pub lockout: LockoutPolicy,
    /// Live revocations one token subject may hold, so one account cannot fill the table.
    pub max_revocations_per_subject: usize,
}

/// Access-log rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where an upstream's requests go.
#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// `http://` or `https://` at `authority`.
    Http {
        scheme: Scheme,
        authority: Authority,
        /// Set exactly when `scheme` is `https`: built with this config generation, so a
        /// reload that changes (or re-reads) the upstream's TLS files gives it a new one.
        tls: Option<Arc<UpstreamTls>>,
    },
    /// Built-in `echo:`: answers with what it received.
    Echo,
}

/// A named upstream application.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub target: UpstreamTarget,
    pub connect_timeout: Duration,
    /// Deadline for the upstream's response headers.
    pub timeout: Duration,
    pub pass_token: bool,
}

pub use crate::auth::bearer::LOCAL_ISSUER;

/// Where an external issuer's keys are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysSource {
    /// OIDC discovery at this URL names the JWKS (its `issuer` must match).
    Discovery(String),
    /// The JWKS itself.
    Jwks(String),
}

/// An external identity provider: how its tokens are read, and how its keys are fetched.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub policy: std::sync::Arc<crate::auth::issuer::IssuerPolicy>,
    pub keys: KeysSource,
    /// The CA bundle (PEM) trusted for fetching, instead of the system roots.
    pub ca: Option<Vec<u8>>,
    pub refetch_cooldown: Duration,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    /// Changes whenever anything about fetching or reading its keys does: a reload that keeps
    /// it keeps the keys already fetched.
    pub fingerprint: String,
}

/// 1-based (line, column) of entries in the config file, for warnings that point home.
/// Users read from a `users_file` have none (they live in another file).
#[derive(Debug, Default)]
pub struct Positions {
    /// By route index.
    pub routes: Vec<Option<(u64, u64)>>,
    pub scopes: HashMap<String, (u64, u64)>,
    pub users: HashMap<String, (u64, u64)>,
    pub upstreams: HashMap<String, (u64, u64)>,
    pub secret: Option<(u64, u64)>,
    /// By `tokens.keys` index.
    pub keys: Vec<Option<(u64, u64)>>,
}

/// The validated configuration of one generation.
#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    /// Where things were written in `source`, for `check`'s warnings.
    pub positions: Positions,
    /// Every file this config was read from (the config, its `users_file`, the TLS
    /// certificates and keys, the upstreams' CA bundles and client certificates), for watching.
    pub files: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub tls: Option<TlsPaths>,
    pub admin: Option<SocketAddr>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    pub tokens: TokenSettings,
    /// The secret was not configured and is random for this process.
    pub secret_is_random: bool,
    /// `kid`s of ring keys given no key file: generated for this process (demo only).
    pub generated_keys: Vec<String>,
    pub login: LoginSettings,
    pub log_format: LogFormat,
    /// `trace.otlp`: `None` unless configured (and refused in a build without `otlp`).
    pub otlp: Option<OtlpSettings>,
    pub vocabulary: Vocabulary,
    pub users: Users,
    pub upstreams: ByName<Upstream>,
    /// External identity providers, in name order.
    pub issuers: Vec<IssuerSettings>,
    pub routes: RouteTable,
    /// The top-level `cors:`: the policy of the gateway's endpoints and of unmatched
    /// requests (routes carry their own, inherited from it).
    pub cors: Option<Arc<CorsPolicy>>,
    /// Every claim path a route's `claims:` reads: all a verified identity keeps of its
    /// token's claims (empty: nothing is kept).
    pub claim_paths: Vec<ClaimPath>,
    /// `tokens.refresh`: refresh tokens are issued only when set.
    pub refresh: Option<RefreshPolicy>,
    /// `state:`; read at start only (a reload that changes it logs that it needs a restart).
    pub state: StateSettings,
    /// A hex digest of the config text(s), to tell generations apart.
    pub digest: String,
}

/// The JSON Schema (draft 2020-12) of `gateway.yaml`, generated from the file types and their
/// doc comments. It describes the shape; `check` also validates meaning (scopes that exist,
/// durations within their maxima, …).
pub fn schema() -> String {
    let mut schema = schemars::schema_for!(file::GatewayFile);
    schema.insert("title".into(), "gateway.yaml".into());
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

impl Config {
    /// Read, parse and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: path.to_owned(),
            position: None,
            message: format!("cannot read: {err}"),
        })?;
        Self::from_text(path, &text)
    }

    /// Parse and validate `text` as if read from `path` (relative paths resolve against its
    /// directory).
    pub fn from_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: file::GatewayFile = file::parse(text).map_err(|err| ConfigError {
            file: path.to_owned(),
            position: err.location,
            message: err.message,
        })?;
        build::Builder::new(path).build(raw, text)
    }

    /// The key ring `path` names (ids, statuses, retirement times), without loading keys or
    /// validating the rest: what `check --previous` compares the current ring with.
    pub fn ring_states(path: &Path) -> Result<Vec<crate::auth::keys::KeyState>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: path.to_owned(),
            position: None,
            message: format!("cannot read: {err}"),
        })?;
        let raw: file::GatewayFile = file::parse(&text).map_err(|err| ConfigError {
            file: path.to_owned(),
            position: err.location,
            message: err.message,
        })?;
        build::ring_states(path, &raw.tokens)
    }

    /// True when `addr` (a socket peer) is one of the configured trusted proxies.
    pub fn is_trusted_proxy(&self, addr: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&addr))
    }
}

/// The secret used when none is configured: random, but the same for every reload of this
/// process, so a reload never invalidates the tokens already issued.
fn process_secret() -> Vec<u8> {
    static SECRET: OnceLock<Vec<u8>> = OnceLock::new();
    SECRET
        .get_or_init(|| {
            use rand::RngCore;
            let mut bytes = vec![0u8; 64];
            rand::rng().fill_bytes(&mut bytes);
            bytes
        })
        .clone()
}

fn digest_hex(text: &str) -> String {
    digest_hex_bytes(text.as_bytes())
}

fn digest_hex_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `state:` — where the state replicas must agree on lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateSettings {
    /// This process's memory: nothing to run, nothing shared.
    #[default]
    Memory,
    Redis(RedisSettings),
}

/// `state.redis:`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// May carry a password: never printed (see the `Debug` impl).
    pub url: String,
    pub key_prefix: String,
    /// PEM CA bundle for `rediss://`.
    pub ca: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Logins while Redis is unreachable: regulated by this replica alone (`fail_open`)
    /// or refused with 503 (`fail_closed`, the default).
    pub login_fail_open: bool,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("login_fail_open", &self.login_fail_open)
            .finish_non_exhaustive()
    }
}

/// `url` with any password replaced by `***`, for logs and `check`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}
