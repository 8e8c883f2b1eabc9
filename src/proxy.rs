//! Forwarding to upstream apps: a pooled keep-alive client per serving thread (so cores never
//! share a pool lock), response deadlines, error classification, and the upgrade tunnel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Upstream;
use crate::error::Failure;
use crate::request_body::{BodyError, GuardedBody};

/// The upstream client type: HTTP/1.1 over TCP with the client's body streamed through.
pub type UpstreamClient = Client<HttpConnector, GuardedBody>;

/// How long an idle upstream connection is kept for reuse.
const POOL_IDLE: Duration = Duration::from_secs(30);

thread_local! {
    /// One client (and so one connection pool) per serving thread and connect timeout.
    /// Serving is thread-per-core, so this is a per-core pool with no cross-core locking.
    static CLIENTS: RefCell<HashMap<Duration, UpstreamClient>> = RefCell::new(HashMap::new());
}

fn client_for(connect_timeout: Duration) -> UpstreamClient {
    CLIENTS.with(|clients| {
        clients
            .borrow_mut()
            .entry(connect_timeout)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(connect_timeout));
                connector.set_nodelay(true);
                connector.enforce_http(true);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    // A request whose body was already (partly) sent must not be replayed.
                    .retry_canceled_requests(false)
                    .build(connector)
            })
            .clone()
    })
}

/// Send `request` to `upstream` and wait for its response headers within the upstream's
/// timeout. The response body is streamed by the caller.
pub async fn forward(
    upstream: &Upstream,
    request: Request<GuardedBody>,
) -> Result<Response<Incoming>, Failure> {
    let client = client_for(upstream.connect_timeout);
    match tokio::time::timeout(upstream.timeout, client.request(request)).await {
        Err(_elapsed) => Err(Failure::UpstreamTimeout),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => Err(classify(&err)),
    }
}

/// A failure of the client's own request body (too slow, too large, broken framing) is the
/// client's fault and aborted the upstream request: 408/413/400. Otherwise connect timeouts
/// are 504 (the upstream did not answer in time), and everything else is 502.
fn classify(err: &hyper_util::client::legacy::Error) -> Failure {
    if let Some(body) = BodyError::find_in(err) {
        return Failure::from(body);
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Failure::UpstreamTimeout;
            }
        }
        source = cause.source();
    }
    tracing::debug!(error = %err, "upstream request failed");
    Failure::UpstreamUnavailable
}
