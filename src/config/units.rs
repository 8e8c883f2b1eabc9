//! `30s` / `15m` / `1h` durations and `16KiB` sizes, as written in `gateway.yaml`.

use std::time::Duration;

/// Why a duration was refused. Every duration has a maximum, so no deadline computed as
/// `now + duration` anywhere can overflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` needs a unit (ms, s, m, h, d)")]
    NoUnit(String),
    #[error("`{0}` is not a duration like 30s, 15m or 1h")]
    Malformed(String),
    #[error("`{text}`: unknown unit `{unit}` (use ms, s, m, h or d)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{text}` is longer than the maximum, {max}")]
    TooLong { text: String, max: String },
}

/// Parse a duration such as `500ms`, `30s`, `15m`, `1h` or `1d`, at most `max`.
pub fn parse_duration(text: &str, max: Duration) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| DurationError::NoUnit(text.to_owned()))?;
    let (number, unit) = text.split_at(split);
    let millis_per_unit: u128 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: text.to_owned(),
                unit: unit.to_owned(),
            })
        }
    };
    if number.is_empty() {
        return Err(DurationError::Malformed(text.to_owned()));
    }
    let too_long = || DurationError::TooLong {
        text: text.to_owned(),
        max: format_duration(max),
    };
    // Digits beyond u128 are certainly too long; within it, the product cannot overflow
    // before the comparison with the (u64-millisecond) maximum.
    let number: u128 = number.parse().map_err(|_| too_long())?;
    let millis = number.checked_mul(millis_per_unit).ok_or_else(too_long)?;
    if millis > max.as_millis() {
        return Err(too_long());
    }
    u64::try_from(millis)
        .map(Duration::from_millis)
        .map_err(|_| too_long())
}

/// `d` in the largest unit that writes it exactly: `365d`, `1h`, `90s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis >= size && millis % size == 0 {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// Parse a size such as `16KiB`, `1MiB`, `512B` or a bare byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 16KiB"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use B, KiB, MiB)"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Replace every `${VAR}` with the environment variable's value; a missing variable is an
/// error naming it, never an empty string.
pub fn interpolate(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` (write `${VAR}`)".to_owned())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`${{{name}}}` is not a valid variable name"));
        }
        let value =
            std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A UTC RFC 3339 timestamp (`2026-12-01T10:00:00Z`, fractional seconds allowed) as unix
/// seconds. Only `Z`: a config read by people is clearest in one zone.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not an RFC 3339 UTC time like 2026-12-01T10:00:00Z");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' || !matches!(b[b.len() - 1], b'Z' | b'z') {
        return Err(bad());
    }
    let fraction = &text[19..text.len() - 1];
    if !(fraction.is_empty()
        || (fraction.len() > 1
            && fraction.starts_with('.')
            && fraction[1..].bytes().all(|c| c.is_ascii_digit())))
    {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> Result<u64, String> {
        let digits = &text[range];
        if digits.bytes().all(|c| c.is_ascii_digit()) {
            digits.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if year < 1970
        || !(1..=12).contains(&month)
        || day == 0
        || day > month_days[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let days_before_year: u64 = (1970..year)
        .map(|y| {
            if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
                366
            } else {
                365
            }
        })
        .sum();
    let days_before_month: u64 = month_days[..month as usize - 1].iter().sum();
    let days = days_before_year + days_before_month + day - 1;
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second.min(59))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s", DAY), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m", DAY), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h", DAY), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms", DAY), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 1d ", DAY), Ok(DAY));
        assert!(matches!(
            parse_duration("30", DAY),
            Err(DurationError::NoUnit(_))
        ));
        assert!(matches!(
            parse_duration("s", DAY),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("3w", DAY),
            Err(DurationError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn a_duration_longer_than_its_maximum_is_refused_naming_the_maximum() {
        assert_eq!(parse_duration("86400000ms", DAY), Ok(DAY));
        assert_eq!(parse_duration("24h", DAY), Ok(DAY));
        for text in [
            "86400001ms",
            "25h",
            "2d",
            "999999999999h",
            "213503982334601d",
            "18446744073709551616ms",
            "99999999999999999999999999999999999999999999d",
        ] {
            let err = parse_duration(text, DAY).expect_err(text);
            assert!(
                matches!(err, DurationError::TooLong { .. }),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains("maximum, 1d"), "{text}: {err}");
        }
        let year = Duration::from_secs(365 * 86_400);
        assert_eq!(parse_duration("8760h", year), Ok(year));
        assert!(parse_duration("366d", year)
            .expect_err("over a year")
            .to_string()
            .contains("365d"));
    }

    #[test]
    fn maxima_are_written_in_their_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(365 * 86_400)), "365d");
        assert_eq!(format_duration(DAY), "1d");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("16 parsecs").is_err());
    }

    #[test]
    fn interpolation_names_the_missing_variable() {
        assert_eq!(interpolate("plain"), Ok("plain".into()));
        let err = interpolate("${PORTCULLIS_SURELY_UNSET_VAR}").unwrap_err();
        assert!(err.contains("PORTCULLIS_SURELY_UNSET_VAR"));
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(interpolate("x${PATH}y"), Ok(format!("x{path}y")));
        assert!(interpolate("${oops").is_err());
    }

    #[test]
    fn rfc3339_utc_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-12-01T10:00:00Z"), Ok(1_796_119_200));
        assert_eq!(parse_rfc3339("2024-02-29T23:59:59.123Z"), Ok(1_709_251_199));
        for bad in [
            "2026-12-01",
            "2026-12-01T10:00:00",
            "2026-12-01T10:00:00+01:00",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T10:00:00.Z",
            "+026-12-01T10:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
