//! Serde mirror of `gateway.yaml`: the only file that knows YAML.
//!
//! Every struct rejects unknown keys, so a typo is an error with its line rather than a
//! silently ignored setting. Values that later checks may complain about carry their
//! [`Spanned`] location, so those complaints can name `file:line:col` too.

use std::collections::BTreeMap;

use serde::Deserialize;
pub use serde_saphyr::{Location, Spanned};

/// Budget against YAML bombs: far above any real gateway config, far below a memory problem.
const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    pub listen: Option<Spanned<String>>,
    pub tls: Option<TlsFile>,
    pub admin: Option<Spanned<String>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub tokens: TokensFile,
    #[serde(default)]
    pub login: LoginFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub scopes: BTreeMap<String, Spanned<ScopeFile>>,
    #[serde(default)]
    pub users: Option<BTreeMap<String, Spanned<UserFile>>>,
    pub users_file: Option<Spanned<String>>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<UpstreamFile>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteFile>>,
    /// Extension methods (WebDAV and the like) that `methods:` may list.
    #[serde(default)]
    pub extra_methods: Vec<Spanned<String>>,
}

/// `tls:` — PEM certificate chain and private key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `limits:` — every field optional; defaults live in the domain layer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub header_read_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub max_header_bytes: Option<Spanned<String>>,
    pub max_headers: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub max_h2_streams: Option<Spanned<u64>>,
    pub body_read_timeout: Option<Spanned<String>>,
    pub body_min_rate: Option<Spanned<String>>,
    pub max_body_size: Option<Spanned<String>>,
    pub write_timeout: Option<Spanned<String>>,
}

/// `tokens:` — signing and validation settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    pub issuer: Option<Spanned<String>>,
    pub audience: Option<Spanned<String>>,
    pub algorithm: Option<Spanned<String>>,
    pub secret: Option<Spanned<String>>,
    pub ttl: Option<Spanned<String>>,
    pub leeway: Option<Spanned<String>>,
    /// Profile fields issued tokens also carry: `email`, `name`.
    pub claims: Option<Vec<Spanned<String>>>,
}

/// `login:` — endpoint path and brute-force regulation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    pub path: Option<Spanned<String>>,
    pub lockout: Option<LockoutFile>,
    pub max_revocations_per_subject: Option<Spanned<u64>>,
}

/// `login.lockout:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutFile {
    pub failures: Spanned<u64>,
    pub window: Spanned<String>,
    pub duration: Spanned<String>,
    pub ipv6_prefix: Option<Spanned<u64>>,
}

/// `log:` — access-log format (`pretty` or `json`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    pub format: Option<Spanned<String>>,
}

/// A scope: either a bare description or `{ description, implies }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ScopeFile {
    Description(String),
    Full(ScopeFull),
}

/// The long form of a scope.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeFull {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub implies: Vec<String>,
}

/// One user record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub password: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Refused at login and every token refused, without deleting the entry.
    #[serde(default)]
    pub disabled: bool,
    pub email: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Free-form strings, each forwarded as `X-Forwarded-Attr-<key>`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// The shape of a `users_file:`.
pub type UsersFile = BTreeMap<String, Spanned<UserFile>>;

/// An upstream: a URL string or the long form.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum UpstreamFile {
    Url(String),
    Full(UpstreamFull),
}

/// The long form of an upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFull {
    pub url: String,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub pass_token: bool,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub id: Option<String>,
    pub path: String,
    pub methods: Option<Vec<Spanned<String>>>,
    pub host: Option<String>,
    pub upstream: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub deny: bool,
    pub scopes: Option<Vec<String>>,
    pub any_scopes: Option<Vec<String>>,
    #[serde(default)]
    pub case_insensitive: bool,
    /// Overrides `limits.max_body_size` for this route.
    pub max_body_size: Option<String>,
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
