//! The token half of the builder: the key ring (`tokens.keys`, or the single key of
//! `tokens.algorithm` + `tokens.secret`) and the rules issued tokens follow.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::file::Spanned;
use super::*;
use crate::auth::jwt::{ProfileClaims, SigningAlgorithm, TokenSettings};
use crate::auth::keys::{
    derived_kid, generate_private_key, valid_kid, KeyMaterial, KeyRing, KeyState, KeyStatus,
    RingKey,
};
use crate::config::units::parse_rfc3339;
use std::path::Path;

/// The token settings and what `check` should know about how they were made.
pub(super) struct BuiltTokens {
    pub(super) settings: TokenSettings,
    pub(super) secret_is_random: bool,
    pub(super) generated_keys: Vec<String>,
}

impl Builder {
    pub(super) fn tokens(
        &self,
        raw: &file::TokensFile,
        files: &mut Vec<PathBuf>,
        digest_input: &mut String,
    ) -> Result<BuiltTokens, ConfigError> {
        let mut secret_is_random = false;
        let mut generated_keys = Vec::new();
        let ring = match &raw.keys {
            Some(keys) => {
                for (given, key) in [("algorithm", &raw.algorithm), ("secret", &raw.secret)] {
                    if let Some(v) = key {
                        return Err(self.at(
                            v,
                            format!("tokens.{given}: give either `keys:` or `algorithm`/`secret`, not both"),
                        ));
                    }
                }
                self.ring(keys, files, digest_input, &mut generated_keys)?
            }
            None => {
                let (ring, random) = self.single_key_ring(raw)?;
                secret_is_random = random;
                ring
            }
        };
        let optional =
            |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>, ConfigError> {
                v.as_ref().map(|v| self.string(v, key)).transpose()
            };
        let ttl = self.duration(
            &raw.ttl,
            "tokens.ttl",
            Duration::from_secs(3600),
            MAX_PERIOD,
        )?;
        if ttl.is_zero() {
            return Err(self.err(
                raw.ttl.as_ref().map(|v| &v.referenced),
                "tokens.ttl: must be positive",
            ));
        }
        Ok(BuiltTokens {
            settings: TokenSettings {
                ring,
                issuer: optional(&raw.issuer, "tokens.issuer")?,
                audience: optional(&raw.audience, "tokens.audience")?,
                ttl,
                leeway: self.timeout(&raw.leeway, "tokens.leeway", Duration::from_secs(30))?,
                profile_claims: self.profile_claims(&raw.claims)?,
            },
            secret_is_random,
            generated_keys,
        })
    }

    /// `tokens.algorithm` + `tokens.secret`: a ring of one HMAC key whose `kid` is derived
    /// from the secret (so tokens issued before `keys:` existed keep verifying).
    fn single_key_ring(&self, raw: &file::TokensFile) -> Result<(KeyRing, bool), ConfigError> {
        let algorithm = match &raw.algorithm {
            None => SigningAlgorithm::HS256,
            Some(v) => match SigningAlgorithm::from_name(&v.value) {
                Some(alg) if alg.is_symmetric() => alg,
                _ => {
                    return Err(self.at(
                        v,
                        format!(
                            "tokens.algorithm: `{}` is not supported here (HS256, HS384 or HS512; for ES256 or EdDSA use `tokens.keys`)",
                            v.value
                        ),
                    ))
                }
            },
        };
        let (secret, random) = match &raw.secret {
            None => (process_secret(), true),
            Some(v) => (self.secret(v, "tokens.secret")?, false),
        };
        let kid = derived_kid(algorithm, &secret);
        let key = RingKey::new(
            kid,
            algorithm,
            KeyStatus::Active,
            None,
            KeyMaterial::Secret(secret),
        )
        .map_err(|e| self.err(None, format!("tokens: {e}")))?;
        let ring =
            KeyRing::single_secret(key).map_err(|e| self.err(None, format!("tokens: {e}")))?;
        Ok((ring, random))
    }

    fn secret(&self, v: &Spanned<String>, key: &str) -> Result<Vec<u8>, ConfigError> {
        let secret = self.string(v, key)?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(self.at(
                v,
                format!(
                    "{key}: must be at least {MIN_SECRET_BYTES} bytes (got {})",
                    secret.len()
                ),
            ));
        }
        Ok(secret.into_bytes())
    }

    fn ring(
        &self,
        raw: &[Spanned<file::KeyFile>],
        files: &mut Vec<PathBuf>,
        digest_input: &mut String,
        generated: &mut Vec<String>,
    ) -> Result<KeyRing, ConfigError> {
        let mut keys = Vec::with_capacity(raw.len());
        for (index, spanned) in raw.iter().enumerate() {
            let entry = &spanned.value;
            let name = format!("tokens.keys[{index}]");
            if !valid_kid(&entry.kid) {
                return Err(self.at(spanned, format!(
                    "{name}.kid: `{}` is not a valid key id (letters, digits, `.`, `_`, `-`; at most 64)",
                    entry.kid
                )));
            }
            let algorithm = SigningAlgorithm::from_name(&entry.algorithm)
                .filter(|alg| alg.can_sign())
                .ok_or_else(|| {
                    self.at(spanned, format!(
                        "{name}.algorithm: `{}` cannot sign here (ES256, EdDSA, HS256, HS384 or HS512; RSA is for external issuers only)",
                        entry.algorithm
                    ))
                })?;
            let status = match entry.status.as_str() {
                "active" => KeyStatus::Active,
                "next" => KeyStatus::Next,
                "retired" => KeyStatus::Retired,
                other => {
                    return Err(self.at(
                        spanned,
                        format!("{name}.status: `{other}` is not `active`, `next` or `retired`"),
                    ))
                }
            };
            let retired_at = match (&entry.retired_at, status) {
                (None, _) => None,
                (Some(at), KeyStatus::Retired) => Some(
                    parse_rfc3339(at)
                        .map_err(|e| self.at(spanned, format!("{name}.retired_at: {e}")))?,
                ),
                (Some(_), _) => {
                    return Err(self.at(
                        spanned,
                        format!("{name}.retired_at: only a `retired` key has a retirement time"),
                    ))
                }
            };
            let material = match (&entry.key, &entry.secret, algorithm.is_symmetric()) {
                (None, Some(secret), true) => {
                    let value = Spanned {
                        value: secret.clone(),
                        referenced: spanned.referenced,
                        defined: spanned.defined,
                    };
                    KeyMaterial::Secret(self.secret(&value, &format!("{name}.secret"))?)
                }
                (Some(path), None, false) => {
                    let path = self.resolve(
                        &interpolate(path)
                            .map_err(|e| self.at(spanned, format!("{name}.key: {e}")))?,
                    );
                    let pem = std::fs::read_to_string(&path).map_err(|e| {
                        self.at(
                            spanned,
                            format!("{name}.key: cannot read {}: {e}", path.display()),
                        )
                    })?;
                    digest_input.push_str(&digest_hex(&pem));
                    files.push(path);
                    KeyMaterial::PrivatePem(pem)
                }
                (None, None, false) => {
                    generated.push(entry.kid.clone());
                    KeyMaterial::PrivatePem(
                        process_key(&entry.kid, algorithm)
                            .map_err(|e| self.at(spanned, format!("{name}: {e}")))?,
                    )
                }
                (_, _, true) => {
                    return Err(self.at(
                        spanned,
                        format!(
                            "{name}: {} keys take a `secret` (and no `key` file)",
                            algorithm.name()
                        ),
                    ))
                }
                (_, Some(_), false) => {
                    return Err(self.at(
                        spanned,
                        format!(
                            "{name}: {} keys take a `key` file, not a `secret`",
                            algorithm.name()
                        ),
                    ))
                }
            };
            let key = RingKey::new(entry.kid.clone(), algorithm, status, retired_at, material)
                .map_err(|e| self.at(spanned, format!("{name}: {e}")))?;
            keys.push(key);
        }
        let at = raw.first().map(|k| &k.referenced);
        KeyRing::new(keys).map_err(|e| self.err(at, format!("tokens.keys: {e}")))
    }

    /// `tokens.claims`: which profile fields issued tokens carry.
    fn profile_claims(
        &self,
        raw: &Option<Vec<Spanned<String>>>,
    ) -> Result<ProfileClaims, ConfigError> {
        let mut claims = ProfileClaims::default();
        for claim in raw.iter().flatten() {
            match claim.value.as_str() {
                "email" => claims.email = true,
                "name" => claims.name = true,
                other => {
                    return Err(self.at(
                        claim,
                        format!("tokens.claims: `{other}` is not a profile claim (email, name)"),
                    ))
                }
            }
        }
        Ok(claims)
    }
}

/// The private key used for a ring entry without a key file: generated once per process and
/// `kid`, so a reload never invalidates the tokens it signed (demo only: they die with it).
fn process_key(
    kid: &str,
    algorithm: SigningAlgorithm,
) -> Result<String, crate::auth::keys::KeyError> {
    static KEYS: OnceLock<Mutex<HashMap<(String, SigningAlgorithm), String>>> = OnceLock::new();
    let mut keys = KEYS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(pem) = keys.get(&(kid.to_owned(), algorithm)) {
        return Ok(pem.clone());
    }
    let pem = generate_private_key(algorithm)?;
    keys.insert((kid.to_owned(), algorithm), pem.clone());
    Ok(pem)
}

/// The key ring states a config file names, without loading any key: for comparing with an
/// earlier version of the file (`check --previous`).
pub(in crate::config) fn ring_states(
    path: &Path,
    raw: &file::TokensFile,
) -> Result<Vec<KeyState>, ConfigError> {
    let builder = Builder::new(path);
    let Some(keys) = &raw.keys else {
        // `tokens.secret`: one active key named by the secret; a random one strands nothing.
        let Some(secret) = &raw.secret else {
            return Ok(Vec::new());
        };
        let algorithm = raw
            .algorithm
            .as_ref()
            .and_then(|a| SigningAlgorithm::from_name(&a.value))
            .unwrap_or(SigningAlgorithm::HS256);
        let secret = builder.string(secret, "tokens.secret")?;
        return Ok(vec![KeyState {
            kid: derived_kid(algorithm, secret.as_bytes()),
            status: KeyStatus::Active,
            retired_at: None,
        }]);
    };
    keys.iter()
        .map(|spanned| {
            let entry = &spanned.value;
            let status = match entry.status.as_str() {
                "active" => KeyStatus::Active,
                "next" => KeyStatus::Next,
                _ => KeyStatus::Retired,
            };
            let retired_at = entry
                .retired_at
                .as_deref()
                .map(parse_rfc3339)
                .transpose()
                .map_err(|e| builder.at(spanned, format!("tokens.keys: {e}")))?;
            Ok(KeyState {
                kid: entry.kid.clone(),
                status,
                retired_at,
            })
        })
        .collect()
}
