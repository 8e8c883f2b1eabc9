//! `POST /login` and `POST /logout` (SPEC "Endpoints"; THREATS L-01 … L-14), black-box over
//! real TLS. Every argon2 verification costs tens of milliseconds, so each test does few logins
//! and runs independent ones concurrently.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("content-type", "application/json");

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The fixture plus a `login:` section with the given lockout policy.
fn yaml_with_lockout(upstream: &str, failures: u32, duration: &str) -> String {
    format!(
        "{}login:\n  path: /login\n  lockout: {{ failures: {failures}, window: 1m, duration: {duration} }}\n",
        fixture_yaml(upstream)
    )
}

async fn post_form(client: &Client, body: String, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![FORM];
    headers.extend_from_slice(extra);
    client.call("POST", "/login", &headers, body).await
}

fn assert_no_store(label: &str, reply: &Reply) {
    assert_eq!(
        reply.header("cache-control"),
        Some("no-store"),
        "{label}: Cache-Control"
    );
    assert_eq!(reply.header("pragma"), Some("no-cache"), "{label}: Pragma");
}

fn assert_oauth_error(label: &str, reply: &Reply, status: u16, error: &str) {
    assert_eq!(reply.status.as_u16(), status, "{label}: {}", reply.text());
    let body = reply.json();
    assert_eq!(body["error"], error, "{label}: {body}");
    assert!(
        body["error_description"].is_string(),
        "{label}: error_description: {body}"
    );
    assert_no_store(label, reply);
}

fn scope_set(scope: &str) -> Vec<String> {
    let mut v: Vec<String> = scope.split(' ').map(str::to_owned).collect();
    v.sort();
    v
}

/// Check a successful login response and return (header, claims) of its verified token.
fn check_success(label: &str, reply: &Reply, user: &str, scope: &[&str]) -> (Value, Value) {
    assert_eq!(reply.status, 200, "{label}: {}", reply.text());
    assert_no_store(label, reply);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{label}: content-type"
    );
    let body = reply.json();
    assert_eq!(
        body["token_type"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("bearer")
    );
    assert_eq!(body["expires_in"], 300, "{label}: ttl 5m");
    let mut want: Vec<String> = scope.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(scope_set(body["scope"].as_str().unwrap()), want, "{label}");
    let token = body["access_token"].as_str().unwrap();
    let (header, claims) = verify_hs256(token, SECRET.as_bytes())
        .unwrap_or_else(|| panic!("{label}: token does not verify under SECRET with HS256"));
    assert_eq!(header["alg"], "HS256", "{label}: {header}");
    assert_eq!(header["typ"], "at+jwt", "{label}: {header}");
    let kid = header["kid"].as_str().expect("kid");
    assert!(
        !kid.is_empty() && !kid.contains(SECRET),
        "{label}: kid {kid}"
    );
    assert_eq!(claims["iss"], "https://gw.test", "{label}: {claims}");
    assert_eq!(claims["sub"], user, "{label}: {claims}");
    let aud_ok = claims["aud"] == "gw-upstreams"
        || claims["aud"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("gw-upstreams")));
    assert!(aud_ok, "{label}: aud {claims}");
    let iat = claims["iat"].as_u64().expect("iat");
    let n = now();
    // Current, not stale: the slack covers a reply waiting for its joined siblings, each
    // an argon2 hash of a second or more in debug builds, on cores other tests share.
    assert!(
        iat + 30 >= n && iat <= n + 1,
        "{label}: iat {iat} vs now {n}"
    );
    assert_eq!(claims["exp"].as_u64(), Some(iat + 300), "{label}: exp");
    assert!(
        claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "{label}: jti"
    );
    assert_eq!(claims["scope"], body["scope"], "{label}: scope claim");
    let text = claims.to_string();
    assert!(
        !text.contains("secret123") && !text.contains("argon2"),
        "{label}: no credentials in claims"
    );
    (header, claims)
}

// ---------------------------------------------------------------------------------------------
// L-01: success

#[tokio::test]
async fn form_and_json_logins_issue_a_verifiable_at_jwt_with_no_store_headers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let h1 = gw.h1();
    let h2 = gw.h2();
    let json_body = json!({"username": "bob", "password": "secret123"}).to_string();
    let (form_reply, json_reply, granted_reply) = tokio::join!(
        h1.login("alice", "secret123"),
        h2.call("POST", "/login", &[JSON], json_body),
        post_form(
            &h1,
            form(&[
                ("grant_type", "password"),
                ("username", "root"),
                ("password", "secret123")
            ]),
            &[]
        ),
    );
    let (_, alice) = check_success("alice form", &form_reply, "alice", &["read"]);
    let (_, bob) = check_success("bob JSON over h2", &json_reply, "bob", &["read", "write"]);
    let (_, root) = check_success("root with grant_type", &granted_reply, "root", &["admin"]);
    assert_ne!(alice["jti"], bob["jti"]);
    assert_ne!(bob["jti"], root["jti"]);

    // The issued token works end to end and names the user upstream.
    let token = form_reply.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = h1.get_with_token("/api/items", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().unwrap().all("x-forwarded-user"), vec!["alice"]);
}

// ---------------------------------------------------------------------------------------------
// L-02: no enumeration by message

#[tokio::test]
async fn unknown_user_and_wrong_password_get_byte_identical_invalid_grant() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let c = gw.h1();
    let (unknown, wrong) = tokio::join!(c.login("mallory", "secret123"), c.login("alice", "nope"));
    for (label, reply) in [("unknown user", &unknown), ("wrong password", &wrong)] {
        assert_oauth_error(label, reply, 400, "invalid_grant");
    }
    assert_eq!(unknown.body, wrong.body, "bodies must be byte-identical");
    let strip = |r: &Reply| {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id"))
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        h.sort();
        h
    };
    assert_eq!(strip(&unknown), strip(&wrong), "headers must match");
    assert!(!unknown.text().contains("mallory") && !wrong.text().contains("alice"));
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// L-07, L-11, L-12: parameter parsing and method

#[tokio::test]
async fn malformed_login_requests_get_the_matching_oauth_error() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let c = gw.h1();
    let long_password = "p".repeat(2048);
    let (
        missing_pw,
        missing_user,
        client_creds,
        dup_user,
        dup_pw,
        in_query,
        long_pw,
        bad_json,
        json_array,
    ) = tokio::join!(
        post_form(&c, form(&[("username", "alice")]), &[]),
        post_form(&c, form(&[("password", "secret123")]), &[]),
        post_form(
            &c,
            form(&[
                ("grant_type", "client_credentials"),
                ("username", "alice"),
                ("password", "secret123")
            ]),
            &[]
        ),
        post_form(
            &c,
            form(&[
                ("username", "alice"),
                ("username", "root"),
                ("password", "secret123")
            ]),
            &[]
        ),
        post_form(
            &c,
            form(&[
                ("username", "alice"),
                ("password", "x"),
                ("password", "secret123")
            ]),
            &[]
        ),
        c.call(
            "POST",
            "/login?username=alice&password=secret123",
            &[FORM],
            ""
        ),
        post_form(
            &c,
            form(&[("username", "alice"), ("password", &long_password)]),
            &[]
        ),
        c.call("POST", "/login", &[JSON], "{\"username\": \"alice\", "),
        c.call("POST", "/login", &[JSON], "[\"alice\", \"secret123\"]"),
    );
    assert_oauth_error("missing password", &missing_pw, 400, "invalid_request");
    assert_oauth_error("missing username", &missing_user, 400, "invalid_request");
    assert_oauth_error(
        "client_credentials",
        &client_creds,
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error("duplicate username", &dup_user, 400, "invalid_request");
    assert_oauth_error("duplicate password", &dup_pw, 400, "invalid_request");
    assert_eq!(
        in_query.status,
        400,
        "credentials in the query: {}",
        in_query.text()
    );
    assert!(!in_query.text().contains("secret123"));
    // Refused as a request problem, before any hashing (not a credential failure).
    assert_oauth_error("2 KiB password", &long_pw, 400, "invalid_request");
    assert_eq!(bad_json.status, 400, "truncated JSON");
    assert_eq!(json_array.status, 400, "JSON array body");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_64_character_password_is_checked_not_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    // NIST SP 800-63B: at least 64 characters must be allowed; this one is just wrong.
    let reply = gw.h1().login("alice", &"x".repeat(64)).await;
    assert_oauth_error("64-char password", &reply, 400, "invalid_grant");
}

#[tokio::test]
async fn a_login_body_over_8_kib_is_413() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let body = form(&[
        ("username", "alice"),
        ("password", "secret123"),
        ("pad", &"a".repeat(9 * 1024)),
    ]);
    let reply = post_form(&gw.h1(), body, &[]).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    let json_body =
        json!({"username": "alice", "password": "secret123", "pad": "a".repeat(9 * 1024)});
    let reply = gw
        .h2()
        .call("POST", "/login", &[JSON], json_body.to_string())
        .await;
    assert_eq!(reply.status, 413, "JSON over h2: {}", reply.text());
}

#[tokio::test]
async fn login_accepts_only_post_and_says_so_with_allow() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let c = gw.h1();
    for method in ["GET", "PUT", "DELETE"] {
        let reply = c
            .call(method, "/login?username=alice&password=secret123", &[], "")
            .await;
        assert_eq!(reply.status, 405, "{method} /login");
        assert_eq!(reply.header("allow"), Some("POST"), "{method} /login");
        assert!(!reply.text().contains("access_token"));
    }
    let reply = c.get("/login", &[]).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn every_login_endpoint_response_is_marked_no_store() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let c = gw.h1();
    let too_big = post_form(&c, form(&[("pad", &"a".repeat(9 * 1024))]), &[]).await;
    assert_eq!(too_big.status, 413);
    let get = c.get("/login", &[]).await;
    assert_eq!(get.status, 405);
    let bad_type = c
        .call(
            "POST",
            "/login",
            &[("content-type", "text/plain")],
            "username=alice",
        )
        .await;
    assert_eq!(bad_type.status, 400);
    let problems: Vec<String> = [
        ("413", &too_big),
        ("405", &get),
        ("400 text/plain", &bad_type),
    ]
    .iter()
    .filter(|(_, r)| {
        r.header("cache-control") != Some("no-store") || r.header("pragma") != Some("no-cache")
    })
    .map(|(label, r)| {
        format!(
            "{label}: cache-control={:?} pragma={:?}",
            r.header("cache-control"),
            r.header("pragma")
        )
    })
    .collect();
    assert!(
        problems.is_empty(),
        "login responses without no-store:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// L-13: scope request

#[tokio::test]
async fn requested_scope_narrows_the_grant_and_cannot_widen_it() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let c = gw.h1();
    let (bob_read, alice_admin, alice_twice) = tokio::join!(
        post_form(
            &c,
            form(&[
                ("username", "bob"),
                ("password", "secret123"),
                ("scope", "read")
            ]),
            &[]
        ),
        post_form(
            &c,
            form(&[
                ("username", "alice"),
                ("password", "secret123"),
                ("scope", "admin")
            ]),
            &[]
        ),
        post_form(
            &c,
            form(&[
                ("username", "alice"),
                ("password", "secret123"),
                ("scope", "read read")
            ]),
            &[]
        ),
    );
    check_success("bob scope=read", &bob_read, "bob", &["read"]);
    assert_oauth_error("alice scope=admin", &alice_admin, 400, "invalid_scope");
    assert!(!alice_admin.text().contains("access_token"));
    // `read read` is either granted as `read` or refused; never widened.
    match alice_twice.status.as_u16() {
        200 => {
            check_success("alice scope=read read", &alice_twice, "alice", &["read"]);
        }
        _ => assert_oauth_error("alice scope=read read", &alice_twice, 400, "invalid_scope"),
    }
    // The narrowed token really is read-only.
    let token = bob_read.json()["access_token"].as_str().unwrap().to_owned();
    let reply = c
        .call(
            "POST",
            "/api/x",
            &[("authorization", &format!("Bearer {token}"))],
            "{}",
        )
        .await;
    assert_eq!(reply.status, 403, "narrowed token cannot write");
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// L-10: usernames

#[tokio::test]
async fn usernames_are_case_insensitive_and_the_subject_is_canonical() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let c = gw.h1();
    let reply = c.login("ALICE", "secret123").await;
    check_success("ALICE", &reply, "alice", &["read"]);
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(c.get_with_token("/api/x", &token).await.status, 200);
    assert_eq!(up.last().unwrap().all("x-forwarded-user"), vec!["alice"]);
}

// ---------------------------------------------------------------------------------------------
// L-04 … L-06: regulation

#[tokio::test]
async fn an_account_locks_after_repeated_failures_and_unlocks_after_the_duration() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml_with_lockout(&up.url(), 3, "2s")).await;
    let c = gw.h1();
    for i in 0..3 {
        let reply = c.login("alice", &format!("wrong{i}")).await;
        assert_oauth_error(&format!("failure {i}"), &reply, 400, "invalid_grant");
    }
    let locked_at = Instant::now();
    let (right, wrong) = tokio::join!(c.login("alice", "secret123"), c.login("alice", "wrong"));
    for (label, reply) in [
        ("right password while locked", &right),
        ("wrong password while locked", &wrong),
    ] {
        assert_eq!(reply.status, 429, "{label}: {}", reply.text());
        let retry: u64 = reply
            .header("retry-after")
            .unwrap_or_else(|| panic!("{label}: Retry-After"))
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{label}: Retry-After {retry}");
        assert_no_store(label, reply);
        assert!(!reply.text().contains("access_token"));
    }
    assert_eq!(
        right.body, wrong.body,
        "the lock does not reveal the password"
    );
    // Wait out the 2 s ban (the one real wait in these tests).
    let ban = Duration::from_millis(2200);
    if let Some(rest) = ban.checked_sub(locked_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let reply = c.login("alice", "secret123").await;
    check_success("after the ban", &reply, "alice", &["read"]);
}

#[tokio::test]
async fn failures_across_usernames_lock_the_client_address() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml_with_lockout(&up.url(), 3, "1m")).await;
    let c = gw.h1();
    let replies = join_all(["ghost1", "ghost2", "ghost3"].map(|u| c.login(u, "secret123"))).await;
    for reply in &replies {
        assert_oauth_error("unknown user", reply, 400, "invalid_grant");
    }
    // bob never failed: only the address can be locked.
    let reply = c.login("bob", "secret123").await;
    assert_eq!(reply.status, 429, "per-IP lock: {}", reply.text());
    assert!(reply.header("retry-after").is_some());
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_does_not_escape_the_address_lock() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml_with_lockout(&up.url(), 3, "1m")).await;
    let c = gw.h1();
    let attempts = [
        ("ghost1", "198.51.100.1"),
        ("ghost2", "198.51.100.2"),
        ("ghost3", "198.51.100.3"),
    ];
    let replies = join_all(attempts.map(|(user, ip)| {
        let c = c.clone();
        async move {
            let body = form(&[("username", user), ("password", "secret123")]);
            post_form(
                &c,
                body,
                &[
                    ("x-forwarded-for", ip),
                    ("x-real-ip", ip),
                    ("forwarded", &format!("for={ip}")),
                ],
            )
            .await
        }
    }))
    .await;
    for reply in &replies {
        assert_oauth_error("spoofed attempt", reply, 400, "invalid_grant");
    }
    let body = form(&[("username", "bob"), ("password", "secret123")]);
    let reply = post_form(
        &c,
        body,
        &[
            ("x-forwarded-for", "203.0.113.99"),
            ("x-real-ip", "203.0.113.99"),
            ("forwarded", "for=203.0.113.99"),
        ],
    )
    .await;
    assert_eq!(
        reply.status,
        429,
        "fresh XFF must not reset the lock: {}",
        reply.text()
    );
}

/// A login for `user` that claims, through the trusted loopback proxy, to come from `client`.
async fn login_from(c: &Client, user: &str, password: &str, client: &str) -> Reply {
    let body = form(&[("username", user), ("password", password)]);
    post_form(c, body, &[("x-forwarded-for", client)]).await
}

#[tokio::test]
async fn ipv6_clients_in_one_slash_64_share_an_address_lock_and_mapped_ipv4_is_ipv4() {
    let up = Upstream::start().await;
    // The loopback peer is a trusted proxy, so X-Forwarded-For names the client address.
    // One failure locks, to keep the (slow, in debug builds) hashing to three passwords.
    let yaml = format!(
        "trusted_proxies: [127.0.0.1/32]\n{}",
        yaml_with_lockout(&up.url(), 1, "1m")
    );
    let gw = Gateway::start(&yaml).await;
    let c = gw.h1();
    let (in_64, mapped) = tokio::join!(
        login_from(&c, "ghost1", "secret123", "2001:db8:1:2::1"),
        login_from(&c, "ghost2", "secret123", "::ffff:198.51.100.7"),
    );
    assert_oauth_error("failure in the /64", &in_64, 400, "invalid_grant");
    assert_oauth_error("failure as mapped IPv4", &mapped, 400, "invalid_grant");
    // Another address of the same /64, and the plain spelling of the mapped address.
    let (same_64, same_v4, other_64) = tokio::join!(
        login_from(&c, "bob", "secret123", "2001:db8:1:2:ffff:ffff:ffff:fffe"),
        login_from(&c, "root", "secret123", "198.51.100.7"),
        login_from(&c, "alice", "secret123", "2001:db8:1:3::1"),
    );
    assert_eq!(same_64.status, 429, "same /64: {}", same_64.text());
    assert_eq!(
        same_v4.status,
        429,
        "mapped IPv4 is IPv4: {}",
        same_v4.text()
    );
    check_success("another /64", &other_64, "alice", &["read"]);
}

/// Fill `table` with live filler keys until it takes no more; returns how many it holds.
fn fill(table: &portcullis::auth::lockout::Lockouts) -> usize {
    let now = tokio::time::Instant::now();
    for i in 0..10_000_000u64 {
        let before = table.len();
        let _ = table.record_failure(&format!("filler-{i}"), now);
        if table.len() == before {
            return before;
        }
    }
    panic!("the lockout table never filled up");
}

fn retry_after(label: &str, reply: &Reply) -> u64 {
    reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("{label}: no Retry-After"))
        .parse()
        .unwrap_or_else(|_| panic!("{label}: Retry-After is not a number of seconds"))
}

#[tokio::test]
async fn a_full_username_table_refuses_logins_for_untracked_names_with_503_and_retry_after() {
    let up = Upstream::start().await;
    let yaml = format!(
        "trusted_proxies: [127.0.0.1/32]\n{}",
        yaml_with_lockout(&up.url(), 3, "1m")
    );
    let gw = Gateway::start(&yaml).await;
    let held = fill(&gw.shared.user_lockouts);
    let c = gw.h1();
    // Wrong guesses for alice from fresh addresses (so only the username could stop them),
    // then the right password: a full table must not mean "no longer counted".
    for i in 0..4 {
        let reply = login_from(
            &c,
            "alice",
            &format!("wrong{i}"),
            &format!("198.51.100.{i}"),
        )
        .await;
        assert_oauth_error(
            &format!("guess {i}"),
            &reply,
            503,
            "temporarily_unavailable",
        );
        let retry = retry_after("full table", &reply);
        assert!(
            (1..=60).contains(&retry),
            "Retry-After {retry} (windows end within 1m)"
        );
    }
    let reply = login_from(&c, "alice", "secret123", "198.51.100.9").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(!reply.text().contains("access_token"));
    // Keys already tracked still count and lock while the table is full.
    let filler = "filler-0";
    let _ = gw
        .shared
        .user_lockouts
        .record_failure(filler, tokio::time::Instant::now());
    let _ = gw
        .shared
        .user_lockouts
        .record_failure(filler, tokio::time::Instant::now());
    assert!(gw
        .shared
        .user_lockouts
        .locked(filler, tokio::time::Instant::now())
        .is_some());
    assert_eq!(gw.shared.user_lockouts.len(), held, "the bound holds");
}

#[tokio::test]
async fn concurrent_wrong_passwords_beyond_the_threshold_are_refused_before_hashing() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml_with_lockout(&up.url(), 2, "1m")).await;
    let c = gw.h1();
    let replies = join_all((0..20).map(|i| {
        let c = c.clone();
        async move { c.login("alice", &format!("wrong-{i}")).await }
    }))
    .await;
    let mut tally = std::collections::BTreeMap::new();
    for reply in &replies {
        *tally.entry(reply.status.as_u16()).or_insert(0) += 1;
        assert!(!reply.text().contains("access_token"));
    }
    // Each 400 invalid_grant is one password actually checked; everything else must be a
    // refusal that never reached argon2.
    assert!(
        tally.get(&400).copied().unwrap_or(0) <= 2,
        "more guesses were checked than the lockout allows: {tally:?}"
    );
    assert_eq!(
        tally.get(&429).copied().unwrap_or(0) + tally.get(&400).copied().unwrap_or(0),
        20,
        "{tally:?}"
    );
}

#[tokio::test]
async fn a_right_password_still_hashing_when_the_account_locks_gets_429_not_a_token() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml_with_lockout(&up.url(), 3, "1m")).await;
    let c = gw.h1();
    let login = tokio::spawn(async move { c.login("bob", "secret123").await });
    // Wait until the attempt is counted (it then hashes for tens of milliseconds at least),
    // or a while, then lock the account as concurrent failures elsewhere would.
    let started = Instant::now();
    while gw.shared.user_lockouts.is_empty() && started.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for _ in 0..3 {
        let _ = gw
            .shared
            .user_lockouts
            .record_failure("bob", tokio::time::Instant::now());
    }
    let reply = login.await.unwrap();
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert!(retry_after("locked while hashing", &reply) >= 1);
    assert!(!reply.text().contains("access_token"));
}

// ---------------------------------------------------------------------------------------------
// Logout

#[tokio::test]
async fn logout_revokes_exactly_the_presented_token() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let c = gw.h1();
    let issued = c.token("alice", "secret123").await;
    let other = fixture_token("alice", "read");
    assert_eq!(c.get_with_token("/api/x", &issued).await.status, 200);
    let auth = format!("Bearer {issued}");
    let reply = c
        .call("POST", "/logout", &[("authorization", &auth)], "")
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(reply.body.is_empty());
    up.clear();
    let refused = c.get_with_token("/api/x", &issued).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.json()["error"], "invalid_token");
    assert!(refused
        .header("www-authenticate")
        .is_some_and(|v| v.contains(r#"error="invalid_token""#)));
    assert_eq!(up.count(), 0, "a revoked token reaches nothing");
    // Logging out twice with it is refused too.
    let again = c
        .call("POST", "/logout", &[("authorization", &auth)], "")
        .await;
    assert_eq!(again.status, 401);
    // Another token of the same user still works.
    assert_eq!(c.get_with_token("/api/x", &other).await.status, 200);
    // Logout without a token is a 401, not a 204.
    let anon = c.call("POST", "/logout", &[], "").await;
    assert_eq!(anon.status, 401);
    // Logout with a forged token revokes nothing and is refused.
    let forged = mint(
        Alg::Hs256,
        &json!({"alg":"HS256","typ":"at+jwt"}),
        &fixture_claims("alice", "read"),
        b"not-the-secret-0123456789-abcdefghijklmnop",
    );
    let reply = c
        .call(
            "POST",
            "/logout",
            &[("authorization", &format!("Bearer {forged}"))],
            "",
        )
        .await;
    assert_eq!(reply.status, 401);
}

async fn logout_on(conn: &mut Connection, c: &Client, token: &str) -> Reply {
    let request = c
        .request("POST", "/logout")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    conn.send(request).await
}

#[tokio::test]
async fn one_subject_cannot_fill_the_revocation_table_and_others_can_still_log_out() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let c = gw.h1();
    let mut conn = c.connect().await;
    // Default login.max_revocations_per_subject: 100 live revocations per `sub`.
    for i in 0..100 {
        let reply = logout_on(&mut conn, &c, &fixture_token("alice", "read")).await;
        assert_eq!(reply.status, 204, "logout {i}: {}", reply.text());
    }
    let extra = fixture_token("alice", "read");
    let reply = logout_on(&mut conn, &c, &extra).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(
        reply.json()["error"],
        "too_many_requests",
        "{}",
        reply.text()
    );
    assert!(reply.json()["error_description"].is_string());
    let retry = retry_after("per-subject cap", &reply);
    // The earliest of alice's revocations lapses at exp (5m) + leeway (30s) + grace (10m).
    assert!((1..=930).contains(&retry), "Retry-After {retry}");
    // Refused means not revoked: the client is told so and may retry; nothing half-done.
    assert_eq!(c.get_with_token("/api/x", &extra).await.status, 200);
    // Another subject is unaffected.
    let bob = fixture_token("bob", "read");
    assert_eq!(logout_on(&mut conn, &c, &bob).await.status, 204);
    assert_eq!(c.get_with_token("/api/x", &bob).await.status, 401);
}

#[tokio::test]
async fn logout_accepts_only_post() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let token = fixture_token("alice", "read");
    let c = gw.h1();
    let reply = c.get_with_token("/logout", &token).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    // The GET did not revoke anything.
    assert_eq!(c.get_with_token("/api/x", &token).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// L-08: a login flood cannot starve proxied traffic

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_flood_does_not_starve_authenticated_requests() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml_with_lockout(&up.url(), 1000, "1m")).await;
    let c = gw.h1();
    let token = fixture_token("alice", "read");
    let outcome = tokio::time::timeout(Duration::from_secs(45), async {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood = {
            let c = c.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let replies = join_all((0..50).map(|i| {
                    let c = c.clone();
                    async move { c.login("alice", &format!("wrong-{i}")).await }
                }))
                .await;
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                replies
            })
        };
        let mut statuses = Vec::new();
        let mut slowest = Duration::ZERO;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let started = Instant::now();
            let reply = c.get_with_token("/api/x", &token).await;
            slowest = slowest.max(started.elapsed());
            statuses.push(reply.status.as_u16());
        }
        (flood.await.unwrap(), statuses, slowest)
    })
    .await
    .expect("the flood and the traffic finish within 45 s (no hang)");
    let (logins, statuses, slowest) = outcome;
    let mut tally = std::collections::BTreeMap::new();
    for reply in &logins {
        *tally.entry(reply.status.as_u16()).or_insert(0) += 1;
        assert!(
            matches!(reply.status.as_u16(), 400 | 429 | 503),
            "login answered {}: {}",
            reply.status,
            reply.text()
        );
        assert!(!reply.text().contains("access_token"));
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "authenticated requests failed during the flood: {statuses:?}"
    );
    assert!(
        !statuses.is_empty(),
        "authenticated requests must make progress during the flood"
    );
    eprintln!(
        "logins by status {tally:?}; {} proxied requests during the flood, slowest {slowest:?}",
        statuses.len()
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a proxied request waited {slowest:?} behind password hashing"
    );
}

/// Scheduling policy (`SCHED_*` number) and nice value of each of the process's threads, by
/// thread name.
fn thread_priorities(pid: u32) -> Vec<(String, u32, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name start at field 3: nice is 19, policy is 41.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        threads.push((
            name.trim_end().to_owned(),
            fields[41 - 3].parse().unwrap(),
            fields[19 - 3].parse().unwrap(),
        ));
    }
    threads
}

/// The login-flood test above measures the outcome; this pins the mechanism: hashing only on
/// CPU time nobody else wants (SCHED_IDLE = 5), with a standby at SCHED_BATCH (3) nice 19 for
/// a machine that has none, and the serving threads untouched.
#[tokio::test]
async fn password_hashing_runs_at_idle_priority_beside_a_lowest_priority_standby() {
    let up = Upstream::start().await;
    let gw = Proc::start(&yaml_with_lockout(&up.url(), 1000, "1m")).await;
    // The hashing threads start with the first login.
    assert_eq!(gw.h1().login("alice", "wrong").await.status, 400);
    let threads = thread_priorities(gw.pid);
    let with_name = |wanted: &str| -> Vec<(u32, i32)> {
        threads
            .iter()
            .filter(|(name, _, _)| name == wanted)
            .map(|(_, policy, nice)| (*policy, *nice))
            .collect()
    };
    let idle = with_name("pc-hash-idle");
    assert!(!idle.is_empty(), "no hashing threads among {threads:?}");
    assert!(idle.iter().all(|(policy, _)| *policy == 5), "{threads:?}");
    assert_eq!(with_name("pc-hash-standby"), vec![(3, 19)], "{threads:?}");
    let serving: Vec<_> = threads
        .iter()
        .filter(|(name, _, _)| name.starts_with("portcullis-wor"))
        .collect();
    assert!(!serving.is_empty(), "no serving threads among {threads:?}");
    assert!(
        serving
            .iter()
            .all(|(_, policy, nice)| (*policy, *nice) == (0, 0)),
        "{threads:?}"
    );
}
