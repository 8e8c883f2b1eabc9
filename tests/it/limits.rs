//! Slow and oversized traffic (THREATS R-03 slow body, R-04 slow read, R-06 body size): real
//! gateway, real TLS, real recording upstream.

use crate::common::*;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The fixture config with extra `limits:` settings.
fn config_with(up: &Upstream, limits: &str) -> String {
    format!("limits: {{ {limits} }}\n{}", fixture_yaml(&up.url()))
}

/// Wait until the upstream has recorded `n` requests (it records after reading the body).
async fn upstream_saw(up: &Upstream, n: usize) -> bool {
    for _ in 0..100 {
        if up.count() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A raw HTTP/1.1 answer, parsed by the shared [`parse_raw`].
fn h1_answer(raw: &str) -> Answer {
    assert!(
        raw.starts_with("HTTP/1.1 "),
        "not an HTTP/1.1 answer: {raw:?}"
    );
    parse_raw(raw)
}

// ---------------------------------------------------------------------------------------------
// slow body

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_upstream_request_is_aborted() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "body_read_timeout: 1s")).await;
    let mut stream = gw.h1().tls().await;
    stream
        .write_all(
            b"POST /public/upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\nabc",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let raw = read_until_close(&mut stream, Duration::from_secs(6)).await;
    let waited = started.elapsed();
    let answer = h1_answer(&raw);
    assert_eq!(answer.status, 408, "{raw}");
    assert!(
        waited < Duration::from_secs(4),
        "took {waited:?} (allowance ≈ 1 s)"
    );
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.json().unwrap()["error"], "request_timeout", "{raw}");
    // The upstream saw the request start, then lose its body: never a complete request.
    assert!(upstream_saw(&up, 1).await, "upstream never saw the request");
    let seen = up.last().unwrap();
    assert!(seen.body_error, "upstream got a complete body: {seen:?}");
    assert!(seen.body_len < 100);
}

#[tokio::test]
async fn a_stalled_h2_body_gets_408() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "body_read_timeout: 1s")).await;
    let client = gw.h2();
    let io = TokioIo::new(client.tls().await);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let chunks = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    }));
    let request = client
        .request("POST", "/public/upload")
        .body(StreamBody::new(chunks))
        .unwrap();
    tx.send(Bytes::from_static(b"abc")).unwrap();
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(6), sender.send_request(request))
        .await
        .expect("no answer within 6 s")
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(4));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("request_timeout"));
    drop(tx);
}

#[tokio::test]
async fn a_steady_upload_slower_than_the_timeout_but_above_the_minimum_rate_completes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(
        &up,
        "body_read_timeout: 1s, body_min_rate: 1KiB",
    ))
    .await;
    let mut stream = gw.h1().tls().await;
    // 8 KiB in 8 chunks, 300 ms apart: 2.4 s in all, far over 1 s, but each KiB earns 1 s.
    stream
        .write_all(
            b"POST /public/upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 8192\r\n\r\n",
        )
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(&[b'x'; 1024]).await.unwrap();
    }
    let raw = read_until_close(&mut stream, Duration::from_secs(2)).await;
    let answer = h1_answer(&raw);
    assert_eq!(answer.status, 200, "{raw}");
    assert_eq!(answer.json().unwrap()["body_len"], 8192, "{raw}");
}

#[tokio::test]
async fn a_login_body_that_stalls_gets_408() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "body_read_timeout: 1s")).await;
    let raw = gw
        .h1()
        .raw(
            b"POST /login HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 60\r\n\r\nusername=bob&pass",
            Duration::from_secs(5),
        )
        .await;
    let answer = h1_answer(&raw);
    assert_eq!(answer.status, 408, "{raw}");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
}

// ---------------------------------------------------------------------------------------------
// body size cap on proxied routes

#[tokio::test]
async fn a_declared_length_over_the_cap_is_refused_before_the_upstream_is_contacted() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "max_body_size: 1KiB")).await;
    let raw = gw
        .h1()
        .raw(
            b"POST /public/upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2048\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
    let answer = h1_answer(&raw);
    assert_eq!(answer.status, 413, "{raw}");
    assert_eq!(answer.header("connection"), Some("close"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(up.connections(), 0, "the upstream was contacted");
}

#[tokio::test]
async fn a_chunked_body_crossing_the_cap_gets_413_and_never_reaches_the_upstream_whole() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "max_body_size: 1KiB")).await;
    for client in [gw.h1(), gw.h2()] {
        up.clear();
        // A complete body goes out with its length: the declared-length refusal, both protocols.
        let reply = client
            .call("POST", "/public/upload", &[], vec![b'y'; 4096])
            .await;
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            reply.text()
        );
        assert!(up.seen().iter().all(|s| s.body_len <= 1024));
    }
    // Chunked, so the cap is crossed mid-stream, after the upstream request has begun.
    up.clear();
    let mut stream = gw.h1().tls().await;
    stream
        .write_all(b"POST /public/upload HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..4 {
        stream.write_all(b"200\r\n").await.unwrap();
        stream.write_all(&[b'z'; 512]).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let raw = read_until_close(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(h1_answer(&raw).status, 413, "{raw}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(up.seen().iter().all(|s| s.body_error && s.body_len <= 1024));
}

#[tokio::test]
async fn bodies_within_the_cap_pass_intact() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "max_body_size: 1KiB")).await;
    for client in [gw.h1(), gw.h2()] {
        let reply = client
            .call("POST", "/public/upload", &[], vec![b'k'; 1024])
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["body_len"], 1024);
    }
}

#[tokio::test]
async fn a_route_cap_overrides_the_global_one() {
    let up = Upstream::start().await;
    let yaml = format!(
        "{}  - {{ id: uploads, path: /uploads/**, upstream: up, public: true, max_body_size: 8KiB }}\n",
        config_with(&up, "max_body_size: 1KiB")
    );
    let gw = Gateway::start(&yaml).await;
    let client = gw.h2();
    let upload = client
        .call("POST", "/uploads/a", &[], vec![b'u'; 4096])
        .await;
    assert_eq!(upload.status, 200, "{}", upload.text());
    assert_eq!(upload.json()["body_len"], 4096);
    let elsewhere = client
        .call("POST", "/public/a", &[], vec![b'u'; 4096])
        .await;
    assert_eq!(elsewhere.status, StatusCode::PAYLOAD_TOO_LARGE);
    let too_big = client
        .call("POST", "/uploads/a", &[], vec![b'u'; 16 * 1024])
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn without_a_cap_a_large_body_streams_through() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let body = pattern_bytes(0, 8 * 1024 * 1024);
    let expected = sha256_hex(&body);
    let reply = gw.h2().call("POST", "/public/upload", &[], body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body_sha256"], expected.as_str());
}

// ---------------------------------------------------------------------------------------------
// slow read

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "write_timeout: 1s")).await;
    // A small receive window, so the gateway's writes stall however fast it produces.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let tcp = socket.connect(gw.addr).await.unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(tls_client_config(&gw.pki.ca_der, &[b"http/1.1"]));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    // Big enough to outlast every socket buffer between us, small enough for the upstream
    // (a debug build) to produce in well under a second.
    let size = 16 * 1024 * 1024;
    stream
        .write_all(
            format!(
                "GET /public/big/{size} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Read nothing while the buffers fill and the gateway's write stalls.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut received = 0usize;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    if head.len() < 512 {
                        head.extend_from_slice(&buf[..n.min(512)]);
                    }
                    received += n;
                }
            }
        }
    })
    .await
    .unwrap_or(false);
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("application/octet-stream"),
        "not the big response: {head}"
    );
    assert!(
        closed,
        "connection still open after 14 s ({received} bytes read)"
    );
    assert!(
        received < size,
        "the whole {size}-byte body arrived: the stalled write was not cut"
    );
    // The gateway is still serving.
    assert_eq!(gw.h1().get("/public/x", &[]).await.status, 200);
}

#[tokio::test]
async fn a_slow_but_steady_reader_gets_the_whole_body() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "write_timeout: 1s")).await;
    let mut stream = gw.h1().tls().await;
    let size = 1024 * 1024;
    stream
        .write_all(
            format!(
                "GET /public/big/{size} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 512 * 1024];
    loop {
        // Pauses shorter than the timeout between reads.
        tokio::time::sleep(Duration::from_millis(200)).await;
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    // The streamed body is chunked: it is whole when the last chunk came after all its bytes.
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert!(
        received.len() > size,
        "body cut short: {} bytes",
        received.len()
    );
    assert!(received.ends_with(b"\r\n0\r\n\r\n"), "no final chunk");
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn bad_limits_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, message) in [
        (
            "max_body_size: 0",
            "limits.max_body_size: must be at least 1B",
        ),
        ("body_min_rate: fast", "limits.body_min_rate"),
        ("write_timeout: 5", "limits.write_timeout"),
    ] {
        let path = dir.path().join("gateway.yaml");
        std::fs::write(
            &path,
            format!(
                "listen: 127.0.0.1:0\nlimits:\n  {setting}\n{}",
                fixture_yaml("http://127.0.0.1:9")
            ),
        )
        .unwrap();
        let err = portcullis::config::Config::load(&path)
            .expect_err(setting)
            .to_string();
        assert!(err.contains("gateway.yaml:3:"), "{setting}: {err}");
        assert!(err.contains(message), "{setting}: {err}");
    }
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:0\n{}  - {{ path: /uploads/**, upstream: up, public: true, max_body_size: lots }}\n",
            fixture_yaml("http://127.0.0.1:9")
        ),
    )
    .unwrap();
    let err = portcullis::config::Config::load(&path)
        .expect_err("bad route cap")
        .to_string();
    assert!(err.contains("max_body_size: `lots`"), "{err}");
    assert!(err.contains("gateway.yaml:"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// L-04 login floods: free refusals are held, so a retry loop cannot become a request flood

#[tokio::test]
async fn a_locked_out_login_is_refused_only_after_a_hold() {
    let up = Upstream::start().await;
    let yaml = format!(
        "login: {{ lockout: {{ failures: 1, window: 1m, duration: 1m }} }}\n{}",
        fixture_yaml(&up.url())
    );
    let gw = Gateway::start(&yaml).await;
    let client = gw.h1();
    let first = client.login("bob", "wrong").await;
    assert_eq!(first.status, StatusCode::BAD_REQUEST, "{}", first.text());
    let started = Instant::now();
    let locked = client.login("bob", "wrong").await;
    let held = started.elapsed();
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        held >= Duration::from_millis(450),
        "answered after {held:?}"
    );
    assert_eq!(client.get("/public/x", &[]).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// an HTTP/2 client that stays connected but sends nothing more

/// An h2 connection whose driver task ends when the gateway closes it.
async fn h2_connection(
    gw: &Gateway,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let io = TokioIo::new(gw.h2().tls().await);
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, driver)
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_the_idle_timeout() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "idle_timeout: 1s")).await;
    let (mut sender, driver) = h2_connection(&gw).await;
    let request = gw
        .h2()
        .request("GET", "/public/x")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    // The client's h2 stack keeps the connection up: only the idle timeout ends it.
    let closed = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(closed.is_ok(), "idle h2 connection still open after 5 s");
}

#[tokio::test]
async fn a_busy_h2_connection_is_not_closed_for_idleness() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config_with(&up, "idle_timeout: 1s")).await;
    let (mut sender, driver) = h2_connection(&gw).await;
    // A request every 300 ms for 3 s: never idle for the full second.
    for _ in 0..10 {
        let request = gw
            .h2()
            .request("GET", "/public/x")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .expect("connection closed");
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!driver.is_finished());
}
