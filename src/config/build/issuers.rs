//! The `issuers:` half of the builder: external identity providers, validated so that only
//! `https://` URLs, asymmetric algorithms and well-formed claim paths get through.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::file::Spanned;
use super::*;
use crate::auth::issuer::IssuerPolicy;
use crate::auth::jwt::{SigningAlgorithm, TokenSettings};
use crate::policy::claim_path::ClaimPath;

/// Lower bound on `refetch_cooldown`: an unknown `kid` may never turn into a fetch loop.
const MIN_REFETCH_COOLDOWN: Duration = Duration::from_secs(1);
/// Lower bound on `min_refresh`.
const MIN_REFRESH: Duration = Duration::from_secs(1);

impl Builder {
    pub(super) fn issuers(
        &self,
        raw: &file::GatewayFile,
        tokens: &TokenSettings,
        files: &mut Vec<PathBuf>,
        digest_input: &mut String,
    ) -> Result<Vec<IssuerSettings>, ConfigError> {
        raw.issuers
            .iter()
            .map(|(name, spanned)| {
                let issuer = self.issuer(name, spanned, tokens, files)?;
                digest_input.push_str(&issuer.fingerprint);
                Ok(issuer)
            })
            .collect()
    }

    fn issuer(
        &self,
        name: &str,
        spanned: &Spanned<file::IssuerFile>,
        tokens: &TokenSettings,
        files: &mut Vec<PathBuf>,
    ) -> Result<IssuerSettings, ConfigError> {
        let raw = &spanned.value;
        let here = |message: String| self.at(spanned, format!("issuers.{name}: {message}"));
        if name == LOCAL_ISSUER
            || name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(here(format!(
                "`{name}` is not a usable issuer name (letters, digits, `-`, `_`, `.`; `{LOCAL_ISSUER}` is the gateway's own)"
            )));
        }
        let issuer = interpolate(&raw.issuer).map_err(|e| here(format!("issuer: {e}")))?;
        https_url(&issuer).map_err(|e| here(format!("issuer: {e}")))?;
        if tokens.issuer.as_deref() == Some(issuer.as_str()) {
            return Err(here(
                "issuer: the gateway's own `tokens.issuer`; its tokens are verified with the local keys".into(),
            ));
        }
        let keys = match &raw.jwks_uri {
            Some(uri) => {
                let uri = interpolate(uri).map_err(|e| here(format!("jwks_uri: {e}")))?;
                https_url(&uri).map_err(|e| here(format!("jwks_uri: {e}")))?;
                KeysSource::Jwks(uri)
            }
            None => KeysSource::Discovery(format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )),
        };
        let algorithms = match &raw.algorithms {
            None => vec![SigningAlgorithm::RS256, SigningAlgorithm::ES256],
            Some(names) if names.is_empty() => {
                return Err(here("algorithms: give at least one".into()))
            }
            Some(names) => names
                .iter()
                .map(|alg| {
                    SigningAlgorithm::from_name(alg)
                        .filter(|a| !a.is_symmetric())
                        .ok_or_else(|| here(format!(
                            "algorithms: `{alg}` is not accepted from an external issuer (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)"
                        )))
                })
                .collect::<Result<_, _>>()?,
        };
        let path =
            |text: &str, key: &str| ClaimPath::parse(text).map_err(|e| here(format!("{key}: {e}")));
        let user_claim = path(raw.user_claim.as_deref().unwrap_or("sub"), "user_claim")?;
        let scope_claims = match &raw.scope_claims {
            None => vec![path("scope", "scope_claims")?, path("scp", "scope_claims")?],
            Some(list) => list
                .iter()
                .map(|p| path(p, "scope_claims"))
                .collect::<Result<_, _>>()?,
        };
        let rename: HashMap<String, String> = raw
            .rename
            .iter()
            .map(|(from, to)| (from.clone(), to.clone()))
            .collect();
        let duration =
            |v: &Option<String>, key: &str, default: Duration, min: Duration, max: Duration| {
                let value = match v {
                    None => default,
                    Some(text) => {
                        parse_duration(text, max).map_err(|e| here(format!("{key}: {e}")))?
                    }
                };
                if value < min {
                    return Err(here(format!("{key}: must be at least {}s", min.as_secs())));
                }
                Ok(value)
            };
        let day = Duration::from_secs(24 * 3600);
        let max_lifetime = duration(
            &raw.max_token_lifetime,
            "max_token_lifetime",
            day,
            Duration::from_secs(1),
            MAX_PERIOD,
        )?;
        let refetch_cooldown = duration(
            &raw.refetch_cooldown,
            "refetch_cooldown",
            Duration::from_secs(300),
            MIN_REFETCH_COOLDOWN,
            day,
        )?;
        let min_refresh = duration(
            &raw.min_refresh,
            "min_refresh",
            Duration::from_secs(60),
            MIN_REFRESH,
            day,
        )?;
        let max_refresh = duration(
            &raw.max_refresh,
            "max_refresh",
            day,
            min_refresh,
            MAX_PERIOD,
        )?;
        let ca = match &raw.ca {
            None => None,
            Some(path) => {
                let path = self.resolve(&interpolate(path).map_err(|e| here(format!("ca: {e}")))?);
                let pem = std::fs::read(&path)
                    .map_err(|e| here(format!("ca: cannot read {}: {e}", path.display())))?;
                crate::config::upstream_tls::bundle_roots(&pem)
                    .map_err(|e| here(format!("ca: {}: {e}", path.display())))?;
                files.push(path);
                Some(pem)
            }
        };
        let fingerprint = digest_hex(&format!(
            "{issuer}\0{keys:?}\0{}\0{refetch_cooldown:?}{min_refresh:?}{max_refresh:?}",
            ca.as_deref().map(digest_hex_bytes).unwrap_or_default()
        ));
        let policy = IssuerPolicy::new(
            name.to_owned(),
            issuer,
            interpolate(&raw.audience).map_err(|e| here(format!("audience: {e}")))?,
            algorithms,
            user_claim,
            scope_claims,
            rename,
            max_lifetime.as_secs(),
            tokens.leeway.as_secs(),
        );
        Ok(IssuerSettings {
            policy: Arc::new(policy),
            keys,
            ca,
            refetch_cooldown,
            min_refresh,
            max_refresh,
            fingerprint,
        })
    }
}

/// An absolute `https://` URL with a host, no fragment.
fn https_url(text: &str) -> Result<(), String> {
    let uri: http::Uri = text.parse().map_err(|_| format!("`{text}` is not a URL"))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "`{text}` must be an https:// URL (keys are only fetched over TLS)"
        ));
    }
    if text.contains('#') {
        return Err(format!("`{text}` must not have a fragment"));
    }
    Ok(())
}
