//! Prometheus metrics (prometheus-client), served in text format by the admin listener.

use std::fmt::Write as _;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    decision: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
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
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histogram,
    upstream_seconds: Histogram,
    logins: Family<OutcomeLabels, Counter>,
    lockouts: Counter,
    reloads: Family<OutcomeLabels, Counter>,
    connections: Gauge<i64, AtomicI64>,
    generation: Gauge<i64, AtomicI64>,
    config_info: Family<ConfigLabels, Gauge<i64, AtomicI64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route, decision and status",
            requests.clone(),
        );
        let request_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "request_duration_seconds",
            "Total request latency",
            request_seconds.clone(),
        );
        let upstream_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "upstream_duration_seconds",
            "Upstream response-header latency",
            upstream_seconds.clone(),
        );
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
        Metrics {
            registry,
            requests,
            request_seconds,
            upstream_seconds,
            logins,
            lockouts,
            reloads,
            connections,
            generation,
            config_info,
        }
    }

    /// Record a finished request.
    pub fn request(
        &self,
        route: &str,
        decision: &str,
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                decision: decision.to_owned(),
                status,
            })
            .inc();
        self.request_seconds.observe(total.as_secs_f64());
        if let Some(upstream) = upstream {
            self.upstream_seconds.observe(upstream.as_secs_f64());
        }
    }

    /// Record a login attempt's outcome (`success`, `invalid_grant`, `locked`, `busy`, ...).
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

    /// Render in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}
