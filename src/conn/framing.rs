//! Facts about raw HTTP/1 request heads that hyper hides from the service.
//!
//! hyper resolves a `Content-Length` + `Transfer-Encoding` conflict on its own (it follows
//! `Transfer-Encoding` and drops `Content-Length` from the header map), and it cuts a `#...`
//! fragment off the request target. The contract refuses both (RFC 9112 §6.1 smuggling; SPEC
//! "Normalisation"), so an HTTP/1 connection's reads are fed through a [`HeadScanner`] that
//! follows the connection's message framing the way hyper does and records facts per request.
//!
//! The scanner keeps only the request head being read (at most `max_head_bytes`); body bytes
//! are counted past, never stored. Each byte is looked at a constant number of times, so its
//! cost is linear in what the client sent, and an idle connection holds almost nothing.
//!
//! The service takes one [`HeadFacts`] per request, in order. Each carries a digest of the
//! request line, so should the scanner ever lose step with hyper the mismatch is seen and the
//! request refused rather than judged by another request's facts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::conn::observed_io::ReadObserver;

/// Heads that may wait for the service. hyper reads at most its buffer (≤ 1 MiB) ahead, so a
/// client can pipeline thousands of tiny requests; no real client pipelines this deep, so
/// past it the scanner stops and every later request is refused.
const MAX_PENDING: usize = 1024;
/// An idle connection keeps at most this much head capacity between requests.
const IDLE_CAPACITY: usize = 2 * 1024;
/// hyper refuses chunk extensions beyond this many bytes per body (decode.rs).
const MAX_CHUNK_EXTENSION_BYTES: u64 = 16 * 1024;

/// What one raw request head showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadFacts {
    /// Both `Content-Length` and `Transfer-Encoding` were present.
    pub ambiguous_framing: bool,
    /// The request target held a raw `#`, which hyper silently drops with what follows.
    pub fragment: bool,
    /// Digest of `METHOD SP origin-form-target` (fragment excluded), `None` for other target
    /// forms (the service refuses those anyway).
    request_line: Option<u64>,
}

impl HeadFacts {
    /// Facts for a request whose head the scanner could not follow: refuse it.
    const UNKNOWN: HeadFacts = HeadFacts {
        ambiguous_framing: true,
        fragment: false,
        request_line: None,
    };

    /// Whether these facts belong to the request hyper parsed as `method` `path_and_query`.
    pub fn describes(&self, method: &str, path_and_query: Option<&str>) -> bool {
        match (self.request_line, path_and_query) {
            (Some(digest), Some(target)) => digest == line_digest(method, target.as_bytes()),
            (None, _) => true,
            (Some(_), None) => false,
        }
    }
}

/// Where in the connection's byte stream the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head into `head`.
    Head,
    /// Skipping this many `Content-Length` body bytes.
    Body(u64),
    /// Walking a chunked body.
    Chunked(Chunk),
    /// hyper refuses what came (over-long head, invalid framing) and closes the connection,
    /// or too many heads wait: nothing more is recorded.
    Stopped,
}

/// The chunked-body states of hyper's decoder (RFC 9112 §7.1), so both end a body at the
/// same byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size {
        size: u64,
    },
    SizeWhitespace {
        size: u64,
    },
    Extension {
        size: u64,
    },
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// After the last chunk: a trailer line or the final CRLF.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
}

/// Incremental scanner of one HTTP/1 connection's request stream.
#[derive(Debug)]
pub struct HeadScanner {
    max_head_bytes: usize,
    state: State,
    head: Vec<u8>,
    /// Where the line being read starts in `head`.
    line_start: usize,
    /// Chunk-extension bytes seen in the current body.
    extension_bytes: u64,
    pending: VecDeque<HeadFacts>,
}

impl HeadScanner {
    /// `max_head_bytes` is hyper's buffer limit: a longer head is refused by hyper too.
    pub fn new(max_head_bytes: usize) -> Self {
        HeadScanner {
            max_head_bytes,
            state: State::Head,
            head: Vec::new(),
            line_start: 0,
            extension_bytes: 0,
            pending: VecDeque::new(),
        }
    }

    /// Bytes as read from the connection, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match self.state {
                State::Head => self.feed_head(bytes),
                State::Body(left) => {
                    let used = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    let left = left - used as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                    used
                }
                State::Chunked(chunk) => self.feed_chunked(chunk, bytes),
                State::Stopped => bytes.len(),
            };
            bytes = &bytes[used..];
        }
    }

    /// The facts of the next request head, in arrival order. After the scanner stopped, every
    /// further request gets facts that refuse it.
    pub fn next_head(&mut self) -> Option<HeadFacts> {
        self.pending
            .pop_front()
            .or_else(|| (self.state == State::Stopped).then_some(HeadFacts::UNKNOWN))
    }

    /// Bytes currently held: the part of the head being read.
    pub fn retained_bytes(&self) -> usize {
        self.head.len()
    }

    /// Take head bytes up to and including the blank line that ends the head; returns how
    /// many bytes of `bytes` were used.
    fn feed_head(&mut self, bytes: &[u8]) -> usize {
        let mut used = 0;
        // Empty lines before a request line are skipped, as httparse does.
        if self.head.is_empty() {
            used = bytes
                .iter()
                .position(|b| !matches!(b, b'\r' | b'\n'))
                .unwrap_or(bytes.len());
        }
        while used < bytes.len() {
            let rest = &bytes[used..];
            let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
                self.keep(rest);
                return bytes.len();
            };
            if !self.keep(&rest[..=newline]) {
                return bytes.len();
            }
            used += newline + 1;
            let line = &self.head[self.line_start..self.head.len() - 1];
            let blank = line.is_empty() || line == b"\r";
            self.line_start = self.head.len();
            if blank {
                self.end_head();
                return used;
            }
        }
        used
    }

    /// Append to the head; over the limit, stop (hyper answers 431 and closes).
    fn keep(&mut self, part: &[u8]) -> bool {
        if self.head.len() + part.len() > self.max_head_bytes {
            self.stop();
            return false;
        }
        self.head.extend_from_slice(part);
        true
    }

    /// Record nothing more; heads already complete keep their facts.
    fn stop(&mut self) {
        self.state = State::Stopped;
        self.head = Vec::new();
        self.line_start = 0;
    }

    /// The connection switched protocols: what follows is not HTTP/1, and no request waits.
    pub fn switch_protocols(&mut self) {
        self.stop();
        self.pending = VecDeque::new();
    }

    /// A complete head: record its facts and pick the body framing hyper will use.
    fn end_head(&mut self) {
        let parsed = ParsedHead::parse(&self.head);
        if self.head.capacity() > IDLE_CAPACITY {
            self.head = Vec::new();
        } else {
            self.head.clear();
        }
        self.line_start = 0;
        if self.pending.len() >= MAX_PENDING {
            self.stop();
            return;
        }
        self.pending.push_back(parsed.facts);
        self.extension_bytes = 0;
        self.state = match parsed.framing {
            Framing::None => State::Head,
            Framing::Length(0) => State::Head,
            Framing::Length(n) => State::Body(n),
            Framing::Chunked => State::Chunked(Chunk::Start),
            Framing::Refused => State::Stopped,
        };
    }

    /// Advance through a chunked body; returns how many bytes were used.
    fn feed_chunked(&mut self, mut chunk: Chunk, bytes: &[u8]) -> usize {
        let mut used = 0;
        while used < bytes.len() {
            if let Chunk::Data { left } = chunk {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - used);
                used += take;
                let left = left - take as u64;
                chunk = if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data { left }
                };
                continue;
            }
            let byte = bytes[used];
            used += 1;
            match self.chunk_step(chunk, byte) {
                Some(Some(next)) => chunk = next,
                Some(None) => {
                    self.state = State::Head;
                    return used;
                }
                None => {
                    self.stop();
                    return bytes.len();
                }
            }
        }
        self.state = State::Chunked(chunk);
        used
    }

    /// One byte of chunk framing: `Some(Some(next))`, `Some(None)` at the end of the body,
    /// `None` where hyper's decoder fails.
    fn chunk_step(&mut self, chunk: Chunk, byte: u8) -> Option<Option<Chunk>> {
        let next = match (chunk, byte) {
            (Chunk::Start, b) => Chunk::Size {
                size: u64::from(hex_digit(b)?),
            },
            (Chunk::Size { size }, b) if hex_digit(b).is_some() => Chunk::Size {
                size: size
                    .checked_mul(16)?
                    .checked_add(u64::from(hex_digit(b)?))?,
            },
            (Chunk::Size { size } | Chunk::SizeWhitespace { size }, b'\t' | b' ') => {
                Chunk::SizeWhitespace { size }
            }
            (Chunk::Size { size } | Chunk::SizeWhitespace { size }, b';') => {
                Chunk::Extension { size }
            }
            (
                Chunk::Size { size } | Chunk::SizeWhitespace { size } | Chunk::Extension { size },
                b'\r',
            ) => Chunk::SizeLf { size },
            (Chunk::Extension { .. }, b'\n') => return None,
            (Chunk::Extension { size }, _) => {
                self.extension_bytes += 1;
                if self.extension_bytes > MAX_CHUNK_EXTENSION_BYTES {
                    return None;
                }
                Chunk::Extension { size }
            }
            (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::TrailerStart,
            (Chunk::SizeLf { size }, b'\n') => Chunk::Data { left: size },
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Start,
            (Chunk::TrailerStart, b'\r') => Chunk::EndLf,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::TrailerStart | Chunk::Trailer, _) => Chunk::Trailer,
            (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
            (Chunk::EndLf, b'\n') => return Some(None),
            _ => return None,
        };
        Some(Some(next))
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// How hyper will read the body that follows a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// hyper answers 400 and closes.
    Refused,
}

/// The facts and body framing of one complete head.
struct ParsedHead {
    facts: HeadFacts,
    framing: Framing,
}

impl ParsedHead {
    /// Mirrors hyper's server-side rules (proto/h1/role.rs): `Transfer-Encoding` only in
    /// HTTP/1.1 and ending in `chunked`; every `Content-Length` a plain number, all equal.
    fn parse(head: &[u8]) -> ParsedHead {
        let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.splitn(3, |&b| b == b' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        let http11 = parts.next() == Some(b"HTTP/1.1".as_slice());

        let fragment_at = target.iter().position(|&b| b == b'#');
        let origin_target = &target[..fragment_at.unwrap_or(target.len())];
        let request_line = origin_target
            .starts_with(b"/")
            .then(|| line_digest_bytes(method, origin_target));

        let mut te_chunked = None;
        let mut content_length: Option<Option<u64>> = None;
        let mut refused = false;
        for line in lines.filter(|l| !l.is_empty()) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te_chunked = Some(last_coding_is_chunked(value));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let value = parse_length(value);
                match content_length {
                    Some(seen) if seen != value => refused = true,
                    _ => content_length = Some(value),
                }
            }
        }
        let framing = match (te_chunked, content_length) {
            (Some(true), _) if http11 => Framing::Chunked,
            (Some(_), _) => Framing::Refused,
            _ if refused => Framing::Refused,
            (None, Some(Some(n))) => Framing::Length(n),
            (None, Some(None)) => Framing::Refused,
            (None, None) => Framing::None,
        };
        ParsedHead {
            facts: HeadFacts {
                ambiguous_framing: te_chunked.is_some() && content_length.is_some(),
                fragment: fragment_at.is_some(),
                request_line,
            },
            framing,
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end.max(start)]
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| trim_ows(last).eq_ignore_ascii_case(b"chunked"))
}

/// A `Content-Length` value as hyper accepts it: digits only, fitting in a u64.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// FNV-1a over `METHOD SP TARGET`: a cheap consistency check, not a security boundary.
fn line_digest(method: &str, target: &[u8]) -> u64 {
    line_digest_bytes(method.as_bytes(), target)
}

fn line_digest_bytes(method: &[u8], target: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    method
        .iter()
        .chain(b" ")
        .chain(target)
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The scanner shared by an HTTP/1 connection's reader (which feeds it) and its service
/// (which takes facts). Both run on the connection's one task, so the lock is uncontended.
#[derive(Debug)]
pub struct RawHeads(Mutex<HeadScanner>);

impl RawHeads {
    pub fn new(max_head_bytes: usize) -> Arc<Self> {
        Arc::new(RawHeads(Mutex::new(HeadScanner::new(max_head_bytes))))
    }

    /// The facts of the request hyper hands over next. `None` when there are none or they
    /// belong to another request line: the scanner and hyper disagree, so refuse.
    pub fn take(&self, method: &str, path_and_query: Option<&str>) -> Option<HeadFacts> {
        let mut scanner = self.0.lock().ok()?;
        scanner
            .next_head()
            .filter(|facts| facts.describes(method, path_and_query))
    }

    /// The connection switched protocols: its bytes are no longer HTTP/1 requests.
    pub fn switch_protocols(&self) {
        if let Ok(mut scanner) = self.0.lock() {
            scanner.switch_protocols();
        }
    }
}

impl ReadObserver for Arc<RawHeads> {
    fn observe(&self, bytes: &[u8]) {
        if let Ok(mut scanner) = self.0.lock() {
            scanner.feed(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(stream: &[u8]) -> Vec<HeadFacts> {
        let mut scanner = HeadScanner::new(16 * 1024);
        scanner.feed(stream);
        std::iter::from_fn(|| scanner.pending.pop_front()).collect()
    }

    fn flags(facts: &[HeadFacts]) -> Vec<(bool, bool)> {
        facts
            .iter()
            .map(|f| (f.ambiguous_framing, f.fragment))
            .collect()
    }

    #[test]
    fn flags_content_length_with_transfer_encoding_in_its_own_head_only() {
        let facts = scan(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
              POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        assert_eq!(
            flags(&facts),
            vec![(false, false), (true, false), (false, false)]
        );
        assert!(facts[1].describes("POST", Some("/p")));
        assert!(!facts[1].describes("GET", Some("/p")));
    }

    #[test]
    fn body_bytes_that_look_like_heads_are_skipped_not_parsed() {
        let body = b"GET /x#y HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream =
            format!("POST /p HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        stream.extend_from_slice(format!("{:x};ext=1\r\n", body.len()).as_bytes());
        stream.extend_from_slice(body);
        stream.extend_from_slice(
            b"\r\n0\r\nX-Trailer: GET /t#x\r\n\r\nGET /last#frag HTTP/1.1\r\n\r\n",
        );
        let facts = scan(&stream);
        assert_eq!(
            flags(&facts),
            vec![(false, false), (false, false), (false, true)]
        );
        assert!(facts[2].describes("GET", Some("/last")));
    }

    #[test]
    fn sees_a_fragment_hyper_would_drop() {
        let facts = scan(b"\r\nGET /a HTTP/1.1\r\n\r\nGET /public/x#/../admin HTTP/1.1\n\n");
        assert_eq!(flags(&facts), vec![(false, false), (false, true)]);
        assert!(facts[1].describes("GET", Some("/public/x")));
    }

    #[test]
    fn the_same_facts_whatever_the_read_sizes() {
        let stream = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                       GET /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nxyGET /d#e HTTP/1.1\r\n\r\n";
        let whole = scan(stream);
        for size in 1..8 {
            let mut scanner = HeadScanner::new(16 * 1024);
            stream.chunks(size).for_each(|c| scanner.feed(c));
            let split: Vec<_> = std::iter::from_fn(|| scanner.pending.pop_front()).collect();
            assert_eq!(split, whole, "read size {size}");
        }
        assert_eq!(whole.len(), 3);
    }

    #[test]
    fn invalid_framing_stops_the_scanner_and_refuses_what_follows() {
        for head in [
            &b"POST /p HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST /p HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            let mut scanner = HeadScanner::new(16 * 1024);
            scanner.feed(head);
            scanner.feed(b"GET /next HTTP/1.1\r\n\r\n");
            assert!(scanner.next_head().is_some());
            assert_eq!(scanner.next_head(), Some(HeadFacts::UNKNOWN));
        }
    }

    #[test]
    fn a_broken_chunk_stops_the_scanner() {
        let mut scanner = HeadScanner::new(16 * 1024);
        scanner.feed(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert_eq!(scanner.state, State::Stopped);
    }

    #[test]
    fn holds_only_the_current_head_within_its_limit() {
        let mut scanner = HeadScanner::new(1024);
        scanner.feed(b"POST /p HTTP/1.1\r\nContent-Length: 102400\r\n\r\n");
        for _ in 0..25 {
            scanner.feed(&[b'x'; 4096]);
            assert_eq!(scanner.retained_bytes(), 0);
        }
        scanner.feed(b"GET / HTTP/1.1\r\nX-A: ");
        assert!(scanner.retained_bytes() > 0);
        scanner.feed(&[b'a'; 2048]);
        assert_eq!(scanner.retained_bytes(), 0, "an over-long head is dropped");
        assert_eq!(scanner.state, State::Stopped);
    }

    #[test]
    fn an_idle_connection_keeps_little_capacity() {
        let mut scanner = HeadScanner::new(64 * 1024);
        let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(32 * 1024));
        scanner.feed(big.as_bytes());
        assert!(scanner.head.capacity() <= IDLE_CAPACITY);
    }

    #[test]
    fn too_many_waiting_heads_refuse_the_rest() {
        let mut scanner = HeadScanner::new(16 * 1024);
        for _ in 0..=MAX_PENDING {
            scanner.feed(b"GET / HTTP/1.1\r\n\r\n");
        }
        for _ in 0..MAX_PENDING {
            assert_ne!(scanner.next_head(), Some(HeadFacts::UNKNOWN));
        }
        assert_eq!(scanner.next_head(), Some(HeadFacts::UNKNOWN));
    }
}
