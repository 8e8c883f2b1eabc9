//! The routing table and request-target / Host hygiene (SPEC "Path patterns", "Request
//! hygiene", "Decisions"; THREATS P-19, P-20, T-01…T-08, T-10), black-box: the oracle is the
//! pair (status the client got, what the recording upstream received).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Write a raw HTTP/1.1 request head (everything up to, not including, the blank line; a
/// `Connection: close` is appended) and parse the answer.
async fn raw_head(gw: &Gateway, head: &str) -> Answer {
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    parse_raw(
        &gw.h1()
            .raw(request.as_bytes(), Duration::from_secs(2))
            .await,
    )
}

/// `METHOD target HTTP/1.1` with `Host: localhost` and extra header lines.
async fn raw(gw: &Gateway, method: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost");
    for (name, value) in headers {
        head.push_str(&format!("\r\n{name}: {value}"));
    }
    raw_head(gw, &head).await
}

/// HTTP/2 request through the h2 client.
async fn h2(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    Answer::from_reply(&gw.h2().call(method, path, headers, "").await)
}

/// HTTP/1.1 request through the hyper client.
async fn h1(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    Answer::from_reply(&gw.h1().call(method, path, headers, "").await)
}

/// Assert a refusal: this status, a JSON error body, and an upstream that saw nothing new.
fn refused(label: &str, answer: &Answer, up: &Upstream, code: u16) {
    assert_eq!(
        answer.status, code,
        "{label}: expected {code}, got {answer:?}"
    );
    let json = answer
        .json()
        .unwrap_or_else(|| panic!("{label}: error body is not JSON: {answer:?}"));
    assert!(json["error"].is_string(), "{label}: {json}");
    assert!(json["error_description"].is_string(), "{label}: {json}");
    if code == 400 {
        assert_eq!(json["error"], "invalid_request", "{label}: {json}");
    }
    assert_eq!(
        up.count(),
        0,
        "{label}: refused request reached the upstream: {:?}",
        up.seen()
    );
}

/// Assert the request was forwarded once, with this method and target.
fn forwarded(label: &str, answer: &Answer, up: &Upstream, method: &str, target: &str) {
    assert_eq!(
        answer.status, 200,
        "{label}: expected forwarding, got {answer:?}"
    );
    let seen = up.seen();
    assert_eq!(
        seen.len(),
        1,
        "{label}: upstream should see exactly one request: {seen:?}"
    );
    assert_eq!(seen[0].method, method, "{label}: method forwarded");
    assert_eq!(seen[0].target, target, "{label}: target forwarded");
}

/// The fixture config with its `routes:` replaced.
fn with_routes(up: &Upstream, routes: &str) -> String {
    let base = fixture_yaml(&up.url());
    let (head, _) = base.split_once("routes:\n").expect("fixture has routes");
    format!("{head}routes:\n{routes}")
}

/// Routes exercising the pattern language.
const PATTERN_ROUTES: &str = r#"  - { id: pub, path: /public/**, upstream: up, public: true }
  - { id: fm-one, path: "/fm/{id}", upstream: up, public: true }
  - { id: fm-rest, path: /fm/**, deny: true }
  - { id: items, path: "/items/{id}", upstream: up, public: true }
  - { id: star, path: /star/*/end, upstream: up, public: true }
  - { id: exact, path: /exact, upstream: up, public: true }
  - { id: ci, path: /ci/**, case_insensitive: true, upstream: up, public: true }
  - { id: cs, path: /cs/**, upstream: up, public: true }
  - { id: get-only, path: /m/**, methods: [GET], upstream: up, public: true }
  - { id: post-only, path: /p/**, methods: [POST], upstream: up, public: true }
"#;

/// A catch-all public route, so any request the gateway wrongly lets through is visible
/// upstream.
const CATCH_ALL_ROUTES: &str = r#"  - { id: secret, path: /secret/**, case_insensitive: true, deny: true }
  - { id: all, path: /**, upstream: up, public: true }
"#;

/// Host-scoped routes.
const HOST_ROUTES: &str = r#"  - { id: api-host, path: /h/**, host: api.test, upstream: up, public: true }
  - { id: other-hosts, path: /h/**, deny: true }
"#;

/// Which path outcome a table case expects.
#[derive(Clone, Copy, Debug)]
enum Want {
    Forward(&'static str),
    Status(u16),
}

/// Run GET `path` over HTTP/1.1 and HTTP/2 for each case.
async fn run_table(gw: &Gateway, up: &Upstream, cases: &[(&str, Want)]) {
    for (path, want) in cases {
        for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
            up.clear();
            let answer = Answer::from_reply(&client.get(path, &[]).await);
            let label = format!("{proto} GET {path:?}");
            match want {
                Want::Forward(target) => forwarded(&label, &answer, up, "GET", target),
                Want::Status(code) => refused(&label, &answer, up, *code),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decisions: public, deny, no match, protected.

#[tokio::test]
async fn public_route_is_forwarded_without_a_token() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    run_table(
        &gw,
        &up,
        &[
            ("/public/x", Want::Forward("/public/x")),
            ("/public/a/b/c", Want::Forward("/public/a/b/c")),
        ],
    )
    .await;
}

#[tokio::test]
async fn deny_route_answers_403_for_everyone_and_never_forwards() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let bearer = format!("Bearer {}", fixture_token("root", "admin"));
    for path in ["/internal", "/internal/", "/internal/x", "/internal/a/b"] {
        for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
            up.clear();
            let anonymous = Answer::from_reply(&client.get(path, &[]).await);
            refused(&format!("{proto} {path} anonymous"), &anonymous, &up, 403);
            let admin = Answer::from_reply(&client.get(path, &[("authorization", &bearer)]).await);
            refused(&format!("{proto} {path} admin"), &admin, &up, 403);
        }
    }
}

#[tokio::test]
async fn unmatched_path_is_404_and_never_forwarded_even_for_admin() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let bearer = format!("Bearer {}", fixture_token("root", "admin"));
    for path in ["/", "/nothing", "/nothing/here", "/apis", "/Api/items"] {
        for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
            up.clear();
            let anonymous = Answer::from_reply(&client.get(path, &[]).await);
            refused(&format!("{proto} {path} anonymous"), &anonymous, &up, 404);
            let admin = Answer::from_reply(&client.get(path, &[("authorization", &bearer)]).await);
            refused(&format!("{proto} {path} admin"), &admin, &up, 404);
        }
    }
}

#[tokio::test]
async fn protected_route_without_token_is_401_with_bearer_challenge() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    for path in ["/api/items", "/api", "/admin/users", "/admin"] {
        for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
            up.clear();
            let answer = Answer::from_reply(&client.get(path, &[]).await);
            let label = format!("{proto} {path}");
            refused(&label, &answer, &up, 401);
            assert_eq!(
                challenge_without_metadata(answer.header("www-authenticate")),
                Some("Bearer realm=\"portcullis\""),
                "{label}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Methods (P-19, P-20).

#[tokio::test]
async fn each_method_needs_the_scopes_of_its_own_rule() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let read = format!("Bearer {}", fixture_token("alice", "read"));
    let write = format!("Bearer {}", fixture_token("bob", "read write"));
    let admin = format!("Bearer {}", fixture_token("root", "admin"));
    // (method, token, expected: Ok(()) = forwarded, Err(status))
    let cases: &[(&str, &str, Result<(), u16>)] = &[
        ("GET", &read, Ok(())),
        ("POST", &read, Err(403)),
        ("PUT", &read, Err(403)),
        ("PATCH", &read, Err(403)),
        ("DELETE", &read, Err(403)),
        ("POST", &write, Ok(())),
        ("PUT", &write, Ok(())),
        ("PATCH", &write, Ok(())),
        ("DELETE", &write, Err(403)),
        ("DELETE", &admin, Ok(())),
        ("GET", &admin, Ok(())),
    ];
    for (method, token, want) in cases {
        for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
            up.clear();
            let answer = Answer::from_reply(
                &client
                    .call(method, "/api/items/1", &[("authorization", token)], "")
                    .await,
            );
            let label = format!("{proto} {method} /api/items/1 with {}", &token[..20]);
            match want {
                Ok(()) => forwarded(&label, &answer, &up, method, "/api/items/1"),
                Err(code) => {
                    refused(&label, &answer, &up, *code);
                    let challenge = answer.header("www-authenticate").unwrap_or_default();
                    assert!(
                        challenge.contains("error=\"insufficient_scope\""),
                        "{label}: {challenge}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn head_is_allowed_by_a_get_rule_and_needs_the_same_scopes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let read = format!("Bearer {}", fixture_token("alice", "read"));
    for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
        up.clear();
        let anonymous = client.call("HEAD", "/api/items", &[], "").await;
        assert_eq!(anonymous.status, 401, "{proto}: anonymous HEAD");
        assert_eq!(
            up.count(),
            0,
            "{proto}: anonymous HEAD reached the upstream"
        );
        let reply = client
            .call("HEAD", "/api/items", &[("authorization", &read)], "")
            .await;
        assert_eq!(reply.status, 200, "{proto}: HEAD with read token");
        let seen = up.last().expect("forwarded");
        assert_eq!(
            (seen.method.as_str(), seen.target.as_str()),
            ("HEAD", "/api/items"),
            "{proto}"
        );
    }
    // On a public GET-only route HEAD matches too.
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, PATTERN_ROUTES)).await;
    let reply = gw.h1().call("HEAD", "/m/x", &[], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().expect("forwarded").method, "HEAD");
}

#[tokio::test]
async fn methods_no_rule_lists_are_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, PATTERN_ROUTES)).await;
    let cases: &[(&str, &str)] = &[
        ("POST", "/m/x"),
        ("PUT", "/m/x"),
        ("DELETE", "/m/x"),
        ("OPTIONS", "/m/x"),
        ("PROPFIND", "/m/x"),
        ("FOO", "/m/x"),
        ("GET", "/p/x"),
        ("HEAD", "/p/x"),
    ];
    for (method, path) in cases {
        for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
            up.clear();
            let answer = Answer::from_reply(&client.call(method, path, &[], "").await);
            let label = format!("{proto} {method} {path}");
            assert!(
                matches!(answer.status, 404 | 405),
                "{label}: expected 404/405, got {answer:?}"
            );
            assert_eq!(
                up.count(),
                0,
                "{label}: reached the upstream: {:?}",
                up.seen()
            );
        }
    }
    // And the listed ones are.
    up.clear();
    let answer = h1(&gw, "POST", "/p/x", &[]).await;
    forwarded("POST /p/x", &answer, &up, "POST", "/p/x");
}

#[tokio::test]
async fn lowercase_get_is_not_get_and_is_never_forwarded_by_a_get_rule() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, PATTERN_ROUTES)).await;
    for method in ["get", "GeT", "Get", "head"] {
        up.clear();
        let answer = raw(&gw, method, "/m/x", &[]).await;
        let label = format!("raw {method} /m/x");
        assert!(
            matches!(answer.status, 400 | 404 | 405),
            "{label}: got {answer:?}"
        );
        assert_eq!(
            up.count(),
            0,
            "{label}: reached the upstream: {:?}",
            up.seen()
        );
        // Over HTTP/2 too (extension methods are case-sensitive tokens).
        up.clear();
        let answer = h2(&gw, method, "/m/x", &[]).await;
        let label = format!("HTTP/2 {method} /m/x");
        assert!(
            matches!(answer.status, 400 | 404 | 405),
            "{label}: got {answer:?}"
        );
        assert_eq!(
            up.count(),
            0,
            "{label}: reached the upstream: {:?}",
            up.seen()
        );
    }
    // The same in the fixture: a read token on the GET-only rule.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let read = format!("Bearer {}", fixture_token("alice", "read"));
    let answer = raw(&gw, "get", "/api/items", &[("Authorization", &read)]).await;
    assert!(
        matches!(answer.status, 400 | 403 | 404 | 405),
        "get /api/items: {answer:?}"
    );
    assert_eq!(up.count(), 0, "lowercase get reached the upstream");
    // Sanity: the uppercase one is forwarded.
    let answer = raw(&gw, "GET", "/api/items", &[("Authorization", &read)]).await;
    forwarded("GET /api/items", &answer, &up, "GET", "/api/items");
}

#[tokio::test]
async fn trace_is_refused_with_405_and_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    let admin = format!("Bearer {}", fixture_token("root", "admin"));
    let answer = raw(&gw, "TRACE", "/x", &[("Authorization", &admin)]).await;
    refused("raw TRACE /x", &answer, &up, 405);
    let allow = answer.header("allow").unwrap_or_default().to_owned();
    assert!(
        !allow.is_empty() && !allow.contains("TRACE"),
        "Allow: {allow:?}"
    );
    for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
        let answer = Answer::from_reply(&client.call("TRACE", "/x", &[], "").await);
        refused(&format!("{proto} TRACE /x"), &answer, &up, 405);
    }
}

// ---------------------------------------------------------------------------------------------
// Pattern language.

#[tokio::test]
async fn first_matching_rule_wins() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, PATTERN_ROUTES)).await;
    run_table(
        &gw,
        &up,
        &[
            ("/fm/a", Want::Forward("/fm/a")),
            ("/fm/a/", Want::Forward("/fm/a/")),
            ("/fm/a/b", Want::Status(403)),
            ("/fm", Want::Status(403)),
            ("/fm/", Want::Status(403)),
        ],
    )
    .await;

    // A deny listed first shadows a later public rule for the same path.
    let up = Upstream::start().await;
    let routes = "  - { id: shut, path: /shadow/**, deny: true }\n  - { id: open, path: /shadow/open, upstream: up, public: true }\n";
    let gw = Gateway::start(&with_routes(&up, routes)).await;
    run_table(&gw, &up, &[("/shadow/open", Want::Status(403))]).await;

    // Reversed, the public rule comes first and wins for its path only.
    let up = Upstream::start().await;
    let routes = "  - { id: open, path: /shadow/open, upstream: up, public: true }\n  - { id: shut, path: /shadow/**, deny: true }\n";
    let gw = Gateway::start(&with_routes(&up, routes)).await;
    run_table(
        &gw,
        &up,
        &[
            ("/shadow/open", Want::Forward("/shadow/open")),
            ("/shadow/other", Want::Status(403)),
        ],
    )
    .await;
}

#[tokio::test]
async fn named_parameter_and_star_match_exactly_one_non_empty_segment() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, PATTERN_ROUTES)).await;
    run_table(
        &gw,
        &up,
        &[
            ("/items/1", Want::Forward("/items/1")),
            ("/items/abc-def", Want::Forward("/items/abc-def")),
            ("/items/1/", Want::Forward("/items/1/")),
            ("/items/1/x", Want::Status(404)),
            ("/items", Want::Status(404)),
            ("/items/", Want::Status(404)),
            ("/items//", Want::Status(404)),
            ("/star/a/end", Want::Forward("/star/a/end")),
            ("/star/a/b/end", Want::Status(404)),
            ("/star//end", Want::Status(404)),
            ("/star/end", Want::Status(404)),
            ("/star/a/end/x", Want::Status(404)),
        ],
    )
    .await;
}

#[tokio::test]
async fn double_star_matches_zero_or_more_segments() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, PATTERN_ROUTES)).await;
    run_table(
        &gw,
        &up,
        &[
            ("/public", Want::Forward("/public")),
            ("/public/", Want::Forward("/public/")),
            ("/public/a", Want::Forward("/public/a")),
            ("/public/a/b/c/d", Want::Forward("/public/a/b/c/d")),
            ("/publicx", Want::Status(404)),
        ],
    )
    .await;
    // `/**` matches the root itself.
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    run_table(
        &gw,
        &up,
        &[
            ("/", Want::Forward("/")),
            ("/anything/at/all", Want::Forward("/anything/at/all")),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_single_trailing_slash_is_ignored_when_matching_and_kept_when_forwarding() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, PATTERN_ROUTES)).await;
    run_table(
        &gw,
        &up,
        &[
            ("/exact", Want::Forward("/exact")),
            ("/exact/", Want::Forward("/exact/")),
            ("/exact//", Want::Forward("/exact/")),
            ("/exact/.", Want::Forward("/exact/")),
            ("/exact/x", Want::Status(404)),
            ("/exactx", Want::Status(404)),
            ("/Exact", Want::Status(404)),
        ],
    )
    .await;
}

#[tokio::test]
async fn case_insensitive_route_matches_any_case_and_forwards_the_path_as_sent() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, PATTERN_ROUTES)).await;
    run_table(
        &gw,
        &up,
        &[
            ("/ci/x", Want::Forward("/ci/x")),
            ("/CI/X", Want::Forward("/CI/X")),
            ("/Ci/x", Want::Forward("/Ci/x")),
            ("/cs/x", Want::Forward("/cs/x")),
            ("/CS/x", Want::Status(404)),
            ("/Cs/x", Want::Status(404)),
        ],
    )
    .await;
}

#[tokio::test]
async fn case_insensitive_deny_rule_blocks_every_spelling_before_a_catch_all() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    run_table(
        &gw,
        &up,
        &[
            ("/secret/x", Want::Status(403)),
            ("/SECRET/x", Want::Status(403)),
            ("/Secret/x", Want::Status(403)),
            ("/sEcReT", Want::Status(403)),
            ("/%53ecret/x", Want::Status(403)),
            ("/x/../SECRET/y", Want::Status(403)),
            ("/secrets/x", Want::Forward("/secrets/x")),
            ("/other", Want::Forward("/other")),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Host rules (T-07) and forwarded-host headers (T-10).

#[tokio::test]
async fn host_rule_matches_host_case_insensitively_ignoring_port_and_trailing_dot() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, HOST_ROUTES)).await;
    for host in [
        "api.test",
        "API.TEST",
        "Api.Test",
        "api.test:8443",
        "api.test:443",
        "api.test.",
        "API.test.:443",
    ] {
        up.clear();
        let answer = raw_head(&gw, &format!("GET /h/x HTTP/1.1\r\nHost: {host}")).await;
        forwarded(&format!("Host: {host}"), &answer, &up, "GET", "/h/x");
        assert_eq!(
            up.last().expect("seen").header("host").as_deref(),
            Some(host),
            "Host is kept as sent"
        );
    }
    for host in [
        "localhost",
        "api.test.evil",
        "evil.api.test",
        "apitest",
        "api-test",
        "[::1]",
        "127.0.0.1",
    ] {
        up.clear();
        let answer = raw_head(&gw, &format!("GET /h/x HTTP/1.1\r\nHost: {host}")).await;
        refused(&format!("Host: {host}"), &answer, &up, 403);
    }
    // HTTP/2: the host is `:authority`.
    for (authority, allowed) in [
        ("api.test", true),
        ("API.Test:8443", true),
        ("localhost", false),
        ("other.test", false),
    ] {
        up.clear();
        let request = http::Request::builder()
            .method("GET")
            .uri(format!("https://{authority}/h/x"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let answer = Answer::from_reply(&gw.h2().send(request).await);
        let label = format!("HTTP/2 :authority {authority}");
        if allowed {
            forwarded(&label, &answer, &up, "GET", "/h/x");
        } else {
            refused(&label, &answer, &up, 403);
        }
    }
}

#[tokio::test]
async fn forwarded_host_headers_from_the_client_never_select_a_host_rule() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, HOST_ROUTES)).await;
    let spoofs: &[(&str, &str)] = &[
        ("X-Forwarded-Host", "api.test"),
        ("Forwarded", "host=api.test;proto=https"),
        ("X-Forwarded-Server", "api.test"),
        ("X-Host", "api.test"),
        ("X-Original-Host", "api.test"),
    ];
    for (name, value) in spoofs {
        up.clear();
        let answer = raw(&gw, "GET", "/h/x", &[(name, value)]).await;
        refused(&format!("raw {name}: {value}"), &answer, &up, 403);
        let answer = h2(&gw, "GET", "/h/x", &[(name, value)]).await;
        refused(&format!("HTTP/2 {name}: {value}"), &answer, &up, 403);
    }
}

// ---------------------------------------------------------------------------------------------
// Request targets (T-01…T-04, T-08).

#[tokio::test]
async fn absolute_form_target_is_refused_with_400_and_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    for target in [
        "http://evil.test/admin/users",
        "https://localhost/x",
        "http://localhost/x",
        "https://evil.test/secret/x",
        "http://localhost:443/x",
    ] {
        let answer = raw(&gw, "GET", target, &[]).await;
        refused(&format!("GET {target}"), &answer, &up, 400);
    }
}

#[tokio::test]
async fn connect_is_refused_with_405_and_never_tunnelled() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    let upstream_authority = up.addr.to_string();
    for target in [
        "upstream.internal:22",
        "127.0.0.1:22",
        upstream_authority.as_str(),
    ] {
        let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}");
        let answer = raw_head(&gw, &head).await;
        refused(&format!("CONNECT {target}"), &answer, &up, 405);
        assert!(
            !answer
                .header("allow")
                .unwrap_or_default()
                .contains("CONNECT"),
            "{answer:?}"
        );
    }
    assert_eq!(
        up.connections(),
        0,
        "the gateway opened a connection to the upstream"
    );
}

#[tokio::test]
async fn options_asterisk_is_answered_locally_with_204_and_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    let answer = raw(&gw, "OPTIONS", "*", &[]).await;
    assert_eq!(answer.status, 204, "{answer:?}");
    assert!(
        answer.header("allow").is_some_and(|a| a.contains("GET")),
        "{answer:?}"
    );
    assert_eq!(
        up.count(),
        0,
        "OPTIONS * reached the upstream: {:?}",
        up.seen()
    );
    // A token does not change that, and neither does a body-less keep-alive follow-up.
    let admin = format!("Bearer {}", fixture_token("root", "admin"));
    let answer = raw(&gw, "OPTIONS", "*", &[("Authorization", &admin)]).await;
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(up.count(), 0, "OPTIONS * reached the upstream");
    // OPTIONS on a real path is an ordinary request (forwarded by the catch-all).
    let answer = raw(&gw, "OPTIONS", "/x", &[]).await;
    forwarded("OPTIONS /x", &answer, &up, "OPTIONS", "/x");
}

#[tokio::test]
async fn asterisk_target_with_any_other_method_is_400() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    for method in ["GET", "HEAD", "POST", "DELETE"] {
        let answer = raw(&gw, method, "*", &[("Content-Length", "0")]).await;
        assert_eq!(answer.status, 400, "{method} *: {answer:?}");
        if method != "HEAD" {
            let json = answer
                .json()
                .unwrap_or_else(|| panic!("{method} *: not JSON: {answer:?}"));
            assert_eq!(json["error"], "invalid_request", "{method} *");
        }
        assert_eq!(up.count(), 0, "{method} * reached the upstream");
    }
}

#[tokio::test]
async fn relative_or_authority_form_target_is_400() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    for target in [
        "admin",
        "admin/a/b",
        "public/x",
        "localhost:443",
        "localhost",
        "x?y=1",
        ".",
        "../x",
    ] {
        let answer = raw(&gw, "GET", target, &[]).await;
        assert_eq!(answer.status, 400, "GET {target}: {answer:?}");
        if let Some(json) = answer.json() {
            assert_eq!(json["error"], "invalid_request", "GET {target}");
        }
        assert_eq!(
            up.count(),
            0,
            "GET {target} reached the upstream: {:?}",
            up.seen()
        );
    }
}

#[tokio::test]
async fn http2_get_with_asterisk_path_is_400() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTPS);
    parts.authority = Some(http::uri::Authority::from_static("localhost"));
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("*"));
    let uri = http::Uri::from_parts(parts).expect("uri with :path *");
    for (method, want) in [("GET", 400u16), ("OPTIONS", 204)] {
        let request = http::Request::builder()
            .method(method)
            .uri(uri.clone())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let mut conn = gw.h2().connect().await;
        match conn.try_send(request).await {
            Ok(reply) => {
                assert_eq!(
                    reply.status.as_u16(),
                    want,
                    "HTTP/2 {method} :path *: {}",
                    reply.text()
                );
                assert_eq!(up.count(), 0, "HTTP/2 {method} * reached the upstream");
            }
            Err(e) => panic!("the h2 client could not send {method} :path * ({e})"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Host header validity (T-05) and HTTP/2 host vs :authority (T-06).

#[tokio::test]
async fn invalid_duplicate_or_missing_host_is_400_and_never_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    let heads = [
        (
            "duplicate Host",
            "GET /x HTTP/1.1\r\nHost: localhost\r\nHost: evil.test",
        ),
        (
            "duplicate identical Host",
            "GET /x HTTP/1.1\r\nHost: localhost\r\nHost: localhost",
        ),
        ("missing Host", "GET /x HTTP/1.1\r\nUser-Agent: t"),
        ("userinfo", "GET /x HTTP/1.1\r\nHost: localhost@evil.test"),
        (
            "userinfo before host",
            "GET /x HTTP/1.1\r\nHost: user@localhost",
        ),
        (
            "userinfo with password",
            "GET /x HTTP/1.1\r\nHost: user:pw@localhost:443",
        ),
        ("double port", "GET /x HTTP/1.1\r\nHost: localhost:80:80"),
        ("non-numeric port", "GET /x HTTP/1.1\r\nHost: localhost:abc"),
        ("empty port", "GET /x HTTP/1.1\r\nHost: localhost:"),
        ("huge port", "GET /x HTTP/1.1\r\nHost: localhost:99999999"),
        ("path in Host", "GET /x HTTP/1.1\r\nHost: localhost/x"),
        ("space in Host", "GET /x HTTP/1.1\r\nHost: local host"),
        (
            "comma list",
            "GET /x HTTP/1.1\r\nHost: localhost, evil.test",
        ),
    ];
    for (label, head) in heads {
        let answer = raw_head(&gw, head).await;
        assert_eq!(answer.status, 400, "{label}: {answer:?}");
        if let Some(json) = answer.json() {
            assert_eq!(json["error"], "invalid_request", "{label}");
        }
        assert_eq!(
            up.count(),
            0,
            "{label}: reached the upstream: {:?}",
            up.seen()
        );
    }
    // Sanity: a well-formed one passes.
    let answer = raw_head(&gw, "GET /x HTTP/1.1\r\nHost: localhost:8443").await;
    forwarded("valid Host", &answer, &up, "GET", "/x");
}

#[tokio::test]
async fn http2_host_header_differing_from_authority_is_400() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, CATCH_ALL_ROUTES)).await;
    let request = http::Request::builder()
        .method("GET")
        .uri("https://localhost/x")
        .header("host", "evil.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let answer = Answer::from_reply(&gw.h2().send(request).await);
    refused(
        "HTTP/2 :authority localhost, host evil.test",
        &answer,
        &up,
        400,
    );

    // And with host rules, a `host` header cannot pick the rule for a different :authority.
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_routes(&up, HOST_ROUTES)).await;
    let request = http::Request::builder()
        .method("GET")
        .uri("https://localhost/h/x")
        .header("host", "api.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let answer = Answer::from_reply(&gw.h2().send(request).await);
    refused(
        "HTTP/2 :authority localhost, host api.test",
        &answer,
        &up,
        400,
    );

    // The same value in both is fine.
    let request = http::Request::builder()
        .method("GET")
        .uri("https://api.test/h/x")
        .header("host", "api.test")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let answer = Answer::from_reply(&gw.h2().send(request).await);
    forwarded(
        "HTTP/2 :authority = host = api.test",
        &answer,
        &up,
        "GET",
        "/h/x",
    );
}
