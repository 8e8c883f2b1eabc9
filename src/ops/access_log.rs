//! One structured access-log line per request (tracing target `access`), and the request
//! metrics recorded at the same moment. Only names, paths and ids are logged: never tokens,
//! passwords, `Authorization` or `Cookie` values, and never the query string.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::header::HeaderValue;
use http::{Method, StatusCode};

use crate::config::LogFormat;
use crate::ops::log_text::{
    push_debug_escaped, push_json_string, push_millis, push_socket_addr, push_timestamp, push_u64,
};
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
        let field = |out: &mut Vec<u8>, key: &str| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
        };
        let string = |out: &mut Vec<u8>, key: &str, value: &str| {
            field(out, key);
            push_json_string(out, value);
        };
        out.extend_from_slice(b"{\"timestamp\":\"");
        push_timestamp(out, SystemTime::now());
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"access\"");
        string(out, "request_id", self.request_id());
        string(out, "trace_id", self.trace_id);
        field(out, "client");
        out.push(b'"');
        push_socket_addr(out, self.client);
        out.push(b'"');
        string(out, "method", self.method.as_str());
        string(out, "path", self.path);
        string(out, "route", self.route);
        string(out, "user", self.user);
        string(out, "decision", self.decision);
        self.render_figures(out, field);
        out.extend_from_slice(b"}\n");
    }

    /// The numeric fields both formats end with, in the same order; `field` writes a key
    /// with the format's separators.
    fn render_figures(&self, out: &mut Vec<u8>, field: impl Fn(&mut Vec<u8>, &str)) {
        field(out, "status");
        push_u64(out, u64::from(self.status.as_u16()));
        if let Some(upstream) = self.upstream_latency {
            field(out, "upstream_ms");
            push_millis(out, upstream);
        }
        field(out, "headers_ms");
        push_millis(out, self.head);
        field(out, "total_ms");
        push_millis(out, self.total);
        if let Some(bytes) = self.bytes_in {
            field(out, "bytes_in");
            push_u64(out, bytes);
        }
        if let Some(bytes) = self.bytes_out {
            field(out, "bytes_out");
            push_u64(out, bytes);
        }
    }

    /// The line tracing's default formatter would write for the same event.
    fn render_pretty(&self, out: &mut Vec<u8>) {
        let field = |out: &mut Vec<u8>, key: &str| {
            out.push(b' ');
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
        };
        let escaped = |out: &mut Vec<u8>, key: &str, value: &str| {
            field(out, key);
            push_debug_escaped(out, value);
        };
        let verbatim = |out: &mut Vec<u8>, key: &str, value: &str| {
            field(out, key);
            out.extend_from_slice(value.as_bytes());
        };
        push_timestamp(out, SystemTime::now());
        out.extend_from_slice(b"  INFO access:");
        escaped(out, "request_id", self.request_id());
        verbatim(out, "trace_id", self.trace_id);
        field(out, "client");
        push_socket_addr(out, self.client);
        escaped(out, "method", self.method.as_str());
        verbatim(out, "path", self.path);
        escaped(out, "route", self.route);
        escaped(out, "user", self.user);
        field(out, "decision");
        out.push(b'"');
        push_debug_escaped(out, self.decision);
        out.push(b'"');
        self.render_figures(out, field);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
