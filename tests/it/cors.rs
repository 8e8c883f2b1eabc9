//! CORS answered by the gateway, on the wire over HTTP/1.1 and HTTP/2: preflights granted
//! and refused without a token and without reaching the upstream, the headers on the
//! gateway's own 401/403/429 and on forwarded answers (the upstream's replaced, not doubled),
//! `null` and `*`, the gateway's endpoints under the top-level policy, routes without a
//! policy left as they were, and the config refusing unsafe combinations.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use bytes::Bytes;
use http::StatusCode;

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

fn config(up: &str) -> String {
    format!(
        r#"tokens:
  issuer: https://gw.test
  secret: "{SECRET}"
  ttl: 5m
login:
  lockout: {{ failures: 2, window: 1m, duration: 1m }}
scopes:
  read: Read
  write: Write
users:
  alice: {{ password: "{SECRET123_HASH}", scopes: [read] }}
cors:
  allow_origins: ["{APP}", "http://localhost:3000"]
  allow_methods: [GET, POST, PUT]
  allow_headers: [Authorization, Content-Type]
  expose_headers: [X-Upstream]
  max_age: 10m
  allow_credentials: true
upstreams:
  up: {up}
routes:
  - {{ id: api, path: /api/**, upstream: up, scopes: [read] }}
  - {{ id: write, path: /write/**, methods: [PUT], upstream: up, scopes: [write] }}
  - {{ id: public, path: /public/**, upstream: up, public: true }}
  - {{ id: internal, path: /internal/**, deny: true }}
  - {{ id: any, path: /any/**, upstream: up, public: true, cors: {{ allow_origins: ["*"], allow_methods: [GET] }} }}
  - {{ id: off, path: /off/**, upstream: up, public: true, cors: {{ allow_origins: [] }} }}
  - {{ id: sandbox, path: /sandbox/**, upstream: up, public: true, cors: {{ allow_origins: ["null"] }} }}
"#
    )
}

fn clients(gw: &Gateway) -> [(&'static str, Client); 2] {
    [("h1", gw.h1()), ("h2", gw.h2())]
}

async fn preflight(
    client: &Client,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> Reply {
    let mut list = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    if let Some(headers) = headers {
        list.push(("access-control-request-headers", headers));
    }
    client.call("OPTIONS", path, &list, Bytes::new()).await
}

/// Not a single `Access-Control-Allow-*` header: the browser grants nothing.
fn no_grant(reply: &Reply) -> bool {
    !reply
        .headers
        .keys()
        .any(|name| name.as_str().starts_with("access-control-"))
}

fn all<'r>(reply: &'r Reply, name: &str) -> Vec<&'r str> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// The headers a granted origin's answer carries, whatever its status.
fn assert_granted(reply: &Reply, origin: &str, what: &str) {
    assert_eq!(
        all(reply, "access-control-allow-origin"),
        [origin],
        "{what}"
    );
    assert!(
        all(reply, "vary").iter().any(|v| v.contains("Origin")),
        "{what}: {:?}",
        reply.headers
    );
    let exposed = reply.header("access-control-expose-headers").unwrap_or("");
    assert!(exposed.contains("WWW-Authenticate"), "{what}: {exposed}");
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true"),
        "{what}"
    );
}

#[tokio::test]
async fn an_allowed_preflight_is_answered_204_by_the_gateway_without_a_token_or_forwarding() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url())).await;
    for (proto, client) in clients(&gw) {
        let reply = preflight(
            &client,
            "/api/items",
            APP,
            "PUT",
            Some("authorization,content-type"),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "{proto}: {}",
            reply.text()
        );
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some(APP),
            "{proto}"
        );
        assert_eq!(
            reply.header("access-control-allow-methods"),
            Some("GET, POST, PUT")
        );
        assert_eq!(
            reply.header("access-control-allow-headers"),
            Some("Authorization, Content-Type")
        );
        assert_eq!(reply.header("access-control-max-age"), Some("600"));
        assert_eq!(
            reply.header("access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(
            reply.header("vary"),
            Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        );
        // Without any requested headers, and for a public route, the same.
        let reply = preflight(&client, "/public/x", "http://localhost:3000", "GET", None).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{proto}");
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("http://localhost:3000")
        );
    }
    assert_eq!(up.count(), 0, "a preflight never reaches the upstream");
}

#[tokio::test]
async fn preflights_asking_for_what_is_not_allowed_get_403_and_no_grant() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url())).await;
    let cases: [(&str, &str, &str, Option<&str>, &str); 9] = [
        ("/api/x", EVIL, "GET", None, "origin not allowed"),
        (
            "/api/x",
            "https://app.example.evil.example",
            "GET",
            None,
            "origin not allowed",
        ),
        ("/api/x", "null", "GET", None, "origin not allowed"),
        ("/api/x", APP, "DELETE", None, "method not allowed"),
        ("/api/x", APP, "put", None, "method not allowed"),
        (
            "/api/x",
            APP,
            "GET",
            Some("authorization, x-secret"),
            "request headers not allowed",
        ),
        // No route serves a GET on /write (PUT only), none serves /nowhere, /internal is deny.
        ("/write/x", APP, "GET", None, "no route allows this request"),
        ("/nowhere", APP, "GET", None, "no route allows this request"),
        (
            "/internal/x",
            APP,
            "GET",
            None,
            "no route allows this request",
        ),
    ];
    for (proto, client) in clients(&gw) {
        for (path, origin, method, headers, why) in cases {
            let reply = preflight(&client, path, origin, method, headers).await;
            let what = format!("{proto} {origin} {method} {path} {headers:?}");
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{what}: {}",
                reply.text()
            );
            assert!(no_grant(&reply), "{what}: {:?}", reply.headers);
            let body = reply.json();
            assert_eq!(body["error"], "access_denied", "{what}");
            assert_eq!(
                body["error_description"],
                format!("CORS preflight refused: {why}"),
                "{what}"
            );
            assert_eq!(
                reply.header("vary"),
                Some("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
                "{what}"
            );
        }
    }
    assert_eq!(
        up.count(),
        0,
        "a refused preflight never reaches the upstream"
    );
}

#[tokio::test]
async fn a_plain_options_without_the_preflight_headers_is_routed_like_any_method() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url())).await;
    let token = gw.h1().token("alice", "secret123").await;
    for (proto, client) in clients(&gw) {
        // Origin alone, or the requested method alone, is no preflight: the route decides.
        for headers in [
            vec![("origin", APP)],
            vec![("access-control-request-method", "GET")],
        ] {
            let reply = client
                .call("OPTIONS", "/api/x", &headers, Bytes::new())
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{proto} {headers:?}"
            );
        }
        let auth = format!("Bearer {token}");
        let reply = client
            .call(
                "OPTIONS",
                "/api/x",
                &[("origin", APP), ("authorization", &auth)],
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{proto}");
        assert_eq!(up.last().unwrap().method, "OPTIONS");
        assert_granted(&reply, APP, proto);
    }
}

#[tokio::test]
async fn the_gateways_own_401_403_and_429_carry_cors_headers_for_an_allowed_origin() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url())).await;
    let token = gw.h1().token("alice", "secret123").await;
    for (proto, client) in clients(&gw) {
        let reply = client.get("/api/x", &[("origin", APP)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_granted(&reply, APP, &format!("{proto} 401"));
        assert!(reply.header("www-authenticate").is_some());
        let reply = client
            .call(
                "PUT",
                "/write/x",
                &[
                    ("origin", APP),
                    ("authorization", &format!("Bearer {token}")),
                ],
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_granted(&reply, APP, &format!("{proto} 403"));
        let reply = client.get("/internal/x", &[("origin", APP)]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_granted(&reply, APP, &format!("{proto} deny"));
        let reply = client.get("/nowhere", &[("origin", APP)]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_granted(&reply, APP, &format!("{proto} 404"));
        // A disallowed origin gets none of them, only `Vary`.
        let reply = client.get("/api/x", &[("origin", EVIL)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(no_grant(&reply), "{proto}: {:?}", reply.headers);
        assert_eq!(reply.header("vary"), Some("Origin"));
    }
    // Lock the login out (two failures), then the third attempt is 429, under the default.
    let client = gw.h2();
    let mut last = None;
    for _ in 0..3 {
        let reply = client
            .call(
                "POST",
                "/login",
                &[
                    ("origin", APP),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                "username=mallory&password=wrong",
            )
            .await;
        last = Some(reply);
    }
    let reply = last.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text()
    );
    assert_granted(&reply, APP, "429");
    assert!(reply
        .header("access-control-expose-headers")
        .unwrap()
        .contains("Retry-After"));
}

#[tokio::test]
async fn upstream_cors_headers_are_replaced_and_disallowed_origins_get_none() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url())).await;
    let upstream_says = [
        ("x-test-response-header", "access-control-allow-origin: *"),
        (
            "x-test-response-header",
            "access-control-allow-credentials: false",
        ),
        (
            "x-test-response-header",
            "access-control-expose-headers: x-secret",
        ),
        ("x-test-response-header", "vary: Accept-Encoding"),
    ];
    for (proto, client) in clients(&gw) {
        let mut headers = upstream_says.to_vec();
        headers.push(("origin", APP));
        let reply = client.get("/public/x", &headers).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_granted(&reply, APP, proto);
        assert_eq!(all(&reply, "access-control-allow-credentials"), ["true"]);
        assert_eq!(
            all(&reply, "access-control-expose-headers"),
            ["WWW-Authenticate, Retry-After, X-Upstream"]
        );
        assert_eq!(all(&reply, "vary"), ["Accept-Encoding", "Origin"]);
        for origin in [Some(EVIL), Some("null"), None] {
            let mut headers = upstream_says.to_vec();
            if let Some(origin) = origin {
                headers.push(("origin", origin));
            }
            let reply = client.get("/public/x", &headers).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert!(no_grant(&reply), "{proto} {origin:?}: {:?}", reply.headers);
        }
        // `cors: { allow_origins: [] }`: the gateway owns CORS there and grants nothing.
        let mut headers = upstream_says.to_vec();
        headers.push(("origin", APP));
        let reply = client.get("/off/x", &headers).await;
        assert!(no_grant(&reply), "{proto}: {:?}", reply.headers);
        let reply = preflight(&client, "/off/x", APP, "GET", None).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(no_grant(&reply));
    }
}

#[tokio::test]
async fn star_answers_star_and_null_is_granted_only_where_listed() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url())).await;
    for (proto, client) in clients(&gw) {
        let reply = client.get("/any/x", &[("origin", EVIL)]).await;
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("*"),
            "{proto}"
        );
        assert_eq!(reply.header("access-control-allow-credentials"), None);
        let reply = preflight(&client, "/any/x", EVIL, "GET", Some("authorization")).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
        // `*` does not cover `null`; the default list does not have it; `sandbox` lists it.
        for path in ["/any/x", "/public/x"] {
            let reply = client.get(path, &[("origin", "null")]).await;
            assert!(no_grant(&reply), "{proto} {path}");
            let reply = preflight(&client, path, "null", "GET", None).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{proto} {path}");
        }
        let reply = client.get("/sandbox/x", &[("origin", "null")]).await;
        assert_eq!(reply.header("access-control-allow-origin"), Some("null"));
        let reply = client.get("/sandbox/x", &[("origin", APP)]).await;
        assert!(no_grant(&reply), "a route's cors replaces the default");
    }
}

#[tokio::test]
async fn login_logout_and_published_documents_are_under_the_top_level_policy() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url())).await;
    for (proto, client) in clients(&gw) {
        let reply = preflight(&client, "/login", APP, "POST", Some("content-type")).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{proto}");
        assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
        let reply = preflight(&client, "/logout", APP, "POST", Some("authorization")).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{proto}");
        let reply = preflight(&client, "/.well-known/jwks.json", APP, "GET", None).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{proto}");
        // Methods the endpoints do not take are not granted.
        let reply = preflight(&client, "/login", APP, "GET", None).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{proto}");
        let reply = preflight(&client, "/.well-known/jwks.json", APP, "PUT", None).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{proto}");
        let reply = preflight(&client, "/login", EVIL, "POST", None).await;
        assert!(no_grant(&reply));

        let reply = client
            .call(
                "POST",
                "/login",
                &[("origin", APP), ("content-type", "application/json")],
                r#"{"username": "alice", "password": "secret123"}"#,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{proto}");
        assert_granted(&reply, APP, proto);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let token = reply.json()["access_token"].as_str().unwrap().to_owned();
        let reply = client
            .call(
                "POST",
                "/logout",
                &[
                    ("origin", APP),
                    ("authorization", &format!("Bearer {token}")),
                ],
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{proto}");
        assert_granted(&reply, APP, proto);
        let reply = client
            .get("/.well-known/jwks.json", &[("origin", APP)])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{proto}");
        assert_granted(&reply, APP, proto);
    }
}

#[tokio::test]
async fn without_a_policy_the_gateway_leaves_cors_and_preflights_to_the_routes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    for (proto, client) in clients(&gw) {
        // A preflight is an OPTIONS like any other: it needs what its rule needs…
        let reply = preflight(&client, "/admin/x", APP, "GET", None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{proto}");
        let reply = preflight(&client, "/api/x", APP, "GET", None).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{proto}: no rule lists OPTIONS"
        );
        assert!(no_grant(&reply));
        // …and on a public route it is forwarded, the upstream's CORS headers untouched.
        let reply = client
            .call(
                "OPTIONS",
                "/public/x",
                &[
                    ("origin", APP),
                    ("access-control-request-method", "GET"),
                    ("x-test-response-header", "access-control-allow-origin: *"),
                ],
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{proto}");
        assert_eq!(up.last().unwrap().method, "OPTIONS");
        assert_eq!(all(&reply, "access-control-allow-origin"), ["*"]);
    }
}

#[tokio::test]
async fn the_config_refuses_unsafe_or_malformed_cors_at_its_line() {
    let cases = [
        (
            "cors: { allow_origins: [\"*\"], allow_credentials: true }\n",
            "cannot be combined with `allow_credentials: true`",
        ),
        (
            "cors: { allow_origins: [\"https://a.example\", \"null\"], allow_credentials: true }\n",
            "the `null` origin",
        ),
        (
            "cors:\n  allow_origins: [\"https://a.example/\"]\n",
            "is not an origin",
        ),
        (
            "cors:\n  allow_origins: [\"https://A.example\"]\n",
            "lowercase",
        ),
        (
            "cors:\n  allow_origins: [\"https://a.example:443\"]\n",
            "default port",
        ),
        (
            "cors:\n  allow_origins: [\"*\", \"https://a.example\"]\n",
            "`*` alone",
        ),
        (
            "cors:\n  allow_origins: [\"https://a.example\"]\n  allow_methods: [get]\n",
            "allow_methods",
        ),
        (
            "cors:\n  allow_origins: [\"https://a.example\"]\n  allow_headers: [\"*\"]\n",
            "allow_headers",
        ),
        (
            "cors:\n  allow_origins: [\"https://a.example\"]\n  max_age: 2d\n",
            "cors.max_age",
        ),
        (
            "cors:\n  allow_origin: [\"https://a.example\"]\n",
            "unknown field",
        ),
    ];
    for (yaml, expected) in cases {
        let text = format!("upstreams: {{ up: \"echo:\" }}\n{yaml}routes: []\n");
        let err = portcullis::config::Config::from_text(std::path::Path::new("gw.yaml"), &text)
            .expect_err(yaml)
            .to_string();
        assert!(err.starts_with("gw.yaml:"), "{err}");
        assert!(
            err.split(':')
                .nth(1)
                .is_some_and(|line| line.parse::<u32>().is_ok()),
            "names the line: {err}"
        );
        assert!(err.contains(expected), "{yaml}: {err}");
    }
    // On a route, the complaint names the route.
    let text = "upstreams: { up: \"echo:\" }\nroutes:\n  - path: /x\n    upstream: up\n    public: true\n    cors: { allow_origins: [\"*\"], allow_credentials: true }\n";
    let err = portcullis::config::Config::from_text(std::path::Path::new("gw.yaml"), text)
        .expect_err("credentials with *")
        .to_string();
    assert!(err.starts_with("gw.yaml:6:"), "{err}");
    assert!(err.contains("routes[0] (/x): cors"), "{err}");
}
