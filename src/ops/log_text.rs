//! Writing access-log fields into a byte buffer without `core::fmt`.
//!
//! Every request writes one access line, and `write!` costs more there than the rest of the
//! gateway's own per-request work (formatting machinery, per-character escaping, float
//! rounding). Each helper here copies the common case straight through and falls back to the
//! standard formatting only for values that need escaping, so the output is the same.

use std::cell::Cell;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `s` as `str::escape_debug` writes it.
pub fn push_debug_escaped(out: &mut Vec<u8>, s: &str) {
    // Folded without early exit, so it compiles to a vector loop (see `push_json_string`).
    let plain = !s.bytes().fold(false, |escape, b| {
        escape | !(0x20..=0x7e).contains(&b) | (b == b'\\') | (b == b'"') | (b == b'\'')
    });
    if plain {
        out.extend_from_slice(s.as_bytes());
    } else {
        let _ = write!(out, "{}", s.escape_debug());
    }
}

/// `s` as a JSON string, quotes included, as `serde_json` writes it.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    push_json_bytes(out, s.as_bytes());
}

/// `bytes` as a JSON string, quotes included: copied as they are when nothing needs escaping
/// (no control character, quote, backslash or non-ASCII byte), otherwise as `serde_json`
/// writes their text (invalid UTF-8 replaced).
pub fn push_json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // A fold without early exit, so the check compiles to a vector loop: nearly every value
    // needs no escaping, and then the whole string is read anyway.
    let plain = !bytes.iter().fold(false, |escape, &b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\') | (b >= 0x80)
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(bytes));
    }
}

/// `s` as a JSON string when it is known to need no escaping (hex ids, HTTP method tokens,
/// the gateway's own labels): no scan.
pub fn push_json_plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(
        !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'),
        "{s:?}"
    );
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A duration in milliseconds with three decimals (microsecond resolution), e.g. `1.234`.
pub fn push_millis(out: &mut Vec<u8>, duration: Duration) {
    // In u64, not `as_nanos`' u128: a 128-bit division costs more than the rest of the line.
    let micros = duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((duration.subsec_nanos() + 500) / 1000));
    push_u64(out, micros / 1000);
    out.push(b'.');
    push_padded(out, micros % 1000, 3);
}

/// A socket address as `Display` writes it (`1.2.3.4:5`, `[::1]:5`).
pub fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
            out.push(b':');
            push_u64(out, u64::from(addr.port()));
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// RFC 3339 UTC timestamp with microseconds, e.g. `2026-11-28T21:08:07.737713Z`. The date
/// and time of day are rendered once per second per thread.
pub fn push_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let prefix = SECOND.with(|cached| {
        let (second, prefix) = cached.get();
        if second == secs {
            return prefix;
        }
        let prefix = render_second(secs);
        cached.set((secs, prefix));
        prefix
    });
    out.extend_from_slice(&prefix);
    push_padded(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS.` for a second since the epoch.
fn render_second(secs: u64) -> [u8; 20] {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut text = Vec::with_capacity(20);
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    );
    let mut prefix = [b'0'; 20];
    let len = text.len().min(20);
    prefix[..len].copy_from_slice(&text[..len]);
    prefix
}

/// `n` with leading zeros to `width` digits.
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n).as_bytes();
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_420), (2025, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn escaping_matches_the_standard_formatters() {
        for s in [
            "plain-id_42",
            "q\"uote",
            "back\\slash",
            "it's",
            "tab\there",
            "é",
            "\u{7f}",
            "",
        ] {
            assert_eq!(
                text(|o| push_debug_escaped(o, s)),
                s.escape_debug().to_string()
            );
            assert_eq!(
                text(|o| push_json_string(o, s)),
                serde_json::to_string(s).unwrap()
            );
            assert_eq!(
                text(|o| push_json_bytes(o, s.as_bytes())),
                serde_json::to_string(s).unwrap()
            );
        }
        // Not UTF-8: replaced, as a lossy conversion would, and still valid JSON.
        assert_eq!(text(|o| push_json_bytes(o, b"a\xffb")), "\"a\u{fffd}b\"");
    }

    #[test]
    fn numbers_addresses_and_times_match_display() {
        assert_eq!(
            text(|o| push_millis(o, Duration::from_micros(1234))),
            "1.234"
        );
        assert_eq!(text(|o| push_millis(o, Duration::from_micros(5))), "0.005");
        assert_eq!(
            text(|o| push_millis(o, Duration::from_nanos(2_999_600))),
            "3.000"
        );
        // Rounding carries into the next second; whole seconds count in milliseconds.
        assert_eq!(
            text(|o| push_millis(o, Duration::new(61, 999_999_700))),
            "62000.000"
        );
        assert_eq!(
            text(|o| push_millis(o, Duration::new(3, 20_000))),
            "3000.020"
        );
        for addr in ["127.0.0.1:8443", "10.0.255.3:1", "[::1]:443"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(text(|o| push_socket_addr(o, addr)), addr.to_string());
        }
        let at = UNIX_EPOCH + Duration::from_micros(1_764_364_087_737_713);
        assert_eq!(
            text(|o| push_timestamp(o, at)),
            "2025-11-28T21:08:07.737713Z"
        );
        // The cached second is reused, the microseconds are not.
        let later = at + Duration::from_micros(7);
        assert_eq!(
            text(|o| push_timestamp(o, later)),
            "2025-11-28T21:08:07.737720Z"
        );
    }
}
