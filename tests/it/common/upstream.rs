//! Real upstream servers on 127.0.0.1:0: the recording upstream (what did the gateway
//! forward?), plain or behind TLS, the redirecting upstream, and the `i % 251` pattern bodies they stream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the upstream received for one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query exactly as received in the request line.
    pub target: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body_len: usize,
    pub body_sha256: String,
    /// The body ended with an error (client aborted mid-stream).
    pub body_error: bool,
    /// The certificate the client presented, on a TLS upstream that asked for one.
    pub client_cert: Option<CertificateDer<'static>>,
}

impl Seen {
    /// All values of a header, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }
}

/// A real HTTP/1.1 server on 127.0.0.1:0 that records every request it receives.
///
/// Behaviour by path: `/slow/<ms>/...` waits that long before answering; `/big/<bytes>`
/// streams that many bytes (pattern `i % 251`); `/ws` accepts a WebSocket upgrade and echoes
/// bytes; anything else answers 200 with a JSON summary (method, target, body length and
/// SHA-256). Bodies are always read fully (and hashed) before answering. A request carrying
/// `x-test-location` is answered `302 Found` with that `Location` instead.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
    tls: bool,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Self::serve(None).await
    }

    /// The same upstream behind TLS with `config` (`https://127.0.0.1:PORT`): a client
    /// certificate it asks for is recorded in [`Seen::client_cert`], and a handshake that
    /// fails is counted by [`Upstream::failed_handshakes`].
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Upstream {
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let upstream = Upstream {
            addr,
            seen: Arc::new(Mutex::new(Vec::new())),
            connections: Arc::new(AtomicUsize::new(0)),
            failed_handshakes: Arc::new(AtomicUsize::new(0)),
            tls: tls.is_some(),
        };
        let (seen, connections, failed) = (
            upstream.seen.clone(),
            upstream.connections.clone(),
            upstream.failed_handshakes.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let (seen, tls, failed) = (seen.clone(), tls.clone(), failed.clone());
                tokio::spawn(async move {
                    let Some(tls) = tls else {
                        serve_connection(TokioIo::new(stream), seen, None).await;
                        return;
                    };
                    match tls.accept(stream).await {
                        Ok(stream) => {
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|c| c.clone().into_owned());
                            serve_connection(TokioIo::new(stream), seen, client_cert).await;
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        upstream
    }

    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` for a TLS upstream.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// TLS handshakes that failed (TLS upstreams only).
    pub fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The last request received.
    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().expect("lock").last().cloned()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn clear(&self) {
        self.seen.lock().expect("lock").clear();
    }
}

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Serve one accepted (plain or TLS) connection over HTTP/1.1.
async fn serve_connection<S>(
    io: TokioIo<S>,
    seen: Arc<Mutex<Vec<Seen>>>,
    client_cert: Option<CertificateDer<'static>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| upstream_handle(seen.clone(), client_cert.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

async fn upstream_handle(
    seen: Arc<Mutex<Vec<Seen>>>,
    client_cert: Option<CertificateDer<'static>>,
    mut req: Request<Incoming>,
) -> Result<Response<UpstreamBody>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let is_ws = path == "/ws" || path.ends_with("/ws");
    let on_upgrade = is_ws.then(|| hyper::upgrade::on(&mut req));
    let (parts, mut body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut body_len = 0usize;
    let mut body_error = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    body_len += data.len();
                }
            }
            Err(_) => {
                body_error = true;
                break;
            }
        }
    }
    let record = Seen {
        method: parts.method.as_str().to_owned(),
        target: target.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body_len,
        body_sha256: hex(&hasher.finalize()),
        body_error,
        client_cert,
    };
    seen.lock().expect("lock").push(record.clone());
    if let Some(location) = parts.headers.get("x-test-location") {
        return Ok(Response::builder()
            .status(StatusCode::FOUND)
            .header("location", location)
            .body(empty())
            .expect("response"));
    }

    let segments: Vec<&str> = path.split('/').collect();
    if let Some(on_upgrade) = on_upgrade {
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 4096];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "test")
            .body(empty())
            .expect("response");
        return Ok(response);
    }
    if segments.get(1) == Some(&"slow") {
        let ms: u64 = segments.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // `/big/<n>`, also under a route prefix such as `/public/big/<n>`.
    if let Some(at) = segments.iter().position(|s| *s == "big") {
        let size: usize = segments
            .get(at + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1024);
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .body(pattern_body(size))
            .expect("response"));
    }
    let summary = serde_json::json!({
        "method": record.method,
        "target": target,
        "body_len": body_len,
        "body_sha256": record.body_sha256,
    });
    let mut builder = Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", "recording");
    // `x-test-response-header: name: value` (repeatable): the upstream answers with it.
    for asked in parts.headers.get_all("x-test-response-header") {
        if let Some((name, value)) = asked.to_str().ok().and_then(|t| t.split_once(": ")) {
            builder = builder.header(name, value);
        }
    }
    Ok(builder
        .body(
            Full::new(Bytes::from(summary.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("response"))
}

fn empty() -> UpstreamBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// `size` bytes of the pattern `i % 251`, streamed in 64 KiB frames.
pub fn pattern_body(size: usize) -> UpstreamBody {
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..size)
        .step_by(64 * 1024)
        .map(|start| {
            let end = (start + 64 * 1024).min(size);
            Ok(http_body::Frame::data(pattern_bytes(start, end)))
        })
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed()
}

/// Bytes `start..end` of the `i % 251` pattern.
pub fn pattern_bytes(start: usize, end: usize) -> Bytes {
    Bytes::from((start..end).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A real HTTP/1.1 server on 127.0.0.1:0 that answers every request `302 Found` with the
/// `Location` and `Content-Location` the request asked for in `x-test-location` and
/// `x-test-content-location` (each omitted when not asked for).
pub async fn start_redirecting_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let mut response = Response::builder().status(StatusCode::FOUND);
                    for (asked, name) in [
                        ("x-test-location", "location"),
                        ("x-test-content-location", "content-location"),
                    ] {
                        if let Some(value) = req.headers().get(asked) {
                            response = response.header(name, value);
                        }
                    }
                    Ok::<_, std::convert::Infallible>(
                        response.body(Full::new(Bytes::new())).expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Write `message` into an upgraded (WebSocket) stream and expect the echo upstream to send it
/// back within 5 s.
pub async fn echo_through<S>(stream: &mut S, message: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(message).await.expect("write");
    stream.flush().await.expect("flush");
    let mut echoed = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(echoed, message);
}
