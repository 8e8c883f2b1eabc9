//! What every request reads: one immutable [`Snapshot`] per config generation behind a single
//! swappable pointer, plus the process-wide mutable state (lockouts, revocations, the login
//! hashing pool, metrics) that outlives reloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use crate::auth::jwt::TokenKeys;
use crate::auth::keys::{KeyRing, KeyStatus, RingKey};
use crate::auth::lockout::Lockouts;
use crate::auth::password::PasswordVerifier;
use crate::auth::rate_limit::RateLimits;
use crate::auth::revocation::Revocations;
use crate::auth::token_cache::TokenCache;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::issuers::IssuerKeyStore;
use crate::ops::metrics::Metrics;
use crate::ops::span::SpanSink;
use crate::tls::{self, TlsError};

/// Upper bound on tracked lockout keys, per table (usernames; addresses).
const MAX_LOCKOUT_KEYS: usize = 100_000;
/// Upper bound on verified tokens kept per snapshot.
const MAX_CACHED_TOKENS: usize = 65_536;
/// Upper bound on callers tracked by route rate limits.
const MAX_RATE_LIMIT_KEYS: usize = 1_000_000;
/// Upper bound on remembered revoked token ids.
const MAX_REVOCATIONS: usize = 1_000_000;

/// Everything derived from one config file, built completely before it is published.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Config,
    pub keys: TokenKeys,
    /// Tokens already verified under these keys (dies with the snapshot on reload).
    pub token_cache: TokenCache,
    pub tls: Arc<ServerConfig>,
}

/// Why a snapshot could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
}

impl Snapshot {
    /// Build every derived object (keys, TLS) so publishing it cannot fail half-way.
    pub fn build(config: Config, generation: u64) -> Result<Snapshot, BuildError> {
        let tls = match &config.tls {
            Some(paths) => tls::server_config(paths)?,
            None => tls::dev_server_config()?,
        };
        let keys = TokenKeys::new(config.tokens.clone());
        let token_cache = TokenCache::new(MAX_CACHED_TOKENS, config.tokens.leeway.as_secs());
        Ok(Snapshot {
            generation,
            config,
            keys,
            token_cache,
            tls,
        })
    }
}

/// Process-wide state shared by every core.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    generation: AtomicU64,
    /// Failed logins per username.
    pub user_lockouts: Lockouts,
    /// Failed logins per client address, separately, so a username spray cannot crowd
    /// addresses out of the table (or the reverse).
    pub ip_lockouts: Lockouts,
    pub revocations: Revocations,
    /// Route `rate_limit:` timestamps per caller; outlives reloads (a reload must not reset
    /// anyone's allowance).
    pub rate_limits: RateLimits,
    pub passwords: PasswordVerifier,
    pub metrics: Metrics,
    /// Where request spans go (`trace.otlp`; read at start, a reload does not change it).
    pub spans: SpanSink,
    /// External issuers' fetched keys; outlives reloads (unchanged issuers keep theirs).
    pub issuer_keys: IssuerKeyStore,
    /// Refresh families, and where revocations and lockouts are shared (`state:`, fixed at
    /// start).
    pub fleet: Fleet,
    ready: AtomicBool,
    /// When this process first saw each ring key `retired` (unix seconds), for keys whose
    /// config gives no `retired_at`: a reload may not remove them before their tokens expire.
    retirements: Mutex<HashMap<String, u64>>,
}

impl Shared {
    /// Start with a first snapshot.
    pub fn new(first: Snapshot) -> Arc<Shared> {
        let policy = first.config.login.lockout;
        let mut metrics = Metrics::new();
        metrics.config_loaded(first.generation, &first.config.digest);
        let spans = SpanSink::start(first.config.otlp.as_ref(), &mut metrics);
        let retirements = Mutex::new(HashMap::new());
        note_retirements(&retirements, first.keys.ring());
        let issuer_keys = IssuerKeyStore::default();
        issuer_keys.reconcile(&first.config.issuers);
        // `state:` was validated with the very client this makes.
        let fleet = Fleet::new(&first.config.state)
            .unwrap_or_else(|err| panic!("state.redis passed validation but failed: {err}"));
        Arc::new(Shared {
            fleet,
            issuer_keys,
            retirements,
            generation: AtomicU64::new(first.generation),
            snapshot: ArcSwap::from_pointee(first),
            user_lockouts: Lockouts::new(policy, MAX_LOCKOUT_KEYS),
            ip_lockouts: Lockouts::new(policy, MAX_LOCKOUT_KEYS),
            revocations: Revocations::new(MAX_REVOCATIONS),
            rate_limits: RateLimits::new(MAX_RATE_LIMIT_KEYS, crate::config::DEFAULT_IPV6_PREFIX),
            passwords: PasswordVerifier::for_this_host(),
            metrics,
            spans,
            ready: AtomicBool::new(true),
        })
    }

    /// The current snapshot. Callers hold the `Arc` for the whole request, so a request
    /// finishes on the rules it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The generation number the next snapshot should carry.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Publish a new snapshot: one pointer swap, atomic for every reader.
    pub fn publish(&self, snapshot: Snapshot) {
        self.metrics
            .config_loaded(snapshot.generation, &snapshot.config.digest);
        note_retirements(&self.retirements, snapshot.keys.ring());
        self.issuer_keys.reconcile(&snapshot.config.issuers);
        self.snapshot.store(Arc::new(snapshot));
    }

    /// When `key` was retired: as configured, else when this process first saw it retired.
    pub fn retired_since(&self, key: &RingKey) -> Option<u64> {
        key.retired_at.or_else(|| {
            self.retirements
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(&key.kid)
                .copied()
        })
    }

    /// `/readyz`: a config is loaded and the server is not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Mark the server as draining (shutdown started).
    pub fn set_draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }
}

fn note_retirements(retirements: &Mutex<HashMap<String, u64>>, ring: &KeyRing) {
    let now = crate::clock::unix_now();
    let mut seen = retirements
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for key in ring.keys() {
        if key.status == KeyStatus::Retired {
            seen.entry(key.kid.clone()).or_insert(now);
        } else {
            seen.remove(&key.kid);
        }
    }
}
