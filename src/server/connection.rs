//! One client connection: the TLS handshake under the first-byte deadline, HTTP/1.1 or
//! HTTP/2 as ALPN chose, the per-connection deadlines, WebSocket hand-over, and drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::conn::framing::RawHeads;
use crate::conn::idle::Activity;
use crate::conn::observed_io::Observed;
use crate::conn::tunnel::TunnelSlot;
use crate::conn::write_deadline::WriteDeadline;
use crate::pipeline::{self, context::ConnInfo};
use crate::server::stop::StopSignal;
use crate::state::Shared;

/// TLS handshake under the first-byte deadline, then HTTP/1.1 or HTTP/2 as ALPN chose.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    stop: &Arc<StopSignal>,
) {
    let _ = stream.set_nodelay(true);
    let snapshot = shared.snapshot();
    let limits = snapshot.config.limits.clone();
    // The TLS config is read per connection, so a reloaded certificate serves the next handshake.
    let acceptor = TlsAcceptor::from(snapshot.tls.clone());
    drop(snapshot);
    let stream = WriteDeadline::new(stream, limits.write_timeout);
    // The handshake's state and the TLS stream live on the heap: held inline they would size
    // this task, which every idle keep-alive connection keeps, for the connection's life.
    let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
    let tls = match Box::pin(handshake).await {
        Ok(Ok(tls)) => Box::new(tls),
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if is_h2 {
        let conn = ConnInfo::new(peer, None, None);
        let shared_for_service = shared.clone();
        let activity = Activity::new();
        let activity_for_service = activity.clone();
        let service = service_fn(move |request| {
            let in_flight = activity_for_service.begin();
            let (shared, conn) = (shared_for_service.clone(), conn.clone());
            // Boxed: hyper spawns each stream as a task and moves its future several times on
            // the way; a pointer moves for free.
            Box::pin(async move {
                let response = pipeline::handle(shared, conn, request).await;
                drop(in_flight);
                response
            })
        });
        // hyper has no deadline for the HTTP/2 preface: a silent client would hold the
        // connection for ever. Watch for the first byte ourselves.
        let first_byte = Arc::new(AtomicBool::new(false));
        let tls = Observed::new(tls, first_byte.clone());
        let io = TokioIo::new(tls);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_h2_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        // No keep-alive pings: hyper's would read the clock on every frame received. An idle
        // connection is closed by `H2Watch`, and a peer that vanished by TCP keepalive (set
        // on the listener) or the write deadline.
        // On the heap, so the connection's state is held once, not in both `drive`'s argument
        // and its pinned local.
        let connection = Box::pin(builder.serve_connection(io, service));
        let watch = H2Watch {
            first_byte,
            first_byte_deadline: limits.header_read_timeout,
            activity,
            idle_timeout: limits.idle_timeout,
        };
        drive(connection, stop, Some(watch), |c| c.graceful_shutdown()).await;
    } else {
        // hyper refuses a head longer than its buffer; the scanner holds no more than that.
        let max_buf_size = limits.max_header_bytes.max(8192);
        let heads = RawHeads::new(max_buf_size);
        let tls = Observed::new(tls, heads.clone());
        let tunnel = Arc::new(TunnelSlot::default());
        let conn = ConnInfo::new(peer, Some(heads), Some(tunnel.clone()));
        let shared_for_service = shared.clone();
        // Boxed per request: hyper keeps room for the service's future in every connection,
        // idle ones included, and a pointer is all an idle connection then holds.
        let service = service_fn(move |request| {
            Box::pin(pipeline::handle(
                shared_for_service.clone(),
                conn.clone(),
                request,
            ))
        });
        let io = TokioIo::new(tls);
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(max_buf_size)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        let connection = Box::pin(builder.serve_connection(io, service).with_upgrades());
        drive(connection, stop, None, |c| c.graceful_shutdown()).await;
        // Still on this connection's task: the tunnel keeps its connection slot and is
        // aborted with the other connections when the shutdown grace period ends.
        if let Some(tunnel) = tunnel.take() {
            tunnel.run(limits.idle_timeout).await;
        }
    }
}

/// What hyper does not watch on an HTTP/2 connection: the first byte, and idleness.
struct H2Watch {
    first_byte: Arc<AtomicBool>,
    first_byte_deadline: Duration,
    activity: Arc<Activity>,
    idle_timeout: Duration,
}

/// Run a hyper connection to completion; on shutdown, or when an HTTP/2 connection has been
/// idle for its timeout, ask it to finish the in-flight request(s) and close, then keep
/// polling it until it does.
async fn drive<C, E>(
    mut connection: std::pin::Pin<Box<C>>,
    stop: &Arc<StopSignal>,
    h2: Option<H2Watch>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut stopping = stop.stopped();
    let mut first_byte_check = h2
        .as_ref()
        .map(|watch| Box::pin(tokio::time::sleep(watch.first_byte_deadline)));
    let mut idle_check = h2
        .as_ref()
        .map(|watch| tokio::time::interval(watch.idle_timeout / 4));
    let idle_for = || h2.as_ref().and_then(|watch| watch.activity.idle_for());
    let idle_timeout = h2
        .as_ref()
        .map_or(Duration::MAX, |watch| watch.idle_timeout);
    let result = loop {
        tokio::select! {
            // Fixed order, connection first: nearly every wake-up is for it, and a random
            // start would cost a random number per poll for nothing.
            biased;
            result = connection.as_mut() => break result,
            _ = async { first_byte_check.as_mut()?.await; Some(()) },
                if first_byte_check.is_some() =>
            {
                if !h2.as_ref().is_some_and(|w| w.first_byte.load(Ordering::Relaxed)) {
                    tracing::debug!("closing a connection that sent nothing");
                    return;
                }
                first_byte_check = None;
            }
            _ = &mut stopping => {
                // Nothing can be in progress before the first byte, and hyper would wait for
                // the HTTP/2 preface until the grace period ends: close now.
                if h2.as_ref().is_some_and(|w| !w.first_byte.load(Ordering::Relaxed)) {
                    return;
                }
                graceful(connection.as_mut());
                break connection.await;
            }
            _ = async { idle_check.as_mut()?.tick().await; Some(()) }, if idle_check.is_some() => {
                if idle_for().is_some_and(|idle| idle >= idle_timeout) {
                    tracing::debug!("closing an idle HTTP/2 connection");
                    graceful(connection.as_mut());
                    break connection.await;
                }
            }
        }
    };
    log_end(result);
}

fn log_end<E: std::fmt::Display>(result: Result<(), E>) {
    if let Err(err) = result {
        tracing::debug!(error = %err, "connection ended with an error");
    }
}
