//! The admin listener (plain HTTP, loopback by default): `/healthz`, `/readyz`, `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::body::ResponseBody;
use crate::state::Shared;

/// Wait after a failed accept (as the serving listeners do).
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Serve admin requests until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // EMFILE and friends fail again at once while the connection waits in the
                // backlog: back off instead of spinning a core.
                tracing::warn!(error = %err, "admin accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, &request)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `ready`, then one line per external issuer: its keys' age, or why they are stale. Stale
/// keys still verify (the provider being down must not take the gateway down with it), so
/// the status stays 200; the text and `portcullis_issuer_keys_age_seconds` tell operators.
fn readiness(shared: &Shared) -> String {
    let mut text = "ready\n".to_owned();
    for issuer in shared.issuer_keys.all() {
        let status = issuer.status();
        let age = status.age.map_or("never fetched".to_owned(), |age| {
            format!("fetched {}s ago", age.as_secs())
        });
        let state = match (&status.error, status.stale) {
            (Some(error), true) => format!("stale: {error}"),
            _ => "fresh".to_owned(),
        };
        text.push_str(&format!(
            "issuer {}: {state}; {} keys, {age}\n",
            status.name, status.keys
        ));
    }
    if let Some(state) = shared.fleet.status(crate::clock::unix_now()) {
        let copy = state.copy_age.map_or("never synced".to_owned(), |age| {
            format!("synced {age}s ago")
        });
        let health = match (state.connected, &state.last_error) {
            (true, None) => "connected".to_owned(),
            (_, Some(error)) => format!("unavailable: {error}"),
            (false, None) => "connecting".to_owned(),
        };
        text.push_str(&format!(
            "state redis {}: {health}; revocations {copy}\n",
            state.url
        ));
    }
    text
}

fn respond<B>(shared: &Shared, request: &Request<B>) -> Response<ResponseBody> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if shared.is_ready() && !shared.fleet.ever_synced() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!(
                "not ready: shared state never loaded\n{}",
                readiness(shared)
            ),
        ),
        "/readyz" if shared.is_ready() => (StatusCode::OK, "text/plain", readiness(shared)),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_owned(),
        ),
        "/metrics" => {
            if let Some(state) = shared.fleet.status(crate::clock::unix_now()) {
                shared.metrics.shared_state(state.connected, state.copy_age);
            }
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                shared.metrics.render(),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
