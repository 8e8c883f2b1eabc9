//! The local key ring: the keys the gateway signs and verifies its own tokens with, and the
//! public half of them that `/.well-known/jwks.json` publishes.
//!
//! Rotation by `kid`: one key is `active` (signs), `next` keys are published before they sign
//! (so every verifier already holds them when they start to), `retired` keys still verify
//! until the tokens they signed have expired. HMAC keys verify and sign but are never
//! published.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::EncodingKey;
use serde_json::json;

use super::jwt::algorithm::{KeyFamily, SigningAlgorithm};
use super::jwt::SignatureKey;

/// Longest `kid` accepted in the configuration.
pub const MAX_KID_BYTES: usize = 64;
/// Most keys one ring may hold: tokens without `kid` are tried against each candidate.
pub const MAX_RING_KEYS: usize = 16;

/// Where a key is in its rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// Signs new tokens (exactly one) and verifies.
    Active,
    /// Published and verifying; will sign after a later promotion.
    Next,
    /// Verifies tokens it signed until they expire; signs nothing.
    Retired,
}

impl KeyStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Next => "next",
            Self::Retired => "retired",
        }
    }
}

/// Key material as configured.
pub enum KeyMaterial {
    /// An HMAC secret.
    Secret(Vec<u8>),
    /// A PKCS#8 PEM private key (P-256 or Ed25519).
    PrivatePem(String),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Secret(_) => "Secret(<redacted>)",
            Self::PrivatePem(_) => "PrivatePem(<redacted>)",
        })
    }
}

/// Why a key or ring cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0} keys cannot sign here (RSA is for verifying external tokens only)")]
    CannotSign(&'static str),
    #[error("{alg} needs {needs}")]
    WrongMaterial {
        alg: &'static str,
        needs: &'static str,
    },
    #[error("not a PKCS#8 private key PEM: {0}")]
    BadPem(String),
    #[error("the key is a {found} key, not one for {alg}")]
    AlgorithmMismatch { alg: &'static str, found: String },
    #[error("key id `{0}` is used twice")]
    DuplicateKid(String),
    #[error("exactly one key must be `active` (found {0})")]
    ActiveCount(usize),
    #[error("at most {MAX_RING_KEYS} keys")]
    TooMany,
}

/// One key of the ring.
#[derive(Clone)]
pub struct RingKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    pub status: KeyStatus,
    /// When the key was retired (unix seconds), if the configuration says.
    pub retired_at: Option<u64>,
    encoding: EncodingKey,
    pub(crate) decoding: SignatureKey,
    /// The public key as a JWK; `None` for HMAC keys, which are never published.
    public_jwk: Option<serde_json::Value>,
}

impl fmt::Debug for RingKey {
    // Hand-written: the key material never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("status", &self.status)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl RingKey {
    pub fn new(
        kid: String,
        algorithm: SigningAlgorithm,
        status: KeyStatus,
        retired_at: Option<u64>,
        material: KeyMaterial,
    ) -> Result<RingKey, KeyError> {
        if !algorithm.can_sign() {
            return Err(KeyError::CannotSign(algorithm.name()));
        }
        let (encoding, decoding, public_jwk) = match (algorithm.family(), material) {
            (KeyFamily::Hmac, KeyMaterial::Secret(secret)) => (
                EncodingKey::from_secret(&secret),
                SignatureKey::hmac(&secret),
                None,
            ),
            (KeyFamily::Hmac, KeyMaterial::PrivatePem(_)) => {
                return Err(KeyError::WrongMaterial {
                    alg: algorithm.name(),
                    needs: "a `secret`, not a key file",
                })
            }
            (_, KeyMaterial::Secret(_)) => {
                return Err(KeyError::WrongMaterial {
                    alg: algorithm.name(),
                    needs: "a private key file (`key:`), not a secret",
                })
            }
            (family, KeyMaterial::PrivatePem(pem)) => asymmetric(algorithm, family, &kid, &pem)?,
        };
        Ok(RingKey {
            kid,
            algorithm,
            status,
            retired_at,
            encoding,
            decoding,
            public_jwk,
        })
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn state(&self) -> KeyState {
        KeyState {
            kid: self.kid.clone(),
            status: self.status,
            retired_at: self.retired_at,
        }
    }

    /// The HMAC secret, for `check`'s strength warning; `None` for asymmetric keys.
    pub fn hmac_secret(&self) -> Option<&[u8]> {
        self.algorithm
            .is_symmetric()
            .then(|| self.encoding.try_get_hmac_secret().ok())
            .flatten()
    }
}

/// Signing and verifying halves, and the public JWK, of a PKCS#8 P-256 or Ed25519 key.
fn asymmetric(
    algorithm: SigningAlgorithm,
    family: KeyFamily,
    kid: &str,
    pem: &str,
) -> Result<(EncodingKey, SignatureKey, Option<serde_json::Value>), KeyError> {
    let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| KeyError::BadPem(e.to_string()))?;
    let wanted = match family {
        KeyFamily::Ec => &rcgen::PKCS_ECDSA_P256_SHA256,
        _ => &rcgen::PKCS_ED25519,
    };
    if pair.algorithm() != wanted {
        return Err(KeyError::AlgorithmMismatch {
            alg: algorithm.name(),
            found: format!("{:?}", pair.algorithm()),
        });
    }
    let der = pair.serialize_der();
    let public = pair.public_key_raw();
    let (encoding, decoding, jwk) = match family {
        KeyFamily::Ec => {
            // An uncompressed SEC1 point: 0x04 ‖ x (32) ‖ y (32).
            let (x, y) = public
                .get(1..)
                .filter(|xy| xy.len() == 64 && public[0] == 4)
                .map(|xy| xy.split_at(32))
                .ok_or_else(|| KeyError::BadPem("unexpected P-256 public key".into()))?;
            (
                EncodingKey::from_ec_der(&der),
                SignatureKey::Ec(public.into()),
                json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
            )
        }
        _ => (
            EncodingKey::from_ed_der(&der),
            SignatureKey::ed25519(public),
            json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public)}),
        ),
    };
    let mut jwk = jwk;
    jwk["kid"] = kid.into();
    jwk["alg"] = algorithm.name().into();
    jwk["use"] = "sig".into();
    Ok((encoding, decoding, Some(jwk)))
}

/// Every key the gateway signs or verifies its own tokens with.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Arc<[RingKey]>,
    active: usize,
    /// `tokens.secret` configurations: `kid` was always a label there, and services sharing
    /// the secret mint tokens with kids of their own; those still verify by algorithm.
    kid_is_label: bool,
}

impl KeyRing {
    pub fn new(keys: Vec<RingKey>) -> Result<KeyRing, KeyError> {
        if keys.len() > MAX_RING_KEYS {
            return Err(KeyError::TooMany);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.kid == key.kid) {
                return Err(KeyError::DuplicateKid(key.kid.clone()));
            }
        }
        let active: Vec<usize> = (0..keys.len())
            .filter(|&i| keys[i].status == KeyStatus::Active)
            .collect();
        let [active] = active[..] else {
            return Err(KeyError::ActiveCount(active.len()));
        };
        Ok(KeyRing {
            keys: keys.into(),
            active,
            kid_is_label: false,
        })
    }

    /// The ring of a `tokens.secret` configuration: one key, `kid` only a label.
    pub fn single_secret(key: RingKey) -> Result<KeyRing, KeyError> {
        let mut ring = KeyRing::new(vec![key])?;
        ring.kid_is_label = true;
        Ok(ring)
    }

    /// Whether a token's `kid` must name a ring key (otherwise it is only a label).
    pub fn kid_selects_key(&self) -> bool {
        !self.kid_is_label
    }

    /// The key that signs.
    pub fn active(&self) -> &RingKey {
        &self.keys[self.active]
    }

    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }

    pub fn by_kid(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The JWK Set document (RFC 7517 §5): every non-HMAC key, public parts only.
    pub fn jwks(&self) -> String {
        let keys: Vec<&serde_json::Value> = self
            .keys
            .iter()
            .filter_map(|k| k.public_jwk.as_ref())
            .collect();
        json!({ "keys": keys }).to_string()
    }
}

/// A ring key removed while tokens it signed may still be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrandedKey {
    pub kid: String,
    /// Unix seconds after which its tokens have all expired; `None`: it was the active key.
    pub until: Option<u64>,
}

/// What rotation rules need to know about a key: its id, status and retirement time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub kid: String,
    pub status: KeyStatus,
    pub retired_at: Option<u64>,
}

/// Keys of `old` missing from `new` whose tokens may still be valid at `now`, for tokens that
/// live at most `lifetime` (ttl + leeway). A `next` key never signed, so it may go at any
/// time; the `active` key may not; a `retired` key may once `lifetime` has passed since its
/// retirement (its `retired_at`; unknown counts as now).
pub fn stranded_keys(
    old: &[KeyState],
    new: &[KeyState],
    lifetime: u64,
    now: u64,
) -> Vec<StrandedKey> {
    old.iter()
        .filter(|key| !new.iter().any(|k| k.kid == key.kid))
        .filter_map(|key| match key.status {
            KeyStatus::Next => None,
            KeyStatus::Active => Some(StrandedKey {
                kid: key.kid.clone(),
                until: None,
            }),
            KeyStatus::Retired => {
                let until = key.retired_at.unwrap_or(now).saturating_add(lifetime);
                (now < until).then(|| StrandedKey {
                    kid: key.kid.clone(),
                    until: Some(until),
                })
            }
        })
        .collect()
}

/// The `kid` of the single key a `tokens.secret` configuration makes: a truncated,
/// domain-separated hash of the key, stable so tokens keep verifying across restarts.
pub fn derived_kid(alg: SigningAlgorithm, secret: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"portcullis-kid-v1\0");
    h.update(alg.name().as_bytes());
    h.update(b"\0");
    h.update(secret);
    crate::auth::hex(&h.finalize()[..8])
}

/// Whether `kid` is a key id we accept in configuration.
pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_BYTES
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A new PKCS#8 PEM private key for `alg` (ES256 or EdDSA), for `portcullis gen-key`.
pub fn generate_private_key(alg: SigningAlgorithm) -> Result<String, KeyError> {
    let rcgen_alg = match alg {
        SigningAlgorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        SigningAlgorithm::EdDSA => &rcgen::PKCS_ED25519,
        other => {
            return Err(KeyError::WrongMaterial {
                alg: other.name(),
                needs: "no key file (gen-key makes ES256 and EdDSA keys)",
            })
        }
    };
    rcgen::KeyPair::generate_for(rcgen_alg)
        .map(|pair| pair.serialize_pem())
        .map_err(|e| KeyError::BadPem(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, alg: SigningAlgorithm, status: KeyStatus) -> RingKey {
        let material = if alg.is_symmetric() {
            KeyMaterial::Secret(vec![7; 32])
        } else {
            KeyMaterial::PrivatePem(generate_private_key(alg).expect("generate"))
        };
        RingKey::new(kid.into(), alg, status, None, material).expect("key")
    }

    #[test]
    fn exactly_one_active_key_and_unique_kids() {
        use KeyStatus::*;
        use SigningAlgorithm::*;
        assert_eq!(
            KeyRing::new(vec![key("a", ES256, Next)]).err(),
            Some(KeyError::ActiveCount(0))
        );
        assert_eq!(
            KeyRing::new(vec![key("a", ES256, Active), key("b", EdDSA, Active)]).err(),
            Some(KeyError::ActiveCount(2))
        );
        assert_eq!(
            KeyRing::new(vec![key("a", ES256, Active), key("a", EdDSA, Next)]).err(),
            Some(KeyError::DuplicateKid("a".into()))
        );
        let ring = KeyRing::new(vec![key("old", HS256, Retired), key("new", ES256, Active)])
            .expect("ring");
        assert_eq!(ring.active().kid, "new");
    }

    #[test]
    fn jwks_publishes_public_parts_of_asymmetric_keys_only() {
        use KeyStatus::*;
        use SigningAlgorithm::*;
        let ring = KeyRing::new(vec![
            key("es", ES256, Active),
            key("ed", EdDSA, Next),
            key("hs", HS256, Retired),
        ])
        .expect("ring");
        let doc: serde_json::Value = serde_json::from_str(&ring.jwks()).expect("json");
        let keys = doc["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 2, "the HMAC key is never published: {doc}");
        assert_eq!(keys[0]["kty"], "EC");
        assert_eq!(keys[0]["crv"], "P-256");
        assert_eq!(keys[0]["alg"], "ES256");
        assert_eq!(keys[0]["use"], "sig");
        assert_eq!(keys[1]["kty"], "OKP");
        assert_eq!(keys[1]["crv"], "Ed25519");
        assert_eq!(keys[1]["kid"], "ed");
        for k in keys {
            assert!(k.get("d").is_none(), "no private component: {k}");
        }
    }

    #[test]
    fn removing_a_key_is_refused_while_its_tokens_may_live() {
        use KeyStatus::*;
        let state = |kid: &str, status, retired_at| KeyState {
            kid: kid.into(),
            status,
            retired_at,
        };
        let old = |retired_at| {
            vec![
                state("a", Active, None),
                state("n", Next, None),
                state("r", Retired, retired_at),
            ]
        };
        let only_new = [state("b", Active, None)];
        // Retired an hour ago with a one-hour lifetime: its tokens are gone.
        let stranded = stranded_keys(&old(Some(10_000 - 3600)), &only_new, 3600, 10_000);
        assert_eq!(
            stranded,
            vec![StrandedKey {
                kid: "a".into(),
                until: None
            }]
        );
        // Retired a minute ago: its tokens live for 59 more minutes. Unknown: as if now.
        let stranded = stranded_keys(&old(Some(10_000 - 60)), &only_new, 3600, 10_000);
        assert_eq!(stranded.len(), 2);
        assert_eq!(stranded[1].until, Some(10_000 - 60 + 3600));
        let stranded = stranded_keys(&old(None), &only_new, 3600, 10_000);
        assert_eq!(stranded[1].until, Some(10_000 + 3600));
        // Keeping every key strands nothing.
        assert!(stranded_keys(&old(None), &old(None), 3600, 10_000).is_empty());
    }

    #[test]
    fn material_must_fit_the_algorithm() {
        use SigningAlgorithm::*;
        let ed_pem = generate_private_key(EdDSA).expect("ed");
        let err = RingKey::new(
            "k".into(),
            ES256,
            KeyStatus::Active,
            None,
            KeyMaterial::PrivatePem(ed_pem),
        )
        .err();
        assert!(
            matches!(err, Some(KeyError::AlgorithmMismatch { .. })),
            "{err:?}"
        );
        let err = RingKey::new(
            "k".into(),
            RS256,
            KeyStatus::Active,
            None,
            KeyMaterial::Secret(vec![1; 32]),
        )
        .err();
        assert_eq!(err, Some(KeyError::CannotSign("RS256")));
        let err = RingKey::new(
            "k".into(),
            ES256,
            KeyStatus::Active,
            None,
            KeyMaterial::Secret(vec![1; 32]),
        )
        .err();
        assert!(
            matches!(err, Some(KeyError::WrongMaterial { .. })),
            "{err:?}"
        );
    }
}
