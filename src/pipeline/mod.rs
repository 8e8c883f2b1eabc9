//! The request pipeline, one small function per phase:
//! snapshot → hygiene (400) → route: target, gateway endpoint, rule (400/404/405) →
//! authenticate bearer (401) → decide (403) → build upstream request → forward (502/504) →
//! access log.
//!
//! [`handle`] is the only function hyper calls; it never returns `Err`: every failure is
//! rendered by [`Failure::into_response`]. Each phase writes what it learns into the
//! request's [`RequestCtx`]; the access-log line is built from that once, at the end.

pub mod authenticate;
pub mod context;
pub mod cors;
pub mod hygiene;
pub mod logged_body;
pub mod login;
pub mod rate_limit;
pub mod refresh;
pub mod revoke;
pub mod token_answer;
pub mod upstream;
pub mod well_known;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::auth::bearer::Identity;
use crate::body::ResponseBody;
use crate::clock::unix_now;
use crate::error::{no_store, CorsRefusal, Failure, TokenError, RATELIMIT, RATELIMIT_POLICY};
use crate::forward::headers::{self, REQUEST_ID};
use crate::forward::request_body::{BodyLimits, GuardedBody};
use crate::ops::span::Phase;
use crate::policy::cors::CorsPolicy;
use crate::policy::decision::{self, Destination, Permit, Routed};
use crate::policy::routes::{Access, Route};
use crate::state::{Shared, Snapshot};

use authenticate::authenticate;
use context::{ConnInfo, Decision, RequestCtx};
use hygiene::{check_hygiene, check_target_form};
use logged_body::LoggedBody;

/// Serve one request. Never fails: errors become responses here.
pub async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    request: Request<Incoming>,
) -> Result<Response<LoggedBody>, Infallible> {
    let started = Instant::now();
    let snapshot = shared.snapshot();
    let request_id = headers::request_id(request.headers());
    let mut ctx = RequestCtx::new(&request, conn.peer, request_id);
    if shared.spans.enabled() && !ctx.trace.continued() {
        // A caller's trace keeps the caller's sampling decision; a new one gets ours.
        ctx.trace.set_sampled(shared.spans.sample_new_trace());
    }
    let mut response = match pipeline(&shared, &snapshot, conn, request, &mut ctx).await {
        Ok(response) => response,
        Err(failure) => {
            ctx.decision = Decision::from(&failure);
            if matches!(failure, Failure::Internal) {
                tracing::error!(request_id = ?ctx.request_id, "internal error");
            }
            let mut response = failure.into_response();
            if let Some(parameter) = &ctx.resource_metadata {
                well_known::add_to_challenge(&mut response, parameter);
            }
            response
        }
    };
    if ctx.no_store {
        no_store(response.headers_mut());
    }
    if let Some(policy) = ctx.cors {
        cors::apply(policy, ctx.origin.as_ref(), response.headers_mut());
    }
    // Unique to this response: HPACK-indexing it (HTTP/2) would only fill the client's table
    // with ids never sent again, and cost a comparison against each of them on every response.
    let mut request_id = ctx.request_id.clone();
    request_id.set_sensitive(true);
    response.headers_mut().insert(REQUEST_ID, request_id);
    let status = response.status();
    let head = started.elapsed();
    let known_size = http_body::Body::size_hint(response.body()).exact();
    let record = ctx.record(status, known_size, head, head);
    record.record_metrics(&shared.metrics);
    let span = if shared.spans.enabled() && ctx.trace.sampled() {
        let fields = ctx.span_fields(status, route_pattern(&snapshot, &ctx));
        shared.spans.open(fields, &ctx.phases)
    } else {
        None
    };
    let (parts, body) = response.into_parts();
    let streams = matches!(body, ResponseBody::Stream(_)) && !http_body::Body::is_end_stream(&body);
    let body = match ctx.route_index.filter(|_| streams) {
        // The line (and the span) wait for the last byte, so they tell how long the transfer
        // took.
        Some(index) => {
            LoggedBody::deferred(body, ctx, snapshot.clone(), index, status, started, head)
                .with_span(span)
        }
        None => {
            record.write_line();
            if let Some(span) = span {
                span.end();
            }
            LoggedBody::logged(body)
        }
    };
    Ok(Response::from_parts(parts, body))
}

/// The pattern of the route `ctx` was matched to, for the span's `http.route`.
fn route_pattern<'s>(snapshot: &'s Snapshot, ctx: &RequestCtx<'_>) -> &'s str {
    ctx.route_index
        .and_then(|index| snapshot.config.routes.routes().get(index))
        .map_or("", |route| route.pattern.as_str())
}

async fn pipeline<'s>(
    shared: &Shared,
    snapshot: &'s Snapshot,
    conn: ConnInfo,
    request: Request<Incoming>,
    ctx: &mut RequestCtx<'s>,
) -> Result<Response<ResponseBody>, Failure> {
    let config = &snapshot.config;
    ctx.origin = cors::origin(request.headers());
    ctx.cors = config.cors.as_deref();
    let host = check_hygiene(&request, &conn)?;
    check_target_form(&request)?;
    // A preflight is routed as the request it asks about.
    let preflight = cors::requested_method(&request);
    let method = match &preflight {
        Some(Some(requested)) => requested,
        _ => request.method(),
    };
    let login_path = &config.login.path;
    let target = request.uri().path();
    let mut routed = decision::route(&config.routes, login_path, method, &host, target)?;
    if let Some(requested) = &preflight {
        if let Some(policy) = decision::cors_policy(&routed.destination, config.cors.as_deref()) {
            drop(host);
            return answer_preflight(policy, requested.clone(), routed, &request, ctx);
        }
        // No policy governs it: the gateway leaves CORS alone, and this is any OPTIONS.
        if method != request.method() {
            routed = decision::route(&config.routes, login_path, request.method(), &host, target)?;
        }
    }
    // `host` may borrow the request, which is moved below.
    drop(host);
    ctx.path = routed.path;
    let route = match routed.destination {
        Destination::OptionsStar => {
            ctx.decision = Decision::Local;
            ctx.cors = None;
            return Ok(options_star());
        }
        // Boxed: their state (hashing, the fleet's round trips) would otherwise be part of
        // every proxied request's future, which hyper moves and keeps per request.
        Destination::Login => {
            return Box::pin(login::login(shared, snapshot, conn, request, ctx)).await
        }
        Destination::Logout => {
            return Box::pin(revoke::logout(shared, snapshot, request, ctx)).await
        }
        Destination::Revoke => {
            return Box::pin(revoke::revoke(shared, snapshot, request, ctx)).await
        }
        Destination::WellKnown(document) => {
            ctx.route = "well-known";
            decision::check_document_method(request.method())?;
            ctx.decision = Decision::Local;
            return well_known::serve(snapshot, &document, &request);
        }
        Destination::NoRoute => return Err(Failure::NotFound),
        Destination::Route { route, index } => {
            ctx.route_index = Some(index);
            ctx.cors = route.cors.as_deref();
            route
        }
    };
    ctx.route = &route.id;
    if let Err(failure) = authorize(shared, snapshot, route, request.headers(), ctx).await {
        ctx.phases.mark(Phase::Denied);
        // Tell the client where to learn what this resource accepts (RFC 9728 §5.1).
        ctx.resource_metadata = well_known::resource_metadata(&request, &route.pattern);
        return Err(failure);
    }
    ctx.phases.mark(Phase::Authorized);
    let rate_headers = rate_limit::check(
        shared,
        snapshot,
        route,
        ctx.identity.as_ref(),
        &conn,
        request.headers(),
    )?;
    ctx.decision = Decision::Allow;
    let upstream = route
        .upstream
        .as_ref()
        .and_then(|name| config.upstreams.get(name))
        .ok_or(Failure::Internal)?;
    // Limits the client's body on its way through: 413 now if its declared length is already
    // too large, 408/413 mid-stream otherwise.
    let body_limits = BodyLimits::for_route(&config.limits, route.max_body_size);
    body_limits.check_declared(request.body())?;
    let mut request = request.map(|body| GuardedBody::new(body, body_limits));
    if request.version() == Version::HTTP_2
        && request.headers().contains_key(header::CONTENT_LENGTH)
        && !http_body::Body::is_end_stream(request.body())
    {
        // HTTP/2 checks a declared length only as DATA arrives: see the first frame before
        // the upstream sees the head (THREATS S-10). Its later frames cannot overrun the
        // upstream's framing either: h2 fails the body before yielding excess bytes.
        request
            .body_mut()
            .first_frame()
            .await
            .map_err(|err| Failure::from(&err))?;
    }
    upstream::prepare_upstream_request(snapshot, &conn, upstream, &mut request, ctx)?;
    let (result, upstream_latency) = upstream::send(upstream, request)?.await;
    ctx.upstream_latency = upstream_latency;
    let mut response = result?;
    ctx.phases.mark(Phase::UpstreamHeaders);
    if let Some((policy, state)) = rate_headers {
        response.headers_mut().insert(RATELIMIT_POLICY, policy);
        response.headers_mut().insert(RATELIMIT, state);
    }
    if let Some(tunnel) = response
        .extensions_mut()
        .remove::<crate::conn::tunnel::PendingTunnel>()
    {
        // Only HTTP/1 connections carry tunnels; what follows on them is not HTTP/1.
        let slot = conn.tunnel.as_ref().ok_or(Failure::UpstreamUnavailable)?;
        slot.put(tunnel);
        if let Some(heads) = &conn.heads {
            heads.switch_protocols();
        }
    }
    Ok(response)
}

/// Authenticate and decide: `Ok` when the route lets this caller through.
async fn authorize(
    shared: &Shared,
    snapshot: &Snapshot,
    route: &Route,
    headers: &http::HeaderMap,
    ctx: &mut RequestCtx<'_>,
) -> Result<Permit, Failure> {
    ctx.identity = authenticate_for(shared, snapshot, route, headers).await?;
    if ctx.identity.is_some() {
        ctx.phases.mark(Phase::Authenticated);
    }
    // Set before deciding, so a refused caller is named in the log too.
    let granted = ctx.identity.as_ref().map(|identity| &identity.granted);
    let claims = ctx.identity.as_ref().map(|identity| &identity.token.claims);
    decision::decide(route, granted, claims, &snapshot.config.vocabulary)
}

/// A preflight under `policy`, answered here whatever it asks: 204 with the grant, or 403.
/// Its answer carries its own CORS headers (none when refused).
fn answer_preflight<'s, B>(
    policy: &CorsPolicy,
    requested: Option<http::Method>,
    routed: Routed<'s>,
    request: &Request<B>,
    ctx: &mut RequestCtx<'s>,
) -> Result<Response<ResponseBody>, Failure> {
    ctx.cors = None;
    ctx.path = routed.path;
    ctx.route = match &routed.destination {
        Destination::Route { route, .. } => &route.id,
        Destination::Login => "login",
        Destination::Logout => "logout",
        Destination::Revoke => "revoke",
        Destination::WellKnown(_) => "well-known",
        Destination::OptionsStar | Destination::NoRoute => "",
    };
    let origin = ctx
        .origin
        .as_ref()
        .ok_or(Failure::CorsRefused(CorsRefusal::Origin))?;
    let method = requested.ok_or(Failure::CorsRefused(CorsRefusal::Method))?;
    let asked_headers = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS);
    let allow_origin =
        decision::preflight(&routed.destination, policy, origin, &method, asked_headers)?;
    ctx.decision = Decision::Local;
    Ok(cors::grant(policy, allow_origin))
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

/// Authenticate as the route requires. `Ok(None)` = no (valid) token, which the decision may
/// still allow. A token from an issuer the route does not accept counts as invalid.
async fn authenticate_for(
    shared: &Shared,
    snapshot: &Snapshot,
    route: &Route,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<Identity>>, Failure> {
    let accepted = |identity: &Arc<Identity>| {
        route
            .issuers
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == identity.issuer_name()))
    };
    match &route.access {
        Access::Deny => Ok(None),
        // A valid token on a public route still identifies the caller; an invalid one is ignored.
        Access::Public => Ok(authenticate(shared, snapshot, headers, unix_now())
            .await
            .ok()
            .flatten()
            .filter(accepted)),
        Access::Scopes(_) => match authenticate(shared, snapshot, headers, unix_now()).await? {
            Some(identity) if !accepted(&identity) => {
                Err(Failure::InvalidToken(TokenError::UntrustedIssuer))
            }
            identity => Ok(identity),
        },
    }
}
