//! One complete HTTP/1 request head, read as hyper reads it: the facts it hides from the
//! service ([`HeadFacts`]) and the body framing that follows ([`Framing`]). The connection's
//! byte stream is followed in [`super::framing`]; this module only judges a head it is given.

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
    pub(crate) const UNKNOWN: HeadFacts = HeadFacts {
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

/// How hyper will read the body that follows a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// hyper answers 400 and closes.
    Refused,
}

/// The facts and body framing of one complete head.
pub(crate) struct ParsedHead {
    pub(crate) facts: HeadFacts,
    pub(crate) framing: Framing,
}

impl ParsedHead {
    /// Mirrors hyper's server-side rules (proto/h1/role.rs): `Transfer-Encoding` only in
    /// HTTP/1.1 and ending in `chunked`; every `Content-Length` a plain number, all equal.
    pub(crate) fn parse(head: &[u8]) -> ParsedHead {
        let mut start = 0;
        let mut lines = memchr::memchr_iter(b'\n', head)
            .map(|end| {
                let line = &head[start..end];
                start = end + 1;
                line
            })
            .map(trim_cr);
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

/// Where the head at the start of `bytes` ends (just past its blank line), if it is all there.
pub(crate) fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for newline in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[line_start..newline];
        if line.is_empty() || line == b"\r" {
            return Some(newline + 1);
        }
        line_start = newline + 1;
    }
    None
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
