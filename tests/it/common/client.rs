//! A real TLS client trusting the test CA, speaking HTTP/1.1 or HTTP/2 (hyper), and the
//! buffered [`Reply`] it returns. Raw bytes over the same TLS (`Client::raw`) are in `raw.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

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

/// A Bearer challenge without its `resource_metadata` parameter, which every 401 and 403 on a
/// protected route carries last (RFC 9728 §5.1): panics when it is missing, so callers compare
/// the rest exactly.
pub fn challenge_without_metadata(value: Option<&str>) -> Option<&str> {
    let value = value?;
    let (rest, url) = value
        .rsplit_once(", resource_metadata=\"")
        .unwrap_or_else(|| panic!("no resource_metadata in `{value}`"));
    assert!(
        url.starts_with("https://") && url.contains("/.well-known/oauth-protected-resource"),
        "{value}"
    );
    Some(rest)
}
