//! Every way a request can fail, and the ONE place a failure becomes a status, headers and a
//! JSON body. Call sites pick a variant; they never pick a status code.
//!
//! The reasons the lower layers give ([`PathError`] from `policy::path`, [`TokenError`] from
//! `auth::jwt`) are defined here too, at the bottom of the module graph, so [`Failure`] can
//! carry them and `policy` and `auth` can return it without an import circle.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;

/// IETF `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// `WWW-Authenticate` realm, as SPEC fixes it.
const REALM: &str = "portcullis";

/// Why a request was not (fully) served.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("bad request target: {0}")]
    BadTarget(#[from] PathError),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Ambiguous framing (RFC 9112 §6.1): refuse and close the connection.
    #[error("request has both Content-Length and Transfer-Encoding")]
    AmbiguousFraming,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("no route matches")]
    NotFound,
    #[error("route denies all access")]
    Denied,
    #[error("bearer token required")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(#[from] TokenError),
    #[error("insufficient scope")]
    InsufficientScope { needed: String },
    /// The token holds the route's scopes but fails one of its `claims:` conditions.
    #[error("claim condition failed")]
    ClaimConditionFailed {
        /// The condition as configured (`org.id equals 42`), never the token's value.
        condition: Arc<str>,
    },
    /// A CORS preflight the gateway answers without granting anything.
    #[error("CORS preflight refused: {0}")]
    CorsRefused(CorsRefusal),
    #[error("request body too large")]
    PayloadTooLarge,
    /// The client was too slow delivering its request body.
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// A token-endpoint error (RFC 6749 §5.2): always 400, with the OAuth error code.
    #[error("oauth error {error}")]
    OAuth {
        error: &'static str,
        description: &'static str,
    },
    #[error("too many attempts")]
    LockedOut { retry_after_secs: u64 },
    /// This identity has used up an allowance (e.g. live revocations) for now.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// A route's `rate_limit:` refused this caller: the IETF `RateLimit-Policy` and
    /// `RateLimit` values travel with it.
    #[error("route rate limit exceeded")]
    OverRouteLimit {
        retry_after_secs: u64,
        policy: HeaderValue,
        state: HeaderValue,
    },
    #[error("server busy")]
    Busy,
    /// A bounded table (e.g. login regulation) is full and cannot take this request safely.
    #[error("at capacity")]
    Saturated { retry_after_secs: u64 },
    /// The shared state (Redis) cannot be reached and this endpoint fails closed.
    #[error("shared state unavailable")]
    StateUnavailable { retry_after_secs: u64 },
    #[error("internal error")]
    Internal,
}

impl Failure {
    /// The status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::BadTarget(_)
            | Failure::BadRequest(_)
            | Failure::AmbiguousFraming
            | Failure::OAuth { .. } => StatusCode::BAD_REQUEST,
            Failure::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Failure::NotFound => StatusCode::NOT_FOUND,
            Failure::Denied
            | Failure::InsufficientScope { .. }
            | Failure::ClaimConditionFailed { .. }
            | Failure::CorsRefused(_) => StatusCode::FORBIDDEN,
            Failure::MissingToken | Failure::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Failure::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Failure::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Failure::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::LockedOut { .. }
            | Failure::RateLimited { .. }
            | Failure::OverRouteLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            Failure::Busy | Failure::Saturated { .. } | Failure::StateUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error_description` the client is sent.
    pub fn description(&self) -> String {
        self.code_and_description().1
    }

    /// OAuth/RFC 6750 error code and a client-safe description (never echoes input).
    fn code_and_description(&self) -> (&'static str, String) {
        match self {
            Failure::BadTarget(e) => ("invalid_request", e.to_string()),
            Failure::BadRequest(why) => ("invalid_request", (*why).to_owned()),
            Failure::AmbiguousFraming => (
                "invalid_request",
                "both Content-Length and Transfer-Encoding".to_owned(),
            ),
            Failure::MethodNotAllowed { .. } => {
                ("method_not_allowed", "method not allowed".to_owned())
            }
            Failure::NotFound => ("not_found", "no route matches this request".to_owned()),
            Failure::Denied => ("access_denied", "this route is closed".to_owned()),
            Failure::MissingToken => ("unauthorized", "a bearer token is required".to_owned()),
            Failure::InvalidToken(e) => ("invalid_token", e.to_string()),
            Failure::InsufficientScope { needed } => {
                ("insufficient_scope", format!("requires scope: {needed}"))
            }
            Failure::ClaimConditionFailed { condition } => (
                "access_denied",
                format!("claim condition failed: {condition}"),
            ),
            Failure::CorsRefused(why) => {
                ("access_denied", format!("CORS preflight refused: {why}"))
            }
            Failure::PayloadTooLarge => ("invalid_request", "request body too large".to_owned()),
            Failure::RequestTimeout => (
                "request_timeout",
                "the request body was not received in time".to_owned(),
            ),
            Failure::UpstreamUnavailable => (
                "bad_gateway",
                "the upstream could not be reached".to_owned(),
            ),
            Failure::UpstreamTimeout => (
                "gateway_timeout",
                "the upstream did not answer in time".to_owned(),
            ),
            Failure::OAuth { error, description } => (error, (*description).to_owned()),
            Failure::LockedOut { .. } => (
                "too_many_attempts",
                "too many failed attempts; try again later".to_owned(),
            ),
            Failure::RateLimited { .. } => (
                "too_many_requests",
                "too many requests for this account; try again later".to_owned(),
            ),
            Failure::OverRouteLimit { .. } => (
                "too_many_requests",
                "rate limit exceeded; retry after the time in Retry-After".to_owned(),
            ),
            Failure::Busy => (
                "temporarily_unavailable",
                "the server is busy; try again".to_owned(),
            ),
            Failure::Saturated { .. } => (
                "temporarily_unavailable",
                "the server is at capacity; try again later".to_owned(),
            ),
            Failure::StateUnavailable { .. } => (
                "temporarily_unavailable",
                "session state is unavailable; try again shortly".to_owned(),
            ),
            Failure::Internal => ("server_error", "internal error".to_owned()),
        }
    }

    /// Render the failure. The only function that turns a failure into a response.
    pub fn into_response(self) -> Response<ResponseBody> {
        let (code, description) = self.code_and_description();
        let body =
            serde_json::json!({ "error": code, "error_description": description }).to_string();
        let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            // A failed claim condition has no RFC 6750 error code (`insufficient_scope` is for
            // scopes): a plain challenge, to which `resource_metadata` is appended.
            Failure::MissingToken | Failure::ClaimConditionFailed { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="portcullis""#),
                );
            }
            Failure::InvalidToken(_) | Failure::InsufficientScope { .. } => {
                let value = match &self {
                    Failure::InsufficientScope { needed } => {
                        format!(
                            r#"Bearer realm="{REALM}", error="insufficient_scope", scope="{needed}""#
                        )
                    }
                    _ => format!(
                        r#"Bearer realm="{REALM}", error="invalid_token", error_description="{description}""#
                    ),
                };
                // Scope names and descriptions are validated printable ASCII without quotes.
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Failure::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Failure::CorsRefused(_) => {
                headers.insert(
                    header::VARY,
                    HeaderValue::from_static(
                        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                    ),
                );
            }
            Failure::AmbiguousFraming
            | Failure::BadRequest(_)
            | Failure::BadTarget(_)
            | Failure::PayloadTooLarge
            | Failure::RequestTimeout => {
                // Whatever follows on this connection can no longer be trusted to be framed
                // the way we think it is, or is the rest of a body nobody will read.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Failure::LockedOut { retry_after_secs }
            | Failure::Saturated { retry_after_secs }
            | Failure::StateUnavailable { retry_after_secs }
            | Failure::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Failure::OverRouteLimit {
                retry_after_secs,
                policy,
                state,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                headers.insert(RATELIMIT_POLICY, policy.clone());
                headers.insert(RATELIMIT, state.clone());
            }
            Failure::Busy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if matches!(
            self,
            Failure::OAuth { .. }
                | Failure::LockedOut { .. }
                | Failure::Busy
                | Failure::Saturated { .. }
                | Failure::StateUnavailable { .. }
                | Failure::RateLimited { .. }
        ) {
            no_store(headers);
        }
        response
    }
}

/// RFC 6749 §5.1: token responses (and their errors) must not be cached.
pub fn no_store(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Why a CORS preflight gets no grant. `Display` is the fixed client-facing reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorsRefusal {
    #[error("origin not allowed")]
    Origin,
    #[error("method not allowed")]
    Method,
    #[error("request headers not allowed")]
    Headers,
    /// No route would serve the request, or its route is `deny: true`.
    #[error("no route allows this request")]
    Destination,
}

/// Why a request target was refused (always a 400 to the client).
///
/// Messages are client-safe and never echo the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotOriginForm,
    #[error("malformed percent-encoding in path")]
    BadPercentEncoding,
    #[error("encoded slash in path")]
    EncodedSlash,
    #[error("backslash in path")]
    Backslash,
    #[error("semicolon in path")]
    Semicolon,
    #[error("fragment in path")]
    Fragment,
    #[error("control character in path")]
    ControlChar,
    /// Raw space or raw `?`: hyper never hands these over in a path, and
    /// forwarding them would let upstream re-split the target.
    #[error("invalid character in path")]
    InvalidChar,
    #[error("non-ascii byte in path")]
    NonAscii,
    #[error("invalid utf-8 in encoded path")]
    InvalidUtf8,
}

/// Why a token was not issued or not accepted. `Display` is a short, client-safe
/// `error_description`: it never contains token content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// The header's `kid` names no key this issuer has (or published, for external issuers).
    #[error("unknown signing key")]
    UnknownKey,
    /// The token's `iss` names no issuer this gateway trusts (or none this route accepts).
    #[error("untrusted issuer")]
    UntrustedIssuer,
    #[error("invalid signature")]
    InvalidSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    /// Valid for longer than `ttl` (+ leeway): the gateway never issues such a token.
    #[error("lifetime longer than the maximum")]
    LifetimeTooLong,
    /// Issued longer ago than `ttl` (+ leeway).
    #[error("issued too long ago")]
    TooOld,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    /// Carries only one of our own fixed claim names.
    #[error("missing claim: {0}")]
    MissingClaim(&'static str),
    #[error("unsupported critical header")]
    CriticalHeader,
    #[error("unsupported key reference header")]
    KeyReferenceHeader,
    #[error("unexpected token type")]
    UnexpectedType,
    #[error("invalid subject")]
    InvalidSubject,
    #[error("invalid scope")]
    InvalidScope,
    /// Not produced here: for callers that consult a revocation list.
    #[error("token revoked")]
    Revoked,
    /// The subject is not (or no longer) in the user store.
    #[error("user no longer exists")]
    UnknownUser,
    /// The user is `disabled: true`.
    #[error("user disabled")]
    UserDisabled,
    /// Issued before the user's password last changed.
    #[error("credentials changed since the token was issued")]
    CredentialsChanged,
    /// Issuing failed on our side (e.g. time overflow); not the client's fault.
    #[error("internal error")]
    Internal,
}
