//! Refresh tokens (RFC 6749 §6, RFC 9700 §4.14) and RFC 7009 revocation, in memory mode:
//! rotation, every RFC error, scope narrowing, the grace window, reuse detection that ends the
//! whole family (its newest refresh token and its access tokens too), reload-driven endings,
//! `/revoke` for both kinds of token and `/logout` with a refresh token.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

/// Users alice (read), bob (read write) with `secret123`; `grace` is `tokens.refresh.reuse_grace`.
pub fn config(up: &str, grace: &str, bob_hash: &str, bob_scopes: &str) -> String {
    format!(
        r#"tokens:
  issuer: https://gw.test
  secret: "{SECRET}"
  ttl: 5m
  refresh: {{ ttl: 1h, max_lifetime: 1d, reuse_grace: {grace} }}
login:
  lockout: {{ failures: 3, window: 1m, duration: 1m }}
scopes:
  read: Read
  write: {{ description: Write, implies: [read] }}
users:
  alice: {{ password: "{SECRET123_HASH}", scopes: [read] }}
  bob: {{ password: "{bob_hash}", scopes: [{bob_scopes}] }}
upstreams: {{ up: {up} }}
routes:
  - {{ id: read, path: /read/**, upstream: up, scopes: [read] }}
  - {{ id: write, path: /write/**, upstream: up, scopes: [write] }}
"#
    )
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

pub async fn post_form(client: &Client, path: &str, pairs: &[(&str, &str)]) -> Reply {
    client
        .call(
            "POST",
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            form(pairs),
        )
        .await
}

pub async fn refresh(client: &Client, token: &str) -> Reply {
    post_form(
        client,
        "/login",
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

/// Log in and return the token response.
pub async fn login_pair(client: &Client, user: &str) -> Value {
    let reply = client.login(user, "secret123").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

fn field<'a>(json: &'a Value, name: &str) -> &'a str {
    json[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {json}"))
}

fn oauth_error(reply: &Reply) -> String {
    reply.json()["error"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn login_returns_a_refresh_token_and_refreshing_rotates_it() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "0s", SECRET123_HASH, "write")).await;
    let client = gw.h1();
    let first = login_pair(&client, "bob").await;
    let refresh_token = field(&first, "refresh_token");
    assert!(refresh_token.starts_with("prt_"), "{refresh_token}");
    let reply = refresh(&client, refresh_token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let second = reply.json();
    assert_eq!(field(&second, "token_type"), "bearer");
    assert_eq!(field(&second, "scope"), "write");
    assert_eq!(second["expires_in"], 300);
    assert_ne!(field(&second, "refresh_token"), refresh_token, "rotated");
    assert_ne!(
        field(&second, "access_token"),
        field(&first, "access_token")
    );
    let access = field(&second, "access_token");
    assert_eq!(
        client.get_with_token("/write/x", access).await.status,
        StatusCode::OK
    );
    // The server metadata lists the grant and the revocation endpoint (RFC 8414).
    let doc = client
        .get("/.well-known/oauth-authorization-server", &[])
        .await
        .json();
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!(["password", "refresh_token"])
    );
    assert_eq!(doc["revocation_endpoint"], "https://gw.test/revoke");
    // And the new one rotates in turn.
    let third = refresh(&client, field(&second, "refresh_token")).await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.text());
}

#[tokio::test]
async fn reuse_after_rotation_ends_the_whole_family() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "0s", SECRET123_HASH, "write")).await;
    let client = gw.h1();
    let first = login_pair(&client, "bob").await;
    let stolen = field(&first, "refresh_token").to_owned();
    let second = refresh(&client, &stolen).await.json();
    let newest_access = field(&second, "access_token").to_owned();
    let newest_refresh = field(&second, "refresh_token").to_owned();
    assert_eq!(
        client
            .get_with_token("/read/x", &newest_access)
            .await
            .status,
        StatusCode::OK
    );
    // The old token comes back: someone else holds the chain.
    let replay = refresh(&client, &stolen).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(oauth_error(&replay), "invalid_grant");
    // The newest refresh token of the chain is dead too…
    let after = refresh(&client, &newest_refresh).await;
    assert_eq!(after.status, StatusCode::BAD_REQUEST, "{}", after.text());
    assert_eq!(oauth_error(&after), "invalid_grant");
    // …and so are the access tokens the family issued.
    for access in [field(&first, "access_token"), newest_access.as_str()] {
        let reply = client.get_with_token("/read/x", access).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{access}");
    }
    // Another login's family is untouched.
    let other = login_pair(&client, "bob").await;
    assert_eq!(
        refresh(&client, field(&other, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_retry_within_the_grace_window_gets_the_same_pair_and_later_reuse_is_caught() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "2s", SECRET123_HASH, "write")).await;
    let client = gw.h1();
    let first = login_pair(&client, "bob").await;
    let token = field(&first, "refresh_token").to_owned();
    let answer = refresh(&client, &token).await;
    let retry = refresh(&client, &token).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text());
    assert_eq!(
        retry.json(),
        answer.json(),
        "the same pair, not a second one"
    );
    assert_eq!(retry.header("cache-control"), Some("no-store"));
    let newest = answer.json()["refresh_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let late = refresh(&client, &token).await;
    assert_eq!(oauth_error(&late), "invalid_grant");
    assert_eq!(
        oauth_error(&refresh(&client, &newest).await),
        "invalid_grant"
    );
}

#[tokio::test]
async fn every_token_endpoint_error_of_the_rfc() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "0s", SECRET123_HASH, "write")).await;
    let client = gw.h1();
    let pair = login_pair(&client, "bob").await;
    let token = field(&pair, "refresh_token");
    // No refresh_token at all.
    let reply = post_form(&client, "/login", &[("grant_type", "refresh_token")]).await;
    assert_eq!(
        (reply.status, oauth_error(&reply)),
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    // Junk, an access token, a token of the right shape nobody issued.
    for junk in [
        "nope",
        field(&pair, "access_token"),
        "prt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let reply = refresh(&client, junk).await;
        assert_eq!(oauth_error(&reply), "invalid_grant", "{junk}");
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    // Widening is refused; the token stays usable.
    let reply = post_form(
        &client,
        "/login",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("scope", "write admin"),
        ],
    )
    .await;
    assert_eq!(oauth_error(&reply), "invalid_scope");
    // Narrowing (to an implied scope) works, and the family keeps its whole grant.
    let narrow = post_form(
        &client,
        "/login",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("scope", "read"),
        ],
    )
    .await;
    assert_eq!(narrow.status, StatusCode::OK, "{}", narrow.text());
    let narrow = narrow.json();
    assert_eq!(field(&narrow, "scope"), "read");
    let access = field(&narrow, "access_token");
    assert_eq!(
        client.get_with_token("/write/x", access).await.status,
        StatusCode::FORBIDDEN
    );
    let wide = refresh(&client, field(&narrow, "refresh_token"))
        .await
        .json();
    assert_eq!(field(&wide, "scope"), "write");
    // Unknown grant types.
    let reply = post_form(&client, "/login", &[("grant_type", "client_credentials")]).await;
    assert_eq!(oauth_error(&reply), "unsupported_grant_type");
    // Repeated parameters (RFC 6749 §3.1).
    let reply = client
        .call(
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("grant_type=refresh_token&refresh_token={token}&refresh_token={token}"),
        )
        .await;
    assert_eq!(oauth_error(&reply), "invalid_request");
}

#[tokio::test]
async fn without_tokens_refresh_there_is_no_refresh_token_and_no_refresh_grant() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let client = gw.h1();
    let reply = client.login("alice", "secret123").await;
    assert!(
        reply.json().get("refresh_token").is_none(),
        "{}",
        reply.text()
    );
    let reply = refresh(&client, "prt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(oauth_error(&reply), "unsupported_grant_type");
}

#[tokio::test]
async fn a_reload_that_changes_a_user_ends_their_families() {
    let up = Upstream::start().await;
    let url = up.url();
    let gw = Gateway::start(&config(&url, "0s", SECRET123_HASH, "write")).await;
    let client = gw.h1();
    let alice = login_pair(&client, "alice").await;
    let narrowed = login_pair(&client, "bob").await;
    // Bob's scopes narrow from write to read: his write family must end.
    apply(&gw, &config(&url, "0s", SECRET123_HASH, "read"));
    let reply = refresh(&client, field(&narrowed, "refresh_token")).await;
    assert_eq!(oauth_error(&reply), "invalid_grant", "{}", reply.text());
    // Alice is unchanged and keeps refreshing.
    let alice_next = refresh(&client, field(&alice, "refresh_token")).await;
    assert_eq!(alice_next.status, StatusCode::OK);
    // Bob's password changes: a family from before it ends (and its access token with it).
    let read_family = login_pair(&client, "bob").await;
    let other_hash = portcullis_hash("another-password");
    apply(&gw, &config(&url, "0s", &other_hash, "read"));
    let reply = refresh(&client, field(&read_family, "refresh_token")).await;
    assert_eq!(oauth_error(&reply), "invalid_grant");
    // A removed user: alice goes.
    let alice_token = alice_next.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let without_alice = config(&url, "0s", &other_hash, "read").replace(
        &format!("  alice: {{ password: \"{SECRET123_HASH}\", scopes: [read] }}\n"),
        "",
    );
    apply(&gw, &without_alice);
    let reply = refresh(&client, &alice_token).await;
    assert_eq!(oauth_error(&reply), "invalid_grant", "{}", reply.text());
}

/// Write `yaml` and reload it as a save or SIGHUP would.
fn apply(gw: &Gateway, yaml: &str) {
    gw.write_config(yaml);
    let outcome = portcullis::reload::reload(&gw.config_path, &gw.shared);
    assert!(
        matches!(outcome, portcullis::reload::ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
}

/// A fresh argon2id hash of `password` from the gateway's own command.
fn portcullis_hash(password: &str) -> String {
    let hash = portcullis::auth::password::hash_password(password.as_bytes()).unwrap();
    hash.to_string()
}

#[tokio::test]
async fn refresh_failures_do_not_count_toward_the_login_lockout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "0s", SECRET123_HASH, "write")).await;
    let client = gw.h1();
    for _ in 0..6 {
        let reply = refresh(&client, "prt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
        assert_eq!(oauth_error(&reply), "invalid_grant");
    }
    assert_eq!(
        client.login("bob", "secret123").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn one_family_is_rate_limited_on_its_own() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "0s", SECRET123_HASH, "write")).await;
    let client = gw.h1();
    let mut token = field(&login_pair(&client, "bob").await, "refresh_token").to_owned();
    let mut limited = None;
    for n in 0..8 {
        let reply = refresh(&client, &token).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((n, reply));
            break;
        }
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        token = reply.json()["refresh_token"].as_str().unwrap().to_owned();
    }
    let (n, reply) = limited.expect("a burst of refreshes is limited");
    assert_eq!(n, 5, "the burst is 5");
    assert!(reply.header("retry-after").is_some());
    // The limited token was not rotated and still works once the limit allows.
    let other = login_pair(&client, "alice").await;
    assert_eq!(
        refresh(&client, field(&other, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoke_endpoint_takes_either_kind_and_answers_200_whatever_it_gets() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "0s", SECRET123_HASH, "write")).await;
    let client = gw.h1();
    let pair = login_pair(&client, "bob").await;
    let access = field(&pair, "access_token");
    let refresh_token = field(&pair, "refresh_token");
    // An access token, hinted wrongly: still found.
    let reply = post_form(
        &client,
        "/revoke",
        &[("token", access), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(
        client.get_with_token("/read/x", access).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A refresh token: its family ends.
    let reply = post_form(&client, "/revoke", &[("token", refresh_token)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        oauth_error(&refresh(&client, refresh_token).await),
        "invalid_grant"
    );
    // Unknown, junk and already revoked tokens: 200 all the same (RFC 7009 §2.2).
    for token in [
        "junk",
        "prt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        access,
        refresh_token,
    ] {
        let reply = post_form(&client, "/revoke", &[("token", token)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{token}");
    }
    // No token: 400; another method: 405.
    let reply = post_form(&client, "/revoke", &[("token_type_hint", "access_token")]).await;
    assert_eq!(
        (reply.status, oauth_error(&reply)),
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    assert_eq!(
        client.get("/revoke", &[]).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn logout_with_the_refresh_token_ends_the_family_and_only_for_its_owner() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), "0s", SECRET123_HASH, "write")).await;
    let client = gw.h1();
    let bob = login_pair(&client, "bob").await;
    let alice = login_pair(&client, "alice").await;
    // Alice cannot end Bob's family with her own token.
    let reply = client
        .call(
            "POST",
            "/logout",
            &[
                (
                    "authorization",
                    &format!("Bearer {}", field(&alice, "access_token")),
                ),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            form(&[("refresh_token", field(&bob, "refresh_token"))]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(
        refresh(&client, field(&bob, "refresh_token")).await.status,
        StatusCode::OK
    );
    let bob = login_pair(&client, "bob").await;
    let reply = client
        .call(
            "POST",
            "/logout",
            &[
                (
                    "authorization",
                    &format!("Bearer {}", field(&bob, "access_token")),
                ),
                ("content-type", "application/json"),
            ],
            serde_json::json!({ "refresh_token": field(&bob, "refresh_token") }).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    assert_eq!(
        oauth_error(&refresh(&client, field(&bob, "refresh_token")).await),
        "invalid_grant"
    );
    assert_eq!(
        client
            .get_with_token("/read/x", field(&bob, "access_token"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // A bare logout (no body, JSON content type) still works as before.
    let again = login_pair(&client, "alice").await;
    let reply = client
        .call(
            "POST",
            "/logout",
            &[
                (
                    "authorization",
                    &format!("Bearer {}", field(&again, "access_token")),
                ),
                ("content-type", "application/json"),
            ],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    // And her family from before keeps working: only the named family ends.
    assert_eq!(
        refresh(&client, field(&again, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );
}
