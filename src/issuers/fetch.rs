//! One HTTPS GET of a small JSON document (discovery, JWKS): bounded in time and size,
//! verified TLS only, no redirects, no cookies, no connection kept.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Whole fetch deadline: connect, handshake, request and body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest document read (real JWKS and discovery documents are a few KiB).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// A fetched document and how long its server says it may be cached.
#[derive(Debug)]
pub struct Fetched {
    pub body: Bytes,
    pub max_age: Option<Duration>,
}

/// Why a document could not be fetched. Messages name the URL, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}: not an https:// URL")]
    NotHttps(String),
    #[error("{url}: connect: {error}")]
    Connect { url: String, error: std::io::Error },
    #[error("{url}: TLS: {error}")]
    Tls { url: String, error: std::io::Error },
    #[error("{url}: HTTP: {error}")]
    Http { url: String, error: String },
    #[error("{url}: status {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: no answer within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("{url}: {reason}")]
    Invalid { url: String, reason: String },
}

/// GET `url` over TLS with `tls`.
pub async fn get(url: &str, tls: Arc<ClientConfig>) -> Result<Fetched, FetchError> {
    match tokio::time::timeout(FETCH_TIMEOUT, get_unbounded(url, tls)).await {
        Ok(result) => result,
        Err(_) => Err(FetchError::Timeout {
            url: url.to_owned(),
        }),
    }
}

async fn get_unbounded(url: &str, tls: Arc<ClientConfig>) -> Result<Fetched, FetchError> {
    let not_https = || FetchError::NotHttps(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| not_https())?;
    if uri.scheme_str() != Some("https") {
        return Err(not_https());
    }
    let authority = uri.authority().ok_or_else(not_https)?.clone();
    let host = authority.host();
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|error| FetchError::Connect {
            url: url.to_owned(),
            error,
        })?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(bare_host.to_owned()).map_err(|_| not_https())?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|error| FetchError::Tls {
            url: url.to_owned(),
            error,
        })?;
    let http_error = |error: hyper::Error| FetchError::Http {
        url: url.to_owned(),
        error: error.to_string(),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    let driver = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .header(header::USER_AGENT, HeaderValue::from_static("portcullis"))
        .header(header::CONNECTION, HeaderValue::from_static("close"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http {
            url: url.to_owned(),
            error: e.to_string(),
        })?;
    let response = sender.send_request(request).await.map_err(http_error)?;
    let status = response.status();
    if status != StatusCode::OK {
        driver.abort();
        return Err(FetchError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let max_age = max_age(response.headers());
    let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
        .collect()
        .await
        .map_err(|_| FetchError::TooLarge {
            url: url.to_owned(),
        })?
        .to_bytes();
    driver.abort();
    Ok(Fetched { body, max_age })
}

/// `Cache-Control: max-age` (ignoring `no-store`/`no-cache`, which would make every
/// request a fetch: the refresh bounds decide then).
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.eq_ignore_ascii_case("max-age")
                .then(|| value.trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .map(Duration::from_secs)
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(max_age(&headers), None);
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600, must-revalidate"),
        );
        assert_eq!(max_age(&headers), Some(Duration::from_secs(3600)));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(max_age(&headers), None);
    }
}
