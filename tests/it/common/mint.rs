//! Tokens minted independently of the gateway's code (for tests of what it accepts): a JWS
//! implementation on hmac + sha2, separate from the gateway's jsonwebtoken-based one. Every
//! token a test signs is signed here.

use base64::Engine as _;
use hmac::Mac as _;
use serde_json::Value;
use sha2::{Sha256, Sha384, Sha512};

use super::gateway::SECRET;

/// The HMAC that signs a token (RFC 7518 §3.2). Independent of the `alg` its header names, so
/// tests can sign with one algorithm and claim another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    Hs384,
    Hs512,
}

/// base64url without padding, as in every JWS segment.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The JWS signing input `b64(header).b64(claims)`: a token before its signature segment (for
/// unsigned and hand-assembled tokens).
pub fn signing_input(header: &[u8], claims: &[u8]) -> String {
    format!("{}.{}", b64(header), b64(claims))
}

/// The base64url HMAC of `input` under `key`.
fn signature(alg: Alg, key: &[u8], input: &str) -> String {
    let bytes = match alg {
        Alg::Hs256 => {
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Alg::Hs384 => {
            let mut mac = hmac::Hmac::<Sha384>::new_from_slice(key).expect("hmac key");
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Alg::Hs512 => {
            let mut mac = hmac::Hmac::<Sha512>::new_from_slice(key).expect("hmac key");
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    b64(&bytes)
}

/// Sign `header.claims` (serialised as compact JSON) with `alg` under `key`.
pub fn mint(alg: Alg, header: &Value, claims: &Value, key: &[u8]) -> String {
    mint_raw(
        alg,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
        key,
    )
}

/// Sign raw header and claims bytes (for duplicate members, deep nesting and other JSON that
/// `serde_json::Value` cannot hold or would rewrite).
pub fn mint_raw(alg: Alg, header: &[u8], claims: &[u8], key: &[u8]) -> String {
    let input = signing_input(header, claims);
    let signature = signature(alg, key, &input);
    format!("{input}.{signature}")
}

/// Decode and verify an HS256 token independently; returns (header, claims) when valid.
pub fn verify_hs256(token: &str, secret: &[u8]) -> Option<(Value, Value)> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(format!("{h}.{c}").as_bytes());
    mac.verify_slice(&b64.decode(s).ok()?).ok()?;
    let header = serde_json::from_slice(&b64.decode(h).ok()?).ok()?;
    let claims = serde_json::from_slice(&b64.decode(c).ok()?).ok()?;
    Some((header, claims))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Standard claims for a token the fixture gateway ([`super::fixture_yaml`]) accepts.
pub fn fixture_claims(sub: &str, scope: &str) -> Value {
    let now = now();
    serde_json::json!({
        "iss": "https://gw.test", "aud": "gw-upstreams", "sub": sub, "scope": scope,
        "iat": now, "exp": now + 300, "jti": format!("{sub}-{now}-{}", rand_suffix()),
    })
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A fixture token signed with [`SECRET`].
pub fn fixture_token(sub: &str, scope: &str) -> String {
    mint(
        Alg::Hs256,
        &serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}),
        &fixture_claims(sub, scope),
        SECRET.as_bytes(),
    )
}
