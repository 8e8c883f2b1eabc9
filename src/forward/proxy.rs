//! Forwarding to upstream apps: a pooled keep-alive client per serving thread (so cores never
//! share a pool lock), `https://` upstreams over rustls, response deadlines, error
//! classification, and the upgrade tunnel.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::upstream_tls::UpstreamTls;
use crate::config::{Upstream, UpstreamTarget};
use crate::error::Failure;
use crate::forward::request_body::{BodyError, GuardedBody};

/// The upstream client type: HTTP/1.1 over TCP with the client's body streamed through.
pub type UpstreamClient = Client<HttpConnector, GuardedBody>;

/// The client of one `https://` upstream: HTTP/1.1 over rustls over TCP.
pub type TlsUpstreamClient = Client<HttpsConnector<HttpConnector>, GuardedBody>;

/// How long an idle upstream connection is kept for reuse.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// A client of one `https://` upstream in one config generation. The `Weak` tells when that
/// generation is gone, and, by keeping the `UpstreamTls` allocation reserved, guarantees its
/// address (the map key) is not reused by a later generation while the entry exists.
type TlsEntry = (Weak<UpstreamTls>, TlsUpstreamClient);

thread_local! {
    /// One client (and so one connection pool) per serving thread and connect timeout.
    /// Serving is thread-per-core, so this is a per-core pool with no cross-core locking.
    static CLIENTS: RefCell<HashMap<Duration, UpstreamClient>> = RefCell::new(HashMap::new());

    /// One client per serving thread and `https://` upstream of a live generation, keyed by
    /// the address of that generation's `UpstreamTls`: a reload that rebuilt the upstream's
    /// TLS settings gets new connections with them, never an old pool's.
    static TLS_CLIENTS: RefCell<HashMap<usize, TlsEntry>> = RefCell::new(HashMap::new());
}

fn client_builder() -> Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        // A request whose body was already (partly) sent must not be replayed.
        .retry_canceled_requests(false);
    builder
}

fn tcp_connector(connect_timeout: Duration, enforce_http: bool) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(enforce_http);
    connector
}

fn client_for(connect_timeout: Duration) -> UpstreamClient {
    CLIENTS.with(|clients| {
        clients
            .borrow_mut()
            .entry(connect_timeout)
            .or_insert_with(|| client_builder().build(tcp_connector(connect_timeout, true)))
            .clone()
    })
}

/// This thread's client for an `https://` upstream. Built on first use from the `ClientConfig`
/// its generation built (shared, not copied); the connect timeout belongs to the same
/// upstream and generation, so it needs no place in the key. On a miss, entries of
/// generations no longer alive are dropped with their pools, so they never pile up.
fn tls_client_for(tls: &Arc<UpstreamTls>, connect_timeout: Duration) -> TlsUpstreamClient {
    let key = Arc::as_ptr(tls) as usize;
    TLS_CLIENTS.with(|clients| {
        let mut clients = clients.borrow_mut();
        if let Some((_, client)) = clients.get(&key) {
            return client.clone();
        }
        clients.retain(|_, (generation, _)| generation.strong_count() > 0);
        let connector = HttpsConnector::new(
            tcp_connector(connect_timeout, false),
            tls.client.clone(),
            true,
            Arc::new(FixedServerNameResolver::new(tls.server_name.clone())),
        );
        let client = client_builder().build(connector);
        clients.insert(key, (Arc::downgrade(tls), client.clone()));
        client
    })
}

/// Send `request` to `upstream` and wait for its response headers within the upstream's
/// timeout. The response body is streamed by the caller.
pub async fn forward(
    upstream: &Upstream,
    request: Request<GuardedBody>,
) -> Result<Response<Incoming>, Failure> {
    let sent = match &upstream.target {
        UpstreamTarget::Http { tls: Some(tls), .. } => {
            let client = tls_client_for(tls, upstream.connect_timeout);
            tokio::time::timeout(upstream.timeout, client.request(request)).await
        }
        _ => {
            let client = client_for(upstream.connect_timeout);
            tokio::time::timeout(upstream.timeout, client.request(request)).await
        }
    };
    match sent {
        Err(_elapsed) => Err(Failure::UpstreamTimeout),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => {
            if let Some(tls) = tls_error(&err) {
                // rustls says what failed (unknown issuer, name mismatch, an alert such as
                // "certificate required"); it never carries key material.
                tracing::warn!(upstream = %upstream.name, error = %tls, "upstream TLS failed");
            }
            Err(classify(&err))
        }
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
fn classify(err: &hyper_util::client::legacy::Error) -> Failure {
    if let Some(body) = BodyError::find_in(err) {
        return Failure::from(body);
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Failure::UpstreamTimeout;
            }
        }
        source = cause.source();
    }
    tracing::debug!(error = %err, "upstream request failed");
    Failure::UpstreamUnavailable
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

    /// An `UpstreamTls` as a generation builds one (any roots will do: nothing connects).
    fn upstream_tls() -> Arc<UpstreamTls> {
        use crate::config::upstream_tls::{client_config, server_name};
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        Arc::new(UpstreamTls {
            client: client_config(Arc::new(roots), None).unwrap(),
            server_name: server_name("upstream.test").unwrap(),
            ca: None,
            client_cert: None,
        })
    }

    fn tls_clients() -> usize {
        TLS_CLIENTS.with(|clients| clients.borrow().len())
    }

    #[test]
    fn each_generation_gets_its_own_tls_client_and_dead_ones_are_dropped_on_the_next_miss() {
        let timeout = Duration::from_secs(1);
        let first = upstream_tls();
        tls_client_for(&first, timeout);
        tls_client_for(&first, timeout);
        assert_eq!(tls_clients(), 1, "one client per upstream and generation");
        let second = upstream_tls();
        tls_client_for(&second, timeout);
        assert_eq!(tls_clients(), 2, "both generations are alive");
        // Reloads come and go; each one's clients last only until the next one's first use.
        drop(first);
        let mut live = second;
        for _ in 0..10 {
            let next = upstream_tls();
            tls_client_for(&next, timeout);
            assert_eq!(tls_clients(), 2, "the previous generation is still alive");
            live = next;
        }
        drop(live);
        tls_client_for(&upstream_tls(), timeout);
        assert_eq!(tls_clients(), 1);
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
