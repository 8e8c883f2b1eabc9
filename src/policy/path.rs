//! Canonical request-path normalisation.
//!
//! The path returned here is both matched against auth rules and forwarded
//! upstream, so it must mean exactly one thing to every consumer. Anything that
//! servers may interpret differently (encoded separators, backslashes, matrix
//! parameters, overlong UTF-8, ...) is refused rather than guessed at.

use crate::error::PathError;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Bytes refused whether raw or decoded: their meaning differs between servers.
fn check_common(b: u8) -> Result<(), PathError> {
    match b {
        b'\\' => Err(PathError::Backslash),
        b';' => Err(PathError::Semicolon),
        b'#' => Err(PathError::Fragment),
        0x00..=0x1F | 0x7F => Err(PathError::ControlChar),
        _ => Ok(()),
    }
}

/// Validates a maximal run of encoded high bytes on its own, so overlong
/// forms and surrogates can't smuggle `.` or `/` past us.
fn flush_run(run: &mut Vec<u8>) -> Result<(), PathError> {
    if !run.is_empty() {
        std::str::from_utf8(run).map_err(|_| PathError::InvalidUtf8)?;
        run.clear();
    }
    Ok(())
}

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xF)]));
}

/// Decodes every escape exactly once: unreserved bytes become literal (so
/// `%2e` is a real dot), everything else stays encoded with uppercase hex so
/// the output has a single spelling and cannot decode into a separator.
/// Literal bytes are copied unchanged, also after `%25`: `%252e` means the
/// text `%2e` to a once-decoding upstream, and `%252E` would be other text.
fn decode(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut run = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            flush_run(&mut run)?;
            check_common(b)?;
            match b {
                b' ' | b'?' => return Err(PathError::InvalidChar),
                0x80..=0xFF => return Err(PathError::NonAscii),
                _ => out.push(char::from(b)),
            }
            i += 1;
            continue;
        }
        let hi = bytes.get(i + 1).copied().and_then(hex_val);
        let lo = bytes.get(i + 2).copied().and_then(hex_val);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::BadPercentEncoding);
        };
        let d = (hi << 4) | lo;
        i += 3;
        if d >= 0x80 {
            run.push(d);
            push_escaped(&mut out, d);
            continue;
        }
        flush_run(&mut run)?;
        if d == b'/' {
            return Err(PathError::EncodedSlash);
        }
        check_common(d)?;
        if d.is_ascii_alphanumeric() || matches!(d, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(d));
        } else {
            push_escaped(&mut out, d);
        }
    }
    flush_run(&mut run)?;
    Ok(out)
}

/// Returns the single canonical form of an origin-form request path, or
/// refuses it if any part could be read two ways.
///
/// Escapes are decoded once, repeated slashes merged and dot segments removed
/// (RFC 3986 §5.2.4, clamped at the root). A trailing slash is kept when the
/// input ends in `/` or in a dot segment, since those name a directory.
/// Runs in linear time and never panics.
pub fn normalise(path: &str) -> Result<String, PathError> {
    if is_canonical(path) {
        return Ok(path.to_owned());
    }
    normalise_in_full(path)
}

/// Whether `path` is already its own canonical form: plain bytes only (no escapes, nothing
/// refused) and no empty or dot segments but a trailing empty one. Most requests are, and
/// then nothing needs decoding or rebuilding.
fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.as_bytes().strip_prefix(b"/") else {
        return false;
    };
    let plain = |b: u8| matches!(b, 0x21..=0x7E) && !matches!(b, b'%' | b'\\' | b';' | b'#' | b'?');
    // One pass over the bytes (this runs on every request).
    let mut segment_start = 0;
    for (at, &b) in rest.iter().enumerate() {
        if !plain(b) {
            return false;
        }
        if b == b'/' {
            if matches!(&rest[segment_start..at], b"" | b"." | b"..") {
                return false;
            }
            segment_start = at + 1;
        }
    }
    // The last segment may be empty (a trailing slash), never a dot segment.
    !matches!(&rest[segment_start..], b"." | b"..")
}

/// `s` split around the first `byte` (an ASCII byte, so both sides stay `str`s). What
/// `str::split_once` does, at a fraction of its cost on the short strings of a request line.
pub fn split_once_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    let at = memchr::memchr(byte, s.as_bytes())?;
    Some((&s[..at], &s[at + 1..]))
}

fn normalise_in_full(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let decoded = decode(path)?;
    // `%2F` was refused above, so every `/` here is a real separator.
    let mut segs: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in decoded.split('/') {
        trailing = matches!(seg, "" | "." | "..");
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(input: &str, want: &str) {
        assert_eq!(normalise(input).as_deref(), Ok(want), "input {input:?}");
        assert_eq!(
            normalise_in_full(input).as_deref(),
            Ok(want),
            "input {input:?}"
        );
    }

    proptest! {
        /// The shortcut for paths already canonical never changes an answer.
        #[test]
        fn the_canonical_shortcut_agrees_with_the_full_walk(path in "/[a-z./%2eE;_~\\\\-]{0,24}") {
            prop_assert_eq!(normalise(&path), normalise_in_full(&path));
        }
    }

    #[test]
    fn canonical_paths_are_recognised() {
        for path in ["/", "/a", "/a/", "/a/b.c/..d", "/items/42"] {
            assert!(is_canonical(path), "{path}");
        }
        for path in [
            "", "a", "//", "/a//b", "/a/.", "/./a", "/a/..", "/%2e", "/a;b", "/a b", "/é",
        ] {
            assert!(!is_canonical(path), "{path}");
        }
    }

    #[test]
    fn dot_segments() {
        ok("/public/../admin/users", "/admin/users");
        ok("/public/./../admin/users", "/admin/users");
        ok("/../../admin/users", "/admin/users");
        ok("/public/..", "/");
        ok("/public/x/../../admin/users", "/admin/users");
        ok("/a/b/..", "/a/");
        ok("/a/.", "/a/");
        ok("/.", "/");
        ok("/..", "/");
        ok("/a/./b", "/a/b");
        ok("/a/..b/c", "/a/..b/c");
        ok("/a/.b./...", "/a/.b./...");
    }

    #[test]
    fn encoded_dots() {
        ok("/public/%2e%2e/admin/users", "/admin/users");
        ok("/public/%2E%2E/admin/users", "/admin/users");
        ok("/public/.%2e/admin/users", "/admin/users");
        ok("/public/%2e./admin/users", "/admin/users");
        ok("/public%2e/admin/users", "/public./admin/users");
        ok("/a/%2e", "/a/");
    }

    #[test]
    fn slashes() {
        ok("//admin/users", "/admin/users");
        ok("///admin", "/admin");
        ok("/admin//users", "/admin/users");
        ok("/public//../admin/users", "/admin/users");
        ok("/items/", "/items/");
        ok("/items//", "/items/");
        ok("/", "/");
        ok("//", "/");
        ok("/a/b/", "/a/b/");
    }

    #[test]
    fn escapes_kept_or_decoded() {
        ok(
            "/public/%252e%252e/admin/users",
            "/public/%252e%252e/admin/users",
        );
        ok("/%2561dmin/users", "/%2561dmin/users");
        ok("/%25%32%65", "/%252e");
        ok("/%25a%62/%25e/%25%25", "/%25ab/%25e/%25%25");
        ok("/%25252e", "/%25252e");
        ok("/items/%C3%A4", "/items/%C3%A4");
        ok("/items/%c3%a4", "/items/%C3%A4");
        ok("/%F0%9F%A6%80", "/%F0%9F%A6%80");
        ok("/a%3fb", "/a%3Fb");
        ok("/a%20b", "/a%20b");
        ok("/a%40b%2b", "/a%40b%2B");
        ok("/%41%7e%7E%2D%5f%30", "/A~~-_0");
    }

    /// What follows an escaped `%` is literal text: it is copied, never case-folded, and
    /// only an escape's own two hex digits are uppercased.
    #[test]
    fn literals_after_an_escaped_percent_are_kept_byte_for_byte() {
        ok("/public/%252e", "/public/%252e");
        ok("/public/%252E", "/public/%252E");
        ok("/public/%25ab", "/public/%25ab");
        ok("/public/%25AB", "/public/%25AB");
        ok("/public/%252f", "/public/%252f");
        ok("/%25ab%3fcd", "/%25ab%3Fcd");
        ok("/%3f%25ab", "/%3F%25ab");
        ok("/%25%3fab", "/%25%3Fab");
        ok("/%2525ab", "/%2525ab");
    }

    #[test]
    fn refused() {
        use PathError::*;
        let cases: &[(&str, PathError)] = &[
            ("/admin%2Fusers", EncodedSlash),
            ("/admin%2fusers", EncodedSlash),
            ("/public%5C..%5Cadmin", Backslash),
            ("/public\\..\\admin", Backslash),
            ("/admin;x=1/users", Semicolon),
            ("/%3Badmin", Semicolon),
            ("/admin%3b/users", Semicolon),
            ("/admin%23x", Fragment),
            ("/admin#x", Fragment),
            ("/admin%00.png", ControlChar),
            ("/admin/x%0a", ControlChar),
            ("/admin%09", ControlChar),
            ("/admin%7F", ControlChar),
            ("/admin\t", ControlChar),
            ("/admin\u{7f}", ControlChar),
            ("/a b", InvalidChar),
            ("/a?b", InvalidChar),
            ("/public/%c0%ae%c0%ae/admin", InvalidUtf8),
            ("/%c0%afadmin", InvalidUtf8),
            ("/public/%ff/x", InvalidUtf8),
            ("/%ed%a0%80", InvalidUtf8),
            ("/%C3x", InvalidUtf8),
            ("/%C3%41", InvalidUtf8),
            ("/%C3/%A4", InvalidUtf8),
            ("/a%zz", BadPercentEncoding),
            ("/a%", BadPercentEncoding),
            ("/a%2", BadPercentEncoding),
            ("/a%%30", BadPercentEncoding),
            ("admin", NotOriginForm),
            ("*", NotOriginForm),
            ("", NotOriginForm),
            ("/ａｄｍｉｎ", NonAscii),
            ("/é", NonAscii),
        ];
        for (input, err) in cases {
            assert_eq!(normalise(input).as_ref(), Err(err), "input {input:?}");
        }
    }

    #[test]
    fn messages_are_short_and_lowercase() {
        let msg = PathError::EncodedSlash.to_string();
        assert_eq!(msg, "encoded slash in path");
        assert_eq!(
            PathError::NotOriginForm.to_string(),
            "path must start with '/'"
        );
        assert_eq!(msg, msg.to_lowercase());
    }

    #[test]
    fn long_inputs_are_linear() {
        ok(&format!("/{}", "a/../".repeat(12_000)), "/");
        ok(&"/..".repeat(100_000), "/");
        ok(&"/%2e%2e".repeat(100_000), "/");
        let deep = "/a".repeat(100_000);
        ok(&deep, &deep);
    }

    fn check_invariants(input: &str) {
        let Ok(p) = normalise(input) else { return };
        assert_eq!(normalise(&p), Ok(p.clone()), "not idempotent for {input:?}");
        assert!(p.starts_with('/'));
        assert!(!p.contains("//") && !p.contains("/./") && !p.contains("/../"));
        assert!(!p.ends_with("/.") && !p.ends_with("/.."));
        let upper = p.to_ascii_uppercase();
        for bad in ["%2E", "%2F", "%5C", "%3B", "%23"] {
            assert!(!upper.contains(bad), "{p:?} contains {bad}");
        }
        assert!(p.is_ascii());
        assert_escapes_are_uppercase(&p);
        assert_eq!(
            percent_decode(p.as_bytes()),
            reference_normalise(&percent_decode(input.as_bytes())),
            "{input:?} -> {p:?} means another path to an upstream that decodes once"
        );
    }

    /// Every `%` starts an escape spelled with uppercase hex digits.
    fn assert_escapes_are_uppercase(p: &str) {
        let b = p.as_bytes();
        for (i, _) in p.match_indices('%') {
            let hex = &b[i + 1..i + 3];
            assert!(
                hex.iter()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)),
                "{p:?}: escape at {i} is not uppercase hex"
            );
        }
    }

    /// Decode every escape once, as an upstream does (input already accepted, so well formed
    /// and decoding to UTF-8).
    fn percent_decode(input: &[u8]) -> String {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            if input[i] == b'%' {
                let hex = std::str::from_utf8(&input[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(input[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("an accepted path decodes to UTF-8")
    }

    /// Dot-segment removal and slash merging on a decoded path, written plainly.
    fn reference_normalise(decoded: &str) -> String {
        let segments: Vec<&str> = decoded.split('/').collect();
        let mut stack: Vec<&str> = Vec::new();
        for seg in &segments {
            match *seg {
                "" | "." => {}
                ".." => {
                    stack.pop();
                }
                s => stack.push(s),
            }
        }
        let mut out: String = stack.iter().map(|seg| format!("/{seg}")).collect();
        let last = segments.last().copied().unwrap_or_default();
        if matches!(last, "" | "." | "..") || out.is_empty() {
            out.push('/');
        }
        out
    }

    /// Concatenations of `tokens`, optionally with a leading `/`.
    fn from_tokens(tokens: Vec<&'static str>) -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop::collection::vec(prop::sample::select(tokens), 0..48),
        )
            .prop_map(|(slash, v)| format!("{}{}", if slash { "/" } else { "" }, v.concat()))
    }

    fn alphabet() -> impl Strategy<Value = String> {
        from_tokens(vec![
            "/", "\\", ".", "%", ";", "#", "?", "a", "A", "2e", "2E", "2f", "5c", "25", "c0", "ae",
            "ff", "00", "c3", "a4", "41", "20",
        ])
    }

    /// Whole escapes, so most inputs are accepted and the Ok invariants get exercised.
    fn mostly_valid() -> impl Strategy<Value = String> {
        from_tokens(vec![
            "/", "/", ".", "..", "a", "%2e", "%2E", "%25", "%41", "%c3%a4", "%20", "%3f", "2e",
            "2E", "ab", "AB", "%2525", "%3F",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn any_string(s in any::<String>()) {
            check_invariants(&s);
            check_invariants(&format!("/{s}"));
        }

        #[test]
        fn biased_alphabet(s in alphabet()) {
            check_invariants(&s);
        }

        #[test]
        fn biased_valid(s in mostly_valid()) {
            check_invariants(&s);
        }

        #[test]
        fn lossy_bytes(b in prop::collection::vec(any::<u8>(), 0..64)) {
            check_invariants(&String::from_utf8_lossy(&b));
        }
    }
}
