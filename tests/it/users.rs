//! Tokens follow the user store: removing, disabling or re-keying a user, or narrowing their
//! scopes, takes effect on live tokens at the next request after the reload; and upstreams
//! get the user's profile as gateway-owned headers no client can forge.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use portcullis::reload::{self, ReloadOutcome};

use crate::common::*;

/// The fixture with alice's user line replaced by `alice_line` (YAML flow mapping body).
fn with_alice(up: &Upstream, alice_line: &str) -> String {
    let yaml = fixture_yaml(&up.url());
    let old = format!("  alice: {{ password: \"{SECRET123_HASH}\", scopes: [read] }}\n");
    assert!(yaml.contains(&old), "fixture changed shape");
    yaml.replace(&old, &format!("  alice: {{ {alice_line} }}\n"))
}

fn alice_as_is() -> String {
    format!("password: \"{SECRET123_HASH}\", scopes: [read]")
}

/// Rewrite the running gateway's config and apply it now.
fn apply(gw: &Gateway, body: &str) {
    gw.write_config(body);
    match reload::reload(&gw.config_path, &gw.shared) {
        ReloadOutcome::Applied { .. } => {}
        other => panic!("reload not applied: {other:?}"),
    }
}

fn get(client: &Client, path: &str, token: &str) -> http::Request<Full<Bytes>> {
    client
        .request("GET", path)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// The `error_description` of a 401 `invalid_token` answer (panics on anything else).
fn invalid_token(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], "invalid_token", "{body}");
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    body["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_user_is_refused_at_once_on_h1_and_h2_connections_opened_before_the_reload() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let token = gw.h1().token("alice", "secret123").await;
    let (h1, h2) = (gw.h1(), gw.h2());
    let mut connections = [(h1.connect().await, &h1), (h2.connect().await, &h2)];
    for (conn, client) in connections.iter_mut() {
        let reply = conn.send(get(client, "/api/items", &token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let forwarded = up.count();

    let without_alice = fixture_yaml(&up.url()).replace(
        &format!("  alice: {{ password: \"{SECRET123_HASH}\", scopes: [read] }}\n"),
        "",
    );
    assert!(!without_alice.contains("alice"));
    apply(&gw, &without_alice);

    for (conn, client) in connections.iter_mut() {
        let reply = conn.send(get(client, "/api/items", &token)).await;
        assert_eq!(invalid_token(&reply), "user no longer exists");
    }
    assert_eq!(
        up.count(),
        forwarded,
        "a removed user's request reached the upstream"
    );
    // Any token carrying a credential version (every token the gateway issues) must name a
    // current user, whoever signed it.
    let mut claims = fixture_claims("mallory", "read");
    claims["cv"] = "AAAAAAAAAAAAAAAA".into();
    let header = serde_json::json!({"alg": "HS256", "typ": "at+jwt"});
    let minted = mint(Alg::Hs256, &header, &claims, SECRET.as_bytes());
    let reply = gw.h1().get_with_token("/api/items", &minted).await;
    assert_eq!(invalid_token(&reply), "user no longer exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_minted_elsewhere_without_a_credential_version_still_meet_the_users_state() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_alice(&up, &alice_as_is())).await;
    let client = gw.h1();
    // A service holding the shared secret mints for an identity outside the store: accepted on
    // its signature, as before (deployments share the secret with token-minting services).
    let service = fixture_token("billing-service", "read");
    assert_eq!(
        client.get_with_token("/api/items", &service).await.status,
        StatusCode::OK
    );
    // Minted for a user of the store: that user's current state applies.
    let for_alice = fixture_token("alice", "read write");
    let post = client
        .request("POST", "/api/items")
        .header("authorization", format!("Bearer {for_alice}"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request");
    assert_eq!(client.send(post).await.status, StatusCode::FORBIDDEN);
    apply(
        &gw,
        &with_alice(&up, &format!("{}, disabled: true", alice_as_is())),
    );
    let reply = client.get_with_token("/api/items", &for_alice).await;
    assert_eq!(invalid_token(&reply), "user disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_tokens_issued_under_the_old_password() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_alice(&up, &alice_as_is())).await;
    let client = gw.h1();
    let old_token = client.token("alice", "secret123").await;
    assert_eq!(
        client.get_with_token("/api/items", &old_token).await.status,
        StatusCode::OK
    );

    let new_hash = portcullis::auth::password::hash_password(b"a new passphrase").expect("hash");
    apply(
        &gw,
        &with_alice(&up, &format!("password: \"{new_hash}\", scopes: [read]")),
    );

    for client in [gw.h1(), gw.h2()] {
        let reply = client.get_with_token("/api/items", &old_token).await;
        assert_eq!(
            invalid_token(&reply),
            "credentials changed since the token was issued"
        );
    }
    assert_eq!(
        client.login("alice", "secret123").await.status,
        StatusCode::BAD_REQUEST
    );
    let new_token = client.token("alice", "a new passphrase").await;
    assert_eq!(
        client.get_with_token("/api/items", &new_token).await.status,
        StatusCode::OK
    );
    // The credential version is a digest, never the hash or any part of it.
    let (_, claims) = verify_hs256(&new_token, SECRET.as_bytes()).expect("our token");
    let cv = claims["cv"].as_str().expect("cv claim");
    assert!(!new_hash.contains(cv), "cv {cv} is part of the hash");
    assert_eq!(cv.len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_scopes_narrow_live_tokens_and_the_forwarded_scopes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let client = gw.h1();
    let token = client.token("bob", "secret123").await;
    let post = |client: &Client| {
        client
            .request("POST", "/api/items")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request")
    };
    assert_eq!(client.send(post(&client)).await.status, StatusCode::OK);
    assert_eq!(
        up.last().and_then(|s| s.header("x-forwarded-scopes")),
        Some("read write".to_owned())
    );

    let narrowed = fixture_yaml(&up.url()).replace(
        &format!("  bob: {{ password: \"{SECRET123_HASH}\", scopes: [read, write] }}"),
        &format!("  bob: {{ password: \"{SECRET123_HASH}\", scopes: [read] }}"),
    );
    assert_ne!(narrowed, fixture_yaml(&up.url()), "fixture changed shape");
    apply(&gw, &narrowed);

    for client in [gw.h1(), gw.h2()] {
        let count = up.count();
        let reply = client.send(post(&client)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
        assert_eq!(reply.json()["error"], "insufficient_scope");
        assert_eq!(up.count(), count, "a narrowed token was forwarded");
        let reply = client.get_with_token("/api/items", &token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            up.last().and_then(|s| s.header("x-forwarded-scopes")),
            Some("read".to_owned())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_cannot_log_in_and_their_tokens_stop_working_until_enabled() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&with_alice(&up, &alice_as_is())).await;
    let client = gw.h1();
    let token = client.token("alice", "secret123").await;
    let wrong_password = client.login("alice", "not-her-password").await;

    apply(
        &gw,
        &with_alice(&up, &format!("{}, disabled: true", alice_as_is())),
    );
    let reply = client.get_with_token("/api/items", &token).await;
    assert_eq!(invalid_token(&reply), "user disabled");
    let refused = client.login("alice", "secret123").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    // The same bytes as a wrong password: a disabled account is not told apart.
    assert_eq!(refused.body, wrong_password.body);
    assert_eq!(refused.json()["error"], "invalid_grant");

    apply(&gw, &with_alice(&up, &alice_as_is()));
    assert_eq!(
        client.get_with_token("/api/items", &token).await.status,
        StatusCode::OK
    );
}

const ALICE_PROFILE: &str = r#"email: alice@example.com, name: "Zoë Ångström", groups: [eng, "on call"], attributes: { team: payments, cost-centre: "4711" }"#;

/// Every spelling a client might use to smuggle a profile header past the gateway.
const SPOOFED: &[(&str, &str)] = &[
    ("X-Forwarded-Email", "mallory@evil.test"),
    ("x-forwarded-EMAIL", "mallory@evil.test"),
    ("X_Forwarded_Email", "mallory@evil.test"),
    ("X-Forwarded_Email", "mallory@evil.test"),
    ("X-Forwarded-Name", "Mallory"),
    ("X_FORWARDED_NAME", "Mallory"),
    ("X-Forwarded-Groups", "admin"),
    ("x_forwarded_groups", "admin"),
    ("X-Forwarded-Attr-Team", "evil"),
    ("X-Forwarded-Attr-Role", "admin"),
    ("X_Forwarded_Attr_Team", "evil"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_is_forwarded_as_gateway_headers_and_client_copies_never_pass() {
    let up = Upstream::start().await;
    let yaml = with_alice(&up, &format!("{}, {ALICE_PROFILE}", alice_as_is()));
    let gw = Gateway::start(&yaml).await;
    let token = gw.h1().token("alice", "secret123").await;
    let bearer = format!("Bearer {token}");
    for client in [gw.h1(), gw.h2()] {
        let mut headers = SPOOFED.to_vec();
        headers.push(("authorization", &bearer));
        let reply = client.get("/api/items", &headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let seen = up.last().expect("forwarded");
        assert_eq!(seen.all("x-forwarded-email"), ["alice@example.com"]);
        // RFC 8187: UTF-8, percent-encoded, so the value stays visible ASCII.
        assert_eq!(
            seen.all("x-forwarded-name"),
            ["UTF-8''Zo%C3%AB%20%C3%85ngstr%C3%B6m"]
        );
        assert_eq!(seen.all("x-forwarded-groups"), ["eng,on call"]);
        assert_eq!(seen.all("x-forwarded-attr-team"), ["payments"]);
        assert_eq!(seen.all("x-forwarded-attr-cost-centre"), ["4711"]);
        assert!(seen.all("x-forwarded-attr-role").is_empty());
        assert_eq!(seen.all("x-forwarded-user"), ["alice"]);
        let underscored: Vec<_> = seen
            .headers
            .keys()
            .filter(|name| name.as_str().contains('_'))
            .collect();
        assert!(
            underscored.is_empty(),
            "reached the upstream: {underscored:?}"
        );
    }
    // Anonymous on a public route: no profile at all, and none of the client's.
    let reply = gw.h2().get("/public/x", SPOOFED).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = up.last().expect("forwarded");
    let leaked: Vec<_> = seen
        .headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("x-forwarded-")
                && name != "x-forwarded-for"
                && name != "x-forwarded-proto"
                && name != "x-forwarded-host"
        })
        .collect();
    assert!(leaked.is_empty(), "reached the upstream: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_carry_email_and_name_only_when_tokens_claims_asks() {
    let up = Upstream::start().await;
    let profile = format!("{}, {ALICE_PROFILE}", alice_as_is());
    let plain = with_alice(&up, &profile);
    let gw = Gateway::start(&plain).await;
    let token = gw.h1().token("alice", "secret123").await;
    let (_, claims) = verify_hs256(&token, SECRET.as_bytes()).expect("our token");
    assert!(
        claims.get("email").is_none() && claims.get("name").is_none(),
        "{claims}"
    );
    assert!(claims["cv"].is_string(), "{claims}");

    let with_claims = plain.replace(
        "  leeway: 30s\n",
        "  leeway: 30s\n  claims: [email, name]\n",
    );
    assert_ne!(with_claims, plain, "fixture changed shape");
    apply(&gw, &with_claims);
    let token = gw.h1().token("alice", "secret123").await;
    let (_, claims) = verify_hs256(&token, SECRET.as_bytes()).expect("our token");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["name"], "Zoë Ångström");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_from_a_users_file_follow_the_store_the_same_way() {
    let up = Upstream::start().await;
    let users_line = format!("  alice: {{ password: \"{SECRET123_HASH}\", scopes: [read] }}\n");
    let fixture = fixture_yaml(&up.url());
    let users_block_start = fixture.find("users:\n").expect("users block");
    let users_block_end = fixture.find("upstreams:\n").expect("upstreams block");
    let rest = format!(
        "{}users_file: users.yaml\n{}",
        &fixture[..users_block_start],
        &fixture[users_block_end..]
    );
    let pki = TestPki::new();
    let config_path = pki.dir.path().join("gateway.yaml");
    let users_path = config_path.with_file_name("users.yaml");
    let write_users = |text: &str| std::fs::write(&users_path, text).expect("write users");
    write_users(&format!(
        "alice: {{ password: \"{SECRET123_HASH}\", scopes: [read], email: alice@example.com }}\n"
    ));
    std::fs::write(&config_path, config_text(&pki, &rest)).expect("write config");
    let gw = Gateway::start_at(pki, config_path).await;
    let client = gw.h1();
    let token = client.token("alice", "secret123").await;
    assert_eq!(
        client.get_with_token("/api/items", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        up.last().and_then(|s| s.header("x-forwarded-email")),
        Some("alice@example.com".to_owned())
    );

    write_users(&format!("bob: {}", &users_line["  alice: ".len()..]));
    apply(&gw, &rest);
    let reply = client.get_with_token("/api/items", &token).await;
    assert_eq!(invalid_token(&reply), "user no longer exists");
}
