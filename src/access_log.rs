//! One structured access-log line per request (tracing target `access`), and the request
//! metrics recorded at the same moment. Only names, paths and ids are logged: never tokens,
//! passwords, `Authorization` or `Cookie` values, and never the query string.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, StatusCode};

use crate::metrics::Metrics;

/// What the access log says about one request, filled in as the pipeline learns it.
#[derive(Debug)]
pub struct AccessRecord {
    pub request_id: String,
    pub client: SocketAddr,
    pub method: String,
    /// The normalised path (empty when the target was refused before normalising).
    pub path: String,
    pub route: String,
    pub user: String,
    pub decision: &'static str,
    pub upstream_latency: Option<Duration>,
    /// Request body size as declared by `Content-Length` (absent when chunked or none).
    pub bytes_in: Option<u64>,
}

impl AccessRecord {
    /// Begin a record for `request`.
    pub fn start<B>(request: &Request<B>, client: SocketAddr, request_id: &HeaderValue) -> Self {
        AccessRecord {
            request_id: String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
            client,
            method: request.method().as_str().to_owned(),
            path: String::new(),
            route: String::new(),
            user: String::new(),
            decision: "reject",
            upstream_latency: None,
            bytes_in: request
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        }
    }

    /// Emit the log line and record metrics. `bytes_out` is the response body size when it
    /// is known up front (streamed bodies of unknown length log none).
    pub fn finish(
        self,
        metrics: &Metrics,
        status: StatusCode,
        bytes_out: Option<u64>,
        started: Instant,
    ) {
        let total = started.elapsed();
        metrics.request(
            &self.route,
            self.decision,
            status.as_u16(),
            total,
            self.upstream_latency,
        );
        tracing::info!(
            target: "access",
            request_id = %self.request_id,
            client = %self.client,
            method = %self.method,
            path = %self.path,
            route = %self.route,
            user = %self.user,
            decision = self.decision,
            status = status.as_u16(),
            upstream_ms = self.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
            bytes_in = self.bytes_in,
            bytes_out,
            total_ms = total.as_secs_f64() * 1000.0,
        );
    }
}
