//! Tokens from an external identity provider (Keycloak, Auth0, Entra ID, Dex, …): verified
//! with that issuer's published keys only, held to its `iss`, required `aud`, allowed
//! (asymmetric) algorithms and a lifetime bound, and mapped onto Portcullis scopes so route
//! rules read the same whoever issued the token.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::Validation;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::jwks::PublishedKeys;
use super::jwt::algorithm::SigningAlgorithm;
use super::jwt::{
    check_signature, check_times, payload_json, validation, TokenHead, VerifiedToken,
};
use super::jwt::{NumericDate, MAX_SUBJECT_BYTES};
use crate::error::TokenError;
use crate::policy::claim_path::ClaimPath;
use crate::policy::claims;

/// Most scopes read from one external token (a provider's role list can be long).
const MAX_MAPPED_SCOPES: usize = 256;

/// How one external issuer's tokens are accepted and read.
pub struct IssuerPolicy {
    /// The name in `issuers:`, also what `X-Forwarded-Issuer` says.
    pub name: String,
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    pub audience: String,
    /// Asymmetric only; the token's `alg` must be one of these and fit the key.
    pub algorithms: Vec<SigningAlgorithm>,
    /// Where the user's name is (default `sub`).
    pub user_claim: ClaimPath,
    /// Claims read as scope lists: a space-separated string or an array of strings.
    pub scope_claims: Vec<ClaimPath>,
    /// Provider names → Portcullis scope names; names not listed are kept as they are.
    pub rename: HashMap<String, String>,
    /// Longest token lifetime accepted, seconds.
    pub max_lifetime: u64,
    pub leeway: u64,
    /// One per entry of `algorithms`: `iss` and `aud` required, the algorithm pinned.
    validations: Vec<Validation>,
}

impl fmt::Debug for IssuerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerPolicy")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .field("user_claim", &self.user_claim)
            .field("scope_claims", &self.scope_claims)
            .finish_non_exhaustive()
    }
}

/// The claims whose duplicates or types matter, parsed typed (a repeated one is an error).
#[derive(Deserialize)]
struct TypedClaims {
    exp: NumericDate,
    nbf: Option<NumericDate>,
    iat: Option<NumericDate>,
    jti: Option<String>,
    #[serde(rename = "sub")]
    _sub: Option<IgnoredAny>,
    #[serde(rename = "iss")]
    _iss: Option<IgnoredAny>,
    #[serde(rename = "aud")]
    _aud: Option<IgnoredAny>,
}

impl IssuerPolicy {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        issuer: String,
        audience: String,
        algorithms: Vec<SigningAlgorithm>,
        user_claim: ClaimPath,
        scope_claims: Vec<ClaimPath>,
        rename: HashMap<String, String>,
        max_lifetime: u64,
        leeway: u64,
    ) -> IssuerPolicy {
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = validation(*alg, Some(&issuer), Some(&audience));
                // The user claim may be other than `sub`; its presence is checked below.
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                v
            })
            .collect();
        IssuerPolicy {
            name,
            issuer,
            audience,
            algorithms,
            user_claim,
            scope_claims,
            rename,
            max_lifetime,
            leeway,
            validations,
        }
    }

    /// Verify `token` (head already read) with `keys`, the issuer's published keys.
    /// [`TokenError::UnknownKey`] means no published key has the token's `kid`: a refetch of
    /// the keys may help.
    pub fn verify(
        &self,
        keys: &PublishedKeys,
        token: &str,
        head: &TokenHead<'_>,
        now: u64,
        keep_claims: &[ClaimPath],
    ) -> Result<VerifiedToken, TokenError> {
        // Never HMAC, whatever the token says: the published keys are public.
        let index = self
            .algorithms
            .iter()
            .position(|alg| *alg == head.alg)
            .ok_or(TokenError::UnsupportedAlgorithm)?;
        let kid = head.kid.as_deref();
        if let Some(kid) = kid {
            if !keys.has_kid(kid) {
                return Err(TokenError::UnknownKey);
            }
        }
        let mut outcome = Err(TokenError::UnsupportedAlgorithm);
        for key in keys.candidates(kid, head.alg) {
            outcome = check_signature(token, &key.decoding, head.alg, &self.validations[index]);
            if !matches!(outcome, Err(TokenError::InvalidSignature)) {
                break;
            }
        }
        outcome?;
        let raw = payload_json(head.payload)?;
        let typed: TypedClaims = serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
        check_times(
            typed.exp.0,
            typed.nbf.map(|d| d.0),
            typed.iat.map(|d| d.0),
            now,
            self.leeway,
            self.max_lifetime,
        )?;
        let claims: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
        let subject = match self.user_claim.lookup(&claims) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => return Err(TokenError::InvalidSubject),
            None => return Err(TokenError::MissingClaim("user claim")),
        };
        if subject.is_empty()
            || subject.len() > MAX_SUBJECT_BYTES
            || subject.chars().any(char::is_control)
        {
            return Err(TokenError::InvalidSubject);
        }
        if typed
            .jti
            .as_deref()
            .is_some_and(|j| j.len() > MAX_SUBJECT_BYTES || j.chars().any(char::is_control))
        {
            return Err(TokenError::Malformed);
        }
        Ok(VerifiedToken {
            subject,
            scopes: self.scopes(&claims)?,
            jti: typed.jti,
            expires_at: typed.exp.0,
            credential_version: None,
            claims: claims::keep(&claims, keep_claims),
        })
    }

    /// The token's scopes in Portcullis names: every scope claim read, renamed, deduplicated.
    fn scopes(&self, claims: &serde_json::Value) -> Result<Vec<String>, TokenError> {
        let mut scopes: Vec<String> = Vec::new();
        let mut add = |name: &str| -> Result<(), TokenError> {
            if name.chars().any(char::is_control) {
                return Err(TokenError::InvalidScope);
            }
            let name = self.rename.get(name).map_or(name, String::as_str);
            if !name.is_empty() && !scopes.iter().any(|s| s == name) {
                if scopes.len() >= MAX_MAPPED_SCOPES {
                    return Err(TokenError::InvalidScope);
                }
                scopes.push(name.to_owned());
            }
            Ok(())
        };
        for path in &self.scope_claims {
            match path.lookup(claims) {
                Some(serde_json::Value::String(list)) => {
                    for name in list.split(' ') {
                        add(name)?;
                    }
                }
                Some(serde_json::Value::Array(items)) => {
                    for item in items {
                        // Non-string members (a provider's objects) are not scope names.
                        if let Some(name) = item.as_str() {
                            add(name)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::read_head;
    use crate::auth::keys::{generate_private_key, KeyMaterial, KeyRing, KeyStatus, RingKey};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn ring(kid: &str) -> (KeyRing, String) {
        let pem = generate_private_key(SigningAlgorithm::ES256).expect("pem");
        let key = RingKey::new(
            kid.into(),
            SigningAlgorithm::ES256,
            KeyStatus::Active,
            None,
            KeyMaterial::PrivatePem(pem.clone()),
        )
        .expect("key");
        (KeyRing::new(vec![key]).expect("ring"), pem)
    }

    fn policy() -> IssuerPolicy {
        IssuerPolicy::new(
            "corp".into(),
            "https://idp.test/realms/corp".into(),
            "portcullis".into(),
            vec![SigningAlgorithm::ES256, SigningAlgorithm::RS256],
            ClaimPath::parse("preferred_username").expect("path"),
            vec![
                ClaimPath::parse("scope").expect("path"),
                ClaimPath::parse("realm_access.roles").expect("path"),
            ],
            HashMap::from([("items-reader".to_owned(), "read".to_owned())]),
            3600,
            30,
        )
    }

    fn sign(pem: &str, header: Header, claims: &serde_json::Value) -> String {
        let der = rcgen::KeyPair::from_pem(pem).expect("pem").serialize_der();
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&der)).expect("sign")
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": "https://idp.test/realms/corp", "aud": ["account", "portcullis"],
            "sub": "f81d4fae", "preferred_username": "dana", "exp": NOW + 300, "iat": NOW,
            "scope": "openid profile", "realm_access": {"roles": ["items-reader", "offline_access"]},
        })
    }

    fn es256(kid: &str) -> Header {
        let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.into());
        header.typ = Some("JWT".into());
        header
    }

    fn verify(keys: &PublishedKeys, token: &str) -> Result<VerifiedToken, TokenError> {
        let head = read_head(token)?;
        policy().verify(keys, token, &head, NOW, &[])
    }

    #[test]
    fn an_external_token_maps_its_user_and_roles() {
        let (ring, pem) = ring("k1");
        let keys = PublishedKeys::parse(ring.jwks().as_bytes()).expect("keys");
        let token = sign(&pem, es256("k1"), &claims());
        let verified = verify(&keys, &token).expect("verified");
        assert_eq!(verified.subject, "dana");
        assert_eq!(
            verified.scopes,
            ["openid", "profile", "read", "offline_access"]
        );
    }

    #[test]
    fn wrong_audience_issuer_kid_or_lifetime_is_refused() {
        let (ring, pem) = ring("k1");
        let keys = PublishedKeys::parse(ring.jwks().as_bytes()).expect("keys");
        let with = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut c = claims();
            change(&mut c);
            sign(&pem, es256("k1"), &c)
        };
        let cases: [(String, TokenError); 5] = [
            (
                with(&|c| c["aud"] = json!("other")),
                TokenError::WrongAudience,
            ),
            (
                with(&|c| c["iss"] = json!("https://evil.test")),
                TokenError::WrongIssuer,
            ),
            (
                with(&|c| c["exp"] = json!(NOW + 7200)),
                TokenError::LifetimeTooLong,
            ),
            (
                with(&|c| {
                    c.as_object_mut().expect("obj").remove("preferred_username");
                }),
                TokenError::MissingClaim("user claim"),
            ),
            (sign(&pem, es256("k2"), &claims()), TokenError::UnknownKey),
        ];
        for (token, expected) in cases {
            assert_eq!(verify(&keys, &token).err(), Some(expected));
        }
    }

    #[test]
    fn hmac_and_none_never_pass_even_keyed_with_the_published_key() {
        let (ring, _) = ring("k1");
        let jwks = ring.jwks();
        let keys = PublishedKeys::parse(jwks.as_bytes()).expect("keys");
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(jwks.as_bytes()),
        )
        .expect("sign");
        assert_eq!(
            verify(&keys, &token).err(),
            Some(TokenError::UnsupportedAlgorithm)
        );
        let none = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                r#"{"alg":"none","kid":"k1"}"#
            ),
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                claims().to_string()
            ),
        );
        assert_eq!(
            verify(&keys, &none).err(),
            Some(TokenError::UnsupportedAlgorithm)
        );
    }
}
