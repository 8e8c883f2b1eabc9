//! Bearer authentication on proxied requests: `Authorization` parsing (RFC 6750 §2.1), token
//! verification through a bounded cache of already verified tokens, and revocation.
//!
//! Verifying an HS256 token costs a few microseconds (base64, HMAC, JSON); a client sends the
//! same token on every request, so verified tokens are cached per config generation (the
//! cache lives in the snapshot and dies with it on reload). A hit still honours `exp` and
//! revocation; only tokens that passed every check are ever inserted.

use std::sync::Arc;

use dashmap::DashMap;
use http::header;

use crate::auth::jwt::{TokenError, VerifiedToken};
use crate::authz::ScopeSet;
use crate::error::Failure;
use crate::state::{Shared, Snapshot};

/// A caller whose bearer token was verified. Shared (`Arc`) between the cache and requests.
#[derive(Debug)]
pub struct Identity {
    pub token: VerifiedToken,
    /// Granted scopes expanded through `implies`.
    pub granted: ScopeSet,
    /// The same, space-separated, for `X-Forwarded-Scopes`.
    pub scopes_header: String,
    /// What logout records: the `jti`, or a digest of the token when it has none.
    pub revocation_key: String,
}

/// Verified tokens of one config generation, keyed by the exact token text.
#[derive(Debug)]
pub struct TokenCache {
    entries: DashMap<Box<str>, Arc<Identity>>,
    max_entries: usize,
    leeway: u64,
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens; `leeway` as in validation.
    pub fn new(max_entries: usize, leeway: u64) -> Self {
        TokenCache {
            entries: DashMap::new(),
            max_entries,
            leeway,
        }
    }

    fn get(&self, token: &str, now: u64) -> Option<Arc<Identity>> {
        let hit = self.entries.get(token).map(|entry| entry.value().clone())?;
        if now >= hit.token.expires_at.saturating_add(self.leeway) {
            self.entries.remove(token);
            return None;
        }
        Some(hit)
    }

    fn insert(&self, token: &str, identity: Arc<Identity>) {
        if self.entries.len() >= self.max_entries {
            // Only tokens signed with our key get here, so a full cache means many live
            // clients, not an attack; starting over is cheap and bounded.
            self.entries.clear();
        }
        self.entries.insert(token.into(), identity);
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Verify the bearer token, if any. `Ok(None)` when the request carries no bearer credentials.
pub fn authenticate(
    shared: &Shared,
    snapshot: &Snapshot,
    headers: &http::HeaderMap,
    now: u64,
) -> Result<Option<Arc<Identity>>, Failure> {
    let Some(token) = bearer_token(headers)? else {
        return Ok(None);
    };
    let identity = match snapshot.token_cache.get(token, now) {
        Some(identity) => identity,
        None => {
            let identity = Arc::new(verify(snapshot, token, now)?);
            snapshot.token_cache.insert(token, identity.clone());
            identity
        }
    };
    if shared.revocations.is_revoked(&identity.revocation_key, now) {
        return Err(Failure::InvalidToken(TokenError::Revoked));
    }
    Ok(Some(identity))
}

fn verify(snapshot: &Snapshot, token: &str, now: u64) -> Result<Identity, Failure> {
    let verified = snapshot.keys.verify(token, now)?;
    let revocation_key = match &verified.jti {
        Some(jti) => jti.clone(),
        None => token_digest(token),
    };
    let vocabulary = &snapshot.config.vocabulary;
    let granted = vocabulary.expand(verified.scopes.iter().map(String::as_str));
    let scopes_header = granted
        .iter()
        .map(|id| vocabulary.name(id))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Identity {
        token: verified,
        granted,
        scopes_header,
        revocation_key,
    })
}

/// A revocation key for tokens without `jti` (e.g. minted by other apps sharing the secret).
fn token_digest(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// RFC 6750 §2.1: exactly one `Authorization: Bearer <token68>`; the scheme is
/// case-insensitive, anything ambiguous is refused rather than guessed.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<Option<&str>, Failure> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Failure::BadRequest("multiple Authorization headers"));
    }
    let value = value
        .to_str()
        .map_err(|_| Failure::InvalidToken(TokenError::Malformed))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token68 = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
    };
    if token.is_empty() || !token.bytes().all(token68) {
        return Err(Failure::InvalidToken(TokenError::Malformed));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    #[test]
    fn bearer_token_parsing_is_strict() {
        let map = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert_eq!(
            bearer_token(&map(&["Bearer abc.def.ghi"])).ok().flatten(),
            Some("abc.def.ghi")
        );
        assert_eq!(
            bearer_token(&map(&["bearer abc"])).ok().flatten(),
            Some("abc")
        );
        assert!(matches!(bearer_token(&map(&["Basic eDp5"])), Ok(None)));
        assert!(bearer_token(&map(&["Bearer  abc"])).is_err());
        assert!(bearer_token(&map(&["Bearer abc "])).is_err());
        assert!(bearer_token(&map(&["Bearer a, Bearer b"])).is_err());
        assert!(bearer_token(&map(&["Bearer a", "Bearer b"])).is_err());
        assert!(bearer_token(&map(&["Bearer"])).is_err());
    }
}
