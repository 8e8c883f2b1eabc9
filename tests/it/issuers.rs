//! External issuers end to end, against a mock identity provider over TLS: discovery and keys
//! fetched with the configured CA, claim→scope mapping, the gateway-owned issuer header,
//! provider key rotation without a failed request, the unknown-`kid` refetch and its
//! cooldown, a provider that goes down, a discovery document naming another issuer,
//! algorithm confusion, and routes pinned to issuers.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use serde_json::json;

/// A gateway accepting its own tokens and the mock provider's (`corp`), with `cooldown`.
fn config(up: &str, idp: &MockIdp, cooldown: &str) -> String {
    format!(
        r#"tokens:
  issuer: https://gw.test
  secret: "{SECRET}"
  ttl: 5m
scopes:
  read: Read
  write: {{ description: Write, implies: [read] }}
  admin: Admin
users:
  alice: {{ password: "{SECRET123_HASH}", scopes: [read] }}
issuers:
  corp:
    issuer: {issuer}
    audience: portcullis
    ca: {ca}
    algorithms: [ES256, EdDSA]
    user_claim: preferred_username
    scope_claims: [scope, realm_access.roles]
    rename: {{ items-reader: read, items-editor: write }}
    refetch_cooldown: {cooldown}
upstreams:
  up: {up}
routes:
  - {{ id: public, path: /public/**, upstream: up, public: true }}
  - {{ id: local-only, path: /local/**, upstream: up, scopes: [read], issuers: [local] }}
  - {{ id: corp-only, path: /corp/**, upstream: up, scopes: [read], issuers: [corp] }}
  - {{ id: write, path: /write/**, upstream: up, scopes: [write] }}
  - {{ id: items, path: /items/**, upstream: up, scopes: [read] }}
"#,
        issuer = idp.issuer,
        ca = idp.ca_path.display(),
    )
}

fn roles(list: &[&str]) -> serde_json::Value {
    json!({ "realm_access": { "roles": list } })
}

#[tokio::test]
async fn a_provider_token_is_verified_mapped_and_named_to_the_upstream() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &idp, "5m")).await;
    let mut claims = idp.claims("dana", roles(&["items-reader", "offline_access"]));
    claims["scope"] = json!("openid profile");
    let token = idp.mint("k1", &claims);
    let reply = gw
        .h1()
        .get(
            "/items/1",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-forwarded-issuer", "local"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = up.last().unwrap();
    assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("dana"));
    assert_eq!(seen.header("x-forwarded-issuer").as_deref(), Some("corp"));
    assert_eq!(
        seen.all("x-forwarded-issuer").len(),
        1,
        "the client's copy is gone"
    );
    // Only vocabulary scopes count: `items-reader` became `read`; `openid` and the rest are
    // not Portcullis scopes.
    assert_eq!(seen.header("x-forwarded-scopes").as_deref(), Some("read"));
    // Mapped scopes decide like local ones: `read` is not `write`.
    let reply = gw.h1().get_with_token("/write/x", &token).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let editor = idp.mint("k1", &idp.claims("erin", roles(&["items-editor"])));
    assert_eq!(
        gw.h1().get_with_token("/write/x", &editor).await.status,
        StatusCode::OK
    );
    // The local issuer's tokens keep working next to it, and say so.
    let local = gw.h1().token("alice", "secret123").await;
    assert_eq!(
        gw.h1().get_with_token("/items/1", &local).await.status,
        StatusCode::OK
    );
    assert_eq!(
        up.last().unwrap().header("x-forwarded-issuer").as_deref(),
        Some("local")
    );
}

#[tokio::test]
async fn tokens_the_provider_did_not_sign_as_it_says_are_refused() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &idp, "5m")).await;
    let client = gw.h1();
    let good = idp.claims("dana", roles(&["items-reader"]));
    assert_eq!(
        client
            .get_with_token("/items/1", &idp.mint("k1", &good))
            .await
            .status,
        StatusCode::OK
    );
    let jwks = idp.jwks_text();
    let public_x = serde_json::from_str::<serde_json::Value>(&jwks).unwrap()["keys"][0]["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let header = |alg: &str| json!({"alg": alg, "kid": "k1", "typ": "JWT"});
    let forged = [
        // HS256 keyed with what the provider publishes (the classic alg confusion).
        mint(Alg::Hs256, &header("HS256"), &good, jwks.as_bytes()),
        mint(Alg::Hs256, &header("HS256"), &good, public_x.as_bytes()),
        mint(
            Alg::Hs256,
            &header("HS256"),
            &good,
            &URL_SAFE_NO_PAD.decode(&public_x).unwrap(),
        ),
        // alg none.
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header("none").to_string()),
            URL_SAFE_NO_PAD.encode(good.to_string())
        ),
        // Signed by the provider, for another audience.
        idp.mint("k1", &{
            let mut other = good.clone();
            other["aud"] = json!("someone-else");
            other
        }),
    ];
    for token in &forged {
        up.clear();
        let reply = client.get_with_token("/items/1", token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
        assert_eq!(up.count(), 0);
    }
    let mut long = good.clone();
    long["exp"] = json!(now() + 3 * 24 * 3600);
    let reply = client
        .get_with_token("/items/1", &idp.mint("k1", &long))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "over max_token_lifetime"
    );
    // A token naming the provider as issuer is never checked with the local secret.
    let local_signed = mint(
        Alg::Hs256,
        &json!({"alg": "HS256", "typ": "JWT"}),
        &good,
        SECRET.as_bytes(),
    );
    assert_eq!(
        client
            .get_with_token("/items/1", &local_signed)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_key_the_provider_rotates_in_is_fetched_on_first_sight_without_a_failed_request() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &idp, "1s")).await;
    let old = idp.mint("k1", &idp.claims("dana", roles(&["items-reader"])));
    // Traffic with the old key's token throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (client, stop, failed, sent) = (gw.h1(), stop.clone(), failed.clone(), sent.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if client.get_with_token("/items/1", &old).await.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The provider publishes a new key and starts signing with it.
    idp.add_key("k2", "EdDSA");
    let new = idp.mint("k2", &idp.claims("erin", roles(&["items-reader"])));
    let reply = gw.h1().get_with_token("/items/1", &new).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    worker.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 5);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the rotation"
    );
}

#[tokio::test]
async fn unknown_kids_trigger_one_shared_refetch_per_cooldown() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &idp, "5m")).await;
    let client = gw.h1();
    let good = idp.claims("dana", roles(&["items-reader"]));
    assert_eq!(
        client
            .get_with_token("/items/1", &idp.mint("k1", &good))
            .await
            .status,
        StatusCode::OK
    );
    let before = idp.jwks_fetches();
    // A key the provider never published (an attacker's): the first unknown kid refetches.
    let rogue = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = |kid: &str| sign(kid, "ES256", &rogue, &good);
    let reply = client.get_with_token("/items/1", &forged("random-1")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.text().contains("unknown signing key"),
        "{}",
        reply.text()
    );
    assert_eq!(
        idp.jwks_fetches(),
        before + 1,
        "one refetch for the first unknown kid"
    );
    // Inside the cooldown, more random kids — many at once — fetch nothing.
    let mut attempts = Vec::new();
    for n in 0..20 {
        let (client, token) = (gw.h1(), forged(&format!("random-{}", n + 2)));
        attempts.push(tokio::spawn(async move {
            client.get_with_token("/items/1", &token).await.status
        }));
    }
    for attempt in attempts {
        assert_eq!(attempt.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        idp.jwks_fetches(),
        before + 1,
        "no refetch inside the cooldown"
    );
    // Good tokens never waited on any of it.
    assert_eq!(
        client
            .get_with_token("/items/1", &idp.mint("k1", &good))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn with_the_provider_down_the_last_good_keys_verify_and_the_issuer_is_reported_stale() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &idp, "1s")).await;
    let client = gw.h1();
    let good = idp.claims("dana", roles(&["items-reader"]));
    let token = idp.mint("k1", &good);
    assert_eq!(
        client.get_with_token("/items/1", &token).await.status,
        StatusCode::OK
    );
    idp.set_down(true);
    // An unknown kid makes the gateway try the provider, which fails.
    let rogue = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let reply = client
        .get_with_token("/items/1", &sign("new", "ES256", &rogue, &good))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let status = gw.shared.issuer_keys.get("corp").unwrap().status();
    assert!(status.stale, "{status:?}");
    assert_eq!(status.keys, 1, "the last good keys are kept");
    // A token not yet seen (so not cached), signed by the known key, still verifies.
    let fresh = idp.mint("k1", &idp.claims("erin", roles(&["items-reader"])));
    assert_eq!(
        client.get_with_token("/items/1", &fresh).await.status,
        StatusCode::OK
    );
    // The admin endpoint and the metrics say so.
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(portcullis::server::admin::serve(admin, gw.shared.clone()));
    let readyz = raw_get(admin_addr, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    assert!(readyz.contains("issuer corp: stale"), "{readyz}");
    let metrics = raw_get(admin_addr, "/metrics").await;
    assert!(
        metrics.contains("portcullis_issuer_keys_age_seconds{issuer=\"corp\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_issuer_key_fetches_total{issuer=\"corp\",outcome=\"error\"}"),
        "{metrics}"
    );
    // Back up: the next refetch succeeds and the issuer is fresh again.
    idp.set_down(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = client
        .get_with_token("/items/1", &sign("newer", "ES256", &rogue, &good))
        .await;
    assert!(!gw.shared.issuer_keys.get("corp").unwrap().status().stale);
}

async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    idp.lie_about_issuer("https://evil.test/realms/test");
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &idp, "5m")).await;
    let token = idp.mint("k1", &idp.claims("dana", roles(&["items-reader"])));
    let reply = gw.h1().get_with_token("/items/1", &token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(up.count(), 0);
    assert!(idp.discovery_fetches() >= 1);
    assert_eq!(
        idp.jwks_fetches(),
        0,
        "keys are never read from a mismatched discovery"
    );
    let status = gw.shared.issuer_keys.get("corp").unwrap().status();
    assert!(
        status
            .error
            .as_deref()
            .unwrap_or("")
            .contains("discovery names issuer"),
        "{status:?}"
    );
}

#[tokio::test]
async fn routes_pinned_to_an_issuer_refuse_the_others() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), &idp, "5m")).await;
    let client = gw.h1();
    let corp = idp.mint("k1", &idp.claims("dana", roles(&["items-reader"])));
    let local = client.token("alice", "secret123").await;
    let cases = [
        ("/local/x", &local, StatusCode::OK),
        ("/local/x", &corp, StatusCode::UNAUTHORIZED),
        ("/corp/x", &corp, StatusCode::OK),
        ("/corp/x", &local, StatusCode::UNAUTHORIZED),
    ];
    for (path, token, status) in cases {
        let reply = client.get_with_token(path, token).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                reply.text().contains("untrusted issuer"),
                "{}",
                reply.text()
            );
        }
    }
}

/// An RS256 key pair made and used by PyJWT (as Keycloak signs by default): its public JWK and
/// a token over `claims`. `None` when PyJWT is missing (CI requires it).
fn pyjwt_rs256(kid: &str, claims: &serde_json::Value) -> Option<(serde_json::Value, String)> {
    let script = r#"
import sys, json, jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": sys.argv[1], "alg": "RS256", "use": "sig"})
token = jwt.encode(json.loads(sys.argv[2]), key, algorithm="RS256", headers={"kid": sys.argv[1]})
print(json.dumps({"jwk": jwk, "token": token}))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, kid, &claims.to_string()])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let Some(out) = out else {
        assert!(
            std::env::var_os("PORTCULLIS_REQUIRE_PYTHON_JWT").is_none(),
            "python3 with PyJWT and cryptography is required here"
        );
        eprintln!("PyJWT not installed: the RS256 provider test is skipped");
        return None;
    };
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some((
        made["jwk"].clone(),
        made["token"].as_str().unwrap().to_owned(),
    ))
}

#[tokio::test]
async fn an_rs256_token_signed_elsewhere_verifies_against_the_published_rsa_key() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    let claims = idp.claims("dana", roles(&["items-reader"]));
    let Some((jwk, token)) = pyjwt_rs256("rsa-1", &claims) else {
        return;
    };
    idp.publish_jwk(jwk);
    let up = Upstream::start().await;
    let yaml = config(&up.url(), &idp, "5m")
        .replace("algorithms: [ES256, EdDSA]", "algorithms: [RS256, ES256]");
    let gw = Gateway::start(&yaml).await;
    let reply = gw.h1().get_with_token("/items/1", &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        up.last().unwrap().header("x-forwarded-user").as_deref(),
        Some("dana")
    );
    // The same token as PS256 is not what the key says: the header cannot pick the algorithm.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[0] = URL_SAFE_NO_PAD.encode(json!({"alg": "PS256", "kid": "rsa-1"}).to_string());
    let reply = gw.h1().get_with_token("/items/1", &parts.join(".")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn check_fetches_each_issuer_and_reports_its_keys() {
    let idp = MockIdp::start().await;
    idp.add_key("k1", "ES256");
    idp.add_key("k2", "EdDSA");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config("http://127.0.0.1:9", &idp, "5m")).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let check = move |path: String| {
        tokio::task::spawn_blocking(move || portcullis(["--config", &path, "check"]))
    };
    let (code, stdout, stderr) = check(path.clone()).await.unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("k1 (ES256), k2 (EdDSA)"), "{stdout}");
    assert!(
        stdout.contains("/protocol/openid-connect/certs"),
        "{stdout}"
    );
    // Down: reported as a warning (the gateway would start and keep retrying).
    idp.set_down(true);
    let (code, stdout, _) = check(path).await.unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("warning: issuer `corp`"), "{stdout}");
}

#[test]
fn check_refuses_issuers_that_could_not_be_safe() {
    let dir = tempfile::tempdir().unwrap();
    let base = |issuer_block: &str| {
        format!(
            "scopes: {{ read: Read }}\nissuers:\n  corp:\n{issuer_block}upstreams: {{ up: \"echo:\" }}\nroutes:\n  - {{ path: /a/**, upstream: up, scopes: [read] }}\n"
        )
    };
    let cases = [
        (
            "    issuer: http://idp.test\n    audience: a\n",
            "must be an https:// URL",
        ),
        (
            "    issuer: https://idp.test\n    audience: a\n    algorithms: [HS256]\n",
            "not accepted from an external issuer",
        ),
        (
            "    issuer: https://idp.test\n    audience: a\n    jwks_uri: http://idp.test/keys\n",
            "jwks_uri",
        ),
        (
            "    issuer: https://idp.test\n    audience: a\n    user_claim: \"a..b\"\n",
            "user_claim",
        ),
        (
            "    issuer: https://idp.test\n    audience: a\n    ca: missing.pem\n",
            "cannot read",
        ),
        (
            "    issuer: https://idp.test\n    audience: a\n    refetch_cooldown: 0s\n",
            "refetch_cooldown",
        ),
        ("    issuer: https://idp.test\n", "audience"),
    ];
    for (block, expected) in cases {
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, base(block)).unwrap();
        let (code, _, stderr) = portcullis(["--config", path.to_str().unwrap(), "check"]);
        assert_ne!(code, 0, "{block}");
        assert!(stderr.contains(expected), "{block}: {stderr}");
    }
    // A route naming an issuer that does not exist.
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        "scopes: { read: Read }\nupstreams: { up: \"echo:\" }\nroutes:\n  - { path: /a/**, upstream: up, scopes: [read], issuers: [corp] }\n",
    )
    .unwrap();
    let (code, _, stderr) = portcullis(["--config", path.to_str().unwrap(), "check"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown issuer `corp`"), "{stderr}");
}
