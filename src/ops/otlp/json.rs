//! A batch of spans as an OTLP/HTTP JSON `ExportTraceServiceRequest` (the protobuf JSON
//! mapping: ids as lowercase hex, 64-bit integers and times as decimal strings, enums as
//! numbers).

use serde_json::{json, Value as Json};

use super::{SpanRecord, Value};

/// `SPAN_KIND_SERVER`.
const KIND_SERVER: u8 = 2;
/// `STATUS_CODE_ERROR`; spans without an error leave their status unset.
const STATUS_ERROR: u8 = 2;

/// The request body for `spans`, all from one service.
pub(super) fn export_request(service_name: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let body = json!({
        "resourceSpans": [{
            "resource": { "attributes": attributes(&[
                ("service.name", Value::Text(service_name.to_owned())),
                ("service.version", Value::Text(env!("CARGO_PKG_VERSION").to_owned())),
            ]) },
            "scopeSpans": [{
                "scope": { "name": "portcullis", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(span).collect::<Vec<_>>(),
            }],
        }],
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn span(span: &SpanRecord) -> Json {
    let mut out = json!({
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": KIND_SERVER,
        "startTimeUnixNano": span.start_unix_nanos.to_string(),
        "endTimeUnixNano": span.end_unix_nanos.to_string(),
        "attributes": attributes(&span.attributes),
        "events": span.events.iter().map(|(name, at)| json!({
            "timeUnixNano": at.to_string(),
            "name": name,
        })).collect::<Vec<_>>(),
    });
    if let Some(parent) = &span.parent_span_id {
        out["parentSpanId"] = json!(parent);
    }
    if span.error {
        out["status"] = json!({ "code": STATUS_ERROR });
    }
    out
}

fn attributes(attributes: &[(&'static str, Value)]) -> Json {
    attributes
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Text(text) => json!({ "stringValue": text }),
                Value::Int(number) => json!({ "intValue": number.to_string() }),
            };
            json!({ "key": key, "value": value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(error: bool, parent: Option<&str>) -> SpanRecord {
        SpanRecord {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: parent.map(str::to_owned),
            name: "GET items".into(),
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_002_000_000,
            attributes: vec![
                ("http.request.method", Value::Text("GET".into())),
                ("http.response.status_code", Value::Int(200)),
            ],
            events: vec![("authorized", 1_700_000_000_001_000_000)],
            error,
        }
    }

    fn parsed(spans: &[SpanRecord]) -> Json {
        serde_json::from_slice(&export_request("gw", spans)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_span_follows_the_protobuf_json_mapping() {
        let body = parsed(&[sample(false, Some("a3ce929d0e0e4736"))]);
        let resource = &body["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({ "key": "service.name", "value": { "stringValue": "gw" } })
        );
        let span = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["spanId"], "00f067aa0ba902b7");
        assert_eq!(span["parentSpanId"], "a3ce929d0e0e4736");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["endTimeUnixNano"], "1700000000002000000");
        assert_eq!(
            span["attributes"][1],
            json!({ "key": "http.response.status_code", "value": { "intValue": "200" } })
        );
        assert_eq!(
            span["events"][0],
            json!({ "timeUnixNano": "1700000000001000000", "name": "authorized" })
        );
        assert!(span.get("status").is_none());
    }

    #[test]
    fn a_5xx_span_has_status_error_and_a_new_trace_has_no_parent() {
        let body = parsed(&[sample(true, None), sample(false, None)]);
        let spans = &body["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert_eq!(spans[0]["status"]["code"], 2);
        assert!(spans[0].get("parentSpanId").is_none());
        assert_eq!(spans.as_array().map(Vec::len), Some(2));
    }
}
