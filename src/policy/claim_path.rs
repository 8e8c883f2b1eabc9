//! Dotted paths into a token's claims (`sub`, `org.id`, `realm_access.roles`), as the
//! configuration names them for identities, scope mapping and claim rules.

use std::fmt;

/// A validated path: one or more non-empty segments separated by `.`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimPath {
    text: String,
}

/// Longest path accepted, and deepest.
const MAX_PATH_BYTES: usize = 256;
const MAX_SEGMENTS: usize = 8;

impl ClaimPath {
    pub fn parse(text: &str) -> Result<ClaimPath, String> {
        if text.is_empty() || text.len() > MAX_PATH_BYTES {
            return Err(format!(
                "`{text}` is not a claim path (1 to {MAX_PATH_BYTES} bytes)"
            ));
        }
        let segments = text.split('.').count();
        if segments > MAX_SEGMENTS
            || text.split('.').any(str::is_empty)
            || text.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "`{text}` is not a claim path (names separated by single dots, at most {MAX_SEGMENTS}, no spaces)"
            ));
        }
        Ok(ClaimPath {
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path in `claims`, if every step exists.
    pub fn lookup<'v>(&self, claims: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        self.text
            .split('.')
            .try_fold(claims, |value, segment| value.as_object()?.get(segment))
    }
}

impl fmt::Debug for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimPath({})", self.text)
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_parse_and_look_up_nested_values() {
        let claims = json!({"sub": "u1", "realm_access": {"roles": ["a", "b"]}, "org": {"id": 7}});
        let path = |p: &str| ClaimPath::parse(p).expect(p);
        assert_eq!(path("sub").lookup(&claims), Some(&json!("u1")));
        assert_eq!(
            path("realm_access.roles").lookup(&claims),
            Some(&json!(["a", "b"]))
        );
        assert_eq!(path("org.id").lookup(&claims), Some(&json!(7)));
        assert_eq!(path("org.name").lookup(&claims), None);
        assert_eq!(path("sub.x").lookup(&claims), None);
        for bad in ["", ".a", "a.", "a..b", "a b", "a.b.c.d.e.f.g.h.i"] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad}");
        }
    }
}
