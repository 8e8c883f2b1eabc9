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
    /// The head at the start of `bytes`, if it is all there: its facts and framing, and where
    /// it ends (just past its blank line). One pass over the lines; the blank line is the first
    /// empty one, as hyper finds it.
    ///
    /// Mirrors hyper's server-side rules (proto/h1/role.rs): `Transfer-Encoding` only in
    /// HTTP/1.1 and ending in `chunked`; every `Content-Length` a plain number, all equal.
    pub(crate) fn parse(bytes: &[u8]) -> Option<(ParsedHead, usize)> {
        let first_end = memchr::memchr(b'\n', bytes)?;
        let request_line = trim_cr(&bytes[..first_end]);
        if request_line.is_empty() {
            return Some((ParsedHead::REFUSED, first_end + 1));
        }
        let mut parts = request_line.splitn(3, |&b| b == b' ');
        let method = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        let http11 = parts.next() == Some(b"HTTP/1.1".as_slice());

        let fragment_at = memchr::memchr(b'#', target);
        let origin_target = &target[..fragment_at.unwrap_or(target.len())];
        let request_line = origin_target
            .starts_with(b"/")
            .then(|| line_digest_bytes(method, origin_target));

        let mut te_chunked = None;
        let mut content_length: Option<Option<u64>> = None;
        let mut refused = false;
        let mut start = first_end + 1;
        loop {
            let end = start + memchr::memchr(b'\n', &bytes[start..])?;
            let line = trim_cr(&bytes[start..end]);
            start = end + 1;
            let Some(&first) = line.first() else {
                break;
            };
            // Only two names matter here; every other line is passed over on its first byte.
            if !matches!(first | 0x20, b't' | b'c') {
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
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
        let facts = HeadFacts {
            ambiguous_framing: te_chunked.is_some() && content_length.is_some(),
            fragment: fragment_at.is_some(),
            request_line,
        };
        Some((ParsedHead { facts, framing }, start))
    }

    /// A head that is only a blank line (the scanner skips those before a request line, so
    /// this is never reached from it): hyper refuses it.
    pub(crate) const REFUSED: ParsedHead = ParsedHead {
        facts: HeadFacts::UNKNOWN,
        framing: Framing::Refused,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &[u8]) -> Option<(Framing, bool, usize)> {
        ParsedHead::parse(head).map(|(p, end)| (p.framing, p.facts.ambiguous_framing, end))
    }

    #[test]
    fn framing_names_match_in_any_case_and_no_other_name_counts() {
        let head = b"POST /a HTTP/1.1\r\nTRANSFER-Encoding: gzip, Chunked\r\n\r\nrest";
        assert_eq!(parse(head), Some((Framing::Chunked, false, head.len() - 4)));
        let head = b"POST /a HTTP/1.1\r\ncontent-LENGTH: 7\r\nX-Content-Length: 9\r\n\r\n";
        assert_eq!(parse(head), Some((Framing::Length(7), false, head.len())));
        let head = b"POST /a HTTP/1.1\nContent-Length: 7\nTransfer-Encoding: chunked\n\n";
        assert_eq!(parse(head), Some((Framing::Chunked, true, head.len())));
        let head = b"POST /a HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n";
        assert_eq!(parse(head), Some((Framing::Refused, false, head.len())));
        // Chunked only ends an HTTP/1.1 body; a name with leading space is not the header.
        let head = b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(head), Some((Framing::Refused, false, head.len())));
        let head = b"POST /a HTTP/1.1\r\n Content-Length: 7\r\n\r\n";
        assert_eq!(parse(head), Some((Framing::None, false, head.len())));
    }

    #[test]
    fn a_head_is_complete_only_with_its_blank_line() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
        assert_eq!(parse(b"GET / HTTP/1.1"), None);
        let (head, end) = ParsedHead::parse(b"GET /x#frag HTTP/1.1\r\n\r\nGET /y").unwrap();
        assert_eq!(end, 24);
        assert!(head.facts.fragment);
        assert!(head.facts.describes("GET", Some("/x")));
    }
}
