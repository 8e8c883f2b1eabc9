//! W3C Trace Context (`traceparent`, `tracestate`): the gateway is one hop of the trace. A
//! request carrying a valid `traceparent` continues its trace with a new span id for this
//! hop; one without (or with an invalid one) starts a new trace, and its `tracestate` is
//! dropped (W3C Trace Context §3.3.1: state means nothing without its parent). Fixed-size
//! arrays throughout: no allocation until the header value is built.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::RngCore;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// This hop's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    trace_id: [u8; 32],
    /// This hop's span id, 16 lowercase hex digits.
    span_id: [u8; 16],
    /// The caller's span id, when it sent a valid `traceparent`.
    parent_id: Option<[u8; 16]>,
    /// Two hex digits (`01` = sampled).
    flags: [u8; 2],
}

impl TraceContext {
    /// Continue the request's trace, or start one.
    pub fn for_request(headers: &HeaderMap) -> TraceContext {
        let mut rng = rand::rng();
        let span_id = random_hex::<8, 16>(&mut rng);
        match incoming(headers) {
            Some((trace_id, parent_id, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_id: Some(parent_id),
                flags,
            },
            None => TraceContext {
                trace_id: random_hex::<16, 32>(&mut rng),
                span_id,
                parent_id: None,
                flags: *b"00",
            },
        }
    }

    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or("")
    }

    /// The trace id's 32 lowercase hex digits, for writers of bytes (no UTF-8 check).
    pub fn trace_id_hex(&self) -> &[u8] {
        &self.trace_id
    }

    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or("")
    }

    /// Whether the request arrived with a valid `traceparent` (its `tracestate` then stays).
    pub fn continued(&self) -> bool {
        self.parent_id.is_some()
    }

    /// The caller's span id, when it sent a valid `traceparent`.
    pub fn parent_id(&self) -> Option<&str> {
        self.parent_id
            .as_ref()
            .and_then(|id| std::str::from_utf8(id).ok())
    }

    /// Whether the sampled flag is set: the caller's, or this gateway's for a new trace.
    pub fn sampled(&self) -> bool {
        matches!(
            self.flags[1],
            b'1' | b'3' | b'5' | b'7' | b'9' | b'b' | b'd' | b'f'
        )
    }

    /// Record this gateway's sampling decision for a trace it started (a caller's flags are
    /// its own and stay as they came).
    pub fn set_sampled(&mut self, sampled: bool) {
        if !self.continued() {
            self.flags = if sampled { *b"01" } else { *b"00" };
        }
    }

    /// `traceparent` for the upstream: this trace, this hop's span.
    pub fn traceparent(&self) -> HeaderValue {
        let mut value = [0u8; TRACEPARENT_LEN];
        value[..3].copy_from_slice(b"00-");
        value[3..35].copy_from_slice(&self.trace_id);
        value[35] = b'-';
        value[36..52].copy_from_slice(&self.span_id);
        value[52] = b'-';
        value[53..].copy_from_slice(&self.flags);
        HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Set this hop's trace headers on a request about to go upstream.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent());
        if !self.continued() {
            headers.remove(TRACESTATE);
        }
    }
}

/// The caller's (trace id, span id, flags), if it sent exactly one valid `traceparent`.
fn incoming(headers: &HeaderMap) -> Option<([u8; 32], [u8; 16], [u8; 2])> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() {
        return None;
    }
    // Version 00 is exactly 55 bytes; a later version may append `-…` fields (§4.3).
    if value.len() < TRACEPARENT_LEN
        || (value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-')
    {
        return None;
    }
    let version = &value[0..2];
    if !lower_hex(version)
        || version == b"ff"
        || (version == b"00" && value.len() != TRACEPARENT_LEN)
    {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    if !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) {
        return None;
    }
    if trace.iter().all(|b| *b == b'0') || parent.iter().all(|b| *b == b'0') {
        return None;
    }
    Some((
        trace.try_into().ok()?,
        parent.try_into().ok()?,
        flags.try_into().ok()?,
    ))
}

fn lower_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `N` random bytes as `H` (= 2N) lowercase hex digits, never all zero.
fn random_hex<const N: usize, const H: usize>(rng: &mut impl RngCore) -> [u8; H] {
    let mut bytes = [0u8; N];
    while bytes.iter().all(|b| *b == 0) {
        rng.fill_bytes(&mut bytes);
    }
    let mut hex = [0u8; H];
    for (i, byte) in bytes.iter().enumerate() {
        hex[2 * i] = HEX[usize::from(byte >> 4)];
        hex[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(TRACEPARENT, HeaderValue::from_str(v).expect("value"));
        }
        h.insert(
            TRACESTATE,
            HeaderValue::from_static("rojo=00f067aa0ba902b7"),
        );
        h
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let trace = TraceContext::for_request(&with(&[PARENT]));
        assert!(trace.continued());
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace.span_id(), "00f067aa0ba902b7");
        let out = trace.traceparent();
        let out = out.to_str().expect("ascii");
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "{out}");
        let mut headers = with(&[PARENT]);
        trace.apply(&mut headers);
        assert_eq!(headers.get_all(TRACEPARENT).iter().count(), 1);
        assert!(
            headers.contains_key(TRACESTATE),
            "state travels with its trace"
        );
    }

    #[test]
    fn anything_else_starts_a_new_trace_and_drops_the_state() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "",
        ] {
            let trace = TraceContext::for_request(&with(&[bad]));
            assert!(!trace.continued(), "{bad}");
            assert_ne!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
            let mut headers = with(&[bad]);
            trace.apply(&mut headers);
            assert!(!headers.contains_key(TRACESTATE), "{bad}");
        }
        // Two traceparent fields: ambiguous, a new trace.
        assert!(!TraceContext::for_request(&with(&[PARENT, PARENT])).continued());
        // A later version with extra fields is read by its version-00 prefix.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abcd";
        assert!(TraceContext::for_request(&with(&[future])).continued());
    }

    #[test]
    fn the_sampled_flag_is_the_callers_or_the_gateways_own_for_a_new_trace() {
        let mut continued = TraceContext::for_request(&with(&[PARENT]));
        assert!(continued.sampled());
        assert_eq!(continued.parent_id(), Some("00f067aa0ba902b7"));
        continued.set_sampled(false);
        assert!(continued.sampled(), "the caller's flag stays");
        let unsampled = PARENT.replace("-01", "-00");
        assert!(!TraceContext::for_request(&with(&[&unsampled])).sampled());
        let mut new = TraceContext::for_request(&HeaderMap::new());
        assert!(!new.sampled());
        assert_eq!(new.parent_id(), None);
        new.set_sampled(true);
        assert!(new.sampled());
        assert!(new.traceparent().to_str().expect("ascii").ends_with("-01"));
    }

    #[test]
    fn new_ids_are_lowercase_hex_of_the_right_length() {
        let trace = TraceContext::for_request(&HeaderMap::new());
        assert_eq!(trace.trace_id().len(), 32);
        assert_eq!(trace.span_id().len(), 16);
        assert!(lower_hex(trace.trace_id().as_bytes()));
        assert_eq!(trace.traceparent().len(), TRACEPARENT_LEN);
    }
}
