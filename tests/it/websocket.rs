//! WebSocket tunnels after the decision (THREATS H-08, R-05): a tunnel keeps its connection's
//! `max_connections` slot for its whole life, is closed when the shutdown grace period ends,
//! and is closed after `limits.idle_timeout` with no traffic in either direction.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

fn yaml(upstream: &str, limits: &str) -> String {
    let fixture = fixture_yaml(upstream);
    format!("limits:\n{limits}{fixture}")
}

/// Open a tunnel to the recording upstream's `/ws` echo through the gateway.
async fn open_tunnel(gw: &Gateway) -> TlsStream<tokio::net::TcpStream> {
    let mut stream = gw.h1().tls().await;
    stream
        .write_all(
            b"GET /public/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte))
            .await
            .expect("101 in time")
            .expect("101");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_through(&mut stream, b"ping").await;
    stream
}

/// Wait until the peer closes the stream (EOF or error); the time it took, or `None` if it
/// was still open after `limit`.
async fn closed_within(
    stream: &mut TlsStream<tokio::net::TcpStream>,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn an_open_tunnel_holds_its_connection_slot() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml(&up.url(), "  max_connections: 1\n")).await;
    let mut tunnel = open_tunnel(&gw).await;
    // The one slot is the tunnel's: a new connection is closed without an answer.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let mut buf = [0u8; 16];
        tcp.read(&mut buf).await
    })
    .await
    .expect("the gateway should close an over-cap connection at once");
    assert!(matches!(refused, Ok(0) | Err(_)), "{refused:?}");
    echo_through(&mut tunnel, b"still open").await;
    drop(tunnel);
    // Once the tunnel is gone its slot is free again.
    until_answered(
        &gw,
        "/public/x",
        Duration::from_secs(5),
        "the slot was not released",
    )
    .await;
}

#[tokio::test]
async fn a_tunnel_is_closed_when_the_shutdown_grace_period_ends() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml(&up.url(), "  shutdown_grace: 1s\n")).await;
    let mut tunnel = open_tunnel(&gw).await;
    let shutdown = tokio::spawn(gw.shutdown());
    let closed = closed_within(&mut tunnel, Duration::from_secs(10)).await;
    let closed = closed.expect("the tunnel outlived the shutdown grace period");
    assert!(
        closed >= Duration::from_millis(500),
        "closed after {closed:?}, before the grace ended"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the gateway finished draining")
        .unwrap();
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_a_busy_one_kept() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml(&up.url(), "  idle_timeout: 1s\n")).await;
    let mut busy = open_tunnel(&gw).await;
    let mut idle = open_tunnel(&gw).await;
    // Traffic every 300 ms for 2.5 s keeps `busy` open past its idle timeout.
    let keep_busy = async {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            echo_through(&mut busy, b"tick").await;
        }
        busy
    };
    let (mut busy, idle_closed) =
        tokio::join!(keep_busy, closed_within(&mut idle, Duration::from_secs(8)));
    let idle_closed = idle_closed.expect("an idle tunnel stayed open");
    assert!(
        idle_closed >= Duration::from_millis(800),
        "closed after {idle_closed:?}"
    );
    echo_through(&mut busy, b"still here").await;
}
