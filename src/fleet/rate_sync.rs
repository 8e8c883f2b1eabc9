//! Route rate limits shared by a fleet, without a Redis round trip on the request path.
//!
//! Each replica decides from its own GCRA table, as in memory mode, and notes what it let
//! through here. Every [`SYNC_INTERVAL`] a sync adds those arrivals to the fleet's timestamp
//! of each caller in Redis (one script per caller: the timestamp only moves forward) and
//! moves the local timestamp up to the fleet's, so every replica soon refuses what the fleet
//! as a whole has used up. The price of never waiting: within one interval, replicas that
//! have not heard of each other's arrivals may together let through up to one interval's worth
//! more than the limit (and a caller new to a replica gets its local burst there once).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use super::redis_state::RedisState;
use crate::auth::rate_limit::{Caller, RateLimits};
use crate::policy::rate_limit::RateLimit;

/// How often arrivals are pushed and the fleet's timestamps pulled.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Callers followed at once; beyond, a new caller is limited by this replica alone.
const MAX_FOLLOWED: usize = 10_000;

/// Callers this replica has let through recently, and how many since the last sync.
#[derive(Debug, Default)]
pub struct RateOutbox {
    /// By this process's key (a cheap keyed hash); the fleet's key (a digest) is computed once,
    /// when a caller is first followed.
    pending: DashMap<u64, Pending>,
}

#[derive(Debug)]
struct Pending {
    fleet_key: [u8; 16],
    interval_nanos: u64,
    arrivals: AtomicU32,
}

impl RateOutbox {
    /// Note one request of `caller` let through on `route` under `limit`.
    pub fn note(&self, limits: &RateLimits, route: &str, caller: Caller<'_>, limit: &RateLimit) {
        let local_key = limits.local_key(route, caller);
        if let Some(entry) = self.pending.get(&local_key) {
            entry.arrivals.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.pending.len() >= MAX_FOLLOWED {
            return;
        }
        self.pending
            .entry(local_key)
            .or_insert_with(|| Pending {
                fleet_key: limits.fleet_key(route, caller),
                interval_nanos: limit.interval_nanos(),
                arrivals: AtomicU32::new(0),
            })
            .arrivals
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// One sync: push arrivals, pull the fleet's timestamps, forget callers whose allowance is
/// whole again everywhere.
pub async fn sync_once(
    state: &RedisState,
    outbox: &RateOutbox,
    limits: &RateLimits,
) -> Result<(), super::redis_state::Unavailable> {
    let batch: Vec<(u64, [u8; 16], u64, u32)> = outbox
        .pending
        .iter()
        .map(|entry| {
            let arrivals = entry.arrivals.swap(0, Ordering::Relaxed);
            (
                *entry.key(),
                entry.fleet_key,
                entry.interval_nanos,
                arrivals,
            )
        })
        .collect();
    if batch.is_empty() {
        return Ok(());
    }
    let requests: Vec<(String, u64, u32)> = batch
        .iter()
        .map(|(_, key, interval, arrivals)| (state.rate_key(key), interval / 1000, *arrivals))
        .collect();
    let fleet_tats = match state.merge_rates(&requests).await {
        Ok(tats) => tats,
        Err(err) => {
            // Give the arrivals back for the next attempt.
            for (key, _, _, arrivals) in &batch {
                if let Some(entry) = outbox.pending.get(key) {
                    entry.arrivals.fetch_add(*arrivals, Ordering::Relaxed);
                }
            }
            return Err(err);
        }
    };
    let unix_micros = super::redis_state::unix_micros();
    let local_now = limits.now_nanos();
    for ((local_key, _, _, _), fleet_tat) in batch.iter().zip(fleet_tats) {
        if fleet_tat > unix_micros {
            let ahead = (fleet_tat - unix_micros).saturating_mul(1000);
            limits.raise(*local_key, local_now.saturating_add(ahead));
        } else if limits.tat(*local_key) <= local_now {
            // Whole again here and in the fleet: stop following until it is used again.
            outbox
                .pending
                .remove_if(local_key, |_, p| p.arrivals.load(Ordering::Relaxed) == 0);
        }
    }
    Ok(())
}

/// Run the sync for as long as the server does (Redis failures: the next tick retries).
pub async fn run(state: &RedisState, outbox: &RateOutbox, limits: &RateLimits) {
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = sync_once(state, outbox, limits).await {
            tracing::debug!(error = %err, "rate-limit sync failed; counting locally meanwhile");
        }
    }
}
