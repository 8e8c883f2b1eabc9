//! Detection of requests that carry both `Content-Length` and `Transfer-Encoding`
//! (RFC 9112 §6.1, request smuggling).
//!
//! hyper resolves that conflict on its own (it follows `Transfer-Encoding` and silently drops
//! `Content-Length` from the header map), so by the time a request reaches the service the
//! evidence is gone. The contract is to refuse such requests and close the connection, so an
//! HTTP/1 connection's reads are observed into [`RecentBytes`], which keeps the most recent bytes;
//! when a request arrives with `Transfer-Encoding`, its raw header block is looked up there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::observed_io::ReadObserver;

/// How many recent bytes are kept: a header block (≤ `max_header_bytes`) plus whatever hyper
/// read after it in the same buffer.
const KEEP: usize = 64 * 1024;

/// The recent bytes read on one connection.
#[derive(Debug, Default)]
pub struct RecentBytes {
    bytes: Mutex<Vec<u8>>,
    /// A `#` has been read on this connection (sticky): only then is it worth looking for a
    /// fragment hyper dropped from a request target.
    hash_seen: AtomicBool,
}

impl RecentBytes {
    fn record(&self, new: &[u8]) {
        if new.contains(&b'#') {
            self.hash_seen.store(true, Ordering::Relaxed);
        }
        let Ok(mut bytes) = self.bytes.lock() else {
            return;
        };
        if new.len() >= KEEP {
            bytes.clear();
            bytes.extend_from_slice(&new[new.len() - KEEP..]);
            return;
        }
        // Trim only when twice the window is used, so the copying stays amortised O(1) per byte.
        if bytes.len() + new.len() > 2 * KEEP {
            let excess = bytes.len() + new.len() - KEEP;
            bytes.drain(..excess);
        }
        bytes.extend_from_slice(new);
    }

    /// Whether the raw request line `METHOD TARGET#...` carried a fragment, which hyper's
    /// parser silently cuts off (the contract refuses a raw `#`).
    pub fn had_fragment(&self, method: &str, target: &http::Uri) -> bool {
        if !self.hash_seen.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(bytes) = self.bytes.lock() else {
            return false;
        };
        rfind(&bytes, format!("{method} {target}#").as_bytes()).is_some()
    }

    /// Whether any recent raw header block of a request whose line starts with
    /// `METHOD TARGET ` carried both `Content-Length` and `Transfer-Encoding`. Looking at every
    /// matching block (not just the last) means a pipelined look-alike request cannot hide
    /// the ambiguous one; a connection carrying such a block is refused either way.
    pub fn had_content_length(&self, method: &str, target: &str) -> bool {
        let Ok(bytes) = self.bytes.lock() else {
            return false;
        };
        let line = format!("{method} {target} ");
        let mut from = 0;
        while let Some(offset) = find(&bytes[from..], line.as_bytes()) {
            let head = &bytes[from + offset..];
            let end = find(head, b"\r\n\r\n").unwrap_or(head.len());
            let has = |name: &[u8]| {
                head[..end]
                    .split(|b| *b == b'\n')
                    .skip(1)
                    .any(|h| h.len() > name.len() && h[..name.len()].eq_ignore_ascii_case(name))
            };
            if has(b"content-length:") && has(b"transfer-encoding:") {
                return true;
            }
            from += offset + line.len();
        }
        false
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The service's view of an HTTP/1 connection's raw bytes: [`crate::observed_io::Observed`]
/// feeds every chunk read into it.
impl ReadObserver for Arc<RecentBytes> {
    fn observe(&self, bytes: &[u8]) {
        self.record(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_content_length_in_the_matching_header_block_only() {
        let recent = RecentBytes::default();
        recent.record(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        recent.record(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        recent
            .record(b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert!(recent.had_content_length("POST", "/p"));
        assert!(!recent.had_content_length("GET", "/a"));
        let clean = RecentBytes::default();
        clean.record(
            b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nContent-Length: 1\r\n",
        );
        assert!(!clean.had_content_length("POST", "/p"));
    }

    #[test]
    fn sees_a_fragment_hyper_would_drop() {
        let recent = RecentBytes::default();
        recent.record(b"GET /a HTTP/1.1\r\n\r\nGET /public/x#/../admin HTTP/1.1\r\n\r\n");
        let uri = |s: &str| s.parse::<http::Uri>().unwrap_or_default();
        assert!(recent.had_fragment("GET", &uri("/public/x")));
        assert!(!recent.had_fragment("GET", &uri("/a")));
    }

    #[test]
    fn keeps_only_a_bounded_tail() {
        let recent = RecentBytes::default();
        for _ in 0..100 {
            recent.record(&[b'x'; 4096]);
        }
        assert!(recent.bytes.lock().map(|b| b.len()).unwrap_or(0) <= 2 * KEEP);
    }
}
