//! The local key ring end to end: ES256 and EdDSA tokens, the published JWK Set (and other
//! libraries verifying our tokens from it alone), rotation by reload without a failed
//! request, refused key removals, `gen-key`, `check --previous`, the RFC 8414 and RFC 9728
//! metadata documents and `resource_metadata` in challenges.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use portcullis::reload::{self, ReloadOutcome};
use serde_json::Value;

/// A new private key file for `alg` in `dir`, made by `portcullis gen-key`.
fn gen_key(dir: &std::path::Path, name: &str, alg: &str) -> String {
    let path = dir.join(name);
    let (code, _, stderr) = portcullis(["gen-key", "--alg", alg, "--out", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    path.to_str().unwrap().to_owned()
}

/// A config with `keys` (YAML list items, indented for `tokens.keys`) and the usual users,
/// scopes and routes.
fn ring_yaml(up: &str, keys: &str) -> String {
    format!(
        r#"tokens:
  issuer: https://gw.test
  ttl: 5m
  leeway: 30s
  keys:
{keys}scopes:
  read: Read
  write: {{ description: Write, implies: [read] }}
users:
  alice: {{ password: "{SECRET123_HASH}", scopes: [read] }}
  bob: {{ password: "{SECRET123_HASH}", scopes: [read, write] }}
upstreams:
  up: {up}
routes:
  - {{ id: public, path: /public/**, upstream: up, public: true }}
  - {{ id: item-write, path: "/items/{{id}}", methods: [PUT], upstream: up, scopes: [write] }}
  - {{ id: items, path: /items/**, upstream: up, scopes: [read] }}
  - {{ id: reports, path: /reports/**, upstream: up, any_scopes: [write] }}
"#
    )
}

fn key_line(kid: &str, alg: &str, path: &str, status: &str) -> String {
    format!("    - {{ kid: {kid}, algorithm: {alg}, key: \"{path}\", status: {status} }}\n")
}

fn head_of(token: &str) -> Value {
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
}

#[tokio::test]
async fn es256_and_eddsa_rings_sign_with_the_active_kid_and_verify() {
    let up = Upstream::start().await;
    for alg in ["ES256", "EdDSA"] {
        let dir = tempfile::tempdir().unwrap();
        let key = gen_key(dir.path(), "k.pem", alg);
        let gw = Gateway::start(&ring_yaml(&up.url(), &key_line("k1", alg, &key, "active"))).await;
        let client = gw.h1();
        let token = client.token("alice", "secret123").await;
        let head = head_of(&token);
        assert_eq!(head["alg"], alg);
        assert_eq!(head["kid"], "k1");
        assert_eq!(head["typ"], "at+jwt");
        let reply = client.get_with_token("/items/1", &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{alg}: {}", reply.text());
        // A signature bit flipped is refused.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let reply = client
            .get_with_token("/items/1", std::str::from_utf8(&forged).unwrap())
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{alg}");
    }
}

#[tokio::test]
async fn the_jwks_lists_public_keys_only_and_is_cacheable() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let es = gen_key(dir.path(), "es.pem", "ES256");
    let ed = gen_key(dir.path(), "ed.pem", "EdDSA");
    let keys = format!(
        "{}{}    - {{ kid: old-hmac, algorithm: HS256, secret: \"{SECRET}\", status: retired }}\n",
        key_line("es-1", "ES256", &es, "active"),
        key_line("ed-2", "EdDSA", &ed, "next"),
    );
    let gw = Gateway::start(&ring_yaml(&up.url(), &keys)).await;
    let reply = gw.h1().get("/.well-known/jwks.json", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("application/jwk-set+json")
    );
    let cache = reply.header("cache-control").unwrap();
    assert!(cache.contains("max-age="), "{cache}");
    let doc = reply.json();
    let listed = doc["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "never the HMAC key: {doc}");
    let es_jwk = &listed[0];
    assert_eq!(es_jwk["kid"], "es-1");
    assert_eq!(es_jwk["kty"], "EC");
    assert_eq!(es_jwk["crv"], "P-256");
    assert_eq!(es_jwk["alg"], "ES256");
    assert_eq!(es_jwk["use"], "sig");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(es_jwk["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(es_jwk["y"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    let ed_jwk = &listed[1];
    assert_eq!(ed_jwk["kid"], "ed-2");
    assert_eq!(ed_jwk["kty"], "OKP");
    assert_eq!(ed_jwk["crv"], "Ed25519");
    assert_eq!(ed_jwk["alg"], "EdDSA");
    for jwk in listed {
        let members: Vec<&str> = jwk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(
                !members.contains(&private),
                "private member `{private}`: {jwk}"
            );
        }
    }
    // The document needs no token, and only GET and HEAD.
    let reply = gw
        .h1()
        .call("POST", "/.well-known/jwks.json", &[], "")
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
}

/// Whether python3 has PyJWT (with `cryptography`) and python-jose. CI sets
/// `PORTCULLIS_REQUIRE_PYTHON_JWT`, so there their absence fails instead of skipping.
fn python_jwt_libraries() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import jwt, jose, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("PORTCULLIS_REQUIRE_PYTHON_JWT").is_none(),
            "python3 with PyJWT, cryptography and python-jose is required here"
        );
        eprintln!("PyJWT/python-jose not installed: the interoperability test is skipped");
    }
    found
}

/// Verify `token` in Python with `library` from the JWK Set text alone; returns `sub`.
fn python_verify(library: &str, jwks: &str, token: &str) -> Result<String, String> {
    let script = match library {
        "pyjwt" => {
            r#"
import sys, json, jwt
jwks, token = json.loads(sys.argv[1]), sys.argv[2]
kid = jwt.get_unverified_header(token)["kid"]
jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
key = jwt.PyJWK(jwk)
claims = jwt.decode(token, key=key.key, algorithms=[jwk["alg"]], issuer="https://gw.test",
                    options={"verify_aud": False})
print(claims["sub"])
"#
        }
        _ => {
            r#"
import sys, json
from jose import jwt
jwks, token = json.loads(sys.argv[1]), sys.argv[2]
claims = jwt.decode(token, jwks, algorithms=["ES256"], issuer="https://gw.test",
                    options={"verify_aud": False})
print(claims["sub"])
"#
        }
    };
    let out = Command::new("python3")
        .args(["-c", script, jwks, token])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn pyjwt_and_python_jose_verify_issued_tokens_from_the_jwks_alone() {
    if !python_jwt_libraries() {
        return;
    }
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let es = gen_key(dir.path(), "es.pem", "ES256");
    let ed = gen_key(dir.path(), "ed.pem", "EdDSA");
    let es_gw = Gateway::start(&ring_yaml(
        &up.url(),
        &key_line("es", "ES256", &es, "active"),
    ))
    .await;
    let token = es_gw.h1().token("alice", "secret123").await;
    let jwks = es_gw.h1().get("/.well-known/jwks.json", &[]).await.text();
    assert_eq!(python_verify("pyjwt", &jwks, &token), Ok("alice".into()));
    assert_eq!(python_verify("jose", &jwks, &token), Ok("alice".into()));
    // A token from another key (same kid, other key material) fails there too: the check is
    // real.
    let es2 = gen_key(dir.path(), "es3.pem", "ES256");
    let impostor = Gateway::start(&ring_yaml(
        &up.url(),
        &key_line("es", "ES256", &es2, "active"),
    ))
    .await;
    let forged = impostor.h1().token("alice", "secret123").await;
    assert!(python_verify("pyjwt", &jwks, &forged).is_err());
    assert!(python_verify("jose", &jwks, &forged).is_err());
    // EdDSA: PyJWT verifies it (python-jose has no EdDSA).
    let ed_gw = Gateway::start(&ring_yaml(
        &up.url(),
        &key_line("ed", "EdDSA", &ed, "active"),
    ))
    .await;
    let token = ed_gw.h1().token("bob", "secret123").await;
    let jwks = ed_gw.h1().get("/.well-known/jwks.json", &[]).await.text();
    assert_eq!(python_verify("pyjwt", &jwks, &token), Ok("bob".into()));
}

#[tokio::test]
async fn promoting_the_next_key_by_reload_fails_no_request() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a.pem", "ES256");
    let b = gen_key(dir.path(), "b.pem", "EdDSA");
    let before = format!(
        "{}{}",
        key_line("a", "ES256", &a, "active"),
        key_line("b", "EdDSA", &b, "next")
    );
    let gw = Gateway::start(&ring_yaml(&up.url(), &before)).await;
    let old_token = gw.h1().token("alice", "secret123").await;
    assert_eq!(head_of(&old_token)["kid"], "a");
    // Traffic with the old token on keep-alive connections throughout the promotion.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, token) = (gw.h1(), old_token.clone());
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = client.connect().await;
            while !stop.load(Ordering::Relaxed) {
                let request = client
                    .request("GET", "/items/1")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Default::default())
                    .unwrap();
                let reply = conn.send(request).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if reply.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = format!(
        "{}{}",
        key_line("a", "ES256", &a, "retired"),
        key_line("b", "EdDSA", &b, "active")
    );
    gw.write_config(&ring_yaml(&up.url(), &after));
    assert!(matches!(
        reload::reload(&gw.config_path, &gw.shared),
        ReloadOutcome::Applied { .. } | ReloadOutcome::Unchanged
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let new_token = gw.h1().token("alice", "secret123").await;
    assert_eq!(head_of(&new_token)["kid"], "b", "the promoted key signs");
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) > 20, "traffic flowed");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the promotion"
    );
    assert_eq!(
        gw.h1().get_with_token("/items/1", &old_token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.h1().get_with_token("/items/1", &new_token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn removing_a_key_by_reload_applies_at_once_and_fails_its_tokens() {
    // An operator removing a compromised key must not be blocked: the reload applies (and
    // warns); `check --previous` is the gate before a planned deploy.
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a.pem", "ES256");
    let b = gen_key(dir.path(), "b.pem", "ES256");
    let ring = format!(
        "{}{}",
        key_line("a", "ES256", &a, "active"),
        key_line("b", "ES256", &b, "next")
    );
    let gw = Gateway::start(&ring_yaml(&up.url(), &ring)).await;
    let token = gw.h1().token("alice", "secret123").await;
    assert_eq!(
        gw.h1().get_with_token("/items/1", &token).await.status,
        StatusCode::OK
    );
    gw.write_config(&ring_yaml(&up.url(), &key_line("b", "ES256", &b, "active")));
    assert!(matches!(
        reload::reload(&gw.config_path, &gw.shared),
        ReloadOutcome::Applied { .. }
    ));
    let reply = gw.h1().get_with_token("/items/1", &token).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "the removed key verifies nothing"
    );
    assert!(
        reply.text().contains("unknown signing key"),
        "{}",
        reply.text()
    );
    let fresh = gw.h1().token("alice", "secret123").await;
    assert_eq!(head_of(&fresh)["kid"], "b");
}

#[test]
fn gen_key_writes_an_owner_only_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = gen_key(dir.path(), "k.pem", "ES256");
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let (code, _, stderr) = portcullis(["gen-key", "--alg", "EdDSA", "--out", &path]);
    assert_ne!(code, 0);
    assert!(stderr.contains("exists"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        pem,
        "the key survived"
    );
    let (code, _, _) = portcullis(["gen-key", "--alg", "RS256"]);
    assert_ne!(code, 0, "RSA keys are never made");
}

#[test]
fn check_previous_refuses_removing_a_key_whose_tokens_may_live() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a.pem", "ES256");
    let b = gen_key(dir.path(), "b.pem", "ES256");
    let write = |name: &str, keys: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, ring_yaml("http://127.0.0.1:9", keys)).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let before = write(
        "before.yaml",
        &format!(
            "{}{}",
            key_line("a", "ES256", &a, "retired"),
            key_line("b", "ES256", &b, "active")
        ),
    );
    let after = write("after.yaml", &key_line("b", "ES256", &b, "active"));
    let (code, _, stderr) = portcullis(["--config", &after, "check", "--previous", &before]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("removing retired key `a`"), "{stderr}");
    let dated = write(
        "dated.yaml",
        &format!(
            "    - {{ kid: a, algorithm: ES256, key: \"{a}\", status: retired, retired_at: \"2020-01-01T00:00:00Z\" }}\n{}",
            key_line("b", "ES256", &b, "active")
        ),
    );
    let (code, stdout, stderr) = portcullis(["--config", &after, "check", "--previous", &dated]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, _, stderr) = portcullis(["--config", &after, "check", "--previous", &after]);
    assert_eq!(code, 0, "{stderr}");
    // Removing the active key is always refused.
    let swapped = write("swapped.yaml", &key_line("a", "ES256", &a, "active"));
    let (code, _, stderr) = portcullis(["--config", &swapped, "check", "--previous", &after]);
    assert_ne!(code, 0);
    assert!(stderr.contains("`b` is the active key"), "{stderr}");
}

#[test]
fn check_reports_ring_mistakes_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = gen_key(dir.path(), "a.pem", "ES256");
    let ed = gen_key(dir.path(), "ed.pem", "EdDSA");
    let cases = [
        (key_line("a", "ES256", &a, "next"), "exactly one key must be `active`"),
        (key_line("a", "RS256", &a, "active"), "cannot sign here"),
        (key_line("a", "ES256", &ed, "active"), "not one for ES256"),
        (key_line("a b", "ES256", &a, "active"), "not a valid key id"),
        (key_line("a", "ES256", "missing.pem", "active"), "cannot read"),
        (key_line("a", "ES256", &a, "primary"), "is not `active`, `next` or `retired`"),
        (
            format!("{}{}", key_line("a", "ES256", &a, "active"), key_line("a", "EdDSA", &ed, "next")),
            "used twice",
        ),
        (
            "    - { kid: h, algorithm: HS256, secret: short, status: active }\n".to_owned(),
            "at least 32 bytes",
        ),
        (
            format!("    - {{ kid: a, algorithm: ES256, key: \"{a}\", status: active, retired_at: \"2026-01-01T00:00:00Z\" }}\n"),
            "only a `retired` key",
        ),
    ];
    for (keys, expected) in cases {
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, ring_yaml("http://127.0.0.1:9", &keys)).unwrap();
        let (code, _, stderr) = portcullis(["--config", path.to_str().unwrap(), "check"]);
        assert_ne!(code, 0, "{keys}");
        assert!(stderr.contains(expected), "{keys}: {stderr}");
        assert!(
            stderr.contains("gateway.yaml:"),
            "names the file and line: {stderr}"
        );
    }
}

#[tokio::test]
async fn authorization_server_metadata_describes_the_token_endpoint() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&ring_yaml(
        &up.url(),
        "    - { kid: k, algorithm: ES256, status: active }\n",
    ))
    .await;
    let reply = gw
        .h1()
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert_eq!(doc["issuer"], "https://gw.test");
    assert_eq!(doc["token_endpoint"], "https://gw.test/login");
    assert_eq!(doc["jwks_uri"], "https://gw.test/.well-known/jwks.json");
    assert_eq!(doc["revocation_endpoint"], "https://gw.test/revoke");
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!(["password"]),
        "no refresh_token grant without tokens.refresh"
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!(["none"])
    );
    assert!(doc["response_types_supported"].is_array());
    assert_eq!(
        doc["scopes_supported"],
        serde_json::json!(["read", "write"])
    );
    // An issuer that is not an https URL has no metadata (and `check` says why).
    let plain = ring_yaml(
        &up.url(),
        "    - { kid: k, algorithm: ES256, status: active }\n",
    )
    .replace("issuer: https://gw.test", "issuer: portcullis");
    gw.write_config(&plain);
    assert!(matches!(
        reload::reload(&gw.config_path, &gw.shared),
        ReloadOutcome::Applied { .. }
    ));
    let reply = gw
        .h1()
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let (_, stdout, _) = portcullis(["--config", gw.config_path.to_str().unwrap(), "check"]);
    assert!(
        stdout.contains("https://"),
        "check warns about the issuer: {stdout}"
    );
}

#[tokio::test]
async fn protected_resource_metadata_lists_the_scopes_of_the_routes_serving_it() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&ring_yaml(
        &up.url(),
        "    - { kid: k, algorithm: ES256, status: active }\n",
    ))
    .await;
    let client = gw.h1();
    // The test client addresses the gateway as `localhost`.
    let origin = "https://localhost";
    let doc = |path: &'static str| {
        let client = client.clone();
        async move { client.get(path, &[]).await }
    };
    let root = doc("/.well-known/oauth-protected-resource").await;
    assert_eq!(root.status, StatusCode::OK);
    let root = root.json();
    assert_eq!(root["resource"], origin);
    assert_eq!(
        root["authorization_servers"],
        serde_json::json!(["https://gw.test"])
    );
    assert_eq!(
        root["scopes_supported"],
        serde_json::json!(["read", "write"])
    );
    assert_eq!(
        root["bearer_methods_supported"],
        serde_json::json!(["header"])
    );
    let items = doc("/.well-known/oauth-protected-resource/items")
        .await
        .json();
    assert_eq!(items["resource"], format!("{origin}/items"));
    assert_eq!(
        items["scopes_supported"],
        serde_json::json!(["read", "write"])
    );
    let reports = doc("/.well-known/oauth-protected-resource/reports")
        .await
        .json();
    assert_eq!(reports["scopes_supported"], serde_json::json!(["write"]));
    // Public-only and unknown resources have no metadata.
    assert_eq!(
        doc("/.well-known/oauth-protected-resource/public")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        doc("/.well-known/oauth-protected-resource/nothing")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn refusals_on_protected_routes_point_at_the_resource_metadata() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&ring_yaml(
        &up.url(),
        "    - { kid: k, algorithm: ES256, status: active }\n",
    ))
    .await;
    let client = gw.h1();
    let expected =
        r#"resource_metadata="https://localhost/.well-known/oauth-protected-resource/items""#;
    let token = client.token("alice", "secret123").await;
    let bearer = format!("Bearer {token}");
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        StatusCode,
        &'a str,
    );
    let cases: [Case<'_>; 3] = [
        (
            "GET",
            "/items/1",
            vec![],
            StatusCode::UNAUTHORIZED,
            r#"Bearer realm="portcullis""#,
        ),
        (
            "GET",
            "/items/1",
            vec![("authorization", "Bearer not.a.token")],
            StatusCode::UNAUTHORIZED,
            r#"error="invalid_token""#,
        ),
        (
            "PUT",
            "/items/1",
            vec![("authorization", bearer.as_str())],
            StatusCode::FORBIDDEN,
            r#"error="insufficient_scope", scope="write""#,
        ),
    ];
    for (method, path, headers, status, challenge) in cases {
        let reply = client.call(method, path, &headers, "").await;
        assert_eq!(reply.status, status, "{method} {path}");
        let value = reply.header("www-authenticate").unwrap();
        assert!(value.contains(challenge), "{value}");
        assert!(value.ends_with(expected), "{value}");
    }
}

#[tokio::test]
async fn a_key_file_is_watched_and_its_new_content_is_a_new_generation() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = gen_key(dir.path(), "k.pem", "ES256");
    let gw = Gateway::start(&ring_yaml(
        &up.url(),
        &key_line("k", "ES256", &path, "active"),
    ))
    .await;
    assert!(
        gw.shared
            .snapshot()
            .config
            .files
            .iter()
            .any(|f| f.to_str() == Some(path.as_str())),
        "the key file is among the watched files"
    );
    let before = gw.h1().token("alice", "secret123").await;
    // Replace the key under the same kid (as an operator restoring a rotated-out file would).
    std::fs::remove_file(&path).unwrap();
    gen_key(dir.path(), "k.pem", "ES256");
    assert!(matches!(
        reload::reload(&gw.config_path, &gw.shared),
        ReloadOutcome::Applied { .. }
    ));
    let after = gw.h1().token("alice", "secret123").await;
    assert_eq!(
        gw.h1().get_with_token("/items/1", &after).await.status,
        StatusCode::OK
    );
    let reply = gw.h1().get_with_token("/items/1", &before).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "signed by the replaced key"
    );
}
