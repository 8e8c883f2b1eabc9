//! Rows of the threat catalogue (THREATS.md) that no other test file covers: malformed header
//! syntax (H-13, H-14), OPTIONS on protected routes (P-20), HTTP/2 frames a well-behaved client
//! cannot send (T-08, S-10, R-07… ), the connection cap, token lifetime, key
//! rotation and ECDSA forgeries (J-09, J-12, J-21, J-22), login timing (L-03) and TLS properties
//! . Black-box: the oracle is the pair (what the client got, what the recording
//! upstream received).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;

use std::time::{Duration, Instant};

use std::sync::Arc;

use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Raw bytes over TLS (HTTP/1.1), parsed.
async fn h1_raw(gw: &Gateway, request: &[u8]) -> Answer {
    parse_raw(&gw.h1().raw(request, Duration::from_secs(2)).await)
}

/// Assert a refusal with this status that never reached the upstream.
fn assert_refused(label: &str, answer: &Answer, up: &Upstream, code: u16) {
    assert_eq!(
        answer.status, code,
        "{label}: expected {code}, got {answer:?}"
    );
    assert_eq!(
        up.count(),
        0,
        "{label}: reached the upstream: {:?}",
        up.seen()
    );
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/2 client that writes frames byte by byte, so it can send what h2 refuses to.

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;

/// What a raw HTTP/2 stream ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H2End {
    /// A response with this `:status` (0 when it could not be decoded).
    Status(u16),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed without either.
    Closed,
    /// Nothing within the wait.
    Silent,
}

impl H2End {
    /// A refusal of any kind: anything but a 2xx/3xx response or silence.
    fn is_refusal(self) -> bool {
        match self {
            H2End::Status(code) => code >= 400,
            H2End::Reset(_) | H2End::GoAway(_) | H2End::Closed => true,
            H2End::Silent => false,
        }
    }
}

enum Read {
    Frame(u8, u8, u32, Vec<u8>),
    Closed,
    Timeout,
}

struct H2Raw {
    io: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl H2Raw {
    /// TLS with ALPN h2, the client preface and an empty SETTINGS frame.
    async fn open(gw: &Gateway) -> H2Raw {
        let io = gw.h2().tls().await;
        assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut conn = H2Raw {
            io,
            buf: Vec::new(),
        };
        assert!(conn.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await);
        assert!(conn.frame(SETTINGS, 0, 0, &[]).await);
        conn
    }

    /// Write and flush; false when the peer closed or stopped reading for 3 s.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        let io = &mut self.io;
        let write = async move { io.write_all(bytes).await.is_ok() && io.flush().await.is_ok() };
        tokio::time::timeout(Duration::from_secs(3), write)
            .await
            .unwrap_or(false)
    }

    async fn frame(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8]) -> bool {
        self.write(&frame(ty, flags, stream, payload)).await
    }

    /// A request head in one HEADERS frame.
    async fn request(&mut self, stream: u32, fields: &[(&[u8], &[u8])], end_stream: bool) -> bool {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.frame(HEADERS, flags, stream, &hpack(fields)).await
    }

    async fn read_frame(&mut self, wait: Duration) -> Read {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let ty = self.buf[3];
                    let flags = self.buf[4];
                    let stream = u32::from_be_bytes([
                        self.buf[5] & 0x7f,
                        self.buf[6],
                        self.buf[7],
                        self.buf[8],
                    ]);
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    return Read::Frame(ty, flags, stream, payload);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(wait, self.io.read(&mut chunk)).await {
                Err(_) => return Read::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Read::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Read until `stream` ends (or the connection does), answering SETTINGS and PING.
    async fn end_of(&mut self, stream: u32, wait: Duration) -> H2End {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return H2End::Silent;
            }
            match self.read_frame(left).await {
                Read::Timeout => return H2End::Silent,
                Read::Closed => return H2End::Closed,
                Read::Frame(ty, flags, id, payload) => match ty {
                    SETTINGS if flags & ACK == 0 => {
                        self.frame(SETTINGS, ACK, 0, &[]).await;
                    }
                    PING if flags & ACK == 0 => {
                        self.frame(PING, ACK, 0, &payload).await;
                    }
                    GOAWAY => return H2End::GoAway(u32_at(&payload, 4)),
                    RST_STREAM if id == stream => return H2End::Reset(u32_at(&payload, 0)),
                    HEADERS if id == stream => {
                        return H2End::Status(decode_status(&payload, flags).unwrap_or(0))
                    }
                    _ => {}
                },
            }
        }
    }

    /// Read everything until the connection goes quiet for `quiet` or closes (at most `limit`),
    /// answering SETTINGS; returns the frames of interest seen.
    async fn drain(&mut self, quiet: Duration, limit: Duration) -> Drained {
        let mut out = Drained::default();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.read_frame(quiet).await {
                Read::Timeout => break,
                Read::Closed => {
                    out.closed = true;
                    break;
                }
                Read::Frame(ty, flags, _, payload) => match ty {
                    SETTINGS if flags & ACK == 0 => {
                        self.frame(SETTINGS, ACK, 0, &[]).await;
                    }
                    GOAWAY => out.goaway = Some(u32_at(&payload, 4)),
                    RST_STREAM => out.resets.push(u32_at(&payload, 0)),
                    HEADERS => out.responses += 1,
                    _ => {}
                },
            }
        }
        out
    }
}

#[derive(Debug, Default)]
struct Drained {
    goaway: Option<u32>,
    resets: Vec<u32>,
    responses: usize,
    closed: bool,
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn u32_at(payload: &[u8], at: usize) -> u32 {
    payload
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(u32::MAX)
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | u8::try_from(value).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap() | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap());
}

/// Every field as "literal without indexing, new name", no Huffman (RFC 7541 §6.2.2): the
/// bytes go on the wire exactly as given, whatever they are.
fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// The `:status` of a response HEADERS block when it is the first field (as servers send it):
/// static-table entries and literals with Huffman-coded digits.
fn decode_status(payload: &[u8], flags: u8) -> Option<u16> {
    let mut p = payload;
    if flags & 0x8 != 0 {
        let pad = usize::from(*p.first()?);
        p = p.get(1..p.len().checked_sub(pad)?)?;
    }
    if flags & 0x20 != 0 {
        p = p.get(5..)?;
    }
    // Dynamic table size updates (0b001xxxxx) may come first.
    while p.first()? & 0xe0 == 0x20 {
        let mut skip = 1;
        if p[0] & 0x1f == 0x1f {
            while p.get(skip)? & 0x80 != 0 {
                skip += 1;
            }
            skip += 1;
        }
        p = p.get(skip..)?;
    }
    let b = *p.first()?;
    if b & 0x80 != 0 {
        return match b & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    let index = if b & 0xc0 == 0x40 { b & 0x3f } else { b & 0x0f };
    if !(8..=14).contains(&index) {
        return None;
    }
    let len_byte = *p.get(1)?;
    let len = usize::from(len_byte & 0x7f);
    let raw = p.get(2..2 + len)?;
    let text = if len_byte & 0x80 != 0 {
        huffman_digits(raw)?
    } else {
        String::from_utf8(raw.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Decode a Huffman string made only of digits (RFC 7541 Appendix B: `0`-`2` are 5-bit codes,
/// `3`-`9` are `011001`…`011111`), ending in all-ones padding.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let total = bytes.len() * 8;
    let bit = |i: usize| (bytes[i / 8] >> (7 - i % 8)) & 1;
    let read = |from: usize, n: usize| (from..from + n).fold(0u8, |acc, i| (acc << 1) | bit(i));
    let mut out = String::new();
    let mut at = 0;
    while total - at >= 5 {
        let five = read(at, 5);
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
            continue;
        }
        if total - at >= 6 {
            let six = read(at, 6);
            if (0b011001..=0b011111).contains(&six) {
                out.push(char::from(b'0' + 3 + (six - 0b011001)));
                at += 6;
                continue;
            }
        }
        break;
    }
    // What is left must be EOS padding (all ones, under 8 bits).
    if total - at >= 8 || (at..total).any(|i| bit(i) == 0) {
        return None;
    }
    Some(out)
}

/// A raw HTTP/2 header list.
type Fields = Vec<(&'static [u8], &'static [u8])>;

/// One header field.
fn kv<'a>(name: &'a [u8], value: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    (name, value)
}

/// A well-formed request head for `path` on the fixture's `localhost` authority.
fn head<'a>(method: &'a [u8], path: &'a [u8]) -> Vec<(&'a [u8], &'a [u8])> {
    vec![
        kv(b":method", method),
        kv(b":scheme", b"https"),
        kv(b":authority", b"localhost"),
        kv(b":path", path),
    ]
}

/// A POST to `/public/x` with one extra field.
fn post_with(name: &'static [u8], value: &'static [u8]) -> Vec<(&'static [u8], &'static [u8])> {
    let mut fields = head(b"POST", b"/public/x");
    fields.push(kv(name, value));
    fields
}

/// The fixture plus a public `/slow/**` route (the upstream waits `/slow/<ms>`).
fn slow_yaml(up: &Upstream) -> String {
    format!(
        "{}  - {{ id: slow, path: /slow/**, upstream: up, public: true }}\n",
        fixture_yaml(&up.url())
    )
}

/// Run one raw HTTP/2 request on a fresh connection and return how its stream ended.
async fn h2_one(gw: &Gateway, fields: &[(&[u8], &[u8])], body: Option<&[u8]>) -> H2End {
    let mut conn = H2Raw::open(gw).await;
    let sent = conn.request(1, fields, body.is_none()).await;
    if let Some(body) = body {
        if sent {
            conn.frame(DATA, END_STREAM, 1, body).await;
        }
    }
    conn.end_of(1, Duration::from_secs(3)).await
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
// The raw HTTP/2 client itself.

#[test]
fn the_raw_http2_helpers_decode_what_servers_send() {
    // "401": '4' 011010, '0' 00000, '1' 00001 (16 bits, no padding).
    assert_eq!(huffman_digits(&[0x68, 0x01]), Some("401".into()));
    // "431": 011010 011001 00001 + seven padding ones.
    assert_eq!(huffman_digits(&[0x69, 0x90, 0xff]), Some("431".into()));
    // A zero bit in the padding is not a digit string.
    assert_eq!(huffman_digits(&[0x69, 0x90, 0x80]), None);
    assert_eq!(decode_status(&[0x88], 0), Some(200));
    assert_eq!(decode_status(&[0x8c], 0), Some(400));
    assert_eq!(decode_status(&[0x48, 0x82, 0x68, 0x01], 0), Some(401));
    assert_eq!(decode_status(&[0x48, 0x03, b'4', b'3', b'1'], 0), Some(431));
    let mut out = Vec::new();
    hpack_int(&mut out, 0, 7, 300);
    assert_eq!(out, vec![0x7f, 0xad, 0x01]);
}

#[tokio::test]
async fn a_well_formed_raw_http2_request_is_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let end = h2_one(&gw, &head(b"GET", b"/public/x"), None).await;
    assert_eq!(end, H2End::Status(200));
    assert_eq!(up.last().expect("forwarded").target, "/public/x");
}

// ---------------------------------------------------------------------------------------------
// P-20: OPTIONS is not anonymous on a protected route (no route is marked as CORS preflight).

#[tokio::test]
async fn options_on_a_protected_route_needs_the_same_token_as_any_method() {
    // THREATS P-20
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
        up.clear();
        let reply = client.call("OPTIONS", "/admin/users", &[], "").await;
        let answer = Answer::from_reply(&reply);
        assert_refused(&format!("{proto} OPTIONS /admin/users"), &answer, &up, 401);
        assert!(
            answer
                .header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer")),
            "{answer:?}"
        );
        // `/api/**` lists methods and none of them is OPTIONS: never forwarded, token or not.
        let read = format!("Bearer {}", fixture_token("alice", "read"));
        for headers in [vec![], vec![("authorization", read.as_str())]] {
            let reply = client.call("OPTIONS", "/api/items", &headers, "").await;
            assert!(
                matches!(reply.status.as_u16(), 401 | 403 | 404 | 405),
                "{proto} OPTIONS /api/items: {} {}",
                reply.status,
                reply.text()
            );
            assert_eq!(up.count(), 0, "{proto} OPTIONS /api/items was forwarded");
        }
        // With the admin token it is an ordinary request on the admin rule.
        let admin = format!("Bearer {}", fixture_token("root", "admin"));
        let reply = client
            .call("OPTIONS", "/admin/users", &[("authorization", &admin)], "")
            .await;
        assert_eq!(reply.status, 200, "{proto}: {}", reply.text());
        assert_eq!(up.last().expect("forwarded").method, "OPTIONS");
    }
}

// ---------------------------------------------------------------------------------------------
// H-13: malformed header syntax; H-14: non-UTF-8 header values.

#[tokio::test]
async fn malformed_header_lines_are_refused_with_400_and_never_forwarded() {
    // THREATS H-13
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let cases: [(&str, &[u8]); 6] = [
        (
            "space before colon",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A : b\r\n\r\n",
        ),
        (
            "tab before colon",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A\t: b\r\n\r\n",
        ),
        (
            "obs-fold continuation",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\n c\r\n\r\n",
        ),
        (
            "NUL in a value",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\x00c\r\n\r\n",
        ),
        (
            "bare CR in a value",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\rX-Forwarded-User: root\r\n\r\n",
        ),
        (
            "obs-fold hiding an identity header",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\n\tX-Forwarded-User: root\r\n\r\n",
        ),
    ];
    for (label, request) in cases {
        up.clear();
        let answer = h1_raw(&gw, request).await;
        assert_refused(label, &answer, &up, 400);
    }
    // Sanity: the same request without the defect is forwarded.
    let answer = h1_raw(
        &gw,
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn non_utf8_header_values_never_skip_the_token_check_or_carry_identity() {
    // THREATS H-14
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    // A protected route with junk bytes in an unrelated header and no token: still 401.
    let answer = h1_raw(
        &gw,
        b"GET /admin/users HTTP/1.1\r\nHost: localhost\r\nX-Foo: \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused("X-Foo: \\xff\\xfe, no token", &answer, &up, 401);
    // Junk in the Authorization header itself: an invalid token, never a pass or a 500.
    for value in [
        &b"Bearer \xff\xfe"[..],
        b"\xffBearer x",
        b"Bearer a.b\xff.c",
    ] {
        up.clear();
        let mut request =
            b"GET /admin/users HTTP/1.1\r\nHost: localhost\r\nAuthorization: ".to_vec();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let answer = h1_raw(&gw, &request).await;
        assert!(
            matches!(answer.status, 400 | 401),
            "Authorization {:?}: {answer:?}",
            String::from_utf8_lossy(value)
        );
        assert_eq!(up.count(), 0, "reached the upstream: {:?}", up.seen());
    }
    // An identity header with junk bytes never reaches the upstream; a valid token still sets
    // the gateway's own identity.
    up.clear();
    let token = fixture_token("alice", "read");
    let mut request =
        format!("GET /api/items HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n")
            .into_bytes();
    request.extend_from_slice(b"X-Forwarded-User: \xffroot\r\nConnection: close\r\n\r\n");
    let answer = h1_raw(&gw, &request).await;
    assert!(matches!(answer.status, 200 | 400), "{answer:?}");
    if answer.status == 200 {
        let seen = up.last().expect("forwarded");
        assert_eq!(seen.all("x-forwarded-user"), vec!["alice".to_owned()]);
    } else {
        assert_eq!(up.count(), 0);
    }
}

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

// ---------------------------------------------------------------------------------------------
// J-09, J-12: token lifetime; J-21: a retired key; J-22: psychic ECDSA.

fn admin_token_with(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let mut claims = fixture_claims("root", "admin");
    edit(claims.as_object_mut().unwrap());
    mint(
        Alg::Hs256,
        &json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}),
        &claims,
        SECRET.as_bytes(),
    )
}

#[tokio::test]
async fn a_token_living_far_longer_than_the_configured_ttl_is_refused() {
    // THREATS J-09: the fixture issues 5-minute tokens; one valid for ten years is not ours.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let n = now();
    let token = admin_token_with(|c| {
        c.insert("exp".into(), json!(n + 10 * 365 * 24 * 3600));
    });
    let reply = gw.h1().get_with_token("/admin/x", &token).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(up.count(), 0, "a ten-year token reached the upstream");
}

#[tokio::test]
async fn a_token_issued_longer_ago_than_the_maximum_age_is_refused() {
    // THREATS J-12
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let n = now();
    let token = admin_token_with(|c| {
        c.insert("iat".into(), json!(n - 365 * 24 * 3600));
    });
    let reply = gw.h1().get_with_token("/admin/x", &token).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(up.count(), 0, "a year-old token reached the upstream");
}

#[tokio::test]
async fn a_token_signed_with_a_retired_secret_is_refused_after_the_reload() {
    // THREATS J-21: rotating `tokens.secret` by reload retires every token signed with the old
    // one at once; there is no window where either key passes unchecked.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let old = fixture_token("root", "admin");
    assert_eq!(gw.h1().get_with_token("/admin/x", &old).await.status, 200);
    let new_secret = "rotated-secret-9876543210-zyxwvutsrqponmlkjihgfedcba";
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    assert!(text.contains(SECRET));
    std::fs::write(&gw.config_path, text.replace(SECRET, new_secret)).unwrap();
    let outcome = portcullis::config::reload::reload(&gw.config_path, &gw.shared);
    assert!(
        matches!(
            outcome,
            portcullis::config::reload::ReloadOutcome::Applied { .. }
        ),
        "{outcome:?}"
    );
    up.clear();
    let reply = gw.h1().get_with_token("/admin/x", &old).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(up.count(), 0, "a retired-key token reached the upstream");
    let fresh = mint(
        Alg::Hs256,
        &json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}),
        &fixture_claims("root", "admin"),
        new_secret.as_bytes(),
    );
    assert_eq!(gw.h1().get_with_token("/admin/x", &fresh).await.status, 200);
}

#[tokio::test]
async fn an_es256_token_with_an_all_zero_signature_is_refused() {
    // THREATS J-22 (psychic signatures, CVE-2022-21449)
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}).to_string();
    let claims = fixture_claims("root", "admin").to_string();
    let unsigned = signing_input(header.as_bytes(), claims.as_bytes());
    for signature in [vec![0u8; 64], vec![0u8; 72], Vec::new()] {
        let token = format!("{unsigned}.{}", b64(&signature));
        let reply = gw.h1().get_with_token("/admin/x", &token).await;
        assert_eq!(
            reply.status,
            401,
            "{} zero bytes: {}",
            signature.len(),
            reply.text()
        );
    }
    assert_eq!(up.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// L-03: enumeration by timing (coarse: the machine is shared, so only a gross difference, such
// as skipping the password hash for unknown users, is asserted).

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_take_comparable_time() {
    // THREATS L-03
    let up = Upstream::start().await;
    let yaml = format!(
        "{}login:\n  path: /login\n  lockout: {{ failures: 1000, window: 1m, duration: 1s }}\n",
        fixture_yaml(&up.url())
    );
    let gw = Gateway::start(&yaml).await;
    let client = gw.h1();
    // One connection for every attempt, so TLS handshakes are not part of the measurement.
    let mut conn = client.connect().await;
    let attempt = |user: &str| {
        let body = format!("username={user}&password=wrong-password");
        client
            .request("POST", "/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    // Warm up both paths.
    conn.send(attempt("alice")).await;
    conn.send(attempt("nobody-here")).await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..12 {
        for (user, into) in [("alice", &mut known), ("nobody-here", &mut unknown)] {
            let user = if i % 2 == 0 {
                user.to_owned()
            } else {
                user.to_uppercase()
            };
            let started = Instant::now();
            let reply = conn.send(attempt(&user)).await;
            into.push(started.elapsed());
            assert_eq!(reply.status, 400, "{user}: {}", reply.text());
        }
    }
    let (known, unknown) = (median(known), median(unknown));
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.33..=3.0).contains(&ratio),
        "median wrong-password {known:?} vs unknown-user {unknown:?} (ratio {ratio:.2})"
    );
}

// ---------------------------------------------------------------------------------------------
// X-01 … X-04: TLS.

/// A TLS 1.0 ClientHello (record and handshake version 3.1, no supported_versions extension).
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn a_tls10_client_hello_is_refused_without_a_server_hello() {
    // THREATS X-01
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(&tls10_client_hello()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut reply)).await;
    // Either an alert record (0x15) or a plain close; never a handshake record (ServerHello).
    assert!(
        reply.first().is_none_or(|b| *b == 0x15),
        "answered with {:02x?}",
        &reply[..reply.len().min(16)]
    );
}

#[tokio::test]
async fn tls12_and_tls13_both_negotiate_only_aead_ecdhe_suites() {
    // THREATS X-01
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(gw.pki.ca_der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.expect("handshake");
        let conn = tls.get_ref().1;
        assert_eq!(conn.protocol_version(), Some(version.version));
        let suite = format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite());
        assert!(
            suite.contains("GCM") || suite.contains("CHACHA20_POLY1305"),
            "{suite}"
        );
        if version.version == rustls::ProtocolVersion::TLSv1_2 {
            assert!(suite.contains("ECDHE"), "{suite}");
        }
    }
}

/// A client session store that records the 0-RTT allowance of every TLS 1.3 ticket received.
#[derive(Debug)]
struct TicketSpy {
    inner: rustls::client::ClientSessionMemoryCache,
    max_early_data: std::sync::Mutex<Vec<u32>>,
}

impl rustls::client::ClientSessionStore for TicketSpy {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.max_early_data
            .lock()
            .unwrap()
            .push(value.max_early_data_size());
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

#[tokio::test]
async fn tls13_tickets_never_allow_early_data_and_resumptions_accept_none() {
    // THREATS X-02: 0-RTT would let a login POST be replayed.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let spy = Arc::new(TicketSpy {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        max_early_data: std::sync::Mutex::new(Vec::new()),
    });
    let mut config = (*tls_client_config(&gw.pki.ca_der, &[b"http/1.1"])).clone();
    config.enable_early_data = true;
    config.resumption = rustls::client::Resumption::store(spy.clone());
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let request = b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for round in 0..2 {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        tls.write_all(request).await.unwrap();
        tls.flush().await.unwrap();
        let answer = parse_raw(&read_until_close(&mut tls, Duration::from_secs(3)).await);
        assert_eq!(answer.status, 200, "round {round}: {answer:?}");
        assert!(
            !tls.get_ref().1.is_early_data_accepted(),
            "round {round}: the gateway accepted 0-RTT data"
        );
    }
    let allowances = spy.max_early_data.lock().unwrap().clone();
    assert!(
        allowances.iter().all(|n| *n == 0),
        "tickets offering early data: {allowances:?}"
    );
    assert_eq!(up.count(), 2, "each request was forwarded exactly once");
}

#[tokio::test]
async fn cleartext_http1_and_h2c_prior_knowledge_get_no_http_answer() {
    // THREATS X-04 (and L-12: the login endpoint exists only behind TLS): the one listener
    // speaks TLS only.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let cases: [(&str, &[u8]); 3] = [
        (
            "HTTP/1.1",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ),
        (
            "login",
            b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 34\r\n\r\nusername=alice&password=secret123",
        ),
        ("h2c prior knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
    ];
    for (label, bytes) in cases {
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        let _ = tcp.write_all(bytes).await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut reply)).await;
        assert!(
            !reply.starts_with(b"HTTP/") && !reply.windows(4).any(|w| w == b"HTTP"),
            "{label}: cleartext answer {:?}",
            String::from_utf8_lossy(&reply)
        );
        // An h2 server preface starts with a SETTINGS frame (type 4 at byte 3).
        assert!(
            reply.len() < 9 || reply[3] != SETTINGS || reply[0] == 0x15,
            "{label}: spoke HTTP/2 in cleartext: {:02x?}",
            &reply[..reply.len().min(16)]
        );
    }
    assert_eq!(up.count(), 0, "a cleartext request reached the upstream");
}
