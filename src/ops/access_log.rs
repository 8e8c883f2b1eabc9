//! One structured access-log line per request (tracing target `access`), and the request
//! metrics recorded at the same moment. Only names, paths and ids are logged: never tokens,
//! passwords, `Authorization` or `Cookie` values, and never the query string.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::header::HeaderValue;
use http::{Method, StatusCode};

use crate::config::LogFormat;
use crate::ops::log_text::{
    push_debug_escaped, push_json_bytes, push_json_plain, push_json_string, push_millis,
    push_socket_addr, push_timestamp, push_u64,
};
use crate::ops::metrics::Metrics;

/// One access-log line: built once, when the response is known, from the request's context.
/// Every field is borrowed; nothing is copied to log a request.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    pub request_id: &'a HeaderValue,
    /// The W3C trace id (32 lowercase hex digits) the request was given or continued.
    pub trace_id: &'a [u8],
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
            trace_id = std::str::from_utf8(self.trace_id).unwrap_or(""),
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
        // Keys carry their punctuation, so each field is one copy plus its value.
        let string = |out: &mut Vec<u8>, key: &[u8], value: &str| {
            out.extend_from_slice(key);
            push_json_string(out, value);
        };
        out.reserve(LINE_CAPACITY);
        out.extend_from_slice(b"{\"timestamp\":\"");
        push_timestamp(out, SystemTime::now());
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"access\"");
        // Written from the bytes: they were checked when the request was given its id, and
        // a second UTF-8 check per request buys nothing.
        out.extend_from_slice(b",\"request_id\":");
        push_json_bytes(out, self.request_id.as_bytes());
        // Hex digits, a method token (hyper refuses others) and a label of ours: nothing to
        // escape in these three.
        out.extend_from_slice(b",\"trace_id\":\"");
        out.extend_from_slice(self.trace_id);
        out.push(b'"');
        out.extend_from_slice(b",\"client\":\"");
        push_socket_addr(out, self.client);
        out.push(b'"');
        out.extend_from_slice(b",\"method\":");
        push_json_plain(out, self.method.as_str());
        string(out, b",\"path\":", self.path);
        string(out, b",\"route\":", self.route);
        string(out, b",\"user\":", self.user);
        out.extend_from_slice(b",\"decision\":");
        push_json_plain(out, self.decision);
        self.render_figures(out, &JSON_KEYS);
        out.extend_from_slice(b"}\n");
    }

    /// The numeric fields both formats end with, in the same order, each key written with
    /// the format's separators.
    fn render_figures(&self, out: &mut Vec<u8>, keys: &FigureKeys) {
        out.extend_from_slice(keys.status);
        push_u64(out, u64::from(self.status.as_u16()));
        if let Some(upstream) = self.upstream_latency {
            out.extend_from_slice(keys.upstream_ms);
            push_millis(out, upstream);
        }
        out.extend_from_slice(keys.headers_ms);
        push_millis(out, self.head);
        out.extend_from_slice(keys.total_ms);
        push_millis(out, self.total);
        if let Some(bytes) = self.bytes_in {
            out.extend_from_slice(keys.bytes_in);
            push_u64(out, bytes);
        }
        if let Some(bytes) = self.bytes_out {
            out.extend_from_slice(keys.bytes_out);
            push_u64(out, bytes);
        }
    }

    /// The line tracing's default formatter would write for the same event.
    fn render_pretty(&self, out: &mut Vec<u8>) {
        let escaped = |out: &mut Vec<u8>, key: &[u8], value: &str| {
            out.extend_from_slice(key);
            push_debug_escaped(out, value);
        };
        out.reserve(LINE_CAPACITY);
        push_timestamp(out, SystemTime::now());
        out.extend_from_slice(b"  INFO access:");
        escaped(out, b" request_id=", self.request_id());
        out.extend_from_slice(b" trace_id=");
        out.extend_from_slice(self.trace_id);
        out.extend_from_slice(b" client=");
        push_socket_addr(out, self.client);
        escaped(out, b" method=", self.method.as_str());
        out.extend_from_slice(b" path=");
        out.extend_from_slice(self.path.as_bytes());
        escaped(out, b" route=", self.route);
        escaped(out, b" user=", self.user);
        out.extend_from_slice(b" decision=\"");
        push_debug_escaped(out, self.decision);
        out.push(b'"');
        self.render_figures(out, &PRETTY_KEYS);
        out.push(b'\n');
    }
}

/// Room for a typical line, reserved once so the field writes below never reallocate.
const LINE_CAPACITY: usize = 512;

/// The keys of the numeric fields, with their format's separators.
struct FigureKeys {
    status: &'static [u8],
    upstream_ms: &'static [u8],
    headers_ms: &'static [u8],
    total_ms: &'static [u8],
    bytes_in: &'static [u8],
    bytes_out: &'static [u8],
}

const JSON_KEYS: FigureKeys = FigureKeys {
    status: b",\"status\":",
    upstream_ms: b",\"upstream_ms\":",
    headers_ms: b",\"headers_ms\":",
    total_ms: b",\"total_ms\":",
    bytes_in: b",\"bytes_in\":",
    bytes_out: b",\"bytes_out\":",
};

const PRETTY_KEYS: FigureKeys = FigureKeys {
    status: b" status=",
    upstream_ms: b" upstream_ms=",
    headers_ms: b" headers_ms=",
    total_ms: b" total_ms=",
    bytes_in: b" bytes_in=",
    bytes_out: b" bytes_out=",
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of an allowed GET; each test changes the fields it is about.
    fn sample(request_id: &HeaderValue) -> AccessRecord<'_> {
        AccessRecord {
            request_id,
            trace_id: b"4bf92f3577b34da6a3ce929d0e0e4736",
            client: "127.0.0.1:1".parse().unwrap(),
            method: &Method::GET,
            path: "/a",
            route: "r",
            user: "u",
            decision: "allow",
            status: StatusCode::OK,
            upstream_latency: None,
            bytes_in: Some(3),
            bytes_out: Some(5),
            head: Duration::from_millis(1),
            total: Duration::from_millis(2),
        }
    }

    #[test]
    fn pretty_line_has_the_fields_of_a_tracing_event_in_order() {
        let request_id = HeaderValue::from_static("abc");
        let record = AccessRecord {
            route: "r\"1",
            upstream_latency: Some(Duration::from_micros(1500)),
            bytes_in: None,
            ..sample(&request_id)
        };
        let mut out = Vec::new();
        record.render_pretty(&mut out);
        let line = String::from_utf8(out).unwrap();
        let (timestamp, rest) = line.split_once("  INFO").unwrap();
        assert!(
            timestamp.ends_with('Z') && timestamp.len() == 27,
            "{timestamp}"
        );
        assert_eq!(
            rest,
            " access: request_id=abc trace_id=4bf92f3577b34da6a3ce929d0e0e4736 \
             client=127.0.0.1:1 method=GET path=/a route=r\\\"1 user=u decision=\"allow\" \
             status=200 upstream_ms=1.500 headers_ms=1.000 total_ms=2.000 bytes_out=5\n"
        );
    }

    #[test]
    fn json_line_escapes_untrusted_fields() {
        let request_id = HeaderValue::from_static("id\"x");
        let record = AccessRecord {
            user: "u\"ser",
            ..sample(&request_id)
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
