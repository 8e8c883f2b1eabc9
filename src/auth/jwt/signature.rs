//! Checking a token's signature with the key the configuration chose, with whichever backend
//! measured faster, because every token not yet in the cache — including every forged one —
//! costs one verification (`cargo bench --bench hot_path -- "token|ed25519"`):
//! ECDSA and RSA go through ring, the library the TLS stack already uses (ES256 cold: 86 µs,
//! against 364 µs with jsonwebtoken's RustCrypto backend); HMAC (constant-time comparison) and
//! Ed25519 go through jsonwebtoken (ed25519-dalek: 62 µs, against ring's 78 µs).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, Validation};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::de::IgnoredAny;

use super::algorithm::SigningAlgorithm;
use super::map_error;
use crate::error::TokenError;

/// A verifying key.
#[derive(Clone)]
pub enum SignatureKey {
    /// HMAC or Ed25519, checked by jsonwebtoken.
    Library(DecodingKey),
    /// An uncompressed SEC1 point (P-256 or P-384).
    Ec(Arc<[u8]>),
    /// Big-endian modulus and exponent, without leading zeros.
    Rsa { n: Arc<[u8]>, e: Arc<[u8]> },
}

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Library(_) => "Library(<redacted>)",
            Self::Ec(_) => "Ec",
            Self::Rsa { .. } => "Rsa",
        })
    }
}

impl SignatureKey {
    pub fn hmac(secret: &[u8]) -> SignatureKey {
        SignatureKey::Library(DecodingKey::from_secret(secret))
    }

    /// A raw 32-byte Ed25519 public key.
    pub fn ed25519(public: &[u8]) -> SignatureKey {
        SignatureKey::Library(DecodingKey::from_ed_der(public))
    }

    pub fn rsa(n: &[u8], e: &[u8]) -> SignatureKey {
        let strip = |bytes: &[u8]| -> Arc<[u8]> {
            let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
            bytes[start..].into()
        };
        SignatureKey::Rsa {
            n: strip(n),
            e: strip(e),
        }
    }

    /// Whether this key can check `alg` at all (family and curve).
    fn ring_algorithm(
        &self,
        alg: SigningAlgorithm,
    ) -> Option<&'static dyn signature::VerificationAlgorithm> {
        use SigningAlgorithm::*;
        match (self, alg) {
            (Self::Ec(point), ES256) if point.len() == 65 => {
                Some(&signature::ECDSA_P256_SHA256_FIXED)
            }
            (Self::Ec(point), ES384) if point.len() == 97 => {
                Some(&signature::ECDSA_P384_SHA384_FIXED)
            }
            _ => None,
        }
    }
}

/// Check `token`'s signature with `key` under `alg` (the algorithm the configuration pinned),
/// then its `iss`, `aud` and required claims under `validation`.
pub(crate) fn check_signature(
    token: &str,
    key: &SignatureKey,
    alg: SigningAlgorithm,
    validation: &Validation,
) -> Result<(), TokenError> {
    // The library parses the claims into its target type *before* validating, so we give it
    // none and parse typed claims afterwards: its precise errors win, and our parse sees only
    // signed data.
    if let SignatureKey::Library(decoding) = key {
        return jsonwebtoken::decode::<IgnoredAny>(token, decoding, validation)
            .map(|_| ())
            .map_err(map_error);
    }
    let (message, encoded) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed)?;
    let verified = match key {
        SignatureKey::Rsa { n, e } => {
            let params = rsa_params(alg).ok_or(TokenError::UnsupportedAlgorithm)?;
            RsaPublicKeyComponents {
                n: &n[..],
                e: &e[..],
            }
            .verify(params, message.as_bytes(), &signature)
            .is_ok()
        }
        SignatureKey::Ec(public) => {
            let algorithm = key
                .ring_algorithm(alg)
                .ok_or(TokenError::UnsupportedAlgorithm)?;
            UnparsedPublicKey::new(algorithm, &public[..])
                .verify(message.as_bytes(), &signature)
                .is_ok()
        }
        SignatureKey::Library(_) => false,
    };
    if !verified {
        return Err(TokenError::InvalidSignature);
    }
    registered_claims(message, validation)
}

/// After a signature checked by ring: the registered claims `validation` asks about, as
/// jsonwebtoken would check them — required ones present, `iss` one of the accepted,
/// `aud` (a string or an array) naming one of ours. Times are the caller's to check.
fn registered_claims(message: &str, validation: &Validation) -> Result<(), TokenError> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Audience {
        One(String),
        Many(Vec<String>),
    }
    #[derive(serde::Deserialize)]
    struct Registered {
        iss: Option<String>,
        aud: Option<Audience>,
        sub: Option<IgnoredAny>,
        exp: Option<IgnoredAny>,
        nbf: Option<IgnoredAny>,
    }
    let (_, payload) = message.split_once('.').ok_or(TokenError::Malformed)?;
    let raw = super::payload_json(payload)?;
    let claims: Registered = serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)?;
    for required in &validation.required_spec_claims {
        let present = match required.as_str() {
            "iss" => claims.iss.is_some(),
            "aud" => claims.aud.is_some(),
            "sub" => claims.sub.is_some(),
            "exp" => claims.exp.is_some(),
            "nbf" => claims.nbf.is_some(),
            _ => false,
        };
        if !present {
            return Err(TokenError::MissingClaim(match required.as_str() {
                "iss" => "iss",
                "aud" => "aud",
                "sub" => "sub",
                "exp" => "exp",
                "nbf" => "nbf",
                _ => "unknown",
            }));
        }
    }
    if let Some(accepted) = &validation.iss {
        let iss = claims.iss.as_ref().ok_or(TokenError::MissingClaim("iss"))?;
        if !accepted.contains(iss) {
            return Err(TokenError::WrongIssuer);
        }
    }
    if let (true, Some(ours)) = (validation.validate_aud, &validation.aud) {
        let named = match claims.aud.as_ref().ok_or(TokenError::MissingClaim("aud"))? {
            Audience::One(aud) => ours.contains(aud),
            Audience::Many(list) => list.iter().any(|aud| ours.contains(aud)),
        };
        if !named {
            return Err(TokenError::WrongAudience);
        }
    }
    Ok(())
}

fn rsa_params(alg: SigningAlgorithm) -> Option<&'static signature::RsaParameters> {
    use SigningAlgorithm::*;
    Some(match alg {
        RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}
