//! THREATS J-09, J-12, J-21, J-22: token lifetime beyond the configured ttl, a retired key
//! after a reload, and ECDSA "psychic signatures".

use crate::common::*;

use serde_json::json;

// ---------------------------------------------------------------------------------------------
// J-09, J-12: token lifetime; J-21: a retired key; J-22: psychic ECDSA.

fn admin_token_with(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let mut claims = fixture_claims("root", "admin");
    edit(claims.as_object_mut().unwrap());
    mint(
        Alg::Hs256,
        &json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}),
        &claims,
        SECRET.as_bytes(),
    )
}

#[tokio::test]
async fn a_token_living_far_longer_than_the_configured_ttl_is_refused() {
    // THREATS J-09: the fixture issues 5-minute tokens; one valid for ten years is not ours.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let n = now();
    let token = admin_token_with(|c| {
        c.insert("exp".into(), json!(n + 10 * 365 * 24 * 3600));
    });
    let reply = gw.h1().get_with_token("/admin/x", &token).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(up.count(), 0, "a ten-year token reached the upstream");
}

#[tokio::test]
async fn a_token_issued_longer_ago_than_the_maximum_age_is_refused() {
    // THREATS J-12
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let n = now();
    let token = admin_token_with(|c| {
        c.insert("iat".into(), json!(n - 365 * 24 * 3600));
    });
    let reply = gw.h1().get_with_token("/admin/x", &token).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(up.count(), 0, "a year-old token reached the upstream");
}

#[tokio::test]
async fn a_token_signed_with_a_retired_secret_is_refused_after_the_reload() {
    // THREATS J-21: rotating `tokens.secret` by reload retires every token signed with the old
    // one at once; there is no window where either key passes unchecked.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let old = fixture_token("root", "admin");
    assert_eq!(gw.h1().get_with_token("/admin/x", &old).await.status, 200);
    let new_secret = "rotated-secret-9876543210-zyxwvutsrqponmlkjihgfedcba";
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    assert!(text.contains(SECRET));
    std::fs::write(&gw.config_path, text.replace(SECRET, new_secret)).unwrap();
    let outcome = portcullis::reload::reload(&gw.config_path, &gw.shared);
    assert!(
        matches!(outcome, portcullis::reload::ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    up.clear();
    let reply = gw.h1().get_with_token("/admin/x", &old).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(up.count(), 0, "a retired-key token reached the upstream");
    let fresh = mint(
        Alg::Hs256,
        &json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}),
        &fixture_claims("root", "admin"),
        new_secret.as_bytes(),
    );
    assert_eq!(gw.h1().get_with_token("/admin/x", &fresh).await.status, 200);
}

#[tokio::test]
async fn an_es256_token_with_an_all_zero_signature_is_refused() {
    // THREATS J-22 (psychic signatures, CVE-2022-21449)
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}).to_string();
    let claims = fixture_claims("root", "admin").to_string();
    let unsigned = signing_input(header.as_bytes(), claims.as_bytes());
    for signature in [vec![0u8; 64], vec![0u8; 72], Vec::new()] {
        let token = format!("{unsigned}.{}", b64(&signature));
        let reply = gw.h1().get_with_token("/admin/x", &token).await;
        assert_eq!(
            reply.status,
            401,
            "{} zero bytes: {}",
            signature.len(),
            reply.text()
        );
    }
    assert_eq!(up.count(), 0);
}
