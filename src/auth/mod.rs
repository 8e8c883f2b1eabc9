//! Who the caller is: JWT issuing and verification ([`jwt`]), the bearer credential and the
//! identity it proves ([`bearer`]), verified tokens cached per config generation
//! ([`token_cache`]), argon2id passwords on a bounded pool ([`password`]), login regulation
//! ([`lockout`]), logout [`revocation`]s, and the [`user`] record tokens must still match.
//!
//! Mechanisms only: the login endpoint and the per-request authentication phase that wire
//! them to a request live in `pipeline`. Must never import `pipeline`, `state` or `config`.

pub mod bearer;
pub mod hashing_pool;
pub mod issuer;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod lockout;
pub mod password;
pub mod rate_limit;
pub mod refresh;
pub mod revocation;
pub mod token_cache;
pub mod user;

/// Keys of the login and revocation tables longer than this are truncated: real usernames,
/// addresses and token ids are far shorter, and over-long junk keys sharing a prefix may
/// share an entry without harm.
pub const MAX_KEY_BYTES: usize = 256;

/// Lowercase hex of `bytes` (digests in keys and kids).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `key` cut to at most [`MAX_KEY_BYTES`] on a character boundary.
pub(crate) fn bounded(key: &str) -> &str {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let mut end = MAX_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}
