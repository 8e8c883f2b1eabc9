//! The "Decisions" table of SPEC, row by row (which route, token and method combination gets
//! which status, and what reaches the upstream), and SPEC "Forwarding": `pass_token` forwards
//! only tokens the gateway accepted.

use crate::common::*;
use crate::tokens::{admin_claims_with, assert_all_invalid, labelled, std_header, Fx};

use serde_json::json;

// ---------------------------------------------------------------------------------------------
// SPEC "Decisions", row by row

#[tokio::test]
async fn public_route_forwards_anyone_and_identifies_only_valid_tokens() {
    let fx = Fx::start().await;
    let client = fx.client();
    // No token.
    let reply = client
        .get("/public/x", &[("x-forwarded-user", "root")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = fx.up.last().unwrap();
    assert_eq!(seen.target, "/public/x");
    assert!(
        seen.all("x-forwarded-user").is_empty(),
        "anonymous: no identity"
    );
    // A valid token still sets identity.
    let reply = fx.get("/public/x", &fixture_token("alice", "read")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(fx.up.last().unwrap().all("x-forwarded-user"), vec!["alice"]);
    // An invalid token (forged as root) is ignored, not trusted and not fatal.
    let forged = mint(
        Alg::Hs256,
        &std_header(),
        &fixture_claims("root", "admin"),
        b"not-the-secret-0123456789-abcdefghijklmnop",
    );
    let reply = fx.get("/public/x", &forged).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = fx.up.last().unwrap();
    assert!(
        seen.all("x-forwarded-user").is_empty(),
        "{:?}",
        seen.headers
    );
    assert!(seen.all("x-forwarded-scopes").is_empty());
    assert_eq!(fx.up.count(), 3);
}

#[tokio::test]
async fn protected_routes_without_a_token_are_401_with_a_plain_challenge() {
    let fx = Fx::start().await;
    let client = fx.client();
    for (method, path) in [
        ("GET", "/api/x"),
        ("HEAD", "/api/x"),
        ("POST", "/api/x"),
        ("DELETE", "/api/x"),
        ("GET", "/admin/x"),
        ("GET", "/api"),
    ] {
        let reply = client.call(method, path, &[], "").await;
        assert_eq!(reply.status, 401, "{method} {path}");
        assert_eq!(
            challenge_without_metadata(reply.header("www-authenticate")),
            Some(r#"Bearer realm="portcullis""#),
            "{method} {path}"
        );
        if method != "HEAD" {
            assert!(reply.json()["error"].is_string(), "{method} {path}");
        }
    }
    fx.assert_upstream_untouched("no token");
}

#[tokio::test]
async fn bad_expired_foreign_revoked_or_malformed_tokens_are_401_invalid_token() {
    let fx = Fx::start().await;
    let client = fx.client();
    let revoked = fixture_token("root", "admin");
    let logout = client
        .call(
            "POST",
            "/logout",
            &[("authorization", &format!("Bearer {revoked}"))],
            "",
        )
        .await;
    assert_eq!(logout.status, 204, "{}", logout.text());
    let mut tampered = fixture_token("alice", "read");
    // Swap the payload for one claiming admin, keeping alice's signature.
    let admin_payload = fixture_token("root", "admin")
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{admin_payload}.{}", parts[0], parts[2]);
    let cases = labelled(vec![
        ("tampered payload", tampered),
        (
            "bad signature",
            mint(
                Alg::Hs256,
                &std_header(),
                &fixture_claims("root", "admin"),
                b"not-the-secret-0123456789-abcdefghijklmnop",
            ),
        ),
        (
            "expired",
            admin_claims_with(|c| {
                c.insert("exp".into(), json!(now() - 3600));
                c.insert("iat".into(), json!(now() - 4000));
            }),
        ),
        (
            "wrong iss",
            admin_claims_with(|c| {
                c.insert("iss".into(), json!("https://other.test"));
            }),
        ),
        (
            "wrong aud",
            admin_claims_with(|c| {
                c.insert("aud".into(), json!("other"));
            }),
        ),
        ("revoked", revoked),
        ("malformed", "abc".to_owned()),
        (
            "not JSON",
            format!("{}.{}.AAAA", b64(b"hello"), b64(b"world")),
        ),
    ]);
    let replies = fx.get_all("/api/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("invalid tokens");
}

#[tokio::test]
async fn deny_routes_are_403_for_everyone_including_admin() {
    let fx = Fx::start().await;
    let client = fx.client();
    let root = format!("Bearer {}", fixture_token("root", "admin"));
    for (method, auth) in [
        ("GET", None),
        ("GET", Some(root.as_str())),
        ("POST", Some(root.as_str())),
        ("DELETE", Some(root.as_str())),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let reply = client.call(method, "/internal/x", &headers, "").await;
        assert_eq!(reply.status, 403, "{method} {auth:?}: {}", reply.text());
        assert!(reply.json()["error"].is_string());
    }
    fx.assert_upstream_untouched("deny");
}

#[tokio::test]
async fn unmatched_paths_are_404_even_for_admin_and_prefixes_match_whole_segments() {
    let fx = Fx::start().await;
    let root = fixture_token("root", "admin");
    let cases: Vec<(String, String)> = ["/nope", "/publicity", "/apix", "/administrator", "/"]
        .iter()
        .map(|p| (p.to_string(), root.clone()))
        .collect();
    let client = fx.client();
    for (path, token) in &cases {
        let reply = client.get_with_token(path, token).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
        assert!(reply.json()["error"].is_string());
        let anon = client.get(path, &[]).await;
        assert_eq!(anon.status, 404, "{path} anonymous");
    }
    fx.assert_upstream_untouched("404");
}

#[tokio::test]
async fn bad_request_targets_are_400_even_for_admin() {
    let fx = Fx::start().await;
    let client = fx.client();
    let root = fixture_token("root", "admin");
    for path in [
        "/api/a%2Fb",
        "/api/a%00b",
        "/api/a%5C..%5Cadmin",
        "/public/..%2Fadmin/x",
        "/api/a;b",
        "/api/%C0%AE%C0%AE/admin",
    ] {
        let reply = client.get_with_token(path, &root).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
    }
    fx.assert_upstream_untouched("bad targets");
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let gw = Gateway::start(&fixture_yaml(&url)).await;
    let reply = gw
        .h1()
        .get_with_token("/api/x", &fixture_token("root", "admin"))
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.json()["error"].is_string());
}

#[tokio::test]
async fn a_slow_upstream_is_504_after_its_timeout() {
    let up = Upstream::start().await;
    let yaml = fixture_yaml(&up.url()).replace(
        "upstreams:\n",
        &format!(
            "upstreams:\n  slowup: {{ url: \"{}\", timeout: 1s }}\n",
            up.url()
        ),
    ) + "  - { id: slow, path: /slow/**, upstream: slowup, scopes: [read] }\n";
    let gw = Gateway::start(&yaml).await;
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        gw.h1()
            .get_with_token("/slow/5000/x", &fixture_token("alice", "read")),
    )
    .await
    .expect("the gateway answers instead of hanging");
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.json()["error"].is_string());
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

// ---------------------------------------------------------------------------------------------
// SPEC "Forwarding": `pass_token` forwards only tokens the gateway accepted

#[tokio::test]
async fn pass_token_forwards_only_a_token_the_gateway_accepted() {
    let up = Upstream::start().await;
    let url = up.url();
    let yaml = fixture_yaml(&url).replace(
        &format!("  up: {url}\n"),
        &format!("  up: {{ url: {url}, pass_token: true }}\n"),
    );
    let gw = Gateway::start(&yaml).await;
    let revoked = fixture_token("bob", "read write");
    let logout = gw
        .h1()
        .call(
            "POST",
            "/logout",
            &[("authorization", &format!("Bearer {revoked}"))],
            "",
        )
        .await;
    assert_eq!(logout.status, 204, "{}", logout.text());
    let failed = labelled(vec![
        ("revoked", revoked),
        (
            "expired",
            admin_claims_with(|c| {
                c.insert("exp".into(), json!(now() - 3600));
                c.insert("iat".into(), json!(now() - 4000));
            }),
        ),
        (
            "forged signature",
            mint(
                Alg::Hs256,
                &std_header(),
                &fixture_claims("root", "admin"),
                b"not-the-secret-0123456789-abcdefghijklmnop",
            ),
        ),
    ]);
    for client in [gw.h1(), gw.h2()] {
        for (label, token) in &failed {
            // Public route: forwarded, anonymous, and without the refused credential.
            up.clear();
            let reply = client.get_with_token("/public/x", token).await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            let seen = up.last().expect("upstream saw the request");
            assert!(
                seen.all("authorization").is_empty(),
                "{label}: a refused token reached the upstream"
            );
            assert!(seen.all("x-forwarded-user").is_empty(), "{label}");
            // Protected route: refused before the upstream.
            up.clear();
            let reply = client.get_with_token("/api/x", token).await;
            assert_eq!(reply.status, 401, "{label}: {}", reply.text());
            assert_eq!(up.count(), 0, "{label}: forwarded from a protected route");
        }
        let valid = fixture_token("alice", "read");
        for path in ["/public/x", "/api/x"] {
            up.clear();
            let reply = client.get_with_token(path, &valid).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            let seen = up.last().expect("upstream saw the request");
            assert_eq!(seen.all("authorization"), vec![format!("Bearer {valid}")]);
            assert_eq!(seen.all("x-forwarded-user"), vec!["alice"], "{path}");
        }
    }
}
