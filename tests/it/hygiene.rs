//! Request hygiene before routing (SPEC "Request hygiene"). Method spelling: a method that is
//! not an all-uppercase token is refused with 400 before routing, on HTTP/1.1 and HTTP/2, so a
//! `methods:` rule can never be dodged by case. Django and Werkzeug uppercase the method
//! they receive, so `delete` forwarded as spelled would run their DELETE handler.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use http::StatusCode;

/// Every rule kind, each with a method-specific rule above a broader one, as operators write.
fn yaml(upstream: &str) -> String {
    format!(
        r#"tokens:
  issuer: https://gw.test
  audience: gw-upstreams
  secret: "{SECRET}"
  ttl: 5m
scopes:
  read: Read
  write: Write
  admin: Admin
users:
  reader: {{ password: "{SECRET123_HASH}", scopes: [read] }}
upstreams:
  up: {upstream}
routes:
  - {{ id: items-delete, path: /items/**, methods: [DELETE], upstream: up, scopes: [admin] }}
  - {{ id: items-write, path: /items/**, methods: [POST, PUT, PATCH], upstream: up, any_scopes: [write, admin] }}
  - {{ id: items-read, path: /items/**, upstream: up, scopes: [read] }}
  - {{ id: public-no-post, path: /public/**, methods: [POST], deny: true }}
  - {{ id: public, path: /public/**, upstream: up, public: true }}
"#
    )
}

const MIXED_CASE: &[&str] = &[
    "delete", "Delete", "dELETE", "post", "Post", "put", "patch", "get", "Get", "head", "options",
    "trace", "Trace", "connect", "propfind",
];

#[tokio::test]
async fn a_method_not_spelled_in_uppercase_is_refused_before_routing_on_every_rule_kind() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml(&up.url())).await;
    let reader = format!("Bearer {}", fixture_token("reader", "read"));
    for client in [gw.h1(), gw.h2()] {
        for method in MIXED_CASE {
            for (path, auth) in [
                ("/items/1", Some(reader.as_str())),
                ("/items/1", None),
                ("/public/1", None),
                ("/nowhere", None),
            ] {
                let headers: Vec<(&str, &str)> =
                    auth.map(|a| ("authorization", a)).into_iter().collect();
                let reply = client.call(method, path, &headers, "x").await;
                assert_eq!(
                    reply.status,
                    StatusCode::BAD_REQUEST,
                    "{method} {path} (auth: {}): {}",
                    auth.is_some(),
                    reply.text()
                );
                assert_eq!(reply.json()["error"], "invalid_request", "{method} {path}");
            }
        }
    }
    assert_eq!(up.count(), 0, "upstream saw {:?}", up.seen());
}

#[tokio::test]
async fn uppercase_methods_still_follow_their_rules() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml(&up.url())).await;
    let reader = format!("Bearer {}", fixture_token("reader", "read"));
    let auth = [("authorization", reader.as_str())];
    for client in [gw.h1(), gw.h2()] {
        assert_eq!(
            client.call("DELETE", "/items/1", &auth, "").await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            client.call("POST", "/items/1", &auth, "x").await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            client.call("GET", "/items/1", &auth, "").await.status,
            StatusCode::OK
        );
        assert_eq!(
            client.call("POST", "/public/1", &[], "x").await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            client.call("PUT", "/public/1", &[], "x").await.status,
            StatusCode::OK
        );
        assert_eq!(
            client.call("TRACE", "/public/1", &[], "").await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
    // Methods made of uppercase letters and other token characters are fine.
    assert_eq!(
        gw.h1().call("M-SEARCH", "/public/1", &[], "").await.status,
        StatusCode::OK
    );
    let methods: Vec<String> = up.seen().iter().map(|s| s.method.clone()).collect();
    assert!(
        methods.iter().all(|m| m == &m.to_ascii_uppercase()),
        "{methods:?}"
    );
}

#[tokio::test]
async fn a_raw_lowercase_request_line_is_refused_and_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml(&up.url())).await;
    let reader = fixture_token("reader", "read");
    let raw = format!(
        "delete /items/1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {reader}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let text = gw
        .h1()
        .raw(raw.as_bytes(), std::time::Duration::from_secs(1))
        .await;
    assert_eq!(parse_raw(&text).status, 400, "{text}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_empty_host_header_is_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml(&up.url())).await;
    for raw in [
        "GET /public/1 HTTP/1.1\r\nHost: \r\n\r\n",
        "GET /public/1 HTTP/1.1\r\nHost:\r\n\r\n",
        "GET /public/1 HTTP/1.0\r\nHost: \r\n\r\n",
    ] {
        let text = gw
            .h1()
            .raw(raw.as_bytes(), std::time::Duration::from_secs(1))
            .await;
        assert_eq!(parse_raw(&text).status, 400, "{raw:?}: {text}");
    }
    // HTTP/1.0 may leave Host out altogether.
    let text = gw
        .h1()
        .raw(
            b"GET /public/1 HTTP/1.0\r\n\r\n",
            std::time::Duration::from_secs(1),
        )
        .await;
    assert_eq!(parse_raw(&text).status, 200, "{text}");
    assert_eq!(up.count(), 1);
}
