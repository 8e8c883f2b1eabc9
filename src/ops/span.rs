//! One span per request, for export over OTLP. The exporter exists only in a build with the
//! `otlp` cargo feature ([`super::otlp`]); without it every type here is empty and every call
//! a no-op the compiler removes, so the default build's request path does not change.

use std::net::IpAddr;

/// The moments of a request its span records as events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A bearer token was verified.
    Authenticated,
    /// The route let the caller through.
    Authorized,
    /// The route refused the caller (no or bad token, scopes, claims).
    Denied,
    /// The upstream's response head arrived.
    UpstreamHeaders,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Authenticated,
        Phase::Authorized,
        Phase::Denied,
        Phase::UpstreamHeaders,
    ];

    /// The event's name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Authenticated => "authenticated",
            Phase::Authorized => "authorized",
            Phase::Denied => "denied",
            Phase::UpstreamHeaders => "upstream_headers",
        }
    }
}

/// What a request's span says, borrowed from the request's context. Names, ids and the
/// canonical path only: never a token, a header value or the query.
#[derive(Debug)]
pub struct SpanFields<'a> {
    pub trace_id: &'a str,
    /// The gateway's hop: the span id it forwarded upstream in `traceparent`.
    pub span_id: &'a str,
    /// The caller's span id, when it sent a `traceparent`.
    pub parent_span_id: Option<&'a str>,
    pub method: &'a str,
    /// The canonical path (empty when the target was refused before normalising).
    pub path: &'a str,
    /// The matched route's id, or the gateway endpoint's name.
    pub route: &'a str,
    /// The matched route's path pattern (empty when no route matched).
    pub route_pattern: &'a str,
    pub decision: &'static str,
    /// The verified subject, or the account a login named.
    pub user: &'a str,
    pub client: IpAddr,
    pub status: u16,
    pub request_id: &'a str,
}

#[cfg(feature = "otlp")]
pub use super::otlp::{Phases, RequestSpan, SpanSink};
#[cfg(not(feature = "otlp"))]
pub use off::{Phases, RequestSpan, SpanSink};

/// The build without the `otlp` feature: nothing is kept, nothing is sent.
#[cfg(not(feature = "otlp"))]
mod off {
    use super::{Phase, SpanFields};
    use crate::config::OtlpSettings;
    use crate::ops::metrics::Metrics;

    /// No exporter.
    #[derive(Debug, Default)]
    pub struct SpanSink;

    impl SpanSink {
        pub fn start(_: Option<&OtlpSettings>, _: &mut Metrics) -> SpanSink {
            SpanSink
        }

        #[inline(always)]
        pub fn enabled(&self) -> bool {
            false
        }

        #[inline(always)]
        pub fn sample_new_trace(&self) -> bool {
            false
        }

        #[inline(always)]
        pub fn open(&self, _: SpanFields<'_>, _: &Phases) -> Option<RequestSpan> {
            None
        }
    }

    /// No timestamps.
    #[derive(Debug, Default)]
    pub struct Phases;

    impl Phases {
        #[inline(always)]
        pub fn start() -> Phases {
            Phases
        }

        #[inline(always)]
        pub fn mark(&mut self, _: Phase) {}
    }

    /// Never made: `Option<RequestSpan>` is always `None`.
    #[derive(Debug)]
    pub enum RequestSpan {}

    impl RequestSpan {
        pub fn end(self) {
            match self {}
        }
    }
}
