//! One structured access-log line per request (tracing target `access`), and the request
//! metrics recorded at the same moment. Only names, paths and ids are logged: never tokens,
//! passwords, `Authorization` or `Cookie` values, and never the query string.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderValue;
use http::{Method, StatusCode};

use crate::config::LogFormat;
use crate::ops::metrics::Metrics;

/// One access-log line: built once, when the response is known, from the request's context.
/// Every field is borrowed; nothing is copied to log a request.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    pub request_id: &'a HeaderValue,
    /// The W3C trace id (32 hex digits) the request was given or continued.
    pub trace_id: &'a str,
    pub client: SocketAddr,
    pub method: &'a Method,
    /// The normalised path (empty when the target was refused before normalising).
    pub path: &'a str,
    /// The matched route's id, or the gateway endpoint's name.
    pub route: &'a str,
    pub user: &'a str,
    pub decision: &'static str,
    pub status: StatusCode,
    pub upstream_latency: Option<Duration>,
    /// Request body size as declared by `Content-Length` (absent when chunked or none).
    pub bytes_in: Option<u64>,
    /// Response body bytes sent (known up front, or counted as a streamed body went out).
    pub bytes_out: Option<u64>,
    /// Until the response head was handed to the connection.
    pub head: Duration,
    /// Until the last body byte was handed to the connection (or the client went away).
    pub total: Duration,
}

impl AccessRecord<'_> {
    /// Record the request's metrics: latency to the response head, as the histograms say.
    pub fn record_metrics(&self, metrics: &Metrics) {
        metrics.request(
            self.route,
            crate::ops::request_stats::method_label(self.method),
            self.decision,
            self.status.as_u16(),
            self.head,
            self.upstream_latency,
        );
    }

    /// Write the log line.
    pub fn write_line(&self) {
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        // Rendered by hand into the serving thread's log buffer: the generic tracing
        // formatter costs more than the rest of the gateway's own per-request work.
        let written = crate::ops::log_buffer::write_line(|out, format| match format {
            LogFormat::Json => self.render_json(out),
            LogFormat::Pretty => self.render_pretty(out),
        });
        if written {
            return;
        }
        tracing::info!(
            target: "access",
            request_id = %self.request_id(),
            trace_id = self.trace_id,
            client = %self.client,
            method = %self.method,
            path = %self.path,
            route = self.route,
            user = %self.user,
            decision = self.decision,
            status = self.status.as_u16(),
            upstream_ms = self.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            headers_ms = self.head.as_secs_f64() * 1000.0,
            total_ms = self.total.as_secs_f64() * 1000.0,
        );
    }
}

impl AccessRecord<'_> {
    /// Request ids are checked to be visible ASCII (or generated), so this never falls back.
    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    fn render_json(&self, out: &mut Vec<u8>) {
        let string = |out: &mut Vec<u8>, key: &str, value: &str| {
            let _ = write!(out, ",\"{key}\":");
            let _ = serde_json::to_writer(&mut *out, value);
        };
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(out, SystemTime::now());
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"access\"");
        string(out, "request_id", self.request_id());
        string(out, "trace_id", self.trace_id);
        let _ = write!(out, ",\"client\":\"{}\"", self.client);
        string(out, "method", self.method.as_str());
        string(out, "path", self.path);
        string(out, "route", self.route);
        string(out, "user", self.user);
        string(out, "decision", self.decision);
        let _ = write!(out, ",\"status\":{}", self.status.as_u16());
        if let Some(upstream) = self.upstream_latency {
            let _ = write!(
                out,
                ",\"upstream_ms\":{:.3}",
                upstream.as_secs_f64() * 1000.0
            );
        }
        let _ = write!(
            out,
            ",\"headers_ms\":{:.3},\"total_ms\":{:.3}",
            self.head.as_secs_f64() * 1000.0,
            self.total.as_secs_f64() * 1000.0
        );
        if let Some(bytes) = self.bytes_in {
            let _ = write!(out, ",\"bytes_in\":{bytes}");
        }
        if let Some(bytes) = self.bytes_out {
            let _ = write!(out, ",\"bytes_out\":{bytes}");
        }
        out.extend_from_slice(b"}\n");
    }

    fn render_pretty(&self, out: &mut Vec<u8>) {
        timestamp(out, SystemTime::now());
        let _ = write!(
            out,
            "  INFO access: request_id={} trace_id={} client={} method={} path={} route={} user={} decision={:?} status={}",
            self.request_id().escape_debug(),
            self.trace_id,
            self.client,
            self.method.as_str().escape_debug(),
            self.path,
            self.route.escape_debug(),
            self.user.escape_debug(),
            self.decision,
            self.status.as_u16()
        );
        if let Some(upstream) = self.upstream_latency {
            let _ = write!(out, " upstream_ms={:.3}", upstream.as_secs_f64() * 1000.0);
        }
        let _ = write!(
            out,
            " headers_ms={:.3} total_ms={:.3}",
            self.head.as_secs_f64() * 1000.0,
            self.total.as_secs_f64() * 1000.0
        );
        if let Some(bytes) = self.bytes_in {
            let _ = write!(out, " bytes_in={bytes}");
        }
        if let Some(bytes) = self.bytes_out {
            let _ = write!(out, " bytes_out={bytes}");
        }
        out.push(b'\n');
    }
}

/// RFC 3339 UTC timestamp with microseconds, e.g. `2026-11-28T21:08:07.737713Z`.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    );
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

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_420), (2025, 11, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn json_line_escapes_untrusted_fields() {
        let request_id = HeaderValue::from_static("id\"x");
        let record = AccessRecord {
            request_id: &request_id,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            client: "127.0.0.1:1".parse().unwrap(),
            method: &Method::GET,
            path: "/a",
            route: "r",
            user: "u\"ser",
            decision: "allow",
            status: StatusCode::OK,
            upstream_latency: None,
            bytes_in: Some(3),
            bytes_out: Some(5),
            head: Duration::from_millis(1),
            total: Duration::from_millis(2),
        };
        let mut out = Vec::new();
        record.render_json(&mut out);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["user"], "u\"ser");
        assert_eq!(line["request_id"], "id\"x");
        assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes_out"], 5);
        assert_eq!(line["target"], "access");
    }
}
