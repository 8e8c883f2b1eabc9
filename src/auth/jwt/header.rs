//! The JOSE header, read by us before the library touches the token: no `crit`, no
//! key-fetching parameters, only JWT-ish `typ`, a known `alg`, a bounded `kid`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

use super::{SigningAlgorithm, MAX_KID_BYTES, MAX_TOKEN_BYTES, TOKEN_TYPE};
use crate::error::TokenError;

/// The JOSE header as we read it, independently of jsonwebtoken.
#[derive(Deserialize)]
struct JoseHeader {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
}

/// True whenever the member exists, whatever its value (even `null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// A token's JOSE header, checked, and its still unverified payload segment.
#[derive(Debug)]
pub struct TokenHead<'t> {
    pub alg: SigningAlgorithm,
    pub kid: Option<String>,
    pub payload: &'t str,
}

/// Our own look at the JOSE header, before the library touches the token.
pub fn read_head(token: &str) -> Result<TokenHead<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(head), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let raw = URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| TokenError::Malformed)?;
    let header: JoseHeader = serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
    let alg = match header.alg.as_deref() {
        None => return Err(TokenError::Malformed),
        // `none` and anything unknown end here; a known name is still only compared with the
        // algorithm of the key that the configuration chose.
        Some(alg) => SigningAlgorithm::from_name(alg).ok_or(TokenError::UnsupportedAlgorithm)?,
    };
    if header.crit {
        return Err(TokenError::CriticalHeader);
    }
    // We never fetch or accept keys named by the token itself.
    if header.jku || header.x5u || header.jwk || header.x5c {
        return Err(TokenError::KeyReferenceHeader);
    }
    if let Some(typ) = header.typ.as_deref() {
        // RFC 7515 §4.1.9: an omitted "application/" prefix is implied.
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        if !typ.eq_ignore_ascii_case("JWT") && !typ.eq_ignore_ascii_case(TOKEN_TYPE) {
            return Err(TokenError::UnexpectedType);
        }
    }
    if header
        .kid
        .as_ref()
        .is_some_and(|kid| kid.len() > MAX_KID_BYTES)
    {
        return Err(TokenError::Malformed);
    }
    Ok(TokenHead {
        alg,
        kid: header.kid,
        payload,
    })
}
