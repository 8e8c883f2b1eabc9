//! Validated configuration: the domain types built from [`file`]'s serde mirror.
//!
//! Loading is two-stage (parse, then convert and validate) so that every rule about what a
//! valid gateway is lives here, in one place, and every complaint names `file:line:col`.

pub mod file;
pub mod lint;
pub mod methods;
pub mod reload;
pub mod units;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use ipnet::IpNet;

use crate::auth::jwt::{SigningAlgorithm, TokenSettings};
use crate::auth::password::PasswordHash;
use crate::authz::{Requirement, Vocabulary};
use crate::limit::LockoutPolicy;
use crate::routes::{Access, Route, RouteTable};
use file::{Location, Spanned};
use methods::ExtraMethods;
use units::{interpolate, parse_duration, parse_size};

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

/// One account that may log in.
#[derive(Debug, Clone)]
pub struct User {
    pub hash: PasswordHash,
    pub scopes: Vec<String>,
}

/// Where an upstream's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    Http {
        scheme: Scheme,
        authority: Authority,
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

/// The validated configuration of one generation.
#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    /// Every file this config was read from (the config and its `users_file`), for watching.
    pub files: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub tls: Option<TlsPaths>,
    pub admin: Option<SocketAddr>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    pub tokens: TokenSettings,
    /// The secret was not configured and is random for this process.
    pub secret_is_random: bool,
    pub login: LoginSettings,
    pub log_format: LogFormat,
    pub vocabulary: Vocabulary,
    pub users: HashMap<String, User>,
    pub upstreams: HashMap<String, Upstream>,
    pub routes: RouteTable,
    /// A hex digest of the config text(s), to tell generations apart.
    pub digest: String,
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
        Builder::new(path).build(raw, text)
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

/// Carries the file name so every conversion error can name its position.
struct Builder {
    file: PathBuf,
    base: PathBuf,
}

impl Builder {
    fn new(path: &Path) -> Self {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        Builder {
            file: path.to_owned(),
            base,
        }
    }

    fn err(&self, at: Option<&Location>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            position: at.filter(|l| l.line() > 0).map(|l| (l.line(), l.column())),
            message: message.into(),
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.err(Some(&spanned.referenced), message)
    }

    fn string(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        interpolate(&value.value).map_err(|e| self.at(value, format!("{key}: {e}")))
    }

    /// An optional duration, at most `max`.
    fn duration(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => self.required_duration(v, key, max),
        }
    }

    fn required_duration(
        &self,
        value: &Spanned<String>,
        key: &str,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        parse_duration(&value.value, max).map_err(|e| self.at(value, format!("{key}: {e}")))
    }

    /// A timeout or grace period: at most [`MAX_TIMEOUT`].
    fn timeout(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.duration(value, key, default, MAX_TIMEOUT)
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        }
    }

    fn build(&self, raw: file::GatewayFile, text: &str) -> Result<Config, ConfigError> {
        let listen = match &raw.listen {
            None => SocketAddr::from(([0, 0, 0, 0], 8443)),
            Some(v) => self
                .string(v, "listen")?
                .parse()
                .map_err(|_| self.at(v, "listen: expected an address like 0.0.0.0:8443"))?,
        };
        let admin = match &raw.admin {
            None => None,
            Some(v) => Some(
                self.string(v, "admin")?
                    .parse()
                    .map_err(|_| self.at(v, "admin: expected an address like 127.0.0.1:9901"))?,
            ),
        };
        let tls = match &raw.tls {
            None => None,
            Some(t) => Some(TlsPaths {
                cert: self.resolve(&self.string(&t.cert, "tls.cert")?),
                key: self.resolve(&self.string(&t.key, "tls.key")?),
            }),
        };
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .map(|v| parse_net(&v.value).map_err(|e| self.at(v, format!("trusted_proxies: {e}"))))
            .collect::<Result<_, _>>()?;
        let limits = self.limits(&raw.limits)?;
        let (tokens, secret_is_random) = self.tokens(&raw.tokens)?;
        let login = self.login(&raw.login)?;
        let log_format = match &raw.log.format {
            None => LogFormat::Pretty,
            Some(v) => match v.value.as_str() {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                other => {
                    return Err(self.at(
                        v,
                        format!("log.format: `{other}` is not `pretty` or `json`"),
                    ))
                }
            },
        };
        let vocabulary = self.vocabulary(&raw.scopes)?;
        let mut files = vec![self.file.clone()];
        let mut digest_input = text.to_owned();
        let users = self.users(&raw, &vocabulary, &mut files, &mut digest_input)?;
        if let Some(paths) = &tls {
            // Certificates reload too: their content is part of what makes a new generation,
            // and their files are watched like the config itself.
            for file in [&paths.cert, &paths.key] {
                if let Ok(bytes) = std::fs::read(file) {
                    digest_input.push_str(&digest_hex_bytes(&bytes));
                }
                files.push(file.clone());
            }
        }
        let upstreams = self.upstreams(&raw.upstreams)?;
        let extra_methods = self.extra_methods(&raw.extra_methods)?;
        let routes = self.routes(&raw.routes, &vocabulary, &upstreams, &extra_methods)?;
        Ok(Config {
            source: self.file.clone(),
            files,
            listen,
            tls,
            admin,
            trusted_proxies,
            limits,
            tokens,
            secret_is_random,
            login,
            log_format,
            vocabulary,
            users,
            upstreams,
            routes,
            digest: digest_hex(&digest_input),
        })
    }

    fn limits(&self, raw: &file::LimitsFile) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let count = |v: &Option<Spanned<u64>>,
                     key: &str,
                     default: usize,
                     min: u64|
         -> Result<usize, ConfigError> {
            match v {
                None => Ok(default),
                Some(v) if v.value < min => {
                    Err(self.at(v, format!("limits.{key}: must be at least {min}")))
                }
                Some(v) => usize::try_from(v.value)
                    .map_err(|_| self.at(v, format!("limits.{key}: too large"))),
            }
        };
        let max_header_bytes = match &raw.max_header_bytes {
            None => d.max_header_bytes,
            Some(v) => {
                let bytes = parse_size(&v.value)
                    .map_err(|e| self.at(v, format!("limits.max_header_bytes: {e}")))?;
                if !(1024..=1024 * 1024).contains(&bytes) {
                    return Err(
                        self.at(v, "limits.max_header_bytes: must be between 1KiB and 1MiB")
                    );
                }
                bytes as usize
            }
        };
        let size = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<u64>, ConfigError> {
            let Some(v) = v else { return Ok(None) };
            match parse_size(&v.value) {
                Ok(0) => Err(self.at(v, format!("limits.{key}: must be at least 1B"))),
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) => Err(self.at(v, format!("limits.{key}: {e}"))),
            }
        };
        let header_read_timeout = self.timeout(
            &raw.header_read_timeout,
            "limits.header_read_timeout",
            d.header_read_timeout,
        )?;
        Ok(Limits {
            header_read_timeout,
            idle_timeout: self.timeout(&raw.idle_timeout, "limits.idle_timeout", d.idle_timeout)?,
            max_header_bytes,
            max_headers: count(&raw.max_headers, "max_headers", d.max_headers, 1)?,
            max_connections: count(
                &raw.max_connections,
                "max_connections",
                d.max_connections,
                1,
            )?,
            shutdown_grace: self.timeout(
                &raw.shutdown_grace,
                "limits.shutdown_grace",
                d.shutdown_grace,
            )?,
            max_h2_streams: count(
                &raw.max_h2_streams,
                "max_h2_streams",
                d.max_h2_streams as usize,
                1,
            )?
            .try_into()
            .unwrap_or(u32::MAX),
            // A client slow with its body is as suspect as one slow with its headers.
            body_read_timeout: self.timeout(
                &raw.body_read_timeout,
                "limits.body_read_timeout",
                header_read_timeout,
            )?,
            body_min_rate: size(&raw.body_min_rate, "body_min_rate")?.unwrap_or(d.body_min_rate),
            max_body_size: size(&raw.max_body_size, "max_body_size")?,
            write_timeout: self.timeout(
                &raw.write_timeout,
                "limits.write_timeout",
                d.write_timeout,
            )?,
        })
    }

    fn tokens(&self, raw: &file::TokensFile) -> Result<(TokenSettings, bool), ConfigError> {
        let algorithm = match &raw.algorithm {
            None => SigningAlgorithm::HS256,
            Some(v) => match v.value.as_str() {
                "HS256" => SigningAlgorithm::HS256,
                "HS384" => SigningAlgorithm::HS384,
                "HS512" => SigningAlgorithm::HS512,
                other => {
                    return Err(self.at(
                        v,
                        format!(
                            "tokens.algorithm: `{other}` is not supported (HS256, HS384 or HS512)"
                        ),
                    ))
                }
            },
        };
        let (secret, secret_is_random) = match &raw.secret {
            None => (process_secret(), true),
            Some(v) => {
                let secret = self.string(v, "tokens.secret")?;
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(self.at(
                        v,
                        format!(
                            "tokens.secret: must be at least {MIN_SECRET_BYTES} bytes (got {})",
                            secret.len()
                        ),
                    ));
                }
                (secret.into_bytes(), false)
            }
        };
        let optional =
            |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>, ConfigError> {
                v.as_ref().map(|v| self.string(v, key)).transpose()
            };
        let ttl = self.duration(
            &raw.ttl,
            "tokens.ttl",
            Duration::from_secs(3600),
            MAX_PERIOD,
        )?;
        if ttl.is_zero() {
            return Err(self.err(
                raw.ttl.as_ref().map(|v| &v.referenced),
                "tokens.ttl: must be positive",
            ));
        }
        Ok((
            TokenSettings {
                algorithm,
                secret,
                issuer: optional(&raw.issuer, "tokens.issuer")?,
                audience: optional(&raw.audience, "tokens.audience")?,
                ttl,
                leeway: self.timeout(&raw.leeway, "tokens.leeway", Duration::from_secs(30))?,
            },
            secret_is_random,
        ))
    }

    fn login(&self, raw: &file::LoginFile) -> Result<LoginSettings, ConfigError> {
        let path = match &raw.path {
            None => "/login".to_owned(),
            Some(v) => {
                let normalised = crate::path::normalise(&v.value)
                    .map_err(|e| self.at(v, format!("login.path: {e}")))?;
                if normalised != v.value {
                    return Err(self.at(
                        v,
                        format!("login.path: write it in canonical form (`{normalised}`)"),
                    ));
                }
                normalised
            }
        };
        let lockout = match &raw.lockout {
            None => LockoutPolicy {
                failures: 5,
                window: Duration::from_secs(15 * 60),
                duration: Duration::from_secs(15 * 60),
                ipv6_prefix: DEFAULT_IPV6_PREFIX,
            },
            Some(l) => self.lockout(l)?,
        };
        let max_revocations_per_subject = match &raw.max_revocations_per_subject {
            None => DEFAULT_REVOCATIONS_PER_SUBJECT,
            Some(v) if (1..=MAX_REVOCATIONS_PER_SUBJECT).contains(&v.value) => v.value as usize,
            Some(v) => {
                return Err(self.at(
                    v,
                    format!(
                        "login.max_revocations_per_subject: must be between 1 and {MAX_REVOCATIONS_PER_SUBJECT}"
                    ),
                ))
            }
        };
        Ok(LoginSettings {
            path,
            lockout,
            max_revocations_per_subject,
        })
    }

    fn lockout(&self, l: &file::LockoutFile) -> Result<LockoutPolicy, ConfigError> {
        let failures = u32::try_from(l.failures.value)
            .ok()
            .filter(|f| *f > 0)
            .ok_or_else(|| {
                self.at(
                    &l.failures,
                    "login.lockout.failures: must be between 1 and 2^32",
                )
            })?;
        let ipv6_prefix = match &l.ipv6_prefix {
            None => DEFAULT_IPV6_PREFIX,
            Some(v) => u8::try_from(v.value)
                .ok()
                .filter(|p| (1..=128).contains(p))
                .ok_or_else(|| {
                    self.at(v, "login.lockout.ipv6_prefix: must be between 1 and 128")
                })?,
        };
        Ok(LockoutPolicy {
            failures,
            window: self.required_duration(&l.window, "login.lockout.window", MAX_PERIOD)?,
            duration: self.required_duration(&l.duration, "login.lockout.duration", MAX_PERIOD)?,
            ipv6_prefix,
        })
    }

    fn vocabulary(
        &self,
        raw: &BTreeMap<String, Spanned<file::ScopeFile>>,
    ) -> Result<Vocabulary, ConfigError> {
        let mut defs = Vec::with_capacity(raw.len());
        for (name, scope) in raw {
            if !valid_scope_name(name) {
                return Err(self.at(scope, format!(
                    "scopes: `{name}` is not a valid scope name (printable ASCII, no spaces, quotes or backslashes)"
                )));
            }
            let (description, implies) = match &scope.value {
                file::ScopeFile::Description(d) => (d.clone(), Vec::new()),
                file::ScopeFile::Full(f) => (f.description.clone(), f.implies.clone()),
            };
            defs.push((name.clone(), description, implies));
        }
        Vocabulary::new(defs).map_err(|e| {
            let at = raw.values().next().map(|s| &s.referenced);
            self.err(at, format!("scopes: {e}"))
        })
    }

    fn users(
        &self,
        raw: &file::GatewayFile,
        vocabulary: &Vocabulary,
        files: &mut Vec<PathBuf>,
        digest_input: &mut String,
    ) -> Result<HashMap<String, User>, ConfigError> {
        match (&raw.users, &raw.users_file) {
            (Some(_), Some(v)) => Err(self.at(
                v,
                "users_file: give either `users:` or `users_file:`, not both",
            )),
            (Some(users), None) => self.user_records(users, vocabulary),
            (None, None) => Ok(HashMap::new()),
            (None, Some(v)) => {
                let path = self.resolve(&self.string(v, "users_file")?);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.at(
                        v,
                        format!("users_file: cannot read {}: {e}", path.display()),
                    )
                })?;
                let nested = Builder::new(&path);
                let users: file::UsersFile = file::parse(&text).map_err(|e| ConfigError {
                    file: path.clone(),
                    position: e.location,
                    message: e.message,
                })?;
                digest_input.push_str(&text);
                files.push(path);
                nested.user_records(&users, vocabulary)
            }
        }
    }

    fn user_records(
        &self,
        raw: &BTreeMap<String, Spanned<file::UserFile>>,
        vocabulary: &Vocabulary,
    ) -> Result<HashMap<String, User>, ConfigError> {
        let mut users = HashMap::with_capacity(raw.len());
        for (name, user) in raw {
            if !valid_username(name) {
                return Err(self.at(user, format!(
                    "users: `{name}` is not a valid username (ASCII letters, digits, `.`, `_`, `-`, `@`; at most 64)"
                )));
            }
            let key = name.to_ascii_lowercase();
            let hash = PasswordHash::parse(&user.value.password)
                .map_err(|e| self.at(user, format!("users.{name}.password: {e}")))?;
            for scope in &user.value.scopes {
                if vocabulary.id(scope).is_none() {
                    return Err(self.at(
                        user,
                        format!(
                            "users.{name}: unknown scope `{scope}` (declare it under `scopes:`)"
                        ),
                    ));
                }
            }
            let record = User {
                hash,
                scopes: user.value.scopes.clone(),
            };
            if users.insert(key, record).is_some() {
                return Err(self.at(
                    user,
                    format!("users: `{name}` differs from another user only in letter case"),
                ));
            }
        }
        Ok(users)
    }

    fn upstreams(
        &self,
        raw: &BTreeMap<String, Spanned<file::UpstreamFile>>,
    ) -> Result<HashMap<String, Upstream>, ConfigError> {
        let mut upstreams = HashMap::with_capacity(raw.len());
        for (name, spanned) in raw {
            let (url, connect, timeout, pass_token) = match &spanned.value {
                file::UpstreamFile::Url(url) => (url.clone(), None, None, false),
                file::UpstreamFile::Full(f) => (
                    f.url.clone(),
                    f.connect_timeout.clone(),
                    f.timeout.clone(),
                    f.pass_token,
                ),
            };
            let here = |message: String| self.at(spanned, format!("upstreams.{name}: {message}"));
            let url = interpolate(&url).map_err(here)?;
            let target = parse_upstream_url(&url).map_err(here)?;
            let parse = |v: Option<String>, key: &str, default: Duration| match v {
                None => Ok(default),
                Some(v) => parse_duration(&v, MAX_TIMEOUT).map_err(|e| here(format!("{key}: {e}"))),
            };
            upstreams.insert(
                name.clone(),
                Upstream {
                    name: name.clone(),
                    target,
                    connect_timeout: parse(connect, "connect_timeout", Duration::from_secs(3))?,
                    timeout: parse(timeout, "timeout", Duration::from_secs(60))?,
                    pass_token,
                },
            );
        }
        Ok(upstreams)
    }

    fn extra_methods(&self, raw: &[Spanned<String>]) -> Result<ExtraMethods, ConfigError> {
        let mut extra = ExtraMethods::default();
        for name in raw {
            extra
                .declare(&name.value)
                .map_err(|e| self.at(name, format!("extra_methods: {e}")))?;
        }
        Ok(extra)
    }

    fn routes(
        &self,
        raw: &[Spanned<file::RouteFile>],
        vocabulary: &Vocabulary,
        upstreams: &HashMap<String, Upstream>,
        extra_methods: &ExtraMethods,
    ) -> Result<RouteTable, ConfigError> {
        let mut routes = Vec::with_capacity(raw.len());
        let mut ids = HashSet::new();
        for (index, spanned) in raw.iter().enumerate() {
            let r = &spanned.value;
            let here = |message: String| {
                self.at(spanned, format!("routes[{index}] ({}): {message}", r.path))
            };
            let id =
                r.id.clone()
                    .unwrap_or_else(|| format!("route-{}", index + 1));
            if !ids.insert(id.clone()) {
                return Err(here(format!("duplicate route id `{id}`")));
            }
            let access = route_access(r, vocabulary).map_err(here)?;
            let upstream = match (&r.upstream, &access) {
                (None, Access::Deny) => None,
                (None, _) => return Err(here("`upstream` is required unless `deny: true`".into())),
                (Some(name), _) if !upstreams.contains_key(name) => {
                    return Err(here(format!("unknown upstream `{name}`")))
                }
                (Some(name), _) => Some(name.clone()),
            };
            let methods = match &r.methods {
                None => None,
                Some(list) if list.is_empty() => {
                    return Err(here(
                        "`methods: []` would match nothing; omit it for any method".into(),
                    ))
                }
                // Each complaint names the method's own line.
                Some(list) => Some(
                    list.iter()
                        .map(|m| {
                            extra_methods.rule_method(&m.value).map_err(|e| {
                                self.at(m, format!("routes[{index}] ({}): {e}", r.path))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let host = r
                .host
                .as_ref()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
            let max_body_size = match r.max_body_size.as_deref().map(parse_size) {
                None => None,
                Some(Ok(0)) => return Err(here("max_body_size: must be at least 1B".into())),
                Some(Ok(bytes)) => Some(bytes),
                Some(Err(e)) => return Err(here(format!("max_body_size: {e}"))),
            };
            routes.push(Route {
                id,
                pattern: r.path.clone(),
                methods,
                host,
                case_insensitive: r.case_insensitive,
                access,
                upstream,
                max_body_size,
            });
        }
        RouteTable::compile(routes).map_err(|(index, e)| {
            let at = raw.get(index).map(|s| &s.referenced);
            self.err(at, format!("routes[{index}]: {e}"))
        })
    }
}

/// Exactly one of `public`, `deny`, or scopes: forgetting a line must never open a path.
fn route_access(r: &file::RouteFile, vocabulary: &Vocabulary) -> Result<Access, String> {
    let wants_scopes = r.scopes.is_some() || r.any_scopes.is_some();
    match (r.public, r.deny, wants_scopes) {
        (false, false, false) => Err(
            "say who may pass: `public: true`, `deny: true`, or `scopes:` / `any_scopes:`".into(),
        ),
        (true, false, false) => Ok(Access::Public),
        (false, true, false) => Ok(Access::Deny),
        (false, false, true) => {
            let ids = |names: &Option<Vec<String>>| -> Result<Vec<_>, String> {
                names
                    .iter()
                    .flatten()
                    .map(|n| {
                        vocabulary.id(n).ok_or_else(|| {
                            format!("unknown scope `{n}` (declare it under `scopes:`)")
                        })
                    })
                    .collect()
            };
            let all = ids(&r.scopes)?;
            let any = ids(&r.any_scopes)?;
            if matches!(&r.any_scopes, Some(list) if list.is_empty()) {
                return Err("`any_scopes: []` can never be satisfied; omit it".into());
            }
            Ok(Access::Scopes(Requirement {
                all: vocabulary.set_of(&all),
                any: vocabulary.set_of(&any),
            }))
        }
        _ => Err("`public`, `deny` and `scopes`/`any_scopes` exclude each other; pick one".into()),
    }
}

fn parse_upstream_url(url: &str) -> Result<UpstreamTarget, String> {
    if url == "echo:" {
        return Ok(UpstreamTarget::Echo);
    }
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("`{url}` needs a scheme (http://)"))?;
    if scheme != Scheme::HTTP {
        return Err(format!(
            "`{url}`: only http:// upstreams (and `echo:`) are supported"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{url}` needs a host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{url}`: credentials in upstream URLs are not supported"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{url}`: a path prefix is not supported; the request path is forwarded as is"
        ));
    }
    Ok(UpstreamTarget::Http { scheme, authority })
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not a CIDR like 10.0.0.0/8 or an IP address"))
}

fn valid_scope_name(name: &str) -> bool {
    !name.is_empty()
        && name != "*"
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn digest_hex(text: &str) -> String {
    digest_hex_bytes(text.as_bytes())
}

fn digest_hex_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
