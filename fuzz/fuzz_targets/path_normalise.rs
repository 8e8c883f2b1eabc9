//! `path::normalise` on arbitrary UTF-8: never panics, and every accepted path is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::path::normalise;

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
    for (at, _) in out.match_indices('%') {
        let hex = out.as_bytes().get(at + 1..at + 3).unwrap_or_default();
        assert!(
            hex.len() == 2 && hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')),
            "{input:?} -> {out:?}: escape at {at} is not two uppercase hex digits"
        );
    }
    assert!(out.len() <= input.len() + 1, "{input:?} -> {out:?}: grew");
    // To an upstream that decodes once, the output names the path the input named.
    assert_eq!(
        percent_decode(&out),
        remove_dot_segments(&percent_decode(input)),
        "{input:?} -> {out:?}: another path once decoded"
    );
    assert_eq!(
        normalise(&out).as_deref(),
        Ok(out.as_str()),
        "{input:?} -> {out:?}: not idempotent"
    );
}

/// Decode every escape once (the input was accepted, so escapes are well formed and decode
/// to UTF-8).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII escape");
            out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("an accepted path decodes to UTF-8")
}

/// RFC 3986 §5.2.4 dot-segment removal clamped at the root, with empty segments merged and a
/// trailing `/` kept after a final empty or dot segment: written plainly, as a reference.
fn remove_dot_segments(decoded: &str) -> String {
    let segments: Vec<&str> = decoded.split('/').collect();
    let mut stack: Vec<&str> = Vec::new();
    for segment in &segments {
        match *segment {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            s => stack.push(s),
        }
    }
    let mut out: String = stack.iter().map(|s| format!("/{s}")).collect();
    if matches!(segments.last(), Some(&"" | &"." | &"..")) || out.is_empty() {
        out.push('/');
    }
    out
}
