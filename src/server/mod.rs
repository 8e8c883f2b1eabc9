//! Thread-per-core serving: one current-thread tokio runtime per worker, each with its own
//! `SO_REUSEPORT` listener (the kernel spreads connections) and its own upstream pool. Only
//! read-mostly state is shared. Also: the connection cap, the TLS handshake deadline, protocol
//! choice by ALPN, and graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::state::Shared;

use connection::serve_connection;
use stop::StopSignal;

pub mod admin;
pub mod connection;
pub mod stop;

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
        // Accepted sockets inherit it: a client that vanished (no FIN, no RST) is noticed
        // even while its connection waits on a slow upstream, with no per-request cost.
        socket.set_tcp_keepalive(&client_keepalive())?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Probe a client silent for a minute every 10 s; three unanswered probes close it.
fn client_keepalive() -> socket2::TcpKeepalive {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    #[cfg(unix)]
    let keepalive = keepalive.with_retries(3);
    keepalive
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
    let refresher = tokio::spawn(refresh_issuer_keys(shared.clone()));
    let follower = tokio::spawn(follow_shared_state(shared.clone()));
    // A replica must not accept tokens the fleet revoked before it started: serving begins
    // once the revocations are loaded, or after this wait with a warning (Redis down at start
    // must not keep the gateway down; `/readyz` stays 503 until the first load).
    if !shared.fleet.wait_first_sync(FIRST_SYNC_WAIT).await {
        tracing::warn!("shared state not loaded yet: serving; /readyz is 503 until it is");
    }
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
                crate::ops::log_buffer::batch_this_thread();
                match runtime {
                    Ok(runtime) => runtime.block_on(worker(listener, shared, connections, stop)),
                    Err(err) => tracing::error!(error = %err, "cannot start worker runtime"),
                }
                crate::ops::log_buffer::flush_this_thread();
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
    refresher.abort();
    follower.abort();
    tracing::info!("all connections closed");
    Ok(())
}

/// Keep external issuers' keys fresh (first fetch at once), for as long as the server runs.
async fn refresh_issuer_keys(shared: Arc<Shared>) {
    loop {
        shared.issuer_keys.refresh_due(&shared.metrics).await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// How long a start waits for the fleet's revocations before serving anyway.
const FIRST_SYNC_WAIT: Duration = Duration::from_secs(5);

/// With `state.redis`: keep the local revocation copy in step with the fleet's, and share
/// route rate-limit counts.
async fn follow_shared_state(shared: Arc<Shared>) {
    if let Some(state) = shared.fleet.redis() {
        tokio::join!(
            crate::fleet::follower::follow(state, &shared.revocations),
            crate::fleet::rate_sync::run(state, &state.rates, &shared.rate_limits),
        );
    }
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
    // This worker's own: its connections poll it on every wake-up.
    let stop_signal = StopSignal::new();
    // Buffered access-log lines leave a quiet worker within this interval.
    let log_flusher = tokio::spawn(async {
        let mut tick = tokio::time::interval(crate::ops::log_buffer::FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            crate::ops::log_buffer::flush_this_thread();
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
                let stop = stop_signal.clone();
                tasks.spawn(async move {
                    shared.metrics.connection(1);
                    serve_connection(stream, peer, &shared, &stop).await;
                    shared.metrics.connection(-1);
                    drop(permit);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    stop_signal.stop();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_client_sockets_carry_tcp_keepalive() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 1).unwrap().remove(0);
        listener.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(
            socket.keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(socket.keepalive_retries().unwrap(), 3);
    }
}
