//! The token-endpoint body parsers: `parse_form` (application/x-www-form-urlencoded) and the
//! JSON object, and the refresh-token parser. Never panics; the form parser refuses exactly the
//! bodies that repeat one of the parameters it reads (RFC 6749 §3.1) and accepts everything
//! else; a refresh token parses only in its one shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::auth::refresh::RefreshToken;
use portcullis::pipeline::login::{parse_form, LoginForm};

const PARAMETERS: [&str; 7] = [
    "grant_type",
    "username",
    "password",
    "scope",
    "refresh_token",
    "token",
    "token_type_hint",
];

fuzz_target!(|data: &[u8]| {
    let repeated = PARAMETERS.iter().any(|name| {
        form_urlencoded::parse(data)
            .filter(|(key, _)| key == name)
            .count()
            > 1
    });
    let parsed = parse_form(data);
    assert_eq!(
        parsed.is_err(),
        repeated,
        "form {:?}: repeated parameter = {repeated}, parse = {parsed:?}",
        String::from_utf8_lossy(data)
    );
    let _ = serde_json::from_slice::<LoginForm>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(token) = RefreshToken::parse(text) {
            assert!(text.starts_with("prt_") && text.len() == 47, "{text:?}");
            assert_eq!(token.as_str(), text);
        }
    }
});
