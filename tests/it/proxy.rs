//! Forwarding behaviour end to end (SPEC "Forwarding", "Decisions"; THREATS,
//! X-03, H-08): protocol choice by ALPN, streamed 50 MiB bodies both ways, WebSocket tunnels,
//! upstream failures, JSON error bodies, keep-alive, and connections that never speak.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const MIB: usize = 1024 * 1024;
const BIG: usize = 50 * MIB;
/// SHA-256 of `pattern_bytes(0, BIG)` (hashing 50 MiB takes seconds in a debug build).
const BIG_PATTERN_SHA256: &str = "3a7aef326b898081e6fb7b9599db2618b4f5e5301b64078f0f4e1f5382f634b9";

/// `pattern_bytes(0, len)`, built by repeating one 251-byte cycle (fast in debug builds).
fn pattern(len: usize) -> Bytes {
    let cycle: Vec<u8> = (0..251u32).map(|i| i as u8).collect();
    let mut data = cycle.repeat(len / 251 + 1);
    data.truncate(len);
    Bytes::from(data)
}

/// The fixture config, with the `up` upstream in long form when `upstream_extra` is given,
/// `prelude` (top-level keys) prepended, and anonymous `/big/**` and `/slow/**` routes (the
/// recording upstream only streams / sleeps when that is the first path segment).
fn config(up_url: &str, upstream_extra: Option<&str>, prelude: &str) -> String {
    let mut yaml = fixture_yaml(up_url);
    if let Some(extra) = upstream_extra {
        yaml = yaml.replace(
            &format!("  up: {up_url}\n"),
            &format!("  up: {{ url: {up_url}, {extra} }}\n"),
        );
    }
    format!(
        "{prelude}{yaml}  - {{ id: big, path: /big/**, upstream: up, public: true }}\n  \
         - {{ id: slow, path: /slow/**, upstream: up, public: true }}\n"
    )
}

async fn fixture() -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), None, "")).await;
    (up, gw)
}

/// A URL on 127.0.0.1 where nothing listens (bound, then released).
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn assert_json_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert!(
        reply
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{status}: content-type {:?}",
        reply.header("content-type")
    );
    let json = reply.json();
    assert!(
        json["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{status}: {json}"
    );
    assert!(json["error_description"].is_string(), "{status}: {json}");
}

/// Read one response head (through the blank line) from a raw stream.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(
            n == 1,
            "closed mid-head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// True when the peer closes (EOF or error) within `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// protocol by ALPN

#[tokio::test]
async fn http2_clients_are_served_over_http2_and_the_upstream_receives_http11() {
    let (up, gw) = fixture().await;
    let client = gw.h2();
    let mut conn = client.connect().await;
    let request = client
        .request("GET", "/public/h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = conn.send_streaming(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(seen.target, "/public/h2");
    assert_eq!(seen.version, Version::HTTP_11);

    let client = gw.h1();
    let mut conn = client.connect().await;
    let request = client
        .request("GET", "/public/h1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = conn.send_streaming(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(up.last().unwrap().version, Version::HTTP_11);
}

#[tokio::test]
async fn alpn_offers_h2_and_http11_and_the_serving_protocol_follows_it() {
    let (up, gw) = fixture().await;
    let connect = |alpn: &'static [&'static [u8]]| {
        let connector = TlsConnector::from(tls_client_config(&gw.pki.ca_der, alpn));
        let addr = gw.addr;
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        }
    };
    let both = connect(&[b"h2", b"http/1.1"]).await;
    assert_eq!(both.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h1 = connect(&[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // No ALPN at all: HTTP/1.1.
    let mut none = connect(&[]).await;
    assert_eq!(none.get_ref().1.alpn_protocol(), None);
    none.write_all(b"GET /public/no-alpn HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_close(&mut none, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // http/1.1 negotiated, then the HTTP/2 preface: not served as HTTP/2.
    let mut h1 = connect(&[b"http/1.1"]).await;
    h1.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_close(&mut h1, Duration::from_secs(5)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"),
        "{answer:?}"
    );
    let targets: Vec<String> = up.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, vec!["/public/no-alpn"]);
}

// ---------------------------------------------------------------------------------------------
// Streaming bodies

type UploadBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[tokio::test]
async fn a_50_mib_chunked_request_body_streams_intact_to_the_upstream() {
    let (up, gw) = fixture().await;
    let data = pattern(BIG);
    let expected = BIG_PATTERN_SHA256;
    let io = TokioIo::new(gw.h1().tls().await);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, UploadBody>(io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..BIG / MIB)
        .map(|i| Ok(Frame::data(data.slice(i * MIB..(i + 1) * MIB))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let request = Request::post("/public/upload")
        .header("host", "localhost")
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reply = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(json["body_len"], BIG);
    let seen = up.last().expect("upstream saw the upload");
    assert_eq!(seen.body_len, BIG);
    assert!(!seen.body_error);
    assert_eq!(seen.body_sha256, expected);
}

#[tokio::test]
async fn a_50_mib_request_body_over_http2_streams_intact_to_the_upstream() {
    let (up, gw) = fixture().await;
    let data = pattern(BIG);
    let expected = BIG_PATTERN_SHA256;
    let reply = gw.h2().call("PUT", "/public/upload", &[], data).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last().expect("upstream saw the upload");
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.body_len, BIG);
    assert_eq!(seen.body_sha256, expected);
}

/// Download `path`, comparing every byte with the expected pattern as it streams in
/// (byte-exact, and much faster than hashing in a debug build). Returns (version, length).
async fn download_and_compare(client: &Client, path: &str, expected: &Bytes) -> (Version, usize) {
    let mut conn = client.connect().await;
    let request = client
        .request("GET", path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = conn.send_streaming(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let version = response.version();
    let mut body = response.into_body();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("response body frame");
        if let Some(data) = frame.data_ref() {
            let end = len + data.len();
            assert!(end <= expected.len(), "{version:?}: body longer than sent");
            assert!(
                data[..] == expected[len..end],
                "{version:?}: body differs in bytes {len}..{end}"
            );
            len = end;
        }
    }
    (version, len)
}

#[tokio::test]
async fn a_50_mib_response_body_streams_intact_to_http1_and_http2_clients() {
    let (_up, gw) = fixture().await;
    let expected = pattern(BIG);
    assert_eq!(
        sha256_hex(&expected[..MIB]),
        sha256_hex(&pattern_bytes(0, MIB))
    );
    let path = format!("/big/{BIG}");
    for (client, version) in [(gw.h1(), Version::HTTP_11), (gw.h2(), Version::HTTP_2)] {
        let (got_version, len) = download_and_compare(&client, &path, &expected).await;
        assert_eq!(got_version, version);
        assert_eq!(len, BIG, "{version:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket (H-08)

fn websocket_handshake(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

async fn assert_tunnel_echoes<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
) {
    for message in [&b"hello through the tunnel"[..], &[0u8, 1, 2, 255, 254][..]] {
        echo_through(stream, message).await;
    }
}

#[tokio::test]
async fn a_websocket_upgrade_on_an_anonymous_route_is_tunnelled_to_the_upstream() {
    let (up, gw) = fixture().await;
    let mut stream = gw.h1().tls().await;
    stream
        .write_all(websocket_handshake("/public/ws", "").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    assert_tunnel_echoes(&mut stream).await;
    let seen = up.last().expect("upstream saw the handshake");
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/public/ws");
    assert_eq!(seen.all("upgrade"), vec!["websocket"]);
    assert_eq!(
        seen.all("sec-websocket-key"),
        vec!["dGhlIHNhbXBsZSBub25jZQ=="]
    );
    assert_eq!(seen.all("sec-websocket-version"), vec!["13"]);
}

#[tokio::test]
async fn a_websocket_upgrade_on_a_protected_route_is_tunnelled_with_a_valid_token() {
    let (up, gw) = fixture().await;
    let token = fixture_token("alice", "read");
    let mut stream = gw.h1().tls().await;
    let handshake = websocket_handshake("/api/ws", &format!("Authorization: Bearer {token}\r\n"));
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_tunnel_echoes(&mut stream).await;
    let seen = up.last().expect("upstream saw the handshake");
    assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
}

#[tokio::test]
async fn a_websocket_upgrade_on_a_protected_route_without_a_token_is_401_and_never_forwarded() {
    let (up, gw) = fixture().await;
    let mut stream = gw.h1().tls().await;
    stream
        .write_all(websocket_handshake("/api/ws", "").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // Bytes sent afterwards are never tunnelled anywhere.
    let _ = stream.write_all(b"GET /public/smuggled HTTP/1.1\r\n").await;
    let rest = read_until_close(&mut stream, Duration::from_secs(1)).await;
    assert!(!rest.contains("101"), "{rest}");
    assert_eq!(up.count(), 0, "{:?}", up.seen());
    assert_eq!(up.connections(), 0);
}

// ---------------------------------------------------------------------------------------------
// Upstream failures and error bodies

#[tokio::test]
async fn a_closed_upstream_port_is_502_with_a_json_body() {
    let url = closed_port_url().await;
    let gw = Gateway::start(&config(&url, None, "")).await;
    for client in [gw.h1(), gw.h2()] {
        let reply = client.get("/public/x", &[]).await;
        assert_json_error(&reply, 502);
    }
}

#[tokio::test]
async fn an_upstream_slower_than_its_timeout_is_504_at_the_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(&up.url(), Some("timeout: 1s"), "")).await;
    let started = Instant::now();
    let reply = gw.h1().get("/slow/3000", &[]).await;
    let elapsed = started.elapsed();
    assert_json_error(&reply, 504);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(2900),
        "answered after {elapsed:?}"
    );
    // A request within the timeout is served normally.
    let reply = gw.h2().get("/slow/50", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn every_gateway_error_has_a_json_body() {
    let (_up, gw) = fixture().await;
    let alice = fixture_token("alice", "read");
    for client in [gw.h1(), gw.h2()] {
        assert_json_error(&client.get("/public/a%2Fb", &[]).await, 400);
        assert_json_error(&client.get("/api/items", &[]).await, 401);
        assert_json_error(&client.get_with_token("/api/items", "x.y.z").await, 401);
        assert_json_error(
            &client
                .call(
                    "DELETE",
                    "/api/items/1",
                    &[("authorization", &format!("Bearer {alice}"))],
                    Bytes::new(),
                )
                .await,
            403,
        );
        assert_json_error(&client.get("/internal/x", &[]).await, 403);
        assert_json_error(&client.get("/nowhere", &[]).await, 404);
        assert_json_error(
            &client.call("TRACE", "/public/x", &[], Bytes::new()).await,
            405,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Keep-alive

#[tokio::test]
async fn several_requests_reuse_one_client_connection_and_pooled_upstream_connections() {
    let (up, gw) = fixture().await;
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        let before = up.connections();
        let mut conn = client.connect().await;
        for i in 0..5 {
            let path = format!("/public/keepalive/{i}");
            let request = client
                .request(if i % 2 == 0 { "GET" } else { "POST" }, &path)
                .body(Full::new(Bytes::from(vec![b'x'; i])))
                .unwrap();
            let reply = conn.try_send(request).await.expect("connection kept alive");
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(reply.json()["target"], path.as_str());
            assert_eq!(reply.json()["body_len"], i);
        }
        assert_eq!(up.count(), 5);
        // One serving thread serves this client connection, and its pool keeps one upstream
        // connection for it (maybe one from an earlier client connection on the same thread).
        assert!(
            up.connections() - before <= 1,
            "upstream connections were not reused: {} for 5 requests",
            up.connections() - before
        );
    }
}

#[tokio::test]
async fn a_connection_still_streaming_a_response_is_not_handed_to_the_next_request() {
    let (up, gw) = fixture().await;
    let client = gw.h2();
    let mut conn = client.connect().await;
    const SIZE: usize = 4 * MIB;
    // Only the head is read: flow control then holds the rest of the body in the upstream
    // connection, which stays busy.
    let request = client
        .request("GET", &format!("/big/{SIZE}"))
        .body(Full::default())
        .unwrap();
    let streaming = conn.send_streaming(request).await;
    assert_eq!(streaming.status(), 200);
    for i in 0..3 {
        let path = format!("/public/beside-a-download/{i}");
        let reply = conn
            .send(client.request("GET", &path).body(Full::default()).unwrap())
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["target"], path.as_str());
    }
    let body = streaming.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), SIZE);
    assert_eq!(sha256_hex(&body), sha256_hex(&pattern_bytes(0, SIZE)));
    assert!(
        up.connections() >= 2,
        "the download's connection was shared"
    );
}

/// A plain HTTP/1.1 upstream that answers each request `200 ok` and then closes the connection
/// without announcing it (no `Connection: close`), as a server whose keep-alive ran out does;
/// counts the connections it accepted.
async fn start_closing_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn an_upstream_closing_its_connections_after_each_response_costs_no_request() {
    let (url, accepted) = start_closing_upstream().await;
    let gw = Gateway::start(&config(&url, None, "")).await;
    for client in [gw.h1(), gw.h2()] {
        let mut conn = client.connect().await;
        for i in 0..10 {
            let path = format!("/public/closing/{i}");
            let reply = conn
                .send(client.request("GET", &path).body(Full::default()).unwrap())
                .await;
            assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
            assert_eq!(reply.body, "ok");
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        20,
        "a closed connection was reused"
    );
}

// ---------------------------------------------------------------------------------------------
// connections that never (or barely) speak

fn short_timeout_config(up: &Upstream) -> String {
    config(&up.url(), None, "limits: { header_read_timeout: 1s }\n")
}

#[tokio::test]
async fn a_tcp_connection_that_sends_nothing_is_closed_within_the_header_read_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&short_timeout_config(&up)).await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    // Other clients are served meanwhile.
    let reply = gw.h1().get("/public/x", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "silent TCP connection still open after 3 s"
    );
}

#[tokio::test]
async fn a_tls_http1_connection_that_sends_nothing_is_closed_within_the_header_read_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&short_timeout_config(&up)).await;
    let mut silent = gw.h1().tls().await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "silent TLS (http/1.1) connection still open after 3 s"
    );
}

#[tokio::test]
async fn a_tls_http2_connection_that_sends_nothing_is_closed_within_the_header_read_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&short_timeout_config(&up)).await;
    let mut silent = gw.h2().tls().await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "silent TLS (h2) connection still open after 3 s"
    );
}

#[tokio::test]
async fn headers_trickled_slower_than_the_header_read_timeout_are_cut_off() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&short_timeout_config(&up)).await;
    let mut stream = gw.h1().tls().await;
    let started = Instant::now();
    stream
        .write_all(b"GET /public/slowloris HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // A deliberately slow client: one header line every 200 ms, never finishing.
    let mut closed = false;
    for i in 0..20 {
        if stream
            .write_all(format!("X-{i}: {i}\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let _ = stream.flush().await;
        if closed_within(&mut stream, Duration::from_millis(200)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "slow header sender never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off only after {:?}",
        started.elapsed()
    );
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// SPEC "Forwarding": HTTP/2 cookies (RFC 9113 §8.2.3)

#[tokio::test]
async fn several_http2_cookie_fields_reach_the_upstream_as_one_cookie_header() {
    let (up, gw) = fixture().await;
    let cookies = [("cookie", "a=1"), ("cookie", "b=2")];
    let reply = gw.h2().get("/public/cookies", &cookies).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last().expect("upstream saw the request");
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.all("cookie"), vec!["a=1; b=2"]);

    // A single field passes unchanged.
    let reply = gw.h2().get("/public/cookies", &[("cookie", "a=1")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().unwrap().all("cookie"), vec!["a=1"]);

    // HTTP/1.1 requests are forwarded as sent.
    let reply = gw.h1().get("/public/cookies", &cookies).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().unwrap().all("cookie"), vec!["a=1", "b=2"]);
}

// ---------------------------------------------------------------------------------------------
// SPEC "Forwarding": upstream origins in Location / Content-Location

/// The Location and Content-Location the client gets when the redirecting upstream is asked
/// to send `location` as both.
async fn redirect_seen_by(client: &Client, location: &str) -> (Option<String>, Option<String>) {
    let reply = client
        .get(
            "/public/redirect",
            &[
                ("x-test-location", location),
                ("x-test-content-location", location),
            ],
        )
        .await;
    assert_eq!(reply.status, 302, "{location}: {}", reply.text());
    let header = |name| reply.header(name).map(str::to_owned);
    (header("location"), header("content-location"))
}

#[tokio::test]
async fn locations_at_the_upstream_origin_are_rewritten_to_the_origin_the_client_used() {
    let up = start_redirecting_upstream().await;
    let gw = Gateway::start(&fixture_yaml(&format!("http://{up}"))).await;
    let port = up.port();
    let other = closed_port_url().await;
    let rewritten = [
        (format!("http://{up}/get?x=1"), "https://localhost/get?x=1"),
        (format!("HTTP://{up}/a/b#f"), "https://localhost/a/b#f"),
        (format!("http://{up}"), "https://localhost"),
        (format!("http://{up}?q"), "https://localhost?q"),
        // An app behind a proxy that ignores X-Forwarded-Proto (Flask, Django by default)
        // builds its own URLs as `http://` + the Host it was given: the client's origin over
        // plain HTTP, which no one serves. It is the client's origin over https.
        ("http://localhost/next".to_owned(), "https://localhost/next"),
        ("HTTP://LocalHost/a?b".to_owned(), "https://localhost/a?b"),
    ];
    let kept = [
        format!("{other}/get"),
        format!("https://{up}/get"),
        format!("http://localhost:{port}/get"),
        "http://localhost:81/get".to_owned(),
        format!("http://{up}.evil.test/get"),
        format!("http://user@{up}/get"),
        format!("//{up}/get"),
        "https://example.test/get".to_owned(),
        "/relative?x=1".to_owned(),
        "relative".to_owned(),
    ];
    for client in [gw.h1(), gw.h2()] {
        for (location, want) in &rewritten {
            let want = Some(want.to_string());
            assert_eq!(
                redirect_seen_by(&client, location).await,
                (want.clone(), want),
                "{location}"
            );
        }
        for location in &kept {
            let want = Some(location.clone());
            assert_eq!(
                redirect_seen_by(&client, location).await,
                (want.clone(), want),
                "{location}"
            );
        }
    }

    // The client's Host, port included, is the origin it used.
    let request = format!(
        "GET /public/redirect HTTP/1.1\r\nHost: gw.test:8443\r\n\
         X-Test-Location: http://{up}/next\r\nConnection: close\r\n\r\n"
    );
    let answer = parse_raw(
        &gw.h1()
            .raw(request.as_bytes(), Duration::from_secs(5))
            .await,
    );
    assert_eq!(answer.status, 302, "{answer:?}");
    assert_eq!(answer.header("location"), Some("https://gw.test:8443/next"));
}
