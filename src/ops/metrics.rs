//! Prometheus metrics (prometheus-client), served in text format by the admin listener.
//!
//! Per-request metrics ([`crate::ops::request_stats`]) are sharded per serving thread; the rest
//! (logins, reloads, connections) are rare events kept in ordinary prometheus-client metrics.

use std::fmt::Write as _;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ops::request_stats::RequestStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerFetchLabels {
    issuer: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigLabels {
    digest: String,
}

/// All gateway metrics. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestStats>,
    logins: Family<OutcomeLabels, Counter>,
    refreshes: Family<OutcomeLabels, Counter>,
    state_connected: Gauge<i64, AtomicI64>,
    state_copy_age: Gauge<i64, AtomicI64>,
    lockouts: Counter,
    reloads: Family<OutcomeLabels, Counter>,
    connections: Gauge<i64, AtomicI64>,
    generation: Gauge<i64, AtomicI64>,
    config_info: Family<ConfigLabels, Gauge<i64, AtomicI64>>,
    issuer_key_age: Family<IssuerLabels, Gauge<i64, AtomicI64>>,
    issuer_fetches: Family<IssuerFetchLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Outcomes of a reload (`Metrics::reload`).
const RELOAD_OUTCOMES: &[&str] = &["applied", "unchanged", "rejected"];
/// Outcomes of a login (`Metrics::login`): OAuth error codes and the gateway's own refusals.
const LOGIN_OUTCOMES: &[&str] = &[
    "success",
    "invalid_grant",
    "invalid_request",
    "invalid_scope",
    "unsupported_grant_type",
    "locked",
    "busy",
    "saturated",
    "too_large",
    "error",
];

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Arc::new(RequestStats::new());
        registry.register_collector(Box::new(requests.clone()));
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register("logins", "Login attempts by outcome", logins.clone());
        let lockouts = Counter::default();
        registry.register(
            "lockouts",
            "Usernames or addresses locked after repeated failures",
            lockouts.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register("reloads", "Config reloads by outcome", reloads.clone());
        let connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "open_connections",
            "Open client connections",
            connections.clone(),
        );
        let generation = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "config_generation",
            "Generation of the config in force",
            generation.clone(),
        );
        let config_info = Family::<ConfigLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "config_info",
            "Digest of the config in force",
            config_info.clone(),
        );
        let issuer_key_age = Family::<IssuerLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "issuer_keys_age_seconds",
            "Seconds since an external issuer's keys were last fetched (-1: never)",
            issuer_key_age.clone(),
        );
        let issuer_fetches = Family::<IssuerFetchLabels, Counter>::default();
        registry.register(
            "issuer_key_fetches",
            "Fetches of an external issuer's keys by outcome (ok, error)",
            issuer_fetches.clone(),
        );
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "refreshes",
            "Refresh-token grants by outcome",
            refreshes.clone(),
        );
        let state_connected = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "state_redis_connected",
            "1 while the shared state (state.redis) is followed; 0 otherwise or in memory mode",
            state_connected.clone(),
        );
        let state_copy_age = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "state_revocations_age_seconds",
            "Seconds since the local copy of the fleet's revocations was last known complete (-1: never or memory mode)",
            state_copy_age.clone(),
        );
        state_copy_age.set(-1);
        // Every known outcome starts at 0, so its series exists before the first event: a
        // dashboard shows 0 rather than "no data", and `increase()` sees the first one.
        for outcome in RELOAD_OUTCOMES {
            let _ = reloads.get_or_create(&OutcomeLabels {
                outcome: (*outcome).to_owned(),
            });
        }
        for outcome in LOGIN_OUTCOMES {
            let _ = logins.get_or_create(&OutcomeLabels {
                outcome: (*outcome).to_owned(),
            });
        }
        Metrics {
            registry,
            requests,
            logins,
            refreshes,
            state_connected,
            state_copy_age,
            lockouts,
            reloads,
            connections,
            generation,
            config_info,
            issuer_key_age,
            issuer_fetches,
        }
    }

    /// How old an issuer's keys are (`None`: never fetched).
    pub fn issuer_key_age(&self, issuer: &str, age: Option<Duration>) {
        let seconds = age.map_or(-1, |age| i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
        self.issuer_key_age
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_owned(),
            })
            .set(seconds);
    }

    /// Record a fetch of an issuer's keys (`ok` or `error`).
    pub fn issuer_fetch(&self, issuer: &str, outcome: &str) {
        self.issuer_fetches
            .get_or_create(&IssuerFetchLabels {
                issuer: issuer.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Record a finished request (on the calling thread's shard: no shared lock, and no
    /// allocation once the thread has seen the route).
    pub fn request(
        &self,
        route: &str,
        method: &'static str,
        decision: &'static str,
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        self.requests
            .record(route, method, decision, status, total, upstream);
    }

    /// Record a login attempt's outcome (`success`, `invalid_grant`, `locked`, `busy`, ...).
    /// Record a refresh-token grant's outcome (`success`, `reuse`, `replay`, or the OAuth
    /// error code).
    pub fn refresh(&self, outcome: &str) {
        self.refreshes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The shared state's connection and the age of the local revocation copy (-1: never
    /// complete).
    pub fn shared_state(&self, connected: bool, copy_age: Option<u64>) {
        self.state_connected.set(i64::from(connected));
        self.state_copy_age
            .set(copy_age.map_or(-1, |age| i64::try_from(age).unwrap_or(i64::MAX)));
    }

    pub fn login(&self, outcome: &str) {
        self.logins
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Record that a key was locked.
    pub fn lockout(&self) {
        self.lockouts.inc();
    }

    /// Record a reload outcome (`applied`, `unchanged`, `rejected`).
    pub fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A client connection opened (+1) or closed (-1).
    pub fn connection(&self, delta: i64) {
        self.connections.inc_by(delta);
    }

    /// A config generation is now in force.
    pub fn config_loaded(&self, generation: u64, digest: &str) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.config_info.clear();
        self.config_info
            .get_or_create(&ConfigLabels {
                digest: digest.to_owned(),
            })
            .set(1);
    }

    /// Register a metric an optional component keeps itself (e.g. the OTLP exporter's).
    pub fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.register(name, help, metric);
    }

    /// Render in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}
