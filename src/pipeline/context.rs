//! What the pipeline knows about a request as it goes: where it came from, its canonical
//! path, the route, the verified identity and the [`Decision`]. Phases fill it in; the
//! access-log line is built from it once, at the end ([`RequestCtx::record`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Method, Request, StatusCode};

use crate::auth::bearer::Identity;
use crate::conn::framing::RawHeads;
use crate::conn::tunnel::TunnelSlot;
use crate::error::Failure;
use crate::forward::trace::TraceContext;
use crate::ops::access_log::AccessRecord;
use crate::ops::span::{Phases, SpanFields};
use crate::policy::cors::CorsPolicy;

/// Where a request came from.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The raw request heads of an HTTP/1 connection, for the facts hyper hides.
    pub heads: Option<Arc<RawHeads>>,
    /// Where an HTTP/1 connection picks up a WebSocket tunnel after the 101.
    pub tunnel: Option<Arc<TunnelSlot>>,
    /// The peer's address as a header value, rendered once per connection.
    pub peer_ip: HeaderValue,
}

impl ConnInfo {
    pub fn new(
        peer: SocketAddr,
        heads: Option<Arc<RawHeads>>,
        tunnel: Option<Arc<TunnelSlot>>,
    ) -> Self {
        let peer_ip = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        ConnInfo {
            peer,
            heads,
            tunnel,
            peer_ip,
        }
    }
}

/// What became of a request, as the access log and the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded to its route's upstream.
    Allow,
    /// Answered by the gateway itself (`OPTIONS *`).
    Local,
    /// A token was issued.
    Login,
    /// A token was revoked.
    Logout,
    /// Refused before routing: bad method, target, Host or framing; or a bad body.
    Reject,
    NoRoute,
    /// The route is `deny`.
    Deny,
    /// No valid token where one was required.
    Unauthenticated,
    /// A valid token without the route's scopes.
    Forbidden,
    UpstreamError,
    LoginFailed,
    RateLimited,
    Busy,
    Error,
}

impl Decision {
    /// The label in logs and the `decision` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Local => "local",
            Decision::Login => "login",
            Decision::Logout => "logout",
            Decision::Reject => "reject",
            Decision::NoRoute => "no_route",
            Decision::Deny => "deny",
            Decision::Unauthenticated => "unauthenticated",
            Decision::Forbidden => "forbidden",
            Decision::UpstreamError => "upstream_error",
            Decision::LoginFailed => "login_failed",
            Decision::RateLimited => "rate_limited",
            Decision::Busy => "busy",
            Decision::Error => "error",
        }
    }
}

impl From<&Failure> for Decision {
    fn from(failure: &Failure) -> Decision {
        match failure {
            Failure::BadTarget(_)
            | Failure::BadRequest(_)
            | Failure::AmbiguousFraming
            | Failure::MethodNotAllowed { .. }
            | Failure::PayloadTooLarge
            | Failure::RequestTimeout => Decision::Reject,
            Failure::NotFound => Decision::NoRoute,
            Failure::Denied => Decision::Deny,
            Failure::MissingToken | Failure::InvalidToken(_) => Decision::Unauthenticated,
            Failure::InsufficientScope { .. }
            | Failure::ClaimConditionFailed { .. }
            | Failure::CorsRefused(_) => Decision::Forbidden,
            Failure::UpstreamUnavailable | Failure::UpstreamTimeout => Decision::UpstreamError,
            Failure::OAuth { .. } | Failure::LockedOut { .. } => Decision::LoginFailed,
            Failure::RateLimited { .. } | Failure::OverRouteLimit { .. } => Decision::RateLimited,
            Failure::Busy | Failure::Saturated { .. } | Failure::StateUnavailable { .. } => {
                Decision::Busy
            }
            Failure::Internal => Decision::Error,
        }
    }
}

/// The request's context, filled in phase by phase. `'s` is the config snapshot's lifetime.
#[derive(Debug)]
pub struct RequestCtx<'s> {
    pub request_id: HeaderValue,
    pub peer: SocketAddr,
    pub method: Method,
    /// Request body size as declared by `Content-Length`.
    pub bytes_in: Option<u64>,
    /// The canonical path (empty until the target was normalised).
    pub path: String,
    /// The matched route's id, or the gateway endpoint's name.
    pub route: &'s str,
    /// The matched route's position in the snapshot's table.
    pub route_index: Option<usize>,
    /// The caller, when a bearer token was verified.
    pub identity: Option<Arc<Identity>>,
    /// The account a login attempt names (no token proves it yet).
    pub login_user: String,
    pub decision: Decision,
    pub upstream_latency: Option<Duration>,
    /// This hop of the request's W3C trace (continued or new).
    pub trace: TraceContext,
    /// When the request reached each phase its span records (empty without `otlp`).
    pub phases: Phases,
    /// `resource_metadata="…"` for the challenge of a refused request (RFC 9728 §5.1).
    pub resource_metadata: Option<String>,
    /// Every answer, failures included, must be uncacheable (the token endpoint, RFC 6749
    /// §5.1).
    pub no_store: bool,
    /// The request's one `Origin` (none when absent or repeated).
    pub origin: Option<HeaderValue>,
    /// The CORS policy the answer is given under: its destination's (a route's own or the
    /// top-level default). `None`: the gateway leaves CORS headers alone.
    pub cors: Option<&'s CorsPolicy>,
}

impl RequestCtx<'_> {
    /// A context for `request`: nothing decided yet.
    pub fn new<B>(request: &Request<B>, peer: SocketAddr, request_id: HeaderValue) -> Self {
        RequestCtx {
            request_id,
            peer,
            method: request.method().clone(),
            bytes_in: request
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            path: String::new(),
            route: "",
            route_index: None,
            identity: None,
            login_user: String::new(),
            decision: Decision::Reject,
            upstream_latency: None,
            trace: TraceContext::for_request(request.headers()),
            phases: Phases::start(),
            resource_metadata: None,
            no_store: false,
            origin: None,
            cors: None,
        }
    }

    /// Who the log names: the verified subject, else the account a login named.
    pub fn user(&self) -> &str {
        match &self.identity {
            Some(identity) => &identity.token.subject,
            None => &self.login_user,
        }
    }

    /// What this request's span says, answered with `status`; `route_pattern` is the
    /// matched route's pattern (empty when none matched).
    pub fn span_fields<'a>(&'a self, status: StatusCode, route_pattern: &'a str) -> SpanFields<'a> {
        SpanFields {
            trace_id: self.trace.trace_id(),
            span_id: self.trace.span_id(),
            parent_span_id: self.trace.parent_id(),
            method: self.method.as_str(),
            path: &self.path,
            route: self.route,
            route_pattern,
            decision: self.decision.label(),
            user: self.user(),
            client: self.peer.ip(),
            status: status.as_u16(),
            request_id: self.request_id.to_str().unwrap_or(""),
        }
    }

    /// The access-log line for this request, answered with `status`; `head` and `total` as in
    /// [`AccessRecord`].
    pub fn record(
        &self,
        status: StatusCode,
        bytes_out: Option<u64>,
        head: Duration,
        total: Duration,
    ) -> AccessRecord<'_> {
        AccessRecord {
            request_id: &self.request_id,
            trace_id: self.trace.trace_id_hex(),
            client: self.peer,
            method: &self.method,
            path: &self.path,
            route: self.route,
            user: self.user(),
            decision: self.decision.label(),
            status,
            upstream_latency: self.upstream_latency,
            bytes_in: self.bytes_in,
            bytes_out,
            head,
            total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_maps_to_the_label_its_status_class_implies() {
        use crate::error::TokenError;
        let cases = [
            (Failure::NotFound, "no_route"),
            (Failure::Denied, "deny"),
            (Failure::MissingToken, "unauthenticated"),
            (
                Failure::InvalidToken(TokenError::Expired),
                "unauthenticated",
            ),
            (
                Failure::InsufficientScope { needed: "x".into() },
                "forbidden",
            ),
            (Failure::UpstreamTimeout, "upstream_error"),
            (Failure::Busy, "busy"),
            (Failure::Internal, "error"),
        ];
        for (failure, label) in cases {
            assert_eq!(Decision::from(&failure).label(), label, "{failure:?}");
        }
    }
}
