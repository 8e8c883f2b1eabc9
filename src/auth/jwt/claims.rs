//! The claims a token carries, as the verifier reads them: typed (duplicates and wrong types
//! fail), bounded (nesting, subject length), and normalised (scope spellings merged).

use serde::de::{Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer};

use super::MAX_SUBJECT_BYTES;
use crate::error::TokenError;

/// Largest timestamp accepted in a NumericDate claim (year ~33658); bounds float casts.
const MAX_NUMERIC_DATE: f64 = 1.0e12;

/// Claims we read. A typed struct makes duplicate known claims and wrong types errors.
#[derive(Deserialize)]
pub(super) struct InClaims {
    pub(super) sub: String,
    pub(super) exp: NumericDate,
    pub(super) nbf: Option<NumericDate>,
    pub(super) iat: Option<NumericDate>,
    pub(super) jti: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) scp: Option<StringOrArray>,
    pub(super) scopes: Option<Vec<String>>,
    /// The credential version (see `auth::user`); absent from tokens minted elsewhere.
    pub(super) cv: Option<String>,
    // Checked by jsonwebtoken; listed so a duplicated claim is a parse error here too.
    #[serde(rename = "iss")]
    _iss: Option<IgnoredAny>,
    #[serde(rename = "aud")]
    _aud: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum StringOrArray {
    One(String),
    Many(Vec<String>),
}

/// Unix seconds; integers or finite non-negative floats (truncated), nothing else.
pub(crate) struct NumericDate(pub(crate) u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() && (0.0..=MAX_NUMERIC_DATE).contains(&v) {
            Ok(NumericDate(v as u64))
        } else {
            Err(D::Error::custom("invalid NumericDate"))
        }
    }
}

pub(super) fn check_subject(sub: &str) -> Result<(), TokenError> {
    if sub.is_empty() || sub.len() > MAX_SUBJECT_BYTES || sub.chars().any(char::is_control) {
        return Err(TokenError::InvalidSubject);
    }
    Ok(())
}

/// `scope` splits on single ASCII spaces (RFC 6749 §3.3); empty pieces are dropped. Any
/// entry containing a control character (tab, newline, …) rejects the whole token: such
/// names cannot be granted by us and could corrupt logs downstream.
pub(super) fn merge_scopes(
    scope: Option<String>,
    scp: Option<StringOrArray>,
    scopes: Option<Vec<String>>,
) -> Result<Vec<String>, TokenError> {
    let mut all: Vec<String> = Vec::new();
    let mut add = |s: &str| -> Result<(), TokenError> {
        if s.chars().any(char::is_control) {
            return Err(TokenError::InvalidScope);
        }
        if !s.is_empty() && !all.iter().any(|have| have == s) {
            all.push(s.to_owned());
        }
        Ok(())
    };
    for s in scope.as_deref().unwrap_or("").split(' ') {
        add(s)?;
    }
    match scp {
        Some(StringOrArray::One(s)) => s.split(' ').try_for_each(&mut add)?,
        Some(StringOrArray::Many(v)) => v.iter().try_for_each(|s| add(s))?,
        None => {}
    }
    for s in scopes.iter().flatten() {
        add(s)?;
    }
    Ok(all)
}

/// Claims nest far less than this in any real token.
pub(super) const MAX_JSON_DEPTH: usize = 32;

/// True when JSON `bytes` open more than `limit` nested arrays/objects (strings skipped).
pub(super) fn json_depth_exceeds(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}
