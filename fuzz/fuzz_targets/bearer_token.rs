//! The bearer path: `Authorization` header value → `bearer_token` → `TokenKeys::verify`.
//!
//! First byte even ("raw" mode): the rest is an `Authorization` value (and, when UTF-8, also a
//! token on its own). Nothing may panic and nothing may verify: the fuzzer does not know the
//! key, so an accepted token would mean the signature check was skipped.
//!
//! First byte odd ("signed" mode): the rest is `header JSON` NUL `claims JSON`, signed here
//! with the real key, so the checks behind the signature (claims parsing, time checks,
//! subject and scope rules) are reached. Whatever verifies must satisfy those rules.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use portcullis::auth::bearer::bearer_token;
use portcullis::auth::jwt::{TokenKeys, MAX_SUBJECT_BYTES};
use portcullis::config::Config;

/// Not the secret of any seed: seeds only reach the signature check in raw mode.
const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret-0123";
/// The clock every verification uses (seeds carry `exp` around it).
const NOW: u64 = 1_700_000_000;
const LEEWAY: u64 = 30;
/// Token lifetime of the fuzz config (`ttl: 5m`).
const TTL: u64 = 300;

fn keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let yaml = format!(
            "tokens:\n  algorithm: HS256\n  secret: \"{SECRET}\"\n  ttl: {TTL}s\n  leeway: {LEEWAY}s\n"
        );
        let config = Config::from_text(Path::new("fuzz.yaml"), &yaml).expect("fuzz config");
        TokenKeys::new(config.tokens.clone())
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(rest);
    } else {
        signed(rest);
    }
});

fn raw(value: &[u8]) {
    let keys = keys();
    if let Ok(text) = std::str::from_utf8(value) {
        assert!(
            keys.verify(text, NOW).is_err(),
            "unsigned input verified: {text:?}"
        );
    }
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    if let Ok(Some(token)) = bearer_token(&headers) {
        assert!(!token.is_empty());
        assert!(
            keys.verify(token, NOW).is_err(),
            "unsigned bearer token verified: {token:?}"
        );
    }
}

fn signed(rest: &[u8]) {
    let (header, claims) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&br#"{"alg":"HS256","typ":"at+jwt"}"#[..], rest),
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
    )
    .expect("sign");
    let token = format!("{message}.{signature}");
    let Ok(verified) = keys().verify(&token, NOW) else {
        return;
    };
    let sub = &verified.subject;
    assert!(
        !sub.is_empty() && sub.len() <= MAX_SUBJECT_BYTES && !sub.chars().any(char::is_control),
        "accepted subject {sub:?}"
    );
    assert!(NOW < verified.expires_at.saturating_add(LEEWAY), "expired");
    assert!(
        verified.expires_at <= NOW + TTL + LEEWAY,
        "lifetime beyond ttl + leeway: exp {}",
        verified.expires_at
    );
    for (i, scope) in verified.scopes.iter().enumerate() {
        assert!(!scope.is_empty(), "empty scope");
        assert!(!scope.chars().any(char::is_control), "scope {scope:?}");
        assert!(!verified.scopes[..i].contains(scope), "duplicate {scope:?}");
    }
    if let Some(jti) = &verified.jti {
        assert!(jti.len() <= MAX_SUBJECT_BYTES && !jti.chars().any(char::is_control));
    }
    // The header we were given must have said HS256 (the algorithm is pinned).
    let header: serde_json::Value = serde_json::from_slice(header).expect("verified header");
    assert_eq!(header["alg"], "HS256");
    assert!(header.get("crit").is_none() && header.get("jku").is_none());
}
