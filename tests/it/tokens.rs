//! Bearer JWT validation (THREATS J-01…J-26) and the "Decisions" table of SPEC, black-box:
//! tokens are minted by the independent hmac+sha2 implementation in `common::mint`, sent to
//! a real gateway over TLS, and the oracle is always (status, what the upstream received).
#![allow(clippy::unwrap_used)]

use crate::common::*;

use futures_util::future::join_all;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A fixture gateway in front of a recording upstream.
struct Fx {
    up: Upstream,
    gw: Gateway,
}

impl Fx {
    async fn start() -> Fx {
        let up = Upstream::start().await;
        let gw = Gateway::start(&fixture_yaml(&up.url())).await;
        Fx { up, gw }
    }

    fn client(&self) -> Client {
        self.gw.h1()
    }

    /// GET `path` with `token` as the bearer.
    async fn get(&self, path: &str, token: &str) -> Reply {
        self.client().get_with_token(path, token).await
    }

    /// Send every labelled token to `path` concurrently.
    async fn get_all(&self, path: &str, cases: &[(String, String)]) -> Vec<(String, Reply)> {
        let client = self.client();
        let replies = join_all(
            cases
                .iter()
                .map(|(_, token)| client.get_with_token(path, token)),
        )
        .await;
        cases
            .iter()
            .map(|(label, _)| label.clone())
            .zip(replies)
            .collect()
    }

    /// Assert the upstream received nothing at all.
    fn assert_upstream_untouched(&self, context: &str) {
        let seen = self.up.seen();
        assert!(
            seen.is_empty(),
            "{context}: the upstream must receive nothing, got {:?}",
            seen.iter().map(|s| &s.target).collect::<Vec<_>>()
        );
    }
}

/// The standard `{"alg":"HS256","typ":"at+jwt","kid":"k1"}` header.
fn std_header() -> Value {
    json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"})
}

/// Correctly signed token with the standard header and `claims`.
fn sign(claims: &Value) -> String {
    mint(Alg::Hs256, &std_header(), claims, SECRET.as_bytes())
}

/// Correctly signed token with `header` and the standard claims of `alice` holding `admin`
/// (so that the scope can never be the reason for a refusal).
fn sign_header(header: &Value) -> String {
    mint(
        Alg::Hs256,
        header,
        &fixture_claims("alice", "admin"),
        SECRET.as_bytes(),
    )
}

/// Admin claims edited by `edit`, correctly signed.
fn admin_claims_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut claims = fixture_claims("alice", "admin");
    edit(claims.as_object_mut().unwrap());
    sign(&claims)
}

/// Valid JSON text of the standard admin claims with `extra` members spliced in front (for
/// duplicate members, which `serde_json::Value` cannot hold).
fn raw_claims(extra: &str) -> String {
    let now = now();
    format!(
        r#"{{{extra}"iss":"https://gw.test","aud":"gw-upstreams","iat":{now},"exp":{},"jti":"raw-{now}"}}"#,
        now + 300
    )
}

const INVALID_TOKEN_PREFIX: &str =
    r#"Bearer realm="portcullis", error="invalid_token", error_description=""#;

/// Why `reply` is not a 401 with the RFC 6750 `invalid_token` challenge and a JSON body.
fn invalid_token_problem(reply: &Reply) -> Option<String> {
    if reply.status != 401 {
        return Some(format!("status {} {}", reply.status, reply.text()));
    }
    let Some(www) = reply.header("www-authenticate") else {
        return Some("401 without WWW-Authenticate".to_owned());
    };
    if !(www.starts_with(INVALID_TOKEN_PREFIX) && www.ends_with('"')) {
        return Some(format!("WWW-Authenticate was {www}"));
    }
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    if body.as_ref().map(|b| &b["error"]) != Some(&json!("invalid_token")) {
        return Some(format!("body was {}", reply.text()));
    }
    None
}

fn assert_invalid_token(label: &str, reply: &Reply) {
    if let Some(problem) = invalid_token_problem(reply) {
        panic!("{label}: expected 401 invalid_token: {problem}");
    }
}

/// Every reply is a 401 `invalid_token`; reports all offenders at once.
fn assert_all_invalid(replies: &[(String, Reply)]) {
    let failures: Vec<String> = replies
        .iter()
        .filter_map(|(label, reply)| invalid_token_problem(reply).map(|p| format!("{label}: {p}")))
        .collect();
    assert!(
        failures.is_empty(),
        "expected 401 invalid_token for every case; offenders:\n{}",
        failures.join("\n")
    );
}

fn labelled(cases: Vec<(&str, String)>) -> Vec<(String, String)> {
    cases.into_iter().map(|(l, t)| (l.to_owned(), t)).collect()
}

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
                    r#"{{"sub":"alice","scope":"admin","iss":"https://gw.test","aud":"gw-upstreams","iat":{n},"exp":1e309}}"#
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
// J-16 … J-19: encoding and shape

/// A fixture token whose signature segment contains `-` or `_` (retries with fresh jtis).
fn token_with_urlsafe_chars() -> String {
    for _ in 0..200 {
        let token = fixture_token("alice", "admin");
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
                r#""sub":"alice","scope":"admin","exp":{},"#,
                now() + 300
            ))),
        ),
        (
            "iss twice",
            sign_raw(raw_claims(
                r#""sub":"alice","scope":"admin","iss":"https://evil.test","#,
            )),
        ),
        (
            "aud twice",
            sign_raw(raw_claims(r#""sub":"alice","scope":"admin","aud":"evil","#)),
        ),
        (
            "header kid twice",
            mint_raw(
                Alg::Hs256,
                r#"{"alg":"HS256","typ":"at+jwt","kid":"a","kid":"b"}"#.as_bytes(),
                raw_claims(r#""sub":"alice","scope":"admin","#).as_bytes(),
                SECRET.as_bytes(),
            ),
        ),
    ]);
    // /admin/x needs admin: a last-wins `scope` would pass; the request must not.
    let replies = fx.get_all("/admin/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("duplicates");
    // Control: the same hand-written JSON without duplicates passes.
    let control = sign_raw(raw_claims(r#""sub":"alice","scope":"admin","#));
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
    let deep_claims = raw_claims(&format!(r#""sub":"alice","scope":"admin","x":{nested},"#));
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
                &raw_claims(r#""sub":"alice","scope":"admin","#),
            ),
        ),
        (
            "800-deep object in claims",
            sign_raw(
                &std,
                &raw_claims(&format!(
                    r#""sub":"alice","scope":"admin","x":{deep_object},"#
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
    assert_eq!(basic.header("www-authenticate"), Some(plain), "Basic");
    let query = client.get(&format!("/admin/x?access_token={t}"), &[]).await;
    assert_eq!(query.status, 401, "?access_token=: {}", query.text());
    assert_eq!(query.header("www-authenticate"), Some(plain), "query");
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
            reply.header("www-authenticate"),
            Some(r#"Bearer realm="portcullis", error="insufficient_scope", scope="write""#)
        );
        assert_eq!(reply.json()["error"], "insufficient_scope");
        let reply = client.get_with_token("/admin/x", &read).await;
        assert_eq!(reply.status, 403);
        assert_eq!(
            reply.header("www-authenticate"),
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

// ---------------------------------------------------------------------------------------------
// SPEC "Decisions", row by row

#[tokio::test]
async fn public_route_forwards_anyone_and_identifies_only_valid_tokens() {
    let fx = Fx::start().await;
    let client = fx.client();
    // No token.
    let reply = client
        .get("/public/x", &[("x-forwarded-user", "root")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = fx.up.last().unwrap();
    assert_eq!(seen.target, "/public/x");
    assert!(
        seen.all("x-forwarded-user").is_empty(),
        "anonymous: no identity"
    );
    // A valid token still sets identity.
    let reply = fx.get("/public/x", &fixture_token("alice", "read")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(fx.up.last().unwrap().all("x-forwarded-user"), vec!["alice"]);
    // An invalid token (forged as root) is ignored, not trusted and not fatal.
    let forged = mint(
        Alg::Hs256,
        &std_header(),
        &fixture_claims("root", "admin"),
        b"not-the-secret-0123456789-abcdefghijklmnop",
    );
    let reply = fx.get("/public/x", &forged).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = fx.up.last().unwrap();
    assert!(
        seen.all("x-forwarded-user").is_empty(),
        "{:?}",
        seen.headers
    );
    assert!(seen.all("x-forwarded-scopes").is_empty());
    assert_eq!(fx.up.count(), 3);
}

#[tokio::test]
async fn protected_routes_without_a_token_are_401_with_a_plain_challenge() {
    let fx = Fx::start().await;
    let client = fx.client();
    for (method, path) in [
        ("GET", "/api/x"),
        ("HEAD", "/api/x"),
        ("POST", "/api/x"),
        ("DELETE", "/api/x"),
        ("GET", "/admin/x"),
        ("GET", "/api"),
    ] {
        let reply = client.call(method, path, &[], "").await;
        assert_eq!(reply.status, 401, "{method} {path}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer realm="portcullis""#),
            "{method} {path}"
        );
        if method != "HEAD" {
            assert!(reply.json()["error"].is_string(), "{method} {path}");
        }
    }
    fx.assert_upstream_untouched("no token");
}

#[tokio::test]
async fn bad_expired_foreign_revoked_or_malformed_tokens_are_401_invalid_token() {
    let fx = Fx::start().await;
    let client = fx.client();
    let revoked = fixture_token("root", "admin");
    let logout = client
        .call(
            "POST",
            "/logout",
            &[("authorization", &format!("Bearer {revoked}"))],
            "",
        )
        .await;
    assert_eq!(logout.status, 204, "{}", logout.text());
    let mut tampered = fixture_token("alice", "read");
    // Swap the payload for one claiming admin, keeping alice's signature.
    let admin_payload = fixture_token("alice", "admin")
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = tampered.split('.').collect();
    tampered = format!("{}.{admin_payload}.{}", parts[0], parts[2]);
    let cases = labelled(vec![
        ("tampered payload", tampered),
        (
            "bad signature",
            mint(
                Alg::Hs256,
                &std_header(),
                &fixture_claims("root", "admin"),
                b"not-the-secret-0123456789-abcdefghijklmnop",
            ),
        ),
        (
            "expired",
            admin_claims_with(|c| {
                c.insert("exp".into(), json!(now() - 3600));
                c.insert("iat".into(), json!(now() - 4000));
            }),
        ),
        (
            "wrong iss",
            admin_claims_with(|c| {
                c.insert("iss".into(), json!("https://other.test"));
            }),
        ),
        (
            "wrong aud",
            admin_claims_with(|c| {
                c.insert("aud".into(), json!("other"));
            }),
        ),
        ("revoked", revoked),
        ("malformed", "abc".to_owned()),
        (
            "not JSON",
            format!("{}.{}.AAAA", b64(b"hello"), b64(b"world")),
        ),
    ]);
    let replies = fx.get_all("/api/x", &cases).await;
    assert_all_invalid(&replies);
    fx.assert_upstream_untouched("invalid tokens");
}

#[tokio::test]
async fn deny_routes_are_403_for_everyone_including_admin() {
    let fx = Fx::start().await;
    let client = fx.client();
    let root = format!("Bearer {}", fixture_token("root", "admin"));
    for (method, auth) in [
        ("GET", None),
        ("GET", Some(root.as_str())),
        ("POST", Some(root.as_str())),
        ("DELETE", Some(root.as_str())),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let reply = client.call(method, "/internal/x", &headers, "").await;
        assert_eq!(reply.status, 403, "{method} {auth:?}: {}", reply.text());
        assert!(reply.json()["error"].is_string());
    }
    fx.assert_upstream_untouched("deny");
}

#[tokio::test]
async fn unmatched_paths_are_404_even_for_admin_and_prefixes_match_whole_segments() {
    let fx = Fx::start().await;
    let root = fixture_token("root", "admin");
    let cases: Vec<(String, String)> = ["/nope", "/publicity", "/apix", "/administrator", "/"]
        .iter()
        .map(|p| (p.to_string(), root.clone()))
        .collect();
    let client = fx.client();
    for (path, token) in &cases {
        let reply = client.get_with_token(path, token).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
        assert!(reply.json()["error"].is_string());
        let anon = client.get(path, &[]).await;
        assert_eq!(anon.status, 404, "{path} anonymous");
    }
    fx.assert_upstream_untouched("404");
}

#[tokio::test]
async fn bad_request_targets_are_400_even_for_admin() {
    let fx = Fx::start().await;
    let client = fx.client();
    let root = fixture_token("root", "admin");
    for path in [
        "/api/a%2Fb",
        "/api/a%00b",
        "/api/a%5C..%5Cadmin",
        "/public/..%2Fadmin/x",
        "/api/a;b",
        "/api/%C0%AE%C0%AE/admin",
    ] {
        let reply = client.get_with_token(path, &root).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
    }
    fx.assert_upstream_untouched("bad targets");
}

#[tokio::test]
async fn an_unreachable_upstream_is_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let gw = Gateway::start(&fixture_yaml(&url)).await;
    let reply = gw
        .h1()
        .get_with_token("/api/x", &fixture_token("root", "admin"))
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.json()["error"].is_string());
}

#[tokio::test]
async fn a_slow_upstream_is_504_after_its_timeout() {
    let up = Upstream::start().await;
    let yaml = fixture_yaml(&up.url()).replace(
        "upstreams:\n",
        &format!(
            "upstreams:\n  slowup: {{ url: \"{}\", timeout: 1s }}\n",
            up.url()
        ),
    ) + "  - { id: slow, path: /slow/**, upstream: slowup, scopes: [read] }\n";
    let gw = Gateway::start(&yaml).await;
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        gw.h1()
            .get_with_token("/slow/5000/x", &fixture_token("alice", "read")),
    )
    .await
    .expect("the gateway answers instead of hanging");
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.json()["error"].is_string());
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

// ---------------------------------------------------------------------------------------------
// SPEC "Forwarding": `pass_token` forwards only tokens the gateway accepted

#[tokio::test]
async fn pass_token_forwards_only_a_token_the_gateway_accepted() {
    let up = Upstream::start().await;
    let url = up.url();
    let yaml = fixture_yaml(&url).replace(
        &format!("  up: {url}\n"),
        &format!("  up: {{ url: {url}, pass_token: true }}\n"),
    );
    let gw = Gateway::start(&yaml).await;
    let revoked = fixture_token("bob", "read write");
    let logout = gw
        .h1()
        .call(
            "POST",
            "/logout",
            &[("authorization", &format!("Bearer {revoked}"))],
            "",
        )
        .await;
    assert_eq!(logout.status, 204, "{}", logout.text());
    let failed = labelled(vec![
        ("revoked", revoked),
        (
            "expired",
            admin_claims_with(|c| {
                c.insert("exp".into(), json!(now() - 3600));
                c.insert("iat".into(), json!(now() - 4000));
            }),
        ),
        (
            "forged signature",
            mint(
                Alg::Hs256,
                &std_header(),
                &fixture_claims("root", "admin"),
                b"not-the-secret-0123456789-abcdefghijklmnop",
            ),
        ),
    ]);
    for client in [gw.h1(), gw.h2()] {
        for (label, token) in &failed {
            // Public route: forwarded, anonymous, and without the refused credential.
            up.clear();
            let reply = client.get_with_token("/public/x", token).await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            let seen = up.last().expect("upstream saw the request");
            assert!(
                seen.all("authorization").is_empty(),
                "{label}: a refused token reached the upstream"
            );
            assert!(seen.all("x-forwarded-user").is_empty(), "{label}");
            // Protected route: refused before the upstream.
            up.clear();
            let reply = client.get_with_token("/api/x", token).await;
            assert_eq!(reply.status, 401, "{label}: {}", reply.text());
            assert_eq!(up.count(), 0, "{label}: forwarded from a protected route");
        }
        let valid = fixture_token("alice", "read");
        for path in ["/public/x", "/api/x"] {
            up.clear();
            let reply = client.get_with_token(path, &valid).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            let seen = up.last().expect("upstream saw the request");
            assert_eq!(seen.all("authorization"), vec![format!("Bearer {valid}")]);
            assert_eq!(seen.all("x-forwarded-user"), vec!["alice"], "{path}");
        }
    }
}
