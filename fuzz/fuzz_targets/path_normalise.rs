//! `path::normalise` on arbitrary UTF-8: never panics, and every accepted path is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::path::normalise;

fuzz_target!(|input: &str| {
    check(input);
    // Most random strings fail the leading-`/` check; give the rest of the parser a go too.
    if !input.starts_with('/') {
        check(&format!("/{input}"));
    }
});

fn check(input: &str) {
    let Ok(out) = normalise(input) else { return };
    assert!(out.starts_with('/'), "{input:?} -> {out:?}: not absolute");
    assert!(!out.contains("//"), "{input:?} -> {out:?}: empty segment");
    for segment in out.split('/') {
        assert!(
            segment != "." && segment != "..",
            "{input:?} -> {out:?}: dot segment"
        );
    }
    // One spelling: nothing left that decodes to a dot, a separator or a refused byte.
    assert!(out.is_ascii(), "{input:?} -> {out:?}: non-ASCII");
    let upper = out.to_ascii_uppercase();
    for encoded in ["%2E", "%2F", "%5C", "%3B", "%23"] {
        assert!(
            !upper.contains(encoded),
            "{input:?} -> {out:?}: contains {encoded}"
        );
    }
    assert!(out.len() <= input.len() + 1, "{input:?} -> {out:?}: grew");
    assert_eq!(
        normalise(&out).as_deref(),
        Ok(out.as_str()),
        "{input:?} -> {out:?}: not idempotent"
    );
}
