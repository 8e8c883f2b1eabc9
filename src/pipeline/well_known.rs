//! The documents the gateway publishes under `/.well-known/`, without a token: the local key
//! ring's JWK Set, RFC 8414 authorization-server metadata and RFC 9728 protected-resource
//! metadata. Also the `resource_metadata` pointer 401 and 403 answers carry (RFC 9728 §5.1).
//!
//! Clients fetch these rarely and cache them, so they are rendered per request from the
//! snapshot rather than kept.

use http::header::{self, HeaderValue};
use http::{Request, Response};
use serde_json::json;

use crate::body::ResponseBody;
use crate::error::Failure;
use crate::policy::decision::REVOKE_PATH;
use crate::policy::well_known::{
    https_issuer, resource_path, resource_scopes, WellKnown, JWKS_PATH, PROTECTED_RESOURCE_PATH,
};
use crate::state::Snapshot;

/// How long clients may cache the documents. Short enough that a `next` key published by a
/// reload reaches verifiers well before a later reload makes it sign.
const MAX_AGE: &str = "public, max-age=300";

/// Serve `document` to `request` (GET or HEAD, checked by routing).
pub fn serve<B>(
    snapshot: &Snapshot,
    document: &WellKnown,
    request: &Request<B>,
) -> Result<Response<ResponseBody>, Failure> {
    let body = match document {
        // External issuers' keys are theirs to publish; only the local ring is listed.
        WellKnown::Jwks => snapshot.keys.ring().jwks(),
        WellKnown::AuthorizationServer => {
            authorization_server(snapshot).ok_or(Failure::NotFound)?
        }
        WellKnown::ProtectedResource { resource_path } => {
            let origin = origin(request).ok_or(Failure::NotFound)?;
            protected_resource(snapshot, &origin, resource_path).ok_or(Failure::NotFound)?
        }
    };
    let mut response = Response::new(ResponseBody::full(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(match document {
            WellKnown::Jwks => "application/jwk-set+json",
            _ => "application/json",
        }),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(MAX_AGE));
    Ok(response)
}

/// RFC 8414 metadata. Only an `https://` issuer has any (the document's URLs derive from it).
fn authorization_server(snapshot: &Snapshot) -> Option<String> {
    let config = &snapshot.config;
    let issuer = https_issuer(config.tokens.issuer.as_deref())?;
    let base = issuer.trim_end_matches('/');
    let grants: &[&str] = if config.refresh.is_some() {
        &["password", "refresh_token"]
    } else {
        &["password"]
    };
    Some(
        json!({
            "issuer": issuer,
            "token_endpoint": format!("{base}{}", config.login.path),
            "jwks_uri": format!("{base}{JWKS_PATH}"),
            "revocation_endpoint": format!("{base}{REVOKE_PATH}"),
            "revocation_endpoint_auth_methods_supported": ["none"],
            "grant_types_supported": grants,
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": config.vocabulary.names().collect::<Vec<_>>(),
        })
        .to_string(),
    )
}

/// RFC 9728 metadata of the resource at `resource` on `origin`; `None` when no protected
/// route serves it.
fn protected_resource(snapshot: &Snapshot, origin: &str, resource: &str) -> Option<String> {
    let config = &snapshot.config;
    let scopes = resource_scopes(&config.routes, &config.vocabulary, resource)?;
    let servers: Vec<&str> = https_issuer(config.tokens.issuer.as_deref())
        .into_iter()
        .chain(config.issuers.iter().map(|i| i.policy.issuer.as_str()))
        .collect();
    Some(
        json!({
            "resource": format!("{origin}{resource}"),
            "authorization_servers": servers,
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": "portcullis",
        })
        .to_string(),
    )
}

/// `https://authority` as the client addressed us (Host was validated by hygiene).
fn origin<B>(request: &Request<B>) -> Option<String> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request.headers().get(header::HOST)?.to_str().ok()?,
    };
    Some(format!("https://{authority}"))
}

/// `resource_metadata="…"` for the challenge of a refused request on `pattern`'s route.
pub fn resource_metadata<B>(request: &Request<B>, pattern: &str) -> Option<String> {
    let origin = origin(request)?;
    Some(format!(
        r#"resource_metadata="{origin}{PROTECTED_RESOURCE_PATH}{}""#,
        resource_path(pattern)
    ))
}

/// Append `parameter` (`resource_metadata="…"`) to the response's Bearer challenge, if any.
pub fn add_to_challenge(response: &mut Response<ResponseBody>, parameter: &str) {
    let headers = response.headers_mut();
    let Some(challenge) = headers.get(header::WWW_AUTHENTICATE) else {
        return;
    };
    let Ok(challenge) = challenge.to_str() else {
        return;
    };
    // `Bearer realm="…"` gains `, param`; the value is printable ASCII without quotes.
    if let Ok(value) = HeaderValue::from_str(&format!("{challenge}, {parameter}")) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_gains_the_parameter() {
        let mut response = Response::new(ResponseBody::empty());
        add_to_challenge(&mut response, r#"resource_metadata="https://h/x""#);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="portcullis""#),
        );
        add_to_challenge(&mut response, r#"resource_metadata="https://h/x""#);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="portcullis", resource_metadata="https://h/x""#
        );
    }
}
