//! Route rate limits per caller: exact counts at the boundary, `Retry-After` and the IETF
//! `RateLimit` headers, callers counted by verified subject or client address (never by a
//! header the client chose), the top-level default and a route's `false`.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::time::Duration;

use http::StatusCode;

fn config(up: &str, extra: &str) -> String {
    format!(
        r#"tokens: {{ secret: "{SECRET}", ttl: 5m }}
scopes: {{ read: Read }}
users:
  alice: {{ password: "{SECRET123_HASH}", scopes: [read] }}
  bob: {{ password: "{SECRET123_HASH}", scopes: [read] }}
upstreams: {{ up: {up} }}
{extra}routes:
  - {{ id: three, path: /three/**, upstream: up, scopes: [read], rate_limit: {{ requests: 3, per: 1m }} }}
  - {{ id: anon, path: /anon/**, upstream: up, public: true, rate_limit: {{ requests: 2, per: 1m }} }}
  - {{ id: told, path: /told/**, upstream: up, scopes: [read], rate_limit: {{ requests: 5, per: 1m, burst: 3, headers: true }} }}
  - {{ id: slow, path: /slow/**, upstream: up, public: true, rate_limit: {{ requests: 1, per: 2s }} }}
  - {{ id: free, path: /free/**, upstream: up, public: true, rate_limit: false }}
  - {{ id: default, path: /default/**, upstream: up, public: true }}
"#
    )
}

#[tokio::test]
async fn exactly_the_limit_passes_then_429_with_retry_after_and_ratelimit_headers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "")).await;
    let token = gw.h1().token("alice", "secret123").await;
    for n in 0..3 {
        let reply = gw.h1().get_with_token("/three/x", &token).await;
        assert_eq!(reply.status, StatusCode::OK, "request {n}");
        assert!(
            reply.header("ratelimit").is_none(),
            "not asked for under the limit"
        );
    }
    let reply = gw.h2().get_with_token("/three/x", &token).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json()["error"], "too_many_requests");
    // 3 per minute: the next one passes 20 s after the last.
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(reply.header("ratelimit-policy"), Some("\"three\";q=3;w=60"));
    assert_eq!(
        reply.header("ratelimit"),
        Some(format!("\"three\";r=0;t={retry}").as_str())
    );
    assert_eq!(
        up.count(),
        3,
        "the refused request never reached the upstream"
    );
    // Another user has an allowance of their own.
    let bob = gw.h1().token("bob", "secret123").await;
    assert_eq!(
        gw.h1().get_with_token("/three/x", &bob).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn anonymous_callers_are_counted_by_address_whatever_headers_they_send() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "")).await;
    let client = gw.h1();
    let spoofs: [&[(&str, &str)]; 3] = [
        &[("x-forwarded-for", "203.0.113.1")],
        &[
            ("x-real-ip", "203.0.113.2"),
            ("forwarded", "for=203.0.113.3"),
        ],
        &[
            ("x-forwarded-user", "someone-else"),
            ("authorization", "Bearer not.a.token"),
        ],
    ];
    let mut statuses = Vec::new();
    for headers in spoofs {
        statuses.push(client.get("/anon/x", headers).await.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "one peer, one allowance"
    );
}

#[tokio::test]
async fn a_route_can_send_the_headers_under_the_limit_too() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "")).await;
    let token = gw.h1().token("alice", "secret123").await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let reply = gw.h1().get_with_token("/told/x", &token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("ratelimit-policy"), Some("\"told\";q=5;w=60"));
        let state = reply.header("ratelimit").unwrap().to_owned();
        remaining.push(
            state
                .split(";r=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"], "burst 3 counts down");
    assert_eq!(
        gw.h1().get_with_token("/told/x", &token).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn retry_after_is_honest() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "")).await;
    let client = gw.h1();
    assert_eq!(client.get("/slow/x", &[]).await.status, StatusCode::OK);
    let reply = client.get("/slow/x", &[]).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        client.get("/slow/x", &[]).await.status,
        StatusCode::OK,
        "after Retry-After it passes"
    );
}

#[tokio::test]
async fn the_top_level_default_applies_unless_a_route_says_false() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "rate_limit: { requests: 1, per: 1m }\n")).await;
    let client = gw.h1();
    assert_eq!(client.get("/default/x", &[]).await.status, StatusCode::OK);
    assert_eq!(
        client.get("/default/x", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..5 {
        assert_eq!(client.get("/free/x", &[]).await.status, StatusCode::OK);
    }
    // A reload keeps everyone's count (the table outlives the snapshot).
    gw.write_config(&config(
        &up.url(),
        "rate_limit: { requests: 1, per: 1m }\n# edited\n",
    ));
    assert!(matches!(
        portcullis::reload::reload(&gw.config_path, &gw.shared),
        portcullis::reload::ReloadOutcome::Applied { .. }
    ));
    assert_eq!(
        client.get("/default/x", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[test]
fn check_refuses_limits_that_make_no_sense() {
    let dir = tempfile::tempdir().unwrap();
    for (limit, expected) in [
        ("{ requests: 0, per: 1s }", "requests"),
        ("{ requests: 1, per: 0s }", "per"),
        ("{ requests: 1, per: 2d }", "per"),
        ("{ requests: 5, per: 1s, burst: 0 }", "burst"),
        ("true", "rate_limit"),
    ] {
        let path = dir.path().join("gateway.yaml");
        std::fs::write(
            &path,
            format!("upstreams: {{ up: \"echo:\" }}\nroutes:\n  - {{ path: /a/**, upstream: up, public: true, rate_limit: {limit} }}\n"),
        )
        .unwrap();
        let (code, _, stderr) = portcullis(["--config", path.to_str().unwrap(), "check"]);
        assert_ne!(code, 0, "{limit}");
        assert!(stderr.contains(expected), "{limit}: {stderr}");
        assert!(
            stderr.contains("gateway.yaml:3:"),
            "names the line: {stderr}"
        );
    }
}
