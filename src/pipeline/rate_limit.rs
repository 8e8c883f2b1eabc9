//! The rate-limit phase of a proxied request: count it against its route's `rate_limit:` for
//! the verified caller (per issuer) or, anonymous, the client address; refuse with 429 and
//! the IETF `RateLimit` headers, or let it through (with them, if the route asks).

use std::sync::Arc;

use http::header::HeaderValue;

use crate::auth::bearer::Identity;
use crate::auth::rate_limit::{whole_seconds, Caller};
use crate::error::Failure;
use crate::forward::headers;
use crate::pipeline::context::ConnInfo;
use crate::policy::rate_limit::{RateLimit, Verdict};
use crate::policy::routes::Route;
use crate::state::{Shared, Snapshot};

/// `RateLimit-Policy` and `RateLimit` values to add to an allowed response.
pub type RateHeaders = (HeaderValue, HeaderValue);

/// Count this request. `Ok(Some(..))`: allowed, and the route wants the headers sent.
pub fn check(
    shared: &Shared,
    snapshot: &Snapshot,
    route: &Route,
    identity: Option<&Arc<Identity>>,
    conn: &ConnInfo,
    request_headers: &http::HeaderMap,
) -> Result<Option<RateHeaders>, Failure> {
    let Some(limit) = route.rate_limit.as_deref() else {
        return Ok(None);
    };
    let caller = match identity {
        Some(identity) => Caller::Subject {
            issuer: identity.issuer_name(),
            subject: &identity.token.subject,
        },
        // The address as the trusted proxies report it, never a header the client chose.
        None => Caller::Address(headers::client_address(
            request_headers,
            conn.peer.ip(),
            |ip| snapshot.config.is_trusted_proxy(ip),
        )),
    };
    let verdict = shared.rate_limits.check(&route.id, caller, limit);
    if let (Some(Verdict::Allow { .. }), Some(state)) = (&verdict, shared.fleet.redis()) {
        // Shared with the fleet by the next sync; this request does not wait for it.
        state
            .rates
            .note(&shared.rate_limits, &route.id, caller, limit);
    }
    match verdict {
        // Full of live callers: refuse rather than stop counting.
        None => Err(Failure::Saturated {
            retry_after_secs: 1,
        }),
        Some(Verdict::Deny { retry_after }) => {
            let seconds = whole_seconds(retry_after);
            Err(Failure::OverRouteLimit {
                retry_after_secs: seconds,
                policy: policy_header(&route.id, limit),
                state: state_header(&route.id, 0, seconds),
            })
        }
        Some(Verdict::Allow {
            remaining, reset, ..
        }) if limit.headers => Ok(Some((
            policy_header(&route.id, limit),
            state_header(&route.id, remaining, whole_seconds(reset)),
        ))),
        Some(Verdict::Allow { .. }) => Ok(None),
    }
}

/// `"<route>";q=<requests>;w=<window seconds>`.
fn policy_header(id: &str, limit: &RateLimit) -> HeaderValue {
    let window = whole_seconds(limit.period).max(1);
    structured(format!(
        "\"{}\";q={};w={window}",
        sf_string(id),
        limit.requests
    ))
}

/// `"<route>";r=<remaining>;t=<seconds until reset>`.
fn state_header(id: &str, remaining: u32, reset_secs: u64) -> HeaderValue {
    structured(format!(
        "\"{}\";r={remaining};t={reset_secs}",
        sf_string(id)
    ))
}

fn structured(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("\"default\""))
}

/// A route id as a structured-field string body: printable ASCII, quotes and backslashes
/// escaped (RFC 8941 §3.3.3); anything else dropped.
fn sf_string(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn headers_follow_the_ietf_structured_form() {
        let limit = RateLimit {
            requests: 10,
            period: Duration::from_secs(60),
            burst: 10,
            headers: true,
        };
        assert_eq!(policy_header("api", &limit), "\"api\";q=10;w=60");
        assert_eq!(state_header("api", 3, 12), "\"api\";r=3;t=12");
        assert_eq!(
            state_header("a\"b\\c\u{7}é", 0, 1),
            "\"a\\\"b\\\\c\";r=0;t=1"
        );
    }
}
