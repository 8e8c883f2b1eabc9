//! External issuers' keys, fetched and kept fresh: OIDC discovery (its `issuer` must be the
//! configured one), then the JWK Set, over verified TLS.
//!
//! Failure modes, deliberately: keys are refreshed after the document's `max-age` within
//! configured bounds; a token with an unknown `kid` triggers at most one refetch per cooldown
//! and only one at a time, whoever asks (random `kid`s cannot make us hammer the provider);
//! a failed fetch keeps the last good keys verifying and marks the issuer stale for
//! `/readyz` and the metrics. The store outlives reloads: an issuer whose settings did not
//! change keeps its keys.

pub mod fetch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::ClientConfig;
use serde::Deserialize;

use crate::auth::jwks::PublishedKeys;
use crate::config::upstream_tls::{bundle_roots, client_config, system_roots};
use crate::config::{IssuerSettings, KeysSource};
use crate::ops::metrics::Metrics;
use fetch::FetchError;

/// Keys when the JWKS response gives no `max-age`.
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// Every configured issuer's key state, by name.
#[derive(Debug, Default)]
pub struct IssuerKeyStore {
    entries: ArcSwap<HashMap<String, Arc<IssuerKeys>>>,
}

/// One issuer's keys and fetch bookkeeping.
#[derive(Debug)]
pub struct IssuerKeys {
    pub name: String,
    fingerprint: String,
    settings: IssuerSettings,
    keys: ArcSwapOption<PublishedKeys>,
    /// Successful fetches so far: a waiter sees whether someone else fetched meanwhile.
    generation: AtomicU64,
    /// When the keys were last fetched successfully.
    fetched_at: Mutex<Option<Instant>>,
    /// When the next scheduled refresh is due.
    refresh_due: Mutex<Instant>,
    /// When the last unknown-`kid` refetch started (the cooldown's start).
    last_refetch: Mutex<Option<Instant>>,
    /// When the last fetch of any kind started.
    last_attempt: Mutex<Option<Instant>>,
    /// The last attempt failed (the keys in use are the last good ones, if any).
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// One fetch at a time, whoever asks.
    fetch_lock: tokio::sync::Mutex<()>,
    /// Fetch attempts (successful or not), for tests and `/readyz`.
    attempts: AtomicU64,
}

/// What `/readyz` says about an issuer.
#[derive(Debug, Clone)]
pub struct IssuerStatus {
    pub name: String,
    pub keys: usize,
    pub age: Option<Duration>,
    /// The last fetch failed: verification runs on the last good keys (if any).
    pub stale: bool,
    pub error: Option<String>,
}

impl IssuerKeyStore {
    /// Match the configured issuers: settings unchanged keep their keys; new or changed ones
    /// start empty and are fetched by the refresher (or the first request that needs them).
    pub fn reconcile(&self, issuers: &[IssuerSettings]) {
        let current = self.entries.load();
        let next: HashMap<String, Arc<IssuerKeys>> = issuers
            .iter()
            .map(|settings| {
                let name = settings.policy.name.clone();
                let keep = current
                    .get(&name)
                    .filter(|entry| entry.fingerprint == settings.fingerprint)
                    .cloned();
                let entry = keep.unwrap_or_else(|| Arc::new(IssuerKeys::new(settings.clone())));
                (name, entry)
            })
            .collect();
        self.entries.store(Arc::new(next));
    }

    pub fn get(&self, name: &str) -> Option<Arc<IssuerKeys>> {
        self.entries.load().get(name).cloned()
    }

    /// Every issuer, in name order.
    pub fn all(&self) -> Vec<Arc<IssuerKeys>> {
        let mut all: Vec<_> = self.entries.load().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Fetch every issuer whose refresh is due; update the age metric.
    pub async fn refresh_due(&self, metrics: &Metrics) {
        for issuer in self.all() {
            if issuer.is_due() {
                let seen = issuer.generation();
                issuer.fetch_if_unchanged(seen, metrics).await;
            }
            metrics.issuer_key_age(&issuer.name, issuer.age());
        }
    }
}

impl IssuerKeys {
    fn new(settings: IssuerSettings) -> IssuerKeys {
        IssuerKeys {
            name: settings.policy.name.clone(),
            fingerprint: settings.fingerprint.clone(),
            settings,
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            fetched_at: Mutex::new(None),
            refresh_due: Mutex::new(Instant::now()),
            last_refetch: Mutex::new(None),
            last_attempt: Mutex::new(None),
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
        }
    }

    /// The keys in use (`None` until a first fetch succeeded).
    pub fn keys(&self) -> Option<Arc<PublishedKeys>> {
        self.keys.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Fetch attempts so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> IssuerStatus {
        IssuerStatus {
            name: self.name.clone(),
            keys: self.keys().map_or(0, |k| k.len()),
            age: self.age(),
            stale: self.failing.load(Ordering::Relaxed),
            error: lock(&self.last_error).clone(),
        }
    }

    fn age(&self) -> Option<Duration> {
        lock(&self.fetched_at).map(|at| at.elapsed())
    }

    fn is_due(&self) -> bool {
        Instant::now() >= *lock(&self.refresh_due)
    }

    /// A token named a `kid` these keys lack (seen at generation `seen`): refetch, unless the
    /// cooldown forbids it. Returns whether the keys changed since `seen` (then verifying
    /// again is worth it). Concurrent callers share one fetch; only a fetch actually made
    /// starts the cooldown.
    pub async fn refetch_for_unknown_kid(&self, seen: u64, metrics: &Metrics) -> bool {
        let _one_at_a_time = self.fetch_lock.lock().await;
        if self.generation() != seen {
            return true; // fetched while we waited
        }
        if !self.start_refetch() {
            return false;
        }
        self.fetch_locked(metrics).await;
        self.generation() != seen
    }

    /// No keys yet (seen at generation `seen`): fetch them, unless the last attempt failed
    /// less than `min_refresh` ago (a down provider is not retried per request).
    pub async fn ensure_keys(&self, seen: u64, metrics: &Metrics) -> bool {
        let _one_at_a_time = self.fetch_lock.lock().await;
        if self.generation() != seen {
            return true;
        }
        let failed_recently = self.failing.load(Ordering::Relaxed)
            && lock(&self.last_attempt).is_some_and(|at| at.elapsed() < self.settings.min_refresh);
        if failed_recently {
            return false;
        }
        self.fetch_locked(metrics).await;
        self.generation() != seen
    }

    /// Whether the cooldown allows an unknown-`kid` refetch now (and if so, start it).
    fn start_refetch(&self) -> bool {
        let mut last = lock(&self.last_refetch);
        if last.is_some_and(|at| at.elapsed() < self.settings.refetch_cooldown) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Fetch, unless another fetch completed since `seen` while we waited for the lock.
    async fn fetch_if_unchanged(&self, seen: u64, metrics: &Metrics) {
        let _one_at_a_time = self.fetch_lock.lock().await;
        if self.generation() == seen {
            self.fetch_locked(metrics).await;
        }
    }

    /// Fetch now; the caller holds `fetch_lock`.
    async fn fetch_locked(&self, metrics: &Metrics) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_attempt) = Some(Instant::now());
        match fetch_keys(&self.settings).await {
            Ok((keys, max_age, _)) => {
                let refresh = max_age
                    .unwrap_or(DEFAULT_REFRESH)
                    .clamp(self.settings.min_refresh, self.settings.max_refresh);
                self.keys.store(Some(Arc::new(keys)));
                *lock(&self.fetched_at) = Some(Instant::now());
                *lock(&self.refresh_due) = Instant::now() + refresh;
                *lock(&self.last_error) = None;
                self.failing.store(false, Ordering::Relaxed);
                self.generation.fetch_add(1, Ordering::AcqRel);
                metrics.issuer_fetch(&self.name, "ok");
                tracing::info!(issuer = %self.name, refresh_secs = refresh.as_secs(), "issuer keys fetched");
            }
            Err(err) => {
                // Retry sooner than a full refresh, but never in a loop.
                *lock(&self.refresh_due) = Instant::now() + self.settings.min_refresh;
                *lock(&self.last_error) = Some(err.to_string());
                self.failing.store(true, Ordering::Relaxed);
                metrics.issuer_fetch(&self.name, "error");
                tracing::warn!(issuer = %self.name, error = %err, "issuer keys could not be fetched; the last good keys stay in use");
            }
        }
    }
}

/// The OIDC discovery members we read.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// What `portcullis check` found at an issuer.
#[derive(Debug)]
pub struct Probe {
    pub jwks_uri: String,
    pub keys: PublishedKeys,
}

/// Fetch an issuer's discovery and keys once, for `check`.
pub async fn probe(settings: &IssuerSettings) -> Result<Probe, FetchError> {
    let (keys, _, jwks_uri) = fetch_keys(settings).await?;
    Ok(Probe { jwks_uri, keys })
}

/// Discovery (if configured) then the JWK Set: the keys, the JWKS response's `max-age`, and
/// where the keys were read.
async fn fetch_keys(
    settings: &IssuerSettings,
) -> Result<(PublishedKeys, Option<Duration>, String), FetchError> {
    let tls = tls_for(settings)?;
    let jwks_uri = match &settings.keys {
        KeysSource::Jwks(uri) => uri.clone(),
        KeysSource::Discovery(url) => {
            let fetched = fetch::get(url, tls.clone()).await?;
            let invalid = |reason: String| FetchError::Invalid {
                url: url.clone(),
                reason,
            };
            let discovery: Discovery = serde_json::from_slice(&fetched.body)
                .map_err(|e| invalid(format!("not a discovery document: {e}")))?;
            // OpenID Connect Discovery §4.3: a document naming another issuer is refused (a
            // mix-up, or someone else's document served at this address).
            if discovery.issuer != settings.policy.issuer {
                return Err(invalid(format!(
                    "discovery names issuer `{}`, not the configured `{}`",
                    discovery.issuer, settings.policy.issuer
                )));
            }
            discovery.jwks_uri
        }
    };
    let fetched = fetch::get(&jwks_uri, tls).await?;
    let keys = PublishedKeys::parse(&fetched.body).map_err(|e| FetchError::Invalid {
        url: jwks_uri.clone(),
        reason: e.to_string(),
    })?;
    Ok((keys, fetched.max_age, jwks_uri))
}

fn tls_for(settings: &IssuerSettings) -> Result<Arc<ClientConfig>, FetchError> {
    let invalid = |reason: String| FetchError::Invalid {
        url: settings.policy.issuer.clone(),
        reason,
    };
    let roots = match &settings.ca {
        Some(pem) => bundle_roots(pem),
        None => system_roots(),
    }
    .map_err(invalid)?;
    client_config(Arc::new(roots), None).map_err(invalid)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
