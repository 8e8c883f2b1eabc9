//! Keys an external issuer publishes (a JWK Set, RFC 7517), read into verifying keys.
//!
//! Only public signature keys are taken: `oct` (HMAC) members are never keys here — a JWKS
//! that offered one would let anyone who can read it sign tokens — and neither are keys
//! marked for encryption, curves we do not verify, or RSA moduli under 2048 bits.

use std::fmt;

use super::jwt::SignatureKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use super::jwt::algorithm::{KeyFamily, SigningAlgorithm};

/// Most keys read from one document (real providers publish a handful).
pub const MAX_PUBLISHED_KEYS: usize = 64;
/// Smallest RSA modulus accepted (RFC 7518 §3.3: 2048 bits or larger).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// One verifying key of an issuer.
#[derive(Clone)]
pub struct PublishedKey {
    pub kid: Option<String>,
    /// The algorithm the JWK names, when it names one: tokens must then use exactly it.
    pub alg: Option<SigningAlgorithm>,
    pub family: KeyFamily,
    /// For EC keys, the curve's algorithm (ES256 for P-256, ES384 for P-384).
    curve_alg: Option<SigningAlgorithm>,
    pub(crate) decoding: SignatureKey,
}

impl fmt::Debug for PublishedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl PublishedKey {
    /// Whether a token signed with `alg` may be checked with this key.
    pub fn fits(&self, alg: SigningAlgorithm) -> bool {
        alg.family() == self.family
            && self.alg.is_none_or(|own| own == alg)
            && self.curve_alg.is_none_or(|curve| curve == alg)
    }
}

/// An issuer's published keys.
#[derive(Clone, Debug, Default)]
pub struct PublishedKeys {
    keys: Vec<PublishedKey>,
}

/// A JWK Set that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWK Set: {0}")]
    NotJson(String),
    #[error("the JWK Set has no usable signature keys")]
    NoUsableKeys,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl PublishedKeys {
    /// Read a JWK Set document. Members that are not usable signature keys are skipped (a
    /// provider may publish encryption keys alongside); a set with none left is an error.
    pub fn parse(document: &[u8]) -> Result<PublishedKeys, JwksError> {
        let raw: RawSet =
            serde_json::from_slice(document).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let keys: Vec<PublishedKey> = raw
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<RawKey>(value).ok())
            .filter_map(|raw| key(&raw))
            .take(MAX_PUBLISHED_KEYS)
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        Ok(PublishedKeys { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify a token with `kid` (or without one) signed with `alg`.
    pub fn candidates<'k>(
        &'k self,
        kid: Option<&'k str>,
        alg: SigningAlgorithm,
    ) -> impl Iterator<Item = &'k PublishedKey> {
        self.keys
            .iter()
            .filter(move |key| kid.is_none() || key.kid.as_deref() == kid)
            .filter(move |key| key.fits(alg))
    }

    /// `kid (alg)` of each key, for people.
    pub fn describe(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| {
                let kid = key.kid.as_deref().unwrap_or("(no kid)");
                let alg = key
                    .alg
                    .map_or_else(|| format!("{:?} key", key.family), |a| a.name().to_owned());
                format!("{kid} ({alg})")
            })
            .collect()
    }

    /// Whether any key carries `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }
}

fn key(raw: &RawKey) -> Option<PublishedKey> {
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if raw
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return None;
    }
    let alg = match raw.alg.as_deref() {
        None => None,
        Some(name) => Some(SigningAlgorithm::from_name(name).filter(|a| !a.is_symmetric())?),
    };
    let (family, curve_alg, decoding) = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (raw.x.as_deref()?, raw.y.as_deref()?);
            let size = if crv == "P-256" { 32 } else { 48 };
            if decoded_len(x)? != size || decoded_len(y)? != size {
                return None;
            }
            let curve = if crv == "P-256" {
                SigningAlgorithm::ES256
            } else {
                SigningAlgorithm::ES384
            };
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend(URL_SAFE_NO_PAD.decode(x).ok()?);
            point.extend(URL_SAFE_NO_PAD.decode(y).ok()?);
            (KeyFamily::Ec, Some(curve), SignatureKey::Ec(point.into()))
        }
        ("OKP", Some("Ed25519")) => {
            let x = raw.x.as_deref()?;
            if decoded_len(x)? != 32 {
                return None;
            }
            let raw = URL_SAFE_NO_PAD.decode(x).ok()?;
            (KeyFamily::Ed, None, SignatureKey::ed25519(&raw))
        }
        ("RSA", _) => {
            let (n, e) = (raw.n.as_deref()?, raw.e.as_deref()?);
            if decoded_len(n)? < MIN_RSA_MODULUS_BYTES {
                return None;
            }
            let (n, e) = (
                URL_SAFE_NO_PAD.decode(n).ok()?,
                URL_SAFE_NO_PAD.decode(e).ok()?,
            );
            (KeyFamily::Rsa, None, SignatureKey::rsa(&n, &e))
        }
        // `oct` (HMAC) and everything else: never a verifying key from a published document.
        _ => return None,
    };
    if alg.is_some_and(|a| a.family() != family) {
        return None;
    }
    Some(PublishedKey {
        kid: raw.kid.clone(),
        alg,
        family,
        curve_alg,
        decoding,
    })
}

fn decoded_len(b64: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(b64).ok().map(|bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(len: usize) -> String {
        URL_SAFE_NO_PAD.encode(vec![1u8; len])
    }

    #[test]
    fn only_public_signature_keys_are_read() {
        let doc = json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": b64(32)},
            {"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256", "x": b64(32), "y": b64(32)},
            {"kty": "EC", "kid": "short", "crv": "P-256", "x": b64(31), "y": b64(32)},
            {"kty": "RSA", "kid": "small", "n": b64(128), "e": "AQAB"},
            {"kty": "RSA", "kid": "hs-alg", "alg": "HS256", "n": b64(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": b64(256), "e": "AQAB"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(32)},
            {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": b64(32)},
        ]});
        let keys = PublishedKeys::parse(doc.to_string().as_bytes()).expect("keys");
        let kids: Vec<_> = keys.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, ["rsa", "ed"]);
    }

    #[test]
    fn a_key_fits_only_its_family_its_alg_and_its_curve() {
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": b64(256), "e": "AQAB"},
            {"kty": "RSA", "kid": "any-rsa", "n": b64(256), "e": "AQAB"},
        ]});
        let keys = PublishedKeys::parse(doc.to_string().as_bytes()).expect("keys");
        use SigningAlgorithm::*;
        assert_eq!(keys.candidates(Some("rsa"), RS256).count(), 1);
        assert_eq!(keys.candidates(Some("rsa"), PS256).count(), 0);
        assert_eq!(keys.candidates(Some("any-rsa"), PS256).count(), 1);
        assert_eq!(keys.candidates(None, HS256).count(), 0);
        assert_eq!(keys.candidates(None, ES256).count(), 0);
        assert_eq!(keys.candidates(None, RS256).count(), 2);
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        assert_eq!(
            PublishedKeys::parse(br#"{"keys": [{"kty": "oct", "k": "AAAA"}]}"#).err(),
            Some(JwksError::NoUsableKeys)
        );
        assert!(matches!(
            PublishedKeys::parse(b"<html>"),
            Err(JwksError::NotJson(_))
        ));
    }
}
