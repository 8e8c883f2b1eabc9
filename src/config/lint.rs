//! `portcullis check`: a readable table of what the config does, and warnings for what is
//! probably a mistake (it is valid, but an operator should look).

use std::collections::HashSet;
use std::fmt::Write as _;

use super::{Config, UpstreamTarget};
use crate::auth::keys::KeyStatus;
use crate::policy::routes::Access;
use crate::policy::well_known::https_issuer;

/// The printed report and its warnings.
#[derive(Debug)]
pub struct Report {
    pub text: String,
    pub warnings: Vec<Warning>,
}

/// Something valid but probably a mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Stable, for tooling: `route-shadowed`, `scope-unused`, `secret-random`, …
    pub code: &'static str,
    /// 1-based line and column in the config file, when the warning is about one entry.
    pub position: Option<(u64, u64)>,
    pub message: String,
}

impl Warning {
    fn new(code: &'static str, position: Option<(u64, u64)>, message: impl Into<String>) -> Self {
        Warning {
            code,
            position,
            message: message.into(),
        }
    }
}

/// Describe `config` and collect its warnings.
pub fn report(config: &Config) -> Report {
    let mut text = String::new();
    let routes = config.routes.routes();
    let _ = writeln!(text, "routes ({}), first match wins:", routes.len());
    let _ = writeln!(
        text,
        "  {:<3} {:<18} {:<22} {:<28} {:<10} who may pass",
        "#", "id", "methods", "path", "upstream"
    );
    for (index, route) in routes.iter().enumerate() {
        let methods = route
            .methods
            .as_ref()
            .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "any".into());
        let path = match &route.host {
            Some(host) => format!("{host}{}", route.pattern),
            None => route.pattern.clone(),
        };
        let _ = writeln!(
            text,
            "  {:<3} {:<18} {:<22} {:<28} {:<10} {}",
            index + 1,
            route.id,
            methods,
            path,
            route.upstream.as_deref().unwrap_or("-"),
            who(config, &route.access)
        );
    }
    let _ = writeln!(text, "  (anything else: 404, never forwarded)");
    let _ = writeln!(text, "scopes ({}):", config.vocabulary.names().count());
    for name in config.vocabulary.names() {
        let _ = writeln!(text, "  {name}");
    }
    let mut users: Vec<_> = config.users.iter().collect();
    users.sort_by(|a, b| a.0.cmp(b.0));
    let _ = writeln!(text, "users ({}):", users.len());
    for (name, user) in &users {
        let _ = writeln!(text, "  {name:<16} {}", user.scopes.join(" "));
    }
    let ring = config.tokens.ring.keys();
    let _ = writeln!(text, "signing keys ({}):", ring.len());
    for key in ring {
        let published = if key.algorithm.is_symmetric() {
            "never published"
        } else {
            "in the JWKS"
        };
        let _ = writeln!(
            text,
            "  {:<16} {:<6} {:<8} {published}",
            key.kid,
            key.algorithm.name(),
            key.status.name()
        );
    }

    let warnings = warnings(config);
    for warning in &warnings {
        let _ = writeln!(text, "warning: {}", warning.message);
    }
    Report { text, warnings }
}

fn who(config: &Config, access: &Access) -> String {
    match access {
        Access::Public => "anyone".into(),
        Access::Deny => "no one (403)".into(),
        Access::Scopes(req) => {
            let names = |set: &crate::policy::authz::ScopeSet| {
                set.iter()
                    .map(|id| config.vocabulary.name(id))
                    .collect::<Vec<_>>()
            };
            let all = names(&req.all);
            let any = names(&req.any);
            match (all.is_empty(), any.is_empty()) {
                (true, true) => "any signed-in user".into(),
                (false, true) => format!("scopes: {}", all.join(" + ")),
                (true, false) => format!("one of: {}", any.join(" | ")),
                (false, false) => format!(
                    "scopes: {} and one of: {}",
                    all.join(" + "),
                    any.join(" | ")
                ),
            }
        }
    }
}

fn warnings(config: &Config) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let at = &config.positions;
    let routes = config.routes.routes();
    for (earlier, later) in config.routes.shadowed() {
        let position = at.routes.get(later).copied().flatten();
        warnings.push(Warning::new("route-shadowed", position, format!(
            "route #{} `{}` ({}) is unreachable: route #{} `{}` ({}) matches every request it would",
            later + 1,
            routes[later].id,
            routes[later].pattern,
            earlier + 1,
            routes[earlier].id,
            routes[earlier].pattern
        )));
    }
    let required: HashSet<&str> = routes
        .iter()
        .filter_map(|r| match &r.access {
            Access::Scopes(req) => Some(req.all.iter().chain(req.any.iter())),
            _ => None,
        })
        .flatten()
        .map(|id| config.vocabulary.name(id))
        .collect();
    for name in config.vocabulary.names() {
        if !required.contains(name) {
            let position = at.scopes.get(name).copied();
            let message = format!("scope `{name}` is never required by any route");
            warnings.push(Warning::new("scope-unused", position, message));
        }
    }
    if config.secret_is_random {
        warnings.push(Warning::new(
            "secret-random",
            None,
            "tokens.secret is not set: a random secret is used and tokens die with the process",
        ));
    } else if config
        .tokens
        .ring
        .keys()
        .iter()
        .filter_map(|key| key.hmac_secret())
        .any(is_weak_secret)
    {
        warnings.push(Warning::new(
            "secret-weak",
            at.secret.or_else(|| at.keys.first().copied().flatten()),
            "a token secret looks weak (few distinct characters); use 32+ random bytes",
        ));
    }
    key_warnings(config, &mut warnings);
    let mut users: Vec<_> = config.users.iter().collect();
    users.sort_by(|a, b| a.0.cmp(b.0));
    for (name, user) in users {
        if user.hash.is_deprecated() {
            warnings.push(Warning::new("hash-deprecated", at.users.get(name.as_str()).copied(), format!(
                "user `{name}` has a deprecated password hash (bcrypt or argon2id below m=19456,t=2,p=1); rehash with `portcullis hash-password`"
            )));
        }
    }
    let used: HashSet<&str> = routes
        .iter()
        .filter_map(|r| r.upstream.as_deref())
        .collect();
    let mut upstreams: Vec<_> = config.upstreams.values().collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    for upstream in upstreams {
        if !used.contains(upstream.name.as_str()) {
            warnings.push(Warning::new(
                "upstream-unused",
                at.upstreams.get(&upstream.name).copied(),
                format!("upstream `{}` is not used by any route", upstream.name),
            ));
        }
        if upstream.pass_token && !matches!(upstream.target, UpstreamTarget::Echo) {
            warnings.push(Warning::new(
                "upstream-pass-token",
                at.upstreams.get(&upstream.name).copied(),
                format!(
                    "upstream `{}` receives the bearer token (pass_token: true)",
                    upstream.name
                ),
            ));
        }
    }
    if config.tls.is_none() {
        warnings.push(Warning::new(
            "tls-missing",
            None,
            "no `tls:` section: a self-signed development certificate will be served",
        ));
    }
    warnings
}

/// A secret with few distinct bytes (e.g. `aaaa…` or a repeated word) is guessable even when long.
fn is_weak_secret(secret: &[u8]) -> bool {
    let distinct: HashSet<&u8> = secret.iter().collect();
    distinct.len() < 10
}

/// The key ring: keys generated per process, a ring with no successor published, retired
/// keys that may now be removed.
fn key_warnings(config: &Config, warnings: &mut Vec<Warning>) {
    let at = &config.positions.keys;
    let ring = config.tokens.ring.keys();
    for kid in &config.generated_keys {
        let position = ring
            .iter()
            .position(|k| &k.kid == kid)
            .and_then(|i| at.get(i).copied().flatten());
        warnings.push(Warning::new(
            "key-generated",
            position,
            format!("tokens.keys: `{kid}` has no `key` file: a key generated for this process is used, and tokens it signs die with the process"),
        ));
    }
    if let Some(issuer) = config.tokens.issuer.as_deref() {
        if https_issuer(Some(issuer)).is_none() {
            warnings.push(Warning::new(
                "issuer-not-https",
                None,
                format!("tokens.issuer `{issuer}` is not an https:// URL: no authorization-server metadata is published (RFC 8414 needs one)"),
            ));
        }
    }
    if at.is_empty() {
        return; // `tokens.secret`: no ring to rotate.
    }
    if !ring.iter().any(|k| k.status == KeyStatus::Next) {
        warnings.push(Warning::new(
            "key-no-next",
            at.first().copied().flatten(),
            "tokens.keys: no `next` key is published: verifiers will only learn the next key when it starts signing",
        ));
    }
    let now = crate::clock::unix_now();
    let lifetime = (config.tokens.ttl + config.tokens.leeway).as_secs();
    for (index, key) in ring.iter().enumerate() {
        match (key.status, key.retired_at) {
            (KeyStatus::Retired, None) => warnings.push(Warning::new(
                "key-retired-undated",
                at.get(index).copied().flatten(),
                format!("tokens.keys: retired key `{}` has no `retired_at`: check cannot tell when its tokens have expired", key.kid),
            )),
            (KeyStatus::Retired, Some(since)) if now >= since.saturating_add(lifetime) => {
                warnings.push(Warning::new(
                    "key-retired-expired",
                    at.get(index).copied().flatten(),
                    format!("tokens.keys: retired key `{}` verifies nothing any more (retired over ttl + leeway ago): it may be removed", key.kid),
                ))
            }
            _ => {}
        }
    }
}
