//! The login body parsers: `parse_form` (application/x-www-form-urlencoded) and the JSON
//! login object. Never panics; the form parser refuses exactly the bodies that repeat one of
//! the four login parameters (RFC 6749 §3.1) and accepts everything else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::pipeline::login::{parse_form, LoginForm};

const PARAMETERS: [&str; 4] = ["grant_type", "username", "password", "scope"];

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
});
