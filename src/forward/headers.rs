//! Header hygiene between client and upstream: hop-by-hop removal, gateway-owned header
//! stripping, `X-Forwarded-*` and identity headers, and a redacting `Debug` for logs.
//!
//! The upstream request is built by *removing* everything the client must not control and
//! only then *adding* the gateway's own values, so no ordering of client headers can make a
//! client value survive next to (or instead of) a gateway value.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};

/// The identity headers the upstream may trust.
pub const FORWARDED_USER: HeaderName = HeaderName::from_static("x-forwarded-user");
pub const FORWARDED_SCOPES: HeaderName = HeaderName::from_static("x-forwarded-scopes");
/// Which issuer vouched for the user: `local` or a name under `issuers:`.
pub const FORWARDED_ISSUER: HeaderName = HeaderName::from_static("x-forwarded-issuer");
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// RFC 9110 §7.6.1 hop-by-hop headers plus framing, which the gateway sets itself.
///
/// These lists are `match`es rather than slices searched in turn: every header of every
/// request is checked against all of them, and a `match` on a string compares only the
/// candidates of the same length.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
            | "content-length"
    )
}

/// Headers that only the gateway may set, or that make an upstream re-route or re-method a
/// request after the gateway authorised it (override headers, framework internals), and the
/// gateway-owned header families by prefix.
pub fn is_gateway_owned(name: &str) -> bool {
    let named = matches!(
        name,
        "forwarded"
            | "x-real-ip"
            | "true-client-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "client-ip"
            | "x-original-url"
            | "x-original-uri"
            | "x-rewrite-url"
            | "x-original-method"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-middleware-subrequest"
            | "x-remote-user"
            | "remote-user"
    );
    named
        || name.strip_prefix("x-").is_some_and(|rest| {
            [
                "forwarded-",
                "envoy-",
                "gateway-",
                "portcullis-",
                "auth-request-",
            ]
            .iter()
            .any(|family| rest.starts_with(family))
        })
}

/// Headers a client may list in `Connection` without that removing them: framing, routing and
/// credentials are decided by the gateway, never dropped at a client's request.
fn connection_may_remove(name: &str) -> bool {
    !matches!(
        name,
        "host" | "authorization" | "content-length" | "transfer-encoding" | "te"
    ) && !is_gateway_owned(name)
}

/// Remove the headers a message's `Connection` field lists (RFC 9110 §7.6.1), except those
/// `may_remove` protects.
fn remove_named_by_connection(headers: &mut HeaderMap, may_remove: impl Fn(&HeaderName) -> bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| {
            HeaderName::from_bytes(token.trim().to_ascii_lowercase().as_bytes()).ok()
        })
        .filter(|name| may_remove(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// Remove from a client's request every header the upstream must not receive from the client.
///
/// Names containing `_` are dropped altogether (as nginx does by default): many frameworks
/// map `X_Forwarded_User` onto `X-Forwarded-User`, so they cannot be told apart safely.
pub fn strip_request(headers: &mut HeaderMap) {
    remove_named_by_connection(headers, |name| connection_may_remove(name.as_str()));
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            is_hop_by_hop(name) || is_gateway_owned(name) || name.as_bytes().contains(&b'_')
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Remove hop-by-hop headers from an upstream response before it goes to the client
/// (HTTP/2 clients would treat them as a protocol error).
pub fn strip_response(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        remove_named_by_connection(headers, |name| {
            !matches!(name.as_str(), "content-length" | "content-type")
        });
    }
    // One look at each name; most responses carry none of these, and then nothing is built.
    let hop_by_hop =
        |name: &HeaderName| name != header::CONTENT_LENGTH && is_hop_by_hop(name.as_str());
    if headers.keys().any(hop_by_hop) {
        let doomed: Vec<HeaderName> = headers.keys().filter(|n| hop_by_hop(n)).cloned().collect();
        for name in doomed {
            headers.remove(name);
        }
    }
}

/// Build the `X-Forwarded-For` value. Behind a trusted proxy its chain is kept, written as
/// bare addresses and cut at the first entry from the right that is not one (nothing left of
/// it is believed), then the peer appended; otherwise the peer address alone.
pub fn forwarded_for(headers: &HeaderMap, peer: IpAddr, peer_trusted: bool) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail. The chain is only collected behind a trusted proxy, so
    // the common case costs one allocation.
    if peer_trusted {
        let mut chain: Vec<IpAddr> = forwarded_entries(headers)
            .rev()
            .map_while(parse_hop)
            .collect();
        chain.reverse();
        for hop in chain {
            let _ = write!(out, "{hop}, ");
        }
    }
    let _ = write!(out, "{peer}");
    out
}

/// The address login regulation keys on: the socket peer, or behind trusted proxies the
/// rightmost hop that is not itself a trusted proxy.
///
/// The walk stops at an entry that is not an address: nothing to its left is believed, and
/// as its real address is unknown, the proxy that reported it stands for it.
pub fn client_address(
    headers: &HeaderMap,
    peer: IpAddr,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded_entries(headers).rev() {
        match parse_hop(entry) {
            Some(ip) if is_trusted(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// Every `X-Forwarded-For` list element in order, over all lines; empty elements are
/// skipped as HTTP list syntax allows (RFC 9110 §5.6.1).
fn forwarded_entries(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &[u8]> {
    headers
        .get_all(&FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|entry| !entry.is_empty())
}

/// One `X-Forwarded-For` element as a proxy writes it: `1.2.3.4`, `1.2.3.4:5678`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`. IPv4-mapped IPv6 is read as IPv4
/// so it meets the same `trusted_proxies` ranges and lockout keys.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let ip = match entry.strip_prefix('[') {
        Some(rest) => {
            let (inside, after) = rest.split_once(']')?;
            if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
                return None;
            }
            IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
        }
        None => {
            let (host, port) = entry.split_once(':')?;
            if !is_port(port) {
                return None;
            }
            IpAddr::V4(host.parse::<Ipv4Addr>().ok()?)
        }
    };
    Some(ip.to_canonical())
}

/// A TCP port in decimal.
fn is_port(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

/// Join several `cookie` fields into one with `; ` (RFC 9113 §8.2.3): an HTTP/2 client may
/// split its cookies, but an HTTP/1.1 message carries at most one `Cookie` line.
pub fn join_cookie_fields(headers: &mut HeaderMap) -> Result<(), InvalidHeaderValue> {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return Ok(());
    };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    let joined = HeaderValue::from_bytes(&joined)?;
    headers.insert(header::COOKIE, joined);
    Ok(())
}

/// The client's `X-Request-Id` when it is a sane token, otherwise a fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = uuid::Uuid::new_v4().hyphenated();
            shared_value(id.encode_lower(&mut text).as_bytes())
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}

/// A header value holding `bytes` in one allocation that all its clones share.
///
/// `HeaderValue::from_bytes` copies into a buffer that its first clone then moves into a
/// second, shared allocation. Values the gateway makes and then sends in several places (the
/// request id, an HTTP/2 client's host) are cloned at least once, so this saves an allocation
/// and its free on every request.
pub fn shared_value(bytes: &[u8]) -> Result<HeaderValue, InvalidHeaderValue> {
    match InlineValue::new(bytes) {
        Some(inline) => HeaderValue::from_maybe_shared(Bytes::from_owner(inline)),
        None => HeaderValue::from_bytes(bytes),
    }
}

/// A short value's bytes, kept inside the allocation `Bytes::from_owner` makes anyway.
struct InlineValue {
    bytes: [u8; InlineValue::CAPACITY],
    len: usize,
}

impl InlineValue {
    /// Long enough for a UUID and for nearly every host name.
    const CAPACITY: usize = 64;

    fn new(value: &[u8]) -> Option<Self> {
        let mut bytes = [0; Self::CAPACITY];
        bytes.get_mut(..value.len())?.copy_from_slice(value);
        Some(InlineValue {
            bytes,
            len: value.len(),
        })
    }
}

impl AsRef<[u8]> for InlineValue {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Headers whose values never appear in logs.
fn is_sensitive(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | "x-api-key"
    )
}

/// `Debug` for a header map that prints `[redacted]` for credentials.
pub struct Redacted<'a>(pub &'a HeaderMap);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_sensitive(name) {
                map.entry(&name.as_str(), &"[redacted]");
            } else {
                map.entry(&name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_values_hold_their_bytes_once_and_refuse_what_from_bytes_refuses() {
        let id = shared_value(b"4bf92f35-77b3-4da6-a3ce-929d0e0e4736").unwrap();
        let copy = id.clone();
        assert_eq!(copy, "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
        // The clone points at the same bytes: nothing was copied or moved.
        assert_eq!(id.as_bytes().as_ptr(), copy.as_bytes().as_ptr());
        let long = "h".repeat(300);
        assert_eq!(shared_value(long.as_bytes()).unwrap(), long.as_str());
        assert_eq!(shared_value(b"").unwrap(), "");
        for bad in [
            &b"a\r\nx-forwarded-user: admin"[..],
            b"nul\0",
            &[b'x'; 65][..64],
        ] {
            assert_eq!(
                shared_value(bad).is_ok(),
                HeaderValue::from_bytes(bad).is_ok(),
                "{bad:?}"
            );
        }
        assert!(shared_value(b"a\nb").is_err());
        assert!(shared_value(format!("{long}\n").as_bytes()).is_err());
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_identity_forwarding_override_and_underscore_headers() {
        let mut h = map(&[
            ("x-forwarded-user", "root"),
            ("X-FORWARDED-USER", "root2"),
            ("x_forwarded_user", "root3"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/admin"),
            ("x-envoy-original-path", "/admin"),
            ("x-middleware-subrequest", "middleware"),
            ("accept", "text/plain"),
        ]);
        strip_request(&mut h);
        assert_eq!(h.len(), 1, "{:?}", Redacted(&h));
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn connection_cannot_remove_host_or_authorization_but_removes_listed_headers() {
        let mut h = map(&[
            (
                "connection",
                "close, x-custom, Authorization, Host, X-Forwarded-User",
            ),
            ("x-custom", "1"),
            ("authorization", "Bearer t"),
            ("host", "gw.test"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eDp5"),
        ]);
        strip_request(&mut h);
        assert!(!h.contains_key("x-custom"));
        assert!(!h.contains_key("connection"));
        assert!(!h.contains_key("keep-alive"));
        assert!(!h.contains_key("te"));
        assert!(!h.contains_key("proxy-authorization"));
        assert!(h.contains_key("authorization"));
        assert!(h.contains_key("host"));
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_believes_only_trusted_peers() {
        let peer = ip("10.0.0.1");
        let h = map(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(forwarded_for(&h, peer, false), "10.0.0.1");
        assert_eq!(forwarded_for(&h, peer, true), "1.1.1.1, 10.0.0.1");
        assert_eq!(forwarded_for(&map(&[]), peer, true), "10.0.0.1");
    }

    #[test]
    fn forwarded_for_joins_lines_drops_ports_and_cuts_at_an_unparsable_hop() {
        let peer = ip("10.0.0.1");
        let h = map(&[
            ("x-forwarded-for", "1.1.1.1:80, [2001:db8::1]:443"),
            ("x-forwarded-for", "2001:db8::2,, ::ffff:2.2.2.2"),
        ]);
        assert_eq!(
            forwarded_for(&h, peer, true),
            "1.1.1.1, 2001:db8::1, 2001:db8::2, 2.2.2.2, 10.0.0.1"
        );
        let h = map(&[("x-forwarded-for", "6.6.6.6, unknown, 3.3.3.3")]);
        assert_eq!(forwarded_for(&h, peer, true), "3.3.3.3, 10.0.0.1");
        let h = map(&[("x-forwarded-for", "6.6.6.6, 3.3.3.3:99999")]);
        assert_eq!(forwarded_for(&h, peer, true), "10.0.0.1");
    }

    #[test]
    fn parse_hop_reads_the_forms_proxies_write_and_nothing_else() {
        for (entry, want) in [
            ("1.2.3.4", "1.2.3.4"),
            ("1.2.3.4:5678", "1.2.3.4"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("::ffff:1.2.3.4", "1.2.3.4"),
            ("[::ffff:1.2.3.4]:1", "1.2.3.4"),
        ] {
            assert_eq!(parse_hop(entry.as_bytes()), Some(ip(want)), "{entry}");
        }
        for entry in [
            "unknown",
            "_hidden",
            "host.example",
            "host.example:80",
            "1.2.3.4:",
            "1.2.3.4:+1",
            "1.2.3.4:65536",
            "1.2.3.4:80:80",
            "1.2.3",
            "[1.2.3.4]:80",
            "[2001:db8::1]443",
            "[2001:db8::1]:",
            "[2001:db8::1",
            "2001:db8::1:443:x",
            "for=1.2.3.4",
        ] {
            assert_eq!(parse_hop(entry.as_bytes()), None, "{entry}");
        }
        assert_eq!(parse_hop(b"1.2.3.4\xff"), None);
    }

    #[test]
    fn client_address_takes_rightmost_untrusted_hop() {
        let h = map(&[
            ("x-forwarded-for", "9.9.9.9, 8.8.8.8"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        assert_eq!(client_address(&h, ip("10.0.0.1"), trusted), ip("8.8.8.8"));
        assert_eq!(client_address(&h, ip("7.7.7.7"), trusted), ip("7.7.7.7"));
    }

    #[test]
    fn client_address_reads_port_forms_and_never_skips_an_unparsable_hop() {
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let peer = ip("10.0.0.1");
        let at = |xff: &str| client_address(&map(&[("x-forwarded-for", xff)]), peer, trusted);
        assert_eq!(at("6.6.6.6, 8.8.8.8:5678"), ip("8.8.8.8"));
        assert_eq!(
            at("6.6.6.6, [2001:db8::8]:443, 10.0.0.2:1"),
            ip("2001:db8::8")
        );
        assert_eq!(at("6.6.6.6, 2001:db8::8"), ip("2001:db8::8"));
        // The proxy that wrote the unparsable hop stands for it; 6.6.6.6 is never believed.
        assert_eq!(at("6.6.6.6, unknown"), peer);
        assert_eq!(at("6.6.6.6, garbage, 10.0.0.2"), ip("10.0.0.2"));
        assert_eq!(at("6.6.6.6, 8.8.8.8:99999"), peer);
        // Every hop trusted: the leftmost is the client as far as anyone can tell.
        assert_eq!(at("10.0.0.3, 10.0.0.2"), ip("10.0.0.3"));
        assert_eq!(at(""), peer);
    }

    #[test]
    fn client_address_stops_at_a_line_that_is_not_text() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6")]);
        h.append(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(
            client_address(&h, ip("10.0.0.1"), |ip| ip.to_string().starts_with("10.")),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn cookie_fields_are_joined_into_one_in_order() {
        let mut h = map(&[("cookie", "a=1"), ("accept", "x"), ("cookie", "b=2; c=3")]);
        join_cookie_fields(&mut h).unwrap();
        let cookies: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(cookies, vec!["a=1; b=2; c=3"]);
        assert!(h.contains_key("accept"));

        let mut single = map(&[("cookie", "a=1")]);
        join_cookie_fields(&mut single).unwrap();
        assert_eq!(single.get_all("cookie").iter().count(), 1);
        let mut none = map(&[("accept", "x")]);
        join_cookie_fields(&mut none).unwrap();
        assert!(!none.contains_key("cookie"));
    }

    #[test]
    fn redacted_debug_hides_credentials() {
        let h = map(&[
            ("authorization", "Bearer secret-token"),
            ("cookie", "sid=abc"),
            ("accept", "x"),
        ]);
        let shown = format!("{:?}", Redacted(&h));
        assert!(!shown.contains("secret-token") && !shown.contains("sid=abc"));
        assert!(shown.contains("accept"));
    }

    #[test]
    fn request_id_is_kept_when_sane_and_generated_otherwise() {
        assert_eq!(request_id(&map(&[("x-request-id", "abc-123")])), "abc-123");
        let generated = request_id(&map(&[("x-request-id", "has space")]));
        assert_eq!(generated.len(), 36);
    }
}
