//! The upstream leg of an allowed request: rebuild it for the upstream (canonical path,
//! stripped client headers, then the gateway's own forwarding and identity headers), send
//! it, and turn the answer into the client's response (or a pending WebSocket tunnel).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use crate::body::ResponseBody;
use crate::config::{Upstream, UpstreamTarget};
use crate::conn::tunnel::PendingTunnel;
use crate::error::Failure;
use crate::error::TokenError;
use crate::forward::headers::{
    self, FORWARDED_FOR, FORWARDED_HOST, FORWARDED_ISSUER, FORWARDED_PROTO, FORWARDED_SCOPES,
    FORWARDED_USER, REQUEST_ID,
};
use crate::forward::request_body::GuardedBody;
use crate::forward::{echo, proxy};
use crate::pipeline::context::{ConnInfo, RequestCtx};
use crate::state::Snapshot;

/// The headers the gateway adds to every upstream request, at most: `X-Forwarded-Host`,
/// `-For`, `-Proto`, `X-Request-Id`, `traceparent`, `Authorization` and `Host`.
const FORWARDING_HEADERS: usize = 7;
/// The identity headers every authenticated request gets besides its profile headers:
/// `X-Forwarded-User`, `-Issuer` and `-Scopes`.
const IDENTITY_HEADERS: usize = 3;

/// Rewrite the request for the upstream, in place: canonical path, stripped client headers,
/// then the gateway's own forwarding and identity headers, all from what `ctx` has learnt.
/// (In place because the request is large; moving it through here would copy it twice.)
pub fn prepare_upstream_request(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    upstream: &Upstream,
    request: &mut Request<GuardedBody>,
    ctx: &RequestCtx<'_>,
) -> Result<(), Failure> {
    let (path, identity, request_id) = (ctx.path.as_str(), ctx.identity.as_ref(), &ctx.request_id);
    let websocket = is_websocket_upgrade(request);
    let h = request.headers_mut();
    let host_header = h.get(header::HOST).cloned();
    let peer_trusted = snapshot.config.is_trusted_proxy(conn.peer.ip());
    // Behind no trusted proxy the value is the peer alone, rendered once per connection.
    let xff = match peer_trusted {
        true => HeaderValue::try_from(headers::forwarded_for(h, conn.peer.ip(), true))
            .map_err(|_| Failure::Internal)?,
        false => conn.peer_ip.clone(),
    };
    let authorization = h.remove(header::AUTHORIZATION);

    headers::strip_request(h);

    // An HTTP/2 client names the host in `:authority` only; the upstream gets it as Host.
    // A Host the client sent stays where it is: the strip above never removes it.
    let client_host = match host_header {
        Some(host) => Some(host),
        None => {
            let authority = request.uri().authority();
            let host = authority.and_then(|a| headers::shared_value(a.as_str().as_bytes()).ok());
            if let Some(host) = &host {
                request.headers_mut().insert(header::HOST, host.clone());
            }
            host
        }
    };
    let h = request.headers_mut();
    // Room for what follows at once: the map grows (and rehashes) once at most, not once per
    // doubling on the way.
    let identity_headers = identity.map_or(0, |i| IDENTITY_HEADERS + i.profile_headers.len());
    h.reserve(FORWARDING_HEADERS + identity_headers);
    if let Some(host) = &client_host {
        h.insert(FORWARDED_HOST, host.clone());
    }
    h.insert(FORWARDED_FOR, xff);
    h.insert(FORWARDED_PROTO, HeaderValue::from_static("https"));
    // The same id the client gets back, so logs on both sides can be joined.
    h.insert(REQUEST_ID, request_id.clone());
    // This hop of the trace: the caller's trace continued with our span, or a new one.
    ctx.trace.apply(h);
    if let Some(identity) = identity {
        // The subject was checked for control characters and length when the token was verified.
        let user = identity
            .forwarded_user
            .clone()
            .ok_or(Failure::InvalidToken(TokenError::InvalidSubject))?;
        h.insert(FORWARDED_USER, user);
        h.insert(FORWARDED_ISSUER, identity.issuer.clone());
        if let Some(scopes) = &identity.forwarded_scopes {
            h.insert(FORWARDED_SCOPES, scopes.clone());
        }
        // Validated and encoded when the config was built; cloning shares the bytes.
        for (name, value) in identity.profile_headers.iter() {
            h.insert(name.clone(), value.clone());
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
    if let (None, UpstreamTarget::Http { authority, .. }) = (&client_host, &upstream.target) {
        // HTTP/1.1 requires a Host; a client without one gets the upstream's own.
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| Failure::Internal)?;
        h.insert(header::HOST, host);
    }
    // Upstreams speak HTTP/1.1; the client's h2 framing ends at the gateway.
    if request.version() >= Version::HTTP_2 {
        headers::join_cookie_fields(request.headers_mut()).map_err(|_| Failure::Internal)?;
    }
    *request.version_mut() = Version::HTTP_11;

    let path_and_query = match request.uri().path_and_query() {
        // Already canonical (the usual case): share the client's bytes.
        Some(original) if original.path() == path => original.clone(),
        _ => {
            let rebuilt = match request.uri().query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_owned(),
            };
            PathAndQuery::try_from(rebuilt).map_err(|_| Failure::Internal)?
        }
    };
    // Origin-form, as an origin server expects it; the connection says where it goes.
    *request.uri_mut() = Uri::from(path_and_query);
    Ok(())
}

/// An HTTP/1.1 WebSocket handshake (RFC 6455 §4.1). Other upgrades (h2c) are never forwarded.
fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    request.version() == Version::HTTP_11
        && request.method() == Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
}

/// Forward `request` (or answer it, for the echo upstream). The future resolves with the
/// client's response and how long the upstream took to answer.
pub fn send(
    upstream: &Upstream,
    mut request: Request<GuardedBody>,
) -> Result<Relay<'_, impl Future<Output = Result<Response<Incoming>, Failure>> + '_>, Failure> {
    if matches!(upstream.target, UpstreamTarget::Echo) {
        return Ok(Relay {
            forwarding: None,
            answered: Some(echo::respond(&request)),
            upstream,
            client_upgrade: None,
            client_host: None,
            started: Instant::now(),
        });
    }
    let client_upgrade = request
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut request));
    // The Host the client used, kept on the upstream request: the origin its redirects name.
    let client_host = request.headers().get(header::HOST).cloned();
    let started = Instant::now();
    Ok(Relay {
        forwarding: Some(proxy::forward(upstream, request)?),
        answered: None,
        upstream,
        client_upgrade,
        client_host,
        started,
    })
}

pin_project_lite::pin_project! {
    /// The upstream leg in flight, from [`send`]. Written by hand rather than as an `async fn`
    /// so that the request, already handed to the upstream connection, is not also kept here.
    pub struct Relay<'u, F> {
        #[pin]
        forwarding: Option<F>,
        // The echo upstream's answer, ready at once.
        answered: Option<Response<ResponseBody>>,
        upstream: &'u Upstream,
        client_upgrade: Option<OnUpgrade>,
        client_host: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F> std::fmt::Debug for Relay<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("upstream", &self.upstream.name)
            .finish_non_exhaustive()
    }
}

/// The client's response, and how long the upstream took to answer (`None` when nothing
/// was forwarded).
pub type Relayed = (Result<Response<ResponseBody>, Failure>, Option<Duration>);

impl<F> Future for Relay<'_, F>
where
    F: Future<Output = Result<Response<Incoming>, Failure>>,
{
    type Output = Relayed;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Relayed> {
        let this = self.project();
        let Some(forwarding) = this.forwarding.as_pin_mut() else {
            let answered = this.answered.take().ok_or(Failure::Internal);
            return Poll::Ready((answered, None));
        };
        let result = ready!(forwarding.poll(cx));
        let latency = this.started.elapsed();
        let response = result.and_then(|response| {
            to_client(
                response,
                this.upstream,
                this.client_upgrade.take(),
                this.client_host.as_ref(),
            )
        });
        Poll::Ready((response, Some(latency)))
    }
}

/// Turn the upstream's answer into the client's response: hop-by-hop headers gone, the
/// upstream's own URLs pointed at the gateway, a WebSocket tunnel left for the connection.
fn to_client(
    mut response: Response<Incoming>,
    upstream: &Upstream,
    client_upgrade: Option<OnUpgrade>,
    client_host: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Failure> {
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
    if let Some(client_host) = client_host {
        proxy::rewrite_upstream_urls(&mut parts.headers, &upstream.target, client_host);
    }
    Ok(Response::from_parts(parts, ResponseBody::Stream(body)))
}
