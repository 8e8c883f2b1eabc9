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

pub use crate::conn::head::HeadFacts;
use crate::conn::head::{Framing, ParsedHead};
use crate::conn::observed_io::ReadObserver;

/// Heads that may wait for the service. hyper reads at most its buffer (≤ 1 MiB) ahead, so a
/// client can pipeline thousands of tiny requests; no real client pipelines this deep, so
/// past it the scanner stops and every later request is refused.
const MAX_PENDING: usize = 1024;
/// An idle connection keeps at most this much head capacity between requests.
const IDLE_CAPACITY: usize = 2 * 1024;
/// hyper refuses chunk extensions beyond this many bytes per body (decode.rs).
const MAX_CHUNK_EXTENSION_BYTES: u64 = 16 * 1024;

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
            // The usual case: the whole head arrived in one read. Judge it where it lies
            // rather than copying it.
            let rest = &bytes[used..];
            if let Some((parsed, end)) = ParsedHead::parse(rest) {
                if end > self.max_head_bytes {
                    self.stop();
                    return bytes.len();
                }
                self.end_head(parsed);
                return used + end;
            }
        }
        while used < bytes.len() {
            let rest = &bytes[used..];
            let Some(newline) = memchr::memchr(b'\n', rest) else {
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
                // The head ends in the blank line just kept, so it parses whole.
                let parsed = ParsedHead::parse(&self.head).map_or(ParsedHead::REFUSED, |(p, _)| p);
                self.release_head();
                self.end_head(parsed);
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

    /// Empty the head buffer for the next request, keeping little capacity while idle.
    fn release_head(&mut self) {
        if self.head.capacity() > IDLE_CAPACITY {
            self.head = Vec::new();
        } else {
            self.head.clear();
        }
        self.line_start = 0;
    }

    /// A complete head: record its facts and pick the body framing hyper will use.
    fn end_head(&mut self, parsed: ParsedHead) {
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
