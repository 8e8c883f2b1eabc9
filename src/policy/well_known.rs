//! The gateway's published documents under `/.well-known/` (RFC 8615): where they live, and
//! what the route table says about a protected resource (RFC 9728).

use std::collections::BTreeSet;

use super::authz::Vocabulary;
use super::routes::{Access, Route, RouteTable};

/// The local key ring's public keys (RFC 7517 JWK Set).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// RFC 8414 authorization-server metadata.
pub const AUTHORIZATION_SERVER_PATH: &str = "/.well-known/oauth-authorization-server";
/// RFC 9728 protected-resource metadata; a resource's path is appended (§3.1).
pub const PROTECTED_RESOURCE_PATH: &str = "/.well-known/oauth-protected-resource";

/// A published document, by canonical request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WellKnown {
    Jwks,
    AuthorizationServer,
    /// The metadata of the resource at this path (`""`: the whole origin).
    ProtectedResource {
        resource_path: String,
    },
}

/// Which document `path` (canonical) asks for, if any.
pub fn well_known(path: &str) -> Option<WellKnown> {
    match path {
        JWKS_PATH => Some(WellKnown::Jwks),
        AUTHORIZATION_SERVER_PATH => Some(WellKnown::AuthorizationServer),
        _ => {
            let rest = path.strip_prefix(PROTECTED_RESOURCE_PATH)?;
            if rest.is_empty() || rest.starts_with('/') {
                Some(WellKnown::ProtectedResource {
                    resource_path: rest.trim_end_matches('/').to_owned(),
                })
            } else {
                None
            }
        }
    }
}

/// The resource a route protects, as a path: the literal segments of its pattern before the
/// first wildcard or parameter (`/items/{id}` → `/items`, `/**` → ``).
pub fn resource_path(pattern: &str) -> &str {
    let mut end = 0;
    for segment in pattern.split('/').skip(1) {
        if segment.is_empty() || segment.starts_with('{') || segment.contains('*') {
            break;
        }
        end += 1 + segment.len();
    }
    &pattern[..end]
}

/// Whether a route serves some part of the resource at `resource` (a path without a
/// trailing slash; `""` for the origin): its own resource lies inside it, or it is inside the
/// route's resource.
fn serves(route: &Route, resource: &str) -> bool {
    let own = resource_path(&route.pattern);
    within(own, resource) || within(resource, own)
}

/// `path` equals `base` or lies below it, segment-wise.
fn within(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `tokens.issuer` when it can be an RFC 8414 issuer identifier.
pub fn https_issuer(issuer: Option<&str>) -> Option<&str> {
    issuer.filter(|iss| {
        iss.strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#']))
    })
}

/// Every scope some protected route serving `resource` requires, sorted; `None` when no
/// protected route serves it (the resource is unknown here).
pub fn resource_scopes(
    routes: &RouteTable,
    vocabulary: &Vocabulary,
    resource: &str,
) -> Option<Vec<String>> {
    let mut any_protected = false;
    let mut scopes = BTreeSet::new();
    for route in routes.routes().iter().filter(|r| serves(r, resource)) {
        if let Access::Scopes(requirement) = &route.access {
            any_protected = true;
            for id in requirement.all.iter().chain(requirement.any.iter()) {
                scopes.insert(vocabulary.name(id).to_owned());
            }
        }
    }
    any_protected.then(|| scopes.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_by_path() {
        assert_eq!(well_known("/.well-known/jwks.json"), Some(WellKnown::Jwks));
        assert_eq!(
            well_known("/.well-known/oauth-authorization-server"),
            Some(WellKnown::AuthorizationServer)
        );
        assert_eq!(
            well_known("/.well-known/oauth-protected-resource"),
            Some(WellKnown::ProtectedResource {
                resource_path: String::new()
            })
        );
        assert_eq!(
            well_known("/.well-known/oauth-protected-resource/items"),
            Some(WellKnown::ProtectedResource {
                resource_path: "/items".into()
            })
        );
        assert_eq!(well_known("/.well-known/oauth-protected-resourcex"), None);
        assert_eq!(well_known("/.well-known/openid-configuration"), None);
    }

    #[test]
    fn only_https_issuers_have_metadata() {
        assert_eq!(
            https_issuer(Some("https://auth.example")),
            Some("https://auth.example")
        );
        assert_eq!(https_issuer(Some("portcullis")), None);
        assert_eq!(https_issuer(Some("http://auth.example")), None);
        assert_eq!(https_issuer(Some("https://")), None);
        assert_eq!(https_issuer(Some("https://a.example/?x")), None);
        assert_eq!(https_issuer(None), None);
    }

    #[test]
    fn a_route_protects_its_literal_prefix() {
        assert_eq!(resource_path("/items/{id}"), "/items");
        assert_eq!(resource_path("/items/**"), "/items");
        assert_eq!(resource_path("/a/b/*/c"), "/a/b");
        assert_eq!(resource_path("/**"), "");
        assert_eq!(resource_path("/health"), "/health");
        assert!(within("/items", ""));
        assert!(within("/items/x", "/items"));
        assert!(!within("/itemsx", "/items"));
    }
}
