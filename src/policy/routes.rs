//! Compiled route table: the first route in config order that matches a request decides it.
//!
//! Lookup must not slow down as the table grows (10,000 rules may cost at most 1.2x 10 rules),
//! so routes are indexed in a segment trie rather than scanned. The walk may meet several
//! matching routes; the smallest index wins, which is exactly what a linear first-match scan
//! picks, so a request can never reach a rule more permissive than the first one it matches.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::policy::authz::Requirement;
use crate::policy::claims::ClaimRules;
use crate::policy::cors::CorsPolicy;
use crate::policy::path::split_once_byte;

/// Who may pass a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    Deny,
    Scopes(Requirement),
}

/// One validated route as the config layer builds it.
#[derive(Clone, Debug)]
pub struct Route {
    /// From config or generated (`route-3`).
    pub id: String,
    /// e.g. `/items/{id}`, `/public/**`, `/a/*/b`.
    pub pattern: String,
    /// `None` = any method; a list containing GET also matches HEAD.
    pub methods: Option<Vec<Method>>,
    /// Lowercase, no port; `None` = any host.
    pub host: Option<String>,
    /// ASCII case-insensitive literal segments.
    pub case_insensitive: bool,
    pub access: Access,
    /// Upstream name; `None` only for `Deny`.
    pub upstream: Option<String>,
    /// Request-body cap overriding `limits.max_body_size`.
    pub max_body_size: Option<u64>,
    /// Issuers (by name; `local` = the gateway's own) whose tokens count here; `None`: all.
    pub issuers: Option<Vec<String>>,
    /// Requests per caller this route lets through; `None`: unlimited.
    pub rate_limit: Option<std::sync::Arc<crate::policy::rate_limit::RateLimit>>,
    /// Conditions on the token's claims, checked after the scopes (only with `Scopes`).
    pub claims: ClaimRules,
    /// The route's `cors:`, or the top-level default it inherits; `None`: the gateway leaves
    /// CORS to the upstream.
    pub cors: Option<Arc<CorsPolicy>>,
}

/// Why a route was refused. Every message names the pattern or route so config errors point home.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern `{pattern}` must start with `/`")]
    NoLeadingSlash { pattern: String },
    #[error("pattern `{pattern}` has an empty segment (`//`)")]
    EmptySegment { pattern: String },
    #[error("pattern `{pattern}`: `**` must be the last segment")]
    DoubleStarNotLast { pattern: String },
    #[error("pattern `{pattern}`: segment `{segment}` mixes literal text and a wildcard; `*`, `**` and `{{name}}` must be whole segments")]
    MixedWildcard { pattern: String, segment: String },
    #[error("pattern `{pattern}`: `{segment}` is not a valid parameter; use `{{name}}` with letters, digits or `_`")]
    BadParam { pattern: String, segment: String },
    #[error("pattern `{pattern}` has invalid character {ch:?}")]
    InvalidChar { pattern: String, ch: char },
    #[error("pattern `{pattern}` has an escape canonical paths never contain; use `%` + two uppercase hex digits, unreserved characters unescaped, no `%2F`")]
    BadPercent { pattern: String },
    #[error("pattern `{pattern}` has a `.` or `..` segment, which canonical paths never contain")]
    DotSegment { pattern: String },
    #[error("route `{id}` has an empty method list and could never match")]
    EmptyMethods { id: String },
    #[error("route `{id}` has no upstream; only deny routes may omit it")]
    MissingUpstream { id: String },
    #[error("route `{id}` has host `{host}`, which must be lowercase")]
    BadHost { id: String, host: String },
    #[error("route id `{id}` is used twice")]
    DuplicateId { id: String },
    #[error("too many routes")]
    TooMany,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg<'a> {
    Lit(&'a str),
    /// `*` or `{name}`: one non-empty segment.
    One,
    /// Final `**`: zero or more segments.
    Rest,
}

/// RFC 3986 `pchar` minus `%` (checked separately) and `*` (reserved for wildcards).
fn literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()+,;=:@".contains(&b)
}

/// Whether `esc` (starting at a `%`) is spelled as `crate::policy::path` canonicalises it: uppercase
/// hex, never an unreserved byte or `/`. (What follows an escape is a literal, kept byte for
/// byte: `%252e` and `%252E` are different paths.) Any other spelling could never match,
/// which for a deny rule would fail open.
fn canonical_escape(esc: &[u8]) -> bool {
    let hex = |i: usize| match esc.get(i) {
        Some(&b @ b'0'..=b'9') => Some(b - b'0'),
        Some(&b @ b'A'..=b'F') => Some(b - b'A' + 10),
        _ => None,
    };
    let (Some(hi), Some(lo)) = (hex(1), hex(2)) else {
        return false;
    };
    let d = (hi << 4) | lo;
    let unreserved = d.is_ascii_alphanumeric() || b"-._~".contains(&d);
    !unreserved && d != b'/'
}

fn parse_pattern(pattern: &str) -> Result<Vec<Seg<'_>>, PatternError> {
    let p = || pattern.to_string();
    let body = pattern
        .strip_prefix('/')
        .ok_or_else(|| PatternError::NoLeadingSlash { pattern: p() })?;
    if pattern.contains("//") {
        return Err(PatternError::EmptySegment { pattern: p() });
    }
    // A single trailing slash is ignored, so `/items/` behaves as `/items` and `/` has no segments.
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = body.split('/').collect();
    let mut segs = Vec::with_capacity(parts.len());
    for (i, &s) in parts.iter().enumerate() {
        let seg_err = |f: fn(String, String) -> PatternError| f(p(), s.to_string());
        let seg = match s {
            "**" if i + 1 == parts.len() => Seg::Rest,
            "**" => return Err(PatternError::DoubleStarNotLast { pattern: p() }),
            "*" => Seg::One,
            "." | ".." => return Err(PatternError::DotSegment { pattern: p() }),
            _ if s.starts_with('{') && s.ends_with('}') => {
                let name = &s[1..s.len() - 1];
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(seg_err(|pattern, segment| PatternError::BadParam {
                        pattern,
                        segment,
                    }));
                }
                Seg::One
            }
            _ => {
                if s.contains(['*', '{', '}']) {
                    return Err(seg_err(|pattern, segment| PatternError::MixedWildcard {
                        pattern,
                        segment,
                    }));
                }
                let bytes = s.as_bytes();
                for (j, &b) in bytes.iter().enumerate() {
                    if b == b'%' {
                        if !canonical_escape(bytes.get(j..).unwrap_or_default()) {
                            return Err(PatternError::BadPercent { pattern: p() });
                        }
                    } else if !literal_byte(b) {
                        let ch = s[j..].chars().next().unwrap_or('\u{fffd}');
                        return Err(PatternError::InvalidChar { pattern: p(), ch });
                    }
                }
                Seg::Lit(s)
            }
        };
        segs.push(seg);
    }
    Ok(segs)
}

fn admits_method(methods: &[Method], m: &Method) -> bool {
    methods
        .iter()
        .any(|x| x == m || (*x == Method::GET && *m == Method::HEAD))
}

impl Route {
    fn admits(&self, method: &Method, host: &str) -> bool {
        self.methods
            .as_deref()
            .is_none_or(|l| admits_method(l, method))
            && self.host.as_deref().is_none_or(|h| h == host)
    }
}

type Literals = HashMap<Box<str>, u32, foldhash::fast::RandomState>;

#[derive(Debug)]
struct Node {
    /// Literal children; keys are lowercased in the case-insensitive trie. Keys come from the
    /// config only, so a fast seeded hash serves (SipHash cost ~170 instructions per request).
    lit: Literals,
    /// `*` / `{name}` child.
    one: Option<u32>,
    /// Routes whose pattern ends exactly here (ascending).
    exact: Vec<u32>,
    /// Routes with a `**` here (ascending).
    rest: Vec<u32>,
    /// Smallest route index anywhere below, so the walk can skip subtrees that cannot win.
    min: u32,
}

impl Node {
    fn new() -> Self {
        Node {
            lit: Literals::default(),
            one: None,
            exact: Vec::new(),
            rest: Vec::new(),
            min: u32::MAX,
        }
    }
}

const SENSITIVE: u32 = 0;
const INSENSITIVE: u32 = 1;
/// Segments up to this long are lowercased on the stack for case-insensitive lookups.
const LOWER_BUF: usize = 128;

/// Routes indexed by segment for first-match lookup that does not grow with the table.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Arena; node 0 roots the case-sensitive trie, node 1 the case-insensitive one.
    nodes: Vec<Node>,
}

impl RouteTable {
    /// Validate and index `routes`; on error, the index of the first bad route.
    pub fn compile(routes: Vec<Route>) -> Result<Self, (usize, PatternError)> {
        if routes.len() >= u32::MAX as usize {
            return Err((0, PatternError::TooMany));
        }
        let mut t = RouteTable {
            routes: Vec::new(),
            nodes: vec![Node::new(), Node::new()],
        };
        let mut ids = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            let err = |e| (i, e);
            let id = || r.id.clone();
            let segs = parse_pattern(&r.pattern).map_err(err)?;
            if r.methods.as_ref().is_some_and(Vec::is_empty) {
                return Err(err(PatternError::EmptyMethods { id: id() }));
            }
            if r.upstream.is_none() && r.access != Access::Deny {
                return Err(err(PatternError::MissingUpstream { id: id() }));
            }
            if let Some(h) = r
                .host
                .as_ref()
                .filter(|h| h.bytes().any(|b| b.is_ascii_uppercase()))
            {
                return Err(err(PatternError::BadHost {
                    id: id(),
                    host: h.clone(),
                }));
            }
            if ids.insert(r.id.as_str(), i).is_some() {
                return Err(err(PatternError::DuplicateId { id: id() }));
            }
            t.insert(&segs, r.case_insensitive, i as u32);
        }
        t.routes = routes;
        Ok(t)
    }

    fn insert(&mut self, segs: &[Seg<'_>], ci: bool, idx: u32) {
        let mut node = if ci { INSENSITIVE } else { SENSITIVE };
        for seg in segs {
            let next = self.nodes.len() as u32;
            let n = &mut self.nodes[node as usize];
            n.min = n.min.min(idx);
            let child = match *seg {
                Seg::Rest => {
                    n.rest.push(idx);
                    return;
                }
                Seg::One => *n.one.get_or_insert(next),
                Seg::Lit(s) if ci => *n.lit.entry(s.to_ascii_lowercase().into()).or_insert(next),
                Seg::Lit(s) => *n.lit.entry(s.into()).or_insert(next),
            };
            if child == next {
                self.nodes.push(Node::new());
            }
            node = child;
        }
        let n = &mut self.nodes[node as usize];
        n.min = n.min.min(idx);
        n.exact.push(idx);
    }

    /// First route (config order) matching the request. `path` is canonical (leading `/`, no
    /// `//`, no dot segments, at most one trailing `/`); anything else matches nothing.
    /// `host` is lowercase without port. Allocation-free except for case-insensitive lookups of
    /// uppercase segments longer than 128 bytes.
    pub fn find(&self, method: &Method, host: &str, path: &str) -> Option<(usize, &Route)> {
        let body = path.strip_prefix('/')?;
        if path.as_bytes().windows(2).any(|pair| pair == b"//") {
            return None;
        }
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut walk = Walk {
            t: self,
            method,
            host,
            best: u32::MAX,
        };
        walk.node(SENSITIVE, body, false);
        walk.node(INSENSITIVE, body, true);
        let i = walk.best as usize;
        self.routes.get(i).map(|r| (i, r))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// For the `portcullis check` lint: `(earlier, later)` where `later` can never match because
    /// `earlier` matches every request it could. One pair per dead route, naming the first
    /// such earlier route. Best effort: routes shadowed only by a combination of earlier ones
    /// are not reported, but every reported pair is real. O(n²); fine for a lint.
    pub fn shadowed(&self) -> Vec<(usize, usize)> {
        let parsed: Vec<Option<Vec<Seg<'_>>>> = self
            .routes
            .iter()
            .map(|r| parse_pattern(&r.pattern).ok())
            .collect();
        let mut out = Vec::new();
        for (j, (rj, pj)) in self.routes.iter().zip(&parsed).enumerate() {
            let Some(pj) = pj else { continue };
            let by = self.routes[..j].iter().zip(&parsed).position(|(ri, pi)| {
                ri.host.as_ref().is_none_or(|h| rj.host.as_ref() == Some(h))
                    && match (&ri.methods, &rj.methods) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(a), Some(b)) => b.iter().all(|m| admits_method(a, m)),
                    }
                    && pi
                        .as_deref()
                        .is_some_and(|pi| covers(pi, ri.case_insensitive, pj, rj.case_insensitive))
            });
            if let Some(i) = by {
                out.push((i, j));
            }
        }
        out
    }
}

/// Does pattern `p` match every path that pattern `q` matches?
fn covers(p: &[Seg<'_>], p_ci: bool, q: &[Seg<'_>], q_ci: bool) -> bool {
    match (p.split_first(), q.split_first()) {
        (Some((Seg::Rest, _)), _) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((ps, pt)), Some((qs, qt))) => {
            let seg = match (*ps, *qs) {
                (Seg::One, Seg::One | Seg::Lit(_)) => true,
                (Seg::Lit(a), Seg::Lit(b)) if p_ci => a.eq_ignore_ascii_case(b),
                // A case-insensitive `q` also matches other spellings, unless it has no letters.
                (Seg::Lit(a), Seg::Lit(b)) => {
                    a == b && (!q_ci || !b.bytes().any(|c| c.is_ascii_alphabetic()))
                }
                _ => false,
            };
            seg && covers(pt, p_ci, qt, q_ci)
        }
    }
}

/// One lookup's state. Recursion depth is bounded by the deepest pattern, not the path, and
/// each trie node is visited at most once (a node sits at one fixed depth).
struct Walk<'t, 'r> {
    t: &'t RouteTable,
    method: &'r Method,
    host: &'r str,
    /// Smallest admitting route index found so far (`u32::MAX` = none).
    best: u32,
}

impl Walk<'_, '_> {
    /// `rest`: the remaining path segments joined by `/`, empty when none remain.
    fn node(&mut self, id: u32, rest: &str, ci: bool) {
        let t = self.t;
        let n = &t.nodes[id as usize];
        if n.min >= self.best {
            return;
        }
        self.consider(&n.rest);
        if rest.is_empty() {
            self.consider(&n.exact);
            return;
        }
        let (seg, tail) = split_once_byte(rest, b'/').unwrap_or((rest, ""));
        if !n.lit.is_empty() {
            let child = if ci {
                lookup_ci(&n.lit, seg)
            } else {
                n.lit.get(seg).copied()
            };
            if let Some(c) = child {
                self.node(c, tail, ci);
            }
        }
        if let Some(c) = n.one {
            self.node(c, tail, ci);
        }
    }

    fn consider(&mut self, list: &[u32]) {
        for &i in list {
            if i >= self.best {
                return;
            }
            if self
                .t
                .routes
                .get(i as usize)
                .is_some_and(|r| r.admits(self.method, self.host))
            {
                self.best = i;
                return;
            }
        }
    }
}

fn lookup_ci(map: &Literals, seg: &str) -> Option<u32> {
    if !seg.bytes().any(|b| b.is_ascii_uppercase()) {
        return map.get(seg).copied();
    }
    let mut buf = [0u8; LOWER_BUF];
    match buf.get_mut(..seg.len()) {
        Some(b) => {
            b.copy_from_slice(seg.as_bytes());
            b.make_ascii_lowercase();
            // ASCII lowercasing keeps UTF-8 valid, so this never fails.
            map.get(std::str::from_utf8(b).ok()?).copied()
        }
        None => map.get(seg.to_ascii_lowercase().as_str()).copied(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Route from a compact spec: `"[ci ][METHODS ][@host ]/pattern"`, e.g. `"ci GET,POST @a /x"`.
    fn r(spec: &str) -> Route {
        let mut route = Route {
            issuers: None,
            rate_limit: None,
            id: String::new(),
            pattern: String::new(),
            methods: None,
            host: None,
            case_insensitive: false,
            access: Access::Public,
            upstream: Some("app".into()),
            max_body_size: None,
            claims: Default::default(),
            cors: None,
        };
        for word in spec.split(' ') {
            match word {
                "ci" => route.case_insensitive = true,
                "deny" => route.access = Access::Deny,
                w if w.starts_with('@') => route.host = Some(w[1..].into()),
                w if w.starts_with('/') => route.pattern = w.into(),
                w => route.methods = Some(w.split(',').map(|m| m.parse().unwrap()).collect()),
            }
        }
        route
    }

    /// One spec per line; `#` starts a comment.
    fn table(specs: &str) -> RouteTable {
        let lines = specs.lines().map(|l| l.split('#').next().unwrap().trim());
        table_of(lines.filter(|l| !l.is_empty()).map(r).collect())
    }

    fn table_of(mut routes: Vec<Route>) -> RouteTable {
        for (i, r) in routes.iter_mut().enumerate() {
            r.id = format!("route-{i}");
        }
        RouteTable::compile(routes).unwrap()
    }

    /// Case lines: `METHOD HOST PATH => INDEX` (`-` = empty host / no match).
    fn check(specs: &str, cases: &str) {
        let t = table(specs);
        for case in cases.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (req, want) = case.split_once(" => ").unwrap();
            let mut it = req.splitn(3, ' ');
            let m: Method = it.next().unwrap().parse().unwrap();
            let host = it.next().unwrap().trim_start_matches('-');
            let path = it.next().unwrap_or("");
            let got = t
                .find(&m, host, path)
                .map_or("-".into(), |x| x.0.to_string());
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn segments_wildcards_and_boundaries() {
        let specs = "/public/**\n/items/**\n/a/*/b\n/c/{id}\n/d/\n/\n/e%20f%3A%252E%C3%A9";
        check(
            specs,
            "GET - /items => 1
             GET - /items/ => 1
             GET - /items/1/x => 1
             GET - /itemsx => -
             GET - /public => 0
             GET - /publicity/x => -
             GET - /public-admin => -
             GET - /public.json => -
             GET - /a/x/b => 2
             GET - /a/b => -
             GET - /a/x/y/b => -
             GET - /c/7/ => 3
             GET - /c => -
             GET - /c/7/8 => -
             GET - /d => 4
             GET - /d/ => 4
             GET - / => 5
             GET - /x => -
             GET - /e%20f%3A%252E%C3%A9 => 6
             GET - /e f => -
             GET - => -
             GET - d => -
             GET - // => -
             GET - /d// => -",
        );
        check("/**", "GET - / => 0\nGET - /a/b/ => 0");
    }

    #[test]
    fn first_match_wins() {
        check(
            "/items/**\ndeny /items/{id}\n/items/1",
            "GET - /items/1 => 0",
        );
        // An early narrow deny is not bypassed by a later, broader rule.
        check(
            "deny /items/{id}\n/items/**",
            "GET - /items/1 => 0\nGET - /items/1/x => 1",
        );
        // A lower index in the wildcard branch beats a higher one in the literal branch.
        check("/*/x\n/a/x\n/a/**", "GET - /a/x => 0\nGET - /a/y => 2");
    }

    #[test]
    fn methods_and_hosts() {
        check(
            "GET /r\nPOST,get /r\nHEAD /h\n@admin.example /**\n/x",
            "GET - /r => 0
             HEAD - /r => 0
             POST - /r => 1
             get - /r => 1
             DELETE - /r => -
             GET - /h => -
             GET admin.example /x => 3
             GET www.example /x => 4
             GET admin.example.evil /y => -",
        );
        check("get /r", "GET - /r => -\nHEAD - /r => -");
    }

    #[test]
    fn case_sensitivity() {
        let long = "L".repeat(200);
        let lower = long.to_lowercase();
        check(
            &format!("/Admin/**\nci /api/Users\nci /{long}"),
            &format!(
                "GET - /Admin/x => 0
                 GET - /admin/x => -
                 GET - /API/USERS => 1
                 GET - /Api/uSeRs/ => 1
                 GET - /api/users2 => -
                 GET - /{long} => 2
                 GET - /{lower} => 2"
            ),
        );
    }

    #[test]
    fn an_escaped_percent_keeps_the_literal_after_it() {
        check(
            "deny /a%252e\n/a%252E\n/**",
            "GET - /a%252e => 0
             GET - /a%252E => 1
             GET - /a%2e => 2",
        );
    }

    #[test]
    fn pattern_errors() {
        use PatternError as E;
        let cases = [
            ("items", "NoLeadingSlash"),
            ("/a//b", "EmptySegment"),
            ("//", "EmptySegment"),
            ("/a/**/b", "DoubleStarNotLast"),
            ("/a*", "MixedWildcard"),
            ("/{id}.json", "MixedWildcard"),
            ("/***", "MixedWildcard"),
            ("/{}", "BadParam"),
            ("/{a-b}", "BadParam"),
            ("/a?b", "InvalidChar"),
            ("/é", "InvalidChar"),
            ("/a%2", "BadPercent"),
            ("/a%2f", "BadPercent"),
            ("/a%2F", "BadPercent"),
            ("/a%41", "BadPercent"),
            ("/a%7E", "BadPercent"),
            ("/a%3a", "BadPercent"),
            ("/a/../b", "DotSegment"),
        ];
        for (pattern, variant) in cases {
            let mut bad = r("/x");
            bad.pattern = pattern.to_string();
            let (i, e) = RouteTable::compile(vec![r("/ok"), bad]).err().unwrap();
            assert!(
                i == 1 && format!("{e:?}").starts_with(variant),
                "{pattern}: {e}"
            );
            assert!(e.to_string().contains(&format!("`{pattern}`")), "{e}");
        }
        let err = |routes: Vec<Route>| RouteTable::compile(routes).err().unwrap();
        assert!(matches!(
            err(vec![r("/a"), r("/a")]),
            (1, E::DuplicateId { .. })
        ));
        assert!(matches!(
            err(vec![r("@Admin.example /a")]),
            (0, E::BadHost { .. })
        ));
        let mut no_methods = r("/a");
        no_methods.methods = Some(vec![]);
        assert!(matches!(err(vec![no_methods]), (0, E::EmptyMethods { .. })));
        let (mut public, mut deny) = (r("/a"), r("deny /a"));
        (public.upstream, deny.upstream) = (None, None);
        assert!(matches!(err(vec![public]), (0, E::MissingUpstream { .. })));
        assert!(RouteTable::compile(vec![deny]).is_ok());
    }

    #[test]
    fn shadowed_pairs() {
        let t = table(
            "GET /items/{id}     # 0
             GET /items/1/       # 1: shadowed by 0
             /items/2            # 2: more methods than 0
             GET @a /items/3     # 3: shadowed by 0 (narrower host)
             @a /x/**            # 4
             /x/y                # 5: other hosts too
             @a /x/y             # 6: shadowed by 4
             /Ci                 # 7
             ci /ci              # 8: also matches /CI
             ci /CI/**           # 9
             HEAD /ci/           # 10: shadowed by 8
             /ci                 # 11: shadowed by 8
             /ci/**              # 12: shadowed by 9
             /1/**               # 13
             ci /1               # 14: no letters, so shadowed by 13
             ci /1x              # 15",
        );
        let want = [(0, 1), (0, 3), (4, 6), (8, 10), (8, 11), (9, 12), (13, 14)];
        assert_eq!(t.shadowed(), want);
    }

    // Reference model: a plain linear scan, written independently of the trie.
    fn naive_segs(p: &str) -> Vec<&str> {
        let b = p.strip_prefix('/').unwrap_or(p);
        let b = b.strip_suffix('/').unwrap_or(b);
        if b.is_empty() {
            vec![]
        } else {
            b.split('/').collect()
        }
    }

    fn naive_pat(pat: &[&str], path: &[&str], ci: bool) -> bool {
        match (pat.first(), path.first()) {
            (Some(&"**"), _) | (None, None) => true,
            (Some(&p), Some(&s)) => {
                let one = p == "*" || p.starts_with('{');
                (one || p == s || (ci && p.eq_ignore_ascii_case(s)))
                    && naive_pat(&pat[1..], &path[1..], ci)
            }
            _ => false,
        }
    }

    fn naive_match(r: &Route, m: &Method, host: &str, path: &str) -> bool {
        let head_get =
            *m == Method::HEAD && r.methods.as_ref().is_some_and(|l| l.contains(&Method::GET));
        (r.methods.as_ref().is_none_or(|l| l.contains(m)) || head_get)
            && r.host.as_ref().is_none_or(|h| h == host)
            && naive_pat(
                &naive_segs(&r.pattern),
                &naive_segs(path),
                r.case_insensitive,
            )
    }

    type Request = (Method, &'static str, String);

    fn arb_route() -> impl Strategy<Value = Route> {
        let seg = prop::sample::select(vec!["a", "b", "A", "ab", "*", "{x}"]);
        let methods = prop::sample::select(vec!["", "GET ", "POST ", "GET,POST ", "HEAD,get "]);
        let host = prop::sample::select(vec!["", "@h1 ", "@h2 "]);
        let flags = (any::<bool>(), any::<bool>(), any::<bool>());
        (prop::collection::vec(seg, 0..4), flags, methods, host).prop_map(
            |(segs, (star, slash, ci), methods, host)| {
                let mut p = format!("/{}", segs.join("/"));
                if star {
                    p = if segs.is_empty() {
                        "/**".into()
                    } else {
                        format!("{p}/**")
                    };
                }
                if slash && p != "/" {
                    p.push('/');
                }
                r(&format!(
                    "{}{methods}{host}{p}",
                    if ci { "ci " } else { "" }
                ))
            },
        )
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let seg = prop::sample::select(vec!["a", "b", "A", "B", "ab", "aB", "c"]);
        let method = prop::sample::select(vec!["GET", "HEAD", "POST", "get"]);
        let host = prop::sample::select(vec!["", "h1", "h2"]);
        (
            prop::collection::vec(seg, 0..5),
            any::<bool>(),
            method,
            host,
        )
            .prop_map(|(segs, slash, m, host)| {
                let p = format!("/{}", segs.join("/"));
                let p = if slash && p != "/" { p + "/" } else { p };
                (m.parse().unwrap(), host, p)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn find_equals_linear_scan(
            routes in prop::collection::vec(arb_route(), 1..16),
            reqs in prop::collection::vec(arb_request(), 1..24),
        ) {
            let t = table_of(routes);
            for (m, host, path) in &reqs {
                let want = t.routes().iter().position(|r| naive_match(r, m, host, path));
                prop_assert_eq!(t.find(m, host, path).map(|x| x.0), want, "{} {} {}", m, host, path);
            }
        }

        #[test]
        fn shadowed_has_no_false_positives(
            routes in prop::collection::vec(arb_route(), 1..16),
            reqs in prop::collection::vec(arb_request(), 1..48),
        ) {
            let t = table_of(routes);
            for (i, j) in t.shadowed() {
                let (ri, rj) = (&t.routes()[i], &t.routes()[j]);
                prop_assert!(i < j);
                for (m, host, path) in &reqs {
                    prop_assert!(!naive_match(rj, m, host, path) || naive_match(ri, m, host, path));
                }
            }
        }
    }
}
