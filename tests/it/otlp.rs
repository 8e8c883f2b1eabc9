//! OTLP span export (cargo feature `otlp`; SPEC "Operations", Spans): a collector started
//! here on 127.0.0.1 receives one span per sampled request over OTLP/HTTP JSON, checked
//! field by field; a collector that is down or stuck never slows a request, and what could
//! not be sent is counted.
#![cfg(feature = "otlp")]

use crate::common::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// One POST the collector received.
#[derive(Debug, Clone)]
struct Export {
    path: String,
    content_type: String,
    body: String,
}

/// An OTLP/HTTP collector on 127.0.0.1 that keeps every request it gets and answers 200.
struct Collector {
    addr: SocketAddr,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let exports = Arc::new(Mutex::new(Vec::new()));
        let kept = exports.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    let kept = kept.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let content_type = request
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = request.into_body().collect().await.expect("body");
                        let body = String::from_utf8(body.to_bytes().to_vec()).expect("utf-8");
                        kept.lock().expect("lock").push(Export {
                            path,
                            content_type,
                            body,
                        });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { addr, exports }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn exports(&self) -> Vec<Export> {
        self.exports.lock().expect("lock").clone()
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Json> {
        let mut spans = Vec::new();
        for export in self.exports() {
            let body: Json = serde_json::from_str(&export.body).expect("JSON body");
            for resource in body["resourceSpans"].as_array().expect("resourceSpans") {
                for scope in resource["scopeSpans"].as_array().expect("scopeSpans") {
                    spans.extend(scope["spans"].as_array().expect("spans").iter().cloned());
                }
            }
        }
        spans
    }

    /// The span of `trace_id`, waiting for it (bounded).
    async fn span_of(&self, trace_id: &str) -> Json {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| s["traceId"] == trace_id) {
                return span;
            }
            assert!(
                Instant::now() < deadline,
                "no span for trace {trace_id} within 5 s; got {:?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The fixture around `up`, with a route to a dead upstream and span export to `endpoint`.
fn config(up: &Upstream, otlp: &str) -> String {
    format!(
        "{}  - {{ id: dead, path: /dead/**, upstream: dead, public: true }}\n\
         trace:\n  otlp: {{ {otlp} }}\n",
        fixture_yaml(&up.url()).replace("upstreams:\n", "upstreams:\n  dead: http://127.0.0.1:9\n")
    )
}

/// A span's attribute value (as its JSON `value` object), by key.
fn attribute<'a>(span: &'a Json, key: &str) -> &'a Json {
    span["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .find(|a| a["key"] == key)
        .map_or(&Json::Null, |a| &a["value"])
}

fn event_names(span: &Json) -> Vec<String> {
    span["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_owned())
        .collect()
}

fn nanos(value: &Json) -> u128 {
    value
        .as_str()
        .expect("a decimal string")
        .parse()
        .expect("nanoseconds")
}

/// The (trace id, span id, flags) of the `traceparent` the upstream got last.
fn forwarded(up: &Upstream) -> (String, String, String) {
    let value = up
        .last()
        .and_then(|seen| seen.header("traceparent"))
        .expect("traceparent upstream");
    let fields: Vec<&str> = value.split('-').collect();
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3].to_owned(),
    )
}

/// The value of one series of the metrics text (0 when absent).
fn metric(gw: &Gateway, series: &str) -> f64 {
    gw.shared
        .metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_continues_the_callers_trace_with_the_hop_forwarded_upstream() {
    let collector = Collector::start().await;
    let up = Upstream::start().await;
    let otlp = format!(
        "endpoint: \"{}\", flush_interval: 50ms",
        collector.endpoint()
    );
    let gw = Gateway::start(&config(&up, &otlp)).await;
    let token = gw.h1().token("alice", "secret123").await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();

    let parent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let reply = gw
        .h1()
        .get(
            "/api/orders?secret=query-value",
            &[
                ("traceparent", &parent),
                ("authorization", &format!("Bearer {token}")),
                ("cookie", "session=cookie-value"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let (trace, hop, flags) = forwarded(&up);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));

    let span = collector.span_of(TRACE).await;
    assert_eq!(span["parentSpanId"], CALLER_SPAN);
    assert_eq!(
        span["spanId"],
        hop.as_str(),
        "the span is the hop sent upstream"
    );
    assert_eq!(span["name"], "GET api-read");
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    let (start, end) = (
        nanos(&span["startTimeUnixNano"]),
        nanos(&span["endTimeUnixNano"]),
    );
    assert!(started <= start && start <= end, "{start} {end}");
    let text = |value: &str| serde_json::json!({ "stringValue": value });
    assert_eq!(attribute(&span, "http.request.method"), &text("GET"));
    assert_eq!(attribute(&span, "url.path"), &text("/api/orders"));
    assert_eq!(attribute(&span, "http.route"), &text("/api/**"));
    assert_eq!(attribute(&span, "portcullis.route"), &text("api-read"));
    assert_eq!(attribute(&span, "portcullis.decision"), &text("allow"));
    assert_eq!(attribute(&span, "enduser.id"), &text("alice"));
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        &serde_json::json!({ "intValue": "200" })
    );
    assert_eq!(
        event_names(&span),
        ["authenticated", "authorized", "upstream_headers"]
    );
    for event in span["events"].as_array().expect("events") {
        let at = nanos(&event["timeUnixNano"]);
        assert!(start <= at && at <= end, "event {event} outside the span");
    }
    assert!(
        span.get("status").is_none(),
        "a 200 leaves the status unset"
    );

    let exports = collector.exports();
    let resource = &serde_json::from_str::<Json>(&exports[0].body).expect("JSON")["resourceSpans"]
        [0]["resource"];
    assert_eq!(resource["attributes"][0]["key"], "service.name");
    assert_eq!(resource["attributes"][0]["value"], text("portcullis"));
    for export in &exports {
        assert_eq!(export.path, "/v1/traces");
        assert_eq!(export.content_type, "application/json");
        for secret in [
            token.as_str(),
            "Bearer",
            "secret123",
            "query-value",
            "cookie-value",
        ] {
            assert!(!export.body.contains(secret), "`{secret}` exported");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_trace_is_sampled_by_ratio_and_a_callers_unsampled_flag_is_honoured() {
    let collector = Collector::start().await;
    let up = Upstream::start().await;
    let otlp = format!(
        "endpoint: \"{}\", flush_interval: 50ms",
        collector.endpoint()
    );
    let gw = Gateway::start(&config(&up, &otlp)).await;

    let unsampled = format!("00-{TRACE}-{CALLER_SPAN}-00");
    let reply = gw
        .h1()
        .get("/public/a", &[("traceparent", &unsampled)])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(forwarded(&up).2, "00");

    let reply = gw.h1().get("/public/b", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let (trace, hop, flags) = forwarded(&up);
    assert_eq!(
        flags, "01",
        "a new trace the gateway samples goes upstream sampled"
    );
    let span = collector.span_of(&trace).await;
    assert_eq!(span["spanId"], hop.as_str());
    assert!(span.get("parentSpanId").is_none(), "{span}");
    assert_eq!(event_names(&span), ["authorized", "upstream_headers"]);
    assert!(attribute(&span, "enduser.id").is_null());
    // Spans leave in order: the unsampled request's would have arrived before this one.
    assert!(collector.spans().iter().all(|s| s["traceId"] != TRACE));

    let quiet = Collector::start().await;
    let otlp = format!(
        "endpoint: \"{}\", flush_interval: 50ms, sample_ratio: 0.0",
        quiet.endpoint()
    );
    let gw = Gateway::start(&config(&up, &otlp)).await;
    assert_eq!(gw.h1().get("/public/c", &[]).await.status, StatusCode::OK);
    assert_eq!(forwarded(&up).2, "00");
    let sampled = format!("00-{TRACE}-{CALLER_SPAN}-01");
    assert_eq!(
        gw.h1()
            .get("/public/d", &[("traceparent", &sampled)])
            .await
            .status,
        StatusCode::OK
    );
    quiet.span_of(TRACE).await;
    assert_eq!(quiet.spans().len(), 1, "only the caller-sampled request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_has_a_denied_event_and_a_5xx_has_status_error() {
    let collector = Collector::start().await;
    let up = Upstream::start().await;
    let otlp = format!(
        "endpoint: \"{}\", flush_interval: 50ms",
        collector.endpoint()
    );
    let gw = Gateway::start(&config(&up, &otlp)).await;

    let parent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let reply = gw.h1().get("/api/x", &[("traceparent", &parent)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let span = collector.span_of(TRACE).await;
    assert_eq!(event_names(&span), ["denied"]);
    assert_eq!(
        attribute(&span, "portcullis.decision"),
        &serde_json::json!({ "stringValue": "unauthenticated" })
    );
    assert!(span.get("status").is_none(), "a 4xx is not a server error");

    let other = "0af7651916cd43dd8448eb211c80319c";
    let parent = format!("00-{other}-{CALLER_SPAN}-01");
    let reply = gw.h1().get("/dead/x", &[("traceparent", &parent)]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let span = collector.span_of(other).await;
    assert_eq!(span["status"]["code"], 2, "STATUS_CODE_ERROR: {span}");
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        &serde_json::json!({ "intValue": "502" })
    );
    assert_eq!(event_names(&span), ["authorized"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_requests_are_served_and_the_lost_spans_counted() {
    let up = Upstream::start().await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let otlp = format!("endpoint: \"http://{closed}/v1/traces\", flush_interval: 10ms");
    let gw = Gateway::start(&config(&up, &otlp)).await;
    for _ in 0..5 {
        assert_eq!(gw.h1().get("/public/x", &[]).await.status, StatusCode::OK);
    }
    let series = "portcullis_otlp_spans_dropped_total{reason=\"export_failed\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&gw, series) < 5.0 {
        assert!(Instant::now() < deadline, "{}", gw.shared.metrics.render());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&gw, "portcullis_otlp_spans_exported_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collector_never_slows_a_request_and_a_full_queue_drops_spans() {
    let up = Upstream::start().await;
    // Accepts connections (the kernel does) but never answers.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let otlp = format!(
        "endpoint: \"http://{}/v1/traces\", flush_interval: 10ms, timeout: 30s, max_batch: 1, max_queue: 2",
        stuck.local_addr().expect("addr")
    );
    let gw = Gateway::start(&config(&up, &otlp)).await;
    let client = gw.h1();
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(client.get("/public/x", &[]).await.status, StatusCode::OK);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "20 requests took {:?}",
        started.elapsed()
    );
    // One span is being sent, two wait: the rest were dropped.
    let dropped = metric(
        &gw,
        "portcullis_otlp_spans_dropped_total{reason=\"queue_full\"}",
    );
    assert!((17.0..=19.0).contains(&dropped), "{dropped} dropped");
    drop(stuck);
}

#[test]
fn check_refuses_bad_otlp_settings_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    for (otlp, message) in [
        (
            "endpoint: https://c:4318/v1/traces",
            "only http:// is supported",
        ),
        ("endpoint: not a url", "is not a URL"),
        (
            "endpoint: http://c:4318/v1/traces, sample_ratio: 1.5",
            "sample_ratio: must be between 0.0 and 1.0",
        ),
        (
            "endpoint: http://c:4318/v1/traces, max_batch: 100, max_queue: 10",
            "max_queue: must be at least max_batch",
        ),
        (
            "endpoint: http://c:4318/v1/traces, flush_interval: 0s",
            "flush_interval: must be above 0",
        ),
    ] {
        std::fs::write(&path, format!("trace:\n  otlp: {{ {otlp} }}\n")).expect("write");
        let (code, _, stderr) = portcullis(["check", "-c", path.to_str().expect("utf-8")]);
        assert_eq!(code, 1, "{otlp}: {stderr}");
        assert!(
            stderr.contains(&format!("{}:2:", path.display())) && stderr.contains(message),
            "{otlp}: want line 2 and `{message}` in {stderr}"
        );
    }
}

#[test]
fn the_version_names_the_otlp_feature() {
    let (code, stdout, _) = portcullis(["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("cargo features: otlp;"), "{stdout}");
}
