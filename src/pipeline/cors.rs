//! CORS on the wire: recognising a preflight, the gateway's answer to one it grants, and the
//! headers every other answer carries under a policy — the gateway's own 401/403/429 as much
//! as the upstream's responses, whose CORS headers the gateway replaces.
//!
//! A request without `Origin` costs a few header removals and no allocation.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::ResponseBody;
use crate::policy::cors::{CorsPolicy, PREFLIGHT_VARY};
use crate::policy::decision;

/// The response headers the gateway owns on a route under a CORS policy: an upstream's
/// copies are removed, so they are replaced rather than doubled.
const OWNED: [header::HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// The request's `Origin`, when it sent exactly one.
pub fn origin(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let first = values.next()?;
    values.next().is_none().then(|| first.clone())
}

/// `Some` for a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`):
/// the method it asks about, or `None` inside when that is no method the gateway forwards.
pub fn requested_method<B>(request: &Request<B>) -> Option<Option<Method>> {
    let headers = request.headers();
    if request.method() != Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    let requested = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Some(
        Method::from_bytes(requested.as_bytes())
            .ok()
            .filter(|m| decision::check_method(m).is_ok()),
    )
}

/// The answer to a granted preflight: 204, nothing forwarded.
pub fn grant(policy: &CorsPolicy, allow_origin: HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, policy.allow_methods());
    if let Some(value) = policy.allow_headers() {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
    }
    if let Some(value) = policy.max_age() {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, value);
    }
    if let Some(value) = policy.allow_credentials() {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, value);
    }
    headers.insert(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
    response
}

/// Put `policy`'s headers on an answer to a request from `origin` (none: a same-origin or
/// non-browser request): the upstream's CORS headers go; a granted origin gets
/// `Access-Control-Allow-Origin`, the exposed headers and, when configured, credentials; any
/// origin gets `Vary: Origin`, since the answer depends on it.
pub fn apply(policy: &CorsPolicy, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    for name in OWNED {
        headers.remove(name);
    }
    let Some(origin) = origin else {
        return;
    };
    add_vary_origin(headers);
    let Some(allow_origin) = policy.allow_origin(origin) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        policy.expose_headers(),
    );
    if let Some(value) = policy.allow_credentials() {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, value);
    }
}

/// `Vary: Origin`, added to whatever the upstream varies on (once).
fn add_vary_origin(headers: &mut HeaderMap) {
    let already = headers.get_all(header::VARY).iter().any(|value| {
        value.to_str().is_ok_and(|list| {
            list.split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("origin") || v.trim() == "*")
        })
    });
    if !already {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_origin_is_added_once_next_to_the_upstreams_values() {
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        add_vary_origin(&mut headers);
        add_vary_origin(&mut headers);
        let values: Vec<_> = headers.get_all(header::VARY).iter().collect();
        assert_eq!(values, ["Accept-Encoding", "Origin"]);
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("accept, ORIGIN"));
        add_vary_origin(&mut headers);
        assert_eq!(headers.get_all(header::VARY).iter().count(), 1);
    }

    #[test]
    fn only_options_with_origin_and_a_requested_method_is_a_preflight() {
        let request = |method: &str, headers: &[(&str, &str)]| {
            let mut builder = Request::builder().method(method).uri("/x");
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(()).expect("request")
        };
        let origin = ("origin", "https://app.example");
        let put = ("access-control-request-method", "PUT");
        assert_eq!(
            requested_method(&request("OPTIONS", &[origin, put])),
            Some(Some(Method::PUT))
        );
        assert_eq!(requested_method(&request("OPTIONS", &[origin])), None);
        assert_eq!(requested_method(&request("OPTIONS", &[put])), None);
        assert_eq!(requested_method(&request("GET", &[origin, put])), None);
        let lower = ("access-control-request-method", "put");
        assert_eq!(
            requested_method(&request("OPTIONS", &[origin, lower])),
            Some(None)
        );
        let trace = ("access-control-request-method", "TRACE");
        assert_eq!(
            requested_method(&request("OPTIONS", &[origin, trace])),
            Some(None)
        );
    }
}
