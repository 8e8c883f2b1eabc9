//! A user of the gateway's own store: what `/login` checks, what every token issued for the
//! user must still match, and the profile forwarded to upstreams.
//!
//! Tokens follow the store: a token is accepted only while its subject exists and is not
//! disabled, only if it was issued under the user's current password (its credential
//! version), and only for the scopes the user still holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::auth::password::PasswordHash;
use crate::policy::authz::ScopeSet;

/// `X-Forwarded-Email`, as oauth2-proxy names it.
pub const FORWARDED_EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
/// `X-Forwarded-Name` (RFC 8187 `UTF-8''…` when the name is not ASCII).
pub const FORWARDED_NAME: HeaderName = HeaderName::from_static("x-forwarded-name");
/// `X-Forwarded-Groups`: comma-separated, as oauth2-proxy sends it.
pub const FORWARDED_GROUPS: HeaderName = HeaderName::from_static("x-forwarded-groups");
/// Prefix of one header per attribute: `X-Forwarded-Attr-<key>`.
pub const FORWARDED_ATTR_PREFIX: &str = "x-forwarded-attr-";

const MAX_EMAIL_BYTES: usize = 254;
const MAX_TEXT_CHARS: usize = 256;
const MAX_KEY_BYTES: usize = 64;

/// The users by name. Every request with a local token looks its user up here; the names
/// come only from the config, never from a client, so a fast seeded hash serves (std's
/// SipHash cost about 250 instructions per lookup).
pub type Users = std::collections::HashMap<String, User, foldhash::fast::RandomState>;

/// One user record, built once per config generation.
#[derive(Debug)]
pub struct User {
    pub hash: PasswordHash,
    /// The scopes as configured.
    pub scopes: Vec<String>,
    /// The same expanded through `implies`: no token grants this user more.
    pub holds: ScopeSet,
    /// Refused at login, and every token for the user stops working, without deleting it.
    pub disabled: bool,
    /// Derived from the stored hash (see [`credential_version`]); a password change changes it.
    pub credential_version: String,
    pub profile: Profile,
}

/// What upstreams are told about a user besides the name.
#[derive(Debug, Default)]
pub struct Profile {
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    /// The gateway-owned headers the profile becomes, built once so requests only clone them.
    pub headers: Arc<[(HeaderName, HeaderValue)]>,
}

/// Why a profile field cannot be used. Messages name the field, never echo the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("`email` must be printable ASCII with an `@`, at most {MAX_EMAIL_BYTES} bytes")]
    Email,
    #[error("`{0}` must be at most {MAX_TEXT_CHARS} characters without control characters")]
    Text(&'static str),
    #[error("a group must be 1..=128 printable ASCII characters without `,`")]
    Group,
    #[error("attribute key `{0}` must be 1..={MAX_KEY_BYTES} of a-z, 0-9 and `-`")]
    AttributeKey(String),
}

impl Profile {
    /// Validate the fields and build their headers.
    pub fn new(
        email: Option<String>,
        name: Option<String>,
        groups: Vec<String>,
        attributes: BTreeMap<String, String>,
    ) -> Result<Profile, ProfileError> {
        let mut headers = Vec::new();
        if let Some(email) = &email {
            let printable = email.bytes().all(|b| b.is_ascii_graphic());
            if !printable || !email.contains('@') || email.len() > MAX_EMAIL_BYTES {
                return Err(ProfileError::Email);
            }
            headers.push((FORWARDED_EMAIL, header_text(email, "email")?));
        }
        if let Some(name) = &name {
            headers.push((FORWARDED_NAME, header_text(name, "name")?));
        }
        if !groups.is_empty() {
            let valid = |g: &String| {
                (1..=128).contains(&g.len())
                    && g.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b',')
            };
            if !groups.iter().all(valid) {
                return Err(ProfileError::Group);
            }
            let joined = groups.join(",");
            let value = HeaderValue::from_str(&joined).map_err(|_| ProfileError::Group)?;
            headers.push((FORWARDED_GROUPS, value));
        }
        for (key, value) in &attributes {
            let valid_key = (1..=MAX_KEY_BYTES).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            let header = HeaderName::from_bytes(format!("{FORWARDED_ATTR_PREFIX}{key}").as_bytes());
            let header = header
                .ok()
                .filter(|_| valid_key)
                .ok_or_else(|| ProfileError::AttributeKey(key.clone()))?;
            headers.push((header, header_text(value, "attributes")?));
        }
        Ok(Profile {
            email,
            name,
            groups,
            attributes,
            headers: headers.into(),
        })
    }
}

/// A free-text field as a header value: as is when it is printable ASCII, else the RFC 8187
/// `ext-value` (`UTF-8''` and percent-encoded UTF-8), which is also used for ASCII text that
/// would read as one.
fn header_text(text: &str, field: &'static str) -> Result<HeaderValue, ProfileError> {
    if text.chars().count() > MAX_TEXT_CHARS || text.chars().any(char::is_control) {
        return Err(ProfileError::Text(field));
    }
    let plain = text.bytes().all(|b| (b' '..=b'~').contains(&b))
        && !text
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("utf-8''"))
        && text.trim() == text;
    let value = if plain {
        text.to_owned()
    } else {
        ext_value(text)
    };
    HeaderValue::from_str(&value).map_err(|_| ProfileError::Text(field))
}

/// RFC 8187 §3.2: `UTF-8''` then every byte outside `attr-char` percent-encoded.
pub fn ext_value(text: &str) -> String {
    let mut out = String::with_capacity(7 + text.len() * 3);
    out.push_str("UTF-8''");
    for b in text.bytes() {
        let attr_char = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        if attr_char {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The credential version a token carries (`cv`): a one-way, domain-separated digest of the
/// stored password hash, so it changes whenever the password does and needs no extra state
/// (every replica derives the same value), while revealing nothing usable about the hash.
pub fn credential_version(stored_hash: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"portcullis credential version\0");
    digest.update(stored_hash.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_text_is_rfc_8187_encoded_and_ascii_text_is_sent_as_is() {
        assert_eq!(ext_value("Zoë €"), "UTF-8''Zo%C3%AB%20%E2%82%AC");
        let plain = header_text("Alex Kim", "name").map(|v| v.as_bytes().to_vec());
        assert_eq!(plain, Ok(b"Alex Kim".to_vec()));
        let lookalike = header_text("utf-8''x", "name").map(|v| v.as_bytes().to_vec());
        assert_eq!(lookalike, Ok(b"UTF-8''utf-8%27%27x".to_vec()));
        assert_eq!(
            header_text("a\nb", "name").err(),
            Some(ProfileError::Text("name"))
        );
    }

    #[test]
    fn a_profile_builds_its_headers_once_and_refuses_bad_fields() {
        let mut attributes = BTreeMap::new();
        attributes.insert("team".to_owned(), "payments".to_owned());
        let profile = Profile::new(
            Some("alex@example.com".into()),
            Some("Alex".into()),
            vec!["eng".into(), "on call".into()],
            attributes,
        );
        let names: Vec<String> = profile
            .map(|p| {
                p.headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {v:?}"))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            names,
            [
                "x-forwarded-email: \"alex@example.com\"",
                "x-forwarded-name: \"Alex\"",
                "x-forwarded-groups: \"eng,on call\"",
                "x-forwarded-attr-team: \"payments\"",
            ]
        );
        let bad = |email: Option<&str>, groups: &[&str], key: &str| {
            let attributes = BTreeMap::from([(key.to_owned(), "v".to_owned())]);
            let groups = groups.iter().map(|g| g.to_string()).collect();
            Profile::new(email.map(Into::into), None, groups, attributes).is_err()
        };
        assert!(bad(Some("no-at-sign"), &[], "k"));
        assert!(bad(Some("é@example.com"), &[], "k"));
        assert!(bad(None, &["a,b"], "k"));
        assert!(bad(None, &[], "Team"));
        assert!(bad(None, &[], "te_am"));
        assert!(!bad(None, &["ok"], "k-1"));
    }

    #[test]
    fn the_credential_version_follows_the_hash_and_does_not_contain_it() {
        let a = credential_version("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
        let b = credential_version("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaB");
        assert_ne!(a, b);
        assert_eq!(
            a,
            credential_version("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA")
        );
        assert_eq!(a.len(), 16);
        assert!(!a.contains("aGFz"));
    }
}
