//! Which method names a route's `methods:` may list.
//!
//! A rule naming a method no client will ever send (`DELET`, or `get`: methods are
//! case-sensitive) would silently let that method fall through to the next rule, so only
//! the RFC 9110 methods, PATCH (RFC 5789) and those declared in `extra_methods:` (WebDAV and
//! the like) are accepted.

use std::collections::HashSet;

use http::Method;

/// RFC 9110 §9.3 methods the gateway can forward, and PATCH (RFC 5789).
const STANDARD: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];
/// RFC 9110 methods the gateway answers with 405 itself, whatever the rules say.
const REFUSED: [&str; 2] = ["CONNECT", "TRACE"];

/// The static name of `method` when it is one of the RFC 9110 methods or PATCH (refused ones
/// included), for labels that must stay a bounded set.
pub fn standard_name(method: &Method) -> Option<&'static str> {
    STANDARD
        .iter()
        .chain(REFUSED.iter())
        .find(|name| **name == method.as_str())
        .copied()
}

/// The validated `extra_methods:` list.
#[derive(Debug, Default)]
pub struct ExtraMethods(HashSet<String>);

impl ExtraMethods {
    /// Add one declared extension method: an all-uppercase token that is not already a
    /// standard method.
    pub fn declare(&mut self, name: &str) -> Result<(), String> {
        if REFUSED.contains(&name) {
            return Err(format!("`{name}` is always refused by the gateway"));
        }
        if STANDARD.contains(&name) {
            return Err(format!(
                "`{name}` is a standard method; list only extension methods"
            ));
        }
        if !is_uppercase_token(name) {
            return Err(format!(
                "`{name}` is not an all-uppercase method token (like PROPFIND)"
            ));
        }
        self.0.insert(name.to_owned());
        Ok(())
    }

    /// The method a rule's `methods:` entry names, if the gateway knows it.
    pub fn rule_method(&self, name: &str) -> Result<Method, String> {
        if REFUSED.contains(&name) {
            return Err(format!("method {name} is always refused by the gateway"));
        }
        if !STANDARD.contains(&name) && !self.0.contains(name) {
            let upper = name.to_ascii_uppercase();
            if STANDARD.contains(&upper.as_str()) || self.0.contains(&upper) {
                return Err(format!(
                    "`{name}`: methods are case-sensitive; write `{upper}`"
                ));
            }
            return Err(format!(
                "`{name}` is not an RFC 9110 method; declare extension methods under `extra_methods:`"
            ));
        }
        Method::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not an HTTP method"))
    }
}

/// An RFC 9110 token (§5.6.2) without lowercase letters.
fn is_uppercase_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_may_list_standard_methods_and_declared_extensions_only() {
        let mut extra = ExtraMethods::default();
        for name in STANDARD {
            assert_eq!(
                extra.rule_method(name).map(|m| m.to_string()),
                Ok(name.into())
            );
        }
        for name in ["get", "Post", "DELET", "PROPFIND", "CONNECT", "TRACE", ""] {
            assert!(extra.rule_method(name).is_err(), "{name}");
        }
        assert_eq!(extra.declare("PROPFIND"), Ok(()));
        assert_eq!(extra.declare("VERSION-CONTROL"), Ok(()));
        assert!(extra.rule_method("PROPFIND").is_ok());
        assert!(extra.rule_method("VERSION-CONTROL").is_ok());
        let hint = extra.rule_method("propfind").expect_err("lowercase");
        assert!(hint.contains("`PROPFIND`"), "{hint}");
    }

    #[test]
    fn extra_methods_must_be_uppercase_tokens_not_standard_or_refused() {
        let mut extra = ExtraMethods::default();
        for name in [
            "propfind",
            "Mkcol",
            "PROP FIND",
            "MKCOL;",
            "",
            "GET",
            "PATCH",
            "TRACE",
            "CONNECT",
        ] {
            assert!(extra.declare(name).is_err(), "{name}");
        }
        for name in ["MKCOL", "BASELINE-CONTROL", "X_CUSTOM.1"] {
            assert_eq!(extra.declare(name), Ok(()), "{name}");
        }
    }
}
