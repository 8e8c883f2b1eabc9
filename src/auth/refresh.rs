//! Refresh tokens (RFC 6749 §6, RFC 9700 §4.14): opaque random strings, stored only as a
//! digest, grouped in families that rotate on every use.
//!
//! A family is one login's chain of refresh tokens. Each use of its current token replaces it
//! (rotation); presenting a token that was already replaced means two parties hold the chain,
//! so the whole family ends, unless the same client is retrying within a short grace window
//! after losing the answer: then it gets the very pair it missed, sealed under the token it
//! presents ([`seal`]), so the store never holds a usable token in the clear.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{self, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::auth::hex;

/// Prefix that tells a refresh token from an access token (and from junk) at a glance, as
/// GitHub's and Slack's token prefixes do for secret scanners.
const PREFIX: &str = "prt_";
/// Random bytes in a token: 256 bits, beyond guessing.
const TOKEN_BYTES: usize = 32;

/// A refresh token as the client holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: it is a credential.
        f.write_str("RefreshToken(..)")
    }
}

impl RefreshToken {
    /// A fresh random token.
    pub fn generate() -> RefreshToken {
        RefreshToken(format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(random::<TOKEN_BYTES>())
        ))
    }

    /// A token a client presented, if it has the shape of one of ours.
    pub fn parse(text: &str) -> Option<RefreshToken> {
        let body = text.strip_prefix(PREFIX)?;
        let decoded = URL_SAFE_NO_PAD.decode(body).ok()?;
        (decoded.len() == TOKEN_BYTES).then(|| RefreshToken(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the store keys the token by (hex SHA-256). A fast digest is enough: the token
    /// has 256 random bits, so there is nothing to brute-force from the digest.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }
}

/// `tokens.refresh`: how long refresh tokens and their families live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Each token's lifetime, seconds.
    pub ttl: u64,
    /// A family's absolute lifetime from login, seconds.
    pub max_lifetime: u64,
    /// Seconds after a rotation during which the same retry gets the same answer.
    pub reuse_grace: u64,
}

/// A new family id (random, hex).
pub fn new_family_id() -> String {
    hex(&random::<16>())
}

/// One login's chain of refresh tokens: who it is for and what it may grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub id: String,
    pub subject: String,
    /// The scopes granted at login: a refresh may narrow them, never widen (RFC 6749 §6).
    pub scopes: Vec<String>,
    /// The user's credential version at login: a password change ends the family.
    pub credential_version: String,
    /// Unix seconds after which no token of the family is accepted (`max_lifetime`).
    pub expires_at: u64,
}

/// A refresh token's place in its family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// The family's newest token: using it rotates.
    Current,
    /// Already used; `at` unix seconds, and the pair it was exchanged for, sealed.
    Rotated { at: u64, sealed: String },
}

/// What the store knows of a presented refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub family: Family,
    /// The family was revoked (logout, reuse, a user change).
    pub family_revoked: bool,
    pub state: TokenState,
    /// Unix seconds after which this token is refused (its own `ttl`, capped by the family).
    pub expires_at: u64,
}

/// A rotation the store is asked to make atomically: replace `old` (if it is still current)
/// by `new`.
#[derive(Debug, Clone)]
pub struct Rotation<'a> {
    pub family_id: &'a str,
    pub old_digest: &'a str,
    pub new_digest: &'a str,
    pub new_expires_at: u64,
    /// The answer given for this rotation, sealed under the old token, for the grace window.
    pub sealed: &'a str,
    /// The access token issued with it (revoked with the family): its `jti` and expiry.
    pub access_jti: &'a str,
    pub access_expires_at: u64,
    pub now: u64,
}

/// How an atomic rotation went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationOutcome {
    /// This rotation won: the new token is the family's current one.
    Rotated,
    /// Another rotation of the same token won first (or it was used before).
    AlreadyRotated { at: u64, sealed: String },
    /// The family is gone (revoked or expired) or the token unknown.
    Gone,
}

/// What to do with a presented token that the store says was already rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// A retry within the grace window: answer with the sealed pair again.
    Replay,
    /// A replay after the window: someone else holds the chain; end the family.
    Detected,
}

/// Reuse of a token rotated at `rotated_at`, presented at `now`, under `grace` seconds.
pub fn classify_reuse(rotated_at: u64, now: u64, grace: u64) -> Reuse {
    if grace > 0 && now.saturating_sub(rotated_at) <= grace {
        Reuse::Replay
    } else {
        Reuse::Detected
    }
}

/// Seal `answer` (the token response a rotation produced) so only the holder of `token` can
/// open it again: ChaCha20-Poly1305 under a key derived from the token by HKDF.
pub fn seal(token: &RefreshToken, answer: &[u8]) -> String {
    let key = sealing_key(token);
    let nonce_bytes = random::<NONCE_LEN>();
    let mut in_out = answer.to_vec();
    let nonce = Nonce::assume_unique_for_key(nonce_bytes);
    // Sealing with a valid key and a fresh nonce cannot fail for inputs this small.
    if key
        .seal_in_place_append_tag(nonce, aead::Aad::empty(), &mut in_out)
        .is_err()
    {
        return String::new();
    }
    let mut sealed = nonce_bytes.to_vec();
    sealed.extend_from_slice(&in_out);
    URL_SAFE_NO_PAD.encode(sealed)
}

/// Open what [`seal`] made under `token`; `None` when it was sealed under another token or
/// altered.
pub fn open(token: &RefreshToken, sealed: &str) -> Option<Vec<u8>> {
    let mut bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let mut ciphertext = bytes.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&bytes).ok()?;
    let plain = sealing_key(token)
        .open_in_place(nonce, aead::Aad::empty(), &mut ciphertext)
        .ok()?;
    Some(plain.to_vec())
}

fn sealing_key(token: &RefreshToken) -> LessSafeKey {
    struct KeyLen;
    impl hkdf::KeyType for KeyLen {
        fn len(&self) -> usize {
            CHACHA20_POLY1305.key_len()
        }
    }
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"portcullis refresh grace");
    let prk = salt.extract(token.as_str().as_bytes());
    let mut key = [0u8; 32];
    // The output length is the AEAD key length, which HKDF-SHA256 always supports.
    if let Ok(okm) = prk.expand(&[b"sealed answer"], KeyLen) {
        let _ = okm.fill(&mut key);
    }
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key)
        .unwrap_or_else(|_| unreachable!("the key has the AEAD's length"));
    LessSafeKey::new(unbound)
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The system RNG failing means the OS cannot give randomness at all; nothing sane
    // can continue, and a zero token must never be handed out.
    SystemRandom::new()
        .fill(&mut bytes)
        .unwrap_or_else(|_| panic!("the system random number generator failed"));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_parse_back() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("prt_"));
        assert_eq!(RefreshToken::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.digest().len(), 64);
        assert_ne!(a.digest(), b.digest());
        for junk in ["", "prt_", "prt_abc", "eyJhbGciOi.x.y", &a.as_str()[1..]] {
            assert_eq!(RefreshToken::parse(junk), None, "{junk}");
        }
        assert_eq!(format!("{a:?}"), "RefreshToken(..)");
    }

    #[test]
    fn sealed_answers_open_only_under_their_token() {
        let token = RefreshToken::generate();
        let sealed = seal(&token, b"{\"access_token\":\"x\"}");
        assert_eq!(
            open(&token, &sealed).as_deref(),
            Some(&b"{\"access_token\":\"x\"}"[..])
        );
        assert_eq!(open(&RefreshToken::generate(), &sealed), None);
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(open(&token, &String::from_utf8(tampered).unwrap()), None);
        assert_eq!(open(&token, "short"), None);
    }

    #[test]
    fn reuse_within_grace_replays_after_it_is_detected() {
        assert_eq!(classify_reuse(100, 100, 10), Reuse::Replay);
        assert_eq!(classify_reuse(100, 110, 10), Reuse::Replay);
        assert_eq!(classify_reuse(100, 111, 10), Reuse::Detected);
        assert_eq!(classify_reuse(100, 100, 0), Reuse::Detected);
    }
}
