//! A minimal HTTP/2 client that writes frames byte by byte, so it can send what h2 refuses to
//! (malformed pseudo-headers, floods, oversized header blocks), and reads how each stream ended.

use crate::common::*;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
pub(super) const CONTINUATION: u8 = 0x9;
pub(super) const END_STREAM: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
pub(super) const REFUSED_STREAM: u32 = 0x7;
pub(super) const CANCEL: u32 = 0x8;

/// What a raw HTTP/2 stream ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum H2End {
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
    pub(super) fn is_refusal(self) -> bool {
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

pub(super) struct H2Raw {
    io: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl H2Raw {
    /// TLS with ALPN h2, the client preface and an empty SETTINGS frame.
    pub(super) async fn open(gw: &Gateway) -> H2Raw {
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
    pub(super) async fn write(&mut self, bytes: &[u8]) -> bool {
        let io = &mut self.io;
        let write = async move { io.write_all(bytes).await.is_ok() && io.flush().await.is_ok() };
        tokio::time::timeout(Duration::from_secs(3), write)
            .await
            .unwrap_or(false)
    }

    pub(super) async fn frame(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8]) -> bool {
        self.write(&frame(ty, flags, stream, payload)).await
    }

    /// A request head in one HEADERS frame.
    pub(super) async fn request(
        &mut self,
        stream: u32,
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
    ) -> bool {
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
    pub(super) async fn end_of(&mut self, stream: u32, wait: Duration) -> H2End {
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

    /// The header block of the response on `stream` (padding and priority removed), answering
    /// SETTINGS and PING while waiting.
    pub(super) async fn response_block(&mut self, stream: u32, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left).await {
                Read::Timeout | Read::Closed => return None,
                Read::Frame(SETTINGS, flags, _, _) if flags & ACK == 0 => {
                    self.frame(SETTINGS, ACK, 0, &[]).await;
                }
                Read::Frame(PING, flags, _, payload) if flags & ACK == 0 => {
                    self.frame(PING, ACK, 0, &payload).await;
                }
                Read::Frame(HEADERS, flags, id, mut payload) if id == stream => {
                    if flags & 0x8 != 0 {
                        let pad = usize::from(payload[0]);
                        payload = payload[1..payload.len() - pad].to_vec();
                    }
                    if flags & 0x20 != 0 {
                        payload.drain(..5);
                    }
                    return Some(payload);
                }
                Read::Frame(..) => {}
            }
        }
    }

    /// Read everything until the connection goes quiet for `quiet` or closes (at most `limit`),
    /// answering SETTINGS; returns the frames of interest seen.
    pub(super) async fn drain(&mut self, quiet: Duration, limit: Duration) -> Drained {
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
pub(super) struct Drained {
    pub(super) goaway: Option<u32>,
    pub(super) resets: Vec<u32>,
    pub(super) responses: usize,
    pub(super) closed: bool,
}

pub(super) fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
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
pub(super) fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
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

/// An HPACK integer with an `n`-bit prefix at the start of `p`: (value, bytes used).
fn hpack_int_at(p: &[u8], n: u8) -> Option<(usize, usize)> {
    let max = (1usize << n) - 1;
    let mut value = usize::from(*p.first()?) & max;
    if value < max {
        return Some((value, 1));
    }
    let mut used = 1;
    let mut shift = 0;
    loop {
        let b = *p.get(used)?;
        used += 1;
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some((value, used));
        }
    }
}

/// The representation of every field in a header block whose name is a literal (not a table
/// index), by its first byte: 0x40 with incremental indexing, 0x00 without indexing, 0x10
/// never indexed (RFC 7541 §6.2). Names stay undecoded (they may be Huffman-coded).
pub(super) fn new_name_literals(mut p: &[u8]) -> Option<Vec<u8>> {
    let mut kinds = Vec::new();
    let skip_string = |p: &[u8]| -> Option<usize> {
        let (len, used) = hpack_int_at(p, 7)?;
        (p.len() >= used + len).then_some(used + len)
    };
    while let Some(&b) = p.first() {
        let (prefix, literal) = match b {
            _ if b & 0x80 != 0 => (7, false),
            _ if b & 0xc0 == 0x40 => (6, true),
            _ if b & 0xe0 == 0x20 => (5, false),
            _ => (4, true),
        };
        let (index, mut used) = hpack_int_at(p, prefix)?;
        if literal {
            if index == 0 {
                kinds.push(b);
                used += skip_string(&p[used..])?;
            }
            used += skip_string(&p[used..])?;
        }
        p = &p[used..];
    }
    Some(kinds)
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
pub(super) type Fields = Vec<(&'static [u8], &'static [u8])>;

/// One header field.
pub(super) fn kv<'a>(name: &'a [u8], value: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    (name, value)
}

/// A well-formed request head for `path` on the fixture's `localhost` authority.
pub(super) fn head<'a>(method: &'a [u8], path: &'a [u8]) -> Vec<(&'a [u8], &'a [u8])> {
    vec![
        kv(b":method", method),
        kv(b":scheme", b"https"),
        kv(b":authority", b"localhost"),
        kv(b":path", path),
    ]
}

/// A POST to `/public/x` with one extra field.
pub(super) fn post_with(
    name: &'static [u8],
    value: &'static [u8],
) -> Vec<(&'static [u8], &'static [u8])> {
    let mut fields = head(b"POST", b"/public/x");
    fields.push(kv(name, value));
    fields
}

/// Run one raw HTTP/2 request on a fresh connection and return how its stream ended.
pub(super) async fn h2_one(gw: &Gateway, fields: &[(&[u8], &[u8])], body: Option<&[u8]>) -> H2End {
    let mut conn = H2Raw::open(gw).await;
    let sent = conn.request(1, fields, body.is_none()).await;
    if let Some(body) = body {
        if sent {
            conn.frame(DATA, END_STREAM, 1, body).await;
        }
    }
    conn.end_of(1, Duration::from_secs(3)).await
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
    assert_eq!(hpack_int_at(&out, 7), Some((300, 3)));
    // :status 200 indexed, a new-name literal never indexed, an indexed-name literal with
    // incremental indexing (date, 33), a new-name literal without indexing.
    let block = [
        &[
            0x88, 0x10, 0x01, b'x', 0x02, b'a', b'b', 0x61, 0x01, b'd', 0x00, 0x01, b'y',
        ][..],
        &[0x00],
    ]
    .concat();
    assert_eq!(new_name_literals(&block), Some(vec![0x10, 0x00]));
}

#[tokio::test]
async fn a_well_formed_raw_http2_request_is_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let end = h2_one(&gw, &head(b"GET", b"/public/x"), None).await;
    assert_eq!(end, H2End::Status(200));
    assert_eq!(up.last().expect("forwarded").target, "/public/x");
}

/// `X-Request-Id` differs on every response: HPACK-indexing it would fill the client's table
/// with values never sent again (and cost the encoder a comparison against each of them), so
/// it goes as a never-indexed literal, every time.
#[tokio::test]
async fn the_request_id_a_response_carries_is_never_indexed() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let mut conn = H2Raw::open(&gw).await;
    for stream in [1, 3, 5] {
        assert!(
            conn.request(stream, &head(b"GET", b"/public/x"), true)
                .await
        );
        let block = conn
            .response_block(stream, Duration::from_secs(3))
            .await
            .expect("a response");
        // The upstream's own headers may be indexed; the id is the one never-indexed field.
        let kinds = new_name_literals(&block).expect("a well-formed header block");
        assert_eq!(
            kinds.iter().filter(|&&kind| kind == 0x10).count(),
            1,
            "stream {stream}: {kinds:02x?} in {block:02x?}"
        );
    }
}
