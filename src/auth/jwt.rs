//! Access tokens: issuing and verifying signed JWTs (RFC 9068 `at+jwt` profile).
//!
//! Verification is stricter than `jsonwebtoken`'s defaults: the key is chosen by the header's
//! `kid` from the configured ring and its algorithm is the key's own (a token's `alg` only has
//! to agree), the JOSE header is inspected independently (no `crit`, no key-fetching
//! parameters, only JWT-ish `typ`), claims are parsed into a typed struct so duplicates and
//! wrong types fail, and every time check (`exp`, `nbf`, `iat`) runs against the caller's
//! clock so there is exactly one notion of "now".

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::Serialize;

use super::keys::KeyRing;
use crate::error::TokenError;

pub mod algorithm;
mod claims;
mod header;
pub mod signature;
pub use algorithm::SigningAlgorithm;
pub(crate) use claims::NumericDate;
use claims::{check_subject, json_depth_exceeds, merge_scopes, InClaims, MAX_JSON_DEPTH};
pub use header::{read_head, TokenHead};
pub(crate) use signature::check_signature;
pub use signature::SignatureKey;

/// Tokens longer than this are rejected before any decoding (bounds parsing work).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest accepted `sub`.
pub const MAX_SUBJECT_BYTES: usize = 256;
/// Longest accepted header `kid`.
pub const MAX_KID_BYTES: usize = 256;
/// Longest `cv` claim read (ours are 16 characters).
const MAX_CV_BYTES: usize = 64;
/// The `typ` header of the tokens we issue (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";

/// Token configuration of one config generation.
#[derive(Clone)]
pub struct TokenSettings {
    /// The signing and verifying keys (`tokens.keys`, or the one `tokens.secret`).
    pub ring: KeyRing,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub ttl: Duration,
    pub leeway: Duration,
    /// Which profile fields issued tokens carry as claims (`tokens.claims`).
    pub profile_claims: ProfileClaims,
}

/// `tokens.claims`: profile fields put into issued tokens.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProfileClaims {
    pub email: bool,
    pub name: bool,
}

/// What an issued token says about its user besides the subject and scopes.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserClaims<'a> {
    /// `cv`: the user's credential version when the token is issued.
    pub credential_version: Option<&'a str>,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl fmt::Debug for TokenSettings {
    // Hand-written so key material never reaches a log via `{:?}` of the config (the ring's
    // own Debug prints ids and states only).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSettings")
            .field("ring", &self.ring)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .field("leeway", &self.leeway)
            .field("profile_claims", &self.profile_claims)
            .finish()
    }
}

/// A freshly signed access token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub jti: String,
    /// Seconds until expiry, for the OAuth2 `expires_in` field.
    pub expires_in: u64,
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub subject: String,
    /// Deduplicated, in first-seen order: `scope`, then `scp`, then `scopes`.
    pub scopes: Vec<String>,
    pub jti: Option<String>,
    /// `exp`, unix seconds.
    pub expires_at: u64,
    /// `cv`: the credential version the token was issued under, when it says.
    pub credential_version: Option<String>,
    /// What routes' `claims:` conditions read of the token's claims, and nothing else
    /// (`Null` when no route has conditions): see `policy::claims::keep`.
    pub claims: serde_json::Value,
}

/// Keys and validation rules, built once per config snapshot.
#[derive(Clone)]
pub struct TokenKeys {
    ring: KeyRing,
    /// One per ring key, same order: the key's algorithm pinned, our `iss`/`aud` required.
    validations: Vec<Validation>,
    issuer: Option<String>,
    audience: Option<String>,
    ttl: u64,
    leeway: u64,
    profile_claims: ProfileClaims,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ring", &self.ring)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

/// Claims we sign.
#[derive(Serialize)]
struct OutClaims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    iat: u64,
    exp: u64,
    jti: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cv: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// A validation that checks the signature under `alg` and, when given, `iss` and `aud`
/// (and the presence of `exp` and `sub`); the times are ours to check against our clock.
pub(crate) fn validation(
    alg: SigningAlgorithm,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Validation {
    let alg = alg.jwt();
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        // With no audience configured there is nothing to compare `aud` against, and
        // jsonwebtoken would reject every token that carries one. Only holders of our
        // keys can mint tokens, so an `aud` we never asked about is accepted as-is;
        // operators who share a secret between services should configure audiences.
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    // exp/nbf/iat are checked against the caller's `now` (one clock, testable, same leeway
    // semantics for all three); jsonwebtoken would read the wall clock instead. `exp` stays
    // required above, so its presence is still enforced by the library too.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation
}

/// The time rules every token meets: `exp`, `nbf` and `iat` against `now` with `leeway`, and
/// a lifetime no longer than `max_lifetime` (RFC 8725 §3.10: a leaked or forged-by-insider
/// ten-year token stops at the lifetime we would accept).
pub(crate) fn check_times(
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    now: u64,
    leeway: u64,
    max_lifetime: u64,
) -> Result<(), TokenError> {
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    let late_now = now.saturating_add(leeway);
    if nbf.is_some_and(|nbf| nbf > late_now) {
        return Err(TokenError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > late_now) {
        return Err(TokenError::IssuedInFuture);
    }
    let max_lifetime = max_lifetime.saturating_add(leeway);
    if exp > now.saturating_add(max_lifetime) {
        return Err(TokenError::LifetimeTooLong);
    }
    if iat.is_some_and(|iat| now > iat.saturating_add(max_lifetime)) {
        return Err(TokenError::TooOld);
    }
    Ok(())
}

/// The payload segment decoded, nesting bounded: ready for a typed or a dynamic parse.
pub(crate) fn payload_json(payload: &str) -> Result<Vec<u8>, TokenError> {
    let raw = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    // serde skips unknown claims without a depth limit; bound nesting before parsing.
    if json_depth_exceeds(&raw, MAX_JSON_DEPTH) {
        return Err(TokenError::Malformed);
    }
    Ok(raw)
}

impl TokenKeys {
    pub fn new(settings: TokenSettings) -> Self {
        let validations = settings
            .ring
            .keys()
            .iter()
            .map(|key| {
                validation(
                    key.algorithm,
                    settings.issuer.as_deref(),
                    settings.audience.as_deref(),
                )
            })
            .collect();
        Self {
            ring: settings.ring,
            validations,
            issuer: settings.issuer,
            audience: settings.audience,
            ttl: settings.ttl.as_secs(),
            leeway: settings.leeway.as_secs(),
            profile_claims: settings.profile_claims,
        }
    }

    /// The `kid` put in issued tokens: the active key's.
    pub fn kid(&self) -> &str {
        &self.ring.active().kid
    }

    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// `iss` of issued tokens, when configured.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// Issue an access token signed by the active key. `now` = unix seconds. Of `user`'s
    /// profile fields, only those `tokens.claims` names are put in.
    pub fn issue(
        &self,
        subject: &str,
        scopes: &[&str],
        user: UserClaims<'_>,
        now: u64,
    ) -> Result<IssuedToken, TokenError> {
        check_subject(subject)?;
        // Scopes are joined by spaces, so an entry containing one would split on the way back.
        if scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(' ') || s.chars().any(char::is_control))
        {
            return Err(TokenError::InvalidScope);
        }
        let exp = now.checked_add(self.ttl).ok_or(TokenError::Internal)?;
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = OutClaims {
            iss: self.issuer.as_deref(),
            sub: subject,
            aud: self.audience.as_deref(),
            iat: now,
            exp,
            jti: &jti,
            scope: scopes.join(" "),
            cv: user.credential_version,
            email: user.email.filter(|_| self.profile_claims.email),
            name: user.name.filter(|_| self.profile_claims.name),
        };
        let key = self.ring.active();
        let mut header = Header::new(key.algorithm.jwt());
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, key.encoding())
            .map_err(|_| TokenError::Internal)?;
        Ok(IssuedToken {
            token,
            jti,
            expires_in: self.ttl,
        })
    }

    /// Verify a bearer token issued by this gateway (or another holder of its keys).
    /// `now` = unix seconds.
    pub fn verify(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        let head = read_head(token)?;
        self.verify_head(token, &head, now)
    }

    /// [`Self::verify`] for a token whose head was already read.
    pub fn verify_head(
        &self,
        token: &str,
        head: &TokenHead<'_>,
        now: u64,
    ) -> Result<VerifiedToken, TokenError> {
        self.check_signed_by_ring(token, head)?;
        let raw = payload_json(head.payload)?;
        let claims: InClaims = serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
        check_times(
            claims.exp.0,
            claims.nbf.map(|d| d.0),
            claims.iat.map(|d| d.0),
            now,
            self.leeway,
            self.ttl,
        )?;
        check_subject(&claims.sub)?;
        if claims
            .jti
            .as_deref()
            .is_some_and(|j| j.len() > MAX_SUBJECT_BYTES || j.chars().any(char::is_control))
        {
            return Err(TokenError::Malformed);
        }
        if claims
            .cv
            .as_deref()
            .is_some_and(|cv| cv.len() > MAX_CV_BYTES)
        {
            return Err(TokenError::Malformed);
        }
        let scopes = merge_scopes(claims.scope, claims.scp, claims.scopes)?;
        Ok(VerifiedToken {
            subject: claims.sub,
            scopes,
            jti: claims.jti,
            expires_at: claims.exp.0,
            credential_version: claims.cv,
            claims: serde_json::Value::Null,
        })
    }

    /// The signature (and `iss`/`aud`) under the ring key the header names. A token without
    /// `kid` (minted by a service sharing a secret) is tried against the keys of its `alg`.
    fn check_signed_by_ring(&self, token: &str, head: &TokenHead<'_>) -> Result<(), TokenError> {
        let mut keys = self.ring.keys().iter().zip(&self.validations);
        if let Some(kid) = head.kid.as_deref().filter(|_| self.ring.kid_selects_key()) {
            let (key, validation) = keys
                .find(|(key, _)| key.kid == kid)
                .ok_or(TokenError::UnknownKey)?;
            if key.algorithm != head.alg {
                return Err(TokenError::UnsupportedAlgorithm);
            }
            return check_signature(token, &key.decoding, key.algorithm, validation);
        }
        // Active key first: the one a kid-less token most likely came from.
        let active = &self.ring.active().kid;
        let (first, rest): (Vec<_>, Vec<_>) = keys
            .filter(|(key, _)| key.algorithm == head.alg)
            .partition(|(key, _)| &key.kid == active);
        let mut outcome = Err(TokenError::UnsupportedAlgorithm);
        for (key, validation) in first.into_iter().chain(rest) {
            outcome = check_signature(token, &key.decoding, key.algorithm, validation);
            if !matches!(outcome, Err(TokenError::InvalidSignature)) {
                break;
            }
        }
        outcome
    }
}

pub(crate) fn map_error(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::InvalidSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => TokenError::UnsupportedAlgorithm,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidSubject => TokenError::InvalidSubject,
        // Map to static names so nothing from the error text can reach a client.
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(match c.as_str() {
            "exp" => "exp",
            "sub" => "sub",
            "iss" => "iss",
            "aud" => "aud",
            "nbf" => "nbf",
            _ => "unknown",
        }),
        // A malformed signature (wrong length for the curve) is a bad signature, not ours.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Provider(_) => TokenError::Internal,
        // Shape, base64, JSON, UTF-8, claim format, and anything added later: fail closed.
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{generate_private_key, KeyMaterial, KeyStatus, RingKey};
    use jsonwebtoken::crypto::sign;
    use jsonwebtoken::{Algorithm, EncodingKey};

    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys(issuer: Option<&str>, audience: Option<&str>) -> TokenKeys {
        let key = RingKey::new(
            crate::auth::keys::derived_kid(SigningAlgorithm::HS256, SECRET),
            SigningAlgorithm::HS256,
            KeyStatus::Active,
            None,
            KeyMaterial::Secret(SECRET.to_vec()),
        )
        .expect("key");
        TokenKeys::new(TokenSettings {
            ring: KeyRing::single_secret(key).expect("ring"),
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            ttl: Duration::from_secs(3600),
            leeway: Duration::from_secs(30),
            profile_claims: ProfileClaims::default(),
        })
    }

    fn ring_keys(ring: Vec<RingKey>, issuer: Option<&str>, audience: Option<&str>) -> TokenKeys {
        TokenKeys::new(TokenSettings {
            ring: KeyRing::new(ring).expect("ring"),
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            ttl: Duration::from_secs(3600),
            leeway: Duration::from_secs(30),
            profile_claims: ProfileClaims::default(),
        })
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// Hand-built token: raw header and claims JSON, HMAC-signed with `alg` and `secret`.
    fn forge(alg: Algorithm, secret: &[u8], header: &str, claims: &str) -> String {
        let msg = format!("{}.{}", b64(header), b64(claims));
        let sig = sign(msg.as_bytes(), &EncodingKey::from_secret(secret), alg).expect("sign");
        format!("{msg}.{sig}")
    }

    fn hs256(header: &str, claims: &str) -> String {
        forge(Algorithm::HS256, SECRET, header, claims)
    }

    const H: &str = r#"{"alg":"HS256","typ":"at+jwt"}"#;

    fn claims(extra: &str) -> String {
        format!(r#"{{"sub":"alice","exp":{}{extra}}}"#, NOW + 60)
    }

    fn verify(k: &TokenKeys, t: &str) -> Result<VerifiedToken, TokenError> {
        k.verify(t, NOW)
    }

    #[test]
    fn roundtrip() {
        let k = keys(Some("https://pc"), Some("api"));
        let t = k
            .issue("alice", &["read", "write"], UserClaims::default(), NOW)
            .expect("issue");
        assert_eq!(t.expires_in, 3600);
        let v = verify(&k, &t.token).expect("verify");
        assert_eq!(v.subject, "alice");
        assert_eq!(v.scopes, ["read", "write"]);
        assert_eq!(v.jti.as_deref(), Some(t.jti.as_str()));
        assert_eq!(v.expires_at, NOW + 3600);
        let header = jsonwebtoken::decode_header(&t.token).expect("header");
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(k.kid()));
        assert_eq!(k.kid().len(), 16);
        assert!(!format!("{k:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn issue_rejects_bad_input() {
        let k = keys(None, None);
        assert_eq!(
            k.issue("", &[], UserClaims::default(), NOW).err(),
            Some(TokenError::InvalidSubject)
        );
        assert_eq!(
            k.issue("a", &["a b"], UserClaims::default(), NOW).err(),
            Some(TokenError::InvalidScope)
        );
        assert_eq!(
            k.issue("a", &[], UserClaims::default(), u64::MAX).err(),
            Some(TokenError::Internal)
        );
    }

    #[test]
    fn tampered_payload_and_wrong_secret() {
        let k = keys(None, None);
        let t = k
            .issue("alice", &["read"], UserClaims::default(), NOW)
            .expect("issue")
            .token;
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = b64(&claims(r#","scope":"admin""#));
        parts[1] = &evil;
        assert_eq!(
            verify(&k, &parts.join(".")).err(),
            Some(TokenError::InvalidSignature)
        );
        let other = forge(
            Algorithm::HS256,
            b"another-secret-another-secret-!!",
            H,
            &claims(""),
        );
        assert_eq!(verify(&k, &other).err(), Some(TokenError::InvalidSignature));
    }

    #[test]
    fn algorithm_is_pinned() {
        let k = keys(None, None);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&claims("")));
        assert_eq!(
            verify(&k, &none).err(),
            Some(TokenError::UnsupportedAlgorithm)
        );
        let none_case = format!("{}.{}.", b64(r#"{"alg":"NONE"}"#), b64(&claims("")));
        assert!(verify(&k, &none_case).is_err());
        let hs384 = forge(Algorithm::HS384, SECRET, r#"{"alg":"HS384"}"#, &claims(""));
        assert_eq!(
            verify(&k, &hs384).err(),
            Some(TokenError::UnsupportedAlgorithm)
        );
        // A lying header (says HS256, signed HS384) fails the signature.
        let lying = forge(Algorithm::HS384, SECRET, H, &claims(""));
        assert_eq!(verify(&k, &lying).err(), Some(TokenError::InvalidSignature));
    }

    #[test]
    fn expiry_and_leeway() {
        let k = keys(None, None);
        let t = k
            .issue("alice", &[], UserClaims::default(), NOW)
            .expect("issue")
            .token;
        assert!(k.verify(&t, NOW + 3600 + 29).is_ok());
        assert_eq!(
            k.verify(&t, NOW + 3600 + 30).err(),
            Some(TokenError::Expired)
        );
        assert_eq!(k.verify(&t, NOW + 99_999).err(), Some(TokenError::Expired));
        let no_exp = hs256(H, r#"{"sub":"alice"}"#);
        assert_eq!(
            verify(&k, &no_exp).err(),
            Some(TokenError::MissingClaim("exp"))
        );
        let float_exp = hs256(H, &format!(r#"{{"sub":"a","exp":{}.5}}"#, NOW + 60));
        assert!(verify(&k, &float_exp).is_ok());
        let str_exp = hs256(H, &format!(r#"{{"sub":"a","exp":"{}"}}"#, NOW + 60));
        assert!(verify(&k, &str_exp).is_err());
    }

    #[test]
    fn nbf_and_iat() {
        let k = keys(None, None);
        let nbf = hs256(H, &claims(&format!(r#","nbf":{}"#, NOW + 31)));
        assert_eq!(verify(&k, &nbf).err(), Some(TokenError::NotYetValid));
        let nbf_ok = hs256(H, &claims(&format!(r#","nbf":{}"#, NOW + 30)));
        assert!(verify(&k, &nbf_ok).is_ok());
        let iat = hs256(H, &claims(&format!(r#","iat":{}"#, NOW + 31)));
        assert_eq!(verify(&k, &iat).err(), Some(TokenError::IssuedInFuture));
        // No lifetime or age beyond `ttl` + leeway (3600 + 30 here).
        let expiring_at = |exp: u64| hs256(H, &format!(r#"{{"sub":"alice","exp":{exp}}}"#));
        assert_eq!(
            verify(&k, &expiring_at(NOW + 3631)).err(),
            Some(TokenError::LifetimeTooLong)
        );
        assert!(verify(&k, &expiring_at(NOW + 3630)).is_ok());
        let old = hs256(H, &claims(&format!(r#","iat":{}"#, NOW - 3631)));
        assert_eq!(verify(&k, &old).err(), Some(TokenError::TooOld));
        let iat_ok = hs256(H, &claims(&format!(r#","iat":{}"#, NOW + 30)));
        assert!(verify(&k, &iat_ok).is_ok());
        let iat_str = hs256(H, &claims(r#","iat":"yesterday""#));
        assert_eq!(verify(&k, &iat_str).err(), Some(TokenError::Malformed));
    }

    #[test]
    fn issuer() {
        let k = keys(Some("https://pc"), None);
        assert_eq!(
            verify(&k, &hs256(H, &claims(""))).err(),
            Some(TokenError::MissingClaim("iss"))
        );
        let wrong = hs256(H, &claims(r#","iss":"https://evil""#));
        assert_eq!(verify(&k, &wrong).err(), Some(TokenError::WrongIssuer));
        assert!(verify(&k, &hs256(H, &claims(r#","iss":"https://pc""#))).is_ok());
    }

    #[test]
    fn audience() {
        let k = keys(None, Some("api"));
        assert_eq!(
            verify(&k, &hs256(H, &claims(""))).err(),
            Some(TokenError::MissingClaim("aud"))
        );
        let wrong = hs256(H, &claims(r#","aud":"other""#));
        assert_eq!(verify(&k, &wrong).err(), Some(TokenError::WrongAudience));
        assert!(verify(&k, &hs256(H, &claims(r#","aud":["other","api"]"#))).is_ok());
        // No audience configured: a token carrying one is still accepted.
        assert!(verify(&keys(None, None), &wrong).is_ok());
    }

    #[test]
    fn header_rules() {
        let k = keys(None, None);
        let c = claims("");
        let crit = hs256(r#"{"alg":"HS256","crit":["exp"]}"#, &c);
        assert_eq!(verify(&k, &crit).err(), Some(TokenError::CriticalHeader));
        let crit_null = hs256(r#"{"alg":"HS256","crit":null}"#, &c);
        assert_eq!(
            verify(&k, &crit_null).err(),
            Some(TokenError::CriticalHeader)
        );
        let id = hs256(r#"{"alg":"HS256","typ":"id+jwt"}"#, &c);
        assert_eq!(verify(&k, &id).err(), Some(TokenError::UnexpectedType));
        for typ in ["JWT", "jwt", "AT+JWT", "application/at+jwt"] {
            let t = hs256(&format!(r#"{{"alg":"HS256","typ":"{typ}"}}"#), &c);
            assert!(verify(&k, &t).is_ok(), "{typ}");
        }
        assert!(verify(&k, &hs256(r#"{"alg":"HS256"}"#, &c)).is_ok());
        for member in ["jku", "x5u", "jwk", "x5c"] {
            let t = hs256(&format!(r#"{{"alg":"HS256","{member}":"x"}}"#), &c);
            assert_eq!(
                verify(&k, &t).err(),
                Some(TokenError::KeyReferenceHeader),
                "{member}"
            );
        }
        let long_kid = hs256(
            &format!(r#"{{"alg":"HS256","kid":"{}"}}"#, "k".repeat(257)),
            &c,
        );
        assert_eq!(verify(&k, &long_kid).err(), Some(TokenError::Malformed));
        assert!(verify(&k, &hs256(r#"{"alg":"HS256","kid":"whatever"}"#, &c)).is_ok());
    }

    #[test]
    fn size_and_shape() {
        let k = keys(None, None);
        let big = hs256(H, &claims(&format!(r#","pad":"{}""#, "x".repeat(9 * 1024))));
        assert_eq!(verify(&k, &big).err(), Some(TokenError::TooLarge));
        for bad in ["", "a.b", "a.b.c.d", "!!!.e30.x", "e30.e30.e30"] {
            assert!(verify(&k, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subject_rules() {
        let k = keys(None, None);
        let sub = |s: &str| hs256(H, &format!(r#"{{"sub":{s},"exp":{}}}"#, NOW + 60));
        let long = format!("\"{}\"", "a".repeat(300));
        for s in [r#""""#, r#""alice\r\nadmin""#, long.as_str()] {
            assert_eq!(
                verify(&k, &sub(s)).err(),
                Some(TokenError::InvalidSubject),
                "{s}"
            );
        }
        // jsonwebtoken reports a non-string sub as absent.
        assert_eq!(
            verify(&k, &sub("42")).err(),
            Some(TokenError::MissingClaim("sub"))
        );
        let dup = hs256(
            H,
            &format!(r#"{{"sub":"alice","sub":"admin","exp":{}}}"#, NOW + 60),
        );
        assert_eq!(verify(&k, &dup).err(), Some(TokenError::Malformed));
    }

    #[test]
    fn scope_forms() {
        let k = keys(None, None);
        let scopes = |extra: &str| verify(&k, &hs256(H, &claims(extra))).map(|v| v.scopes);
        assert_eq!(
            scopes(r#","scope":"readadmin""#).ok(),
            Some(vec!["readadmin".into()])
        );
        assert_eq!(
            scopes(r#","scope":"a  b""#).ok(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            scopes(r#","scp":["a","b"]"#).ok(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            scopes(r#","scp":"a b""#).ok(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            scopes(r#","scopes":["x"],"scope":"x y""#).ok(),
            Some(vec!["x".into(), "y".into()])
        );
        assert_eq!(
            scopes(r#","scope":["a"]"#).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(
            scopes(r#","scopes":"a""#).err(),
            Some(TokenError::Malformed)
        );
        assert_eq!(
            scopes(r#","scope":"read\tadmin""#).err(),
            Some(TokenError::InvalidScope)
        );
        assert_eq!(
            scopes(r#","scp":["a\nb"]"#).err(),
            Some(TokenError::InvalidScope)
        );
    }

    #[test]
    fn errors_never_echo_token_content() {
        let k = keys(Some("iss"), Some("aud"));
        let t = hs256(
            r#"{"alg":"HS256","typ":"SECRETTYPE"}"#,
            &claims(r#","aud":"SECRETAUD""#),
        );
        let e = verify(&k, &t).expect_err("rejected").to_string();
        assert!(!e.contains("SECRET"), "{e}");
    }

    fn asymmetric(kid: &str, alg: SigningAlgorithm, status: KeyStatus) -> (RingKey, String) {
        let pem = generate_private_key(alg).expect("generate");
        let key = RingKey::new(
            kid.into(),
            alg,
            status,
            None,
            KeyMaterial::PrivatePem(pem.clone()),
        )
        .expect("key");
        (key, pem)
    }

    #[test]
    fn es256_and_eddsa_sign_and_verify_with_their_kid() {
        for alg in [SigningAlgorithm::ES256, SigningAlgorithm::EdDSA] {
            let (key, _) = asymmetric("k1", alg, KeyStatus::Active);
            let k = ring_keys(vec![key], Some("https://pc"), None);
            let t = k
                .issue("alex", &["read"], UserClaims::default(), NOW)
                .expect("issue");
            let head = read_head(&t.token).expect("head");
            assert_eq!(head.alg, alg);
            assert_eq!(head.kid.as_deref(), Some("k1"));
            let v = verify(&k, &t.token).expect("verify");
            assert_eq!(v.subject, "alex");
        }
    }

    #[test]
    fn rotation_keeps_tokens_of_every_ring_key_valid() {
        let (old, old_pem) = asymmetric("old", SigningAlgorithm::ES256, KeyStatus::Active);
        let (next, next_pem) = asymmetric("new", SigningAlgorithm::EdDSA, KeyStatus::Next);
        let before = ring_keys(vec![old, next], None, None);
        let token = before
            .issue("alex", &[], UserClaims::default(), NOW)
            .expect("issue")
            .token;
        // Promote: `new` signs, `old` retires and still verifies.
        let retired = RingKey::new(
            "old".into(),
            SigningAlgorithm::ES256,
            KeyStatus::Retired,
            None,
            KeyMaterial::PrivatePem(old_pem),
        )
        .expect("old");
        let active = RingKey::new(
            "new".into(),
            SigningAlgorithm::EdDSA,
            KeyStatus::Active,
            None,
            KeyMaterial::PrivatePem(next_pem),
        )
        .expect("new");
        let after = ring_keys(vec![retired, active], None, None);
        assert!(
            verify(&after, &token).is_ok(),
            "a retired key still verifies"
        );
        let fresh = after
            .issue("alex", &[], UserClaims::default(), NOW)
            .expect("issue")
            .token;
        assert_eq!(read_head(&fresh).expect("head").kid.as_deref(), Some("new"));
        assert!(
            verify(&before, &fresh).is_ok(),
            "a published next key already verifies"
        );
    }

    #[test]
    fn unknown_kid_and_alg_disagreeing_with_the_key_are_refused() {
        let (key, _) = asymmetric("k1", SigningAlgorithm::ES256, KeyStatus::Active);
        let k = ring_keys(vec![key], None, None);
        let t = hs256(r#"{"alg":"HS256","kid":"nope"}"#, &claims(""));
        assert_eq!(verify(&k, &t).err(), Some(TokenError::UnknownKey));
        let t = hs256(r#"{"alg":"HS256","kid":"k1"}"#, &claims(""));
        assert_eq!(verify(&k, &t).err(), Some(TokenError::UnsupportedAlgorithm));
        let t = hs256(r#"{"alg":"HS256"}"#, &claims(""));
        assert_eq!(verify(&k, &t).err(), Some(TokenError::UnsupportedAlgorithm));
    }

    #[test]
    fn the_public_key_used_as_an_hmac_secret_is_refused() {
        // THREATS J-02: alg confusion. Sign HS256 with the published key bytes (the SEC1
        // point, its PEM, its JWK JSON) and name the EC key's kid.
        let (key, _) = asymmetric("k1", SigningAlgorithm::ES256, KeyStatus::Active);
        let k = ring_keys(vec![key], None, None);
        let jwks = k.ring().jwks();
        for secret in [jwks.as_bytes(), b"k1".as_slice()] {
            for header in [r#"{"alg":"HS256","kid":"k1"}"#, r#"{"alg":"HS256"}"#] {
                let t = forge(Algorithm::HS256, secret, header, &claims(""));
                assert!(verify(&k, &t).is_err(), "{header}");
            }
        }
    }

    #[test]
    fn a_kidless_token_tries_the_keys_of_its_algorithm() {
        let (es, _) = asymmetric("es", SigningAlgorithm::ES256, KeyStatus::Active);
        let hs = RingKey::new(
            "hs".into(),
            SigningAlgorithm::HS256,
            KeyStatus::Retired,
            None,
            KeyMaterial::Secret(SECRET.to_vec()),
        )
        .expect("hs");
        let k = ring_keys(vec![es, hs], None, None);
        assert!(verify(&k, &hs256(r#"{"alg":"HS256"}"#, &claims(""))).is_ok());
        let wrong = forge(
            Algorithm::HS256,
            b"another-secret-another-secret-xx",
            r#"{"alg":"HS256"}"#,
            &claims(""),
        );
        assert_eq!(verify(&k, &wrong).err(), Some(TokenError::InvalidSignature));
    }

    #[test]
    fn public_key_tokens_meet_issuer_and_audience_too() {
        let (key, pem) = asymmetric("k1", SigningAlgorithm::ES256, KeyStatus::Active);
        let strict = ring_keys(vec![key], Some("https://pc"), Some("api"));
        let same_key = || {
            RingKey::new(
                "k1".into(),
                SigningAlgorithm::ES256,
                KeyStatus::Active,
                None,
                KeyMaterial::PrivatePem(pem.clone()),
            )
            .expect("key")
        };
        let cases = [
            (Some("https://pc"), Some("api"), None),
            (
                Some("https://other"),
                Some("api"),
                Some(TokenError::WrongIssuer),
            ),
            (
                Some("https://pc"),
                Some("other"),
                Some(TokenError::WrongAudience),
            ),
            (None, Some("api"), Some(TokenError::MissingClaim("iss"))),
            (
                Some("https://pc"),
                None,
                Some(TokenError::MissingClaim("aud")),
            ),
        ];
        for (iss, aud, expected) in cases {
            let minting = ring_keys(vec![same_key()], iss, aud);
            let token = minting
                .issue("alex", &[], UserClaims::default(), NOW)
                .expect("issue")
                .token;
            assert_eq!(verify(&strict, &token).err(), expected, "{iss:?} {aud:?}");
        }
        // And a bit flipped in the signature fails with the key ring verifier.
        let token = strict
            .issue("alex", &[], UserClaims::default(), NOW)
            .expect("issue")
            .token;
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).expect("ascii");
        assert_eq!(
            verify(&strict, &flipped).err(),
            Some(TokenError::InvalidSignature)
        );
    }
}
