//! Request hygiene that hyper leaves to the gateway (SPEC "Request hygiene"): framing facts
//! from the raw HTTP/1 head, method spelling, one consistent Host, and origin-form targets.

use std::borrow::Cow;

use http::header;
use http::{Request, Version};

use crate::conn::framing::RawHeads;
use crate::error::Failure;
use crate::error::PathError;
use crate::pipeline::context::ConnInfo;
use crate::policy::decision;

/// Request hygiene that hyper leaves to us (SPEC "Request hygiene"). Returns the host used
/// for routing: lowercase, without port or trailing dot.
pub fn check_hygiene<'r, B>(
    request: &'r Request<B>,
    conn: &ConnInfo,
) -> Result<Cow<'r, str>, Failure> {
    // First, for every HTTP/1 request: each takes its own head's facts, in order.
    if let Some(heads) = &conn.heads {
        check_raw_head(heads, request)?;
    }
    decision::check_method(request.method())?;
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(Failure::BadRequest("duplicate Host header"));
    }
    let authority = request.uri().authority().map(|a| a.as_str());
    let host = match (request.version(), host_header, authority) {
        (Version::HTTP_2 | Version::HTTP_3, Some(h), Some(a)) if h.as_bytes() != a.as_bytes() => {
            return Err(Failure::BadRequest("host header differs from :authority"))
        }
        (Version::HTTP_2 | Version::HTTP_3, _, Some(a)) => a,
        (Version::HTTP_2 | Version::HTTP_3, Some(h), None) => h
            .to_str()
            .map_err(|_| Failure::BadRequest("invalid Host header"))?,
        (_, _, Some(_)) => return Err(Failure::BadTarget(PathError::NotOriginForm)),
        (_, Some(h), None) => h
            .to_str()
            .map_err(|_| Failure::BadRequest("invalid Host header"))?,
        // HTTP/1.0 may omit Host; it then matches only rules without `host:`.
        (Version::HTTP_10 | Version::HTTP_09, None, None) => return Ok(Cow::Borrowed("")),
        (_, None, None) => return Err(Failure::BadRequest("missing Host header")),
    };
    decision::routing_host(host)
}

/// Framing facts hyper hides (SPEC "Request hygiene"): `Content-Length` with
/// `Transfer-Encoding`, and a raw `#` in the target.
fn check_raw_head<B>(heads: &RawHeads, request: &Request<B>) -> Result<(), Failure> {
    let path_and_query = request.uri().path_and_query().map(|pq| pq.as_str());
    let facts = heads
        .take(request.method().as_str(), path_and_query)
        // The scanner lost step with hyper: refuse rather than judge by another head.
        .ok_or(Failure::AmbiguousFraming)?;
    if facts.ambiguous_framing {
        return Err(Failure::AmbiguousFraming);
    }
    if facts.fragment {
        return Err(Failure::BadTarget(PathError::Fragment));
    }
    Ok(())
}

/// HTTP/2 always carries :scheme and :authority; in HTTP/1 they mean absolute-form, which
/// the gateway refuses (SPEC "Normalisation").
pub fn check_target_form<B>(request: &Request<B>) -> Result<(), Failure> {
    let uri = request.uri();
    let is_h1 = request.version() < Version::HTTP_2;
    if is_h1 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(Failure::BadTarget(PathError::NotOriginForm));
    }
    Ok(())
}
