//! The request pipeline, one small function per phase:
//! snapshot → hygiene → normalise target (400) → gateway endpoint? → match route (404) →
//! authenticate bearer (401) → authorise scopes (403) → build upstream request → forward
//! (502/504) → access log.
//!
//! [`handle`] is the only function hyper calls; it never returns `Err`: every failure is
//! rendered by [`Failure::into_response`].

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::access_log::AccessRecord;
use crate::auth::bearer::{authenticate, Identity};
use crate::auth::jwt::TokenError;
use crate::auth::login;
use crate::body::ResponseBody;
use crate::config::{Upstream, UpstreamTarget};
use crate::decision::{self, Destination};
use crate::error::Failure;
use crate::framing::RawHeads;
use crate::headers::{
    self, FORWARDED_FOR, FORWARDED_HOST, FORWARDED_PROTO, FORWARDED_SCOPES, FORWARDED_USER,
    REQUEST_ID,
};
use crate::request_body::{BodyLimits, GuardedBody};
use crate::routes::{Access, Route};
use crate::state::{Shared, Snapshot};
use crate::tunnel::{PendingTunnel, TunnelSlot};
use crate::{echo, path, proxy};

/// Where a request came from.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The raw request heads of an HTTP/1 connection, for the facts hyper hides.
    pub heads: Option<Arc<RawHeads>>,
    /// Where an HTTP/1 connection picks up a WebSocket tunnel after the 101.
    pub tunnel: Option<Arc<TunnelSlot>>,
}

/// Serve one request. Never fails: errors become responses here.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let snapshot = shared.snapshot();
    let request_id = headers::request_id(request.headers());
    let mut record = AccessRecord::start(&request, conn.peer, &request_id);
    let mut response =
        match pipeline(&shared, &snapshot, conn, request, &request_id, &mut record).await {
            Ok(response) => response,
            Err(failure) => {
                record.decision = failure.decision();
                if matches!(failure, Failure::Internal) {
                    tracing::error!(request_id = ?request_id, "internal error");
                }
                failure.into_response()
            }
        };
    response.headers_mut().insert(REQUEST_ID, request_id);
    let bytes_out = http_body::Body::size_hint(response.body()).exact();
    record.finish(&shared.metrics, response.status(), bytes_out, started);
    Ok(response)
}

async fn pipeline<'s>(
    shared: &Shared,
    snapshot: &'s Snapshot,
    conn: ConnInfo,
    request: Request<Incoming>,
    request_id: &HeaderValue,
    record: &mut AccessRecord<'s>,
) -> Result<Response<ResponseBody>, Failure> {
    let host = check_hygiene(&request, &conn)?;
    check_target_form(&request)?;
    let config = &snapshot.config;
    let routed = decision::route(config, request.method(), &host, request.uri().path())?;
    // `host` may borrow the request, which is moved below.
    drop(host);
    // The record owns the canonical path; the pipeline borrows it from there.
    record.path = routed.path;
    let route = match routed.destination {
        Destination::OptionsStar => {
            record.decision = "local";
            return Ok(options_star());
        }
        Destination::Login => return login::login(shared, snapshot, conn, request, record).await,
        Destination::Logout => return login::logout(shared, snapshot, request, record).await,
        Destination::NoRoute => return Err(Failure::NotFound),
        Destination::Route { route, .. } => route,
    };
    record.route = &route.id;
    let path = record.path.as_str();
    let identity = decide(shared, snapshot, route, request.headers())?;
    record.decision = "allow";
    if let Some(identity) = &identity {
        record.user.clone_from(&identity.token.subject);
    }
    let upstream = route
        .upstream
        .as_ref()
        .and_then(|name| config.upstreams.get(name))
        .ok_or(Failure::Internal)?;
    // Limits the client's body on its way through: 413 now if its declared length is already
    // too large, 408/413 mid-stream otherwise.
    let body_limits = BodyLimits::for_route(&config.limits, route.max_body_size);
    body_limits.check_declared(request.body())?;
    let request = request.map(|body| GuardedBody::new(body, body_limits));
    let upstream_request = build_upstream_request(
        snapshot,
        &conn,
        upstream,
        request,
        path,
        identity.as_ref(),
        request_id,
    )?;
    let mut response = send(upstream, upstream_request, record).await?;
    if let Some(tunnel) = response.extensions_mut().remove::<PendingTunnel>() {
        // Only HTTP/1 connections carry tunnels; what follows on them is not HTTP/1.
        let slot = conn.tunnel.as_ref().ok_or(Failure::UpstreamUnavailable)?;
        slot.put(tunnel);
        if let Some(heads) = &conn.heads {
            heads.switch_protocols();
        }
    }
    Ok(response)
}

/// Request hygiene that hyper leaves to us (SPEC "Request hygiene"). Returns the host used
/// for routing: lowercase, without port or trailing dot.
fn check_hygiene<'r, B>(request: &'r Request<B>, conn: &ConnInfo) -> Result<Cow<'r, str>, Failure> {
    // First, for every HTTP/1 request: each takes its own head's facts, in order.
    if let Some(heads) = &conn.heads {
        check_raw_head(heads, request)?;
    }
    decision::check_method(request.method())?;
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Failure::BadRequest("duplicate Host header"));
    }
    let authority = request.uri().authority().map(|a| a.as_str());
    let host = match (request.version(), host_header, authority) {
        (Version::HTTP_2 | Version::HTTP_3, Some(h), Some(a)) if h.as_bytes() != a.as_bytes() => {
            return Err(Failure::BadRequest("host header differs from :authority"))
        }
        (Version::HTTP_2 | Version::HTTP_3, _, Some(a)) => a,
        (Version::HTTP_2 | Version::HTTP_3, Some(h), None) => h
            .to_str()
            .map_err(|_| Failure::BadRequest("invalid Host header"))?,
        (_, _, Some(_)) => return Err(Failure::BadTarget(path::PathError::NotOriginForm)),
        (_, Some(h), None) => h
            .to_str()
            .map_err(|_| Failure::BadRequest("invalid Host header"))?,
        // HTTP/1.0 may omit Host; it then matches only rules without `host:`.
        (Version::HTTP_10 | Version::HTTP_09, None, None) => return Ok(Cow::Borrowed("")),
        (_, None, None) => return Err(Failure::BadRequest("missing Host header")),
    };
    decision::routing_host(host)
}

/// Framing facts hyper hides (SPEC "Request hygiene"): `Content-Length` with
/// `Transfer-Encoding`, and a raw `#` in the target.
fn check_raw_head<B>(heads: &RawHeads, request: &Request<B>) -> Result<(), Failure> {
    let path_and_query = request.uri().path_and_query().map(|pq| pq.as_str());
    let facts = heads
        .take(request.method().as_str(), path_and_query)
        // The scanner lost step with hyper: refuse rather than judge by another head.
        .ok_or(Failure::AmbiguousFraming)?;
    if facts.ambiguous_framing {
        return Err(Failure::AmbiguousFraming);
    }
    if facts.fragment {
        return Err(Failure::BadTarget(path::PathError::Fragment));
    }
    Ok(())
}

/// HTTP/2 always carries :scheme and :authority; in HTTP/1 they mean absolute-form, which
/// the gateway refuses (SPEC "Normalisation").
fn check_target_form<B>(request: &Request<B>) -> Result<(), Failure> {
    let uri = request.uri();
    let is_h1 = request.version() < Version::HTTP_2;
    if is_h1 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(Failure::BadTarget(path::PathError::NotOriginForm));
    }
    Ok(())
}

fn options_star() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static(decision::ALLOWED_METHODS),
    );
    response
}

/// Authenticate and authorise against the matched route. `Ok(None)` = anonymous but allowed.
fn decide(
    shared: &Shared,
    snapshot: &Snapshot,
    route: &Route,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<Identity>>, Failure> {
    let identity = match &route.access {
        Access::Deny => None,
        // A valid token on a public route still identifies the caller; an invalid one is ignored.
        Access::Public => authenticate(shared, snapshot, headers, unix_now())
            .ok()
            .flatten(),
        Access::Scopes(_) => authenticate(shared, snapshot, headers, unix_now())?,
    };
    decision::authorise(
        &snapshot.config,
        route,
        identity.as_ref().map(|identity| &identity.granted),
    )?;
    Ok(identity)
}

/// Seconds since the Unix epoch (token times).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Rebuild the request for the upstream: canonical path, stripped client headers, then the
/// gateway's own forwarding and identity headers.
fn build_upstream_request(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    upstream: &Upstream,
    request: Request<GuardedBody>,
    path: &str,
    identity: Option<&Arc<Identity>>,
    request_id: &HeaderValue,
) -> Result<Request<GuardedBody>, Failure> {
    let (mut parts, body) = request.into_parts();
    let websocket = is_websocket_upgrade(&parts);
    let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let peer_trusted = snapshot.config.is_trusted_proxy(conn.peer.ip());
    let xff = headers::forwarded_for(&parts.headers, conn.peer.ip(), peer_trusted);
    let authorization = parts.headers.remove(header::AUTHORIZATION);

    headers::strip_request(&mut parts.headers);

    let h = &mut parts.headers;
    if let Some(host) = &client_host {
        h.insert(header::HOST, host.clone());
        h.insert(FORWARDED_HOST, host.clone());
    }
    h.insert(
        FORWARDED_FOR,
        HeaderValue::from_str(&xff).map_err(|_| Failure::Internal)?,
    );
    h.insert(FORWARDED_PROTO, HeaderValue::from_static("https"));
    // The same id the client gets back, so logs on both sides can be joined.
    h.insert(REQUEST_ID, request_id.clone());
    if let Some(identity) = identity {
        // The subject was checked for control characters and length when the token was verified.
        let user = HeaderValue::from_str(&identity.token.subject)
            .map_err(|_| Failure::InvalidToken(TokenError::InvalidSubject))?;
        h.insert(FORWARDED_USER, user);
        if let Ok(scopes) = HeaderValue::from_str(&identity.scopes_header) {
            h.insert(FORWARDED_SCOPES, scopes);
        }
    }
    // Only the credential the gateway accepted: on a public route a revoked, expired or forged
    // token (or any non-bearer credential) was ignored, so it must not reach the upstream.
    if let (true, Some(_), Some(authorization)) = (upstream.pass_token, identity, authorization) {
        h.insert(header::AUTHORIZATION, authorization);
    }
    if websocket {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }

    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let path_and_query = PathAndQuery::try_from(path_and_query).map_err(|_| Failure::Internal)?;
    parts.uri = match &upstream.target {
        UpstreamTarget::Http { scheme, authority } => Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| Failure::Internal)?,
        UpstreamTarget::Echo => Uri::from(path_and_query),
    };
    // Upstreams speak HTTP/1.1; the client's h2 framing ends at the gateway.
    if parts.version >= Version::HTTP_2 {
        headers::join_cookie_fields(&mut parts.headers).map_err(|_| Failure::Internal)?;
    }
    parts.version = Version::HTTP_11;
    Ok(Request::from_parts(parts, body))
}

/// An HTTP/1.1 WebSocket handshake (RFC 6455 §4.1). Other upgrades (h2c) are never forwarded.
fn is_websocket_upgrade(parts: &http::request::Parts) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    parts.version == Version::HTTP_11
        && parts.method == Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
}

/// Forward and turn the upstream's answer into the client's response.
async fn send(
    upstream: &Upstream,
    mut request: Request<GuardedBody>,
    record: &mut AccessRecord<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    if upstream.target == UpstreamTarget::Echo {
        return Ok(echo::respond(&request));
    }
    let client_upgrade = request
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut request));
    // The Host the client used, kept on the upstream request: the origin its redirects name.
    let client_host = request.headers().get(header::HOST).cloned();
    let started = Instant::now();
    let result = proxy::forward(upstream, request).await;
    record.upstream_latency = Some(started.elapsed());
    let mut response = result?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(Failure::UpstreamUnavailable);
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        // The connection runs it once hyper has released both sides (see `pipeline`).
        parts
            .extensions
            .insert(PendingTunnel::new(client_upgrade, upstream_upgrade));
        return Ok(Response::from_parts(parts, ResponseBody::empty()));
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_response(&mut parts.headers);
    if let Some(client_host) = &client_host {
        proxy::rewrite_upstream_urls(&mut parts.headers, &upstream.target, client_host);
    }
    Ok(Response::from_parts(parts, ResponseBody::Stream(body)))
}
