//! W3C trace context through the gateway: a caller's trace continued with the gateway's own
//! span, a new trace when there is none (or an invalid one), `tracestate` kept only with its
//! trace, on HTTP/1.1 and HTTP/2.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use http::StatusCode;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// (version, trace id, span id, flags) of a `traceparent` value, checked for shape.
fn parts(value: &str) -> (String, String, String, String) {
    let fields: Vec<&str> = value.split('-').collect();
    assert_eq!(fields.len(), 4, "{value}");
    assert_eq!(value.len(), 55, "{value}");
    for field in &fields {
        assert!(
            field
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{value}"
        );
    }
    let owned: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    (
        owned[0].clone(),
        owned[1].clone(),
        owned[2].clone(),
        owned[3].clone(),
    )
}

#[tokio::test]
async fn a_callers_trace_is_continued_with_the_gateways_own_span() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    for client in [gw.h1(), gw.h2()] {
        let reply = client
            .get(
                "/public/x",
                &[
                    ("traceparent", PARENT),
                    ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let seen = up.last().unwrap();
        assert_eq!(seen.all("traceparent").len(), 1);
        let (version, trace, span, flags) = parts(&seen.header("traceparent").unwrap());
        assert_eq!(version, "00");
        assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
        assert_ne!(span, "00f067aa0ba902b7", "the gateway's own hop");
        assert_eq!(flags, "01", "the sampling decision is the caller's");
        assert_eq!(
            seen.header("tracestate").as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
    }
}

#[tokio::test]
async fn without_a_valid_traceparent_a_new_trace_starts_and_tracestate_is_dropped() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let mut traces = Vec::new();
    for sent in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("garbage"),
    ] {
        let mut headers = vec![("tracestate", "rojo=00f067aa0ba902b7")];
        if let Some(value) = sent {
            headers.push(("traceparent", value));
        }
        let reply = gw.h1().get("/public/x", &headers).await;
        assert_eq!(reply.status, StatusCode::OK);
        let seen = up.last().unwrap();
        let (version, trace, _, flags) = parts(&seen.header("traceparent").unwrap());
        assert_eq!(version, "00");
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            flags, "00",
            "{sent:?}: not sampled unless a caller decided so"
        );
        assert!(
            seen.header("tracestate").is_none(),
            "{sent:?}: state without its trace is dropped"
        );
        traces.push(trace);
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 4, "each request its own trace");
}
