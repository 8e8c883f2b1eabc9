//! The bearer credential on proxied requests: `Authorization` parsing (RFC 6750 §2.1) and
//! the [`Identity`] a verified token proves.

use crate::auth::user::Users;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};

use crate::auth::issuer::IssuerPolicy;
use crate::auth::jwks::PublishedKeys;
use crate::auth::jwt::{payload_json, read_head, TokenHead, TokenKeys, VerifiedToken};
use crate::auth::user::User;
use crate::error::Failure;
use crate::error::TokenError;
use crate::policy::authz::{ScopeSet, Vocabulary};
use crate::policy::claim_path::ClaimPath;
use crate::policy::claims;

/// A caller whose bearer token was verified. Shared (`Arc`) between the cache and requests.
#[derive(Debug)]
pub struct Identity {
    pub token: VerifiedToken,
    /// Granted scopes expanded through `implies`.
    pub granted: ScopeSet,
    /// The same, space-separated, for `X-Forwarded-Scopes`.
    pub scopes_header: String,
    /// `X-Forwarded-User` and `X-Forwarded-Scopes` as header values, built once per verified
    /// token rather than per request (`None`: not a valid header value).
    pub forwarded_user: Option<HeaderValue>,
    pub forwarded_scopes: Option<HeaderValue>,
    /// What logout records: the `jti`, or a digest of the token when it has none.
    pub revocation_key: String,
    /// The user's profile as gateway-owned headers (`X-Forwarded-Email`, …).
    pub profile_headers: Arc<[(HeaderName, HeaderValue)]>,
    /// Which issuer vouches for it: [`LOCAL_ISSUER`] or a name under `issuers:`; also the
    /// `X-Forwarded-Issuer` value.
    pub issuer: HeaderValue,
}

/// The name the gateway's own tokens go by (routes' `issuers:`, `X-Forwarded-Issuer`).
pub const LOCAL_ISSUER: &str = "local";

impl Identity {
    /// The issuer's name, as routes list it.
    pub fn issuer_name(&self) -> &str {
        self.issuer.to_str().unwrap_or("")
    }
}

/// Verify `token` under `keys`, check it against the user store, and resolve its scopes
/// through `vocabulary`: the identity to cache. The cache lives and dies with the snapshot
/// `users` belongs to, so these checks hold for every request that hits it. Revocation is
/// the caller's to check (it changes without a reload). Of the token's claims, the identity
/// keeps what `keep_claims` (the paths routes' `claims:` read) reaches.
pub fn identify(
    keys: &TokenKeys,
    vocabulary: &Vocabulary,
    users: &Users,
    token: &str,
    now: u64,
    keep_claims: &[ClaimPath],
) -> Result<Arc<Identity>, TokenError> {
    let head = read_head(token)?;
    let mut verified = keys.verify_head(token, &head, now)?;
    if !keep_claims.is_empty() {
        // Read a second time, untyped, only when some route has conditions: the typed read
        // above is what refuses duplicates and wrong types, and it passed.
        let raw = payload_json(head.payload)?;
        let all: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
        verified.claims = claims::keep(&all, keep_claims);
    }
    let user = current_user(users, &verified)?;
    let mut granted = vocabulary.expand(verified.scopes.iter().map(String::as_str));
    if let Some(user) = user {
        // Never more than the user holds now: narrowing a user's scopes narrows live tokens.
        granted = granted.intersection(&user.holds);
    }
    let profile_headers = user.map_or_else(|| Arc::from([]), |u| u.profile.headers.clone());
    Ok(identity(
        token,
        verified,
        granted,
        vocabulary,
        profile_headers,
        HeaderValue::from_static(LOCAL_ISSUER),
    ))
}

/// Verify `token` (head already read) as one of `policy`'s, with its published `keys`. Its
/// identity stands on the issuer's word alone: the user store is the local issuer's.
pub fn identify_external(
    policy: &IssuerPolicy,
    keys: &PublishedKeys,
    vocabulary: &Vocabulary,
    token: &str,
    head: &TokenHead<'_>,
    now: u64,
    keep_claims: &[ClaimPath],
) -> Result<Arc<Identity>, TokenError> {
    let verified = policy.verify(keys, token, head, now, keep_claims)?;
    let granted = vocabulary.expand(verified.scopes.iter().map(String::as_str));
    // Issuer names are validated header-safe when the config is built.
    let issuer = HeaderValue::from_str(&policy.name).map_err(|_| TokenError::Internal)?;
    Ok(identity(
        token,
        verified,
        granted,
        vocabulary,
        Arc::from([]),
        issuer,
    ))
}

/// The `iss` a token claims, unverified: only to choose which issuer's keys verify it.
pub fn claimed_issuer(head: &TokenHead<'_>) -> Result<Option<String>, TokenError> {
    #[derive(serde::Deserialize)]
    struct Claimed {
        iss: Option<String>,
    }
    let raw = payload_json(head.payload)?;
    let claimed: Claimed = serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
    Ok(claimed.iss)
}

fn identity(
    token: &str,
    verified: VerifiedToken,
    granted: ScopeSet,
    vocabulary: &Vocabulary,
    profile_headers: Arc<[(HeaderName, HeaderValue)]>,
    issuer: HeaderValue,
) -> Arc<Identity> {
    let mut revocation_key = match &verified.jti {
        Some(jti) => jti.clone(),
        None => token_digest(token),
    };
    if issuer != LOCAL_ISSUER {
        // Another issuer's `jti`s are its own: keep them apart from ours (and each other's).
        revocation_key = format!("{}:{revocation_key}", issuer.to_str().unwrap_or(""));
    }
    let scopes_header = granted
        .iter()
        .map(|id| vocabulary.name(id))
        .collect::<Vec<_>>()
        .join(" ");
    Arc::new(Identity {
        forwarded_user: HeaderValue::from_str(&verified.subject).ok(),
        forwarded_scopes: HeaderValue::from_str(&scopes_header).ok(),
        token: verified,
        granted,
        scopes_header,
        revocation_key,
        profile_headers,
        issuer,
    })
}

/// The user a token speaks for, as the store has it now.
///
/// Every token this gateway issues carries the user's credential version (`cv`): such a token
/// must name a current, enabled user whose version it matches. A token without one was minted
/// by another holder of the signing key (a service sharing the secret): if it names a user of
/// the store, that user's current state (disabled, scopes) still applies; if not, it speaks
/// for an identity outside the store and stands on its signature alone (`Ok(None)`).
fn current_user<'u>(
    users: &'u Users,
    token: &VerifiedToken,
) -> Result<Option<&'u User>, TokenError> {
    let user = match (users.get(&token.subject), &token.credential_version) {
        (None, Some(_)) => return Err(TokenError::UnknownUser),
        (None, None) => return Ok(None),
        (Some(user), _) => user,
    };
    if user.disabled {
        return Err(TokenError::UserDisabled);
    }
    // Not a secret (the token holder reads it in the token): a plain comparison is fine.
    if token
        .credential_version
        .as_ref()
        .is_some_and(|version| *version != user.credential_version)
    {
        return Err(TokenError::CredentialsChanged);
    }
    Ok(Some(user))
}

/// A revocation key for tokens without `jti` (e.g. minted by other apps sharing the secret).
fn token_digest(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    format!("sha256:{}", crate::auth::hex(&digest))
}

/// The bytes a token68 (RFC 7235 §2.1) may hold.
const TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
        b += 1;
    }
    table
};

/// RFC 6750 §2.1: exactly one `Authorization: Bearer <token68>`; the scheme is
/// case-insensitive, anything ambiguous is refused rather than guessed.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<Option<&str>, Failure> {
    bearer_credential(headers)?.map(check_token68).transpose()
}

/// The credential of the one `Authorization: Bearer` header, its characters not yet checked
/// against token68 ([`check_token68`]): a token found in the verified-token cache passed that
/// check when it was put there, so the hot path looks its bytes up first.
pub fn bearer_credential(headers: &http::HeaderMap) -> Result<Option<&[u8]>, Failure> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Failure::BadRequest("multiple Authorization headers"));
    }
    let bytes = value.as_bytes();
    let space = memchr::memchr(b' ', bytes).unwrap_or(bytes.len());
    if !bytes[..space].eq_ignore_ascii_case(b"bearer") {
        // Another scheme: not ours to judge, but a value that is not visible ASCII is
        // refused whatever its scheme.
        return match value.to_str() {
            Ok(_) => Ok(None),
            Err(_) => Err(Failure::InvalidToken(TokenError::Malformed)),
        };
    }
    let token = bytes.get(space + 1..).unwrap_or_default();
    if token.is_empty() {
        return Err(Failure::InvalidToken(TokenError::Malformed));
    }
    Ok(Some(token))
}

/// `token` as text, when every byte is one a token68 (RFC 7235 §2.1) may hold.
pub fn check_token68(token: &[u8]) -> Result<&str, Failure> {
    let malformed = || Failure::InvalidToken(TokenError::Malformed);
    if !token.iter().all(|&b| TOKEN68[usize::from(b)]) {
        return Err(malformed());
    }
    // token68 is ASCII, so this cannot fail.
    std::str::from_utf8(token).map_err(|_| malformed())
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
        // The credential alone leaves the characters to `check_token68`, which refuses them.
        let odd = map(&["Bearer a b"]);
        assert_eq!(bearer_credential(&odd).ok().flatten(), Some(&b"a b"[..]));
        assert!(check_token68(b"a b").is_err());
        assert!(check_token68(b"tok\xc3\xa9n").is_err());
        assert_eq!(check_token68(b"aZ09-._~+/=").ok(), Some("aZ09-._~+/="));
        let non_ascii = HeaderValue::from_bytes(b"Basic \xe9").unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(header::AUTHORIZATION, non_ascii);
        assert!(bearer_credential(&h).is_err());
    }
}
