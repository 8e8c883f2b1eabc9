//! Keeps this replica's revocation table in step with the fleet's: subscribe to the
//! revocation channel, then load every live revocation (so nothing published while this
//! replica was away is missed), then apply each announcement as it comes. On any failure:
//! mark the copy stale, back off, do it all again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;

use super::redis_state::{note_ok, RedisState, Unavailable};
use crate::auth::revocation::Revocations;
use crate::clock::unix_now;

/// Backoff between reconnects: doubled from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// How often the command connection is checked while the subscription looks fine (a Redis
/// that hangs without closing the socket shows up here).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// A full resync now and then also repairs a message lost inside a live subscription.
const RESYNC_INTERVAL: Duration = Duration::from_secs(60);

/// Run for as long as the server does.
pub async fn follow(state: &RedisState, revocations: &Revocations) {
    let mut backoff = BACKOFF.0;
    loop {
        match follow_once(state, revocations).await {
            Ok(()) => backoff = BACKOFF.0,
            Err(err) => {
                state.note_error(&err.0);
                tracing::warn!(error = %err.0, "shared state: lost Redis; retrying");
            }
        }
        state.following.store(false, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

async fn follow_once(state: &RedisState, revocations: &Revocations) -> Result<(), Unavailable> {
    let timeout = state.settings.timeout;
    let connect = async {
        let mut pubsub = state.client().get_async_pubsub().await?;
        pubsub.subscribe(state.channel()).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| Unavailable("connect timed out".into()))??;
    state.connect().await?;
    resync(state, revocations).await?;
    state.following.store(true, Ordering::Relaxed);
    tracing::info!("shared state: following Redis");
    let mut messages = pubsub.into_on_message();
    let mut health = tokio::time::interval(HEALTH_INTERVAL);
    let mut last_resync = tokio::time::Instant::now();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(Unavailable("subscription closed".into()));
                };
                let payload: String = message.get_payload().unwrap_or_default();
                apply(revocations, &payload);
                state.synced_at.store(unix_now(), Ordering::Relaxed);
            }
            _ = health.tick() => {
                state.ping().await?;
                if last_resync.elapsed() >= RESYNC_INTERVAL {
                    resync(state, revocations).await?;
                    last_resync = tokio::time::Instant::now();
                } else {
                    // The subscription is up and the server answers: nothing can have been
                    // missed since the last message.
                    state.synced_at.store(unix_now(), Ordering::Relaxed);
                }
            }
        }
    }
}

/// Load every live revocation into the local table.
async fn resync(state: &RedisState, revocations: &Revocations) -> Result<(), Unavailable> {
    let now = unix_now();
    let live = state.live_revocations(now).await?;
    for (key, until) in &live {
        if !revocations.insert(key, *until, now) {
            tracing::error!("revocation table full: a fleet revocation could not be kept");
        }
    }
    state.synced_at.store(unix_now(), Ordering::Relaxed);
    note_ok(state);
    tracing::debug!(revocations = live.len(), "shared state: resynced");
    Ok(())
}

/// One announcement: `"<until> <key>"`.
fn apply(revocations: &Revocations, payload: &str) {
    let Some((until, key)) = payload.split_once(' ') else {
        return;
    };
    let Ok(until) = until.parse::<u64>() else {
        return;
    };
    if !revocations.insert(key, until, unix_now()) {
        tracing::error!("revocation table full: a fleet revocation could not be kept");
    }
}
