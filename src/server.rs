//! Thread-per-core serving: one current-thread tokio runtime per worker, each with its own
//! `SO_REUSEPORT` listener (the kernel spreads connections) and its own upstream pool. Only
//! read-mostly state is shared. Also: the connection cap, the TLS handshake deadline, protocol
//! choice by ALPN, and graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::conn_activity::Activity;
use crate::framing::RawHeads;
use crate::observed_io::Observed;
use crate::service::{self, ConnInfo};
use crate::state::Shared;
use crate::tunnel::TunnelSlot;
use crate::write_deadline::WriteDeadline;

/// Bind `workers` listening sockets on `addr` with `SO_REUSEPORT`, so each worker accepts on
/// its own socket. With port 0 the first socket picks the port and the others join it.
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(workers.max(1));
    let mut addr = addr;
    for _ in 0..workers.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// The number of serving threads: `PORTCULLIS_WORKERS` when set (like nginx's
/// `worker_processes`), otherwise one per available core.
pub fn default_workers() -> usize {
    std::env::var("PORTCULLIS_WORKERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// Serve on `listeners` (one worker thread each) until `shutdown` resolves, then stop
/// accepting, let in-flight requests finish within the grace period, and return.
pub async fn run(
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = shared.snapshot().config.limits.clone();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut workers = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let stop = stop_rx.clone();
        let connections = connections.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("portcullis-worker-{index}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                crate::log_buffer::batch_this_thread();
                match runtime {
                    Ok(runtime) => runtime.block_on(worker(listener, shared, connections, stop)),
                    Err(err) => tracing::error!(error = %err, "cannot start worker runtime"),
                }
                crate::log_buffer::flush_this_thread();
                let _ = done_tx.send(());
            })?;
        workers.push(done_rx);
    }
    shutdown.await;
    shared.set_draining();
    tracing::info!(
        grace_secs = limits.shutdown_grace.as_secs(),
        "shutting down: no new connections, draining"
    );
    let _ = stop_tx.send(true);
    for done in workers {
        let _ = done.await;
    }
    tracing::info!("all connections closed");
    Ok(())
}

/// One core's accept loop, then its drain.
async fn worker(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, "cannot register listener");
            return;
        }
    };
    let mut tasks = JoinSet::new();
    // Buffered access-log lines leave a quiet worker within this interval.
    let log_flusher = tokio::spawn(async {
        let mut tick = tokio::time::interval(crate::log_buffer::FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            crate::log_buffer::flush_this_thread();
        }
    });
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    // Over the connection cap: close at once rather than queue.
                    drop(stream);
                    continue;
                };
                let shared = shared.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    shared.metrics.connection(1);
                    serve_connection(stream, peer, &shared, stop).await;
                    shared.metrics.connection(-1);
                    drop(permit);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let grace = shared.snapshot().config.limits.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "grace period over; closing remaining connections"
        );
        tasks.abort_all();
    }
    log_flusher.abort();
}

/// TLS handshake under the first-byte deadline, then HTTP/1.1 or HTTP/2 as ALPN chose.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let snapshot = shared.snapshot();
    let limits = snapshot.config.limits.clone();
    // The TLS config is read per connection, so a reloaded certificate serves the next handshake.
    let acceptor = TlsAcceptor::from(snapshot.tls.clone());
    drop(snapshot);
    let stream = WriteDeadline::new(stream, limits.write_timeout);
    let tls = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await
    {
        Ok(Ok(tls)) => tls,
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
        let conn = ConnInfo {
            peer,
            heads: None,
            tunnel: None,
        };
        let shared_for_service = shared.clone();
        let activity = Activity::new();
        let activity_for_service = activity.clone();
        let service = service_fn(move |request| {
            let in_flight = activity_for_service.begin();
            let handled = service::handle(shared_for_service.clone(), conn.clone(), request);
            async move {
                let response = handled.await;
                drop(in_flight);
                response
            }
        });
        // hyper has no deadline for the HTTP/2 preface: a silent client would hold the
        // connection until keep-alive pings give up. Watch for the first byte ourselves.
        let first_byte = Arc::new(AtomicBool::new(false));
        let tls = Observed::new(tls, first_byte.clone());
        let io = TokioIo::new(tls);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_h2_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(limits.idle_timeout / 2))
            .keep_alive_timeout(Duration::from_secs(20));
        let connection = builder.serve_connection(io, service);
        let watch = H2Watch {
            first_byte,
            first_byte_deadline: limits.header_read_timeout,
            activity,
            idle_timeout: limits.idle_timeout,
        };
        drive(connection, &mut stop, Some(watch), |c| {
            c.graceful_shutdown()
        })
        .await;
    } else {
        // hyper refuses a head longer than its buffer; the scanner holds no more than that.
        let max_buf_size = limits.max_header_bytes.max(8192);
        let heads = RawHeads::new(max_buf_size);
        let tls = Observed::new(tls, heads.clone());
        let tunnel = Arc::new(TunnelSlot::default());
        let conn = ConnInfo {
            peer,
            heads: Some(heads),
            tunnel: Some(tunnel.clone()),
        };
        let shared_for_service = shared.clone();
        let service = service_fn(move |request| {
            service::handle(shared_for_service.clone(), conn.clone(), request)
        });
        let io = TokioIo::new(tls);
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(max_buf_size)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        let connection = builder.serve_connection(io, service).with_upgrades();
        drive(connection, &mut stop, None, |c| c.graceful_shutdown()).await;
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
    connection: C,
    stop: &mut watch::Receiver<bool>,
    h2: Option<H2Watch>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(connection);
    // Map the watch guard away at once: it must not be held across an await.
    let stopping = async { stop.wait_for(|stopping| *stopping).await.is_ok() };
    tokio::pin!(stopping);
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
    let mut stop_closed = false;
    let result = loop {
        tokio::select! {
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
            stopping = stopping.as_mut(), if !stop_closed => {
                if stopping {
                    graceful(connection.as_mut());
                    break connection.await;
                }
                // The stop signal's sender is gone: it can no longer fire.
                stop_closed = true;
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
