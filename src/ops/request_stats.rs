//! Per-request metrics that do not serialise the cores: request counts by route, decision
//! and status, and the request and upstream latency histograms.
//!
//! A prometheus-client `Family` takes a shared lock and builds an owned label set on every
//! update, and its `Histogram` takes a shared write lock per observation: one cache line that
//! every core writes on every request. Here each serving thread records into its own shard
//! (a lock only the scraper ever contends, on its own cache line), allocating only the first
//! time a thread sees a route. A scrape sums the shards.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

/// More shards than cores anyone runs one gateway on; threads past it share.
const SHARDS: usize = 64;
/// Latency bucket bounds in seconds: 0.5 ms doubling to ≈ 16 s.
const BOUNDS: [f64; 16] = {
    let mut bounds = [0.0005; 16];
    let mut i = 1;
    while i < 16 {
        bounds[i] = bounds[i - 1] * 2.0;
        i += 1;
    }
    bounds
};

/// Request counts summed over the shards, by (route, method, decision, status).
type Counts = BTreeMap<(String, &'static str, &'static str, u16), u64>;

/// The `method` label: the methods rules can name, and `other` for everything else, so a
/// client inventing methods cannot grow the label set (and a method-based probe still shows).
pub fn method_label(method: &http::Method) -> &'static str {
    crate::config::methods::standard_name(method).unwrap_or("other")
}

/// Per-request counters and histograms, sharded by thread.
#[derive(Debug)]
pub struct RequestStats {
    shards: Box<[Shard]>,
}

/// One thread's figures, alone on its cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<ShardData>);

#[derive(Debug, Default)]
struct ShardData {
    /// Route id → outcomes seen for it. Few per route, so a short list beats a map. Keys are
    /// the operator's route ids, so the fast unkeyed-by-secret hash is enough.
    routes: HashMap<String, Vec<Outcome>, foldhash::fast::RandomState>,
    request_seconds: Buckets,
    upstream_seconds: Buckets,
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    method: &'static str,
    decision: &'static str,
    status: u16,
    count: u64,
}

/// A latency histogram: per-bucket (not cumulative) counts, the last one for +Inf.
#[derive(Debug, Default, Clone, Copy)]
struct Buckets {
    counts: [u64; BOUNDS.len() + 1],
    sum: f64,
    count: u64,
}

impl Buckets {
    fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BOUNDS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    fn add(&mut self, other: &Buckets) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

impl Default for RequestStats {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestStats {
    pub fn new() -> Self {
        RequestStats {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    /// Record one finished request on the calling thread's shard.
    pub fn record(
        &self,
        route: &str,
        method: &'static str,
        decision: &'static str,
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        let mut shard = lock(&self.shards[shard_index()]);
        let outcomes = match shard.routes.get_mut(route) {
            Some(outcomes) => outcomes,
            None => shard.routes.entry(route.to_owned()).or_default(),
        };
        match outcomes
            .iter_mut()
            .find(|o| o.status == status && o.decision == decision && o.method == method)
        {
            Some(outcome) => outcome.count += 1,
            None => outcomes.push(Outcome {
                method,
                decision,
                status,
                count: 1,
            }),
        }
        shard.request_seconds.observe(total);
        if let Some(upstream) = upstream {
            shard.upstream_seconds.observe(upstream);
        }
    }

    /// Sum of every shard.
    fn totals(&self) -> (Counts, Buckets, Buckets) {
        let mut counts = BTreeMap::new();
        let (mut request, mut upstream) = (Buckets::default(), Buckets::default());
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for (route, outcomes) in &shard.routes {
                for o in outcomes {
                    *counts
                        .entry((route.clone(), o.method, o.decision, o.status))
                        .or_insert(0) += o.count;
                }
            }
            request.add(&shard.request_seconds);
            upstream.add(&shard.upstream_seconds);
        }
        (counts, request, upstream)
    }
}

/// A poisoned shard only means a panic mid-update of plain counters: keep counting.
fn lock(shard: &Shard) -> MutexGuard<'_, ShardData> {
    shard
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// This thread's shard, assigned round-robin on first use.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|index| *index)
}

impl Collector for RequestStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (counts, request, upstream) = self.totals();
        let mut requests = encoder.encode_descriptor(
            "requests",
            "Requests by route, method, decision and status",
            None,
            MetricType::Counter,
        )?;
        for ((route, method, decision, status), count) in &counts {
            let status = status.to_string();
            let labels = [
                ("route", route.as_str()),
                ("method", *method),
                ("decision", *decision),
                ("status", status.as_str()),
            ];
            ConstCounter::new(*count).encode(requests.encode_family(&labels)?)?;
        }
        for (name, help, buckets) in [
            (
                "request_duration_seconds",
                "Total request latency",
                &request,
            ),
            (
                "upstream_duration_seconds",
                "Upstream response-header latency",
                &upstream,
            ),
        ] {
            let pairs: Vec<(f64, u64)> = BOUNDS
                .iter()
                .copied()
                .chain(std::iter::once(f64::MAX))
                .zip(buckets.counts)
                .collect();
            encoder
                .encode_descriptor(name, help, None, MetricType::Histogram)?
                .encode_histogram::<NoLabelSet>(buckets.sum, buckets.count, &pairs, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    use super::*;

    fn render(stats: &Arc<RequestStats>) -> String {
        let mut registry = Registry::with_prefix("portcullis");
        registry.register_collector(Box::new(stats.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn counts_from_every_thread_are_summed() {
        let stats = Arc::new(RequestStats::new());
        let ms = Duration::from_millis;
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        stats.record("items", "GET", "allow", 200, ms(3), Some(ms(2)));
                    }
                    stats.record("items", "other", "forbidden", 403, ms(1), None);
                });
            }
        });
        let text = render(&stats);
        assert!(
            text.contains(
                r#"portcullis_requests_total{route="items",method="GET",decision="allow",status="200"} 400"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"portcullis_requests_total{route="items",method="other",decision="forbidden",status="403"} 4"#
        ));
        assert!(text.contains("portcullis_request_duration_seconds_count 404"));
        assert!(text.contains("portcullis_upstream_duration_seconds_count 400"));
        // 3 ms falls in the 4 ms bucket: cumulative from there on.
        assert!(text.contains(r#"portcullis_request_duration_seconds_bucket{le="0.002"} 4"#));
        assert!(text.contains(r#"portcullis_request_duration_seconds_bucket{le="0.004"} 404"#));
        assert!(text.contains(r#"portcullis_request_duration_seconds_bucket{le="+Inf"} 404"#));
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        for (method, label) in [("GET", "GET"), ("DELETE", "DELETE"), ("PROPFIND", "other")] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap_or_default();
            assert_eq!(method_label(&method), label);
        }
        let lowercase = http::Method::from_bytes(b"get").unwrap_or_default();
        assert_eq!(method_label(&lowercase), "other");
    }

    #[test]
    fn bucket_bounds_double_from_half_a_millisecond() {
        assert_eq!(BOUNDS[0], 0.0005);
        assert_eq!(BOUNDS[15], 0.0005 * 32768.0);
    }
}
