//! Algorithm, header and key (THREATS J-01…J-08, J-23): only HS256 under the configured
//! secret verifies; `alg: none`, other algorithms, key references and `crit` are refused; a
//! short secret is a config error.

use crate::common::*;
use crate::tokens::{assert_all_invalid, labelled, sign_header, Fx};

use serde_json::json;

// ---------------------------------------------------------------------------------------------
// J-01 … J-08: algorithm and header

#[tokio::test]
async fn alg_none_in_every_spelling_is_refused_whatever_the_signature() {
    let fx = Fx::start().await;
    let claims = fixture_claims("root", "admin").to_string();
    let headers = [
        r#"{"alg":"none","typ":"at+jwt"}"#,
        r#"{"alg":"None","typ":"at+jwt"}"#,
        r#"{"alg":"NONE","typ":"at+jwt"}"#,
        r#"{"alg":"nOnE","typ":"at+jwt"}"#,
        r#"{"alg":"","typ":"at+jwt"}"#,
        r#"{"alg":null,"typ":"at+jwt"}"#,
        r#"{"typ":"at+jwt"}"#,
        r#"{"alg":"none","alg":"HS256","typ":"at+jwt"}"#,
        r#"{"alg":"HS256","alg":"none","typ":"at+jwt"}"#,
    ];
    let mut cases = Vec::new();
    for header in headers {
        let input = signing_input(header.as_bytes(), claims.as_bytes());
        cases.push((format!("{header} empty sig"), format!("{input}.")));
        cases.push((format!("{header} garbage sig"), format!("{input}.AAAA")));
        let real_mac = mint_raw(
            Alg::Hs256,
            header.as_bytes(),
            claims.as_bytes(),
            SECRET.as_bytes(),
        );
        cases.push((format!("{header} real MAC"), real_mac));
    }
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("alg none");
}

#[tokio::test]
async fn a_stripped_signature_is_refused() {
    let fx = Fx::start().await;
    let token = fixture_token("root", "admin");
    let unsigned = token.rsplit_once('.').unwrap().0.to_owned();
    let cases = labelled(vec![
        ("trailing dot", format!("{unsigned}.")),
        ("two segments", unsigned.clone()),
    ]);
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("stripped signature");
    // Control: the intact token passes, so the refusals are about the signature.
    assert_eq!(fx.get("/admin/x", &token).await.status, 200);
}

#[tokio::test]
async fn only_the_configured_hs256_is_accepted_and_only_with_our_key() {
    let fx = Fx::start().await;
    let claims = fixture_claims("root", "admin").to_string();
    let header = |alg: &str| format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"k1"}}"#);
    let cases = labelled(vec![
        (
            "HS384 header, HS384 MAC",
            mint_raw(
                Alg::Hs384,
                header("HS384").as_bytes(),
                claims.as_bytes(),
                SECRET.as_bytes(),
            ),
        ),
        (
            "HS512 header, HS512 MAC",
            mint_raw(
                Alg::Hs512,
                header("HS512").as_bytes(),
                claims.as_bytes(),
                SECRET.as_bytes(),
            ),
        ),
        (
            "HS256 header, HS384 MAC",
            mint_raw(
                Alg::Hs384,
                header("HS256").as_bytes(),
                claims.as_bytes(),
                SECRET.as_bytes(),
            ),
        ),
        (
            "HS384 header, HS256 MAC",
            mint_raw(
                Alg::Hs256,
                header("HS384").as_bytes(),
                claims.as_bytes(),
                SECRET.as_bytes(),
            ),
        ),
        (
            "RS256 header, HS256 MAC",
            mint_raw(
                Alg::Hs256,
                header("RS256").as_bytes(),
                claims.as_bytes(),
                SECRET.as_bytes(),
            ),
        ),
        (
            "hs256 lowercase header",
            mint_raw(
                Alg::Hs256,
                header("hs256").as_bytes(),
                claims.as_bytes(),
                SECRET.as_bytes(),
            ),
        ),
        (
            "HS256 under another secret",
            mint_raw(
                Alg::Hs256,
                header("HS256").as_bytes(),
                claims.as_bytes(),
                b"another-secret-0123456789-abcdefghijklmnop",
            ),
        ),
        (
            "HS256 under an empty key",
            mint_raw(
                Alg::Hs256,
                header("HS256").as_bytes(),
                claims.as_bytes(),
                b"",
            ),
        ),
    ]);
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("algorithm pinning");
    let control = mint_raw(
        Alg::Hs256,
        header("HS256").as_bytes(),
        claims.as_bytes(),
        SECRET.as_bytes(),
    );
    assert_eq!(fx.get("/admin/x", &control).await.status, 200);
}

#[tokio::test]
async fn kid_is_only_a_label_never_a_path_query_or_url() {
    let fx = Fx::start().await;
    let kids = [
        "../../../../dev/null",
        "x' UNION SELECT 'k'--",
        "/proc/self/environ",
        "http://127.0.0.1:9/",
        "another-tenant",
    ];
    // With the real secret the kid does not matter: the one configured key verifies.
    let good = kids
        .iter()
        .map(|kid| {
            (
                format!("kid {kid} real key"),
                sign_header(&json!({"alg":"HS256","typ":"at+jwt","kid":kid})),
            )
        })
        .collect::<Vec<_>>();
    for (label, reply) in fx.get_all("/api/x", &good).await {
        assert_eq!(reply.status, 200, "{label}: {}", reply.text());
    }
    assert_eq!(fx.up.count(), good.len());
    fx.up.clear();
    // MAC'd with an empty key (what /dev/null would yield) or the kid string itself: refused.
    let mut bad = Vec::new();
    for kid in kids {
        let header = json!({"alg":"HS256","typ":"at+jwt","kid":kid});
        let claims = fixture_claims("root", "admin");
        bad.push((
            format!("kid {kid} empty key"),
            mint(Alg::Hs256, &header, &claims, b""),
        ));
        bad.push((
            format!("kid {kid} kid as key"),
            mint(Alg::Hs256, &header, &claims, kid.as_bytes()),
        ));
    }
    // Length-capped: a 4 KiB kid and a 64 KiB kid are refused even when correctly signed.
    bad.push((
        "4 KiB kid".to_owned(),
        sign_header(&json!({"alg":"HS256","typ":"at+jwt","kid":"k".repeat(4096)})),
    ));
    bad.push((
        "64 KiB kid".to_owned(),
        sign_header(&json!({"alg":"HS256","typ":"at+jwt","kid":"k".repeat(64 * 1024)})),
    ));
    let replies = fx.get_all("/admin/x", &bad[..bad.len() - 1]).await;
    assert_all_invalid(&replies);
    // The 64 KiB one exceeds the header limits: any 4xx refusal (or a closed connection) is
    // fine; it is never forwarded.
    let client = fx.client();
    let request = client
        .request("GET", "/admin/x")
        .header("authorization", format!("Bearer {}", bad[bad.len() - 1].1))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    if let Ok(huge) = client.connect().await.try_send(request).await {
        assert!(
            matches!(huge.status.as_u16(), 400 | 401 | 431),
            "64 KiB kid: {}",
            huge.status
        );
    }
    fx.assert_upstream_untouched("kid injection");
}

#[tokio::test]
async fn key_reference_headers_are_refused_and_never_fetched() {
    let fx = Fx::start().await;
    // A would-be attacker JWKS server: it must never see a connection.
    let jwks = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    jwks.set_nonblocking(true).unwrap();
    let jwks_url = format!("http://{}/jwks.json", jwks.local_addr().unwrap());
    let attacker_jwk = json!({"kty":"oct","k": b64(b"attacker-key-0123456789-abcdefghijklmnop")});
    let headers = [
        (
            "jku",
            json!({"alg":"HS256","typ":"at+jwt","kid":"k1","jku": jwks_url}),
        ),
        (
            "x5u",
            json!({"alg":"HS256","typ":"at+jwt","kid":"k1","x5u": jwks_url}),
        ),
        (
            "jwk",
            json!({"alg":"HS256","typ":"at+jwt","kid":"k1","jwk": attacker_jwk}),
        ),
        (
            "x5c",
            json!({"alg":"HS256","typ":"at+jwt","kid":"k1","x5c": ["MIIBfake"]}),
        ),
        (
            "jku null",
            json!({"alg":"HS256","typ":"at+jwt","jku": null}),
        ),
    ];
    let mut cases = Vec::new();
    for (label, header) in &headers {
        // Signed with our own secret: only the header member can be the reason to refuse.
        cases.push((format!("{label} (our key)"), sign_header(header)));
        cases.push((
            format!("{label} (attacker key)"),
            mint(
                Alg::Hs256,
                header,
                &fixture_claims("root", "admin"),
                b"attacker-key-0123456789-abcdefghijklmnop",
            ),
        ));
    }
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("jku/x5u/jwk/x5c");
    match jwks.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the gateway contacted the jku/x5u URL: {other:?}"),
    }
}

#[tokio::test]
async fn crit_header_is_refused() {
    let fx = Fx::start().await;
    let cases = labelled(vec![
        (
            "crit urn:x",
            sign_header(&json!({"alg":"HS256","typ":"at+jwt","crit":["urn:x"],"urn:x":"1"})),
        ),
        (
            "crit exp",
            sign_header(&json!({"alg":"HS256","typ":"at+jwt","crit":["exp"],"exp":1})),
        ),
        (
            "crit empty",
            sign_header(&json!({"alg":"HS256","typ":"at+jwt","crit":[]})),
        ),
    ]);
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("crit");
}

#[tokio::test]
async fn token_type_other_than_an_access_token_is_refused() {
    let fx = Fx::start().await;
    let cases = labelled(vec![
        (
            "typ id+jwt",
            sign_header(&json!({"alg":"HS256","typ":"id+jwt","kid":"k1"})),
        ),
        (
            "typ application/id+jwt",
            sign_header(&json!({"alg":"HS256","typ":"application/id+jwt","kid":"k1"})),
        ),
        (
            "typ logout+jwt",
            sign_header(&json!({"alg":"HS256","typ":"logout+jwt","kid":"k1"})),
        ),
    ]);
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("typ");
}

// ---------------------------------------------------------------------------------------------
// J-23: weak HMAC key

#[test]
fn a_short_hmac_secret_is_a_config_error_naming_tokens_secret() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, secret: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            fixture_yaml("http://127.0.0.1:9").replace(SECRET, secret),
        )
        .unwrap();
        path
    };
    for (name, secret) in [
        ("ten.yaml", "0123456789"),
        ("thirty-one.yaml", "0123456789abcdefghijklmnopqrstu"),
    ] {
        let path = write(name, secret);
        let err = portcullis::config::Config::load(&path)
            .err()
            .unwrap_or_else(|| panic!("a {}-byte secret must not load", secret.len()));
        assert!(
            err.to_string().contains("tokens.secret"),
            "the error names tokens.secret: {err}"
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("check")
            .arg("-c")
            .arg(&path)
            .env_remove("PORTCULLIS_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "check must fail for {name}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("tokens.secret"), "{text}");
        assert!(
            !text.contains(secret),
            "the secret is never printed: {text}"
        );
    }
    // The boundary: 32 bytes is enough for HS256 (RFC 7518 §3.2).
    let ok = write("thirty-two.yaml", "0123456789abcdefghijklmnopqrstuv");
    portcullis::config::Config::load(&ok).unwrap_or_else(|e| panic!("32-byte secret: {e}"));
}
