//! Bearer tokens, black-box: tokens are minted by the independent hmac+sha2 implementation in
//! `common::mint`, sent to a real gateway over TLS, and the oracle is always (status, what the
//! upstream received). [`validation`] covers THREATS J-01…J-26 (is this token acceptable?),
//! [`decisions`] the SPEC "Decisions" table (what does the route make of it?); the fixture and
//! assertions they share are here.
#![allow(clippy::unwrap_used)]

mod decisions;
mod validation;

use crate::common::*;

use futures_util::future::join_all;
use serde_json::{json, Value};

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
        &fixture_claims("root", "admin"),
        SECRET.as_bytes(),
    )
}

/// Admin claims edited by `edit`, correctly signed.
fn admin_claims_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut claims = fixture_claims("root", "admin");
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
