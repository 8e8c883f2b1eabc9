//! The gateway's decision for a request, in the order the pipeline takes it: method spelling
//! and refusals, request target, the gateway's own endpoints, the route, then access. The
//! server and `portcullis explain` both call these functions, so `explain` can never tell an
//! operator something the gateway would not do.
//!
//! Pure: no I/O, no clock. Authentication (which tokens are valid) is the caller's business;
//! these functions take its outcome.

use std::borrow::Cow;

use http::header::HeaderValue;
use http::Method;

use crate::error::PathError;
use crate::error::{CorsRefusal, Failure};
use crate::policy::authz::{ScopeSet, Vocabulary};
use crate::policy::cors::CorsPolicy;
use crate::policy::path::{self, split_once_byte};
use crate::policy::routes::{Access, Route, RouteTable};
use crate::policy::well_known::{well_known, WellKnown};

/// The logout endpoint's path (fixed; the login path is configured).
pub const LOGOUT_PATH: &str = "/logout";
/// The RFC 7009 token revocation endpoint's path (fixed).
pub const REVOKE_PATH: &str = "/revoke";

/// Methods the gateway ever forwards, for `Allow` on 405 and `OPTIONS *`.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Where a request goes once its target and method are acceptable.
#[derive(Debug)]
pub enum Destination<'c> {
    /// `OPTIONS *`: answered by the gateway itself.
    OptionsStar,
    /// The login endpoint (POST only).
    Login,
    /// The logout endpoint (POST only).
    Logout,
    /// The token revocation endpoint (POST only).
    Revoke,
    /// A document under `/.well-known/` the gateway publishes (GET and HEAD only).
    WellKnown(WellKnown),
    /// A route, by its position in the table (0-based).
    Route { index: usize, route: &'c Route },
    /// No route matches: 404, never forwarded.
    NoRoute,
}

/// A request's destination and its canonical path (empty for `OPTIONS *`).
#[derive(Debug)]
pub struct Routed<'c> {
    pub destination: Destination<'c>,
    pub path: String,
}

/// Method rules that hold before anything else: a method must be an all-uppercase token (as
/// nginx and gunicorn require: Django and Werkzeug uppercase it, so `delete` would run a
/// DELETE handler while dodging a `methods: [DELETE]` rule); CONNECT and TRACE are never
/// forwarded.
pub fn check_method(method: &Method) -> Result<(), Failure> {
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Failure::BadRequest("method must be an uppercase token"));
    }
    match *method {
        Method::CONNECT | Method::TRACE => Err(Failure::MethodNotAllowed {
            allow: ALLOWED_METHODS,
        }),
        _ => Ok(()),
    }
}

/// Route a request: `host` as [`routing_host`] reduced it, `target_path` the request target's
/// path (no query), as sent; `login_path` is the configured login endpoint. 400/405 for a
/// method or target the gateway refuses.
pub fn route<'c>(
    routes: &'c RouteTable,
    login_path: &str,
    method: &Method,
    host: &str,
    target_path: &str,
) -> Result<Routed<'c>, Failure> {
    check_method(method)?;
    if target_path == "*" {
        return if *method == Method::OPTIONS {
            Ok(Routed {
                destination: Destination::OptionsStar,
                path: String::new(),
            })
        } else {
            Err(Failure::BadTarget(PathError::NotOriginForm))
        };
    }
    let path = path::normalise(target_path)?;
    let destination = if path == login_path {
        Destination::Login
    } else if path == LOGOUT_PATH {
        Destination::Logout
    } else if path == REVOKE_PATH {
        Destination::Revoke
    } else if let Some(document) = well_known(&path) {
        Destination::WellKnown(document)
    } else {
        match routes.find(method, host, &path) {
            Some((index, route)) => Destination::Route { index, route },
            None => Destination::NoRoute,
        }
    };
    Ok(Routed { destination, path })
}

/// Whether the gateway's own endpoints accept `method` (405 with `Allow: POST` otherwise).
pub fn check_endpoint_method(method: &Method) -> Result<(), Failure> {
    if *method == Method::POST {
        Ok(())
    } else {
        Err(Failure::MethodNotAllowed { allow: "POST" })
    }
}

/// Whether the published documents accept `method` (405 with `Allow: GET, HEAD` otherwise).
pub fn check_document_method(method: &Method) -> Result<(), Failure> {
    if *method == Method::GET || *method == Method::HEAD {
        Ok(())
    } else {
        Err(Failure::MethodNotAllowed { allow: "GET, HEAD" })
    }
}

/// Why a request on a matched route is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// The route is `public`: anyone may pass.
    Public,
    /// The caller's token holds the scopes the route requires (and meets its `claims:`).
    ScopesSatisfied,
}

/// THE access decision on a matched route, given the caller's granted scopes (expanded
/// through `implies`) and the claims the route's conditions read, when a valid token was
/// presented: 403 for a `deny` route, 401 without a token where scopes are required, 403
/// `insufficient_scope` when they are not all held, then 403 `access_denied` naming the
/// first `claims:` condition the token fails.
pub fn decide(
    route: &Route,
    granted: Option<&ScopeSet>,
    claims: Option<&serde_json::Value>,
    vocabulary: &Vocabulary,
) -> Result<Permit, Failure> {
    match &route.access {
        Access::Deny => Err(Failure::Denied),
        Access::Public => Ok(Permit::Public),
        Access::Scopes(requirement) => {
            let granted = granted.ok_or(Failure::MissingToken)?;
            requirement
                .check(granted, vocabulary)
                .map_err(|needed| Failure::InsufficientScope { needed })?;
            match route.claims.first_failed(claims) {
                None => Ok(Permit::ScopesSatisfied),
                Some(failed) => Err(Failure::ClaimConditionFailed {
                    condition: failed.description.clone(),
                }),
            }
        }
    }
}

/// The CORS policy answers for `destination` are given under: a route's own (or the default
/// it inherited); for the gateway's endpoints and requests no route serves, the top-level
/// `default`.
pub fn cors_policy<'c>(
    destination: &Destination<'c>,
    default: Option<&'c CorsPolicy>,
) -> Option<&'c CorsPolicy> {
    match destination {
        Destination::Route { route, .. } => route.cors.as_deref(),
        Destination::OptionsStar => None,
        Destination::Login
        | Destination::Logout
        | Destination::Revoke
        | Destination::WellKnown(_)
        | Destination::NoRoute => default,
    }
}

/// A CORS preflight from `origin` for `method` (routed with that method to `destination`)
/// with `request_headers`, under `policy`: the `Access-Control-Allow-Origin` to grant, or
/// 403. Nothing is granted for a request that would not be served: no route, a `deny` route,
/// a method a gateway endpoint does not take.
pub fn preflight(
    destination: &Destination<'_>,
    policy: &CorsPolicy,
    origin: &HeaderValue,
    method: &Method,
    request_headers: Option<&HeaderValue>,
) -> Result<HeaderValue, Failure> {
    let refuse = |why| Err(Failure::CorsRefused(why));
    match destination {
        Destination::Route { route, .. } if route.access == Access::Deny => {
            return refuse(CorsRefusal::Destination)
        }
        Destination::Route { .. } => {}
        Destination::NoRoute | Destination::OptionsStar => return refuse(CorsRefusal::Destination),
        Destination::Login | Destination::Logout | Destination::Revoke => {
            if check_endpoint_method(method).is_err() {
                return refuse(CorsRefusal::Method);
            }
        }
        Destination::WellKnown(_) => {
            if check_document_method(method).is_err() {
                return refuse(CorsRefusal::Method);
            }
        }
    }
    policy
        .check_preflight(origin, method, request_headers)
        .map_err(Failure::CorsRefused)
}

/// The rules a request is decided by: one config generation's routes, login path and scopes.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'c> {
    pub routes: &'c RouteTable,
    pub login_path: &'c str,
    pub vocabulary: &'c Vocabulary,
}

/// A request as an operator describes it (to `explain` or a rule test): no bytes, no token.
#[derive(Debug, Clone, Copy)]
pub struct Described<'a> {
    pub method: &'a Method,
    /// The Host value; `None` matches only rules without `host:` (an HTTP/1.0 request).
    pub host: Option<&'a str>,
    /// The request target (a query is ignored).
    pub target: &'a str,
    /// The caller's scopes, expanded through `implies`; `None` for an anonymous caller.
    pub granted: Option<&'a ScopeSet>,
    /// The caller's token claims, for the routes' `claims:` conditions.
    pub claims: Option<&'a serde_json::Value>,
}

/// Where a described request goes and what is answered, step by step.
#[derive(Debug)]
pub struct Verdict<'c> {
    /// The canonical path, when the target was acceptable.
    pub path: Option<String>,
    pub destination: Option<Destination<'c>>,
    /// `Ok` when the request is served: forwarded with a [`Permit`], or answered by one of the
    /// gateway's endpoints (`None`).
    pub outcome: Result<Option<Permit>, Failure>,
}

/// Decide a described request with the same functions the server runs, in its order. Only
/// authentication is the caller's: `granted` says what a valid token would grant.
pub fn evaluate<'c>(rules: Rules<'c>, request: Described<'_>) -> Verdict<'c> {
    let mut verdict = Verdict {
        path: None,
        destination: None,
        outcome: Ok(None),
    };
    let host = match request.host.map(routing_host).transpose() {
        Ok(host) => host.unwrap_or_default(),
        Err(failure) => {
            verdict.outcome = Err(failure);
            return verdict;
        }
    };
    let target = request.target.split('?').next().unwrap_or(request.target);
    let routed = match route(
        rules.routes,
        rules.login_path,
        request.method,
        &host,
        target,
    ) {
        Ok(routed) => routed,
        Err(failure) => {
            verdict.outcome = Err(failure);
            return verdict;
        }
    };
    verdict.path = Some(routed.path);
    verdict.outcome = match &routed.destination {
        Destination::OptionsStar => Ok(None),
        Destination::Login | Destination::Logout | Destination::Revoke => {
            check_endpoint_method(request.method).map(|()| None)
        }
        Destination::WellKnown(_) => check_document_method(request.method).map(|()| None),
        Destination::NoRoute => Err(Failure::NotFound),
        Destination::Route { route, .. } => {
            decide(route, request.granted, request.claims, rules.vocabulary).map(Some)
        }
    };
    verdict.destination = Some(routed.destination);
    verdict
}

/// Validate a Host value (RFC 9110 §7.2: uri-host [":" port]) and reduce it to what route
/// `host:` rules compare against: lowercase, without port or trailing dot.
pub fn routing_host(host: &str) -> Result<Cow<'_, str>, Failure> {
    const BAD: Failure = Failure::BadRequest("invalid Host header");
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(BAD)?;
        if inside.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(BAD);
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(BAD)?),
        };
        (&host[..inside.len() + 2], port)
    } else {
        match split_once_byte(host, b':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BAD);
        }
    }
    let valid = |b: u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'[' | b']' | b':')
    };
    if name.is_empty() || !name.bytes().all(valid) {
        return Err(BAD);
    }
    let name = name.trim_end_matches('.');
    // Copy only when the client's spelling is not already the canonical one.
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Ok(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_host_normalises_and_rejects_bad_values() {
        assert_eq!(routing_host("GW.Test:443").ok().as_deref(), Some("gw.test"));
        assert_eq!(routing_host("gw.test.").ok().as_deref(), Some("gw.test"));
        assert_eq!(routing_host("[::1]:8443").ok().as_deref(), Some("[::1]"));
        assert_eq!(routing_host("[::1]").ok().as_deref(), Some("[::1]"));
        for bad in [
            "gw.test@evil.test",
            "gw.test:80:80",
            "gw.test/x",
            "gw.test:",
            "gw test",
            "[zz]",
            "[::1]x",
            "",
        ] {
            assert!(routing_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_must_be_uppercase_and_never_connect_or_trace() {
        for ok in ["GET", "DELETE", "M-SEARCH", "PROPFIND"] {
            assert!(
                check_method(&ok.parse().unwrap_or_default()).is_ok(),
                "{ok}"
            );
        }
        for bad in ["get", "Delete", "tRACE", "propfind"] {
            let method = Method::from_bytes(bad.as_bytes()).unwrap_or_default();
            assert!(
                matches!(check_method(&method), Err(Failure::BadRequest(_))),
                "{bad}"
            );
        }
        for refused in [Method::CONNECT, Method::TRACE] {
            assert!(matches!(
                check_method(&refused),
                Err(Failure::MethodNotAllowed { .. })
            ));
        }
    }
}
