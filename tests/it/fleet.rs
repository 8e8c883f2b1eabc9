//! A fleet: several gateways sharing one real `redis-server` (`state.redis`) behave as one —
//! a logout on A is refused on B, a refresh rotation raced from two replicas has exactly one
//! winner, lockouts count attempts spread over replicas, a replica started later loads the
//! state, and with Redis down each endpoint does what `on_unavailable` says while proxied
//! traffic keeps being served from the local copy.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use crate::refresh::{login_pair, post_form, refresh};

use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;

fn fleet_config(up: &str, redis: &str, grace: &str, extra_state: &str) -> String {
    let base = crate::refresh::config(up, grace, SECRET123_HASH, "write");
    format!("{base}state:\n  redis: {{ url: \"{redis}\", timeout: 300ms{extra_state} }}\n")
}

/// Start a replica and wait until it follows Redis.
async fn replica(yaml: &str) -> Gateway {
    let gw = Gateway::start(yaml).await;
    wait_following(&gw, true).await;
    gw
}

async fn wait_following(gw: &Gateway, connected: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = gw
            .shared
            .fleet
            .status(portcullis::clock::unix_now())
            .unwrap();
        if status.connected == connected && (!connected || status.last_error.is_none()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica never {} Redis: {status:?}",
            if connected { "followed" } else { "lost" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn access(json: &serde_json::Value) -> String {
    json["access_token"].as_str().unwrap().to_owned()
}

fn refresh_of(json: &serde_json::Value) -> String {
    json["refresh_token"].as_str().unwrap().to_owned()
}

async fn logout(client: &Client, token: &str) -> Reply {
    client
        .call(
            "POST",
            "/logout",
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await
}

/// Poll until `token` is refused on `client` (within `within`).
async fn until_refused(client: &Client, token: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = client.get_with_token("/read/x", token).await.status;
        if status == StatusCode::UNAUTHORIZED {
            return;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            tokio::time::Instant::now() < deadline,
            "revocation never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_logout_on_one_replica_is_refused_on_the_others_and_by_a_replica_started_later() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstream::start().await;
    let yaml = fleet_config(&up.url(), &redis.url(), "0s", "");
    let (a, b) = (replica(&yaml).await, replica(&yaml).await);
    let token = a.h1().token("bob", "secret123").await;
    assert_eq!(
        b.h1().get_with_token("/read/x", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(logout(&a.h1(), &token).await.status, StatusCode::NO_CONTENT);
    // The 204 means Redis has it: B learns it by pub/sub within moments.
    until_refused(&b.h1(), &token, Duration::from_secs(2)).await;
    // A replica that was not running then loads it on start.
    let c = replica(&yaml).await;
    assert_eq!(
        c.h1().get_with_token("/read/x", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // /revoke on B of a refresh token ends the family for A too (and its access token on C).
    let pair = login_pair(&a.h1(), "bob").await;
    let reply = post_form(&b.h1(), "/revoke", &[("token", &refresh_of(&pair))]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = refresh(&a.h1(), &refresh_of(&pair)).await;
    assert_eq!(reply.json()["error"], "invalid_grant", "{}", reply.text());
    until_refused(&c.h1(), &access(&pair), Duration::from_secs(2)).await;
    // Metrics and readiness say the state is followed.
    let status = a
        .shared
        .fleet
        .status(portcullis::clock::unix_now())
        .unwrap();
    assert!(status.connected && status.copy_age.is_some(), "{status:?}");
}

#[tokio::test]
async fn a_rotation_raced_from_two_replicas_has_exactly_one_winner() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstream::start().await;
    let yaml = fleet_config(&up.url(), &redis.url(), "0s", "");
    let (a, b) = (replica(&yaml).await, replica(&yaml).await);
    for round in 0..5 {
        let pair = login_pair(&a.h1(), "bob").await;
        let token = refresh_of(&pair);
        let (ca, cb) = (a.h1(), b.h1());
        let (ra, rb) = tokio::join!(refresh(&ca, &token), refresh(&cb, &token));
        let winners: Vec<&Reply> = [&ra, &rb]
            .into_iter()
            .filter(|r| r.status == StatusCode::OK)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} / {}",
            ra.text(),
            rb.text()
        );
        let loser = if ra.status == StatusCode::OK {
            &rb
        } else {
            &ra
        };
        assert_eq!(loser.json()["error"], "invalid_grant");
        // The loser's replay was a reuse: the winner's new token is dead too.
        let newest = refresh_of(&winners[0].json());
        let after = refresh(&a.h1(), &newest).await;
        assert_eq!(after.json()["error"], "invalid_grant", "round {round}");
    }
}

#[tokio::test]
async fn within_the_grace_window_two_replicas_hand_out_the_same_pair() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstream::start().await;
    let yaml = fleet_config(&up.url(), &redis.url(), "5s", "");
    let (a, b) = (replica(&yaml).await, replica(&yaml).await);
    let token = refresh_of(&login_pair(&a.h1(), "bob").await);
    let (ca, cb) = (a.h1(), b.h1());
    let (ra, rb) = tokio::join!(refresh(&ca, &token), refresh(&cb, &token));
    assert_eq!((ra.status, rb.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(ra.json(), rb.json(), "one rotation, one pair");
    assert_eq!(
        refresh(&b.h1(), &refresh_of(&ra.json())).await.status,
        StatusCode::OK
    );
}

/// A login whose client address (through a trusted proxy) is `address`.
async fn login_from(client: &Client, user: &str, password: &str, address: &str) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("username", user)
        .append_pair("password", password)
        .finish();
    client
        .call(
            "POST",
            "/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", address),
            ],
            body,
        )
        .await
}

#[tokio::test]
async fn failures_spread_over_replicas_lock_the_username_and_the_address() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstream::start().await;
    let yaml = format!(
        "trusted_proxies: [127.0.0.1/32]\n{}",
        fleet_config(&up.url(), &redis.url(), "0s", "")
    );
    let (a, b, c) = (
        replica(&yaml).await,
        replica(&yaml).await,
        replica(&yaml).await,
    );
    // failures: 3 — one wrong password for bob on each replica, each from its own address.
    for (n, gw) in [&a, &b, &c].into_iter().enumerate() {
        let reply = login_from(&gw.h1(), "bob", "wrong", &format!("198.51.100.{n}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    }
    for gw in [&a, &b, &c] {
        let reply = login_from(&gw.h1(), "bob", "secret123", "198.51.100.9").await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.text()
        );
        assert!(reply.header("retry-after").is_some());
    }
    // Another account from a fresh address is not affected.
    let reply = login_from(&a.h1(), "alice", "secret123", "198.51.100.10").await;
    assert_eq!(reply.status, StatusCode::OK);
    // One address guessing at different accounts, spread over replicas, locks the address.
    for (gw, user) in [(&a, "u1"), (&b, "u2"), (&c, "u3")] {
        let reply = login_from(&gw.h1(), user, "wrong", "203.0.113.5").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
    let reply = login_from(&b.h1(), "alice", "secret123", "203.0.113.5").await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn with_redis_down_each_endpoint_does_what_it_was_told_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = Upstream::start().await;
    let yaml = fleet_config(&up.url(), &redis.url(), "0s", "");
    let (a, b) = (replica(&yaml).await, replica(&yaml).await);
    let revoked = a.h1().token("bob", "secret123").await;
    assert_eq!(
        logout(&a.h1(), &revoked).await.status,
        StatusCode::NO_CONTENT
    );
    until_refused(&b.h1(), &revoked, Duration::from_secs(2)).await;
    let pair = login_pair(&a.h1(), "bob").await;

    redis.kill();
    wait_following(&a, false).await;
    wait_following(&b, false).await;
    // Login and refresh fail closed: 503 with Retry-After, nothing issued.
    let reply = b.h1().login("bob", "secret123").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert!(reply.header("retry-after").is_some());
    let reply = refresh(&b.h1(), &refresh_of(&pair)).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    // A logout cannot be promised: 503, not 204.
    let reply = logout(&b.h1(), &access(&pair)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // Proxied traffic is served from the local copy: valid tokens pass, revoked ones do not.
    assert_eq!(
        b.h1()
            .get_with_token("/read/x", &access(&pair))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        b.h1().get_with_token("/read/x", &revoked).await.status,
        StatusCode::UNAUTHORIZED
    );
    let status = b
        .shared
        .fleet
        .status(portcullis::clock::unix_now())
        .unwrap();
    assert!(status.last_error.is_some(), "{status:?}");
    // The admin listener says so: still ready (requests are checked against the local copy),
    // the state unavailable, the copy's age; the metrics too.
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(portcullis::server::admin::serve(admin, b.shared.clone()));
    let (status, readyz) = admin_get(admin_addr, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{readyz}");
    assert!(
        readyz.contains(&format!("state redis {}: unavailable", redis.url())),
        "{readyz}"
    );
    assert!(readyz.contains("revocations synced"), "{readyz}");
    let (_, metrics) = admin_get(admin_addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains("portcullis_state_redis_connected 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_state_revocations_age_seconds "),
        "{metrics}"
    );

    // Redis returns (empty: no persistence here); replicas reconnect and work again.
    redis.restart();
    wait_following(&a, true).await;
    wait_following(&b, true).await;
    let fresh = login_pair(&b.h1(), "bob").await;
    assert_eq!(
        logout(&b.h1(), &access(&fresh)).await.status,
        StatusCode::NO_CONTENT
    );
    until_refused(&a.h1(), &access(&fresh), Duration::from_secs(2)).await;
    let (_, metrics) = admin_get(admin_addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains("portcullis_state_redis_connected 1"),
        "{metrics}"
    );
    // What the local copies held is still refused.
    assert_eq!(
        a.h1().get_with_token("/read/x", &revoked).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn logins_may_fail_open_and_then_get_no_refresh_token() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = Upstream::start().await;
    let yaml = fleet_config(
        &up.url(),
        &redis.url(),
        "0s",
        ", on_unavailable: { login: fail_open }",
    );
    let a = replica(&yaml).await;
    redis.kill();
    wait_following(&a, false).await;
    let reply = a.h1().login("bob", "secret123").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        reply.json().get("refresh_token").is_none(),
        "{}",
        reply.text()
    );
    // Regulated by this replica alone meanwhile.
    for _ in 0..3 {
        a.h1().login("alice", "wrong").await;
    }
    assert_eq!(
        a.h1().login("alice", "secret123").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// `portcullis check` on `yaml`: (exit code, stdout + stderr).
fn check(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, out, err) = portcullis(["check", "-c", path.to_str().unwrap()]);
    (code, format!("{out}{err}"))
}

#[test]
fn bad_refresh_and_state_blocks_are_refused_at_their_line() {
    let base = format!("tokens:\n  secret: \"{SECRET}\"\n  ttl: 5m\n");
    let cases = [
        (
            format!("{base}  refresh: {{ ttl: 30d, max_lifetime: 7d }}\n"),
            "gateway.yaml:4",
            "max_lifetime: must be at least tokens.refresh.ttl",
        ),
        (
            format!("{base}  refresh: {{ reuse_grace: 10m }}\n"),
            "gateway.yaml:4",
            "reuse_grace",
        ),
        (
            format!("{base}state:\n  redis: {{ url: \"http://127.0.0.1:6379\" }}\n"),
            "gateway.yaml:5",
            "expected redis://host:port",
        ),
        (
            format!("{base}state:\n  redis: {{ url: \"redis://127.0.0.1:1\", on_unavailable: {{ refresh: fail_open }} }}\n"),
            "gateway.yaml:5",
            "only `fail_closed`",
        ),
        (
            format!("{base}state:\n  redis: {{ url: \"redis://127.0.0.1:1\", key_prefix: \"a b\" }}\n"),
            "gateway.yaml:5",
            "key_prefix",
        ),
        (
            format!("{base}state:\n  memory: true\n"),
            "gateway.yaml:5",
            "memory",
        ),
    ];
    for (yaml, at, says) in cases {
        let (code, out) = check(&yaml);
        assert_eq!(code, 1, "{yaml}\n{out}");
        assert!(
            out.contains(at) && out.contains(says),
            "{yaml}\nwanted {at} … {says}\n{out}"
        );
    }
}

#[test]
fn check_reports_an_unreachable_redis_as_a_warning_and_a_reachable_one_as_such() {
    let base = format!("tokens:\n  secret: \"{SECRET}\"\n");
    let (code, out) = check(&format!(
        "{base}state:\n  redis: {{ url: \"redis://:hunter2@127.0.0.1:1\", timeout: 200ms }}\n"
    ));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("unreachable") && out.contains("state.redis"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2"),
        "the password is never printed: {out}"
    );
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (code, out) = check(&format!(
        "{base}state:\n  redis: {{ url: \"{}\" }}\n",
        redis.url()
    ));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("reachable") && !out.contains("unreachable"),
        "{out}"
    );
}

/// Until `client` answers `path` with `token` as `status` (a process just (re)started may still
/// be subscribing).
async fn until_status(client: &Client, token: &str, status: StatusCode) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.get_with_token("/read/x", token).await.status != status {
        assert!(tokio::time::Instant::now() < deadline, "never {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn separate_gateway_processes_share_logouts_and_a_crashed_one_loads_them_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstream::start().await;
    let yaml = fleet_config(&up.url(), &redis.url(), "0s", "");
    let a = Proc::start(&yaml).await;
    let mut b = Proc::start(&yaml).await;
    let token = a.h1().token("bob", "secret123").await;
    until_status(&b.h1(), &token, StatusCode::OK).await;
    // The token is logged out on A; B crashes (SIGKILL, no drain) and comes back.
    let reply = logout(&a.h1(), &token).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text());
    b.restart().await;
    // The restarted B never accepts it: it serves only once the fleet's revocations are loaded.
    let reply = b.h1().get_with_token("/read/x", &token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    // And a refresh chain started on B is rotated on A.
    let pair = login_pair(&b.h1(), "bob").await;
    assert_eq!(
        refresh(&a.h1(), &refresh_of(&pair)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn route_rate_limits_are_shared_by_the_fleet() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstream::start().await;
    let base = fleet_config(&up.url(), &redis.url(), "0s", "").replace(
        "  - { id: read, path: /read/**, upstream: up, scopes: [read] }",
        "  - { id: read, path: /read/**, upstream: up, scopes: [read], rate_limit: { requests: 4, per: 1m } }",
    );
    let (a, b) = (replica(&base).await, replica(&base).await);
    let token = a.h1().token("alice", "secret123").await;
    let other = a.h1().token("bob", "secret123").await;
    let get = |gw: &Gateway, token: &str| {
        let (client, token) = (gw.h1(), token.to_owned());
        async move { client.get_with_token("/read/x", &token).await.status }
    };
    // Two on A, two on B: each replica alone would allow four.
    for gw in [&a, &a] {
        assert_eq!(get(gw, &token).await, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(400)).await; // a few syncs
    for gw in [&b, &b] {
        assert_eq!(get(gw, &token).await, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The fleet has used the four: both refuse, with Retry-After.
    for gw in [&a, &b] {
        let reply = gw.h1().get_with_token("/read/x", &token).await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.text()
        );
        assert!(reply.header("retry-after").is_some());
    }
    // Another caller has their own allowance.
    assert_eq!(get(&b, &other).await, StatusCode::OK);
    // Redis down: each replica goes on counting alone (nothing waits, nothing fails).
    drop(redis);
    assert_eq!(get(&a, &other).await, StatusCode::OK);
}

#[tokio::test]
async fn a_fleet_reaches_redis_over_tls_verified_against_its_ca() {
    let up = Upstream::start().await;
    let server_pki = TestPki::new();
    let Some(redis) = RedisServer::start_tls(&server_pki.cert_path, &server_pki.key_path) else {
        return;
    };
    let ca_path = server_pki.dir.path().join("redis-ca.pem");
    let b64 = base64::engine::general_purpose::STANDARD.encode(server_pki.ca_der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    std::fs::write(
        &ca_path,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let yaml = fleet_config(
        &up.url(),
        &url,
        "0s",
        &format!(", ca: \"{}\"", ca_path.display()),
    );
    let (a, b) = (replica(&yaml).await, replica(&yaml).await);
    let token = a.h1().token("bob", "secret123").await;
    assert_eq!(logout(&a.h1(), &token).await.status, StatusCode::NO_CONTENT);
    until_refused(&b.h1(), &token, Duration::from_secs(2)).await;
    // Without the CA the server's certificate is not trusted: never connected, logins 503.
    let untrusted = fleet_config(&up.url(), &url, "0s", "");
    let c = Gateway::start(&untrusted).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = c
        .shared
        .fleet
        .status(portcullis::clock::unix_now())
        .unwrap();
    assert!(!status.connected, "{status:?}");
    assert_eq!(
        c.h1().login("bob", "secret123").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
