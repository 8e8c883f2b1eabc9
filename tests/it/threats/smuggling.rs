//! THREATS T-08, S-10: HTTP/2 requests a well-behaved client cannot send (malformed
//! pseudo-headers, and fields that would desync an HTTP/1.1 upstream).

use crate::common::*;

use std::time::Duration;

use super::raw_h2::{h2_one, head, kv, post_with, Fields, H2End, H2Raw, DATA, END_STREAM};

// ---------------------------------------------------------------------------------------------
// T-08: HTTP/2 pseudo-headers.

#[tokio::test]
async fn malformed_http2_pseudo_headers_are_refused_and_never_forwarded() {
    // THREATS T-08
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let base = |path: &'static [u8]| -> Vec<(&'static [u8], &'static [u8])> { head(b"GET", path) };
    let mut cases: Vec<(&str, Fields)> = vec![
        (":path *", base(b"*")),
        (":path without a leading slash", base(b"public/x")),
        (":path absolute URI", base(b"http://evil.test/public/x")),
        (":path with a space", base(b"/public/a b")),
        (":path empty", base(b"")),
    ];
    let mut duplicate = base(b"/public/x");
    duplicate.push(kv(b":path", b"/admin/users"));
    cases.push(("duplicate :path", duplicate));
    let mut missing = base(b"/public/x");
    missing.retain(|(n, _)| *n != b":path");
    cases.push(("missing :path", missing));
    cases.push((
        "empty :authority",
        vec![
            kv(b":method", b"GET"),
            kv(b":scheme", b"https"),
            kv(b":authority", b""),
            kv(b":path", b"/public/x"),
        ],
    ));
    let late = vec![
        kv(b":method", b"GET"),
        kv(b":scheme", b"https"),
        kv(b"x-a", b"1"),
        kv(b":authority", b"localhost"),
        kv(b":path", b"/public/x"),
    ];
    cases.push(("pseudo-header after a regular one", late));
    let mut unknown = base(b"/public/x");
    unknown.push(kv(b":evil", b"1"));
    cases.push(("unknown pseudo-header", unknown));
    for (label, fields) in cases {
        up.clear();
        let end = h2_one(&gw, &fields, None).await;
        assert!(end.is_refusal(), "{label}: {end:?}");
        assert_eq!(
            up.count(),
            0,
            "{label}: reached the upstream {:?}",
            up.seen()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// S-10: HTTP/2 → HTTP/1 downgrade.

#[tokio::test]
async fn http2_requests_that_would_desync_an_http1_upstream_are_refused() {
    // THREATS S-10
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let cases: Vec<(&str, Fields, Option<&[u8]>)> = vec![
        (
            "content-length 5, 10 bytes of DATA",
            post_with(b"content-length", b"5"),
            Some(b"0123456789"),
        ),
        (
            "content-length 5, no DATA",
            post_with(b"content-length", b"5"),
            None,
        ),
        (
            "transfer-encoding chunked",
            post_with(b"transfer-encoding", b"chunked"),
            Some(b"0\r\n\r\n"),
        ),
        (
            "CRLF in a value",
            post_with(b"x-a", b"a\r\nX-Forwarded-User: root"),
            Some(b"x"),
        ),
        (
            "LF in a value",
            post_with(b"x-a", b"a\nGET /admin HTTP/1.1"),
            Some(b"x"),
        ),
        (
            "uppercase name",
            post_with(b"X-Forwarded-User", b"root"),
            Some(b"x"),
        ),
        ("colon in a name", post_with(b"x-foo:bar", b"1"), Some(b"x")),
        ("space in a name", post_with(b"x foo", b"1"), Some(b"x")),
        (
            "connection header",
            post_with(b"connection", b"keep-alive"),
            Some(b"x"),
        ),
        (
            "te other than trailers",
            post_with(b"te", b"gzip"),
            Some(b"x"),
        ),
        (
            "request line in :method",
            vec![
                kv(b":method", b"GET /admin HTTP/1.1"),
                kv(b":scheme", b"https"),
                kv(b":authority", b"localhost"),
                kv(b":path", b"/public/x"),
            ],
            None,
        ),
    ];
    for (label, fields, body) in cases {
        up.clear();
        let end = h2_one(&gw, &fields, body).await;
        assert!(end.is_refusal(), "{label}: {end:?}");
        // Give a (wrongly) forwarded request time to arrive before looking.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            up.count(),
            0,
            "{label}: reached the upstream {:?}",
            up.seen()
        );
    }
    // An accepted HTTP/2 body without content-length reaches the HTTP/1.1 upstream with one
    // framing header the gateway computed, and exactly the bytes sent.
    up.clear();
    let end = h2_one(&gw, &head(b"POST", b"/public/x"), Some(b"0123456789")).await;
    assert_eq!(end, H2End::Status(200));
    let seen = up.last().expect("forwarded");
    assert_eq!(seen.body_len, 10);
    let framing = seen.all("content-length").len() + seen.all("transfer-encoding").len();
    assert_eq!(framing, 1, "{:?}", seen.headers);
    assert!(seen.all("x-forwarded-user").is_empty());
}

/// The DATA frame that overruns a declared `content-length` arrives after a pause: the
/// gateway must not have started the upstream request on the strength of the head alone.
#[tokio::test]
async fn an_http2_body_overrunning_its_content_length_after_a_pause_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let mut conn = H2Raw::open(&gw).await;
    assert!(
        conn.request(1, &post_with(b"content-length", b"5"), false)
            .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.frame(DATA, END_STREAM, 1, b"0123456789").await;
    let end = conn.end_of(1, Duration::from_secs(3)).await;
    assert!(end.is_refusal(), "{end:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(up.count(), 0, "reached the upstream {:?}", up.seen());
}
