//! What the claims must say (THREATS J-09…J-14, J-20, J-26, H-12): exp, nbf and iat against
//! the clock and the configured lifetime, our issuer and audience, scopes as whole words with
//! their implications, and a subject fit to become a header.

use crate::common::*;
use crate::tokens::{admin_claims_with, assert_all_invalid, labelled, std_header, Fx};

use futures_util::future::join_all;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// J-09 … J-14: time and audience claims

#[tokio::test]
async fn exp_is_required_numeric_and_checked_with_the_configured_leeway() {
    let fx = Fx::start().await;
    let n = now();
    let bad = labelled(vec![
        (
            "exp missing",
            admin_claims_with(|c| {
                c.remove("exp");
            }),
        ),
        (
            "exp string",
            admin_claims_with(|c| {
                c.insert("exp".into(), json!("1999999999"));
            }),
        ),
        (
            "exp -1",
            admin_claims_with(|c| {
                c.insert("exp".into(), json!(-1));
            }),
        ),
        (
            "exp true",
            admin_claims_with(|c| {
                c.insert("exp".into(), json!(true));
            }),
        ),
        (
            "exp null",
            admin_claims_with(|c| {
                c.insert("exp".into(), Value::Null);
            }),
        ),
        (
            "exp now-120 (beyond 30 s leeway)",
            admin_claims_with(|c| {
                c.insert("exp".into(), json!(n - 120));
                c.insert("iat".into(), json!(n - 400));
            }),
        ),
        (
            "exp now-31 (just beyond leeway)",
            admin_claims_with(|c| {
                c.insert("exp".into(), json!(n - 31));
                c.insert("iat".into(), json!(n - 400));
            }),
        ),
        (
            "exp 1e309",
            mint_raw(Alg::Hs256, std_header().to_string().as_bytes(), format!(
                    r#"{{"sub":"root","scope":"admin","iss":"https://gw.test","aud":"gw-upstreams","iat":{n},"exp":1e309}}"#
                ).as_bytes(), SECRET.as_bytes()),
        ),
    ]);
    let replies = fx.get_all("/admin/x", &bad).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("exp");
    // Within the 30 s leeway: accepted (issued 5 min before, the fixture's ttl: a token living
    // longer than ttl + leeway is refused whatever its exp, THREATS J-09/J-12).
    let within = admin_claims_with(|c| {
        c.insert("exp".into(), json!(n - 10));
        c.insert("iat".into(), json!(n - 310));
    });
    let reply = fx.get("/admin/x", &within).await;
    assert_eq!(reply.status, 200, "exp=now-10: {}", reply.text());
}

#[tokio::test]
async fn nbf_and_iat_in_the_future_are_refused() {
    let fx = Fx::start().await;
    let n = now();
    let cases = labelled(vec![
        (
            "nbf now+3600",
            admin_claims_with(|c| {
                c.insert("nbf".into(), json!(n + 3600));
            }),
        ),
        (
            "iat now+3600",
            admin_claims_with(|c| {
                c.insert("iat".into(), json!(n + 3600));
            }),
        ),
        (
            "iat now+1y",
            admin_claims_with(|c| {
                c.insert("iat".into(), json!(n + 365 * 24 * 3600));
                c.insert("exp".into(), json!(n + 365 * 24 * 3600 + 300));
            }),
        ),
        (
            "nbf string",
            admin_claims_with(|c| {
                c.insert("nbf".into(), json!("0"));
            }),
        ),
    ]);
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("nbf/iat");
    // Control: nbf in the past is fine.
    let past = admin_claims_with(|c| {
        c.insert("nbf".into(), json!(n - 10));
    });
    assert_eq!(fx.get("/admin/x", &past).await.status, 200);
}

#[tokio::test]
async fn issuer_and_audience_must_be_present_and_ours() {
    let fx = Fx::start().await;
    let cases = labelled(vec![
        (
            "wrong iss",
            admin_claims_with(|c| {
                c.insert("iss".into(), json!("https://evil.test"));
            }),
        ),
        (
            "iss with trailing slash",
            admin_claims_with(|c| {
                c.insert("iss".into(), json!("https://gw.test/"));
            }),
        ),
        (
            "missing iss",
            admin_claims_with(|c| {
                c.remove("iss");
            }),
        ),
        (
            "numeric iss",
            admin_claims_with(|c| {
                c.insert("iss".into(), json!(1));
            }),
        ),
        (
            "wrong aud",
            admin_claims_with(|c| {
                c.insert("aud".into(), json!("other-service"));
            }),
        ),
        (
            "missing aud",
            admin_claims_with(|c| {
                c.remove("aud");
            }),
        ),
        (
            "aud array without ours",
            admin_claims_with(|c| {
                c.insert("aud".into(), json!(["evil", "other"]));
            }),
        ),
        (
            "empty aud array",
            admin_claims_with(|c| {
                c.insert("aud".into(), json!([]));
            }),
        ),
    ]);
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("iss/aud");
    // RFC 7519 §4.1.3: an array containing our audience is accepted.
    let array = admin_claims_with(|c| {
        c.insert("aud".into(), json!(["evil", "gw-upstreams"]));
    });
    let reply = fx.get("/admin/x", &array).await;
    assert_eq!(reply.status, 200, "aud array: {}", reply.text());
}

// ---------------------------------------------------------------------------------------------
// J-20: scope semantics and implications

#[tokio::test]
async fn scopes_are_compared_as_whole_case_sensitive_words() {
    let fx = Fx::start().await;
    let with_scope = |scope: Value| {
        admin_claims_with(|c| {
            c.insert("scope".into(), scope);
        })
    };
    let forbidden = labelled(vec![
        ("readadmin", with_scope(json!("readadmin"))),
        ("ADMIN", with_scope(json!("ADMIN"))),
        ("adminx", with_scope(json!("adminx"))),
        ("read (GET /admin)", with_scope(json!("read"))),
        ("empty scope", with_scope(json!(""))),
    ]);
    for (label, reply) in fx.get_all("/admin/x", &forbidden).await {
        assert_eq!(reply.status, 403, "{label}: {}", reply.text());
        assert_eq!(reply.json()["error"], "insufficient_scope", "{label}");
    }
    // `readadmin` does not contain `read` either.
    let readadmin = with_scope(json!("readadmin"));
    assert_eq!(fx.get("/api/x", &readadmin).await.status, 403);
    // Separators other than a single space never yield admin.
    let separators = labelled(vec![
        ("tab", with_scope(json!("read\tadmin"))),
        ("newline", with_scope(json!("read\nadmin"))),
        ("comma", with_scope(json!("read,admin"))),
    ]);
    for (label, reply) in fx.get_all("/admin/x", &separators).await {
        assert!(
            matches!(reply.status.as_u16(), 401 | 403),
            "{label}: {}",
            reply.status
        );
    }
    // Wrong JSON type for `scope`: the token is malformed.
    let wrong_type = labelled(vec![
        ("scope array", with_scope(json!(["admin"]))),
        ("scope number", with_scope(json!(1))),
        ("scope object", with_scope(json!({"admin": true}))),
    ]);
    assert_all_invalid(&fx.get_all("/admin/x", &wrong_type).await);
    fx.assert_upstream_untouched("scope semantics");
}

#[tokio::test]
async fn scp_string_or_array_and_scopes_array_are_accepted_like_scope() {
    let fx = Fx::start().await;
    let replace = |name: &str, value: Value| {
        let name = name.to_owned();
        admin_claims_with(move |c| {
            c.remove("scope");
            c.insert(name, value);
        })
    };
    let read_ok = labelled(vec![
        ("scp string", replace("scp", json!("read"))),
        ("scp array", replace("scp", json!(["read"]))),
        ("scopes array", replace("scopes", json!(["read"]))),
        ("scp space list", replace("scp", json!("other read"))),
    ]);
    for (label, reply) in fx.get_all("/api/x", &read_ok).await {
        assert_eq!(reply.status, 200, "{label}: {}", reply.text());
    }
    let admin_ok = labelled(vec![
        ("scp admin", replace("scp", json!("admin"))),
        ("scopes [admin]", replace("scopes", json!(["admin"]))),
    ]);
    for (label, reply) in fx.get_all("/admin/x", &admin_ok).await {
        assert_eq!(reply.status, 200, "{label}: {}", reply.text());
    }
    assert_eq!(fx.up.count(), read_ok.len() + admin_ok.len());
    fx.up.clear();
    // `scp: read` alone never opens /admin.
    let reply = fx.get("/admin/x", &replace("scp", json!(["read"]))).await;
    assert_eq!(reply.status, 403);
    fx.assert_upstream_untouched("scp read on /admin");
}

#[tokio::test]
async fn admin_passes_every_scope_check_and_write_implies_read() {
    let fx = Fx::start().await;
    let client = fx.client();
    let admin = fixture_token("root", "admin");
    let write = fixture_token("bob", "write");
    let read = fixture_token("alice", "read");
    let cases: Vec<(&str, &str, &str, u16)> = vec![
        ("admin", "GET", "/api/x", 200),
        ("admin", "HEAD", "/api/x", 200),
        ("admin", "POST", "/api/x", 200),
        ("admin", "PUT", "/api/x", 200),
        ("admin", "PATCH", "/api/x", 200),
        ("admin", "DELETE", "/api/x", 200),
        ("admin", "GET", "/admin/x", 200),
        ("admin", "POST", "/admin/x", 200),
        ("write", "GET", "/api/x", 200),
        ("write", "POST", "/api/x", 200),
        ("write", "PUT", "/api/x", 200),
        ("write", "DELETE", "/api/x", 403),
        ("write", "GET", "/admin/x", 403),
        ("read", "GET", "/api/x", 200),
        ("read", "POST", "/api/x", 403),
        ("read", "PATCH", "/api/x", 403),
        ("read", "DELETE", "/api/x", 403),
        ("read", "GET", "/admin/x", 403),
    ];
    let replies = join_all(cases.iter().map(|(who, method, path, _)| {
        let token = match *who {
            "admin" => &admin,
            "write" => &write,
            _ => &read,
        };
        let auth = format!("Bearer {token}");
        let client = client.clone();
        async move {
            client
                .call(method, path, &[("authorization", auth.as_str())], "")
                .await
        }
    }))
    .await;
    let mut allowed = 0;
    for ((who, method, path, want), reply) in cases.iter().zip(&replies) {
        assert_eq!(
            reply.status.as_u16(),
            *want,
            "{who} {method} {path}: {}",
            reply.text()
        );
        if *want == 200 {
            allowed += 1;
        }
    }
    assert_eq!(
        fx.up.count(),
        allowed,
        "exactly the allowed requests reach the upstream"
    );
    // The granted scopes seen upstream are the expanded set: write brings read along.
    fx.up.clear();
    assert_eq!(fx.get("/api/x", &write).await.status, 200);
    let scopes = fx.up.last().unwrap().header("x-forwarded-scopes").unwrap();
    let scopes: Vec<&str> = scopes.split(' ').collect();
    assert!(
        scopes.contains(&"write") && scopes.contains(&"read"),
        "{scopes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// J-26, H-12: the subject becomes a header

#[tokio::test]
async fn subject_must_be_a_non_empty_printable_bounded_string() {
    let fx = Fx::start().await;
    let with_sub = |sub: Option<Value>| {
        admin_claims_with(|c| match sub {
            Some(v) => {
                c.insert("sub".into(), v);
            }
            None => {
                c.remove("sub");
            }
        })
    };
    let cases = labelled(vec![
        ("empty sub", with_sub(Some(json!("")))),
        ("missing sub", with_sub(None)),
        ("numeric sub", with_sub(Some(json!(123)))),
        ("null sub", with_sub(Some(Value::Null))),
        ("array sub", with_sub(Some(json!(["alice"])))),
        (
            "CRLF header injection",
            with_sub(Some(json!("alice\r\nX-Forwarded-Scopes: admin"))),
        ),
        ("bare LF", with_sub(Some(json!("alice\nroot")))),
        ("NUL", with_sub(Some(json!("a\u{0}b")))),
        ("DEL", with_sub(Some(json!("alice\u{7f}")))),
        ("300-byte sub", with_sub(Some(json!("a".repeat(300))))),
        ("10 KB sub", with_sub(Some(json!("a".repeat(10_000))))),
    ]);
    let replies = fx.get_all("/api/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("subject");
    // 256 bytes is the limit, not beyond it: accepted, and forwarded verbatim.
    let long = "a".repeat(256);
    let reply = fx.get("/api/x", &with_sub(Some(json!(long)))).await;
    assert_eq!(reply.status, 200, "256-byte sub: {}", reply.text());
    assert_eq!(fx.up.last().unwrap().all("x-forwarded-user"), vec![long]);
}

#[tokio::test]
async fn claims_and_client_headers_cannot_inject_identity_headers_upstream() {
    let fx = Fx::start().await;
    let client = fx.client();
    // Control characters in scope names are refused outright.
    let injected = labelled(vec![
        (
            "CRLF in scope",
            admin_claims_with(|c| {
                c.insert("scope".into(), json!("read\r\nX-Forwarded-User: root"));
            }),
        ),
        (
            "CRLF in scp",
            admin_claims_with(|c| {
                c.insert("scp".into(), json!(["read\r\nX-Injected: 1"]));
            }),
        ),
        (
            "CRLF in sub",
            admin_claims_with(|c| {
                c.insert("sub".into(), json!("alice\r\nX-Injected: 1"));
            }),
        ),
    ]);
    let replies = fx.get_all("/api/x", &injected).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("claim injection");

    // Non-ASCII subject: refused or forwarded, never a server error.
    let unicode = admin_claims_with(|c| {
        c.insert("sub".into(), json!("ålice"));
    });
    let reply = fx.get("/api/x", &unicode).await;
    assert!(
        matches!(reply.status.as_u16(), 200 | 401),
        "non-ASCII sub: {}",
        reply.status
    );
    fx.up.clear();

    // Client-supplied identity headers (any spelling) are replaced by the token's.
    let t = fixture_token("alice", "read");
    let auth = format!("Bearer {t}");
    let reply = client
        .get(
            "/api/x",
            &[
                ("authorization", auth.as_str()),
                ("x-forwarded-user", "root"),
                ("X-Forwarded-Scopes", "admin"),
                ("x_forwarded_user", "root"),
                ("x-forwarded-user", "root2"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = fx.up.last().unwrap();
    assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
    assert_eq!(seen.all("x-forwarded-scopes"), vec!["read"]);
    assert!(seen.all("x-injected").is_empty());
    assert!(
        seen.headers
            .keys()
            .all(|k| !k.as_str().eq_ignore_ascii_case("x_forwarded_user")),
        "underscore spelling must be dropped: {:?}",
        seen.headers
    );
    assert!(
        seen.all("authorization").is_empty(),
        "the bearer is not passed on by default"
    );
}
