//! Routes' `claims:` conditions end to end: tokens of the local issuer (minted by a holder of
//! its secret) and of an external provider, 403 `access_denied` naming the failed condition
//! and never the token's value, scopes decided first, the config refusing malformed
//! conditions at their line, and `explain` and rule tests naming the failed condition.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use http::StatusCode;
use serde_json::{json, Value};

const BILLING: &str = r#"
  - path: /billing/**
    upstream: up
    scopes: [read]
    claims:
      - { claim: org.id, equals: 42 }
      - { claim: realm_access.roles, contains: billing }
      - { claim: email_verified, equals: true }
      - { claim: tier, any_of: [gold, platinum] }
      - { claim: department, exists: true }
  - { id: staff, path: /staff/**, upstream: up, scopes: [read], claims: [{ claim: contractor, exists: false }] }
  - { id: open, path: /open/**, upstream: up, scopes: [read] }
"#;

fn local_config(up: &str) -> String {
    format!(
        r#"tokens:
  issuer: https://gw.test
  audience: gw-upstreams
  secret: "{SECRET}"
  ttl: 5m
scopes:
  read: Read
  write: Write
upstreams:
  up: {up}
routes:{BILLING}"#
    )
}

/// Claims meeting every `/billing` condition.
fn good() -> Value {
    json!({
        "org": { "id": 42, "name": "Acme" },
        "realm_access": { "roles": ["reader", "billing"] },
        "email_verified": true,
        "tier": "gold",
        "department": "finance",
    })
}

fn merged(base: Value, extra: &Value) -> Value {
    let mut base = base;
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn local_token(scope: &str, extra: &Value) -> String {
    mint(
        Alg::Hs256,
        &json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}),
        &merged(fixture_claims("dana", scope), extra),
        SECRET.as_bytes(),
    )
}

/// Each way `good()` can fail, the condition the answer must name, and the token's value
/// that must not appear.
fn failures() -> Vec<(Value, &'static str, &'static str)> {
    let mut cases = Vec::new();
    let mut change = |edit: &dyn Fn(&mut Value), condition, secret| {
        let mut claims = good();
        edit(&mut claims);
        cases.push((claims, condition, secret));
    };
    change(
        &|c| c["org"]["id"] = json!(4242),
        "org.id equals 42",
        "4242",
    );
    change(
        &|c| c["org"]["id"] = json!("42"),
        "org.id equals 42",
        "\"42\"",
    );
    change(&|c| c["org"] = json!("Acme"), "org.id equals 42", "Acme");
    change(
        &|c| c["realm_access"]["roles"] = json!(["reader", "billing-x"]),
        r#"realm_access.roles contains "billing""#,
        "billing-x",
    );
    change(
        &|c| c["realm_access"]["roles"] = json!("billing"),
        r#"realm_access.roles contains "billing""#,
        "reader",
    );
    change(
        &|c| c["email_verified"] = json!("true"),
        "email_verified equals true",
        "\"true\"",
    );
    change(
        &|c| c["tier"] = json!("silver"),
        r#"tier any_of ["gold", "platinum"]"#,
        "silver",
    );
    change(
        &|c| {
            c.as_object_mut().unwrap().remove("department");
        },
        "department exists",
        "finance",
    );
    cases
}

#[tokio::test]
async fn local_tokens_pass_when_every_condition_holds_and_get_403_naming_the_one_that_failed() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&local_config(&up.url())).await;
    for client in [gw.h1(), gw.h2()] {
        let reply = client
            .get_with_token("/billing/invoices", &local_token("read", &good()))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let forwarded = up.count();
        for (claims, condition, secret) in failures() {
            let reply = client
                .get_with_token("/billing/invoices", &local_token("read", &claims))
                .await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{condition}: {}",
                reply.text()
            );
            let body = reply.json();
            assert_eq!(body["error"], "access_denied", "{condition}");
            assert_eq!(
                body["error_description"],
                format!("claim condition failed: {condition}")
            );
            if secret != "\"42\"" && secret != "\"true\"" {
                assert!(!reply.text().contains(secret), "{}", reply.text());
            }
            assert_eq!(
                challenge_without_metadata(reply.header("www-authenticate")),
                Some(r#"Bearer realm="portcullis""#),
                "no RFC 6750 error code fits; `insufficient_scope` is for scopes"
            );
        }
        assert_eq!(up.count(), forwarded, "no refused request was forwarded");
        // `exists: false`.
        let staff = client
            .get_with_token("/staff/x", &local_token("read", &json!({})))
            .await;
        assert_eq!(staff.status, StatusCode::OK);
        let contractor = local_token("read", &json!({"contractor": {"agency": "x"}}));
        let staff = client.get_with_token("/staff/x", &contractor).await;
        assert_eq!(staff.status, StatusCode::FORBIDDEN);
        assert_eq!(
            staff.json()["error_description"],
            "claim condition failed: contractor is absent"
        );
    }
}

#[tokio::test]
async fn scopes_are_decided_before_claims_and_no_token_is_still_401() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&local_config(&up.url())).await;
    let client = gw.h1();
    let reply = client
        .get_with_token("/billing/x", &local_token("write", &json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["error"], "insufficient_scope");
    let reply = client.get("/billing/x", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // A route without conditions ignores the claims.
    let reply = client
        .get_with_token("/open/x", &local_token("read", &json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn an_external_providers_token_is_held_to_the_same_conditions() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        r#"tokens:
  issuer: https://gw.test
  secret: "{SECRET}"
  ttl: 5m
scopes:
  read: Read
issuers:
  corp:
    issuer: {issuer}
    audience: portcullis
    ca: {ca}
    algorithms: [ES256]
    user_claim: preferred_username
    scope_claims: [realm_access.roles]
    rename: {{ reader: read }}
upstreams:
  up: {up}
routes:{BILLING}"#,
        issuer = idp.issuer,
        ca = idp.ca_path.display(),
        up = up.url(),
    ))
    .await;
    let client = gw.h2();
    let token = idp.mint("k1", &idp.claims("dana", good()));
    let reply = client.get_with_token("/billing/x", &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        up.last().unwrap().header("x-forwarded-issuer").as_deref(),
        Some("corp")
    );
    for (claims, condition, _) in failures() {
        let token = idp.mint("k1", &idp.claims("dana", claims));
        let reply = client.get_with_token("/billing/x", &token).await;
        // Roles that are not an array also lose the `reader` scope: 403 either way.
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{condition}");
        if reply.json()["error"] == "access_denied" {
            assert_eq!(
                reply.json()["error_description"],
                format!("claim condition failed: {condition}")
            );
        } else {
            assert_eq!(reply.json()["error"], "insufficient_scope", "{condition}");
        }
    }
}

fn config_error(routes: &str) -> String {
    let text =
        format!("scopes: {{ read: Read }}\nupstreams: {{ up: \"echo:\" }}\nroutes:\n{routes}");
    portcullis::config::Config::from_text(std::path::Path::new("gw.yaml"), &text)
        .expect_err(routes)
        .to_string()
}

#[test]
fn malformed_conditions_are_refused_at_their_line() {
    let head = "  - path: /x\n    upstream: up\n    scopes: [read]\n    claims:\n      - { claim: ok, exists: true }\n";
    let cases = [
        (
            "      - { claim: a, equals: [1] }\n",
            "`equals` takes a string, number or boolean, not a list",
        ),
        ("      - { claim: a, equals: { b: 1 } }\n", "not a mapping"),
        (
            "      - { claim: a, equals: 1, contains: 1 }\n",
            "exactly one of",
        ),
        ("      - { claim: a }\n", "exactly one of"),
        (
            "      - { claim: a, any_of: gold }\n",
            "`any_of` takes a list, not a string",
        ),
        ("      - { claim: a, any_of: [] }\n", "can never hold"),
        (
            "      - { claim: a, any_of: [[1]] }\n",
            "`any_of` takes a string",
        ),
        (
            "      - { claim: a, exists: yes please }\n",
            "`exists` takes true or false",
        ),
        (
            "      - { claim: a..b, exists: true }\n",
            "not a claim path",
        ),
        ("      - { claim: a, equal: 1 }\n", "unknown field"),
    ];
    for (line, expected) in cases {
        let err = config_error(&format!("{head}{line}"));
        assert!(err.starts_with("gw.yaml:9:"), "{line}: {err}");
        assert!(err.contains(expected), "{line}: {err}");
    }
    let err = config_error(
        "  - { path: /x, upstream: up, public: true, claims: [{ claim: a, exists: true }] }\n",
    );
    assert!(
        err.starts_with("gw.yaml:4:") && err.contains("needs a token"),
        "{err}"
    );
    let err = config_error("  - { path: /x, upstream: up, scopes: [read], claims: [] }\n");
    assert!(err.contains("`claims: []`"), "{err}");
}

#[tokio::test]
async fn explain_and_rule_tests_name_the_failed_condition() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.yaml");
    std::fs::write(&config, local_config(&up.url())).unwrap();
    let config_str = config.to_str().unwrap();
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "-c", config_str, "GET", "/billing/x"];
        args.extend_from_slice(extra);
        portcullis(args)
    };
    let good_text = good().to_string();
    let (code, out, err) = explain(&["--scopes", "read", "--claims", &good_text]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("decision: forwarded to `up`"), "{out}");
    let silver = merged(good(), &json!({"tier": "silver"})).to_string();
    let (_, out, _) = explain(&["--scopes", "read", "--claims", &silver]);
    assert!(
        out.contains(
            r#"decision: 403 Forbidden (claim condition failed: tier any_of ["gold", "platinum"])"#
        ),
        "{out}"
    );
    // A token brings its own claims.
    let token = local_token("read", &merged(good(), &json!({"department": null})));
    let (_, out, _) = explain(&["--token", &token]);
    assert!(
        out.contains("decision: 403 Forbidden (claim condition failed: department exists)"),
        "{out}"
    );
    let (code, _, err) = explain(&["--scopes", "read", "--claims", "[1]"]);
    assert_eq!(code, 1);
    assert!(err.contains("JSON object"), "{err}");

    let tests = dir.path().join("cases.yaml");
    std::fs::write(
        &tests,
        format!(
            "cases:\n  - {{ request: GET /billing/x, scopes: [read], claims: {good_text}, expect: allow }}\n  - {{ request: GET /billing/x, scopes: [read], claims: {silver}, expect: 403 }}\n  - {{ request: GET /billing/x, scopes: [read], expect: allow }}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = portcullis(["test", "-c", config_str, tests.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let failing: Vec<&str> = out.lines().filter(|l| l.contains(": expected ")).collect();
    assert_eq!(
        failing.len(),
        1,
        "only the case without claims fails: {out}"
    );
    assert!(failing[0].contains(":4:"), "{out}");
}
