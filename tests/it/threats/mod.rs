//! Rows of the threat catalogue (THREATS.md) that no other test file covers: malformed header
//! syntax (H-13, H-14), OPTIONS on protected routes (P-20), HTTP/2 frames a well-behaved client
//! cannot send (T-08, S-10, R-07… ), the connection cap, token lifetime, key
//! rotation and ECDSA forgeries (J-09, J-12, J-21, J-22), login timing (L-03) and TLS properties
//! . Black-box: the oracle is the pair (what the client got, what the recording
//! upstream received).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod exhaustion;
mod headers;
mod jwt;
mod login;
mod paths;
mod raw_h2;
mod smuggling;
mod tls;

use crate::common::*;

use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Raw bytes over TLS (HTTP/1.1), parsed.
async fn h1_raw(gw: &Gateway, request: &[u8]) -> Answer {
    parse_raw(&gw.h1().raw(request, Duration::from_secs(2)).await)
}

/// Assert a refusal with this status that never reached the upstream.
fn assert_refused(label: &str, answer: &Answer, up: &Upstream, code: u16) {
    assert_eq!(
        answer.status, code,
        "{label}: expected {code}, got {answer:?}"
    );
    assert_eq!(
        up.count(),
        0,
        "{label}: reached the upstream: {:?}",
        up.seen()
    );
}
