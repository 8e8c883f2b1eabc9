//! Forwarding to upstream apps: the exchange under the upstream's response deadline (over
//! this thread's pooled connections, [`client`]), error classification, and rewriting the
//! upstream's own URLs in the response.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::time::Timeout;

use crate::config::{Upstream, UpstreamTarget};
use crate::error::Failure;
use crate::forward::client::{self, ConnectError, Origin, SendError};
use crate::forward::request_body::{BodyError, GuardedBody};

/// Send `request` to `upstream`; the future resolves with its response head, within the
/// upstream's timeout. The response body is streamed by the caller.
pub fn forward(
    upstream: &Upstream,
    request: Request<GuardedBody>,
) -> Result<Forwarding<'_, impl Future<Output = Result<Response<Incoming>, SendError>> + '_>, Failure>
{
    let UpstreamTarget::Http { authority, tls, .. } = &upstream.target else {
        // The echo upstream is answered before anything is forwarded.
        return Err(Failure::Internal);
    };
    let origin = Origin {
        authority,
        tls: tls.as_ref(),
        connect_timeout: upstream.connect_timeout,
    };
    Ok(Forwarding {
        exchange: tokio::time::timeout(upstream.timeout, client::send(origin, request)),
        upstream,
    })
}

pin_project_lite::pin_project! {
    /// A request on its way to an upstream, from [`forward`], under the upstream's deadline.
    pub struct Forwarding<'u, S> {
        #[pin]
        exchange: Timeout<S>,
        upstream: &'u Upstream,
    }
}

impl<S> std::fmt::Debug for Forwarding<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarding")
            .field("upstream", &self.upstream.name)
            .finish_non_exhaustive()
    }
}

impl<S> Future for Forwarding<'_, S>
where
    S: Future<Output = Result<Response<Incoming>, SendError>>,
{
    type Output = Result<Response<Incoming>, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.exchange.poll(cx)) {
            Err(_elapsed) => Err(Failure::UpstreamTimeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => {
                if let Some(tls) = tls_error(&err) {
                    // rustls says what failed (unknown issuer, name mismatch, an alert such as
                    // "certificate required"); it never carries key material.
                    tracing::warn!(upstream = %this.upstream.name, error = %tls, "upstream TLS failed");
                }
                Err(classify(&err))
            }
        })
    }
}

/// The rustls error somewhere in `err`'s causes. `io::Error::source` skips the error it
/// wraps, so wrapped errors are looked at through `get_ref` too.
fn tls_error<'e>(err: &'e (dyn StdError + 'static)) -> Option<&'e rustls::Error> {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(tls) = tls_error(inner) {
                return Some(tls);
            }
        }
        cause = current.source();
    }
    None
}

/// A failure of the client's own request body (too slow, too large, broken framing) is the
/// client's fault and aborted the upstream request: 408/413/400. Otherwise connect timeouts
/// are 504 (the upstream did not answer in time), and everything else is 502.
fn classify(err: &SendError) -> Failure {
    if let Some(body) = BodyError::find_in(err) {
        return Failure::from(body);
    }
    match err {
        SendError::Connect(ConnectError::TimedOut) => Failure::UpstreamTimeout,
        SendError::Connect(ConnectError::Io(io)) if io.kind() == std::io::ErrorKind::TimedOut => {
            Failure::UpstreamTimeout
        }
        _ => {
            tracing::debug!(error = %err, "upstream request failed");
            Failure::UpstreamUnavailable
        }
    }
}

/// Response headers that may carry the upstream's own URL back to the client.
const URL_HEADERS: [HeaderName; 2] = [header::LOCATION, header::CONTENT_LOCATION];

/// Point `Location` / `Content-Location` values at the upstream's own origin to the origin the
/// client used (`https://` + its Host), as nginx's `proxy_redirect default` does: the client
/// never learns the upstream's address, nor follows a redirect around the gateway. The same
/// for `http://` + the client's Host (the app did not believe `X-Forwarded-Proto`). Path,
/// query and fragment are kept; other absolute URLs and relative references pass unchanged.
pub fn rewrite_upstream_urls(
    headers: &mut HeaderMap,
    upstream: &UpstreamTarget,
    client_host: &HeaderValue,
) {
    let UpstreamTarget::Http {
        scheme, authority, ..
    } = upstream
    else {
        return;
    };
    // An app that ignores `X-Forwarded-Proto` builds its URLs as `http://` + the Host it got:
    // the client's own origin over plain HTTP, which the gateway never serves.
    // Parsed only when a URL header is there: most responses have none.
    let mut client_origin: Option<Option<Authority>> = None;
    for name in URL_HEADERS {
        // `entry` reserves room for an insert (and may grow the map): look first.
        if !headers.contains_key(&name) {
            continue;
        }
        let Entry::Occupied(mut entry) = headers.entry(name) else {
            continue;
        };
        for value in entry.iter_mut() {
            let url = value.as_bytes();
            let Some(rest) = after_origin(url, scheme, authority).or_else(|| {
                let client = client_origin
                    .get_or_insert_with(|| Authority::try_from(client_host.as_bytes()).ok());
                after_origin(url, &Scheme::HTTP, client.as_ref()?)
            }) else {
                continue;
            };
            let mut url = Vec::with_capacity(8 + client_host.len() + rest.len());
            url.extend_from_slice(b"https://");
            url.extend_from_slice(client_host.as_bytes());
            url.extend_from_slice(rest);
            // Both parts came from valid header values, so this cannot fail.
            if let Ok(url) = HeaderValue::from_bytes(&url) {
                *value = url;
            }
        }
    }
}

/// What follows the origin in `url` (path, query, fragment; maybe empty) when `url` is an
/// absolute URL at `scheme://authority`; `None` for any other URL or a relative reference.
fn after_origin<'u>(url: &'u [u8], scheme: &Scheme, authority: &Authority) -> Option<&'u [u8]> {
    let scheme_name = scheme.as_str().as_bytes();
    let head = url.get(..scheme_name.len())?;
    let rest = url[scheme_name.len()..].strip_prefix(b"://")?;
    if !head.eq_ignore_ascii_case(scheme_name) {
        return None;
    }
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (url_authority, tail) = rest.split_at(end);
    let default = default_port(scheme);
    let (host, port) = split_authority(url_authority, default)?;
    let same = host.eq_ignore_ascii_case(authority.host().as_bytes())
        && port == authority.port_u16().or(default);
    same.then_some(tail)
}

/// `host[:port]` of a URL's authority, the port resolved against the scheme's default (an
/// empty port means the default, RFC 3986 §3.2.3). `None` for userinfo or a malformed port.
fn split_authority(authority: &[u8], default: Option<u16>) -> Option<(&[u8], Option<u16>)> {
    if authority.contains(&b'@') {
        return None;
    }
    let host_end = match authority.first() {
        Some(b'[') => authority.iter().position(|b| *b == b']')? + 1,
        _ => authority
            .iter()
            .position(|b| *b == b':')
            .unwrap_or(authority.len()),
    };
    let (host, port) = authority.split_at(host_end);
    let port = match port {
        b"" | b":" => default,
        [b':', digits @ ..] if digits.iter().all(u8::is_ascii_digit) => {
            Some(std::str::from_utf8(digits).ok()?.parse().ok()?)
        }
        _ => return None,
    };
    Some((host, port))
}

fn default_port(scheme: &Scheme) -> Option<u16> {
    if *scheme == Scheme::HTTP {
        Some(80)
    } else if *scheme == Scheme::HTTPS {
        Some(443)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(upstream: &str, value: &str) -> String {
        let uri: http::Uri = upstream.parse().unwrap();
        let target = UpstreamTarget::Http {
            scheme: uri.scheme().unwrap().clone(),
            authority: uri.authority().unwrap().clone(),
            tls: None,
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_str(value).unwrap());
        headers.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_str(value).unwrap(),
        );
        rewrite_upstream_urls(
            &mut headers,
            &target,
            &HeaderValue::from_static("gw.test:8443"),
        );
        let location = headers[header::LOCATION].to_str().unwrap().to_owned();
        assert_eq!(headers[header::CONTENT_LOCATION], location.as_str());
        location
    }

    #[test]
    fn urls_at_the_upstream_origin_point_at_the_client_origin() {
        for (upstream, value, want) in [
            (
                "http://127.0.0.1:18001",
                "http://127.0.0.1:18001/get",
                "https://gw.test:8443/get",
            ),
            (
                "http://127.0.0.1:18001",
                "HTTP://127.0.0.1:18001/a?b#c",
                "https://gw.test:8443/a?b#c",
            ),
            (
                "http://127.0.0.1:18001",
                "http://127.0.0.1:18001",
                "https://gw.test:8443",
            ),
            (
                "http://127.0.0.1:18001",
                "http://127.0.0.1:18001?q",
                "https://gw.test:8443?q",
            ),
            (
                "http://App.Internal",
                "http://app.internal:80/x",
                "https://gw.test:8443/x",
            ),
            (
                "http://app.internal:80",
                "http://APP.internal/x",
                "https://gw.test:8443/x",
            ),
            (
                "http://app.internal",
                "http://app.internal:/x",
                "https://gw.test:8443/x",
            ),
            (
                "http://[::1]:9000",
                "http://[::1]:9000/x",
                "https://gw.test:8443/x",
            ),
            (
                "https://app.internal",
                "https://app.internal:443/x",
                "https://gw.test:8443/x",
            ),
        ] {
            assert_eq!(rewritten(upstream, value), want, "{upstream} {value}");
        }
    }

    #[test]
    fn other_urls_and_relative_references_pass_unchanged() {
        for value in [
            "http://127.0.0.1:18002/get",
            "http://127.0.0.1/get",
            "https://127.0.0.1:18001/get",
            "http://localhost:18001/get",
            "http://127.0.0.1:18001.evil.test/get",
            "http://user@127.0.0.1:18001/get",
            "http://127.0.0.1:018001x/get",
            "http://127.0.0.1:99999/get",
            "http:127.0.0.1:18001/get",
            "//127.0.0.1:18001/get",
            "/get?x=http://127.0.0.1:18001/",
            "get",
            "",
            "https://example.test/",
        ] {
            assert_eq!(rewritten("http://127.0.0.1:18001", value), value);
        }
        assert_eq!(
            rewritten("http://app.internal:8080", "http://app.internal/x"),
            "http://app.internal/x"
        );
        assert_eq!(
            rewritten("http://[::1]:9000", "http://[::2]:9000/x"),
            "http://[::2]:9000/x"
        );
    }

    #[test]
    fn a_rustls_error_is_found_behind_the_io_errors_that_wrap_it() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, alert.clone());
        let outer = std::io::Error::other(inner);
        assert_eq!(tls_error(&outer), Some(&alert));
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_error(&plain), None);
    }

    #[test]
    fn the_echo_upstream_has_no_origin_to_rewrite() {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("http://x/"));
        rewrite_upstream_urls(
            &mut headers,
            &UpstreamTarget::Echo,
            &HeaderValue::from_static("h"),
        );
        assert_eq!(headers[header::LOCATION], "http://x/");
    }
}
