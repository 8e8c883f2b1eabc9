//! OTLP span export (cargo feature `otlp`): a request's span is finished on its serving thread
//! and handed to a bounded queue without waiting; one background thread batches the queue and
//! POSTs it as OTLP/HTTP JSON ([`json`], [`export`]). A full queue drops the span and counts
//! it: a slow or absent collector never slows a request.

mod export;
mod json;

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::span::{Phase, SpanFields};
use crate::config::OtlpSettings;
use crate::ops::metrics::Metrics;

/// Why spans were dropped.
const QUEUE_FULL: &str = "queue_full";
const EXPORT_FAILED: &str = "export_failed";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The exporter's counters, registered with the gateway's metrics.
#[derive(Clone, Debug, Default)]
struct SpanCounters {
    exported: Counter,
    dropped: Family<ReasonLabels, Counter>,
}

impl SpanCounters {
    fn register(metrics: &mut Metrics) -> SpanCounters {
        let counters = SpanCounters::default();
        metrics.register(
            "otlp_spans_exported",
            "Request spans the OTLP collector accepted",
            counters.exported.clone(),
        );
        metrics.register(
            "otlp_spans_dropped",
            "Request spans dropped (queue_full, export_failed)",
            counters.dropped.clone(),
        );
        for reason in [QUEUE_FULL, EXPORT_FAILED] {
            let _ = counters.dropped.get_or_create(&ReasonLabels { reason });
        }
        counters
    }

    fn dropped(&self, reason: &'static str, spans: usize) {
        self.dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(spans as u64);
    }
}

/// A finished span, owned, waiting in the queue.
#[derive(Debug)]
struct SpanRecord {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    name: String,
    start_unix_nanos: u64,
    end_unix_nanos: u64,
    attributes: Vec<(&'static str, Value)>,
    events: Vec<(&'static str, u64)>,
    /// A 5xx answer.
    error: bool,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Int(i64),
}

/// Where finished spans go: `None` when `trace.otlp` is not configured.
#[derive(Debug, Default)]
pub struct SpanSink {
    exporter: Option<Exporter>,
}

#[derive(Debug)]
struct Exporter {
    queue: SyncSender<SpanRecord>,
    sample_ratio: f64,
    counters: SpanCounters,
}

impl SpanSink {
    /// Start the export thread when `settings` is given; its counters join `metrics`.
    pub fn start(settings: Option<&OtlpSettings>, metrics: &mut Metrics) -> SpanSink {
        let Some(settings) = settings else {
            return SpanSink::default();
        };
        let counters = SpanCounters::register(metrics);
        let (queue, spans) = mpsc::sync_channel(settings.max_queue);
        if let Err(err) = export::spawn(settings.clone(), spans, counters.clone()) {
            tracing::error!(error = %err, "cannot start the OTLP exporter; no spans are exported");
            return SpanSink::default();
        }
        SpanSink {
            exporter: Some(Exporter {
                queue,
                sample_ratio: settings.sample_ratio,
                counters,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.exporter.is_some()
    }

    /// Whether a trace this gateway starts is sampled (`trace.otlp.sample_ratio`).
    pub fn sample_new_trace(&self) -> bool {
        self.exporter
            .as_ref()
            .is_some_and(|e| e.sample_ratio >= 1.0 || rand::random::<f64>() < e.sample_ratio)
    }

    /// The span of a request whose answer is known; it is sent when [`RequestSpan::end`] is
    /// called (at its last byte, for a streamed answer).
    pub fn open(&self, fields: SpanFields<'_>, phases: &Phases) -> Option<RequestSpan> {
        let exporter = self.exporter.as_ref()?;
        Some(RequestSpan {
            record: record(&fields, phases),
            queue: exporter.queue.clone(),
            counters: exporter.counters.clone(),
        })
    }
}

/// A span waiting for its request to end.
#[derive(Debug)]
pub struct RequestSpan {
    record: SpanRecord,
    queue: SyncSender<SpanRecord>,
    counters: SpanCounters,
}

impl RequestSpan {
    /// End the span now and queue it; a full queue drops it (counted), never waits.
    pub fn end(mut self) {
        self.record.end_unix_nanos = unix_nanos(SystemTime::now());
        match self.queue.try_send(self.record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.counters.dropped(QUEUE_FULL, 1),
            // The export thread is gone (it never exits while the queue is open).
            Err(TrySendError::Disconnected(_)) => self.counters.dropped(EXPORT_FAILED, 1),
        }
    }
}

/// When a request started and when it reached each [`Phase`].
#[derive(Debug)]
pub struct Phases {
    start_unix_nanos: u64,
    started: Instant,
    reached: [Option<Duration>; Phase::ALL.len()],
}

impl Phases {
    pub fn start() -> Phases {
        Phases {
            start_unix_nanos: unix_nanos(SystemTime::now()),
            started: Instant::now(),
            reached: [None; Phase::ALL.len()],
        }
    }

    pub fn mark(&mut self, phase: Phase) {
        self.reached[phase as usize] = Some(self.started.elapsed());
    }

    /// The events reached, in time order, as (name, unix nanoseconds).
    fn events(&self) -> Vec<(&'static str, u64)> {
        let mut events: Vec<_> = Phase::ALL
            .iter()
            .filter_map(|phase| {
                let at = self.reached[*phase as usize]?;
                Some((phase.name(), self.start_unix_nanos + nanos(at)))
            })
            .collect();
        events.sort_by_key(|(_, at)| *at);
        events
    }
}

fn record(fields: &SpanFields<'_>, phases: &Phases) -> SpanRecord {
    let name = if fields.route.is_empty() {
        fields.method.to_owned()
    } else {
        format!("{} {}", fields.method, fields.route)
    };
    let text = |value: &str| Value::Text(value.to_owned());
    let mut attributes = vec![
        ("http.request.method", text(fields.method)),
        ("url.scheme", text("https")),
        (
            "http.response.status_code",
            Value::Int(i64::from(fields.status)),
        ),
        ("client.address", Value::Text(fields.client.to_string())),
        ("portcullis.decision", text(fields.decision)),
        ("portcullis.request_id", text(fields.request_id)),
    ];
    let optional = [
        ("url.path", fields.path),
        ("http.route", fields.route_pattern),
        ("portcullis.route", fields.route),
        ("enduser.id", fields.user),
    ];
    for (key, value) in optional {
        if !value.is_empty() {
            attributes.push((key, text(value)));
        }
    }
    SpanRecord {
        trace_id: fields.trace_id.to_owned(),
        span_id: fields.span_id.to_owned(),
        parent_span_id: fields.parent_span_id.map(str::to_owned),
        name,
        start_unix_nanos: phases.start_unix_nanos,
        end_unix_nanos: phases.start_unix_nanos,
        attributes,
        events: phases.events(),
        error: fields.status >= 500,
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, nanos)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
