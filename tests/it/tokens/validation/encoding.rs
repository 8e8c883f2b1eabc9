//! How a token is written and carried (THREATS J-16…J-19, J-24, J-25): strict base64url,
//! three segments, no duplicate JSON members, bounded size and nesting; exactly one bearer
//! credential in one Authorization header; RFC 6750 refusals that never echo the token.

use crate::common::*;
use crate::tokens::{
    admin_claims_with, assert_all_invalid, assert_invalid_token, labelled, raw_claims, sign,
    std_header, Fx,
};

use serde_json::json;

// ---------------------------------------------------------------------------------------------
// J-16 … J-19: encoding and shape

/// A fixture token whose signature segment contains `-` or `_` (retries with fresh jtis).
fn token_with_urlsafe_chars() -> String {
    for _ in 0..200 {
        let token = fixture_token("root", "admin");
        let sig = token.rsplit('.').next().unwrap();
        if sig.contains(['-', '_']) {
            return token;
        }
    }
    panic!("no token with - or _ in 200 tries");
}

#[tokio::test]
async fn base64url_must_be_strict_unpadded_and_canonical() {
    let fx = Fx::start().await;
    let token = token_with_urlsafe_chars();
    let (h, rest) = token.split_once('.').unwrap();
    let (c, s) = rest.split_once('.').unwrap();
    // Flip only the spare low bits of the final signature character: the decoded bytes are
    // unchanged, so only a strict decoder notices.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *s.as_bytes().last().unwrap();
    let idx = alphabet.iter().position(|&b| b == last).unwrap();
    let spare_flipped = alphabet[idx ^ 0b01] as char;
    let noncanonical = format!("{h}.{c}.{}{spare_flipped}", &s[..s.len() - 1]);
    let cases = labelled(vec![
        ("padded signature", format!("{h}.{c}.{s}=")),
        ("padded header", format!("{h}=.{c}.{s}")),
        (
            "standard alphabet",
            format!("{h}.{c}.{}", s.replace('-', "+").replace('_', "/")),
        ),
        ("non-canonical trailing bits", noncanonical),
        ("junk character in payload", format!("{h}.{c}!.{s}")),
        ("percent-encoded dot", format!("{h}%2E{c}.{s}")),
    ]);
    let replies = fx.get_all("/admin/x", &cases).await;
    for (label, reply) in &replies {
        // A token68 violation may be refused as a bad request; it must never pass.
        if label == "junk character in payload" || label == "percent-encoded dot" {
            assert!(
                matches!(reply.status.as_u16(), 400 | 401),
                "{label}: {}",
                reply.status
            );
        } else {
            assert_invalid_token(label, reply);
        }
    }
    fx.assert_upstream_untouched("base64url");
    assert_eq!(fx.get("/admin/x", &token).await.status, 200, "control");
}

#[tokio::test]
async fn tokens_with_the_wrong_number_of_segments_are_refused() {
    let fx = Fx::start().await;
    let token = fixture_token("root", "admin");
    let parts: Vec<&str> = token.split('.').collect();
    let cases = labelled(vec![
        ("one segment", parts[0].to_owned()),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{token}.{}", parts[2])),
        ("four segments, empty last", format!("{token}.")),
        (
            "five segments (JWE shape)",
            format!(
                "{}.{}.{}.{}.{}",
                parts[0], parts[1], parts[2], parts[1], parts[2]
            ),
        ),
        ("two dots", "..".to_owned()),
        ("three dots", "...".to_owned()),
        ("dot first", format!(".{token}")),
    ]);
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("segments");
}

#[tokio::test]
async fn duplicate_json_members_are_refused_not_resolved() {
    let fx = Fx::start().await;
    let header = std_header().to_string();
    let sign_raw = |claims: String| {
        mint_raw(
            Alg::Hs256,
            header.as_bytes(),
            claims.as_bytes(),
            SECRET.as_bytes(),
        )
    };
    let cases = labelled(vec![
        (
            "sub twice",
            sign_raw(raw_claims(r#""sub":"alice","sub":"root","scope":"read","#)),
        ),
        (
            "scope twice",
            sign_raw(raw_claims(
                r#""sub":"alice","scope":"read","scope":"admin","#,
            )),
        ),
        (
            "exp twice",
            sign_raw(raw_claims(&format!(
                r#""sub":"root","scope":"admin","exp":{},"#,
                now() + 300
            ))),
        ),
        (
            "iss twice",
            sign_raw(raw_claims(
                r#""sub":"root","scope":"admin","iss":"https://evil.test","#,
            )),
        ),
        (
            "aud twice",
            sign_raw(raw_claims(r#""sub":"root","scope":"admin","aud":"evil","#)),
        ),
        (
            "header kid twice",
            mint_raw(
                Alg::Hs256,
                r#"{"alg":"HS256","typ":"at+jwt","kid":"a","kid":"b"}"#.as_bytes(),
                raw_claims(r#""sub":"root","scope":"admin","#).as_bytes(),
                SECRET.as_bytes(),
            ),
        ),
    ]);
    // /admin/x needs admin: a last-wins `scope` would pass; the request must not.
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("duplicates");
    // Control: the same hand-written JSON without duplicates passes.
    let control = sign_raw(raw_claims(r#""sub":"root","scope":"admin","#));
    assert_eq!(fx.get("/admin/x", &control).await.status, 200);
}

#[tokio::test]
async fn a_token_over_8_kib_is_refused() {
    let fx = Fx::start().await;
    let big = admin_claims_with(|c| {
        c.insert("pad".into(), json!("p".repeat(9 * 1024)));
    });
    assert!(big.len() > 9 * 1024);
    let replies = fx
        .get_all("/admin/x", &labelled(vec![("9 KiB token", big)]))
        .await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("9 KiB token");
}

#[tokio::test]
async fn deeply_nested_token_json_is_refused_without_crashing() {
    let fx = Fx::start().await;
    let depth = 2500;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let deep_claims = raw_claims(&format!(r#""sub":"root","scope":"admin","x":{nested},"#));
    let deep_header = format!(r#"{{"alg":"HS256","typ":"at+jwt","x":{nested}}}"#);
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(800), "}".repeat(800));
    let sign_raw = |header: &str, claims: &str| {
        mint_raw(
            Alg::Hs256,
            header.as_bytes(),
            claims.as_bytes(),
            SECRET.as_bytes(),
        )
    };
    let std = std_header().to_string();
    let cases = labelled(vec![
        ("2500-deep array in claims", sign_raw(&std, &deep_claims)),
        (
            "2500-deep array in header",
            sign_raw(
                &deep_header,
                &raw_claims(r#""sub":"root","scope":"admin","#),
            ),
        ),
        (
            "800-deep object in claims",
            sign_raw(
                &std,
                &raw_claims(&format!(
                    r#""sub":"root","scope":"admin","x":{deep_object},"#
                )),
            ),
        ),
    ]);
    for (label, token) in &cases {
        assert!(
            token.len() < 8 * 1024,
            "{label} must stay under the size cap"
        );
    }
    let replies = fx.get_all("/admin/x", &cases).await;
    // The gateway is still alive and still accepts a normal token.
    fx.up.clear();
    let reply = fx.get("/admin/x", &fixture_token("root", "admin")).await;
    assert_eq!(reply.status, 200, "gateway still serving");
    assert_all_invalid(&replies);
}

// ---------------------------------------------------------------------------------------------
// J-24, J-25: Authorization syntax and error shape

#[tokio::test]
async fn authorization_header_must_be_exactly_one_bearer_credential() {
    let fx = Fx::start().await;
    let client = fx.client();
    let t = fixture_token("root", "admin");
    let t2 = fixture_token("alice", "read");
    // Accepted: the scheme is case-insensitive.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let reply = client
            .get("/admin/x", &[("authorization", &format!("{scheme} {t}"))])
            .await;
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.text());
    }
    assert_eq!(fx.up.count(), 3);
    fx.up.clear();
    // Ambiguous: refused as a bad request or an invalid token, never forwarded.
    let ambiguous: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "two spaces",
            vec![("authorization", format!("Bearer  {t}"))],
        ),
        (
            "two credentials in one header",
            vec![("authorization", format!("Bearer {t}, Bearer {t2}"))],
        ),
        (
            "trailing junk",
            vec![("authorization", format!("Bearer {t} extra"))],
        ),
        (
            "two Authorization headers",
            vec![
                ("authorization", format!("Bearer {t}")),
                ("authorization", format!("Bearer {t2}")),
            ],
        ),
        (
            "two identical Authorization headers",
            vec![
                ("authorization", format!("Bearer {t}")),
                ("authorization", format!("Bearer {t}")),
            ],
        ),
        (
            "tab separator",
            vec![("authorization", format!("Bearer\t{t}"))],
        ),
        ("scheme only", vec![("authorization", "Bearer".to_owned())]),
    ];
    for (label, headers) in &ambiguous {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = client.call("GET", "/admin/x", &headers, "").await;
        assert!(
            matches!(reply.status.as_u16(), 400 | 401),
            "{label}: {} {}",
            reply.status,
            reply.text()
        );
        assert!(
            !reply.text().contains(&t) && !reply.text().contains(&t2),
            "{label}: token echoed"
        );
    }
    // Other schemes and other places are "no token": 401 with the plain challenge.
    let plain = r#"Bearer realm="portcullis""#;
    let basic = client
        .get(
            "/admin/x",
            &[("authorization", "Basic cm9vdDpzZWNyZXQxMjM=")],
        )
        .await;
    assert_eq!(basic.status, 401, "Basic: {}", basic.text());
    assert_eq!(
        challenge_without_metadata(basic.header("www-authenticate")),
        Some(plain),
        "Basic"
    );
    let query = client.get(&format!("/admin/x?access_token={t}"), &[]).await;
    assert_eq!(query.status, 401, "?access_token=: {}", query.text());
    assert_eq!(
        challenge_without_metadata(query.header("www-authenticate")),
        Some(plain),
        "query"
    );
    let form = client
        .call(
            "POST",
            "/admin/x",
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("access_token={t}"),
        )
        .await;
    assert_eq!(form.status, 401, "form access_token: {}", form.text());
    let cookie = client
        .get("/admin/x", &[("cookie", &format!("access_token={t}"))])
        .await;
    assert_eq!(cookie.status, 401, "cookie access_token");
    fx.assert_upstream_untouched("Authorization syntax");
}

#[tokio::test]
async fn error_responses_follow_rfc6750_and_never_echo_the_token() {
    let fx = Fx::start().await;
    for client in [fx.gw.h1(), fx.gw.h2()] {
        // 401: a bad signature, carrying a canary in every part.
        let mut claims = fixture_claims("CANARYSUB", "CANARYSCOPE");
        claims["jti"] = json!("CANARYJTI");
        let forged = mint(
            Alg::Hs256,
            &json!({"alg":"HS256","typ":"at+jwt","kid":"CANARYKID"}),
            &claims,
            b"not-the-secret-0123456789-abcdefghijklmnop",
        );
        let reply = client.get_with_token("/api/x", &forged).await;
        assert_invalid_token("forged", &reply);
        assert_eq!(
            reply
                .header("content-type")
                .map(|v| v.starts_with("application/json")),
            Some(true)
        );
        let body = reply.json();
        assert!(body["error_description"].is_string(), "{body}");
        let mut everything = reply.text();
        for (name, value) in &reply.headers {
            everything.push_str(name.as_str());
            everything.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        for part in forged.split('.') {
            assert!(
                !everything.contains(part),
                "token part echoed: {everything}"
            );
        }
        assert!(
            !everything.contains("CANARY"),
            "claims echoed: {everything}"
        );

        // 401: expired, with a description.
        let mut expired = fixture_claims("alice", "read");
        expired["exp"] = json!(now() - 3600);
        expired["iat"] = json!(now() - 4000);
        let reply = client.get_with_token("/api/x", &sign(&expired)).await;
        assert_invalid_token("expired", &reply);

        // 403: valid token lacking the scope; the challenge names the scope needed.
        let read = fixture_token("alice", "read");
        let reply = client
            .call(
                "POST",
                "/api/x",
                &[("authorization", &format!("Bearer {read}"))],
                "{}",
            )
            .await;
        assert_eq!(reply.status, 403, "{}", reply.text());
        assert_eq!(
            challenge_without_metadata(reply.header("www-authenticate")),
            Some(r#"Bearer realm="portcullis", error="insufficient_scope", scope="write""#)
        );
        assert_eq!(reply.json()["error"], "insufficient_scope");
        let reply = client.get_with_token("/admin/x", &read).await;
        assert_eq!(reply.status, 403);
        assert_eq!(
            challenge_without_metadata(reply.header("www-authenticate")),
            Some(r#"Bearer realm="portcullis", error="insufficient_scope", scope="admin""#)
        );
        let mut everything = reply.text();
        for (_, value) in &reply.headers {
            everything.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        assert!(!everything.contains(&read), "token echoed on 403");
    }
    fx.assert_upstream_untouched("error shape");
}
