//! The builder: raw `gateway.yaml` types ([`super::file`]) in, validated [`super::Config`]
//! out, every error naming its `file:line:col`.

use super::file::{Location, Spanned};
use super::units::{interpolate, parse_duration, parse_size};
mod identity;
mod issuers;
mod policy;
mod routes;
mod state;
mod tokens;
mod trace;
mod upstreams;
pub(super) use tokens::ring_states;

use super::*;
use crate::auth::lockout::LockoutPolicy;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Carries the file name so every conversion error can name its position.
pub(super) struct Builder {
    file: PathBuf,
    base: PathBuf,
}

impl Builder {
    pub(super) fn new(path: &Path) -> Self {
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
            position: at.and_then(position),
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

    pub(super) fn build(&self, raw: file::GatewayFile, text: &str) -> Result<Config, ConfigError> {
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
                session_ticket_key: t
                    .session_ticket_key
                    .as_ref()
                    .map(|v| self.ticket_key(v))
                    .transpose()?,
            }),
        };
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .map(|v| parse_net(&v.value).map_err(|e| self.at(v, format!("trusted_proxies: {e}"))))
            .collect::<Result<_, _>>()?;
        let limits = self.limits(&raw.limits)?;
        let mut files = vec![self.file.clone()];
        let mut digest_input = text.to_owned();
        let tokens = self.tokens(&raw.tokens, &mut files, &mut digest_input)?;
        let login = self.login(&raw.login)?;
        let refresh = raw
            .tokens
            .refresh
            .as_ref()
            .map(|block| self.refresh(block))
            .transpose()?;
        let state = self.state(&raw.state)?;
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
        let otlp = self.otlp(&raw.trace)?;
        let vocabulary = self.vocabulary(&raw.scopes)?;
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
            // So does the ticket key file: new bytes, new keys.
            if let Some(ticket_key) = &paths.session_ticket_key {
                digest_input.push_str(&digest_hex_bytes(ticket_key.secret.bytes()));
                files.push(ticket_key.path.clone());
            }
        }
        let upstreams = self.upstreams(
            &raw.upstreams,
            &mut upstreams::Inputs::new(&mut files, &mut digest_input),
        )?;
        let extra_methods = self.extra_methods(&raw.extra_methods)?;
        let issuers = self.issuers(&raw, &tokens.settings, &mut files, &mut digest_input)?;
        let default_rate_limit = match &raw.rate_limit {
            None => None,
            Some(limit) => Some(std::sync::Arc::new(
                routes::rate_limit(limit)
                    .map_err(|e| self.err(None, format!("rate_limit: {e}")))?,
            )),
        };
        let cors = raw
            .cors
            .as_ref()
            .map(|block| self.cors(block, "cors", &extra_methods))
            .transpose()?;
        let routes = self.routes(
            &raw.routes,
            &vocabulary,
            &upstreams,
            &extra_methods,
            &issuers,
            routes::RouteDefaults {
                rate_limit: default_rate_limit.as_ref(),
                cors: cors.as_ref(),
            },
        )?;
        let claim_paths = policy::claim_paths(routes.routes());
        let positions = Positions {
            routes: raw.routes.iter().map(|r| position(&r.referenced)).collect(),
            scopes: positions_of(&raw.scopes),
            users: raw.users.as_ref().map(positions_of).unwrap_or_default(),
            upstreams: positions_of(&raw.upstreams),
            secret: raw
                .tokens
                .secret
                .as_ref()
                .and_then(|s| position(&s.referenced)),
            keys: raw
                .tokens
                .keys
                .iter()
                .flatten()
                .map(|k| position(&k.referenced))
                .collect(),
        };
        Ok(Config {
            source: self.file.clone(),
            positions,
            files,
            listen,
            tls,
            admin,
            trusted_proxies,
            limits,
            tokens: tokens.settings,
            secret_is_random: tokens.secret_is_random,
            generated_keys: tokens.generated_keys,
            login,
            log_format,
            otlp,
            vocabulary,
            users,
            upstreams,
            issuers,
            routes,
            cors,
            claim_paths,
            refresh,
            state,
            digest: digest_hex(&digest_input),
        })
    }

    /// Read `tls.session_ticket_key`: at least [`MIN_TICKET_SECRET_BYTES`], used as they are.
    fn ticket_key(&self, value: &Spanned<String>) -> Result<TicketKeyFile, ConfigError> {
        let key = "tls.session_ticket_key";
        let path = self.resolve(&self.string(value, key)?);
        let bytes = std::fs::read(&path)
            .map_err(|e| self.at(value, format!("{key}: cannot read {}: {e}", path.display())))?;
        if !(MIN_TICKET_SECRET_BYTES..=MAX_TICKET_SECRET_BYTES).contains(&bytes.len()) {
            return Err(self.at(
                value,
                format!(
                    "{key}: {} holds {} bytes; it must hold {MIN_TICKET_SECRET_BYTES} to {MAX_TICKET_SECRET_BYTES} random bytes (e.g. `openssl rand 80 > FILE`)",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        Ok(TicketKeyFile {
            path,
            secret: TicketSecret::new(bytes),
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

    fn login(&self, raw: &file::LoginFile) -> Result<LoginSettings, ConfigError> {
        let path = match &raw.path {
            None => "/login".to_owned(),
            Some(v) => {
                let normalised = crate::policy::path::normalise(&v.value)
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
}

/// 1-based line and column of a location, when it has one.
fn position(at: &Location) -> Option<(u64, u64)> {
    (at.line() > 0).then(|| (at.line(), at.column()))
}

/// Where each entry of a keyed section starts.
fn positions_of<T>(
    entries: &std::collections::BTreeMap<String, Spanned<T>>,
) -> HashMap<String, (u64, u64)> {
    entries
        .iter()
        .filter_map(|(name, entry)| Some((name.clone(), position(&entry.referenced)?)))
        .collect()
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::{parse_net, valid_scope_name, valid_username};
    use crate::config::{Config, ConfigError, UpstreamTarget};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// A small valid config with `extra` appended (a route list, say).
    fn yaml(tokens_extra: &str, rest: &str) -> String {
        format!(
            "tokens:\n  issuer: https://gw.test\n  audience: up\n  secret: \"{SECRET}\"\n{tokens_extra}\
             scopes:\n  read: Read\n  write: {{ description: Write, implies: [read] }}\n\
             upstreams:\n  app: http://127.0.0.1:9\n  echo: \"echo:\"\n{rest}"
        )
    }

    fn build(text: &str) -> Result<Config, ConfigError> {
        Config::from_text(Path::new("gateway.yaml"), text)
    }

    /// The error's line and message, for configs that must fail.
    fn error(text: &str) -> (u64, String) {
        match build(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => (e.position.map_or(0, |(line, _)| line), e.message),
        }
    }

    #[test]
    fn a_minimal_config_builds_with_the_documented_defaults() {
        let routes = "routes:\n  - { id: r, path: /a/**, upstream: app, scopes: [read] }\n";
        let config = build(&yaml("", routes)).expect("valid");
        assert_eq!(config.routes.routes().len(), 1);
        assert_eq!(config.login.path, "/login");
        assert_eq!(config.tokens.ttl, Duration::from_secs(3600));
        assert!(matches!(
            config.upstreams.get("app").map(|u| &u.target),
            Some(UpstreamTarget::Http { .. })
        ));
        assert!(matches!(
            config.upstreams.get("echo").map(|u| &u.target),
            Some(UpstreamTarget::Echo)
        ));
    }

    #[test]
    fn a_route_naming_an_unknown_upstream_or_scope_is_an_error_at_its_line() {
        let routes = "routes:\n  - { id: ok, path: /a/**, upstream: app, public: true }\n  - { id: bad, path: /b/**, upstream: nowhere, public: true }\n";
        let (line, message) = error(&yaml("", routes));
        assert_eq!(line, 13, "{message}");
        assert!(message.contains("nowhere"), "{message}");

        let routes = "routes:\n  - { id: r, path: /a/**, upstream: app, scopes: [delete] }\n";
        let (line, message) = error(&yaml("", routes));
        assert_eq!(line, 12, "{message}");
        assert!(message.contains("unknown scope `delete`"), "{message}");
    }

    #[test]
    fn a_route_must_say_exactly_one_kind_of_access() {
        for access in [
            "",
            "public: true, deny: true",
            "public: true, scopes: [read]",
        ] {
            let routes =
                format!("routes:\n  - {{ id: r, path: /a/**, upstream: app, {access} }}\n");
            let (line, message) = error(&yaml("", &routes));
            assert_eq!(line, 12, "{access}: {message}");
        }
        let routes = "routes:\n  - { id: r, path: /a/**, upstream: app, any_scopes: [] }\n";
        assert!(error(&yaml("", routes)).1.contains("never be satisfied"));
    }

    #[test]
    fn durations_beyond_their_maximum_and_short_secrets_are_refused() {
        let routes = "routes: []\n";
        let (line, message) = error(&yaml("  ttl: 400d\n", routes));
        assert_eq!(line, 5, "{message}");
        let weak = yaml("", routes).replace(SECRET, "short");
        let (_, message) = error(&weak);
        assert!(message.contains("tokens.secret"), "{message}");
    }

    #[test]
    fn upstream_urls_are_plain_http_or_https_origins() {
        for (url, why) in [
            ("ftp://127.0.0.1:9", "only http:// and https://"),
            ("http://u:p@127.0.0.1:9", "credentials"),
            ("http://127.0.0.1:9/prefix", "path prefix"),
            ("127.0.0.1:9", "scheme"),
        ] {
            let text = yaml("", "routes: []\n").replace("http://127.0.0.1:9", url);
            let (line, message) = error(&text);
            assert_eq!(line, 9, "{url}: {message}");
            assert!(message.contains(why), "{url}: {message}");
        }
    }

    #[test]
    fn scope_names_usernames_and_networks_are_checked() {
        assert!(valid_scope_name("read:items"));
        for bad in ["", "*", "a\"b", "a b", "a\\b"] {
            assert!(!valid_scope_name(bad), "{bad:?}");
        }
        assert!(valid_username("alex.k_9-@example"));
        for bad in ["", "al ex", "ålex", &"a".repeat(65)] {
            assert!(!valid_username(bad), "{bad:?}");
        }
        assert!(parse_net("10.0.0.0/8").is_ok());
        assert!(parse_net("192.0.2.7").is_ok());
        assert!(parse_net("::1").is_ok());
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
    }

    /// A users block holding one user `u` with `fields` besides its password.
    fn with_user(fields: &str) -> String {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$w87WW2eFT7vy9UDFIxPMUA$WRM+jGFRlegpsoIlTVNrQc+1XHa3/a1NZzkq1GFfarI";
        yaml(
            "",
            &format!("users:\n  u: {{ password: \"{hash}\"{fields} }}\nroutes: []\n"),
        )
    }

    #[test]
    fn profile_fields_are_validated_at_the_users_line() {
        let config = build(&with_user(
            ", email: u@example.com, disabled: true, groups: [a]",
        ));
        let user = config.as_ref().ok().and_then(|c| c.users.get("u"));
        assert!(user.is_some_and(|u| u.disabled && u.profile.headers.len() == 2));
        for (fields, why) in [
            (", email: not-an-address", "email"),
            (", groups: [\"a,b\"]", "group"),
            (", attributes: { Team: x }", "attribute key `Team`"),
            (", nickname: x", "unknown field"),
        ] {
            let (line, message) = error(&with_user(fields));
            assert_eq!(line, 12, "{fields}: {message}");
            assert!(message.contains(why), "{fields}: {message}");
        }
    }

    #[test]
    fn tokens_claims_names_only_profile_claims() {
        let config = build(&yaml("  claims: [email, name]\n", "routes: []\n"));
        let claims = config.map(|c| c.tokens.profile_claims);
        assert!(claims.is_ok_and(|c| c.email && c.name));
        let (line, message) = error(&yaml("  claims: [email, phone]\n", "routes: []\n"));
        assert_eq!(line, 5, "{message}");
        assert!(message.contains("`phone`"), "{message}");
    }
}
