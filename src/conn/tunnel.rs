//! Upgraded connections (WebSocket): after both sides agreed to switch protocols, bytes are
//! copied both ways until either side closes or the tunnel is idle.
//!
//! The tunnel runs on the client connection's own task, after hyper has handed the
//! connection over, so it keeps the connection's `max_connections` slot for its whole life
//! and is closed with the other connections when the shutdown grace period ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::conn::observed_io::{Observed, ReadObserver};

/// A switch both sides agreed to, waiting for hyper to release the two connections.
/// Travels from the forwarding phase to the connection in the response's extensions.
#[derive(Debug, Clone)]
pub struct PendingTunnel {
    client: OnUpgrade,
    upstream: OnUpgrade,
}

/// Where a request's pipeline leaves its tunnel for the connection task to run.
#[derive(Debug, Default)]
pub struct TunnelSlot(Mutex<Option<PendingTunnel>>);

impl TunnelSlot {
    pub fn put(&self, tunnel: PendingTunnel) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(tunnel);
        }
    }

    pub fn take(&self) -> Option<PendingTunnel> {
        self.0.lock().ok()?.take()
    }
}

impl PendingTunnel {
    pub fn new(client: OnUpgrade, upstream: OnUpgrade) -> Self {
        PendingTunnel { client, upstream }
    }

    /// Copy both ways until either side closes, or until neither has sent a byte for
    /// `idle_timeout`.
    pub async fn run(self, idle_timeout: Duration) {
        let (client, upstream) = match tokio::try_join!(self.client, self.upstream) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade failed");
                return;
            }
        };
        let last_read = LastRead::new();
        let mut client = Observed::new(TokioIo::new(client), last_read.clone());
        let mut upstream = Observed::new(TokioIo::new(upstream), last_read.clone());
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::pin!(copy);
        loop {
            let deadline = last_read.at() + idle_timeout;
            tokio::select! {
                result = &mut copy => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "upgrade tunnel closed with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(deadline) => {
                    if last_read.at() + idle_timeout <= Instant::now() {
                        tracing::debug!("closing an idle upgrade tunnel");
                        return;
                    }
                }
            }
        }
    }
}

/// When either side of a tunnel last sent bytes.
#[derive(Debug, Clone)]
struct LastRead {
    start: Instant,
    /// Milliseconds after `start`.
    millis: Arc<AtomicU64>,
}

impl LastRead {
    fn new() -> Self {
        LastRead {
            start: Instant::now(),
            millis: Arc::new(AtomicU64::new(0)),
        }
    }

    fn at(&self) -> Instant {
        self.start + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

impl ReadObserver for LastRead {
    fn observe(&self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.millis.store(millis, Ordering::Relaxed);
        }
    }
}
