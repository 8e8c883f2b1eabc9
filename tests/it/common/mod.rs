//! Test harness: a real gateway on 127.0.0.1:0 started through the library entry point, a real
//! recording upstream on 127.0.0.1:0, and a real TLS client that trusts a per-test CA.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::config::Config;
use portcullis::state::{Shared, Snapshot};
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A 32+ byte secret shared by tests that mint their own tokens.
pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

/// Argon2id (OWASP parameters) hash of `secret123`.
pub const SECRET123_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$w87WW2eFT7vy9UDFIxPMUA$WRM+jGFRlegpsoIlTVNrQc+1XHa3/a1NZzkq1GFfarI";

// ---------------------------------------------------------------------------------------------
// Certificates

/// A test CA and a server certificate for 127.0.0.1/localhost signed by it, written as PEM.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_der: CertificateDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_der, cert_pem, key_pem) = issue_server_cert("Portcullis Test CA");
        let cert_path = dir.path().join("gateway.pem");
        let key_path = dir.path().join("gateway-key.pem");
        std::fs::write(&cert_path, cert_pem).expect("write cert");
        std::fs::write(&key_path, key_pem).expect("write key");
        TestPki {
            dir,
            ca_der,
            cert_path,
            key_path,
        }
    }
}

/// Make a CA and a leaf certificate for 127.0.0.1 + localhost: (CA DER, leaf PEM, key PEM).
pub fn issue_server_cert(ca_name: &str) -> (CertificateDer<'static>, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    (ca_cert.der().clone(), leaf.pem(), leaf_key.serialize_pem())
}

// ---------------------------------------------------------------------------------------------
// Gateway

/// A running gateway. Dropping it shuts it down.
pub struct Gateway {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub pki: TestPki,
    pub config_path: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The `tls:` block pointing at the test PKI, to splice into a config.
pub fn tls_block(pki: &TestPki) -> String {
    format!(
        "tls:\n  cert: {}\n  key: {}\n",
        pki.cert_path.display(),
        pki.key_path.display()
    )
}

impl Gateway {
    /// Start a gateway on `yaml` (a full config without `listen`/`tls`, which are added).
    pub async fn start(yaml: &str) -> Gateway {
        let pki = TestPki::new();
        let config_path = pki.dir.path().join("gateway.yaml");
        let text = format!("listen: 127.0.0.1:0\n{}{yaml}", tls_block(&pki));
        std::fs::write(&config_path, text).expect("write config");
        Self::start_at(pki, config_path).await
    }

    /// Start on an already written config file.
    pub async fn start_at(pki: TestPki, config_path: PathBuf) -> Gateway {
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("config: {e}"));
        let snapshot = Snapshot::build(config, 1).expect("snapshot");
        let shared = Shared::new(snapshot);
        let listeners = portcullis::bind("127.0.0.1:0".parse().expect("addr"), 2).expect("bind");
        let addr = listeners[0].local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(portcullis::run(listeners, shared.clone(), async move {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            shared,
            pki,
            config_path,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A client for this gateway speaking HTTP/1.1.
    pub fn h1(&self) -> Client {
        Client::new(self.addr, &self.pki.ca_der, Proto::H1)
    }

    /// A client for this gateway speaking HTTP/2.
    pub fn h2(&self) -> Client {
        Client::new(self.addr, &self.pki.ca_der, Proto::H2)
    }

    /// Stop accepting, drain, and wait for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

/// A TLS client trusting the test CA. Each request uses a fresh connection unless a
/// [`Connection`] is opened explicitly.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    connector: TlsConnector,
    proto: Proto,
}

/// A buffered response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn tls_client_config(
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("add CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

impl Client {
    pub fn new(addr: SocketAddr, ca: &CertificateDer<'static>, proto: Proto) -> Client {
        let alpn: &[&[u8]] = match proto {
            Proto::H1 => &[b"http/1.1"],
            Proto::H2 => &[b"h2"],
        };
        Client {
            addr,
            connector: TlsConnector::from(tls_client_config(ca, alpn)),
            proto,
        }
    }

    /// Open a TLS connection (for raw bytes).
    pub async fn tls(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        self.connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake")
    }

    /// Open a keep-alive HTTP connection.
    pub async fn connect(&self) -> Connection {
        let io = TokioIo::new(self.tls().await);
        match self.proto {
            Proto::H1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .expect("h1 handshake");
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                Connection::H1(sender)
            }
            Proto::H2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .expect("h2 handshake");
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Connection::H2(sender)
            }
        }
    }

    /// Send one request with a body, buffering the response.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        let mut conn = self.connect().await;
        conn.send(request).await
    }

    /// Build a request for this client's protocol (Host / :authority set).
    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        let builder =
            Request::builder().method(Method::from_bytes(method.as_bytes()).expect("method"));
        match self.proto {
            Proto::H1 => builder.uri(path).header("host", "localhost"),
            Proto::H2 => builder.uri(format!("https://localhost{path}")),
        }
    }

    /// GET `path` with extra headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.call("GET", path, headers, Bytes::new()).await
    }

    /// Any method, headers and body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut builder = self.request(method, path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Full::new(body.into())).expect("request"))
            .await
    }

    /// GET with a bearer token.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Reply {
        self.get(path, &[("authorization", &format!("Bearer {token}"))])
            .await
    }

    /// Write raw bytes over TLS and read until the server closes or `wait` passes.
    pub async fn raw(&self, bytes: &[u8], wait: Duration) -> String {
        let mut stream = self.tls().await;
        // The gateway may answer and close before a large request is fully written (e.g.
        // 431 for oversized headers): keep whatever it sent rather than failing the write.
        if stream.write_all(bytes).await.is_ok() {
            let _ = stream.flush().await;
        }
        read_until_close(&mut stream, wait).await
    }

    /// POST a login form; returns the reply.
    pub async fn login(&self, username: &str, password: &str) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("username", username)
            .append_pair("password", password)
            .finish();
        self.call(
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
    }

    /// Log in and return the access token (panics unless 200).
    pub async fn token(&self, username: &str, password: &str) -> String {
        let reply = self.login(username, password).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "login failed: {}",
            reply.text()
        );
        reply.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }
}

/// Read from `stream` until EOF or until `wait` elapses with no more data.
pub async fn read_until_close<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An open HTTP connection.
pub enum Connection {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    /// Send and buffer the response.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Reply {
        let response = self.send_streaming(request).await;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Send, returning the response with its body unread.
    pub async fn send_streaming(&mut self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        match self {
            Connection::H1(sender) => {
                sender.ready().await.expect("connection ready");
                sender.send_request(request).await.expect("send request")
            }
            Connection::H2(sender) => {
                sender.ready().await.expect("connection ready");
                sender.send_request(request).await.expect("send request")
            }
        }
    }

    /// Send; Err if the connection failed.
    pub async fn try_send(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, hyper::Error> {
        let response = match self {
            Connection::H1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Connection::H2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Recording upstream

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
/// SHA-256). Bodies are always read fully (and hashed) before answering.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let upstream = Upstream {
            addr,
            seen: seen.clone(),
            connections: connections.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| upstream_handle(seen.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        upstream
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn clear(&self) {
        self.seen.lock().expect("lock").clear();
    }
}

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn upstream_handle(
    seen: Arc<Mutex<Vec<Seen>>>,
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
    };
    seen.lock().expect("lock").push(record.clone());

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
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", "recording")
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

// ---------------------------------------------------------------------------------------------
// Tokens minted independently of the gateway's code (for tests of what it accepts).

/// HMAC-SHA256-sign `header.claims` with `secret` (a JWT implementation separate from the
/// gateway's jsonwebtoken-based one).
pub fn mint_hs256(header: &serde_json::Value, claims: &serde_json::Value, secret: &[u8]) -> String {
    mint_raw(
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
        secret,
    )
}

/// Sign raw header and claims JSON bytes (for duplicate-member and malformed cases).
pub fn mint_raw(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("hmac key");
    mac.update(signing_input.as_bytes());
    let signature = b64.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Decode and verify an HS256 token independently; returns (header, claims) when valid.
pub fn verify_hs256(token: &str, secret: &[u8]) -> Option<(serde_json::Value, serde_json::Value)> {
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(format!("{h}.{c}").as_bytes());
    mac.verify_slice(&b64.decode(s).ok()?).ok()?;
    let header = serde_json::from_slice(&b64.decode(h).ok()?).ok()?;
    let claims = serde_json::from_slice(&b64.decode(c).ok()?).ok()?;
    Some((header, claims))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A standard config around `upstream`: the THREATS fixture routes.
///
/// `/public/**` anonymous; `/api/**` GET needs `read`, POST/PUT/PATCH need `write`, DELETE
/// needs `admin`; `/admin/**` needs `admin`; `/internal/**` deny; everything else 404.
/// Users: alice (read), bob (read write), root (admin), all with password `secret123`.
pub fn fixture_yaml(upstream: &str) -> String {
    format!(
        r#"tokens:
  issuer: https://gw.test
  audience: gw-upstreams
  secret: "{SECRET}"
  ttl: 5m
  leeway: 30s
scopes:
  read: Read
  write: {{ description: Write, implies: [read] }}
  admin: {{ description: Admin, implies: ["*"] }}
users:
  alice: {{ password: "{SECRET123_HASH}", scopes: [read] }}
  bob: {{ password: "{SECRET123_HASH}", scopes: [read, write] }}
  root: {{ password: "{SECRET123_HASH}", scopes: [admin] }}
upstreams:
  up: {upstream}
  echo: "echo:"
routes:
  - {{ id: public, path: /public/**, upstream: up, public: true }}
  - {{ id: api-read, path: /api/**, methods: [GET], upstream: up, scopes: [read] }}
  - {{ id: api-write, path: /api/**, methods: [POST, PUT, PATCH], upstream: up, scopes: [write] }}
  - {{ id: api-delete, path: /api/**, methods: [DELETE], upstream: up, scopes: [admin] }}
  - {{ id: admin, path: /admin/**, upstream: up, scopes: [admin] }}
  - {{ id: internal, path: /internal/**, deny: true }}
  - {{ id: echo, path: /echo/**, upstream: echo, public: true }}
"#
    )
}

/// Standard claims for a token the fixture gateway accepts.
pub fn fixture_claims(sub: &str, scope: &str) -> serde_json::Value {
    let now = now();
    serde_json::json!({
        "iss": "https://gw.test", "aud": "gw-upstreams", "sub": sub, "scope": scope,
        "iat": now, "exp": now + 300, "jti": format!("{sub}-{now}-{}", rand_suffix()),
    })
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A fixture token signed with [`SECRET`].
pub fn fixture_token(sub: &str, scope: &str) -> String {
    mint_hs256(
        &serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}),
        &fixture_claims(sub, scope),
        SECRET.as_bytes(),
    )
}

/// Parse `Content-Length`-style maps for convenience.
pub fn header_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 answers

/// What a client got back, whichever transport carried the request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    pub fn from_reply(reply: &Reply) -> Answer {
        Answer {
            status: reply.status.as_u16(),
            headers: reply
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: reply.text(),
        }
    }
}

/// Parse an HTTP/1.1 response read off the wire (status 0 when nothing came back).
pub fn parse_raw(text: &str) -> Answer {
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Redirecting upstream

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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(message).await.expect("write");
    stream.flush().await.expect("flush");
    let mut echoed = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(echoed, message);
}

/// Wait until a fresh client gets 200 for `GET path` (for example once connection slots are
/// free again); panics with `what` after `within`. A refused attempt panics inside the
/// client, so each runs as its own task.
pub async fn until_answered(gw: &Gateway, path: &str, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let client = gw.h1();
        let path = path.to_owned();
        let attempt = tokio::spawn(async move { client.get(&path, &[]).await });
        let reply = tokio::time::timeout(Duration::from_secs(2), attempt).await;
        if matches!(&reply, Ok(Ok(r)) if r.status == StatusCode::OK) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
