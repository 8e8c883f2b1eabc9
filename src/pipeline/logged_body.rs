//! The access-log line of a streamed response, written when its last byte is handed to the
//! connection (or when the client goes away and the body is dropped), so `total_ms` covers
//! the transfer and `bytes_out` counts what was actually sent.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::auth::bearer::Identity;
use crate::body::ResponseBody;
use crate::forward::trace::TraceContext;
use crate::ops::access_log::AccessRecord;
use crate::ops::span::RequestSpan;
use crate::pipeline::context::{Decision, RequestCtx};
use crate::state::Snapshot;

/// A response body, and the log line to write once it has been sent.
#[derive(Debug)]
pub struct LoggedBody {
    inner: ResponseBody,
    pending: Option<PendingLog>,
}

/// Everything a deferred access-log line says, owned. The route id is read from the snapshot
/// the request was decided on, which this keeps alive.
#[derive(Debug)]
struct PendingLog {
    snapshot: Arc<Snapshot>,
    route_index: usize,
    request_id: HeaderValue,
    trace: TraceContext,
    peer: SocketAddr,
    method: Method,
    path: String,
    identity: Option<Arc<Identity>>,
    decision: Decision,
    status: StatusCode,
    upstream_latency: Option<Duration>,
    bytes_in: Option<u64>,
    bytes_out: u64,
    started: Instant,
    head: Duration,
    /// The request's span, ended with the line (`None` when not exported).
    span: Option<RequestSpan>,
}

impl LoggedBody {
    /// A body whose log line was already written (or needs none).
    pub fn logged(inner: ResponseBody) -> Self {
        LoggedBody {
            inner,
            pending: None,
        }
    }

    /// A streamed body that writes `ctx`'s line when it ends; `route_index` is the route the
    /// request was forwarded on, in `snapshot`'s table.
    pub fn deferred(
        inner: ResponseBody,
        ctx: RequestCtx<'_>,
        snapshot: Arc<Snapshot>,
        route_index: usize,
        status: StatusCode,
        started: Instant,
        head: Duration,
    ) -> Self {
        let pending = PendingLog {
            snapshot,
            route_index,
            request_id: ctx.request_id,
            trace: ctx.trace,
            peer: ctx.peer,
            method: ctx.method,
            path: ctx.path,
            identity: ctx.identity,
            decision: ctx.decision,
            status,
            upstream_latency: ctx.upstream_latency,
            bytes_in: ctx.bytes_in,
            bytes_out: 0,
            started,
            head,
            span: None,
        };
        LoggedBody {
            inner,
            pending: Some(pending),
        }
    }

    /// End `span` when the deferred line is written.
    pub fn with_span(mut self, span: Option<RequestSpan>) -> Self {
        if let Some(pending) = &mut self.pending {
            pending.span = span;
        }
        self
    }

    fn finish(&mut self) {
        if let Some(mut pending) = self.pending.take() {
            pending.write_line();
            if let Some(span) = pending.span.take() {
                span.end();
            }
        }
    }
}

impl PendingLog {
    fn write_line(&self) {
        let routes = self.snapshot.config.routes.routes();
        let route = routes.get(self.route_index).map_or("", |r| r.id.as_str());
        let user = self
            .identity
            .as_ref()
            .map_or("", |identity| identity.token.subject.as_str());
        AccessRecord {
            request_id: &self.request_id,
            trace_id: self.trace.trace_id_hex(),
            client: self.peer,
            method: &self.method,
            path: &self.path,
            route,
            user,
            decision: self.decision.label(),
            status: self.status,
            upstream_latency: self.upstream_latency,
            bytes_in: self.bytes_in,
            bytes_out: Some(self.bytes_out),
            head: self.head,
            total: self.started.elapsed(),
        }
        .write_line();
    }
}

impl Drop for LoggedBody {
    /// The client went away (or hyper needed no body, as for HEAD): the line is still written.
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(pending), Some(data)) = (&mut this.pending, frame.data_ref()) {
                    pending.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
