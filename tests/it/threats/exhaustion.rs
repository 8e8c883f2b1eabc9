//! THREATS …: HTTP/2 floods (rapid reset, provoked resets, CONTINUATION,
//! PING and SETTINGS), the stream concurrency limit, oversized header blocks and the
//! connection cap.

use crate::common::*;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::raw_h2::{
    frame, head, hpack, kv, H2End, H2Raw, CANCEL, CONTINUATION, DATA, END_HEADERS, END_STREAM,
    HEADERS, PING, REFUSED_STREAM, RST_STREAM, SETTINGS,
};

/// The fixture plus a public `/slow/**` route (the upstream waits `/slow/<ms>`).
fn slow_yaml(up: &Upstream) -> String {
    format!(
        "{}  - {{ id: slow, path: /slow/**, upstream: up, public: true }}\n",
        fixture_yaml(&up.url())
    )
}

/// A fresh HTTP/1.1 request still gets an answer promptly.
async fn assert_still_serving(gw: &Gateway, label: &str) {
    let client = gw.h1();
    let reply = tokio::time::timeout(Duration::from_secs(5), async move {
        client.get("/public/canary", &[]).await
    })
    .await
    .unwrap_or_else(|_| panic!("{label}: a fresh request got no answer within 5 s"));
    assert_eq!(reply.status, 200, "{label}: canary {}", reply.text());
}

// ---------------------------------------------------------------------------------------------
// R-07 …: HTTP/2 floods.

#[tokio::test]
async fn http2_rapid_reset_flood_leaves_the_gateway_serving() {
    // THREATS R-07 (CVE-2023-44487)
    let up = Upstream::start().await;
    let gw = Gateway::start(&slow_yaml(&up)).await;
    let mut conn = H2Raw::open(&gw).await;
    let streams = 2000u32;
    let mut burst = Vec::new();
    let block = hpack(&head(b"GET", b"/slow/2000"));
    let started = Instant::now();
    for i in 0..streams {
        let id = 1 + 2 * i;
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        if burst.len() > 64 * 1024 {
            if !conn.write(&burst).await {
                break;
            }
            burst.clear();
        }
    }
    conn.write(&burst).await;
    let drained = conn
        .drain(Duration::from_secs(1), Duration::from_secs(10))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the flood took {:?}",
        started.elapsed()
    );
    assert!(
        drained.responses < 50,
        "cancelled streams were answered: {drained:?}"
    );
    assert_still_serving(&gw, "after a rapid-reset flood").await;
}

#[tokio::test]
async fn http2_stream_errors_provoked_in_bulk_end_in_goaway() {
    // THREATS R-08 (MadeYouReset, CVE-2025-8671): each HEADERS block lacks `:path`, so the
    // server resets the stream itself; a budget of such resets must end the connection.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let mut conn = H2Raw::open(&gw).await;
    let mut fields = head(b"GET", b"/public/x");
    fields.retain(|(n, _)| *n != b":path");
    let block = hpack(&fields);
    let mut burst = Vec::new();
    for i in 0..3000u32 {
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, &block));
        if burst.len() > 64 * 1024 {
            if !conn.write(&burst).await {
                break;
            }
            burst.clear();
        }
    }
    conn.write(&burst).await;
    let drained = conn
        .drain(Duration::from_secs(2), Duration::from_secs(15))
        .await;
    assert_eq!(up.count(), 0, "malformed streams reached the upstream");
    assert!(
        drained.goaway.is_some() || drained.closed,
        "3000 server-side stream resets and the connection is still open: {} resets",
        drained.resets.len()
    );
    assert_still_serving(&gw, "after provoked resets").await;
}

#[tokio::test]
async fn http2_continuation_flood_is_cut_off_and_never_forwarded() {
    // THREATS R-09 (CVE-2024-27316 class)
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    for (label, piece) in [
        ("empty CONTINUATION frames", Vec::new()),
        (
            "CONTINUATION frames of header fields",
            hpack(&[kv(b"x-c", "v".repeat(100).as_bytes())]),
        ),
    ] {
        let mut conn = H2Raw::open(&gw).await;
        assert!(
            conn.frame(HEADERS, 0, 1, &hpack(&head(b"GET", b"/public/x")))
                .await
        );
        let started = Instant::now();
        let mut burst = Vec::new();
        let mut open = true;
        for _ in 0..100_000 {
            burst.extend(frame(CONTINUATION, 0, 1, &piece));
            if burst.len() > 64 * 1024 {
                open = conn.write(&burst).await;
                burst.clear();
                if !open || started.elapsed() > Duration::from_secs(10) {
                    break;
                }
            }
        }
        if open {
            conn.write(&burst).await;
        }
        let end = conn.end_of(1, Duration::from_secs(5)).await;
        assert!(
            matches!(end, H2End::GoAway(_) | H2End::Closed | H2End::Reset(_))
                || matches!(end, H2End::Status(code) if code >= 400),
            "{label}: {end:?}"
        );
        assert_eq!(up.count(), 0, "{label}: reached the upstream");
    }
    assert_still_serving(&gw, "after CONTINUATION floods").await;
}

#[tokio::test]
async fn http2_streams_beyond_the_concurrency_limit_are_refused() {
    // THREATS R-10: 200 concurrent streams by default; the rest get REFUSED_STREAM.
    let up = Upstream::start().await;
    let gw = Gateway::start(&slow_yaml(&up)).await;
    let mut conn = H2Raw::open(&gw).await;
    let block = hpack(&head(b"GET", b"/slow/3000"));
    let mut burst = Vec::new();
    for i in 0..300u32 {
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, &block));
    }
    assert!(conn.write(&burst).await);
    let drained = conn
        .drain(Duration::from_millis(1500), Duration::from_secs(10))
        .await;
    let refused = drained
        .resets
        .iter()
        .filter(|c| **c == REFUSED_STREAM)
        .count();
    assert!(
        refused >= 100 || drained.goaway.is_some(),
        "300 concurrent streams, {refused} refused: {drained:?}"
    );
    assert!(
        up.count() <= 200,
        "{} requests in flight upstream from one connection",
        up.count()
    );
}

#[tokio::test]
async fn http2_ping_and_settings_floods_leave_the_gateway_serving() {
    // THREATS R-10 (CVE-2019-9512, CVE-2019-9515)
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    for (label, one) in [
        ("PING", frame(PING, 0, 0, &[7u8; 8])),
        ("SETTINGS", frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
        ("zero-length DATA", frame(DATA, 0, 1, &[])),
    ] {
        let mut conn = H2Raw::open(&gw).await;
        if label == "zero-length DATA" {
            assert!(
                conn.request(1, &head(b"POST", b"/public/sink"), false)
                    .await
            );
        }
        let started = Instant::now();
        let burst: Vec<u8> = one.repeat(1000);
        for _ in 0..20 {
            if !conn.write(&burst).await || started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        // Do not read the acknowledgements: the gateway must not buffer them without bound
        // or stall other clients while this one ignores them.
        assert_still_serving(&gw, &format!("during a {label} flood")).await;
        drop(conn);
    }
}

#[tokio::test]
async fn an_http2_header_block_over_the_limit_is_refused_and_never_forwarded() {
    // THREATS R-12: 20 KB of headers against the 16 KiB default.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let value = "v".repeat(1000);
    let names: Vec<String> = (0..20).map(|i| format!("x-big-{i}")).collect();
    let mut fields = head(b"GET", b"/public/x");
    for name in &names {
        fields.push((name.as_bytes(), value.as_bytes()));
    }
    // Split over HEADERS + CONTINUATION so each frame fits the default 16 KiB frame size.
    let block = hpack(&fields);
    let mut conn = H2Raw::open(&gw).await;
    let (first, rest) = block.split_at(12 * 1024);
    assert!(conn.frame(HEADERS, END_STREAM, 1, first).await);
    conn.frame(CONTINUATION, END_HEADERS, 1, rest).await;
    let end = conn.end_of(1, Duration::from_secs(5)).await;
    assert!(
        matches!(
            end,
            H2End::Status(431) | H2End::Reset(_) | H2End::GoAway(_) | H2End::Closed
        ),
        "{end:?}"
    );
    assert_eq!(up.count(), 0, "reached the upstream");
}

// ---------------------------------------------------------------------------------------------
// the connection cap.

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_slots_come_back() {
    // THREATS R-05
    let up = Upstream::start().await;
    let yaml = format!("limits:\n  max_connections: 8\n{}", fixture_yaml(&up.url()));
    let gw = Gateway::start(&yaml).await;
    // Eight idle TLS connections take every slot.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(gw.h1().tls().await);
    }
    // Give the accept loop a moment to count the last of them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    for i in 0..20 {
        let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("over-cap connection {i} was held open"));
        assert!(matches!(read, Ok(0) | Err(_)), "{i}: {read:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "20 over-cap connections took {:?}",
        started.elapsed()
    );
    // The held connections still work.
    let mut first = idle.remove(0);
    first
        .write_all(b"GET /public/held HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = parse_raw(&read_until_close(&mut first, Duration::from_secs(3)).await);
    assert_eq!(answer.status, 200, "{answer:?}");
    drop(first);
    drop(idle);
    // Slots come back once connections end.
    until_answered(
        &gw,
        "/public/x",
        Duration::from_secs(5),
        "slots were not released",
    )
    .await;
}
