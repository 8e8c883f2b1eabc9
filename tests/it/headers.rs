//! Header hygiene (THREATS H-01…H-12, H-15; SPEC "Request hygiene", "Forwarding",
//! "Decisions"). The oracle is always the pair (status the client got, what the recording
//! upstream received).
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

/// Headers only the gateway may set towards the upstream (identity and client address).
const GATEWAY_IDENTITY: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-scopes",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-remote-user",
    "remote-user",
];

async fn fixture() -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    (up, gw)
}

/// The fixture with the `up` upstream in long form carrying `extra` settings.
fn fixture_with_upstream(up: &Upstream, extra: &str) -> String {
    let url = up.url();
    fixture_yaml(&url).replace(
        &format!("  up: {url}\n"),
        &format!("  up: {{ url: {url}, {extra} }}\n"),
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A raw HTTP/1.1 exchange on a fresh TLS connection; the request should carry
/// `Connection: close` so the answer is complete when the gateway closes.
async fn raw(gw: &Gateway, request: String) -> String {
    gw.h1()
        .raw(request.as_bytes(), Duration::from_secs(5))
        .await
}

/// Status code of the first status line of a raw answer.
fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

fn assert_no_identity(seen: &Seen) {
    for name in GATEWAY_IDENTITY {
        assert!(
            seen.all(name).is_empty(),
            "upstream received {name}: {:?}",
            seen.all(name)
        );
    }
}

fn assert_no_underscore_names(seen: &Seen) {
    let names: Vec<&str> = seen
        .headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| n.contains('_'))
        .collect();
    assert!(
        names.is_empty(),
        "upstream received underscore names {names:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// H-01 / H-02 / H-03: spoofed identity

#[tokio::test]
async fn spoofed_identity_headers_on_an_anonymous_route_never_reach_the_upstream() {
    let (up, gw) = fixture().await;
    let spoofed: Vec<(&str, &str)> = vec![
        ("X-Forwarded-User", "root"),
        ("X-Forwarded-Email", "root@x"),
        ("X-Forwarded-Groups", "admin"),
        ("X-Forwarded-Scopes", "admin"),
        ("X-Forwarded-Preferred-Username", "root"),
        ("X-Auth-Request-User", "root"),
        ("X-Remote-User", "root"),
        ("Remote-User", "root"),
    ];
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        let reply = client.get("/public/echo", &spoofed).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = up.last().expect("upstream saw the request");
        assert_eq!(seen.target, "/public/echo");
        assert_no_identity(&seen);
    }
}

#[tokio::test]
async fn spoofed_identity_on_a_protected_route_without_a_token_is_refused_and_never_forwarded() {
    let (up, gw) = fixture().await;
    for client in [gw.h1(), gw.h2()] {
        for path in ["/api/items", "/admin/users"] {
            let reply = client
                .get(
                    path,
                    &[
                        ("X-Forwarded-User", "root"),
                        ("X-Forwarded-Scopes", "admin"),
                    ],
                )
                .await;
            assert_eq!(reply.status, 401, "{path}: {}", reply.text());
        }
    }
    assert_eq!(up.count(), 0, "{:?}", up.seen());
}

#[tokio::test]
async fn spoofed_identity_with_a_valid_token_is_replaced_by_the_token_subject() {
    let (up, gw) = fixture().await;
    let token = fixture_token("alice", "read");
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        let auth = bearer(&token);
        let reply = client
            .get(
                "/api/items",
                &[
                    ("authorization", &auth),
                    ("X-Forwarded-User", "root"),
                    ("X-Forwarded-Scopes", "admin"),
                    ("X-Forwarded-Groups", "admin"),
                ],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = up.last().expect("upstream saw the request");
        assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
        assert_eq!(seen.all("x-forwarded-scopes"), vec!["read"]);
        assert!(seen.all("x-forwarded-groups").is_empty());
    }
}

#[tokio::test]
async fn spoofed_identity_in_several_lines_and_letter_cases_leaves_exactly_the_gateway_value() {
    let (up, gw) = fixture().await;
    let token = fixture_token("alice", "read");
    let request = format!(
        "GET /api/items HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         X-Forwarded-User: root\r\nx-forwarded-user: root2\r\nX-FORWARDED-USER: root3\r\n\
         X-Forwarded-Scopes: admin\r\nx-FORWARDED-scopes: admin\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
    assert_eq!(seen.all("x-forwarded-scopes"), vec!["read"]);

    // The same lines on an anonymous route: none survive at all.
    up.clear();
    let request = "GET /public/echo HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-User: root\r\n\
                   x-forwarded-user: root2\r\nX-FORWARDED-USER: root3\r\nConnection: close\r\n\r\n"
        .to_owned();
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_no_identity(&up.last().expect("upstream saw the request"));
}

// ---------------------------------------------------------------------------------------------
// H-04: underscore and variant spellings

#[tokio::test]
async fn underscore_spellings_of_gateway_headers_are_dropped_over_http1() {
    let (up, gw) = fixture().await;
    let token = fixture_token("alice", "read");
    let request = format!(
        "GET /api/items HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         X_Forwarded_User: root\r\nX-Forwarded_User: root\r\nx_forwarded_email: root@x\r\n\
         X_Forwarded_Scopes: admin\r\nX_Real_IP: 1.2.3.4\r\nx_forwarded_for: 1.2.3.4\r\n\
         X_Forwarded_Proto: http\r\nConnection: close\r\n\r\n"
    );
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.last().expect("upstream saw the request");
    assert_no_underscore_names(&seen);
    assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
    assert_eq!(seen.all("x-forwarded-scopes"), vec!["read"]);
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["https"]);

    up.clear();
    let request = "GET /public/echo HTTP/1.1\r\nHost: localhost\r\nX_Forwarded_User: root\r\n\
                   X-Forwarded_User: root\r\nx_forwarded_email: root@x\r\nConnection: close\r\n\r\n"
        .to_owned();
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.last().expect("upstream saw the request");
    assert_no_underscore_names(&seen);
    assert_no_identity(&seen);
}

#[tokio::test]
async fn underscore_spellings_of_gateway_headers_are_dropped_over_http2() {
    let (up, gw) = fixture().await;
    let token = fixture_token("alice", "read");
    let auth = bearer(&token);
    let spoofed = [
        ("x_forwarded_user", "root"),
        ("x-forwarded_user", "root"),
        ("x_forwarded_email", "root@x"),
        ("x_forwarded_scopes", "admin"),
        ("x_real_ip", "1.2.3.4"),
    ];
    let mut with_token = spoofed.to_vec();
    with_token.push(("authorization", &auth));
    let reply = gw.h2().get("/api/items", &with_token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last().expect("upstream saw the request");
    assert_no_underscore_names(&seen);
    assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);

    up.clear();
    let reply = gw.h2().get("/public/echo", &spoofed).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last().expect("upstream saw the request");
    assert_no_underscore_names(&seen);
    assert_no_identity(&seen);
}

// ---------------------------------------------------------------------------------------------
// H-05 / H-06 / H-07: Connection, hop-by-hop, h2c

#[tokio::test]
async fn connection_header_cannot_remove_identity_forwarding_host_or_the_token() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_with_upstream(&up, "pass_token: true")).await;
    let token = fixture_token("alice", "read");
    let request = format!(
        "GET /api/items HTTP/1.1\r\nHost: app.test\r\nAuthorization: Bearer {token}\r\n\
         X-Custom-Hop: 1\r\n\
         Connection: close, X-Forwarded-User, X-Forwarded-Email, Authorization, Host, \
         Content-Length, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, \
         X-Forwarded-Scopes, X-Custom-Hop\r\n\r\n"
    );
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 200, "token not honoured: {answer}");
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
    assert_eq!(seen.all("x-forwarded-scopes"), vec!["read"]);
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(seen.all("x-forwarded-host"), vec!["app.test"]);
    assert_eq!(seen.all("host"), vec!["app.test"]);
    assert_eq!(seen.all("authorization"), vec![bearer(&token)]);
    assert!(seen.all("x-custom-hop").is_empty(), "{:?}", seen.headers);
    for value in seen.all("connection") {
        let value = value.to_ascii_lowercase();
        assert!(
            !value.contains("x-forwarded") && !value.contains("authorization"),
            "client's Connection tokens reached the upstream: {value}"
        );
    }
}

#[tokio::test]
async fn connection_header_cannot_remove_the_identity_on_an_anonymous_route_either() {
    let (up, gw) = fixture().await;
    let token = fixture_token("alice", "read");
    let request = format!(
        "GET /public/echo HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Connection: close, X-Forwarded-User, Authorization\r\n\r\n"
    );
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
    assert!(seen.all("authorization").is_empty(), "token forwarded");
}

#[tokio::test]
async fn hop_by_hop_headers_never_reach_the_upstream() {
    let (up, gw) = fixture().await;
    let request = "POST /public/echo HTTP/1.1\r\nHost: localhost\r\nKeep-Alive: timeout=5\r\n\
                   TE: trailers\r\nProxy-Authorization: Basic eDp5\r\n\
                   Proxy-Connection: keep-alive\r\nTrailer: X-A\r\n\
                   HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nX-Listed: 1\r\n\
                   Connection: close, Keep-Alive, X-Listed\r\nContent-Length: 3\r\n\r\nabc"
        .to_owned();
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.last().expect("upstream saw the request");
    for name in [
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "trailer",
        "http2-settings",
        "upgrade",
        "x-listed",
    ] {
        assert!(
            seen.all(name).is_empty(),
            "upstream received {name}: {:?}",
            seen.all(name)
        );
    }
    for value in seen.all("connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-listed"),
            "client Connection value reached the upstream: {value}"
        );
    }
    assert_eq!(seen.body_len, 3);
    assert_eq!(seen.all("content-length"), vec!["3"]);
}

#[tokio::test]
async fn proxy_authorization_is_never_forwarded_even_when_the_token_is() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_with_upstream(&up, "pass_token: true")).await;
    let token = fixture_token("alice", "read");
    let auth = bearer(&token);
    let reply = gw
        .h1()
        .get(
            "/api/items",
            &[
                ("authorization", &auth),
                ("proxy-authorization", "Basic eDp5"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last().expect("upstream saw the request");
    assert!(seen.all("proxy-authorization").is_empty());
    assert_eq!(seen.all("authorization"), vec![auth]);
}

#[tokio::test]
async fn h2c_upgrade_is_not_honoured_and_never_forwarded() {
    let (up, gw) = fixture().await;
    let token = fixture_token("alice", "read");
    for (target, auth) in [
        ("/public/echo", String::new()),
        ("/api/items", format!("Authorization: Bearer {token}\r\n")),
    ] {
        up.clear();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\n{auth}Upgrade: h2c\r\n\
             HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n"
        );
        // No `Connection: close` here (it would change the request): read what arrives.
        let answer = gw
            .h1()
            .raw(request.as_bytes(), Duration::from_secs(2))
            .await;
        let status = status_of(&answer);
        assert!(
            status == 200 || status == 400,
            "{target}: expected plain HTTP/1.1 handling or 400, got {answer}"
        );
        assert!(!answer.contains(" 101 "), "{target}: {answer}");
        assert!(
            !answer.contains("PRI * HTTP/2.0"),
            "{target}: switched to h2c"
        );
        for seen in up.seen() {
            assert!(
                seen.all("upgrade").is_empty(),
                "{target}: {:?}",
                seen.headers
            );
            assert!(seen.all("http2-settings").is_empty(), "{target}");
            assert_eq!(seen.version, http::Version::HTTP_11);
        }
        if status == 200 {
            assert_eq!(up.count(), 1, "{target}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// H-09: client address

#[tokio::test]
async fn client_ip_headers_are_replaced_by_the_peer_address() {
    let (up, gw) = fixture().await;
    let request = "GET /public/echo HTTP/1.1\r\nHost: localhost\r\n\
                   X-Forwarded-For: 1.1.1.1, 127.0.0.1\r\nX-Forwarded-For: 2.2.2.2\r\n\
                   X-Real-IP: 127.0.0.1\r\nTrue-Client-IP: 127.0.0.1\r\n\
                   Forwarded: for=127.0.0.1\r\nX-Client-IP: 10.0.0.1\r\n\
                   Connection: close\r\n\r\n"
        .to_owned();
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    for name in ["x-real-ip", "true-client-ip", "forwarded", "x-client-ip"] {
        assert!(seen.all(name).is_empty(), "upstream received {name}");
    }

    // Over HTTP/2 too.
    up.clear();
    let reply = gw
        .h2()
        .get(
            "/public/echo",
            &[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=1.1.1.1")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert!(seen.all("forwarded").is_empty());
}

#[tokio::test]
async fn a_trusted_proxy_keeps_the_forwarded_chain_and_appends_the_peer() {
    let up = Upstream::start().await;
    let yaml = format!(
        "trusted_proxies: [127.0.0.1/32]\n{}",
        fixture_yaml(&up.url())
    );
    let gw = Gateway::start(&yaml).await;

    let reply = gw
        .h1()
        .get(
            "/public/echo",
            &[
                ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
                ("x-real-ip", "9.9.9.9"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(
        seen.all("x-forwarded-for"),
        vec!["1.1.1.1, 2.2.2.2, 127.0.0.1"]
    );
    assert!(seen.all("x-real-ip").is_empty());

    // Two lines are one list; the gateway sends a single header.
    let request = "GET /public/echo HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 1.1.1.1\r\n\
                   X-Forwarded-For: 3.3.3.3\r\nConnection: close\r\n\r\n"
        .to_owned();
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(
        seen.all("x-forwarded-for"),
        vec!["1.1.1.1, 3.3.3.3, 127.0.0.1"]
    );

    // Nothing incoming: just the peer.
    let reply = gw.h1().get("/public/echo", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().unwrap().all("x-forwarded-for"), vec!["127.0.0.1"]);
}

/// The fixture behind a trusted proxy on 127.0.0.1, with an address lockout after 3 failures.
fn trusted_proxy_yaml(up: &Upstream) -> String {
    format!(
        "trusted_proxies: [127.0.0.1/32]\n{}login:\n  path: /login\n  \
         lockout: {{ failures: 3, window: 1m, duration: 1m }}\n",
        fixture_yaml(&up.url())
    )
}

/// A failed login (unknown user) whose `X-Forwarded-For` the trusted proxy wrote as `xff`.
async fn failed_login_via_proxy(gw: &Gateway, user: &str, xff: &str) -> Reply {
    let body = format!("username={user}&password=wrong");
    gw.h1()
        .call(
            "POST",
            "/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-forwarded-for", xff),
            ],
            body,
        )
        .await
}

#[tokio::test]
async fn a_trusted_proxy_appending_ip_and_port_keys_the_lockout_on_that_client_not_a_spoofed_entry()
{
    let up = Upstream::start().await;
    let gw = Gateway::start(&trusted_proxy_yaml(&up)).await;
    // The client rotates a spoofed left entry; the proxy appends the client's `ip:port`, in
    // each spelling a proxy may use. All name one client, so the third failure locks it.
    let rounds: [(&str, [&str; 3]); 2] = [
        (
            "203.0.113.7",
            ["203.0.113.7:5678", "203.0.113.7:1", "203.0.113.7"],
        ),
        (
            "2001:db8::7",
            ["[2001:db8::7]:443", "2001:db8::7", "[2001:db8::7]"],
        ),
    ];
    for (round, (client, spellings)) in rounds.iter().enumerate() {
        for (i, hop) in spellings.iter().enumerate() {
            let xff = format!("198.51.100.{}, {hop}", 10 * round + i);
            let reply = failed_login_via_proxy(&gw, &format!("ghost{round}{i}"), &xff).await;
            assert_eq!(reply.status, 400, "{client} via {xff}: {}", reply.text());
        }
        let xff = format!("198.51.100.99, {}", spellings[0]);
        let reply = failed_login_via_proxy(&gw, &format!("ghost{round}x"), &xff).await;
        assert_eq!(
            reply.status,
            429,
            "{client}: a fresh spoofed left entry escaped the address lock: {}",
            reply.text()
        );
    }
    // Another client behind the same proxy is not locked.
    let reply = failed_login_via_proxy(&gw, "ghost-other", "198.51.100.99, 203.0.113.8:5678").await;
    assert_eq!(reply.status, 400, "{}", reply.text());
}

#[tokio::test]
async fn an_unparsable_forwarded_hop_stops_the_trust_walk_so_entries_left_of_it_are_never_the_key()
{
    let up = Upstream::start().await;
    let gw = Gateway::start(&trusted_proxy_yaml(&up)).await;
    // The trusted proxy wrote something that is not an address (`unknown`, a name, junk):
    // nothing to its left is believed, so rotating those entries cannot dodge the lock.
    for (i, hop) in ["unknown", "client.example", "1.2.3.4:99999"]
        .iter()
        .enumerate()
    {
        let xff = format!("198.51.100.{i}, {hop}");
        let reply = failed_login_via_proxy(&gw, &format!("ghost{i}"), &xff).await;
        assert_eq!(reply.status, 400, "{xff}: {}", reply.text());
    }
    let reply = failed_login_via_proxy(&gw, "ghost9", "198.51.100.9, unknown").await;
    assert_eq!(
        reply.status,
        429,
        "a spoofed entry left of an unparsable hop became the lockout key: {}",
        reply.text()
    );
}

#[tokio::test]
async fn a_trusted_proxy_chain_is_forwarded_as_bare_addresses_up_to_an_unparsable_hop() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&trusted_proxy_yaml(&up)).await;
    for (incoming, forwarded) in [
        (
            "1.1.1.1, 203.0.113.7:5678",
            "1.1.1.1, 203.0.113.7, 127.0.0.1",
        ),
        (
            "[2001:db8::1]:443, 2001:db8::2",
            "2001:db8::1, 2001:db8::2, 127.0.0.1",
        ),
        ("6.6.6.6, unknown, 203.0.113.7", "203.0.113.7, 127.0.0.1"),
        ("6.6.6.6, garbage", "127.0.0.1"),
    ] {
        let reply = gw
            .h1()
            .get("/public/echo", &[("x-forwarded-for", incoming)])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = up.last().expect("upstream saw the request");
        assert_eq!(seen.all("x-forwarded-for"), vec![forwarded], "{incoming}");
    }
}

// ---------------------------------------------------------------------------------------------
// H-10: framework-internal and override headers

#[tokio::test]
async fn framework_internal_and_override_headers_are_stripped() {
    let (up, gw) = fixture().await;
    let token = fixture_token("alice", "read");
    let auth = bearer(&token);
    let internal: Vec<(&str, &str)> = vec![
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/admin/users"),
        ("X-Original-URI", "/admin/users"),
        ("X-Rewrite-URL", "/admin/users"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Envoy-Original-Path", "/admin/users"),
        ("X-Envoy-Internal", "true"),
        (
            "x-middleware-subrequest",
            "middleware:middleware:middleware:middleware:middleware",
        ),
    ];
    for client in [gw.h1(), gw.h2()] {
        for (path, with_token) in [("/public/echo", false), ("/api/items", true)] {
            up.clear();
            let mut headers = internal.clone();
            if with_token {
                headers.push(("authorization", &auth));
            }
            let reply = client.get(path, &headers).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            let seen = up.last().expect("upstream saw the request");
            assert_eq!(seen.method, "GET");
            assert_eq!(seen.target, path);
            for (name, _) in &internal {
                assert!(
                    seen.all(name).is_empty(),
                    "{path}: upstream received {name}: {:?}",
                    seen.all(name)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Forwarding headers, Host, Authorization, X-Request-Id

#[tokio::test]
async fn forwarding_headers_are_the_gateways_own_and_host_is_kept_as_sent() {
    let (up, gw) = fixture().await;
    let request = Request::builder()
        .method("GET")
        .uri("/public/echo")
        .header("host", "App.Example.test:8443")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.test")
        .header("x-forwarded-port", "80")
        .header("x-forwarded-server", "evil")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = gw.h1().send(request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(seen.all("host"), vec!["App.Example.test:8443"]);
    assert_eq!(seen.all("x-forwarded-host"), vec!["App.Example.test:8443"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["https"]);
    assert!(seen.all("x-forwarded-port").is_empty());
    assert!(seen.all("x-forwarded-server").is_empty());

    // HTTP/2: the client's :authority is the Host.
    up.clear();
    let reply = gw
        .h2()
        .get(
            "/public/echo",
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "evil.test"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(seen.all("host"), vec!["localhost"]);
    assert_eq!(seen.all("x-forwarded-host"), vec!["localhost"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["https"]);
}

#[tokio::test]
async fn authorization_is_removed_before_forwarding_by_default() {
    let (up, gw) = fixture().await;
    let token = fixture_token("alice", "read");
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        let reply = client.get_with_token("/api/items", &token).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = up.last().expect("upstream saw the request");
        assert!(seen.all("authorization").is_empty(), "token forwarded");
        assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
        // Non-bearer credentials on an anonymous route are not forwarded either.
        up.clear();
        let reply = client
            .get("/public/echo", &[("authorization", "Basic eDp5")])
            .await;
        assert_eq!(reply.status, 200);
        assert!(up.last().unwrap().all("authorization").is_empty());
    }
}

#[tokio::test]
async fn authorization_is_forwarded_unchanged_when_the_upstream_has_pass_token() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_with_upstream(&up, "pass_token: true")).await;
    let token = fixture_token("alice", "read");
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        let reply = client.get_with_token("/api/items", &token).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = up.last().expect("upstream saw the request");
        assert_eq!(seen.all("authorization"), vec![bearer(&token)]);
        assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
    }
}

#[tokio::test]
async fn request_id_is_kept_when_sent_and_returned_to_the_client() {
    let (up, gw) = fixture().await;
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        let reply = client
            .get("/public/echo", &[("x-request-id", "req-abc-123")])
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-request-id"), Some("req-abc-123"));
        let seen = up.last().expect("upstream saw the request");
        assert_eq!(seen.all("x-request-id"), vec!["req-abc-123"]);
    }
}

#[tokio::test]
async fn request_id_is_generated_when_absent_forwarded_and_returned_to_the_client() {
    let (up, gw) = fixture().await;
    let mut ids = Vec::new();
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        let reply = client.get("/public/echo", &[]).await;
        assert_eq!(reply.status, 200);
        let returned = reply
            .header("x-request-id")
            .expect("x-request-id returned")
            .to_owned();
        assert!(!returned.is_empty());
        let seen = up.last().expect("upstream saw the request");
        assert_eq!(
            seen.all("x-request-id"),
            vec![returned.clone()],
            "the upstream must see the id the client was given"
        );
        ids.push(returned);
    }
    assert_ne!(ids[0], ids[1], "generated ids must differ per request");

    // Error answers carry one too.
    let reply = gw.h1().get("/api/items", &[]).await;
    assert_eq!(reply.status, 401);
    assert!(reply.header("x-request-id").is_some_and(|v| !v.is_empty()));
}

// ---------------------------------------------------------------------------------------------
// Decisions: identity on public routes; H-12 claims

#[tokio::test]
async fn identity_headers_are_set_on_a_public_route_for_a_valid_token_but_not_an_invalid_one() {
    let (up, gw) = fixture().await;
    let valid = fixture_token("alice", "read");
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        let reply = client.get_with_token("/public/echo", &valid).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = up.last().expect("upstream saw the request");
        assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
        assert_eq!(seen.all("x-forwarded-scopes"), vec!["read"]);
        assert!(seen.all("authorization").is_empty());

        let mut expired = fixture_claims("alice", "read");
        expired["iat"] = serde_json::json!(now() - 7200);
        expired["exp"] = serde_json::json!(now() - 3600);
        let header = serde_json::json!({"alg": "HS256", "typ": "at+jwt"});
        let invalid = [
            mint(
                Alg::Hs256,
                &header,
                &fixture_claims("root", "admin"),
                b"wrong-secret-wrong-secret-wrong-secret!!",
            ),
            mint(Alg::Hs256, &header, &expired, SECRET.as_bytes()),
            "not.a.token".to_owned(),
        ];
        for token in invalid {
            up.clear();
            let reply = client
                .get(
                    "/public/echo",
                    &[
                        ("authorization", &bearer(&token)),
                        ("x-forwarded-user", "root"),
                    ],
                )
                .await;
            assert_eq!(reply.status, 200, "{token}: {}", reply.text());
            let seen = up.last().expect("upstream saw the request");
            assert_no_identity(&seen);
        }
    }
}

#[tokio::test]
async fn token_subjects_with_control_characters_or_over_256_bytes_are_invalid_tokens() {
    let (up, gw) = fixture().await;
    let header = serde_json::json!({"alg": "HS256", "typ": "at+jwt"});
    let signed = |sub: &str| {
        let mut claims = fixture_claims(sub, "admin");
        // A short jti keeps the token size driven by `sub` alone.
        claims["jti"] = serde_json::json!(format!("j-{}", sub.len()));
        mint(Alg::Hs256, &header, &claims, SECRET.as_bytes())
    };
    let bad = [
        signed("alice\r\nX-Forwarded-Groups: admin"),
        signed("alice\nX-Forwarded-Groups: admin"),
        signed("a\u{0}b"),
        signed("a\u{7f}b"),
        signed(&"a".repeat(257)),
        signed(&"a".repeat(10 * 1024)),
    ];
    for client in [gw.h1(), gw.h2()] {
        for token in &bad {
            let reply = client.get_with_token("/api/items", token).await;
            assert_eq!(reply.status, 401, "{}", reply.text());
            assert_eq!(reply.json()["error"], "invalid_token", "{}", reply.text());
            assert!(reply
                .header("www-authenticate")
                .is_some_and(|v| v.contains("invalid_token")));
            // On an anonymous route the token is ignored: no identity at all.
            up.clear();
            let reply = client.get_with_token("/public/echo", token).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            let seen = up.last().expect("upstream saw the request");
            assert_no_identity(&seen);
        }
    }
    assert!(up.seen().iter().all(|s| s.target == "/public/echo"));

    // The limit is inclusive: 256 bytes is a valid subject.
    let sub = "b".repeat(256);
    let reply = gw.h1().get_with_token("/api/items", &signed(&sub)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().unwrap().all("x-forwarded-user"), vec![sub]);
}

#[tokio::test]
async fn a_non_ascii_subject_never_causes_a_server_error() {
    let (up, gw) = fixture().await;
    let header = serde_json::json!({"alg": "HS256", "typ": "at+jwt"});
    let token = mint(
        Alg::Hs256,
        &header,
        &fixture_claims("ålice", "read"),
        SECRET.as_bytes(),
    );
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        let reply = client.get_with_token("/api/items", &token).await;
        assert!(
            reply.status == 200 || reply.status == 401,
            "{}: {}",
            reply.status,
            reply.text()
        );
        if reply.status == 200 {
            let seen = up.last().expect("upstream saw the request");
            assert_eq!(seen.all("x-forwarded-user").len(), 1);
        } else {
            assert_eq!(up.count(), 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// H-15: header count and size

fn request_with_headers(path: &str, total: usize) -> String {
    // Host and Connection count towards the total.
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..total - 2 {
        request.push_str(&format!("X-H-{i}: {i}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    request
}

#[tokio::test]
async fn exactly_100_headers_are_accepted() {
    // The built-in echo upstream: the recording upstream (hyper's default of 100 headers)
    // would itself refuse 100 client headers plus the gateway's forwarding headers.
    let (_up, gw) = fixture().await;
    let answer = raw(&gw, request_with_headers("/echo/many", 100)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("\"x-h-97\":\"97\""), "{answer}");
}

#[tokio::test]
async fn a_request_with_101_headers_is_refused_with_431_and_never_forwarded() {
    let (up, gw) = fixture().await;
    let answer = raw(&gw, request_with_headers("/echo/many", 101)).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_header_block_over_max_header_bytes_is_refused_with_431_and_never_forwarded() {
    let (up, gw) = fixture().await;
    // Over the 16 KiB default but small enough for the gateway to read it all before answering.
    let request = format!(
        "GET /public/echo HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let answer = raw(&gw, request).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert_eq!(up.count(), 0);
}
